"""YolactEdge's video strategy: the partial feature transform, with IoU association for ids.

Frame ``i`` is a keyframe when ``i % T == 0`` (``--key-interval T``; the paper uses 5).

* keyframe: the ``key`` graph runs the whole network and also returns ``lat3`` (C3's FPN
  lateral) and the top-down ``p4``/``p5``, which are kept;
* non-keyframe: the ``flow`` graph runs only C1-C3 on the frame, its lateral, and
  FeatFlowNet on (this frame's, the keyframe's) laterals, giving a flow, scale and bias at
  P4 and P5 resolution; the host warps the keyframe's P4/P5 with them
  (:mod:`edgeseg.models.yolact_edge.warp`, NumPy: the warp is not converted, as in the
  paper); the ``warped`` graph finishes the frame from (``lat3``, W4, W5): P3 = lat3 +
  up(W4), P6/P7 from W5, ProtoNet and head.

Every frame gives detections (the image decoder's candidates: Fast NMS, scores, masks at
prototype resolution). Ids come from a simple association: detections are matched one
to one to the live tracks by mask IoU against each track's last mask (Hungarian, a pair
counts from ``match_threshold`` IoU); unmatched detections start tracks; a track missing
more than ``max_gap`` consecutive frames ends. A track's category is its label with the
highest summed score, its score the mean.

Timing per frame: ``model_ms`` is the graphs' time (key, or flow + warped), ``host_ms``
the warp + decoding + association + masks; the warp alone is ``parts["warp"]``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.models.yolact_edge.decode import detect
from edgeseg.models.yolact_edge.family import FLOW_OUTPUTS, KEY_EXTRA_OUTPUTS, OUTPUT_NAMES
from edgeseg.models.yolact_edge.warp import warp_features
from edgeseg.track.kernel_reuse import FrameTiming, TrackedInstance, TrackerConfig, VideoResult, _frame_hw
from edgeseg.track.masks import MaskAssembler, video_assembler

ROLES = ("key", "flow", "warped")


@dataclass(eq=False)
class WarpTrack:
    id: int
    first_frame: int
    last_mask: np.ndarray                      # bool [hp, wp]: the last matched detection
    label_scores: dict[int, float] = field(default_factory=dict)
    scores: list[float] = field(default_factory=list)
    gap: int = 0                               # consecutive frames without a match
    masks: dict[int, dict[str, Any]] = field(default_factory=dict)  # frame -> uncompressed RLE

    @property
    def label(self) -> int:
        return max(self.label_scores.items(), key=lambda kv: (kv[1], -kv[0]))[0]

    @property
    def score(self) -> float:
        return float(np.mean(self.scores)) if self.scores else 0.0

    def observe(self, mask: np.ndarray, label: int, score: float) -> None:
        self.last_mask = mask
        self.label_scores[label] = self.label_scores.get(label, 0.0) + score
        self.scores.append(score)
        self.gap = 0


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[M, h, w] x [K, h, w]`` boolean masks -> ``[M, K]`` IoU (0 when both are empty)."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-6), 0.0)


def associate_by_iou(track_masks: np.ndarray, detection_masks: np.ndarray, threshold: float):
    """One-to-one matches ``[(track, detection)]`` maximising total IoU, each >= threshold."""
    if len(track_masks) == 0 or len(detection_masks) == 0:
        return []
    from scipy.optimize import linear_sum_assignment

    iou = mask_iou(track_masks, detection_masks)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= threshold]


class FeatureWarpTracker:
    """Streaming tracker over the key / flow / warped runtimes of one artifact."""

    def __init__(self, runtimes: dict[str, Any], input_spec, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self.rt = runtimes
        self.spec = input_spec
        self.proto_hw = check_runtimes(runtimes, self.config.reuse)
        self.image_name = _image_input(runtimes["key"])
        self.reset()

    def reset(self) -> None:
        self.frame_index = 0
        self.frame_hw: tuple[int, int] | None = None
        self.assembler: MaskAssembler | None = None
        self.tracks: list[WarpTrack] = []
        self._matchable: list[WarpTrack] = []
        self._key: dict[str, np.ndarray] | None = None
        self.timings: list[FrameTiming] = []

    def set_frame_size(self, height: int, width: int) -> None:
        # Prototypes cover the input, so masks go straight from their grid to the frame
        # (the image decoder's resize): no intermediate network-size step.
        self.assembler = video_assembler(self.assembler, height, width, self.frame_index, self.proto_hw,
                                         self.proto_hw, self.config.mask_threshold)
        self.frame_hw = self.assembler.frame_hw

    @property
    def next_is_keyframe(self) -> bool:
        return self.frame_index % self.config.reuse == 0

    def step(self, frame_rgb: np.ndarray) -> list[TrackedInstance]:
        from edgeseg.data.preprocess import preprocess

        self.set_frame_size(*_frame_hw(frame_rgb))
        keyframe = self.next_is_keyframe or self._key is None
        t0 = time.perf_counter()
        image = preprocess(frame_rgb, self.spec)
        t1, c1 = time.perf_counter(), time.thread_time()
        parts: dict[str, float] = {}
        if keyframe:
            outputs = self.rt["key"].run({self.image_name: image})
            self._key = {k: outputs[k] for k in KEY_EXTRA_OUTPUTS}
            warp_ms = warp_cpu = 0.0
        else:
            flow = self.rt["flow"].run({self.image_name: image, "key_lat3": self._key["lat3"]})
            w0, wc0 = time.perf_counter(), time.thread_time()
            w4 = warp_features(self._key["p4"], flow["flow4"], flow["scale4"], flow["bias4"])
            w5 = warp_features(self._key["p5"], flow["flow5"], flow["scale5"], flow["bias5"])
            warp_ms, warp_cpu = (time.perf_counter() - w0) * 1e3, (time.thread_time() - wc0) * 1e3
            outputs = self.rt["warped"].run({"lat3": flow["lat3"], "w4": w4, "w5": w5})
            parts["warp"] = warp_ms
        t2, c2 = time.perf_counter(), time.thread_time()
        instances = self.process_outputs(outputs, keyframe)
        t3, c3 = time.perf_counter(), time.thread_time()
        # The warp ran between the two graphs: it is host work, not model time.
        model_ms = (t2 - t1) * 1e3 - warp_ms
        self.timings.append(FrameTiming(keyframe, (t1 - t0) * 1e3, model_ms, (t3 - t2) * 1e3 + warp_ms,
                                        (c2 - c1) * 1e3 - warp_cpu, (c3 - c2) * 1e3 + warp_cpu, parts))
        return instances

    def process_outputs(self, outputs: dict[str, np.ndarray], keyframe: bool) -> list[TrackedInstance]:
        """Decoding, association and masks of one frame's outputs (the host side)."""
        assert self.assembler is not None, "step() or set_frame_size() first"
        cfg = self.config
        index = self.frame_index
        found = detect(outputs, cfg.score_threshold, cfg.max_instances)
        probs = found.probabilities() if len(found) else np.zeros((0, *self.proto_hw), np.float32)
        binary = probs > cfg.mask_threshold
        previous = np.stack([t.last_mask for t in self._matchable]) if self._matchable else np.zeros((0, *self.proto_hw), bool)
        matches = associate_by_iou(previous, binary, cfg.match_threshold)
        track_of = {d: self._matchable[t] for t, d in matches}
        matched_tracks = {t for t, _ in matches}
        for i, track in enumerate(self._matchable):
            if i not in matched_tracks:
                track.gap += 1
        started = []
        for d in range(len(found)):
            if d not in track_of:
                track = WarpTrack(len(self.tracks) + 1, index, binary[d])
                self.tracks.append(track)
                started.append(track)
                track_of[d] = track
        instances = []
        for d in range(len(found)):
            track = track_of[d]
            label, score = int(found.labels[d]), float(found.scores[d])
            track.observe(binary[d], label, score)
            inst = TrackedInstance(track.id, label, score, keyframe, probs[d], self.assembler)
            instances.append(inst)
            if cfg.record and inst.mask.area:
                track.masks[index] = inst.mask.rle()
        self._matchable = [t for t in self._matchable if t.gap <= cfg.max_gap] + started
        self.frame_index += 1
        return instances

    def finish(self) -> VideoResult:
        if self.frame_hw is None:
            raise EdgesegError("the video has no frames", "check the input holds at least one readable frame")
        kept = [t for t in self.tracks if t.masks] if self.config.record else list(self.tracks)
        return VideoResult(self.frame_index, self.frame_hw, kept, list(self.timings), self.config.reuse)


# ------------------------------------------------------------------------------- checks
def _image_input(runtime) -> str:
    names = [i.name for i in runtime.inputs()]
    if len(names) != 1:
        raise EdgesegError(f"the key graph takes {names}, expected the image only", "use the graphs of `edgeseg export`")
    return names[0]


def _shape(infos, name):
    return next((list(i.shape) for i in infos if i.name == name), None)


def check_runtimes(runtimes: dict[str, Any], interval: int) -> tuple[int, int]:
    """The prototype grid (hp, wp), after checking the graphs fit together."""
    key = runtimes.get("key")
    if key is None:
        raise EdgesegError("no key graph", "export the model with its video graphs (`edgeseg export` writes them)")
    outs = [o.name for o in key.outputs()]
    missing = [n for n in OUTPUT_NAMES + KEY_EXTRA_OUTPUTS if n not in outs]
    if missing:
        raise EdgesegError(f"the key graph {getattr(key, 'path', '')} lacks outputs {', '.join(missing)}",
                           "track with a YolactEdge export (its <model>.key.onnx)")
    proto = _shape(key.outputs(), "proto")
    if interval > 1:
        flow, warped = runtimes.get("flow"), runtimes.get("warped")
        if flow is None or warped is None:
            raise EdgesegError(f"a key interval of {interval} needs the flow and warped graphs",
                               "export with all graphs (`edgeseg export` does by default) or use --key-interval 1")
        fouts = [o.name for o in flow.outputs()]
        if [n for n in FLOW_OUTPUTS if n not in fouts] or {i.name for i in warped.inputs()} != {"lat3", "w4", "w5"}:
            raise EdgesegError("the flow / warped graphs do not have the expected inputs and outputs",
                               "use the graphs of one YolactEdge export")
        for a, b in (("lat3", "lat3"), ("p4", "w4"), ("p5", "w5")):
            if _shape(key.outputs(), a) != _shape(warped.inputs(), b):
                raise EdgesegError(f"key graph {a} {_shape(key.outputs(), a)} does not fit the warped graph's "
                                   f"{b} {_shape(warped.inputs(), b)}", "use the graphs of one export")
    return int(proto[-2]), int(proto[-1])


# --------------------------------------------------------------------------- artifacts
def _precisions(entry: dict[str, Any]) -> dict[str, str]:
    return dict((entry.get("precision") or {}).get("precisions") or {})


def pick_warp_graphs(manifest, frame_file: str | None = None) -> tuple[str, dict[str, str | None]]:
    """(frame file, {role: file}) for the key / flow / warped graphs matching a frame graph:
    the same kind (onnx, tflite...) and the same precision for the components they share."""
    arts = manifest.artifacts
    frames = [f for f, a in arts.items() if a.get("graph", "frame") == "frame"]
    if frame_file is None:
        primary = [f for f in frames if arts[f].get("primary")]
        if not (primary or frames):
            raise EdgesegError("the manifest lists no frame graph", "re-export the model with `edgeseg export`")
        frame_file = (primary or frames)[0]
    elif frame_file not in arts:
        raise EdgesegError(f"{frame_file} is not recorded in the manifest", f"known: {', '.join(arts)}")
    entry = arts[frame_file]
    linked = entry.get("video_graphs") or {}
    want = _precisions(entry)
    out: dict[str, str | None] = {}
    for role in ROLES:
        if linked.get(role) in arts:
            out[role] = linked[role]
            continue
        same = [f for f, a in arts.items() if a.get("graph") == role and a.get("kind") == entry.get("kind")
                and all(want.get(c, p) == p for c, p in _precisions(a).items())]
        out[role] = sorted(same)[0] if same else None
    return frame_file, out


class FeatureWarpSession:
    """An artifact's key / flow / warped runtimes, making one tracker per key interval."""

    def __init__(self, runtimes: dict[str, Any], manifest, graphs: dict[str, str | None], notes: list[str]):
        self.runtimes = runtimes
        self.manifest = manifest
        self.graphs = graphs
        self.notes = notes
        self.backend = runtimes["key"].backend
        self.numerics = runtimes["key"].numerics  # how int8 runs (edgeseg.runtimes.numerics)

    def tracker(self, interval: int, config: TrackerConfig | None = None) -> FeatureWarpTracker:
        from edgeseg.export.manifest import input_spec_of

        cfg = replace(config or TrackerConfig(), reuse=interval)
        return FeatureWarpTracker(self.runtimes, input_spec_of(self.manifest), cfg)

    def warm_up(self, runs: int = 3) -> None:
        for rt in self.runtimes.values():
            feeds = rt.random_feeds(0)
            for _ in range(runs):
                rt.run(feeds)

    def check_classes(self, num_categories: int, source: str) -> None:
        shape = _shape(self.runtimes["key"].outputs(), "conf")
        classes = shape[-1] - 1 if shape and isinstance(shape[-1], int) else None
        if classes is not None and classes != num_categories:
            raise EdgesegError(f"the model predicts {classes} classes, {source} has {num_categories} categories",
                               f"export the model with --num-classes {num_categories} (and weights trained "
                               "on this dataset)")

    def close(self) -> None:
        for rt in self.runtimes.values():
            rt.close()


class FeatureWarp:
    """YolactEdge's video strategy (``Family.video``): see the module docstring."""

    name = "partial feature transform"
    interval_help = ("T: frame i is a keyframe when i % T == 0; the frames between run C1-C3 and FeatFlowNet "
                     "and warp the keyframe's P4/P5 on the host")
    interval_name = "T"

    @staticmethod
    def config(**options: Any) -> TrackerConfig:
        """The tracker config from ``edgeseg track`` options (match_threshold is a mask IoU here)."""
        return TrackerConfig(**options)

    @staticmethod
    def open(artifact: str | os.PathLike, *, backend: str | None = None, threads: int = 1,
             max_interval: int = 5, make_missing: bool = True, numerics: str = "fused") -> FeatureWarpSession:
        from edgeseg.export.manifest import Manifest
        from edgeseg.runtimes.base import load_runtime

        from edgeseg.track.strategy import open_artifact

        p, manifest, folder = open_artifact(artifact)
        frame_file, graphs = pick_warp_graphs(manifest, None if p.is_dir() else p.name)
        notes: list[str] = []
        needed = ("key",) if max_interval <= 1 else ROLES
        missing = [r for r in needed if graphs[r] is None]
        if missing and make_missing and manifest.artifacts[frame_file].get("source"):
            from edgeseg.models.yolact_edge.video_quant import quantize_video_graphs

            made = quantize_video_graphs(folder, frame_file)
            notes.append(f"made {', '.join(made.values())}: the video graphs at {frame_file}'s plan "
                         "(recorded in manifest.json)")
            manifest = Manifest.load(folder)
            frame_file, graphs = pick_warp_graphs(manifest, frame_file)
            missing = [r for r in needed if graphs[r] is None]
        if missing:
            raise EdgesegError(f"{folder} has no {', '.join(missing)} graph(s) matching {frame_file}",
                               "export the model with all its graphs (`edgeseg export MODEL` writes them), "
                               "or track with --key-interval 1")
        runtimes: dict[str, Any] = {}
        try:
            for role in needed:
                runtimes[role] = load_runtime(folder / graphs[role], backend=backend, threads=threads,
                                              numerics=numerics)
        except BaseException:
            for rt in runtimes.values():
                rt.close()
            raise
        return FeatureWarpSession(runtimes, manifest, {"frame": graphs["key"], **{r: graphs[r] for r in ROLES[1:]}},
                                  notes)
