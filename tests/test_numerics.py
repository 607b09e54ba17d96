"""INT8 numerics must not depend on the host CPU.

ONNX Runtime's fused x86 int8 kernels add pairs of uint8 x int8 products in saturating
int16 on AVX2 without VNNI. Accuracy paths therefore run QDQ graphs with simulated Q/DQ
(``session.disable_quant_qdq``). The graph below is built so that

* every value is on a power-of-two grid, so the float arithmetic of simulated Q/DQ is
  exact whatever the summation order: ONNX Runtime and a NumPy fake-quant reference must
  agree bit for bit, on any host;
* large activations meet +-127 weights, so fused u8s8 kernels on an AVX2-only CPU saturate
  (VPMADDUBSW: 211 * 127 * 2 > 32767) and would give different numbers there.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.benchmark.cpu_isa import CpuIsa, isa_from_cpuinfo, isa_from_lscpu
from edgeseg.errors import EdgesegError
from edgeseg.runtimes import numerics as nm
from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime, make_session

S_X = 2.0 ** -5  # activation scale: |x| up to ~4 is on the int8 grid
S_Y = 2.0 ** -2
W_SCALES = np.array([2.0 ** -6, 2.0 ** -7, 2.0 ** -6, 2.0 ** -8], np.float32)
H = W = 8


def _weights() -> np.ndarray:
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    w[0] = 127  # same-sign pairs of full-scale weights: the fused AVX2 kernel saturates on these
    w[1] = -127
    return w


def saturating_qdq_model() -> onnx.ModelProto:
    w = _weights()
    bias = np.array([3, -5, 100, 0], np.int32)
    inits = [
        numpy_helper.from_array(np.array(S_X, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zp"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(W_SCALES, "w_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
        numpy_helper.from_array(bias, "b_q"),
        numpy_helper.from_array((S_X * W_SCALES).astype(np.float32), "b_scale"),
        numpy_helper.from_array(np.zeros(4, np.int32), "b_zp"),
        numpy_helper.from_array(np.array(S_Y, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "y_zp"),
    ]
    nodes = [
        helper.make_node("Identity", ["image"], ["x_copy"]),
        helper.make_node("QuantizeLinear", ["image", "x_scale", "x_zp"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b_dq"], axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq", "b_dq"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["conv", "y_scale", "y_zp"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "saturating_qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, H, W]),
         helper.make_tensor_value_info("x_copy", TensorProto.FLOAT, [1, 3, H, W])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def fake_quant_reference(x: np.ndarray) -> np.ndarray:
    """Q/DQ + Conv + Q/DQ in float64 NumPy: what a correct int8 engine computes."""
    xq = np.clip(np.rint(x.astype(np.float64) / S_X) + 128, 0, 255)
    xd = (xq - 128) * S_X
    wd = _weights().astype(np.float64) * W_SCALES.astype(np.float64)[:, None, None, None]
    bd = np.array([3, -5, 100, 0], np.float64) * S_X * W_SCALES.astype(np.float64)
    pad = np.pad(xd, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((1, 4, H, W))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,oc->nohw", pad[:, :, i:i + H, j:j + W], wd[:, :, i, j])
    y += bd[None, :, None, None]
    yq = np.clip(np.rint(y / S_Y) + 128, 0, 255)
    return ((yq - 128) * S_Y).astype(np.float32)


def large_input(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(1.5, 3.9, (1, 3, H, W)).astype(np.float32)  # u8 values ~176..253


def test_reference_really_exercises_the_int16_saturation_case():
    x = large_input()
    xq = np.clip(np.rint(x / S_X) + 128, 0, 255)
    # Adjacent products of one VPMADDUBSW pair: 2 * u8 * 127 beyond int16 for most pixels.
    assert (2 * xq * 127 > 32767).mean() > 0.9
    assert np.abs(fake_quant_reference(x)).max() > 10  # not all zeros


def test_simulated_numerics_match_numpy_fake_quant_exactly_on_any_host(tmp_path):
    model = saturating_qdq_model()
    path = tmp_path / "sat.onnx"
    onnx.save(model, str(path))
    for seed in range(3):
        x = large_input(seed)
        want = fake_quant_reference(x)
        got = make_session(model, numerics="simulated").run(["y"], {"image": x})[0]
        np.testing.assert_array_equal(got, want)
        rt = OnnxRuntimeRuntime(path)  # the runtime's default is the accuracy default
        assert rt.numerics == nm.SIMULATED
        np.testing.assert_array_equal(rt.run({"image": x})["y"], want)


def test_the_session_option_is_observable_on_the_session(tmp_path):
    path = tmp_path / "sat.onnx"
    onnx.save(saturating_qdq_model(), str(path))
    sim = OnnxRuntimeRuntime(path, numerics="simulated")
    assert sim.session.get_session_options().get_session_config_entry(nm.DISABLE_QDQ_KEY) == "1"
    fused = OnnxRuntimeRuntime(path, numerics="fused")
    assert fused.numerics == nm.FUSED
    with pytest.raises(RuntimeError):  # fused: the key is not set at all (ONNX Runtime's default)
        fused.session.get_session_options().get_session_config_entry(nm.DISABLE_QDQ_KEY)
    with pytest.raises(EdgesegError, match="not a numerics choice"):
        OnnxRuntimeRuntime(path, numerics="exact")


def test_load_runtime_passes_numerics_to_onnxruntime_only(tmp_path):
    from edgeseg.runtimes.base import load_runtime

    path = tmp_path / "sat.onnx"
    onnx.save(saturating_qdq_model(), str(path))
    assert load_runtime(path).numerics == nm.SIMULATED
    assert load_runtime(path, numerics="fused").numerics == nm.FUSED
    with pytest.raises(EdgesegError, match="not a numerics choice"):
        load_runtime(path, numerics="int8")


def test_local_bench_target_times_the_fused_kernels(tmp_path):
    from edgeseg.benchmark.targets.local import LocalTarget, allowed_cores

    path = tmp_path / "sat.onnx"
    onnx.save(saturating_qdq_model(), str(path))
    target = LocalTarget(path, core=allowed_cores()[0])
    target.open()
    try:
        assert target.runtime.numerics == nm.FUSED
        assert target.runtime_info()["numerics"] == nm.FUSED
    finally:
        target.close()


# --------------------------------------------------------------------------- accuracy paths
def _artifact(folder, precision="int8"):
    from edgeseg.data.preprocess import InputSpec
    from edgeseg.export.manifest import Manifest

    folder.mkdir(parents=True)
    onnx.save(saturating_qdq_model(), str(folder / "sat.onnx"))
    m = Manifest(model="fake_model", model_cfg={"num_classes": 4},
                 input=InputSpec(height=H, width=W, mean=(0.0, 0.0, 0.0), std=(64.0, 64.0, 64.0),
                                   stride=8).to_dict())
    m.add_artifact("sat.onnx", kind="onnx", primary=True,
                   precision={"name": precision, "spec": f"net={precision}", "precisions": {"net": precision}})
    m.save(folder)
    return folder


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from edgeseg.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("num") / "shapes"
    generate(root, SynthConfig(train=0, val=3, videos=0, val_videos=0, seed=1, height=48, width=48))
    return root


def test_eval_runs_simulated_numerics_by_default_and_records_them(shapes, tmp_path):
    from edgeseg.eval.coco import evaluate_artifact

    art = _artifact(tmp_path / "art")
    seen = []

    def oracle(outputs, hw):
        # What eval's runtime computed is what a correct int8 engine computes, bit for bit.
        np.testing.assert_array_equal(outputs["y"], fake_quant_reference(outputs["x_copy"]))
        seen.append(hw)
        return []

    ann, images = shapes / "coco/annotations/val.json", shapes / "coco/val"
    r = evaluate_artifact(art, ann, images, postprocess=oracle)
    assert len(seen) == 3
    assert r.numerics == "simulated" and r.host_isa
    saved = json.loads(r.save(tmp_path / "eval.json").read_text())
    assert saved["numerics"] == "simulated"
    fused = evaluate_artifact(art, ann, images, postprocess=lambda o, hw: [], numerics="fused")
    assert fused.numerics == "fused"


def test_cli_eval_has_a_numerics_flag_and_prints_it(shapes, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgeseg.cli import cli

    art = _artifact(tmp_path / "art", precision="fp32")
    # fake_model has no family decoder: patch the lookup for this CLI run.
    monkeypatch.setattr("edgeseg.models.contract.decoder_for_manifest", lambda manifest: (lambda outputs, hw: []))
    res = CliRunner().invoke(cli, ["eval", str(art), "--dataset", str(shapes / "coco/annotations/val.json"),
                                   "--numerics", "fused", "-o", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert "numerics=fused" in res.output
    assert json.loads((tmp_path / "e.json").read_text())["numerics"] == "fused"
    res = CliRunner().invoke(cli, ["eval", "--help"])
    assert "--numerics [simulated|fused]" in res.output


def test_fidelity_report_uses_and_records_simulated_numerics(tmp_path, monkeypatch):
    from edgeseg.quantize import fidelity

    made = []
    real = OnnxRuntimeRuntime

    def spy(*args, **kwargs):
        rt = real(*args, **kwargs)
        made.append(rt.numerics)
        return rt

    monkeypatch.setattr("edgeseg.runtimes.onnxruntime.OnnxRuntimeRuntime", spy)
    from tests.quant_models import make_images, make_model
    from edgeseg.data.images import select_images, spec_for_model
    from edgeseg.quantize.calibrate import calibrate
    from edgeseg.quantize.plan import PrecisionPlan
    from edgeseg.quantize.qdq import quantize_file
    from tests.quant_models import COMPONENTS

    model = make_model(tmp_path / "m")
    folder = make_images(tmp_path / "imgs", n=3)
    spec, _ = spec_for_model(model)
    table = calibrate(model, select_images(folder, spec, num=2), method="minmax")
    q = quantize_file(model, PrecisionPlan.parse("int8", COMPONENTS), table, tmp_path / "m" / "q.onnx").path
    made.clear()
    rep = fidelity.fidelity_report(model, q, select_images(folder, spec, num=1), plan={c: "int8" for c in COMPONENTS})
    assert made == ["simulated", "simulated"]
    assert rep.numerics == "simulated" and rep.to_dict()["numerics"] == "simulated"
    assert "Int8 numerics: simulated" in rep.to_markdown()


# --------------------------------------------------------------------------- host ISA
X86_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse sse2 ssse3 sse4_1 avx avx2 fma lm\n"
X86_VNNI = ("processor\t: 0\nflags\t\t: lm avx2 avx512f avx512bw avx512_vnni\n\n"
            "processor\t: 1\nflags\t\t: lm avx2 avx512f avx512bw avx512_vnni\n")
X86_AVX512_NO_VNNI = "processor\t: 0\nflags\t\t: lm avx2 avx512f avx512bw\n"
X86_AVX_VNNI = "processor\t: 0\nflags\t\t: lm avx2 avx_vnni\n"
ARM_DOT = ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimdhp asimddp\nCPU implementer\t: 0x41\n"
           "CPU architecture: 8\n\nprocessor\t: 7\nFeatures\t: fp asimd asimdhp asimddp i8mm\n"
           "CPU architecture: 8\n")
ARMV7 = "processor\t: 0\nFeatures\t: half thumb fastmult vfp edsp neon vfpv3\nCPU architecture: 7\n"


def test_isa_from_cpuinfo_tells_which_hosts_saturate():
    avx2 = isa_from_cpuinfo(X86_AVX2)
    assert avx2.arch == "x86_64" and avx2.features == ["avx2"]
    assert avx2.ort_fused_int8_saturates is True and "without VNNI" in avx2.int8_dot
    assert isa_from_cpuinfo(X86_AVX512_NO_VNNI).ort_fused_int8_saturates is True  # Skylake-X: VPMADDUBSW too
    vnni = isa_from_cpuinfo(X86_VNNI, core=1)
    assert vnni.ort_fused_int8_saturates is False and vnni.int8_dot == "AVX512-VNNI"
    assert isa_from_cpuinfo(X86_AVX_VNNI).int8_dot == "AVX-VNNI"
    arm = isa_from_cpuinfo(ARM_DOT, core=7)
    assert arm.arch == "aarch64" and {"asimddp", "i8mm"} <= set(arm.features)
    assert arm.ort_fused_int8_saturates is False and arm.int8_dot.startswith("I8MM")
    assert isa_from_cpuinfo(ARM_DOT, core=0).int8_dot == "dot product (SDOT/UDOT)"
    assert isa_from_cpuinfo(ARMV7).arch == "arm"
    assert isa_from_cpuinfo("processor\t: 0\n") is None  # nothing to go on: not guessed
    assert "AVX2" in avx2.summary() and CpuIsa.from_dict(avx2.to_dict()) == avx2


def test_isa_from_lscpu_and_platform_fallback():
    isa = isa_from_lscpu("Architecture:   x86_64\nModel name:  X\nFlags:  fpu avx2 avx512_vnni\n")
    assert isa.source == "lscpu" and isa.features == ["avx2", "avx512_vnni"] and not isa.ort_fused_int8_saturates
    bare = isa_from_lscpu("Architecture:   x86_64\n")
    assert bare.source == "platform" and bare.ort_fused_int8_saturates is None  # unknown, not guessed
    assert isa_from_lscpu("") is None


def test_device_state_records_the_isa_for_local_and_remote_targets():
    from edgeseg.benchmark import device_info as di

    state = di.state_from_sources(0, {"/proc/cpuinfo": X86_AVX2})
    assert state.isa["ort_fused_int8_saturates"] is True and "AVX2" in state.isa_summary
    assert di.DeviceState.from_dict(state.to_dict()).isa == state.isa
    phone = di.state_from_sources(7, {"/proc/cpuinfo": ARM_DOT})
    assert "i8mm" in phone.isa["features"]
    assert di.state_from_sources(0, {}).isa == di.UNAVAILABLE
    local = di.local_state(None)
    assert isinstance(local.isa, dict) and local.isa["arch"]


def test_bench_report_shows_numerics_and_isa_in_every_format():
    from edgeseg.benchmark import device_info as di
    from edgeseg.benchmark.report import BenchmarkReport
    from edgeseg.benchmark.stats import LatencyStats

    report = BenchmarkReport(target={"kind": "local", "address": "h"}, artifact={"name": "m.onnx"},
                             runtime={"backend": "onnxruntime", "numerics": "fused"}, settings={},
                             device_before=di.state_from_sources(0, {"/proc/cpuinfo": X86_AVX2}),
                             latency=LatencyStats.from_samples([1.0, 2.0, 3.0]))
    md, html = report.to_markdown(), report.to_html()
    for text in (md, html):
        assert "numerics" in text and "fused" in text
        assert "AVX2 without VNNI" in text
    d = json.loads(report.render(".json"))
    assert d["runtime"]["numerics"] == "fused" and d["device_before"]["isa"]["ort_fused_int8_saturates"] is True


def test_warns_once_when_fused_numerics_are_asked_for_on_a_saturating_host(monkeypatch):
    monkeypatch.setattr(nm, "_warned", set())
    avx2 = isa_from_cpuinfo(X86_AVX2)
    vnni = isa_from_cpuinfo(X86_VNNI)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert nm.warn_if_saturating("simulated", "mask AP", isa=avx2) is False
        assert nm.warn_if_saturating("fused", "mask AP", isa=vnni) is False
        assert nm.warn_if_saturating("fused", "mask AP", isa=avx2) is True
        assert nm.warn_if_saturating("fused", "mask AP", isa=avx2) is True  # no second warning
    assert len(caught) == 1 and issubclass(caught[0].category, nm.NumericsWarning)
    assert "--numerics simulated" in str(caught[0].message) and "AVX2" in str(caught[0].message)


def test_cli_prints_edgeseg_warnings_as_one_line(monkeypatch, capsys):
    from edgeseg.cli import _WarningPrinter

    printer = _WarningPrinter(lambda *a, **k: pytest.fail("not an edgeseg warning"))
    printer(nm.NumericsWarning("fused on AVX2"), nm.NumericsWarning, "x.py", 1)
    assert capsys.readouterr().err.strip() == "warning: fused on AVX2"
