"""Training: ``Sequential.fit`` and what it reports.

- :mod:`.loop`: ``fit`` itself, the mini-batch loop with exact gradient accumulation
  (and ``loss_for``/``optimizer_for``, how fit and ``train_step`` pick the loss and
  the optimizer);
- :mod:`.callbacks`: ``History``, ``Callback``, ``EarlyStopping`` and the progress bar;
- :mod:`.metrics`: the loss and accuracy of a model on data (``evaluate``, ``predict``
  and fit's validation);
- :mod:`.data`: converting and checking data sets, gathering shuffled batches, the
  validation split.
"""
from .callbacks import METRICS, Callback, EarlyStopping, History
from .loop import fit, loss_for, optimizer_for
from .metrics import evaluate, predict

__all__ = ["fit", "evaluate", "predict", "History", "Callback", "EarlyStopping",
           "METRICS", "loss_for", "optimizer_for"]
