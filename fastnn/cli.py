"""The ``fastnn`` command.

``fastnn train`` trains a multi-layer perceptron on a bundled data set (default: a
64-128-10 relu network on the 8x8 digits) or on MNIST-style IDX files, shows progress
and prints the test score; ``fastnn info`` prints versions, backends, thread settings
and where compiled kernels are cached; ``fastnn bench`` (in a source checkout) runs the
benchmark suites and writes a markdown report and a chart.  Exit codes: 0 success, 2
usage error, 1 failure (with a one-line reason), 130 interrupted (Ctrl-C; one line, no
traceback)."""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

# name -> (task, preprocessing of X fitted on the training part)
DATASETS = {
    "digits": ("classification", "divide by 16 (pixels 0..16 -> [0, 1])"),
    "breast_cancer": ("classification", "standardise (training mean and std)"),
    "diabetes": ("regression", "already scaled; the target is standardised for "
                               "training and scores are reported in its units"),
}


DTYPES = ("float32", "float64")

# Learning rates the command uses when --lr is not given (tuned on digits: 98.3-98.6%
# test accuracy over seeds 0-3 for adam in 40 epochs); other optimizers: PyTorch's.
CLI_LR = {"adam": 2e-3, "adamw": 2e-3, "sgd": 0.1}


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit code 1."""


# How a loss is trained on each kind of data set, read from the registry's target and
# output kinds (kernels/specs.py), never from a list of loss names.
#   class labels y (integers 0..classes-1) -> the targets a loss's target kind needs:
CLASS_TARGETS = {
    "labels": lambda y, classes: y,
    "real": lambda y, classes: _one_hot(y, classes),
    "unit": lambda y, classes: _one_hot(y, classes),
    "probabilities": lambda y, classes: _one_hot(y, classes),
    "nonnegative": lambda y, classes: _one_hot(y, classes),
    "sign": lambda y, classes: 2 * _one_hot(y, classes) - 1,
}
#   (what the header line says about those targets)
CLASS_TARGET_NOTES = {"real": "one-hot targets", "unit": "one-hot targets",
                      "probabilities": "one-hot targets",
                      "nonnegative": "one-hot targets", "sign": "-1/+1 one-hot targets"}
#   a loss's output kind -> the activation of the output layer that produces it
#   ("log_probability" is missing: the command has no log-softmax output layer)
OUTPUT_ACTIVATIONS = {"real": None, "probability": "sigmoid"}
#   regression (a standardised real target, one linear output): the kinds that fit
REGRESSION_TARGETS = ("real",)
REGRESSION_OUTPUTS = ("real",)


def _targets_text(kind):
    return {"labels": "integer class labels", "unit": "targets in [0, 1]",
            "sign": "targets of -1 or +1", "probabilities": "class probabilities",
            "nonnegative": "nonnegative targets (distributions)"}.get(
                kind, f"{kind} targets")


def _outputs_text(kind):
    return {"log_probability": "log-probability outputs (a log-softmax output layer)",
            "probability": "probability outputs"}.get(kind, f"{kind} outputs")


def _one_hot(y, classes):
    y = np.asarray(y).astype(np.intp)
    out = np.zeros((y.shape[0], classes))         # not np.eye(classes): classes^2 values
    out[np.arange(y.shape[0]), y] = 1.0
    return out


def _memory_bytes():
    """This machine's physical memory in bytes, or None if the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _gb(n):
    return f"{n / 2**30:,.1f} GiB"


# Copies of the parameters training keeps: the weights, their gradients and up to
# three optimizer state buffers (amsgrad, centered RMSprop with momentum).
_PARAM_COPIES = 5


def _check_size(sizes, args, rows, one_hot_classes, label_note):
    """Refuse (UsageError, before anything is allocated) a model whose parameters,
    gradients, optimizer state, per-batch activations and one-hot targets would not
    fit in this machine's memory: the estimate, not a MemoryError half-way."""
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    item = np.dtype(args.dtype).itemsize
    batch = max(args.batch_size, 1)
    need = (item * (_PARAM_COPIES * params + 4 * batch * sum(sizes[1:]))
            + 8 * rows * one_hot_classes)
    have = _memory_bytes()
    if have is not None and need > have:
        raise UsageError(
            f"the model {'-'.join(map(str, sizes))} has {params:,} parameters: training "
            f"it needs about {_gb(need)} ({args.dtype} weights, gradients, optimizer "
            f"state and activations), more than this machine's {_gb(have)} of memory"
            + label_note + "; choose smaller --hidden sizes")


def _trainable(task):
    """The names of the registry's losses this command can train on a ``task``."""
    from fastnn.kernels import specs

    targets, outputs = ((CLASS_TARGETS, OUTPUT_ACTIVATIONS) if task == "classification"
                        else (REGRESSION_TARGETS, REGRESSION_OUTPUTS))
    return [name for name, k in specs.LOSSES.items()
            if k.target in targets and k.output in outputs]


def _check_loss(loss, task, data_name):
    """Refuse (UsageError, before anything is loaded) a loss this command cannot train
    on a ``task`` data set, saying why and naming the losses that work."""
    from fastnn.kernels import specs

    k = specs.LOSSES[loss]
    works = ", ".join(_trainable(task))
    if task == "classification":
        if k.output not in OUTPUT_ACTIVATIONS:
            raise UsageError(
                f"--loss {loss} cannot be trained by `fastnn train`: it needs "
                f"{_outputs_text(k.output)}, which this command does not build; on a "
                f"classification data set use one of: {works}")
        if k.target not in CLASS_TARGETS:
            raise UsageError(
                f"--loss {loss} cannot be trained on class labels (it needs "
                f"{_targets_text(k.target)}); on a classification data set use one "
                f"of: {works}")
    elif k.target not in REGRESSION_TARGETS or k.output not in REGRESSION_OUTPUTS:
        what = (_targets_text(k.target) if k.target not in REGRESSION_TARGETS else
                _outputs_text(k.output))
        raise UsageError(
            f"--loss {loss} needs {what}, and {data_name} is a regression data set "
            f"(real-valued targets, one linear output); use one of: {works}")


def _load(args):
    """(X_train, y_train, X_test, y_test, task, description)."""
    from fastnn import datasets

    if args.idx:
        X, y = datasets.load_idx_dataset(*args.idx)
        if args.idx_test:
            Xte, yte = datasets.load_idx_dataset(*args.idx_test)
            if Xte.shape[1] != X.shape[1]:
                raise UsageError(f"--idx-test images have {Xte.shape[1]} pixels, the "
                                 f"training images {X.shape[1]}")
        else:
            X, Xte, y, yte = datasets.train_test_split(X, y, test_size=args.test_size,
                                                       seed=0)
        return X, y, Xte, yte, "classification", f"IDX {args.idx[0]}"
    X, y = getattr(datasets, "load_" + args.dataset)()
    task = DATASETS[args.dataset][0]
    # The split is fixed (seed 0) so runs compare; --seed varies weights and shuffling.
    Xtr, Xte, ytr, yte = datasets.train_test_split(X, y, test_size=args.test_size, seed=0)
    if args.dataset == "digits":
        Xtr, Xte = Xtr / 16.0, Xte / 16.0
    elif args.dataset == "breast_cancer":
        mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
        Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    return Xtr, ytr, Xte, yte, task, args.dataset


def _hidden(text):
    try:
        sizes = [int(h) for h in text.split(",") if h.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 128,64, got {text!r}")
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return sizes


def _check_plot_available():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'fastnn[plot]' "
                         "(or pip install matplotlib)") from None


def plot_history(history, path, title):
    """Loss (and accuracy) per epoch, training and validation, into an image file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("loss", "accuracy") if k in history.history]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6),
                             squeeze=False)
    epochs = [e + 1 for e in history.epoch]
    for ax, key in zip(axes[0], panels):
        ax.plot(epochs, history[key], label="training")
        if "val_" + key in history.history:
            ax.plot(epochs, history["val_" + key], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _loss_help():
    """--loss's help: which losses work on which data, and how (from the registry)."""
    from fastnn.kernels import specs

    def having(attr, kinds):
        return "/".join(n for n, k in specs.LOSSES.items()
                        if getattr(k, attr) in kinds and n in classify)

    classify = _trainable("classification")
    one_hot = [kind for kind in CLASS_TARGETS if kind not in ("labels", "sign")]
    text = ("default: cross_entropy (classification), mse (regression).  On class "
            "labels: " + ", ".join(classify) + " (labels become one-hot targets for "
            + having("target", one_hot))
    if having("target", ("sign",)):
        text += ", -1/+1 one-hot for " + having("target", ("sign",))
    for kind, act in OUTPUT_ACTIVATIONS.items():
        if act and having("output", (kind,)):
            text += f"; a {act} output layer for {having('output', (kind,))}"
    return (text + "; the test accuracy is the argmax of the outputs); on a regression "
            "data set: " + ", ".join(_trainable("regression")))


def _check_outputs(args):
    """--save and --plot: fail now, naming the user's path, if they could not be
    written after training (folder missing or not writable, a folder named, a plot
    format matplotlib does not know)."""
    from fastnn import fileformat

    for option, path, what in (("--save", args.save, "the model file"),
                               ("--plot", args.plot, "the plot")):
        if not path:
            continue
        try:
            fileformat.check_writable(path, what)
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise UsageError(f"{option}: {why}") from None
    if args.plot:
        from matplotlib.figure import Figure

        suffix = Path(args.plot).suffix.lower().lstrip(".")
        known = Figure().canvas.get_supported_filetypes()
        if suffix and suffix not in known:
            raise UsageError(f"--plot: cannot write the plot {args.plot!r}: matplotlib "
                             f"does not know the format {suffix!r}; use one of: "
                             + ", ".join(sorted(known)))


def _train(args):
    import fastnn as fn
    from fastnn.kernels import specs

    if args.idx_test and not args.idx:
        raise UsageError("--idx-test needs --idx (the training IDX files): a bundled "
                         "--dataset is split into training and test parts by "
                         "--test-size")
    if args.plot:
        _check_plot_available()
    if args.micro_batch_size and args.micro_batch_size > args.batch_size:
        raise UsageError(f"--micro-batch-size ({args.micro_batch_size}) must not exceed "
                         f"--batch-size ({args.batch_size})")
    task = "classification" if args.idx else DATASETS[args.dataset][0]
    classification = task == "classification"
    loss = args.loss or ("cross_entropy" if classification else "mse")
    _check_loss(loss, task, args.dataset)
    _check_outputs(args)
    Xtr, ytr, Xte, yte, task, name = _load(args)
    kind = specs.LOSSES[loss]
    output_activation, notes = None, []
    classes = int(max(ytr.max(), yte.max())) + 1 if classification else 0
    outputs = classes if classification else 1
    sizes = [Xtr.shape[1], *args.hidden, outputs]
    # before the one-hot targets and the model are allocated
    _check_size(sizes, args, len(Xtr),
                classes if classification and kind.target != "labels" else 0,
                f" (the output layer has one unit per class, and the largest label "
                f"is {classes - 1:,})" if classes > 1000 else "")
    if classification:
        ytr = CLASS_TARGETS[kind.target](ytr, classes)
        output_activation = OUTPUT_ACTIVATIONS[kind.output]
        if kind.target in CLASS_TARGET_NOTES:
            notes.append(CLASS_TARGET_NOTES[kind.target])
        if output_activation:
            notes.append(f"{output_activation} output layer")
        if isinstance(kind.accuracy, specs.Threshold):   # fit's metric, not the argmax
            notes.append("per-output accuracy in the bars and plot; the test "
                         "accuracy is the argmax")
    else:
        y_mean, y_std = ytr.mean(), ytr.std()
        ytr = (ytr - y_mean) / y_std
    layers = [fn.Dense(a, b, activation=args.activation)
              for a, b in zip(sizes, sizes[1:-1])]
    layers.append(fn.Dense(sizes[-2], sizes[-1], activation=output_activation))
    model = fn.Sequential(*layers, backend=args.backend, dtype=args.dtype, seed=args.seed)
    dp, lead = None, True                     # lead: the process that prints and saves
    if args.distributed:
        from fastnn import distributed as dist
        try:
            dp = dist.DataParallel(model, reduction=args.distributed)
        except ImportError as exc:
            raise UsageError(str(exc)) from None
        lead = dp.rank == 0
    say = print if lead else (lambda *a, **k: None)
    lr = CLI_LR.get(args.optimizer) if args.lr is None else args.lr
    opt_kwargs = {} if lr is None else {"lr": lr}
    try:
        optimizer = fn.get_optimizer(args.optimizer, model, **opt_kwargs)
    except ValueError as exc:
        if args.lr is None:
            raise
        raise UsageError(f"--lr {args.lr:g}: {exc}") from None
    callbacks = []
    if args.patience is not None:
        if not args.validation_split:
            raise UsageError("--patience needs a validation split (--validation-split)")
        callbacks.append(fn.EarlyStopping("val_loss", patience=args.patience,
                                          restore_best_weights=True))
    say(f"{name}: {len(Xtr)} training / {len(Xte)} test samples; model "
          f"{'-'.join(map(str, sizes))} {args.activation}, {loss} loss"
          + (f" ({', '.join(notes)})" if notes else "") + ", "
          + f"{type(optimizer).__name__} lr={optimizer.lr:g}, batch {args.batch_size}"
          + (f" (micro-batches of {args.micro_batch_size})" if args.micro_batch_size
             else "") + f", backend {args.backend}, {args.dtype}"
        + (f", {dp.size} processes ({args.distributed})" if dp else ""), flush=True)

    t0 = time.perf_counter()
    history = model.fit(Xtr, ytr, loss=loss, optimizer=optimizer, epochs=args.epochs,
                        batch_size=args.batch_size,
                        micro_batch_size=args.micro_batch_size, seed=args.seed,
                        validation_split=args.validation_split or None,
                        callbacks=callbacks, progress=not args.quiet, distributed=dp)
    elapsed = time.perf_counter() - t0
    if classification:
        pred = model.predict(Xte)
        score = f"test accuracy: {100 * np.mean(pred.argmax(axis=1) == yte):.2f}%"
    else:
        pred = model.predict(Xte)[:, 0].astype(np.float64) * y_std + y_mean
        rmse = float(np.sqrt(np.mean((pred - yte) ** 2)))
        r2 = 1 - np.sum((pred - yte) ** 2) / np.sum((yte - yte.mean()) ** 2)
        score = f"test rmse: {rmse:.4g}  R^2 {r2:.4f}"
    if args.save and lead:
        model.save(args.save)
        say(f"saved the model (and its optimizer state) to {args.save}")
    if args.plot and lead:
        plot_history(history, args.plot, f"fastnn: {name}, {'-'.join(map(str, sizes))}")
        say(f"wrote the training curves to {args.plot}")
    say(f"{score}  ({len(history)} epochs, {elapsed:.2f} s training)")
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
    if "cuda" in fn.available_backends():
        cu = fn.get_backend("cuda")
        print(f"  cuda device: {cu.device_name} ({cu.sms} multiprocessors)")
    for key, value in threads.info().items():
        print(f"{key}: {value}")
    return 0


def bench_dir():
    """The source tree's ``bench/`` beside the package (an editable install or a
    checkout on the path), or None in an installed wheel, which ships no benchmarks."""
    import fastnn

    path = Path(fastnn.__file__).resolve().parent.parent / "bench"
    return path if (path / "runner.py").is_file() else None


def _bench(argv):
    """``fastnn bench ...``: ``python -m bench ...`` of the source checkout."""
    path = bench_dir()
    if path is None:
        print("fastnn: error: `fastnn bench` needs the benchmark suites of a source "
              "checkout (no bench/ beside the installed package); run it from a source "
              "checkout: pip install -e . there, or python -m bench in its root",
              file=sys.stderr)
        return 1
    sys.path.insert(0, str(path.parent))     # first, so this checkout's bench/ is found
    from bench import runner

    return runner.main(argv, prog="fastnn bench")


def _arg_type(convert, valid, expected):
    """An argparse ``type``: ``convert`` the text, then require ``valid(value)``;
    otherwise a usage error saying it ``must be <expected>`` (exit code 2)."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value
    return parse


_positive = _arg_type(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _arg_type(int, lambda v: v >= 0, "an integer >= 0")
_fraction = _arg_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
_nonneg_float = _arg_type(float, lambda v: 0 <= v < float("inf"),
                          "a finite number >= 0")


def _name_in(table):
    """An argparse ``type`` for a name of ``table``: its canonical spelling, matched
    without regard to case (``specs.lookup``, fastnn's one rule); other text is passed
    on unchanged, for ``choices`` to report as a usage error."""
    from fastnn.kernels import specs

    def parse(text):
        try:
            return specs.lookup(table, text, "name")
        except ValueError:
            return text
    return parse


def _lower(text):
    return text.strip().lower()


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default; options without one (None) say in
    their help what happens instead, and get no "(default: None)"."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    from fastnn.activations import ACTIVATIONS
    from fastnn.losses import LOSSES
    from fastnn.optim import OPTIMIZERS

    parser = argparse.ArgumentParser(
        prog="fastnn", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser(
        "train", help="train an MLP and print its test score",
        formatter_class=_DefaultsHelp,
        description="Train a multi-layer perceptron and print its test score.  Data: "
        "a bundled data set (fixed 80/20 split, seed 0; "
        + "; ".join(f"{k}: {v[0]}, {v[1]}" for k, v in DATASETS.items())
        + ") or MNIST-style IDX files (--idx).  Progress bars go to stderr.")
    data = t.add_argument_group("data")
    data.add_argument("--dataset", default="digits", choices=tuple(DATASETS),
                      type=_name_in(DATASETS), help="bundled data set")
    data.add_argument("--idx", nargs=2, metavar=("IMAGES", "LABELS"),
                      help="train on IDX files instead (e.g. MNIST's "
                      "train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz); pixels "
                      "scaled to [0, 1]")
    data.add_argument("--idx-test", nargs=2, metavar=("IMAGES", "LABELS"),
                      help="test set for --idx (default: --test-size of --idx's data)")
    data.add_argument("--test-size", type=_fraction, default=0.2,
                      help="fraction held out as the test set")
    data.add_argument("--validation-split", type=_fraction, default=0.1,
                      help="fraction of the training part held out for validation "
                      "metrics (0: none)")
    model = t.add_argument_group("model")
    model.add_argument("--hidden", type=_hidden, default="128", metavar="SIZES",
                       help="hidden layer sizes, e.g. 128,64 (empty: none)")
    model.add_argument("--activation", default="relu", choices=tuple(ACTIVATIONS),
                       type=_name_in(ACTIVATIONS), help="hidden activation")
    model.add_argument("--dtype", default="float32", choices=DTYPES,
                       type=_name_in(DTYPES),
                       help="floating-point type of the weights and the computation")
    model.add_argument("--backend", default="cpu", type=_lower,
                       help="cpu, cuda, numpy (see `fastnn info` for what is "
                            "available)")
    train = t.add_argument_group("training")
    train.add_argument("--loss", choices=tuple(LOSSES), type=_name_in(LOSSES),
                       help=_loss_help())
    train.add_argument("--optimizer", default="adam", choices=tuple(OPTIMIZERS),
                       type=_name_in(OPTIMIZERS), help="update rule")
    train.add_argument("--lr", type=_nonneg_float,
                       help="learning rate (default: "
                       + ", ".join(f"{v:g} for {k}" for k, v in CLI_LR.items())
                       + ", else the optimizer's PyTorch default)")
    train.add_argument("--epochs", type=_positive, default=40,
                       help="passes over the training data")
    train.add_argument("--batch-size", type=_positive, default=32,
                       help="samples per optimizer step")
    train.add_argument("--micro-batch-size", type=_positive,
                       help="accumulate each batch's gradient over micro-batches of "
                       "this size (same result, less memory)")
    train.add_argument("--patience", type=_nonneg_int, metavar="EPOCHS",
                       help="stop early when the validation loss has not improved for "
                       "this many epochs (and keep the best weights)")
    train.add_argument("--seed", type=_nonneg_int, default=0,
                       help="weight initialisation and shuffling")
    train.add_argument("--distributed", choices=("allreduce", "ordered"),
                       nargs="?", const="allreduce",
                       help="data-parallel over MPI: run under mpiexec -n N python -m "
                       "fastnn train --distributed ...; each process trains on its "
                       "share of every batch and all take the whole batch's update "
                       "(rank 0 prints and saves; needs mpi4py: pip install "
                       "'fastnn[mpi]' mpich)")
    out = t.add_argument_group("output")
    out.add_argument("--save", metavar="MODEL.npz",
                     help="save the trained model (and optimizer state) here (the "
                     "folder must exist: checked before training)")
    out.add_argument("--plot", metavar="CURVES.png",
                     help="plot loss/accuracy per epoch (needs matplotlib: "
                     "pip install 'fastnn[plot]')")
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_train)
    i = sub.add_parser("info", help="versions, backends, threads, kernel caches",
                       description="Print versions, the available backends (and why "
                       "any is missing), thread settings and where compiled kernels "
                       "are cached.")
    i.set_defaults(func=_info)
    # listed for --help; main() hands `fastnn bench ...` to the runner before parsing
    sub.add_parser("bench", add_help=False,
                   help="run the benchmark suites and write a markdown report and a "
                   "chart (source checkout; `fastnn bench --help` for options)")
    return parser


def main(argv=None):
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv[:1] == ["bench"]:
            return _bench(argv[1:])
        args = build_parser().parse_args(argv)   # usage errors exit with code 2
        try:
            return args.func(args)
        except (UsageError, ValueError, TypeError, RuntimeError, OSError) as exc:
            print(f"fastnn: error: {exc}", file=sys.stderr)
            return 1
        except MemoryError as exc:
            why = f": {exc}" if str(exc) else ""
            print(f"fastnn: error: out of memory{why}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        # fit stops between optimizer steps: nothing is left half-updated; --save
        # writes atomically, so no partial file either.
        print("fastnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
