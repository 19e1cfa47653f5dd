"""The registry (kernels/specs.py) is the one list: every entry has its formulas, its
NumPy reference, its kernels on every target and its public name, and nothing exists
that the registry does not name.  Adding an activation is its formulas, its registry
entry and its NumPy reference: shown end to end on a made-up one."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn as fn
from fastnn import losses, optim
from fastnn.backends import numpy_backend as ref
from fastnn.kernels import cpu, formulas, loops, specs
from kernel_cases import OUTPUTS, TARGETS


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_entry_has_its_formulas(dtype):
    F = formulas.formulas(dtype)
    for act in specs.ACTIVATIONS.values():
        for name in act.formulas or ():
            assert hasattr(F, name), f"formulas.{name} (activation {act.name})"
    for k in specs.LOSS_KERNELS.values():
        if k.form == "elementwise":
            assert hasattr(F, k.name), f"formulas.{k.name} (loss kernel)"
    for rule in specs.UPDATE_RULES:
        assert hasattr(F, rule), f"formulas.{rule} (update rule)"


def test_the_reference_and_the_tables_match_the_registry():
    assert set(ref.REFERENCE_ACTIVATIONS) == set(specs.ACTIVATIONS)
    assert set(ref.REFERENCE_LOSSES) == set(specs.LOSS_KERNELS)
    assert set(ref.REFERENCE_RULES) == set(specs.UPDATE_RULES)
    assert {k.form for k in specs.LOSS_KERNELS.values()} == set(cpu._LOSS_FORMS)
    assert {k.target for k in specs.LOSS_KERNELS.values()} <= set(losses._TARGETS)
    assert {k.output for k in specs.LOSS_KERNELS.values()} <= set(losses._OUTPUTS)
    # the tests draw inputs for every kind too
    assert set(losses._TARGETS) == set(TARGETS) and set(losses._OUTPUTS) == set(OUTPUTS)
    assert specs.MAX_STATE < len(loops.OPTIMIZER_STEPS)
    assert list(specs.ACTIVATION_CODES) == list(specs.ACTIVATIONS)
    assert set(fn.INITS) == set(specs.INIT_NAMES)
    assert all(a.init in fn.INITS for a in specs.ACTIVATIONS.values())


def test_cuda_tables_match_the_registry():
    pytest.importorskip("numba_cuda", reason="the cuda kernels need numba-cuda")
    from fastnn.kernels import cuda

    assert {k.form for k in specs.LOSS_KERNELS.values()} == set(cuda._LOSS_FORMS)


def test_public_names_are_the_registry():
    assert fn.ACTIVATIONS is specs.ACTIVATIONS
    assert fn.LOSSES is specs.LOSSES
    assert set(losses.LOSS_CLASSES) == set(specs.LOSSES)
    for name, cls in losses.LOSS_CLASSES.items():
        assert cls.kernel == name and getattr(fn, cls.__name__) is cls
        assert isinstance(fn.get_loss(name), cls)
    # variants are reached through their loss, never by name
    assert "cross_entropy_probs" in specs.LOSS_KERNELS
    assert "cross_entropy_probs" not in fn.LOSSES


def _rules_of(cls, model, options):
    return {cls(model, **o)._rule(cls(model, **o).hyper) for o in options}


def test_every_update_rule_is_reached_by_an_optimizer():
    model = fn.Sequential(fn.Dense(2, 2), backend="numpy")
    reached = set()
    for cls, options in [
            (fn.SGD, [{}, {"momentum": 0.9}]), (fn.Adagrad, [{}]),
            (fn.RMSprop, [dict(centered=c, momentum=m) for c in (False, True)
                          for m in (0.0, 0.5)]),
            (fn.Adadelta, [{}]), (fn.Adam, [{}, {"amsgrad": True}]),
            (fn.AdamW, [{}, {"amsgrad": True}])]:
        reached |= _rules_of(cls, model, options)
    assert reached == set(specs.UPDATE_RULES)
    for rule in specs.UPDATE_RULES.values():
        assert rule.scalars._fields[:2] == ("sign", "l2"), rule.name
    assert set(optim.OPTIMIZERS) == {"sgd", "adagrad", "rmsprop", "adadelta", "adam",
                                     "adamw"}


@pytest.mark.parametrize("name, table, what", [
    ("ReLU", specs.ACTIVATIONS, "activation"), ("Cross_Entropy", specs.LOSSES, "loss"),
    ("ADAM", optim.OPTIMIZERS, "optimizer")])
def test_names_are_case_insensitive_everywhere(name, table, what):
    assert specs.lookup(table, name, what) == name.lower()
    with pytest.raises(ValueError, match=f"unknown {what} 'nope'; expected one of"):
        specs.lookup(table, "nope", what)


def test_names_are_case_insensitive_in_the_api():
    assert fn.Dense(2, 3, activation="ReLU", init="He_Normal").activation == "relu"
    assert isinstance(fn.get_loss("MSE"), fn.MSELoss)
    model = fn.Sequential(fn.Dense(2, 3), backend="NumPy")
    assert model.backend.name == "numpy"
    assert isinstance(fn.get_optimizer("AdamW", model), fn.AdamW)


# A new activation, "square" (f = z^2, f' = 2z), added the documented way in a fresh
# process: its two formulas, its registry entry, its NumPy reference.  Nothing else is
# edited, and the compiled cpu model passes run it and agree with the reference.
ADD_AN_ACTIVATION = textwrap.dedent("""
    import numpy as np
    from numba import njit
    import fastnn as fn
    from fastnn.kernels import formulas, specs
    from fastnn.backends import numpy_backend

    built = formulas._formulas                       # 1. the formulas
    def with_square(dt):
        ns = built(dt)
        two = dt.type(2)
        ns.square_f = njit(inline="always")(lambda z: z * z)
        ns.square_df = njit(inline="always")(lambda z, a: two * z)
        return ns
    formulas._formulas = with_square
    specs.ACTIVATIONS["square"] = specs.Activation("square", "glorot_uniform")  # 2.
    specs.ACTIVATION_CODES["square"] = len(specs.ACTIVATION_CODES)
    numpy_backend.REFERENCE_ACTIVATIONS["square"] = (                          # 3.
        lambda z: z * z, numpy_backend._elementwise(lambda z, a: 2 * z))

    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((7, 5)), rng.standard_normal((7, 2))
    models = [fn.Sequential(fn.Dense(5, 4, activation="square"),
                            fn.Dense(4, 2, activation="square"), backend=b,
                            dtype=np.float64, seed=1) for b in ("cpu", "numpy")]
    outs = [m.forward(x) for m in models]
    for m in models:
        m.backward(g)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12)
    np.testing.assert_allclose(models[0].flat_grads, models[1].flat_grads, rtol=1e-12)
    print("SQUARE OK")
""")


def test_adding_an_activation_is_three_edits(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), FASTNN_QUIET="1")
    run = subprocess.run([sys.executable, "-c", ADD_AN_ACTIVATION], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "SQUARE OK" in run.stdout, run.stdout + run.stderr
