"""Cold start: a fresh process doing ``import fastnn`` plus one training step.

Run: ``python bench/coldstart.py [--repeats N] [--json]``

Every measurement is a fresh ``python -c ...`` subprocess (this interpreter, the
environment inherited, ``FASTNN_QUIET`` unset so the first-run message can be seen):

- ``python -c pass``: the interpreter alone, for reference;
- ``import fastnn``: the import alone;
- per model configuration, ``import fastnn`` + build the model (float32, ``cpu``
  backend, seed 0) + one training step on random data (``opt.zero_grad()``,
  ``model.forward``, ``CrossEntropyLoss`` forward and backward, ``model.backward``,
  ``opt.step()``):

  - ``small``: 64-128-10 (relu hidden, linear output), SGD (lr 0.1), batch 32;
  - ``mlp``: 784-512-256-10 (relu hidden), Adam (lr 1e-3), batch 128;
  - ``small-train_step``: ``small`` with the step as one ``model.train_step`` call
    (what ``fit`` runs).

  Each configuration runs twice over: ``first run`` with an empty cache (a fresh
  temporary ``NUMBA_CACHE_DIR`` per repeat, so every kernel the step needs is compiled
  by numba), and ``cached`` (one shared temporary ``NUMBA_CACHE_DIR``, filled by an
  untimed run first, so every kernel is loaded from numba's disk cache).  The kernels
  compiled per model depend on the activations, loss and optimizer used, hence two
  configurations: the first-run figure is not only the cheapest case.

Columns: ``wall`` = the whole subprocess as seen from here (interpreter start to exit);
``in-process`` = from the first statement of the ``-c`` code to the end of the step
(import + build + step; interpreter start-up and exit excluded), split into
``import``, ``build`` and ``step``.  ``msg`` says whether the child printed fastnn's
"compiling kernels" message on stderr (expected on first runs only).  Figures are
medians over ``--repeats`` subprocesses, with min..max when repeats > 1.  Target (the
issue): cached <= 1.0 s, first run <= 20 s.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CONFIGS = {
    "small": dict(sizes=(64, 128, 10), optimizer="SGD", opt_args="lr=0.1", batch=32),
    "mlp": dict(sizes=(784, 512, 256, 10), optimizer="Adam", opt_args="lr=1e-3",
                batch=128),
    # the same step as one model.train_step call (what fit runs): its own compiled
    # wrappers of the loss and the update rule
    "small-train_step": dict(sizes=(64, 128, 10), optimizer="SGD", opt_args="lr=0.1",
                             batch=32, one_call=True),
}

_CLOCK = "import time; _t0 = time.perf_counter()\n"
_REPORT = ("import json, sys\n"
           "print('COLDSTART ' + json.dumps(_times), file=sys.stdout)\n")

IMPORT_ONLY = (_CLOCK + "import fastnn\n"
               "_times = dict(import_s=time.perf_counter() - _t0)\n"
               "_times['inproc_s'] = _times['import_s']\n" + _REPORT)


def step_code(sizes, optimizer, opt_args, batch, one_call=False):
    """The ``-c`` code for one configuration: import, build, one training step (the
    five calls, or ``one_call``: ``model.train_step``)."""
    layers = ", ".join(
        f"fn.Dense({a}, {b}"
        + (", activation='relu')" if i < len(sizes) - 2 else ")")
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))
    return (_CLOCK
            + "import fastnn as fn\n"
            "_t1 = time.perf_counter()\n"
            "import numpy as np\n"
            f"model = fn.Sequential({layers}, backend='cpu', dtype=np.float32, seed=0)\n"
            "loss_fn = fn.CrossEntropyLoss()\n"
            f"opt = fn.{optimizer}(model.parameters(), {opt_args})\n"
            "rng = np.random.default_rng(0)\n"
            f"xb = rng.standard_normal(({batch}, {sizes[0]})).astype(np.float32)\n"
            f"yb = rng.integers(0, {sizes[-1]}, {batch})\n"
            "_t2 = time.perf_counter()\n"
            + ("loss = model.train_step(xb, yb, loss_fn, opt)\n" if one_call else
               "opt.zero_grad()\n"
               "out = model.forward(xb)\n"
               "loss = loss_fn.forward(out, yb)\n"
               "model.backward(loss_fn.backward(), scale=1.0)\n"
               "opt.step()\n")
            + "_t3 = time.perf_counter()\n"
            "assert np.isfinite(loss), loss\n"
            "_times = dict(import_s=_t1 - _t0, build_s=_t2 - _t1, step_s=_t3 - _t2,\n"
            "              inproc_s=_t3 - _t0)\n" + _REPORT)


def run_child(code, cache_dir=None):
    """Run ``python -c code`` in a fresh process; returns its figures (seconds)."""
    env = dict(os.environ)
    env.pop("FASTNN_QUIET", None)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child failed (exit {proc.returncode}):\n{proc.stderr}")
    times = {}
    for line in proc.stdout.splitlines():
        if line.startswith("COLDSTART "):
            times = json.loads(line[len("COLDSTART "):])
    times["wall_s"] = wall
    times["message"] = "compiling kernels" in proc.stderr
    return times


def summarise(runs):
    """name -> {median, min, max} over the runs, for every numeric figure."""
    out = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if key == "message":
            out[key] = sum(values)          # how many runs printed it
            continue
        out[key] = dict(median=statistics.median(values), min=min(values),
                        max=max(values))
    out["runs"] = len(runs)
    return out


def measure(repeats, configs):
    results = {}
    scratch = tempfile.mkdtemp(prefix="fastnn-coldstart-")
    try:
        results["python -c pass"] = summarise(
            [run_child("pass") for _ in range(repeats)])
        warm = os.path.join(scratch, "warm")
        run_child(IMPORT_ONLY, warm)            # untimed: .pyc files, the OS page cache
        results["import fastnn"] = summarise(
            [run_child(IMPORT_ONLY, warm) for _ in range(repeats)])
        for name in configs:
            code = step_code(**CONFIGS[name])
            first = []
            for i in range(repeats):
                cold = os.path.join(scratch, f"cold-{name}-{i}")
                first.append(run_child(code, cold))
                shutil.rmtree(cold, ignore_errors=True)
            results[f"{name}: first run"] = summarise(first)
            cache = os.path.join(scratch, f"cache-{name}")
            run_child(code, cache)              # untimed: fills the cache
            results[f"{name}: cached"] = summarise(
                [run_child(code, cache) for _ in range(repeats)])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


def _fmt(stat, repeats):
    if stat is None:
        return ""
    text = f"{stat['median']:.3f}"
    if repeats > 1:
        text += f" ({stat['min']:.2f}..{stat['max']:.2f})"
    return text


def print_table(results, repeats):
    cols = ("wall_s", "inproc_s", "import_s", "build_s", "step_s")
    heads = ("wall", "in-process", "import", "build", "step")
    print(f"cold start, seconds: median (min..max) of {repeats} fresh subprocesses; "
          f"python {sys.version.split()[0]}")
    width = max(len(name) for name in results)
    print(f"{'':{width}}" + "".join(f" {h:>21}" for h in heads) + "   msg")
    for name, res in results.items():
        row = "".join(f" {_fmt(res.get(c), repeats):>21}" for c in cols)
        msg = f"{res['message']}/{res['runs']}"
        print(f"{name:{width}}{row}   {msg}")
    print("msg: runs that printed fastnn's 'compiling kernels' message (stderr).")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh subprocesses per measurement (default 3)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            parser.error(f"unknown configuration {c!r}; expected {', '.join(CONFIGS)}")
    results = measure(args.repeats, configs)
    if args.json:
        chosen = {c: CONFIGS[c] for c in configs}
        print(json.dumps(dict(repeats=args.repeats, configs=chosen, results=results),
                         indent=2))
    else:
        print_table(results, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
