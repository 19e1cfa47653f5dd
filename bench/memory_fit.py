"""Peak memory of one ``fit`` epoch, with and without micro-batching.

Run: ``python bench/memory_fit.py [--repeats N]``

Trains a 784-512-256-10 relu model (float32, cpu backend) for one epoch on 16384
random samples (X float32 (16384, 784), y integer labels 0..9) with
``loss="cross_entropy", optimizer="adam", batch_size=4096, seed=0``, once with
``micro_batch_size`` left at the batch size and once with ``micro_batch_size=256``
(``--micro-batch-size``).  Each configuration runs in a fresh subprocess: the model
keeps its per-batch-size workspaces, and numba's compile memory belongs to no fit.

In each subprocess: X, y and the model are built; the compiled kernels are warmed up
by a tiny fit (2 samples) of a throwaway model of the same architecture; then
``tracemalloc`` starts (NumPy reports its array allocations to it), and

- ``fit peak``  = tracemalloc's peak during ``fit`` minus the traced size just before;
- ``setup``     = the same peak up to the start of the first epoch (a callback's
  ``on_train_begin``): argument checks and conversions, the optimizer's state;
- ``epoch``     = the peak from then to the end of ``fit`` (the training loop: the
  per-batch workspaces, gathered batches, the optimizer state already allocated);
- ``kept``      = what is still allocated after ``fit`` (workspaces, optimizer state:
  ``model.optimizer`` keeps it);
- ``ru_maxrss`` = the subprocess's maximum resident set size (whole process: Python,
  NumPy, numba, X, tracemalloc's own bookkeeping), before and after ``fit``, for context.

The model's static memory (params + grads + Adam's 2 state buffers = 4 * parameters *
4 bytes) is printed alongside; params and grads exist before tracing starts, so the
peaks above count only Adam's state of it.  Figures are medians over ``--repeats``
subprocesses per configuration (run alternately), with min..max when repeats > 1.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

SAMPLES, FEATURES, CLASSES = 16384, 784, 10
SIZES = (784, 512, 256, 10)
BATCH = 4096
MIB = 1 << 20


def _make_model(fn, np):
    return fn.Sequential(fn.Dense(784, 512, activation="relu"),
                         fn.Dense(512, 256, activation="relu"),
                         fn.Dense(256, 10),
                         backend="cpu", dtype=np.float32, seed=0)


def child(micro):
    """Measure one configuration in this (fresh) process; print one JSON line."""
    import gc
    import resource
    import tracemalloc

    import numpy as np

    import fastnn as fn

    rng = np.random.default_rng(0)
    X = rng.standard_normal((SAMPLES, FEATURES), dtype=np.float32)
    y = rng.integers(0, CLASSES, SAMPLES)
    model = _make_model(fn, np)
    kwargs = dict(loss="cross_entropy", optimizer="adam", epochs=1, seed=0)

    # warm-up: compile/load every kernel this fit uses, on a throwaway model
    warm = _make_model(fn, np)
    warm.fit(X[:2], y[:2], batch_size=2, micro_batch_size=1 if micro else None, **kwargs)
    del warm
    gc.collect()

    class Mark(fn.Callback):
        """Splits fit's peak at the start of the first epoch."""
        setup = None

        def on_train_begin(self, logs=None):
            self.setup = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()

    mark = Mark()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    history = model.fit(X, y, batch_size=BATCH, micro_batch_size=micro,
                        callbacks=[mark], **kwargs)
    current, epoch_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "micro": micro,
        "fit_peak": max(mark.setup, epoch_peak) - before,
        "setup_peak": mark.setup - before,
        "epoch_peak": epoch_peak - before,
        "kept": current - before,
        "rss_before": rss_before, "rss_after": rss_after,
        "params": model.num_parameters,
        "loss": history["loss"][-1],
    }))


def _run_child(micro):
    cmd = [sys.executable, os.path.abspath(__file__), "--_child",
           "none" if micro is None else str(micro)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _fmt(values, scale=MIB, digits=2):
    med = statistics.median(values) / scale
    if len(values) == 1 or min(values) == max(values):
        return f"{med:.{digits}f}"
    lo, hi = min(values) / scale, max(values) / scale
    return f"{med:.{digits}f} ({lo:.{digits}f}..{hi:.{digits}f})"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Peak memory of one fit epoch (784-512-256-10 relu, float32, cpu "
                    f"backend, cross-entropy, Adam, {SAMPLES} random samples, batch "
                    f"{BATCH}) with and without micro-batching; each configuration in "
                    "a fresh subprocess.")
    parser.add_argument("--repeats", type=int, default=1,
                        help="subprocesses per configuration, run alternately; the "
                             "table gives medians (and min..max) (default: 1)")
    parser.add_argument("--micro-batch-size", type=int, default=256,
                        help="the micro-batch size of the second configuration "
                             "(default: 256)")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child is not None:
        child(None if args._child == "none" else int(args._child))
        return
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not 1 <= args.micro_batch_size <= BATCH:
        parser.error(f"--micro-batch-size must be in 1..{BATCH}")

    configs = [None, args.micro_batch_size]
    results = {c: [] for c in configs}
    for _ in range(args.repeats):
        for c in configs:
            results[c].append(_run_child(c))

    params = results[configs[0]][0]["params"]
    static = 4 * params * 4
    print(f"model {'-'.join(map(str, SIZES))} relu, float32, cpu backend: {params:,} "
          f"parameters; static memory (params + grads + Adam exp_avg, exp_avg_sq) = "
          f"4 x {params:,} x 4 B = {static:,} B = {static / MIB:.2f} MiB "
          f"(Adam's state alone: {static // 2 / MIB:.2f} MiB)")
    data = SAMPLES * FEATURES * 4 / MIB
    print(f"data: X float32 {SAMPLES}x{FEATURES} = {data:.1f} MiB; "
          f"one epoch = {SAMPLES // BATCH} optimizer steps; repeats = {args.repeats}")
    print()
    print("| configuration | fit peak (MiB) | setup peak | epoch peak | kept after fit "
          "| ru_maxrss before fit | ru_maxrss after fit | epoch loss |")
    print("|---|---|---|---|---|---|---|---|")
    for c in configs:
        rs = results[c]
        name = f"batch {BATCH}" + ("" if c is None else f", micro_batch_size {c}")
        losses = sorted({f"{r['loss']:.6f}" for r in rs})
        print(f"| {name} | {_fmt([r['fit_peak'] for r in rs])} "
              f"| {_fmt([r['setup_peak'] for r in rs])} "
              f"| {_fmt([r['epoch_peak'] for r in rs])} "
              f"| {_fmt([r['kept'] for r in rs])} "
              f"| {_fmt([r['rss_before'] for r in rs], digits=1)} "
              f"| {_fmt([r['rss_after'] for r in rs], digits=1)} "
              f"| {', '.join(losses)} |")
    a, b = (statistics.median(r["fit_peak"] for r in results[c]) for c in configs)
    ea, eb = (statistics.median(r["epoch_peak"] for r in results[c]) for c in configs)
    print()
    print(f"fit peak ratio (no micro / micro {configs[1]}): {a / b:.2f}x; "
          f"epoch peak ratio: {ea / eb:.2f}x")
    print("tracemalloc counts NumPy's allocations (the peaks are relative to the "
          "traced size just before fit); ru_maxrss is the whole process, MiB.")


if __name__ == "__main__":
    main()
