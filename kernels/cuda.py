"""numba.cuda kernels: the GPU side of the formulas in :mod:`fastnn.kernels.formulas`.

The kernels here are templates, like those of :mod:`fastnn.kernels.cpu`: their slots
(``f``, ``df``, ``EPILOGUE``, tile sizes, ``DT``...) are bound per specialisation by
:func:`fastnn.kernels.template.specialise`, so each compiled kernel has its formula
inlined and its sizes as compile-time constants.  The optimizer steps are the
cpu's own loops (:mod:`.loops`) with a grid-stride range.  The activation, loss and
optimizer formulas
are the same ``numba.njit`` scalar functions the cpu kernels inline; a cuda kernel
calls them as device functions.  Nothing here allocates device memory: every kernel
writes into arrays it is given (inputs first, outputs last).

What the kernels are:
- :func:`gemm`: C = op(A) op(B), tiled in shared memory, each thread holding an RM x RN
  block of C in registers (not one thread per output element), with an epilogue
  applied as C is written: bias + activation (forward), ``+= alpha * C`` (weight
  gradients, beta = 1, straight into the gradient buffer), or times the previous
  layer's f' (input gradients).  The weight-gradient GEMM reads the layer input as
  [X, 1] (a virtual row of ones, ``PAD``) so that the bias gradient, the column sums of
  dL/dZ, comes out of the same GEMM into the bias slots that follow the weights in the
  flat buffer.
- elementwise kernels (activations, their derivatives, fills, scaling, the optimizer
  steps) in grid-stride loops over flat buffers;
- row kernels (softmax, cross-entropy): one thread per row;
- reductions (loss values, norms, and the accuracy's correct predictions, counted in
  the loss kernel's own pass) in float64: per block in shared memory, then the last
  block to finish combines the blocks' totals in block order (:func:`deposit_totals`), so a
  loss value or a gradient norm is the same on every run, like every gradient element
  (each written by one thread in a fixed order).
"""
import functools
import math
from collections import namedtuple

import numpy as np

from . import _numba_setup  # noqa: F401 (first: it imports numba, Ctrl-C deferred)
import numba  # noqa: E402
from numba import cuda  # noqa: E402

from . import loops, specs
from .formulas import formulas
from .template import Slot, Target, specialise

SIMULATED = bool(numba.config.ENABLE_CUDASIM)
U = numba.uint64        # the GEMM's index type (see gemm)

KERNEL = Target("cuda", cuda.jit)
DEVICE = Target("cuda_device", cuda.jit(device=True, inline=True))

# Slots of the templates below (the shared ones, f and indices, are in loops.py).
f = Slot("f", "the scalar formula of the kernel (kernels.formulas)")
df = Slot("df", "an activation's derivative f'(z, a)")
EPILOGUE = Slot("EPILOGUE", "what the GEMM does with each finished element")
FINISH = Slot("FINISH", "the GEMM epilogue's activation part, from what EPILOGUE wrote")
exp = Slot("exp", "the float type's exp formula")
softmax_row = Slot("softmax_row", "the exp pass of one softmax row")
row_label = Slot("row_label", "the class of a target row")
combine = Slot("combine", "how a reduction combines two values (a sum or a max)")
reduce = Slot("reduce", "a block's sum, in float64")
reduce_a = Slot("reduce_a", "a block's combine of the first value, in float64")
deposit = Slot("deposit", "a grid's two totals into the accumulator, in block order")
DT = Slot("DT", "the numba float type")
NT = Slot("NT", "threads per block")
TX = Slot("TX", "GEMM threads per block along the columns")
TY = Slot("TY", "GEMM threads per block along the rows")
RM = Slot("RM", "GEMM output rows per thread")
RN = Slot("RN", "GEMM output columns per thread")
BK = Slot("BK", "GEMM K step")
BM = Slot("BM", "GEMM tile rows (TY * RM)")
BN = Slot("BN", "GEMM tile columns (TX * RN)")
BMP = Slot("BMP", "BM + 1: a padding column of the shared A tile")
BNP = Slot("BNP", "BN + 1: a padding column of the shared B tile")
TRANS_A = Slot("TRANS_A", "whether A is stored transposed")
TRANS_B = Slot("TRANS_B", "whether B is stored transposed")
PAD = Slot("PAD", "the value of op(A)'s rows past the stored ones")

# Threads per block of the elementwise, row and reduction kernels (a power of two:
# the block reduction halves it).  The simulator runs each thread as a Python thread:
# there, blocks are small so the tests stay fast, while the code path (grid-stride
# loops over several blocks, the reduction tree) is the same; the reduction tests
# also run the real BLOCK and grids of more blocks than BLOCK (test_cuda_kernels).
BLOCK = 8 if SIMULATED else 256
MAX_BLOCKS = 2 if SIMULATED else 4096

# GEMM tilings: (threads in x, threads in y, rows per thread, columns per thread, K
# step).  The tile is (TY*RM) x (TX*RN).  ``pick_tiling`` chooses among them by a cost
# model.  The simulator gets one small tiling; the tests also run the real ones once
# on small inputs (test_cuda_kernels.py).
TILINGS = {
    "t128": (16, 16, 8, 8, 8),
    "t64": (16, 16, 4, 4, 16),
    "t32": (16, 16, 2, 2, 16),
    "sim": (2, 2, 4, 4, 4),
}
LARGEST_FIRST = ("t128", "t64", "t32")
for _name, (_tx, _ty, _rm, _rn, _bk) in TILINGS.items():
    # the GEMM stages its tiles in whole passes of the block (a constant trip count)
    if (_ty * _rm * _bk) % (_tx * _ty) or (_bk * _tx * _rn) % (_tx * _ty):
        raise ValueError(f"tiling {_name}: a {_ty * _rm} x {_bk} or {_bk} x "
                         f"{_tx * _rn} tile is not a whole number of {_tx * _ty} threads")

# What each tiling's machine code for sm_90 does (tests/cuda_ptx.py measures it with
# ptxas and nvdisasm, and fails when the code falls short of this): the FMA share of
# its inner loop, and the blocks per multiprocessor its registers leave room for
# (float32, float64).  (Launch bounds of these blocks were tried: ptxas then takes
# more registers, up to the bound, and the 32 x 32 tile's FMA share falls from 32% to
# 27%; the registers it takes without them are within the budget anyway.)
TILING_CODE = {"t128": (0.62, (2, 1)), "t64": (0.58, (3, 3)), "t32": (0.28, (4, 4))}
FULL_WARPS = 16      # resident warps per multiprocessor that keep its FMA units busy


def tile_grid(m, n, tiling):
    """(row tiles, column tiles) of the named tiling over an m x n output."""
    tx, ty, rm, rn, _ = TILINGS[tiling]
    return -(-m // (ty * rm)), -(-n // (tx * rn))


def pick_tiling(m, n, sms, dtype=np.float32):
    """The tiling for an m x n output on a GPU with ``sms`` multiprocessors: the one
    with the least estimated time, which is a multiprocessor's share of the blocks
    (ceil(blocks / sms)) times a block's FMAs (its tile's size, per k) over its inner
    loop's FMA share, slowed where fewer than FULL_WARPS warps are resident (one
    block of 256 threads is 8: the FMA latency shows).  Ties go to the larger tile.
    A model from the instruction mix (TILING_CODE), not yet checked on a GPU: the
    real-GPU check (issue 18, section 4) times the tilings."""
    if SIMULATED:
        return "sim"
    wide = np.dtype(dtype) == np.float64
    best, pick = math.inf, LARGEST_FIRST[-1]
    for name in LARGEST_FIRST:
        tx, ty, rm, rn, _ = TILINGS[name]
        share, resident = TILING_CODE[name]
        rows, cols = tile_grid(m, n, name)
        per_sm = -(-rows * cols // sms)
        warps = min(per_sm, resident[wide]) * tx * ty // 32
        cost = per_sm * ty * rm * tx * rn / share / min(1.0, warps / FULL_WARPS)
        if cost < best:
            best, pick = cost, name
    return pick


GRID_X_MAX, GRID_Y_MAX = 2**31 - 1, 65535     # CUDA's limits on gridDim.x and .y


def gemm_grid(m, n, tiling):
    """(blocks, threads per block) of a GEMM launch for an m x n output.  Row tiles go
    on the grid's x, which may hold 2^31 - 1 blocks, and column tiles on y (65,535):
    rows are the batch, which can be a whole data set (``predict`` on 10^8 rows needs
    781,250 row tiles of 128), while columns are a layer's width.  With rows on y, as
    before, a forward over more than 65,535 x 128 = 8,388,480 rows could not launch.
    Raises ValueError, naming the limit, for an output no grid can cover."""
    tx, ty = TILINGS[tiling][:2]
    rows, cols = tile_grid(m, n, tiling)
    if rows > GRID_X_MAX or cols > GRID_Y_MAX:
        raise ValueError(f"a {m} x {n} GEMM output needs a grid of {rows} x {cols} "
                         f"tiles; CUDA allows {GRID_X_MAX} x {GRID_Y_MAX}")
    return (rows, cols), (tx, ty)


# ---- GEMM ------------------------------------------------------------------------
def gemm(a, b, alpha, out):
    """EPILOGUE(out, m, n, sum_k op(A)[m, k] op(B)[k, n], alpha) for the block's tile:
    ``out`` is the named tuple of the arrays the epilogue writes (and reads), the
    first of them the M x N product's shape (GemmForward, GemmAccumulate, GemmDelta).

    op(A) is ``a`` (M x K) or, with TRANS_A, ``a`` stored K x M; op(B) is ``b`` (K x N)
    or, with TRANS_B, stored N x K.  Rows of op(A) past the stored ones read as PAD
    (1 for the bias-gradient row of [X, 1], never read otherwise).  Thread (ty, tx)
    owns rows ty + i*TY and columns tx + j*TX of the tile: neighbouring threads write
    neighbouring columns (coalesced) and read distinct shared-memory banks."""
    # Index arithmetic is unsigned (U): numba wraps negative signed indices around,
    # which costs every shared-memory load a compare and a select and keeps the
    # compiler from folding a loop's constant offsets into the loads' addresses.
    M, N = U(out[0].shape[0]), U(out[0].shape[1])
    K = U(a.shape[0] if TRANS_A else a.shape[1])
    am = U(a.shape[1] if TRANS_A else a.shape[0])
    # BMP = BM + 1, BNP = BN + 1: a padding column so that the transposing stores
    # below hit different banks (a slot: shared-array shapes must be constants)
    As = cuda.shared.array((BK, BMP), DT)
    Bs = cuda.shared.array((BK, BNP), DT)
    acc = cuda.local.array((RM, RN), DT)
    af = cuda.local.array(RM, DT)
    bf = cuda.local.array(RN, DT)
    tx = U(cuda.threadIdx.x)
    ty = U(cuda.threadIdx.y)
    tid = ty * U(TX) + tx
    row0 = U(cuda.blockIdx.x) * U(BM)        # rows on x: see gemm_grid
    col0 = U(cuda.blockIdx.y) * U(BN)
    zero = DT(0)
    for i in range(RM):
        for j in range(RN):
            acc[i, j] = zero
    for k0 in range(U(0), K, U(BK)):
        # Stage op(A)'s BM x BK and op(B)'s BK x BN tiles; consecutive threads read
        # consecutive addresses of the stored layout.
        # (every tiling's tiles are a whole number of passes of the block: the
        # trip count is a constant, and the loop unrolls)
        for q in range(U(BM * BK // NT)):
            e = tid + q * U(NT)
            if TRANS_A:
                kk, mm = e // U(BM), e % U(BM)
            else:
                mm, kk = e // U(BK), e % U(BK)
            gm, gk = row0 + mm, k0 + kk
            v = zero
            if gk < K:
                if gm < am:
                    v = a[gk, gm] if TRANS_A else a[gm, gk]
                else:
                    v = DT(PAD)
            As[kk, mm] = v
        for q in range(U(BK * BN // NT)):
            e = tid + q * U(NT)
            if TRANS_B:
                nn, kk = e // U(BK), e % U(BK)
            else:
                kk, nn = e // U(BN), e % U(BN)
            gn, gk = col0 + nn, k0 + kk
            v = zero
            if gk < K and gn < N:
                v = b[gn, gk] if TRANS_B else b[gk, gn]
            Bs[kk, nn] = v
        cuda.syncthreads()
        kk = U(0)
        # A while loop, not range(BK): numba's range computes a general trip count,
        # and the compiler unrolled that by 4, keeping a 64-bit counter and its
        # checks in the loop; this one it unrolls whole, every shared-memory load
        # at a constant offset (tests/cuda_ptx.py measures the FMA share).
        while kk < U(BK):
            for i in range(U(RM)):
                af[i] = As[kk, ty + i * U(TY)]
            for j in range(U(RN)):
                bf[j] = Bs[kk, tx + j * U(TX)]
            for i in range(RM):
                for j in range(RN):
                    acc[i, j] += af[i] * bf[j]
            kk += U(1)
        cuda.syncthreads()
    for i in range(U(RM)):
        m = row0 + ty + i * U(TY)
        if m < M:
            for j in range(U(RN)):
                n = col0 + tx + j * U(TX)
                if n < N:
                    EPILOGUE(out, m, n, acc[i, j], alpha)
    # The activation's part of the epilogue, from what EPILOGUE wrote, in a loop of
    # its own: inside the loop above, a long f (gelu, elu, silu, softplus, tanh,
    # sigmoid) makes the compiler leave that loop rolled, and acc, indexed by loop
    # variables, then lives in local memory instead of registers (the ptxas budget
    # in tests/cuda_ptx.py catches it).  Each thread reads back its own writes.
    for i in range(U(RM)):
        m = row0 + ty + i * U(TY)
        if m < M:
            for j in range(U(RN)):
                n = col0 + tx + j * U(TX)
                if n < N:
                    FINISH(out, m, n)


# Epilogues: what happens to one finished element v of the product, and the named
# tuples of the arrays each one writes (the GEMM's ``out``).
GemmForward = namedtuple("GemmForward", "a z bias")
GemmAccumulate = namedtuple("GemmAccumulate", "c")
GemmDelta = namedtuple("GemmDelta", "grad_z z a")


def epilogue_forward(out, m, n, v, alpha):
    """Z = v + b (then finish_forward: A = f(Z))."""
    out.z[m, n] = v + out.bias[n]


def finish_forward(out, m, n):
    """A = f(Z) (a linear layer has no finish: its A and Z are one buffer)."""
    out.a[m, n] = f(out.z[m, n])


def epilogue_accumulate(out, m, n, v, alpha):
    """C += alpha v: gradients accumulate (beta = 1)."""
    out.c[m, n] += alpha * v


def epilogue_delta(out, m, n, v, alpha):
    """dL/dZ of the layer below = dL/dZ W^T (then finish_delta: times f'(Z, A) of
    that layer)."""
    out.grad_z[m, n] = v


def finish_delta(out, m, n):
    out.grad_z[m, n] *= df(out.z[m, n], out.a[m, n])


def finish_nothing(out, m, n):
    """The finish of a linear activation's GEMM, and of the weight gradients'."""
    pass


# ---- elementwise, over flat buffers --------------------------------------------
def fill(buf, value):
    for i in range(cuda.grid(1), buf.shape[0], cuda.gridsize(1)):
        buf[i] = value


def scale(buf, factor):
    for i in range(cuda.grid(1), buf.shape[0], cuda.gridsize(1)):
        buf[i] *= factor


def elementwise_forward(z, a):
    """a = f(z) over flat buffers.  (The cpu's loop, loops.activation_forward, takes
    any shape and reshapes: in a cuda kernel a reshape calls a C helper and takes a
    160-byte stack frame per thread, and the backend passes flat buffers anyway.)"""
    for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        a[i] = f(z[i])


def elementwise_delta(z, a, grad_a, grad_z):
    """grad_z = grad_a * f'(z, a), elementwise (no bias gradient: the fused pass gets
    it from the weight-gradient GEMM)."""
    for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        grad_z[i] = grad_a[i] * df(z[i], a[i])


def bias_backward_columns(z, a, grad_a, grad_z, grad_b, scale):
    """The per-layer interface's activation backward: one thread per column walks the
    rows (neighbouring threads read neighbouring columns), writing grad_z = grad_a *
    f'(z, a) and adding scale * its column sum into grad_b.  Deterministic (no
    atomics).  (Softmax: its row kernel first, then this with f' = 1 over its result.)"""
    rows, cols = grad_z.shape
    for j in range(cuda.grid(1), cols, cuda.gridsize(1)):
        s = DT(0)
        for r in range(rows):
            g = grad_a[r, j] * df(z[r, j], a[r, j])
            grad_z[r, j] = g
            s += g
        grad_b[j] += scale * s


def gather_rows(xs, ys, idx, xd, yd):
    """xd[i] = xs[idx[i]] and yd[i] = ys[idx[i]], rows of two 2-D arrays: the
    shuffled micro-batch of a device-resident data set, in one launch."""
    xc, yc = xs.shape[1], ys.shape[1]
    n = xd.shape[0]
    for e in range(cuda.grid(1), n * (xc + yc), cuda.gridsize(1)):
        r, c = e // (xc + yc), e % (xc + yc)
        if c < xc:
            xd[r, c] = xs[idx[r], c]
        else:
            yd[r, c - xc] = ys[idx[r], c - xc]


# ---- rows ------------------------------------------------------------------------
def softmax_row_exp(z, a, r):
    """a[r] = exp(z[r] - max); returns (max, sum of exp, argmax: the first maximum,
    as NumPy's) for the cross-entropy and its accuracy."""
    cols = z.shape[1]
    m = z[r, 0]
    best = 0
    for j in range(1, cols):
        if z[r, j] > m:
            m, best = z[r, j], j
    s = DT(0)
    for j in range(cols):
        e = exp(z[r, j] - m)
        a[r, j] = e
        s += e
    return m, s, best


def softmax_forward(z, a):
    for r in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        m, s, best = softmax_row(z, a, r)
        inv = DT(1) / s
        for j in range(z.shape[1]):
            a[r, j] *= inv


def softmax_delta(z, a, grad_a, grad_z):
    """grad_z = a * (grad_a - <grad_a, a>) row by row."""
    for r in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        d = DT(0)
        for j in range(z.shape[1]):
            d += grad_a[r, j] * a[r, j]
        for j in range(z.shape[1]):
            grad_z[r, j] = a[r, j] * (grad_a[r, j] - d)


# ---- reductions into a float64 accumulator --------------------------------------
def block_reduce(value):
    """``value`` combined over the block by the slot ``combine`` (a sum or a max), in
    float64; the result is valid in thread 0."""
    buf = cuda.shared.array(NT, numba.float64)
    t = cuda.threadIdx.x
    buf[t] = value
    cuda.syncthreads()
    step = NT // 2
    while step > 0:
        if t < step:
            buf[t] = combine(buf[t], buf[t + step])
        cuda.syncthreads()
        step //= 2
    return buf[0]


def add(x, y):
    return x + y


def larger(x, y):
    return max(x, y)


def elementwise_loss(out, target, grad, param, norm, sums, parts, done, weight, out_cut,
                     target_cut, count):
    """grad = f'(out, target) * norm; sums[0] += weight * norm * sum f(out, target).
    With ``count``, also sums[1] += the elements where (out > out_cut) ==
    (target > target_cut): the accuracy of the binary losses, in the same pass."""
    part = 0.0
    hits = 0.0
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        o, t = out[i], target[i]
        v, d = f(o, t, param)
        part += v
        grad[i] = d * norm
        if count and (o > out_cut) == (t > target_cut):
            hits += 1.0
    deposit(sums, parts, done, part * norm * weight, hits)


def deposit_totals(sums, parts, done, a, b):
    """sums[0] = combine(sums[0], the grid's combine of ``a``) (a sum, or a max of
    values >= 0) and sums[1] += the grid's sum of ``b``, the same bits on every run:
    each block leaves its two totals in ``parts`` (2 per block); the last block to
    finish, told by the ``done`` counter, combines them in block order.  (Atomic adds
    into ``sums`` would add the blocks in whatever order they finish.)

    Memory order: a block's totals are fenced before its count (``threadfence``: the
    release), and every thread of the last block fences again before it reads them
    (the acquire: on sm_70+ the fence orders its later loads after the other blocks'
    fenced stores, so no stale L1 line of ``parts`` is read; ``ldcg`` would say the
    same per load, but numba-cuda needs a driver to compile it, and the PTX check runs
    without one).  The counter wraps to 0 by itself (``atomic.inc`` up to
    blocks - 1) as the last block counts, so no separate reset store follows."""
    ta = reduce_a(a)
    tb = reduce(b)
    last = cuda.shared.array(1, numba.int32)
    t = cuda.threadIdx.x
    blocks = cuda.gridDim.x
    if t == 0:
        parts[2 * cuda.blockIdx.x] = ta
        parts[2 * cuda.blockIdx.x + 1] = tb
        cuda.threadfence()               # the totals are visible before the count
        last[0] = cuda.atomic.inc(done, 0, numba.uint32(blocks - 1)) == blocks - 1
    cuda.syncthreads()
    if last[0]:
        pa = 0.0
        pb = 0.0
        cuda.threadfence()               # acquire: the other blocks' totals
        for i in range(t, blocks, NT):   # each thread: blocks t, t + NT, ... in order
            pa = combine(pa, parts[2 * i])
            pb += parts[2 * i + 1]
        ta = reduce_a(pa)
        tb = reduce(pb)
        if t == 0:
            sums[0] = combine(sums[0], ta)
            sums[1] += tb


def label_of_row(t, r):
    """The class of row r of a target: its label, or its probabilities' argmax."""
    if t.shape[1] == 1:
        return int(t[r, 0])
    label = 0
    for j in range(1, t.shape[1]):
        if t[r, j] > t[r, label]:
            label = j
    return label


def cross_entropy_labels(z, labels, grad, param, norm, sums, parts, done, weight):
    """Softmax cross-entropy, integer labels (rows x 1): grad = (softmax - onehot) *
    norm; sums[1] += the rows whose argmax is the label (the accuracy, same pass)."""
    part = 0.0
    hits = 0.0
    for r in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        m, s, best = softmax_row(z, grad, r)
        k = norm / s
        for j in range(z.shape[1]):
            grad[r, j] *= k
        y = labels[r, 0]
        grad[r, y] -= norm
        part += math.log(s) + (m - z[r, y])
        if best == y:
            hits += 1.0
    deposit(sums, parts, done, part * norm * weight, hits)


def cross_entropy_probs(z, t, grad, param, norm, sums, parts, done, weight):
    """Cross-entropy against class probabilities: (softmax * sum(t) - t) * norm; the
    accuracy against the probabilities' argmax."""
    part = 0.0
    hits = 0.0
    for r in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        m, s, best = softmax_row(z, grad, r)
        # term by term (as the cpu kernel's row_cross_entropy): an infinite t_c
        # gives inf, not inf - inf
        lse = math.log(s) + m
        tsum = DT(0)
        for j in range(z.shape[1]):
            tsum += t[r, j]
            part += t[r, j] * (lse - z[r, j])
        k = norm * tsum / s
        for j in range(z.shape[1]):
            grad[r, j] = grad[r, j] * k - t[r, j] * norm
        if best == row_label(t, r):
            hits += 1.0
    deposit(sums, parts, done, part * norm * weight, hits)


def norm_parts(x, order, sums, parts, done):
    """sums[0] += sum |x|^order in float64 (order 2: squares; with ``combine`` a max,
    the kernel for order inf: max |x|); sums[1] += the number of NaNs (a max would
    drop them)."""
    part = 0.0
    nans = 0.0
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = abs(numba.float64(x[i]))
        if v != v:
            nans += 1.0
        elif order == 2.0:
            part = combine(part, v * v)
        else:
            part = combine(part, v if order == 0.0 else v ** order)
    deposit(sums, parts, done, part, nans)


# ---- the kernel tables, derived from the registry ----------------------------------
# (transposed A, transposed B, A's padding row value, epilogue, its finish with an
# activation; a linear one's is finish_nothing) of each GEMM use:
GEMM_USES = {
    # Z = X W + b, A = f(Z)
    "forward": (False, False, 0, epilogue_forward, finish_forward),
    # [dW; db] += s [X, 1]^T dZ
    "accumulate": (True, False, 1, epilogue_accumulate, finish_nothing),
    # dZ_below = (dZ W^T) f'
    "delta": (False, True, 0, epilogue_delta, finish_delta),
}


# Each getter is memoised on its arguments: a launch's lookup is one dictionary probe.
_memo = functools.lru_cache(maxsize=None)


def _typed(dt):
    return numba.from_dtype(dt)


def _tag(name, dt):
    return f"{name}_{dt.name}"


def grid_stride(n):
    """The indices a thread handles in a grid-stride loop over n elements: the
    ``indices`` slot of the shared loops (kernels/loops.py)."""
    return range(cuda.grid(1), n, cuda.gridsize(1))


def _grid_stride():
    return specialise(grid_stride, DEVICE, "any")


def _combines():
    return {"sum": specialise(add, DEVICE, "any"),
            "max": specialise(larger, DEVICE, "any")}


def _reducers(kind="sum", nt=BLOCK):
    """The slot of a reducing kernel launched with ``nt`` threads per block:
    ``deposit``, the grid's totals into the accumulator, the first combined by
    ``kind`` ("sum" or "max"), the second summed."""
    combines = _combines()
    blocks = {k: specialise(block_reduce, DEVICE, f"{k}_nt{nt}", NT=nt, combine=c)
              for k, c in combines.items()}
    return dict(deposit=specialise(deposit_totals, DEVICE, f"{kind}_nt{nt}", NT=nt,
                                   reduce=blocks["sum"], reduce_a=blocks[kind],
                                   combine=combines[kind]))


def _softmax_row(dt):
    return specialise(softmax_row_exp, DEVICE, dt.name, DT=_typed(dt),
                      exp=formulas(dt).exp)


@_memo
def activation_forward(name, dtype):
    """a = f(z): elementwise (any shape, read flat), or softmax by rows."""
    dt = np.dtype(dtype)
    spec = specs.ACTIVATIONS[name]
    if spec.rows:
        return specialise(softmax_forward, KERNEL, _tag(name, dt), DT=_typed(dt),
                          softmax_row=_softmax_row(dt))
    return specialise(elementwise_forward, KERNEL, _tag(name, dt),
                      f=getattr(formulas(dt), spec.formulas[0]))


@_memo
def activation_delta(name, dtype):
    """grad_z = grad_a * f'(z, a) (flat), or softmax's Jacobian-vector product (rows);
    no bias gradient (the fused pass gets it from the weight-gradient GEMM)."""
    dt = np.dtype(dtype)
    spec = specs.ACTIVATIONS[name]
    if spec.rows:
        return specialise(softmax_delta, KERNEL, _tag(name, dt), DT=_typed(dt))
    return specialise(elementwise_delta, KERNEL, _tag(name, dt),
                      df=getattr(formulas(dt), spec.formulas[1]))


@_memo
def bias_backward(name, dtype):
    """The per-layer interface's activation backward (elementwise activations; for
    softmax, its delta then this with ``linear``)."""
    dt = np.dtype(dtype)
    return specialise(bias_backward_columns, KERNEL, _tag(name, dt), DT=_typed(dt),
                      df=getattr(formulas(dt), specs.ACTIVATIONS[name].formulas[1]))


# A loss kernel's form (kernels.specs) -> its template and its slots' bindings
# (besides the reduction's, which every form has).
_LOSS_FORMS = {
    "elementwise": (elementwise_loss,
                    lambda name, dt: dict(f=getattr(formulas(dt), name))),
    "softmax_labels": (cross_entropy_labels,
                       lambda name, dt: dict(softmax_row=_softmax_row(dt))),
    "softmax_probs": (cross_entropy_probs,
                      lambda name, dt: dict(DT=_typed(dt), softmax_row=_softmax_row(dt),
                                            row_label=specialise(label_of_row, DEVICE,
                                                                 "any"))),
}


@_memo
def loss(name, dtype, nt=BLOCK):
    """The loss kernel ``name`` (a key of ``specs.LOSS_KERNELS``), for launches of
    ``nt`` threads per block (the backend's BLOCK; the tests try others)."""
    dt = np.dtype(dtype)
    template, bind = _LOSS_FORMS[specs.LOSS_KERNELS[name].form]
    return specialise(template, KERNEL, f"{_tag(name, dt)}_nt{nt}", **bind(name, dt),
                      **_reducers(nt=nt))


@_memo
def optimizer_step(name, dtype):
    """One step of the update rule ``name`` over flat buffers: the cpu's loop
    (kernels/loops.py) with a grid-stride range."""
    dt = np.dtype(dtype)
    rule = specs.UPDATE_RULES[name]
    return specialise(loops.OPTIMIZER_STEPS[len(rule.state)], KERNEL, _tag(name, dt),
                      indices=_grid_stride(), f=getattr(formulas(dt), name))


@_memo
def norm(kind, dtype, nt=BLOCK):
    """The gradient-norm reduction: ``kind`` "sum" (finite orders) or "max" (inf),
    for launches of ``nt`` threads per block."""
    dt = np.dtype(dtype)
    return specialise(norm_parts, KERNEL, f"{_tag(kind, dt)}_nt{nt}",
                      **_reducers(kind, nt), combine=_combines()[kind])


@_memo
def elementwise(kind, dtype):
    """``kind``: "fill", "scale" or "gather" (a shuffled batch's rows)."""
    template = {"fill": fill, "scale": scale, "gather": gather_rows}[kind]
    return specialise(template, KERNEL, np.dtype(dtype).name)


@_memo
def gemm_kernel(use, activation, dtype, tiling):
    """The GEMM kernel for ``use`` ("forward": Z = XW + b, A = f(Z); "accumulate":
    [dW; db] += s [X, 1]^T dZ; "delta": dZ_below = dZ W^T * f'(Z_below)) with the
    activation whose f or f' its epilogue applies ("linear" for none), for ``dtype``
    and the named tiling of TILINGS."""
    dt = np.dtype(dtype)
    F = formulas(dt)
    tx, ty, rm, rn, bk = TILINGS[tiling]
    f_name, df_name = specs.ACTIVATIONS[activation].formulas
    trans_a, trans_b, pad, epilogue, finish = GEMM_USES[use]
    tag = f"{use}_{activation}_{dt.name}"
    bind = {"forward": dict(f=getattr(F, f_name)), "accumulate": {},
            "delta": dict(df=getattr(F, df_name))}[use]
    if activation == "linear":
        finish, bind = finish_nothing, {}
    return specialise(
        gemm, KERNEL, f"{tag}_{tiling}", EPILOGUE=specialise(epilogue, DEVICE, use),
        FINISH=specialise(finish, DEVICE, tag if bind else "any", **bind), DT=_typed(dt),
        TX=tx, TY=ty, RM=rm, RN=rn, BK=bk, BM=ty * rm, BN=tx * rn, BMP=ty * rm + 1,
        BNP=tx * rn + 1, NT=tx * ty, TRANS_A=trans_a, TRANS_B=trans_b, PAD=pad)
