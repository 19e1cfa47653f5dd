"""What ``fit`` reports while it trains: the per-epoch ``History``, the ``Callback``
hooks (``EarlyStopping``) and the progress bar."""
import numbers
import sys
import time

from .. import _checks

#: The metric names a fit can report (``accuracy`` for classification losses, the
#: ``val_`` ones with validation data).
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


class History:
    """What ``fit`` records per epoch: ``history.history`` maps a metric name to a list
    with one value per epoch, read also as ``history["loss"]`` or ``history.loss``:

    - ``loss``: the mean training loss over the epoch's samples (each computed as the
      sample was trained on, so with the weights of that moment);
    - ``accuracy``: the same for classification losses (the loss's accuracy rule in
      the registry: argmax, or thresholds for the binary losses);
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
    """Stop when ``monitor`` (one of :data:`METRICS`) has not improved by more than
    ``min_delta`` for ``patience`` epochs.  ``mode``: "min", "max" or "auto" (max for
    accuracies, min otherwise).  With ``restore_best_weights``, the weights of the best
    epoch are put back when training ends (whether it stopped early or ran all
    epochs); the optimizer's state is not rewound.  ``best``, ``best_epoch`` and
    ``stopped_epoch`` (None when it never stopped) tell what happened."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a metric name, got {monitor!r}")
        if monitor not in METRICS:
            raise ValueError(f"monitor must be one of {METRICS}, got {monitor!r}")
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


class _Stream:
    """The bars' stream (stderr), remembering whether its last line is still open
    (tqdm redraws a line with ``\r`` and ends it only when a bar closes)."""

    def __init__(self, inner):
        self.inner, self.line_open = inner, False

    def write(self, text):
        if text:
            self.line_open = not text.endswith("\n")
        return self.inner.write(text)

    def flush(self):
        return self.inner.flush()

    def __getattr__(self, name):
        return getattr(self.inner, name)


class Progress:
    """One tqdm bar per epoch on stderr: batches done, the running loss and the
    training rate in samples per second, then the epoch's metrics; a no-op when
    disabled, so a silent fit pays nothing for it.

    The rate is fastnn's own, samples trained over the time spent training this epoch
    (the validation pass after it excluded), not tqdm's, which would count batches
    of unequal sizes alike and include the validation time in the last reading."""
    # tqdm's layout without its own rate: ours is in the postfix
    _FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, enabled, epochs, batches):
        self.enabled, self.epochs, self.batches = enabled, epochs, batches
        self.bar = None
        self.stream = None

    def start(self, epoch):
        if self.enabled:
            from tqdm.auto import tqdm

            if self.stream is None or self.stream.inner is not sys.stderr:
                self.stream = _Stream(sys.stderr)
            self.bar = tqdm(total=self.batches, desc=f"epoch {epoch + 1}/{self.epochs}",
                            file=self.stream, unit="batch", leave=True,
                            dynamic_ncols=True, mininterval=0.2,
                            bar_format=self._FORMAT)
            self._t0 = self._shown = time.perf_counter()
            self._samples = 0
            self._train_s = None

    def rate(self):
        """Samples per second trained so far this epoch."""
        elapsed = (self._train_s if self._train_s is not None
                   else time.perf_counter() - self._t0)
        return self._samples / elapsed if elapsed > 0 else float("nan")

    def batch_done(self, samples, loss):
        """A batch of ``samples`` rows is done; ``loss()`` gives the running loss:
        called only when the bar is redrawn (on a GPU, reading it waits for the
        device)."""
        if self.bar is not None:
            self._samples += samples
            now = time.perf_counter()
            if now - self._shown > 0.2:         # formatting costs: not every batch
                self.bar.set_postfix_str(f"loss {loss():.4f}, {self.rate():,.0f} "
                                         "samples/s", refresh=False)
                self._shown = now
            self.bar.update(1)

    def training_done(self):
        """The epoch's training is over (validation follows): stop the rate's clock."""
        if self.bar is not None:
            self._train_s = time.perf_counter() - self._t0

    def end(self, logs):
        if self.bar is not None:
            if self._train_s is None:
                self.training_done()
            self.bar.set_postfix_str(", ".join(f"{k} {v:.4f}" for k, v in logs.items())
                                     + f", {self.rate():,.0f} samples/s", refresh=True)
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """End a bar cut short (an exception, Ctrl-C, even inside the bar's own
        drawing): its line is ended, so what is printed next starts on a line of
        its own."""
        if self.bar is not None:
            bar, self.bar = self.bar, None
            bar.close()
        if self.stream is not None and self.stream.line_open:
            self.stream.write("\n")
            self.stream.flush()
