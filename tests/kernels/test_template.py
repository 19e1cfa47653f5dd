"""The template mechanism (kernels/template.py): declared slots, one specialise that
binds all of them and nothing else, readable descriptions of what it built, and
numba's cache keyed by every kernel source (kernels/_numba_setup.py)."""
import numpy as np
import pytest
from numba import njit

from fastnn.kernels import _numba_setup, cpu, loops, template
from fastnn.kernels.formulas import formulas
from fastnn.kernels.template import Slot, Target, slots_of, specialise

scale_by = Slot("scale_by", "a constant factor")
f = Slot("f", "a formula")
JIT = Target("test_cpu", njit)


def times(x, out):
    for i in range(x.shape[0]):
        out[i] = f(x[i]) * scale_by


def test_slots_are_declared_and_derived():
    assert slots_of(times) == {"f", "scale_by"}
    assert slots_of(loops.optimizer_step2) == {"indices", "f"}
    assert slots_of(cpu.elementwise_backward) == {"df", "PARALLEL"}
    with pytest.raises(TypeError, match="slot 'f' .* is unbound"):
        times(np.ones(2), np.ones(2))          # a template is not a kernel


def test_specialise_binds_every_slot_and_nothing_else():
    F = formulas(np.float64)
    k = specialise(times, JIT, "relu_x3", f=F.relu_f, scale_by=3.0)
    out = np.full(3, np.nan)
    k(np.array([-1.0, 0.5, 2.0]), out)
    np.testing.assert_array_equal(out, [0.0, 1.5, 6.0])
    assert specialise(times, JIT, "relu_x3", f=F.relu_f, scale_by=3.0) is k  # memo
    assert k.py_func.__qualname__ == "times__relu_x3"
    text = template.describe(k)
    assert "times__relu_x3 [test_cpu]" in text and "f=" in text and "relu_f" in text
    assert "scale_by=3.0" in text and "test_template.py" in text
    with pytest.raises(TypeError, match=r"leaves \['scale_by'\] unbound"):
        specialise(times, JIT, "missing", f=F.relu_f)
    with pytest.raises(TypeError, match=r"binds \['g'\], not slots"):
        specialise(times, JIT, "extra", f=F.relu_f, scale_by=1.0, g=1.0)


def test_kernel_log_names_every_specialisation(monkeypatch, capsys):
    monkeypatch.setattr(template, "_LOG", True)
    specialise(times, JIT, "logged", f=formulas(np.float32).tanh_f, scale_by=2.0)
    err = capsys.readouterr().err
    assert "fastnn kernel: times__logged [test_cpu]" in err and "tanh_f" in err


def test_the_cache_stamp_covers_every_kernel_source():
    stamp = _numba_setup.sources_stamp()
    loc = _numba_setup.KernelSourcesLocator.from_function(cpu.row_sum.py_func,
                                                         cpu.__file__)
    assert loc is not None and loc.get_source_stamp() == stamp
    assert _numba_setup.KernelSourcesLocator.from_function(times, __file__) is None
    kernel = cpu.activation_forward("relu", np.float32, False)
    if _numba_setup.STATUS["caching"]:
        kernel(np.ones((2, 2), np.float32), np.empty((2, 2), np.float32))
        assert kernel._cache._cache_file._source_stamp == stamp
