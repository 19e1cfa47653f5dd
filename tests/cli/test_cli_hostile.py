"""Hostile use of the `fastnn` command (issue 14, items 5, 8 and 12): every bad
argument gets a one-line error naming the option, before anything big is allocated or
trained; Ctrl-C exits 130 with one line and no traceback."""
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnn as fn
from fastnn import cli

QUICK = ["--epochs", "1", "--quiet", "--backend", "numpy"]


def run(capsys, *args):
    """main() in this process: (exit code, stdout, stderr); argparse's SystemExit
    gives its code."""
    try:
        code = cli.main(["train", *args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err, *words):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def write_idx(path, array, code):
    array = np.asarray(array)
    with open(path, "wb") as f:
        f.write(bytes([0, 0, code, array.ndim]))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(array.dtype.newbyteorder(">")).tobytes())


# ---- 8: --lr that overflows the model's dtype -----------------------------------------
@pytest.mark.parametrize("extra", [[], ["--optimizer", "sgd"], ["--dtype", "float32"]])
def test_lr_overflowing_float32_is_refused(capsys, extra):
    code, out, err = run(capsys, "--lr", "1e39", *QUICK, *extra)
    assert code == 1
    one_line_error(err, "--lr", "float32")
    assert "test accuracy" not in out


def test_lr_inf_is_a_usage_error(capsys):
    code, _, err = run(capsys, "--lr", "inf", *QUICK)
    assert code == 2 and "--lr" in err


def test_lr_1e39_is_fine_in_float64(capsys):
    code, out, err = run(capsys, "--lr", "1e39", "--dtype", "float64", "--optimizer",
                         "sgd", *QUICK)
    assert code == 0, err


# ---- 12: option combinations and sizes ------------------------------------------------
def test_idx_test_without_idx_is_refused(capsys, tmp_path):
    images, labels = tmp_path / "i.idx", tmp_path / "l.idx"
    write_idx(images, np.zeros((4, 8, 8), np.uint8), 0x08)
    write_idx(labels, np.arange(4, dtype=np.uint8), 0x08)
    code, out, err = run(capsys, "--idx-test", str(images), str(labels), *QUICK)
    assert code == 1
    one_line_error(err, "--idx-test", "--idx")
    assert out == ""                                   # nothing trained


def test_a_huge_hidden_layer_is_refused_before_allocating(capsys):
    t0 = time.perf_counter()
    code, out, err = run(capsys, "--hidden", str(10**9), *QUICK)
    assert code == 1
    one_line_error(err, "--hidden", "memory", "1000000000")
    assert time.perf_counter() - t0 < 30


def test_a_huge_label_is_refused_before_allocating(capsys, tmp_path):
    images, labels = tmp_path / "i.idx", tmp_path / "l.idx"
    pixels = np.random.default_rng(0).integers(0, 255, (20, 3, 3), dtype=np.uint8)
    write_idx(images, pixels, 0x08)
    y = np.arange(20, dtype=np.int32) % 3
    y[7] = 2**31 - 1
    write_idx(labels, y, 0x0C)
    for loss in ("cross_entropy", "mse"):               # labels / one-hot targets
        code, out, err = run(capsys, "--idx", str(images), str(labels), "--loss", loss,
                             *QUICK)
        assert code == 1
        one_line_error(err, "memory", "2,147,483,647")


def test_sizes_that_fit_still_train(capsys):
    code, out, err = run(capsys, "--hidden", "32,16", *QUICK)
    assert code == 0, err


def test_seed_minus_one_names_the_flag(capsys):
    code, _, err = run(capsys, "--seed", "-1", *QUICK)
    assert code == 2
    assert "--seed" in err and "-1" in err


def test_memory_error_is_one_line(capsys, monkeypatch):
    def boom(*a, **k):
        raise MemoryError("Unable to allocate 4.00 TiB")
    monkeypatch.setattr(fn.Sequential, "fit", boom)
    code, _, err = run(capsys, *QUICK)
    assert code == 1
    one_line_error(err, "out of memory", "4.00 TiB")


# ---- 5: Ctrl-C -------------------------------------------------------------------------
def test_keyboard_interrupt_exits_130_with_one_line(capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(fn.Sequential, "fit", interrupted)
    try:
        code, _, err = run(capsys, *QUICK)
    except KeyboardInterrupt:                  # would stop the whole pytest session
        pytest.fail("KeyboardInterrupt escaped cli.main()")
    assert code == 130
    assert one_line_error(err) == "fastnn: interrupted"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child: POSIX")
def test_ctrl_c_during_training_exits_130_with_one_line(tmp_path):
    env = dict(os.environ, FASTNN_QUIET="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "fastnn", "train", "--epochs",
                             "100000", "--save", str(tmp_path / "m.npz")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    try:
        proc.stdout.readline()                          # the header: training starts
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:                         # pragma: no cover
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    # the progress bar's lines (\r-redrawn) and then exactly one line of ours
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last == "fastnn: interrupted"
    assert err.count("fastnn: interrupted") == 1
    assert not (tmp_path / "m.npz").exists()            # interrupted before --save
