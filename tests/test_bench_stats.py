import math

import numpy as np
import pytest

from edgeseg.benchmark.stats import LatencyStats, percentile


def test_from_samples_matches_numpy():
    rng = np.random.default_rng(1)
    samples = list(rng.gamma(4.0, 2.5, size=137))
    s = LatencyStats.from_samples(samples, warmup=5)
    assert s.n == 137 and s.warmup == 5
    assert s.min_ms == pytest.approx(min(samples))
    assert s.max_ms == pytest.approx(max(samples))
    assert s.mean_ms == pytest.approx(np.mean(samples))
    assert s.std_ms == pytest.approx(np.std(samples))  # population std, like benchmark_model
    for q, got in ((50, s.p50_ms), (90, s.p90_ms), (99, s.p99_ms)):
        assert got == pytest.approx(np.percentile(samples, q))
    assert s.cv == pytest.approx(np.std(samples) / np.mean(samples))
    assert s.fps == pytest.approx(1000.0 / np.percentile(samples, 50))
    assert s.samples_ms == samples  # run order kept (the drift plot needs it)


def test_percentile_edges():
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])


def test_summary_keeps_unavailable_figures_none():
    s = LatencyStats.from_summary("benchmark_model", n=50, warmup=1, min_ms=32.641, max_ms=34.005,
                                  mean_ms=33.2094, std_ms=0.45)
    assert s.p50_ms is None and s.p90_ms is None and s.p99_ms is None
    assert s.source == "benchmark_model summary"
    assert s.fps == pytest.approx(1000 / 33.2094)  # falls back to the mean


def test_combine_samples_pools_exactly():
    a = LatencyStats.from_samples([1.0, 2.0, 3.0], warmup=2)
    b = LatencyStats.from_samples([10.0, 20.0], warmup=2)
    c = LatencyStats.combine([a, b])
    assert c.n == 5 and c.warmup == 4
    assert c.samples_ms == [1.0, 2.0, 3.0, 10.0, 20.0]
    assert c.p50_ms == pytest.approx(3.0)


def test_combine_summaries_uses_exact_pooled_moments():
    rng = np.random.default_rng(3)
    x, y = rng.normal(10, 1, 40), rng.normal(12, 2, 60)
    parts = [LatencyStats.from_summary("t", len(v), 1, min_ms=float(v.min()), max_ms=float(v.max()),
                                       mean_ms=float(v.mean()), std_ms=float(v.std())) for v in (x, y)]
    c = LatencyStats.combine(parts)
    allv = np.concatenate([x, y])
    assert c.n == 100
    assert c.mean_ms == pytest.approx(allv.mean())
    assert c.std_ms == pytest.approx(allv.std())
    assert c.min_ms == pytest.approx(allv.min()) and c.max_ms == pytest.approx(allv.max())
    assert c.p50_ms is None  # percentiles cannot be pooled from summaries


def test_round_trip_dict():
    s = LatencyStats.from_samples([1.0, 4.0, 2.0], warmup=1)
    d = s.to_dict()
    assert d["cv"] == pytest.approx(s.cv) and not math.isnan(d["cv"])
    assert LatencyStats.from_dict(d) == s
