"""Reading and changing a compiled Keras optimizer's learning rate and settings.

Shared by the guard (which lowers the learning rate mid-training) and preflight (which
forecasts what the optimizer will do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

_SCHEDULE = keras.optimizers.schedules.LearningRateSchedule

# Keras class name -> the optimizer names stablefit's forecast understands.
_FORECAST_NAMES = {
    "SGD": "sgd",
    "Adam": "adam",
    "AdamW": "adamw",
    "RMSprop": "rmsprop",
    "Adagrad": "adagrad",
}


@keras.saving.register_keras_serializable(package="stablefit")
class ScaledSchedule(_SCHEDULE):
    """A learning-rate schedule multiplied by a constant.

    The guard wraps a user's schedule in this to lower the learning rate without losing
    the schedule's shape; it serializes with the model.

    Parameters
    ----------
    schedule : keras.optimizers.schedules.LearningRateSchedule
        The schedule to scale.
    scale : float
        The factor applied to every value of ``schedule``.
    """

    def __init__(self, schedule: Any, scale: float) -> None:
        self.schedule = schedule
        self.scale = float(scale)

    def __call__(self, step: Any) -> Any:
        return self.schedule(step) * self.scale

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "scale": self.scale,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ScaledSchedule:
        schedule = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(schedule, config["scale"])


class _ScaledCallable:
    """A zero-argument learning-rate callable multiplied by a constant."""

    def __init__(self, function: Callable[[], Any], scale: float) -> None:
        self.function = function
        self.scale = float(scale)

    def __call__(self) -> Any:
        return self.function() * self.scale


def learning_rate_object(optimizer: keras.optimizers.Optimizer) -> Any:
    """The optimizer's learning rate as given: a Variable, schedule or callable.

    The public ``learning_rate`` property evaluates schedules; telling a schedule from a
    float needs the stored object, which Keras keeps in ``_learning_rate``.
    """
    return optimizer._learning_rate


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate the next update will use, as a float."""
    rate = optimizer.learning_rate
    value = np.asarray(rate.numpy() if hasattr(rate, "numpy") else rate)
    if value.dtype == np.float32:
        # The shortest decimal that rounds to this float32: 0.01, not 0.009999999776.
        return float(str(np.float32(value)))
    return float(value)


def scale_learning_rate(optimizer: keras.optimizers.Optimizer, factor: float) -> bool:
    """Multiply the optimizer's learning rate by ``factor``, schedules included.

    Returns
    -------
    bool
        True when the learning-rate object was replaced (a schedule or callable), so a
        traced training step must be rebuilt to see it; False when a learning-rate
        variable was assigned in place.
    """
    rate = learning_rate_object(optimizer)
    if isinstance(rate, ScaledSchedule):
        optimizer.learning_rate = ScaledSchedule(rate.schedule, rate.scale * factor)
        return True
    if isinstance(rate, _SCHEDULE):
        optimizer.learning_rate = ScaledSchedule(rate, factor)
        return True
    if isinstance(rate, _ScaledCallable):
        optimizer.learning_rate = _ScaledCallable(rate.function, rate.scale * factor)
        return True
    if callable(rate) and not isinstance(rate, keras.Variable):
        optimizer.learning_rate = _ScaledCallable(rate, factor)
        return True
    optimizer.learning_rate = current_learning_rate(optimizer) * factor
    return False


def forecast_settings(optimizer: keras.optimizers.Optimizer) -> dict[str, Any]:
    """The optimizer as keyword arguments of :func:`stablefit.diagnose`.

    Returns
    -------
    dict
        ``optimizer`` (stablefit's name, or the Keras class name when stablefit has no
        forecast for it), ``learning_rate`` (current value), ``momentum`` and ``nesterov``
        (SGD only; 0.0 and False otherwise).
    """
    name = type(optimizer).__name__
    return {
        "optimizer": _FORECAST_NAMES.get(name, name),
        "learning_rate": current_learning_rate(optimizer),
        "momentum": float(np.asarray(getattr(optimizer, "momentum", 0.0) or 0.0))
        if name == "SGD"
        else 0.0,
        "nesterov": bool(getattr(optimizer, "nesterov", False)) if name == "SGD" else False,
    }
