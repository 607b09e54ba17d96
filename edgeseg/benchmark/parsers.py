"""Parsers for the output of on-device benchmark tools.

* TFLite ``benchmark_model``: the ``count= first= curr= min= max= avg= std=`` lines
  (warm-up, then timed runs), the ``Inference timings in us`` line, memory footprint
  lines; numbers may be in scientific notation (``avg=2.71985e+06``).
* TNN ``TNNTest``: ``TNN Benchmark time cost: min = .. ms | max = .. ms | avg = .. ms``.
* TensorRT ``trtexec``: the performance summary (Throughput, then Latency / Enqueue Time /
  H2D Latency / GPU Compute Time / D2H Latency with min/max/mean/median and any number
  of percentiles), the ``[TensorRT v8502]`` version tag, and ``--exportTimes`` JSON.
* ``tegrastats``: generic key/value parsing (its format drifts between JetPack releases).

Every parser accepts the tool's output as printed to a terminal *or* as captured by
logcat (``09-08 02:21:52.676 27062 27062 I tflite : ...``) or with ``INFO:`` prefixes:
patterns are searched inside lines, never anchored at the start. A parser that finds
nothing raises :class:`ParseError` quoting the end of the output, instead of returning
zeros that would look like a measurement.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from edgeseg.benchmark.stats import LatencyStats
from edgeseg.errors import EdgesegError

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


class ParseError(EdgesegError):
    """A runner's output did not contain what a benchmark needs."""


def _tail(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "(no output)"


def _unit_ms(value: float, unit: str) -> float:
    return {"ms": value, "s": value * 1e3, "us": value / 1e3, "µs": value / 1e3, "ns": value / 1e6}[unit]


# --------------------------------------------------------------------------- benchmark_model
_BM_STAT = re.compile(rf"count=(?P<count>\d+)(?P<rest>(?:\s+\w+={NUM})*)")
_KV = re.compile(rf"(\w+)=({NUM})")
_BM_TIMINGS = re.compile(r"Inference timings in us:\s*(?P<body>.*)$")
_BM_MEMORY = re.compile(rf"(?P<what>[A-Za-z][^:()]*?)\s*\(MB\):\s*init=(?P<init>{NUM})\s+overall=(?P<overall>{NUM})")


@dataclass
class BenchmarkModelResult:
    runs: dict[str, float]  # the timed block: count, first, curr, min, max, avg, std (microseconds)
    warmup: dict[str, float] | None  # the warm-up block, same keys
    timings_us: dict[str, float] = field(default_factory=dict)  # Init, First inference, Warmup (avg)...
    memory_mb: dict[str, dict[str, float]] = field(default_factory=dict)

    def stats(self) -> LatencyStats:
        r = self.runs
        ms = {k: r[k] / 1e3 for k in ("min", "max", "avg", "std") if k in r}
        return LatencyStats.from_summary("benchmark_model", n=int(r["count"]),
                                         warmup=int(self.warmup["count"]) if self.warmup else 0,
                                         min_ms=ms.get("min"), max_ms=ms.get("max"), mean_ms=ms.get("avg"),
                                         std_ms=ms.get("std"))

    def extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {"timings_ms": {k: v / 1e3 for k, v in self.timings_us.items()}}
        if self.memory_mb:
            out["memory_mb"] = self.memory_mb
        if self.warmup:
            out["warmup_block_ms"] = {k: (v / 1e3 if k != "count" else int(v)) for k, v in self.warmup.items()}
        return out


def parse_benchmark_model(text: str) -> BenchmarkModelResult:
    blocks = []
    timings: dict[str, float] = {}
    memory: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = _BM_STAT.search(line)
        if m and "min=" in m.group("rest"):
            block = {"count": float(m.group("count"))}
            block.update({k: float(v) for k, v in _KV.findall(m.group("rest"))})
            blocks.append(block)
            continue
        m = _BM_TIMINGS.search(line)
        if m:
            for item in m.group("body").split(","):
                if ":" in item:
                    k, v = item.rsplit(":", 1)
                    try:
                        timings[k.strip()] = float(v.strip())
                    except ValueError:
                        continue
            continue
        m = _BM_MEMORY.search(line)
        if m:
            memory[m.group("what").strip()] = {"init": float(m.group("init")), "overall": float(m.group("overall"))}
    if not blocks:
        raise ParseError(f"no 'count=... avg=...' line in the benchmark_model output: {_tail(text)}",
                         "check the runner binary runs on the device and accepts the model "
                         "(try the printed command by hand)")
    # benchmark_model prints the warm-up block first and the timed block last.
    runs = blocks[-1]
    warmup = blocks[-2] if len(blocks) > 1 else None
    return BenchmarkModelResult(runs=runs, warmup=warmup, timings_us=timings, memory_mb=memory)


# --------------------------------------------------------------------------- TNNTest
_TNN = re.compile(r"(?:(?P<model>\S+)\s+-\s+)?(?P<device>\w+)?\s*TNN Benchmark time cost:\s*(?P<body>.*)$")
_TNN_ITEM = re.compile(rf"(\w+)\s*=\s*({NUM})\s*(ms|us|s)")


@dataclass
class TNNResult:
    times_ms: dict[str, float]  # min, max, avg (and std when the build prints it)
    model: str | None = None
    device: str | None = None

    def stats(self, runs: int, warmup: int) -> LatencyStats:
        t = self.times_ms
        # TNNTest prints no count: the iteration count is what we asked for with -ic.
        return LatencyStats.from_summary("TNNTest", n=runs, warmup=warmup, min_ms=t.get("min"), max_ms=t.get("max"),
                                         mean_ms=t.get("avg"), std_ms=t.get("std"))


def parse_tnn(text: str) -> TNNResult:
    found = None
    for line in text.splitlines():
        m = _TNN.search(line)
        if not m:
            continue
        items = {k: _unit_ms(float(v), u) for k, v, u in _TNN_ITEM.findall(m.group("body"))}
        if "avg" in items:
            found = TNNResult(items, model=m.group("model"), device=m.group("device"))
    if found is None:
        raise ParseError(f"no 'TNN Benchmark time cost' line in the TNNTest output: {_tail(text)}",
                         "check TNNTest ran to the end (it prints the time cost last); "
                         "on Android it may print to logcat only: the target reads logcat too")
    return found


# --------------------------------------------------------------------------- trtexec
_TRT_VERSION = re.compile(r"\[TensorRT v(\d+)\]")
_TRT_STATUS = re.compile(r"&&&& (PASSED|FAILED|RUNNING|WAIVED) TensorRT\.trtexec \[TensorRT v\d+\] # (.*)$")
_TRT_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)*(?:\[[IWEVF]\]\s*)")
_TRT_METRIC = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9 /]*?):\s*(?P<body>min\s*=.*)$")
_TRT_ITEM = re.compile(rf"(min|max|mean|median|percentile\(\s*({NUM})\s*%\s*\))\s*=\s*({NUM})\s*(ms|us|s)")
_TRT_THROUGHPUT = re.compile(rf"Throughput:\s*({NUM})\s*qps")
_TRT_TOTAL = re.compile(rf"^(Total [A-Za-z ]+?):\s*({NUM})\s*(s|ms)\b")
_TRT_QUERIES = re.compile(rf"Timing trace has (\d+) queries over ({NUM}) s")


def trt_version_text(code: int | str) -> str:
    """``8502`` -> ``8.5.2``; ``100500`` -> ``10.5.0`` (TensorRT 10 widened the encoding)."""
    v = int(code)
    if v >= 100000:
        return f"{v // 10000}.{(v // 100) % 100}.{v % 100}"
    return f"{v // 1000}.{(v // 100) % 10}.{v % 100}"


@dataclass
class TrtexecResult:
    metrics: dict[str, dict[str, float]]  # "Latency" -> {min, max, mean, median, p90, p95, p99...} in ms
    throughput_qps: float | None = None
    totals_s: dict[str, float] = field(default_factory=dict)
    queries: int | None = None
    version: str | None = None
    status: str | None = None
    command: str | None = None

    def stats(self, metric: str = "Latency", warmup: int = 0) -> LatencyStats:
        m = self.metrics.get(metric)
        if m is None:
            raise ParseError(f"trtexec printed no '{metric}' line", "check the performance summary in the log")
        return LatencyStats.from_summary("trtexec", n=self.queries or 0, warmup=warmup, min_ms=m.get("min"),
                                         max_ms=m.get("max"), mean_ms=m.get("mean"), p50_ms=m.get("median"),
                                         p90_ms=m.get("p90"), p99_ms=m.get("p99"))

    def extra(self) -> dict[str, Any]:
        return {"tensorrt": self.version, "throughput_qps": self.throughput_qps, "summary_ms": self.metrics,
                "totals_s": self.totals_s, "queries": self.queries}


def _pct_key(p: str) -> str:
    f = float(p)
    return f"p{int(f)}" if f.is_integer() else f"p{f:g}"


def parse_trtexec(text: str) -> TrtexecResult:
    res = TrtexecResult(metrics={})
    for raw in text.splitlines():
        m = _TRT_VERSION.search(raw)
        if m and res.version is None:
            res.version = trt_version_text(m.group(1))
        m = _TRT_STATUS.search(raw)
        if m:
            res.status, res.command = m.group(1), m.group(2).strip()
            continue
        line = _TRT_PREFIX.sub("", raw.strip())
        m = _TRT_THROUGHPUT.search(line)
        if m:
            res.throughput_qps = float(m.group(1))
            continue
        m = _TRT_QUERIES.search(line)
        if m:
            res.queries = int(m.group(1))
            continue
        m = _TRT_TOTAL.search(line)
        if m:
            res.totals_s[m.group(1)] = float(m.group(2)) / (1e3 if m.group(3) == "ms" else 1.0)
            continue
        m = _TRT_METRIC.match(line)
        if m:
            values = {}
            for key, pct, value, unit in _TRT_ITEM.findall(m.group("body")):
                values[_pct_key(pct) if pct else key] = _unit_ms(float(value), unit)
            if values:
                res.metrics[m.group("name").strip()] = values
    if res.status == "FAILED":
        raise ParseError(f"trtexec FAILED: {_tail(text)}", f"run it by hand on the device to see why: {res.command}")
    if not res.metrics:
        raise ParseError(f"no performance summary in the trtexec output: {_tail(text)}",
                         "check trtexec finished (engine build errors come before the summary)")
    return res


def parse_trtexec_times(text: str, key: str = "latencyMs") -> list[float]:
    """Per-inference times (ms) from ``trtexec --exportTimes=FILE``; entries without ``key`` are skipped."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"trtexec times file is not JSON: {e}", "check trtexec finished writing it") from e
    if not isinstance(data, list):
        raise ParseError("trtexec times file is not a JSON list", "pass the file written by --exportTimes")
    values = [float(d[key]) for d in data if isinstance(d, dict) and key in d]
    if not values:
        raise ParseError(f"trtexec times file has no '{key}' entries", "pass the file written by --exportTimes")
    return values


# --------------------------------------------------------------------------- tegrastats
_TS_DATE = re.compile(r"^\d{2}-\d{2}-\d{4}$")
_TS_TIME = re.compile(r"^\d{2}:\d{2}:\d{2}$")
_TS_TEMP = re.compile(rf"^([A-Za-z][\w.\-]*)@({NUM})C$")
_TS_MEM = re.compile(rf"^({NUM})/({NUM})([KMG]B)$")
_TS_UTIL = re.compile(rf"^({NUM})%(?:@\[?([\d,]+)\]?)?$")
_TS_RAIL = re.compile(rf"^({NUM})(mW)?/({NUM})(mW)?$")
_TS_NUM = re.compile(rf"^{NUM}$")
_TS_CPU = re.compile(rf"^(?:({NUM})%@({NUM})|(off))$")


def parse_tegrastats_line(line: str) -> dict[str, Any]:
    """One tegrastats line -> ``{memory, cpu, util, temperatures_c, power_mw, values, unparsed}``.

    Deliberately generic: every ``NAME@NN.NC`` is a temperature, every ``NAME a/b`` a
    power rail (current/average mW), every ``NAME u%@f`` a utilisation with frequency,
    so new sensors and rails in later JetPacks are picked up without code changes. What
    does not fit any shape is kept in ``unparsed`` rather than dropped.
    """
    out: dict[str, Any] = {"memory": {}, "cpu": [], "util": {}, "temperatures_c": {}, "power_mw": {},
                           "values": {}, "unparsed": []}
    # Parenthesised details ("(lfb 3x2MB)", "(cached 23MB)") qualify the item before them.
    line = re.sub(r"\(([^)]*)\)", lambda m: "(" + m.group(1).replace(" ", "\x00") + ")", line.strip())
    tokens = line.split()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if _TS_DATE.match(tok) and nxt and _TS_TIME.match(nxt):
            out["time"] = f"{tok} {nxt}"
            i += 2
            continue
        m = _TS_TEMP.match(tok)
        if m:
            out["temperatures_c"][m.group(1)] = float(m.group(2))
            i += 1
            continue
        if tok.startswith("("):
            out["unparsed"].append(tok.replace("\x00", " "))
            i += 1
            continue
        if nxt is None:
            out["unparsed"].append(tok)
            break
        if tok == "CPU" and nxt.startswith("["):
            for core in nxt.strip("[]").split(","):
                c = _TS_CPU.match(core.strip())
                if c and c.group(3):
                    out["cpu"].append({"load_pct": None, "freq_mhz": None, "online": False})
                elif c:
                    out["cpu"].append({"load_pct": float(c.group(1)), "freq_mhz": float(c.group(2)), "online": True})
            i += 2
            continue
        m = _TS_MEM.match(nxt)
        if m:
            scale = {"KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}[m.group(3)]
            out["memory"][tok] = {"used_mb": float(m.group(1)) * scale, "total_mb": float(m.group(2)) * scale}
            i += 2
            continue
        m = _TS_UTIL.match(nxt)
        if m:
            entry: dict[str, Any] = {"pct": float(m.group(1))}
            if m.group(2):
                freqs = [float(f) for f in m.group(2).split(",") if f]
                entry["freq_mhz"] = freqs[0] if len(freqs) == 1 else freqs
            out["util"][tok] = entry
            i += 2
            continue
        m = _TS_RAIL.match(nxt)
        if m:
            out["power_mw"][tok] = {"current": float(m.group(1)), "average": float(m.group(3))}
            i += 2
            continue
        if tok == "MTS" and nxt == "fg":  # "MTS fg 1% bg 8%" (TX2 and older)
            rest = tokens[i + 2:i + 5]
            if len(rest) == 3 and rest[1] == "bg":
                out["util"]["MTS_fg"] = {"pct": float(rest[0].rstrip("%"))}
                out["util"]["MTS_bg"] = {"pct": float(rest[2].rstrip("%"))}
                i += 5
                continue
        if _TS_NUM.match(nxt) and not _TS_NUM.match(tok):
            out["values"][tok] = float(nxt)
            i += 2
            continue
        out["unparsed"].append(tok)
        i += 1
    return out


def summarize_tegrastats(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Max temperature per sensor, mean utilisation per engine, mean power per rail over a run."""
    if not samples:
        return {"samples": 0}
    temps: dict[str, float] = {}
    util: dict[str, list[float]] = {}
    power: dict[str, list[float]] = {}
    freqs: dict[str, list[float]] = {}
    for s in samples:
        for k, v in s["temperatures_c"].items():
            temps[k] = max(temps.get(k, v), v)
        for k, v in s["util"].items():
            util.setdefault(k, []).append(v["pct"])
            if isinstance(v.get("freq_mhz"), float):
                freqs.setdefault(k, []).append(v["freq_mhz"])
        for k, v in s["power_mw"].items():
            power.setdefault(k, []).append(v["current"])

    def mean(xs):
        return round(sum(xs) / len(xs), 2)

    return {"samples": len(samples), "max_temperature_c": temps,
            "mean_util_pct": {k: mean(v) for k, v in util.items()},
            "mean_freq_mhz": {k: mean(v) for k, v in freqs.items()},
            "mean_power_mw": {k: mean(v) for k, v in power.items()}}
