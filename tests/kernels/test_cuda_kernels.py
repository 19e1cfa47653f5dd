"""The cuda kernels themselves: every GEMM tiling, the deterministic reductions, a
check of each kernel family against the NumPy reference (the full sweeps over names,
sizes and float types are the shared kernel suites, whose cuda cases run in the
exhaustive run under the simulator), and every kernel compiled to PTX for a real GPU.
Without a GPU these run under the Numba CUDA simulator, at tiny sizes."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fn
from fastnn.kernels import specs
from kernel_cases import BACKENDS, CUDA_SIMULATED, backend_on_host, close, poisoned, rand
from test_activation_kernels import check_activation_backward, check_activation_forward
from test_dense_kernels import check_dense
from test_loss_kernels import check_loss_kernel
from test_optimizer_kernels import check_optimizer_step, check_vector_norm

pytestmark = pytest.mark.skipif(
    "cuda" not in BACKENDS,
    reason="cuda backend unusable here: "
           f"{fn.backends.unavailable_reasons().get('cuda', '')}")

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def cu():
    return fn.get_backend("cuda")


@pytest.fixture
def cu_host():
    return backend_on_host("cuda")


# -- each kernel family once (the sweeps: tests/kernels/test_*_kernels.py) -----------
ACTS = ("relu", "tanh", "softmax")


@pytest.mark.parametrize("name", ACTS)
def test_activation_kernels(name, rng, ref, cu_host):
    check_activation_forward(name, (7, 33), np.float32, rng, ref, cu_host)
    check_activation_backward(name, (33, 7), np.float64, rng, ref, cu_host)


def test_dense_kernels(rng, ref, cu_host):
    check_dense(7, 33, 5, np.float32, rng, ref, cu_host)


@pytest.mark.parametrize("name", [next(k.name for k in specs.LOSS_KERNELS.values()
                                       if k.form == form)
                                  for form in ("elementwise", "softmax_labels",
                                               "softmax_probs")])
def test_loss_kernels(name, rng, ref, cu_host):
    check_loss_kernel(name, (7, 33), np.float32, rng, ref, cu_host)


@pytest.mark.parametrize("rule", ["sgd", "adam_amsgrad", "rmsprop_centered_momentum"])
def test_optimizer_kernels(rule, rng, ref, cu_host):
    check_optimizer_step(rule, 33, np.float32, rng, ref, cu_host)


@pytest.mark.parametrize("order", [2.0, np.inf])
def test_norm_kernels(order, rng, ref, cu_host):
    check_vector_norm(order, 33, np.float64, rng, ref, cu_host)


# -- GEMM -----------------------------------------------------------------------------
def _tilings():
    from fastnn.kernels import cuda as K

    return list(K.TILINGS)


@pytest.mark.parametrize("tiling", _tilings())
@pytest.mark.parametrize("m", [1, 65_536 * 8, 8_388_481, 10**8])
def test_gemm_grid_covers_a_huge_batch_within_cuda_limits(tiling, m):
    """Issue 18: the launch arithmetic alone (nothing runs).  Rows go on the grid's x
    (2^31 - 1 blocks), so a forward over 10^8 rows launches; on y (65,535), as
    before, anything past 65,535 row tiles (8,388,480 rows at the 128-row tile)
    could not."""
    from fastnn.kernels import cuda as K

    tx, ty, rm, rn, _ = K.TILINGS[tiling]
    for n in (1, 10, 4097):
        (gx, gy), threads = K.gemm_grid(m, n, tiling)
        assert threads == (tx, ty)
        assert gx <= K.GRID_X_MAX and gy <= K.GRID_Y_MAX
        assert (gx - 1) * ty * rm < m <= gx * ty * rm          # every row, no spare tile
        assert (gy - 1) * tx * rn < n <= gy * tx * rn
    if tiling == "t128" and m > 8_388_480:
        assert -(-m // (ty * rm)) > K.GRID_Y_MAX      # the old mapping could not launch
    with pytest.raises(ValueError, match="CUDA allows"):
        K.gemm_grid(m, (K.GRID_Y_MAX + 1) * tx * rn, tiling)


@pytest.mark.parametrize("tiling", _tilings())
def test_every_tiling(tiling, cu, rng, monkeypatch):
    """Each tiling (the simulator otherwise only runs its own) on a case with partial
    tiles, K not a multiple of the K step, and the bias-gradient row: forward with
    bias + activation, [dW; db] += s [X, 1]^T dZ, and dZ W^T * f'."""
    from fastnn.kernels import cuda as K

    monkeypatch.setattr(K, "pick_tiling", lambda m, n, sms: tiling)
    dtype = np.float64
    batch, fin, fout = (5, 11, 7) if CUDA_SIMULATED else (301, 133, 259)
    x, w, b = (rand(rng, s, dtype) for s in ((batch, fin), (fin, fout), (fout,)))
    gz, zb = rand(rng, (batch, fout), dtype), rand(rng, (batch, fin), dtype)
    wb0 = rand(rng, (fin + 1, fout), dtype)
    d = {k: cu.from_numpy(v) for k, v in dict(x=x, w=w, b=b, gz=gz, zb=zb, wb=wb0).items()}
    z, a, gx = (cu.from_numpy(poisoned(s, dtype)) for s in
                ((batch, fout), (batch, fout), (batch, fin)))
    ab = cu.from_numpy(np.tanh(zb))

    cu._gemm("forward", "tanh", d["x"], d["w"], 1, K.GemmForward(a, z, d["b"]))
    close(cu.to_numpy(z), x @ w + b, dtype, fin)
    close(cu.to_numpy(a), np.tanh(x @ w + b), dtype, fin)
    cu._gemm("accumulate", "linear", d["x"], d["gz"], 0.5, K.GemmAccumulate(d["wb"]))
    xa = np.hstack([x, np.ones((batch, 1))])
    close(cu.to_numpy(d["wb"]), wb0 + 0.5 * xa.T @ gz, dtype, batch)
    cu._gemm("delta", "tanh", d["gz"], d["w"], 1, K.GemmDelta(gx, d["zb"], ab))
    close(cu.to_numpy(gx), (gz @ w.T) * (1 - np.tanh(zb) ** 2), dtype, fout)


def test_reductions_are_the_same_on_every_run(cu, rng):
    """Loss values and gradient norms combine the blocks' totals in block order (the
    last block to finish does it), not in the order atomics land: repeated runs agree
    to the bit, and every launch finds the blocks-done counter reset."""
    n = 33 if CUDA_SIMULATED else 3_000_001           # several blocks either way
    x = cu.from_numpy(rand(rng, n, np.float32))
    norms = {order: {cu.vector_norm(x, order) for _ in range(3)}
             for order in (2.0, 3.5, np.inf)}
    assert all(len(v) == 1 for v in norms.values()), norms
    out = rand(rng, (n // 3, 3), np.float32)
    t = rand(rng, (n // 3, 3), np.float32)
    grad = cu.from_numpy(poisoned(out.shape, np.float32))
    o, td = cu.from_numpy(out), cu.from_numpy(t)
    values = {cu.loss("huber", o, td, grad, 0.7, 1.0 / out.size) for _ in range(3)}
    assert len(values) == 1
    want = np.where(np.abs(out - t) < 0.7, 0.5 * (out - t) ** 2,
                    0.7 * (np.abs(out.astype(np.float64) - t) - 0.35)).mean()
    assert values.pop() == pytest.approx(want, rel=1e-5)



# -- a real GPU's compiler -------------------------------------------------------------
@pytest.mark.exhaustive
def test_kernels_compile_for_a_real_gpu():
    """Every kernel through NVVM to PTX for sm_90, outside the simulator (which
    accepts code CUDA rejects: e.g. a shared-array shape that is not a constant)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([TESTS, env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, os.path.join(TESTS, "cuda_ptx.py")], env=env,
                         capture_output=True, text=True, timeout=900)
    if run.returncode == 3:
        pytest.skip(run.stdout.strip() or "NVVM not installed")
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
