"""A Keras linear regression model, and its coefficients in the data's original units.

``stablefit train`` builds its model here: ``Dense(1)``, optionally after a
``Normalization`` layer whose statistics are computed in float64, so that the scaling lives
inside the model and the coefficients can be read back in the units of the data.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from stablefit.errors import StablefitInputError

#: stablefit's optimizer names -> Keras optimizer classes.
KERAS_OPTIMIZERS = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
}


def linear_model(
    X: np.ndarray,
    *,
    optimizer: str,
    learning_rate: float | None = None,
    standardize: bool = False,
    momentum: float = 0.0,
    nesterov: bool = False,
) -> keras.Model:
    """A compiled ``Dense(1)`` regression model (MSE loss) for the columns of ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        The training features; with ``standardize``, their mean and variance (computed in
        float64) set the Normalization layer.
    optimizer : {"sgd", "adam", "adamw", "rmsprop", "adagrad"}
        The Keras optimizer, at ``learning_rate`` (Keras's default when None).
    standardize : bool, default False
        Put a ``Normalization`` layer in front of the Dense layer.
    momentum, nesterov : float, bool
        SGD's momentum.

    Returns
    -------
    keras.Model
    """
    if optimizer not in KERAS_OPTIMIZERS:
        raise StablefitInputError(
            f"optimizer={optimizer!r} is not one of {', '.join(KERAS_OPTIMIZERS)}"
        )
    options: dict[str, Any] = {}
    if learning_rate is not None:
        options["learning_rate"] = float(learning_rate)
    if optimizer == "sgd":
        options.update(momentum=float(momentum), nesterov=bool(nesterov))
    layers: list[Any] = [keras.Input((X.shape[1],))]
    if standardize:
        layers.append(keras.layers.Normalization(mean=X.mean(axis=0), variance=X.var(axis=0)))
    layers.append(keras.layers.Dense(1))
    model = keras.Sequential(layers)
    model.compile(optimizer=KERAS_OPTIMIZERS[optimizer](**options), loss="mse")
    return model


def original_units(model: keras.Model) -> tuple[np.ndarray, float]:
    """The model's coefficients and intercept in the units of its input columns.

    The Normalization layer (if any) is folded in exactly as Keras applies it:
    ``(x - mean) / max(sqrt(variance), epsilon)``.
    """
    dense = model.layers[-1]
    kernel = np.asarray(dense.kernel.numpy(), dtype=np.float64)[:, 0]
    bias = float(dense.bias.numpy()[0]) if dense.use_bias else 0.0
    normalization = next(
        (layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)), None
    )
    if normalization is None:
        return kernel, bias
    mean = np.asarray(normalization.mean, dtype=np.float64).reshape(-1)
    variance = np.asarray(normalization.variance, dtype=np.float64).reshape(-1)
    scale = np.maximum(np.sqrt(variance), keras.backend.epsilon())
    coef = kernel / scale
    return coef, bias - float(coef @ mean)


def mse(X: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: float) -> float:
    """Mean squared error of ``X @ coef + intercept`` in float64 (inf/NaN when they are)."""
    with np.errstate(over="ignore", invalid="ignore"):
        residual = X @ coef + intercept - y
        return float(np.mean(residual * residual))
