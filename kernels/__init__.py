"""fastnn's compiled kernels (installed from the top-level ``kernels/`` folder).

- :mod:`.formulas`: every activation, loss and optimizer formula, once, as numba scalar
  functions.
- :mod:`.cpu`: numba CPU loops around those formulas (elementwise, row-wise, losses,
  optimizer steps).
- ``_blas``: Cython + BLAS for the GEMM-bound work (dense forward/backward).
- :mod:`._numba_setup`: imported first: where numba caches the kernels (caching off
  if nowhere is writable) and the one-line "compiling kernels" notice (``FASTNN_QUIET``).
"""
from . import _numba_setup  # noqa: F401  (before any kernel module)
