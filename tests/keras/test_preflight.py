"""preflight: stablefit's diagnosis read from a compiled Keras model."""

from __future__ import annotations

import numpy as np
import pytest
from keras_cases import keras, linear_model, seed_example_1, seed_example_3, well_conditioned

from stablefit.diagnose import diagnose
from stablefit.errors import StablefitInputError
from stablefit.keras import preflight
from stablefit.keras._preflight import hessian_max_eigenvalue

pytestmark = pytest.mark.keras


def assert_same_forecast(ours, theirs) -> None:
    assert ours.codes == theirs.codes
    a, b = ours.training, theirs.training
    assert (a.optimizer, a.learning_rate, a.momentum, a.nesterov) == (
        b.optimizer,
        b.learning_rate,
        b.momentum,
        b.nesterov,
    )
    assert a.outcome == b.outcome
    assert a.first_nonfinite_epoch == b.first_nonfinite_epoch
    assert a.lambda_max == pytest.approx(b.lambda_max, rel=1e-9)
    if b.predicted_final_loss is None:
        assert a.predicted_final_loss is None
    else:
        assert a.predicted_final_loss == pytest.approx(b.predicted_final_loss, rel=1e-9)


@pytest.mark.parametrize(
    ("optimizer", "name", "rate"),
    [
        (lambda: keras.optimizers.Adam(), "adam", 0.001),  # the seed as written
        (lambda: keras.optimizers.SGD(0.01), "sgd", 0.01),
    ],
    ids=["adam", "sgd"],
)
def test_example_1_agrees_with_diagnose(optimizer, name: str, rate: float) -> None:
    x, y = seed_example_1()
    model = linear_model(2, optimizer())
    ours = preflight(model, x, y)
    theirs = diagnose(x, y, optimizer=name, learning_rate=rate, batch_size=32, epochs=100)
    assert_same_forecast(ours, theirs)
    if name == "sgd":
        assert ours.training.outcome == "diverges"
        assert ours.training.first_nonfinite_epoch == 3


def test_example_3_unscaled_sgd_agrees_with_diagnose() -> None:
    x, y = seed_example_3()
    model = linear_model(2, "sgd")
    ours = preflight(model, x, y, batch_size=2, epochs=50)
    theirs = diagnose(x, y, optimizer="sgd", learning_rate=0.01, batch_size=2, epochs=50)
    assert_same_forecast(ours, theirs)
    assert ours.training.outcome == "diverges"


def test_example_2_normalization_layer_is_folded_into_the_data() -> None:
    # The seed's Example 2 scales with StandardScaler outside the model; the same inside it
    # (a Normalization layer) must give the forecast of the scaled data.
    x, y = seed_example_1()
    normalization = keras.layers.Normalization()
    normalization.adapt(x)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), normalization, keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    ours = preflight(model, x, y)
    scaled = (x - x.mean(axis=0)) / x.std(axis=0)
    theirs = diagnose(scaled, y, optimizer="adam", learning_rate=0.01)
    assert ours.training.outcome == theirs.training.outcome == "stalls"
    assert ours.training.predicted_final_loss == pytest.approx(
        theirs.training.predicted_final_loss, rel=1e-5
    )
    assert "SF121" not in ours.codes  # the model sees standardized features


def test_momentum_and_nesterov_are_read_from_the_optimizer() -> None:
    x, y = well_conditioned(rows=64)
    model = linear_model(3, keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    ours = preflight(model, x, y, batch_size=16, epochs=20)
    theirs = diagnose(
        x,
        y,
        optimizer="sgd",
        learning_rate=0.05,
        momentum=0.9,
        nesterov=True,
        batch_size=16,
        epochs=20,
    )
    assert (ours.training.momentum, ours.training.nesterov) == (0.9, True)
    assert_same_forecast(ours, theirs)


def test_hessian_estimate_matches_the_exact_eigenvalue_on_a_linear_model() -> None:
    x, y = seed_example_3()
    model = linear_model(2, "sgd")
    exact = diagnose(x, y, optimizer="sgd").training.lambda_max
    estimate = hessian_max_eigenvalue(model, x.astype(float), y.astype(float))
    assert estimate == pytest.approx(exact, rel=1e-4)


def test_a_nonlinear_model_gets_data_checks_and_a_labelled_estimate() -> None:
    x, y = seed_example_1()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    ours = preflight(model, x, y)
    assert ours.training is None
    assert {"SF113", "SF121"} <= set(ours.codes)
    assert "SF201" not in ours.codes  # the exact forecast covers linear models only
    (estimate,) = ours.by_code("SF302")
    assert "estimate" in estimate.title.lower() and "estimate" in estimate.message
    bound = estimate.evidence["sgd_max_stable_learning_rate_estimate"]
    assert bound == pytest.approx(2.0 / estimate.evidence["lambda_max_estimate"])
    assert bound < 0.01 and estimate.severity == "warning"


def test_nonfinite_weights_are_an_error_finding() -> None:
    x, y = seed_example_1()
    model = linear_model(2, "sgd")
    kernel = model.layers[-1].kernel
    kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))
    (finding,) = preflight(model, x, y).by_code("SF301")
    assert finding.severity == "error" and "kernel" in finding.message


def test_an_uncompiled_model_is_refused_with_the_fix() -> None:
    x, y = seed_example_1()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(StablefitInputError, match=r"model.compile"):
        preflight(model, x, y)


def test_a_column_count_mismatch_is_named() -> None:
    x, y = seed_example_1()
    model = linear_model(3, "sgd")
    with pytest.raises(StablefitInputError, match=r"x has 2 feature columns but the model takes 3"):
        preflight(model, x, y)


def test_a_schedule_is_forecast_at_its_current_value_and_says_so() -> None:
    x, y = seed_example_1()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=100,
                                                           decay_rate=0.9)  # fmt: skip
    ours = preflight(linear_model(2, keras.optimizers.SGD(schedule)), x, y)
    assert ours.training.learning_rate == 0.01
    assert any("schedule" in note for note in ours.training.notes)
    assert_same_forecast(ours, diagnose(x, y, optimizer="sgd", learning_rate=0.01))
