"""Dense-layer benchmarks: forward ``z = x @ w + b`` and backward ``grad_w += scale *
x^T grad_z; grad_x = grad_z w^T``, 784 -> 512 (the first layer of the README's MLP) at
batch 32 and 128, float32.

Cases, one table (``benchmark.group``) per (kernel, size): every fastnn backend of this
machine (``fastnn.available_backends()``) and PyTorch (``torch.addmm`` /
``addmm_`` + ``mm`` into preallocated outputs; skipped without torch).  Every case
first checks one call against a float64 NumPy reference; outputs are NaN-poisoned
before the timed calls.  ``extra_info["flops"]`` gives GFLOP/s.

    pytest bench/bench_dense.py --benchmark-disable -q       # each case once, as tests
    pytest bench/bench_dense.py --benchmark-only -q          # the timings
"""
import numpy as np
import pytest

import fastnn as fn
from _shared import BACKENDS, F32, normal, rng, timed

CASES = BACKENDS + ("torch",)
IN, OUT = 784, 512
BATCHES = (32, 128)


def _inputs(batch):
    gen = rng(1)
    x = normal(gen, (batch, IN))
    w = normal(gen, (IN, OUT), 1 / np.sqrt(IN))
    b = normal(gen, (OUT,))
    return x, w, b


@pytest.mark.parametrize("backend", CASES)
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"B{b}")
def test_dense_forward(benchmark, batch, backend, describe, close, request):
    x, w, b = _inputs(batch)
    ref = x.astype(np.float64) @ w.astype(np.float64) + b
    describe(benchmark, f"dense_forward {batch}x{IN}->{OUT}", backend,
             f"x({batch},{IN}) w({IN},{OUT}) b({OUT},)", flops=2 * batch * IN * OUT)

    if backend == "torch":
        torch = request.getfixturevalue("torch_peer")
        z = np.empty((batch, OUT), F32)
        xt, wt, bt, zt = (torch.from_numpy(a) for a in (x, w, b, z))

        def run():
            with torch.no_grad():
                torch.addmm(bt, xt, wt, out=zt)

        def result():
            return z

        def poison():
            z[...] = np.nan
    else:
        be = fn.get_backend(backend)
        xb, wb, bb = (be.from_numpy(a) for a in (x, w, b))
        z = be.empty((batch, OUT), F32)

        def run():
            be.dense_forward(xb, wb, bb, z)

        def result():
            return be.to_numpy(z)

        def poison():
            be.fill(z, np.nan)
        run = timed(be, run)

    run()
    close(result(), ref, 1e-5, f"{backend} dense_forward")
    poison()                            # the timed calls must really write z
    benchmark(run)
    close(result(), ref, 1e-5, f"{backend} dense_forward (after timing)")


@pytest.mark.parametrize("backend", CASES)
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"B{b}")
def test_dense_backward(benchmark, batch, backend, describe, close, request):
    x, w, _ = _inputs(batch)
    gen = rng(2)
    grad_z = normal(gen, (batch, OUT))
    grad_w0 = normal(gen, (IN, OUT), 0.1)
    scale = 1.0 / batch
    x64, w64, gz64 = (a.astype(np.float64) for a in (x, w, grad_z))
    ref_gw = grad_w0 + scale * (x64.T @ gz64)
    ref_gx = gz64 @ w64.T
    describe(benchmark, f"dense_backward {batch}x{IN}->{OUT}", backend,
             f"x({batch},{IN}) w({IN},{OUT}) grad_z({batch},{OUT})",
             flops=4 * batch * IN * OUT)

    if backend == "torch":
        torch = request.getfixturevalue("torch_peer")
        grad_w = grad_w0.copy()
        grad_x = np.empty((batch, IN), F32)
        xt, wt, gzt, gwt, gxt = (torch.from_numpy(a)
                                 for a in (x, w, grad_z, grad_w, grad_x))

        def run():
            with torch.no_grad():
                gwt.addmm_(xt.t(), gzt, alpha=scale)
                torch.mm(gzt, wt.t(), out=gxt)

        def results():
            return grad_w.copy(), grad_x.copy()

        def poison():
            grad_x[...] = np.nan
    else:
        be = fn.get_backend(backend)
        xb, wb, gzb, grad_w = (be.from_numpy(a) for a in (x, w, grad_z, grad_w0))
        grad_x = be.empty((batch, IN), F32)

        def run():
            be.dense_backward(xb, wb, gzb, grad_w, grad_x, scale)

        def results():
            return be.to_numpy(grad_w), be.to_numpy(grad_x)

        def poison():
            be.fill(grad_x, np.nan)
        run = timed(be, run)

    run()
    gw, gx = results()
    close(gw, ref_gw, 1e-5, f"{backend} dense_backward grad_w")
    close(gx, ref_gx, 1e-5, f"{backend} dense_backward grad_x")
    poison()
    benchmark(run)
    # grad_w accumulates once per timed call; at least one call happened
    gw_after, gx = results()
    assert not np.array_equal(gw_after, gw), "grad_w was not accumulated"
    assert np.all(np.isfinite(gw_after))
    close(gx, ref_gx, 1e-5, f"{backend} dense_backward grad_x (after timing)")
