"""Training progress on stderr: a live bar with the loss on a terminal, plain lines otherwise.

Plain lines (every ``log_every`` iterations) are what a ``nohup ... > train.log`` run
needs; the bar is what a person watching wants. stdout stays free for the final table.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass


@dataclass
class StepInfo:
    iteration: int      # 1-based, iterations done so far
    total: int
    loss: float         # this iteration's weighted total
    smoothed: float     # exponential moving average, what the bar shows
    parts: dict[str, float]
    lr: float


class TrainLog:
    def __init__(self, log_every: int = 20, bar: bool | None = None):
        from edgeseg.utils.progress import _enabled

        self.log_every = max(1, int(log_every))
        self.bar = _enabled() if bar is None else bar
        self._progress = None
        self._task = None
        self._start = time.perf_counter()

    def message(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def start(self, done: int, total: int) -> None:
        self._start = time.perf_counter()
        if not self.bar:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._progress = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("eta"),
                                  TimeRemainingColumn(), console=Console(stderr=True))
        self._progress.start()
        self._task = self._progress.add_task("training", total=total, completed=done, loss="-")

    def step(self, info: StepInfo) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=info.iteration, loss=f"{info.smoothed:.3f}")
            return
        if info.iteration % self.log_every == 0 or info.iteration == info.total:
            parts = " ".join(f"{k} {v:.3f}" for k, v in info.parts.items())
            elapsed = time.perf_counter() - self._start
            print(f"iter {info.iteration}/{info.total}  loss {info.loss:.3f} (avg {info.smoothed:.3f})  {parts}  "
                  f"lr {info.lr:.2e}  {elapsed:.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
