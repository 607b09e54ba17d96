"""MobileInst's video tracker: keyframe kernels reused for T-1 frames, kernels associated.

Keyframes
---------
Frames are numbered from 0 in the order given to :meth:`KernelReuseTracker.step`. Frame
``i`` is a *keyframe* exactly when ``i % T == 0``: the first frame of a video is always a
keyframe, then frames T, 2T, 3T... With T = 1 every frame is a keyframe (per-frame
detection + association, no reuse). The frames after a keyframe (``i % T != 0``) are
*reuse frames*; a video that ends mid-period simply ends on reuse frames (nothing looks
ahead). There is no other way to become a keyframe: an object that appears on a reuse
frame is found on the next keyframe.

* keyframe: the frame graph gives class logits, objectness, kernels and mask features for
  N queries. Queries scoring above ``score_threshold`` (score = sqrt(sigmoid(class) x
  sigmoid(objectness)) x maskness, exactly as the image decoder) are detections; their
  kernels are associated one-to-one with the last kernel of every live track
  (:func:`edgeseg.track.associate.associate`): matched detections continue their track,
  the others start new tracks with new ids.
* reuse frame: only the features graph runs (no instance decoder); the kernels, scores
  and labels of the last keyframe's instances are reused on the new mask features.

Masks are ``sigmoid(kernel . mask_features)`` for the tracked instances only (K kernels,
not all N queries), on the mask grid; the binary frame-size mask (resized to the network
input, then to the frame, as the image decoder does: :mod:`edgeseg.track.masks`) is made
when first asked for, or at once when the tracker records results.

Gaps: a track not matched on a keyframe is hidden (no mask) but stays matchable against
its last kernel while it has missed at most ``max_gap`` (G) consecutive keyframes; missing
G + 1 ends it for good, and the object gets a new id if it comes back.

Per track the category is the label with the highest summed score over its keyframes,
and its score the mean of its keyframe scores.

The per-frame host work (scoring, association, mask assembly) is numpy; models run
through any :class:`~edgeseg.runtimes.base.Runtime` pair.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.models.decoding import sigmoid
from edgeseg.track.associate import associate, preload
from edgeseg.track.masks import BoxMask, MaskAssembler, video_assembler

FRAME_OUTPUTS = ("logits", "objectness", "kernels", "mask_features")
FEATURES_OUTPUT = "mask_features"


@dataclass
class TrackerConfig:
    reuse: int = 3  # T: frame i is a keyframe iff i % T == 0
    score_threshold: float = 0.3  # on sqrt(class x objectness), as the image decoder
    match_threshold: float = 0.5  # min cosine similarity of kernels to continue a track
    max_gap: int = 2  # G: keyframes a track may miss and still be re-matched
    mask_threshold: float = 0.5
    max_instances: int = 10  # per keyframe, best scores first
    record: bool = True  # keep per-frame RLE masks for finish() (off for a live display)

    def __post_init__(self) -> None:
        if not isinstance(self.reuse, (int, np.integer)) or self.reuse < 1:
            raise EdgesegError(f"--reuse must be a whole number of frames >= 1, got {self.reuse!r}",
                               "use 1 (a keyframe every frame), 3 (MobileInst's choice) or more")
        if self.max_gap < 0:
            raise EdgesegError(f"max gap must be >= 0 keyframes, got {self.max_gap}", "use 0 to end tracks at once")
        if not 0.0 <= self.match_threshold <= 1.0:
            raise EdgesegError(f"match threshold {self.match_threshold} is not a cosine in [0, 1]",
                               "use e.g. 0.5")
        if self.max_instances < 1:
            raise EdgesegError(f"max instances must be >= 1, got {self.max_instances}", "use e.g. 10")


@dataclass
class TrackedInstance:
    """One tracked object on one frame.

    ``probabilities`` is the mask as the network gives it (the mask grid, H/8 x W/8): what
    a phone app hands to the GPU to upsample. ``mask`` is the binary frame-size mask,
    computed on first access (and by the tracker itself when it records results).
    """

    track_id: int
    label: int  # 0-based class of this keyframe's detection
    score: float  # this keyframe's detection score (reused on the frames in between)
    keyframe: bool  # True on the frame where this instance was detected
    probabilities: np.ndarray = field(repr=False)
    assembler: MaskAssembler = field(repr=False)
    _mask: BoxMask | None = field(default=None, repr=False)

    @property
    def mask(self) -> BoxMask:
        if self._mask is None:
            self._mask = self.assembler.resize(self.probabilities)
        return self._mask


@dataclass(eq=False)  # identity, not field equality (fields hold numpy arrays)
class Track:
    id: int
    kernel: np.ndarray  # last matched kernel [D]
    first_frame: int
    label_scores: dict[int, float] = field(default_factory=dict)
    scores: list[float] = field(default_factory=list)
    gap: int = 0  # consecutive keyframes missed
    masks: dict[int, dict[str, Any]] = field(default_factory=dict)  # frame -> uncompressed RLE

    @property
    def label(self) -> int:
        return max(self.label_scores.items(), key=lambda kv: (kv[1], -kv[0]))[0]

    @property
    def score(self) -> float:
        return float(np.mean(self.scores)) if self.scores else 0.0

    def observe(self, kernel: np.ndarray, label: int, score: float) -> None:
        self.kernel = kernel
        self.label_scores[label] = self.label_scores.get(label, 0.0) + score
        self.scores.append(score)
        self.gap = 0


@dataclass
class FrameTiming:
    keyframe: bool
    preprocess_ms: float
    model_ms: float  # Runtime.run of the frame or features graph (wall clock)
    host_ms: float  # scoring + association + mask assembly (+ recording), wall clock
    # This thread's CPU time for the same two steps: with one-thread runtimes the model
    # computes on this thread, so these stay meaningful when other processes share the core.
    model_cpu_ms: float = 0.0
    host_cpu_ms: float = 0.0
    # Named pieces of the work above that a strategy times on its own, in ms (wall), e.g.
    # YolactEdge's host warp on non-keyframes ({"warp": 0.4}, included in host_ms).
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class VideoResult:
    num_frames: int
    frame_hw: tuple[int, int]
    tracks: list[Track]
    timings: list[FrameTiming]
    reuse: int

    def track_masks(self, track: Track) -> list[dict[str, Any] | None]:
        """One uncompressed RLE per frame, None where the track has no (or an empty) mask."""
        return [track.masks.get(t) for t in range(self.num_frames)]

    def mean_ms(self) -> dict[str, float]:
        if not self.timings:
            return {"preprocess": 0.0, "model": 0.0, "host": 0.0, "total": 0.0}
        pre = float(np.mean([t.preprocess_ms for t in self.timings]))
        model = float(np.mean([t.model_ms for t in self.timings]))
        host = float(np.mean([t.host_ms for t in self.timings]))
        return {"preprocess": pre, "model": model, "host": host, "total": model + host}


@dataclass
class _Live:
    """An instance of the current keyframe period: what reuse frames render."""

    track: Track
    kernel: np.ndarray
    label: int
    score: float


def keyframe_detections(outputs: dict[str, np.ndarray], assembler: MaskAssembler, score_threshold: float,
                        max_instances: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(indices, labels, scores, low-res probabilities) of the queries kept on a keyframe.

    Same decoding as :func:`edgeseg.models.mobileinst.decode.decode`: best class
    of sqrt(sigmoid(class) x sigmoid(objectness)), kept above the threshold, rescored by
    maskness (mean probability inside the low-resolution mask).
    """
    logits = np.asarray(outputs["logits"])[0]
    objectness = np.asarray(outputs["objectness"])[0].reshape(-1, 1)
    kernels = np.asarray(outputs["kernels"])[0]
    scores = np.sqrt(sigmoid(logits) * sigmoid(objectness))
    labels = scores.argmax(axis=1)
    best = scores[np.arange(len(scores)), labels]
    keep = np.flatnonzero(best > score_threshold)
    if keep.size == 0:
        return keep, keep, np.zeros(0, np.float32), np.zeros((0,) + assembler.grid_hw, np.float32)
    probs = assembler.probabilities(kernels[keep], outputs["mask_features"])
    binary = probs > assembler.threshold
    maskness = (probs * binary).sum(axis=(1, 2)) / (binary.sum(axis=(1, 2)) + 1e-6)
    final = best[keep] * maskness
    order = np.argsort(-final, kind="stable")[:max_instances]
    return keep[order], labels[keep[order]], final[order].astype(np.float32), probs[order]


class KernelReuseTracker:
    """Streaming tracker: feed frames with :meth:`step`, collect tracks with :meth:`finish`.

    ``frame_runtime`` runs the frame graph (outputs ``logits``, ``objectness``,
    ``kernels``, ``mask_features``), ``features_runtime`` the features graph (output
    ``mask_features``); with T = 1 the features runtime is never used and may be None.
    """

    def __init__(self, frame_runtime, features_runtime, input_spec, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self.frame_rt = frame_runtime
        self.features_rt = features_runtime
        self.spec = input_spec
        self.input_name = frame_runtime.inputs()[0].name
        self.grid_hw = _check_runtimes(frame_runtime, features_runtime, self.config.reuse)
        self.network_hw = (int(input_spec.height), int(input_spec.width))
        preload()
        self.reset()

    def reset(self) -> None:
        """Start a new video (ids restart at 1)."""
        self.frame_index = 0
        self.frame_hw: tuple[int, int] | None = None
        self.assembler: MaskAssembler | None = None
        self.tracks: list[Track] = []  # every track ever started, in id order
        self._matchable: list[Track] = []  # tracks within the gap allowance
        self._live: list[_Live] = []
        self.timings: list[FrameTiming] = []

    def set_frame_size(self, height: int, width: int) -> None:
        """Fix the video's frame size (done by the first :meth:`step`; every later frame must match)."""
        self.assembler = video_assembler(self.assembler, height, width, self.frame_index, self.grid_hw,
                                         self.network_hw, self.config.mask_threshold)
        self.frame_hw = self.assembler.frame_hw

    @property
    def next_is_keyframe(self) -> bool:
        return self.frame_index % self.config.reuse == 0

    # ---------------------------------------------------------------------------- frames
    def step(self, frame_rgb: np.ndarray) -> list[TrackedInstance]:
        """Process the next frame (HxWx3 uint8 RGB); returns the instances visible on it."""
        from edgeseg.data.preprocess import preprocess

        self.set_frame_size(*_frame_hw(frame_rgb))
        keyframe = self.next_is_keyframe
        t0 = time.perf_counter()
        feeds = {self.input_name: preprocess(frame_rgb, self.spec)}
        t1, c1 = time.perf_counter(), time.thread_time()
        if keyframe:
            outputs = self.frame_rt.run(feeds)
            _check_outputs(outputs, FRAME_OUTPUTS, "frame")
        else:
            outputs = self.features_rt.run(feeds)
            _check_outputs(outputs, (FEATURES_OUTPUT,), "features")
        t2, c2 = time.perf_counter(), time.thread_time()
        instances = self.process_outputs(outputs, keyframe)
        t3, c3 = time.perf_counter(), time.thread_time()
        self.timings.append(FrameTiming(keyframe, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3,
                                        (c2 - c1) * 1e3, (c3 - c2) * 1e3))
        return instances

    def process_outputs(self, outputs: dict[str, np.ndarray], keyframe: bool) -> list[TrackedInstance]:
        """The host-side work of one frame on already computed graph outputs.

        Separate from :meth:`step` so the benchmark can time exactly this part.
        """
        assert self.assembler is not None, "step() or set_frame_size() first"
        index = self.frame_index
        probs = None
        if keyframe:
            probs = self._on_keyframe(outputs, index)
        instances = []
        if self._live:
            if probs is None:  # reuse frame: the keyframe's kernels on this frame's features
                kernels = np.stack([live.kernel for live in self._live])
                probs = self.assembler.probabilities(kernels, outputs[FEATURES_OUTPUT])
            for live, prob in zip(self._live, probs):
                inst = TrackedInstance(live.track.id, live.label, live.score, keyframe, prob, self.assembler)
                instances.append(inst)
                if self.config.record and inst.mask.area:
                    live.track.masks[index] = inst.mask.rle()
        self.frame_index += 1
        return instances

    def _on_keyframe(self, outputs: dict[str, np.ndarray], index: int) -> np.ndarray:
        cfg = self.config
        idx, labels, scores, probs = keyframe_detections(outputs, self.assembler, cfg.score_threshold,
                                                         cfg.max_instances)
        kernels = np.asarray(outputs["kernels"])[0][idx]
        previous = [t.kernel for t in self._matchable]
        assoc = associate(np.stack(previous) if previous else np.zeros((0, kernels.shape[1]), np.float32),
                          kernels, cfg.match_threshold)
        track_of: dict[int, Track] = {}
        for ti, di in assoc.matches:
            track_of[di] = self._matchable[ti]
        for ti in assoc.unmatched_tracks:
            self._matchable[ti].gap += 1
        started = []
        for di in assoc.unmatched_detections:
            track = Track(id=len(self.tracks) + 1, kernel=kernels[di], first_frame=index)
            self.tracks.append(track)
            started.append(track)
            track_of[di] = track
        self._live = []
        for di in range(len(idx)):
            track = track_of[di]
            track.observe(kernels[di].copy(), int(labels[di]), float(scores[di]))
            self._live.append(_Live(track, track.kernel, int(labels[di]), float(scores[di])))
        # Matched tracks are back at gap 0; unmatched ones stay matchable while gap <= G.
        self._matchable = [t for t in self._matchable if t.gap <= cfg.max_gap] + started
        return probs  # the live instances' mask probabilities on this keyframe, in order

    def finish(self) -> VideoResult:
        """The tracks of the video so far; call :meth:`reset` before the next video."""
        if self.frame_hw is None:
            raise EdgesegError("the video has no frames", "check the input holds at least one readable frame")
        kept = [t for t in self.tracks if t.masks] if self.config.record else list(self.tracks)
        return VideoResult(self.frame_index, self.frame_hw, kept, list(self.timings), self.config.reuse)


# ------------------------------------------------------------------------------- checks
def _frame_hw(frame: np.ndarray) -> tuple[int, int]:
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise EdgesegError(f"expected an HxWx3 uint8 RGB frame, got {arr.dtype} of shape {tuple(arr.shape)}",
                           "decode frames as RGB uint8 (edgeseg.track.video_io.open_frames does)")
    return int(arr.shape[0]), int(arr.shape[1])


def _output_shape(runtime, name: str) -> list[Any] | None:
    for info in runtime.outputs():
        if info.name == name:
            return list(info.shape)
    return None


def _check_runtimes(frame_rt, features_rt, reuse: int) -> tuple[int, int]:
    """The mask grid (h, w), after checking both graphs agree on inputs and mask features."""
    names = [o.name for o in frame_rt.outputs()]
    missing = [n for n in FRAME_OUTPUTS if n not in names]
    if missing:
        raise EdgesegError(f"the frame graph {getattr(frame_rt, 'path', '')} lacks outputs {', '.join(missing)} "
                           f"(it has {', '.join(names)})",
                           "track with a MobileInst frame graph exported by `edgeseg export`")
    shape = _output_shape(frame_rt, FEATURES_OUTPUT)
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[2:]):
        raise EdgesegError(f"mask_features of the frame graph have shape {shape}, expected static [1, D, h, w]",
                           "export with static shapes (the default of `edgeseg export`)")
    if features_rt is None:
        if reuse > 1:
            raise EdgesegError(f"kernel reuse (T={reuse}) needs the features graph, and none was given",
                               "export with both graphs (`edgeseg export` does by default) or use --reuse 1")
        return int(shape[2]), int(shape[3])
    fshape = _output_shape(features_rt, FEATURES_OUTPUT)
    if fshape is None:
        raise EdgesegError(f"the features graph {getattr(features_rt, 'path', '')} has no mask_features output",
                           "pass the features graph (<model>.features.onnx) written by `edgeseg export`")
    if list(fshape) != list(shape):
        raise EdgesegError(f"mask_features shapes differ: frame graph {shape}, features graph {fshape}",
                           "use the two graphs of one export (same model, same input size)")
    fin, gin = frame_rt.inputs()[0].shape, features_rt.inputs()[0].shape
    if list(fin) != list(gin):
        raise EdgesegError(f"input shapes differ: frame graph {fin}, features graph {gin}",
                           "use the two graphs of one export (same input size)")
    return int(shape[2]), int(shape[3])


def _check_outputs(outputs: dict[str, np.ndarray], names: tuple[str, ...], graph: str) -> None:
    missing = [n for n in names if n not in outputs]
    if missing:
        raise EdgesegError(f"the {graph} graph returned no {', '.join(missing)}",
                           "use the graphs written by `edgeseg export`")


# --------------------------------------------------------------------------- artifacts
@dataclass
class VideoRuntimes:
    frame: Any
    features: Any
    manifest: Any
    frame_file: str
    features_file: str | None
    made_features: str | None = None  # features graph quantized on opening (see open_video_runtimes)

    def close(self) -> None:
        for rt in (self.frame, self.features):
            if rt is not None:
                rt.close()


def _precisions(entry: dict[str, Any]) -> dict[str, str]:
    return dict((entry.get("precision") or {}).get("precisions") or {})


def pick_video_graphs(manifest, frame_file: str | None = None) -> tuple[str, str | None]:
    """(frame file, features file) from a manifest's artifacts.

    Without ``frame_file`` the primary frame graph is used. The features graph is the
    one of the same kind (onnx, tflite...) whose components run at the same precision as
    in the frame graph, so a quantized frame graph gets its quantized features graph.
    """
    arts = manifest.artifacts
    frames = [f for f, a in arts.items() if a.get("graph", "frame") == "frame"]
    if frame_file is None:
        primary = [f for f in frames if arts[f].get("primary")]
        if not (primary or frames):
            raise EdgesegError("the manifest lists no frame graph", "re-export the model with `edgeseg export`")
        frame_file = (primary or frames)[0]
    elif frame_file not in arts:
        raise EdgesegError(f"{frame_file} is not recorded in the manifest", f"known: {', '.join(arts)}")
    elif arts[frame_file].get("graph") == "features":
        raise EdgesegError(f"{frame_file} is the features graph; tracking starts from the frame graph",
                           f"pass the folder or the frame graph ({', '.join(frames) or 'none recorded'})")
    entry = arts[frame_file]
    want = _precisions(entry)
    candidates = [f for f, a in arts.items() if a.get("graph") == "features" and a.get("kind") == entry.get("kind")]
    same = [f for f in candidates if all(want.get(c, p) == p for c, p in _precisions(arts[f]).items())]
    if entry.get("features") in arts:  # an explicit link written by the step that made the pair
        return frame_file, entry["features"]
    return frame_file, (same[0] if len(same) == 1 else _closest_name(frame_file, same) if same else None)


def _closest_name(frame_file: str, names: list[str]) -> str:
    # Several features graphs at the same precision (e.g. two calibrations): prefer the one
    # whose name is the frame graph's with ".features" inserted.
    stem, dot, suffix = frame_file.partition(".")
    wanted = f"{stem}.features.{suffix}" if dot else f"{stem}.features"
    return wanted if wanted in names else sorted(names)[0]


def open_video_runtimes(artifact: str | os.PathLike, backend: str | None = None, threads: int = 1,
                        reuse: int = 3, make_features: bool = False, numerics: str = "fused") -> VideoRuntimes:
    """Open the frame and features graphs of an artifact folder (or of a frame graph file in
    one) with the right runtime. With ``reuse`` 1 the features graph is optional.

    A quantized frame graph needs its features graph at the same plan; with
    ``make_features`` it is made from the export's features graph when missing
    (:func:`edgeseg.quantize.features_graph.quantize_features_graph`, recorded in the manifest).
    ``numerics``: ONNX Runtime's fused int8 kernels by default (tracking is timed as
    deployed); ``simulated`` for Q/DQ as float ops (see :mod:`edgeseg.runtimes.numerics`).
    """
    from edgeseg.export.manifest import Manifest
    from edgeseg.runtimes.base import load_runtime

    from edgeseg.track.strategy import open_artifact

    p, manifest, folder = open_artifact(artifact)
    frame_file, features_file = pick_video_graphs(manifest, None if p.is_dir() else p.name)
    made = None
    if features_file is None and reuse > 1:
        quantized = bool(manifest.artifacts[frame_file].get("source"))
        if quantized and make_features:
            from edgeseg.quantize.features_graph import quantize_features_graph

            made = quantize_features_graph(folder, frame_file).name
            manifest = Manifest.load(folder)
            features_file = made
        elif quantized:
            raise EdgesegError(f"{folder} has no features graph quantized like {frame_file}",
                               "let `edgeseg track` make it (it does by default), or track with --reuse 1")
        else:
            raise EdgesegError(f"{folder} has no features graph matching {frame_file} "
                               f"(artifacts: {', '.join(manifest.artifacts)})",
                               "re-export with `edgeseg export MODEL` (it writes <model>.features.onnx by default), "
                               "or track with --reuse 1")
    frame_rt = load_runtime(folder / frame_file, backend=backend, threads=threads, numerics=numerics)
    features_rt = None
    if features_file is not None:
        try:
            features_rt = load_runtime(folder / features_file, backend=backend, threads=threads, numerics=numerics)
        except BaseException:
            frame_rt.close()
            raise
    return VideoRuntimes(frame_rt, features_rt, manifest, frame_file, features_file, made)


# ------------------------------------------------------------------------ the strategy
class KernelReuseSession:
    """An artifact's frame + features runtimes, making one tracker per T (``VideoSession``)."""

    def __init__(self, runtimes: VideoRuntimes):
        self.runtimes = runtimes
        self.manifest = runtimes.manifest
        self.graphs = {"frame": runtimes.frame_file, "features": runtimes.features_file}
        self.notes = ([f"made {runtimes.made_features}: the features graph at {runtimes.frame_file}'s plan and "
                       "calibration (recorded in manifest.json)"] if runtimes.made_features else [])
        self.backend = runtimes.frame.backend
        self.default_interval = 3  # MobileInst's choice
        self.numerics = runtimes.frame.numerics  # how int8 runs (edgeseg.runtimes.numerics)

    def tracker(self, interval: int, config: TrackerConfig | None = None) -> KernelReuseTracker:
        from dataclasses import replace

        from edgeseg.export.manifest import input_spec_of

        cfg = replace(config or TrackerConfig(), reuse=interval)
        return KernelReuseTracker(self.runtimes.frame, self.runtimes.features, input_spec_of(self.manifest), cfg)

    def warm_up(self, runs: int = 3) -> None:
        for rt in (self.runtimes.frame, self.runtimes.features):
            if rt is None:
                continue
            feeds = rt.random_feeds(0)
            for _ in range(runs):
                rt.run(feeds)

    def check_classes(self, num_categories: int, source: str) -> None:
        """The model's classes must be the dataset's categories (label k -> k-th category id)."""
        shape = next((o.shape for o in self.runtimes.frame.outputs() if o.name == "logits"), None)
        classes = shape[-1] if shape else None
        if isinstance(classes, int) and classes != num_categories:
            raise EdgesegError(f"the model predicts {classes} classes, {source} has {num_categories} categories",
                               f"export the model with --num-classes {num_categories} (and weights trained "
                               "on this dataset)")

    def close(self) -> None:
        self.runtimes.close()


class KernelReuse:
    """MobileInst's video strategy (``Family.video``): keyframe kernels reused on the
    features graph for T-1 frames, kernels of keyframes associated by cosine similarity."""

    name = "kernel reuse"
    interval_name = "T"
    interval_help = ("T: frame i is a keyframe when i % T == 0; the T-1 frames after it run only the "
                     "features graph and reuse its kernels")

    @staticmethod
    def config(**options: Any) -> TrackerConfig:
        """The tracker config from ``edgeseg track`` options (each strategy has its own defaults)."""
        return TrackerConfig(**options)

    @staticmethod
    def open(artifact: str | os.PathLike, *, backend: str | None = None, threads: int = 1,
             max_interval: int = 3, make_missing: bool = True, numerics: str = "fused") -> KernelReuseSession:
        return KernelReuseSession(open_video_runtimes(artifact, backend=backend, threads=threads,
                                                      reuse=max_interval, make_features=make_missing,
                                                      numerics=numerics))
