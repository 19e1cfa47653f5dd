"""The CUDA backend: numba.cuda kernels (the numba-cuda package) on device-resident
arrays.

Parameters, gradients, optimizer state and workspaces live on the GPU; the host sees
only what it asks for (``to_numpy``: weights, outputs, a loss value).  Host (NumPy)
inputs are copied up once per call into buffers kept for that purpose; device inputs
(numba device arrays, or any ``__cuda_array_interface__`` array such as CuPy's or a
CUDA torch tensor) are used in place.  Every kernel launch goes through
:meth:`CudaBackend._launch`, which counts them (``launches``): on small models the
launches are the cost, and the tests hold a training step to its budget.
"""
import importlib.util
import math
import threading
import weakref

import numpy as np

from .. import _checks
from ..kernels import specs
from .base import Backend


class CudaUnavailable(ImportError):
    """Why the cuda backend cannot run here (package missing, no driver, no GPU)."""


def _load_cuda():
    """numba.cuda from the numba-cuda package, with a usable GPU (or the simulator)."""
    if importlib.util.find_spec("numba_cuda") is None:
        raise CudaUnavailable(
            "the numba-cuda package is not installed (pip install 'fastnn[cuda]'; "
            "numba's own CUDA target is deprecated and not used)")
    import numba
    from numba import cuda

    if numba.config.ENABLE_CUDASIM:
        return cuda
    if not cuda.is_available():
        try:
            cuda.current_context()
            reason = "no CUDA device is visible"
        except Exception as exc:  # the driver's own words: no driver, no device, ...
            reason = " ".join(str(exc).split()).rstrip(" :") or type(exc).__name__
        problem = _toolchain_problem(cuda)
        raise CudaUnavailable(f"no usable CUDA GPU: {reason}"
                              + (f" ({problem})" if problem else ""))
    problem = _toolchain_problem(cuda)
    if problem:
        raise CudaUnavailable(problem)
    return cuda


# The oldest NVIDIA driver of each CUDA major version, and the extra that installs
# that version's compiler libraries (pyproject.toml).
CUDA_DRIVERS = {13: ("580", "cuda"), 12: ("525", "cuda12")}


def _toolchain_problem(cuda):
    """Why kernels compiled here cannot load on this machine's driver, or None.

    numba-cuda compiles with the NVVM of the installed CUDA libraries (the [cuda]
    extra brings CUDA 13's) and links to machine code on the host, so a driver of
    the same CUDA major version loads the result (minor-version compatibility); a
    driver of an older major version fails at the first kernel's load, with a PTX
    or cubin error that names neither cause.  Checked up front instead, from the two
    version numbers (None if either cannot be read: the load will say more)."""
    try:
        driver = tuple(cuda.cudadrv.driver.get_version())
        toolkit = tuple(cuda.cudadrv.runtime.get_version())
    except Exception:
        return None
    if driver[0] >= toolkit[0]:
        return None
    need, _ = CUDA_DRIVERS.get(toolkit[0], ("?", None))
    older = [(extra, drv) for major, (drv, extra) in CUDA_DRIVERS.items()
             if major <= driver[0]]
    fix = (f"install fastnn[{older[0][0]}] instead (for drivers >= {older[0][1]}), in an "
           f"environment without the CUDA {toolkit[0]} packages, or update the driver"
           if older else "update the driver")
    return (f"the NVIDIA driver runs CUDA {driver[0]}.{driver[1]} programs, older than "
            f"the CUDA {toolkit[0]}.{toolkit[1]} compiler libraries installed here, "
            f"which need a driver >= {need}: {fix}")


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self):
        import numba

        self.cuda = _load_cuda()
        from ..kernels import cuda as K

        self.K = K
        self.simulated = K.SIMULATED
        # Small grids are the point on small models, not an accident to warn about.
        # (numba has one switch for this, process-wide: it is off once a cuda
        # backend exists.)
        numba.config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
        self.launches = 0
        if self.simulated:
            self.sms, self.device_name = 1, "CUDA simulator"
        else:
            dev = self.cuda.get_current_device()
            self.sms = dev.MULTIPROCESSOR_COUNT
            name = dev.name
            self.device_name = name.decode() if isinstance(name, bytes) else str(name)
        # The reductions' scratch, one set per host thread (see _reduction_scratch).
        self._local = threading.local()
        self.stream = self.cuda.default_stream()     # (the one kernels launch on)
        self._launchers = {}      # see _launch
        self._spans = {}          # see aliases
        # Staging buffers, owned here: per owner (a plan, a loss, this backend), the
        # device copies of its host inputs and the host side of batches gathered from a
        # host data set; dropped with their owner.
        self._staging = weakref.WeakKeyDictionary()

    # -- reductions' scratch -------------------------------------------------------
    def _reduction_scratch(self):
        """(sums, parts, done) of this host thread: a loss value's or a norm's two
        float64 totals, and the per-block totals and "blocks done" counter of
        kernels.cuda.deposit_totals.  Per thread, because a reduction's launch and
        the host's read of its result are two steps: with one set per backend, two
        threads' reductions would add into one total, or (on per-thread default
        streams, which may run concurrently) count blocks in one counter.  A
        finished launch leaves the counter at 0 by itself (it wraps); a launch that
        faults leaves the whole CUDA context unusable, so no later launch can read a
        part-way count."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = (
                self.cuda.device_array(2, np.float64),
                self.cuda.device_array(2 * self.K.MAX_BLOCKS, np.float64),
                self.cuda.to_device(np.zeros(1, np.uint32)))   # atomic.inc: unsigned
        return scratch

    def _event(self):
        """A CUDA event for ordering only (no timing: cheaper to record and wait
        on).  (The simulator's events take no arguments.)"""
        return self.cuda.event() if self.simulated else self.cuda.event(timing=False)

    def _zero(self, buf):
        """buf = 0 by an asynchronous memset on the stream: no kernel launch, and no
        host-to-device copy (a pageable copy waits for the host)."""
        self.cuda.cudadrv.driver.device_memset(buf, 0, buf.nbytes)

    # -- launches ------------------------------------------------------------------
    # A launch's host cost is the point on small models (a 64-128-10 step's kernels
    # take microseconds on a GPU), so what does not change between steps is worked
    # out once: a launch configuration (kernel[grid, block], which numba builds anew
    # on every subscript) is kept per kernel and grid, and a GEMM's tiling, grid and
    # kernel per use, activation, dtype and output shape.  (bench/cuda_static.py counts
    # the host time of a step with the kernels stubbed out.)
    MAX_LAUNCHERS = 4096

    def _configured(self, kernel, grid, block):
        """kernel[grid, block], to keep and call again: numba-cuda's launch
        configuration is an object of its own.  (The simulator's kernel sets the
        dimensions on itself and returns itself, so a kept one would launch with the
        last dimensions set: there the kernel is subscripted at each call.)"""
        if len(self._launchers) >= self.MAX_LAUNCHERS:   # (a batch size per entry)
            self._launchers.clear()
        if self.simulated:
            return lambda *args: kernel[grid, block](*args)
        return kernel[grid, block]

    def _launch(self, kernel, work, *args):
        """A 1-D grid-stride launch over ``work`` items."""
        K = self.K
        blocks = max(1, min(-(-work // K.BLOCK), K.MAX_BLOCKS))
        launch = self._launchers.get((kernel, blocks))
        if launch is None:
            launch = self._launchers[(kernel, blocks)] = self._configured(
                kernel, blocks, K.BLOCK)
        launch(*args)
        self.launches += 1

    def _gemm(self, use, activation, a, b, alpha, out):
        """op(A) op(B) with the epilogue of ``use`` writing ``out``, a named tuple of
        the kernels' (``K.GemmForward``, ``K.GemmAccumulate``, ``K.GemmDelta``)."""
        c = out[0]
        key = (use, activation, c.dtype, c.shape)
        launch = self._launchers.get(key)
        if launch is None:
            K = self.K
            m, n = c.shape
            tiling = K.pick_tiling(m, n, self.sms, c.dtype)
            blocks, threads = K.gemm_grid(m, n, tiling)
            launch = self._launchers[key] = self._configured(
                K.gemm_kernel(use, activation, c.dtype, tiling), blocks, threads)
        launch(a, b, c.dtype.type(alpha), out)
        self.launches += 1

    @staticmethod
    def _flat(x):
        return x.reshape(x.size) if x.ndim != 1 else x

    @staticmethod
    def _rows(x):
        """A 1-D array (labels) as one column, for kernels that read rows."""
        return x.reshape((x.shape[0], 1)) if x.ndim == 1 else x

    def _activation(self, kind, name, *arrays):
        """The activation kernel ``kind`` ("forward" or "delta") over ``arrays``:
        a row function (softmax) row by row, the elementwise ones over the flat
        buffers."""
        K = self.K
        kern = (K.activation_forward if kind == "forward" else K.activation_delta)(
            name, arrays[0].dtype)
        if specs.ACTIVATIONS[name].rows:
            self._launch(kern, arrays[0].shape[0], *arrays)
        else:
            self._launch(kern, arrays[0].size, *(self._flat(v) for v in arrays))

    def synchronize(self):
        """Wait until the GPU has done the work queued so far (launches return
        before it has)."""
        self.cuda.synchronize()

    # -- arrays --------------------------------------------------------------------
    def is_array(self, x):
        """Whether ``x`` is a device array this backend computes on in place."""
        return self.cuda.devicearray.is_cuda_ndarray(x) or \
            hasattr(x, "__cuda_array_interface__")

    def empty(self, shape, dtype):
        return self.cuda.device_array(shape, np.dtype(dtype))

    @staticmethod
    def _span(a):
        """[first, last) device address of a contiguous device array."""
        host = getattr(a, "_ary", None)     # (the simulator's arrays wrap NumPy's)
        lo = (host.__array_interface__ if host is not None
              else a.__cuda_array_interface__)["data"][0]
        return lo, lo + a.nbytes

    def aliases(self, x, *buffers):
        # device arrays: by address range (every array here is contiguous); a host
        # array is copied to the device before any kernel reads it
        # (the buffers are a model's own, the same every step: their spans are kept,
        # as reading __cuda_array_interface__ builds a dictionary each time)
        if isinstance(x, np.ndarray):
            return False
        lo, hi = self._span(x)
        for buf in buffers:
            span = self._spans.get(id(buf))
            if span is None:
                span = self._spans[id(buf)] = self._span(buf)
                # dropped with the buffer (device arrays are not all hashable)
                weakref.finalize(buf, self._spans.pop, id(buf), None)
            if span[0] < hi and lo < span[1]:
                return True
        return False

    def from_numpy(self, array, out=None):
        array = np.ascontiguousarray(array)
        if out is None:
            return self.cuda.to_device(array)
        out.copy_to_device(array.reshape(out.shape).astype(out.dtype, copy=False))
        return out

    def to_numpy(self, array):
        if isinstance(array, np.ndarray):
            return array.copy()
        return array.copy_to_host()

    def copy(self, array):
        out = self.cuda.device_array(array.shape, array.dtype)
        out.copy_to_device(array)            # device to device, on the stream
        return out

    def fill(self, buf, value):
        flat = self._flat(buf)
        self._launch(self.K.elementwise("fill", buf.dtype), flat.size, flat,
                     buf.dtype.type(value))

    def scale(self, buf, factor):
        flat = self._flat(buf)
        self._launch(self.K.elementwise("scale", buf.dtype), flat.size, flat,
                     buf.dtype.type(factor))

    # -- inputs --------------------------------------------------------------------
    def batch(self, x, argname, dtype, ndim=2, columns=None):
        """Check a batch as :func:`fastnn._checks.batch_array` does, accepting device
        arrays too (returned as numba device arrays); host arrays come back as they
        are, for :meth:`stage` to copy up."""
        if not self.is_array(x):
            if not isinstance(x, np.ndarray):
                raise TypeError(f"{argname} must be a numpy.ndarray or a CUDA device "
                                f"array of {dtype}, got {type(x).__name__}")
            return _checks.batch_array(x, argname, dtype, ndim, columns)
        if not self.cuda.devicearray.is_cuda_ndarray(x):
            x = self._adopt(x)
        _checks.batch_shape(x.shape, x.dtype, argname, dtype, ndim, columns)
        if not x.is_c_contiguous():
            raise ValueError(f"{argname} must be C-contiguous")
        return x

    def _adopt(self, x):
        """A ``__cuda_array_interface__`` array (CuPy's, a CUDA torch tensor) as a
        numba device array over the same memory, ordered after the work that made it
        without the host waiting for that work (``as_cuda_array``'s default would
        synchronise the producer's stream on every call).  The interface names that
        stream (version 3): none, or the legacy (1) or per-thread (2) default stream,
        are already ordered with this backend's launches on the legacy default
        stream; any other stream gets a device-side wait, an event recorded on it
        that the default stream waits for."""
        stream = x.__cuda_array_interface__.get("stream")
        arr = self.cuda.as_cuda_array(x, sync=False)
        if stream not in (None, 1, 2) and not self.simulated:  # (simulator: no streams)
            event = getattr(self._local, "event", None)
            if event is None:
                event = self._local.event = self._event()
            event.record(self.cuda.external_stream(stream))
            event.wait(self.stream)
        return arr

    def _staged(self, owner):
        bufs = self._staging.get(owner)
        if bufs is None:
            bufs = self._staging[owner] = {}
        return bufs

    def stage(self, x, owner, key):
        """``x`` on the device: a host array is copied into this backend's buffer for
        (``owner``, ``key``) (kept between calls: no allocation per batch), through a
        pinned host buffer (see :meth:`_upload`)."""
        if not isinstance(x, np.ndarray):
            return x
        bufs = self._staged(owner)
        buf = bufs.get(key)
        if buf is None or buf.shape != x.shape or buf.dtype != x.dtype:
            buf = bufs[key] = self.cuda.device_array(x.shape, x.dtype)
        np.copyto(self._pinned(owner, key, buf), x)
        self._send(owner, key, buf)
        return buf

    def _pinned(self, owner, key, out):
        """The pinned host buffer kept for (``owner``, ``key``) to fill for the
        device array ``out``, once its previous copy has left it (the host waits on
        an event for that: at most one step behind the GPU).  :meth:`_send` then
        copies it up asynchronously on the stream.  A copy from pageable memory (a
        plain NumPy array) would make the host wait for the GPU to reach it, once
        per batch, so the host could never queue the next step while the GPU runs
        this one."""
        bufs = self._staged(owner)
        entry = bufs.get(("pinned", key))
        if entry is None or entry[0].shape != out.shape or entry[0].dtype != out.dtype:
            entry = bufs[("pinned", key)] = (
                self.cuda.pinned_array(out.shape, out.dtype), self._event())
        host, copied = entry
        copied.synchronize()
        return host

    def _send(self, owner, key, out):
        host, copied = self._staged(owner)[("pinned", key)]
        out.copy_to_device(host, stream=self.stream)
        copied.record(self.stream)

    # A data set goes to the GPU whole when it takes at most this share of the free
    # GPU memory; a larger one stays on the host and goes up one batch at a time.
    DATASET_SHARE = 0.5

    def _free_memory(self):
        try:
            return self.cuda.current_context().get_memory_info()[0]
        except NotImplementedError:           # (a pool allocator may not say)
            return float("inf")

    def dataset(self, *arrays):
        """A data set's arrays (features and prepared targets) copied to the device
        once, when together they fit (see DATASET_SHARE); else the host arrays
        themselves, whose batches :meth:`gather` and :meth:`stage` copy up one at a
        time.  Device arrays are already there."""
        host = [a for a in arrays if isinstance(a, np.ndarray)]
        if sum(a.nbytes for a in host) > self.DATASET_SHARE * self._free_memory():
            if len(host) != len(arrays):
                raise ValueError("a data set must be all on the host or all on the "
                                 "GPU when it does not fit in GPU memory")
            return arrays
        return tuple(self.cuda.to_device(np.ascontiguousarray(a))
                     if isinstance(a, np.ndarray) else a for a in arrays)

    def gather(self, x_src, y_src, idx, x_out, y_out):
        if isinstance(x_src, np.ndarray):
            # A data set left on the host: gather there (as a host backend does),
            # into pinned buffers kept per batch shape, and copy the batch up.
            uploads = ((x_out, "gather_x"), (y_out, "gather_y"))
            super().gather(x_src, y_src, idx,
                           *(self._pinned(self, key, out) for out, key in uploads))
            for out, key in uploads:
                self._send(self, key, out)
            return
        y_src, y_out = self._rows(y_src), self._rows(y_out)
        work = x_out.shape[0] * (x_out.shape[1] + y_out.shape[1])
        self._launch(self.K.elementwise("gather", x_out.dtype), work, x_src, y_src, idx,
                     x_out, y_out)

    # -- dense layers --------------------------------------------------------------
    def dense_forward(self, x, w, b, z):
        self._gemm("forward", "linear", x, w, 1, self.K.GemmForward(z, z, b))

    def dense_backward(self, x, w, grad_z, grad_w, grad_x, scale):
        self._gemm("accumulate", "linear", x, grad_z, scale,
                   self.K.GemmAccumulate(grad_w))
        if grad_x is not None:
            self._gemm("delta", "linear", grad_z, w, 1,
                       self.K.GemmDelta(grad_x, grad_x, grad_x))

    def activation_forward(self, name, z, a):
        self._activation("forward", name, z, a)

    def activation_backward(self, name, z, a, grad_a, grad_z, grad_b, scale):
        if specs.ACTIVATIONS[name].rows:
            self._activation("delta", name, z, a, grad_a, grad_z)
            name, grad_a = "linear", grad_z     # then the bias sums over grad_z
        self._launch(self.K.bias_backward(name, z.dtype), z.shape[1], z, a,
                     grad_a, grad_z, grad_b, z.dtype.type(scale))

    # -- whole-model passes --------------------------------------------------------
    # Forward: one GEMM per layer with bias and activation in its epilogue (softmax:
    # a row kernel after it).  Backward: per layer one GEMM for [dW; db] (the bias
    # gradient is the row of ones appended to the layer input) and one for the layer
    # below's dL/dZ with that layer's f' in the epilogue; plus one elementwise launch
    # for the output layer's f' unless it is linear.  So 3 launches per layer at most.
    def model_forward(self, plan, x):
        K, inp = self.K, x
        for layer, z, a in zip(plan.model.layers, plan.z, plan.a):
            act = layer.activation
            if specs.ACTIVATIONS[act].rows:     # softmax: a row kernel after the GEMM
                self._gemm("forward", "linear", inp, layer.weight.data, 1,
                           K.GemmForward(z, z, layer.bias.data))
                self._activation("forward", act, z, a)
            else:
                self._gemm("forward", act, inp, layer.weight.data, 1,
                           K.GemmForward(a, z, layer.bias.data))
            inp = a
        return inp

    def _weight_bias_grads(self, plan):
        """Per layer, [dW; db] as one (in + 1) x out view of the gradient buffer: the
        bias follows its weight there (the plan's records say so: b_off = w_off +
        fin * fout, which the model lays out)."""
        bufs = self._staged(plan)
        views = bufs.get("wb_grads")
        if views is None:
            grads = plan.model.flat_grads
            views = []
            for L in plan.layers:
                fin, fout, w_off = int(L["fin"]), int(L["fout"]), int(L["w_off"])
                assert L["b_off"] == w_off + fin * fout
                views.append(grads[w_off:w_off + (fin + 1) * fout].reshape(
                    (fin + 1, fout)))
            bufs["wb_grads"] = views
        return views

    def model_backward(self, plan, x, grad, scale):
        K = self.K
        layers = plan.model.layers
        wb = self._weight_bias_grads(plan)
        last = len(layers) - 1
        act = layers[last].activation
        gz = grad
        if act != "linear":     # dL/dZ = f'(Z) * dL/dA (no bias sums: the GEMM has them)
            self._activation("delta", act, plan.z[last], plan.a[last], grad,
                             plan.grad_z[last])
            gz = plan.grad_z[last]
        for i in range(last, -1, -1):
            inp = x if i == 0 else plan.a[i - 1]
            self._gemm("accumulate", "linear", inp, gz, scale, K.GemmAccumulate(wb[i]))
            if i == 0:
                break
            below = layers[i - 1].activation
            w = layers[i].weight.data
            if specs.ACTIVATIONS[below].rows:
                gx = plan.grad_x[i]
                self._gemm("delta", "linear", gz, w, 1, K.GemmDelta(gx, gx, gx))
                self._activation("delta", below, plan.z[i - 1], plan.a[i - 1], gx,
                                 plan.grad_z[i - 1])
            else:
                self._gemm("delta", below, gz, w, 1,
                           K.GemmDelta(plan.grad_z[i - 1], plan.z[i - 1], plan.a[i - 1]))
            gz = plan.grad_z[i - 1]

    # -- losses, metrics, optimizers -----------------------------------------------
    def sums(self, n):
        return self.cuda.to_device(np.zeros(n))

    def loss_sum(self, name, out, target, grad, param, norm, sums, weight, rule=None):
        # The accuracy is counted by the loss kernel itself (one launch for both).
        F = out.dtype.type
        _, parts, done = self._reduction_scratch()
        args = (F(param), F(norm), sums, parts, done, float(weight))
        kern = self.K.loss(name, out.dtype)
        if specs.LOSS_KERNELS[name].form != "elementwise":      # softmax rows
            self._launch(kern, out.shape[0], out, self._rows(target), grad, *args)
            return 0 if rule is None else out.shape[0]
        cuts = (F(0), F(0), False) if rule is None else (
            F(rule.out_cut), F(rule.target_cut), True)
        self._launch(kern, out.size, self._flat(out), self._flat(target),
                     self._flat(grad), *args, *cuts)
        return 0 if rule is None else out.size

    def loss(self, name, out, target, grad, param, norm):
        scratch = self._reduction_scratch()[0]
        self._zero(scratch)
        self.loss_sum(name, out, self.stage(target, self, "target"), grad, param, norm,
                      scratch, 1.0)
        return float(scratch.copy_to_host()[0])

    def count_correct(self, rule, out, target, sums, slot):
        # (fit's path for a custom loss; the built-in losses count inside their kernel)
        host = np.zeros(slot + 1)
        judged = super().count_correct(rule, self.to_numpy(out), self.to_numpy(target),
                                       host, slot)
        mine = self.to_numpy(sums)
        mine[slot] += host[slot]
        self.from_numpy(mine, out=sums)
        return judged

    def optimizer_step(self, name, params, grads, state, hyper):
        self.check_step_buffers(params, grads, state)
        self._launch(self.K.optimizer_step(name, params.dtype), params.size, params,
                     grads, *state, hyper)

    def vector_norm(self, buf, order):
        scratch, parts, done = self._reduction_scratch()
        self._zero(scratch)
        flat = self._flat(buf)
        code = 0.0 if order == math.inf else float(order)
        kern = self.K.norm("max" if order == math.inf else "sum", buf.dtype)
        self._launch(kern, flat.size, flat, code, scratch, parts, done)
        total, nans = scratch.copy_to_host()
        if nans:
            return math.nan
        if order == math.inf:
            return float(total)
        if order == 2.0:
            return math.sqrt(total)
        return float(total ** (1.0 / order))
