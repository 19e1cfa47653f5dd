"""Every backend implements the one interface (fastnn/backends/base.py): each method
of ``Backend``, with exactly its signature, and nothing public besides; the methods
the base class leaves abstract are implemented by every backend.  (Thinc's backend
tests do the same for its Ops.)  Checked on the classes, so the cuda backend is
checked without a GPU."""
import inspect

import pytest

from fastnn.backends import base, cpu_backend, cuda_backend, numpy_backend

BACKENDS = {"numpy": numpy_backend.NumpyBackend, "cpu": cpu_backend.CpuBackend,
            "cuda": cuda_backend.CudaBackend}


def _interface():
    return {name: fn for name, fn in vars(base.Backend).items()
            if callable(fn) and not name.startswith("_")}


def _abstract(fn):
    body = inspect.getsource(fn).split('"""')[-1]
    return "raise NotImplementedError" in body


def test_the_interface_is_what_the_design_says():
    names = set(_interface())
    kernels = {"empty", "from_numpy", "to_numpy", "copy", "fill", "scale",
               "dense_forward", "dense_backward", "activation_forward",
               "activation_backward", "loss", "optimizer_step", "vector_norm",
               "synchronize"}
    passes = {"model_forward", "model_backward", "train_step"}
    plumbing = {"is_array", "batch", "stage", "dataset", "gather", "sums", "loss_sum",
                "count_correct", "aliases", "check_step_buffers"}
    assert names == kernels | passes | plumbing
    assert {n for n, fn in _interface().items() if _abstract(fn)} == kernels - {
        "synchronize"}


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_implements_the_interface(name):
    cls = BACKENDS[name]
    for method, fn in _interface().items():
        mine = getattr(cls, method)
        assert inspect.signature(mine) == inspect.signature(fn), (name, method)
        if _abstract(fn):
            assert mine is not fn, f"{name} does not implement {method}"
    public = {n for n in dir(cls) if not n.startswith("_")
              and callable(getattr(cls, n)) and not isinstance(getattr(cls, n), type)}
    assert public <= set(_interface()), (name, public - set(_interface()))
