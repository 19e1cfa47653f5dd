"""One owner for every thread pool fastnn uses.

There are two candidate pools: BLAS (scipy's OpenBLAS, which runs the GEMMs) and
numba's (elementwise, loss and optimizer kernels).  Measured on this project's 2-core
machine (float32, 2 threads, median us; the first and last rows are reproduced by
``python bench/threads_experiment.py``, the relu row was a one-off run):

=====================================================  ======  ==========  =========
work                                                   serial  GOMP, spin  GOMP, no
                                                       numba   (default)   spin
=====================================================  ======  ==========  =========
128x784x512 GEMM (+bias), then sigmoid on its output      613        8001        625
relu, 1024x512                                             45          43         86
sigmoid, 1024x512                                         191         109        170
=====================================================  ======  ==========  =========

(GEMM alone: 615 us.  numba's ``workqueue`` layer: relu 143 us in parallel.)  Spinning
OpenMP threads beside OpenBLAS's make a step 13x slower; without spinning, parallel
numba gains nothing next to a GEMM.  Hence the policy:

- one thread count ``n``: ``fastnn.set_num_threads(n)`` or the environment variable
  ``FASTNN_NUM_THREADS`` (default: the CPUs this process may use).  BLAS gets ``n``.
- numba kernels run serially: their pool is never started, so nothing spins beside
  BLAS.  The parallel kernels exist and are tested; ``FASTNN_PARALLEL_MIN=k`` turns them
  on for work of ``k`` elements or more (then numba also gets ``n`` threads).

Where numba keeps compiled kernels: ``NUMBA_CACHE_DIR`` if set, else numba's default
(``__pycache__`` beside the sources); when that is not writable (a read-only install)
a per-user cache directory is used instead, so importing never fails for want of one.
"""
import os
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


def _configure_numba_before_import():
    """Settings numba reads when it is first imported."""
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
    """Use ``n`` threads for BLAS (and for numba's parallel kernels where enabled)."""
    from threadpoolctl import threadpool_limits

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive integer, got {n!r}")
    _state["blas_limiter"] = threadpool_limits(limits=n, user_api="blas")
    _state["n"] = n
    if _state["numba_pool"]:
        _size_numba_pool()


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


def info():
    """The thread settings, as a dict (for ``fastnn info`` and bug reports)."""
    import numba
    from threadpoolctl import threadpool_info

    return {
        "num_threads": get_num_threads(),
        "parallel_min_elements": PARALLEL_MIN or "off (numba kernels serial)",
        "numba_threading_layer": os.environ.get("NUMBA_THREADING_LAYER", "(numba's default)"),
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR") or "(beside the sources)",
        "blas": [(p.get("internal_api"), p.get("filepath"), p.get("num_threads"))
                 for p in threadpool_info() if p.get("user_api") == "blas"],
        "numba_max_threads": numba.config.NUMBA_NUM_THREADS,
    }
