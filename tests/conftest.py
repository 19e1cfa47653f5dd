"""Fixtures shared by the tests."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import threads


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
