"""The compiled CPU backend: Cython + BLAS for GEMMs, numba kernels for the rest.

Kernels are compiled on first use per (name, dtype, mode) and cached on disk by numba,
so a model only ever compiles what it uses."""
import numpy as np

from .. import threads
from ..kernels import _blas, cpu as K
from .numpy_backend import NumpyBackend


class CpuBackend(NumpyBackend):
    """Arrays are NumPy arrays (so ``empty``/``from_numpy``/``to_numpy``/``fill`` are
    the reference's); every computing method is compiled."""
    name = "cpu"

    @staticmethod
    def _kernel(table, name, dtype, size):
        return K.get(table, name, dtype, threads.use_parallel(size))

    def dense_forward(self, x, w, b, z):
        threads.get_num_threads()            # the BLAS pool is sized before first use
        _blas.dense_forward(x, w, b, z)

    def dense_backward(self, x, w, grad_z, grad_w, grad_x, scale):
        threads.get_num_threads()
        _blas.dense_backward(x, w, grad_z, grad_w, grad_x, scale)

    def activation_forward(self, name, z, a):
        self._kernel(K.ACTIVATION_FORWARD, name, z.dtype, z.size)(z, a)

    def activation_backward(self, name, z, a, grad_a, grad_z, grad_b, scale):
        kernel = self._kernel(K.ACTIVATION_BACKWARD, name, z.dtype, z.size)
        kernel(z, a, grad_a, grad_z, grad_b, z.dtype.type(scale))

    def model_forward(self, plan, x):
        # One compiled call for the whole pass: BLAS is called from inside the kernel.
        model = plan.model
        kernel = K.get_model("forward", x.dtype, threads.use_parallel(plan.flat.size),
                             plan.activations)
        threads.get_num_threads()
        return kernel(x, model.flat_params, plan.flat, plan.table, self._gemm(x.dtype))

    def model_backward(self, plan, x, grad, scale):
        model = plan.model
        kernel = K.get_model("backward", x.dtype, threads.use_parallel(plan.flat.size),
                             plan.activations)
        threads.get_num_threads()
        kernel(x, model.flat_params, model.flat_grads, plan.flat, grad, plan.table,
               x.dtype.type(scale), self._gemm(x.dtype))

    _addresses = {}

    @classmethod
    def _gemm(cls, dtype):
        addr = cls._addresses.get(dtype)
        if addr is None:
            addr = cls._addresses[dtype] = K.blas_address(dtype)
        return addr

    def loss(self, name, out, target, grad, param, norm):
        F = out.dtype.type
        kernel = self._kernel(K.LOSSES, name, out.dtype, out.size)
        return float(kernel(out, target, grad, F(param), F(norm)))

    def optimizer_step(self, name, params, grads, state, hyper):
        kernel = self._kernel(K.OPTIMIZERS, name, params.dtype, params.size)
        kernel(params, grads, *state, hyper)

    def vector_norm(self, buf, order):
        return float(K.vector_norm(buf, order))
