"""The mobile-question benchmark's choices: which plan is the "best mixed" one, and what the
report says about methods measured in an earlier run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "mobile_question.py"
_spec = importlib.util.spec_from_file_location("mobile_question", _PATH)
mq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mq)


def _result(plan, ap, cpu_ms, interval=1):
    return {"plan": plan, "rows": [{"reuse": interval, "ap": ap, "model_cpu_ms": cpu_ms, "host_cpu_ms": 1.0},
                                   {"reuse": interval + 1, "ap": 0.0, "model_cpu_ms": 0.5, "host_cpu_ms": 0.0}]}


def test_best_mixed_is_the_fastest_plan_within_the_ap_drop():
    results = [_result("fp32", 20.0, 10.0), _result("mixed", 19.5, 12.0), _result("int8", 18.0, 5.0),
               _result("conv", 19.2, 11.0)]
    # int8 is the fastest but 2 AP under fp32; conv is faster than mixed and within 1 AP
    assert mq.best_mixed(results, 1, 1.0)["plan"] == "conv"
    # a looser budget lets the fastest one in; the other interval's rows play no part
    assert mq.best_mixed(results, 1, 2.5)["plan"] == "int8"


def test_best_mixed_falls_back_to_the_most_accurate_and_needs_a_non_fp32_plan():
    results = [_result("fp32", 30.0, 10.0), _result("mixed", 25.0, 8.0), _result("int8", 27.0, 9.0)]
    assert mq.best_mixed(results, 1, 1.0)["plan"] == "int8"
    assert mq.best_mixed(results[:1], 1, 1.0) is None


def test_the_report_names_each_methods_weights_and_what_was_reused():
    row = {"method": "IFC (T=5)", "plan": "fp32", "interval": "S=1", "ap": 24.8, "ap50": 39.2, "total_ms": 100.0,
           "cpu_ms": 30.0, "keyframe_ms": 110.0, "static_mb": 47.4, "weights_mb": 7.4, "activation_mb": 40.0,
           "rss_mb": 85.3}
    meta = {"dataset": "val.json", "videos": 10, "frames": 240, "core": 1, "onnxruntime": "1.x", "machine": "x86",
            "methods": {"IFC (T=5)": {"artifact": "out/ifc", "weights": {"path": "runs/ifc.safetensors",
                                                                            "sha256": "ab" * 32}},
                        "MobileInst kernel reuse": {"artifact": "out/mi", "weights": {"path": "zoo", "sha256": None},
                                                    "reused_from": "reports/earlier.json"}}}
    md = mq.markdown([row, {**row, "ap": None}], meta)
    assert "- IFC (T=5): out/ifc, weights runs/ifc.safetensors (sha256 abababababab)\n" in md
    assert "reused from reports/earlier.json" in md.split("MobileInst kernel reuse: ")[1].splitlines()[0]
    assert "| IFC (T=5) | fp32 | S=1 | 24.8 | 39.2 | 100.0 | 30.0 | 110.0 | 47.4 (7.4 + 40.0) | 85.3 |" in md
    assert "| IFC (T=5) | fp32 | S=1 | - |" in md  # no AP measured: a dash, not a made-up figure


@pytest.mark.parametrize("methods", ["ifc,nope"])
def test_an_unknown_method_is_refused_before_any_work(methods, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        mq.main(["--dataset", str(tmp_path / "val.json"), "--ifc", "a", "--mobileinst", "b", "--methods", methods])
    assert e.value.code == 2 and "unknown nope" in capsys.readouterr().err
