"""fastnn: dense neural networks whose hot paths are compiled kernels.

>>> import numpy as np, fastnn as fn
>>> model = fn.Sequential(fn.Dense(64, 128, activation="relu"), fn.Dense(128, 10),
...                       backend="cpu", dtype=np.float32, seed=0)
"""
import atexit as _atexit
import gc as _gc

from . import threads as _threads

_threads._configure_numba_before_import()   # before anything imports numba

# Start-up and exit time.  Importing numba builds ~10^5 objects: the collector is paused
# while they are made (the previous state is restored), and at exit they are frozen so
# that the interpreter's final collections, which would traverse them all several times
# to free nothing that matters at exit, skip them (~0.3 s of a 1 s cold start here; see
# bench/coldstart.py).  Registered before numba's handlers, so it runs after them.
_atexit.register(_gc.freeze)
_gc_was_enabled = _gc.isenabled()
_gc.disable()
try:
    from ._version import __version__
    from .activations import ACTIVATIONS, INITS
    from .backends import available_backends, get_backend
    from .layers import Dense, Parameter
    from .model import Sequential
    # LOSSES, Loss, get_loss and a class per registry loss (MSELoss, ...)
    from .losses import *  # noqa: F401,F403
    from . import losses as _losses
    from . import optim
    from .optim import (SGD, Adadelta, Adagrad, Adam, AdamW, CosineAnnealingLR,
                        ExponentialLR, Optimizer, RMSprop, StepLR, clip_grad_norm,
                        get_optimizer)
    from .lbfgs import LBFGS
    from .training import Callback, EarlyStopping, History
    from .io import load
    from . import datasets
    from .threads import get_num_threads, set_num_threads
finally:
    if _gc_was_enabled:
        _gc.enable()

__all__ = [
    "__version__", "ACTIVATIONS", "INITS", "available_backends", "get_backend", "Dense",
    "Parameter", "Sequential", *_losses.__all__,
    "optim", "Optimizer", "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "LBFGS",
    "get_optimizer", "clip_grad_norm", "StepLR", "ExponentialLR", "CosineAnnealingLR",
    "Callback", "EarlyStopping", "History", "load", "datasets", "set_num_threads",
    "get_num_threads",
]
