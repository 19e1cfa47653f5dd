"""Input checks shared by the public API.  Each raises TypeError/ValueError naming the
argument and what was expected, before anything is modified."""
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def dtype_of(dtype, argname="dtype"):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{argname} must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{argname} must be float32 or float64, got {dt}")
    return dt


def positive_int(value, argname):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argname} must be a positive integer, got {value!r}")
    return int(value)


def real_number(value, argname, minimum=None, strict=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not np.isfinite(value):
        raise ValueError(f"{argname} must be a finite real number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        bound = ">" if strict else ">="
        raise ValueError(f"{argname} must be {bound} {minimum}, got {value!r}")
    return float(value)


def seed(value, argname="seed"):
    """None or a non-negative integer (what ``np.random.default_rng`` takes)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{argname} must be None or a non-negative integer, got "
                         f"{value!r}")
    return int(value)


# dtype -> (largest finite value, smallest nonzero value): the plain range check
RANGE = {dt: (float(np.finfo(dt).max), float(np.finfo(dt).smallest_subnormal))
          for dt in FLOAT_DTYPES}


def representable(value, dtype, argname):
    """A finite real ``value`` that ``dtype`` holds: neither overflowing to inf nor
    (when nonzero) rounding to zero, so the kernel computes with what was asked."""
    dt = np.dtype(dtype)
    largest, smallest = RANGE[dt]
    size = abs(value)
    if size <= largest and (size >= smallest or size == 0):
        return value                        # (the hot path: no cast, no errstate)
    with np.errstate(over="ignore", under="ignore"):
        cast = dt.type(value)               # just outside: what rounding makes of it
    if not np.isfinite(cast):
        raise ValueError(f"{argname}={value!r} overflows {dt} (its largest value is "
                         f"{largest:g})")
    if value != 0 and cast == 0:
        raise ValueError(f"{argname}={value!r} rounds to 0 in {dt} (its smallest "
                         f"nonzero value is {smallest:g})")
    return value


def batch_array(x, argname, dtype, ndim=2, columns=None):
    """A model-side array: an ndarray of exactly ``dtype``, ``ndim``-D, C-contiguous.
    The low-level calls never convert (no hidden copies in the hot path)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{argname} must be a numpy.ndarray of {dtype}, got "
                        f"{type(x).__name__}")
    batch_shape(x.shape, x.dtype, argname, dtype, ndim, columns)
    if not x.flags.c_contiguous:
        raise ValueError(f"{argname} must be C-contiguous; use "
                         f"np.ascontiguousarray({argname})")
    return x


def batch_shape(shape, got_dtype, argname, dtype, ndim=2, columns=None):
    """The shape and dtype checks of :func:`batch_array`, for any kind of array."""
    if len(shape) != ndim:
        hint = " (one sample? use x.reshape(1, -1))" if len(shape) == 1 and ndim == 2 \
            else ""
        raise ValueError(f"{argname} must be {ndim}-D, got shape {tuple(shape)}{hint}")
    if np.dtype(got_dtype) != dtype:
        raise TypeError(f"{argname} must have dtype {dtype} (the model's), got "
                        f"{got_dtype}; convert it once with x.astype(np.{dtype})")
    if columns is not None and shape[1] != columns:
        raise ValueError(f"{argname} must have {columns} columns (features), got "
                         f"shape {tuple(shape)}")
    if shape[0] < 1:
        raise ValueError(f"{argname} must hold at least one row, got shape "
                         f"{tuple(shape)}")


def exact_cast(value, dtype, argname):
    """Convert a real array-like to ``dtype`` only if no value changes (no lossy cast)."""
    try:
        arr = np.asarray(value)
    except ValueError as exc:               # ragged nested lists, for one
        raise ValueError(f"{argname} must be an array of one shape: {exc}") from None
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{argname} must hold real numbers, got dtype {arr.dtype}")
    out = arr.astype(dtype)
    with np.errstate(invalid="ignore"):
        same = np.array_equal(out, arr, equal_nan=True) if arr.dtype.kind == "f" \
            else np.array_equal(out, arr)
    if not same:
        raise TypeError(f"{argname} has dtype {arr.dtype} and would change when cast to "
                        f"{np.dtype(dtype)}; cast it yourself if that is intended")
    return out


def all_finite(x, chunk=1 << 18):
    """Whether every element of ``x`` is finite, checked in chunks so that a large data
    set costs no temporary of its own size."""
    flat = x.reshape(-1)
    return all(np.isfinite(flat[i:i + chunk]).all() for i in range(0, flat.size, chunk))
