"""Ctrl-C (issue 14, item 5), made deterministic: SIGINT is raised with
``signal.raise_signal`` at chosen points (right after the update kernel returns,
inside numba's registry loading, at the N-th Python call into numba), never by a
timer's luck.

- An interrupted ``fit`` (or a loop of one's own under
  ``optim.deferred_interrupts``) leaves model and optimizer consistent: the step
  that was running happened entirely (weights, moments and step counter agree), and
  the KeyboardInterrupt is not lost.
- Ctrl-C while numba imports, loads or compiles kernels leaves the process able to
  train (subprocesses: numba's first load happens once per process)."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn as fn
from fastnn import optim

pytestmark = pytest.mark.skipif(not hasattr(signal, "raise_signal"),
                                reason="needs signal.raise_signal")

ROWS, BATCH = 48, 8          # 6 steps per epoch


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(ROWS, 6)), np.arange(ROWS) % 3


def model():
    return fn.Sequential(fn.Dense(6, 9, activation="relu"), fn.Dense(9, 3), seed=0,
                         backend="cpu")


def interrupt_after_kernel(monkeypatch, backend, on_call):
    """Make the on_call-th optimizer kernel raise SIGINT right after it returns (so
    the Python handler runs before the optimizer's next statement): the update
    kernel, or the one-call training step that ends with one (``fit`` on the cpu
    backend)."""
    real_step, real_train = backend.optimizer_step, backend.train_step
    calls = [0]

    def after(updated):
        if updated:
            calls[0] += 1
            if calls[0] == on_call:
                signal.raise_signal(signal.SIGINT)

    def step(*args):
        real_step(*args)
        after(True)

    def train_step(*args):
        value = real_train(*args)
        after(args[-3] is not None)          # (rule: None when no update ran)
        return value
    monkeypatch.setattr(backend, "optimizer_step", step)
    monkeypatch.setattr(backend, "train_step", train_step)
    return calls


def reference(steps, cls, **kwargs):
    """A model and optimizer after exactly ``steps`` uninterrupted steps."""
    X, y = data()
    m = model()
    opt = cls(m, **kwargs)
    m.fit(X[:steps * BATCH], y[:steps * BATCH], loss="cross_entropy", optimizer=opt,
          epochs=1, batch_size=BATCH, shuffle=False, progress=False)
    return m, opt


def same(m, opt, m_ref, opt_ref):
    assert opt.step_count == opt_ref.step_count
    assert m.flat_params.tobytes() == m_ref.flat_params.tobytes()
    for k in opt.state:
        assert opt.state[k].tobytes() == opt_ref.state[k].tobytes(), k


@pytest.mark.parametrize("on_call", [1, 4])
@pytest.mark.parametrize("cls,kwargs", [(fn.Adam, {}), (fn.SGD, {"momentum": 0.9}),
                                        (fn.RMSprop, {"centered": True})])
def test_ctrl_c_in_fit_right_after_the_kernel_keeps_the_step_whole(monkeypatch, cls,
                                                                    kwargs, on_call):
    X, y = data()
    m = model()
    opt = cls(m, **kwargs)
    calls = interrupt_after_kernel(monkeypatch, m.backend, on_call)
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=3, batch_size=BATCH,
              shuffle=False, progress=False)
    monkeypatch.undo()
    assert calls[0] == on_call                    # stopped right after that step
    same(m, opt, *reference(on_call, cls, **kwargs))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resuming_after_ctrl_c_gives_the_uninterrupted_result(monkeypatch, tmp_path):
    X, y = data()
    m = model()
    opt = fn.Adam(m)
    interrupt_after_kernel(monkeypatch, m.backend, 3)
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1, batch_size=BATCH,
              shuffle=False, progress=False)
    monkeypatch.undo()
    m.save(tmp_path / "m.npz")                    # records the step that happened
    back = fn.load(tmp_path / "m.npz")
    assert back.optimizer.step_count == 3
    back.fit(X[3 * BATCH:], y[3 * BATCH:], optimizer="adam", epochs=1, batch_size=BATCH,
             shuffle=False, progress=False)
    same(back, back.optimizer, *reference(ROWS // BATCH, fn.Adam))


def test_ctrl_c_in_a_loop_of_ones_own_under_deferred_interrupts(monkeypatch):
    X, y = data()
    m = model()
    opt = fn.AdamW(m)
    loss = fn.CrossEntropyLoss()
    interrupt_after_kernel(monkeypatch, m.backend, 2)
    done = 0
    with pytest.raises(KeyboardInterrupt):
        with optim.deferred_interrupts():
            for start in range(0, ROWS, BATCH):
                xb = X[start:start + BATCH].astype(np.float32)
                opt.zero_grad()
                loss.forward(m.forward(xb), y[start:start + BATCH])
                m.backward(loss.backward())
                opt.step()
                done += 1
    monkeypatch.undo()
    assert done == 1 and opt.step_count == 2      # the 2nd step happened, whole
    same(m, opt, *reference(2, fn.AdamW))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_between_a_step_and_its_batch_scheduler_step(monkeypatch):
    X, y = data()
    m = model()
    opt = fn.SGD(m, lr=0.1)
    sched = optim.ExponentialLR(opt, gamma=0.5)
    interrupt_after_kernel(monkeypatch, m.backend, 2)
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1, batch_size=BATCH,
              shuffle=False, scheduler=sched, scheduler_interval="batch",
              progress=False)
    assert opt.step_count == 2 and sched.last_epoch == 2
    assert opt.lr == pytest.approx(0.1 * 0.5 ** 2)


def test_a_handler_of_ones_own_is_called_after_the_step(monkeypatch):
    X, y = data()
    m = model()
    opt = fn.Adam(m)
    seen = []

    def mine(signum, frame):
        seen.append(opt.step_count)               # the step is whole when it runs
    previous = signal.signal(signal.SIGINT, mine)
    try:
        interrupt_after_kernel(monkeypatch, m.backend, 2)
        m.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1, batch_size=BATCH,
              shuffle=False, progress=False)
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [2] and opt.step_count == ROWS // BATCH


def test_step_from_another_thread_is_not_deferred_nor_raises():
    import threading

    m = model()
    opt = fn.SGD(m, lr=0.1)
    errors = []

    def run():
        try:
            for _ in range(50):
                opt.step()
        except BaseException as exc:               # pragma: no cover - the failure
            errors.append(exc)
    with optim.deferred_interrupts():
        t = threading.Thread(target=run)
        t.start()
        t.join()
    assert not errors and opt.step_count == 50


# ---- Ctrl-C while numba imports, loads or compiles (a fresh process each) ------------
SCRIPT = textwrap.dedent("""
    import json, signal, sys
    import numpy as np
    mode, n = sys.argv[1], int(sys.argv[2])
    calls = [0]
    if mode == "registry":
        # inside numba's registry loading: the generators that hand out each
        # registration once (an interrupt there killed them: "generator raised
        # StopIteration" at every later compile)
        import fastnn as fn
        import numba.core.utils as nu

        def stream_list(lst):
            start = 0
            while True:
                stop = len(lst)
                calls[0] += 1
                if calls[0] == n:
                    signal.raise_signal(signal.SIGINT)
                yield iter(lst[start:stop])
                start = stop
        nu.stream_list = stream_list
    else:
        # at the n-th Python call into numba (its import, its registries, a compile)
        import fastnn as fn

        def profile(frame, event, arg):
            if event == "call" and "numba" in frame.f_code.co_filename:
                calls[0] += 1
                if calls[0] == n:
                    signal.raise_signal(signal.SIGINT)
        sys.setprofile(profile)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 8)), np.arange(64) % 3

    def train():
        m = fn.Sequential(fn.Dense(8, 16, activation="relu"), fn.Dense(16, 3), seed=0,
                          backend="cpu")
        m.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=2, batch_size=16,
              shuffle=False, progress=False)
        return m
    try:
        train()
        first = "completed"
    except KeyboardInterrupt:
        first = "interrupted"
    sys.setprofile(None)
    m = train()                               # the process can still train
    print(json.dumps({"first": first, "calls": calls[0],
                      "weights": [w.tolist() for w in m.get_weights()]}))
""")


def expected_weights():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 8)), np.arange(64) % 3
    m = fn.Sequential(fn.Dense(8, 16, activation="relu"), fn.Dense(16, 3), seed=0,
                      backend="cpu")
    m.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=2, batch_size=16,
          shuffle=False, progress=False)
    return m.get_weights()


@pytest.mark.parametrize("mode,n", [("registry", 1), ("registry", 7),
                                    ("calls", 300), ("calls", 3000), ("calls", 30000),
                                    ("calls", 150000)])
def test_ctrl_c_while_numba_loads_kernels_leaves_the_process_able_to_train(
        tmp_path, mode, n):
    script = tmp_path / "interrupt.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, FASTNN_QUIET="1")
    proc = subprocess.run([sys.executable, str(script), mode, str(n)],
                          capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["calls"] >= n                      # the interrupt was raised ...
    assert out["first"] == "interrupted"          # ... and not lost
    for got, want in zip(out["weights"], expected_weights()):
        np.testing.assert_array_equal(np.asarray(got, want.dtype), want)


def test_specialise_retries_after_an_interrupted_build():
    from fastnn.kernels import template

    calls = []

    def compile(fn):
        calls.append(fn)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return ("built", fn.__qualname__)
    target = template.Target("test_interrupted_build", compile)

    def tmpl():
        return 1
    with pytest.raises(KeyboardInterrupt):
        template.specialise(tmpl, target, "t")
    assert template.specialise(tmpl, target, "t") == ("built", "tmpl__t")
    assert template.specialise(tmpl, target, "t") == ("built", "tmpl__t")
    assert len(calls) == 2
