"""Templates shared by the cpu and the cuda kernels: loops over flat buffers whose body
is one formula applied element by element.

The loop itself is a slot, ``indices(n)``: the indices this thread handles.  The cpu
binds ``numba.prange`` (a serial loop unless compiled with ``parallel=True``); the cuda
kernels bind a device function returning the grid-stride range
``range(grid(1), n, gridsize(1))``.  So an optimizer step, say, is written once and is
the same update on both targets.
"""
from .template import Slot

indices = Slot("indices", "indices(n): the element indices this thread handles")
f = Slot("f", "the formula applied to every element")


def activation_forward(z, a):
    """a = f(z), elementwise, over C-contiguous arrays of any shape (read flat)."""
    zf = z.reshape(z.size)
    af = a.reshape(a.size)
    for i in indices(zf.shape[0]):
        af[i] = f(zf[i])


# Optimizer steps: one loop over the flat buffers per step, whatever the model, with the
# update rule ``f`` inlined (a formula of kernels.formulas taking (p, g, *state, h) and
# returning (p, *state)).  One template per number of state buffers; ``h`` is the
# step's named tuple of scalars (kernels.specs).
def optimizer_step0(p, g, h):
    for i in indices(p.shape[0]):
        r = f(p[i], g[i], h)
        p[i] = r[0]


def optimizer_step1(p, g, s0, h):
    for i in indices(p.shape[0]):
        p[i], s0[i] = f(p[i], g[i], s0[i], h)


def optimizer_step2(p, g, s0, s1, h):
    for i in indices(p.shape[0]):
        p[i], s0[i], s1[i] = f(p[i], g[i], s0[i], s1[i], h)


def optimizer_step3(p, g, s0, s1, s2, h):
    for i in indices(p.shape[0]):
        p[i], s0[i], s1[i], s2[i] = f(p[i], g[i], s0[i], s1[i], s2[i], h)


#: The step template for a rule with ``k`` state buffers.
OPTIMIZER_STEPS = (optimizer_step0, optimizer_step1, optimizer_step2, optimizer_step3)
