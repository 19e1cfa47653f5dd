"""The kernel interface every backend implements: thirteen kernel methods, plus two
whole-model passes that default to loops over them.

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

    # -- whole-model passes --------------------------------------------------------
    # ``plan`` is a model's workspace for one batch size (``fastnn.layers._Workspace``):
    # ``plan.model`` (its layers' parameters and the flat buffers), the per-layer views
    # ``z``, ``a``, ``grad_z``, ``grad_x``, and the same as one flat array + offset table
    # for backends that run a pass as one kernel.  These defaults call the per-layer
    # methods above; a compiled backend overrides them with fused passes.
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
