"""Every activation, loss and optimizer formula of the compiled backends, written once.

Each formula is a plain scalar function compiled with ``numba.njit``; the CPU kernels
(``fastnn.kernels.cpu``) are loops around them, and numba.cuda kernels can call the same
functions.  :func:`formulas` instantiates the whole set for one float type, so that the
constants are typed (``F(0.5)``) and float32 arithmetic stays float32 — no
``if dtype == ...`` anywhere below.

Why exp is written out here instead of calling ``math.exp``: numba from PyPI has no
vector math library, so ``math.exp`` in a loop is one scalar libm call per element and
blocks vectorisation.  Measured on 1024x512 float32, one thread: sigmoid with
``math.exp`` 1134 us, with the arithmetic exp below 218 us (NumPy's four ufunc passes
519 us).  The exp is
Cody-Waite range reduction (x = n ln2 + r, |r| <= ln2/2) and a polynomial for
expm1(r) (a minimax fit in float32, Taylor's in float64), each below an ulp of its
precision; 2**n is built from its bit pattern.  Everything is branch-free arithmetic and
selects, so LLVM vectorises the loops that call it (with ``error_model='numpy'`` on the
loop); the reduction and the Horner steps are fused multiply-adds (``_fmuladd``) and n
comes from the rounded value's bits, not a conversion: a 1024x512 float32 exp pass
294 -> 201 us, sigmoid 331 -> 225 (this machine, one thread; the copy floor is 139).

Do not compile these with the ``reassoc`` fast-math flag: the round-to-nearest trick
``(t + M) - M`` would be folded away.
"""
import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

_inline = dict(inline="always", error_model="numpy")


# Same-width integer and float types, for reinterpreting bit patterns both ways.
_BIT_TWINS = {types.int32: types.float32, types.int64: types.float64}
_BIT_TWINS.update({v: k for k, v in list(_BIT_TWINS.items())})


def _bitcast_to(kind):
    """typer/codegen of a bit-pattern reinterpretation of a value of type ``source``
    to its same-width twin of ``kind`` (types.Float or types.Integer)."""
    def typer(source):
        target = _BIT_TWINS.get(source)
        if not isinstance(target, kind):
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen
    return typer


@intrinsic
def _bits_to_float(typingctx, bits):
    """Reinterpret an int32 (int64) bit pattern as a float32 (float64)."""
    return _bitcast_to(types.Float)(bits)


@intrinsic
def _float_to_bits(typingctx, x):
    """The bit pattern of a float32 (float64) as an int32 (int64)."""
    return _bitcast_to(types.Integer)(x)


@intrinsic
def _fmuladd(typingctx, a, b, c):
    """a * b + c as LLVM's fmuladd: one fused multiply-add (one rounding) where the
    target has FMA, a multiply and an add where it has not.  An intrinsic rather than
    the ``contract`` fast-math flag because a formula inlined by numba compiles with
    its caller's flags, not its own."""
    from llvmlite import ir
    from numba.core import cgutils

    if not (a == b == c and isinstance(a, types.Float)):
        return None
    name = "llvm.fmuladd.f64" if a == types.float64 else "llvm.fmuladd.f32"

    def codegen(context, builder, signature, args):
        ty = args[0].type
        fn = cgutils.get_or_insert_function(builder.module,
                                            ir.FunctionType(ty, [ty, ty, ty]), name)
        return builder.call(fn, args)

    return a(a, b, c), codegen


# float32's expm1(r) = r + r^2 P(r) on |r| <= ln2/2: P of degree 4, highest power
# first, fitted to (expm1(r) - r) / r^2 by least squares with 500 of Lawson's
# reweightings on 20000 evenly spaced points, minimising the relative error of expm1:
# 2^-26.2, 2^-25.8 with the coefficients rounded to float32
# (tests/kernels/test_formulas.py checks it).  Taylor's series needs one more term for
# 2^-25; one fused multiply-add less per exp: sigmoid 1024x512 225 -> 218 us, tanh
# 303 -> 290, and the largest float32 errors were no larger (exp 1.03 ulp, expm1 1.56:
# every 61st float32 of the range).
EXPM1_POLY32 = (0.0013882519408252435, 0.008366514342526742, 0.04166719969612205,
                0.16666543667275102, 0.49999998155019376)

# Per-precision constants of the exp/log1p range reductions.
_EXP_CONSTANTS = {
    np.dtype(np.float32): dict(
        int_type=np.int32, mant_bits=23, bias=127,
        # exp(x) is 0 below -104 and inf above 89 in float32; clamping x there keeps n
        # (and so the exponent arithmetic) in range without changing any result.
        lo=-104.0, hi=89.0,
        ln2_hi=0.693359375, ln2_lo=-2.12194440e-4,
        round_magic=12582912.0,          # 1.5 * 2**23
        expm1_poly=EXPM1_POLY32,         # relative error 2**-25.8 (below)
        log_terms=6,                     # atanh series, |s| <= 0.1716
        normal_cdf="mills"),             # gelu's Phi: see normal_cdf_* below
    np.dtype(np.float64): dict(
        int_type=np.int64, mant_bits=52, bias=1023,
        lo=-746.0, hi=710.0,
        ln2_hi=6.93147180369123816490e-01, ln2_lo=1.90821492927058770002e-10,
        round_magic=6755399441055744.0,  # 1.5 * 2**52
        # Taylor's 1/13! .. 1/2!: |r|^14/14! < 2**-54 for |r| <= ln2/2
        expm1_poly=tuple(1.0 / math.factorial(k) for k in range(13, 1, -1)),
        log_terms=12,
        normal_cdf="libm"),
}


# The Mills ratio m(t) = Phi(-t) / phi(t) (phi the normal density), t >= 0, as the
# rational function D(t) / (t D(t) + N(t)), that is 1/m = t + N/D; coefficients lowest
# power first.  Fitted to sqrt(pi/2) erfcx(t / sqrt 2) (scipy) on [0, MILLS_T] by
# Sanathanan-Koerner iteration (40 linearised least-squares solves) then 300 of
# Lawson's reweightings, minimising the relative error of m on 30001 evenly spaced
# points: 7.0e-10 (2^-30.5) at most, below a float32 rounding (2^-24) by 60x and small
# enough for gelu' near its zero (z = -0.7518, where Phi and z phi cancel).  Every
# coefficient is positive, so neither D nor t D + N vanishes for t >= 0.
# tests/kernels/test_formulas.py checks the error bound and the signs.  Beyond
# MILLS_T float32's gelu and gelu' are 0 (z < 0) or z and 1: t Phi(-t) < 2^-150 from
# t = 14.36, t phi(t) from 14.54.
MILLS_N = (0.79788456134317, 0.5033953781632073, 0.1663915221666581,
           0.02991282388879307, 0.002504064110613743)
MILLS_D = (1.0, 1.0863421778301352, 0.5666726918137682, 0.1711313594182691,
           0.029925035308533254, 0.002503821857305477)
MILLS_T = 14.6


@functools.lru_cache(maxsize=None)
def _formulas(dt):
    """The formulas for one float type, built once per process (compiled lazily by
    numba, where a kernel inlines them)."""
    F = dt.type
    c = _EXP_CONSTANTS[dt]
    I = c["int_type"]
    ZERO, ONE, TWO, HALF = F(0), F(1), F(2), F(0.5)
    LOG2E, LN2 = F(1.4426950408889634), F(0.6931471805599453)
    LN2_HI, LN2_LO = F(c["ln2_hi"]), F(c["ln2_lo"])
    LO, HI, MAGIC = F(c["lo"]), F(c["hi"]), F(c["round_magic"])
    MAGIC_BITS = MAGIC.view(I)
    BIAS, MANT = I(c["bias"]), I(c["mant_bits"])
    SQRT_HALF = F(0.7071067811865476)
    INV_SQRT2, INV_SQRT_2PI = F(0.7071067811865476), F(0.3989422804014327)
    LEAKY_SLOPE = F(0.01)
    EXPM1_BIG = F(40.0)          # expm1(x) == exp(x) in both precisions beyond
    # P of expm1(r) = r + r^2 P(r), highest power first for Horner.
    EXPM1_C = tuple(F(k) for k in c["expm1_poly"])
    # atanh series: log(1+y) = 2 atanh(s), s = y / (2 + y): coefficients 1/(2k+1).
    ATANH_C = tuple(F(1.0 / (2 * k + 1)) for k in range(c["log_terms"], -1, -1))
    BCE_LOG_FLOOR = F(-100.0)    # PyTorch clamps log(p) at -100 in BCELoss
    BCE_EPS = F(1e-12)           # ... and p(1-p) at 1e-12 in its gradient
    INF = F(np.inf)

    # NaN in, NaN out (issue 14): a diverged network must report a NaN loss and NaN
    # weights, as PyTorch and the NumPy reference do, never a finite value.  A select
    # ``x if x > c else c`` drops NaN (the comparison is false); the forms below test
    # the other way round, so that NaN takes the branch that passes it on, at no cost
    # (one compare and one select either way).  tests/kernels/test_nonfinite.py checks
    # every formula of the registry with NaN and +-inf inputs.
    @njit(**_inline)
    def max_nan(a, b):
        """max(a, b), NaN if either is NaN (np.maximum / torch.maximum)."""
        return a if (a > b or a != a) else b

    @njit(**_inline)
    def clamp_below_nan(x, lo):
        """max(x, lo) that keeps a NaN x."""
        return lo if x < lo else x

    @njit(**_inline)
    def exp_reduce(x):
        """Return (q, sa, sb) with exp(x) = (1 + q) * sa * sb, q = expm1(r),
        |r| <= ln2/2, and sa, sb = 2**n as two in-range powers of two (float32: 2**128
        is inf, and 2**-150 is below the smallest subnormal; each half is normal)."""
        # Clamping keeps n, and so the exponent arithmetic, in range without changing
        # any result; written so that NaN passes through (a NaN r makes q and every
        # result NaN: no select at the end).
        xc = LO if x < LO else x
        xc = HI if xc > HI else xc
        t = _fmuladd(xc, LOG2E, MAGIC)                # n + MAGIC, n = round(x / ln2)
        n = t - MAGIC
        r = _fmuladd(n, -LN2_LO, _fmuladd(n, -LN2_HI, xc))
        p = EXPM1_C[0]
        for k in EXPM1_C[1:]:
            p = _fmuladd(p, r, k)
        q = _fmuladd(r * r, p, r)
        # n as an integer straight from t's low mantissa bits (no float-to-int
        # conversion); an arithmetic shift halves it.  (numba widens int32 arithmetic
        # to int64: cast back before the bitcast.)
        ni = _float_to_bits(t) - MAGIC_BITS
        na = ni >> 1
        return (q, _bits_to_float(I((na + BIAS) << MANT)),
                _bits_to_float(I((ni - na + BIAS) << MANT)))

    @njit(**_inline)
    def exp(x):
        q, sa, sb = exp_reduce(x)
        return _fmuladd(q, sa, sa) * sb             # (1 + q) sa rounded once

    @njit(**_inline)
    def expm1(x):
        # s*q + (s - 1) is exact to an ulp near 0 (s = 1 there): no cancellation.
        # Far above 0 the -1 no longer matters and s alone could overflow: use exp.
        q, sa, sb = exp_reduce(x)
        s = sa * sb
        return _fmuladd(s, q, s - ONE) if x < EXPM1_BIG else _fmuladd(q, sa, sa) * sb

    @njit(**_inline)
    def log1p_unit(y):
        """log(1 + y) for y in [0, 1], within 3 ulp (tests/kernels/test_formulas.py):
        halve 1+y above sqrt(2), then the atanh series in s = y' / (2 + y'),
        |s| <= 0.1716."""
        big = (ONE + y) * SQRT_HALF > ONE
        yr = (y - ONE) * HALF if big else y        # (1+y)/2 - 1, exactly
        s = yr / (TWO + yr)
        s2 = s * s
        p = ATANH_C[0]
        for k in ATANH_C[1:]:
            p = p * s2 + k
        return TWO * s * p + (LN2 if big else ZERO)

    @njit(**_inline)
    def sigmoid(z):
        e = exp(-abs(z))                            # in (0, 1]: never overflows
        return (ONE if z >= ZERO else e) / (ONE + e)

    @njit(**_inline)
    def softplus(z):
        return max(z, ZERO) + log1p_unit(exp(-abs(z)))

    # ---- activations: f(z) and f'(z) given z and a = f(z) --------------------------
    @njit(**_inline)
    def linear_f(z):
        return z

    @njit(**_inline)
    def linear_df(z, a):
        return ONE

    @njit(**_inline)
    def relu_f(z):
        return ZERO if z <= ZERO else z            # NaN stays NaN (PyTorch)

    @njit(**_inline)
    def relu_df(z, a):
        return ZERO if z <= ZERO else ONE          # 1 at NaN, as PyTorch's backward

    @njit(**_inline)
    def leaky_relu_f(z):
        return z if z > ZERO else LEAKY_SLOPE * z

    @njit(**_inline)
    def leaky_relu_df(z, a):
        return ONE if z > ZERO else LEAKY_SLOPE

    @njit(**_inline)
    def elu_f(z):
        return z if z > ZERO else expm1(z)

    @njit(**_inline)
    def elu_df(z, a):
        return a + ONE if z <= ZERO else ONE       # 1 at NaN, as PyTorch's backward

    @njit(**_inline)
    def sigmoid_df(z, a):
        return a * (ONE - a)

    @njit(**_inline)
    def tanh_f(z):
        # tanh|z| = -expm1(-2|z|) / (2 + expm1(-2|z|)): accurate near 0, no overflow.
        m = expm1(-TWO * abs(z))
        t = abs(m) / (TWO + m)                   # m <= 0; abs keeps tanh(0) = +0
        return t if z >= ZERO else -t

    @njit(**_inline)
    def tanh_df(z, a):
        return ONE - a * a

    # gelu(z) = z Phi(z), gelu'(z) = Phi(z) + z phi(z).  Each normal_cdf_* returns
    # (z, Phi(z), phi(z)) in the type it computes in; the precision's entry in
    # _EXP_CONSTANTS picks one (a table, not a branch on the dtype):
    # - "libm": Phi from math.erf, about an ulp in float64, but a scalar libm call per
    #   element, which keeps the loop from vectorising (1024x512: ~3 ms);
    # - "mills": float64 arithmetic, no libm: Phi(-t) = phi(t) m(t) for t = |z|, m the
    #   rational Mills ratio MILLS_N / MILLS_D, and Phi(z) = 1 - Phi(-t) for z >= 0 (no
    #   cancellation in the lower tail, where gelu is tiny).  float32's gelu is within
    #   0.52 ulp of the exact z Phi(z) for every float32 input, gelu' within 0.58 ulp
    #   except within 0.01 of its zero at -0.7518, where it is a difference of two
    #   terms of 0.23 (0.82 ulp from 0.002 to 0.01, an absolute 5e-11 closer): checked
    #   exhaustively against float64 erfc; tests/kernels/test_formulas.py sweeps the
    #   range.  In float64 the fit's 7e-10 would be millions of ulp: "libm" there.
    # Why float64 arithmetic for float32: a float32 version of the same formulas
    # (Cody-Waite exp of an exactly split z^2/2, the same rational) was 3.6 ulp off in
    # the lower tail (each of its ~10 roundings counts there) and no faster: LLVM
    # vectorises a loop over float32 input 8 lanes wide, so a float64 operation is one
    # 512-bit instruction against one 256-bit float32 one.  The Horner steps and the
    # range reduction are _fmuladd.  1024x512 serial, one process, alternating: the
    # float32 version 632 us (482 with _fmuladd), this 742 us without _fmuladd, 469
    # with; the float64 polynomial erfcx it replaces 1400 us.  The division stays
    # float64's: a float32 reciprocal and a Newton step were slower (535 against 475).
    @njit(**_inline)
    def normal_cdf_libm(z):
        return (z, HALF * (ONE + F(math.erf(z * INV_SQRT2))),
                INV_SQRT_2PI * exp(-HALF * z * z))

    c64 = _EXP_CONSTANTS[np.dtype(np.float64)]
    D_MAGIC, D_MANT = c64["round_magic"], c64["mant_bits"]
    D_BIAS = np.int64(c64["bias"])
    D_LN2, D_LOG2E = 0.6931471805599453, 1.4426950408889634
    # phi(t) = exp(-t^2/2) / sqrt(2 pi) = 2^-k exp(r) / sqrt(2 pi), r = k ln2 - t^2/2,
    # |r| <= ln2/2: the degree-8 Taylor polynomial of exp(r) / sqrt(2 pi), highest
    # power first (|r|^9/9! < 2^-31 relative).  t^2/2 of a float32 t is exact in
    # float64.
    PHI_TAYLOR = tuple(0.3989422804014327 / math.factorial(k) for k in range(8, -1, -1))
    MILLS_NR, MILLS_DR = MILLS_N[::-1], MILLS_D[::-1]   # highest power first

    @njit(**_inline)
    def normal_cdf_mills(z):
        w = np.float64(z)
        t = abs(w)
        inside = t < MILLS_T                     # false for +-inf and NaN
        tc = t if inside else MILLS_T
        y = 0.5 * tc * tc
        k = _fmuladd(y, D_LOG2E, D_MAGIC) - D_MAGIC   # round(y / ln2), branch-free
        r = _fmuladd(k, D_LN2, -y)
        p = PHI_TAYLOR[0]
        for a in PHI_TAYLOR[1:]:
            p = _fmuladd(p, r, a)
        # 2^-k from its bits: k <= 154, a normal float64
        density = p * _bits_to_float(np.int64((D_BIAS - np.int64(k)) << D_MANT))
        density = density if inside else 0.0    # gelu(-inf) = -inf * 0: NaN, as numpy
        n = MILLS_NR[0]
        for a in MILLS_NR[1:]:
            n = _fmuladd(n, tc, a)
        d = MILLS_DR[0]
        for a in MILLS_DR[1:]:
            d = _fmuladd(d, tc, a)
        tail = density * (d / _fmuladd(tc, d, n))        # Phi(-|z|)
        return w, (tail if w < 0.0 else 1.0 - tail), density

    normal_cdf = {"libm": normal_cdf_libm, "mills": normal_cdf_mills}[c["normal_cdf"]]

    @njit(**_inline)
    def gelu_f(z):
        w, cdf, _ = normal_cdf(z)
        return F(w * cdf)

    @njit(**_inline)
    def gelu_df(z, a):
        w, cdf, density = normal_cdf(z)
        return F(cdf + w * density)

    @njit(**_inline)
    def silu_f(z):
        return z * sigmoid(z)

    @njit(**_inline)
    def silu_df(z, a):
        s = sigmoid(z)
        return s + z * s * (ONE - s)

    @njit(**_inline)
    def softplus_df(z, a):
        return sigmoid(z)

    # ---- element losses: (value, d value / d output) --------------------------------
    @njit(**_inline)
    def mse(o, t, p):
        d = o - t
        return d * d, TWO * d

    @njit(**_inline)
    def l1(o, t, p):
        d = o - t
        return abs(d), (ONE if d > ZERO else (-ONE if d < ZERO else ZERO))

    @njit(**_inline)
    def huber(o, t, delta):
        d = o - t
        ad = abs(d)
        small = ad < delta
        v = HALF * d * d if small else delta * (ad - HALF * delta)
        # NaN d: NaN gradient (PyTorch), not -delta
        g = d if small else (delta if d > ZERO else (-delta if d < ZERO else d))
        return v, g

    @njit(**_inline)
    def bce(o, t, p):
        # PyTorch's BCELoss: log terms clamped at -100, gradient denominator at 1e-12.
        # log(0) = -inf is clamped; a NaN output (or one outside [0, 1]: log < 0 is
        # NaN) gives a NaN loss, as the NumPy reference.
        lp = clamp_below_nan(F(math.log(o)), BCE_LOG_FLOOR)
        lq = clamp_below_nan(F(math.log(ONE - o)), BCE_LOG_FLOOR)
        v = -(t * lp + (ONE - t) * lq)
        g = (o - t) / max((ONE - o) * o, BCE_EPS)
        return v, g

    @njit(**_inline)
    def bce_with_logits(o, t, p):
        # max(x,0) - x t + log(1 + exp(-|x|)): finite for any finite logit.
        v = max(o, ZERO) - o * t + log1p_unit(exp(-abs(o)))
        return v, sigmoid(o) - t

    @njit(**_inline)
    def hinge(o, t, p):
        m = ONE - t * o
        # max(0, m) keeping NaN; its gradient is 0 at NaN, as PyTorch's clamp_min
        return (ZERO if m <= ZERO else m), (-t if m > ZERO else ZERO)

    @njit(**_inline)
    def kl_div(o, t, p):
        # target * (log target - input), with 0 log 0 = 0 (PyTorch's xlogy).
        tl = t * F(math.log(t)) if t > ZERO else ZERO
        return tl - t * o, -t

    # ---- optimizers: one parameter element's update -----------------------------
    # Each takes (p, g, *state, h) and returns (p, *state): the element's new value and
    # its new optimizer state (the buffers its kernels.specs.UpdateRule names, in that
    # order).  ``h`` is the step's named tuple of scalars (kernels.specs), already in
    # this float type; d = h.sign * g + h.l2 * p is the gradient the rule sees.
    # Per-step quantities (bias corrections, decayed learning rates) are computed once
    # per step in Python (fastnn.optim), not per element.
    @njit(**_inline)
    def _decayed(p, g, h):
        # No weight decay adds nothing: 0 * p would turn an inf weight into NaN, where
        # PyTorch (which skips the term) keeps it inf.  (h.l2 is the same for every
        # element: LLVM hoists the test out of the loop.)
        return h.sign * g + h.l2 * p if h.l2 != ZERO else h.sign * g

    @njit(**_inline)
    def sgd(p, g, h):
        return (p - h.lr * _decayed(p, g, h),)

    @njit(**_inline)
    def sgd_momentum(p, g, b, h):
        # b = mu b + c d; the update is n_d d + n_b b.  First step: mu = 0, c = 1, so
        # b = d as in PyTorch.
        d = _decayed(p, g, h)
        b = h.mu * b + h.c * d
        # heavy ball (n_d = 0) uses b alone, as PyTorch: 0 * d is NaN for an inf d
        u = h.n_b * b if h.n_d == ZERO else h.n_d * d + h.n_b * b
        return p - h.lr * u, b

    @njit(**_inline)
    def adagrad(p, g, s, h):
        d = _decayed(p, g, h)
        s = s + d * d
        return p - h.clr * (d / (math.sqrt(s) + h.eps)), s

    @njit(**_inline)
    def _rms_square(v, d, h):
        return h.alpha * v + h.c * d * d      # c = 1 - alpha

    @njit(**_inline)
    def rmsprop(p, g, v, h):
        d = _decayed(p, g, h)
        v = _rms_square(v, d, h)
        return p - h.lr * (d / (math.sqrt(v) + h.eps)), v

    @njit(**_inline)
    def _centered_var(v, ga):
        # v - ga^2 as PyTorch's addcmul computes it (a fused multiply-add: the product
        # is not rounded, so it cannot overflow on its own).  When float32 gradients of
        # 1e30 overflow square_avg to inf, ga^2 overflows too; inf - inf would be NaN
        # weights, PyTorch keeps the variance inf and the step d / inf = 0.  Where ga^2
        # overflows with v finite the exact v - ga^2 is negative as well (NaN sqrt).
        return v if (v == INF and abs(ga) < INF) else v - ga * ga

    @njit(**_inline)
    def rmsprop_centered(p, g, v, ga, h):
        d = _decayed(p, g, h)
        v = _rms_square(v, d, h)
        ga = ga + h.c * (d - ga)
        return p - h.lr * (d / (math.sqrt(_centered_var(v, ga)) + h.eps)), v, ga

    @njit(**_inline)
    def rmsprop_momentum(p, g, v, b, h):
        d = _decayed(p, g, h)
        v = _rms_square(v, d, h)
        b = h.mu * b + d / (math.sqrt(v) + h.eps)
        return p - h.lr * b, v, b

    @njit(**_inline)
    def rmsprop_centered_momentum(p, g, v, ga, b, h):
        d = _decayed(p, g, h)
        v = _rms_square(v, d, h)
        ga = ga + h.c * (d - ga)
        b = h.mu * b + d / (math.sqrt(_centered_var(v, ga)) + h.eps)
        return p - h.lr * b, v, ga, b

    @njit(**_inline)
    def adadelta(p, g, v, u, h):
        d = _decayed(p, g, h)
        v = h.rho * v + h.c * d * d       # c = 1 - rho
        delta = math.sqrt(u + h.eps) / math.sqrt(v + h.eps) * d
        u = h.rho * u + h.c * delta * delta
        return p - h.lr * delta, v, u

    @njit(**_inline)
    def _adam_moments(p, g, m, v, h):
        # m moves towards d by 1 - beta1 (PyTorch's lerp); v is the squared-gradient
        # average.  Decoupled decay (AdamW) is the factor p * decay; Adam has decay 1.
        d = _decayed(p, g, h)
        return m + h.c1 * (d - m), h.b2 * v + h.c2 * d * d

    @njit(**_inline)
    def _adam_update(p, m, v_hat_sqrt, h):
        # step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t): PyTorch's
        # bias corrections (the second moment's under the square root).
        return p * h.decay - h.step_size * (m / (v_hat_sqrt / h.bc2_sqrt + h.eps))

    @njit(**_inline)
    def adam(p, g, m, v, h):
        m, v = _adam_moments(p, g, m, v, h)
        return _adam_update(p, m, math.sqrt(v), h), m, v

    @njit(**_inline)
    def adam_amsgrad(p, g, m, v, vmax, h):
        m, v = _adam_moments(p, g, m, v, h)
        vmax = max_nan(vmax, v)              # NaN sticks, as torch.maximum
        return _adam_update(p, m, math.sqrt(vmax), h), m, v, vmax

    sigmoid_f, softplus_f = sigmoid, softplus   # the activation table's names

    return SimpleNamespace(**{k: v for k, v in locals().items()
                              if hasattr(v, "py_func")},
                           dtype=dt, F=F)


def formulas(dtype):
    """Return a namespace of the scalar formulas, compiled for ``dtype``: the one
    formula cache of every kernel module."""
    return _formulas(np.dtype(dtype))
