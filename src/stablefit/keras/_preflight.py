"""``preflight``: stablefit's diagnosis of a compiled Keras model before ``fit``.

For a linear model -- one ``Dense(1)`` without activation, optionally after a
``Normalization`` layer -- the training forecast is stablefit's exact one: the
normalization is folded into the data, and the optimizer, learning rate and momentum are
read from the model. For any other model the data checks run, and the largest eigenvalue
of the loss's Hessian at the model's current weights is estimated by power iteration on
Hessian-vector products; it is labelled an estimate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from stablefit.diagnose import Diagnosis, Finding, diagnose
from stablefit.diagnose.checks.forecast import FORECAST_CODES
from stablefit.diagnose.findings import format_number
from stablefit.diagnose.model_findings import (
    HESSIAN_ITERATIONS,
    curvature_finding,
    hessian_rows,
    nonfinite_weight_finding,
)
from stablefit.errors import StablefitInputError
from stablefit.keras._optimizer import forecast_settings, learning_rate_object

_MSE_NAMES = {"mse", "mean_squared_error", "MeanSquaredError"}


def preflight(
    model: keras.Model, x: Any, y: Any, *, batch_size: int = 32, epochs: int = 100
) -> Diagnosis:
    """Diagnose training ``model`` on ``(x, y)`` as compiled, before calling ``fit``.

    Parameters
    ----------
    model : keras.Model
        A compiled model (``model.compile(optimizer=..., loss=...)``).
    x, y : array-like
        The training inputs (rows by features) and targets.
    batch_size, epochs : int
        As they will be given to ``model.fit``.

    Returns
    -------
    Diagnosis
        For a linear model, :func:`stablefit.diagnose`'s diagnosis of the data as the Dense
        layer sees it (after the model's Normalization) with the model's optimizer,
        learning rate and momentum. For other models, the data checks and a finding SF302
        with the estimated largest Hessian eigenvalue (``training`` is None: the exact
        forecast covers linear models only).

    Raises
    ------
    StablefitInputError
        When the model is not compiled, or ``x`` does not fit its input.

    Examples
    --------
    >>> import keras, numpy as np
    >>> from stablefit.keras import preflight
    >>> x = np.array([[1.0, 1e6], [2.0, 2e6], [3.0, 3e6]])
    >>> model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
    >>> diagnosis = preflight(model, x, np.array([10.0, 20.0, 30.0]))
    >>> diagnosis.training.outcome, diagnosis.training.first_nonfinite_epoch
    ('diverges', 3)
    """
    _validate(model, x)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
    if y.shape[1] == 1:
        y = y[:, 0]
    settings = forecast_settings(model.optimizer)
    dtype = _float_type(model)
    weight_findings = _weight_findings(model)
    linear = _linear_structure(model)
    if linear is not None and _is_mse(model.loss):
        normalization, dense = linear
        features = x if normalization is None else _normalize(normalization, x)
        diagnosis = diagnose(
            features,
            y,
            batch_size=batch_size,
            epochs=epochs,
            dtype=dtype,
            intercept=bool(dense.use_bias),
            **settings,
        )
        if diagnosis.training is not None:
            notes = [
                "preflight: simulated from Keras's glorot_uniform initialization; the model's "
                f"current weights give loss {format_number(_current_loss(model, x, y))}"
            ]
            if not isinstance(learning_rate_object(model.optimizer), keras.Variable):
                notes.append(
                    "preflight: the learning rate is a schedule; forecast at its current "
                    f"value {format_number(settings['learning_rate'])}, held constant"
                )
            training = dataclasses.replace(
                diagnosis.training, notes=(*diagnosis.training.notes, *notes)
            )
            diagnosis = dataclasses.replace(diagnosis, training=training)
        return _with_findings(diagnosis, weight_findings)
    diagnosis = diagnose(x, y, batch_size=batch_size, epochs=epochs, dtype=dtype, **settings)
    data_findings = [f for f in diagnosis.findings if f.code not in FORECAST_CODES]
    if not weight_findings:
        data_findings += _curvature_findings(model, x, y, settings)
    return Diagnosis(
        findings=(*weight_findings, *data_findings),
        training=None,
        facts=diagnosis.facts,
        settings=diagnosis.settings,
        other_forecasts=(),
    )


def _validate(model: Any, x: Any) -> None:
    if not isinstance(model, keras.Model):
        raise StablefitInputError(
            f"preflight(model=...): expected a keras.Model, got {type(model).__name__}."
        )
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        raise StablefitInputError(
            "preflight: the model is not compiled; call model.compile(optimizer=..., "
            "loss='mse') first, so preflight can read the optimizer and learning rate."
        )
    shape = np.shape(x)
    if len(shape) != 2:
        raise StablefitInputError(
            f"preflight(x=...): expected a 2-D array of rows by features, got shape {shape}."
        )
    if not model.built:
        model.build((None, shape[1]))
    expected = model.inputs[0].shape[-1] if getattr(model, "inputs", None) else None
    if expected is not None and expected != shape[1]:
        raise StablefitInputError(
            f"preflight(x=...): x has {shape[1]} feature columns but the model takes "
            f"{expected}; pass the columns the model was built for."
        )


def _float_type(model: keras.Model) -> str:
    dtype = str(getattr(model, "dtype", "float32") or "float32")
    return dtype if dtype in ("float32", "float64") else "float32"


def _linear_structure(model: keras.Model) -> tuple[Any, Any] | None:
    """``(normalization or None, dense)`` for a linear Dense(1) model, else None."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    normalization = None
    if layers and isinstance(layers[0], keras.layers.Normalization):
        normalization, layers = layers[0], layers[1:]
        if normalization.invert:
            return None
    if len(layers) != 1 or not isinstance(layers[0], keras.layers.Dense):
        return None
    dense = layers[0]
    if dense.units != 1 or dense.activation not in (None, keras.activations.linear):
        return None
    return normalization, dense


def _is_mse(loss: Any) -> bool:
    if isinstance(loss, str):
        return loss in _MSE_NAMES
    if isinstance(loss, keras.losses.MeanSquaredError):
        return True
    return getattr(loss, "__name__", None) in _MSE_NAMES


def _normalize(layer: Any, x: np.ndarray) -> np.ndarray:
    """The Normalization layer's output, computed the way Keras does, in float64."""
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), dtype=np.float64).reshape(1, -1)
    variance = np.asarray(keras.ops.convert_to_numpy(layer.variance), dtype=np.float64)
    scale = np.maximum(np.sqrt(variance.reshape(1, -1)), keras.backend.epsilon())
    return (x - mean) / scale


def _current_loss(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    complete = np.isfinite(x).all(axis=1) & np.isfinite(y.reshape(len(x), -1)).all(axis=1)
    prediction = model.predict(x[complete], verbose=0, batch_size=max(1, int(complete.sum())))
    residual = prediction.reshape(-1) - y[complete].reshape(-1)
    return float(np.mean(residual**2))


def _weight_findings(model: keras.Model) -> list[Finding]:
    bad = []
    for variable in model.weights:
        value = np.asarray(variable.numpy())
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad.append({"variable": variable.path, "n_nonfinite": int((~np.isfinite(value)).sum())})
    return nonfinite_weight_finding(bad, "stablefit.keras.NanGuard")


def _curvature_findings(
    model: keras.Model, x: np.ndarray, y: np.ndarray, settings: dict[str, Any]
) -> list[Finding]:
    rows = hessian_rows(x, y)
    if rows.size == 0:
        return []
    estimate = hessian_max_eigenvalue(model, x[rows], y[rows])
    hint = "a keras.layers.Normalization layer"
    return [curvature_finding(estimate, rows.size, settings, standardize_hint=hint)]


def hessian_max_eigenvalue(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Largest-magnitude eigenvalue of the compiled loss's Hessian at the current weights.

    Power iteration on Hessian-vector products (double back-propagation with
    ``tf.GradientTape``) from a fixed random start; returns the Rayleigh quotient of the
    last iterate. An estimate: it converges at the rate of the two largest eigenvalues'
    ratio.
    """
    loss_function = keras.losses.get(model.loss)
    variables = list(model.trainable_variables)
    inputs = tf.constant(x, dtype=model.dtype or "float32")
    target = tf.constant(y.reshape(len(x), -1), dtype=model.dtype or "float32")

    def hvp(vector: list[tf.Tensor]) -> list[tf.Tensor]:
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = tf.reduce_mean(loss_function(target, model(inputs, training=False)))
            gradients = inner.gradient(loss, variables)
            projection = tf.add_n(
                [tf.reduce_sum(g * v) for g, v in zip(gradients, vector, strict=True)]
            )
        return outer.gradient(projection, variables)

    rng = np.random.default_rng(0)
    vector = [tf.constant(rng.standard_normal(v.shape), dtype=v.dtype) for v in variables]
    eigenvalue = 0.0
    for _ in range(HESSIAN_ITERATIONS):
        norm = tf.sqrt(tf.add_n([tf.reduce_sum(v * v) for v in vector]))
        vector = [v / norm for v in vector]
        product = hvp(vector)
        eigenvalue = float(
            tf.add_n([tf.reduce_sum(p * v) for p, v in zip(product, vector, strict=True)])
        )
        vector = product
    return abs(eigenvalue)


def _with_findings(diagnosis: Diagnosis, extra: list[Finding]) -> Diagnosis:
    if not extra:
        return diagnosis
    return dataclasses.replace(diagnosis, findings=(*extra, *diagnosis.findings))
