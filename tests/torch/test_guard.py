"""``stablefit.torch.guard`` in ordinary PyTorch loops, each failure reproduced for real."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from stablefit import torch as stablefit_torch  # noqa: E402
from stablefit.guard import NonFiniteTrainingError  # noqa: E402


@pytest.fixture(params=[None, True], ids=["default", "sync_free"])
def guard(request):
    """``stablefit.torch.guard``, as on the CPU (each step's flag read) and as on a GPU
    (``sync_free``: steps decided on the device, read every 16 steps)."""

    def guarded(*args, **kwargs):
        return stablefit_torch.guard(*args, sync_free=request.param, **kwargs)

    return guarded


ROWS, BATCH = 256, 32


def regression_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((ROWS, 4))
    y = np.tanh(X @ np.array([1.0, -2.0, 0.5, 0.0]))[:, None] + 0.05 * rng.standard_normal(
        (ROWS, 1)
    )
    return torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))


def train(model, optimizer, loss_fn, X, y, *, epochs: int = 20, scheduler=None) -> list[float]:
    """An ordinary loop: fixed batches, zero_grad / backward / step; the epoch's mean loss."""
    history = []
    for _ in range(epochs):
        total = 0.0
        for start in range(0, len(X), BATCH):
            xb, yb = X[start : start + BATCH], y[start : start + BATCH]
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
        if scheduler is not None:
            scheduler.step()
        history.append(total / len(X))
    return history


def train_mixed_precision(
    model, optimizer, loss_fn, X, y, *, epochs: int, set_to_none: bool = True
) -> None:
    """The loop of torch's automatic mixed precision recipe: autocast, GradScaler."""
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(epochs):
        for start in range(0, len(X), BATCH):
            optimizer.zero_grad(set_to_none=set_to_none)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_fn(model(X[start : start + BATCH]), y[start : start + BATCH])
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()


def clean_loss(model, X, y) -> float:
    with torch.no_grad():
        good = torch.isfinite(X).all(dim=1) & torch.isfinite(y).all(dim=1)
        return torch.nn.functional.mse_loss(model(X[good]), y[good]).item()


def all_finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_clean_training_is_untouched(guard) -> None:
    X, y = regression_data()
    reference, guarded = mlp(), mlp()
    loss_fn = torch.nn.MSELoss()
    train(reference, torch.optim.Adam(reference.parameters(), lr=0.01), loss_fn, X, y, epochs=3)
    optimizer = guard(torch.optim.Adam(guarded.parameters(), lr=0.01), guarded, loss_fn)
    train(guarded, optimizer, loss_fn, X, y, epochs=3)
    assert optimizer.events == [] and optimizer.skipped_steps == 0
    for a, b in zip(reference.parameters(), guarded.parameters(), strict=True):
        assert torch.equal(a, b)  # bit for bit the unguarded run


@pytest.mark.parametrize("where", ["x", "y"])
def test_a_nan_in_one_batch_leaves_the_final_loss_as_without_it(where: str, guard) -> None:
    X, y = regression_data()
    clean = mlp()
    loss_fn = torch.nn.MSELoss()
    train(clean, torch.optim.SGD(clean.parameters(), lr=0.05), loss_fn, X, y)
    model = mlp()
    optimizer = guard(
        torch.optim.SGD(model.parameters(), lr=0.05), model, loss_fn, steps_per_epoch=ROWS // BATCH
    )
    bad_x, bad_y = X.clone(), y.clone()
    (bad_x if where == "x" else bad_y)[37, 0] = float("nan")
    train(model, optimizer, loss_fn, bad_x, bad_y, epochs=1)
    train(model, optimizer, loss_fn, X, y, epochs=19)  # the NaN was in one epoch only
    (event,) = optimizer.events
    assert (event.cause, event.action, event.epoch, event.batch) == ("data", "masked", 0, 1)
    assert event.columns == (("x[:, 0]",) if where == "x" else ("y",))
    assert event.learning_rate_after == event.learning_rate_before == 0.05
    assert all_finite(model)
    assert clean_loss(model, X, y) == pytest.approx(clean_loss(clean, X, y), rel=0.05)


def test_a_permanently_bad_row_is_named_once_and_training_completes(guard) -> None:
    X, y = regression_data()
    bad_y = y.clone()
    bad_y[100, 0] = float("inf")
    model = mlp()
    loss_fn = torch.nn.MSELoss()
    optimizer = guard(
        torch.optim.Adam(model.parameters(), lr=0.01),
        model,
        loss_fn,
        data=(X.numpy(), bad_y.numpy()),
        steps_per_epoch=ROWS // BATCH,
    )
    history = train(model, optimizer, loss_fn, X, bad_y, epochs=20)
    (event,) = optimizer.events
    assert event.rows == (100,) and event.columns == ("y",)
    assert event.count == 20  # once an epoch, one event
    assert "row 100 of the data" in event.message
    assert len(history) == 20 and all_finite(model)  # (the loop's own sum holds the inf)
    reference = mlp()
    keep = torch.arange(ROWS) != 100
    train(reference, torch.optim.Adam(reference.parameters(), lr=0.01), loss_fn, X[keep], y[keep])
    assert clean_loss(model, X, bad_y) <= 1.5 * clean_loss(reference, X, bad_y)


def relu_mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))


def test_a_learning_rate_too_high_for_an_mlp_is_rolled_back_and_lowered(guard) -> None:
    X, y = regression_data()
    loss_fn = torch.nn.MSELoss()
    unguarded = relu_mlp()
    train(unguarded, torch.optim.SGD(unguarded.parameters(), lr=1.0), loss_fn, X, y, epochs=2)
    assert not all_finite(unguarded)  # the failure, for real
    model = relu_mlp()
    optimizer = guard(
        torch.optim.SGD(model.parameters(), lr=1.0), model, loss_fn, steps_per_epoch=ROWS // BATCH
    )
    history = train(model, optimizer, loss_fn, X, y, epochs=20)
    assert {e.cause for e in optimizer.events} == {"learning_rate"}, [
        e.describe() for e in optimizer.events
    ]
    first = optimizer.events[0]
    assert first.action == "rolled_back" and first.restored_from is not None
    assert first.learning_rate_after < 1.0
    assert "stable_learning_rate" in first.evidence
    assert all_finite(model) and np.isfinite(history[-1])
    well = relu_mlp()
    train(well, torch.optim.SGD(well.parameters(), lr=0.2), loss_fn, X, y, epochs=20)
    assert clean_loss(model, X, y) <= 1.5 * clean_loss(well, X, y)


def test_a_slow_divergence_within_the_bound_is_not_kept_as_noise(guard) -> None:
    # SGD with momentum 0.9 at half the bound 2(1 + μ)/λ: each step is stretched about
    # 10 times, and the loss climbs in rises that each look like noise (unguarded at that
    # rate, and with such rises kept, the loss ends above 1000).
    X, y = regression_data()
    loss_fn = torch.nn.MSELoss()
    model = mlp()
    optimizer = guard(
        torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9),
        model,
        loss_fn,
        steps_per_epoch=ROWS // BATCH,
    )
    train(model, optimizer, loss_fn, X, y, epochs=30)
    described = [e.describe() for e in optimizer.events]
    slow = [e for e in optimizer.events if "loss_over_best" in e.evidence]
    assert slow, described
    assert slow[0].cause == "learning_rate" and slow[0].action == "rolled_back", described
    assert "slow divergence" in slow[0].message and "momentum 0.9" in slow[0].message
    chosen = optimizer.param_groups[0]["lr"]
    assert chosen == slow[-1].learning_rate_after
    assert chosen <= 0.5 * slow[0].evidence["safe_learning_rate"] * (1 + 1e-9)
    # As good as training at the rate the guard chose for the epochs left after the
    # rollback (it restored the initial weights, or later ones).
    left = 30 - slow[-1].epoch
    well = mlp()
    train(
        well,
        torch.optim.SGD(well.parameters(), lr=chosen, momentum=0.9),
        loss_fn,
        X,
        y,
        epochs=left,
    )
    assert all_finite(model) and clean_loss(model, X, y) <= 1.5 * clean_loss(well, X, y)


@pytest.mark.parametrize("optimizer", ["Adam", "AdamW"])
def test_an_absurd_adam_learning_rate_is_set_from_the_preconditioned_curvature(
    optimizer: str, guard
) -> None:
    """Adam has no second moments at the start of training, where the rollback goes: the
    rate was cut ten-fold per event (1e6 -> 1e5 -> ...) until the guard gave up."""
    X, y = regression_data()
    loss_fn, adam = torch.nn.MSELoss(), getattr(torch.optim, optimizer)
    model = mlp()
    optimizer = guard(adam(model.parameters(), lr=1e6), model, loss_fn, steps_per_epoch=8)
    train(model, optimizer, loss_fn, X, y, epochs=10)
    [event] = optimizer.events  # one event, not a cascade
    assert (event.cause, event.action) == ("learning_rate", "rolled_back")
    bound = event.evidence["stable_learning_rate"]
    assert event.learning_rate_after == pytest.approx(0.5 * bound)
    assert "preconditioned Hessian" in event.message
    well = mlp()
    train(well, adam(well.parameters(), lr=0.01), loss_fn, X, y, epochs=10)
    assert all_finite(model) and clean_loss(model, X, y) <= 1.5 * clean_loss(well, X, y)


class LogLoss(torch.nn.Module):
    """Binary cross-entropy written by hand on probabilities: log(0) for a saturated one."""

    def forward(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


def test_log_of_zero_in_a_loss_stops_with_cause_loss_function_and_no_rate_cut(guard) -> None:
    X, y = regression_data()
    labels = (y > 0).float()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        model[0].weight.mul_(200.0)  # saturated: some probabilities are exactly 0 or 1
    loss_fn = LogLoss()
    optimizer = guard(torch.optim.SGD(model.parameters(), lr=0.1), model, loss_fn)
    with pytest.raises(NonFiniteTrainingError, match="loss function") as error:
        train(model, optimizer, loss_fn, X, labels, epochs=3)
    (event,) = optimizer.events
    assert (event.cause, event.action) == ("loss_function", "stopped")
    assert event.learning_rate_after == event.learning_rate_before == 0.1
    assert set(event.evidence["predictions"]) <= {0.0, 1.0}
    message = str(error.value)
    assert message.startswith("stablefit.torch.guard stopped training")
    # The fix in PyTorch's words, not Keras's.
    assert "nn.BCEWithLogitsLoss" in message and "from_logits" not in message
    assert all_finite(model)


def test_example_1_stops_with_cause_learning_rate_at_its_bound(guard) -> None:
    """The seed's Example 1 with SGD(lr=0.01): the second step's MSELoss is inf because its
    predictions (3e27) overflow when squared, which the guard called a loss-function bug.
    Its cause is the learning rate, 4.7e10 times the stable bound; the model is left with
    its initial weights, the best it had."""
    X = torch.tensor([[1.0, 1e6], [2.0, 2e6], [3.0, 3e6]])
    y = torch.tensor([[10.0], [20.0], [30.0]])
    torch.manual_seed(0)
    model, loss_fn = torch.nn.Linear(2, 1), torch.nn.MSELoss()
    with torch.no_grad():
        initial = loss_fn(model(X), y).item()
    optimizer = guard(torch.optim.SGD(model.parameters(), lr=0.01), model, loss_fn)
    with pytest.raises(NonFiniteTrainingError, match="cause learning rate") as error:
        for _ in range(10):
            optimizer.zero_grad()
            loss_fn(model(X), y).backward()
            optimizer.step()
    (event,) = optimizer.events
    assert (event.cause, event.action) == ("learning_rate", "stopped")
    assert "SGD is stable only for learning rates below 2.14e-13" in str(error.value)
    with torch.no_grad():
        assert loss_fn(model(X), y).item() == initial


class InfOnShortBatches(torch.nn.Module):
    """MSE plus inf on a batch of fewer than ``rows`` rows: that loss is not finite, its
    gradients are."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows

    def forward(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(p, y)
        return loss + math.inf if len(y) < self.rows else loss


def test_a_non_finite_loss_with_finite_gradients_is_not_stepped(guard) -> None:
    X, y = regression_data()
    model = mlp()
    loss_fn = InfOnShortBatches(BATCH)
    optimizer = guard(
        torch.optim.SGD(model.parameters(), lr=0.1), model, loss_fn, on_failure="warn"
    )
    weights = [model[0].weight.detach().clone()]
    with pytest.warns(RuntimeWarning, match="cause loss function"):
        for start, stop in [(0, BATCH), (BATCH, 2 * BATCH), (2 * BATCH, 2 * BATCH + 8)]:
            optimizer.zero_grad()
            loss_fn(model(X[start:stop]), y[start:stop]).backward()
            assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
            optimizer.step()
            weights.append(model[0].weight.detach().clone())
        assert optimizer.skipped_steps == 1
    assert [e.cause for e in optimizer.events] == ["loss_function"]
    # Two steps taken; the third detected by its loss alone, and training stopped on the
    # weights kept before the first.
    assert not torch.equal(weights[0], weights[2]) and torch.equal(weights[0], weights[3])


def test_a_cut_survives_a_learning_rate_scheduler(guard) -> None:
    X, y = regression_data()
    loss_fn = torch.nn.MSELoss()
    model = relu_mlp()
    optimizer = guard(
        torch.optim.SGD(model.parameters(), lr=1.0), model, loss_fn, steps_per_epoch=ROWS // BATCH
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0 + 0.1 * epoch)
    train(model, optimizer, loss_fn, X, y, epochs=10, scheduler=scheduler)
    cut = optimizer.events[0].learning_rate_after
    assert cut < 1.0
    # LambdaLR recomputes base_lr * factor each epoch: the cut is in its base rate now.
    assert scheduler.base_lrs[0] < 1.0
    assert optimizer.param_groups[0]["lr"] == pytest.approx(scheduler.base_lrs[0] * 2.0)
    assert all_finite(model)


def test_gradscaler_and_autocast_work_through_the_guard(guard) -> None:
    X, y = regression_data()
    model = mlp()
    loss_fn = torch.nn.MSELoss()
    optimizer = guard(torch.optim.Adam(model.parameters(), lr=0.01), model, loss_fn)
    before = clean_loss(model, X, y)
    train_mixed_precision(model, optimizer, loss_fn, X, y, epochs=5)
    assert optimizer.events == [] and all_finite(model)
    assert clean_loss(model, X, y) < 0.5 * before


def test_an_optimizer_state_dict_round_trips(guard) -> None:
    model = mlp()
    optimizer = guard(torch.optim.Adam(model.parameters()), model, torch.nn.MSELoss())
    X, y = regression_data()
    train(model, optimizer, torch.nn.MSELoss(), X, y, epochs=1)
    state = optimizer.state_dict()
    fresh = torch.optim.Adam(model.parameters())
    fresh.load_state_dict(state)
    assert fresh.state_dict()["state"][0]["step"] == ROWS // BATCH


def batchnorm_mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 32), torch.nn.BatchNorm1d(32), torch.nn.Tanh(), torch.nn.Linear(32, 1)
    )


def test_a_bad_row_leaves_batchnorm_running_statistics_finite(guard) -> None:
    X, y = regression_data()
    X[40, 1] = math.nan
    model, loss_fn = batchnorm_mlp(), torch.nn.MSELoss()
    optimizer = guard(torch.optim.SGD(model.parameters(), lr=0.05), model, loss_fn)
    train(model, optimizer, loss_fn, X, y, epochs=3)
    assert [e.cause for e in optimizer.events] == ["data"]
    # The forward averaged the NaN row into the running statistics before step() saw it:
    # without a repair every evaluation after training is NaN.
    norm = model[1]
    assert torch.isfinite(norm.running_mean).all() and torch.isfinite(norm.running_var).all()
    model.eval()
    assert math.isfinite(clean_loss(model, X, y))


def test_a_bad_row_in_an_accumulated_micro_batch_is_named_and_left_out(guard) -> None:
    X, y = regression_data()
    bad = X.clone()
    bad[5, 1] = math.nan  # in the first of the two micro-batches of the first step
    loss_fn = torch.nn.MSELoss()
    finals = []
    for data in (X, bad):
        model = mlp()
        optimizer = guard(
            torch.optim.SGD(model.parameters(), lr=0.1), model, loss_fn, data=(data, y)
        )
        for _ in range(10):
            for start in range(0, ROWS, 2 * BATCH):
                optimizer.zero_grad()
                for micro in (start, start + BATCH):
                    loss = loss_fn(model(data[micro : micro + BATCH]), y[micro : micro + BATCH])
                    (loss / 2).backward()
                optimizer.step()
        finals.append(clean_loss(model, X, y))
    # Without the earlier micro-batch the replay saw a clean batch: cause 'unknown', one
    # "remedy" an epoch, and training stopped after five.
    assert [(e.cause, e.rows, e.count) for e in optimizer.events] == [("data", (5,), 10)]
    assert all_finite(model) and finals[1] == pytest.approx(finals[0], rel=0.05)


@pytest.mark.parametrize("kind", ["one_cycle", "cyclic"])
def test_a_cut_survives_schedulers_that_keep_their_own_peak_rate(kind: str, guard) -> None:
    X, y = regression_data()
    loss_fn = torch.nn.MSELoss()
    model = relu_mlp()
    steps = ROWS // BATCH
    optimizer = guard(
        torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9),
        model,
        loss_fn,
        steps_per_epoch=steps,
    )
    if kind == "one_cycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=2.0, total_steps=8 * steps
        )
    else:
        scheduler = torch.optim.lr_scheduler.CyclicLR(
            optimizer, base_lr=0.5, max_lr=2.0, step_size_up=2 * steps
        )
    rates = []
    for _ in range(8):
        for start in range(0, ROWS, BATCH):
            optimizer.zero_grad()
            loss_fn(model(X[start : start + BATCH]), y[start : start + BATCH]).backward()
            optimizer.step()
            scheduler.step()
            rates.append((len(optimizer.events), optimizer.param_groups[0]["lr"]))
    # OneCycleLR recomputes the rate from max_lr/min_lr in the groups, CyclicLR from its
    # max_lrs: a cut of the base rate alone was undone, one event after another, until
    # the guard stopped.
    (event,) = optimizer.events
    factor = event.learning_rate_after / event.learning_rate_before
    assert event.cause == "learning_rate" and factor < 0.5
    assert max(rate for events, rate in rates if events) <= 2.0 * factor * (1 + 1e-9)
    assert all_finite(model)


@pytest.mark.parametrize("order", ["model_then_guard", "guard_then_model"])
def test_a_rollback_after_resuming_restores_the_loaded_checkpoint(order: str, guard) -> None:
    X, y = regression_data()
    loss_fn = torch.nn.MSELoss()
    model = mlp()
    optimizer = guard(torch.optim.Adam(model.parameters(), lr=0.01), model, loss_fn)
    train(model, optimizer, loss_fn, X, y, epochs=5)
    checkpoint = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    resumed = mlp(seed=1)
    if order == "model_then_guard":
        resumed.load_state_dict(checkpoint["model"])
    optimizer = guard(torch.optim.Adam(resumed.parameters(), lr=0.01), resumed, loss_fn)
    if order == "guard_then_model":
        resumed.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    for group in optimizer.param_groups:
        group["lr"] = 50.0  # the first resumed steps diverge
    for start in range(0, ROWS, BATCH):
        optimizer.zero_grad()
        loss_fn(resumed(X[start : start + BATCH]), y[start : start + BATCH]).backward()
        optimizer.step()
        if optimizer.events:
            break
    assert optimizer.events[0].restored_from == (0, -1)
    # The copy taken when the guard was built held the untrained model (or no Adam state):
    # the rollback threw the checkpoint away.
    for key, value in checkpoint["model"].items():
        assert torch.equal(resumed.state_dict()[key], value), key
    steps = {i: s["step"] for i, s in optimizer.state_dict()["state"].items()}
    assert steps == {i: s["step"] for i, s in checkpoint["optimizer"]["state"].items()}


def test_an_evaluation_forward_between_steps_is_not_trained_on_by_a_retake(guard) -> None:
    X, y = regression_data()
    bad = X.clone()
    bad[40, 1] = math.nan
    loss_fn = torch.nn.MSELoss()
    weights = []
    for gradients in (False, True):
        model = mlp()
        optimizer = guard(torch.optim.SGD(model.parameters(), lr=0.1), model, loss_fn)
        for start in range(0, ROWS, BATCH):
            model.train()
            optimizer.zero_grad()
            loss_fn(model(bad[start : start + BATCH]), y[start : start + BATCH]).backward()
            optimizer.step()
            model.eval()  # an evaluation that forgot torch.no_grad() (or needs gradients)
            with torch.set_grad_enabled(gradients):
                loss_fn(model(X[-BATCH:]), y[-BATCH:])
        weights.append([p.detach().clone() for p in model.parameters()])
    # The retake of the bad batch's step ran on its good rows only, as with no_grad.
    assert [e.cause for e in optimizer.events] == ["data"]
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_a_group_added_for_fine_tuning_is_guarded_too(guard) -> None:
    X, y = regression_data()
    X[200, 1] = math.nan  # reached after the first layer is unfrozen
    model, loss_fn = mlp(), torch.nn.MSELoss()
    model[0].requires_grad_(False)
    optimizer = guard(
        torch.optim.SGD(model[2].parameters(), lr=0.1, momentum=0.9), model, loss_fn, data=(X, y)
    )
    for start in range(0, ROWS, BATCH):
        if start == 4 * BATCH:
            model[0].requires_grad_(True)
            optimizer.add_param_group({"params": list(model[0].parameters()), "lr": 0.01})
        optimizer.zero_grad()
        loss_fn(model(X[start : start + BATCH]), y[start : start + BATCH]).backward()
        optimizer.step()
    # The guard checked and masked only the parameters it was built with: on the
    # sync-free path the new group took the NaN update.
    assert [(e.cause, e.rows) for e in optimizer.events] == [("data", (200,))]
    assert all_finite(model) and len(optimizer.optimizer.param_groups) == 2


@pytest.mark.parametrize("set_to_none", [True, False], ids=["set_to_none", "zeroed_in_place"])
def test_a_bad_row_is_named_when_gradscaler_skips_its_step(set_to_none: bool, guard) -> None:
    X, y = regression_data()
    X[40, 1] = math.nan
    model, loss_fn = mlp(), torch.nn.MSELoss()
    optimizer = guard(torch.optim.Adam(model.parameters(), lr=0.01), model, loss_fn, data=(X, y))
    # GradScaler finds the NaN gradients: optimizer.step() is not called for that batch.
    # zero_grad(set_to_none=False) keeps the same gradient tensors from step to step.
    train_mixed_precision(model, optimizer, loss_fn, X, y, epochs=3, set_to_none=set_to_none)
    # GradScaler skipped the batch each epoch, silently: no event, only a halved scale.
    [event] = optimizer.events
    assert (event.cause, event.rows, event.count) == ("data", (40,), 3)
    assert "step() was not called" in event.message and optimizer.skipped_steps == 3
    assert all_finite(model)


def test_a_forward_before_zero_grad_is_not_taken_for_a_skipped_step(guard) -> None:
    X, y = regression_data()
    X[40, 1] = math.nan
    model, loss_fn = mlp(), torch.nn.MSELoss()
    optimizer = guard(torch.optim.SGD(model.parameters(), lr=0.1), model, loss_fn, data=(X, y))
    for _ in range(2):
        for start in range(0, ROWS, BATCH):
            loss = loss_fn(model(X[start : start + BATCH]), y[start : start + BATCH])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    [event] = optimizer.events
    assert (event.rows, event.count) == ((40,), 2) and optimizer.skipped_steps == 0


class TwoInputs(torch.nn.Module):
    """A model called as ``model(u, v)``, or with ``v`` by keyword."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.u, self.v, self.out = (
            torch.nn.Linear(2, 8),
            torch.nn.Linear(2, 8),
            torch.nn.Linear(8, 1),
        )

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.u(u) + self.v(v)))


@pytest.mark.parametrize("call", ["positional", "keyword"])
def test_a_bad_row_in_a_models_second_input_is_left_out(call: str, guard) -> None:
    """The hook kept the first positional input only: the replay called model(u) and
    crashed the loop (TypeError), and a keyword input was not seen at all, its NaN taken
    for exploding gradients and 'clipped'."""
    X, y = regression_data()
    X[40, 3] = math.nan
    model, loss_fn = TwoInputs(), torch.nn.MSELoss()
    optimizer = guard(torch.optim.Adam(model.parameters(), lr=0.01), model, loss_fn)
    for _ in range(2):
        for start in range(0, ROWS, BATCH):
            u, v = X[start : start + BATCH, :2], X[start : start + BATCH, 2:]
            optimizer.zero_grad()
            prediction = model(u, v) if call == "positional" else model(u=u, v=v)
            loss_fn(prediction, y[start : start + BATCH]).backward()
            optimizer.step()
    [event] = optimizer.events
    assert (event.cause, event.action, event.count) == ("data", "masked", 2)
    assert event.columns == (("input 1",) if call == "positional" else ("v",))
    assert event.message.startswith("row 8 of its batch (not named in your data: give")
    assert optimizer.skipped_steps == 0 and all_finite(model)  # retaken on the other rows


def trained_with_a_functional_loss(guard, make_optimizer) -> torch.optim.Optimizer:
    """An epoch with ``F.mse_loss`` (no loss module) on data with a NaN at row 40."""
    X, y = regression_data()
    X[40, 1] = math.nan
    model = mlp()
    optimizer = guard(make_optimizer(model.parameters()), model, data=(X, y))
    for start in range(0, ROWS, BATCH):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(
            model(X[start : start + BATCH]), y[start : start + BATCH]
        ).backward()
        optimizer.step()
    return optimizer


def test_a_bad_row_is_named_in_data_with_a_functional_loss(guard) -> None:
    """Without a loss module the targets are not seen: the rows were matched against
    x and y together, never found, and said as '1 row(s)'."""
    optimizer = trained_with_a_functional_loss(
        guard, lambda parameters: torch.optim.Adam(parameters, lr=0.01)
    )
    [event] = optimizer.events
    assert event.rows == (40,) and "row 40 of the data with NaN or inf in x[:, 1]" in event.message


class DictOutput(torch.nn.Module):
    """A model returning a dict, as Hugging Face models do; the loss takes one entry."""

    def __init__(self) -> None:
        super().__init__()
        self.net = relu_mlp()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        prediction = self.net(x)
        return {"prediction": prediction, "mean": prediction.mean()}


@pytest.mark.parametrize("failure", ["bad_row", "learning_rate"])
def test_a_model_returning_a_dict_is_replayed_and_retaken(failure: str, guard) -> None:
    X, y = regression_data()
    if failure == "bad_row":
        X[40, 1] = math.nan
    model, loss_fn = DictOutput(), torch.nn.MSELoss()
    rate = 0.05 if failure == "bad_row" else 3.0
    optimizer = guard(torch.optim.SGD(model.parameters(), lr=rate), model, loss_fn, data=(X, y))
    for _ in range(3):
        for start in range(0, ROWS, BATCH):
            optimizer.zero_grad()
            output = model(X[start : start + BATCH])
            loss_fn(output["prediction"], y[start : start + BATCH]).backward()
            optimizer.step()
    # The replay and the retake gave the loss the whole dict: TypeError / AttributeError.
    causes = {e.cause for e in optimizer.events}
    assert causes == ({"data"} if failure == "bad_row" else {"learning_rate"})
    assert all_finite(model)
    if failure == "learning_rate":  # the curvature, too, from the dict's prediction
        assert "Hessian power iteration" in optimizer.events[0].message
