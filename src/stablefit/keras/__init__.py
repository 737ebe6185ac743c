"""Keras integration: ``NanGuard`` protects a training run, ``preflight`` predicts it.

``NanGuard`` is the Keras adapter of the framework-neutral guard in :mod:`stablefit.guard`
(TensorFlow and JAX backends). Keras is imported only when one of these is first used, so
``import stablefit`` works without it; the event records and the error come from
:mod:`stablefit.guard` and need no Keras.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from stablefit.guard import GuardEvent, NonFiniteTrainingError

__all__ = [
    "GuardEvent",
    "NanGuard",
    "NonFiniteTrainingError",
    "ScaledSchedule",
    "checked",
    "preflight",
]

_LAZY = {
    "NanGuard": "stablefit.keras.guard",
    "ScaledSchedule": "stablefit.keras._optimizer",
    "checked": "stablefit.keras._rows",
    "preflight": "stablefit.keras._preflight",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'stablefit.keras' has no attribute {name!r}")
    try:
        module = import_module(_LAZY[name])
    except ImportError as error:
        raise ImportError(
            f"stablefit.keras.{name} needs Keras 3 with TensorFlow or JAX: "
            "pip install 'stablefit[keras]'"
        ) from error
    return getattr(module, name)
