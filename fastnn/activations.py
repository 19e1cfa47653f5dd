"""Activation and weight-initialisation names as a layer accepts them.

The activations themselves are the registry's (``fastnn.ACTIVATIONS`` is
``fastnn.kernels.specs.ACTIVATIONS``: name -> its spec, with its default init); the
initialisations are drawn here, in float64, from a NumPy generator."""
import numpy as np

from .kernels.specs import ACTIVATIONS, INIT_NAMES, lookup

__all__ = ["ACTIVATIONS", "INITS", "activation_name", "init_name"]

# init name -> f(rng, fan_in, fan_out) -> float64 array (fan_in, fan_out)
INITS = {
    "he_normal": lambda rng, i, o: rng.normal(0.0, np.sqrt(2.0 / i), (i, o)),
    "he_uniform": lambda rng, i, o: rng.uniform(-np.sqrt(6.0 / i), np.sqrt(6.0 / i), (i, o)),
    "glorot_normal": lambda rng, i, o: rng.normal(0.0, np.sqrt(2.0 / (i + o)), (i, o)),
    "glorot_uniform": lambda rng, i, o: rng.uniform(-np.sqrt(6.0 / (i + o)),
                                                    np.sqrt(6.0 / (i + o)), (i, o)),
}
assert tuple(INITS) == INIT_NAMES, "kernels.specs.INIT_NAMES and INITS disagree"


def activation_name(activation):
    """The registry name of ``activation`` (None: linear; any case)."""
    return "linear" if activation is None else lookup(ACTIVATIONS, activation,
                                                      "activation", allow_none=True)


def init_name(init, activation):
    """The init name of ``init`` (None: the activation's default; any case)."""
    if init is None:
        return ACTIVATIONS[activation].init
    return lookup(INITS, init, "init", allow_none=True)
