"""Optimizer-step benchmarks: one ``opt.step()`` over ~1M and ~10M float32 parameters.

Cases, one table (``benchmark.group``) per (optimizer, size):

- ``numpy``          fastnn's multi-pass NumPy reference backend
- ``cpu``            fastnn's compiled backend: one fused numba kernel over the flat
                     buffers (serial by default, see ``fastnn/threads.py``)
- ``cuda``           fastnn's GPU backend, where a real GPU is usable: one fused kernel
                     over the flat device buffers (the parameters and gradients are
                     uploaded once, before timing; each timed step ends with a device
                     synchronisation)
- ``torch_foreach``  ``torch.optim.SGD/Adam(..., foreach=True)`` (torch's intra-op pool
                     sized to ``fastnn.get_num_threads()``; skipped without torch)
- ``torch_fused``    ``torch.optim.Adam(..., fused=True)`` (Adam only)
- ``copy``           the memory floor: ``np.copyto`` between two float32 buffers whose
                     total footprint equals the optimizer's working set (Adam: 4 arrays
                     of N -> copy 2N into 2N; SGD with momentum: 3 -> 1.5N into 1.5N)

Optimizers: ``SGD(lr=0.01, momentum=0.9)`` and ``Adam(lr=1e-3)`` (PyTorch's defaults
otherwise).  Sizes: ``Dense(999, 1000)`` = 1,000,000 parameters (Adam's working set,
16 MB, fits the 32 MiB L3) and ``Dense(9999, 1000)`` = 10,000,000 (160 MB: main memory).

``extra_info`` carries ``params``, ``dtype``, ``threads`` (fastnn's count),
``impl_threads`` (threads the case itself uses), ``bytes`` moved per step counted as
read + written (Adam: read p, g, m, v, write p, m, v = 28 B/param; SGD with momentum:
read p, g, b, write p, b = 20 B/param; copy: 2 x its buffer) and ``footprint_bytes``.
The floor of a step is ``bytes / (copy bytes / copy time)`` from the same run.  A copy's
counted bytes understate its real traffic (the destination's lines are read before they
are written: write-allocate, unless the copy streams with non-temporal stores), while an
optimizer reads every array it writes anyway, so a step can beat that "floor".

Checked results: before timing, every case takes two steps (the first-step branch and
the general one) from the same initial parameters and gradients, and the update
``p - p0`` and the state buffers must match a float64 NumPy reference of PyTorch's
update rule (computed chunk by chunk here, independently of fastnn) to 1e-4 / 1e-5 of
their largest value: the numpy, cpu and torch cases thus agree with one another.  After
timing, the parameters must have moved and be finite.

    pytest bench/bench_optim.py --benchmark-disable -q      # each case once, as tests
    pytest bench/bench_optim.py --benchmark-only --benchmark-min-rounds=10 \\
        --benchmark-columns=median,iqr,rounds -q             # the timings

Memory: at most one model (or torch parameter set) lives at a time; each test's buffers
are dropped by the per-test ``arena`` fixture.  The 10M Adam cases peak at a few hundred
MB (numpy backend: 4 buffers of 40 MB, the initial-parameter copy and NumPy's
temporaries).
"""
import gc
import math

import numpy as np
import pytest

import fastnn as fn
from fastnn import threads as fn_threads

from _shared import BACKENDS, copy_case, timed

F32 = np.float32
SIZES = {"1M": (999, 1000), "10M": (9999, 1000)}          # Dense(n_in, n_out)
OPTIMIZERS = {
    # name: (fastnn constructor kwargs, state buffer names (PyTorch's), bytes/param
    #        read + written per step, arrays of N in the working set)
    "sgd_momentum": ({"lr": 0.01, "momentum": 0.9}, ("momentum_buffer",), 20, 3),
    "adam": ({"lr": 1e-3}, ("exp_avg", "exp_avg_sq"), 28, 4),
}
CASES = {"sgd_momentum": BACKENDS + ("torch_foreach", "copy"),
         "adam": BACKENDS + ("torch_foreach", "torch_fused", "copy")}
CHECK_STEPS = 2          # step 1 (buffers start from the gradient) and a general step
P_SCALE = 0.05           # initial parameters ~ N(0, 0.05^2), gradients ~ N(0, 1)
CHUNK = 1 << 20          # the float64 reference runs over chunks of this many elements


def _params(size):
    n_in, n_out = SIZES[size]
    return n_in * n_out + n_out


def _initial(size, out_g=None):
    """(p0, g): the initial parameters and the gradients, the same for every case of a
    size; ``g`` is written into ``out_g`` when given (saves a copy)."""
    n = _params(size)
    rng = np.random.default_rng(1000 + n % 997)
    p0 = rng.standard_normal(n, dtype=F32)
    p0 *= F32(P_SCALE)
    g = np.empty(n, F32) if out_g is None else out_g
    rng.standard_normal(dtype=F32, out=g)
    assert np.all(g != 0), "gradients must be non-zero"
    return p0, g


# ---- float64 reference of PyTorch's update rules, one chunk at a time -----------------
def _reference(opt, p, g, steps):
    """{'p': ..., state name: ...} after ``steps`` steps from zero state, float64."""
    p = p.astype(np.float64)
    g = g.astype(np.float64)
    hp = OPTIMIZERS[opt][0]
    if opt == "sgd_momentum":
        lr, mu = hp["lr"], hp["momentum"]
        b = None
        for _ in range(steps):
            b = g.copy() if b is None else mu * b + g
            p = p - lr * b
        return {"p": p, "momentum_buffer": b}
    lr, (b1, b2), eps = hp["lr"], (0.9, 0.999), 1e-8
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t in range(1, steps + 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1 ** t) * m / (np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps)
    return {"p": p, "exp_avg": m, "exp_avg_sq": v}


def _check(opt, what, p0, g, segments):
    """Compare a case's buffers after CHECK_STEPS steps with the reference.
    ``segments``: {'p' or state name: [(offset, flat float32 array), ...]} covering the
    parameter vector.  Tolerances are scale-aware: the update p - p0 within 1e-4 of its
    largest value (p itself then agrees to ~1e-6 relative), states within 1e-5."""
    rel = {"p": 1e-4}
    err = {k: 0.0 for k in segments}
    scale = {k: 0.0 for k in segments}
    for key, segs in segments.items():
        for off, arr in segs:
            assert arr.dtype == F32 and arr.ndim == 1
            for lo in range(0, arr.size, CHUNK):
                hi = min(lo + CHUNK, arr.size)
                a, b = off + lo, off + hi
                ref = _reference(opt, p0[a:b], g[a:b], CHECK_STEPS)[key]
                got = arr[lo:hi].astype(np.float64)
                assert np.all(np.isfinite(got)), f"{what}: non-finite {key}"
                if key == "p":                   # compare the update, not p itself
                    ref = ref - p0[a:b]
                    got = got - p0[a:b]
                err[key] = max(err[key], float(np.max(np.abs(got - ref))))
                scale[key] = max(scale[key], float(np.max(np.abs(ref))))
    for key in segments:
        tol = rel.get(key, 1e-5) * scale[key]
        assert scale[key] > 0, f"{what}: reference {key} is all zero"
        assert err[key] <= tol, (f"{what}: {key} after {CHECK_STEPS} steps: max error "
                                 f"{err[key]:.3g} > {tol:.3g}")


# ---- fixtures --------------------------------------------------------------------------
@pytest.fixture
def arena():
    """Holds one test's big buffers; dropped (and collected) when the test ends, so at
    most one model's worth of memory is alive at a time."""
    held = {}
    yield held
    held.clear()
    gc.collect()


def _sample(arr):
    return arr[::4099].copy()


def _host_view(be, buf):
    """``buf`` readable by NumPy: itself on a host backend (no copy of 40 MB buffers),
    a download from a device."""
    return buf if isinstance(buf, np.ndarray) else be.to_numpy(buf)


# ---- the cases -------------------------------------------------------------------------
def _fastnn_case(arena, opt, size, backend):
    n_in, n_out = SIZES[size]
    be = fn.get_backend(backend)
    model = fn.Sequential(fn.Dense(n_in, n_out), backend=backend, dtype=F32, seed=0)
    assert model.num_parameters == _params(size)
    on_host = isinstance(model.flat_grads, np.ndarray)
    p0, g = _initial(size, out_g=model.flat_grads if on_host else None)
    be.from_numpy(p0, out=model.flat_params)
    if not on_host:
        be.from_numpy(g, out=model.flat_grads)      # uploaded once, before timing
    kwargs, names = OPTIMIZERS[opt][:2]
    optimizer = (fn.SGD if opt == "sgd_momentum" else fn.Adam)(model, **kwargs)
    assert tuple(optimizer.state) == names, tuple(optimizer.state)
    arena.update(model=model, opt=optimizer)

    def segments():
        state = optimizer.state
        out = {"p": [(0, _host_view(be, model.flat_params))]}
        out.update({k: [(0, _host_view(be, state[k]))] for k in names})
        return out

    return (timed(be, optimizer.step), p0, g, segments,
            lambda: _host_view(be, model.flat_params))


def _torch_case(arena, torch, opt, size, impl):
    """Two Parameters (weight, bias), views of one flat buffer like fastnn's."""
    n_in, n_out = SIZES[size]
    nw = n_in * n_out
    p0, g = _initial(size)
    flat = p0.copy()
    tp, tg = torch.from_numpy(flat), torch.from_numpy(g)
    w = torch.nn.Parameter(tp[:nw].view(n_in, n_out))
    b = torch.nn.Parameter(tp[nw:])
    w.grad, b.grad = tg[:nw].view(n_in, n_out), tg[nw:]
    assert w.data_ptr() == tp.data_ptr()
    kwargs, names = OPTIMIZERS[opt][:2]
    flag = {"torch_foreach": {"foreach": True}, "torch_fused": {"fused": True}}[impl]
    cls = torch.optim.SGD if opt == "sgd_momentum" else torch.optim.Adam
    optimizer = cls([w, b], **kwargs, **flag)
    arena.update(params=(w, b), opt=optimizer)

    def segments():
        out = {"p": [(0, flat)]}
        for k in names:
            out[k] = [(0, optimizer.state[w][k].detach().numpy().reshape(-1)),
                      (nw, optimizer.state[b][k].detach().numpy().reshape(-1))]
        return out

    return optimizer.step, p0, g, segments, lambda: flat


@pytest.mark.parametrize("opt,size,impl", [
    (opt, size, impl) for opt in OPTIMIZERS for size in SIZES for impl in CASES[opt]])
def test_optimizer_step(benchmark, opt, size, impl, describe, nthreads, arena, request):
    n = _params(size)
    _, names, bpp, arrays = OPTIMIZERS[opt]
    footprint = arrays * 4 * n
    group = f"optim_step {opt} {size} float32 ({bpp} B/param)"
    shape = f"flat({n},)"

    if impl == "copy":
        return copy_case(benchmark, describe, group, footprint, f"{opt} step", params=n,
                         footprint_bytes=footprint)

    if impl.startswith("torch"):
        torch = request.getfixturevalue("torch_peer")
        step, p0, g, segments, params = _torch_case(arena, torch, opt, size, impl)
        impl_threads = torch.get_num_threads()
    else:
        step, p0, g, segments, params = _fastnn_case(arena, opt, size, impl)
        # numba kernels are serial unless FASTNN_PARALLEL_MIN turns them on
        impl_threads = nthreads if impl == "cpu" and fn_threads.use_parallel(n) else 1
    describe(benchmark, group, impl, shape, nbytes=bpp * n, params=n,
             bytes_per_param=bpp, footprint_bytes=footprint, impl_threads=impl_threads,
             state=list(names))

    for _ in range(CHECK_STEPS):
        step()
    _check(opt, f"{impl} {opt} {size}", p0, g, segments())
    del p0, g                                         # only the check needed them
    before = _sample(params())
    benchmark(step)
    after = _sample(params())
    assert np.all(np.isfinite(after)) and np.all(np.isfinite(params())), \
        f"{impl}: non-finite parameters after timing"
    assert not np.array_equal(after, before), f"{impl}: parameters did not move"
