"""Diagnosis: every numeric hazard in the data, and what training on it will do.

``stablefit.diagnose`` reads the data once (a :class:`~stablefit.summary.Summary`), runs
the data checks (:mod:`stablefit.diagnose.checks`) and forecasts the training of a linear
model with the mean squared error — a Keras ``Dense(1)`` or a PyTorch ``nn.Linear`` —
(:mod:`stablefit.diagnose.training`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from stablefit.errors import StablefitInputError

if TYPE_CHECKING:
    from stablefit.diagnose.checks import CheckOptions
    from stablefit.diagnose.findings import DataFacts, Diagnosis, Finding
    from stablefit.summary import Summary

# NumPy, the checks, the forecast and the Summary (with io and pyarrow) are imported by the
# functions that run them: `import stablefit` imports this package, `stablefit fit` needs
# none of it but NumPy, and the command sets its BLAS threads before NumPy loads.

#: What is forecast when no optimizer is named: Adam at the framework's default learning
#: rate (the seed's and most tutorials' choice) is the forecast that counts, and plain SGD
#: at its default is shown beside it, since its stability bound is the sharpest sign of
#: trouble.
DEFAULT_OPTIMIZER = "adam"
COMPARISON_OPTIMIZER = "sgd"


def diagnose(
    X: Any,
    y: Any = None,
    *,
    target: str | None = None,
    optimizer: str | None = None,
    learning_rate: float | None = None,
    batch_size: int = 32,
    epochs: int = 100,
    momentum: float = 0.0,
    nesterov: bool = False,
    dtype: str = "float32",
    intercept: bool = True,
    feature_names: list[str] | tuple[str, ...] | None = None,
    engine: Any = None,
    framework: str = "keras",
    dampening: float = 0.0,
    weight_decay: float | None = None,
    optimizer_options: dict[str, Any] | None = None,
    drop_last: bool = False,
    initial_weights: Any = None,
    drop_non_numeric: bool = False,
) -> Diagnosis:
    """Find the numeric hazards in ``X`` (and ``y``) and forecast training on them.

    NaN and inf in the data never raise: they are findings (SF101, SF102), and training on
    the rows that hold them is forecast to give a non-finite loss at epoch 1.

    Parameters
    ----------
    X : array-like, DataFrame, pyarrow Table, Dask DataFrame or Array, path, or Summary
        The features (and the target, when ``target`` names one of its columns). A path
        names a CSV, Parquet or Feather (Arrow IPC) file, or a directory or glob of them
        read as one table. A
        :class:`~stablefit.summary.Summary` is used as is, and so is a
        :class:`~stablefit.io.Source` (``target`` is then the source's).
    y : array-like, optional
        The target, when it is not a column of ``X``.
    target : str, optional
        The name of the target column in ``X``.
    optimizer : {"sgd", "adam", "adamw", "rmsprop", "adagrad"}, optional
        The optimizer to forecast (``keras.optimizers.<Name>``, ``torch.optim.<Name>``).
        When None, Adam is forecast and plain SGD is shown beside it
        (``Diagnosis.other_forecasts``), both at the framework's default learning rates;
        ``learning_rate`` then applies to Adam, ``momentum`` to SGD.
    learning_rate : float, optional
        The framework's default for the optimizer when None.
    batch_size, epochs : int
        As given to ``model.fit`` or a ``DataLoader`` (Keras's default batch size is 32;
        here 100 epochs).
    momentum : float
        SGD's (or RMSprop's) momentum.
    nesterov : bool
        Nesterov's variant of SGD's momentum.
    dtype : {"float32", "float64"}
        The precision the model trains in (both frameworks' default: float32).
    intercept : bool
        Whether the model has a bias (``Dense`` and ``nn.Linear`` have one by default).
    feature_names : sequence of str, optional
        Names for the columns of an array ``X``.
    drop_non_numeric : bool
        Leave out text and date columns of a table (listed in ``facts.left_out``) instead
        of raising.
    engine : distributed.Client or Engine, optional
        Read files on this cluster's workers (see :mod:`stablefit.engines`); Dask
        collections run on their default client without it.
    framework : {"keras", "torch"}
        Forecast a Keras ``Dense(1)`` trained by ``model.fit``, or a PyTorch
        ``nn.Linear(d, 1)`` trained with ``nn.MSELoss`` and ``torch.optim`` in a
        ``DataLoader`` loop: that framework's update rules, defaults, initialization and
        epoch loss, and code for it in the recommendation.
    dampening : float
        ``torch.optim.SGD``'s dampening of the momentum (torch only).
    weight_decay : float, optional
        The optimizer's weight decay (torch: any optimizer, decoupled for AdamW; Keras:
        AdamW's); the framework's default when None.
    optimizer_options : dict, optional
        The optimizer's other hyperparameters by the framework's names, e.g.
        ``{"betas": (0.9, 0.99), "eps": 1e-6}``.
    drop_last : bool
        torch only: the ``DataLoader`` leaves out each epoch's last, partial batch.
    initial_weights : array-like, optional
        The model's weights to forecast from (the features' then the bias), instead of
        draws of the framework's initialization; ``preflight`` passes the model's own.

    Returns
    -------
    Diagnosis
        Findings most severe first, the training forecast, and what was read.

    Examples
    --------
    >>> import numpy as np, stablefit
    >>> X = np.array([[1, 1e6], [2, 2e6], [3, 3e6]])
    >>> d = stablefit.diagnose(X, np.array([10.0, 20.0, 30.0]), optimizer="sgd")
    >>> d.training.outcome, d.training.first_nonfinite_epoch
    ('diverges', 3)
    >>> t = stablefit.diagnose(X, np.array([10.0, 20.0, 30.0]), optimizer="sgd",
    ...                        learning_rate=0.01, framework="torch")
    >>> t.training.first_nonfinite_epoch, t.training.first_nan_epoch
    (3, 6)
    """
    from stablefit.diagnose.checks import run_checks
    from stablefit.diagnose.checks.forecast import forecast_findings
    from stablefit.diagnose.findings import DataFacts, Diagnosis
    from stablefit.diagnose.frameworks import check_framework
    from stablefit.diagnose.profile import column_profiles
    from stablefit.parallel import blas_threads_for
    from stablefit.summary import Summary

    framework = check_framework(framework)
    options = _validate(batch_size, epochs, dtype, intercept, framework)
    extra = dict(optimizer_options or {})
    if dampening:
        extra["dampening"] = dampening
    if weight_decay is not None:
        extra["weight_decay"] = weight_decay
    summary = (
        X
        if isinstance(X, Summary)
        else _summarize(X, y, target, feature_names, engine, drop_non_numeric)
    )
    with blas_threads_for(summary.p):
        findings = run_checks(summary, options)
        settings = {
            "optimizer": optimizer,
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "epochs": epochs,
            "momentum": momentum,
            "nesterov": nesterov,
            "dtype": dtype,
            "intercept": intercept,
            "framework": framework,
            "optimizer_options": extra,
            "drop_last": drop_last,
            "initial_weights": initial_weights,
        }
        cause = _first_epoch_cause(summary, findings, dtype, framework)
        training, others = _forecasts(summary, settings)
        if training is not None:
            findings += forecast_findings(training, settings, cause=cause)
        columns = column_profiles(summary, intercept=options.intercept)
    facts = DataFacts(
        origin=summary.schema.origin,
        feature_names=summary.schema.feature_names,
        target_name=summary.names[-1] if summary.has_target else None,
        n_rows=summary.n_rows,
        n_complete=summary.n_complete,
        row_label=summary.schema.row_label,
        left_out=tuple((column.name, column.reason) for column in summary.schema.dropped),
    )
    return Diagnosis(
        findings=tuple(findings),
        training=training,
        facts=facts,
        settings=settings,
        other_forecasts=tuple(others),
        columns=columns,
    )


def _validate(
    batch_size: int, epochs: int, dtype: str, intercept: bool, framework: str
) -> CheckOptions:
    from stablefit.diagnose.checks.common import DTYPES, CheckOptions

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise StablefitInputError(f"batch_size={batch_size!r} must be an integer >= 1 (e.g. 32)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise StablefitInputError(f"epochs={epochs!r} must be an integer >= 1 (e.g. 100)")
    if dtype not in DTYPES:
        raise StablefitInputError(f"dtype={dtype!r} must be one of {', '.join(DTYPES)}")
    return CheckOptions(
        dtype=dtype, batch_size=batch_size, intercept=bool(intercept), framework=framework
    )


def _summarize(
    X: Any, y: Any, target: str | None, feature_names: Any, engine: Any, drop_non_numeric: bool
) -> Summary:
    import numpy as np

    from stablefit.io import Source, open_source
    from stablefit.summary import summarize

    source = (
        X
        if isinstance(X, Source)
        else open_source(
            X,
            y,
            target=target,
            feature_names=feature_names,
            drop_non_numeric=drop_non_numeric,
            engine=engine,
        )
    )
    # Values near the float64 limit (1e308) overflow the co-moments: that is a finding
    # (SF131), not a reason to stop.
    with np.errstate(over="ignore", invalid="ignore"):
        return summarize(source)


def _forecast(summary: Summary, settings: dict[str, Any], **overrides: Any) -> Any:
    import numpy as np

    from stablefit.diagnose.training import forecast_training

    chosen = settings | overrides
    # Squares of values beyond ~1.3e154 overflow float64 in the sufficient statistics; the
    # forecast then reports a non-finite loss at epoch 1 (SF131), which is the answer.
    overflow_expected = _squares_overflow(summary)
    quiet = np.errstate(over="ignore", invalid="ignore") if overflow_expected else None
    with quiet or contextlib.nullcontext():
        return forecast_training(
            summary,
            optimizer=chosen["optimizer"],
            learning_rate=chosen["learning_rate"],
            batch_size=chosen["batch_size"],
            epochs=chosen["epochs"],
            momentum=chosen["momentum"],
            nesterov=chosen["nesterov"],
            dtype=chosen["dtype"],
            intercept=chosen["intercept"],
            framework=chosen["framework"],
            optimizer_options=chosen["optimizer_options"],
            drop_last=chosen["drop_last"],
            initial_weights=chosen["initial_weights"],
        )


def _squares_overflow(summary: Summary) -> bool:
    import numpy as np

    max_abs = summary.columns.max_abs
    return bool(np.any(np.isfinite(max_abs) & (max_abs > np.sqrt(np.finfo(np.float64).max))))


def _forecasts(summary: Summary, settings: dict[str, Any]) -> tuple[Any, list[Any]]:
    """The forecast on the data as given, and the ones shown beside it.

    Rows holding NaN or inf (or values beyond the dtype's range) make the forecast
    "diverges" at epoch 1: the framework trains on every row it is given.
    """
    if not summary.has_target or summary.n_complete == 0:
        return None, []
    others: list[Any] = []
    if settings["optimizer"] is None:
        training = _forecast(
            summary,
            settings,
            optimizer=DEFAULT_OPTIMIZER,
            momentum=0.0,
            nesterov=False,
            optimizer_options=_options_for(DEFAULT_OPTIMIZER, settings),
        )
        others.append(
            _forecast(
                summary,
                settings,
                optimizer=COMPARISON_OPTIMIZER,
                learning_rate=None,
                optimizer_options=_options_for(COMPARISON_OPTIMIZER, settings),
            )
        )
    else:
        training = _forecast(summary, settings)
    return training, others


def _options_for(optimizer: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The options given that apply to ``optimizer`` when both defaults are forecast:
    weight decay to both, dampening to SGD only."""
    given = settings["optimizer_options"]
    return {k: v for k, v in given.items() if k != "dampening" or optimizer == "sgd"}


def _first_epoch_cause(
    summary: Summary, findings: list[Finding], dtype: str, framework: str
) -> str | None:
    """Why the first epoch's loss is non-finite whatever the optimizer, or None."""
    from stablefit.diagnose.frameworks import LABELS

    codes = {f.code for f in findings}
    if "SF101" in codes or "SF102" in codes:
        bad = summary.n_rows - summary.n_complete
        return (
            f"{bad} of {summary.n_rows} rows hold NaN or inf: the first batch that contains one "
            "has a non-finite loss, and its update makes every weight NaN"
        )
    if "SF131" in codes:
        return (
            f"values beyond the {dtype} range become inf when {LABELS[framework]} casts the "
            "data: the loss is non-finite from the first batch on"
        )
    return None


def __getattr__(name: str) -> object:
    if name not in ("DataFacts", "Diagnosis", "Finding"):
        raise AttributeError(f"module 'stablefit.diagnose' has no attribute {name!r}")
    from stablefit.diagnose import findings

    return getattr(findings, name)


__all__ = ["DataFacts", "Diagnosis", "Finding", "diagnose"]
