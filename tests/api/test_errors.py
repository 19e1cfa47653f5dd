"""Bad input: a ValueError/TypeError naming the argument and the expectation, and the
model left untouched."""
import numpy as np
import pytest

import fastnn as fn


@pytest.fixture
def model():
    return fn.Sequential(fn.Dense(4, 5, activation="relu"), fn.Dense(5, 3),
                         dtype=np.float32, seed=0)


@pytest.fixture
def snapshot(model):
    """Asserts at teardown that parameters and gradients are unchanged."""
    params, grads = model.flat_params.copy(), model.flat_grads.copy()
    yield
    np.testing.assert_array_equal(model.flat_params, params)
    np.testing.assert_array_equal(model.flat_grads, grads)


X = np.ones((3, 4), np.float32) * 0.5


@pytest.mark.parametrize("x,exc,match", [
    (np.ones((3, 7), np.float32), ValueError, "x must have 4 columns"),
    (np.ones((3, 4), np.float64), TypeError, "x must have dtype float32"),
    (np.ones(4, np.float32), ValueError, r"x must be 2-D.*reshape\(1, -1\)"),
    ([[1.0, 2.0, 3.0, 4.0]], TypeError, "x must be a numpy.ndarray"),
    (np.ones((4, 4), np.float32).T[:, :4][::2], ValueError, "C-contiguous"),
    (np.ones((0, 4), np.float32), ValueError, "at least one row"),
])
def test_forward_rejects(model, snapshot, x, exc, match):
    with pytest.raises(exc, match=match):
        model.forward(x)


def test_backward_rejects(model, snapshot):
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(np.ones((3, 3), np.float32))
    model.forward(X)
    with pytest.raises(ValueError, match=r"grad must have shape \(3, 3\)"):
        model.backward(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="grad must have dtype float32"):
        model.backward(np.ones((3, 3), np.float64))
    with pytest.raises(ValueError, match="scale must be a finite real"):
        model.backward(np.ones((3, 3), np.float32), scale=float("nan"))


@pytest.mark.parametrize("out,target,exc,match", [
    (np.ones((3, 3), np.float32), np.array([0, 1, 3]), ValueError, r"labels must lie in \[0, 3\)"),
    (np.ones((3, 3), np.float32), np.array([0, -1, 2]), ValueError, "labels must lie"),
    (np.ones((3, 3), np.float32), np.array([0.0, 1.0, 2.0]), TypeError, "labels must be integers"),
    (np.ones((3, 3), np.float32), np.array([0, 1]), ValueError, "batch sizes must match"),
    (np.ones((3, 3), np.float32), np.ones((3, 3)), TypeError, "target must have dtype float32"),
    (np.ones(3, np.float32), np.array([0, 1, 2]), ValueError, "output must be 2-D"),
])
def test_cross_entropy_rejects(out, target, exc, match):
    with pytest.raises(exc, match=match):
        fn.CrossEntropyLoss().forward(out, target)


def test_elementwise_losses_reject():
    out = np.ones((4, 1), np.float32)
    with pytest.raises(ValueError, match="batch sizes must match"):
        fn.MSELoss().forward(out, np.ones((3, 1), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        fn.MSELoss().forward(out, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"-1 and \+1"):
        fn.HingeLoss().forward(out, np.zeros((4, 1), np.float32))
    with pytest.raises(ValueError, match=r"output \(probabilities\) must lie in \[0, 1\]"):
        fn.BCELoss().forward(out * 2, np.ones((4, 1), np.float32))
    with pytest.raises(ValueError, match="contains NaN"):     # a diverged network
        fn.BCELoss().forward(out * np.nan, np.ones((4, 1), np.float32))
    with pytest.raises(ValueError, match="delta must be > 0"):
        fn.HuberLoss(delta=0)
    with pytest.raises(RuntimeError, match="before forward"):
        fn.MSELoss().backward()


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown activation 'relu6'"):
        fn.Dense(3, 4, activation="relu6")
    with pytest.raises(ValueError, match="unknown init"):
        fn.Dense(3, 4, init="orthogonal")
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        fn.Sequential(fn.Dense(3, 4), backend="gpu")
    with pytest.raises(ValueError, match="unknown loss 'mae'"):
        fn.get_loss("mae")


def test_constructor_checks():
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        fn.Dense(0, 3)
    with pytest.raises(ValueError, match="layer 1 has in_features=5"):
        fn.Sequential(fn.Dense(3, 4), fn.Dense(5, 2))
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        fn.Sequential(fn.Dense(3, 4), dtype=np.int32)
    with pytest.raises(ValueError, match="at least one layer"):
        fn.Sequential()
    layer = fn.Dense(3, 4)
    fn.Sequential(layer)
    with pytest.raises(ValueError, match="already belongs to a model"):
        fn.Sequential(layer)


def test_set_weights_rejects(model, snapshot):
    good = model.get_weights()
    with pytest.raises(ValueError, match="list of 4 arrays"):
        model.set_weights(good[:3])
    bad = list(good)
    bad[2] = np.ones((3, 5), np.float32)
    with pytest.raises(ValueError, match=r"weights\[1.weight\] must have shape \(5, 3\)"):
        model.set_weights(bad)
    bad = list(good)
    bad[3] = np.array([0.1, 0.2, 0.3])            # float64 values float32 cannot hold
    with pytest.raises(TypeError, match="would change when cast to float32"):
        model.set_weights(bad)
    bad = list(good)
    bad[1] = np.full(5, np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN or inf"):
        model.set_weights(bad)


def test_optimizer_rejects(model):
    with pytest.raises(ValueError, match="lr must be >= 0"):
        fn.SGD(model, lr=-0.1)
    with pytest.raises(ValueError, match="twice"):     # a subset is fine, duplicates not
        fn.SGD(model.parameters()[:2] + model.parameters()[:1], lr=0.1)
