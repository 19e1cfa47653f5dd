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
import hashlib
import math
import os
import types

import numpy as np
from numba import njit, prange

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
    m = x[0]
    for i in range(1, x.shape[0]):
        m = max(m, x[i])
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
