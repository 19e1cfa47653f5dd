"""What can be counted about the cuda backend without timing a GPU.

1. Kernel launches per training step (zero_grad, forward, loss, backward, step) of a
   model, with the fused whole-model passes and with the per-layer passes of the
   Backend base class: launches are the cost of small models on a GPU.
2. The host's cost of a step, counted: launches and array arguments per step, priced
   at numba-cuda's measured host cost (about 6.6 us per launch plus 3.75 us per array
   argument, issue 18), and fastnn's own Python time per step, timed with every kernel
   replaced by a stub that does nothing (so what is left is fastnn's bookkeeping:
   checks, staging, plans, launch configurations; under the simulator its arrays'
   attribute lookups cost more than a real device array's).
3. The forward GEMM's instruction mix in PTX for sm_90, per tiling: FMAs and
   shared-memory loads in the inner step, and local memory (register spills).
   (tests/cuda_ptx.py --report gives registers, spills and the FMA share of the
   machine code, with ptxas and nvdisasm.)

Runs on a GPU, or without one: launches under the Numba CUDA simulator (switched on
here when no GPU is found), PTX through NVVM in a second process without the simulator.

    python bench/cuda_static.py [--arch 6-5-4-3] [--batch 5]

(The host figures are for a step of the public loop, the batch and labels already on
the device; each repeat times 400 steps.)
"""
import argparse
import math
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


NUMBA_LAUNCH_US, NUMBA_ARRAY_US = 6.6, 3.75     # numba-cuda's host cost (issue 18)


def host_cost(arch, batch, steps=2000):
    """(launches, array arguments, fastnn's own host us) per training step of ``arch``
    (relu hidden layers, linear output, cross-entropy, Adam, float32), the batch on
    the device; every kernel stubbed out, launches counted by the stub."""
    import time

    import numpy as np

    import fastnn as fn
    from fastnn.kernels import cuda as K

    seen = [0, 0, True]

    def arrays(a):
        if isinstance(a, tuple):
            return sum(map(arrays, a))
        return int(getattr(a, "ndim", 0) > 0)

    class Stub:
        def __getitem__(self, config):
            return self

        def __call__(self, *args):
            if seen[2]:
                seen[0] += 1
                seen[1] += arrays(args)

    stub = Stub()
    getters = ("gemm_kernel", "activation_forward", "activation_delta", "loss",
               "optimizer_step", "norm", "elementwise")
    real = {g: getattr(K, g) for g in getters}
    for g in getters:
        setattr(K, g, lambda *a, **k: stub)
    try:
        sizes = [int(s) for s in arch.split("-")]
        layers = [fn.Dense(i, o, activation="relu") for i, o in zip(sizes, sizes[1:-1])]
        model = fn.Sequential(*layers, fn.Dense(sizes[-2], sizes[-1]), backend="cuda",
                              dtype=np.float32, seed=0)
        cu = model.backend
        cu._launchers.clear()           # (launch configurations made before the stubs)
        rng = np.random.default_rng(0)
        x = cu.from_numpy(rng.standard_normal((batch, sizes[0])).astype(np.float32))
        y = cu.from_numpy(rng.integers(0, sizes[-1], batch))
        loss, opt = fn.CrossEntropyLoss(backend="cuda"), fn.Adam(model)

        def step():
            opt.zero_grad()
            loss.forward(model.forward(x), y)
            model.backward(loss.backward())
            opt.step()

        for _ in range(10):
            step()
        seen[:2] = [0, 0]
        step()
        seen[2] = False
        best = math.inf
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(steps // 5):
                step()
            best = min(best, (time.perf_counter() - t) / (steps // 5))
        return seen[0], seen[1], best * 1e6
    finally:
        for g, f in real.items():
            setattr(K, g, f)
        fn.get_backend("cuda")._launchers.clear()      # (the stubs' configurations)


def host(arch, batch):
    launched, arrays, own = host_cost(arch, batch)
    numba_us = NUMBA_LAUNCH_US * launched + NUMBA_ARRAY_US * arrays
    print(f"host cost of a step, {arch} B={batch}, device batch (Adam, cross-entropy; "
          f"kernels stubbed):")
    print(f"  {launched} launches, {arrays} array arguments: numba-cuda's host cost "
          f"about {numba_us:.0f} us")
    print(f"  fastnn's own host time {own:.1f} us per step (best of 5 runs)")


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
    for arch, batch in ((args.arch, args.batch), ("64-128-10", 32),
                        ("784-512-256-10", 1024)):
        host(arch, batch)
    ptx_mix()


if __name__ == "__main__":
    main()
