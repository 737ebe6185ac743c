"""``stablefit doctor``: placeholder until its command lands."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add nothing yet."""
