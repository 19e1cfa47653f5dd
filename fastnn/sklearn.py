"""scikit-learn's ``MLPClassifier`` and ``MLPRegressor``, trained by fastnn's kernels.

Change one import line::

    from fastnn.sklearn import MLPClassifier     # was: from sklearn.neural_network ...

and an existing script, ``Pipeline``, ``GridSearchCV`` or ``joblib.dump`` keeps working:
the same constructor parameters with the same names, defaults and meanings, the same
methods and fitted attributes, the same warnings and errors.  fastnn's own parameters
come after scikit-learn's: ``backend`` ("cpu" by default), ``dtype`` (float64 by
default, as scikit-learn; ``np.float32`` on request: X is then rounded to float32, which
is what was asked for) and ``micro_batch_size`` (each batch's gradient accumulated over
micro-batches of at most this many rows: the same update, less memory).

What runs where: the forward and backward passes are the model's compiled whole-model
passes, the loss and its gradient fastnn's fused loss kernels (cross-entropy on the
logits for softmax outputs, BCE-with-logits for logistic ones, MSE for identity ones;
a NumPy expression with sample weights or the Poisson loss), and the update fastnn's
fused optimizer kernel, with scikit-learn's L2 term (``alpha``) as the update rule's
weight decay, so the penalty's gradient is added inside the update kernel, on the
weights only.  The L-BFGS solver is scipy's ``L-BFGS-B`` on the model's flat parameter
buffer, as scikit-learn's.

The same initial weights as scikit-learn for the same ``random_state`` (the same draws
from the same generator), the same batches (the same shuffles), the same stopping
rules.  Where fastnn deliberately differs (documented in the README, section
"scikit-learn estimators"): the log-loss value of the fused kernels is not clipped at
probability eps (the gradient never was, in either).  Adam's epsilon and SGD's momentum
buffer are converted to PyTorch's conventions step by step, so that the steps are
scikit-learn's.
"""
import math
import numbers
import warnings

import numpy as np

try:
    import scipy.optimize
    import scipy.sparse
    import scipy.special
    from sklearn.base import (BaseEstimator, ClassifierMixin, RegressorMixin,
                              is_classifier)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as _SkClassifier
    from sklearn.neural_network import MLPRegressor as _SkRegressor
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state
    from sklearn.utils._param_validation import Interval, StrOptions
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import (_check_partial_fit_first_call,
                                          type_of_target, unique_labels)
    from sklearn.utils.validation import (_check_sample_weight, check_is_fitted,
                                          column_or_1d, validate_data)
except ImportError as exc:      # pragma: no cover - exercised in a bare environment
    raise ImportError(
        "fastnn.sklearn needs scikit-learn >= 1.6 (and scipy): install them with "
        "pip install 'fastnn[sklearn]'") from exc

from .layers import Dense
from .model import Sequential
from .optim import SGD, Adam

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names -> fastnn's
_ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid", "tanh": "tanh",
                "relu": "relu"}
_DTYPES = (np.float32, np.float64)


# ---- the output layer: link, loss and the factors that make them scikit-learn's ---
def _softmax(z):
    return scipy.special.softmax(z, axis=1)


# out_activation_ -> (inverse link applied to the logits, fastnn loss name, value factor,
# gradient factor as functions of the output count k).  scikit-learn's losses are
# log-loss summed over classes / the mean over samples (= fastnn's cross-entropy),
# binary log-loss summed over outputs (= k x fastnn's element mean) and half the
# squared error's element mean; its gradient is (prediction - y) / n_samples for all
# three (not the reported loss's gradient when k > 1: kept, so training is the same).
_OUTPUTS = {
    "softmax": (_softmax, "cross_entropy", lambda k: 1.0, lambda k: 1.0),
    "logistic": (scipy.special.expit, "bce_with_logits", lambda k: float(k),
                 lambda k: float(k)),
    "identity": (lambda z: z, "mse", lambda k: 0.5, lambda k: 0.5 * k),
    "exp": (np.exp, None, None, None),      # Poisson: always the NumPy expression
}


def _numpy_loss(out_activation, y, prob, sample_weight):
    """scikit-learn's loss value for predictions ``prob`` (n, k) against ``y``."""
    if out_activation == "identity":
        return 0.5 * np.average((y - prob) ** 2, weights=sample_weight, axis=0).mean()
    if out_activation == "exp":
        return np.average(scipy.special.xlogy(y, y / prob) - y + prob,
                          weights=sample_weight, axis=0).sum()
    eps = np.finfo(prob.dtype).eps
    p = np.clip(prob, eps, 1 - eps)
    if out_activation == "logistic":
        terms = scipy.special.xlogy(y, p) + scipy.special.xlogy(1 - y, 1 - p)
        return -np.average(terms, weights=sample_weight, axis=0).sum()
    return -np.average(scipy.special.xlogy(y, p), weights=sample_weight, axis=0).sum()


def _solver_is_stochastic(self):
    if self.solver not in ("sgd", "adam"):
        raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                             f"{self.solver} is not stochastic.")
    return True


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share: the model, the three solvers, the
    stopping rules and the fitted attributes."""

    _parameter_constraints = {
        **_SkClassifier._parameter_constraints,
        "backend": [StrOptions({"cpu", "numpy", "cuda"})],
        "dtype": "no_validation",                       # checked in _model_dtype
        "micro_batch_size": [None, Interval(numbers.Integral, 1, None, closed="left")],
    }

    def _keep_arguments(self, arguments):
        """Each of ``__init__``'s arguments as the attribute of its name, unchanged
        (scikit-learn's rule: no logic in ``__init__``)."""
        for name, value in arguments.items():
            if name != "self":
                setattr(self, name, value)

    def _score(self, X, y, sample_weight=None):
        """The validation score early stopping watches: :meth:`score` (accuracy, or
        R^2), as scikit-learn's."""
        return self.score(X, y, sample_weight=sample_weight)

    # -- the model -----------------------------------------------------------------
    def _model_dtype(self):
        try:
            dt = np.dtype(self.dtype)
        except TypeError:
            dt = None
        if dt is None or dt.type not in _DTYPES:
            raise ValueError(f"dtype must be np.float32 or np.float64, got {self.dtype!r}")
        return dt

    def _build_model(self, layer_units, dtype):
        """The fastnn model of these layer sizes: hidden layers with the activation,
        a linear output layer (the output activation is the loss's link)."""
        act = _ACTIVATIONS[self.activation]
        last = len(layer_units) - 2
        layers = [Dense(a, b, activation=act if i < last else None)
                  for i, (a, b) in enumerate(zip(layer_units[:-1], layer_units[1:]))]
        self._model = Sequential(*layers, backend=self.backend, dtype=dtype, seed=0)
        self._optimizer = None
        self._losses = {}
        self._l2_mask = None
        return self._model

    def _initialize(self, y, layer_units, dtype):
        """Build the model with scikit-learn's initial weights (the same draws from
        self._random_state: Glorot-uniform, factor 2 for logistic, 6 otherwise)."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._out_activation()
        model = self._build_model(layer_units, dtype)
        factor = 2.0 if self.activation == "logistic" else 6.0
        weights = []
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            coef = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = self._random_state.uniform(-bound, bound, fan_out)
            # the draws are float64; a float32 model asked for float32 weights
            weights += [coef.astype(dtype), intercept.astype(dtype)]
        model.set_weights(weights)
        if self.solver in ("sgd", "adam"):
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    @property
    def coefs_(self):
        """The weight matrices (n_in, n_out) of each layer: views of the model's
        parameters on the cpu and numpy backends (writing them writes the model), NumPy
        copies on the cuda backend."""
        check_is_fitted(self, "_model")
        return self._params()[0::2]

    @coefs_.setter
    def coefs_(self, coefs):
        self._set_params(coefs, 0, "coefs_")

    @property
    def intercepts_(self):
        """The bias vector of each layer (views or copies, as :attr:`coefs_`)."""
        check_is_fitted(self, "_model")
        return self._params()[1::2]

    @intercepts_.setter
    def intercepts_(self, intercepts):
        self._set_params(intercepts, 1, "intercepts_")

    def _params(self):
        m = self._model
        if isinstance(m.flat_params, np.ndarray):
            return [p.data for p in m.parameters()]
        return m.get_weights()

    def _set_params(self, arrays, start, name):
        check_is_fitted(self, "_model")
        weights = self._model.get_weights()
        arrays = list(arrays)
        if len(arrays) != len(weights) // 2:
            raise ValueError(f"{name} must be a list of {len(weights) // 2} arrays, got "
                             f"{len(arrays)}")
        weights[start::2] = arrays
        self._model.set_weights(weights)        # exact casts only; shapes checked

    # -- data ----------------------------------------------------------------------
    def _batch(self, X, rows):
        x = X[rows]
        if scipy.sparse.issparse(x):
            x = x.toarray()
        return np.ascontiguousarray(x, dtype=self._model.dtype)

    def _logits(self, X):
        """The model's outputs before the output activation, float64, for all of X."""
        check_is_fitted(self, "_model")
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False,
                          dtype=(np.float64, np.float32))
        n = X.shape[0]
        out = np.empty((n, self.n_outputs_), np.float64)
        step = 4096
        for lo in range(0, n, step):
            rows = slice(lo, min(lo + step, n))
            out[rows] = self._model.predict(self._batch(X, rows))
        return out

    def _forward_pass_fast(self, X):
        """The predictions after the output activation (scikit-learn's name)."""
        logits = self._logits(X)
        return _OUTPUTS[self.out_activation_][0](logits)

    # -- fitting -------------------------------------------------------------------
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        if not hasattr(sizes, "__iter__"):
            sizes = [sizes]
        sizes = list(sizes)
        if np.any(np.array(sizes) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        return sizes

    def _fit(self, X, y, sample_weight=None, incremental=False):
        self._validate_params()
        dtype = self._model_dtype()
        hidden = self._hidden_sizes()
        first_pass = not hasattr(self, "_model") or (not self.warm_start and
                                                     not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        layer_units = [X.shape[1]] + hidden + [y.shape[1]]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, dtype)
        elif self._model.dtype != dtype:
            raise ValueError(f"dtype={np.dtype(self.dtype)} differs from the fitted "
                             f"model's {self._model.dtype}: fit again without warm_start")
        y = np.asarray(y, np.float64)
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, y, sample_weight)
        else:
            self._fit_stochastic(X, y, sample_weight, incremental)
        if not all(np.isfinite(w).all() for w in self._model.get_weights()):
            raise ValueError("Solver produced non-finite parameter weights. The input "
                             "data may contain large values and need to be "
                             "preprocessed.")
        return self

    # -- one batch -------------------------------------------------------------------
    def _prepare(self, X, y):
        """X in the model's dtype (dense X converted once, not per batch; a float32
        model was asked to round it), y as float64 (n, k) and the loss kernels'
        target: class labels for softmax outputs, y in the model's dtype else."""
        dt = self._model.dtype
        if not scipy.sparse.issparse(X):
            X = np.ascontiguousarray(X, dtype=dt)
        target = y.argmax(axis=1) if self.out_activation_ == "softmax" else \
            np.ascontiguousarray(y, dt)
        return X, y, target

    def _start_gradient(self, c):
        """Set the gradients to scikit-learn's L2 term: c W on the weights (c = alpha
        over the batch's size or weight), 0 on the biases, in one pass over the flat
        buffers (a cached mask times the parameters); the backward pass then adds the
        loss's gradient on top.  Returns c sum(W^2), twice the penalty's value."""
        m = self._model
        if c == 0.0:
            m.zero_grad()
            return 0.0
        cached = getattr(self, "_l2_mask", None)
        if cached is None or cached[0] != c or cached[1].dtype != m.dtype:
            mask = np.concatenate([np.full(p.size, c if i % 2 == 0 else 0.0, m.dtype)
                                   for i, p in enumerate(m.parameters())])
            self._l2_mask = cached = (c, mask)
        params = m.flat_params
        if isinstance(params, np.ndarray):
            grads = m.flat_grads
            np.multiply(params, cached[1], out=grads)
        else:
            params = m.to_numpy(params)                 # (cuda: one round trip)
            grads = params * cached[1]
            m.backend.from_numpy(grads, out=m.flat_grads)
        # sum(grads * params) by NumPy's own loops, not np.dot: that is numpy's BLAS,
        # whose threads would wake (float64, > 10^4 values) and then spin against the
        # BLAS fastnn's GEMMs run on (a 100-256-128-4 step went 0.8 -> 8 ms)
        return float(np.einsum("i,i->", grads, params))

    def _batch_gradient(self, data, rows, sample_weight, sw_sum, opt=None):
        """Add the gradient of the batch ``rows`` (mean over its rows, or weighted by
        sample_weight / sw_sum) onto the model's gradients, in micro-batches; with
        ``opt``, take its step after the last.  Returns the batch's loss (without the
        L2 term).  Without sample weights and with a fused loss each micro-batch is
        one compiled call (the model's training step without the zeroing: the
        gradients start at the L2 term); else the forward and backward passes around
        scikit-learn's loss expression in NumPy."""
        model = self._model
        X, y, target = data
        n = len(rows)
        micro = self.micro_batch_size or n
        link, name, vf, gf = _OUTPUTS[self.out_activation_]
        fused = name is not None and sample_weight is None
        if fused:
            loss_fn = self._losses.get(name)
            if loss_fn is None:
                from .losses import get_loss
                loss_fn = self._losses[name] = get_loss(name)
            k = self.n_outputs_
            vf, gf = vf(k), gf(k)
            one_call = opt is not None and model._one_call(loss_fn, opt)
        total = 0.0
        for lo in range(0, n, micro):
            part = rows[lo:lo + micro]
            last = lo + micro >= n
            m = len(part)
            xb = self._batch(X, part)
            if fused and one_call:
                plan, xs = model._staged(xb)
                b = model.backend
                kernel, tb = loss_fn.staged_target(b, target[part], (m, k), model.dtype,
                                                   not b.checks_labels)
                value = model._step_call(plan, xs, kernel, tb, loss_fn, gf * m / n,
                                         False, opt if last else None)
                total += vf * value * m / n
                continue
            out = model.forward(xb, copy=False)
            if fused:
                total += vf * loss_fn.forward(out, target[part]) * m / n
                model.backward(loss_fn.backward(), scale=gf * m / n)
            else:
                prob = link(model.to_numpy(out).astype(np.float64))
                yb = y[part]
                sw = None if sample_weight is None else sample_weight[part]
                wsum = m if sw is None else sw.sum()
                if wsum > 0:
                    total += _numpy_loss(self.out_activation_, yb, prob, sw) * wsum / sw_sum
                delta = prob - yb
                if sw is not None:
                    delta *= sw.reshape(-1, 1)
                model.backward((delta / sw_sum).astype(model.dtype))
            if last and opt is not None:
                opt.step()
        return total

    def _make_optimizer(self):
        """One fastnn optimizer over every parameter, without weight decay: the L2
        term is in the gradient already (:meth:`_start_gradient`), so Adam sees it
        as scikit-learn's does."""
        params = self._model.parameters()
        if self.solver == "sgd":
            return SGD(params, lr=self.learning_rate_init, momentum=self.momentum,
                       nesterov=self.nesterovs_momentum and self.momentum > 0)
        return Adam(params, lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2),
                    eps=self.epsilon)

    def _fit_stochastic(self, X, y, sample_weight, incremental):
        if not incremental or self._optimizer is None:
            self._optimizer = self._make_optimizer()
            self._lr = float(self.learning_rate_init)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        X_val = y_val = sw_val = None
        if early_stopping:
            stratify = y if is_classifier(self) and self.n_outputs_ == 1 else None
            parts = [X, y] + ([] if sample_weight is None else [sample_weight])
            split = train_test_split(*parts, random_state=self._random_state,
                                     test_size=self.validation_fraction,
                                     stratify=stratify)
            X, X_val, y, y_val = split[:4]
            if sample_weight is not None:
                sample_weight, sw_val = split[4:]
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
        n_samples = X.shape[0]
        sample_idx = np.arange(n_samples, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                              "It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        data = self._prepare(X, y)
        opt = self._optimizer
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:
                    # scikit-learn's shuffle(sample_idx, random_state=...), the same
                    # draw without its per-call parameter validation (~250 us here)
                    order = np.arange(n_samples)
                    self._random_state.shuffle(order)
                    sample_idx = sample_idx[order]
                accumulated = 0.0
                for lo in range(0, n_samples, batch_size):     # gen_batches'
                    rows = sample_idx[lo:lo + batch_size]
                    sw_sum = len(rows) if sample_weight is None else \
                        sample_weight[rows].sum()
                    opt.lr = self._lr
                    if self.solver == "adam":
                        # scikit-learn adds epsilon to sqrt(v), fastnn (PyTorch) to the
                        # bias-corrected sqrt(v / (1 - beta_2^t)): the same step with
                        # epsilon scaled so
                        t = opt.step_count + 1
                        opt.eps = self.epsilon / math.sqrt(1.0 - self.beta_2 ** t)
                    loss = 0.5 * self._start_gradient(self.alpha / sw_sum)
                    loss += self._batch_gradient(data, rows, sample_weight, sw_sum, opt)
                    # each batch's (weighted mean) loss weighted by its rows, as
                    # scikit-learn's loss_
                    accumulated += loss * len(rows)
                self.n_iter_ += 1
                self.loss_ = accumulated / n_samples
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                self._update_no_improvement_count(early_stopping, X_val, y_val, sw_val)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._set_lr(self.learning_rate_init / (self.t_ + 1) ** self.power_t)
                if self._no_improvement_count > self.n_iter_no_change:
                    what = "Validation score" if early_stopping else "Training loss"
                    msg = (f"{what} did not improve more than tol={self.tol:f} for "
                           f"{self.n_iter_no_change} consecutive epochs.")
                    if self._trigger_stopping(msg):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(f"Stochastic Optimizer: Maximum iterations "
                                  f"({self.max_iter}) reached and the optimization "
                                  f"hasn't converged yet.", ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if early_stopping and getattr(self, "_best_weights", None) is not None:
            self._model.set_weights(self._best_weights)
            self._best_weights = None

    def _set_lr(self, lr):
        """A new SGD learning rate.  scikit-learn's momentum buffer is a velocity (the
        learning rate inside it), fastnn's (PyTorch's) a sum of gradients (the
        learning rate applied at each step): scaling the buffer by old / new keeps the
        next steps scikit-learn's exactly."""
        buf = self._optimizer.state.get("momentum_buffer")
        if buf is not None:
            ratio = self._lr / lr
            if isinstance(buf, np.ndarray):
                buf *= ratio
            else:
                be = self._model.backend
                be.from_numpy(be.to_numpy(buf) * ratio, out=buf)
        self._lr = lr

    def _trigger_stopping(self, msg):
        """scikit-learn's rule: stop, except that SGD's adaptive learning rate is
        divided by 5 first, until it is below 1e-6."""
        if self.solver == "sgd" and self.learning_rate == "adaptive":
            if self._lr > 1e-6:
                self._set_lr(self._lr / 5.0)
                if self.verbose:
                    print(msg + f" Setting learning rate to {self._lr:f}")
                return False
        if self.verbose:
            print(msg + " Learning rate too small. Stopping." if self.solver == "sgd"
                  and self.learning_rate == "adaptive" else msg + " Stopping.")
        return True

    def _update_no_improvement_count(self, early_stopping, X_val, y_val, sw_val):
        if early_stopping:
            self.validation_scores_.append(self._score(X_val, y_val, sw_val))
            if self.verbose:
                print(f"Validation score: {self.validation_scores_[-1]:f}")
            last = self.validation_scores_[-1]
            if last < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last > self.best_validation_score_:
                self.best_validation_score_ = last
                self._best_weights = self._model.get_weights()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _fit_lbfgs(self, X, y, sample_weight):
        model = self._model
        data = self._prepare(X, y)
        rows = np.arange(X.shape[0])
        sw_sum = X.shape[0] if sample_weight is None else sample_weight.sum()
        flat = model.flat_params

        def loss_grad(packed):
            # the float64 point of L-BFGS-B as the model's parameters (rounded to a
            # float32 model's dtype: what it was asked to train in)
            model.backend.from_numpy(packed.astype(model.dtype), out=flat)
            loss = 0.5 * self._start_gradient(self.alpha / sw_sum)
            loss += self._batch_gradient(data, rows, sample_weight, sw_sum)
            return loss, model.to_numpy(model.flat_grads).astype(np.float64)

        iprint = 1 if self.verbose is True else (self.verbose if self.verbose else -1)
        options = {"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol}
        if iprint > 0:
            options["disp"] = True
        result = scipy.optimize.minimize(
            loss_grad, model.to_numpy(flat).astype(np.float64), method="L-BFGS-B",
            jac=True, options=options)
        if not result.success:
            warnings.warn(f"lbfgs failed to converge after {result.nit} iteration(s) "
                          f"(status={result.status}):\n{result.message}.\n\n"
                          f"Increase the number of iterations to improve the "
                          f"convergence (max_iter={self.max_iter}).\n",
                          ConvergenceWarning)
        self.n_iter_ = min(int(result.nit), self.max_iter)
        self.loss_ = float(result.fun)
        model.backend.from_numpy(result.x.astype(model.dtype), out=flat)

    # -- state ----------------------------------------------------------------------
    def __getstate__(self):
        """Pickle the estimator, not the compiled model: the model's layer sizes and
        weights, and the optimizer's state buffers, step counter and learning rate."""
        state = dict(self.__dict__)
        state.pop("_losses", None)
        state.pop("_l2_mask", None)
        model = state.pop("_model", None)
        opt = state.pop("_optimizer", None)
        if model is not None:
            state["_model_spec"] = dict(
                units=[model.in_features] + [layer.out_features for layer in model.layers],
                dtype=model.dtype.str, weights=model.get_weights())
            state["_optimizer_spec"] = None if opt is None else dict(
                state={k: model.to_numpy(v) for k, v in opt.state.items()},
                step_count=opt.step_count, lr=opt.lr)
        return state

    def __setstate__(self, state):
        spec = state.pop("_model_spec", None)
        opt_spec = state.pop("_optimizer_spec", None)
        self.__dict__.update(state)
        if spec is None:
            return
        self._build_model(spec["units"], np.dtype(spec["dtype"]))
        self._model.set_weights(spec["weights"])
        if opt_spec is not None:
            opt = self._optimizer = self._make_optimizer()
            for k, v in opt_spec["state"].items():
                self._model.backend.from_numpy(v, out=opt.state[k])
            opt.step_count = opt_spec["step_count"]
            opt.lr = opt_spec["lr"]


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """scikit-learn's ``MLPClassifier`` (same parameters, methods and attributes),
    trained by fastnn's compiled kernels; see the module docstring."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, backend="cpu", dtype=np.float64,
                 micro_batch_size=None):
        self._keep_arguments(locals())

    def _out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        # fit, or a warm start / partial_fit's first call that did not set the labels
        if (not incremental and (not self.warm_start or not hasattr(self, "classes_"))) \
                or not hasattr(self, "_label_binarizer"):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start and not incremental:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        f"warm_start can only be used where `y` has the same classes "
                        f"as in the previous call to fit. Previously got "
                        f"{self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. "
                                 f"`self.classes_` has {self.classes_}. 'y' has "
                                 f"{classes}.")
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y

    def fit(self, X, y, sample_weight=None):
        """Fit the model to X and the labels y (as scikit-learn's)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(_solver_is_stochastic)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y); ``classes`` is required on the first call."""
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predicted class labels (or label indicators for multilabel y)."""
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def predict_proba(self, X):
        """Class probabilities, (n_samples, n_classes)."""
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X):
        """log of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.input_tags.sparse = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """scikit-learn's ``MLPRegressor`` (same parameters, methods and attributes,
    ``loss`` 'squared_error' or 'poisson'), trained by fastnn's compiled kernels."""

    _parameter_constraints = {
        **_BaseMLP._parameter_constraints,
        **{k: v for k, v in _SkRegressor._parameter_constraints.items()
           if k not in _BaseMLP._parameter_constraints or k == "loss"},
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,),
                 activation="relu", *, solver="adam", alpha=0.0001, batch_size="auto",
                 learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4,
                 verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 max_fun=15000, backend="cpu", dtype=np.float64, micro_batch_size=None):
        self._keep_arguments(locals())

    def _out_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(np.asarray(y) < 0):
            raise ValueError("Some value(s) of y are negative which is not allowed for "
                             "Poisson regression.")
        return X, y

    def fit(self, X, y, sample_weight=None):
        """Fit the model to X and the targets y (as scikit-learn's)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(_solver_is_stochastic)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predicted targets, (n_samples,) or (n_samples, n_outputs)."""
        y_pred = self._forward_pass_fast(X)
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
