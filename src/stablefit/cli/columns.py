"""``--exclude COL[,COL]``: columns of the file that are not features."""

from __future__ import annotations

import argparse
import csv

from stablefit.errors import StablefitInputError


def add_exclude_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exclude",
        metavar="COL[,COL]",
        action="append",
        help="columns to leave out of the features (an empty or unwanted column); may be "
        "given more than once; a name holding a comma in double quotes: '\"a,b\",c'",
    )


def excluded_columns(args: argparse.Namespace) -> list[str]:
    """The names given to every ``--exclude`` (each option's list read as one CSV row, so
    that a quoted name may hold a comma), each checked to be a name. Spaces around a name
    are kept: the column ' x' is excluded by that name, and 'a, b' names b where the table
    has no column ' b' (:func:`stablefit.io.columns.select_columns`)."""
    names: list[str] = []
    for given in args.exclude or ():
        listed = next(csv.reader([given]), [])
        if not listed or not all(name.strip() for name in listed):
            raise StablefitInputError(
                f"--exclude {given!r}: name the columns separated by commas, e.g. "
                "--exclude notes,empty"
            )
        names += listed
    return list(dict.fromkeys(names))
