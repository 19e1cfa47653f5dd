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


def test_tiling_choice_by_the_cost_model(monkeypatch):
    """pick_tiling's arithmetic (nothing runs): the largest tile where there are
    blocks enough for every multiprocessor several times over; smaller tiles for
    small outputs, which the large ones would leave on a few multiprocessors; and
    each choice is the cheapest by the model's own cost."""
    from fastnn.kernels import cuda as K

    monkeypatch.setattr(K, "SIMULATED", False)
    sms = 132                                            # an H100 / H200
    assert K.pick_tiling(4096, 4096, sms) == "t128"
    # float64's 128 x 128 tile leaves room for one block (8 warps) per multiprocessor:
    # the 64 x 64 tile's three keep it busier
    assert K.pick_tiling(4096, 4096, sms, np.float64) == "t64"
    assert K.pick_tiling(257, 10, sms) == "t32"          # a weight gradient: 9 blocks
    assert K.pick_tiling(1024, 512, sms) in ("t32", "t64")
    for m, n in ((1, 1), (33, 7), (1024, 512), (60000, 128), (10**8, 10)):
        costs = {}
        for name in K.LARGEST_FIRST:
            tx, ty, rm, rn, _ = K.TILINGS[name]
            share, resident = K.TILING_CODE[name]
            per_sm = -(-(-(-m // (ty * rm)) * -(-n // (tx * rn))) // sms)
            warps = min(per_sm, resident[0]) * tx * ty // 32
            costs[name] = per_sm * ty * rm * tx * rn / share / min(1, warps / 16)
        assert costs[K.pick_tiling(m, n, sms)] == min(costs.values())


@pytest.mark.parametrize("tiling", _tilings())
def test_every_tiling(tiling, cu, rng, monkeypatch):
    """Each tiling (the simulator otherwise only runs its own) on a case with partial
    tiles, K not a multiple of the K step, and the bias-gradient row: forward with
    bias + activation, [dW; db] += s [X, 1]^T dZ, and dZ W^T * f'."""
    from fastnn.kernels import cuda as K

    monkeypatch.setattr(K, "pick_tiling", lambda m, n, sms, dtype: tiling)
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



@pytest.mark.parametrize("nt, blocks", [(256, 2), (8, 19)])
def test_reductions_with_real_blocks_and_many_of_them(nt, blocks, cu, ref, rng):
    """The reduction paths the backend's small simulator grids (BLOCK = 8, at most
    MAX_BLOCKS = 2) never take: the real 256-thread tree, and a grid of more blocks
    than a block has threads, whose last block reads several totals per thread.
    Sums, maxima and NaN counts against NumPy, the same bits twice, and the counter
    back at 0 after each launch (it wraps by itself)."""
    from fastnn.kernels import cuda as K

    n = nt * blocks * 2 + 5                     # every thread strides twice, some thrice
    x = rand(rng, n, np.float64)
    x[[3, n - 1]] = np.nan
    finite = np.abs(x[~np.isnan(x)])
    cuda = cu.cuda
    xd, parts = cuda.to_device(x), cuda.device_array(2 * blocks)
    done = cuda.to_device(np.zeros(1, np.uint32))
    for kind, code, want in (("sum", 2.0, (finite ** 2).sum()),
                             ("max", 0.0, finite.max())):
        seen = set()
        for _ in range(2):
            sums = cuda.to_device(np.zeros(2))
            K.norm(kind, np.float64, nt)[blocks, nt](xd, code, sums, parts, done)
            total, nans = sums.copy_to_host()
            assert done.copy_to_host()[0] == 0
            assert nans == 2
            seen.add(total)
        assert len(seen) == 1
        assert seen.pop() == pytest.approx(want, rel=1e-13)
    # a loss with its gradient over the same grid (Huber: the elementwise form)
    out, t = rand(rng, n, np.float64), rand(rng, n, np.float64)
    grad, sums = cuda.to_device(poisoned(n, np.float64)), cuda.to_device(np.zeros(2))
    F = np.float64
    K.loss("huber", np.float64, nt)[blocks, nt](
        cuda.to_device(out), cuda.to_device(t), grad, F(0.7), F(1.0 / n), sums, parts,
        done, 1.0, F(0), F(0), True)
    want = np.empty(n)
    value = ref.loss("huber", out, t, want, 0.7, 1.0 / n)
    close(grad.copy_to_host(), want, np.float64, 1)
    total, hits = sums.copy_to_host()
    assert total == pytest.approx(value, rel=1e-13)
    assert hits == ((out > 0) == (t > 0)).sum()
    assert done.copy_to_host()[0] == 0


def test_each_host_thread_reduces_into_its_own_scratch(cu, rng, monkeypatch):
    """Two threads' loss values on one backend, their steps interleaved as a host
    thread switch can interleave them (each launches, then the other zeroes and
    launches before the first reads): each reads its own value.  With one scratch
    per backend, as before, the first read the second's total (or their sum)."""
    import threading

    lock, turn = threading.Lock(), threading.Barrier(2)
    real = cu._launch

    def launch(*args):
        with lock:                          # (the simulator runs one launch at a time)
            real(*args)
        turn.wait(timeout=60)               # both launched before either reads

    monkeypatch.setattr(cu, "_launch", launch)
    data = [tuple(rand(rng, (4, 3), np.float32) * s for _ in range(2)) for s in (1, 10)]
    got = [None, None]

    def work(i):
        out, t = data[i]
        grad = cu.from_numpy(poisoned(out.shape, np.float32))
        got[i] = cu.loss("mse", cu.from_numpy(out), cu.from_numpy(t), grad, 0.0,
                         1.0 / out.size)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    for (out, t), value in zip(data, got):
        assert value == pytest.approx(((out.astype(np.float64) - t) ** 2).mean(),
                                      rel=1e-6)


# -- a real GPU's compiler -------------------------------------------------------------
@pytest.mark.exhaustive
def test_kernels_compile_for_a_real_gpu():
    """Every kernel through NVVM to PTX for sm_90, outside the simulator (which
    accepts code CUDA rejects: e.g. a shared-array shape that is not a constant);
    with the cuda-tools extra, also through ptxas, within the register and local
    memory budgets, and every GEMM's inner loop above its FMA-share floor (see
    tests/cuda_ptx.py)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([TESTS, env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, os.path.join(TESTS, "cuda_ptx.py")], env=env,
                         capture_output=True, text=True, timeout=900)
    if run.returncode == 3:
        pytest.skip(run.stdout.strip() or "NVVM not installed")
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
