"""``--exclude COL[,COL]``: columns of the file that are not features."""

from __future__ import annotations

import argparse

from stablefit.errors import StablefitInputError


def add_exclude_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exclude",
        metavar="COL[,COL]",
        help="columns to leave out of the features (an empty or unwanted column)",
    )


def excluded_columns(args: argparse.Namespace) -> list[str]:
    """The names given to ``--exclude``, each checked to be a name."""
    if args.exclude is None:
        return []
    names = [name.strip() for name in args.exclude.split(",")]
    if not all(names):
        raise StablefitInputError(
            f"--exclude {args.exclude!r}: name the columns separated by commas, e.g. "
            "--exclude notes,empty"
        )
    return names
