"""Choosing the target and the feature columns of a table, with errors that say the fix.

Every table-like source (files, data frames, Arrow tables) goes through
:func:`select_columns`, so the rules are the same everywhere: names must be unique, the
target must exist and be numeric, and a non-numeric feature is an error unless the caller
asked to drop such columns, in which case the schema records them.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stablefit.errors import StablefitInputError, StablefitWarning
from stablefit.io.schema import DroppedColumn

# How many column names an error message lists before saying "and N more".
LISTED_NAMES = 20


# What pandas.read_csv names a column without a header (a row index written by to_csv,
# read back and written again).
PANDAS_UNNAMED = re.compile(r"Unnamed: \d+(\.\d+)?")  # ".1": pandas' second of a name


# What pandas.to_parquet names a row index without a name (any index but the default
# 0, 1, 2, …: after a sort, a sample or a filter).
PANDAS_PARQUET_INDEX = re.compile(r"__index_level_\d+__")


def is_unnamed(name: str) -> bool:
    """Whether a column has no name of its own: blank, or pandas' placeholder for one."""
    return (
        not name.strip()
        or PANDAS_UNNAMED.fullmatch(name) is not None
        or PANDAS_PARQUET_INDEX.fullmatch(name) is not None
    )


def unnamed_reason(name: str, position: int, *, last: bool = False) -> str:
    """Why a column without a name of its own is not a feature (``position`` 1-based;
    ``last``: it and every column after it are blank, as the empty columns a delimiter
    ending every line makes, one per delimiter)."""
    if last and position > 1 and not name.strip():
        return (
            f"column {position} has no name, as the empty column that a delimiter ending "
            "each line makes, which some spreadsheet exports write; give it a name to use it "
            "as a feature"
        )
    if PANDAS_PARQUET_INDEX.fullmatch(name):
        return (
            f"column {position} is the row index that pandas.to_parquet writes for a sorted, "
            "sampled or filtered frame unless index=False; rename it to use it as a feature"
        )
    if name.strip():
        return (
            f"column {position} has pandas' name for a column without one, as a row index "
            "written by pandas.to_csv (unless index=False) and read back; rename it to use "
            "it as a feature"
        )
    if position > 1:
        return (
            f"column {position} has no name, its header cell being empty; give it a name to "
            "use it as a feature"
        )
    return (
        f"column {position} has no name, as the row index that pandas.to_csv writes unless "
        "index=False; give it a name to use it as a feature"
    )


@dataclass(frozen=True)
class ColumnChoice:
    """What the caller asked for: the target, the feature columns, and what to drop.

    ``columns`` names the feature columns to read, in that order; every other column is
    ignored. Without it, every numeric column except the target and those in ``exclude``
    (weights and cluster columns, read on their own) is a feature.
    """

    target: str | None = None
    drop_non_numeric: bool = False
    columns: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selection:
    """Positions of the features and the target among a table's columns."""

    feature_positions: tuple[int, ...]
    target_position: int | None
    feature_names: tuple[str, ...]
    target_name: str | None
    dropped: tuple[DroppedColumn, ...]


def quote_names(names: Sequence[str], limit: int = LISTED_NAMES) -> str:
    """``'a', 'b' and 3 more`` for a list of column names."""
    shown = ", ".join(repr(name) for name in names[:limit])
    more = len(names) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def check_unique(names: Sequence[str], origin: str, *, blank_may_repeat: bool = False) -> None:
    """Raise when a column name appears more than once: a name must say which column.
    ``blank_may_repeat``: a table's columns without a name (never features, so never
    ambiguous) may be several, as the empty columns of a spreadsheet export."""
    positions: dict[str, list[int]] = {}
    for position, name in enumerate(names):
        if name.strip() or not blank_may_repeat:
            positions.setdefault(name, []).append(position)
    repeated = {name: where for name, where in positions.items() if len(where) > 1}
    if repeated:
        detail = "; ".join(
            f"{name!r} at positions {', '.join(str(p + 1) for p in where)}"
            for name, where in repeated.items()
        )
        raise StablefitInputError(
            f"{origin}: duplicate column names ({detail}); rename the columns so that each "
            "name is unique."
        )


def closest_name(wanted: str, names: Sequence[str]) -> str | None:
    """The column name the user probably meant: same letters in another case, or similar."""
    lowered = {name.lower(): name for name in names}
    if wanted.lower() in lowered:
        return lowered[wanted.lower()]
    close = difflib.get_close_matches(wanted, list(names), n=1, cutoff=0.6)
    return close[0] if close else None


def missing_target_error(target: str, names: Sequence[str], origin: str) -> StablefitInputError:
    """The error for a target name that is not a column, suggesting the closest one."""
    close = closest_name(target, names)
    hint = f" Did you mean {close!r}?" if close else ""
    return StablefitInputError(
        f"{origin}: no column named {target!r} to use as the target.{hint} "
        f"Available columns: {quote_names(list(names))}."
    )


def missing_columns_error(
    wanted: Sequence[str], names: Sequence[str], origin: str
) -> StablefitInputError:
    """The error for requested feature columns that the table lacks."""
    parts = []
    for name in wanted:
        close = closest_name(name, names)
        parts.append(repr(name) + (f" (did you mean {close!r}?)" if close else ""))
    return StablefitInputError(
        f"{origin}: missing column(s) {', '.join(parts)}. "
        f"Available columns: {quote_names(list(names))}."
    )


def select_columns(
    names: Sequence[str],
    numeric: Sequence[bool],
    choice: ColumnChoice,
    *,
    origin: str,
    describe: Callable[[int], str],
) -> Selection:
    """Split a table's columns into features and target.

    Parameters
    ----------
    names : sequence of str
        Column names in table order.
    numeric : sequence of bool
        Whether each column holds numbers (booleans count as numbers).
    choice : ColumnChoice
        The target (or None when the table holds features only), the feature columns to
        read (or None for all numeric ones), and whether to leave out non-numeric feature
        columns (recorded in ``dropped``) instead of raising.
    origin : str
        How the table is named in messages (a file path, ``"pandas DataFrame"``).
    describe : callable
        ``describe(position)`` says what a non-numeric column holds, e.g.
        ``"text such as 'abc'"``; only called to build error messages and drop reasons.

    Returns
    -------
    Selection

    Raises
    ------
    StablefitInputError
        Duplicate names, a missing or non-numeric target, missing requested columns,
        non-numeric features (unless dropped), or no feature column left.
    """
    check_unique(names, origin, blank_may_repeat=True)
    target, drop_non_numeric = choice.target, choice.drop_non_numeric
    target_position = None
    if target is not None:
        if target not in names:
            raise missing_target_error(target, names, origin)
        target_position = list(names).index(target)
        if not numeric[target_position]:
            raise StablefitInputError(
                f"{origin}: the target column {target!r} is not numeric "
                f"({describe(target_position)}); choose a numeric target column or convert "
                "its values to numbers."
            )
    # A name as given ('" x"' names the column ' x'), else without its spaces ('a, b').
    exclude = [
        name if name in names or name.strip() not in names else name.strip()
        for name in choice.exclude
    ]
    absent = [name for name in exclude if name not in names]
    if absent:
        raise missing_columns_error(absent, names, origin)
    if target is not None and target in exclude:
        warnings.warn(
            f"{origin}: {target!r} is the target, which is never a feature: excluding it "
            "changes nothing (was another column meant?)",
            StablefitWarning,
            stacklevel=2,
        )
    candidates = [p for p in range(len(names)) if p != target_position and names[p] not in exclude]
    if choice.columns is not None:
        absent = [name for name in choice.columns if name not in names]
        if absent:
            raise missing_columns_error(absent, names, origin)
        candidates = [list(names).index(name) for name in choice.columns]
        drop_non_numeric = False
    # A column without a name is the row index pandas.to_csv writes unless index=False:
    # 0, 1, 2, … as a feature would change the fit without anyone having asked for it.
    unnamed = [p for p in candidates if is_unnamed(names[p])] if choice.columns is None else []
    candidates = [p for p in candidates if p not in unnamed]
    text_columns = [p for p in candidates if not numeric[p]]
    if text_columns and not drop_non_numeric:
        detail = "; ".join(f"{names[p]!r}: {describe(p)}" for p in text_columns[:LISTED_NAMES])
        more = len(text_columns) - LISTED_NAMES
        fix = (
            "Convert them to numbers."
            if choice.columns is not None
            else "Convert them to numbers, or leave them out with drop_non_numeric=True "
            "(command line: --drop-non-numeric)."
        )
        raise StablefitInputError(
            f"{origin}: {len(text_columns)} feature column(s) are not numeric ({detail}"
            + (f"; and {more} more" if more > 0 else "")
            + f"). {fix}"
        )
    dropped = tuple(
        DroppedColumn(names[p], f"not numeric: {describe(p)}") for p in text_columns
    ) + tuple(
        DroppedColumn(
            names[p], unnamed_reason(names[p], p + 1, last=not "".join(names[p:]).strip())
        )
        for p in unnamed
    )
    features = tuple(p for p in candidates if numeric[p])
    if not features:
        left_out = [
            f"{quote_names(which)} {why}"
            for which, why in (
                (exclude, "excluded"),
                ([names[p] for p in text_columns], "dropped as non-numeric"),
                ([names[p] for p in unnamed], "left out as unnamed"),
            )
            if which
        ]
        raise StablefitInputError(
            f"{origin}: no feature columns"
            + (f" ({'; '.join(left_out)})" if left_out else "")
            + (f" besides the target {target!r}" if target is not None else "")
            + "; a fit needs at least one numeric feature column."
        )
    return Selection(
        feature_positions=features,
        target_position=target_position,
        feature_names=tuple(names[p] for p in features),
        target_name=target,
        dropped=dropped,
    )
