"""Optimizers: one fused kernel over the model's flat parameter buffer per step."""
from . import _checks


def _flat_owner(params):
    """The Sequential whose flat buffers ``params`` (a model or its parameters()) are."""
    if hasattr(params, "flat_params"):
        return params
    params = list(params)
    if not params:
        raise ValueError("params is empty: pass model.parameters() or the model")
    model = getattr(params[0], "model", None)
    if model is None or any(getattr(p, "model", None) is not model for p in params) \
            or len(params) != len(model.parameters()):
        raise ValueError("params must be all of one model's parameters "
                         "(model.parameters()) or the model itself: the step is one "
                         "kernel over the model's flat buffer")
    return model


class Optimizer:
    def __init__(self, params, lr):
        self.model = _flat_owner(params)
        self.lr = lr

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _checks.real_number(value, "lr", minimum=0.0)

    def zero_grad(self):
        """Zero the model's gradients (one fill of the flat gradient buffer)."""
        self.model.zero_grad()


class SGD(Optimizer):
    """Plain stochastic gradient descent: p -= lr * grad, one kernel over all
    parameters.  (Momentum, Nesterov and weight decay come with the optimizer issue.)"""

    def __init__(self, params, lr=1e-3):
        super().__init__(params, lr)

    def step(self):
        m = self.model
        m.backend.sgd_step(m.flat_params, m.flat_grads, self.lr)

    def __repr__(self):
        return f"SGD(lr={self.lr})"
