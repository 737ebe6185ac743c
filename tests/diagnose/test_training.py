"""The training forecast: the facts measured in real Keras (issue 3) as assertions."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from stablefit.diagnose.optimizers import OptimizerConfig, UpdateRule
from stablefit.diagnose.simulation import Problem, simulate
from stablefit.diagnose.training import forecast_training
from stablefit.errors import StablefitInputError
from stablefit.summary import Summary

EXAMPLE_1 = (np.array([[1, 1e6], [2, 2e6], [3, 3e6]]), np.array([10.0, 20.0, 30.0]))
EXAMPLE_3 = (np.array([[1, 10], [2, 20], [3, 30], [4, 1e6]]), np.array([10.0, 20.0, 30.0, 40.0]))


def summary_of(X: np.ndarray, y: np.ndarray) -> Summary:
    return Summary.from_arrays(X, y)


def standard_scaled(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(axis=0)) / X.std(axis=0)


def robust_scaled(X: np.ndarray) -> np.ndarray:
    q1, median, q3 = np.percentile(X, [25, 50, 75], axis=0)
    return (X - median) / (q3 - q1)


# -- the seed's examples ---------------------------------------------------------------------


def test_example_1_adam_stalls_far_from_the_optimum_and_never_turns_nan() -> None:
    forecast = forecast_training(summary_of(*EXAMPLE_1), optimizer="adam")
    assert forecast.learning_rate == 0.001
    assert forecast.outcome == "stalls"
    assert forecast.first_nonfinite_epoch is None
    assert forecast.first_nan_epoch is None
    assert forecast.seeds_nonfinite == 0
    assert 1e11 <= forecast.predicted_final_loss <= 1e13
    assert forecast.optimal_loss == pytest.approx(0.0, abs=1e-9)
    assert forecast.max_stable_learning_rate is None
    assert "adam" in forecast.stability_note


def test_example_1_sgd_is_inf_at_epoch_3_and_nan_at_epoch_6_for_every_seed() -> None:
    forecast = forecast_training(summary_of(*EXAMPLE_1), optimizer="sgd")
    assert forecast.learning_rate == 0.01
    assert forecast.outcome == "diverges"
    assert forecast.first_nonfinite_epoch == 3
    assert forecast.first_nonfinite_epoch_range == (3, 3)
    assert forecast.first_nan_epoch == 6
    assert forecast.seeds_nonfinite == len(forecast.seeds) == 5
    assert forecast.predicted_final_loss is None
    assert any("predicted_final_loss is null" in note for note in forecast.notes)
    assert forecast.exact


def test_example_1_stability_bound_and_the_feature_behind_it() -> None:
    forecast = forecast_training(summary_of(*EXAMPLE_1), optimizer="sgd")
    assert forecast.lambda_max == pytest.approx(9.333e12, rel=1e-3)
    assert forecast.max_stable_learning_rate == pytest.approx(2.14e-13, rel=1e-2)
    assert forecast.max_stable_learning_rate == pytest.approx(2 / forecast.lambda_max)
    assert forecast.dominant_feature == "x1"  # the 1e6-scale column


def test_example_1_sgd_below_the_bound_fits() -> None:
    forecast = forecast_training(summary_of(*EXAMPLE_1), optimizer="sgd", learning_rate=1e-13)
    assert forecast.outcome == "converges"
    assert forecast.first_nonfinite_epoch is None
    assert forecast.predicted_final_loss <= 1e-6 * forecast.initial_loss
    assert forecast.recommended.scaling == "none"
    assert forecast.recommended.learning_rate == 1e-13


def test_example_2_standard_scaler_adam_stays_finite_near_400() -> None:
    X, y = EXAMPLE_1
    forecast = forecast_training(
        summary_of(standard_scaled(X), y), optimizer="adam", learning_rate=0.01
    )
    assert forecast.first_nonfinite_epoch is None
    assert forecast.outcome == "stalls"
    assert 300 <= forecast.predicted_final_loss <= 500
    assert forecast.optimal_loss == pytest.approx(0.0, abs=1e-9)


def test_example_3_robust_scaler_sgd_stays_finite_near_50() -> None:
    X, y = EXAMPLE_3
    forecast = forecast_training(summary_of(robust_scaled(X), y), optimizer="sgd")
    assert forecast.first_nonfinite_epoch is None
    assert 40 <= forecast.predicted_final_loss <= 60


def test_example_3_unscaled_sgd_is_inf_at_epoch_3_and_nan_at_epoch_6() -> None:
    forecast = forecast_training(summary_of(*EXAMPLE_3), optimizer="sgd")
    assert forecast.outcome == "diverges"
    assert forecast.first_nonfinite_epoch_range == (3, 3)
    assert forecast.first_nan_epoch == 6


# -- the recommendation ----------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_recommendation_converges_when_re_forecast_on_scaled_data(optimizer: str) -> None:
    X, y = EXAMPLE_1
    recommended = forecast_training(summary_of(X, y), optimizer=optimizer).recommended
    assert recommended.outcome == "converges"
    assert recommended.scaling == "standardize"
    assert "Normalization" in recommended.code
    assert f"learning_rate={recommended.learning_rate!r}" in recommended.code
    again = forecast_training(
        summary_of(standard_scaled(X), y),
        optimizer=recommended.optimizer,
        learning_rate=recommended.learning_rate,
        epochs=recommended.epochs,
    )
    assert again.outcome == "converges"
    assert again.predicted_final_loss == pytest.approx(recommended.predicted_final_loss)


def test_a_recommendation_after_dropping_bad_rows_reads_and_standardizes() -> None:
    """With a NaN row, the fix read 'Train with drop the rows with NaN/inf, then standardize
    scaling, SGD ...' and its code did not standardize (it compared the scaling to
    'standardize' exactly)."""
    from stablefit.diagnose.checks.forecast import forecast_findings

    X, y = EXAMPLE_1
    X, y = np.vstack([X, [[4.0, np.nan]]]), np.append(y, 40.0)
    forecast = forecast_training(summary_of(X, y), optimizer="sgd")
    recommended = forecast.recommended
    assert recommended.scaling == "drop the rows with NaN/inf, then standardize"
    assert "Normalization" in recommended.code and "X, y = X[finite], y[finite]" in recommended.code
    namespace = {"X": X, "y": y}
    exec(recommended.code.split("normalizer =")[0], namespace)  # its data preparation
    np.testing.assert_array_equal(namespace["X"], X[:3])
    # Values beyond float32's range are not rows to drop: every row of this file has one,
    # and the fix dropped them all. Scaled in float64 they train.
    X, y = np.array([[1.0, 2e38], [2.0, 5e38], [3.0, 3e38], [4.0, 9e38]]), np.arange(4.0)
    recommended = forecast_training(summary_of(X, y), optimizer="sgd").recommended
    assert recommended.scaling == "standardize"
    assert "finite" not in recommended.code and "StandardScaler" in recommended.code
    (finding,) = [f for f in forecast_findings(forecast, {}) if f.code == "SF201"]
    assert finding.fix.startswith("Drop the rows with NaN/inf, then train with standardized ")


def test_recommended_code_runs_as_python_source() -> None:
    code = forecast_training(summary_of(*EXAMPLE_1), optimizer="sgd").recommended.code
    compile(code, "<recommended>", "exec")


def test_large_offsets_are_standardized_in_float64_in_the_code() -> None:
    rng = np.random.default_rng(3)
    t = 1.7e9 + rng.uniform(0, 1000, 40)
    forecast = forecast_training(summary_of(t[:, None], 1e-3 * (t - 1.7e9)), optimizer="sgd")
    assert forecast.outcome == "diverges"
    assert "StandardScaler" in forecast.recommended.code


# -- stability bounds against the simulation ---------------------------------------------------


@pytest.mark.parametrize(
    ("momentum", "nesterov"), [(0.0, False), (0.5, False), (0.9, False), (0.9, True)]
)
def test_sgd_bound_separates_stable_from_diverging_learning_rates(
    momentum: float, nesterov: bool
) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)) * np.array([1.0, 3.0, 10.0])
    y = X @ np.array([1.0, 2.0, -1.0]) + 0.5 + rng.standard_normal(64)
    summary = summary_of(X, y)
    common = dict(optimizer="sgd", batch_size=64, epochs=400, momentum=momentum)
    bound = forecast_training(
        summary, learning_rate=1e-3, nesterov=nesterov, **common
    ).max_stable_learning_rate
    expected = 2 * (1 + momentum) / (1 + 2 * momentum) if nesterov else 2 * (1 + momentum)
    lam = forecast_training(summary, optimizer="sgd").lambda_max
    assert bound == pytest.approx(expected / lam)
    below = forecast_training(summary, learning_rate=0.95 * bound, nesterov=nesterov, **common)
    above = forecast_training(summary, learning_rate=1.05 * bound, nesterov=nesterov, **common)
    assert below.outcome != "diverges"
    assert above.outcome == "diverges"


def test_without_intercept_the_hessian_is_two_x_transpose_x_over_n() -> None:
    X, y = EXAMPLE_3
    forecast = forecast_training(summary_of(X, y), optimizer="sgd", intercept=False)
    expected = np.linalg.eigvalsh(2 / len(y) * X.T @ X).max()
    assert forecast.lambda_max == pytest.approx(expected, rel=1e-9)
    assert forecast.recommended is not None


# -- data Keras cannot train on ---------------------------------------------------------------


def test_rows_with_nan_make_the_loss_nan_at_epoch_1() -> None:
    X = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 1.0], [4.0, 0.5]])
    forecast = forecast_training(summary_of(X, np.array([1.0, 2.0, 3.0, 4.0])))
    assert forecast.outcome == "diverges"
    assert forecast.first_nonfinite_epoch == 1
    assert forecast.first_nan_epoch == 1
    assert any("1 rows hold NaN or inf" in note for note in forecast.notes)


def test_values_beyond_float32_range_make_the_loss_nonfinite_at_epoch_1() -> None:
    X = np.array([[1.0], [2.0], [1e39]])
    forecast = forecast_training(summary_of(X, np.array([1.0, 2.0, 3.0])))
    assert forecast.first_nonfinite_epoch == 1
    assert any("exceed the float32 range" in note for note in forecast.notes)


def test_squares_beyond_float64_give_nonfinite_at_epoch_1_and_strict_json() -> None:
    X = np.array([[1.0], [2.0], [1e200]])
    forecast = forecast_training(summary_of(X, np.array([1.0, 2.0, 3.0])))
    assert forecast.outcome == "diverges"
    assert forecast.first_nonfinite_epoch == 1
    assert forecast.dominant_feature == "x0"
    data = json.loads(json.dumps(forecast.to_dict(), allow_nan=False))
    assert data["lambda_max"] is None and data["optimal_loss"] is None


# -- minibatches and the result's shape -------------------------------------------------------


def test_minibatches_are_approximate_and_say_so() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 2))
    y = X @ np.array([1.0, -1.0]) + rng.standard_normal(200)
    forecast = forecast_training(summary_of(X, y), optimizer="sgd", batch_size=32, epochs=20)
    assert forecast.steps_per_epoch == 7
    assert not forecast.exact
    assert "full-data gradient" in forecast.approximation
    lo, hi = forecast.predicted_final_loss_range
    assert lo <= forecast.predicted_final_loss <= hi


@pytest.mark.parametrize(
    ("momentum", "nesterov", "rate"),
    [(0.0, False, 0.01), (0.0, False, 0.04), (0.9, False, 0.005), (0.9, True, 0.005)],
)
def test_closed_form_epochs_match_step_by_step_simulation(
    momentum: float, nesterov: bool, rate: float
) -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((2000, 3)) * np.array([1.0, 2.0, 5.0])
    y = X @ np.array([1.0, 2.0, 3.0]) + 4.0 + rng.standard_normal(2000)
    problem = Problem.of_summary(summary_of(X, y), intercept=True)
    config = OptimizerConfig("sgd", rate, momentum, nesterov)
    common = dict(batch_size=32, epochs=30, dtype=np.float32, seeds=(0, 1))
    stepped = simulate(problem, config, **common)
    closed = simulate(problem, config, max_steps=100, **common)
    assert not stepped.closed_form and closed.closed_form and closed.stepped_epochs == 1
    # Equal up to float32 rounding and the smaller last batch (closed form weighs all equally).
    np.testing.assert_allclose(closed.epoch_loss, stepped.epoch_loss, rtol=5e-3)


def test_closed_form_finds_the_overflow_epoch_of_a_diverging_run() -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((2000, 3)) * np.array([1.0, 2.0, 5.0])
    y = X @ np.array([1.0, 2.0, 3.0]) + rng.standard_normal(2000)
    problem = Problem.of_summary(summary_of(X, y), intercept=True)
    config = OptimizerConfig("sgd", 0.09)
    common = dict(batch_size=32, epochs=10, dtype=np.float32, seeds=(0,))
    stepped = simulate(problem, config, **common).epoch_loss[0]
    closed = simulate(problem, config, max_steps=10, **common).epoch_loss[0]
    first = np.flatnonzero(~np.isfinite(stepped))[0]
    assert np.flatnonzero(~np.isfinite(closed))[0] == first
    assert np.isnan(closed[first + 1 :]).all()


def test_a_loss_that_grows_tenfold_diverges_even_while_finite() -> None:
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 2))
    y = X @ np.array([1.0, -1.0]) + rng.standard_normal(50)
    summary = summary_of(X, y)
    bound = forecast_training(summary, optimizer="sgd").max_stable_learning_rate
    forecast = forecast_training(
        summary, optimizer="sgd", learning_rate=1.5 * bound, batch_size=50, epochs=20
    )
    assert forecast.outcome == "diverges"
    assert forecast.first_nonfinite_epoch is None
    assert forecast.predicted_final_loss > 10 * forecast.initial_loss
    assert any("turns inf around epoch" in note for note in forecast.notes)
    later = forecast_training(
        summary, optimizer="sgd", learning_rate=1.5 * bound, batch_size=50, epochs=400
    )
    estimate = int(next(n for n in forecast.notes if "around epoch" in n).split()[-1])
    assert abs(later.first_nonfinite_epoch - estimate) <= 0.1 * estimate


def test_minibatch_noise_raises_the_final_loss_more_for_larger_rates_and_smaller_batches() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 4))
    y = X @ np.array([1.0, -1.0, 2.0, 0.5]) + rng.standard_normal(400)
    summary = summary_of(X, y)
    bound = forecast_training(summary, optimizer="sgd").max_stable_learning_rate

    def final(rate: float, batch_size: int) -> float:
        forecast = forecast_training(
            summary, optimizer="sgd", learning_rate=rate, batch_size=batch_size, epochs=30
        )
        return forecast.predicted_final_loss - forecast.optimal_loss

    full = final(0.5 * bound, 400)
    assert full < 1e-6
    assert final(0.5 * bound, 8) > final(0.5 * bound, 32) > final(0.5 * bound, 128) > full
    assert final(0.8 * bound, 8) > final(0.4 * bound, 8) > final(0.1 * bound, 8)


def test_minibatch_noise_of_a_target_near_1e115_has_no_overflow_warning() -> None:
    """Its losses are near 1e230, their squares beyond float64 (found by the fuzz suite
    through ``doctor``: a RuntimeWarning, reported as a bug)."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 1)) * 1e7
    y = rng.standard_normal(40) * 1e115
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forecast = forecast_training(
            summary_of(X, y), optimizer="sgd", batch_size=8, epochs=3, dtype="float64"
        )
    assert forecast.outcome == "diverges"


def test_minibatches_past_the_bound_overflow_after_a_few_epochs_not_at_once() -> None:
    rng = np.random.default_rng(7)
    X = rng.standard_normal((200, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 5.0 + 0.3 * rng.standard_normal(200)
    summary = summary_of(X, y)
    bound = forecast_training(summary, optimizer="sgd").max_stable_learning_rate
    forecast = forecast_training(
        summary, optimizer="sgd", learning_rate=1.9 * bound, batch_size=50, epochs=20
    )
    assert forecast.outcome == "diverges"
    assert 5 <= forecast.first_nonfinite_epoch <= 15


def test_to_dict_is_strict_json_with_nulls_for_missing_numbers() -> None:
    forecast = forecast_training(summary_of(*EXAMPLE_1), optimizer="sgd")
    data = json.loads(json.dumps(forecast.to_dict(), allow_nan=False))
    assert data["first_nonfinite_epoch"] == 3
    assert data["predicted_final_loss"] is None
    assert data["first_nonfinite_epoch_range"] == [3, 3]
    assert data["recommended"]["outcome"] == "converges"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "lbfgs"}, "optimizer='lbfgs'"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"learning_rate": float("nan")}, "learning_rate=nan"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"epochs": 0}, "epochs=0"),
        ({"dtype": "float16"}, "dtype='float16'"),
        ({"optimizer": "adam", "momentum": 0.9}, "momentum=0.9"),
        ({"optimizer": "adam", "nesterov": True}, "nesterov=True"),
        ({"optimizer": "sgd", "momentum": 1.5}, "momentum=1.5"),
        ({"seeds": ()}, "seeds=()"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(StablefitInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        forecast_training(summary_of(*EXAMPLE_1), **kwargs)


def test_a_summary_without_target_is_refused() -> None:
    with pytest.raises(StablefitInputError, match="needs a target"):
        forecast_training(Summary.from_arrays(EXAMPLE_1[0]))


# -- the update rules against Keras's own ----------------------------------------------------


@pytest.mark.keras
@pytest.mark.parametrize(
    ("name", "momentum", "nesterov"),
    [
        ("sgd", 0.0, False),
        ("sgd", 0.9, False),
        ("sgd", 0.9, True),
        ("adam", 0.0, False),
        ("adamw", 0.0, False),
        ("rmsprop", 0.0, False),
        ("rmsprop", 0.5, False),
        ("adagrad", 0.0, False),
    ],
)
def test_update_rules_match_keras_bit_for_bit(name: str, momentum: float, nesterov: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(5)
    theta0 = rng.standard_normal(3).astype(np.float32)
    grads = (rng.standard_normal((6, 3)) * np.array([1e-3, 1.0, 1e3])).astype(np.float32)
    config = OptimizerConfig(name, 0.01, momentum, nesterov)
    kwargs = {"learning_rate": 0.01}
    if momentum:
        kwargs["momentum"] = momentum
    if nesterov:
        kwargs["nesterov"] = True
    classes = {
        "sgd": keras.optimizers.SGD,
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop,
        "adagrad": keras.optimizers.Adagrad,
    }
    optimizer = classes[name](**kwargs)
    variable = keras.Variable(theta0)
    rule = UpdateRule(config, (1, 3), np.float32)
    theta = theta0[None, :].copy()
    for grad in grads:
        optimizer.apply([keras.ops.convert_to_tensor(grad)], [variable])
        theta = rule.apply(theta, grad[None, :])
        np.testing.assert_allclose(theta[0], np.asarray(variable), rtol=2e-7, atol=0)
