"""The loss seen step by step: smoothed, its running minimum, spikes and growth."""

from __future__ import annotations

import math
from collections import deque

from stablefit.guard.curvature import geometric_growth


class LossHistory:
    """Finite per-step losses, as an adapter observes them.

    Parameters
    ----------
    smoothing : float
        Weight of a new loss in the exponential moving average (the smoothed loss).
    window : int
        Recent losses kept for the growth estimate.
    spike_factor : float
        A smoothed loss above this many times the running minimum of the smoothed loss
        is a spike.

    Examples
    --------
    >>> history = LossHistory(spike_factor=10)
    >>> for loss in [1.0, 0.5, 0.4, 0.4]:
    ...     history.add(loss)
    >>> history.is_spike()
    False
    >>> for loss in [4.0, 40.0, 400.0]:
    ...     history.add(loss)
    >>> history.is_spike(), round(history.growth(), 1)
    (True, 10.0)

    A rise taken for noise rebases the minimum; the best before it is kept, so a climb
    made of such rises still shows:

    >>> history.rebase()
    >>> for loss in [4e3, 4e4]:
    ...     history.add(loss)
    >>> round(history.runaway())
    5199
    """

    def __init__(
        self, *, smoothing: float = 0.1, window: int = 8, spike_factor: float = 10.0
    ) -> None:
        self.smoothing = smoothing
        self.spike_factor = spike_factor
        self.recent: deque[float] = deque(maxlen=window)
        self.smoothed: float | None = None
        self.minimum = math.inf
        self.first: float | None = None
        self.steps = 0
        self.best_before_rebase: float | None = None

    def add(self, loss: float) -> None:
        """Record a finite loss (non-finite ones are skipped steps, not history)."""
        if not math.isfinite(loss):
            return
        self.steps += 1
        self.recent.append(loss)
        if self.first is None:
            self.first = loss
        smoothed = self.smoothed
        smoothed = loss if smoothed is None else smoothed + self.smoothing * (loss - smoothed)
        self.smoothed = smoothed
        if smoothed < self.minimum:  # min() without its call: this runs every step
            self.minimum = smoothed

    def is_spike(self) -> bool:
        """Whether the smoothed loss is ``spike_factor`` times its running minimum.

        A rise that is small against the first loss (below a thousandth of it, as near an
        exact fit, where the loss's relative noise is large) is not a spike.
        """
        if self.smoothed is None or self.steps < 2:
            return False
        floor = 1e-3 * abs(self.first or 0.0)
        return (
            self.smoothed > self.spike_factor * self.minimum
            and self.smoothed - self.minimum > floor
        )

    def growth(self, then: float | None = None) -> float | None:
        """The recent losses' growth factor per step when they rise geometrically.

        ``then`` is the loss of a failed step, which is not part of the history but is
        evidence of the rise when finite.
        """
        recent = list(self.recent)
        if then is not None and math.isfinite(then):
            recent.append(then)
        return geometric_growth(recent)

    def rebase(self) -> None:
        """Take the current smoothed loss as the new minimum (a rise judged harmless)."""
        if self.smoothed is not None:
            if self.best_before_rebase is None:
                self.best_before_rebase = self.minimum
            self.minimum = self.smoothed

    def runaway(self) -> float | None:
        """The smoothed loss over the best before rises were taken for noise, when it is
        ``spike_factor`` squared or more: rises that each looked harmless add up to a
        slow divergence. None otherwise."""
        best, smoothed = self.best_before_rebase, self.smoothed
        if best is None or smoothed is None or not best > 0:
            return None
        ratio = smoothed / best
        return ratio if ratio > self.spike_factor**2 else None

    def restart(self, loss: float | None) -> None:
        """Start again from restored weights whose smoothed loss was ``loss``.

        ``None`` (weights restored from before the first step): the history starts afresh,
        so the losses on the way down again are not taken for a spike.
        """
        self.recent.clear()
        self.best_before_rebase = None
        if loss is not None and math.isfinite(loss):
            self.smoothed = loss
            self.minimum = min(self.minimum, loss)
        elif loss is None:
            self.smoothed, self.minimum, self.first, self.steps = None, math.inf, None, 0
