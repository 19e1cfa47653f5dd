"""How busy the rest of the machine was during a measurement.

:class:`Busy` samples, before and after a measurement, the busy time of all CPUs from
``/proc/stat`` (the ``cpu`` line: user, nice, system, irq, softirq and steal jiffies;
idle and iowait are not busy) and this process's own CPU time (``getrusage``: every
thread of it, plus its children that have been waited for, unless ``children=False``).
The difference is the CPU time *other* processes used; divided by the wall time it is
``other_load``, in cores: 0 on an idle machine, 1.0 when another process kept one core
busy the whole time.  Steal time (the hypervisor running other guests on our vCPUs) is
counted as used by others: it slows a benchmark just the same.

Resolution: ``/proc/stat`` counts whole clock ticks (``SC_CLK_TCK``, 100 per second on
Linux) per CPU, so over a window of ``wall`` seconds on ``ncpus`` CPUs the figure is
good to about ``ncpus / ticks / wall`` cores (0.02 cores over 1 s on 2 CPUs; 0.4 over
50 ms): :attr:`Busy.resolution`.  Windows much shorter than a second are noisy, and
the noise can go either way (values below 0 are reported as 0).

Where there is no ``/proc/stat`` (not Linux) every figure is None ("unknown").
"""
import os
import time

try:
    import resource
except ImportError:                 # Windows
    resource = None

PROC_STAT = "/proc/stat"
# A case is "contended" when other processes used more than this many cores while it
# ran.  Why 0.25: on the 2-vCPU machines the suites are tuned for, an idle machine
# measures 0.00-0.02 cores here (kernel threads, the sandbox itself), and over a 1 s
# window the figure is good to about 0.02; a neighbour taking a quarter of a core
# takes 1/8 of the machine from a 2-thread case, and a BLAS call waits for its slowest
# thread, so its timings move by the ±25% seen between runs.  Any one busy neighbour
# process shows as 0.5 or more.
CONTENDED_CORES = 0.25
# Columns of /proc/stat's cpu lines (after the name): user nice system idle iowait irq
# softirq steal guest guest_nice.  guest and guest_nice are already inside user and
# nice, so they are not added again; idle and iowait are not busy.
BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


def _ticks_per_second():
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100


TICKS = _ticks_per_second()


def read_proc_stat(path=PROC_STAT):
    """The text of ``/proc/stat``, or None where it cannot be read (not Linux)."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def parse_proc_stat(text):
    """(busy jiffies of all CPUs together, number of CPUs) from ``/proc/stat``'s text,
    or (None, None) when it has no ``cpu`` line."""
    busy, ncpus = None, 0
    for line in (text or "").splitlines():
        words = line.split()
        if not words or not words[0].startswith("cpu"):
            continue
        if words[0] == "cpu":
            values = [int(w) for w in words[1:]]
            busy = sum(values[i] for i in BUSY_COLUMNS if i < len(values))
        elif words[0][3:].isdigit():
            ncpus += 1
    if busy is None:
        return None, None
    return busy, (ncpus or os.cpu_count() or 1)


def own_cpu_seconds(children=True):
    """CPU seconds (user + system) used by this process, all its threads, and with
    ``children`` its children that have been waited for (``getrusage``, microsecond
    resolution)."""
    if resource is None:
        t = os.times()
        return t.user + t.system + ((t.children_user + t.children_system)
                                    if children else 0.0)
    me = resource.getrusage(resource.RUSAGE_SELF)
    total = me.ru_utime + me.ru_stime
    if children:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += kids.ru_utime + kids.ru_stime
    return total


class Busy:
    """``with Busy() as busy: measure()``, then ``busy.other_load`` (cores), or None
    where ``/proc/stat`` is unreadable.  Also :meth:`start` / :meth:`stop`.

    ``reader`` returns ``/proc/stat``'s text (or None); ``clock`` is the wall clock;
    ``own`` returns this process's CPU seconds; ``ticks`` is ``/proc/stat``'s jiffies
    per second.  All four are injectable, for the tests."""

    def __init__(self, reader=read_proc_stat, clock=time.monotonic, own=None,
                 ticks=TICKS, children=True):
        self.reader, self.clock, self.ticks = reader, clock, ticks
        self.own = own or (lambda: own_cpu_seconds(children))
        self.other_load = self.wall = self.resolution = self.other_cpu_s = None
        self.ncpus = None
        self._start = None

    def _sample(self):
        busy, ncpus = parse_proc_stat(self.reader())
        return self.clock(), busy, ncpus, self.own()

    def start(self):
        self._start = self._sample()
        return self

    def stop(self):
        """Take the second sample and compute the figures; returns ``other_load``."""
        t1, busy1, ncpus, own1 = self._sample()
        t0, busy0, _, own0 = self._start
        self.wall = t1 - t0
        self.ncpus = ncpus
        if busy0 is None or busy1 is None or self.wall <= 0:
            self.other_load = self.resolution = self.other_cpu_s = None
            return None
        self.other_cpu_s = (busy1 - busy0) / self.ticks - (own1 - own0)
        self.other_load = max(0.0, self.other_cpu_s / self.wall)
        self.resolution = ncpus / self.ticks / self.wall
        return self.other_load

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def info(self):
        """The figures for a benchmark's ``extra_info`` (rounded; None: unknown)."""
        def r(x, n=3):
            return None if x is None else round(x, n)
        return {"other_load": r(self.other_load), "other_load_window_s": r(self.wall, 4),
                "other_load_resolution": r(self.resolution)}


def is_contended(load, resolution=0.0, threshold=CONTENDED_CORES):
    """True / False: whether ``load`` (cores used by others) exceeds ``threshold`` by
    more than its ``resolution`` (so that the tick rounding of a short window does not
    flag a quiet case); None where the load is unknown."""
    if load is None:
        return None
    return load - (resolution or 0.0) > threshold


def describe(load):
    """``other_load`` as text: "0.12 cores", or "unknown" where it is None."""
    return "unknown" if load is None else f"{load:.2f} cores"
