"""Per-node error (SQNR / cosine) of a quantized graph, as Model Explorer node data and HTML."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest

from edgeseg.data.images import select_images, spec_for_model
from edgeseg.quantize.calibrate import calibrate
from edgeseg.quantize.node_error import node_errors
from edgeseg.quantize.plan import PrecisionPlan
from edgeseg.quantize.qdq import quantize_file
from tests.quant_models import COMPONENTS, make_images, make_model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("node_error")
    model = make_model(root / "model")
    folder = make_images(root / "images", n=6)
    spec, _ = spec_for_model(model)
    table = calibrate(model, select_images(folder, spec, num=4), method="minmax")
    out = root / "q.onnx"
    quantize_file(model, PrecisionPlan.parse("backbone=int8", COMPONENTS), table, out)
    feeds = list(select_images(folder, spec, num=2, seed=9).feeds())
    return model, out, feeds


def test_only_the_int8_component_loses_fidelity(pair):
    model, q, feeds = pair
    report = node_errors(model, q, feeds)
    assert report.images == 2 and report.nodes
    src = onnx.load(model)
    names = [n.name for n in src.graph.node]
    assert [n.node for n in report.nodes] == [x for x in names if x in {n.node for n in report.nodes}]  # graph order
    back = [n for n in report.nodes if n.component == "backbone"]
    assert back and all(n.sqnr_db < 80 for n in back)  # quantized: measurable noise
    # The first node of the fp32 neck reads the backbone's quantized output: errors propagate,
    # yet an fp32 component adds none of its own, so it is never better than its input.
    by = report.by_component()
    assert set(by) == set(COMPONENTS)
    assert by["neck"]["min_sqnr_db"] <= by["backbone"]["median_sqnr_db"] + 20


def test_identical_graphs_are_lossless(pair):
    model, _, feeds = pair
    report = node_errors(model, model, feeds[:1])
    assert all(n.sqnr_db == math.inf and n.cosine == pytest.approx(1.0) for n in report.nodes)


def test_written_as_model_explorer_node_data_and_html(pair, tmp_path):
    model, q, feeds = pair
    report = node_errors(model, q, feeds)
    paths = report.save(tmp_path, "q")
    data = json.loads((tmp_path / "q.sqnr.node_data.json").read_text())
    (graph, body), = data.items()
    assert graph == onnx.load(model).graph.name or graph == "main_graph"
    assert set(body["results"]) == {n.node for n in report.nodes}
    assert all(set(r) == {"value"} and np.isfinite(r["value"]) for r in body["results"].values())
    assert [t["value"] for t in body["thresholds"]] == sorted(t["value"] for t in body["thresholds"])
    html = (tmp_path / "q.node_error.html").read_text()
    assert "<table>" in html and report.worst(1)[0].node in html
    assert len(paths) == 4 and all(p.is_file() for p in paths)


def test_quantize_cli_writes_node_error_beside_the_fidelity_report(tmp_path):
    from click.testing import CliRunner

    from edgeseg.cli import cli

    model = make_model(tmp_path / "model")
    folder = make_images(tmp_path / "images", n=8)
    out = tmp_path / "q.onnx"
    res = CliRunner().invoke(cli, ["quantize", str(model), "--plan", "backbone=int8", "--calib", str(folder),
                                   "--calib-num", "5", "--fidelity-num", "3", "-o", str(out), "--node-error"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "q.node_error.json").read_text())
    assert report["images"] == 3  # the fidelity report's held-out images, not the calibration ones
    assert (tmp_path / "q.sqnr.node_data.json").is_file() and (tmp_path / "q.node_error.html").is_file()
    assert "per-node error" in res.output

    # Asking for node errors without the images they are measured on is one error, before any work.
    from tests.test_cli_errors import assert_one_error, run

    code, _, err = run("quantize", model, "--plan", "backbone=int8", "--calib", folder,
                       "-o", tmp_path / "r.onnx", "--node-error", "--no-fidelity")
    assert_one_error(code, err, "--no-fidelity")
    assert not (tmp_path / "r.onnx").exists()
