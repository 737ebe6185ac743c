"""NanGuard on each class of real training failure, trained for real with tf.keras on the CPU.

Each scenario reproduces the failure without the guard, then shows it ending as a user
wants: where a good run is reachable (bad data, a learning rate or schedule too high),
every epoch runs, the weights stay finite and the loss on the clean data is within 1.5x
of a clean or well-configured run; otherwise training stops at the first or second event
with the right cause and its fix in the message.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from keras_cases import (
    CorruptedBatches,
    all_finite,
    clean_loss,
    keras,
    linear_model,
    seed_example_1,
    sine_data,
    sine_mlp,
    well_conditioned,
)

from stablefit.errors import StablefitWarning
from stablefit.keras import NanGuard, NonFiniteTrainingError

pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings("ignore::stablefit.errors.StablefitWarning"),
]


def sgd_linear(rate: float = 0.1) -> keras.Model:
    return linear_model(3, keras.optimizers.SGD(rate))


@pytest.fixture(scope="module")
def linear_data() -> tuple[np.ndarray, np.ndarray, float]:
    """512 well-conditioned rows and the clean-set loss of a clean 5-epoch SGD run."""
    x, y = well_conditioned(rows=512)
    model = sgd_linear()
    model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0)
    return x, y, clean_loss(model, x, y)


# -- bad data: the rows are left out, nothing else changes --------------------------------


@pytest.mark.parametrize("where", ["x", "y"])
def test_a_nan_once_is_left_out_and_the_run_matches_the_clean_one(linear_data, where) -> None:
    x, y, reference = linear_data
    broken = sgd_linear()
    broken.fit(CorruptedBatches(x, y, batch_size=16, corrupt={5: where}), epochs=5, verbose=0)
    assert not all_finite(broken)  # the failure, reproduced

    model, guard = sgd_linear(), NanGuard()
    data = CorruptedBatches(x, y, batch_size=16, corrupt={5: where})
    history = model.fit(data, epochs=5, verbose=0, callbacks=[guard])
    assert all_finite(model) and len(history.history["loss"]) == 5
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["bad_rows"][0] == 1 and history.history["skipped_steps"] == [0] * 5
    [event] = guard.events
    assert (event.cause, event.action, event.trigger) == ("data", "masked", "bad_rows")
    assert event.columns == (("x[:, 0]",) if where == "x" else ("y",))
    assert event.learning_rate_before == event.learning_rate_after == pytest.approx(0.1)
    # Named in the dataset's terms, whichever step Keras's shuffling put that batch at.
    assert event.evidence["dataset_rows"] == [[data.corrupted[0], 0]]
    assert clean_loss(model, x, y) <= 1.5 * reference


def test_a_permanently_bad_row_is_named_once_with_a_count_and_training_goes_on(
    linear_data,
) -> None:
    x, y, reference = linear_data
    x = x.copy()
    x[17, 2] = np.inf
    model, guard = sgd_linear(), NanGuard(feature_names=["a", "b", "c"])
    with pytest.warns(StablefitWarning, match=r"row 17 of the data with NaN or inf in c"):
        history = model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[guard])
    assert history.history["bad_rows"] == [1] * 5
    [event] = guard.events
    assert (event.cause, event.rows, event.columns, event.count) == ("data", (17,), ("c",), 5)
    assert all_finite(model)
    clean = np.isfinite(x).all(axis=1)
    assert clean_loss(model, x[clean], y[clean]) <= 1.5 * reference


def test_a_bad_row_fitted_again_is_one_event_said_once_a_fit_as_the_same_row() -> None:
    x, y = well_conditioned(rows=128)
    x[17, 2] = np.inf
    model, guard = sgd_linear(), NanGuard()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[guard])
    with pytest.warns(StablefitWarning) as said:
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[guard])
    [again] = [str(w.message) for w in said if "row 17" in str(w.message)]
    assert "again as in an earlier fit" in again and "seen 3 times" in again
    [event] = guard.events  # one bad row, one event, counted across both fits
    assert (event.rows, event.count) == ((17,), 4)
    # The same values at another index of other data: that row is named, not row 17.
    moved = np.roll(x, -14, axis=0), np.roll(y, -14)
    model.fit(*moved, batch_size=16, epochs=1, verbose=0, callbacks=[guard])
    assert [(e.rows, e.count) for e in guard.events] == [((17,), 4), ((3,), 1)]


def test_six_one_off_bad_batches_over_thirty_epochs_never_stop_training() -> None:
    x, y = well_conditioned(rows=256)
    reference = sgd_linear()
    reference.fit(x, y, batch_size=16, epochs=30, shuffle=False, verbose=0)
    corrupt = {16 * epoch + 3: "x" for epoch in (2, 7, 12, 17, 22, 27)}
    model, guard = sgd_linear(), NanGuard(max_retries=1)
    data = CorruptedBatches(x, y, batch_size=16, corrupt=corrupt)
    history = model.fit(data, epochs=30, verbose=0, callbacks=[guard])
    assert len(history.history["loss"]) == 30 and sum(history.history["bad_rows"]) == 6
    assert [e.cause for e in guard.events] == ["data"] * 6
    assert clean_loss(model, x, y) <= 1.5 * clean_loss(reference, x, y)


# -- the learning rate: roll back to the best weights, set the rate the curvature allows --


def test_an_mlp_with_a_learning_rate_too_high_recovers_at_a_measured_rate() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 4)).astype("float32")
    y = (np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * x[:, 3]).astype("float32")
    well_configured = sine_mlp(0.05)
    well_configured.fit(x, y, batch_size=16, epochs=8, verbose=0)
    broken = sine_mlp(2.0)
    assert np.isnan(broken.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0])

    model, guard = sine_mlp(2.0), NanGuard()
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0, callbacks=[guard])
    assert len(history.history["loss"]) == 8 and all_finite(model)
    first = guard.events[0]
    assert (first.cause, first.action) == ("learning_rate", "rolled_back")
    bound = first.evidence["stable_learning_rate"]
    assert first.learning_rate_before == pytest.approx(2.0)
    assert first.learning_rate_after == pytest.approx(0.5 * bound)  # a measured rate, not 2 * 0.1
    assert f"below {bound:.3g}" in first.message
    assert clean_loss(model, x, y) <= 1.5 * clean_loss(well_configured, x, y)


def test_a_slow_divergence_under_momentum_within_the_bound_is_rolled_back() -> None:
    """SGD with momentum 0.9 at half the bound 2(1 + μ)/λ: each step is stretched about 10
    times, and the loss climbs in rises that each look like noise. Kept as noise, the run
    ended at 1.99 (the rate set diverged when trained from the start)."""
    x, y = sine_data()
    momentum = functools.partial(keras.optimizers.SGD, momentum=0.9)
    model, guard = sine_mlp(0.3, momentum), NanGuard()
    model.fit(x, y, batch_size=16, epochs=10, verbose=0, callbacks=[guard])
    described = [e.describe() for e in guard.events]
    slow = [e for e in guard.events if "loss_over_best" in e.evidence]
    assert slow, described
    assert (slow[0].cause, slow[0].action) == ("learning_rate", "rolled_back"), described
    assert "slow divergence" in slow[0].message and "momentum 0.9" in slow[0].message
    chosen = float(model.optimizer.learning_rate.numpy())
    assert chosen == pytest.approx(slow[-1].learning_rate_after)
    assert chosen == pytest.approx(0.5 * slow[-1].evidence["safe_learning_rate"])
    # As good as training at the rate the guard chose for the epochs left after it.
    well_configured = sine_mlp(chosen, momentum)
    well_configured.fit(x, y, batch_size=16, epochs=10 - slow[-1].epoch, verbose=0)
    assert all_finite(model) and clean_loss(model, x, y) <= 1.5 * clean_loss(well_configured, x, y)


def test_an_absurd_adamw_learning_rate_is_set_from_the_preconditioned_curvature() -> None:
    """Adam has no second moments at the start of training, where the rollback goes: the
    rate was cut ten-fold per event until gradients were taken for exploding and the guard
    gave up; AdamW's weight decay kept the absurd rate (Keras decays by the optimizer's)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 4)).astype("float32")
    y = np.tanh(x @ np.array([1.0, -2.0, 0.5, 0.0], dtype="float32"))
    adam = keras.optimizers.AdamW
    well_configured = sine_mlp(0.01, adam)
    well_configured.fit(x, y, batch_size=32, epochs=5, verbose=0)
    model, guard = sine_mlp(1e6, adam), NanGuard()
    model.fit(x, y, batch_size=32, epochs=5, verbose=0, callbacks=[guard])
    [event] = guard.events  # one event, not a cascade
    assert (event.cause, event.action) == ("learning_rate", "rolled_back")
    assert event.learning_rate_after == pytest.approx(0.5 * event.evidence["stable_learning_rate"])
    assert "preconditioned Hessian" in event.message
    assert all_finite(model) and clean_loss(model, x, y) <= 1.5 * clean_loss(well_configured, x, y)


def test_example_1_with_sgd_stops_at_the_first_event_with_its_stability_bound() -> None:
    x, y = seed_example_1()
    model = linear_model(2, keras.optimizers.SGD(0.01))
    initial = model.get_weights()
    guard = NanGuard(data=(x, y))
    with pytest.raises(NonFiniteTrainingError) as raised:
        model.fit(x, y, epochs=30, verbose=0, callbacks=[guard])
    assert len(guard.events) <= 2
    event = guard.events[-1]
    assert (event.cause, event.action) == ("learning_rate", "stopped")
    assert event.evidence["stable_learning_rate"] == pytest.approx(2.14e-13, rel=5e-3)
    message = str(raised.value)
    assert "cause learning rate" in message and "2.14e-13" in message
    assert "standardize" in message
    # With data=, stablefit's diagnosis of the data says the same, in the data's terms.
    assert "SF201" in message and "largest stable learning rate 2.14e-13" in message
    assert all_finite(model)
    for kept, now in zip(initial, model.get_weights(), strict=True):
        assert np.isfinite(now).all() and now.shape == kept.shape


def growing_then_flat(epoch: int) -> float:
    """A warm-up that overshoots: x1.6 an epoch up to 2.1, far above what SGD can take here."""
    return 0.05 * 1.6 ** min(epoch, 8)


@pytest.fixture(scope="module")
def schedule_reference() -> tuple[np.ndarray, np.ndarray, float]:
    x, y = well_conditioned(rows=256)
    model = sgd_linear(0.05)
    model.fit(x, y, batch_size=16, epochs=14, verbose=0)
    return x, y, clean_loss(model, x, y)


def test_late_divergence_under_a_growing_schedule_is_rolled_back_and_the_cut_kept(
    schedule_reference,
) -> None:
    x, y, reference = schedule_reference
    boundaries = [16 * epoch for epoch in range(1, 9)]
    values = [growing_then_flat(epoch) for epoch in range(9)]

    def schedule() -> keras.optimizers.schedules.LearningRateSchedule:
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)

    broken = sgd_linear(schedule())
    assert not np.isfinite(
        broken.fit(x, y, batch_size=16, epochs=14, verbose=0).history["loss"][-1]
    )

    model, guard = sgd_linear(schedule()), NanGuard()
    history = model.fit(x, y, batch_size=16, epochs=14, verbose=0, callbacks=[guard])
    assert len(history.history["loss"]) == 14 and all_finite(model)
    assert guard.events and {e.cause for e in guard.events} == {"learning_rate"}
    assert all(e.learning_rate_after < e.learning_rate_before for e in guard.events)
    assert clean_loss(model, x, y) <= 1.5 * reference


def test_late_divergence_under_learning_rate_scheduler_keeps_the_cut(schedule_reference) -> None:
    x, y, reference = schedule_reference
    scheduler = keras.callbacks.LearningRateScheduler(growing_then_flat)
    broken = sgd_linear(0.05)
    history = broken.fit(x, y, batch_size=16, epochs=14, verbose=0, callbacks=[scheduler])
    assert not np.isfinite(history.history["loss"][-1])

    model, guard = sgd_linear(0.05), NanGuard()
    history = model.fit(x, y, batch_size=16, epochs=14, verbose=0, callbacks=[scheduler, guard])
    assert len(history.history["loss"]) == 14 and all_finite(model)
    # The scheduler sets 2.1 at every epoch from the 9th on; the cut holds on top of it.
    assert history.history["learning_rate"][-1] == pytest.approx(growing_then_flat(13))
    assert len(guard.events) <= 2
    assert clean_loss(model, x, y) <= 1.5 * reference


# -- exploding gradients: clip at a multiple of the running median norm --------------------


def relu_rnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((30, 1)),
            keras.layers.SimpleRNN(16, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def test_exploding_gradients_in_an_rnn_are_clipped_and_said_so() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 30, 1)).astype("float32")
    y = np.tanh(x[:, :3, 0].sum(axis=1)).astype("float32")
    bursts = x.copy()
    bursts[12 * 16 : 13 * 16] *= 30  # one batch of loud sequences: the recurrence explodes
    clean = relu_rnn()
    clean.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    broken = relu_rnn()
    history = broken.fit(bursts, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    assert not np.isfinite(history.history["loss"][-1])

    model, guard = relu_rnn(), NanGuard()
    history = model.fit(bursts, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
                        callbacks=[guard])  # fmt: skip
    assert len(history.history["loss"]) == 3 and all_finite(model)
    [event] = guard.events
    assert (event.cause, event.action, event.trigger) == (
        "exploding_gradients",
        "clipped",
        "gradient_spike",
    )
    median = event.evidence["gradient_norm_median"]
    assert event.evidence["gradient_norm"] > 100 * median
    assert (
        event.clipnorm == pytest.approx(5 * median) and model.optimizer.clipnorm == event.clipnorm
    )
    assert event.learning_rate_after == event.learning_rate_before
    assert "clipnorm" in event.message
    assert clean_loss(model, x, y) <= 1.5 * clean_loss(clean, x, y)


# -- problems a learning rate cannot fix: stop at once, with the explanation ----------------


def log_loss_by_hand(y_true, p):
    y_true = keras.ops.reshape(y_true, keras.ops.shape(p))
    return -keras.ops.mean(y_true * keras.ops.log(p) + (1 - y_true) * keras.ops.log(1 - p), axis=-1)


def test_log_of_zero_in_a_custom_loss_stops_at_once_and_suggests_logits() -> None:
    rng = np.random.default_rng(0)
    x = (100 * rng.standard_normal((256, 4))).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])  # fmt: skip
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=log_loss_by_hand)
    guard = NanGuard()
    with pytest.raises(NonFiniteTrainingError, match="cause loss function") as raised:
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[guard])
    [event] = guard.events
    assert (event.cause, event.action) == ("loss_function", "stopped")
    assert event.learning_rate_after == pytest.approx(0.1)  # no learning-rate cut
    assert set(event.evidence["predictions"]) <= {0.0, 1.0}
    assert "from_logits=True" in str(raised.value) and "log_loss_by_hand" in str(raised.value)
    assert all_finite(model)


def test_a_float16_overflow_in_the_forward_pass_names_the_layer_and_stops() -> None:
    rng = np.random.default_rng(0)
    x = (1000 * rng.random((256, 10))).astype("float32")
    y = (x.sum(axis=1) / 1e4).astype("float32")
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((10,)),
            keras.layers.Dense(32, kernel_initializer="ones", name="sum_of_inputs"),
            keras.layers.Dense(32, kernel_initializer="ones", name="overflows"),
            keras.layers.Dense(1, dtype="float32"),
        ])  # fmt: skip
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    guard = NanGuard()
    with pytest.raises(NonFiniteTrainingError, match="cause precision") as raised:
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[guard])
    [event] = guard.events
    assert (event.cause, event.action) == ("precision", "stopped")
    assert event.evidence["layer"] == "overflows" and event.evidence["limit"] == 65504.0
    assert event.evidence["largest"] > 65504.0
    message = str(raised.value)
    assert "'overflows' computes in float16" in message and "dtype='float32'" in message
    # The inner optimizer's learning rate was left alone, and the loss scale too.
    assert event.learning_rate_after == pytest.approx(1e-3)
    assert all_finite(model)
