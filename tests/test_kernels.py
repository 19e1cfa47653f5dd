"""Every compiled kernel (cpu and cuda) against the NumPy reference in float64, on random odd-sized inputs,
float32 and float64, with outputs NaN-poisoned before the call."""
import numpy as np
import pytest

import fastnn as fn
from fastnn.kernels import specs
from kernel_cases import (DTYPES, SHAPES, close, poisoned, rand, rule_scalars,
                          small_enough, tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(fn.ACTIVATIONS))
def test_activation_forward(name, shape, dtype, rng, ref, kern):
    small_enough(kern.name, *shape)
    z = rand(rng, shape, dtype)
    a = poisoned(shape, dtype)
    kern.activation_forward(name, z, a)
    want = np.empty(shape)
    ref.activation_forward(name, z.astype(np.float64), want)
    close(a, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(fn.ACTIVATIONS))
def test_activation_backward(name, shape, dtype, rng, ref, kern):
    small_enough(kern.name, *shape)
    z = rand(rng, shape, dtype)
    a = np.empty(shape, dtype)
    ref.activation_forward(name, z, a)
    ga = rand(rng, shape, dtype)
    gb0 = rand(rng, shape[1], dtype)
    gz, gb = poisoned(shape, dtype), gb0.copy()
    kern.activation_backward(name, z, a, ga, gz, gb, 0.75)
    wz, wb = np.empty(shape), gb0.astype(np.float64)
    ref.activation_backward(name, *(v.astype(np.float64) for v in (z, a, ga)), wz, wb, 0.75)
    close(gz, wz, dtype)
    close(gb, wb, dtype, scale=shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,fin,fout", [(1, 1, 1), (7, 33, 1), (33, 7, 1025),
                                             (1025, 7, 33), (5, 1025, 3)])
def test_dense(batch, fin, fout, dtype, rng, ref, kern):
    small_enough(kern.name, batch, fin, fout)
    x, w, b = (rand(rng, s, dtype) for s in ((batch, fin), (fin, fout), (fout,)))
    z = poisoned((batch, fout), dtype)
    kern.dense_forward(x, w, b, z)
    wz = np.empty((batch, fout))
    ref.dense_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), wz)
    close(z, wz, dtype, scale=fin)

    gz = rand(rng, (batch, fout), dtype)
    gw0 = rand(rng, (fin, fout), dtype)
    gw, gx = gw0.copy(), poisoned((batch, fin), dtype)
    kern.dense_backward(x, w, gz, gw, gx, 0.5)
    wgw, wgx = gw0.astype(np.float64), np.empty((batch, fin))
    ref.dense_backward(x.astype(np.float64), w.astype(np.float64), gz.astype(np.float64),
                       wgw, wgx, 0.5)
    close(gw, wgw, dtype, scale=batch)   # beta = 1: added to what was there
    close(gx, wgx, dtype, scale=fout)
    kern.dense_backward(x, w, gz, gw, None, 0.5)   # first layer: no input gradient


def _targets(name, rng, shape, dtype):
    if name == "cross_entropy":
        return rng.integers(0, shape[1], shape[0]).astype(np.intp)
    if name == "cross_entropy_probs":
        t = rng.uniform(0.1, 1, shape)
        return (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    if name in ("bce", "bce_with_logits", "kl_div"):
        return rng.uniform(0.05, 0.95, shape).astype(dtype)
    if name == "hinge":
        return rng.choice([-1.0, 1.0], shape).astype(dtype)
    return rand(rng, shape, dtype)


def _outputs(name, rng, shape, dtype):
    if name == "bce":
        return rng.uniform(0.02, 0.98, shape).astype(dtype)
    if name == "kl_div":
        return np.log(rng.uniform(0.05, 1, shape)).astype(dtype)
    return rand(rng, shape, dtype)


LOSS_KERNELS = tuple(specs.LOSS_KERNELS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", LOSS_KERNELS)
def test_loss_kernels(name, shape, dtype, rng, ref, kern):
    small_enough(kern.name, *shape)
    out = _outputs(name, rng, shape, dtype)
    target = _targets(name, rng, shape, dtype)
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
@pytest.mark.parametrize("n", [1, 7, 33, 1025, 70001])
@pytest.mark.parametrize("rule", sorted(specs.UPDATE_RULES))
def test_optimizer_step(rule, n, dtype, rng, ref, kern):
    """One fused step of every update rule against the reference, all buffers."""
    small_enough(kern.name, n)
    p0, g = rand(rng, n, dtype), rand(rng, n, dtype)
    names = specs.UPDATE_RULES[rule].state
    # state a running optimizer could hold: signed averages, squared averages >= 1
    # (so that square_avg - grad_avg^2 stays positive)
    state0 = [(0.1 if name == "grad_avg" else 1.0) * rand(rng, n, dtype)
              if name in ("grad_avg", "exp_avg", "momentum_buffer")
              else 1 + np.abs(rand(rng, n, dtype)) for name in names]
    h = rule_scalars(rule)
    p, state = p0.copy(), tuple(s.copy() for s in state0)
    kern.optimizer_step(rule, p, g, state, h._make(dtype(x) for x in h))
    wp, wstate = p0.astype(np.float64), tuple(s.astype(np.float64) for s in state0)
    ref.optimizer_step(rule, wp, g.astype(np.float64), wstate, h)
    close(p, wp, dtype)
    for s, w in zip(state, wstate):
        close(s, w, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", [2.0, 1.0, 3.5, np.inf])
@pytest.mark.parametrize("n", [1, 33, 70001])
def test_vector_norm(order, n, dtype, rng, ref, kern):
    small_enough(kern.name, n)
    x = rand(rng, n, dtype)
    want = np.linalg.norm(x.astype(np.float64), ord=order)
    assert kern.vector_norm(x, order) == pytest.approx(want, rel=1e-12)
    assert ref.vector_norm(x, order) == pytest.approx(want, rel=1e-12)
    x[n // 2] = np.nan
    assert np.isnan(kern.vector_norm(x, order))


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits_stay_finite(dtype, kern, ref):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype)
    for backend in (kern, ref):
        for name, target in (("cross_entropy", np.array([1, 0])),
                             ("bce_with_logits", np.array([[1, 0, 1], [0, 1, 0]], dtype))):
            grad = np.empty_like(z)
            value = backend.loss(name, z, target, grad, 0.0, 0.5)
            assert np.isfinite(value) and np.isfinite(grad).all(), (backend.name, name)
        for act in fn.ACTIVATIONS:
            a = np.empty_like(z)
            backend.activation_forward(act, z, a)
            assert np.isfinite(a).all(), (backend.name, act)
