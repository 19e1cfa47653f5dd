"""The model file: one ``.npz`` file of plain numeric arrays, never a pickle.  Writing
and reading it, with every check, here; what a model puts in it and how a model is
rebuilt from it: ``Sequential.save`` and :func:`fastnn.io.load`.

The file is a NumPy ``.npz`` archive (a zip of ``.npy`` members) holding:

- ``metadata``: a 1-D ``uint8`` array, the UTF-8 bytes of a JSON object::

      {"format": "fastnn-model", "version": 1,
       "fastnn_version": "0.1.0", "backend": "cpu",      # informational only
       "dtype": "float32",                                # or "float64"
       "layers": [{"type": "Dense", "in_features": 64, "out_features": 128,
                   "activation": "relu", "init": "he_normal"}, ...],
       "optimizer": null  or  {"type": "Adam", "version": 1, "step": 120,
                               "hyper": {"lr": 0.001, "betas": [0.9, 0.999], ...},
                               "state": ["exp_avg", "exp_avg_sq"]},
       "loss": null  or  {"type": "cross_entropy", "param": null}}   # optional

- ``param/0.weight``, ``param/0.bias``, ``param/1.weight``, ...: the weights, named
  after ``model.parameters()``, of the model's dtype.
- ``optim/<name>`` for each name in ``optimizer.state`` (e.g. ``optim/exp_avg``): the
  optimizer's flat state buffers, of the model's dtype, shape ``(num_parameters,)``.

:func:`write` writes atomically (a temporary file in the same directory, fsync'ed, then
renamed onto the target), so the target name only ever holds a complete file.
:func:`read` reads with ``allow_pickle=False`` and checks everything it can without
building the model; a malformed file raises :class:`ModelFileError` (a ``ValueError``)
that names the file and what was expected.
"""
import json
import math
import numbers
import os
import secrets
import zipfile
import zlib

import numpy as np

from . import _checks
from .activations import INITS
from .kernels.specs import ACTIVATIONS, LOSSES

FORMAT = "fastnn-model"
VERSION = 1

METADATA = "metadata"
PARAM_PREFIX = "param/"
OPTIM_PREFIX = "optim/"

_DTYPES = ("float32", "float64")
_LAYER_KEYS = {"type", "in_features", "out_features", "activation", "init"}
_OPTIM_KEYS = {"type", "version", "step", "hyper", "state"}
_REQUIRED_KEYS = {"format", "version", "dtype", "layers"}
_OPTIONAL_KEYS = {"fastnn_version", "backend", "optimizer", "loss"}
_LOSS_KEYS = {"type", "param"}
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


def refuse(path, message):
    return ModelFileError(f"cannot load model file {path!r}: {message}")


# ---- writing -----------------------------------------------------------------------
def write(path, arrays):
    """Write ``arrays`` (name -> array, ``METADATA`` included) to ``path`` atomically:
    a temporary file beside the target is written, flushed and fsync'ed, then renamed
    onto ``path`` with ``os.replace``.  If anything fails the temporary file is
    removed and the error re-raised (an OSError naming ``path``, not the temporary
    file); a file already at ``path`` stays intact until the rename."""
    directory, base = os.path.split(os.path.abspath(path))
    try:
        tmp, fd = _create_temp(directory, base)
    except OSError as exc:
        raise _about(exc, path) from exc
    try:
        with open(fd, "wb") as f:
            # A file object, not a name: np.savez would append ".npz" to a name.
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _about(exc, path) from exc
        raise
    _fsync_directory(directory)


def _about(exc, path):
    """The OSError ``exc`` as an error about the user's ``path`` (the temporary file's
    name would only confuse)."""
    return type(exc)(exc.errno, f"cannot write the model file {path!r}: "
                                f"{exc.strerror or exc}")


def check_writable(path, what="file"):
    """Raise an OSError/ValueError now if ``path`` could not be written later (its
    folder missing or not writable, or ``path`` a folder): what a long job checks
    before it starts, so that it does not fail at the end."""
    path = os.fsdecode(os.fspath(path))
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder, not a file name")
    if not os.path.isdir(directory):
        raise FileNotFoundError(2, f"cannot write {what} {path!r}: the folder "
                                   f"{directory!r} does not exist")
    tmp, fd = None, None
    try:
        tmp, fd = _create_temp(directory, os.path.basename(path))
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write {what} {path!r}: "
                                   f"{exc.strerror or exc}") from exc
    finally:
        if fd is not None:
            os.close(fd)
            os.unlink(tmp)


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


# ---- reading -----------------------------------------------------------------------
def checked(path, name, arr, dtype, shape):
    """``arr`` if it has exactly ``dtype`` and ``shape`` and only finite values."""
    if arr.dtype != dtype:
        raise refuse(path, f"array {name!r} has dtype {arr.dtype}; expected {dtype} "
                            f"(the model's dtype in its metadata)")
    if arr.shape != shape:
        raise refuse(path, f"array {name!r} has shape {arr.shape}; the architecture "
                            f"in its metadata needs {shape}")
    if not _checks.all_finite(arr):
        raise refuse(path, f"array {name!r} contains NaN or inf")
    return arr


def _read_arrays(path):
    """name -> array for every member of the archive at ``path``, read without ever
    unpickling."""
    with open(path, "rb") as f:            # a missing file: FileNotFoundError, as is
        # Checked first so that np.load's other branches (a bare .npy, a pickle) are
        # never even considered.
        if f.read(4) not in _ZIP_SIGNATURES:
            raise refuse(path, "not a .npz (zip) archive; expected a file written by "
                                "fastnn.save")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as zf:
                arrays = {}
                for info in zf.infolist():
                    if not info.filename.endswith(".npy"):
                        raise refuse(path, f"member {info.filename!r} is not a .npy "
                                            f"array")
                    name = info.filename[:-len(".npy")]
                    if name in arrays:
                        raise refuse(path, f"array {name!r} appears twice")
                    arrays[name] = _read_member(path, zf, info, name)
                return arrays
        except ModelFileError:
            raise
        except _CORRUPT as exc:
            raise refuse(path, f"truncated or corrupt archive "
                                f"({type(exc).__name__}: {exc})") from exc


def _read_member(path, zf, info, name):
    """One ``.npy`` member: its header is read first, so that an object array is
    refused before its data (a pickle) is touched, and a header that promises more
    data than the member holds allocates nothing."""
    with zf.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        read_header = _HEADER_READERS.get(version)
        if read_header is None:
            raise refuse(path, f"array {name!r} uses .npy format version {version}; "
                                f"expected 1.0 or 2.0")
        shape, _, dtype = read_header(fp)
    if dtype.hasobject:
        raise refuse(path, f"array {name!r} holds Python objects (dtype {dtype}); a "
                            f"fastnn model file holds only numeric arrays and is never "
                            f"unpickled")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > info.file_size:
        raise refuse(path, f"array {name!r} declares {nbytes} bytes of data but its "
                            f"member holds {info.file_size}: truncated or corrupt")
    with zf.open(info) as fp:
        return np.lib.format.read_array(fp, allow_pickle=False)


def _metadata(path, arrays):
    """The parsed and checked JSON metadata."""
    if METADATA not in arrays:
        raise refuse(path, f"no {METADATA!r} array; not a file written by fastnn.save")
    raw = arrays[METADATA]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise refuse(path, f"{METADATA!r} must be a 1-D uint8 array (UTF-8 JSON), got "
                            f"dtype {raw.dtype} and shape {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise refuse(path, f"{METADATA!r} is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise refuse(path, f"metadata format is {got!r}; expected {FORMAT!r}")
    version = meta.get("version")
    if version != VERSION or isinstance(version, bool) or not isinstance(version, int):
        raise refuse(path, f"unknown format version {version!r}; this fastnn reads "
                            f"version {VERSION}")
    keys = set(meta)
    if not _REQUIRED_KEYS <= keys or not keys <= _REQUIRED_KEYS | _OPTIONAL_KEYS:
        raise refuse(path, f"metadata must have the fields {sorted(_REQUIRED_KEYS)} "
                            f"(and optionally {sorted(_OPTIONAL_KEYS)}), got "
                            f"{sorted(keys)}")
    if meta["dtype"] not in _DTYPES:
        raise refuse(path, f"metadata dtype is {meta['dtype']!r}; expected one of "
                            f"{_DTYPES}")
    layers = meta["layers"]
    if not isinstance(layers, list) or not layers:
        raise refuse(path, "metadata 'layers' must be a non-empty list")
    for i, spec in enumerate(layers):
        if not isinstance(spec, dict) or set(spec) != _LAYER_KEYS \
                or spec["type"] != "Dense":
            raise refuse(path, f"layer {i} must be an object with the fields "
                                f"{sorted(_LAYER_KEYS)} and type 'Dense', got {spec!r}")
        # Names, not None: save always writes them out, and None would silently pick
        # a default.
        for field, names in (("activation", ACTIVATIONS), ("init", INITS)):
            if not isinstance(spec[field], str) or spec[field] not in names:
                raise refuse(path, f"layer {i} has unknown {field} {spec[field]!r}; "
                                    f"expected one of {tuple(names)}")
    opt = meta.get("optimizer")
    if opt is not None:
        if not isinstance(opt, dict) or set(opt) != _OPTIM_KEYS:
            raise refuse(path, f"metadata 'optimizer' must be null or an object with "
                                f"the fields {sorted(_OPTIM_KEYS)}")
        state = opt["state"]
        if not isinstance(state, list) or not all(isinstance(k, str) for k in state) \
                or len(set(state)) != len(state):
            raise refuse(path, f"optimizer 'state' must be a list of distinct names, "
                                f"got {state!r}")
    loss = meta.get("loss")
    if loss is not None:
        if not isinstance(loss, dict) or set(loss) != _LOSS_KEYS \
                or loss["type"] not in LOSSES:
            raise refuse(path, f"metadata 'loss' must be null or an object with the "
                                f"fields {sorted(_LOSS_KEYS)}, type one of "
                                f"{tuple(LOSSES)}, got {loss!r}")
        param = loss["param"]
        wants = LOSSES[loss["type"]].param
        if (param is None) != (wants is None) or not (
                param is None or (isinstance(param, numbers.Real)
                                  and not isinstance(param, bool))):
            raise refuse(path, f"loss {loss['type']!r} has param {param!r}; expected "
                                + (f"a number ({wants})" if wants else "null"))
    return meta


def read(path):
    """(metadata, arrays) of the model file at ``path``: the archive read without ever
    unpickling, and the metadata parsed and checked (format, version, fields, dtype,
    layers and their names, the optimizer's and loss's structure).  The arrays are
    checked against the architecture by the caller (``checked``)."""
    arrays = _read_arrays(path)
    return _metadata(path, arrays), arrays




