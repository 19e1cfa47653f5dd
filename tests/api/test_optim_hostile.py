"""Hostile input to the optimizers and schedulers (issue 14, items 8, 9 and 10): every
refusal is a clear error naming the argument, and leaves the optimizer (and model)
unchanged byte for byte; an optimizer over a subset of the parameters trains exactly
those, as PyTorch does."""
import math

import numpy as np
import pytest

import fastnn as fn
from fastnn import optim

torch = pytest.importorskip("torch")

OPTIMIZERS = [
    (fn.SGD, {}), (fn.SGD, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (fn.SGD, {"momentum": 0.9, "dampening": 0.3}),
    (fn.Adagrad, {"lr_decay": 0.01, "weight_decay": 0.01}),
    (fn.RMSprop, {"momentum": 0.5, "centered": True, "weight_decay": 0.01}),
    (fn.Adadelta, {"weight_decay": 0.01}),
    (fn.Adam, {"amsgrad": True, "weight_decay": 0.01}), (fn.AdamW, {}),
]
IDS = [f"{c.__name__}{'-' + '-'.join(k) if k else ''}" for c, k in OPTIMIZERS]


def model(dtype=np.float32, seed=0):
    return fn.Sequential(fn.Dense(5, 7, activation="tanh"), fn.Dense(7, 3), dtype=dtype,
                         backend="cpu", seed=seed)


def grads(m, seed):
    """Fill m's gradients from one MSE pass on random data."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(9, 5)).astype(m.dtype)
    y = rng.normal(size=(9, 3)).astype(m.dtype)
    loss = fn.MSELoss()
    m.zero_grad()
    loss.forward(m.forward(x), y)
    m.backward(loss.backward())


def snapshot(opt):
    """Everything an optimizer holds, as bytes."""
    m = opt.model
    return (opt.step_count, repr(opt.hyper), m.flat_params.tobytes(),
            tuple((k, v.tobytes()) for k, v in opt.state.items()))


# ---- 8: finite values that overflow the model's dtype -------------------------------
@pytest.mark.parametrize("cls", [fn.SGD, fn.Adagrad, fn.RMSprop, fn.Adadelta, fn.Adam,
                                 fn.AdamW])
def test_lr_overflowing_float32_is_refused(cls):
    m = model()
    before = m.flat_params.tobytes()
    with pytest.raises(ValueError, match=r"lr.*float32"):
        cls(m, lr=1e39)
    assert m.flat_params.tobytes() == before


@pytest.mark.parametrize("cls,kwargs,name", [
    (fn.SGD, {"momentum": 1e39}, "momentum"),
    (fn.SGD, {"weight_decay": 1e39}, "weight_decay"),
    (fn.SGD, {"momentum": 0.5, "dampening": 1e39}, "dampening"),
    (fn.Adagrad, {"eps": 1e39}, "eps"),
    (fn.Adagrad, {"initial_accumulator_value": 1e39}, "initial_accumulator_value"),
    (fn.RMSprop, {"alpha": 1e39}, "alpha"),
    (fn.RMSprop, {"momentum": 1e39}, "momentum"),
    (fn.Adadelta, {"eps": 1e39}, "eps"),
    (fn.Adam, {"weight_decay": 1e39}, "weight_decay"),
    # finite arguments whose per-step scalars overflow float32
    (fn.Adam, {"lr": 1e38, "betas": (0.99, 0.999)}, r"lr / \(1 - betas\[0\]\)"),
    (fn.AdamW, {"lr": 1e20, "weight_decay": 1e20}, r"1 - lr \* weight_decay"),
])
def test_every_hyperparameter_cast_to_float32_is_checked(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(model(), **kwargs)


def test_the_same_values_are_fine_in_float64():
    m = model(np.float64)
    fn.Adam(m, lr=1e39)
    fn.SGD(m, lr=1e39, momentum=0.5, weight_decay=1e39)


@pytest.mark.parametrize("cls,kwargs", OPTIMIZERS, ids=IDS)
def test_lr_setter_refuses_overflow_and_changes_nothing(cls, kwargs):
    m = model()
    opt = cls(m, **kwargs)
    grads(m, 1)
    opt.step()
    before = snapshot(opt)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = 1e39
    assert snapshot(opt) == before
    opt.lr = 1e-3                      # smaller lrs still work
    assert opt.lr == 1e-3


def test_step_scaled_refuses_an_overflowing_or_nan_factor():
    m = model()
    opt = fn.Adam(m)
    grads(m, 2)
    before = snapshot(opt)
    for bad in (1e39, -1e39, math.inf, math.nan):
        with pytest.raises(ValueError, match="grad_scale"):
            opt.step_scaled(bad)
        assert snapshot(opt) == before


def test_load_state_dict_refuses_an_overflowing_lr():
    m = model()
    opt = fn.Adam(m)
    sd = opt.state_dict()
    sd["hyper"]["lr"] = 1e39
    before = snapshot(opt)
    with pytest.raises(ValueError, match=r"state_dict\['hyper'\].*lr"):
        opt.load_state_dict(sd)
    assert snapshot(opt) == before


# ---- 9: load_state_dict and schedulers check values ----------------------------------
@pytest.mark.parametrize("cls,kwargs,name", [
    (fn.Adam, {}, "exp_avg_sq"), (fn.Adam, {"amsgrad": True}, "max_exp_avg_sq"),
    (fn.AdamW, {}, "exp_avg_sq"), (fn.Adagrad, {}, "sum"),
    (fn.RMSprop, {}, "square_avg"), (fn.RMSprop, {"centered": True}, "square_avg"),
    (fn.Adadelta, {}, "square_avg"), (fn.Adadelta, {}, "acc_delta"),
])
def test_load_state_dict_refuses_negative_second_moments(cls, kwargs, name):
    m = model()
    opt = cls(m, **kwargs)
    grads(m, 3)
    opt.step()
    sd = opt.state_dict()
    sd["state"][name][4] = -1e-3
    before = snapshot(opt)
    with pytest.raises(ValueError, match=name):
        opt.load_state_dict(sd)
    assert snapshot(opt) == before


@pytest.mark.parametrize("field,value", [("hyper", 5), ("hyper", "lr"),
                                         ("state", 7), ("state", "exp_avg")])
def test_load_state_dict_names_a_field_of_the_wrong_type(field, value):
    opt = fn.Adam(model())
    sd = opt.state_dict()
    sd[field] = value
    before = snapshot(opt)
    with pytest.raises((TypeError, ValueError), match=rf"state_dict\['{field}'\]"):
        opt.load_state_dict(sd)
    assert snapshot(opt) == before


def sched_snapshot(s):
    return repr(sorted(s.state_dict().items())), s.optimizer.lr


@pytest.mark.parametrize("make,key,value", [
    (lambda o: optim.CosineAnnealingLR(o, T_max=10), "T_max", 0),
    (lambda o: optim.CosineAnnealingLR(o, T_max=10), "T_max", 2.5),
    (lambda o: optim.CosineAnnealingLR(o, T_max=10), "base_lr", math.nan),
    (lambda o: optim.CosineAnnealingLR(o, T_max=10), "base_lr", -1.0),
    (lambda o: optim.CosineAnnealingLR(o, T_max=10), "eta_min", -0.5),
    (lambda o: optim.StepLR(o, step_size=3), "step_size", 0),
    (lambda o: optim.StepLR(o, step_size=3), "gamma", -0.1),
    (lambda o: optim.ExponentialLR(o, gamma=0.9), "gamma", math.inf),
    (lambda o: optim.ExponentialLR(o, gamma=0.9), "last_epoch", -7),
    (lambda o: optim.ExponentialLR(o, gamma=0.9), "last_epoch", "3"),
    (lambda o: optim.ExponentialLR(o, gamma=0.9), "_step_count", -1),
    (lambda o: optim.ExponentialLR(o, gamma=0.9), "_last_lr", math.nan),
    (lambda o: optim.ExponentialLR(o, gamma=0.9), "_last_lr", 1e39),   # float32
])
def test_scheduler_load_state_dict_checks_values(make, key, value):
    s = make(fn.SGD(model(), lr=0.1))
    s.step()
    sd = s.state_dict()
    sd[key] = value
    before = sched_snapshot(s)
    with pytest.raises(ValueError, match=key):
        s.load_state_dict(sd)
    assert sched_snapshot(s) == before


def test_scheduler_load_state_dict_round_trip_still_works():
    s = optim.CosineAnnealingLR(fn.SGD(model(), lr=0.1), T_max=10, eta_min=0.01)
    for _ in range(3):
        s.step()
    t = optim.CosineAnnealingLR(fn.SGD(model(), lr=0.1), T_max=4)
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict()


@pytest.mark.parametrize("dtype,lr,gamma", [(np.float64, 1.0, 1e300),
                                            (np.float32, 1e-3, 1e30)])
def test_a_rejected_scheduler_step_does_not_advance(dtype, lr, gamma):
    opt = fn.SGD(model(dtype), lr=lr)
    s = optim.ExponentialLR(opt, gamma=gamma)
    s.step()                                   # lr * gamma still fits
    before = sched_snapshot(s), s.get_last_lr(), repr(opt.hyper)
    with pytest.raises(ValueError, match="lr"):
        s.step()                               # lr * gamma^2 does not
    assert (sched_snapshot(s), s.get_last_lr(), repr(opt.hyper)) == before
    assert s.last_epoch == 1


# ---- 10: parameter lists: duplicates, other models, subsets --------------------------
def test_duplicates_are_refused():
    m = model()
    p = m.parameters()
    for bad in (p[:3] + p[:1], [p[1], p[1]], p + [p[2]]):
        with pytest.raises(ValueError, match="twice"):
            fn.SGD(bad, lr=0.1)


def test_parameters_of_another_model_are_refused():
    m, other = model(), model(seed=1)
    for bad in (m.parameters()[:3] + other.parameters()[3:], [m.parameters()[0],
                                                             other.parameters()[1]]):
        with pytest.raises(ValueError, match="another model"):
            fn.Adam(bad)
        with pytest.raises(ValueError, match="another model"):
            optim.clip_grad_norm(bad, 1.0)


def test_things_that_are_not_parameters_are_refused():
    m = model()
    with pytest.raises(TypeError, match=r"params\[1\]"):
        fn.SGD([m.parameters()[0], np.zeros(3)])
    with pytest.raises(TypeError, match="one Parameter"):
        fn.SGD(m.parameters()[0])


def test_all_parameters_in_any_order_are_the_whole_model():
    m = model()
    opt = fn.Adam(m.parameters()[::-1])
    assert opt.trains_all and opt.state["exp_avg"].shape == (m.num_parameters,)


def torch_twin(m):
    """A torch model with m's weights, and the torch parameters in m's order."""
    layers = []
    for layer in m.layers:
        lin = torch.nn.Linear(layer.in_features, layer.out_features, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(layer.weight.data.T.astype(np.float64)))
            lin.bias.copy_(torch.from_numpy(layer.bias.data.astype(np.float64)))
        layers.append(lin)
    return [t for lin in layers for t in (lin.weight, lin.bias)]


TORCH = {fn.SGD: torch.optim.SGD, fn.Adagrad: torch.optim.Adagrad,
         fn.RMSprop: torch.optim.RMSprop, fn.Adadelta: torch.optim.Adadelta,
         fn.Adam: torch.optim.Adam, fn.AdamW: torch.optim.AdamW}


@pytest.mark.parametrize("subset", [[3, 0], [1], [0, 1, 3]], ids=str)
@pytest.mark.parametrize("cls,kwargs", OPTIMIZERS, ids=IDS)
def test_a_subset_trains_exactly_those_parameters_as_torch(cls, kwargs, subset):
    m = model(np.float64)
    params = m.parameters()
    twin = torch_twin(m)
    opt = cls([params[i] for i in subset], lr=0.05, **kwargs)
    ref = TORCH[cls]([twin[i] for i in subset], lr=0.05, **kwargs)
    frozen = {i: params[i].data.copy() for i in range(4) if i not in subset}
    assert not opt.trains_all
    assert opt.param_names == [params[i].name for i in sorted(subset)]
    assert next(iter(opt.state.values()), np.zeros(0)).shape in (
        (sum(params[i].size for i in subset),), (0,))
    for step in range(6):
        grads(m, 10 + step)
        for t, p in zip(twin, params):
            g = p.grad.T if p.grad.ndim == 2 else p.grad
            t.grad = torch.from_numpy(np.ascontiguousarray(g))
        opt.step()
        ref.step()
    for i, p in enumerate(params):
        if i in frozen:
            assert np.array_equal(p.data, frozen[i]), p.name
        else:
            want = twin[i].detach().numpy()
            np.testing.assert_allclose(p.data, want.T if p.data.ndim == 2 else want,
                                       rtol=1e-11, atol=1e-13, err_msg=p.name)
    assert opt.step_count == 6


def test_a_subset_clips_its_own_gradients_as_torch():
    m = model(np.float64)
    params = m.parameters()
    twin = torch_twin(m)
    grads(m, 5)
    for t, p in zip(twin, params):
        g = p.grad.T if p.grad.ndim == 2 else p.grad
        t.grad = torch.from_numpy(np.ascontiguousarray(g) * 100)
        p.grad[...] *= 100
    other = params[1].grad.copy()
    for norm_type in (2.0, 1.0, math.inf, 3.0):
        total = optim.clip_grad_norm([params[2], params[0], params[3]], 0.5, norm_type)
        want = torch.nn.utils.clip_grad_norm_([twin[2], twin[0], twin[3]], 0.5,
                                              norm_type)
        assert total == pytest.approx(float(want), rel=1e-12)
        for i in (0, 2, 3):
            g = twin[i].grad.numpy()
            np.testing.assert_allclose(params[i].grad, g.T if g.ndim == 2 else g,
                                       rtol=1e-12)
        assert np.array_equal(params[1].grad, other)      # not listed: left alone


def test_fit_with_a_frozen_layer():
    m = model()
    X = np.random.default_rng(0).normal(size=(40, 5))
    y = np.arange(40) % 3
    first = [p.data.copy() for p in m.parameters()[:2]]
    opt = fn.Adam(m.parameters()[2:], lr=0.01)
    last = [p.data.copy() for p in m.parameters()[2:]]
    m.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=2, batch_size=8,
          clip_grad_norm=1.0, progress=False)
    assert all(np.array_equal(p.data, w) for p, w in zip(m.parameters()[:2], first))
    assert not any(np.array_equal(p.data, w) for p, w in zip(m.parameters()[2:], last))
    assert opt.step_count == 10


def test_a_subset_optimizer_is_not_saved_silently_as_a_whole_model_one(tmp_path):
    m = model()
    opt = fn.SGD(m.parameters()[:2], lr=0.1, momentum=0.9)
    m.optimizer = opt
    with pytest.raises(ValueError, match="subset"):
        opt.state_dict()
    with pytest.raises(ValueError, match="subset"):
        opt.load_state_dict(fn.SGD(m, lr=0.1, momentum=0.9).state_dict())
    with pytest.raises(ValueError, match="include_optimizer=False"):
        m.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
    m.save(tmp_path / "m.npz", include_optimizer=False)
    assert fn.load(tmp_path / "m.npz").optimizer is None


def test_get_optimizer_by_name_keeps_the_subset():
    m = model()
    opt = optim.get_optimizer("adam", iter(m.parameters()[2:]))
    assert opt.param_names == ["1.weight", "1.bias"]
