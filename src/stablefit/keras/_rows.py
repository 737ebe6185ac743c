"""Which rows of the user's data a step's bad rows are, without asking the user.

Keras hands a callback neither the data given to ``fit`` nor where a batch's rows came
from. The guard names them in two exact ways, neither bringing anything to the host at
a step:

- **Arrays** (NumPy, pandas, or dicts, lists and tuples of them) given to ``fit``, or to
  ``NanGuard(data=...)``: a bad row's values are looked up among the rows of the arrays
  that hold NaN or inf (found once, at the first data event). Keras's shuffling does not
  matter; rows with identical values are named together.
- **Streams**: the compiled step counts the steps and rows it was fed, on the device (see
  :class:`~stablefit.keras._step.GuardCounters`). A ``keras.utils.PyDataset`` names a row
  as "row p of dataset[k]": ``k`` is the index Keras asked the dataset for at that step
  (the guard notes the order of Keras's requests, so ``fit``'s shuffling of the batches
  does not matter); read by worker threads, a batch's bad rows are noted as they are
  fetched and found again by their values; read by worker processes, the step's place in
  the epoch when ``fit`` reads the dataset in order (``shuffle=False``). A tf.data
  dataset or a generator marked with :func:`checked` names it by its place in the
  stream: the rows read before its batch plus its position in it.

:func:`fit_arguments` reads ``fit``'s arguments (never changing them) from the frame of
Keras's own running ``Model.fit`` of the guarded model: Keras offers callbacks no other
way to see them. When it finds none (a custom training loop), or the input is a stream
not marked with :func:`checked`, a data event names the rows' positions in the batch and
says why it cannot name them in the data (:attr:`RowNamer.unnamed`). A row found by its
values in several batches fetched by worker threads is named with each candidate batch,
never as one of them.
"""

from __future__ import annotations

import inspect
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stablefit.guard.core import row_list

#: How many batches with bad rows a PyDataset read by worker threads is remembered by.
NOTED_BATCHES = 1024
#: Streams marked with :func:`checked`, and the feature names given with them.
_CHECKED: weakref.WeakKeyDictionary[Any, tuple[str, ...] | None] = weakref.WeakKeyDictionary()


def checked(dataset: Any, *, feature_names: Sequence[str] | None = None) -> Any:
    """Mark a tf.data dataset or a Python generator so ``NanGuard`` names its bad rows.

    The guard's compiled step counts the rows it is fed; for a dataset marked here, a
    data event names each bad row by its place in the stream: "row 1037 of the dataset"
    is the 1038th row that ``fit`` read since the start of the epoch (a tf.data dataset,
    which Keras reads from its start each epoch), or since ``fit`` began (a generator, or
    any dataset when ``steps_per_epoch`` is given, as Keras then reads on across epochs).
    That is the row's index in your data when the dataset reads the data in order: mark
    the dataset you pass to ``fit``, and shuffle (if at all) where the row numbers no
    longer matter to you. Marking costs nothing: the dataset is returned unchanged.

    NumPy arrays, pandas frames and a ``keras.utils.PyDataset`` read in order need no
    marking: the guard names their rows itself.

    Parameters
    ----------
    dataset : tf.data.Dataset or generator
        What you pass to ``model.fit``, yielding ``(x, y)`` or ``(x, y, sample_weight)``.
    feature_names : sequence of str or None
        Names of the input columns, for the guard's data events.

    Returns
    -------
    The same ``dataset``, marked.

    Examples
    --------
    >>> import keras, numpy as np, tensorflow as tf
    >>> from stablefit.keras import NanGuard, checked
    >>> x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    >>> y = x.sum(axis=1)
    >>> x[37, 1] = np.nan
    >>> dataset = tf.data.Dataset.from_tensor_slices((x, y))
    >>> batches = checked(dataset.batch(32), feature_names=["age", "income"])
    >>> model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> guard = NanGuard()
    >>> history = model.fit(batches, epochs=1, callbacks=[guard], verbose=0)
    >>> [(event.cause, event.rows, event.columns) for event in guard.events]
    [('data', (37,), ('income',))]
    """
    from stablefit.errors import StablefitInputError

    if _is_array_input(dataset) or _is_py_dataset(dataset):
        raise StablefitInputError(
            f"stablefit.keras.checked({type(dataset).__name__}): NanGuard names the rows of "
            "arrays, DataFrames and a keras.utils.PyDataset (read with shuffle=False) by "
            "itself; pass them to fit as they are. checked() is for a tf.data dataset or a "
            "generator."
        )
    if not (inspect.isgenerator(dataset) or _is_tf_dataset(dataset)):
        raise StablefitInputError(
            f"stablefit.keras.checked({type(dataset).__name__}): expected a tf.data dataset "
            "or a Python generator yielding (x, y) batches."
        )
    _CHECKED[dataset] = None if feature_names is None else tuple(str(n) for n in feature_names)
    return dataset


@dataclass(frozen=True)
class FitArguments:
    """What ``Model.fit`` was called with (only what naming rows needs)."""

    x: Any
    y: Any = None
    sample_weight: Any = None
    class_weight: Any = None
    shuffle: Any = True
    steps_per_epoch: int | None = None
    #: Keras's data adapter of this ``fit`` (what it reads the batches from), if found.
    adapter: Any = None
    #: ``validation_data`` as ``fit`` holds it (after ``validation_split`` took its part).
    validation_data: Any = None
    validation_split: float = 0.0
    #: The callbacks of this ``fit`` (a ``keras.callbacks.CallbackList`` once it made one).
    callbacks: Any = None


def fit_arguments(model: Any) -> FitArguments | None:
    """The arguments of the running ``fit`` of ``model``, or None outside one.

    Read from the innermost frame of a ``fit`` defined in Keras whose ``self`` is
    ``model`` (a subclass's own ``fit`` that calls ``super().fit`` is passed over, so what
    is read is what Keras itself iterates, after ``validation_split`` took its part).
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            names = frame.f_locals
            if (
                frame.f_code.co_name == "fit"
                and str(frame.f_globals.get("__name__", "")).startswith("keras.")
                and names.get("self") is model
            ):
                iterator = names.get("epoch_iterator")
                return FitArguments(
                    x=names.get("x"),
                    y=names.get("y"),
                    sample_weight=names.get("sample_weight"),
                    class_weight=names.get("class_weight"),
                    shuffle=names.get("shuffle", True),
                    steps_per_epoch=names.get("steps_per_epoch"),
                    adapter=getattr(iterator, "data_adapter", None),
                    validation_data=names.get("validation_data"),
                    validation_split=names.get("validation_split") or 0.0,
                    callbacks=names.get("callbacks"),
                )
            frame = frame.f_back
        return None
    finally:
        del frame


@dataclass(frozen=True)
class Located:
    """Where a batch's bad rows are in the user's data, as far as the guard knows."""

    rows: tuple[int, ...] = ()
    where: str | None = None  # the event's words for them, when not "rows ... of the data"
    evidence: dict[str, Any] = field(default_factory=dict)


class RowNamer:
    """Names a batch's bad rows; the base names none (their positions in the batch).

    ``unnamed``: why a row is not named in the user's data, and how to have it named.
    """

    feature_names: tuple[str, ...] | None = None
    unnamed = "fit's data were not found; NanGuard(data=(x, y)) names rows by their values in x, y"

    def __init__(self, unnamed: str | None = None) -> None:
        if unnamed is not None:
            self.unnamed = unnamed

    def locate(self, report: Any, positions: np.ndarray) -> Located:
        return Located()

    def in_batch(self, positions: Sequence[int]) -> str:
        """Words for rows not named in the data: their positions in the batch, and why."""
        return (
            f"{_plural('row', positions)} {row_list(positions)} of its batch (not named in "
            f"your data: {self.unnamed})"
        )

    def close(self) -> None:
        """Undo what naming needed while ``fit`` ran (at its end)."""


class ArrayRows(RowNamer):
    """Rows of in-memory arrays, found by their values among the arrays' bad rows."""

    unnamed = "their values are not among the rows of the arrays given"

    def __init__(self, x: Any, y: Any = None, sample_weight: Any = None) -> None:
        self._parts = [*_leaves(x), *_leaves(y)]
        self._weights = _leaves(sample_weight)
        self._index = x.index if type(x).__module__.startswith("pandas") else None
        self.feature_names = _column_names(x)
        self._table: dict[bytes, list[int]] | None = None

    def locate(self, report: Any, positions: np.ndarray) -> Located:
        batch = [*report.inputs, *report.targets]
        if len(batch) != len(self._parts):
            return Located()
        dtypes = [np.asarray(a).dtype for a in batch]
        table = self._bad_rows(dtypes)
        found: set[int] = set()
        for position in positions:
            rows = table.get(row_key(batch, int(position)))
            found.update(self._equal_rows(batch, int(position), dtypes) if rows is None else rows)
        rows = tuple(sorted(found))
        if not rows:
            return Located()
        where = f"{_plural('row', rows)} {row_list(rows)} of the data"
        evidence = {}
        if self._index is not None and not _is_positions(self._index):
            labels = [_plain(self._index[r]) for r in rows]
            evidence["index_labels"] = labels
            where += f" (index {row_list(labels)})"
        return Located(rows=rows, where=where, evidence=evidence)

    def _equal_rows(self, batch: list[Any], position: int, dtypes: list[np.dtype]) -> list[int]:
        """The rows of the arrays equal to the batch's row at ``position``: a row bad for
        finite values (extreme ones), not among the rows with NaN or inf. One pass over
        the arrays, at an event."""
        equal = None
        for part, value, dtype in zip(self._parts, batch, dtypes, strict=True):
            values = np.asarray(_as_numpy(part), dtype=dtype if dtype.kind == "f" else None)
            row = np.asarray(value)[position]
            same = (values.reshape(len(values), -1) == row.reshape(1, -1)).all(axis=1)
            equal = same if equal is None else equal & same
        return [] if equal is None else [int(r) for r in np.flatnonzero(equal)]

    def _bad_rows(self, dtypes: list[np.dtype]) -> dict[bytes, list[int]]:
        """Each bad row's key (at the batch's dtypes) -> its indices; built once."""
        if self._table is None:
            parts = [
                np.asarray(_as_numpy(part), dtype=dtype if dtype.kind == "f" else None)
                for part, dtype in zip(self._parts, dtypes, strict=True)
            ]
            bad = np.zeros(len(parts[0]), dtype=bool)
            for part in [*parts, *(_as_numpy(w) for w in self._weights)]:
                if part.dtype.kind == "f":
                    bad |= ~np.isfinite(part.reshape(len(part), -1)).all(axis=1)
            table: dict[bytes, list[int]] = {}
            for index in np.flatnonzero(bad):
                table.setdefault(row_key(parts, int(index)), []).append(int(index))
            self._table = table
        return self._table


class PyDatasetRows(RowNamer):
    """Rows of a ``keras.utils.PyDataset``: "row p of dataset[k]".

    With ``adapter`` (Keras's reader of the dataset in this ``fit``, fetching in the
    training process without workers of its own), the dataset it reads is replaced, until
    :meth:`close`, by a :class:`_RequestOrder` that notes each index asked for in the
    epoch: step ``s`` of the epoch trained on ``dataset[order[s]]`` whatever the
    shuffling. Without it the dataset must be read in order: ``k = s``.
    """

    unnamed = "the dataset index of the batch was not noted"

    def __init__(self, adapter: Any = None) -> None:
        self._adapter = adapter
        self._order: _RequestOrder | None = None
        if adapter is not None:
            self._order = _RequestOrder(adapter.py_dataset)
            adapter.py_dataset = self._order

    def locate(self, report: Any, positions: np.ndarray) -> Located:
        step = report.step_in_epoch
        k = self._order.index_at(step) if self._order is not None else step
        if k is None or k < 0:
            return Located()
        pairs = [(k, int(p)) for p in positions]
        return Located(
            where=f"{_plural('row', pairs)} {row_list(p for _, p in pairs)} of dataset[{k}]",
            evidence={"dataset_rows": [list(pair) for pair in pairs]},
        )

    def close(self) -> None:
        if self._order is not None and self._adapter.py_dataset is self._order:
            self._adapter.py_dataset = self._order.dataset


class _RequestOrder:
    """A ``PyDataset`` as Keras's adapter sees it, noting the indices asked for per epoch.

    Keras fetches one epoch's batches in the order it trains on them (prefetching keeps
    the order); the dataset's ``on_epoch_begin``, which Keras calls before the epoch's
    first fetch, starts a new list.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self._indices: list[int] = []

    def __getitem__(self, index: int) -> Any:
        self._indices.append(int(index))  # one append: safe from Keras's fetching thread
        return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dataset, name)

    def on_epoch_begin(self) -> None:
        self._indices = []
        self.dataset.on_epoch_begin()

    def index_at(self, step: int) -> int | None:
        indices = self._indices
        return indices[step] if 0 <= step < len(indices) else None


class FetchedBadRows(RowNamer):
    """Rows of a ``keras.utils.PyDataset`` read by worker threads: "row p of dataset[k]".

    The threads fetch batches ahead and in any order, so the step does not say which
    index it trained on. Instead, until :meth:`close`, the dataset the workers read is
    replaced by a :class:`_BadRowsNoted`, which keeps each fetched batch's rows holding a
    NaN or inf with their index; a step's bad rows are found among them by their values.
    """

    unnamed = f"the batch was fetched more than {NOTED_BATCHES} batches with bad rows ago"

    def __init__(self, adapter: Any) -> None:
        self._adapter = adapter
        self._noted = _BadRowsNoted(adapter.py_dataset)
        adapter.py_dataset = adapter.enqueuer.py_dataset = self._noted

    def locate(self, report: Any, positions: np.ndarray) -> Located:
        batch = [*report.inputs, *report.targets]
        dtypes = [np.asarray(a).dtype for a in batch]
        wanted = {row_key(batch, int(p)): int(p) for p in positions}
        pairs = sorted(
            {
                (index, wanted_at)
                for index, at, rows in self._noted.snapshot()
                if len(rows) == len(batch)
                for i, p in enumerate(at)
                if (wanted_at := wanted.get(row_key(_cast(rows, dtypes), i))) is not None
                and wanted_at == p
            }
        )
        if not pairs:
            return Located()
        indices = sorted({k for k, _ in pairs})
        if len(indices) > 1:
            # Rows of the same values at the same place in several batches fetched: which
            # of them this step trained on is not known, and none is named as if it were.
            at = sorted({p for _, p in pairs})
            batches = " or ".join(f"dataset[{k}]" for k in indices[:4])
            return Located(
                where=f"{_plural('row', at)} {row_list(at)} of {batches} (batches holding "
                "rows of the same values there)",
                evidence={"dataset_rows_candidates": [list(pair) for pair in pairs]},
            )
        k = indices[0]
        return Located(
            where=f"{_plural('row', pairs)} {row_list(p for _, p in pairs)} of dataset[{k}]",
            evidence={"dataset_rows": [list(pair) for pair in pairs]},
        )

    def close(self) -> None:
        adapter, noted = self._adapter, self._noted
        if adapter.py_dataset is noted:
            adapter.py_dataset = noted.dataset
        if getattr(adapter.enqueuer, "py_dataset", None) is noted:
            adapter.enqueuer.py_dataset = noted.dataset


class _BadRowsNoted:
    """A ``PyDataset`` as Keras's worker threads see it, noting the fetched batches' rows
    that hold a NaN or inf: (index, their positions, their values), the latest
    ``NOTED_BATCHES``. (Not reset at an epoch's start: the workers start fetching before
    the dataset hears of it.)"""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self._noted: deque[tuple[int, list[int], list[np.ndarray]]] = deque(maxlen=NOTED_BATCHES)

    def __getitem__(self, index: int) -> Any:
        batch = self.dataset[index]
        parts, weights = _batch_parts(batch)
        bad = None
        for part in [*parts, *weights]:
            if part.dtype.kind == "f" and part.ndim >= 1:
                rows = ~np.isfinite(part.reshape(len(part), -1)).all(axis=1)
                bad = rows if bad is None else bad | rows
        if bad is not None and bad.any():
            at = np.flatnonzero(bad)
            # One append: safe from several fetching threads.
            self._noted.append((int(index), at.tolist(), [part[at] for part in parts]))
        return batch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dataset, name)

    def snapshot(self) -> list[tuple[int, list[int], list[np.ndarray]]]:
        return list(self._noted)


def _batch_parts(batch: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A PyDataset batch's inputs and targets, and its sample weights, as arrays (the
    forms Keras accepts: a dict of inputs, an array, or a tuple of one to three)."""
    if isinstance(batch, dict):
        return [_as_numpy(leaf) for leaf in _leaves(batch)], []
    if isinstance(batch, np.ndarray):
        batch = (batch,)
    items = list(batch)
    weights = _leaves(items[2]) if len(items) == 3 else []
    parts = [_as_numpy(leaf) for item in items[:2] for leaf in _leaves(item)]
    return parts, [_as_numpy(w) for w in weights]


def _cast(rows: list[np.ndarray], dtypes: list[np.dtype]) -> list[np.ndarray]:
    """Noted rows at the dtypes the step had (Keras may cast float64 to float32)."""
    return [
        r.astype(d) if d.kind == "f" and r.dtype != d else r
        for r, d in zip(rows, dtypes, strict=True)
    ]


class StreamRows(RowNamer):
    """Rows of a stream marked with :func:`checked`, counted by the compiled step."""

    unnamed = "the count of rows read overflowed"

    def __init__(self, feature_names: tuple[str, ...] | None, *, per_epoch: bool) -> None:
        self.feature_names = feature_names
        self.per_epoch = per_epoch

    def locate(self, report: Any, positions: np.ndarray) -> Located:
        before = report.rows_before[0 if self.per_epoch else 1]
        if before < 0:
            return Located()  # the int32 count overflowed
        rows = tuple(before + int(p) for p in positions)
        since = "the start of the epoch" if self.per_epoch else "the start of training"
        return Located(
            rows=rows,
            where=f"{_plural('row', rows)} {row_list(rows)} of the dataset (counted from {since})",
        )


def row_namer(arguments: FitArguments | None, data: tuple[Any, Any] | None) -> RowNamer:
    """How to name bad rows for what ``fit`` was given (``data`` from ``NanGuard(data=)``)."""
    if data is not None:
        return ArrayRows(data[0], data[1])
    if arguments is None:
        return RowNamer()
    x = arguments.x
    if _is_array_input(x):
        return ArrayRows(x, arguments.y, arguments.sample_weight)
    if _is_py_dataset(x):
        adapter = arguments.adapter
        mid_way = RowNamer(
            "with steps_per_epoch an epoch may start mid-way through the PyDataset; fit "
            "without it to have rows named"
        )
        if getattr(adapter, "py_dataset", None) is x and getattr(adapter, "enqueuer", 1) is None:
            return PyDatasetRows(adapter) if arguments.steps_per_epoch is None else mid_way
        enqueuer = getattr(adapter, "enqueuer", None)
        if (
            getattr(adapter, "py_dataset", None) is x
            and getattr(enqueuer, "py_dataset", None) is x
            and not getattr(x, "use_multiprocessing", True)
            and not getattr(enqueuer, "running", False)
        ):
            return FetchedBadRows(adapter)
        if arguments.steps_per_epoch is not None:
            return mid_way
        if not arguments.shuffle or getattr(x, "num_batches", None) is None:
            return PyDatasetRows()  # read in order by the worker processes
        return RowNamer(
            "worker processes fetched the PyDataset's batches in an order shuffled where the "
            "guard cannot see it; fit with shuffle=False, or use_multiprocessing=False "
            "(worker threads), to have rows named"
        )
    try:
        names = _CHECKED.get(x, ...)
    except TypeError:  # not weakly referenceable: never marked
        names = ...
    if names is ...:
        return RowNamer(
            "mark a tf.data dataset or generator with stablefit.keras.checked(dataset) to "
            "have rows named by their place in it"
        )
    per_epoch = _is_tf_dataset(x) and arguments.steps_per_epoch is None
    return StreamRows(names, per_epoch=per_epoch)


def row_key(parts: Sequence[np.ndarray], index: int) -> bytes:
    """A row's values as bytes, equal for equal values (every NaN alike, -0.0 as 0.0).

    Floats are compared at the dtype the batch had (the caller casts the data to it).
    """
    pieces = []
    for part in parts:
        value = np.asarray(part[index])
        if value.dtype.kind == "f":
            value = np.where(np.isnan(value), np.nan, value.astype(np.float64) + 0.0)
        elif value.dtype.kind in "biu":
            value = value.astype(np.int64)
        elif value.dtype.kind == "O":
            # Strings from TensorFlow come as objects, whose bytes are their addresses.
            pieces.append(repr(value.tolist()).encode())
            continue
        pieces.append(np.ascontiguousarray(value).tobytes())
    return b"\0".join(pieces)


def _plural(word: str, items: Sequence[Any]) -> str:
    return word if len(items) == 1 else word + "s"


def _leaves(structure: Any) -> list[Any]:
    if structure is None:
        return []
    if isinstance(structure, dict):
        return [leaf for key in sorted(structure) for leaf in _leaves(structure[key])]
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in _leaves(item)]
    return [structure]


def _as_numpy(array: Any) -> np.ndarray:
    to_numpy = getattr(array, "to_numpy", None)  # pandas, polars
    return np.asarray(to_numpy() if callable(to_numpy) else array)


def _is_array_input(x: Any) -> bool:
    leaves = _leaves(x)
    return bool(leaves) and all(
        isinstance(leaf, np.ndarray) or type(leaf).__module__.startswith("pandas")
        for leaf in leaves
    )


def _column_names(x: Any) -> tuple[str, ...] | None:
    names = getattr(x, "column_names", None)  # Arrow
    if names is None and type(x).__module__.startswith("pandas"):
        names = getattr(x, "columns", None)
    return None if names is None else tuple(str(n) for n in names)


def _is_positions(index: Any) -> bool:
    """Whether a pandas index is 0, 1, 2, ... (its labels are the rows' positions)."""
    return type(index).__name__ == "RangeIndex" and index.start == 0 and index.step == 1


def _plain(label: Any) -> Any:
    """An index label as a JSON value (a timestamp, say, as its text)."""
    value = label.item() if hasattr(label, "item") else label
    return value if isinstance(value, (int, float, str)) else str(value)


def _is_py_dataset(x: Any) -> bool:
    return any(
        c.__name__ == "PyDataset" and c.__module__.startswith("keras") for c in type(x).__mro__
    )


def _is_tf_dataset(x: Any) -> bool:
    return any(c.__name__ == "DatasetV2" and "tensorflow" in c.__module__ for c in type(x).__mro__)
