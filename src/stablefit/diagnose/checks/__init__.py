"""The data checks: each is a small function ``(summary, options) -> list[Finding]``."""

from __future__ import annotations

from collections.abc import Callable

from stablefit.diagnose.checks.collinearity import (
    check_collinearity,
    check_constant,
    check_exact_target,
    check_rows_vs_rank,
)
from stablefit.diagnose.checks.common import CheckOptions
from stablefit.diagnose.checks.missing import (
    check_empty_columns,
    check_no_complete_rows,
    check_nonfinite,
    check_target_present,
)
from stablefit.diagnose.checks.outliers import check_outliers
from stablefit.diagnose.checks.precision import (
    check_batch_overflow,
    check_integer_range,
    check_out_of_range,
    check_resolution,
    check_square_overflow,
    check_underflow,
)
from stablefit.diagnose.checks.scale import (
    check_offsets,
    check_scale_spread,
    check_target_scale,
)
from stablefit.diagnose.findings import Finding
from stablefit.summary import Summary

Check = Callable[[Summary, CheckOptions], list[Finding]]

DATA_CHECKS: tuple[Check, ...] = (
    check_nonfinite,
    check_empty_columns,
    check_no_complete_rows,
    check_rows_vs_rank,
    check_target_present,
    check_constant,
    check_collinearity,
    check_exact_target,
    check_scale_spread,
    check_offsets,
    check_target_scale,
    check_out_of_range,
    check_square_overflow,
    check_batch_overflow,
    check_resolution,
    check_integer_range,
    check_underflow,
    check_outliers,
)


def run_checks(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """Every data check on ``summary``, in the order of their codes."""
    options = options or CheckOptions()
    return [finding for check in DATA_CHECKS for finding in check(summary, options)]


__all__ = ["DATA_CHECKS", "CheckOptions", "run_checks"]
