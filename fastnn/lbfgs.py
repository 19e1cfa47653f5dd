"""L-BFGS, the limited-memory quasi-Newton method, for the layer API.

PyTorch's contract: ``opt = fn.LBFGS(model.parameters(), ...)`` and ``opt.step(closure)``
where ``closure()`` zeroes the gradients, computes the loss, back-propagates and returns
the loss; one ``step`` runs up to ``max_iter`` iterations (each one or more closure
calls) and returns the loss of the first call.  The same arguments and defaults as
``torch.optim.LBFGS`` (``lr=1``, ``max_iter=20``, ``max_eval=max_iter * 5 // 4``,
``tolerance_grad=1e-7``, ``tolerance_change=1e-9``, ``history_size=100``,
``line_search_fn=None`` or ``"strong_wolfe"``) and the same stopping rules, so a
PyTorch script ports line for line.

The method (Nocedal and Wright, *Numerical Optimization*, 2nd ed.): the search
direction is the two-loop recursion over the last ``history_size`` pairs
s = x_{k+1} - x_k, y = g_{k+1} - g_k (a pair is kept only when y.s > 1e-10, which keeps
the implicit Hessian positive definite), scaled by y.s / y.y of the newest pair
(eq. 7.20); the first step is lr * min(1, 1 / |g|_1) along -g.  Without a line search
each iteration takes the step lr d; ``"strong_wolfe"`` searches for a step meeting the
strong Wolfe conditions (c1 = 1e-4, c2 = 0.9; Algorithms 3.5 and 3.6: bracketing by
extrapolation, then zooming with safeguarded cubic interpolation; at most 25
evaluations after the first).

Everything works on the model's flat parameter and gradient buffers, as NumPy vectors
of the model's dtype (the cuda backend's are copied to the host and back at each
evaluation: L-BFGS's vector work is O(history x parameters) per iteration, small next
to the passes it drives).  The state (history, step counter, evaluations) is kept
between ``step`` calls, as PyTorch's.
"""
import math

import numpy as np

from . import _checks
from .optim import _params_of

C1, C2 = 1e-4, 0.9          # the strong Wolfe conditions' constants
MAX_LINE_SEARCH = 25        # evaluations per line search


def _cubic_minimum(t1, f1, d1, t2, f2, d2, lo=None, hi=None):
    """The minimiser of the cubic through (t1, f1) and (t2, f2) with slopes d1, d2,
    clamped to [lo, hi] (default: between t1 and t2); the midpoint when the cubic has
    no minimum (Nocedal and Wright, eq. 3.59)."""
    if lo is None:
        lo, hi = min(t1, t2), max(t1, t2)
    a = d1 + d2 - 3.0 * (f1 - f2) / (t1 - t2)
    disc = a * a - d1 * d2
    if disc < 0.0:
        return (lo + hi) / 2.0
    b = math.sqrt(disc)
    if t1 > t2:                        # the formula is for t1 <= t2: swap the ends
        t1, f1, d1, t2, f2, d2 = t2, f2, d2, t1, f1, d1
    t = t2 - (t2 - t1) * (d2 + b - a) / (d2 - d1 + 2.0 * b)
    return min(max(t, lo), hi)


class LBFGS:
    """L-BFGS over all of a model's parameters (see the module docstring)."""

    def __init__(self, params, lr=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        self.model, spans = _params_of(params)
        if spans is not None:
            raise ValueError("LBFGS optimizes all of a model's parameters: pass "
                             "model.parameters() or the model")
        self.lr = _checks.real_number(lr, "lr", minimum=0.0, strict=True)
        self.max_iter = _checks.positive_int(max_iter, "max_iter")
        self.max_eval = self.max_iter * 5 // 4 if max_eval is None else \
            _checks.positive_int(max_eval, "max_eval")
        self.tolerance_grad = _checks.real_number(tolerance_grad, "tolerance_grad",
                                                  minimum=0.0)
        self.tolerance_change = _checks.real_number(tolerance_change, "tolerance_change",
                                                    minimum=0.0)
        self.history_size = _checks.positive_int(history_size, "history_size")
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"line_search_fn must be None or 'strong_wolfe', got "
                             f"{line_search_fn!r}")
        self.line_search_fn = line_search_fn
        # the state kept between steps (PyTorch's names where it has them)
        self.n_iter = 0                 # iterations over all steps
        self.func_evals = 0             # closure calls over all steps
        self._s, self._y, self._rho = [], [], []
        self._h_diag = 1.0
        self._d = self._t = self._prev_g = self._prev_loss = None

    # -- the flat buffers as host vectors ------------------------------------------
    def _get(self, buf):
        return np.array(self.model.to_numpy(buf), copy=True)

    def _set_params(self, x):
        m = self.model
        if isinstance(m.flat_params, np.ndarray):
            np.copyto(m.flat_params, x)
        else:
            m.backend.from_numpy(np.ascontiguousarray(x, m.dtype), out=m.flat_params)

    def zero_grad(self):
        """Zero the model's gradients (what the closure usually does first)."""
        self.model.zero_grad()

    def _evaluate(self, closure):
        loss = closure()
        try:
            loss = float(loss)
        except (TypeError, ValueError):
            raise TypeError(f"closure must return the loss (a number), got "
                            f"{type(loss).__name__}") from None
        self.func_evals += 1
        return loss, self._get(self.model.flat_grads)

    # -- the direction -------------------------------------------------------------
    def _direction(self, g):
        """-H g by the two-loop recursion over the kept pairs (Algorithm 7.4)."""
        q = -g
        alphas = []
        for s, y, rho in zip(reversed(self._s), reversed(self._y), reversed(self._rho)):
            a = rho * float(np.dot(s, q))
            q -= a * y
            alphas.append(a)
        r = q * self._h_diag
        for s, y, rho, a in zip(self._s, self._y, self._rho, reversed(alphas)):
            b = rho * float(np.dot(y, r))
            r += (a - b) * s
        return r

    def _remember(self, g):
        """Add the pair of the last step (s = t d, y = g - g_prev) when y.s > 1e-10."""
        y = g - self._prev_g
        s = self._d * self._t
        ys = float(np.dot(y, s))
        if ys > 1e-10:
            if len(self._s) == self.history_size:
                del self._s[0], self._y[0], self._rho[0]
            self._s.append(s)
            self._y.append(y)
            self._rho.append(1.0 / ys)
            self._h_diag = ys / float(np.dot(y, y))

    # -- the step ------------------------------------------------------------------
    def step(self, closure):
        """Up to ``max_iter`` iterations; returns the loss of the first closure call
        (before any change)."""
        if not callable(closure):
            raise TypeError("LBFGS.step needs a closure: a function that zeroes the "
                            "gradients, computes the loss, calls backward and returns "
                            "the loss")
        loss, g = self._evaluate(closure)
        first_loss, evals = loss, 1
        if np.abs(g).max() <= self.tolerance_grad:
            return first_loss
        x = self._get(self.model.flat_params)
        iters = 0
        while iters < self.max_iter:
            iters += 1
            self.n_iter += 1
            if self.n_iter == 1:
                d = -g
                self._s, self._y, self._rho, self._h_diag = [], [], [], 1.0
            else:
                self._remember(g)
                d = self._direction(g)
            self._d, self._prev_g, self._prev_loss = d, g, loss
            t = self.lr * min(1.0, 1.0 / float(np.abs(g).sum())) if self.n_iter == 1 \
                else self.lr
            self._t = t
            slope = float(np.dot(g, d))
            if slope > -self.tolerance_change:
                break                       # not a descent direction any more
            if self.line_search_fn == "strong_wolfe":
                loss, g, t, used = self._strong_wolfe(closure, x, t, d, loss, g, slope)
                x = x + t * d
                self._set_params(x)
            else:
                x = x + t * d
                self._set_params(x)
                used = 0
                if iters != self.max_iter:  # the last iteration's point is not evaluated
                    loss, g = self._evaluate(closure)
                    used = 1
            self._t = t
            evals += used
            if iters == self.max_iter or evals >= self.max_eval:
                break
            if used and np.abs(g).max() <= self.tolerance_grad:
                break
            if np.abs(d * t).max() <= self.tolerance_change:
                break
            if abs(loss - self._prev_loss) < self.tolerance_change:
                break
        return first_loss

    def _strong_wolfe(self, closure, x, t, d, f0, g0, slope0):
        """A step t along d meeting the strong Wolfe conditions (Algorithms 3.5 and
        3.6); returns (loss, gradient, t, evaluations) at the chosen t."""
        d_max = float(np.abs(d).max())

        def at(step):
            self._set_params(x + step * d)
            f, g = self._evaluate(closure)
            return f, g, float(np.dot(g, d))

        sufficient = lambda step, f: f <= f0 + C1 * step * slope0      # noqa: E731
        f, g, slope = at(t)
        tries = 0                               # evaluations after the first
        prev = (0.0, f0, g0, slope0)
        bracket = None
        # bracketing: extrapolate until the interval [prev, t] holds a Wolfe point
        while tries < MAX_LINE_SEARCH:
            if not sufficient(t, f) or (tries > 1 and f >= prev[1]):
                bracket = [prev, (t, f, g, slope)]
                break
            if abs(slope) <= -C2 * slope0:
                return f, g, t, tries + 1                            # Wolfe point
            if slope >= 0.0:
                bracket = [prev, (t, f, g, slope)]
                break
            t_new = _cubic_minimum(prev[0], prev[1], prev[3], t, f, slope,
                                   lo=t + 0.01 * (t - prev[0]), hi=10.0 * t)
            prev = (t, f, g, slope)
            t = t_new
            f, g, slope = at(t)
            tries += 1
        if bracket is None:                    # out of evaluations while extrapolating
            bracket = [(0.0, f0, g0, slope0), (t, f, g, slope)]
        # zoom: shrink the bracket; `low` is its end with the lower loss
        low = 0 if bracket[0][1] <= bracket[1][1] else 1
        stalled = False
        while tries < MAX_LINE_SEARCH:
            (ta, fa, _, sa), (tb, fb, _, sb) = bracket
            if abs(tb - ta) * d_max < self.tolerance_change:
                break
            t = _cubic_minimum(ta, fa, sa, tb, fb, sb)
            lo, hi = min(ta, tb), max(ta, tb)
            margin = 0.1 * (hi - lo)
            # safeguard: a trial too near an end twice in a row is pushed inside
            if min(hi - t, t - lo) < margin:
                if stalled or t >= hi or t <= lo:
                    t = hi - margin if abs(t - hi) < abs(t - lo) else lo + margin
                    stalled = False
                else:
                    stalled = True
            else:
                stalled = False
            f, g, slope = at(t)
            tries += 1
            point = (t, f, g, slope)
            if not sufficient(t, f) or f >= bracket[low][1]:
                bracket[1 - low] = point
            else:
                if abs(slope) <= -C2 * slope0:
                    bracket[low] = point
                    break                                            # Wolfe point
                if slope * (bracket[1 - low][0] - bracket[low][0]) >= 0.0:
                    bracket[1 - low] = bracket[low]
                bracket[low] = point
            low = 0 if bracket[0][1] <= bracket[1][1] else 1
        t, f, g, _ = bracket[low]
        return f, g, t, tries + 1
