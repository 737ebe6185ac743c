"""A real training run, as the train report shows it.

``stablefit train`` fills a :class:`TrainingRecord` from Keras's per-epoch losses, the
guard's events and the exact fit; :meth:`TrainingRecord.to_html` renders it. The events
are taken as they come (any dataclass, or anything with ``to_dict()``): the report shows
every field they have, and draws them at their ``epoch`` and ``batch``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainingRecord:
    """What happened in one training run.

    Attributes
    ----------
    origin : str
        The data trained on (a file name).
    losses : tuple of float
        The loss at the end of each epoch, as Keras's History holds it.
    steps_per_epoch : int
        Batches per epoch (to place an event at its batch).
    settings : dict
        The configuration trained: optimizer, learning_rate, epochs, batch_size, ...
    events : tuple
        The guard's events, in order (each with ``epoch`` and ``batch``, 0-based).
    guard : bool
        Whether the guard was on.
    stopped : str or None
        The guard's message when it stopped training.
    diagnosis : Diagnosis or None
        The forecast of the data and of this configuration.
    coefficients : tuple of (str, float, float)
        Term, trained value, exact least-squares value (in the data's units).
    final_loss, optimal_loss : float
        The trained model's loss and the least-squares optimum.
    """

    origin: str
    losses: tuple[float, ...]
    steps_per_epoch: int
    settings: dict[str, Any] = field(default_factory=dict)
    events: tuple[Any, ...] = ()
    guard: bool = True
    stopped: str | None = None
    diagnosis: Any = None
    coefficients: tuple[tuple[str, float, float], ...] = ()
    final_loss: float = float("nan")
    optimal_loss: float = float("nan")

    def to_html(self) -> str:
        """The train report as one self-contained HTML page."""
        from stablefit.report.html.train import training_page

        return training_page(self)


def event_fields(event: Any) -> dict[str, Any]:
    """Every field of a guard event, by name, whatever its class."""
    if hasattr(event, "to_dict"):
        return dict(event.to_dict())
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return dict(vars(event))


def event_epoch(event: Any, steps_per_epoch: int) -> float:
    """Where an event happened on a 1-based epoch axis whose point k is the end of epoch k:
    batch b (0-based) of epoch e (0-based) is at ``e + (b + 1) / steps_per_epoch``."""
    fields = event_fields(event)
    epoch, batch = int(fields.get("epoch", 0)), int(fields.get("batch", -1))
    return epoch + (batch + 1) / max(steps_per_epoch, 1)


def describe_event(event: Any) -> str:
    """The event's own one-line description, or its fields."""
    if hasattr(event, "describe"):
        return str(event.describe())
    return ", ".join(f"{k}={v}" for k, v in event_fields(event).items())
