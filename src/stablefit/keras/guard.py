"""``NanGuard``: skip bad steps inside the training step, name the cause, keep the best weights.

Keras's ``TerminateOnNaN`` stops only after the update that produced a NaN was applied,
with the broken weights in the model; ``LossScaleOptimizer`` skips non-finite steps but
halves its scale at each one and never says why. ``NanGuard`` is the Keras adapter of
stablefit's guard (:mod:`stablefit.guard`): its compiled step leaves bad rows out and
skips non-finite steps on the device, and at an event the guard replays the failing
batch, names the cause and applies the remedy that fits it.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from stablefit.errors import StablefitInputError, StablefitWarning
from stablefit.guard import (
    Context,
    GuardCore,
    GuardEvent,
    NonFiniteTrainingError,
    Remedy,
    Replay,
    Snapshot,
    Verdict,
    growth_curvature,
)
from stablefit.guard.core import row_list
from stablefit.guard.events import position
from stablefit.guard.phrases import KERAS
from stablefit.keras._optimizer import (
    current_learning_rate,
    forecast_settings,
    learning_rate_object,
    scale_learning_rate,
)
from stablefit.keras._replay import (
    bad_columns,
    estimate_curvature,
    extreme_rows,
    replay_batch,
)
from stablefit.keras._rows import fit_arguments, row_key, row_namer
from stablefit.keras._step import COUNT_KEYS, StepGuard, StepReport

_ON_FAILURE = ("raise", "warn")
_SAVE_METHODS = ("save_weights", "save")
#: Called by Keras at the start of fit, train_on_batch, evaluate and test_on_batch.
_MAKE_METHODS = ("make_train_function", "make_test_function")


class NanGuard(keras.callbacks.Callback):
    """Keep non-finite updates out of the model, name their cause, remedy, carry on.

    Inside the compiled training step (TensorFlow, JAX and PyTorch backends), every step: rows
    whose inputs or targets hold NaN/inf are left out (sample weight 0), and a step whose
    loss or gradients are not finite, or whose gradient norm is ``explosion_factor`` times
    its running median, is skipped: weights, optimizer state and iteration count stay as
    they were, and the logged loss averages the finite steps. The logs (progress bar,
    history) carry ``skipped_steps`` and ``bad_rows`` for the epoch; an epoch whose every
    step was skipped logs its loss and metrics as NaN (no value, not Keras's 0.0) and the
    guard warns that nothing trained in it. No value is brought to the host for this in
    the common case.

    When a step had bad rows or was skipped, or the smoothed loss spikes to
    ``spike_factor`` times its running minimum, the guard replays the batch from the
    weights before it, layer by layer, and records a :class:`~stablefit.guard.GuardEvent`
    whose ``cause`` is ``"data"``, ``"learning_rate"``, ``"exploding_gradients"``,
    ``"loss_function"``, ``"precision"`` or ``"unknown"``, and applies the remedy that
    fits: bad rows are only left out (each distinct row reported once, with a count, its
    index in the user's data and its columns; fitted again with the same guard, a row
    already reported counts on its event and is said once a fit as the same row); a
    learning-rate problem rolls back to the best recent weights and sets the learning rate
    below the stability bound of the curvature measured on the batch (for SGD, from the
    loss's growth when the model has no loss to differentiate twice); exploding gradients
    set ``clipnorm`` from the running median gradient norm; a loss-function or precision
    problem stops training with the explanation. A learning-rate cut is a factor on top of
    whatever a schedule or ``LearningRateScheduler`` sets; under mixed precision the inner
    optimizer is the one remedied. Every event is also emitted as a
    :class:`~stablefit.errors.StablefitWarning`.

    A model whose own ``train_step`` computes its loss (none compiled) is guarded too: its
    update waits until the step returns, and is skipped when the loss it logs as ``loss``
    is not finite, as when the gradients are not; a skipped step logs the last finite loss
    instead of its own. (A second update within one such step is applied as it comes.)
    On JAX, whose compiled step cannot drop rows, such a model fitted without sample
    weights has a batch with bad rows skipped whole (its ``train_step`` may take none).

    While the guard is in the callback list, every ``model.save_weights``/``model.save``
    call (``ModelCheckpoint``, ``BackupAndRestore``) first checks that the weights are
    finite (and restores the best ones if not), so no checkpoint holds a NaN.

    Parameters
    ----------
    max_retries : int, default=5
        Remedies (rollbacks, clipping, skipped steps of unknown cause) allowed since the
        last epoch without one; beyond them the guard stops training.
    spike_factor : float, default=4.0
        A smoothed loss this many times its running minimum is treated like a non-finite
        step (a diverging run passes through huge finite losses before it overflows).
        Spikes within the curvature's bound are kept as noise until they add up to its
        square times the best smoothed loss: a slow divergence, rolled back.
    explosion_factor : float, default=100.0
        A gradient norm this many times its running median makes the step skipped.
    snapshot_gap : int, default=100
        Steps between mid-epoch copies of the weights at a new best smoothed loss (a copy
        is also taken at every epoch end; copies stay on the device).
    on_failure : {"raise", "warn"}, default="raise"
        When the guard stops training: raise :class:`~stablefit.guard.NonFiniteTrainingError`
        from ``fit``, or warn and let ``fit`` return.
    data : tuple (x, y) or None, default=None
        The training data. When given, the message on stopping includes
        :func:`stablefit.diagnose`'s explanation (training forecast, stability bound,
        findings), and data events name rows by their index in ``x`` even when ``fit``
        reads them from elsewhere. Without it a data event still names the bad rows in
        the data ``fit`` was given: by their index in NumPy arrays or a DataFrame, as
        "row p of dataset[k]" for a ``keras.utils.PyDataset``, and by their place in the
        stream for a tf.data dataset or generator marked with
        :func:`~stablefit.keras.checked`.
    feature_names : sequence of str or None, default=None
        Names of the input columns, for data events (read from a DataFrame or Arrow table
        ``x`` when it has them).

    Attributes
    ----------
    events : list of GuardEvent
        Every event, in order, across ``fit`` calls.

    Examples
    --------
    >>> import keras, numpy as np
    >>> from stablefit.keras import NanGuard
    >>> x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    >>> y = x.sum(axis=1)
    >>> x[5, 1] = np.nan
    >>> model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> guard = NanGuard(data=(x, y))
    >>> history = model.fit(x, y, epochs=2, callbacks=[guard], verbose=0)
    >>> [(event.cause, event.rows, event.columns) for event in guard.events]
    [('data', (5,), ('x[:, 1]',))]
    """

    # Not True: Keras's JAX fit then hands every batch-end hook to a thread pool, a handoff
    # that cost a small model's step more CPU than the hook itself (a 64-64-1 MLP's epoch:
    # 1.78 times plain fit's CPU time with it, 1.32 without). On the training thread, the
    # hook reads only the losses of steps before the last (see on_train_batch_end).
    async_safe = False

    def __init__(
        self,
        *,
        max_retries: int = 5,
        spike_factor: float = 4.0,
        explosion_factor: float = 100.0,
        snapshot_gap: int = 100,
        on_failure: str = "raise",
        data: tuple[Any, Any] | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.max_retries = max_retries
        self.spike_factor = spike_factor
        self.explosion_factor = explosion_factor
        self.snapshot_gap = snapshot_gap
        self.on_failure = on_failure
        self.data = data
        self.feature_names = feature_names
        self.events: list[GuardEvent] = []

    # -- Keras hooks -------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if getattr(self, "_step", None) is not None:
            self._finish()  # its last fit ended by an exception (see _install_model_hooks)
        self._validate_params()
        arguments = fit_arguments(self.model)
        _check_class_weight(None if arguments is None else arguments.class_weight)
        _check_one_guard(None if arguments is None else arguments.callbacks)
        model = self.model
        optimizer = model.optimizer
        if not optimizer.built and model.built:
            optimizer.build(model.trainable_variables)
        earlier = getattr(self, "_core", None)
        self._core = GuardCore(
            max_retries=self.max_retries,
            spike_factor=self.spike_factor,
            snapshot_gap=self.snapshot_gap,
            phrases=KERAS,
        )
        self._core.events = self.events
        if earlier is not None and earlier.events is self.events:
            # Fitted again: a row reported in an earlier fit counts on its event (said
            # again once in this fit, as the same row), not as a new finding.
            self._core.continue_rows_of(earlier)
            self._rows_of_earlier_fits = set(self._row_events.values())
        else:
            self._row_events: dict[bytes, Any] = {}
            self._rows_of_earlier_fits: set[Any] = set()
        self._lock = threading.Lock()
        self._observed: list[tuple[int, Any]] = []
        self._handed: list[tuple[int, Any]] = []
        self._reports: list[StepReport] = []
        self._epoch, self._batch = 0, -1
        self._begun = False  # the first epoch of this fit
        self._counts = (0, 0)
        self._awaiting_capture = False
        self._stopped = False
        self._failure: str | None = None
        self._validation = None if arguments is None else arguments.validation_data
        self._callbacks = None if arguments is None else arguments.callbacks
        self._validated_finite = False  # a finite validation metric was seen in this fit
        # Rows of a validation_split are numbered in x: after the rows fit trains on.
        self._validation_split = _split_from(arguments)
        self._rows = row_namer(arguments, self.data)
        self._step = StepGuard(
            model,
            self._receive,
            on_step_loss=self._step_loss,
            explosion_factor=self.explosion_factor,
        )
        self._step.install()
        self._install_model_hooks()
        self._check_initial_weights()
        self._core.keep(0, -1, self._copy_state())

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._begun:
            self._begun = True
            # The weights training starts from, at the epoch it starts at: a callback's
            # on_train_begin may have loaded others (BackupAndRestore resuming at epoch k),
            # which a rollback must not trade for the model's weights before them.
            self._sync()
            self._core.start_over(epoch, -1, self._copy_state())
        self._epoch, self._batch = epoch, -1
        self._counts: tuple[Any, Any] = (0, 0)
        self._step.counters.start_epoch()

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        # Validation logs the model's metrics, the guard's counters among them: they count
        # training steps, not validation ones.
        self._step.counters.reporting = False

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self._step.counters.reporting = True

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._process()
        self._batch = batch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._step.settles:
            return  # the train function settled the step and handed its loss over
        logs = logs if logs is not None else {}
        counts = (logs.get("skipped_steps"), logs.get("bad_rows"))
        if self._step.backend == "tensorflow" and counts != self._counts:
            # Callbacks run on the training thread here: the slots hold this execution's step.
            self._step.collect()
        self._counts = counts
        # The steps before this one have finished, or finish while this one runs (JAX
        # computes them in order, asynchronously): reading their losses does not make the
        # training thread wait for the device. This step's is read after the next.
        self._read_losses(before=batch)

    def _read_losses(self, *, before: float) -> None:
        """Read the handed-over losses of the steps before ``before`` into ``_observed``."""
        with self._lock:
            ready = [(at, loss) for at, loss in self._handed if at < before]
            self._handed = [(at, loss) for at, loss in self._handed if at >= before]
        observed = [(at, float(loss)) for at, loss in ready]
        with self._lock:
            self._observed.extend(observed)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        self._read_losses(before=math.inf)
        self._sync()
        # From the counters, not the step's outputs (the common step does not output them),
        # and the metrics as no value when nothing trained: Keras's epoch logs may be its
        # means of no steps, 0.0.
        logs.update(self._step.epoch_counts())
        if self._step.trained_steps() == 0:
            logs.update(
                {
                    key: math.nan
                    for key, value in logs.items()
                    if key not in COUNT_KEYS and isinstance(value, float)
                }
            )
        self._process()
        if not _warn_if_nothing_trained(epoch, logs):
            self._warn_if_validation_nonfinite(epoch, logs)
        if self._stopped:
            return
        bad = self._first_nonfinite_variable()
        if bad is not None:
            self._nonfinite_weights(bad)
            return
        last = (self.params or {}).get("steps") or (self._batch + 1)
        self._core.keep(epoch, last - 1, self._copy_state())
        self._core.epoch_end()

    def _warn_if_validation_nonfinite(self, epoch: int, logs: dict[str, Any]) -> None:
        """Say why a validation metric is NaN/inf (once a ``fit``): the guard keeps bad rows
        out of training steps, while Keras's validation averages every row."""
        names = [
            key
            for key, value in logs.items()
            if key.startswith("val_") and isinstance(value, float) and not math.isfinite(value)
        ]
        if not names:
            self._validated_finite = self._validated_finite or any(
                k.startswith("val_") for k in logs
            )
            return
        if self._validation is None:
            return
        split = self._validation_split
        where = _nonfinite_rows_in(self._validation, offset=split[1] if split else 0)
        self._validation = None  # said once
        source = f"the validation split (validation_split={split[0]:g})" if split else None
        cause = (
            f"{source or 'validation_data'} holds NaN or inf in {where}"
            if where
            else "the validation data or the model's predictions on it hold NaN or inf"
        )
        watching = _watching(self._callbacks, names, first=not self._validated_finite)
        affected = (
            "Training is not affected"
            if not watching
            else "Training steps are not affected, but " + "; ".join(watching)
        )
        monitor = " (or monitor 'loss')" if watching else ""
        warnings.warn(
            f"NanGuard: epoch {epoch + 1}: {', '.join(names)} not finite: {cause}. {affected} "
            "(the guard leaves bad rows out of training steps; validation averages every "
            f"row). Fix: drop or impute those rows of the validation data{monitor}.",
            StablefitWarning,
            stacklevel=2,
        )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._read_losses(before=math.inf)
        self._process()
        if not self._stopped:
            self._keep_best_at_end()
        self._finish()

    def _keep_best_at_end(self) -> None:
        found = self._core.best_at_end()
        if found is None:
            return
        _, verdict = found
        rate = self._rate()
        remedy = Remedy(action="rolled_back", rollback=True)
        self._apply(verdict, remedy, trigger="loss_spike", loss=None, rate_before=rate)

    # -- observing (any thread) and processing (training thread) -------------------------

    def _step_loss(self, step_loss: Any) -> None:
        with self._lock:
            if self._step.settles:
                self._observed.append((self._batch, step_loss))
            else:
                self._handed.append((self._batch, step_loss))  # read by the batch-end hook

    def _receive(self, report: StepReport) -> None:
        with self._lock:
            self._reports.append(report)

    def _process(self) -> None:
        if self._stopped:
            return
        with self._lock:
            observed, self._observed = self._observed, []
            reports, self._reports = self._reports, []
        for batch, step_loss in sorted(observed, key=lambda item: item[0]):
            self._observe(batch, step_loss)
        for report in reports:
            if self._stopped:
                break
            self._handle(report)
        if self._failure is not None:
            message, self._failure = self._failure, None
            if self.on_failure == "raise":
                self._finish()  # fit ends with the exception: on_train_end is not called
                raise NonFiniteTrainingError(message)
            # Training stops after this batch, whose step the guard skips.
            warnings.warn(message, StablefitWarning, stacklevel=2)

    def _observe(self, batch: int, step_loss: Any) -> None:
        if step_loss is None or not math.isfinite(float(step_loss)):
            return  # a skipped step: its report says why
        loss = float(step_loss)
        if self._core.observe(loss) is not None:
            if not self._awaiting_capture:
                # The next step is skipped and sent here, to replay the batch.
                self._sync()
                self._step.capture_next_step()
                self._awaiting_capture = True
        elif self._core.wants_snapshot():
            self._sync()
            self._core.keep(self._epoch, batch, self._copy_state())

    def _handle(self, report: StepReport) -> None:
        self._sync()
        whole_batch: bool | str = not report.row_ok.any()
        if not report.row_ok.all() and self._step.skips_bad_batches(
            weighted=report.sample_weight is not None
        ):
            whole_batch = (
                "the model's own train_step takes no sample weights and JAX's compiled step "
                "cannot drop rows"
            )
        if not report.row_ok.all():
            self._data_event(report, whole_batch=whole_batch)
        if report.step_ok:
            return
        if whole_batch:
            # Skipped for having no row to learn from (or, on JAX, any bad row: see
            # skips_bad_batches): nothing failed. A capture it used up is asked for again.
            if self._awaiting_capture:
                self._step.capture_next_step()
            return
        finite = math.isfinite(report.loss) and math.isfinite(report.gradient_norm)
        if self._awaiting_capture and finite:
            trigger = "loss_spike"
        else:
            trigger = "nonfinite_step" if not finite else "gradient_spike"
        self._awaiting_capture = False
        self._failed_step(report, trigger)

    # -- data events -------------------------------------------------------------------

    def _data_event(
        self,
        report: StepReport,
        *,
        whole_batch: bool | str,
        positions: np.ndarray | None = None,
        found: str = "NaN or inf",
        marked: tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None] | None = None,
    ) -> None:
        """One event per new bad row (by its values); rows seen before count on theirs.

        ``positions``: the bad rows (default: those the step left out); ``found``: what
        they hold; ``marked``: the batch's inputs and targets with the values that make
        them bad set to inf, and its sample weights so, for naming the columns (default:
        the batch as it came).
        """
        if positions is None:
            positions = np.flatnonzero(~report.row_ok)
        batch = [*report.inputs, *report.targets]
        keys = [row_key(batch, int(p)) for p in positions]
        if self._rows_of_earlier_fits:
            self._forget_rows_found_elsewhere(report, positions, keys)
        batch_index = report.step_in_epoch if report.step_in_epoch >= 0 else max(self._batch, 0)
        rate = self._rate()
        for seen in dict.fromkeys(self._row_events[k] for k in keys if k in self._row_events):
            self._core.data_event(epoch=self._epoch, batch=batch_index, key=seen, replay=Replay())
            if seen in self._rows_of_earlier_fits:
                self._rows_of_earlier_fits.discard(seen)
                self._say_seen_again(self._core.reported(seen), batch_index)
        fresh = np.array(
            [p for p, k in zip(positions, keys, strict=True) if k not in self._row_events]
        )
        if not len(fresh):
            return
        key = tuple(k for k in keys if k not in self._row_events)
        inputs, targets, weights = (
            marked if marked is not None else (report.inputs, report.targets, report.sample_weight)
        )
        columns = bad_columns(
            inputs,
            targets,
            fresh,
            self._names(),
            weights,
            report.structure,
            getattr(self.model, "output_names", None),
        )
        located = self._rows.locate(report, fresh)
        where = located.where
        if where is None and not located.rows:
            where = self._rows.in_batch([int(p) for p in fresh])
        event = self._core.data_event(
            epoch=self._epoch,
            batch=batch_index,
            key=key,
            replay=Replay(bad_positions=tuple(int(p) for p in fresh), bad_columns=columns),
            rows=located.rows,
            where=where,
            evidence=located.evidence,
            learning_rate=rate,
            whole_batch=whole_batch,
            found=found,
        )
        self._row_events.update(dict.fromkeys(key, key))
        if event is not None:
            warnings.warn(f"NanGuard: {event.describe()}", StablefitWarning, stacklevel=2)

    def _forget_rows_found_elsewhere(
        self, report: StepReport, positions: np.ndarray, keys: list[bytes]
    ) -> None:
        """Rows with the values of rows an earlier fit reported, found in this fit's data
        at other places (other data, or reordered): reported anew where they are now, so
        that no event names a row of other data."""
        earlier = [
            (p, group)
            for p, k in zip(positions, keys, strict=True)
            if (group := self._row_events.get(k)) in self._rows_of_earlier_fits
        ]
        if not earlier:
            return
        located = self._rows.locate(report, np.array([p for p, _ in earlier]))
        groups = set(dict.fromkeys(group for _, group in earlier))
        events = [self._core.reported(group) for group in groups]
        rows = {r for event in events if event for r in event.rows}
        pairs = {
            tuple(pair)
            for event in events
            if event
            for pair in event.evidence.get("dataset_rows", [])
        }
        located_pairs = {tuple(pair) for pair in located.evidence.get("dataset_rows", [])}
        if set(located.rows) <= rows and located_pairs <= pairs:
            return
        for group in groups:
            self._core.forget_rows(group)
            self._rows_of_earlier_fits.discard(group)
            for key in group:
                self._row_events.pop(key, None)

    def _say_seen_again(self, event: GuardEvent | None, batch: int) -> None:
        """Once a fit, a row reported in an earlier fit: the same row, still left out."""
        if event is None:
            return
        warnings.warn(
            f"NanGuard: {position(self._epoch, batch)}: data, again as in an earlier fit "
            f"(reported there at {position(event.epoch, event.batch)}; seen {event.count} "
            f"times in all): {event.message}",
            StablefitWarning,
            stacklevel=3,
        )

    def _names(self) -> Sequence[str] | None:
        if self.feature_names is not None:
            return list(self.feature_names)
        return self._rows.feature_names

    # -- failed steps ------------------------------------------------------------------

    def _failed_step(self, report: StepReport, trigger: str) -> None:
        self._sync()
        x, y, sample_weight = _finite_rows(report)
        extreme = extreme_rows(self.model, x, y, sample_weight)
        if extreme is not None:
            self._extreme_rows(report, *extreme)
            return
        replay = replay_batch(self.model, x, y, sample_weight, step_loss=report.loss)
        saved: list[Any] = []
        rate = self._rate()

        def curvature() -> Any:
            # The rate must be stable where training resumes: at the weights a rollback
            # restores. The current ones are kept in case no rollback follows.
            target = self._core.rollback_target()
            if target is not None:
                saved.append(self._copy_state())
                self._restore(target.state)
            estimate = estimate_curvature(self.model, self._step.updating, x, y, sample_weight)
            if estimate is not None:
                return estimate
            settings = forecast_settings(self._step.updating)
            return growth_curvature(
                growth,
                rate,
                str(settings["optimizer"]),
                momentum=settings["momentum"],
                nesterov=settings["nesterov"],
            )

        growth = self._core.history.growth(report.loss)

        context = Context(
            trigger=trigger,
            learning_rate=rate,
            optimizer=type(self._step.updating).__name__,
            growth=growth,
            gradient_norm_median=self._step.median_gradient_norm(),
            curvature=curvature,
        )
        verdict, remedy = self._core.decide(replay, context, clipnorm=self._step.updating.clipnorm)
        if saved and not remedy.rollback:
            self._restore(saved[0])
        # With several steps per execution the callbacks' batch is the execution's.
        at = report.step_in_epoch if report.step_in_epoch >= 0 else None
        self._apply(verdict, remedy, trigger=trigger, loss=report.loss, rate_before=rate, batch=at)

    def _extreme_rows(self, report: StepReport, kept: np.ndarray, threshold: float) -> None:
        """A data event for rows whose finite values overflow float32 in the loss or its
        gradient (1e30 in float64 data): their step was skipped; nothing else changes."""
        positions = np.flatnonzero(report.row_ok)[kept]

        def mark(arrays: list[np.ndarray]) -> list[np.ndarray]:
            marked = []
            for array in arrays:
                array = np.asarray(array)
                if array.dtype.kind == "f":
                    array = np.where(np.abs(array) > threshold, np.inf, array)
                marked.append(array)
            return marked

        weights = [] if report.sample_weight is None else [report.sample_weight]
        given = [*report.inputs, *report.targets, *weights]
        batch = [np.asarray(a, dtype=np.float64) for a in given if np.asarray(a).dtype.kind == "f"]
        largest = max(float(np.abs(a[positions]).max()) for a in batch if a.size)
        self._data_event(
            report,
            whole_batch=(
                "values that large make the step's loss or gradients explode, and only rows "
                "with NaN or inf are left out inside the step"
            ),
            positions=positions,
            found=f"values up to {largest:.3g}, beyond {threshold:.3g} (a million times the "
            "batch's typical row)",
            marked=(mark(report.inputs), mark(report.targets), (mark(weights) or [None])[0]),
        )

    def _nonfinite_weights(self, bad: tuple[str, float]) -> None:
        verdict = Verdict(
            cause="unknown",
            finding=f"the weight {bad[0]} became {bad[1]:g} though every update was finite",
            fix="lower the learning rate, or look for a custom layer or constraint that "
            "writes non-finite values",
            evidence={"variable": bad[0], "value": bad[1]},
        )
        if not self._core.window.spend():
            remedy = Remedy(action="stopped", rollback=True, reason="retries exhausted")
        else:
            remedy = Remedy(action="rolled_back", rollback=True)
        self._apply(
            verdict, remedy, trigger="nonfinite_weights", loss=None, rate_before=self._rate()
        )

    def _apply(
        self, verdict: Verdict, remedy: Remedy, *, trigger: str, loss: float | None,
        rate_before: float | None, batch: int | None = None,
    ) -> None:  # fmt: skip
        restored: Snapshot | None = None
        if remedy.rollback:
            restored = self._core.rollback_target()
            if restored is not None:
                self._restore(restored.state)
        updating = self._step.updating
        if remedy.learning_rate is not None:
            user_rate = current_learning_rate(updating)
            self._step.set_learning_rate_scale(remedy.learning_rate / user_rate)
        if remedy.clipnorm is not None:
            updating.clipnorm = float(remedy.clipnorm)
            self._step.retrace()
        event = self._core.record(
            epoch=self._epoch,
            batch=max(self._batch, 0) if batch is None else batch,
            trigger=trigger,
            verdict=verdict,
            remedy=remedy,
            loss=loss,
            restored=restored,
            learning_rate_before=rate_before,
            learning_rate_after=self._rate(),
            clipnorm=updating.clipnorm,
        )
        warnings.warn(f"NanGuard: {event.describe()}", StablefitWarning, stacklevel=2)
        if remedy.action == "stopped":
            self._stop(event, remedy.reason, restored)

    def _stop(self, event: GuardEvent, reason: str, restored: Snapshot | None) -> None:
        self._stopped = True
        self.model.stop_training = True
        self._step.capture_next_step()  # no update after the stop
        params = self.params or {}
        holds = (
            ""
            if restored is None
            else f"The model holds the weights from {position(restored.epoch, restored.batch)}."
        )
        self._failure = self._core.failure_message(
            event,
            reason=reason,
            epochs=params.get("epochs"),
            steps=params.get("steps"),
            holds=holds,
            diagnosis=self._diagnosis_text(),
        )

    def _finish(self) -> None:
        """Take the guard off the model; a learning-rate cut stays, in the optimizer."""
        if getattr(self, "_step", None) is None:
            return
        self._sync()
        scale = self._step.learning_rate_scale()
        self._step.uninstall()
        if scale != 1.0:
            scale_learning_rate(self._step.updating, scale)
        self._uninstall_model_hooks()
        self._rows.close()
        self._step = None

    # -- state -------------------------------------------------------------------------

    def _rate(self) -> float:
        """The learning rate the updates use: the optimizer's times the guard's cut."""
        return current_learning_rate(self._step.updating) * self._step.learning_rate_scale()

    def _state_variables(self) -> list[Any]:
        model = self.model
        rate = getattr(self._step.updating, "_learning_rate", None)
        optimizer = [v for v in model.optimizer.variables if v is not rate]
        return [*model.trainable_variables, *model.non_trainable_variables, *optimizer]

    def _copy_state(self) -> list[Any]:
        return self._step.copy_of(self._state_variables())

    def _restore(self, state: list[Any]) -> None:
        self._sync()
        for variable, value in zip(self._state_variables(), state, strict=True):
            variable.assign(value)

    def _sync(self) -> None:
        # JAX keeps the training state outside the variables between epochs.
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()

    def _first_nonfinite_variable(self) -> tuple[str, float] | None:
        for variable in self._state_variables():
            value = np.asarray(variable.numpy())
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                return variable.path, float(value[~np.isfinite(value)].flat[0])
        return None

    def _check_initial_weights(self) -> None:
        bad = self._first_nonfinite_variable()
        if bad is not None:
            self._finish()
            adapted = _adapted_layer(self.model, bad[0])
            fix = (
                "re-initialize the model (or load finite weights) before fit()."
                if adapted is None
                else f"the layer {adapted!r} computed it in adapt() from data holding NaN or "
                "inf; adapt it on the rows without them (e.g. x[np.isfinite(x).all(axis=1)])."
            )
            raise NonFiniteTrainingError(
                f"NanGuard: the model's weight {bad[0]} is already {bad[1]:g} before training "
                f"starts; {fix}"
            )

    def _diagnosis_text(self) -> str:
        if self.data is None:
            return ""
        x, y = self.data
        settings = forecast_settings(self._step.updating)
        steps = (self.params or {}).get("steps")
        batch_size = math.ceil(len(y) / steps) if steps else 32
        epochs = (self.params or {}).get("epochs") or 100
        return _explain_with_diagnosis(x, y, settings, batch_size=batch_size, epochs=epochs)

    # -- checkpoint safety, and the end of a fit Keras does not announce ---------------

    def _install_model_hooks(self) -> None:
        """Check the weights at every save; take the guard off after a fit that raised.

        Keras calls no ``on_train_end`` when ``fit`` ends by an exception (another
        callback's, the data's, a KeyboardInterrupt): the guarded step would stay on the
        model, taking the rows out of the next fit without a guard and breaking the next
        guard's. So the model's next ``fit`` (``make_train_function``, called before any
        callback), ``train_on_batch``, ``evaluate`` or save outside this guard's ``fit``
        takes it off first, as ``on_train_end`` would have (a learning-rate cut goes into
        the optimizer).
        """
        model = self.model
        for name in _SAVE_METHODS:
            original = getattr(type(model), name)

            def guarded(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                if not self._in_own_fit():
                    self._finish()
                elif not self._stopped and getattr(self, "_step", None) is not None:
                    self._sync()
                    bad = self._first_nonfinite_variable()
                    if bad is not None:
                        self._nonfinite_weights(bad)
                    return self._with_rate_in_use(lambda: _original(model, *args, **kwargs))
                return _original(model, *args, **kwargs)

            # An instance attribute shadows the method for this model only, so
            # ModelCheckpoint and BackupAndRestore write through the check whatever their
            # place in the callback list.
            setattr(model, name, guarded)
        for name in _MAKE_METHODS:
            make = getattr(type(model), name)

            def make_after_this_fit(force: bool = False, _make: Any = make) -> Any:
                # The guard's own rebuilds force one; Keras's fit, evaluate (fit's
                # validation too: inside this fit) and train_on_batch do not.
                if not force and not self._in_own_fit():
                    self._finish()
                return _make(model, force=force)

            setattr(model, name, make_after_this_fit)

    def _with_rate_in_use(self, save: Any) -> Any:
        """Run ``save`` with the optimizer's learning-rate variable holding the rate the
        updates use (the guard's cut included), as it will after ``fit``: a run resumed
        from the file (BackupAndRestore) starts at the cut rate, not at the one that
        diverged. (A schedule is no variable: the file holds none to set.)"""
        scale = self._step.learning_rate_scale()
        rate = learning_rate_object(self._step.updating)
        if scale == 1.0 or not isinstance(rate, keras.Variable):
            return save()
        given = rate.numpy()
        rate.assign(given * scale)
        try:
            return save()
        finally:
            rate.assign(given)

    def _in_own_fit(self) -> bool:
        """Whether the innermost running ``fit`` of the model has this guard among its
        callbacks (a new ``fit`` with the same guard counts: its on_train_begin restarts it)."""
        arguments = fit_arguments(self.model)
        callbacks = None if arguments is None else arguments.callbacks
        listed = getattr(callbacks, "callbacks", callbacks)
        return isinstance(listed, Sequence) and any(callback is self for callback in listed)

    def _uninstall_model_hooks(self) -> None:
        for name in (*_SAVE_METHODS, *_MAKE_METHODS):
            vars(self.model).pop(name, None)

    # -- validation --------------------------------------------------------------------

    def _validate_params(self) -> None:
        _positive_int("max_retries", self.max_retries, minimum=0)
        _positive_int("snapshot_gap", self.snapshot_gap, minimum=1)
        for name in ("spike_factor", "explosion_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 1:
                raise StablefitInputError(
                    f"NanGuard({name}={value!r}): expected a number above 1 (a multiple of "
                    "the running value)."
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


def _adapted_layer(model: keras.Model, path: str) -> str | None:
    """The name of the preprocessing layer (one with ``adapt``, e.g. Normalization) whose
    statistics include the variable at ``path``; None for any other variable."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if hasattr(layer, "adapt") and any(v.path == path for v in layer.variables):
            return layer.name
    return None


def _check_one_guard(callbacks: Any) -> None:
    """Refuse a ``fit`` given several guards: each would wrap the step the other wraps."""
    listed = getattr(callbacks, "callbacks", callbacks)
    guards = [c for c in listed if isinstance(c, NanGuard)] if isinstance(listed, Sequence) else []
    if len(guards) > 1:
        raise StablefitInputError(
            f"NanGuard: fit's callbacks hold {len(guards)} NanGuards; pass one (each would "
            "wrap the training step the other wraps)."
        )


def _check_class_weight(class_weight: Any) -> None:
    """Refuse a ``class_weight`` that is not finite: Keras would give every row of that
    class a NaN/inf sample weight, and the guard would leave the whole class out of
    training, batch after batch, as if its rows were bad data."""
    if not isinstance(class_weight, Mapping):
        return
    bad = {
        key: weight
        for key, weight in class_weight.items()
        if not math.isfinite(float(np.asarray(weight, dtype=np.float64)))
    }
    if bad:
        said = ", ".join(
            f"{key!r}: {float(weight)}" if isinstance(key, str) else f"{key}: {float(weight)}"
            for key, weight in bad.items()
        )
        classes = "class" if len(bad) == 1 else "classes"
        raise StablefitInputError(
            f"NanGuard: fit(class_weight=...) gives {classes} {{{said}}} a non-finite weight, "
            f"so every row of {'that class' if len(bad) == 1 else 'those classes'} would be "
            "left out of training. Fix: give every class a finite weight (e.g. its inverse "
            "frequency, computed where no class has zero rows)."
        )


def _watching(callbacks: Any, names: Sequence[str], *, first: bool) -> list[str]:
    """What the callbacks of ``fit`` that monitor one of the non-finite validation metrics
    ``names`` do with it, in words: a NaN is never an improvement to them, and the first
    value they see always is (``first``: the metric was never finite)."""
    listed = getattr(callbacks, "callbacks", callbacks)
    said = []
    for callback in listed if isinstance(listed, Sequence) else ():
        monitor = getattr(callback, "monitor", None)
        if monitor not in names:
            continue
        watch = f"{type(callback).__name__}(monitor={monitor!r})"
        if isinstance(callback, keras.callbacks.EarlyStopping):
            restores = ""
            if callback.restore_best_weights:
                best = "the first epoch's, whose value was already NaN" if first else "its best"
                restores = f", then restores the weights of its best epoch ({best})"
            said.append(
                f"{watch} sees no improvement and stops training after "
                f"patience={callback.patience} such epochs{restores}"
            )
        elif isinstance(callback, keras.callbacks.ReduceLROnPlateau):
            said.append(
                f"{watch} sees no improvement and cuts the learning rate by "
                f"factor={callback.factor:g} every patience={callback.patience} such epochs"
            )
        elif isinstance(callback, keras.callbacks.ModelCheckpoint) and callback.save_best_only:
            kept = (
                "keeps the first epoch's model and saves no later one"
                if first
                else ("saves no later model")
            )
            said.append(f"{watch[:-1]}, save_best_only=True) {kept}")
        else:
            said.append(f"{watch} reads it as not finite")
    return said


def _split_from(arguments: Any) -> tuple[float, int] | None:
    """``(validation_split, rows fit trains on)`` when the validation data are the last
    rows of the NumPy ``x`` fit was given (a view of the same array as the rows before)."""
    if arguments is None or not arguments.validation_split:
        return None
    validation = arguments.validation_data
    first = validation[0] if isinstance(validation, (tuple, list)) and validation else None
    base = getattr(arguments.x, "base", None)
    if base is None or getattr(first, "base", None) is not base:
        return None
    return float(arguments.validation_split), len(arguments.x)


def _nonfinite_rows_in(validation: Any, *, offset: int = 0) -> str:
    """Where the arrays of ``validation_data`` (x, y[, sample_weight]) hold NaN/inf, in
    words ("rows 3, 17 of x", numbered from ``offset``), and values finite as given but
    not in Keras's float type (1e39 is inf in float32, as the model gets it); empty when
    there is none or it cannot be read as arrays."""
    parts = validation if isinstance(validation, (tuple, list)) else (validation,)
    floatx = keras.config.floatx()
    found = []
    for name, part in zip(("x", "y", "sample_weight"), parts, strict=False):
        try:
            values = np.asarray(part, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if values.ndim == 0 or not values.size:
            continue
        values = values.reshape(len(values), -1)
        with np.errstate(over="ignore"):
            beyond = ~np.isfinite(values.astype(floatx)).all(axis=1)
        bad = ~np.isfinite(values).all(axis=1)
        for rows, what in ((bad, ""), (beyond & ~bad, f" (values beyond {floatx}'s range)")):
            at = offset + np.flatnonzero(rows)
            if len(at):
                found.append(f"{'row' if len(at) == 1 else 'rows'} {row_list(at)} of {name}{what}")
    return "; ".join(found)


def _warn_if_nothing_trained(epoch: int, logs: dict[str, Any]) -> bool:
    """Say so when every step of the epoch was skipped: its logged loss is NaN (whether
    it was said).

    Keras's average of no steps is 0.0, which reads as a perfect epoch (and as the best one
    to ``EarlyStopping`` and ``ModelCheckpoint(save_best_only=True)``); the guarded step
    logs NaN instead (see :func:`~stablefit.keras._step.honest_logs`), and a NaN is never
    left unexplained.
    """
    skipped, loss = logs.get("skipped_steps"), logs.get("loss")
    if not skipped or loss is None or math.isfinite(float(loss)):
        return False
    steps = "its only step was" if skipped == 1 else f"all {int(skipped)} of its steps were"
    warnings.warn(
        f"NanGuard: epoch {epoch + 1}: {steps} skipped (see the guard's events for why), so "
        "nothing trained in it; its loss and metrics are logged "
        "as NaN, meaning no value, not a failed update: the weights are those of the last "
        "trained step.",
        StablefitWarning,
        stacklevel=2,
    )
    return True


def _positive_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StablefitInputError(f"NanGuard({name}={value!r}): expected an integer >= {minimum}.")


def _finite_rows(report: StepReport) -> tuple[Any, Any, Any]:
    """The reported batch without its bad rows (they were left out of the step)."""
    x, y, sample_weight = report.batch()
    keep = report.row_ok
    if keep.all():
        return x, y, sample_weight

    def pick(value: Any) -> Any:
        return np.asarray(value)[keep]

    return (
        keras.tree.map_structure(pick, x),
        None if y is None else keras.tree.map_structure(pick, y),
        None if sample_weight is None else pick(sample_weight),
    )


def _explain_with_diagnosis(
    x: Any, y: Any, settings: dict[str, Any], *, batch_size: int, epochs: int
) -> str:
    """stablefit's diagnosis of the data and optimizer, as lines of text."""
    from stablefit.diagnose import diagnose

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
