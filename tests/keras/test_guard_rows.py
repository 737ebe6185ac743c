"""NanGuard names a bad row by its index in the user's data, for each kind of input to fit.

No ``data=`` here: the guard finds the rows itself (arrays and DataFrames by their values,
a ``PyDataset`` by the index Keras asked it for, a stream marked with ``checked`` by the
rows the compiled step counted). Each row holds a NaN or inf at a known place, every
epoch: it is named once, with its column, and counted; training goes on. Trained for real
with tf.keras on the CPU.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pandas as pd
import pytest
from keras_cases import all_finite, keras, linear_model, well_conditioned

from stablefit.errors import StablefitInputError, StablefitWarning
from stablefit.keras import NanGuard, checked

pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings("ignore::stablefit.errors.StablefitWarning"),
]

tf = pytest.importorskip("tensorflow")

ROWS, BATCH, EPOCHS = 128, 16, 2


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    """128 rows, 3 features; row 37 has a NaN in its second feature."""
    x, y = well_conditioned(rows=ROWS)
    x[37, 1] = np.nan
    return x, y


def train(inputs, targets=None, **fit_options):
    model, guard = linear_model(3, keras.optimizers.SGD(0.1)), NanGuard()
    history = model.fit(inputs, targets, epochs=EPOCHS, verbose=0, callbacks=[guard], **fit_options)
    assert all_finite(model) and history.history["bad_rows"] == [1] * EPOCHS
    assert np.isfinite(history.history["loss"]).all()
    [event] = guard.events  # the same row every epoch: one event, counted
    assert (event.cause, event.action, event.count) == ("data", "masked", EPOCHS)
    return event


def test_a_numpy_row_is_named_by_its_index_in_x_whatever_the_shuffling(data) -> None:
    x, y = data
    y[90] = np.inf
    model, guard = linear_model(3, keras.optimizers.SGD(0.1)), NanGuard()
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, callbacks=[guard])
    assert history.history["bad_rows"] == [2] * EPOCHS and all_finite(model)
    named = {event.rows: event for event in guard.events}
    assert sorted(named) == [(37,), (90,)] and all(e.count == EPOCHS for e in guard.events)
    assert named[(37,)].columns == ("x[:, 1]",) and named[(90,)].columns == ("y",)
    assert "row 37 of the data with NaN or inf in x[:, 1]" in named[(37,)].message


def test_a_dataframe_row_is_named_by_position_and_index_label_with_its_column(data) -> None:
    x, y = data
    frame = pd.DataFrame(x, columns=["age", "income", "rate"], index=np.arange(1000, 1128))
    event = train(frame, pd.Series(y, index=frame.index), batch_size=BATCH)
    assert (event.rows, event.columns) == ((37,), ("income",))
    assert event.evidence["index_labels"] == [1037]
    assert "row 37 of the data (index 1037) with NaN or inf in income" in event.message


class Batches(keras.utils.PyDataset):
    """``x``, ``y`` in batches of 16 (dataset[k] holds rows 16k to 16k + 15)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, **options) -> None:
        super().__init__(**options)
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x) // BATCH

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.x[k * BATCH : (k + 1) * BATCH], self.y[k * BATCH : (k + 1) * BATCH]


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_py_dataset_row_is_named_by_the_batch_keras_asked_for(data, shuffle) -> None:
    event = train(Batches(*data), shuffle=shuffle)
    # Row 37 is row 5 of dataset[2], whichever step Keras's shuffling put it at.
    assert event.evidence["dataset_rows"] == [[2, 5]] and event.columns == ("x[:, 1]",)
    assert "row 5 of dataset[2] with NaN or inf in x[:, 1]" in event.message


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_py_dataset_read_by_worker_threads_names_the_row(data, shuffle) -> None:
    """With workers=2 the batches are fetched ahead, in any order: the row was named only
    with shuffle=False, by the step's place in the epoch."""
    event = train(Batches(*data, workers=2), shuffle=shuffle)
    assert event.evidence["dataset_rows"] == [[2, 5]] and event.columns == ("x[:, 1]",)
    assert "row 5 of dataset[2] with NaN or inf in x[:, 1]" in event.message


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_py_dataset_read_by_worker_processes_never_names_a_wrong_row(data, shuffle) -> None:
    """The processes fetch batches in an order shuffled out of the guard's sight: with
    shuffle=True no row of the dataset is named, and the message says why and what names
    it (it said '1 row(s) with NaN or inf', nothing more)."""
    event = train(Batches(*data, workers=2, use_multiprocessing=True), shuffle=shuffle)
    if shuffle:
        assert "dataset_rows" not in event.evidence and event.evidence["batch_positions"] == [5]
        assert event.message.startswith("row 5 of its batch (not named in your data: worker")
        assert "fit with shuffle=False, or use_multiprocessing=False" in event.message
    else:
        assert event.evidence["dataset_rows"] == [[2, 5]]


class SameRowTwice(Batches):
    """Rows 37 and 53 (row 5 of dataset[2] and of dataset[3]) hold the same values, and
    dataset[2] is served only once dataset[3] was fetched: both are noted at its step."""

    def __init__(self, x, y, **options) -> None:
        super().__init__(x, y, **options)
        self.third_fetched = threading.Event()

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k == 3:
            self.third_fetched.set()
        elif k == 2:
            self.third_fetched.wait(timeout=30)
        return super().__getitem__(k)


def test_rows_of_the_same_values_in_two_fetched_batches_are_not_named_as_one() -> None:
    """Found by their values, such a row was named as row 5 of dataset[2] whichever of the
    two batches the step trained on."""
    x, y = well_conditioned(rows=ROWS)
    x[[37, 53]] = np.nan
    y[53] = y[37]
    model, guard = linear_model(3, keras.optimizers.SGD(0.1)), NanGuard()
    model.fit(SameRowTwice(x, y, workers=2), epochs=1, verbose=0, callbacks=[guard])
    [event] = guard.events  # the same values: one event, seen twice
    assert event.count == 2 and "dataset_rows" not in event.evidence
    assert event.message.startswith("row 5 of dataset[2] or dataset[3] (batches holding rows")


def test_a_checked_tf_dataset_names_the_row_of_the_stream_and_its_column(data) -> None:
    x, y = data
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    event = train(checked(batches, feature_names=["age", "income", "rate"]))
    assert (event.rows, event.columns) == ((37,), ("income",))
    assert "row 37 of the dataset (counted from the start of the epoch)" in event.message


def test_a_checked_generator_names_the_row_counted_from_the_start_of_training(data) -> None:
    x, y = data

    def batches():
        while True:
            for start in range(0, ROWS, BATCH):
                yield x[start : start + BATCH], y[start : start + BATCH]

    event = train(checked(batches()), steps_per_epoch=ROWS // BATCH)
    assert (event.rows, event.columns) == ((37,), ("x[:, 1]",))
    assert "row 37 of the dataset (counted from the start of training)" in event.message


def test_an_unmarked_stream_still_gives_the_rows_place_in_its_batch(data) -> None:
    x, y = data
    event = train(tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH))
    assert event.rows == () and event.evidence["batch_positions"] == [5]
    assert event.message.startswith("row 5 of its batch (not named in your data: mark a tf.data")
    assert "stablefit.keras.checked(dataset)" in event.message


@pytest.mark.parametrize("given", [np.zeros((4, 2)), [1, 2, 3]])
def test_checked_refuses_what_is_not_a_stream(given) -> None:
    with pytest.raises(StablefitInputError, match=r"stablefit\.keras\.checked\("):
        checked(given)


class NaNEpoch(Batches):
    """Every row of the second epoch has a NaN in x."""

    epochs_begun = 0

    def on_epoch_begin(self) -> None:
        self.epochs_begun += 1

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = super().__getitem__(k)
        return (x + np.nan if self.epochs_begun == 2 else x), y


def test_an_epoch_whose_every_step_was_skipped_logs_nan_and_says_why() -> None:
    x, y = well_conditioned(rows=64)
    model, guard = linear_model(3, keras.optimizers.SGD(0.1)), NanGuard()
    dataset = NaNEpoch(x, y)
    with pytest.warns(StablefitWarning, match=r"epoch 2: all 4 of its steps were skipped"):
        history = model.fit(dataset, epochs=3, shuffle=False, verbose=0, callbacks=[guard])
    loss = history.history["loss"]
    # Not Keras's 0.0 for an average of no steps: no value, and said so.
    assert math.isfinite(loss[0]) and math.isnan(loss[1]) and math.isfinite(loss[2])
    assert history.history["skipped_steps"] == [0, 4, 0]
    assert history.history["bad_rows"] == [0, 64, 0] and all_finite(model)
    assert {e.cause for e in guard.events} == {"data"}
    assert "every row of the batch was left out, so its step was skipped" in guard.events[0].message


def test_several_steps_per_execution_still_mask_count_and_name_the_row(data) -> None:
    x, y = data
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", steps_per_execution=4)
    guard = NanGuard()
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, callbacks=[guard])
    assert all_finite(model) and history.history["bad_rows"] == [1] * EPOCHS
    assert np.isfinite(history.history["loss"]).all()
    [event] = guard.events
    assert (event.cause, event.rows, event.count) == ("data", (37,), EPOCHS)


def test_a_bad_target_of_a_model_with_named_outputs_is_named_by_its_key() -> None:
    x, y = well_conditioned(rows=128)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    outputs = {"price": keras.layers.Dense(1)(hidden), "volume": keras.layers.Dense(1)(hidden)}
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss={"price": "mse", "volume": "mse"})
    volume = y.copy()
    volume[40] = np.nan
    guard = NanGuard()
    model.fit(
        x, {"price": y, "volume": volume}, batch_size=32, epochs=1, shuffle=False, verbose=0,
        callbacks=[guard],
    )  # fmt: skip
    [event] = guard.events
    # It was "target 1": the place of 'volume' among the flattened targets.
    assert event.rows == (40,) and event.columns == ("y['volume']",)
    assert "in y['volume']" in event.message and all_finite(model)
