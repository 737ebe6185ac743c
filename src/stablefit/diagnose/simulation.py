"""Training of a linear model with the MSE, simulated on the sufficient statistics.

The loss of a linear model is a quadratic in its weights, fixed by the sufficient
statistics of the data (:mod:`stablefit.diagnose.stability`). The simulation runs the
framework's own optimizer updates (:mod:`stablefit.diagnose.optimizers`) on that
quadratic, in the model's float type, from several draws of the framework's initialization
(:mod:`stablefit.diagnose.frameworks`: Keras's ``glorot_uniform``, torch's ``nn.Linear``),
and records the loss history the framework would report. One step costs O(d²) whatever the
number of rows; all runs (seeds × learning rates) advance together, compiled
(:mod:`stablefit.diagnose.kernels`) while every weight and prediction is finite, in NumPy
at the steps where something overflows, with the same result bit for bit.

Where float32 overflows (a squared residual beyond 3.4e38 makes the loss ``inf``; an
``inf`` weight makes the next predictions ``inf``; ``inf - inf`` makes ``NaN``), the signs
of the data columns, from their minimum and maximum, decide which ``inf`` meets which.

Minibatches take ``ceil(n / batch_size)`` steps per epoch (``n // batch_size`` when the
last, partial batch is dropped), each on the full-data gradient. Beyond :data:`MAX_STEPS`
steps, SGD (with or without momentum, without weight decay) continues in closed form on the
eigenmodes of the Hessian; the other optimizers hold their last simulated loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from stablefit.diagnose import kernels
from stablefit.diagnose.frameworks import epoch_losses, initial_weights
from stablefit.diagnose.optimizers import ADAPTIVE, OptimizerConfig, UpdateRule
from stablefit.diagnose.stability import Quadratic

if TYPE_CHECKING:
    from stablefit.summary import Summary

Outcome = Literal["diverges", "stalls", "converges"]

#: "Converges": the excess loss over the optimum falls to this share of its initial value.
CONVERGED_SHARE = 0.01
#: A loss that ends this many times above where it started counts as diverging.
GROWTH_DIVERGES = 10.0
#: Most optimizer steps one simulation takes step by step.
MAX_STEPS = 10_000
BIAS = "(bias)"


# -- the problem the simulation runs on ----------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A quadratic loss plus what float overflow needs: column magnitudes and signs."""

    quadratic: Quadratic
    max_abs: np.ndarray  # per weight: the largest |value| of its column (1 for the bias)
    sign: np.ndarray  # per weight: +1 / -1 when every value has that sign, 0 otherwise
    has_zero: np.ndarray  # per weight: the column holds an exact zero

    @property
    def n(self) -> int:
        return self.quadratic.n

    @property
    def p(self) -> int:
        return len(self.quadratic.q)

    @classmethod
    def of_summary(cls, summary: Summary, *, intercept: bool) -> Problem:
        d = summary.n_features
        names = tuple(summary.names[:d])
        quadratic = Quadratic.from_moments(
            summary.complete_mean, summary.comoment, summary.n_complete, names, intercept=intercept
        )
        lo = np.asarray(summary.columns.min[:d], dtype=np.float64)
        hi = np.asarray(summary.columns.max[:d], dtype=np.float64)
        integer = np.asarray(summary.columns.is_integer[:d], dtype=bool)
        sign = np.where(lo > 0, 1.0, np.where(hi < 0, -1.0, 0.0))
        # An integer column that crosses zero almost surely holds a zero; a real one may not.
        has_zero = (lo == 0) | (hi == 0) | ((lo < 0) & (hi > 0) & integer)
        max_abs = np.nan_to_num(np.asarray(summary.columns.max_abs[:d], dtype=np.float64))
        if intercept:
            sign, has_zero = np.append(sign, 1.0), np.append(has_zero, False)
            max_abs = np.append(max_abs, 1.0)
        return cls(quadratic, max_abs, sign, has_zero)

    def standardized(self) -> Problem:
        """The same data after ``(x - mean) / std`` per feature (what Normalization does).

        Only defined with an intercept: without a bias the model cannot absorb the means.
        """
        quad = self.quadratic
        if BIAS not in quad.names:
            raise ValueError("standardized features need a model with a bias")
        d, n = self.p - 1, quad.n
        Cxx, Cxy, Cyy, mean, ybar = quad.Q[:d, :d], quad.q[:d], quad.c, quad.a[:d], quad.a0
        std = np.sqrt(np.maximum(np.diag(Cxx), 0.0) / n)
        scale = np.where(std > 0, std, 1.0)
        comoment = np.zeros((d + 1, d + 1))
        comoment[:d, :d] = Cxx / np.outer(scale, scale)
        comoment[:d, d] = comoment[d, :d] = Cxy / scale
        comoment[d, d] = Cyy
        standardized = Quadratic.from_moments(
            np.append(np.zeros(d), ybar), comoment, n, quad.names[:d], intercept=True
        )
        spread = (self.max_abs[:d] + np.abs(mean)) / scale
        return Problem(
            standardized,
            max_abs=np.append(spread, 1.0),
            sign=np.append(np.zeros(d), 1.0),
            has_zero=np.zeros(d + 1, dtype=bool),
        )


# -- the simulation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Loss histories of several runs (learning rates × seeds, rate-major)."""

    epoch_loss: np.ndarray  # (runs, epochs), as the framework reports them (Keras's History)
    initial_loss: np.ndarray  # (runs,) exact loss at the initialization
    steps_per_epoch: int
    stepped_epochs: int  # epochs simulated step by step (all of them, unless over budget)
    closed_form: bool  # the epochs after ``stepped_epochs`` were computed in closed form
    noise_std: np.ndarray  # (runs,) spread of a loss around its value from minibatch noise

    def of_rate(self, index: int, seeds: int) -> Run:
        """The runs of the ``index``-th learning rate."""
        rows = slice(index * seeds, (index + 1) * seeds)
        return Run(
            self.epoch_loss[rows],
            self.initial_loss[rows],
            self.steps_per_epoch,
            self.stepped_epochs,
            self.closed_form,
            self.noise_std[rows],
        )


def _step_loss_and_gradient(
    problem: Problem, theta: np.ndarray, dtype: type
) -> tuple[np.ndarray, np.ndarray]:
    """Loss (float64, with inf/NaN) and gradient (model dtype) as the framework computes them.

    Call under ``np.errstate(over="ignore", invalid="ignore")``: overflow is the point.
    """
    fmax = float(np.finfo(dtype).max)
    wide = theta.astype(np.float64)
    # Finite weights whose every prediction stays finite (NaN/inf weights fail the test).
    regular = np.empty(len(theta), dtype=bool)
    kernels.regular_rows(wide, problem.max_abs, fmax, regular)
    if regular.all():
        loss, grad = problem.quadratic.loss_and_gradient(wide)
        return loss, grad.astype(dtype)
    loss = np.full(len(theta), np.nan)
    grad = np.full(theta.shape, np.nan, dtype=dtype)
    if regular.any():
        loss[regular], regular_grad = problem.quadratic.loss_and_gradient(wide[regular])
        grad[regular] = regular_grad.astype(dtype)
    term_bound = np.abs(wide) * problem.max_abs
    for run in np.flatnonzero(~regular):
        loss[run], grad[run] = _overflowed(problem, theta[run], term_bound[run], fmax)
    return loss, grad


def _overflowed(
    problem: Problem, theta: np.ndarray, term_bound: np.ndarray, fmax: float
) -> tuple[float, np.ndarray]:
    """Loss and gradient once some prediction overflows to ±inf (or a weight is NaN).

    A prediction is a sum of terms ``x_ij θ_j``. Terms of one sign sum to ``±inf``; terms
    of both signs, or ``0 · inf``, give ``NaN``. Only the columns' signs are known, so a
    column of mixed signs whose ``inf`` meets another ``inf`` counts as ``NaN``.
    """
    p = len(theta)
    nan = np.full(p, np.nan, dtype=theta.dtype)
    if np.isnan(theta).any():
        return math.nan, nan
    huge = np.flatnonzero(term_bound > fmax)
    if huge.size == 0:
        huge = np.array([int(np.argmax(term_bound))])
    if np.any(np.isinf(theta[huge]) & problem.has_zero[huge]):
        return math.nan, nan
    term_signs = problem.sign[huge] * np.sign(theta[huge])
    if huge.size > 1 and (np.any(term_signs == 0) or np.unique(term_signs).size > 1):
        return math.nan, nan
    grad = nan.copy()
    if term_signs[0] == 0:
        # One overflowing column of mixed signs: each row's inf takes that row's sign, so
        # only that column's gradient has terms of a single sign.
        j = huge[0]
        if not problem.has_zero[j]:
            grad[j] = np.sign(theta[j]) * np.inf
        return math.inf, grad
    definite = (problem.sign != 0) & ~problem.has_zero
    grad[definite] = problem.sign[definite] * term_signs[0] * np.inf
    return math.inf, grad


def simulate(
    problem: Problem,
    config: OptimizerConfig,
    *,
    batch_size: int,
    epochs: int,
    dtype: type,
    seeds: Sequence[int],
    learning_rates: Sequence[float] | None = None,
    max_steps: int = MAX_STEPS,
    drop_last: bool = False,
    start: np.ndarray | None = None,
) -> Run:
    """Simulate training for every learning rate (default: the config's) and seed.

    ``drop_last`` leaves out each epoch's last, partial batch (a torch ``DataLoader``
    option); there must be at least ``batch_size`` rows then. ``start`` (one row of
    weights per run) replaces the seeds' initializations: a model's own weights.
    """
    rates = np.asarray(
        [config.learning_rate] if learning_rates is None else learning_rates, dtype=np.float64
    )
    intercept = BIAS in problem.quadratic.names
    if start is None:
        start = initial_weights(config.framework, problem.p, intercept, seeds, dtype)
    start = np.atleast_2d(np.asarray(start, dtype=dtype))
    seeds = range(len(start))
    theta = np.tile(start, (len(rates), 1))
    runs = len(theta)
    n = problem.n
    batch_rows = _batch_rows(n, batch_size, drop_last)
    steps = len(batch_rows)
    fmax = float(np.finfo(dtype).max)
    linear = config.name == "sgd" and config.weight_decay == 0
    # Plain SGD continues in closed form past the budget; the others need at least one
    # epoch, of which only the first max_steps batches are simulated when it is longer.
    stepped = min(epochs, max_steps // steps if linear else max(1, max_steps // steps))
    epoch_batches = batch_rows[:max_steps]
    rule = UpdateRule(config, theta.shape, dtype, np.repeat(rates, len(seeds)))
    history = np.full((runs, epochs), np.nan)
    initial = problem.quadratic.loss(theta)
    losses, theta = _step_losses(problem, rule, theta, len(epoch_batches), stepped, dtype)
    done = losses.shape[1] // len(epoch_batches)
    with np.errstate(over="ignore", invalid="ignore"):
        step_losses = losses.reshape(runs, done, len(epoch_batches))
        history[:, :done] = epoch_losses(config.framework, step_losses, epoch_batches, n, fmax)
    if done and np.isnan(theta).all():  # so is every later loss
        return Run(history, initial, steps, epochs, False, np.zeros(runs))
    closed_form = stepped < epochs and linear
    if closed_form:
        history[:, stepped:] = _sgd_epochs_closed_form(
            problem, config, rates, len(seeds), theta, rule, steps, epochs - stepped, fmax
        )
        # Thousands of steps per epoch: once the loss overflows, the weights turn inf and
        # then NaN within a few steps, so every later epoch reports NaN.
        history[np.cumsum(~np.isfinite(history), axis=1) > 1] = np.nan
    elif stepped < epochs:
        history[:, stepped:] = history[:, stepped - 1 : stepped]
    noise_std = np.zeros(runs)
    if config.name not in ADAPTIVE and steps > 1:
        noise, spread = _minibatch_noise_loss(problem, config, rates, batch_size)
        noise_std = np.repeat(spread, len(seeds))
        with np.errstate(invalid="ignore"):
            history += np.repeat(noise, len(seeds))[:, None]
    return Run(history, initial, steps, stepped, closed_form, noise_std)


def _batch_rows(n: int, batch_size: int, drop_last: bool) -> np.ndarray:
    """The rows of each batch of an epoch."""
    if drop_last:
        if n < batch_size:
            raise ValueError(f"drop_last with batch_size={batch_size} > {n} rows: no batch")
        return np.full(n // batch_size, batch_size, dtype=np.float64)
    steps = max(1, math.ceil(n / batch_size))
    batch_rows = np.full(steps, batch_size, dtype=np.float64)
    batch_rows[-1] = n - batch_size * (steps - 1)
    return batch_rows


def _step_losses(
    problem: Problem, rule: UpdateRule, theta: np.ndarray, batches: int, epochs: int, dtype: type
) -> tuple[np.ndarray, np.ndarray]:
    """The loss of every run at the start of each step of ``epochs`` epochs of ``batches``
    steps, and the weights after them.

    Regular steps run compiled (:func:`_regular_steps`); a step at which some run is not
    regular is taken here, in NumPy, and the compiled steps resume after it. A NaN weight
    stays NaN whatever the update, and its run's loss with it: once every weight is NaN,
    the losses are NaN to the end of that epoch and stop there.
    """
    fmax = float(np.finfo(dtype).max)
    end = batches * epochs
    losses = np.empty((len(theta), end))
    theta = theta.copy()  # the compiled steps update it in place
    step = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while step < end:
            nan = np.isnan(theta)
            if step and nan.all():
                epoch_end = -(-step // batches) * batches
                losses[:, step:epoch_end] = np.nan
                return losses[:, :epoch_end], theta
            # A run with a NaN weight is not regular now, nor will it be again.
            if not nan.any():
                step = _regular_steps(problem, rule, theta, losses, step, end, fmax)
                if step == end:
                    break
            loss, grad = _step_loss_and_gradient(problem, theta, dtype)
            losses[:, step] = loss
            theta = rule.apply(theta, grad)
            step += 1
    return losses, theta


def _regular_steps(
    problem: Problem,
    rule: UpdateRule,
    theta: np.ndarray,
    losses: np.ndarray,
    start: int,
    end: int,
    fmax: float,
) -> int:
    """Compiled steps from ``start`` while every run is regular; the step it stopped at."""
    quad = problem.quadratic
    parts = (quad.Q, quad.q, quad.c, quad.a, quad.a0, quad.n)
    stop = kernels.regular_steps(
        theta, losses, start, end, parts, problem.max_abs, fmax, rule.kernel_arguments(),
        rule.iterations,
    )  # fmt: skip
    rule.iterations += stop - start
    return stop


def _minibatch_noise_loss(
    problem: Problem, config: OptimizerConfig, rates: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the excess loss minibatch noise keeps SGD at.

    At the optimum a batch gradient has covariance ≈ (2σ²/b)·H·(n-b)/(n-1), σ² the optimal
    MSE (rows taken as Gaussian-like, residuals independent of the features). On an
    eigenmode λ, heavy-ball SGD (β, h = lr·λ) then settles at a variance
    ``lr² c (1+β) / ((1-β) h (2(1+β) - h))`` with c = 2σ²λ/b, which adds λ/2 times that to
    the loss. Modes at or beyond the stability edge add nothing here: they diverge.
    """
    n = problem.n
    _, sigma2 = problem.quadratic.optimum()
    values = np.maximum(np.linalg.eigvalsh(problem.quadratic.hessian), 0.0)
    beta = config.momentum
    without_replacement = max(n - batch_size, 0) / max(n - 1, 1)
    rates = rates * config.gradient_scale  # torch's dampening scales what momentum takes in
    h = rates[:, None] * values[None, :]
    c = 2.0 * sigma2 * values / batch_size * without_replacement
    margin = 2.0 * (1.0 + beta) - h
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = rates[:, None] ** 2 * c * (1 + beta) / ((1 - beta) * h * margin)
        # A mode past the stability edge diverges deterministically: that is simulated.
        # Undamped momentum (β = 1) has no stationary variance: nothing to add.
        settles = (values > 0) & (margin > 0) & (beta < 1)
        per_mode = np.where(settles, 0.5 * values * variance, 0.0)
    # Each mode's share is (λ/2)·(a Gaussian)², a scaled χ²₁: mean m, variance 2m². The
    # squares are taken relative to the largest share: a loss near 1e230 has them beyond
    # float64 although its spread is not.
    largest = per_mode.max(axis=1, initial=0.0)
    relative = per_mode / np.where(largest > 0, largest, 1.0)[:, None]
    return per_mode.sum(axis=1), largest * np.sqrt(2.0 * np.square(relative).sum(axis=1))


def _sgd_epochs_closed_form(
    problem: Problem,
    config: OptimizerConfig,
    rates: np.ndarray,
    seeds: int,
    theta: np.ndarray,
    rule: UpdateRule,
    steps: int,
    epochs: int,
    fmax: float,
) -> np.ndarray:
    """Epoch losses of SGD (heavy-ball or Nesterov momentum β ≥ 0) on the quadratic.

    On each eigenmode (λ, v) of the Hessian the error c = vᵀ(θ - θ*) and the momentum
    μ = vᵀm (as the step it adds to the weights) follow a linear 2×2 recurrence z ← M z
    (float64, without float32 rounding); torch's dampening τ scales h = lr·λ by 1 - τ.
    An epoch of k steps maps z to Mᵏz and adds ½ λ Σ_{t<k} c_t² = ½ λ zᵀ P_k z to the
    summed loss; Mᵏ and P_k come from O(log k) doublings.
    """
    values, vectors = np.linalg.eigh(problem.quadratic.hessian)
    values = np.maximum(values, 0.0)
    optimum, optimal_loss = problem.quadratic.optimum()
    runs = len(theta)
    momentum = rule.velocity()
    error = (theta.astype(np.float64) - optimum) @ vectors  # (runs, p)
    velocity = np.zeros_like(error) if momentum is None else momentum @ vectors
    beta = config.momentum
    h = np.repeat(rates * config.gradient_scale, seeds)[:, None] * values[None, :]  # (runs, p)
    M = np.empty((runs, len(values), 2, 2))
    if config.nesterov:
        M[..., 0, 0], M[..., 0, 1] = 1 - h * (1 + beta), beta * beta
    else:
        M[..., 0, 0], M[..., 0, 1] = 1 - h, beta
    M[..., 1, 0], M[..., 1, 1] = -h, beta
    power, summed = _power_and_sum(M, steps)
    z = np.stack([error, velocity], axis=-1)  # (runs, p, 2)
    history = np.empty((runs, epochs))
    with np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(epochs):
            squares = np.einsum("rpi,rpij,rpj->rp", z, summed, z)
            mean = optimal_loss + 0.5 * (squares @ values) / steps
            history[:, epoch] = np.where(mean * problem.n > fmax, np.inf, mean)
            z = np.einsum("rpij,rpj->rpi", power, z)
    return history


def _power_and_sum(M: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``Mᵏ`` and ``Σ_{t<k} (Mᵗ)ᵀ E Mᵗ`` (E picks the first coordinate), by doubling."""
    E = np.zeros(M.shape)
    E[..., 0, 0] = 1.0
    identity = np.broadcast_to(np.eye(2), M.shape).copy()
    power, summed = identity, np.zeros(M.shape)  # the product of zero steps
    block_power, block_sum = M.copy(), E  # one step
    with np.errstate(over="ignore", invalid="ignore"):
        while k:
            if k & 1:
                # First the steps done so far, then this block after them.
                summed = summed + _congruence(power, block_sum)
                power = block_power @ power
            block_sum = block_sum + _congruence(block_power, block_sum)
            block_power = block_power @ block_power
            k >>= 1
    return power, summed


def _congruence(A: np.ndarray, S: np.ndarray) -> np.ndarray:
    """``Aᵀ S A`` over the leading axes."""
    return np.swapaxes(A, -1, -2) @ S @ A


# -- summarizing the runs --------------------------------------------------------------------


def _first_true(mask: np.ndarray) -> np.ndarray:
    """Per row, the 1-based index of the first True (0 when none)."""
    return np.where(mask.any(axis=1), mask.argmax(axis=1) + 1, 0)


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    first_nonfinite: np.ndarray  # per run, 0 = stays finite
    first_nan: np.ndarray
    final_loss: np.ndarray  # per run


def judge(run: Run, optimal_loss: float, resolution: float) -> Verdict:
    """Diverges (a loss turns inf/NaN or grows tenfold), converges (every run's excess
    falls to 1% of its initial value, or to the float resolution) or stalls."""
    history = run.epoch_loss
    nonfinite = _first_true(~np.isfinite(history))
    first_nan = _first_true(np.isnan(history))
    final = history[:, -1]
    if np.any(nonfinite) or np.any(final > GROWTH_DIVERGES * run.initial_loss):
        return Verdict("diverges", nonfinite, first_nan, final)
    initial_excess = np.maximum(run.initial_loss - optimal_loss, 0.0)
    excess = np.maximum(final - optimal_loss, 0.0)
    converged = excess <= CONVERGED_SHARE * initial_excess + resolution
    outcome: Outcome = "converges" if converged.all() else "stalls"
    return Verdict(outcome, nonfinite, first_nan, final)


def loss_resolution(quadratic: Quadratic, dtype: type) -> float:
    """The loss a model in ``dtype`` cannot resolve: one rounding unit of the target, squared.

    Predictions carry a relative rounding error of ``eps``, so losses below
    ``eps² · mean(y²)`` are rounding noise (a framework may even print an exact 0 there).
    """
    mean_square_target = float(quadratic.loss(np.zeros((1, len(quadratic.q))))[0])
    return float(np.finfo(dtype).eps) ** 2 * mean_square_target
