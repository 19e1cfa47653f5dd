"""Read-only inputs (a memmap opened read-only, an array with writeable=False, a
broadcast view) are accepted wherever fastnn only reads them: the Cython passes take
const buffers.  They failed with "buffer source array is read-only" before."""
import numpy as np
import pytest

import fastnn as fn
from kernel_cases import rand


def _readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_pass_reads_a_read_only_input(backend, dtype, rng):
    def build():
        return fn.Sequential(fn.Dense(5, 7, activation="tanh"), fn.Dense(7, 3),
                             backend=backend, dtype=dtype, seed=1)

    x, y = rand(rng, (9, 5), dtype), rand(rng, (9, 3), dtype)
    ro, plain = build(), build()
    np.testing.assert_array_equal(ro.predict(_readonly(x)), plain.predict(x))
    np.testing.assert_array_equal(ro.forward(_readonly(x)), plain.forward(x))
    a = ro.train_step(_readonly(x), _readonly(y), "mse", "sgd")
    b = plain.train_step(x, y, "mse", "sgd")
    assert a == b
    ro.fit(_readonly(x), _readonly(y), loss="mse", optimizer="sgd", epochs=1,
           batch_size=4, seed=0, progress=False)
    plain.fit(x, y, loss="mse", optimizer="sgd", epochs=1, batch_size=4, seed=0,
              progress=False)
    for p, q in zip(ro.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_cython_entry_points_take_const_inputs(dtype, rng):
    from fastnn.kernels import _dense

    x, w, b = rand(rng, (4, 3), dtype), rand(rng, (3, 2), dtype), rand(rng, (2,), dtype)
    z = np.full((4, 2), np.nan, dtype)
    _dense.dense_forward(_readonly(x), _readonly(w), _readonly(b), z)
    np.testing.assert_allclose(z, x @ w + b, rtol=1e-5)
    c = np.full((4, 2), np.nan, dtype)
    _dense.gemm(_readonly(x), _readonly(w), c)
    np.testing.assert_allclose(c, x @ w, rtol=1e-5)
