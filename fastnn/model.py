"""The model: ``Sequential``, a stack of Dense layers owning one flat parameter buffer
and one flat gradient buffer (every Parameter is a view into them), and its plans."""
import json
import os
import threading

import numpy as np

from . import _checks, fileformat, training
from ._version import __version__
from .backends import DEFAULT, get_backend
from .layers import Dense, Parameter, read_only
from .optim import Optimizer
from .plan import Plan


class Sequential:
    """A stack of Dense layers with one flat parameter buffer and one flat gradient
    buffer.

    ``backend``: ``"cpu"`` (compiled, default), ``"cuda"`` (an NVIDIA GPU: the
    parameters, gradients and optimizer state live in GPU memory) or ``"numpy"``
    (the reference);
    ``dtype``: float32 (default) or float64; ``seed``: None or a non-negative integer
    that seeds the weight initialisation (same seed, same weights, on every backend).

    Threads: :meth:`predict` and :meth:`evaluate` may run on one model from several
    threads at once (each thread computes in a workspace of its own), as long as no
    thread changes the weights meanwhile.  Training (``forward``/``backward``, ``fit``,
    an optimizer step) keeps state between calls and is for one thread at a time.
    """

    _MAX_PLANS = 4

    # The flat buffers every kernel works on: attributes that cannot be rebound (an
    # array put in their place would be ignored by the views, or read out of bounds).
    flat_params = read_only("flat_params", "model")
    flat_grads = read_only("flat_grads", "model")

    def __init__(self, *layers, backend=DEFAULT, dtype=np.float32, seed=None):
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Dense):
                raise TypeError(f"layer {i} must be a fastnn.Dense, got "
                                f"{type(layer).__name__}")
            if layer.weight is not None:
                raise ValueError(f"layer {i} already belongs to a model; make a new Dense")
        for i in range(1, len(layers)):
            if layers[i].in_features != layers[i - 1].out_features:
                raise ValueError(
                    f"layer {i} has in_features={layers[i].in_features} but layer {i - 1} "
                    f"has out_features={layers[i - 1].out_features}")
        self.backend = get_backend(backend)
        self.dtype = _checks.dtype_of(dtype)
        self.layers = tuple(layers)
        self.seed = _checks.seed(seed)
        self.in_features = layers[0].in_features
        self.out_features = layers[-1].out_features

        shapes = [s for layer in layers for s in layer.param_shapes]
        sizes = [int(np.prod(s)) for s in shapes]
        self.num_parameters = sum(sizes)
        # The flat buffers: an optimizer step and zero_grad are one kernel over them.
        self._flat_params = self.backend.empty((self.num_parameters,), self.dtype)
        self._flat_grads = self.backend.empty((self.num_parameters,), self.dtype)
        self._params = []
        offset = 0
        for i, layer in enumerate(layers):
            views = []
            for kind in ("weight", "bias"):
                shape = shapes[len(self._params)]
                n = int(np.prod(shape))
                p = Parameter(f"{i}.{kind}",
                              self.flat_params[offset:offset + n].reshape(shape),
                              self.flat_grads[offset:offset + n].reshape(shape), self)
                self._params.append(p)
                views.append(p)
                offset += n
            layer.weight, layer.bias = views

        rng = np.random.default_rng(seed)
        init = np.concatenate([v.ravel() for layer in layers
                               for v in layer.initial_values(rng)])
        self.backend.from_numpy(init.astype(self.dtype), out=self.flat_params)
        self.zero_grad()
        self._plans = {}         # rows -> the training plan (forward and backward)
        self._local = threading.local()    # .plans: this thread's inference plans
        self._inputs = None      # the plan and input of the last forward, for backward
        self.optimizer = None    # the optimizer and loss of the last fit (or load)
        self.loss = None
        self.stop_training = False

    # -- parameters ----------------------------------------------------------------
    def parameters(self):
        """The Parameters in order: 0.weight, 0.bias, 1.weight, 1.bias, ..."""
        return list(self._params)

    def get_weights(self):
        """NumPy copies of every parameter, in :meth:`parameters` order."""
        return [self.backend.to_numpy(p.data) for p in self._params]

    def get_gradients(self):
        """NumPy copies of every gradient, in :meth:`parameters` order."""
        return [self.backend.to_numpy(p.grad) for p in self._params]

    def set_weights(self, weights):
        """Replace every parameter from a list of arrays in :meth:`parameters` order.
        All are checked (count, shapes, exact conversion to the model's dtype) before
        any is written."""
        weights = list(weights)
        if len(weights) != len(self._params):
            raise ValueError(f"weights must be a list of {len(self._params)} arrays, got "
                             f"{len(weights)}")
        arrays = []
        for p, w in zip(self._params, weights):
            arr = _checks.exact_cast(w, self.dtype, f"weights[{p.name}]")
            if arr.shape != p.shape:
                raise ValueError(f"weights[{p.name}] must have shape {p.shape}, got "
                                 f"{arr.shape}")
            if not _checks.all_finite(arr):
                raise ValueError(f"weights[{p.name}] contains NaN or inf")
            arrays.append(arr)
        flat = np.concatenate([a.ravel() for a in arrays])
        self.backend.from_numpy(flat, out=self.flat_params)

    def zero_grad(self):
        """Set every gradient to zero: one fill of the flat gradient buffer."""
        self.backend.fill(self.flat_grads, 0)

    def to_numpy(self, array):
        """A NumPy copy of a backend array (e.g. the output of :meth:`forward`)."""
        return self.backend.to_numpy(array)

    # -- passes --------------------------------------------------------------------
    def plan(self, rows, training=True):
        """The model's :class:`fastnn.plan.Plan` for batches of ``rows`` rows: the
        offsets and the workspace the backends run a pass from (made on first use;
        the last few batch sizes are kept).  ``training=False``: an inference plan,
        the calling thread's own, without gradient buffers (what ``predict`` and
        ``evaluate`` use, so that they neither disturb what ``backward`` needs nor
        share a workspace between threads)."""
        if training:
            plans = self._plans
        else:
            plans = getattr(self._local, "plans", None)
            if plans is None:
                plans = self._local.plans = {}
        plan = plans.get(rows)
        if plan is None:
            if len(plans) >= self._MAX_PLANS:
                plans.pop(next(iter(plans)))
            plan = plans[rows] = Plan(self, rows, training)
        return plan

    def _private(self, x, argname, plan):
        """``x`` staged for ``plan``'s pass, copied first if it shares memory with the
        model's own buffers (e.g. the output of a forward with copy=False, or a view
        of flat_grads): a pass writes those while it reads ``x``."""
        x = self.backend.stage(x, plan, argname)
        if self.backend.aliases(x, plan.workspace, self._flat_grads):
            x = self.backend.copy(x)
        return x

    def _staged(self, x):
        """(plan, x) for a training pass over the batch ``x``: checked, and staged
        where the backend computes (a private copy if it aliases the model's own
        buffers)."""
        x = self.backend.batch(x, "x", self.dtype, columns=self.in_features)
        plan = self.plan(x.shape[0])
        return plan, self._private(x, "x", plan)

    def forward(self, x, copy=True):
        """Outputs for the batch ``x`` (batch, in_features), of the model's dtype: a
        new backend array (batch, out_features) (a NumPy array on the cpu and numpy
        backends).

        ``copy=False`` returns the model's output buffer itself instead, saving the
        copy (what ``fit`` does): it is overwritten by the next forward with the same
        batch size.  ``x`` is read again by :meth:`backward`: do not change it in
        between.  On the cuda backend ``x`` may be a NumPy array (copied to the GPU)
        or a CUDA device array (used in place)."""
        plan, x = self._staged(x)
        out = self.backend.model_forward(plan, x)
        self._inputs = (plan, x)
        return self.backend.copy(out) if copy else out

    def _infer(self, x):
        """Outputs for a checked batch ``x`` through this thread's inference plan: the
        plan's output buffer (overwritten by this thread's next inference of as many
        rows); the state of the last :meth:`forward`, which :meth:`backward` reads, is
        left alone."""
        plan = self.plan(x.shape[0], training=False)
        return self.backend.model_forward(plan, self._private(x, "x", plan))

    def __call__(self, x, copy=True):
        """The same as :meth:`forward` (which a subclass may override)."""
        return self.forward(x, copy=copy)

    def backward(self, grad, scale=1.0):
        """Back-propagate ``grad`` = dLoss/dOutput (batch, out_features) of the last
        forward, ADDING ``scale`` times the parameter gradients into ``.grad``.

        With micro-batches of sizes m_i summing to B, ``scale = m_i / B`` (and each
        micro-batch's loss a mean over its own m_i rows) leaves the global-batch mean
        gradient in ``.grad`` after the last one."""
        if self._inputs is None:
            raise RuntimeError("backward called before forward")
        plan, x = self._inputs
        batch = x.shape[0]
        grad = self.backend.batch(grad, "grad", self.dtype, columns=self.out_features)
        if grad.shape[0] != batch:
            raise ValueError(f"grad must have shape ({batch}, {self.out_features}) like "
                             f"the last forward's output, got {tuple(grad.shape)}")
        if scale.__class__ is not float or scale != 1.0:     # (1.0 needs no check)
            scale = _checks.representable(_checks.real_number(scale, "scale"),
                                          self.dtype, "scale")
        grad = self._private(grad, "grad", plan)
        self.backend.model_backward(plan, x, grad, scale)

    # -- training ------------------------------------------------------------------
    def train_step(self, x, y, loss=None, optimizer=None):
        """One optimizer step on the batch ``(x, y)``; returns the batch's mean loss
        (a Python float: the loss before the update).

        The same as the five calls of a manual loop, bit for bit::

            optimizer.zero_grad(); out = model(x); value = loss(out, y)
            model.backward(loss.backward()); optimizer.step()

        but on the cpu backend it is ONE compiled call (forward, loss, backward and
        update, the GIL released), so a small model's step is not paid in Python
        (64-128-10 at batch 32: see the README's Performance section).  The other
        backends, a custom loss (a ``value_and_grad`` of your own, or an overridden
        ``forward``/``backward``), a loss that checks the model's output first
        (BCELoss: probabilities), an optimizer over a subset of the parameters, or an
        overridden ``forward``/``backward`` of the model make the five calls
        instead, with the same result.

        - ``x``: (batch, in_features) of the model's dtype, at least one row.
        - ``y``: what ``loss(output, y)`` takes: integer class labels (batch,) for
          cross-entropy (or class probabilities), else an array of the output's shape
          and the model's dtype.  Checked before anything changes.
        - ``loss``, ``optimizer``: as for :meth:`fit` (instances, or names; default
          the model's own), and kept as ``model.loss`` and ``model.optimizer`` as
          :meth:`fit` keeps them, so a name such as ``"adam"`` continues the same
          optimizer from one call to the next.

        Afterwards, as after the five calls, ``loss.backward()`` holds d loss /
        d output and ``.grad`` the batch's gradients.  The update and the
        optimizer's step counter advance together (Ctrl-C under
        :func:`fastnn.optim.deferred_interrupts` waits for the step's end)."""
        if isinstance(optimizer, Optimizer) and optimizer.model is self:
            opt = optimizer              # (the loop's usual case: no lookup)
        else:
            opt = training.optimizer_for(self, optimizer)
        loss_fn = training.loss_for(self, loss)
        plan, x = self._staged(x)          # (at least one row: batch checks it)
        rows = x.shape[0]
        if not self._one_call(loss_fn, opt):
            out = self.forward(x, copy=False)
            value = loss_fn(out, y)
            opt.zero_grad()
            self.backward(loss_fn.backward())
            opt.step()
        else:
            b = self.backend        # (a backend that checks labels in its own call)
            kernel, target = loss_fn.staged_target(b, y, (rows, self.out_features),
                                                   self.dtype, not b.checks_labels)
            value = self._step_call(plan, x, kernel, target, loss_fn, 1.0, True, opt)
        self.optimizer, self.loss = opt, loss_fn
        return value

    def _one_call(self, loss_fn, opt):
        """Whether a training step with ``loss_fn`` and ``opt`` runs as the backend's
        one compiled ``train_step``: a backend that has one, the built-in passes, a
        fused loss that checks no output, an optimizer of all the parameters.  (Else
        the five calls: on the numpy backend, say, the loss of a NumPy output runs on
        the cpu backend, as the manual loop's does.)"""
        cls = type(self)
        return (self.backend.one_call_step and loss_fn._fused
                and not loss_fn.checks_output and opt._spans is None
                and cls.forward is Sequential.forward
                and cls.backward is Sequential.backward)

    def _step_call(self, plan, x, kernel, target, loss_fn, scale, zero, opt):
        """The backend's ``train_step`` on a staged batch and target (see
        :meth:`train_step`): ``scale`` and ``zero`` as for a micro-batch of
        :meth:`fit`; ``opt`` None for no update.  Returns the loss kernel's value."""
        b = self.backend
        grad = loss_fn._grad_buffer(b, plan.a[-1])
        args = (plan, x, kernel, target, grad, loss_fn.param, loss_fn._norm(grad.shape),
                scale, zero)
        self._inputs = (plan, x)
        if opt is None:
            return b.train_step(*args, None, (), None)
        t, rule, state, hyper = opt._next_step(1.0)
        return opt._advance(t, b.train_step, *args, rule, state, hyper)

    def fit(self, X, y, *, loss=None, optimizer=None, epochs=1, batch_size=32,
            micro_batch_size=None, shuffle=True, seed=None, validation_data=None,
            validation_split=None, clip_grad_norm=None, norm_type=2.0, scheduler=None,
            scheduler_interval="epoch", callbacks=(), progress=True, distributed=None):
        """Train on ``X`` (samples, in_features) and targets ``y``; return a
        :class:`fastnn.History` of per-epoch ``loss`` (and ``accuracy`` for
        classification losses, ``val_loss``/``val_accuracy`` with validation data).

        - ``X``, ``y``: any real array-likes, converted once to the model's dtype
          (class labels for ``"cross_entropy"``: integer-valued, 1-D).  A 1-D ``y`` is
          one column when the model has one output.  NaN/inf, a wrong shape or a label
          out of range raise before anything changes.
        - ``loss``: a Loss or a name in ``fastnn.LOSSES`` (``"cross_entropy"``,
          ``"mse"``, ...; any case); default: the model's (``model.loss``, from the
          last fit or a load).  A custom loss (``fastnn.Loss`` subclass) is honoured.
        - ``optimizer``: an Optimizer of this model (its state carries over between
          fits), or a name in ``fastnn.optim.OPTIMIZERS`` (``"sgd"``, ``"adam"``,
          ...): the model's own optimizer continues when it is of that kind (after a
          fit, or ``fastnn.load``: training resumes exactly), else a new one with
          PyTorch's defaults; default: the model's own.  Both are kept as
          ``model.loss`` and ``model.optimizer``.
        - ``batch_size`` B (default 32): one optimizer step per batch; the last batch
          of an epoch holds the remaining samples.  ``micro_batch_size`` m (default B):
          each batch is computed m rows at a time and the gradients accumulated, exactly
          normalised by the batch's true size; the result equals the whole batch's
          update (to rounding) while activations take m rows of memory, not B.
        - ``shuffle`` (default True) draws a new sample order each epoch from ``seed``.
        - ``validation_data=(X_val, y_val)``, or ``validation_split=f``: the last
          fraction f of (X, y), taken before shuffling, is held out.  Evaluated after
          each epoch, m rows at a time.
        - ``clip_grad_norm``: clip the batch's gradient to this total
          ``norm_type``-norm before each step (as ``fastnn.clip_grad_norm``, with the
          factor applied inside the optimizer kernel).
        - ``scheduler``: a learning-rate scheduler on ``optimizer``, stepped once per
          epoch (``scheduler_interval="epoch"``) or per update (``"batch"``).
        - ``callbacks``: :class:`fastnn.Callback` instances such as
          :class:`fastnn.EarlyStopping`.
        - ``progress`` (default True): a progress bar per epoch (tqdm, on stderr) with
          the running loss and the epoch's metrics; False for silence.
        - ``distributed``: a :class:`fastnn.distributed.DataParallel` of this model:
          each MPI rank trains on its share of every global batch and all take the
          update of the whole batch (see :mod:`fastnn.distributed`); only rank 0
          draws the progress bar.
        """
        return training.fit(self, X, y, loss=loss, optimizer=optimizer, epochs=epochs,
                   batch_size=batch_size, micro_batch_size=micro_batch_size,
                   shuffle=shuffle, seed=seed, validation_data=validation_data,
                   validation_split=validation_split, clip_grad_norm=clip_grad_norm,
                   norm_type=norm_type, scheduler=scheduler,
                   scheduler_interval=scheduler_interval, callbacks=callbacks,
                   progress=progress, distributed=distributed)

    def predict(self, X, batch_size=1024):
        """Outputs for ``X`` (samples, in_features; any real array-like, converted once
        to the model's dtype), ``batch_size`` rows at a time: a new NumPy array of
        shape (samples, out_features)."""
        return training.predict(self, X, batch_size=batch_size)

    def evaluate(self, X, y, loss=None, batch_size=1024):
        """``{"loss": ..., "accuracy": ...}`` on (X, y): the mean loss (``loss``: a Loss
        or a name; default the model's, from the last fit or a load) and, for
        classification losses, the accuracy (argmax for cross-entropy, thresholds for
        BCE and hinge)."""
        return training.evaluate(self, X, y, loss=loss, batch_size=batch_size)

    def save(self, path, include_optimizer=True):
        """Write the model to one ``.npz`` file at exactly ``path`` (no ``.npz`` is
        added): architecture and format version as JSON, the weights, the loss (a
        built-in one), and (unless ``include_optimizer`` is False) ``model.optimizer``'s
        state (see :mod:`fastnn.fileformat`).  Atomic: a temporary file renamed into
        place, so a crash never leaves a half-written file under ``path``.  Read it
        back with :func:`fastnn.load` (which never unpickles)."""
        if not isinstance(include_optimizer, (bool, np.bool_)):
            raise TypeError(f"include_optimizer must be True or False, got "
                            f"{include_optimizer!r}")
        path = os.fsdecode(os.fspath(path))
        fileformat.write(path, self._file_arrays(
            self.optimizer if include_optimizer else None))

    def _file_arrays(self, optimizer):
        """name -> array for every member of the model file (metadata included)."""
        loss = getattr(self.loss, "config", lambda: None)()
        meta = {
            "format": fileformat.FORMAT, "version": fileformat.VERSION,
            "fastnn_version": __version__, "backend": self.backend.name,
            "dtype": self.dtype.name, "layers": [layer.config() for layer in self.layers],
            "optimizer": None, "loss": loss,
        }
        arrays = {fileformat.PARAM_PREFIX + p.name: w
                  for p, w in zip(self.parameters(), self.get_weights())}
        if optimizer is not None:
            if getattr(optimizer, "model", None) is not self:
                raise ValueError("model.optimizer belongs to another model; pass "
                                 "include_optimizer=False or set model.optimizer")
            sd = optimizer.state_dict()
            meta["optimizer"] = {"type": sd["type"], "version": sd["version"],
                                 "step": sd["step"], "hyper": sd["hyper"],
                                 "state": list(sd["state"])}
            arrays.update({fileformat.OPTIM_PREFIX + k: v
                           for k, v in sd["state"].items()})
        # load refuses non-finite values; refuse them here so that save never writes a
        # file that cannot be loaded.
        for name, arr in arrays.items():
            if not _checks.all_finite(arr):
                raise ValueError(f"cannot save: {name} contains NaN or inf")
        # allow_nan=False: the hyper-parameters are validated finite; JSON has no NaN.
        text = json.dumps(meta, allow_nan=False)
        arrays[fileformat.METADATA] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        return arrays

    def summary(self, file=None):
        """Print (to ``file``, default stdout) and return a table of the layers: output
        shapes, parameter counts, dtype, backend and parameter memory."""
        rows = [("layer", "activation", "output shape", "parameters")]
        for i, layer in enumerate(self.layers):
            n = layer.in_features * layer.out_features + layer.out_features
            rows.append((f"{i}: Dense({layer.in_features}, {layer.out_features})",
                         layer.activation, f"(batch, {layer.out_features})", f"{n:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        line = "-" * (sum(widths) + 6)

        def fmt(r):
            return "  ".join(s.rjust(w) if c == 3 else s.ljust(w)
                             for c, (s, w) in enumerate(zip(r, widths)))

        nbytes = self.num_parameters * self.dtype.itemsize
        text = "\n".join([fmt(rows[0]), line, *map(fmt, rows[1:]), line,
                          f"parameters: {self.num_parameters:,} ({self.dtype.name}, "
                          f"{nbytes / 2 ** 20:.2f} MiB; gradients as much again)",
                          f"input: (batch, {self.in_features}); backend: "
                          f"{self.backend.name}"])
        print(text, file=file)
        return text

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return (f"Sequential(\n  {inner},\n  backend={self.backend.name!r}, "
                f"dtype={self.dtype.name}, parameters={self.num_parameters})")
