"""``GuardCallback``: :func:`stablefit.torch.guard` for PyTorch Lightning's ``Trainer``."""

from __future__ import annotations

from typing import Any

import lightning

from stablefit.torch._guard import GuardedOptimizer, guard


class GuardCallback(lightning.Callback):
    """Guard every optimizer of a Lightning ``Trainer`` (see :func:`stablefit.torch.guard`).

    When training starts each optimizer from ``configure_optimizers`` is wrapped; the
    training step's loss comes from Lightning's closure, the inputs and outputs from the
    ``LightningModule``'s forward. ``events`` lists what happened.

    Parameters
    ----------
    loss_fn : nn.Module, optional
        The loss module the ``training_step`` calls: with it the guard tells bad data from
        a bad loss function and retakes a step without its bad rows.
    **options
        Passed to :func:`stablefit.torch.guard` (``data``, ``max_retries``,
        ``spike_factor``, ``on_failure``).

    Examples
    --------
    >>> from stablefit.torch import GuardCallback
    >>> callback = GuardCallback()   # Trainer(callbacks=[callback]).fit(module, loader)
    """

    def __init__(self, loss_fn: Any = None, **options: Any) -> None:
        self.loss_fn = loss_fn
        self.options = options
        self.guards: list[GuardedOptimizer] = []

    @property
    def events(self) -> list[Any]:
        return [event for guarded in self.guards for event in guarded.events]

    def on_fit_start(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        steps = trainer.num_training_batches
        per_epoch = int(steps) if isinstance(steps, int) or float(steps).is_integer() else None
        self.guards = [
            optimizer
            if isinstance(optimizer, GuardedOptimizer)
            else guard(
                optimizer, pl_module, self.loss_fn, steps_per_epoch=per_epoch, **self.options
            )
            for optimizer in trainer.optimizers
        ]
        trainer.strategy.optimizers = list(self.guards)

    def on_fit_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        for guarded in self.guards:
            guarded.close()
