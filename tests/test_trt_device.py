"""`bench --target ssh://` follows the device's TensorRT: strongly typed trtexec on >= 10, weak typing on 8.x.

Through the real ssh client and a private sshd whose fake trtexec prints the banner of the
TensorRT version each test sets, and rejects what that version rejects (--stronglyTyped
on 8.x; --int8/--fp16/--calib on 11). The per-component profile comes from a profile and
a layer-info file the fake copies out, written here in trtexec's own formats.
"""

import json
from pathlib import Path

import onnx
import pytest

from edgeseg.benchmark.harness import BenchSettings, run_benchmark
from edgeseg.benchmark.targets.ssh import JetsonTarget, SshTransport
from edgeseg.export.tensorrt.build_plan import BuildOptions
from edgeseg.export.tensorrt.onnx_prep import activation_types
from tests import fake_runners as fr
from tests.sshd_server import SSHD, SshServer
from tests.test_trt_build import _folder

PLAN = "backbone=int8,head=fp16"


def _profile_files(tmp_path: Path) -> dict[str, str]:
    prof = tmp_path / "p.json"
    prof.write_text(
        '[\n  { "count" : 10 }\n'
        ', { "name" : "Reformatting CopyNode for Input Tensor 0 to /backbone/conv/Conv + /backbone/act/Relu", '
        '"timeMs" : 1.0, "averageMs" : 0.1, "medianMs" : 0.1, "percentage" : 10 }\n'
        ', { "name" : "/backbone/conv/Conv + /backbone/act/Relu", "timeMs" : 6.0, "averageMs" : 0.6, '
        '"medianMs" : 0.6, "percentage" : 60 }\n'
        ', { "name" : "/head/conv/Conv", "timeMs" : 3.0, "averageMs" : 0.3, "medianMs" : 0.3, "percentage" : 30 }\n]\n')
    layers = tmp_path / "l.json"
    fmt = {"int8": "Thirty-two wide channel vectorized row major Int8 format", "fp16": "Row major linear FP16 format"}
    layers.write_text(json.dumps({"Layers": [
        {"Name": "/backbone/conv/Conv + /backbone/act/Relu", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "image", "Format/Datatype": fmt["int8"]}], "Outputs": [],
         "Weights": {"Type": "Int8", "Count": 216}},
        {"Name": "/head/conv/Conv", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "r1", "Format/Datatype": fmt["int8"]}], "Outputs": [],
         "Weights": {"Type": "Int8", "Count": 32}}], "Bindings": ["image", "masks"]}))
    return {"FAKE_TRT_PROFILE": str(prof), "FAKE_TRT_LAYER_INFO": str(layers)}


@pytest.fixture
def jetson(tmp_path, request):
    if SSHD is None:
        pytest.fail("sshd is not installed: run scripts/ci-system-deps.sh (apt install openssh-server)")
    version = request.param
    env = {"FAKE_RUNNER_SLEEP": "0", "FAKE_TRT_VERSION": version, **_profile_files(tmp_path)}
    server = SshServer(tmp_path / "sshd", tools=fr.JETSON_TOOLS, env=env).start()
    try:
        yield server
    finally:
        server.stop()


def _bench(server, tmp_path, **kw):
    folder = _folder(tmp_path)
    trtexec = fr.write_runner(tmp_path / "bin", "trtexec", fr.TRTEXEC)
    t = SshTransport(server.alias, options=server.options, workdir=str(tmp_path / "jetson"))
    target = JetsonTarget(t, folder, runner_bin=trtexec, plan_spec=PLAN, timeout_s=60, **kw)
    return run_benchmark(target, BenchSettings(runs=2, warmup=0)), Path(t.workdir)


@pytest.mark.parametrize("jetson", ["100300"], indirect=True)
def test_tensorrt_10_gets_a_strongly_typed_build_of_the_qdq_onnx(jetson, tmp_path):
    report, workdir = _bench(jetson, tmp_path, build_options=BuildOptions(workspace_mib=512))
    assert report.complete
    build = report.commands[0]
    assert "--stronglyTyped" in build and "--skipInference" in build and "--memPoolSize=workspace:512" in build
    for weak in ("--int8", "--fp16", "--calib", "--precisionConstraints", "--layerPrecisions"):
        assert weak not in build
    rt = report.runtime
    assert (rt["tensorrt"], rt["typing"], rt["onnx_pushed"]) == ("10.3.0", "strong", "tiny.int8-fp16.trt.onnx")
    pushed = next(workdir.rglob("tiny.int8-fp16.trt.onnx"))
    assert activation_types(onnx.load(str(pushed))) == {"int8"}  # the plan is inside, as TensorRT reads it
    per = report.extra["per_component"]
    assert per["available"] and per["total_ms"] == pytest.approx(1.0)
    comps = {c["component"]: c for c in per["components"]}
    assert comps["backbone"]["average_ms"] == pytest.approx(0.7) and comps["backbone"]["reformat_ms"] == pytest.approx(0.1)
    assert comps["head"]["average_ms"] == pytest.approx(0.3)
    # the layer info says the head conv runs int8 where the plan said fp16: reported, not hidden
    prec = {c["component"]: c for c in per["precision"]["components"]}
    assert prec["backbone"]["verdict"] == "as planned" and prec["head"]["verdict"] == "1 layer(s) differ"
    md = report.to_markdown()
    assert "| per_component_ms | backbone 0.700, head 0.300 (sum 1.000" in md
    assert "| precision_vs_plan | backbone: as planned; head: 1 layer(s) differ |" in md


@pytest.mark.parametrize("jetson", ["110000"], indirect=True)
def test_tensorrt_11_accepts_the_strongly_typed_command(jetson, tmp_path):
    report, _ = _bench(jetson, tmp_path, profile_runs=0)  # the fake 11 rejects --int8/--fp16: none are sent
    assert report.complete and report.runtime["typing"] == "strong"
    assert "per_component" not in (report.extra or {})


@pytest.mark.parametrize("jetson", ["8601"], indirect=True)
def test_tensorrt_8_6_gets_weak_typing_and_its_own_cache_header(jetson, tmp_path):
    report, workdir = _bench(jetson, tmp_path)
    build = report.commands[0]
    assert "--stronglyTyped" not in build and "--skipInference" in build
    assert "--int8" in build and "--precisionConstraints=obey" in build and "--calib=" in build
    assert "CALIB_HEADER TRT-8601-EntropyCalibration2" in fr.calls(workdir, "trtexec")
    assert report.runtime["typing"] == "weak" and report.runtime["onnx_pushed"] == "tiny.onnx"


@pytest.mark.parametrize("jetson", ["8601"], indirect=True)
def test_asking_for_strong_typing_on_8_x_is_a_clear_error(jetson, tmp_path):
    from edgeseg.errors import EdgesegError

    with pytest.raises(EdgesegError, match="strongly typed networks only from TensorRT 10"):
        _bench(jetson, tmp_path, build_options=BuildOptions(typing="strong"))
