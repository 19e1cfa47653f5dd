"""Compile every cuda kernel to PTX for a real GPU (no GPU or driver needed, only
NVVM): run by the cuda tests in a process of its own, without the simulator, because
the simulator runs kernels as Python and accepts code that CUDA rejects.

The kernels come from the same tables the backend launches from, which the registry
(``fastnn.kernels.specs``) drives: activations, loss kernels, update rules, GEMM uses
and tilings, so a new entry is compiled here without an edit.  Each signature is the
numba type of host arrays shaped as the backend passes them.  Prints one line per
failure; exit 0 when all compile, 3 when NVVM is not installed (the test then skips,
saying so)."""
import sys

import numba
import numpy as np
from numba import cuda

from fastnn.kernels import cuda as K, specs
from kernel_cases import rule_scalars

CC = (9, 0)


def sig(*examples):
    return tuple(numba.typeof(e) for e in examples)


def cases(dt):
    F = np.dtype(dt).type
    v1, v2 = np.zeros(4, dt), np.zeros((3, 4), dt)
    labels = np.zeros((3, 1), np.intp)
    red = (np.zeros(2), np.zeros(8), np.zeros(1, np.uint32))  # sums, parts, blocks done
    # every tiling with one epilogue, every epilogue with one tiling (a tiling
    # changes constants, not typing; the big tilings take seconds each to compile)
    elementwise = [a for a, s in specs.ACTIVATIONS.items() if not s.rows]
    for tiling in K.LARGEST_FIRST:
        for act in (("relu",) if tiling != K.LARGEST_FIRST[-1] else elementwise):
            yield (K.gemm_kernel("forward", act, dt, tiling),
                   sig(v2, v2, F(1), K.GemmForward(v2, v2, v1)))
            yield (K.gemm_kernel("delta", act, dt, tiling),
                   sig(v2, v2, F(1), K.GemmDelta(v2, v2, v2)))
        yield (K.gemm_kernel("accumulate", "linear", dt, tiling),
               sig(v2, v2, F(1), K.GemmAccumulate(v2)))
    for act, spec in specs.ACTIVATIONS.items():
        a = v2 if spec.rows else v1
        yield K.activation_forward(act, dt), sig(a, a)
        yield K.activation_delta(act, dt), sig(a, a, a, a)
        if not spec.rows:
            yield K.bias_backward(act, dt), sig(v2, v2, v2, v2, v1, F(1))
    for name, spec in specs.LOSS_KERNELS.items():
        if spec.form == "elementwise":
            args = (v1, v1, v1, F(1), F(1), *red, 1.0, F(0), F(0), True)
        else:
            args = (v2, labels if spec.target == "labels" else v2, v2, F(1), F(1), *red,
                    1.0)
        yield K.loss(name, dt), sig(*args)
    for rule, spec in specs.UPDATE_RULES.items():
        h = rule_scalars(rule)
        h = h._make(F(x) for x in h)
        yield K.optimizer_step(rule, dt), sig(v1, v1, *(v1,) * len(spec.state), h)
    yield K.elementwise("fill", dt), sig(v1, F(0))
    yield K.elementwise("scale", dt), sig(v1, F(0))
    for kind in ("sum", "max"):
        yield K.norm(kind, dt), sig(v1, 2.0, *red)
    for y in (labels, v2):
        yield K.elementwise("gather", dt), sig(v2, y, np.zeros(3, np.intp), v2, y)


def main():
    assert not K.SIMULATED, "run without NUMBA_ENABLE_CUDASIM"
    failures = n = 0
    for dt in (np.float32, np.float64):
        for disp, signature in cases(dt):
            n += 1
            try:
                cuda.compile_ptx(disp.py_func, signature, cc=CC)
            except Exception as exc:
                text = " ".join(str(exc).split())
                if "nvvm" in text.lower() and n == 1:
                    print(f"NVVM not available: {text[:300]}")
                    return 3
                failures += 1
                print(f"FAIL {disp.py_func.__qualname__} {signature}: {text[:600]}")
    print(f"{n - failures} of {n} kernels compiled to PTX for sm_{CC[0]}{CC[1]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
