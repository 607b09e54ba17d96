"""``BenchmarkReport``: the one result every target produces, as JSON, Markdown or HTML.

A report is only worth something if it says under which conditions it was measured, so
it carries the device state before and after the run (governor, frequency, temperatures),
the threads and CPU affinity actually in effect, the artifact's sha256, the precision
plan, and the exact command that ran on the device. A run that lost its device part-way
is kept with ``complete = False``, the error, and the runs measured before the loss.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.benchmark.device_info import UNAVAILABLE, DeviceState
from edgeseg.benchmark.stats import LatencyStats
from edgeseg.errors import EdgesegError
from edgeseg.utils import atomic

REPORT_FORMAT = "edgeseg-benchmark-report"
REPORT_VERSION = 1
FORMATS = (".json", ".md", ".html")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def fmt(value: Any, digits: int = 3) -> str:
    """Human text for a report cell: ``None`` becomes 'unavailable', floats get fixed digits."""
    if value is None:
        return UNAVAILABLE
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@dataclass
class BenchmarkReport:
    target: dict[str, Any]  # {kind: local|adb|ssh, address}
    artifact: dict[str, Any]  # {path, name, sha256, bytes, model, input_shape}
    runtime: dict[str, Any]  # {backend, threads_intra_op, threads_inter_op, affinity, runner...}
    settings: dict[str, Any]  # {runs, warmup, repeats, cooldown_s, core}
    device_before: DeviceState = field(default_factory=DeviceState)
    device_after: DeviceState | None = None
    latency: LatencyStats | None = None
    repeats: list[dict[str, Any]] = field(default_factory=list)  # per-repeat figures (drift check)
    plan: dict[str, Any] | None = None  # PrecisionPlan.to_dict() when the manifest records one
    commands: list[str] = field(default_factory=list)  # exact commands run on the device
    accuracy: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # tool-specific figures (trtexec, tegrastats...)
    complete: bool = True
    error: str | None = None
    created: str = field(default_factory=_now)

    # ---------------------------------------------------------------- status
    def mark_incomplete(self, error: str) -> None:
        self.complete = False
        self.error = error

    # ---------------------------------------------------------------- json
    def to_dict(self) -> dict[str, Any]:
        from edgeseg import __version__

        return {
            "format": REPORT_FORMAT, "version": REPORT_VERSION, "edgeseg": __version__,
            "created": self.created, "complete": self.complete, "error": self.error,
            "target": self.target, "artifact": self.artifact, "runtime": self.runtime,
            "settings": self.settings, "plan": self.plan,
            "latency": self.latency.to_dict() if self.latency else None,
            "repeats": self.repeats,
            "device_before": self.device_before.to_dict(),
            "device_after": self.device_after.to_dict() if self.device_after else None,
            "commands": self.commands, "accuracy": self.accuracy, "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchmarkReport":
        if d.get("format") != REPORT_FORMAT:
            raise EdgesegError("file is not an edgeseg benchmark report",
                               "create one with `edgeseg bench ARTIFACT -o report.json`")
        return cls(
            target=d["target"], artifact=d["artifact"], runtime=d["runtime"], settings=d["settings"],
            device_before=DeviceState.from_dict(d.get("device_before") or {}),
            device_after=DeviceState.from_dict(d["device_after"]) if d.get("device_after") else None,
            latency=LatencyStats.from_dict(d["latency"]) if d.get("latency") else None,
            repeats=d.get("repeats", []), plan=d.get("plan"), commands=d.get("commands", []),
            accuracy=d.get("accuracy"), extra=d.get("extra", {}), complete=d.get("complete", True),
            error=d.get("error"), created=d.get("created", ""))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BenchmarkReport":
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise EdgesegError(f"cannot read benchmark report {p}: {e}",
                               "pass a .json report written by `edgeseg bench`") from e

    # ---------------------------------------------------------------- rows shared by all formats
    def latency_rows(self) -> list[tuple[str, str]]:
        s = self.latency
        if s is None:
            return [("runs", "0 (nothing measured)")]
        rows = [("runs (n)", str(s.n)), ("warm-up runs", str(s.warmup)), ("min", fmt(s.min_ms)),
                ("p50", fmt(s.p50_ms)), ("p90", fmt(s.p90_ms)), ("p99", fmt(s.p99_ms)), ("max", fmt(s.max_ms)),
                ("mean", fmt(s.mean_ms)), ("std", fmt(s.std_ms)), ("CV", fmt(s.cv, 4)),
                ("FPS (1 stream)", fmt(s.fps, 1)), ("source", s.source)]
        return rows

    def device_rows(self) -> list[tuple[str, str, str]]:
        before, after = self.device_before, self.device_after

        def temps(st: DeviceState | None) -> str:
            if st is None:
                return UNAVAILABLE
            if not isinstance(st.temperatures_c, dict):
                return str(st.temperatures_c)
            hottest = max(st.temperatures_c.items(), key=lambda kv: kv[1])
            return f"max {hottest[1]:.1f} ({hottest[0]}), {len(st.temperatures_c)} sensors"

        def get(st: DeviceState | None, attr: str) -> str:
            return UNAVAILABLE if st is None else fmt(getattr(st, attr), 1)

        rows = [(label, get(before, attr), get(after, attr)) for label, attr in (
            ("model", "model"), ("SoC", "soc"), ("CPU", "cpu_model"), ("core", "core"),
            ("governor", "governor"), ("cur freq (MHz)", "cur_freq_mhz"), ("max freq (MHz)", "max_freq_mhz"))]
        rows.append(("temperatures (°C)", temps(before), temps(after)))
        rows.append(("ISA (int8 path)", before.isa_summary, after.isa_summary if after else UNAVAILABLE))
        keys = list(dict.fromkeys([*before.extra, *((after.extra if after else {}))]))
        for k in keys:
            rows.append((k, fmt(before.extra.get(k)), fmt(after.extra.get(k)) if after else UNAVAILABLE))
        return rows

    def runtime_rows(self) -> list[tuple[str, str]]:
        rows = [(k, fmt(v) if not isinstance(v, (list, tuple)) else ",".join(map(str, v)))
                for k, v in self.runtime.items()]
        rows.append(("target", f"{self.target.get('kind')} {self.target.get('address') or ''}".strip()))
        rows.append(("artifact", f"{self.artifact.get('name')} (sha256 {str(self.artifact.get('sha256', ''))[:12]})"))
        if self.artifact.get("model"):
            rows.append(("model", str(self.artifact["model"])))
        if self.artifact.get("input_shape"):
            rows.append(("input", "x".join(map(str, self.artifact["input_shape"]))))
        rows.append(("precision plan", (self.plan or {}).get("spec") or "not recorded (a bare file, or an export without a plan)"))
        return rows

    def status_line(self) -> str:
        if self.complete:
            return "complete"
        n = self.latency.n if self.latency else 0
        return f"INCOMPLETE: {self.error} ({n} runs measured before the failure are reported)"

    # ---------------------------------------------------------------- markdown
    def to_markdown(self) -> str:
        title = self.artifact.get("model") or self.artifact.get("name")
        out = [f"# Benchmark: {title} on {self.target.get('kind')} {self.target.get('address') or ''}".rstrip(),
               "", f"- status: {self.status_line()}", f"- created: {self.created}", ""]
        out += ["## Latency (ms)", "", "| metric | value |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in self.latency_rows()]
        if len(self.repeats) > 1:
            out += ["", "### Per repeat (ms)", "", "| repeat | n | mean | p50 | min | max |", "|---|---|---|---|---|---|"]
            for i, r in enumerate(self.repeats):
                out.append(f"| {i + 1} | {r.get('n')} | {fmt(r.get('mean_ms'))} | {fmt(r.get('p50_ms'))} | "
                           f"{fmt(r.get('min_ms'))} | {fmt(r.get('max_ms'))} |")
        out += ["", "## Runtime", "", "| setting | value |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in self.runtime_rows()]
        out += ["", "## Device", "", "| | before | after |", "|---|---|---|"]
        out += [f"| {k} | {b} | {a} |" for k, b, a in self.device_rows()]
        if self.extra:
            out += ["", "## Runner figures", "", "```json", json.dumps(_strip_big(self.extra), indent=2), "```"]
        if self.accuracy:
            out += ["", "## Accuracy", "", "| metric | value |", "|---|---|"]
            out += [f"| {k} | {fmt(v)} |" for k, v in self.accuracy.items()]
        if self.commands:
            out += ["", "## Commands run on the device", "", "```sh", *self.commands, "```"]
        return "\n".join(out) + "\n"

    # ---------------------------------------------------------------- html
    def to_html(self) -> str:
        e = html.escape
        title = e(str(self.artifact.get("model") or self.artifact.get("name")))

        def table(headers, rows) -> str:
            head = "".join(f"<th>{e(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
            return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

        samples = self.latency.samples_ms if self.latency else []
        if samples:
            plots = (f"<h2>Latency distribution</h2>{svg_histogram(samples)}"
                     f"<h2>Latency by run (thermal drift shows as a trend)</h2>{svg_series(samples)}")
        else:
            plots = ("<p class='note'>The runner reports aggregates only (no per-run samples), "
                     "so there is nothing to plot.</p>")
        status_cls = "ok" if self.complete else "bad"
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>edgeseg benchmark: {title}</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
            "table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .6rem;"
            "text-align:left}th{background:#f3f3f3}.ok{color:#17692c}.bad{color:#a31515;font-weight:bold}"
            "pre{background:#f6f6f6;padding:.6rem;overflow-x:auto}.note{color:#666}</style></head><body>",
            f"<h1>Benchmark: {title}</h1>",
            f"<p>target: <b>{e(str(self.target.get('kind')))} {e(str(self.target.get('address') or ''))}</b>"
            f" &middot; created {e(self.created)} &middot; <span class='{status_cls}'>{e(self.status_line())}</span></p>",
            "<h2>Latency (ms)</h2>", table(("metric", "value"), self.latency_rows()), plots,
            "<h2>Runtime</h2>", table(("setting", "value"), self.runtime_rows()),
            "<h2>Device</h2>", table(("", "before", "after"), self.device_rows()),
        ]
        if self.extra:
            parts.append(f"<h2>Runner figures</h2><pre>{e(json.dumps(_strip_big(self.extra), indent=2))}</pre>")
        if self.commands:
            parts.append(f"<h2>Commands run on the device</h2><pre>{e(chr(10).join(self.commands))}</pre>")
        parts.append("</body></html>")
        return "\n".join(parts)

    # ---------------------------------------------------------------- files
    def render(self, suffix: str) -> str:
        suffix = suffix.lower()
        if suffix == ".json":
            return json.dumps(self.to_dict(), indent=2) + "\n"
        if suffix == ".md":
            return self.to_markdown()
        if suffix in (".html", ".htm"):
            return self.to_html()
        raise EdgesegError(f"cannot write a report as {suffix or 'a file without suffix'}",
                           f"name the output with one of: {', '.join(FORMATS)}")

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically; the format follows the suffix (.json, .md, .html)."""
        from edgeseg.utils.outputs import mark_text

        p = Path(path)
        text = self.render(p.suffix)  # render first: a bad suffix must not leave a file
        return atomic.write_text(p, mark_text(text, p.suffix))

    def rich_table(self):
        """A rich renderable with the headline figures (for the terminal)."""
        from rich.table import Table

        t = Table(title=f"{self.artifact.get('model') or self.artifact.get('name')} · "
                        f"{self.target.get('kind')} {self.target.get('address') or ''}".rstrip(),
                  caption=self.status_line(), show_header=True)
        t.add_column("latency (ms)")
        t.add_column("value", justify="right")
        t.add_column("setting")
        t.add_column("value")
        left = self.latency_rows()
        st = self.device_before
        right = [("backend", fmt(self.runtime.get("backend"))),
                 ("threads", f"{fmt(self.runtime.get('threads_intra_op'))} intra / "
                             f"{fmt(self.runtime.get('threads_inter_op'))} inter"),
                 ("affinity", ",".join(map(str, self.runtime.get("affinity") or [])) or UNAVAILABLE),
                 ("numerics", fmt(self.runtime.get("numerics"))),
                 ("CPU", st.cpu_model), ("ISA", st.isa_summary), ("SoC", st.soc), ("governor", st.governor),
                 ("freq (MHz)", _pair(fmt(st.cur_freq_mhz, 0), fmt(st.max_freq_mhz, 0), " / ")),
                 ("max temp (°C)", _pair(fmt(st.max_temperature_c, 1),
                                         fmt(self.device_after.max_temperature_c, 1) if self.device_after else None,
                                         " -> ")),
                 ("plan", (self.plan or {}).get("name") or (self.plan or {}).get("spec") or "not recorded")]
        for i in range(max(len(left), len(right))):
            a = left[i] if i < len(left) else ("", "")
            b = right[i] if i < len(right) else ("", "")
            t.add_row(a[0], a[1], b[0], b[1])
        return t


def _pair(a: str, b: str | None, sep: str) -> str:
    """``a sep b``, or just ``a`` when ``b`` is missing or says the same."""
    return a if b is None or b == a else f"{a}{sep}{b}"


def _strip_big(d: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``extra`` without long sample lists (they stay in the JSON report)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, list) and len(v) > 20:
            out[k] = f"[{len(v)} values, see the JSON report]"
        elif isinstance(v, dict):
            out[k] = _strip_big(v)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------- inline SVG plots
# Plots are drawn as inline SVG so the HTML report is one self-contained file and no
# plotting library is needed on the machine that runs the benchmark.
_W, _H, _PAD = 640, 240, 40


def svg_histogram(samples: list[float], bins: int | None = None) -> str:
    lo, hi = min(samples), max(samples)
    bins = bins or max(5, min(40, int(len(samples) ** 0.5) * 2))
    width = (hi - lo) / bins or 1e-9
    counts = [0] * bins
    for v in samples:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    top = max(counts)
    bw = (_W - 2 * _PAD) / bins
    bars = []
    for i, c in enumerate(counts):
        h = (_H - 2 * _PAD) * c / top
        x = _PAD + i * bw
        y = _H - _PAD - h
        bars.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{max(bw - 1, 1):.1f}' height='{h:.1f}' fill='#4c78a8'>"
                    f"<title>{lo + i * width:.3f}–{lo + (i + 1) * width:.3f} ms: {c}</title></rect>")
    axis = (f"<line x1='{_PAD}' y1='{_H - _PAD}' x2='{_W - _PAD}' y2='{_H - _PAD}' stroke='#333'/>"
            f"<text x='{_PAD}' y='{_H - _PAD + 16}' font-size='12'>{lo:.3f}</text>"
            f"<text x='{_W - _PAD}' y='{_H - _PAD + 16}' font-size='12' text-anchor='end'>{hi:.3f} ms</text>"
            f"<text x='{_PAD - 4}' y='{_PAD}' font-size='12' text-anchor='end'>{top}</text>")
    return f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H}'>{''.join(bars)}{axis}</svg>"


def svg_series(samples: list[float]) -> str:
    lo, hi = min(samples), max(samples)
    span = (hi - lo) or 1e-9
    n = len(samples)
    pts = []
    for i, v in enumerate(samples):
        x = _PAD + (_W - 2 * _PAD) * (i / max(n - 1, 1))
        y = _H - _PAD - (_H - 2 * _PAD) * (v - lo) / span
        pts.append(f"{x:.1f},{y:.1f}")
    axis = (f"<line x1='{_PAD}' y1='{_H - _PAD}' x2='{_W - _PAD}' y2='{_H - _PAD}' stroke='#333'/>"
            f"<text x='{_PAD}' y='{_H - _PAD + 16}' font-size='12'>run 1</text>"
            f"<text x='{_W - _PAD}' y='{_H - _PAD + 16}' font-size='12' text-anchor='end'>run {n}</text>"
            f"<text x='{_PAD - 4}' y='{_PAD}' font-size='12' text-anchor='end'>{hi:.2f}</text>"
            f"<text x='{_PAD - 4}' y='{_H - _PAD}' font-size='12' text-anchor='end'>{lo:.2f}</text>")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H}'>"
            f"<polyline fill='none' stroke='#e45756' stroke-width='1.5' points='{' '.join(pts)}'/>{axis}</svg>")
