"""Latency statistics, from per-run samples or from a runner's own summary.

Two honest sources:

* ``samples``: every timed run's latency is known (local target, trtexec ``--exportTimes``).
  All figures, percentiles included, are computed here.
* ``summary``: the runner only prints aggregates (TFLite ``benchmark_model``: count, min,
  max, avg, std; TNNTest: min, max, avg). We keep exactly what it printed and leave
  the rest ``None`` ("unavailable") instead of inventing percentiles.

``std`` is the population standard deviation (divide by n), the convention of
``benchmark_model``; ``cv`` is std / mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

PERCENTILES = (50, 90, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted values (numpy's default method)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


@dataclass
class LatencyStats:
    """Latency figures in milliseconds. ``None`` means the source did not provide it."""

    n: int
    warmup: int
    min_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    source: str = "samples"  # "samples" or "<tool> summary"
    samples_ms: list[float] = field(default_factory=list)  # in run order (empty for summaries)

    @property
    def cv(self) -> float | None:
        if self.std_ms is None or not self.mean_ms:
            return None
        return self.std_ms / self.mean_ms

    @property
    def fps(self) -> float | None:
        """Frames per second at the median (or mean) latency, for one stream."""
        central = self.p50_ms if self.p50_ms is not None else self.mean_ms
        return 1000.0 / central if central else None

    # ---------------------------------------------------------------- builders
    @classmethod
    def from_samples(cls, samples_ms: Iterable[float], warmup: int = 0) -> "LatencyStats":
        values = [float(v) for v in samples_ms]
        if not values:
            raise ValueError("no latency samples")
        ordered = sorted(values)
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
        return cls(n=n, warmup=warmup, min_ms=ordered[0], max_ms=ordered[-1], mean_ms=mean, std_ms=std,
                   p50_ms=percentile(ordered, 50), p90_ms=percentile(ordered, 90),
                   p99_ms=percentile(ordered, 99), source="samples", samples_ms=values)

    @classmethod
    def from_summary(cls, tool: str, n: int, warmup: int, *, min_ms=None, max_ms=None, mean_ms=None,
                     std_ms=None, p50_ms=None, p90_ms=None, p99_ms=None) -> "LatencyStats":
        return cls(n=n, warmup=warmup, min_ms=min_ms, max_ms=max_ms, mean_ms=mean_ms, std_ms=std_ms,
                   p50_ms=p50_ms, p90_ms=p90_ms, p99_ms=p99_ms, source=f"{tool} summary")

    @classmethod
    def combine(cls, parts: Sequence["LatencyStats"]) -> "LatencyStats":
        """Merge the measurements of several repeats (blocks separated by cool-downs).

        Samples are pooled exactly. Summaries are pooled with the exact formulas for
        count, min, max, mean and population std; percentiles cannot be pooled from
        summaries, so they are kept only when there is a single part.
        """
        if not parts:
            raise ValueError("nothing to combine")
        if len(parts) == 1:
            return parts[0]
        warmup = sum(p.warmup for p in parts)
        if all(p.samples_ms for p in parts):
            merged = cls.from_samples([v for p in parts for v in p.samples_ms])
            merged.warmup = warmup
            return merged
        n = sum(p.n for p in parts)
        mins = [p.min_ms for p in parts]
        maxs = [p.max_ms for p in parts]
        means = [p.mean_ms for p in parts]
        stds = [p.std_ms for p in parts]
        mean = std = None
        if all(m is not None for m in means) and n:
            mean = sum(p.n * p.mean_ms for p in parts) / n  # type: ignore[operator]
            if all(s is not None for s in stds):
                # E[x^2] per part = std^2 + mean^2; pooled variance = E[x^2] - mean^2.
                ex2 = sum(p.n * (p.std_ms ** 2 + p.mean_ms ** 2) for p in parts) / n  # type: ignore[operator]
                std = math.sqrt(max(ex2 - mean ** 2, 0.0))
        return cls(n=n, warmup=warmup,
                   min_ms=min(mins) if all(m is not None for m in mins) else None,
                   max_ms=max(maxs) if all(m is not None for m in maxs) else None,
                   mean_ms=mean, std_ms=std, source=parts[0].source,
                   samples_ms=[])

    # ---------------------------------------------------------------- io
    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, "warmup": self.warmup, "min_ms": self.min_ms, "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms, "p99_ms": self.p99_ms, "max_ms": self.max_ms, "mean_ms": self.mean_ms,
            "std_ms": self.std_ms, "cv": self.cv, "fps": self.fps, "source": self.source,
            "samples_ms": list(self.samples_ms),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyStats":
        return cls(n=int(d["n"]), warmup=int(d.get("warmup", 0)), min_ms=d.get("min_ms"),
                   max_ms=d.get("max_ms"), mean_ms=d.get("mean_ms"), std_ms=d.get("std_ms"),
                   p50_ms=d.get("p50_ms"), p90_ms=d.get("p90_ms"), p99_ms=d.get("p99_ms"),
                   source=d.get("source", "samples"), samples_ms=list(d.get("samples_ms", [])))
