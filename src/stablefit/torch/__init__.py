"""PyTorch integration: ``preflight`` predicts a training run, ``guard`` protects it.

PyTorch is imported only when one of these is first used, so ``import stablefit`` works
without it. The guard's events and error are the framework-neutral ones of
:mod:`stablefit.guard`, importable without PyTorch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from stablefit.guard.events import GuardEvent, NonFiniteTrainingError

__all__ = ["GuardEvent", "GuardedOptimizer", "NonFiniteTrainingError", "guard", "preflight"]

_LAZY = {
    "GuardedOptimizer": "stablefit.torch._guard",
    "guard": "stablefit.torch._guard",
    "preflight": "stablefit.torch._preflight",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'stablefit.torch' has no attribute {name!r}")
    try:
        module = import_module(_LAZY[name])
    except ImportError as error:
        raise ImportError(
            f"stablefit.torch.{name} needs PyTorch: pip install 'stablefit[torch]'"
        ) from error
    return getattr(module, name)
