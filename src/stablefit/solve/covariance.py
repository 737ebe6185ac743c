"""Covariance of the coefficients: classical, heteroskedasticity-robust, cluster-robust.

Every robust type is a sandwich ``V = B M B`` in the scaled coordinates θ̃ of Ã (then
``T V Tᵀ`` in the data's units), with the bread ``B = (ÃᵀWÃ)⁻¹`` and the meat
``M = Σ_g s_g s_gᵀ`` over clusters g of rows, where ``s_g = Σ_{i∈g} w_i r_i ã_i`` is the
cluster's score (every row its own cluster for HC0–HC3; W = diag(w), the identity without
weights). Small-sample corrections are those of statsmodels, which are Stata's:

========== ==================================================== =====================
type       V                                                    degrees of freedom
========== ==================================================== =====================
nonrobust  σ² B, σ² = rᵀWr / (n - k)                            n - k
HC0        B (Σ_i e_i² ã_i ã_iᵀ) B, e = w r                     n - k
HC1        n / (n - k) · HC0                                    n - k
HC2        as HC0 with e_i² / (1 - h_i), h the leverages         n - k
HC3        as HC0 with e_i² / (1 - h_i)²                         n - k
cluster    G/(G-1) · (n-1)/(n-k) · B (Σ_g s_g s_gᵀ) B            G - 1
two-way    V₁ + V₂ - V₁₂ (each corrected with its own G)         min(G₁, G₂) - 1
========== ==================================================== =====================

What the meat needs is gathered in the refinement passes (a :data:`BlockStatistic` of
:func:`stablefit.solve.lstsq.refine`) from the residuals in double-double, so HC0–HC3
and clustering cost no pass of their own. Each block's part is a sum over its rows and
the parts add up in any grouping (:meth:`RowStatistics.add`): blocks on threads, or
partitions on a cluster. Clusters are kept as a mapping from key to score vector,
memory proportional to the number of clusters.

Two precisions, as for the classical standard errors:

- from R (ÃᵀWÃ = RᵀR): the scores are whitened, ``Y = S R⁻¹``, before their outer
  products are summed, and ``V = Wᵀ(YᵀY)W`` with ``W = R⁻ᵀTᵀ``. Relative accuracy about
  κ(Ã)·u; forming ``SᵀS`` first would lose κ(Ã)²·u.
- with the Gram matrix ÃᵀWÃ in double-double (which the solver forms for ill-conditioned
  problems of moderate size): the scores and their outer products in double-double, L
  the double-double Cholesky factor of the Gram, ``V = Wᵀ(L⁻¹ M L⁻ᵀ)W`` with
  ``W = L⁻¹Tᵀ``: about κ(Ã)²·u² (the leverages of HC2/HC3 stay at κ(Ã)·u).

HC2 and HC3 need each row's leverage ``h_i = w_i ‖R⁻ᵀ ã_i‖²``: one triangular solve per
block, the same n·k² flops as the meat itself, so those two types cost about twice what
HC0/HC1 cost per pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from stablefit.cov_type import normalize_cov_type
from stablefit.errors import StablefitInputError
from stablefit.solve.blocks import RawBlock
from stablefit.solve.dd import (
    dd_add,
    dd_cholesky,
    dd_forward_solve,
    dd_gram,
    dd_matmul,
    dd_mul,
    dd_sum,
    two_sum,
)
from stablefit.solve.design import ScaledDesign
from stablefit.solve.kernels import group_scores, segment_sums
from stablefit.solve.linalg import solve_triangular

# Which per-row meats a covariance type needs: HC1 is HC0 rescaled.
ROW_MEATS = {"HC0": ("HC0",), "HC1": ("HC0",), "HC2": ("HC0", "HC2", "HC3")}
ROW_MEATS["HC3"] = ROW_MEATS["HC2"]
# Cluster codes are below 2**31, so a pair of them is one int64 key.
PAIR_SHIFT = 31


@dataclass
class RowMeat:
    """``Σ_i c_i c_iᵀ`` over rows, per kind (HC0: ``c_i = e_i ã_i``; HC2: ``c_i/√(1-h_i)``;
    HC3: ``c_i/(1-h_i)``), whitened by R⁻¹ (``lo`` None) or in double-double."""

    sums: dict[str, tuple[np.ndarray, np.ndarray | None]]
    max_leverage: float

    def __add__(self, other: RowMeat) -> RowMeat:
        sums: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for kind, (hi, lo) in other.sums.items():
            mine_hi, mine_lo = self.sums[kind]
            if lo is None or mine_lo is None:
                sums[kind] = (mine_hi + hi, None)
            else:
                sums[kind] = dd_add(mine_hi, mine_lo, hi, lo)
        return RowMeat(sums, max(self.max_leverage, other.max_leverage))


@dataclass
class GroupScores:
    """Each cluster's score ``Σ_{i∈g} w_i r_i [1, z_i]`` (raw coordinates, double-double),
    by cluster key; ``keys`` sorted and unique once :meth:`compacted`.

    Parts are merged by key, so blocks and partitions add up in any grouping. Added parts
    wait in a list and are merged all at once when they hold more keys than the total,
    so that adding many small parts costs O(G log G), not O(G) each.
    """

    keys: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    pending: tuple[GroupScores, ...] = field(default=(), repr=False)
    pending_keys: int = 0

    def __add__(self, other: GroupScores) -> GroupScores:
        added = GroupScores(
            self.keys,
            self.hi,
            self.lo,
            (*self.pending, other, *other.pending),
            self.pending_keys + other.keys.size + other.pending_keys,
        )
        if added.pending_keys > 2 * self.keys.size + 4096:
            return added.compacted()
        return added

    def compacted(self) -> GroupScores:
        """The same scores with every key once (the parts waiting merged)."""
        if not self.pending:
            return self
        parts = [self, *self.pending]
        keys = np.concatenate([part.keys for part in parts])
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        hi = np.concatenate([part.hi for part in parts])[order]
        lo = np.concatenate([part.lo for part in parts])[order]
        sum_hi, sum_lo = segment_sums(hi, lo, np.append(first, keys.size))
        return GroupScores(keys[first], *two_sum(sum_hi, sum_lo))


@dataclass
class WeightTotals:
    """Sums over the weighted rows: Σw, Σ log w, and for the weighted total sum of
    squares Σ w d and Σ w d², d = y - (a fixed centre near the mean)."""

    sum_w: float
    sum_log_w: float
    sum_wd: float
    sum_wdd: float

    def __add__(self, other: WeightTotals) -> WeightTotals:
        return WeightTotals(
            self.sum_w + other.sum_w,
            self.sum_log_w + other.sum_log_w,
            self.sum_wd + other.sum_wd,
            self.sum_wdd + other.sum_wdd,
        )

    def centered_tss(self) -> float:
        """Σ w (y - ȳ_w)², ȳ_w the weighted mean."""
        return max(0.0, self.sum_wdd - self.sum_wd**2 / self.sum_w)


@dataclass
class RowStatistics:
    """What one refinement pass gathers for the covariance (and the weights' totals).

    Parts add with ``+`` (a new total), in any grouping: blocks, partitions.
    """

    meat: RowMeat | None = None
    groups: tuple[GroupScores, ...] = ()
    weights: WeightTotals | None = None

    def __add__(self, other: RowStatistics) -> RowStatistics:
        groups = self.groups or other.groups
        if self.groups and other.groups:
            groups = tuple(a + b for a, b in zip(self.groups, other.groups, strict=True))
        return RowStatistics(
            _plus(self.meat, other.meat), groups, _plus(self.weights, other.weights)
        )


def _plus(a, b):  # type: ignore[no-untyped-def]
    """a + b, where either may be None (nothing gathered)."""
    return b if a is None else a if b is None else a + b


def pair_keys(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """One int64 key per pair of cluster codes: the clusters of the intersection."""
    return (first.astype(np.int64) << PAIR_SHIFT) | second.astype(np.int64)


@dataclass(frozen=True)
class RowStatistic:
    """The per-block statistic for :func:`~stablefit.solve.lstsq.refine`.

    Parameters
    ----------
    design : ScaledDesign
    R : ndarray
        The triangular factor of W^½Ã (whitens scores; gives leverages).
    row_kinds : tuple of str
        Per-row meats to gather: ``"HC0"``, ``"HC2"``, ``"HC3"``.
    n_ways : int
        Clusterings (0, 1 or 2); the blocks' ``groups`` hold their codes.
    precise : bool
        Gather the meat in double-double (the solver forms the Gram matrix).
    y_centre : float
        A value near the target's mean, to sum weighted squares without cancellation.
    cholesky : pair of ndarray, optional
        The double-double Cholesky factor of the Gram matrix: leverages in double-double
        (known only once a pass has formed the Gram, so HC2/HC3 of the precise path come
        from one more pass).
    """

    design: ScaledDesign
    R: np.ndarray
    row_kinds: tuple[str, ...] = ()
    n_ways: int = 0
    precise: bool = False
    y_centre: float = 0.0
    cholesky: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __call__(self, raw: RawBlock, r_hi: np.ndarray, r_lo: np.ndarray) -> RowStatistics:
        w = raw.weights
        statistics = RowStatistics()
        if w is not None:
            d = raw.y - self.y_centre
            statistics.weights = WeightTotals(
                float(w.sum()), float(np.log(w).sum()), float(w @ d), float((w * d) @ d)
            )
        if raw.y.size == 0:
            return statistics
        e_hi, e_lo = (r_hi, r_lo) if w is None else dd_mul(r_hi, r_lo, w, np.zeros_like(w))
        if self.row_kinds:
            statistics.meat = self._row_meat(raw, e_hi, e_lo)
        if self.n_ways:
            statistics.groups = self._group_scores(raw, e_hi, e_lo)
        return statistics

    def _row_meat(self, raw: RawBlock, e_hi: np.ndarray, e_lo: np.ndarray) -> RowMeat:
        if self.precise:
            block = self.design.scaled(raw.Z_hi, raw.Z_lo, raw.y)
            U = block.hi.copy()
        else:
            U = self.design.scaled_rounded(raw.Z_hi, raw.Z_lo)
        # U = Ã R⁻¹ in place: Rᵀ Uᵀ = Ãᵀ, Uᵀ a Fortran-ordered view of U (BLAS's trsm).
        import scipy.linalg.blas  # robust covariances only: not on every fit's start

        U = scipy.linalg.blas.dtrsm(1.0, self.R, U.T, side=0, lower=0, trans_a=1, overwrite_b=1).T
        complement = np.ones(U.shape[0])
        if set(self.row_kinds) - {"HC0"}:
            if self.cholesky is not None:
                complement = self._precise_complement(block.hi, block.lo, raw.weights)
            else:
                leverage = np.einsum("ij,ij->i", U, U)
                complement = 1.0 - (leverage if raw.weights is None else leverage * raw.weights)
        # A row of leverage 1 (1 - h zero, or below zero by rounding) leaves HC2 and HC3
        # undefined: NaN here, and the result's notes say so (covariance_notes).
        with np.errstate(divide="ignore", invalid="ignore"):
            factors = {
                "HC0": None,
                "HC2": 1.0 / np.sqrt(complement),
                "HC3": 1.0 / complement,
            }
        sums: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        if self.precise:
            A_lo = np.zeros_like(block.hi) if block.lo is None else block.lo
            c_hi, c_lo = dd_mul(block.hi, A_lo, e_hi[:, None], e_lo[:, None])
            for kind in self.row_kinds:
                f = factors[kind]
                if f is None:
                    sums[kind] = dd_gram(c_hi, c_lo)
                else:
                    sums[kind] = dd_gram(*dd_mul(c_hi, c_lo, f[:, None], np.zeros((f.size, 1))))
        else:
            for kind in self.row_kinds:
                f = factors[kind]
                Y = U * (e_hi if f is None else e_hi * f)[:, None]
                sums[kind] = (Y.T @ Y, None)
        return RowMeat(sums, float(1.0 - complement.min()))

    def _precise_complement(
        self, A_hi: np.ndarray, A_lo: np.ndarray | None, weights: np.ndarray | None
    ) -> np.ndarray:
        """1 - h_i in double-double, h_i = w_i ‖L⁻¹ã_i‖² (L the Gram's Cholesky factor)."""
        assert self.cholesky is not None
        lo = np.zeros_like(A_hi) if A_lo is None else A_lo
        X_hi, X_lo = dd_forward_solve(*self.cholesky, A_hi.T.copy(), lo.T.copy())
        h_hi, h_lo = dd_sum(*dd_mul(X_hi, X_lo, X_hi, X_lo), axis=0)
        if weights is not None:
            h_hi, h_lo = dd_mul(h_hi, h_lo, weights, np.zeros_like(weights))
        ones = np.ones_like(h_hi)
        c_hi, c_lo = dd_add(ones, np.zeros_like(ones), -h_hi, -h_lo)
        return c_hi + c_lo

    def _group_scores(
        self, raw: RawBlock, e_hi: np.ndarray, e_lo: np.ndarray
    ) -> tuple[GroupScores, ...]:
        assert raw.groups is not None
        columns = [raw.groups[:, way] for way in range(self.n_ways)]
        if self.n_ways == 2:
            columns.append(pair_keys(columns[0], columns[1]))
        offset = 0 if self.design.intercept else 1
        parts = []
        for keys in columns:
            unique, inverse = np.unique(keys, return_inverse=True)
            hi, lo = group_scores(raw.Z_hi, raw.Z_lo, e_hi, e_lo, inverse, unique.size)
            parts.append(GroupScores(unique, hi[:, offset:], lo[:, offset:]))
        return tuple(parts)


@dataclass(frozen=True)
class Bread:
    """(ÃᵀWÃ)⁻¹ as the solver holds it: R, and the double-double Gram when formed."""

    R: np.ndarray
    gram: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def precise(self) -> bool:
        return self.gram is not None

    @cached_property
    def cholesky(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The Gram matrix's Cholesky factor in double-double (None without the Gram)."""
        return None if self.gram is None else dd_cholesky(*self.gram)

    def meat_of_scores(
        self, s_hi: np.ndarray, s_lo: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Σ_g s_g s_gᵀ for score rows s (scaled coordinates) in this bread's precision:
        whitened by R⁻¹, or in double-double."""
        if self.precise:
            return dd_gram(s_hi, s_lo)
        Y = solve_triangular(self.R, (s_hi + s_lo).T, trans=True)
        return Y @ Y.T, None

    def sandwich(
        self, meat: tuple[np.ndarray, np.ndarray | None], transform: np.ndarray
    ) -> np.ndarray:
        """``transform · B M B · transformᵀ``, M from :meth:`meat_of_scores` or a RowMeat."""
        M_hi, M_lo = meat
        if M_lo is None:
            W = solve_triangular(self.R, transform.T, trans=True)
            V = W.T @ M_hi @ W
            return (V + V.T) / 2.0
        assert self.cholesky is not None
        L_hi, L_lo = self.cholesky
        zeros = np.zeros_like(transform.T)
        W_hi, W_lo = dd_forward_solve(L_hi, L_lo, transform.T.copy(), zeros)
        X_hi, X_lo = dd_forward_solve(L_hi, L_lo, M_hi, M_lo)
        P_hi, P_lo = dd_forward_solve(L_hi, L_lo, X_hi.T.copy(), X_lo.T.copy())
        Q_hi, Q_lo = dd_matmul(P_hi, P_lo, W_hi, W_lo)
        V_hi, V_lo = dd_matmul(W_hi.T.copy(), W_lo.T.copy(), Q_hi, Q_lo)
        V = V_hi + V_lo
        return (V + V.T) / 2.0


@dataclass(frozen=True)
class Covariance:
    """A covariance of the kept parameters (intercept first), with what inference needs.

    ``matrix`` is in the data's units; ``centered`` is the covariance of the intercept
    taken at the features' means and the coefficients (``[c + shift·b, b]``), from which
    the variance of a prediction follows without the cancellation of far-off means.
    ``df_inference`` is the degrees of freedom of t and F (n - k; G - 1 for clusters).
    """

    cov_type: str
    matrix: np.ndarray
    centered: np.ndarray
    df_inference: int
    n_groups: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()
    group_names: tuple[str, ...] = ()


# One more pass over the data at the final parameters: ``extra_pass(row_kinds, groups)``
# gathers those per-row meats, and the scores of the clusters ``groups`` (arrays or column
# names, None for the fit's own); it returns them with the clusterings' names.
ExtraPass = Callable[[tuple[str, ...], object | None], tuple[RowStatistics, tuple[str, ...]]]


@dataclass(eq=False)
class CovarianceBuilder:
    """Turns what the passes gathered into any covariance type, one more pass at most.

    Parameters
    ----------
    design : ScaledDesign
        The kept columns (their shift and scale give the transforms).
    bread : Bread
    n_obs, sigma2 : int, float
        Rows used and the residual variance rᵀWr / (n - k).
    statistics : RowStatistics or None
        What the fit's refinement passes gathered.
    group_names : tuple of str
        The fit's clusterings (empty when no groups were given).
    extra_pass : callable or None
        See :data:`ExtraPass`; None once the data are no longer at hand.
    """

    design: ScaledDesign
    bread: Bread
    n_obs: int
    sigma2: float
    statistics: RowStatistics | None = None
    group_names: tuple[str, ...] = ()
    extra_pass: ExtraPass | None = None

    @property
    def n_params(self) -> int:
        return self.design.n_params

    def transforms(self) -> tuple[np.ndarray, np.ndarray]:
        """T (θ̃ -> data units) and the centered one D (θ̃ -> [c + shift·b, b])."""
        T = self.design.transform()
        D = np.diag(np.concatenate([np.ones(int(self.design.intercept)), 1 / self.design.scale]))
        return T, D

    def covariance(self, cov_type: str, groups: object | None = None) -> Covariance:
        """The covariance of type ``cov_type``; ``groups`` (for "cluster") other keys than
        the fit's, which costs one more pass over the data.

        A variance beyond float64's range (a coefficient near 1e280) comes out infinite;
        the result's notes name it (:func:`stablefit.solve.result.covariance_notes`).
        """
        with np.errstate(over="ignore", invalid="ignore"):
            return self._covariance(cov_type, groups)

    def _covariance(self, cov_type: str, groups: object | None) -> Covariance:
        from stablefit.solve.lstsq import unscaled_covariance

        cov_type = normalize_cov_type(cov_type)
        n, k = self.n_obs, self.n_params
        df_resid = n - k
        T, D = self.transforms()
        if cov_type == "nonrobust":
            gram = self.bread.gram
            return Covariance(
                cov_type,
                self.sigma2 * unscaled_covariance(self.bread.R, gram, T),
                self.sigma2 * unscaled_covariance(self.bread.R, gram, D),
                df_resid,
            )
        if df_resid <= 0:
            nan = np.full((k, k), np.nan)
            return Covariance(cov_type, nan, nan.copy(), df_resid)
        if cov_type == "cluster":
            return self._cluster(groups, T, D)
        statistics = self.statistics
        needed = ROW_MEATS[cov_type]
        if statistics is None or statistics.meat is None or set(needed) - set(statistics.meat.sums):
            statistics, _ = self._pass(needed, None)
        meat = statistics.meat
        assert meat is not None
        kind = "HC0" if cov_type in ("HC0", "HC1") else cov_type
        factor = n / df_resid if cov_type == "HC1" else 1.0
        notes: tuple[str, ...] = ()
        if cov_type in ("HC2", "HC3") and meat.max_leverage >= 1.0 - 1e-12:
            notes = (
                f"{cov_type} is undefined: a row has leverage 1 (it alone determines a "
                "coefficient), so its standard errors are NaN; use HC0 or HC1.",
            )
            nan = np.full((k, k), np.nan)
            return Covariance(cov_type, nan, nan.copy(), df_resid, notes=notes)
        return Covariance(
            cov_type,
            factor * self.bread.sandwich(meat.sums[kind], T),
            factor * self.bread.sandwich(meat.sums[kind], D),
            df_resid,
        )

    def _pass(
        self, row_kinds: tuple[str, ...], groups: object | None
    ) -> tuple[RowStatistics, tuple[str, ...]]:
        if self.extra_pass is None:
            raise StablefitInputError(
                "this covariance needs one more pass over the data, which this result no "
                "longer holds (it was pickled or copied without them): fit again with "
                "cov_type= set."
            )
        return self.extra_pass(row_kinds, groups)

    def _cluster(self, groups: object | None, T: np.ndarray, D: np.ndarray) -> Covariance:
        statistics, names = self.statistics, self.group_names
        if groups is not None or statistics is None or not statistics.groups:
            if groups is None and not self.group_names:
                raise StablefitInputError(
                    "cov_type='cluster' needs the cluster keys: pass groups= (an array with "
                    "one or two columns, or column names; --cluster COL[,COL])."
                )
            statistics, names = self._pass((), groups)
        parts = [part.compacted() for part in statistics.groups]
        n, k = self.n_obs, self.n_params
        counts = tuple(part.keys.size for part in parts[:2])
        if min(counts) < 2:
            which = names[counts.index(min(counts))]
            raise StablefitInputError(
                f"clustering needs at least 2 clusters; the data hold {min(counts)} of "
                f"{which!r} (in the rows fitted). Cluster by a column with more values, or "
                "use a heteroskedasticity-robust covariance: cov_type='HC1' (--cov-type hc1)."
            )
        signs = [1.0] if len(parts) == 1 else [1.0, 1.0, -1.0]
        total = np.zeros((k, k))
        total_centered = np.zeros((k, k))
        for sign, part in zip(signs, parts, strict=True):
            G = part.keys.size
            factor = sign * G / (G - 1.0) * (n - 1.0) / (n - k)
            meat = self.bread.meat_of_scores(*self.design.scaled_gradient_pair(part.hi, part.lo))
            total += factor * self.bread.sandwich(meat, T)
            total_centered += factor * self.bread.sandwich(meat, D)
        notes: tuple[str, ...] = ()
        if len(parts) == 3 and np.linalg.eigvalsh(total_centered)[0] < 0:
            negative = np.flatnonzero(np.diag(total) < 0)
            notes = (
                "The two-way clustered covariance V₁ + V₂ - V₁₂ is not positive "
                "semi-definite here (Cameron, Gelbach and Miller, 2011): some linear "
                "combinations have a negative variance, and tests of them are meaningless"
                + (
                    f"; {negative.size} parameter(s) have a negative variance and no "
                    "standard error (NaN)."
                    if negative.size
                    else "."
                ),
            )
        return Covariance("cluster", total, total_centered, min(counts) - 1, counts, notes, names)
