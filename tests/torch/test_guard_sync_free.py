"""The guard's step decided on the device: a cancelled step leaves the model and the
optimizer bit for bit as if its batch never came, and no step reads the device."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from stablefit.torch import guard  # noqa: E402

STEPS, BATCH = 24, 16


def batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(STEPS * BATCH, 4, generator=generator)
    y = torch.sin(x[:, :1]) + 0.1 * torch.randn(STEPS * BATCH, 1, generator=generator)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


OPTIMIZERS = {
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
}


def train(model, optimizer, data) -> None:
    for xb, yb in data:
        optimizer.zero_grad()
        # A functional loss: the guard cannot retake the step without the bad row, so
        # the bad batch's step is cancelled, nothing else.
        torch.nn.functional.mse_loss(model(xb), yb).backward()
        optimizer.step()


@pytest.mark.parametrize("sync_free", [False, True], ids=["host_read", "sync_free"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
# 0: the first step (it creates the state, and reads its flag); 10: read with the steps
# after it at step 16; 20: still unread when the loop ends (``skipped_steps`` reads it).
@pytest.mark.parametrize("at", [0, 10, 20])
def test_a_cancelled_step_leaves_parameters_state_and_step_count_as_without_its_batch(
    name: str, sync_free: bool, at: int
) -> None:
    data = batches()
    reference = mlp()
    reference_optimizer = OPTIMIZERS[name](reference.parameters())
    train(reference, reference_optimizer, data)

    bad_x = data[at][0].clone()
    bad_x[3, 2] = float("nan")
    model = mlp()
    optimizer = guard(OPTIMIZERS[name](model.parameters()), model, sync_free=sync_free)
    train(model, optimizer, [*data[:at], (bad_x, data[at][1]), *data[at:]])

    assert optimizer.skipped_steps == 1
    (event,) = optimizer.events
    assert (event.cause, event.batch) == ("data", at)
    for a, b in zip(reference.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
    expected, state = reference_optimizer.state_dict()["state"], optimizer.state_dict()["state"]
    assert expected.keys() == state.keys()
    for index, entries in expected.items():
        assert entries.keys() == state[index].keys()
        for key, value in entries.items():
            assert torch.equal(value, state[index][key]), (index, key)  # "step" too


class HostReads(TorchDispatchMode):
    """Counts the operations that bring a tensor's value to the host (``.item()``,
    ``bool(tensor)``, ``float(tensor)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


def reads_per_step(optimizer, model, data) -> list[int]:
    counts = []
    for xb, yb in data:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(xb), yb).backward()
        with HostReads() as mode:
            optimizer.step()
        counts.append(mode.reads)
    return counts


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_sync_free_steps_read_nothing_from_the_device_beyond_the_optimizer(name: str) -> None:
    data = batches()[:12]
    bare_model = mlp()
    bare = reads_per_step(OPTIMIZERS[name](bare_model.parameters()), bare_model, data)
    model = mlp()
    optimizer = guard(OPTIMIZERS[name](model.parameters()), model, sync_free=True)
    guarded = reads_per_step(optimizer, model, data)
    # The first step reads its flag (it creates the optimizer's state, which a cancelled
    # step could not take back); after it, the guard adds no read to the optimizer's own
    # (Adam reads its host-side step count). The read every READ_EVERY steps is one
    # transfer of the steps' flags and losses, not an .item() per value.
    assert guarded[0] > bare[0]
    assert guarded[1:] == bare[1:]
    host = guard(OPTIMIZERS[name](mlp().parameters()), mlp(), sync_free=False)
    assert host.sync_free is False and optimizer.sync_free is True


@pytest.mark.parametrize("held_bytes", [None, 0], ids=["default", "tiny_budget"])
def test_steps_are_read_sooner_when_the_batches_kept_for_them_grow_large(
    held_bytes, monkeypatch
) -> None:
    import stablefit.torch._guard as guard_module

    if held_bytes is not None:
        monkeypatch.setattr(guard_module, "HELD_BYTES", held_bytes)
    data = batches()
    bad_x = data[3][0].clone()
    bad_x[0, 0] = float("nan")
    model = mlp()
    optimizer = guard(OPTIMIZERS["adam"](model.parameters()), model, sync_free=True)
    train(model, optimizer, [*data[:3], (bad_x, data[3][1])])
    # core.events is the record as it stands, without the read that .events makes.
    assert len(optimizer.core.events) == (0 if held_bytes is None else 1)
    (event,) = optimizer.events
    assert (event.cause, event.batch) == ("data", 3)
