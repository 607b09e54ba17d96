"""On-device benchmarks: one harness, many targets (local core | adb phone | ssh Jetson).

``harness.run_benchmark(target, settings)`` does warm-up, timed runs, cool-down,
statistics and device state for every target; a target is a transport (how commands and
files reach the device) plus an output parser (how the runner's timings are read).
Everything returns the same :class:`~edgeseg.benchmark.report.BenchmarkReport`.
"""
