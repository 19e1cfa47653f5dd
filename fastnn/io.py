"""Saving and loading models: ``save(model, path)`` and ``load(path)``.

The file (one ``.npz`` of plain numeric arrays, never a pickle) is described in
:mod:`fastnn.fileformat`, which writes and reads it; a model writes itself
(``Sequential.save``), and :func:`load` rebuilds one: the architecture, the weights,
the optimizer with its state (so training resumes exactly) and the loss (so
``evaluate`` works without naming it again).
"""
import os

import numpy as np

from .backends import DEFAULT, get_backend
from .fileformat import (METADATA, OPTIM_PREFIX, PARAM_PREFIX, ModelFileError, checked,
                         read, refuse)
from .layers import Dense
from .losses import get_loss
from .model import Sequential
from .optim import OPTIMIZERS, get_optimizer

__all__ = ["save", "load", "ModelFileError"]


def save(model, path, include_optimizer=True):
    """Write ``model`` (a :class:`fastnn.Sequential`) to ``path``: see
    :meth:`fastnn.Sequential.save`."""
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastnn.Sequential, got "
                        f"{type(model).__name__}")
    model.save(path, include_optimizer=include_optimizer)


def load(path, backend=None):
    """Rebuild the :class:`fastnn.Sequential` saved at ``path`` by ``save``.

    The model is built on ``backend`` (default ``"cpu"``; the backend it was saved
    from is informational) with the saved dtype and weights.  If the file holds an
    optimizer, it is rebuilt with its saved hyper-parameters and state (step counter,
    moment buffers, ...) and set as ``model.optimizer``, so training resumes exactly
    (``fit`` continues with it); a built-in loss is restored as ``model.loss``.

    Nothing is unpickled.  A file that is not a fastnn model file, or a damaged one,
    raises :class:`ModelFileError` (a ``ValueError``) naming the file and what is
    wrong: no zip archive / truncated, missing or invalid metadata, unknown format
    version, missing or unexpected arrays, wrong shapes or dtypes, object arrays,
    NaN/inf, unknown activation or init names, invalid optimizer state.  A missing
    file raises ``FileNotFoundError``.
    """
    path = os.fsdecode(os.fspath(path))
    # The caller's own argument: its errors are not about the file.
    backend = get_backend(DEFAULT if backend is None else backend)
    meta, arrays = read(path)
    model = _build_model(path, meta, backend)
    param_names = [PARAM_PREFIX + p.name for p in model.parameters()]
    opt_meta = meta.get("optimizer")
    optim_names = [OPTIM_PREFIX + k for k in opt_meta["state"]] if opt_meta else []

    missing = [n for n in param_names + optim_names if n not in arrays]
    if missing:
        raise refuse(path, f"missing arrays {missing} (the architecture and optimizer "
                            f"in its metadata need {param_names + optim_names})")
    extra = sorted(set(arrays) - {METADATA, *param_names, *optim_names})
    if extra:
        raise refuse(path, f"unexpected arrays {extra}; expected only {METADATA!r}, "
                            f"{param_names + optim_names}")

    weights = []
    for p, name in zip(model.parameters(), param_names):
        weights.append(checked(path, name, arrays[name], model.dtype, p.shape))
    model.set_weights(weights)
    if opt_meta:
        model.optimizer = _build_optimizer(path, model, opt_meta, arrays)
    if meta.get("loss"):
        model.loss = _build_loss(path, meta["loss"])
    return model


def _build_model(path, meta, backend):
    try:
        layers = [Dense(s["in_features"], s["out_features"], activation=s["activation"],
                        init=s["init"]) for s in meta["layers"]]
        # seed=0: the initial weights are overwritten; no need to draw OS entropy.
        return Sequential(*layers, backend=backend, dtype=np.dtype(meta["dtype"]),
                          seed=0)
    except (TypeError, ValueError) as exc:
        raise refuse(path, f"invalid architecture in its metadata: {exc}") from exc


def _build_optimizer(path, model, opt_meta, arrays):
    """The saved optimizer, rebuilt on ``model`` with its state restored."""
    name = opt_meta["type"]
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise refuse(path, f"unknown optimizer type {name!r}; expected one of "
                            f"{sorted(c.__name__ for c in OPTIMIZERS.values())}")
    hyper = opt_meta["hyper"]
    if not isinstance(hyper, dict):
        raise refuse(path, f"optimizer 'hyper' must be an object, got {hyper!r}")
    # JSON has no tuples: betas come back as a list.
    hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}
    state = {}
    for k in opt_meta["state"]:
        arr = arrays[OPTIM_PREFIX + k]
        state[k] = checked(path, OPTIM_PREFIX + k, arr, model.dtype,
                           (model.num_parameters,))
    try:
        opt = get_optimizer(name.lower(), model, **hyper)
        opt.load_state_dict({"type": name, "version": opt_meta["version"],
                             "step": opt_meta["step"], "hyper": hyper, "state": state})
    except (TypeError, ValueError) as exc:
        raise refuse(path, f"invalid optimizer state: {exc}") from exc
    return opt


def _build_loss(path, loss_meta):
    """The saved built-in loss (its name and parameter were checked by ``read``)."""
    try:
        loss = get_loss(loss_meta["type"])
        if loss_meta["param"] is not None:
            loss = type(loss)(loss_meta["param"])
    except (TypeError, ValueError) as exc:
        raise refuse(path, f"invalid loss: {exc}") from exc
    return loss
