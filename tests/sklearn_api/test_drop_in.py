"""fastnn.sklearn against scikit-learn itself: the same parameters give the same model.

Same random_state -> the same initial weights, batches, validation split and stopping;
the steps are scikit-learn's (Adam's epsilon and SGD's momentum buffer converted to
fastnn's conventions step by step), so in float64 every fitted attribute equals
scikit-learn's to rounding: weights within 1e-9 relative after whole fits."""
import pickle
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="fastnn.sklearn needs scikit-learn")
from sklearn import neural_network as sk  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def _data(rng, n=97, d=6):
    X = rng.standard_normal((n, d))
    w = rng.standard_normal((d, 3))
    return X, X @ w + 0.1 * rng.standard_normal((n, 3))


def _classes(rng, kind):
    X, z = _data(rng)
    if kind == "multiclass":
        return X, np.array(["ant", "bee", "cat"])[z.argmax(axis=1)]
    if kind == "binary":
        return X, (z[:, 0] > 0).astype(int) + 3
    return X, (z > 0).astype(int)                      # multilabel indicator


def _fit_both(ours, theirs, X, y, sample_weight=None):
    with warnings.catch_warnings(record=True) as a:
        warnings.simplefilter("always")
        ours.fit(X, y, sample_weight=sample_weight)
    with warnings.catch_warnings(record=True) as b:
        warnings.simplefilter("always")
        theirs.fit(X, y, sample_weight=sample_weight)
    assert [w.category for w in a] == [w.category for w in b]
    return ours, theirs


def _assert_same_model(ours, theirs, X, rtol=1e-9):
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12)
    for name in ("n_iter_", "t_", "n_layers_", "n_outputs_", "out_activation_"):
        if hasattr(theirs, name):
            assert getattr(ours, name) == getattr(theirs, name), name
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=rtol)
    for name in ("loss_curve_", "validation_scores_", "best_loss_",
                 "best_validation_score_"):
        if getattr(theirs, name, None) is not None:
            np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name),
                                       rtol=rtol, err_msg=name)
        else:
            assert getattr(ours, name, None) is None, name
    if hasattr(theirs, "predict_proba"):
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X),
                                   rtol=1e-8, atol=1e-12)
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    else:
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-8,
                                   atol=1e-12)


SOLVERS = {
    "adam": dict(solver="adam", learning_rate_init=0.01),
    "sgd": dict(solver="sgd", learning_rate_init=0.05),
    "sgd-nesterov-invscaling": dict(solver="sgd", learning_rate="invscaling",
                                    learning_rate_init=0.2, power_t=0.3),
    "sgd-adaptive": dict(solver="sgd", learning_rate="adaptive", momentum=0.5,
                         nesterovs_momentum=False, learning_rate_init=0.3, tol=1e-2,
                         n_iter_no_change=2),
    "sgd-plain": dict(solver="sgd", momentum=0.0, learning_rate_init=0.1),
    "lbfgs": dict(solver="lbfgs"),
}


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel"])
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_classifier_equals_scikit_learn(kind, solver, rng):
    X, y = _classes(rng, kind)
    kw = dict(hidden_layer_sizes=(7, 5), max_iter=12, random_state=3, batch_size=20,
              alpha=0.01, **SOLVERS[solver])
    ours, theirs = _fit_both(MLPClassifier(**kw), sk.MLPClassifier(**kw), X, y)
    _assert_same_model(ours, theirs, X)


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_regressor_equals_scikit_learn(activation, loss, solver, rng):
    X, y = _data(rng)
    if loss == "poisson":
        y = np.exp(0.3 * y)
    kw = dict(hidden_layer_sizes=(6,), activation=activation, solver=solver, loss=loss,
              max_iter=9, random_state=5, learning_rate_init=1e-3, alpha=0.1)
    ours, theirs = _fit_both(MLPRegressor(**kw), sk.MLPRegressor(**kw), X, y)
    _assert_same_model(ours, theirs, X)


@pytest.mark.parametrize("estimator", ["classifier", "regressor"])
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_sample_weights_early_stopping_and_odd_batches(estimator, solver, rng):
    if estimator == "classifier":
        X, y = _classes(rng, "multiclass")
        ours, theirs = MLPClassifier, sk.MLPClassifier
    else:
        X, y = _data(rng)
        y = y[:, 0]
        ours, theirs = MLPRegressor, sk.MLPRegressor
    kw = dict(hidden_layer_sizes=(8,), solver=solver, max_iter=15, random_state=1,
              batch_size=13, early_stopping=solver != "lbfgs", validation_fraction=0.2,
              n_iter_no_change=3, activation="tanh")
    sw = rng.uniform(0.1, 3.0, len(X))
    a, b = _fit_both(ours(**kw), theirs(**kw), X, y, sample_weight=sw)
    _assert_same_model(a, b, X)


def test_micro_batches_give_the_same_model(rng):
    X, y = _classes(rng, "multiclass")
    kw = dict(hidden_layer_sizes=(9,), max_iter=5, random_state=0, batch_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole = MLPClassifier(**kw).fit(X, y)
        micro = MLPClassifier(micro_batch_size=7, **kw).fit(X, y)
    _assert_same_model(micro, whole, X, rtol=1e-12)


def test_partial_fit_and_warm_start_equal_scikit_learn(rng):
    X, y = _classes(rng, "multiclass")
    kw = dict(hidden_layer_sizes=(6,), random_state=2, learning_rate_init=0.02)
    ours, theirs = MLPClassifier(**kw), sk.MLPClassifier(**kw)
    for lo in (0, 40, 80):
        ours.partial_fit(X[lo:lo + 40], y[lo:lo + 40], classes=np.unique(y))
        theirs.partial_fit(X[lo:lo + 40], y[lo:lo + 40], classes=np.unique(y))
    _assert_same_model(ours, theirs, X)
    kw = dict(hidden_layer_sizes=(6,), random_state=2, max_iter=3, warm_start=True)
    ours, theirs = MLPRegressor(**kw), sk.MLPRegressor(**kw)
    Xr, yr = _data(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(2):
            ours.fit(Xr, yr)
            theirs.fit(Xr, yr)
    _assert_same_model(ours, theirs, Xr)


def test_the_errors_are_scikit_learn_s(rng):
    X, y = _classes(rng, "multiclass")
    for cls in (MLPClassifier, sk.MLPClassifier):
        m = cls(hidden_layer_sizes=(3,))
        m.partial_fit(X, y, classes=np.unique(y))
        with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
            m.partial_fit(X, np.where(y == "ant", "ape", y))
        with pytest.raises(AttributeError, match="has no attribute 'partial_fit'") as e:
            cls(solver="lbfgs").partial_fit
        assert "partial_fit is only available for stochastic" in str(e.value.__cause__)
        with pytest.raises(ValueError, match="hidden_layer_sizes must be > 0"):
            cls(hidden_layer_sizes=(3, 0)).fit(X, y)
        with pytest.raises(ValueError, match="early_stopping"):
            cls(early_stopping=True).partial_fit(X, y, classes=np.unique(y))
    for cls in (MLPRegressor, sk.MLPRegressor):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # overflow (numpy), no convergence
            with pytest.raises(ValueError, match="Solver produced non-finite parameter "
                                                 "weights"):
                cls(solver="sgd", learning_rate_init=1e3, max_iter=5,
                    random_state=0).fit(X, X[:, 0] * 1e150)


def test_dtype_and_backend_arguments(rng):
    X, y = _classes(rng, "multiclass")
    kw = dict(hidden_layer_sizes=(6,), max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = MLPClassifier(**kw).fit(X, y)
        f32 = MLPClassifier(dtype=np.float32, **kw).fit(X, y)
        ref_np = MLPClassifier(backend="numpy", **kw).fit(X, y)
    assert all(c.dtype == np.float32 for c in f32.coefs_)
    for a, b in zip(f32.coefs_, ref.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    _assert_same_model(ref_np, ref, X, rtol=1e-9)
    with pytest.raises(ValueError, match="dtype must be np.float32 or np.float64"):
        MLPClassifier(dtype=np.int32).fit(X, y)
    with pytest.raises(ValueError, match="backend"):
        MLPClassifier(backend="tpu").fit(X, y)


def test_coefs_read_and_write_the_model(rng):
    X, y = _data(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
    coefs = [np.full_like(c, 0.1) for c in m.coefs_]
    m.coefs_ = coefs
    m.intercepts_ = [np.zeros_like(b) for b in m.intercepts_]
    h = np.maximum(X @ coefs[0], 0)
    np.testing.assert_allclose(m.predict(X), h @ coefs[1], rtol=1e-12)
    m.coefs_[1][...] = 0.0                 # views: writing them writes the model
    np.testing.assert_array_equal(m.predict(X), 0.0)
    with pytest.raises(ValueError, match="shape"):
        m.coefs_ = [np.zeros((2, 2)), coefs[1]]


def test_pickle_round_trip_continues_training(rng):
    X, y = _classes(rng, "binary")
    kw = dict(hidden_layer_sizes=(5,), random_state=4, solver="sgd")
    ours, theirs = MLPClassifier(**kw), sk.MLPClassifier(**kw)
    for m in (ours, theirs):
        m.partial_fit(X, y, classes=np.unique(y))
    ours = pickle.loads(pickle.dumps(ours))
    for m in (ours, theirs):
        m.partial_fit(X, y)
    _assert_same_model(ours, theirs, X)


def test_pipeline_and_grid_search(rng):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _classes(rng, "multiclass")
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=300, random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1]}, cv=3, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    assert grid.best_score_ > 0.7
    assert grid.best_estimator_.score(X, y) > 0.8


def test_a_clear_import_error_without_scikit_learn(monkeypatch):
    for name in [n for n in sys.modules if n == "sklearn" or n.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "fastnn.sklearn")
    with pytest.raises(ImportError, match=r"pip install 'fastnn\[sklearn\]'"):
        import fastnn.sklearn  # noqa: F401


@pytest.mark.skipif("cuda" not in __import__("fastnn").available_backends(),
                    reason="no cuda backend here (the [cuda] extra, or a GPU)")
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_cuda_backend_equals_scikit_learn(solver, rng):
    """Tiny, for the CUDA simulator: the device buffers go through the host for the
    L2 term and L-BFGS's point; the model is still scikit-learn's."""
    X, y = _classes(rng, "multiclass")
    X, y = X[:12, :3], y[:12]
    kw = dict(hidden_layer_sizes=(4,), max_iter=2, random_state=0, solver=solver)
    ours, theirs = _fit_both(MLPClassifier(backend="cuda", **kw), sk.MLPClassifier(**kw),
                             X, y)
    _assert_same_model(ours, theirs, X)
