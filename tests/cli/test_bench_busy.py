"""``bench/_busy.py``: the CPU time other processes used during a measurement
("other_load", in cores), from /proc/stat minus this process's own CPU time."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _busy  # noqa: E402

HAS_PROC_STAT = _busy.read_proc_stat() is not None


def stat_text(user, system, idle, steal=0, guest=0, ncpus=2):
    """A /proc/stat with these totals (user nice system idle iowait irq softirq steal
    guest guest_nice) and ``ncpus`` per-CPU lines."""
    lines = [f"cpu  {user} 5 {system} {idle} 7 3 2 {steal} {guest} 0"]
    lines += [f"cpu{i} 1 0 1 1 0 0 0 0 0 0" for i in range(ncpus)]
    lines += ["intr 12345 0 0", "ctxt 999", "btime 1700000000", "processes 42"]
    return "\n".join(lines) + "\n"


def test_parse_proc_stat():
    busy, ncpus = _busy.parse_proc_stat(stat_text(100, 50, 9000, steal=4, guest=30,
                                                  ncpus=4))
    assert busy == 100 + 5 + 50 + 3 + 2 + 4      # user nice system irq softirq steal
    assert ncpus == 4                            # not idle, iowait, guest (in user)
    assert _busy.parse_proc_stat("") == (None, None)
    assert _busy.parse_proc_stat(None) == (None, None)


def fake_busy(texts, clocks, owns, ticks=100):
    texts, clocks, owns = iter(texts), iter(clocks), iter(owns)
    return _busy.Busy(reader=lambda: next(texts), clock=lambda: next(clocks),
                      own=lambda: next(owns), ticks=ticks)


def test_other_load_from_a_fake_proc_stat():
    # 2 s of wall time; all CPUs together 300 busy jiffies more (200 user, 80 system,
    # 20 steal: 3.00 CPU s), this process used 1.0 s: others 2.0 s -> 1.0 core
    b = fake_busy([stat_text(1000, 500, 10_000), stat_text(1200, 580, 10_100, steal=20)],
                  [10.0, 12.0], [5.0, 6.0])
    with b:
        pass
    assert b.other_cpu_s == pytest.approx(2.0)
    assert b.other_load == pytest.approx(1.0)
    assert b.resolution == pytest.approx(2 / 100 / 2.0)
    assert b.info() == {"other_load": 1.0, "other_load_window_s": 2.0,
                        "other_load_resolution": 0.01}
    # the process itself was the only one busy: nothing left for the others
    b = fake_busy([stat_text(1000, 500, 10_000), stat_text(1100, 500, 10_100)],
                  [0.0, 1.0], [0.0, 1.0])
    assert b.start().stop() == pytest.approx(0.0)
    # tick rounding can make it come out below 0: reported as 0
    b = fake_busy([stat_text(1000, 500, 10_000), stat_text(1099, 500, 10_100)],
                  [0.0, 1.0], [0.0, 1.02])
    assert b.start().stop() == 0.0


def test_no_proc_stat_is_unknown():
    b = fake_busy([None, None], [0.0, 1.0], [0.0, 0.5])
    with b:
        pass
    assert b.other_load is None and b.resolution is None
    assert b.info()["other_load"] is None
    assert _busy.describe(None) == "unknown"
    assert _busy.describe(0.5) == "0.50 cores"
    assert _busy.read_proc_stat("/nonexistent/proc/stat") is None


BUSY_LOOP = "import time\nt = time.time()\nwhile time.time() - t < {}: pass\n"


@pytest.mark.skipif(not HAS_PROC_STAT, reason="no /proc/stat (not Linux)")
def test_detects_a_busy_process_beside_it():
    """A child spinning on a core while this process sleeps: others used about one
    core.  (It is not waited for inside the window, so it is not counted as ours.)"""
    child = subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(3.0)])
    try:
        time.sleep(0.5)                 # let it start (interpreter start-up)
        with _busy.Busy() as busy:
            time.sleep(1.0)
    finally:
        child.kill()
        child.wait()
    assert busy.other_load is not None
    assert busy.other_load > 0.6, busy.info()
    assert busy.resolution < 0.1


@pytest.mark.skipif(not HAS_PROC_STAT, reason="no /proc/stat (not Linux)")
def test_own_busy_loop_is_not_others():
    """This process spinning is its own time: the spin does not show as others' load
    (beyond what other processes on this shared machine used meanwhile), and a child
    run to completion inside the window counts as this process's time."""
    before = _busy.own_cpu_seconds()
    subprocess.run([sys.executable, "-c", BUSY_LOOP.format(0.4)], check=True)
    assert _busy.own_cpu_seconds() - before >= 0.3                 # the child's, waited
    assert _busy.own_cpu_seconds(children=False) - before < 0.3    # not without kids
    spin = _busy.Busy()
    ref = _busy.Busy(own=lambda: 0.0)   # the same window, own time not subtracted
    spin.start(), ref.start()
    t = time.time()
    while time.time() - t < 1.0:
        pass
    spin.stop(), ref.stop()
    assert ref.other_cpu_s - spin.other_cpu_s > 0.8       # the spin was subtracted
