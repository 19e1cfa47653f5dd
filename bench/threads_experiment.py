"""Thread-policy experiment for the cpu backend (run: ``python bench/threads_experiment.py``).

Times, for fastnn's cpu backend in float32,

- ``dense+sigmoid``: a loop of ``dense_forward`` (128x784 @ 784x512 + b, one BLAS GEMM)
  followed by ``activation_forward("sigmoid")`` on its 128x512 output (65536 elements:
  exactly the old parallel threshold, so the numba kernel runs in parallel wherever
  that threshold is in force and more than one thread is used), and
- ``sigmoid``: a sigmoid alone on 1024x512,
- ``step 64-128-10`` and ``step 784-512-256-10``: one ``model.train_step`` (batch 32,
  SGD, cross-entropy; relu hidden layers): whether a second BLAS thread pays for a
  small model (OpenBLAS itself runs a GEMM of fewer than 262,144 multiply-adds on
  the calling thread, so most of a small model's GEMMs never wake the pool),

under these settings, each in a fresh subprocess (numba reads its settings at import):

  (a) default             whatever fastnn does by default (2 threads for BLAS; since
                          c713cac numba kernels run serially unless FASTNN_PARALLEL_MIN
                          is set; before, they went parallel at >= 65536 elements on
                          numba's workqueue layer)
  (b) omp                 NUMBA_THREADING_LAYER=omp in the environment
  (c) 1 thread            FASTNN_NUM_THREADS=1 (BLAS and numba serial)
  (d) parallel, workqueue FASTNN_PARALLEL_MIN=65536 NUMBA_THREADING_LAYER=workqueue
  (e) parallel, omp       FASTNN_PARALLEL_MIN=65536 NUMBA_THREADING_LAYER=omp
  (f) parallel, omp, passive  as (e) with OMP_WAIT_POLICY=passive (no spinning)

(d)-(f) reproduce the old default policy (parallel numba at >= 65536 elements) on the
current library; on a library without FASTNN_PARALLEL_MIN they equal (a)/(b).

Settings are run round-robin ``--repeats`` times (the machine is shared and noisy); the
table gives, per setting, the median over runs of each run's median time per iteration,
and the spread (min..max) of those run medians.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PAR = {"FASTNN_PARALLEL_MIN": "65536"}
SETTINGS = {
    "(a) default": {},
    "(b) NUMBA_THREADING_LAYER=omp": {"NUMBA_THREADING_LAYER": "omp"},
    "(c) FASTNN_NUM_THREADS=1": {"FASTNN_NUM_THREADS": "1"},
    "(d) parallel, workqueue": dict(PAR, NUMBA_THREADING_LAYER="workqueue"),
    "(e) parallel, omp": dict(PAR, NUMBA_THREADING_LAYER="omp"),
    "(f) parallel, omp, passive": dict(PAR, NUMBA_THREADING_LAYER="omp",
                                       OMP_WAIT_POLICY="passive"),
}
_CLEARED = ("NUMBA_THREADING_LAYER", "FASTNN_NUM_THREADS", "FASTNN_PARALLEL_MIN",
            "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
            "OPENBLAS_NUM_THREADS")


def _median_time(fn, samples, inner):
    """Median over ``samples`` of the mean time (us) of ``inner`` back-to-back calls,
    and the process CPU time per wall time over all samples (about 1 for one busy
    core; near 2 means a second thread was busy, or spinning, all along)."""
    times = []
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner * 1e6)
    cpu_per_wall = (time.process_time() - c0) / (time.perf_counter() - w0)
    return statistics.median(times), cpu_per_wall


def child(samples):
    # fastnn first, as a user would: a fastnn that sets NUMBA_THREADING_LAYER at import
    # (before c713cac) must do so before numba is imported, or numba keeps its default
    import fastnn as fn
    from fastnn import threads

    import numba
    import numpy as np

    be = fn.get_backend("cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 784)).astype(np.float32)
    w = (rng.standard_normal((784, 512)) / np.sqrt(784)).astype(np.float32)
    b = rng.standard_normal(512).astype(np.float32)
    z = np.empty((128, 512), np.float32)
    a = np.empty_like(z)
    zs = (rng.standard_normal((1024, 512)) * 3).astype(np.float32)
    as_ = np.empty_like(zs)

    def dense_sigmoid():
        be.dense_forward(x, w, b, z)
        be.activation_forward("sigmoid", z, a)

    def sigmoid():
        be.activation_forward("sigmoid", zs, as_)

    # sigmoid alone first, before any GEMM: otherwise OpenBLAS's worker thread, which
    # spins for a while after each GEMM, would share the second core with it
    for _ in range(20):                         # compile / load and warm up
        sigmoid()
    sigmoid_us, sigmoid_cpu = _median_time(sigmoid, samples, 5)
    for _ in range(20):
        dense_sigmoid()
    dense_sigmoid_us, dense_sigmoid_cpu = _median_time(dense_sigmoid, samples, 5)
    steps = {}
    for name, sizes in (("step_small_us", (64, 128, 10)),
                        ("step_mlp_us", (784, 512, 256, 10))):
        model = fn.Sequential(*(fn.Dense(i, o, "relu" if k < len(sizes) - 2 else None)
                                for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:]))),
                              seed=0)
        opt, loss = fn.SGD(model, lr=0.01), fn.CrossEntropyLoss()
        xb = rng.standard_normal((32, sizes[0])).astype(np.float32)
        yb = rng.integers(0, sizes[-1], 32)

        def step():
            return model.train_step(xb, yb, loss, opt)
        for _ in range(20):
            step()
        n = samples if sizes[0] < 100 else max(10, samples // 10)
        steps[name] = _median_time(step, n, 5)[0]
        assert np.isfinite(step()), "train_step gave a non-finite loss"
    # sanity: the results are right
    ref = 1 / (1 + np.exp(-(x.astype(np.float64) @ w.astype(np.float64) + b)))
    assert np.max(np.abs(a - ref)) < 1e-5, "dense+sigmoid result is wrong"
    assert np.max(np.abs(as_ - 1 / (1 + np.exp(-zs.astype(np.float64))))) < 1e-5

    try:
        layer = numba.threading_layer()
    except ValueError:                          # numba's pool was never started
        layer = "none"
    out = {
        "threads": fn.get_num_threads(),
        "parallel_128x512": threads.use_parallel(128 * 512),
        "parallel_1024x512": threads.use_parallel(1024 * 512),
        "numba_threading_layer": layer,
        "NUMBA_THREADING_LAYER": os.environ.get("NUMBA_THREADING_LAYER"),
        "dense_sigmoid_us": dense_sigmoid_us, "dense_sigmoid_cpu": dense_sigmoid_cpu,
        "sigmoid_us": sigmoid_us, "sigmoid_cpu": sigmoid_cpu, **steps,
    }
    print("RESULT " + json.dumps(out))


def run_setting(extra, samples):
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(extra)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                           "--samples", str(samples)],
                          env=env, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"child failed (rc={proc.returncode}):\n{proc.stdout}\n"
                       f"{proc.stderr[-3000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--samples", type=int, default=200,
                    help="timed samples (of 5 calls each) per case and run")
    ap.add_argument("--repeats", type=int, default=3,
                    help="fresh subprocesses per setting, run round-robin")
    args = ap.parse_args()
    if args.child:
        child(args.samples)
        return

    results = {name: [] for name in SETTINGS}
    errors = {}
    for rep in range(args.repeats):
        for name, extra in SETTINGS.items():
            if name in errors:
                continue
            try:
                results[name].append(run_setting(extra, args.samples))
            except Exception as exc:            # report, keep the other settings going
                errors[name] = str(exc)

    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], text=True,
                             capture_output=True, cwd=os.path.dirname(
                                 os.path.abspath(__file__))).stdout.strip()
    except OSError:
        rev = "?"
    print(f"fastnn at {rev or '?'}; par = numba kernels parallel at 128x512")
    print(f"{'setting':32} {'threads':>7} {'layer':>10} {'par':>5} "
          f"{'dense+sigmoid us':>22} {'cpu/wall':>8} {'sigmoid 1024x512 us':>22} "
          f"{'cpu/wall':>8} {'step 64-128-10 us':>20} {'step 784-.. us':>22}")
    for name, runs in results.items():
        if not runs:
            print(f"{name:32} FAILED: {errors.get(name, '?').strip()[-400:]}")
            continue
        r0 = runs[0]

        def cell(key):
            vals = [r[key] for r in runs]
            return f"{statistics.median(vals):8.1f} ({min(vals):.0f}..{max(vals):.0f})"

        def ratio(key):
            return f"{statistics.median(r[key] for r in runs):8.2f}"

        print(f"{name:32} {r0['threads']:>7} {r0['numba_threading_layer']:>10} "
              f"{str(r0['parallel_128x512']):>5} {cell('dense_sigmoid_us'):>22} "
              f"{ratio('dense_sigmoid_cpu')} {cell('sigmoid_us'):>22} "
              f"{ratio('sigmoid_cpu')} {cell('step_small_us'):>20} "
              f"{cell('step_mlp_us'):>22}")
        if name in errors:
            print(f"    (a later run failed: {errors[name].strip()[-200:]})")
    print(f"\n{args.repeats} fresh runs per setting; median of run medians "
          f"(min..max of run medians); {args.samples} samples x 5 calls per run; "
          f"cpu/wall = process CPU time / wall time while timing (median over runs).")


if __name__ == "__main__":
    main()
