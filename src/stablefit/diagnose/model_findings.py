"""Findings about a model before it trains (SF301, SF302), for every framework's preflight.

``stablefit.keras.preflight`` and ``stablefit.torch.preflight`` read a model's weights and
estimate the curvature of its loss in their framework; what the numbers mean, and the
findings that say so, are the same for both and are written here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stablefit.diagnose.findings import Finding, format_number

#: Rows used for the Hessian estimate of a non-linear model (a random subset beyond this).
HESSIAN_ROWS = 4096
#: Power iterations for the Hessian estimate.
HESSIAN_ITERATIONS = 30


def nonfinite_weight_finding(bad: list[dict[str, Any]], keeper: str) -> list[Finding]:
    """SF301 when some weight holds NaN or inf (``bad``: ``{variable, n_nonfinite}``).

    ``keeper`` names what keeps the last good weights during training in the user's
    framework (e.g. ``"stablefit.keras.NanGuard"``).
    """
    if not bad:
        return []
    names = ", ".join(item["variable"] for item in bad)
    return [
        Finding(
            code="SF301",
            severity="error",
            title="Model weights are not finite",
            message=f"The model's weights already hold NaN or inf ({names}): every loss "
            "computed from them is non-finite, whatever the data.",
            evidence={"variables": bad},
            fix="Re-create the model (or load the last good weights) before training; "
            f"{keeper} keeps them for you during training.",
        )
    ]


def hessian_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The complete rows the Hessian estimate uses: all, or HESSIAN_ROWS of them at random."""
    complete = np.isfinite(x).all(axis=1) & np.isfinite(y.reshape(len(x), -1)).all(axis=1)
    rows = np.flatnonzero(complete)
    if rows.size > HESSIAN_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(rows, HESSIAN_ROWS, replace=False))
    return rows


def curvature_finding(
    estimate: float, rows_used: int, settings: dict[str, Any], *, standardize_hint: str
) -> Finding:
    """SF302: the estimated largest Hessian eigenvalue and the SGD bound it implies.

    ``standardize_hint`` says how to standardize the inputs in the user's framework.
    """
    lr = settings["learning_rate"]
    momentum = settings["momentum"]
    bound = 2.0 * (1.0 + momentum) / estimate if estimate > 0 else None
    evidence = {
        "lambda_max_estimate": estimate,
        "rows_used": int(rows_used),
        "iterations": HESSIAN_ITERATIONS,
        "sgd_max_stable_learning_rate_estimate": bound,
        "learning_rate": lr,
        "optimizer": settings["optimizer"],
    }
    above = settings["optimizer"] == "sgd" and bound is not None and lr >= bound
    sgd_text = (
        f"plain gradient descent{' with momentum ' + format_number(momentum) if momentum else ''}"
        f" is stable at these weights only for lr < {format_number(bound)}"
        if bound is not None
        else "the curvature is not positive at these weights"
    )
    return Finding(
        code="SF302",
        severity="warning" if above else "info",
        title="Largest Hessian eigenvalue (estimate)",
        message=(
            f"Estimated largest eigenvalue of the loss's Hessian at the model's current "
            f"weights: {format_number(estimate)} (power iteration, {HESSIAN_ITERATIONS} "
            f"Hessian-vector products on {rows_used} rows; an estimate, not a bound): "
            f"{sgd_text}"
            + (f"; the configured lr {format_number(lr)} is above it." if above else ".")
        ),
        evidence=evidence,
        fix=(
            f"Lower the learning rate below {format_number(bound)}, or standardize the "
            f"inputs ({standardize_hint}) to shrink the curvature."
            if above
            else "Nothing to fix; this is the curvature the learning rate must respect."
        ),
    )
