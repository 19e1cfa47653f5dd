"""One MPI process of tests/distributed/test_distributed.py (not a test module itself):
``mpiexec -n N python -m mpi4py mpi_worker.py SCENARIO OUT_DIR [options]``.

Each rank writes ``OUT_DIR/<scenario>-rank<r>.npz`` (its weights, optimizer state,
history and any error message) for the test to compare; ``warm`` runs everything once
in a single process to fill numba's cache (a cold start compiles for tens of seconds
in every rank at once)."""
import json
import os
import sys

import numpy as np

import fastnn as fn

SIZES = (7, 11, 5)


def data(dtype, n=50, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, SIZES[0])).astype(dtype)
    y = rng.integers(0, SIZES[-1], n)
    return X, y


def model(dtype, backend="cpu"):
    return fn.Sequential(fn.Dense(SIZES[0], SIZES[1], activation="tanh"),
                         fn.Dense(SIZES[1], SIZES[2]), backend=backend, dtype=dtype,
                         seed=1)


def fit_args(opt, options):
    """fit's arguments of a scenario: 40 training rows (50, a fifth held out for
    validation) in batches of 13: the last batch has 1 row, so with 2 or 3 ranks some
    have none; micro-batches of 3 inside the shards; clipping."""
    return dict(loss="cross_entropy", optimizer=opt, epochs=options.get("epochs", 3),
                batch_size=options.get("batch_size", 13),
                micro_batch_size=options.get("micro", 3), seed=0,
                clip_grad_norm=options.get("clip", 1.0), progress=False,
                validation_split=0.2)


def train(options, dp_kwargs=None):
    """Train the scenario's model; with dp_kwargs, through DataParallel."""
    dtype = np.dtype(options.get("dtype", "float64")).type
    m = model(dtype, options.get("backend", "cpu"))
    X, y = data(dtype)
    dp = None
    if dp_kwargs is not None:
        from fastnn import distributed as dist
        dp = dist.DataParallel(m, **dp_kwargs)
    history = m.fit(X, y, distributed=dp, **fit_args(options.get("opt", "adam"),
                                                     options))
    return m, history


def save(out, name, m, history=None, error=None):
    rank = 0
    try:
        from mpi4py import MPI
        rank = MPI.COMM_WORLD.Get_rank()
    except ImportError:
        pass
    arrays = {f"w{i}": w for i, w in enumerate(m.get_weights())} if m is not None else {}
    if m is not None and m.optimizer is not None:
        arrays.update({f"s_{k}": m.to_numpy(v) for k, v in m.optimizer.state.items()})
        arrays["step_count"] = np.array(m.optimizer.step_count)
    meta = {"history": None if history is None else history.history, "error": error}
    np.savez(os.path.join(out, f"{name}-rank{rank}.npz"), meta=json.dumps(meta),
             **arrays)


def main():
    scenario, out = sys.argv[1], sys.argv[2]
    options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    if scenario == "warm":                      # one process: compile and cache
        for dtype in ("float32", "float64"):
            for opt in ("sgd", "adam", "rmsprop", "adagrad", "adadelta", "adamw"):
                train(dict(options, dtype=dtype, opt=opt))
        return
    if scenario == "single":                    # the reference: one process, no MPI
        m, history = train(options)
        save(out, options.get("name", "single"), m, history)
        return
    from fastnn import distributed as dist
    rank = dist.rank()
    if scenario == "fit":
        m, history = train(options, dict(reduction=options.get("reduction", "allreduce"),
                                         chunk_rows=options.get("chunk_rows", 5)))
        save(out, options.get("name", "fit"), m, history)
    elif scenario == "mismatch":                # rank 1 has another batch size
        if rank == 1:
            options = dict(options, batch_size=8)
        try:
            train(options, {})
        except ValueError as exc:
            save(out, "mismatch", None, error=str(exc))
    elif scenario == "raise":                   # rank 1 fails before training
        if rank == 1:
            raise RuntimeError("rank 1 failed on purpose")
        train(options, {})
    elif scenario == "bcast":                   # rank 0's weights and Adam state
        m = model(np.float64)
        opt = fn.Adam(m.parameters())
        X, y = data(np.float64)
        m.fit(X[rank:], y[rank:], loss="cross_entropy", optimizer=opt, epochs=1,
              batch_size=7 + rank, progress=False)      # different on every rank
        dist.broadcast_parameters(m, optimizer=opt)
        save(out, "bcast", m)
    elif scenario == "save":                    # save on rank 0, load on every rank
        m, _ = train(options, {})
        path = os.path.join(out, "model.fnn")
        if rank == 0:
            m.save(path)
        dist.init().Barrier()
        loaded = fn.load(path)
        same = all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(),
                                                          m.get_weights()))
        save(out, "save", loaded, error=None if same else "loaded weights differ")
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main()
