"""Every compiled activation kernel (cpu serial and parallel, cuda) against the NumPy
reference in float64, on random odd-sized inputs, float32 and float64, with outputs
NaN-poisoned before the call.  The activations are the registry's."""
import numpy as np
import pytest

import fastnn as fn
from kernel_cases import DTYPES, SHAPES, close, poisoned, rand, small_enough


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(fn.ACTIVATIONS))
def test_activation_forward(name, shape, dtype, rng, ref, kern):
    small_enough(kern.name, *shape)
    check_activation_forward(name, shape, dtype, rng, ref, kern)


def check_activation_forward(name, shape, dtype, rng, ref, kern):
    z = rand(rng, shape, dtype)
    a = poisoned(shape, dtype)
    kern.activation_forward(name, z, a)
    want = np.empty(shape)
    ref.activation_forward(name, z.astype(np.float64), want)
    close(a, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(fn.ACTIVATIONS))
def test_activation_backward(name, shape, dtype, rng, ref, kern):
    small_enough(kern.name, *shape)
    check_activation_backward(name, shape, dtype, rng, ref, kern)


def check_activation_backward(name, shape, dtype, rng, ref, kern):
    z = rand(rng, shape, dtype)
    a = np.empty(shape, dtype)
    ref.activation_forward(name, z, a)
    ga = rand(rng, shape, dtype)
    gb0 = rand(rng, shape[1], dtype)
    gz, gb = poisoned(shape, dtype), gb0.copy()
    kern.activation_backward(name, z, a, ga, gz, gb, 0.75)
    wz, wb = np.empty(shape), gb0.astype(np.float64)
    ref.activation_backward(name, *(v.astype(np.float64) for v in (z, a, ga)), wz, wb, 0.75)
    close(gz, wz, dtype)
    close(gb, wb, dtype, scale=shape[0])
