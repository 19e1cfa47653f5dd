"""``Sequential.fit``: mini-batch training with exact gradient accumulation.

Each batch of B samples is cut into micro-batches of at most ``micro_batch_size``
rows.  Micro-batch i (m_i rows) has its loss averaged over its own rows and is
back-propagated with ``scale = m_i / B``, so after the last one the gradient buffer
holds the mean gradient of the whole batch: the same update as the batch in one
piece, up to rounding (tested: 1e-12 relative in float64), while only m_i rows of
activations exist at a time.  The optimizer steps once per batch, so its step counter
(Adam's bias correction), weight decay, clipping and per-batch schedulers advance once
per real update, never per micro-batch.
"""
import numbers

import numpy as np

from . import _checks
from .losses import get_loss
from .optim import LRScheduler, _clip_args, _clip_factor, get_optimizer


class History:
    """What ``fit`` records per epoch: ``history.history`` maps a name (``"loss"``:
    the mean training loss over the epoch's samples, as computed during the epoch)
    to a list with one value per epoch; ``history["loss"]`` and ``history.loss`` read
    the same lists.  ``history.epoch`` lists the epoch numbers (from 0)."""

    def __init__(self):
        self.history = {"loss": []}
        self.epoch = []

    def __getitem__(self, key):
        return self.history[key]

    def __getattr__(self, key):
        history = self.__dict__.get("history", {})
        if key in history:
            return history[key]
        raise AttributeError(key)

    def __len__(self):
        return len(self.epoch)

    def __repr__(self):
        last = {k: v[-1] for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


class Callback:
    """Hooks ``fit`` calls: ``on_train_begin(logs)``, ``on_epoch_end(epoch, logs)``
    (``logs``: this epoch's values, e.g. ``{"loss": 0.31}``) and
    ``on_train_end(logs)``.  ``self.model`` is the model being trained; setting
    ``self.model.stop_training = True`` ends training after the current epoch."""
    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


def _features(X, model):
    X = np.asarray(X)
    if X.dtype.kind not in "fiub":
        raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
    if X.ndim != 2 or X.shape[1] != model.in_features or X.shape[0] < 1:
        raise ValueError(f"X must have shape (samples, {model.in_features}) with at "
                         f"least one sample, got {X.shape}")
    X = np.ascontiguousarray(X, dtype=model.dtype)      # the one conversion
    if not _checks.all_finite(X):
        raise ValueError("X contains NaN or inf")
    return X


class _Gather:
    """Reusable buffers for shuffled micro-batches (rows picked with np.take into
    them): no allocation per micro-batch, and only micro-batch-sized copies."""

    def __init__(self, X, y):
        self.X, self.y, self.bufs = X, y, {}

    def __call__(self, idx):
        k = len(idx)
        bufs = self.bufs.get(k)
        if bufs is None:
            if len(self.bufs) >= 4:
                self.bufs.pop(next(iter(self.bufs)))
            bufs = self.bufs[k] = (np.empty((k,) + self.X.shape[1:], self.X.dtype),
                                   np.empty((k,) + self.y.shape[1:], self.y.dtype))
        # mode="clip": the indices are a permutation's, always valid; the default
        # mode="raise" would gather into a hidden temporary first
        np.take(self.X, idx, axis=0, out=bufs[0], mode="clip")
        np.take(self.y, idx, axis=0, out=bufs[1], mode="clip")
        return bufs


def fit(model, X, y, *, loss, optimizer, epochs=1, batch_size=32, micro_batch_size=None,
        shuffle=True, seed=None, clip_grad_norm=None, norm_type=2.0, scheduler=None,
        scheduler_interval="epoch", callbacks=()):
    """Train ``model`` on (X, y); see :meth:`fastnn.Sequential.fit`."""
    # Everything is checked before the model changes.
    loss_fn = get_loss(loss, backend=model.backend)
    opt = get_optimizer(optimizer, model)
    epochs = _checks.positive_int(epochs, "epochs")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if micro_batch_size is None:
        micro_batch_size = batch_size
    micro_batch_size = _checks.positive_int(micro_batch_size, "micro_batch_size")
    if micro_batch_size > batch_size:
        raise ValueError(f"micro_batch_size ({micro_batch_size}) must not exceed "
                         f"batch_size ({batch_size})")
    if not isinstance(shuffle, (bool, np.bool_)):
        raise ValueError(f"shuffle must be True or False, got {shuffle!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or seed < 0):
        raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}")
    if clip_grad_norm is not None:
        clip_grad_norm, norm_type = _clip_args(clip_grad_norm, norm_type)
    if scheduler is not None:
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"scheduler must be a fastnn.optim scheduler, got "
                            f"{type(scheduler).__name__}")
        if scheduler.optimizer is not opt:
            raise ValueError("scheduler must drive this fit's optimizer (pass the "
                             "optimizer instance it was built on)")
    if scheduler_interval not in ("epoch", "batch"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'batch', got "
                         f"{scheduler_interval!r}")
    callbacks = list(callbacks or ())
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be fastnn.training.Callback instances, got "
                            f"{type(cb).__name__}")
    X = _features(X, model)
    n = X.shape[0]
    target = loss_fn.prepare_target(y, n, model.out_features, model.dtype)

    model.optimizer = opt
    history = History()
    rng = np.random.default_rng(seed)
    gather = _Gather(X, target)
    model.stop_training = False
    for cb in callbacks:
        cb.set_model(model)
        cb.on_train_begin({})
    for epoch in range(epochs):
        order = rng.permutation(n) if shuffle else None
        total = 0.0
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            rows = stop - start                   # the batch's true size
            opt.zero_grad()
            for lo in range(start, stop, micro_batch_size):
                hi = min(lo + micro_batch_size, stop)
                if order is None:
                    xb, yb = X[lo:hi], target[lo:hi]
                else:
                    xb, yb = gather(order[lo:hi])
                value = loss_fn.forward(model.forward(xb), yb)
                total += value * (hi - lo)
                model.backward(loss_fn.backward(), scale=(hi - lo) / rows)
            factor = None
            if clip_grad_norm is not None:
                _, factor = _clip_factor(model, clip_grad_norm, norm_type, False)
            opt._step(1.0 if factor is None else factor)
            if scheduler is not None and scheduler_interval == "batch":
                scheduler.step()
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        history.epoch.append(epoch)
        history.history["loss"].append(total / n)
        for cb in callbacks:
            cb.on_epoch_end(epoch, {"loss": total / n})
        if model.stop_training:
            break
    for cb in callbacks:
        cb.on_train_end({"loss": history.history["loss"][-1]})
    return history
