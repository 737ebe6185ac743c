"""PyTorch integration: ``preflight`` predicts a training run, ``guard`` protects it
(``GuardCallback`` in a PyTorch Lightning ``Trainer``).

PyTorch is imported only when one of these is first used, so ``import stablefit`` works
without it. The guard's events and error are the framework-neutral ones of
:mod:`stablefit.guard`, importable without PyTorch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from stablefit.guard.events import GuardEvent, NonFiniteTrainingError

__all__ = [
    "GuardCallback",
    "GuardEvent",
    "GuardedOptimizer",
    "NonFiniteTrainingError",
    "guard",
    "preflight",
]

_LAZY = {
    "GuardCallback": "stablefit.torch._lightning",
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
        extra = "lightning" if name == "GuardCallback" else "torch"
        raise ImportError(
            f"stablefit.torch.{name} needs {'Lightning' if extra == 'lightning' else 'PyTorch'}:"
            f" pip install 'stablefit[{extra}]'"
        ) from error
    return getattr(module, name)
