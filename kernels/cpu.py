"""Numba CPU kernels: loops around the formulas of :mod:`fastnn.kernels.formulas`.

Each builder returns a compiled kernel for one formula, one float type and one mode:
serial, or ``prange``-parallel for large work (the caller picks by size; a parallel
dispatch costs ~2 us against ~0.4 us serial).  Kernels write into the arrays they are
given (inputs first, outputs last) and never allocate.

Compiler settings, and why:
- ``error_model='numpy'``: with Python's error model every float division carries a
  zero check that stops LLVM from vectorising the loop (sigmoid 1455 us -> 111 us).
- no ``reassoc`` fast-math flag on loops that inline formulas: it would undo the
  exp's rounding trick and Cody-Waite reduction.  Row reductions are separate small
  functions (:func:`row_sum`, :func:`row_max`, :func:`row_dot`) that do carry
  ``reassoc``, so their sums vectorise; their flags stay with them when inlined.
- ``cache=True``: compiled code is kept on disk (see ``fastnn.threads`` for where).
"""
import ctypes
import hashlib
import math
import os
import types

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

from .formulas import OPTIMIZER_STATES, formulas

# Slots: the kernels below are templates that read these names as globals.
# :func:`specialise` clones a template with the slots bound to one formula, so numba
# freezes them as compile-time constants.  (Closures would capture the formula
# dispatchers in cells, which numba pickles into its cache key with a per-process id:
# every run would miss the cache and recompile.)
f = df = exp = None
PARALLEL = False

_OPTS = dict(cache=True, nogil=True, error_model="numpy")
_SUM_MATH = {"reassoc", "contract", "nsz", "arcp"}
# Rows with a NaN give a NaN loss/softmax through the exp pass whatever the max returns.
_MAX_MATH = {"nnan", "nsz"}


@njit(fastmath=_MAX_MATH, **_OPTS)
def row_max(x):
    # Eight running maxima: LLVM does not vectorise a max reduction here, and one
    # chain of dependent max() calls ran at 0.5 ns/element (a 1024x512 float32 pass:
    # 263 us alone vs 74 us like this, one thread).
    n = x.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = x[0]
    i = 0
    while i + 8 <= n:
        m0 = max(m0, x[i])
        m1 = max(m1, x[i + 1])
        m2 = max(m2, x[i + 2])
        m3 = max(m3, x[i + 3])
        m4 = max(m4, x[i + 4])
        m5 = max(m5, x[i + 5])
        m6 = max(m6, x[i + 6])
        m7 = max(m7, x[i + 7])
        i += 8
    m = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for j in range(i, n):
        m = max(m, x[j])
    return m


@njit(fastmath=_SUM_MATH, **_OPTS)
def row_sum(x):
    s = x[0]
    for i in range(1, x.shape[0]):
        s += x[i]
    return s


@njit(fastmath=_SUM_MATH, **_OPTS)
def row_dot(x, y):
    s = x[0] * y[0]
    for i in range(1, x.shape[0]):
        s += x[i] * y[i]
    return s


def softmax_numerators(z, out):
    """out = exp(z - max(z)) over one row; returns (max(z), sum(out)).  The shared
    first half of softmax and of cross-entropy (slot: exp)."""
    m = row_max(z)
    for j in range(z.shape[0]):
        out[j] = exp(z[j] - m)
    return m, row_sum(out)


@njit(**_OPTS)
def column_blocks(cols, parallel):
    """Column blocks for row-major reductions over rows: one block serially (rows are
    streamed whole); in parallel, blocks of at least 64 columns (a 256-byte run of
    float32 per row) so no two threads share an output.  (Asking numba for its thread
    count here would make the kernel uncacheable.)"""
    if not parallel:
        return 1, cols
    nblk = max(1, min(cols // 64, 64))
    return nblk, (cols + nblk - 1) // nblk


def _source_hash():
    # Part of every kernel's cache name: numba checks only this file's timestamp, so an
    # edit of formulas.py must change the names to invalidate the cached kernels.
    h = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("formulas.py", "cpu.py"):
        with open(os.path.join(here, name), "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:10]


_HASH = _source_hash()


def specialise(template, tag, parallel, **slots):
    """Compile ``template`` with its slot globals bound (``f=...``), as a kernel with a
    unique name (so that numba's on-disk cache keeps one entry per specialisation)."""
    glb = dict(template.__globals__, PARALLEL=parallel, **slots)
    fn = types.FunctionType(template.__code__, glb, template.__name__,
                            template.__defaults__)
    fn.__qualname__ = f"{template.__name__}__{tag}__{'par' if parallel else 'ser'}__{_HASH}"
    fn.__module__ = template.__module__
    return njit(parallel=parallel, **_OPTS)(fn)


# ---- kernel templates (slots: f, df, exp, PARALLEL) --------------------------------
def activation_forward(z, a):
    zf = z.reshape(z.size)
    af = a.reshape(a.size)
    for i in prange(zf.shape[0]):
        af[i] = f(zf[i])


def activation_backward(z, a, grad_a, grad_z, grad_b, scale):
    """grad_z = grad_a * f'(z) and grad_b += scale * column sums of grad_z, one pass."""
    rows, cols = z.shape
    nblk, width = column_blocks(cols, PARALLEL)
    for blk in prange(nblk):
        lo = blk * width
        hi = min(cols, lo + width)
        for r in range(rows):
            for j in range(lo, hi):
                g = grad_a[r, j] * df(z[r, j], a[r, j])
                grad_z[r, j] = g
                grad_b[j] += scale * g


def softmax_forward(z, a):
    rows, cols = z.shape
    for r in prange(rows):
        m, s = softmax_numerators(z[r], a[r])
        inv = 1 / s
        for j in range(cols):
            a[r, j] *= inv


def softmax_backward(z, a, grad_a, grad_z, grad_b, scale):
    """grad_z = a * (grad_a - <grad_a, a>) row by row, then the bias-gradient sums."""
    rows, cols = z.shape
    for r in prange(rows):
        d = row_dot(grad_a[r], a[r])
        for j in range(cols):
            grad_z[r, j] = a[r, j] * (grad_a[r, j] - d)
    nblk, width = column_blocks(cols, PARALLEL)
    for blk in prange(nblk):
        lo = blk * width
        hi = min(cols, lo + width)
        for r in range(rows):
            for j in range(lo, hi):
                grad_b[j] += scale * grad_z[r, j]


def elementwise_loss(out, target, grad, param, norm):
    """Return sum of f's values times ``norm``; grad = f' * norm, one pass.  The value
    is accumulated in float64 whatever the array type."""
    of = out.reshape(out.size)
    tf = target.reshape(target.size)
    gf = grad.reshape(grad.size)
    total = 0.0
    for i in prange(of.shape[0]):
        v, d = f(of[i], tf[i], param)
        total += v
        gf[i] = d * norm
    return total * norm


def cross_entropy_labels(z, labels, grad, param, norm):
    """Softmax cross-entropy from logits and integer labels; grad = (softmax - onehot)
    * norm.  log-sum-exp with the row max subtracted: finite for any finite logits."""
    rows, cols = z.shape
    total = 0.0
    for r in prange(rows):
        m, s = softmax_numerators(z[r], grad[r])
        k = norm / s
        for j in range(cols):
            grad[r, j] *= k
        y = labels[r]
        grad[r, y] -= norm
        total += math.log(s) + (m - z[r, y])
    return total * norm


def cross_entropy_probs(z, t, grad, param, norm):
    """Cross-entropy against class probabilities t: sum_c t_c (lse - z_c) per row;
    gradient (softmax * sum(t) - t) * norm."""
    rows, cols = z.shape
    total = 0.0
    for r in prange(rows):
        m, s = softmax_numerators(z[r], grad[r])
        tsum = row_sum(t[r])
        total += (math.log(s) + m) * tsum - row_dot(t[r], z[r])
        k = norm * tsum / s
        for j in range(cols):
            grad[r, j] = grad[r, j] * k - t[r, j] * norm
    return total * norm


# Optimizer steps: one loop over the flat buffers per step, whatever the model, with
# the update rule ``f`` (a formula of OPTIMIZER_STATES) inlined.  One template per
# number of state buffers; ``h`` is the step's tuple of scalars.
def optimizer_step0(p, g, h):
    for i in prange(p.shape[0]):
        r = f(p[i], g[i], h)
        p[i] = r[0]


def optimizer_step1(p, g, s0, h):
    for i in prange(p.shape[0]):
        p[i], s0[i] = f(p[i], g[i], s0[i], h)


def optimizer_step2(p, g, s0, s1, h):
    for i in prange(p.shape[0]):
        p[i], s0[i], s1[i] = f(p[i], g[i], s0[i], s1[i], h)


def optimizer_step3(p, g, s0, s1, s2, h):
    for i in prange(p.shape[0]):
        p[i], s0[i], s1[i], s2[i] = f(p[i], g[i], s0[i], s1[i], s2[i], h)


_OPTIMIZER_STEPS = (optimizer_step0, optimizer_step1, optimizer_step2, optimizer_step3)


# Gradient norms (for clipping): accumulated in float64 whatever the buffer's type.
@njit(fastmath=_SUM_MATH, **_OPTS)
def sum_squares(x):
    s = 0.0
    for i in range(x.shape[0]):
        v = np.float64(x[i])
        s += v * v
    return s


@njit(**_OPTS)
def max_abs(x):
    m = 0.0
    for i in range(x.shape[0]):
        a = abs(np.float64(x[i]))
        m = a if (a > m or a != a) else m      # NaN sticks
        if m != m:
            break
    return m


@njit(**_OPTS)
def sum_abs_pow(x, order):
    s = 0.0
    for i in range(x.shape[0]):
        s += abs(np.float64(x[i])) ** order
    return s


def vector_norm(x, order):
    """The ``order``-norm of a flat buffer (order > 0, or inf), in float64."""
    if order == 2.0:
        return math.sqrt(sum_squares(x))
    if order == math.inf:
        return max_abs(x)
    return sum_abs_pow(x, float(order)) ** (1.0 / order)


# ---- GEMM from inside numba: BLAS through a function pointer -------------------------
# The fused model kernels below call BLAS themselves, so a whole forward (or backward)
# pass is one call from Python instead of two per layer.  The BLAS is the Cython
# backend's (scipy.linalg.cython_blas, one library and one thread pool); its ?gemm
# address is an argument, not a constant, so the compiled kernels stay cacheable.
def blas_address(dtype):
    """Address of scipy's Fortran-ABI sgemm/dgemm for ``dtype``."""
    from scipy.linalg import cython_blas

    capsule = cython_blas.__pyx_capi__[{4: "sgemm", 8: "dgemm"}[np.dtype(dtype).itemsize]]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))


@intrinsic
def _fortran_gemm(typingctx, addr, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Call ?gemm at ``addr`` (column-major, every argument by reference): the scalars
    go to stack slots, the arrays pass their data pointers."""
    dt = c.dtype
    ints = (ta, tb, m, n, k, lda, ldb, ldc)
    if not (isinstance(addr, nbtypes.Integer) and all(isinstance(t, nbtypes.Integer)
                                                      for t in ints)
            and a.dtype == dt and b.dtype == dt):
        return None
    sig = nbtypes.void(addr, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        i8, i32 = ir.IntType(8), ir.IntType(32)
        real = context.get_value_type(dt)
        tys = signature.args

        def ref(i, to_type, llty):
            p = cgutils.alloca_once(builder, llty)
            builder.store(context.cast(builder, args[i], tys[i], to_type), p)
            return p

        def data(i):
            return context.make_array(tys[i])(context, builder, args[i]).data

        int32 = nbtypes.int32
        argv = [ref(1, nbtypes.uint8, i8), ref(2, nbtypes.uint8, i8), ref(3, int32, i32),
                ref(4, int32, i32), ref(5, int32, i32), ref(6, dt, real), data(7),
                ref(8, int32, i32), data(9), ref(10, int32, i32), ref(11, dt, real),
                data(12), ref(13, int32, i32)]
        fnty = ir.FunctionType(ir.VoidType(), [v.type for v in argv])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), argv)
        return context.get_dummy_value()

    return sig, codegen


_N, _T = np.uint8(ord("N")), np.uint8(ord("T"))


@njit(inline="always", **_OPTS)
def gemm_rm(addr, trans_a, trans_b, alpha, a, b, beta, c):
    """Row-major c = alpha op(a) op(b) + beta c, as BLAS's column-major
    c^T = op(b)^T op(a)^T (the transpose trick of ``_blas.pyx``: swap the operands,
    keep each one's flag, row lengths as leading dimensions)."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    _fortran_gemm(addr, _T if trans_b else _N, _T if trans_a else _N, n, m, k, alpha,
                  b, b.shape[1], a, a.shape[1], beta, c, n)


# ---- whole-model passes: one call per forward / backward ----------------------------
# A model is described to these kernels by an int64 table, one row per Dense layer,
# with offsets into three flat buffers: the parameters (or gradients) and the
# workspace of one batch size (Z, A, dL/dZ and dL/dX of every layer).  Activations are
# selected by their index in ACTIVATION_CODES through the generated dispatchers.
(FIN, FOUT, W_OFF, B_OFF, ACT, Z_OFF, A_OFF, GZ_OFF, GX_OFF) = range(9)
LAYER_COLUMNS = 9


def _layer_views(flat, ws, table, l, rows):
    """Layer ``l``'s weight, bias (views of ``flat``) and Z, A, dL/dZ (views of ``ws``)."""
    fin, fout = table[l, FIN], table[l, FOUT]
    w = flat[table[l, W_OFF]:table[l, W_OFF] + fin * fout].reshape((fin, fout))
    b = flat[table[l, B_OFF]:table[l, B_OFF] + fout]
    z = ws[table[l, Z_OFF]:table[l, Z_OFF] + rows * fout].reshape((rows, fout))
    a = ws[table[l, A_OFF]:table[l, A_OFF] + rows * fout].reshape((rows, fout))
    gz = ws[table[l, GZ_OFF]:table[l, GZ_OFF] + rows * fout].reshape((rows, fout))
    return w, b, z, a, gz


def model_forward(x, params, ws, table, gemm):
    """Every layer: Z = bias rows, Z += X W (BLAS, beta = 1), A = f(Z).  Returns A of the
    last layer (a view of ``ws``).  Slots: layer_views, forward_by_code."""
    rows = x.shape[0]
    inp = x
    for l in range(table.shape[0]):
        w, b, z, a, _ = layer_views(params, ws, table, l, rows)
        for r in range(rows):
            for j in range(b.shape[0]):     # (a slice assignment would compile numba's
                z[r, j] = b[j]              # shape-mismatch reporting: +2.5 s cold)
        gemm_rm(gemm, False, False, 1, inp, w, 1, z)
        if table[l, A_OFF] != table[l, Z_OFF]:
            forward_by_code(table[l, ACT], z, a)
        inp = a
    return inp


def model_backward(x, params, grads, ws, grad_out, table, scale, gemm):
    """From the last layer down: dL/dZ = f'(Z) * dL/dA with the bias gradient added
    (one pass), dW += scale X^T dL/dZ (BLAS, beta = 1: straight into the flat gradient
    buffer), dL/dX = dL/dZ W^T except for the first layer.  Slots as model_forward."""
    rows = x.shape[0]
    g = grad_out
    for l in range(table.shape[0] - 1, -1, -1):
        w, b, z, a, gz = layer_views(params, ws, table, l, rows)
        gw, gb, _, _, _ = layer_views(grads, ws, table, l, rows)
        backward_by_code(table[l, ACT], z, a, g, gz, gb, scale)
        if l == 0:
            gemm_rm(gemm, True, False, scale, x, gz, 1, gw)
        else:
            _, _, _, inp, _ = layer_views(params, ws, table, l - 1, rows)
            gemm_rm(gemm, True, False, scale, inp, gz, 1, gw)
            fin = table[l, FIN]
            gx = ws[table[l, GX_OFF]:table[l, GX_OFF] + rows * fin].reshape((rows, fin))
            gemm_rm(gemm, False, True, 1, gz, w, 0, gx)
            g = gx


_DISPATCH_PARAMS = {"forward": "z, a", "backward": "z, a, grad_a, grad_z, grad_b, scale"}


def _by_code(direction, names):
    """A dispatcher calling kernel K<i> for activation code i (the index in
    ACTIVATION_CODES), with branches for ``names`` only: generated from the activation
    table, so adding an activation needs no edit here, and a model compiles only the
    activations it uses (all ten, forward and backward, took ~10 s to compile).
    Compiled with this file as its source, so numba's cache can locate it."""
    params = _DISPATCH_PARAMS[direction]
    lines = [f"def {direction}_by_code(code, {params}):", "    pass"]
    for name in names:
        i = ACTIVATION_CODES.index(name)
        lines += [f"    if code == {i}:  # {name}", f"        K{i}({params})"]
    code = compile("\n".join(lines) + "\n", __file__, "exec")
    namespace = {}
    exec(code, globals(), namespace)
    return namespace[f"{direction}_by_code"]


# ---- tables: name -> (template, slots taken from the formulas) ----------------------
_ELEMENTWISE = ("linear", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "silu",
                "softplus")
ACTIVATION_FORWARD = {n: (activation_forward, {"f": n + "_f"}) for n in _ELEMENTWISE}
ACTIVATION_FORWARD["softmax"] = (softmax_forward, {"softmax_numerators": "exp"})
ACTIVATION_BACKWARD = {n: (activation_backward, {"df": n + "_df"}) for n in _ELEMENTWISE}
ACTIVATION_BACKWARD["softmax"] = (softmax_backward, {})

LOSSES = {n: (elementwise_loss, {"f": n})
          for n in ("mse", "l1", "huber", "bce", "bce_logits", "hinge", "kl_div")}
LOSSES["cross_entropy"] = (cross_entropy_labels, {"softmax_numerators": "exp"})
LOSSES["cross_entropy_probs"] = (cross_entropy_probs, {"softmax_numerators": "exp"})

OPTIMIZERS = {n: (_OPTIMIZER_STEPS[len(states)], {"f": n})
              for n, states in OPTIMIZER_STATES.items()}

# Activation codes of the model tables: an activation's index in this tuple.
ACTIVATION_CODES = tuple(ACTIVATION_FORWARD)
forward_by_code = backward_by_code = None     # slots of the model templates
layer_views = njit(inline="always", **_OPTS)(_layer_views)

_formulas = {}
_built = {}
_HELPERS = {"softmax_numerators": (softmax_numerators, "exp")}


def _slot(slot, formula, dt):
    """What a slot is bound to: the formula itself, or for a helper-template slot
    (``softmax_numerators``) that helper specialised with the formula."""
    if slot not in _HELPERS:
        return formula
    key = (slot, dt)
    if key not in _built:
        template, inner = _HELPERS[slot]
        _built[key] = specialise(template, dt.name, False, **{inner: formula})
    return _built[key]


def activation_set(activations):
    """The distinct names of ``activations`` in ACTIVATION_CODES order: what
    :func:`get_model` takes (one compiled pass per set, whatever the layer order)."""
    return tuple(sorted(set(activations), key=ACTIVATION_CODES.index))


def get_model(direction, dtype, parallel, names):
    """The compiled whole-model ``"forward"`` or ``"backward"`` pass for ``dtype`` and
    the activations a model uses (``names``, from :func:`activation_set`): the model
    template with its activation dispatcher bound to this dtype's (serial or parallel)
    kernels for those names."""
    dt = np.dtype(dtype)
    key = ("model", direction, dt, bool(parallel), names)
    kernel = _built.get(key)
    if kernel is None:
        table = ACTIVATION_FORWARD if direction == "forward" else ACTIVATION_BACKWARD
        kernels = {f"K{ACTIVATION_CODES.index(n)}": get(table, n, dt, parallel)
                   for n in names}
        tag = f"{'_'.join(names)}_{dt.name}_{'par' if parallel else 'ser'}"
        dispatch = specialise(_by_code(direction, names), tag, False, **kernels)
        template = model_forward if direction == "forward" else model_backward
        kernel = _built[key] = specialise(template, tag, False, **{
            f"{direction}_by_code": dispatch})
    return kernel


def get(table, name, dtype, parallel):
    """The compiled kernel for ``name`` in ``table`` (built once per dtype and mode;
    compiled by numba at its first call, or loaded from numba's disk cache)."""
    dt = np.dtype(dtype)
    key = (id(table), name, dt, bool(parallel))
    kernel = _built.get(key)
    if kernel is None:
        if dt not in _formulas:
            _formulas[dt] = formulas(dt)
        template, slots = table[name]
        bound = {slot: _slot(slot, getattr(_formulas[dt], attr), dt)
                 for slot, attr in slots.items()}
        kernel = _built[key] = specialise(template, f"{name}_{dt.name}", bool(parallel),
                                          **bound)
    return kernel
