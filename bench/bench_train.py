"""Whole training-step benchmarks, float32: ``opt.zero_grad(); out = model.forward(xb);
loss = loss_fn.forward(out, yb); model.backward(loss_fn.backward()); opt.step()`` with
mean softmax cross-entropy on relu MLPs, for the README's five cases:

=====================  =====  =========
model                  batch  optimizer
=====================  =====  =========
784-512-256-10            32  SGD(lr=0.01)
784-512-256-10           128  SGD(lr=0.01)
784-512-256-10           128  Adam(lr=1e-3)
64-128-10                 32  SGD(lr=0.01)
64-128-10                256  Adam(lr=1e-3)
=====================  =====  =========

Cases, one table (``benchmark.group``) per (model, batch, optimizer):

- every fastnn backend of this machine (``_shared.BACKENDS``: numpy, cpu, and cuda
  where a real GPU is usable), making those five calls;
- ``cpu_train_step``: the same step as ONE call, ``model.train_step(xb, yb, loss_fn,
  opt)`` (bit-identical to the five calls; the cpu backend runs it as one compiled
  call);
- ``torch`` (CPU) and ``torch_cuda`` (a CUDA GPU): ``nn.Sequential`` of
  ``Linear``/``ReLU`` holding the same initial weights, ``F.cross_entropy``,
  ``torch.optim.SGD``/``Adam`` with their defaults, ``loss.item()`` read each step
  (skipped without torch, or a GPU);
- ``gemms``: the step's GEMMs alone through fastnn's own BLAS
  (``fastnn.kernels._dense.gemm``): each layer's forward, each layer's grad_w (beta = 1),
  grad_x of every layer but the first.  The floor of a step: "cpu / gemms" is what the
  rest of the step (bias, activations, loss, optimizer, Python) costs on top;
- ``cupy``: the same GEMMs on the GPU, each one cuBLAS call through CuPy (skipped
  without CuPy or a GPU): the GPU's floor of a step, for the cuda backend.

GPU inputs (the batch, and the labels) are uploaded once, before timing, and every
timed call of a GPU case ends with a device synchronisation.  (fastnn's
``Loss.forward`` validates a device-array target on the host, so the cuda step still
copies its labels down and up again: that is part of what it costs today.)

``extra_info["flops"]`` is those GEMMs' flops (GFLOP/s of the step).  Before timing,
every case takes one step from the same weights and batch: its loss and gradient must
match a float64 reference (numpy backend), and its update must be the optimizer's rule
applied to its own gradient (SGD: -lr g; Adam's first step: -lr g / (|g| + eps)).  The
gemms case's outputs are checked against float64 products.  Gradients (fastnn) and the
gemms outputs are NaN-poisoned before the timed calls.
"""
import numpy as np
import pytest

import fastnn as fn
from _shared import (BACKENDS, F32, TORCH_DEVICES, arch_name, cupy_gemm, fastnn_model,
                     initial_weights, normal, parse_arch, reference_gradient, rng,
                     step_flops, step_gemms, synced, timed, to_torch, torch_flat,
                     torch_mlp, torch_peer_of)

# "cpu_train_step": the cpu backend's one-call step, ``model.train_step`` (the
# backend cases make the five calls above).
ONE_CALL = ("cpu_train_step",) if "cpu" in BACKENDS else ()
CASES = BACKENDS + ONE_CALL + tuple(TORCH_DEVICES) + ("gemms", "cupy")
# (model, batch, optimizer): the README's targets
STEPS = (("784-512-256-10", 32, "sgd"), ("784-512-256-10", 128, "sgd"),
         ("784-512-256-10", 128, "adam"), ("64-128-10", 32, "sgd"),
         ("64-128-10", 256, "adam"))
HYPER = {"sgd": {"lr": 0.01}, "adam": {"lr": 1e-3}}
ADAM_EPS = 1e-8


def group_name(arch, batch, opt):
    return f"train_step {arch} B={batch} {opt}"


def _expected_update(opt, grad):
    lr = HYPER[opt]["lr"]
    if opt == "sgd":
        return -lr * grad
    return -lr * grad / (np.abs(grad) + ADAM_EPS)        # Adam's first step


def _gemms_case(sizes, batch, xb, cupy=None):
    """(run, check, poison) of the step's GEMMs alone: through fastnn's BLAS, or with
    ``cupy`` through cuBLAS on GPU arrays (uploaded here, once)."""
    if cupy is None:
        from fastnn.kernels import _dense

        fn.get_num_threads()                    # size the BLAS pool, as the cpu backend
        gemm, up, down, wait = _dense.gemm, np.asarray, np.asarray, None
    else:
        gemm, up, down = cupy_gemm(cupy), cupy.asarray, cupy.asnumpy
        wait = cupy.cuda.Device().synchronize
    gen = rng(8)
    weights = [w.astype(F32) for w in initial_weights(sizes)[0::2]]
    acts = [xb] + [np.abs(normal(gen, (batch, h))) for h in sizes[1:-1]]
    grad_z = [normal(gen, (batch, o), 0.01) for o in sizes[1:]]
    ref = [tuple(v.astype(np.float64) for v in vs) for vs in zip(acts, weights, grad_z)]
    weights, acts, grad_z = ([up(v) for v in vs] for vs in (weights, acts, grad_z))
    z = [up(np.empty((batch, o), F32)) for o in sizes[1:]]
    grad_w = [up(np.zeros(w.shape, F32)) for w in weights]
    grad_x = [None] + [up(np.empty((batch, i), F32)) for i in sizes[1:-1]]
    scale = 1.0 / batch
    layers = range(len(weights))

    def run():
        for i in layers:
            gemm(acts[i], weights[i], z[i])
        for i in layers:
            gemm(acts[i], grad_z[i], grad_w[i], trans_a=True, alpha=scale, beta=1.0)
        for i in layers:
            if i:
                gemm(grad_z[i], weights[i], grad_x[i], trans_b=True)

    def check(close, calls):
        for i in layers:
            a64, w64, g64 = ref[i]
            close(down(z[i]), a64 @ w64, 1e-5, f"gemms forward {i}")
            if calls is not None:
                close(down(grad_w[i]), calls * scale * (a64.T @ g64), 1e-5,
                      f"gemms grad_w {i}")
            if i:
                close(down(grad_x[i]), g64 @ w64.T, 1e-5, f"gemms grad_x {i}")

    def poison():
        for i in layers:
            z[i][...] = np.nan
            if i:
                grad_x[i][...] = np.nan

    assert len(step_gemms(sizes, batch)) == 3 * len(weights) - 1
    return synced(run, wait), check, poison


@pytest.mark.parametrize("backend", CASES)
@pytest.mark.parametrize("arch,batch,opt", STEPS,
                         ids=[f"{a}-B{b}-{o}" for a, b, o in STEPS])
def test_train_step(benchmark, arch, batch, opt, backend, describe, close, request):
    sizes = parse_arch(arch)
    gen = rng(5)
    xb = normal(gen, (batch, sizes[0]))
    yb = gen.integers(0, sizes[-1], batch).astype(np.intp)
    describe(benchmark, group_name(arch, batch, opt), backend,
             f"{arch_name(sizes)} batch {batch}", flops=step_flops(sizes, batch),
             model=arch, batch=batch, optimizer=opt, hyper=HYPER[opt])

    if backend in ("gemms", "cupy"):
        cupy = request.getfixturevalue("cupy_peer") if backend == "cupy" else None
        run, check, poison = _gemms_case(sizes, batch, xb, cupy)
        run()
        check(close, 1)
        poison()
        benchmark(run)
        check(close, None)
        return

    ref_loss, ref_grad, p0 = reference_gradient(sizes, xb, yb)
    if backend in TORCH_DEVICES:
        torch, device, wait = torch_peer_of(request, backend)
        F = torch.nn.functional
        net = torch_mlp(torch, sizes, initial_weights(sizes)).to(device)
        cls = torch.optim.SGD if opt == "sgd" else torch.optim.Adam
        optimizer = cls(net.parameters(), **HYPER[opt])
        xt, yt = to_torch(torch, device, xb, yb)

        def step():
            optimizer.zero_grad()
            loss = F.cross_entropy(net(xt), yt)
            loss.backward()
            optimizer.step()
            return loss.item()

        def params():
            return torch_flat(torch, net.parameters())

        def grads():
            return torch_flat(torch, [p.grad for p in net.parameters()])

        def poison():
            pass                      # zero_grad sets the gradients to None
        step = synced(step, wait)     # (.item() has waited already)
    else:
        one_call = backend in ONE_CALL
        name = "cpu" if one_call else backend
        be = fn.get_backend(name)
        model = fastnn_model(sizes, name, F32)
        loss_fn = fn.CrossEntropyLoss(backend=name)
        optimizer = (fn.SGD if opt == "sgd" else fn.Adam)(model, **HYPER[opt])
        xbb, ybb = be.from_numpy(xb), be.from_numpy(yb)

        def step():
            if one_call:
                return model.train_step(xbb, ybb, loss_fn, optimizer)
            optimizer.zero_grad()
            out = model.forward(xbb)
            loss = loss_fn.forward(out, ybb)
            model.backward(loss_fn.backward())
            optimizer.step()
            return loss

        def params():
            return be.to_numpy(model.flat_params).astype(np.float64)

        def grads():
            return be.to_numpy(model.flat_grads).astype(np.float64)

        def poison():                 # zero_grad must really run
            be.fill(model.flat_grads, np.nan)
        step = timed(be, step)

    start = params()
    close(start, p0, 1e-7, f"{backend} initial weights")
    loss = step()
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss), \
        f"{backend} first-step loss {loss} != {ref_loss}"
    g = grads()
    close(g, ref_grad, 1e-4, f"{backend} first-step gradient")
    close(params() - start, _expected_update(opt, g), 1e-4, f"{backend} first {opt} update")
    poison()
    last = benchmark(step)
    assert np.isfinite(last) and np.all(np.isfinite(params())), \
        f"{backend}: non-finite loss or parameters after timing"
    assert np.all(np.isfinite(grads()))
