"""What :class:`~stablefit.keras.NanGuard` records and raises.

Kept free of Keras imports so that the event records and the error can be used (and
caught) without TensorFlow installed.
"""

from __future__ import annotations

from dataclasses import dataclass


class NonFiniteTrainingError(RuntimeError):
    """Training kept producing non-finite values after every remedy the guard tried.

    The model holds the last good weights when this is raised; the message says what went
    non-finite, where, and what was tried.
    """


@dataclass(frozen=True)
class GuardEvent:
    """One non-finite value caught by :class:`~stablefit.keras.NanGuard`.

    Parameters
    ----------
    epoch, batch : int
        Where it happened, 0-based as in Keras's callback arguments (Keras's progress bar
        shows ``epoch + 1``).
    kind : {"loss", "weights"}
        What was non-finite: the loss reported for the batch, or a model weight.
    variable : str or None
        The first model variable holding a non-finite value (its Keras path), or None when
        every weight was still finite.
    value : float
        The offending value: the loss, or the first non-finite entry of ``variable``.
    action : {"rollback", "stop"}
        ``"rollback"``: the snapshot was restored, the remedy applied and training went on.
        ``"stop"``: retries were exhausted; the snapshot was restored and training stopped.
    restored_from : tuple of int or None
        ``(epoch, batch)`` after which the restored snapshot was taken; batch ``-1`` means
        before the first batch of that epoch. None when no snapshot existed.
    remedy : str
        The remedy applied, in words.
    learning_rate_before, learning_rate_after : float or None
        The optimizer's current learning rate before and after the remedy.
    clipnorm : float or None
        The optimizer's ``clipnorm`` after the remedy.
    """

    epoch: int
    batch: int
    kind: str
    variable: str | None
    value: float
    action: str
    restored_from: tuple[int, int] | None
    remedy: str
    learning_rate_before: float | None
    learning_rate_after: float | None
    clipnorm: float | None

    def describe(self) -> str:
        """One line for people: where, what, and what the guard did."""
        what = "loss" if self.kind == "loss" else f"weight {self.variable}"
        restored = (
            "no snapshot to restore"
            if self.restored_from is None
            else f"restored the weights {snapshot_position(self.restored_from)}"
        )
        return (
            f"epoch {self.epoch + 1}, batch {self.batch + 1}: {what} = {self.value:g}; "
            f"{restored}; {self.remedy}"
        )


def snapshot_position(position: tuple[int, int] | None) -> str:
    """Where a snapshot was taken, in Keras's 1-based progress-bar numbering."""
    if position is None:
        return "(none taken)"
    epoch, batch = position
    if batch < 0:
        return f"from the start of epoch {epoch + 1}"
    return f"from after epoch {epoch + 1}, batch {batch + 1}"
