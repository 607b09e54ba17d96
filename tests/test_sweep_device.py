"""`edgeseg sweep --target`: every plan built for the device and timed there, end to end through
the real adb client (fake phone) and the real ssh client (private sshd, fake Jetson tools).

The fake runners print made-up timings in the real tools' formats: these tests check that
each plan's artifact is built for the target, pushed, run pinned and interleaved, parsed,
and that the table says where every figure came from -- not how fast anything is.
"""

import json
import os
from pathlib import Path

import pytest

from tests import fake_runners as fr
from tests.sshd_server import SSHD, SshServer
from tests.sweep_artifacts import run_cli, tiny_sweep_inputs  # noqa: F401  (fixture)
from tests.test_bench_adb import adb_server, device  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def tiny_export(tiny_sweep_inputs, tmp_path_factory):  # noqa: F811
    """The tiny checkpoint exported once, with one calibration table: every sweep here starts from it."""
    from edgeseg.export.manifest import manifest_for_artifact
    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model
    from edgeseg.models.checkpoints import load_weights
    from edgeseg.quantize.pipeline import run_calibration

    inp = tiny_sweep_inputs
    cfg = dict(manifest_for_artifact(inp["ckpt"]).model_cfg)
    cfg["input_size"] = tuple(cfg["input_size"])
    model = create_model("mobileinst_test", **cfg)
    load_weights(model, inp["ckpt"])
    res = export_onnx(model.eval(), tmp_path_factory.mktemp("tiny_export") / "mi", graphs=("frame",))
    table = run_calibration(res.onnx_path, inp["train"], num=4).table_path
    return {**inp, "folder": res.folder, "table": table}


def _sweep(inp, out: Path, *extra) -> tuple[dict, str]:
    code, stdout, stderr = run_cli(["sweep", inp["folder"], "--calib", inp["table"], "--dataset", inp["val_json"],
                                    "--images", inp["val"], "--runs", "4", "--repeats", "2", "--warmup", "1",
                                    "-o", out, *extra])
    assert code == 0, stderr
    return json.loads((out / "sweep.json").read_text()), stdout + stderr


@pytest.mark.slow
def test_phone_sweep_times_each_tnn_plan_on_the_fake_phone(device, tiny_export, tmp_path,  # noqa: F811
                                                           monkeypatch):
    monkeypatch.setenv("EDGESEG_ADB_WORKDIR", str(device.root / "edgeseg"))
    runner = fr.write_runner(tmp_path / "bin", "TNNTest", fr.TNNTEST)
    data, text = _sweep(tiny_export, tmp_path / "phone", "--plans", "fp16", "--target",
                        f"adb:{device.serial}", "--runner-bin", runner)
    assert data["latency"]["target"] == f"adb:{device.serial}"
    assert data["latency"]["statistic"].startswith("per-round block means")  # TNNTest prints a summary only
    assert [p["label"] for p in data["plans"]] == ["fp32-fp32-fp32", "fp16-fp16-fp16"]
    core = max(int(c) for c in os.sched_getaffinity(0))
    for p in data["plans"]:
        assert p["sources"]["ap"] == "host: ONNX Runtime on the QDQ/fp16 ONNX"
        assert p["sources"]["latency"] == f"adb {device.serial}: TNNTest on core {core}"
        assert p["latency_ms"]["p50"] == pytest.approx(32.238)  # the fake's figure, parsed from its logcat line
        assert p["device"]["affinity"] == [core]
    calls = fr.calls(device.root, "TNNTest")
    protos = {c.split("[-mp] [")[1].split("]")[0].rsplit("/", 1)[1] for c in calls if "[-mp] [" in c}
    assert protos == {"mobileinst_test.fp32-fp32-fp32.tnnproto", "mobileinst_test.fp16-fp16-fp16.tnnproto"}
    assert len([c for c in calls if c.startswith("ARGS")]) == 4  # 2 plans x 2 interleaved rounds
    assert calls.count(f"Cpus_allowed_list:\t{core}") == 4  # every run pinned
    before = data["latency"]["device_before"]
    assert before["model"] == "samsung SM-A536B"
    md = (tmp_path / "phone" / "sweep.md").read_text()
    assert "| AP from | latency from |" in md and f"TNNTest on core {core}" in md
    assert "latency on **adb:" in md
    print(text)  # the device-sweep table, for the CI log


def _jetson(tmp_path, version: str) -> SshServer:
    if SSHD is None:
        pytest.fail("sshd is not installed: run scripts/ci-system-deps.sh (apt install openssh-server)")
    return SshServer(tmp_path / "sshd", tools=fr.JETSON_TOOLS,
                     env={"FAKE_RUNNER_SLEEP": "0", "FAKE_TRT_VERSION": version}).start()


@pytest.mark.slow
@pytest.mark.parametrize("version,typing", [("8502", "weak"), ("100300", "strong")])
def test_jetson_sweep_builds_an_engine_per_plan_for_the_devices_tensorrt(tiny_export, tmp_path,  # noqa: F811
                                                                        monkeypatch, version, typing):
    server = _jetson(tmp_path, version)
    try:
        monkeypatch.setenv("EDGESEG_SSH_OPTIONS", f"-F {server.config}")
        monkeypatch.setenv("EDGESEG_SSH_WORKDIR", str(tmp_path / "jetson"))
        trtexec = fr.write_runner(tmp_path / "bin", "trtexec", fr.TRTEXEC)
        data, text = _sweep(tiny_export, tmp_path / "jetson-out", "--plans", "mixed",
                            "--target", f"ssh://{server.alias}", "--runner-bin", trtexec, "--trt", "workspace=256")
    finally:
        server.stop()
    assert data["latency"]["statistic"] == "per-run latencies"  # trtexec --exportTimes
    plans = {p["label"]: p for p in data["plans"]}
    assert set(plans) == {"fp32-fp32-fp32", "int8-int8-fp16"}
    for p in plans.values():
        assert p["device"]["typing"] == typing and p["device"]["tensorrt"] in ("8.5.2", "10.3.0")
        assert p["sources"]["latency"].startswith(f"ssh {server.alias}: trtexec, TensorRT")
        assert p["latency_ms"]["p50"] > 0 and p["runs"] == 4
    calls = fr.calls(tmp_path / "jetson", "trtexec")
    builds = [c for c in calls if "--saveEngine" in c]
    assert len(builds) == 2 and all("[--memPoolSize=workspace:256]" in b for b in builds)
    if typing == "strong":
        assert all("[--stronglyTyped]" in b and "[--int8]" not in b for b in builds)
        assert plans["int8-int8-fp16"]["device"]["onnx_pushed"].endswith(".trt.onnx")
    else:
        mixed = [b for b in builds if "--layerPrecisions" in b]
        assert len(mixed) == 1 and "[--stronglyTyped]" not in mixed[0] and "[--calib=" in mixed[0]
        assert "CALIB_HEADER TRT-8502-EntropyCalibration2" in calls
    # interleaved: rounds alternate the plan order, every plan timed once per round
    timed = [c for c in calls if "--exportTimes" in c]
    assert len(timed) == 2 * 2
    assert "per_component" in plans["int8-int8-fp16"]["device"]
    print(text)


@pytest.mark.slow
def test_jetson_sweep_with_ap_measured_on_the_device(tiny_export, tmp_path, monkeypatch):  # noqa: F811
    """--ap-from device: `edgeseg eval` runs on the (fake) Jetson against the engines trtexec built there.

    The fake Jetson's python3 is this venv with a stand-in `tensorrt` whose engine runs the
    pushed ONNX in ONNX Runtime, so the FP32 plan's device AP must equal the host's exactly:
    that checks the dataset transfer, the manifest and the remote eval, not TensorRT.
    """
    import sys

    if SSHD is None:
        pytest.fail("sshd is not installed: run scripts/ci-system-deps.sh (apt install openssh-server)")
    repo = Path(__file__).resolve().parent.parent
    python = f'#!/bin/sh\nPYTHONPATH="{repo}/tests/fake_jetson_python:{repo}" exec {sys.executable} "$@"\n'
    server = SshServer(tmp_path / "sshd", tools={**fr.JETSON_TOOLS, "python3": python},
                       env={"FAKE_RUNNER_SLEEP": "0", "FAKE_TRT_VERSION": "100300", "EDGESEG_PROGRESS": "0"}).start()
    try:
        monkeypatch.setenv("EDGESEG_SSH_OPTIONS", f"-F {server.config}")
        monkeypatch.setenv("EDGESEG_SSH_WORKDIR", str(tmp_path / "jetson"))
        trtexec = fr.write_runner(tmp_path / "bin", "trtexec", fr.TRTEXEC)
        data, text = _sweep(tiny_export, tmp_path / "out", "--plans", "int8", "--target",
                            f"ssh://{server.alias}", "--runner-bin", trtexec, "--ap-from", "device",
                            "--device-python", server.bin / "python3", "--limit", "2")
    finally:
        server.stop()
    plans = {p["label"]: p for p in data["plans"]}
    for p in plans.values():
        assert p["sources"]["ap"] == f"device {server.alias}: edgeseg eval of the engine (TensorRT)"
        assert "host_metrics" in p["device"]
    fp32 = plans["fp32-fp32-fp32"]
    assert fp32["metrics"]["AP"] == fp32["device"]["host_metrics"]["AP"]
    assert list((tmp_path / "jetson" / "datasets").glob("*/.complete"))  # the dataset went over once
    print(text)


def test_host_sweep_on_tensorrt_builds_and_runs_an_engine_per_plan(tiny_export, tmp_path,  # noqa: F811
                                                                   monkeypatch):
    """--backend tensorrt on a GPU host: engines through export_tensorrt, AP and latency through the
    .engine runtime. Here against the stand-in `tensorrt` (its engines run ONNX Runtime), so this
    checks the wiring -- an engine per plan, the runtime used for AP and timing -- not TensorRT."""
    from tests import fake_tensorrt

    trt = fake_tensorrt.install(monkeypatch, "10.3.0")
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    data, _ = _sweep(tiny_export, tmp_path / "out", "--plans", "mixed", "--backend", "tensorrt")
    files = [p["file"] for p in data["plans"]]
    assert files == ["mobileinst_test.fp32-fp32-fp32.engine", "mobileinst_test.int8-int8-fp16.engine"]
    assert data["backend"] == "tensorrt"
    assert sum(1 for c in trt.calls if c[0] == "build_serialized_network") == 2
    assert sum(1 for c in trt.calls if c[0] == "execute_async_v3") > 8  # AP images and timed runs
