"""Numba CPU kernels: loops around the formulas of :mod:`.formulas`, specialised from
templates (:mod:`.template`) for each entry of the registry (:mod:`.specs`).

Each getter below returns the compiled kernel for one registry name, one float type and
one mode: serial, or ``prange``-parallel for large work (the caller picks by size; a
parallel dispatch costs ~2 us against ~0.4 us serial).  Kernels write into the arrays
they are given (inputs first, outputs last) and never allocate.  The activation kernels
also exist as C-callable ``cfunc`` s (:func:`activation_pointers`), which the Cython
whole-model passes (``kernels/_dense.pyx``) call between their GEMMs.

Compiler settings, and why:
- ``error_model='numpy'``: with Python's error model every float division carries a
  zero check that stops LLVM from vectorising the loop (sigmoid on 1024x512 float32,
  one thread: 1563 us -> 232 us).
- no ``reassoc`` fast-math flag on loops that inline formulas: it would undo the
  exp's rounding trick and Cody-Waite reduction.  Row reductions are separate small
  functions (:func:`row_sum`, :func:`row_max`, :func:`row_dot`) that do carry
  ``reassoc``, so their sums vectorise; their flags stay with them when inlined.
- ``cache``: compiled code is kept on disk (see ``fastnn.threads`` for where), unless
  no directory is writable (:mod:`._numba_setup`).
"""
import functools
import math

import numpy as np

from . import _numba_setup  # noqa: F401 (first: it imports numba, Ctrl-C deferred)
from numba import carray, cfunc, njit, prange  # noqa: E402
from numba.np.unsafe.ndarray import to_fixed_tuple  # noqa: E402
from numba import types as nbtypes

from . import loops, specs
from .formulas import formulas
from .template import Slot, Target, specialise

_OPTS = dict(cache=_numba_setup.STATUS["caching"], nogil=True, error_model="numpy")
_SUM_MATH = {"reassoc", "contract", "nsz", "arcp"}
# Rows with a NaN give a NaN loss/softmax through the exp pass whatever the max returns.
_MAX_MATH = {"nnan", "nsz"}

SERIAL = Target("cpu", njit(**_OPTS))
PARALLEL_TARGET = Target("cpu_parallel", njit(parallel=True, **_OPTS))

# Slots of the cpu templates (the shared ones, f and indices, are in loops.py).
f = Slot("f", "the scalar formula of the kernel (kernels.formulas)")
df = Slot("df", "an activation's derivative f'(z, a)")
exp = Slot("exp", "the float type's exp formula")
softmax_numerators = Slot("softmax_numerators", "the exp pass of softmax rows")
PARALLEL = Slot("PARALLEL", "whether the kernel runs on numba's parallel path")
kernel = Slot("kernel", "the array kernel a C-callable wrapper calls")


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


@njit(fastmath=_SUM_MATH, **_OPTS)
def row_cross_entropy(t, z, lse):
    """sum_c t_c (lse - z_c): one row's cross-entropy against the probabilities t,
    given its log-sum-exp.  Term by term, not lse * sum(t) - <t, z>: an infinite t_c
    then gives inf (PyTorch's), not inf - inf."""
    s = t[0] * (lse - z[0])
    for i in range(1, t.shape[0]):
        s += t[i] * (lse - z[i])
    return s


# Elements per partial sum of an elementwise loss: float32 partial sums of 512 values
# keep their rounding error near 2^-24 sqrt(512 / lanes) of the block's sum; the
# blocks' sums are added in float64.
LOSS_BLOCK = 512


@njit(**_OPTS)
def split(n, parallel, least):
    """(parts, items per part) for n items: one part serially; in parallel up to 64
    parts of at least ``least`` items.  (Asking numba for its thread count here would
    make the kernel uncacheable.)  Row-major reductions over rows split their columns
    with least = 64 (a 256-byte run of float32 per row, so no two threads share an
    output); an elementwise loss splits its blocks with least = 1 (each part has its
    own values buffer)."""
    if not parallel:
        return 1, n
    parts = max(1, min(n // least, 64))
    return parts, (n + parts - 1) // parts


# ---- templates ------------------------------------------------------------------------
def softmax_exp(z, out):
    """out = exp(z - max(z)) over one row; returns (max(z), sum(out)).  The shared
    first half of softmax and of cross-entropy (slot: exp)."""
    m = row_max(z)
    for j in range(z.shape[0]):
        out[j] = exp(z[j] - m)
    return m, row_sum(out)


def elementwise_backward(z, a, grad_a, grad_z, grad_b, scale):
    """grad_z = grad_a * f'(z) and grad_b += scale * column sums of grad_z, one pass."""
    rows, cols = z.shape
    nblk, width = split(cols, PARALLEL, 64)
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
    nblk, width = split(cols, PARALLEL, 64)
    for blk in prange(nblk):
        lo = blk * width
        hi = min(cols, lo + width)
        for r in range(rows):
            for j in range(lo, hi):
                grad_b[j] += scale * grad_z[r, j]


def elementwise_loss(out, target, grad, param, norm):
    """Return sum of f's values times ``norm``; grad = f' * norm, one pass.

    Blocked: per block of LOSS_BLOCK elements the values go to a small buffer (L1
    resident) while the gradient is written, then the buffer is summed in the array's
    type by row_sum (vectorised: fastmath reassoc, which the formula itself must not
    get), and the block sums are added in float64.  One float64 sum per element was a
    serial chain that kept the whole loop from vectorising.  1024x512 float32, the
    serial kernel called directly, median of 300 runs: MSE 345 -> 236 us (NumPy's
    o - t alone, the same traffic: 221 us), L1 2390 -> 239, Huber 3273 -> 225,
    BCE-with-logits 6283 -> 742; the value's relative error over 4M elements ~1e-9.
    The buffer is allocated once per chunk of blocks, not per block."""
    of = out.reshape(out.size)
    tf = target.reshape(target.size)
    gf = grad.reshape(grad.size)
    n = of.shape[0]
    nblk = (n + LOSS_BLOCK - 1) // LOSS_BLOCK
    nchunk, per = split(nblk, PARALLEL, 1)
    total = 0.0
    for c in prange(nchunk):
        values = np.empty(LOSS_BLOCK, of.dtype)
        part = 0.0
        for b in range(c * per, min(nblk, (c + 1) * per)):
            lo = b * LOSS_BLOCK
            hi = min(n, lo + LOSS_BLOCK)
            # views indexed by the loop variable: an index like lo + k gets numba's
            # negative-index wraparound, which LLVM vectorised as gathers/scatters
            ob, tb, gb = of[lo:hi], tf[lo:hi], gf[lo:hi]
            for k in range(hi - lo):
                v, d = f(ob[k], tb[k], param)
                values[k] = v
                gb[k] = d * norm
            part += row_sum(values[:hi - lo])
        total += part
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
        total += row_cross_entropy(t[r], z[r], math.log(s) + m)
        k = norm * tsum / s
        for j in range(cols):
            grad[r, j] = grad[r, j] * k - t[r, j] * norm
    return total * norm


# C-callable wrappers for the Cython whole-model passes: raw pointers and a shape in,
# the array kernel called on them.
def forward_c(z, a, rows, cols):
    kernel(carray(z, (rows, cols)), carray(a, (rows, cols)))


def backward_c(z, a, grad_a, grad_z, grad_b, scale, rows, cols):
    shape = (rows, cols)
    kernel(carray(z, shape), carray(a, shape), carray(grad_a, shape),
           carray(grad_z, shape), carray(grad_b, cols), scale)


# The loss and update-rule kernels as C functions, for the one-call training step
# (``_dense.train_step``).  A loss: (out, target, grad, param, norm, rows, cols) -> the
# kernel's value; the target is a (rows, cols) array of the output's type, or (rows,)
# integer labels.  An update rule: (p, g, s0, s1, s2, h, n) with the state buffers the
# rule has (the rest NULL, never read) and ``h`` its scalars in the rule's field order,
# rebuilt here as the named tuple the formula reads (NFIELDS: their number).
def loss_c(out, target, grad, param, norm, rows, cols):
    shape = (rows, cols)
    return kernel(carray(out, shape), carray(target, shape), carray(grad, shape),
                  param, norm)


def loss_labels_c(out, target, grad, param, norm, rows, cols):
    shape = (rows, cols)
    return kernel(carray(out, shape), carray(target, rows), carray(grad, shape),
                  param, norm)


scalars = Slot("scalars", "an update rule's named tuple of scalars (kernels.specs)")
NFIELDS = Slot("NFIELDS", "the number of fields of ``scalars``")


def step0_c(p, g, s0, s1, s2, h, n):
    hv = scalars(*to_fixed_tuple(carray(h, NFIELDS), NFIELDS))
    kernel(carray(p, n), carray(g, n), hv)


def step1_c(p, g, s0, s1, s2, h, n):
    hv = scalars(*to_fixed_tuple(carray(h, NFIELDS), NFIELDS))
    kernel(carray(p, n), carray(g, n), carray(s0, n), hv)


def step2_c(p, g, s0, s1, s2, h, n):
    hv = scalars(*to_fixed_tuple(carray(h, NFIELDS), NFIELDS))
    kernel(carray(p, n), carray(g, n), carray(s0, n), carray(s1, n), hv)


def step3_c(p, g, s0, s1, s2, h, n):
    hv = scalars(*to_fixed_tuple(carray(h, NFIELDS), NFIELDS))
    kernel(carray(p, n), carray(g, n), carray(s0, n), carray(s1, n), carray(s2, n), hv)


#: The C wrapper of an update rule with ``k`` state buffers (as loops.OPTIMIZER_STEPS).
STEP_WRAPPERS = (step0_c, step1_c, step2_c, step3_c)


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


# ---- the kernel tables, derived from the registry ----------------------------------
# Each getter is memoised on its arguments (``dtype`` as given: a dtype object or a
# type): a hot loop's lookup is one dictionary probe, not a specialisation's key.
_memo = functools.lru_cache(maxsize=None)


def _target(parallel):
    return PARALLEL_TARGET if parallel else SERIAL


def _tag(name, dt, parallel):
    return f"{name}_{dt.name}_{'par' if parallel else 'ser'}"


def _softmax_numerators(dt):
    return specialise(softmax_exp, SERIAL, dt.name, exp=formulas(dt).exp)


@_memo
def activation_forward(name, dtype, parallel):
    """a = f(z) for the activation ``name`` (arrays of any shape; softmax: rows)."""
    dt = np.dtype(dtype)
    spec = specs.ACTIVATIONS[name]
    tag = _tag(name, dt, parallel)
    if spec.rows:
        return specialise(softmax_forward, _target(parallel), tag,
                          softmax_numerators=_softmax_numerators(dt))
    return specialise(loops.activation_forward, _target(parallel), tag, indices=prange,
                      f=getattr(formulas(dt), spec.formulas[0]))


@_memo
def activation_backward(name, dtype, parallel):
    """grad_z = grad_a * f'(z, a) (softmax: its Jacobian-vector product) and
    grad_b += scale * column sums of grad_z, for 2-D arrays."""
    dt = np.dtype(dtype)
    spec = specs.ACTIVATIONS[name]
    tag = _tag(name, dt, parallel)
    if spec.rows:
        return specialise(softmax_backward, _target(parallel), tag, PARALLEL=parallel)
    return specialise(elementwise_backward, _target(parallel), tag, PARALLEL=parallel,
                      df=getattr(formulas(dt), spec.formulas[1]))


# A loss kernel's form (kernels.specs) -> its template and what its slots are bound to.
_LOSS_FORMS = {
    "elementwise": (elementwise_loss,
                    lambda name, dt, parallel: {"f": getattr(formulas(dt), name),
                                                "PARALLEL": parallel}),
    "softmax_labels": (cross_entropy_labels, lambda name, dt, parallel:
                       {"softmax_numerators": _softmax_numerators(dt)}),
    "softmax_probs": (cross_entropy_probs, lambda name, dt, parallel:
                      {"softmax_numerators": _softmax_numerators(dt)}),
}


@_memo
def loss(name, dtype, parallel):
    """The loss kernel ``name`` (a key of ``specs.LOSS_KERNELS``): returns the sum of
    its terms times ``norm`` and writes the gradient times ``norm``."""
    dt = np.dtype(dtype)
    template, bind = _LOSS_FORMS[specs.LOSS_KERNELS[name].form]
    return specialise(template, _target(parallel), _tag(name, dt, parallel),
                      **bind(name, dt, parallel))


@_memo
def optimizer_step(name, dtype, parallel):
    """One step of the update rule ``name`` over flat buffers (p, g, *state, h)."""
    dt = np.dtype(dtype)
    rule = specs.UPDATE_RULES[name]
    return specialise(loops.OPTIMIZER_STEPS[len(rule.state)], _target(parallel),
                      _tag(name, dt, parallel), indices=prange,
                      f=getattr(formulas(dt), name))


def _signature(kind, dt):
    """The C signature of the wrapper ``kind`` for the float type ``dt``."""
    F = nbtypes.float32 if dt == np.float32 else nbtypes.float64
    P, n = nbtypes.CPointer(F), nbtypes.intp
    return {
        "forward": nbtypes.void(P, P, n, n),
        "backward": nbtypes.void(P, P, P, P, P, F, n, n),
        "loss": nbtypes.float64(P, P, P, F, F, n, n),
        "loss_labels": nbtypes.float64(P, nbtypes.CPointer(n), P, F, F, n, n),
        "step": nbtypes.void(P, P, P, P, P, P, n),
    }[kind]


def _cfunc_target(kind, dt, parallel):
    sig = _signature(kind, dt)
    opts = dict(cache=_OPTS["cache"], error_model="numpy")

    def compile(fn):
        if parallel:
            # A cfunc loaded from numba's cache is linked at once, and a parallel
            # kernel's code needs numba's threading layer ("Symbol not found:
            # allocate_sched" otherwise; njit loads it itself, cfunc does not).
            from numba.np.ufunc.parallel import _launch_threads

            _launch_threads()
        c = cfunc(sig, **opts)(fn)
        if c.cache_hits == 0:           # numba compiled it now (no event for cfuncs)
            _numba_setup.compiled(fn.__module__)
        return c
    return Target(f"cfunc_{kind}_{dt.name}_{'par' if parallel else 'ser'}", compile)


_pointers = {}


@_memo
def activation_pointers(direction, dtype, parallel, names):
    """The table of C function pointers the Cython whole-model passes call: an int64
    array indexed by activation code (``specs.ACTIVATION_CODES``), holding the
    ``direction`` ("forward" or "backward") kernel of each activation in ``names``, a
    tuple (compiled now if need be; the others stay 0 until a model uses them)."""
    dt = np.dtype(dtype)
    key = (direction, dt, bool(parallel))
    table = _pointers.get(key)
    if table is None:
        table = _pointers[key] = np.zeros(len(specs.ACTIVATIONS), np.int64)
    for name in names:
        code = specs.ACTIVATION_CODES[name]
        if table[code] == 0:
            array_kernel = (activation_forward if direction == "forward"
                            else activation_backward)(name, dt, parallel)
            wrapper = forward_c if direction == "forward" else backward_c
            c = specialise(wrapper, _cfunc_target(direction, dt, parallel),
                           _tag(name, dt, parallel), kernel=array_kernel)
            table[code] = c.address
    return table


@_memo
def loss_pointer(name, dtype, parallel):
    """The address of the loss kernel ``name`` as a C function (see :func:`loss_c`)."""
    dt = np.dtype(dtype)
    labels = specs.LOSS_KERNELS[name].target == "labels"
    wrapper, kind = (loss_labels_c, "loss_labels") if labels else (loss_c, "loss")
    return specialise(wrapper, _cfunc_target(kind, dt, parallel),
                      _tag(name, dt, parallel),
                      kernel=loss(name, dt, parallel)).address


@_memo
def step_pointer(name, dtype, parallel):
    """The address of the update rule ``name``'s step as a C function (see
    :func:`step0_c`)."""
    dt = np.dtype(dtype)
    rule = specs.UPDATE_RULES[name]
    return specialise(STEP_WRAPPERS[len(rule.state)], _cfunc_target("step", dt, parallel),
                      _tag(name, dt, parallel), kernel=optimizer_step(name, dt, parallel),
                      scalars=rule.scalars, NFIELDS=len(rule.scalars._fields)).address
