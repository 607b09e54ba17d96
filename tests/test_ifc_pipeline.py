"""IFC through the toolchain: clip export (a static graph per clip length), the image decoder
per frame, calibration over clips of video folders, per-component plans, the mobile
preflights, and near-online tracking with `edgeseg track`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.test_track_cli import run
from tests.track_artifacts import FRAME_HW, synth_videos  # noqa: F401

T = 3
INPUT = 64


@pytest.fixture(scope="module")
def ifc_artifact(tmp_path_factory):
    import torch

    # The export builds randomly initialised weights: seeded, so the tracking test below sees
    # the same clip masks every run (unseeded, a draw whose masks all stay under 0.5 left no track).
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ifc_art") / "ifc"
    code, stdout, err = run("export", "ifc_test", "--num-classes", "4", "--input-size", INPUT,
                            "--clip-length", T, "-o", out)
    assert code == 0, err
    return out


def test_the_clip_graph_takes_T_frames_and_is_tagged(ifc_artifact):
    import onnx

    from edgeseg.export import tags
    from edgeseg.export.manifest import Manifest

    m = Manifest.load(ifc_artifact)
    assert m.input["frames"] == T and m.input["shape"] == [T, 3, INPUT, INPUT]
    proto = onnx.load(str(ifc_artifact / "ifc_test.onnx"))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [T, 3, INPUT, INPUT]
    assert tags.untagged_nodes(proto) == []
    assert {tags.get_component(n) for n in proto.graph.node} == {"backbone", "encoder", "decoder", "mask_head"}
    art = m.artifacts["ifc_test.onnx"]
    assert all(p["ok"] for p in art["parity"])
    assert {o["name"]: o["shape"] for o in art["outputs"]} == {"logits": [1, 6, 5], "masks": [1, 6, T, 8, 8]}


def test_clip_length_is_refused_for_image_models(tmp_path):
    code, _, err = run("export", "mobileinst_test", "--clip-length", 3, "-o", tmp_path / "x")
    assert code == 1 and "--clip-length applies to clip models" in err


def test_the_image_decoder_reads_one_frame_of_the_clip():
    from edgeseg.models.ifc.decode import decode

    logits = np.array([[[4.0, 0.0, 0.0], [0.0, 0.0, 6.0], [0.0, 3.0, 0.0]]], np.float32)  # 2 classes + none
    masks = np.full((1, 3, 2, 4, 4), -8.0, np.float32)
    masks[0, 0, 0, :2, :2] = 8.0     # query 0: top-left on frame 0
    masks[0, 0, 1, 2:, 2:] = 8.0     # ... bottom-right on frame 1
    masks[0, 2, :, 1:3, 1:3] = 8.0
    dets0 = decode({"logits": logits, "masks": masks}, (16, 16), score_threshold=0.5)
    assert [d.label for d in dets0] == [0, 1]        # query 1 is "no object"
    assert dets0[0].mask[:6, :6].all() and not dets0[0].mask[9:, 9:].any()
    dets1 = decode({"logits": logits, "masks": masks}, (16, 16), score_threshold=0.5, frame=1)
    assert dets1[0].mask[10:, 10:].all() and not dets1[0].mask[:7, :7].any()
    e = np.exp([4.0, 0.0, 0.0])
    assert dets0[0].score == pytest.approx(e[0] / e.sum(), rel=1e-5)


def test_calibration_takes_clips_of_video_folders(ifc_artifact, synth_videos, tmp_path):
    from edgeseg.quantize.cache import CalibrationTable

    table = tmp_path / "t.json"
    code, out, err = run("calibrate", ifc_artifact / "ifc_test.onnx", "--images", synth_videos / "JPEGImages",
                         "--num", 3, "-o", table)
    assert code == 0, err
    t = CalibrationTable.load(table)
    names = t.settings["images"]
    assert len(names) == 3 * T and t.num_images == 3
    # each clip: T consecutive frames of one video
    for k in range(3):
        clip = names[k * T:(k + 1) * T]
        assert len({n.split("/")[0] for n in clip}) == 1
        idx = [int(n.split("/")[1].split(".")[0]) for n in clip]
        assert idx == list(range(idx[0], idx[0] + T))


def test_a_per_component_plan_and_the_mobile_preflights(ifc_artifact, synth_videos, tmp_path):
    table = tmp_path / "t.json"
    assert run("calibrate", ifc_artifact / "ifc_test.onnx", "--images", synth_videos / "JPEGImages",
               "--num", 2, "-o", table)[0] == 0
    out = tmp_path / "mixed.onnx"
    code, stdout, err = run("quantize", ifc_artifact / "ifc_test.onnx", "--plan", "mixed", "--calib", table,
                            "--no-fidelity", "-o", out)
    assert code == 0, err
    from edgeseg.export import tags
    from edgeseg.quantize.calibrate import load_onnx

    proto = load_onnx(out)
    ops = {}
    for n in proto.graph.node:
        ops.setdefault(tags.get_component(n), set()).add(n.op_type)
    assert "QuantizeLinear" in ops["backbone"] and "QuantizeLinear" in ops["mask_head"]
    assert "QuantizeLinear" not in ops["decoder"] and "Cast" in ops["encoder"] | ops["decoder"]
    for target in ("tflite", "tnn"):
        code, stdout, err = run("check", ifc_artifact, "--target", target, "--json")
        assert code == 0, (target, stdout, err)
        assert json.loads(stdout)["ok"]


def test_tracking_one_video_near_online(ifc_artifact, synth_videos, tmp_path):
    from edgeseg.track.results import check_results

    ann = json.loads((synth_videos / "annotations" / "val.json").read_text())
    video = ann["videos"][0]
    from pathlib import Path

    folder = synth_videos / "JPEGImages" / Path(video["file_names"][0]).parent
    n = video["length"]
    res, ov = tmp_path / "r.json", tmp_path / "ov"
    code, out, err = run("track", folder, "--artifact", ifc_artifact, "--stride", 2, "-o", res, "--overlay", ov,
                         "--score-threshold", "0.0")
    assert code == 0, err
    clips = math.ceil((n - T) / 2) + 1
    assert f"clips of T={T} every S=2 frames: {clips} clips" in " ".join(out.split())  # rich may wrap
    items = json.loads(res.read_text())
    assert items
    check_results(items, {1: n})
    assert {tuple(s["size"]) for i in items for s in i["segmentations"] if s} == {FRAME_HW}
    assert sorted(p.name for p in ov.iterdir() if not p.name.startswith(".")) == [f"{i:05d}.png" for i in range(n)]
    code, _, err = run("track", folder, "--artifact", ifc_artifact, "--stride", T + 1, "-o", tmp_path / "x.json")
    assert code == 1 and "longer than" in err
    code, _, err = run("track", folder, "--artifact", ifc_artifact, "--max-gap", 1)
    assert code == 1 and "--max-gap does not apply to clip matching" in err


def test_the_stride_sweep_prints_and_saves_the_table(ifc_artifact, synth_videos, tmp_path):
    import os

    code, out, err = run("track", "--dataset", synth_videos / "annotations" / "val.json", "--artifact", ifc_artifact,
                         "--stride", "1,3", "-o", tmp_path / "s.json", "--core", sorted(os.sched_getaffinity(0))[0],
                         "--score-threshold", "0.0")
    assert code == 0, err
    report = json.loads((tmp_path / "s.json").read_text())
    rows = {r["reuse"]: r for r in report["rows"]}
    lengths = [v["length"] for v in json.loads((synth_videos / "annotations" / "val.json").read_text())["videos"]]
    assert sorted(rows) == [1, 3]
    # clips run: S=1 every frame from T-1 on; S=3: side by side, plus one for a leftover end
    assert rows[1]["keyframes"] == sum(n - T + 1 for n in lengths)
    assert rows[3]["keyframes"] == sum(math.ceil(n / 3) for n in lengths)
    assert rows[1]["model_ms"] > 0 and rows[3]["model_ms"] > 0
    assert report["settings"]["interval_name"] == "S" and report["settings"]["clip_length"] == T
    md = (tmp_path / "s.md").read_text()
    assert "| S | VIS AP |" in md and f"clips of T={T}" in md


def test_the_clip_graph_converts_to_tnn_and_computes_what_onnx_runtime_does(ifc_artifact, tmp_path):
    import shutil

    from edgeseg.export.tnn import read_tnn
    from edgeseg.export.tnn.artifacts import export_tnn_graphs
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
    from tests import tnn_reference as ref

    folder = tmp_path / "ifc"
    shutil.copytree(ifc_artifact, folder)
    result = export_tnn_graphs([folder / "ifc_test.onnx"], None, None, "arm")[0]
    x = np.random.default_rng(0).standard_normal((T, 3, INPUT, INPUT)).astype(np.float32)
    got = ref.run(read_tnn(result.proto_path), {"image": x})
    for name, want in OnnxRuntimeRuntime(folder / "ifc_test.onnx").run({"image": x}).items():
        g = np.asarray(got[name]).reshape(want.shape)
        assert np.abs(g - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), name
    # int8 on ARM: the attention MatMuls are written layout-agnostic, but the Gathers taking the
    # last decoder layer's output have only NCHW kernels in an NC4HW4 int8 network (the preflight says so)
    code, stdout, _ = run("check", folder, "--target", "tnn", "--plan", "mixed", "--json")
    errors = {i["op_type"] for i in json.loads(stdout)["items"] if i["severity"] == "error"}
    assert code == 1 and "Gather" in errors and "MatMul" not in errors
