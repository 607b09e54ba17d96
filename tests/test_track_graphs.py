"""Two graphs from one model: the frame graph and the features graph used by kernel reuse."""

from __future__ import annotations

import json

import numpy as np
import onnx

from edgeseg.export import tags
from edgeseg.export.manifest import Manifest
from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
from edgeseg.track.kernel_reuse import open_video_runtimes, pick_video_graphs
from edgeseg.utils.hashing import sha256_file
from tests.track_artifacts import INPUT, tiny_mobileinst  # noqa: F401  (fixture)


def test_both_graphs_are_in_the_manifest(tiny_mobileinst):
    m = Manifest.load(tiny_mobileinst.folder)
    graphs = {info["graph"]: name for name, info in m.artifacts.items()}
    assert graphs == {"frame": "mobileinst_test.onnx", "features": "mobileinst_test.features.onnx"}
    for name in graphs.values():
        info = m.artifact(name)
        assert sha256_file(tiny_mobileinst.folder / name) == info["sha256"]
        assert info["parity"] and all(p["ok"] for p in info["parity"])
    assert [p["name"] for p in m.artifact(graphs["features"])["parity"]] == ["mask_features"]
    assert m.artifact(graphs["frame"])["primary"] and not m.artifact(graphs["features"])["primary"]
    assert pick_video_graphs(m) == (graphs["frame"], graphs["features"])


def test_both_graphs_are_tagged_and_features_has_no_instance_decoder(tiny_mobileinst):
    frame = onnx.load(str(tiny_mobileinst.folder / "mobileinst_test.onnx"))
    feats = onnx.load(str(tiny_mobileinst.folder / "mobileinst_test.features.onnx"))
    assert tags.untagged_nodes(frame) == [] and tags.untagged_nodes(feats) == []
    assert {tags.get_component(n) for n in frame.graph.node} == {"backbone", "mask_decoder", "instance_decoder"}
    assert {tags.get_component(n) for n in feats.graph.node} == {"backbone", "mask_decoder"}
    assert [o.name for o in feats.graph.output] == ["mask_features"]
    assert len(feats.graph.node) < len(frame.graph.node)


def test_features_graph_equals_frame_graph_mask_features(tiny_mobileinst):
    frame = OnnxRuntimeRuntime(tiny_mobileinst.folder / "mobileinst_test.onnx")
    feats = OnnxRuntimeRuntime(tiny_mobileinst.folder / "mobileinst_test.features.onnx")
    rng = np.random.default_rng(7)
    for _ in range(3):
        x = rng.standard_normal((1, 3, INPUT, INPUT)).astype(np.float32)
        a = frame.run({"image": x})["mask_features"]
        b = feats.run({"image": x})["mask_features"]
        assert a.shape == b.shape and np.abs(a).max() > 0
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    # and a different input gives different features (the comparison can fail)
    y = rng.standard_normal((1, 3, INPUT, INPUT)).astype(np.float32)
    assert not np.allclose(feats.run({"image": y})["mask_features"], a, atol=1e-3)


def test_open_video_runtimes_from_folder_and_from_file(tiny_mobileinst):
    rts = open_video_runtimes(tiny_mobileinst.folder)
    try:
        assert (rts.frame_file, rts.features_file) == ("mobileinst_test.onnx", "mobileinst_test.features.onnx")
        assert [o.name for o in rts.features.outputs()] == ["mask_features"]
    finally:
        rts.close()
    rts = open_video_runtimes(tiny_mobileinst.folder / "mobileinst_test.onnx")
    assert rts.features_file == "mobileinst_test.features.onnx"
    rts.close()


def test_quantized_frame_graph_gets_the_features_graph_at_the_same_precision(tiny_mobileinst, tmp_path):
    """A folder holding fp32 and planned graphs pairs each frame graph with its own features graph."""
    m = Manifest.load(tiny_mobileinst.folder)
    d = m.to_dict()
    plan = {"backbone": "int8", "mask_decoder": "int8", "instance_decoder": "fp16"}
    d["artifacts"]["mobileinst_test.mixed.onnx"] = {**d["artifacts"]["mobileinst_test.onnx"], "primary": False,
                                                    "precision": {"name": "mixed", "precisions": plan}}
    d["artifacts"]["mobileinst_test.features.mixed.onnx"] = {
        **d["artifacts"]["mobileinst_test.features.onnx"],
        "precision": {"name": "mixed", "precisions": {"backbone": "int8", "mask_decoder": "int8"}}}
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    m2 = Manifest.load(tmp_path)
    assert pick_video_graphs(m2) == ("mobileinst_test.onnx", "mobileinst_test.features.onnx")
    assert pick_video_graphs(m2, "mobileinst_test.mixed.onnx") == ("mobileinst_test.mixed.onnx",
                                                                   "mobileinst_test.features.mixed.onnx")
