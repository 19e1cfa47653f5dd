"""numba.cuda kernels: the GPU side of the formulas in :mod:`fastnn.kernels.formulas`.

The kernels here are templates, like those of :mod:`fastnn.kernels.cpu`: their slot
globals (``f``, ``df``, ``EPILOGUE``, tile sizes, ``DT``...) are bound per
specialisation by :func:`specialise`, so each compiled kernel has its formula inlined
and its sizes as compile-time constants.  The activation, loss and optimizer formulas
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
  block to finish combines the blocks' totals in block order (:func:`deposit`), so a
  loss value or a gradient norm is the same on every run, like every gradient element
  (each written by one thread in a fixed order).
"""
import math
import types

import numba
import numpy as np
from numba import cuda

from .formulas import OPTIMIZER_STATES, formulas

SIMULATED = bool(numba.config.ENABLE_CUDASIM)

# Slots of the templates (bound by specialise; these placeholders are never used).
f = df = EPILOGUE = exp = reduce = reduce_a = deposit = row_label = combine = None
DT = numba.float32
TX = TY = RM = RN = BK = BM = BN = BMP = BNP = NT = 1
TRANS_A = TRANS_B = False
PAD = 0

# Threads per block of the elementwise, row and reduction kernels (a power of two:
# the block reduction halves it).  The simulator runs each thread as a Python thread:
# there, blocks are small so the tests stay fast, while the code path (grid-stride
# loops over several blocks, the reduction tree) is the same.
BLOCK = 8 if SIMULATED else 256
MAX_BLOCKS = 2 if SIMULATED else 4096

# GEMM tilings: (threads in x, threads in y, rows per thread, columns per thread, K
# step).  The tile is (TY*RM) x (TX*RN).  ``pick_tiling`` takes the largest whose grid
# still has a block for every multiprocessor.  The simulator gets one small tiling;
# the tests also run the real ones once on small inputs (test_cuda.py).
TILINGS = {
    "t128": (16, 16, 8, 8, 8),
    "t64": (16, 16, 4, 4, 16),
    "t32": (16, 16, 2, 2, 16),
    "sim": (2, 2, 4, 4, 4),
}
LARGEST_FIRST = ("t128", "t64", "t32")


def pick_tiling(m, n, sms):
    """The tiling for an m x n output on a GPU with ``sms`` multiprocessors."""
    if SIMULATED:
        return "sim"
    for name in LARGEST_FIRST:
        tx, ty, rm, rn, _ = TILINGS[name]
        if -(-m // (ty * rm)) * -(-n // (tx * rn)) >= sms:
            return name
    return LARGEST_FIRST[-1]


def specialise(template, tag, device=False, **slots):
    """Compile ``template`` with its slot globals bound, as a cuda kernel (or device
    function) with a name unique to the specialisation."""
    glb = dict(template.__globals__, **slots)
    fn = types.FunctionType(template.__code__, glb, template.__name__,
                            template.__defaults__)
    fn.__qualname__ = f"{template.__name__}__{tag}"
    fn.__module__ = template.__module__
    if device:
        return cuda.jit(device=True, inline=True)(fn)
    return cuda.jit(fn)


# ---- GEMM ------------------------------------------------------------------------
def gemm(a, b, c, alpha, e0, e1):
    """C[m, n] = EPILOGUE(sum_k op(A)[m, k] op(B)[k, n]) for the block's tile.

    op(A) is ``a`` (M x K) or, with TRANS_A, ``a`` stored K x M; op(B) is ``b`` (K x N)
    or, with TRANS_B, stored N x K.  Rows of op(A) past the stored ones read as PAD
    (1 for the bias-gradient row of [X, 1], never read otherwise).  Thread (ty, tx)
    owns rows ty + i*TY and columns tx + j*TX of the tile: neighbouring threads write
    neighbouring columns (coalesced) and read distinct shared-memory banks."""
    M, N = c.shape
    K = a.shape[0] if TRANS_A else a.shape[1]
    am = a.shape[1] if TRANS_A else a.shape[0]
    # BMP = BM + 1, BNP = BN + 1: a padding column so that the transposing stores
    # below hit different banks (a slot: shared-array shapes must be constants)
    As = cuda.shared.array((BK, BMP), DT)
    Bs = cuda.shared.array((BK, BNP), DT)
    acc = cuda.local.array((RM, RN), DT)
    af = cuda.local.array(RM, DT)
    bf = cuda.local.array(RN, DT)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TX + tx
    row0 = cuda.blockIdx.y * BM
    col0 = cuda.blockIdx.x * BN
    zero = DT(0)
    for i in range(RM):
        for j in range(RN):
            acc[i, j] = zero
    for k0 in range(0, K, BK):
        # Stage op(A)'s BM x BK and op(B)'s BK x BN tiles; consecutive threads read
        # consecutive addresses of the stored layout.
        for e in range(tid, BM * BK, NT):
            if TRANS_A:
                kk, mm = e // BM, e % BM
            else:
                mm, kk = e // BK, e % BK
            gm, gk = row0 + mm, k0 + kk
            v = zero
            if gk < K:
                if gm < am:
                    v = a[gk, gm] if TRANS_A else a[gm, gk]
                else:
                    v = DT(PAD)
            As[kk, mm] = v
        for e in range(tid, BK * BN, NT):
            if TRANS_B:
                nn, kk = e // BK, e % BK
            else:
                kk, nn = e // BN, e % BN
            gn, gk = col0 + nn, k0 + kk
            v = zero
            if gk < K and gn < N:
                v = b[gn, gk] if TRANS_B else b[gk, gn]
            Bs[kk, nn] = v
        cuda.syncthreads()
        for kk in range(BK):
            for i in range(RM):
                af[i] = As[kk, ty + i * TY]
            for j in range(RN):
                bf[j] = Bs[kk, tx + j * TX]
            for i in range(RM):
                for j in range(RN):
                    acc[i, j] += af[i] * bf[j]
        cuda.syncthreads()
    for i in range(RM):
        m = row0 + ty + i * TY
        if m < M:
            for j in range(RN):
                n = col0 + tx + j * TX
                if n < N:
                    EPILOGUE(c, e0, e1, m, n, acc[i, j], alpha)


# Epilogues: what happens to one finished element v of the product.
def epilogue_forward(c, bias, z, m, n, v, alpha):
    """Z = v + b; A = f(Z) (c is A; for a linear layer A and Z are one buffer)."""
    zz = v + bias[n]
    z[m, n] = zz
    c[m, n] = f(zz)


def epilogue_accumulate(c, e0, e1, m, n, v, alpha):
    """C += alpha v: gradients accumulate (beta = 1)."""
    c[m, n] += alpha * v


def epilogue_delta(c, z, a, m, n, v, alpha):
    """dL/dZ of the layer below = (dL/dZ W^T) * f'(Z, A) of that layer."""
    c[m, n] = v * df(z[m, n], a[m, n])


# ---- elementwise, over flat buffers --------------------------------------------
def fill(buf, value):
    for i in range(cuda.grid(1), buf.shape[0], cuda.gridsize(1)):
        buf[i] = value


def scale(buf, factor):
    for i in range(cuda.grid(1), buf.shape[0], cuda.gridsize(1)):
        buf[i] *= factor


def activation_forward(z, a):
    for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        a[i] = f(z[i])


def activation_delta(z, a, grad_a, grad_z):
    """grad_z = grad_a * f'(z, a), elementwise (no bias gradient: the fused pass gets
    it from the weight-gradient GEMM)."""
    for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        grad_z[i] = grad_a[i] * df(z[i], a[i])


def bias_backward(z, a, grad_a, grad_z, grad_b, scale):
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
def softmax_row(z, a, r):
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


def deposit(sums, parts, done, a, b):
    """sums[0] = combine(sums[0], the grid's combine of ``a``) (a sum, or a max of
    values >= 0) and sums[1] += the grid's sum of ``b``, the same bits on every run:
    each block leaves its two totals in ``parts`` (2 per block); the last block to
    finish, told by the ``done`` counter, combines them in block order and resets the
    counter for the next launch.  (Atomic adds into ``sums`` would add the blocks in
    whatever order they finish.)"""
    ta = reduce_a(a)
    tb = reduce(b)
    last = cuda.shared.array(1, numba.int32)
    t = cuda.threadIdx.x
    blocks = cuda.gridDim.x
    if t == 0:
        parts[2 * cuda.blockIdx.x] = ta
        parts[2 * cuda.blockIdx.x + 1] = tb
        cuda.threadfence()               # the totals are visible before the count
        last[0] = cuda.atomic.add(done, 0, 1) == blocks - 1
    cuda.syncthreads()
    if last[0]:
        pa = 0.0
        pb = 0.0
        for i in range(t, blocks, NT):   # each thread: blocks t, t + NT, ... in order
            pa = combine(pa, parts[2 * i])
            pb += parts[2 * i + 1]
        ta = reduce_a(pa)
        tb = reduce(pb)
        if t == 0:
            sums[0] = combine(sums[0], ta)
            sums[1] += tb
            done[0] = 0


def row_label(t, r):
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
        tsum = DT(0)
        tz = DT(0)
        for j in range(z.shape[1]):
            tsum += t[r, j]
            tz += t[r, j] * z[r, j]
        part += (math.log(s) + m) * tsum - tz
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


# ---- optimizer steps: one launch over the flat buffers ---------------------------
def optimizer_step0(p, g, h):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        r = f(p[i], g[i], h)
        p[i] = r[0]


def optimizer_step1(p, g, s0, h):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        p[i], s0[i] = f(p[i], g[i], s0[i], h)


def optimizer_step2(p, g, s0, s1, h):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        p[i], s0[i], s1[i] = f(p[i], g[i], s0[i], s1[i], h)


def optimizer_step3(p, g, s0, s1, s2, h):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        p[i], s0[i], s1[i], s2[i] = f(p[i], g[i], s0[i], s1[i], s2[i], h)


_OPTIMIZER_STEPS = (optimizer_step0, optimizer_step1, optimizer_step2, optimizer_step3)

# ---- tables: name -> (template, slots taken from the formulas) --------------------
_ELEMENTWISE = ("linear", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "silu",
                "softplus")
# Activations by name: f and f' formula names (softmax: a row kernel instead).
ACTIVATIONS = {n: (n + "_f", n + "_df") for n in _ELEMENTWISE}
ELEMENT_LOSSES = ("mse", "l1", "huber", "bce", "bce_logits", "hinge", "kl_div")
ROW_LOSSES = {"cross_entropy": cross_entropy_labels,
              "cross_entropy_probs": cross_entropy_probs}
GEMM_EPILOGUES = {"forward": epilogue_forward, "accumulate": epilogue_accumulate,
                  "delta": epilogue_delta}
# (transposed A, transposed B, A's padding row value) of each GEMM use:
GEMM_LAYOUTS = {"forward": (False, False, 0),     # Z = X W
                "accumulate": (True, False, 1),   # [dW; db] += s [X, 1]^T dZ
                "delta": (False, True, 0)}        # dZ_below = (dZ W^T) f'

_formulas = {}
_built = {}


def _F(dt):
    if dt not in _formulas:
        _formulas[dt] = formulas(dt)
    return _formulas[dt]


def _typed(dt):
    return numba.from_dtype(dt)


def _device(template, tag, **slots):
    key = ("device", template.__name__, tag)
    if key not in _built:
        _built[key] = specialise(template, tag, device=True, **slots)
    return _built[key]


def _reducers(kind="sum"):
    """The reductions a reducing kernel calls: ``reduce`` (a block's sum), and
    ``deposit`` (into the accumulator) whose first value is combined by ``kind``
    ("sum" or "max"), as is that kernel's own ``combine``."""
    combines = {"sum": _device(add, "any"), "max": _device(larger, "any")}
    blocks = {k: _device(block_reduce, f"{k}_nt{BLOCK}", NT=BLOCK, combine=c)
              for k, c in combines.items()}
    return dict(reduce=blocks["sum"], combine=combines[kind],
                deposit=_device(deposit, f"{kind}_nt{BLOCK}", NT=BLOCK,
                                reduce=blocks["sum"], reduce_a=blocks[kind],
                                combine=combines[kind]))


def kernel(kind, name, dtype):
    """The compiled kernel ``kind`` ("forward", "delta", "bias_backward", "loss",
    "optimizer", "fill", "scale", "gather", "norm") for the
    formula ``name`` (activation, loss or update rule; None where there is none) and
    ``dtype``.  Built once per key; numba compiles it on first launch."""
    dt = np.dtype(dtype)
    key = (kind, name, dt)
    k = _built.get(key)
    if k is not None:
        return k
    F = _F(dt)
    tag = f"{kind}_{name}_{dt.name}"
    typed = _typed(dt)
    if kind == "forward":
        k = (specialise(softmax_forward, tag, DT=typed, softmax_row=_softmax_row(dt))
             if name == "softmax" else
             specialise(activation_forward, tag, f=getattr(F, ACTIVATIONS[name][0])))
    elif kind == "delta":
        k = (specialise(softmax_delta, tag, DT=typed) if name == "softmax" else
             specialise(activation_delta, tag, df=getattr(F, ACTIVATIONS[name][1])))
    elif kind == "bias_backward":
        k = specialise(bias_backward, tag, DT=typed, df=getattr(F, ACTIVATIONS[name][1]))
    elif kind == "loss":
        if name in ROW_LOSSES:
            k = specialise(ROW_LOSSES[name], tag, DT=typed, softmax_row=_softmax_row(dt),
                           row_label=_device(row_label, "any"), **_reducers())
        else:
            k = specialise(elementwise_loss, tag, f=getattr(F, name), **_reducers())
    elif kind == "optimizer":
        k = specialise(_OPTIMIZER_STEPS[len(OPTIMIZER_STATES[name])], tag,
                       f=getattr(F, name))
    elif kind == "norm":                  # name: "sum" (finite orders) or "max" (inf)
        k = specialise(norm_parts, tag, **_reducers(name))
    else:
        k = specialise({"fill": fill, "scale": scale, "gather": gather_rows}[kind], tag)
    _built[key] = k
    return k


def _softmax_row(dt):
    return _device(softmax_row, dt.name, DT=_typed(dt), exp=_F(dt).exp)


def gemm_kernel(use, activation, dtype, tiling):
    """The GEMM kernel for ``use`` ("forward": Z = XW + b, A = f(Z); "accumulate":
    [dW; db] += s [X, 1]^T dZ; "delta": dZ_below = dZ W^T * f'(Z_below)) with the
    activation whose f or f' its epilogue applies ("linear" for none), for ``dtype``
    and the named tiling of TILINGS."""
    dt = np.dtype(dtype)
    key = ("gemm", use, activation, dt, tiling)
    k = _built.get(key)
    if k is None:
        F = _F(dt)
        tx, ty, rm, rn, bk = TILINGS[tiling]
        fname, dfname = ACTIVATIONS[activation]
        epi = _device(GEMM_EPILOGUES[use], f"{use}_{activation}_{dt.name}",
                      f=getattr(F, fname), df=getattr(F, dfname))
        trans_a, trans_b, pad = GEMM_LAYOUTS[use]
        k = _built[key] = specialise(
            gemm, f"{use}_{activation}_{dt.name}_{tiling}", EPILOGUE=epi, DT=_typed(dt),
            TX=tx, TY=ty, RM=rm, RN=rn, BK=bk, BM=ty * rm, BN=tx * rn, BMP=ty * rm + 1,
            BNP=tx * rn + 1, NT=tx * ty,
            TRANS_A=trans_a, TRANS_B=trans_b, PAD=pad)
    return k
