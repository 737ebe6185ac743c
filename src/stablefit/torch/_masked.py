"""An optimizer step that a flag on the device cancels, read by nobody on the host.

``MaskedStep`` copies the parameters and the optimizer's state tensors before the
wrapped optimizer's step and selects, on the device, the copy or the new values by a
one-element flag: a flagged step leaves every parameter, moment and step count bit for
bit as it was, and the host never waits for the flag. The copies live in two flat
buffers per device and dtype, and the tensors are copied to and from them by views, so a
step costs three fused copies and one ``torch.where`` per buffer whatever the number of
tensors (one multi-tensor kernel each on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate

import torch


class Unmaskable(Exception):
    """The optimizer keeps state the flag cannot select on its device."""


class _Buffer:
    """Tensors of one device and dtype, and two flat copies of them."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors
        starts = list(accumulate((t.numel() for t in tensors), initial=0))[:-1]
        size = starts[-1] + tensors[-1].numel()
        self.before = tensors[0].new_empty(size)
        self.after = tensors[0].new_empty(size)
        self.before_views = [
            self.before[s : s + t.numel()].view(t.shape)
            for s, t in zip(starts, tensors, strict=True)
        ]
        self.after_views = [
            self.after[s : s + t.numel()].view(t.shape)
            for s, t in zip(starts, tensors, strict=True)
        ]


class MaskedStep:
    """Run an optimizer's step, cancelled on the device when a flag says so.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer; its state must exist (after its first step).
    params : list of torch.Tensor
        The parameters it trains.
    device : torch.device
        Where the flag lives.

    Raises
    ------
    Unmaskable
        When a state tensor other than a step count lives on another device than the
        flag.

    Notes
    -----
    A step count kept on the host while the flag is on an accelerator (torch's Adam
    without ``capturable=True`` or ``fused=True`` keeps ``state["step"]`` on the CPU)
    cannot be selected without reading the flag: it is counted on, and :meth:`uncount`
    takes the skipped steps back off when the host reads the flags.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], device: torch.device
    ) -> None:
        self.optimizer = optimizer
        self.states = len(optimizer.state)
        kinds: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        self.host_counts: list[torch.Tensor] = []
        for p in params:
            kinds.setdefault((p.device, p.dtype), []).append(p)
            for key, value in optimizer.state.get(p, {}).items():
                if not torch.is_tensor(value):
                    continue
                if value.device == device:
                    kinds.setdefault((value.device, value.dtype), []).append(value)
                elif key == "step" and value.numel() == 1:
                    self.host_counts.append(value)
                else:
                    raise Unmaskable(f"state {key!r} on {value.device}, the flag on {device}")
        if any(d != device for d, _ in kinds):
            raise Unmaskable(f"parameters on several devices besides {device}")
        self.buffers = [_Buffer(tensors) for tensors in kinds.values()]

    def matches(self) -> bool:
        """Whether the optimizer's state still has the tensors copied (none added)."""
        return len(self.optimizer.state) == self.states

    def step(self, flag: torch.Tensor, update: Callable[[], object]) -> None:
        """Run ``update()`` (the optimizer's step), undone on the device where ``flag``."""
        cancel = flag.reshape(()) != 0
        with torch.no_grad():
            for buffer in self.buffers:
                torch._foreach_copy_(buffer.before_views, buffer.tensors)
            update()
            for buffer in self.buffers:
                torch._foreach_copy_(buffer.after_views, buffer.tensors)
                torch.where(cancel, buffer.before, buffer.after, out=buffer.after)
                torch._foreach_copy_(buffer.tensors, buffer.after_views)

    def uncount(self, skipped: int) -> None:
        """Take ``skipped`` cancelled steps off the step counts kept on the host."""
        for count in self.host_counts:
            count -= skipped
