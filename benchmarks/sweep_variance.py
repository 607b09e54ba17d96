"""Run-to-run spread of the CI sweep: what the regression gate's tolerances must absorb.

    python benchmarks/sweep_variance.py --runs 3            # runs scripts/ci-regress.sh --sweep-only 3x
    python benchmarks/sweep_variance.py out/a/sweep.json out/b/sweep.json ...   # existing results

For every plan it prints AP (min/max), p50 latency (min/max, relative range) and the
latency ratios to FP32 for p50 and p10 (min-max and the worst pairwise relative change,
i.e. what ``edgeseg regress`` would see comparing any one run with any other as its
baseline; the gate uses p10), and the median of per-round p50 ratios for comparison.
The tolerances in scripts/ci-regress.sh should sit well above the worst pairwise change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_ci_sweeps(n: int, out_root: Path) -> list[Path]:
    paths = []
    for i in range(n):
        out = out_root / f"run{i + 1}"
        env = dict(os.environ, CI_REGRESS_OUT=str(out))
        t0 = time.perf_counter()
        subprocess.run(["bash", str(ROOT / "scripts" / "ci-regress.sh"), "--sweep-only"], check=True, env=env,
                       cwd=ROOT, stdout=subprocess.DEVNULL)
        print(f"run {i + 1}/{n}: {time.perf_counter() - t0:.0f} s wall", file=sys.stderr)
        paths.append(out / "reports" / "sweep.json")
    return paths


def per_round_ratio(plan, ref) -> float:
    a, b = plan.latency_ms.get("per_round_p50") or [], ref.latency_ms.get("per_round_p50") or []
    return statistics.median(x / y for x, y in zip(a, b)) if a and b else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="*", type=Path, help="sweep.json files (else --runs fresh CI sweeps)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "sweep-variance")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from edgeseg.quantize.sweep_report import load_sweep

    paths = args.results or run_ci_sweeps(args.runs, args.out)
    reports = [load_sweep(p) for p in paths]
    specs = [p.spec for p in reports[0].plans]
    print(f"{len(reports)} runs: " + ", ".join(str(p) for p in paths))
    print(f"{'plan':<16} {'AP min':>7} {'AP max':>7} {'p50 min':>8} {'p50 max':>8} {'p50 rng':>8} "
          f"{'p50-ratio':>15} {'worst d':>8} {'p10-ratio (gated)':>19} {'worst d':>8} {'rnd-p50-ratio':>15}")
    for spec in specs:
        plans = [r.plan(spec) for r in reports]
        aps = [p.ap for p in plans]
        p50 = [p.p50 for p in plans]
        cols = []
        for stat in ("p50", "p10"):
            ratios = [p.ratio(stat) for p in plans]
            if any(r is None for r in ratios):
                cols.append(f"{'n/a':>15} {'':>8}")
                continue
            worst = max(a / b - 1 for a in ratios for b in ratios)  # any run as baseline, any as result
            cols.append(f"{min(ratios):7.3f}-{max(ratios):<7.3f} {100 * worst:7.1f}%")
        rr = [per_round_ratio(p, r.reference()) for p, r in zip(plans, reports)]
        print(f"{plans[0].display_name():<16} {min(aps):7.2f} {max(aps):7.2f} {min(p50):8.2f} {max(p50):8.2f} "
              f"{100 * (max(p50) / min(p50) - 1):7.1f}% {cols[0]} {cols[1]:>28} {min(rr):7.3f}-{max(rr):<7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
