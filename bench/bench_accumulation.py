"""Gradient-accumulation benchmarks: the gradient of one batch of 256 rows of the
784-512-256-10 relu MLP (mean softmax cross-entropy), float32, computed

- ``whole``: one forward / loss / backward over the 256 rows, and
- ``4x64``: four micro-batches of 64 rows, each ``model.backward(loss_fn.backward(),
  scale=64/256)`` adding into the flat gradient buffer (the same gradient, activations
  for 64 rows instead of 256).

Each timed call starts with ``zero_grad()`` and ends with the batch's gradient in the
buffer (no optimizer step).  Cases, one table (``benchmark.group``) per way: every
fastnn backend of this machine, and ``torch`` (CPU) and ``torch_cuda`` (a CUDA GPU)
doing the same (``nn.Sequential``, ``F.cross_entropy(...) * m/B`` and ``backward()``
accumulating into ``.grad``; skipped without torch, or a GPU).  The micro-batches are
uploaded to the GPU once, before timing, and every timed call of a GPU case ends with
a device synchronisation.  ``extra_info["flops"]``: the GEMMs of the pass (forward,
grad_w of every layer, grad_x of all but the first), the same both ways.

Before timing, every case's loss and gradient are checked against the float64
whole-batch reference (numpy backend, same initial weights).
"""
import numpy as np
import pytest

import fastnn as fn
from _shared import (BACKENDS, F32, TORCH_DEVICES, arch_name, fastnn_model,
                     initial_weights, normal, reference_gradient, rng, step_flops, synced,
                     timed, to_torch, torch_flat, torch_mlp, torch_peer_of)

CASES = BACKENDS + tuple(TORCH_DEVICES)
SIZES = (784, 512, 256, 10)
BATCH = 256
WAYS = {"whole": BATCH, "4x64": 64}        # name -> micro-batch size


@pytest.mark.parametrize("backend", CASES)
@pytest.mark.parametrize("way", list(WAYS))
def test_accumulate(benchmark, way, backend, describe, close, request):
    m = WAYS[way]
    k = BATCH // m
    gen = rng(6)
    x = normal(gen, (BATCH, SIZES[0]))
    y = gen.integers(0, SIZES[-1], BATCH).astype(np.intp)
    describe(benchmark, f"accumulate {arch_name(SIZES)} B={BATCH} {way}", backend,
             f"{arch_name(SIZES)} batch {BATCH} as {k} x {m}",
             flops=step_flops(SIZES, BATCH), micro_batch=m, micro_batches=k)
    ref_loss, ref_grad, p0 = reference_gradient(SIZES, x, y)

    if backend in TORCH_DEVICES:
        torch, device, wait = torch_peer_of(request, backend)
        F = torch.nn.functional
        net = torch_mlp(torch, SIZES, initial_weights(SIZES)).to(device)
        chunks = [to_torch(torch, device, x[i * m:(i + 1) * m], y[i * m:(i + 1) * m])
                  for i in range(k)]
        w = m / BATCH

        def run():
            net.zero_grad()
            total = 0.0
            for xt, yt in chunks:
                loss = F.cross_entropy(net(xt), yt) * w
                loss.backward()
                total += loss.item()
            return total

        def grads():
            return torch_flat(torch, [p.grad for p in net.parameters()])

        def params():
            return torch_flat(torch, net.parameters())
        run = synced(run, wait)
    else:
        be = fn.get_backend(backend)
        model = fastnn_model(SIZES, backend, F32)
        loss_fn = fn.CrossEntropyLoss(backend=backend)
        chunks = [(be.from_numpy(x[i * m:(i + 1) * m]), be.from_numpy(y[i * m:(i + 1) * m]))
                  for i in range(k)]
        w = m / BATCH

        def run():
            model.zero_grad()
            total = 0.0
            for xb, yb in chunks:
                total += w * loss_fn.forward(model.forward(xb), yb)
                model.backward(loss_fn.backward(), scale=w)
            return total

        def grads():
            return be.to_numpy(model.flat_grads).astype(np.float64)

        def params():
            return be.to_numpy(model.flat_params).astype(np.float64)

        def poison():                # zero_grad must run: start from garbage
            be.fill(model.flat_grads, np.nan)
        run = timed(be, run)

    close(params(), p0, 1e-7, f"{backend} initial weights")

    def check(loss, when):
        assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss), \
            f"{backend} {way} loss {loss} != {ref_loss}{when}"
        close(grads(), ref_grad, 1e-4, f"{backend} {way} gradient{when}")

    check(run(), "")
    if backend not in TORCH_DEVICES:
        poison()
    check(benchmark(run), " (after timing)")
