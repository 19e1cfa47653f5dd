"""fn.LBFGS: PyTorch's contract (step(closure), the same arguments and stopping rules)
and the same iterates as torch.optim.LBFGS where PyTorch is installed (an oracle, never
a dependency); without it, convergence to known optima."""
import numpy as np
import pytest

import fastnn as fn


def _problem(rng, hidden=(5,), n=40, d=4, k=3, dtype=np.float64, backend="cpu"):
    sizes = (d, *hidden, k)
    layers = [fn.Dense(a, b, activation="tanh" if i < len(sizes) - 2 else None)
              for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    model = fn.Sequential(*layers, backend=backend, dtype=dtype, seed=3)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, k, n)
    return model, X, y, _closure(model, fn.CrossEntropyLoss(), X, y)


def _closure(model, loss, X, y):
    """PyTorch's closure: zero the gradients, the loss and its gradient."""
    def closure():
        model.zero_grad()
        value = loss.forward(model.forward(X), y)
        model.backward(loss.backward())
        return value
    return closure


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
@pytest.mark.parametrize("history", [100, 3])
def test_same_iterates_as_pytorch(line_search, history, rng):
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here")
    model, X, y, closure = _problem(rng)
    weights = model.get_weights()
    lin = [torch.nn.Linear(w.shape[0], w.shape[1]).double()
           for w in weights[0::2]]
    with torch.no_grad():
        for layer, w, b in zip(lin, weights[0::2], weights[1::2]):
            layer.weight.copy_(torch.from_numpy(w.T.copy()))
            layer.bias.copy_(torch.from_numpy(b))
    net = torch.nn.Sequential(lin[0], torch.nn.Tanh(), lin[1])
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    kw = dict(lr=0.8, max_iter=7, history_size=history, line_search_fn=line_search)
    ours, theirs = fn.LBFGS(model.parameters(), **kw), torch.optim.LBFGS(net.parameters(),
                                                                         **kw)

    def torch_closure():
        theirs.zero_grad()
        value = torch.nn.functional.cross_entropy(net(xt), yt)
        value.backward()
        return value
    for _ in range(4):
        a = ours.step(closure)
        b = float(theirs.step(torch_closure))
        assert a == pytest.approx(b, rel=1e-10)
        got = model.get_weights()
        want = [p.detach().numpy() for layer in lin for p in (layer.weight.T, layer.bias)]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-7, atol=1e-10)
    state = theirs.state[theirs._params[0]]
    assert ours.n_iter == state["n_iter"] and ours.func_evals == state["func_evals"]


def test_linear_least_squares_reaches_the_exact_solution(rng):
    """A linear model with MSE is a convex quadratic: L-BFGS with the strong Wolfe line
    search reaches numpy.linalg.lstsq's solution."""
    X = rng.standard_normal((50, 6))
    Y = X @ rng.standard_normal((6, 2)) + 0.3 + 0.01 * rng.standard_normal((50, 2))
    model = fn.Sequential(fn.Dense(6, 2), dtype=np.float64, seed=0)
    closure = _closure(model, fn.MSELoss(), X, Y)
    opt = fn.LBFGS(model.parameters(), max_iter=100, line_search_fn="strong_wolfe",
                   tolerance_grad=1e-12, tolerance_change=1e-15)
    opt.step(closure)
    A = np.hstack([X, np.ones((50, 1))])
    sol = np.linalg.lstsq(A, Y, rcond=None)[0]
    w, b = model.get_weights()
    np.testing.assert_allclose(w, sol[:6], atol=1e-8)
    np.testing.assert_allclose(b, sol[6], atol=1e-8)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_trains_a_network_on_every_backend_and_dtype(backend, dtype, rng):
    model, X, y, closure = _problem(rng, hidden=(8,), dtype=dtype, backend=backend)
    opt = fn.LBFGS(model, line_search_fn="strong_wolfe", max_iter=30)
    first = opt.step(closure)
    assert closure() < 0.5 * first
    assert opt.func_evals <= 30 * 26 and opt.n_iter <= 30


def test_stops_at_once_when_the_gradient_is_zero(rng):
    model, X, y, closure = _problem(rng)
    calls = []

    def flat():
        calls.append(1)
        model.zero_grad()
        return 1.0
    before = model.get_weights()
    assert fn.LBFGS(model.parameters()).step(flat) == 1.0
    assert len(calls) == 1
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_are_refused_by_name(rng):
    model, X, y, closure = _problem(rng)
    for kw, what in [({"lr": 0.0}, "lr"), ({"max_iter": 0}, "max_iter"),
                     ({"max_eval": -1}, "max_eval"), ({"history_size": 0}, "history_size"),
                     ({"tolerance_grad": -1.0}, "tolerance_grad"),
                     ({"line_search_fn": "armijo"}, "line_search_fn")]:
        with pytest.raises(ValueError, match=what):
            fn.LBFGS(model.parameters(), **kw)
    with pytest.raises(ValueError, match="all of a model's parameters"):
        fn.LBFGS(model.parameters()[:2])
    opt = fn.LBFGS(model.parameters())
    with pytest.raises(TypeError, match="closure"):
        opt.step()
    with pytest.raises(TypeError, match="closure must return the loss"):
        opt.step(lambda: "loss")
