"""The compiled CPU backend: Cython + BLAS for the GEMMs and the whole-model passes,
numba kernels for the rest.

Kernels are compiled on first use per (name, dtype, mode) and cached on disk by numba,
so a model only ever compiles what it uses."""
from .. import threads
from ..kernels import _dense, cpu as K
from .numpy_backend import NumpyBackend

# _dense has just loaded scipy's OpenBLAS: a thread count chosen before that reaches it
# only now (threadpoolctl limits the libraries already loaded).
threads.blas_loaded()


class CpuBackend(NumpyBackend):
    """Arrays are NumPy arrays (so ``empty``/``from_numpy``/``to_numpy``/``copy``/
    ``fill`` are the reference's); every computing method is compiled."""
    name = "cpu"
    one_call_step = True
    checks_labels = True

    def dense_forward(self, x, w, b, z):
        _dense.dense_forward(x, w, b, z)

    def dense_backward(self, x, w, grad_z, grad_w, grad_x, scale):
        _dense.dense_backward(x, w, grad_z, grad_w, grad_x, scale)

    def activation_forward(self, name, z, a):
        K.activation_forward(name, z.dtype, threads.use_parallel(z.size))(z, a)

    def activation_backward(self, name, z, a, grad_a, grad_z, grad_b, scale):
        kernel = K.activation_backward(name, z.dtype, threads.use_parallel(z.size))
        kernel(z, a, grad_a, grad_z, grad_b, z.dtype.type(scale))

    # The whole-model passes: one Cython call each, BLAS and the activation kernels
    # (C function pointers, by activation code) called from inside it.
    def model_forward(self, plan, x):
        parallel = threads.use_parallel(plan.workspace.size)
        kernels = K.activation_pointers("forward", x.dtype, parallel, plan.activations)
        _dense.model_forward(x, plan.model.flat_params, plan.workspace, plan.layers,
                             kernels)
        return plan.a[-1]

    def model_backward(self, plan, x, grad, scale):
        parallel = threads.use_parallel(plan.workspace.size)
        kernels = K.activation_pointers("backward", x.dtype, parallel, plan.activations)
        model = plan.model
        _dense.model_backward(x, model.flat_params, model.flat_grads, plan.workspace,
                              grad, plan.layers, scale, kernels)

    def train_step(self, plan, x, kernel, target, grad, param, norm, scale, zero, rule,
                   state, hyper):
        # One Cython call: every kernel is the one the separate calls would pick (the
        # same serial/parallel choice by the same sizes), as a C function pointer.
        model, dt = plan.model, x.dtype
        parallel = threads.use_parallel(plan.workspace.size)
        forward = K.activation_pointers("forward", dt, parallel, plan.activations)
        backward = K.activation_pointers("backward", dt, parallel, plan.activations)
        loss = K.loss_pointer(kernel, dt, threads.use_parallel(grad.size))
        params, grads = model.flat_params, model.flat_grads
        # (the call checks the state buffers' lengths and the labels' range, and
        # converts the scalars to the float type)
        step = 0 if rule is None else K.step_pointer(rule, dt,
                                                     threads.use_parallel(params.size))
        return _dense.train_step(x, params, grads, plan.workspace, plan.layers, forward,
                                 backward, loss, target, grad, param, norm, scale, zero,
                                 step, state, hyper)

    def loss(self, name, out, target, grad, param, norm):
        # The kernel as a C function called from Cython (the one train_step calls):
        # a numba dispatch per call cost ~1.5 us more.  The call rounds param and norm
        # to the float type, as train_step's does.
        kernel = K.loss_pointer(name, out.dtype, threads.use_parallel(out.size))
        return _dense.loss(kernel, out, target, grad, param, norm)

    def optimizer_step(self, name, params, grads, state, hyper):
        self.check_step_buffers(params, grads, state)
        kernel = K.step_pointer(name, params.dtype, threads.use_parallel(params.size))
        _dense.optimizer_step(kernel, params, grads, state, hyper)

    def vector_norm(self, buf, order):
        return float(K.vector_norm(buf, order))

    def scale(self, buf, factor):
        buf *= buf.dtype.type(factor)
