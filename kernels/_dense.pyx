# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Dense layers on the cpu: the one GEMM path (BLAS through scipy.linalg.cython_blas)
and the whole-model passes that drive it.

``model_forward`` / ``model_backward`` run every layer of a model in one call, with the
GIL released: per layer the bias rows, one GEMM (beta = 1), and the activation, called
through a C function pointer (a numba ``cfunc`` compiled from ``kernels/formulas.py``:
see ``kernels/cpu.py``).  The pointers come in a table indexed by activation code, so a
model of any activations runs through this one compiled driver: nothing is compiled per
model, and numba compiles only the activations a model uses.

NumPy arrays are row-major and BLAS is column-major.  A row-major (m, n) array read as
column-major is its transpose, so C = op(A) op(B) is computed as
C^T = op(B)^T op(A)^T: swap the operands, keep each one's own transpose flag and pass
each row length as the leading dimension.  No copies.

One BLAS in the hot path: this is scipy's OpenBLAS; fastnn.threads sizes its pool.
"""
from libc.stdint cimport int64_t
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport sgemm, dgemm

ctypedef fused real:
    float
    double

# One layer of a model's plan: the record type of ``fastnn.plan.LAYER`` (int64 fields,
# in this order; Cython checks the buffer's format against it).  Offsets are element
# indices into the flat parameter (and gradient) buffer (``w_off``, ``b_off``) and into
# the flat workspace (Z, A, dL/dZ, dL/dX; ``gx_off`` is -1 for the first layer).
ctypedef struct Layer:
    int64_t fin
    int64_t fout
    int64_t w_off
    int64_t b_off
    int64_t act
    int64_t z_off
    int64_t a_off
    int64_t gz_off
    int64_t gx_off


cdef inline void _gemm(bint trans_a, bint trans_b, int m, int n, int k, real alpha,
                       const real* a, int lda, const real* b, int ldb, real beta,
                       real* c, int ldc) noexcept nogil:
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m == 0 or n == 0:
        return
    if real is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta,
              c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta,
              c, &ldc)


cdef int _check(str what, Py_ssize_t got, Py_ssize_t want) except -1:
    if got != want:
        raise ValueError(f"{what} is {got}, expected {want}")
    return 0


def gemm(real[:, ::1] a, real[:, ::1] b, real[:, ::1] c, bint trans_a=False,
         bint trans_b=False, double alpha=1.0, double beta=0.0):
    """c = alpha * op(a) @ op(b) + beta * c, in place; op is a transpose when asked."""
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    _check("gemm: op(a) rows", a.shape[1] if trans_a else a.shape[0], m)
    _check("gemm: op(b) rows", b.shape[1] if trans_b else b.shape[0], k)
    _check("gemm: op(b) columns", b.shape[0] if trans_b else b.shape[1], n)
    with nogil:
        _gemm(trans_a, trans_b, <int>m, <int>n, <int>k, <real>alpha,
              &a[0, 0], <int>a.shape[1], &b[0, 0], <int>b.shape[1], <real>beta,
              &c[0, 0], <int>n)


cdef inline void _bias_rows(real* z, const real* bias, Py_ssize_t rows,
                            Py_ssize_t cols) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(rows):
        memcpy(z + i * cols, bias, cols * sizeof(real))


def dense_forward(real[:, ::1] x, real[:, ::1] w, real[::1] bias, real[:, ::1] z):
    """z = x @ w + bias: the bias is copied into every row of z, then one GEMM adds
    x @ w on top of it with beta = 1 (no separate pass to add the bias)."""
    cdef Py_ssize_t rows = z.shape[0], cols = z.shape[1]
    _check("x rows", x.shape[0], rows)
    _check("w rows", w.shape[0], x.shape[1])
    _check("w columns", w.shape[1], cols)
    _check("bias length", bias.shape[0], cols)
    if rows == 0:
        return
    with nogil:
        _bias_rows(&z[0, 0], &bias[0], rows, cols)
        _gemm(False, False, <int>rows, <int>cols, <int>x.shape[1], <real>1.0,
              &x[0, 0], <int>x.shape[1], &w[0, 0], <int>cols, <real>1.0,
              &z[0, 0], <int>cols)


def dense_backward(real[:, ::1] x, real[:, ::1] w, real[:, ::1] grad_z,
                   real[:, ::1] grad_w, real[:, ::1] grad_x, double scale):
    """grad_w += scale * x^T @ grad_z (beta = 1: accumulates straight into the flat
    gradient buffer) and, when grad_x is not None, grad_x = grad_z @ w^T."""
    cdef Py_ssize_t rows = x.shape[0], fin = x.shape[1], fout = grad_z.shape[1]
    _check("grad_z rows", grad_z.shape[0], rows)
    _check("grad_w shape[0]", grad_w.shape[0], fin)
    _check("grad_w shape[1]", grad_w.shape[1], fout)
    _check("w shape[0]", w.shape[0], fin)
    _check("w shape[1]", w.shape[1], fout)
    if grad_x is not None:
        _check("grad_x rows", grad_x.shape[0], rows)
        _check("grad_x columns", grad_x.shape[1], fin)
    if rows == 0:
        return
    with nogil:
        _gemm(True, False, <int>fin, <int>fout, <int>rows, <real>scale,
              &x[0, 0], <int>fin, &grad_z[0, 0], <int>fout, <real>1.0,
              &grad_w[0, 0], <int>fout)
        if grad_x is not None:
            _gemm(False, True, <int>rows, <int>fin, <int>fout, <real>1.0,
                  &grad_z[0, 0], <int>fout, &w[0, 0], <int>fout, <real>0.0,
                  &grad_x[0, 0], <int>fin)


# ---- whole-model passes -------------------------------------------------------------
# The activation kernels' C signatures (kernels/cpu.py builds them as numba cfuncs):
#   forward(z, a, rows, cols):                       a = f(z)
#   backward(z, a, grad_a, grad_z, grad_b, scale, rows, cols):
#       grad_z = f'-product of grad_a; grad_b += scale * column sums of grad_z
ctypedef void (*forward_f)(float*, float*, Py_ssize_t, Py_ssize_t) noexcept nogil
ctypedef void (*forward_d)(double*, double*, Py_ssize_t, Py_ssize_t) noexcept nogil
ctypedef void (*backward_f)(float*, float*, float*, float*, float*, float, Py_ssize_t,
                            Py_ssize_t) noexcept nogil
ctypedef void (*backward_d)(double*, double*, double*, double*, double*, double,
                            Py_ssize_t, Py_ssize_t) noexcept nogil


cdef inline bint _outside(int64_t off, int64_t n, Py_ssize_t size) noexcept nogil:
    return off < 0 or off + n > size


cdef int _check_plan(Layer[::1] layers, Py_ssize_t rows, Py_ssize_t fin0,
                     Py_ssize_t nparams, Py_ssize_t nws, const int64_t[::1] kernels,
                     bint backward) except -1:
    """Every offset of the plan inside its buffers, the layers chained, and a kernel
    for every activation: nothing below can then read or write out of bounds."""
    cdef Py_ssize_t l, n = layers.shape[0], fin = fin0
    cdef Layer L
    if n == 0:
        raise ValueError("a model plan has no layers")
    for l in range(n):
        L = layers[l]
        if L.fin != fin or L.fout < 1:
            raise ValueError(f"plan layer {l}: in_features {L.fin}, expected {fin}")
        if L.b_off != L.w_off + L.fin * L.fout or _outside(L.w_off, L.fin * L.fout +
                                                          L.fout, nparams):
            raise ValueError(f"plan layer {l}: parameters outside the flat buffer")
        if _outside(L.z_off, rows * L.fout, nws) or _outside(L.a_off, rows * L.fout, nws):
            raise ValueError(f"plan layer {l}: workspace offsets outside the "
                             f"workspace ({rows} rows)")
        # (an inference plan has no gradient buffers: offsets -1, only forward runs)
        if backward and (_outside(L.gz_off, rows * L.fout, nws)
                         or (l > 0 and _outside(L.gx_off, rows * L.fin, nws))):
            raise ValueError(f"plan layer {l}: no room for its gradients")
        if L.act < 0 or L.act >= kernels.shape[0] or kernels[L.act] == 0:
            raise ValueError(f"plan layer {l}: no compiled kernel for activation code "
                             f"{L.act}")
        fin = L.fout
    return 0


def model_forward(real[:, ::1] x, real[::1] params, real[::1] ws, Layer[::1] layers,
                  const int64_t[::1] kernels):
    """Every layer: Z = bias rows, Z += X W (beta = 1), A = f(Z) unless the layer is
    linear (then A is Z: ``a_off == z_off``).  ``kernels[code]``: the forward kernel
    of activation ``code``.  Returns the offset of the last layer's A in ``ws``."""
    cdef Py_ssize_t rows = x.shape[0], l, n = layers.shape[0], ld_in = x.shape[1]
    cdef Layer L
    cdef real* inp = &x[0, 0]
    cdef real* z
    cdef real* a
    _check_plan(layers, rows, x.shape[1], params.shape[0], ws.shape[0], kernels, False)
    with nogil:
        for l in range(n):
            L = layers[l]
            z = &ws[L.z_off]
            a = &ws[L.a_off]
            _bias_rows(z, &params[L.b_off], rows, L.fout)
            _gemm(False, False, <int>rows, <int>L.fout, <int>L.fin, <real>1.0, inp,
                  <int>ld_in, &params[L.w_off], <int>L.fout, <real>1.0, z, <int>L.fout)
            if L.a_off != L.z_off:
                if real is float:
                    (<forward_f><void*>kernels[L.act])(z, a, rows, L.fout)
                else:
                    (<forward_d><void*>kernels[L.act])(z, a, rows, L.fout)
            inp = a
            ld_in = L.fout
    return layers[n - 1].a_off


def model_backward(real[:, ::1] x, real[::1] params, real[::1] grads, real[::1] ws,
                   real[:, ::1] grad_out, Layer[::1] layers, double scale,
                   const int64_t[::1] kernels):
    """From the last layer down: dL/dZ = f'(Z) * dL/dA with the bias gradient added in
    the same pass (``kernels[code]``: the backward kernel of activation ``code``),
    dW += scale X^T dL/dZ (beta = 1: straight into the flat gradient buffer), and
    dL/dX = dL/dZ W^T for every layer but the first."""
    cdef Py_ssize_t rows = x.shape[0], l, n = layers.shape[0]
    cdef Layer L
    cdef real* g = &grad_out[0, 0]
    cdef real* inp
    cdef real* gz
    cdef real* gx
    cdef real s = <real>scale
    _check_plan(layers, rows, x.shape[1], params.shape[0], ws.shape[0], kernels, True)
    _check("grads length", grads.shape[0], params.shape[0])
    _check("grad rows", grad_out.shape[0], rows)
    _check("grad columns", grad_out.shape[1], layers[n - 1].fout)
    with nogil:
        for l in range(n - 1, -1, -1):
            L = layers[l]
            gz = &ws[L.gz_off]
            if real is float:
                (<backward_f><void*>kernels[L.act])(&ws[L.z_off], &ws[L.a_off], g, gz,
                                                    &grads[L.b_off], s, rows, L.fout)
            else:
                (<backward_d><void*>kernels[L.act])(&ws[L.z_off], &ws[L.a_off], g, gz,
                                                    &grads[L.b_off], s, rows, L.fout)
            inp = &x[0, 0] if l == 0 else &ws[layers[l - 1].a_off]
            _gemm(True, False, <int>L.fin, <int>L.fout, <int>rows, s, inp, <int>L.fin,
                  gz, <int>L.fout, <real>1.0, &grads[L.w_off], <int>L.fout)
            if l > 0:
                gx = &ws[L.gx_off]
                _gemm(False, True, <int>rows, <int>L.fin, <int>L.fout, <real>1.0, gz,
                      <int>L.fout, &params[L.w_off], <int>L.fout, <real>0.0, gx,
                      <int>L.fin)
                g = gx
