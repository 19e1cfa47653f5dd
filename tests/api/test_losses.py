"""Losses as a user meets them: custom losses written in NumPy (honoured by the manual
loop, fit and evaluate), subclasses of the built-in ones, the backend taken from the
output, and the mistakes a habit from other libraries makes (a class for an
instance)."""
import numpy as np
import pytest

import fastnn as fn
from kernel_cases import BACKENDS, rand


def make(backend="cpu", dtype=np.float64, seed=0):
    return fn.Sequential(fn.Dense(6, 8, activation="tanh"), fn.Dense(8, 3),
                         backend=backend, dtype=dtype, seed=seed)


def blobs(rng, n=60):
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, 6)) * 0.5
    X[np.arange(n), y] += 2.0
    return X, y


class NumpyMSE(fn.Loss):
    """The mean squared error, written as a user would: NumPy in, (value, grad) out."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def value_and_grad(self, output, target):
        self.calls += 1
        d = output - target
        return float(np.mean(d * d)), 2 * d / d.size


def test_a_numpy_loss_works_in_the_manual_loop_like_the_kernel(rng):
    out, t = rand(rng, (5, 3), np.float64), rand(rng, (5, 3), np.float64)
    mine, builtin = NumpyMSE(), fn.MSELoss()
    assert mine.forward(out, t) == pytest.approx(builtin.forward(out, t), rel=1e-14)
    np.testing.assert_allclose(mine.backward(), builtin.backward(), rtol=1e-14)
    assert mine(out, t) == mine.forward(out, t) and mine.calls == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_and_evaluate_honour_a_numpy_loss(backend, rng):
    """fit with a custom loss trains exactly as with the built-in kernel it mirrors
    (same steps: the gradients agree to rounding), and evaluate reports it."""
    X, y = blobs(rng)
    Y = np.eye(3)[y]
    runs = []
    for loss in (NumpyMSE(), fn.MSELoss()):
        model = make(backend)
        hist = model.fit(X, Y, loss=loss, optimizer=fn.SGD(model, lr=0.1), epochs=3,
                         batch_size=16, micro_batch_size=5, seed=2, progress=False)
        runs.append((model.to_numpy(model.flat_params), hist.loss,
                     model.evaluate(X, Y)["loss"]))
    (p_mine, h_mine, e_mine), (p_kernel, h_kernel, e_kernel) = runs
    np.testing.assert_allclose(p_mine, p_kernel, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_mine, h_kernel, rtol=1e-12)
    assert e_mine == pytest.approx(e_kernel, rel=1e-12)


def test_a_custom_loss_must_say_how_it_computes():
    class Nothing(fn.Loss):
        pass

    with pytest.raises(TypeError, match="Nothing must implement value_and_grad"):
        Nothing()

    class WrongShape(fn.Loss):
        def value_and_grad(self, output, target):
            return 0.0, np.zeros(3)

    with pytest.raises(ValueError, match=r"WrongShape.value_and_grad returned a "
                                         r"gradient of shape \(3,\)"):
        WrongShape().forward(np.ones((2, 3)), np.ones((2, 3)))


class CountingCE(fn.CrossEntropyLoss):
    """A built-in loss with an overridden forward (label smoothing would be one)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, output, target):
        self.calls += 1
        return 2.0 * super().forward(output, target)

    def backward(self):
        return 2.0 * super().backward()


def test_fit_calls_an_overridden_forward(rng):
    X, y = blobs(rng, 40)
    loss = CountingCE()
    model = make()
    hist = model.fit(X, y, loss=loss, optimizer="sgd", epochs=2, batch_size=10,
                     micro_batch_size=5, validation_split=0.25, progress=False)
    # 30 training rows in micro-batches of 5, twice, and the validation rows
    assert loss.calls == 2 * 6 + 2 * 2
    # the doubled loss is what fit reports, with the built-in's accuracy rule
    plain = fn.CrossEntropyLoss().forward(model.predict(X[30:]), y[30:])
    assert hist.val_loss[-1] == pytest.approx(2 * plain, rel=1e-12)
    assert "accuracy" in hist.history
    out = rand(rng, (4, 3), np.float64)
    assert loss(out, y[:4]) == loss.forward(out, y[:4])     # __call__ follows forward


@pytest.mark.skipif("cuda" not in BACKENDS, reason="needs the cuda backend")
def test_a_loss_follows_the_backend_of_its_output(rng):
    """The contract's manual loop works on a cuda model with a loss made without a
    backend: the loss runs where the output is."""
    x, y = rand(rng, (5, 6), np.float32), rng.integers(0, 3, 5)
    values = {}
    for backend in ("cpu", "cuda"):
        model = make(backend, np.float32)
        loss_fn = fn.CrossEntropyLoss()
        values[backend] = loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward())
        assert model.to_numpy(model.flat_grads).any()
    assert values["cuda"] == pytest.approx(values["cpu"], rel=1e-5)


def test_a_class_for_an_instance_gets_a_helpful_message(rng):
    X, y = blobs(rng, 20)
    model = make()
    with pytest.raises(TypeError, match=r"got the class MSELoss: pass MSELoss\(\)"):
        model.fit(X, np.eye(3)[y], loss=fn.MSELoss, optimizer="sgd", progress=False)
    with pytest.raises(TypeError, match=r"got the class Adam: pass Adam\(model"):
        model.fit(X, y, loss="cross_entropy", optimizer=fn.Adam, progress=False)
    assert model.optimizer is None and model.loss is None


def test_model_output_is_a_new_array_unless_asked(rng):
    """[model(xb) for xb in batches] keeps every batch's outputs; copy=False hands out
    the model's own buffer (what fit uses), overwritten by the next forward."""
    model = make()
    batches = [rand(rng, (4, 6), np.float64) for _ in range(3)]
    outs = [model(xb) for xb in batches]
    for xb, out in zip(batches, outs):
        np.testing.assert_array_equal(out, model.predict(xb))
    buf = model.forward(batches[0], copy=False)
    assert np.shares_memory(buf, model.plan(4).workspace)
    model.forward(batches[1], copy=False)
    np.testing.assert_array_equal(buf, outs[1])


def test_resume_after_load_continues_the_saved_optimizer(tmp_path, rng):
    """fit after load continues with the loaded optimizer (by name, or with none
    given) and the saved loss: the same weights as one uninterrupted run."""
    X, y = blobs(rng)
    whole = make()
    whole.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=4, seed=1,
              shuffle=False, progress=False)
    first = make()
    first.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=2, seed=1,
              shuffle=False, progress=False)
    first.save(tmp_path / "m.npz")
    for how in ({"optimizer": "Adam"}, {}):
        resumed = fn.load(tmp_path / "m.npz")
        assert isinstance(resumed.loss, fn.CrossEntropyLoss)
        resumed.fit(X, y, epochs=2, seed=1, shuffle=False, progress=False, **how)
        assert resumed.optimizer.step_count == whole.optimizer.step_count
        np.testing.assert_array_equal(resumed.flat_params, whole.flat_params)
        assert resumed.evaluate(X, y) == whole.evaluate(X, y)
    other = fn.load(tmp_path / "m.npz")
    other.fit(X, y, optimizer="sgd", epochs=1, progress=False)     # another kind: new
    assert isinstance(other.optimizer, fn.SGD)


def test_fit_without_loss_or_optimizer_says_what_is_needed(rng):
    X, y = blobs(rng, 20)
    model = make()
    with pytest.raises(ValueError, match="loss is needed"):
        model.fit(X, y, optimizer="sgd", progress=False)
    with pytest.raises(ValueError, match="optimizer is needed"):
        model.fit(X, y, loss="cross_entropy", progress=False)


def test_huber_and_a_custom_loss_in_the_file(tmp_path, rng):
    X, y = blobs(rng, 20)
    Y = np.eye(3)[y]
    model = make()
    model.fit(X, Y, loss=fn.HuberLoss(delta=0.3), optimizer="sgd", progress=False)
    model.save(tmp_path / "h.npz")
    loaded = fn.load(tmp_path / "h.npz")
    assert isinstance(loaded.loss, fn.HuberLoss) and loaded.loss.param == 0.3
    model.fit(X, Y, loss=NumpyMSE(), optimizer="sgd", progress=False)
    model.save(tmp_path / "c.npz")
    assert fn.load(tmp_path / "c.npz").loss is None    # a custom loss is not saved


def test_early_stopping_rejects_an_unknown_metric_at_once():
    with pytest.raises(ValueError, match=r"monitor must be one of .*'val_los'"):
        fn.EarlyStopping(monitor="val_los")
