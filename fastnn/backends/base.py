"""The kernel interface every backend implements: fourteen kernel methods, plus two
whole-model passes that default to loops over them, plus the data plumbing of a
training loop (checking and staging inputs, gathering shuffled batches, accumulating
loss and accuracy) whose defaults here are those of a host (NumPy-array) backend.

Arrays are the backend's own (NumPy arrays for ``numpy`` and ``cpu``); every method
writes into arrays it is given (inputs first, outputs last) and allocates nothing but
what ``empty``/``copy`` are asked for.  Shapes: ``x`` (batch, in), ``w`` (in, out),
``b`` (out,), ``z``/``a``/``grad_z`` (batch, out).  ``scale`` weighs what is added into
a gradient buffer (micro-batch m_i of a batch B: ``scale = m_i / B``).  Names are keys
of the registry (``fastnn.kernels.specs``): activations, loss kernels, update rules.
Every backend implements every method with the signature given here
(``tests/backends/test_conformance.py`` checks it).
"""
import numpy as np

from .. import _checks
from ..kernels import specs


class Backend:
    name = None
    #: whether :meth:`train_step` is one compiled call (checking class labels itself),
    #: which ``Sequential.train_step`` and ``fit`` then use; elsewhere they make the
    #: separate calls (the default here is their composition; its loss call returns
    #: the value to the host, a device sync per step that ``fit`` avoids on the cuda
    #: backend by accumulating there)
    one_call_step = False
    #: whether this backend's ``loss`` and ``train_step`` check that class labels lie
    #: in range before they write anything (the cpu backend's do, in C: the losses
    #: then skip their NumPy check, 1.3 us per call); else the losses check first
    checks_labels = False

    # -- arrays --------------------------------------------------------------------
    def empty(self, shape, dtype):
        """An uninitialised backend array."""
        raise NotImplementedError

    def from_numpy(self, array, out=None):
        """Copy a NumPy array into a backend array (into ``out`` when given)."""
        raise NotImplementedError

    def to_numpy(self, array):
        """A NumPy copy of a backend array."""
        raise NotImplementedError

    def copy(self, array):
        """A new backend array holding a copy of ``array``."""
        raise NotImplementedError

    def fill(self, buf, value):
        """buf[...] = value."""
        raise NotImplementedError

    def synchronize(self):
        """Wait until the work queued so far is done: a device backend's launches
        return before the device has finished; a host backend computes as it is
        called, so there is nothing to wait for."""

    # -- dense layers --------------------------------------------------------------
    def dense_forward(self, x, w, b, z):
        """z = x @ w + b."""
        raise NotImplementedError

    def dense_backward(self, x, w, grad_z, grad_w, grad_x, scale):
        """grad_w += scale * x^T grad_z; grad_x = grad_z w^T unless grad_x is None."""
        raise NotImplementedError

    def activation_forward(self, name, z, a):
        """a = f(z) for the activation ``name``."""
        raise NotImplementedError

    def activation_backward(self, name, z, a, grad_a, grad_z, grad_b, scale):
        """grad_z = grad_a * f'(z) (softmax: its Jacobian-vector product) and
        grad_b += scale * grad_z summed over the batch."""
        raise NotImplementedError

    # -- whole-model passes --------------------------------------------------------
    # ``plan`` is a model's plan for one batch size (``fastnn.plan.Plan``): ``plan.model``
    # (its layers' parameters and the flat buffers), the per-layer views ``z``, ``a``,
    # ``grad_z``, ``grad_x`` of one flat ``workspace``, and ``layers``, the offsets of
    # everything as named records, for backends that run a pass as one call.  These
    # defaults call the per-layer methods above; a compiled backend overrides them with
    # fused passes.
    def model_forward(self, plan, x):
        """Every layer in turn: ``z = inp @ w + b``, ``a = f(z)``; returns the last
        ``a``."""
        inp = x
        for layer, z, a in zip(plan.model.layers, plan.z, plan.a):
            self.dense_forward(inp, layer.weight.data, layer.bias.data, z)
            if a is not z:
                self.activation_forward(layer.activation, z, a)
            inp = a
        return inp

    def model_backward(self, plan, x, grad, scale):
        """From the last layer down: ``activation_backward`` then ``dense_backward``,
        adding ``scale`` times every parameter gradient."""
        layers = plan.model.layers
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            self.activation_backward(layer.activation, plan.z[i], plan.a[i], grad,
                                     plan.grad_z[i], layer.bias.grad, scale)
            self.dense_backward(x if i == 0 else plan.a[i - 1], layer.weight.data,
                                plan.grad_z[i], layer.weight.grad, plan.grad_x[i], scale)
            grad = plan.grad_x[i]

    # -- losses and optimizers -----------------------------------------------------
    def loss(self, name, out, target, grad, param, norm):
        """Return sum(loss terms) * norm and write d(that)/d(out) into ``grad``.
        ``param`` is the loss's parameter (Huber's delta), ``norm`` its mean factor."""
        raise NotImplementedError

    def optimizer_step(self, name, params, grads, state, hyper):
        """One step of the update rule ``name`` (a key of ``specs.UPDATE_RULES``) over
        the flat buffers, in place: ``params`` and each buffer of ``state`` (a tuple,
        in the rule's order) are updated from ``grads``.  ``hyper`` is the rule's
        named tuple of scalars (``rule.scalars``), of the buffers' float type."""
        raise NotImplementedError

    def vector_norm(self, buf, order):
        """The ``order``-norm (> 0, or inf) of a flat buffer, as a Python float
        (accumulated in float64)."""
        raise NotImplementedError

    def scale(self, buf, factor):
        """buf *= factor, in place."""
        raise NotImplementedError

    # -- the training step -----------------------------------------------------------
    def train_step(self, plan, x, kernel, target, grad, param, norm, scale, zero, rule,
                   state, hyper):
        """One training step over ``plan``'s model, returning the loss kernel's value
        (as :meth:`loss`): the gradients zeroed if ``zero``, :meth:`model_forward` of
        ``x``, the loss kernel ``kernel`` (gradient into ``grad``),
        :meth:`model_backward` adding ``scale`` times the gradients, and, unless
        ``rule`` is None, :meth:`optimizer_step` of ``rule`` with ``state`` and
        ``hyper`` (here the rule's named tuple of Python floats, converted to the
        model's dtype as the step's are).  This default makes those calls; a backend
        with ``one_call_step`` runs them as one compiled call (the same kernels in the
        same order: the same results, bit for bit), which also checks that class
        labels lie in range before it changes anything."""
        model = plan.model
        if zero:
            self.fill(model.flat_grads, 0)
        out = self.model_forward(plan, x)
        value = self.loss(kernel, out, target, grad, param, norm)
        self.model_backward(plan, x, grad, scale)
        if rule is not None:
            hyper = hyper._make(map(model.dtype.type, hyper))
            self.optimizer_step(rule, model.flat_params, model.flat_grads, state, hyper)
        return value

    # -- data plumbing (defaults: arrays are NumPy arrays on the host) -----------------
    def is_array(self, x):
        """Whether ``x`` is an array this backend computes on in place."""
        return isinstance(x, np.ndarray)

    def batch(self, x, argname, dtype, ndim=2, columns=None):
        """Check a batch (exact dtype, ``ndim``, ``columns``, C-contiguous); raise
        TypeError/ValueError naming ``argname`` otherwise.  Returns the array."""
        return _checks.batch_array(x, argname, dtype, ndim, columns)

    def aliases(self, x, *buffers):
        """Whether the array ``x`` shares memory with any of ``buffers`` (arrays this
        backend made, each owning its memory): a model refuses to compute from its own
        buffers in place, as the pass would overwrite what it reads."""
        # (the hot path: ~50 ns.)  NumPy collapses a view's base to the array owning
        # the memory, so an owner is aliased by itself and its views only; a base that
        # is not an owning array (a memoryview, say) is compared by address ranges.
        base = x.base
        if base is None:
            base = x
        elif not isinstance(base, np.ndarray) or base.base is not None:
            return any(np.may_share_memory(x, b) for b in buffers)
        for b in buffers:
            if base is b:
                return True
        return False

    def check_step_buffers(self, params, grads, state):
        """An optimizer step's flat buffers all of one length: nothing a kernel reads
        or writes lies outside them."""
        n = params.shape[0]
        if grads.shape[0] != n:
            raise ValueError(f"optimizer step: grads buffer holds {grads.shape[0]} "
                             f"values, the parameters {n}")
        for buf in state:
            if buf.shape[0] != n:
                raise ValueError(f"optimizer step: state buffer holds {buf.shape[0]} "
                                 f"values, the parameters {n}")

    def stage(self, x, owner, key):
        """``x`` where the kernels can read it: a device backend copies a host array
        into a buffer of its own, kept for (``owner``, ``key``) while ``owner`` lives
        (no allocation per batch); a host backend returns ``x``."""
        return x

    def dataset(self, *arrays):
        """A whole (checked) data set's arrays, where batches are gathered from: a
        tuple, in order (a device backend copies them up together, or leaves them
        together on the host)."""
        return arrays

    def gather(self, x_src, y_src, idx, x_out, y_out):
        """x_out[i] = x_src[idx[i]], y_out[i] = y_src[idx[i]]: a shuffled batch."""
        # mode="clip": the indices are a permutation's, always valid; the default
        # mode="raise" would gather into a hidden temporary first
        np.take(x_src, idx, axis=0, out=x_out, mode="clip")
        np.take(y_src, idx, axis=0, out=y_out, mode="clip")

    def sums(self, n):
        """``n`` float64 zeros: an accumulator for :meth:`loss_sum` and
        :meth:`count_correct`, read with :meth:`to_numpy` (a device backend syncs only
        then, not per batch)."""
        return np.zeros(n)

    def loss_sum(self, name, out, target, grad, param, norm, sums, weight, rule=None):
        """As :meth:`loss`, but adds ``weight`` times the value into ``sums[0]``
        instead of returning it; with an accuracy ``rule`` (see
        :meth:`count_correct`) also counts the correct predictions into ``sums[1]``.
        Returns how many predictions were judged (0 without a rule)."""
        sums[0] += weight * self.loss(name, out, target, grad, param, norm)
        return 0 if rule is None else self.count_correct(rule, out, target, sums, 1)

    def count_correct(self, rule, out, target, sums, slot):
        """Add the number of correct predictions in ``out`` into ``sums[slot]`` and
        return how many were judged.  ``rule``: ``specs.Argmax()`` (labels, or the
        argmax of class probabilities) or ``specs.Threshold(out_cut, target_cut)``
        (every element: (out > out_cut) == (target > target_cut))."""
        if isinstance(rule, specs.Argmax):
            labels = target if target.ndim == 1 else target.argmax(axis=1)
            sums[slot] += np.count_nonzero(out.argmax(axis=1) == labels)
            return out.shape[0]
        sums[slot] += np.count_nonzero((out > rule.out_cut) == (target > rule.target_cut))
        return out.size
