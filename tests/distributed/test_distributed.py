"""Data-parallel training over MPI, run for real: pytest launches ``mpiexec -n 1/2/3``
(3 oversubscribes this project's two cores) on tests/distributed/mpi_worker.py, in its
own process group with a timeout, and kills the group on timeout: no test can hang.

The contract: "allreduce" gives the weights of one process training on the global
batch to 1e-12 relative in float64 (every optimizer, uneven shards, a rank with no
rows in the last batch, micro-batches inside the shards, clipping, validation) and the
same bits on every rank; "ordered" gives the same bits for any number of processes.
Plus: the preflight's clear error on every rank, an exception on one rank ends the
job (``python -m mpi4py``), save on rank 0 and load anywhere."""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="the distributed tests need mpi4py and an MPI "
                    "(pip install mpi4py mpich: the dev extra)")

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "mpi_worker.py")
TIMEOUT = 120        # seconds per launch: a hang fails the test, never CI


def _mpiexec():
    bindir = os.path.dirname(sys.executable)
    for name in ("mpiexec.gforker", "mpiexec"):
        path = os.path.join(bindir, name)
        if os.path.exists(path):
            return path
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no mpiexec (pip install mpich)")


def _run(args, nprocs=None, expect_ok=True):
    """Run the worker (under mpiexec with ``nprocs``, else as one plain process) in a
    new process group; on timeout kill the whole group and fail."""
    cmd = [sys.executable, WORKER, *args]
    if nprocs is not None:
        cmd = [_mpiexec(), "-n", str(nprocs), sys.executable, "-m", "mpi4py", WORKER,
               *args]
    # shared memory only: no TCP socket is opened (UCX, when the MPI uses it)
    env = dict(os.environ, UCX_TLS="self,sm", FASTNN_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{' '.join(args)} with {nprocs} processes did not finish in "
                    f"{TIMEOUT} s (killed)")
    if expect_ok:
        assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err[-3000:]}"
    return proc.returncode, out, err


def _load(out, name, rank):
    with np.load(os.path.join(out, f"{name}-rank{rank}.npz")) as f:
        meta = json.loads(str(f["meta"]))
        arrays = {k: f[k] for k in f.files if k != "meta"}
    return arrays, meta


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """numba's cache filled once, in one process, before any multi-process start."""
    _run(["warm", str(tmp_path_factory.mktemp("warm"))])


CASES = [  # (optimizer, dtype, processes)
    ("adam", "float64", 2), ("adam", "float64", 3), ("sgd", "float64", 3),
    ("rmsprop", "float64", 2), ("adagrad", "float64", 3), ("adadelta", "float64", 2),
    ("adamw", "float64", 3), ("adam", "float32", 2), ("sgd", "float32", 3),
]


@pytest.mark.parametrize("opt,dtype,nprocs", CASES)
def test_allreduce_equals_one_process_on_the_global_batch(opt, dtype, nprocs, warm,
                                                           tmp_path):
    options = {"opt": opt, "dtype": dtype}
    _run(["single", str(tmp_path), json.dumps(options)])
    _run(["fit", str(tmp_path), json.dumps(options)], nprocs)
    ref, ref_meta = _load(tmp_path, "single", 0)
    ranks = [_load(tmp_path, "fit", r) for r in range(nprocs)]
    rtol = 1e-12 if dtype == "float64" else 2e-5
    for arrays, meta in ranks:
        for k in ref:
            np.testing.assert_allclose(arrays[k], ref[k], rtol=rtol, atol=rtol * 1e-3,
                                       err_msg=k)
        for name, values in ref_meta["history"].items():
            np.testing.assert_allclose(meta["history"][name], values, rtol=rtol,
                                       err_msg=name)
    for arrays, meta in ranks[1:]:               # the same bits on every rank
        for k in ranks[0][0]:
            np.testing.assert_array_equal(arrays[k], ranks[0][0][k], err_msg=k)
        assert meta["history"] == ranks[0][1]["history"]


def test_ordered_is_bitwise_identical_for_any_number_of_processes(warm, tmp_path):
    weights = {}
    for nprocs in (1, 2, 3):
        options = {"opt": "adam", "reduction": "ordered", "name": f"ordered{nprocs}"}
        _run(["fit", str(tmp_path), json.dumps(options)], nprocs)
        for r in range(nprocs):
            weights[(nprocs, r)] = _load(tmp_path, f"ordered{nprocs}", r)
    first, first_meta = weights[(1, 0)]
    for (nprocs, r), (arrays, meta) in weights.items():
        for k in first:
            np.testing.assert_array_equal(arrays[k], first[k],
                                          err_msg=f"{nprocs} processes, rank {r}: {k}")
        assert meta["history"] == first_meta["history"]
    # and it is the global batch's training, to rounding
    _run(["single", str(tmp_path), json.dumps({"opt": "adam"})])
    ref, _ = _load(tmp_path, "single", 0)
    for k in ref:
        np.testing.assert_allclose(first[k], ref[k], rtol=1e-12, atol=1e-15)


def test_preflight_mismatch_raises_the_same_error_on_every_rank(warm, tmp_path):
    _run(["mismatch", str(tmp_path), "{}"], 2)
    errors = [_load(tmp_path, "mismatch", r)[1]["error"] for r in range(2)]
    assert errors[0] == errors[1]
    assert "batch_size (rank 0: 13, rank 1: 8)" in errors[0]


def test_an_exception_on_one_rank_ends_the_job(warm, tmp_path):
    code, out, err = _run(["raise", str(tmp_path), "{}"], 2, expect_ok=False)
    assert code != 0
    assert "rank 1 failed on purpose" in err


def test_broadcast_parameters_gives_every_rank_rank_zeros_state(warm, tmp_path):
    _run(["bcast", str(tmp_path), "{}"], 3)
    ranks = [_load(tmp_path, "bcast", r)[0] for r in range(3)]
    assert {"s_exp_avg", "s_exp_avg_sq", "step_count"} <= set(ranks[0])
    for arrays in ranks[1:]:
        for k in ranks[0]:
            np.testing.assert_array_equal(arrays[k], ranks[0][k], err_msg=k)


def test_save_on_rank_zero_and_load_anywhere(warm, tmp_path):
    _run(["save", str(tmp_path), "{}"], 2)
    for r in range(2):
        assert _load(tmp_path, "save", r)[1]["error"] is None


def test_shards_and_global_batches_without_mpi_processes():
    """The arithmetic (one process, the real communicator): shards cut like
    numpy.array_split, every row once, none for a rank past a short batch's end."""
    from fastnn.distributed import _shard_bounds

    for rows in (0, 1, 2, 5, 16, 17):
        for parts in (1, 2, 3, 5):
            bounds = [_shard_bounds(rows, parts, r) for r in range(parts)]
            want = np.array_split(np.arange(rows), parts)
            assert [hi - lo for lo, hi in bounds] == [len(w) for w in want]
            assert bounds[0][0] == 0 and bounds[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_distributed_argument_is_checked():
    import fastnn as fn
    from fastnn import distributed as dist

    m = fn.Sequential(fn.Dense(3, 2), dtype=np.float64, seed=0)
    X, y = np.ones((4, 3)), np.zeros(4, int)
    with pytest.raises(TypeError, match="distributed must be a fastnn.distributed"):
        m.fit(X, y, loss="cross_entropy", optimizer="sgd", distributed=object())
    other = fn.Sequential(fn.Dense(3, 2), dtype=np.float64, seed=0)
    with pytest.raises(ValueError, match="DataParallel of this model"):
        m.fit(X, y, loss="cross_entropy", optimizer="sgd",
              distributed=dist.DataParallel(other))
    with pytest.raises(ValueError, match="reduction must be one of"):
        dist.DataParallel(m, reduction="tree")


def test_cli_train_distributed_prints_once_and_matches_one_process(warm):
    args = ["-m", "fastnn", "train", "--epochs", "2", "--quiet", "--batch-size", "64"]
    env = dict(os.environ, UCX_TLS="self,sm", FASTNN_NUM_THREADS="1")
    one = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                         env=env, timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr
    proc = subprocess.Popen([_mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py",
                             *args, "--distributed"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("fastnn train --distributed did not finish (killed)")
    assert proc.returncode == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("test accuracy")]
    assert len(lines) == 1, out                       # rank 0 alone prints
    want = [ln for ln in one.stdout.splitlines() if ln.startswith("test accuracy")][0]
    assert lines[0].split("  (")[0] == want.split("  (")[0]
    assert "2 processes (allreduce)" in out


def test_a_clear_import_error_without_mpi4py(monkeypatch):
    from fastnn import distributed as dist

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"pip install 'fastnn\[mpi\]' mpich"):
        dist._mpi()


@pytest.mark.skipif("cuda" not in __import__("fastnn").available_backends(),
                    reason="no cuda backend here (the [cuda] extra, or a GPU)")
def test_cuda_backend_allreduce_equals_one_process(warm, tmp_path):
    """The cuda backend's gradients staged through the host buffer (under the CUDA
    simulator when there is no GPU: one epoch, tiny)."""
    options = {"opt": "adam", "backend": "cuda", "epochs": 1}
    _run(["single", str(tmp_path), json.dumps(dict(options, name="one"))])
    _run(["fit", str(tmp_path), json.dumps(dict(options, name="dp"))], 2)
    ref, _ = _load(tmp_path, "one", 0)
    for r in range(2):
        arrays, _ = _load(tmp_path, "dp", r)
        for k in ref:
            np.testing.assert_allclose(arrays[k], ref[k], rtol=1e-12, atol=1e-15,
                                       err_msg=k)
