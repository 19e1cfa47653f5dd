"""The layer API: flat buffers, views, seeding, weights, and the SGD step."""
import os

import numpy as np
import pytest

import fastnn as fn
from kernel_cases import BACKENDS, COMPILED, DTYPES, rand, shares_memory


def make(backend="cpu", dtype=np.float32, seed=0):
    return fn.Sequential(fn.Dense(6, 9, activation="relu"),
                         fn.Dense(9, 4, activation="sigmoid"),
                         fn.Dense(4, 3), backend=backend, dtype=dtype, seed=seed)


def test_available_backends():
    names = fn.available_backends()
    assert names[:2] == ("numpy", "cpu")
    # cuda is listed exactly when it can run; otherwise the reason is kept
    reasons = fn.backends.unavailable_reasons()
    assert ("cuda" in names) != ("cuda" in reasons)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_parameters_are_views_of_flat_buffers(backend, dtype):
    model = make(backend, dtype)
    params = model.parameters()
    assert [p.name for p in params] == ["0.weight", "0.bias", "1.weight", "1.bias",
                                        "2.weight", "2.bias"]
    assert [p.shape for p in params] == [(6, 9), (9,), (9, 4), (4,), (4, 3), (3,)]
    assert model.flat_params.size == sum(p.size for p in params) == model.num_parameters
    for p in params:
        assert shares_memory(p.data, model.flat_params)
        assert shares_memory(p.grad, model.flat_grads)
        assert p.data.dtype == dtype
    params[2].grad[...] = 1
    model.zero_grad()
    assert not model.to_numpy(model.flat_grads).any()


def test_seed_gives_same_weights_on_every_backend():
    a = make("numpy", np.float64, seed=7).get_weights()
    b = make("cpu", np.float64, seed=7).get_weights()
    c = make("cpu", np.float64, seed=8).get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_init_choices():
    relu = fn.Dense(400, 300, activation="relu")
    tanh = fn.Dense(400, 300, activation="tanh")
    assert relu.init == "he_normal" and tanh.init == "glorot_uniform"
    model = fn.Sequential(relu, tanh.__class__(300, 10, init="glorot_normal"),
                          dtype=np.float64, seed=0)
    w = model.get_weights()
    assert np.std(w[0]) == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert np.std(w[2]) == pytest.approx(np.sqrt(2 / 310), rel=0.05)
    assert not w[1].any()                       # biases start at zero


def test_set_get_weights_round_trip(rng):
    model = make(dtype=np.float64)
    new = [rand(rng, p.shape, np.float64) for p in model.parameters()]
    model.set_weights(new)
    for got, want in zip(model.get_weights(), new):
        np.testing.assert_array_equal(got, want)
    got = model.get_weights()
    got[0][...] = 0                              # copies: the model is unaffected
    assert model.get_weights()[0].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_matches_manual_formula(backend, rng):
    model = make(backend, np.float64)
    x = rand(rng, (5, 6), np.float64)
    w = model.get_weights()
    h = np.maximum(x @ w[0] + w[1], 0)
    h = 1 / (1 + np.exp(-(h @ w[2] + w[3])))
    want = h @ w[4] + w[5]
    np.testing.assert_allclose(model.to_numpy(model.forward(x)), want, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sgd_step_updates_every_parameter(backend, rng):
    model = make(backend, np.float64)
    before = model.to_numpy(model.flat_params)
    opt = fn.SGD(model.parameters(), lr=0.5)
    loss = fn.CrossEntropyLoss(backend=backend)
    opt.zero_grad()
    loss.forward(model.forward(rand(rng, (8, 6), np.float64)), rng.integers(0, 3, 8))
    model.backward(loss.backward())
    grads = model.to_numpy(model.flat_grads)
    opt.step()
    np.testing.assert_allclose(model.flat_params, before - 0.5 * grads, rtol=1e-15)


@pytest.mark.parametrize("backend", COMPILED)
def test_cpu_and_numpy_train_identically(backend, rng):
    """20 SGD steps on each compiled backend give the numpy reference's weights."""
    x, y = rand(rng, (16, 6), np.float64), rng.integers(0, 3, 16)
    states = []
    for name in ("numpy", backend):
        model = make(name, np.float64, seed=1)
        loss, opt = fn.CrossEntropyLoss(backend=name), fn.SGD(model, lr=0.1)
        for _ in range(20):
            opt.zero_grad()
            loss.forward(model.forward(x), y)
            model.backward(loss.backward())
            opt.step()
        states.append(model.to_numpy(model.flat_params))
    np.testing.assert_allclose(states[0], states[1], rtol=1e-10, atol=1e-12)


def test_set_num_threads_before_the_first_model_reaches_the_gemms_blas():
    """set_num_threads before the cpu backend loads scipy's OpenBLAS: threadpoolctl
    only limits the libraries already loaded, so the count must be applied again when
    the backend loads it (it was not: the GEMMs ran on the default count)."""
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("threadpoolctl")
    code = textwrap.dedent("""
        import os, sys, numpy as np, fastnn as fn
        from threadpoolctl import threadpool_info
        assert "fastnn.backends.cpu_backend" not in sys.modules
        default = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        n = 2 if default == 1 else 1          # not the default, so the test can fail
        fn.set_num_threads(n)
        m = fn.Sequential(fn.Dense(4, 3), backend="cpu")
        m.predict(np.ones((2, 4), np.float32))
        counts = {p["filepath"]: p["num_threads"] for p in threadpool_info()
                  if p["user_api"] == "blas"}
        assert any("scipy" in f for f in counts), counts
        assert all(c == n for c in counts.values()), (n, counts)
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTNN_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]


def test_set_num_threads():
    n = fn.get_num_threads()
    fn.set_num_threads(1)
    assert fn.get_num_threads() == 1
    fn.set_num_threads(n)
    with pytest.raises(ValueError, match="positive integer"):
        fn.set_num_threads(0)
