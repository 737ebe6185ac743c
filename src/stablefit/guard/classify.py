"""Name the cause of a failed step from what replaying it showed.

An adapter replays the failing batch from the weights before it, layer by layer, and
fills a :class:`Replay`; :func:`classify` turns it, with the loss history and the
gradient-norm median the adapter keeps, into a :class:`Verdict`: the cause (one of
:data:`~stablefit.guard.events.CAUSES`), the evidence in numbers and words, and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stablefit.diagnose.findings import format_number
from stablefit.guard.curvature import Curvature
from stablefit.guard.phrases import NEUTRAL, Phrasebook

#: A gradient norm this many times its running median is an explosion.
EXPLODING_FACTOR = 100.0
#: Values above this square to more than float32 holds (3.4e38).
FLOAT32_SQUARE_LIMIT = 1.8e19
#: Inputs above this make gradients (products of inputs and residuals) overflow float32.
LARGE_INPUT = 1e18
#: Predictions this many times the largest input and target (and 1) mean diverged weights:
#: a batch's squares of them overflow float32 before each one does.
DIVERGED_RATIO = 1e8


@dataclass(frozen=True)
class LayerOverflow:
    """A layer whose output overflowed its low-precision dtype while its inputs were finite.

    ``largest`` is the largest magnitude the layer's computation reaches (computed in
    float32 by the adapter, inf when even that overflows); ``limit`` the dtype's largest
    finite value.
    """

    layer: str
    dtype: str
    largest: float
    limit: float


@dataclass(frozen=True)
class Replay:
    """What an adapter found replaying the failing batch from the weights before it.

    Attributes
    ----------
    bad_positions : tuple of int
        Positions in the batch of rows with a non-finite input or target.
    bad_columns : tuple of str
        The input/target columns holding those values (names when known, else
        ``"x[:, j]"``/``"y"``).
    overflow : LayerOverflow or None
        The first float16/bfloat16 layer whose output overflowed.
    nonfinite_layer : str or None
        The first layer (any dtype) whose output was non-finite.
    predictions_finite, loss_finite : bool
        Whether the model's outputs and the loss were finite.
    loss_name : str or None
        The loss function's name.
    offending_predictions : tuple of float
        Predictions of the rows whose loss term is non-finite (a few).
    largest_target, largest_input, largest_prediction : float or None
        The largest magnitude among the batch's targets, its inputs and the predictions.
    gradient_norm : float or None
        The global gradient norm of the batch at the weights before the step.
    outside_loss : bool
        The step's gradients were not finite while those of the loss the adapter
        replays on the batch are: the loss the user differentiated adds a term the
        adapter does not see (another loss, a regulariser), and that term is not finite.
    backward_nonfinite : bool
        The replayed loss and every layer's output are finite but the loss's gradients
        are not: an operation's derivative is infinite where it was evaluated.
    """

    bad_positions: tuple[int, ...] = ()
    bad_columns: tuple[str, ...] = ()
    overflow: LayerOverflow | None = None
    nonfinite_layer: str | None = None
    predictions_finite: bool = True
    loss_finite: bool = True
    loss_name: str | None = None
    loss_value: float | None = None
    offending_predictions: tuple[float, ...] = ()
    largest_target: float | None = None
    largest_input: float | None = None
    largest_prediction: float | None = None
    gradient_norm: float | None = None
    outside_loss: bool = False
    backward_nonfinite: bool = False


@dataclass(frozen=True)
class Context:
    """What the adapter knows besides the replay.

    Attributes
    ----------
    trigger : str
        What made the guard look (one of :data:`~stablefit.guard.events.TRIGGERS`).
    learning_rate : float or None
        The learning rate the failing step used.
    optimizer : str
        The optimizer's name as the user knows it (``"SGD"``, ``"Adam"``, ...).
    growth : float or None
        The loss's growth factor per step before the event (see
        :meth:`~stablefit.guard.history.LossHistory.growth`).
    gradient_norm_median : float or None
        The running median of the gradient norm over the steps before.
    curvature : callable or None
        Called at most once, when the learning rate is a suspect: the adapter's
        :class:`~stablefit.guard.curvature.Curvature` estimate at the weights the guard
        will restore, or None.
    runaway : float or None
        The smoothed loss over its best, when rises kept as noise have added up to a
        slow divergence (:meth:`~stablefit.guard.history.LossHistory.runaway`).
    """

    trigger: str
    learning_rate: float | None = None
    optimizer: str = "unknown"
    growth: float | None = None
    gradient_norm_median: float | None = None
    curvature: Callable[[], Curvature | None] | None = None
    runaway: float | None = None


@dataclass(frozen=True)
class Verdict:
    """The cause of an event, the evidence in words and numbers, and the fix."""

    cause: str
    finding: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict)
    curvature: Curvature | None = None


def classify(replay: Replay, context: Context, phrases: Phrasebook = NEUTRAL) -> Verdict:
    """The cause of a failed step, its fix in the words of ``phrases``' framework.

    In order: non-finite inputs are data; a low-precision layer overflowing on finite
    inputs is precision; finite predictions with a non-finite loss are the loss function;
    non-finite gradients of a loss whose replayed part has finite ones lie outside what
    the adapter sees, and non-finite gradients of a finite replayed forward and loss come
    from an operation's derivative (both unknown, said so); a loss that spiked or rose
    geometrically with the learning rate above the curvature's bound (or with no other
    explanation) is the learning rate; a gradient norm far above its running median is
    exploding gradients; anything else is unknown.
    """
    if replay.bad_positions:
        return _data(replay)
    if replay.overflow is not None:
        return _precision(replay.overflow, phrases)
    if replay.predictions_finite and not replay.loss_finite:
        if (replay.largest_target or 0.0) > FLOAT32_SQUARE_LIMIT:
            return _loss_overflow(replay)
        if (replay.largest_prediction or 0.0) <= FLOAT32_SQUARE_LIMIT and not _diverged(replay):
            return _loss_function(replay, phrases)
        # Predictions this large mean the weights diverged: the loss only reports it.
    if replay.outside_loss:
        return _outside_loss(replay)
    if replay.backward_nonfinite:
        return _backward_nonfinite(replay, phrases)
    norm = replay.gradient_norm
    if (
        norm is not None
        and not math.isfinite(norm)
        and replay.loss_finite
        and (replay.largest_input or 0.0) > LARGE_INPUT
    ):
        return _gradient_overflow(replay, phrases)
    exploding = _explosion_ratio(replay, context)
    suspect_rate = (
        context.trigger == "loss_spike" or context.growth is not None or _diverged(replay)
    )
    if suspect_rate or exploding is None:
        curvature = context.curvature() if context.curvature is not None else None
        bound = None if curvature is None else curvature.stable_learning_rate
        rate = context.learning_rate
        if bound is not None and rate is not None and rate > bound:
            return _learning_rate(replay, context, curvature, phrases)
        if suspect_rate and exploding is None and bound is None:
            # No bound to check: the rise decides.
            return _learning_rate(replay, context, curvature, phrases)
        if suspect_rate and exploding is None and context.runaway is not None:
            return _learning_rate(replay, context, curvature, phrases)
        if suspect_rate and exploding is None:
            return _within_bound(context, curvature)
    if exploding is not None:
        return _exploding(replay, context, exploding, phrases)
    replayed = (
        "the loss were finite when the batch was replayed"
        if replay.loss_value is not None
        else "the predictions were finite when the batch was replayed (not the loss: the "
        "model's own train_step computes it)"
    )
    return Verdict(
        cause="unknown",
        finding=(
            "the step's loss or gradients were not finite, but the inputs, the layers' "
            f"outputs and {replayed}, the loss was not rising and the gradient norm was "
            "ordinary"
        ),
        fix="look for randomness in the model (dropout, noise layers) or a custom train step",
        evidence={"gradient_norm": replay.gradient_norm},
    )


def _data(replay: Replay) -> Verdict:
    columns = ", ".join(replay.bad_columns) or "the inputs"
    rows = len(replay.bad_positions)
    fix = "drop or impute those rows before training (`stablefit doctor` lists them)"
    if replay.bad_columns == ("sample_weight",):
        fix = (
            "give those rows finite weights of an ordinary size (sample_weight=, or the "
            "class_weight= they came from)"
        )
    return Verdict(
        cause="data",
        finding=f"{rows} row(s) with NaN or inf in {columns}",
        fix=fix,
        evidence={
            "batch_positions": list(replay.bad_positions),
            "columns": list(replay.bad_columns),
        },
    )


def _precision(overflow: LayerOverflow, phrases: Phrasebook) -> Verdict:
    return Verdict(
        cause="precision",
        finding=(
            f"{phrases.layer} {overflow.layer!r} computes in {overflow.dtype}: its output reaches "
            f"{format_number(overflow.largest)}, beyond {overflow.dtype}'s largest finite "
            f"value {format_number(overflow.limit)}, on finite inputs"
        ),
        fix=(
            f"{phrases.layer_in_float32.format(layer=repr(overflow.layer))}, or scale its "
            "inputs down; a loss scale cannot fix an overflow in the forward pass"
        ),
        evidence={
            "layer": overflow.layer,
            "dtype": overflow.dtype,
            "largest": overflow.largest,
            "limit": overflow.limit,
        },
    )


def _loss_overflow(replay: Replay) -> Verdict:
    largest = replay.largest_target or math.inf
    return Verdict(
        cause="precision",
        finding=(
            f"the targets reach {format_number(largest)}: the loss's squares and sums of them "
            "exceed float32's largest value 3.4e38"
        ),
        fix="scale the targets down (standardize y, and scale the predictions back)",
        evidence={"largest": largest, "limit": 3.4028235e38, "dtype": "float32"},
    )


def _gradient_overflow(replay: Replay, phrases: Phrasebook) -> Verdict:
    largest = replay.largest_input or math.inf
    return Verdict(
        cause="precision",
        finding=(
            f"the inputs reach {format_number(largest)}: the loss is finite but its gradient "
            "exceeds float32's largest value 3.4e38"
        ),
        fix=f"scale the inputs down: {phrases.standardize_inputs}",
        evidence={"largest": largest, "limit": 3.4028235e38, "dtype": "float32"},
    )


def _loss_function(replay: Replay, phrases: Phrasebook) -> Verdict:
    name = replay.loss_name or "the loss"
    shown = ", ".join(format_number(p, 6) for p in replay.offending_predictions[:4])
    saturated = bool(replay.offending_predictions) and all(
        p in (0.0, 1.0) for p in replay.offending_predictions
    )
    finding = (
        f"the predictions are finite but {name} is {format_number(replay.loss_value or math.nan)}"
        + (f"; the rows whose loss is not finite have predictions {shown}" if shown else "")
    )
    if saturated:
        finding += " (exactly 0 or 1, under a log)"
        fix = (
            f"{phrases.loss_from_logits}, or clip the predictions away from 0 and 1 inside the loss"
        )
    else:
        fix = f"make {name} finite for these predictions (guard its log, division or sqrt)"
    return Verdict(
        cause="loss_function",
        finding=finding,
        fix=fix,
        evidence={
            "loss": name,
            "predictions": list(replay.offending_predictions[:8]),
            "loss_value": replay.loss_value,
        },
    )


def _outside_loss(replay: Replay) -> Verdict:
    name = replay.loss_name or "the loss"
    return Verdict(
        cause="unknown",
        finding=(
            f"the step's gradients were {format_number(replay.gradient_norm or math.nan)} in "
            f"norm, but {name} on the batch and its gradients are finite: the loss "
            f"backward() was called on adds something {name} did not compute (another "
            "loss, a regulariser, a target the guard does not see), and that is not finite"
        ),
        fix=(
            "look for NaN or inf in the other terms of the loss and in what they are "
            "computed from, or give the guard the whole loss as its loss function"
        ),
        evidence={"gradient_norm": replay.gradient_norm, "outside_loss": True},
    )


def _backward_nonfinite(replay: Replay, phrases: Phrasebook) -> Verdict:
    name = replay.loss_name or "the loss"
    return Verdict(
        cause="unknown",
        finding=(
            f"the inputs, every {phrases.layer}'s output and {name} on the batch are finite "
            "but the gradients are not: an operation's derivative is infinite where the "
            "batch put it (sqrt or a hand-written norm at 0, pow with an exponent below 1 "
            "at 0, log at 0, acos or asin at ±1), and inf times 0 makes NaN"
        ),
        fix=(
            "keep that operation off its singular point (sqrt(x + eps), "
            f"clamp before log or acos); {phrases.find_backward_op}"
        ),
        evidence={"gradient_norm": replay.gradient_norm},
    )


def _diverged(replay: Replay) -> bool:
    """Whether the predictions are too large for their squares in float32, or
    ``DIVERGED_RATIO`` times the inputs and targets, while those are not: the weights have
    diverged (what a loss growing from one step to the next shows, when the loss is not
    known or not finite)."""
    prediction = replay.largest_prediction
    largest_input, largest_target = replay.largest_input or 0.0, replay.largest_target or 0.0
    if prediction is None:
        return False
    if prediction > DIVERGED_RATIO * max(largest_input, largest_target, 1.0):
        return True
    return (
        prediction > FLOAT32_SQUARE_LIMIT
        and largest_input <= LARGE_INPUT
        and largest_target <= FLOAT32_SQUARE_LIMIT
    )


def _explosion_ratio(replay: Replay, context: Context) -> float | None:
    norm, median = replay.gradient_norm, context.gradient_norm_median
    if norm is None or median is None or not median > 0:
        return None
    ratio = norm / median if math.isfinite(norm) else math.inf
    return ratio if ratio >= EXPLODING_FACTOR else None


def _within_bound(context: Context, curvature: Curvature) -> Verdict:
    bound = curvature.stable_learning_rate or math.nan
    return Verdict(
        cause="unknown",
        finding=(
            "the loss rose, but the learning rate "
            f"{format_number(context.learning_rate or math.nan)} is within the bound "
            f"{format_number(bound)} of the curvature measured on the batch: a hard stretch "
            "of data or noise, not a divergence"
        ),
        fix="nothing to change if the loss comes down again",
        evidence={
            "learning_rate": context.learning_rate,
            "lambda_max": curvature.lambda_max,
            "stable_learning_rate": curvature.stable_learning_rate,
        },
        curvature=curvature,
    )


def _exploding(replay: Replay, context: Context, ratio: float, phrases: Phrasebook) -> Verdict:
    norm = replay.gradient_norm
    median = context.gradient_norm_median
    return Verdict(
        cause="exploding_gradients",
        finding=(
            f"the gradient norm reached {format_number(norm or math.nan)}, "
            f"{format_number(ratio)} times its running median {format_number(median or 0)}, "
            "while the loss was not rising"
        ),
        fix=f"clip the gradients at a few times their usual norm ({phrases.clip_gradients})",
        evidence={"gradient_norm": norm, "gradient_norm_median": median, "ratio": ratio},
    )


def _learning_rate(
    replay: Replay, context: Context, curvature: Curvature | None, phrases: Phrasebook
) -> Verdict:
    rate = context.learning_rate
    parts = []
    evidence: dict[str, Any] = {"learning_rate": rate, "growth_per_step": context.growth}
    if context.runaway is not None:
        parts.append(
            f"the smoothed loss has climbed to {format_number(context.runaway)} times its best "
            "through rises that each looked like noise: a slow divergence"
        )
        evidence["loss_over_best"] = context.runaway
    elif context.growth is not None:
        parts.append(f"the loss grew {format_number(context.growth)} times a step")
    elif context.trigger == "loss_spike":
        parts.append("the smoothed loss rose far above its running minimum")
    elif _diverged(replay):
        parts.append(
            f"the predictions reach {format_number(replay.largest_prediction or math.inf)} "
            f"where the targets are at most {format_number(replay.largest_target or 0.0)}: "
            "the weights diverged"
        )
        evidence["largest_prediction"] = replay.largest_prediction
    bound = None
    if curvature is not None:
        bound = curvature.stable_learning_rate
        which = "preconditioned Hessian" if curvature.preconditioned else "Hessian"
        parts.append(
            f"the {which}'s largest eigenvalue is about {format_number(curvature.lambda_max)} "
            f"({curvature.method})"
            + (
                f", so {context.optimizer} is stable only for learning rates below "
                f"{format_number(bound)}"
                if bound is not None
                else ""
            )
        )
        evidence.update(
            lambda_max=curvature.lambda_max,
            curvature_method=curvature.method,
            stable_learning_rate=bound,
        )
        safe = curvature.safe_learning_rate
        if context.runaway is not None and safe is not None and bound is not None and safe < bound:
            parts.append(
                f"with momentum {format_number(curvature.momentum)} each step is stretched "
                f"about {format_number(1 / (1 - curvature.momentum))} times, and the rate "
                f"that holds is {format_number(safe)}"
            )
            evidence["safe_learning_rate"] = safe
            bound = safe
    if rate is not None:
        parts.append(f"the learning rate was {format_number(rate)}")
    fix = (
        f"train with a learning rate below {format_number(bound)} ({phrases.learning_rate})"
        if bound is not None
        else f"lower the learning rate ({phrases.learning_rate})"
    )
    return Verdict(
        cause="learning_rate",
        finding="; ".join(parts),
        fix=fix,
        evidence=evidence,
        curvature=curvature,
    )
