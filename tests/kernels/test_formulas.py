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


# ---- gelu's normal distribution function in float32 --------------------------------
def test_erfcx_coefficients_are_the_fit():
    """ERFCX_C is what its comment says: the degree-14 Chebyshev interpolant of
    scipy's erfcx in u = 4 / (2 + x) - 1, in the power basis, highest power first."""
    from numpy.polynomial import chebyshev
    from scipy.special import erfcx

    from fastnn.kernels import formulas as fm

    def erfcx_of_u(u):
        t = (u + 1) / 2
        x = 2 / np.where(t > 0, t, 1.0) - 2
        return np.where(t > 0, erfcx(x), 0.0)

    fit = chebyshev.cheb2poly(chebyshev.chebinterpolate(erfcx_of_u, fm.ERFCX_DEGREE))
    np.testing.assert_allclose(fm.ERFCX_C, fit[::-1], rtol=1e-9, atol=1e-15)


def _float32_sweep(stride):
    """Every ``stride``-th float32 bit pattern (both signs, every exponent), finite."""
    z = np.arange(0, 2**32, stride, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return z[np.isfinite(z)]


def _ulps(got, want):
    """|got - want| in units of float32's spacing at ``want`` (an exact float64)."""
    spacing = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


def test_gelu_float32_is_within_an_ulp_over_the_float32_range():
    """gelu(z) = z Phi(z) and gelu'(z) in float32 (the vectorised erfcx path) against
    the exact value in float64 (scipy's ndtr: no cancellation in the tail), over a
    sweep of the whole float32 range: within 1 ulp (0.51 measured).  gelu' is checked
    away from its zero near z = -0.7518, where the float64 reference itself cancels."""
    from scipy.special import ndtr

    z = _float32_sweep(2003)                      # ~2.1M values
    w = z.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        want = w * ndtr(w)
        dwant = ndtr(w) + w * np.exp(-0.5 * w * w) / np.sqrt(2 * np.pi)
    f = formulas(np.float32)
    for formula, exact, keep in ((f.gelu_f, want, np.isfinite(want)),
                                 (f.gelu_df, dwant, np.abs(w + 0.7518) > 0.01)):
        kernel = specialise(loops.activation_forward, cpu.SERIAL,
                            f"test_{formula.__name__}_sweep", indices=prange,
                            f=formula if formula is f.gelu_f else _derivative(f))
        got = np.full_like(z, np.nan)
        kernel(z, got)
        ok = keep & np.isfinite(exact) & (exact != 0)
        ulps = _ulps(got[ok], exact[ok])
        assert ulps.max() <= 1.0, (formula.__name__, z[ok][ulps.argmax()],
                                   got[ok][ulps.argmax()], exact[ok][ulps.argmax()])
        # where the exact value is 0 or overflows, the kernel agrees
        zero = keep & (exact == 0)
        assert (got[zero] == 0).all()


def _derivative(f):
    """gelu' as a one-argument formula for the elementwise template."""
    from numba import njit

    df = f.gelu_df

    @njit(inline="always")
    def gelu_df_of_z(z):
        return df(z, z)

    return gelu_df_of_z
