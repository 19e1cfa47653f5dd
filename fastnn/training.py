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
import time

import numpy as np

from . import _checks
from .losses import get_loss
from .optim import LRScheduler, _clip_args, _clip_factor, get_optimizer


class History:
    """What ``fit`` records per epoch: ``history.history`` maps a metric name to a list
    with one value per epoch, read also as ``history["loss"]`` or ``history.loss``:

    - ``loss``: the mean training loss over the epoch's samples (each computed as the
      sample was trained on, so with the weights of that moment);
    - ``accuracy``: the same for classification losses (see ``ACCURACY``);
    - ``val_loss``, ``val_accuracy``: on the validation data after the epoch.

    ``history.epoch`` lists the epoch numbers (from 0)."""

    def __init__(self, metrics=("loss",)):
        self.history = {name: [] for name in metrics}
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
        last = {k: round(v[-1], 6) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


class Callback:
    """Hooks ``fit`` calls: ``on_train_begin(logs)`` (before the first epoch; raise
    here to refuse a configuration, the model is still untouched),
    ``on_epoch_end(epoch, logs)`` (``logs``: the epoch's metrics, e.g.
    ``{"loss": 0.31, "val_loss": 0.35}``) and ``on_train_end(logs)``.  ``self.model``
    is the model being trained and ``self.params`` holds ``epochs`` and ``metrics``
    (the names the logs will have); setting ``self.model.stop_training = True`` ends
    training after the current epoch."""
    model = None
    params = None

    def set_model(self, model):
        """Called by fit first: the model being trained."""
        self.model = model

    def set_params(self, params):
        """Called by fit next: ``{"epochs": ..., "metrics": [...]}``."""
        self.params = params

    def on_train_begin(self, logs=None):
        """Before the first epoch (the model is still untouched: raise to refuse)."""

    def on_epoch_end(self, epoch, logs=None):
        """After each epoch (from 0), with that epoch's metrics in ``logs``."""

    def on_train_end(self, logs=None):
        """After the last epoch, with its metrics in ``logs``."""


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs.  ``mode``: "min", "max" or "auto" (max for accuracies, min
    otherwise).  With ``restore_best_weights``, the weights of the best epoch are put
    back when training ends (whether it stopped early or ran all epochs); the
    optimizer's state is not rewound.  ``best``, ``best_epoch`` and ``stopped_epoch``
    (None when it never stopped) tell what happened."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a metric name, got {monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) \
                or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.patience = monitor, int(patience)
        self.min_delta = _checks.real_number(min_delta, "min_delta", minimum=0.0)
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.mode = mode
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, logs=None):
        metrics = (self.params or {}).get("metrics", ())
        if self.monitor not in metrics:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, but this fit "
                             f"reports {list(metrics)}" + (
                                 " (validation metrics need validation_data= or "
                                 "validation_split=)" if self.monitor.startswith("val_")
                                 else ""))
        self.best, self.best_epoch, self.stopped_epoch = None, None, None
        self._wait, self._best_weights = 0, None

    def _improved(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self._wait = value, epoch, 0
            if self.restore_best_weights:
                m = self.model
                self._best_weights = m.backend.to_numpy(m.flat_params)
            return
        self._wait += 1
        if self._wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self._best_weights is not None:
            m = self.model
            m.backend.from_numpy(self._best_weights, out=m.flat_params)

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, mode={self.mode!r}, "
                f"restore_best_weights={self.restore_best_weights})")


# Loss kernel name -> how a batch's predictions are judged, for the classification
# losses' accuracy metric (``Backend.count_correct``): the argmax against the label
# (or the target probabilities' argmax), or a threshold on both sides; multi-output
# binary losses count every element.
ACCURACY = {
    "cross_entropy": ("argmax",),
    "cross_entropy_probs": ("argmax",),
    "bce_logits": ("threshold", 0.0, 0.5),
    "bce": ("threshold", 0.5, 0.5),
    "hinge": ("threshold", 0.0, 0.0),
}


def _features(X, model, argname="X"):
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


class _Gather:
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


def _evaluate(model, X, prepared, loss_fn, batch_size):
    """(mean loss, accuracy or None) of ``model`` on ``X`` and ``prepared`` = (kernel,
    targets) from ``loss_fn.prepare_target``, in batches; the data go to the backend
    once and the sums come back once."""
    kernel, target = prepared
    rule = ACCURACY.get(kernel)
    b = model.backend
    X, target = b.dataset(X, target)
    n = X.shape[0]
    sums = b.sums(2)
    counted = 0
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        out = model.forward(X[lo:hi])
        counted += loss_fn._accumulate(kernel, out, target[lo:hi], sums, hi - lo, rule)
    total, correct = b.to_numpy(sums)
    return float(total) / n, (float(correct) / counted if counted else None)


def _validation(model, loss_fn, X, prepared, validation_data, validation_split):
    """(X, target, X_val, val): the training arrays and the validation ones, from X and
    ``prepared`` = (kernel, targets) of ``loss_fn.prepare_target`` (``val`` is such a
    pair too; both None without validation)."""
    kernel, target = prepared
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
        return X[:cut], target[:cut], X[cut:], (kernel, target[cut:])
    if validation_data is None:
        return X, target, None, None
    try:
        Xv, yv = validation_data
    except (TypeError, ValueError):
        raise ValueError("validation_data must be a pair (X_val, y_val)") from None
    Xv = _features(Xv, model, "validation_data X")
    return X, target, Xv, loss_fn.prepare_target(yv, Xv.shape[0], model.out_features,
                                                 model.dtype)


class _Progress:
    """One tqdm bar per epoch (batches done, the running loss, then the epoch's
    metrics); a no-op when disabled, so a silent fit pays nothing for it."""

    def __init__(self, enabled, epochs, batches):
        self.enabled, self.epochs, self.batches = enabled, epochs, batches
        self.bar = None

    def start(self, epoch):
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.batches, desc=f"epoch {epoch + 1}/{self.epochs}",
                            unit="batch", leave=True, dynamic_ncols=True,
                            mininterval=0.2)
            self._shown = time.monotonic()

    def batch_done(self, loss):
        """``loss()`` gives the running loss: called only when the bar is redrawn (on
        a GPU, reading it waits for the device)."""
        if self.bar is not None:
            now = time.monotonic()
            if now - self._shown > 0.2:         # formatting costs: not every batch
                self.bar.set_postfix_str(f"loss {loss():.4f}", refresh=False)
                self._shown = now
            self.bar.update(1)

    def end(self, logs):
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(f"{k} {v:.4f}" for k, v in logs.items()),
                                     refresh=True)
            self.bar.close()
            self.bar = None


def fit(model, X, y, *, loss, optimizer, epochs=1, batch_size=32, micro_batch_size=None,
        shuffle=True, seed=None, validation_data=None, validation_split=None,
        clip_grad_norm=None, norm_type=2.0, scheduler=None, scheduler_interval="epoch",
        callbacks=(), progress=True):
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
    if not isinstance(progress, (bool, np.bool_)):
        raise ValueError(f"progress must be True or False, got {progress!r}")
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
    kernel, target = loss_fn.prepare_target(y, X.shape[0], model.out_features,
                                            model.dtype)
    X, target, X_val, val = _validation(model, loss_fn, X, (kernel, target),
                                        validation_data, validation_split)
    n = X.shape[0]
    accuracy = ACCURACY.get(kernel)
    metrics = ["loss"] + (["accuracy"] if accuracy else [])
    if X_val is not None:
        metrics += ["val_" + name for name in metrics]

    history = History(metrics)
    model.stop_training = False
    params = {"epochs": epochs, "metrics": list(metrics)}
    for cb in callbacks:
        cb.set_model(model)
        cb.set_params(params)
        cb.on_train_begin({})                 # may still refuse: nothing changed yet
    model.optimizer, model.loss = opt, loss_fn
    rng = np.random.default_rng(seed)
    b = model.backend
    # The data go to the backend once (GPU memory for cuda, when they fit there; else
    # one batch at a time); per batch only kernels run, and the loss and accuracy add
    # up in ``sums`` there, read when the progress bar is redrawn and at the end of
    # each epoch.
    Xd, Td = b.dataset(X, target)
    if X_val is not None:
        X_val, val_target = b.dataset(X_val, val[1])
        val = (val[0], val_target)
    gather = _Gather(b, Xd, Td)
    bar = _Progress(progress, epochs, -(-n // batch_size))
    for epoch in range(epochs):
        if shuffle:
            gather.epoch(rng.permutation(n))
        sums = b.sums(2)                          # loss total, correct predictions
        counted = 0
        bar.start(epoch)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            rows = stop - start                   # the batch's true size
            opt.zero_grad()
            for lo in range(start, stop, micro_batch_size):
                hi = min(lo + micro_batch_size, stop)
                if shuffle:
                    xb, yb = gather(lo, hi)
                else:
                    xb, yb = Xd[lo:hi], Td[lo:hi]
                out = model.forward(xb)
                counted += loss_fn._accumulate(kernel, out, yb, sums, hi - lo, accuracy)
                model.backward(loss_fn.backward(), scale=(hi - lo) / rows)
            factor = None
            if clip_grad_norm is not None:
                _, factor = _clip_factor(model, clip_grad_norm, norm_type, False)
            opt._step(1.0 if factor is None else factor)
            if scheduler is not None and scheduler_interval == "batch":
                scheduler.step()
            # the epoch's running mean, read only when the bar is redrawn
            bar.batch_done(lambda: float(b.to_numpy(sums)[0]) / stop)
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        total, correct = b.to_numpy(sums)
        logs = {"loss": float(total) / n}
        if accuracy is not None:
            logs["accuracy"] = float(correct) / counted
        if X_val is not None:
            logs["val_loss"], val_acc = _evaluate(model, X_val, val, loss_fn,
                                                  micro_batch_size)
            if accuracy is not None:
                logs["val_accuracy"] = val_acc
        bar.end(logs)
        history.epoch.append(epoch)
        for name, value in logs.items():
            history.history[name].append(value)
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    for cb in callbacks:
        cb.on_train_end(logs)
    return history


def predict(model, X, batch_size=1024):
    """The model's outputs for ``X`` (any real array-like, converted once to the
    model's dtype), computed ``batch_size`` rows at a time: a NumPy array of shape
    (samples, out_features)."""
    batch_size = _checks.positive_int(batch_size, "batch_size")
    X = _features(X, model)
    out = np.empty((X.shape[0], model.out_features), model.dtype)
    for lo in range(0, X.shape[0], batch_size):
        hi = min(lo + batch_size, X.shape[0])
        out[lo:hi] = model.to_numpy(model.forward(X[lo:hi]))
    return out


def evaluate(model, X, y, loss=None, batch_size=1024):
    """``{"loss": mean loss, "accuracy": ...}`` of the model on (X, y); accuracy only
    for classification losses.  ``loss`` defaults to the last fit's."""
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError("loss is needed: pass loss= (a Loss or a name), or fit first")
    loss_fn = get_loss(loss, backend=model.backend)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    X = _features(X, model)
    prepared = loss_fn.prepare_target(y, X.shape[0], model.out_features, model.dtype)
    value, acc = _evaluate(model, X, prepared, loss_fn, batch_size)
    return {"loss": value} if acc is None else {"loss": value, "accuracy": acc}
