"""Latency of every plan of a sweep on one pinned core, measured in interleaved rounds.

The sweep's speed figure is a *ratio to FP32 measured in the same run*, so what matters
is that every plan sees the same machine. Measuring plan after plan lets a background
job that starts half-way through slow down only the later plans. Instead every plan's
runtime is opened once (one :class:`~edgeseg.benchmark.targets.local.LocalTarget` each:
all threads pinned to one core, one intra-/inter-op thread, read back), and the timed
runs are split into ``repeats`` rounds; each round times a block of every plan, the
starting plan rotating, so slow periods are spread over all plans alike. A few untimed
runs before each block refill the caches the other plans evicted.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeseg.benchmark.stats import LatencyStats
from edgeseg.errors import EdgesegError


@dataclass
class LatencySettings:
    runs: int = 50  # timed runs per plan, over all rounds
    warmup: int = 10  # untimed runs per plan before its first block
    repeats: int = 10  # interleaved rounds (many short ones cancel drift best; see tests)
    rewarm: int = 2  # untimed runs before every later block (caches)
    core: int | None = None  # None: the fastest core this process may use
    # "wall": elapsed time per run; "cpu": this process's CPU time per run, which a shared
    # machine does not inflate with the time the run waited for the core (host runs only).
    clock: str = "wall"

    def validate(self) -> None:
        if self.runs < 1:
            raise EdgesegError(f"--runs must be at least 1 (got {self.runs})", "e.g. --runs 50")
        if self.warmup < 0:
            raise EdgesegError(f"--warmup cannot be negative (got {self.warmup})", "e.g. --warmup 10")
        from edgeseg.benchmark.targets.local import CLOCKS

        if self.clock not in CLOCKS:
            raise EdgesegError(f"unknown clock {self.clock!r}", f"use one of: {', '.join(CLOCKS)}")
        if not 1 <= self.repeats <= self.runs:
            raise EdgesegError(f"--repeats must be between 1 and --runs ({self.runs}), got {self.repeats}",
                               "e.g. --runs 50 --repeats 5 (five interleaved rounds of ten runs per plan)")

    def blocks(self) -> list[int]:
        base, rest = divmod(self.runs, self.repeats)
        return [base + (1 if i < rest else 0) for i in range(self.repeats)]


@dataclass
class LatencyRun:
    stats: dict[str, LatencyStats]  # key -> pooled stats over all rounds
    per_round_p50: dict[str, list[float]]
    runtime: dict[str, Any]  # backend, threads, affinity... as read back from the first target
    device_before: dict[str, Any] = field(default_factory=dict)
    device_after: dict[str, Any] = field(default_factory=dict)


def measure_interleaved(files: dict[str, Path], settings: LatencySettings, backend: str | None = None,
                        on_round: Callable[[int, int], None] | None = None,
                        target_factory: Callable[..., Any] | None = None) -> LatencyRun:
    """Time every file of ``files`` (key -> model file) on one pinned core, interleaved.

    ``target_factory(file, core=, backend=)`` builds each target (default: ``LocalTarget``).
    """
    from edgeseg.benchmark.targets.local import LocalTarget, default_core

    settings.validate()
    if not files:
        raise EdgesegError("no models to time", "give the sweep at least one plan")
    factory = target_factory or functools.partial(LocalTarget, clock=settings.clock)
    core = default_core() if settings.core is None else settings.core
    keys = list(files)
    samples: dict[str, list[LatencyStats]] = {k: [] for k in keys}
    # ExitStack closes targets in reverse order of opening, which is what the nested
    # per-target pinning needs to restore every thread's original affinity.
    with contextlib.ExitStack() as stack:
        targets = {}
        for k in keys:
            t = factory(files[k], core=core, backend=backend)
            t.open()
            stack.callback(t.close)
            targets[k] = t
        first = targets[keys[0]]
        before = first.device_state().to_dict()
        for r, runs in enumerate(settings.blocks()):
            start = r % len(keys)
            for k in keys[start:] + keys[:start]:
                warm = settings.warmup if r == 0 else settings.rewarm
                samples[k].append(targets[k].measure(runs, warm).stats)
            if on_round:
                on_round(r + 1, settings.repeats)
        after = first.device_state().to_dict()
        runtime = first.runtime_info()
        unpinned = {k: t.runtime_info().get("unpinned_threads") for k, t in targets.items()}
    if any(unpinned.values()):
        # A runtime that started threads outside the core would make this a multi-core figure.
        raise EdgesegError(f"some runtime threads escaped the pinned core ({unpinned})",
                           "report this as a bug; the latency would not be single-core")
    stats = {k: LatencyStats.combine(v) for k, v in samples.items()}
    per_round = {k: [float(s.p50_ms) for s in v] for k, v in samples.items()}
    return LatencyRun(stats, per_round, runtime, before, after)
