"""What is particular to the cuda backend: the launch budget of a training step,
device residency (no per-step sync in fit, device inputs used in place), and its
errors.  (Its kernels: tests/kernels/test_cuda_kernels.py; its whole-model passes:
test_model_passes.py.)  Without a GPU these run under the Numba CUDA simulator, at tiny
sizes."""
import numpy as np
import pytest

import fastnn as fn
from kernel_cases import BACKENDS, rand, simulator_sweep

pytestmark = pytest.mark.skipif(
    "cuda" not in BACKENDS,
    reason="cuda backend unusable here: "
           f"{fn.backends.unavailable_reasons().get('cuda', '')}")


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


@pytest.mark.parametrize("shuffle", simulator_sweep([True, False], keep=[True]))
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


# -- no hidden host waits ---------------------------------------------------------------
def test_host_batches_go_up_through_one_pinned_buffer(rng, monkeypatch):
    """A host batch is copied into a pinned buffer kept per (owner, key) and sent
    asynchronously on the backend's stream: one pinned allocation for many batches of
    a shape, and each batch's values arrive."""
    cu = fn.get_backend("cuda")
    made, sent = [], []
    real_pinned = cu.cuda.pinned_array
    monkeypatch.setattr(cu.cuda, "pinned_array",
                        lambda *a, **k: made.append(a) or real_pinned(*a, **k))
    device = type(cu.empty((1,), np.float32))
    real_copy = device.copy_to_device
    monkeypatch.setattr(device, "copy_to_device", lambda self, a, stream=0:
                        sent.append(stream) or real_copy(self, a, stream=stream))
    owner = type("Owner", (), {})()
    for _ in range(3):
        x = rand(rng, (5, 3), np.float32)
        buf = cu.stage(x, owner, "x")
        np.testing.assert_array_equal(cu.to_numpy(buf), x)
    assert len(made) == 1
    assert sent == [cu.stream] * 3


def test_a_cuda_array_interface_input_is_ordered_without_a_host_wait(monkeypatch):
    """A CuPy / torch input is adopted with as_cuda_array(sync=False): the host does
    not wait for the producer's stream.  A stream the interface names other than
    the default ones gets a device-side wait instead (an event recorded on it, which
    the backend's stream waits for), with one event reused per thread."""
    import threading
    import types

    cu = fn.get_backend("cuda")
    calls = []

    class Event:
        def record(self, stream):
            calls.append(("record", stream))

        def wait(self, stream):
            calls.append(("wait", stream))

    fake = types.SimpleNamespace(
        as_cuda_array=lambda x, sync=True: calls.append(("adopt", sync)) or x.data,
        event=lambda timing=True: calls.append(("event", timing)) or Event(),
        external_stream=lambda ptr: ("stream", ptr))
    monkeypatch.setattr(cu, "cuda", fake)
    monkeypatch.setattr(cu, "stream", "default")          # the backend's stream
    monkeypatch.setattr(cu, "simulated", False)
    monkeypatch.setattr(cu, "_local", threading.local())

    class Producer:
        def __init__(self, stream):
            self.data = object()
            self.__cuda_array_interface__ = dict(shape=(2,), typestr="<f4", version=3,
                                                 data=(0, False), stream=stream)

    for stream in (None, 1, 2):                     # already ordered: nothing to do
        calls.clear()
        p = Producer(stream)
        assert cu._adopt(p) is p.data
        assert calls == [("adopt", False)]
    calls.clear()
    cu._adopt(Producer(0xBEEF))
    cu._adopt(Producer(0xCAFE))
    assert calls == [("adopt", False), ("event", False), ("record", ("stream", 0xBEEF)),
                     ("wait", "default"),
                     ("adopt", False), ("record", ("stream", 0xCAFE)), ("wait", "default")]


@pytest.mark.parametrize("driver, toolkit, says", [
    ((12, 4), (13, 5), r"CUDA 12\.4 programs, older than the CUDA 13\.5 compiler "
                       r"libraries installed here, which need a driver >= 580: "
                       r"install fastnn\[cuda12\] instead \(for drivers >= 525\)"),
    ((11, 8), (12, 9), r"CUDA 11\.8 .* CUDA 12\.9 .* driver >= 525: update the driver"),
    ((13, 0), (13, 5), None),                   # minor versions: compatible
    ((13, 2), (12, 9), None),
])
def test_an_old_driver_for_the_compiler_libraries_is_named(driver, toolkit, says,
                                                           monkeypatch):
    """Issue 18: the [cuda] extra's CUDA 13 NVVM needs a driver >= 580; on an older
    one the first kernel load would fail with an error naming neither.  The backend
    says so up front and points to [cuda12]."""
    import numba
    from numba import cuda

    from fastnn.backends import cuda_backend

    monkeypatch.setattr(numba.config, "ENABLE_CUDASIM", 0)
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda.cudadrv.driver, "get_version", lambda: driver,
                        raising=False)
    monkeypatch.setattr(cuda.cudadrv.runtime, "get_version", lambda: toolkit,
                        raising=False)
    if says is None:
        assert cuda_backend._load_cuda() is cuda
    else:
        with pytest.raises(cuda_backend.CudaUnavailable, match=says):
            cuda_backend._load_cuda()


def test_a_device_target_is_checked_and_used_in_place(rng, monkeypatch):
    """A device target is read down to be checked (labels in range, ...) but, when it
    passes as it is, the kernel reads the device array itself: no copy back up.
    Same value as a host target; a bad label still fails, naming the range."""
    cu = fn.get_backend("cuda")
    out = rand(rng, (5, 3), np.float32)
    labels = rng.integers(0, 3, 5)
    sent = []
    real = cu._send
    monkeypatch.setattr(cu, "_send", lambda *a: sent.append(a[1]) or real(*a))
    values = {}
    for where in ("host", "device"):
        loss = fn.CrossEntropyLoss(backend="cuda")
        y = labels if where == "host" else cu.from_numpy(labels)
        sent.clear()
        values[where] = loss.forward(cu.from_numpy(out), y)
        assert ("target" in sent) == (where == "host")
    assert values["host"] == values["device"]
    with pytest.raises(ValueError, match=r"target labels must lie in \[0, 3\)"):
        fn.CrossEntropyLoss(backend="cuda").forward(cu.from_numpy(out),
                                                    cu.from_numpy(labels + 1))


def test_kept_launch_configurations_launch_their_own_grid(rng):
    """A GEMM kernel launched over grids of different sizes in turn (batches of 40
    rows, then 5, then 40 again: the same kernel, different grids) covers each
    whole output every time.  (Launch configurations are kept between calls; under
    the simulator a kernel's configuration is the kernel itself, which a kept one
    must not share.)"""
    model = _net()
    ref = _net("numpy")
    ref.set_weights(model.get_weights())
    for rows in (40, 5, 40):
        x = rand(rng, (rows, 6), np.float32)
        np.testing.assert_allclose(model.to_numpy(model.forward(x)),
                                   ref.forward(x), rtol=2e-5,
                                   atol=2e-6)
