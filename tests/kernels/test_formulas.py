"""The arithmetic exp, expm1 and log(1 + y) of kernels/formulas.py (written out so that
LLVM vectorises the loops that call them) against NumPy's in both precisions: exp and
expm1 within 2 ulp, log(1 + y) within 3 (measured over 2 million random inputs per
case: those are the largest errors seen); NaN is kept.  Run through the shared
elementwise template."""
import numpy as np
import pytest
from numba import prange

from fastnn.kernels import cpu, loops
from fastnn.kernels.formulas import formulas
from fastnn.kernels.template import specialise

RANGES = {  # formula -> (numpy's, the inputs per float type, the bound in ulp)
    "exp": (np.exp, {np.float32: (-87.0, 88.0), np.float64: (-700.0, 700.0)}, 2.0),
    "expm1": (np.expm1, {np.float32: (-20.0, 20.0), np.float64: (-40.0, 40.0)}, 2.0),
    "log1p_unit": (np.log1p, {np.float32: (0.0, 1.0), np.float64: (0.0, 1.0)}, 3.0),
}


def _apply(name, x):
    dt = x.dtype
    kernel = specialise(loops.activation_forward, cpu.SERIAL, f"test_{name}_{dt.name}",
                        indices=prange, f=getattr(formulas(dt), name))
    out = np.full_like(x, np.nan)
    kernel(x, out)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(RANGES))
def test_within_a_few_ulp_of_numpy(name, dtype, rng):
    numpy_fn, ranges, bound = RANGES[name]
    lo, hi = ranges[dtype]
    x = np.concatenate([rng.uniform(lo, hi, 20000),
                        np.linspace(lo, hi, 2001),
                        rng.uniform(-1e-6, 1e-6, 200) if lo < 0 else []]).astype(dtype)
    got, want = _apply(name, x), numpy_fn(x)
    ulps = np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want))
    assert ulps.max() <= bound, (name, x[ulps.argmax()], got[ulps.argmax()],
                               want[ulps.argmax()])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["exp", "expm1"])
def test_nan_in_nan_out(name, dtype):
    assert np.isnan(_apply(name, np.array([np.nan, 1.0], dtype))[0])


def test_float32_expm1_polynomial_is_as_fitted():
    """EXPM1_POLY32 is what its comment says: r + r^2 P(r) is expm1(r) within 2^-25.5
    relative on |r| <= ln2/2 (2^-25.8 measured, coefficients in float32; Taylor's
    series of the same length reaches only 2^-21.3), with the arithmetic in float64 so
    that only the fit is measured."""
    from fastnn.kernels import formulas as fm

    r = np.linspace(-np.log(2) / 2, np.log(2) / 2, 100001)
    r = r[r != 0]
    p = np.zeros_like(r)
    for c in np.asarray(fm.EXPM1_POLY32, np.float32).astype(np.float64):
        p = p * r + c
    rel = np.abs((r + r * r * p) / np.expm1(r) - 1)
    assert rel.max() <= 2.0**-25.5


# ---- gelu's normal distribution function in float32 --------------------------------
def test_mills_coefficients_fit_the_mills_ratio():
    """MILLS_N / MILLS_D are what their comment says: D / (t D + N) is the Mills ratio
    Phi(-t) / phi(t) = sqrt(pi/2) erfcx(t / sqrt 2) within 1e-9 relative on
    [0, MILLS_T] (7.0e-10 at the fit), and no coefficient is negative, so D and
    t D + N have no zero for t >= 0."""
    from numpy.polynomial import polynomial
    from scipy.special import erfcx

    from fastnn.kernels import formulas as fm

    assert min(fm.MILLS_N) > 0 and min(fm.MILLS_D) > 0
    t = np.linspace(0.0, fm.MILLS_T, 200001)
    d = polynomial.polyval(t, fm.MILLS_D)
    mills = d / (t * d + polynomial.polyval(t, fm.MILLS_N))
    want = np.sqrt(np.pi / 2) * erfcx(t / np.sqrt(2))
    assert np.abs(mills / want - 1).max() <= 1e-9


def _float32_sweep(stride):
    """Every ``stride``-th float32 bit pattern (both signs, every exponent), finite."""
    z = np.arange(0, 2**32, stride, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return z[np.isfinite(z)]


def _float32_between(a, b, stride=1):
    """Every ``stride``-th float32 from ``a`` to ``b`` (same sign), in bit order."""
    lo, hi = sorted(np.array([a, b], np.float32).view(np.uint32).tolist())
    return np.arange(lo, hi + 1, stride, dtype=np.uint32).view(np.float32)


def _ulps(got, want):
    """|got - want| in units of float32's spacing at ``want`` (an exact float64)."""
    spacing = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


# The hard regions, densely (the sweep has a few thousand values in each): the lower
# tail, where gelu and gelu' go through float32's subnormals to 0 (at -14.36 and
# -14.54); the zero of gelu' and around it; z where z Phi(z) starts to round to z (5.4);
# tiny |z|, where gelu(z) is z/2 plus less than an ulp.
_GELU_REGIONS = ((-9.0, -14.7, 16), (-0.7, -0.8, 64), (-2.0, -0.5, 512),
                 (0.5, 2.0, 512), (4.0, 7.0, 32),
                 (2.0**-26, 2.0**-18, 256), (-(2.0**-26), -(2.0**-18), 256))
GELU_ZERO = -0.7517915241     # gelu'(GELU_ZERO) = 0


def _gelu_kernels():
    f = formulas(np.float32)
    return {name: specialise(loops.activation_forward, cpu.SERIAL, f"test_{name}_sweep",
                             indices=prange, f=formula)
            for name, formula in (("gelu_f", f.gelu_f), ("gelu_df", _derivative(f)))}


def test_gelu_float32_is_within_an_ulp_over_the_float32_range():
    """gelu(z) = z Phi(z) and gelu'(z) in float32 (the "mills" normal_cdf: float64
    arithmetic, a rational Mills ratio) against the exact values, computed in float64
    from scipy's ndtr (no cancellation in the tail), over a sweep of the whole float32
    range and the hard regions above (~3.3M values): within 1 ulp.  Measured over
    every finite float32 (against float64 erfc, a scratch run of some minutes): gelu
    0.52 ulp, gelu' 0.58 but within 0.01 of its zero, 0.82 between 0.002 and 0.01.
    There gelu' is a difference of two terms of about 0.23 and the fit's 7e-10 of
    them is more than an ulp of the tiny result (1.1 ulp at 0.001): closer than 0.002
    the bound is absolute, 2^-28 (Phi + |z| phi), 1/16 of a float32 rounding of the
    terms (1/100 measured)."""
    from scipy.special import ndtr

    z = np.concatenate([_float32_sweep(2003)]                  # ~2.1M values
                       + [_float32_between(*r) for r in _GELU_REGIONS])
    w = z.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        density = np.exp(-0.5 * w * w) / np.sqrt(2 * np.pi)
        want = w * ndtr(w)
        dwant = ndtr(w) + w * density
    near_zero = np.abs(w - GELU_ZERO) <= 0.002
    for (name, kernel), exact, keep in zip(_gelu_kernels().items(), (want, dwant),
                                           (np.isfinite(want), ~near_zero)):
        got = np.full_like(z, np.nan)
        kernel(z, got)
        ok = keep & np.isfinite(exact) & (exact != 0)
        ulps = _ulps(got[ok], exact[ok])
        assert ulps.max() <= 1.0, (name, z[ok][ulps.argmax()], got[ok][ulps.argmax()],
                                   exact[ok][ulps.argmax()])
        # where the exact value is 0 (z = 0) or below float64's range, so is ours
        zero = keep & (exact == 0)
        assert (got[zero] == 0).all()
        if name == "gelu_df":
            err = np.abs(got[near_zero] - exact[near_zero])
            terms = ndtr(w[near_zero]) + np.abs(w[near_zero]) * density[near_zero]
            assert (err <= 2.0**-28 * terms).all(), z[near_zero][np.argmax(err / terms)]


def test_gelu_float32_special_values():
    """+-inf and NaN give what the float64 NumPy reference gives (the nonfinite tests
    hold every kernel to it): gelu(+inf) = +inf, gelu(-inf) = -inf * Phi(-inf) =
    -inf * 0 = NaN (PyTorch's too), gelu'(+-inf) = Phi + z phi = NaN likewise, NaN in
    NaN out.  Finite extremes are the exact values rounded, gelu's zeros with their
    sign: gelu(-0) = -0 and gelu(z) = -0 below z = -14.36 (gelu' is an unsigned 0
    below -14.54); gelu(z) = z where Phi(z) rounds to 1; at the smallest subnormal,
    z Phi(z) is z/2, a tie, plus a little: 2^-149 rounds to 2^-149, -2^-149 to -0 (the
    float64 reference, rounding its 2^-150 from the tie, says 0)."""
    from fastnn.backends.numpy_backend import REFERENCE_ACTIVATIONS

    tiny, big = np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).max
    z = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, tiny, -tiny, big, -big, 6.0,
                  -15.0], np.float32)
    f_ref, backward_ref = REFERENCE_ACTIVATIONS["gelu"]
    with np.errstate(all="ignore"):
        ref_nan = [np.isnan(f_ref(z[:3].astype(np.float64))),
                   np.isnan(backward_ref(z[:3].astype(np.float64), None, 1.0))]
    np.testing.assert_array_equal(ref_nan, [[False, True, True], [True, True, True]])
    nan = np.nan
    want = {"gelu_f": [np.inf, nan, nan, 0.0, -0.0, tiny, -0.0, big, -0.0, 6.0, -0.0],
            "gelu_df": [nan, nan, nan, 0.5, 0.5, 0.5, 0.5, 1.0, 0.0, 1.0, 0.0]}
    for name, kernel in _gelu_kernels().items():
        got = np.full_like(z, 7.0)
        kernel(z, got)
        exact = np.array(want[name], np.float32)
        np.testing.assert_array_equal(got, exact, err_msg=name)   # NaN where NaN
        if name == "gelu_f":
            assert (np.signbit(got) == np.signbit(exact))[3:].all(), got


def _derivative(f):
    """gelu' as a one-argument formula for the elementwise template."""
    from numba import njit

    df = f.gelu_df

    @njit(inline="always")
    def gelu_df_of_z(z):
        return df(z, z)

    return gelu_df_of_z
