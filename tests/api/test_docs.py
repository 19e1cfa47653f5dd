"""The documentation runs: the README's tour and the examples, as written."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_readme_tour_runs(tmp_path, monkeypatch):
    """The README's tour is runnable as written (in a scratch folder: it saves)."""
    readme = os.path.join(ROOT, "README.md")
    if not os.path.exists(readme):
        pytest.skip("README.md is not beside the tests (installed elsewhere)")
    text = open(readme, encoding="utf-8").read()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    scope = {}
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README tour", "exec"), scope)
    assert (tmp_path / "digits.npz").exists()
    hist = scope["history"]
    assert len(hist.loss) == 10 and hist.loss[-1] < hist.loss[0]


def test_readme_scikit_learn_example_runs(capsys):
    """The README's scikit-learn example (the python block importing fastnn.sklearn)
    runs as written and scores like a digits classifier."""
    pytest.importorskip("sklearn", reason="the example needs scikit-learn")
    readme = os.path.join(ROOT, "README.md")
    if not os.path.exists(readme):
        pytest.skip("README.md is not beside the tests (installed elsewhere)")
    blocks = open(readme, encoding="utf-8").read().split("```python\n")[1:]
    code = next(c for c in (b.split("```", 1)[0] for b in blocks) if "fastnn.sklearn" in c)
    scope = {}
    exec(compile(code, "README scikit-learn example", "exec"), scope)
    assert scope["search"].score(scope["X_test"], scope["y_test"]) > 0.9
    assert "mlpclassifier__alpha" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["classify_digits.py", "regress_diabetes.py"])
def test_examples_run(script, tmp_path):
    path = os.path.join(ROOT, "examples", script)
    if not os.path.exists(path):
        pytest.skip("examples/ is not beside the tests (installed elsewhere)")
    res = subprocess.run([sys.executable, path], capture_output=True, text=True,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "test" in res.stdout
