"""Precision plans: parsing, defaults, presets, and validation against the model's components."""

from __future__ import annotations

import pytest

from edgeseg.errors import EdgesegError
from edgeseg.export.manifest import Manifest
from edgeseg.quantize.plan import PrecisionPlan, all_combinations

COMPS = ["backbone", "mask_decoder", "instance_decoder"]


def test_explicit_pairs_with_default_for_the_rest():
    plan = PrecisionPlan.parse("backbone=int8, mask_decoder=INT8 ,*=fp16", COMPS)
    assert plan.precisions == {"backbone": "int8", "mask_decoder": "int8", "instance_decoder": "fp16"}
    assert plan.needs_calibration and not plan.is_fp32
    assert plan.label() == "int8-int8-fp16"
    assert plan.components_at("fp16") == ["instance_decoder"]


def test_unlisted_components_default_to_fp32_and_aliases_normalise():
    plan = PrecisionPlan.parse("backbone=half", COMPS)
    assert plan.precisions == {"backbone": "fp16", "mask_decoder": "fp32", "instance_decoder": "fp32"}
    assert not plan.needs_calibration


def test_presets_generic_and_model_specific():
    assert PrecisionPlan.parse("int8", COMPS).precisions == dict.fromkeys(COMPS, "int8")
    mixed = PrecisionPlan.parse("mixed", COMPS, presets={"mixed": "backbone=int8,*=fp16"})
    assert mixed.name == "mixed"
    assert mixed.precisions["backbone"] == "int8" and mixed.precisions["instance_decoder"] == "fp16"


def test_unknown_component_lists_the_valid_ones():
    with pytest.raises(EdgesegError) as e:
        PrecisionPlan.parse("backbon=int8", COMPS)
    assert "backbon" in e.value.problem
    assert "did you mean backbone" in e.value.fix
    for c in COMPS:
        assert c in e.value.fix


@pytest.mark.parametrize("spec,match", [
    ("backbone=int4", "unknown precision"),
    ("backbone", "cannot read"),
    ("backbone=int8,backbone=fp16", "twice"),
    ("", "empty"),
])
def test_bad_specs_are_one_clear_error(spec, match):
    with pytest.raises(EdgesegError, match=match):
        PrecisionPlan.parse(spec, COMPS)


def test_manifest_plan_validates_against_recorded_components():
    m = Manifest(model="x", components={c: {"module": c} for c in COMPS}, presets={"fast": "*=int8"})
    assert m.plan("fast").precisions == dict.fromkeys(COMPS, "int8")
    with pytest.raises(EdgesegError, match="unknown component 'neck'"):
        m.plan("neck=int8")
    with pytest.raises(EdgesegError, match="no components"):
        Manifest(model="y").plan("int8")


def test_dict_round_trip_and_combinations():
    plan = PrecisionPlan.parse("backbone=int8,*=fp16", COMPS)
    assert PrecisionPlan.from_dict(plan.to_dict()) == plan
    combos = all_combinations(COMPS)
    assert len(combos) == 8 and len({c.label() for c in combos}) == 8


# ----------------------------------------------------------------------------- below components
def test_units_inside_components_parse_and_round_trip():
    comps = ["backbone", "neck", "head"]
    p = PrecisionPlan.parse("backbone=int8,head=int8,head/cls=fp16,re:/proj/|/out{1,2}/=fp32", comps)
    assert p.precisions == {"backbone": "int8", "neck": "fp32", "head": "int8"}
    assert p.exceptions == {"head/cls": "fp16", "re:/proj/|/out{1,2}/": "fp32"}
    assert PrecisionPlan.parse(p.spec(), comps) == p and PrecisionPlan.from_dict(p.to_dict()) == p
    assert p.label().startswith("int8-fp32-int8-x") and p.label() != PrecisionPlan.parse(
        "backbone=int8,head=int8,head/cls=int8", comps).label()
    assert PrecisionPlan.parse("*=fp32,neck/a=int8", comps).needs_calibration


@pytest.mark.parametrize("spec, problem", [
    ("nek/x=int8", "not inside a component"),
    ("head/=fp16", "names no module"),
    ("re:(=fp16", "not a valid regular expression"),
    ("head/a=fp16,head/a=int8", "appears twice"),
])
def test_bad_units_are_one_clear_error(spec, problem):
    with pytest.raises(EdgesegError, match=problem):
        PrecisionPlan.parse(spec, ["backbone", "neck", "head"])
