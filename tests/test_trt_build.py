"""TensorRT build planning (pure), and the builder / export / runtime call sequences against a
stand-in ``tensorrt`` module (tests/fake_tensorrt.py). No TensorRT engine is built here."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.errors import EdgesegError
from edgeseg.export.tensorrt import trtexec
from edgeseg.export.tensorrt.build_plan import BuildOptions, make_build_plan
from edgeseg.export.tensorrt.versions import (TrtVersion, choose_typing, device_tensorrt, version_from_dpkg,
                                              version_from_python, version_from_trtexec)
from tests import fake_tensorrt
from tests.bench_helpers import tiny_artifact_folder

V85, V86, V10, V11 = (TrtVersion.parse(v) for v in ("8.5.2", "8.6.1", "10.3.0", "11.0.0"))


# ----------------------------------------------------------------- versions
def test_version_parsing_and_codes():
    assert TrtVersion.parse("8.5.2.2") == TrtVersion(8, 5, 2) and TrtVersion.parse(8502) == V85
    assert TrtVersion.parse("100300") == V10 and TrtVersion.parse("10.3.0.26") == V10
    assert TrtVersion.parse("8.5.2-1+cuda11.4") == V85
    assert V85.code == "8502" and V10.code == "100300" and V86.code == "8601"
    assert V86 > V85 and V10.at_least(10) and not V85.at_least(8, 6)
    with pytest.raises(EdgesegError, match="cannot read TensorRT version"):
        TrtVersion.parse("trt")


def test_typing_follows_the_version():
    assert choose_typing(V85) == "weak" and choose_typing(V86) == "weak"
    assert choose_typing(V10) == "strong" and choose_typing(V11) == "strong"
    assert choose_typing(V10, "weak") == "weak"  # deprecated in 10.12, still there in 10.x
    with pytest.raises(EdgesegError, match="no weak typing"):
        choose_typing(V11, "weak")
    with pytest.raises(EdgesegError, match="only from TensorRT 10"):
        choose_typing(V86, "strong")
    with pytest.raises(EdgesegError, match="older than 8.5"):
        choose_typing(TrtVersion(8, 4, 1))


def test_device_version_probes():
    # The banner of a real TensorRT 8.4 trtexec log (tests/data/device-logs, meta-tegra PR 952).
    log = (Path(__file__).parent / "data/device-logs/trtexec_8.4_xavier_agx_meta-tegra-pr952.txt").read_text()
    assert version_from_trtexec(log) == TrtVersion(8, 4, 0)
    assert version_from_trtexec("&&&& RUNNING TensorRT.trtexec [TensorRT v100200] # trtexec") == TrtVersion(10, 2, 0)
    assert version_from_trtexec("[I] TensorRT version: 8.6.3") == TrtVersion(8, 6, 3)
    dpkg = ("ii  libnvinfer-bin  8.5.2-1+cuda11.4  arm64  TensorRT binaries\n"
            "ii  libnvinfer8     8.5.2-1+cuda11.4  arm64  TensorRT runtime libraries\n"
            "ii  tensorrt        8.5.2.2-1+cuda11.4 arm64 Meta package for TensorRT\n")
    assert version_from_dpkg(dpkg) == V85
    assert version_from_python("10.3.0\n") == V10 and version_from_python("ModuleNotFoundError: tensorrt") is None
    d = device_tensorrt("", python_output="ImportError", dpkg_output=dpkg)
    assert (d.version, d.source, d.python_bindings) == (V85, "dpkg", False)
    d = device_tensorrt("[TensorRT v8601]", python_output="8.6.1.6")
    assert (d.version, d.source, d.python_bindings) == (V86, "trtexec banner", True)
    assert device_tensorrt("", "", "").source == "unavailable"


# ----------------------------------------------------------------- build plans
MIXED = {"backbone": "int8", "decoder": "fp16", "head": "fp32"}


def test_strongly_typed_plan_sets_no_precision_flag():
    b = make_build_plan(MIXED, V10, "qdq")
    assert (b.typing, b.network_flags, b.builder_flags, b.layer_precisions) == ("strong", ["STRONGLY_TYPED"], [], {})
    assert b.calibration == "qdq" and b.profiling_verbosity == "DETAILED"
    with pytest.raises(EdgesegError, match="plan written into the ONNX"):
        make_build_plan(MIXED, V10, "fp32")
    assert make_build_plan({"a": "fp32"}, V10, "fp32").builder_flags == []  # an FP32 plan needs nothing


def test_weak_typing_plans():
    b = make_build_plan(MIXED, V85, "fp32")
    assert b.typing == "weak" and b.network_flags == ["EXPLICIT_BATCH"]
    assert b.builder_flags == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"]
    assert b.layer_precisions == MIXED and b.calibration == "cache"
    # A QDQ ONNX on TensorRT 8.x: scales come from Q/DQ, int8 layers are left to them.
    q = make_build_plan(MIXED, V86, "qdq", BuildOptions(constraints="prefer"))
    assert q.calibration == "qdq" and q.layer_precisions == {"decoder": "fp16", "head": "fp32"}
    assert q.builder_flags[-1] == "PREFER_PRECISION_CONSTRAINTS"
    u = make_build_plan({"a": "fp16", "b": "fp16"}, V85, "fp32")
    assert u.builder_flags == ["FP16"] and u.layer_precisions == {}  # uniform: no constraints
    assert make_build_plan({"a": "int8"}, V85, "fp32").builder_flags == ["INT8"]


def test_options_dla_workspace_and_errors():
    o = BuildOptions.parse(["workspace=2048", "dla=1", "timing-cache=/tmp/t.cache", "opt-level=4"])
    b = make_build_plan({"a": "fp16"}, V85, "fp32", o)
    assert b.workspace_bytes == 2048 << 20 and b.dla_core == 1 and b.builder_flags == ["FP16", "GPU_FALLBACK"]
    assert b.optimization_level == 4
    with pytest.raises(EdgesegError, match="DLA runs fp16 and int8"):
        make_build_plan({"a": "fp32"}, V85, "fp32", BuildOptions(dla_core=0))
    for bad, match in [(["workspace"], "KEY=VALUE"), (["colour=red"], "KEY=VALUE"), (["dla=x"], "needs a number"),
                       (["typing=medium"], "unknown typing"), (["constraints=maybe"], "constraints"),
                       (["opt-level=9"], "out of range")]:
        with pytest.raises(EdgesegError, match=match):
            BuildOptions.parse(bad)


def test_cache_key_changes_with_every_input():
    b = make_build_plan(MIXED, V85, "fp32")
    base = b.cache_key("onnx", "ranges", "Orin (sm_87)")
    assert base == make_build_plan(MIXED, V85, "fp32").cache_key("onnx", "ranges", "Orin (sm_87)")
    others = [b.cache_key("onnx2", "ranges", "Orin (sm_87)"), b.cache_key("onnx", "ranges2", "Orin (sm_87)"),
              b.cache_key("onnx", "ranges", "Xavier (sm_72)"),
              make_build_plan(MIXED, V86, "fp32").cache_key("onnx", "ranges", "Orin (sm_87)"),
              make_build_plan({**MIXED, "head": "fp16"}, V85, "fp32").cache_key("onnx", "ranges", "Orin (sm_87)"),
              make_build_plan(MIXED, V85, "fp32", BuildOptions(workspace_mib=64)).cache_key("onnx", "ranges",
                                                                                           "Orin (sm_87)")]
    assert len({base, *others}) == 7


# ----------------------------------------------------------------- trtexec lines
def test_trtexec_command_lines_per_version():
    o = BuildOptions(workspace_mib=1024, dla_core=0)
    strong = trtexec.strongly_typed_build_argv("trtexec", "m.trt.onnx", "e.engine", V10, o, "t.cache")
    assert strong == ["trtexec", "--onnx=m.trt.onnx", "--saveEngine=e.engine", "--stronglyTyped",
                      "--profilingVerbosity=detailed", "--memPoolSize=workspace:1024", "--timingCacheFile=t.cache",
                      "--useDLACore=0", "--allowGPUFallback", "--skipInference"]
    assert not any(f in strong for f in ("--fp16", "--int8")) and not any(f.startswith("--calib") for f in strong)
    weak = trtexec.weak_typed_build_argv("trtexec", "m.onnx", "e.engine", V85, ["--fp16", "--int8", "--calib=c"])
    assert weak[3:6] == ["--fp16", "--int8", "--calib=c"] and weak[-1] == "--buildOnly"  # 8.5: no --skipInference
    assert trtexec.skip_inference_flag(V86) == "--skipInference"
    prof = trtexec.profile_argv("trtexec", "e.engine", 20, "p.json", "l.json")
    assert "--exportProfile=p.json" in prof and "--exportLayerInfo=l.json" in prof and "--iterations=20" in prof


# ----------------------------------------------------------------- calibrator cache bytes
def _table(folder: Path):
    from edgeseg.quantize.cache import CalibrationTable, TensorRange
    from edgeseg.utils.hashing import sha256_file

    return CalibrationTable("entropy", {"image": TensorRange(2.5), "c1": TensorRange(4.0), "r1": TensorRange(4.0),
                                        "masks": TensorRange(1.0)}, num_images=8,
                            model_sha256=sha256_file(folder / "tiny.onnx"))


def test_calibration_cache_bytes_match_tensorrts_format(tmp_path):
    from edgeseg.export.tensorrt.calibrator import calibration_cache, make_calibrator
    from edgeseg.quantize.cache import read_trt_cache

    folder = tiny_artifact_folder(tmp_path / "art")
    table = _table(folder)
    data = calibration_cache(table, V85)
    lines = data.decode().splitlines()
    assert lines[0] == "TRT-8502-EntropyCalibration2"
    assert lines[1] == "image: 3ca14285"  # 2.5 / 127 as big-endian float32 hex
    assert calibration_cache(table, V86).startswith(b"TRT-8601-EntropyCalibration2\n")
    (tmp_path / "c.cache").write_bytes(data)
    assert read_trt_cache(tmp_path / "c.cache").ranges["c1"].amax == pytest.approx(4.0)
    cal = make_calibrator(fake_tensorrt.make_fake_tensorrt(), data)
    assert cal.read_calibration_cache() == data and cal.get_batch_size() == 1
    assert cal.get_batch(["image"]) is None and cal.batches_requested == 1


# ----------------------------------------------------------------- builder + export, fake TensorRT
def _folder(tmp_path):
    from edgeseg.export.manifest import Manifest

    folder = tiny_artifact_folder(tmp_path / "art")
    _table(folder).save(folder / "tiny.entropy.calib.json")
    m = Manifest.load(folder)
    m.add_artifact("tiny.entropy.calib.json", kind="calibration-table", model="tiny.onnx", method="entropy")
    m.save(folder)
    return folder


def test_weak_typed_export_sequence_on_tensorrt_8_5(tmp_path, monkeypatch):
    from edgeseg.export.manifest import Manifest
    from edgeseg.export.tensorrt.export import export_tensorrt

    trt = fake_tensorrt.install(monkeypatch, "8.5.2.2")
    folder = _folder(tmp_path)
    opts = BuildOptions(workspace_mib=256, timing_cache=tmp_path / "timing.cache",
                        engine_cache=tmp_path / "engines")
    res = export_tensorrt(folder, plan="backbone=int8,head=fp16", options=opts)
    calls = [c[0] for c in trt.calls]
    # the documented order: builder, network, parser, config, precisions, calibrator, build, inspector
    order = ["Builder", "create_network", "OnnxParser", "parse_from_file", "set_memory_pool_limit", "set_flag",
             "layer.precision", "IInt8EntropyCalibrator2.__init__", "create_timing_cache", "set_timing_cache",
             "build_serialized_network", "read_calibration_cache", "deserialize_cuda_engine", "get_engine_information"]
    assert [calls.index(c) for c in order] == sorted(calls.index(c) for c in order)
    assert ("create_network", 1) in trt.calls  # 1 << EXPLICIT_BATCH
    assert ("set_memory_pool_limit", "WORKSPACE", 256 << 20) in trt.calls
    assert ("read_calibration_cache", "TRT-8502-EntropyCalibration2") in trt.calls
    build_call = next(c for c in trt.calls if c[0] == "build_serialized_network")
    assert build_call[1] == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"] and build_call[2] == "DETAILED"
    precisions = {c[1]: c[2] for c in trt.calls if c[0] == "layer.precision"}
    assert precisions == {"/backbone/conv/Conv": "INT8", "/backbone/act/Relu": "INT8", "/head/conv/Conv": "HALF"}
    assert res.path == folder / "tiny.int8-fp16.engine" and res.build.typing == "weak" and not res.from_cache
    assert res.onnx == folder / "tiny.onnx"  # weak typing parses the FP32 export itself
    assert (tmp_path / "timing.cache").read_bytes() == b"+timed"  # written back after the build
    assert {c.component: c.verdict for c in res.report.components} == {"backbone": "as planned",
                                                                       "head": "as planned"}
    entry = Manifest.load(folder).artifacts[res.path.name]
    assert entry["kind"] == "tensorrt-engine" and entry["tensorrt"] == "8.5.2"
    assert entry["layer_rules"]["constrained_layers"] == 3
    assert (folder / "tiny.int8-fp16.engine.precision.md").read_text().startswith("# Planned vs actual")

    # Same inputs again: the engine comes from the cache, TensorRT is not asked to build.
    trt.calls.clear()
    again = export_tensorrt(folder, plan="backbone=int8,head=fp16", options=opts)
    assert again.from_cache and again.cache_key == res.cache_key
    assert not any(c[0] == "build_serialized_network" for c in trt.calls)
    # Other ranges: another key, a new build.
    from edgeseg.quantize.cache import CalibrationTable

    t = CalibrationTable.load(folder / "tiny.entropy.calib.json")
    t.ranges["c1"].amax = 3.0
    third = export_tensorrt(folder, plan="backbone=int8,head=fp16", table=t, options=opts)
    assert third.cache_key != res.cache_key and not third.from_cache


def test_strongly_typed_export_parses_the_qdq_onnx_on_tensorrt_10(tmp_path, monkeypatch):
    import onnx

    from edgeseg.export.tensorrt.export import export_tensorrt
    from edgeseg.export.tensorrt.onnx_prep import activation_types

    trt = fake_tensorrt.install(monkeypatch, "10.3.0.26")
    folder = _folder(tmp_path)
    res = export_tensorrt(folder, plan="backbone=int8,head=fp16", options=BuildOptions(engine_cache=tmp_path / "e"))
    assert res.build.typing == "strong" and res.onnx.name == "tiny.int8-fp16.trt.onnx"
    assert ("create_network", 1 << 5) in trt.calls  # STRONGLY_TYPED, nothing else
    assert not any(c[0] in ("set_flag", "layer.precision", "IInt8EntropyCalibrator2.__init__") for c in trt.calls)
    model = onnx.load(str(res.onnx))
    assert activation_types(model) == {"int8"}  # TensorRT's symmetric Q/DQ
    assert any(n.op_type == "Cast" for n in model.graph.node)  # fp16 head behind boundary casts
    # TensorRT 10 layers name their ONNX node in metadata: every layer is matched that way
    assert set(res.report.rules) == {"metadata"} and sum(res.report.rules.values()) == len(model.graph.node)


def test_rejected_cache_is_an_error_not_an_uncalibrated_engine(tmp_path, monkeypatch):
    from edgeseg.export.tensorrt.export import export_tensorrt

    fake_tensorrt.install(monkeypatch, "8.6.1", reject_cache=True)
    folder = _folder(tmp_path)
    with pytest.raises(EdgesegError, match="did not accept the calibration cache"):
        export_tensorrt(folder, plan="backbone=int8,head=fp16", options=BuildOptions(engine_cache=tmp_path / "e"))
    assert not (folder / "tiny.int8-fp16.engine").exists()


def test_export_checks_inputs_before_tensorrt(tmp_path, monkeypatch):
    from edgeseg.export.tensorrt.export import export_tensorrt

    folder = tiny_artifact_folder(tmp_path / "art")  # no calibration table
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails
    with pytest.raises(EdgesegError, match="no calibration table was found"):
        export_tensorrt(folder, plan="backbone=int8")
    with pytest.raises(EdgesegError, match="unknown component"):
        export_tensorrt(folder, plan="backbon=int8")
    with pytest.raises(EdgesegError, match="TensorRT Python package is not installed") as e:
        export_tensorrt(folder, plan="backbone=fp16")
    assert "pip install 'edgeseg[tensorrt]'" in e.value.fix
    (folder / "tiny.fp16-fp32.engine").write_bytes(b"someone else's")
    with pytest.raises(EdgesegError, match="was not written by"):
        export_tensorrt(folder, plan="backbone=fp16", trt=fake_tensorrt.make_fake_tensorrt())
    assert (folder / "tiny.fp16-fp32.engine").read_bytes() == b"someone else's"


def test_runtime_runs_an_engine_through_the_name_based_api(tmp_path, monkeypatch):
    from edgeseg.export.tensorrt.export import export_tensorrt
    from edgeseg.runtimes.base import load_runtime
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    trt = fake_tensorrt.install(monkeypatch, "10.3.0")
    folder = _folder(tmp_path)
    res = export_tensorrt(folder, plan="fp32", options=BuildOptions(engine_cache=tmp_path / "e"))
    with load_runtime(res.path) as rt:
        assert rt.backend == "tensorrt"
        assert [i.name for i in rt.inputs()] == ["image"] and rt.outputs()[0].shape == [1, 4, 32, 32]
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        got = rt.run({"image": x})["masks"]
        with pytest.raises(EdgesegError, match="has shape"):
            rt.run({"image": x[:, :2]})
    want = OnnxRuntimeRuntime(folder / "tiny.onnx").run({"image": x})["masks"]
    np.testing.assert_array_equal(got, want)  # the fake engine is ONNX Runtime: this checks the buffer plumbing
    mem = trt.fake_device_memory
    assert [c[0] for c in mem.calls if c[0] != "close"] == ["h2d", "d2h", "sync"]
    assert any(c[0] == "execute_async_v3" for c in trt.calls)


def test_uint8_qdq_becomes_int8_with_identical_outputs(tmp_path):
    import onnx

    from edgeseg.export.tensorrt.onnx_prep import activation_types, to_int8_activations
    from edgeseg.quantize.plan import PrecisionPlan
    from edgeseg.quantize.qdq import quantize_file
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    folder = tiny_artifact_folder(tmp_path / "art")
    plan = PrecisionPlan({"backbone": "int8", "head": "int8"})
    q = quantize_file(folder / "tiny.onnx", plan, _table(folder), tmp_path / "u8.onnx", activation_dtype="uint8")
    model = onnx.load(str(q.path))
    assert "uint8" in activation_types(model)
    converted, n = to_int8_activations(model)
    assert n > 0 and activation_types(converted) == {"int8"}
    onnx.save(converted, str(tmp_path / "i8.onnx"))
    # The rewrite is the file `--activation-type int8` writes: zero point 128 -> 0 on the same
    # grid, and [0, amax] pairs (after a Relu) on the symmetric grid of the same range.
    ref = quantize_file(folder / "tiny.onnx", plan, _table(folder), tmp_path / "i8_ref.onnx", activation_dtype="int8")
    assert [n.op_type for n in converted.graph.node] == [n.op_type for n in onnx.load(str(ref.path)).graph.node]
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    a = OnnxRuntimeRuntime(ref.path, optimization="none").run({"image": x})["masks"]
    b = OnnxRuntimeRuntime(tmp_path / "i8.onnx", optimization="none").run({"image": x})["masks"]
    cos = float((a.ravel() @ b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos > 0.9999  # the same grids up to the float rounding of scale x 255 / 127


def test_cli_import_stays_free_of_tensorrt():
    code = ("import sys, edgeseg.export.tensorrt as t, edgeseg.export.tensorrt.build_plan, "
            "edgeseg.export.tensorrt.names, edgeseg.export.tensorrt.trtexec, edgeseg.runtimes.base; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'pycuda', 'cuda', 'torch', "
            "'onnxruntime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().replace("'", '"')) == []


def test_cli_export_existing_folder_to_tensorrt(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgeseg.cli import cli
    from edgeseg.export.manifest import Manifest

    trt = fake_tensorrt.install(monkeypatch, "8.6.1")
    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    folder = _folder(tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    res = CliRunner().invoke(cli, ["export", str(folder), "--to", "tensorrt", "--plan", "backbone=int8,head=fp16",
                                   "--trt", "workspace=64", "--trt", "constraints=prefer"])
    assert res.exit_code == 0, res.output
    assert "TensorRT" in res.output  # the results table (file names fold at 80 columns)
    assert ("set_memory_pool_limit", "WORKSPACE", 64 << 20) in trt.calls
    m = Manifest.load(folder)
    assert m.artifacts["tiny.int8-fp16.engine"]["build"]["builder_flags"][-1] == "PREFER_PRECISION_CONSTRAINTS"
    assert m.history[-1]["step"] == "export-tensorrt"
    new = sorted(set(p.name for p in folder.iterdir()) - set(before))
    assert new == ["tiny.int8-fp16.engine", "tiny.int8-fp16.engine.layers.json", "tiny.int8-fp16.engine.precision.json",
                   "tiny.int8-fp16.engine.precision.md"]
    bad = CliRunner().invoke(cli, ["export", str(folder), "--to", "tensorrt", "--trt", "dla"])
    assert bad.exit_code != 0 and "KEY=VALUE" in str(bad.exception or bad.output)
    nothing = CliRunner().invoke(cli, ["export", str(folder)])
    assert nothing.exit_code != 0 and "nothing to do without --to" in str(nothing.exception or nothing.output)
