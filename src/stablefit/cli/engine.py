"""Where a command reads its data (``--scheduler``, ``--workers``) and its progress bars.

Dask is imported only when one of the two options is given, so the commands start as fast
without it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from stablefit.errors import StablefitInputError
from stablefit.io import Source
from stablefit.progress import Progress, ProgressSource, RichProgress

# Seconds to wait for an existing scheduler to answer.
CONNECT_TIMEOUT = 10


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--scheduler`` / ``--workers`` and ``--progress``."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="read the data on an existing Dask cluster (its scheduler's address, e.g. "
        "tcp://10.0.0.5:8786); the files must be at the same path on every worker",
    )
    where.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="read the data on a local Dask cluster of N worker processes",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )


@dataclass
class Run:
    """Where a command reads: ``engine`` (None: this process) and its ``progress``."""

    engine: Any
    progress: Progress | None

    def watch(self, source: Source) -> Source:
        """The source, reporting each pass to the progress bars when it is read here."""
        if self.progress is None or self.engine is not None:
            return source
        return ProgressSource(source, self.progress)


@contextlib.contextmanager
def run_for(args: argparse.Namespace) -> Iterator[Run]:
    """The engine and progress bars the options ask for, closed at the end."""
    console = Console(stderr=True)
    wanted = console.is_terminal if args.progress is None else args.progress
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(RichProgress(console)) if wanted else None
        engine = None
        if args.scheduler is not None or args.workers is not None:
            engine = stack.enter_context(dask_engine(args, progress))
            if "dashboard" in engine.client.scheduler_info().get("services", {}):
                link = engine.client.dashboard_link
                console.print(f"Dask dashboard: {link}", highlight=False, soft_wrap=True)
        yield Run(engine, progress)


@contextlib.contextmanager
def dask_engine(args: argparse.Namespace, progress: Progress | None) -> Iterator[Any]:
    try:
        from distributed import Client, LocalCluster

        from stablefit.engines.dask import DaskEngine
    except ImportError:
        raise StablefitInputError(
            "--scheduler and --workers need Dask: pip install 'stablefit[dask]'."
        ) from None
    with contextlib.ExitStack() as stack:
        if args.workers is not None:
            if args.workers < 1:
                raise StablefitInputError(f"--workers {args.workers}: give 1 or more workers.")
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=args.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    # A partition's bad data is the command's one-line error, not a log.
                    silence_logs=logging.CRITICAL,
                )
            )
            client = stack.enter_context(Client(cluster, set_as_default=False))
        else:
            try:
                client = stack.enter_context(
                    Client(args.scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
                )
            except (OSError, TimeoutError, ValueError) as error:
                raise StablefitInputError(
                    f"--scheduler {args.scheduler}: cannot reach a Dask scheduler there "
                    f"({error}); start one with 'dask scheduler' or check the address."
                ) from None
        yield DaskEngine(client, progress)
