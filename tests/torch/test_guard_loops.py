"""``stablefit.torch.guard`` in training loops off the README's path: a loss module shared
by two guarded optimizers (a GAN), a loss made of several loss_fn calls or of terms the
guard does not see, a loss given a reshape of the output. Each failure for real."""

from __future__ import annotations

import math
import warnings

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from stablefit import torch as stablefit_torch  # noqa: E402
from stablefit.guard import NonFiniteTrainingError  # noqa: E402
from tests.torch.test_guard import (  # noqa: E402
    BATCH,
    ROWS,
    all_finite,
    clean_loss,
    mlp,
    regression_data,
    relu_mlp,
    trained_with_a_functional_loss,
)


@pytest.fixture(params=[None, True], ids=["default", "sync_free"])
def guard(request):
    def guarded(*args, **kwargs):
        return stablefit_torch.guard(*args, sync_free=request.param, **kwargs)

    return guarded


def gan_samples(rows: int = 256, scale: tuple[float, float] = (0.5, 2.0)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(rows, 2, generator=generator) * torch.tensor(scale) + 1.0


def assert_same_parameters(expected: tuple, got: tuple) -> None:
    """The models ``got`` hold exactly the weights of the models ``expected``."""
    for a, b in zip(
        [p for model in expected for p in model.parameters()],
        [p for model in got for p in model.parameters()],
        strict=True,
    ):
        assert torch.equal(a, b)


def train_gan(
    guard,
    *,
    bad_noise_at: int | None = None,
    bad_real_row: int | None = None,
    epochs: int = 6,
    least_squares: bool = False,
    clear: str = "optimizer",
):
    """The usual GAN loop: one BCEWithLogitsLoss (MSELoss for a least-squares GAN) for
    both networks; the discriminator's step, then the generator's through the
    discriminator (whose gradients that fills, and its own zero_grad() clears; or
    ``clear="model"``: ``discriminator.zero_grad()``, as PyTorch's DCGAN tutorial does,
    which the guard does not see)."""
    torch.manual_seed(0)
    width = 32 if least_squares else 16
    discriminator = torch.nn.Sequential(
        torch.nn.Linear(2, width), torch.nn.LeakyReLU(0.2), torch.nn.Linear(width, 1)
    )
    generator = torch.nn.Sequential(
        torch.nn.Linear(4, width), torch.nn.ReLU(), torch.nn.Linear(width, 2)
    )
    if least_squares:
        loss_fn = torch.nn.MSELoss()
        optimizer_d = torch.optim.SGD(discriminator.parameters(), lr=0.05, momentum=0.9)
    else:
        loss_fn = torch.nn.BCEWithLogitsLoss()
        optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    real_samples = gan_samples(512, (0.5, 0.5)) if least_squares else gan_samples()
    if bad_real_row is not None:
        real_samples[bad_real_row, 1] = math.nan
    steps = len(real_samples) // 64
    if guard is not None:
        optimizer_d = guard(optimizer_d, discriminator, loss_fn, steps_per_epoch=steps)
        optimizer_g = guard(optimizer_g, generator, loss_fn, steps_per_epoch=steps)
    step = 0
    for _ in range(epochs):
        for start in range(0, len(real_samples), 64):
            real = real_samples[start : start + 64]
            noise = torch.randn(64, 4)
            if step == bad_noise_at:
                noise[5, 2] = math.nan
            ones, zeros = torch.ones(64, 1), torch.zeros(64, 1)
            (discriminator if clear == "model" else optimizer_d).zero_grad()
            fake = generator(noise)
            loss_d = loss_fn(discriminator(real), ones) + loss_fn(
                discriminator(fake.detach()), zeros
            )
            loss_d.backward()
            optimizer_d.step()
            (generator if clear == "model" else optimizer_g).zero_grad()
            loss_fn(discriminator(fake), ones).backward()
            optimizer_g.step()
            step += 1
    return discriminator, generator, optimizer_d, optimizer_g


def test_a_clean_gan_with_a_shared_loss_is_untouched(guard) -> None:
    plain_d, plain_g, *_ = train_gan(None)
    discriminator, generator, optimizer_d, optimizer_g = train_gan(guard)
    # The generator's backward() fills the discriminator's gradients, which its own
    # zero_grad() then clears: every discriminator step was counted as skipped.
    assert optimizer_d.skipped_steps == optimizer_g.skipped_steps == 0
    assert optimizer_d.events == optimizer_g.events == []
    assert_same_parameters((plain_d, plain_g), (discriminator, generator))


def test_a_generator_loss_rising_as_its_discriminator_learns_is_no_divergence(guard) -> None:
    plain_d, plain_g, *_ = train_gan(None, least_squares=True, epochs=3)
    discriminator, generator, optimizer_d, optimizer_g = train_gan(
        guard, least_squares=True, epochs=3
    )
    # The generator's loss, through a discriminator that learns, rose ten times its
    # minimum: taken for a learning rate too high, the generator was rolled back to its
    # untrained weights and its rate cut tenfold, again and again (2e-3 to 2e-15 in 20
    # epochs), and it never learned the data.
    assert optimizer_g.events == [] and optimizer_g.param_groups[0]["lr"] == 2e-3
    assert {(e.cause, e.action) for e in optimizer_d.events} <= {("unknown", "kept")}
    assert_same_parameters((plain_d, plain_g), (discriminator, generator))


def test_a_bad_noise_row_in_a_gan_is_named_by_each_guard_once(guard) -> None:
    discriminator, generator, optimizer_d, optimizer_g = train_gan(guard, bad_noise_at=9)
    # The generator's retake gave the loss its own output for the discriminator's
    # (ValueError: target size (63, 1) against input size (63, 2)): the loop crashed.
    [event_g] = optimizer_g.events
    assert (event_g.cause, event_g.epoch, event_g.batch) == ("data", 2, 1)
    assert event_g.columns == ("x[:, 2]",) and event_g.message.startswith("row 5 of its batch")
    assert "the step of its batch was skipped, as the guard cannot compute the loss" in (
        event_g.message
    )
    # Its loss is the discriminator's output on its own: not the discriminator step's
    # two losses, which the hook on the shared loss saw as well.
    assert "loss_fn was given something computed from the model's output" in event_g.message
    assert optimizer_g.skipped_steps == 1
    # The discriminator trained on the NaN fake row in its own step (row 64 + 5 of its
    # real and fake rows), left out; the generator's NaN step, whose gradients it then
    # cleared, is not its own: no second event 'step() was not called (GradScaler...)'.
    [event_d] = optimizer_d.events
    assert (event_d.cause, event_d.batch, event_d.action) == ("data", 1, "masked")
    assert event_d.message.startswith("row 69 of its batch")
    assert optimizer_d.skipped_steps == 0
    assert all_finite(discriminator) and all_finite(generator)


def test_a_bad_real_row_is_left_out_of_the_discriminator_step_alone(guard) -> None:
    """With ``discriminator.zero_grad()`` the discriminator's guard kept the generator
    step's forward through it in the next batch: the retake ran it again and its
    backward() reached the generator's freed graph (RuntimeError in the loop)."""
    runs = [train_gan(guard, bad_real_row=70, clear=clear) for clear in ("optimizer", "model")]
    for discriminator, generator, optimizer_d, optimizer_g in runs:
        [event] = optimizer_d.events
        assert (event.cause, event.action, event.count) == ("data", "masked", 6)
        assert event.message.startswith("row 6 of its batch")  # of its 64 real rows
        assert optimizer_d.skipped_steps == 0 and optimizer_g.events == []
        assert all_finite(discriminator) and all_finite(generator)
    # The retake is the discriminator's step on its own batch without the row, however
    # the loop clears the gradients (not on the generator step's fakes labelled real).
    for a, b in zip(runs[0][0].parameters(), runs[1][0].parameters(), strict=True):
        assert torch.equal(a, b)


def train_in_halves(model, optimizer, loss_fn, X, y, *, epochs: int) -> None:
    """A loss made of two loss_fn calls, one for each half of the batch."""
    half = BATCH // 2
    for _ in range(epochs):
        for start in range(0, ROWS, BATCH):
            xb, yb = X[start : start + BATCH], y[start : start + BATCH]
            optimizer.zero_grad()
            out = model(xb)
            loss = loss_fn(out[:half], yb[:half]) + loss_fn(out[half:], yb[half:])
            loss.backward()
            optimizer.step()


def test_a_bad_target_in_one_of_several_loss_calls_is_named_in_that_call(guard) -> None:
    X, y = regression_data()
    loss_fn = torch.nn.MSELoss()
    clean = mlp()
    train_in_halves(clean, torch.optim.SGD(clean.parameters(), lr=0.05), loss_fn, X, y, epochs=10)
    bad_y = y.clone()
    bad_y[5, 0] = math.nan  # in the first call's target, of the first batch
    model = mlp()
    optimizer = guard(
        torch.optim.SGD(model.parameters(), lr=0.05), model, loss_fn, steps_per_epoch=8
    )
    train_in_halves(model, optimizer, loss_fn, X, bad_y, epochs=1)
    train_in_halves(model, optimizer, loss_fn, X, y, epochs=9)
    # The guard paired the last call's 16 targets with the batch's 32 rows: RuntimeError
    # in the user's loop.
    [event] = optimizer.events
    assert (event.cause, event.batch, event.columns) == ("data", 0, ("y",))
    assert event.message.startswith("row 5 of the target of loss_fn's call 1 of 2")
    assert "loss_fn was called 2 times for 1 forward(s)" in event.message
    assert optimizer.skipped_steps == 1 and all_finite(model)
    assert clean_loss(model, X, y) <= 1.5 * clean_loss(clean, X, y)


def test_a_retake_gives_the_loss_the_output_reshaped_as_the_user_did(guard) -> None:
    """``loss_fn(model(x).squeeze(1), y)``: the retake gave the loss the (31, 1) output
    against the (31,) targets, which MSELoss broadcasts to (31, 31), with a warning."""
    X, y = regression_data()
    X[5, 0] = math.nan
    xb, yb = X[:BATCH], y[:BATCH, 0]
    loss_fn = torch.nn.MSELoss()
    model, reference = mlp(), mlp()
    optimizer = guard(torch.optim.SGD(model.parameters(), lr=0.1), model, loss_fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.zero_grad()
        loss_fn(model(xb).squeeze(1), yb).backward()
        optimizer.step()
        events = optimizer.events
    assert [(e.cause, e.action) for e in events] == [("data", "masked")]
    assert optimizer.skipped_steps == 0  # retaken on the other 31 rows
    keep = torch.arange(BATCH) != 5
    step = torch.optim.SGD(reference.parameters(), lr=0.1)
    loss_fn(reference(xb[keep]).squeeze(1), yb[keep]).backward()
    step.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_step_that_cannot_be_retaken_says_its_batch_was_skipped(guard) -> None:
    optimizer = trained_with_a_functional_loss(
        guard, lambda parameters: torch.optim.SGD(parameters, lr=0.05)
    )
    # It said "left out of the step (the other rows trained as usual...)" of a step the
    # functional loss left no way to take again.
    [event] = optimizer.events
    assert optimizer.skipped_steps == 1
    assert "the step of its batch was skipped, as the guard cannot compute the loss" in (
        event.message
    )
    assert "loss_fn is not an nn.Module loss" in event.message


def test_a_nan_in_a_term_the_guard_does_not_see_is_said_so_and_skipped(guard) -> None:
    """``loss_fn(out, y) + F.mse_loss(out, y_aux)`` with a NaN in ``y_aux``, which only
    the user's loss sees: its gradient was taken for an exploding one ('the gradient norm
    reached NaN, inf times its running median'), clipped once an epoch, and the sixth
    epoch stopped training."""
    X, y = regression_data()
    loss_fn = torch.nn.MSELoss()
    finals = []
    for bad in (False, True):
        y_aux = y.clone()
        if bad:
            y_aux[50, 0] = math.nan
        model = mlp()
        optimizer = guard(
            torch.optim.SGD(model.parameters(), lr=0.05), model, loss_fn, steps_per_epoch=8
        )
        for _ in range(8):
            for start in range(0, ROWS, BATCH):
                optimizer.zero_grad()
                out = model(X[start : start + BATCH])
                loss = loss_fn(out, y[start : start + BATCH])
                (loss + torch.nn.functional.mse_loss(out, y_aux[start : start + BATCH])).backward()
                optimizer.step()
        finals.append(clean_loss(model, X, y))
    assert len(optimizer.events) == 8 and optimizer.skipped_steps == 8
    for event in optimizer.events:
        assert (event.cause, event.action, event.batch) == ("unknown", "skipped", 1)
        assert "adds something MSELoss did not compute" in event.message
    assert optimizer.clipnorm is None and all_finite(model)
    assert finals[1] <= 1.5 * finals[0]


@pytest.mark.parametrize("scale", [1e4, 1e5], ids=["backward_overflow", "forward_overflow"])
def test_gradscaler_skipping_every_step_for_a_float16_overflow_is_not_silent(
    scale: float, guard
) -> None:
    """float16 autocast, GradScaler: inputs of 1e5 make the first layer's float16 output
    overflow on every batch; GradScaler skipped all 40 steps, its scale falling to 6e-8,
    and the guard said nothing. Inputs of 1e4 overflow only the backward pass at the
    scale GradScaler starts from: it lowers the scale, a few steps skipped, no event."""
    X, _ = regression_data()
    X = X * scale
    y = torch.tanh(X[:, :1] / scale)
    model, loss_fn = mlp(), torch.nn.MSELoss()
    optimizer = guard(torch.optim.Adam(model.parameters(), lr=0.01), model, loss_fn)
    scaler = torch.amp.GradScaler("cpu")

    def train() -> None:
        for _ in range(5):
            for start in range(0, ROWS, BATCH):
                optimizer.zero_grad()
                with torch.autocast("cpu", dtype=torch.float16):
                    loss = loss_fn(model(X[start : start + BATCH]), y[start : start + BATCH])
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

    if scale == 1e4:
        train()
        assert optimizer.events == [] and 0 < optimizer.skipped_steps <= 5
    else:
        with pytest.raises(NonFiniteTrainingError, match="cause precision"):
            train()
        [event] = optimizer.events
        assert (event.cause, event.action, event.evidence["layer"]) == ("precision", "stopped", "0")
        assert "computes in float16" in event.message
    assert all_finite(model)


def lbfgs_closure(model, optimizer, loss_fn, xb, yb):
    def closure():
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        return loss

    return closure


def test_lbfgs_steps_through_the_guard_and_a_bad_row_is_left_out(guard) -> None:
    """LBFGS's step must be given the closure (it evaluates the loss several times a
    step): the guard called it without, and the first step raised TypeError."""
    X, y = regression_data()
    bad = X.clone()
    bad[37, 0] = math.nan
    loss_fn = torch.nn.MSELoss()
    model, reference = mlp(), mlp()
    optimizer = guard(torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5), model, loss_fn)
    plain = torch.optim.LBFGS(reference.parameters(), lr=0.5, max_iter=5)
    for start in range(0, ROWS, BATCH):
        xb, yb = bad[start : start + BATCH], y[start : start + BATCH]
        keep = torch.isfinite(xb).all(dim=1)
        optimizer.step(lbfgs_closure(model, optimizer, loss_fn, xb, yb))
        plain.step(lbfgs_closure(reference, plain, loss_fn, xb[keep], yb[keep]))
    [event] = optimizer.events
    assert (event.cause, event.action, event.batch) == ("data", "masked", 1)
    assert optimizer.skipped_steps == 0
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)  # the retake is LBFGS's step on the other 31 rows


def test_a_sequence_batch_flattened_for_the_loss_names_its_bad_step_and_feature(guard) -> None:
    """``loss_fn(out.reshape(-1, C), y.reshape(-1))`` over (batch, step, feature) inputs:
    the retake cut the 160 flattened targets with the batch's 16-row mask (IndexError in
    the loop), and the column was said as ``x[:, 13]``."""
    torch.manual_seed(0)
    X = torch.randn(64, 10, 3)
    Y = (X.sum(-1) > 0).long()
    X[37, 4, 1] = math.nan
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    loss_fn = torch.nn.CrossEntropyLoss()
    optimizer = guard(torch.optim.Adam(model.parameters(), lr=0.01), model, loss_fn, data=(X, Y))
    for _ in range(3):
        for start in range(0, 64, 16):
            optimizer.zero_grad()
            out = model(X[start : start + 16])
            loss_fn(out.reshape(-1, 2), Y[start : start + 16].reshape(-1)).backward()
            optimizer.step()
    [event] = optimizer.events
    assert (event.cause, event.rows, event.columns, event.count) == (
        "data",
        (37,),
        ("x[:, 4, 1]",),
        3,
    )
    assert "loss_fn's targets have 160 rows and the batch 16" in event.message
    assert optimizer.skipped_steps == 3 and all_finite(model)


@pytest.mark.parametrize("when", ["from_the_start", "written_mid_training"])
def test_weights_that_hold_nan_before_a_step_are_said_so(when: str, guard) -> None:
    """A NaN in a weight (a corrupt checkpoint, or code writing into the weights): every
    step failed alike, each said 'the inputs, the layers' outputs and the predictions were
    finite when the batch was replayed' (they were not), and the sixth stopped training."""
    X, y = regression_data()
    model, loss_fn = mlp(), torch.nn.MSELoss()
    if when == "from_the_start":
        with torch.no_grad():
            model[0].weight[3, 1] = math.nan
    optimizer = guard(
        torch.optim.Adam(model.parameters(), lr=0.01), model, loss_fn, steps_per_epoch=8
    )
    for epoch in range(4):
        if epoch == 2 and when == "written_mid_training":
            with torch.no_grad():
                model[0].weight[3, 1] = math.nan
        for start in range(0, ROWS, BATCH):
            optimizer.zero_grad()
            loss_fn(model(X[start : start + BATCH]), y[start : start + BATCH]).backward()
            if when == "from_the_start" and start == 0 and epoch == 0:
                with pytest.raises(NonFiniteTrainingError, match="holds 1 NaN or inf value"):
                    optimizer.step()
                break
            optimizer.step()
        if optimizer.stopped:
            break
    [event] = optimizer.events
    assert (event.trigger, event.cause) == ("nonfinite_weights", "unknown")
    assert event.message.startswith("the weight 0.weight holds 1 NaN or inf value(s) of 128")
    if when == "from_the_start":
        assert event.action == "stopped" and event.restored_from is None
    else:  # back to the best copy kept before it, and on
        assert event.action == "rolled_back" and event.restored_from[0] == 1
        assert all_finite(model) and not optimizer.stopped


@pytest.mark.parametrize("failure", ["bad_row", "learning_rate"])
def test_a_loss_per_row_weighted_outside_loss_fn(failure: str, guard) -> None:
    """``(MSELoss(reduction="none")(out, y) * weights).mean()``: the retake called
    backward() on the per-row losses, and the curvature's Hessian wanted a scalar: a
    RuntimeError in the loop either way."""
    X, y = regression_data()
    weights = torch.rand(ROWS, 1, generator=torch.Generator().manual_seed(0))
    if failure == "bad_row":
        X[37, 0] = math.nan
    model = mlp() if failure == "bad_row" else relu_mlp()
    loss_fn = torch.nn.MSELoss(reduction="none")
    rate = 0.1 if failure == "bad_row" else 3.0
    optimizer = guard(
        torch.optim.SGD(model.parameters(), lr=rate), model, loss_fn, steps_per_epoch=8
    )
    for _ in range(3):
        for start in range(0, ROWS, BATCH):
            rows = slice(start, start + BATCH)
            optimizer.zero_grad()
            (loss_fn(model(X[rows]), y[rows]) * weights[rows]).mean().backward()
            optimizer.step()
    if failure == "bad_row":
        [event] = optimizer.events
        assert (event.cause, event.count) == ("data", 3) and optimizer.skipped_steps == 3
        assert "loss_fn gives a loss per row (reduction='none')" in event.message
    else:
        assert optimizer.events[0].cause == "learning_rate"
        assert optimizer.param_groups[0]["lr"] < rate
    assert all_finite(model)


class DictInput(torch.nn.Module):
    """A model called with one dict of inputs, ``model({"u": ..., "v": ...})``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.u, self.v = torch.nn.Linear(2, 16), torch.nn.Linear(2, 16)
        self.out = torch.nn.Linear(16, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.out(torch.relu(self.u(batch["u"]) + self.v(batch["v"])))


@pytest.mark.parametrize("failure", ["bad_row", "learning_rate"])
def test_a_model_given_a_dict_of_inputs(failure: str, guard) -> None:
    """The guard looked for a tensor among the model's arguments and found none: a NaN
    row was 'exploding gradients', clipped tighter every epoch, never named."""
    X, y = regression_data()
    if failure == "bad_row":
        X[37, 3] = math.nan
    model, loss_fn = DictInput(), torch.nn.MSELoss()
    rate = 0.05 if failure == "bad_row" else 3.0
    optimizer = guard(
        torch.optim.SGD(model.parameters(), lr=rate), model, loss_fn, steps_per_epoch=8
    )
    for _ in range(3):
        for start in range(0, ROWS, BATCH):
            rows = slice(start, start + BATCH)
            optimizer.zero_grad()
            loss_fn(model({"u": X[rows, :2], "v": X[rows, 2:]}), y[rows]).backward()
            optimizer.step()
    if failure == "bad_row":
        [event] = optimizer.events
        assert (event.cause, event.columns, event.count) == ("data", ("input 0['v']",), 3)
        assert optimizer.skipped_steps == 0 and optimizer.clipnorm is None  # retaken
    else:
        assert optimizer.events[0].cause == "learning_rate"
    assert all_finite(model)


class Distances(torch.nn.Module):
    """Distances to learned centres, the square root written by hand: its derivative is
    infinite at 0, for a row exactly on a centre."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.centres = torch.nn.Parameter(torch.randn(8, 4))
        self.out = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squares = ((x[:, None, :] - self.centres[None]) ** 2).sum(-1)
        return self.out(torch.sqrt(squares))


def test_a_gradient_made_nan_by_the_backward_pass_is_said_so(guard) -> None:
    """It said 'the inputs, the layers' outputs and the loss were finite ..., the gradient
    norm was ordinary' (it was NaN) and had the user 'look for randomness in the model'."""
    X, y = regression_data()
    model, loss_fn = Distances(), torch.nn.MSELoss()
    X[5] = model.centres.detach()[2]  # in the first batch, before the centres move
    optimizer = guard(torch.optim.Adam(model.parameters(), lr=0.01), model, loss_fn)
    for start in range(0, ROWS, BATCH):
        optimizer.zero_grad()
        loss_fn(model(X[start : start + BATCH]), y[start : start + BATCH]).backward()
        optimizer.step()
    [event] = optimizer.events
    assert (event.cause, event.action, event.batch) == ("unknown", "skipped", 0)
    assert "but the gradients are not: an operation's derivative is infinite" in event.message
    assert "torch.autograd.detect_anomaly()" in event.fix
    assert optimizer.skipped_steps == 1 and all_finite(model)


def test_a_loss_given_its_target_by_keyword(guard) -> None:
    """``loss_fn(out, target=y)``: the hook on the loss took positional arguments only,
    so the guard saw no loss and no target: a NaN target was 'exploding gradients' and
    clipped, and no loss history was kept to see a spike by."""
    X, y = regression_data()
    y[50, 0] = math.nan
    model, loss_fn = mlp(), torch.nn.MSELoss()
    optimizer = guard(torch.optim.SGD(model.parameters(), lr=0.05), model, loss_fn, data=(X, y))
    for start in range(0, ROWS, BATCH):
        optimizer.zero_grad()
        loss_fn(model(X[start : start + BATCH]), target=y[start : start + BATCH]).backward()
        optimizer.step()
    [event] = optimizer.events
    assert (event.cause, event.rows, event.columns) == ("data", (50,), ("y",))
    assert optimizer.skipped_steps == 0 and optimizer.clipnorm is None  # retaken
    assert event.loss is not None and math.isnan(event.loss)  # the step's loss, seen


def test_a_rollback_restores_what_the_optimizer_trains_outside_the_model(guard) -> None:
    """``guard(SGD([*encoder.parameters(), *decoder.parameters()]), encoder, loss_fn)``:
    the copies held the encoder only, so a rollback left the diverged decoder in place;
    the loss spiked again after every cut (3 to 1.8e-4) until training stopped."""
    X, y = regression_data()
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU())
    decoder = torch.nn.Linear(32, 1)
    loss_fn = torch.nn.MSELoss()
    optimizer = guard(
        torch.optim.SGD([*encoder.parameters(), *decoder.parameters()], lr=3.0),
        encoder,
        loss_fn,
        steps_per_epoch=8,
    )
    for _ in range(6):
        for start in range(0, ROWS, BATCH):
            optimizer.zero_grad()
            loss_fn(decoder(encoder(X[start : start + BATCH])), y[start : start + BATCH]).backward()
            optimizer.step()
    [event] = optimizer.events
    assert (event.cause, event.action) == ("learning_rate", "rolled_back")
    assert not optimizer.stopped and all_finite(encoder) and all_finite(decoder)
    with torch.no_grad():
        assert loss_fn(decoder(encoder(X)), y).item() < 0.2  # it trains at the rate set


class ComputesItsLoss(torch.nn.Module):
    """A model given the labels that returns its own loss, as Hugging Face models do:
    ``outputs = model(x, labels=y); outputs["loss"].backward()``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = relu_mlp()

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        return {"logits": logits, "loss": torch.nn.functional.mse_loss(logits, labels)}


@pytest.mark.parametrize("failure", ["bad_row", "learning_rate"])
def test_a_model_that_computes_its_own_loss(failure: str, guard) -> None:
    """Without loss_fn the guard saw no loss at all: a learning rate too high was
    'exploding gradients while the loss was not rising', clipped tighter at every step
    until training stopped; a bad row's step was skipped, not retaken."""
    X, y = regression_data()
    if failure == "bad_row":
        X[37, 0] = math.nan
    model = ComputesItsLoss()
    rate = 0.05 if failure == "bad_row" else 3.0
    optimizer = guard(torch.optim.SGD(model.parameters(), lr=rate), model, steps_per_epoch=8)
    for _ in range(3):
        for start in range(0, ROWS, BATCH):
            rows = slice(start, start + BATCH)
            optimizer.zero_grad()
            model(X[rows], labels=y[rows])["loss"].backward()
            optimizer.step()
    if failure == "bad_row":
        [event] = optimizer.events
        assert (event.cause, event.columns, event.count) == ("data", ("x[:, 0]",), 3)
        assert optimizer.skipped_steps == 0  # retaken: the model's loss on the other rows
    else:
        [event] = optimizer.events
        assert (event.cause, event.action) == ("learning_rate", "rolled_back")
        assert "the loss grew" in event.message
    assert all_finite(model) and optimizer.clipnorm is None
