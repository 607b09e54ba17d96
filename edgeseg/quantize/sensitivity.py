"""Sensitivity on the task metric, and a search that scales past 2^N plans.

Peer tools rank what to keep in float by a proxy (KL, MSE, bit budgets). Here the ranking
is the metric users ship on, mask AP, and the latency of the target:

1. **Components**: for each component alone at ``precision`` (int8 by default; the rest
   fp32), the AP drop against FP32 and the latency ratio.
2. **Layer groups** (:func:`edgeseg.quantize.units.layer_groups`) inside the components
   whose drop is at least ``min_drop``: the same, one group at a time. Groups without a
   Conv/MatMul/Gemm are skipped (INT8 changes nothing there).
3. **Screen, then confirm**: units are screened on the first ``limit`` images; the
   ``confirm`` most harmful are measured again on the whole split.

All plans come from ONE calibration; AP uses the accuracy numerics (Q/DQ simulated);
latency is timed on one pinned core in interleaved rounds, against FP32 in the same run.

**Search** (:func:`greedy_search`): start from the all-``precision`` plan and, while its AP
is below FP32 minus ``max_ap_drop``, raise the unit whose sensitivity is largest to fp16
(an exception in the plan); every step is one evaluation, and a plan within budget on the
screening images is confirmed on every image before the search stops. It uses the sensitivity
ranking instead of trying every unit at every step, so it costs (units screened) + (steps)
evaluations, where the exhaustive search over the same units costs 2^units.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeseg.errors import EdgesegError
from edgeseg.quantize.plan import PrecisionPlan
from edgeseg.quantize.sweep_latency import LatencySettings


@dataclass
class SensitivitySettings:
    precision: str = "int8"             # what a unit is set to, alone (the rest fp32)
    limit: int | None = 50              # images for the screening pass (None: all)
    confirm: int = 5                    # most harmful units re-measured on the whole split
    min_drop: float = 0.2               # AP points: components this sensitive are split into groups
    max_group_nodes: int = 32
    components: tuple[str, ...] | None = None   # split these (default: the sensitive ones)
    latency: LatencySettings = field(default_factory=lambda: LatencySettings(runs=20, warmup=5, repeats=4))
    calib_method: str = "kl"
    calib_num: int | None = 100
    calib_seed: int = 0
    search: bool = False
    max_ap_drop: float = 1.0


@dataclass
class UnitResult:
    unit: str                 # component name, or a layer group (component/module/path)
    level: str                # "component" | "group"
    component: str
    spec: str                 # the plan measured
    nodes: int
    quantizable: int
    ap: float
    ap_drop: float            # FP32 AP - AP, on the screening images
    latency_ratio: float | None = None  # p50 / FP32 p50, same run
    confirmed_ap: float | None = None
    confirmed_drop: float | None = None


@dataclass
class SearchStep:
    step: int
    raised: str | None        # unit moved to fp16 at this step (None: the start plan)
    spec: str
    ap: float
    ap_full: float | None = None
    latency_ratio: float | None = None


@dataclass
class SensitivityReport:
    model: dict[str, Any]
    reference: dict[str, Any]            # FP32 AP on the screening and full images
    units: list[UnitResult]
    settings: dict[str, Any]
    evaluations: int = 0
    search: list[SearchStep] = field(default_factory=list)
    search_evaluations: int = 0

    def ranked(self) -> list[UnitResult]:
        return sorted(self.units, key=lambda u: (-(u.confirmed_drop if u.confirmed_drop is not None
                                                   else u.ap_drop), u.unit))

    def to_dict(self) -> dict[str, Any]:
        return {"format": "edgeseg-sensitivity", "model": self.model, "reference": self.reference,
                "settings": self.settings,
                "evaluations": self.evaluations, "units": [asdict(u) for u in self.ranked()],
                "search": [asdict(s) for s in self.search], "search_evaluations": self.search_evaluations}

    def to_markdown(self) -> str:
        s = self.settings
        ref = self.reference
        lines = [f"# Sensitivity of {self.model.get('name')} to {s['precision']}", "",
                 f"One unit at {s['precision']}, everything else FP32; AP drop against FP32 "
                 f"({ref['ap']:.1f} AP on the {ref['images']} screening images, {ref.get('ap_full', float('nan')):.1f} "
                 f"on all {ref.get('images_full')}); confirmed = re-measured on every image. Latency: p50 "
                 f"ratio to FP32 on one pinned core (same run). {self.evaluations} evaluations.", "",
                 "| rank | unit | level | nodes (conv/matmul) | AP | AP drop | confirmed drop | latency x FP32 |",
                 "|---:|---|---|---:|---:|---:|---:|---:|"]
        for i, u in enumerate(self.ranked(), 1):
            lines.append(f"| {i} | `{u.unit}` | {u.level} | {u.nodes} ({u.quantizable}) | {u.ap:.1f} | "
                         f"{u.ap_drop:+.1f} | {_f(u.confirmed_drop, '+.1f')} | {_f(u.latency_ratio, '.2f')} |")
        if self.search:
            lines += ["", f"## Greedy search (max AP drop {s['max_ap_drop']})", "",
                      f"{self.search_evaluations} evaluations (the exhaustive search over the same "
                      f"{len(self.units)} units would take 2^{len(self.units)}).", "",
                      "| step | raised to fp16 | AP (screen) | AP (all) | latency x FP32 | plan |",
                      "|---:|---|---:|---:|---:|---|"]
            for st in self.search:
                lines.append(f"| {st.step} | {st.raised or '(start)'} | {st.ap:.1f} | {_f(st.ap_full, '.1f')} | "
                             f"{_f(st.latency_ratio, '.2f')} | `{st.spec}` |")
        return "\n".join(lines) + "\n"


def _f(v, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


# ============================================================================ the measurement
class _Bench:
    """Builds and evaluates plans from one FP32 source + one table, counting evaluations."""

    def __init__(self, src, table, dataset_json, images_dir, limit, images_rep):
        self.src, self.table = src, table
        self.dataset_json, self.images_dir, self.limit = dataset_json, images_dir, limit
        self.images_rep = images_rep
        self.files: dict[str, Path] = {}
        self.evaluations = 0

    def build(self, plan: PrecisionPlan) -> Path:
        from edgeseg.quantize.sweep import build_artifact

        if plan.spec() not in self.files:
            self.files[plan.spec()] = build_artifact(self.src, plan, self.table, "onnxruntime", self.images_rep)
        return self.files[plan.spec()]

    def ap(self, plan: PrecisionPlan, full: bool = False) -> float:
        from edgeseg.eval.coco import evaluate_artifact

        self.evaluations += 1
        res = evaluate_artifact(self.build(plan), self.dataset_json, self.images_dir,
                                limit=None if full else self.limit)
        return float(res.metrics["AP"])

    def latency(self, plans: list[PrecisionPlan], settings: LatencySettings) -> dict[str, float]:
        """p50 ratio to FP32 (the first plan) for every plan, in one interleaved run."""
        from edgeseg.quantize.sweep_latency import measure_interleaved

        files = {p.spec(): self.build(p) for p in plans}
        run = measure_interleaved(files, settings)
        ref = float(run.stats[plans[0].spec()].p50_ms)
        return {k: float(st.p50_ms) / ref for k, st in run.stats.items()}


def run_sensitivity(source: str | os.PathLike, dataset_json, images_dir, calib, work_dir,
                    settings: SensitivitySettings | None = None,
                    progress: Callable[[str], None] | None = None) -> SensitivityReport:
    from edgeseg.quantize.cache import CalibrationTable
    from edgeseg.quantize.plan import _norm_precision
    from edgeseg.quantize.sweep import check_dataset, describe_source, materialize_source, prepare_work
    from edgeseg.quantize.units import layer_groups

    st = settings or SensitivitySettings()
    say = progress or (lambda m: None)
    # ---- cheap checks first
    st.precision = _norm_precision(st.precision, "--precision")
    if st.precision == "fp32":
        raise EdgesegError("--precision fp32 changes nothing", "use int8 (default) or fp16")
    st.latency.validate()
    if st.limit is not None and st.limit < 1:
        raise EdgesegError(f"--limit must be at least 1, got {st.limit}", "e.g. --limit 50")
    if st.max_ap_drop < 0:
        raise EdgesegError(f"--max-ap-drop cannot be negative ({st.max_ap_drop})", "e.g. --max-ap-drop 1.0")
    kind, path, manifest = describe_source(source)
    comps = manifest.component_names()
    for c in st.components or ():
        if c not in comps:
            raise EdgesegError(f"--components names {c!r}, which {manifest.model} does not have",
                               f"components: {', '.join(comps)}")
    check_dataset(dataset_json, images_dir, manifest)
    needs_calib = st.precision == "int8" or st.search
    calib_path = Path(calib) if calib is not None else None
    if needs_calib and (calib_path is None or not calib_path.exists()):
        raise EdgesegError("int8 sensitivity needs a calibration", "pass --calib DIR (images) or --calib TABLE.json")

    folder = prepare_work(Path(work_dir), manifest.model)
    src = materialize_source(kind, path, manifest, folder, str(source))
    table = None
    if needs_calib:
        if calib_path.is_dir():
            from edgeseg.quantize.pipeline import run_calibration

            say(f"calibrating ({st.calib_method}) on {calib_path}")
            table = run_calibration(src.onnx, calib_path, method=st.calib_method, num=st.calib_num,
                                    seed=st.calib_seed, out=folder / f"{src.onnx.stem}.calib.json").table
        else:
            from edgeseg.utils.hashing import sha256_file

            table = CalibrationTable.load(calib_path)
            table.check_model(sha256_file(src.onnx), what=f"model than {src.onnx.name}")
    rep = calib_path if calib_path is not None and calib_path.is_dir() else Path(images_dir)
    bench = _Bench(src, table, dataset_json, images_dir, st.limit, rep)
    import onnx

    proto = onnx.load(str(src.onnx))
    module_paths = {c: (info or {}).get("module", c) for c, info in (manifest.components or {}).items()
                    if isinstance(info, dict)}

    fp32 = PrecisionPlan.uniform("fp32", comps)
    say("FP32 reference")
    ref_ap = bench.ap(fp32)
    ref_full = bench.ap(fp32, full=True) if st.limit else ref_ap

    units: list[UnitResult] = []
    plans: dict[str, PrecisionPlan] = {}
    for c in comps:
        plan = PrecisionPlan({**fp32.precisions, c: st.precision})
        ap = bench.ap(plan)
        n = [x for x in proto.graph.node if _tag(x) == c]
        units.append(UnitResult(c, "component", c, plan.spec(), len(n),
                                sum(x.op_type in ("Conv", "MatMul", "Gemm") for x in n), ap, ref_ap - ap))
        plans[c] = plan
        say(f"  {c} at {st.precision}: AP {ap:.1f} ({ref_ap - ap:+.1f})")
    split = list(st.components) if st.components else [u.unit for u in units if u.ap_drop >= st.min_drop]
    for c in split:
        for g in layer_groups(proto, c, st.max_group_nodes, module_paths):
            if g.quantizable == 0 and st.precision == "int8":
                continue
            plan = PrecisionPlan(dict(fp32.precisions), exceptions={g.name: st.precision})
            ap = bench.ap(plan)
            units.append(UnitResult(g.name, "group", c, plan.spec(), len(g.nodes), g.quantizable, ap, ref_ap - ap))
            plans[g.name] = plan
            say(f"  {g.name} at {st.precision}: AP {ap:.1f} ({ref_ap - ap:+.1f})")
    # confirm the most harmful on every image
    if st.limit and st.confirm:
        for u in sorted(units, key=lambda u: -u.ap_drop)[:st.confirm]:
            u.confirmed_ap = bench.ap(plans[u.unit], full=True)
            u.confirmed_drop = ref_full - u.confirmed_ap
    say("timing every unit plan against FP32 on one pinned core")
    ratios = bench.latency([fp32, *plans.values()], st.latency)
    for u in units:
        u.latency_ratio = ratios.get(plans[u.unit].spec())
    report = SensitivityReport(
        model={"name": manifest.model, "components": comps, "source": str(source), "onnx": str(src.onnx)},
        reference={"ap": ref_ap, "images": st.limit, "ap_full": ref_full,
                   "images_full": _count_images(dataset_json)},
        units=units, settings=_settings_dict(st), evaluations=bench.evaluations)
    if st.search:
        greedy_search(report, bench, st, say)
    return report


def _tag(node) -> str | None:
    from edgeseg.export.tags import get_component

    return get_component(node)


def _count_images(dataset_json) -> int:
    import json

    return len(json.loads(Path(dataset_json).read_text()).get("images", []))


def _settings_dict(st: SensitivitySettings) -> dict[str, Any]:
    from edgeseg.benchmark.cpu_isa import host_isa

    d = asdict(st)
    d["components"] = list(st.components) if st.components else None
    # AP drops use simulated Q/DQ (the same on every host), latency ratios the fused kernels.
    d["numerics"] = {"accuracy": "simulated", "latency": "fused", "host_isa": host_isa().summary()}
    return d


def greedy_search(report: SensitivityReport, bench: _Bench, st: SensitivitySettings,
                  say: Callable[[str], None]) -> None:
    """Start all-``precision``; raise the most sensitive unit to fp16 until within budget.

    Units: the layer groups screened (where a component was split) and the components that
    were not split, ordered by their measured drop (confirmed drop first where there is one)."""
    comps = report.model["components"]
    budget = report.reference["ap"] - st.max_ap_drop
    split = {u.component for u in report.units if u.level == "group"}
    candidates = [u for u in report.ranked() if (u.level == "group" or u.unit not in split) and
                  (u.confirmed_drop if u.confirmed_drop is not None else u.ap_drop) > 0]
    start = bench.evaluations
    full_budget = report.reference.get("ap_full", report.reference["ap"]) - st.max_ap_drop
    plan = PrecisionPlan.uniform(st.precision, comps)
    ap = bench.ap(plan)
    steps = [SearchStep(0, None, plan.spec(), ap)]
    say(f"search: all {st.precision}: AP {ap:.1f} (budget {budget:.1f})")
    queue = list(candidates)
    while True:
        if ap >= budget and st.limit:
            # Within budget on the screening images: confirm on every image before stopping.
            steps[-1].ap_full = bench.ap(plan, full=True)
            if steps[-1].ap_full >= full_budget:
                break
        elif ap >= budget:
            break
        if not queue:
            break
        unit = queue.pop(0)
        if unit.level == "component":
            plan = PrecisionPlan({**plan.precisions, unit.unit: "fp16"}, exceptions=dict(plan.exceptions))
        else:
            plan = plan.with_exceptions({unit.unit: "fp16"})
        ap = bench.ap(plan)
        steps.append(SearchStep(len(steps), unit.unit, plan.spec(), ap))
        say(f"search: + {unit.unit}=fp16: AP {ap:.1f}")
    # the path's plans on every image and timed together with FP32
    for s in steps:
        if s.ap_full is None:
            s.ap_full = bench.ap(PrecisionPlan.parse(s.spec, comps), full=True) if st.limit else s.ap
    fp32 = PrecisionPlan.uniform("fp32", comps)
    ratios = bench.latency([fp32, *(PrecisionPlan.parse(s.spec, comps) for s in steps)], st.latency)
    for s in steps:
        s.latency_ratio = ratios.get(PrecisionPlan.parse(s.spec, comps).spec())
    report.search = steps
    report.search_evaluations = bench.evaluations - start


REPORT_FILES = ("sensitivity.json", "sensitivity.md", "sensitivity.png")


def check_report_folder(out_dir: str | os.PathLike, overwrite: bool = False, inputs=()) -> None:
    """Before the work: the three report files may replace only reports edgeseg wrote there
    (the PNG goes with its JSON), unless ``overwrite``."""
    from edgeseg.utils import outputs

    out = Path(out_dir)
    outputs.check_not_enclosing(out, flag="-o", inputs=inputs)
    outputs.check_writable(out, want_dir=True, flag="-o")
    ours = outputs.written_by_edgeseg(out / REPORT_FILES[0])
    for name in REPORT_FILES:
        p = out / name
        if p.exists() and not overwrite and not (outputs.written_by_edgeseg(p) or (name.endswith(".png") and ours)):
            raise EdgesegError(f"{p} exists and edgeseg did not write it",
                               "choose another -o folder, or pass --overwrite to replace it")


def write_reports(report: SensitivityReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``sensitivity.json``, ``sensitivity.md`` and ``sensitivity.png`` (all or none)."""
    import contextlib

    from edgeseg.quantize.sweep import check_output_dir
    from edgeseg.utils.atomic import atomic_path

    out = Path(out_dir)
    check_output_dir(out)
    paths = {"json": out / "sensitivity.json", "markdown": out / "sensitivity.md", "plot": out / "sensitivity.png"}
    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(p)) for k, p in paths.items()}
        import json

        tmp["json"].write_text(json.dumps(report.to_dict(), indent=2, default=_json_default) + "\n")
        from edgeseg.utils.outputs import mark_text

        tmp["markdown"].write_text(mark_text(report.to_markdown(), ".md"), encoding="utf-8")
        plot(report, tmp["plot"])
    return paths


def _json_default(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    raise TypeError(type(v))


def plot(report: SensitivityReport, path: Path) -> None:
    """Horizontal bars: AP drop per unit (ranked), coloured by component; latency ratio beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = report.ranked()
    comps = report.model["components"]
    colours = {c: plt.cm.tab10(i % 10) for i, c in enumerate(comps)}
    h = max(3.0, 0.28 * len(ranked) + 1.2)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, h), sharey=True, gridspec_kw={"width_ratios": [3, 1]})
    y = list(range(len(ranked)))[::-1]
    drops = [u.confirmed_drop if u.confirmed_drop is not None else u.ap_drop for u in ranked]
    a1.barh(y, drops, color=[colours[u.component] for u in ranked],
            hatch=None, edgecolor=["black" if u.level == "component" else "none" for u in ranked])
    a1.set_yticks(y, [u.unit + (" (component)" if u.level == "component" else "") for u in ranked], fontsize=7)
    a1.axvline(0, color="grey", lw=0.8)
    a1.set_xlabel(f"AP drop with only this unit at {report.settings['precision']} (AP points)")
    a2.barh(y, [u.latency_ratio or 0 for u in ranked], color=[colours[u.component] for u in ranked])
    a2.axvline(1.0, color="grey", lw=0.8)
    a2.set_xlabel("latency x FP32")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[c]) for c in comps]
    a1.legend(handles, comps, loc="lower right", fontsize=7)
    fig.suptitle(f"Sensitivity of {report.model['name']}: one unit at {report.settings['precision']}, "
                 "the rest FP32", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
