"""Shared fixtures of the benchmark suites (``bench/bench_*.py``, one per kernel family:
dense, activations, losses, optim, accumulation, train, sklearn).

The suites run three ways:

- as tests: ``pytest bench --benchmark-disable -q`` calls every case once and checks
  its result against a float64 NumPy reference;
- as benchmarks: ``pytest bench --benchmark-only --benchmark-columns=median,iqr,rounds
  --benchmark-sort=name``; one table (``benchmark.group``) per case and size compares
  the backends and peers, and ``extra_info`` carries the family, shape, dtype,
  threads, the work (flops or bytes) and the floor that work implies on this kind of
  machine;
- through ``python -m bench`` (or ``fastnn bench``), which runs them with
  ``--benchmark-json`` and writes ``bench/results/cpu.md`` and ``cpu.png`` (and, where
  the cuda backend ran on a real GPU, ``<gpu-name>.md`` and ``.png``).

PyTorch, CuPy and scikit-learn are optional peers, never dependencies: only their
cases ask for the ``torch_peer`` / ``torch_cuda_peer`` / ``cupy_peer`` /
``sklearn_peer`` fixtures, which skip them (with the reason) where the package, or for
the GPU peers a CUDA GPU, is missing.  Backends left out of the run (not usable here,
or the CUDA simulator) are named in the run's header and its JSON.

How busy the machine was: every timed case records in ``extra_info`` the CPU time
other processes used while it ran (``other_load``, in cores, from ``/proc/stat`` minus
this process's own CPU time: see ``_busy.py``; None where there is no ``/proc/stat``),
the window it was measured over and that figure's resolution, and ``contended`` (True
when ``other_load`` exceeds ``_busy.CONTENDED_CORES`` by more than the resolution).
The window is the whole timed call of the case (pytest-benchmark's calibration,
warm-up and every round), not each round: /proc/stat counts 10 ms ticks, coarser than
most rounds.  The report flags
contended cases and judges no target that rests on one.
"""
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest

import fastnn as fn
from fastnn import threads as fn_threads
from fastnn.kernels.specs import SGDScalars

import _busy
import report
from _shared import BACKENDS, LEFT_OUT

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
    one, zero = np.float32(1), np.float32(0)
    be.optimizer_step("sgd", p, g, (), SGDScalars(sign=one, l2=zero, lr=zero))


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


@pytest.fixture
def torch_cuda_peer(torch_peer):
    """The torch module for the "torch_cuda" peer; skips without a CUDA GPU for it."""
    if not torch_peer.cuda.is_available():
        pytest.skip(f"torch {torch_peer.__version__} has no usable CUDA GPU "
                    "(torch.cuda.is_available() is False)")
    return torch_peer


@pytest.fixture
def cupy_peer():
    """The cupy module for the "cupy" peer (cuBLAS); skips when CuPy is not importable
    or sees no CUDA GPU."""
    try:
        cupy = pytest.importorskip("cupy")
    except ImportError as exc:   # installed but broken: pytest >= 8.2 re-raises these
        pytest.skip(f"cupy is installed but not importable: {exc}")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:     # CUDARuntimeError: no driver, no device
        pytest.skip(f"cupy sees no CUDA GPU: {exc}")
    if count < 1:
        pytest.skip("cupy sees no CUDA GPU (getDeviceCount() == 0)")
    return cupy


@pytest.fixture
def sklearn_peer():
    """scikit-learn's MLPClassifier and ConvergenceWarning; skips when scikit-learn is
    not importable."""
    try:
        nn = pytest.importorskip("sklearn.neural_network")
        from sklearn.exceptions import ConvergenceWarning
    except ImportError as exc:   # installed but broken: pytest >= 8.2 re-raises these
        pytest.skip(f"scikit-learn is installed but not importable: {exc}")
    return nn.MLPClassifier, ConvergenceWarning


# Each BLAS library (implementation, version, core type, threads, file): fastnn's own
# description, as `fastnn info` shows it.
blas_libraries = fn_threads.blas_libraries


def _blas_kernels():
    """OpenBLAS kernel architecture(s) in use, e.g. 'Haswell' or 'SkylakeX'."""
    return sorted({str(lib["architecture"]) for lib in blas_libraries()})


def contender_of(item):
    """The backend or peer a case times ("cpu", "torch", "gemms", ...): its
    ``backend`` (or, in bench_optim.py, ``impl``) parameter; None without one."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    for key in ("backend", "impl"):
        if key in params:
            return str(params[key])
    return None


def pytest_addoption(parser):
    parser.addoption("--fastnn-contender", action="append", default=[], metavar="NAME",
                     help="only the cases timing this backend or peer (repeatable); "
                     "`python -m bench --alternate N` runs one process per contender")
    parser.addoption("--fastnn-contenders-file", metavar="PATH", default=None,
                     help="write the contenders of the selected cases to PATH, one a "
                     "line (with --collect-only: what --alternate runs)")


def pytest_collection_finish(session):
    path = session.config.getoption("fastnn_contenders_file", default=None)
    if path:
        names = dict.fromkeys(c for c in map(contender_of, session.items) if c)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("".join(f"{c}\n" for c in names))


def pytest_collection_modifyitems(config, items):
    wanted = set(config.getoption("fastnn_contender", default=None) or ())
    if not wanted:
        return
    keep = [it for it in items if contender_of(it) in wanted]
    dropped = [it for it in items if contender_of(it) not in wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(autouse=True)
def _record_other_load(request):
    """Around each timed benchmark call (calibration, warm-up and all its rounds: one
    window per case), the CPU time other processes used, into ``extra_info``."""
    if "benchmark" not in request.fixturenames:
        yield
        return
    benchmark = request.getfixturevalue("benchmark")
    if not getattr(benchmark, "enabled", False):     # --benchmark-disable: not timed
        yield
        return

    def watched(raw):
        def run(*args, **kwargs):
            with _busy.Busy() as busy:
                result = raw(*args, **kwargs)
            info = busy.info()
            info["contended"] = _busy.is_contended(busy.other_load, busy.resolution)
            benchmark.extra_info.update(info)
            return result
        return run

    for name in ("_raw", "_raw_pedantic"):           # benchmark(...) / .pedantic(...)
        if hasattr(benchmark, name):
            setattr(benchmark, name, watched(getattr(benchmark, name)))
    yield


def _family(module_name):
    """bench_dense -> dense: the family a suite's cases are reported under."""
    name = module_name.rsplit(".", 1)[-1]
    return name[len("bench_"):] if name.startswith("bench_") else name


@pytest.fixture
def describe(nthreads, request):
    """describe(benchmark, group, backend, shape, flops=..., nbytes=..., floor_us=...):
    set the table group and the extra_info of one case (its family is the suite's
    name: bench_dense.py -> "dense")."""
    family = _family(request.module.__name__)

    def _describe(benchmark, group, backend, shape, dtype=np.float32, flops=None,
                  nbytes=None, floor_us=None, **more):
        benchmark.group = group
        info = {"family": family, "backend": backend, "shape": shape,
                "dtype": np.dtype(dtype).name,
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


# ---- what the JSON of a run records about the machine ---------------------------------
def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fastnn_machine_info():
    """Versions, CPU, threads and BLAS of this process (without importing torch or
    scikit-learn: their versions come from the installed metadata)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    try:
        blas = _blas_kernels()
    except Exception as exc:          # threadpoolctl could not inspect the libraries
        blas = [f"unknown ({exc})"]
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": cpus,
        "threads": fn.get_num_threads(),
        "fastnn_parallel_min": getattr(fn_threads, "PARALLEL_MIN", None),
        "blas_kernels": blas,
        "blas_libraries": _ask(blas_libraries),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "contended_above_cores": _busy.CONTENDED_CORES,
        "python": sys.version.split()[0],
        "versions": {"fastnn": fn.__version__, "numpy": np.__version__,
                     "numba": _version("numba"), "scipy": _version("scipy"),
                     "torch": _version("torch"), "scikit-learn": _version("scikit-learn"),
                     "pytest-benchmark": _version("pytest-benchmark")},
    }


def _nvidia_driver():
    """The NVIDIA driver's version (e.g. "550.54.15"): from nvidia-smi, else from the
    kernel module's /proc file; None where neither is there."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            done = subprocess.run([smi, "--query-gpu=driver_version",
                                   "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=20)
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.split()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        with open("/proc/driver/nvidia/version") as fh:
            words = fh.readline().split()   # "NVRM version: NVIDIA UNIX ... 550.54.15 ..."
    except OSError:
        return None
    return next((w for w in words if w[:1].isdigit() and w.count(".") >= 1), None)


def _ask(get):
    """``get()``, or why it failed: a query the driver, runtime or simulator lacks must
    not lose a run's results (this runs as they are saved)."""
    try:
        return get()
    except Exception as exc:
        return f"unknown ({type(exc).__name__}: {exc})"


def _cuda_version(get):
    """A CUDA (major, minor) version as "12.4", or why it could not be read."""
    return _ask(lambda: ".".join(str(v) for v in get()))


def _module_version(module):
    """A module's version without importing it here: its own where a case imported it,
    else its distribution's, whatever that is named (CuPy's: cupy-cuda12x, ...)."""
    if sys.modules.get(module) is not None:
        return getattr(sys.modules[module], "__version__", None)
    dists = metadata.packages_distributions().get(module, ())
    return next((_version(d) for d in dists), None)


def gpu_machine_info():
    """The GPU the cuda backend runs on, its NVIDIA driver and CUDA versions, and the
    versions of the GPU stack (numba-cuda, torch and its CUDA, cupy); None where no
    real GPU is benchmarked (no cuda backend, or the simulator: see ``LEFT_OUT``)."""
    if "cuda" not in BACKENDS:
        return None
    from numba import cuda

    be = fn.get_backend("cuda")
    dev = _ask(cuda.get_current_device)
    torch = sys.modules.get("torch")   # imported by the torch cases that ran, if any
    return {
        "name": be.device_name,
        "compute_capability": _ask(lambda: ".".join(map(str, dev.compute_capability))),
        "multiprocessors": be.sms,
        "memory_bytes": _ask(lambda: cuda.current_context().get_memory_info()[1]),
        "nvidia_driver": _nvidia_driver(),
        "cuda_driver_api": _cuda_version(lambda: cuda.cudadrv.driver.driver.get_version()),
        "cuda_runtime": _cuda_version(lambda: cuda.runtime.get_version()),
        "versions": {"numba": _version("numba"), "numba-cuda": _version("numba-cuda"),
                     "torch": _version("torch"),
                     "torch_cuda": getattr(getattr(torch, "version", None), "cuda", None),
                     "cupy": _module_version("cupy")},
    }


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fastnn"] = fastnn_machine_info()
    machine_info["fastnn"]["backends"] = {"timed": list(BACKENDS), "left_out": LEFT_OUT}
    machine_info["fastnn"]["gpu"] = gpu_machine_info()


def pytest_report_header(config):
    """Which fastnn backends this run times, and why any is left out."""
    lines = ["fastnn backends timed: " + ", ".join(BACKENDS)]
    lines += [f"fastnn backend {name} not timed: {why}" for name, why in LEFT_OUT.items()]
    # the report's own BLAS line (core types, OPENBLAS_CORETYPE), without its "- "
    lines.append(report.blas_line({"blas_libraries": _ask(blas_libraries),
                                   "OPENBLAS_CORETYPE":
                                   os.environ.get("OPENBLAS_CORETYPE")})[2:])
    return lines


def _git(*args):
    """(exit status, output) of a read-only git command in this checkout, or
    (None, None) where git is unavailable."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    try:
        done = subprocess.run(("git", *args), capture_output=True, text=True, env=env,
                              cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return done.returncode, (done.stdout.strip() or None)


def pytest_benchmark_generate_commit_info(config):
    """The commit, from read-only git plumbing.  (pytest-benchmark's own version runs
    ``git describe --dirty``, which may rewrite the index while someone else commits.)"""
    rc, commit = _git("rev-parse", "HEAD")
    if rc != 0:
        return {"id": None, "dirty": None, "project": "fastnn"}
    return {"id": commit, "project": "fastnn",
            "dirty": _git("diff-index", "--quiet", "HEAD", "--")[0] != 0,
            "branch": _git("rev-parse", "--abbrev-ref", "HEAD")[1],
            "time": _git("show", "-s", "--pretty=format:%cI", "HEAD")[1]}
