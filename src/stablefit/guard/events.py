"""What a guard records and raises, the same for every framework.

A :class:`GuardEvent` is a plain record: one thing that went wrong in one training step,
its cause, the evidence, what the guard did and what the user should change. Reports
(text, JSON, HTML) read events through :meth:`GuardEvent.to_dict`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

#: Why a step went wrong. One vocabulary for every framework adapter.
CAUSES = (
    "data",  # a non-finite input or target
    "learning_rate",  # the step size exceeds what the loss's curvature allows
    "exploding_gradients",  # one gradient far above its running median
    "loss_function",  # finite predictions, non-finite loss (e.g. log(0))
    "precision",  # a layer's output overflows its float16/bfloat16 dtype
    "unknown",
)
#: What made the guard look: rows with NaN/inf, a step whose loss or gradients were
#: non-finite, a gradient norm far above its running median, a smoothed loss far above its
#: running minimum, or non-finite weights.
TRIGGERS = ("bad_rows", "nonfinite_step", "gradient_spike", "loss_spike", "nonfinite_weights")
#: What the guard did: left rows out, skipped the step, kept it (a rise of the loss, seen
#: after its step, judged no divergence: nothing changed), rolled back to the best weights
#: (and set the learning rate), set gradient clipping, or stopped training.
ACTIONS = ("masked", "skipped", "kept", "rolled_back", "clipped", "stopped")


class NonFiniteTrainingError(RuntimeError):
    """Training was stopped by the guard: its message says the cause, evidence and fix.

    The model holds the best finite weights the guard kept when this is raised.
    """


@dataclass
class GuardEvent:
    """One event of a training guard (Keras, PyTorch): where, why, what was done.

    Parameters
    ----------
    epoch, batch : int
        Where it happened, 0-based (progress bars show ``epoch + 1``, ``batch + 1``).
    trigger : str
        One of :data:`TRIGGERS`.
    cause : str
        One of :data:`CAUSES`.
    action : str
        One of :data:`ACTIONS`.
    message : str
        Cause, evidence and fix in plain words.
    fix : str
        What the user should change, alone.
    loss : float or None
        The loss of the step (NaN or inf for a non-finite step), when known.
    evidence : dict
        The numbers behind the cause (JSON-compatible values): e.g. ``lambda_max``,
        ``stable_learning_rate``, ``gradient_norm``, ``gradient_norm_median``, ``layer``,
        ``largest``, ``limit``, ``predictions``.
    rows : tuple of int
        Row indices in the user's data (bad rows), when the adapter can know them: their
        positions in in-memory arrays, or in a stream the adapter counts. Where rows have
        no single index (a Keras ``PyDataset``: ``evidence["dataset_rows"]`` holds
        ``[k, p]``, row ``p`` of ``dataset[k]``) or none is known, this is empty and
        their positions in the batch are in ``evidence["batch_positions"]``.
    columns : tuple of str
        The columns holding the non-finite values (data events).
    count : int
        How many times this same event was seen (a permanently bad row: once an epoch).
    restored_from : tuple of int or None
        ``(epoch, batch)`` of the weights restored by a rollback (batch -1: the start of
        that epoch).
    learning_rate_before, learning_rate_after : float or None
        The learning rate the optimizer used before and after the event.
    clipnorm : float or None
        The gradient clipping norm in force after the event.
    """

    epoch: int
    batch: int
    trigger: str
    cause: str
    action: str
    message: str
    fix: str
    loss: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    rows: tuple[int, ...] = ()
    columns: tuple[str, ...] = ()
    count: int = 1
    restored_from: tuple[int, int] | None = None
    learning_rate_before: float | None = None
    learning_rate_after: float | None = None
    clipnorm: float | None = None

    def describe(self) -> str:
        """One line for people: where, the cause and the message."""
        seen = f" (seen {self.count} times)" if self.count > 1 else ""
        return (
            f"epoch {self.epoch + 1}, batch {self.batch + 1}: {self.cause.replace('_', ' ')}"
            f"{seen}: {self.message}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-compatible values (non-finite floats as strings)."""
        return {key: _plain(value) for key, value in dataclasses.asdict(self).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        return _plain(value.item())
    return value


def position(epoch: int, batch: int) -> str:
    """A training position in progress-bar (1-based) numbering."""
    if batch < 0:
        return f"the start of epoch {epoch + 1}"
    return f"epoch {epoch + 1}, batch {batch + 1}"
