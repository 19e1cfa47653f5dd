"""The whole-model passes of the compiled backends against the float64 numpy
reference: the cpu's (one Cython call per forward or backward, BLAS and the activation
kernels called from inside it), also against the per-layer path they replace
(``Backend.model_forward``/``model_backward``'s defaults), for every activation, odd
sizes, both float types, serial and parallel; and the cuda's (fused GEMM epilogues,
the bias gradient from the [X, 1] GEMM)."""
import numpy as np
import pytest

import fastnn as fn
from fastnn.backends.base import Backend
from kernel_cases import BACKENDS, close, rand, simulator_sweep

ACTS = list(fn.ACTIVATIONS)


def _models(acts, dtype, sizes):
    def build(backend, dt):
        layers = [fn.Dense(i, o, activation=a)
                  for (i, o), a in zip(zip(sizes[:-1], sizes[1:]), acts)]
        return fn.Sequential(*layers, backend=backend, dtype=dt, seed=3)
    return build("cpu", dtype), build("numpy", np.float64)


def _poison(model, rows):
    model.plan(rows).workspace[...] = np.nan   # every Z, A, dL/dZ, dL/dX unwritten


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


# -- the cuda backend's passes -------------------------------------------------------
@pytest.mark.skipif("cuda" not in BACKENDS, reason="cuda backend unusable here: "
                    f"{fn.backends.unavailable_reasons().get('cuda', '')}")
@pytest.mark.parametrize("act, dtype", simulator_sweep(
    [(a, d) for a in fn.ACTIVATIONS for d in (np.float32, np.float64)],
    keep=[("relu", np.float32), ("softmax", np.float64), ("gelu", np.float32)]))
def test_cuda_passes_match_numpy(act, dtype, rng):
    """Forward and backward of a model with ``act`` in a hidden layer and at the
    output (softmax too), against the float64 numpy backend, workspace NaN-poisoned:
    the fused epilogues and the bias gradient from the [X, 1] GEMM."""
    sizes = (6, 5, 4, 3)
    acts = (act, "relu", act)

    def build(backend, dt):
        return fn.Sequential(*(fn.Dense(i, o, activation=a)
                               for i, o, a in zip(sizes, sizes[1:], acts)),
                             backend=backend, dtype=dt, seed=3)

    model, ref = build("cuda", dtype), build("numpy", np.float64)
    x = rand(rng, (7, sizes[0]), dtype)
    grad = rand(rng, (7, sizes[-1]), dtype)
    model.forward(x)                                # make the workspace, then poison it
    ws = model.plan(7)
    model.backend.fill(ws.workspace, np.nan)
    out = model.to_numpy(model.forward(x))
    want = ref.forward(x.astype(np.float64))
    close(out, want, dtype, 10)
    g0 = rand(rng, model.num_parameters, dtype)     # backward adds into what is there
    model.backend.from_numpy(g0, out=model.flat_grads)
    ref.flat_grads[...] = g0
    model.backward(grad, scale=0.75)
    ref.backward(grad.astype(np.float64), scale=0.75)
    for got, exp, p in zip(model.get_gradients(), ref.get_gradients(), ref.parameters()):
        close(got, exp, dtype, 30)


PARALLEL_PASS = """
import numpy as np, fastnn as fn
from fastnn import threads
threads.use_parallel = lambda size: True          # the parallel kernels, pool not started
m = fn.Sequential(fn.Dense(7, 33, activation="silu"), fn.Dense(33, 5), seed=0)
m.forward(np.ones((7, 7), np.float32))
m.backward(np.ones((7, 5), np.float32))
print("PASSES OK")
"""


def test_parallel_passes_load_from_the_cache(tmp_path):
    """The parallel activation cfuncs load from numba's disk cache in a fresh process
    (they need numba's threading layer linked first: without it, LLVM aborts)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), FASTNN_QUIET="1")
    for run in ("compiles", "loads"):
        child = subprocess.run([sys.executable, "-c", PARALLEL_PASS], env=env,
                               capture_output=True, text=True, timeout=600)
        assert "PASSES OK" in child.stdout, (run, child.stdout + child.stderr[-2000:])
