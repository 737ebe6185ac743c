"""Forecast what training a linear model with the MSE will do, without running it.

:func:`forecast_training` simulates training a Keras ``Dense(1)`` model (``model.fit``) or
a PyTorch ``nn.Linear(d, 1)`` (a ``DataLoader`` loop with ``torch.optim``) on the data's
sufficient statistics (:mod:`stablefit.diagnose.simulation`), reads the loss history it
would print — where it first turns ``inf``/``NaN``, or where it ends — adds the stability
bound of the optimizer (:mod:`stablefit.diagnose.stability`), and searches for a
configuration that converges.

What is exact and what is not
-----------------------------
Full batch (``batch_size >= n``): one step per epoch on the exact gradient, so the
simulation is the framework's computation up to float32 summation order.

Minibatches: the framework takes ``ceil(n / batch_size)`` steps per epoch on shuffled
batches and reports the mean of the batch losses. The simulation takes as many steps, each
on the full-data gradient (the batch gradients' mean), and averages the losses at the step
starts. Gradient noise is left out, so results are given as ranges and called approximate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from stablefit.diagnose.findings import format_number
from stablefit.diagnose.frameworks import (
    DEFAULT_LEARNING_RATES,
    KERAS,
    LABELS,
    TORCH,
    check_framework,
    training_code,
)
from stablefit.diagnose.optimizers import ADAPTIVE, OptimizerConfig
from stablefit.diagnose.simulation import (
    BIAS,
    CONVERGED_SHARE,
    MAX_STEPS,
    Outcome,
    Problem,
    Run,
    judge,
    loss_resolution,
    simulate,
)
from stablefit.diagnose.stability import Spectrum, max_stable_learning_rate
from stablefit.errors import StablefitInputError

if TYPE_CHECKING:
    from stablefit.diagnose.stability_map import StabilityMap
    from stablefit.summary import Summary

#: The recommendation tries at most this many epochs before saying nothing converges.
MAX_RECOMMENDED_EPOCHS = 1000
#: A converging configuration whose final loss is more than this many times the optimum is
#: compared with the same on standardized features, recommended when it ends this many
#: times lower.
FAR_ABOVE = 2.0
#: The first step of a recommendation made on the rows the data can train on.
DROP_ROWS = "drop the rows with NaN/inf"
_FLOAT_TYPES = {"float32": np.float32, "float64": np.float64}
#: Epochs a LossHistory keeps at most: a plot needs no more, whatever ``epochs`` was.
HISTORY_POINTS = 1000
#: Most epochs a forecast covers. The cost model: at most ``MAX_STEPS`` optimizer steps
#: are simulated one by one (O(d²) each); every epoch after them costs a closed-form step
#: for SGD (about 20 µs) or a copy for the adaptive optimizers, and 8 bytes per run
#: (seeds × learning rates) in the loss history. At this budget that is about 2 s and
#: 1 MB per run; twenty million epochs took minutes and gigabytes.
MAX_FORECAST_EPOCHS = 100_000


# -- the public result -----------------------------------------------------------------------


@dataclass(frozen=True)
class LossHistory:
    """The simulated loss Keras's History would hold, per initialization seed.

    Attributes
    ----------
    epochs : ndarray of int
        1-based epochs: all of them, or at most :data:`HISTORY_POINTS` evenly spread ones
        that include each seed's first non-finite epoch.
    losses : ndarray of float, shape (seeds, len(epochs))
        The loss at the end of each of those epochs, ``inf``/``NaN`` where Keras's is.
    """

    epochs: np.ndarray
    losses: np.ndarray

    @classmethod
    def of(cls, epoch_loss: np.ndarray, points: int = HISTORY_POINTS) -> LossHistory:
        """From a (seeds, epochs) array of losses, thinned to about ``points`` epochs."""
        epoch_loss = np.atleast_2d(np.asarray(epoch_loss, dtype=np.float64))
        total = epoch_loss.shape[1]
        keep = np.arange(total)
        if total > points:
            nonfinite = ~np.isfinite(epoch_loss)
            firsts = nonfinite.argmax(axis=1)[nonfinite.any(axis=1)]
            spread = np.round(np.linspace(0, total - 1, points)).astype(np.int64)
            keep = np.unique(np.concatenate([spread, firsts]))
        return cls(epochs=keep + 1, losses=epoch_loss[:, keep].copy())

    @property
    def median(self) -> np.ndarray:
        """The median over the seeds per epoch (NaN where any seed's loss is NaN)."""
        return np.median(self.losses, axis=0)


@dataclass(frozen=True)
class Recommendation:
    """A configuration the simulation shows converging (or the best found, and why not).

    ``outcome`` is the simulated outcome of exactly this configuration; ``code`` builds
    and trains it in the forecast's framework (tf.keras or PyTorch); ``note`` says how it
    was chosen.
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
    loss_history: LossHistory | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able values; the loss history is left out (it is for plots)."""
        return _jsonable(_fields_except(self, "loss_history"))


@dataclass(frozen=True)
class TrainingForecast:
    """What training a linear model (Keras ``Dense(1)``, torch ``nn.Linear``) will do.

    Losses are the mean squared error the framework reports for an epoch. Ranges are
    (min, max) over the initialization seeds; ``None`` means "does not apply" and
    ``notes`` says why.

    Attributes
    ----------
    optimizer, learning_rate, momentum, nesterov, batch_size, epochs, dtype
        The configuration forecast (the learning rate resolved to the framework's
        default).
    outcome : {"diverges", "stalls", "converges"}
        "diverges": some seed's loss turns inf/NaN, or ends 10x above where it started;
        "converges": every seed's excess loss over the optimum falls to <= 1% of its
        initial value (or to ``loss_resolution``) by the last epoch; "stalls" otherwise.
    first_nonfinite_epoch : int or None
        The first epoch (1-based, as in Keras's History) whose loss is inf or NaN, earliest
        over the seeds; None when every loss stays finite.
    first_nonfinite_epoch_range : (int, int) or None
        Min and max of that epoch over the seeds that go non-finite.
    first_nan_epoch : int or None
        The first epoch whose loss is NaN (an inf loss usually comes a few epochs earlier).
    seeds_nonfinite : int
        How many runs go non-finite: one run per seed, or per row of the initial weights
        given (``seeds`` is empty then).
    predicted_final_loss, predicted_final_loss_range : float, (float, float) or None
        The last epoch's loss: median and range over the seeds (None once a loss is
        non-finite).
    optimal_loss : float
        The least-squares minimum of the MSE.
    loss_resolution : float
        ``eps² · mean(y²)`` of the dtype: losses below it are rounding noise.
    initial_loss : float
        The loss at the framework's initialization (median over the seeds).
    lambda_max : float
        The largest eigenvalue of the Hessian ``H = (2/n) AᵀA``.
    max_stable_learning_rate : float or None
        The optimizer's divergence threshold on this loss (None for the adaptive ones).
    stability_note : str
        Where that bound comes from, or why there is none.
    dominant_feature : str or None
        The weight with the largest share of λmax's eigenvector (``"(bias)"`` possible).
    steps_per_epoch : int
        ``ceil(n / batch_size)`` (``n // batch_size`` with ``drop_last``).
    exact : bool
        True when the simulation is the framework's computation (full batch, every step
        simulated).
    approximation : str
        What the simulation approximates, and how.
    recommended : Recommendation or None
        A configuration the same simulation shows converging, or the closest one found.
    notes : tuple of str
        Why a field is None, and warnings about the data.
    loss_history : LossHistory or None
        The simulated loss per epoch and seed (None when nothing could be simulated).
    problem : Problem or None
        The quadratic loss the simulation ran on, kept for :attr:`stability_map`.
    framework : {"keras", "torch"}
        Whose training is forecast.
    optimizer_options : dict
        The optimizer's other hyperparameters that differ from the framework's defaults
        (e.g. torch's ``weight_decay``, ``dampening``, ``betas``).
    drop_last : bool
        Whether each epoch's last, partial batch is left out (torch's ``DataLoader``).
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
    loss_history: LossHistory | None = field(default=None, repr=False, compare=False)
    problem: Problem | None = field(default=None, repr=False, compare=False)
    framework: str = KERAS
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    drop_last: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able values (no NaN/inf: those become ``None``, with the reason in notes).

        The loss history and the problem are left out: they are for plots.
        """
        data = _jsonable(_fields_except(self, "recommended", "loss_history", "problem"))
        data["recommended"] = None if self.recommended is None else self.recommended.to_dict()
        return data

    @cached_property
    def stability_map(self) -> StabilityMap | None:
        """Outcomes over a grid of learning rates for each optimizer, computed on first use.

        See :func:`stablefit.diagnose.stability_map.stability_map`; None when nothing
        could be simulated (sums of squares beyond float64).
        """
        if self.problem is None:
            return None
        from stablefit.diagnose.stability_map import stability_map

        return stability_map(self)


def _fields_except(instance: Any, *left_out: str) -> dict[str, Any]:
    """A dataclass's fields as a dict (nested values as they are), without ``left_out``."""
    return {f.name: getattr(instance, f.name) for f in fields(instance) if f.name not in left_out}


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


def _validate(
    summary: Summary,
    batch_size: int,
    epochs: int,
    dtype: str,
    seeds: Sequence[int],
    framework: str,
    drop_last: bool,
) -> type:
    if not getattr(summary, "has_target", False):
        raise StablefitInputError(
            "the training forecast needs a target: summarize the data with y (e.g. --target COL)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise StablefitInputError(f"batch_size={batch_size!r} must be a positive integer")
    if batch_size < 1:
        raise StablefitInputError(f"batch_size={batch_size} must be >= 1 (e.g. 32)")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise StablefitInputError(f"epochs={epochs!r} must be a positive integer (e.g. 100)")
    if epochs > MAX_FORECAST_EPOCHS:
        raise StablefitInputError(
            f"epochs={epochs:,} is more than a forecast covers ({MAX_FORECAST_EPOCHS:,}: its "
            "time and memory grow with the epochs); forecast at most that many, and a run "
            "that has not converged by then will not with these settings either"
        )
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
    if drop_last and framework != TORCH:
        raise StablefitInputError(
            "drop_last=True is a torch DataLoader option; Keras's fit trains on every row: "
            "drop it or give framework='torch'"
        )
    if drop_last and summary.n_complete < batch_size:
        raise StablefitInputError(
            f"drop_last=True with batch_size={batch_size} and {summary.n_complete} complete "
            "rows leaves no batch to train on: lower batch_size or drop drop_last"
        )
    return _FLOAT_TYPES[dtype]


def forecast_training(
    summary: Summary,
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
    framework: str = KERAS,
    optimizer_options: Mapping[str, Any] | None = None,
    drop_last: bool = False,
    initial_weights: np.ndarray | None = None,
) -> TrainingForecast:
    """Predict the loss history of a linear model trained with the MSE on these data.

    Parameters
    ----------
    summary : stablefit.summary.Summary
        The data's one-pass summary, with a target.
    optimizer : {"sgd", "adam", "adamw", "rmsprop", "adagrad"}
        The optimizer (``keras.optimizers.<Name>`` or ``torch.optim.<Name>``).
    learning_rate : float, optional
        Defaults to the framework's (Keras: SGD 0.01, the others 0.001; torch: SGD, Adam
        and AdamW 0.001, RMSprop and Adagrad 0.01).
    batch_size, epochs : int
        As given to ``model.fit`` or the ``DataLoader`` and the epoch loop.
    momentum : float
        SGD's or RMSprop's momentum.
    nesterov : bool
        SGD's Nesterov momentum.
    dtype : {"float32", "float64"}
        The model's float type (float32 is both frameworks' default).
    intercept : bool
        Whether the model has a bias (``use_bias=True``, ``bias=True`` by default).
    seeds : sequence of int
        One initialization per seed: a ``glorot_uniform`` draw of the kernel for Keras;
        for torch, exactly the ``nn.Linear`` that ``torch.manual_seed(seed)`` gives.
    framework : {"keras", "torch"}
        Whose update rules, defaults, initialization and epoch loss are simulated.
    optimizer_options : mapping, optional
        The optimizer's other hyperparameters by the framework's argument names, e.g.
        ``{"weight_decay": 1e-4, "dampening": 0.1}`` for ``torch.optim.SGD`` or
        ``{"betas": (0.9, 0.99), "eps": 1e-6}`` for torch's Adam; defaults otherwise.
    drop_last : bool
        torch only: the ``DataLoader`` leaves out each epoch's last, partial batch.
    initial_weights : ndarray, optional
        Weights to start from instead of the seeds' draws: the kernel (or ``nn.Linear``'s
        weight) then the bias, one row per run (preflight passes the model's own). The
        forecast's ``seeds`` is then empty; the recommendation still uses ``seeds``.

    Returns
    -------
    TrainingForecast

    Raises
    ------
    StablefitInputError
        For an unknown framework, optimizer, hyperparameter or dtype, a non-positive
        learning rate, batch size or epoch count, or a summary without a target or without
        a single complete row.

    Examples
    --------
    >>> import numpy as np
    >>> from stablefit.summary import Summary
    >>> X = np.array([[1.0, 1e6], [2.0, 2e6], [3.0, 3e6]])
    >>> summary = Summary.from_arrays(X, np.array([10.0, 20.0, 30.0]))
    >>> forecast = forecast_training(summary, optimizer="sgd")
    >>> forecast.outcome, forecast.first_nonfinite_epoch, forecast.first_nan_epoch
    ('diverges', 3, 6)
    >>> torch_sgd = forecast_training(summary, optimizer="sgd", learning_rate=0.01,
    ...                               framework="torch")
    >>> torch_sgd.outcome, torch_sgd.first_nonfinite_epoch
    ('diverges', 3)
    """
    framework = check_framework(framework)
    float_type = _validate(summary, batch_size, epochs, dtype, seeds, framework, drop_last)
    config = OptimizerConfig.resolve(
        optimizer,
        learning_rate,
        momentum,
        nesterov,
        framework=framework,
        options=optimizer_options,
    )
    seeds = tuple(int(s) for s in seeds)
    problem = Problem.of_summary(summary, intercept=intercept)
    if not problem.quadratic.is_finite:
        return _unrepresentable(summary, config, batch_size, epochs, dtype, seeds, drop_last)
    _, optimal_loss = problem.quadratic.optimum()
    spectrum = Spectrum.of(problem.quadratic)
    bound, stability_note = max_stable_learning_rate(config, spectrum.lambda_max)

    start = _start(initial_weights, problem.p)
    run = simulate(
        problem,
        config,
        batch_size=batch_size,
        epochs=epochs,
        dtype=float_type,
        seeds=seeds,
        drop_last=drop_last,
        start=start,
    )
    resolution = loss_resolution(problem.quadratic, float_type)
    verdict = judge(run, optimal_loss, resolution)
    notes: list[str] = []
    outcome = verdict.outcome
    nonfinite = verdict.first_nonfinite[verdict.first_nonfinite > 0]
    first_nan = verdict.first_nan[verdict.first_nan > 0]
    unusable = _rows_the_model_cannot_train(summary, float_type)
    if unusable:
        outcome = "diverges"
        nonfinite = first_nan = np.array([1])
        notes.append(
            f"{unusable}: {LABELS[framework]}'s loss is NaN from epoch 1 if they are trained "
            f"on; the rest of this forecast is for the {summary.n_complete} complete rows"
        )

    if outcome == "diverges" and not nonfinite.size:
        notes.append(_growth_note(run, epochs, problem.n, float_type))
    finite_final = verdict.final_loss[np.isfinite(verdict.final_loss)]
    if nonfinite.size:
        predicted, predicted_range = None, None
        notes.append("predicted_final_loss is null: the loss turns inf/NaN before the last epoch")
    else:
        predicted = float(np.median(finite_final))
        # Minibatch noise scatters a final loss by about ±2 standard deviations.
        spread = 2.0 * float(run.noise_std.max())
        predicted_range = (
            max(float(finite_final.min()) - spread, optimal_loss),
            float(finite_final.max()) + spread,
        )

    exact = run.steps_per_epoch == 1 and run.stepped_epochs == epochs
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
        seeds_nonfinite=(
            len(run.initial_loss) if unusable else int(np.count_nonzero(verdict.first_nonfinite))
        ),
        seeds=seeds if start is None else (),
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
        approximation=_approximation_text(run, epochs, problem.n, batch_size, framework),
        recommended=_recommend(
            problem,
            config,
            user_outcome=verdict.outcome,
            user_final=float(np.median(verdict.final_loss)),
            batch_size=batch_size,
            epochs=epochs,
            dtype=float_type,
            seeds=seeds,
            optimal_loss=optimal_loss,
            resolution=resolution,
            # Rows with NaN/inf; values beyond the float type's range are the scaling's.
            drop_rows=summary.n_complete < summary.n_rows,
            drop_last=drop_last,
            user_run=run,
        ),
        notes=tuple(notes),
        # The framework trains on every row: with NaN/inf rows its loss is NaN from epoch 1.
        loss_history=LossHistory.of(
            np.full_like(run.epoch_loss, np.nan) if unusable else run.epoch_loss
        ),
        problem=problem,
        framework=framework,
        optimizer_options=dict(config.options),
        drop_last=bool(drop_last),
    )


def _start(initial_weights: np.ndarray | None, p: int) -> np.ndarray | None:
    """The given initial weights as rows of ``p``, or an error naming the shape."""
    if initial_weights is None:
        return None
    start = np.atleast_2d(np.asarray(initial_weights, dtype=np.float64))
    if start.ndim != 2 or start.shape[1] != p or len(start) == 0:
        raise StablefitInputError(
            f"initial_weights has shape {np.shape(initial_weights)}; expected {p} weights "
            "(the features' then the bias), or rows of them"
        )
    return start


def _growth_note(run: Run, epochs: int, n: int, float_type: type) -> str:
    """Say how fast a still-finite diverging loss grows, and when it would overflow."""
    history = run.epoch_loss
    worst = int(np.argmax(history[:, -1] / run.initial_loss))
    growth = history[worst, -1] / run.initial_loss[worst]
    text = f"the loss grows {growth:.3g}-fold over {epochs} epochs but stays finite within them"
    if epochs >= 2 and history[worst, -2] > 0:
        rate = history[worst, -1] / history[worst, -2]
        limit = float(np.finfo(float_type).max) / n
        if rate > 1 and history[worst, -1] < limit:
            more = math.log(limit / history[worst, -1]) / math.log(rate)
            text += f"; at its last rate it turns inf around epoch {epochs + math.ceil(more)}"
    return text


def _unrepresentable(
    summary: Summary,
    config: OptimizerConfig,
    batch_size: int,
    epochs: int,
    dtype: str,
    seeds: tuple[int, ...],
    drop_last: bool,
) -> TrainingForecast:
    """The forecast when even float64 sums of squares overflow: inf/NaN from epoch 1."""
    too_big = [
        name
        for name, value in zip(summary.names, summary.columns.max_abs, strict=True)
        if np.isfinite(value) and value > math.sqrt(np.finfo(np.float64).max)
    ]
    reason = (
        f"values of {', '.join(too_big) or 'some column'} are so large (> 1.3e154) that "
        f"their squares overflow even float64: {LABELS[config.framework]}'s float32 model "
        "sees inf from epoch 1, and nothing else can be computed; rescale those columns"
    )
    return TrainingForecast(
        optimizer=config.name,
        learning_rate=config.learning_rate,
        momentum=config.momentum,
        nesterov=config.nesterov,
        batch_size=int(batch_size),
        epochs=int(epochs),
        dtype=dtype,
        outcome="diverges",
        first_nonfinite_epoch=1,
        first_nonfinite_epoch_range=(1, 1),
        first_nan_epoch=1,
        seeds_nonfinite=len(seeds),
        seeds=seeds,
        predicted_final_loss=None,
        predicted_final_loss_range=None,
        optimal_loss=math.nan,
        loss_resolution=math.nan,
        initial_loss=math.inf,
        lambda_max=math.inf,
        max_stable_learning_rate=None,
        stability_note=reason,
        dominant_feature=too_big[0] if too_big else None,
        steps_per_epoch=(
            summary.n_complete // batch_size
            if drop_last
            else max(1, math.ceil(summary.n_complete / batch_size))
        ),
        exact=False,
        approximation="nothing simulated: " + reason,
        recommended=None,
        notes=(
            reason,
            "optimal_loss, loss_resolution, initial_loss and lambda_max are null: they "
            "overflow float64",
        ),
        framework=config.framework,
        optimizer_options=dict(config.options),
        drop_last=bool(drop_last),
    )


def _rows_the_model_cannot_train(summary: Summary, float_type: type) -> str:
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


def _approximation_text(run: Run, epochs: int, n: int, batch_size: int, framework: str) -> str:
    parts = []
    label = LABELS[framework]
    if run.steps_per_epoch == 1:
        parts.append(
            f"full batch: the simulation repeats {label}'s computation in the model's float "
            "type, up to summation order"
        )
    else:
        parts.append(
            f"minibatches ({run.steps_per_epoch} steps of {batch_size} rows per epoch, "
            f"n = {n}): each step is simulated on the full-data gradient, which {label}'s "
            "shuffled batch gradients average to; for SGD the loss their noise adds at a "
            "constant learning rate is added from the optimal residual variance (rows taken "
            "as Gaussian-like) and the range widened by twice its spread, for the adaptive "
            "optimizers it is left out; the epoch of the "
            "first inf/NaN can differ by a few epochs and final losses are approximate"
        )
    if run.closed_form:
        parts.append(
            f"epochs after the first {run.stepped_epochs} (the budget of {MAX_STEPS} "
            "simulated steps) follow in closed form on the Hessian's eigenmodes, in float64 "
            "without float32 rounding"
        )
    elif run.stepped_epochs < epochs or run.steps_per_epoch > MAX_STEPS:
        simulated = min(run.steps_per_epoch, MAX_STEPS) * run.stepped_epochs
        parts.append(
            f"only the first {simulated} of {run.steps_per_epoch * epochs} steps were "
            "simulated; later epochs are held at the last simulated loss, which overstates "
            "the final loss of a run still improving"
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
    if not bound:
        return [config.learning_rate]
    return _nice_rates_below(bound)


def _recommend(
    problem: Problem,
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
    drop_rows: bool,
    user_run: Run,
    drop_last: bool,
) -> Recommendation | None:
    """Find a configuration that converges: the user's own, else scaled data and a rate.

    The user's optimizer keeps its options (momentum, weight decay, ...); the others are
    tried at the framework's defaults.
    """
    loader = {"batch_size": batch_size, "drop_last": drop_last}
    search = {
        "epochs": epochs,
        "dtype": dtype,
        "seeds": seeds,
        "optimal_loss": optimal_loss,
        "resolution": resolution,
    }
    intercept = BIAS in problem.quadratic.names
    scaling = "standardize" if intercept else "none"
    if drop_rows:
        scaling = DROP_ROWS if scaling == "none" else f"{DROP_ROWS}, then {scaling}"
    if user_outcome == "converges":
        note = "the configuration as given converges" + (
            " once those rows are dropped" if drop_rows else ""
        )
        as_given = DROP_ROWS if drop_rows else "none"
        if (
            intercept
            and optimal_loss > 0
            and user_final is not None
            and user_final > FAR_ABOVE * optimal_loss + resolution
        ):
            # Converging by the share of the initial excess, but to a loss far above the
            # optimum: the same optimizer and rate on standardized features may end far lower.
            runs = simulate(
                problem.standardized(), config, batch_size=batch_size, epochs=epochs,
                dtype=dtype, seeds=seeds, drop_last=drop_last,
            )  # fmt: skip
            run = runs.of_rate(0, len(seeds))
            verdict = judge(run, optimal_loss, resolution)
            final = float(np.median(verdict.final_loss))
            far = (
                f"the configuration as given converges, but to a loss of "
                f"{format_number(user_final)}, {format_number(user_final / optimal_loss)} "
                "times the optimum"
            )
            if verdict.outcome == "converges" and final <= user_final / FAR_ABOVE:
                note = (
                    f"{far}; on standardized features the same optimizer and rate reach "
                    f"{format_number(final)}"
                )
                return _recommendation(
                    scaling, config, epochs, loader, final, "converges", problem, note, run
                )
            # The same rate is too small for the standardized weights too (a large target
            # scale, say): the search may find a rate or optimizer that ends near the optimum.
            below = FAR_ABOVE * optimal_loss + resolution
            found = _search(problem, config, scaling, loader, below=below, **search)
            if (
                found is not None
                and found.outcome == "converges"
                and found.predicted_final_loss <= below
            ):
                return replace(found, note=f"{far}; {found.note}")
        return _recommendation(
            as_given, config, epochs, loader, user_final, "converges", problem, note, user_run
        )
    return _search(problem, config, scaling, loader, **search)


def _search(
    problem: Problem,
    config: OptimizerConfig,
    scaling: str,
    loader: dict[str, Any],
    *,
    epochs: int,
    dtype: type,
    seeds: tuple[int, ...],
    optimal_loss: float,
    resolution: float,
    below: float = math.inf,
) -> Recommendation | None:
    """The converging configuration that ends lowest, on scaled data, trying the user's
    optimizer, then Adam and SGD, on learning rates below the stability bound and for
    ``epochs`` up to ten times as many (at most ``MAX_RECOMMENDED_EPOCHS``); else the one
    that gets closest. Only a configuration that ends ``below`` that loss counts as
    converging."""
    batch_size, drop_last = loader["batch_size"], loader["drop_last"]
    scaled = problem.standardized() if BIAS in problem.quadratic.names else problem
    lambda_max = Spectrum.of(scaled.quadratic).lambda_max
    optimizers = [config.name] + [name for name in ("adam", "sgd") if name != config.name]
    best: tuple[float, OptimizerConfig, int, Outcome, Run] | None = None
    budget = MAX_RECOMMENDED_EPOCHS
    capped: set[str] = set()
    for tries in sorted({min(epochs * f, budget) for f in (1, 2, 5, 10)} | {budget}):
        if tries < epochs:
            continue
        for name in optimizers:
            if name in capped:
                continue  # its last try already hit the step budget: more epochs add nothing
            default_rate = DEFAULT_LEARNING_RATES[config.framework][name]
            if name == config.name:
                base = config.with_learning_rate(default_rate)
            else:
                base = OptimizerConfig(name, default_rate, framework=config.framework)
            rates = _candidate_rates(base, lambda_max)
            runs = simulate(
                scaled, base, batch_size=batch_size, epochs=tries, dtype=dtype, seeds=seeds,
                learning_rates=rates, max_steps=MAX_STEPS // 4, drop_last=drop_last,
            )  # fmt: skip
            if runs.stepped_epochs < tries and not runs.closed_form:
                capped.add(name)
            converging = []
            for index, rate in enumerate(rates):
                run = runs.of_rate(index, len(seeds))
                verdict = judge(run, optimal_loss, resolution)
                if verdict.outcome == "diverges":
                    continue
                candidate = base.with_learning_rate(rate)
                final = float(np.median(verdict.final_loss))
                if verdict.outcome == "converges" and final <= below:
                    converging.append((final, candidate, run))
                elif best is None or final < best[0]:
                    best = (final, candidate, tries, verdict.outcome, run)
            if converging:
                final, chosen, run = min(converging, key=lambda item: item[0])
                note = (
                    f"the simulation on {scaling.split()[-1]}d features shows it converging "
                    f"in {tries} epochs (excess loss <= {CONVERGED_SHARE:.0%} of its initial "
                    "value); of the converging learning rates tried, this one ends lowest"
                )
                return _recommendation(
                    scaling, chosen, tries, loader, final, "converges", problem, note, run
                )
    if best is None:
        return None
    final, chosen, tries, outcome, run = best
    note = (
        f"no configuration tried ({scaling}; {', '.join(optimizers)}; "
        f"learning rates on a 1-2-5 grid; up to {budget} epochs) converges; this one "
        "gets closest"
    )
    return _recommendation(scaling, chosen, tries, loader, final, outcome, problem, note, run)


def _recommendation(
    scaling: str,
    config: OptimizerConfig,
    epochs: int,
    loader: dict[str, Any],
    final: float | None,
    outcome: Outcome,
    problem: Problem,
    note: str,
    run: Run,
) -> Recommendation:
    return Recommendation(
        scaling=scaling,
        optimizer=config.name,
        learning_rate=config.learning_rate,
        epochs=epochs,
        batch_size=loader["batch_size"],
        predicted_final_loss=final,
        outcome=outcome,
        code=_code(scaling, config, epochs, loader, problem),
        note=note,
        loss_history=LossHistory.of(run.epoch_loss),
    )


def _code(
    scaling: str, config: OptimizerConfig, epochs: int, loader: dict[str, Any], problem: Problem
) -> str:
    """A snippet in the forecast's framework that trains the recommended configuration."""
    quad = problem.quadratic
    d = problem.p - int(BIAS in quad.names)
    means = quad.a[:d]
    std = np.sqrt(np.maximum(np.diag(quad.Q[:d, :d]), 0.0) / quad.n)
    # float32 cannot resolve small deviations from a large offset, nor hold values beyond
    # its range: standardize in float64 first.
    large_offset = bool(
        np.any(np.abs(means) > 1e4 * np.where(std > 0, std, np.inf))
        or np.any(np.abs(means) + std > np.finfo(np.float32).max)
    )
    return training_code(
        config,
        standardize=scaling.endswith("standardize"),
        drop_rows=scaling.startswith(DROP_ROWS),
        large_offset=large_offset,
        epochs=epochs,
        batch_size=loader["batch_size"],
        drop_last=loader["drop_last"],
    )
