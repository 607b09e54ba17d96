"""Progress bars for long work (calibration, evaluation, export, conversion, training).

Rich draws to stderr so that stdout stays clean for tables and JSON. Bars are
disabled automatically when stderr is not a terminal unless EDGESEG_PROGRESS=1.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def _enabled() -> bool:
    env = os.environ.get("EDGESEG_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def track(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (or silently when progress is off)."""
    if not _enabled():
        yield from iterable
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.console import Console

    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)


class Steps:
    """Handle of :func:`steps`: ``step(name)`` says which step of the work has started."""

    def __init__(self, progress=None, task=None, description: str = "", total: int | None = None,
                 plain: bool = False):
        self._progress = progress
        self._task = task
        self._description = description
        self._total = total
        self._plain = plain
        self._started = 0
        self._t0 = time.monotonic()

    def step(self, name: str) -> None:
        self._started += 1
        if self._plain:  # a log, not a terminal: one line per step, with the time so far
            count = f" ({self._started}/{self._total})" if self._total else ""
            print(f"{self._description}: {name}{count} [{time.monotonic() - self._t0:.0f} s]",
                  file=sys.stderr, flush=True)
        if self._progress is not None:
            self._progress.update(self._task, completed=self._started - 1,
                                  description=f"{self._description}: {name}")


@contextlib.contextmanager
def steps(description: str, total: int | None = None) -> Iterator[Steps]:
    """Show long work made of named steps (export: tracing, simplifying, parity...; a TFLite
    conversion: onnx2tf, quantization...) with the elapsed time, on stderr: a live line on a
    terminal, one line per step when progress is forced on elsewhere (EDGESEG_PROGRESS=1)."""
    if not _enabled():
        yield Steps()
        return
    if not sys.stderr.isatty():
        yield Steps(description=description, total=total, plain=True)
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn)

    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
    if total:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total)
        handle = Steps(progress, task, description, total)
        yield handle
        progress.update(task, completed=total or handle._started, description=f"{description}: done")
