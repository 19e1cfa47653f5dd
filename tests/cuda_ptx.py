"""Compile every cuda kernel to PTX for a real GPU (no GPU or driver needed, only
NVVM): run by test_cuda.py in a process of its own, without the simulator, because
the simulator runs kernels as Python and accepts code that CUDA rejects.

The kernels and signatures come from the same tables the backend launches from
(activations, losses, update rules, GEMM uses and tilings), so a new entry is
compiled here without an edit.  Prints one line per failure; exit 0 when all
compile, 3 when NVVM is not installed (the test then skips, saying so)."""
import sys

import numba
import numpy as np
from numba import cuda
from numba import types as T

from fastnn.kernels import cuda as K
from fastnn.kernels.formulas import OPTIMIZER_STATES
from kernel_cases import rule_scalars

CC = (9, 0)


def array(dtype, ndim):
    return T.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C")


def cases(dt):
    s = numba.from_dtype(np.dtype(dt))
    A1, A2, I1, I2 = array(dt, 1), array(dt, 2), array(np.intp, 1), array(np.intp, 2)
    acc = array(np.float64, 1)
    red = (acc, acc, array(np.int32, 1))     # sums, per-block parts, blocks done
    # every tiling with one epilogue, every epilogue with one tiling (a tiling
    # changes constants, not typing; the big tilings take seconds each to compile)
    for tiling in K.LARGEST_FIRST:
        for act in (("relu",) if tiling != K.LARGEST_FIRST[-1] else K.ACTIVATIONS):
            yield K.gemm_kernel("forward", act, dt, tiling), (A2, A2, A2, s, A1, A2)
            yield K.gemm_kernel("delta", act, dt, tiling), (A2, A2, A2, s, A2, A2)
        yield K.gemm_kernel("accumulate", "linear", dt, tiling), (A2, A2, A2, s, A2, A2)
    for act in list(K.ACTIVATIONS) + ["softmax"]:
        A = A2 if act == "softmax" else A1
        yield K.kernel("forward", act, dt), (A, A)
        yield K.kernel("delta", act, dt), (A, A, A, A)
        if act != "softmax":
            yield K.kernel("bias_backward", act, dt), (A2, A2, A2, A2, A1, s)
    for loss in K.ELEMENT_LOSSES:
        yield K.kernel("loss", loss, dt), (A1, A1, A1, s, s, *red, T.float64, s, s,
                                           T.boolean)
    yield K.kernel("loss", "cross_entropy", dt), (A2, I2, A2, s, s, *red, T.float64)
    yield K.kernel("loss", "cross_entropy_probs", dt), (A2, A2, A2, s, s, *red,
                                                        T.float64)
    for rule, states in OPTIMIZER_STATES.items():
        hyper = T.UniTuple(s, len(rule_scalars(rule)))
        yield K.kernel("optimizer", rule, dt), (A1, A1) + (A1,) * len(states) + (hyper,)
    yield K.kernel("fill", None, dt), (A1, s)
    yield K.kernel("scale", None, dt), (A1, s)
    for kind in ("sum", "max"):
        yield K.kernel("norm", kind, dt), (A1, T.float64, *red)
    for labels in (I2, A2):
        yield K.kernel("gather", None, dt), (A2, labels, I1, A2, labels)


def main():
    assert not K.SIMULATED, "run without NUMBA_ENABLE_CUDASIM"
    failures = n = 0
    for dt in (np.float32, np.float64):
        for disp, sig in cases(dt):
            n += 1
            try:
                cuda.compile_ptx(disp.py_func, sig, cc=CC)
            except Exception as exc:
                text = " ".join(str(exc).split())
                if "nvvm" in text.lower() and n == 1:
                    print(f"NVVM not available: {text[:300]}")
                    return 3
                failures += 1
                print(f"FAIL {disp.py_func.__qualname__} {sig}: {text[:600]}")
    print(f"{n - failures} of {n} kernels compiled to PTX for sm_{CC[0]}{CC[1]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
