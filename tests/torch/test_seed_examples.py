"""The seed's three examples written in PyTorch: the forecast is what torch does, epoch for
epoch.

Each example trains ``nn.Linear(2, 1)`` with ``nn.MSELoss()`` on the bundled data (scaled
as the seed scales it), full batch, float32, 100 epochs, after ``torch.manual_seed(seed)``
for the five seeds the forecast simulates — it draws ``nn.Linear``'s initial weights as
torch does, so each simulated run is one torch run.
"""

from __future__ import annotations

import numpy as np
import pytest

from stablefit.cli.doctor import DEMO_CASES, DemoCase, load_example
from stablefit.diagnose import diagnose
from stablefit.diagnose.optimizers import OptimizerConfig
from stablefit.diagnose.simulation import Problem, simulate
from stablefit.summary import Summary

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

SEEDS = (0, 1, 2, 3, 4)
EPOCHS = 100
# The seed's Keras optimizers written in torch: 'adam' is Adam(lr=0.001), 'SGD' SGD(lr=0.01).
TORCH_RATES = {"adam": 0.001, "sgd": 0.01}


def train(X: np.ndarray, y: np.ndarray, case: DemoCase, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    model = torch.nn.Linear(X.shape[1], 1)
    lr = case.learning_rate or TORCH_RATES[case.optimizer]
    classes = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    optimizer = classes[case.optimizer](model.parameters(), lr=lr)
    features = torch.as_tensor(X, dtype=torch.float32)
    target = torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1)
    losses = []
    for _ in range(EPOCHS):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(features), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses)


@pytest.fixture(scope="module", params=DEMO_CASES, ids=[c.title for c in DEMO_CASES])
def example(request: pytest.FixtureRequest) -> tuple[DemoCase, np.ndarray, np.ndarray]:
    case = request.param
    X, y, _ = load_example(case)
    lr = case.learning_rate or TORCH_RATES[case.optimizer]
    config = OptimizerConfig.resolve(case.optimizer, lr, 0.0, False, framework="torch")
    problem = Problem.of_summary(Summary.from_arrays(X, y), intercept=True)
    run = simulate(problem, config, batch_size=32, epochs=EPOCHS, dtype=np.float32, seeds=SEEDS)
    real = np.array([train(X, y, case, seed) for seed in SEEDS])
    return case, real, run.epoch_loss


def test_every_epoch_loss_is_torch_s(example) -> None:
    _, real, simulated = example
    np.testing.assert_array_equal(np.isnan(simulated), np.isnan(real))
    np.testing.assert_array_equal(np.isinf(simulated), np.isinf(real))
    finite = np.isfinite(real)
    relative = np.abs(simulated[finite] - real[finite]) / np.abs(real[finite])
    assert relative.max() < 1e-4


def test_the_forecast_says_what_torch_does(example) -> None:
    case, real, _ = example
    X, y, _ = load_example(case)
    lr = case.learning_rate or TORCH_RATES[case.optimizer]
    forecast = diagnose(X, y, optimizer=case.optimizer, learning_rate=lr, framework="torch")
    training = forecast.training
    nonfinite = [np.flatnonzero(~np.isfinite(h)) for h in real]
    firsts = [int(bad[0]) + 1 for bad in nonfinite if bad.size]
    if firsts:
        assert training.outcome == "diverges"
        assert training.first_nonfinite_epoch_range == (min(firsts), max(firsts))
        nans = [int(np.flatnonzero(np.isnan(h))[0]) + 1 for h in real if np.isnan(h).any()]
        assert training.first_nan_epoch == min(nans)
    else:
        assert training.first_nonfinite_epoch is None
        low, high = training.predicted_final_loss_range
        assert low * (1 - 1e-4) <= real[:, -1].min() and real[:, -1].max() <= high * (1 + 1e-4)


def test_example_1_in_torch_diverges_with_sgd_and_stalls_with_adam() -> None:
    """The issue's facts: SGD(lr=0.01) diverges (inf at epoch 3, NaN at 6), Adam stalls."""
    X, y, _ = load_example(DEMO_CASES[0])
    sgd = diagnose(X, y, optimizer="sgd", learning_rate=0.01, framework="torch").training
    assert (sgd.first_nonfinite_epoch, sgd.first_nan_epoch) == (3, 6)
    assert sgd.max_stable_learning_rate == pytest.approx(2.14e-13, rel=1e-2)
    adam = diagnose(X, y, optimizer="adam", framework="torch").training
    assert adam.outcome == "stalls" and adam.first_nonfinite_epoch is None
    assert adam.predicted_final_loss > 1e8
    assert "torch.optim" in adam.recommended.code
