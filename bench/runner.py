"""``python -m bench`` / ``fastnn bench``: run the benchmark suites and write the report.

Runs ``python -m pytest bench --benchmark-only --benchmark-json=...`` in a fresh
process (from the repository root, so the suites see the project's pytest settings),
then writes ``DIR/cpu.md`` (environment, the README's targets with measured ratios,
one table per kernel family), ``DIR/cpu.png`` (time per training step, log scale;
skipped without matplotlib) and ``DIR/cpu.json`` (the raw pytest-benchmark results).
On a machine where the cuda backend ran on a real GPU it also writes
``DIR/<gpu-name>.md`` and ``.png`` (e.g. ``nvidia-h100-80gb-hbm3.md``): the CPU-vs-CUDA
report (GPU, driver and CUDA versions; per case the cuda speed-up over cpu and the
ratios to PyTorch CUDA and CuPy/cuBLAS where installed).

    python -m bench                      # the full run (a few minutes)
    python -m bench --quick              # short timings: checks the pipeline
    python -m bench -k "64-128-10"       # only the matching cases (pytest's -k)
    python -m bench --alternate 3        # each contender in its own process, 3 rounds
    python -m bench --from-json bench/results/cpu.json   # rebuild the report only

Where the report goes (``--out`` unless given): ``bench/results/`` (the committed
report) only for a full run started from inside the source tree; a ``--quick`` run, or
any run from another directory (``fastnn bench`` anywhere), writes into
``./fastnn-bench-results`` in the current directory, so the committed results are never
overwritten by accident.  The runner says where it writes before it starts.  A
``--quick`` run's report says so at its top and judges no target ("– (quick run)").

How busy the machine was: each case records the CPU time other processes used while it
ran (``bench/_busy.py``: /proc/stat minus the run's own CPU time), the runner records it
over the whole run (``data["fastnn_bench_other_load"]``; the pytest process is its
child, so its time counts as the run's own), and the report flags the contended cases
(above ``_busy.CONTENDED_CORES``) and judges no target resting on one.  After the run
it prints each BLAS library's core type and how many cases were contended.

``--alternate N`` runs, N rounds over, one pytest process per contender (``numpy``,
``cpu``, ``torch``, ``gemms``...: bench/conftest.py's ``--fastnn-contender``), the
order rotated each round, and keeps for each case the round whose median is the median
of its quiet (not contended) rounds' medians (see :func:`merge_rounds`).

Exit status: 0 when every case passed and the report was written; 1 when a case
failed or nothing ran (the report is still written from what did run); 2 for a usage
error.
"""
import argparse
import copy
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from . import _busy, report

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DEFAULT_OUT = BENCH_DIR / "results"             # the committed report: full runs only
ELSEWHERE_OUT = "fastnn-bench-results"          # otherwise, in the current directory
QUICK = {"max_time": 0.05, "min_rounds": 3}
FULL = {"max_time": 1.0, "min_rounds": 20}


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser(prog="python -m bench"):
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run fastnn's benchmark suites (bench/bench_*.py) against their "
        "peers (PyTorch and scikit-learn when installed; on a GPU, PyTorch CUDA and "
        "CuPy when installed) and write a markdown report and a chart (and the "
        "CPU-vs-CUDA ones, <gpu-name>.md and .png, when the cuda backend ran).",
        epilog="The machine should be otherwise idle for the full run: timings on a "
        "busy machine vary by tens of percent.")
    p.add_argument("--quick", action="store_true",
                   help=f"short timings (max {QUICK['max_time']} s and at least "
                   f"{QUICK['min_rounds']} rounds per case, one round per whole fit): "
                   "checks the pipeline, not for quoting")
    p.add_argument("--out", metavar="DIR", type=Path, default=None,
                   help=f"where to write cpu.md, cpu.png and cpu.json, and on a GPU "
                   f"<gpu-name>.md and .png (default: {DEFAULT_OUT.relative_to(ROOT)} "
                   "of the source tree for a full run started inside it; else "
                   f"./{ELSEWHERE_OUT} in the current directory)")
    p.add_argument("-k", metavar="EXPR", dest="keyword",
                   help="only the cases matching this pytest -k expression, e.g. "
                   "'64-128-10' or 'train or sklearn'")
    p.add_argument("--min-rounds", type=_positive, metavar="N",
                   help=f"at least N timed rounds per case (default {FULL['min_rounds']}, "
                   f"--quick {QUICK['min_rounds']})")
    p.add_argument("--alternate", type=_positive, metavar="N",
                   help="run each contender (backend or peer: cpu, numpy, torch, ...) "
                   "in its own pytest process, interleaved, N rounds; each case's time "
                   "is the median over its rounds that were not contended")
    p.add_argument("--from-json", type=Path, metavar="FILE",
                   help="run nothing: rebuild the report from a pytest-benchmark JSON "
                   "(e.g. an earlier cpu.json)")
    return p


def default_out(quick=False, cwd=None):
    """The report's folder when --out is not given: the source tree's committed
    ``bench/results`` for a full run started inside the tree, else
    ``./fastnn-bench-results`` in ``cwd`` (default: the current directory)."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    cwd, root = cwd.resolve(), ROOT.resolve()
    if not quick and (cwd == root or root in cwd.parents):
        return DEFAULT_OUT
    return cwd / ELSEWHERE_OUT


def _prepare_out(out):
    """Create ``out`` and make sure a report can be written there: an error message
    naming it, or None.  Checked before the benchmarks run, not after."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the report folder {str(out)!r}: {exc.strerror or exc}"
    if not os.access(out, os.W_OK | os.X_OK):
        return f"cannot write into the report folder {str(out)!r}: permission denied"
    return None


def pytest_command(args, json_path):
    """The pytest command line of a run."""
    mode = QUICK if args.quick else FULL
    cmd = [sys.executable, "-m", "pytest", str(BENCH_DIR), "-q", "-p", "no:cacheprovider",
           "--benchmark-only", f"--benchmark-json={json_path}",
           f"--benchmark-max-time={mode['max_time']}",
           f"--benchmark-min-rounds={args.min_rounds or mode['min_rounds']}",
           "--benchmark-sort=name", "--benchmark-columns=median,iqr,rounds"]
    if args.keyword:
        cmd += ["-k", args.keyword]
    return cmd


def _run_once(args, json_path, extra=()):
    """Run pytest once: (exit status, its JSON or None, why there is none)."""
    cmd = pytest_command(args, json_path) + list(extra)
    print("running: python " + " ".join(shlex.quote(c) for c in cmd[1:]), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT, env=dict(os.environ))
    if not Path(json_path).is_file():
        why = ("no case matched -k " + repr(args.keyword)) if rc == 5 else \
            f"pytest exited with status {rc} and wrote no results"
        return rc, None, why
    return rc, json.loads(Path(json_path).read_text(encoding="utf-8")), None


def contenders(args, tmp):
    """The backends and peers of the selected cases, in the suites' order (a
    collect-only pytest run: bench/conftest.py's --fastnn-contenders-file)."""
    listing = Path(tmp) / "contenders.txt"
    cmd = [sys.executable, "-m", "pytest", str(BENCH_DIR), "-q", "-p", "no:cacheprovider",
           "--collect-only", f"--fastnn-contenders-file={listing}"]
    if args.keyword:
        cmd += ["-k", args.keyword]
    subprocess.call(cmd, cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL)
    return listing.read_text(encoding="utf-8").split() if listing.is_file() else []


def rotations(names, rounds):
    """The order of each round: ``names`` rotated by one more each round, so that no
    contender always runs first (or right after the same neighbour's process)."""
    n = len(names)
    return [names[r % n:] + names[:r % n] for r in range(rounds)] if n else []


def _run_alternating(args, tmp):
    """--alternate N: N rounds, each one pytest process per contender (interleaved),
    merged by :func:`merge_rounds`.  (worst exit status, merged JSON or None, why)."""
    names = contenders(args, tmp)
    if not names:
        return 5, None, ("no case matched -k " + repr(args.keyword) if args.keyword
                         else "no benchmark case was collected")
    runs, worst = [], 0
    for r, order in enumerate(rotations(names, args.alternate)):
        for name in order:
            print(f"round {r + 1} of {args.alternate}: {name}", flush=True)
            rc, data, _ = _run_once(args, Path(tmp) / f"round{r}-{name}.json",
                                    ("--fastnn-contender", name))
            if rc not in (0, 5):
                worst = 1
            if data is not None:
                runs.append(data)
    if not runs:
        return worst or 5, None, "pytest wrote no results"
    merged = merge_rounds(runs)
    merged["fastnn_bench_alternate"] = {"rounds": args.alternate, "contenders": names,
                                        "processes": len(runs)}
    return worst, merged, None


def merge_rounds(runs):
    """One pytest-benchmark JSON from several (``runs``: the processes of
    ``--alternate``, in the order they ran): each case's entry is the one with the
    median (the lower of the middle two) of its medians over its rounds that were not
    contended, or over all its rounds where every one was; ``extra_info["alternate"]``
    holds every round's median and other_load.  Machine and commit info come from the
    first run, with the BLAS libraries of all of them."""
    by_case = {}
    for data in runs:
        for b in data.get("benchmarks") or ():
            if (b.get("stats") or {}).get("median") is not None:
                by_case.setdefault(b.get("fullname") or b.get("name"), []).append(b)
    merged = []
    for entries in by_case.values():
        quiet = [b for b in entries if not (b.get("extra_info") or {}).get("contended")]
        pool = sorted(quiet or entries, key=lambda b: b["stats"]["median"])
        chosen = copy.deepcopy(pool[(len(pool) - 1) // 2])
        chosen.setdefault("extra_info", {})["alternate"] = {
            "rounds": len(entries), "quiet_rounds": len(quiet),
            "medians": [b["stats"]["median"] for b in entries],
            "other_loads": [(b.get("extra_info") or {}).get("other_load")
                            for b in entries]}
        merged.append(chosen)
    out = copy.deepcopy({k: v for k, v in runs[0].items() if k != "benchmarks"})
    out["benchmarks"] = merged
    fi = (out.get("machine_info") or {}).get("fastnn")
    if fi is not None:
        libs = {}
        for data in runs:
            got = ((data.get("machine_info") or {}).get("fastnn") or {}).get(
                "blas_libraries")
            for lib in got if isinstance(got, list) else ():
                libs.setdefault(lib.get("file"), lib)
        if libs:
            fi["blas_libraries"] = list(libs.values())
    return out


def _command_text(prog, argv):
    return " ".join([prog] + [shlex.quote(a) for a in argv])


def main(argv=None, prog="python -m bench"):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)

    if args.from_json:
        try:
            data = json.loads(args.from_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"{prog}: error: cannot read {args.from_json}: {exc}", file=sys.stderr)
            return 1
        quick = bool(data.get("fastnn_bench_quick"))
    else:
        quick = args.quick
    out = (args.out if args.out is not None else default_out(quick)).resolve()
    problem = _prepare_out(out)
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return 1
    if args.out is None:
        if out == DEFAULT_OUT.resolve():
            why = "the source tree's committed report"
        elif quick:
            why = "a quick run never replaces the committed report"
        else:
            why = "not run from inside the source tree"
        print(f"writing the report into {out} ({why}; --out DIR to choose)", flush=True)
    if args.from_json:
        return _write(data, out, _command_text(prog, argv), status=0, prog=prog)

    with tempfile.TemporaryDirectory(prefix="fastnn-bench-") as tmp:
        with _busy.Busy(children=True) as busy:      # pytest is waited for: ours
            if args.alternate:
                rc, data, why = _run_alternating(args, Path(tmp))
            else:
                rc, data, why = _run_once(args, Path(tmp) / "results.json")
        if data is None:
            print(f"{prog}: error: {why}", file=sys.stderr)
            return 1
    if rc not in (0, 5) or not data.get("benchmarks"):
        print(f"{prog}: warning: pytest exited with status {rc}; the report holds the "
              f"{len(data.get('benchmarks', ()))} cases that ran", file=sys.stderr)
        status = 1
    else:
        status = 0
    data["fastnn_bench_command"] = _command_text(prog, argv)
    data["fastnn_bench_quick"] = bool(args.quick)     # the report: not for quoting
    data["fastnn_bench_other_load"] = busy.info()
    (out / "cpu.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return _write(data, out, data["fastnn_bench_command"], status=status, prog=prog)


def _write(data, out, command, status, prog):
    try:
        written = [report.write_report(data, out, command=command),
                   report.write_gpu_report(data, out, command=command)]
    except OSError as exc:
        print(f"{prog}: error: cannot write the report into {out}: {exc}", file=sys.stderr)
        return 1
    for md, png, _ in filter(None, written):       # (no GPU report without cuda cases)
        print(f"wrote {md}" + (f" and {png}" if png else
                               " (chart skipped: see the report)"))
    fi = (data.get("machine_info") or {}).get("fastnn") or {}
    print(report.blas_line(fi)[2:])
    print(report.load_line(data)[2:])
    busy = sorted({g for fam in report.collect(data).values()
                   for g, cases in fam.items() if report.contended_cases(cases)})
    if busy:
        print(f"{prog}: warning: {len(busy)} table rows ran while other processes were "
              "busy (flagged in the report; their targets are not judged): "
              + "; ".join(busy), file=sys.stderr)
    if report.is_quick(data):
        print("(a quick run: its timings check the pipeline and are not for quoting; "
              "no target is judged)")
    return status
