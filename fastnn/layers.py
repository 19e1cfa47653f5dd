"""Dense layers and the Sequential model that owns one flat parameter buffer and one flat
gradient buffer; every Parameter is a view into them."""
import numpy as np

from . import _checks
from .activations import INITS, activation_name, init_name
from .backends import DEFAULT, get_backend


class Parameter:
    """One named tensor of a model: ``data`` and ``grad`` are views of the model's flat
    parameter and gradient buffers (backend arrays)."""
    __slots__ = ("name", "data", "grad", "model")

    def __init__(self, name, data, grad, model):
        self.name, self.data, self.grad, self.model = name, data, grad, model

    @property
    def shape(self):
        """The tensor's shape: (in, out) for a weight, (out,) for a bias."""
        return tuple(self.data.shape)

    @property
    def size(self):
        """The number of values."""
        return int(np.prod(self.data.shape))

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.shape})"


class Dense:
    """A fully connected layer: ``Z = X W + b``, then ``A = activation(Z)``.

    ``weight`` has shape ``(in_features, out_features)`` and ``bias``
    ``(out_features,)``.  ``activation`` is None (linear) or one of
    ``fastnn.ACTIVATIONS``; ``init`` chooses the weight initialisation (default: He
    normal for the relu family, Glorot uniform otherwise); biases start at zero.
    A Dense gets its parameters when a :class:`Sequential` is built from it.
    """

    def __init__(self, in_features, out_features, activation=None, init=None):
        self.in_features = _checks.positive_int(in_features, "in_features")
        self.out_features = _checks.positive_int(out_features, "out_features")
        self.activation = activation_name(activation)
        self.init = init_name(init, self.activation)
        self.weight = None
        self.bias = None

    @property
    def param_shapes(self):
        """Shapes of (weight, bias): ((in_features, out_features), (out_features,))."""
        return ((self.in_features, self.out_features), (self.out_features,))

    def initial_values(self, rng):
        """float64 initial weight and bias, drawn from ``rng``."""
        w = INITS[self.init](rng, self.in_features, self.out_features)
        return w, np.zeros(self.out_features)

    def __repr__(self):
        return (f"Dense({self.in_features}, {self.out_features}, "
                f"activation={self.activation!r}, init={self.init!r})")


class _Workspace:
    """One model's buffers for one batch size, reused between steps, and the plan the
    backends run a whole forward or backward pass from.

    Every layer's Z, A (Z itself for a linear layer: no second buffer, no copy), dL/dZ
    and dL/dX (none for the first layer) are views of ONE flat backend array ``flat``.
    ``table`` (int64, host) holds a row per layer in the column order of
    ``fastnn.kernels.cpu.LAYER_COLUMNS``: in/out features, the weight and bias offsets
    in the flat parameter (and gradient) buffer, the activation's code, and the offsets
    of Z, A, dL/dZ, dL/dX in ``flat`` (-1: none)."""
    __slots__ = ("model", "rows", "flat", "table", "activations", "z", "a", "grad_z",
                 "grad_x", "staged")

    def __init__(self, model, rows):
        from .kernels.cpu import ACTIVATION_CODES, LAYER_COLUMNS, activation_set

        self.model, self.rows = model, rows
        table = np.empty((len(model.layers), LAYER_COLUMNS), dtype=np.int64)
        spans = []                        # (offset, columns) of every buffer, in order
        size = param_offset = 0

        def claim(cols):
            nonlocal size
            spans.append((size, cols))
            size += rows * cols
            return spans[-1][0]

        for i, layer in enumerate(model.layers):
            fin, fout = layer.in_features, layer.out_features
            z = claim(fout)
            a = z if layer.activation == "linear" else claim(fout)
            gz = claim(fout)
            gx = -1 if i == 0 else claim(fin)
            table[i] = (fin, fout, param_offset, param_offset + fin * fout,
                        ACTIVATION_CODES.index(layer.activation), z, a, gz, gx)
            param_offset += fin * fout + fout
        self.table = table
        # derived once here, not on every pass: the key of the compiled passes
        self.activations = activation_set(layer.activation for layer in model.layers)
        self.flat = model.backend.empty((size,), model.dtype)

        def view(offset, cols):
            return self.flat[offset:offset + rows * cols].reshape((rows, cols))

        self.z = [view(t[5], t[1]) for t in table]
        self.a = [view(t[6], t[1]) for t in table]
        self.grad_z = [view(t[7], t[1]) for t in table]
        self.grad_x = [None if t[8] < 0 else view(t[8], t[0]) for t in table]
        self.staged = {}     # a device backend's copies of host inputs, and its views


class Sequential:
    """A stack of Dense layers with one flat parameter buffer and one flat gradient
    buffer.

    ``backend``: ``"cpu"`` (compiled, default), ``"cuda"`` (an NVIDIA GPU: the
    parameters, gradients and optimizer state live in GPU memory) or ``"numpy"``
    (the reference);
    ``dtype``: float32 (default) or float64; ``seed``: seeds the weight initialisation
    (same seed, same weights, on every backend).
    """

    _MAX_WORKSPACES = 4

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
        self.seed = seed
        self.in_features = layers[0].in_features
        self.out_features = layers[-1].out_features

        shapes = [s for layer in layers for s in layer.param_shapes]
        sizes = [int(np.prod(s)) for s in shapes]
        self.num_parameters = sum(sizes)
        # The flat buffers: an optimizer step and zero_grad are one kernel over them.
        self.flat_params = self.backend.empty((self.num_parameters,), self.dtype)
        self.flat_grads = self.backend.empty((self.num_parameters,), self.dtype)
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
        self._workspaces = {}
        self._inputs = None      # the arrays the last forward read, for backward
        self.optimizer = None    # the optimizer and loss of the last fit
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
    def _workspace(self, batch):
        ws = self._workspaces.get(batch)
        if ws is None:
            if len(self._workspaces) >= self._MAX_WORKSPACES:
                self._workspaces.pop(next(iter(self._workspaces)))
            ws = self._workspaces[batch] = _Workspace(self, batch)
        return ws

    def forward(self, x):
        """Outputs for the batch ``x`` (batch, in_features), of the model's dtype.

        Returns the model's output buffer (batch, out_features), a backend array: it
        is overwritten by the next forward with the same batch size; copy it
        (``to_numpy``) to keep it.  ``x`` is read again by :meth:`backward`: do not
        change it in between.  On the cuda backend ``x`` may be a NumPy array (copied
        to the GPU) or a CUDA device array (used in place)."""
        x = self.backend.batch(x, "x", self.dtype, columns=self.in_features)
        ws = self._workspace(x.shape[0])
        x = self.backend.stage(x, ws, "x")
        self.backend.model_forward(ws, x)
        self._inputs = (ws, x)
        return ws.a[-1]

    __call__ = forward

    def backward(self, grad, scale=1.0):
        """Back-propagate ``grad`` = dLoss/dOutput (batch, out_features) of the last
        forward, ADDING ``scale`` times the parameter gradients into ``.grad``.

        With micro-batches of sizes m_i summing to B, ``scale = m_i / B`` (and each
        micro-batch's loss a mean over its own m_i rows) leaves the global-batch mean
        gradient in ``.grad`` after the last one."""
        if self._inputs is None:
            raise RuntimeError("backward called before forward")
        ws, x = self._inputs
        batch = x.shape[0]
        grad = self.backend.batch(grad, "grad", self.dtype, columns=self.out_features)
        if grad.shape[0] != batch:
            raise ValueError(f"grad must have shape ({batch}, {self.out_features}) like "
                             f"the last forward's output, got {tuple(grad.shape)}")
        scale = _checks.real_number(scale, "scale")
        grad = self.backend.stage(grad, ws, "grad")
        self.backend.model_backward(ws, x, grad, scale)

    # -- training ------------------------------------------------------------------
    def fit(self, X, y, *, loss, optimizer, epochs=1, batch_size=32,
            micro_batch_size=None, shuffle=True, seed=None, validation_data=None,
            validation_split=None, clip_grad_norm=None, norm_type=2.0, scheduler=None,
            scheduler_interval="epoch", callbacks=(), progress=True):
        """Train on ``X`` (samples, in_features) and targets ``y``; return a
        :class:`fastnn.History` of per-epoch ``loss`` (and ``accuracy`` for
        classification losses, ``val_loss``/``val_accuracy`` with validation data).

        - ``X``, ``y``: any real array-likes, converted once to the model's dtype
          (class labels for ``"cross_entropy"``: integer-valued, 1-D).  A 1-D ``y`` is
          one column when the model has one output.  NaN/inf, a wrong shape or a label
          out of range raise before anything changes.
        - ``loss``: a Loss or a name in ``fastnn.LOSSES`` (``"cross_entropy"``,
          ``"mse"``, ...); ``optimizer``: an Optimizer of this model (its state
          carries over between fits) or a name in ``fastnn.optim.OPTIMIZERS``
          (``"sgd"``, ``"adam"``, ...: a new one with PyTorch's defaults).  They are
          kept as ``model.loss`` and ``model.optimizer``.
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
        """
        from .training import fit

        return fit(self, X, y, loss=loss, optimizer=optimizer, epochs=epochs,
                   batch_size=batch_size, micro_batch_size=micro_batch_size,
                   shuffle=shuffle, seed=seed, validation_data=validation_data,
                   validation_split=validation_split, clip_grad_norm=clip_grad_norm,
                   norm_type=norm_type, scheduler=scheduler,
                   scheduler_interval=scheduler_interval, callbacks=callbacks,
                   progress=progress)

    def predict(self, X, batch_size=1024):
        """Outputs for ``X`` (samples, in_features; any real array-like, converted once
        to the model's dtype), ``batch_size`` rows at a time: a new NumPy array of
        shape (samples, out_features)."""
        from .training import predict

        return predict(self, X, batch_size=batch_size)

    def evaluate(self, X, y, loss=None, batch_size=1024):
        """``{"loss": ..., "accuracy": ...}`` on (X, y): the mean loss (``loss``: a Loss
        or a name; default the last fit's) and, for classification losses, the
        accuracy (argmax for cross-entropy, thresholds for BCE and hinge)."""
        from .training import evaluate

        return evaluate(self, X, y, loss=loss, batch_size=batch_size)

    def save(self, path, include_optimizer=True):
        """Write the model to one ``.npz`` file at exactly ``path``: architecture and
        format version as JSON, the weights, and (unless ``include_optimizer`` is
        False) ``model.optimizer``'s state.  Atomic: a temporary file renamed into
        place, so a crash never leaves a half-written file under ``path``.  Read it
        back with :func:`fastnn.load` (which never unpickles)."""
        from .io import save

        save(self, path, include_optimizer=include_optimizer)

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
