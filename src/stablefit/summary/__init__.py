"""One-pass, mergeable statistics: the Summary every later stage reads."""

from stablefit.summary.core import Summary, summarize
from stablefit.summary.sketch import QuantileSketch

__all__ = ["QuantileSketch", "Summary", "summarize"]
