"""Your own model through the toolchain: `edgeseg export FILE.py:fn`, `package.module:fn`,
the Python API, `--decoder`, and ONNX files edgeseg did not export."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeseg.export import tags
from tests.quant_models import make_images

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tiny_user_model.py"


def run(*args) -> tuple[int, str, str]:
    from edgeseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("user_images") / "imgs", n=8, size=(96, 128))


@pytest.fixture(scope="module")
def example_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("user") / "tiny"
    code, _, err = run("export", f"{EXAMPLE}:build_model", "--input-size", "128",
                       "--components", "backbone=backbone,neck=neck,head=head", "-o", out)
    assert code == 0, err
    return out


def test_example_exports_tagged_parity_checked_with_a_manifest(example_export):
    m = json.loads((example_export / "manifest.json").read_text())
    assert m["model"] == "tiny_user_model" and m["family"] is None
    assert m["source"]["kind"] == "user" and m["source"]["entry"].endswith("tiny_user_model.py:build_model")
    assert list(m["components"]) == ["backbone", "neck", "head"]
    assert [o["name"] for o in m["outputs"]] == ["logits", "coefficients", "prototypes"]  # the module's own names
    entry = m["artifacts"]["tiny_user_model.onnx"]
    assert all(p["ok"] for p in entry["parity"])
    proto = onnx.load(example_export / "tiny_user_model.onnx")
    assert tags.untagged_nodes(proto) == []
    assert {tags.get_component(n) for n in proto.graph.node} == {"backbone", "neck", "head"}


@pytest.mark.slow
@pytest.mark.tflite
def test_example_goes_through_calibrate_quantize_bench_and_tflite(example_export, images, tmp_path):
    onnx_path = example_export / "tiny_user_model.onnx"
    table = tmp_path / "table.json"
    code, _, err = run("calibrate", onnx_path, "--images", images, "--num", "6", "-o", table)
    assert code == 0, err
    code, out, err = run("quantize", onnx_path, "--plan", "backbone=int8,neck=int8,head=fp16", "--calib", table)
    assert code == 0, err
    q = example_export / "tiny_user_model.int8-int8-fp16.onnx"
    proto = onnx.load(q)
    by_comp = {c: [n.op_type for n in proto.graph.node if tags.get_component(n) == c] for c in ("backbone", "head")}
    assert "QuantizeLinear" in by_comp["backbone"] and "QuantizeLinear" not in by_comp["head"]
    code, out, err = run("bench", q, "--runs", "5", "--warmup", "1", "-o", tmp_path / "bench.json")
    assert code == 0, err
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["latency"]["n"] == 5 and report["plan"]
    code, out, err = run("export", f"{EXAMPLE}:build_model", "--input-size", "128",
                         "--components", "backbone=backbone,neck=neck,head=head", "-o", tmp_path / "tfl",
                         "--plan", "backbone=int8,neck=int8,head=fp16", "--calib", images, "--calib-num", "6",
                         "--to", "tflite")
    assert code == 0, err
    assert (tmp_path / "tfl" / "tiny_user_model.int8-int8-fp16.tflite").is_file()


def test_default_components_are_the_top_level_children(tmp_path):
    code, _, err = run("export", f"{EXAMPLE}:build_model", "--input-size", "64", "-o", tmp_path / "d")
    assert code == 0, err
    assert list(json.loads((tmp_path / "d" / "manifest.json").read_text())["components"]) == \
        ["backbone", "neck", "head"]


def test_package_module_entry_and_decoder_give_ap(tmp_path):
    from edgeseg.data.synthetic import SynthConfig, generate

    code, _, err = run("export", "tests.user_models:build_query_model", "--input-size", "64",
                       "--components", "enc=encoder,dec=decoder", "--output-names", "logits,objectness,masks",
                       "--decoder", "mobileinst", "--mean", "127.5", "--std", "127.5", "-o", tmp_path / "q")
    assert code == 0, err
    m = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert m["decoder"] == "mobileinst" and m["input"]["mean"] == [127.5] * 3
    generate(tmp_path / "shapes", SynthConfig(train=0, val=3, videos=0, val_videos=0, height=64, width=64, seed=1))
    code, out, err = run("eval", tmp_path / "q", "--dataset", tmp_path / "shapes/coco/annotations/val.json",
                         "--images", tmp_path / "shapes/coco/val", "-o", tmp_path / "eval.json")
    assert code == 0, err
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["images"] == 3 and result["detections"] > 0 and 0.0 <= result["metrics"]["AP"] <= 100.0


def test_python_api_is_a_few_lines(tmp_path):
    import edgeseg
    from tests.user_models import build_query_model

    result = edgeseg.export(build_query_model(), tmp_path / "api", components={"enc": "encoder", "dec": "decoder"},
                            input_size=64)
    assert result.manifest.components == {"enc": {"module": "encoder"}, "dec": {"module": "decoder"}}
    assert [p.name for p in result.graphs["frame"].parity] == ["output0", "output1", "output2"]
    assert all(p.ok for p in result.graphs["frame"].parity)


@pytest.mark.parametrize("args, problem", [
    (["nope/missing.py:build"], "does not exist"),
    ([f"{EXAMPLE}:no_such_fn"], "no callable 'no_such_fn'"),
    (["tests.user_models:build_not_a_module"], "not a torch.nn.Module"),
    ([f"{EXAMPLE}:build_model", "--input-size", "128", "--components", "backbone=backbon"],
     "names module 'backbon'"),
    ([f"{EXAMPLE}:build_model", "--input-size", "128", "--output-names", "a,b"], "returns 3 output(s)"),
    ([f"{EXAMPLE}:build_model", "--input-size", "128", "--decoder", "nosuchfamily"], "unknown model family"),
    ([f"{EXAMPLE}:build_model", "--input-size", "100032"], "4096 pixels per side"),
    (["mobileinst_test", "--components", "x=y"], "describe your own model"),
])
def test_user_model_mistakes_are_one_clear_error(tmp_path, args, problem):
    code, _, err = run("export", *args, "-o", tmp_path / "x")
    assert code == 1 and problem in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- foreign ONNX
@pytest.fixture()
def foreign(example_export, tmp_path):
    """The example's ONNX with every edgeseg trace removed: a file from another tool."""
    proto = onnx.load(example_export / "tiny_user_model.onnx")
    for node in proto.graph.node:
        del node.metadata_props[:]
    proto.producer_name = "someone-else"
    folder = tmp_path / "theirs"
    folder.mkdir()
    onnx.save(proto, folder / "their.onnx")
    return folder / "their.onnx"


def test_whole_model_plan_needs_no_tags(foreign):
    before = foreign.read_bytes()
    code, out, err = run("quantize", foreign, "--plan", "*=fp16", "--no-fidelity")
    assert code == 0, err
    q = onnx.load(foreign.with_name("their.fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in q.graph.initializer)
    assert foreign.read_bytes() == before  # the user's file is never rewritten


def test_component_plan_on_foreign_onnx_asks_for_patterns(foreign):
    code, _, err = run("quantize", foreign, "--plan", "backbone=fp16")
    assert code == 1 and "--components" in err
    assert not (foreign.parent / "manifest.json").exists()


def test_component_patterns_tag_once_and_are_recorded_beside_the_file(foreign, images):
    table = foreign.with_name("table.json")
    code, _, err = run("calibrate", foreign, "--images", images, "--num", "4", "-o", table)
    assert code == 0, err
    before = foreign.read_bytes()
    code, _, err = run("quantize", foreign, "--components", "backbone=^/backbone/,neck=^/neck/,head=^/head/",
                       "--plan", "backbone=int8,neck=fp32,head=fp16", "--calib", table, "--no-fidelity")
    assert code == 0, err
    assert foreign.read_bytes() == before
    m = json.loads((foreign.parent / "manifest.json").read_text())
    assert m["components"] == {"backbone": {"pattern": "^/backbone/"}, "neck": {"pattern": "^/neck/"},
                               "head": {"pattern": "^/head/"}}
    q = onnx.load(foreign.with_name("their.int8-fp32-fp16.onnx"))
    comps = {tags.get_component(n) for n in q.graph.node}
    assert comps == {"backbone", "neck", "head"}
    neck = [n.op_type for n in q.graph.node if tags.get_component(n) == "neck"]
    assert "QuantizeLinear" not in neck and "Cast" not in neck  # fp32: untouched
    # later steps read the patterns from the manifest: no --components needed again
    code, _, err = run("quantize", foreign, "--plan", "*=fp16", "--no-fidelity", "-o", foreign.with_name("h.onnx"))
    assert code == 0, err
    h = onnx.load(foreign.with_name("h.onnx"))
    assert {tags.get_component(n) for n in h.graph.node} == {"backbone", "neck", "head"}
    # other patterns for the same file are refused rather than silently mixed
    code, _, err = run("quantize", foreign, "--components", "head=^/head/", "--plan", "head=fp16")
    assert code == 1 and "already records other components" in err


def test_pattern_that_matches_nothing_is_refused(foreign):
    code, _, err = run("quantize", foreign, "--components", "backbone=^/backbone/,head=^/nothing/",
                       "--plan", "head=fp16")
    assert code == 1 and "match no node name" in err and "/backbone/" in err


def test_export_of_a_foreign_onnx_makes_a_normal_artifact_folder(foreign, tmp_path):
    code, _, err = run("export", foreign, "--components", "backbone=^/backbone/,rest=.", "-o", tmp_path / "f")
    assert code == 0, err
    m = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert m["source"]["kind"] == "onnx" and list(m["components"]) == ["backbone", "rest"]
    proto = onnx.load(tmp_path / "f" / "their.onnx")
    assert tags.untagged_nodes(proto) == []
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    rt = OnnxRuntimeRuntime(tmp_path / "f" / "their.onnx")
    out = rt.run(rt.random_feeds())
    assert all(np.isfinite(v).all() for v in out.values())
