"""Activation benchmarks on 1024x512 float32: forward ``a = f(z)`` and backward
(``activation_backward``: ``grad_z = grad_a * f'(z, a)`` and ``grad_b += scale *
column sums of grad_z``, one pass) for relu, sigmoid, tanh and gelu (erf form).

Cases, one table (``benchmark.group``) per (direction, activation):

- every fastnn backend of this machine (``_shared.BACKENDS``);
- ``torch`` (CPU) and ``torch_cuda`` (a CUDA GPU): ``clamp_min`` / ``sigmoid`` /
  ``tanh`` / ``aten.gelu.out`` forward, and the ``aten.*_backward.grad_input`` kernels
  autograd runs (threshold_backward for relu) followed by the bias-gradient sum added
  into ``grad_b``, into preallocated outputs (skipped without torch, or a GPU);
- ``copy``: the memory floor, ``np.copyto`` moving the same bytes as the kernel.

Bytes per case (``extra_info["bytes"]``, read + written), from what the compiled kernels
really touch (``kernels/cpu.py``, ``kernels/formulas.py``): forward reads z and writes
a (2 arrays of 2 MiB).  Backward reads ``grad_a`` and the one saved array its f' uses,
writes ``grad_z`` (3 arrays) and reads + writes ``grad_b`` (2 x 2 KiB): relu and gelu
read z, sigmoid and tanh read a (f' = a(1 - a), 1 - a^2); the kernel loads both but
the unused one is dead code after inlining.

Every case first checks one call against a float64 NumPy reference; outputs are
NaN-poisoned before the timed calls.  GPU inputs are uploaded once, before timing, and
every timed call of a GPU case ends with a device synchronisation.
"""
import numpy as np
import pytest
from scipy.special import erf

import fastnn as fn
from _shared import (BACKENDS, EW_ARRAY_BYTES, EW_COLS, EW_ROWS, EW_SIZE, F32,
                     TORCH_DEVICES, copy_case, from_torch, normal, rng, synced, timed,
                     to_torch, torch_peer_of)

CASES = BACKENDS + tuple(TORCH_DEVICES) + ("copy",)
NAMES = ("relu", "sigmoid", "tanh", "gelu")
SAVED = {"relu": "z", "sigmoid": "a", "tanh": "a", "gelu": "z"}   # what f' reads
FWD_BYTES = 2 * EW_ARRAY_BYTES
BWD_BYTES = 3 * EW_ARRAY_BYTES + 2 * 4 * EW_COLS
SQRT2 = np.sqrt(2.0)


def _f64(name, z):
    if name == "relu":
        return np.maximum(z, 0)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    return 0.5 * z * (1 + erf(z / SQRT2))


def _df64(name, z, a):
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "sigmoid":
        return a * (1 - a)
    if name == "tanh":
        return 1 - a * a
    return 0.5 * (1 + erf(z / SQRT2)) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


def _inputs(seed):
    return normal(rng(seed), (EW_ROWS, EW_COLS), 3.0)


@pytest.mark.parametrize("backend", CASES)
@pytest.mark.parametrize("name", NAMES)
def test_activation_forward(benchmark, name, backend, describe, close, request):
    group = f"activation_forward {name} {EW_SIZE}"
    if backend == "copy":
        return copy_case(benchmark, describe, group, FWD_BYTES, f"{name} forward")
    z = _inputs(3)
    ref = _f64(name, z.astype(np.float64))
    describe(benchmark, group, backend, f"z({EW_ROWS},{EW_COLS})", nbytes=FWD_BYTES)

    if backend in TORCH_DEVICES:
        torch, device, wait = torch_peer_of(request, backend)
        (zt,) = to_torch(torch, device, z)
        at = torch.empty_like(zt)
        op = {"relu": lambda: torch.clamp_min(zt, 0, out=at),
              "sigmoid": lambda: torch.sigmoid(zt, out=at),
              "tanh": lambda: torch.tanh(zt, out=at),
              "gelu": lambda: torch.ops.aten.gelu.out(zt, approximate="none", out=at)}[name]

        def run():
            with torch.no_grad():
                op()

        def result():
            return from_torch(at)

        def poison():
            at.fill_(float("nan"))
        run = synced(run, wait)
    else:
        be = fn.get_backend(backend)
        zb = be.from_numpy(z)
        a = be.empty(z.shape, F32)

        def run():
            be.activation_forward(name, zb, a)

        def result():
            return be.to_numpy(a)

        def poison():
            be.fill(a, np.nan)
        run = timed(be, run)

    run()
    close(result(), ref, 2e-6, f"{backend} {name} forward")
    poison()
    benchmark(run)
    close(result(), ref, 2e-6, f"{backend} {name} forward (after timing)")


@pytest.mark.parametrize("backend", CASES)
@pytest.mark.parametrize("name", NAMES)
def test_activation_backward(benchmark, name, backend, describe, close, request):
    group = f"activation_backward {name} {EW_SIZE}"
    if backend == "copy":
        return copy_case(benchmark, describe, group, BWD_BYTES, f"{name} backward")
    gen = rng(4)
    z = _inputs(3)
    z64 = z.astype(np.float64)
    a = _f64(name, z64).astype(F32)              # the forward's saved output
    grad_a = normal(gen, z.shape)
    grad_b0 = normal(gen, (EW_COLS,), 0.1)
    scale = 0.25
    ref_gz = grad_a * _df64(name, z64, a.astype(np.float64))
    ref_gb = grad_b0 + scale * ref_gz.sum(axis=0)
    describe(benchmark, group, backend,
             f"z, a, grad_a ({EW_ROWS},{EW_COLS}) grad_b({EW_COLS},)", nbytes=BWD_BYTES,
             reads=[SAVED[name], "grad_a", "grad_b"], writes=["grad_z", "grad_b"])

    if backend in TORCH_DEVICES:
        torch, device, wait = torch_peer_of(request, backend)
        aten = torch.ops.aten
        zt, at, gat, gbt = to_torch(torch, device, z, a, grad_a, grad_b0)
        gzt, cst = torch.empty_like(zt), torch.empty_like(gbt)
        op = {"relu": lambda: aten.threshold_backward.grad_input(gat, zt, 0,
                                                                 grad_input=gzt),
              "sigmoid": lambda: aten.sigmoid_backward.grad_input(gat, at, grad_input=gzt),
              "tanh": lambda: aten.tanh_backward.grad_input(gat, at, grad_input=gzt),
              "gelu": lambda: aten.gelu_backward.grad_input(gat, zt, approximate="none",
                                                            grad_input=gzt)}[name]

        def run():
            with torch.no_grad():
                op()
                torch.sum(gzt, 0, out=cst)
                gbt.add_(cst, alpha=scale)

        def results():
            return from_torch(gzt), from_torch(gbt)

        def poison():
            gzt.fill_(float("nan"))
        run = synced(run, wait)
    else:
        be = fn.get_backend(backend)
        zb, ab, gab, grad_b = (be.from_numpy(v) for v in (z, a, grad_a, grad_b0))
        grad_z = be.empty(z.shape, F32)

        def run():
            be.activation_backward(name, zb, ab, gab, grad_z, grad_b, scale)

        def results():
            return be.to_numpy(grad_z), be.to_numpy(grad_b)

        def poison():
            be.fill(grad_z, np.nan)
        run = timed(be, run)

    run()
    gz, gb = results()
    close(gz, ref_gz, 2e-6, f"{backend} {name} backward grad_z")
    close(gb, ref_gb, 1e-5, f"{backend} {name} backward grad_b")
    poison()
    benchmark(run)
    gz, gb_after = results()
    close(gz, ref_gz, 2e-6, f"{backend} {name} backward grad_z (after timing)")
    assert np.all(np.isfinite(gb_after)) and not np.array_equal(gb_after, gb), \
        f"{backend} {name}: grad_b was not accumulated"
