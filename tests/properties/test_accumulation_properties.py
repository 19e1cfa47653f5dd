"""Property: for every optimizer, fit with micro-batches of any sizes gives the weights
of fit with whole batches (float64, 1e-12 relative), and fit with whole batches is the
plain hand-written loop, bit for bit (hypothesis draws the sizes)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn as fn
from kernel_cases import rand


def make(seed):
    return fn.Sequential(fn.Dense(6, 5, activation="tanh"), fn.Dense(5, 3),
                         dtype=np.float64, seed=seed)


def data(rng, n):
    return rand(rng, (n, 6), np.float64), rng.integers(0, 3, n)


def rel_err(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


OPTIMIZERS = [
    ("sgd", {}), ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adagrad", dict(lr_decay=0.1)), ("rmsprop", dict(centered=True, momentum=0.5)),
    ("adadelta", {}), ("adam", dict(weight_decay=0.01)), ("adamw", dict(amsgrad=True)),
]


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS,
                         ids=[f"{n}-{'-'.join(k) or 'defaults'}" for n, k in OPTIMIZERS])
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), batch=st.integers(1, 45), micro_frac=st.floats(0.0, 1.0),
       clip=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_fit_with_micro_batches_equals_whole_batches(name, kwargs, n, batch, micro_frac,
                                                     clip, seed):
    """The guarantee: float64 weights after fit with micro-batches equal those with
    whole batches (same sample order) to 1e-12 relative, for any batch and
    micro-batch sizes, B not dividing n and m not dividing B included."""
    micro = max(1, int(round(micro_frac * batch)))
    rng = np.random.default_rng(seed)
    X, y = data(rng, n)
    clip = 0.5 if clip else None
    runs = []
    for m in (None, micro):
        model = make(seed=seed)
        opt = fn.get_optimizer(name, model, lr=0.05, **kwargs)
        model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=2, batch_size=batch,
                  micro_batch_size=m, seed=seed, clip_grad_norm=clip)
        runs.append((model.flat_params.copy(), opt.step_count))
    (whole, steps_whole), (accumulated, steps_micro) = runs
    assert steps_whole == steps_micro == 2 * -(-n // batch)   # one step per batch
    assert rel_err(accumulated, whole) < 1e-12
    # ... and the whole-batch run is plain mini-batch training (independent loop)
    model = make(seed=seed)
    opt = fn.get_optimizer(name, model, lr=0.05, **kwargs)
    loss_fn = fn.CrossEntropyLoss()
    order_rng = np.random.default_rng(seed)
    for _ in range(2):
        order = order_rng.permutation(n)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            opt.zero_grad()
            loss_fn.forward(model.forward(X[idx]), y[idx])
            model.backward(loss_fn.backward())
            if clip is not None:
                fn.clip_grad_norm(model, clip)
            opt.step()
    np.testing.assert_array_equal(model.flat_params, whole)
