"""Turn a pytest-benchmark JSON (``--benchmark-json``) of the suites into the markdown
report and the chart that ``python -m bench`` writes (``cpu.md``, ``cpu.png``).

Pure functions of the JSON dict, so they are tested without running any benchmark:

- :func:`collect`: family -> group -> backend/peer -> case (median seconds, extra_info);
- :func:`build_markdown`: the environment, the targets table (each target with its
  measured ratio, goal and met / not met) and one table per family with the median
  time per backend/peer and the ratios ``X/cpu`` (above 1: cpu is faster) and
  ``cpu/floor`` where the group has a floor peer (``copy``: the memory floor, scaled by
  the bytes each moves; ``gemms``: the step's GEMMs alone);
- :func:`write_chart`: grouped bars of the time per training step per case and
  backend/peer, log scale (matplotlib, Agg); returns False when matplotlib is missing;
- :func:`write_report`: both into a directory.

A peer that did not run (torch or scikit-learn not installed, a ``-k`` that left it
out) shows as "–" and its targets as not measured.
"""
import math
import re
from pathlib import Path

REFERENCE = "cpu"                       # the backend every ratio is taken against
FLOORS = ("gemms", "copy")              # peers that are floors, not competitors
COLUMN_ORDER = ("numpy", "cpu", "cuda", "torch", "torch_foreach", "torch_fused",
                "sklearn", "gemms", "copy")
DASH = "–"

# family -> (title, suite, what its rows are)
FAMILIES = {
    "train": ("Training steps", "bench_train.py",
              "one step: zero_grad, forward, cross-entropy, backward, optimizer step; "
              "`gemms` = the step's GEMMs alone through fastnn's BLAS"),
    "sklearn": ("Whole fit against scikit-learn", "bench_sklearn.py",
                "digits, 64-128-10 relu, Adam lr 1e-3, batch 200, 200 epochs; the "
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
# The README's targets: (label, group, numerator, denominator, op, goal).  Ratios are
# median(numerator) / median(denominator); "floor" is the group's floor time.
TARGETS = (
    ("784-512-256-10, B=32, SGD: torch / cpu", _TRAIN.format("784-512-256-10", 32, "sgd"),
     "torch", "cpu", ">=", 2.4),
    ("784-512-256-10, B=128, SGD: torch / cpu",
     _TRAIN.format("784-512-256-10", 128, "sgd"), "torch", "cpu", ">=", 1.5),
    ("784-512-256-10, B=128, SGD: cpu / its GEMMs alone",
     _TRAIN.format("784-512-256-10", 128, "sgd"), "cpu", "gemms", "<=", 1.15),
    ("784-512-256-10, B=128, Adam: torch / cpu",
     _TRAIN.format("784-512-256-10", 128, "adam"), "torch", "cpu", ">=", 1.8),
    ("64-128-10, B=32, SGD: torch / cpu", _TRAIN.format("64-128-10", 32, "sgd"),
     "torch", "cpu", ">=", 8.0),
    ("64-128-10, B=256, Adam: torch / cpu", _TRAIN.format("64-128-10", 256, "adam"),
     "torch", "cpu", ">=", 4.0),
    ("sigmoid gradient (activation_backward) 1024x512: cpu / memory floor",
     "activation_backward sigmoid 1024x512", "cpu", "floor", "<=", 1.5),
    ("softmax-CE value + gradient 1024x512: cpu / memory floor",
     "loss cross_entropy 1024x512", "cpu", "floor", "<=", 2.0),
    ("digits 64-128-10 fit, Adam, batch 200, 200 epochs: sklearn / cpu",
     "fit digits 64-128-10 adam B=200 200 epochs", "sklearn", "cpu", ">=", 10.0),
    ("digits fit: fastnn (cpu) test accuracy",
     "fit digits 64-128-10 adam B=200 200 epochs", "cpu", "test_accuracy", ">=", 0.98),
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


def evaluate_targets(groups):
    """[(label, measured or None, goal text, verdict)] for :data:`TARGETS` given the
    {group: cases} of a run."""
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
        else:
            value = ratio(cases, num, den)
            shown = None if value is None else f"{value:.2f}×"
            goal_text = f"{'≥' if op == '>=' else '≤'} {goal:g}×"
        if value is None:
            verdict = f"{DASH} (not measured)"
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


def family_table(groups):
    """The markdown table of one family: {group: {peer: case}}."""
    peers = _ordered_peers({p for cases in groups.values() for p in cases})
    medians = [c["median"] for cases in groups.values() for c in cases.values()]
    unit = "ms" if medians and min(medians) >= 0.01 else "µs"
    others = [p for p in peers if p != REFERENCE and p not in FLOORS]
    has_floor = any(floor_time(cases) is not None for cases in groups.values())
    header = (["case"] + [f"{p} ({unit})" for p in peers]
              + [f"{p}/{REFERENCE}" for p in others]
              + ([f"{REFERENCE}/floor"] if has_floor else []) + [f"{REFERENCE} rate"])
    rows = []
    for group, cases in groups.items():
        row = [group] + [_fmt_time(_time(cases, p), unit) for p in peers]
        row += [_fmt_ratio(ratio(cases, p, REFERENCE)) for p in others]
        if has_floor:
            row.append(_fmt_ratio(ratio(cases, REFERENCE, "floor")))
        row.append(_rate(cases.get(REFERENCE)))
        rows.append(row)
    return _table(header, rows)


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
             f"- BLAS: OpenBLAS kernels {', '.join(fi.get('blas_kernels') or [DASH])} "
             f"(threadpoolctl); OPENBLAS_CORETYPE={fi.get('OPENBLAS_CORETYPE') or 'unset'}"]
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
    return lines


def build_markdown(data, chart=None, command=None):
    """The report as markdown.  ``chart``: the PNG's file name when one was written, or
    a sentence saying why not; ``command``: the command making this report (the run's
    own, recorded by the runner as ``data["fastnn_bench_command"]``, comes first)."""
    families = collect(data)
    groups = {g: cases for fam in families.values() for g, cases in fam.items()}
    out = ["# fastnn benchmarks: cpu backend against its peers", ""]
    made = data.get("fastnn_bench_command") or command     # the run's own command
    if made:
        out += [f"Made by `{made}`."
                + (f"  (Report rebuilt by `{command}`.)" if command and command != made
                   else ""), ""]
    out += _environment_lines(data)
    out += ["", "Times are medians.  A ratio `X/cpu` above 1 means fastnn's cpu backend "
            "is that many times faster than X; `cpu/floor` is the cpu time over the "
            "group's floor (`gemms`: the step's GEMMs alone; `copy`: an `np.copyto` of "
            "the same bytes, measured in the same run).  \"–\": not measured here "
            "(peer not installed, or left out by `-k`).", ""]
    out += ["## Targets", "",
            _table(["target", "measured", "goal", "verdict"],
                   [(label, shown or DASH, goal, verdict)
                    for label, shown, goal, verdict in evaluate_targets(groups)]), ""]
    if chart and chart.endswith(".png"):
        out += [f"![time per training step]({chart})", ""]
    elif chart:
        out += [f"(Chart: {chart})", ""]
    for fam in _ordered_families(families):
        title, suite, what = FAMILIES.get(fam, (fam, f"bench_{fam}.py", ""))
        out += [f"## {title}", "", f"`bench/{suite}`" + (f": {what}." if what else "."),
                "", family_table(families[fam]), ""]
        details = _fit_details(families[fam])
        if details:
            out += [details, ""]
    return "\n".join(out)


# ---- the chart -------------------------------------------------------------------------
def chart_series(data):
    """(case labels, {peer: [seconds per training step or None per case]}) for the
    chart: the training-step groups (in the targets' order), then whole fits divided by
    their optimizer steps."""
    families = collect(data)
    train = families.get("train", {})
    order = [g for g in dict.fromkeys(t[1] for t in TARGETS) if g in train]
    order += [g for g in train if g not in order]
    cases = [(g, train[g], 1) for g in order]
    for g, peers in families.get("sklearn", {}).items():
        cases.append((g, peers, "steps"))
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


def write_chart(data, path):
    """Grouped bars of the time per training step, log scale, into ``path`` (PNG).
    Returns False (and writes nothing) when matplotlib is missing or there is nothing
    to draw."""
    labels, series = chart_series(data)
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
    ax.set_title("fastnn training step vs peers, float32"
                 + (f", {mi['threads']} threads" if mi.get("threads") else ""))
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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    try:
        drawn = write_chart(data, png)
        why = None if drawn else ("skipped: matplotlib is not installed"
                                  if not _has_matplotlib() else
                                  "skipped: no training-step results in this run")
    except Exception as exc:          # a broken matplotlib must not lose the tables
        drawn, why = False, f"skipped: {type(exc).__name__}: {exc}"
    if not drawn:
        png.unlink(missing_ok=True)   # no stale chart beside a new report
    text = build_markdown(data, chart=png.name if drawn else why, command=command)
    md = out_dir / f"{name}.md"
    md.write_text(text + "\n", encoding="utf-8")
    return md, (png if drawn else None), text


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
