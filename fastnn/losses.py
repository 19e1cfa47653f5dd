"""Loss functions: value and gradient computed together, in one pass, by the backend.

Definitions and mean reductions follow PyTorch's.  ``forward(output, target)`` returns
the loss as a Python float and keeps d(loss)/d(output); ``backward()`` returns it (a
backend array of the output's shape, overwritten by the next forward)."""
import numpy as np

from . import _checks
from .backends import DEFAULT, get_backend


class Loss:
    """Base class.  ``backend`` is the backend that computes the loss (default: the cpu
    backend; ``fit`` uses the model's)."""
    name = None            # the backend's kernel name
    mean_over = "elements"  # PyTorch's reduction: all elements, or the batch

    def __init__(self, backend=DEFAULT):
        self.backend = get_backend(backend)
        self.param = 0.0
        self._grad = None
        self.staged = {}     # a device backend's copies of host targets

    def check_target(self, target, shape, dtype):
        """Validate ``target`` for outputs of ``shape`` and ``dtype``; return (kernel
        name, target array).  No conversion: see :meth:`prepare_target`."""
        target = _checks.batch_array(target, "target", dtype, ndim=len(shape))
        if target.shape != tuple(shape):
            raise ValueError(f"target must have the output's shape {tuple(shape)}, got "
                             f"{target.shape} (nothing is broadcast)")
        return self.name, target

    def _check_output(self, out):
        """Checks on the model's output itself (BCE: probabilities)."""

    def prepare_target(self, y, rows, columns, dtype):
        """Convert a whole data set's targets (any real array-like) once to what
        :meth:`check_target` accepts, and validate every value: what ``fit`` does
        before training.  A 1-D ``y`` is taken as one column when the model has one
        output.  Returns (kernel name, target array), as :meth:`check_target`."""
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"y must hold real numbers, got dtype {y.dtype}")
        if y.ndim == 1 and columns == 1:
            y = y.reshape(-1, 1)
        y = np.ascontiguousarray(y, dtype=dtype)
        if not _checks.all_finite(y):
            raise ValueError("y contains NaN or inf")
        return self.check_target(y, (rows, columns), dtype)

    def forward(self, output, target):
        """The mean loss of ``output`` (batch, k) against ``target``; keeps the
        gradient for :meth:`backward`.  Returns a Python float (on the cuda backend
        that waits for the GPU: ``fit`` accumulates on the device instead).  Targets
        are validated on the host: a device-array target is copied down for that."""
        b = self.backend
        if not (b.is_array(output) or isinstance(output, np.ndarray)):
            raise TypeError(f"output must be an array of the {b.name} backend (a "
                            f"model's forward output), got {type(output).__name__}")
        dtype = _checks.dtype_of(output.dtype, "output dtype")
        out = b.batch(output, "output", dtype)
        if b.is_array(target) and not isinstance(target, np.ndarray):
            target = b.to_numpy(target)
        if isinstance(target, np.ndarray) and target.ndim >= 1 \
                and target.shape[0] != out.shape[0]:
            raise ValueError(f"output has {out.shape[0]} rows but target has "
                             f"{target.shape[0]}: batch sizes must match")
        kernel, target = self.check_target(target, tuple(out.shape), out.dtype)
        return self._forward_prepared(kernel, b.stage(out, self, "output"), target)

    __call__ = forward

    def _prepared(self, out, target):
        """The gradient buffer for ``out`` and ``target`` where the kernels read it."""
        self._check_output(out)
        if self._grad is None or self._grad.shape != out.shape \
                or self._grad.dtype != out.dtype:
            self._grad = self.backend.empty(out.shape, out.dtype)
        norm = 1.0 / (out.size if self.mean_over == "elements" else out.shape[0])
        return self.backend.stage(target, self, "target"), norm

    def _forward_prepared(self, kernel, out, target):
        """:meth:`forward` for a model output and a slice of targets that
        :meth:`prepare_target` already validated: the output is still checked, the
        targets not again."""
        target, norm = self._prepared(out, target)
        return self.backend.loss(kernel, out, target, self._grad, self.param, norm)

    def _accumulate(self, kernel, out, target, sums, weight, rule=None):
        """As :meth:`_forward_prepared`, adding ``weight`` times the loss into
        ``sums[0]`` (a backend accumulator: no device sync) instead of returning it,
        and with an accuracy ``rule`` the correct predictions into ``sums[1]``;
        returns how many predictions were judged.  ``fit``'s inner loop."""
        target, norm = self._prepared(out, target)
        return self.backend.loss_sum(kernel, out, target, self._grad, self.param, norm,
                                     sums, weight, rule)

    def backward(self):
        """d(loss)/d(output) of the last forward."""
        if self._grad is None:
            raise RuntimeError("backward called before forward")
        return self._grad

    def __repr__(self):
        return f"{type(self).__name__}()"


def _values_in(target, argname, lo, hi):
    if not (np.all(target >= lo) and np.all(target <= hi)):
        raise ValueError(f"{argname} must lie in [{lo}, {hi}]")


class MSELoss(Loss):
    """mean((output - target)^2) over all elements."""
    name = "mse"


class L1Loss(Loss):
    """mean(|output - target|) over all elements."""
    name = "l1"


class HuberLoss(Loss):
    """0.5 d^2 where |d| < delta, else delta (|d| - delta/2); mean over all elements."""
    name = "huber"

    def __init__(self, delta=1.0, backend=DEFAULT):
        super().__init__(backend)
        self.param = _checks.real_number(delta, "delta", minimum=0.0, strict=True)

    def __repr__(self):
        return f"HuberLoss(delta={self.param})"


class BCELoss(Loss):
    """Binary cross-entropy of probabilities ``output`` in [0, 1] against targets in
    [0, 1]; log terms clamped at -100 as in PyTorch.  Prefer BCEWithLogitsLoss."""
    name = "bce"

    def _check_output(self, out):
        # (on the cuda backend this reads the output back: a sync per batch; prefer
        # BCEWithLogitsLoss, which needs no check)
        _values_in(self.backend.to_numpy(out) if not isinstance(out, np.ndarray)
                   else out, "output (probabilities)", 0, 1)

    def check_target(self, target, shape, dtype):
        kernel, target = super().check_target(target, shape, dtype)
        _values_in(target, "target", 0, 1)
        return kernel, target


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits: max(x, 0) - x t + log(1 + exp(-|x|)), stable for
    any logit; mean over all elements."""
    name = "bce_logits"


class HingeLoss(Loss):
    """mean(max(0, 1 - y s)) with labels y in {-1, +1}."""
    name = "hinge"

    def check_target(self, target, shape, dtype):
        kernel, target = super().check_target(target, shape, dtype)
        if not np.all((target == 1) | (target == -1)):
            raise ValueError("target must hold only -1 and +1 for HingeLoss")
        return kernel, target


class KLDivLoss(Loss):
    """KL divergence, PyTorch's ``reduction='batchmean'``: ``output`` holds
    log-probabilities, ``target`` probabilities; sum(t (log t - output)) / batch."""
    name = "kl_div"
    mean_over = "batch"

    def check_target(self, target, shape, dtype):
        kernel, target = super().check_target(target, shape, dtype)
        if not np.all(target >= 0):
            raise ValueError("target must hold probabilities (>= 0) for KLDivLoss")
        return kernel, target


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy from logits (batch, classes), mean over the batch.
    ``target`` is either integer class labels (batch,) in [0, classes), or class
    probabilities of the logits' shape and dtype."""
    name = "cross_entropy"
    mean_over = "batch"

    def check_target(self, target, shape, dtype):
        if isinstance(target, np.ndarray) and target.ndim == 2:
            kernel, target = super().check_target(target, shape, dtype)
            if not np.all(target >= 0):
                raise ValueError("target probabilities must be >= 0")
            return "cross_entropy_probs", target
        if not isinstance(target, np.ndarray) or target.ndim != 1:
            raise ValueError("target must be integer labels of shape (batch,) or "
                             "probabilities of shape (batch, classes), got "
                             f"{getattr(target, 'shape', type(target).__name__)}")
        if target.dtype.kind not in "iu":
            raise TypeError(f"target labels must be integers, got dtype {target.dtype}")
        if target.shape[0] != shape[0]:
            raise ValueError(f"target must hold {shape[0]} labels, got {target.shape[0]}")
        classes = shape[1]
        if target.size and (target.min() < 0 or target.max() >= classes):
            raise ValueError(f"target labels must lie in [0, {classes}), got values in "
                             f"[{target.min()}, {target.max()}]")
        return "cross_entropy", target.astype(np.intp, copy=False)

    def prepare_target(self, y, rows, columns, dtype):
        """Class labels (1-D, integer-valued: converted exactly to integers) or class
        probabilities (2-D, converted to ``dtype``)."""
        y = np.asarray(y)
        if y.ndim == 2:
            return super().prepare_target(y, rows, columns, dtype)
        if y.ndim == 1 and y.dtype.kind in "fiub":
            y = _checks.exact_cast(y, np.intp, "y (class labels)")
        return self.check_target(y, (rows, columns), dtype)


LOSSES = {
    "mse": MSELoss, "l1": L1Loss, "huber": HuberLoss, "bce": BCELoss,
    "bce_with_logits": BCEWithLogitsLoss, "cross_entropy": CrossEntropyLoss,
    "hinge": HingeLoss, "kl_div": KLDivLoss,
}


def get_loss(loss, backend=DEFAULT):
    """A Loss instance from an instance or a name in ``LOSSES``."""
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected a Loss or one of "
                         f"{tuple(LOSSES)}")
    return LOSSES[loss](backend=backend)
