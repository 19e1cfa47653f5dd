"""Turn a pytest-benchmark JSON (``--benchmark-json``) of the suites into the markdown
reports and the charts that ``python -m bench`` writes (``cpu.md``, ``cpu.png``, and
where the run has cuda cases ``<gpu-name>.md`` and ``<gpu-name>.png``).

Pure functions of the JSON dict, so they are tested without running any benchmark:

- :func:`collect`: family -> group -> backend/peer -> case (median seconds, extra_info);
- :func:`build_markdown`: the environment, the targets table (each target with its
  measured ratio, goal and met / not met) and one table per family with the median
  time per backend/peer and the ratios ``X/cpu`` (above 1: cpu is faster) and
  ``cpu/floor`` where the group has a floor peer (``copy``: the memory floor, scaled by
  the bytes each moves; ``gemms``: the step's GEMMs alone);
- :func:`write_chart`: grouped bars of the time per training step per case and
  backend/peer, log scale (matplotlib, Agg); returns False when matplotlib is missing;
- :func:`write_report`: both into a directory;
- :func:`build_gpu_markdown` / :func:`write_gpu_report`: the CPU-vs-CUDA report of a
  run with cuda cases (``<gpu-name>.md`` and ``.png``, named by :func:`gpu_slug`): the
  GPU, driver and CUDA versions, and per case the cpu and cuda times, the cuda
  speed-up over cpu and the GPU peers' time over cuda's (``torch_cuda``, ``cupy``).

A peer that did not run (torch or scikit-learn not installed, a ``-k`` that left it
out) shows as "–" and its targets as not measured.  A ``--quick`` run (recorded by the
runner as ``data["fastnn_bench_quick"]``) says so at the top of each report and in its
chart's title, and judges no target: its verdicts read "– (quick run)".

Contention: each case's ``extra_info["other_load"]`` (cores other processes used while
it ran, recorded by ``bench/conftest.py``; see ``bench/_busy.py``) and
``extra_info["contended"]``.  A table with a contended case gets a "contended" column
naming them; a target resting on a contended case is not judged: "– (contended: other
processes used X cores)".  The header gives each BLAS library's core type (threadpoolctl's
"architecture"), whether OPENBLAS_CORETYPE is set, and the load over the run.
"""
import math
import re
from pathlib import Path

try:                                    # as bench.report (the runner, the tests)
    from ._busy import CONTENDED_CORES, is_contended
except ImportError:                     # as a top-level module, beside _busy.py
    from _busy import CONTENDED_CORES, is_contended

REFERENCE = "cpu"                       # the backend every ratio is taken against
FLOORS = ("gemms", "copy")              # peers that are floors, not competitors
COLUMN_ORDER = ("numpy", "cpu", "cpu_float32", "cpu_train_step", "cuda", "torch",
                "torch_cuda", "torch_foreach", "torch_fused", "cupy", "sklearn", "gemms",
                "copy")
DASH = "–"
QUICK_VERDICT = f"{DASH} (quick run)"
QUICK_NOTE = ("**Quick run (`--quick`): short timings that check the pipeline, not for "
              "quoting.  No target is judged; a full run (without `--quick`) on an "
              "otherwise idle machine measures them.**")
GPU_BACKEND = "cuda"                    # the backend of the CPU-vs-CUDA report
GPU_PEERS = ("torch_cuda", "cupy")      # its peers on the GPU, each compared with it

# family -> (title, suite, what its rows are)
FAMILIES = {
    "train": ("Training steps", "bench_train.py",
              "one step: zero_grad, forward, cross-entropy, backward, optimizer step "
              "(five calls); `cpu_train_step` = the same step as one "
              "`model.train_step` call (one compiled call); `gemms` = the step's "
              "GEMMs alone through fastnn's BLAS"),
    "sklearn": ("Whole fit against scikit-learn", "bench_sklearn.py",
                "digits, 64-128-10 relu, Adam lr 1e-3, batch 200, 200 epochs; the "
                "whole `fit` call"),
    "estimators": ("scikit-learn estimators", "bench_estimators.py",
                   "`fastnn.sklearn.MLPClassifier` (`cpu`: float64, scikit-learn's "
                   "model to rounding; `cpu_float32`: dtype=np.float32) against "
                   "`sklearn.neural_network.MLPClassifier`, the same parameters; the "
                   "whole `fit` call"),
    "dense": ("Dense layers", "bench_dense.py",
              "forward z = xW + b; backward grad_w += scale x^T grad_z, "
              "grad_x = grad_z W^T"),
    "activations": ("Activations", "bench_activations.py",
                    "forward a = f(z); backward grad_z = grad_a f'(z, a) and the "
                    "bias-gradient sum, one pass; `copy` = the memory floor"),
    "losses": ("Losses (value and gradient)", "bench_losses.py",
               "`copy` = the memory floor"),
    "optim": ("Optimizer steps", "bench_optim.py",
              "one step over a flat float32 buffer; `copy` = the memory floor"),
    "accumulation": ("Gradient accumulation", "bench_accumulation.py",
                     "the gradient of one batch of 256, whole or as 4 micro-batches "
                     "of 64 (no optimizer step)"),
}

_TRAIN = "train_step {} B={} {}"
# The README's targets (issue 15's; the first round's where it set none): (label,
# group, numerator, denominator, op, goal).  Ratios are median(numerator) /
# median(denominator); "floor" is the group's floor time; "us": the numerator's own
# median in microseconds; "test_accuracy": the numerator's recorded accuracy;
# "accuracy_gap": how many points the numerator's test accuracy is below sklearn's.  The
# step targets judge ``cpu_train_step``, the one-call ``model.train_step`` (the
# five-call ``cpu`` case is in the tables beside it).
_ONE = "cpu_train_step"
_EST_ADAM = "estimator digits 64-128-10 adam 200 epochs"
_EST_LBFGS = "estimator digits 64-128-10 lbfgs max_iter 200"
TARGETS = (
    ("784-512-256-10, B=32, SGD: torch / cpu train_step",
     _TRAIN.format("784-512-256-10", 32, "sgd"), "torch", _ONE, ">=", 3.5),
    ("784-512-256-10, B=128, SGD: torch / cpu train_step",
     _TRAIN.format("784-512-256-10", 128, "sgd"), "torch", _ONE, ">=", 2.8),
    ("784-512-256-10, B=128, SGD: cpu / its GEMMs alone",
     _TRAIN.format("784-512-256-10", 128, "sgd"), "cpu", "gemms", "<=", 1.15),
    ("784-512-256-10, B=128, Adam: torch / cpu train_step",
     _TRAIN.format("784-512-256-10", 128, "adam"), "torch", _ONE, ">=", 4.0),
    ("64-128-10, B=32, SGD: torch / cpu train_step",
     _TRAIN.format("64-128-10", 32, "sgd"), "torch", _ONE, ">=", 15.0),
    ("64-128-10, B=32, SGD: cpu train_step per step",
     _TRAIN.format("64-128-10", 32, "sgd"), _ONE, "us", "<=", 22.0),
    ("64-128-10, B=256, Adam: torch / cpu train_step",
     _TRAIN.format("64-128-10", 256, "adam"), "torch", _ONE, ">=", 6.0),
    ("gelu forward 1024x512: cpu / torch", "activation_forward gelu 1024x512", "cpu",
     "torch", "<=", 1.0),
    ("BCE-with-logits value + gradient 1024x512: cpu / torch",
     "loss bce_with_logits 1024x512", "cpu", "torch", "<=", 1.0),
    ("MSE value + gradient 1024x512: cpu / torch", "loss mse 1024x512", "cpu", "torch",
     "<=", 1.0),
    ("MSE value + gradient 1024x512: cpu / memory floor", "loss mse 1024x512", "cpu",
     "floor", "<=", 1.2),
    ("sigmoid gradient (activation_backward) 1024x512: cpu / memory floor",
     "activation_backward sigmoid 1024x512", "cpu", "floor", "<=", 1.5),
    ("softmax-CE value + gradient 1024x512: cpu / memory floor",
     "loss cross_entropy 1024x512", "cpu", "floor", "<=", 2.0),
    ("digits 64-128-10 fit, Adam, batch 200, 200 epochs: sklearn / cpu",
     "fit digits 64-128-10 adam B=200 200 epochs", "sklearn", "cpu", ">=", 10.0),
    ("digits fit: fastnn (cpu) test accuracy",
     "fit digits 64-128-10 adam B=200 200 epochs", "cpu", "test_accuracy", ">=", 0.98),
    # issue 16's: fastnn.sklearn against scikit-learn, the same parameters
    ("MLPClassifier, digits, adam, 200 epochs: sklearn / fastnn.sklearn",
     _EST_ADAM, "sklearn", "cpu", ">=", 10.0),
    ("MLPClassifier, digits, adam: test accuracy, points below sklearn's", _EST_ADAM, "cpu",
     "accuracy_gap", "<=", 0.5),
    ("MLPClassifier, digits, lbfgs, max_iter 200: sklearn / fastnn.sklearn",
     _EST_LBFGS, "sklearn", "cpu", ">=", 4.0),
    ("MLPClassifier, digits, lbfgs: test accuracy, points below sklearn's", _EST_LBFGS,
     "cpu",
     "accuracy_gap", "<=", 0.5),
)


# ---- reading the JSON ------------------------------------------------------------------
def _family_of(bench):
    info = bench.get("extra_info") or {}
    if info.get("family"):
        return info["family"]
    m = re.search(r"bench_(\w+)\.py", bench.get("fullname", ""))
    return m.group(1) if m else "other"


def _peer_of(bench):
    info = bench.get("extra_info") or {}
    if info.get("backend"):
        return info["backend"]
    params = bench.get("params") or {}
    for key in ("backend", "impl"):
        if key in params:
            return str(params[key])
    return bench.get("param") or bench.get("name", "?")


def collect(data):
    """{family: {group: {peer: {"median": s, "info": extra_info, "stats": stats}}}},
    in the order the cases ran."""
    out = {}
    for bench in data.get("benchmarks", ()):
        stats = bench.get("stats") or {}
        if stats.get("median") is None:
            continue
        group = bench.get("group") or bench.get("name", "?")
        out.setdefault(_family_of(bench), {}).setdefault(group, {})[_peer_of(bench)] = {
            "median": float(stats["median"]), "info": bench.get("extra_info") or {},
            "stats": stats}
    return out


def _ordered_families(families):
    known = [f for f in FAMILIES if f in families]
    return known + sorted(f for f in families if f not in FAMILIES)


def _ordered_peers(peers):
    known = [p for p in COLUMN_ORDER if p in peers]
    return known + sorted(p for p in peers if p not in COLUMN_ORDER)


def floor_time(cases):
    """The floor of a group in seconds, or None: the ``gemms`` peer's time, or the
    ``copy`` peer's time scaled by (the kernel's bytes / the copy's bytes)."""
    if "gemms" in cases:
        return cases["gemms"]["median"]
    if "copy" in cases:
        copy = cases["copy"]
        moved = next((c["info"].get("bytes") for p, c in cases.items()
                      if p not in FLOORS and c["info"].get("bytes")), None)
        copied = copy["info"].get("bytes")
        if moved and copied:
            return copy["median"] * moved / copied
        return copy["median"]
    return None


def _time(cases, peer):
    if peer == "floor":
        return floor_time(cases)
    case = cases.get(peer)
    return None if case is None else case["median"]


def ratio(cases, num, den):
    """median(num) / median(den) within one group (None when either is missing)."""
    a, b = _time(cases, num), _time(cases, den)
    if a is None or not b:
        return None
    return a / b


def contended_load(case):
    """The cores other processes used while ``case`` ran when that made it contended
    (``extra_info["contended"]``, else judged from ``other_load`` and its
    resolution), else None (quiet, or not recorded)."""
    if case is None:
        return None
    info = case["info"]
    load = info.get("other_load")
    flag = info.get("contended")
    if flag is None:
        flag = is_contended(load, info.get("other_load_resolution"))
    return load if flag else None


def contended_cases(cases, peers=None):
    """{peer: cores used by others} of the contended cases of a group (only
    ``peers`` when given; "floor" stands for the group's floor peer)."""
    if peers is not None:
        peers = [q for p in peers for q in ((p,) if p != "floor" else FLOORS)]
    out = {}
    for peer, case in cases.items():
        if peers is not None and peer not in peers:
            continue
        load = contended_load(case)
        if load is not None:
            out[peer] = load
    return out


def contended_verdict(load):
    return f"{DASH} (contended: other processes used {load:.2f} cores)"


def is_quick(data):
    """Whether ``data`` is from a ``--quick`` run (its timings are not for quoting)."""
    return bool(data.get("fastnn_bench_quick"))


def evaluate_targets(groups, quick=False):
    """[(label, measured or None, goal text, verdict)] for :data:`TARGETS` given the
    {group: cases} of a run; ``quick``: a ``--quick`` run, whose measured targets are
    shown but not judged (verdict :data:`QUICK_VERDICT`).  A timing target whose
    cases include a contended one (see :func:`contended_load`) is not judged either:
    :func:`contended_verdict` (the test accuracy, not a timing, still is)."""
    rows = []
    for label, group, num, den, op, goal in TARGETS:
        cases = groups.get(group, {})
        if den == "test_accuracy":
            case = cases.get(num)
            value = None if case is None else case["info"].get("test_accuracy")
            full = case is not None and case["info"].get("epochs") == 200
            shown = None if value is None else f"{100 * value:.2f}%"
            peer = cases.get("sklearn")
            if shown and peer and peer["info"].get("test_accuracy") is not None:
                shown += f" (sklearn {100 * peer['info']['test_accuracy']:.2f}%)"
            if value is not None and not full:
                shown += f" after {case['info'].get('epochs')} epochs"
            goal_text = f"{'≥' if op == '>=' else '≤'} {100 * goal:g}%"
        elif den == "accuracy_gap":
            mine, peer = cases.get(num), cases.get("sklearn")
            accs = [None if c is None else c["info"].get("test_accuracy")
                    for c in (mine, peer)]
            value = None if None in accs else 100 * (accs[1] - accs[0])
            shown = None if value is None else \
                f"{value:+.2f} ({100 * accs[0]:.2f}% vs {100 * accs[1]:.2f}%)"
            goal_text = f"{'≥' if op == '>=' else '≤'} {goal:g}"
        elif den == "us":
            value = _time(cases, num)
            value = None if value is None else value * 1e6
            shown = None if value is None else f"{value:.1f} µs"
            goal_text = f"{'≥' if op == '>=' else '≤'} {goal:g} µs"
        else:
            value = ratio(cases, num, den)
            shown = None if value is None else f"{value:.2f}×"
            goal_text = f"{'≥' if op == '>=' else '≤'} {goal:g}×"
        busy = {} if den in ("test_accuracy", "accuracy_gap") else \
            contended_cases(cases, (num, den))
        if value is None:
            verdict = f"{DASH} (not measured)"
        elif quick:
            verdict = QUICK_VERDICT
        elif busy:
            verdict = contended_verdict(max(busy.values()))
        else:
            met = value >= goal if op == ">=" else value <= goal
            verdict = "met" if met else "**not met**"
        rows.append((label, shown, goal_text, verdict))
    return rows


# ---- formatting ------------------------------------------------------------------------
def _fmt_time(seconds, unit):
    if seconds is None:
        return DASH
    v = seconds * (1e6 if unit == "µs" else 1e3)
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _fmt_ratio(value):
    return DASH if value is None else f"{value:.2f}"


def _rate(case):
    if case is None or not case["median"]:
        return DASH
    info = case["info"]
    if info.get("flops"):
        return f"{info['flops'] / case['median'] / 1e9:.0f} GFLOP/s"
    if info.get("bytes"):
        return f"{info['bytes'] / case['median'] / 1e9:.1f} GB/s"
    return DASH


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _unit(groups):
    """The time unit of a table: ms when every time is 10 ms or more, else µs."""
    medians = [c["median"] for cases in groups.values() for c in cases.values()]
    return "ms" if medians and min(medians) >= 0.01 else "µs"


def family_table(groups):
    """The markdown table of one family: {group: {peer: case}}."""
    peers = _ordered_peers({p for cases in groups.values() for p in cases})
    unit = _unit(groups)
    others = [p for p in peers if p != REFERENCE and p not in FLOORS]
    has_floor = any(floor_time(cases) is not None for cases in groups.values())
    busy = {group: contended_cases(cases) for group, cases in groups.items()}
    header = (["case"] + [f"{p} ({unit})" for p in peers]
              + [f"{p}/{REFERENCE}" for p in others]
              + ([f"{REFERENCE}/floor"] if has_floor else []) + [f"{REFERENCE} rate"]
              + (["contended"] if any(busy.values()) else []))
    rows = []
    for group, cases in groups.items():
        row = [group] + [_fmt_time(_time(cases, p), unit) for p in peers]
        row += [_fmt_ratio(ratio(cases, p, REFERENCE)) for p in others]
        if has_floor:
            row.append(_fmt_ratio(ratio(cases, REFERENCE, "floor")))
        row.append(_rate(cases.get(REFERENCE)))
        if any(busy.values()):
            row.append(_contended_cell(busy[group]))
        rows.append(row)
    return _table(header, rows)


def _contended_cell(busy):
    """The "contended" cell of a row: "**yes**: torch 0.97, numpy 0.40 cores", or ""."""
    if not busy:
        return ""
    return "**yes**: " + ", ".join(f"{p} {busy[p]:.2f}" for p in _ordered_peers(busy)) \
        + " cores"


def blas_line(fi):
    """The header's BLAS line: each library's core type (threadpoolctl's
    "architecture") and whether OPENBLAS_CORETYPE is set."""
    libs = fi.get("blas_libraries")
    coretype = fi.get("OPENBLAS_CORETYPE")
    env = ("OPENBLAS_CORETYPE=" + coretype + " (set)") if coretype else \
        "OPENBLAS_CORETYPE not set"
    if isinstance(libs, list) and libs:
        text = "; ".join(
            f"{lib.get('internal_api') or '?'} {lib.get('version') or ''}".rstrip()
            + f" (`{lib.get('file') or '?'}`, {lib.get('num_threads') or DASH} threads):"
            f" core type {lib.get('architecture') or 'unknown'}" for lib in libs)
        return f"- BLAS (threadpoolctl): {text}; {env}"
    if isinstance(libs, str):                   # threadpoolctl failed: why
        return f"- BLAS: {libs}; {env}"
    # older runs recorded the kernels only
    return (f"- BLAS: OpenBLAS kernels {', '.join(fi.get('blas_kernels') or [DASH])} "
            f"(threadpoolctl); {env}")


def load_line(data):
    """The header's line on how busy the machine was: other processes' CPU time over
    the run and per case, and how many cases were contended."""
    benches = [b for b in data.get("benchmarks") or () if (b.get("stats") or {})
               .get("median") is not None]
    infos = [b.get("extra_info") or {} for b in benches]
    recorded = [i for i in infos if "other_load" in i]
    run = data.get("fastnn_bench_other_load") or {}
    parts = []
    if run:
        load = run.get("other_load")
        parts.append("other processes used "
                     + ("unknown CPU time (no /proc/stat)" if load is None else
                        f"{load:.2f} cores") + " over the whole run")
    if not recorded:
        parts.append("per case: not recorded by this run")
    else:
        loads = [i["other_load"] for i in recorded if i["other_load"] is not None]
        if not loads:
            parts.append("per case: unknown (no /proc/stat)")
        else:
            busy = [c for c in ({"info": i} for i in recorded)
                    if contended_load(c) is not None]
            parts.append(f"per case {min(loads):.2f}–{max(loads):.2f} cores "
                         f"(each over its timed call); {len(busy)} of {len(recorded)} "
                         f"cases contended (above {CONTENDED_CORES:g} cores"
                         " beyond the figure's resolution)")
    return "- machine load (/proc/stat minus fastnn's own CPU time): " + "; ".join(parts)


def _fit_details(groups):
    """Per-peer details of whole-fit groups (accuracy, epochs run, time per step)."""
    rows = []
    for group, cases in groups.items():
        for peer in _ordered_peers(cases):
            info = cases[peer]["info"]
            if "test_accuracy" not in info:
                continue
            steps = info.get("steps")
            per_step = cases[peer]["median"] / steps if steps else None
            rows.append([group, peer, f"{100 * info['test_accuracy']:.2f}%",
                         f"{info.get('n_iter', DASH)} of {info.get('epochs', DASH)}",
                         steps if steps else DASH, _fmt_time(per_step, "µs"),
                         info.get("dtype", DASH)])
    if not rows:
        return ""
    return _table(["case", "who", "test accuracy", "epochs run", "optimizer steps",
                   "µs per step", "dtype"], rows)


def _environment_lines(data):
    mi = data.get("machine_info") or {}
    fi = mi.get("fastnn") or {}
    versions = fi.get("versions") or {}
    cpu = fi.get("cpu_model") or (mi.get("cpu") or {}).get("brand_raw") or DASH
    cores = fi.get("cpus_available") or (mi.get("cpu") or {}).get("count")
    lines = [f"- date: {data.get('datetime', DASH)}",
             f"- machine: {cpu}, {cores if cores else DASH} cores available"
             + (f" ({fi['cpu_count']} online)" if fi.get("cpu_count") else ""),
             f"- threads: {fi.get('threads', DASH)} (fastnn's BLAS pool, and torch's "
             "intra-op pool in the torch cases); fastnn's numba kernels "
             + ("run serially" if fi.get("fastnn_parallel_min") is None else
                f"run in parallel from {fi['fastnn_parallel_min']} elements"),
             "- versions: " + ", ".join(
                 f"{k} {v if v else 'not installed'}" for k, v in versions.items())
             + (f", python {fi['python']}" if fi.get("python") else ""),
             blas_line(fi), load_line(data)]
    commit = data.get("commit_info") or {}
    if commit.get("id"):
        lines.append(f"- commit: {commit['id'][:12]}"
                     + (" (uncommitted changes)" if commit.get("dirty") else ""))
    benches = data.get("benchmarks") or []
    if benches:
        opts = benches[0].get("options") or {}
        rounds = sorted(b.get("stats", {}).get("rounds", 0) for b in benches)
        lines.append(f"- timing: pytest-benchmark, median of each case's rounds "
                     f"({rounds[0]}–{rounds[-1]} rounds; min_rounds "
                     f"{opts.get('min_rounds', DASH)}, max_time "
                     f"{opts.get('max_time', DASH)} s), float32 unless noted")
    alt = data.get("fastnn_bench_alternate")
    if alt:
        quiet = [((b.get("extra_info") or {}).get("alternate") or {}).get("quiet_rounds")
                 for b in benches]
        quiet = [q for q in quiet if q is not None]
        lines.append(f"- alternated (`--alternate {alt.get('rounds')}`): each contender "
                     f"({', '.join(alt.get('contenders') or ())}) in its own process, "
                     "interleaved, the order rotated each round; each case's time is "
                     "the median of its quiet rounds' medians"
                     + (f" ({min(quiet)}–{max(quiet)} quiet rounds of "
                        f"{alt.get('rounds')})" if quiet else ""))
    return lines


def _made_by(data, command):
    """The "Made by" paragraph: the run's own command (recorded by the runner as
    ``data["fastnn_bench_command"]``) first, then ``command`` if it differs."""
    made = data.get("fastnn_bench_command") or command     # the run's own command
    if not made:
        return []
    return [f"Made by `{made}`."
            + (f"  (Report rebuilt by `{command}`.)" if command and command != made
               else ""), ""]


def _chart_lines(chart, alt):
    if chart and chart.endswith(".png"):
        return [f"![{alt}]({chart})", ""]
    return [f"(Chart: {chart})", ""] if chart else []


def build_markdown(data, chart=None, command=None):
    """The report as markdown.  ``chart``: the PNG's file name when one was written, or
    a sentence saying why not; ``command``: the command making this report (the run's
    own, recorded by the runner as ``data["fastnn_bench_command"]``, comes first)."""
    families = collect(data)
    groups = {g: cases for fam in families.values() for g, cases in fam.items()}
    out = ["# fastnn benchmarks: cpu backend against its peers", ""]
    out += [QUICK_NOTE, ""] if is_quick(data) else []
    out += _made_by(data, command)
    out += _environment_lines(data)
    out += ["", "Times are medians.  A ratio `X/cpu` above 1 means fastnn's cpu backend "
            "is that many times faster than X; `cpu/floor` is the cpu time over the "
            "group's floor (`gemms`: the step's GEMMs alone; `copy`: an `np.copyto` of "
            "the same bytes, measured in the same run).  \"–\": not measured here "
            "(peer not installed, or left out by `-k`).", ""]
    out += ["## Targets", "",
            _table(["target", "measured", "goal", "verdict"],
                   [(label, shown or DASH, goal, verdict)
                    for label, shown, goal, verdict
                    in evaluate_targets(groups, quick=is_quick(data))]), ""]
    out += _chart_lines(chart, "time per training step")
    for fam in _ordered_families(families):
        title, suite, what = FAMILIES.get(fam, (fam, f"bench_{fam}.py", ""))
        out += [f"## {title}", "", f"`bench/{suite}`" + (f": {what}." if what else "."),
                "", family_table(families[fam]), ""]
        details = _fit_details(families[fam])
        if details:
            out += [details, ""]
    return "\n".join(out)


# ---- the CPU-vs-CUDA report -----------------------------------------------------------
GPU_CHART_PEERS = (GPU_BACKEND, REFERENCE) + GPU_PEERS   # cuda first: see chart_series
# family -> what its GPU peers are, where that is not the family's general description
GPU_NOTES = {
    "dense": "`torch_cuda`: `torch.addmm` / `addmm_` + `mm`; `cupy`: `cupy.matmul` and "
             "a bias add forward, two cuBLAS GEMMs backward",
    "train": "`torch_cuda`: the same step in PyTorch on the GPU; `cupy`: the step's "
             "GEMMs alone, one cuBLAS call each (the GPU's floor of a step, as `gemms` "
             "is the CPU's)",
}


def _gpu(data):
    return ((data.get("machine_info") or {}).get("fastnn") or {}).get("gpu") or {}


def gpu_name(data):
    """The name of the GPU the cuda cases ran on (recorded by bench/conftest.py)."""
    return _gpu(data).get("name") or "GPU"


def gpu_slug(name):
    """The file name of a GPU's report: "NVIDIA H100 80GB HBM3" ->
    "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def has_cuda(data):
    """Whether the run has a measured cuda case."""
    return any(GPU_BACKEND in cases for fam in collect(data).values()
               for cases in fam.values())


def cuda_table(groups):
    """The CPU-vs-CUDA table of one family's groups that have a cuda case (None when
    none has): cpu, cuda and GPU-peer times, the cuda speed-up (cpu time / cuda time)
    and each GPU peer's time over cuda's (above 1: fastnn's cuda is faster)."""
    groups = {g: cases for g, cases in groups.items() if GPU_BACKEND in cases}
    if not groups:
        return None
    peers = [p for p in GPU_PEERS if any(p in cases for cases in groups.values())]
    unit = _unit(groups)
    header = (["case"] + [f"{p} ({unit})" for p in (REFERENCE, GPU_BACKEND, *peers)]
              + [f"cuda speed-up ({REFERENCE}/{GPU_BACKEND})"]
              + [f"{p}/{GPU_BACKEND}" for p in peers])
    rows = []
    for group, cases in groups.items():
        row = [group] + [_fmt_time(_time(cases, p), unit)
                         for p in (REFERENCE, GPU_BACKEND, *peers)]
        row += [_fmt_ratio(ratio(cases, p, GPU_BACKEND)) for p in (REFERENCE, *peers)]
        rows.append(row)
    return _table(header, rows)


def _gpu_lines(data):
    """The GPU, its driver and CUDA versions, and the GPU stack's versions."""
    gpu = _gpu(data)
    versions = gpu.get("versions") or {}
    cc, sms, mem = (gpu.get(k) for k in ("compute_capability", "multiprocessors",
                                          "memory_bytes"))
    about = ", ".join(x for x in (cc and f"compute capability {cc}",
                                  sms and f"{sms} multiprocessors",
                                  isinstance(mem, int) and f"{mem / 2 ** 30:.0f} GiB")
                     if x)
    stack = []
    for k in ("numba", "numba-cuda", "torch", "cupy"):
        v = versions.get(k)
        stack.append(f"{k} {v}" if v else f"{k} not installed")
        if k == "torch" and v and versions.get("torch_cuda"):
            stack[-1] += f" (CUDA {versions['torch_cuda']})"
    return [f"- GPU: {gpu_name(data)}" + (f" ({about})" if about else ""),
            f"- NVIDIA driver {gpu.get('nvidia_driver') or DASH} (CUDA driver API "
            f"{gpu.get('cuda_driver_api') or DASH}); CUDA runtime "
            f"{gpu.get('cuda_runtime') or DASH} (the toolkit numba-cuda compiles with)",
            "- GPU stack: " + ", ".join(stack)]


def build_gpu_markdown(data, chart=None, command=None):
    """The CPU-vs-CUDA report as markdown: one table per family of the groups with a
    cuda case (``chart`` and ``command`` as for :func:`build_markdown`)."""
    families = collect(data)
    out = [f"# fastnn benchmarks: cuda backend on {gpu_name(data)} against cpu and "
           "the GPU peers", ""]
    out += [QUICK_NOTE, ""] if is_quick(data) else []
    out += _made_by(data, command)
    env = _environment_lines(data)          # its first line is the date
    out += env[:1] + _gpu_lines(data) + env[1:]
    out += ["", "Times are medians; every timed call of a GPU case ends with a device "
            "synchronisation (`numba.cuda.synchronize`, `torch.cuda.synchronize`, "
            "CuPy's `Device.synchronize`) and its inputs are on the GPU before timing.  "
            f"`cuda speed-up` is the {REFERENCE} time over the {GPU_BACKEND} time (above "
            f"1: the GPU is faster); `X/{GPU_BACKEND}` is a GPU peer's time over "
            f"fastnn's {GPU_BACKEND} time (above 1: fastnn is faster).  \"–\": not "
            "measured here (peer not installed, or left out by `-k`).", ""]
    out += _chart_lines(chart, "time per training step, cpu vs cuda")
    for fam in _ordered_families(families):
        table = cuda_table(families[fam])
        if table is None:
            continue
        title, suite, _ = FAMILIES.get(fam, (fam, f"bench_{fam}.py", ""))
        note = GPU_NOTES.get(fam)
        out += [f"## {title}", "", f"`bench/{suite}`" + (f": {note}." if note else "."),
                "", table, ""]
    return "\n".join(out)


# ---- the chart -------------------------------------------------------------------------
def chart_series(data, peers=None):
    """(case labels, {peer: [seconds per training step or None per case]}) for the
    chart: the training-step groups (in the targets' order), then whole fits divided by
    their optimizer steps.  ``peers``: only these, and only the groups where the first
    of them ran (the GPU chart: the groups with a cuda case); default: all."""
    families = collect(data)
    train = families.get("train", {})
    order = [g for g in dict.fromkeys(t[1] for t in TARGETS) if g in train]
    order += [g for g in train if g not in order]
    cases = [(g, train[g], 1) for g in order]
    for g, group_peers in families.get("sklearn", {}).items():
        cases.append((g, group_peers, "steps"))
    if peers is not None:
        cases = [(g, {p: c[p] for p in peers if p in c}, per)
                 for g, c, per in cases if peers[0] in c]
    labels, series = [], {}
    peers = _ordered_peers({p for _, c, _ in cases for p in c})
    for group, peer_cases, per in cases:
        if per == "steps":
            label = "digits fit,\nper step"
        else:
            label = group.replace("train_step ", "").replace(" B=", "\nB=")
        labels.append(label)
        for p in peers:
            case = peer_cases.get(p)
            t = None
            if case is not None:
                steps = case["info"].get("steps") if per == "steps" else 1
                t = case["median"] / steps if steps else None
            series.setdefault(p, []).append(t)
    return labels, series


def write_chart(data, path, peers=None, title=None):
    """Grouped bars of the time per training step, log scale, into ``path`` (PNG)
    (``peers``: as :func:`chart_series`; ``title``: instead of the cpu report's).
    Returns False (and writes nothing) when matplotlib is missing or there is nothing
    to draw."""
    labels, series = chart_series(data, peers)
    if not labels:
        return False
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(labels) + 2), 4.8))
    for k, (peer, times) in enumerate(series.items()):
        xs = [i + (k - (n - 1) / 2) * width for i, t in enumerate(times) if t]
        ys = [t * 1e6 for t in times if t]
        bars = ax.bar(xs, ys, width * 0.95, label=peer)
        for bar, y in zip(bars, ys):
            ax.annotate(f"{y:.0f}" if y >= 10 else f"{y:.1f}",
                        (bar.get_x() + bar.get_width() / 2, y), ha="center",
                        va="bottom", fontsize=6, rotation=90, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("µs per training step (median, log scale)")
    mi = (data.get("machine_info") or {}).get("fastnn") or {}
    ax.set_title((title or "fastnn training step vs peers, float32"
                  + (f", {mi['threads']} threads" if mi.get("threads") else ""))
                 + ("\n(quick run: not for quoting)" if is_quick(data) else ""))
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(n, 6))
    lo = min((t for ts in series.values() for t in ts if t), default=1e-6) * 1e6
    hi = max((t for ts in series.values() for t in ts if t), default=1e-3) * 1e6
    ax.set_ylim(10 ** math.floor(math.log10(lo)), 10 ** (math.log10(hi) + 0.6))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(data, out_dir, name="cpu", command=None):
    """Write ``out_dir/<name>.md`` and (with matplotlib) ``out_dir/<name>.png``.
    Returns (markdown path, PNG path or None, markdown text)."""
    return _write_files(data, out_dir, name, build_markdown, {}, command)


def write_gpu_report(data, out_dir, command=None):
    """Write the CPU-vs-CUDA report ``out_dir/<gpu>.md`` and ``<gpu>.png`` (``<gpu>``:
    :func:`gpu_slug` of the GPU's name) when the run has cuda cases.  Returns (markdown
    path, PNG path or None, markdown text), or None (writing nothing) without cuda
    cases."""
    if not has_cuda(data):
        return None
    chart = {"peers": GPU_CHART_PEERS,
             "title": f"fastnn training step, cpu vs cuda on {gpu_name(data)}, float32"}
    return _write_files(data, out_dir, gpu_slug(gpu_name(data)), build_gpu_markdown,
                        chart, command)


def _write_files(data, out_dir, name, build, chart_args, command):
    """``out_dir/<name>.png`` (``write_chart(**chart_args)``) and ``<name>.md``
    (``build``); see :func:`write_report`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    try:
        drawn = write_chart(data, png, **chart_args)
        why = None if drawn else ("skipped: matplotlib is not installed"
                                  if not _has_matplotlib() else
                                  "skipped: no training-step results in this run")
    except Exception as exc:          # a broken matplotlib must not lose the tables
        drawn, why = False, f"skipped: {type(exc).__name__}: {exc}"
    if not drawn:
        png.unlink(missing_ok=True)   # no stale chart beside a new report
    text = build(data, chart=png.name if drawn else why, command=command)
    md = out_dir / f"{name}.md"
    md.write_text(text + "\n", encoding="utf-8")
    return md, (png if drawn else None), text


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
