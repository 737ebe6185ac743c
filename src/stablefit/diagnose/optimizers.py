"""Optimizers as Keras and PyTorch run them: configuration, defaults and state.

An :class:`UpdateRule` holds an optimizer's slots (momentum, Adam's moments, ...) and its
hyperparameters. Its step is :func:`stablefit.diagnose.kernels.update_step`, which mirrors
``keras/src/optimizers/<name>.py`` (Keras 3) and ``torch/optim/<name>.py`` (the
single-tensor path torch takes on the CPU) operation by operation, so that the simulated
weights round, overflow to ``inf`` and turn ``NaN`` where the framework's would; the
simulation's compiled steps take the same function. Every array has a leading axis of
independent runs (one per initialization seed), so one call advances all of them.

The weights are one vector ``theta`` per run: the kernel (or ``nn.Linear``'s weight)
followed by the bias. Weight decay applies to both, as both frameworks do unless told to
exclude variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from stablefit.diagnose import kernels
from stablefit.diagnose.frameworks import (
    DEFAULT_LEARNING_RATES,
    KERAS,
    LABELS,
    OPTION_DEFAULTS,
    TORCH,
    check_framework,
    optimizer_expression,
)
from stablefit.errors import StablefitInputError

#: Keras's default learning rate of each optimizer (``keras.optimizers.<Name>()``).
DEFAULT_LEARNING_RATE: dict[str, float] = DEFAULT_LEARNING_RATES[KERAS]
OPTIMIZERS: tuple[str, ...] = tuple(DEFAULT_LEARNING_RATE)
#: The optimizers whose step is divided by a running gradient magnitude.
ADAPTIVE: frozenset[str] = frozenset({"adam", "adamw", "rmsprop", "adagrad"})


@dataclass(frozen=True)
class OptimizerConfig:
    """An optimizer as ``model.compile`` or ``torch.optim`` would get it.

    Parameters
    ----------
    name : str
        One of :data:`OPTIMIZERS` (lower case).
    learning_rate : float
        The learning rate (already resolved from the framework's default).
    momentum : float
        SGD's or RMSprop's momentum (0 = none, the default of both frameworks).
    nesterov : bool
        SGD's Nesterov momentum.
    framework : {"keras", "torch"}
        Whose update rule, defaults and initialization are simulated.
    options : tuple of (str, value) pairs
        The optimizer's other hyperparameters by the framework's argument names
        (``OPTION_DEFAULTS``), e.g. ``(("weight_decay", 0.01),)``; the framework's default
        for any not given.
    """

    name: str
    learning_rate: float
    momentum: float = 0.0
    nesterov: bool = False
    framework: str = KERAS
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def resolve(
        cls,
        optimizer: str,
        learning_rate: float | None,
        momentum: float,
        nesterov: bool,
        *,
        framework: str = KERAS,
        options: Mapping[str, Any] | None = None,
    ) -> OptimizerConfig:
        """Validate the user's choice and fill in the framework's defaults."""
        framework = check_framework(framework)
        defaults = DEFAULT_LEARNING_RATES[framework]
        name = str(optimizer).strip().lower()
        if name not in defaults:
            raise StablefitInputError(
                f"optimizer={optimizer!r} is not one stablefit simulates; "
                f"use one of {', '.join(defaults)}"
            )
        lr = defaults[name] if learning_rate is None else float(learning_rate)
        if not np.isfinite(lr) or lr <= 0:
            raise StablefitInputError(
                f"learning_rate={learning_rate!r} must be a finite number > 0 (e.g. 0.001)"
            )
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0:
            raise StablefitInputError(f"momentum={momentum!r} must lie in [0, 1] (e.g. 0.9)")
        if momentum and name not in ("sgd", "rmsprop"):
            raise StablefitInputError(
                f"momentum={momentum} applies to 'sgd' and 'rmsprop' only, not to {name!r}; "
                "drop it or change the optimizer"
            )
        if nesterov and name != "sgd":
            raise StablefitInputError(
                f"nesterov=True applies to 'sgd' only, not to {name!r}; drop it"
            )
        resolved = _resolve_options(framework, name, options or {})
        if nesterov and framework == TORCH and (momentum <= 0 or resolved["dampening"] != 0):
            raise StablefitInputError(
                "nesterov=True needs momentum > 0 and dampening=0 in torch.optim.SGD "
                "(torch raises otherwise); give momentum=0.9, say, or drop nesterov"
            )
        changed = tuple(
            (key, value)
            for key, value in resolved.items()
            if value != OPTION_DEFAULTS[framework][name][key]
        )
        return cls(name, lr, momentum, bool(nesterov), framework, changed)

    def option(self, key: str) -> Any:
        """A hyperparameter: as given in :attr:`options`, else the framework's default."""
        given = dict(self.options)
        return given[key] if key in given else OPTION_DEFAULTS[self.framework][self.name][key]

    @property
    def weight_decay(self) -> float:
        """The weight decay (0 when the optimizer has none)."""
        if "weight_decay" not in OPTION_DEFAULTS[self.framework][self.name]:
            return 0.0
        return float(self.option("weight_decay"))

    @property
    def gradient_scale(self) -> float:
        """The share of each gradient that enters SGD's momentum (``1 - dampening``)."""
        if self.framework == TORCH and self.name == "sgd" and self.momentum:
            return 1.0 - float(self.option("dampening"))
        return 1.0

    def with_learning_rate(self, learning_rate: float) -> OptimizerConfig:
        return OptimizerConfig(
            self.name, learning_rate, self.momentum, self.nesterov, self.framework, self.options
        )

    def expression(self) -> str:
        """The Python expression that builds this optimizer in its framework."""
        return optimizer_expression(self)


def _resolve_options(framework: str, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    defaults = OPTION_DEFAULTS[framework][name]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        other = TORCH if framework == KERAS else KERAS
        # Every Keras 3 optimizer takes weight_decay; stablefit simulates it for AdamW only.
        if framework == KERAS and "weight_decay" in unknown:
            raise StablefitInputError(
                f"weight_decay: stablefit simulates Keras's weight decay for 'adamw' only, "
                f"not for {name!r}: drop it or choose 'adamw'"
            )
        if set(unknown) <= set(OPTION_DEFAULTS[other][name]):
            raise StablefitInputError(
                f"{', '.join(unknown)}: an option of {LABELS[other]}'s {name}, not of "
                f"{LABELS[framework]}'s: drop it or give framework={other!r}"
            )
        known = ", ".join(defaults) or "only the learning rate, momentum and nesterov"
        raise StablefitInputError(
            f"{', '.join(unknown)}: not a hyperparameter of {LABELS[framework]}'s "
            f"{name} that stablefit simulates (it simulates {known}); drop it"
        )
    resolved = dict(defaults)
    for key, value in options.items():
        if key == "betas":
            betas = tuple(float(b) for b in value)
            if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
                raise StablefitInputError(f"betas={value!r} must be two numbers in [0, 1)")
            resolved[key] = betas
            continue
        number = float(value)
        if not np.isfinite(number) or number < 0:
            raise StablefitInputError(f"{key}={value!r} must be a finite number >= 0")
        resolved[key] = number
    return resolved


class UpdateRule:
    """State and update of one optimizer for ``runs`` independent weight vectors."""

    def __init__(
        self,
        config: OptimizerConfig,
        shape: tuple[int, int],
        dtype: np.dtype,
        learning_rates: np.ndarray | None = None,
    ):
        """``learning_rates`` (one per run) overrides ``config.learning_rate``."""
        self.config = config
        self.dtype = np.dtype(dtype)
        # Kept in float64: each rule rounds it where its framework does (Keras stores it
        # in the variable dtype; torch computes with the Python float).
        rates = config.learning_rate if learning_rates is None else learning_rates
        self.lr = np.broadcast_to(np.asarray(rates, dtype=np.float64).reshape(-1), shape[:1])
        self.lr = np.ascontiguousarray(self.lr)
        self.shape = shape
        self.iterations = 0
        zeros = np.zeros(shape, dtype=self.dtype)
        name, torch = config.name, config.framework == TORCH
        if name == "sgd":
            self.slots = {"momentum": zeros.copy()} if config.momentum else {}
        elif name in ("adam", "adamw"):
            self.slots = {"m": zeros.copy(), "v": zeros.copy()}
        elif name == "rmsprop":
            self.slots = {"velocity": zeros.copy()}
            if config.momentum:
                self.slots["momentum"] = zeros.copy()
        else:
            start = config.option("initial_accumulator_value")
            self.slots = {"accumulator": np.full(shape, start, self.dtype)}
        self._torch = torch

    def apply(self, theta: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """Return the weights after one optimizer step (the caller's arrays stay intact)."""
        theta = np.array(theta, dtype=self.dtype)  # a copy: the step updates it in place
        rule, lr, first, second, constants = self.kernel_arguments()
        grad = np.ascontiguousarray(grad, dtype=self.dtype)
        kernels.update_step(rule, theta, grad, lr, first, second, constants, self.iterations)
        self.iterations += 1
        return theta

    def velocity(self) -> np.ndarray | None:
        """SGD's momentum as the step it adds to the weights (Keras's convention), or None.

        Torch keeps the momentum buffer in gradient units and multiplies it by the
        learning rate at each step: its step is ``-lr · buffer``.
        """
        slot = self.slots.get("momentum")
        if slot is None or self.config.name != "sgd":
            return None
        if self._torch:
            return -self.lr[:, None] * slot.astype(np.float64)
        return slot.astype(np.float64)

    def kernel_arguments(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """This rule as :func:`~stablefit.diagnose.kernels.regular_steps` takes it.

        The kernel updates the slots in place and leaves :attr:`iterations` to the caller.

        Returns
        -------
        rule : int
            The kernel's code for the framework's optimizer with its options.
        lr : ndarray
            The learning rate of each run (float64).
        first, second : ndarray
            The slots the kernel updates in place (empty where the rule has fewer).
        constants : ndarray
            The hyperparameters (float64), in the kernel's order; the kernel rounds them
            where the framework does.
        """
        config, slots = self.config, self.slots
        empty = np.empty((0, 0), dtype=self.dtype)
        option = config.option
        if config.name == "sgd":
            first, second = slots.get("momentum", empty), empty
            if self._torch:
                rule = kernels.TORCH_SGD
                constants = [
                    config.momentum,
                    1.0 - option("dampening"),
                    option("weight_decay"),
                    float(config.nesterov),
                ]
            else:
                if not config.momentum:
                    rule = kernels.SGD
                else:
                    rule = kernels.NESTEROV if config.nesterov else kernels.MOMENTUM
                constants = [config.momentum]
        elif config.name in ("adam", "adamw"):
            first, second = slots["m"], slots["v"]
            if self._torch:
                rule = kernels.TORCH_ADAM
                beta_1, beta_2 = option("betas")
                decoupled = float(config.name == "adamw")
                constants = [beta_1, beta_2, option("eps"), option("weight_decay"), decoupled]
            else:
                rule = kernels.ADAMW if config.name == "adamw" else kernels.ADAM
                beta_1, beta_2 = option("beta_1"), option("beta_2")
                decay = option("weight_decay") if config.name == "adamw" else 0.0
                constants = [beta_1, beta_2, 1.0, 1 - beta_1, 1 - beta_2, option("epsilon"), decay]
        elif config.name == "rmsprop":
            first, second = slots["velocity"], slots.get("momentum", empty)
            if self._torch:
                rule = kernels.TORCH_RMSPROP
                constants = [
                    option("alpha"),
                    option("eps"),
                    option("weight_decay"),
                    config.momentum,
                ]
            else:
                rule = kernels.RMSPROP_MOMENTUM if config.momentum else kernels.RMSPROP
                rho = option("rho")
                constants = [rho, 1 - rho, option("epsilon"), config.momentum]
        else:
            first, second = slots["accumulator"], empty
            if self._torch:
                rule = kernels.TORCH_ADAGRAD
                constants = [option("lr_decay"), option("weight_decay"), option("eps")]
            else:
                rule = kernels.ADAGRAD
                constants = [option("epsilon")]
        return rule, self.lr, first, second, np.array(constants, dtype=np.float64)
