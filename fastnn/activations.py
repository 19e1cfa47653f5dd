"""The activation names every backend implements, and each one's default weight
initialisation (He for the relu family, Glorot otherwise)."""
import numpy as np

# name -> default init
ACTIVATIONS = {
    "linear": "glorot_uniform",
    "relu": "he_normal",
    "leaky_relu": "he_normal",
    "elu": "he_normal",
    "sigmoid": "glorot_uniform",
    "tanh": "glorot_uniform",
    "softmax": "glorot_uniform",
    "gelu": "he_normal",
    "silu": "he_normal",
    "softplus": "glorot_uniform",
}

# init name -> f(rng, fan_in, fan_out) -> float64 array (fan_in, fan_out)
INITS = {
    "he_normal": lambda rng, i, o: rng.normal(0.0, np.sqrt(2.0 / i), (i, o)),
    "he_uniform": lambda rng, i, o: rng.uniform(-np.sqrt(6.0 / i), np.sqrt(6.0 / i), (i, o)),
    "glorot_normal": lambda rng, i, o: rng.normal(0.0, np.sqrt(2.0 / (i + o)), (i, o)),
    "glorot_uniform": lambda rng, i, o: rng.uniform(-np.sqrt(6.0 / (i + o)),
                                                    np.sqrt(6.0 / (i + o)), (i, o)),
}


def activation_name(activation):
    name = "linear" if activation is None else activation
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected None or one of "
                         f"{tuple(ACTIVATIONS)}")
    return name


def init_name(init, activation):
    name = ACTIVATIONS[activation] if init is None else init
    if name not in INITS:
        raise ValueError(f"unknown init {init!r}; expected None or one of {tuple(INITS)}")
    return name
