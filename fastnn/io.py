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
from .fileformat import OPTIM_PREFIX, PARAM_PREFIX, ModelFileError, read, refuse
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

    Nothing is unpickled, and the work is bounded by the file's real size: every
    array's name, dtype and shape is checked against the metadata (itself at most 1
    MiB, nested at most 16 deep) from the zip's directory and the ``.npy`` headers
    before anything is inflated, allocated or built (:func:`fastnn.fileformat.read`).
    A file that is not a fastnn model file, or a damaged one, raises
    :class:`ModelFileError` (a ``ValueError``) naming the file and what is wrong: not
    a regular file (a folder, a named pipe or a device: refused without blocking), no
    zip archive / truncated, sizes the file cannot hold, missing, oversized or invalid
    metadata, unknown format version, missing or unexpected arrays, wrong shapes or
    dtypes, object arrays, NaN/inf, unknown activation or init names, invalid
    optimizer state.  A missing file raises ``FileNotFoundError``.
    """
    path = os.fsdecode(os.fspath(path))
    # The caller's own argument: its errors are not about the file.
    backend = get_backend(DEFAULT if backend is None else backend)
    # Every array is checked against the metadata (names, dtypes, shapes, finite)
    # before the model is built: building it allocates what the metadata claims.
    meta, arrays = read(path)
    model = _build_model(path, meta, backend)
    model.set_weights([arrays[PARAM_PREFIX + p.name] for p in model.parameters()])
    if meta.get("optimizer"):
        model.optimizer = _build_optimizer(path, model, meta["optimizer"], arrays)
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
    state = {k: arrays[OPTIM_PREFIX + k] for k in opt_meta["state"]}
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
