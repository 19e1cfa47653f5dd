"""Loss functions: value and gradient computed together.

Definitions and mean reductions follow PyTorch's.  ``forward(output, target)`` returns
the loss as a Python float and keeps d(loss)/d(output); ``backward()`` returns it (an
array of the output's shape, overwritten by the next forward).

The built-in losses each name a kernel of the registry (``fastnn.kernels.specs``):
value and gradient in one compiled pass, on the backend of the output they are given
(a NumPy output: the cpu backend; a CUDA device array: the cuda backend), unless a
``backend`` was given.

Writing your own loss: subclass :class:`Loss` and implement
``value_and_grad(output, target)`` in NumPy::

    class MeanFourth(fn.Loss):
        def value_and_grad(self, output, target):      # NumPy arrays in
            d = output - target
            return (d ** 4).mean(), 4 * d ** 3 / d.size  # (mean loss, d loss / d output)

``forward``, ``backward``, ``fit``, ``evaluate`` and the manual loop all use it: the
output is handed over as a NumPy array (copied from the GPU on the cuda backend), the
target as given to ``forward`` (in ``fit``: the rows of ``y``, floats converted once to
the model's dtype, integers kept), and the gradient is converted to the output's dtype.
The value must be the mean over the batch, so that ``fit``'s micro-batches add up to
the batch (each is weighted by its share of rows).  A subclass of a built-in loss may
also override ``forward`` (and call ``super().forward``): ``fit`` then calls it, and
its ``backward``, for every micro-batch.
"""
import math

import numpy as np

from . import _checks
from .backends import get_backend
from .kernels import specs

#: kernel name -> the built-in Loss class for it (filled as the classes are defined)
LOSS_CLASSES = {}
#: The public losses: name -> their registry entry (``fastnn.LOSSES``).
LOSSES = specs.LOSSES


def _values_in(target, argname, lo, hi):
    if not (np.all(target >= lo) and np.all(target <= hi)):
        # (only on the error path: NaN fails both comparisons)
        nan = " and contains NaN (has training diverged?)" if np.isnan(target).any() \
            else ""
        raise ValueError(f"{argname} must lie in [{lo}, {hi}]{nan}")


def _shaped(target, shape, dtype):
    """A float target: exactly the output's shape and dtype (nothing is broadcast)."""
    target = _checks.batch_array(target, "target", dtype, ndim=len(shape))
    if target.shape != tuple(shape):
        raise ValueError(f"target must have the output's shape {tuple(shape)}, got "
                         f"{target.shape} (nothing is broadcast)")
    return target


def _labels(target, shape, dtype, ranged=True):
    if not isinstance(target, np.ndarray) or target.ndim != 1:
        raise ValueError("target must be integer labels of shape (batch,) or "
                         "probabilities of shape (batch, classes), got "
                         f"{getattr(target, 'shape', type(target).__name__)}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"target labels must be integers, got dtype {target.dtype}")
    if target.shape[0] != shape[0]:
        raise ValueError(f"target must hold {shape[0]} labels, got {target.shape[0]}")
    classes = shape[1]
    if ranged and target.size and (target.min() < 0 or target.max() >= classes):
        raise ValueError(f"target labels must lie in [0, {classes}), got values in "
                         f"[{target.min()}, {target.max()}]")
    return target.astype(np.intp, copy=False)


def _signs(target, loss):
    if not np.all((target == 1) | (target == -1)):
        raise ValueError(f"target must hold only -1 and +1 for {loss}")


def _nonnegative(target, loss):
    if not np.all(target >= 0):
        raise ValueError(f"target must hold probabilities (>= 0) for {loss}")


# A registry target kind -> (whether a target is of that form: labels are 1-D, the rest
# like the output; the check, returning the target as the kernel reads it).
_TARGETS = {
    "real": (lambda t: True, lambda t, s, d, loss: _shaped(t, s, d)),
    "unit": (lambda t: True,
             lambda t, s, d, loss: _values_in(_shaped(t, s, d), "target", 0, 1) or t),
    "sign": (lambda t: True, lambda t, s, d, loss: _signs(_shaped(t, s, d), loss) or t),
    "nonnegative": (lambda t: True,
                    lambda t, s, d, loss: _nonnegative(_shaped(t, s, d), loss) or t),
    "probabilities": (lambda t: getattr(t, "ndim", None) == 2,
                      lambda t, s, d, loss: _nonnegative(_shaped(t, s, d), loss) or t),
    "labels": (lambda t: True, lambda t, s, d, loss: _labels(t, s, d)),
}
# A loss kernel -> the variants of the same loss (cross-entropy: against probabilities)
_VARIANTS = {name: tuple(k for k in specs.LOSS_KERNELS.values() if k.variant_of == name)
             for name in specs.LOSS_KERNELS}
# A registry output kind -> the check of the model's output (a host array)
_OUTPUTS = {
    "real": None,
    "log_probability": None,
    "probability": lambda out: _values_in(out, "output (probabilities)", 0, 1),
}


class Loss:
    """Base class of every loss: a built-in one names its registry kernel
    (``kernel``); a custom one implements :meth:`value_and_grad` (see the module's
    documentation).  ``backend``: the backend that computes the loss; default None,
    that of the output given (``fit`` and ``evaluate``: the model's)."""
    #: the registry's loss kernel (``fastnn.kernels.specs.LOSS_KERNELS``); None for a
    #: custom loss
    kernel = None
    #: its registry entry (None for a custom loss)
    spec = None
    _fused = False
    checks_output = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "kernel" in cls.__dict__ and cls.__module__ == __name__:
            LOSS_CLASSES[cls.kernel] = cls
        cls.spec = None if cls.kernel is None else specs.LOSS_KERNELS[cls.kernel]
        # whether it checks the model's output before computing (BCE: that it holds
        # probabilities), which a one-call training step cannot do between its passes
        cls.checks_output = cls.spec is not None and _OUTPUTS[cls.spec.output] is not None
        # fused: the kernels compute it, unless a subclass overrides how it is computed
        cls._fused = cls.kernel is not None and all(
            getattr(cls, m) is getattr(Loss, m)
            for m in ("forward", "backward", "value_and_grad", "__call__"))

    def __init__(self, backend=None):
        cls = type(self)
        if self.kernel is None and cls.value_and_grad is Loss.value_and_grad and (
                cls.forward is Loss.forward or cls.backward is Loss.backward):
            raise TypeError(f"{cls.__name__} must implement value_and_grad(output, "
                            "target) (NumPy arrays in, (mean loss, gradient) out), or "
                            "forward and backward, or subclass a built-in loss")
        self.backend = None if backend is None else get_backend(backend)
        self.param = 0.0
        self._grad = None

    @property
    def fused(self):
        """Whether the fused kernels compute this loss: a built-in loss whose
        ``forward``, ``backward`` and ``value_and_grad`` are its own.  Otherwise
        ``fit`` and ``evaluate`` call ``forward``/``backward`` per micro-batch (on the
        cuda backend that copies each output to the host)."""
        return self._fused

    def _backend_of(self, output):
        if self.backend is not None:
            return self.backend
        if isinstance(output, np.ndarray):
            return get_backend("cpu")
        if not isinstance(output, (list, tuple, int, float)):
            try:
                cuda = get_backend("cuda")
            except RuntimeError:                # (no GPU: the error below says it)
                cuda = None
            if cuda is not None and cuda.is_array(output):
                return cuda
        raise TypeError(f"output must be a NumPy array or a CUDA device array (a "
                        f"model's forward output), got {type(output).__name__}")

    # -- targets -----------------------------------------------------------------
    def check_target(self, target, shape, dtype):
        """Validate ``target`` for outputs of ``shape`` and ``dtype``; return (kernel
        name, target array): the loss's kernel, or the variant whose target form this
        is (cross-entropy against probabilities).  No conversion: see
        :meth:`prepare_target`."""
        if self.kernel is None:
            return None, target
        for k in _VARIANTS[self.kernel]:
            accepts, check = _TARGETS[k.target]
            if accepts(target):
                return k.name, check(target, shape, dtype, type(self).__name__)
        accepts, check = _TARGETS[self.spec.target]
        return self.kernel, check(target, shape, dtype, type(self).__name__)

    def prepare_target(self, y, rows, columns, dtype):
        """Convert a whole data set's targets (any real array-like) once to what
        :meth:`check_target` accepts, and validate every value: what ``fit`` does
        before training.  A 1-D ``y`` is taken as one column when the model has one
        output; class labels (1-D, integer-valued) become integers.  Returns (kernel
        name, target array), as :meth:`check_target`."""
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"y must hold real numbers, got dtype {y.dtype}")
        if self.spec is not None and self.spec.target == "labels" and y.ndim == 1:
            y = _checks.exact_cast(y, np.intp, "y (class labels)")
            return self.check_target(y, (rows, columns), dtype)
        if y.ndim == 1 and columns == 1:
            y = y.reshape(-1, 1)
        if self.kernel is None and y.dtype.kind in "iub":
            y = np.ascontiguousarray(y, dtype=np.intp)
        else:
            y = np.ascontiguousarray(y, dtype=dtype)
        if not _checks.all_finite(y):
            raise ValueError("y contains NaN or inf")
        if self.kernel is None and y.shape[0] != rows:
            raise ValueError(f"y must hold {rows} rows (one per sample), got "
                             f"{y.shape[0]}")
        return self.check_target(y, (rows, columns), dtype)

    # -- the loss ----------------------------------------------------------------
    def _norm(self, shape):
        if self.spec is None or self.spec.reduction == "elements":
            return 1.0 / math.prod(shape)
        return 1.0 / shape[0]

    def _check_output(self, backend, out):
        check = _OUTPUTS[self.spec.output]
        if check is not None:
            # (on the cuda backend this reads the output back: a sync per batch)
            check(out if isinstance(out, np.ndarray) else backend.to_numpy(out))

    def value_and_grad(self, output, target):
        """(mean loss, d loss / d output) for NumPy arrays: what a custom loss
        implements.  For a built-in loss: its NumPy reference (``numpy`` backend),
        what its kernels are tested against."""
        kernel, target = self.check_target(target, output.shape, output.dtype)
        grad = np.empty_like(output)
        value = get_backend("numpy").loss(kernel, output, target, grad, self.param,
                                          self._norm(output.shape))
        return value, grad

    def forward(self, output, target):
        """The mean loss of ``output`` (batch, k) against ``target``; keeps the
        gradient for :meth:`backward`.  Returns a Python float (on the cuda backend
        that waits for the GPU: ``fit`` accumulates on the device instead).  Targets
        are validated on the host: a device-array target is copied down for that."""
        b = self._backend_of(output)
        dtype = _checks.dtype_of(output.dtype, "output dtype")
        out = b.batch(output, "output", dtype)
        if not self._fused:
            return self._forward_numpy(b, out, self._host_target(b, target, out.shape))
        kernel, target = self.staged_target(b, target, tuple(out.shape), out.dtype,
                                            not b.checks_labels)
        out = b.stage(out, self, "output")
        self._check_output(b, out)
        grad = self._grad_buffer(b, out)
        return b.loss(kernel, out, target, grad, self.param, self._norm(out.shape))

    def _host_target(self, backend, target, shape):
        """``target`` on the host (a device array is copied down: targets are checked
        there), with as many rows as the output."""
        if backend.is_array(target) and not isinstance(target, np.ndarray):
            target = backend.to_numpy(target)
        if isinstance(target, np.ndarray) and target.ndim >= 1 \
                and target.shape[0] != shape[0]:
            raise ValueError(f"output has {shape[0]} rows but target has "
                             f"{target.shape[0]}: batch sizes must match")
        return target

    def staged_target(self, backend, target, shape, dtype, ranged=True):
        """For a fused loss and outputs of ``shape`` and ``dtype`` on ``backend``:
        (kernel name, target) with the target checked (:meth:`check_target`) and
        where ``backend``'s kernels read it.  ``ranged=False`` leaves the range of
        class labels to the backend (one whose ``checks_labels``: the cpu backend's
        kernels check them before they write anything; 1.3 us of NumPy reductions per
        call here)."""
        host = self._host_target(backend, target, shape)
        if not ranged and self.spec.target == "labels" and getattr(host, "ndim",
                                                                   None) == 1:
            kernel, checked = self.kernel, _labels(host, shape, dtype, ranged=False)
        else:
            kernel, checked = self.check_target(host, shape, dtype)
        if checked is host and host is not target:
            # a device target that passed as it is: its checked copy need not go
            # back up (the check read it down; that wait stays)
            try:
                return kernel, backend.batch(target, "target", host.dtype, host.ndim)
            except ValueError:          # (not C-contiguous: the checked copy goes up)
                pass
        return kernel, backend.stage(checked, self, "target")

    def __call__(self, output, target):
        return self.forward(output, target)

    def _forward_numpy(self, backend, out, target):
        host = out if isinstance(out, np.ndarray) else backend.to_numpy(out)
        value, grad = self.value_and_grad(host, target)
        grad = np.asarray(grad)
        if grad.shape != host.shape:
            raise ValueError(f"{type(self).__name__}.value_and_grad returned a gradient "
                             f"of shape {grad.shape}; expected the output's "
                             f"{host.shape}")
        self._grad = np.ascontiguousarray(grad, dtype=host.dtype)
        return float(value)

    def _grad_buffer(self, backend, out):
        g = self._grad
        # a new buffer also when ``out`` is (a view of) the last gradient, as in
        # loss.forward(loss.backward(), y): the kernel would write what it reads
        if g is None or g.shape != out.shape or g.dtype != out.dtype \
                or not backend.is_array(g) or backend.aliases(out, g):
            g = self._grad = backend.empty(out.shape, out.dtype)
        return g

    def accumulate(self, backend, out, target, sums, weight, rule=None):
        """``fit``'s and ``evaluate``'s hook, for a model output ``out`` on
        ``backend`` and a slice of targets that :meth:`prepare_target` validated:
        compute the loss and its gradient (for :meth:`backward`), add ``weight``
        times the value into ``sums[0]`` and, with an accuracy ``rule``
        (``specs.Argmax``/``specs.Threshold``), the correct predictions into
        ``sums[1]``; return how many predictions were judged.  ``sums`` comes from
        :meth:`sums`.  A fused loss does it all on ``backend`` (no device sync);
        any other calls :meth:`forward` and adds on the host."""
        if not self._fused:
            sums[0] += weight * self.forward(out, target)
            if rule is None:
                return 0
            host = get_backend("numpy")
            return host.count_correct(rule, backend.to_numpy(out),
                                      backend.to_numpy(target), sums, 1)
        self._check_output(backend, out)
        grad = self._grad_buffer(backend, out)
        return backend.loss_sum(target_kernel(self, target), out,
                                backend.stage(target, self, "target"), grad, self.param,
                                self._norm(out.shape), sums, weight, rule)

    def sums(self, backend):
        """The accumulator :meth:`accumulate` adds into: ``backend.sums(2)`` for a fused
        loss (device memory on the cuda backend), else host zeros."""
        return backend.sums(2) if self._fused else np.zeros(2)

    def backward(self):
        """d(loss)/d(output) of the last forward."""
        if self._grad is None:
            raise RuntimeError("backward called before forward")
        return self._grad

    def config(self):
        """The loss as plain values (what a model file stores), or None for a custom
        loss (not saved: give it again to ``evaluate`` after ``load``)."""
        if type(self) is not LOSS_CLASSES.get(self.kernel):
            return None
        return {"type": self.kernel, "param": self.param if self.spec.param else None}

    def __repr__(self):
        return f"{type(self).__name__}()"


def target_kernel(loss, target):
    """The kernel of ``loss`` for a prepared target: its variant for class
    probabilities (2-D) where it has one."""
    variants = _VARIANTS[loss.kernel]
    return variants[0].name if variants and target.ndim == 2 else loss.kernel


class MSELoss(Loss):
    """mean((output - target)^2) over all elements."""
    kernel = "mse"


class L1Loss(Loss):
    """mean(|output - target|) over all elements."""
    kernel = "l1"


class HuberLoss(Loss):
    """0.5 d^2 where |d| < delta, else delta (|d| - delta/2); mean over all elements."""
    kernel = "huber"

    def __init__(self, delta=1.0, backend=None):
        super().__init__(backend)
        self.param = _checks.real_number(delta, "delta", minimum=0.0, strict=True)

    def __repr__(self):
        return f"HuberLoss(delta={self.param})"


class BCELoss(Loss):
    """Binary cross-entropy of probabilities ``output`` in [0, 1] against targets in
    [0, 1]; log terms clamped at -100 as in PyTorch.  Prefer BCEWithLogitsLoss (on the
    cuda backend, checking that outputs are probabilities reads them back per batch)."""
    kernel = "bce"


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits: max(x, 0) - x t + log(1 + exp(-|x|)), stable for
    any logit; mean over all elements."""
    kernel = "bce_with_logits"


class HingeLoss(Loss):
    """mean(max(0, 1 - y s)) with labels y in {-1, +1}."""
    kernel = "hinge"


class KLDivLoss(Loss):
    """KL divergence, PyTorch's ``reduction='batchmean'``: ``output`` holds
    log-probabilities, ``target`` probabilities; sum(t (log t - output)) / batch."""
    kernel = "kl_div"


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy from logits (batch, classes), mean over the batch.
    ``target`` is either integer class labels (batch,) in [0, classes), or class
    probabilities of the logits' shape and dtype."""
    kernel = "cross_entropy"


_missing = set(specs.LOSSES) - set(LOSS_CLASSES)
assert not _missing, f"no Loss class for the registry's losses {sorted(_missing)}"
# (fastnn exports all of these: a new loss class needs no edit there)
__all__ = ["LOSSES", "Loss", "get_loss", *(c.__name__ for c in LOSS_CLASSES.values())]


def get_loss(loss, backend=None):
    """A Loss instance from an instance (returned as is) or a name in ``LOSSES`` (any
    case)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        raise TypeError(f"loss must be a Loss instance or a name, got the class "
                        f"{loss.__name__}: pass {loss.__name__}() (an instance)")
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a Loss instance or one of {tuple(LOSSES)}, got "
                        f"{type(loss).__name__}")
    name = specs.lookup(LOSSES, loss, "loss")
    return LOSS_CLASSES[name](backend=backend)
