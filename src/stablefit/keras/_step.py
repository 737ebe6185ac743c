"""The guarded training step: bad rows left out, non-finite steps skipped, on the device.

:class:`StepGuard` replaces a model's ``train_step`` (an instance attribute, so the
model's class and any ``train_step`` it overrides are kept underneath) and wraps its
optimizer's ``apply`` (TensorFlow) or ``stateless_apply`` (JAX):

- rows whose float inputs or targets are not finite get sample weight 0 and their values
  zeroed, so the other rows of the batch train as usual;
- a step whose loss or gradients are not finite, or whose gradient norm is
  ``explosion_factor`` times its running median, changes nothing: not the weights, the
  optimizer's slots and iteration count, the non-trainable variables (e.g. batch-norm
  statistics) nor the metrics (so the logged loss averages the finite steps);
- :class:`GuardCounters`, a metric of the model while the guard is installed, counts the
  skipped steps and bad rows of the epoch (they appear in the logs, the progress bar and
  the history), the steps and rows fed to the step (so a bad row's index in a stream is
  known without asking the host), and keeps the running median of the log gradient norm;
- while no step of the epoch has trained, the logged loss and metrics are NaN instead of
  Keras's 0.0 for a mean of nothing (see :func:`honest_logs`).

Everything runs inside the compiled step. Only when a step had bad rows or was skipped
does the batch reach the host, so the guard can replay it (JAX: sent by
``jax.pure_callback`` in the branch taken then, see :meth:`StepGuard._jax_train_step`).

On TensorFlow, where a small model's step costs about as much per graph node as per
arithmetic, the compiled step is split in two. The *common* step is the model's own plus
one finiteness test (one sum over the batch, the loss and the gradients), the explosion
test and the update applied only when they pass (each assignment of a Keras optimizer
selected, else the update under one condition); it keeps its batch in variables. A step that
fails the test changes nothing and outputs ``STEP_LOSS`` as ``SETTLE``; Keras's train
function, wrapped by the guard, then runs the *careful* step on the kept batch
(:meth:`StepGuard.settle`) before it returns: bad rows masked, the step retaken with every
check, counted, and reported. So every callback, wherever it is listed, sees the settled
step's logs, never ``STEP_LOSS``. With several steps per execution the host cannot step
in between, so every step is careful there.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from stablefit.errors import StablefitWarning
from stablefit.keras._replay import has_loss

# Running median of log(gradient norm): each step moves it this far towards the new value.
_MEDIAN_STEP = 0.05
#: The key under which the step hands its own loss (NaN when skipped) to the guard: on
#: TensorFlow (one step per execution) to its wrapper of the train function, elsewhere to
#: its batch-end hook, which removes it before the progress bar and the history see it.
STEP_LOSS = "stablefit_step_loss"
#: TensorFlow: the value of ``STEP_LOSS`` for a step that failed the common step's test;
#: the train function then runs the careful step (:meth:`StepGuard.settle`) on its batch
#: before it returns. (A separate flag would be one more output of the compiled step.)
SETTLE = -math.inf
#: JAX: the key of the output that keeps the step's call to the host (made only when the
#: step had bad rows or was skipped) in the compiled step; taken out with ``STEP_LOSS``.
SENT = "stablefit_sent"


@dataclass
class StepReport:
    """What the compiled step sends to the host when a step had bad rows or was skipped."""

    inputs: list[np.ndarray]
    targets: list[np.ndarray]
    sample_weight: np.ndarray | None
    row_ok: np.ndarray
    step_ok: bool
    loss: float
    gradient_norm: float
    structure: Any = None
    #: Steps before this one in the epoch (its batch index in the epoch).
    step_in_epoch: int = -1
    #: Rows fed to the step before this batch, in the epoch and since ``fit`` began.
    rows_before: tuple[int, int] = (-1, -1)

    def batch(self) -> tuple[Any, Any, Any]:
        """``(x, y, sample_weight)`` in the structure the model was given."""
        x_structure, y_structure = self.structure
        x = keras.tree.pack_sequence_as(x_structure, self.inputs)
        y = None if y_structure is None else keras.tree.pack_sequence_as(y_structure, self.targets)
        return x, y, self.sample_weight


class GuardCounters(keras.metrics.Metric):
    """Skipped steps and bad rows of the epoch; the running median gradient norm.

    ``result()`` gives the two epoch counts; :meth:`start_epoch` (the guard's
    ``on_epoch_begin``) clears them, not the median nor the rows fed since ``fit`` began.
    Keras's own resets of the model's metrics change nothing: ``evaluate`` makes one
    (``fit``'s validation at each epoch's end, before the guard reads the epoch's counts).
    ``reporting`` False (while ``fit`` validates) leaves the counts out of the logs.
    """

    def __init__(self) -> None:
        super().__init__(name="stablefit_guard")
        self.skipped_steps = self.add_variable((), "zeros", dtype="int32", name="skipped_steps")
        self.bad_rows = self.add_variable((), "zeros", dtype="int32", name="bad_rows")
        self.log_norm_median = self.add_variable((), "zeros", dtype="float32", name="median")
        self.finite_steps = self.add_variable((), "zeros", dtype="int32", name="finite_steps")
        self.epoch_steps = self.add_variable((), "zeros", dtype="int32", name="epoch_steps")
        self.epoch_rows = self.add_variable((), "zeros", dtype="int32", name="epoch_rows")
        self.fit_rows = self.add_variable((), "zeros", dtype="int32", name="fit_rows")
        # Set by the host: multiplies the learning rate of every update (a cut that a
        # schedule or LearningRateScheduler cannot undo), and asks for the next step to be
        # skipped and sent to the host (a loss spike needs a batch to replay).
        self.learning_rate_scale = self.add_variable((), "ones", dtype="float32", name="lr_scale")
        # inf to capture (float: the common step adds it to the sum it tests for finiteness).
        self.capture = self.add_variable((), "zeros", dtype="float32", name="capture")
        # The last finite loss a model's own train_step logged (it stands in for a skipped
        # step's, which is not finite: no NaN reaches the progress bar or the history).
        self.own_loss = self.add_variable(
            (), keras.initializers.Constant(np.nan), dtype="float32", name="own_loss"
        )
        self.reporting = True

    def update_state(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("updated by the guarded train step only")

    def result(self) -> dict[str, Any]:
        if not self.reporting:
            return {}
        # A tensor, not the variable: logs are turned into Python numbers.
        return {"skipped_steps": self.skipped_steps + 0, "bad_rows": self.bad_rows + 0}

    def reset_state(self) -> None:
        pass  # see start_epoch

    def start_epoch(self) -> None:
        for variable in (self.skipped_steps, self.bad_rows, self.epoch_steps, self.epoch_rows):
            variable.assign(0)

    def median_gradient_norm(self, *, after: int = 1) -> float | None:
        """The running median gradient norm, once ``after`` finite steps have made it."""
        if int(self.finite_steps.numpy()) < max(after, 1):
            return None
        return math.exp(float(self.log_norm_median.numpy()))


def _float_tensors(structure: Any) -> list[Any]:
    return [
        t
        for t in keras.tree.flatten(structure)
        if t is not None and len(t.shape) >= 1 and "float" in str(t.dtype)
    ]


def _rows_finite(tensors: list[Any]) -> Any:
    """Per row: all float values of the inputs and targets are finite."""
    ok = None
    for tensor in tensors:
        finite = ops.isfinite(tensor)
        if len(tensor.shape) > 1:
            finite = ops.all(finite, axis=tuple(range(1, len(tensor.shape))))
        ok = finite if ok is None else ops.logical_and(ok, finite)
    return ok


def _zero_nonfinite(structure: Any) -> Any:
    def clean(t: Any) -> Any:
        if t is None or len(t.shape) < 1 or "float" not in str(t.dtype):
            return t
        return ops.where(ops.isfinite(t), t, ops.zeros_like(t))

    return keras.tree.map_structure(clean, structure)


def mask_bad_rows(
    data: Any, *, drop: bool = True, add_weights: bool = True
) -> tuple[tuple[Any, ...], Any, Any]:
    """The batch for the model's ``train_step`` with its bad rows left out; ``row_ok``;
    how many rows were bad.

    Given sample weights, the bad rows get weight 0 and their values zeroed. Without, the
    batch keeps the form it was given (a ``train_step`` of the model's own may unpack
    ``x, y = data``): with ``drop`` the bad rows are removed, else (JAX, whose compiled
    step needs fixed shapes) weights are added, or, without ``add_weights`` (a
    ``train_step`` of the model's own, which may take none), the bad rows' values are
    zeroed and the caller must skip the step when there are any.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    tensors = _float_tensors(x) + _float_tensors(y)
    if sample_weight is not None:
        tensors += _float_tensors(sample_weight)
    if not tensors:
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight), None, ops.zeros((), "int32")
    row_ok = _rows_finite(tensors)
    bad = ops.sum(ops.cast(ops.logical_not(row_ok), "int32"))
    if sample_weight is None and drop:
        if keras.backend.backend() != "tensorflow" and bool(ops.all(row_ok)):
            return data, row_ok, bad  # eager, every step: no copy of a clean batch
        kept = ops.nonzero(row_ok)[0]

        def take(t: Any) -> Any:
            return t if t is None else ops.take(t, kept, axis=0)

        return (
            keras.utils.pack_x_y_sample_weight(
                keras.tree.map_structure(take, x), keras.tree.map_structure(take, y)
            ),
            row_ok,
            bad,
        )
    if sample_weight is None and not add_weights:
        return (
            keras.utils.pack_x_y_sample_weight(_zero_nonfinite(x), _zero_nonfinite(y)),
            row_ok,
            bad,
        )
    weight = ops.cast(row_ok, "float32")
    if sample_weight is not None:
        sample_weight = _zero_nonfinite(sample_weight)
        row_weight = weight

        def combine(w: Any) -> Any:
            shape = (-1,) + (1,) * (len(w.shape) - 1)
            return ops.cast(w, "float32") * ops.reshape(row_weight, shape)

        weight = keras.tree.map_structure(combine, sample_weight)
    return (_zero_nonfinite(x), _zero_nonfinite(y), weight), row_ok, bad


#: Layers that cast their inputs to integer indices (a NaN becomes an index far out of
#: range, an error in TensorFlow's gather on the CPU).
_INDEXING_LAYERS = ("Embedding", "CategoryEncoding", "IntegerLookup", "Hashing")


def takes_indices(model: keras.Model) -> bool:
    """Whether a layer of the model takes indices, which may come as floats (a DataFrame's
    integer column with a missing value is float64 with NaN)."""
    layers = model._flatten_layers(include_self=False, recursive=True)
    return any(
        any(kind.__name__ in _INDEXING_LAYERS for kind in type(layer).__mro__) for layer in layers
    )


def no_rows(row_ok: Any) -> Any:
    """Whether every row of the batch was left out (a boolean tensor)."""
    if row_ok is None:
        return ops.convert_to_tensor(False)
    return ops.logical_not(ops.any(row_ok))


def batch_sums(data: Any) -> list[Any]:
    """The sum of each float tensor of a batch (float32): finite when each value is.

    (Finite values whose sum overflows make it infinite too; that only costs a careful
    step, which checks each row.)
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    tensors = _float_tensors(x) + _float_tensors(y)
    if sample_weight is not None:
        tensors += _float_tensors(sample_weight)
    return [ops.cast(ops.sum(t), "float32") for t in tensors]


def batch_rows(data: Any) -> Any:
    """The number of rows in a batch (int32), from its first tensor."""
    first = keras.tree.flatten(data)[0]
    return ops.cast(ops.shape(first)[0], "int32")


#: Keras's optimizers whose ``update_step`` changes variables only through the optimizer's
#: ``assign``, ``assign_add`` and ``assign_sub`` (see :meth:`StepGuard._gates_updates`).
_GATED_OPTIMIZERS = tuple(
    getattr(keras.optimizers, name)
    for name in (
        "SGD",
        "Adam",
        "AdamW",
        "RMSprop",
        "Adagrad",
        "Adadelta",
        "Adamax",
        "Nadam",
        "Ftrl",
        "Lion",
        "Lamb",
        "Adafactor",
    )
    if hasattr(keras.optimizers, name)
)

#: The guard's own counts among the logs: never hidden.
COUNT_KEYS = ("skipped_steps", "bad_rows")


def honest_logs(logs: dict[str, Any], trained_steps: Any) -> dict[str, Any]:
    """The logs with every float metric NaN while no step of the epoch has trained.

    Keras's mean of no values is 0.0, which reads as a perfect loss (and as the best epoch
    to ``EarlyStopping`` and ``ModelCheckpoint(save_best_only=True)``); NaN says there is
    no value, and those callbacks treat it as no improvement.
    """

    def hide(key: str, value: Any) -> Any:
        if key in COUNT_KEYS or "float" not in str(getattr(value, "dtype", "")):
            return value
        return ops.where(trained_steps > 0, value, ops.full_like(value, np.nan))

    return {key: hide(key, value) for key, value in logs.items()}


def settled_logs(
    logs: dict[str, Any], metrics: dict[str, Any], last_own_loss: Any | None
) -> dict[str, Any]:
    """The careful step's logs: its metrics as they stand now (restored when the step was
    skipped, counted), but for a model whose own ``train_step`` computes its loss (none
    compiled; ``last_own_loss`` is then the variable holding the last finite one) the loss
    it logs, not Keras's loss tracker, never updated, which reads 0.0. A logged loss that
    is not finite, a skipped step's, is replaced by the last finite one."""
    merged = {**logs, **metrics}
    loss = logs.get("loss")
    if last_own_loss is None or loss is None:
        return merged
    if len(getattr(loss, "shape", (0,))) == 0 and "float" in str(loss.dtype):
        shown = ops.where(ops.isfinite(loss), ops.cast(loss, "float32"), last_own_loss.value)
        last_own_loss.assign(shown)
        loss = ops.cast(shown, loss.dtype)
    merged["loss"] = loss
    return merged


def gradient_norm_squared(grads: list[Any]) -> Any:
    """The squared global norm (inf or NaN when a gradient is not finite)."""
    grads = [ops.cast(g, "float32") for g in grads if g is not None]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # One graph node per gradient instead of three: a small model's step costs about
        # as much per node as per arithmetic.
        return 2.0 * tf.add_n([tf.nn.l2_loss(g) for g in grads])
    parts = [ops.sum(ops.square(g)) for g in grads]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def step_is_ok(
    loss: Any, norm_squared: Any, counters: tuple[Any, Any], factor: float, warmup: int
) -> tuple[Any, Any]:
    """Finite loss and gradients, and (after ``warmup`` steps) no gradient explosion."""
    finite_steps, log_median = counters
    ok = ops.isfinite(norm_squared)
    if loss is not None:
        ok = ops.logical_and(ok, ops.isfinite(ops.cast(loss, "float32")))
    log_norm = 0.5 * ops.log(ops.maximum(norm_squared, 1e-30))
    if math.isinf(factor):
        return ok, log_norm
    ordinary = ops.logical_or(finite_steps < warmup, log_norm < log_median + math.log(factor))
    return ops.logical_and(ok, ordinary), log_norm


def updated_median(ok: Any, log_norm: Any, finite_steps: Any, log_median: Any) -> Any:
    moved = log_median + _MEDIAN_STEP * ops.sign(log_norm - log_median)
    new = ops.where(finite_steps > 0, moved, log_norm)
    return ops.where(ok, new, log_median)


class StepGuard:
    """Put the guarded step on a model (:meth:`install`) and take it off (:meth:`uninstall`).

    Parameters
    ----------
    model : keras.Model
        A compiled model with a built optimizer.
    on_report : callable
        Called with a :class:`StepReport` from inside the step (on the host) when a step
        had bad rows or was skipped.
    on_step_loss : callable
        Called on the training thread with each step's own loss (NaN for a skipped step),
        which the logs then do not carry: on TensorFlow with one step per execution a
        float, once the step is settled; elsewhere the backend's scalar, not yet read.
    explosion_factor : float
        A gradient norm this many times its running median makes the step skipped.
    warmup : int
        Finite steps before the explosion check starts (the median needs them).
    """

    def __init__(
        self,
        model: keras.Model,
        on_report: Callable[[StepReport], None],
        *,
        on_step_loss: Callable[[Any], None],
        explosion_factor: float = 100.0,
        warmup: int = 10,
    ) -> None:
        self.model = model
        self.on_report = on_report
        self.on_step_loss = on_step_loss
        self.explosion_factor = explosion_factor
        self.warmup = warmup
        self.backend = keras.backend.backend()
        if self.backend not in ("tensorflow", "jax", "torch"):
            raise NotImplementedError(
                "NanGuard runs on Keras's TensorFlow, JAX and PyTorch backends; this is "
                f"{self.backend!r}"
            )
        self.counters = GuardCounters()
        self._stash: dict[str, Any] = {}
        self._slots: list[Any] | None = None
        self._slot_layout: dict[str, Any] = {}
        self._careful: Any = None
        self._copier: tuple[tuple[int, ...], Any] | None = None
        self._lock = threading.Lock()
        self._without_xla = False
        self._sent: set[int] = set()
        optimizer = model.optimizer
        self.scaled_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        #: The optimizer whose update rule moves the weights (the inner one under a loss
        #: scale): the one whose learning rate and clipnorm the remedies change.
        self.updating = optimizer.inner_optimizer if self.scaled_loss else optimizer
        #: TensorFlow, one step per execution: a failed common step is settled by the host
        #: (:meth:`settle`) before the next; otherwise every step is careful and a rare one
        #: is handed over by :meth:`collect` when the logged counts change.
        self.settles = self.backend == "tensorflow" and model.steps_per_execution == 1
        #: The model has a ``train_step`` of its own (which may unpack ``x, y = data``).
        self.own_step = type(model).train_step is not keras.Model.train_step
        #: A layer turns inputs into indices (see :func:`takes_indices`).
        self.indexes = takes_indices(model)

    def skips_bad_batches(self, *, weighted: bool) -> bool:
        """Whether a batch with bad rows is skipped whole rather than weighted: on JAX, whose
        compiled step cannot drop rows, for a ``train_step`` of the model's own given no
        sample weights (``weighted`` False; it may take none)."""
        return self.backend == "jax" and self.own_step and not weighted

    # -- installing --------------------------------------------------------------------

    def install(self) -> None:
        model = self.model
        optimizer = model.optimizer
        if self.backend == "tensorflow" and model.jit_compile:
            # The guarded step keeps its batch in variables shaped like the batch, and XLA
            # compiles no assignment that changes a variable's shape (the last, smaller
            # batch would). Keras turns XLA on by default when TensorFlow sees a GPU.
            self._without_xla = True
            model.jit_compile = False
            warnings.warn(
                "NanGuard: the model was compiled with jit_compile=True (Keras's default "
                "with a GPU); it trains without XLA while the guard is on, and with XLA "
                "again after fit",
                StablefitWarning,
                stacklevel=3,
            )
        model._metrics.append(self.counters)
        updating = self.updating
        original_update = updating._backend_update_step
        original_decay = updating._apply_weight_decay

        def rate_scale() -> Any:
            scale = self._stash.get("lr_scale")
            return self.counters.learning_rate_scale.value if scale is None else scale

        def update_step(grads: Any, variables: Any, learning_rate: Any) -> Any:
            rate = ops.cast(learning_rate, "float32") * rate_scale()
            return original_update(grads, variables, rate)

        def apply_weight_decay(variables: Any) -> Any:
            # Keras decays by learning_rate * weight_decay with the optimizer's own rate:
            # the cut applies to the decay too (AdamW's at an absurd rate diverges alone).
            decay = updating.weight_decay
            if decay is None:
                return original_decay(variables)
            decay_now = ops.cast(decay, "float32") * rate_scale()
            gate = self._stash.get("gate")
            if gate is not None:
                # A gated update (see _gated_apply): Keras decays each weight directly,
                # by weight * decay * rate; a decay of 0 leaves the finite weights as they are.
                decay_now = ops.where(gate, decay_now, 0.0)
            updating.weight_decay = decay_now
            try:
                return original_decay(variables)
            finally:
                updating.weight_decay = decay

        updating._backend_update_step = update_step
        updating._apply_weight_decay = apply_weight_decay
        if self.backend in ("tensorflow", "torch"):
            original_apply = optimizer.apply
            original_scale_loss = optimizer.scale_loss
            graph = self.backend == "tensorflow"
            guarded_apply = self._tf_apply if graph else self._eager_apply

            def scale_loss(loss: Any) -> Any:
                self._stash["loss"] = loss
                return original_scale_loss(loss)

            def apply(grads: Any, trainable_variables: Any = None) -> None:
                grads = list(grads)
                if self.own_step and "loss" not in self._stash:
                    # A train_step of the model's own gives the optimizer no loss: the
                    # update waits for the loss it logs (see _train_step), so that a step
                    # whose loss alone overflows is skipped too. A second update in one
                    # step is applied at once, after the first, as the step asked.
                    first = self._stash.pop("deferred", None)
                    if first is None:
                        self._stash["deferred"] = (grads, trainable_variables)
                        return
                    guarded_apply(original_apply, *first)
                guarded_apply(original_apply, grads, trainable_variables)

            self._deferred_apply = lambda grads, variables: guarded_apply(
                original_apply, grads, variables
            )

            optimizer.scale_loss = scale_loss
            optimizer.apply = apply
            model.train_step = self._tf_train_step if graph else self._eager_train_step
        else:
            original_stateless_apply = optimizer.stateless_apply

            def stateless_apply(optimizer_variables: Any, grads: Any, trainable: Any) -> Any:
                self._stash["norm_squared"] = gradient_norm_squared(list(grads))
                return original_stateless_apply(optimizer_variables, grads, trainable)

            optimizer.stateless_apply = stateless_apply
            model.train_step = self._jax_train_step
        self._make_train_function()

    def uninstall(self) -> None:
        model = self.model
        for name in ("apply", "scale_loss", "stateless_apply"):
            vars(model.optimizer).pop(name, None)
        vars(self.updating).pop("_backend_update_step", None)
        vars(self.updating).pop("_apply_weight_decay", None)
        vars(model).pop("train_step", None)
        if self.counters in model._metrics:
            model._metrics.remove(self.counters)
        if self._without_xla:
            model.jit_compile = True
        model.make_train_function(force=True)
        if model.test_function is not None:
            # Made by fit's validation with the counters among the metrics: evaluate()
            # after fit would have returned them beside the loss.
            model.make_test_function(force=True)

    def _explosion_factor(self) -> float:
        # Once the gradients are clipped, a large norm is clipped, not skipped.
        clipped = self.updating.clipnorm or self.updating.global_clipnorm
        return math.inf if clipped else self.explosion_factor

    def retrace(self) -> None:
        """Rebuild the compiled step (after a change it reads at trace time: clipnorm)."""
        self._careful = None
        self._make_train_function()

    def _make_train_function(self) -> None:
        model = self.model
        model.make_train_function(force=True)
        if self.settles:
            model.train_function = self._settling(model.train_function)
        else:
            model.train_function = self._handing_over(model.train_function)

    def _settling(self, train_function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Keras's train function, with a step that failed the common step's test settled
        (:meth:`settle`) before it returns: every callback, wherever it is listed, sees the
        settled logs, and none sees ``STEP_LOSS``, which goes to ``on_step_loss``."""

        def train_function_settled(iterator: Any) -> Any:
            logs = train_function(iterator)
            step_loss = float(logs.pop(STEP_LOSS))
            if step_loss == SETTLE:
                logs = self.settle()
                step_loss = logs.pop(STEP_LOSS)
            self.on_step_loss(step_loss)
            return logs

        return train_function_settled

    def _handing_over(self, train_function: Callable[..., Any]) -> Callable[..., Any]:
        """Keras's train function (any backend), with ``STEP_LOSS`` taken out of its logs
        and handed to ``on_step_loss`` as it is (not read: JAX may still be computing it),
        so that no callback sees it."""

        def train_function_handing_over(*args: Any) -> Any:
            result = train_function(*args)
            logs = result[0] if isinstance(result, tuple) else result  # JAX: (logs, state)
            logs.pop(SENT, None)
            self.on_step_loss(logs.pop(STEP_LOSS))
            return result

        return train_function_handing_over

    # -- host controls -----------------------------------------------------------------

    def copy_of(self, variables: list[Any]) -> list[Any]:
        """The variables' values now, kept apart from them (a snapshot)."""
        if self.backend != "tensorflow":
            return [ops.copy(v.value) for v in variables]
        import tensorflow as tf

        key = tuple(id(v) for v in variables)
        if self._copier is None or self._copier[0] != key:
            # One compiled call instead of an eager copy per variable: a snapshot at each
            # new best loss cost about 2 ms of eager copies, 2% of a small model's training.
            values = [v.value for v in variables]
            self._copier = (key, tf.function(lambda: [tf.identity(v) for v in values]))
        return self._copier[1]()

    def epoch_counts(self) -> dict[str, int]:
        """The epoch's skipped steps and bad rows, read from the counters."""
        return {key: int(ops.convert_to_numpy(v)) for key, v in self.counters.result().items()}

    def trained_steps(self) -> int:
        """The epoch's steps that updated the model, read from the counters."""
        counters = self.counters
        return int(counters.epoch_steps.numpy()) - int(counters.skipped_steps.numpy())

    def median_gradient_norm(self) -> float | None:
        """The running median gradient norm, None during the warm-up."""
        return self.counters.median_gradient_norm(after=self.warmup)

    def learning_rate_scale(self) -> float:
        return float(self.counters.learning_rate_scale.numpy())

    def set_learning_rate_scale(self, scale: float) -> None:
        self.counters.learning_rate_scale.assign(float(scale))

    def capture_next_step(self) -> None:
        """Skip the next step and send its batch to the host."""
        self.counters.capture.assign(math.inf)

    # -- TensorFlow --------------------------------------------------------------------

    def _tf_apply(self, original: Callable[..., Any], grads: list[Any], variables: Any) -> None:
        if self._stash.get("common"):
            self._tf_common_apply(original, grads, variables)
        else:
            self._tf_careful_apply(original, grads, variables)

    def _tf_common_apply(
        self, original: Callable[..., Any], grads: list[Any], variables: Any
    ) -> None:
        """The update of the common step, taken when one sum of everything is finite.

        The batch, the loss and the gradients add up to one number, finite when all of them
        are (finite values that overflow it only cost a careful step). A step failing this
        test, or the explosion test, or that the host asked to capture, updates nothing
        here: the careful step decides it.
        """
        import tensorflow as tf

        loss = self._stash.get("loss")
        counters = self.counters
        with tf.name_scope("stablefit_test"):
            parts = list(self._stash["batch_sums"])
            if loss is not None:
                parts.append(tf.cast(loss, "float32"))
            norm_squared = None
            if not self.scaled_loss:
                # Under a loss scale, non-finite gradients are the LossScaleOptimizer's to skip.
                norm_squared = gradient_norm_squared(grads)
                parts.append(norm_squared)
            # A capture the host asked for is inf: one sum tests it with everything else.
            parts.append(counters.capture.value)
            ok = tf.math.is_finite(tf.add_n(parts))
            factor = self._explosion_factor()
            if norm_squared is not None:
                finite_steps = counters.finite_steps.value
                log_median = counters.log_norm_median.value
                log_norm = 0.5 * tf.math.log(tf.maximum(norm_squared, 1e-30))
                if not math.isinf(factor):
                    ordinary = tf.logical_or(
                        finite_steps < self.warmup, log_norm < log_median + math.log(factor)
                    )
                    ok = tf.logical_and(ok, ordinary)

        def median(moved: Any) -> None:
            with tf.name_scope("stablefit_median"):
                counters.log_norm_median.assign(
                    updated_median(moved, log_norm, finite_steps, log_median)
                )
                _tf_add(counters.finite_steps, tf.cast(moved, "int32"))

        if self._gates_updates():
            self._gated_apply(ok, original, grads, variables)
            if norm_squared is not None:
                median(ok)
        else:

            def update() -> Any:
                original(grads, variables)
                if norm_squared is not None:
                    median(tf.constant(True))
                return tf.constant(True)

            with tf.name_scope("stablefit_update"):
                tf.cond(ok, update, lambda: tf.constant(False))
        self._stash["ok"] = ok

    def _gates_updates(self) -> bool:
        """Whether the common step's update can be gated assignment by assignment instead
        of put under a condition: for Keras's own optimizers, whose every change of a
        variable goes through the optimizer's ``assign``, ``assign_add`` and
        ``assign_sub``, when nothing else changes variables in ``apply`` (no gradient
        accumulation, moving average, constraint or variable overwritten by its gradient).

        (A condition costs a Switch node for each variable and gradient it takes in, two
        or three times the nodes of a select for each assignment.)
        """
        optimizer = self.model.optimizer
        if self.scaled_loss or type(optimizer) not in _GATED_OPTIMIZERS:
            return False
        if optimizer.gradient_accumulation_steps or optimizer.use_ema:
            return False
        return not any(
            v.constraint is not None or v.overwrite_with_gradient
            for v in self.model.trainable_variables
        )

    def _gated_apply(
        self, ok: Any, original: Callable[..., Any], grads: list[Any], variables: Any
    ) -> None:
        """``original(grads, variables)`` with every assignment of the optimizer left
        undone when ``ok`` is false: the weights, slots and iteration count unchanged."""
        import tensorflow as tf

        optimizer = self.model.optimizer
        assign, assign_add, assign_sub = (
            optimizer.assign,
            optimizer.assign_add,
            optimizer.assign_sub,
        )
        zeros: dict[Any, Any] = {}

        def unless_ok(value: Any, otherwise: Callable[[Any], Any]) -> Any:
            # A NaN update must not reach the variable, even times 0: a select, not a product.
            with tf.name_scope("stablefit_update"):
                if isinstance(value, tf.IndexedSlices):
                    values = tf.where(ok, value.values, otherwise(value))
                    return tf.IndexedSlices(values, value.indices, value.dense_shape)
                return tf.where(ok, value, otherwise(value))

        def zero(value: Any) -> Any:
            dtype = tf.as_dtype(value.dtype)
            if dtype not in zeros:
                zeros[dtype] = tf.zeros((), dtype)
            return zeros[dtype]

        def gated_assign(variable: Any, value: Any) -> None:
            tensor = variable.value if hasattr(variable, "value") else variable
            value = (
                tf.cast(value, tensor.dtype) if not isinstance(value, tf.IndexedSlices) else value
            )

            def unchanged(update: Any) -> Any:
                if isinstance(update, tf.IndexedSlices):
                    return tf.gather(tensor, update.indices)
                return tensor

            assign(variable, unless_ok(value, unchanged))

        optimizer.assign = gated_assign
        optimizer.assign_add = lambda variable, value: assign_add(variable, unless_ok(value, zero))
        optimizer.assign_sub = lambda variable, value: assign_sub(variable, unless_ok(value, zero))
        self._stash["gate"] = ok
        try:
            original(grads, variables)
        finally:
            for name in ("assign", "assign_add", "assign_sub"):
                vars(optimizer).pop(name, None)
            self._stash.pop("gate")
        # Keras counts the step after the update, outside the optimizer's assignments.
        with tf.name_scope("stablefit_update"):
            _tf_add(optimizer.iterations, tf.where(ok, 0, -1))

    def _tf_careful_apply(
        self, original: Callable[..., Any], grads: list[Any], variables: Any
    ) -> None:
        import tensorflow as tf

        loss = self._stash.get("loss")
        counters = self.counters
        # A step whose every row was left out has nothing to learn from: it is skipped
        # (an optimizer with momentum would still move the weights on zero gradients).
        capture = tf.logical_or(counters.capture.value > 0, self._stash["no_rows"])
        norm_squared = gradient_norm_squared(grads)
        if self.scaled_loss:
            # The LossScaleOptimizer skips and rescales on non-finite gradients itself;
            # the guard skips only what a loss scale cannot fix: a non-finite loss.
            ok = tf.math.is_finite(tf.cast(loss, "float32")) if loss is not None else True
            ok = tf.logical_and(ok, tf.logical_not(capture))
            tf.cond(ok, lambda: _run(original, grads, variables), lambda: tf.constant(False))
            self._stash.update(ok=ok, norm_squared=norm_squared)
            return
        ok, log_norm = step_is_ok(
            loss,
            norm_squared,
            (counters.finite_steps.value, counters.log_norm_median.value),
            self._explosion_factor(),
            self.warmup,
        )
        median_ok = tf.logical_and(ok, tf.logical_not(self._stash["no_rows"]))
        ok = tf.logical_and(ok, tf.logical_not(capture))
        tf.cond(ok, lambda: _run(original, grads, variables), lambda: tf.constant(False))
        counters.log_norm_median.assign(
            updated_median(
                median_ok, log_norm, counters.finite_steps.value, counters.log_norm_median.value
            )
        )
        counters.finite_steps.assign_add(tf.cast(median_ok, "int32"))
        self._stash.update(ok=ok, norm_squared=norm_squared)

    def _train_step(self, data: Any) -> dict[str, Any]:
        """The model's ``train_step`` on ``data``, its update decided with the loss it
        logs when it computes its own (the update was deferred until it returned)."""
        logs = type(self.model).train_step(self.model, data)
        deferred = self._stash.pop("deferred", None)
        if deferred is not None:
            self._stash["loss"] = self._own_loss(logs)
            self._deferred_apply(*deferred)
        return logs

    def _own_loss(self, logs: dict[str, Any], default: Any = None) -> Any:
        """The step's loss as the optimizer was given it (Keras's ``train_step`` passes it
        to ``scale_loss``), else the scalar a ``train_step`` of the model's own logs as
        ``loss``; ``default`` without either."""
        loss = self._stash.get("loss")
        if loss is not None:
            return loss
        logged = logs.get("loss")
        scalar = logged is not None and len(getattr(logged, "shape", (0,))) == 0
        return logged if scalar and "float" in str(logged.dtype) else default

    def _last_own_loss(self) -> Any | None:
        """The variable holding the last finite loss the model's own train_step logged;
        None when a loss is compiled (its tracker is restored instead)."""
        return None if has_loss(self.model) else self.counters.own_loss

    def _restorable(self) -> list[Any]:
        """What a skipped step leaves as it was, besides the weights and optimizer state."""
        model = self.model
        counter_variables = self.counters.variables
        guarded = [v for v in model.metrics_variables if not any(v is c for c in counter_variables)]
        return guarded + [v for v in model.non_trainable_variables if "float" in str(v.dtype)]

    def _restore_unless(self, ok: Any, restorable: list[Any], before: list[Any]) -> None:
        import tensorflow as tf

        if not restorable:
            return

        # A select for each variable: fewer graph nodes than a condition taking them in.
        for variable, value in zip(restorable, before, strict=True):
            variable.assign(tf.where(ok, variable.value, value))

    def _tf_train_step(self, data: Any) -> Any:
        """The common step: the model's own, one finiteness test and a conditional update.

        A small model's step costs about as much per graph node as per arithmetic, so this
        step adds only a few nodes to the model's. A step that fails the test changes
        nothing and outputs ``STEP_LOSS`` as ``SETTLE``; the train function then runs
        :meth:`settle`, the careful step, on its batch (kept in variables) before it
        returns (:meth:`_settling`).
        """
        import tensorflow as tf

        if not self.settles:
            return self._tf_careful_every_step(data)
        restorable = self._restorable()
        # Read before the step updates them (automatic control dependencies keep the order).
        with tf.name_scope("stablefit_restore"):
            before = [tf.convert_to_tensor(v.value) for v in restorable]
        self._stash.clear()
        with tf.name_scope("stablefit_test"):
            self._stash.update(common=True, batch_sums=batch_sums(data))
        with tf.name_scope("stablefit_keep"):
            self._tf_keep_batch(data)
        if self.indexes:
            # A NaN index stops TensorFlow's step with an error before the test can send
            # the batch to the careful step, which leaves the row out.
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            data = keras.utils.pack_x_y_sample_weight(_zero_nonfinite(x), y, sample_weight)
        logs = self._train_step(data)
        ok = self._stash.get("ok", tf.constant(True))
        # A step that failed is settled before the train function returns: its logs,
        # read before this restore, are replaced by the careful step's (:meth:`settle`).
        with tf.name_scope("stablefit_restore"):
            self._restore_unless(ok, restorable, before)
        counters = self.counters
        with tf.name_scope("stablefit_counts"):
            rows = batch_rows(data)
            for variable, added in zip(_fed(counters), (1, rows, rows), strict=True):
                _tf_add(variable, added)
        # The counts are read once an epoch (:meth:`epoch_counts`): each output of the step
        # costs Keras about 30 µs of Python a step to hand over, as much as 20 graph nodes.
        logs = {key: value for key, value in logs.items() if key not in COUNT_KEYS}
        with tf.name_scope("stablefit_step_loss"):
            loss = tf.cast(self._own_loss(logs, tf.constant(np.nan)), "float32")
            last_own_loss = self._last_own_loss()
            if last_own_loss is not None:  # (for a failed step the careful step's logs count)
                finite = tf.logical_and(ok, tf.math.is_finite(loss))
                last_own_loss.assign(tf.where(finite, loss, last_own_loss.value))
            step_loss = tf.where(ok, loss, tf.constant(SETTLE, "float32"))
        return {**logs, STEP_LOSS: step_loss}

    def _tf_keep_batch(self, data: Any) -> None:
        """Keep the batch in variables, for the careful step should this one fail.

        (Every step: a conditional copy costs more nodes than the copy, and a host callback
        in the graph, even in a branch not taken, slows every step.)
        """
        import tensorflow as tf

        flat = _flat_batch(*keras.utils.unpack_x_y_sample_weight(data))
        tensors = flat["tensors"]
        if self._slots is None or len(self._slots) != len(tensors):
            with tf.init_scope():
                self._slots = [
                    tf.Variable(
                        tf.zeros([0, *t.shape[1:]], dtype=t.dtype),
                        shape=tf.TensorShape([None, *t.shape[1:]]),
                        trainable=False,
                    )
                    for t in tensors
                ]
            self._careful = None
        self._slot_layout = flat
        for slot, value in zip(self._slots, tensors, strict=True):
            slot.assign(value)

    def settle(self) -> dict[str, Any]:
        """TensorFlow, on the host after a step marked not ok: run the careful step.

        It leaves the bad rows out, retakes the step with every check, counts it, and hands
        the batch to ``on_report`` when it had bad rows or was skipped. Returns the step's
        logs (loss and metrics and ``STEP_LOSS``; the counts are the epoch's, see
        :meth:`epoch_counts`) as numbers.
        """
        import tensorflow as tf

        if self._careful is None:
            self._careful = tf.function(
                lambda: self._tf_careful_step(self._kept_batch(), counted=True), autograph=False
            )
        logs, values = self._careful()
        arrays = [np.asarray(v) for v in values]
        if bool(arrays[-1]):
            self._receive(self._slot_layout, arrays[:-1])
        return {
            key: np.asarray(value).item() for key, value in logs.items() if key not in COUNT_KEYS
        }

    def _kept_batch(self) -> tuple[Any, ...]:
        flat = self._slot_layout
        n_x, n_y, n_w = flat["sizes"]
        tensors = [slot.read_value() for slot in self._slots]
        x_structure, y_structure = flat["shapes"]
        x = keras.tree.pack_sequence_as(x_structure, tensors[:n_x])
        y = tensors[n_x : n_x + n_y]
        y = None if y_structure is None else keras.tree.pack_sequence_as(y_structure, y)
        return (x, y, tensors[n_x + n_y]) if n_w else (x, y)

    def _tf_careful_step(self, data: Any, *, counted: bool) -> tuple[dict[str, Any], list[Any]]:
        """Bad rows left out, the step taken with every check; its logs and report values.

        ``counted``: whether the common step has counted the batch in the epoch's steps and
        rows already.
        """
        import tensorflow as tf

        model = self.model
        batch, row_ok, bad = mask_bad_rows(data)
        restorable = self._restorable()
        before = [tf.identity(v.value) for v in restorable]
        self._stash.clear()
        self._stash["no_rows"] = no_rows(row_ok)
        logs = self._train_step(batch)
        ok = self._stash.get("ok", tf.constant(True))
        self._restore_unless(ok, restorable, before)
        counters = self.counters
        rows = batch_rows(data)
        fed = _fed(counters)
        # Where this batch began.
        where = [tf.identity(v.value) for v in fed]
        if counted:
            where = [where[0] - 1, where[1] - rows, where[2] - rows]
        else:
            for variable, added in zip(fed, (1, rows, rows), strict=True):
                _tf_add(variable, added)
        counters.skipped_steps.assign_add(1 - tf.cast(ok, "int32"))
        counters.bad_rows.assign_add(bad)
        counters.capture.assign(0)
        loss = tf.cast(self._own_loss(logs, tf.constant(np.nan)), "float32")
        norm_squared = self._stash.get("norm_squared", tf.constant(np.nan))
        trained = tf.identity(counters.epoch_steps.value) - tf.identity(
            counters.skipped_steps.value
        )
        logs = honest_logs(
            settled_logs(logs, model.get_metrics_result(), self._last_own_loss()), trained
        )
        logs[STEP_LOSS] = tf.where(ok, loss, tf.constant(np.nan, "float32"))
        tensors = _flat_batch(*keras.utils.unpack_x_y_sample_weight(data))["tensors"]
        if row_ok is None:
            row_ok = tf.ones(tf.shape(tensors[0])[:1], tf.bool)
        rare = tf.logical_or(tf.logical_not(ok), bad > 0)
        values = [*tensors, *where, row_ok, ok, loss, norm_squared, rare]
        return logs, values

    def _tf_careful_every_step(self, data: Any) -> Any:
        """With several steps per execution the host cannot settle a step before the next:
        every step is careful, and the batch of a rare one is kept for :meth:`collect`.

        (A host callback in the graph, even in a branch not taken, slows every step.)
        """
        import tensorflow as tf

        self._slot_layout = _flat_batch(*keras.utils.unpack_x_y_sample_weight(data))
        logs, values = self._tf_careful_step(data, counted=False)
        rare, values = values[-1], values[:-1]
        if self._slots is None or len(self._slots) != len(values):
            with tf.init_scope():
                self._slots = [
                    tf.Variable(
                        tf.zeros([0], dtype=v.dtype), shape=tf.TensorShape(None), trainable=False
                    )
                    for v in values
                ]

        def keep() -> Any:
            for slot, value in zip(self._slots, values, strict=True):
                slot.assign(value)
            return tf.constant(True)

        tf.cond(rare, keep, lambda: tf.constant(False))
        return logs

    def collect(self) -> None:
        """Several steps per execution: hand the rare step kept to ``on_report``."""
        if self._slots is not None:
            self._receive(self._slot_layout, [np.asarray(slot.numpy()) for slot in self._slots])

    # -- PyTorch (eager: the decisions are plain Python on the step's own values) -------

    def _eager_apply(self, original: Callable[..., Any], grads: list[Any], variables: Any) -> None:
        loss = self._stash.get("loss")
        counters = self.counters
        capture = bool(counters.capture.numpy() > 0) or bool(self._stash["no_rows"])
        norm_squared = gradient_norm_squared(grads)
        if self.scaled_loss:
            ok = (loss is None or bool(ops.isfinite(loss))) and not capture
            if ok:
                original(grads, variables)
            self._stash.update(ok=ok, norm_squared=norm_squared)
            return
        finite_ok, log_norm = step_is_ok(
            loss,
            norm_squared,
            (counters.finite_steps.value, counters.log_norm_median.value),
            self._explosion_factor(),
            self.warmup,
        )
        median_ok = bool(finite_ok) and not bool(self._stash["no_rows"])
        ok = median_ok and not capture
        if ok:
            original(grads, variables)
        if median_ok:
            counters.log_norm_median.assign(
                updated_median(
                    True, log_norm, counters.finite_steps.value, counters.log_norm_median.value
                )
            )
            counters.finite_steps.assign_add(1)
        self._stash.update(ok=ok, norm_squared=norm_squared)

    def _eager_train_step(self, data: Any) -> Any:
        model = self.model
        batch, row_ok, bad = mask_bad_rows(data)
        counter_variables = self.counters.variables
        guarded = [v for v in model.metrics_variables if not any(v is c for c in counter_variables)]
        guarded += [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
        before = [ops.copy(v.value) for v in guarded]
        self._stash.clear()
        self._stash["no_rows"] = no_rows(row_ok)
        logs = self._train_step(batch)
        ok = bool(self._stash.get("ok", True))
        if not ok:
            for variable, value in zip(guarded, before, strict=True):
                variable.assign(value)
        bad_rows = int(ops.convert_to_numpy(bad))
        counters = self.counters
        rows = batch_rows(data)
        counters.skipped_steps.assign_add(0 if ok else 1)
        counters.bad_rows.assign_add(bad_rows)
        counters.capture.assign(0)
        counters.epoch_steps.assign_add(1)
        counters.epoch_rows.assign_add(rows)
        counters.fit_rows.assign_add(rows)
        if not ok or bad_rows:
            # Where this batch began, read only for a step the host is told about.
            fed = [counters.epoch_steps - 1, counters.epoch_rows - rows, counters.fit_rows - rows]
            where = [int(ops.convert_to_numpy(value)) for value in fed]
            flat = _flat_batch(*keras.utils.unpack_x_y_sample_weight(data))
            loss = self._own_loss(logs)
            norm_squared = self._stash.get("norm_squared")
            values = [
                *flat["tensors"],
                *where,
                np.ones(len(ops.convert_to_numpy(flat["tensors"][0])), bool)
                if row_ok is None
                else row_ok,
                ok,
                np.nan if loss is None else loss,
                np.nan if norm_squared is None else norm_squared,
            ]
            self._receive(flat, [np.asarray(ops.convert_to_numpy(v)) for v in values])
        loss = self._own_loss(logs)
        step_loss = float(ops.convert_to_numpy(loss)) if ok and loss is not None else math.nan
        trained = counters.epoch_steps.value - counters.skipped_steps.value
        logs = honest_logs(
            settled_logs(logs, model.get_metrics_result(), self._last_own_loss()), trained
        )
        return {**logs, STEP_LOSS: step_loss}

    # -- JAX ---------------------------------------------------------------------------

    def _jax_train_step(self, state: Any, data: Any) -> Any:
        import jax
        import jax.numpy as jnp

        model = self.model
        trainable, non_trainable, optimizer_vars, metrics_vars = state
        index = {id(v): i for i, v in enumerate(model.metrics_variables)}
        at = {
            name: index[id(getattr(self.counters, name))]
            for name in (
                "skipped_steps",
                "bad_rows",
                "log_norm_median",
                "finite_steps",
                "learning_rate_scale",
                "capture",
                "epoch_steps",
                "epoch_rows",
                "fit_rows",
            )
        }
        batch, row_ok, bad = mask_bad_rows(data, drop=False, add_weights=not self.own_step)
        self._stash.clear()
        self._stash["lr_scale"] = metrics_vars[at["learning_rate_scale"]]
        # The step adds its loss to the loss metric's total and count starting from zero,
        # and the epoch's sums are added back after: read as a difference of the epoch's
        # float32 sums, a step's loss after a huge one (a divergence the guard rolled back)
        # came out in steps of the sum's precision (0.5, 1.0, ... or 0.0).
        total, count = self._loss_sums()
        started = list(metrics_vars)
        started[total], started[count] = (
            jnp.zeros_like(started[total]),
            jnp.zeros_like(started[count]),
        )
        state = (trainable, non_trainable, optimizer_vars, started)
        step_logs, new_state = type(model).train_step(model, state, batch)
        new_trainable, new_non_trainable, new_optimizer_vars, new_metrics_vars = new_state
        new_metrics_vars = list(new_metrics_vars)
        loss = new_metrics_vars[total] / jnp.maximum(new_metrics_vars[count], 1e-30)
        for i in (total, count):
            new_metrics_vars[i] = metrics_vars[i] + new_metrics_vars[i]
        if self.own_step and not has_loss(model):
            # Its loss is what it logs (it may update no loss metric).
            loss = self._own_loss(step_logs, loss)
        norm_squared = self._stash.get("norm_squared")
        finite_steps = metrics_vars[at["finite_steps"]]
        log_median = metrics_vars[at["log_norm_median"]]
        capture = metrics_vars[at["capture"]] > 0
        if self.scaled_loss or norm_squared is None:
            median_ok = jnp.bool_(False)
            log_norm = jnp.float32(0.0)
            ok = jnp.isfinite(loss)
        else:
            median_ok, log_norm = step_is_ok(
                loss,
                norm_squared,
                (finite_steps, log_median),
                self._explosion_factor(),
                self.warmup,
            )
            ok = median_ok
        empty = no_rows(row_ok)
        if self.skips_bad_batches(
            weighted=keras.utils.unpack_x_y_sample_weight(data)[2] is not None
        ):
            empty = jnp.logical_or(empty, bad > 0)
        median_ok = jnp.logical_and(median_ok, jnp.logical_not(empty))
        ok = jnp.logical_and(ok, jnp.logical_not(jnp.logical_or(capture, empty)))

        def choose(new: Any, old: Any) -> list[Any]:
            return [jnp.where(ok, n, o) for n, o in zip(new, old, strict=True)]

        metrics = choose(new_metrics_vars, metrics_vars)
        metrics[at["skipped_steps"]] = metrics_vars[at["skipped_steps"]] + 1 - ok.astype("int32")
        metrics[at["bad_rows"]] = metrics_vars[at["bad_rows"]] + bad
        metrics[at["log_norm_median"]] = updated_median(
            median_ok, log_norm, finite_steps, log_median
        )
        metrics[at["finite_steps"]] = finite_steps + median_ok.astype("int32")
        metrics[at["learning_rate_scale"]] = metrics_vars[at["learning_rate_scale"]]
        metrics[at["capture"]] = jnp.zeros_like(metrics_vars[at["capture"]])
        where = [metrics_vars[at[name]] for name in ("epoch_steps", "epoch_rows", "fit_rows")]
        rows = batch_rows(data)
        metrics[at["epoch_steps"]] = where[0] + 1
        metrics[at["epoch_rows"]] = where[1] + rows
        metrics[at["fit_rows"]] = where[2] + rows
        state = (
            choose(new_trainable, trainable),
            choose(new_non_trainable, non_trainable),
            choose(new_optimizer_vars, optimizer_vars),
            metrics,
        )
        mapping = list(zip(model.metrics_variables, metrics, strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            logs = model.get_metrics_result()
        logs = honest_logs(logs, metrics[at["epoch_steps"]] - metrics[at["skipped_steps"]])
        logs[STEP_LOSS] = jnp.where(ok, jnp.asarray(loss, "float32"), jnp.float32(np.nan))
        flat = _flat_batch(*keras.utils.unpack_x_y_sample_weight(data))
        if row_ok is None:
            row_ok = jnp.ones((flat["tensors"][0].shape[0],), dtype=bool)
        values = [
            *flat["tensors"],
            *where,
            row_ok,
            ok,
            jnp.asarray(loss, "float32"),
            jnp.asarray(np.nan if norm_squared is None else norm_squared, "float32"),
        ]

        def send(*arrays: Any) -> np.ndarray:
            # JAX may call a pure callback more than once for a step: it is reported once,
            # known by the rows fed before it since fit began (one count for each step).
            fed = int(arrays[-5])
            if fed not in self._sent:
                self._sent.add(fed)
                self._receive(flat, [np.asarray(a) for a in arrays])
            return np.ones((), np.int32)

        # jax.pure_callback, not jax.debug.callback: a step with a side effect JAX must keep
        # (debug.callback's) leaves JAX's fast dispatch path, which cost every step of a
        # small model about 1.3 ms of Python (3.8 times the epoch's CPU time). Its result
        # is an output of the step, so the call is not left out.
        rare = jnp.logical_or(jnp.logical_not(ok), bad > 0)
        logs[SENT] = jax.lax.cond(
            rare,
            lambda: jax.pure_callback(send, jax.ShapeDtypeStruct((), np.int32), *values),
            lambda: jnp.zeros((), np.int32),
        )
        return logs, state

    def _loss_sums(self) -> tuple[int, int]:
        """The places of the loss metric's total and count among the metrics' variables."""
        index = {id(v): i for i, v in enumerate(self.model.metrics_variables)}
        total, count = (index[id(v)] for v in self.model.metrics[0].variables[:2])
        return total, count

    # -- host side ---------------------------------------------------------------------

    def _receive(self, flat: dict[str, Any], arrays: list[np.ndarray]) -> None:
        n_x, n_y, n_w = flat["sizes"]
        data, (step, epoch_rows, fit_rows, row_ok, ok, loss, norm_squared) = (
            arrays[: n_x + n_y + n_w],
            arrays[-7:],
        )
        report = StepReport(
            inputs=data[:n_x],
            targets=data[n_x : n_x + n_y],
            sample_weight=data[n_x + n_y] if n_w else None,
            row_ok=np.asarray(row_ok, dtype=bool).reshape(-1),
            step_ok=bool(ok),
            loss=float(loss),
            gradient_norm=math.sqrt(float(norm_squared)) if norm_squared >= 0 else math.nan,
            structure=flat["shapes"],
            step_in_epoch=int(step),
            rows_before=(int(epoch_rows), int(fit_rows)),
        )
        with self._lock:
            self.on_report(report)


def _fed(counters: GuardCounters) -> tuple[Any, Any, Any]:
    """The counts of steps and rows fed to the step: in the epoch, and rows since ``fit`` began."""
    return counters.epoch_steps, counters.epoch_rows, counters.fit_rows


def _tf_add(variable: Any, amount: Any) -> None:
    """``variable += amount`` in one graph node (Keras's ``assign_add`` reads, adds, assigns)."""
    variable.value.assign_add(ops.cast(amount, variable.dtype), read_value=False)


def _run(original: Callable[..., Any], grads: list[Any], variables: Any) -> Any:
    import tensorflow as tf

    original(grads, variables)
    return tf.constant(True)


def _flat_batch(x: Any, y: Any, sample_weight: Any) -> dict[str, Any]:
    inputs = keras.tree.flatten(x)
    targets = [] if y is None else keras.tree.flatten(y)
    weights = [] if sample_weight is None else keras.tree.flatten(sample_weight)[:1]
    placeholder = (
        keras.tree.map_structure(lambda _: 0, x),
        None if y is None else keras.tree.map_structure(lambda _: 0, y),
    )
    return {
        "tensors": [*inputs, *targets, *weights],
        "sizes": (len(inputs), len(targets), len(weights)),
        "shapes": placeholder,
    }
