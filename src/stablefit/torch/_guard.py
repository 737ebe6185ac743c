"""``guard``: a PyTorch optimizer that never lets a non-finite update reach the model.

The PyTorch adapter of the framework-neutral guard core (:mod:`stablefit.guard`): the
cheap part runs in every ``step()``, the expensive part (replaying the batch, naming the
cause, the remedy) only when something went wrong.

Every step: one fused check of every gradient and of the loss for NaN/inf
(``torch._amp_foreach_non_finite_check_and_unscale_``, the check ``GradScaler`` makes)
leaves a one-element flag on the parameters' device. What happens to the flag depends on
where the model lives, because reading a value on the host waits for the device:

- On an accelerator (``sync_free``, the default off the CPU) nothing is read. The
  wrapped optimizer's step runs inside :class:`~stablefit.torch._masked.MaskedStep`: the
  parameters and state tensors are copied to a flat buffer before it and selected back
  with ``torch.where`` on the flag after it, so a flagged step leaves parameters, moments
  and step counts bit for bit as they were, and the host runs on ahead of the device as
  in an unguarded loop. The steps' flags, losses and sampled gradient norms are kept as
  device tensors and read in one transfer every ``READ_EVERY`` steps (sooner when the
  batches kept for them reach ``HELD_BYTES``), at each epoch's end, and when ``events``
  or ``skipped_steps`` is read; the guard then acts on each
  step in order. The price: two copies of the parameters and state in memory, three
  fused copies and one ``where`` a step, and an event is diagnosed up to ``READ_EVERY``
  steps late (its batch kept by reference, replayed at the weights of the read, and a
  remedy that moves the weights makes the steps taken since stale: they stay as taken).
  The first step reads its flag (it creates the optimizer's state, which no copy could
  take back). A step count torch keeps on the host beside a model on a GPU (Adam without
  ``capturable``/``fused``) cannot be selected without a read: it counts on and the
  skipped steps are taken back off at the read, so the steps in between see one more.
- On the CPU (``sync_free=False``) there is no device to wait for: the flag is read at
  once (as ``GradScaler`` reads its own), and a flagged step is simply not taken, which
  costs less than the masked update (measured in ``benchmarks/bench_torch_guard.py``).
  There the fused check covers the gradients only, into a flag kept from step to step
  (zeroed only after it was found set), and the loss's value, read anyway, says whether
  the loss is finite: each a tensor operation fewer on every step.

Either way the loss is read with the flag (for the loss history, which spots a spike).
Hooks on the model and on the loss module keep references to the inputs and targets of
every forward since the last ``step()`` (gradient accumulation: a bad row in any of them
spoils the step) and to the loss (until ``step()`` takes it). In-memory snapshots of the
model and optimizer state are taken at epoch ends and at new best losses, and anew when a
state is loaded into the model or the optimizer (a resumed checkpoint).

At an event (a non-finite loss or gradient, a loss spike): the batch is replayed layer by
layer; :func:`stablefit.guard.classify` names the cause and
:class:`stablefit.guard.RemedyPolicy` the remedy, which is applied here exactly: bad rows
are left out and the step retaken on the others (buffers the bad forward made NaN, such as
BatchNorm's running statistics, put back from the newest snapshot); a learning-rate event
restores the best snapshot and sets the rate through ``param_groups`` (and the base rates
of the optimizer's ``lr_scheduler``s, so the cut survives them); exploding gradients get a
gradient-norm clip; a loss-function or precision problem stops training with the reason.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import inspect
import math
import statistics
import warnings
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import (
    keystr,
    tree_flatten,
    tree_flatten_with_path,
    tree_map,
    tree_unflatten,
)

from stablefit.guard import (
    Context,
    Curvature,
    GuardCore,
    GuardEvent,
    LayerOverflow,
    NonFiniteTrainingError,
    Remedy,
    Replay,
    Snapshot,
    Verdict,
    growth_curvature,
    hessian_curvature,
)
from stablefit.guard.core import row_list
from stablefit.guard.events import position
from stablefit.guard.phrases import TORCH
from stablefit.torch._masked import MaskedStep, Unmaskable
from stablefit.torch._optimizer import _FORECAST_NAMES
from stablefit.torch._preflight import hessian_max_eigenvalue

#: Steps between two reads of the device's flags and losses when the guard runs sync-free.
READ_EVERY = 16
#: ... or sooner, once the batches kept for those steps reach this many bytes (a read then
#: costs less than the device memory those batches would hold).
HELD_BYTES = 256 * 2**20
#: Steps between two samples of the gradient norm (its running median detects explosions).
NORM_EVERY = 16
#: Forwards since the last step whose batches are kept (gradient accumulation); beyond it
#: the oldest are let go (forwards with gradients but no step, e.g. an evaluation outside
#: ``torch.no_grad()``, would otherwise hold every batch until the next step).
ACCUMULATED = 64
#: Without ``steps_per_epoch``, the guard's "epoch" (retry window, snapshots) is this long.
DEFAULT_EPOCH_STEPS = 100
_LOW_PRECISION = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
#: Optimizers whose stability bound is on the Hessian preconditioned by their moments.
_ADAPTIVE = ("adam", "adamw", "rmsprop")
#: The losses some guard's step() took, while they live (by id): one loss module, or one
#: model, may be seen by several guards (a GAN's discriminator forward in the generator's
#: step), and each must tell another's steps from its own batch.
_STEPPED_LOSSES: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()
#: The guards alive: with one, none of that bookkeeping is needed (and none is done).
_GUARDS: weakref.WeakSet[GuardedOptimizer] = weakref.WeakSet()
#: Whether more than one guard is alive, recounted when a guard is made or collected: the
#: hooks and ``step()`` read this global on every step, not the set's length.
_several = False


def _count_guards() -> None:
    global _several
    # Iterated, not len(): a guard being collected is still in the set, but not alive.
    _several = sum(1 for _ in _GUARDS) > 1


class GuardedOptimizer(torch.optim.Optimizer):
    """A ``torch.optim`` optimizer wrapped by :func:`guard` (see there).

    It shares ``param_groups`` and ``state`` with the wrapped optimizer, so learning-rate
    schedulers, ``GradScaler`` and checkpoints see one optimizer.

    Attributes
    ----------
    optimizer : torch.optim.Optimizer
        The wrapped optimizer.
    events : list of GuardEvent
        Everything the guard saw and did.
    skipped_steps : int
        Steps whose update was not applied.
    clipnorm : float or None
        The gradient-norm clip the guard applies before each step (set by an
        exploding-gradients remedy).
    sync_free : bool
        Whether steps are decided on the device (see :func:`guard`).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        loss_fn: Any = None,
        *,
        data: tuple[Any, Any] | None = None,
        steps_per_epoch: int | None = None,
        max_retries: int = 5,
        spike_factor: float = 10.0,
        on_failure: str = "raise",
        sync_free: bool | None = None,
    ) -> None:
        if isinstance(optimizer, GuardedOptimizer):
            raise TypeError("the optimizer is already guarded")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"guard(optimizer=...): expected a torch.optim.Optimizer, got "
                f"{type(optimizer).__name__}"
            )
        if not isinstance(model, nn.Module):
            raise TypeError(f"guard(model=...): expected an nn.Module, got {type(model).__name__}")
        if on_failure not in ("raise", "warn"):
            raise ValueError(f"on_failure={on_failure!r}: use 'raise' or 'warn'")
        super().__init__([dict(g) for g in optimizer.param_groups], optimizer.defaults)
        # One optimizer seen from two handles: share its groups and state.
        self.param_groups = optimizer.param_groups
        self.state = optimizer.state
        self.optimizer = optimizer
        self.model = model
        self.loss_fn = loss_fn
        self.data = data
        self.epoch_steps = int(steps_per_epoch or DEFAULT_EPOCH_STEPS)
        self.on_failure = on_failure
        # Best states mid-epoch too: a quarter epoch apart, at most 100 steps.
        gap = max(1, min(100, self.epoch_steps // 4))
        self.core = GuardCore(
            max_retries=max_retries, spike_factor=spike_factor, snapshot_gap=gap, phrases=TORCH
        )
        self._skipped = 0
        self.clipnorm: float | None = None
        self.stopped = False
        self._name = _FORECAST_NAMES.get(type(optimizer), type(optimizer).__name__.lower())
        self._needs_closure = _closure_required(optimizer)
        self._masked: MaskedStep | None = None
        self._stepped_gradient: torch.Tensor | None = None
        self._stepped_version = 0  # in-place changes to it when it was stepped
        self._watch_parameters()
        self._device_type = self._kinds[0][1].device.type
        if sync_free is None:
            sync_free = self._device_type != "cpu"
        self.sync_free = sync_free
        self._step = 0  # steps offered to the guard (applied or not)
        self._at = 0  # the step being acted on
        self._pending: list[_Pending] = []  # steps taken, their outcome not yet read
        self._held = 0  # bytes of the pending steps' batches held by reference
        self._settling = False
        self._norms: deque[float] = deque(maxlen=64)
        self._seen: dict[str, Any] = {}
        self._hooks = [
            model.register_forward_hook(self._see_model, with_kwargs=True),
            model.register_load_state_dict_post_hook(self._start_over),
        ]
        if isinstance(loss_fn, nn.Module):
            self._hooks.append(loss_fn.register_forward_hook(self._see_loss, with_kwargs=True))
        self.core.keep(0, -1, self._copy_state())
        _GUARDS.add(self)
        weakref.finalize(self, _count_guards)
        _count_guards()

    def _watch_parameters(self) -> None:
        """The parameters every step checks, masks and copies: those of every group."""
        self._params = [p for g in self.param_groups for p in g["params"]]
        self._param_ids = {id(p) for p in self._params}
        # Trained tensors outside the model (an encoder given as the model, its decoder
        # in the optimizer; a free nn.Parameter): copied and restored beside it.
        in_model = {id(p) for p in self.model.parameters()}
        self._outside = [p for p in self._params if id(p) not in in_model]
        # The fused check takes tensors of one device and dtype at a time.
        kinds: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for p in self._params:
            kinds.setdefault((p.device, p.dtype), []).append(p)
        self._kinds = [
            (params, torch.ones(1, device=device), *_flag(device))
            for (device, _), params in kinds.items()
        ]
        self._masked = None  # the masked update copies the parameters it was built on

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer (e.g. layers unfrozen for fine-tuning);
        the guard checks its parameters from the next step on."""
        if "optimizer" not in vars(self):
            # torch's Optimizer.__init__ building the groups this wrapper then shares.
            super().add_param_group(param_group)
            return
        self._settle()  # the steps not yet read were taken without the new group
        self.optimizer.add_param_group(param_group)
        self.param_groups = self.optimizer.param_groups
        self._watch_parameters()

    # -- what the hooks see (references, no copies, no synchronisation) ----------------

    def _see_model(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        # model(x) told without _primary's search: this runs on every forward.
        inputs = args[0] if args and isinstance(args[0], torch.Tensor) else _primary(args, kwargs)
        if inputs is not None and torch.is_grad_enabled() and not _acting:
            seen = self._seen
            # The batch's rows: the first tensor the model was given, and the whole call
            # (several inputs, keyword inputs) to replay it.
            call = (args, kwargs)
            seen["inputs"] = inputs
            seen["call"] = call
            # To tell what the loss was given: the output, one tensor of a dict or tuple
            # output, or something computed from it (another model's output on it).
            seen["output"] = output
            if module.training:
                # Every training forward since the last step (gradient accumulation): a
                # bad row in any of them made the step's gradients non-finite. Not an
                # evaluation's (model.eval() without torch.no_grad()): a retake would
                # train on it.
                _append_bounded(seen, "all_inputs", call)
                if _several:
                    seen["forwards_seen"] = seen.get("forwards_seen", 0) + 1
            device = self._device_type  # autocast as the replay must repeat it
            seen["autocast"] = (
                (device, torch.get_autocast_dtype(device))
                if torch.is_autocast_enabled(device)
                else None
            )

    def _see_loss(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if len(args) >= 2:
            prediction, target = args[0], args[1]
        else:  # loss_fn(out, target=y), loss_fn(input=out, target=y)
            prediction = args[0] if args else kwargs.get("input")
            target = kwargs.get("target")
            if prediction is None or target is None:
                return
        if torch.is_grad_enabled() and not _acting:
            # The predictions only to tell what of the model's output the loss was given
            # (the replay computes them again). The loss as it is (no detach()
            # a step): it holds the step's activations no longer than the user's own
            # ``loss`` does, until backward() frees them; step() takes it.
            seen = self._seen
            source = _loss_source(prediction, seen.get("output"), self._param_ids)
            if source is None:
                return  # another model's loss (a GAN's other network, a reference model)
            seen["loss_source"] = source
            seen["target"] = target
            seen["prediction"] = prediction
            if self.model.training:
                _append_bounded(seen, "all_targets", target)
                if _several:
                    # Each loss, and how many forwards came before it: to leave out of
                    # the batch the forwards of a loss another guard stepped (the GAN
                    # generator's step runs the discriminator, whose zero_grad() may not
                    # be called).
                    _append_bounded(seen, "all_losses", output)
                    _append_bounded(seen, "forwards_at", seen.get("forwards_seen", 0))
            seen["loss"] = output

    # -- the step ---------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._step // self.epoch_steps

    @property
    def batch(self) -> int:
        return self._step % self.epoch_steps

    @property
    def events(self) -> list[GuardEvent]:
        """Everything the guard saw and did (read from the device first)."""
        self._settle()
        return self.core.events

    @property
    def skipped_steps(self) -> int:
        """Steps whose update was not applied (read from the device first)."""
        self._settle()
        return self._skipped

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """Check the step's loss and gradients, then step the wrapped optimizer, or not."""
        result = None
        if closure is not None:
            with torch.enable_grad():
                result = closure()
        if self.stopped:
            self._seen = {}
            return result
        loss = self._seen.pop("loss", None)
        if loss is None and torch.is_tensor(result):
            loss = result  # a closure's loss (Lightning's training step)
        if loss is None and self.loss_fn is None:
            loss = _loss_in(self._seen.get("output"))  # outputs.loss, as Hugging Face's
        if loss is not None and _several:
            _STEPPED_LOSSES[id(loss)] = loss
        masked = self._masked_step() if self.sync_free else None
        sampled = self._step % NORM_EVERY == 0
        if masked is not None:
            if loss is not None:
                loss = loss.detach()  # kept until the read: its value, not its graph
            flag = self._nonfinite_flag(loss)
            masked.step(flag, lambda: self._update(closure))
            norm = _gradient_norm(self._params) if sampled else None
            self._pending.append(_Pending(self._step, flag, loss, dict(self._seen), norm))
            self._held += _nbytes(self._seen.get("inputs")) + _nbytes(self._seen.get("target"))
        else:
            if self._pending:
                self._settle()  # steps left from before the optimizer's state changed
            value = None if loss is None else _value(loss)
            finite = self._gradients_finite() and (value is None or _finite(value, loss))
            if finite:
                self._update(closure)
            self._at = self._step
            self._act(finite, value, _norm_value(self._params) if sampled else None)
        self._seen = {}  # the next step's forwards start a new batch
        # The first parameter's gradient without the search for one (it has one as a rule).
        gradient = self._params[0].grad
        if gradient is None:
            gradient = _first_gradient(self._params)
        self._stepped_gradient = gradient
        if gradient is not None:
            self._stepped_version = gradient._version
        self._step += 1
        epoch_ends = self._step % self.epoch_steps == 0
        if self._pending and (
            epoch_ends or len(self._pending) >= READ_EVERY or self._held > HELD_BYTES
        ):
            self._settle()
        if epoch_ends and not self.stopped:
            self.core.epoch_end()
            self.core.keep(self.epoch - 1, self.epoch_steps - 1, self._copy_state())
        return result

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self._seen.get("all_inputs") and self._gradients_not_stepped():
            # The gradients since the last step are thrown away, and so is what the
            # forwards that made them showed: a GAN's generator step runs the
            # discriminator too, whose gradients its own zero_grad() then clears.
            if not self._stepped_by_another() and not self._gradients_finite():
                self._skipped_elsewhere()
            self._seen = {}
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _stepped_by_another(self) -> bool:
        """Whether the loss the hooks saw last was another guard's step's (the loss
        module is shared: a GAN's generator loss runs through the discriminator)."""
        return _stepped(self._seen.get("loss"))

    def _gradients_not_stepped(self) -> bool:
        """Whether the gradients were computed after the last ``step()`` and are being
        cleared without one: a step skipped outside the guard (``GradScaler`` found them
        non-finite). Told by identity: ``backward()`` after ``zero_grad()`` makes new
        gradient tensors; after ``zero_grad(set_to_none=False)`` it accumulates into the
        zeroed ones in place, which moves their version counter."""
        grad = _first_gradient(self._params)
        return grad is not None and (
            grad is not self._stepped_gradient or grad._version != self._stepped_version
        )

    def _skipped_elsewhere(self) -> None:
        """A batch whose non-finite gradients were cleared without a step: its bad rows
        are named as in any step (a permanently bad row would otherwise only halve
        GradScaler's scale each epoch)."""
        self._settle()
        self._seen = _whole_batch(self._seen)
        self._at = self._step
        self._skipped += 1
        replay = self._bad_rows_replay()
        if replay is not None:
            with _acting_on_a_step():
                self._data_event(
                    replay,
                    None,
                    skipped_by="step() was not called for it (GradScaler skips a step whose "
                    "gradients are not finite)",
                )
        elif self._forward_overflows():
            # Not GradScaler's scale finding its level (an overflow in the backward pass,
            # which a lower scale cures): a float16 layer's output overflows on this
            # batch, so every later step would be skipped as well, the scale falling
            # towards zero without a word.
            self._event("nonfinite_step", None)

    def _forward_overflows(self) -> bool:
        """Whether a low-precision layer's output overflows on the batch the hooks saw."""
        inputs = self._seen.get("inputs")
        if not torch.is_tensor(inputs) or self._seen.get("autocast") is None:
            return False
        with _acting_on_a_step():
            return self._forward_by_layer(inputs)[0] is not None

    def _update(self, closure: Any = None) -> None:
        if self.clipnorm is not None:
            nn.utils.clip_grad_norm_(self._params, self.clipnorm)
        if self._needs_closure:  # LBFGS evaluates the loss again, several times a step
            self.optimizer.step(closure)
        else:
            self.optimizer.step()

    def _gradients_finite(self) -> bool:
        """Whether every gradient is finite, read at once (the CPU's way, and a step the
        device cannot cancel). One fused check per device and dtype into a flag kept from
        step to step: it is zeroed only after it was found set, as a clean step leaves it
        at zero."""
        finite = True
        for params, one, found, found_read in self._kinds:
            grads = [g for p in params if (g := p.grad) is not None]
            if grads:
                # Multiplies by 1 in place (exact) while it looks for NaN/inf: one fused op.
                torch._amp_foreach_non_finite_check_and_unscale_(grads, found, one)
                if found.item() if found_read is None else found_read[0]:
                    found.zero_()
                    finite = False
        return finite

    def _nonfinite_flag(self, loss: torch.Tensor | None) -> torch.Tensor:
        """A new one-element tensor on the parameters' device, nonzero when a gradient
        (or the loss) holds a NaN or an inf: computed there, not read (the step's flag
        waits for the next read)."""
        flags = []
        unchecked = loss
        for params, one, *_ in self._kinds:
            grads = [p.grad for p in params if p.grad is not None]
            if (
                unchecked is not None
                and unchecked.dtype == params[0].dtype
                and unchecked.device == one.device
            ):
                grads.append(unchecked)  # its own detached copy: multiplied by 1, exactly
                unchecked = None
            found = torch.zeros(1, device=one.device)
            if grads:
                torch._amp_foreach_non_finite_check_and_unscale_(grads, found, one)
            flags.append(found)
        if unchecked is not None:
            flags.append((~torch.isfinite(unchecked).all()).float().reshape(1))
        if len(flags) == 1:
            return flags[0]
        device = flags[0].device
        return sum((f.to(device, non_blocking=True) for f in flags[1:]), flags[0])

    def _masked_step(self) -> MaskedStep | None:
        """The device-side cancellable step, when the guard runs without host reads and
        the optimizer's state is there to be copied (after its first step)."""
        if not self.sync_free:
            return None
        if self._masked is not None and self._masked.matches():
            return self._masked
        self._masked = None
        trained = [p for p in self._params if p.grad is not None]
        if not trained or any(p not in self.state for p in trained):
            return None  # the first step creates the state: it reads the flag
        try:
            self._masked = MaskedStep(self.optimizer, self._params, self._kinds[0][1].device)
        except Unmaskable:
            self.sync_free = False
        return self._masked

    def _settle(self) -> None:
        """Read the pending steps' flags, losses and gradient norms (one read from the
        device), then act on them in order as if each had been read at its step."""
        if not self._pending or self._settling:
            return
        pending, self._pending = self._pending, []
        self._held = 0
        self._settling = True
        current = self._seen
        try:
            count = len(pending)
            values = _read(
                [p.nonfinite for p in pending]
                + [p.loss for p in pending]
                + [p.norm for p in pending]
            )
            finite = [not flag for flag in values[:count]]
            losses, norms = values[count : 2 * count], values[2 * count :]
            if self._masked is not None:
                self._masked.uncount(finite.count(False))
            for at, (item, ok, loss, norm) in enumerate(
                zip(pending, finite, losses, norms, strict=True)
            ):
                self._at, self._seen = item.at, item.seen
                acted = self._act(ok, loss, norm)
                if acted and at + 1 < len(pending):
                    # The weights changed under the later steps' gradients: those were
                    # applied (or cancelled) already, their losses are of the old path.
                    self._skipped += finite[at + 1 :].count(False)
                    break
        finally:
            self._seen = current
            self._settling = False

    def _act(self, finite: bool, loss: float | None, norm: float | None) -> bool:
        """A step's outcome: events for a non-finite step or a spike, a snapshot at a new
        best loss. Whether the guard changed the weights or the rate."""
        if not finite:
            self._skipped += 1
            return self._event("nonfinite_step", loss)
        if norm is not None and math.isfinite(norm):
            self._norms.append(norm)
        if loss is None:
            return False
        core = self.core
        if core.observe(loss) == "loss_spike":
            if self._seen.get("loss_source") == "other_model":
                # A GAN's generator loss rises as its discriminator learns: a rise of a
                # loss computed through another trained model says nothing of this
                # model's learning rate (non-finite steps are still caught).
                core.history.rebase()
                return False
            return self._event("loss_spike", loss)
        if core.wants_snapshot():
            core.keep(*self._position(), self._copy_state())
        return False

    def _position(self) -> tuple[int, int]:
        """(epoch, batch) of the step being acted on."""
        return divmod(self._at, self.epoch_steps)

    # -- events -----------------------------------------------------------------------

    def _event(self, trigger: str, loss_value: float | None) -> bool:
        """Name the cause of the step being acted on and apply the remedy. Whether the
        remedy changed the weights or the rate (a bad-rows retake does neither)."""
        with _acting_on_a_step():
            return self._diagnose(trigger, loss_value)

    def _diagnose(self, trigger: str, loss_value: float | None) -> bool:
        self._seen = _whole_batch(self._seen)
        self._repair_buffers()
        rate = float(self.param_groups[0]["lr"])
        target = self.core.rollback_target()
        bad_weight = _first_nonfinite(self.model, self._outside)
        if bad_weight is not None:
            verdict, remedy = self._nonfinite_weights(bad_weight, target)
            return self._apply("nonfinite_weights", verdict, remedy, loss_value, rate, target)
        replay = self._replay()
        if replay.bad_positions:
            self._data_event(replay, loss_value)
            return False
        context = Context(
            trigger=trigger,
            learning_rate=rate,
            optimizer=type(self.optimizer).__name__,
            growth=self.core.history.growth(),
            gradient_norm_median=statistics.median(self._norms) if self._norms else None,
            curvature=lambda: self._curvature(target, rate),
        )
        verdict, remedy = self.core.decide(replay, context, clipnorm=self.clipnorm)
        return self._apply(trigger, verdict, remedy, loss_value, rate, target)

    def _nonfinite_weights(
        self, bad: tuple[str, int, int], target: Snapshot | None
    ) -> tuple[Verdict, Remedy]:
        """Weights that hold NaN/inf before the step: no update of the guard's made them
        (it applies none that is not finite), so every step from them fails alike."""
        name, count, size = bad
        verdict = Verdict(
            cause="unknown",
            finding=(
                f"the weight {name} holds {count} NaN or inf value(s) of {size} before this "
                "step; the guard applies no update that is not finite, so they were there "
                "when training started, were loaded so, or were written by code outside "
                "the optimizer"
            ),
            fix=(
                "initialise or load finite weights (look for NaN in the checkpoint), and "
                "look for code that writes into the weights"
            ),
            evidence={"parameter": name, "nonfinite_values": count},
        )
        if target is None or not (
            _finite_state(target.state["model"]) and _finite_state(target.state["outside"])
        ):
            remedy = Remedy(
                action="stopped", reason="no copy of the weights the guard kept is finite"
            )
        elif not self.core.window.spend():
            remedy = Remedy(
                action="stopped",
                rollback=True,
                reason=f"{self.core.window.max_retries} remedies since the last clean epoch "
                "did not help",
            )
        else:
            remedy = Remedy(action="rolled_back", rollback=True)
        return verdict, remedy

    def _apply(
        self,
        trigger: str,
        verdict: Verdict,
        remedy: Remedy,
        loss_value: float | None,
        rate: float,
        target: Snapshot | None,
    ) -> bool:
        """Apply a remedy and record its event. True (the weights or the rate changed, or
        training stopped)."""
        restored = None
        if remedy.rollback and target is not None:
            self._restore(target.state)
            restored = target
        if remedy.learning_rate is not None:
            self._scale_learning_rate(remedy.learning_rate / rate)
        if remedy.clipnorm is not None:
            self.clipnorm = remedy.clipnorm
        epoch, batch = self._position()
        event = self.core.record(
            epoch=epoch,
            batch=batch,
            trigger=trigger,
            verdict=verdict,
            remedy=remedy,
            loss=loss_value,
            restored=restored,
            learning_rate_before=rate,
            learning_rate_after=float(self.param_groups[0]["lr"]),
            clipnorm=self.clipnorm,
        )
        if remedy.action == "stopped":
            self._stop(
                event, remedy.reason, restore=remedy.rollback or trigger != "nonfinite_weights"
            )
        return True

    def _repair_buffers(self) -> None:
        """Running statistics (BatchNorm's) that the failed step's forward made NaN/inf,
        back to their values in the newest copy: a skipped update leaves the parameters
        as they were, but the forward had already averaged the bad batch into these,
        and every later evaluation would have been NaN."""
        newest = self.core.states.newest
        if not newest:
            return
        kept = newest[-1].state["model"]
        with torch.no_grad():
            for name, buffer in self.model.named_buffers():
                if (
                    name in kept
                    and buffer.is_floating_point()
                    and not bool(torch.isfinite(buffer).all())
                ):
                    buffer.copy_(kept[name])

    def _data_event(
        self, replay: Replay, loss_value: float | None, *, skipped_by: str | bool | None = None
    ) -> None:
        """Name the bad rows and retake the step without them (unless ``skipped_by``
        something else, which decided the step already)."""
        inputs, target = self._seen.get("inputs"), self._seen.get("target")
        bad = np.asarray(replay.bad_positions)
        loose = self._seen.get("bad_loose_target")
        rows = [] if loose is not None else self._rows_in_data(inputs, target, bad)
        key = tuple(rows) if rows else _content_key(inputs, target, bad)
        epoch, batch = self._position()
        where = None
        if skipped_by is None:
            skipped_by = self._retake_blocker(len(bad))
        if loose is not None:
            call, calls = loose
            target = self._seen["loose_targets"][call]
            key = ("target", call, _content_key(target, None, bad))
            where = (
                f"{'row' if len(bad) == 1 else 'rows'} {row_list(bad.tolist())} of the target "
                f"of loss_fn's call {call + 1} of {calls} for the batch"
            )
        elif not rows:
            why = (
                "give guard(..., data=(X, y)) to have rows named by their values"
                if self.data is None
                else "their values are not among the rows of data"
            )
            where = (
                f"{'row' if len(bad) == 1 else 'rows'} {row_list(bad.tolist())} of its batch "
                f"(not named in your data: {why})"
            )
        self.core.data_event(
            epoch=epoch,
            batch=batch,
            key=key,
            replay=replay,
            rows=rows,
            where=where,
            loss=loss_value,
            learning_rate=float(self.param_groups[0]["lr"]),
            whole_batch=skipped_by or False,
        )
        if skipped_by is None:
            self._retake_without(bad)

    def _retake_blocker(self, bad_rows: int) -> str | bool | None:
        """Why the step cannot be taken again on the batch's other rows: True when there
        are none, a phrase, None when it can."""
        why = None
        unpaired = self._seen.get("unpaired_targets")
        inputs = self._seen.get("inputs")
        if torch.is_tensor(inputs) and bad_rows >= len(inputs):
            return True
        if not isinstance(self.loss_fn, nn.Module):
            if self.loss_fn is None and _loss_in(self._seen.get("output")) is not None:
                return None  # the model computes it again on the other rows
            why = "loss_fn is not an nn.Module loss given to guard() (such as nn.MSELoss())"
        elif getattr(self.loss_fn, "reduction", None) == "none":
            why = "loss_fn gives a loss per row (reduction='none'), combined outside it"
        elif unpaired is not None:
            why = f"{unpaired}, so its targets are not the batch's rows"
        elif self._seen.get("target") is None or _prediction_picker(self._seen) is None:
            why = (
                "loss_fn was given something computed from the model's output (not the "
                "output, one of its tensors or a reshape of it)"
            )
        return None if why is None else f"the guard cannot compute the loss without them: {why}"

    def _retake_without(self, bad: np.ndarray) -> None:
        """The step again on the batch's other rows (the loss module's mean over them, or
        the loss the model computes itself on them)."""
        inputs, target = self._seen.get("inputs"), self._seen.get("target")
        pick = _prediction_picker(self._seen)
        keep = torch.ones(len(inputs), dtype=torch.bool)
        keep[torch.as_tensor(bad, dtype=torch.long)] = False
        own_loss = self.loss_fn is None
        if not keep.any() or (pick is None and not own_loss):
            return
        # The user's gradients are put back after: a read of ``events`` between their
        # backward() and step() acts on earlier steps.
        grads = [p.grad for p in self._params]

        def retake_loss() -> Any:
            self.optimizer.zero_grad()
            with torch.enable_grad(), _autocast(self._seen.get("autocast")):
                if own_loss:
                    return _loss_in(self._forward(keep))
                return self.loss_fn(pick(self._forward(keep)), target[keep])

        def retake() -> torch.Tensor:
            loss = retake_loss()
            loss.backward()
            return loss

        loss = retake_loss()
        self._seen.pop("loss", None)
        # Not a loss per row reduced outside loss_fn, nor a model's output without one.
        if loss is not None and loss.numel() == 1:
            loss.backward()
            loss = loss.detach()
            value = _value(loss)
            if self._gradients_finite() and _finite(value, loss):
                self._skipped -= 1
                self._update(retake)
                self._act(True, value, None)
        for p, grad in zip(self._params, grads, strict=True):
            p.grad = grad

    def _rows_in_data(self, inputs: Any, target: Any, bad: np.ndarray) -> list[int]:
        """Indices in ``data`` of the batch's bad rows (matched by their values)."""
        if self.data is None or inputs is None:
            return []
        X = np.asarray(self.data[0], dtype=np.float64).reshape(len(self.data[0]), -1)
        y = np.asarray(self.data[1], dtype=np.float64).reshape(len(X), -1)
        # Without a loss module the targets are not seen: the rows are matched by x alone.
        table = np.hstack([X, y]) if torch.is_tensor(target) else X
        candidates = np.flatnonzero(~np.isfinite(table).all(axis=1))
        batch = _rows_as_numpy(inputs, target)
        found = []
        for at in bad:
            row = batch[at]
            for index in candidates:
                if np.array_equal(table[index], row, equal_nan=True) and index not in found:
                    found.append(int(index))
                    break
        return found

    def _replay(self) -> Replay:
        """The batch again from the weights before the step, layer by layer."""
        inputs = self._seen.get("inputs")
        target = self._seen.get("target")
        if inputs is None or not torch.is_tensor(inputs) or len(inputs) == 0:
            return Replay(gradient_norm=_norm_value(self._params))
        found = self._bad_rows_replay()
        if found is not None:
            return found
        overflow, nonfinite_layer, output = self._forward_by_layer(inputs)
        pick = _prediction_picker(self._seen)
        prediction = None if pick is None else pick(output)
        predictions_finite = all(
            bool(torch.isfinite(t).all()) for t in _tensors(output if pick is None else prediction)
        )
        loss_finite, loss_value, offending = True, None, ()
        if self.loss_fn is not None and target is not None and prediction is not None:
            with torch.no_grad(), _autocast(self._seen.get("autocast")):
                loss = self.loss_fn(prediction, target)
            loss_value = _value(loss)
            loss_finite = math.isfinite(loss_value)
            if predictions_finite and not loss_finite:
                offending = self._offending_predictions(prediction, target)
        norm = _norm_value(self._params)
        # The gradients of the replayed loss, when the step's were not finite and the
        # forward and loss were: finite, the rest of the user's loss is what was not;
        # not finite, an operation's backward made them so.
        replayed_gradients = (
            self._loss_gradients_finite(pick, target)
            if loss_value is not None
            and loss_finite
            and predictions_finite
            and nonfinite_layer is None
            and not math.isfinite(norm)
            else None
        )
        return Replay(
            overflow=overflow,
            nonfinite_layer=nonfinite_layer,
            predictions_finite=predictions_finite,
            loss_finite=loss_finite,
            loss_name=None if self.loss_fn is None else _name(self.loss_fn),
            loss_value=loss_value,
            offending_predictions=offending,
            largest_target=_largest(target),
            largest_input=_largest(inputs),
            largest_prediction=_largest(prediction),
            gradient_norm=norm,
            outside_loss=replayed_gradients is True,
            backward_nonfinite=replayed_gradients is False,
        )

    def _loss_gradients_finite(self, pick: Any, target: torch.Tensor) -> bool | None:
        """Whether the gradients of loss_fn's loss on the batch at the weights now are
        finite; None when they cannot be taken (a loss per row, nothing to
        differentiate)."""
        trained = [p for p in self._params if p.requires_grad]
        try:
            with torch.enable_grad(), _autocast(self._seen.get("autocast")):
                loss = self.loss_fn(pick(self._forward()), target)
                gradients = torch.autograd.grad(loss, trained, allow_unused=True)
        except RuntimeError:
            return None
        return all(g is None or bool(torch.isfinite(g).all()) for g in gradients)

    def _bad_rows_replay(self) -> Replay | None:
        """The batch's rows holding NaN/inf in its inputs or target, None without any."""
        inputs, target = self._seen.get("inputs"), self._seen.get("target")
        if inputs is None or not torch.is_tensor(inputs) or len(inputs) == 0:
            return None
        bad_inputs = ~torch.isfinite(inputs.detach()).reshape(len(inputs), -1)
        bad_target = (
            ~torch.isfinite(target.detach()).reshape(len(target), -1)
            if torch.is_tensor(target) and target.is_floating_point()
            else torch.zeros(len(inputs), 1, dtype=torch.bool)
        )
        bad = bad_inputs.any(dim=1) | bad_target.any(dim=1)
        others = []  # the model's other float inputs of the batch's rows, by name
        for name, value in _named_inputs(self._seen.get("call") or ((inputs,), {})):
            if (
                torch.is_tensor(value)
                and value is not inputs
                and value.is_floating_point()
                and value.ndim >= 1
                and len(value) == len(inputs)
            ):
                rows = ~torch.isfinite(value.detach()).reshape(len(value), -1).all(dim=1)
                if rows.any():
                    others.append(name)
                    bad = bad | rows.to(bad.device)
        bad_rows = bad.nonzero().flatten()
        if len(bad_rows):
            columns = [
                _column(j, inputs.shape[1:])
                for j in bad_inputs.any(dim=0).nonzero().flatten().tolist()
            ]
            columns += others
            if bad_target.any():
                columns.append("y")
            return Replay(bad_positions=tuple(bad_rows.tolist()), bad_columns=tuple(columns))
        return self._bad_loose_target()

    def _bad_loose_target(self) -> Replay | None:
        """Rows with NaN/inf in the target of one of several loss_fn calls for a batch
        (``loss_fn(out[:16], y[:16]) + loss_fn(out[16:], y[16:])``): their rows are that
        call's, not the batch's."""
        calls = self._seen.get("loose_targets", [])
        for call, target in enumerate(calls):
            if not torch.is_tensor(target) or not target.is_floating_point() or target.ndim < 1:
                continue
            bad = ~torch.isfinite(target.detach()).reshape(len(target), -1).all(dim=1)
            if bad.any():
                self._seen["bad_loose_target"] = (call, len(calls))
                return Replay(
                    bad_positions=tuple(bad.nonzero().flatten().tolist()), bad_columns=("y",)
                )
        return None

    def _forward(self, keep: torch.Tensor | None = None) -> Any:
        """The model on the batch the hooks saw (its rows ``keep`` only, when given)."""
        args, kwargs = self._seen.get("call") or ((self._seen["inputs"],), {})
        if keep is not None:
            args, kwargs = _rows_of((args, kwargs), len(self._seen["inputs"]), keep)
        # Detached: a retake's backward() reaches this model's parameters only, not what
        # made its inputs (a GAN's generator, whose graph its own step freed).
        args, kwargs = tree_map(lambda v: v.detach() if torch.is_tensor(v) else v, (args, kwargs))
        return self.model(*args, **kwargs)

    def _forward_by_layer(self, inputs: torch.Tensor) -> tuple[Any, str | None, torch.Tensor]:
        """The model's output, the first low-precision layer that overflowed on finite
        inputs, and the first layer whose output was not finite."""
        found: dict[str, Any] = {}

        def look(name: str):
            def hook(module: nn.Module, args: tuple, output: Any) -> None:
                if not torch.is_tensor(output) or "nonfinite" in found:
                    return
                if torch.isfinite(output).all():
                    return
                found["nonfinite"] = name
                dtype = _LOW_PRECISION.get(output.dtype)
                finite_inputs = all(torch.isfinite(a).all() for a in args if torch.is_tensor(a))
                if dtype is not None and finite_inputs:
                    largest = _largest_in_float32(module, args)
                    limit = float(torch.finfo(output.dtype).max)
                    found["overflow"] = LayerOverflow(name, dtype, largest, limit)

            return hook

        handles = [
            module.register_forward_hook(look(name))
            for name, module in self.model.named_modules()
            if not list(module.children())
        ]
        try:
            with torch.no_grad(), _autocast(self._seen.get("autocast")):
                output = self._forward()
        finally:
            for handle in handles:
                handle.remove()
        return found.get("overflow"), found.get("nonfinite"), output

    def _offending_predictions(self, prediction: torch.Tensor, target: Any) -> tuple[float, ...]:
        """Predictions of the rows whose own loss is not finite (a few)."""
        values = []
        with torch.no_grad():
            for i in range(min(len(prediction), 256)):
                term = self.loss_fn(prediction[i : i + 1], target[i : i + 1])
                if not torch.isfinite(term).all():
                    values.extend(prediction[i].detach().float().reshape(-1).tolist())
                if len(values) >= 8:
                    break
        return tuple(values[:8])

    def _curvature(self, snapshot: Snapshot | None, rate: float) -> Curvature | None:
        """λmax of the loss on this batch at the weights a rollback restores: of the
        Hessian for SGD, preconditioned by the second moments for Adam, AdamW, RMSprop."""
        growth = self.core.history.growth()
        momentum = float(self.param_groups[0].get("momentum", 0.0) or 0.0)
        nesterov = bool(self.param_groups[0].get("nesterov", False))
        adaptive = self._name in _ADAPTIVE
        if self._name != "sgd" and not adaptive:
            return None
        inputs, target = self._seen.get("inputs"), self._seen.get("target")
        lam = None
        pick = _prediction_picker(self._seen)
        args, kwargs = self._seen.get("call") or ((inputs,), {})
        if (
            self.loss_fn is not None
            and torch.is_tensor(inputs)
            and target is not None
            and pick is not None
            and len(args) == 1
            and args[0] is inputs
            and not kwargs  # the Hessian's functional call takes the one input
            # A loss per row is reduced outside loss_fn, in a way the guard does not know:
            # the curvature comes from the loss's growth.
            and getattr(self.loss_fn, "reduction", None) != "none"
        ):

            def loss_fn(output: Any, target: Any) -> Any:
                return self.loss_fn(pick(output), target)

            current = self._copy_state() if snapshot is not None else None
            try:
                if snapshot is not None:
                    self._restore(snapshot.state)
                lam = hessian_max_eigenvalue(
                    self.model,
                    loss_fn,
                    inputs,
                    target,
                    preconditioner=self._preconditioner if adaptive else None,
                )
            finally:
                if current is not None:
                    self._restore(current)
        if lam is None or not math.isfinite(lam):
            return growth_curvature(growth, rate, self._name, momentum=momentum, nesterov=nesterov)
        betas = self.param_groups[0].get("betas", (0.9, 0.999))
        return hessian_curvature(
            lam,
            self._name,
            preconditioned=adaptive,
            momentum=momentum,
            nesterov=nesterov,
            beta_1=betas[0],
        )

    def _preconditioner(self, gradient: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``sqrt(v̂) + eps`` of Adam, AdamW or RMSprop for each parameter (by name), from
        its state; for a parameter without state (before the first update: a rollback to
        the start restores none), ``|gradient| + eps`` (Adam's bias-corrected ``v̂`` after
        its first update, what RMSprop's average of squares tends to)."""
        group = self.param_groups[0]
        adam = self._name in ("adam", "adamw")
        key = "exp_avg_sq" if adam else "square_avg"
        parameters = dict(self.model.named_parameters())
        scales = {}
        for name, grad in gradient.items():
            state = self.state.get(parameters[name], {})
            if key not in state:
                scales[name] = grad.detach().double().abs() + group["eps"]
                continue
            second = state[key].detach().double()
            if adam:  # Adam's bias correction
                second = second / (1.0 - group["betas"][1] ** float(state["step"]))
            scales[name] = second.sqrt() + group["eps"]
        return scales

    # -- remedies ---------------------------------------------------------------------

    def _scale_learning_rate(self, factor: float) -> None:
        """Multiply every group's rate, and the base rates of this optimizer's schedulers
        (a closed-form schedule recomputes the rate from them; a chained one from the
        group's rate): the cut survives ``scheduler.step()``."""
        for group in self.param_groups:
            group["lr"] = group["lr"] * factor
            # OneCycleLR recomputes the rate from these three, kept in the group.
            for key in ("initial_lr", "max_lr", "min_lr"):
                if key in group:
                    group[key] = group[key] * factor
        for scheduler in _schedulers_of(self, self.optimizer):
            scheduler.base_lrs = [rate * factor for rate in scheduler.base_lrs]
            if hasattr(scheduler, "max_lrs"):  # CyclicLR's upper rates
                scheduler.max_lrs = [rate * factor for rate in scheduler.max_lrs]
            if hasattr(scheduler, "_last_lr"):
                scheduler._last_lr = [g["lr"] for g in self.param_groups]

    def _copy_state(self) -> dict[str, Any]:
        """The model's tensors, those the optimizer trains outside it, and the
        optimizer's state, copied in memory."""
        return {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "outside": {id(p): p.detach().clone() for p in self._outside},
            "optimizer": {
                id(p): {k: _clone(v) for k, v in self.state[p].items()}
                for p in self._params
                if p in self.state
            },
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        """Copy a snapshot back in place (the groups' learning rates stay as they are)."""
        self._masked = None  # state tensors may be new: the next masked step copies anew
        with torch.no_grad():
            current = self.model.state_dict()
            for key, value in saved["model"].items():
                current[key].copy_(value)
            for p in self._outside:
                kept = saved["outside"].get(id(p))
                if kept is not None:
                    p.copy_(kept)
            for p in self._params:
                kept = saved["optimizer"].get(id(p))
                if kept is None:
                    self.state.pop(p, None)
                    continue
                state = self.state[p]
                for key, value in kept.items():
                    if torch.is_tensor(value) and torch.is_tensor(state.get(key)):
                        state[key].copy_(value)
                    else:
                        state[key] = _clone(value)

    def _stop(self, event: GuardEvent, reason: str, *, restore: bool = True) -> None:
        self.stopped = True
        best = self.core.rollback_target() if restore else None
        if best is not None:
            self._restore(best.state)
        message = self.core.failure_message(
            event,
            reason=reason,
            steps=self.epoch_steps,
            holds=_holds(best),
        )
        if self.on_failure == "warn":
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return
        raise NonFiniteTrainingError(message)

    def close(self) -> None:
        """Act on the steps not yet read, then remove the hooks from the model and the
        loss (the optimizer keeps working)."""
        self._settle()
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    # -- the wrapped optimizer's own interface ---------------------------------------

    def state_dict(self) -> dict[str, Any]:
        self._settle()  # step counts kept on the host are right after a read
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._settle()
        self.optimizer.load_state_dict(state_dict)
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state
        self._watch_parameters()
        self._start_over()

    def _start_over(self, *_: Any) -> None:
        """A checkpoint was loaded (into the model or the optimizer): the copies kept so
        far hold the state before it (often the untrained model), so a rollback would
        throw the checkpoint away. They are replaced by a copy of the loaded state; steps
        not yet read are counted but not acted on (their remedies would undo the load)."""
        if self._pending:
            flags = _read([p.nonfinite for p in self._pending])
            skipped = sum(1 for flag in flags if flag)
            if self._masked is not None:
                self._masked.uncount(skipped)
            self._skipped += skipped
            self._pending, self._held = [], 0
        self.core.start_over(self.epoch, self.batch - 1, self._copy_state())

    def __repr__(self) -> str:
        return f"guard({self.optimizer!r})"


# Optimizer.__init__ wraps a class's step in a profiling hook once; the wrapped optimizer's
# own step keeps its hook, and a second one here would only add its cost to every step.
GuardedOptimizer.step.hooked = True  # type: ignore[attr-defined]


def guard(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    loss_fn: Any = None,
    *,
    data: tuple[Any, Any] | None = None,
    steps_per_epoch: int | None = None,
    max_retries: int = 5,
    spike_factor: float = 10.0,
    on_failure: str = "raise",
    sync_free: bool | None = None,
) -> GuardedOptimizer:
    """Guard a PyTorch optimizer: no non-finite update ever reaches ``model``.

    Replace ``optimizer = torch.optim.SGD(...)`` with
    ``optimizer = stablefit.torch.guard(torch.optim.SGD(...), model, loss_fn)`` and keep
    the loop as it is (``zero_grad``, ``loss.backward()``, ``step()``).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer, built on ``model.parameters()``.
    model : torch.nn.Module
        The model it trains (its inputs and outputs are watched through a forward hook).
    loss_fn : callable, optional
        The loss. An ``nn.Module`` loss (``nn.MSELoss()``, a custom module) is watched
        through a forward hook: the guard then sees every step's loss and target, tells
        bad data from a bad loss function, and retakes a step without its bad rows (when
        the loss was given the model's output, one of its tensors or a reshape of it,
        reduced inside ``loss_fn``). Its calls on other models' outputs are left aside,
        so one loss module may serve several guarded optimizers (a GAN's two). Without
        it, a loss the model returns beside its predictions (``outputs["loss"]`` or
        ``outputs.loss``, as Hugging Face models given labels) is the step's.
    data : (X, y), optional
        The training data, to name bad rows by their index in it.
    steps_per_epoch : int, optional
        ``len(loader)``: events then say epoch and batch, and the retry budget resets
        after each clean epoch (otherwise every 100 steps).
    max_retries : int
        Remedies allowed since the last clean epoch before the guard stops.
    spike_factor : float
        A smoothed loss this many times its running minimum is rolled back when the
        learning rate is above the curvature's bound; within it the rise is kept as noise
        until such rises add up to its square times the best smoothed loss (a slow
        divergence, rolled back).
    on_failure : {"raise", "warn"}
        When the guard stops: raise :class:`~stablefit.guard.NonFiniteTrainingError`, or
        warn and skip every later step. Either way the model holds the best weights kept.
    sync_free : bool, optional
        Decide each step on the device, the host reading the steps' flags and losses
        every ``READ_EVERY`` (16) steps, at epoch ends and when ``events`` or
        ``skipped_steps`` are read, instead of once a step. Default: on every device
        but the CPU, where a read waits for nothing and costs less than the masked
        update (see the module's notes).

    Returns
    -------
    GuardedOptimizer
        An ``Optimizer`` sharing ``param_groups`` and ``state`` with ``optimizer``
        (learning-rate schedulers, ``GradScaler`` and ``state_dict`` work as before);
        ``.events`` lists what happened.

    Examples
    --------
    >>> import torch, stablefit.torch
    >>> model = torch.nn.Linear(3, 1)
    >>> loss_fn = torch.nn.MSELoss()
    >>> optimizer = stablefit.torch.guard(torch.optim.SGD(model.parameters(), lr=0.1),
    ...                                   model, loss_fn)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> x[2, 1] = float("nan")
    >>> optimizer.zero_grad(); loss_fn(model(x), y).backward(); optimizer.step()
    >>> bool(torch.isfinite(model.weight).all()), optimizer.events[0].cause
    (True, 'data')
    """
    return GuardedOptimizer(
        optimizer,
        model,
        loss_fn,
        data=data,
        steps_per_epoch=steps_per_epoch,
        max_retries=max_retries,
        spike_factor=spike_factor,
        on_failure=on_failure,
        sync_free=sync_free,
    )


# -- helpers ------------------------------------------------------------------------------


@dataclass
class _Pending:
    """A step taken whose outcome is still on the device: its index, its flag (nonzero
    when it was cancelled), its loss, the references the hooks saw and, every
    NORM_EVERY steps, the gradient norm."""

    at: int
    nonfinite: torch.Tensor
    loss: torch.Tensor | None
    seen: dict[str, Any]
    norm: torch.Tensor | None


#: Nonzero while a guard replays or retakes a step: what the model and the loss compute
#: then is the guard's, not the user's next batch (for any guard, as they may share them).
_acting = 0


@contextlib.contextmanager
def _acting_on_a_step() -> Iterator[None]:
    global _acting
    _acting += 1
    try:
        yield
    finally:
        _acting -= 1


#: Autograd nodes looked at, at most, to tell whether a loss was computed from the model.
_GRAPH_NODES = 10_000


def _loss_source(prediction: Any, output: Any, own: set[int]) -> str | None:
    """Where what a loss was given comes from: ``"output"`` (the model's last output, a
    view or slice of it), ``"computed"`` (computed from it), ``"other_model"`` (computed
    from it through trained parameters not in ``own``, the ids of the optimizer's: a GAN
    generator's loss through the discriminator), None (not from it: another model's
    loss, or a loss before the model's first forward since the last step). Told by
    identity or memory first (the common case, at no cost), then by walking the autograd
    graph; ``"output"`` when nothing tells it (an output without tensors, a graph too
    large to walk)."""
    if output is prediction:
        return "output"
    if output is None:
        return None
    leaves = [t for t in tree_flatten(output)[0] if torch.is_tensor(t)]
    if not leaves or not torch.is_tensor(prediction):
        return "output"
    for leaf in leaves:
        if leaf is prediction or (
            leaf.untyped_storage().data_ptr() == prediction.untyped_storage().data_ptr()
        ):
            return "output"
    ends = {leaf.grad_fn for leaf in leaves if leaf.grad_fn is not None}
    if not ends:
        return "output"
    visited: set[Any] = set()
    stack = [prediction.grad_fn]
    found, parameters = False, False
    while stack:
        node = stack.pop()
        if node is None or node in visited:
            continue
        if len(visited) >= _GRAPH_NODES:
            return "output"
        visited.add(node)
        if node in ends:
            found = True  # the model's own graph is not walked
            continue
        # A trained tensor the optimizer does not train (a module after the guarded one
        # whose parameters the optimizer holds is the guard's own).
        variable = getattr(node, "variable", None)
        parameters = parameters or (variable is not None and id(variable) not in own)
        stack.extend(parent for parent, _ in node.next_functions)
    if not found:
        return None
    return "other_model" if parameters else "computed"


def _rows(value: Any) -> int:
    return len(value) if torch.is_tensor(value) and value.ndim else 0


def _column(index: int, shape: torch.Size) -> str:
    """An input's column by its place in a row: ``x[:, 3]``, or ``x[:, 4, 1]`` for a row
    of several dimensions (a sequence's step 4, feature 1)."""
    at = np.unravel_index(index, tuple(shape)) if len(shape) > 1 else (index,)
    return f"x[:, {', '.join(str(int(i)) for i in at)}]"


def _closure_required(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's ``step`` must be given the closure (``LBFGS``)."""
    closure = inspect.signature(type(optimizer).step).parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


def _loss_in(output: Any) -> torch.Tensor | None:
    """The loss a model computes itself and returns beside its predictions (a Hugging
    Face model given labels: ``outputs["loss"]``, ``outputs.loss``), when it is one."""
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    return loss if torch.is_tensor(loss) and loss.numel() == 1 else None


def _first_nonfinite(model: nn.Module, outside: list[torch.Tensor]) -> tuple[str, int, int] | None:
    """The first parameter holding NaN/inf (the model's, then the optimizer's others):
    its name, how many such values, its size."""
    named = list(model.named_parameters())
    named += [(f"optimizer parameter {i} (outside the model)", p) for i, p in enumerate(outside)]
    with torch.no_grad():
        for name, parameter in named:
            if parameter.is_floating_point() and not bool(torch.isfinite(parameter).all()):
                count = int((~torch.isfinite(parameter)).sum())
                return name, count, parameter.numel()
    return None


def _finite_state(tensors: dict[Any, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def _stepped(loss: Any) -> bool:
    """Whether a guard's step() took ``loss``."""
    return loss is not None and _STEPPED_LOSSES.get(id(loss)) is loss


def _flag(device: torch.device) -> tuple[torch.Tensor, np.ndarray | None]:
    """A one-element float flag on ``device``, and on the CPU a NumPy view of its memory:
    reading that is no torch operation (``item()`` is one, on every step)."""
    flag = torch.zeros(1, device=device)
    return flag, flag.numpy() if flag.device.type == "cpu" else None


def _append_bounded(seen: dict[str, Any], key: str, value: Any) -> None:
    """Append ``value`` to the list ``seen[key]`` (made on the first), the oldest let go
    beyond ``ACCUMULATED``."""
    kept = seen.get(key)
    if kept is None:
        seen[key] = [value]  # the usual batch of one forward: no empty list made first
        return
    kept.append(value)
    if len(kept) > ACCUMULATED:
        del kept[0]


def _whole_batch(seen: dict[str, Any]) -> dict[str, Any]:
    """What the hooks saw, with the inputs (and targets) of the training forwards since
    the last step as the batch: joined into one when there were several (gradient
    accumulation) and they join. As it is (the last forward's) when no training forward
    was seen (a model trained in eval mode) or they do not pair with the losses."""
    seen = _own_calls(seen)
    calls, targets = seen.get("all_inputs", []), seen.get("all_targets", [])
    if not calls:
        return seen
    try:
        call = calls[0] if len(calls) == 1 else _joined_calls(calls)
        joined = {**seen, "call": call, "inputs": _primary(*call)}
        if targets and len(targets) == len(calls):
            joined["target"] = targets[0] if len(targets) == 1 else torch.cat(targets)
    except (RuntimeError, TypeError, KeyError, IndexError):
        return seen
    target, inputs = joined.get("target"), joined["inputs"]
    if targets and (
        len(targets) != len(calls)
        or not torch.is_tensor(target)
        or target.ndim == 0
        or not torch.is_tensor(inputs)
        or len(target) != len(inputs)
    ):
        # loss_fn called several times a forward (on parts of the output, or on other
        # models' outputs): its targets are not the batch's rows, each is looked at alone.
        joined.pop("target", None)
        joined["unpaired_targets"] = (
            f"loss_fn was called {len(targets)} times for {len(calls)} forward(s)"
            if len(targets) != len(calls)
            else f"loss_fn's targets have {_rows(target)} rows and the batch {_rows(inputs)}"
        )
        joined["loose_targets"] = list(targets)
    return joined


def _own_calls(seen: dict[str, Any]) -> dict[str, Any]:
    """What the hooks saw, without the forwards and losses up to the last loss another
    guard's step() took (a GAN generator's step through this discriminator, when the
    loop clears gradients with ``model.zero_grad()``, which the guard does not see).
    The last loss is this step's own even when another guard stepped it too (two
    optimizers on one model's parameters)."""
    losses = seen.get("all_losses", [])
    forwards = seen.get("all_inputs", [])
    taken = [i for i, loss in enumerate(losses[:-1]) if _stepped(loss)]
    if not taken or seen.get("forwards_seen", 0) != len(forwards):
        return seen  # none, or more forwards than kept: as they are
    last = taken[-1]
    return {
        **seen,
        "all_inputs": forwards[seen["forwards_at"][last] :],
        "all_targets": seen.get("all_targets", [])[last + 1 :],
        "all_losses": losses[last + 1 :],
    }


def _primary(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The tensor whose rows are the batch's: the model's first tensor input (inside a
    dict, list or tuple it was given, ``model({"x": ..., "mask": ...})``)."""
    first = next((a for a in args if torch.is_tensor(a)), None)
    if first is None:
        first = next((v for v in kwargs.values() if torch.is_tensor(v)), None)
    if first is None:
        first = next(
            (leaf for leaf in tree_flatten((args, kwargs))[0] if torch.is_tensor(leaf)), None
        )
    return first


def _named_inputs(call: tuple[tuple, dict]) -> list[tuple[str, Any]]:
    """A forward's inputs by name: ``input 1``, a keyword's name, ``input 0['v']`` for a
    tensor inside a dict, list or tuple."""
    args, kwargs = call
    named = []
    for i, arg in enumerate(args):
        named += [
            (f"input {i}{keystr(path)}", leaf) for path, leaf in tree_flatten_with_path(arg)[0]
        ]
    for key, value in kwargs.items():
        named += [(f"{key}{keystr(path)}", leaf) for path, leaf in tree_flatten_with_path(value)[0]]
    return named


def _rows_of(call: tuple[tuple, dict], rows: int, keep: torch.Tensor) -> tuple[tuple, dict]:
    """A forward's inputs, each tensor of the batch's ``rows`` rows cut to ``keep``."""

    def cut(value: Any) -> Any:
        if torch.is_tensor(value) and value.ndim >= 1 and len(value) == rows:
            return value[keep.to(value.device)]
        return value

    return tree_map(cut, call)


def _joined_calls(calls: list[tuple[tuple, dict]]) -> tuple[tuple, dict]:
    """The inputs of several forwards (gradient accumulation) as one batch: each tensor
    joined with its counterparts, anything else as the first forward had it."""
    flat = [tree_flatten(call) for call in calls]
    spec = flat[0][1]
    if any(other != spec for _, other in flat[1:]):
        raise TypeError("the forwards were given inputs of different structures")
    joined = [
        torch.cat(values) if torch.is_tensor(values[0]) else values[0]
        for values in zip(*(leaves for leaves, _ in flat), strict=True)
    ]
    return tree_unflatten(joined, spec)


def _autocast(state: tuple[str, torch.dtype] | None) -> Any:
    if state is None:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast(state[0], dtype=state[1])


def _largest_in_float32(module: nn.Module, args: tuple) -> float:
    """The largest magnitude ``module`` computes on ``args`` in float32 (inf if even that
    overflows)."""
    try:
        wide = copy.deepcopy(module).float()
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            out = wide(*[a.float() if torch.is_tensor(a) else a for a in args])
        return float(out.abs().max())
    except (RuntimeError, TypeError):
        return math.inf


def _gradient_norm(params: list[torch.Tensor]) -> torch.Tensor | None:
    """The norm of all gradients, on their (first) device; None without gradients."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    norms = torch._foreach_norm([g if g.dtype == torch.float32 else g.float() for g in grads])
    device = norms[0].device
    if any(n.device != device for n in norms):
        norms = [n.to(device) for n in norms]
    return torch.linalg.vector_norm(torch.stack(norms))


def _prediction_picker(seen: dict[str, Any]) -> Any:
    """How to take from the model's output what the loss was given: the output itself,
    the same leaf of a dict or tuple output (a model returning ``{"logits": ..., ...}``),
    either reshaped row for row (``output.squeeze(1)``, ``output.view(-1)``). None when
    the loss was given something computed from it (``torch.sigmoid(output)``, a slice,
    another model's output on it, as a GAN's generator loss is): the guard cannot
    compute that again."""
    prediction = seen.get("prediction")
    if not torch.is_tensor(prediction):
        return None
    for at, leaf in enumerate(tree_flatten(seen.get("output"))[0]):
        if leaf is prediction:
            return lambda out, at=at: tree_flatten(out)[0][at]
        if _same_rows(leaf, prediction):
            shape = prediction.shape[1:]
            return lambda out, at=at: tree_flatten(out)[0][at].reshape(-1, *shape)
    return None


def _same_rows(output: Any, prediction: torch.Tensor) -> bool:
    """Whether ``prediction`` is ``output`` reshaped with each row's values kept in
    place: the same memory, both contiguous, as many rows and values."""
    return (
        torch.is_tensor(output)
        and output.ndim >= 1
        and prediction.ndim >= 1
        and len(output) == len(prediction)
        and output.numel() == prediction.numel()
        and output.data_ptr() == prediction.data_ptr()
        and output.is_contiguous()
        and prediction.is_contiguous()
    )


def _tensors(value: Any) -> list[torch.Tensor]:
    return [leaf for leaf in tree_flatten(value)[0] if torch.is_tensor(leaf)]


def _first_gradient(params: list[torch.Tensor]) -> torch.Tensor | None:
    return next((g for p in params if (g := p.grad) is not None), None)


def _largest(value: Any) -> float | None:
    """The largest magnitude in a float tensor (None for anything else, or no values)."""
    if not torch.is_tensor(value) or not value.is_floating_point() or value.numel() == 0:
        return None
    return float(value.detach().abs().max())


def _nbytes(value: Any) -> int:
    return value.nbytes if torch.is_tensor(value) else 0


def _norm_value(params: list[torch.Tensor]) -> float:
    norm = _gradient_norm(params)
    return math.nan if norm is None else float(norm)


def _read(values: list[Any]) -> list[Any]:
    """Tensors (losses, flags, norms) as Python numbers in one read from their device;
    Python values and None as they are."""
    tensors = [v for v in values if torch.is_tensor(v)]
    if not tensors:
        return list(values)
    if len(tensors) == 1:  # a step's own loss or flag, when the guard reads every step
        numbers = iter([_value(tensors[0])])
    else:
        device = tensors[0].device
        sums = [t.detach().float().sum().to(device) for t in tensors]
        numbers = iter(torch.stack(sums).tolist())
    return [next(numbers) if torch.is_tensor(v) else v for v in values]


def _value(loss: torch.Tensor) -> float:
    """A loss as a Python float (the sum of its entries when it is not a scalar)."""
    return loss.item() if loss.numel() == 1 else float(loss.detach().float().sum())


def _finite(value: float, loss: torch.Tensor) -> bool:
    """Whether every entry of ``loss`` is finite, given ``value`` = ``_value(loss)`` (a
    sum of finite entries may overflow: those entries are looked at)."""
    if math.isfinite(value):
        return True
    return loss.numel() > 1 and bool(torch.isfinite(loss).all())


def _clone(value: Any) -> Any:
    return value.detach().clone() if torch.is_tensor(value) else copy.deepcopy(value)


def _name(loss_fn: Any) -> str:
    return type(loss_fn).__name__ if isinstance(loss_fn, nn.Module) else loss_fn.__name__


def _rows_as_numpy(inputs: torch.Tensor, target: Any) -> np.ndarray:
    x = inputs.detach().float().cpu().double().numpy().reshape(len(inputs), -1)
    if torch.is_tensor(target):
        y = target.detach().cpu().double().numpy().reshape(len(inputs), -1)
        return np.hstack([x, y])
    return x


def _content_key(inputs: Any, target: Any, bad: np.ndarray) -> tuple:
    """What identifies bad rows without their indices: their values (NaN as a string)."""
    if inputs is None:
        return ("unknown",)
    rows = _rows_as_numpy(inputs, target)[bad]
    return tuple(tuple(repr(v) for v in row) for row in rows)


def _schedulers_of(*optimizers: torch.optim.Optimizer) -> list[Any]:
    """The learning-rate schedulers stepping one of ``optimizers`` (found at an event)."""
    base = torch.optim.lr_scheduler.LRScheduler
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
    return [
        obj
        for obj in gc.get_objects()
        # type(), not isinstance(): some module objects warn when asked for __class__.
        if issubclass(type(obj), base)
        and not issubclass(type(obj), plateau)
        and any(getattr(obj, "optimizer", None) is o for o in optimizers)
    ]


def _holds(snapshot: Snapshot | None) -> str:
    if snapshot is None:
        return ""
    return f"The model holds the weights from {position(snapshot.epoch, snapshot.batch)}."
