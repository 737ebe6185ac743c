"""``stablefit.torch.GuardCallback`` in a real PyTorch Lightning ``Trainer`` on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
lightning = pytest.importorskip("lightning")
pytestmark = pytest.mark.torch

from stablefit.torch import GuardCallback  # noqa: E402


class Regression(lightning.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)
        )
        self.loss_fn = torch.nn.MSELoss()
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_index):
        x, y = batch
        return self.loss_fn(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loader(bad_row: int | None = None) -> torch.utils.data.DataLoader:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 4))
    y = np.tanh(X @ np.array([1.0, -2.0, 0.5, 0.0]))[:, None]
    if bad_row is not None:
        X[bad_row, 2] = np.nan
    data = torch.utils.data.TensorDataset(
        torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    )
    return torch.utils.data.DataLoader(data, batch_size=32)


def fit(module, callback, data) -> None:
    trainer = lightning.Trainer(
        max_epochs=3,
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data)


def test_a_bad_row_is_left_out_and_training_completes() -> None:
    module = Regression(lr=0.05)
    callback = GuardCallback(loss_fn=module.loss_fn)
    fit(module, callback, loader(bad_row=40))
    (event,) = callback.events
    assert (event.cause, event.action, event.batch) == ("data", "masked", 1)
    assert event.count == 3  # once an epoch
    assert all(bool(torch.isfinite(p).all()) for p in module.parameters())


def test_a_learning_rate_too_high_is_lowered_in_lightning() -> None:
    module = Regression(lr=1.0)
    callback = GuardCallback(loss_fn=module.loss_fn)
    fit(module, callback, loader())
    assert callback.events and {e.cause for e in callback.events} == {"learning_rate"}
    assert module.trainer.optimizers[0].param_groups[0]["lr"] < 1.0
    assert all(bool(torch.isfinite(p).all()) for p in module.parameters())
