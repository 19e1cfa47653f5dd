"""Helpers shared by the benchmark suites (``bench/bench_*.py``): inputs, the MLP cases
(fastnn and PyTorch built from the same initial weights), float64 references and the
memory-floor ("copy") peer.

Nothing here imports torch: the torch module is always passed in by the suites, which
get it from the ``torch_peer`` fixture (so the torch cases skip cleanly without it).
"""
import numpy as np

import fastnn as fn

F32 = np.float32

# The backends of this machine ("numpy", "cpu", and "cuda" where it exists): every
# suite parametrises over these, so a new backend is picked up without edits.
BACKENDS = fn.available_backends()

# Elementwise cases (activations, losses): one 1024x512 float32 array = 2 MiB.
EW_ROWS, EW_COLS = 1024, 512
EW_SIZE = f"{EW_ROWS}x{EW_COLS}"
EW_ARRAY_BYTES = 4 * EW_ROWS * EW_COLS


def rng(seed):
    return np.random.default_rng(seed)


def normal(gen, shape, scale=1.0):
    return (gen.standard_normal(shape) * scale).astype(F32)


def timed(be, run):
    """``run`` followed by the backend's synchronisation, when it has one."""
    wait = getattr(be, "synchronize", None)
    if wait is None:
        return run

    def run_synced():
        result = run()
        wait()
        return result
    return run_synced


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
        return np.concatenate([
            t.numpy().T.ravel() if t.ndim == 2 else t.numpy().ravel()
            for t in tensors]).astype(np.float64)


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
