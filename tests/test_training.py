"""End to end: the digits run, the command line, and an install from another folder."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fn
from fastnn import cli

pytest.importorskip("sklearn", reason="the digits data comes from scikit-learn")


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_digits_reaches_97_percent(backend):
    Xtr, ytr, Xte, yte = cli.load_digits_split(seed=0)
    model = fn.Sequential(fn.Dense(64, 128, activation="relu"), fn.Dense(128, 10),
                          backend=backend, dtype=np.float32, seed=0)
    model.fit(Xtr, ytr, loss="cross_entropy", optimizer=fn.SGD(model, lr=0.1), epochs=30,
              batch_size=32, seed=0)
    assert cli.accuracy(model, Xte, yte) >= 0.97


def _run(*args):
    return subprocess.run([sys.executable, "-m", "fastnn", *args], capture_output=True,
                          text=True, cwd=os.path.expanduser("~") if os.access(
                              os.path.expanduser("~"), os.W_OK) else "/tmp")


def test_cli_train_prints_accuracy():
    res = _run("train", "--epochs", "30")
    assert res.returncode == 0, res.stderr
    acc = float(res.stdout.strip().splitlines()[-1].split()[2].rstrip("%"))
    assert acc >= 97.0
    assert "epoch  10/30" in res.stdout              # progress while it trains


def test_cli_errors_and_info():
    res = _run("train", "--backend", "gpu")
    assert res.returncode == 1 and "unknown backend 'gpu'" in res.stderr
    assert "Traceback" not in res.stderr
    assert _run("train", "--epochs", "0").returncode == 2
    res = _run("info")
    assert res.returncode == 0 and "backends available: numpy, cpu" in res.stdout


def test_readme_tour_runs():
    """The README's tour is runnable as written."""
    readme = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
    if not os.path.exists(readme):
        pytest.skip("README.md is not beside the tests (installed elsewhere)")
    text = open(readme, encoding="utf-8").read()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    scope = {}
    exec(compile(code, "README tour", "exec"), scope)
    hist = scope["history"]
    assert len(hist.loss) == 10 and hist.loss[-1] < hist.loss[0]
