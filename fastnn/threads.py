"""One owner for every thread pool fastnn uses.

There are two candidate pools: BLAS (scipy's OpenBLAS, which runs the GEMMs) and
numba's (elementwise, loss and optimizer kernels).  Measured on this project's 2-core
machine (Intel Xeon, OpenBLAS SkylakeX; float32, 2 threads, median us, quiet; reproduced
by ``python bench/threads_experiment.py --repeats 3``):

=====================================================  ======  ==========  =========
work                                                   serial  GOMP, spin  GOMP, no
                                                       numba   (default)   spin
=====================================================  ======  ==========  =========
128x784x512 GEMM (+bias), then sigmoid on its output      444        6879        468
sigmoid, 1024x512                                         346         175        244
=====================================================  ======  ==========  =========

(numba's ``workqueue`` layer: 512 us for the first row.)  Spinning OpenMP threads
beside OpenBLAS's make a step 15x slower; without spinning, parallel
numba gains nothing next to a GEMM.  Hence the policy:

- one thread count ``n``: ``fastnn.set_num_threads(n)`` or the environment variable
  ``FASTNN_NUM_THREADS`` (default: the CPUs this process may use).  BLAS gets ``n``.
- numba kernels run serially: their pool is never started, so nothing spins beside
  BLAS.  The parallel kernels exist and are tested; ``FASTNN_PARALLEL_MIN=k`` turns them
  on for work of ``k`` elements or more (then numba also gets ``n`` threads).

Where numba keeps compiled kernels: ``NUMBA_CACHE_DIR`` if set, else numba's default
(``__pycache__`` beside the sources); when that is not writable (a read-only install)
a per-user cache directory is used instead, and when nothing is writable caching is
off for fastnn's kernels, so importing never fails for want of one (see
:func:`_configure_numba_before_import`).
"""
import os
import stat
import sys
import tempfile

_ENV = "FASTNN_NUM_THREADS"
_state = {"n": None, "blas_limiter": None, "numba_pool": False}


def _parallel_min():
    raw = os.environ.get("FASTNN_PARALLEL_MIN", "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"FASTNN_PARALLEL_MIN must be an integer, got {raw!r}") from None
    return max(value, 1)


PARALLEL_MIN = _parallel_min()   # None: numba kernels always serial (see above)


# Where numba keeps fastnn's compiled kernels, as decided at import (see
# :func:`_configure_numba_before_import`); ``fastnn info`` shows it.
CACHE = {"dir": None, "source": None}


def _can_write(path):
    """Whether files can really be created in ``path`` (made if missing).  A real test,
    not ``os.access``, which says yes to root and may say yes on a read-only mount."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()    # what numba's locators try too
        return True
    except OSError:
        return False


def _private_dir(path):
    """``path`` as a cache directory only this user can write to, made 0700 if missing;
    None if it exists but is not a real directory owned by this user and closed to
    others (numba's cache files are pickles: loading someone else's runs their code)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    uid = os.getuid() if hasattr(os, "getuid") else None
    if (not stat.S_ISDIR(st.st_mode)
            or (uid is not None and st.st_uid != uid)
            or (uid is not None and st.st_mode & 0o022)):
        return None
    return path if _can_write(path) else None


def _cache_dir_candidates():
    """(source, directory) pairs, best first, for numba's cache when none is set."""
    import importlib.util

    spec = importlib.util.find_spec("fastnn.kernels")
    here = os.path.dirname(spec.origin) if spec and spec.origin else None
    if here:
        # numba's own default: __pycache__ beside the sources (NUMBA_CACHE_DIR unset).
        yield "beside the sources", os.path.join(here, "__pycache__")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    yield "user cache", os.path.join(base, "fastnn", "numba")
    try:
        tmp = tempfile.gettempdir()
    except OSError:            # no usable temporary directory at all
        return
    who = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    yield "temporary", os.path.join(tmp, f"fastnn-numba-{who}")


def _configure_numba_before_import():
    """Settings numba reads when it is first imported: where its disk cache goes.

    ``NUMBA_CACHE_DIR`` is honoured when set.  Otherwise numba's default (``__pycache__``
    beside the kernels' sources) when that is writable; else (a read-only install) the
    user's cache directory ``$XDG_CACHE_HOME`` or ``~/.cache``, ``/fastnn/numba``; else
    (a read-only home too) ``<temp dir>/fastnn-numba-<uid>``, private to this user.  If
    none can be written, ``NUMBA_CACHE_DIR`` is left unset and
    :mod:`fastnn.kernels._numba_setup` turns caching off for fastnn's kernels, so that
    importing never fails for want of a cache (numba's own ``cache=True`` would raise
    "no locator available").  The directory numba really uses is reported by the
    first-run message and by ``fastnn info``.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        CACHE.update(dir=os.environ["NUMBA_CACHE_DIR"], source="NUMBA_CACHE_DIR")
        return
    for source, path in _cache_dir_candidates():
        ok = _private_dir(path) if source == "temporary" else (
            path if _can_write(path) else None)
        if ok:
            CACHE.update(dir=path, source=source)
            if source != "beside the sources":
                os.environ["NUMBA_CACHE_DIR"] = path
            break
    else:
        CACHE.update(dir=None, source="none writable")
    if "numba" in sys.modules and os.environ.get("NUMBA_CACHE_DIR"):
        # numba was imported first (by the user): make it re-read its environment.
        sys.modules["numba"].core.config.reload_config()


def _available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _default_threads():
    raw = os.environ.get(_ENV)
    if raw is None or raw.strip() == "":
        return _available_cpus()
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{_ENV} must be a positive integer, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"{_ENV} must be a positive integer, got {raw!r}")
    return n


def set_num_threads(n):
    """Use ``n`` threads for BLAS (and for numba's parallel kernels where enabled).
    May be called before anything is built: BLAS libraries loaded later (scipy's
    OpenBLAS, loaded with the cpu backend) get ``n`` when they load."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive integer, got {n!r}")
    _state["n"] = n
    _limit_blas()
    if _state["numba_pool"]:
        _size_numba_pool()


def _limit_blas():
    # threadpoolctl reaches only the libraries loaded when it is called, hence also
    # blas_loaded() below.
    from threadpoolctl import threadpool_limits

    _state["blas_limiter"] = threadpool_limits(limits=_state["n"], user_api="blas")


def blas_loaded():
    """Called once a backend has loaded the BLAS library it runs the GEMMs on: give it
    the thread count already chosen (``set_num_threads`` before the first model), or
    the default."""
    get_num_threads()
    _limit_blas()


def _size_numba_pool():
    import numba

    # numba's pool cannot grow past NUMBA_NUM_THREADS; starting it is deferred to the
    # first parallel kernel so that by default no numba thread exists at all.
    numba.set_num_threads(min(_state["n"], numba.config.NUMBA_NUM_THREADS))
    _state["numba_pool"] = True


def get_num_threads():
    """The thread count fastnn uses for BLAS and its numba kernels."""
    if _state["n"] is None:
        set_num_threads(_default_threads())
    return _state["n"]


def use_parallel(size):
    """Whether work of ``size`` elements should run on the parallel kernels."""
    if PARALLEL_MIN is None or size < PARALLEL_MIN or get_num_threads() < 2:
        return False
    if not _state["numba_pool"]:
        _size_numba_pool()
    return True


def cache_info():
    """Where numba caches fastnn's kernels, and whether that directory is writable."""
    from .kernels import _numba_setup

    where = _numba_setup.STATUS["cache_dir"]
    if where and CACHE["dir"] and where.startswith(CACHE["dir"]):
        chosen = f" ({CACHE['source']})"
    else:
        chosen = " (numba's fallback)"
    return {
        "numba_cache_dir": (where + chosen) if where else
        "none: caching off (no writable directory; set NUMBA_CACHE_DIR)",
        "numba_cache_writable": bool(where) and _can_write(where),
    }


def blas_libraries():
    """Each BLAS library loaded in this process, as threadpoolctl sees it: its
    implementation, version, the kernels ("core type") it picked ("architecture",
    e.g. 'SkylakeX' or 'Haswell'; None where the library does not say), thread count
    and file name (what ``fastnn info`` and the benchmark reports show)."""
    from threadpoolctl import threadpool_info

    return [{"internal_api": p.get("internal_api"), "version": p.get("version"),
             "architecture": p.get("architecture"), "num_threads": p.get("num_threads"),
             "file": os.path.basename(p.get("filepath") or "") or None}
            for p in threadpool_info() if p.get("user_api") == "blas"]


def info():
    """The thread settings, as a dict (for ``fastnn info`` and bug reports)."""
    import numba

    return {
        "num_threads": get_num_threads(),
        "parallel_min_elements": PARALLEL_MIN or "off (numba kernels serial)",
        "numba_threading_layer": os.environ.get("NUMBA_THREADING_LAYER", "(numba's default)"),
        **cache_info(),
        # which kernels ("core type") each BLAS library picked: OpenBLAS's differ
        # between machines and move step times by 7-24% (README, Performance)
        "blas": [f"{lib['internal_api']} {lib['version'] or ''} core type "
                 f"{lib['architecture'] or 'unknown'}, {lib['num_threads']} threads "
                 f"({lib['file']})" for lib in blas_libraries()],
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")
        or "not set (OpenBLAS picks its kernels from the CPU)",
        "numba_max_threads": numba.config.NUMBA_NUM_THREADS,
    }
