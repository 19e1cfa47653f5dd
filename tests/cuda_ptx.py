"""Compile every cuda kernel to PTX for a real GPU, and (with the CUDA toolkit's
ptxas and nvdisasm, the ``cuda-tools`` extra) to machine code: no GPU or driver
needed.  Run by the cuda tests in a process of its own, without the simulator,
because the simulator runs kernels as Python and accepts code that CUDA rejects.

The kernels come from the same tables the backend launches from, which the registry
(``fastnn.kernels.specs``) drives: activations, loss kernels, update rules, GEMM uses
and tilings, so a new entry is compiled here without an edit.  Each signature is the
numba type of host arrays shaped as the backend passes them.

With ptxas, each kernel's registers and local memory are held to a budget
(``budget``): no spills and no stack frame anywhere (a spilled GEMM accumulator runs
from local memory), and a GEMM's registers low enough for its tiling's blocks per
multiprocessor.  With nvdisasm, the FFMA (float64: DFMA) share of each GEMM's inner
loop, the instructions of the k-step loop that do the product's work, is reported
and held to a floor per tiling.  ``--report`` prints every kernel's figures.

Prints one line per failure; exit 0 when all pass, 3 when NVVM is not installed (the
test then skips, saying so)."""
import os
import re
import subprocess
import sys
import tempfile

import numba
import numpy as np
from numba import cuda

from fastnn.kernels import cuda as K, specs
from kernel_cases import rule_scalars

CC = (9, 0)
SM_REGISTERS = 65536          # per multiprocessor, sm_90
# Each GEMM tiling is held to what kernels.cuda.TILING_CODE says of it (pick_tiling's
# cost model rests on it: (FMA share, resident blocks (float32, float64))): the inner loop's FMA share, and
# registers few enough for its blocks per multiprocessor.  (Measured on 2026-12-04,
# numba-cuda 0.30, CUDA 13.5's NVVM and ptxas: registers 114-126 / 186-206 (float32 /
# float64) at t128, 56-66 / 72-80 at t64, 32-46 / 37-48 at t32; FMA shares 65-67%,
# 61-62%, 31-33%.  Before the GEMM's indices went unsigned and its loops counted:
# 165-166 / 244-254 registers at t128, FMA shares 41-46%, 33%, 11-12%.)


def sig(*examples):
    return tuple(numba.typeof(e) for e in examples)


def cases(dt):
    """(kind, name, dispatcher, signature) of every kernel for float type dt."""
    F = np.dtype(dt).type
    v1, v2 = np.zeros(4, dt), np.zeros((3, 4), dt)
    labels = np.zeros((3, 1), np.intp)
    red = (np.zeros(2), np.zeros(8), np.zeros(1, np.uint32))  # sums, parts, blocks done
    elementwise = [a for a, s in specs.ACTIVATIONS.items() if not s.rows]
    for tiling in K.LARGEST_FIRST:                  # every GEMM specialisation
        for act in elementwise:
            yield ("gemm", tiling, K.gemm_kernel("forward", act, dt, tiling),
                   sig(v2, v2, F(1), K.GemmForward(v2, v2, v1)))
            yield ("gemm", tiling, K.gemm_kernel("delta", act, dt, tiling),
                   sig(v2, v2, F(1), K.GemmDelta(v2, v2, v2)))
        yield ("gemm", tiling, K.gemm_kernel("accumulate", "linear", dt, tiling),
               sig(v2, v2, F(1), K.GemmAccumulate(v2)))
    for act, spec in specs.ACTIVATIONS.items():
        a = v2 if spec.rows else v1
        yield "other", act, K.activation_forward(act, dt), sig(a, a)
        yield "other", act, K.activation_delta(act, dt), sig(a, a, a, a)
        if not spec.rows:
            yield "other", act, K.bias_backward(act, dt), sig(v2, v2, v2, v2, v1, F(1))
    for name, spec in specs.LOSS_KERNELS.items():
        if spec.form == "elementwise":
            args = (v1, v1, v1, F(1), F(1), *red, 1.0, F(0), F(0), True)
        else:
            args = (v2, labels if spec.target == "labels" else v2, v2, F(1), F(1), *red,
                    1.0)
        yield "other", name, K.loss(name, dt), sig(*args)
    for rule, spec in specs.UPDATE_RULES.items():
        h = rule_scalars(rule)
        h = h._make(F(x) for x in h)
        yield ("other", rule, K.optimizer_step(rule, dt),
               sig(v1, v1, *(v1,) * len(spec.state), h))
    yield "other", "fill", K.elementwise("fill", dt), sig(v1, F(0))
    yield "other", "scale", K.elementwise("scale", dt), sig(v1, F(0))
    for kind in ("sum", "max"):
        yield "other", kind, K.norm(kind, dt), sig(v1, 2.0, *red)
    for y in (labels, v2):
        yield ("other", "gather", K.elementwise("gather", dt),
               sig(v2, y, np.zeros(3, np.intp), v2, y))


def tool(name):
    """The toolkit's ``name`` (ptxas, nvdisasm) matching NVVM's version, or None."""
    try:
        from cuda.pathfinder import find_nvidia_binary_utility
        return find_nvidia_binary_utility(name)
    except Exception:
        return None


def assemble(ptx, ptxas, workdir):
    """(registers, spill store bytes, spill load bytes, stack frame bytes, cubin)."""
    src, cubin = os.path.join(workdir, "k.ptx"), os.path.join(workdir, "k.cubin")
    with open(src, "w") as fh:
        fh.write(ptx)
    # -c: relocatable, as numba-cuda links it (with its CUDA C helpers, such as
    # numba_attempt_nocopy_reshape, which the PTX leaves undefined)
    run = subprocess.run([ptxas, f"-arch=sm_{CC[0]}{CC[1]}", "-c", "-v", src, "-o",
                          cubin], capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(run.stderr.strip()[-600:])
    info = run.stderr
    regs = int(re.search(r"Used (\d+) registers", info).group(1))
    stack, stores, loads = map(int, re.search(
        r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
        info).groups())
    return regs, stores, loads, stack, cubin


_OPCODE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)")


def fma_share(cubin, nvdisasm, fma):
    """The FMA share of a GEMM's inner loop: in the SASS, cut into basic blocks at
    labels, the block with the most shared-memory loads (LDS) and FMAs is the k-step
    loop; the share is its FMAs over its instructions (NOPs aside)."""
    sass = subprocess.run([nvdisasm, "-c", cubin], capture_output=True, text=True,
                          check=True).stdout
    blocks, cur = [], []
    for line in sass.splitlines():
        if re.match(r"^\s*\.L_x_\d+:", line):
            blocks.append(cur)
            cur = []
        elif m := _OPCODE.search(line):
            if m.group(1) != "NOP":
                cur.append(m.group(1))
    blocks.append(cur)
    inner = max((b for b in blocks if any(op.startswith("LDS") for op in b)),
                key=lambda b: sum(op.startswith(fma) for op in b))
    return sum(op.startswith(fma) for op in inner) / len(inner)


def budget(kind, tiling, dt, regs, stores, loads, stack, threads):
    """What is over budget (an empty list when nothing is)."""
    over = [f"{what} {n} bytes" for what, n in (("spill stores", stores),
                                                ("spill loads", loads),
                                                ("stack frame", stack)) if n]
    if kind == "gemm":
        blocks = K.TILING_CODE[tiling][1][dt == np.float64]
        most = SM_REGISTERS // (blocks * threads) // 8 * 8      # (allocated by 8)
        if regs > min(most, 255):
            over.append(f"{regs} registers > {min(most, 255)} ({blocks} blocks of "
                        f"{threads} threads per multiprocessor)")
    return over


def main(report=False):
    assert not K.SIMULATED, "run without NUMBA_ENABLE_CUDASIM"
    ptxas, nvdisasm = tool("ptxas"), tool("nvdisasm")
    if not ptxas:
        print("ptxas not found (pip install 'fastnn[cuda-tools]'): PTX only")
    failures = n = 0
    shares = {}
    with tempfile.TemporaryDirectory() as workdir:
        for dt in (np.float32, np.float64):
            for kind, tiling, disp, signature in cases(dt):
                n += 1
                name = disp.py_func.__qualname__
                try:
                    ptx, _ = cuda.compile_ptx(
                        disp.py_func, signature, cc=CC,
                        launch_bounds=disp.targetoptions.get("launch_bounds"))
                except Exception as exc:
                    text = " ".join(str(exc).split())
                    if "nvvm" in text.lower() and n == 1:
                        print(f"NVVM not available: {text[:300]}")
                        return 3
                    failures += 1
                    print(f"FAIL {name} {signature}: {text[:600]}")
                    continue
                if not ptxas:
                    continue
                try:
                    regs, stores, loads, stack, cubin = assemble(ptx, ptxas, workdir)
                except RuntimeError as exc:
                    failures += 1
                    print(f"FAIL ptxas {name}: {exc}")
                    continue
                tx, ty = K.TILINGS[tiling][:2] if kind == "gemm" else (K.BLOCK, 1)
                over = budget(kind, tiling, dt, regs, stores, loads, stack, tx * ty)
                line = f"{name}: {regs} registers, stack {stack}, spills {stores}/{loads}"
                if kind == "gemm" and nvdisasm:
                    share = fma_share(cubin, nvdisasm, "FFMA" if dt == np.float32
                                      else "DFMA")
                    shares.setdefault((tiling, np.dtype(dt).name), []).append(share)
                    floor = K.TILING_CODE[tiling][0]
                    line += f", inner-loop FMA share {share:.0%}"
                    if share < floor:
                        over.append(f"inner-loop FMA share {share:.0%} < {floor:.0%}")
                if over:
                    failures += 1
                    print(f"OVER BUDGET {line}: {'; '.join(over)}")
                elif report:
                    print(line)
    print(f"{n - failures} of {n} kernels compiled to PTX for sm_{CC[0]}{CC[1]}"
          + (", assembled within their budgets" if ptxas else ""))
    for (tiling, dtn), s in sorted(shares.items()):
        print(f"GEMM {tiling} {dtn}: inner-loop FMA share {min(s):.0%}-{max(s):.0%}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(report="--report" in sys.argv))
