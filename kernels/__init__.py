"""fastnn's compiled kernels (installed from the top-level ``kernels/`` folder).

- :mod:`.specs`: the registry, every activation, loss and update rule named once
  (plain Python: importing it imports no numba).
- :mod:`.formulas`: every activation, loss and optimizer formula, once, as numba scalar
  functions.
- :mod:`.template`: the template mechanism (slots, one ``specialise``) behind both
  targets; :mod:`.loops`: the loops both targets share (optimizer steps, elementwise).
- :mod:`.cpu`: numba CPU kernels; ``_dense`` (Cython): the GEMMs (BLAS) and the
  whole-model passes that call the activation kernels between them.
- :mod:`.cuda`: numba.cuda kernels (needs the numba-cuda package).
- :mod:`._numba_setup`: imported by the kernel modules before they compile anything:
  where numba caches the kernels (caching off if nowhere is writable), their
  freshness stamp, and the one-line "compiling kernels" notice (``FASTNN_QUIET``).
"""
