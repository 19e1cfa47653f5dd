"""The cpu backend's whole-model passes (one compiled call per forward or backward,
BLAS called from inside the kernel) against the float64 numpy reference, and against
the per-layer path they replace (``Backend.model_forward``/``model_backward``'s
defaults), for every activation, odd sizes, both float types, serial and parallel."""
import numpy as np
import pytest

import fastnn as fn
from fastnn.backends.base import Backend

ACTS = list(fn.ACTIVATIONS)


def _models(acts, dtype, sizes):
    def build(backend, dt):
        layers = [fn.Dense(i, o, activation=a)
                  for (i, o), a in zip(zip(sizes[:-1], sizes[1:]), acts)]
        return fn.Sequential(*layers, backend=backend, dtype=dt, seed=3)
    return build("cpu", dtype), build("numpy", np.float64)


def _poison(model, rows):
    model.plan(rows).workspace[...] = np.nan       # every Z, A, dL/dZ, dL/dX unwritten


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ACTS)
def test_fused_passes_match_reference(act, dtype, mode, rng):
    # act as the hidden activation and as the output one; widths 1 and 33 included
    sizes = (7, 33, 1, 5)
    acts = (act, "tanh" if act == "softmax" else act, act)
    if act == "softmax":
        acts = ("relu", "sigmoid", "softmax")     # softmax over a width-1 layer is trivial
    cpu, ref = _models(acts, dtype, sizes)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    g0 = rng.standard_normal(cpu.num_parameters)    # gradients start non-zero: ADDED to
    for rows in (1, 7, 33):
        x = rng.standard_normal((rows, sizes[0]))
        grad = rng.standard_normal((rows, sizes[-1]))
        _poison(cpu, rows)
        out = cpu.forward(x.astype(dtype))
        want = ref.forward(x)
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
        cpu.flat_grads[...] = g0
        ref.flat_grads[...] = g0
        cpu.backward(grad.astype(dtype), scale=0.37)
        ref.backward(grad, scale=0.37)
        np.testing.assert_allclose(cpu.flat_grads, ref.flat_grads, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_equals_per_layer_path(dtype, rng):
    """Same BLAS, same calls, same kernels: the fused passes and the per-layer loop they
    replace agree bit for bit."""
    sizes = (9, 17, 12, 11, 3)
    acts = ("relu", "gelu", "softplus", "softmax")
    fused, _ = _models(acts, dtype, sizes)
    loop, _ = _models(acts, dtype, sizes)
    x = rng.standard_normal((13, sizes[0])).astype(dtype)
    grad = rng.standard_normal((13, sizes[-1])).astype(dtype)
    out = fused.forward(x).copy()
    fused.backward(grad, scale=0.5)
    plan = loop.plan(13)
    _poison(loop, 13)
    loop_out = Backend.model_forward(loop.backend, plan, x)
    loop.zero_grad()
    Backend.model_backward(loop.backend, plan, x, grad, dtype(0.5))
    np.testing.assert_array_equal(out, loop_out)
    np.testing.assert_array_equal(fused.flat_grads, loop.flat_grads)


def test_workspace_is_one_flat_buffer():
    model = fn.Sequential(fn.Dense(4, 6, activation="relu"), fn.Dense(6, 2), seed=0)
    plan = model.plan(5)
    views = [v for group in (plan.z, plan.a, plan.grad_z, plan.grad_x)
             for v in group if v is not None]
    assert all(np.shares_memory(v, plan.workspace) for v in views)
    assert plan.a[1] is not plan.z[1] or model.layers[1].activation == "linear"
    # linear output: A is Z (no copy); hidden relu: its own A
    assert np.shares_memory(plan.a[1], plan.z[1])
    assert not np.shares_memory(plan.a[0], plan.z[0])
    assert plan.grad_x[0] is None
