"""NaN and +-inf go through every kernel the way they go through the NumPy reference.

A property of the whole registry (kernels/specs.py: every activation, loss kernel and
update rule, picked up automatically): on random odd-sized inputs with NaN, +inf and
-inf sprinkled in, the cpu kernels (serial and parallel, float32 and float64, outputs
NaN-poisoned) give NaN exactly where the float64 reference does, the same infinity
where it has one, and a close value elsewhere.  So a diverged network reports a NaN
loss instead of a finite one.

Then PyTorch's behaviour in three edge cases (issue 14, item 11), with fixed expected
values (checked against torch when it is installed): an inf weight stays inf under SGD
without weight decay, centered RMSprop leaves the weights alone when float32 gradients
of 1e30 overflow its averages, and cross-entropy with an inf target probability is inf.
"""
import numpy as np
import pytest

import fastnn as fn
from fastnn.kernels import specs
from kernel_cases import DTYPES, loss_case, poisoned, rand, rule_scalars, tol

SHAPES = ((1, 1), (7, 33), (33, 7), (129, 65))
SPECIALS = np.array([np.nan, np.inf, -np.inf])


def sprinkle(rng, x, fraction=0.15):
    """``x`` with about ``fraction`` of its elements (at least one) replaced by NaN,
    +inf or -inf, each of the three present when there is room."""
    x = x.copy()
    flat = x.reshape(-1)
    k = max(1, int(round(fraction * flat.size)))
    where = rng.choice(flat.size, k, replace=False)
    values = np.resize(SPECIALS, k)
    rng.shuffle(values)
    if k >= 3:
        values[:3] = SPECIALS
    flat[where] = values
    return x


def agree(got, want, dtype, scale=1.0, what="", inputs=()):
    """NaN exactly where ``want`` is NaN, the same inf where it is inf, close elsewhere
    (at kernel_cases.tol, atol times ``scale``).  ``inputs``: (name, array) pairs of
    the element-aligned inputs, shown for the first mismatches."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    rtol, atol = tol(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(want)
        ok = np.where(finite,
                      np.isfinite(got) & (np.abs(got - want) <= atol * scale
                                          + rtol * np.abs(want)),
                      (np.isnan(want) & np.isnan(got)) | (got == want))
    ok = np.atleast_1d(ok)
    if not ok.all():
        got1, want1 = np.atleast_1d(got), np.atleast_1d(want)
        lines = []
        for idx in np.argwhere(~ok)[:8]:
            idx = tuple(idx)
            shown = ", ".join(f"{n}={np.asarray(v)[idx]!r}" for n, v in inputs
                              if np.shape(v) == got1.shape)
            lines.append(f"  at {idx}: got {got1[idx]!r}, want {want1[idx]!r}"
                         + (f" ({shown})" if shown else ""))
        pytest.fail(f"{what}: {int((~ok).sum())} of {ok.size} elements differ from the "
                    "reference:\n" + "\n".join(lines))


@pytest.fixture
def cpu_modes(cpu, mode):
    """The cpu backend, serial and on numba's parallel path (the ``mode`` fixture)."""
    return cpu


# ---- activations ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(specs.ACTIVATIONS))
def test_activation_forward_nonfinite(name, shape, dtype, rng, ref, cpu_modes):
    z = sprinkle(rng, rand(rng, shape, dtype))
    a = poisoned(shape, dtype)
    cpu_modes.activation_forward(name, z, a)
    want = np.empty(shape)
    with np.errstate(all="ignore"):
        ref.activation_forward(name, z.astype(np.float64), want)
    agree(a, want, dtype, what=f"{name} forward", inputs=[("z", z)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("poison", ["z", "grad_a"])
@pytest.mark.parametrize("name", list(specs.ACTIVATIONS))
def test_activation_backward_nonfinite(name, poison, shape, dtype, rng, ref, cpu_modes):
    z = rand(rng, shape, dtype)
    ga = rand(rng, shape, dtype)
    if poison == "z":
        z = sprinkle(rng, z)
    else:
        ga = sprinkle(rng, ga)
    a = np.empty(shape, dtype)
    with np.errstate(all="ignore"):
        ref.activation_forward(name, z, a)
    gb0 = rand(rng, shape[1], dtype)
    gz, gb = poisoned(shape, dtype), gb0.copy()
    cpu_modes.activation_backward(name, z, a, ga, gz, gb, 0.75)
    wz, wb = np.empty(shape), gb0.astype(np.float64)
    with np.errstate(all="ignore"):
        ref.activation_backward(name, *(v.astype(np.float64) for v in (z, a, ga)),
                                wz, wb, 0.75)
    inputs = [("z", z), ("a", a), ("grad_a", ga)]
    agree(gz, wz, dtype, what=f"{name} backward grad_z", inputs=inputs)
    agree(gb, wb, dtype, scale=shape[0], what=f"{name} backward grad_b")


ACT_Z = [np.nan, np.inf, -np.inf, -1.0, 2.0]
# torch.autograd's f'(z) there (grad_a = 1): torch tests z <= 0, so NaN takes the
# positive branch of relu and elu, the slope of leaky_relu
ACT_DF = {"relu": [1.0, 1.0, 0.0, 0.0, 1.0],
          "leaky_relu": [0.01, 1.0, 0.01, 0.01, 1.0],
          "elu": [1.0, 1.0, 0.0, np.exp(-1.0), 1.0]}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("name", list(ACT_DF))
def test_relu_family_derivative_at_nonfinite_matches_torch(name, backend, dtype):
    be = fn.get_backend(backend)
    z = np.array([ACT_Z], dtype)
    a = poisoned(z.shape, dtype)
    be.activation_forward(name, z, a)
    gz, gb = poisoned(z.shape, dtype), np.zeros(z.shape[1], dtype)
    be.activation_backward(name, z, a, np.ones_like(z), gz, gb, 1.0)
    np.testing.assert_allclose(gz[0], np.array(ACT_DF[name], dtype), rtol=1e-6)


# ---- losses ---------------------------------------------------------------------
def _loss_poisons():
    for name, spec in specs.LOSS_KERNELS.items():
        yield name, "output"
        if spec.target != "labels":
            yield name, "target"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name, poison", list(_loss_poisons()))
def test_loss_nonfinite(name, poison, shape, dtype, rng, ref, cpu_modes):
    out, target = loss_case(name, rng, shape, dtype)
    if poison == "output":
        out = sprinkle(rng, out)
    else:
        target = sprinkle(rng, target)
    param, norm = 0.7, 1.0 / shape[0]
    grad = poisoned(shape, dtype)
    value = cpu_modes.loss(name, out, target, grad, param, norm)
    wt = target if target.dtype.kind == "i" else target.astype(np.float64)
    wgrad = np.empty(shape)
    with np.errstate(all="ignore"):
        wvalue = ref.loss(name, out.astype(np.float64), wt, wgrad, param, norm)
    inputs = [("out", out), ("target", target)]
    agree(grad, wgrad, dtype, what=f"{name} gradient", inputs=inputs)
    agree(value, wvalue, dtype, scale=shape[1], what=f"{name} value")


# ---- update rules ---------------------------------------------------------------
def _rule_poisons():
    for name, rule in specs.UPDATE_RULES.items():
        for buf in ("param", "grad") + rule.state + ("all",):
            yield name, buf


def _state(rng, names, n, dtype):
    # what a running optimizer could hold: signed averages, squared averages >= 1
    return [(0.1 if name == "grad_avg" else 1.0) * rand(rng, n, dtype)
            if name in ("grad_avg", "exp_avg", "momentum_buffer")
            else 1 + np.abs(rand(rng, n, dtype)) for name in names]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 1025])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("rule, poison", list(_rule_poisons()))
def test_update_rule_nonfinite(rule, poison, weight_decay, n, dtype, rng, ref,
                               cpu_modes):
    names = specs.UPDATE_RULES[rule].state
    p0, g = rand(rng, n, dtype), rand(rng, n, dtype)
    state0 = _state(rng, names, n, dtype)
    bufs = dict(param=p0, grad=g, **dict(zip(names, state0)))
    for key in bufs:
        if poison in (key, "all"):
            bufs[key] = sprinkle(rng, bufs[key])
    p0, g, state0 = bufs["param"], bufs["grad"], [bufs[k] for k in names]
    h = rule_scalars(rule)._replace(l2=weight_decay)
    p, state = p0.copy(), tuple(s.copy() for s in state0)
    cpu_modes.optimizer_step(rule, p, g, state, h._make(dtype(x) for x in h))
    wp, wstate = p0.astype(np.float64), tuple(s.astype(np.float64) for s in state0)
    with np.errstate(all="ignore"):
        ref.optimizer_step(rule, wp, g.astype(np.float64), wstate, h)
    inputs = [("p", p0), ("g", g)] + list(zip(names, state0))
    agree(p, wp, dtype, what=f"{rule} param", inputs=inputs)
    for key, s, w in zip(names, state, wstate):
        agree(s, w, dtype, what=f"{rule} {key}", inputs=inputs)


# ---- PyTorch's edge cases (issue 14, item 11) -------------------------------------
BACKENDS = ("numpy", "cpu")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", list(specs.UPDATE_RULES))
def test_inf_weight_stays_inf_without_weight_decay(rule, backend, dtype, rng):
    """No weight decay: an inf weight is never multiplied by 0 (PyTorch skips the
    decay term), so +-inf stays +-inf under every rule, not NaN."""
    be = fn.get_backend(backend)
    n = 7
    p = rand(rng, n, dtype)
    p[[1, 4]] = [np.inf, -np.inf]
    g = rand(rng, n, dtype)
    state = tuple(_state(rng, specs.UPDATE_RULES[rule].state, n, dtype))
    h = rule_scalars(rule)._replace(l2=0.0)
    be.optimizer_step(rule, p, g, state, h._make(dtype(x) for x in h))
    assert p[1] == np.inf and p[4] == -np.inf, p
    assert np.isfinite(np.delete(p, [1, 4])).all(), p


SGD_P = [np.inf, -np.inf, 1.0, -2.0]
SGD_G = [0.5, 0.5, 0.5, -1.5]
SGD_WANT = [np.inf, -np.inf, 0.95, -1.85]           # lr 0.1, torch.optim.SGD


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sgd_keeps_inf_weight(backend, dtype):
    be = fn.get_backend(backend)
    p, g = np.array(SGD_P, dtype), np.array(SGD_G, dtype)
    h = specs.SGDScalars(dtype(1.0), dtype(0.0), dtype(0.1))
    be.optimizer_step("sgd", p, g, (), h)
    np.testing.assert_allclose(p, np.array(SGD_WANT, dtype), rtol=1e-6)


MOM_P = [1.0, -2.0, 3.0]
MOM_G = [np.inf, -np.inf, 0.5]
MOM_WANT = [-np.inf, np.inf, 2.95]      # lr 0.1, momentum 0.9, first step (torch)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_heavy_ball_momentum_inf_gradient(backend, dtype):
    """Heavy-ball momentum steps by the buffer alone: an inf gradient gives an inf
    step, not 0 * inf = NaN (PyTorch)."""
    be = fn.get_backend(backend)
    p, g, b = np.array(MOM_P, dtype), np.array(MOM_G, dtype), np.zeros(3, dtype)
    # first step: mu = 0, c = 1, heavy ball: update n_d d + n_b b = 0 d + 1 b
    h = specs.MomentumScalars(*(dtype(v) for v in (1.0, 0.0, 0.1, 0.0, 1.0, 0.0, 1.0)))
    be.optimizer_step("sgd_momentum", p, g, (b,), h)
    np.testing.assert_allclose(p, np.array(MOM_WANT, dtype), rtol=1e-6)
    np.testing.assert_array_equal(b, np.array(MOM_G, dtype))


RMS_P = [1.0, -2.0, 3.0, 0.5]
RMS_G = [1e30, -1e30, 1e30, 3e29]
RMS_WANT = RMS_P                       # float32, lr 0.01, alpha 0.99: unchanged


def _rmsprop_centered(be, dtype, rule="rmsprop_centered"):
    p, g = np.array(RMS_P, dtype), np.array(RMS_G, dtype)
    state = tuple(np.zeros(4, dtype) for _ in specs.UPDATE_RULES[rule].state)
    h = specs.RMSpropScalars(*(dtype(v) for v in (1.0, 0.0, 0.01, 0.99, 0.01, 1e-8,
                                                  0.5)))
    with np.errstate(over="ignore"):
        be.optimizer_step(rule, p, g, state, h)
    return p, state


@pytest.mark.parametrize("rule", ["rmsprop_centered", "rmsprop_centered_momentum"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_centered_rmsprop_overflow_leaves_weights(backend, rule):
    """float32 gradients of 1e30: square_avg overflows to inf and grad_avg^2 would
    too; PyTorch's addcmul (a fused multiply-add) keeps the variance at inf, so the
    step d / (inf + eps) is 0 and the weights stay as they were."""
    p, (sq, ga, *_) = _rmsprop_centered(fn.get_backend(backend), np.float32, rule)
    np.testing.assert_array_equal(p, np.array(RMS_WANT, np.float32))
    assert np.isposinf(sq).all()
    np.testing.assert_allclose(ga, np.float32(0.01) * np.array(RMS_G, np.float32),
                               rtol=1e-6)


CE_Z = [[1.0, 2.0, -0.5], [0.3, -1.0, 2.5], [1.0, 2.0, -0.5]]
CE_T = [[np.inf, 0.2, 0.3], [0.1, 0.6, 0.3], [0.5, -np.inf, 0.3]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_inf_target_probability(backend, dtype):
    """An inf target probability: loss +inf (-inf target: -inf), gradient NaN at that
    class and +inf at the others, as PyTorch."""
    be = fn.get_backend(backend)
    z = np.array(CE_Z[:2], dtype)
    t = np.array(CE_T[:2], dtype)
    grad = poisoned(z.shape, dtype)
    with np.errstate(all="ignore"):
        value = be.loss("cross_entropy_probs", z, t, grad, 0.0, 0.5)
    assert value == np.inf
    assert np.isnan(grad[0, 0]) and np.isposinf(grad[0, 1:]).all(), grad
    assert np.isfinite(grad[1]).all(), grad
    z, t = np.array(CE_Z[2:], dtype), np.array(CE_T[2:], dtype)
    with np.errstate(all="ignore"):
        value = be.loss("cross_entropy_probs", z, t, poisoned(z.shape, dtype), 0.0, 1.0)
    assert value == -np.inf


# ---- the same cases against torch, when it is installed ----------------------------
def _torch():
    return pytest.importorskip("torch", reason="torch not installed: the fixed "
                               "expected values above cover these cases without it")


def test_fixed_values_match_torch():
    torch = _torch()
    for name, want in ACT_DF.items():
        z = torch.tensor(ACT_Z, dtype=torch.float64, requires_grad=True)
        getattr(torch.nn.functional, name)(z).backward(torch.ones(len(ACT_Z),
                                                                  dtype=torch.float64))
        np.testing.assert_allclose(z.grad.numpy(), want, rtol=1e-12)
    for tdt in (torch.float32, torch.float64):
        p = torch.tensor(SGD_P, dtype=tdt, requires_grad=True)
        p.grad = torch.tensor(SGD_G, dtype=tdt)
        torch.optim.SGD([p], lr=0.1).step()
        np.testing.assert_allclose(p.detach().numpy(), SGD_WANT, rtol=1e-6)
    p = torch.tensor(MOM_P, dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor(MOM_G, dtype=torch.float64)
    torch.optim.SGD([p], lr=0.1, momentum=0.9).step()
    np.testing.assert_allclose(p.detach().numpy(), MOM_WANT, rtol=1e-12)
    for momentum in (0.0, 0.5):
        p = torch.tensor(RMS_P, dtype=torch.float32, requires_grad=True)
        p.grad = torch.tensor(RMS_G, dtype=torch.float32)
        torch.optim.RMSprop([p], lr=0.01, alpha=0.99, eps=1e-8, centered=True,
                            momentum=momentum).step()
        np.testing.assert_array_equal(p.detach().numpy(), np.float32(RMS_WANT))
    z = torch.tensor(CE_Z[:2], dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(z, torch.tensor(CE_T[:2],
                                                             dtype=torch.float64))
    loss.backward()
    assert loss.item() == np.inf
    g = z.grad.numpy()
    assert np.isnan(g[0, 0]) and np.isposinf(g[0, 1:]).all() and np.isfinite(g[1]).all()
    loss = torch.nn.functional.cross_entropy(torch.tensor(CE_Z[2:]),
                                             torch.tensor(CE_T[2:]))
    assert loss.item() == -np.inf


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_match_torch_on_edge_cases(backend, dtype):
    """The three cases through each backend and through torch, in the same dtype."""
    torch = _torch()
    be = fn.get_backend(backend)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    p, g = np.array(SGD_P, dtype), np.array(SGD_G, dtype)
    be.optimizer_step("sgd", p, g, (), specs.SGDScalars(dtype(1), dtype(0), dtype(0.1)))
    tp = torch.tensor(SGD_P, dtype=tdt, requires_grad=True)
    tp.grad = torch.tensor(SGD_G, dtype=tdt)
    torch.optim.SGD([tp], lr=0.1).step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-6)

    p, _ = _rmsprop_centered(be, dtype)
    tp = torch.tensor(RMS_P, dtype=tdt, requires_grad=True)
    tp.grad = torch.tensor(RMS_G, dtype=tdt)
    torch.optim.RMSprop([tp], lr=0.01, alpha=0.99, eps=1e-8, centered=True).step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-5)

    z, t = np.array(CE_Z[:2], dtype), np.array(CE_T[:2], dtype)
    grad = poisoned(z.shape, dtype)
    with np.errstate(all="ignore"):
        value = be.loss("cross_entropy_probs", z, t, grad, 0.0, 0.5)
    tz = torch.tensor(CE_Z[:2], dtype=tdt, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(CE_T[:2], dtype=tdt))
    tl.backward()
    assert value == tl.item()
    agree(grad, tz.grad.numpy(), dtype, what="cross-entropy gradient vs torch")
