"""fastnn.sklearn's MLPClassifier against scikit-learn's, with the same parameters.

Three cases, each the whole ``fit`` call (data validation and conversion included):

- ``digits adam``: the digits (1797x64, X / 16), an 80/20 split by scikit-learn's
  ``train_test_split(random_state=0)``, ``hidden_layer_sizes=(128,)``, relu, Adam,
  the default batch size (200), 200 epochs (``tol=0`` and ``n_iter_no_change=200``, so
  both run every epoch);
- ``digits lbfgs``: the same with ``solver="lbfgs", max_iter=200``;
- ``tabular adam``: ``make_classification(n_samples=50000, n_features=100,
  n_informative=40, n_classes=4, random_state=0)``, 80/20 split,
  ``hidden_layer_sizes=(256, 128)``, Adam, 5 epochs (``tol=0``).

Contenders: ``sklearn`` (scikit-learn's estimator, float64), ``cpu`` (fastnn's, default
float64: the same model as scikit-learn's to rounding, tests/sklearn_api) and
``cpu_float32`` (fastnn's with ``dtype=np.float32``).  ``extra_info`` records each
one's test accuracy and the iterations it ran.  Rounds: 3 (1 under ``--quick``);
under ``--benchmark-disable`` each fit runs once, shortened (5 epochs, 10 L-BFGS
iterations, 2000 tabular rows), and must beat chance by a wide margin.
"""
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the estimator benchmarks need scikit-learn")
from sklearn.datasets import load_digits, make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

CONTENDERS = ("sklearn", "cpu", "cpu_float32")
# case -> (group, data set, parameters, shortened parameters, shortened rows)
CASES = {
    "digits-adam": ("estimator digits 64-128-10 adam 200 epochs", "digits",
                    dict(hidden_layer_sizes=(128,), solver="adam", max_iter=200, tol=0.0,
                         n_iter_no_change=200, random_state=0),
                    dict(max_iter=5), None),
    "digits-lbfgs": ("estimator digits 64-128-10 lbfgs max_iter 200", "digits",
                     dict(hidden_layer_sizes=(128,), solver="lbfgs", max_iter=200,
                          random_state=0),
                     dict(max_iter=10), None),
    "tabular-adam": ("estimator tabular 40000x100 256-128-4 adam 5 epochs", "tabular",
                     dict(hidden_layer_sizes=(256, 128), solver="adam", max_iter=5,
                          tol=0.0, n_iter_no_change=5, random_state=0),
                     dict(max_iter=1), 2000),
}
MIN_SHORT_ACCURACY = {"digits": 0.5, "tabular": 0.4}    # chance: 0.1 and 0.25


def _data(name, rows=None):
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        X = X / 16.0
    else:
        X, y = make_classification(n_samples=50000, n_features=100, n_informative=40,
                                   n_classes=4, random_state=0)
    if rows is not None:
        X, y = X[:rows], y[:rows]
    return train_test_split(X, y, test_size=0.2, random_state=0)


def _rounds(benchmark, request):
    if benchmark.disabled:
        return 1
    return 1 if float(request.config.getoption("benchmark_max_time")) < 0.5 else 3


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("case", list(CASES))
def test_estimator_fit(benchmark, case, contender, describe, request):
    group, data, params, short, short_rows = CASES[case]
    if benchmark.disabled:
        params = dict(params, **short)
    Xtr, Xte, ytr, yte = _data(data, short_rows if benchmark.disabled else None)
    if contender == "sklearn":
        from sklearn.neural_network import MLPClassifier
        dtype = np.float64
    else:
        from fastnn.sklearn import MLPClassifier
        dtype = np.float32 if contender == "cpu_float32" else np.float64
        params = dict(params, backend="cpu", dtype=dtype)
    describe(benchmark, group, contender, f"{data} {Xtr.shape} -> {case}", dtype=dtype,
             n_train=len(Xtr), n_test=len(Xte),
             params={k: str(v) for k, v in params.items() if k != "dtype"})

    def setup():
        return (MLPClassifier(**params),), {}

    def fit(clf):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return clf.fit(Xtr, ytr)

    if contender != "sklearn":          # compile fastnn's kernels outside the timing
        fit(MLPClassifier(**dict(params, max_iter=1)))
    clf = benchmark.pedantic(fit, setup=setup, rounds=_rounds(benchmark, request),
                             iterations=1)
    acc = float(clf.score(Xte, yte))
    benchmark.extra_info.update(test_accuracy=acc, n_iter=int(clf.n_iter_),
                                epochs=int(params["max_iter"]))
    assert acc >= MIN_SHORT_ACCURACY[data], f"{contender}: test accuracy {acc:.4f}"
