"""The framework-neutral guard core: events, causes, remedies, retries, best states.

A framework adapter (:mod:`stablefit.keras` for Keras, the PyTorch one) skips bad steps
inside its compiled training step and replays a failing batch; this package decides what
the failure was and what to do, and words it. Nothing here imports a deep-learning
framework. :class:`GuardCore` documents the contract an adapter fulfils.
"""

from stablefit.guard.classify import Context, LayerOverflow, Replay, Verdict, classify
from stablefit.guard.core import GuardCore
from stablefit.guard.curvature import (
    Curvature,
    curvature_from_growth,
    geometric_growth,
    growth_curvature,
    hessian_curvature,
    power_iteration,
    stable_learning_rate,
)
from stablefit.guard.events import (
    ACTIONS,
    CAUSES,
    TRIGGERS,
    GuardEvent,
    NonFiniteTrainingError,
)
from stablefit.guard.history import LossHistory
from stablefit.guard.phrases import KERAS, NEUTRAL, TORCH, Phrasebook
from stablefit.guard.policy import Remedy, RemedyPolicy, RetryWindow
from stablefit.guard.snapshots import BestStates, Snapshot

__all__ = [
    "ACTIONS",
    "CAUSES",
    "KERAS",
    "NEUTRAL",
    "TORCH",
    "TRIGGERS",
    "BestStates",
    "Context",
    "Curvature",
    "GuardCore",
    "GuardEvent",
    "LayerOverflow",
    "LossHistory",
    "NonFiniteTrainingError",
    "Phrasebook",
    "Remedy",
    "RemedyPolicy",
    "Replay",
    "RetryWindow",
    "Snapshot",
    "Verdict",
    "classify",
    "curvature_from_growth",
    "geometric_growth",
    "growth_curvature",
    "hessian_curvature",
    "power_iteration",
    "stable_learning_rate",
]
