"""``stablefit.torch.preflight`` on real torch models, optimizers and losses."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from stablefit.errors import StablefitInputError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
from stablefit.torch import preflight  # noqa: E402
from stablefit.torch._preflight import hessian_max_eigenvalue  # noqa: E402

EXAMPLE_1 = (np.array([[1, 1e6], [2, 2e6], [3, 3e6]]), np.array([[10.0], [20.0], [30.0]]))


def linear(features: int = 2, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(features, 1)


def torch_history(model, optimizer, X, y, epochs: int = 100) -> np.ndarray:
    features = torch.as_tensor(X, dtype=torch.float32)
    target = torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1)
    losses = []
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(features), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses)


def test_a_linear_model_is_forecast_from_its_own_weights() -> None:
    model = linear(seed=123)  # a seed the forecast does not simulate by itself
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    diagnosis = preflight(model, torch.nn.MSELoss(), *EXAMPLE_1, optimizer)
    training = diagnosis.training
    assert training.framework == "torch" and training.seeds == ()
    assert any("model's current weights" in note for note in training.notes)
    real = torch_history(model, optimizer, *EXAMPLE_1)
    first_inf = int(np.flatnonzero(~np.isfinite(real))[0]) + 1
    first_nan = int(np.flatnonzero(np.isnan(real))[0]) + 1
    assert (training.first_nonfinite_epoch, training.first_nan_epoch) == (first_inf, first_nan)
    assert "SF201" in diagnosis.codes


def test_the_optimizer_s_settings_are_read_from_its_param_groups() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3))
    y = X @ np.array([1.0, 2.0, -1.0]) + 0.1 * rng.standard_normal(64)
    model = linear(3)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3
    )
    training = preflight(
        model, torch.nn.MSELoss(), X, y[:, None], optimizer, batch_size=16
    ).training
    assert (training.optimizer, training.learning_rate) == ("sgd", 0.05)
    assert (training.momentum, training.nesterov) == (0.9, True)
    assert training.optimizer_options == {"weight_decay": 1e-3}
    assert training.steps_per_epoch == 4
    decoupled = torch.optim.Adam(model.parameters(), weight_decay=0.1, decoupled_weight_decay=True)
    training = preflight(model, torch.nn.MSELoss(), X, y[:, None], decoupled).training
    assert training.optimizer == "adamw" and training.optimizer_options == {"weight_decay": 0.1}


def test_a_1d_target_that_mseloss_would_broadcast_is_an_error_finding() -> None:
    model = linear()
    optimizer = torch.optim.Adam(model.parameters())
    X, y = EXAMPLE_1
    diagnosis = preflight(model, torch.nn.MSELoss(), X, y.ravel(), optimizer)
    (finding,) = diagnosis.by_code("SF303")
    assert finding.evidence == {"output_shape": [3, 1], "target_shape": [3]}
    assert "(3, 3)" in finding.message
    assert diagnosis.training is not None  # forecast as if the target were a column
    assert not preflight(model, torch.nn.MSELoss(), X, y, optimizer).by_code("SF303")


def test_non_finite_weights_are_an_error_and_the_loss_is_nan_from_epoch_1() -> None:
    model = linear()
    with torch.no_grad():
        model.weight[0, 1] = float("nan")
    diagnosis = preflight(
        model, torch.nn.MSELoss(), *EXAMPLE_1, torch.optim.SGD(model.parameters(), lr=1e-3)
    )
    (finding,) = diagnosis.by_code("SF301")
    assert finding.evidence["variables"] == [{"variable": "weight", "n_nonfinite": 1}]
    assert diagnosis.training.first_nonfinite_epoch == 1


def test_an_mlp_gets_a_labelled_estimate_of_its_curvature() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 4)) * np.array([1.0, 10.0, 100.0, 1000.0])
    y = np.tanh(X[:, :1] / 100.0)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    before = copy.deepcopy(mlp.state_dict())
    optimizer = torch.optim.SGD(mlp.parameters(), lr=0.1)
    diagnosis = preflight(mlp, torch.nn.MSELoss(), X, y, optimizer)
    assert diagnosis.training is None
    (finding,) = diagnosis.by_code("SF302")
    estimate = finding.evidence["lambda_max_estimate"]
    assert finding.severity == "warning"  # lr 0.1 is above 2/λ for inputs of scale 1000
    assert finding.evidence["sgd_max_stable_learning_rate_estimate"] == pytest.approx(2 / estimate)
    assert "an estimate, not a bound" in finding.message
    assert "not a single nn.Linear" in finding.evidence["no_exact_forecast"]
    assert "SF121" in diagnosis.codes  # the data checks ran
    for key, value in mlp.state_dict().items():
        assert torch.equal(value, before[key])  # nothing was trained


def test_the_hessian_estimate_of_a_linear_model_is_its_exact_eigenvalue() -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((50, 2)) * np.array([1.0, 3.0])
    y = X @ np.array([1.0, 2.0])
    estimate = hessian_max_eigenvalue(
        linear(),
        torch.nn.MSELoss(),
        torch.as_tensor(X, dtype=torch.float32),
        torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1),
    )
    A = np.column_stack([X, np.ones(len(X))])
    exact = np.linalg.eigvalsh(2.0 / len(X) * A.T @ A).max()
    assert estimate == pytest.approx(exact, rel=1e-5)


def test_an_optimizer_option_the_forecast_does_not_simulate_falls_back_to_the_estimate() -> None:
    model = linear()
    optimizer = torch.optim.Adam(model.parameters(), amsgrad=True)
    diagnosis = preflight(model, torch.nn.MSELoss(), *EXAMPLE_1, optimizer)
    assert diagnosis.training is None
    (finding,) = diagnosis.by_code("SF302")
    assert "amsgrad=True is not simulated" in finding.message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("model", torch.nn.MSELoss(), *EXAMPLE_1), "expected a torch.nn.Module"),
        ((linear(3), torch.nn.MSELoss(), *EXAMPLE_1), "X has 2 feature columns"),
        ((linear(), torch.nn.MSELoss(), EXAMPLE_1[0], np.ones((2, 1))), "y has 2 rows"),
        ((linear(), torch.nn.MSELoss(), EXAMPLE_1[0], np.ones((3, 2))), "2 values per row"),
    ],
)
def test_bad_input_is_named(args: tuple, message: str) -> None:
    model = args[0] if isinstance(args[0], torch.nn.Module) else linear()
    with pytest.raises(StablefitInputError, match=message):
        preflight(*args, torch.optim.SGD(model.parameters(), lr=0.01))
