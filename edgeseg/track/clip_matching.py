"""Near-online video instance segmentation with a clip model (IFC): clips of T frames every
S frames, instances of consecutive clips matched by soft IoU on the frames they share.

Clips
-----
Frames are numbered from 0 in the order given to :meth:`ClipMatchingTracker.step`. Clip k
covers frames ``kS .. kS+T-1`` and runs as soon as its last frame arrives (1 <= S <= T,
so every frame is covered). When the video ends (:meth:`~ClipMatchingTracker.finish`)
and its last frames are not covered yet, one more clip runs on the last T frames (as
IFC's own inference does); a video shorter than T runs one clip with its last frame
repeated. T is the clip graph's (one static graph per clip length); S is the tracker's.

Per clip
--------
The clip graph gives ``logits [1, N, K+1]`` (softmax: K classes + "no object") and mask
logits ``[1, N, T, h, w]``. A query is an *instance of the clip* when its best class
probability (no-object excluded) is above ``score_threshold``; the best
``max_instances`` are kept.

Matching
--------
The instances of a new clip are compared with the tracks seen on the frames the clip
shares with earlier clips: the soft IoU of a track's mask probabilities there (the mean
over the earlier clips that covered each frame) ``Q`` and the instance's ``P``,
``sum(Q * P) / sum(Q + P - Q * P)`` over every shared pixel of every shared frame. The
one-to-one assignment maximising the summed soft IoU (Hungarian, scipy) is kept where it
exceeds ``match_threshold``: those instances continue their track, the others start new
tracks with new ids. A track missing from the shared frames cannot be matched (its soft
IoU is 0), so an object that leaves and comes back later gets a new id.

Results
-------
A track's mask on a frame is the mean of the probabilities every clip covering that
frame gave it, then resized and thresholded as the image decoder does
(:mod:`edgeseg.track.masks`); its class is the arg-max of its class probabilities
averaged over its clips, its score that mean probability. With ``class_threshold`` > 0
a track is also reported for every other class whose mean probability exceeds it, with the
same masks (IFC's own inference uses 0.01; the default 0 reports the best class only). A frame is *final* once no
later clip can cover it (frames before the next clip's start; only the end-of-video clip
may cover final frames again, and then only to match on them): :meth:`step` returns the
frames that became final (the tracker is near-online: a frame's result arrives up to
T - 1 frames late), :meth:`finish` the video's tracks (YouTube-VIS results through
:func:`edgeseg.track.results.video_results`).
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.models.decoding import sigmoid
from edgeseg.track.kernel_reuse import FrameTiming, TrackedInstance, VideoResult, _frame_hw
from edgeseg.track.masks import MaskAssembler, video_assembler

CLIP_OUTPUTS = ("logits", "masks")


@dataclass
class ClipMatchConfig:
    stride: int = 1               # S: a clip starts every S frames (1 <= S <= T)
    score_threshold: float = 0.1  # best class probability (no-object excluded) of a clip instance
    match_threshold: float = 0.1  # min soft IoU on the shared frames to continue a track
    mask_threshold: float = 0.5
    max_instances: int = 10       # per clip, best scores first
    # > 0: a track is also reported under every other class whose mean probability exceeds
    # this (IFC's own video inference, MULTI_CLS_ON, uses 0.01). 0: its best class only (on
    # the synthetic val videos 0.01 changed VIS AP by < 0.01 and tripled the predictions).
    class_threshold: float = 0.0
    record: bool = True           # keep per-frame RLE masks for finish()

    def __post_init__(self) -> None:
        if not isinstance(self.stride, (int, np.integer)) or isinstance(self.stride, bool) or self.stride < 1:
            raise EdgesegError(f"stride S must be a whole number of frames >= 1, got {self.stride!r}",
                               "use 1 (a clip every frame, IFC's default) up to T (clips side by side)")
        if not 0.0 <= self.score_threshold < 1.0:
            raise EdgesegError(f"score threshold {self.score_threshold} is not a probability in [0, 1)", "use e.g. 0.1")
        if not 0.0 <= self.match_threshold <= 1.0:
            raise EdgesegError(f"match threshold {self.match_threshold} is not a soft IoU in [0, 1]", "use e.g. 0.1")
        if self.max_instances < 1:
            raise EdgesegError(f"max instances must be >= 1, got {self.max_instances}", "use e.g. 10")
        if not 0.0 <= self.class_threshold < 1.0:
            raise EdgesegError(f"class threshold {self.class_threshold} is not a probability in [0, 1)",
                               "use 0.01 (IFC's inference) or 0 (best class only)")

    @classmethod
    def from_options(cls, **options: Any) -> "ClipMatchConfig":
        """The config from ``edgeseg track`` options; one clear error for one that does not apply."""
        known = {f.name for f in fields(cls)}
        for key in options:
            if key not in known:
                flag = "--" + key.replace("_", "-")
                raise EdgesegError(f"{flag} does not apply to clip matching (IFC)",
                                   f"clip matching takes {', '.join('--' + k.replace('_', '-') for k in sorted(known - {'record', 'stride'}))}")
        return cls(**options)


@dataclass(eq=False)  # identity, not field equality (fields hold numpy arrays)
class ClipTrack:
    """One object over the video: accumulated per-frame mask probabilities and class probabilities."""

    id: int
    first_frame: int
    class_sum: np.ndarray                      # [K] summed class probabilities of its clips
    clips: int = 0
    prob_sum: dict[int, np.ndarray] = field(default_factory=dict)   # open frame -> summed probs [h, w]
    count: dict[int, int] = field(default_factory=dict)             # open frame -> clips covering it
    masks: dict[int, dict[str, Any]] = field(default_factory=dict)  # final frame -> uncompressed RLE
    hypotheses: list[tuple[int, float]] = field(default_factory=list)  # set by finish(): (label, score), best first

    @property
    def label(self) -> int:
        return int(np.argmax(self.class_sum))

    @property
    def score(self) -> float:
        return float(self.class_sum[self.label] / max(self.clips, 1))

    def predictions(self, class_threshold: float) -> list[tuple[int, float]]:
        """(label, score) hypotheses of the track: its best class, plus every other class whose
        mean probability exceeds ``class_threshold`` (when it is above 0)."""
        mean = self.class_sum / max(self.clips, 1)
        out = [(self.label, self.score)]
        if class_threshold > 0:
            out += [(int(k), float(mean[k])) for k in np.argsort(-mean, kind="stable")
                    if int(k) != self.label and mean[k] > class_threshold]
        return out

    def mean_prob(self, frame: int, grid_hw: tuple[int, int]) -> np.ndarray:
        n = self.count.get(frame, 0)
        return self.prob_sum[frame] / n if n else np.zeros(grid_hw, np.float32)

    def observe(self, frames: list[int | None], probs: np.ndarray, class_probs: np.ndarray) -> None:
        for j, f in enumerate(frames):
            if f is None:
                continue
            if f in self.prob_sum:
                self.prob_sum[f] = self.prob_sum[f] + probs[j]
                self.count[f] += 1
            else:
                self.prob_sum[f] = probs[j].astype(np.float32, copy=True)
                self.count[f] = 1
        self.class_sum = self.class_sum + class_probs
        self.clips += 1


@dataclass
class FrameInstances:
    """The instances of one final frame (what a near-online tracker emits)."""

    index: int
    instances: list[TrackedInstance]


@dataclass
class ClipInstances:
    """The instances kept from one clip's outputs."""

    queries: np.ndarray       # [k] query indices
    labels: np.ndarray        # [k]
    scores: np.ndarray        # [k]
    class_probs: np.ndarray   # [k, K]
    probs: np.ndarray         # [k, T, h, w] mask probabilities


def clip_instances(outputs: dict[str, np.ndarray], score_threshold: float, max_instances: int) -> ClipInstances:
    """Queries of one clip whose best class probability (no-object excluded) passes the threshold."""
    logits = np.asarray(outputs["logits"], dtype=np.float32).reshape(-1, np.asarray(outputs["logits"]).shape[-1])
    masks = np.asarray(outputs["masks"], dtype=np.float32)
    masks = masks.reshape(masks.shape[-4:])
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    class_probs = (e / e.sum(axis=1, keepdims=True))[:, :-1]
    labels = class_probs.argmax(axis=1)
    scores = class_probs[np.arange(len(labels)), labels]
    keep = np.flatnonzero(scores > score_threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:max_instances]
    return ClipInstances(keep, labels[keep], scores[keep].astype(np.float32), class_probs[keep],
                         sigmoid(masks[keep]))


def soft_iou(track_probs: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``[A, S, h, w]`` vs ``[B, S, h, w]`` mask probabilities on S shared frames -> ``[A, B]``
    soft IoU ``sum(q p) / sum(q + p - q p)`` over every shared pixel."""
    a = track_probs.reshape(track_probs.shape[0], -1).astype(np.float32)
    b = probs.reshape(probs.shape[0], -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-6), 0.0).astype(np.float32)


def assign(scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs maximising the summed score, each above ``threshold``."""
    if scores.size == 0:
        return []
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(scores, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if scores[r, c] > threshold]


class ClipMatchingTracker:
    """Streaming near-online tracker: feed frames with :meth:`step`, collect with :meth:`finish`.

    ``runtime`` runs the clip graph (input ``[T, 3, H, W]``, outputs ``logits`` and ``masks``).
    """

    delayed = True  # step() returns the frames that became final, not the frame just given

    def __init__(self, runtime, input_spec, config: ClipMatchConfig | None = None):
        self.config = config or ClipMatchConfig()
        self.rt = runtime
        self.spec = input_spec
        self.input_name = runtime.inputs()[0].name
        self.clip_length, self.grid_hw = _check_runtime(runtime)
        if self.config.stride > self.clip_length:
            raise EdgesegError(f"stride S={self.config.stride} is longer than the clip (T={self.clip_length}): "
                               f"frames between clips would never be segmented",
                               f"use S from 1 to {self.clip_length}, or export a longer clip (--clip-length)")
        self.frame_spec = input_spec.frame_spec()
        self.network_hw = (int(input_spec.height), int(input_spec.width))
        self.reset()

    def reset(self) -> None:
        """Start a new video (ids restart at 1)."""
        self.frame_index = 0
        self.frame_hw: tuple[int, int] | None = None
        self.assembler: MaskAssembler | None = None
        self.tracks: list[ClipTrack] = []
        self._buffer: deque[tuple[int, np.ndarray]] = deque(maxlen=self.clip_length)
        self._next_start = 0
        self._covered = -1        # last frame any clip covered
        self._final = 0           # frames < this are final
        self.clips_run = 0
        self.timings: list[FrameTiming] = []

    def set_frame_size(self, height: int, width: int) -> None:
        self.assembler = video_assembler(self.assembler, height, width, self.frame_index, self.grid_hw,
                                         self.network_hw, self.config.mask_threshold)
        self.frame_hw = self.assembler.frame_hw

    # ---------------------------------------------------------------------------- frames
    def step(self, frame_rgb: np.ndarray) -> list[FrameInstances]:
        """Take the next frame (HxWx3 uint8 RGB); returns the frames that became final."""
        from edgeseg.data.preprocess import preprocess

        self.set_frame_size(*_frame_hw(frame_rgb))
        t0 = time.perf_counter()
        self._buffer.append((self.frame_index, preprocess(frame_rgb, self.frame_spec)))
        index = self.frame_index
        self.frame_index += 1
        t1 = time.perf_counter()
        timing = FrameTiming(False, (t1 - t0) * 1e3, 0.0, 0.0)
        self.timings.append(timing)
        if index == self._next_start + self.clip_length - 1:
            frames = [i for i, _ in self._buffer]
            self._run_clip(frames, [x for _, x in self._buffer], timing)
            self._next_start += self.config.stride
            return self._finalize(self._next_start, timing)
        return []

    def _run_clip(self, frames: list[int | None], arrays: list[np.ndarray], timing: FrameTiming) -> None:
        t1, c1 = time.perf_counter(), time.thread_time()
        outputs = self.rt.run({self.input_name: np.ascontiguousarray(np.concatenate(arrays, axis=0))})
        missing = [n for n in CLIP_OUTPUTS if n not in outputs]
        if missing:
            raise EdgesegError(f"the clip graph returned no {', '.join(missing)}", "use the graph written by `edgeseg export`")
        t2, c2 = time.perf_counter(), time.thread_time()
        self.process_outputs(outputs, frames)
        t3, c3 = time.perf_counter(), time.thread_time()
        timing.keyframe = True
        timing.model_ms += (t2 - t1) * 1e3
        timing.model_cpu_ms += (c2 - c1) * 1e3
        timing.host_ms += (t3 - t2) * 1e3
        timing.host_cpu_ms += (c3 - c2) * 1e3

    def process_outputs(self, outputs: dict[str, np.ndarray], frames: list[int | None]) -> None:
        """Match one clip's instances to the tracks (``frames``: the clip's frame indices,
        None for padding); separate from :meth:`step` so benchmarks can time it alone."""
        cfg = self.config
        inst = clip_instances(outputs, cfg.score_threshold, cfg.max_instances)
        shared = [j for j, f in enumerate(frames) if f is not None and f <= self._covered]
        candidates = [t for t in self.tracks if any(f in t.count for f in (frames[j] for j in shared))]
        pairs: list[tuple[int, int]] = []
        if candidates and len(inst.queries) and shared:
            q = np.stack([np.stack([t.mean_prob(frames[j], self.grid_hw) for j in shared]) for t in candidates])
            pairs = assign(soft_iou(q, inst.probs[:, shared]), cfg.match_threshold)
        track_of = {c: candidates[r] for r, c in pairs}
        first = min(f for f in frames if f is not None)
        for k in range(len(inst.queries)):
            track = track_of.get(k)
            if track is None:
                track = ClipTrack(id=len(self.tracks) + 1, first_frame=first,
                                  class_sum=np.zeros(inst.class_probs.shape[1], np.float32))
                self.tracks.append(track)
            track.observe(frames, inst.probs[k], inst.class_probs[k])
        self._covered = max(self._covered, max(f for f in frames if f is not None))
        self.clips_run += 1

    def _finalize(self, upto: int, timing: FrameTiming | None) -> list[FrameInstances]:
        """Make frames ``< upto`` (and covered) final: their masks, recorded, and emitted."""
        t0, c0 = time.perf_counter(), time.thread_time()
        upto = min(upto, self._covered + 1)
        out = []
        for f in range(self._final, upto):
            instances = []
            for track in self.tracks:
                if f not in track.count:
                    continue
                prob = track.prob_sum[f] / track.count[f]
                inst = TrackedInstance(track.id, track.label, track.score, True, prob, self.assembler)
                instances.append(inst)
                if self.config.record and inst.mask.area:
                    track.masks[f] = inst.mask.rle()
            out.append(FrameInstances(f, instances))
        self._final = max(self._final, upto)
        # Final frames stay matchable while a later clip can still share them (the end-of-
        # video clip reaches back T - 1 frames); older ones are dropped.
        oldest = self.frame_index - self.clip_length
        for track in self.tracks:
            for f in [f for f in track.count if f < oldest]:
                del track.count[f], track.prob_sum[f]
        if timing is not None:
            timing.host_ms += (time.perf_counter() - t0) * 1e3
            timing.host_cpu_ms += (time.thread_time() - c0) * 1e3
        return out

    def flush(self) -> list[FrameInstances]:
        """End of the video: cover the last frames with one more clip if needed, make every frame final."""
        if self.frame_hw is None:
            raise EdgesegError("the video has no frames", "check the input holds at least one readable frame")
        last = self.frame_index - 1
        timing = self.timings[-1]
        if self._covered < last:
            items = list(self._buffer)
            frames: list[int | None] = [i for i, _ in items]
            arrays = [x for _, x in items]
            while len(arrays) < self.clip_length:  # a video shorter than T: repeat its last frame
                frames.append(None)
                arrays.append(arrays[-1])
            self._run_clip(frames, arrays, timing)
        return self._finalize(self.frame_index, timing)

    def finish(self) -> VideoResult:
        """The tracks of the video so far; call :meth:`reset` before the next video."""
        if self._final < self.frame_index or self.frame_hw is None:
            self.flush()
        kept = [t for t in self.tracks if t.masks] if self.config.record else list(self.tracks)
        for t in kept:
            t.hypotheses = t.predictions(self.config.class_threshold)
        return VideoResult(self.frame_index, self.frame_hw, kept, list(self.timings), self.config.stride)


# ------------------------------------------------------------------------------- checks
def _output_shape(runtime, name: str) -> list[Any] | None:
    for info in runtime.outputs():
        if info.name == name:
            return list(info.shape)
    return None


def _check_runtime(runtime) -> tuple[int, tuple[int, int]]:
    """(T, mask grid) of a clip graph, after checking its outputs."""
    names = [o.name for o in runtime.outputs()]
    missing = [n for n in CLIP_OUTPUTS if n not in names]
    if missing:
        raise EdgesegError(f"the clip graph {getattr(runtime, 'path', '')} lacks outputs {', '.join(missing)} "
                           f"(it has {', '.join(names)})", "track with an IFC clip graph exported by `edgeseg export`")
    shape = _output_shape(runtime, "masks")
    if len(shape) != 5 or not all(isinstance(d, int) and d > 0 for d in shape[2:]):
        raise EdgesegError(f"masks of the clip graph have shape {shape}, expected static [1, N, T, h, w]",
                           "export with static shapes (the default of `edgeseg export`)")
    inp = runtime.inputs()[0].shape
    if isinstance(inp[0], int) and inp[0] != shape[2]:
        raise EdgesegError(f"the clip graph takes {inp[0]} frames but gives masks for {shape[2]}",
                           "use a graph written by `edgeseg export`")
    return int(shape[2]), (int(shape[3]), int(shape[4]))


# ------------------------------------------------------------------------ the strategy
class ClipMatchingSession:
    """An artifact's clip graph (or an in-memory module), making one tracker per S."""

    def __init__(self, runtime, manifest, spec, graph_file: str | None, notes: list[str] | None = None):
        self.runtime = runtime
        self.manifest = manifest
        self.spec = spec
        self.graphs = {"clip": graph_file}
        self.notes = list(notes or [])
        self.backend = runtime.backend
        self.numerics = getattr(runtime, "numerics", "native")  # how int8 runs (edgeseg.runtimes.numerics)
        self.clip_length, _ = _check_runtime(runtime)
        self.default_interval = 1  # IFC's near-online default: a clip every frame

    def tracker(self, interval: int, config: ClipMatchConfig | None = None) -> ClipMatchingTracker:
        cfg = replace(config or ClipMatchConfig(), stride=interval)
        return ClipMatchingTracker(self.runtime, self.spec, cfg)

    def warm_up(self, runs: int = 3) -> None:
        feeds = self.runtime.random_feeds(0)
        for _ in range(runs):
            self.runtime.run(feeds)

    def check_classes(self, num_categories: int, source: str) -> None:
        shape = _output_shape(self.runtime, "logits")
        classes = shape[-1] - 1 if shape and isinstance(shape[-1], int) else None
        if classes is not None and classes != num_categories:
            raise EdgesegError(f"the model predicts {classes} classes, {source} has {num_categories} categories",
                               f"export the model with --num-classes {num_categories} (and weights trained "
                               "on this dataset)")

    def close(self) -> None:
        self.runtime.close()


def _clip_graph(manifest, frame_file: str | None) -> str:
    arts = manifest.artifacts
    frames = [f for f, a in arts.items() if a.get("graph", "frame") == "frame"]
    if frame_file is not None:
        if frame_file not in arts:
            raise EdgesegError(f"{frame_file} is not recorded in the manifest", f"known: {', '.join(arts)}")
        return frame_file
    primary = [f for f in frames if arts[f].get("primary")]
    if not (primary or frames):
        raise EdgesegError("the manifest lists no clip graph", "re-export the model with `edgeseg export`")
    return (primary or frames)[0]


class ClipMatching:
    """IFC's video strategy (``Family.video``): near-online clips of T frames every S frames,
    instances of consecutive clips matched by soft IoU on their shared frames."""

    name = "clip matching"
    interval_name = "S"
    interval_help = ("S: a clip of T frames (the graph's clip length) starts every S frames, 1 <= S <= T; "
                     "consecutive clips share T - S frames, on which their instances are matched")
    config = ClipMatchConfig.from_options

    @staticmethod
    def open(artifact: str | os.PathLike, *, backend: str | None = None, threads: int = 1,
             max_interval: int = 1, make_missing: bool = True, numerics: str = "fused") -> ClipMatchingSession:
        from edgeseg.export.manifest import input_spec_of
        from edgeseg.runtimes.base import load_runtime

        from edgeseg.track.strategy import open_artifact

        p, manifest, folder = open_artifact(artifact)
        graph = _clip_graph(manifest, None if p.is_dir() else p.name)
        spec = input_spec_of(manifest)
        if not spec.is_clip:
            raise EdgesegError(f"{folder} holds an image graph (its input has no clip length)",
                               "export a clip model (IFC) with `edgeseg export MODEL --clip-length T`")
        runtime = load_runtime(folder / graph, backend=backend, threads=threads, numerics=numerics)
        try:
            session = ClipMatchingSession(runtime, manifest, spec, graph)
        except BaseException:
            runtime.close()
            raise
        if max_interval > session.clip_length:
            runtime.close()
            raise EdgesegError(f"stride S={max_interval} is longer than the clip graph's T={session.clip_length}",
                               f"use S from 1 to {session.clip_length}")
        return session

    @staticmethod
    def open_module(model, threads: int | None = None) -> ClipMatchingSession:
        """A session on an in-memory module (validation during training)."""
        from edgeseg.export.manifest import Manifest
        from edgeseg.runtimes.torch_eager import ModuleRuntime

        runtime = ModuleRuntime(model, threads=threads)
        return ClipMatchingSession(runtime, Manifest.from_model(model), model.input_spec, None)
