"""What the checks share: their options, and how they name columns and rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stablefit.summary import Summary

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class CheckOptions:
    """The training setting the checks judge the data against.

    ``dtype`` is the precision the model trains in (float32 by default in Keras and
    PyTorch), ``batch_size`` the rows per gradient step, ``intercept`` whether the model
    has a bias (``Dense`` and ``nn.Linear`` have one by default) and ``framework`` whose
    code a fix is written in (``"keras"`` or ``"torch"``).
    """

    dtype: str = "float32"
    batch_size: int = 32
    intercept: bool = True
    framework: str = "keras"

    @property
    def finfo(self) -> np.finfo:
        return np.finfo(np.dtype(self.dtype))


def feature_indices(summary: Summary) -> range:
    return range(summary.n_features)


def target_index(summary: Summary) -> int | None:
    return summary.n_features if summary.has_target else None


def column_kind(summary: Summary, j: int) -> str:
    return "target" if j == target_index(summary) else "feature"


def join_names(names: Sequence[str], *, limit: int = 5) -> str:
    """``"x1, x2 and x3"``; beyond ``limit`` names, ``"x1, x2, ... and 7 more"``."""
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" and {len(names) - limit} more"
    return ", ".join(names[:-1]) + f" and {names[-1]}"


def plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else (words or word + 's')}"
