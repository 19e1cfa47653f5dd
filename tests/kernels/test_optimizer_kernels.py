"""Every update rule of the registry, one fused step over flat buffers (cpu serial and
parallel, cuda) against the NumPy reference in float64, all state buffers; and the
gradient norm's reduction against an independent float64 sum."""
import math

import numpy as np
import pytest

from fastnn.kernels import specs
from kernel_cases import DTYPES, close, rand, rule_scalars, small_enough


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 33, 1025, 70001])
@pytest.mark.parametrize("rule", sorted(specs.UPDATE_RULES))
def test_optimizer_step(rule, n, dtype, rng, ref, kern):
    """One fused step of every update rule against the reference, all buffers."""
    small_enough(kern.name, n)
    check_optimizer_step(rule, n, dtype, rng, ref, kern)


def check_optimizer_step(rule, n, dtype, rng, ref, kern):
    p0, g = rand(rng, n, dtype), rand(rng, n, dtype)
    names = specs.UPDATE_RULES[rule].state
    # state a running optimizer could hold: signed averages, squared averages >= 1
    # (so that square_avg - grad_avg^2 stays positive)
    state0 = [(0.1 if name == "grad_avg" else 1.0) * rand(rng, n, dtype)
              if name in ("grad_avg", "exp_avg", "momentum_buffer")
              else 1 + np.abs(rand(rng, n, dtype)) for name in names]
    h = rule_scalars(rule)
    p, state = p0.copy(), tuple(s.copy() for s in state0)
    kern.optimizer_step(rule, p, g, state, h._make(dtype(x) for x in h))
    wp, wstate = p0.astype(np.float64), tuple(s.astype(np.float64) for s in state0)
    ref.optimizer_step(rule, wp, g.astype(np.float64), wstate, h)
    close(p, wp, dtype)
    for s, w in zip(state, wstate):
        close(s, w, dtype)


def _norm(x, order):
    """The norm in float64 by another road: exactly rounded sums of Python floats."""
    v = [abs(float(e)) for e in x]
    if order == math.inf:
        return max(v)
    return math.fsum(e ** order for e in v) ** (1.0 / order)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", [2.0, 1.0, 3.5, np.inf])
@pytest.mark.parametrize("n", [1, 33, 70001])
def test_vector_norm(order, n, dtype, rng, ref, kern):
    small_enough(kern.name, n)
    check_vector_norm(order, n, dtype, rng, ref, kern)


def check_vector_norm(order, n, dtype, rng, ref, kern):
    x = rand(rng, n, dtype)
    want = _norm(x, order)
    assert kern.vector_norm(x, order) == pytest.approx(want, rel=1e-12)
    assert ref.vector_norm(x, order) == pytest.approx(want, rel=1e-12)
    x[n // 2] = np.nan
    assert np.isnan(kern.vector_norm(x, order))
