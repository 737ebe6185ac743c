"""Where the generators' choices come from: hypothesis, or a seeded NumPy generator.

The structure-aware generators in :mod:`tests.fuzz.strategies` are written once against
:class:`Choices`. Hypothesis drives them for the targets worth shrinking (a failure comes
back as a minimal file); :class:`SeededChoices` drives them for the bulk of the cases, at a
fraction of hypothesis's cost per example (about 10 ms of bookkeeping each), from a fixed
seed so that CI runs the same cases every time and a failing case is named by its number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np
from hypothesis import strategies as st

T = TypeVar("T")


class Choices(Protocol):
    def integer(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``, both included."""

    def choice(self, options: Sequence[T]) -> T:
        """One of ``options`` (the first ones are the simplest: hypothesis shrinks to them)."""

    def text(self, alphabet: str, max_size: int) -> str:
        """Up to ``max_size`` characters of ``alphabet``."""

    def binary(self, min_size: int, max_size: int) -> bytes:
        """Between ``min_size`` and ``max_size`` arbitrary bytes."""

    def double(self) -> float:
        """Any float64: NaN, infinities, subnormals, negative zero, every exponent."""


class HypothesisChoices:
    """Choices drawn by hypothesis (in an ``@st.composite`` strategy): they shrink."""

    def __init__(self, draw: Callable[[st.SearchStrategy[T]], T]) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def text(self, alphabet: str, max_size: int) -> str:
        return self.draw(st.text(alphabet, max_size=max_size))

    def binary(self, min_size: int, max_size: int) -> bytes:
        return self.draw(st.binary(min_size=min_size, max_size=max_size))

    def double(self) -> float:
        return self.draw(st.floats(allow_nan=True, allow_infinity=True))


WORDS_PER_REFILL = 4096


class SeededChoices:
    """Choices from NumPy's generator seeded with ``seed``: the same seed, the same case.

    Random 32-bit words are drawn from NumPy in blocks and handed out one by one (a
    scalar call into NumPy costs microseconds; a file takes hundreds of choices).
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.words: list[int] = []

    def word(self) -> int:
        if not self.words:
            self.words = self.rng.integers(0, 2**32, WORDS_PER_REFILL, dtype=np.uint64).tolist()
        return self.words.pop()

    def integer(self, low: int, high: int) -> int:
        span = high - low + 1
        value = self.word()
        bits = 32
        while (1 << bits) < span << 8:  # enough bits that the modulo's bias is below 1/256
            value = value << 32 | self.word()
            bits += 32
        return low + value % span

    def choice(self, options: Sequence[T]) -> T:
        return options[self.integer(0, len(options) - 1)]

    def text(self, alphabet: str, max_size: int) -> str:
        return "".join(self.choice(alphabet) for _ in range(self.integer(0, max_size)))

    def binary(self, min_size: int, max_size: int) -> bytes:
        return bytes(self.integer(0, 255) for _ in range(self.integer(min_size, max_size)))

    def double(self) -> float:
        kind = self.integer(0, 3)
        if kind == 0:  # any bit pattern: every exponent, subnormals, NaN payloads
            return float(np.uint64(self.word() << 32 | self.word()).view(np.float64))
        if kind == 1:
            return self.choice([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1.7976931348623157e308])
        if kind == 2:
            return float(self.integer(-(2**53), 2**53))
        mantissa = self.integer(-(2**53), 2**53) / 2**53
        return mantissa * 10.0 ** self.integer(-30, 30)
