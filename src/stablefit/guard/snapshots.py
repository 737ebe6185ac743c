"""Which weights to keep and which to restore: the best recent states by smoothed loss.

The adapter owns the copies (on the device where it can); this bookkeeping only decides
when a copy is worth taking and which one a rollback restores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Snapshot:
    """A copy of the model and optimizer state, taken after ``(epoch, batch)``.

    Snapshots compare by identity: the adapter's copies (tensors, arrays) have no single
    truth value to compare by.

    ``batch`` is -1 for a copy taken before the epoch's first batch. ``loss`` is the
    smoothed loss at its weights (None before any step). ``state`` is the adapter's copy,
    opaque here. ``confirmed``: whether ``loss`` was measured at these weights; a copy is
    taken after a step whose loss was measured *before* its update, so its own loss is
    known only from the next step (:meth:`BestStates.confirm`). A diverging step's copy
    would otherwise carry the good loss of the weights before it.
    """

    epoch: int
    batch: int
    loss: float | None
    state: Any
    confirmed: bool = True


class BestStates:
    """The newest ``keep`` snapshots plus the best one, by smoothed loss.

    Parameters
    ----------
    keep : int
        Snapshots kept besides the best.
    gap : int
        Steps between two snapshots taken at new best losses (epoch ends always count).

    Examples
    --------
    >>> states = BestStates(keep=2, gap=1)
    >>> states.add(Snapshot(0, -1, None, "initial"))
    >>> states.wants(0.5, steps_since=1), states.wants(None, steps_since=1)
    (True, False)
    >>> states.add(Snapshot(0, 9, 0.5, "good"))
    >>> states.add(Snapshot(1, 9, 3.0, "worse"))
    >>> states.best().state
    'good'
    """

    def __init__(self, *, keep: int = 3, gap: int = 100) -> None:
        self.keep = keep
        self.gap = gap
        self.newest: list[Snapshot] = []
        self.best_snapshot: Snapshot | None = None

    def __len__(self) -> int:
        return len(self.newest) + (self.best_snapshot not in self.newest)

    def wants(self, smoothed_loss: float | None, *, steps_since: int) -> bool:
        """Whether a mid-epoch copy is worth taking now: a new best, ``gap`` steps on."""
        # The step count first: it answers no on all but one step in ``gap``.
        if steps_since < self.gap or smoothed_loss is None or not math.isfinite(smoothed_loss):
            return False
        best = self.best_loss()
        return best is None or smoothed_loss < best

    def best_loss(self) -> float | None:
        losses = [s.loss for s in self._all() if s.loss is not None]
        return min(losses) if losses else None

    def add(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot``; the oldest non-best one is dropped beyond ``keep``. An
        unconfirmed one becomes the best only once :meth:`confirm` gives its loss."""
        self.newest = [*self.newest, snapshot][-self.keep :]
        if snapshot.confirmed or self.best_snapshot is None:
            self._consider(snapshot)

    def confirm(self, snapshot: Snapshot, loss: float) -> None:
        """``loss``, measured at ``snapshot``'s weights, is its loss."""
        snapshot.loss, snapshot.confirmed = loss, True
        self._consider(snapshot)

    def _consider(self, snapshot: Snapshot) -> None:
        best = self.best_snapshot
        if (
            best is None
            or not best.confirmed
            or (snapshot.loss is not None and (best.loss is None or snapshot.loss <= best.loss))
        ):
            self.best_snapshot = snapshot

    def best(self) -> Snapshot | None:
        """The confirmed snapshot with the lowest smoothed loss (the initial one if none
        has a loss; an unconfirmed one only when no other is left)."""
        candidates = self._all()
        confirmed = [s for s in candidates if s.confirmed] or candidates
        with_loss = [s for s in confirmed if s.loss is not None]
        if with_loss:
            return min(with_loss, key=lambda s: s.loss)
        return confirmed[0] if confirmed else None

    def forget_after(self, snapshot: Snapshot) -> None:
        """After a rollback to ``snapshot``, the newer copies lie on the failed path."""
        order = self.newest
        if snapshot in order:
            self.newest = order[: order.index(snapshot) + 1]
        else:
            self.newest = [snapshot]

    def _all(self) -> list[Snapshot]:
        extra = (
            []
            if self.best_snapshot is None or self.best_snapshot in self.newest
            else [self.best_snapshot]
        )
        return [*extra, *self.newest]
