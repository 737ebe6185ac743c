"""The mean squared error as a quadratic in the weights, and the stability bounds it implies.

For a Dense(1) model ``X w + b`` the loss Keras reports is
``L(θ) = ‖Aθ - y‖² / n`` with ``A = [X, 1]`` and ``θ = [w, b]``. Its Hessian is constant,
``H = (2/n) AᵀA``, so everything about gradient descent on it follows from the sufficient
statistics: plain SGD is stable exactly when ``lr < 2/λmax(H)``, heavy-ball momentum β when
``lr < 2(1+β)/λmax`` and Nesterov momentum when ``lr < 2(1+β)/((1+2β) λmax)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stablefit.diagnose import kernels
from stablefit.diagnose.optimizers import ADAPTIVE, OptimizerConfig


@dataclass(frozen=True)
class Quadratic:
    """``L(θ) = (θᵀQθ - 2qᵀθ + c)/n + (aᵀθ - a0)²``: the MSE of a linear model.

    With an intercept, ``Q``, ``q`` and ``c`` are the *centered* co-moments (the bias
    row/column of ``Q`` is zero) and the last term carries the means: this form does not
    cancel catastrophically when features have large offsets. Without an intercept,
    ``Q = XᵀX``, ``q = Xᵀy``, ``c = yᵀy`` and ``a = 0``.

    Parameters
    ----------
    Q, q, c : the quadratic, linear and constant parts (float64).
    a, a0 : the mean-residual term (``a = [x̄, 1]``, ``a0 = ȳ``; zero without intercept).
    n : int
        Rows the mean is taken over.
    names : tuple of str
        One name per weight: the features, then ``"(bias)"`` with an intercept.
    """

    Q: np.ndarray
    q: np.ndarray
    c: float
    a: np.ndarray
    a0: float
    n: int
    names: tuple[str, ...]

    @classmethod
    def from_moments(
        cls,
        mean: np.ndarray,
        comoment: np.ndarray,
        n: int,
        feature_names: tuple[str, ...],
        *,
        intercept: bool,
    ) -> Quadratic:
        """Build from complete-row means and centered co-moments of ``[X, y]``."""
        d = len(feature_names)
        mean = np.asarray(mean, dtype=np.float64)
        C = np.asarray(comoment, dtype=np.float64)
        if intercept:
            Q = np.zeros((d + 1, d + 1))
            Q[:d, :d] = C[:d, :d]
            q = np.append(C[:d, d], 0.0)
            return cls(
                Q=Q,
                q=q,
                c=float(C[d, d]),
                a=np.append(mean[:d], 1.0),
                a0=float(mean[d]),
                n=n,
                names=(*feature_names, "(bias)"),
            )
        raw = C + n * np.outer(mean, mean)
        # Contiguous slices: the compiled kernels take them without a copy per call.
        return cls(
            Q=np.ascontiguousarray(raw[:d, :d]),
            q=np.ascontiguousarray(raw[:d, d]),
            c=float(raw[d, d]),
            a=np.zeros(d),
            a0=0.0,
            n=n,
            names=tuple(feature_names),
        )

    @property
    def is_finite(self) -> bool:
        """False when the data's sums of squares overflowed float64."""
        parts = (self.Q, self.q, self.a, np.array([self.c, self.a0]))
        return all(np.isfinite(part).all() for part in parts)

    @property
    def hessian(self) -> np.ndarray:
        """``H = (2/n) AᵀA``."""
        return 2.0 / self.n * self.Q + 2.0 * np.outer(self.a, self.a)

    def loss(self, theta: np.ndarray) -> np.ndarray:
        """The exact MSE at each row of ``theta`` (runs, p), in float64."""
        theta = np.asarray(theta, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            quad = np.einsum("rp,pk,rk->r", theta, self.Q, theta) - 2.0 * theta @ self.q
            # Rounding can leave the centered part a hair below zero at an exact fit.
            centered = np.maximum((quad + self.c) / self.n, 0.0)
            return centered + np.square(theta @ self.a - self.a0)

    def loss_and_gradient(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The MSE and its gradient ``(2/n)(Gθ - g)`` at each row of ``theta``, in float64.

        Compiled (:func:`stablefit.diagnose.kernels.loss_and_gradient`), so that the
        simulation's compiled steps and its NumPy steps get the same bits.
        """
        theta = np.ascontiguousarray(theta, dtype=np.float64)
        loss, grad = np.empty(len(theta)), np.empty(theta.shape)
        kernels.loss_and_gradient(
            theta, self.Q, self.q, self.c, self.a, self.a0, self.n, loss, grad
        )
        return loss, grad

    def optimum(self) -> tuple[np.ndarray, float]:
        """A least-squares minimizer (minimum norm in scaled units) and the minimum MSE."""
        p = len(self.q)
        if not np.any(self.a):
            scale = np.sqrt(np.maximum(np.diag(self.Q), 0.0))
            scale[scale == 0] = 1.0
            beta = _pinv_solve(self.Q / np.outer(scale, scale), self.q / scale)
            theta = beta / scale
        else:
            d = p - 1
            Cxx, Cxy = self.Q[:d, :d], self.q[:d]
            scale = np.sqrt(np.maximum(np.diag(Cxx), 0.0))
            scale[scale == 0] = 1.0
            w = _pinv_solve(Cxx / np.outer(scale, scale), Cxy / scale) / scale
            theta = np.append(w, self.a0 - self.a[:d] @ w)
        return theta, float(self.loss(theta[None, :])[0])


def _pinv_solve(M: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimum-norm solution of the symmetric system ``M x = b`` (rank-revealing)."""
    if M.size == 0:
        return np.zeros(0)
    values, vectors = np.linalg.eigh(M)
    cutoff = max(values.max(initial=0.0), 0.0) * len(M) * np.finfo(np.float64).eps * 10
    keep = values > cutoff
    return vectors[:, keep] @ ((vectors[:, keep].T @ b) / values[keep])


@dataclass(frozen=True)
class Spectrum:
    """The largest curvature of the loss and the weight that carries it."""

    lambda_max: float
    lambda_min: float
    dominant_index: int
    dominant_share: float

    @classmethod
    def of(cls, quadratic: Quadratic) -> Spectrum:
        H = quadratic.hessian
        if H.size == 0:
            return cls(0.0, 0.0, 0, 0.0)
        values, vectors = np.linalg.eigh(H)
        top = vectors[:, -1]
        share = np.square(top)
        return cls(
            lambda_max=float(max(values[-1], 0.0)),
            lambda_min=float(max(values[0], 0.0)),
            dominant_index=int(np.argmax(share)),
            dominant_share=float(share.max()),
        )


def max_stable_learning_rate(
    config: OptimizerConfig, lambda_max: float
) -> tuple[float | None, str]:
    """The largest learning rate for which the optimizer cannot diverge on this loss.

    Torch's SGD options move the bound: weight decay ``wd`` adds ``wd`` to every
    eigenvalue of the Hessian the update sees, and dampening ``τ`` lets only ``1 - τ`` of
    each gradient into the momentum.

    Returns
    -------
    bound : float or None
        ``None`` for the adaptive optimizers (no such bound exists; see the text) and when
        the loss is flat (``λmax = 0``).
    explanation : str
        Where the bound comes from, or why there is none.
    """
    if lambda_max <= 0:
        return None, "the loss is flat (every feature is zero): no learning rate diverges"
    beta = config.momentum
    if config.name in ADAPTIVE:
        return None, (
            f"{config.name} divides each step by a running gradient magnitude, so a weight "
            "moves by about the learning rate per step whatever the curvature: it has no "
            "divergence threshold in λmax. It turns NaN when the squared gradient overflows "
            "the float type (|gradient| > 1.8e19 in float32), which the simulation checks."
        )
    curvature, symbol = lambda_max, "λmax"
    if config.weight_decay:
        curvature, symbol = lambda_max + config.weight_decay, "(λmax + weight_decay)"
    scale = config.gradient_scale
    if scale != 1.0:
        curvature, symbol = curvature * scale, f"(1 - dampening)·{symbol}"
    if beta == 0:
        return 2.0 / curvature, f"gradient descent on a quadratic is stable iff lr < 2/{symbol}"
    if config.nesterov:
        bound = 2.0 * (1.0 + beta) / ((1.0 + 2.0 * beta) * curvature)
        return bound, f"Nesterov momentum {beta:g} is stable iff lr < 2(1+β)/((1+2β)·{symbol})"
    bound = 2.0 * (1.0 + beta) / curvature
    return bound, f"heavy-ball momentum {beta:g} is stable iff lr < 2(1+β)/{symbol}"
