"""Shared fixtures of the benchmark suite (``bench/bench_*.py``).

The suite runs two ways:

- as tests: ``pytest bench --benchmark-disable -q`` calls every case once and checks
  its result against a float64 NumPy reference;
- as benchmarks: ``pytest bench --benchmark-only --benchmark-columns=median,iqr,rounds
  --benchmark-sort=name``; one table (``benchmark.group``) per case compares the
  backends, and ``extra_info`` carries the shape, dtype, threads, the work (flops or
  bytes) and the floor that work implies on this kind of machine.

PyTorch is an optional peer, never a dependency: only the torch cases ask for the
``torch_peer`` fixture, which skips them when torch is not importable.
"""
import os

import numpy as np
import pytest

import fastnn as fn
from fastnn import threads as fn_threads

# Floors in extra_info["floor_us_*"]: nominal figures for this 2-core machine (AVX-512
# OpenBLAS kernels can beat the GEMM one; the Haswell kernels that
# OPENBLAS_CORETYPE=Haswell selects reach about 2/3 of it).
GEMM_FLOPS_PER_S = 300e9      # float32 GEMM, 2 threads
DRAM_BYTES_PER_S = 23e9       # streaming from main memory
CACHE_BYTES_PER_S = 76e9      # L2/L3-resident streaming


def _warm_numba():
    """Run one large fastnn numba kernel first.  Where fastnn runs it in parallel this
    starts numba's thread pool (whose start-up may reset OpenMP thread counts) before
    torch's pool is sized; by default (numba kernels serial) it is only a warm-up."""
    be = fn.get_backend("cpu")
    rng = np.random.default_rng(12345)
    p = rng.standard_normal(1 << 16).astype(np.float32)
    g = rng.standard_normal(1 << 16).astype(np.float32)
    be.optimizer_step("sgd", p, g, (), (np.float32(1), np.float32(0), np.float32(0)))


@pytest.fixture(scope="session")
def nthreads():
    """fastnn's thread count (BLAS and numba pools), after fastnn's first numba call."""
    n = fn.get_num_threads()
    _warm_numba()
    return n


@pytest.fixture
def torch_peer(nthreads):
    """The torch module with its intra-op pool sized like fastnn's; skips when absent.
    Sized after fastnn's first numba call (see ``_warm_numba``)."""
    try:
        torch = pytest.importorskip("torch")
    except ImportError as exc:   # installed but broken: pytest >= 8.2 re-raises these
        pytest.skip(f"torch is installed but not importable: {exc}")
    torch.set_num_threads(nthreads)
    assert torch.get_num_threads() == nthreads
    return torch


def _blas_kernels():
    """OpenBLAS kernel architecture(s) in use, e.g. 'Haswell' or 'SkylakeX'."""
    from threadpoolctl import threadpool_info
    return sorted({str(p.get("architecture")) for p in threadpool_info()
                   if p.get("user_api") == "blas"})


@pytest.fixture
def describe(nthreads):
    """describe(benchmark, group, backend, shape, flops=..., bytes=..., floor_us=...):
    set the table group and the extra_info of one case."""
    def _describe(benchmark, group, backend, shape, dtype=np.float32, flops=None,
                  nbytes=None, floor_us=None, **more):
        benchmark.group = group
        info = {"backend": backend, "shape": shape, "dtype": np.dtype(dtype).name,
                "threads": nthreads,
                # None: fastnn's numba kernels run serially (its default since c713cac)
                "fastnn_parallel_min": getattr(fn_threads, "PARALLEL_MIN", None),
                "blas_kernels": _blas_kernels(),
                "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
        if flops is not None:
            info["flops"] = int(flops)
            info["floor_us_gemm_300GFLOPs"] = round(flops / GEMM_FLOPS_PER_S * 1e6, 1)
        if nbytes is not None:
            info["bytes"] = int(nbytes)
            info["floor_us_dram_23GBs"] = round(nbytes / DRAM_BYTES_PER_S * 1e6, 1)
            info["floor_us_cache_76GBs"] = round(nbytes / CACHE_BYTES_PER_S * 1e6, 1)
        if floor_us is not None:
            info["floor_us"] = floor_us
        info.update(more)
        benchmark.extra_info.update(info)
    return _describe


def assert_close(got, ref, rel, what):
    """max |got - ref| <= rel * max |ref| (a scale-aware tolerance for float32 results
    against a float64 reference); also every value finite."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    err = float(np.max(np.abs(got - ref)))
    assert err <= rel * scale, f"{what}: max error {err:.3g} > {rel:g} * {scale:.3g}"


@pytest.fixture
def close():
    return assert_close
