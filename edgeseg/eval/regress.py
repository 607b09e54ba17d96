"""The accuracy/latency regression gate: a sweep result against a committed baseline.

Per plan (matched by its canonical spec), two-sided:

* **fail** when mask AP dropped by more than ``ap_tol`` points, or when the latency ratio
  to FP32 grew by more than ``latency_tol`` (relative: ``ratio_now > ratio_base * (1 + tol)``).
  The ratio is stat(plan) / stat(FP32) measured in the *same* run, so a slower CI machine
  moves both and cancels out; what remains is the plan getting slower *relative to FP32*
  (a lost integer kernel, an extra cast, a fallback to float). ``stat`` is p10 by default:
  a machine shared with other work makes latencies bimodal (core to ourselves, or not),
  and the p50 then jumps between the modes; contention only adds time, so the fastest
  decile is what it disturbs least (measured: benchmarks/sweep_variance.py).
* **warn** when a figure improved beyond the same tolerance (AP up by more than ``ap_tol``,
  ratio below ``ratio_base * (1 - tol)``): the baseline is stale and hides the gain; update it.
* a plan of the baseline **missing** from the result does not pass (the gate would
  otherwise pass by measuring less); it is a configuration problem (the sweep ran other
  ``--plans``), not a regression, so the CLI exits 2 for it; a plan only in the result is a
  **new** note.

Runs that cannot be compared at all (another model or checkpoint, another dataset,
another backend) are refused with one clear error instead of a meaningless diff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.quantize.sweep_report import SweepReport

OK, WARN, FAIL, MISSING, NEW = "ok", "warn", "fail", "missing", "new"
LATENCY_STATS = ("p10", "p50")


@dataclass
class PlanDiff:
    spec: str
    label: str
    status: str  # ok | warn | fail | missing | new
    ap_base: float | None = None
    ap_now: float | None = None
    ratio_base: float | None = None
    ratio_now: float | None = None
    reasons: list[str] = field(default_factory=list)
    failed_on: list[str] = field(default_factory=list)  # "ap", "latency", "missing"

    @property
    def ap_delta(self) -> float | None:
        if self.ap_base is None or self.ap_now is None:
            return None
        return self.ap_now - self.ap_base

    @property
    def ratio_change(self) -> float | None:
        """Relative change of the latency ratio (+0.10 = 10% slower relative to FP32)."""
        if self.ratio_base is None or self.ratio_now is None:
            return None
        return self.ratio_now / self.ratio_base - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "label": self.label, "status": self.status, "ap_base": self.ap_base,
                "ap_now": self.ap_now, "ap_delta": self.ap_delta, "ratio_base": self.ratio_base,
                "ratio_now": self.ratio_now, "ratio_change": self.ratio_change, "reasons": list(self.reasons),
                "failed_on": list(self.failed_on)}


@dataclass
class RegressionReport:
    rows: list[PlanDiff]
    ap_tol: float
    latency_tol: float
    notes: list[str] = field(default_factory=list)  # context that differs but does not forbid comparing
    latency_stat: str = "p10"

    @property
    def failed(self) -> list[PlanDiff]:
        return [r for r in self.rows if r.status in (FAIL, MISSING)]

    @property
    def regressed(self) -> list[PlanDiff]:
        """Plans measured in both runs that got worse beyond tolerance (exit 1)."""
        return [r for r in self.rows if r.status == FAIL]

    @property
    def missing(self) -> list[PlanDiff]:
        """Baseline plans the result did not measure: the sweeps were configured differently."""
        return [r for r in self.rows if r.status == MISSING]

    @property
    def warned(self) -> list[PlanDiff]:
        return [r for r in self.rows if r.status == WARN]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def latency_only(self) -> bool:
        """Failed, and only on latency ratios: the one verdict a noisy machine can cause
        (AP is deterministic on a given machine), so CI may confirm it by re-measuring."""
        return bool(self.failed) and all(set(r.failed_on) == {"latency"} for r in self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "edgeseg-regress", "passed": self.passed, "latency_only_failure": self.latency_only,
                "ap_tol": self.ap_tol, "latency_tol": self.latency_tol, "latency_stat": self.latency_stat,
                "rows": [r.to_dict() for r in self.rows], "notes": list(self.notes)}


def check_tolerances(ap_tol: float, latency_tol: float) -> None:
    if not ap_tol >= 0:
        raise EdgesegError(f"--ap-tol must be >= 0 AP points, got {ap_tol}", "e.g. --ap-tol 1.0")
    if not 0 <= latency_tol < 1:
        raise EdgesegError(f"--latency-tol must be a fraction in [0, 1), got {latency_tol}",
                           "e.g. --latency-tol 0.15 (15% growth of the latency ratio to FP32)")


def check_comparable(result: SweepReport, baseline: SweepReport) -> list[str]:
    """Raise for runs that must not be compared; return notes for harmless differences."""
    fix = "compare runs of the same model, checkpoint, dataset and backend, or accept the new run with --update-baseline"
    rm, bm = result.model, baseline.model
    if rm.get("name") != bm.get("name"):
        raise EdgesegError(f"the baseline is for model {bm.get('name')}, the result for {rm.get('name')}", fix)
    if list(rm.get("components") or []) != list(bm.get("components") or []):
        raise EdgesegError(f"the baseline's components ({', '.join(bm.get('components') or [])}) differ from the "
                           f"result's ({', '.join(rm.get('components') or [])})", fix)
    if rm.get("input_size") != bm.get("input_size"):
        raise EdgesegError(f"the baseline was measured at input {bm.get('input_size')}, the result at "
                           f"{rm.get('input_size')}", fix)
    rc, bc = rm.get("checkpoint_sha256"), bm.get("checkpoint_sha256")
    if rc and bc and rc != bc:
        raise EdgesegError(f"the baseline is for another checkpoint of {rm.get('name')} "
                           f"(sha256 {bc[:12]} vs {rc[:12]})", fix)
    if result.backend != baseline.backend:
        raise EdgesegError(f"the baseline was measured on {baseline.backend}, the result on {result.backend}", fix)
    rd, bd = result.dataset.get("annotations_sha256"), baseline.dataset.get("annotations_sha256")
    if rd and bd and rd != bd:
        raise EdgesegError("the baseline was measured on another dataset (annotation file sha256 "
                           f"{bd[:12]} vs {rd[:12]})", fix)
    if result.dataset.get("images") != baseline.dataset.get("images"):
        raise EdgesegError(f"the baseline evaluated {baseline.dataset.get('images')} images, the result "
                           f"{result.dataset.get('images')}", "run the sweep with the same --limit as the baseline")
    notes = _numerics_notes(result, baseline)
    if not (rc and bc):
        notes.append("checkpoint hash missing on one side: the model could only be matched by name")
    # Compared by their ranges when both sides recorded them (the table file also holds the
    # images' folder, which differs between machines); older results by the file's hash.
    key = "ranges_sha256" if all("ranges_sha256" in (r.calibration or {}) for r in (result, baseline)) \
        else "table_sha256"
    rcal, bcal = (result.calibration or {}).get(key), (baseline.calibration or {}).get(key)
    if rcal != bcal:
        # Not an error: a changed calibration is exactly what the AP figures should judge.
        notes.append(f"calibration ranges differ ({key} {str(bcal)[:12]} -> {str(rcal)[:12]})")
    if rm.get("onnx_sha256") != bm.get("onnx_sha256"):
        notes.append("the exported FP32 ONNX differs (exporter or simplifier change?)")
    changed = sorted(k for k in set(result.tool_versions) | set(baseline.tool_versions)
                     if result.tool_versions.get(k) != baseline.tool_versions.get(k))
    if changed:
        notes.append("tool versions differ: " + ", ".join(
            f"{k} {baseline.tool_versions.get(k, '-')} -> {result.tool_versions.get(k, '-')}" for k in changed))
    rr, br = result.reference().runs, baseline.reference().runs
    if rr != br:
        notes.append(f"latency runs per plan differ ({br} -> {rr})")
    return notes


def _numerics_notes(result: SweepReport, baseline: SweepReport) -> list[str]:
    """Refuse AP measured with other int8 numerics; note a baseline that predates the record
    and a host whose int8 path differs (int8 latency ratios depend on it)."""
    rn, bn = result.numerics or {}, baseline.numerics or {}
    ra, ba = rn.get("accuracy"), bn.get("accuracy")
    if ra and ba and ra != ba:
        raise EdgesegError(f"the baseline's AP was measured with {ba} int8 numerics, the result's with {ra}",
                           f"re-run the sweep with --numerics {ba}, or accept the new run with --update-baseline")
    notes = []
    for side, have, other in (("baseline", ba, ra), ("result", ra, ba)):
        if other and not have:
            notes.append(f"the {side} does not record its int8 numerics (older edgeseg: ONNX Runtime's fused "
                         f"kernels of its host); the other side's AP uses {other}")
    ri, bi = rn.get("host_int8_dot"), bn.get("host_int8_dot")
    if ri and bi and ri != bi:
        notes.append(f"the hosts' int8 paths differ ({bi} -> {ri}): int8 latency ratios to FP32 depend on it")
    return notes


def _ratios_of(report: SweepReport, stat: str, which: str) -> dict[str, float]:
    out = {}
    for p in report.plans:
        r = p.ratio(stat)
        if r is None:
            raise EdgesegError(f"the {which} has no {stat} latency ratio for plan {p.spec}",
                               f"re-run the sweep with this edgeseg (it records p10 and p50), or pass "
                               f"--latency-stat p50")
        out[p.spec] = r
    return out


def compare(result: SweepReport, baseline: SweepReport, ap_tol: float = 1.0,
            latency_tol: float = 0.15, latency_stat: str = "p10") -> RegressionReport:
    check_tolerances(ap_tol, latency_tol)
    if latency_stat not in LATENCY_STATS:
        raise EdgesegError(f"unknown latency statistic {latency_stat!r}", f"use one of {', '.join(LATENCY_STATS)}")
    notes = check_comparable(result, baseline)
    base_ratio = _ratios_of(baseline, latency_stat, "baseline")
    now_ratio = _ratios_of(result, latency_stat, "result")
    rows: list[PlanDiff] = []
    for b in baseline.plans:
        r = result.plan(b.spec)
        if r is None:
            rows.append(PlanDiff(b.spec, b.display_name(), MISSING, ap_base=b.ap, ratio_base=base_ratio[b.spec],
                                 reasons=["plan not in the result"], failed_on=["missing"]))
            continue
        row = PlanDiff(b.spec, b.display_name(), OK, ap_base=b.ap, ap_now=r.ap,
                       ratio_base=base_ratio[b.spec], ratio_now=now_ratio[r.spec])
        fails, warns = [], []
        if b.ap is not None and r.ap is not None:
            if r.ap < b.ap - ap_tol:
                fails.append(f"AP dropped {b.ap - r.ap:.2f} > {ap_tol:g}")
                row.failed_on.append("ap")
            elif r.ap > b.ap + ap_tol:
                warns.append(f"AP rose {r.ap - b.ap:.2f} > {ap_tol:g} (stale baseline)")
        elif b.ap is not None and r.ap is None:
            fails.append("AP missing from the result")
            row.failed_on.append("ap")
        # FP32's ratio is 1 by definition on both sides: nothing to gate.
        if not b.is_fp32:
            if row.ratio_now > row.ratio_base * (1 + latency_tol):
                fails.append(f"{latency_stat} latency ratio to FP32 grew {100 * row.ratio_change:.1f}% > {100 * latency_tol:g}%")
                row.failed_on.append("latency")
            elif row.ratio_now < row.ratio_base * (1 - latency_tol):
                warns.append(f"{latency_stat} latency ratio to FP32 fell {-100 * row.ratio_change:.1f}% > "
                             f"{100 * latency_tol:g}% (stale baseline)")
        row.reasons = fails + warns
        row.status = FAIL if fails else WARN if warns else OK
        rows.append(row)
    base_specs = {b.spec for b in baseline.plans}
    for r in result.plans:
        if r.spec not in base_specs:
            rows.append(PlanDiff(r.spec, r.display_name(), NEW, ap_now=r.ap, ratio_now=now_ratio[r.spec],
                                 reasons=["not in the baseline (add it with --update-baseline)"]))
    return RegressionReport(rows, ap_tol, latency_tol, notes, latency_stat)
