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
from libc.string cimport memcpy, memset
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


def gemm(const real[:, ::1] a, const real[:, ::1] b, real[:, ::1] c, bint trans_a=False,
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


def dense_forward(const real[:, ::1] x, const real[:, ::1] w, const real[::1] bias,
                  real[:, ::1] z):
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


def dense_backward(const real[:, ::1] x, const real[:, ::1] w, const real[:, ::1] grad_z,
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


cdef void _forward(const real* x, Py_ssize_t ld_in, Py_ssize_t rows, const real* params,
                   real* ws, const Layer* layers, Py_ssize_t n,
                   const int64_t* kernels) noexcept nogil:
    cdef Py_ssize_t l
    cdef Layer L
    cdef const real* inp = x
    cdef real* z
    cdef real* a
    for l in range(n):
        L = layers[l]
        z = ws + L.z_off
        a = ws + L.a_off
        _bias_rows(z, params + L.b_off, rows, L.fout)
        _gemm(False, False, <int>rows, <int>L.fout, <int>L.fin, <real>1.0, inp,
              <int>ld_in, params + L.w_off, <int>L.fout, <real>1.0, z, <int>L.fout)
        if L.a_off != L.z_off:
            if real is float:
                (<forward_f><void*>kernels[L.act])(z, a, rows, L.fout)
            else:
                (<forward_d><void*>kernels[L.act])(z, a, rows, L.fout)
        inp = a
        ld_in = L.fout


cdef void _backward(const real* x, Py_ssize_t rows, const real* params, real* grads,
                    real* ws, real* g, const Layer* layers, Py_ssize_t n, real s,
                    const int64_t* kernels) noexcept nogil:
    cdef Py_ssize_t l
    cdef Layer L
    cdef const real* inp
    cdef real* gz
    cdef real* gx
    for l in range(n - 1, -1, -1):
        L = layers[l]
        gz = ws + L.gz_off
        if real is float:
            (<backward_f><void*>kernels[L.act])(ws + L.z_off, ws + L.a_off, g, gz,
                                                grads + L.b_off, s, rows, L.fout)
        else:
            (<backward_d><void*>kernels[L.act])(ws + L.z_off, ws + L.a_off, g, gz,
                                                grads + L.b_off, s, rows, L.fout)
        inp = x if l == 0 else ws + layers[l - 1].a_off
        _gemm(True, False, <int>L.fin, <int>L.fout, <int>rows, s, inp, <int>L.fin,
              gz, <int>L.fout, <real>1.0, grads + L.w_off, <int>L.fout)
        if l > 0:
            gx = ws + L.gx_off
            _gemm(False, True, <int>rows, <int>L.fin, <int>L.fout, <real>1.0, gz,
                  <int>L.fout, params + L.w_off, <int>L.fout, <real>0.0, gx,
                  <int>L.fin)
            g = gx


def model_forward(const real[:, ::1] x, real[::1] params, real[::1] ws, Layer[::1] layers,
                  const int64_t[::1] kernels):
    """Every layer: Z = bias rows, Z += X W (beta = 1), A = f(Z) unless the layer is
    linear (then A is Z: ``a_off == z_off``).  ``kernels[code]``: the forward kernel
    of activation ``code``.  Returns the offset of the last layer's A in ``ws``."""
    cdef Py_ssize_t n = layers.shape[0]
    _check_plan(layers, x.shape[0], x.shape[1], params.shape[0], ws.shape[0], kernels,
                False)
    with nogil:
        _forward(&x[0, 0], x.shape[1], x.shape[0], &params[0], &ws[0], &layers[0], n,
                 &kernels[0])
    return layers[n - 1].a_off


def model_backward(const real[:, ::1] x, real[::1] params, real[::1] grads, real[::1] ws,
                   real[:, ::1] grad_out, Layer[::1] layers, double scale,
                   const int64_t[::1] kernels):
    """From the last layer down: dL/dZ = f'(Z) * dL/dA with the bias gradient added in
    the same pass (``kernels[code]``: the backward kernel of activation ``code``),
    dW += scale X^T dL/dZ (beta = 1: straight into the flat gradient buffer), and
    dL/dX = dL/dZ W^T for every layer but the first."""
    cdef Py_ssize_t rows = x.shape[0], n = layers.shape[0]
    _check_plan(layers, rows, x.shape[1], params.shape[0], ws.shape[0], kernels, True)
    _check("grads length", grads.shape[0], params.shape[0])
    _check("grad rows", grad_out.shape[0], rows)
    _check("grad columns", grad_out.shape[1], layers[n - 1].fout)
    with nogil:
        _backward(&x[0, 0], rows, &params[0], &grads[0], &ws[0], &grad_out[0, 0],
                  &layers[0], n, <real>scale, &kernels[0])


# ---- the one-call training step -----------------------------------------------------
# The loss and update-rule kernels' C signatures (kernels/cpu.py: loss_c, step0_c...):
#   loss(out, target, grad, param, norm, rows, cols) -> the loss kernel's value
#   step(p, g, s0, s1, s2, h, n): the update over n values; unused state pointers NULL
ctypedef double (*loss_f)(float*, const void*, float*, float, float, Py_ssize_t,
                          Py_ssize_t) noexcept nogil
ctypedef double (*loss_d)(double*, const void*, double*, double, double, Py_ssize_t,
                          Py_ssize_t) noexcept nogil
ctypedef void (*step_f)(float*, float*, float*, float*, float*, float*,
                        Py_ssize_t) noexcept nogil
ctypedef void (*step_d)(double*, double*, double*, double*, double*, double*,
                        Py_ssize_t) noexcept nogil


cdef inline double _call_loss(int64_t fn, real* out, const void* target, real* grad,
                              double param, double norm, Py_ssize_t rows,
                              Py_ssize_t cols) noexcept nogil:
    """The loss kernel at ``fn`` (its C signature for this float type)."""
    if real is float:
        return (<loss_f><void*>fn)(out, target, grad, <float>param, <float>norm, rows,
                                   cols)
    else:
        return (<loss_d><void*>fn)(out, target, grad, param, norm, rows, cols)


cdef inline void _call_step(int64_t fn, real* params, real* grads, real** sp, real* h,
                            Py_ssize_t n) noexcept nogil:
    """The update rule's step at ``fn`` (its C signature for this float type)."""
    if real is float:
        (<step_f><void*>fn)(params, grads, sp[0], sp[1], sp[2], h, n)
    else:
        (<step_d><void*>fn)(params, grads, sp[0], sp[1], sp[2], h, n)


cdef int _step_args(Py_ssize_t n, tuple state, hyper, real** sp, real* h) except -1:
    """An update rule's state buffers (each of ``n`` values) as pointers (unused: NULL)
    and its scalars (at most 16) converted to the float type as NumPy would."""
    cdef Py_ssize_t k
    cdef real[::1] buf
    sp[0] = sp[1] = sp[2] = NULL
    if len(state) > 3:
        raise ValueError(f"an update rule has at most 3 state buffers, got {len(state)}")
    for k in range(len(state)):
        buf = state[k]
        _check("state buffer length", buf.shape[0], n)
        sp[k] = &buf[0]
    if not 0 < len(hyper) <= 16:
        raise ValueError(f"an update rule needs 1 to 16 scalars, got {len(hyper)}")
    for k in range(len(hyper)):
        h[k] = <real><double>hyper[k]
    return 0


def loss(int64_t kernel, real[:, ::1] out, target, real[:, ::1] grad, double param,
         double norm):
    """The loss kernel at ``kernel`` (a C function: see ``train_step``) on ``out``
    against ``target`` (as for ``train_step``; labels range-checked here), gradient into
    ``grad``; returns its value.  A C call: no numba dispatch per call."""
    cdef Py_ssize_t rows = out.shape[0], cols = out.shape[1]
    cdef const void* tp = _target(target, rows, cols, <real*>NULL)
    cdef double value
    _check("grad rows", grad.shape[0], rows)
    _check("grad columns", grad.shape[1], cols)
    if kernel == 0:
        raise ValueError("no loss kernel")
    if rows == 0:
        raise ValueError("a loss needs at least one row")
    with nogil:
        value = _call_loss(kernel, &out[0, 0], tp, &grad[0, 0], param, norm, rows, cols)
    return value


def optimizer_step(int64_t kernel, real[::1] params, real[::1] grads, tuple state,
                   hyper):
    """The update rule's step at ``kernel`` (a C function: see ``train_step``) over the
    flat buffers, with its ``state`` buffers and scalars ``hyper``.  A C call: no numba
    dispatch per call."""
    cdef real* sp[3]
    cdef real h[16]
    _check("grads length", grads.shape[0], params.shape[0])
    if kernel == 0:
        raise ValueError("no update-rule kernel")
    _step_args(params.shape[0], state, hyper, sp, h)
    if params.shape[0] == 0:
        return
    with nogil:
        _call_step(kernel, &params[0], &grads[0], sp, h, params.shape[0])


cdef const void* _target(target, Py_ssize_t rows, Py_ssize_t cols, real* kind) except NULL:
    """A loss target's data: (rows,) int64 class labels, each checked in [0, cols) (the
    kernel indexes with them), or a (rows, cols) array of the float type.  (``kind``
    only selects the float type.)"""
    cdef const real[:, ::1] t2
    cdef const int64_t[::1] t1
    cdef Py_ssize_t i
    if target.ndim == 1:
        t1 = target
        _check("target labels", t1.shape[0], rows)
        for i in range(rows):
            if t1[i] < 0 or t1[i] >= cols:
                raise ValueError(f"target labels must lie in [0, {cols}), got {t1[i]} "
                                 f"(row {i})")
        return &t1[0]
    t2 = target
    _check("target rows", t2.shape[0], rows)
    _check("target columns", t2.shape[1], cols)
    return &t2[0, 0]


def train_step(const real[:, ::1] x, real[::1] params, real[::1] grads, real[::1] ws,
               Layer[::1] layers, const int64_t[::1] forward,
               const int64_t[::1] backward, int64_t loss, target, real[:, ::1] grad,
               double param, double norm, double scale, bint zero, int64_t step,
               tuple state, hyper):
    """One training step in one call, the GIL released throughout: the gradients
    zeroed (``zero``), the forward pass, the loss kernel at ``loss`` (its value
    returned, its gradient in ``grad``), the backward pass adding ``scale`` times the
    parameter gradients, and the update rule at ``step`` (0: none, as for all but the
    last micro-batch of a batch) over the flat buffers with its ``state`` buffers
    (a tuple) and its scalars ``hyper`` (a sequence of numbers, at most 16: the
    rule's named tuple, converted here to the float type as NumPy would).  The same
    kernels in the same order as the separate calls (``fill``, ``model_forward``,
    ``loss``, ``model_backward``, ``optimizer_step``), so the same results bit for
    bit.  ``target``: a (rows, cols)
    array of the output's type, or (rows,) int64 class labels (checked in range here:
    the kernel indexes with them)."""
    cdef Py_ssize_t rows = x.shape[0], n = layers.shape[0], cols
    cdef const void* tp
    cdef real* sp[3]
    cdef real h[16]
    cdef double value
    _check_plan(layers, rows, x.shape[1], params.shape[0], ws.shape[0], forward, True)
    _check_plan(layers, rows, x.shape[1], params.shape[0], ws.shape[0], backward, True)
    _check("grads length", grads.shape[0], params.shape[0])
    cols = layers[n - 1].fout
    _check("grad rows", grad.shape[0], rows)
    _check("grad columns", grad.shape[1], cols)
    if rows == 0:
        raise ValueError("a training step needs at least one row")
    if loss == 0:
        raise ValueError("no loss kernel")
    tp = _target(target, rows, cols, <real*>NULL)
    if step != 0:
        _step_args(params.shape[0], state, hyper, sp, h)
    with nogil:
        if zero:
            memset(&grads[0], 0, grads.shape[0] * sizeof(real))
        _forward(&x[0, 0], x.shape[1], rows, &params[0], &ws[0], &layers[0], n,
                 &forward[0])
        value = _call_loss(loss, &ws[layers[n - 1].a_off], tp, &grad[0, 0], param, norm,
                           rows, cols)
        _backward(&x[0, 0], rows, &params[0], &grads[0], &ws[0], &grad[0, 0],
                  &layers[0], n, <real>scale, &backward[0])
        if step != 0:
            _call_step(step, &params[0], &grads[0], sp, h, params.shape[0])
    return value
