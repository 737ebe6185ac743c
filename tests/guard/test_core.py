"""The framework-neutral guard core: causes, remedies, retry window, best states, events."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stablefit.guard import (
    CAUSES,
    KERAS,
    NEUTRAL,
    TORCH,
    BestStates,
    Context,
    Curvature,
    GuardCore,
    LayerOverflow,
    LossHistory,
    RemedyPolicy,
    Replay,
    RetryWindow,
    Snapshot,
    classify,
    curvature_from_growth,
    geometric_growth,
    power_iteration,
    stable_learning_rate,
)


def sgd_curvature(lambda_max: float) -> Curvature:
    return Curvature(lambda_max, "hessian power iteration", False, 2.0 / lambda_max)


def test_non_finite_inputs_are_data_whatever_else_happened() -> None:
    replay = Replay(bad_positions=(3,), bad_columns=("x[:, 0]",), loss_finite=False)
    verdict = classify(replay, Context(trigger="nonfinite_step", growth=10.0))
    assert verdict.cause == "data"
    assert verdict.evidence["batch_positions"] == [3]
    assert verdict.evidence["columns"] == ["x[:, 0]"]


def test_a_low_precision_overflow_is_precision_and_names_the_layer() -> None:
    overflow = LayerOverflow("dense_big", "float16", 1.3e5, 65504.0)
    verdict = classify(
        Replay(overflow=overflow, predictions_finite=False), Context("nonfinite_step")
    )
    assert verdict.cause == "precision"
    assert "dense_big" in verdict.finding and "65504" in verdict.finding
    assert "float32" in verdict.fix


def test_finite_predictions_with_a_non_finite_loss_blame_the_loss_and_suggest_logits() -> None:
    replay = Replay(loss_finite=False, loss_name="log_loss", loss_value=math.inf,
                    offending_predictions=(0.0, 1.0))  # fmt: skip
    verdict = classify(replay, Context("nonfinite_step", growth=None), KERAS)
    assert verdict.cause == "loss_function"
    assert "from_logits=True" in verdict.fix
    other = classify(Replay(loss_finite=False, offending_predictions=(0.3,)), Context("x"))
    assert other.cause == "loss_function" and "from_logits" not in other.fix


def test_a_learning_rate_above_the_curvature_bound_is_the_learning_rate() -> None:
    asked = []

    def curvature() -> Curvature:
        asked.append(True)
        return sgd_curvature(9.33e12)

    context = Context("loss_spike", learning_rate=0.01, optimizer="sgd", curvature=curvature)
    verdict = classify(Replay(), context)
    assert verdict.cause == "learning_rate" and asked == [True]
    assert verdict.evidence["stable_learning_rate"] == pytest.approx(2.14e-13, rel=1e-3)
    assert "2.14e-13" in verdict.finding and "2.14e-13" in verdict.fix


def test_a_gradient_far_above_its_median_without_a_rising_loss_is_an_explosion() -> None:
    context = Context("nonfinite_step", learning_rate=0.01, gradient_norm_median=2.0,
                      curvature=lambda: sgd_curvature(1.0))  # fmt: skip
    verdict = classify(Replay(gradient_norm=5e4), context)
    assert verdict.cause == "exploding_gradients"
    assert verdict.evidence["ratio"] == pytest.approx(2.5e4)
    ordinary = classify(Replay(gradient_norm=3.0), context)
    assert ordinary.cause == "unknown"


def test_every_cause_is_in_the_vocabulary() -> None:
    verdicts = [
        classify(Replay(bad_positions=(0,)), Context("bad_rows")),
        classify(Replay(overflow=LayerOverflow("a", "float16", 1e5, 65504.0)), Context("x")),
        classify(Replay(loss_finite=False), Context("x")),
        classify(Replay(), Context("loss_spike", learning_rate=1.0)),
        classify(Replay(gradient_norm=math.inf), Context("x", gradient_norm_median=1.0)),
        classify(Replay(), Context("nonfinite_step")),
    ]
    assert sorted(v.cause for v in verdicts) == sorted(CAUSES)


def test_the_learning_rate_remedy_sets_a_rate_below_the_bound_or_stops() -> None:
    policy = RemedyPolicy()
    verdict = classify(Replay(), Context("loss_spike", learning_rate=1.0, optimizer="sgd",
                                         curvature=lambda: sgd_curvature(8.0)))  # fmt: skip
    remedy = policy.decide(verdict, trigger="loss_spike", learning_rate=1.0, clipnorm=None,
                           gradient_norm_median=None, window=RetryWindow(5))  # fmt: skip
    assert remedy.action == "rolled_back" and remedy.rollback
    assert remedy.learning_rate == pytest.approx(0.5 * 2.0 / 8.0)
    # The seed's Example 1: the bound is 4.7e10 times below the rate; no rate trains it.
    verdict = classify(Replay(), Context("loss_spike", learning_rate=0.01, optimizer="sgd",
                                         curvature=lambda: sgd_curvature(9.33e12)))  # fmt: skip
    remedy = policy.decide(verdict, trigger="loss_spike", learning_rate=0.01, clipnorm=None,
                           gradient_norm_median=None, window=RetryWindow(5))  # fmt: skip
    assert remedy.action == "stopped" and "standardize" in remedy.reason


def test_loss_function_and_precision_stop_without_touching_the_learning_rate() -> None:
    window = RetryWindow(5)
    for replay in (Replay(loss_finite=False),
                   Replay(overflow=LayerOverflow("a", "float16", 1e5, 65504.0))):  # fmt: skip
        remedy = RemedyPolicy().decide(classify(replay, Context("nonfinite_step")),
                                       trigger="nonfinite_step", learning_rate=0.1,
                                       clipnorm=None, gradient_norm_median=1.0,
                                       window=window)  # fmt: skip
        assert remedy.action == "stopped" and remedy.learning_rate is None
    assert window.used == 0


def test_clipping_starts_at_a_multiple_of_the_median_and_tightens() -> None:
    verdict = classify(
        Replay(gradient_norm=1e6), Context("nonfinite_step", gradient_norm_median=2.0)
    )
    policy, window = RemedyPolicy(clip_factor=5.0), RetryWindow(5)
    first = policy.decide(verdict, trigger="nonfinite_step", learning_rate=0.1, clipnorm=None,
                          gradient_norm_median=2.0, window=window)  # fmt: skip
    assert (first.action, first.clipnorm, first.rollback) == ("clipped", 10.0, False)
    again = policy.decide(verdict, trigger="nonfinite_step", learning_rate=0.1, clipnorm=10.0,
                          gradient_norm_median=2.0, window=window)  # fmt: skip
    assert again.clipnorm == 5.0


def test_the_retry_budget_is_a_window_reset_by_a_clean_epoch() -> None:
    window = RetryWindow(2)
    for _ in range(6):  # six one-off events, one per epoch, each followed by clean epochs
        assert window.spend()
        window.epoch_end()
        window.epoch_end()
    assert window.spend() and window.spend() and not window.spend()


def test_best_states_restore_the_lowest_smoothed_loss_and_forget_the_failed_path() -> None:
    states = BestStates(keep=2, gap=10)
    initial = Snapshot(0, -1, None, "initial")
    states.add(initial)
    assert states.best() is initial
    assert not states.wants(1.0, steps_since=5) and states.wants(1.0, steps_since=10)
    good, later, worse = (
        Snapshot(0, 9, 0.1, "good"),
        Snapshot(1, 9, 0.2, "later"),
        Snapshot(2, 9, 5.0, "worse"),
    )
    for snapshot in (good, later, worse):
        states.add(snapshot)
    assert states.best() is good  # kept as the best though older than the newest two
    states.forget_after(good)
    assert states.best() is good and len(states) == 1


def test_a_copy_gets_the_loss_measured_at_its_weights_not_the_one_before_its_step() -> None:
    """A step's loss is measured before its update, the copy after it. On a diverging
    step the copy carried the good loss before the step, and a rollback restored it."""
    core = GuardCore(snapshot_gap=1)
    core.keep(0, -1, "initial")
    assert core.observe(1.0) is None  # the initial weights' loss
    core.keep(0, 0, "after the first step")
    core.observe(1e30)  # ... whose own loss is huge
    assert core.rollback_target().state == "initial"
    assert core.rollback_target().loss == 1.0
    core.keep(0, 1, "not yet measured")
    assert core.rollback_target().state == "initial"  # unconfirmed: not a candidate


def test_loss_history_spots_spikes_and_growth_but_not_noise() -> None:
    rng = np.random.default_rng(0)
    noisy = LossHistory(spike_factor=10)
    for loss in 1.0 + 0.5 * rng.random(500):
        noisy.add(float(loss))
        assert not noisy.is_spike()
    diverging = LossHistory(spike_factor=10)
    for loss in [1.0, 0.5, 0.3] + [0.3 * 2.0**k for k in range(1, 12)]:
        diverging.add(loss)
    assert diverging.is_spike()
    assert diverging.growth() == pytest.approx(2.0)
    exact = LossHistory()
    for loss in [4.0, 1e-3, 0.0, 0.0, 1e-9]:
        exact.add(loss)
    assert not exact.is_spike()  # a rise from an exact 0 that is tiny in absolute terms


def test_curvature_arithmetic() -> None:
    assert stable_learning_rate(4.0, "sgd") == 0.5
    assert stable_learning_rate(4.0, "sgd", momentum=0.9) == pytest.approx(0.95)
    assert stable_learning_rate(38.0, "adam") == pytest.approx(1.0)
    assert stable_learning_rate(1.0, "ftrl") is None and stable_learning_rate(0.0, "sgd") is None
    # Gradient descent on f(w) = 2 w^2 (lambda = 4) at lr 1: error x(1 - 4) = -3 a step.
    losses, w = [], 1.0
    for _ in range(6):
        losses.append(2 * w * w)
        w -= 1.0 * 4.0 * w
    growth = geometric_growth(losses)
    assert growth == pytest.approx(9.0)
    assert curvature_from_growth(growth, 1.0) == pytest.approx(4.0)
    matrix = np.diag([5.0, 2.0, -1.0])
    assert power_iteration(
        lambda v: matrix @ v, 3, iterations=200, tolerance=1e-12
    ) == pytest.approx(5.0)
    assert math.isnan(power_iteration(lambda v: v * np.nan, 3))


def test_a_permanently_bad_row_is_one_event_with_a_count() -> None:
    core = GuardCore()
    replay = Replay(bad_positions=(4,), bad_columns=("x2",))
    first = core.data_event(epoch=0, batch=3, key=(17,), replay=replay, rows=(17,))
    assert first is not None and first.rows == (17,) and first.columns == ("x2",)
    for epoch in range(1, 30):
        assert core.data_event(epoch=epoch, batch=1, key=(17,), replay=replay, rows=(17,)) is None
    assert len(core.events) == 1 and core.events[0].count == 30
    assert "row 17 of the data" in first.message and "learning rate is unchanged" in first.message
    assert core.window.used == 0


def test_a_data_event_words_its_rows_as_the_adapter_locates_them() -> None:
    core = GuardCore()
    replay = Replay(bad_positions=(0, 1), bad_columns=("x",))
    event = core.data_event(epoch=0, batch=2, key="whole", replay=replay, where="rows 0, 1 of "
                            "dataset[7]", evidence={"dataset_rows": [[7, 0], [7, 1]]},
                            whole_batch=True)  # fmt: skip
    assert event is not None and event.rows == ()
    assert event.message.startswith("rows 0, 1 of dataset[7] with NaN or inf in x; every row")
    assert "its step was skipped" in event.message and "other rows" not in event.message
    assert event.evidence["dataset_rows"] == [[7, 0], [7, 1]]
    assert event.evidence["batch_positions"] == [0, 1]


def test_events_serialize_to_plain_json_and_read_as_one_line() -> None:
    core = GuardCore()
    for loss in [1.0, 0.5, 0.4]:
        core.observe(loss)
    core.keep(0, 2, "state")
    context = Context("nonfinite_step", learning_rate=1.0, optimizer="sgd", growth=3.0,
                      curvature=lambda: sgd_curvature(8.0))  # fmt: skip
    verdict, remedy = core.decide(Replay(), context)
    restored = core.rollback_target()
    event = core.record(epoch=1, batch=4, trigger="nonfinite_step", verdict=verdict,
                        remedy=remedy, loss=math.inf, restored=restored, learning_rate_before=1.0,
                        learning_rate_after=remedy.learning_rate)  # fmt: skip
    record = json.loads(json.dumps(event.to_dict()))
    assert record["cause"] == "learning_rate" and record["loss"] == "inf"
    assert record["restored_from"] == [0, 2]
    assert record["evidence"]["stable_learning_rate"] == 0.25
    line = event.describe()
    assert line.startswith("epoch 2, batch 5: learning rate:")
    assert (
        "learning rate 1 -> 0.125" in line and "Fix: train with a learning rate below 0.25" in line
    )


def test_a_rise_the_curvature_does_not_explain_is_no_learning_rate_event() -> None:
    # Near an exact fit the loss's relative noise is large: a smoothed loss 4 times its
    # minimum with the learning rate well within the curvature's bound is not divergence.
    window = RetryWindow(5)
    context = Context("loss_spike", learning_rate=1e-3, optimizer="Adam",
                      curvature=lambda: sgd_curvature(100.0))  # fmt: skip
    verdict = classify(Replay(), context)
    assert verdict.cause == "unknown" and "within the bound" in verdict.finding
    remedy = RemedyPolicy().decide(
        verdict,
        trigger="loss_spike",
        learning_rate=1e-3,
        clipnorm=None,
        gradient_norm_median=None,
        window=window,
    )
    # The spike is seen after its step: the guard keeps it ("the step was skipped", it said).
    assert (remedy.action, remedy.rollback, remedy.learning_rate) == ("kept", False, None)
    assert window.used == 0
    history = LossHistory(spike_factor=4)
    for loss in [10.0, 1.0, 1e-3, 1e-3, 4e-3, 8e-3, 9e-3, 9e-3]:
        history.add(loss)
    assert not history.is_spike()  # a rise of 1e-3 of the first loss is below the floor


def fixes(phrases) -> dict[str, str]:
    """The fix of each cause whose fix names something in a framework's API."""
    window = RetryWindow(5)
    overflow = LayerOverflow("net.0", "float16", 1.3e5, 65504.0)
    replays = {
        "precision": (Replay(overflow=overflow), Context("nonfinite_step")),
        "logits": (
            Replay(loss_finite=False, loss_name="BCE", offending_predictions=(0.0, 1.0)),
            Context("nonfinite_step"),
        ),
        "gradient_overflow": (
            Replay(gradient_norm=math.inf, largest_input=1e30),
            Context("nonfinite_step"),
        ),
        "exploding": (Replay(gradient_norm=5e4), Context("x", gradient_norm_median=1.0)),
        "learning_rate": (
            Replay(),
            Context("loss_spike", learning_rate=1.0, curvature=lambda: sgd_curvature(8.0)),
        ),
    }
    found = {name: classify(*case, phrases).fix for name, case in replays.items()}
    tiny = classify(
        Replay(), Context("loss_spike", learning_rate=1.0, curvature=lambda: sgd_curvature(1e9))
    )
    remedy = RemedyPolicy().decide(
        tiny,
        trigger="loss_spike",
        learning_rate=1.0,
        clipnorm=None,
        gradient_norm_median=None,
        window=window,
        phrases=phrases,
    )
    found["stop"] = remedy.reason
    return found


def test_one_classification_speaks_each_frameworks_words() -> None:
    keras, torch, neutral = fixes(KERAS), fixes(TORCH), fixes(NEUTRAL)
    assert "dtype='float32' on the layer" in keras["precision"]
    assert "torch.autocast(device_type, enabled=False)" in torch["precision"]
    assert "module 'net.0'" in torch["precision"]
    assert "from_logits=True" in keras["logits"]
    assert "nn.BCEWithLogitsLoss" in torch["logits"] and "from_logits" not in torch["logits"]
    assert "keras.layers.Normalization" in keras["gradient_overflow"]
    assert "keras" not in torch["gradient_overflow"] and "Dataset" in torch["gradient_overflow"]
    assert "clipnorm=" in keras["exploding"]
    assert "torch.nn.utils.clip_grad_norm_" in torch["exploding"]
    assert "clipnorm" not in torch["exploding"]
    assert "learning_rate= on the optimizer" in keras["learning_rate"]
    assert "param_groups" in torch["learning_rate"]
    assert "keras.layers.Normalization" in keras["stop"] and "keras" not in torch["stop"]
    for text in neutral.values():
        assert "keras" not in text and "torch" not in text and "clipnorm" not in text
    # The same rate and the same words around the framework's own.
    assert all(
        text.startswith("train with a learning rate below 0.25")
        for text in (keras["learning_rate"], torch["learning_rate"])
    )


def test_the_failure_message_names_the_guard_the_user_called() -> None:
    for phrases, name in ((KERAS, "NanGuard"), (TORCH, "stablefit.torch.guard")):
        core = GuardCore(phrases=phrases)
        verdict, remedy = core.decide(
            Replay(loss_finite=False, offending_predictions=(0.0,)), Context("nonfinite_step")
        )
        event = core.record(epoch=0, batch=2, trigger="nonfinite_step", verdict=verdict,
                            remedy=remedy, loss=math.inf)  # fmt: skip
        message = core.failure_message(event, reason=remedy.reason)
        assert message.startswith(f"{name} stopped training at epoch 1, batch 3")
