"""Optimizers, schedulers and gradient clipping: hand-computed steps, PyTorch as an
oracle where installed, long trajectories, state_dict, bad input."""
import math

import numpy as np
import pytest

import fastnn as fn
from fastnn import optim
from kernel_cases import BACKENDS, CUDA_SIMULATED, DTYPES


def tiny(backend="cpu", dtype=np.float64, p=(1.0, 1.0)):
    """A model with two parameters (one weight, one bias) set to ``p``."""
    model = fn.Sequential(fn.Dense(1, 1), backend=backend, dtype=dtype, seed=0)
    model.set_weights([np.array([[p[0]]], dtype), np.array([p[1]], dtype)])
    return model


def run(model, opt, grads):
    """Step ``opt`` once per gradient vector in ``grads``; return the parameters."""
    for g in grads:
        model.flat_grads[:] = g
        opt.step()
    return model.flat_params.copy()


ONE = [(1.0, 1.0)] * 3          # a constant gradient of 1 on both parameters
SQ2 = math.sqrt(2.0)
# (optimizer, kwargs, gradients, expected parameters after them), worked by hand from
# PyTorch's documented algorithms with p0 = 1.
HAND = [
    ("SGD", dict(lr=0.1), ONE[:2], 0.8),
    ("SGD", dict(lr=0.1, weight_decay=0.1), ONE[:2], 0.89 - 0.1 * (1 + 0.1 * 0.89)),
    ("SGD", dict(lr=0.1, momentum=0.9), ONE, 0.439),          # b: 1, 1.9, 2.71
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5), ONE[:2], 0.76),   # b: 1, 1.4
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True), ONE[:2], 0.539),  # 0.19, 0.271
    ("SGD", dict(lr=0.1, maximize=True), ONE[:2], 1.2),
    ("Adagrad", dict(lr=0.1, eps=0.0), ONE[:2], 0.9 - 0.1 / SQ2),
    ("Adagrad", dict(lr=0.1, eps=0.0, lr_decay=1.0), ONE[:2], 0.9 - 0.05 / SQ2),
    ("Adagrad", dict(lr=0.1, eps=0.0, initial_accumulator_value=3.0), ONE[:1], 0.95),
    ("RMSprop", dict(lr=0.01, eps=0.0), ONE[:2], 0.9 - 0.01 / math.sqrt(0.0199)),
    ("RMSprop", dict(lr=0.01, eps=0.0, centered=True), ONE[:1],
     1 - 0.01 / math.sqrt(0.01 - 0.01 ** 2)),
    ("RMSprop", dict(lr=0.01, eps=0.0, momentum=0.5), ONE[:2],
     0.9 - 0.01 * (0.5 * 10 + 1 / math.sqrt(0.0199))),
    ("Adadelta", dict(lr=1.0, rho=0.9, eps=1e-6), ONE[:1],
     1 - math.sqrt(1e-6) / math.sqrt(0.1 + 1e-6)),
    ("Adam", dict(lr=0.1, eps=0.0), ONE[:2], 0.8),     # m_hat = v_hat = 1 each step
    ("Adam", dict(lr=0.1, eps=0.0), [(1.0, 1.0), (-1.0, -1.0)],
     0.9 + 0.1 * (0.01 / 0.19)),                      # m2 = -0.01, v_hat2 = 1
    ("Adam", dict(lr=0.1, eps=0.0, amsgrad=True), [(1.0, 1.0), (0.01, 0.01)],
     0.9 - 0.1 * (0.091 / 0.19) / math.sqrt(0.001 / 0.001999)),   # v_max2 = v1
    ("AdamW", dict(lr=0.1, eps=0.0, weight_decay=0.1), ONE[:2], 0.89 * 0.99 - 0.1),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, kwargs, grads, want", HAND,
                         ids=[f"{h[0]}-{'-'.join(h[1])}-{len(h[2])}" for h in HAND])
def test_hand_computed_steps(name, kwargs, grads, want, backend):
    model = tiny(backend)
    opt = getattr(fn, name)(model, **kwargs)
    got = run(model, opt, grads)
    np.testing.assert_allclose(got, [want, want], rtol=1e-13)
    assert opt.step_count == len(grads)


# Every update rule, with options off their defaults.
VARIANTS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.05)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1,
                     initial_accumulator_value=0.2)),
    ("RMSprop", dict()),
    ("RMSprop", dict(centered=True, weight_decay=0.1)),
    ("RMSprop", dict(momentum=0.8)),
    ("RMSprop", dict(momentum=0.8, centered=True, maximize=True)),
    ("Adadelta", dict(weight_decay=0.1)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True, betas=(0.8, 0.9))),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, amsgrad=True, maximize=True)),
]
VARIANT_IDS = [f"{n}-{'-'.join(kw) or 'defaults'}" for n, kw in VARIANTS]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_matches_torch(name, kwargs, backend, dtype, rng):
    """30 steps of random gradients against torch.optim (skipped without torch)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here")
    model = fn.Sequential(fn.Dense(5, 3), backend=backend, dtype=dtype, seed=1)
    opt = getattr(fn, name)(model, **kwargs)
    tp = torch.nn.Parameter(torch.tensor(model.to_numpy(model.flat_params)))
    topt = getattr(torch.optim, name)([tp], **kwargs)
    for _ in range(30):
        g = rng.standard_normal(model.num_parameters).astype(dtype)
        model.flat_grads[:] = g
        tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
    want = tp.detach().numpy()
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(model.flat_params, want, rtol=rtol,
                               atol=rtol * np.abs(want).max())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_cpu_equals_reference_and_stays_finite(name, kwargs, backend, rng):
    """2000 float32 steps of noisy gradients (300 under the CUDA simulator, where a
    step takes ~5 ms): finite, and the compiled backend tracks the float64
    reference."""
    model = fn.Sequential(fn.Dense(9, 7), backend=backend, dtype=np.float32, seed=2)
    ref = fn.Sequential(fn.Dense(9, 7), backend="numpy", dtype=np.float64, seed=2)
    opt, ref_opt = getattr(fn, name)(model, **kwargs), getattr(fn, name)(ref, **kwargs)
    for step in range(300 if backend == "cuda" and CUDA_SIMULATED else 2000):
        g = (rng.standard_normal(model.num_parameters) * 10.0 ** rng.integers(-3, 3))
        model.flat_grads[:] = g
        ref.flat_grads[:] = g.astype(np.float32)
        opt.step()
        ref_opt.step()
        if step == 9:
            np.testing.assert_allclose(model.flat_params, ref.flat_params, rtol=1e-4,
                                       atol=1e-5)
    assert np.isfinite(model.flat_params).all()
    for buf in opt.state.values():
        assert np.isfinite(buf).all()


@pytest.mark.parametrize("name, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_one_kernel_per_step(name, kwargs, monkeypatch):
    model = fn.Sequential(fn.Dense(4, 3), fn.Dense(3, 2), seed=0)
    opt = getattr(fn, name)(model, **kwargs)
    calls = []
    real = model.backend.optimizer_step
    monkeypatch.setattr(model.backend, "optimizer_step",
                        lambda *a: (calls.append(a[0]), real(*a)))
    model.flat_grads[:] = 0.5
    opt.step()
    opt.step()
    assert len(calls) == 2


def test_learning_rate_can_change():
    model = tiny()
    opt = fn.SGD(model, lr=0.1)
    model.flat_grads[:] = 1.0
    opt.step()
    opt.lr = 0.5
    opt.step()
    np.testing.assert_allclose(model.flat_params, [0.4, 0.4], rtol=1e-15)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.lr = -1.0
    assert opt.lr == 0.5


@pytest.mark.parametrize("name, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_state_dict_resumes_exactly(name, kwargs, rng):
    grads = rng.standard_normal((10, 22))
    whole = fn.Sequential(fn.Dense(5, 3), fn.Dense(3, 1), dtype=np.float64, seed=3)
    run(whole, getattr(fn, name)(whole, **kwargs), grads)

    first = fn.Sequential(fn.Dense(5, 3), fn.Dense(3, 1), dtype=np.float64, seed=3)
    opt = getattr(fn, name)(first, **kwargs)
    run(first, opt, grads[:4])
    saved = opt.state_dict()
    second = fn.Sequential(fn.Dense(5, 3), fn.Dense(3, 1), dtype=np.float64, seed=3)
    second.set_weights(first.get_weights())
    opt2 = getattr(fn, name)(second, **kwargs)
    opt2.load_state_dict(saved)
    assert opt2.step_count == 4
    np.testing.assert_array_equal(run(second, opt2, grads[4:]), whole.flat_params)


def test_load_state_dict_rejects_bad_input_unchanged():
    model = tiny()
    opt = fn.Adam(model, lr=0.1)
    run(model, opt, ONE[:2])
    good = opt.state_dict()
    before = opt.state_dict()

    def bad(**changes):
        sd = {**good, **changes}
        return sd

    cases = [
        (bad(type="SGD"), "is for SGD"),
        (bad(version=99), "format version"),
        (bad(step=-1), "step"),
        ({k: v for k, v in good.items() if k != "state"}, "lacks"),
        (bad(hyper={**good["hyper"], "betas": (1.0, 0.9)}), r"\['betas'\]\[0\]"),
        (bad(hyper={**good["hyper"], "amsgrad": True}), "must hold"),
        (bad(state={"exp_avg": np.zeros(2)}), "must hold"),
        (bad(state={**good["state"], "exp_avg": np.zeros(3)}), "shape"),
        (bad(state={**good["state"], "exp_avg": np.array([np.nan, 0.0])}), "NaN"),
    ]
    for sd, match in cases:
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict(sd)
    with pytest.raises(TypeError):
        opt.load_state_dict([1, 2])
    after = opt.state_dict()
    assert after["step"] == before["step"] and after["hyper"] == before["hyper"]
    for k in before["state"]:
        np.testing.assert_array_equal(after["state"][k], before["state"][k])


@pytest.mark.parametrize("make, match", [
    (lambda m: fn.SGD(m, lr=-0.1), "lr must be >= 0"),
    (lambda m: fn.SGD(m, lr=float("nan")), "finite"),
    (lambda m: fn.SGD(m, momentum=-0.5), "momentum must be >= 0"),
    (lambda m: fn.SGD(m, nesterov=True), "nesterov=True requires"),
    (lambda m: fn.SGD(m, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (lambda m: fn.Adam(m, betas=(1.0, 0.999)), r"betas\[0\] must be in \[0, 1\)"),
    (lambda m: fn.Adam(m, betas=(0.9, -0.1)), r"betas\[1\] must be >= 0"),
    (lambda m: fn.AdamW(m, betas=0.9), "pair"),
    (lambda m: fn.Adam(m, eps=-1e-8), "eps must be >= 0"),
    (lambda m: fn.Adam(m, amsgrad="yes"), "amsgrad must be True or False"),
    (lambda m: fn.RMSprop(m, alpha=-0.1), "alpha"),
    (lambda m: fn.Adadelta(m, rho=1.5), r"rho must be in \[0, 1\]"),
    (lambda m: fn.Adagrad(m, lr_decay=-1), "lr_decay"),
    (lambda m: fn.get_optimizer("adamax", m), "unknown optimizer 'adamax'"),
    (lambda m: fn.get_optimizer(fn.SGD(tiny()), m), "another model"),
    # a subset of the parameters is supported (test_optim_hostile.py); a duplicate not
    (lambda m: fn.SGD(m.parameters() + m.parameters()[:1]), "twice"),
    (lambda m: fn.SGD([]), "empty"),
])
def test_bad_arguments_raise(make, match):
    model = tiny()
    before = model.flat_params.copy()
    with pytest.raises(ValueError, match=match):
        make(model)
    np.testing.assert_array_equal(model.flat_params, before)


def test_get_optimizer_by_name():
    model = tiny()
    for name, cls in optim.OPTIMIZERS.items():
        opt = fn.get_optimizer(name.upper(), model)
        assert type(opt) is cls and opt.model is model
    assert fn.get_optimizer("sgd", model, lr=0.5).lr == 0.5
    assert fn.optim.Adam is fn.Adam


# ---- schedulers -------------------------------------------------------------------
def lrs(scheduler, n):
    out = []
    for _ in range(n):
        out.append(scheduler.optimizer.lr)
        scheduler.step()
    return out


def test_schedulers_by_hand():
    o = fn.SGD(tiny(), lr=0.3)
    np.testing.assert_allclose(lrs(fn.StepLR(o, step_size=2, gamma=0.5), 6),
                               [0.3, 0.3, 0.15, 0.15, 0.075, 0.075], rtol=1e-15)
    o = fn.SGD(tiny(), lr=0.3)
    np.testing.assert_allclose(lrs(fn.ExponentialLR(o, gamma=0.5), 4),
                               [0.3, 0.15, 0.075, 0.0375], rtol=1e-15)
    o = fn.SGD(tiny(), lr=0.3)
    s = fn.CosineAnnealingLR(o, T_max=4, eta_min=0.1)
    got = lrs(s, 9)
    closed = [0.1 + 0.2 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(9)]
    np.testing.assert_allclose(got, closed, rtol=1e-12)    # down to eta_min, back up
    assert s.get_last_lr() == o.lr


@pytest.mark.parametrize("name, kwargs", [
    ("StepLR", dict(step_size=3, gamma=0.5)), ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01)),
    ("CosineAnnealingLR", dict(T_max=4))])
def test_schedulers_match_torch(name, kwargs):
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here")
    o = fn.SGD(tiny(), lr=0.3)
    s = getattr(fn, name)(o, **kwargs)
    tp = torch.nn.Parameter(torch.zeros(2))
    to = torch.optim.SGD([tp], lr=0.3)
    ts = getattr(torch.optim.lr_scheduler, name)(to, **kwargs)
    want = []
    for _ in range(25):
        want.append(to.param_groups[0]["lr"])
        to.step()
        ts.step()
    assert lrs(s, 25) == want


def test_scheduler_state_dict_and_errors():
    o = fn.SGD(tiny(), lr=0.3)
    s = fn.StepLR(o, step_size=2)
    lrs(s, 3)
    sd = s.state_dict()
    o2 = fn.SGD(tiny(), lr=o.lr)
    s2 = fn.StepLR(o2, step_size=2)
    s2.load_state_dict(sd)
    assert lrs(s, 5) == lrs(s2, 5)
    with pytest.raises(ValueError, match="step_size"):
        fn.StepLR(o, step_size=0)
    with pytest.raises(TypeError, match="fastnn Optimizer"):
        fn.ExponentialLR("adam", gamma=0.9)
    with pytest.raises(ValueError, match="keys"):
        s2.load_state_dict({"last_epoch": 3})


# ---- clipping ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_grad_norm(backend, norm_type, rng):
    model = fn.Sequential(fn.Dense(6, 5), fn.Dense(5, 3), backend=backend,
                          dtype=np.float64, seed=0)
    g = rng.standard_normal(model.num_parameters)
    model.flat_grads[:] = g
    norm = np.linalg.norm(g, ord=norm_type)
    total = fn.clip_grad_norm(model.parameters(), 0.5 * norm, norm_type=norm_type)
    assert total == pytest.approx(norm, rel=1e-13)
    np.testing.assert_allclose(model.flat_grads, g * 0.5 * norm / (norm + 1e-6),
                               rtol=1e-14)
    # below the bound: untouched
    before = model.to_numpy(model.flat_grads)
    fn.clip_grad_norm(model, 10 * norm, norm_type=norm_type)
    np.testing.assert_array_equal(model.flat_grads, before)


def test_clip_grad_norm_errors():
    model = tiny()
    model.flat_grads[:] = [np.inf, 1.0]
    with pytest.raises(RuntimeError, match="non-finite"):
        fn.clip_grad_norm(model, 1.0, error_if_nonfinite=True)
    for kwargs, match in ((dict(max_norm=-1.0), "max_norm"),
                          (dict(max_norm=1.0, norm_type=0), "norm_type"),
                          (dict(max_norm=1.0, norm_type="fro"), "norm_type")):
        with pytest.raises(ValueError, match=match):
            fn.clip_grad_norm(model, **kwargs)
    with pytest.raises(ValueError, match="twice"):     # a subset is fine, duplicates not
        fn.clip_grad_norm(model.parameters()[:1] * 2, 1.0)
