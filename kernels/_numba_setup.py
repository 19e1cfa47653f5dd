"""numba set-up for fastnn's kernels, done once when :mod:`fastnn.kernels` is imported
(before any kernel module is, so before the first ``njit(cache=True)`` runs).

- Where numba caches the kernels: :data:`STATUS` ``["cache_dir"]`` is the directory
  numba itself picked for this folder's sources (``fastnn.threads`` chose
  ``NUMBA_CACHE_DIR`` before numba was imported), or None if numba found none it could
  write to.  In that case caching is turned off for fastnn's kernels only (they are
  compiled in every process) instead of letting ``cache=True`` fail with numba's
  "no locator available" error at import.
- The first-run message: when numba really compiles one of fastnn's kernels in this
  process (not when it loads it from its disk cache: numba broadcasts its
  ``"numba:compile"`` event only for real compiles), one line goes to stderr, once per
  process: ``fastnn: compiling kernels, first run only (cached in <dir>)``.
  ``FASTNN_QUIET=1`` silences it.
"""
import os
import sys

from numba.core import caching, dispatcher, event

_PREFIX = "fastnn.kernels"
STATUS = {"cache_dir": None, "caching": False, "compiles": 0, "told": False}


def _where_numba_caches():
    """The directory numba's cache locators give a function of this folder (the
    locators depend only on the source file's folder), or None if none works."""
    def probe():                       # pragma: no cover - never called
        pass
    try:
        return caching.FunctionCache(probe).cache_path
    except RuntimeError:               # "cannot cache function ...: no locator available"
        return None


def _caching_off_for_fastnn():
    """Make ``cache=True`` on fastnn's kernels fall back to no cache (numba raises
    otherwise).  Other code's numba functions are left exactly as numba treats them."""
    original = dispatcher.Dispatcher.enable_caching
    if getattr(original, "_fastnn_fallback", False):
        return

    def enable_caching(self):
        try:
            original(self)
        except RuntimeError:
            if not str(getattr(self.py_func, "__module__", "")).startswith(_PREFIX):
                raise
            self._cache = caching.NullCache()

    enable_caching._fastnn_fallback = True
    dispatcher.Dispatcher.enable_caching = enable_caching


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


class _CompileNotice(event.Listener):
    """Counts numba's real compiles of fastnn kernels; says so once per process."""

    def on_start(self, ev):
        disp = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
        module = getattr(getattr(disp, "py_func", None), "__module__", None) or ""
        if not module.startswith(_PREFIX):
            return
        STATUS["compiles"] += 1
        if STATUS["told"] or _quiet():
            return
        STATUS["told"] = True
        print(message(), file=sys.stderr, flush=True)

    def on_end(self, ev):
        pass


def install():
    """Idempotent: the cache check and the listener, once per process."""
    if STATUS.get("installed"):
        return
    STATUS["installed"] = True
    STATUS["cache_dir"] = _where_numba_caches()
    STATUS["caching"] = STATUS["cache_dir"] is not None
    if not STATUS["caching"]:
        _caching_off_for_fastnn()
    event.register("numba:compile", _CompileNotice())


install()
