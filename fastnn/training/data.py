"""Data for ``fit``, ``evaluate`` and ``predict``: converting and checking a data set
once, holding out a validation split, and gathering shuffled batches."""
import numpy as np

from .. import _checks


def features(X, model, argname="X"):
    """``X`` (any real array-like) as a C-contiguous array of the model's dtype, the
    one conversion; its shape and values checked."""
    X = np.asarray(X)
    if X.dtype.kind not in "fiub":
        raise TypeError(f"{argname} must hold real numbers, got dtype {X.dtype}")
    if X.ndim != 2 or X.shape[1] != model.in_features or X.shape[0] < 1:
        raise ValueError(f"{argname} must have shape (samples, {model.in_features}) "
                         f"with at least one sample, got {X.shape}")
    X = np.ascontiguousarray(X, dtype=model.dtype)      # the one conversion
    if not _checks.all_finite(X):
        raise ValueError(f"{argname} contains NaN or inf")
    return X


def validation(model, loss_fn, X, target, validation_data, validation_split):
    """(X, target, X_val, target_val): the training arrays and the validation ones
    (None without validation), from X and the prepared ``target``."""
    if validation_data is not None and validation_split is not None:
        raise ValueError("give validation_data or validation_split, not both")
    if validation_split is not None:
        frac = _checks.real_number(validation_split, "validation_split", minimum=0.0,
                                   strict=True)
        n_val = int(X.shape[0] * frac)
        if frac >= 1.0 or n_val < 1 or n_val >= X.shape[0]:
            raise ValueError(f"validation_split must leave at least one sample on each "
                             f"side of a split of {X.shape[0]} samples, got {frac}")
        cut = X.shape[0] - n_val              # the last samples, before any shuffling
        return X[:cut], target[:cut], X[cut:], target[cut:]
    if validation_data is None:
        return X, target, None, None
    try:
        Xv, yv = validation_data
    except (TypeError, ValueError):
        raise ValueError("validation_data must be a pair (X_val, y_val)") from None
    Xv = features(Xv, model, "validation_data X")
    _, tv = loss_fn.prepare_target(yv, Xv.shape[0], model.out_features, model.dtype)
    return X, target, Xv, tv


class Gather:
    """Shuffled micro-batches gathered by the backend from the data set (on the
    device for the cuda backend: the data go up once per fit, the sample order once
    per epoch) into reusable buffers: no allocation per micro-batch."""

    def __init__(self, backend, X, y):
        self.backend, self.X, self.y, self.bufs = backend, X, y, {}
        self.order = None

    def epoch(self, order):
        """Set this epoch's sample order (a permutation, host array): it goes where
        the data set is."""
        self.order = order if isinstance(self.X, np.ndarray) \
            else self.backend.from_numpy(order)

    def __call__(self, lo, hi):
        k = hi - lo
        bufs = self.bufs.get(k)
        if bufs is None:
            if len(self.bufs) >= 4:
                self.bufs.pop(next(iter(self.bufs)))
            b = self.backend
            bufs = self.bufs[k] = (b.empty((k,) + tuple(self.X.shape[1:]), self.X.dtype),
                                   b.empty((k,) + tuple(self.y.shape[1:]), self.y.dtype))
        self.backend.gather(self.X, self.y, self.order[lo:hi], *bufs)
        return bufs
