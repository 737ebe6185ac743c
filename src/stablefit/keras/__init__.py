"""Keras integration: ``NanGuard`` protects a training run, ``preflight`` predicts it.

Keras (TensorFlow) is imported only when one of these is first used, so ``import
stablefit`` works without it. The event records and the error are importable without
Keras.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from stablefit.keras.events import GuardEvent, NonFiniteTrainingError

__all__ = ["GuardEvent", "NanGuard", "NonFiniteTrainingError", "ScaledSchedule", "preflight"]

_LAZY = {
    "NanGuard": "stablefit.keras.guard",
    "ScaledSchedule": "stablefit.keras._optimizer",
    "preflight": "stablefit.keras._preflight",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'stablefit.keras' has no attribute {name!r}")
    try:
        module = import_module(_LAZY[name])
    except ImportError as error:
        raise ImportError(
            f"stablefit.keras.{name} needs Keras 3 with TensorFlow: pip install 'stablefit[keras]'"
        ) from error
    return getattr(module, name)
