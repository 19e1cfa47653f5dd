"""Optimizers, learning-rate schedulers and gradient clipping.

Every optimizer follows the algorithm, argument names and defaults of PyTorch's
``torch.optim`` documentation.  Its state (momentum buffers, moment estimates, ...)
lives in flat buffers shaped like the model's parameter buffer, and one ``step()`` is
one fused kernel over the whole model: the update rule of each element is a formula
in ``fastnn.kernels.formulas``, written once; per-step scalars (bias corrections,
decayed learning rates) are computed here, once per step.

Optimizers work on one model's parameters: pass ``model`` or ``model.parameters()``
(the step is then one kernel over the model's flat buffer), or a subset of
``model.parameters()`` (the others are not trained, e.g. a frozen layer): the state
buffers then hold the listed parameters only, in the model's order, and a step is one
kernel per run of adjacent listed parameters.

Interrupts: an optimizer step, a scheduler step and a ``load_state_dict`` happen
entirely or not at all when Ctrl-C (SIGINT) arrives during one, inside
:func:`deferred_interrupts` (``fit`` trains inside it): the KeyboardInterrupt is
raised as soon as the step is complete, so the weights, the moments and the step
counter always agree.
"""
import contextlib
import math
import numbers
import signal
import threading
from collections.abc import Mapping

import numpy as np

from . import _checks
from .kernels import specs

STATE_DICT_VERSION = 1

# State buffers that are second-moment estimates (sums of squares): never negative.
NONNEGATIVE_STATE = ("exp_avg_sq", "max_exp_avg_sq", "sum", "square_avg", "acc_delta")


# ---- Ctrl-C: whole steps only ---------------------------------------------------------
class _Interrupts:
    """SIGINT deferred over the main thread's critical sections (an optimizer step,
    a scheduler step, a state load).  ``depth`` counts the sections the main thread
    is in: the step path only adds and subtracts (~0.1 us); the handler, installed by
    :func:`deferred_interrupts`, runs in the main thread (Python runs signal
    handlers there, whichever thread the C-level handler ran on) and, inside a
    section, only notes the signal, which the section's end then delivers to the
    handler it replaced (Python's: KeyboardInterrupt).  KeyboardInterrupt is only
    ever raised in the main thread, so only its sections count."""

    def __init__(self):
        self.depth = 0
        self.pending = None
        self.replaced = []          # the handlers deferred_interrupts replaced (a stack)

    def handler(self, signum, frame):
        if self.depth:
            self.pending = (signum, frame)
            return
        self.forward(signum, frame)

    def forward(self, signum, frame):
        (self.replaced[-1] if self.replaced else signal.default_int_handler)(signum,
                                                                              frame)

    def deliver(self):
        """Called at the end of the outermost section with a signal pending."""
        pending, self.pending = self.pending, None
        if pending is not None:
            self.forward(*pending)


_INTERRUPTS = _Interrupts()


def _sigint_handler(signum, frame):
    """The SIGINT handler :func:`deferred_interrupts` installs."""
    _INTERRUPTS.handler(signum, frame)


_MAIN_THREAD = threading.main_thread().ident
_get_ident = threading.get_ident


class _critical:
    """``with _critical():`` a section that Ctrl-C does not cut (under
    :func:`deferred_interrupts`); for the rarely called paths (the step inlines it)."""
    __slots__ = ("main",)

    def __enter__(self):
        self.main = _get_ident() == _MAIN_THREAD
        if self.main:
            _INTERRUPTS.depth += 1

    def __exit__(self, *exc):
        if self.main:
            _INTERRUPTS.depth -= 1
            if _INTERRUPTS.pending is not None and not _INTERRUPTS.depth:
                _INTERRUPTS.deliver()
        return False


@contextlib.contextmanager
def deferred_interrupts():
    """While active, Ctrl-C (SIGINT) during an optimizer step, a scheduler step or a
    ``load_state_dict`` takes effect (as the KeyboardInterrupt, or whatever SIGINT
    handler was installed) right after it, so that an interrupted training leaves the
    model and its optimizer consistent: every step happened entirely or not at all.
    ``fit`` trains inside it; wrap a training loop of your own in it likewise.  Only
    the main thread can set a signal handler: elsewhere (where KeyboardInterrupt is
    never raised anyway) this does nothing.  Costs one handler swap on entry and on
    exit, nothing per step."""
    installed = False
    if _get_ident() == _MAIN_THREAD:
        current = signal.getsignal(signal.SIGINT)
        if callable(current) and current is not _sigint_handler:
            _INTERRUPTS.replaced.append(current)
            try:
                signal.signal(signal.SIGINT, _sigint_handler)
                installed = True
            except (ValueError, OSError):       # not the main interpreter
                _INTERRUPTS.replaced.pop()
    try:
        yield
    finally:
        if installed:
            previous = _INTERRUPTS.replaced.pop()
            if signal.getsignal(signal.SIGINT) is _sigint_handler:
                signal.signal(signal.SIGINT, previous)
            pending, _INTERRUPTS.pending = _INTERRUPTS.pending, None
            if pending is not None and not _INTERRUPTS.depth:
                previous(*pending)


# ---- which parameters -----------------------------------------------------------------
def _params_of(params, argname="params"):
    """(model, spans) for ``params``: a model, or a list of its Parameters (each once;
    any order).  ``spans`` is None for all of the model's parameters, else the sorted
    runs ``(lo, hi)`` of the flat buffer the listed parameters cover (adjacent ones
    merged)."""
    if hasattr(params, "flat_params"):
        return params, None
    if hasattr(params, "model") and hasattr(params, "data"):
        raise TypeError(f"{argname} must be a model or a list of its Parameters, got "
                        f"one Parameter ({params.name}): pass [{params.name}] as a list")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{argname} must be a model or model.parameters(), got "
                        f"{type(params).__name__}") from None
    if not params:
        raise ValueError(f"{argname} is empty: pass model.parameters() or the model")
    for i, p in enumerate(params):
        if not (hasattr(p, "model") and hasattr(p, "data") and hasattr(p, "name")):
            raise TypeError(f"{argname}[{i}] must be a Parameter of a model "
                            f"(model.parameters()), got {type(p).__name__}")
    model = params[0].model
    own = {id(q): k for k, q in enumerate(model.parameters())}
    seen = {}
    for i, p in enumerate(params):
        if p.model is not model:
            raise ValueError(f"{argname}[{i}] ({p.name}) is a parameter of another model "
                             f"than {argname}[0] ({params[0].name}): an optimizer "
                             "trains the parameters of one model")
        k = own.get(id(p))
        if k is None:
            raise ValueError(f"{argname}[{i}] ({p.name}) is not one of its model's "
                             "parameters (model.parameters())")
        if k in seen:
            raise ValueError(f"{argname} lists the parameter {p.name} twice (at "
                             f"{seen[k]} and {i}): list each parameter once")
        seen[k] = i
    if len(seen) == len(own):
        return model, None
    spans, offset = [], 0
    for k, q in enumerate(model.parameters()):
        lo, offset = offset, offset + q.size
        if k in seen:
            if spans and spans[-1][1] == lo:
                spans[-1] = (spans[-1][0], offset)
            else:
                spans.append((lo, offset))
    return model, tuple(spans)


def _flat_owner(params, argname="params"):
    """The Sequential whose parameters ``params`` (a model or a list of its
    parameters) are."""
    return _params_of(params, argname)[0]


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
    (``_scalars``: the rule's named tuple), and say in ``_sources`` what each scalar
    is made of (for the error when one overflows the model's dtype)."""
    _args = {}
    # scalar of the rule -> what it is made of, in the user's terms
    _sources = {"l2": "weight_decay", "lr": "lr", "clr": "lr", "eps": "eps",
                "mu": "momentum"}

    def __init__(self, params, **hyper):
        self.model, self._spans = _params_of(params)
        checked = {}
        for name, check in self._args.items():
            checked[name] = check(hyper[name], name)
        self._validate(checked)
        self._check_range(checked)
        self._hyper = checked
        # the largest lr (weight_decay, eps) known to pass _check_range
        self._ok = {"lr": checked["lr"]}
        self.step_count = 0
        m = self.model
        size = m.num_parameters if self._spans is None else \
            sum(hi - lo for lo, hi in self._spans)
        self._state = {}
        for name in specs.UPDATE_RULES[self._rule(checked)].state:
            buf = m.backend.empty((size,), m.dtype)
            m.backend.fill(buf, self._initial_state(name))
            self._state[name] = buf

    # -- hyper-parameters ----------------------------------------------------------
    def _validate(self, hyper):
        """Checks across arguments (e.g. Nesterov needs momentum)."""

    def _check_range(self, hyper, prefix=""):
        """Refuse (ValueError naming the argument) hyper-parameters that overflow the
        model's dtype, by themselves or in the per-step scalars the kernel gets in
        that dtype (checked at steps 1 and 2: later steps only shrink Adam's step
        size and Adagrad's decayed lr, and momentum enters at step 2)."""
        dt = self.model.dtype
        big = _checks.RANGE[dt][0]
        for name, value in hyper.items():
            # a tuple (Adam's betas) element by element
            items = enumerate(value) if isinstance(value, tuple) else ((None, value),)
            for i, v in items:
                if isinstance(v, float) and not abs(v) <= big:
                    label = name if i is None else f"{name}[{i}]"
                    raise ValueError(f"{prefix}{label}={v!r} is too large for the "
                                     f"model's dtype {dt} (largest finite value {big:g})")
        for t in (1, 2):
            scalars = self._scalars(t, 1.0, hyper)
            for field, value in zip(scalars._fields, scalars):
                if not abs(value) <= big:
                    what = self._sources.get(field, field)
                    raise ValueError(f"{prefix}hyper-parameters too large for the "
                                     f"model's dtype {dt}: {what} = {value:g} at step "
                                     f"{t} (largest finite value {big:g})")

    def _initial_state(self, name):
        return 0.0

    @property
    def lr(self):
        """The learning rate; may be changed between steps (schedulers do)."""
        return self._hyper["lr"]

    @lr.setter
    def lr(self, value):
        self._hyper["lr"] = self._checked_lr(value)

    @property
    def weight_decay(self):
        """The L2 factor added to the gradient (decoupled for AdamW); may be changed
        between steps, like :attr:`lr` (scikit-learn's penalty, alpha over each batch's
        size, needs that: ``fastnn.sklearn``)."""
        return self._scalar_hyper("weight_decay")

    @weight_decay.setter
    def weight_decay(self, value):
        self._set_scalar_hyper("weight_decay", value)

    @property
    def eps(self):
        """The denominator's epsilon (Adam, RMSprop, ...); may be changed between
        steps (``fastnn.sklearn`` gives Adam scikit-learn's epsilon placement so)."""
        return self._scalar_hyper("eps")

    @eps.setter
    def eps(self, value):
        self._set_scalar_hyper("eps", value)

    def _scalar_hyper(self, name):
        if name not in self._hyper:
            raise AttributeError(f"{type(self).__name__} has no {name}")
        return self._hyper[name]

    def _set_scalar_hyper(self, name, value):
        """Change a hyper-parameter that enters the update rule only as a per-step
        scalar (not its choice or state): checked as the constructor's."""
        self._scalar_hyper(name)
        self._hyper[name] = self._checked_scalar(name, value)

    def _checked_lr(self, value, argname="lr"):
        """``value`` as a new lr, checked like the constructor's."""
        return self._checked_scalar("lr", value, argname)

    def _checked_scalar(self, name, value, argname=None):
        """``value`` as a new ``name`` (lr, weight_decay, eps), checked like the
        constructor's (a number >= 0, within the model's dtype by itself and in the
        step's scalars).  Those scalars grow with these values, so one no larger than
        one that passed needs no second look (a scheduler's decaying lr, or
        fastnn.sklearn's per-step epsilon, costs one comparison)."""
        argname = argname or name
        value = _nonneg(value, argname)
        if value > max(self._hyper[name], self._ok.get(name, 0.0)):
            try:
                self._check_range(dict(self._hyper, **{name: value}))
            except ValueError as exc:
                raise ValueError(f"{argname}={value!r}: {exc}") from None
            self._ok[name] = value
        return value

    @property
    def hyper(self):
        """The hyper-parameters, as a new dict (only ``lr``, ``weight_decay`` and
        ``eps`` may change after construction: the others choose the update rule and
        its state)."""
        return dict(self._hyper)

    @property
    def state(self):
        """The optimizer's state buffers by PyTorch's names (backend arrays shaped like
        ``model.flat_params``, or holding the listed parameters only, in the model's
        order, for a subset; views, not copies)."""
        return dict(self._state)

    @property
    def trains_all(self):
        """Whether the optimizer trains all of its model's parameters (else a subset:
        :attr:`param_names`)."""
        return self._spans is None

    @property
    def param_names(self):
        """The names of the parameters this optimizer trains, in the model's order."""
        if self._spans is None:
            return [p.name for p in self.model.parameters()]
        names, offset = [], 0
        for p in self.model.parameters():
            if any(lo <= offset < hi for lo, hi in self._spans):
                names.append(p.name)
            offset += p.size
        return names

    def _rule(self, h):
        """The update rule (a key of ``specs.UPDATE_RULES``) for the hyper-parameters
        ``h``."""
        raise NotImplementedError

    def _scalars(self, t, sign, h):
        """The rule's named tuple of scalars for step ``t`` (from 1), the gradient
        factor ``sign`` and the hyper-parameters ``h``."""
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
        factor (:func:`clip_factor`) without a pass of its own.  The update and the
        step counter advance together: under :func:`deferred_interrupts`, Ctrl-C
        during a step is raised once the step is complete."""
        t, rule, state, scalars = self._next_step(grad_scale)
        F = self.model.dtype.type
        self._advance(t, self._update, rule, state, scalars._make(map(F, scalars)))

    def _next_step(self, grad_scale):
        """(t, rule, state, scalars) of the next step: its number, the update rule,
        the state buffers (a tuple, in the rule's order) and its scalars (the rule's
        named tuple, of Python floats: the caller converts them to the model's
        dtype)."""
        m = self.model
        big = _checks.RANGE[m.dtype][0]
        if not -big <= grad_scale <= big:
            raise ValueError(f"grad_scale must be a finite number within the model's "
                             f"dtype {m.dtype}, got {grad_scale!r}")
        t = self.step_count + 1
        sign = -grad_scale if self._hyper.get("maximize") else grad_scale
        scalars = self._scalars(t, sign, self._hyper)
        return t, self._rule(self._hyper), tuple(self._state.values()), scalars

    def _advance(self, t, update, *args):
        """``update(*args)`` (which applies step ``t``) and the step counter set to
        ``t``, as one section that Ctrl-C does not cut; returns what ``update``
        returns.  (The section is inlined: this is every step's path.)"""
        main = _get_ident() == _MAIN_THREAD
        if main:
            _INTERRUPTS.depth += 1
        try:
            result = update(*args)
            self.step_count = t
        finally:
            if main:
                _INTERRUPTS.depth -= 1
                if _INTERRUPTS.pending is not None and not _INTERRUPTS.depth:
                    _INTERRUPTS.deliver()
        return result

    def _update(self, rule, state, hyper):
        m = self.model
        if self._spans is None:
            m.backend.optimizer_step(rule, m.flat_params, m.flat_grads, state, hyper)
        else:
            self._step_spans(rule, state, hyper)

    def _step_spans(self, rule, state, hyper):
        """A subset's step: one kernel per run of adjacent listed parameters, on
        views of the flat buffers and of the state buffers."""
        m = self.model
        params, grads, at = m.flat_params, m.flat_grads, 0
        for lo, hi in self._spans:
            end = at + hi - lo
            m.backend.optimizer_step(rule, params[lo:hi], grads[lo:hi],
                                     tuple(buf[at:end] for buf in state), hyper)
            at = end

    # -- saving --------------------------------------------------------------------
    def _refuse_subset(self, what):
        if self._spans is not None:
            raise ValueError(
                f"{what} of an optimizer over a subset of the model's parameters "
                f"({', '.join(self.param_names)}) is not supported: a saved state "
                "does not record which parameters it trains, so it would resume "
                "training all of them.  Save the model without it "
                "(model.save(path, include_optimizer=False)), or train all the "
                "parameters")

    def state_dict(self):
        """Everything needed to resume: a dict of plain values and NumPy copies
        (``type``, ``version``, ``step``, ``hyper``, ``state``).  Refused (ValueError)
        for an optimizer over a subset of the parameters."""
        self._refuse_subset("state_dict()")
        b = self.model.backend
        return {"type": type(self).__name__, "version": STATE_DICT_VERSION,
                "step": self.step_count, "hyper": self.hyper,
                "state": {k: b.to_numpy(v) for k, v in self._state.items()}}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict`.  Everything is checked before anything
        changes: type, version, hyper-parameters (valid, within the model's dtype,
        and choosing the same update rule), state names, shapes, exact dtype
        conversion, finite values, second moments >= 0."""
        self._refuse_subset("load_state_dict()")
        if not isinstance(state_dict, Mapping):
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
        for key in ("hyper", "state"):
            if not isinstance(state_dict[key], Mapping):
                raise TypeError(f"state_dict[{key!r}] must be a dict, got "
                                f"{type(state_dict[key]).__name__}")
        hyper = dict(state_dict["hyper"])
        if set(hyper) != set(self._args):
            raise ValueError(f"state_dict['hyper'] must have the keys "
                             f"{sorted(self._args)}, got {sorted(map(str, hyper))}")
        hyper = {k: check(hyper[k], f"state_dict['hyper'][{k!r}]")
                 for k, check in self._args.items()}
        self._validate(hyper)
        self._check_range(hyper, prefix="state_dict['hyper']: ")
        names = specs.UPDATE_RULES[self._rule(hyper)].state
        state = dict(state_dict["state"])
        if set(state) != set(names):
            raise ValueError(f"state_dict['state'] must hold {list(names)} for these "
                             f"hyper-parameters, got {sorted(map(str, state))}")
        m = self.model
        arrays = {}
        for k in names:
            arr = _checks.exact_cast(state[k], m.dtype, f"state_dict['state'][{k!r}]")
            if arr.shape != (m.num_parameters,):
                raise ValueError(f"state_dict['state'][{k!r}] must have shape "
                                 f"({m.num_parameters},), got {arr.shape}")
            if not _checks.all_finite(arr):
                raise ValueError(f"state_dict['state'][{k!r}] contains NaN or inf")
            if k in NONNEGATIVE_STATE and arr.size and arr.min() < 0:
                raise ValueError(f"state_dict['state'][{k!r}] has negative values "
                                 f"(min {float(arr.min())!r}): it is a running average "
                                 "of squares, never negative")
            arrays[k] = arr
        buffers = {k: m.backend.from_numpy(a) for k, a in arrays.items()}
        with _critical():
            self._hyper, self.step_count, self._state = hyper, int(step), buffers
            self._ok = {"lr": hyper["lr"]}      # (the new hyper-parameters passed)

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

    _sources = dict(Optimizer._sources, c="1 - dampening")

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)

    def _validate(self, h):
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0")

    def _rule(self, h):
        return "sgd_momentum" if h["momentum"] else "sgd"

    def _scalars(self, t, sign, h):
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

    def _scalars(self, t, sign, h):
        return specs.AdagradScalars(sign=sign, l2=h["weight_decay"],
                                    clr=h["lr"] / (1 + (t - 1) * h["lr_decay"]),
                                    eps=h["eps"])


class RMSprop(Optimizer):
    """RMSprop: v = alpha v + (1 - alpha) d^2; centered: g_avg moves towards d by
    1 - alpha and v - g_avg^2 replaces v; step = d / (sqrt(v) + eps); with momentum
    b = momentum b + step, p -= lr b, else p -= lr step."""
    _args = {"lr": _nonneg, "alpha": _nonneg, "eps": _nonneg, "weight_decay": _nonneg,
             "momentum": _nonneg, "centered": _flag, "maximize": _flag}

    _sources = dict(Optimizer._sources, c="1 - alpha")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False, *, maximize=False):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, maximize=maximize)

    def _rule(self, h):
        return "rmsprop" + ("_centered" if h["centered"] else "") \
            + ("_momentum" if h["momentum"] else "")

    def _scalars(self, t, sign, h):
        return specs.RMSpropScalars(sign=sign, l2=h["weight_decay"], lr=h["lr"],
                                    alpha=h["alpha"], c=1.0 - h["alpha"], eps=h["eps"],
                                    mu=h["momentum"])


class Adadelta(Optimizer):
    """Adadelta: v = rho v + (1 - rho) d^2; delta = sqrt(u + eps) / sqrt(v + eps) d;
    u = rho u + (1 - rho) delta^2; p -= lr delta."""
    _args = {"lr": _nonneg, "rho": lambda v, n: _unit_interval(v, n, closed=True),
             "eps": _nonneg, "weight_decay": _nonneg, "maximize": _flag}

    _sources = dict(Optimizer._sources, c="1 - rho")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *,
                 maximize=False):
        super().__init__(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                         maximize=maximize)

    def _rule(self, h):
        return "adadelta"

    def _scalars(self, t, sign, h):
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
    _sources = dict(Optimizer._sources, step_size="lr / (1 - betas[0])",
                    decay="1 - lr * weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)

    def _rule(self, h):
        return "adam_amsgrad" if h["amsgrad"] else "adam"

    def _scalars(self, t, sign, h):
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
    ``kwargs``, on ``params``: a model, or a list of its parameters)."""
    if not hasattr(params, "flat_params") and not hasattr(params, "model"):
        try:
            params = list(params)
        except TypeError:
            pass                      # _params_of says what was expected
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
    return OPTIMIZERS[name](params, **kwargs)


# ---- gradient clipping ----------------------------------------------------------------
def _grad_norm(model, spans, norm_type):
    """The ``norm_type``-norm of the gradients in ``spans`` (None: all), in float64:
    one reduction over the flat buffer, or PyTorch's norm of the per-run norms."""
    b, grads = model.backend, model.flat_grads
    if spans is None:
        return b.vector_norm(grads, norm_type)
    norms = [b.vector_norm(grads[lo:hi], norm_type) for lo, hi in spans]
    if any(math.isnan(v) for v in norms):
        return math.nan
    if norm_type == math.inf:
        return max(norms)
    return math.fsum(v ** norm_type for v in norms) ** (1.0 / norm_type)


def clip_factor(model, max_norm, norm_type=2.0, error_if_nonfinite=False, spans=None):
    """(total norm, the factor PyTorch's ``clip_grad_norm_`` multiplies the gradients
    by, None when it is 1), without changing the gradients: ``fit`` passes the factor
    to :meth:`Optimizer.step_scaled`.  ``max_norm`` and ``norm_type`` as checked by
    :func:`clip_grad_norm`; ``spans``: the runs of the flat buffer to measure (an
    optimizer's over a subset of the parameters), None for all."""
    total = _grad_norm(model, spans, norm_type)
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
    """Scale the gradients of ``parameters`` (a model, or a list of its parameters)
    so that their total ``norm_type``-norm (over all of them, as one vector) is at
    most ``max_norm``; return the norm before clipping (PyTorch's
    ``clip_grad_norm_``: factor max_norm / (norm + 1e-6) when below 1; the other
    parameters' gradients are left alone).  For the whole model: one reduction over
    the flat gradient buffer (in float64), and one scaling pass if needed."""
    model, spans = _params_of(parameters, "parameters")
    max_norm, norm_type = clip_args(max_norm, norm_type)
    total, factor = clip_factor(model, max_norm, norm_type, error_if_nonfinite, spans)
    if factor is not None:
        grads = model.flat_grads
        for part in ((grads,) if spans is None else (grads[lo:hi] for lo, hi in spans)):
            model.backend.scale(part, factor)
    return total


# ---- learning-rate schedulers ---------------------------------------------------------
def _epoch(value, argname):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < -1:
        raise ValueError(f"{argname} must be an integer >= -1, got {value!r}")
    return int(value)


def _count(value, argname):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{argname} must be an integer >= 0, got {value!r}")
    return int(value)


class LRScheduler:
    """Base class: PyTorch's scheduler protocol.  Construction sets epoch 0 (and the
    optimizer's lr to the schedule's first value); each :meth:`step` advances one
    epoch (or one update, as you call it) and sets the optimizer's ``lr``.  The rules
    are PyTorch's chainable ones: they start from the optimizer's current lr.  A step
    whose lr the optimizer refuses (e.g. one that overflows the model's dtype) raises
    and changes nothing."""
    # state_dict key -> its check (subclasses add their arguments'); _last_lr is
    # checked by the optimizer
    _fields = {"base_lr": _nonneg, "last_epoch": _epoch, "_step_count": _count}

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastnn Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = _epoch(last_epoch, "last_epoch")
        self._step_count = 0
        self.step()

    def _next_lr(self, lr):
        raise NotImplementedError

    def step(self):
        opt = self.optimizer
        epoch, count = self.last_epoch, self._step_count
        with _critical():
            self.last_epoch, self._step_count = epoch + 1, count + 1
            try:
                lr = opt._checked_lr(self._next_lr(opt.lr), "the scheduled lr")
            except BaseException:
                self.last_epoch, self._step_count = epoch, count
                raise
            opt._hyper["lr"] = self._last_lr = lr

    def get_last_lr(self):
        """The learning rate the last :meth:`step` set."""
        return self._last_lr

    def state_dict(self):
        return {k: v for k, v in vars(self).items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict`: the keys and every value are checked (the
        constructor's rules; the lr as the optimizer checks it) before anything
        changes."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        if set(state_dict) != set(self.state_dict()):
            raise ValueError(f"state_dict must have the keys {sorted(self.state_dict())}, "
                             f"got {sorted(map(str, state_dict))}")
        values = {}
        for key, value in state_dict.items():
            name = f"state_dict[{key!r}]"
            check = self._fields.get(key)
            if key == "_last_lr":
                values[key] = self.optimizer._checked_lr(value, name)
            else:
                values[key] = value if check is None else check(value, name)
        with _critical():
            vars(self).update(values)


def _gamma(v, n):
    return _checks.real_number(v, n, minimum=0.0)


class StepLR(LRScheduler):
    """lr *= gamma every ``step_size`` epochs."""
    _fields = dict(LRScheduler._fields, step_size=_checks.positive_int, gamma=_gamma)

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _checks.positive_int(step_size, "step_size")
        self.gamma = _gamma(gamma, "gamma")
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr):
        if self.last_epoch == 0 or self.last_epoch % self.step_size:
            return lr
        return lr * self.gamma


class ExponentialLR(LRScheduler):
    """lr *= gamma every epoch."""
    _fields = dict(LRScheduler._fields, gamma=_gamma)

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _gamma(gamma, "gamma")
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr):
        return lr if self.last_epoch == 0 else lr * self.gamma


class CosineAnnealingLR(LRScheduler):
    """lr follows eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2, in
    PyTorch's recursive form (so it composes with changes made to the lr)."""
    _fields = dict(LRScheduler._fields, T_max=_checks.positive_int, eta_min=_gamma)

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _checks.positive_int(T_max, "T_max")
        self.eta_min = _gamma(eta_min, "eta_min")
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
