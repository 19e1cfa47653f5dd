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
