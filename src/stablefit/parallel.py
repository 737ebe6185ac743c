"""Work on consecutive batches in parallel threads, in order, with bounded memory.

NumPy releases the GIL inside its array operations, so per-batch work (summaries, the
double-double products of refinement) runs on several cores from plain threads. At most
``workers + 1`` batches are in flight, so reading a file stays bounded in memory.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

# Square problems of up to this many columns run on one BLAS thread.
ONE_THREAD_COLUMNS = 256

In = TypeVar("In")
Out = TypeVar("Out")


# Set inside an engine's task (one thread per task, as the engine schedules them).
_TASK_THREADS: ContextVar[int | None] = ContextVar("stablefit_task_threads", default=None)


@contextmanager
def task_threads(count: int) -> Iterator[None]:
    """Within this block, per-batch work of this thread uses ``count`` threads."""
    token = _TASK_THREADS.set(count)
    try:
        yield
    finally:
        _TASK_THREADS.reset(token)


def default_workers() -> int:
    """Threads to use: the cores this process may run on, or what a task was given."""
    given = _TASK_THREADS.get()
    if given is not None:
        return given
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def ordered_map(
    function: Callable[[In], Out], items: Iterable[In], *, workers: int | None = None
) -> Iterator[Out]:
    """``map(function, items)`` on a thread pool, results in input order."""
    workers = default_workers() if workers is None else workers
    if workers <= 1:
        yield from map(function, items)
        return
    # Each thread calls BLAS on its own block: BLAS's own threads would only compete.
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[Out]] = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def blas_threads_for(p: int) -> contextlib.AbstractContextManager[Any]:
    """One BLAS thread for the small dense problems (factorizations, eigen- and
    singular-value problems) of p columns.

    Below ONE_THREAD_COLUMNS, BLAS's own threads only add hand-offs, and on a busy machine
    their spin-waiting stalled a 101-column eigendecomposition for half a second, and the
    six 101-column singular-value decompositions of a fit's certificate for 0.8 s (8 ms on
    one thread).
    """
    if p <= ONE_THREAD_COLUMNS:
        return threadpool_limits(limits=1, user_api="blas")
    return contextlib.nullcontext()
