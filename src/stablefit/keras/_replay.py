"""Replaying a failed batch through a Keras model, layer by layer, on TensorFlow or JAX.

Runs only at an event, on the host, from the weights before the failing step: which rows
held NaN/inf and in which columns, the first layer whose output stopped being finite
(and, for a float16/bfloat16 layer, how large its output is when computed in float32),
whether the predictions and the loss were finite, the gradient norm, and the largest
eigenvalue of the loss's (preconditioned) Hessian by power iteration on exact
Hessian-vector products.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from stablefit.guard import Curvature, LayerOverflow, Replay, hessian_curvature, power_iteration
from stablefit.keras._optimizer import forecast_settings

_LOW_PRECISION = ("float16", "bfloat16")
#: A row whose values reach this many times the batch's typical row (and 1), and whose own
#: loss term this many times the others' (or not finite), is extreme data: a value like
#: 1e30 is finite, so no row mask leaves it out, but its square overflows float32.
EXTREME_RATIO = 1e6
#: Power iterations for the curvature estimate at an event.
CURVATURE_ITERATIONS = 20


def bad_columns(
    inputs: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    rows: np.ndarray,
    feature_names: Sequence[str] | None,
    sample_weight: np.ndarray | None = None,
    structure: Any = None,
    output_names: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """The columns holding a non-finite value in ``rows``, named as the user knows them
    (``"sample_weight"`` for the rows' weights, which ``class_weight`` makes too; an
    input or target given in a dict by its key; one of several targets given in a list
    with the model's name for its output). ``structure``: ``(x, y)`` structures."""
    x_structure, y_structure = structure if structure is not None else (None, None)
    names: list[str] = []
    prefixes = _leaf_names(x_structure, len(inputs), "x", "input")
    for number, array in enumerate(inputs):
        columns = feature_names if number == 0 else None
        names += _columns(np.asarray(array)[rows], prefixes[number], columns)
    prefixes = _leaf_names(y_structure, len(targets), "y", "target")
    if output_names is not None and len(output_names) == len(targets) > 1:
        prefixes = [
            f"{prefix} (output {name!r})" if prefix.startswith("target ") else prefix
            for prefix, name in zip(prefixes, output_names, strict=True)
        ]
    for number, array in enumerate(targets):
        names += _columns(np.asarray(array)[rows], prefixes[number], None)
    if sample_weight is not None:
        names += _columns(np.asarray(sample_weight)[rows], "sample_weight", None)
    return tuple(names)


def _leaf_names(structure: Any, count: int, one: str, many: str) -> list[str]:
    """Names of a structure's ``count`` arrays: ``y['b']`` when it is a dict (of dicts),
    else ``one`` for a single array and "``many`` 0", "``many`` 1", ... for several."""
    paths = [] if structure is None else [p for p, _ in keras.tree.flatten_with_path(structure)]
    if len(paths) == count and all(p and all(isinstance(k, str) for k in p) for p in paths):
        return [one + "".join(f"[{key!r}]" for key in path) for path in paths]
    return [one] if count == 1 else [f"{many} {number}" for number in range(count)]


def _columns(values: np.ndarray, prefix: str, names: Sequence[str] | None) -> list[str]:
    if values.dtype.kind != "f":
        return []
    bad = ~np.isfinite(values)
    if values.ndim <= 1 or (values.ndim == 2 and values.shape[1] == 1):
        return [prefix] if bad.any() else []
    if values.ndim > 2:
        return [prefix] if bad.any() else []
    columns = np.flatnonzero(bad.any(axis=0))
    if names is not None and len(names) == values.shape[1]:
        return [str(names[j]) for j in columns]
    return [f"{prefix}[:, {j}]" for j in columns]


def replay_batch(
    model: keras.Model, x: Any, y: Any, sample_weight: Any, *, step_loss: float | None = None
) -> Replay:
    """What went wrong in this (finite) batch at the model's current weights.

    ``step_loss``: the loss the step logged on this batch at these weights, which stands
    for the replayed loss of a model whose own train_step computes it.
    """
    overflow, nonfinite_layer = _layer_by_layer(model, x)
    # In the model's output structure: a model with several outputs gives a list or dict.
    predictions = keras.tree.map_structure(keras.ops.convert_to_numpy, model(x, training=False))
    predictions_finite = all(np.isfinite(p).all() for p in keras.tree.flatten(predictions))
    if not has_loss(model):
        # Nothing to replay the loss with: the model's own train_step computes it.
        return Replay(
            overflow=overflow,
            nonfinite_layer=nonfinite_layer,
            predictions_finite=predictions_finite,
            loss_finite=step_loss is None or math.isfinite(step_loss),
            loss_value=step_loss,
            largest_target=_largest(y),
            largest_input=_largest(x),
            largest_prediction=_largest(predictions),
        )
    loss = _loss_value(model, x, y, sample_weight, predictions)
    offending: tuple[float, ...] = ()
    loss_name = _loss_name(model.loss)
    if predictions_finite and not math.isfinite(loss):
        loss_name, offending = _offending_predictions(model, y, predictions)
    return Replay(
        overflow=overflow,
        nonfinite_layer=nonfinite_layer,
        predictions_finite=predictions_finite,
        loss_finite=math.isfinite(loss),
        loss_name=loss_name,
        loss_value=loss,
        offending_predictions=offending,
        largest_target=_largest(y),
        largest_input=_largest(x),
        largest_prediction=_largest(predictions),
        gradient_norm=gradient_norm(model, x, y, sample_weight),
    )


def extreme_rows(
    model: keras.Model, x: Any, y: Any, sample_weight: Any = None
) -> tuple[np.ndarray, float] | None:
    """The positions of the batch's extreme rows, and the magnitude above which a value is
    extreme; None when the step did not fail for a few such rows.

    A row is extreme when its inputs, targets or sample weight reach ``EXTREME_RATIO``
    times the batch's typical row (and 1), and its own (weighted) loss term is not finite
    or ``EXTREME_RATIO`` times the others' while theirs are finite; at most a quarter of
    the batch.
    """
    if not has_loss(model):
        return None
    weights = [] if sample_weight is None else keras.tree.flatten(sample_weight)[:1]
    leaves = [
        np.asarray(a, dtype=np.float64)
        for a in [*keras.tree.flatten(x), *([] if y is None else keras.tree.flatten(y)), *weights]
        if np.asarray(a).dtype.kind == "f" and np.ndim(a) >= 1
    ]
    rows = len(leaves[0]) if leaves else 0
    if rows < 2:
        return None
    with np.errstate(invalid="ignore"):
        magnitude = np.max([np.abs(a.reshape(rows, -1)).max(axis=1) for a in leaves], axis=0)
    threshold = EXTREME_RATIO * max(float(np.median(magnitude)), 1.0)
    candidates = magnitude > threshold
    if not candidates.any() or 4 * candidates.sum() > rows:
        return None
    terms = _row_terms(model, x, y)
    if terms is not None and weights:
        with np.errstate(invalid="ignore", over="ignore"):
            terms = terms * np.asarray(weights[0], dtype=np.float64).reshape(rows, -1)[:, 0]
    if terms is None or not np.isfinite(terms[~candidates]).all():
        return None
    typical = max(float(np.median(np.abs(terms[~candidates]))), 1e-30)
    with np.errstate(invalid="ignore"):
        extreme = candidates & ~(np.abs(terms) <= EXTREME_RATIO * typical)
    return (np.flatnonzero(extreme), threshold) if extreme.any() else None


def _row_terms(model: keras.Model, x: Any, y: Any) -> np.ndarray | None:
    """Each row's loss (summed over the outputs' losses), None when a loss gives no
    per-row terms."""
    predictions = keras.tree.map_structure(keras.ops.convert_to_numpy, model(x, training=False))
    total = None
    for _, loss, target, predicted in _output_losses(model, y, predictions):
        terms = _loss_terms(loss, target, predicted)
        if terms is None or terms.ndim == 0:
            return None
        with np.errstate(invalid="ignore", over="ignore"):
            row = terms.reshape(len(terms), -1).astype(np.float64).sum(axis=1)
            total = row if total is None else total + row
    return total


def has_loss(model: keras.Model) -> bool:
    """Whether the model computes its loss outside its train_step: one compiled, or a
    ``compute_loss`` of its own (a custom train_step may compute it inline instead)."""
    return (
        getattr(model, "_compile_loss", None) is not None
        or type(model).compute_loss is not keras.Model.compute_loss
    )


def _largest(values: Any) -> float | None:
    arrays = [np.abs(np.asarray(v, dtype=np.float64)) for v in keras.tree.flatten(values)]
    arrays = [a for a in arrays if a.size]
    return max(float(a.max()) for a in arrays) if arrays else None


# -- forward, layer by layer ----------------------------------------------------------------


def _layer_by_layer(model: keras.Model, x: Any) -> tuple[LayerOverflow | None, str | None]:
    probe_layers = [
        layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    try:
        pieces = [
            (keras.tree.flatten(layer.input), keras.tree.flatten(layer.output))
            for layer in probe_layers
        ]
        flat = [t for inputs, outputs in pieces for t in (*inputs, *outputs)]
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        probe = keras.Model(inputs, flat)
        values = [
            keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(probe(x, training=False))
        ]
    except (AttributeError, ValueError, TypeError):
        return None, None  # a subclassed model: no layer graph to walk
    start = 0
    for layer, (layer_inputs, layer_outputs) in zip(probe_layers, pieces, strict=True):
        inputs = values[start : start + len(layer_inputs)]
        start += len(layer_inputs)
        outputs = values[start : start + len(layer_outputs)]
        start += len(layer_outputs)
        if all(np.isfinite(o).all() for o in outputs if o.dtype.kind == "f"):
            continue
        if not all(np.isfinite(i).all() for i in inputs if i.dtype.kind == "f"):
            return None, None
        dtype = str(layer.compute_dtype)
        if dtype in _LOW_PRECISION:
            largest = _largest_in_float32(layer, inputs, outputs)
            limit = float(np.finfo(np.float16).max) if dtype == "float16" else 3.3895314e38
            return LayerOverflow(layer.name, dtype, largest, limit), layer.name
        return None, layer.name
    return None, None


def _largest_in_float32(layer: Any, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """The layer's largest output magnitude when computed in float32 from the same inputs."""
    try:
        config = {**layer.get_config(), "dtype": "float32"}
        clone = type(layer).from_config(config)
        arrays = [np.asarray(i, dtype=np.float32) for i in inputs]
        clone.build(arrays[0].shape if len(arrays) == 1 else [a.shape for a in arrays])
        clone.set_weights([np.asarray(w, dtype=np.float32) for w in layer.get_weights()])
        result = clone(arrays[0] if len(arrays) == 1 else arrays)
        values = [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(result)]
        return float(max(np.max(np.abs(v)) for v in values))
    except Exception:  # any layer the clone does not reproduce: report what was seen
        finite = [np.abs(o[np.isfinite(o)]) for o in outputs]
        seen = [float(f.max()) for f in finite if f.size]
        return max(seen) if seen else math.inf


# -- loss ------------------------------------------------------------------------------------


def _loss_name(loss: Any) -> str | None:
    """A loss as the user gave it to compile: its name, or the names of several."""
    if isinstance(loss, str):
        return loss
    if loss is None:
        return None
    if isinstance(loss, (list, tuple, dict)):
        named = loss.values() if isinstance(loss, dict) else loss
        names = [_loss_name(each) for each in named if each is not None]
        return ", ".join(name for name in names if name) or None
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__


def _loss_value(model: keras.Model, x: Any, y: Any, sample_weight: Any, predictions: Any) -> float:
    try:
        value = model.compute_loss(
            x=x, y=y, y_pred=predictions, sample_weight=sample_weight, training=False
        )
    except TypeError:  # an older compute_loss without ``training``
        value = model.compute_loss(x=x, y=y, y_pred=predictions, sample_weight=sample_weight)
    return float(keras.ops.convert_to_numpy(value))


def _offending_predictions(
    model: keras.Model, y: Any, predictions: Any
) -> tuple[str | None, tuple[float, ...]]:
    """The loss whose terms are not finite (that of one output, named, when the model has
    a loss for each of several) and the predictions of its rows that are not (a few)."""
    for output, loss, target, predicted in _output_losses(model, y, predictions):
        name = _loss_name(loss)
        if output is not None:
            name = f"{name or 'the loss'} of output {output!r}"
        terms = _loss_terms(loss, target, predicted)
        if terms is None or terms.ndim == 0:  # no per-row breakdown
            if terms is None or not np.isfinite(terms):
                return name, ()
            continue
        rows = np.flatnonzero(~np.isfinite(terms.reshape(len(terms), -1)).all(axis=1))
        if not len(rows):
            continue
        picked = np.asarray(predicted).reshape(len(predicted), -1)[rows[:8]]
        return name, tuple(float(v) for v in picked.reshape(-1)[:8])
    return _loss_name(model.loss), ()


def _output_losses(model: keras.Model, y: Any, predictions: Any) -> list[tuple[Any, ...]]:
    """``(output name or None, loss, targets, predictions)`` for each loss compiled: one
    with no name for a single loss; else one per output, in the order of the losses."""
    loss = model.loss
    if not isinstance(loss, (list, tuple, dict)) or len(keras.tree.flatten(predictions)) == 1:
        if isinstance(loss, (list, tuple)) and len(loss) == 1:
            loss = loss[0]
        elif isinstance(loss, dict) and len(loss) == 1:
            loss = next(iter(loss.values()))
        return [(None, loss, _single(y), _single(predictions))]
    names = list(getattr(model, "output_names", None) or [])

    def pick(values: Any, index: int, name: str) -> Any:
        if isinstance(values, dict):
            return values.get(name)
        flat = keras.tree.flatten(values)
        return flat[index] if 0 <= index < len(flat) else None

    if isinstance(loss, dict):
        items = [(n, each, names.index(n) if n in names else -1) for n, each in loss.items()]
    else:
        items = [(names[i] if i < len(names) else str(i), each, i) for i, each in enumerate(loss)]
    found = [(n, each, pick(y, i, n), pick(predictions, i, n)) for n, each, i in items]
    return [item for item in found if item[1] is not None and item[3] is not None]


def _single(values: Any) -> Any:
    flat = keras.tree.flatten(values)
    return flat[0] if len(flat) == 1 else values


def _loss_terms(loss: Any, y: Any, predictions: Any) -> np.ndarray | None:
    """The loss's per-row terms, or None for a loss whose signature does not give them."""
    try:
        function = loss.call if isinstance(loss, keras.losses.Loss) else keras.losses.get(loss)
        terms = function(keras.ops.convert_to_tensor(y), keras.ops.convert_to_tensor(predictions))
        return np.asarray(keras.ops.convert_to_numpy(terms))
    except Exception:  # an unusual loss signature: no per-row breakdown
        return None


# -- gradients and curvature (backend by backend) ----------------------------------------------


def _flatten(arrays: Sequence[Any]) -> np.ndarray:
    return np.concatenate(
        [np.asarray(keras.ops.convert_to_numpy(a), dtype=np.float64).reshape(-1) for a in arrays]
    )


def _unflatten(vector: np.ndarray, like: Sequence[Any]) -> list[np.ndarray]:
    parts, start = [], 0
    for variable in like:
        size = int(np.prod(variable.shape))
        parts.append(vector[start : start + size].reshape(variable.shape).astype(variable.dtype))
        start += size
    return parts


def gradient_norm(model: keras.Model, x: Any, y: Any, sample_weight: Any) -> float:
    """The global norm of the loss's gradient on this batch at the current weights."""
    grads = _gradients(model, x, y, sample_weight)
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads)))


def _gradients(model: keras.Model, x: Any, y: Any, sample_weight: Any) -> list[np.ndarray]:
    variables = model.trainable_variables
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = _loss(model, x, y, sample_weight)
        grads = tape.gradient(loss, [v.value for v in variables])
    elif keras.backend.backend() == "torch":
        import torch

        values = [v.value for v in variables]
        grads = torch.autograd.grad(_loss(model, x, y, sample_weight), values, allow_unused=True)
        grads = [None if g is None else g.detach() for g in grads]
    else:
        import jax

        loss_of = _jax_loss_function(model, x, y, sample_weight)
        grads = jax.grad(loss_of)([v.value for v in variables])
    return [
        np.zeros(v.shape) if g is None else np.asarray(keras.ops.convert_to_numpy(g))
        for g, v in zip(grads, variables, strict=True)
    ]


def _loss(model: keras.Model, x: Any, y: Any, sample_weight: Any) -> Any:
    predictions = model(x, training=False)
    return model.compute_loss(x=x, y=y, y_pred=predictions, sample_weight=sample_weight)


def _jax_loss_function(model: keras.Model, x: Any, y: Any, sample_weight: Any) -> Callable:
    non_trainable = [v.value for v in model.non_trainable_variables]
    metrics = [v.value for v in model.metrics_variables]

    def loss_of(trainable: list[Any]) -> Any:
        loss, _ = model.compute_loss_and_updates(
            trainable, non_trainable, metrics, x, y, sample_weight, training=False
        )
        return loss

    return loss_of


def hessian_vector_product(
    model: keras.Model, x: Any, y: Any, sample_weight: Any
) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """``(size, hvp)``: the number of trainable parameters and ``v -> H v`` on flat vectors."""
    variables = model.trainable_variables
    size = int(sum(np.prod(v.shape) for v in variables))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        values = [v.value for v in variables]

        def hvp(vector: np.ndarray) -> np.ndarray:
            tangents = [tf.constant(p) for p in _unflatten(vector, variables)]
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = _loss(model, x, y, sample_weight)
                grads = inner.gradient(loss, values)
                dot = tf.add_n(
                    [
                        tf.reduce_sum(g * t)
                        for g, t in zip(grads, tangents, strict=True)
                        if g is not None
                    ]
                )
            products = outer.gradient(dot, values)
            return _flatten(
                [
                    np.zeros(v.shape) if p is None else p
                    for p, v in zip(products, variables, strict=True)
                ]
            )

        return size, hvp

    if keras.backend.backend() == "torch":
        import torch

        parameters = [v.value for v in variables]

        def torch_hvp(vector: np.ndarray) -> np.ndarray:
            tangents = [
                torch.as_tensor(p, dtype=w.dtype)
                for p, w in zip(_unflatten(vector, variables), parameters, strict=True)
            ]
            loss = _loss(model, x, y, sample_weight)
            grads = torch.autograd.grad(loss, parameters, create_graph=True, allow_unused=True)
            dot = sum((g * t).sum() for g, t in zip(grads, tangents, strict=True) if g is not None)
            products = torch.autograd.grad(dot, parameters, allow_unused=True)
            return _flatten(
                [
                    np.zeros(v.shape) if p is None else p.detach()
                    for p, v in zip(products, variables, strict=True)
                ]
            )

        return size, torch_hvp

    import jax

    loss_of = _jax_loss_function(model, x, y, sample_weight)
    point = [v.value for v in variables]

    def jax_hvp(vector: np.ndarray) -> np.ndarray:
        tangents = [jax.numpy.asarray(p) for p in _unflatten(vector, variables)]
        return _flatten(jax.jvp(jax.grad(loss_of), (point,), (tangents,))[1])

    return size, jax_hvp


def estimate_curvature(
    model: keras.Model, optimizer: keras.optimizers.Optimizer, x: Any, y: Any, sample_weight: Any
) -> Curvature | None:
    """The largest eigenvalue of the (preconditioned) Hessian on this batch, and its bound
    (None without a loss to differentiate twice)."""
    if not has_loss(model):
        return None
    settings = forecast_settings(optimizer)
    name = str(settings["optimizer"]).lower()
    size, hvp = hessian_vector_product(model, x, y, sample_weight)
    scale = _preconditioner(optimizer, model.trainable_variables)
    if scale is None and name != "sgd":
        # Before the optimizer's first update (a rollback to the start of training
        # restores none): its second moments as this batch's squared gradient.
        gradient = _flatten(_gradients(model, x, y, sample_weight))
        scale = _preconditioner(optimizer, model.trainable_variables, gradient=gradient)
    if scale is None and name != "sgd":
        return None
    if scale is not None:
        root = np.sqrt(scale)

        def operator(vector: np.ndarray) -> np.ndarray:
            return hvp(vector / root) / root

    else:
        operator = hvp
    lambda_max = power_iteration(operator, size, iterations=CURVATURE_ITERATIONS)
    if not math.isfinite(lambda_max):
        return None
    return hessian_curvature(
        lambda_max,
        name,
        preconditioned=scale is not None,
        momentum=settings["momentum"],
        nesterov=settings["nesterov"],
        beta_1=float(np.asarray(getattr(optimizer, "beta_1", 0.9))),
    )


def _preconditioner(
    optimizer: Any, variables: Sequence[Any], *, gradient: np.ndarray | None = None
) -> np.ndarray | None:
    """``sqrt(v̂) + ε`` of an Adam/RMSprop-style optimizer, flat; None for others.

    Before the first update, when the second moments are still zero: None, or given a
    ``gradient`` (flat), ``|gradient| + ε`` (Adam's bias-corrected ``v̂`` after its first
    update, what RMSprop's average of squares tends to).
    """
    velocities = getattr(optimizer, "_velocities", None)
    if not velocities or len(velocities) != len(variables):
        return None
    steps = int(optimizer.iterations.numpy())
    epsilon = float(getattr(optimizer, "epsilon", 1e-7))
    if steps == 0:
        return None if gradient is None else np.abs(gradient) + epsilon
    second = _flatten([v.numpy() for v in velocities])
    beta_2 = getattr(optimizer, "beta_2", None)
    if beta_2 is not None:  # Adam's bias correction
        second = second / (1.0 - float(beta_2) ** steps)
    return np.sqrt(second) + epsilon
