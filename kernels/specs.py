"""The registry: every activation, loss and update rule fastnn knows, named once.

Everything else is derived from the three tables below: the cpu and cuda kernel tables
(:mod:`.cpu`, :mod:`.cuda`), the NumPy reference's dispatch
(``fastnn.backends.numpy_backend``), the public names (``fastnn.ACTIVATIONS``,
``fastnn.LOSSES``), the command line's choices, ``fit``'s accuracy metric and the test
suite's parameter lists.  Plain Python: importing it compiles nothing.

Adding an activation ``foo``: its formulas ``foo_f`` / ``foo_df`` in :mod:`.formulas`,
an :class:`Activation` entry here, and its independent NumPy version in
``fastnn/backends/numpy_backend.py``.  Adding a loss: its formula in :mod:`.formulas`,
a :class:`LossKernel` entry here, its NumPy version, and its public class in
``fastnn/losses.py`` (one line: ``kernel = "foo"``).  The tests check that all of these
exist for every entry (``tests/kernels/test_registry.py``).
"""
from collections import namedtuple
from dataclasses import dataclass, field


def lookup(table, name, what, allow_none=False):
    """The canonical key of ``table`` for ``name``, matched case-insensitively (the
    same rule for every name fastnn accepts); a ValueError naming ``what`` and the
    choices otherwise."""
    if isinstance(name, str):
        key = name.strip().lower()
        for canonical in table:
            if canonical.lower() == key:
                return canonical
    choices = ", ".join(repr(k) for k in table)
    none = "None or " if allow_none else ""
    raise ValueError(f"unknown {what} {name!r}; expected {none}one of {choices}")


# ---- activations --------------------------------------------------------------------
@dataclass(frozen=True)
class Activation:
    """An activation function.  ``init``: the default weight initialisation of a layer
    using it (He for the relu family, Glorot otherwise).  ``rows``: a function of a
    whole row (softmax), whose backward pass is a Jacobian-vector product; the others
    are elementwise, with the scalar formulas ``<name>_f(z)`` and ``<name>_df(z, a)``
    in :mod:`.formulas`."""
    name: str
    init: str
    rows: bool = False

    @property
    def formulas(self):
        """The names of its scalar f and f' in :mod:`.formulas` (None for ``rows``)."""
        return None if self.rows else (self.name + "_f", self.name + "_df")


_ACTIVATIONS = (
    Activation("linear", "glorot_uniform"),
    Activation("relu", "he_normal"),
    Activation("leaky_relu", "he_normal"),       # slope 0.01
    Activation("elu", "he_normal"),              # alpha 1
    Activation("sigmoid", "glorot_uniform"),
    Activation("tanh", "glorot_uniform"),
    Activation("softmax", "glorot_uniform", rows=True),
    Activation("gelu", "he_normal"),             # erf form
    Activation("silu", "he_normal"),
    Activation("softplus", "glorot_uniform"),
)
#: name -> :class:`Activation`.  An activation's *code* (how the compiled whole-model
#: passes name it) is its position here.
ACTIVATIONS = {a.name: a for a in _ACTIVATIONS}
ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}
#: The weight initialisations a Dense layer accepts (``fastnn.activations.INITS``).
INIT_NAMES = ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform")


# ---- losses -------------------------------------------------------------------------
# How a classification loss's predictions are judged (the ``accuracy`` metric).
@dataclass(frozen=True)
class Argmax:
    """The argmax of a row against the label (or the target probabilities' argmax)."""


@dataclass(frozen=True)
class Threshold:
    """Every element: (output > out_cut) == (target > target_cut)."""
    out_cut: float
    target_cut: float



@dataclass(frozen=True)
class LossKernel:
    """A loss's value-and-gradient kernel.

    - ``form``: ``"elementwise"`` (the scalar formula ``<name>(o, t, param)`` of
      :mod:`.formulas`, returning the term and its derivative) or a row kernel over
      softmax rows: ``"softmax_labels"`` (integer class labels) or ``"softmax_probs"``
      (class probabilities).
    - ``reduction``: the mean is over all ``"elements"`` or over the ``"batch"`` rows
      (PyTorch's definitions).
    - ``target``: what a target must hold: ``"real"``, ``"unit"`` (in [0, 1]),
      ``"sign"`` (-1 or +1), ``"nonnegative"``, ``"labels"`` (integers in [0, classes)),
      ``"probabilities"`` (rows of class probabilities, >= 0).
    - ``output``: what the model's output means: ``"real"`` (any value: scores,
      logits, regression), ``"probability"`` (must lie in [0, 1]) or
      ``"log_probability"``.
    - ``accuracy``: :data:`Argmax` or :data:`Threshold` for classification losses,
      else None.
    - ``param``: the name of the loss's one parameter (Huber's ``delta``), or None.
    - ``variant_of``: for a second kernel of one public loss (cross-entropy against
      probabilities), that loss's name; the public loss picks it by the target.
    """
    name: str
    form: str
    reduction: str
    target: str = "real"
    output: str = "real"
    accuracy: tuple = None
    param: str = None
    variant_of: str = None


_LOSS_KERNELS = (
    LossKernel("mse", "elementwise", "elements"),
    LossKernel("l1", "elementwise", "elements"),
    LossKernel("huber", "elementwise", "elements", param="delta"),
    LossKernel("bce", "elementwise", "elements", target="unit", output="probability",
               accuracy=Threshold(0.5, 0.5)),
    LossKernel("bce_with_logits", "elementwise", "elements", target="unit",
               accuracy=Threshold(0.0, 0.5)),
    LossKernel("hinge", "elementwise", "elements", target="sign",
               accuracy=Threshold(0.0, 0.0)),
    LossKernel("kl_div", "elementwise", "batch", target="nonnegative",
               output="log_probability"),
    LossKernel("cross_entropy", "softmax_labels", "batch", target="labels",
               accuracy=Argmax()),
    LossKernel("cross_entropy_probs", "softmax_probs", "batch", target="probabilities",
               accuracy=Argmax(), variant_of="cross_entropy"),
)
#: kernel name -> :class:`LossKernel`: every loss kernel a backend implements.
LOSS_KERNELS = {k.name: k for k in _LOSS_KERNELS}
#: name -> :class:`LossKernel` of the public losses (``fastnn.LOSSES``; variants are
#: reached through their loss).
LOSSES = {k.name: k for k in _LOSS_KERNELS if k.variant_of is None}


# ---- optimizer update rules ---------------------------------------------------------
# Each rule's per-step scalars, computed once per step in Python (``fastnn.optim``) and
# passed to the kernel as one named tuple of the buffers' float type.  Every tuple opens
# with (sign, l2): the gradient the rule sees is d = sign * g + l2 * p, sign = -1 for
# ``maximize`` (times the gradient-clipping factor, when ``fit`` folds one in), l2
# PyTorch's coupled weight decay.
SGDScalars = namedtuple("SGDScalars", "sign l2 lr")
# b = mu b + c d; the update is n_d d + n_b b: (0, 1) heavy ball, (1, mu) Nesterov
MomentumScalars = namedtuple("MomentumScalars", "sign l2 lr mu c n_d n_b")
# clr: lr / (1 + (t - 1) lr_decay)
AdagradScalars = namedtuple("AdagradScalars", "sign l2 clr eps")
# c = 1 - alpha; mu: the momentum (unused by the rules without it)
RMSpropScalars = namedtuple("RMSpropScalars", "sign l2 lr alpha c eps mu")
# c = 1 - rho
AdadeltaScalars = namedtuple("AdadeltaScalars", "sign l2 lr rho c eps")
# decay: AdamW's decoupled factor 1 - lr wd (1 for Adam); step_size = lr / (1 - b1^t);
# bc2_sqrt = sqrt(1 - b2^t); c1 = 1 - b1, c2 = 1 - b2
AdamScalars = namedtuple("AdamScalars", "sign l2 decay step_size bc2_sqrt eps c1 b2 c2")


@dataclass(frozen=True)
class UpdateRule:
    """An optimizer's per-element update: the formula ``<name>(p, g, *state, h)`` of
    :mod:`.formulas`, returning (p, *state).  ``state``: the buffers it keeps, one value
    per parameter, in the formula's order (PyTorch's state keys); ``scalars``: the
    named tuple type of ``h``."""
    name: str
    state: tuple
    scalars: type = field(repr=False)


_RULES = (
    UpdateRule("sgd", (), SGDScalars),
    UpdateRule("sgd_momentum", ("momentum_buffer",), MomentumScalars),
    UpdateRule("adagrad", ("sum",), AdagradScalars),
    UpdateRule("rmsprop", ("square_avg",), RMSpropScalars),
    UpdateRule("rmsprop_centered", ("square_avg", "grad_avg"), RMSpropScalars),
    UpdateRule("rmsprop_momentum", ("square_avg", "momentum_buffer"), RMSpropScalars),
    UpdateRule("rmsprop_centered_momentum", ("square_avg", "grad_avg", "momentum_buffer"),
               RMSpropScalars),
    UpdateRule("adadelta", ("square_avg", "acc_delta"), AdadeltaScalars),
    UpdateRule("adam", ("exp_avg", "exp_avg_sq"), AdamScalars),
    UpdateRule("adam_amsgrad", ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), AdamScalars),
)
#: name -> :class:`UpdateRule`.
UPDATE_RULES = {r.name: r for r in _RULES}
#: The most state buffers a rule keeps (the kernels have one loop per count).
MAX_STATE = max(len(r.state) for r in _RULES)
