"""fit's validation, metrics, callbacks and progress; predict, evaluate, summary; and
a real data set learned to the expected accuracy."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import datasets
from kernel_cases import BACKENDS, rand


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_digits_reaches_97_percent(backend):
    X, y = datasets.load_digits()
    Xtr, Xte, ytr, yte = datasets.train_test_split(X / 16, y, test_size=0.2, seed=0)
    model = fn.Sequential(fn.Dense(64, 128, activation="relu"), fn.Dense(128, 10),
                          backend=backend, dtype=np.float32, seed=0)
    model.fit(Xtr, ytr, loss="cross_entropy", optimizer=fn.SGD(model, lr=0.1), epochs=30,
              batch_size=32, seed=0, progress=False)
    assert model.evaluate(Xte, yte)["accuracy"] >= 0.97


def make(backend="cpu", dtype=np.float64, seed=0, sizes=(6, 8, 3)):
    layers = [fn.Dense(a, b, activation="relu") for a, b in zip(sizes, sizes[1:-1])]
    layers.append(fn.Dense(sizes[-2], sizes[-1]))
    return fn.Sequential(*layers, backend=backend, dtype=dtype, seed=seed)


def blobs(rng, n=120, classes=3, features=6):
    y = rng.integers(0, classes, n)
    X = rng.standard_normal((n, features)) * 0.5
    X[np.arange(n), y] += 2.0                  # separable enough to learn quickly
    return X, y


@pytest.mark.parametrize("backend", BACKENDS)
def test_validation_split_metrics(backend, rng):
    X, y = blobs(rng)
    model = make(backend)
    hist = model.fit(X, y, loss="cross_entropy", optimizer=fn.Adam(model, lr=0.05),
                     epochs=4, batch_size=16, validation_split=0.25, progress=False)
    assert list(hist.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(v) == 4 for v in hist.history.values())
    # the validation figures are evaluate() on the last quarter, taken unshuffled
    want = model.evaluate(X[90:], y[90:])
    assert hist.val_loss[-1] == pytest.approx(want["loss"], rel=1e-12)
    assert hist.val_accuracy[-1] == pytest.approx(want["accuracy"])
    assert hist.accuracy[-1] > 0.8 and hist.val_accuracy[-1] > 0.8


def test_validation_data_and_conflicts(rng):
    X, y = blobs(rng)
    model = make()
    hist = model.fit(X[:100], y[:100], loss="cross_entropy", optimizer="sgd", epochs=2,
                     validation_data=(X[100:], y[100:]), progress=False)
    assert len(hist.val_loss) == 2
    before = model.flat_params.copy()
    for kwargs, match in [
            (dict(validation_data=(X[:5], y[:5]), validation_split=0.1), "not both"),
            (dict(validation_split=1.0), "validation_split"),
            (dict(validation_split=0.001), "at least one sample"),
            (dict(validation_data=X[:5]), "pair"),
            (dict(validation_data=(X[:5, :4], y[:5])), "validation_data X"),
            (dict(validation_data=(X[:5], y[:4])), "5 labels")]:
        with pytest.raises(ValueError, match=match):
            model.fit(X, y, loss="cross_entropy", optimizer="sgd", progress=False,
                      **kwargs)
    np.testing.assert_array_equal(model.flat_params, before)


def test_early_stopping_restores_best(rng):
    X, y = blobs(rng)
    model = make()
    stop = fn.EarlyStopping("val_loss", patience=2, restore_best_weights=True)

    class Snap(fn.Callback):          # the weights after every epoch
        def on_train_begin(self, logs=None):
            self.w = []

        def on_epoch_end(self, epoch, logs=None):
            self.w.append(self.model.flat_params.copy())

    snap = Snap()
    # validation labels that contradict the training labels: the better the model
    # fits, the worse the validation loss, so it turns up after the first epochs
    # whatever the rounding (BLAS threads) of a given run
    hist = model.fit(X, y, loss="cross_entropy", optimizer=fn.Adam(model, lr=0.05),
                     epochs=40, batch_size=8, validation_data=(X, (y + 1) % 3),
                     callbacks=[snap, stop], progress=False)
    assert stop.stopped_epoch is not None and len(hist) == stop.stopped_epoch + 1
    assert len(hist) - 1 - stop.best_epoch == 3                 # patience + 1 epochs
    assert stop.best == min(hist.val_loss)
    np.testing.assert_array_equal(model.flat_params, snap.w[stop.best_epoch])


def test_early_stopping_checks_its_metric_before_training(rng):
    X, y = blobs(rng)
    model = make()
    before = model.flat_params.copy()
    with pytest.raises(ValueError, match="validation metrics need"):
        model.fit(X, y, loss="cross_entropy", optimizer="sgd",
                  callbacks=[fn.EarlyStopping("val_loss")], progress=False)
    with pytest.raises(ValueError, match="reports"):
        model.fit(X, y[:, None] * 1.0 + np.zeros((1, 3)), loss="mse", optimizer="sgd",
                  callbacks=[fn.EarlyStopping("accuracy")], progress=False)
    np.testing.assert_array_equal(model.flat_params, before)
    assert model.optimizer is None
    with pytest.raises(ValueError, match="patience"):
        fn.EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="mode"):
        fn.EarlyStopping(mode="up")
    assert fn.EarlyStopping("val_accuracy").mode == "max"


def test_progress_bar_on_stderr_only_when_asked(rng, capsys):
    X, y = blobs(rng, n=40)
    model = make()
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", epochs=2, progress=True,
              validation_split=0.2)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "val_loss" in err
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", epochs=2, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    with pytest.raises(ValueError, match="progress"):
        model.fit(X, y, loss="cross_entropy", optimizer="sgd", progress="yes")


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_is_batched_forward(backend, rng):
    model = make(backend, dtype=np.float32)
    X = rand(rng, (37, 6), np.float64)          # float64 in: converted once
    want = model.to_numpy(model.forward(X.astype(np.float32)))
    for batch in (1, 5, 37, 1024):
        got = model.predict(X, batch_size=batch)
        assert got.dtype == np.float32 and got.shape == (37, 3)
        # BLAS may block a GEMM differently for other row counts: float32 rounding
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(X, batch_size=0)
    with pytest.raises(ValueError, match=r"X must have shape \(samples, 6\)"):
        model.predict(X[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full((2, 6), np.inf))


def test_evaluate(rng):
    X, y = blobs(rng, n=50)
    model = make()
    with pytest.raises(ValueError, match="loss is needed"):
        model.evaluate(X, y)
    res = model.evaluate(X, y, loss="cross_entropy", batch_size=7)
    out = model.predict(X)
    lse = np.log(np.exp(out - out.max(1, keepdims=True)).sum(1)) + out.max(1)
    assert res["loss"] == pytest.approx(np.mean(lse - out[np.arange(50), y]), rel=1e-12)
    assert res["accuracy"] == pytest.approx(np.mean(out.argmax(1) == y))
    reg = model.evaluate(X, out + 1.0, loss="mse")
    assert reg == {"loss": pytest.approx(1.0)}              # no accuracy for regression


@pytest.mark.parametrize("loss, target, want", [
    ("bce_with_logits", lambda o: (o > 0.3).astype(float), lambda o, t: ((o > 0) == (t > 0.5))),
    ("hinge", lambda o: np.where(o > 0.3, 1.0, -1.0), lambda o, t: ((o > 0) == (t > 0))),
])
def test_binary_accuracy(loss, target, want, rng):
    model = make(sizes=(6, 8, 2))
    X = rand(rng, (30, 6), np.float64)
    out = model.predict(X)
    t = target(out)
    res = model.evaluate(X, t, loss=loss)
    assert res["accuracy"] == pytest.approx(np.mean(want(out, t)))


def test_summary(capsys):
    model = make(sizes=(6, 8, 3))
    text = model.summary()
    assert capsys.readouterr().out.strip() == text.strip()
    assert "Dense(6, 8)" in text and "relu" in text and "(batch, 3)" in text
    assert "83" in text and "float64" in text and "backend: cpu" in text


def test_progress_rate_is_training_samples_per_second(rng, capsys, monkeypatch):
    """The bar's rate is samples trained over the time spent training: a slow
    validation pass after the epoch does not lower it (tqdm's own rate would count
    it, and batches rather than samples)."""
    import re
    import time

    from fastnn.training import loop

    X, y = blobs(rng, n=200)
    model = make()
    real = loop.measure

    def slow_validation(*args, **kwargs):
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "measure", slow_validation)
    t0 = time.perf_counter()
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", epochs=1, batch_size=20,
              validation_split=0.2, progress=True)
    elapsed = time.perf_counter() - t0
    rates = re.findall(r"([\d,]+) samples/s", capsys.readouterr().err)
    assert rates, "no rate on the progress bar"
    rate = float(rates[-1].replace(",", ""))
    assert rate > 160 / (elapsed - 1.0)     # 160 samples in less than the fit minus 1 s
