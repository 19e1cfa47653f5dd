"""Shapes, dtypes, backends and array makers shared by the tests (not named conftest,
so that it cannot be confused with bench/conftest.py on sys.path)."""
import numpy as np
import pytest

import fastnn as fn

DTYPES = (np.float32, np.float64)
# odd sizes, including rows of more than 64 columns (several parallel column blocks)
SHAPES = ((1, 1), (7, 33), (33, 7), (1025, 7), (1, 1025), (1025, 65))

# The backends under test: cuda runs on a real GPU when there is one, else under the
# Numba CUDA simulator (see the repository's conftest.py), where it is listed too.
BACKENDS = fn.available_backends()
COMPILED = tuple(b for b in BACKENDS if b != "numpy")
CUDA_SIMULATED = "cuda" in BACKENDS and fn.get_backend("cuda").simulated
# The simulator runs every CUDA thread as a Python thread (~0.1 ms each): there, the
# cuda cases are limited to this many elements of work.
SIM_LIMIT = 2500


def simulator_sweep(cases, keep):
    """``cases`` as pytest parameters; under the CUDA simulator, those not in ``keep``
    carry the ``exhaustive`` mark (run by ``pytest -m exhaustive``, as .ci/run does),
    so that the default run stays quick.  With a real GPU all run by default."""
    def param(case):
        values = case if isinstance(case, tuple) else (case,)
        marks = () if not CUDA_SIMULATED or case in keep else pytest.mark.exhaustive
        return pytest.param(*values, marks=marks)
    return [param(c) for c in cases]


def small_enough(backend, *sizes):
    """Skip (saying why) when ``backend`` is the simulated cuda and the case's work,
    the product of ``sizes``, is too large for the simulator."""
    if backend == "cuda" and CUDA_SIMULATED and int(np.prod(sizes)) > SIM_LIMIT:
        pytest.skip(f"{int(np.prod(sizes))} elements: too slow for the CUDA simulator "
                    "(runs at this size on a real GPU)")


class OnHost:
    """A backend driven with NumPy arrays: each call copies its array arguments to
    the backend (NaN poison included) and copies them all back afterwards, so that
    the kernel tests and the finite-difference checks read the same for every
    backend.  For numpy and cpu it is the backend itself."""

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name

    def __getattr__(self, method):
        fun = getattr(self.backend, method)
        b = self.backend

        def call(*args):
            pairs = []

            def up(v):
                if isinstance(v, np.ndarray):
                    d = b.from_numpy(v)
                    pairs.append((v, d))
                    return d
                if isinstance(v, tuple):        # (a named tuple keeps its type)
                    items = [up(u) for u in v]
                    return type(v)(*items) if hasattr(v, "_fields") else tuple(items)
                return v

            result = fun(*(up(a) for a in args))
            for host, dev in pairs:
                host[...] = b.to_numpy(dev)
            return result

        return call


def shares_memory(part, whole):
    """Whether backend array ``part`` lies inside ``whole``: by their device pointers
    for CUDA arrays (NumPy would compare host copies), else as NumPy arrays (the
    simulator's arrays wrap NumPy ones)."""
    if hasattr(part, "__cuda_array_interface__"):
        lo = whole.__cuda_array_interface__["data"][0]
        return lo <= part.__cuda_array_interface__["data"][0] < lo + whole.nbytes
    return np.shares_memory(part, whole)


def backend_on_host(name):
    """The backend ``name``, callable with NumPy arrays (see :class:`OnHost`)."""
    be = fn.get_backend(name)
    return be if be.is_array(np.empty(0)) else OnHost(be)


# Each update rule with scalars a real optimizer could pass (sign, l2 first).
RULE_SCALARS = {
    "sgd": (1.0, 0.1, 0.3),
    "sgd_momentum": (-1.0, 0.1, 0.3, 0.9, 0.8, 1.0, 0.9),
    "adagrad": (1.0, 0.1, 0.05, 1e-10),
    "rmsprop": (1.0, 0.1, 0.01, 0.99, 0.01, 1e-8, 0.8),
    "adadelta": (0.7, 0.1, 1.0, 0.9, 0.1, 1e-6),
    "adam": (1.0, 0.1, 0.999, 0.01, 0.3, 1e-8, 0.1, 0.999, 0.001),
}


def rule_scalars(rule):
    """The rule's named tuple of scalars (kernels.specs) with the values above."""
    from fastnn.kernels import specs

    values = next(v for k, v in sorted(RULE_SCALARS.items(), key=lambda kv: -len(kv[0]))
                  if rule.startswith(k))
    return specs.UPDATE_RULES[rule].scalars(*values)


def rand(rng, shape, dtype, lo=-3.0, hi=3.0):
    """Random, never-zero values in [lo, hi]."""
    x = rng.uniform(lo, hi, shape)
    x[x == 0] = 0.5
    return x.astype(dtype)


# Random values of every kind a loss kernel's registry entry names (kernels.specs):
# targets by ``LossKernel.target``, outputs by ``LossKernel.output``.
def _probability_rows(rng, shape, dtype):
    t = rng.uniform(0.1, 1, shape)
    return (t / t.sum(axis=1, keepdims=True)).astype(dtype)


TARGETS = {
    "real": lambda rng, shape, dtype: rand(rng, shape, dtype),
    "unit": lambda rng, shape, dtype: rng.uniform(0.05, 0.95, shape).astype(dtype),
    "sign": lambda rng, shape, dtype: rng.choice([-1.0, 1.0], shape).astype(dtype),
    "nonnegative": lambda rng, shape, dtype: rng.uniform(0.05, 0.95, shape).astype(dtype),
    "labels": lambda rng, shape, dtype: rng.integers(0, shape[1], shape[0]).astype(np.intp),
    "probabilities": _probability_rows,
}
OUTPUTS = {
    "real": lambda rng, shape, dtype: rand(rng, shape, dtype),
    "probability": lambda rng, shape, dtype: rng.uniform(0.02, 0.98, shape).astype(dtype),
    "log_probability": lambda rng, shape, dtype:
        np.log(rng.uniform(0.05, 1, shape)).astype(dtype),
}


def loss_case(kernel, rng, shape, dtype):
    """(output, target) valid for the loss kernel ``kernel`` (a registry name)."""
    from fastnn.kernels import specs

    spec = specs.LOSS_KERNELS[kernel]
    return (OUTPUTS[spec.output](rng, shape, dtype),
            TARGETS[spec.target](rng, shape, dtype))


def poisoned(shape, dtype):
    """An output array filled with NaN, so that an unwritten element fails a test."""
    return np.full(shape, np.nan, dtype)


def tol(dtype):
    """(rtol, atol) for a float32/float64 result against the float64 reference."""
    return (2e-5, 2e-6) if np.dtype(dtype) == np.float32 else (1e-11, 1e-13)


def close(got, want, dtype, scale=1.0):
    """A kernel's output against the reference, at ``tol(dtype)`` (atol times
    ``scale``: the number of terms summed); an unwritten (NaN) element fails."""
    rtol, atol = tol(dtype)
    assert not np.isnan(got).any(), "kernel left NaN (unwritten output?)"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale)
