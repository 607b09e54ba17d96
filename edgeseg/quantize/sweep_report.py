"""The precision sweep's result: one row per plan (AP, latency, ratio to FP32), as JSON and Markdown.

:class:`SweepReport` is what ``edgeseg sweep`` writes and what ``edgeseg regress`` reads,
so the JSON carries everything a regression gate needs to decide whether two runs are
comparable (model and checkpoint hash, dataset hash, backend, calibration table hash,
tool versions) and what to compare (per plan: AP figures, p50 latency and the latency
*ratio to FP32 measured in the same run*, which cancels the speed of the machine).

The Markdown is laid out like YolactEdge's Table I: one column per component precision,
then accuracy and speed. Nothing here measures anything; it only holds, checks and
formats figures (see :mod:`edgeseg.quantize.sweep` for the measuring).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError

SWEEP_FORMAT = "edgeseg-sweep"
SWEEP_VERSION = 1
# Figures shown in the table (all on COCO's 0-100 scale); the JSON keeps every figure.
TABLE_METRICS = ("AP", "AP50")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class PlanResult:
    """One plan of the sweep: what was built, how accurate and how fast it is."""

    spec: str  # canonical "backbone=int8,mask_decoder=int8,instance_decoder=fp16"
    precisions: dict[str, str]  # component -> fp32 | fp16 | int8, pipeline order
    metrics: dict[str, float | None]  # AP, AP50, AP75, APs, APm, APl, ... (0-100)
    latency_ms: dict[str, float | None]  # p10, p50, mean, min, p90, std over `runs` timed runs
    runs: int
    latency_ratio: float  # p50 / p50 of the FP32 plan, both from this run (the table's speed-up)
    name: str | None = None  # preset name when the plan is one ("mixed", "int8")
    file: str = ""  # artifact file name in the work dir
    file_sha256: str = ""
    detections: int = 0
    pareto: bool = False
    seconds: dict[str, float] = field(default_factory=dict)  # build / eval wall time
    # statistic -> this plan's value / FP32's, both from this run ("p10", "p50"). The gate
    # uses p10 by default: contention only ever adds time, so the fastest decile is the
    # part of the distribution a busy machine disturbs least (benchmarks/sweep_variance.py).
    latency_ratios: dict[str, float] = field(default_factory=dict)
    # Where the figures came from: {"ap": "host: ...", "latency": "adb SERIAL: TNNTest on core 7"}
    # (empty for the host sweep, whose every figure is this machine's), and the device's
    # runtime facts for this plan (TensorRT version, typing, engine, per-component time...).
    sources: dict[str, str] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``int8-int8-fp16`` in pipeline order (file names, plot labels)."""
        return "-".join(self.precisions.values())

    @property
    def ap(self) -> float | None:
        return self.metrics.get("AP")

    @property
    def p50(self) -> float:
        return float(self.latency_ms["p50"])  # type: ignore[arg-type]

    def ratio(self, stat: str = "p50") -> float | None:
        """Latency ratio to FP32 for ``stat`` (None when the result does not carry it)."""
        return self.latency_ratio if stat == "p50" else self.latency_ratios.get(stat)

    @property
    def speedup(self) -> float:
        """FP32 p50 / this plan's p50 (>1 is faster than FP32)."""
        return 1.0 / self.latency_ratio

    @property
    def is_fp32(self) -> bool:
        return all(p == "fp32" for p in self.precisions.values())

    def display_name(self) -> str:
        return self.name or self.label

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "name": self.name, "label": self.label, "precisions": dict(self.precisions),
                "metrics": dict(self.metrics), "detections": self.detections,
                "latency_ms": dict(self.latency_ms), "runs": self.runs,
                "latency_ratio": self.latency_ratio, "latency_ratios": dict(self.latency_ratios),
                "speedup": self.speedup, "pareto": self.pareto,
                "file": self.file, "file_sha256": self.file_sha256, "seconds": dict(self.seconds),
                **({"sources": dict(self.sources)} if self.sources else {}),
                **({"device": dict(self.device)} if self.device else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PlanResult":
        return cls(spec=str(d["spec"]), precisions=dict(d["precisions"]), metrics=dict(d["metrics"]),
                   latency_ms=dict(d["latency_ms"]), runs=int(d["runs"]),
                   latency_ratio=float(d["latency_ratio"]), name=d.get("name"), file=d.get("file", ""),
                   file_sha256=d.get("file_sha256", ""), detections=int(d.get("detections", 0)),
                   pareto=bool(d.get("pareto", False)), seconds=dict(d.get("seconds", {})),
                   latency_ratios={k: float(v) for k, v in (d.get("latency_ratios") or {}).items()},
                   sources=dict(d.get("sources") or {}), device=dict(d.get("device") or {}))


@dataclass
class SweepReport:
    model: dict[str, Any]  # name, components, input, source, checkpoint_sha256, onnx_sha256
    dataset: dict[str, Any]  # annotations, annotations_sha256, images_dir, images
    backend: str
    latency: dict[str, Any]  # runs, warmup, repeats, core, threads, interleaved, device
    plans: list[PlanResult]
    calibration: dict[str, Any] | None = None  # method, num_images, table_sha256, images_sha256
    tool_versions: dict[str, str] = field(default_factory=dict)
    max_ap_drop: float | None = None
    created: str = field(default_factory=_now)
    # {"accuracy": simulated|fused|native, "latency": fused|..., "host_isa": ...}; None in
    # results written before edgeseg recorded it (their AP used fused numerics).
    numerics: dict[str, Any] | None = None

    # ---------------------------------------------------------------- queries
    @property
    def components(self) -> list[str]:
        return list(self.model.get("components") or (self.plans[0].precisions if self.plans else []))

    def reference(self) -> PlanResult:
        """The all-FP32 plan every ratio is measured against."""
        for p in self.plans:
            if p.is_fp32:
                return p
        raise EdgesegError("the sweep has no all-FP32 plan to compare against",
                           "re-run `edgeseg sweep` (it always measures FP32 as the reference)")

    def plan(self, spec: str) -> PlanResult | None:
        return next((p for p in self.plans if p.spec == spec), None)

    def fastest_within(self, max_ap_drop: float) -> PlanResult:
        """The lowest-p50 plan whose AP is at most ``max_ap_drop`` below FP32's (FP32 itself qualifies)."""
        ref_ap = self.reference().ap or 0.0
        ok = [p for p in self.plans if (p.ap or 0.0) >= ref_ap - max_ap_drop - 1e-9]
        return min(ok, key=lambda p: (p.p50, -(p.ap or 0.0)))

    def mark_pareto(self) -> None:
        front = pareto_front([(p.p50, p.ap or 0.0) for p in self.plans])
        for i, p in enumerate(self.plans):
            p.pareto = i in front

    # ---------------------------------------------------------------- json
    def to_dict(self) -> dict[str, Any]:
        return {"format": SWEEP_FORMAT, "version": SWEEP_VERSION, "created": self.created,
                "model": self.model, "dataset": self.dataset, "backend": self.backend,
                "calibration": self.calibration, "latency": self.latency,
                "tool_versions": self.tool_versions, "max_ap_drop": self.max_ap_drop,
                "numerics": self.numerics,
                "reference": self.reference().spec if self.plans else None,
                "plans": [p.to_dict() for p in self.plans]}

    @classmethod
    def from_dict(cls, d: Any, source: str = "sweep result") -> "SweepReport":
        fix = "pass a JSON file written by `edgeseg sweep`"
        if not isinstance(d, dict) or d.get("format") != SWEEP_FORMAT:
            raise EdgesegError(f"{source} is not an edgeseg sweep result (no \"format\": \"{SWEEP_FORMAT}\")", fix)
        if int(d.get("version", 0)) > SWEEP_VERSION:
            raise EdgesegError(f"{source} has sweep format version {d.get('version')}; this edgeseg reads "
                               f"up to {SWEEP_VERSION}", "upgrade edgeseg, or re-run the sweep with this version")
        if not isinstance(d.get("plans"), list) or not d["plans"]:
            raise EdgesegError(f"{source} lists no plans", fix)
        try:
            plans = [PlanResult.from_dict(p) for p in d["plans"]]
            report = cls(model=dict(d["model"]), dataset=dict(d["dataset"]), backend=str(d["backend"]),
                         latency=dict(d.get("latency") or {}), plans=plans, calibration=d.get("calibration"),
                         tool_versions=dict(d.get("tool_versions") or {}), max_ap_drop=d.get("max_ap_drop"),
                         created=str(d.get("created", "")), numerics=d.get("numerics"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise EdgesegError(f"{source} is missing or has a malformed field: {type(e).__name__}: {e}", fix) from e
        for p in plans:
            ratios = [p.latency_ratio, *p.latency_ratios.values()]
            if not all(_finite(r) and r > 0 for r in ratios) or not _finite(p.latency_ms.get("p50")):
                raise EdgesegError(f"{source}: plan {p.spec} has no valid latency (p50 / ratios)", fix)
        specs = [p.spec for p in plans]
        if len(set(specs)) != len(specs):
            raise EdgesegError(f"{source} lists a plan twice", fix)
        return report

    def save(self, path: str | os.PathLike) -> Path:
        from edgeseg.utils import atomic

        return atomic.write_json(path, self.to_dict())

    # ---------------------------------------------------------------- markdown
    def to_markdown(self) -> str:
        return render_markdown(self)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def load_sweep(path: str | os.PathLike, what: str = "sweep result") -> SweepReport:
    """Read and validate a sweep JSON; one clear error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise EdgesegError(f"{what} {p} not found", "run `edgeseg sweep ... -o DIR` and pass DIR/sweep.json")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgesegError(f"{what} {p} is not valid JSON: {e}", "pass a JSON file written by `edgeseg sweep`") from e
    return SweepReport.from_dict(data, source=f"{what} {p}")


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the (latency, accuracy) points no other point beats on both counts.

    A point is dominated when another is at least as fast *and* at least as accurate,
    and strictly better in one of the two. Identical points dominate neither each other.
    """
    front = set()
    for i, (lat_i, acc_i) in enumerate(points):
        dominated = any(lat_j <= lat_i and acc_j >= acc_i and (lat_j < lat_i or acc_j > acc_i)
                        for j, (lat_j, acc_j) in enumerate(points) if j != i)
        if not dominated:
            front.add(i)
    return front


# ------------------------------------------------------------------------- formatting
def fmt_ap(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def fmt_ms(x: float) -> str:
    return f"{x:.2f}"


def fmt_speedup(x: float) -> str:
    return f"{x:.2f}x"


def _precision_cell(p: str) -> str:
    return p.upper()


def render_markdown(report: SweepReport) -> str:
    comps = report.components
    ref = report.reference()
    lines = [f"# Precision sweep: {report.model.get('name', '?')}", ""]
    size = report.model.get("input_size")
    target = report.latency.get("target") or "local"
    per_run = "process CPU time per run" if report.latency.get("clock") == "cpu" else "runs"
    where = (f"one pinned core (#{report.latency.get('core')}), {report.latency.get('threads', 1)} thread, "
             f"p50 of {ref.runs} {per_run} per plan") if target == "local" else \
        (f"latency on **{target}**, median of {ref.runs} {report.latency.get('statistic', 'runs')} per plan")
    facts = [f"backend **{report.backend}**",
             f"input {size[0]}x{size[1]}" if size else None,
             f"{report.dataset.get('images', '?')} val images ({Path(str(report.dataset.get('annotations', '?'))).name})",
             where]
    if report.numerics:
        n = report.numerics
        facts.append(f"int8 numerics: AP {n.get('accuracy', '?')}, latency {n.get('latency', '?')} "
                     f"(host {n.get('host_isa', '?')})")
    if report.calibration:
        cal = report.calibration
        asked = cal.get("num_requested")
        used = cal.get("num_images")
        fewer = f" (--calib-num {asked}: the folder holds no more)" if asked and asked > (used or 0) else ""
        facts.append(f"INT8 ranges: one {cal.get('method', '?')} calibration on {used or '?'} images{fewer}")
    lines.append("; ".join(f for f in facts if f) + ".")
    lines.append("")
    # Where each figure came from, as footnote letters (one per distinct source).
    notes: dict[str, str] = {}
    with_sources = any(p.sources for p in report.plans)
    header = [*comps, *TABLE_METRICS, "p50 ms", "speed-up vs FP32", "Pareto"]
    align = [":---:"] * len(comps) + ["---:"] * (len(TABLE_METRICS) + 2) + [":---:"]
    if with_sources:
        header += ["AP from", "latency from"]
        align += [":---:", ":---:"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(align) + "|")
    for p in report.plans:
        row = [_precision_cell(p.precisions.get(c, "?")) for c in comps]
        row += [fmt_ap(p.metrics.get(m)) for m in TABLE_METRICS]
        row += [fmt_ms(p.p50), fmt_speedup(p.speedup), "yes" if p.pareto else ""]
        if with_sources:
            row += [_note(notes, p.sources.get("ap", "host")), _note(notes, p.sources.get("latency", "host"))]
        lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines.append("")
        lines += [f"- [{letter}] {text}" for text, letter in notes.items()]
    named = [p for p in report.plans if p.name and p.name not in ("fp32", "fp16", "int8")]
    if named:
        # A family's presets (e.g. YolactEdge's "yolact_edge"): the paper's configuration, findable.
        lines.append("")
        lines.append("Presets: " + "; ".join(
            f"**{p.name}** = {p.label} (AP {fmt_ap(p.ap)}, p50 {fmt_ms(p.p50)} ms, {fmt_speedup(p.speedup)}"
            f"{', Pareto' if p.pareto else ''})" for p in named) + ".")
    lines.append("")
    lines.append("Speed-up is FP32's p50 / the plan's p50, both measured in this run (interleaved rounds "
                 "on the same core), so it does not depend on how fast the machine is. Pareto: no other "
                 "plan is both faster and at least as accurate.")
    if report.max_ap_drop is not None:
        best = report.fastest_within(report.max_ap_drop)
        lines.append("")
        lines.append(fastest_sentence(report, report.max_ap_drop, best))
    lines.append("")
    return "\n".join(lines)


def _note(notes: dict[str, str], text: str) -> str:
    if text not in notes:
        notes[text] = "abcdefghijklmnopqrstuvwxyz"[len(notes) % 26]
    return f"[{notes[text]}]"


def fastest_sentence(report: SweepReport, max_ap_drop: float, best: PlanResult) -> str:
    ref = report.reference()
    return (f"Fastest plan within {max_ap_drop:g} AP of FP32 ({fmt_ap(ref.ap)}): **{best.spec}** "
            f"(AP {fmt_ap(best.ap)}, p50 {fmt_ms(best.p50)} ms, {fmt_speedup(best.speedup)}).")
