"""Optimizers, learning-rate schedulers and gradient clipping.

Every optimizer follows the algorithm, argument names and defaults of PyTorch's
``torch.optim`` documentation.  Its state (momentum buffers, moment estimates, ...)
lives in flat buffers shaped like the model's parameter buffer, and one ``step()`` is
one fused kernel over the whole model: the update rule of each element is a formula
in ``fastnn.kernels.formulas``, written once; per-step scalars (bias corrections,
decayed learning rates) are computed here, once per step.

Optimizers work on one model's parameters: pass ``model`` or ``model.parameters()``
(all of them: the step is one kernel over the model's flat buffer).
"""
import math
import numbers

import numpy as np

from . import _checks
from .kernels import specs

STATE_DICT_VERSION = 1


def _flat_owner(params, argname="params"):
    """The Sequential whose flat buffers ``params`` (a model or its parameters()) are."""
    if hasattr(params, "flat_params"):
        return params
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{argname} must be a model or model.parameters(), got "
                        f"{type(params).__name__}") from None
    if not params:
        raise ValueError(f"{argname} is empty: pass model.parameters() or the model")
    model = getattr(params[0], "model", None)
    if model is None or any(getattr(p, "model", None) is not model for p in params) \
            or len(params) != len(model.parameters()):
        raise ValueError(f"{argname} must be all of one model's parameters "
                         "(model.parameters()) or the model itself: the step is one "
                         "kernel over the model's flat buffer")
    return model


def _flag(value, argname):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{argname} must be True or False, got {value!r}")
    return bool(value)


def _unit_interval(value, argname, closed=False):
    """A number in [0, 1) ([0, 1] when ``closed``)."""
    value = _checks.real_number(value, argname, minimum=0.0)
    if value > 1.0 or (value == 1.0 and not closed):
        raise ValueError(f"{argname} must be in [0, 1{']' if closed else ')'}, got "
                         f"{value!r}")
    return value


class Optimizer:
    """Base class.  Subclasses declare ``_args`` (argument -> validator) in the
    constructor's order, choose their update rule (``_rule``: a key of
    ``fastnn.kernels.specs.UPDATE_RULES``) and build its per-step scalars
    (``_scalars``: the rule's named tuple)."""
    _args = {}

    def __init__(self, params, **hyper):
        self.model = _flat_owner(params)
        checked = {}
        for name, check in self._args.items():
            checked[name] = check(hyper[name], name)
        self._validate(checked)
        self._hyper = checked
        self.step_count = 0
        m = self.model
        self._state = {}
        for name in specs.UPDATE_RULES[self._rule(checked)].state:
            buf = m.backend.empty((m.num_parameters,), m.dtype)
            m.backend.fill(buf, self._initial_state(name))
            self._state[name] = buf

    # -- hyper-parameters ----------------------------------------------------------
    def _validate(self, hyper):
        """Checks across arguments (e.g. Nesterov needs momentum)."""

    def _initial_state(self, name):
        return 0.0

    @property
    def lr(self):
        """The learning rate; may be changed between steps (schedulers do)."""
        return self._hyper["lr"]

    @lr.setter
    def lr(self, value):
        self._hyper["lr"] = _nonneg(value, "lr")

    @property
    def hyper(self):
        """The hyper-parameters, as a new dict (only ``lr`` may change after
        construction: the others choose the update rule and its state)."""
        return dict(self._hyper)

    @property
    def state(self):
        """The optimizer's state buffers by PyTorch's names (backend arrays shaped like
        ``model.flat_params``; views, not copies)."""
        return dict(self._state)

    def _rule(self, h):
        """The update rule (a key of ``specs.UPDATE_RULES``) for the hyper-parameters
        ``h``."""
        raise NotImplementedError

    def _scalars(self, t, sign):
        """The rule's named tuple of scalars for step ``t`` (from 1) and the gradient
        factor ``sign``."""
        raise NotImplementedError

    # -- stepping ------------------------------------------------------------------
    def zero_grad(self):
        """Zero the model's gradients (one fill of the flat gradient buffer)."""
        self.model.zero_grad()

    def step(self):
        """Update every parameter from its ``.grad``: one kernel over the model."""
        self.step_scaled(1.0)

    def step_scaled(self, grad_scale):
        """One update with the gradients multiplied by ``grad_scale`` on the fly,
        bit-identical to scaling the gradients first: how ``fit`` applies a clipping
        factor (:func:`clip_factor`) without a pass of its own."""
        m = self.model
        t = self.step_count + 1
        sign = -grad_scale if self._hyper.get("maximize") else grad_scale
        scalars = self._scalars(t, sign)
        F = m.dtype.type
        hyper = type(scalars)(*(F(x) for x in scalars))
        m.backend.optimizer_step(self._rule(self._hyper), m.flat_params, m.flat_grads,
                                 tuple(self._state.values()), hyper)
        self.step_count = t

    # -- saving --------------------------------------------------------------------
    def state_dict(self):
        """Everything needed to resume: a dict of plain values and NumPy copies
        (``type``, ``version``, ``step``, ``hyper``, ``state``)."""
        b = self.model.backend
        return {"type": type(self).__name__, "version": STATE_DICT_VERSION,
                "step": self.step_count, "hyper": self.hyper,
                "state": {k: b.to_numpy(v) for k, v in self._state.items()}}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict`.  Everything is checked before anything
        changes: type, version, hyper-parameters (valid, and choosing the same update
        rule), state names, shapes, exact dtype conversion, finite values."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        missing = {"type", "version", "step", "hyper", "state"} - set(state_dict)
        if missing:
            raise ValueError(f"state_dict lacks {sorted(missing)}")
        if state_dict["type"] != type(self).__name__:
            raise ValueError(f"state_dict is for {state_dict['type']}, not "
                             f"{type(self).__name__}")
        if state_dict["version"] != STATE_DICT_VERSION:
            raise ValueError(f"state_dict has format version {state_dict['version']!r}; "
                             f"this fastnn reads version {STATE_DICT_VERSION}")
        step = state_dict["step"]
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"state_dict['step'] must be an integer >= 0, got {step!r}")
        hyper = dict(state_dict["hyper"])
        if set(hyper) != set(self._args):
            raise ValueError(f"state_dict['hyper'] must have the keys "
                             f"{sorted(self._args)}, got {sorted(hyper)}")
        hyper = {k: check(hyper[k], f"state_dict['hyper'][{k!r}]")
                 for k, check in self._args.items()}
        self._validate(hyper)
        names = specs.UPDATE_RULES[self._rule(hyper)].state
        state = dict(state_dict["state"])
        if set(state) != set(names):
            raise ValueError(f"state_dict['state'] must hold {list(names)} for these "
                             f"hyper-parameters, got {sorted(state)}")
        m = self.model
        arrays = {}
        for k in names:
            arr = _checks.exact_cast(state[k], m.dtype, f"state_dict['state'][{k!r}]")
            if arr.shape != (m.num_parameters,):
                raise ValueError(f"state_dict['state'][{k!r}] must have shape "
                                 f"({m.num_parameters},), got {arr.shape}")
            if not _checks.all_finite(arr):
                raise ValueError(f"state_dict['state'][{k!r}] contains NaN or inf")
            arrays[k] = arr
        self._hyper = hyper
        self.step_count = int(step)
        self._state = {k: m.backend.from_numpy(a) for k, a in arrays.items()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyper.items())
        return f"{type(self).__name__}({args})"


def _nonneg(v, n):
    return _checks.real_number(v, n, minimum=0.0)


def _betas(v, n):
    try:
        b1, b2 = v
    except (TypeError, ValueError):
        raise ValueError(f"{n} must be a pair (beta1, beta2), got {v!r}") from None
    return (_unit_interval(b1, f"{n}[0]"), _unit_interval(b2, f"{n}[1]"))


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, PyTorch's rule:
    d = g + weight_decay p; b = momentum b + (1 - dampening) d (b = d at the first
    step); p -= lr (d + momentum b if nesterov else b), or lr d without momentum."""
    _args = {"lr": _nonneg, "momentum": _nonneg, "dampening": _nonneg,
             "weight_decay": _nonneg, "nesterov": _flag, "maximize": _flag}

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)

    def _validate(self, h):
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0")

    def _rule(self, h):
        return "sgd_momentum" if h["momentum"] else "sgd"

    def _scalars(self, t, sign):
        h = self._hyper
        if not h["momentum"]:
            return specs.SGDScalars(sign=sign, l2=h["weight_decay"], lr=h["lr"])
        mu = h["momentum"]
        mu_now, c = (0.0, 1.0) if t == 1 else (mu, 1.0 - h["dampening"])
        n_d, n_b = (1.0, mu) if h["nesterov"] else (0.0, 1.0)
        return specs.MomentumScalars(sign=sign, l2=h["weight_decay"], lr=h["lr"],
                                     mu=mu_now, c=c, n_d=n_d, n_b=n_b)


class Adagrad(Optimizer):
    """Adagrad: clr = lr / (1 + (t - 1) lr_decay); sum += d^2;
    p -= clr d / (sqrt(sum) + eps)."""
    _args = {"lr": _nonneg, "lr_decay": _nonneg, "weight_decay": _nonneg,
             "initial_accumulator_value": _nonneg, "eps": _nonneg, "maximize": _flag}

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, *, maximize=False):
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         maximize=maximize)

    def _initial_state(self, name):
        return self._hyper["initial_accumulator_value"]

    def _rule(self, h):
        return "adagrad"

    def _scalars(self, t, sign):
        h = self._hyper
        return specs.AdagradScalars(sign=sign, l2=h["weight_decay"],
                                    clr=h["lr"] / (1 + (t - 1) * h["lr_decay"]),
                                    eps=h["eps"])


class RMSprop(Optimizer):
    """RMSprop: v = alpha v + (1 - alpha) d^2; centered: g_avg moves towards d by
    1 - alpha and v - g_avg^2 replaces v; step = d / (sqrt(v) + eps); with momentum
    b = momentum b + step, p -= lr b, else p -= lr step."""
    _args = {"lr": _nonneg, "alpha": _nonneg, "eps": _nonneg, "weight_decay": _nonneg,
             "momentum": _nonneg, "centered": _flag, "maximize": _flag}

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False, *, maximize=False):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, maximize=maximize)

    def _rule(self, h):
        return "rmsprop" + ("_centered" if h["centered"] else "") \
            + ("_momentum" if h["momentum"] else "")

    def _scalars(self, t, sign):
        h = self._hyper
        return specs.RMSpropScalars(sign=sign, l2=h["weight_decay"], lr=h["lr"],
                                    alpha=h["alpha"], c=1.0 - h["alpha"], eps=h["eps"],
                                    mu=h["momentum"])


class Adadelta(Optimizer):
    """Adadelta: v = rho v + (1 - rho) d^2; delta = sqrt(u + eps) / sqrt(v + eps) d;
    u = rho u + (1 - rho) delta^2; p -= lr delta."""
    _args = {"lr": _nonneg, "rho": lambda v, n: _unit_interval(v, n, closed=True),
             "eps": _nonneg, "weight_decay": _nonneg, "maximize": _flag}

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *,
                 maximize=False):
        super().__init__(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                         maximize=maximize)

    def _rule(self, h):
        return "adadelta"

    def _scalars(self, t, sign):
        h = self._hyper
        return specs.AdadeltaScalars(sign=sign, l2=h["weight_decay"], lr=h["lr"],
                                     rho=h["rho"], c=1.0 - h["rho"], eps=h["eps"])


class Adam(Optimizer):
    """Adam (PyTorch's algorithm): m moves towards d by 1 - beta1, v = beta2 v +
    (1 - beta2) d^2, p -= lr / (1 - beta1^t) m / (sqrt(v) / sqrt(1 - beta2^t) + eps);
    amsgrad uses the running maximum of v.  weight_decay is added to the gradient
    (L2); see :class:`AdamW` for decoupled decay."""
    _args = {"lr": _nonneg, "betas": _betas, "eps": _nonneg, "weight_decay": _nonneg,
             "amsgrad": _flag, "maximize": _flag}
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)

    def _rule(self, h):
        return "adam_amsgrad" if h["amsgrad"] else "adam"

    def _scalars(self, t, sign):
        h = self._hyper
        b1, b2 = h["betas"]
        lr, wd = h["lr"], h["weight_decay"]
        l2, decay = (0.0, 1.0 - lr * wd) if self._decoupled else (wd, 1.0)
        return specs.AdamScalars(sign=sign, l2=l2, decay=decay,
                                 step_size=lr / (1.0 - b1 ** t),
                                 bc2_sqrt=math.sqrt(1.0 - b2 ** t), eps=h["eps"],
                                 c1=1.0 - b1, b2=b2, c2=1.0 - b2)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr weight_decay before the Adam
    update (PyTorch's AdamW, default weight_decay 1e-2)."""
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adadelta": Adadelta,
              "adam": Adam, "adamw": AdamW}


def get_optimizer(optimizer, params, **kwargs):
    """An Optimizer from an instance (returned as is; it must own ``params``' model)
    or a name in ``OPTIMIZERS`` (any case; built with PyTorch's defaults, or
    ``kwargs``)."""
    model = _flat_owner(params)
    if isinstance(optimizer, Optimizer):
        if optimizer.model is not model:
            raise ValueError("optimizer belongs to another model")
        if kwargs:
            raise ValueError("optimizer options are for a name, not an instance")
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an Optimizer instance or a name, got the "
                        f"class {optimizer.__name__}: pass {optimizer.__name__}(model, "
                        f"...) or the name {optimizer.__name__.lower()!r}")
    if not isinstance(optimizer, str):
        raise ValueError(f"unknown optimizer {optimizer!r}; expected an Optimizer or one "
                         f"of {tuple(OPTIMIZERS)}")
    name = specs.lookup(OPTIMIZERS, optimizer, "optimizer")
    return OPTIMIZERS[name](model, **kwargs)


# ---- gradient clipping ----------------------------------------------------------------
def clip_factor(model, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """(total norm, the factor PyTorch's ``clip_grad_norm_`` multiplies the gradients
    by, None when it is 1), without changing the gradients: ``fit`` passes the factor
    to :meth:`Optimizer.step_scaled`.  ``max_norm`` and ``norm_type`` as checked by
    :func:`clip_grad_norm`."""
    total = model.backend.vector_norm(model.flat_grads, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"the total gradient norm is {total}: non-finite gradients "
                           "(error_if_nonfinite=True)")
    coef = max_norm / (total + 1e-6)
    return total, (None if coef >= 1.0 else coef)


def clip_args(max_norm, norm_type):
    """(max_norm, norm_type) checked: a number >= 0, and a positive number or inf."""
    max_norm = _checks.real_number(max_norm, "max_norm", minimum=0.0)
    if not (isinstance(norm_type, numbers.Real) and not isinstance(norm_type, bool)
            and (norm_type == math.inf or (math.isfinite(norm_type) and norm_type > 0))):
        raise ValueError(f"norm_type must be a positive number or inf, got {norm_type!r}")
    return max_norm, float(norm_type)


def clip_grad_norm(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients so that their total ``norm_type``-norm (over all of them,
    as one vector) is at most ``max_norm``; return the norm before clipping (PyTorch's
    ``clip_grad_norm_``: factor max_norm / (norm + 1e-6) when below 1).  One reduction
    over the flat gradient buffer (in float64), and one scaling pass if needed."""
    model = _flat_owner(parameters, "parameters")
    max_norm, norm_type = clip_args(max_norm, norm_type)
    total, factor = clip_factor(model, max_norm, norm_type, error_if_nonfinite)
    if factor is not None:
        model.backend.scale(model.flat_grads, factor)
    return total


# ---- learning-rate schedulers ---------------------------------------------------------
class LRScheduler:
    """Base class: PyTorch's scheduler protocol.  Construction sets epoch 0 (and the
    optimizer's lr to the schedule's first value); each :meth:`step` advances one
    epoch (or one update, as you call it) and sets the optimizer's ``lr``.  The rules
    are PyTorch's chainable ones: they start from the optimizer's current lr."""

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastnn Optimizer, got "
                            f"{type(optimizer).__name__}")
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, numbers.Integral) \
                or last_epoch < -1:
            raise ValueError(f"last_epoch must be an integer >= -1, got {last_epoch!r}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = int(last_epoch)
        self._step_count = 0
        self.step()

    def _next_lr(self, lr):
        raise NotImplementedError

    def step(self):
        self._step_count += 1
        self.last_epoch += 1
        self.optimizer.lr = self._next_lr(self.optimizer.lr)
        self._last_lr = self.optimizer.lr

    def get_last_lr(self):
        """The learning rate the last :meth:`step` set."""
        return self._last_lr

    def state_dict(self):
        return {k: v for k, v in vars(self).items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        if set(state_dict) != set(self.state_dict()):
            raise ValueError(f"state_dict must have the keys {sorted(self.state_dict())}, "
                             f"got {sorted(state_dict)}")
        vars(self).update(state_dict)


class StepLR(LRScheduler):
    """lr *= gamma every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _checks.positive_int(step_size, "step_size")
        self.gamma = _checks.real_number(gamma, "gamma", minimum=0.0)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr):
        if self.last_epoch == 0 or self.last_epoch % self.step_size:
            return lr
        return lr * self.gamma


class ExponentialLR(LRScheduler):
    """lr *= gamma every epoch."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _checks.real_number(gamma, "gamma", minimum=0.0)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr):
        return lr if self.last_epoch == 0 else lr * self.gamma


class CosineAnnealingLR(LRScheduler):
    """lr follows eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2, in
    PyTorch's recursive form (so it composes with changes made to the lr)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _checks.positive_int(T_max, "T_max")
        self.eta_min = _checks.real_number(eta_min, "eta_min", minimum=0.0)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr):
        e, T, lo, base = self.last_epoch, self.T_max, self.eta_min, self.base_lr
        if e == 0:
            return lr
        if self._step_count == 1:          # resumed at epoch e: the closed form
            return lo + (base - lo) * (1 + math.cos(e * math.pi / T)) / 2
        if (e - 1 - T) % (2 * T) == 0:
            return lr + (base - lo) * (1 - math.cos(math.pi / T)) / 2
        return ((1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T))
                * (lr - lo) + lo)


SCHEDULERS = {"step": StepLR, "exponential": ExponentialLR, "cosine": CosineAnnealingLR}
