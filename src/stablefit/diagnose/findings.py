"""What a diagnosis says: findings with stable codes, and the Diagnosis that holds them.

Every code is documented in ``docs/findings.md``; once published, a code never changes
meaning. The JSON form (``Diagnosis.to_dict()``) carries ``schema_version`` so that
consumers can tell when its shape changes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

SCHEMA_VERSION = 1

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
_CODE = re.compile(r"SF\d{3}")


def severity_rank(severity: str) -> int:
    """0 for "error", 1 for "warning", 2 for "info": sort ascending for most severe first."""
    return SEVERITIES.index(severity)  # type: ignore[arg-type]


def format_number(value: float, digits: int = 3) -> str:
    """A number as a person reads it: ``9.3e12``, ``2.14e-13``, ``0.816``, ``1e6``, ``20``."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    if value == round(value) and abs(value) < 1e5:
        return str(int(value))
    text = f"{value:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
        return f"{mantissa}e{int(exponent)}"
    return text


def format_square(value: float) -> str:
    """``value``² as :func:`format_number` writes it, or ``(1.2e200)²`` when the square is
    beyond float64's range (the finding still says how large it is)."""
    square = float(value) * float(value)  # inf, not OverflowError, beyond the range
    return format_number(square) if math.isfinite(square) else f"({format_number(value)})²"


def jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays turned into plain Python (JSON) values.

    Non-finite floats become the strings ``"NaN"``, ``"inf"`` and ``"-inf"``, because JSON
    has no such numbers and a NaN must never disappear silently.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else format_number(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot put a {type(value).__name__} into a finding's evidence")


@dataclass(frozen=True)
class Finding:
    """One hazard found in the data or in the predicted training.

    Parameters
    ----------
    code : str
        Stable identifier, ``SF`` and three digits (see ``docs/findings.md``).
    severity : {"error", "warning", "info"}
        "error": training as configured yields a non-finite loss or a wrong answer;
        "warning": it will train badly or the answer is ill-determined; "info": worth knowing.
    title : str
        A few words, e.g. "Exactly collinear features".
    message : str
        What is wrong, naming the columns and rows, with the numbers.
    evidence : dict
        The numbers behind the message (JSON-able: numbers, names, 0-based row indices).
    fix : str
        What to do about it, as a sentence.
    fix_code : str or None
        Python the user can paste, where a sentence is not enough.
    """

    code: str
    severity: Severity
    title: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str = ""
    fix_code: str | None = None

    def __post_init__(self) -> None:
        if not _CODE.fullmatch(self.code):
            raise ValueError(f"finding code {self.code!r} is not of the form SF123")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {SEVERITIES}")
        object.__setattr__(self, "evidence", jsonable(dict(self.evidence)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "title": self.title,
            "message": self.message,
            "evidence": self.evidence,
            "fix": self.fix,
            "fix_code": self.fix_code,
        }


def sort_findings(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    """Most severe first; within a severity, by code (stable for equal codes)."""
    return tuple(sorted(findings, key=lambda f: (severity_rank(f.severity), f.code)))


@dataclass(frozen=True)
class DataFacts:
    """What was read: sizes and names, for the report's header."""

    origin: str
    feature_names: tuple[str, ...]
    target_name: str | None
    n_rows: int
    n_complete: int
    row_label: str = "row"  # how rows are numbered for the user: "line" (a file) or "row"
    left_out: tuple[tuple[str, str], ...] = ()  # columns not read: (name, why)

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "feature_names": list(self.feature_names),
            "target_name": self.target_name,
            "n_rows": self.n_rows,
            "n_complete_rows": self.n_complete,
            "dropped_columns": dict(self.left_out),
        }

    def left_out_text(self) -> str:
        """``Left out: 'when' (not numeric: …).`` for the columns not read; empty if none."""
        if not self.left_out:
            return ""
        return "Left out: " + "; ".join(f"{name!r} ({why})" for name, why in self.left_out) + "."


@dataclass(frozen=True)
class Diagnosis:
    """Everything ``stablefit.diagnose`` found, most severe first.

    Attributes
    ----------
    findings : tuple of Finding
        Most severe first.
    training : TrainingForecast or None
        The forecast for the optimizer asked for (Adam at Keras's defaults when none was),
        on the data as given: rows holding NaN or inf make the loss non-finite at epoch 1.
        None when there is no target or no complete row.
    other_forecasts : tuple of TrainingForecast
        Forecasts shown for comparison: plain SGD at Keras's default learning rate when no
        optimizer was asked for.
    facts : DataFacts
        What was read.
    settings : dict
        The training settings the forecast assumed.
    columns : tuple of ColumnProfile
        Each column's scale, missing values, VIF and extreme values, for the report
        (:mod:`stablefit.diagnose.profile`).
    """

    findings: tuple[Finding, ...]
    training: Any
    facts: DataFacts
    settings: dict[str, Any]
    other_forecasts: tuple[Any, ...] = ()
    columns: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "findings", sort_findings(self.findings))

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    @property
    def diverges(self) -> bool:
        """True when the forecast training reaches a non-finite loss."""
        return self.training is not None and self.training.outcome == "diverges"

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.findings)

    def by_code(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; its schema is documented in ``docs/findings.md``."""
        return {
            "schema_version": SCHEMA_VERSION,
            "data": self.facts.to_dict(),
            "settings": jsonable(self.settings),
            "has_errors": self.has_errors,
            "diverges": self.diverges,
            "training": None if self.training is None else jsonable(self.training.to_dict()),
            "other_forecasts": [jsonable(f.to_dict()) for f in self.other_forecasts],
            "findings": [f.to_dict() for f in self.findings],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @property
    def stability_map(self) -> Any:
        """The forecast outcome over learning rates × optimizers (computed on first use;
        None without a forecast). See :class:`~stablefit.diagnose.stability_map.StabilityMap`."""
        return None if self.training is None else self.training.stability_map

    def summary(self, *, width: int = 100) -> str:
        """The report as plain text (what ``stablefit doctor`` prints, without colour)."""
        from stablefit.report.diagnosis import render_text

        return render_text(self, width=width)

    def to_html(self, *, keras_history: Any = None) -> str:
        """The report as one self-contained HTML page with plots (needs matplotlib:
        ``pip install 'stablefit[plot]'``).

        Parameters
        ----------
        keras_history : mapping of str to sequence of float, optional
            Real per-epoch losses (e.g. ``model.fit(...).history["loss"]``) to draw beside
            the forecast, by label.
        """
        from stablefit.report.html.doctor import diagnosis_page

        return diagnosis_page(self, keras_history=keras_history)

    def _repr_html_(self) -> str:
        from stablefit.report.html.doctor import diagnosis_fragment

        return diagnosis_fragment(self)

    def __str__(self) -> str:
        return self.summary()
