"""The ``fastnn`` command.  ``fastnn train`` trains a 64-128-10 relu network on the
digits data set (scikit-learn's bundled copy) with plain SGD and prints the test
accuracy.  ``fastnn info`` prints versions, backends and thread settings."""
import argparse
import sys
import time

import numpy as np


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit code 1."""


def load_digits_split(seed=0, test_fraction=0.2):
    """Digits scaled to [0, 1], split into (X_train, y_train, X_test, y_test)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UsageError("the digits data comes from scikit-learn: "
                         "pip install scikit-learn (or fastnn[dev])") from None
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(X))
    X, y = X[order] / 16.0, y[order]
    n_test = int(round(len(X) * test_fraction))
    return X[n_test:], y[n_test:], X[:n_test], y[:n_test]


def accuracy(model, X, y):
    out = model.to_numpy(model.forward(np.ascontiguousarray(X, dtype=model.dtype)))
    return float(np.mean(out.argmax(axis=1) == y))


def _train(args):
    import fastnn as fn

    # The split is fixed (seed 0) so runs compare; --seed varies weights and shuffling.
    Xtr, ytr, Xte, yte = load_digits_split(seed=0)
    hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
    sizes = [Xtr.shape[1], *hidden, 10]
    layers = [fn.Dense(a, b, activation=args.activation) for a, b in zip(sizes, sizes[1:-1])]
    layers.append(fn.Dense(sizes[-2], sizes[-1]))
    model = fn.Sequential(*layers, backend=args.backend, dtype=args.dtype, seed=args.seed)
    print(f"digits: {len(Xtr)} train / {len(Xte)} test samples; model "
          f"{'-'.join(map(str, sizes))} {args.activation}, backend {args.backend}, "
          f"{args.dtype}, SGD lr={args.lr}, batch {args.batch_size}")
    t0 = time.perf_counter()

    tty = sys.stdout.isatty()

    class Progress(fn.Callback):
        # a bar redrawn in place on a terminal; every 10th epoch as a line otherwise
        def on_epoch_end(self, epoch, logs=None):
            epoch += 1
            if args.quiet or (not tty and epoch % 10 and epoch != args.epochs):
                return
            bar = "#" * int(30 * epoch / args.epochs)
            line = f"  epoch {epoch:3d}/{args.epochs} [{bar:<30}] loss {logs['loss']:.4f}"
            if tty:
                print("\r" + line, end="" if epoch < args.epochs else "\n", flush=True)
            else:
                print(line, flush=True)

    opt = fn.SGD(model, lr=args.lr)
    model.fit(Xtr, ytr, loss="cross_entropy", optimizer=opt, epochs=args.epochs,
              batch_size=args.batch_size, seed=args.seed, callbacks=[Progress()])
    elapsed = time.perf_counter() - t0
    acc = accuracy(model, Xte, yte)
    print(f"test accuracy: {100 * acc:.2f}%  ({elapsed:.2f} s training)")
    return 0


def _info(args):
    import numba
    import scipy

    import fastnn as fn
    from fastnn import backends, threads

    print(f"fastnn {fn.__version__}, numpy {np.__version__}, numba {numba.__version__}, "
          f"scipy {scipy.__version__}, python {sys.version.split()[0]}")
    print(f"backends available: {', '.join(fn.available_backends())}")
    for name, why in backends.unavailable_reasons().items():
        print(f"  {name} unavailable: {why}")
    for key, value in threads.info().items():
        print(f"{key}: {value}")
    return 0


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a classifier on digits and print its test "
                       "accuracy", description="Train an MLP on scikit-learn's digits "
                       "(80/20 split) with SGD and print the test accuracy.")
    t.add_argument("--hidden", default="128", help="hidden layer sizes, e.g. 128,64 "
                   "(default: 128)")
    t.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    t.add_argument("--epochs", type=_positive, default=30, help="default 30")
    t.add_argument("--batch-size", type=_positive, default=32, help="default 32")
    t.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    t.add_argument("--backend", default="cpu", help="cpu (default) or numpy")
    t.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    t.add_argument("--seed", type=int, default=0, help="default 0")
    t.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    t.set_defaults(func=_train)
    i = sub.add_parser("info", help="versions, backends and thread settings")
    i.set_defaults(func=_info)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)   # usage errors exit with code 2
    try:
        return args.func(args)
    except (UsageError, ValueError, TypeError, RuntimeError) as exc:
        print(f"fastnn: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
