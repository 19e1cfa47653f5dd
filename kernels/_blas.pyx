# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""GEMM-bound work of the cpu backend: BLAS through scipy.linalg.cython_blas.

NumPy arrays are row-major and BLAS is column-major.  A row-major (m, n) array read as
column-major is its transpose, so C = op(A) op(B) is computed as
C^T = op(B)^T op(A)^T: swap the operands, keep each one's own transpose flag and pass
each row length as the leading dimension.  No copies, and the GIL is released.

One BLAS in the hot path: this is scipy's OpenBLAS; fastnn.threads sizes its pool.
"""
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport sgemm, dgemm

ctypedef fused real:
    float
    double


cdef inline void _gemm(bint trans_a, bint trans_b, int m, int n, int k, real alpha,
                       real* a, int lda, real* b, int ldb, real beta,
                       real* c, int ldc) noexcept nogil:
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if real is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc)


cdef int _check(str what, Py_ssize_t got, Py_ssize_t want) except -1:
    if got != want:
        raise ValueError(f"gemm: {what} is {got}, expected {want}")
    return 0


def gemm(real[:, ::1] a, real[:, ::1] b, real[:, ::1] c, bint trans_a=False,
         bint trans_b=False, double alpha=1.0, double beta=0.0):
    """c = alpha * op(a) @ op(b) + beta * c, in place; op is a transpose when asked."""
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    _check("op(a) rows", a.shape[1] if trans_a else a.shape[0], m)
    _check("op(b) rows", b.shape[1] if trans_b else b.shape[0], k)
    _check("op(b) columns", b.shape[0] if trans_b else b.shape[1], n)
    if m == 0 or n == 0:
        return
    with nogil:
        _gemm(trans_a, trans_b, <int>m, <int>n, <int>k, <real>alpha,
              &a[0, 0], <int>a.shape[1], &b[0, 0], <int>b.shape[1], <real>beta,
              &c[0, 0], <int>n)


def dense_forward(real[:, ::1] x, real[:, ::1] w, real[::1] bias, real[:, ::1] z):
    """z = x @ w + bias: the bias is copied into every row of z, then one GEMM adds
    x @ w on top of it with beta = 1 (no separate pass to add the bias)."""
    cdef Py_ssize_t rows = z.shape[0], cols = z.shape[1], i
    _check("x rows", x.shape[0], rows)
    _check("w rows", w.shape[0], x.shape[1])
    _check("w columns", w.shape[1], cols)
    _check("bias length", bias.shape[0], cols)
    if rows == 0:
        return
    with nogil:
        for i in range(rows):
            memcpy(&z[i, 0], &bias[0], cols * sizeof(real))
        _gemm(False, False, <int>rows, <int>cols, <int>x.shape[1], <real>1.0,
              &x[0, 0], <int>x.shape[1], &w[0, 0], <int>w.shape[1], <real>1.0,
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
