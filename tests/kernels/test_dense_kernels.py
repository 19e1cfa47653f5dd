"""The dense layers' GEMMs (the cpu's Cython + BLAS, the cuda tiled GEMM) against the
NumPy reference in float64: odd sizes, both float types, outputs NaN-poisoned."""
import numpy as np
import pytest

from kernel_cases import DTYPES, close, poisoned, rand, small_enough


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,fin,fout", [(1, 1, 1), (7, 33, 1), (33, 7, 1025),
                                             (1025, 7, 33), (5, 1025, 3)])
def test_dense(batch, fin, fout, dtype, rng, ref, kern):
    small_enough(kern.name, batch, fin, fout)
    check_dense(batch, fin, fout, dtype, rng, ref, kern)


def check_dense(batch, fin, fout, dtype, rng, ref, kern):
    x, w, b = (rand(rng, s, dtype) for s in ((batch, fin), (fin, fout), (fout,)))
    z = poisoned((batch, fout), dtype)
    kern.dense_forward(x, w, b, z)
    wz = np.empty((batch, fout))
    ref.dense_forward(*(v.astype(np.float64) for v in (x, w, b)), wz)
    close(z, wz, dtype, scale=fin)

    gz = rand(rng, (batch, fout), dtype)
    gw0 = rand(rng, (fin, fout), dtype)
    gw, gx = gw0.copy(), poisoned((batch, fin), dtype)
    kern.dense_backward(x, w, gz, gw, gx, 0.5)
    wgw, wgx = gw0.astype(np.float64), np.empty((batch, fin))
    ref.dense_backward(x.astype(np.float64), w.astype(np.float64), gz.astype(np.float64),
                       wgw, wgx, 0.5)
    close(gw, wgw, dtype, scale=batch)   # beta = 1: added to what was there
    close(gx, wgx, dtype, scale=fout)
    # first layer: no input gradient; the weight gradient is added to once more
    kern.dense_backward(x, w, gz, gw, None, 0.5)
    ref.dense_backward(x.astype(np.float64), w.astype(np.float64), gz.astype(np.float64),
                       wgw, None, 0.5)
    close(gw, wgw, dtype, scale=2 * batch)
