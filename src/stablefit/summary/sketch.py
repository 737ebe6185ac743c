"""A mergeable quantile sketch that stays exact while the data fit in its budget.

While fewer than ``capacity`` values have been seen, every value is kept and quantiles are
exact. Beyond that the sketch compacts like KLL (Karnin, Lang and Liberty, 2016): level
``h`` holds values of weight ``2**h``; a full level is sorted and every other value
(alternating offsets, so the rank error does not drift one way) moves up a level. Level
capacities shrink geometrically (factor 2/3) below the top level, which bounds memory by
about ``3 * capacity`` values; the rank error is below ``log2(n / capacity) / capacity`` of
n in the worst case and far below it in practice. Merging two sketches concatenates their
levels and compacts, so the same code serves one array, a stream of batches and a tree
reduce.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CAPACITY = 1 << 16


class QuantileSketch:
    """Quantiles of a stream of finite values; exact until ``capacity`` values were seen."""

    def __init__(self, *, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = int(capacity)
        self.levels: list[np.ndarray] = [np.empty(0)]
        self.count = 0
        self._flips = 0

    @property
    def exact(self) -> bool:
        return len(self.levels) == 1

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return
        self.levels[0] = np.concatenate([self.levels[0], values])
        self.count += values.size
        self._compact()

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        merged = QuantileSketch(capacity=max(self.capacity, other.capacity))
        height = max(len(self.levels), len(other.levels))
        merged.levels = [
            np.concatenate([sk.levels[h] for sk in (self, other) if h < len(sk.levels)])
            for h in range(height)
        ]
        merged.count = self.count + other.count
        merged._flips = self._flips + other._flips
        merged._compact()
        return merged

    def _level_capacity(self, h: int) -> int:
        depth = len(self.levels) - 1 - h
        return max(64, int(self.capacity * (2 / 3) ** depth))

    def _compact(self) -> None:
        h = 0
        while h < len(self.levels):
            level = self.levels[h]
            if level.size > self._level_capacity(h) and (h > 0 or level.size > self.capacity):
                level = np.sort(level)
                keep_odd_one = level[-1:] if level.size % 2 else level[:0]
                pairs = level[: level.size - keep_odd_one.size]
                promoted = pairs[self._flips % 2 :: 2]
                self._flips += 1
                self.levels[h] = keep_odd_one
                if h + 1 == len(self.levels):
                    self.levels.append(np.empty(0))
                self.levels[h + 1] = np.concatenate([self.levels[h + 1], promoted])
            h += 1

    def quantile(self, q: float | np.ndarray) -> float | np.ndarray:
        """Quantile(s) with linear interpolation when exact; weighted ranks otherwise."""
        if self.count == 0:
            return np.full(np.shape(q), np.nan) if np.ndim(q) else float("nan")
        if self.exact:
            return np.quantile(self.levels[0], q)
        values = np.concatenate(self.levels)
        weights = np.concatenate([np.full(lv.size, 2.0**h) for h, lv in enumerate(self.levels)])
        order = np.argsort(values, kind="stable")
        values, cumulative = values[order], np.cumsum(weights[order])
        target = np.asarray(q) * cumulative[-1]
        index = np.minimum(np.searchsorted(cumulative, target, side="left"), values.size - 1)
        result = values[index]
        return result if np.ndim(q) else float(result)

    def absolute_deviation_quantile(self, center: float, q: float = 0.5) -> float:
        """Quantile of ``|x - center|``, e.g. the median absolute deviation for q = 0.5."""
        if self.count == 0:
            return float("nan")
        shifted = QuantileSketch(capacity=self.capacity)
        shifted.levels = [np.abs(level - center) for level in self.levels]
        shifted.count = self.count
        return float(shifted.quantile(q))
