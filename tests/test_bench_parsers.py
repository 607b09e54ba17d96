"""Parsers against real tool output (tests/data/device-logs, from public issues) and variants."""

import json
from pathlib import Path

import pytest

from edgeseg.benchmark import parsers as P

LOGS = Path(__file__).parent / "data" / "device-logs"


def log(name: str) -> str:
    return (LOGS / name).read_text()


# ----------------------------------------------------------------- benchmark_model
def test_benchmark_model_tf2x_plain():
    r = P.parse_benchmark_model(log("tflite_tf2.x_issue42507.txt"))
    assert r.runs == {"count": 50, "first": 32891, "curr": 33978, "min": 32641, "max": 34005, "avg": 33209.4,
                      "std": 450}
    assert r.warmup["count"] == 15
    s = r.stats()
    assert (s.n, s.warmup) == (50, 15)
    assert s.mean_ms == pytest.approx(33.2094) and s.std_ms == pytest.approx(0.450)
    assert s.min_ms == pytest.approx(32.641) and s.max_ms == pytest.approx(34.005)
    assert s.p50_ms is None  # benchmark_model prints no percentiles: not invented
    assert r.timings_us["Init"] == 855 and r.timings_us["Inference (avg)"] == 33209.4
    assert r.memory_mb == {"Peak memory footprint": {"init": 0.0, "overall": 12.8672}}
    assert r.extra()["timings_ms"]["First inference"] == pytest.approx(49.06)


def test_benchmark_model_info_prefix():
    r = P.parse_benchmark_model(log("tflite_info_prefix_issue73862.txt"))
    assert r.runs["count"] == 74 and r.runs["avg"] == pytest.approx(13520.2)
    assert r.warmup["count"] == 37
    # the summary line agrees with the count line it follows
    assert r.timings_us["Inference (avg)"] == pytest.approx(r.runs["avg"])


def test_benchmark_model_logcat_and_scientific_notation():
    text = (
        "01-02 10:11:12.345  4242  4242 I tflite  : Running benchmark for at least 1 iterations\n"
        "01-02 10:11:14.000  4242  4242 I tflite  : count=1 curr=2719850\n"  # no min=: not a stats line
        "01-02 10:11:15.000  4242  4242 I tflite  : count=2 first=2.8e+06 curr=2.71985e+06 min=2.71985e+06 "
        "max=2.8e+06 avg=2.75993e+06 std=40075\n"
        "01-02 10:11:30.000  4242  4242 I tflite  : count=20 first=2719850 curr=2.70001e+06 min=2.69e+06 "
        "max=2.9e+06 avg=2.71985e+06 std=5.1e+04\n"
        "01-02 10:11:30.001  4242  4242 I tflite  : Memory footprint delta from the start of the tool (MB): "
        "init=3.01172 overall=211.215\n"
    )
    r = P.parse_benchmark_model(text)
    s = r.stats()
    assert s.n == 20 and s.warmup == 2
    assert s.mean_ms == pytest.approx(2719.85) and s.std_ms == pytest.approx(51.0)
    assert r.memory_mb["Memory footprint delta from the start of the tool"]["overall"] == pytest.approx(211.215)


def test_benchmark_model_garbage_raises_with_output_tail():
    with pytest.raises(P.ParseError, match="no 'count=... avg=...' line.*Segmentation fault"):
        P.parse_benchmark_model("STARTING!\nLoaded model m.tflite\nSegmentation fault\n")


# ----------------------------------------------------------------- TNNTest
def test_tnn_logcat():
    r = P.parse_tnn(log("tnn_logcat_issue1783.txt"))
    assert r.times_ms == {"min": 31.929, "max": 33.771, "avg": 32.238}
    assert r.model == "mobilenet_v2.tnnproto" and r.device == "ARM"
    s = r.stats(runs=20, warmup=5)
    assert (s.n, s.warmup, s.mean_ms, s.p50_ms) == (20, 5, 32.238, None)
    assert s.source == "TNNTest summary"


def test_tnn_stdout_without_model_and_extra_fields():
    r = P.parse_tnn("warm up ...\nTNN Benchmark time cost: min = 5.1 ms  |  max = 7.9 ms  |  avg = 6.0 ms "
                    "|  std = 0.4 ms\n")
    assert r.times_ms == {"min": 5.1, "max": 7.9, "avg": 6.0, "std": 0.4}


def test_tnn_missing_raises():
    with pytest.raises(P.ParseError, match="TNN Benchmark time cost"):
        P.parse_tnn("E/tnn: load model failed\n")


# ----------------------------------------------------------------- trtexec
def test_trtexec_84_xavier():
    r = P.parse_trtexec(log("trtexec_8.4_xavier_agx_meta-tegra-pr952.txt"))
    assert r.version == "8.4.0" and r.status == "PASSED"
    assert r.command == "trtexec --loadEngine=mnist16.trt --batch=16"
    assert r.throughput_qps == pytest.approx(41087.7)
    lat = r.metrics["Latency"]
    assert lat == pytest.approx({"min": 0.387207, "max": 0.447357, "mean": 0.402238, "median": 0.401947,
                                 "p99": 0.420288})
    assert set(r.metrics) == {"Latency", "Enqueue Time", "H2D Latency", "GPU Compute Time", "D2H Latency"}
    assert r.totals_s == pytest.approx({"Total Host Walltime": 3.00119, "Total GPU Compute Time": 2.99202})
    s = r.stats()
    assert s.p50_ms == pytest.approx(0.401947) and s.p99_ms == pytest.approx(0.420288) and s.p90_ms is None


def test_trtexec_10x_percentiles():
    r = P.parse_trtexec(log("trtexec_10.x_issue4177.txt"))
    assert r.version is None  # this excerpt has no version tag: not guessed
    g = r.metrics["GPU Compute Time"]
    assert g["p90"] == pytest.approx(10.2881) and g["p95"] == pytest.approx(10.8175) and g["p99"] == pytest.approx(12.9485)
    s = r.stats("Latency", warmup=0)
    assert s.p90_ms == pytest.approx(10.2996) and s.mean_ms == pytest.approx(7.60628)


def test_trtexec_versions_and_odd_percentiles():
    text = ("&&&& RUNNING TensorRT.trtexec [TensorRT v100500] # trtexec --onnx=m.onnx\n"
            "[I] Timing trace has 812 queries over 3.00412 s\n"
            "[I] Latency: min = 900 us, max = 2.5 ms, mean = 1.1 ms, median = 1.05 ms, "
            "percentile(99.9%) = 2.4 ms, percentile(50%) = 1.05 ms\n"
            "&&&& PASSED TensorRT.trtexec [TensorRT v100500] # trtexec --onnx=m.onnx\n")
    r = P.parse_trtexec(text)
    assert r.version == "10.5.0" and r.queries == 812
    assert r.metrics["Latency"]["min"] == pytest.approx(0.9)
    assert r.metrics["Latency"]["p99.9"] == pytest.approx(2.4)
    assert r.stats().n == 812
    assert P.trt_version_text(8502) == "8.5.2" and P.trt_version_text(8601) == "8.6.1"


def test_trtexec_failed_run_raises():
    text = ("[E] Error[4]: [network.cpp::validate::2997] Error Code 4: Internal Error\n"
            "&&&& FAILED TensorRT.trtexec [TensorRT v8502] # trtexec --onnx=m.onnx --int8\n")
    with pytest.raises(P.ParseError, match="trtexec FAILED"):
        P.parse_trtexec(text)


def test_trtexec_export_times():
    data = [{"count": 3},
            {"startInMs": 1.0, "endInMs": 1.1, "startComputeMs": 1.1, "endComputeMs": 3.0, "startOutMs": 3.0,
             "endOutMs": 3.1, "inMs": 0.1, "computeMs": 1.9, "outMs": 0.1, "latencyMs": 2.1, "endToEndMs": 2.1},
            {"latencyMs": 2.3, "computeMs": 2.0}, {"latencyMs": 2.2, "computeMs": 2.0}]
    assert P.parse_trtexec_times(json.dumps(data)) == [2.1, 2.3, 2.2]
    assert P.parse_trtexec_times(json.dumps(data), key="computeMs") == [1.9, 2.0, 2.0]
    with pytest.raises(P.ParseError):
        P.parse_trtexec_times("[{\"count\": 0}]")
    with pytest.raises(P.ParseError):
        P.parse_trtexec_times("{not json")


# ----------------------------------------------------------------- tegrastats
def test_tegrastats_xavier_jp42():
    s = P.parse_tegrastats_line(log("tegrastats_agx_xavier_jp4.2_gtop-pr7.txt"))
    assert s["memory"]["RAM"] == {"used_mb": 14700.0, "total_mb": 15692.0}
    assert s["memory"]["SWAP"]["total_mb"] == 8192.0
    assert len(s["cpu"]) == 8 and s["cpu"][0] == {"load_pct": 0.0, "freq_mhz": 1190.0, "online": True}
    assert s["util"]["EMC_FREQ"] == {"pct": 0.0} and s["util"]["GR3D_FREQ"] == {"pct": 0.0}
    assert s["temperatures_c"]["GPU"] == 30.5 and s["temperatures_c"]["thermal"] == 30.8
    assert s["power_mw"]["GPU"] == {"current": 463.0, "average": 463.0}
    assert s["power_mw"]["CPU"]["current"] == 618.0  # "CPU 618/618" is a rail, "CPU [..]" the cores
    assert s["power_mw"]["SYS5V"]["average"] == 3306.0
    assert s["unparsed"] == ["(lfb 3x2MB)", "(cached 23MB)"]


def test_tegrastats_tx2():
    s = P.parse_tegrastats_line(log("tegrastats_tx2_issue24.txt"))
    assert [c["freq_mhz"] for c in s["cpu"]] == [1303, 345, 345, 1419, 1420, 1421]
    assert s["util"]["EMC_FREQ"] == {"pct": 0.0, "freq_mhz": 1866.0}
    assert s["util"]["GR3D_FREQ"]["freq_mhz"] == 140.0
    assert s["values"]["APE"] == 150.0
    assert s["util"]["MTS_fg"] == {"pct": 1.0} and s["util"]["MTS_bg"] == {"pct": 8.0}
    assert s["temperatures_c"]["Tdiode"] == 37.25
    assert s["power_mw"]["VDD_IN"]["current"] == 1931.0 and len(s["power_mw"]) == 6


def test_tegrastats_orin_style_line_is_parsed_generically():
    # Synthetic line in the JetPack 5/6 (Orin) shape: timestamp, 'off' cores, @[..] frequencies,
    # mW units on rails, negative placeholder temperatures. None of these needed special code.
    line = ("11-21-2023 10:00:00 RAM 2005/30536MB (lfb 6780x4MB) SWAP 0/15268MB (cached 0MB) "
            "CPU [1%@729,0%@729,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 12%@[305,305] VIC_FREQ 729 APE 174 "
            "CV0@-256C CPU@46.5C tj@46.5C VDD_GPU_SOC 2799mW/2799mW VDD_CPU_CV 400mW/401mW NEWRAIL 5/6 XYZ")
    s = P.parse_tegrastats_line(line)
    assert s["time"] == "11-21-2023 10:00:00"
    assert s["cpu"][2] == {"load_pct": None, "freq_mhz": None, "online": False}
    assert s["util"]["GR3D_FREQ"] == {"pct": 12.0, "freq_mhz": [305.0, 305.0]}
    assert s["power_mw"]["VDD_CPU_CV"] == {"current": 400.0, "average": 401.0}
    assert s["power_mw"]["NEWRAIL"] == {"current": 5.0, "average": 6.0}
    assert s["temperatures_c"]["CV0"] == -256.0 and s["values"]["VIC_FREQ"] == 729.0
    assert "XYZ" in s["unparsed"]


def test_tegrastats_summary():
    a = P.parse_tegrastats_line("RAM 1/2MB GR3D_FREQ 10%@300 GPU@40C VDD_IN 1000/1000")
    b = P.parse_tegrastats_line("RAM 1/2MB GR3D_FREQ 30%@600 GPU@45.5C VDD_IN 3000/2000")
    s = P.summarize_tegrastats([a, b])
    assert s["samples"] == 2 and s["max_temperature_c"] == {"GPU": 45.5}
    assert s["mean_util_pct"] == {"GR3D_FREQ": 20.0} and s["mean_freq_mhz"] == {"GR3D_FREQ": 450.0}
    assert s["mean_power_mw"] == {"VDD_IN": 2000.0}
    assert P.summarize_tegrastats([]) == {"samples": 0}
