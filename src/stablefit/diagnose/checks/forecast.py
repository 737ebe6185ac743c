"""Findings from the training forecast (SF201, SF202), and how a forecast reads in a sentence.

Unlike the data checks these read a :class:`~stablefit.diagnose.training.TrainingForecast`,
not the Summary: they turn "the simulated loss turns inf at epoch 3" into a finding with a
code, so that a pipeline can gate on it like on any data hazard.
"""

from __future__ import annotations

import math
from typing import Any

from stablefit.diagnose.findings import Finding, format_number

#: The codes of the training forecast's findings (the rest are about the data).
FORECAST_CODES = ("SF201", "SF202", "SF203")

OPTIMIZER_NAMES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
}

SCALING_PHRASES = {"none": "", "standardize": "standardized features, "}


def optimizer_label(forecast: Any, *, momentum: float = 0.0, nesterov: bool = False) -> str:
    """``"SGD lr 0.01"``, ``"SGD (Nesterov momentum 0.9) lr 0.001"``, ``"Adam lr 0.001"``."""
    name = OPTIMIZER_NAMES.get(forecast.optimizer, forecast.optimizer)
    if momentum:
        name += f" ({'Nesterov ' if nesterov else ''}momentum {format_number(momentum)})"
    return f"{name} lr {format_number(forecast.learning_rate)}"


def _epochs(first: int, span: Any) -> str:
    low, high = tuple(span) if span else (first, first)
    if low != high:
        return f"epoch {low}–{high}"
    return f"epoch {first}"


def _loss(value: float | None, span: Any) -> str:
    if value is None:
        return "unknown"
    if span and all(math.isfinite(v) for v in span) and span[0] != span[1]:
        return f"{format_number(span[0])}–{format_number(span[1])}"
    return format_number(value)


def describe_forecast(forecast: Any, *, momentum: float = 0.0, nesterov: bool = False) -> str:
    """One sentence: what training will do, e.g. "SGD lr 0.01 diverges: loss non-finite at
    epoch 3; stable only for lr < 2.14e-13 (λmax 9.3e12, dominated by x2)"."""
    label = optimizer_label(forecast, momentum=momentum, nesterov=nesterov)
    if forecast.outcome == "diverges" and forecast.first_nonfinite_epoch is None:
        growth = next((n for n in forecast.notes if n.startswith("the loss grows")), None)
        text = f"{label} diverges: {growth or 'the loss grows but stays finite'}"
    elif forecast.outcome == "diverges":
        first = _epochs(forecast.first_nonfinite_epoch, forecast.first_nonfinite_epoch_range)
        nan_epoch = getattr(forecast, "first_nan_epoch", None)
        if nan_epoch is None or nan_epoch == forecast.first_nonfinite_epoch:
            kind = "NaN" if nan_epoch is not None else "non-finite"
            text = f"{label} diverges: loss {kind} at {first}"
        else:
            text = f"{label} diverges: loss inf at {first}, NaN by epoch {nan_epoch}"
    else:
        verb = "stalls" if forecast.outcome == "stalls" else "converges"
        text = (
            f"{label} {verb}: loss "
            f"{_loss(forecast.predicted_final_loss, forecast.predicted_final_loss_range)} "
            f"after the last epoch (optimum {format_number(forecast.optimal_loss)})"
        )
    bound = forecast.max_stable_learning_rate
    if bound is not None and math.isfinite(bound):
        text += (
            f"; stable only for lr < {format_number(bound)} (λmax "
            f"{format_number(forecast.lambda_max)}, dominated by {forecast.dominant_feature})"
        )
    return text


def _recommendation(forecast: Any) -> tuple[str, str | None]:
    rec = forecast.recommended
    if rec is None:
        return "No simulated configuration converged: use the exact fit, stablefit.fit.", None
    # Loaded by now (the forecast made the recommendation); not on this module's import.
    from stablefit.diagnose.training import DROP_ROWS

    dropped, _, scaling = rec.scaling.rpartition(", then ")
    if scaling == DROP_ROWS:
        dropped, scaling = DROP_ROWS, "none"
    lead = f"{dropped[:1].upper()}{dropped[1:]}, then train with " if dropped else "Train with "
    sentence = (
        f"{lead}{SCALING_PHRASES.get(scaling, f'{scaling} scaling, ')}"
        f"{OPTIMIZER_NAMES.get(rec.optimizer, rec.optimizer)} at "
        f"lr {format_number(rec.learning_rate)} for {rec.epochs} epochs (batch size "
        f"{rec.batch_size}): the same simulation reaches loss "
        f"{format_number(rec.predicted_final_loss)} ({rec.outcome})."
    )
    return sentence, rec.code


def forecast_findings(
    forecast: Any, settings: dict[str, Any], *, cause: str | None = None
) -> list[Finding]:
    """SF201 when the forecast diverges, SF202 when it stalls, SF203 when it converges far
    above the optimum and standardized features end far lower; nothing otherwise.

    ``cause`` says why the loss is non-finite from the first epoch whatever the optimizer
    (NaN or inf rows, values beyond the dtype's range), when that is the reason.
    """
    momentum = float(settings.get("momentum") or 0.0) if settings.get("optimizer") else 0.0
    nesterov = bool(settings.get("nesterov")) if settings.get("optimizer") else False
    headline = describe_forecast(forecast, momentum=momentum, nesterov=nesterov)
    evidence = {
        "optimizer": forecast.optimizer,
        "learning_rate": forecast.learning_rate,
        "outcome": forecast.outcome,
        "first_nonfinite_epoch": forecast.first_nonfinite_epoch,
        "predicted_final_loss": forecast.predicted_final_loss,
        "optimal_loss": forecast.optimal_loss,
        "lambda_max": forecast.lambda_max,
        "max_stable_learning_rate": forecast.max_stable_learning_rate,
        "dominant_feature": forecast.dominant_feature,
    }
    fix, fix_code = _recommendation(forecast)
    why = f": {cause}" if cause else ""
    if not cause and not forecast.exact and forecast.approximation:
        why = f" ({forecast.approximation})"
    if forecast.outcome == "diverges":
        return [
            Finding(
                code="SF201",
                severity="error",
                title="Training diverges to a non-finite loss",
                message=headline + why + ".",
                evidence=evidence,
                fix=fix,
                fix_code=fix_code,
            )
        ]
    if forecast.outcome == "stalls":
        return [
            Finding(
                code="SF202",
                severity="warning",
                title="Training stalls far from the optimum",
                message=headline + ": the excess loss over the optimum stays above 1% of its "
                f"initial value ({format_number(forecast.initial_loss)}).",
                evidence=evidence | {"initial_loss": forecast.initial_loss},
                fix=fix,
                fix_code=fix_code,
            )
        ]
    rec = forecast.recommended
    if rec is not None and rec.scaling.endswith("standardize") and forecast.optimal_loss > 0:
        # A forecast that converges gets a standardized recommendation only when it ends
        # far above the optimum and standardizing ends far lower (see training._recommend).
        ratio = forecast.predicted_final_loss / forecast.optimal_loss
        same = (rec.optimizer, rec.learning_rate, rec.epochs) == (
            forecast.optimizer,
            forecast.learning_rate,
            forecast.epochs,
        )
        trained = (
            "the same optimizer and learning rate reach"
            if same
            else f"{OPTIMIZER_NAMES.get(rec.optimizer, rec.optimizer)} at lr "
            f"{format_number(rec.learning_rate)} for {rec.epochs} epochs reaches"
        )
        return [
            Finding(
                code="SF203",
                severity="warning",
                title="Training converges, but far above the optimum",
                message=headline + f": {format_number(ratio)} times the optimum after "
                f"{forecast.epochs} epochs; on standardized features {trained} "
                f"{format_number(rec.predicted_final_loss)}.",
                evidence=evidence | {"standardized_final_loss": rec.predicted_final_loss},
                fix=fix,
                fix_code=fix_code,
            )
        ]
    return []
