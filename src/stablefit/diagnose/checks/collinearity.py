"""Constant, duplicate and collinear columns, and a target the features fit exactly.

Codes SF105 and SF111–SF115. The analysis runs on the complete rows' second moments: centered
co-moments when the model has a bias (a column plus a constant is then as good as the
column), raw moments when it has none. Columns are standardized to a correlation matrix
and factored by a pivoted Cholesky decomposition: at each step the column least explained
by those already chosen comes next, and a column whose unexplained share ``1 - R²`` falls
below ``EXACT_TOLERANCE`` is an exact linear combination of the chosen ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stablefit.diagnose.checks.common import CheckOptions, join_names, plural, target_index
from stablefit.diagnose.findings import Finding, format_number
from stablefit.summary import Summary

# 1 - R² below this is exact collinearity: the residual's spread is below 1e-6 of the
# column's, far below what float32 training (about 7 digits) can tell apart.
EXACT_TOLERANCE = 1e-12
VIF_INFO = 10.0
VIF_WARNING = 1e3
# A standardized coefficient below this contributes nothing a float64 sum can resolve.
NEGLIGIBLE = 1e-8
TIE = 1e-9
# Near-collinear columns listed in the evidence (worst first); the count covers them all.
MAX_LISTED = 20


@dataclass(frozen=True)
class Combination:
    """``column = constant + sum(coef[k] * others[k])`` in the data's own units."""

    column: str
    others: tuple[str, ...]
    coef: tuple[float, ...]
    constant: float
    r_squared: float

    def equation(self) -> str:
        terms = []
        for name, b in zip(self.others, self.coef, strict=True):
            magnitude = format_number(abs(b), digits=6)
            term = name if magnitude == "1" else f"{magnitude}·{name}"
            terms.append(("- " if b < 0 else "+ ") + term)
        if self.constant != 0:
            c = format_number(abs(self.constant), digits=6)
            terms.append(("- " if self.constant < 0 else "+ ") + c)
        text = " ".join(terms) if terms else "0"
        text = text[2:] if text.startswith("+ ") else "-" + text[2:]
        return f"{self.column} = {text}"

    def to_evidence(self) -> dict:
        return {
            "column": self.column,
            "equation": self.equation(),
            "terms": dict(zip(self.others, self.coef, strict=True)),
            "constant": self.constant,
            "r_squared": self.r_squared,
        }


@dataclass(frozen=True)
class _Analysis:
    """The second moments, and the usable features split by the pivoted factorization.

    Features with no spread (constant, SF111) or overflowing moments are in neither list.
    """

    moments: np.ndarray  # second-moment matrix of all p columns
    mean: np.ndarray
    scale: np.ndarray  # sqrt of the diagonal
    independent: list[int]  # column indices, in pivot order
    dependent: list[int]


def _analyse(summary: Summary, intercept: bool) -> _Analysis | None:
    n = summary.n_complete
    if n < 2 or summary.n_features == 0:
        return None
    mean, d = summary.complete_mean, summary.n_features
    with np.errstate(over="ignore", invalid="ignore"):
        moments = summary.comoment if intercept else summary.comoment + n * np.outer(mean, mean)
        diag = np.diag(moments).copy()
        usable = [
            j
            for j in range(d)
            if np.isfinite(diag[j]) and diag[j] > 0 and np.isfinite(moments[j, :d]).all()
        ]
        scale = np.sqrt(np.where(np.isfinite(diag) & (diag > 0), diag, 1.0))
    corr = moments[np.ix_(usable, usable)] / np.outer(scale[usable], scale[usable])
    schur = corr.copy()
    open_ = np.ones(len(usable), dtype=bool)
    chosen: list[int] = []
    while open_.any():
        residual = np.where(open_, np.diag(schur), -np.inf)
        largest = residual.max()
        if largest <= EXACT_TOLERANCE:
            break
        # Among columns explained equally little, keep the user's order: the earlier
        # column stays, the later one is reported as the combination.
        k = int(np.argmax(residual >= largest * (1 - TIE)))
        chosen.append(k)
        open_[k] = False
        pivot = schur[:, k] / np.sqrt(schur[k, k])
        schur -= np.outer(pivot, pivot)
    remaining = [int(i) for i in np.flatnonzero(open_)]
    return _Analysis(
        moments=moments,
        mean=mean,
        scale=scale,
        independent=[usable[k] for k in chosen],
        dependent=[usable[k] for k in remaining],
    )


def _correlation(a: _Analysis, rows: list[int], cols: list[int]) -> np.ndarray:
    s = a.scale
    return a.moments[np.ix_(rows, cols)] / np.outer(s[rows], s[cols])


def _combination(
    summary: Summary,
    a: _Analysis,
    j: int,
    basis: list[int],
    beta: np.ndarray,
    unexplained: float,
    intercept: bool,
) -> Combination:
    """Column j as the combination of ``basis`` with standardized coefficients ``beta``."""
    s = a.scale
    coef = beta * s[j] / s[basis]
    constant = 0.0
    if intercept:
        constant = float(a.mean[j] - coef @ a.mean[basis])
        size = abs(a.mean[j]) + float(np.abs(coef * a.mean[basis]).sum())
        if abs(constant) <= NEGLIGIBLE * size:
            constant = 0.0
    names = summary.names
    # Strongest contributors first (by standardized coefficient), so a cut list keeps them.
    order = [i for i in np.argsort(-np.abs(beta), kind="stable") if abs(beta[i]) > NEGLIGIBLE]
    return Combination(
        column=names[j],
        others=tuple(names[basis[i]] for i in order),
        coef=tuple(float(coef[i]) for i in order),
        constant=constant,
        r_squared=1.0 - max(unexplained, 0.0),
    )


def _regress(
    summary: Summary, a: _Analysis, columns: list[int], intercept: bool
) -> list[Combination]:
    """Each of ``columns`` as a combination of the independent columns."""
    basis = a.independent
    cross = _correlation(a, basis, columns)
    beta = np.linalg.solve(_correlation(a, basis, basis), cross) if basis else cross
    unexplained = 1.0 - np.einsum("ij,ij->j", cross, beta)
    return [
        _combination(summary, a, j, basis, beta[:, m], float(unexplained[m]), intercept)
        for m, j in enumerate(columns)
    ]


def _rounding_may_hide(values: dict[str, float]) -> str:
    """For constant columns beyond 2^53: that float64 may have made them so (integers a
    little apart in the file, such as ids 2^62 + i, all read as one value)."""
    beyond = [abs(v) for v in values.values() if abs(v) >= 2.0**53]
    if not beyond:
        return ""
    spacing = float(np.spacing(max(beyond)))
    return (
        f" Beyond 2^53, float64 keeps integers only to a multiple of {spacing:g}: values in "
        f"the file that differ by up to {spacing / 2:g} read as one, so the column may vary "
        "there; subtract an offset before saving it to keep them apart."
    )


def check_constant(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF111: columns with a single value (over at least two finite values)."""
    options = options or CheckOptions()
    columns = summary.columns
    # Both: a spread whose square underflows (values near 1e-300) leaves m2 at 0 too.
    constant = [
        j
        for j in range(summary.p)
        if columns.count[j] >= 2 and columns.m2[j] == 0 and columns.min[j] == columns.max[j]
    ]
    findings = []
    t = target_index(summary)
    features = [j for j in constant if j != t]
    if features:
        names = [summary.names[j] for j in features]
        values = {summary.names[j]: float(columns.mean[j]) for j in features}
        shown = ", ".join(f"{k} = {format_number(v)}" for k, v in list(values.items())[:5])
        role = (
            "the bias already plays that part, so its weight and the bias are not determined"
            if options.intercept
            else "it acts as the model's bias"
        )
        findings.append(
            Finding(
                code="SF111",
                severity="warning" if options.intercept else "info",
                title="Constant feature",
                message=f"{join_names(names)} never change{'s' if len(names) == 1 else ''} "
                f"({shown}): {role}.{_rounding_may_hide(values)}",
                evidence={"columns": names, "values": values},
                fix=f"Drop {join_names(names)} from the features.",
            )
        )
    if t is not None and t in constant:
        value = float(columns.mean[t])
        findings.append(
            Finding(
                code="SF111",
                severity="info",
                title="Constant target",
                message=f"The target {summary.names[t]} is always {format_number(value)}: "
                "the model needs nothing but its bias."
                + _rounding_may_hide({summary.names[t]: value}),
                evidence={"columns": [summary.names[t]], "values": {summary.names[t]: value}},
                fix="Check that the right column was chosen as the target.",
            )
        )
    return findings


def check_collinearity(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF112 duplicates, SF113 exact linear combinations, SF114 near collinearity (VIF)."""
    options = options or CheckOptions()
    analysis = _analyse(summary, options.intercept)
    if analysis is None:
        return []
    findings = []
    basis = analysis.independent
    for combination in _regress(summary, analysis, analysis.dependent, options.intercept):
        is_copy = (
            len(combination.coef) == 1
            and abs(combination.coef[0] - 1) < 1e-9
            and combination.constant == 0
        )
        evidence = combination.to_evidence() | {"vif": float("inf")}
        if is_copy:
            findings.append(
                Finding(
                    code="SF112",
                    severity="warning",
                    title="Duplicate features",
                    message=f"{combination.column} is a copy of {combination.others[0]} on "
                    "every complete row: the two weights can trade off freely, so neither is "
                    "determined.",
                    evidence=evidence,
                    fix=f"Drop {combination.column}.",
                )
            )
            continue
        findings.append(
            Finding(
                code="SF113",
                severity="warning",
                title="Exactly collinear features",
                message=f"{combination.equation()} on every complete row (1 - R² < "
                f"{format_number(EXACT_TOLERANCE)}): the weights of "
                f"{join_names([combination.column, *combination.others])} are not "
                "determined — any mix that keeps the combination gives the same loss.",
                evidence=evidence,
                fix=f"Drop {combination.column} (it carries nothing the others do not).",
            )
        )
    if len(basis) >= 2:
        findings.extend(_near_collinearity(summary, analysis, options.intercept))
    return findings


def _near_collinearity(summary: Summary, analysis: _Analysis, intercept: bool) -> list[Finding]:
    basis = analysis.independent
    inverse = np.linalg.inv(_correlation(analysis, basis, basis))
    vif = np.diag(inverse)
    flagged = [int(i) for i in np.argsort(-vif, kind="stable") if vif[i] >= VIF_INFO]
    if not flagged:
        return []
    items = []
    # Row i of the inverse correlation gives column i's regression on all the others:
    # beta = -inverse[i, others] / inverse[i, i], and 1 - R² = 1 / inverse[i, i].
    for i in flagged[:MAX_LISTED]:
        others = [k for k in range(len(basis)) if k != i]
        beta = -inverse[i, others] / inverse[i, i]
        combination = _combination(
            summary,
            analysis,
            basis[i],
            [basis[k] for k in others],
            beta,
            1.0 / vif[i],
            intercept,
        )
        items.append(combination.to_evidence() | {"vif": float(vif[i])})
    worst = float(vif[flagged[0]])
    shown = "; ".join(
        f"{item['column']} (VIF {format_number(item['vif'])}: "
        f"{_equation_head(item['equation'])}, 1 - R² = {format_number(1 / item['vif'])})"
        for item in items[:5]
    )
    more = (
        f"; and {len(flagged) - 5} more columns with VIF ≥ {VIF_INFO:g}" if len(flagged) > 5 else ""
    )
    return [
        Finding(
            code="SF114",
            severity="warning" if worst >= VIF_WARNING else "info",
            title="Nearly collinear features",
            message=f"{shown}{more}. A variance inflation factor (VIF) of v means the weight's "
            "uncertainty is √v times what it would be without the other features; training "
            "moves slowly along such directions.",
            evidence={"columns": items, "max_vif": worst, "n_columns": len(flagged)},
            fix="Drop or combine the columns that the others explain, or add a little L2 "
            "regularization.",
        )
    ]


def check_rows_vs_rank(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF105: no more complete rows than independent parameters, so any target fits."""
    options = options or CheckOptions()
    n = summary.n_complete
    if not summary.has_target or n == 0:
        return []
    analysis = _analyse(summary, options.intercept)
    rank = summary.n_features if analysis is None else len(analysis.independent)
    parameters = rank + int(options.intercept)
    if n > parameters:
        return []
    return [
        Finding(
            code="SF105",
            severity="warning",
            title="No more rows than parameters",
            message=f"{plural(n, 'complete row')} for {parameters} independent parameters "
            f"({plural(rank, 'independent feature')}{' and a bias' if options.intercept else ''})"
            ": a linear model fits any target exactly here, so a zero loss says nothing about "
            "the data.",
            evidence={"n_complete_rows": n, "n_parameters": parameters, "rank": rank},
            fix="Collect more rows, or use fewer features.",
        )
    ]


def _equation_head(equation: str, terms: int = 3) -> str:
    """The equation with at most ``terms`` terms on the right: long ones are cut with "…"."""
    left, right = equation.split(" = ", 1)
    parts = right.replace(" - ", " + -").split(" + ")
    head = " + ".join(parts[:terms]).replace(" + -", " - ")
    return f"{left} ≈ {head}" + (" …" if len(parts) > terms else "")


def check_exact_target(summary: Summary, options: CheckOptions | None = None) -> list[Finding]:
    """SF115: the target is an exact linear function of the features (zero optimal loss)."""
    options = options or CheckOptions()
    t = target_index(summary)
    analysis = _analyse(summary, options.intercept)
    if t is None or analysis is None:
        return []
    basis = analysis.independent
    diag = analysis.moments[t, t]
    if not (np.isfinite(diag) and diag > 0 and np.isfinite(analysis.moments[t, basis]).all()):
        return []
    if summary.n_complete <= len(basis) + int(options.intercept):
        return []  # SF105: with so few rows every target is fitted exactly
    (combination,) = _regress(summary, analysis, [t], options.intercept)
    if 1.0 - combination.r_squared > EXACT_TOLERANCE:
        return []
    return [
        Finding(
            code="SF115",
            severity="info",
            title="Target is an exact linear function of the features",
            message=f"{combination.equation()} on every complete row: the least-squares "
            "optimum has zero loss, and an exact solver finds it directly "
            "(stablefit.fit).",
            evidence=combination.to_evidence(),
            fix="Nothing to fix; if the target was meant to be noisy, check for leakage.",
        )
    ]


def variance_inflation(summary: Summary, intercept: bool = True) -> np.ndarray:
    """Each feature's variance inflation factor ``1 / (1 - R²)`` on the other features.

    ``inf`` for a feature the others determine exactly (SF112, SF113), ``NaN`` for a
    constant feature or one whose moments overflow; the others are measured against the
    features that are not exact combinations, as in SF114.
    """
    vif = np.full(summary.n_features, np.nan)
    analysis = _analyse(summary, intercept)
    if analysis is None:
        return vif
    basis = analysis.independent
    vif[analysis.dependent] = np.inf
    if len(basis) == 1:
        vif[basis] = 1.0
    elif basis:
        vif[basis] = np.diag(np.linalg.inv(_correlation(analysis, basis, basis)))
    return vif
