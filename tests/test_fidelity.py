"""Fidelity report: exact figures on known differences, per output and per component."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest

from edgeseg.data.images import select_images, spec_for_model
from edgeseg.quantize.fidelity import FidelityReport, _Accumulator, fidelity_report
from edgeseg.quantize.plan import PrecisionPlan
from edgeseg.quantize.qdq import quantize_model
from tests.quant_models import COMPONENTS, make_images, make_model


def test_accumulator_figures_on_a_known_difference():
    acc = _Accumulator()
    ref = np.array([3.0, 4.0], np.float32)  # |ref|^2 = 25
    acc.add(ref, np.array([3.0, 3.0], np.float32))  # error^2 = 1
    acc.add(ref, ref)  # a second, perfect image
    r = acc.result("t", None)
    assert r.max_abs_error == 1.0
    assert r.sqnr_db == pytest.approx(10 * math.log10(50 / 1))
    assert r.cosine == pytest.approx((25 + 21) / math.sqrt(50 * (25 + 18)))
    perfect = _Accumulator()
    perfect.add(ref, ref)
    assert perfect.result("p", None).sqnr_db == math.inf and perfect.result("p", None).cosine == pytest.approx(1.0)


def test_shape_mismatch_is_a_clear_error():
    from edgeseg.errors import EdgesegError

    with pytest.raises(EdgesegError, match="shapes differ"):
        _Accumulator().add(np.zeros(3), np.zeros(4))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    model = make_model(root / "m")
    folder = make_images(root / "imgs", n=4)
    spec, _ = spec_for_model(model)
    return model, select_images(folder, spec)


def test_identical_models_are_perfect(setup):
    model, images = setup
    rep = fidelity_report(model, model, images, plan={c: "fp32" for c in COMPONENTS})
    assert rep.num_images == 4
    assert [o.name for o in rep.outputs] == ["logits", "masks"]
    assert list(rep.components) == list(COMPONENTS)  # pipeline order, every component
    for rows in [rep.outputs, *rep.components.values()]:
        for r in rows:
            assert r.max_abs_error == 0.0 and r.sqnr_db == math.inf
    d = json.loads(json.dumps(rep.to_dict()))  # serialisable, inf spelled out
    assert d["outputs"][0]["sqnr_db"] == "inf"


def test_quantized_component_shows_up_where_it_is(setup, tmp_path):
    from edgeseg.quantize.calibrate import calibrate

    model, images = setup
    table = calibrate(model, images, method="minmax")
    plan = PrecisionPlan.parse("head=int8", COMPONENTS)
    q, _ = quantize_model(onnx.load(model), plan, table)
    qpath = tmp_path / "q.onnx"
    onnx.save(q, qpath)
    rep = fidelity_report(model, qpath, images, plan=dict(plan.precisions))
    # backbone and neck are fp32 and upstream of the head: their outputs are exact.
    for comp in ("backbone", "neck"):
        assert all(r.max_abs_error == 0.0 for r in rep.components[comp]), comp
    head = rep.components["head"]
    assert all(0 < r.max_abs_error and 10 < r.sqnr_db < 80 and r.cosine > 0.99 for r in head)
    assert rep.worst_component() == "head"
    md = rep.to_markdown()
    assert "| head (int8) |" in md and "Lowest SQNR at the outputs of: **head**" in md
    rep.save(tmp_path / "f.json", tmp_path / "f.md")
    assert json.loads((tmp_path / "f.json").read_text())["worst_component"] == "head"
    # The file carries edgeseg's marker (invisible when rendered) so a later run may replace it.
    assert (tmp_path / "f.md").read_text() == "<!-- written by edgeseg -->\n" + md


def test_all_fp16_plan_compares_boundaries_that_stay_float16(setup, tmp_path):
    # Between two fp16 components no Cast back to float32 is needed, so the boundary
    # tensor exists only under its fp16 name: the report must find it (it asked ONNX
    # Runtime for a tensor that did not exist, and failed to load the model).
    model, images = setup
    plan = PrecisionPlan.parse("*=fp16", COMPONENTS)
    q, _ = quantize_model(onnx.load(model), plan, None)
    qpath = tmp_path / "fp16.onnx"
    onnx.save(q, qpath)
    rep = fidelity_report(model, qpath, images, plan=dict(plan.precisions))
    assert list(rep.components) == list(COMPONENTS)
    for rows in rep.components.values():
        assert all(0 < r.max_abs_error and r.sqnr_db > 40 and r.cosine > 0.9999 for r in rows)


def test_report_without_components():
    rep = FidelityReport("a.onnx", "b.onnx", 0, "")
    assert rep.worst_component() is None and rep.min_output_cosine() == 1.0


def test_a_boundary_between_two_fp16_components_is_read_under_its_fp16_name(setup, tmp_path):
    # qdq renames the neck -> head tensor (float16 on both sides, no cast): the report finds it.
    model, images = setup
    plan = PrecisionPlan.parse("neck=fp16,head=fp16", COMPONENTS)
    q, _ = quantize_model(onnx.load(model), plan, None)
    qpath = tmp_path / "q16.onnx"
    onnx.save(q, qpath)
    rep = fidelity_report(model, qpath, images, plan=dict(plan.precisions))
    assert all(r.max_abs_error == 0.0 for r in rep.components["backbone"])
    neck = rep.components["neck"]
    assert neck and all(0 < r.max_abs_error < 0.05 and r.cosine > 0.9999 for r in neck)
