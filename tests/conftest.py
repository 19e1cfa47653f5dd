"""Fixtures shared by the tests, and how the suite is split.

The tests mirror the code: ``kernels/`` (the registry, templates, formulas, every
kernel against the NumPy reference), ``backends/`` (the interface, whole-model
passes, gradients, the cuda backend), ``api/`` (models, losses, optimizers, fit,
files, data sets, start-up), ``cli/`` (the ``fastnn`` command and the benchmark
runner) and ``properties/`` (hypothesis).  Helpers they share: ``kernel_cases.py``.

``exhaustive``: the CUDA simulator's share of the shared sweeps (every case of the
kernel, backend and API suites parametrised with ``cuda``, and the cuda-only sweeps
marked so) runs only with ``pytest -m exhaustive`` (``.ci/run`` runs both); the
default run keeps a check of every cuda kernel family and behaviour.  With a real GPU
nothing is held back."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # kernel_cases

import fastnn as fn  # noqa: E402
from fastnn import threads  # noqa: E402


def pytest_collection_modifyitems(config, items):
    from kernel_cases import CUDA_SIMULATED

    if not CUDA_SIMULATED:
        return
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if any(isinstance(v, str) and v.partition("-")[0] == "cuda"
               for v in params.values()):
            item.add_marker(pytest.mark.exhaustive)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=["serial", "parallel"])
def mode(request, monkeypatch):
    """Run the cpu kernels both serially and on numba's parallel path."""
    par = request.param == "parallel"
    monkeypatch.setattr(threads, "use_parallel", lambda size: par)
    return request.param


@pytest.fixture
def ref():
    return fn.get_backend("numpy")


@pytest.fixture
def cpu():
    return fn.get_backend("cpu")


def _compiled_params():
    from kernel_cases import COMPILED

    params = []
    for name in COMPILED:
        params += [f"{name}-serial", f"{name}-parallel"] if name == "cpu" else [name]
    return params


@pytest.fixture(params=_compiled_params())
def kern(request, monkeypatch):
    """Each compiled backend, driven with NumPy arrays (kernel_cases.OnHost): the cpu
    kernels serially and on numba's parallel path, and the cuda kernels."""
    from kernel_cases import backend_on_host

    name, _, how = request.param.partition("-")
    if name == "cpu":
        monkeypatch.setattr(threads, "use_parallel", lambda size: how == "parallel")
    return backend_on_host(name)
