"""A model's plan for one batch size: where every layer's parameters and intermediate
arrays live, which the backends run a whole forward or backward pass from.

The model owns its plans (``Sequential.plan(rows)``, a few batch sizes kept); the
backends read them and never write into them.
"""
import numpy as np

from .kernels import specs

#: One layer of a plan, as a NumPy record: in/out features, the weight and bias
#: offsets in the flat parameter (and gradient) buffer, the activation's code
#: (``kernels.specs.ACTIVATION_CODES``), and the offsets of Z, A, dL/dZ and dL/dX in the
#: flat workspace (``gx_off`` = -1: none, the first layer).  The Cython passes read the
#: same record (``kernels/_dense.pyx``: struct Layer).
LAYER = np.dtype([(name, np.int64) for name in (
    "fin", "fout", "w_off", "b_off", "act", "z_off", "a_off", "gz_off", "gx_off")])


class Plan:
    """One model's buffers for one batch size (``rows``), reused between steps.

    - ``layers``: a :data:`LAYER` record array, one record per Dense layer;
    - ``workspace``: ONE flat backend array holding every layer's Z, A (Z itself for a
      linear layer: no second buffer, no copy), dL/dZ and dL/dX (none for the first
      layer; none at all in an inference plan, ``training=False``: offsets -1);
    - ``z``, ``a``, ``grad_z``, ``grad_x``: the per-layer views of the workspace, as
      (rows, features) arrays;
    - ``activations``: the distinct activation names the model uses.
    """
    __slots__ = ("model", "rows", "training", "layers", "workspace", "activations",
                 "z", "a", "grad_z", "grad_x", "__weakref__")

    def __init__(self, model, rows, training=True):
        self.model, self.rows, self.training = model, rows, training
        layers = np.empty(len(model.layers), LAYER)
        size = param_offset = 0

        def claim(cols):
            nonlocal size
            size += rows * cols
            return size - rows * cols

        for i, layer in enumerate(model.layers):
            fin, fout = layer.in_features, layer.out_features
            z = claim(fout)
            a = z if layer.activation == "linear" else claim(fout)
            gz = claim(fout) if training else -1
            gx = -1 if i == 0 or not training else claim(fin)
            layers[i] = (fin, fout, param_offset, param_offset + fin * fout,
                         specs.ACTIVATION_CODES[layer.activation], z, a, gz, gx)
            param_offset += fin * fout + fout
        self.layers = layers
        self.activations = tuple(dict.fromkeys(layer.activation
                                               for layer in model.layers))
        self.workspace = model.backend.empty((size,), model.dtype)

        def view(offset, cols):
            return self.workspace[offset:offset + rows * cols].reshape((rows, cols))

        self.z = [view(L["z_off"], L["fout"]) for L in layers]
        # a linear layer's A is its Z: the same view object
        self.a = [z if L["a_off"] == L["z_off"] else view(L["a_off"], L["fout"])
                  for z, L in zip(self.z, layers)]
        self.grad_z = [None if L["gz_off"] < 0 else view(L["gz_off"], L["fout"])
                       for L in layers]
        self.grad_x = [None if L["gx_off"] < 0 else view(L["gx_off"], L["fin"])
                       for L in layers]

    def __repr__(self):
        return (f"Plan(rows={self.rows}, layers={len(self.layers)}, "
                f"workspace={self.workspace.shape[0]} values"
                f"{'' if self.training else ', inference'})")
