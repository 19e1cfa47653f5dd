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
    python -m bench --from-json bench/results/cpu.json   # rebuild the report only

Where the report goes (``--out`` unless given): ``bench/results/`` (the committed
report) only for a full run started from inside the source tree; a ``--quick`` run, or
any run from another directory (``fastnn bench`` anywhere), writes into
``./fastnn-bench-results`` in the current directory, so the committed results are never
overwritten by accident.  The runner says where it writes before it starts.  A
``--quick`` run's report says so at its top and judges no target ("– (quick run)").

Exit status: 0 when every case passed and the report was written; 1 when a case
failed or nothing ran (the report is still written from what did run); 2 for a usage
error.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from . import report

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
        json_path = Path(tmp) / "results.json"
        cmd = pytest_command(args, json_path)
        print("running: python " + " ".join(shlex.quote(c) for c in cmd[1:]), flush=True)
        rc = subprocess.call(cmd, cwd=ROOT, env=dict(os.environ))
        if not json_path.is_file():
            why = ("no case matched -k " + repr(args.keyword)) if rc == 5 else \
                f"pytest exited with status {rc} and wrote no results"
            print(f"{prog}: error: {why}", file=sys.stderr)
            return 1
        data = json.loads(json_path.read_text(encoding="utf-8"))
    if rc not in (0, 5) or not data.get("benchmarks"):
        print(f"{prog}: warning: pytest exited with status {rc}; the report holds the "
              f"{len(data.get('benchmarks', ()))} cases that ran", file=sys.stderr)
        status = 1
    else:
        status = 0
    data["fastnn_bench_command"] = _command_text(prog, argv)
    data["fastnn_bench_quick"] = bool(args.quick)     # the report: not for quoting
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
    if report.is_quick(data):
        print("(a quick run: its timings check the pipeline and are not for quoting; "
              "no target is judged)")
    return status
