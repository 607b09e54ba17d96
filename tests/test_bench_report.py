import json
import re

import pytest

from edgeseg.benchmark.device_info import UNAVAILABLE, DeviceState
from edgeseg.benchmark.report import BenchmarkReport
from edgeseg.benchmark.stats import LatencyStats
from edgeseg.errors import EdgesegError


def _report(samples=(10.0, 12.0, 11.0, 30.0), complete=True) -> BenchmarkReport:
    r = BenchmarkReport(
        target={"kind": "adb", "address": "R5CR1234"},
        artifact={"name": "m<1>.tflite", "sha256": "ab" * 32, "bytes": 10, "model": "mobileinst_topformer",
                  "input_shape": [1, 3, 640, 640]},
        runtime={"backend": "tflite", "threads_intra_op": 1, "threads_inter_op": 1, "affinity": [7]},
        settings={"runs": 4, "warmup": 2, "repeats": 1, "cooldown_s": 0.0, "core": 7},
        device_before=DeviceState(model="Pixel 7", soc="Tensor G2", core=7, governor="schedutil",
                                  cur_freq_mhz=2850.0, max_freq_mhz=2850.0, temperatures_c={"cpu": 40.0, "skin": 31.5}),
        device_after=DeviceState(model="Pixel 7", soc="Tensor G2", core=7, temperatures_c={"cpu": 47.25}),
        latency=LatencyStats.from_samples(samples, warmup=2) if samples else None,
        plan={"name": "mixed", "spec": "backbone=int8,mask_decoder=int8,instance_decoder=fp16"},
        commands=["taskset 80 /data/local/tmp/edgeseg/bin/benchmark_model --graph='m<1>.tflite'"],
    )
    if not complete:
        r.mark_incomplete("lost the device R5CR1234")
    return r


def test_json_round_trip(tmp_path):
    r = _report()
    path = r.save(tmp_path / "r.json")
    d = json.loads(path.read_text())
    assert d["format"] == "edgeseg-benchmark-report"
    assert d["latency"]["p50_ms"] == pytest.approx(11.5)
    assert d["latency"]["samples_ms"] == [10.0, 12.0, 11.0, 30.0]
    assert d["device_before"]["governor"] == "schedutil"
    assert d["device_after"]["governor"] == UNAVAILABLE  # never filled in from "before"
    back = BenchmarkReport.load(path)
    assert back.latency == r.latency and back.plan == r.plan and back.commands == r.commands


def test_markdown_has_the_figures_and_the_command(tmp_path):
    md = _report().save(tmp_path / "r.md").read_text()
    assert "| p50 | 11.500 |" in md
    assert "| p99 |" in md and "| CV |" in md
    assert "| governor | schedutil | unavailable |" in md
    assert "max 40.0 (cpu), 2 sensors" in md and "max 47.2" in md
    assert "backbone=int8,mask_decoder=int8,instance_decoder=fp16" in md
    assert "taskset 80" in md
    assert "- status: complete" in md


def test_html_is_escaped_and_has_plots(tmp_path):
    html = _report().save(tmp_path / "r.html").read_text()
    assert "m&lt;1&gt;.tflite" in html and "m<1>.tflite" not in html
    assert html.count("<svg") == 2  # histogram + run-order plot
    rects = re.findall(r"<rect [^>]*height='([0-9.]+)'", html)
    assert rects and max(float(h) for h in rects) > 0


def test_summary_report_says_unavailable_and_draws_no_plot(tmp_path):
    r = _report(samples=None)
    r.latency = LatencyStats.from_summary("TNNTest", 20, 5, min_ms=31.9, max_ms=33.8, mean_ms=32.2)
    md = r.to_markdown()
    assert "| p90 | unavailable |" in md
    assert "| source | TNNTest summary |" in md
    assert "<svg" not in r.to_html()


def test_incomplete_report_states_it(tmp_path):
    r = _report(complete=False)
    md = r.to_markdown()
    assert "INCOMPLETE: lost the device R5CR1234 (4 runs measured" in md
    assert json.loads(r.render(".json"))["complete"] is False


def test_bad_suffix_writes_nothing(tmp_path):
    with pytest.raises(EdgesegError, match="cannot write a report"):
        _report().save(tmp_path / "r.txt")
    assert list(tmp_path.iterdir()) == []


def test_load_rejects_other_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"a": 1}')
    with pytest.raises(EdgesegError, match="not an edgeseg benchmark report"):
        BenchmarkReport.load(p)


def test_rich_table_renders():
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(_report().rich_table())
    text = console.export_text()
    assert "11.500" in text and "schedutil" in text and "40.0 -> 47.2" in text
