"""Derivatives against central finite differences, in float64, on both backends."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import losses
from kernel_cases import BACKENDS, CUDA_SIMULATED, backend_on_host, loss_case, rand

H = 1e-6


def central_diff(fun, x, only=None):
    """d fun / d x for a scalar fun of the array x (NumPy, or a backend's: each
    element is set through indexing), element by element; at the flat indices
    ``only`` when given (the rest of the result is NaN)."""
    g = np.full(x.shape, np.nan)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in (range(flat.size) if only is None else only):
        keep = flat[i]
        flat[i] = keep + H
        up = fun()
        flat[i] = keep - H
        down = fun()
        flat[i] = keep
        gflat[i] = (up - down) / (2 * H)
    return g


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(fn.ACTIVATIONS))
def test_activation_derivative(name, backend, rng):
    be = backend_on_host(backend)
    shape = (4, 5)
    z = rand(rng, shape, np.float64)
    weights = rand(rng, shape, np.float64)   # d/dz of sum(weights * f(z))
    a = np.empty(shape)

    def value():
        out = np.empty(shape)
        be.activation_forward(name, z, out)
        return float(np.sum(weights * out))

    be.activation_forward(name, z, a)
    gz, gb = np.empty(shape), np.zeros(shape[1])
    be.activation_backward(name, z, a, weights, gz, gb, 1.0)
    np.testing.assert_allclose(gz, central_diff(value, z), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, gz.sum(axis=0), rtol=1e-12)


def _loss_case(cls, rng, shape):
    """The loss (Huber with delta 0.8) and an (output, target) its registry entry
    allows."""
    loss = cls(0.8) if cls.spec.param else cls()
    return (loss, *loss_case(cls.kernel, rng, shape, np.float64))


LOSS_CLASSES = list(losses.LOSS_CLASSES.values())     # every public loss


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", LOSS_CLASSES, ids=lambda c: c.__name__)
def test_loss_derivative(cls, backend, rng):
    loss, out, target = _loss_case(cls, rng, (6, 4))
    loss.backend = fn.get_backend(backend)
    loss.forward(out, target)
    grad = loss.backend.to_numpy(loss.backward())
    np.testing.assert_allclose(grad, central_diff(lambda: loss.forward(out, target), out),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_with_probabilities_derivative(backend, rng):
    loss = fn.CrossEntropyLoss(backend=backend)
    out = rand(rng, (5, 3), np.float64)
    t = rng.uniform(0.1, 1, (5, 3))
    t /= t.sum(axis=1, keepdims=True)
    loss.forward(out, t)
    grad = loss.backend.to_numpy(loss.backward())
    np.testing.assert_allclose(grad, central_diff(lambda: loss.forward(out, t), out),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_full_gradient(backend, rng):
    """Every parameter gradient of a 3-layer MLP against finite differences (under
    the CUDA simulator, 15 of them spread over every layer: each difference is two
    forward passes, at ~0.2 s a pass there)."""
    model = fn.Sequential(fn.Dense(5, 7, activation="tanh"),
                          fn.Dense(7, 6, activation="softplus"),
                          fn.Dense(6, 3), backend=backend, dtype=np.float64, seed=3)
    x = rand(rng, (9, 5), np.float64)
    y = rng.integers(0, 3, 9)
    loss = fn.CrossEntropyLoss(backend=backend)

    def value():
        return loss.forward(model.forward(x), y)

    model.zero_grad()
    value()
    model.backward(loss.backward())
    analytic = model.to_numpy(model.flat_grads)
    only = None
    if backend == "cuda" and CUDA_SIMULATED:
        only = np.linspace(0, model.num_parameters - 1, 15).astype(int)
    numeric = central_diff(value, model.flat_params, only)
    pick = slice(None) if only is None else only
    np.testing.assert_allclose(analytic[pick], numeric[pick], rtol=1e-6, atol=1e-8)


def test_backward_adds_scaled_gradients(rng):
    """backward(scale=s) adds s * gradient: two halves weighted 1/2 give the whole."""
    model = fn.Sequential(fn.Dense(4, 8, activation="relu"), fn.Dense(8, 3),
                          dtype=np.float64, seed=0)
    x, y = rand(rng, (10, 4), np.float64), rng.integers(0, 3, 10)
    loss = fn.CrossEntropyLoss()
    model.zero_grad()
    loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    whole = model.flat_grads.copy()
    model.zero_grad()
    for part in (slice(0, 5), slice(5, 10)):
        loss.forward(model.forward(np.ascontiguousarray(x[part])), y[part])
        model.backward(loss.backward(), scale=0.5)
    np.testing.assert_allclose(model.flat_grads, whole, rtol=1e-12, atol=1e-15)
