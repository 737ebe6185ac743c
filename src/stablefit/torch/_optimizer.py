"""Reading a ``torch.optim`` optimizer's settings as stablefit's forecast takes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from stablefit.diagnose.frameworks import OPTION_DEFAULTS, TORCH

# torch.optim class -> the optimizer names stablefit's forecast understands (exact types:
# a subclass may change the update).
_FORECAST_NAMES = {
    torch.optim.SGD: "sgd",
    torch.optim.Adam: "adam",
    torch.optim.AdamW: "adamw",
    torch.optim.RMSprop: "rmsprop",
    torch.optim.Adagrad: "adagrad",
}
# Options whose non-default values change the update in ways the forecast does not follow.
_UNSIMULATED = {"maximize": False, "amsgrad": False, "centered": False}


@dataclass(frozen=True)
class OptimizerSettings:
    """What the forecast needs from an optimizer, and why it cannot be simulated (if so).

    Attributes
    ----------
    settings : dict
        ``optimizer``, ``learning_rate``, ``momentum``, ``nesterov`` and
        ``optimizer_options`` as :func:`stablefit.diagnose` takes them (``optimizer`` None
        for a class the forecast does not know).
    unsimulated : list of str
        What keeps the forecast from being this optimizer's computation (empty when
        nothing does).
    notes : list of str
        Differences that leave the forecast valid (e.g. a fused kernel's rounding).
    """

    settings: dict[str, Any]
    unsimulated: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _number(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, tuple):
        return tuple(_number(v) for v in value)
    return value


def read_optimizer(optimizer: torch.optim.Optimizer, parameters: list[Any]) -> OptimizerSettings:
    """The forecast's settings for ``optimizer`` training ``parameters`` (a model's)."""
    name = _FORECAST_NAMES.get(type(optimizer))
    groups = optimizer.param_groups
    group = groups[0]
    unsimulated: list[str] = []
    notes: list[str] = []
    if name == "adam" and group.get("decoupled_weight_decay"):
        name = "adamw"  # torch's Adam(decoupled_weight_decay=True) is AdamW's update
    if name is None:
        unsimulated.append(f"{type(optimizer).__name__} is not one of the optimizers simulated")
    settings: dict[str, Any] = {
        "optimizer": name,
        "learning_rate": float(_number(group["lr"])),
        "momentum": float(group.get("momentum", 0.0)) if name in ("sgd", "rmsprop") else 0.0,
        "nesterov": bool(group.get("nesterov", False)),
        "optimizer_options": {},
    }
    if name is not None:
        settings["optimizer_options"] = {
            key: _number(group[key]) for key in OPTION_DEFAULTS[TORCH][name] if key in group
        }
    for key, default in _UNSIMULATED.items():
        if group.get(key, default) != default:
            unsimulated.append(f"{key}={group[key]!r} is not simulated")
    if group.get("fused"):
        notes.append("fused=True: torch's fused kernel may round differently by an ulp")
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in groups]
    if any(h != hyper[0] for h in hyper[1:]):
        unsimulated.append(f"{len(groups)} parameter groups with different settings")
    trained = {id(p) for g in groups for p in g["params"]}
    if trained != {id(p) for p in parameters if p.requires_grad}:
        unsimulated.append("the optimizer does not train exactly the model's parameters")
    return OptimizerSettings(settings, unsimulated, notes)
