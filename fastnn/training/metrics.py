"""A model's loss and accuracy on data: ``evaluate``, fit's validation metrics, and
``predict``.

The accuracy of a classification loss is the rule its registry entry names
(``fastnn.kernels.specs``): the argmax of a row against the label (or the target
probabilities' argmax) for cross-entropy; for the binary losses every element,
(output > cut) == (target > cut), with the cuts of the loss (0 for logits and hinge
scores, 0.5 for probabilities)."""
import numpy as np

from .. import _checks
from ..losses import get_loss
from .data import features


def accuracy_rule(loss_fn):
    """The loss's accuracy rule (``specs.Argmax``/``specs.Threshold``), or None for a
    regression or custom loss."""
    return None if loss_fn.spec is None else loss_fn.spec.accuracy


def measure(model, X, target, loss_fn, batch_size):
    """(mean loss, accuracy or None) of ``model`` on ``X`` and ``target`` (prepared by
    ``loss_fn.prepare_target``), in batches; the data go to the backend once and the
    sums come back once.  Through the calling thread's inference plans: the last
    ``forward``'s state, which ``backward`` needs, is left alone."""
    rule = accuracy_rule(loss_fn)
    b = model.backend
    X, target = b.dataset(X, target)
    n = X.shape[0]
    sums = loss_fn.sums(b)
    counted = 0
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        out = model._infer(X[lo:hi])
        counted += loss_fn.accumulate(b, out, target[lo:hi], sums, hi - lo, rule)
    total, correct = b.to_numpy(sums)
    return float(total) / n, (float(correct) / counted if counted else None)


def predict(model, X, batch_size=1024):
    """The model's outputs for ``X`` (any real array-like, converted once to the
    model's dtype), computed ``batch_size`` rows at a time: a NumPy array of shape
    (samples, out_features)."""
    batch_size = _checks.positive_int(batch_size, "batch_size")
    X = features(X, model)
    out = np.empty((X.shape[0], model.out_features), model.dtype)
    for lo in range(0, X.shape[0], batch_size):
        hi = min(lo + batch_size, X.shape[0])
        out[lo:hi] = model.to_numpy(model._infer(X[lo:hi]))
    return out


def evaluate(model, X, y, loss=None, batch_size=1024):
    """``{"loss": mean loss, "accuracy": ...}`` of the model on (X, y); accuracy only
    for classification losses.  ``loss`` defaults to the model's (the last fit's, or
    the one saved with the model)."""
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError("loss is needed: pass loss= (a Loss or a name), or fit "
                             "first")
    loss_fn = get_loss(loss)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    X = features(X, model)
    _, target = loss_fn.prepare_target(y, X.shape[0], model.out_features, model.dtype)
    value, acc = measure(model, X, target, loss_fn, batch_size)
    return {"loss": value} if acc is None else {"loss": value, "accuracy": acc}
