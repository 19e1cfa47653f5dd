"""The `fastnn` command: train (defaults, options, IDX files, plots), info, errors
and help."""
import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fn
from fastnn import cli, datasets



def _run(*args, cwd=None):
    home = os.path.expanduser("~")
    return subprocess.run([sys.executable, "-m", "fastnn", *args], capture_output=True,
                          text=True, cwd=cwd or (home if os.access(home, os.W_OK)
                                                 else "/tmp"))


def _score(stdout):
    return float(stdout.strip().splitlines()[-1].split()[2].rstrip("%"))


def test_cli_train_defaults(tmp_path):
    res = _run("train", "--save", str(tmp_path / "m.npz"))
    assert res.returncode == 0, res.stderr
    assert _score(res.stdout) >= 97.0
    assert "epoch 1/40" in res.stderr and "epoch 40/40" in res.stderr   # progress bars
    assert "val_accuracy" in res.stderr
    model = fn.load(tmp_path / "m.npz")
    X, y = datasets.load_digits()
    _, Xte, _, yte = datasets.train_test_split(X / 16, y, test_size=0.2, seed=0)
    acc = 100 * model.evaluate(Xte, yte, loss="cross_entropy")["accuracy"]
    assert acc == pytest.approx(_score(res.stdout), abs=0.01)
    assert isinstance(model.optimizer, fn.Adam) and model.optimizer.step_count > 0


def test_cli_options_and_plot(tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    png = tmp_path / "curve.png"
    res = _run("train", "--dataset", "breast_cancer", "--hidden", "16,8", "--activation",
               "tanh", "--optimizer", "sgd", "--lr", "0.05", "--epochs", "5",
               "--batch-size", "64", "--micro-batch-size", "16", "--dtype", "float64",
               "--backend", "numpy", "--seed", "3", "--patience", "2", "--plot", str(png),
               "--quiet")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""                                   # --quiet: no bars
    assert "30-16-8-2" in res.stdout and "micro-batches of 16" in res.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = _run("train", "--dataset", "diabetes", "--loss", "huber", "--epochs", "3",
               "--quiet")
    assert res.returncode == 0, res.stderr
    assert "test rmse:" in res.stdout and "R^2" in res.stdout


def _write_idx(path, array):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}
    header = struct.pack(">HBB", 0, codes[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(data)


def test_cli_trains_on_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300).astype(np.uint8)
    images = rng.integers(0, 40, (300, 5, 5)).astype(np.uint8)
    images[np.arange(300), labels, labels] = 255          # learnable: a bright pixel
    _write_idx(tmp_path / "img.gz", images)
    _write_idx(tmp_path / "lab", labels)
    res = _run("train", "--idx", str(tmp_path / "img.gz"), str(tmp_path / "lab"),
               "--epochs", "15", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "25-128-3" in res.stdout and _score(res.stdout) >= 90
    res = _run("train", "--idx", str(tmp_path / "img.gz"), str(tmp_path / "nope"))
    assert res.returncode == 1 and "nope" in res.stderr and "Traceback" not in res.stderr


def test_cli_errors_help_and_info():
    res = _run("train", "--backend", "gpu")
    assert res.returncode == 1 and "unknown backend 'gpu'" in res.stderr
    assert "Traceback" not in res.stderr
    assert _run("train", "--epochs", "0").returncode == 2
    assert _run("train", "--optimizer", "adamax").returncode == 2
    assert _run("train", "--hidden", "12,x").returncode == 2
    res = _run("train", "--micro-batch-size", "64", "--batch-size", "32")
    assert res.returncode == 1 and "must not exceed" in res.stderr
    res = _run("train", "--help")
    assert res.returncode == 0
    for option in ("--dataset", "--hidden", "--activation", "--loss", "--optimizer",
                   "--lr", "--epochs", "--batch-size", "--micro-batch-size", "--backend",
                   "--dtype", "--seed", "--save", "--plot", "--idx", "--patience"):
        assert option in res.stdout, option
    res = _run("--help")
    assert res.returncode == 0 and "train" in res.stdout and "info" in res.stdout
    res = _run("info")
    assert res.returncode == 0 and "backends available: numpy, cpu" in res.stdout
    assert "numba_cache_dir" in res.stdout


def test_cli_plot_without_matplotlib(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import now fails
    assert cli.main(["train", "--plot", "x.png", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and "fastnn[plot]" in err
