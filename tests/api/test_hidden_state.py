"""A model's hidden state against a user acting on habit (issue 14, items 1, 3, 4 and
the model's share of 8 and 12): the flat buffers cannot be swapped for arrays the
kernels would read out of bounds; predict/evaluate leave what backward needs alone;
inputs that alias the model's (or the loss's) own buffers are copied, never
corrupted; predict from several threads; scalars the dtype cannot hold and arguments
that are not what they should be are refused, naming them."""
import threading

import numpy as np
import pytest

import fastnn as fn
from kernel_cases import BACKENDS as ALL_BACKENDS      # cuda too, where available

BACKENDS = ["numpy", "cpu"]


def _model(backend, layers=2, seed=0):
    if layers == 1:
        dense = [fn.Dense(5, 5)]
    else:
        dense = [fn.Dense(5, 7, activation="tanh"), fn.Dense(7, 5)]
    return fn.Sequential(*dense, backend=backend, dtype=np.float64, seed=seed)


def _grads_of(model, x, grad):
    model.zero_grad()
    model.forward(np.array(x))
    model.backward(np.array(grad))
    return model.get_gradients()


def _same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)


# -- item 1: the flat buffers and the parameter views --------------------------------
@pytest.mark.parametrize("attr", ["flat_params", "flat_grads"])
def test_flat_buffers_cannot_be_replaced(attr):
    m = _model("cpu")
    opt = fn.Adam(m.parameters())
    before = m.flat_params.copy()
    with pytest.raises(AttributeError, match=f"{attr} cannot be replaced"):
        setattr(m, attr, np.zeros(50_000_000 if attr == "flat_params" else 3))
    m.zero_grad()
    opt.step()                   # still the model's own buffers: no read out of bounds
    np.testing.assert_array_equal(m.flat_params, before)       # zero gradients


@pytest.mark.parametrize("attr", ["data", "grad"])
def test_parameter_views_cannot_be_replaced(attr):
    p = _model("cpu").parameters()[0]
    with pytest.raises(AttributeError, match=rf"p\.{attr}\[\.\.\.\] = values"):
        setattr(p, attr, np.zeros(p.shape))
    getattr(p, attr)[...] = 0.5          # writing into the view is how it is done
    assert np.all(getattr(p, attr) == 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_optimizer_step_refuses_buffers_of_other_lengths(backend):
    """Every compiled entry point that takes raw buffers checks their lengths."""
    from fastnn.kernels import specs

    rule = specs.UPDATE_RULES["sgd"]
    hyper = rule.scalars(*(np.float32(0.1) for _ in rule.scalars._fields))
    params, grads = np.ones(10, np.float32), np.ones(9, np.float32)
    with pytest.raises(ValueError, match="grads buffer holds 9 values, the parameters 10"):
        fn.get_backend(backend).optimizer_step("sgd", params, grads, (), hyper)
    np.testing.assert_array_equal(params, 1)


# -- item 3: hidden forward state --------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_and_evaluate_between_forward_and_backward(backend, rng):
    xb, yb = rng.standard_normal((8, 5)), rng.integers(0, 5, 8)
    x_val = rng.standard_normal((8, 5))            # as many rows as the batch
    m, lf = _model(backend), fn.CrossEntropyLoss()
    lf.forward(m.forward(xb), yb)
    g = lf.backward().copy()
    want = _grads_of(_model(backend), xb, g)
    m.zero_grad()
    lf.forward(m.forward(xb), yb)
    m.predict(x_val)
    m.evaluate(x_val, yb, loss="cross_entropy")
    m.backward(g)
    _same(m.get_gradients(), want)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("layers", [1, 2])
def test_forward_of_its_own_output(backend, layers, rng):
    """m(m(x)) with copy=False: the input is the model's output buffer, which the
    pass would overwrite while reading it (on the cuda backend: a device array)."""
    xb = rng.standard_normal((8, 5))
    m, ref = _model(backend, layers), _model(backend, layers)
    inner = ref.to_numpy(ref.forward(xb))
    want = ref.to_numpy(ref.forward(inner))
    got = m.to_numpy(m.forward(m.forward(xb, copy=False), copy=False))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    g = rng.standard_normal(got.shape)
    m.zero_grad()
    m.backward(g)
    _same(m.get_gradients(), _grads_of(ref, inner, g))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_of_a_view_of_flat_grads(backend, rng):
    """``grad`` is the gradient buffer itself (6 rows x 5 outputs = the 30 parameters
    of a 5-5 layer), which the pass adds into while it reads ``grad``."""
    xb = rng.standard_normal((6, 5))
    m, ref = _model(backend, 1), _model(backend, 1)
    m.forward(xb)
    m.flat_grads[...] = rng.standard_normal(m.flat_grads.shape)
    start = m.get_gradients()
    g = m.flat_grads.reshape(6, 5)
    expected = [s + d for s, d in zip(start, _grads_of(ref, xb, g.copy()))]
    m.backward(g)
    _same(m.get_gradients(), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_of_its_own_gradient(backend, rng):
    """loss.forward(loss.backward(), y): the kernel would write what it reads."""
    out, y = rng.standard_normal((8, 5)), rng.integers(0, 5, 8)
    lf, ref = fn.CrossEntropyLoss(backend=backend), fn.CrossEntropyLoss(backend=backend)
    lf.forward(out, y)
    g = lf.backward()
    want = ref.forward(g.copy(), y)
    assert lf.forward(g, y) == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(lf.backward(), ref.backward(), rtol=1e-12)


# -- item 4: threads ---------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_from_two_threads(backend, rng):
    m = fn.Sequential(fn.Dense(50, 200, activation="relu"), fn.Dense(200, 10),
                      backend=backend, seed=0)
    data = [rng.standard_normal((2000, 50)).astype(np.float32) for _ in range(2)]
    want = [m.predict(x, batch_size=64) for x in data]
    wrong, errors = [0], []

    def work(x, ref):
        try:
            for _ in range(10):
                wrong[0] += not np.array_equal(m.predict(x, batch_size=64), ref)
        except Exception as exc:                  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=a) for a in zip(data, want)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and wrong[0] == 0, (errors, wrong)


# -- items 8 and 12: scalars and arguments -------------------------------------------
@pytest.mark.parametrize("scale, message", [(1e39, "overflows float32"),
                                            (-1e39, "overflows float32"),
                                            (1e-50, "rounds to 0 in float32")])
def test_backward_scale_the_dtype_cannot_hold(scale, message, rng):
    m = fn.Sequential(fn.Dense(5, 5), seed=0)
    m.forward(rng.standard_normal((8, 5)).astype(np.float32))
    before = m.flat_grads.copy()
    with pytest.raises(ValueError, match=f"scale=.*{message}"):
        m.backward(np.ones((8, 5), np.float32), scale=scale)
    np.testing.assert_array_equal(m.flat_grads, before)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_seed_is_named(seed):
    with pytest.raises(ValueError, match="seed must be None or a non-negative integer"):
        fn.Sequential(fn.Dense(2, 2), seed=seed)


def test_ragged_set_weights_is_named():
    m = _model("cpu")
    before = m.flat_params.copy()
    with pytest.raises(ValueError, match=r"weights\[0\.weight\] must be an array of one "
                                         "shape"):
        m.set_weights([[[1.0, 2.0], [3.0]], *m.get_weights()[1:]])
    np.testing.assert_array_equal(m.flat_params, before)
