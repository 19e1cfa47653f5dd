"""Dense-layer benchmarks: forward ``z = x @ w + b`` and backward ``grad_w += scale *
x^T grad_z; grad_x = grad_z w^T``, 784 -> 512 (the first layer of the README's MLP) at
batch 32 and 128, float32.

Cases, one table (``benchmark.group``) per (kernel, size): every fastnn backend of this
machine (``_shared.BACKENDS``), PyTorch on the CPU (``torch``) and on a CUDA GPU
(``torch_cuda``): ``torch.addmm`` / ``addmm_`` + ``mm`` into preallocated outputs, and
CuPy (``cupy``: ``cupy.matmul`` and a bias add forward; backward two cuBLAS GEMMs,
grad_w accumulated by the GEMM itself, beta = 1).  The peers skip where torch, CuPy or
a GPU is missing.  GPU inputs are uploaded once, before timing, and every timed call
of a GPU case ends with a device synchronisation.  Every case first checks one call
against a float64 NumPy reference; outputs are NaN-poisoned before the timed calls.
``extra_info["flops"]`` gives GFLOP/s.

    pytest bench/bench_dense.py --benchmark-disable -q       # each case once, as tests
    pytest bench/bench_dense.py --benchmark-only -q          # the timings
"""
import numpy as np
import pytest

import fastnn as fn
from _shared import (BACKENDS, F32, TORCH_DEVICES, cupy_gemm, from_torch, normal, rng,
                     synced, timed, to_torch, torch_peer_of)

CASES = BACKENDS + tuple(TORCH_DEVICES) + ("cupy",)
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

    if backend in TORCH_DEVICES:
        torch, device, wait = torch_peer_of(request, backend)
        xt, wt, bt = to_torch(torch, device, x, w, b)
        zt = torch.empty((batch, OUT), dtype=torch.float32, device=device)

        def run():
            with torch.no_grad():
                torch.addmm(bt, xt, wt, out=zt)

        def result():
            return from_torch(zt)

        def poison():
            zt.fill_(float("nan"))
        run = synced(run, wait)
    elif backend == "cupy":
        cp = request.getfixturevalue("cupy_peer")
        xc, wc, bc = (cp.asarray(a) for a in (x, w, b))
        zc = cp.empty((batch, OUT), F32)

        def run():
            cp.matmul(xc, wc, out=zc)
            cp.add(zc, bc, out=zc)     # (an augmented assignment would make zc local)

        def result():
            return cp.asnumpy(zc)

        def poison():
            zc.fill(np.nan)
        run = synced(run, cp.cuda.Device().synchronize)
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

    if backend in TORCH_DEVICES:
        torch, device, wait = torch_peer_of(request, backend)
        xt, wt, gzt, gwt = to_torch(torch, device, x, w, grad_z, grad_w0)
        gxt = torch.empty((batch, IN), dtype=torch.float32, device=device)

        def run():
            with torch.no_grad():
                gwt.addmm_(xt.t(), gzt, alpha=scale)
                torch.mm(gzt, wt.t(), out=gxt)

        def results():
            return from_torch(gwt), from_torch(gxt)

        def poison():
            gxt.fill_(float("nan"))
        run = synced(run, wait)
    elif backend == "cupy":
        cp = request.getfixturevalue("cupy_peer")
        gemm = cupy_gemm(cp)
        xc, wc, gzc, gwc = (cp.asarray(a) for a in (x, w, grad_z, grad_w0))
        gxc = cp.empty((batch, IN), F32)

        def run():
            gemm(xc, gzc, gwc, trans_a=True, alpha=scale, beta=1.0)
            gemm(gzc, wc, gxc, trans_b=True)

        def results():
            return cp.asnumpy(gwc), cp.asnumpy(gxc)

        def poison():
            gxc.fill(np.nan)
        run = synced(run, cp.cuda.Device().synchronize)
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
