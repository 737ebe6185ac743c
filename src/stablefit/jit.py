"""Kernels that numba compiles (or loads from its cache) only once the work pays for it.

Loading numba and its cached machine code costs a process about 0.35 s, most of it
numba setting up its compiler, more than a command spends on a file of a few thousand
rows. A :func:`kernel` is therefore its plain Python function until the calls run as
Python would have done more than ``SMALL_WORK`` (deterministically, from the sizes of
their arguments): from then on numba is loaded and every call runs compiled. Run as
Python, a kernel computes with NumPy scalars, so float32 stays float32 as in numba, and
under ``np.errstate(all="ignore")``, so a division by zero gives ``inf`` or ``NaN`` and
unsigned integers wrap around, as numba's ``error_model="numpy"`` does. The kernels it
calls run as Python too. An :func:`intrinsic` (a few LLVM instructions) has a Python
function for that.

Numba's compiled code is cached beside each module (``cache=True``), so only the first
process after an install compiles it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

# The work that kernels may do as Python before numba is loaded: array elements, unless a
# kernel estimates its own, at a few microseconds of Python each. A doctor's forecast on
# a file of a few rows takes about 70,000 (0.1 s); loading numba costs 0.35 s or more.
SMALL_WORK = 100_000

_numba: Any = None
_state = threading.local()
_lock = threading.Lock()
_work_run_as_python = 0
# True or False while :func:`forced` holds: every call in every thread runs so.
_forced: bool | None = None


def _load_numba() -> Any:
    global _numba
    if _numba is None:
        import numba

        _numba = numba
    return _numba


def _size(args: tuple) -> int:
    total = 0
    for arg in args:
        if isinstance(arg, np.ndarray):
            total += arg.size
        elif isinstance(arg, tuple):
            total += _size(arg)
    return total


def _as_python(args: tuple, work: Callable | None) -> bool:
    """Whether this call runs as Python: numba is not loaded and the work is small."""
    global _work_run_as_python
    if _forced is not None:
        return _forced
    if getattr(_state, "depth", 0):  # called from a kernel running as Python
        return True
    if _numba is not None:
        return False
    with _lock:
        total = _work_run_as_python + (_size(args) if work is None else work(*args))
        if total > SMALL_WORK:
            return False
        _work_run_as_python = total
    return True


def _run_as_python(function: Callable, args: tuple) -> Any:
    depth = getattr(_state, "depth", 0)
    if depth:  # inside a kernel run as Python: its error state holds
        return function(*args)
    _state.depth = 1
    try:
        with np.errstate(all="ignore"):
            return function(*args)
    finally:
        _state.depth = 0


class Kernel:
    """A function compiled by ``numba.njit(**options)`` when first needed compiled.

    ``work(*args)``, if given, estimates a call's work as Python (default: the number of
    array elements among the arguments).
    """

    def __init__(
        self, function: Callable, options: dict[str, Any], work: Callable | None = None
    ) -> None:
        functools.update_wrapper(self, function)
        self.python = function
        self.options = options
        self.work = work
        self._compiled: Any = None

    @property
    def compiled(self) -> Any:
        """The numba dispatcher (loads numba)."""
        if self._compiled is None:
            self._compiled = _load_numba().njit(**self.options)(self.python)
        return self._compiled

    @property
    def _numba_type_(self) -> Any:
        # How numba types this object where a compiled kernel calls it.
        return self.compiled._numba_type_

    def __call__(self, *args: Any) -> Any:
        if _as_python(args, self.work):
            return _run_as_python(self.python, args)
        return self.compiled(*args)


class Intrinsic:
    """LLVM code for compiled kernels (``numba.extending.intrinsic``), a Python function
    for kernels run as Python."""

    def __init__(self, definition: Callable, python: Callable) -> None:
        functools.update_wrapper(self, definition)
        self.definition = definition
        self.python = python
        self._compiled: Any = None

    @property
    def _numba_type_(self) -> Any:
        if self._compiled is None:
            from numba.extending import intrinsic as numba_intrinsic

            self._compiled = numba_intrinsic(self.definition)
        from numba.core.registry import cpu_target

        context = cpu_target.typing_context
        context.refresh()  # takes in the template the intrinsic registered
        return context.resolve_value_type(self._compiled)

    def __call__(self, *args: Any) -> Any:
        return self.python(*args)


def kernel(*, work: Callable | None = None, **options: Any) -> Callable[[Callable], Kernel]:
    """Decorator: ``numba.njit(**options)``, compiled only when the work pays for it;
    ``work`` estimates a call's work as Python (see :class:`Kernel`)."""
    return lambda function: Kernel(function, options, work)


def intrinsic(python: Callable) -> Callable[[Callable], Intrinsic]:
    """Decorator: ``numba.extending.intrinsic``, with ``python`` for kernels run as Python."""
    return lambda definition: Intrinsic(definition, python)


@contextlib.contextmanager
def forced(as_python: bool) -> Iterator[None]:
    """Within the block, every kernel call runs as Python (or compiled), whatever its size:
    to compare the two."""
    global _forced
    _forced = as_python
    try:
        yield
    finally:
        _forced = None


def compiled_kernels_loaded() -> bool:
    """Whether numba is loaded (every kernel call then runs compiled)."""
    return _numba is not None
