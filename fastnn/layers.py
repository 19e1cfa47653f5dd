"""The layers a model is made of: ``Dense`` and its ``Parameter`` s (views into the
model's flat buffers, see :class:`fastnn.Sequential`)."""
import operator

import numpy as np

from . import _checks
from .activations import INITS, activation_name, init_name


def read_only(name, owner):
    """A buffer attribute (stored as ``_<name>``) that cannot be rebound: the kernels
    work on the model's flat buffers, so an array put in its place would be ignored
    by them or, of the wrong size, read out of bounds.  ``owner``: what the error
    message calls the object (``model``, ``p``)."""
    def refuse(self, value):
        raise AttributeError(
            f"{type(self).__name__}.{name} cannot be replaced: the compiled kernels "
            f"work on the model's own flat buffers; write into it instead "
            f"({owner}.{name}[...] = values, or model.set_weights(list))")
    return property(operator.attrgetter("_" + name), refuse,
                    doc=f"the {name} buffer (read-only attribute; write into it)")


class Parameter:
    """One named tensor of a model: ``data`` and ``grad`` are views of the model's flat
    parameter and gradient buffers (backend arrays).  Write into them
    (``p.data[...] = values``); the attributes themselves cannot be rebound."""
    __slots__ = ("name", "_data", "_grad", "model")

    data = read_only("data", "p")
    grad = read_only("grad", "p")

    def __init__(self, name, data, grad, model):
        self.name, self._data, self._grad, self.model = name, data, grad, model

    @property
    def shape(self):
        """The tensor's shape: (in, out) for a weight, (out,) for a bias."""
        return tuple(self.data.shape)

    @property
    def size(self):
        """The number of values."""
        return int(np.prod(self.data.shape))

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.shape})"


class Dense:
    """A fully connected layer: ``Z = X W + b``, then ``A = activation(Z)``.

    ``weight`` has shape ``(in_features, out_features)`` and ``bias``
    ``(out_features,)``.  ``activation`` is None (linear) or one of
    ``fastnn.ACTIVATIONS`` (any case); ``init`` chooses the weight initialisation (default: He
    normal for the relu family, Glorot uniform otherwise); biases start at zero.
    A Dense gets its parameters when a :class:`Sequential` is built from it.
    """

    def __init__(self, in_features, out_features, activation=None, init=None):
        self.in_features = _checks.positive_int(in_features, "in_features")
        self.out_features = _checks.positive_int(out_features, "out_features")
        self.activation = activation_name(activation)
        self.init = init_name(init, self.activation)
        self.weight = None
        self.bias = None

    @property
    def param_shapes(self):
        """Shapes of (weight, bias): ((in_features, out_features), (out_features,))."""
        return ((self.in_features, self.out_features), (self.out_features,))

    def initial_values(self, rng):
        """float64 initial weight and bias, drawn from ``rng``."""
        w = INITS[self.init](rng, self.in_features, self.out_features)
        return w, np.zeros(self.out_features)

    def __repr__(self):
        return (f"Dense({self.in_features}, {self.out_features}, "
                f"activation={self.activation!r}, init={self.init!r})")

    def config(self):
        """The layer as plain values (what a model file stores)."""
        return {"type": "Dense", "in_features": self.in_features,
                "out_features": self.out_features, "activation": self.activation,
                "init": self.init}
