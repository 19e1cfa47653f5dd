"""The `fastnn` command: train (defaults, options, IDX files, plots), info, errors
and help."""
import argparse
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


# ---- losses on class labels / on a regression target (read from the registry) --------
def test_cli_every_loss_on_class_labels(capsys):
    """Each loss of the registry on digits: trained (class labels made into the targets
    its target kind needs, a sigmoid output layer for probability outputs, the test
    accuracy the argmax of the outputs) or, where the command cannot build its output
    (log-probabilities: kl_div), refused before anything is loaded."""
    from fastnn.kernels import specs

    trained = []
    for name, kernel in specs.LOSSES.items():
        rc = cli.main(["train", "--loss", name, "--epochs", "3", "--quiet"])
        out, err = capsys.readouterr()
        if kernel.output == "log_probability":
            assert rc == 1 and out == "", (name, out)
            assert err.count("\n") == 1 and "log-probability" in err, err
            assert "cross_entropy" in err and "mse" in err and "hinge" in err
            continue
        assert rc == 0, (name, err)
        assert f"{name} loss" in out
        if kernel.target in ("real", "unit"):
            assert "one-hot targets" in out, out
        if kernel.target == "sign":
            assert "-1/+1 one-hot targets" in out, out
        if kernel.output == "probability":
            assert "sigmoid output layer" in out, out
        assert _score(out) > 80, (name, out)        # 87-94% after 3 epochs
        trained.append(name)
    assert {"mse", "l1", "huber", "bce", "bce_with_logits", "hinge",
            "cross_entropy"} <= set(trained)


def test_cli_mse_bce_hinge_and_kl_div_on_digits(tmp_path):
    for loss in ("mse", "bce", "hinge"):
        res = _run("train", "--loss", loss, "--epochs", "3", "--quiet",
                   "--save", str(tmp_path / f"{loss}.npz"))
        assert res.returncode == 0, res.stderr
        assert _score(res.stdout) > 50, res.stdout
    model = fn.load(tmp_path / "bce.npz")            # probabilities: a sigmoid output
    X, _ = datasets.load_digits()
    p = model.predict(X[:50] / 16)
    assert p.min() >= 0 and p.max() <= 1
    res = _run("train", "--loss", "kl_div", "--epochs", "3", "--quiet")
    assert res.returncode == 1 and res.stdout == ""           # refused before training
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "kl_div" in res.stderr and "log-probability" in res.stderr
    assert "use one of: mse, l1, huber, bce" in res.stderr


def test_cli_classification_loss_on_regression_data_is_refused():
    res = _run("train", "--dataset", "diabetes", "--loss", "cross_entropy")
    assert res.returncode == 1 and res.stdout == ""            # before loading/training
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "regression" in res.stderr and "use one of: mse, l1, huber" in res.stderr
    for loss in ("bce", "hinge", "kl_div", "bce_with_logits"):
        assert cli.main(["train", "--dataset", "diabetes", "--loss", loss]) == 1, loss


# ---- --save / --plot checked before training -------------------------------------------
def test_cli_save_and_plot_paths_checked_before_training(tmp_path):
    bad = "/nonexistent/dir/m.npz"
    res = _run("train", "--save", bad)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert bad in res.stderr and "/nonexistent/dir" in res.stderr
    assert ".tmp" not in res.stderr and "Traceback" not in res.stderr
    assert res.stdout == "" and "epoch" not in res.stderr       # nothing trained
    res = _run("train", "--save", str(tmp_path))               # a folder, not a file
    assert res.returncode == 1 and str(tmp_path) in res.stderr and "folder" in res.stderr
    assert res.stdout == ""
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    bad = str(tmp_path / "missing" / "curves.png")
    res = _run("train", "--plot", bad)
    assert res.returncode == 1 and bad in res.stderr and res.stdout == ""
    assert "epoch" not in res.stderr and "Traceback" not in res.stderr
    res = _run("train", "--plot", str(tmp_path / "curves.nope"))
    assert res.returncode == 1 and "curves.nope" in res.stderr and res.stdout == ""


# ---- help shows every default; names in any case --------------------------------------
def _train_parser():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_cli_train_help_shows_every_default():
    train = _train_parser()
    text = " ".join(train.format_help().split())         # line breaks as spaces
    options = [a for a in train._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 20
    for action in options:
        assert action.help, action.option_strings           # every option explained
        if action.default is None:
            continue
        default = action.default
        shown = f"(default: {default})"
        assert shown in text, (action.option_strings, shown)
    assert "(default: None)" not in text
    assert "(default: 128)" in text and "(default: adam)" in text
    assert "(default: 40)" in text and "(default: 32)" in text
    assert "(default: float32)" in text
    assert train.parse_args([]).hidden == [128]


def test_cli_names_in_any_case():
    args = _train_parser().parse_args(
        ["--activation", "ReLU", "--optimizer", "ADAM", "--loss", "MSE", "--backend",
         "CPU", "--dataset", "Digits", "--dtype", "Float32"])
    assert (args.activation, args.optimizer, args.loss, args.backend, args.dataset,
            args.dtype) == ("relu", "adam", "mse", "cpu", "digits", "float32")
    res = _run("train", "--activation", "ReLU", "--optimizer", "ADAM", "--loss", "MSE",
               "--backend", "CPU", "--dataset", "Digits", "--dtype", "Float32",
               "--epochs", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "relu, mse loss" in res.stdout and "backend cpu, float32" in res.stdout
    res = _run("train", "--dataset", "Breast_Cancer", "--activation", "TANH",
               "--optimizer", "SGD", "--epochs", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    assert _run("train", "--activation", "ReLUX").returncode == 2     # still checked
