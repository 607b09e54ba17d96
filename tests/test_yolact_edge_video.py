"""YolactEdge's partial feature transform: host warp, the three video graphs, the tracker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseg.models.yolact_edge.warp import warp_features


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("hw", [(7, 9), (5, 5), (1, 4)])
def test_numpy_warp_is_the_official_grid_sample(hw):
    from edgeseg.models.yolact_edge.model import warp_features as torch_warp

    g = np.random.default_rng(0)
    h, w = hw
    feat = g.standard_normal((1, 6, h, w)).astype(np.float32)
    flow = (g.standard_normal((1, 2, h, w)) * 6).astype(np.float32)   # moves of several pixels, some outside
    scale = (1 + 0.1 * g.standard_normal((1, 6, h, w))).astype(np.float32)
    bias = (0.1 * g.standard_normal((1, 6, h, w))).astype(np.float32)
    want = torch_warp(*(torch.from_numpy(a) for a in (feat, flow, scale, bias))).numpy()
    got = warp_features(feat, flow, scale, bias)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5


def test_zero_flow_is_the_identity():
    feat = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    zeros = np.zeros((1, 2, 3, 4), np.float32)
    ones = np.ones_like(feat)
    assert np.array_equal(warp_features(feat, zeros[:, :2], ones, np.zeros_like(feat)), feat)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model("yolact_edge_test", num_classes=3).eval()
    out = tmp_path_factory.mktemp("ye") / "art"
    export_onnx(model, out)
    torch.set_num_threads(before)
    return model, out


def test_warped_graph_with_an_identity_flow_reproduces_the_keyframe(export):
    """The untrained flow net is the identity (zero flow, scale 1, bias 0): on the same
    frame, key and flow + warp + warped must give the same outputs, which checks that
    P3 = lat3 + up(W4) and P6/P7 from W5 rebuild the keyframe's pyramid."""
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    _, folder = export
    key = OnnxRuntimeRuntime(folder / "yolact_edge_test.key.onnx")
    flow = OnnxRuntimeRuntime(folder / "yolact_edge_test.flow.onnx")
    warped = OnnxRuntimeRuntime(folder / "yolact_edge_test.warped.onnx")
    image = key.random_feeds(3)["image"]
    k = key.run({"image": image})
    f = flow.run({"image": image, "key_lat3": k["lat3"]})
    assert np.abs(f["flow4"]).max() == 0 and np.allclose(f["scale5"], 1) and np.abs(f["bias4"]).max() == 0
    assert np.allclose(f["lat3"], k["lat3"], atol=1e-5)
    w4 = warp_features(k["p4"], f["flow4"], f["scale4"], f["bias4"])
    w5 = warp_features(k["p5"], f["flow5"], f["scale5"], f["bias5"])
    out = warped.run({"lat3": f["lat3"], "w4": w4, "w5": w5})
    for name in ("loc", "conf", "coef", "proto"):
        assert np.allclose(out[name], k[name], atol=1e-4), name


def test_feature_warp_tracks_with_every_key_interval(export, tmp_path):
    from edgeseg.models.yolact_edge.video import FeatureWarp
    from edgeseg.track.kernel_reuse import TrackerConfig
    from edgeseg.track.results import video_results

    _, folder = export
    # Every keyword of the track/ strategy protocol (edgeseg track passes them all).
    session = FeatureWarp.open(folder, backend=None, threads=1, max_interval=3, make_missing=True,
                               numerics="simulated")
    try:
        assert set(session.graphs) == {"frame", "flow", "warped"}
        assert session.numerics == "simulated"
        session.check_classes(3, "test")
        g = np.random.default_rng(0)
        frames = [g.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(7)]
        for interval in (1, 3):
            tracker = session.tracker(interval, TrackerConfig(score_threshold=0.0, max_instances=4,
                                                              match_threshold=0.3))
            for frame in frames:
                instances = tracker.step(frame)
                assert all(i.mask.full().shape == (40, 50) for i in instances)
            result = tracker.finish()
            keyframes = [t.keyframe for t in result.timings]
            assert keyframes == [i % interval == 0 for i in range(7)]
            assert all(("warp" in t.parts) == (not t.keyframe) for t in result.timings)
            assert all(t.host_ms >= t.parts.get("warp", 0) for t in result.timings)
            items = video_results(result, 1)
            assert items and all(len(it["segmentations"]) == 7 for it in items)
            ids = [it["track_id"] for it in items]
            assert len(set(ids)) == len(ids)
    finally:
        session.close()


def test_iou_association_keeps_ids_of_overlapping_masks():
    from edgeseg.models.yolact_edge.video import associate_by_iou, mask_iou

    a = np.zeros((2, 8, 8), bool)
    a[0, :4, :4] = True
    a[1, 4:, 4:] = True
    b = np.zeros((3, 8, 8), bool)
    b[0, 4:, 5:] = True          # moved object 1
    b[1, :4, 1:5] = True         # moved object 0
    b[2, :2, 6:] = True          # a new object
    assert mask_iou(a, b).shape == (2, 3)
    assert sorted(associate_by_iou(a, b, 0.5)) == [(0, 1), (1, 0)]
    assert associate_by_iou(a, b, 0.9) == []


@pytest.mark.slow
def test_video_graphs_quantized_at_the_frame_plan(export, tmp_path):
    """A quantized frame graph gets key / flow / warped graphs at its plan, each calibrated
    on its own feeds; the key graph then agrees with the frame graph it extends."""
    import shutil

    from PIL import Image

    from edgeseg.export.manifest import Manifest
    from edgeseg.models.yolact_edge.video import FeatureWarp
    from edgeseg.models.yolact_edge.video_quant import quantize_video_graphs, shifted
    from edgeseg.quantize.pipeline import run_calibration, run_quantize
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    _, src = export
    folder = tmp_path / "art"
    shutil.copytree(src, folder)
    images = tmp_path / "images"
    images.mkdir()
    g = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(g.integers(0, 255, (48, 56, 3), dtype=np.uint8)).save(images / f"{i}.png")
    frame = folder / "yolact_edge_test.onnx"
    cal = run_calibration(frame, images, num=None)
    run_quantize(frame, "yolact_edge", cal.table_path, with_fidelity=False)
    made = quantize_video_graphs(folder, "yolact_edge_test.yolact_edge.onnx")
    assert made == {r: f"yolact_edge_test.{r}.yolact_edge.onnx" for r in ("key", "flow", "warped")}
    manifest = Manifest.load(folder)
    assert manifest.artifact("yolact_edge_test.yolact_edge.onnx")["video_graphs"] == made
    flow_plan = manifest.artifact(made["flow"])["precision"]["precisions"]
    assert flow_plan == {"backbone": "int8", "fpn": "int8", "flow_net": "int8"}
    assert manifest.artifact(made["warped"])["precision"]["precisions"] == {
        "fpn": "int8", "protonet": "fp16", "prediction_head": "fp16"}
    x = OnnxRuntimeRuntime(frame).random_feeds(1)
    a = OnnxRuntimeRuntime(folder / "yolact_edge_test.yolact_edge.onnx").run(x)
    b = OnnxRuntimeRuntime(folder / made["key"]).run(x)
    for name in ("loc", "conf", "coef", "proto"):
        # Same plan, same images; the key graph's extra outputs change which tensors QDQ
        # rounds (an output that also feeds a node is not re-quantized), so not bit-equal.
        x64, y64 = a[name].astype(np.float64).ravel(), b[name].astype(np.float64).ravel()
        assert x64 @ y64 / (np.linalg.norm(x64) * np.linalg.norm(y64)) > 0.999, name
    session = FeatureWarp.open(folder / "yolact_edge_test.yolact_edge.onnx", max_interval=3)
    try:
        assert session.graphs == {"frame": made["key"], "flow": made["flow"], "warped": made["warped"]}
    finally:
        session.close()
    img = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    moved = shifted(img, 2, 1)
    assert np.array_equal(moved[2:, 1:], img[:-2, :-1]) and np.array_equal(moved[0, 0], img[0, 0])


@pytest.mark.tflite
@pytest.mark.slow
def test_tflite_converts_the_graphs_with_feature_inputs(export, tmp_path):
    """FP32 TFLite of the flow and warped graphs (inputs besides the image) matches ONNX
    Runtime; the flow graph's plan gains flow_net from the family's graph_calibration."""
    import shutil

    from edgeseg.export.tflite import export_tflite_graphs
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
    from edgeseg.runtimes.tflite import TFLiteRuntime

    _, src = export
    folder = tmp_path / "art"
    shutil.copytree(src, folder)
    paths = [folder / f"yolact_edge_test{g}.onnx" for g in (".flow", ".warped")]
    results = export_tflite_graphs(paths, plan="fp32")
    flow, warped = results
    assert flow.plan.precisions["flow_net"] == "fp32"
    assert flow.entry["graph"] == "flow" and warped.entry["graph"] == "warped"
    for r, onnx_path in zip(results, paths):
        assert min(p["cosine"] for p in r.parity) > 0.9999
        feeds = OnnxRuntimeRuntime(onnx_path).random_feeds(5)
        want = OnnxRuntimeRuntime(onnx_path).run(feeds)
        with TFLiteRuntime(r.path) as rt:
            assert {i.name for i in rt.inputs()} == set(feeds)
            got = rt.run(feeds)
        for name, a in want.items():
            assert np.abs(got[name] - a).max() <= 1e-3 * max(1.0, float(np.abs(a).max())), name
