"""Kernel and training-step benchmarks: fastnn's ``numpy`` reference backend, its compiled
``cpu`` backend and a PyTorch peer (skipped when torch is not installed), float32.

Every case first checks one call's result against a float64 NumPy reference, so the
suite is a test as well as a timer:

    pytest bench --benchmark-disable -q                 # each case once, as tests
    pytest bench --benchmark-only --benchmark-columns=median,iqr,rounds \\
        --benchmark-sort=name -q                          # the timings

One table per case (``benchmark.group``); ``extra_info`` carries shape, dtype, threads,
flops or bytes, and the floors they imply (see ``conftest.py``).
"""
import numpy as np
import pytest

import fastnn as fn

BACKENDS = ("numpy", "cpu", "torch")
F32 = np.float32


def _rng(seed):
    return np.random.default_rng(seed)


def _normal(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(F32)


# ---------------------------------------------------------------------------------------
# dense forward: z = x @ w + b at batch 128, 784 -> 512
# ---------------------------------------------------------------------------------------
B, IN, OUT = 128, 784, 512
GEMM_FLOPS = 2 * B * IN * OUT


def _dense_inputs():
    rng = _rng(1)
    x = _normal(rng, (B, IN))
    w = _normal(rng, (IN, OUT), 1 / np.sqrt(IN))
    b = _normal(rng, (OUT,))
    return x, w, b


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_forward(benchmark, backend, describe, close, request):
    torch = request.getfixturevalue("torch_peer") if backend == "torch" else None
    x, w, b = _dense_inputs()
    z = np.empty((B, OUT), F32)
    ref = x.astype(np.float64) @ w.astype(np.float64) + b
    describe(benchmark, f"dense_forward {B}x{IN}->{OUT}", backend,
             f"x({B},{IN}) w({IN},{OUT}) b({OUT},)", flops=GEMM_FLOPS)

    if backend == "torch":
        xt, wt, bt, zt = (torch.from_numpy(a) for a in (x, w, b, z))

        def run():
            with torch.no_grad():
                torch.addmm(bt, xt, wt, out=zt)
    else:
        be = fn.get_backend(backend)

        def run():
            be.dense_forward(x, w, b, z)

    run()
    close(z, ref, 1e-5, f"{backend} dense_forward")
    z[...] = np.nan                     # the timed calls must really write z
    benchmark(run)
    close(z, ref, 1e-5, f"{backend} dense_forward (after timing)")


# ---------------------------------------------------------------------------------------
# dense backward: grad_w += scale * x.T @ grad_z ; grad_x = grad_z @ w.T
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_backward(benchmark, backend, describe, close, request):
    torch = request.getfixturevalue("torch_peer") if backend == "torch" else None
    x, w, _ = _dense_inputs()
    rng = _rng(2)
    grad_z = _normal(rng, (B, OUT))
    grad_w0 = _normal(rng, (IN, OUT), 0.1)
    grad_w = grad_w0.copy()
    grad_x = np.empty((B, IN), F32)
    scale = 1.0 / B
    x64, w64, gz64 = (a.astype(np.float64) for a in (x, w, grad_z))
    ref_gw = grad_w0 + scale * (x64.T @ gz64)
    ref_gx = gz64 @ w64.T
    describe(benchmark, f"dense_backward {B}x{IN}->{OUT}", backend,
             f"x({B},{IN}) w({IN},{OUT}) grad_z({B},{OUT})", flops=2 * GEMM_FLOPS)

    if backend == "torch":
        xt, wt, gzt, gwt, gxt = (torch.from_numpy(a)
                                 for a in (x, w, grad_z, grad_w, grad_x))

        def run():
            with torch.no_grad():
                gwt.addmm_(xt.t(), gzt, alpha=scale)
                torch.mm(gzt, wt.t(), out=gxt)
    else:
        be = fn.get_backend(backend)

        def run():
            be.dense_backward(x, w, grad_z, grad_w, grad_x, scale)

    run()
    close(grad_w, ref_gw, 1e-5, f"{backend} dense_backward grad_w")
    close(grad_x, ref_gx, 1e-5, f"{backend} dense_backward grad_x")
    before = grad_w.copy()
    benchmark(run)
    # grad_w accumulated once per timed call; at least one call happened
    assert not np.array_equal(grad_w, before), "grad_w was not accumulated"
    assert np.all(np.isfinite(grad_w))
    close(grad_x, ref_gx, 1e-5, f"{backend} dense_backward grad_x (after timing)")


# ---------------------------------------------------------------------------------------
# sigmoid forward on 1024x512 (bytes: read z + write a)
# ---------------------------------------------------------------------------------------
EW_ROWS, EW_COLS = 1024, 512
EW_BYTES = 2 * 4 * EW_ROWS * EW_COLS


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_forward(benchmark, backend, describe, close, request):
    torch = request.getfixturevalue("torch_peer") if backend == "torch" else None
    z = _normal(_rng(3), (EW_ROWS, EW_COLS), 3.0)
    a = np.empty_like(z)
    ref = 1 / (1 + np.exp(-z.astype(np.float64)))
    describe(benchmark, f"sigmoid_forward {EW_ROWS}x{EW_COLS}", backend,
             f"z({EW_ROWS},{EW_COLS})", nbytes=EW_BYTES)

    if backend == "torch":
        zt, at = torch.from_numpy(z), torch.from_numpy(a)

        def run():
            with torch.no_grad():
                torch.sigmoid(zt, out=at)
    else:
        be = fn.get_backend(backend)

        def run():
            be.activation_forward("sigmoid", z, a)

    run()
    close(a, ref, 2e-6, f"{backend} sigmoid")
    a[...] = np.nan
    benchmark(run)
    close(a, ref, 2e-6, f"{backend} sigmoid (after timing)")


# ---------------------------------------------------------------------------------------
# softmax cross-entropy, value + gradient, 1024x512 logits, integer labels
# ---------------------------------------------------------------------------------------
def _ce_reference(logits, labels):
    z = logits.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    ls = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    rows = np.arange(z.shape[0])
    n = z.shape[0]
    grad = np.exp(ls)
    grad[rows, labels] -= 1
    return float(-ls[rows, labels].sum() / n), grad / n


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_cross_entropy(benchmark, backend, describe, close, request):
    torch = request.getfixturevalue("torch_peer") if backend == "torch" else None
    rng = _rng(4)
    logits = _normal(rng, (EW_ROWS, EW_COLS), 2.0)
    labels = rng.integers(0, EW_COLS, EW_ROWS).astype(np.intp)
    ref_value, ref_grad = _ce_reference(logits, labels)
    describe(benchmark, f"softmax_cross_entropy {EW_ROWS}x{EW_COLS}", backend,
             f"logits({EW_ROWS},{EW_COLS}) labels({EW_ROWS},)", nbytes=EW_BYTES)

    if backend == "torch":
        F = torch.nn.functional
        zt = torch.from_numpy(logits.copy()).requires_grad_()
        yt = torch.from_numpy(labels)

        def run():
            zt.grad = None
            loss = F.cross_entropy(zt, yt)
            loss.backward()
            return loss.item()

        def grad():
            return zt.grad.numpy()
    else:
        be = fn.get_backend(backend)
        g = np.empty_like(logits)
        norm = 1.0 / EW_ROWS

        def run():
            return be.loss("cross_entropy", logits, labels, g, 0.0, norm)

        def grad():
            return g

    value = run()
    assert abs(value - ref_value) <= 1e-5 * abs(ref_value), \
        f"{backend} cross-entropy value {value} != {ref_value}"
    close(grad(), ref_grad, 1e-5, f"{backend} cross-entropy grad")
    value = benchmark(run)
    assert abs(value - ref_value) <= 1e-5 * abs(ref_value)
    close(grad(), ref_grad, 1e-5, f"{backend} cross-entropy grad (after timing)")


# ---------------------------------------------------------------------------------------
# a whole training step: forward, CE loss, backward, SGD step
# ---------------------------------------------------------------------------------------
ARCHS = {
    "784-512-256-10_b128": ((784, 512, 256, 10), 128),
    "64-128-10_b32": ((64, 128, 10), 32),
}
LR = 0.01


def _fastnn_model(sizes, backend, dtype):
    layers = [fn.Dense(i, o, activation="relu") for i, o in zip(sizes[:-2], sizes[1:-1])]
    layers.append(fn.Dense(sizes[-2], sizes[-1]))
    return fn.Sequential(*layers, backend=backend, dtype=dtype, seed=0)


def _step_flops(sizes, batch):
    """GEMM flops of one step: forward, grad_w of every layer, grad_x of all but the
    first (fastnn skips the input's gradient)."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    fwd = sum(2 * batch * i * o for i, o in pairs)
    gx = sum(2 * batch * i * o for i, o in pairs[1:])
    return 2 * fwd + gx


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_train_step(benchmark, arch, backend, describe, close, request):
    torch = request.getfixturevalue("torch_peer") if backend == "torch" else None
    sizes, batch = ARCHS[arch]
    rng = _rng(5)
    xb = _normal(rng, (batch, sizes[0]))
    yb = rng.integers(0, sizes[-1], batch).astype(np.intp)
    describe(benchmark, f"train_step {arch}", backend,
             f"{'-'.join(map(str, sizes))} batch {batch}",
             flops=_step_flops(sizes, batch))

    # float64 reference: one step of the numpy backend from the same seeded weights
    ref = _fastnn_model(sizes, "numpy", np.float64)
    p0 = ref.flat_params.copy()
    ref_opt = fn.SGD(ref, lr=LR)
    ref_loss_fn = fn.CrossEntropyLoss(backend="numpy")
    ref_opt.zero_grad()
    ref_loss = ref_loss_fn.forward(ref.forward(xb.astype(np.float64)), yb)
    ref.backward(ref_loss_fn.backward())
    ref_opt.step()
    ref_delta = ref.flat_params - p0
    init = [w.astype(F32) for w in _fastnn_model(sizes, "numpy", np.float64).get_weights()]

    if backend == "torch":
        nn, F = torch.nn, torch.nn.functional
        mods = []
        for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
            lin = nn.Linear(i, o)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(init[2 * k].T)))
                lin.bias.copy_(torch.from_numpy(init[2 * k + 1]))
            mods.append(lin)
            if k < len(sizes) - 2:
                mods.append(nn.ReLU())
        net = nn.Sequential(*mods)
        opt = torch.optim.SGD(net.parameters(), lr=LR)
        xt, yt = torch.from_numpy(xb), torch.from_numpy(yb)

        def step():
            opt.zero_grad()
            loss = F.cross_entropy(net(xt), yt)
            loss.backward()
            opt.step()
            return loss.item()

        def flat():
            with torch.no_grad():
                return np.concatenate([
                    t.numpy().T.ravel() if t.ndim == 2 else t.numpy().ravel()
                    for t in net.parameters()]).astype(np.float64)
    else:
        model = _fastnn_model(sizes, backend, F32)
        loss_fn = fn.CrossEntropyLoss(backend=backend)
        opt = fn.SGD(model, lr=LR)

        def step():
            opt.zero_grad()
            out = model.forward(xb)
            loss = loss_fn.forward(out, yb)
            model.backward(loss_fn.backward())
            opt.step()
            return loss

        def flat():
            return model.flat_params.astype(np.float64)

    start = flat()
    close(start, p0, 1e-7, f"{backend} initial weights")
    loss = step()
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss), \
        f"{backend} first-step loss {loss} != {ref_loss}"
    close(flat() - start, ref_delta, 2e-3, f"{backend} first SGD update")
    last = benchmark(step)
    assert np.isfinite(last) and np.all(np.isfinite(flat()))
