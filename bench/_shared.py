"""Helpers shared by the benchmark suites (``bench/bench_*.py``): the backends and
peers to time, device synchronisation of timed calls, inputs, the MLP cases (fastnn and
PyTorch built from the same initial weights), float64 references and the memory-floor
("copy") peer.

Nothing here imports torch or cupy: the modules are always passed in by the suites,
which get them from the ``torch_peer`` / ``torch_cuda_peer`` / ``cupy_peer`` fixtures
(so those cases skip cleanly, with the reason, where they are missing).
"""
import numpy as np

import fastnn as fn
from fastnn.backends import unavailable_reasons

F32 = np.float32

SIMULATOR = ("the numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1) runs every GPU thread "
             "in Python, ~100 µs each: its timings mean nothing")


def _backends():
    """(the backends to time, {backend left out: why})."""
    timed_ones, left_out = [], dict(unavailable_reasons())
    for name in fn.available_backends():
        # The simulated cuda backend is usable (the tests run on it) but never timed.
        if getattr(fn.get_backend(name), "simulated", False):
            left_out[name] = SIMULATOR
        else:
            timed_ones.append(name)
    return tuple(timed_ones), left_out


# The backends of this machine ("numpy", "cpu", and "cuda" where a real GPU is usable):
# every suite parametrises over these, so a new backend is picked up without edits.
# LEFT_OUT says why the others are not (the run's header and JSON show it).
BACKENDS, LEFT_OUT = _backends()

# Peers on the GPU, timed only where present (their fixtures skip otherwise):
# PyTorch on its "cuda" device, and CuPy (its GEMMs are cuBLAS calls).
TORCH_DEVICES = {"torch": "cpu", "torch_cuda": "cuda"}    # torch peer -> torch device

# Elementwise cases (activations, losses): one 1024x512 float32 array = 2 MiB.
EW_ROWS, EW_COLS = 1024, 512
EW_SIZE = f"{EW_ROWS}x{EW_COLS}"
EW_ARRAY_BYTES = 4 * EW_ROWS * EW_COLS


def rng(seed):
    return np.random.default_rng(seed)


def normal(gen, shape, scale=1.0):
    return (gen.standard_normal(shape) * scale).astype(F32)


# ---- timing device work ----------------------------------------------------------------
def device_wait(be):
    """What waits until the work ``be`` queued is done (the backend's
    ``synchronize``), or None for a host backend.

    Kernel launches on the cuda backend return before the GPU has run them, so a timed
    call that does not wait at its end would time the launches only (and the next
    round would queue behind the last one).  A host backend (its arrays are NumPy
    arrays) has nothing to wait for: no call is added to its timings."""
    return None if be.is_array(np.empty(0)) else be.synchronize


def synced(run, wait):
    """``run`` followed by ``wait()`` (a device synchronisation: ``device_wait``,
    ``torch.cuda.synchronize``...), so that each timed call ends when its device work
    does; ``run`` itself when ``wait`` is None."""
    if wait is None:
        return run

    def run_synced():
        result = run()
        wait()
        return result
    return run_synced


def timed(be, run):
    """``run`` followed by the backend's synchronisation, when it has one."""
    return synced(run, device_wait(be))


def torch_peer_of(request, peer):
    """(torch, device, wait) of a torch peer case ("torch" or "torch_cuda"): the module
    from its fixture (which skips the case when torch, or a CUDA GPU for torch, is
    missing), the torch device its tensors live on and its ``synced`` wait."""
    device = TORCH_DEVICES[peer]
    torch = request.getfixturevalue(f"{peer}_peer")
    return torch, device, (torch.cuda.synchronize if device == "cuda" else None)


def to_torch(torch, device, *arrays):
    """Tensors on ``device`` holding copies of ``arrays`` (a case may write them)."""
    return tuple(torch.tensor(a, device=device) for a in arrays)


def from_torch(tensor):
    """A NumPy copy of a tensor, wherever it lives."""
    return tensor.detach().cpu().numpy().copy()


def cupy_gemm(cupy):
    """gemm(a, b, c, trans_a=False, trans_b=False, alpha=1.0, beta=0.0): c = alpha
    op(a) op(b) + beta c by one cuBLAS call through CuPy (``fastnn.kernels._blas.gemm``'s
    signature, so the GEMM floors run unchanged on either).  ``cupy.matmul`` has no
    alpha or beta, and accumulating with it would add an elementwise pass."""
    from cupy import cublas

    def gemm(a, b, c, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        cublas.gemm("T" if trans_a else "N", "T" if trans_b else "N", a, b, out=c,
                    alpha=alpha, beta=beta)
    return gemm


# ---- the memory floor ------------------------------------------------------------------
def copy_case(benchmark, describe, group, nbytes, what, **info):
    """The "copy" peer of an elementwise group: ``np.copyto`` between two float32
    buffers whose bytes read + written equal the kernel's (``nbytes``), in the same
    run, so "x the memory floor" = kernel time / this time (the report scales by the
    bytes when they differ).  The copy runs on one thread, like fastnn's elementwise
    kernels; its counted bytes leave out the destination's read-for-ownership, so a
    kernel that reads every array it writes can come out at or below this floor."""
    k = nbytes // 2 // 4
    src = rng(7).standard_normal(k, dtype=F32)
    dst = np.empty_like(src)
    describe(benchmark, group, "copy", f"copy({k},) -> ({k},)", nbytes=2 * 4 * k,
             impl_threads=1, floor_of=what,
             note="np.copyto; bytes counted read + written (no write-allocate)", **info)

    def run():
        np.copyto(dst, src)

    run()
    assert np.array_equal(dst, src)
    dst[...] = np.nan
    benchmark(run)
    assert np.array_equal(dst, src), "copy: destination not written"


# ---- multi-layer perceptrons -----------------------------------------------------------
def arch_name(sizes):
    return "-".join(map(str, sizes))


def parse_arch(name):
    return tuple(int(s) for s in name.split("-"))


def fastnn_model(sizes, backend, dtype, seed=0):
    """relu hidden layers, a linear output layer (the README's MLPs)."""
    layers = [fn.Dense(i, o, activation="relu") for i, o in zip(sizes[:-2], sizes[1:-1])]
    layers.append(fn.Dense(sizes[-2], sizes[-1]))
    return fn.Sequential(*layers, backend=backend, dtype=dtype, seed=seed)


def initial_weights(sizes, seed=0):
    """fastnn's seeded initial weights [w0, b0, w1, ...] (float64, w of shape (in, out)),
    shared by every case so that all start from the same point."""
    return fastnn_model(sizes, "numpy", np.float64, seed).get_weights()


def step_gemms(sizes, batch):
    """The GEMMs of one training step as (name, m, n, k) with c(m, n) = op(a) op(b),
    inner dimension k: each layer's forward, each layer's grad_w, and grad_x of every
    layer but the first (nobody needs the input's gradient)."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    out = [(f"fwd{i}", batch, o, n_in) for i, (n_in, o) in enumerate(pairs)]
    out += [(f"grad_w{i}", n_in, o, batch) for i, (n_in, o) in enumerate(pairs)]
    out += [(f"grad_x{i}", batch, n_in, o) for i, (n_in, o) in enumerate(pairs) if i > 0]
    return out


def step_flops(sizes, batch):
    return sum(2 * m * n * k for _, m, n, k in step_gemms(sizes, batch))


def torch_mlp(torch, sizes, weights):
    """nn.Sequential of Linear/ReLU holding fastnn's ``weights`` (float32)."""
    nn = torch.nn
    mods = []
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(i, o)
        with torch.no_grad():
            w = np.ascontiguousarray(np.asarray(weights[2 * k], F32).T)
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(np.asarray(weights[2 * k + 1], F32)))
        mods.append(lin)
        if k < len(sizes) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def torch_flat(torch, tensors):
    """Parameters (or gradients) of a torch MLP in fastnn's flat layout, float64:
    w0 as (in, out) row-major, b0, w1, ..."""
    with torch.no_grad():
        arrays = [t.detach().cpu().numpy() for t in tensors]    # (on any device)
        return np.concatenate([a.T.ravel() if a.ndim == 2 else a.ravel()
                               for a in arrays]).astype(np.float64)


def reference_gradient(sizes, x, y, scale=1.0):
    """(loss, flat gradient) of the mean cross-entropy at fastnn's initial weights,
    float64, on the numpy reference backend."""
    ref = fastnn_model(sizes, "numpy", np.float64)
    loss_fn = fn.CrossEntropyLoss(backend="numpy")
    ref.zero_grad()
    loss = loss_fn.forward(ref.forward(np.asarray(x, np.float64)), y)
    ref.backward(loss_fn.backward(), scale=scale)
    return loss, ref.flat_grads.copy(), ref.flat_params.copy()


def ce_reference(logits, labels):
    """(mean softmax cross-entropy, its gradient) in float64."""
    z = logits.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    ls = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    rows = np.arange(z.shape[0])
    n = z.shape[0]
    grad = np.exp(ls)
    grad[rows, labels] -= 1
    return float(-ls[rows, labels].sum() / n), grad / n
