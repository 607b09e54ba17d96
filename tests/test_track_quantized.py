"""A planned (quantized) artifact folder tracks with a features graph quantized like its frame graph."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeseg.errors import EdgesegError
from edgeseg.export.manifest import Manifest
from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
from edgeseg.track.kernel_reuse import KernelReuseTracker, TrackerConfig, open_video_runtimes
from edgeseg.quantize.features_graph import features_name, quantize_features_graph
from tests.track_artifacts import INPUT, synth_videos, tiny_mobileinst  # noqa: F401


@pytest.fixture(scope="module")
def planned(tiny_mobileinst, synth_videos, tmp_path_factory):
    """A copy of the tiny export with a calibrated mixed-plan frame graph (int8 backbone and
    mask decoder, fp16 instance decoder) but, unlike `edgeseg quantize`, no quantized features
    graph yet: the tracker must make it."""
    from edgeseg.quantize.pipeline import run_calibration, run_quantize

    folder = tmp_path_factory.mktemp("planned") / "art"
    shutil.copytree(tiny_mobileinst.folder, folder)
    frame = folder / "mobileinst_test.onnx"
    cal = run_calibration(frame, synth_videos / "JPEGImages", method="minmax", num=4, threads=1)
    run_quantize(frame, "mixed", cal.table_path, threads=1, with_features=False)
    return folder


def test_quantize_applies_the_plan_to_the_features_graph_too(planned, tmp_path):
    from edgeseg.quantize.pipeline import run_quantize

    folder = tmp_path / "art"
    shutil.copytree(planned, folder)
    table = Manifest.load(folder).artifact("mobileinst_test.mixed.onnx")["calibration"]["table"]
    out = run_quantize(folder / "mobileinst_test.onnx", "int8", folder / table, threads=1, with_fidelity=False)
    assert out.features_path == folder / "mobileinst_test.features.int8.onnx"
    entry = Manifest.load(folder).artifact(out.features_path.name)
    assert entry["graph"] == "features"
    assert entry["precision"]["precisions"] == {"backbone": "int8", "mask_decoder": "int8"}
    rts = open_video_runtimes(out.path, reuse=3)  # pairs up without making anything
    try:
        assert rts.features_file == out.features_path.name and rts.made_features is None
    finally:
        rts.close()


def test_quantized_frame_graph_alone_cannot_reuse(planned):
    with pytest.raises(EdgesegError, match="no features graph quantized like"):
        open_video_runtimes(planned / "mobileinst_test.mixed.onnx", reuse=3)
    rts = open_video_runtimes(planned / "mobileinst_test.mixed.onnx", reuse=1)  # T=1 needs none
    rts.close()


def test_features_graph_is_made_at_the_same_plan_and_scales(planned, tmp_path):
    folder = tmp_path / "art"
    shutil.copytree(planned, folder)
    # Simulated Q/DQ: the comparison below is about the quantization of the two graphs, not
    # about this CPU's int8 kernels.
    rts = open_video_runtimes(folder / "mobileinst_test.mixed.onnx", reuse=3, make_features=True,
                              numerics="simulated")
    try:
        assert rts.frame.numerics == rts.features.numerics == "simulated"
        assert rts.made_features == features_name("mobileinst_test.mixed.onnx") == \
            "mobileinst_test.features.mixed.onnx"
        assert rts.features_file == rts.made_features
        m = Manifest.load(folder)
        entry = m.artifact(rts.made_features)
        assert entry["graph"] == "features" and entry["source"] == "mobileinst_test.features.onnx"
        assert entry["precision"]["precisions"] == {"backbone": "int8", "mask_decoder": "int8"}
        assert entry["calibration"]["table"] == m.artifact("mobileinst_test.mixed.onnx")["calibration"]["table"]
        assert m.artifact("mobileinst_test.mixed.onnx")["features"] == rts.made_features
        assert entry["quantization"]["quantized_nodes"]  # really int8, not a copy of the fp32 graph
        # Like the frame graph, the features graph keeps no float originals of its int8 weights.
        import onnx

        from tests.test_qdq_sizes import unused_initializers

        for name in (rts.made_features, "mobileinst_test.mixed.onnx"):
            assert unused_initializers(onnx.load(str(folder / name))) == [], name
        assert entry["quantization"]["removed_unused"] > 0
        # Keyframes and reuse frames see the same quantized mask features...
        x = np.random.default_rng(1).standard_normal((1, 3, INPUT, INPUT)).astype(np.float32)
        a = rts.frame.run({"image": x})["mask_features"]
        b = rts.features.run({"image": x})["mask_features"]
        np.testing.assert_allclose(b, a, atol=1e-5)
        # ...which differ from the fp32 ones (so the comparison above is not vacuous).
        fp32 = OnnxRuntimeRuntime(folder / "mobileinst_test.features.onnx").run({"image": x})["mask_features"]
        assert np.abs(fp32 - b).max() > 1e-4
        from edgeseg.export.manifest import input_spec_of

        tracker = KernelReuseTracker(rts.frame, rts.features, input_spec_of(m),
                                     TrackerConfig(reuse=3, score_threshold=0.001))
        for _ in range(4):
            tracker.step(np.full((48, 80, 3), 127, np.uint8))
        assert [t.keyframe for t in tracker.finish().timings] == [True, False, False, True]
    finally:
        rts.close()
    # Opening again uses the recorded pair; nothing is made twice.
    again = open_video_runtimes(folder, reuse=3, make_features=True)
    again.close()
    rts2 = open_video_runtimes(folder / "mobileinst_test.mixed.onnx", reuse=3, make_features=True)
    assert rts2.made_features is None and rts2.features_file == "mobileinst_test.features.mixed.onnx"
    rts2.close()


def test_a_table_from_another_model_is_refused(planned, tmp_path):
    folder = tmp_path / "art"
    shutil.copytree(planned, folder)
    m = json.loads((folder / "manifest.json").read_text())
    m["artifacts"]["mobileinst_test.onnx"]["sha256"] = "0" * 64  # as if the table was made for other weights
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(EdgesegError, match="different model"):
        quantize_features_graph(folder, "mobileinst_test.mixed.onnx")
    assert not (folder / "mobileinst_test.features.mixed.onnx").exists()


def test_cli_tracks_a_planned_folder(planned, synth_videos, tmp_path):
    from tests.test_track_cli import _video0, run

    folder = tmp_path / "art"
    shutil.copytree(planned, folder)
    frames, video = _video0(synth_videos)
    code, out, err = run("track", frames, "--artifact", folder / "mobileinst_test.mixed.onnx", "--reuse", 3,
                         "-o", tmp_path / "r.json", "--score-threshold", "0.001")
    assert code == 0, err
    assert "made mobileinst_test.features.mixed.onnx" in err
    assert "(mobileinst_test.features.mixed.onnx)" in out.replace("\n", "")


def test_features_graph_keeps_the_plans_units_it_contains(planned, tmp_path):
    """A unit in the backbone is in both graphs; one in the instance decoder only in the frame
    graph: the features graph keeps the first (its mask features must match the frame
    graph's) and skips the second."""
    from edgeseg.quantize.pipeline import run_quantize
    from edgeseg.quantize.units import unit_of

    folder = tmp_path / "art"
    shutil.copytree(planned, folder)
    table = Manifest.load(folder).artifact("mobileinst_test.mixed.onnx")["calibration"]["table"]
    plan = "*=int8,backbone/trans=fp16,instance_decoder/cls_head=fp32"
    out = run_quantize(folder / "mobileinst_test.onnx", plan, folder / table, threads=1, with_fidelity=False)
    entry = Manifest.load(folder).artifact(out.features_path.name)
    assert entry["precision"]["exceptions"] == {"backbone/trans": "fp16"}
    assert entry["mask_features_max_abs_diff"] <= 1e-5
    import onnx

    model = onnx.load(str(out.features_path))
    assert any(unit_of(n) == "backbone/trans" for n in model.graph.node)
    assert any(n.op_type == "Cast" for n in model.graph.node)  # the fp16 unit behind its casts
