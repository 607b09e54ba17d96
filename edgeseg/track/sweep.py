"""The interval sweep: VIS AP and per-frame latency for several intervals of a video strategy.

MobileInst's Table 4 trades accuracy for speed with the keyframe interval T: a larger T
runs the instance decoder less often (YolactEdge's partial feature transform likewise,
with its keyframe interval); a clip model (IFC) trades with its clip stride S (a clip of
T frames every S frames). The sweep runs whatever video strategy the artifact's family
names (:mod:`edgeseg.track.strategy`); its ``interval_name`` heads the first column. Every
video of a YouTube-VIS dataset is tracked at each interval with the same runtimes, the
results are scored with :func:`edgeseg.eval.vis.evaluate_vis`, and the mean per-frame
latency is measured on one pinned core with one-thread runtimes (model inference + host
post-processing, the end-of-video work included; JPEG decoding and preprocessing are
reported apart, as they do not depend on the interval).
"""

from __future__ import annotations

import gc
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.track.kernel_reuse import TrackerConfig
from edgeseg.utils.blas import blas_threads
from edgeseg.track.results import label_to_category, video_results

WARMUP_RUNS = 3  # per graph, before any timed frame: first runs allocate and tune


@dataclass
class SweepRow:
    reuse: int
    ap: float | None
    ap50: float | None
    ap75: float | None
    model_ms: float  # mean over all frames: frame graph on keyframes, features graph otherwise
    host_ms: float  # mean per frame: scoring, association, mask assembly
    total_ms: float  # model + host
    keyframe_model_ms: float
    reuse_model_ms: float | None  # None when T = 1
    preprocess_ms: float
    model_cpu_ms: float  # mean per frame, this thread's CPU time (robust to a shared core)
    host_cpu_ms: float
    frames: int
    keyframes: int
    predictions: int
    # Mean ms of each named part (FrameTiming.parts) over the frames that ran it, e.g.
    # {"warp": 0.4} for YolactEdge's host warp on non-keyframes.
    parts_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepReport:
    rows: list[SweepRow]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "rows": [asdict(r) for r in self.rows]}

    def markdown(self) -> str:
        s = self.settings
        name = s.get("interval_name", "T")
        clip = f" (clips of T={s['clip_length']})" if s.get("clip_length") else ""
        lines = [f"# {str(s.get('strategy', 'kernel reuse')).capitalize()} sweep: {s.get('model', '?')} on "
                 f"{s.get('dataset', '?')}", "",
                 f"{s.get('videos')} videos, {s.get('frames_per_sweep')} frames per {name}{clip}; latency on core "
                 f"{s.get('core')} with {s.get('threads')} thread(s), {s.get('backend')} "
                 f"({s.get('numerics', '?')} int8 numerics, host {s.get('host_isa', '?')}); "
                 f"weights: {s.get('weights') or 'random init (AP meaningless)'}.", "",
                 f"| {name} | VIS AP | AP50 | AP75 | ms/frame (model + host) | model ms | host ms | keyframe ms | "
                 "reuse-frame ms | CPU ms/frame |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r.reuse} | {_f(r.ap)} | {_f(r.ap50)} | {_f(r.ap75)} | {r.total_ms:.2f} | "
                         f"{r.model_ms:.2f} | {r.host_ms:.3f} | {r.keyframe_model_ms:.2f} | "
                         f"{_f(r.reuse_model_ms, 2)} | {r.model_cpu_ms + r.host_cpu_ms:.2f} |")
        for r in self.rows:
            for part, ms in r.parts_ms.items():
                share = f" ({100 * ms / r.reuse_model_ms:.1f}% of the non-keyframe model time)" \
                    if r.reuse_model_ms else ""
                lines.append(f"T={r.reuse}: {part} {ms:.3f} ms per frame that runs it{share}, part of host ms.")
        lines += ["", "Latency is wall-clock time per frame on the pinned core; CPU ms/frame is the tracking "
                  "thread's CPU time for the same work (equal on an idle core)."]
        if s.get("clip_length"):
            lines += ["For clip matching a \"keyframe\" is a frame on which a clip ran (keyframe ms: one clip "
                      "of T frames; the other frames cost only their share of host work)."]
        return "\n".join(lines) + "\n"


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def parse_reuse(text: str | int) -> list[int]:
    """``"1,3,6"`` -> [1, 3, 6]; every T a whole number >= 1."""
    values = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise EdgesegError(f"--key-interval {text!r}: {part!r} is not a whole number",
                               "give T as 3, or several as 1,3,6") from None
        if value < 1:
            raise EdgesegError(f"--key-interval {value}: T must be at least 1 (frame i is a keyframe when i % T == 0)",
                               "use 1 (a keyframe every frame), 3 (MobileInst's choice) or more")
        values.append(value)
    if len(set(values)) != len(values):
        raise EdgesegError(f"--key-interval {text!r} repeats a value", "list each T once")
    return values


def _pinned(core: int | None):
    from edgeseg.benchmark.targets.local import ProcessPinning, default_core

    return ProcessPinning(default_core() if core is None else core)


def _timed_video(tracker, frames: list[np.ndarray]):
    """The video's result, its per-frame timings covering the end-of-video work too (a
    near-online tracker's last clip runs in ``finish``)."""
    tracker.reset()
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed frame would be charged to that T
    try:
        for frame in frames:
            tracker.step(frame)
        return tracker.finish()
    finally:
        if gc_was_enabled:
            gc.enable()


def reuse_sweep(dataset, artifact: str | os.PathLike, reuses: list[int], base=None,
                backend: str | None = None, threads: int = 1, core: int | None = None,
                numerics: str = "fused", options: dict[str, Any] | None = None) -> SweepReport:
    """Track every video of ``dataset`` (a :class:`~edgeseg.data.ytvis.YtvisDataset` with its
    frame folder) at each interval in ``reuses``; VIS AP and latency per interval.

    ``base`` is the strategy's tracker config; without it one is made from ``options``
    (``edgeseg track``'s thresholds) with the strategy's own defaults. One run gives both
    figures, so ``numerics`` is the latency default (ONNX Runtime's fused int8 kernels);
    ``simulated`` gives host-independent VIS AP of int8 artifacts."""
    from edgeseg.benchmark.cpu_isa import host_isa
    from edgeseg.runtimes.numerics import check_numerics, warn_if_saturating
    from edgeseg.eval.vis import evaluate_vis
    from edgeseg.export.manifest import input_spec_of
    from edgeseg.track.strategy import strategy_for
    from edgeseg.utils.progress import track as progress

    category_of = label_to_category(dataset.categories)
    results: dict[int, list[dict[str, Any]]] = {t: [] for t in reuses}
    timings: dict[int, list] = {t: [] for t in reuses}
    strategy = strategy_for(artifact)
    if base is None:
        base = strategy.config(**(options or {})) if hasattr(strategy, "config") else TrackerConfig()
    pin = _pinned(core)
    with pin, blas_threads(threads):
        # Opened after pinning so any thread a runtime starts inherits the one core.
        session = strategy.open(artifact, backend=backend, threads=threads, max_interval=max(reuses),
                                make_missing=True, numerics=check_numerics(numerics))
        try:
            first = next((f for f in session.graphs.values() if f), None)  # the frame (or clip) graph
            precisions = (session.manifest.artifacts.get(first, {}).get("precision") or {}).get("precisions") or {}
            if "int8" in precisions.values():
                warn_if_saturating(session.numerics, "VIS AP of the reuse sweep")
            spec = input_spec_of(session.manifest)
            session.check_classes(len(dataset.categories), str(dataset.source))
            trackers = {t: session.tracker(t, base) for t in reuses}
            session.warm_up(WARMUP_RUNS)
            letter = getattr(strategy, "interval_name", "T")
            for video in progress(dataset.videos, f"tracking {len(dataset.videos)} videos x {letter}={reuses}"):
                # Frames decoded once per video and shared by every T (decoding is not timed).
                frames = [dataset.load_frame(video, i) for i in range(video.length)]
                for t, tracker in trackers.items():
                    result = _timed_video(tracker, frames)
                    timings[t] += result.timings
                    results[t] += video_results(result, video.id, category_of)
        finally:
            session.close()

    rows = []
    for t in reuses:
        scores = evaluate_vis(dataset, results[t])
        tm = timings[t]
        key = [x.model_ms for x in tm if x.keyframe]
        other = [x.model_ms for x in tm if not x.keyframe]
        model = float(np.mean([x.model_ms for x in tm]))
        host = float(np.mean([x.host_ms for x in tm]))
        rows.append(SweepRow(t, scores["AP"], scores["AP50"], scores["AP75"], model, host, model + host,
                             float(np.mean(key)), float(np.mean(other)) if other else None,
                             float(np.mean([x.preprocess_ms for x in tm])),
                             float(np.mean([x.model_cpu_ms for x in tm])), float(np.mean([x.host_cpu_ms for x in tm])),
                             len(tm), len(key), len(results[t]), _parts(tm)))
    m = session.manifest
    settings = {"model": m.model, "artifact": str(artifact), "strategy": strategy.name,
                "frame_graph": session.graphs.get("frame"), "graphs": dict(session.graphs),
                "features_graph": session.graphs.get("features"), "dataset": str(dataset.source),
                "videos": len(dataset.videos), "frames_per_sweep": sum(v.length for v in dataset.videos),
                "backend": session.backend, "threads": threads, "core": pin.core,
                "weights": (m.weights or {}).get("path"), "tracker": {k: v for k, v in asdict(base).items()
                                                                      if k not in ("reuse", "stride", "record")},
                "interval_name": getattr(strategy, "interval_name", "T"),
                "clip_length": getattr(session, "clip_length", None),
                "input": [spec.height, spec.width], "warmup_runs_per_graph": WARMUP_RUNS,
                "numerics": session.numerics, "host_isa": host_isa().summary()}
    return SweepReport(rows, settings)


def _parts(timings) -> dict[str, float]:
    names = sorted({k for x in timings for k in getattr(x, "parts", {})})
    return {k: float(np.mean([x.parts[k] for x in timings if k in x.parts])) for k in names}


def report_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The two files :func:`save_report` writes for ``-o PATH``."""
    p = Path(path)
    return p.with_suffix(".json"), p.with_suffix(".md")


def save_report(report: SweepReport, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write the table as ``<stem>.json`` and ``<stem>.md`` beside each other (atomically)."""
    from edgeseg.utils import atomic
    from edgeseg.utils.outputs import mark_text

    json_path, md_path = report_paths(path)
    atomic.write_json(json_path, {"format": "edgeseg-reuse-sweep", **report.to_dict()})
    atomic.write_text(md_path, mark_text(report.markdown(), ".md"))
    return json_path, md_path
