"""What can be counted about the cuda backend without timing a GPU.

1. Kernel launches per training step (zero_grad, forward, loss, backward, step) of a
   model, with the fused whole-model passes and with the per-layer passes of the
   Backend base class: launches are the cost of small models on a GPU.
2. The forward GEMM's instruction mix in PTX for sm_90, per tiling: FMAs and
   shared-memory loads in the inner step, and local memory (register spills).

Runs on a GPU, or without one: launches under the Numba CUDA simulator (switched on
here when no GPU is found), PTX through NVVM in a second process without the simulator.

    python bench/cuda_static.py [--arch 6-5-4-3] [--batch 5]
"""
import argparse
import os
import subprocess
import sys


def launches(arch, batch):
    import numpy as np

    import fastnn as fn
    from fastnn.backends.base import Backend

    sizes = [int(s) for s in arch.split("-")]
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    counts = {}
    for fused in (True, False):
        layers = [fn.Dense(i, o, activation="relu") for i, o in zip(sizes, sizes[1:-1])]
        model = fn.Sequential(*layers, fn.Dense(sizes[-2], sizes[-1]), backend="cuda",
                              seed=0)
        cu = model.backend
        if not fused:
            cu.model_forward = lambda plan, xb: Backend.model_forward(cu, plan, xb)
            cu.model_backward = lambda plan, xb, g, s: Backend.model_backward(
                cu, plan, xb, g, s)
        loss, opt = fn.CrossEntropyLoss(backend="cuda"), fn.Adam(model)
        try:
            for _ in range(2):              # the second step: buffers exist by then
                before = cu.launches
                opt.zero_grad()
                loss.forward(model.forward(x), y)
                model.backward(loss.backward())
                opt.step()
            counts["fused" if fused else "per-layer"] = cu.launches - before
        finally:
            if not fused:
                del cu.model_forward, cu.model_backward
    layers = len(sizes) - 1
    print(f"launches per training step, {arch} (relu, linear output), batch {batch}, "
          f"{layers} layers (budget 3L + 3 = {3 * layers + 3}; "
          f"{'simulator' if cu.simulated else cu.device_name}):")
    for name, n in counts.items():
        print(f"  {name:10s} {n}")


PTX_PROBE = """
import numba, numpy as np
from numba import cuda
from fastnn.kernels import cuda as K
v2, v1 = np.zeros((3, 4), np.float32), np.zeros(4, np.float32)
sig = tuple(numba.typeof(a) for a in (v2, v2, np.float32(1), K.GemmForward(v2, v2, v1)))
for tiling in K.LARGEST_FIRST:
    k = K.gemm_kernel("forward", "relu", np.float32, tiling)
    ptx, _ = cuda.compile_ptx(k.py_func, sig, cc=(9, 0))
    tx, ty, rm, rn, bk = K.TILINGS[tiling]
    print(f"  {tiling}: tile {ty * rm}x{tx * rn}, {rm}x{rn} per thread, K step {bk}: "
          f"fma {ptx.count('fma.rn.f32')}, ld.shared {ptx.count('ld.shared')}, "
          f"local {ptx.count('.local')}")
"""


def ptx_mix():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    print("forward GEMM (float32, relu epilogue) in PTX for sm_90:")
    run = subprocess.run([sys.executable, "-c", PTX_PROBE], env=env, text=True,
                         capture_output=True)
    print(run.stdout.rstrip() or f"  (no PTX: {run.stderr.strip().splitlines()[-1]})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="6-5-4-3", help="layer sizes (default 6-5-4-3)")
    ap.add_argument("--batch", type=int, default=5)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import conftest              # the repository's: the simulator when there is no GPU

    del conftest
    launches(args.arch, args.batch)
    ptx_mix()


if __name__ == "__main__":
    main()
