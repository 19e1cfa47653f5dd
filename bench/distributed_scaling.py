"""Data-parallel scaling on this machine: fastnn.distributed against torch.distributed.

``python bench/distributed_scaling.py [--steps 30] [--repeats 3] [--out FILE]`` runs, for
1, 2 and 3 processes (``mpiexec -n N``; 3 oversubscribes a 2-core machine):

- fastnn: 784-512-256-10 relu, float32, SGD, a global batch of 1024 rows, ``fit`` with
  ``distributed=DataParallel(model, reduction=...)`` over ``--steps`` batches, for both
  reductions; the time per step (the fit's wall time over its steps, median of
  ``--repeats`` launches) and the share of it spent in the gradient reduction (timed
  around ``reduce_gradients`` / ``ordered_sum`` on rank 0);
- torch (where the CPU wheel is installed): the same network and batch under
  ``DistributedDataParallel`` on the gloo backend, launched by the same mpiexec
  (rank and size from the MPI environment, rendezvous on 127.0.0.1), each process
  training on its shard: the same job.

Threads: with N processes on C cores each process gets max(1, C // N) BLAS threads
(``FASTNN_NUM_THREADS``, ``torch.set_num_threads``), so the cores are shared, not
oversubscribed, up to N = C.  Each launch is a fresh set of processes; numba's cache
is warmed first by one single-process run.  The table is printed and, with
``--out``, written to a file (``bench/results/distributed.txt`` is this machine's).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

SIZES = (784, 512, 256, 10)
BATCH = 1024
HERE = os.path.abspath(__file__)


def _threads(nprocs):
    return max(1, (os.cpu_count() or 1) // nprocs)


# ---- one rank ------------------------------------------------------------------------
def _data(steps):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((steps * BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], steps * BATCH)
    return X, y


def _worker_fastnn(steps, reduction):
    import fastnn as fn
    from fastnn import distributed as dist

    model = fn.Sequential(fn.Dense(784, 512, activation="relu"),
                          fn.Dense(512, 256, activation="relu"), fn.Dense(256, 10),
                          dtype=np.float32, seed=0)
    X, y = _data(steps)
    dp = dist.DataParallel(model, reduction=reduction, chunk_rows=128)
    spent = [0.0]
    name = "reduce_gradients" if reduction == "allreduce" else "ordered_sum"
    inner = getattr(dp, name)

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        result = inner(*args, **kwargs)
        spent[0] += time.perf_counter() - t0
        return result
    setattr(dp, name, timed)
    kw = dict(loss="cross_entropy", optimizer=fn.SGD(model.parameters(), lr=0.01),
              epochs=1, batch_size=BATCH, seed=0, progress=False, distributed=dp)
    model.fit(X[:2 * BATCH], y[:2 * BATCH], **kw)                 # warm-up
    spent[0] = 0.0
    dp.comm.Barrier()
    t0 = time.perf_counter()
    model.fit(X, y, **kw)
    wall = time.perf_counter() - t0
    return wall / steps, spent[0] / steps, dp.rank


def _worker_torch(steps):
    import torch
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel

    rank = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", 0)))
    size = int(os.environ.get("PMI_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", 1)))
    torch.set_num_threads(_threads(size))
    tdist.init_process_group("gloo", init_method="tcp://127.0.0.1:29531", rank=rank,
                             world_size=size)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(),
                              torch.nn.Linear(512, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 10))
    ddp = DistributedDataParallel(net)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    X, y = _data(steps)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    lo, hi = np.array_split(np.arange(BATCH), size)[rank][[0, -1]]

    def step(k):
        xb = X[k * BATCH + lo:k * BATCH + hi + 1]
        yb = y[k * BATCH + lo:k * BATCH + hi + 1]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ddp(xb), yb).backward()   # DDP averages
        opt.step()
    for k in range(2):
        step(k)
    tdist.barrier()
    t0 = time.perf_counter()
    for k in range(steps):
        step(k)
    wall = time.perf_counter() - t0
    tdist.destroy_process_group()
    return wall / steps, None, rank


# ---- the driver ----------------------------------------------------------------------
def _launch(nprocs, who, steps):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec.gforker")
    if not os.path.exists(mpiexec):
        mpiexec = "mpiexec"
    env = dict(os.environ, UCX_TLS="self,sm", FASTNN_NUM_THREADS=str(_threads(nprocs)),
               OMP_NUM_THREADS=str(_threads(nprocs)))
    cmd = [mpiexec, "-n", str(nprocs), sys.executable, "-m", "mpi4py", HERE, "--worker",
           who, "--steps", str(steps)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                         start_new_session=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    rows = [json.loads(line) for line in res.stdout.splitlines()
            if line.startswith("{")]
    return next(r for r in rows if r["rank"] == 0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        if args.worker == "torch":
            per_step, reduce_s, rank = _worker_torch(args.steps)
        else:
            per_step, reduce_s, rank = _worker_fastnn(args.steps, args.worker)
        if rank == 0:                   # (one writer: lines of ranks could interleave)
            print(json.dumps({"rank": rank, "step_s": per_step, "reduce_s": reduce_s}),
                  flush=True)
        return 0
    try:
        import torch  # noqa: F401
        peers = ["torch"]
    except ImportError:
        peers = []
    _launch(1, "allreduce", 2)                     # numba's cache, once
    who_list = ["allreduce", "ordered"] + peers
    results = {}
    for repeat in range(args.repeats):             # alternate the contenders
        for nprocs in (1, 2, 3):
            for who in who_list:
                r = _launch(nprocs, who, args.steps)
                results.setdefault((who, nprocs), []).append(r)
    lines = [f"784-512-256-10 float32 SGD, global batch {BATCH}, {args.steps} steps per "
             f"launch, median of {args.repeats} launches; {os.cpu_count()} cores; "
             f"BLAS threads per process max(1, cores // N)",
             "", "| contender | processes | ms per step | speed-up vs 1 | "
             "reduction ms per step (share) |", "|---|---|---|---|---|"]
    for who in who_list:
        base = None
        for nprocs in (1, 2, 3):
            runs = results[(who, nprocs)]
            step = statistics.median(r["step_s"] for r in runs)
            base = step if base is None else base
            red = [r["reduce_s"] for r in runs if r["reduce_s"] is not None]
            red_text = "–" if not red else \
                f"{1e3 * statistics.median(red):.2f} ({statistics.median(red) / step:.0%})"
            name = f"fastnn {who}" if who != "torch" else "torch DDP (gloo)"
            lines.append(f"| {name} | {nprocs} | {1e3 * step:.2f} | {base / step:.2f}× | "
                         f"{red_text} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"python bench/distributed_scaling.py --steps {args.steps} --repeats "
                    f"{args.repeats}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
