"""The forecast's PyTorch rules against real torch (CPU, float32).

The simulation's pieces, each checked against what torch does: ``nn.Linear``'s initial
weights after ``torch.manual_seed``, every ``torch.optim`` update rule the forecast knows,
a ``DataLoader`` epoch's loss, and the stability bound with torch's SGD options.
"""

from __future__ import annotations

import numpy as np
import pytest

from stablefit.diagnose import diagnose
from stablefit.diagnose.frameworks import initial_weights
from stablefit.diagnose.optimizers import OptimizerConfig, UpdateRule
from stablefit.diagnose.simulation import Problem, simulate
from stablefit.diagnose.training import forecast_training
from stablefit.errors import StablefitInputError
from stablefit.summary import Summary

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny models: one thread is faster than two that wait
pytestmark = pytest.mark.torch

OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


def linear_weights(model: torch.nn.Linear) -> np.ndarray:
    parts = [model.weight.detach().numpy().ravel()]
    if model.bias is not None:
        parts.append(model.bias.detach().numpy())
    return np.concatenate(parts)


@pytest.mark.parametrize("features", [1, 2, 7, 100])
@pytest.mark.parametrize("bias", [True, False])
def test_initial_weights_are_those_of_nn_linear_after_manual_seed(
    features: int, bias: bool
) -> None:
    seeds = (0, 1, 42, 2**32 - 1)
    simulated = initial_weights("torch", features + int(bias), bias, seeds, np.float32)
    for row, seed in enumerate(seeds):
        torch.manual_seed(seed)
        model = torch.nn.Linear(features, 1, bias=bias)
        np.testing.assert_array_equal(simulated[row], linear_weights(model))


def run_both(
    name: str, options: dict, momentum: float = 0.0, nesterov: bool = False, steps: int = 40
) -> tuple[np.ndarray, np.ndarray]:
    """Weights after each of ``steps`` updates of an nn.Linear(2, 1): torch's, simulated."""
    rng = np.random.default_rng(3)
    grads = (rng.standard_normal((steps, 3)) * np.array([1e-3, 1.0, 1e3])).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    kwargs = dict(options)
    if momentum:
        kwargs["momentum"] = momentum
    if nesterov:
        kwargs["nesterov"] = True
    optimizer = OPTIMIZERS[name](model.parameters(), lr=0.0123, **kwargs)
    config = OptimizerConfig.resolve(
        name, 0.0123, momentum, nesterov, framework="torch", options=options
    )
    rule = UpdateRule(config, (1, 3), np.float32)
    theta = linear_weights(model)[None, :]
    real, simulated = [], []
    for grad in grads:
        model.weight.grad = torch.from_numpy(grad[None, :2].copy())
        model.bias.grad = torch.from_numpy(grad[2:].copy())
        optimizer.step()
        theta = rule.apply(theta, grad[None, :])
        real.append(linear_weights(model))
        simulated.append(theta[0].copy())
    return np.array(real), np.array(simulated)


@pytest.mark.parametrize(
    ("momentum", "nesterov", "options"),
    [
        (0.0, False, {}),
        (0.0, False, {"weight_decay": 0.1}),
        (0.9, False, {}),
        (0.9, True, {}),
        (0.9, False, {"dampening": 0.3, "weight_decay": 0.01}),
        (0.5, True, {"weight_decay": 0.05}),
    ],
)
def test_sgd_rules_match_torch_bit_for_bit(momentum: float, nesterov: bool, options: dict) -> None:
    real, simulated = run_both("sgd", options, momentum, nesterov)
    np.testing.assert_array_equal(simulated, real)


@pytest.mark.parametrize(
    ("name", "momentum", "options"),
    [
        ("adam", 0.0, {}),
        ("adam", 0.0, {"weight_decay": 0.1, "betas": (0.5, 0.9), "eps": 1e-6}),
        ("adamw", 0.0, {}),
        ("adamw", 0.0, {"weight_decay": 0.3}),
        ("rmsprop", 0.0, {}),
        ("rmsprop", 0.5, {"weight_decay": 0.01, "alpha": 0.9}),
        ("adagrad", 0.0, {}),
        ("adagrad", 0.0, {"lr_decay": 0.1, "initial_accumulator_value": 0.2}),
    ],
)
def test_adaptive_rules_match_torch_to_an_ulp_per_step(
    name: str, momentum: float, options: dict
) -> None:
    # Torch's float32 sqrt on the CPU (MKL's vector math) is not always correctly
    # rounded: the simulation's (correctly rounded) square roots differ by an ulp at
    # times, and every other operation is torch's.
    real, simulated = run_both(name, options, momentum)
    np.testing.assert_allclose(simulated, real, rtol=1e-6, atol=1e-8)


def test_a_dataloader_epoch_reports_the_row_weighted_mean_of_its_batch_losses() -> None:
    """Minibatches with shuffle=False: the simulation's steps take the full-data gradient,
    so the comparison is loose; drop_last must take n // b steps of b rows."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3.0
    config = OptimizerConfig.resolve("sgd", 0.05, 0.0, False, framework="torch")
    problem = Problem.of_summary(Summary.from_arrays(X, y), intercept=True)
    for drop_last, steps in ((False, 4), (True, 3)):
        run = simulate(
            problem, config, batch_size=32, epochs=5, dtype=np.float32, seeds=(0,),
            drop_last=drop_last,
        )  # fmt: skip
        assert run.steps_per_epoch == steps
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        data = torch.utils.data.TensorDataset(
            torch.as_tensor(X, dtype=torch.float32),
            torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1),
        )
        loader = torch.utils.data.DataLoader(data, batch_size=32, drop_last=drop_last)
        history = []
        for _ in range(5):
            total, rows = 0.0, 0
            for xb, yb in loader:
                optimizer.zero_grad()
                loss = torch.nn.functional.mse_loss(model(xb), yb)
                loss.backward()
                optimizer.step()
                total, rows = total + loss.item() * len(xb), rows + len(xb)
            history.append(total / rows)
        np.testing.assert_allclose(run.epoch_loss[0], history, rtol=0.3)


def test_an_overflowing_batch_sum_of_squares_makes_the_epoch_loss_inf() -> None:
    """A batch's MSE is inf once its float32 sum of squares passes 3.4e38, though the mean
    would fit: 4 rows of residual 1e19 (square 1e38) sum to 4e38."""
    X = np.zeros((4, 1))
    y = np.full(4, 1e19)
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    loss = torch.nn.functional.mse_loss(
        model(torch.as_tensor(X, dtype=torch.float32)),
        torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1),
    )
    assert torch.isinf(loss)
    forecast = forecast_training(
        Summary.from_arrays(np.array([[0.0], [1.0], [0.0], [1.0]]), y),
        optimizer="sgd",
        learning_rate=1e-30,
        epochs=1,
        framework="torch",
    )
    assert forecast.first_nonfinite_epoch == 1


@pytest.mark.parametrize(
    ("momentum", "nesterov", "options"),
    [
        (0.0, False, {"weight_decay": 0.5}),
        (0.9, False, {"dampening": 0.5}),
        (0.9, True, {"weight_decay": 0.2}),
    ],
)
def test_torch_sgd_bound_with_weight_decay_and_dampening_is_the_edge_of_divergence(
    momentum: float, nesterov: bool, options: dict
) -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 2)) * np.array([1.0, 3.0])
    summary = Summary.from_arrays(X, X @ np.array([1.0, 1.0]) + rng.standard_normal(64))
    common = {
        "optimizer": "sgd",
        "momentum": momentum,
        "nesterov": nesterov,
        "batch_size": 64,
        "epochs": 400,
        "framework": "torch",
        "optimizer_options": options,
    }
    bound = forecast_training(summary, **common).max_stable_learning_rate
    without = forecast_training(summary, **common | {"optimizer_options": {}})
    assert bound != without.max_stable_learning_rate
    below = forecast_training(summary, learning_rate=0.95 * bound, **common)
    above = forecast_training(summary, learning_rate=1.05 * bound, **common)
    assert below.outcome != "diverges"
    assert above.outcome == "diverges"


def test_torch_defaults_and_options_in_the_forecast() -> None:
    X = np.array([[1, 1e6], [2, 2e6], [3, 3e6]])
    y = np.array([10.0, 20.0, 30.0])
    diagnosis = diagnose(X, y, framework="torch")
    assert diagnosis.training.optimizer == "adam"
    assert diagnosis.training.framework == "torch"
    assert diagnosis.other_forecasts[0].learning_rate == 0.001  # torch's SGD default
    rmsprop = diagnose(X, y, framework="torch", optimizer="rmsprop").training
    assert rmsprop.learning_rate == 0.01
    decayed = diagnose(X, y, framework="pytorch", optimizer="sgd", weight_decay=0.1).training
    assert decayed.optimizer_options == {"weight_decay": 0.1}
    assert "weight_decay=0.1" in decayed.recommended.code
    assert diagnosis.to_json()  # every field serializes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"framework": "jax"}, "framework='jax'"),
        ({"framework": "torch", "optimizer": "sgd", "nesterov": True}, "nesterov=True needs"),
        (
            {"framework": "torch", "optimizer": "sgd", "optimizer_options": {"betas": (0.9,)}},
            "betas",
        ),
        ({"framework": "torch", "optimizer": "adam", "dampening": 0.1}, "dampening"),
        ({"optimizer": "sgd", "dampening": 0.1}, "dampening: an option of PyTorch's sgd, not"),
        ({"optimizer": "adam", "weight_decay": 0.1}, "weight decay for 'adamw' only"),
        (
            {"framework": "torch", "optimizer": "adam", "optimizer_options": {"epsilon": 1e-7}},
            "epsilon: an option of Keras's adam, not of PyTorch's: drop it or give",
        ),
        (
            {"framework": "torch", "optimizer": "sgd", "optimizer_options": {"rho": 0.9}},
            r"it simulates dampening, weight_decay\); drop it",
        ),
        ({"optimizer": "sgd", "drop_last": True}, "drop_last=True is a torch"),
        ({"framework": "torch", "batch_size": 10, "drop_last": True}, "leaves no batch"),
    ],
)
def test_bad_torch_settings_are_named(kwargs: dict, message: str) -> None:
    X = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 5.0]])
    with pytest.raises(StablefitInputError, match=message):
        diagnose(X, np.array([1.0, 2.0, 3.0]), **kwargs)
