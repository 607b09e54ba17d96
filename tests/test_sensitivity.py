"""Sensitivity on the task metric and the greedy plan search."""

from __future__ import annotations

import json

import pytest

from edgeseg.quantize.plan import PrecisionPlan
from edgeseg.quantize.sensitivity import (SensitivityReport, SensitivitySettings, UnitResult, greedy_search,
                                          run_sensitivity, write_reports)
from edgeseg.quantize.sweep_latency import LatencySettings

COMPS = ["backbone", "neck", "head"]


class StubBench:
    """AP = 50 minus a cost per int8 unit (not raised to fp16); counts evaluations."""

    def __init__(self, costs: dict[str, float], full_offset: float = 0.0):
        self.costs, self.full_offset = costs, full_offset
        self.evaluations = 0
        self.seen: list[str] = []

    def ap(self, plan: PrecisionPlan, full: bool = False) -> float:
        self.evaluations += 1
        self.seen.append(plan.spec())
        ap = 50.0
        for unit, cost in self.costs.items():
            comp = unit.split("/")[0]
            prec = plan.exceptions.get(unit, plan.precisions[comp]) if "/" in unit else plan.precisions[unit]
            ap -= cost if prec == "int8" else 0.0
        return ap + (self.full_offset if full else 0.0)

    def latency(self, plans, settings):
        return {p.spec(): 1.0 for p in plans}


def _report(units):
    return SensitivityReport(model={"name": "m", "components": COMPS}, reference={"ap": 50.0, "ap_full": 50.0},
                             units=units, settings={"precision": "int8", "max_ap_drop": 1.0})


def test_search_raises_the_most_harmful_units_until_within_budget():
    units = [UnitResult("backbone", "component", "backbone", "", 10, 5, 49.5, 0.5),
             UnitResult("head/cls", "group", "head", "", 2, 1, 48.0, 2.0),
             UnitResult("head/mask", "group", "head", "", 2, 1, 49.2, 0.8),
             UnitResult("neck", "component", "neck", "", 4, 2, 49.9, 0.1)]
    bench = StubBench({"backbone": 0.5, "head/cls": 2.0, "head/mask": 0.8, "neck": 0.1})
    report = _report(units)
    greedy_search(report, bench, SensitivitySettings(limit=None, max_ap_drop=1.0), lambda m: None)
    raised = [s.raised for s in report.search]
    # all-int8 = 46.6; raising head/cls (50 - 1.4 = 48.6), then head/mask (49.4): within 1 AP
    assert raised == [None, "head/cls", "head/mask"]
    assert report.search[-1].ap == pytest.approx(49.4) and report.search[-1].ap >= 49.0
    assert "head/cls=fp16" in report.search[-1].spec and "backbone=int8" in report.search[-1].spec
    # a split component (head) is searched by its groups, never as a whole
    assert all(s.raised != "head" for s in report.search)
    assert report.search_evaluations == 3


def test_search_confirms_on_every_image_before_stopping():
    units = [UnitResult("head/cls", "group", "head", "", 2, 1, 48.0, 2.0),
             UnitResult("backbone", "component", "backbone", "", 10, 5, 49.5, 0.5)]
    # On every image the plans score 0.6 lower than on the screening images.
    bench = StubBench({"head/cls": 2.0, "backbone": 0.5}, full_offset=-0.6)
    report = _report(units)
    greedy_search(report, bench, SensitivitySettings(limit=10, max_ap_drop=1.0), lambda m: None)
    # 50 - 0.5 = 49.5 passes the screen but is 48.9 on every image: the search goes on.
    assert [s.raised for s in report.search] == [None, "head/cls", "backbone"]
    assert report.search[-1].ap_full == pytest.approx(49.4)


@pytest.mark.slow
def test_sensitivity_end_to_end_on_a_tiny_model(tmp_path):
    from edgeseg.data.synthetic import SynthConfig, generate
    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    generate(tmp_path / "shapes", SynthConfig(train=4, val=3, videos=0, val_videos=0, height=64, width=64, seed=2))
    model = create_model("mobileinst_test", num_classes=4, input_size=(64, 64)).eval()
    export_onnx(model, tmp_path / "mi", graphs=("frame",))
    settings = SensitivitySettings(limit=None, components=("instance_decoder",), max_group_nodes=40,
                                   search=True, latency=LatencySettings(runs=2, warmup=1, repeats=1))
    report = run_sensitivity(tmp_path / "mi", tmp_path / "shapes/coco/annotations/val.json",
                             tmp_path / "shapes/coco/val", tmp_path / "shapes/coco/train", tmp_path / "work",
                             settings)
    levels = {u.level for u in report.units}
    assert levels == {"component", "group"}
    groups = [u for u in report.units if u.level == "group"]
    assert groups and all(u.component == "instance_decoder" and u.quantizable > 0 for u in groups)
    assert all(u.latency_ratio is not None and u.latency_ratio > 0 for u in report.units)
    assert report.search and report.search[0].raised is None
    paths = write_reports(report, tmp_path / "rep")
    data = json.loads(paths["json"].read_text())
    assert data["format"] == "edgeseg-sensitivity" and len(data["units"]) == len(report.units)
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
