"""Which BLAS runs the training step's GEMMs fastest (issue 15, item 4): the OpenBLAS
builds a fastnn process can reach, at the exact shapes of the README's training steps.

Run: ``python bench/gemm_providers.py [--threads 1,2] [--repeats 7] [--json]``

Providers (each the library's own ``cblas_sgemm``, called from a numba loop through its
C pointer, so no Python call is timed):

- ``scipy``: scipy's bundled OpenBLAS, the library fastnn's GEMMs call today (through
  ``scipy.linalg.cython_blas``; this is the same library's CBLAS entry);
- ``numpy``: numpy's bundled OpenBLAS (ILP64: 64-bit integer arguments);
- ``scipy-openblas32``: the newest OpenBLAS wheel the two are built from (``pip install
  scipy-openblas32``; skipped when it is not installed).

For every step of :data:`STEPS` and every GEMM of the step (``_shared.step_gemms``:
forward, grad_w with its input transposed, grad_x with the weight transposed), each
provider runs enough GEMMs per timed call to last ~20 ms.  Each provider runs in a
process of its own (several OpenBLAS pools in one process fight: with two threads each,
alternating three libraries in one process made the 784-512-256-10 B=32 GEMMs 2-55x
slower), the providers take turns within each of ``--repeats`` rounds, and each child
records the CPU time other processes used meanwhile (``_busy.Busy``).  Printed: per step and thread count, each provider's median time of
the step's GEMMs (sum over the GEMMs of each GEMM's median), the ratio to ``scipy``,
and the rounds' largest other load; ``--json`` the raw medians per GEMM.  Every
provider's output is checked against a float64 product first.
"""
import argparse
import ctypes
import glob
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _busy import Busy, is_contended  # noqa: E402
from _shared import step_gemms  # noqa: E402

STEPS = (((784, 512, 256, 10), 32), ((784, 512, 256, 10), 128), ((64, 128, 10), 32),
         ((64, 128, 10), 256))
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _site_lib(package, pattern):
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = os.path.dirname(list(spec.submodule_search_locations)[0])
    found = sorted(glob.glob(os.path.join(root, pattern)))
    return found[0] if found else None


def providers():
    """[(name, library path, symbol, integer type)] of the providers installed here."""
    out = [("scipy", _site_lib("scipy", "scipy.libs/libscipy_openblas-*.so"),
            "scipy_cblas_sgemm", ctypes.c_int),
           ("numpy", _site_lib("numpy", "numpy.libs/libscipy_openblas64_-*.so"),
            "scipy_cblas_sgemm64_", ctypes.c_int64)]
    try:
        import scipy_openblas32
        path = os.path.join(scipy_openblas32.get_lib_dir(),
                            f"lib{scipy_openblas32.get_library()}.so")
        out.append(("scipy-openblas32", path, "scipy_cblas_sgemm", ctypes.c_int))
    except ImportError:
        pass
    return [p for p in out if p[1] is not None and os.path.exists(p[1])]


def _loop(name, path, symbol, itype):
    """A numba function ``run(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, calls)`` making
    ``calls`` row-major sgemm calls c = op(a) op(b) through the provider's pointer."""
    from numba import njit

    fn = getattr(ctypes.CDLL(path), symbol)
    I, F, P = itype, ctypes.c_float, ctypes.c_void_p
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, I, I, I, F, P, I, P, I, F,
                   P, I]
    fn.restype = None

    @njit
    def run(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, calls):
        for _ in range(calls):
            fn(ROW_MAJOR, ta, tb, m, n, k, np.float32(1.0), a.ctypes.data, lda,
               b.ctypes.data, ldb, np.float32(0.0), c.ctypes.data, ldc)
    return run


def _operands(kind, m, n, k, rng):
    """(ta, tb, a, lda, b, ldb, c) for a step GEMM: forward a(m, k) b(k, n); grad_w
    a^T with a stored (k, m); grad_x b^T with b stored (n, k)."""
    ta = TRANS if kind == "grad_w" else NO_TRANS
    tb = TRANS if kind == "grad_x" else NO_TRANS
    a = rng.standard_normal((k, m) if ta == TRANS else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb == TRANS else (k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    return ta, tb, a, a.shape[1], b, b.shape[1], c


def measure_provider(name, nthreads, target_s=0.02):
    """In this process, only ``name``'s library: the median-free time of every step
    GEMM (seconds per call, one timed batch of calls each): [(step index, gemm name,
    m, n, k, seconds)].  Each product is checked against float64 first."""
    from threadpoolctl import threadpool_limits

    prov = next(p for p in providers() if p[0] == name)
    run = _loop(*prov)
    rng = np.random.default_rng(0)
    out = []
    with threadpool_limits(nthreads):
        for si, (sizes, batch) in enumerate(STEPS):
            for gname, m, n, k in step_gemms(sizes, batch):
                kind = gname.rstrip("0123456789")
                ta, tb, a, lda, b, ldb, c = _operands(kind, m, n, k, rng)
                # the float64 reference on numpy's OpenBLAS with ONE thread: two of its
                # threads would spin after the product, beside the timed library's
                # (scipy's two-thread B=128 step: 2955 us that way, 1.6x its 1-thread)
                with threadpool_limits(1):
                    want = ((a.T if ta == TRANS else a).astype(np.float64)
                            @ (b.T if tb == TRANS else b).astype(np.float64))
                c[...] = np.nan
                run(ta, tb, m, n, k, a, lda, b, ldb, c, n, 1)
                err = np.max(np.abs(c - want)) / max(1.0, np.max(np.abs(want)))
                if not err < 1e-4:
                    raise AssertionError(f"{name} {gname} {m}x{n}x{k}: wrong product "
                                         f"(relative error {err:g})")
                t0 = time.perf_counter()
                run(ta, tb, m, n, k, a, lda, b, ldb, c, n, 10)
                calls = max(1, int(target_s / max((time.perf_counter() - t0) / 10,
                                                  1e-7)))
                t0 = time.perf_counter()
                run(ta, tb, m, n, k, a, lda, b, ldb, c, n, calls)
                out.append((si, gname, m, n, k, (time.perf_counter() - t0) / calls))
    return out


def measure(threads, repeats):
    """Each provider in a process of its own (several OpenBLAS pools in one process
    fight: their threads spin after each call), the providers alternating within
    each of ``repeats`` rounds; the CPU time of other processes recorded per child."""
    import subprocess

    provs = providers()
    results = []
    for nthreads in threads:
        times = {p[0]: {} for p in provs}          # name -> (step, gemm) -> [s]
        loads = {p[0]: [] for p in provs}
        for _ in range(repeats):
            for name, *_ in provs:
                with Busy() as busy:
                    done = subprocess.run(
                        [sys.executable, os.path.abspath(__file__), "--child", name,
                         "--threads", str(nthreads)], capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{name}: {done.stderr[-2000:]}")
                for si, gname, m, n, k, sec in json.loads(done.stdout):
                    times[name].setdefault((si, gname, m, n, k), []).append(sec)
                loads[name].append((busy.other_load, busy.resolution))
        for si, (sizes, batch) in enumerate(STEPS):
            gemms = {name: [(g, m, n, k, statistics.median(v))
                            for (i, g, m, n, k), v in times[name].items() if i == si]
                     for name in times}
            results.append(dict(sizes=sizes, batch=batch, threads=nthreads, gemms=gemms,
                                loads=[ld for name in loads for ld in loads[name]]))
    return provs, results


def print_table(provs, results):
    names = [p[0] for p in provs]
    print("step GEMMs, median µs (sum over the step's GEMMs); ratio to scipy's "
          "OpenBLAS (fastnn's today); other processes' load over the rounds")
    head = f"{'step':28} {'thr':>3} " + " ".join(f"{n:>18}" for n in names) + "  load"
    print(head)
    for r in results:
        total = {n: sum(g[-1] for g in r["gemms"][n]) * 1e6 for n in names}
        cells = " ".join(f"{total[n]:8.1f} ({total[n] / total['scipy']:4.2f}x)"
                         for n in names)
        worst = max((ld for ld, _ in r["loads"] if ld is not None), default=None)
        busy = any(is_contended(ld, res) for ld, res in r["loads"])
        load = "unknown" if worst is None else f"{worst:.2f}" + (" BUSY" if busy else "")
        step = "-".join(map(str, r["sizes"])) + f" B={r['batch']}"
        print(f"{step:28} {r['threads']:>3} {cells}  {load}")
    versions = []
    from threadpoolctl import threadpool_info
    for info in threadpool_info():
        if info.get("internal_api") == "openblas":
            versions.append(f"{os.path.basename(info['filepath'])}: {info['version']} "
                            f"({info.get('architecture')})")
    print("libraries: " + "; ".join(versions))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", default="1,2",
                   help="comma-separated BLAS thread counts (default 1,2)")
    p.add_argument("--repeats", type=int, default=7, help="rounds (default 7)")
    p.add_argument("--json", action="store_true", help="print JSON instead")
    p.add_argument("--child", metavar="PROVIDER", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",") if t]
    if args.child:
        print(json.dumps(measure_provider(args.child, threads[0])))
        return 0
    provs, results = measure(threads, args.repeats)
    if args.json:
        print(json.dumps(dict(providers=[p[:3] for p in provs], results=results)))
    else:
        print_table(provs, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
