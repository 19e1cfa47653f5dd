"""The reference backend: plain vectorised NumPy, written independently of the compiled
formulas so that the two check each other.  float64 here is the spec.

Its tables hold one NumPy implementation per registry entry (``fastnn.kernels.specs``):
a name missing here (or here but not in the registry) stops this module from loading,
saying which."""
import numpy as np

from ..kernels import specs
from .base import Backend


def erf(x):
    # scipy.special is imported on first use: ~0.05 s of every cold start otherwise
    # (the cpu backend subclasses this one).
    from scipy.special import erf as scipy_erf

    return scipy_erf(x)


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1, e) / (1 + e)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _gelu_df(z, a):
    return 0.5 * (1 + erf(z / np.sqrt(2))) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


def _silu_df(z, a):
    s = _sigmoid(z)
    return s * (1 + z * (1 - s))


def _elementwise(df):
    """The backward of an elementwise activation: grad_a * f'(z, a)."""
    return lambda z, a, grad_a: grad_a * df(z, a)


def _softmax_backward(z, a, grad_a):
    # a row function: the Jacobian-vector product a * (grad_a - <grad_a, a>)
    return a * (grad_a - (grad_a * a).sum(axis=1, keepdims=True))


# activation name -> (f(z), backward(z, a, grad_a) -> grad_z)
REFERENCE_ACTIVATIONS = {
    "linear": (lambda z: z, lambda z, a, ga: ga * 1),
    # f' at NaN: 1 for relu and elu, the slope for leaky_relu, as PyTorch's backward
    # (it tests z <= 0); NaN in the forward pass stays NaN (np.maximum keeps it).
    "relu": (lambda z: np.maximum(z, 0),
             _elementwise(lambda z, a: (~(z <= 0)).astype(z.dtype))),
    "leaky_relu": (lambda z: np.where(z > 0, z, 0.01 * z),
                   _elementwise(lambda z, a: np.where(z > 0, 1, 0.01))),
    "elu": (lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
            _elementwise(lambda z, a: np.where(z <= 0, a + 1, 1))),
    "sigmoid": (_sigmoid, _elementwise(lambda z, a: a * (1 - a))),
    "tanh": (np.tanh, _elementwise(lambda z, a: 1 - a * a)),
    "gelu": (lambda z: 0.5 * z * (1 + erf(z / np.sqrt(2))), _elementwise(_gelu_df)),
    "silu": (lambda z: z * _sigmoid(z), _elementwise(_silu_df)),
    "softplus": (lambda z: np.logaddexp(0, z), _elementwise(lambda z, a: _sigmoid(z))),
    "softmax": (_softmax, _softmax_backward),
}


def _xlogy(t):
    return np.where(t > 0, t * np.log(np.where(t > 0, t, 1)), 0)


def _log_softmax(z):
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def _huber(o, t, delta):
    d = o - t
    small = np.abs(d) < delta
    return (np.where(small, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta)),
            np.where(small, d, delta * np.sign(d)))


def _bce(o, t, delta):
    with np.errstate(divide="ignore"):
        lp = np.maximum(np.log(o), -100)
        lq = np.maximum(np.log(1 - o), -100)
    return -(t * lp + (1 - t) * lq), (o - t) / np.maximum((1 - o) * o, 1e-12)


def _ce_labels(z, y, param):
    ls = _log_softmax(z)
    rows = np.arange(z.shape[0])
    grad = np.exp(ls)
    grad[rows, y] -= 1
    return -ls[rows, y], grad


def _ce_probs(z, t, param):
    ls = _log_softmax(z)
    return -(t * ls).sum(axis=1), np.exp(ls) * t.sum(axis=1, keepdims=True) - t


# loss kernel name -> (terms, d terms / d out) given (out, target, param);
# value = sum(terms) * norm
REFERENCE_LOSSES = {
    "mse": lambda o, t, p: ((o - t) ** 2, 2 * (o - t)),
    # the gradient at NaN is 0: PyTorch's sign(NaN) (the value is NaN)
    "l1": lambda o, t, p: (np.abs(o - t), np.nan_to_num(np.sign(o - t), nan=0.0)),
    "huber": _huber,
    "bce": _bce,
    "bce_with_logits": lambda o, t, p: (np.maximum(o, 0) - o * t
                                        + np.log1p(np.exp(-np.abs(o))), _sigmoid(o) - t),
    "hinge": lambda o, t, p: (np.maximum(0, 1 - t * o), np.where(1 - t * o > 0, -t, 0)),
    "kl_div": lambda o, t, p: (_xlogy(t) - t * o, -t),
    "cross_entropy": _ce_labels,
    "cross_entropy_probs": _ce_probs,
}


# Optimizer rules, vectorised and in place: (p, g, *state, h), the state buffers in the
# rule's order and h its named tuple of scalars (fastnn.kernels.specs).  Written from
# PyTorch's documented algorithms, as a sequence of whole-array passes.
def _decayed(p, g, h):
    # PyTorch adds weight decay only when it is not 0: 0 * inf would make an inf
    # weight NaN
    return h.sign * g + h.l2 * p if h.l2 != 0 else h.sign * g


def _sgd(p, g, h):
    p -= h.lr * _decayed(p, g, h)


def _sgd_momentum(p, g, buf, h):
    d = _decayed(p, g, h)
    buf *= h.mu
    buf += h.c * d
    # heavy ball (n_d = 0) steps by buf alone, as PyTorch (0 * inf would be NaN)
    p -= h.lr * (h.n_b * buf if h.n_d == 0 else h.n_d * d + h.n_b * buf)


def _adagrad(p, g, acc, h):
    d = _decayed(p, g, h)
    acc += d * d
    p -= h.clr * d / (np.sqrt(acc) + h.eps)


def _rmsprop(p, g, sq, grad_avg, buf, h):
    d = _decayed(p, g, h)
    sq *= h.alpha
    sq += h.c * d * d
    var = sq
    if grad_avg is not None:
        grad_avg += h.c * (d - grad_avg)
        # PyTorch's addcmul is a fused multiply-add: an overflowed (inf) square_avg
        # stays inf even where grad_avg^2 alone would overflow (float32 gradients of
        # 1e30), so the step is 0 instead of NaN
        with np.errstate(over="ignore", invalid="ignore"):
            var = np.where(np.isposinf(sq) & np.isfinite(grad_avg), sq,
                           sq - grad_avg * grad_avg)
    step = d / (np.sqrt(var) + h.eps)
    if buf is not None:
        buf *= h.mu
        buf += step
        step = buf
    p -= h.lr * step


def _adadelta(p, g, sq, acc_delta, h):
    d = _decayed(p, g, h)
    sq *= h.rho
    sq += h.c * d * d
    delta = np.sqrt(acc_delta + h.eps) / np.sqrt(sq + h.eps) * d
    acc_delta *= h.rho
    acc_delta += h.c * delta * delta
    p -= h.lr * delta


def _adam(p, g, m, v, vmax, h):
    d = _decayed(p, g, h)
    m += h.c1 * (d - m)
    v *= h.b2
    v += h.c2 * d * d
    if vmax is not None:
        np.maximum(vmax, v, out=vmax)
    denom = np.sqrt(v if vmax is None else vmax) / h.bc2_sqrt + h.eps
    p *= h.decay
    p -= h.step_size * (m / denom)


# update rule name -> f(p, g, *state, h), in place
REFERENCE_RULES = {
    "sgd": _sgd,
    "sgd_momentum": _sgd_momentum,
    "adagrad": _adagrad,
    "rmsprop": lambda p, g, sq, h: _rmsprop(p, g, sq, None, None, h),
    "rmsprop_centered": lambda p, g, sq, ga, h: _rmsprop(p, g, sq, ga, None, h),
    "rmsprop_momentum": lambda p, g, sq, b, h: _rmsprop(p, g, sq, None, b, h),
    "rmsprop_centered_momentum": _rmsprop,
    "adadelta": _adadelta,
    "adam": lambda p, g, m, v, h: _adam(p, g, m, v, None, h),
    "adam_amsgrad": _adam,
}


def _complete(table, registry, what):
    """Stop here, naming them, if the reference lacks a registry entry or has extra."""
    missing, extra = set(registry) - set(table), set(table) - set(registry)
    if missing or extra:
        raise ImportError(f"the NumPy reference's {what} do not match the registry "
                          f"(fastnn/kernels/specs.py): missing {sorted(missing)}, not in "
                          f"the registry {sorted(extra)}")


_complete(REFERENCE_ACTIVATIONS, specs.ACTIVATIONS, "activations")
_complete(REFERENCE_LOSSES, specs.LOSS_KERNELS, "loss kernels")
_complete(REFERENCE_RULES, specs.UPDATE_RULES, "update rules")


class NumpyBackend(Backend):
    name = "numpy"

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def from_numpy(self, array, out=None):
        if out is None:
            return np.array(array, copy=True)
        out[...] = array
        return out

    def to_numpy(self, array):
        return np.array(array, copy=True)

    def copy(self, array):
        return array.copy()

    def fill(self, buf, value):
        buf.fill(value)

    def dense_forward(self, x, w, b, z):
        np.matmul(x, w, out=z)
        z += b

    def dense_backward(self, x, w, grad_z, grad_w, grad_x, scale):
        grad_w += (scale * (x.T @ grad_z)).astype(grad_w.dtype, copy=False)
        if grad_x is not None:
            np.matmul(grad_z, w.T, out=grad_x)

    def activation_forward(self, name, z, a):
        a[...] = REFERENCE_ACTIVATIONS[name][0](z)

    def activation_backward(self, name, z, a, grad_a, grad_z, grad_b, scale):
        grad_z[...] = REFERENCE_ACTIVATIONS[name][1](z, a, grad_a)
        grad_b += (scale * grad_z.sum(axis=0)).astype(grad_b.dtype, copy=False)

    def loss(self, name, out, target, grad, param, norm):
        terms, d = REFERENCE_LOSSES[name](out, target, param)
        grad[...] = d * norm
        return float(np.sum(terms, dtype=np.float64) * norm)

    def optimizer_step(self, name, params, grads, state, hyper):
        self.check_step_buffers(params, grads, state)
        REFERENCE_RULES[name](params, grads, *state, hyper)

    def vector_norm(self, buf, order):
        return float(np.linalg.norm(buf.astype(np.float64), ord=order))

    def scale(self, buf, factor):
        buf *= buf.dtype.type(factor)
