"""The remedy that fits a cause, and the retry budget it spends.

Data: the rows are left out in the step itself; nothing else changes. Learning rate: roll
back to the best recent weights and set the rate the curvature allows (or stop when no
workable rate exists). Exploding gradients: clip at a multiple of the running median
norm. Loss function and precision: stop with the explanation (a lower learning rate
cannot fix them). Unknown: skip the step (keep it, for a rise of the loss the curvature
does not explain, seen after its step). Every remedy spends a retry but the data one,
a kept step and a step skipped for a non-finite part outside what the guard sees (none
of its remedies can change that); the budget is reset after an epoch without events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stablefit.diagnose.findings import format_number
from stablefit.guard.classify import Verdict
from stablefit.guard.phrases import NEUTRAL, Phrasebook


@dataclass(frozen=True)
class Remedy:
    """What the adapter must do for an event.

    Attributes
    ----------
    action : str
        One of :data:`~stablefit.guard.events.ACTIONS`.
    rollback : bool
        Restore the best snapshot (:meth:`~stablefit.guard.snapshots.BestStates.best`).
    learning_rate : float or None
        The learning rate to set, when it changes.
    clipnorm : float or None
        The gradient clipping norm to set, when it changes.
    reason : str
        Why the guard stops (when ``action == "stopped"``), else empty.
    """

    action: str
    rollback: bool = False
    learning_rate: float | None = None
    clipnorm: float | None = None
    reason: str = ""


class RetryWindow:
    """Remedies allowed before the guard stops, counted since the last clean epoch.

    Examples
    --------
    >>> window = RetryWindow(1)
    >>> window.spend(), window.spend()
    (True, False)
    >>> window.epoch_end(clean=True)
    >>> window.spend()
    True
    """

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries
        self.used = 0
        self._event_in_epoch = False

    def spend(self) -> bool:
        """Count one remedy; False when the budget is exhausted."""
        self.used += 1
        self._event_in_epoch = True
        return self.used <= self.max_retries

    def epoch_end(self, *, clean: bool | None = None) -> None:
        """Reset the budget after an epoch without remedies (or when ``clean`` says so)."""
        if clean is None:
            clean = not self._event_in_epoch
        if clean:
            self.used = 0
        self._event_in_epoch = False


@dataclass(frozen=True)
class RemedyPolicy:
    """How the guard answers each cause.

    Parameters
    ----------
    safety : float
        The learning rate set after a learning-rate event is this fraction of the
        stability bound (and at most this fraction of the rate that failed).
    max_cut : float
        When the bound is more than this many times below the rate that failed (or, for
        a rate above 1, below 1), no learning rate trains the model in reasonable time:
        the guard stops and says so. A rate above 1 that far above an ordinary bound is
        the rate's fault, not the curvature's: the guard sets the bound's rate and goes on.
    clip_factor : float
        ``clipnorm`` is set to this many times the running median gradient norm.
    fallback_factor : float
        The learning-rate factor when no curvature estimate exists.
    """

    safety: float = 0.5
    max_cut: float = 1e4
    clip_factor: float = 5.0
    fallback_factor: float = 0.1

    def decide(
        self,
        verdict: Verdict,
        *,
        trigger: str,
        learning_rate: float | None,
        clipnorm: float | None,
        gradient_norm_median: float | None,
        window: RetryWindow,
        phrases: Phrasebook = NEUTRAL,
    ) -> Remedy:
        """The remedy for ``verdict``, spending a retry from ``window`` when it is one
        (a reason to stop in the words of ``phrases``' framework)."""
        cause = verdict.cause
        if cause == "data":
            return Remedy(action="masked")
        if cause in ("loss_function", "precision"):
            return Remedy(
                action="stopped",
                reason=f"a lower learning rate cannot fix a {cause.replace('_', ' ')} problem",
            )
        if cause == "unknown" and trigger == "loss_spike":
            # A rise the curvature does not explain, seen after its step was taken.
            return Remedy(action="kept")
        if cause == "unknown" and verdict.evidence.get("outside_loss"):
            # Outside what the guard sees: none of its remedies applies, and the skipped
            # step did no harm (a bad row there comes back every epoch).
            return Remedy(action="skipped")
        if not window.spend():
            return Remedy(
                action="stopped",
                rollback=True,
                reason=f"{window.max_retries} remedies since the last clean epoch did not help",
            )
        if cause == "learning_rate":
            return self._learning_rate(verdict, learning_rate, phrases)
        if cause == "exploding_gradients":
            clip = self.clip_factor * (gradient_norm_median or 1.0)
            if clipnorm is not None and clipnorm <= clip:
                clip = clipnorm / 2.0
            return Remedy(action="clipped", rollback=trigger == "loss_spike", clipnorm=clip)
        return Remedy(action="skipped", rollback=trigger != "nonfinite_step")

    def _learning_rate(self, verdict: Verdict, rate: float | None, phrases: Phrasebook) -> Remedy:
        curvature = verdict.curvature
        bound = None if curvature is None else curvature.stable_learning_rate
        bound = verdict.evidence.get("safe_learning_rate", bound)
        if rate is None or not math.isfinite(rate) or rate <= 0:
            return Remedy(action="rolled_back", rollback=True)
        new_rate = self.safety * rate if bound is None else self.safety * bound
        if bound is None and curvature is None:
            new_rate = self.fallback_factor * rate
        new_rate = min(new_rate, self.safety * rate)
        if new_rate < min(rate, 1.0) / self.max_cut:
            return Remedy(
                action="stopped",
                rollback=True,
                reason=(
                    f"the stable learning rate {format_number(new_rate / self.safety)} is "
                    f"{format_number(rate / (new_rate / self.safety))} times below "
                    f"{format_number(rate)}: no learning rate trains this model in reasonable "
                    "time; the curvature comes from the inputs' scales, so "
                    f"{phrases.standardize_inputs} and train again"
                ),
            )
        return Remedy(action="rolled_back", rollback=True, learning_rate=new_rate)
