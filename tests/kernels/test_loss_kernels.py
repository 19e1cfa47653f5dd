"""Every loss kernel of the registry (cpu serial and parallel, cuda) against the NumPy
reference in float64: value and gradient, odd sizes, both float types, the gradient
NaN-poisoned.  Inputs are drawn by each kernel's target and output kinds."""
import numpy as np
import pytest

import fastnn as fn
from fastnn.kernels import specs
from kernel_cases import DTYPES, SHAPES, close, loss_case, poisoned, small_enough, tol


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(specs.LOSS_KERNELS))
def test_loss_kernels(name, shape, dtype, rng, ref, kern):
    small_enough(kern.name, *shape)
    check_loss_kernel(name, shape, dtype, rng, ref, kern)


def check_loss_kernel(name, shape, dtype, rng, ref, kern):
    out, target = loss_case(name, rng, shape, dtype)
    param, norm = 0.7, 1.0 / shape[0]
    grad = poisoned(shape, dtype)
    value = kern.loss(name, out, target, grad, param, norm)
    wt = target if target.dtype.kind == "i" else target.astype(np.float64)
    wgrad = np.empty(shape)
    wvalue = ref.loss(name, out.astype(np.float64), wt, wgrad, param, norm)
    close(grad, wgrad, dtype)
    rtol, atol = tol(dtype)
    assert value == pytest.approx(wvalue, rel=rtol, abs=atol * shape[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits_stay_finite(dtype, kern, ref):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype)
    for backend in (kern, ref):
        for name, target in (("cross_entropy", np.array([1, 0])),
                             ("bce_with_logits",
                              np.array([[1, 0, 1], [0, 1, 0]], dtype))):
            grad = np.empty_like(z)
            value = backend.loss(name, z, target, grad, 0.0, 0.5)
            assert np.isfinite(value) and np.isfinite(grad).all(), (backend.name, name)
        for act in fn.ACTIVATIONS:
            a = np.empty_like(z)
            backend.activation_forward(act, z, a)
            assert np.isfinite(a).all(), (backend.name, act)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_of_an_infinite_target_probability_is_inf(dtype, kern, ref):
    """Issue 14: lse * sum(t) - <t, z> gave inf - inf = NaN; PyTorch (and the
    reference, -sum t log_softmax) give inf: each term t_c (lse - z_c) is +inf or
    finite."""
    z = np.array([[0.5, -1.0, 2.0], [1.0, 2.0, 3.0]], dtype)
    t = np.array([[np.inf, 0, 0], [0.2, 0.3, 0.5]], dtype)
    for backend in (kern, ref):
        grad = poisoned(z.shape, dtype)
        with np.errstate(all="ignore"):
            value = backend.loss("cross_entropy_probs", z, t, grad, 0.0, 0.5)
        assert value == np.inf, backend.name
