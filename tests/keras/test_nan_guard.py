"""NanGuard on real tf.keras training runs (CPU, tiny data)."""

from __future__ import annotations

import numpy as np
import pytest
from keras_cases import (
    OneBadBatch,
    all_finite,
    keras,
    linear_model,
    seed_example_1,
    well_conditioned,
)

from stablefit.errors import StablefitInputError, StablefitWarning
from stablefit.keras import NanGuard, NonFiniteTrainingError, ScaledSchedule

pytestmark = pytest.mark.keras


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


def test_example_1_with_sgd_under_the_guard_ends_finite_and_explains() -> None:
    x, y = seed_example_1()
    model = sgd_on_example_1()
    guard = NanGuard(snapshot_every=1, on_failure="warn")
    with pytest.warns(StablefitWarning, match=r"NanGuard stopped training") as caught:
        model.fit(x, y, epochs=30, verbose=0, callbacks=[guard])
    assert all_finite(model)
    assert model.stop_training
    first = guard.events[0]
    assert (first.epoch, first.batch, first.kind) == (2, 0, "loss")
    assert not np.isfinite(first.value)
    assert first.action == "rollback"
    assert first.learning_rate_before == pytest.approx(0.01)
    assert first.learning_rate_after == pytest.approx(0.001)
    assert len(guard.events) == guard.max_retries + 1
    assert [e.action for e in guard.events] == ["rollback"] * guard.max_retries + ["stop"]
    rates = [e.learning_rate_after for e in guard.events[:-1]]
    assert rates == pytest.approx([0.01 * 0.1**k for k in range(1, guard.max_retries + 1)])
    message = "".join(str(w.message) for w in caught if w.category is StablefitWarning)
    assert "epoch 3" in message and "learning rate 0.01 -> 0.001" in message
    assert "max_retries=5" in message and "last good weights" in message


def test_exhausted_retries_raise_and_leave_the_last_good_weights() -> None:
    x, y = seed_example_1()
    model = sgd_on_example_1()
    initial = model.get_weights()
    guard = NanGuard(snapshot_every=1, max_retries=1, data=(x, y))
    with pytest.raises(NonFiniteTrainingError, match=r"max_retries=1") as raised:
        model.fit(x, y, epochs=30, verbose=0, callbacks=[guard])
    assert model.stop_training
    assert [e.action for e in guard.events] == ["rollback", "stop"]
    # The loss after epoch 1 was finite but 1e22 times the first (1e34 vs 1e12): already
    # diverging, so the last good state is the one before training, and the model holds
    # exactly those weights.
    assert [e.restored_from for e in guard.events] == [(0, -1), (0, -1)]
    for kept, now in zip(initial, model.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, now)
    message = str(raised.value)
    assert "the loss was inf" in message and "epoch 6/30" in message
    # The data was given: stablefit's diagnosis says why, with the stability bound.
    assert "SF201" in message and "largest stable learning rate 2.14e-13" in message


def test_a_nan_batch_is_survived_with_finite_weights_and_a_normal_loss() -> None:
    x, y = well_conditioned()
    clean = linear_model(3, keras.optimizers.SGD(0.1))
    clean_loss = clean.fit(x, y, batch_size=32, epochs=10, shuffle=False, verbose=0)
    clean_final = clean_loss.history["loss"][-1]

    broken = linear_model(3, keras.optimizers.SGD(0.1))
    broken.fit(OneBadBatch(x, y, batch_size=32, bad_index=5), epochs=10, shuffle=False, verbose=0)
    assert not all_finite(broken)

    model = linear_model(3, keras.optimizers.SGD(0.1))
    guard = NanGuard(lr_factor=0.5)
    history = model.fit(
        OneBadBatch(x, y, batch_size=32, bad_index=5),
        epochs=10,
        shuffle=False,
        verbose=0,
        callbacks=[guard],
    )
    assert all_finite(model)
    assert len(guard.events) == 1
    event = guard.events[0]
    assert (event.epoch, event.kind, event.action) == (0, "loss", "rollback")
    assert event.variable is not None  # the NaN gradient reached the weights
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] <= 1.5 * clean_final
    assert model.optimizer.learning_rate.numpy() == pytest.approx(0.05)


def test_a_learning_rate_schedule_is_scaled_and_training_recovers() -> None:
    # lr 3 diverges on these features (the MSE Hessian's eigenvalues are about 2 > 2/3);
    # a tenth of it converges -- only if the scaled schedule really reaches the step.
    x, y = well_conditioned(rows=256)
    schedule = keras.optimizers.schedules.ExponentialDecay(3.0, decay_steps=1000, decay_rate=0.9)
    model = linear_model(3, keras.optimizers.SGD(schedule))
    guard = NanGuard(snapshot_every=1)
    history = model.fit(x, y, batch_size=256, epochs=60, verbose=0, callbacks=[guard])
    assert 1 <= len(guard.events) <= 2
    rate = model.optimizer._learning_rate
    assert isinstance(rate, ScaledSchedule)
    assert rate.schedule is schedule
    assert rate.scale == pytest.approx(0.1 ** len(guard.events))
    first = guard.events[0]
    assert first.learning_rate_after == pytest.approx(0.1 * first.learning_rate_before)
    assert all_finite(model)
    assert history.history["loss"][-1] < 0.05


def test_adam_moments_are_restored_with_the_weights() -> None:
    x, y = well_conditioned(rows=256)
    model = linear_model(3, keras.optimizers.Adam(0.01))
    bad_batch = 4
    # The state after batch 3 is never confirmed (batch 4's loss, computed from it, is
    # NaN), so the last good state is the one after batch 2.
    last_good = bad_batch - 2
    seen = {}

    class Before(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == last_good:
                seen["weights"] = [w.numpy().copy() for w in self.model.weights]
                seen["optimizer"] = {
                    v.path: v.numpy().copy() for v in self.model.optimizer.variables
                }

    class After(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == bad_batch and "restored" not in seen:
                seen["restored"] = [w.numpy().copy() for w in self.model.weights]
                seen["restored_optimizer"] = {
                    v.path: v.numpy().copy() for v in self.model.optimizer.variables
                }

    guard = NanGuard(snapshot_every=1)
    data = OneBadBatch(x, y, batch_size=32, bad_index=bad_batch)
    model.fit(data, epochs=1, shuffle=False, verbose=0, callbacks=[Before(), guard, After()])
    assert [(e.batch, e.restored_from) for e in guard.events] == [(bad_batch, (0, last_good))]
    for before, after in zip(seen["weights"], seen["restored"], strict=True):
        np.testing.assert_array_equal(before, after)
    restored = seen["restored_optimizer"]
    moments = [path for path in restored if "momentum" in path or "velocity" in path]
    assert len(moments) == 4  # first and second moments of kernel and bias
    for path, value in seen["optimizer"].items():
        if path.endswith("learning_rate"):
            assert restored[path] == pytest.approx(0.1 * value)
        else:
            np.testing.assert_array_equal(value, restored[path], err_msg=path)
    assert all(np.isfinite(v).all() for v in restored.values())


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
    guard = NanGuard(check_weights="never")
    callbacks = [guard, *savers] if guard_first else [*savers, guard]
    model = linear_model(3, keras.optimizers.SGD(0.1))
    model.fit(
        OneBadBatch(x, y, batch_size=32, bad_index=2),
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    files = sorted(checkpoints.glob("*.weights.h5"))
    assert len(files) == 8  # one per batch: 4 batches x 2 epochs
    assert [e.kind for e in guard.events] in (["weights"], ["loss"])
    for path in [*files, tmp_path / "backup" / "latest.weights.h5"]:
        assert _finite_file(path), path


def test_checkpoints_hold_nan_without_the_guard(tmp_path) -> None:
    # The contrast that makes the test above meaningful.
    x, y = well_conditioned(rows=128)
    model = linear_model(3, keras.optimizers.SGD(0.1))
    model.fit(
        OneBadBatch(x, y, batch_size=32, bad_index=2),
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[
            keras.callbacks.ModelCheckpoint(
                str(tmp_path / "b{batch}.weights.h5"), save_weights_only=True, save_freq=1
            )
        ],
    )
    assert not all(_finite_file(path) for path in tmp_path.glob("*.weights.h5"))


def test_clipnorm_remedy_bounds_the_steps_and_training_goes_on() -> None:
    x, y = seed_example_1()
    model = sgd_on_example_1()
    guard = NanGuard(snapshot_every=1, clipnorm=1.0, lr_factor=1.0)
    history = model.fit(x, y, epochs=12, verbose=0, callbacks=[guard])
    assert len(guard.events) == 1
    event = guard.events[0]
    assert event.remedy == "clipnorm set to 1"
    assert event.clipnorm == 1.0 and model.optimizer.clipnorm == 1.0
    assert event.learning_rate_after == pytest.approx(0.01)
    after = history.history["loss"][event.epoch + 1 :]
    assert np.isfinite(after).all()
    assert after[-1] < after[0]
    assert all_finite(model)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lr_factor", 2.0),
        ("snapshot_every", 0),
        ("check_weights", "always"),
        ("on_failure", "ignore"),
        ("max_retries", -1),
    ],
)
def test_bad_parameters_are_named(option: str, value: object) -> None:
    x, y = seed_example_1()
    model = sgd_on_example_1()
    with pytest.raises(StablefitInputError, match=rf"NanGuard\({option}="):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[NanGuard(**{option: value})])


def test_weights_overflowing_behind_a_finite_loss_are_caught_at_that_batch() -> None:
    # |x| = 1.58e19: the squared error (2.5e38) still fits in float32, its gradient
    # (5e38) does not, so the update makes the kernel infinite while the loss is finite.
    x = np.array([[1.58e19]], dtype="float32")
    y = np.array([0.0], dtype="float32")
    model = linear_model(1, keras.optimizers.SGD(0.01))
    kernel = model.layers[-1].kernel
    kernel.assign(np.ones((1, 1), dtype="float32"))
    guard = NanGuard(check_weights="batch", max_retries=1, on_failure="warn")
    with pytest.warns(StablefitWarning, match=rf"weight {kernel.path} was -inf"):
        history = model.fit(x, y, epochs=3, verbose=0, callbacks=[guard])
    assert np.isfinite(history.history["loss"][0])
    first = guard.events[0]
    assert (first.epoch, first.batch, first.kind) == (0, 0, "weights")
    assert first.variable == kernel.path and np.isinf(first.value)
    assert all_finite(model)


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
        model.fit(x, y, epochs=30, verbose=0,
                  callbacks=[backup, NanGuard(snapshot_every=1, max_retries=1)])  # fmt: skip
    saved = tmp_path / "guarded" / "latest.weights.h5"
    assert saved.exists()
    restored = sgd_on_example_1()
    restored.load_weights(str(saved))
    assert all_finite(restored)
