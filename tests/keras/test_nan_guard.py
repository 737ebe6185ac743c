"""NanGuard's mechanics on real tf.keras training runs (CPU, tiny data).

The failure scenarios are in test_guard_scenarios.py; here: what a skipped step leaves
untouched, what the logs carry, checkpoints, learning-rate cuts that stay, parameters.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from keras_cases import (
    CorruptedBatches,
    OneBadBatch,
    all_finite,
    keras,
    linear_model,
    seed_example_1,
    well_conditioned,
)

from stablefit.errors import StablefitInputError, StablefitWarning
from stablefit.keras import NanGuard, NonFiniteTrainingError, ScaledSchedule

pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings("ignore::stablefit.errors.StablefitWarning"),
]


def sgd_on_example_1(learning_rate: float = 0.01) -> keras.Model:
    return linear_model(2, keras.optimizers.SGD(learning_rate))


def test_example_1_with_sgd_ends_in_nan_without_the_guard() -> None:
    x, y = seed_example_1()
    model = sgd_on_example_1()
    history = model.fit(x, y, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses[:2]).all()
    assert not np.isfinite(losses[2])  # inf at epoch 3, as measured in issue 3
    assert not all_finite(model)


def test_terminate_on_nan_stops_after_the_bad_update_was_applied() -> None:
    # The weakness NanGuard exists for: the model is left with the broken weights.
    x, y = well_conditioned(rows=256)
    model = linear_model(3, keras.optimizers.SGD(0.1))
    data = OneBadBatch(x, y, batch_size=32, bad_index=3)
    model.fit(data, epochs=2, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
    assert not all_finite(model)


class Snapshots(keras.callbacks.Callback):
    """The weights and optimizer variables after every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.after: list[dict[str, np.ndarray]] = []

    def on_train_batch_end(self, batch, logs=None):
        variables = [*self.model.weights, *self.model.optimizer.variables]
        self.after.append({v.path: np.array(v.numpy()) for v in variables})


def test_a_non_finite_step_changes_nothing_and_the_logs_never_show_nan() -> None:
    # A target of 1e30 is finite, but its squared error overflows float32: the loss and
    # the gradients of that batch are not finite.
    x, y = well_conditioned(rows=128)
    y = y.copy()
    y[70] = 1e30
    model = linear_model(3, keras.optimizers.Adam(0.01))
    seen = Snapshots()
    guard = NanGuard(on_failure="warn")
    with pytest.warns(StablefitWarning, match=r"row 70 of the data with values up to 1e\+30"):
        history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
                            callbacks=[guard, seen])  # fmt: skip
    before, skipped = seen.after[1], seen.after[2]  # batch 3 holds row 70
    assert before.keys() == skipped.keys() and any("velocity" in k for k in before)
    for path, value in before.items():
        np.testing.assert_array_equal(value, skipped[path], err_msg=path)
    assert history.history["skipped_steps"] == [1]
    assert np.isfinite(history.history["loss"]).all()
    # One row that far beyond the others is bad data (scaling y would not help).
    [event] = guard.events
    assert (event.trigger, event.cause, event.action) == ("bad_rows", "data", "masked")
    assert (event.rows, event.columns) == ((70,), ("y",))
    assert all_finite(model)


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.01, momentum=0.9),
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
        lambda: keras.optimizers.RMSprop(0.01, momentum=0.5),
    ],
    ids=["sgd-momentum", "adamw-weight-decay", "rmsprop-momentum"],
)
def test_a_skipped_step_leaves_each_keras_optimizers_variables_as_they_were(optimizer) -> None:
    """Keras's own optimizers get the common step's update undone assignment by assignment
    (no condition around it): weights, slots, iteration count and weight decay included."""
    x, y = well_conditioned(rows=128)
    y = y.copy()
    y[70] = 1e30  # batch 3: its squared error overflows
    model = linear_model(3, optimizer())
    seen = Snapshots()
    with pytest.warns(StablefitWarning, match="row 70"):
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
                  callbacks=[NanGuard(on_failure="warn"), seen])  # fmt: skip
    before, skipped, after = seen.after[1], seen.after[2], seen.after[3]
    for path, value in before.items():
        np.testing.assert_array_equal(value, skipped[path], err_msg=path)
    assert any(not np.array_equal(value, after[path]) for path, value in skipped.items())
    assert all_finite(model)


def test_callbacks_listed_before_the_guard_never_see_a_nan_loss(tmp_path) -> None:
    # TerminateOnNaN first: it reads each batch's loss after a step with a bad row; that
    # loss must be the settled step's, not NaN, and no guard-internal value may show.
    x, y = well_conditioned(rows=256)
    x = x.copy()
    x[40, 1] = np.nan

    class Losses(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[float] = []
            self.keys: set[str] = set()

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.seen.append(float((logs or {})["loss"]))
            self.keys.update(logs or {})

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.keys.update(logs or {})

    seen = Losses()
    model = linear_model(3, keras.optimizers.SGD(0.01))
    log_file = tmp_path / "log.csv"
    callbacks = [keras.callbacks.CSVLogger(str(log_file)), seen, keras.callbacks.TerminateOnNaN(),
                 NanGuard()]  # fmt: skip
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=callbacks)
    assert len(history.history["loss"]) == 3 and history.history["bad_rows"] == [1, 1, 1]
    assert len(seen.seen) == 3 * 8 and np.isfinite(seen.seen).all()
    # The guard's own per-step value never reaches a callback, wherever it is listed.
    assert seen.keys == {"loss"}, seen.keys
    header, *rows = log_file.read_text().splitlines()
    assert "stablefit" not in header and len(rows) == 3


def test_weights_that_would_overflow_behind_a_finite_loss_are_never_written() -> None:
    # |x| = 1.58e19: the squared error (2.5e38) still fits in float32, its gradient (5e38)
    # does not. Without the guard the update makes the kernel infinite.
    x = np.array([[1.58e19]], dtype="float32")
    y = np.array([0.0], dtype="float32")
    plain = linear_model(1, keras.optimizers.SGD(0.01))
    plain.layers[-1].kernel.assign(np.ones((1, 1), dtype="float32"))
    plain.fit(x, y, epochs=1, verbose=0)
    assert not all_finite(plain)

    model = linear_model(1, keras.optimizers.SGD(0.01))
    model.layers[-1].kernel.assign(np.ones((1, 1), dtype="float32"))
    guard = NanGuard()
    with pytest.raises(NonFiniteTrainingError, match="cause precision") as raised:
        model.fit(x, y, epochs=3, verbose=0, callbacks=[guard])
    [event] = guard.events
    assert (event.trigger, event.action) == ("nonfinite_step", "stopped")
    assert event.evidence["largest"] == pytest.approx(1.58e19, rel=1e-6)
    assert model.layers[-1].kernel.numpy()[0, 0] == 1.0
    assert "standardize" in str(raised.value)


def test_events_are_plain_records_for_reports() -> None:
    x, y = well_conditioned(rows=128)
    model, guard = linear_model(3, keras.optimizers.SGD(0.1)), NanGuard()
    model.fit(CorruptedBatches(x, y, batch_size=32, corrupt={2: "y"}), epochs=2, verbose=0,
              callbacks=[guard])  # fmt: skip
    [event] = guard.events
    record = json.loads(json.dumps(event.to_dict()))
    assert set(record) >= {"epoch", "batch", "trigger", "cause", "action", "message", "fix",
                           "loss", "evidence", "rows", "columns", "count", "restored_from",
                           "learning_rate_before", "learning_rate_after", "clipnorm"}  # fmt: skip
    assert (record["cause"], record["columns"], record["evidence"]["batch_positions"]) == (
        "data",
        ["y"],
        [0],
    )
    assert event.describe().startswith("epoch 1, batch ")


def test_a_cut_on_a_schedule_stays_in_the_optimizer_after_fit() -> None:
    # lr 3 diverges on these features (the Hessian's largest eigenvalue is about 2-4); the
    # guard's cut is applied on top of the schedule during fit and kept in it after.
    x, y = well_conditioned(rows=256)
    schedule = keras.optimizers.schedules.ExponentialDecay(3.0, decay_steps=1000, decay_rate=0.9)
    model = linear_model(3, keras.optimizers.SGD(schedule))
    guard = NanGuard()
    history = model.fit(x, y, batch_size=64, epochs=20, verbose=0, callbacks=[guard])
    assert 1 <= len(guard.events) <= 2 and guard.events[0].cause == "learning_rate"
    rate = model.optimizer._learning_rate
    assert isinstance(rate, ScaledSchedule) and rate.schedule is schedule
    last = guard.events[-1]
    now = float(model.optimizer.learning_rate.numpy())
    assert now == pytest.approx(last.learning_rate_after, rel=0.05)  # decayed a little since
    assert all_finite(model) and history.history["loss"][-1] < 0.05


def _finite_file(path) -> bool:
    model = linear_model(3, "sgd")
    model.load_weights(path)
    return all_finite(model)


@pytest.mark.parametrize("guard_first", [True, False], ids=["guard-first", "guard-last"])
def test_no_checkpoint_ever_holds_nonfinite_weights(tmp_path, guard_first: bool) -> None:
    x, y = well_conditioned(rows=128)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    savers = [
        keras.callbacks.ModelCheckpoint(
            str(checkpoints / "e{epoch}-b{batch}.weights.h5"),
            save_weights_only=True,
            save_freq=1,
        ),
        keras.callbacks.BackupAndRestore(
            str(tmp_path / "backup"), save_freq=1, delete_checkpoint=False
        ),
    ]
    guard = NanGuard()
    callbacks = [guard, *savers] if guard_first else [*savers, guard]
    model = linear_model(3, keras.optimizers.SGD(0.1))
    model.fit(OneBadBatch(x, y, batch_size=32, bad_index=2), epochs=2, verbose=0,
              callbacks=callbacks)  # fmt: skip
    files = sorted(checkpoints.glob("*.weights.h5"))
    assert len(files) == 8  # one per batch: 4 batches x 2 epochs
    assert [e.cause for e in guard.events] == ["data"]
    for path in [*files, tmp_path / "backup" / "latest.weights.h5"]:
        assert _finite_file(path), path


def test_checkpoints_hold_nan_without_the_guard(tmp_path) -> None:
    # The contrast that makes the test above meaningful.
    x, y = well_conditioned(rows=128)
    model = linear_model(3, keras.optimizers.SGD(0.1))
    model.fit(OneBadBatch(x, y, batch_size=32, bad_index=2), epochs=1, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(str(tmp_path / "b{batch}.weights.h5"),
                                        save_weights_only=True, save_freq=1)])  # fmt: skip
    assert not all(_finite_file(path) for path in tmp_path.glob("*.weights.h5"))


def test_backups_survive_a_stopped_run_with_finite_weights(tmp_path) -> None:
    # TerminateOnNaN ends training normally, so BackupAndRestore deletes its backup; the
    # guard raises instead, so the backup (always finite) stays for the next run.
    x, y = seed_example_1()
    terminated = sgd_on_example_1()
    terminated.fit(x, y, epochs=10, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(str(tmp_path / "terminated")),
        keras.callbacks.TerminateOnNaN(),
    ])  # fmt: skip
    assert not (tmp_path / "terminated").exists()

    model = sgd_on_example_1()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "guarded"))
    with pytest.raises(NonFiniteTrainingError):
        model.fit(x, y, epochs=30, verbose=0, callbacks=[backup, NanGuard()])
    saved = tmp_path / "guarded" / "latest.weights.h5"
    assert saved.exists()
    restored = sgd_on_example_1()
    restored.load_weights(str(saved))
    assert all_finite(restored)


def test_the_model_is_left_as_it_was_given_after_fit() -> None:
    x, y = well_conditioned(rows=64)
    model = linear_model(3, keras.optimizers.SGD(0.1))
    metrics = list(model.metrics)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[NanGuard()])
    assert "train_step" not in vars(model) and "apply" not in vars(model.optimizer)
    assert "save_weights" not in vars(model)
    assert list(model.metrics) == metrics
    history = model.fit(x, y, epochs=1, verbose=0)  # trains on without the guard
    assert "skipped_steps" not in history.history


@pytest.mark.parametrize("steps_per_execution", [1, 4])
def test_a_model_compiled_for_xla_is_guarded_and_given_back_with_xla(steps_per_execution) -> None:
    """With jit_compile=True (Keras's default on TensorFlow with a GPU) the first step
    failed inside XLA: 'Shape of resource Variable cannot be changed after
    initialization'."""
    x, y = well_conditioned(rows=100)  # batches of 32, then 4 rows
    x[37, 1] = np.nan
    model = linear_model(3, keras.optimizers.SGD(0.1))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        jit_compile=True,
        steps_per_execution=steps_per_execution,
    )
    guard = NanGuard()
    with pytest.warns(StablefitWarning, match="trains without XLA while the guard is on"):
        history = model.fit(x, y, epochs=3, verbose=0, callbacks=[guard])
    assert [(e.cause, e.action) for e in guard.events] == [("data", "masked")]
    assert np.isfinite(history.history["loss"]).all() and all_finite(model)
    assert model.jit_compile


class OwnTrainStep(keras.Model):
    """The custom training step of Keras's guides: ``x, y = data``, the loss computed
    inline (none compiled), ``apply_gradients``, a raw loss logged."""

    def train_step(self, data):
        import tensorflow as tf

        x, y = data
        with tf.GradientTape() as tape:
            loss = keras.ops.mean((self(x, training=True)[:, 0] - y) ** 2)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        return {"loss": loss}


def own_train_step_model(learning_rate: float) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    model = OwnTrainStep(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate))
    return model


def batch_losses() -> tuple[list[float], keras.callbacks.Callback]:
    """A list and a callback appending each batch's logged loss to it."""
    seen: list[float] = []
    logger = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(float(logs["loss"]))
    )
    return seen, logger


def mse(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """The mean squared error of the predictions (a model with its own train_step compiles
    no loss for ``clean_loss``'s ``evaluate``)."""
    return float(np.mean((model.predict(x, verbose=0)[:, 0] - y) ** 2))


def test_a_model_with_its_own_train_step_is_guarded() -> None:
    """Such a model failed at its first bad row ('too many values to unpack': the guard
    passed sample weights), then logged 0.0 for a masked step, and a learning rate too
    high ended in a ValueError from the replay ('No loss to compute')."""
    x, y = well_conditioned(rows=256)
    x[100, 1] = np.nan
    model = own_train_step_model(0.01)
    seen, logger = batch_losses()
    guard = NanGuard()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[guard, logger])
    assert [(e.cause, e.action) for e in guard.events] == [("data", "masked")]
    assert all(np.isfinite(seen)) and 0.0 not in seen and all_finite(model)
    x, y = well_conditioned(rows=256)
    model = own_train_step_model(5.0)  # diverges at once
    guard = NanGuard()
    model.fit(x, y, epochs=5, verbose=0, callbacks=[guard])
    assert [e.cause for e in guard.events][:1] == ["learning_rate"]
    assert guard.events[0].learning_rate_after < 5.0
    clean = own_train_step_model(0.1)
    clean.fit(x, y, epochs=5, verbose=0)  # (its history reads 0.0: Keras's unused tracker)
    assert mse(model, x, y) <= 1.5 * mse(clean, x, y) and all_finite(model)


def test_an_absurd_learning_rate_in_a_model_with_its_own_train_step_is_cut_and_trains() -> None:
    """With no loss to replay, the first failed step was 'cause unknown: look for randomness
    in the model' five times over, then the guard stopped; the skipped steps logged inf."""
    x, y = well_conditioned(rows=256)
    model = own_train_step_model(1e18)
    seen, logger = batch_losses()
    guard = NanGuard()
    model.fit(x, y, epochs=3, verbose=0, callbacks=[guard, logger])
    assert guard.events and {e.cause for e in guard.events} == {"learning_rate"}
    assert "the weights diverged" in guard.events[0].message
    # The rate set comes from the loss's growth, not from ten-fold cuts.
    assert 0.1 < model.optimizer.learning_rate.numpy() < 1.0
    steps = 256 // 32
    skipped = [e.epoch * steps + e.batch for e in guard.events if e.trigger == "nonfinite_step"]
    assert skipped and all(np.isfinite(seen[i]) for i in skipped)
    clean = own_train_step_model(0.1)
    clean.fit(x, y, epochs=3, verbose=0)
    assert mse(model, x, y) <= 1.5 * mse(clean, x, y) and all_finite(model)


def test_a_step_whose_loss_alone_overflows_in_its_own_train_step_is_skipped() -> None:
    """The optimizer sees only the gradients of such a model: a target of 1e20 squares
    past float32 while the gradients stay finite, and that update was applied (the next
    step failed, taken for a learning rate too high)."""
    x, y = well_conditioned(rows=128)
    y[100] = 1e20
    model = own_train_step_model(0.01)
    model.fit(x[:96], y[:96], batch_size=32, epochs=1, verbose=0)
    before = [np.array(v.numpy()) for v in [*model.weights, *model.optimizer.variables]]
    guard = NanGuard(on_failure="warn")
    model.fit(x[96:], y[96:], batch_size=32, epochs=1, verbose=0, callbacks=[guard])
    after = [np.array(v.numpy()) for v in [*model.weights, *model.optimizer.variables]]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    [event] = guard.events
    assert (event.batch, event.cause, event.action) == (0, "precision", "stopped")
    assert "the targets reach 1e20" in event.message


def test_a_failed_step_is_placed_at_its_batch_with_several_steps_per_execution() -> None:
    """It was placed at the execution's first batch (batch 1 for batch 4)."""
    x, y = well_conditioned(rows=128)
    y[100] = 1e30  # batch 4 of 32 rows: its squared error overflows
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", steps_per_execution=4)
    guard = NanGuard(on_failure="warn")
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[guard])
    [event] = guard.events
    assert (event.batch, event.cause, event.rows) == (3, "data", (100,))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_retries", -1),
        ("snapshot_gap", 0),
        ("spike_factor", 1.0),
        ("explosion_factor", "big"),
        ("on_failure", "ignore"),
        ("data", (1, 2, 3)),
    ],
)
def test_bad_parameters_are_named(option: str, value: object) -> None:
    x, y = seed_example_1()
    model = sgd_on_example_1()
    with pytest.raises(StablefitInputError, match=rf"NanGuard\({option}="):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[NanGuard(**{option: value})])


def test_validation_leaves_the_training_logs_and_counts_as_they_are() -> None:
    x, y = well_conditioned(rows=256)
    x[40, 1] = np.nan
    validation = well_conditioned(rows=64, seed=1)
    runs = {}
    for name, extra in (("plain", {}), ("validated", {"validation_data": validation})):
        model = linear_model(3, keras.optimizers.SGD(0.1))
        history = model.fit(
            x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[NanGuard()],
            **extra,
        )  # fmt: skip
        runs[name] = (history.history, model)
    plain, (validated, model) = runs["plain"][0], runs["validated"]
    # evaluate() at each epoch's end reset the guard's counters: every training loss was
    # logged as NaN (no step seemed to have trained), the counts as 0, and the counters
    # showed up as val_skipped_steps / val_bad_rows.
    assert (
        validated["loss"] == pytest.approx(plain["loss"]) and np.isfinite(validated["loss"]).all()
    )
    assert validated["bad_rows"] == plain["bad_rows"] == [1, 1]
    assert np.isfinite(validated["val_loss"]).all()
    assert sorted(validated) == ["bad_rows", "loss", "skipped_steps", "val_loss"]
    # ... and evaluate() after fit returned the counters beside the loss.
    assert isinstance(model.evaluate(*validation, verbose=0), float)


def test_a_nan_in_validation_data_is_said_with_its_row() -> None:
    x, y = well_conditioned(rows=128)
    x_val, y_val = well_conditioned(rows=32, seed=1)
    x_val[3, 0] = np.nan
    model = linear_model(3, keras.optimizers.SGD(0.1))
    with pytest.warns(StablefitWarning, match="val_loss not finite") as caught:
        history = model.fit(
            x, y, batch_size=32, epochs=2, verbose=0, validation_data=(x_val, y_val),
            callbacks=[NanGuard()],
        )  # fmt: skip
    said = [str(w.message) for w in caught if "val_loss" in str(w.message)]
    assert len(said) == 1 and "row 3 of x" in said[0] and "Training is not affected" in said[0]
    assert np.isfinite(history.history["loss"]).all() and all_finite(model)


def test_a_nan_sample_weight_is_named_as_the_weight_not_the_inputs() -> None:
    x, y = well_conditioned(rows=128)
    weights = np.ones(len(x), dtype="float32")
    weights[40] = np.nan
    model, guard = linear_model(3, keras.optimizers.SGD(0.1)), NanGuard()
    model.fit(
        x, y, sample_weight=weights, batch_size=32, epochs=2, shuffle=False, verbose=0,
        callbacks=[guard],
    )  # fmt: skip
    [event] = guard.events
    # The event said "NaN or inf in the inputs" and told the user to drop or impute the
    # rows, whose inputs and targets were fine.
    assert event.rows == (40,) and event.columns == ("sample_weight",)
    assert "in sample_weight" in event.message and "class_weight" in event.fix
    assert all_finite(model)


def test_a_nan_in_the_validation_split_is_named_by_its_row_in_x() -> None:
    x, y = well_conditioned(rows=160)
    x[150, 0] = np.nan  # in the last 10%, which validation_split=0.1 holds out
    model = linear_model(3, keras.optimizers.SGD(0.1))
    with pytest.warns(StablefitWarning, match="val_loss not finite") as caught:
        model.fit(
            x, y, batch_size=32, epochs=1, verbose=0, validation_split=0.1,
            callbacks=[NanGuard()],
        )  # fmt: skip
    [said] = [str(w.message) for w in caught if "val_loss" in str(w.message)]
    # It said "row 6 of x": the row's place in the split, not in the x the user gave.
    assert "validation split (validation_split=0.1)" in said and "row 150 of x" in said
