"""fastnn: dense neural networks whose hot paths are compiled kernels.

>>> import numpy as np, fastnn as fn
>>> model = fn.Sequential(fn.Dense(64, 128, activation="relu"), fn.Dense(128, 10),
...                       backend="cpu", dtype=np.float32, seed=0)
"""
from . import threads as _threads

_threads._configure_numba_before_import()   # before anything imports numba

from .activations import ACTIVATIONS, INITS  # noqa: E402
from .backends import available_backends, get_backend  # noqa: E402
from .layers import Dense, Parameter, Sequential  # noqa: E402
from .losses import (LOSSES, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss,  # noqa: E402
                     HingeLoss, HuberLoss, KLDivLoss, L1Loss, Loss, MSELoss, get_loss)
from . import optim  # noqa: E402
from .optim import (SGD, Adadelta, Adagrad, Adam, AdamW, CosineAnnealingLR,  # noqa: E402
                    ExponentialLR, Optimizer, RMSprop, StepLR, clip_grad_norm,
                    get_optimizer)
from .training import Callback, EarlyStopping, History  # noqa: E402
from .io import load  # noqa: E402
from . import datasets  # noqa: E402
from .threads import get_num_threads, set_num_threads  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "INITS", "LOSSES", "available_backends", "get_backend", "Dense",
    "Parameter", "Sequential", "Loss", "MSELoss", "L1Loss", "HuberLoss", "BCELoss",
    "BCEWithLogitsLoss", "CrossEntropyLoss", "HingeLoss", "KLDivLoss", "get_loss",
    "optim", "Optimizer", "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW",
    "get_optimizer", "clip_grad_norm", "StepLR", "ExponentialLR", "CosineAnnealingLR",
    "Callback", "EarlyStopping", "History", "load", "datasets", "set_num_threads", "get_num_threads",
]
