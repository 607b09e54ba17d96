"""Greedy unit search against the exhaustive component-level sweep, on one calibration.

Answers: does the sensitivity-guided search (layer-group exceptions inside components,
``edgeseg sensitivity --search``) find plans on or beyond the Pareto front of the exhaustive
component-level sweep (every fp16/int8 mix of the components, as ``edgeseg sweep``), and at
what cost in evaluations? Every plan's AP is measured on every val image (simulated Q/DQ
numerics, the same on every host) and every plan is timed in ONE interleaved run on one
pinned core against FP32, so the latency ratios compare.

    python benchmarks/search_vs_sweep.py mobileinst_topformer_synth \
        --calib data/shapes8k/coco/train --dataset data/shapes8k/coco/annotations/val.json \
        --images data/shapes8k/coco/val --sensitivity reports/sensitivity_synth/sensitivity.json \
        -o reports/search_vs_sweep.json

``--sensitivity`` is the ranking of an earlier ``edgeseg sensitivity`` run (its screening
evaluations are counted from that report); the search re-runs here from the same calibration.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path


FORMAT = "edgeseg-search-vs-sweep"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="zoo model name, checkpoint or edgeseg export folder")
    ap.add_argument("--calib", required=True, help="calibration images folder or table")
    ap.add_argument("--calib-num", type=int, default=100)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--sensitivity", required=True,
                    help="sensitivity.json of an earlier `edgeseg sensitivity` run (the ranking the search follows)")
    ap.add_argument("--limit", type=int, default=50, help="screening images (search steps)")
    ap.add_argument("--max-ap-drop", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: time each run by this process's CPU time (one thread), which other jobs on a "
                         "shared machine do not inflate")
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("-o", "--output", help="JSON with every figure")
    a = ap.parse_args(argv)

    from edgeseg.quantize.plan import PrecisionPlan
    from edgeseg.quantize.pipeline import run_calibration
    from edgeseg.quantize.sensitivity import SensitivityReport, SensitivitySettings, UnitResult, _Bench, greedy_search
    from edgeseg.quantize.sweep import describe_source, materialize_source, prepare_work
    from edgeseg.quantize.sweep_latency import LatencySettings
    from edgeseg.quantize.sweep_report import pareto_front

    latency = LatencySettings(runs=a.runs, warmup=5, repeats=a.repeats)
    st = SensitivitySettings(limit=a.limit, search=True, max_ap_drop=a.max_ap_drop, calib_num=a.calib_num,
                             latency=LatencySettings(runs=5, warmup=1, repeats=1))
    work = Path(a.work or tempfile.mkdtemp(prefix="search_vs_sweep_"))
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    if a.output and Path(a.output).exists():
        # Replace only a report this script wrote; anything else at -o is the user's.
        try:
            ours = json.loads(Path(a.output).read_text()).get("format") == FORMAT
        except (ValueError, AttributeError, OSError):
            ours = False
        if not ours:
            raise SystemExit(f"{a.output} exists and is not a report of this script: pass another -o")
    data = json.loads(Path(a.sensitivity).read_text())
    if data.get("format") != "edgeseg-sensitivity":
        raise SystemExit(f"{a.sensitivity} is not an `edgeseg sensitivity` report (sensitivity.json)")
    kind, path, manifest = describe_source(a.source)
    if data["model"].get("name") != manifest.model:
        raise SystemExit(f"{a.sensitivity} ranks {data['model'].get('name')}, not {manifest.model}")
    folder = prepare_work(work, manifest.model)
    src = materialize_source(kind, path, manifest, folder, a.source)
    say(f"calibrating on {a.calib}")
    table = run_calibration(src.onnx, a.calib, num=a.calib_num, out=folder / f"{src.onnx.stem}.calib.json").table
    bench = _Bench(src, table, a.dataset, a.images, a.limit, Path(a.calib))
    report = SensitivityReport(model=data["model"], reference=data["reference"],
                               units=[UnitResult(**u) for u in data["units"]], settings=data["settings"],
                               evaluations=data["evaluations"])
    screening = data["evaluations"]
    greedy_search(report, bench, st, say)
    comps = report.model["components"]

    # ---- the exhaustive component-level sweep: every fp16/int8 mix, on every image
    fp32 = PrecisionPlan.uniform("fp32", comps)
    before = bench.evaluations
    rows = [{"kind": "FP32", "spec": fp32.spec(), "ap": bench.ap(fp32, full=True)}]
    for combo in itertools.product(("fp16", "int8"), repeat=len(comps)):
        plan = PrecisionPlan(dict(zip(comps, combo)))
        rows.append({"kind": "component", "spec": plan.spec(), "ap": bench.ap(plan, full=True)})
        say(f"  {plan.spec()}: AP {rows[-1]['ap']:.1f}")
    sweep_evaluations = bench.evaluations - before - 1
    # The search's path: a plan it visits may also be a component plan (all-int8 is both);
    # it is then one row, marked as reached by both.
    by_spec = {r["spec"]: r for r in rows}
    for s in report.search:
        if s.spec in by_spec:
            by_spec[s.spec]["search_step"] = s.step
        else:
            by_spec[s.spec] = {"kind": "search", "spec": s.spec, "ap": s.ap_full, "search_step": s.step,
                               "raised": s.raised}
            rows.append(by_spec[s.spec])

    say(f"timing {len(rows)} plans interleaved on one pinned core ({a.clock} clock)")
    from functools import partial

    from edgeseg.benchmark.targets.local import LocalTarget
    from edgeseg.quantize.sweep_latency import measure_interleaved

    files = {r["spec"]: bench.build(PrecisionPlan.parse(r["spec"], comps)) for r in rows}
    run = measure_interleaved(files, latency, target_factory=partial(LocalTarget, clock=a.clock))
    ref_ms = float(run.stats[rows[0]["spec"]].p50_ms)
    for r in rows:
        r["p50_ms"] = float(run.stats[r["spec"]].p50_ms)
        r["latency_ratio"] = r["p50_ms"] / ref_ms
    front = pareto_front([(r["latency_ratio"], r["ap"]) for r in rows])
    for i, r in enumerate(rows):
        r["pareto"] = i in front

    from edgeseg.benchmark.cpu_isa import host_isa

    ref = rows[0]["ap"]
    budget = [r for r in rows[1:] if r["ap"] >= ref - a.max_ap_drop]
    best_component = min((r for r in budget if r["kind"] == "component"), key=lambda r: r["latency_ratio"],
                         default=None)
    best_search = min((r for r in budget if "search_step" in r), key=lambda r: r["latency_ratio"], default=None)
    print(f"# Greedy unit search vs exhaustive component sweep: {report.model['name']}\n")
    import os

    print(f"Host: {host_isa().summary()}; load average {os.getloadavg()[0]:.1f}; AP on every val image (simulated "
          f"Q/DQ); latency: p50 ratio to FP32 ({a.clock} clock), one interleaved run on one pinned core "
          f"({a.runs} runs per plan).\n")
    print(f"Evaluations: component sweep {sweep_evaluations} (2^{len(comps)} plans); search "
          f"{screening} screening + {report.search_evaluations} search steps.\n")
    print("| kind | plan | search step | AP | AP drop | latency x FP32 | Pareto |")
    print("|---|---|---:|---:|---:|---:|:---:|")
    for r in rows:
        print(f"| {r['kind']} | `{r['spec']}` | {r.get('search_step', '')} | {r['ap']:.1f} | {ref - r['ap']:+.1f} | "
              f"{r['latency_ratio']:.2f} | {'yes' if r['pareto'] else ''} |")
    verdict = "no plan within budget"
    if best_component and best_search:
        if best_search["kind"] != "search":
            outcome = "the search stopped on a component-level plan: no layer-level exception was needed"
        elif best_search["latency_ratio"] < best_component["latency_ratio"]:
            outcome = "the layer-level plan beats the best component-level plan here"
        else:
            outcome = "the layer-level plan does not beat the best component-level plan here"
        verdict = (f"within {a.max_ap_drop} AP: fastest component plan {best_component['spec']} at "
                   f"{best_component['latency_ratio']:.2f}x, fastest plan the search reached {best_search['spec']} at "
                   f"{best_search['latency_ratio']:.2f}x: {outcome}")
    print(f"\n{verdict}")
    if a.output:
        from edgeseg.utils import atomic

        atomic.write_json(a.output, {"format": FORMAT, "model": report.model, "host_isa": host_isa().summary(),
                                     "clock": a.clock, "max_ap_drop": a.max_ap_drop, "evaluations": {
                                         "sweep": sweep_evaluations, "screening": screening,
                                         "search": report.search_evaluations},
                                     "plans": rows, "verdict": verdict})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
