"""Loss benchmarks on 1024x512 float32 outputs: value and gradient together (one
``Backend.loss`` call), PyTorch's definitions and mean reductions.

- ``cross_entropy``: softmax cross-entropy from logits with integer labels (mean over
  the 1024 rows);
- ``mse``: mean squared error against a float32 target (mean over all elements);
- ``bce_with_logits``: binary cross-entropy with logits against 0/1 targets (all elements).

Cases, one table (``benchmark.group``) per loss: every fastnn backend of this machine,
``torch`` on the CPU and ``torch_cuda`` on a CUDA GPU (``F.cross_entropy`` /
``F.mse_loss`` / ``F.binary_cross_entropy_with_logits`` forward + ``backward()`` on a
leaf tensor, the value read with ``.item()``; skipped without torch, or a GPU) and
``copy`` (the memory floor: ``np.copyto`` moving the same bytes).  GPU inputs are
uploaded once, before timing; the value read back ends each call on the host.

Bytes (read + written): cross-entropy reads the logits (2 MiB) and the labels (1024
intp) and writes the gradient (2 MiB); mse and bce_with_logits read the output and the
target and write the gradient (3 x 2 MiB).

Every case first checks one call's value and gradient against a float64 NumPy
reference; the gradient is NaN-poisoned before the timed calls.
"""
import numpy as np
import pytest

import fastnn as fn
from _shared import (BACKENDS, EW_ARRAY_BYTES, EW_COLS, EW_ROWS, EW_SIZE, F32,
                     TORCH_DEVICES, ce_reference, copy_case, from_torch, normal, rng,
                     synced, timed, to_torch, torch_peer_of)

CASES = BACKENDS + tuple(TORCH_DEVICES) + ("copy",)
NAMES = ("cross_entropy", "mse", "bce_with_logits")
LABEL_BYTES = EW_ROWS * np.dtype(np.intp).itemsize
BYTES = {"cross_entropy": 2 * EW_ARRAY_BYTES + LABEL_BYTES,
         "mse": 3 * EW_ARRAY_BYTES, "bce_with_logits": 3 * EW_ARRAY_BYTES}


def _case(name):
    """(output, target, norm, value_ref, grad_ref) of one loss."""
    gen = rng(4)
    out = normal(gen, (EW_ROWS, EW_COLS), 2.0)
    if name == "cross_entropy":
        target = gen.integers(0, EW_COLS, EW_ROWS).astype(np.intp)
        value, grad = ce_reference(out, target)
        return out, target, 1.0 / EW_ROWS, value, grad
    o = out.astype(np.float64)
    n = out.size
    if name == "mse":
        target = normal(gen, out.shape)
        d = o - target
        return out, target, 1.0 / n, float(np.sum(d * d) / n), 2 * d / n
    target = gen.integers(0, 2, out.shape).astype(F32)
    t = target.astype(np.float64)
    terms = np.maximum(o, 0) - o * t + np.log1p(np.exp(-np.abs(o)))
    return out, target, 1.0 / n, float(terms.sum() / n), (1 / (1 + np.exp(-o)) - t) / n


@pytest.mark.parametrize("backend", CASES)
@pytest.mark.parametrize("name", NAMES)
def test_loss(benchmark, name, backend, describe, close, request):
    group = f"loss {name} {EW_SIZE}"
    if backend == "copy":
        return copy_case(benchmark, describe, group, BYTES[name], f"{name} loss")
    out, target, norm, ref_value, ref_grad = _case(name)
    describe(benchmark, group, backend,
             f"out({EW_ROWS},{EW_COLS}) target{target.shape}", nbytes=BYTES[name],
             target_dtype=target.dtype.name)

    if backend in TORCH_DEVICES:
        torch, device, wait = torch_peer_of(request, backend)
        F = torch.nn.functional
        fun = {"cross_entropy": F.cross_entropy, "mse": F.mse_loss,
               "bce_with_logits": F.binary_cross_entropy_with_logits}[name]
        ot, tt = to_torch(torch, device, out, target)
        ot.requires_grad_()

        def run():
            ot.grad = None
            loss = fun(ot, tt)
            loss.backward()
            return loss.item()

        def grad():
            return from_torch(ot.grad)

        def poison():
            ot.grad = None                   # a new gradient tensor each call
        run = synced(run, wait)              # (.item() has waited already)
    else:
        be = fn.get_backend(backend)
        ob, tb = be.from_numpy(out), be.from_numpy(target)
        g = be.empty(out.shape, F32)

        def run():
            return be.loss(name, ob, tb, g, 0.0, norm)

        def grad():
            return be.to_numpy(g)

        def poison():
            be.fill(g, np.nan)
        run = timed(be, run)

    def check(value, when):
        assert abs(value - ref_value) <= 1e-5 * abs(ref_value), \
            f"{backend} {name} value {value} != {ref_value}{when}"
        close(grad(), ref_grad, 1e-5, f"{backend} {name} gradient{when}")

    check(run(), "")
    poison()
    value = benchmark(run)
    check(value, " (after timing)")
