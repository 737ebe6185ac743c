"""The compiled step loop gives the step-by-step path's results bit for bit.

The simulation takes its regular steps in one compiled loop (:mod:`stablefit.diagnose.kernels`)
and the steps where some run overflows one at a time from Python, with NumPy's overflow
handling. Here the same simulations run both ways — with the compiled loop, and with every
step taken one at a time — and must agree exactly: loss histories, final weights, optimizer
slots and step counts.
"""

from __future__ import annotations

import numpy as np
import pytest

from stablefit.diagnose import simulation
from stablefit.diagnose.optimizers import OptimizerConfig
from stablefit.diagnose.simulation import Problem, simulate
from stablefit.summary import Summary

CONFIGS = [
    OptimizerConfig("sgd", 0.01),
    OptimizerConfig("sgd", 0.01, momentum=0.9),
    OptimizerConfig("sgd", 0.01, momentum=0.9, nesterov=True),
    OptimizerConfig("adam", 0.001),
    OptimizerConfig("adamw", 0.001),
    OptimizerConfig("rmsprop", 0.001),
    OptimizerConfig("rmsprop", 0.001, momentum=0.5),
    OptimizerConfig("adagrad", 0.001),
]
# From stable to far past every bound: SGD diverges on both data sets from 1e-3 on, the
# adaptive optimizers overflow float32 predictions on the large data set at 1e9.
RATES = (1e-6, 1e-3, 1.0, 1e9)
ROWS = 120


def problem(scales: tuple[float, ...], intercept: bool) -> Problem:
    rng = np.random.default_rng(11)
    X = rng.standard_normal((ROWS, len(scales))) * np.array(scales) + 0.5 * np.array(scales)
    y = X @ (rng.standard_normal(len(scales)) / np.array(scales)) + rng.standard_normal(ROWS)
    return Problem.of_summary(Summary.from_arrays(X, y), intercept=intercept)


DATA = {"moderate": (1.0, 10.0, 100.0), "large": (1.0, 1e15, 1e30)}


def simulate_recorded(monkeypatch, compiled: bool, problem, config, **kwargs):
    """simulate(), its final weights and optimizer, and the number of steps NumPy took;
    without ``compiled``, NumPy takes every step."""
    final = {}
    numpy_steps = [0]
    step_losses = simulation._step_losses
    numpy_step = simulation._step_loss_and_gradient

    def recording(problem, rule, theta, batches, epochs, dtype):
        losses, theta = step_losses(problem, rule, theta, batches, epochs, dtype)
        final.update(theta=theta, rule=rule)
        return losses, theta

    def counting(*args):
        numpy_steps[0] += 1
        return numpy_step(*args)

    with monkeypatch.context() as patch:
        patch.setattr(simulation, "_step_losses", recording)
        patch.setattr(simulation, "_step_loss_and_gradient", counting)
        if not compiled:  # the compiled steps stop where they start
            patch.setattr(simulation, "_regular_steps", lambda *args: args[4])
        run = simulate(problem, config, **kwargs)
    return run, final["theta"], final["rule"], numpy_steps[0]


def run_both_ways(monkeypatch, problem, config, **kwargs):
    return [
        simulate_recorded(monkeypatch, compiled, problem, config, **kwargs)
        for compiled in (True, False)
    ]


def assert_same(compiled, numpy_only) -> None:
    run, theta, rule, _ = compiled
    run_np, theta_np, rule_np, _ = numpy_only
    np.testing.assert_array_equal(run.epoch_loss, run_np.epoch_loss, strict=True)
    np.testing.assert_array_equal(run.initial_loss, run_np.initial_loss, strict=True)
    assert (run.stepped_epochs, run.closed_form) == (run_np.stepped_epochs, run_np.closed_form)
    np.testing.assert_array_equal(theta, theta_np, strict=True)
    assert rule.iterations == rule_np.iterations
    assert rule.slots.keys() == rule_np.slots.keys()
    for name in rule.slots:
        np.testing.assert_array_equal(rule.slots[name], rule_np.slots[name], strict=True)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.name}-{c.momentum}-{c.nesterov}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("intercept", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("batch_size", [ROWS, 17], ids=["full-batch", "minibatch"])
@pytest.mark.parametrize("data", list(DATA))
def test_compiled_steps_equal_numpy_steps(
    monkeypatch, config, dtype, intercept, batch_size, data
) -> None:
    compiled, numpy_only = run_both_ways(
        monkeypatch,
        problem(DATA[data], intercept),
        config,
        batch_size=batch_size,
        epochs=12,
        dtype=dtype,
        seeds=(0, 1),
        learning_rates=RATES,
        # Minibatches: eight epochs step by step, then SGD's closed form from the final state.
        max_steps=60,
    )
    assert_same(compiled, numpy_only)
    assert compiled[3] < numpy_only[3]  # the compiled steps took some of the steps


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.name}-{c.momentum}-{c.nesterov}")
def test_runs_that_overflow_take_numpy_steps_while_the_others_stay_finite(
    monkeypatch, config
) -> None:
    # Features up to ~1e8 keep the loss and the squared gradient within float32; a rate of
    # 1e31 sends the weights (SGD) or the predictions (adaptive) past it in a step or two.
    data = problem((1.0, 1e3, 1e8), intercept=True)
    compiled, numpy_only = run_both_ways(
        monkeypatch, data, config, batch_size=ROWS, epochs=40, dtype=np.float32,
        seeds=(0, 1, 2), learning_rates=(1e-20, 1e31),
    )  # fmt: skip
    assert_same(compiled, numpy_only)
    run, _, _, numpy_steps = compiled
    assert np.isfinite(run.epoch_loss[:3]).all()
    assert np.isnan(run.epoch_loss[3:, -1]).all()
    # The first steps are compiled; once a run has left the regular regime, NumPy takes
    # every step (the finite runs with it).
    assert 0 < numpy_steps < 40


def test_loss_and_gradient_are_the_mse_and_its_derivative() -> None:
    quad = problem(DATA["moderate"], intercept=True).quadratic
    theta = np.random.default_rng(3).standard_normal((4, len(quad.q)))
    loss, grad = quad.loss_and_gradient(theta)
    np.testing.assert_allclose(loss, quad.loss(theta), rtol=1e-12)
    expected = (
        2.0 / quad.n * (theta @ quad.Q - quad.q)
        + 2.0 * (theta @ quad.a - quad.a0)[:, None] * quad.a
    )
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
