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

:func:`write` replaces the target atomically: a temporary file in the target's folder,
named ``.fastnn-save-<hash of the target's name>-<host>-<pid>-<random>.tmp`` (short
whatever the target's length), is written, fsync'ed and renamed onto the target.  It
keeps a replaced file's permission bits (and, where allowed, its owner and group),
refuses to replace a file its permission bits do not let the caller write (root
included), writes through a symbolic link to the file it points to, removes its
temporary file on any error it can catch, and removes the temporary files of earlier
saves to the same name whose process has died (kill -9).

:func:`read` reads a regular file only (a named pipe or a device is refused, never
opened in a way that blocks), never unpickles, and validates everything against the
metadata before it inflates or allocates anything in proportion to a size the file
declares: member names, compression and sizes from the zip's directory, each ``.npy``
header, the metadata (at most ``MAX_METADATA_BYTES``, nested at most
``MAX_METADATA_DEPTH`` deep), then every array's name, dtype and shape against the
architecture, so the work is bounded by the file's real size.  Anything malformed
raises :class:`ModelFileError` (a ``ValueError``) naming the file and what was expected.
"""
import errno
import hashlib
import io
import json
import math
import numbers
import os
import secrets
import socket
import stat
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

# What a file may make read() do before it is validated.  save writes a few hundred
# bytes of metadata per layer, three levels deep, and integers of a few digits.
MAX_METADATA_BYTES = 1 << 20
MAX_METADATA_DEPTH = 16
_MAX_INT_DIGITS = 30
# NumPy's own limit on a .npy header (np.load's max_header_size).
_MAX_NPY_HEADER = 10_000
# Deflate cannot inflate more than ~1032:1; a member claiming more is lying.
MAX_DEFLATE_RATIO = 1100

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


def open_regular(path, refused):
    """``path`` opened for binary reading if it is a regular file; otherwise the
    exception ``refused(message)`` is raised.  A named pipe's open() would block until
    a writer came, and a device can be endless: both are refused by a stat before
    opening, and again by the opened descriptor's fstat (the name could be swapped in
    between), which O_NONBLOCK lets even a pipe's open reach at once.  (O_NONBLOCK
    changes nothing for reading a regular file.)  OSErrors (a missing file) pass
    through."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise refused(_not_regular(st))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                 | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refused(_not_regular(st))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _not_regular(st):
    mode = st.st_mode
    kind = ("a folder" if stat.S_ISDIR(mode) else
            "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a special file")
    return f"it is {kind}, not a regular file"


# ---- writing -----------------------------------------------------------------------
_TEMP_PREFIX = ".fastnn-save-"
# Which machine made a temporary file: a process id means nothing on another host
# sharing the folder (NFS), so leftovers are only judged by their own host.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def write(path, arrays):
    """Write ``arrays`` (name -> array, ``METADATA`` included) to ``path`` atomically:
    a temporary file beside the target is written, flushed and fsync'ed, then renamed
    onto the target with ``os.replace``.  If ``path`` is a symbolic link, the file it
    points to is replaced (the link stays); an existing file keeps its permission bits
    (and owner and group where allowed), and one whose permission bits do not let the
    caller write it is not replaced (PermissionError).  If anything fails the
    temporary file is removed and the error re-raised (an OSError naming ``path``, not
    the temporary file); a file already there stays intact until the rename."""
    path = os.fsdecode(os.fspath(path))
    try:
        target = _resolve(path)
        old = _replaceable(target)
        directory, base = os.path.split(target)
        _remove_leftovers(directory, base)
        tmp, fd = _create_temp(directory, base)
    except OSError as exc:
        raise _about(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            if old is not None:
                _copy_ownership_and_mode(f.fileno(), old)
            # A file object, not a name: np.savez would append ".npz" to a name.
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _about(exc, path) from exc
        raise
    _fsync_directory(directory)


def _about(exc, path, what="the model file"):
    """The OSError ``exc`` as an error about the user's ``path`` (the temporary file's
    name would only confuse)."""
    return type(exc)(exc.errno, f"cannot write {what} {path!r}: "
                                f"{exc.strerror or exc}")


def check_writable(path, what="file"):
    """Raise an OSError/ValueError now if ``path`` could not be written later (its
    folder missing or not writable, ``path`` a folder, or a file :func:`write` would
    not replace): what a long job checks before it starts, so that it does not fail at
    the end."""
    path = os.fsdecode(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder, not a file name")
    tmp, fd = None, None
    try:
        target = _resolve(path)
        directory = os.path.dirname(target)
        if not os.path.isdir(directory):
            raise FileNotFoundError(2, f"the folder {directory!r} does not exist")
        _replaceable(target)
        tmp, fd = _create_temp(directory, os.path.basename(target))
    except OSError as exc:
        raise _about(exc, path, what) from exc
    finally:
        if fd is not None:
            os.close(fd)
            os.unlink(tmp)


def _resolve(path):
    """The absolute name of the file a save to ``path`` replaces.

    A symbolic link is followed to the file it points to (which is then replaced
    atomically; a link to a file not yet there creates it there), as open() would
    follow it: users point a link at the copy they mean (a model kept on another disk,
    a shared folder), and replacing the link with a regular file would silently cut
    that tie and leave the real file stale."""
    full = os.path.abspath(path)
    if not os.path.islink(full):
        return full
    real = os.path.realpath(full)
    if os.path.islink(real):                 # realpath stops at a loop
        raise OSError(errno.ELOOP, "its symbolic links form a loop")
    return real


def _replaceable(target):
    """The stat of the existing file at ``target`` (None if there is none), after
    checking that a save may replace it: a regular file the caller may write.

    Decided by the permission bits and ownership, not os.access: for root os.access
    says yes to everything, but a file someone made read-only (chmod a-w) is a
    statement that it must not change, which a rename would silently override (the
    rename only needs the folder to be writable).  So: the caller's class (owner,
    group, others) must have the write bit; root, whom the kernel lets write
    anything, needs any write bit.  ACLs are not consulted."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "it is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, _not_regular(st) + "; only a regular file is "
                                    "replaced")
    if not _may_write(st):
        raise PermissionError(errno.EACCES, f"it is read-only to you (mode "
                                            f"{stat.S_IMODE(st.st_mode):04o}); "
                                            f"make it writable to replace it")
    return st


def _may_write(st):
    mode = st.st_mode
    if not hasattr(os, "geteuid"):           # Windows: the read-only attribute
        return bool(mode & stat.S_IWUSR)
    uid = os.geteuid()
    if uid == 0:
        return bool(mode & 0o222)
    if st.st_uid == uid:
        return bool(mode & stat.S_IWUSR)
    if st.st_gid == os.getegid() or st.st_gid in os.getgroups():
        return bool(mode & stat.S_IWGRP)
    return bool(mode & stat.S_IWOTH)


def _copy_ownership_and_mode(fd, old):
    """Give the new file the replaced file's owner, group and permission bits.  The
    owner can only be kept by root, the group by a member of it: what cannot be kept
    is left as created (the caller's); a file system without permissions (FAT) has
    none to keep."""
    if hasattr(os, "fchown"):
        for uid, gid in ((old.st_uid, old.st_gid), (-1, old.st_gid)):
            try:
                os.fchown(fd, uid, gid)
                break
            except OSError:
                continue
    if hasattr(os, "fchmod"):
        try:
            # Not the set-id bits: a model file is not a program.
            os.fchmod(fd, stat.S_IMODE(old.st_mode) & 0o777)
        except OSError:
            pass


def _temp_stem(base):
    """What every temporary file of a save to the file named ``base`` (in the same
    folder) begins with: a hash, not the name itself, so that a legal name of up to
    NAME_MAX (255) bytes still leaves room for the temporary name."""
    key = hashlib.sha256(os.fsencode(base)).hexdigest()[:16]
    return f"{_TEMP_PREFIX}{key}-{_HOST}-"


def _create_temp(directory, base):
    """A new, empty temporary file beside the target: (its path, an open descriptor).

    Its name carries this process's id, so that a later save can tell a dead
    process's leftover (:func:`_remove_leftovers`) from a save still running.  Not
    ``tempfile.mkstemp``: that creates the file with mode 0600, which the rename would
    carry over to a new model file.  Mode 0666 here lets the umask decide, as for any
    ordinary file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    stem = f"{_temp_stem(base)}{os.getpid()}-"
    for _ in range(100):
        tmp = os.path.join(directory, f"{stem}{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"could not create a temporary file in "
                                        f"{directory!r}")


def _remove_leftovers(directory, base):
    """Delete the temporary files of earlier saves to ``base`` in ``directory`` whose
    process no longer runs (killed mid-save: kill -9, a power cut, the OOM killer).
    A save still running elsewhere on this host keeps its file; files from other hosts
    are left alone.  Only on POSIX, where ``os.kill(pid, 0)`` tests a process."""
    if os.name != "posix":
        return
    stem = _temp_stem(base)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(stem) and name.endswith(".tmp")):
            continue
        pid = name[len(stem):].split("-")[0]
        if not pid.isdigit() or int(pid) >= 2 ** 31 or _alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                          # EPERM: alive, another user's
        return True
    return True


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
def read(path):
    """(metadata, arrays) of the model file at ``path``, every array checked against
    the metadata: ``arrays`` maps each ``param/...`` and ``optim/...`` name the
    architecture and optimizer need to an array of the model's dtype and the shape
    they need, with only finite values.

    The order of the checks bounds the work by the file's real size: the zip's
    directory (names, compression, sizes) and each member's ``.npy`` header are
    checked before any member is inflated, the metadata (size-capped) is parsed before
    any other member is read, and every member's name, dtype and shape is compared with
    what the metadata needs before any array is allocated.  Never unpickles."""
    with open_regular(path, lambda message: refuse(path, message)) as f:
        # Checked first so that np.load's other branches (a bare .npy, a pickle) are
        # never even considered.
        if f.read(4) not in _ZIP_SIGNATURES:
            raise refuse(path, "not a .npz (zip) archive; expected a file written by "
                                "fastnn.save")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as zf:
                members = _members(path, zf, os.fstat(f.fileno()).st_size)
                headers = {name: _npy_header(path, zf, info, name)
                           for name, info in members.items()}
                meta = _metadata(path, _metadata_bytes(path, zf, members, headers))
                want = _needed_arrays(path, meta)
                missing = [n for n in want if n not in members]
                if missing:
                    raise refuse(path, f"missing arrays {missing} (the architecture "
                                        f"and optimizer in its metadata need "
                                        f"{list(want)})")
                extra = sorted(set(members) - {METADATA, *want})
                if extra:
                    raise refuse(path, f"unexpected arrays {extra}; expected only "
                                        f"{METADATA!r}, {list(want)}")
                for name, (dtype, shape) in want.items():
                    _check_header(path, name, headers[name], dtype, shape)
                arrays = {}
                for name in want:
                    arrays[name] = _read_array(zf, members[name])
                    if not _checks.all_finite(arrays[name]):
                        raise refuse(path, f"array {name!r} contains NaN or inf")
                return meta, arrays
        except ModelFileError:
            raise
        except _CORRUPT as exc:
            raise refuse(path, f"truncated or corrupt archive "
                                f"({type(exc).__name__}: {exc})") from exc


def _members(path, zf, file_size):
    """name -> ZipInfo of every member, checked from the zip's directory alone: a
    ``.npy`` name, no name twice, stored or deflated, and sizes the file can hold: a
    stored member's size is its stored size, a deflated one claims no more than
    deflate can produce, and together they fit in the file (members that overlap, or
    a zip64 size of a terabyte, would otherwise make reading them unbounded)."""
    members, stored = {}, 0
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise refuse(path, f"member {info.filename!r} is not a .npy array")
        name = info.filename[:-len(".npy")]
        if name in members:
            raise refuse(path, f"array {name!r} appears twice")
        if info.compress_type == zipfile.ZIP_STORED:
            fits = info.file_size == info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            fits = info.file_size <= MAX_DEFLATE_RATIO * info.compress_size
        else:
            raise refuse(path, f"member {info.filename!r} uses zip compression method "
                                f"{info.compress_type}; expected none (0) or deflate "
                                f"(8)")
        if not fits:
            raise refuse(path, f"member {info.filename!r} claims {info.file_size} "
                                f"bytes from {info.compress_size} stored bytes: "
                                f"truncated or corrupt")
        stored += info.compress_size
        members[name] = info
    if stored > file_size:
        raise refuse(path, f"its members claim {stored} stored bytes but the file has "
                            f"only {file_size}: truncated or corrupt")
    return members


def _npy_header(path, zf, info, name):
    """(dtype, shape) from the ``.npy`` header of member ``info``, read from at most
    its first few kilobytes: an object array (a pickle) is refused before its data is
    touched, and the data the header declares must be exactly what the member holds."""
    with zf.open(info) as fp:
        head = io.BytesIO(fp.read(_MAX_NPY_HEADER + 16))   # magic, length, header
    try:
        version = np.lib.format.read_magic(head)
    except ValueError as exc:
        raise refuse(path, f"array {name!r} is not a .npy array ({exc})") from exc
    read_header = _HEADER_READERS.get(version)
    if read_header is None:
        raise refuse(path, f"array {name!r} uses .npy format version {version}; "
                            f"expected 1.0 or 2.0")
    try:
        shape, _, dtype = read_header(head, max_header_size=_MAX_NPY_HEADER)
    except Exception as exc:
        # NumPy parses the header, a Python literal, with ast and tokenize: a damaged
        # one can raise almost anything (ValueError, SyntaxError, tokenize.TokenError).
        raise refuse(path, f"array {name!r} has a damaged .npy header "
                            f"({type(exc).__name__}: {exc})") from exc
    if dtype.hasobject:
        raise refuse(path, f"array {name!r} holds Python objects (dtype {dtype}); a "
                            f"fastnn model file holds only numeric arrays and is never "
                            f"unpickled")
    nbytes = math.prod(shape) * dtype.itemsize
    holds = info.file_size - head.tell()
    if nbytes != holds:
        raise refuse(path, f"array {name!r} declares {nbytes} bytes of data but its "
                            f"member holds {holds}: truncated or corrupt")
    return dtype, shape


def _check_header(path, name, header, dtype, shape):
    got_dtype, got_shape = header
    if got_dtype != dtype:
        raise refuse(path, f"array {name!r} has dtype {got_dtype}; expected {dtype} "
                            f"(the model's dtype in its metadata)")
    if got_shape != shape:
        raise refuse(path, f"array {name!r} has shape {got_shape}; the architecture "
                            f"in its metadata needs {shape}")


def _read_array(zf, info):
    """The member's array; its header has been checked, so its size is known."""
    with zf.open(info) as fp:
        return np.lib.format.read_array(fp, allow_pickle=False,
                                        max_header_size=_MAX_NPY_HEADER)


def _metadata_bytes(path, zf, members, headers):
    """The raw metadata, its size checked before it is read."""
    if METADATA not in members:
        raise refuse(path, f"no {METADATA!r} array; not a file written by fastnn.save")
    dtype, shape = headers[METADATA]
    if dtype != np.uint8 or len(shape) != 1:
        raise refuse(path, f"{METADATA!r} must be a 1-D uint8 array (UTF-8 JSON), got "
                            f"dtype {dtype} and shape {shape}")
    if shape[0] > MAX_METADATA_BYTES:
        raise refuse(path, f"{METADATA!r} is {shape[0]} bytes; at most "
                            f"{MAX_METADATA_BYTES} are read")
    return _read_array(zf, members[METADATA]).tobytes()


def _json(path, raw):
    """The metadata's JSON value, parsed only once its nesting depth is known to be
    small (json's parser recurses), refusing integers too long to be a count (Python
    refuses to convert more than 4300 digits, with a bare ValueError) and numbers JSON
    cannot hold (NaN, infinity, overflowing floats: save never writes them)."""
    try:
        text = raw.decode("utf-8")
        depth = _nesting(text)
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"it nests {depth} levels deep; at most "
                             f"{MAX_METADATA_DEPTH}")
        return json.loads(text, parse_int=_json_int, parse_float=_json_float,
                          parse_constant=_json_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise refuse(path, f"{METADATA!r} is not valid UTF-8 JSON ({exc})") from exc
    except ValueError as exc:                  # from the checks here
        raise refuse(path, f"{METADATA!r} is refused: {exc}") from exc


def _nesting(text):
    """How deep the arrays and objects of the JSON ``text`` nest, counted without a
    parser: escaped backslashes, then escaped quotes are dropped (in valid JSON they
    occur only inside strings, and pair up from the left as str.replace finds them),
    the strings between the remaining quotes are dropped, and the brackets left are
    counted.  (For invalid JSON the count may be off; json.loads then fails.)"""
    plain = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(plain.split('"')[::2]).encode()
    chars = np.frombuffer(outside, dtype=np.uint8)
    steps = (np.isin(chars, (ord("["), ord("{"))).astype(np.int64)
             - np.isin(chars, (ord("]"), ord("}"))))
    return int(np.cumsum(steps).max(initial=0))


def _json_int(text):
    digits = len(text.lstrip("-"))
    if digits > _MAX_INT_DIGITS:
        raise ValueError(f"it holds an integer of {digits} digits; at most "
                         f"{_MAX_INT_DIGITS}")
    return int(text)


def _json_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"it holds the number {text[:40]!r}, which overflows a float")
    return value


def _json_constant(text):
    raise ValueError(f"it holds {text}; JSON has no NaN or infinity")


def _metadata(path, raw):
    """The parsed and checked JSON metadata."""
    meta = _json(path, raw)
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
                or not isinstance(loss["type"], str) or loss["type"] not in LOSSES:
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


def _needed_arrays(path, meta):
    """name -> (dtype, shape) of every array the metadata's layers and optimizer need,
    computed from the metadata alone (the model is built only after the arrays are
    checked): ``param/<i>.weight`` (in_features, out_features), ``param/<i>.bias``
    (out_features,) as ``Sequential.parameters()`` names them, and ``optim/<name>``
    (number of parameters,) for each optimizer state buffer."""
    dtype = np.dtype(meta["dtype"])
    want, count, previous = {}, 0, None
    for i, spec in enumerate(meta["layers"]):
        try:
            n_in = _checks.positive_int(spec["in_features"], "in_features")
            n_out = _checks.positive_int(spec["out_features"], "out_features")
        except ValueError as exc:
            raise refuse(path, f"invalid architecture in its metadata: layer {i}: "
                                f"{exc}") from exc
        if previous is not None and n_in != previous:
            raise refuse(path, f"invalid architecture in its metadata: layer {i} has "
                                f"in_features={n_in} but layer {i - 1} has "
                                f"out_features={previous}")
        want[f"{PARAM_PREFIX}{i}.weight"] = (dtype, (n_in, n_out))
        want[f"{PARAM_PREFIX}{i}.bias"] = (dtype, (n_out,))
        count += n_in * n_out + n_out
        previous = n_out
    for name in (meta.get("optimizer") or {}).get("state", ()):
        want[OPTIM_PREFIX + name] = (dtype, (count,))
    return want
