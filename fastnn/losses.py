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

    def _check_target(self, out, target):
        """Validate ``target`` against ``out``; return (kernel name, target array)."""
        target = _checks.batch_array(target, "target", out.dtype, ndim=out.ndim)
        if target.shape != out.shape:
            raise ValueError(f"target must have the output's shape {out.shape}, got "
                             f"{target.shape} (nothing is broadcast)")
        return self.name, target

    def forward(self, output, target):
        """The mean loss of ``output`` (batch, k) against ``target``; keeps the
        gradient for :meth:`backward`."""
        if not isinstance(output, np.ndarray):
            raise TypeError(f"output must be a numpy.ndarray, got {type(output).__name__}")
        out = _checks.batch_array(output, "output", _checks.dtype_of(output.dtype,
                                                                      "output dtype"))
        if isinstance(target, np.ndarray) and target.ndim >= 1 \
                and target.shape[0] != out.shape[0]:
            raise ValueError(f"output has {out.shape[0]} rows but target has "
                             f"{target.shape[0]}: batch sizes must match")
        kernel, target = self._check_target(out, target)
        if self._grad is None or self._grad.shape != out.shape \
                or self._grad.dtype != out.dtype:
            self._grad = self.backend.empty(out.shape, out.dtype)
        norm = 1.0 / (out.size if self.mean_over == "elements" else out.shape[0])
        return self.backend.loss(kernel, out, target, self._grad, self.param, norm)

    __call__ = forward

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

    def _check_target(self, out, target):
        kernel, target = super()._check_target(out, target)
        _values_in(out, "output (probabilities)", 0, 1)
        _values_in(target, "target", 0, 1)
        return kernel, target


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits: max(x, 0) - x t + log(1 + exp(-|x|)), stable for
    any logit; mean over all elements."""
    name = "bce_logits"


class HingeLoss(Loss):
    """mean(max(0, 1 - y s)) with labels y in {-1, +1}."""
    name = "hinge"

    def _check_target(self, out, target):
        kernel, target = super()._check_target(out, target)
        if not np.all((target == 1) | (target == -1)):
            raise ValueError("target must hold only -1 and +1 for HingeLoss")
        return kernel, target


class KLDivLoss(Loss):
    """KL divergence, PyTorch's ``reduction='batchmean'``: ``output`` holds
    log-probabilities, ``target`` probabilities; sum(t (log t - output)) / batch."""
    name = "kl_div"
    mean_over = "batch"

    def _check_target(self, out, target):
        kernel, target = super()._check_target(out, target)
        if not np.all(target >= 0):
            raise ValueError("target must hold probabilities (>= 0) for KLDivLoss")
        return kernel, target


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy from logits (batch, classes), mean over the batch.
    ``target`` is either integer class labels (batch,) in [0, classes), or class
    probabilities of the logits' shape and dtype."""
    name = "cross_entropy"
    mean_over = "batch"

    def _check_target(self, out, target):
        if isinstance(target, np.ndarray) and target.ndim == 2:
            kernel, target = super()._check_target(out, target)
            if not np.all(target >= 0):
                raise ValueError("target probabilities must be >= 0")
            return "cross_entropy_probs", target
        if not isinstance(target, np.ndarray) or target.ndim != 1:
            raise ValueError("target must be integer labels of shape (batch,) or "
                             "probabilities of shape (batch, classes), got "
                             f"{getattr(target, 'shape', type(target).__name__)}")
        if target.dtype.kind not in "iu":
            raise TypeError(f"target labels must be integers, got dtype {target.dtype}")
        classes = out.shape[1]
        if target.size and (target.min() < 0 or target.max() >= classes):
            raise ValueError(f"target labels must lie in [0, {classes}), got values in "
                             f"[{target.min()}, {target.max()}]")
        return "cross_entropy", target.astype(np.intp, copy=False)


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
