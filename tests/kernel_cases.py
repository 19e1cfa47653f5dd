"""Shapes, dtypes and array makers shared by the tests (not named conftest, so that
it cannot be confused with bench/conftest.py on sys.path)."""
import numpy as np

BACKENDS = ("numpy", "cpu")
DTYPES = (np.float32, np.float64)
# odd sizes, including rows of more than 64 columns (several parallel column blocks)
SHAPES = ((1, 1), (7, 33), (33, 7), (1025, 7), (1, 1025), (1025, 65))


def rand(rng, shape, dtype, lo=-3.0, hi=3.0):
    """Random, never-zero values in [lo, hi]."""
    x = rng.uniform(lo, hi, shape)
    x[x == 0] = 0.5
    return x.astype(dtype)


def poisoned(shape, dtype):
    """An output array filled with NaN, so that an unwritten element fails a test."""
    return np.full(shape, np.nan, dtype)


def tol(dtype):
    """(rtol, atol) for a float32/float64 result against the float64 reference."""
    return (2e-5, 2e-6) if np.dtype(dtype) == np.float32 else (1e-11, 1e-13)
