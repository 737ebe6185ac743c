"""Linear restrictions on the parameters, written as text, and their Wald and F tests.

``"x1 = x2"``, ``"x3 = 0"``, ``"2*a - b = 1"``, several separated by commas or given as a
list; a side without ``=`` equals zero. Names are the parameters' names (``intercept``,
also ``const`` or ``Intercept`` as in statsmodels, and the features); a name with spaces
or operators in it can be quoted with backticks: ```speed [m/s]` = 0``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stablefit.errors import StablefitInputError
from stablefit.solve.linalg import special

INTERCEPT_NAMES = ("intercept", "const", "Intercept")
_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NAME_END = re.compile(r"[\s+\-*=,;]|$")


@dataclass(frozen=True)
class RestrictionTest:
    """The result of a Wald or F test of linear restrictions ``R β = q``.

    Attributes
    ----------
    statistic : float
        F (the Wald statistic divided by the number of restrictions) or χ².
    pvalue : float
    df_num : int
        Number of restrictions.
    df_denom : int or None
        Denominator degrees of freedom of F (None for χ²).
    distribution : {"F", "chi2"}
    restrictions : tuple of str
        The restrictions as parsed, one per row of R.
    """

    statistic: float
    pvalue: float
    df_num: int
    df_denom: int | None
    distribution: str
    restrictions: tuple[str, ...]

    def __str__(self) -> str:
        head = (
            f"F({self.df_num}, {self.df_denom})"
            if self.distribution == "F"
            else f"chi2({self.df_num})"
        )
        return f"{head} = {self.statistic:.6g}, p = {self.pvalue:.4g}"

    def to_dict(self) -> dict:
        return {
            "statistic": self.statistic,
            "pvalue": self.pvalue,
            "df_num": self.df_num,
            "df_denom": self.df_denom,
            "distribution": self.distribution,
            "restrictions": list(self.restrictions),
        }


def parse_restrictions(
    spec: str | Sequence[str], names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``R`` (rows × parameters) and ``q`` of the restrictions ``R β = q``, and their text.

    Examples
    --------
    >>> R, q, text = parse_restrictions("x1 = x2, 2*x3 = 1", ["intercept", "x1", "x2", "x3"])
    >>> R.tolist(), q.tolist()
    ([[0.0, 1.0, -1.0, 0.0], [0.0, 0.0, 0.0, 2.0]], [0.0, 1.0])
    """
    parts = [spec] if isinstance(spec, str) else list(spec)
    equations = [piece.strip() for part in parts for piece in re.split(r"[,;]", str(part))]
    equations = [equation for equation in equations if equation]
    if not equations:
        raise StablefitInputError("no restriction given; write e.g. 'x1 = x2' or 'x3 = 0'")
    rows, constants = [], []
    for equation in equations:
        sides = equation.split("=")
        if len(sides) > 2:
            raise StablefitInputError(
                f"{equation!r}: one '=' per restriction; write 'a = b, b = c' for a chain"
            )
        left, left_constant = _linear(sides[0], names, equation)
        right, right_constant = (
            _linear(sides[1], names, equation) if len(sides) == 2 else (np.zeros(len(names)), 0.0)
        )
        row = left - right
        if not np.any(row):
            raise StablefitInputError(f"{equation!r} restricts no parameter")
        rows.append(row)
        constants.append(right_constant - left_constant)
    return np.array(rows), np.array(constants), tuple(equations)


def _linear(text: str, names: Sequence[str], equation: str) -> tuple[np.ndarray, float]:
    """Coefficients and constant of a sum of terms: ``number * name``, ``name``, ``number``."""
    lookup = {name: j for j, name in enumerate(names)}
    if "intercept" in lookup:
        for alias in INTERCEPT_NAMES:
            lookup.setdefault(alias, lookup["intercept"])
    tokens = _tokens(text, lookup, names, equation)
    coef, constant = np.zeros(len(names)), 0.0
    position = 0
    if not tokens:
        raise StablefitInputError(f"{equation!r}: a side of '=' is empty")
    while position < len(tokens):
        sign = 1.0
        signs = 0
        while position < len(tokens) and tokens[position] in (("op", "+"), ("op", "-")):
            sign = -sign if tokens[position][1] == "-" else sign
            position, signs = position + 1, signs + 1
        if position and not signs:
            raise StablefitInputError(f"{equation!r}: terms must be joined by + or -")
        factor, name = 1.0, None
        term = tokens[position : position + 3]
        kinds = [kind for kind, _ in term]
        if kinds[:3] == ["number", "op", "name"] and term[1][1] == "*":
            factor, name, position = float(term[0][1]), str(term[2][1]), position + 3
        elif kinds[:3] == ["name", "op", "number"] and term[1][1] == "*":
            name, factor, position = str(term[0][1]), float(term[2][1]), position + 3
        elif kinds[:1] == ["name"]:
            name, position = str(term[0][1]), position + 1
        elif kinds[:1] == ["number"]:
            factor, position = float(term[0][1]), position + 1
        else:
            raise StablefitInputError(f"{equation!r}: a term is missing after an operator")
        if name is None:
            constant += sign * factor
        else:
            coef[lookup[name]] += sign * factor
    return coef, constant


def _tokens(
    text: str, lookup: dict[str, int], names: Sequence[str], equation: str
) -> list[tuple[str, str | float]]:
    """Names (longest first, or in backticks), numbers and the operators + - *."""
    by_length = sorted(lookup, key=len, reverse=True)
    tokens: list[tuple[str, str | float]] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char.isspace():
            position += 1
        elif char == "`":
            end = text.find("`", position + 1)
            quoted = text[position + 1 : end] if end > 0 else text[position:]
            if end < 0 or quoted not in lookup:
                raise _unknown(quoted, names, equation)
            tokens.append(("name", quoted))
            position = end + 1
        elif char in "+-*":
            tokens.append(("op", char))
            position += 1
        else:
            name = next(
                (
                    candidate
                    for candidate in by_length
                    if text.startswith(candidate, position)
                    and _NAME_END.match(text, position + len(candidate))
                ),
                None,
            )
            number = _NUMBER.match(text, position)
            if name is not None:
                tokens.append(("name", name))
                position += len(name)
            elif number is not None:
                tokens.append(("number", float(number.group(0))))
                position = number.end()
            else:
                word = re.match(r"[^\s+\-*]+", text[position:])
                raise _unknown(word.group(0) if word else text[position:], names, equation)
    return tokens


def _unknown(word: str, names: Sequence[str], equation: str) -> StablefitInputError:
    return StablefitInputError(
        f"{equation!r}: {word!r} is not a parameter; the parameters are "
        f"{', '.join(names)} (quote a name with spaces or operators in backticks)"
    )


def restriction_test(
    params: np.ndarray,
    covariance: np.ndarray,
    R: np.ndarray,
    q: np.ndarray,
    *,
    use_f: bool,
    df_denom: int,
    text: tuple[str, ...],
    names: Sequence[str],
    reduced_rank: bool = False,
) -> RestrictionTest:
    """Wald test of ``R β = q``: F with (rows, df_denom) degrees of freedom, or χ².

    Restrictions whose covariance is singular are an error, unless ``reduced_rank``: then,
    as statsmodels' ``wald_test``, the test is of the combinations the covariance
    determines (its pseudo-inverse, as many degrees of freedom as its rank; NaN for rank
    0). A cluster-robust covariance of fewer clusters than coefficients is such a one.
    """
    involved = np.any(R != 0, axis=0)
    undefined = [names[j] for j in np.flatnonzero(involved & ~np.isfinite(np.diag(covariance)))]
    if undefined:
        raise StablefitInputError(
            f"cannot test {', '.join(text)}: {', '.join(undefined)} "
            "has no standard error (left out as collinear, or too few rows)"
        )
    used = np.flatnonzero(involved)
    difference = R @ params - q
    restricted = R[:, used] @ covariance[np.ix_(used, used)] @ R[:, used].T
    singular = np.linalg.svd(restricted, compute_uv=False)
    rows = R.shape[0]
    dependent = singular[-1] <= singular[0] * 1e-12 * restricted.shape[0]
    if dependent and not reduced_rank:
        raise StablefitInputError(
            f"the restrictions {', '.join(text)} are not independent (one follows from the "
            "others): leave the redundant ones out"
        )
    if dependent:
        rows = int(np.linalg.matrix_rank(restricted))
        if rows == 0:
            nan = float("nan")
            return RestrictionTest(nan, nan, 0, df_denom if use_f else None, "F", text)
        wald = float(difference @ np.linalg.pinv(restricted) @ difference)
    else:
        wald = float(difference @ np.linalg.solve(restricted, difference))
    # A two-way clustered covariance need not be positive definite, nor then the statistic:
    # its tail probability is that of 0, as in statsmodels.
    if use_f:
        statistic = wald / rows
        pvalue = float(special().fdtrc(rows, df_denom, max(statistic, 0.0)))
        return RestrictionTest(statistic, pvalue, rows, df_denom, "F", text)
    pvalue = float(special().chdtrc(rows, max(wald, 0.0)))
    return RestrictionTest(wald, pvalue, rows, None, "chi2", text)
