"""``NanGuard``: catch the first non-finite loss or weight, roll back, fix, carry on.

Keras's own ``TerminateOnNaN`` looks at the loss after the update that produced it has
already been applied: it stops with the broken weights in the model (the seed's
Example 1 with SGD is left with weights like 4e32, then NaN), and the end of training it
triggers lets ``BackupAndRestore`` delete its backups. ``NanGuard`` keeps a copy of the
last weights and optimizer state that produced a finite loss, puts them back, lowers the
learning rate, and goes on; it stops (and says why) only after ``max_retries``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from stablefit.errors import StablefitInputError, StablefitWarning
from stablefit.keras._optimizer import (
    current_learning_rate,
    forecast_settings,
    learning_rate_object,
    scale_learning_rate,
)
from stablefit.keras.events import GuardEvent, NonFiniteTrainingError, snapshot_position

_CHECK_WEIGHTS = ("snapshot", "batch", "never")
_ON_FAILURE = ("raise", "warn")
_SAVE_METHODS = ("save_weights", "save")
# Snapshots whose loss was confirmed finite, newest last. Two are enough to step back
# once when the newest one is itself on a diverging path.
_GOOD_SNAPSHOTS_KEPT = 2
# A snapshot whose loss is this many times the best loss of the run is not kept as good:
# a diverging run passes through huge but finite losses before it overflows, and rolling
# back to one of those would only diverge again.
_DIVERGING_GROWTH = 1e4


@dataclass
class _Snapshot:
    epoch: int
    batch: int
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]


class NanGuard(keras.callbacks.Callback):
    """Restore the last good state on a non-finite loss or weight, remedy, continue.

    Every batch, the loss is checked; every ``snapshot_every`` batches the weights and
    optimizer state are copied (and, by default, checked). A snapshot counts as good once
    a later batch trained from it reports a finite loss. On a non-finite value the guard
    restores the newest good snapshot, multiplies the learning rate by ``lr_factor``
    (schedules are scaled, not replaced), optionally sets ``clipnorm``, and lets training
    go on. After ``max_retries`` rollbacks in one ``fit`` it restores the last good state,
    stops training and raises :class:`NonFiniteTrainingError` (or warns).

    While the guard is in the callback list, every ``model.save_weights``/``model.save``
    call (which is how ``ModelCheckpoint`` and ``BackupAndRestore`` write) first checks the
    weights and rolls back if they are non-finite, so no checkpoint holds a NaN, whatever
    the order of the callbacks.

    Parameters
    ----------
    snapshot_every : int, default=50
        Batches between snapshots. A snapshot costs one host copy of the weights and
        optimizer state (about 0.6 ms for the 20 variables of a small MLP with Adam, more
        than its training step), so the default amortizes it; a rollback loses at most
        this many batches of progress.
    check_weights : {"snapshot", "batch", "never"}, default="snapshot"
        When to check the weights for non-finite values besides the loss: when taking a
        snapshot (free, the copy is made anyway) and at each epoch end; after every batch
        (one host copy per batch); or never (the loss alone; saves are still checked).
    lr_factor : float, default=0.1
        Factor applied to the learning rate at each rollback, in (0, 1]; 1 keeps it.
    clipnorm : float or None, default=None
        When set, each rollback also sets the optimizer's ``clipnorm`` to this value.
    max_retries : int, default=5
        Rollbacks allowed in one ``fit`` before the guard stops training.
    on_failure : {"raise", "warn"}, default="raise"
        After ``max_retries``: raise :class:`NonFiniteTrainingError` from ``fit``, or emit
        a :class:`~stablefit.errors.StablefitWarning` and let ``fit`` return.
    data : tuple (x, y) or None, default=None
        The training data; when given, the failure message includes
        :func:`stablefit.diagnose`'s explanation of why training diverges. ``x`` may be
        anything ``diagnose`` reads (a DataFrame or Arrow table keeps its column names).

    Attributes
    ----------
    events : list of GuardEvent
        Every non-finite value caught, in order, across ``fit`` calls.

    Notes
    -----
    Keras reports the running mean of the epoch's loss to callbacks; after a rollback the
    guard resets the model's metrics, so an epoch's reported loss covers the batches
    trained after its last rollback. A snapshot whose loss exceeds 1e4 times the best loss
    of the run is not kept as good: a diverging run passes through huge finite losses
    before it overflows, and rolling back there would only diverge again. With
    ``steps_per_execution > 1`` the guard sees, and snapshots at, the end of each execution
    rather than each batch.
    """

    def __init__(
        self,
        *,
        snapshot_every: int = 50,
        check_weights: str = "snapshot",
        lr_factor: float = 0.1,
        clipnorm: float | None = None,
        max_retries: int = 5,
        on_failure: str = "raise",
        data: tuple[Any, Any] | None = None,
    ) -> None:
        super().__init__()
        self.snapshot_every = snapshot_every
        self.check_weights = check_weights
        self.lr_factor = lr_factor
        self.clipnorm = clipnorm
        self.max_retries = max_retries
        self.on_failure = on_failure
        self.data = data
        self.events: list[GuardEvent] = []

    # -- Keras hooks -------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._validate_params()
        self._good: list[_Snapshot] = []
        self._pending: _Snapshot | None = None
        self._rollbacks = 0
        self._rollbacks_since_confirmed = 0
        self._batches_since_snapshot = 0
        self._epoch = 0
        self._batch = -1
        self._failed_in_epoch: float | None = None
        self._batch_loss = math.nan
        self._recovered_in_batch = False
        self._trained_since = True
        self._best_loss = math.inf
        self._stopped = False
        self._first_learning_rate = current_learning_rate(self.model.optimizer)
        self._install_save_guard()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._batch = -1
        self._failed_in_epoch = None
        if not self._good and self.model.built:
            optimizer = self.model.optimizer
            if not optimizer.built:
                # Keras builds it at the first update; building it now (identically) lets
                # the first snapshot hold the optimizer's fresh state.
                optimizer.build(self.model.trainable_variables)
            self._take_initial_snapshot()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Callbacks earlier in the list may save (and so trigger a check) before this
        # guard's on_train_batch_end: events must name the batch being trained.
        self._batch = batch
        self._batch_loss = math.nan
        self._recovered_in_batch = False

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._stopped or self._recovered_in_batch:
            return
        loss = (logs or {}).get("loss")
        if loss is not None:
            self._batch_loss = float(loss)
        if loss is not None and not math.isfinite(float(loss)):
            self._recover(kind="loss", value=float(loss), variable=self._first_nonfinite())
            return
        self._confirm_pending(None if loss is None else float(loss))
        self._batches_since_snapshot += 1
        first = not self._good  # the model was built by the first batch itself
        snapshot_due = first or self._batches_since_snapshot >= self.snapshot_every
        if not snapshot_due and self.check_weights != "batch":
            return
        weights = _host_copy(self.model.weights)
        if (first or self.check_weights != "never") and self._recover_if_nonfinite(weights):
            return
        if first:
            self._good.append(self._snapshot(batch, weights))
        elif snapshot_due:
            self._pending = self._snapshot(batch, weights)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._stopped:
            return
        if self.check_weights != "never":
            self._recover_if_nonfinite(_host_copy(self.model.weights))
        if self._failed_in_epoch is not None and logs is not None and not self._trained_since:
            # Every update of this epoch after its last rollback was discarded: report the
            # loss of the failed batch, not the 0 of a freshly reset metric.
            logs["loss"] = self._failed_in_epoch

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._uninstall_save_guard()

    # -- snapshots ---------------------------------------------------------------------

    def _optimizer_variables(self) -> list[Any]:
        # The learning-rate variable belongs to the remedy (and to user callbacks such as
        # ReduceLROnPlateau), not to the state a rollback restores.
        rate = learning_rate_object(self.model.optimizer)
        return [v for v in self.model.optimizer.variables if v is not rate]

    def _take_initial_snapshot(self) -> None:
        weights = _host_copy(self.model.weights)
        bad = _first_nonfinite(self.model.weights, weights)
        if bad is not None:
            self._uninstall_save_guard()
            raise NonFiniteTrainingError(
                f"NanGuard: the model's weight {bad[0]} is already {bad[1]:g} before training "
                "starts; re-initialize the model (or load finite weights) before fit()."
            )
        self._good.append(self._snapshot(-1, weights))

    def _snapshot(self, batch: int, weights: list[np.ndarray]) -> _Snapshot:
        self._batches_since_snapshot = 0
        optimizer = _host_copy(self._optimizer_variables())
        return _Snapshot(epoch=self._epoch, batch=batch, weights=weights, optimizer=optimizer)

    def _confirm_pending(self, loss: float | None) -> None:
        self._trained_since = True
        if loss is not None:
            self._best_loss = min(self._best_loss, loss)
        if self._pending is None:
            return
        if loss is not None and loss > _DIVERGING_GROWTH * self._best_loss:
            self._pending = None
            return
        self._good = [*self._good, self._pending][-_GOOD_SNAPSHOTS_KEPT:]
        self._pending = None
        self._rollbacks_since_confirmed = 0

    def _restore(self) -> _Snapshot:
        if self._rollbacks_since_confirmed > 0 and len(self._good) > 1:
            # Training failed again from the newest good snapshot without confirming a
            # new one: it lies on the diverging path, so step back one more.
            self._good.pop()
        if not self._good:
            self._stopped = True
            self.model.stop_training = True
            self._uninstall_save_guard()
            raise NonFiniteTrainingError(
                f"NanGuard: the first batch of epoch {self._epoch + 1} already produced a "
                "non-finite value, before the model was built and a snapshot could be taken; "
                "build the model first (keras.Input or model.build) so the guard can restore it."
            )
        snapshot = self._good[-1]
        for variable, value in zip(self.model.weights, snapshot.weights, strict=True):
            variable.assign(value)
        for variable, value in zip(self._optimizer_variables(), snapshot.optimizer, strict=True):
            variable.assign(value)
        self._pending = None
        self._batches_since_snapshot = 0
        self._rollbacks_since_confirmed += 1
        self.model.reset_metrics()
        return snapshot

    # -- detection and recovery --------------------------------------------------------

    def _first_nonfinite(self) -> tuple[str, float] | None:
        return _first_nonfinite(self.model.weights, _host_copy(self.model.weights))

    def _recover_if_nonfinite(self, weights: list[np.ndarray]) -> bool:
        bad = _first_nonfinite(self.model.weights, weights)
        if bad is None:
            return False
        self._recover(kind="weights", value=bad[1], variable=bad)
        return True

    def _recover(self, *, kind: str, value: float, variable: tuple[str, float] | None) -> None:
        self._rollbacks += 1
        self._recovered_in_batch = True
        self._trained_since = False
        # A weight that overflowed behind a finite loss: the epoch's loss is that batch's
        # (NaN when a save checked the weights before the batch's loss was seen).
        self._failed_in_epoch = value if kind == "loss" else self._batch_loss
        optimizer = self.model.optimizer
        snapshot = self._restore()
        # Measured after the restore: a schedule's value depends on the restored step.
        before = current_learning_rate(optimizer)
        stop = self._rollbacks > self.max_retries
        remedy = "none: stopped" if stop else self._apply_remedy()
        event = GuardEvent(
            epoch=self._epoch,
            batch=max(self._batch, 0),
            kind=kind,
            variable=None if variable is None else variable[0],
            value=value,
            action="stop" if stop else "rollback",
            restored_from=(snapshot.epoch, snapshot.batch),
            remedy=remedy,
            learning_rate_before=before,
            learning_rate_after=current_learning_rate(optimizer),
            clipnorm=optimizer.clipnorm,
        )
        self.events.append(event)
        if stop:
            self._stop(event, snapshot)

    def _apply_remedy(self) -> str:
        optimizer = self.model.optimizer
        done = []
        retrace = False
        if self.lr_factor != 1.0:
            before = current_learning_rate(optimizer)
            retrace = scale_learning_rate(optimizer, self.lr_factor)
            done.append(f"learning rate {before:.3g} -> {current_learning_rate(optimizer):.3g}")
        if self.clipnorm is not None and optimizer.clipnorm != self.clipnorm:
            optimizer.clipnorm = self.clipnorm
            retrace = True
            done.append(f"clipnorm set to {self.clipnorm:g}")
        if retrace:
            # The traced training step captured the old schedule / clipping; rebuild it.
            self.model.make_train_function(force=True)
        return "; ".join(done) if done else "no remedy configured (lr_factor=1)"

    def _stop(self, event: GuardEvent, snapshot: _Snapshot) -> None:
        self._stopped = True
        self.model.stop_training = True
        self._uninstall_save_guard()
        message = self._failure_message(event, snapshot)
        if self.on_failure == "raise":
            raise NonFiniteTrainingError(message)
        warnings.warn(message, StablefitWarning, stacklevel=2)

    def _failure_message(self, event: GuardEvent, snapshot: _Snapshot) -> str:
        epochs = self.params.get("epochs") if self.params else None
        steps = self.params.get("steps") if self.params else None
        where = f"epoch {event.epoch + 1}" + (f"/{epochs}" if epochs else "")
        where += f", batch {event.batch + 1}" + (f"/{steps}" if steps else "")
        what = "the loss" if event.kind == "loss" else f"weight {event.variable}"
        tried = [e.describe() for e in self.events[-(self._rollbacks) :]]
        lines = [
            f"NanGuard stopped training at {where}: {what} was {event.value:g} again after "
            f"{self._rollbacks - 1} rollback(s) (max_retries={self.max_retries}).",
            "What happened and what was tried:",
            *(f"  - {line}" for line in tried),
            f"The model holds the last good weights, {snapshot_position(event.restored_from)} "
            f"(learning rate now {event.learning_rate_after:.3g}, "
            f"first {self._first_learning_rate:.3g}).",
            self._diagnosis_text(),
        ]
        return "\n".join(lines)

    def _diagnosis_text(self) -> str:
        if self.data is None:
            return (
                "Why: pass NanGuard(data=(x, y)) to have stablefit diagnose the data and the "
                "optimizer, or run `stablefit doctor` on the data file."
            )
        x, y = self.data
        settings = forecast_settings(self.model.optimizer)
        settings["learning_rate"] = self._first_learning_rate
        steps = self.params.get("steps") if self.params else None
        rows = len(y)
        batch_size = math.ceil(rows / steps) if steps else 32
        epochs = (self.params or {}).get("epochs") or 100
        return _explain_with_diagnosis(x, y, settings, batch_size=batch_size, epochs=epochs)

    # -- checkpoint safety -------------------------------------------------------------

    def _install_save_guard(self) -> None:
        model = self.model
        for name in _SAVE_METHODS:
            original = getattr(type(model), name)

            def guarded(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                if not self._stopped:
                    self._recover_if_nonfinite(_host_copy(model.weights))
                return _original(model, *args, **kwargs)

            # An instance attribute shadows the method for this model only, so
            # ModelCheckpoint and BackupAndRestore write through the check whatever their
            # place in the callback list.
            setattr(model, name, guarded)

    def _uninstall_save_guard(self) -> None:
        model = self.model
        for name in _SAVE_METHODS:
            if name in vars(model):
                delattr(model, name)

    # -- validation --------------------------------------------------------------------

    def _validate_params(self) -> None:
        if (
            isinstance(self.snapshot_every, bool)
            or not isinstance(self.snapshot_every, int)
            or self.snapshot_every < 1
        ):
            raise StablefitInputError(
                f"NanGuard(snapshot_every={self.snapshot_every!r}): expected an integer >= 1 "
                "(batches between snapshots)."
            )
        if self.check_weights not in _CHECK_WEIGHTS:
            raise StablefitInputError(
                f"NanGuard(check_weights={self.check_weights!r}): expected one of "
                f"{', '.join(map(repr, _CHECK_WEIGHTS))}."
            )
        if not (0.0 < float(self.lr_factor) <= 1.0):
            raise StablefitInputError(
                f"NanGuard(lr_factor={self.lr_factor!r}): expected a factor in (0, 1], "
                "e.g. 0.1 to divide the learning rate by 10 at each rollback."
            )
        if self.clipnorm is not None and not (float(self.clipnorm) > 0.0):
            raise StablefitInputError(
                f"NanGuard(clipnorm={self.clipnorm!r}): expected a positive float or None."
            )
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise StablefitInputError(
                f"NanGuard(max_retries={self.max_retries!r}): expected an integer >= 0."
            )
        if self.on_failure not in _ON_FAILURE:
            raise StablefitInputError(
                f"NanGuard(on_failure={self.on_failure!r}): expected 'raise' or 'warn'."
            )
        if self.data is not None and (not isinstance(self.data, Sequence) or len(self.data) != 2):
            raise StablefitInputError(
                "NanGuard(data=...): expected a pair (x, y) of the training inputs and targets."
            )
        if self.model.optimizer is None:
            raise StablefitInputError(
                "NanGuard: the model has no optimizer; call model.compile(optimizer=...) first."
            )


def _host_copy(variables: Sequence[Any]) -> list[np.ndarray]:
    return [np.array(v.numpy(), copy=True) for v in variables]


def _first_nonfinite(
    variables: Sequence[Any], values: Sequence[np.ndarray]
) -> tuple[str, float] | None:
    """The path and first non-finite value of the first variable holding one."""
    for variable, value in zip(variables, values, strict=True):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return variable.path, float(value[~np.isfinite(value)].flat[0])
    return None


def _explain_with_diagnosis(
    x: Any, y: Any, settings: dict[str, Any], *, batch_size: int, epochs: int
) -> str:
    """stablefit's diagnosis of the data and optimizer, as lines of text."""
    try:
        from stablefit.diagnose import diagnose
    except ImportError:
        return "Why: stablefit.diagnose is not available in this installation."
    try:
        diagnosis = diagnose(x, np.asarray(y), batch_size=batch_size, epochs=epochs, **settings)
    except Exception as error:  # the failure message must survive a diagnosis failure
        return f"Why: stablefit.diagnose could not analyse the data ({error})."
    return "Why (stablefit.diagnose on the data given to NanGuard):\n" + describe_diagnosis(
        diagnosis
    )


def describe_diagnosis(diagnosis: Any) -> str:
    """A few indented lines: the training forecast and the most severe findings."""
    lines = []
    training = getattr(diagnosis, "training", None)
    if training is not None:
        lines.append(
            f"  forecast: {training.outcome}"
            + (
                f", first non-finite loss at epoch {training.first_nonfinite_epoch}"
                if training.first_nonfinite_epoch is not None
                else ""
            )
            + (
                f"; largest stable learning rate {training.max_stable_learning_rate:.3g}"
                if training.max_stable_learning_rate is not None
                else ""
            )
        )
    for finding in list(getattr(diagnosis, "findings", []))[:4]:
        lines.append(f"  {finding.code} [{finding.severity}] {finding.title}: {finding.message}")
        if getattr(finding, "fix", None):
            lines.append(f"      fix: {finding.fix}")
    return "\n".join(lines) if lines else "  no findings"
