"""TensorRT honours plan exceptions below the component level.

Weak typing (8.5/8.6) sets each network layer's precision from its node's unit; the
strongly typed path (>= 10) parses a QDQ/fp16 ONNX written from the whole plan, units
included; trtexec's ``--layerPrecisions`` names every node at its unit's precision. All
against the stand-in ``tensorrt`` (tests/fake_tensorrt.py) and the fake Jetson: no engine
is built here.
"""

from __future__ import annotations

import onnx
import pytest

from edgeseg.benchmark import runners
from edgeseg.export.tensorrt.build_plan import BuildOptions
from edgeseg.export.tensorrt.names import OnnxIndex
from edgeseg.quantize.plan import PrecisionPlan
from edgeseg.quantize.units import node_tags
from tests import fake_tensorrt
from tests.bench_helpers import tiny_artifact_folder

COMPONENTS = ["backbone", "head"]


def _folder(tmp_path):
    from edgeseg.export.manifest import Manifest
    from edgeseg.quantize.cache import CalibrationTable, TensorRange
    from edgeseg.utils.hashing import sha256_file

    folder = tiny_artifact_folder(tmp_path / "art")
    CalibrationTable("entropy", {"image": TensorRange(2.5), "c1": TensorRange(4.0), "r1": TensorRange(4.0),
                                 "masks": TensorRange(1.0)}, num_images=8,
                     model_sha256=sha256_file(folder / "tiny.onnx")).save(folder / "tiny.entropy.calib.json")
    m = Manifest.load(folder)
    m.add_artifact("tiny.entropy.calib.json", kind="calibration-table", model="tiny.onnx", method="entropy")
    m.save(folder)
    return folder


def _layer_precisions(trt):
    return {c[1]: c[2] for c in trt.calls if c[0] == "layer.precision"}


def test_weak_typing_sets_each_layer_to_its_units_precision(tmp_path, monkeypatch):
    from edgeseg.export.tensorrt.export import export_tensorrt

    trt = fake_tensorrt.install(monkeypatch, "8.5.2.2")
    folder = _folder(tmp_path)
    res = export_tensorrt(folder, plan="*=int8,backbone/act=fp16", options=BuildOptions(engine_cache=tmp_path / "e"))
    assert _layer_precisions(trt) == {"/backbone/conv/Conv": "INT8", "/backbone/act/Relu": "HALF",
                                      "/head/conv/Conv": "INT8"}
    build_call = next(c for c in trt.calls if c[0] == "build_serialized_network")
    assert build_call[1] == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"]
    assert res.build.precisions == {"backbone": "int8", "head": "int8", "backbone/act": "fp16"}
    assert res.build.plan_spec == "backbone=int8,head=int8,backbone/act=fp16"
    # planned vs actual, per unit: the fake engine runs each layer at its constrained precision
    verdicts = {c.component: c.verdict for c in res.report.components}
    assert verdicts == {"backbone": "as planned", "head": "as planned", "backbone/act": "as planned"}
    # the engine file is named after the whole plan: another exception is another engine
    assert res.path.name == f"tiny.{PrecisionPlan.parse('*=int8,backbone/act=fp16', COMPONENTS).label()}.engine"
    other = export_tensorrt(folder, plan="*=int8,backbone/act=fp32", options=BuildOptions(engine_cache=tmp_path / "e"))
    assert other.cache_key != res.cache_key and other.path != res.path


def test_an_int8_unit_inside_an_fp32_network_is_the_only_int8_layer(tmp_path, monkeypatch):
    from edgeseg.export.tensorrt.export import export_tensorrt

    trt = fake_tensorrt.install(monkeypatch, "8.6.1.6")
    folder = _folder(tmp_path)
    res = export_tensorrt(folder, plan="*=fp32,head/conv=int8", options=BuildOptions(engine_cache=tmp_path / "e"))
    assert _layer_precisions(trt) == {"/backbone/conv/Conv": "FLOAT", "/backbone/act/Relu": "FLOAT",
                                      "/head/conv/Conv": "INT8"}
    assert res.build.calibration == "cache" and "INT8" in res.build.builder_flags
    assert ("read_calibration_cache", "TRT-8601-EntropyCalibration2") in trt.calls


def test_strongly_typed_onnx_is_written_from_the_whole_plan(tmp_path, monkeypatch):
    from edgeseg.export.tensorrt.export import export_tensorrt
    from edgeseg.quantize.units import unit_of

    trt = fake_tensorrt.install(monkeypatch, "10.3.0.26")
    folder = _folder(tmp_path)
    res = export_tensorrt(folder, plan="*=int8,head/conv=fp16", options=BuildOptions(engine_cache=tmp_path / "e"))
    assert res.build.typing == "strong" and not any(c[0] == "layer.precision" for c in trt.calls)
    model = onnx.load(str(res.onnx))
    producer = {o: n for n in model.graph.node for o in n.output}
    by = {n.name: n for n in model.graph.node}
    # the backbone conv reads Q/DQ (int8); the head conv, a unit at fp16, reads a Cast to fp16
    assert producer[by["/backbone/conv/Conv"].input[0]].op_type == "DequantizeLinear"
    head = by["/head/conv/Conv"]
    assert producer[head.input[0]].op_type == "Cast" and unit_of(head) == "head/conv"
    # engine layers are attributed to the unit through the index built from the unit records
    # (the unit is all of the head here, so "head" itself has no layer left)
    assert {c.component for c in res.report.components} == {"backbone", "head/conv"}


def test_node_tags_read_a_written_qdq_graph_and_expand_an_fp32_one(tmp_path):
    from edgeseg.quantize.cache import CalibrationTable, TensorRange
    from edgeseg.quantize.qdq import quantize_model

    folder = tiny_artifact_folder(tmp_path / "art")
    fp32 = onnx.load(str(folder / "tiny.onnx"))
    plan = PrecisionPlan.parse("*=int8,re:act/Relu$=fp32", COMPONENTS)
    tags, precisions = node_tags(fp32, plan)
    assert tags["/backbone/act/Relu"] == "backbone/re:act/Relu$" and tags["/backbone/conv/Conv"] == "backbone"
    assert precisions["backbone/re:act/Relu$"] == "fp32"
    table = CalibrationTable("minmax", {t: TensorRange(4.0) for t in ("image", "c1", "r1", "masks")})
    qdq, _ = quantize_model(fp32, plan, table)
    q_tags, q_precisions = node_tags(qdq, plan)
    assert q_precisions == precisions
    assert q_tags["/backbone/act/Relu"] == "backbone/re:act/Relu$"
    index = OnnxIndex.from_model(qdq, q_tags)
    assert index.component["/backbone/act/Relu"] == "backbone/re:act/Relu$"


def test_trtexec_layer_precisions_name_every_node_at_its_units_precision(tmp_path):
    folder = tiny_artifact_folder(tmp_path / "art")
    model = onnx.load(str(folder / "tiny.onnx"))
    tags, precisions = node_tags(model, PrecisionPlan.parse("backbone=fp16,head=fp16,backbone/act=fp32", COMPONENTS))
    nodes: dict[str, list[str]] = {}
    for node, tag in tags.items():
        nodes.setdefault(tag, []).append(node)
    p = runners.trtexec_precision(precisions, nodes, runners.float_nodes(model))
    assert p.flags == ["--fp16", "--precisionConstraints=obey",
                       "--layerPrecisions=/backbone/conv/Conv:fp16,/head/conv/Conv:fp16,/backbone/act/Relu:fp32"]


@pytest.mark.slow
def test_jetson_weak_build_sends_per_unit_layer_precisions(tmp_path):
    """Through the ssh target and the fake trtexec (TensorRT 8.5 banner)."""
    from edgeseg.benchmark.harness import BenchSettings, run_benchmark
    from edgeseg.benchmark.targets.ssh import JetsonTarget, SshTransport
    from tests import fake_runners as fr
    from tests.sshd_server import SSHD, SshServer

    if SSHD is None:
        pytest.fail("sshd is not installed: run scripts/ci-system-deps.sh (apt install openssh-server)")
    server = SshServer(tmp_path / "sshd", tools=fr.JETSON_TOOLS, env={"FAKE_RUNNER_SLEEP": "0"}).start()
    try:
        folder = _folder(tmp_path)
        trtexec = fr.write_runner(tmp_path / "bin", "trtexec", fr.TRTEXEC)
        t = SshTransport(server.alias, options=server.options, workdir=str(tmp_path / "jetson"))
        target = JetsonTarget(t, folder, runner_bin=trtexec, plan_spec="*=int8,head/conv=fp16", timeout_s=60,
                              profile_runs=0)
        report = run_benchmark(target, BenchSettings(runs=2, warmup=0))
    finally:
        server.stop()
    assert report.complete
    build = report.commands[0]
    assert "--layerPrecisions=/backbone/conv/Conv:int8,/backbone/act/Relu:int8,/head/conv/Conv:fp16" in build
    assert "--int8" in build and "--fp16" in build and "--precisionConstraints=obey" in build
    assert "--calib=" in build  # implicit int8 from the FP32 ONNX and our cache
    assert report.plan["exceptions"] == {"head/conv": "fp16"}
