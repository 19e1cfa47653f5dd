"""The kernel interface every backend implements: thirteen methods, no more.

Arrays are the backend's own (NumPy arrays for ``numpy`` and ``cpu``); every method
writes into arrays it is given (inputs first, outputs last) and allocates nothing but
what ``empty`` is asked for.  Shapes: ``x`` (batch, in), ``w`` (in, out), ``b`` (out,),
``z``/``a``/``grad_z`` (batch, out).  ``scale`` weighs what is added into a gradient
buffer (micro-batch m_i of a batch B: ``scale = m_i / B``).
"""


class Backend:
    name = None

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

    def fill(self, buf, value):
        """buf[...] = value."""
        raise NotImplementedError

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

    # -- losses and optimizers -----------------------------------------------------
    def loss(self, name, out, target, grad, param, norm):
        """Return sum(loss terms) * norm and write d(that)/d(out) into ``grad``.
        ``param`` is the loss's parameter (Huber's delta), ``norm`` its mean factor."""
        raise NotImplementedError

    def optimizer_step(self, name, params, grads, state, hyper):
        """One step of the update rule ``name`` (a key of
        ``fastnn.kernels.formulas.OPTIMIZER_STATES``) over the flat buffers, in place:
        ``params`` and each buffer of ``state`` (a tuple, in the rule's order) are
        updated from ``grads``.  ``hyper`` is the rule's tuple of scalars (see the
        formula), of the buffers' float type."""
        raise NotImplementedError

    def vector_norm(self, buf, order):
        """The ``order``-norm (> 0, or inf) of a flat buffer, as a Python float
        (accumulated in float64)."""
        raise NotImplementedError

    def scale(self, buf, factor):
        """buf *= factor, in place."""
        raise NotImplementedError
