"""The two frameworks whose training the forecast simulates: Keras and PyTorch.

One engine (:mod:`~stablefit.diagnose.simulation`, :mod:`~stablefit.diagnose.kernels`)
trains a linear model on the data's sufficient statistics. What differs between frameworks
is kept here: each optimizer's hyperparameters and their defaults, how the model's weights
start, how an epoch's loss is reported, and the code that trains a configuration. The
update rules are branches of :func:`~stablefit.diagnose.kernels.update_step`, one per
framework's rule.

- **Keras** (``tf.keras``, Keras 3): ``Dense(1)`` with ``glorot_uniform`` weights and a zero
  bias, ``model.compile(optimizer=..., loss="mse")``, ``model.fit(X, y, batch_size=...)``;
  the epoch loss is History's: the running mean of the batch losses, summed in float32.
- **PyTorch**: ``nn.Linear(d, 1)``, whose weight and bias start uniform in ``±1/√d`` (drawn
  here exactly as torch's CPU generator draws them after ``torch.manual_seed(seed)``),
  ``nn.MSELoss()``, ``torch.optim.<Name>(model.parameters(), ...)``, a ``DataLoader`` with
  ``batch_size``, ``shuffle`` and ``drop_last``; the epoch loss is the mean of the batch
  losses weighted by their rows, as a loop accumulates it with ``loss.item() * len(xb)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

KERAS, TORCH = "keras", "torch"
FRAMEWORKS: tuple[str, ...] = (KERAS, TORCH)
LABELS = {KERAS: "Keras", TORCH: "PyTorch"}
CLASS_NAMES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
}

#: Each framework's default learning rate per optimizer (``keras.optimizers.<Name>()``,
#: ``torch.optim.<Name>(params)``).
DEFAULT_LEARNING_RATES: dict[str, dict[str, float]] = {
    KERAS: {"sgd": 0.01, "adam": 0.001, "adamw": 0.001, "rmsprop": 0.001, "adagrad": 0.001},
    TORCH: {"sgd": 0.001, "adam": 0.001, "adamw": 0.001, "rmsprop": 0.01, "adagrad": 0.01},
}

_TORCH_ADAM = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
#: The other hyperparameters of each optimizer, by the framework's own argument names,
#: with their defaults (learning rate, momentum and Nesterov are fields of their own).
OPTION_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    KERAS: {
        "sgd": {},
        "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
        "adamw": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "weight_decay": 0.004},
        "rmsprop": {"rho": 0.9, "epsilon": 1e-7},
        "adagrad": {"initial_accumulator_value": 0.1, "epsilon": 1e-7},
    },
    TORCH: {
        "sgd": {"dampening": 0.0, "weight_decay": 0.0},
        "adam": _TORCH_ADAM,
        "adamw": _TORCH_ADAM | {"weight_decay": 0.01},
        "rmsprop": {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0},
        "adagrad": {
            "lr_decay": 0.0,
            "weight_decay": 0.0,
            "initial_accumulator_value": 0.0,
            "eps": 1e-10,
        },
    },
}


def check_framework(framework: str) -> str:
    """The framework's name in lower case, or an error naming the choices."""
    from stablefit.errors import StablefitInputError

    name = str(framework).strip().lower()
    if name in ("pytorch", "torch"):
        return TORCH
    if name in ("keras", "tf.keras", "tensorflow"):
        return KERAS
    raise StablefitInputError(
        f"framework={framework!r} is not one stablefit simulates; use 'keras' or 'torch'"
    )


# -- how the weights start -------------------------------------------------------------------


def initial_weights(
    framework: str, p: int, intercept: bool, seeds: Sequence[int], dtype: type
) -> np.ndarray:
    """One row of initial weights (the kernel, then the bias) per seed."""
    if framework == TORCH:
        return _torch_linear_init(p, intercept, seeds, dtype)
    return _glorot_uniform(p, intercept, seeds, dtype)


def _glorot_uniform(p: int, intercept: bool, seeds: Sequence[int], dtype: type) -> np.ndarray:
    """Keras's Dense init: kernel ~ U(±sqrt(6 / (fan_in + 1))), bias = 0."""
    d = p - int(intercept)
    limit = math.sqrt(6.0 / (d + 1))
    theta = np.zeros((len(seeds), p), dtype=dtype)
    for row, seed in enumerate(seeds):
        theta[row, :d] = np.random.default_rng(seed).uniform(-limit, limit, size=d)
    return theta


def _torch_linear_init(p: int, intercept: bool, seeds: Sequence[int], dtype: type) -> np.ndarray:
    """``nn.Linear(d, 1)`` after ``torch.manual_seed(seed)``, value for value.

    ``reset_parameters`` draws the weight with ``kaiming_uniform_(a=√5)`` (bound
    ``√3·gain/√d``, which is ``1/√d``) and then the bias uniform in ``±1/√d``. Torch's CPU
    generator is a Mersenne twister seeded like NumPy's legacy ``RandomState(seed)``; a
    float32 ``uniform_(lo, hi)`` takes the low 24 bits of one 32-bit draw, ``u·2⁻²⁴``, and
    returns ``u·(hi - lo) + lo`` computed in double. A float64 model is taken to be a
    float32 ``nn.Linear`` converted with ``.double()``.
    """
    d = p - int(intercept)
    gain = math.sqrt(2.0 / (1 + math.sqrt(5.0) ** 2))
    bounds = [math.sqrt(3.0) * (gain / math.sqrt(d))] * d
    if intercept:
        bounds.append(1 / math.sqrt(d))
    high = np.array(bounds, dtype=np.float32)
    width = (high - -high).astype(np.float64)  # (to - from) in float32, as torch computes it
    theta = np.empty((len(seeds), p), dtype=dtype)
    for row, seed in enumerate(seeds):
        raw = np.random.RandomState(seed & 0xFFFFFFFF)._bit_generator.random_raw(p)
        unit = (raw & 0xFFFFFF).astype(np.float64) * 2.0**-24
        theta[row] = (unit * width - high.astype(np.float64)).astype(np.float32)
    return theta


# -- how an epoch's loss is reported ---------------------------------------------------------


def epoch_losses(
    framework: str, step_losses: np.ndarray, batch_rows: np.ndarray, n: int, fmax: float
) -> np.ndarray:
    """The loss each epoch reports, from the loss at each step's start.

    Parameters
    ----------
    step_losses : ndarray, (runs, epochs, steps)
        The loss (a mean over rows, float64) at the start of every step.
    batch_rows : ndarray, (steps,)
        Rows in each step's batch.
    n : int
        Rows in the data set.
    fmax : float
        The largest finite value of the model's float type.

    Call under ``np.errstate(over="ignore", invalid="ignore")``.
    """
    weighted = step_losses * batch_rows
    rows_seen = float(batch_rows.sum())
    if framework == TORCH:
        # A batch's MSE is its float32 sum of squares over its rows: inf past fmax. The
        # loop then averages loss.item() values in Python floats.
        batch_sum = np.where(weighted > fmax, np.inf, weighted)
        return batch_sum.sum(axis=2) / rows_seen
    # Keras's Mean tracker sums loss * batch rows in float, batch after batch (as cumsum
    # adds): the sum overflows past fmax.
    total = np.cumsum(weighted, axis=2)[:, :, -1]
    return np.where(total * (n / rows_seen) > fmax, np.inf, total / rows_seen)


# -- code that trains a configuration --------------------------------------------------------


def _literal(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v) for v in value) + ")"
    # Keras rejects an int learning rate or momentum: always write a float literal.
    return repr(float(value))


def optimizer_expression(config: Any) -> str:
    """The Python expression that builds ``config``'s optimizer in its framework."""
    class_name = CLASS_NAMES[config.name]
    defaults = OPTION_DEFAULTS[config.framework][config.name]
    changed = [(k, v) for k, v in config.options if defaults.get(k) != v]
    if config.framework == TORCH:
        args = ["model.parameters()", f"lr={_literal(config.learning_rate)}"]
    else:
        args = [f"learning_rate={_literal(config.learning_rate)}"]
    if config.momentum:
        args.append(f"momentum={_literal(config.momentum)}")
    args += [f"{key}={_literal(value)}" for key, value in changed]
    if config.nesterov:
        args.append("nesterov=True")
    module = "torch.optim" if config.framework == TORCH else "tf.keras.optimizers"
    return f"{module}.{class_name}({', '.join(args)})"


def training_code(
    config: Any,
    *,
    standardize: bool,
    large_offset: bool,
    epochs: int,
    batch_size: int,
    drop_last: bool = False,
    drop_rows: bool = False,
) -> str:
    """A snippet that trains ``config`` on ``X``, ``y`` in its framework (``drop_rows``:
    on the rows without a NaN or inf)."""
    if config.framework == TORCH:
        code = _torch_code(config, standardize, large_offset, epochs, batch_size, drop_last)
    else:
        code = _keras_code(config, standardize, large_offset, epochs, batch_size)
    if not drop_rows:
        return code
    imports, _, rest = code.partition("\n\n")
    return "\n\n".join([imports, DROP_ROWS_CODE, rest])


# The rows holding a NaN or inf left out (values beyond float32's range are the scaling's
# to bring back, in float64: dropping them could leave no row).
DROP_ROWS_CODE = """\
# Leave out the rows with a NaN or inf.
X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
finite = np.isfinite(X).all(axis=1) & np.isfinite(y).reshape(len(X), -1).all(axis=1)
X, y = X[finite], y[finite]"""


def _keras_code(
    config: Any, standardize: bool, large_offset: bool, epochs: int, batch_size: int
) -> str:
    lines = ["import numpy as np", "import tensorflow as tf", ""]
    layers = []
    if standardize and large_offset:
        lines += [
            "from sklearn.preprocessing import StandardScaler",
            "",
            "# Standardize in float64 before Keras casts to float32: the features have",
            "# values or offsets float32 cannot hold.",
            "scaler = StandardScaler()",
            "X = scaler.fit_transform(np.asarray(X, dtype=np.float64))",
            "# Later: model.predict(scaler.transform(X_new))",
            "",
        ]
    elif standardize:
        lines += [
            "normalizer = tf.keras.layers.Normalization(axis=-1)",
            'normalizer.adapt(np.asarray(X, dtype="float32"))',
            "",
        ]
        layers.append("normalizer")
    layers.append("tf.keras.layers.Dense(1)")
    lines += [
        "model = tf.keras.Sequential([",
        "    tf.keras.Input(shape=(X.shape[1],)),",
        *(f"    {layer}," for layer in layers),
        "])",
        f'model.compile(optimizer={optimizer_expression(config)}, loss="mse")',
        f"model.fit(X, y, epochs={epochs}, batch_size={batch_size})",
    ]
    return "\n".join(lines)


def _torch_code(
    config: Any,
    standardize: bool,
    large_offset: bool,
    epochs: int,
    batch_size: int,
    drop_last: bool,
) -> str:
    lines = ["import numpy as np", "import torch", "from torch import nn", ""]
    if standardize:
        why = "  # float32 cannot hold the features' values or offsets" if large_offset else ""
        lines += [
            f"# Standardize in float64, before the cast to float32.{why}",
            "X = np.asarray(X, dtype=np.float64)",
            "mean, std = X.mean(axis=0), X.std(axis=0)",
            "std[std == 0] = 1.0",
            "X = (X - mean) / std  # later: model(torch.as_tensor((X_new - mean) / std, ...))",
            "",
        ]
    loader_options = f"batch_size={batch_size}, shuffle=True"
    if drop_last:
        loader_options += ", drop_last=True"
    lines += [
        "features = torch.as_tensor(np.asarray(X), dtype=torch.float32)",
        "# A column, like the model's output: a 1-D target would broadcast in MSELoss.",
        "target = torch.as_tensor(np.asarray(y), dtype=torch.float32).reshape(-1, 1)",
        "loader = torch.utils.data.DataLoader(",
        f"    torch.utils.data.TensorDataset(features, target), {loader_options}",
        ")",
        "model = nn.Linear(features.shape[1], 1)",
        "loss_fn = nn.MSELoss()",
        f"optimizer = {optimizer_expression(config)}",
        f"for epoch in range({epochs}):",
        "    for xb, yb in loader:",
        "        optimizer.zero_grad()",
        "        loss = loss_fn(model(xb), yb)",
        "        loss.backward()",
        "        optimizer.step()",
    ]
    return "\n".join(lines)
