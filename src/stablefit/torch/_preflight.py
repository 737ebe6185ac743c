"""``preflight``: stablefit's diagnosis of a PyTorch training set-up before the first step.

For a linear model -- one ``nn.Linear(d, 1)``, alone or in an ``nn.Sequential`` -- with
``nn.MSELoss()`` the training forecast is stablefit's exact one, started from the model's
own weights, with the optimizer's class and hyperparameters read from its
``param_groups``. For any other model the data checks run, and the largest eigenvalue of
the loss's Hessian at the model's current weights is estimated by power iteration on
Hessian-vector products (``torch.func``, reverse over reverse); it is labelled an estimate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from stablefit.diagnose import Diagnosis, Finding, diagnose
from stablefit.diagnose.checks.forecast import FORECAST_CODES
from stablefit.diagnose.model_findings import (
    HESSIAN_ITERATIONS,
    curvature_finding,
    hessian_rows,
    nonfinite_weight_finding,
)
from stablefit.errors import StablefitInputError
from stablefit.guard.curvature import power_iteration
from stablefit.torch._optimizer import read_optimizer

_FLOAT_TYPES = {torch.float32: "float32", torch.float64: "float64"}


def preflight(
    model: nn.Module,
    loss_fn: Any,
    X: Any,
    y: Any,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int = 32,
    epochs: int = 100,
    drop_last: bool = False,
) -> Diagnosis:
    """Diagnose training ``model`` on ``(X, y)`` before the first step.

    Parameters
    ----------
    model : torch.nn.Module
        The model, as it will start training (its current weights are the start).
    loss_fn : callable
        The loss, called as ``loss_fn(model(X), y)`` (e.g. ``nn.MSELoss()``).
    X, y : array-like or torch.Tensor
        The training inputs (rows by features) and targets, as the loop gives them to the
        model and the loss.
    optimizer : torch.optim.Optimizer
        The optimizer, built on ``model.parameters()``.
    batch_size, epochs : int
        The ``DataLoader``'s batch size and the number of epochs.
    drop_last : bool
        The ``DataLoader``'s ``drop_last``.

    Returns
    -------
    Diagnosis
        For a linear model trained with the MSE by SGD, Adam, AdamW, RMSprop or Adagrad:
        :func:`stablefit.diagnose`'s diagnosis with ``framework="torch"``, the optimizer's
        settings and the model's own weights as the start. For other models: the data
        checks and a finding SF302 with the estimated largest Hessian eigenvalue
        (``training`` is None: the exact forecast covers linear models only).

    Raises
    ------
    StablefitInputError
        When ``model`` is not a module, ``optimizer`` not an optimizer, or ``X`` does not
        fit the model.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from stablefit.torch import preflight
    >>> X = np.array([[1, 1e6], [2, 2e6], [3, 3e6]]); y = np.array([[10.0], [20.0], [30.0]])
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Linear(2, 1)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    >>> forecast = preflight(model, torch.nn.MSELoss(), X, y, optimizer).training
    >>> forecast.outcome, forecast.first_nonfinite_epoch, forecast.first_nan_epoch
    ('diverges', 3, 6)
    """
    _validate(model, optimizer)
    inputs, target = _as_tensors(X, y, model)
    x = inputs.detach().cpu().double().numpy()
    y_array = target.detach().cpu().double().numpy()
    shape_findings = _target_shape_findings(model, loss_fn, inputs, target)
    weight_findings = _weight_findings(model)
    read = read_optimizer(optimizer, list(model.parameters()))
    linear = _linear_layer(model)
    dtype = _float_type(model)
    y_columns = y_array.reshape(len(x), -1)
    if linear is not None and _is_mse(loss_fn) and y_columns.shape[1] != 1:
        raise StablefitInputError(
            f"preflight(y=...): y has {y_columns.shape[1]} values per row, but the model's "
            "nn.Linear predicts one; pass the target column."
        )
    exact = linear is not None and _is_mse(loss_fn) and not read.unsimulated
    if exact and dtype is not None:
        start = linear.weight.detach().cpu().double().numpy().ravel()
        if linear.bias is not None:
            start = np.append(start, linear.bias.detach().cpu().double().numpy())
        diagnosis = diagnose(
            x,
            y_columns[:, 0],
            batch_size=batch_size,
            epochs=epochs,
            dtype=dtype,
            intercept=linear.bias is not None,
            framework="torch",
            drop_last=drop_last,
            initial_weights=start,
            **read.settings,
        )
        if diagnosis.training is not None:
            notes = ["preflight: simulated from the model's current weights", *read.notes]
            if optimizer.state:
                notes.append(
                    "preflight: the optimizer has state from earlier steps; the forecast "
                    "starts it afresh"
                )
            training = dataclasses.replace(
                diagnosis.training, notes=(*diagnosis.training.notes, *notes)
            )
            diagnosis = dataclasses.replace(diagnosis, training=training)
        return _with_findings(diagnosis, [*weight_findings, *shape_findings])
    settings = read.settings | {"optimizer": read.settings["optimizer"] or "sgd"}
    diagnosis = diagnose(
        x,
        y_columns[:, 0],
        batch_size=batch_size,
        epochs=epochs,
        dtype=dtype or "float32",
        framework="torch",
        **settings,
    )
    data_findings = [f for f in diagnosis.findings if f.code not in FORECAST_CODES]
    if not weight_findings:
        why = _why_no_forecast(linear, loss_fn, dtype, read.unsimulated)
        data_findings += [
            dataclasses.replace(
                finding,
                message=f"{finding.message} No exact forecast: {why}.",
                evidence=finding.evidence | {"no_exact_forecast": why},
            )
            for finding in _curvature_findings(model, loss_fn, inputs, target, x, settings)
        ]
    return Diagnosis(
        findings=(*weight_findings, *shape_findings, *data_findings),
        training=None,
        facts=diagnosis.facts,
        settings=diagnosis.settings,
        other_forecasts=(),
    )


def _why_no_forecast(
    linear: nn.Linear | None, loss_fn: Any, dtype: str | None, unsimulated: list[str]
) -> str:
    if linear is None:
        return "the model is not a single nn.Linear(d, 1)"
    if not _is_mse(loss_fn):
        return f"the loss is {type(loss_fn).__name__}, not nn.MSELoss() with mean reduction"
    if dtype is None:
        return "the model's float type is neither float32 nor float64"
    return "; ".join(unsimulated)


def _validate(model: Any, optimizer: Any) -> None:
    if not isinstance(model, nn.Module):
        raise StablefitInputError(
            f"preflight(model=...): expected a torch.nn.Module, got {type(model).__name__}."
        )
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise StablefitInputError(
            f"preflight(optimizer=...): expected a torch.optim.Optimizer, got "
            f"{type(optimizer).__name__}; build it as torch.optim.SGD(model.parameters(), ...)."
        )


def _as_tensors(X: Any, y: Any, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``X`` and ``y`` as tensors on the model's device, in its float type."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    inputs = torch.as_tensor(np.asarray(X) if not torch.is_tensor(X) else X)
    if inputs.ndim != 2:
        raise StablefitInputError(
            f"preflight(X=...): expected a 2-D array of rows by features, got shape "
            f"{tuple(inputs.shape)}."
        )
    linear = _linear_layer(model)
    if linear is not None and inputs.shape[1] != linear.in_features:
        raise StablefitInputError(
            f"preflight(X=...): X has {inputs.shape[1]} feature columns but the model's "
            f"nn.Linear takes {linear.in_features}; pass the columns it was built for."
        )
    target = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y)
    if len(target) != len(inputs):
        raise StablefitInputError(
            f"preflight(y=...): y has {len(target)} rows but X has {len(inputs)}."
        )
    inputs = inputs.to(device=device, dtype=dtype)
    if target.is_floating_point() or not target.dtype.is_signed:
        target = target.to(device=device, dtype=dtype)
    return inputs, target.to(device)


def _float_type(model: nn.Module) -> str | None:
    parameter = next(model.parameters(), None)
    return "float32" if parameter is None else _FLOAT_TYPES.get(parameter.dtype)


def _linear_layer(model: nn.Module) -> nn.Linear | None:
    """The model's one ``nn.Linear(d, 1)`` when the model is nothing more, else None."""
    layers = [model]
    if isinstance(model, nn.Sequential):
        layers = [layer for layer in model if not isinstance(layer, nn.Identity)]
    if len(layers) != 1 or type(layers[0]) is not nn.Linear:
        return None
    return layers[0] if layers[0].out_features == 1 else None


def _is_mse(loss_fn: Any) -> bool:
    if isinstance(loss_fn, nn.MSELoss):
        return loss_fn.reduction == "mean"
    return loss_fn is nn.functional.mse_loss


def _target_shape_findings(
    model: nn.Module, loss_fn: Any, inputs: torch.Tensor, target: torch.Tensor
) -> list[Finding]:
    """SF303 when ``loss_fn(model(X), y)`` would broadcast the target against the output."""
    if not _is_mse(loss_fn) or len(inputs) < 2:
        return []
    with torch.no_grad():
        output_shape = tuple(model(inputs[:2]).shape)
    target_shape = tuple(target[:2].shape)
    if output_shape == target_shape:
        return []
    broadcast = torch.broadcast_shapes(output_shape, target_shape)
    if broadcast == output_shape:
        return []
    n = len(inputs)
    full_output = (n, *output_shape[1:])
    full_target = (n, *target_shape[1:])
    full = (*broadcast[:-2], n, n) if len(broadcast) >= 2 else broadcast
    return [
        Finding(
            code="SF303",
            severity="error",
            title="Target and output shapes broadcast in the loss",
            message=f"The model's output has shape {full_output} and the target "
            f"{full_target}: the MSE broadcasts them to {full}, so every prediction is "
            "compared with every target and training converges to their mean, not to the "
            "fit (torch only warns).",
            evidence={"output_shape": list(full_output), "target_shape": list(full_target)},
            fix="Give the loss a target of the output's shape, e.g. y.reshape(-1, 1) (or "
            "model(X).squeeze(-1)). The forecast above assumes that fix.",
            fix_code="target = torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1)",
        )
    ]


def _weight_findings(model: nn.Module) -> list[Finding]:
    bad = []
    for name, parameter in model.named_parameters():
        value = parameter.detach()
        if value.is_floating_point() and not torch.isfinite(value).all():
            count = int((~torch.isfinite(value)).sum())
            bad.append({"variable": name, "n_nonfinite": count})
    return nonfinite_weight_finding(bad, "stablefit.torch.guard")


def _curvature_findings(
    model: nn.Module,
    loss_fn: Any,
    inputs: torch.Tensor,
    target: torch.Tensor,
    x: np.ndarray,
    settings: dict[str, Any],
) -> list[Finding]:
    y_rows = target.detach().cpu().double().numpy().reshape(len(x), -1)
    rows = hessian_rows(x, y_rows)
    if rows.size == 0:
        return []
    index = torch.as_tensor(rows, device=inputs.device)
    estimate = hessian_max_eigenvalue(model, loss_fn, inputs[index], target[index])
    hint = "e.g. (X - X.mean(0)) / X.std(0), computed on the training rows"
    return [curvature_finding(estimate, rows.size, settings, standardize_hint=hint)]


def hessian_max_eigenvalue(
    model: nn.Module,
    loss_fn: Any,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    preconditioner: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> float:
    """Largest-magnitude eigenvalue of the loss's Hessian at the model's current weights.

    Power iteration (:func:`stablefit.guard.curvature.power_iteration`, a fixed random
    start, :data:`HESSIAN_ITERATIONS` products) on Hessian-vector products by
    ``torch.func``: the ``vjp`` of the loss's ``grad``, with the model in eval mode (no
    dropout, batch-norm statistics as they are). An estimate: it converges at the rate of
    the two largest eigenvalues' ratio.

    ``preconditioner`` maps the gradient (by parameter name) to an adaptive optimizer's
    ``sqrt(v̂) + eps``, ``P``: the eigenvalue is then that of ``P^-1/2 H P^-1/2``, which
    bounds Adam's and RMSprop's learning rates.
    """
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    shapes = [params[name].shape for name in names]
    sizes = [params[name].numel() for name in names]

    def loss_of(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_fn(torch.func.functional_call(model, weights, (inputs,)), target)

    def hvp_at(gradient_vjp: Any, root: Any) -> Callable[[np.ndarray], np.ndarray]:
        def hvp(vector: np.ndarray) -> np.ndarray:
            pieces = torch.split(torch.as_tensor(vector / root), sizes)
            tangent = {
                name: piece.reshape(shape).to(params[name])
                for name, piece, shape in zip(names, pieces, shapes, strict=True)
            }
            (product,) = gradient_vjp(tangent)
            flat = torch.cat([product[name].reshape(-1).double().cpu() for name in names])
            return flat.numpy() / root

        return hvp

    training = model.training
    model.eval()  # before the forward the products differentiate
    try:
        # The Hessian is symmetric: the vector-Jacobian product of the gradient is the
        # Hessian-vector product, and one backward graph serves every iteration.
        gradient, gradient_vjp = torch.func.vjp(torch.func.grad(loss_of), params)
        root: Any = 1.0
        if preconditioner is not None:
            scales = preconditioner(gradient)
            flat = torch.cat([scales[name].reshape(-1).double().cpu() for name in names])
            root = flat.sqrt().numpy()
        return power_iteration(
            hvp_at(gradient_vjp, root),
            sum(sizes),
            iterations=HESSIAN_ITERATIONS,
            tolerance=0.0,
            seed=0,
        )
    finally:
        model.train(training)


def _with_findings(diagnosis: Diagnosis, extra: list[Finding]) -> Diagnosis:
    if not extra:
        return diagnosis
    return dataclasses.replace(diagnosis, findings=(*extra, *diagnosis.findings))
