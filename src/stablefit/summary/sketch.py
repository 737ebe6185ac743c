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
    """Quantiles of a stream of finite values; exact until ``capacity`` values were seen.

    Each level is a list of arrays, joined only when the level is compacted, so merging a
    batch's sketch into a large one costs nothing in proportion to the large one.
    """

    def __init__(self, *, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = int(capacity)
        self._parts: list[list[np.ndarray]] = [[]]
        self._sizes: list[int] = [0]
        self.count = 0
        self._flips = 0

    @property
    def exact(self) -> bool:
        return len(self._parts) == 1

    @property
    def levels(self) -> list[np.ndarray]:
        """The values of each level (level h has weight 2**h)."""
        return [np.concatenate(parts) if parts else np.empty(0) for parts in self._parts]

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return
        self._add(0, values)
        self.count += values.size
        self._compact()

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        merged = QuantileSketch(capacity=max(self.capacity, other.capacity))
        height = max(len(self._parts), len(other._parts))
        merged._parts = [[] for _ in range(height)]
        merged._sizes = [0] * height
        for sketch in (self, other):
            for h, parts in enumerate(sketch._parts):
                merged._parts[h].extend(parts)
                merged._sizes[h] += sketch._sizes[h]
        merged.count = self.count + other.count
        merged._flips = self._flips + other._flips
        merged._compact()
        return merged

    def _add(self, h: int, values: np.ndarray) -> None:
        if h == len(self._parts):
            self._parts.append([])
            self._sizes.append(0)
        self._parts[h].append(values)
        self._sizes[h] += values.size

    def _level_capacity(self, h: int) -> int:
        depth = len(self._parts) - 1 - h
        return max(64, int(self.capacity * (2 / 3) ** depth))

    def _compact(self) -> None:
        h = 0
        while h < len(self._parts):
            size = self._sizes[h]
            if size > self._level_capacity(h) and (h > 0 or size > self.capacity):
                level = np.sort(np.concatenate(self._parts[h]))
                keep_odd_one = level[-1:] if level.size % 2 else level[:0]
                pairs = level[: level.size - keep_odd_one.size]
                promoted = pairs[self._flips % 2 :: 2]
                self._flips += 1
                self._parts[h], self._sizes[h] = [keep_odd_one], keep_odd_one.size
                self._add(h + 1, promoted)
            h += 1

    def quantile(self, q: float | np.ndarray) -> float | np.ndarray:
        """Quantile(s) with linear interpolation when exact; weighted ranks otherwise."""
        if self.count == 0:
            return np.full(np.shape(q), np.nan) if np.ndim(q) else float("nan")
        levels = self.levels
        if self.exact:
            return np.quantile(levels[0], q)
        values = np.concatenate(levels)
        weights = np.concatenate([np.full(lv.size, 2.0**h) for h, lv in enumerate(levels)])
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
        shifted._parts = [[np.abs(level - center)] for level in self.levels]
        shifted._sizes = [len(parts[0]) for parts in shifted._parts]
        shifted.count = self.count
        return float(shifted.quantile(q))
