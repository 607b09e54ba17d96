"""ONNX export: tags on every node after simplification, parity, manifest, atomicity."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from edgeseg.errors import EdgesegError
from edgeseg.export import tags
from edgeseg.export.manifest import Manifest
from edgeseg.export.onnx import SIMPLIFIERS, check_parity, export_onnx
from tests.tiny_models import TinySegModel


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    torch.manual_seed(0)
    model = TinySegModel().eval()
    out = tmp_path_factory.mktemp("export") / "tiny"
    return model, export_onnx(model, out)


def test_every_node_is_tagged_with_a_component(tiny_export):
    _, result = tiny_export
    proto = onnx.load(str(result.onnx_path))
    assert proto.graph.node, "graph is empty"
    assert tags.untagged_nodes(proto) == []
    comps = {tags.get_component(n) for n in proto.graph.node}
    assert comps == {"backbone", "neck", "head"}


def test_tags_follow_module_scopes(tiny_export):
    _, result = tiny_export
    proto = onnx.load(str(result.onnx_path))
    for node in proto.graph.node:
        for comp in ("backbone", "neck", "head"):
            if node.name.startswith(f"/{comp}/"):
                assert tags.get_component(node) == comp, node.name


@pytest.mark.parametrize("simplifier", sorted(SIMPLIFIERS))
def test_parity_for_every_simplifier(tmp_path, simplifier):
    torch.manual_seed(1)
    model = TinySegModel().eval()
    result = export_onnx(model, tmp_path / simplifier, simplifier=simplifier)
    for p in result.graphs["frame"].parity:
        assert p.cosine > 0.99999, p
        assert p.max_abs_error < 1e-4, p
    assert tags.untagged_nodes(onnx.load(str(result.onnx_path))) == []


def test_parity_detects_a_wrong_graph(tiny_export, tmp_path):
    """Parity must fail when the ONNX file does not compute what the module computes."""
    model, result = tiny_export
    proto = onnx.load(str(result.onnx_path))
    # Corrupt one weight: parity against the untouched module must now report a mismatch.
    init = next(i for i in proto.graph.initializer if len(i.dims) == 4)
    arr = onnx.numpy_helper.to_array(init).copy()
    arr *= -1.0
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    x = np.random.default_rng(0).standard_normal(model.input_spec.shape).astype(np.float32)
    parity = check_parity(bad, model, x, "image", model.output_names)
    assert not all(p.ok for p in parity)


def test_manifest_records_model_components_and_parity(tiny_export):
    _, result = tiny_export
    m = Manifest.load(result.folder)
    assert m.model == "tiny_seg"
    assert m.input["shape"] == [1, 3, 32, 32]
    assert list(m.components) == ["backbone", "neck", "head"]
    art = m.artifact(result.onnx_path.name)
    assert art["primary"] and art["kind"] == "onnx" and art["opset"] == 17
    proto = onnx.load(str(result.onnx_path))
    listed = sorted(n for nodes in art["components"].values() for n in nodes)
    assert listed == sorted(n.name for n in proto.graph.node)
    assert {p["name"] for p in art["parity"]} == {"logits", "masks", "features"}
    assert m.history[-1]["step"] == "export"
    assert "onnx" in m.history[-1]["versions"]
    assert m.presets == {"mixed": "backbone=int8,neck=int8,head=fp16"}
    json.dumps(m.to_dict())  # serialisable


def test_failed_export_leaves_nothing(tmp_path):
    class Broken(TinySegModel):
        def forward(self, x):
            raise RuntimeError("boom")

    out = tmp_path / "broken"
    with pytest.raises(EdgesegError, match="torch.onnx.export failed"):
        export_onnx(Broken(), out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_reexport_keeps_the_previous_artifact(tiny_export, tmp_path):
    model, _ = tiny_export
    out = tmp_path / "keep"
    export_onnx(model, out)
    before = sorted(p.name for p in out.iterdir())

    class Broken(TinySegModel):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(EdgesegError):
        export_onnx(Broken(), out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]
