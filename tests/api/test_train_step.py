"""``Sequential.train_step``: one optimizer step in one call, the same as the five calls
of a manual loop (zero_grad, forward, loss, backward, step) bit for bit, and ``fit``,
which runs it per micro-batch, the same as fit with the separate calls.

On the cpu backend the step is ONE compiled call (``kernels/_dense.pyx: train_step``,
with the loss and update-rule kernels as C function pointers); the other backends make
the separate calls.  Every comparison here is exact (``np.array_equal``, ``==``): the
same kernels run in the same order."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import optim, threads
from fastnn.kernels import _dense, specs
from kernel_cases import BACKENDS, CUDA_SIMULATED, TARGETS, rand

DTYPES = (np.float32, np.float64)
# The sweeps' backends: the cuda backend makes the five calls (no one-call step), so
# under the simulator (~10 s a case) one case checks it (test_cuda_makes_the_five_calls)
# and the sweeps leave it out; on a real GPU they run it too.
SWEEP = tuple(b for b in BACKENDS if b != "cuda" or not CUDA_SIMULATED)

# An optimizer reaching each update rule of the registry.
RULE_OPTIMIZERS = {
    "sgd": lambda m: optim.SGD(m, lr=0.05, weight_decay=0.01),
    "sgd_momentum": lambda m: optim.SGD(m, lr=0.05, momentum=0.9, nesterov=True),
    "adagrad": lambda m: optim.Adagrad(m, lr=0.05, lr_decay=0.01),
    "rmsprop": lambda m: optim.RMSprop(m, lr=0.01),
    "rmsprop_centered": lambda m: optim.RMSprop(m, lr=0.01, centered=True),
    "rmsprop_momentum": lambda m: optim.RMSprop(m, lr=0.01, momentum=0.5),
    "rmsprop_centered_momentum": lambda m: optim.RMSprop(m, lr=0.01, momentum=0.5,
                                                         centered=True),
    "adadelta": lambda m: optim.Adadelta(m, weight_decay=0.01),
    "adam": lambda m: optim.AdamW(m, lr=0.01),
    "adam_amsgrad": lambda m: optim.Adam(m, lr=0.01, amsgrad=True, maximize=True),
}

# The public loss for each loss kernel (cross_entropy_probs: cross-entropy against
# class probabilities).
KERNEL_LOSSES = {name: fn.losses.LOSS_CLASSES.get(name, fn.CrossEntropyLoss)
                 for name in specs.LOSS_KERNELS}


def test_every_rule_and_loss_kernel_is_covered():
    m = fn.Sequential(fn.Dense(2, 2))
    rules = {name: make(m)._rule(make(m)._hyper) for name, make in RULE_OPTIMIZERS.items()}
    assert all(k == v for k, v in rules.items()) and set(rules) == set(specs.UPDATE_RULES)
    assert set(KERNEL_LOSSES) == set(specs.LOSS_KERNELS)


def _model(backend, dtype, last="linear", hidden=("gelu", "softmax"), sizes=(7, 11, 9, 5),
           seed=3):
    acts = (*hidden, last)
    return fn.Sequential(*(fn.Dense(sizes[i], sizes[i + 1], acts[i])
                           for i in range(len(sizes) - 1)),
                         backend=backend, dtype=dtype, seed=seed)


def _target(kernel, rng, rows, cols, dtype):
    return TARGETS[specs.LOSS_KERNELS[kernel].target](rng, (rows, cols), dtype)


def _five_calls(model, x, y, loss, opt):
    opt.zero_grad()
    out = model(x, copy=False)
    value = loss(out, y)
    model.backward(loss.backward())
    opt.step()
    return value


def _state(model, opt, loss):
    b = model.backend
    return ([model.to_numpy(model.flat_params), model.to_numpy(model.flat_grads),
             model.to_numpy(loss.backward())]
            + [b.to_numpy(v) for v in opt.state.values()] + [opt.step_count])


def _assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        if isinstance(u, np.ndarray):
            assert u.dtype == v.dtype and np.array_equal(u, v, equal_nan=True)
        else:
            assert u == v


def _run_both(backend, dtype, kernel, rule, rng, rows=13, steps=3, hidden=("gelu",
                                                                           "softmax")):
    last = "sigmoid" if kernel == "bce" else "linear"
    a = _model(backend, dtype, last, hidden)
    b = _model(backend, dtype, last, hidden)
    oa, ob = RULE_OPTIMIZERS[rule](a), RULE_OPTIMIZERS[rule](b)
    la, lb = KERNEL_LOSSES[kernel](), KERNEL_LOSSES[kernel]()
    for _ in range(steps):
        x = rand(rng, (rows, a.in_features), dtype)
        y = _target(kernel, rng, rows, a.out_features, dtype)
        va = a.train_step(x, y, la, oa)
        vb = _five_calls(b, x, y, lb, ob)
        assert isinstance(va, float) and va == vb
    _assert_same(_state(a, oa, la), _state(b, ob, lb))
    return a, oa


@pytest.mark.parametrize("backend", SWEEP)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", list(specs.LOSS_KERNELS))
def test_every_loss_kernel_equals_the_five_calls(backend, dtype, kernel, rng):
    _run_both(backend, dtype, kernel, "adam", rng)


@pytest.mark.parametrize("backend", SWEEP)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", list(specs.UPDATE_RULES))
def test_every_update_rule_equals_the_five_calls(backend, dtype, rule, rng):
    _run_both(backend, dtype, "cross_entropy", rule, rng)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "cuda"])
def test_cuda_makes_the_five_calls(backend, rng):
    _run_both(backend, np.float32, "cross_entropy", "adam", rng, rows=5, steps=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(specs.ACTIVATIONS))
def test_every_activation_equals_the_five_calls_on_both_cpu_paths(dtype, activation,
                                                                   mode, rng):
    # mode: the serial and the parallel kernels (the conftest fixture)
    _run_both("cpu", dtype, "mse", "sgd_momentum", rng, hidden=(activation, activation))


def test_large_model_takes_the_parallel_kernels_it_would_take_anyway(monkeypatch, rng):
    # sizes that choose numba's parallel kernels by the ordinary rule
    monkeypatch.setattr(threads, "PARALLEL_MIN", 1000)
    if threads.get_num_threads() < 2:
        pytest.skip("one thread: no parallel kernels to choose")
    a = _model("cpu", np.float32, sizes=(33, 65, 17, 9))
    b = _model("cpu", np.float32, sizes=(33, 65, 17, 9))
    oa, ob = optim.Adam(a), optim.Adam(b)
    la, lb = fn.MSELoss(), fn.MSELoss()
    for _ in range(2):
        x = rand(rng, (129, 33), np.float32)
        y = rand(rng, (129, 9), np.float32)
        assert a.train_step(x, y, la, oa) == _five_calls(b, x, y, lb, ob)
    _assert_same(_state(a, oa, la), _state(b, ob, lb))


def test_cpu_step_is_one_compiled_call(monkeypatch, rng):
    m = _model("cpu", np.float32)
    opt, loss = optim.SGD(m, lr=0.1), fn.CrossEntropyLoss()
    x, y = rand(rng, (8, 7), np.float32), rng.integers(0, 5, 8)
    m.train_step(x, y, loss, opt)                       # compile outside the count
    be = m.backend
    for name in ("model_forward", "model_backward", "loss", "optimizer_step", "fill"):
        monkeypatch.setattr(be, name, lambda *a, _n=name: pytest.fail(f"{_n} called"))
    calls = []
    real = _dense.train_step
    monkeypatch.setattr(_dense, "train_step", lambda *a: calls.append(1) or real(*a))
    m.train_step(x, y, loss, opt)
    assert len(calls) == 1 and opt.step_count == 2


def _snapshot(model, opt):
    return ([model.to_numpy(model.flat_params).copy(), model.to_numpy(model.flat_grads).copy()]
            + [opt.model.backend.to_numpy(v).copy() for v in opt.state.values()]
            + [opt.step_count])


@pytest.mark.parametrize("backend", SWEEP)
@pytest.mark.parametrize("y, exc, match", [
    (np.array([0, 1, 5, 2]), ValueError, r"target labels must lie in \[0, 5\)"),
    (np.array([0, 1, -1, 2]), ValueError, r"target labels must lie in \[0, 5\)"),
    (np.array([0, 1, 2]), ValueError, "4 rows but target has 3"),
    (np.array([0.0, 1.0, 2.0, 3.0]), TypeError, "target labels must be integers"),
    (np.full((4, 3), 0.2, np.float32), ValueError, "shape"),
])
def test_bad_targets_are_refused_before_anything_changes(backend, y, exc, match, rng):
    m = _model(backend, np.float32)
    opt, loss = optim.Adam(m), fn.CrossEntropyLoss()
    x = rand(rng, (4, 7), np.float32)
    m.train_step(x, np.array([0, 1, 2, 3]), loss, opt)
    before = _snapshot(m, opt)
    with pytest.raises(exc, match=match):
        m.train_step(x, y, loss, opt)
    _assert_same(_snapshot(m, opt), before)


@pytest.mark.parametrize("x, exc, match", [
    (np.zeros((4, 7)), TypeError, "x must have dtype float32"),
    (np.zeros((4, 6), np.float32), ValueError, "x must have 7 columns"),
    (np.zeros((0, 7), np.float32), ValueError, "at least one row"),
    (np.zeros(7, np.float32), ValueError, "x must be 2-D"),
])
def test_bad_inputs_are_refused_before_anything_changes(x, exc, match, rng):
    m = _model("cpu", np.float32)
    opt = optim.SGD(m, lr=0.1)
    before = _snapshot(m, opt)
    with pytest.raises(exc, match=match):
        m.train_step(x, np.zeros(len(x), np.intp), "cross_entropy", opt)
    _assert_same(_snapshot(m, opt), before)
    assert m.optimizer is None and m.loss is None


def test_loss_and_optimizer_are_needed_or_remembered(rng):
    m = _model("cpu", np.float32)
    x, y = rand(rng, (4, 7), np.float32), rng.integers(0, 5, 4)
    with pytest.raises(ValueError, match="loss is needed"):
        m.train_step(x, y, optimizer="sgd")
    with pytest.raises(ValueError, match="optimizer is needed"):
        m.train_step(x, y, loss="cross_entropy")
    other = _model("cpu", np.float32)
    with pytest.raises(ValueError, match="another model"):
        m.train_step(x, y, "cross_entropy", optim.SGD(other))
    # names, as in fit: the model keeps them, and "adam" continues its own Adam
    m.train_step(x, y, "cross_entropy", "adam")
    opt = m.optimizer
    m.train_step(x, y, "cross_entropy", "adam")
    m.train_step(x, y)
    assert m.optimizer is opt and opt.step_count == 3
    assert isinstance(m.loss, fn.CrossEntropyLoss)


def test_bce_checks_the_output_before_any_change(rng):
    # BCE needs probabilities: a linear output outside [0, 1] is refused, and the
    # one-call step (which cannot check between its passes) is not used for it
    m = _model("cpu", np.float32, last="linear")
    opt = optim.SGD(m, lr=0.1)
    x = rand(rng, (6, 7), np.float32) * 100
    before = _snapshot(m, opt)
    with pytest.raises(ValueError, match="probabilities"):
        m.train_step(x, np.full((6, 5), 0.5, np.float32), fn.BCELoss(), opt)
    _assert_same(_snapshot(m, opt), before)


class MeanFourth(fn.Loss):
    def value_and_grad(self, output, target):
        d = output - target
        return float((d ** 4).mean()), 4 * d ** 3 / d.size


class NoisyForward(fn.Sequential):
    def forward(self, x, copy=True):
        return super().forward(x * 0.5, copy=copy)


@pytest.mark.parametrize("case", ["custom loss", "subset optimizer", "overridden forward"])
def test_other_cases_make_the_five_calls(case, rng):
    def build():
        if case == "overridden forward":
            return NoisyForward(fn.Dense(7, 5, "tanh"), fn.Dense(5, 3), seed=1)
        return fn.Sequential(fn.Dense(7, 5, "tanh"), fn.Dense(5, 3), seed=1)

    a, b = build(), build()

    def opt_for(m):
        params = m.parameters()[2:] if case == "subset optimizer" else m
        return optim.Adam(params, lr=0.01)

    oa, ob = opt_for(a), opt_for(b)
    la, lb = (MeanFourth(), MeanFourth()) if case == "custom loss" else (fn.MSELoss(),
                                                                        fn.MSELoss())
    for _ in range(3):
        x, y = rand(rng, (9, 7), np.float32), rand(rng, (9, 3), np.float32)
        assert a.train_step(x, y, la, oa) == _five_calls(b, x, y, lb, ob)
    _assert_same(_state(a, oa, la), _state(b, ob, lb))


# ---- fit: one call per micro-batch -------------------------------------------------
FIT_CASES = {
    "plain": dict(batch_size=16),
    "micro-batches": dict(batch_size=16, micro_batch_size=5),
    "clipped": dict(batch_size=16, micro_batch_size=7, clip_grad_norm=0.05),
    "validation": dict(batch_size=10, validation_split=0.2),
    "batch scheduler": dict(batch_size=16, scheduler="batch"),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
@pytest.mark.parametrize("loss, last", [("cross_entropy", "linear"),
                                        ("bce_with_logits", "linear"), ("mse", "tanh")])
def test_fit_with_one_call_equals_fit_with_separate_calls(case, loss, last, monkeypatch,
                                                          rng):
    n = 45
    X = rand(rng, (n, 7), np.float64)
    y = (rng.integers(0, 5, n) if loss == "cross_entropy"
         else rng.uniform(0, 1, (n, 5)) if loss == "bce_with_logits"
         else rand(rng, (n, 5), np.float64))
    kwargs = dict(FIT_CASES[case])
    results = []
    for one_call in (True, False):
        be = fn.get_backend("cpu")
        monkeypatch.setattr(be, "one_call_step", one_call)
        m = _model("cpu", np.float64, last)
        opt = optim.Adam(m, lr=0.01)
        kw = dict(kwargs)
        if kw.get("scheduler") == "batch":
            kw.update(scheduler=optim.StepLR(opt, step_size=2, gamma=0.5),
                      scheduler_interval="batch")
        calls = []
        real = _dense.train_step
        monkeypatch.setattr(_dense, "train_step", lambda *a: calls.append(a[-3]) or real(*a))
        hist = m.fit(X, y, loss=loss, optimizer=opt, epochs=3, seed=5, progress=False,
                     **kw)
        monkeypatch.setattr(_dense, "train_step", real)
        assert bool(calls) == one_call
        if one_call and case in ("plain", "validation"):
            assert all(step != 0 for step in calls)     # the update inside every call
        results.append((hist.history, _state(m, opt, m.loss)))
    assert results[0][0] == results[1][0]
    _assert_same(results[0][1], results[1][1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, rule", [("cross_entropy", "adam_amsgrad"),
                                          ("cross_entropy_probs", "sgd"),
                                          ("huber", "rmsprop_centered_momentum")])
def test_the_compiled_call_is_the_interface_default_composition(dtype, kernel, rule,
                                                                 monkeypatch, rng):
    # Backend.train_step's default (fill, model_forward, loss, model_backward,
    # optimizer_step: the cpu backend's own kernels) against the one Cython call
    from fastnn.backends import base

    xs = [rand(rng, (11, 7), dtype) for _ in range(3)]
    ys = [_target(kernel, rng, 11, 5, dtype) for _ in range(3)]
    runs = []
    for default in (False, True):
        be = fn.get_backend("cpu")
        if default:
            monkeypatch.setattr(be, "train_step",
                                lambda *a: base.Backend.train_step(be, *a))
        m = _model("cpu", dtype)
        opt, loss = RULE_OPTIMIZERS[rule](m), KERNEL_LOSSES[kernel]()
        values = [m.train_step(x, y, loss, opt) for x, y in zip(xs, ys)]
        runs.append((values, _state(m, opt, loss)))
    assert runs[0][0] == runs[1][0]
    _assert_same(runs[0][1], runs[1][1])


@pytest.mark.parametrize("label", [5, -1, 2 ** 40])
def test_cpu_loss_checks_labels_before_writing(label, rng):
    # the cpu backend range-checks class labels in C (checks_labels), so the loss
    # skips its NumPy min/max: an out-of-range label is still refused, naming it,
    # and the gradient buffer is not written
    be = fn.get_backend("cpu")
    out = rand(rng, (4, 5), np.float32)
    grad = np.full((4, 5), np.nan, np.float32)
    y = np.array([0, 1, label, 2], np.intp)
    with pytest.raises(ValueError, match=rf"target labels must lie in \[0, 5\), got "
                                         rf"{label} \(row 2\)"):
        be.loss("cross_entropy", out, y, grad, 0.0, 0.25)
    assert np.isnan(grad).all()
    with pytest.raises(ValueError, match=r"target labels must lie in \[0, 5\)"):
        fn.CrossEntropyLoss()(out, y)
