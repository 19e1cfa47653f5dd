"""numba set-up for fastnn's kernels, done once when :mod:`fastnn.kernels` is imported
(before any kernel module is, so before the first ``njit(cache=...)`` runs).

- Where numba caches the kernels: :data:`STATUS` ``["cache_dir"]`` is the directory
  numba itself picked for this folder's sources (``fastnn.threads`` chose
  ``NUMBA_CACHE_DIR`` before numba was imported), or None if numba found none it could
  write to.  In that case the kernels are compiled with caching off
  (``STATUS["caching"]``, read by every kernel module) instead of letting
  ``cache=True`` fail with numba's "no locator available" error at import.
- When a cached kernel is stale: numba stamps a cache entry with its function's own
  source file only, but a kernel is a template (in ``cpu.py``, ``loops.py``, ...)
  with formulas of ``formulas.py`` inlined, chosen through ``specs.py``.  So fastnn's
  kernels are located by :class:`KernelSourcesLocator`, numba's own locators with one
  change: the stamp is a hash of every kernel source file, and an edit of any of them
  makes numba recompile (and overwrite) the entries.
- The first-run message: when numba really compiles one of fastnn's kernels in this
  process (not when it loads it from its disk cache: numba broadcasts its
  ``"numba:compile"`` event only for real compiles; the C-callable ``cfunc`` s report
  through :func:`compiled`), one line goes to stderr, once per process:
  ``fastnn: compiling kernels, first run only (cached in <dir>)``.
  ``FASTNN_QUIET=1`` silences it.
- Ctrl-C while numba compiles or loads a kernel: numba's first compile in a process
  loads its registries of implementations (imports that register as they go, and
  generators that hand out each registration once), and an interrupt in the middle
  left it unable to compile anything again in that process ("generator raised
  StopIteration", "duplicate registration").  So while numba holds its compiler lock
  (in the main thread), SIGINT is deferred: the KeyboardInterrupt is raised as soon
  as the lock is released (see :class:`_CompileLockInterrupts`), with numba's state
  whole and the kernel compiled.  :func:`deferred_sigint` does the same for any
  section (``template.specialise`` uses it while building a kernel).
"""
import functools
import hashlib
import os
import signal
import sys
import threading


class _SigintDeferral:
    """SIGINT deferred over (nested) sections of the main thread: at the outermost
    entry the handler is swapped for one that only notes the signal; at the outermost
    exit the previous handler is put back and, if a signal came, called (Python's
    raises KeyboardInterrupt there).  Only the main thread runs Python signal
    handlers, and only it can set them: elsewhere this does nothing."""

    def __init__(self):
        self.depth = 0
        self.previous = None
        self.pending = None

    def _note(self, signum, frame):
        self.pending = (signum, frame)

    def enter(self):
        if threading.get_ident() != _MAIN_THREAD:
            return
        if self.depth == 0:
            current = signal.getsignal(signal.SIGINT)
            self.previous = None
            if callable(current):            # a Python handler (not SIG_DFL/SIG_IGN)
                try:
                    signal.signal(signal.SIGINT, self._note)
                    self.previous = current
                except (ValueError, OSError):   # a subinterpreter, say
                    pass
        self.depth += 1

    def exit(self):
        if threading.get_ident() != _MAIN_THREAD or self.depth == 0:
            return
        self.depth -= 1
        if self.depth or self.previous is None:
            return
        previous, self.previous = self.previous, None
        signal.signal(signal.SIGINT, previous)
        pending, self.pending = self.pending, None
        if pending is not None:
            previous(*pending)


_MAIN_THREAD = threading.main_thread().ident
_DEFERRAL = _SigintDeferral()


class deferred_sigint:
    """``with deferred_sigint():`` Ctrl-C inside takes effect at its end."""

    def __enter__(self):
        _DEFERRAL.enter()

    def __exit__(self, *exc):
        _DEFERRAL.exit()
        return False


# numba itself is imported here, Ctrl-C deferred: an import of numba cut short leaves
# it half-initialised for the rest of the process ("module 'numba' has no attribute
# 'core'", "duplicate registration").  The kernel modules import this module first.
with deferred_sigint():
    import numba  # noqa: F401
    from numba.core import caching, event

_PREFIX = "fastnn.kernels"
_HERE = os.path.dirname(os.path.abspath(__file__))
STATUS = {"cache_dir": None, "caching": False, "compiles": 0, "told": False}


@functools.lru_cache(maxsize=None)
def sources_stamp():
    """A hash of every kernel source file of this folder (read once per process)."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(_HERE)):
        if name.endswith((".py", ".pyx")):
            h.update(name.encode())
            with open(os.path.join(_HERE, name), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


class KernelSourcesLocator(caching._CacheLocator):
    """numba's cache locator for fastnn's kernels: where to cache is whatever numba's
    own locators say; the freshness stamp covers all the kernel sources."""

    def __init__(self, inner):
        self._inner = inner

    def ensure_cache_path(self):
        self._inner.ensure_cache_path()

    def get_cache_path(self):
        return self._inner.get_cache_path()

    def get_source_stamp(self):
        return sources_stamp()

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    @classmethod
    def from_function(cls, py_func, py_file):
        if not str(getattr(py_func, "__module__", "")).startswith(_PREFIX):
            return None
        for other in caching.CacheImpl._locator_classes:
            if other is not cls:
                inner = other.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
        return None


def _where_numba_caches():
    """The directory numba's cache locators give a function of this folder (the
    locators depend only on the source file's folder), or None if none works."""
    def probe():                       # pragma: no cover - never called
        pass
    try:
        return caching.FunctionCache(probe).cache_path
    except RuntimeError:               # "cannot cache function ...: no locator available"
        return None


def message():
    """The line printed at the first compile of a fastnn kernel in this process."""
    if STATUS["caching"]:
        return (f"fastnn: compiling kernels, first run only "
                f"(cached in {STATUS['cache_dir']})")
    mine = os.environ.get("NUMBA_CACHE_DIR")
    why = (f"NUMBA_CACHE_DIR={mine} is not writable" if mine else
           "no writable directory for numba's cache was found")
    return (f"fastnn: compiling kernels (not cached: {why}; set NUMBA_CACHE_DIR to a "
            "writable directory to compile only once)")


def _quiet():
    return os.environ.get("FASTNN_QUIET", "").strip() not in ("", "0")


def compiled(module):
    """Count a real compile of a fastnn kernel (of ``module``); say so once."""
    if not str(module or "").startswith(_PREFIX):
        return
    STATUS["compiles"] += 1
    if STATUS["told"] or _quiet():
        return
    STATUS["told"] = True
    print(message(), file=sys.stderr, flush=True)


class _CompileNotice(event.Listener):
    """Counts numba's real compiles of fastnn kernels."""

    def on_start(self, ev):
        disp = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
        compiled(getattr(getattr(disp, "py_func", None), "__module__", None))

    def on_end(self, ev):
        pass


class _CompileLockInterrupts(event.Listener):
    """SIGINT deferred while numba holds its global compiler lock (compiling, or
    loading a kernel from its cache: both load numba's registries on first use).
    numba broadcasts ``numba:compiler_lock`` just before it takes the lock and just
    after it lets it go."""

    def on_start(self, ev):
        _DEFERRAL.enter()

    def on_end(self, ev):
        _DEFERRAL.exit()


def _ours(obj, name):
    """Whether ``obj`` is this module's ``name`` (of this import or of an earlier,
    interrupted one: a failed import leaves its objects registered in numba)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.__name__ == name and cls.__module__ == __name__


def install():
    """Idempotent: the locator, the cache check and the listeners, once per process.
    Whatever an interrupted earlier import of this module registered is replaced,
    not doubled."""
    if STATUS.get("installed"):
        return
    with deferred_sigint():
        locators = caching.CacheImpl._locator_classes
        locators[:] = [c for c in locators if not _ours(c, "KernelSourcesLocator")]
        locators.insert(0, KernelSourcesLocator)
        STATUS["cache_dir"] = _where_numba_caches()
        STATUS["caching"] = STATUS["cache_dir"] is not None
        for kind, listener in (("numba:compile", _CompileNotice()),
                               ("numba:compiler_lock", _CompileLockInterrupts())):
            registered = getattr(event, "_registered", {}).get(kind, ())
            for old in [x for x in registered if _ours(x, type(listener).__name__)]:
                event.unregister(kind, old)
            event.register(kind, listener)
        STATUS["installed"] = True


install()
