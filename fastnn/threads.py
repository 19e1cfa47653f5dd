"""One owner for every thread pool fastnn uses.

There are two pools: BLAS (scipy's OpenBLAS, which runs the GEMMs) and numba's (the
elementwise, loss and optimizer kernels).  On a two-core machine they must not fight:
spinning OpenMP (GOMP) threads beside OpenBLAS's made a fused GEMM + epilogue 4-8x
slower.  The policy:

- one thread count ``n`` for both pools: ``fastnn.set_num_threads(n)`` or the
  environment variable ``FASTNN_NUM_THREADS`` (default: the CPUs this process may use);
- numba's parallel kernels use its ``workqueue`` threading layer, whose idle threads
  sleep instead of spinning (set ``NUMBA_THREADING_LAYER`` yourself to override);
- small work runs serially: a numba kernel goes parallel only at ``PARALLEL_MIN``
  elements or more (a parallel dispatch costs ~2 us against ~0.4 us serial).

Where numba keeps compiled kernels: ``NUMBA_CACHE_DIR`` if set, else numba's default
(``__pycache__`` beside the sources); when that is not writable (a read-only install)
a per-user cache directory is used instead, so importing never fails for want of one.
"""
import os
import tempfile

PARALLEL_MIN = 1 << 16
_ENV = "FASTNN_NUM_THREADS"
_state = {"n": None, "blas_limiter": None}


def _configure_numba_before_import():
    """Settings numba reads when it is first imported."""
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    if "NUMBA_CACHE_DIR" not in os.environ:
        import importlib.util

        spec = importlib.util.find_spec("fastnn.kernels")
        here = os.path.dirname(spec.origin) if spec and spec.origin else ""
        if not os.access(here, os.W_OK):
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
                os.path.expanduser("~"), ".cache")
            cache = os.path.join(base, "fastnn", "numba")
            try:
                os.makedirs(cache, exist_ok=True)
            except OSError:
                cache = os.path.join(tempfile.gettempdir(), "fastnn-numba-cache")
                os.makedirs(cache, exist_ok=True)
            os.environ["NUMBA_CACHE_DIR"] = cache


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
    """Use ``n`` threads in both BLAS and the numba kernels (1 = everything serial)."""
    import numba
    from threadpoolctl import threadpool_limits

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive integer, got {n!r}")
    n = min(n, numba.config.NUMBA_NUM_THREADS)  # numba's pool cannot grow past this
    numba.set_num_threads(n)
    _state["blas_limiter"] = threadpool_limits(limits=n, user_api="blas")
    _state["n"] = n


def get_num_threads():
    """The thread count fastnn uses for BLAS and its numba kernels."""
    if _state["n"] is None:
        set_num_threads(_default_threads())
    return _state["n"]


def use_parallel(size):
    """Whether work of ``size`` elements should run on the parallel kernels."""
    return size >= PARALLEL_MIN and get_num_threads() > 1


def info():
    """The thread settings, as a dict (for ``fastnn info`` and bug reports)."""
    import numba
    from threadpoolctl import threadpool_info

    return {
        "num_threads": get_num_threads(),
        "parallel_min_elements": PARALLEL_MIN,
        "numba_threading_layer": os.environ.get("NUMBA_THREADING_LAYER"),
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR") or "(beside the sources)",
        "blas": [(p.get("internal_api"), p.get("filepath"), p.get("num_threads"))
                 for p in threadpool_info() if p.get("user_api") == "blas"],
        "numba_max_threads": numba.config.NUMBA_NUM_THREADS,
    }
