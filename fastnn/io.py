"""Saving and loading models: one ``.npz`` file of plain numeric arrays, never a pickle.

The file is a NumPy ``.npz`` archive (a zip of ``.npy`` members) holding:

- ``metadata``: a 1-D ``uint8`` array, the UTF-8 bytes of a JSON object::

      {"format": "fastnn-model", "version": 1,
       "fastnn_version": "0.1.0", "backend": "cpu",      # informational only
       "dtype": "float32",                                # or "float64"
       "layers": [{"type": "Dense", "in_features": 64, "out_features": 128,
                   "activation": "relu", "init": "he_normal"}, ...],
       "optimizer": null  or  {"type": "Adam", "version": 1, "step": 120,
                               "hyper": {"lr": 0.001, "betas": [0.9, 0.999], ...},
                               "state": ["exp_avg", "exp_avg_sq"]}}

- ``param/0.weight``, ``param/0.bias``, ``param/1.weight``, ...: the weights, named
  after ``model.parameters()``, of the model's dtype.
- ``optim/<name>`` for each name in ``optimizer.state`` (e.g. ``optim/exp_avg``): the
  optimizer's flat state buffers, of the model's dtype, shape ``(num_parameters,)``.

:func:`save` writes atomically (a temporary file in the same directory, fsync'ed, then
renamed onto the target), so the target name only ever holds a complete file.
:func:`load` reads with ``allow_pickle=False`` and checks everything before building
the model; a malformed file raises :class:`ModelFileError` (a ``ValueError``) that
names the file and what was expected.
"""
import json
import math
import os
import secrets
import zipfile
import zlib

import numpy as np

from . import _checks

from .activations import ACTIVATIONS, INITS
from .backends import DEFAULT, get_backend
from .layers import Dense, Sequential
from .optim import OPTIMIZERS, get_optimizer

FORMAT = "fastnn-model"
VERSION = 1

METADATA = "metadata"
PARAM_PREFIX = "param/"
OPTIM_PREFIX = "optim/"

_DTYPES = ("float32", "float64")
_LAYER_KEYS = {"type", "in_features", "out_features", "activation", "init"}
_OPTIM_KEYS = {"type", "version", "step", "hyper", "state"}
_REQUIRED_KEYS = {"format", "version", "dtype", "layers"}
_OPTIONAL_KEYS = {"fastnn_version", "backend", "optimizer"}
# A zip starts with a local file header, or (no members at all) the end record.
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}
# What reading a damaged zip / .npy member can raise (zlib: a corrupt deflate stream;
# RuntimeError/NotImplementedError: encrypted or unsupported zip members).
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
            RuntimeError, NotImplementedError)


class ModelFileError(ValueError):
    """A file that :func:`load` refuses: not a fastnn model file, or a damaged one."""


def _refuse(path, message):
    return ModelFileError(f"cannot load model file {path!r}: {message}")


# ---- saving ------------------------------------------------------------------------
def save(model, path, include_optimizer=True):
    """Write ``model`` (a :class:`fastnn.Sequential`) to ``path`` (str or os.PathLike).

    Stores the architecture, dtype and weights and, when ``include_optimizer`` and
    ``model.optimizer`` is set (``fit`` sets it), the optimizer's ``state_dict()``: see
    the module docstring for the layout.  The file is written under exactly the name
    given: no ``.npz`` is added (``"model.npz"`` is the conventional name).

    The write is atomic: a temporary file beside the target is written, flushed and
    fsync'ed, then renamed onto ``path`` with ``os.replace``.  If anything fails the
    temporary file is removed and the error re-raised; a file already at ``path``
    stays intact until the rename.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastnn.Sequential, got "
                        f"{type(model).__name__}")
    if not isinstance(include_optimizer, (bool, np.bool_)):
        raise TypeError(f"include_optimizer must be True or False, got "
                        f"{include_optimizer!r}")
    path = os.fsdecode(os.fspath(path))
    optimizer = model.optimizer if include_optimizer else None
    arrays = _model_arrays(model, optimizer)
    _write_atomically(path, arrays)


def _model_arrays(model, optimizer):
    """name -> array for every member of the file (metadata included)."""
    from . import __version__

    meta = {
        "format": FORMAT, "version": VERSION, "fastnn_version": __version__,
        "backend": model.backend.name, "dtype": model.dtype.name,
        "layers": [{"type": "Dense", "in_features": layer.in_features,
                    "out_features": layer.out_features, "activation": layer.activation,
                    "init": layer.init} for layer in model.layers],
        "optimizer": None,
    }
    arrays = {PARAM_PREFIX + p.name: w
              for p, w in zip(model.parameters(), model.get_weights())}
    if optimizer is not None:
        if getattr(optimizer, "model", None) is not model:
            raise ValueError("model.optimizer belongs to another model; pass "
                             "include_optimizer=False or set model.optimizer")
        sd = optimizer.state_dict()
        meta["optimizer"] = {"type": sd["type"], "version": sd["version"],
                             "step": sd["step"], "hyper": sd["hyper"],
                             "state": list(sd["state"])}
        arrays.update({OPTIM_PREFIX + k: v for k, v in sd["state"].items()})
    # load refuses non-finite values; refuse them here so that save never writes a
    # file that cannot be loaded.
    for name, arr in arrays.items():
        if not _checks.all_finite(arr):
            raise ValueError(f"cannot save: {name} contains NaN or inf")
    # allow_nan=False: the hyper-parameters are validated finite; JSON has no NaN.
    text = json.dumps(meta, allow_nan=False)
    arrays[METADATA] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return arrays


def _write_atomically(path, arrays):
    directory, base = os.path.split(os.path.abspath(path))
    tmp, fd = _create_temp(directory, base)
    try:
        with open(fd, "wb") as f:
            # A file object, not a name: np.savez would append ".npz" to a name.
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _create_temp(directory, base):
    """A new, empty temporary file beside the target: (its path, an open descriptor).

    Not ``tempfile.mkstemp``: that creates the file with mode 0600, which the rename
    would carry over to the saved model.  Mode 0666 here lets the umask decide, as
    for any ordinary file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {directory!r}")


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); a no-op where directories cannot be
    opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- loading -----------------------------------------------------------------------
def load(path, backend=None):
    """Rebuild the :class:`fastnn.Sequential` saved at ``path`` by :func:`save`.

    The model is built on ``backend`` (default ``"cpu"``; the backend it was saved
    from is informational) with the saved dtype and weights.  If the file holds an
    optimizer, it is rebuilt with its saved hyper-parameters and state (step counter,
    moment buffers, ...) and set as ``model.optimizer``, so training resumes exactly.

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
    arrays = _read_arrays(path)
    meta = _metadata(path, arrays)
    model = _build_model(path, meta, backend)
    param_names = [PARAM_PREFIX + p.name for p in model.parameters()]
    opt_meta = meta.get("optimizer")
    optim_names = [OPTIM_PREFIX + k for k in opt_meta["state"]] if opt_meta else []

    missing = [n for n in param_names + optim_names if n not in arrays]
    if missing:
        raise _refuse(path, f"missing arrays {missing} (the architecture and optimizer "
                            f"in its metadata need {param_names + optim_names})")
    extra = sorted(set(arrays) - {METADATA, *param_names, *optim_names})
    if extra:
        raise _refuse(path, f"unexpected arrays {extra}; expected only {METADATA!r}, "
                            f"{param_names + optim_names}")

    weights = []
    for p, name in zip(model.parameters(), param_names):
        weights.append(_checked(path, name, arrays[name], model.dtype, p.shape))
    model.set_weights(weights)
    if opt_meta:
        model.optimizer = _build_optimizer(path, model, opt_meta, arrays)
    return model


def _checked(path, name, arr, dtype, shape):
    """``arr`` if it has exactly ``dtype`` and ``shape`` and only finite values."""
    if arr.dtype != dtype:
        raise _refuse(path, f"array {name!r} has dtype {arr.dtype}; expected {dtype} "
                            f"(the model's dtype in its metadata)")
    if arr.shape != shape:
        raise _refuse(path, f"array {name!r} has shape {arr.shape}; the architecture "
                            f"in its metadata needs {shape}")
    if not _checks.all_finite(arr):
        raise _refuse(path, f"array {name!r} contains NaN or inf")
    return arr


def _read_arrays(path):
    """name -> array for every member of the archive at ``path``, read without ever
    unpickling."""
    with open(path, "rb") as f:            # a missing file: FileNotFoundError, as is
        # Checked first so that np.load's other branches (a bare .npy, a pickle) are
        # never even considered.
        if f.read(4) not in _ZIP_SIGNATURES:
            raise _refuse(path, "not a .npz (zip) archive; expected a file written by "
                                "fastnn.save")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as zf:
                arrays = {}
                for info in zf.infolist():
                    if not info.filename.endswith(".npy"):
                        raise _refuse(path, f"member {info.filename!r} is not a .npy "
                                            f"array")
                    name = info.filename[:-len(".npy")]
                    if name in arrays:
                        raise _refuse(path, f"array {name!r} appears twice")
                    arrays[name] = _read_member(path, zf, info, name)
                return arrays
        except ModelFileError:
            raise
        except _CORRUPT as exc:
            raise _refuse(path, f"truncated or corrupt archive "
                                f"({type(exc).__name__}: {exc})") from exc


def _read_member(path, zf, info, name):
    """One ``.npy`` member: its header is read first, so that an object array is
    refused before its data (a pickle) is touched, and a header that promises more
    data than the member holds allocates nothing."""
    with zf.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        read_header = _HEADER_READERS.get(version)
        if read_header is None:
            raise _refuse(path, f"array {name!r} uses .npy format version {version}; "
                                f"expected 1.0 or 2.0")
        shape, _, dtype = read_header(fp)
    if dtype.hasobject:
        raise _refuse(path, f"array {name!r} holds Python objects (dtype {dtype}); a "
                            f"fastnn model file holds only numeric arrays and is never "
                            f"unpickled")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > info.file_size:
        raise _refuse(path, f"array {name!r} declares {nbytes} bytes of data but its "
                            f"member holds {info.file_size}: truncated or corrupt")
    with zf.open(info) as fp:
        return np.lib.format.read_array(fp, allow_pickle=False)


def _metadata(path, arrays):
    """The parsed and checked JSON metadata."""
    if METADATA not in arrays:
        raise _refuse(path, f"no {METADATA!r} array; not a file written by fastnn.save")
    raw = arrays[METADATA]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _refuse(path, f"{METADATA!r} must be a 1-D uint8 array (UTF-8 JSON), got "
                            f"dtype {raw.dtype} and shape {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(path, f"{METADATA!r} is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise _refuse(path, f"metadata format is {got!r}; expected {FORMAT!r}")
    version = meta.get("version")
    if version != VERSION or isinstance(version, bool) or not isinstance(version, int):
        raise _refuse(path, f"unknown format version {version!r}; this fastnn reads "
                            f"version {VERSION}")
    keys = set(meta)
    if not _REQUIRED_KEYS <= keys or not keys <= _REQUIRED_KEYS | _OPTIONAL_KEYS:
        raise _refuse(path, f"metadata must have the fields {sorted(_REQUIRED_KEYS)} "
                            f"(and optionally {sorted(_OPTIONAL_KEYS)}), got "
                            f"{sorted(keys)}")
    if meta["dtype"] not in _DTYPES:
        raise _refuse(path, f"metadata dtype is {meta['dtype']!r}; expected one of "
                            f"{_DTYPES}")
    layers = meta["layers"]
    if not isinstance(layers, list) or not layers:
        raise _refuse(path, "metadata 'layers' must be a non-empty list")
    for i, spec in enumerate(layers):
        if not isinstance(spec, dict) or set(spec) != _LAYER_KEYS \
                or spec["type"] != "Dense":
            raise _refuse(path, f"layer {i} must be an object with the fields "
                                f"{sorted(_LAYER_KEYS)} and type 'Dense', got {spec!r}")
        # Names, not None: save always writes them out, and None would silently pick
        # a default.
        for field, names in (("activation", ACTIVATIONS), ("init", INITS)):
            if not isinstance(spec[field], str) or spec[field] not in names:
                raise _refuse(path, f"layer {i} has unknown {field} {spec[field]!r}; "
                                    f"expected one of {tuple(names)}")
    opt = meta.get("optimizer")
    if opt is not None:
        if not isinstance(opt, dict) or set(opt) != _OPTIM_KEYS:
            raise _refuse(path, f"metadata 'optimizer' must be null or an object with "
                                f"the fields {sorted(_OPTIM_KEYS)}")
        state = opt["state"]
        if not isinstance(state, list) or not all(isinstance(k, str) for k in state) \
                or len(set(state)) != len(state):
            raise _refuse(path, f"optimizer 'state' must be a list of distinct names, "
                                f"got {state!r}")
    return meta


def _build_model(path, meta, backend):
    try:
        layers = [Dense(s["in_features"], s["out_features"], activation=s["activation"],
                        init=s["init"]) for s in meta["layers"]]
        # seed=0: the initial weights are overwritten; no need to draw OS entropy.
        return Sequential(*layers, backend=backend, dtype=np.dtype(meta["dtype"]),
                          seed=0)
    except (TypeError, ValueError) as exc:
        raise _refuse(path, f"invalid architecture in its metadata: {exc}") from exc


def _build_optimizer(path, model, opt_meta, arrays):
    """The saved optimizer, rebuilt on ``model`` with its state restored."""
    name = opt_meta["type"]
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise _refuse(path, f"unknown optimizer type {name!r}; expected one of "
                            f"{sorted(c.__name__ for c in OPTIMIZERS.values())}")
    hyper = opt_meta["hyper"]
    if not isinstance(hyper, dict):
        raise _refuse(path, f"optimizer 'hyper' must be an object, got {hyper!r}")
    # JSON has no tuples: betas come back as a list.
    hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}
    state = {}
    for k in opt_meta["state"]:
        arr = arrays[OPTIM_PREFIX + k]
        state[k] = _checked(path, OPTIM_PREFIX + k, arr, model.dtype,
                            (model.num_parameters,))
    try:
        opt = get_optimizer(name.lower(), model, **hyper)
        opt.load_state_dict({"type": name, "version": opt_meta["version"],
                             "step": opt_meta["step"], "hyper": hyper, "state": state})
    except (TypeError, ValueError) as exc:
        raise _refuse(path, f"invalid optimizer state: {exc}") from exc
    return opt
