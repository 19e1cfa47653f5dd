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
