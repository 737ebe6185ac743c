"""The learning rate a loss's curvature allows, from a Hessian estimate or the loss growth.

Plain gradient descent on a quadratic with largest Hessian eigenvalue ``λ`` is stable for
``lr < 2/λ``; with heavy-ball momentum ``μ`` for ``lr < 2(1 + μ)/λ``. Adaptive methods are
stable while the preconditioned Hessian's largest eigenvalue ``λ_P`` (preconditioner
``sqrt(v̂) + ε`` from the second moments) stays below ``2/lr`` (RMSprop) or
``(2 + 2β₁)/((1 - β₁) lr)`` (Adam; Cohen et al., "Adaptive gradient methods at the edge of
stability", 2022). An adapter supplies Hessian-vector products; the arithmetic is here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: Optimizers whose stability bound is ``2(1 + μ)/λ`` on the plain Hessian.
PLAIN_CURVATURE = ("sgd",)
#: Optimizers whose bound is on the Hessian preconditioned by the second moments.
PRECONDITIONED = ("adam", "adamw", "nadam", "adamax", "rmsprop")


@dataclass(frozen=True)
class Curvature:
    """An estimate of the largest eigenvalue of the loss's (preconditioned) Hessian.

    Attributes
    ----------
    lambda_max : float
        The estimate.
    method : str
        How it was found: ``"hessian power iteration"`` or ``"loss growth rate"``.
    preconditioned : bool
        Whether it is the eigenvalue of the Hessian preconditioned by an adaptive
        optimizer's second moments.
    stable_learning_rate : float or None
        The largest stable learning rate for the optimizer, when a bound is known.
    momentum : float
        The heavy-ball momentum of an optimizer on the plain Hessian (SGD), else 0.
    """

    lambda_max: float
    method: str
    preconditioned: bool
    stable_learning_rate: float | None
    momentum: float = 0.0

    @property
    def safe_learning_rate(self) -> float | None:
        """The rate for a run that diverged slowly within :attr:`stable_learning_rate`.

        Momentum ``μ`` stretches each step to about ``lr/(1 - μ)`` once the gradients
        agree; on a loss that is not quadratic (or a batch's curvature below the data's)
        the bound ``2(1 + μ)/λ`` can then still diverge, step by step. Plain gradient
        descent's bound on that stretched step, ``2(1 - μ)/λ``, is the rate that holds.

        Examples
        --------
        >>> round(Curvature(10.0, "Hessian", False, 0.38, momentum=0.9).safe_learning_rate, 6)
        0.02
        """
        bound = self.stable_learning_rate
        if bound is None or self.preconditioned or not self.momentum > 0:
            return bound
        return min(bound, 2.0 * (1.0 - self.momentum) / self.lambda_max)


def power_iteration(
    hvp: Callable[[np.ndarray], np.ndarray],
    size: int,
    *,
    iterations: int = 20,
    tolerance: float = 1e-3,
    seed: int = 0,
) -> float:
    """Largest-magnitude eigenvalue of the symmetric operator ``hvp`` (a Rayleigh quotient).

    Parameters
    ----------
    hvp : callable
        Maps a flat float64 vector of length ``size`` to the Hessian times it.
    size : int
        The number of parameters.
    iterations : int
        At most this many products.
    tolerance : float
        Stop when two successive estimates agree to this relative tolerance.

    Returns
    -------
    float
        The absolute value of the estimate (0 when the operator is zero; NaN when a
        product was not finite).

    Examples
    --------
    >>> import numpy as np
    >>> round(power_iteration(lambda v: np.diag([3.0, 1.0]) @ v, 2), 3)
    3.0
    """
    vector = np.random.default_rng(seed).standard_normal(size)
    vector /= np.linalg.norm(vector)
    estimate = 0.0
    for _ in range(iterations):
        product = np.asarray(hvp(vector), dtype=np.float64)
        if not np.isfinite(product).all():
            return math.nan
        new_estimate = float(vector @ product)
        norm = float(np.linalg.norm(product))
        if norm == 0.0:
            return 0.0
        converged = abs(new_estimate - estimate) <= tolerance * abs(new_estimate)
        estimate, vector = new_estimate, product / norm
        if converged:
            break
    return abs(estimate)


def stable_learning_rate(
    lambda_max: float,
    optimizer: str,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    beta_1: float = 0.9,
) -> float | None:
    """The largest learning rate that keeps ``optimizer`` stable at curvature ``lambda_max``.

    ``lambda_max`` is the plain Hessian's eigenvalue for SGD and the preconditioned one for
    the adaptive optimizers in :data:`PRECONDITIONED`. None for other optimizers or a
    non-positive curvature.

    Examples
    --------
    >>> stable_learning_rate(9.33e12, "sgd")  # the seed's Example 1
    2.1436227224008574e-13
    """
    if not (lambda_max > 0 and math.isfinite(lambda_max)):
        return None
    name = optimizer.lower()
    if name in PLAIN_CURVATURE:
        if nesterov:
            return 2.0 * (1.0 + momentum) / ((1.0 + 2.0 * momentum) * lambda_max)
        return 2.0 * (1.0 + momentum) / lambda_max
    if name == "rmsprop":
        return 2.0 * (1.0 + momentum) / lambda_max
    if name in PRECONDITIONED:
        return (2.0 + 2.0 * beta_1) / ((1.0 - beta_1) * lambda_max)
    return None


def curvature_from_growth(growth_per_step: float, learning_rate: float) -> float | None:
    """``λ`` of a gradient-descent run whose loss grows ``growth_per_step`` times a step.

    Along the top eigenvector the error is multiplied by ``|1 - lr λ|`` each step, the loss
    by its square, so ``λ = (1 + sqrt(growth)) / lr`` once ``lr λ > 2``.

    Examples
    --------
    >>> curvature_from_growth(9.0, 0.1)  # the loss grows 9x a step at lr 0.1
    40.0
    """
    if not (growth_per_step > 1.0 and learning_rate > 0):
        return None
    return (1.0 + math.sqrt(growth_per_step)) / learning_rate


def growth_curvature(
    growth_per_step: float | None,
    learning_rate: float,
    optimizer: str,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
) -> Curvature | None:
    """The curvature that plain-curvature optimizers' (SGD's) loss growth shows, with its
    learning-rate bound: what an adapter falls back to without a Hessian (no loss to
    differentiate twice, or a product that was not finite). None for other optimizers or
    without a rise.

    Examples
    --------
    >>> growth_curvature(9.0, 0.1, "sgd").stable_learning_rate
    0.05
    """
    if growth_per_step is None or optimizer.lower() not in PLAIN_CURVATURE:
        return None
    lam = curvature_from_growth(growth_per_step, learning_rate)
    if lam is None:
        return None
    bound = stable_learning_rate(lam, optimizer, momentum=momentum, nesterov=nesterov)
    return Curvature(lam, "loss growth rate", False, bound, momentum=momentum)


def hessian_curvature(
    lambda_max: float,
    optimizer: str,
    *,
    preconditioned: bool,
    momentum: float = 0.0,
    nesterov: bool = False,
    beta_1: float = 0.9,
) -> Curvature:
    """The :class:`Curvature` a Hessian power iteration on a batch found, with its bound.

    Examples
    --------
    >>> hessian_curvature(40.0, "sgd", preconditioned=False).stable_learning_rate
    0.05
    """
    bound = stable_learning_rate(
        lambda_max, optimizer, momentum=momentum, nesterov=nesterov, beta_1=beta_1
    )
    return Curvature(
        lambda_max,
        "Hessian power iteration on the batch",
        preconditioned,
        bound,
        momentum=0.0 if preconditioned else momentum,
    )


def geometric_growth(losses: Sequence[float], *, min_ratio: float = 4.0) -> float | None:
    """The loss's growth factor per step when ``losses`` end in a geometric rise, else None.

    The rise is the run from the last smallest loss to the end; it counts when it has at
    least two losses, at least three in four of its steps rise, and its last loss is at
    least ``min_ratio`` times its first. The factor is the slope of ``log(loss)`` by least
    squares.

    Examples
    --------
    >>> round(geometric_growth([0.5, 0.1, 0.3, 0.9, 2.7]), 6)
    3.0
    >>> geometric_growth([0.1, 0.09, 0.11, 0.1]) is None
    True
    """
    values = [v for v in losses if v is not None and math.isfinite(v) and v > 0]
    if len(values) < 2:
        return None
    start = len(values) - 1 - values[::-1].index(min(values))
    run = values[start:]
    if len(run) < 2 or run[-1] < min_ratio * run[0]:
        return None
    rises = sum(b > a for a, b in itertools.pairwise(run))
    if rises < 0.75 * (len(run) - 1):
        return None
    logs = np.log(np.asarray(run, dtype=np.float64))
    slope = float(np.polyfit(np.arange(len(run), dtype=np.float64), logs, 1)[0])
    return math.exp(slope) if slope > 0 else None
