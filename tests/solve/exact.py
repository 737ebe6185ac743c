"""Exact least squares in rational arithmetic: the reference the certificate is held to.

Every float64 is a rational number, so the least-squares solution of the data as given is
a vector of rationals; ``fractions`` computes it without rounding (normal equations,
Gauss-Jordan). Also the problem's componentwise condition numbers, which say how many
digits any method working to a given precision can be expected to deliver.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


def _solve(G: list[list[Fraction]], B: list[list[Fraction]]) -> list[list[Fraction]]:
    """G X = B (G square, nonsingular) by exact Gauss-Jordan; B has rows like G."""
    k = len(G)
    G = [row[:] for row in G]
    B = [row[:] for row in B]
    for col in range(k):
        pivot = next(i for i in range(col, k) if G[i][col] != 0)
        G[col], G[pivot] = G[pivot], G[col]
        B[col], B[pivot] = B[pivot], B[col]
        for i in range(k):
            if i != col and G[i][col] != 0:
                f = G[i][col] / G[col][col]
                G[i] = [a - f * b for a, b in zip(G[i], G[col], strict=True)]
                B[i] = [a - f * b for a, b in zip(B[i], B[col], strict=True)]
    return [[b / G[i][i] for b in B[i]] for i in range(k)]


@dataclass(frozen=True)
class ExactFit:
    """The exact least-squares solution of ``A x = y`` and what its accuracy depends on."""

    columns: list[list[Fraction]]  # the columns of A
    y: list[Fraction]
    solution: list[Fraction]
    gram_inverse: list[list[Fraction]]

    @property
    def residual(self) -> list[Fraction]:
        rows = zip(*self.columns, strict=True)
        return [
            yi - sum(a * x for a, x in zip(row, self.solution, strict=True))
            for yi, row in zip(self.y, rows, strict=True)
        ]

    def componentwise_condition(self) -> np.ndarray:
        """cond_i = (|A⁺|(|y| + |A||x|) + |(AᵀA)⁻¹||A|ᵀ|r|)_i / |x_i|.

        A relative perturbation of size ε of every entry of A and y moves x_i by at most
        about ε·cond_i·|x_i| (first order; Higham, *Accuracy and Stability of Numerical
        Algorithms*, §20.2). inf where x_i = 0.
        """
        k, rows = len(self.columns), list(zip(*self.columns, strict=True))
        r = self.residual
        sizes = [
            abs(yi) + sum(abs(a * x) for a, x in zip(row, self.solution, strict=True))
            for yi, row in zip(self.y, rows, strict=True)
        ]
        pinv = [
            [sum(self.gram_inverse[i][j] * row[j] for j in range(k)) for row in rows]
            for i in range(k)
        ]
        spread = [sum(abs(a * ri) for a, ri in zip(c, r, strict=True)) for c in self.columns]
        cond = []
        for i in range(k):
            first = sum(abs(p) * s for p, s in zip(pinv[i], sizes, strict=True))
            second = sum(abs(self.gram_inverse[i][j]) * spread[j] for j in range(k))
            x = abs(self.solution[i])
            cond.append(math.inf if x == 0 else 10.0 ** min(300.0, log10((first + second) / x)))
        return np.array(cond)


def log10(value: Fraction) -> float:
    """log10 of a positive rational of any size (float() would overflow or underflow)."""
    return math.log10(value.numerator) - math.log10(value.denominator)


def _as_integers(values: Sequence[float | Fraction]) -> tuple[list[int], int]:
    """Integers m_i and one denominator D with values_i = m_i / D exactly: dot products of
    Python integers are far faster than of Fractions."""
    ratios = [Fraction(v) for v in values]
    denominator = math.lcm(*(r.denominator for r in ratios))
    return [r.numerator * (denominator // r.denominator) for r in ratios], denominator


def _dot(a: tuple[list[int], int], b: tuple[list[int], int]) -> Fraction:
    return Fraction(sum(map(operator.mul, a[0], b[0])), a[1] * b[1])


def exact_fit(columns: Sequence[Sequence[float | Fraction]], y: Sequence[float]) -> ExactFit:
    """Least squares of the values as given (include a column of ones for an intercept;
    columns may be rationals, such as exact powers of x)."""
    A = [_as_integers(col) for col in columns]
    target = _as_integers(y)
    k = len(A)
    G = [[_dot(A[i], A[j]) for j in range(k)] for i in range(k)]
    g = [[_dot(A[i], target)] for i in range(k)]
    identity = [[Fraction(int(i == j)) for j in range(k)] for i in range(k)]
    solution = [row[0] for row in _solve(G, g)]
    return ExactFit(
        [[Fraction(m, D) for m in col] for col, D in A],
        [Fraction(m, target[1]) for m in target[0]],
        solution,
        _solve(G, identity),
    )


def digits_achieved(estimate: float, exact: Fraction, natural: float) -> float:
    """-log10 of the relative error (16 when exact); relative to ``natural`` when the exact
    value is 0, as the certificate counts such a coefficient."""
    error = abs(Fraction(float(estimate)) - exact)
    if error == 0:
        return 16.0
    scale = abs(exact) if exact != 0 else Fraction(natural)
    return -log10(error / scale) if scale else 0.0
