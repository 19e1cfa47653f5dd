"""fastnn's compiled kernels (installed from the top-level ``kernels/`` folder).

- :mod:`.formulas`: every activation, loss and optimizer formula, once, as numba scalar
  functions.
- :mod:`.cpu`: numba CPU loops around those formulas (elementwise, row-wise, losses,
  optimizer steps).
- ``_blas``: Cython + BLAS for the GEMM-bound work (dense forward/backward).
"""
