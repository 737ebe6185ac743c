"""NanGuard beside the rest of what users pass to ``model.fit``, on real tf.keras runs.

Other callbacks, sample and class weights, several outputs, a fit that ends by an
exception or is called again: the guard's rows, events and learning-rate cuts stay right,
and the model is given back as it was.
"""

from __future__ import annotations

import numpy as np
import pytest
from keras_cases import (
    Interrupt,
    RateJump,
    all_finite,
    interrupted_with_a_backup,
    keras,
    linear_model,
    sine_data,
    sine_mlp,
    well_conditioned,
)

from stablefit.errors import StablefitInputError, StablefitWarning
from stablefit.keras import NanGuard, NonFiniteTrainingError, checked

pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings("ignore::stablefit.errors.StablefitWarning"),
]


def test_a_fit_ended_by_an_exception_leaves_no_guard_on_the_model() -> None:
    """Keras calls no on_train_end when fit raises: the guarded step stayed on the model,
    so the next fit without a guard still left bad rows out, without a word, and the next
    guard's fit crashed inside TensorFlow; the learning-rate cut was lost."""
    x, y = well_conditioned(rows=256)
    x[20, 0] = np.nan
    model, guard = linear_model(3, keras.optimizers.SGD(3.0)), NanGuard()
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[guard, Interrupt()])
    cut = [e for e in guard.events if e.cause == "learning_rate"][-1].learning_rate_after
    assert isinstance(model.evaluate(x[21:], y[21:], verbose=0), float)  # no guard counts

    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # no guard: Keras as it is
    assert np.isnan(history.history["loss"][0]) and not all_finite(model)
    assert "skipped_steps" not in history.history and "train_step" not in vars(model)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(cut, rel=1e-6)

    for fresh in (True, False):  # a new guard, and the interrupted one again
        model = linear_model(3, keras.optimizers.SGD(0.1))
        first = NanGuard()
        with pytest.raises(RuntimeError, match="interrupted"):
            model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[first, Interrupt()])
        guard = NanGuard() if fresh else first
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[guard])
        assert history.history["bad_rows"] == [1, 1] and all_finite(model)
        assert history.history["loss"][-1] < 0.05


@pytest.mark.parametrize("weight", [np.nan, np.inf])
def test_a_non_finite_class_weight_is_refused_naming_the_class(weight) -> None:
    """Keras gives every row of the class that weight: the guard left the whole class out,
    batch after batch, with one data event per batch naming rows 'not among the arrays
    given', and trained a classifier that never saw the class."""
    x, _ = well_conditioned(rows=128)
    labels = (x[:, 0] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    initial = model.get_weights()
    with pytest.raises(StablefitInputError, match=rf"class \{{1: {weight}\}}.*finite weight"):
        model.fit(x, labels, class_weight={0: 1.0, 1: weight}, epochs=1, verbose=0,
                  callbacks=[NanGuard()])  # fmt: skip
    for before, after in zip(initial, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    assert "train_step" not in vars(model)


def embedding_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Embedding(50, 4),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def test_a_missing_category_code_before_an_embedding_is_a_bad_row() -> None:
    """A DataFrame's integer column with a missing value is float64 with NaN; Embedding
    casts it to an index far out of range, and TensorFlow's step stopped fit with
    'indices[...] = -2147483648 is not in [0, 50)' before the guard could leave the row out."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    codes = pd.DataFrame(rng.integers(0, 50, size=(256, 6)), columns=[f"t{i}" for i in range(6)])
    y = (codes.sum(axis=1) / 100).to_numpy("float32")
    clean = embedding_model()
    clean.fit(codes.drop(index=3), np.delete(y, 3), batch_size=16, epochs=3, verbose=0)

    codes = codes.astype("float64")
    codes.loc[3, "t2"] = np.nan
    model, guard = embedding_model(), NanGuard()
    history = model.fit(codes, y, batch_size=16, epochs=3, verbose=0, callbacks=[guard])
    [event] = guard.events
    assert (event.cause, event.rows, event.columns) == ("data", (3,), ("t2",))
    assert history.history["bad_rows"] == [1, 1, 1] and all_finite(model)
    kept = codes.drop(index=3)
    reference = clean.evaluate(kept, np.delete(y, 3), verbose=0)
    assert model.evaluate(kept, np.delete(y, 3), verbose=0) <= 1.5 * reference


def test_a_nan_in_validation_data_names_the_callbacks_it_misleads(tmp_path) -> None:
    """The guard said 'Training is not affected' while EarlyStopping on val_loss, to which
    NaN is never an improvement, stopped training and restored the first epoch's weights."""
    x, y = well_conditioned(rows=256)
    x_val, y_val = x[:64].copy(), y[:64]
    x_val[5, 0] = np.nan
    model = linear_model(3, keras.optimizers.SGD(0.1))
    callbacks = [
        NanGuard(),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=1),
        keras.callbacks.ModelCheckpoint(
            str(tmp_path / "best.keras"), monitor="val_loss", save_best_only=True
        ),
    ]
    with pytest.warns(StablefitWarning, match="val_loss not finite") as caught:
        history = model.fit(x, y, batch_size=16, epochs=8, verbose=0,
                            validation_data=(x_val, y_val), callbacks=callbacks)  # fmt: skip
    assert len(history.history["loss"]) == 3  # stopped by EarlyStopping, as the warning says
    [said] = [str(w.message) for w in caught if "val_loss not finite" in str(w.message)]
    assert "row 5 of x" in said and "Training is not affected" not in said
    assert "EarlyStopping(monitor='val_loss') sees no improvement and stops training" in said
    assert "restores the weights of its best epoch (the first epoch's" in said
    assert "ReduceLROnPlateau(monitor='val_loss') sees no improvement and cuts" in said
    assert "save_best_only=True) keeps the first epoch's model" in said


def test_a_run_resumed_by_backup_and_restore_keeps_the_cut_and_rolls_back_within_itself(
    tmp_path,
) -> None:
    """The backup held the learning rate that diverged (the cut lived in the guard), so the
    resumed run diverged again; and with the guard listed before BackupAndRestore a
    rollback restored the weights from before the resume, said as 'the start of epoch 1'."""
    x, y = sine_data()
    guard = NanGuard()
    interrupted_with_a_backup(sine_mlp(2.0), x, y, str(tmp_path / "cut"), guard)
    [event] = guard.events
    assert event.cause == "learning_rate"
    resumed, guard = sine_mlp(2.0), NanGuard()  # as a new process would build it
    restoring = keras.callbacks.BackupAndRestore(str(tmp_path / "cut"))
    resumed.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[guard, restoring])
    assert guard.events == []  # it resumed at the cut rate, and kept it
    rate = float(resumed.optimizer.learning_rate.numpy())
    assert rate == pytest.approx(event.learning_rate_after, rel=1e-6)

    model = sine_mlp(0.05)
    interrupted_with_a_backup(model, x, y, str(tmp_path / "plain"))
    interrupted = model.evaluate(x, y, verbose=0)
    resumed, guard = sine_mlp(0.05), NanGuard()
    restoring = keras.callbacks.BackupAndRestore(str(tmp_path / "plain"))
    history = resumed.fit(x, y, batch_size=16, epochs=3, verbose=0,
                          callbacks=[guard, restoring, RateJump(epoch=1, batch=5)])  # fmt: skip
    [event] = guard.events
    assert (event.cause, event.action) == ("learning_rate", "rolled_back")
    assert event.restored_from == (1, -1)
    assert "restored the weights from the start of epoch 2" in event.message
    assert len(history.history["loss"]) == 2 and all_finite(resumed)
    assert resumed.evaluate(x, y, verbose=0) < interrupted


def log_error(y_true, y_pred):
    """A custom loss with log(0) for a prediction of exactly 0 (a relu output)."""
    return keras.ops.mean(keras.ops.square(keras.ops.log(y_pred) - keras.ops.log(y_true)), -1)


def test_a_loss_function_bug_in_one_output_of_two_is_named_by_its_output() -> None:
    """The replay turned the two outputs' predictions into one array and compute_loss
    raised 'Too few leaves for PyTreeSpec' out of fit: the guard crashed the run it was
    to explain."""
    x, y = well_conditioned(rows=128)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    outputs = [
        keras.layers.Dense(1, name="level")(inputs),
        keras.layers.Dense(1, activation="relu", name="rate")(inputs),
    ]
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=["mse", log_error],
                  loss_weights=[1.0, 0.5])  # fmt: skip
    guard = NanGuard()
    with pytest.raises(NonFiniteTrainingError, match="cause loss function") as raised:
        model.fit(x, [y, np.exp(x[:, :1])], batch_size=16, epochs=2, verbose=0,
                  callbacks=[guard])  # fmt: skip
    [event] = guard.events
    assert (event.cause, event.action) == ("loss_function", "stopped")
    assert event.evidence["loss"] == "log_error of output 'rate'"
    assert event.evidence["predictions"] and set(event.evidence["predictions"]) == {0.0}
    assert "log_error of output 'rate'" in str(raised.value) and all_finite(model)


def test_a_bad_row_beside_a_string_input_is_one_event_with_a_count() -> None:
    """A row was known by the bytes of its values, and TensorFlow's strings come to NumPy
    as objects whose bytes are their addresses: the same bad row was a new event at every
    epoch instead of one event counted."""
    tf = pytest.importorskip("tensorflow")
    x, y = well_conditioned(rows=64)
    x[11, 0] = np.nan
    cities = np.array(["paris", "rome", "oslo", "lima"])[np.arange(64) % 4][:, None]
    keras.utils.set_random_seed(0)
    city, numbers = keras.Input((1,), dtype="string", name="city"), keras.Input((3,), name="num")
    lookup = keras.layers.StringLookup(vocabulary=["paris", "rome", "oslo", "lima"],
                                       output_mode="one_hot")(city)  # fmt: skip
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(lookup), numbers])
    model = keras.Model({"city": city, "num": numbers}, keras.layers.Dense(1)(joined))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    data = tf.data.Dataset.from_tensor_slices(({"city": cities, "num": x}, y)).batch(16)
    guard = NanGuard()
    history = model.fit(checked(data), epochs=3, verbose=0, callbacks=[guard])
    [event] = guard.events
    assert (event.rows, event.columns, event.count) == ((11,), ("x['num'][:, 0]",), 3)
    assert history.history["bad_rows"] == [1, 1, 1] and all_finite(model)


def test_two_guards_in_one_fit_are_refused_and_the_model_trains_on() -> None:
    """The second guard wrapped the first one's step and fit crashed with KeyError 'no_rows'."""
    x, y = well_conditioned(rows=64)
    model = linear_model(3, keras.optimizers.SGD(0.1))
    with pytest.raises(StablefitInputError, match="2 NanGuards; pass one"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[NanGuard(), NanGuard()])
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[NanGuard()])
    assert history.history["skipped_steps"] == [0, 0] and all_finite(model)


def test_one_row_of_finite_but_absurd_values_is_bad_data_not_exploding_gradients() -> None:
    """A 1e30 in float64 data is finite in float32, so no row mask leaves it out, but its
    square overflows: the guard took it for exploding gradients at every epoch, tightened
    clipnorm from 20 to 1 and stopped training at epoch 6 advising to clip gradients."""
    x, y = well_conditioned(rows=256)
    x, y = x.astype("float64"), y.astype("float64")  # as pandas gives them
    reference = linear_model(3, keras.optimizers.SGD(0.1))
    reference.fit(np.delete(x, 20, 0), np.delete(y, 20), batch_size=16, epochs=8, verbose=0)
    x[20, 1] = 1e30
    model, guard = linear_model(3, keras.optimizers.SGD(0.1)), NanGuard()
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0, callbacks=[guard])
    [event] = guard.events
    assert (event.cause, event.rows, event.columns, event.count) == ("data", (20,), ("x[:, 1]",), 8)
    assert "values up to 1e+30" in event.message and model.optimizer.clipnorm is None
    assert history.history["skipped_steps"] == [1] * 8 and all_finite(model)
    clean = np.delete(x, 20, 0), np.delete(y, 20)
    assert model.evaluate(*clean, verbose=0) <= 1.5 * reference.evaluate(*clean, verbose=0)


def test_targets_all_beyond_what_float32_squares_are_precision_not_data() -> None:
    x, y = well_conditioned(rows=128)
    model, guard = linear_model(3, keras.optimizers.Adam(0.01)), NanGuard(on_failure="warn")
    model.fit(x, y * 1e20, batch_size=32, epochs=1, verbose=0, callbacks=[guard])
    [event] = guard.events
    assert (event.cause, event.action) == ("precision", "stopped")
    assert "scale the targets" in event.fix and all_finite(model)


def two_output_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = [
        keras.layers.Dense(1, name="price")(hidden),
        keras.layers.Dense(1, name="volume")(hidden),
    ]
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05), loss=["mse", "mae"], loss_weights=[1.0, 0.5]
    )
    return model


def test_a_nan_target_of_one_output_of_two_is_named_with_the_output() -> None:
    """It was named 'target 1': the place among the flattened targets, 0- or 1-based?"""
    x, price = well_conditioned(rows=256)
    volume = (x @ np.array([0.3, 0.3, -1.0]) + 1).astype("float32")
    clean = two_output_model()
    clean.fit(x, [price, volume], batch_size=16, epochs=5, shuffle=False, verbose=0)
    broken = volume.copy()
    broken[37] = np.nan
    model, guard = two_output_model(), NanGuard()
    history = model.fit(x, [price, broken], batch_size=16, epochs=5, verbose=0, callbacks=[guard])
    [event] = guard.events
    assert (event.cause, event.rows, event.columns) == (
        "data",
        (37,),
        ("target 1 (output 'volume')",),
    )
    assert history.history["bad_rows"] == [1] * 5 and all_finite(model)
    loss, reference = (m.evaluate(x, [price, volume], verbose=0)[0] for m in (model, clean))
    assert loss <= 1.5 * reference


def normalized_model(x) -> keras.Model:
    normalize = keras.layers.Normalization(name="scaling")
    normalize.adapt(x)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), normalize, keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_a_normalization_adapted_on_a_nan_row_is_named_with_the_fix() -> None:
    """The guard said 're-initialize the model (or load finite weights)': the mean is NaN
    because Normalization.adapt() averaged a NaN row, which no re-initialisation fixes."""
    x, y = well_conditioned(rows=128)
    x[7, 1] = np.nan
    with pytest.raises(NonFiniteTrainingError, match=r"scaling/mean is already nan") as raised:
        normalized_model(x).fit(x, y, epochs=1, verbose=0, callbacks=[NanGuard()])
    assert "'scaling' computed it in adapt() from data holding NaN" in str(raised.value)
    # The fix it gives works: adapted on the finite rows, the guard leaves the NaN row out.
    model, guard = normalized_model(x[np.isfinite(x).all(axis=1)]), NanGuard()
    model.fit(x, y, epochs=3, verbose=0, callbacks=[guard])
    assert [(e.cause, e.rows) for e in guard.events] == [("data", (7,))] and all_finite(model)


def test_a_validation_value_beyond_float32_is_said_with_its_row() -> None:
    """1e39 is finite in float64 data but inf in float32: val_loss was inf and the guard
    said only 'the validation data or the model's predictions on it hold NaN or inf'."""
    x, y = well_conditioned(rows=128)
    x_val, y_val = x[:32].astype("float64"), y[:32].astype("float64")
    x_val[9, 2] = 1e39
    model = linear_model(3, keras.optimizers.SGD(0.1))
    with pytest.warns(StablefitWarning, match="val_loss not finite") as caught:
        model.fit(x, y, epochs=1, verbose=0, validation_data=(x_val, y_val),
                  callbacks=[NanGuard()])  # fmt: skip
    [said] = [str(w.message) for w in caught if "val_loss not finite" in str(w.message)]
    assert "row 9 of x (values beyond float32's range)" in said


def test_one_absurd_sample_weight_is_named_as_the_weight_not_the_learning_rate() -> None:
    """A weight of 1e10 (an inverse propensity near 0) made the batch's curvature 1e9: the
    guard stopped training at the first event, cause learning rate, telling the user to
    standardize inputs that were standard normal."""
    x, y = well_conditioned(rows=256)
    weights = np.ones(len(x), dtype="float32")
    weights[40] = 1e10
    reference = linear_model(3, keras.optimizers.SGD(0.1))
    reference.fit(x, y, batch_size=16, epochs=4, verbose=0)
    model, guard = linear_model(3, keras.optimizers.SGD(0.1)), NanGuard()
    model.fit(x, y, sample_weight=weights, batch_size=16, epochs=4, verbose=0, callbacks=[guard])
    [event] = guard.events
    assert (event.cause, event.rows, event.columns, event.count) == (
        "data",
        (40,),
        ("sample_weight",),
        4,
    )
    assert "values up to 1e+10" in event.message and "ordinary size" in event.fix
    assert model.evaluate(x, y, verbose=0) <= 1.5 * reference.evaluate(x, y, verbose=0)
