"""What is particular to the cuda backend: its GEMM tilings, the fused whole-model
passes, the launch budget of a training step, device residency (no per-step sync in
fit, device inputs used in place), its errors, and that every kernel compiles for a
real GPU.  (Its kernels are also in test_kernels.py and the model-level suites,
parametrised with the other backends.)  Without a GPU these run under the Numba CUDA
simulator, at tiny sizes."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fn
from kernel_cases import BACKENDS, CUDA_SIMULATED, close, poisoned, rand

pytestmark = pytest.mark.skipif(
    "cuda" not in BACKENDS,
    reason="cuda backend unusable here: "
           f"{fn.backends.unavailable_reasons().get('cuda', '')}")

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def cu():
    return fn.get_backend("cuda")


# -- GEMM -----------------------------------------------------------------------------
def _tilings():
    from fastnn.kernels import cuda as K

    return list(K.TILINGS)


@pytest.mark.parametrize("tiling", _tilings())
def test_every_tiling(tiling, cu, rng, monkeypatch):
    """Each tiling (the simulator otherwise only runs its own) on a case with partial
    tiles, K not a multiple of the K step, and the bias-gradient row: forward with
    bias + activation, [dW; db] += s [X, 1]^T dZ, and dZ W^T * f'."""
    from fastnn.kernels import cuda as K

    monkeypatch.setattr(K, "pick_tiling", lambda m, n, sms: tiling)
    dtype = np.float64
    batch, fin, fout = (5, 11, 7) if CUDA_SIMULATED else (301, 133, 259)
    x, w, b = (rand(rng, s, dtype) for s in ((batch, fin), (fin, fout), (fout,)))
    gz, zb = rand(rng, (batch, fout), dtype), rand(rng, (batch, fin), dtype)
    wb0 = rand(rng, (fin + 1, fout), dtype)
    d = {k: cu.from_numpy(v) for k, v in dict(x=x, w=w, b=b, gz=gz, zb=zb, wb=wb0).items()}
    z, a, gx = (cu.from_numpy(poisoned(s, dtype)) for s in
                ((batch, fout), (batch, fout), (batch, fin)))
    ab = cu.from_numpy(np.tanh(zb))

    cu._gemm("forward", "tanh", d["x"], d["w"], 1, K.GemmForward(a, z, d["b"]))
    close(cu.to_numpy(z), x @ w + b, dtype, fin)
    close(cu.to_numpy(a), np.tanh(x @ w + b), dtype, fin)
    cu._gemm("accumulate", "linear", d["x"], d["gz"], 0.5, K.GemmAccumulate(d["wb"]))
    xa = np.hstack([x, np.ones((batch, 1))])
    close(cu.to_numpy(d["wb"]), wb0 + 0.5 * xa.T @ gz, dtype, batch)
    cu._gemm("delta", "tanh", d["gz"], d["w"], 1, K.GemmDelta(gx, d["zb"], ab))
    close(cu.to_numpy(gx), (gz @ w.T) * (1 - np.tanh(zb) ** 2), dtype, fout)


# -- whole-model passes ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", list(fn.ACTIVATIONS))
def test_model_passes_match_numpy(act, dtype, rng):
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


# -- launch budget and device residency ----------------------------------------------
def _net(backend="cuda", out_act=None):
    return fn.Sequential(fn.Dense(6, 5, activation="tanh"),
                         fn.Dense(5, 4, activation="relu"),
                         fn.Dense(4, 3, activation=out_act),
                         backend=backend, dtype=np.float32, seed=0)


@pytest.mark.parametrize("out_act, loss", [(None, "cross_entropy"),
                                           ("sigmoid", "bce_with_logits")])
def test_launches_per_training_step(out_act, loss, rng):
    """zero_grad + forward + loss + backward + step, 3 layers: at most 3 per layer +
    3 launches (a linear output layer needs one less: no f' pass)."""
    model = _net(out_act=out_act)
    cu = model.backend
    loss_fn = fn.get_loss(loss, backend="cuda")
    opt = fn.Adam(model, lr=1e-3)
    x = rand(rng, (5, 6), np.float32)
    y = rng.integers(0, 3, 5) if loss == "cross_entropy" else \
        rng.uniform(0, 1, (5, 3)).astype(np.float32)

    def step():
        opt.zero_grad()
        loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward())
        opt.step()

    step()                                          # workspaces and buffers exist now
    before = cu.launches
    step()
    layers = len(model.layers)
    assert cu.launches - before == 3 * layers + (3 if out_act else 2)


def test_fit_launches_and_reads_the_device_once_per_epoch(rng, monkeypatch):
    """In fit, a shuffled step (gather included, accuracy counted inside the loss
    kernel) stays within 3 per layer + 3 launches, and the host reads the device once
    per epoch (the loss and accuracy sums), not once per step."""
    model = _net()
    cu = model.backend
    X, y = rand(rng, (12, 6), np.float64), rng.integers(0, 3, 12)
    opt = fn.SGD(model, lr=0.1)
    reads = []
    real = cu.to_numpy
    monkeypatch.setattr(cu, "to_numpy", lambda a: reads.append(a.shape) or real(a))
    before = cu.launches
    hist = model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=2, batch_size=4,
                     progress=False)
    steps = 2 * 3
    assert (cu.launches - before) / steps <= 3 * len(model.layers) + 3
    assert reads == [(2,), (2,)]
    assert len(hist.loss) == 2 and np.isfinite(hist.loss).all()


@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_without_room_for_the_data_goes_batch_by_batch(shuffle, rng, monkeypatch):
    """A data set that does not fit in GPU memory stays on the host and goes up one
    batch at a time: the same training, bit for bit, as with the data on the GPU."""
    X, y = rand(rng, (11, 6), np.float64), rng.integers(0, 3, 11)
    Xv, yv = rand(rng, (4, 6), np.float64), rng.integers(0, 3, 4)
    runs = []
    for room in (True, False):
        model = _net()
        if not room:
            monkeypatch.setattr(model.backend, "_free_memory", lambda: 0)
            assert all(isinstance(a, np.ndarray) for a in model.backend.dataset(X, y))
        hist = model.fit(X, y, loss="cross_entropy", optimizer=fn.Adam(model, lr=0.01),
                         epochs=2, batch_size=4, micro_batch_size=3, shuffle=shuffle,
                         seed=5, validation_data=(Xv, yv), progress=False)
        runs.append((model.to_numpy(model.flat_params), hist.history))
        monkeypatch.undo()
    (p_dev, h_dev), (p_host, h_host) = runs
    np.testing.assert_array_equal(p_host, p_dev)
    assert h_host == h_dev


def test_device_inputs_are_used_in_place(rng):
    """A device array x (or grad) goes in without a copy and gives what the same
    values as a NumPy array give; wrong dtypes and shapes fail naming the argument."""
    model = _net()
    cu = model.backend
    x = rand(rng, (5, 6), np.float32)
    out_host = model.to_numpy(model.forward(x))
    xd = cu.from_numpy(x)
    np.testing.assert_array_equal(model.to_numpy(model.forward(xd)), out_host)
    with pytest.raises(TypeError, match="x must have dtype float32"):
        model.forward(cu.from_numpy(x.astype(np.float64)))
    with pytest.raises(ValueError, match="x must have 6 columns"):
        model.forward(cu.from_numpy(x[:, :4].copy()))
    with pytest.raises(TypeError, match="x must be a numpy.ndarray"):
        _net("cpu").forward(xd)


def test_reductions_are_the_same_on_every_run(cu, rng):
    """Loss values and gradient norms combine the blocks' totals in block order (the
    last block to finish does it), not in the order atomics land: repeated runs agree
    to the bit, and every launch finds the blocks-done counter reset."""
    n = 33 if CUDA_SIMULATED else 3_000_001           # several blocks either way
    x = cu.from_numpy(rand(rng, n, np.float32))
    norms = {order: {cu.vector_norm(x, order) for _ in range(3)}
             for order in (2.0, 3.5, np.inf)}
    assert all(len(v) == 1 for v in norms.values()), norms
    out = rand(rng, (n // 3, 3), np.float32)
    t = rand(rng, (n // 3, 3), np.float32)
    grad = cu.from_numpy(poisoned(out.shape, np.float32))
    o, td = cu.from_numpy(out), cu.from_numpy(t)
    values = {cu.loss("huber", o, td, grad, 0.7, 1.0 / out.size) for _ in range(3)}
    assert len(values) == 1
    want = np.where(np.abs(out - t) < 0.7, 0.5 * (out - t) ** 2,
                    0.7 * (np.abs(out.astype(np.float64) - t) - 0.35)).mean()
    assert values.pop() == pytest.approx(want, rel=1e-5)


# -- availability ---------------------------------------------------------------------
def test_missing_package_is_named(monkeypatch):
    from fastnn.backends import cuda_backend

    monkeypatch.setattr(cuda_backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(cuda_backend.CudaUnavailable, match=r"numba-cuda.*fastnn\[cuda\]"):
        cuda_backend._load_cuda()


def test_no_gpu_says_why(monkeypatch):
    import numba
    from numba import cuda

    from fastnn.backends import cuda_backend

    def no_driver():
        raise RuntimeError("CUDA driver library cannot be found")

    monkeypatch.setattr(numba.config, "ENABLE_CUDASIM", 0)
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    monkeypatch.setattr(cuda, "current_context", no_driver)
    with pytest.raises(cuda_backend.CudaUnavailable,
                       match="no usable CUDA GPU: CUDA driver library cannot be found"):
        cuda_backend._load_cuda()


def test_kernels_compile_for_a_real_gpu():
    """Every kernel through NVVM to PTX for sm_90, outside the simulator (which
    accepts code CUDA rejects: e.g. a shared-array shape that is not a constant)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([HERE, env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, os.path.join(HERE, "cuda_ptx.py")], env=env,
                         capture_output=True, text=True, timeout=900)
    if run.returncode == 3:
        pytest.skip(run.stdout.strip() or "NVVM not installed")
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
