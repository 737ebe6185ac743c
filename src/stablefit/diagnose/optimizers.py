"""Keras's optimizers: their configuration, defaults and state, in the model's float type.

An :class:`UpdateRule` holds an optimizer's slots (momentum, Adam's moments, ...) and its
constants cast to the variable dtype, as Keras casts them. Its step is
:func:`stablefit.diagnose.kernels.update_step`, which mirrors
``keras/src/optimizers/<name>.py`` (Keras 3) operation by operation, so that the simulated
weights round, overflow to ``inf`` and turn ``NaN`` where Keras's would; the simulation's
compiled steps take the same function. Every array has a leading axis of independent runs
(one per initialization seed), so one call advances all of them.

The weights are one vector ``theta`` per run: the Dense kernel followed by the bias.
Weight decay (AdamW) applies to both, as Keras does unless told to exclude variables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stablefit.diagnose import kernels
from stablefit.errors import StablefitInputError

#: Keras's default learning rate of each optimizer (``keras.optimizers.<Name>()``).
DEFAULT_LEARNING_RATE: dict[str, float] = {
    "sgd": 0.01,
    "adam": 0.001,
    "adamw": 0.001,
    "rmsprop": 0.001,
    "adagrad": 0.001,
}
OPTIMIZERS: tuple[str, ...] = tuple(DEFAULT_LEARNING_RATE)
#: The optimizers whose step is divided by a running gradient magnitude.
ADAPTIVE: frozenset[str] = frozenset({"adam", "adamw", "rmsprop", "adagrad"})

# Keras's own defaults for the hyperparameters the forecast does not expose.
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
EPSILON = 1e-7
ADAMW_WEIGHT_DECAY = 0.004
RMSPROP_RHO = 0.9
ADAGRAD_INITIAL_ACCUMULATOR = 0.1


@dataclass(frozen=True)
class OptimizerConfig:
    """An optimizer as ``model.compile`` would get it.

    Parameters
    ----------
    name : str
        One of :data:`OPTIMIZERS` (lower case).
    learning_rate : float
        The learning rate (already resolved from Keras's default).
    momentum : float
        SGD's or RMSprop's momentum (0 = none, Keras's default).
    nesterov : bool
        SGD's Nesterov momentum.
    """

    name: str
    learning_rate: float
    momentum: float = 0.0
    nesterov: bool = False

    @classmethod
    def resolve(
        cls, optimizer: str, learning_rate: float | None, momentum: float, nesterov: bool
    ) -> OptimizerConfig:
        """Validate the user's choice and fill in Keras's default learning rate."""
        name = str(optimizer).strip().lower()
        if name not in DEFAULT_LEARNING_RATE:
            raise StablefitInputError(
                f"optimizer={optimizer!r} is not one stablefit simulates; "
                f"use one of {', '.join(OPTIMIZERS)}"
            )
        lr = DEFAULT_LEARNING_RATE[name] if learning_rate is None else float(learning_rate)
        if not np.isfinite(lr) or lr <= 0:
            raise StablefitInputError(
                f"learning_rate={learning_rate!r} must be a finite number > 0 (e.g. 0.001)"
            )
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0:
            raise StablefitInputError(
                f"momentum={momentum!r} must lie in [0, 1], as Keras requires (e.g. 0.9)"
            )
        if momentum and name not in ("sgd", "rmsprop"):
            raise StablefitInputError(
                f"momentum={momentum} applies to 'sgd' and 'rmsprop' only, not to {name!r}; "
                "drop it or change the optimizer"
            )
        if nesterov and name != "sgd":
            raise StablefitInputError(
                f"nesterov=True applies to 'sgd' only, not to {name!r}; drop it"
            )
        return cls(name=name, learning_rate=lr, momentum=momentum, nesterov=bool(nesterov))

    def keras_expression(self) -> str:
        """The Python expression that builds this optimizer in tf.keras."""
        class_name = {
            "sgd": "SGD",
            "adam": "Adam",
            "adamw": "AdamW",
            "rmsprop": "RMSprop",
            "adagrad": "Adagrad",
        }[self.name]
        # Keras rejects an int learning rate or momentum: always write a float literal.
        args = [f"learning_rate={float(self.learning_rate)!r}"]
        if self.momentum:
            args.append(f"momentum={float(self.momentum)!r}")
        if self.nesterov:
            args.append("nesterov=True")
        return f"tf.keras.optimizers.{class_name}({', '.join(args)})"


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
        if learning_rates is None:
            self.lr = self.dtype.type(config.learning_rate)
        else:
            self.lr = np.asarray(learning_rates, dtype=self.dtype).reshape(-1, 1)
        self.shape = shape
        self.iterations = 0
        zeros = np.zeros(shape, dtype=self.dtype)
        name = config.name
        if name == "sgd":
            self.slots = {"momentum": zeros.copy()} if config.momentum else {}
        elif name in ("adam", "adamw"):
            self.slots = {"m": zeros.copy(), "v": zeros.copy()}
        elif name == "rmsprop":
            self.slots = {"velocity": zeros.copy()}
            if config.momentum:
                self.slots["momentum"] = zeros.copy()
        else:
            self.slots = {"accumulator": np.full(shape, ADAGRAD_INITIAL_ACCUMULATOR, self.dtype)}

    def _c(self, value: float) -> np.generic:
        # Keras casts each Python constant to the variable dtype before using it.
        return self.dtype.type(value)

    def apply(self, theta: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """Return the weights after one optimizer step (the caller's arrays stay intact)."""
        theta = np.array(theta, dtype=self.dtype)  # a copy: the step updates it in place
        rule, lr, first, second, constants = self.kernel_arguments()
        grad = np.ascontiguousarray(grad, dtype=self.dtype)
        kernels.update_step(rule, theta, grad, lr, first, second, constants, self.iterations)
        self.iterations += 1
        return theta

    def kernel_arguments(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """This rule as :func:`~stablefit.diagnose.kernels.regular_steps` takes it.

        The kernel updates the slots in place and leaves :attr:`iterations` to the caller.

        Returns
        -------
        rule : int
            The kernel's code for the optimizer with its options.
        lr : ndarray
            The learning rate of each run, in the variable dtype.
        first, second : ndarray
            The slots the kernel updates in place (empty where the rule has fewer).
        constants : ndarray
            The hyperparameters, cast to the variable dtype, in the kernel's order.
        """
        c, config, slots = self._c, self.config, self.slots
        empty = np.empty((0, 0), dtype=self.dtype)
        lr = np.ascontiguousarray(np.broadcast_to(self.lr, (self.shape[0], 1))[:, 0])
        if config.name == "sgd":
            if not config.momentum:
                rule = kernels.SGD
            else:
                rule = kernels.NESTEROV if config.nesterov else kernels.MOMENTUM
            first, second = slots.get("momentum", empty), empty
            constants = [c(config.momentum)]
        elif config.name in ("adam", "adamw"):
            rule = kernels.ADAMW if config.name == "adamw" else kernels.ADAM
            first, second = slots["m"], slots["v"]
            constants = [
                c(ADAM_BETA_1),
                c(ADAM_BETA_2),
                c(1.0),
                c(1 - ADAM_BETA_1),
                c(1 - ADAM_BETA_2),
                c(EPSILON),
                c(ADAMW_WEIGHT_DECAY),
            ]
        elif config.name == "rmsprop":
            rule = kernels.RMSPROP_MOMENTUM if config.momentum else kernels.RMSPROP
            first, second = slots["velocity"], slots.get("momentum", empty)
            constants = [c(RMSPROP_RHO), c(1 - RMSPROP_RHO), c(EPSILON), c(config.momentum)]
        else:
            rule = kernels.ADAGRAD
            first, second = slots["accumulator"], empty
            constants = [c(EPSILON)]
        return rule, lr, first, second, np.array(constants, dtype=self.dtype)
