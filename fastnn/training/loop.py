"""``Sequential.fit``: mini-batch training with exact gradient accumulation.

Each batch of B samples is cut into micro-batches of at most ``micro_batch_size``
rows.  Micro-batch i (m_i rows) has its loss averaged over its own rows and is
back-propagated with ``scale = m_i / B``, so after the last one the gradient buffer
holds the mean gradient of the whole batch: the same update as the batch in one
piece, up to rounding (tested: 1e-12 relative in float64), while only m_i rows of
activations exist at a time.  The optimizer steps once per batch, so its step counter
(Adam's bias correction), weight decay, clipping and per-batch schedulers advance once
per real update, never per micro-batch.
"""
import numbers

import numpy as np

from .. import _checks
from ..losses import get_loss, target_kernel
from ..optim import (OPTIMIZERS, LRScheduler, clip_args, clip_factor, deferred_interrupts,
                     get_optimizer)
from ..optim import _critical as critical
from ..kernels.specs import lookup
from .callbacks import Callback, History, Progress
from .data import Gather, features, validation
from .metrics import accuracy_rule, measure


def loss_for(model, loss):
    """The fit's loss: ``loss`` (an instance or a name), else the model's own."""
    if loss is None:
        loss = model.loss
        if loss is None:
            raise ValueError("loss is needed: pass loss= (a Loss or a name such as "
                             "'cross_entropy'); a model remembers it after a fit or a "
                             "load")
    loss_fn = get_loss(loss)
    if loss_fn.backend is not None and loss_fn.backend is not model.backend:
        raise ValueError(f"loss computes on the {loss_fn.backend.name} backend but the "
                         f"model is on {model.backend.name}: make it with backend=None "
                         f"(it then follows the model)")
    return loss_fn


def optimizer_for(model, optimizer):
    """The fit's optimizer: an instance of this model's; a name, which continues the
    model's own optimizer when that is one of this kind (after a fit, or a load:
    training resumes with its state), else makes a new one with PyTorch's defaults;
    None: the model's own."""
    if optimizer is None:
        if model.optimizer is None:
            raise ValueError("optimizer is needed: pass optimizer= (an Optimizer or a "
                             "name such as 'adam'); a model remembers it after a fit "
                             "or a load")
        return model.optimizer
    if isinstance(optimizer, str) and model.optimizer is not None:
        name = lookup(OPTIMIZERS, optimizer, "optimizer")
        if type(model.optimizer) is OPTIMIZERS[name]:
            return model.optimizer
    return get_optimizer(optimizer, model)


def fit(model, X, y, *, loss=None, optimizer=None, epochs=1, batch_size=32,
        micro_batch_size=None, shuffle=True, seed=None, validation_data=None,
        validation_split=None, clip_grad_norm=None, norm_type=2.0, scheduler=None,
        scheduler_interval="epoch", callbacks=(), progress=True, distributed=None):
    """Train ``model`` on (X, y); see :meth:`fastnn.Sequential.fit`."""
    # Everything is checked before the model changes.
    loss_fn = loss_for(model, loss)
    opt = optimizer_for(model, optimizer)
    epochs = _checks.positive_int(epochs, "epochs")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if micro_batch_size is None:
        micro_batch_size = batch_size
    micro_batch_size = _checks.positive_int(micro_batch_size, "micro_batch_size")
    if micro_batch_size > batch_size:
        raise ValueError(f"micro_batch_size ({micro_batch_size}) must not exceed "
                         f"batch_size ({batch_size})")
    if not isinstance(shuffle, (bool, np.bool_)):
        raise ValueError(f"shuffle must be True or False, got {shuffle!r}")
    if not isinstance(progress, (bool, np.bool_)):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or seed < 0):
        raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}")
    if clip_grad_norm is not None:
        clip_grad_norm, norm_type = clip_args(clip_grad_norm, norm_type)
    if scheduler is not None:
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"scheduler must be a fastnn.optim scheduler, got "
                            f"{type(scheduler).__name__}")
        if scheduler.optimizer is not opt:
            raise ValueError("scheduler must drive this fit's optimizer (pass the "
                             "optimizer instance it was built on)")
    if scheduler_interval not in ("epoch", "batch"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'batch', got "
                         f"{scheduler_interval!r}")
    callbacks = list(callbacks or ())
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be fastnn.training.Callback instances, got "
                            f"{type(cb).__name__}")
    dist = None
    if distributed is not None:
        from .. import distributed as _dist
        dist = _dist.check(distributed, model)
    X = features(X, model)
    _, target = loss_fn.prepare_target(y, X.shape[0], model.out_features, model.dtype)
    X, target, X_val, val_target = validation(model, loss_fn, X, target,
                                              validation_data, validation_split)
    n = X.shape[0]
    accuracy = accuracy_rule(loss_fn)
    metrics = ["loss"] + (["accuracy"] if accuracy is not None else [])
    if X_val is not None:
        metrics += ["val_" + name for name in metrics]

    if dist is not None:
        # every rank must walk the same batches with the same settings: compared
        # here, with one clear error everywhere, not a hang in a collective later
        seed = dist.common_seed(seed)
        dist.preflight(samples=int(n), batch_size=batch_size,
                       micro_batch_size=micro_batch_size, epochs=epochs, seed=seed,
                       shuffle=bool(shuffle), loss=type(loss_fn).__name__,
                       optimizer=type(opt).__name__, optimizer_steps=opt.step_count,
                       clip_grad_norm=clip_grad_norm,
                       validation=None if X_val is None else int(X_val.shape[0]))
        progress = progress and dist.rank == 0
    history = History(metrics)
    model.stop_training = False
    params = {"epochs": epochs, "metrics": list(metrics)}
    for cb in callbacks:
        cb.set_model(model)
        cb.set_params(params)
        cb.on_train_begin({})                 # may still refuse: nothing changed yet
    model.optimizer, model.loss = opt, loss_fn
    rng = np.random.default_rng(seed)
    b = model.backend
    # The data go to the backend once (GPU memory for cuda, when they fit there; else
    # one batch at a time); per batch only kernels run, and the loss and accuracy add
    # up in ``sums`` there, read when the progress bar is redrawn and at the end of
    # each epoch.
    Xd, Td = b.dataset(X, target)
    if X_val is not None:
        X_val, val_target = b.dataset(X_val, val_target)
    gather = Gather(b, Xd, Td)
    # One compiled call per micro-batch (forward, loss, backward; with the update in
    # the batch's last one) where the backend has it and nothing must happen between
    # the passes; else the separate calls.  The same kernels either way: the same
    # weights, bit for bit (tests/api/test_train_step.py).
    one_call = model._one_call(loss_fn, opt)
    kernel = target_kernel(loss_fn, Td) if one_call else None
    step_inside = one_call and clip_grad_norm is None and dist is None and not (
        scheduler is not None and scheduler_interval == "batch")

    def gradient(first, last, rows, sums, step=None):
        """Set .grad to the gradient of rows [first, last) of a batch of ``rows``
        rows, each micro-batch weighted by its share of the batch; ``sums`` gains
        their loss and correct predictions; returns the rows counted for accuracy.
        ``step``: the optimizer to step inside the last compiled call."""
        counted = 0
        if not one_call or first == last:
            opt.zero_grad()
        for lo in range(first, last, micro_batch_size):
            hi = min(lo + micro_batch_size, last)
            if shuffle:
                xb, yb = gather(lo, hi)
            else:
                xb, yb = Xd[lo:hi], Td[lo:hi]
            if one_call:
                plan, xb = model._staged(xb)
                sums[0] += (hi - lo) * model._step_call(
                    plan, xb, kernel, b.stage(yb, loss_fn, "target"), loss_fn,
                    (hi - lo) / rows, lo == first, step if hi == last else None)
                if accuracy is not None:
                    counted += b.count_correct(accuracy, plan.a[-1], yb, sums, 1)
            else:
                out = model.forward(xb, copy=False)  # fit's zero-copy path
                counted += loss_fn.accumulate(b, out, yb, sums, hi - lo, accuracy)
                model.backward(loss_fn.backward(), scale=(hi - lo) / rows)
        return counted

    bar = Progress(progress, epochs, -(-n // batch_size))
    # Ctrl-C lands between steps, never inside one (optim.deferred_interrupts); a
    # bar cut short by an exception is closed (Progress.__exit__).
    with deferred_interrupts(), bar:
        for epoch in range(epochs):
            if shuffle:
                gather.epoch(rng.permutation(n))
            sums = loss_fn.sums(b)                    # loss total, correct predictions
            counted = 0
            # "ordered": the reduced (loss total, correct, counted) so far
            done = np.zeros(3)
            seen = 0                # rows behind the running loss the bar shows
            bar.start(epoch)
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                rows = stop - start                   # the batch's true size

                if dist is None:
                    counted += gradient(start, stop, rows, sums,
                                        opt if step_inside else None)
                elif dist.reduction == "allreduce":
                    # this rank's shard (maybe empty: zero gradients, still reduced)
                    lo, hi = dist.shard_range(start, stop)
                    counted += gradient(lo, hi, rows, sums)
                    dist.reduce_gradients()
                    seen += hi - lo
                else:
                    # the fixed chunk grid, each chunk from zero, summed in order
                    chunks, c0, c1 = dist.chunk_ranges(start, stop)
                    grads, chunk_sums = [], []
                    for first, last in chunks[c0:c1]:
                        part = loss_fn.sums(b)
                        part_counted = gradient(first, last, rows, part)
                        grads.append(np.array(model.to_numpy(model.flat_grads)))
                        loss_total, correct = b.to_numpy(part)
                        chunk_sums.append((loss_total, correct, part_counted))
                    done += dist.ordered_sum(grads, chunk_sums)
                if dist is None or dist.reduction == "ordered":
                    seen = stop
                if not step_inside:
                    factor = None
                    if clip_grad_norm is not None:
                        _, factor = clip_factor(model, clip_grad_norm, norm_type, False,
                                               opt._spans)
                    if scheduler is not None and scheduler_interval == "batch":
                        with critical():      # the step and its lr change: together
                            opt.step_scaled(1.0 if factor is None else factor)
                            scheduler.step()
                    else:
                        opt.step_scaled(1.0 if factor is None else factor)
                # the epoch's running mean, read only when the bar is redrawn
                # (distributed: rank 0's rows, or the reduced totals when ordered)
                bar.batch_done(rows, lambda: (
                    done[0] if dist is not None and dist.reduction == "ordered"
                    else float(b.to_numpy(sums)[0])) / max(seen, 1))
            bar.training_done()
            if scheduler is not None and scheduler_interval == "epoch":
                scheduler.step()
            total, correct = b.to_numpy(sums)
            if dist is not None and dist.reduction == "allreduce":
                total, correct, counted = dist.allreduce_sums([total, correct, counted])
            elif dist is not None:                   # "ordered": summed in chunk order
                total, correct, counted = done
            logs = {"loss": float(total) / n}
            if accuracy is not None:
                logs["accuracy"] = float(correct) / counted
            if X_val is not None:
                logs["val_loss"], val_acc = measure(model, X_val, val_target, loss_fn,
                                                    micro_batch_size)
                if accuracy is not None:
                    logs["val_accuracy"] = val_acc
            bar.end(logs)
            history.epoch.append(epoch)
            for name, value in logs.items():
                history.history[name].append(value)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
    for cb in callbacks:
        cb.on_train_end(logs)
    return history
