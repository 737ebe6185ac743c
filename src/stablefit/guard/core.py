"""The framework-neutral half of a training guard, shared by the Keras and PyTorch adapters.

Contract for an adapter (see :class:`GuardCore`):

1. In the compiled training step, on the device, every step: leave out rows whose inputs
   or targets are not finite (sample weight 0, values zeroed), skip the update when the
   loss or a gradient is not finite (weights, optimizer slots and iteration count
   untouched, the step's metrics not accumulated), and count skipped steps and bad rows
   in device variables. No host synchronisation in the common case.
2. Per step, hand the finite loss to :meth:`GuardCore.observe` (from values the framework
   already brings to the host, e.g. the logs); it answers ``"loss_spike"`` when the
   smoothed loss is far above its running minimum.
3. Offer snapshots (:meth:`GuardCore.wants_snapshot`, :meth:`GuardCore.keep`): at least at
   every epoch end and at new best losses, copied on the device where possible.
4. At an event (bad rows, a skipped step, a spike, non-finite weights), replay the failing
   batch from the weights before it layer by layer into a
   :class:`~stablefit.guard.classify.Replay`, and call :meth:`GuardCore.decide` with a
   :class:`~stablefit.guard.classify.Context` (learning rate, optimizer, gradient-norm
   median, a curvature callback). Apply the :class:`~stablefit.guard.policy.Remedy` it
   returns exactly (restore :meth:`GuardCore.rollback_target`, set the learning rate on
   the optimizer that updates the weights, set clipnorm), then call
   :meth:`GuardCore.record` with what was really done; it returns the
   :class:`~stablefit.guard.events.GuardEvent`.
5. For bad rows found in the step, call :meth:`GuardCore.data_event`: a row seen again is
   counted on its first event instead of making a new one.
6. At each epoch end call :meth:`GuardCore.epoch_end`; when a remedy says ``"stopped"``,
   stop training and raise :class:`~stablefit.guard.events.NonFiniteTrainingError` with
   :meth:`GuardCore.failure_message` (or warn, as the user chose).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from stablefit.diagnose.findings import format_number
from stablefit.guard.classify import Context, Replay, Verdict, classify
from stablefit.guard.events import GuardEvent, position
from stablefit.guard.history import LossHistory
from stablefit.guard.phrases import NEUTRAL, Phrasebook
from stablefit.guard.policy import Remedy, RemedyPolicy, RetryWindow
from stablefit.guard.snapshots import BestStates, Snapshot


class GuardCore:
    """Loss history, best states, retry window, remedy policy and event records.

    Parameters
    ----------
    max_retries : int
        Remedies allowed since the last clean epoch before the guard stops.
    spike_factor : float
        A smoothed loss this many times its running minimum triggers a rollback.
    snapshot_gap : int
        Steps between mid-epoch snapshots at new best losses.
    policy : RemedyPolicy or None
        The remedies (default :class:`~stablefit.guard.policy.RemedyPolicy()`).
    phrases : Phrasebook
        The adapter's framework's words for fixes (:data:`stablefit.guard.phrases.KERAS`,
        :data:`~stablefit.guard.phrases.TORCH`): the same causes and remedies, each user
        told what to change in their own API.
    """

    def __init__(
        self,
        *,
        max_retries: int = 5,
        spike_factor: float = 10.0,
        snapshot_gap: int = 100,
        policy: RemedyPolicy | None = None,
        phrases: Phrasebook = NEUTRAL,
    ) -> None:
        self.history = LossHistory(spike_factor=spike_factor)
        self.states = BestStates(gap=snapshot_gap)
        self.window = RetryWindow(max_retries)
        self.policy = policy or RemedyPolicy()
        self.phrases = phrases
        self.events: list[GuardEvent] = []
        self._data_events: dict[Hashable, int] = {}
        self._steps_since_snapshot = 0
        self._unconfirmed: Snapshot | None = None

    # -- per step --------------------------------------------------------------------

    def observe(self, loss: float) -> str | None:
        """Record a step's finite loss; ``"loss_spike"`` when the smoothed loss spiked."""
        history = self.history
        history.add(loss)
        if self._unconfirmed is not None:
            # The first loss measured at the last copy's weights: that copy's own loss.
            self.states.confirm(self._unconfirmed, history.smoothed)
            self._unconfirmed = None
        self._steps_since_snapshot += 1
        return "loss_spike" if history.is_spike() else None

    def wants_snapshot(self) -> bool:
        """Whether a mid-epoch snapshot is worth taking now (a new best loss)."""
        if self._steps_since_snapshot < self.states.gap:
            return False  # all but one step in the gap, told without a call: every step asks
        return self.states.wants(self.history.smoothed, steps_since=self._steps_since_snapshot)

    def keep(self, epoch: int, batch: int, state: Any) -> None:
        """Keep the adapter's copy ``state`` taken after ``(epoch, batch)``; the next
        observed loss, the first at its weights, confirms its loss."""
        snapshot = Snapshot(epoch, batch, self.history.smoothed, state, confirmed=False)
        self.states.add(snapshot)
        self._unconfirmed = snapshot
        self._steps_since_snapshot = 0

    def start_over(self, epoch: int, batch: int, state: Any) -> None:
        """The adapter's model was given another state from outside (a checkpoint
        loaded): forget the copies and losses of the state before it, keep ``state``."""
        self.states = BestStates(keep=self.states.keep, gap=self.states.gap)
        self.history.restart(None)
        self.keep(epoch, batch, state)

    def rollback_target(self) -> Snapshot | None:
        """The snapshot a rollback restores: the lowest smoothed loss kept."""
        return self.states.best()

    def best_at_end(self, *, factor: float = 1.1) -> tuple[Snapshot, Verdict] | None:
        """At the end of a run the guard had to steer: the best weights, if clearly better.

        After a learning-rate event the run may end on a new rise (a schedule that keeps
        growing the rate); when the smoothed loss at the end is ``factor`` times the best
        snapshot's, that snapshot is what the user wants to keep.
        """
        best = self.states.best()
        now = self.history.smoothed
        steered = any(e.cause == "learning_rate" for e in self.events)
        if not steered or best is None or best.loss is None or now is None:
            return None
        if not now > factor * best.loss:
            return None
        verdict = Verdict(
            cause="learning_rate",
            finding=(
                f"training ended with the smoothed loss at {format_number(now)}, "
                f"{format_number(now / best.loss)} times the best kept "
                f"({format_number(best.loss)}, {position(best.epoch, best.batch)})"
            ),
            fix="lower the learning rate where it grows (the schedule)",
            evidence={"smoothed_loss": now, "best_loss": best.loss},
        )
        return best, verdict

    def epoch_end(self) -> None:
        """An epoch ended: the retry budget resets when it had no remedy."""
        self.window.epoch_end()

    # -- events ----------------------------------------------------------------------

    def decide(
        self, replay: Replay, context: Context, *, clipnorm: float | None = None
    ) -> tuple[Verdict, Remedy]:
        """The cause of a failed step and the remedy the adapter must apply."""
        context = replace(context, runaway=self.history.runaway())
        verdict = classify(replay, context, self.phrases)
        remedy = self.policy.decide(
            verdict,
            trigger=context.trigger,
            learning_rate=context.learning_rate,
            clipnorm=clipnorm,
            gradient_norm_median=context.gradient_norm_median,
            window=self.window,
            phrases=self.phrases,
        )
        return verdict, remedy

    def record(
        self,
        *,
        epoch: int,
        batch: int,
        trigger: str,
        verdict: Verdict,
        remedy: Remedy,
        loss: float | None,
        restored: Snapshot | None = None,
        learning_rate_before: float | None = None,
        learning_rate_after: float | None = None,
        clipnorm: float | None = None,
    ) -> GuardEvent:
        """The event for a remedy the adapter applied, with what it really did."""
        if restored is not None:
            self.states.forget_after(restored)
            self.history.restart(restored.loss)
            self._steps_since_snapshot = 0
            # The next loss is measured at the restored weights, not at a forgotten copy's.
            self._unconfirmed = None if restored.confirmed else restored
        elif trigger == "loss_spike":
            self.history.rebase()
        done = _what_was_done(remedy, restored, learning_rate_before, learning_rate_after, clipnorm)
        event = GuardEvent(
            epoch=epoch,
            batch=batch,
            trigger=trigger,
            cause=verdict.cause,
            action=remedy.action,
            message=f"{verdict.finding}; {done}. Fix: {verdict.fix}.",
            fix=verdict.fix,
            loss=loss,
            evidence=dict(verdict.evidence),
            restored_from=None if restored is None else (restored.epoch, restored.batch),
            learning_rate_before=learning_rate_before,
            learning_rate_after=learning_rate_after,
            clipnorm=clipnorm,
        )
        self.events.append(event)
        return event

    def data_event(
        self,
        *,
        epoch: int,
        batch: int,
        key: Hashable,
        replay: Replay,
        rows: Sequence[int] = (),
        loss: float | None = None,
        learning_rate: float | None = None,
        where: str | None = None,
        evidence: dict[str, Any] | None = None,
        whole_batch: bool | str = False,
        found: str = "NaN or inf",
    ) -> GuardEvent | None:
        """Bad rows left out of a step: a new event, or None when ``key`` was seen before.

        ``key`` identifies the rows (their indices in the user's data, or their content),
        so a permanently bad row makes one event whose ``count`` grows each time. ``where``
        words the rows when they are not ``rows`` "of the data" (e.g. "row 3 of
        dataset[12]"); ``evidence`` adds to the event's evidence; ``whole_batch`` says
        that no row of the batch was left (its step was skipped), or, as a phrase, why the
        step was skipped with the batch's other rows. ``found``: what the rows hold that
        makes them bad (their values when finite but extreme).
        """
        if key in self._data_events:
            index = self._data_events[key]
            self.events[index].count += 1
            return None
        verdict = classify(replay, Context(trigger="bad_rows"), self.phrases)
        if where is None:
            where = (
                f"{'row' if len(rows) == 1 else 'rows'} {row_list(rows)} of the data"
                if rows
                else f"{len(replay.bad_positions)} row(s)"
            )
        event = GuardEvent(
            epoch=epoch,
            batch=batch,
            trigger="bad_rows",
            cause="data",
            action="masked",
            message=(
                f"{where} with {found} in {', '.join(replay.bad_columns) or 'the inputs'}; "
                + (
                    f"the step of its batch was skipped, as {whole_batch} (the "
                    if isinstance(whole_batch, str)
                    else "every row of the batch was left out, so its step was skipped (the "
                    if whole_batch
                    else "left out of the step (the other rows trained as usual, the "
                )
                + f"learning rate is unchanged). Fix: {verdict.fix}."
            ),
            fix=verdict.fix,
            loss=loss,
            evidence={**verdict.evidence, **(evidence or {})},
            rows=tuple(int(r) for r in rows),
            columns=tuple(replay.bad_columns),
            learning_rate_before=learning_rate,
            learning_rate_after=learning_rate,
        )
        self._data_events[key] = len(self.events)
        self.events.append(event)
        return event

    def continue_rows_of(self, earlier: GuardCore) -> None:
        """Count bad rows ``earlier`` (the same guard's core in an earlier ``fit``) reported
        on its events: a permanently bad row stays one event across fits."""
        self._data_events.update(earlier._data_events)

    def reported(self, key: Hashable) -> GuardEvent | None:
        """The data event of the rows ``key``, None when they were not reported."""
        index = self._data_events.get(key)
        return None if index is None else self.events[index]

    def forget_rows(self, key: Hashable) -> None:
        """Report the rows ``key`` anew when next seen (they turned out to be other rows
        with the same values)."""
        self._data_events.pop(key, None)

    def failure_message(
        self,
        event: GuardEvent,
        *,
        reason: str,
        epochs: int | None = None,
        steps: int | None = None,
        holds: str = "",
        diagnosis: str = "",
    ) -> str:
        """The error (or warning) text when the guard stops training, naming the guard as
        the user called it (the phrasebook's ``guard``)."""
        where = f"epoch {event.epoch + 1}" + (f"/{epochs}" if epochs else "")
        where += f", batch {event.batch + 1}" + (f"/{steps}" if steps else "")
        earlier = [e for e in self.events if e is not event]
        cause = event.cause.replace("_", " ")
        lines = [
            f"{self.phrases.guard} stopped training at {where}: cause {cause}.",
            event.message,
            f"Stopped because {reason}.",
        ]
        if holds:
            lines.append(holds)
        if earlier:
            lines.append("Earlier events:")
            lines.extend(f"  - {e.describe()}" for e in earlier[-6:])
        if diagnosis:
            lines.append(diagnosis)
        return "\n".join(lines)


def _what_was_done(
    remedy: Remedy,
    restored: Snapshot | None,
    rate_before: float | None,
    rate_after: float | None,
    clipnorm: float | None,
) -> str:
    parts = []
    if remedy.action == "stopped":
        parts.append("training stopped")
    elif remedy.action == "skipped":
        parts.append("the step was skipped")
    elif remedy.action == "kept":
        parts.append("the step was kept")
    if restored is not None:
        loss = "" if restored.loss is None else f", smoothed loss {format_number(restored.loss)}"
        parts.append(f"restored the weights from {position(restored.epoch, restored.batch)}{loss}")
    if rate_before is not None and rate_after is not None and rate_after != rate_before:
        parts.append(f"learning rate {format_number(rate_before)} -> {format_number(rate_after)}")
    if remedy.action == "clipped" and clipnorm is not None:
        parts.append(f"gradients clipped at norm {format_number(clipnorm)}")
    return "; ".join(parts) if parts else "nothing changed"


def row_list(rows: Iterable[Any], shown: int = 8) -> str:
    """``rows`` as "3, 17, 40", the first ``shown`` of them and how many more."""
    rows = list(rows)
    text = ", ".join(str(r) for r in rows[:shown])
    return text + (f" (and {len(rows) - shown} more)" if len(rows) > shown else "")


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
