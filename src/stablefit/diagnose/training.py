"""Forecast what ``model.fit`` will do with a Dense(1) model, without running TensorFlow.

The loss of a linear model is a quadratic in its weights, fixed by the sufficient
statistics of the data (:mod:`stablefit.diagnose.stability`). The forecast runs Keras's own
optimizer updates (:mod:`stablefit.diagnose.optimizers`) on that quadratic, in the model's
float type, from several draws of Keras's ``glorot_uniform`` initialization, and reports
the loss history Keras would print: where it first turns ``inf``/``NaN``, or where it ends.
One step costs O(d²) whatever the number of rows.

What is exact and what is not
-----------------------------
Full batch (``batch_size >= n``): one step per epoch on the exact gradient, so the
simulation is Keras's computation up to float32 summation order. Where float32 overflows
(a squared residual beyond 3.4e38 makes the loss ``inf``; an ``inf`` weight makes the next
predictions ``inf``; ``inf - inf`` makes ``NaN``), the signs of the data columns, from
their minimum and maximum, decide which ``inf`` meets which.

Minibatches: Keras takes ``ceil(n / batch_size)`` steps per epoch on shuffled batches and
reports the mean of the batch losses. The simulation takes as many steps, each on the
full-data gradient (the batch gradients' mean), and averages the losses at the step starts.
Gradient noise is left out, so results are given as ranges and called approximate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from stablefit.diagnose.optimizers import (
    ADAPTIVE,
    DEFAULT_LEARNING_RATE,
    OptimizerConfig,
    UpdateRule,
)
from stablefit.diagnose.stability import Quadratic, Spectrum, max_stable_learning_rate
from stablefit.errors import StablefitInputError

Outcome = Literal["diverges", "stalls", "converges"]

#: "Converges": the excess loss over the optimum falls to this share of its initial value.
CONVERGED_SHARE = 0.01
#: A loss that ends this many times above where it started counts as diverging.
GROWTH_DIVERGES = 10.0
#: Most optimizer steps one simulation takes; beyond it the rest is extrapolated.
MAX_STEPS = 20_000
#: The recommendation tries at most this many epochs before saying nothing converges.
MAX_RECOMMENDED_EPOCHS = 1000
_FLOAT_TYPES = {"float32": np.float32, "float64": np.float64}
_BIAS = "(bias)"


# -- the problem the simulation runs on ----------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    """A quadratic loss plus what float overflow needs: column magnitudes and signs."""

    quadratic: Quadratic
    max_abs: np.ndarray  # per weight: the largest |value| of its column (1 for the bias)
    sign: np.ndarray  # per weight: +1 / -1 when every value has that sign, 0 otherwise
    has_zero: np.ndarray  # per weight: the column holds an exact zero
    scales: np.ndarray | None = None  # standardized copy: the feature std devs

    @property
    def n(self) -> int:
        return self.quadratic.n

    @property
    def p(self) -> int:
        return len(self.quadratic.q)

    @classmethod
    def of_summary(cls, summary: Any, *, intercept: bool) -> _Problem:
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

    def standardized(self) -> _Problem:
        """The same data after ``(x - mean) / std`` per feature (what Normalization does).

        Only defined with an intercept: without a bias the model cannot absorb the means.
        """
        quad = self.quadratic
        if _BIAS not in quad.names:
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
        return _Problem(
            standardized,
            max_abs=np.append(spread, 1.0),
            sign=np.append(np.zeros(d), 1.0),
            has_zero=np.zeros(d + 1, dtype=bool),
            scales=scale,
        )


# -- the simulation --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """Loss histories of one configuration over several initializations."""

    epoch_loss: np.ndarray  # (runs, epochs), as Keras's History would hold them
    initial_loss: np.ndarray  # (runs,) exact loss at the initialization
    simulated_epochs: int  # epochs actually simulated (the rest held at the last value)
    steps_per_epoch: int


def _glorot_uniform(p: int, intercept: bool, seeds: Sequence[int], dtype: type) -> np.ndarray:
    """Keras's Dense init: kernel ~ U(±sqrt(6 / (fan_in + 1))), bias = 0."""
    d = p - int(intercept)
    limit = math.sqrt(6.0 / (d + 1))
    theta = np.zeros((len(seeds), p), dtype=dtype)
    for row, seed in enumerate(seeds):
        theta[row, :d] = np.random.default_rng(seed).uniform(-limit, limit, size=d)
    return theta


def _step_loss_and_gradient(
    problem: _Problem, theta: np.ndarray, dtype: type
) -> tuple[np.ndarray, np.ndarray]:
    """Loss (float64, with inf/NaN) and gradient (model dtype) as Keras would compute them."""
    fmax = float(np.finfo(dtype).max)
    runs, p = theta.shape
    loss = np.full(runs, np.nan)
    grad = np.full((runs, p), np.nan, dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        term_bound = np.abs(theta.astype(np.float64)) * problem.max_abs
        finite = np.isfinite(theta).all(axis=1)
        regular = finite & (term_bound.sum(axis=1) <= fmax)
        if regular.any():
            loss[regular] = problem.quadratic.loss(theta[regular])
            grad[regular] = problem.quadratic.gradient(theta[regular]).astype(dtype)
    for run in np.flatnonzero(~regular):
        loss[run], grad[run] = _overflowed(problem, theta[run], term_bound[run], fmax)
    return loss, grad


def _overflowed(
    problem: _Problem, theta: np.ndarray, term_bound: np.ndarray, fmax: float
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


def _simulate(
    problem: _Problem,
    config: OptimizerConfig,
    *,
    batch_size: int,
    epochs: int,
    dtype: type,
    seeds: Sequence[int],
    max_steps: int = MAX_STEPS,
) -> _Run:
    intercept = _BIAS in problem.quadratic.names
    theta = _glorot_uniform(problem.p, intercept, seeds, dtype)
    n = problem.n
    steps = max(1, math.ceil(n / batch_size))
    batch_rows = np.full(steps, batch_size, dtype=np.float64)
    batch_rows[-1] = n - batch_size * (steps - 1)
    fmax = float(np.finfo(dtype).max)
    simulated = min(epochs, max(1, max_steps // steps))
    rule = UpdateRule(config, theta.shape, dtype)
    history = np.full((len(seeds), epochs), np.nan)
    initial = problem.quadratic.loss(theta)
    alive = np.ones(len(seeds), dtype=bool)  # runs whose weights are not all NaN yet
    for epoch in range(simulated):
        total = np.zeros(len(seeds))
        for rows in batch_rows:
            loss, grad = _step_loss_and_gradient(problem, theta, dtype)
            with np.errstate(over="ignore", invalid="ignore"):
                total += loss * rows
            theta = np.where(alive[:, None], rule.apply(theta, grad), theta)
            alive &= ~np.isnan(theta).all(axis=1)
        # Keras's Mean tracker sums loss * batch rows in float: it overflows past fmax.
        with np.errstate(invalid="ignore"):
            history[:, epoch] = np.where(np.abs(total) > fmax, np.inf, total / n)
        if not alive.any():
            history[:, epoch + 1 :] = np.nan
            return _Run(history, initial, epochs, steps)
    if simulated < epochs:
        history[:, simulated:] = history[:, simulated - 1 : simulated]
    return _Run(history, initial, simulated, steps)


# -- summarizing the runs --------------------------------------------------------------------


def _first_true(mask: np.ndarray) -> np.ndarray:
    """Per row, the 1-based index of the first True (0 when none)."""
    return np.where(mask.any(axis=1), mask.argmax(axis=1) + 1, 0)


@dataclass(frozen=True)
class _Verdict:
    outcome: Outcome
    first_nonfinite: np.ndarray  # per run, 0 = stays finite
    first_nan: np.ndarray
    final_loss: np.ndarray  # per run


def _judge(run: _Run, optimal_loss: float, resolution: float) -> _Verdict:
    """Diverges (a loss turns inf/NaN or grows tenfold), converges (every run's excess
    falls to 1% of its initial value, or to the float resolution) or stalls."""
    history = run.epoch_loss
    nonfinite = _first_true(~np.isfinite(history))
    first_nan = _first_true(np.isnan(history))
    final = history[:, -1]
    if np.any(nonfinite) or np.any(final > GROWTH_DIVERGES * run.initial_loss):
        return _Verdict("diverges", nonfinite, first_nan, final)
    initial_excess = np.maximum(run.initial_loss - optimal_loss, 0.0)
    excess = np.maximum(final - optimal_loss, 0.0)
    converged = excess <= CONVERGED_SHARE * initial_excess + resolution
    outcome: Outcome = "converges" if converged.all() else "stalls"
    return _Verdict(outcome, nonfinite, first_nan, final)


def _loss_resolution(quadratic: Quadratic, dtype: type) -> float:
    """The loss a model in ``dtype`` cannot resolve: one rounding unit of the target, squared.

    Predictions carry a relative rounding error of ``eps``, so losses below
    ``eps² · mean(y²)`` are rounding noise (Keras may even print an exact 0 there).
    """
    mean_square_target = float(quadratic.loss(np.zeros((1, len(quadratic.q))))[0])
    return float(np.finfo(dtype).eps) ** 2 * mean_square_target


# -- the public result -----------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """A configuration the simulation shows converging (or the best found, and why not).

    ``outcome`` is the simulated outcome of exactly this configuration; ``code`` builds
    and trains it in tf.keras; ``note`` says how it was chosen.
    """

    scaling: str
    optimizer: str
    learning_rate: float
    epochs: int
    batch_size: int
    predicted_final_loss: float | None
    outcome: Outcome
    code: str
    note: str

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class TrainingForecast:
    """What ``model.fit`` will do with a Dense(1) model on these data.

    Losses are the mean squared error Keras reports. Ranges are (min, max) over the
    initialization seeds; ``None`` means "does not apply" and ``notes`` says why.
    """

    optimizer: str
    learning_rate: float
    momentum: float
    nesterov: bool
    batch_size: int
    epochs: int
    dtype: str
    outcome: Outcome
    first_nonfinite_epoch: int | None
    first_nonfinite_epoch_range: tuple[int, int] | None
    first_nan_epoch: int | None
    seeds_nonfinite: int
    seeds: tuple[int, ...]
    predicted_final_loss: float | None
    predicted_final_loss_range: tuple[float, float] | None
    optimal_loss: float
    loss_resolution: float
    initial_loss: float
    lambda_max: float
    max_stable_learning_rate: float | None
    stability_note: str
    dominant_feature: str | None
    steps_per_epoch: int
    exact: bool
    approximation: str
    recommended: Recommendation | None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able values (no NaN/inf: those become ``None``, with the reason in notes)."""
        data = _jsonable({k: v for k, v in asdict(self).items() if k != "recommended"})
        data["recommended"] = None if self.recommended is None else self.recommended.to_dict()
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# -- the forecast ----------------------------------------------------------------------------


def _validate(summary: Any, batch_size: int, epochs: int, dtype: str, seeds: Sequence[int]) -> type:
    if not getattr(summary, "has_target", False):
        raise StablefitInputError(
            "the training forecast needs a target: summarize the data with y (e.g. --target COL)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise StablefitInputError(f"batch_size={batch_size!r} must be a positive integer")
    if batch_size < 1:
        raise StablefitInputError(f"batch_size={batch_size} must be >= 1 (Keras uses 32)")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise StablefitInputError(f"epochs={epochs!r} must be a positive integer (e.g. 100)")
    if dtype not in _FLOAT_TYPES:
        raise StablefitInputError(
            f"dtype={dtype!r} is not simulated; use one of {', '.join(_FLOAT_TYPES)}"
        )
    if len(seeds) == 0:
        raise StablefitInputError("seeds=() is empty: give at least one seed, e.g. (0, 1, 2)")
    if summary.n_complete == 0:
        raise StablefitInputError(
            "no row has every feature and the target finite, so there is nothing to train on; "
            "fix or drop the NaN/inf values (the data checks name the rows)"
        )
    return _FLOAT_TYPES[dtype]


def forecast_training(
    summary: Any,
    *,
    optimizer: str = "adam",
    learning_rate: float | None = None,
    batch_size: int = 32,
    epochs: int = 100,
    momentum: float = 0.0,
    nesterov: bool = False,
    dtype: str = "float32",
    intercept: bool = True,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
) -> TrainingForecast:
    """Predict the loss history of a tf.keras Dense(1) model trained with MSE on these data.

    Parameters
    ----------
    summary : stablefit.summary.Summary
        The data's one-pass summary, with a target.
    optimizer : {"sgd", "adam", "adamw", "rmsprop", "adagrad"}
        The Keras optimizer, with Keras's default hyperparameters.
    learning_rate : float, optional
        Defaults to Keras's (SGD 0.01, the others 0.001).
    batch_size, epochs : int
        As given to ``model.fit``.
    momentum : float
        SGD's or RMSprop's momentum.
    nesterov : bool
        SGD's Nesterov momentum.
    dtype : {"float32", "float64"}
        The model's float type (Keras's default is float32).
    intercept : bool
        Whether the Dense layer has a bias (``use_bias=True`` is Keras's default).
    seeds : sequence of int
        One simulated ``glorot_uniform`` draw of the kernel per seed.

    Returns
    -------
    TrainingForecast

    Raises
    ------
    StablefitInputError
        For an unknown optimizer or dtype, a non-positive learning rate, batch size or
        epoch count, or a summary without a target or without a single complete row.

    Examples
    --------
    >>> import numpy as np
    >>> from stablefit.summary import Summary
    >>> X = np.array([[1.0, 1e6], [2.0, 2e6], [3.0, 3e6]])
    >>> summary = Summary.from_arrays(X, np.array([10.0, 20.0, 30.0]))
    >>> forecast = forecast_training(summary, optimizer="sgd")
    >>> forecast.outcome, forecast.first_nonfinite_epoch, forecast.first_nan_epoch
    ('diverges', 3, 6)
    """
    float_type = _validate(summary, batch_size, epochs, dtype, seeds)
    config = OptimizerConfig.resolve(optimizer, learning_rate, momentum, nesterov)
    seeds = tuple(int(s) for s in seeds)
    problem = _Problem.of_summary(summary, intercept=intercept)
    _, optimal_loss = problem.quadratic.optimum()
    spectrum = Spectrum.of(problem.quadratic)
    bound, stability_note = max_stable_learning_rate(config, spectrum.lambda_max)

    run = _simulate(
        problem, config, batch_size=batch_size, epochs=epochs, dtype=float_type, seeds=seeds
    )
    resolution = _loss_resolution(problem.quadratic, float_type)
    verdict = _judge(run, optimal_loss, resolution)
    notes: list[str] = []
    outcome = verdict.outcome
    nonfinite = verdict.first_nonfinite[verdict.first_nonfinite > 0]
    first_nan = verdict.first_nan[verdict.first_nan > 0]
    unusable = _rows_keras_cannot_train(summary, float_type)
    if unusable:
        outcome = "diverges"
        nonfinite = first_nan = np.array([1])
        notes.append(
            f"{unusable}: Keras's loss is NaN from epoch 1 if they are trained on; the rest "
            f"of this forecast is for the {summary.n_complete} complete rows"
        )

    finite_final = verdict.final_loss[np.isfinite(verdict.final_loss)]
    if outcome == "diverges":
        predicted, predicted_range = None, None
        notes.append("predicted_final_loss is null: the loss turns inf/NaN before the last epoch")
    else:
        predicted = float(np.median(finite_final))
        predicted_range = (float(finite_final.min()), float(finite_final.max()))

    exact = run.steps_per_epoch == 1 and run.simulated_epochs == epochs
    if bound is None:
        notes.append(f"max_stable_learning_rate is null: {stability_note}")
    return TrainingForecast(
        optimizer=config.name,
        learning_rate=config.learning_rate,
        momentum=config.momentum,
        nesterov=config.nesterov,
        batch_size=int(batch_size),
        epochs=int(epochs),
        dtype=dtype,
        outcome=outcome,
        first_nonfinite_epoch=int(nonfinite.min()) if nonfinite.size else None,
        first_nonfinite_epoch_range=(int(nonfinite.min()), int(nonfinite.max()))
        if nonfinite.size
        else None,
        first_nan_epoch=int(first_nan.min()) if first_nan.size else None,
        seeds_nonfinite=len(seeds) if unusable else int(np.count_nonzero(verdict.first_nonfinite)),
        seeds=seeds,
        predicted_final_loss=predicted,
        predicted_final_loss_range=predicted_range,
        optimal_loss=optimal_loss,
        loss_resolution=resolution,
        initial_loss=float(np.median(run.initial_loss)),
        lambda_max=spectrum.lambda_max,
        max_stable_learning_rate=bound,
        stability_note=stability_note,
        dominant_feature=problem.quadratic.names[spectrum.dominant_index]
        if spectrum.lambda_max > 0
        else None,
        steps_per_epoch=run.steps_per_epoch,
        exact=exact,
        approximation=_approximation_text(run, epochs, problem.n, batch_size),
        recommended=_recommend(
            problem,
            config,
            user_outcome=outcome,
            user_final=predicted,
            batch_size=batch_size,
            epochs=epochs,
            dtype=float_type,
            seeds=seeds,
            optimal_loss=optimal_loss,
            resolution=resolution,
            unusable_rows=bool(unusable),
        ),
        notes=tuple(notes),
    )


def _rows_keras_cannot_train(summary: Any, float_type: type) -> str:
    """Describe rows whose values are NaN/inf in the model's float type (empty if none)."""
    problems = []
    if summary.n_complete < summary.n_rows:
        problems.append(f"{summary.n_rows - summary.n_complete} rows hold NaN or inf")
    fmax = float(np.finfo(float_type).max)
    too_big = [
        name
        for name, value in zip(summary.names, summary.columns.max_abs, strict=True)
        if np.isfinite(value) and value > fmax
    ]
    if too_big:
        problems.append(
            f"values of {', '.join(too_big)} exceed the {np.dtype(float_type).name} range "
            f"({fmax:.3g}) and become inf"
        )
    return "; ".join(problems)


def _approximation_text(run: _Run, epochs: int, n: int, batch_size: int) -> str:
    parts = []
    if run.steps_per_epoch == 1:
        parts.append(
            "full batch: the simulation repeats Keras's computation in the model's float "
            "type, up to summation order"
        )
    else:
        parts.append(
            f"minibatches ({run.steps_per_epoch} steps of {batch_size} rows per epoch, "
            f"n = {n}): each step is simulated on the full-data gradient, which Keras's "
            "shuffled batch gradients average to; their noise is left out, so the epoch of "
            "the first inf/NaN can come a few epochs earlier in Keras and final losses are "
            "approximate (read the ranges)"
        )
    if run.simulated_epochs < epochs:
        parts.append(
            f"only the first {run.simulated_epochs} of {epochs} epochs were simulated "
            f"(at most {MAX_STEPS} steps); later epochs are held at the last simulated loss, "
            "which overstates the final loss of a run still improving"
        )
    return "; ".join(parts)


# -- the recommendation ----------------------------------------------------------------------


def _nice_rates_below(bound: float, count: int = 6) -> list[float]:
    """1-2-5 learning rates from just under ``bound`` downward."""
    exponent = math.floor(math.log10(bound))
    rates = []
    for e in range(exponent, exponent - 4, -1):
        for mantissa in (5.0, 2.0, 1.0):
            rate = float(f"{mantissa}e{e}")
            if rate < 0.9 * bound:
                rates.append(rate)
    return rates[:count]


def _candidate_rates(config: OptimizerConfig, lambda_max: float) -> list[float]:
    if config.name in ADAPTIVE:
        return [1.0, 0.3, 0.1, 0.03, 0.01, 0.003]
    bound, _ = max_stable_learning_rate(config, lambda_max)
    return _nice_rates_below(bound) if bound else [DEFAULT_LEARNING_RATE[config.name]]


def _recommend(
    problem: _Problem,
    config: OptimizerConfig,
    *,
    user_outcome: Outcome,
    user_final: float | None,
    batch_size: int,
    epochs: int,
    dtype: type,
    seeds: tuple[int, ...],
    optimal_loss: float,
    resolution: float,
    unusable_rows: bool,
) -> Recommendation | None:
    """Find a configuration that converges: the user's own, else scaled data and a rate."""
    if user_outcome == "converges" and not unusable_rows:
        return _recommendation(
            "none", config, epochs, batch_size, user_final, "converges", problem,
            "the configuration as given converges",
        )  # fmt: skip
    intercept = _BIAS in problem.quadratic.names
    scaled = problem.standardized() if intercept else problem
    scaling = "standardize" if intercept else "none"
    lambda_max = Spectrum.of(scaled.quadratic).lambda_max
    optimizers = [config.name] + [name for name in ("adam", "sgd") if name != config.name]
    best: tuple[float, OptimizerConfig, int, Outcome] | None = None
    budget = MAX_RECOMMENDED_EPOCHS
    for tries in sorted({min(epochs * f, budget) for f in (1, 2, 5, 10)} | {budget}):
        if tries < epochs:
            continue
        for name in optimizers:
            keep_momentum = name == config.name
            base = OptimizerConfig(
                name,
                DEFAULT_LEARNING_RATE[name],
                config.momentum if keep_momentum else 0.0,
                config.nesterov if keep_momentum else False,
            )
            converging = []
            for rate in _candidate_rates(base, lambda_max):
                candidate = OptimizerConfig(base.name, rate, base.momentum, base.nesterov)
                run = _simulate(
                    scaled, candidate, batch_size=batch_size, epochs=tries, dtype=dtype,
                    seeds=seeds, max_steps=MAX_STEPS // 4,
                )  # fmt: skip
                verdict = _judge(run, optimal_loss, resolution)
                if verdict.outcome == "diverges":
                    continue
                final = float(np.median(verdict.final_loss))
                if verdict.outcome == "converges":
                    converging.append((final, candidate))
                elif best is None or final < best[0]:
                    best = (final, candidate, tries, verdict.outcome)
            if converging:
                final, chosen = min(converging, key=lambda item: item[0])
                note = (
                    f"the simulation on {scaling}d features shows it converging in {tries} "
                    f"epochs (excess loss <= {CONVERGED_SHARE:.0%} of its initial value)"
                )
                return _recommendation(
                    scaling, chosen, tries, batch_size, final, "converges", problem, note
                )
    if best is None:
        return None
    final, chosen, tries, outcome = best
    note = (
        f"no configuration tried (standardized features; {', '.join(optimizers)}; "
        f"learning rates on a 1-2-5 grid; up to {budget} epochs) converges; this one "
        "gets closest"
    )
    return _recommendation(scaling, chosen, tries, batch_size, final, outcome, problem, note)


def _recommendation(
    scaling: str,
    config: OptimizerConfig,
    epochs: int,
    batch_size: int,
    final: float | None,
    outcome: Outcome,
    problem: _Problem,
    note: str,
) -> Recommendation:
    return Recommendation(
        scaling=scaling,
        optimizer=config.name,
        learning_rate=config.learning_rate,
        epochs=epochs,
        batch_size=batch_size,
        predicted_final_loss=final,
        outcome=outcome,
        code=_code(scaling, config, epochs, batch_size, problem),
        note=note,
    )


def _code(
    scaling: str, config: OptimizerConfig, epochs: int, batch_size: int, problem: _Problem
) -> str:
    """A tf.keras snippet that trains the recommended configuration."""
    quad = problem.quadratic
    d = problem.p - int(_BIAS in quad.names)
    means = quad.a[:d]
    std = np.sqrt(np.maximum(np.diag(quad.Q[:d, :d]), 0.0) / quad.n)
    # float32 cannot resolve small deviations from a large offset: center in float64 first.
    large_offset = bool(np.any(np.abs(means) > 1e4 * np.where(std > 0, std, np.inf)))
    lines = ["import numpy as np", "import tensorflow as tf", ""]
    layers = []
    if scaling == "standardize" and large_offset:
        lines += [
            "from sklearn.preprocessing import StandardScaler",
            "",
            "# Standardize in float64 before Keras casts to float32: the features have",
            "# offsets float32 cannot resolve.",
            "scaler = StandardScaler()",
            "X = scaler.fit_transform(np.asarray(X, dtype=np.float64))",
            "",
        ]
    elif scaling == "standardize":
        lines += [
            "normalizer = tf.keras.layers.Normalization(axis=-1)",
            'normalizer.adapt(np.asarray(X, dtype="float32"))',
            "",
        ]
        layers.append("normalizer")
    layers.append("tf.keras.layers.Dense(1)")
    lines += [
        "model = tf.keras.Sequential([",
        "    tf.keras.Input(shape=(X.shape[1],)),",
        *(f"    {layer}," for layer in layers),
        "])",
        f'model.compile(optimizer={config.keras_expression()}, loss="mse")',
        f"model.fit(X, y, epochs={epochs}, batch_size={batch_size})",
    ]
    return "\n".join(lines)
