"""Where training is stable: the forecast outcome over a grid of learning rates and optimizers.

The map runs the forecast's own simulation (:func:`~stablefit.diagnose.simulation.simulate`)
on the same loss, batch size, epochs and float type, for every optimizer stablefit simulates
at Keras's default hyperparameters, over learning rates spanning the exact stability bound
of plain SGD and the rate forecast. It is computed on first use
(:attr:`TrainingForecast.stability_map <stablefit.diagnose.training.TrainingForecast>`),
since it takes a few hundred simulated runs: tens of milliseconds on small data, about a
second for 20 features at batch size 32, several for hundreds of features. The optimizers'
rows are simulated side by side on the cores there are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stablefit.diagnose.optimizers import OPTIMIZERS, OptimizerConfig
from stablefit.diagnose.simulation import MAX_STEPS, Outcome, judge, loss_resolution, simulate
from stablefit.diagnose.stability import max_stable_learning_rate
from stablefit.parallel import ordered_map

if TYPE_CHECKING:
    from stablefit.diagnose.training import TrainingForecast

#: Learning rates on the map at most; fewer per decade when the span is wide.
MAX_RATES = 30
_FLOAT_TYPES = {"float32": np.float32, "float64": np.float64}


@dataclass(frozen=True)
class StabilityMap:
    """The forecast outcome of each optimizer at each learning rate.

    Attributes
    ----------
    optimizers : tuple of str
        Row labels (lower-case Keras names), the forecast's optimizer first.
    learning_rates : ndarray
        The grid, ascending, log-spaced.
    outcomes : tuple of tuple of {"diverges", "stalls", "converges"}
        ``outcomes[i][k]``: optimizer ``i`` at ``learning_rates[k]``.
    bounds : dict
        Each optimizer's largest stable learning rate on this loss (None for the adaptive
        ones, which have none).
    chosen_optimizer, chosen_learning_rate, chosen_outcome
        The setting forecast, and its outcome (from the forecast itself).
    seed : int
        The one initialization every run of the map starts from.
    epochs : int
        Epochs simulated per run.
    note : str
        How the map was computed and what it approximates.
    """

    optimizers: tuple[str, ...]
    learning_rates: np.ndarray
    outcomes: tuple[tuple[Outcome, ...], ...]
    bounds: dict[str, float | None]
    chosen_optimizer: str
    chosen_learning_rate: float
    chosen_outcome: Outcome
    seed: int
    epochs: int
    note: str

    def outcome(self, optimizer: str, learning_rate: float) -> Outcome:
        """The outcome at the grid point nearest ``learning_rate`` (on a log scale)."""
        row = self.optimizers.index(optimizer)
        column = int(np.argmin(np.abs(np.log(self.learning_rates / learning_rate))))
        return self.outcomes[row][column]

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimizers": list(self.optimizers),
            "learning_rates": [float(r) for r in self.learning_rates],
            "outcomes": [list(row) for row in self.outcomes],
            "bounds": dict(self.bounds),
            "chosen": {
                "optimizer": self.chosen_optimizer,
                "learning_rate": self.chosen_learning_rate,
                "outcome": self.chosen_outcome,
            },
            "seed": self.seed,
            "epochs": self.epochs,
            "note": self.note,
        }


def map_learning_rates(anchors: list[float], limit: int = MAX_RATES) -> np.ndarray:
    """Log-spaced rates from two decades below the smallest anchor to a decade above the
    largest (at least to 1), on a 1-2-5 grid when that fits in ``limit`` points."""
    low = math.floor(math.log10(min(anchors))) - 2
    high = max(0, math.ceil(math.log10(max(anchors))) + 1)
    for mantissas in ((1.0, 2.0, 5.0), (1.0, 3.0), (1.0,)):
        if len(mantissas) * (high - low) + 1 <= limit:
            rates = [m * 10.0**e for e in range(low, high) for m in mantissas]
            return np.array([*rates, 10.0**high])
    return np.logspace(low, high, limit)


def stability_map(forecast: TrainingForecast) -> StabilityMap | None:
    """The outcome of each optimizer over a grid of learning rates, on the forecast's data.

    Every run starts from the forecast's first seed and takes at most a quarter of the
    forecast's step budget (as the recommendation search does); the forecast's own outcome
    marks the chosen setting.
    """
    problem = forecast.problem
    if problem is None:
        return None
    dtype = _FLOAT_TYPES[forecast.dtype]
    sgd_bound, _ = max_stable_learning_rate(OptimizerConfig("sgd", 0.01), forecast.lambda_max)
    anchors = [forecast.learning_rate, 1e-3, 1e-2] + ([sgd_bound] if sgd_bound else [])
    rates = map_learning_rates(anchors)
    seed = forecast.seeds[0]
    optimal_loss = forecast.optimal_loss
    resolution = loss_resolution(problem.quadratic, dtype)
    names = (forecast.optimizer, *(name for name in OPTIMIZERS if name != forecast.optimizer))
    configs = [
        OptimizerConfig(
            name,
            forecast.learning_rate,
            forecast.momentum if name == forecast.optimizer else 0.0,
            forecast.nesterov if name == forecast.optimizer else False,
        )
        for name in names
    ]
    bounds = {c.name: max_stable_learning_rate(c, forecast.lambda_max)[0] for c in configs}

    def row(config: OptimizerConfig) -> tuple[Outcome, ...]:
        runs = simulate(
            problem,
            config,
            batch_size=forecast.batch_size,
            epochs=forecast.epochs,
            dtype=dtype,
            seeds=(seed,),
            learning_rates=rates,
            max_steps=MAX_STEPS // 4,
        )
        return tuple(
            judge(runs.of_rate(k, 1), optimal_loss, resolution).outcome for k in range(len(rates))
        )

    # Each optimizer's runs are independent, and their compiled steps release the GIL.
    outcomes = list(ordered_map(row, configs))
    return StabilityMap(
        optimizers=names,
        learning_rates=rates,
        outcomes=tuple(outcomes),
        bounds=bounds,
        chosen_optimizer=forecast.optimizer,
        chosen_learning_rate=forecast.learning_rate,
        chosen_outcome=forecast.outcome,
        seed=seed,
        epochs=forecast.epochs,
        note=(
            f"each cell is one simulated run of {forecast.epochs} epochs at batch size "
            f"{forecast.batch_size} from initialization seed {seed}, at most "
            f"{MAX_STEPS // 4} steps step by step (SGD continues in closed form beyond "
            "them, the adaptive optimizers hold their last loss); the optimizers' other "
            "hyperparameters are Keras's defaults"
            + (", except the momentum given for its own" if forecast.momentum else "")
        ),
    )
