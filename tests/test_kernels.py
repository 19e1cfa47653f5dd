"""Every cpu kernel against the NumPy reference in float64, on random odd-sized inputs,
float32 and float64, with outputs NaN-poisoned before the call."""
import numpy as np
import pytest

import fastnn as fn
from kernel_cases import DTYPES, SHAPES, poisoned, rand, tol


def close(got, want, dtype, scale=1.0):
    rtol, atol = tol(dtype)
    assert not np.isnan(got).any(), "kernel left NaN (unwritten output?)"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(fn.ACTIVATIONS))
def test_activation_forward(name, shape, dtype, rng, ref, cpu, mode):
    z = rand(rng, shape, dtype)
    a = poisoned(shape, dtype)
    cpu.activation_forward(name, z, a)
    want = np.empty(shape)
    ref.activation_forward(name, z.astype(np.float64), want)
    close(a, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(fn.ACTIVATIONS))
def test_activation_backward(name, shape, dtype, rng, ref, cpu, mode):
    z = rand(rng, shape, dtype)
    a = np.empty(shape, dtype)
    ref.activation_forward(name, z, a)
    ga = rand(rng, shape, dtype)
    gb0 = rand(rng, shape[1], dtype)
    gz, gb = poisoned(shape, dtype), gb0.copy()
    cpu.activation_backward(name, z, a, ga, gz, gb, 0.75)
    wz, wb = np.empty(shape), gb0.astype(np.float64)
    ref.activation_backward(name, *(v.astype(np.float64) for v in (z, a, ga)), wz, wb, 0.75)
    close(gz, wz, dtype)
    close(gb, wb, dtype, scale=shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,fin,fout", [(1, 1, 1), (7, 33, 1), (33, 7, 1025),
                                             (1025, 7, 33), (5, 1025, 3)])
def test_dense(batch, fin, fout, dtype, rng, ref, cpu):
    x, w, b = (rand(rng, s, dtype) for s in ((batch, fin), (fin, fout), (fout,)))
    z = poisoned((batch, fout), dtype)
    cpu.dense_forward(x, w, b, z)
    wz = np.empty((batch, fout))
    ref.dense_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), wz)
    close(z, wz, dtype, scale=fin)

    gz = rand(rng, (batch, fout), dtype)
    gw0 = rand(rng, (fin, fout), dtype)
    gw, gx = gw0.copy(), poisoned((batch, fin), dtype)
    cpu.dense_backward(x, w, gz, gw, gx, 0.5)
    wgw, wgx = gw0.astype(np.float64), np.empty((batch, fin))
    ref.dense_backward(x.astype(np.float64), w.astype(np.float64), gz.astype(np.float64),
                       wgw, wgx, 0.5)
    close(gw, wgw, dtype, scale=batch)   # beta = 1: added to what was there
    close(gx, wgx, dtype, scale=fout)
    cpu.dense_backward(x, w, gz, gw, None, 0.5)   # first layer: no input gradient


def _targets(name, rng, shape, dtype):
    if name == "cross_entropy":
        return rng.integers(0, shape[1], shape[0]).astype(np.intp)
    if name == "cross_entropy_probs":
        t = rng.uniform(0.1, 1, shape)
        return (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    if name in ("bce", "bce_logits", "kl_div"):
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


LOSS_KERNELS = ("mse", "l1", "huber", "bce", "bce_logits", "hinge", "kl_div",
                "cross_entropy", "cross_entropy_probs")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", LOSS_KERNELS)
def test_loss_kernels(name, shape, dtype, rng, ref, cpu, mode):
    out = _outputs(name, rng, shape, dtype)
    target = _targets(name, rng, shape, dtype)
    param, norm = 0.7, 1.0 / shape[0]
    grad = poisoned(shape, dtype)
    value = cpu.loss(name, out, target, grad, param, norm)
    wt = target if target.dtype.kind == "i" else target.astype(np.float64)
    wgrad = np.empty(shape)
    wvalue = ref.loss(name, out.astype(np.float64), wt, wgrad, param, norm)
    close(grad, wgrad, dtype)
    rtol, atol = tol(dtype)
    assert value == pytest.approx(wvalue, rel=rtol, abs=atol * shape[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 33, 1025, 70001])
def test_sgd_step(n, dtype, rng, ref, cpu, mode):
    p0, g = rand(rng, n, dtype), rand(rng, n, dtype)
    p, wp = p0.copy(), p0.astype(np.float64)
    cpu.sgd_step(p, g, 0.3)
    ref.sgd_step(wp, g.astype(np.float64), 0.3)
    close(p, wp, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits_stay_finite(dtype, cpu, ref):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype)
    for backend in (cpu, ref):
        for name, target in (("cross_entropy", np.array([1, 0])),
                             ("bce_logits", np.array([[1, 0, 1], [0, 1, 0]], dtype))):
            grad = np.empty_like(z)
            value = backend.loss(name, z, target, grad, 0.0, 0.5)
            assert np.isfinite(value) and np.isfinite(grad).all(), (backend.name, name)
        for act in fn.ACTIVATIONS:
            a = np.empty_like(z)
            backend.activation_forward(act, z, a)
            assert np.isfinite(a).all(), (backend.name, act)
