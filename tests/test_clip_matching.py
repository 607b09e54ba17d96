"""Near-online clip matching (IFC's video strategy) on scripted clip outputs.

A fake clip runtime reads each frame's index from its first pixel and answers with the
outputs a clip model would give for a scripted scene: one query per visible object (in a
slot order the scene chooses per clip, so the query order may change between clips),
its class, and +10/-10 mask logits inside/outside the object's box on every frame of the
clip where it is visible.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data.preprocess import InputSpec
from edgeseg.errors import EdgesegError
from edgeseg.runtimes.base import TensorInfo
from edgeseg.track.clip_matching import (ClipMatchConfig, ClipMatchingTracker, assign, clip_instances,
                                         soft_iou)
from edgeseg.track.results import check_results, video_results

GRID = 8          # mask grid (network 64 / 8)
NET = 64
N_QUERIES = 6
K = 3             # classes


def spec(t: int) -> InputSpec:
    # mean 0 / std 1: the first pixel of a preprocessed frame is its index
    return InputSpec(height=NET, width=NET, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), stride=8, frames=t)


class SceneClipRuntime:
    """``objects[f]``: {object id: (label, (y0, x0, y1, x1) on the grid)} visible on frame f.
    ``slots(clip_first_frame, object ids)`` -> query slot per object (default: in id order)."""

    backend = "fake"

    def __init__(self, objects: list[dict[int, tuple[int, tuple[int, int, int, int]]]], t: int, slots=None):
        self.objects, self.t, self.slots = objects, t, slots
        self.runs: list[list[int]] = []
        self.path = "scene"

    def inputs(self):
        return [TensorInfo("image", [self.t, 3, NET, NET], "float32")]

    def outputs(self):
        return [TensorInfo("logits", [1, N_QUERIES, K + 1], "float32"),
                TensorInfo("masks", [1, N_QUERIES, self.t, GRID, GRID], "float32")]

    def run(self, feeds):
        x = feeds["image"]
        assert x.shape == (self.t, 3, NET, NET)
        frames = [int(round(float(v))) for v in x[:, 0, 0, 0]]
        self.runs.append(frames)
        ids = sorted({o for f in frames for o in self.objects[f]})
        slot = self.slots(frames[0], ids) if self.slots else {o: i for i, o in enumerate(ids)}
        logits = np.full((N_QUERIES, K + 1), -5.0, np.float32)
        logits[:, K] = 5.0                     # "no object" for unused queries
        masks = np.full((N_QUERIES, self.t, GRID, GRID), -10.0, np.float32)
        for o in ids:
            q = slot[o]
            label = next(self.objects[f][o][0] for f in frames if o in self.objects[f])
            logits[q] = -5.0
            logits[q, label] = 5.0
            for j, f in enumerate(frames):
                if o in self.objects[f]:
                    y0, x0, y1, x1 = self.objects[f][o][1]
                    masks[q, j, y0:y1, x0:x1] = 10.0
        return {"logits": logits[None], "masks": masks[None]}

    def random_feeds(self, seed=0):
        return {"image": np.zeros((self.t, 3, NET, NET), np.float32)}

    def close(self):
        pass


def frames_of(n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        f = np.zeros((NET, NET, 3), np.uint8)
        f[0, 0, 0] = i
        out.append(f)
    return out


def run(objects, t=4, stride=1, slots=None, **cfg):
    rt = SceneClipRuntime(objects, t, slots)
    tracker = ClipMatchingTracker(rt, spec(t), ClipMatchConfig(stride=stride, **cfg))
    emitted = []
    for f in frames_of(len(objects)):
        emitted += tracker.step(f)
    emitted += tracker.flush()
    return tracker.finish(), emitted, rt


def moving(n: int, oid: int = 1, label: int = 0, start=(0, 0), step=(0, 0), size=3):
    return [{oid: (label, (start[0] + i * step[0] // 4, start[1] + i * step[1] // 4,
                           start[0] + i * step[0] // 4 + size, start[1] + i * step[1] // 4 + size))}
            for i in range(n)]


def _center_col(rle_track, result, frame):
    from edgeseg.data.rle import decode

    m = decode(rle_track.masks[frame], *result.frame_hw)
    return np.nonzero(m.any(axis=0))[0].mean()


# ------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_identity_is_kept_across_clips(stride):
    objects = moving(12, step=(0, 2))
    result, emitted, rt = run(objects, t=4, stride=stride)
    assert len(result.tracks) == 1
    track = result.tracks[0]
    assert track.id == 1 and track.label == 0 and track.score > 0.9
    assert sorted(track.masks) == list(range(12))
    # Every frame emitted once, in order; clips of 4 frames every `stride` frames.
    assert [e.index for e in emitted] == list(range(12))
    assert rt.runs[0] == [0, 1, 2, 3] and rt.runs[1][0] == stride


def test_a_swapped_pair_is_recovered():
    """Two objects whose queries trade places on every other clip keep their own ids."""
    left = moving(10, oid=1, label=0, start=(0, 0), step=(2, 0))
    right = moving(10, oid=2, label=1, start=(0, 5), step=(2, 0))
    objects = [{**a, **b} for a, b in zip(left, right)]

    def swapped(first, ids):
        order = ids if (first // 2) % 2 == 0 else ids[::-1]
        return {o: i for i, o in enumerate(order)}

    result, _, rt = run(objects, t=4, stride=2, slots=swapped)
    assert len(rt.runs) >= 3
    assert len(result.tracks) == 2
    by_label = {t.label: t for t in result.tracks}
    assert sorted(by_label) == [0, 1]
    for f in range(10):
        # the class-0 track stays on the left object, the class-1 track on the right one
        assert _center_col(by_label[0], result, f) < _center_col(by_label[1], result, f)
    assert {t.id for t in result.tracks} == {1, 2}


def test_a_new_object_gets_a_new_id_and_the_old_one_keeps_its():
    a = moving(12, oid=1, label=0, start=(0, 0))
    objects = [dict(x) for x in a]
    for f in range(8, 12):  # object 2 enters at frame 8, outside any earlier clip's frames
        objects[f][2] = (2, (4, 4, 7, 7))
    result, _, _ = run(objects, t=4, stride=2)
    assert [t.id for t in result.tracks] == [1, 2]
    first, second = result.tracks
    assert first.label == 0 and sorted(first.masks) == list(range(12))
    assert second.label == 2 and sorted(second.masks) == [8, 9, 10, 11] and second.first_frame >= 6


def test_clips_side_by_side_share_no_frame_so_ids_do_not_carry_over():
    """S = T: consecutive clips have no frame in common, nothing to match on (IFC's rule)."""
    result, _, rt = run(moving(8), t=4, stride=4)
    assert rt.runs == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [sorted(t.masks) for t in result.tracks] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_the_end_of_the_video_is_covered_by_one_more_clip():
    result, emitted, rt = run(moving(9), t=4, stride=4)
    assert rt.runs == [[0, 1, 2, 3], [4, 5, 6, 7], [5, 6, 7, 8]]
    assert [e.index for e in emitted] == list(range(9))
    # the last clip shares 5..7 with the second one: frame 8 continues that track
    assert [sorted(t.masks) for t in result.tracks] == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]
    # its cost is counted on the last frame
    assert result.timings[-1].keyframe and len(result.timings) == 9


def test_a_video_shorter_than_the_clip_repeats_its_last_frame():
    result, emitted, rt = run(moving(2), t=4, stride=1)
    assert rt.runs == [[0, 1, 1, 1]]
    assert [e.index for e in emitted] == [0, 1]
    assert len(result.tracks) == 1 and sorted(result.tracks[0].masks) == [0, 1]


def test_an_object_that_leaves_stops_and_results_are_valid_youtube_vis():
    objects = moving(10, oid=1, label=1)
    for f in range(6, 10):
        objects[f] = {}
    result, _, _ = run(objects, t=4, stride=1)
    assert len(result.tracks) == 1 and sorted(result.tracks[0].masks) == list(range(6))
    items = video_results(result, video_id=7)
    check_results(items, {7: 10})
    assert items[0]["category_id"] == 2 and items[0]["segmentations"][6] is None


def test_low_scores_and_the_instance_cap():
    objects = [{1: (0, (0, 0, 2, 2)), 2: (1, (3, 3, 5, 5)), 3: (2, (5, 0, 7, 2))} for _ in range(4)]
    result, _, _ = run(objects, t=4, stride=1, max_instances=2)
    assert len(result.tracks) == 2
    result, _, _ = run(objects, t=4, stride=1, score_threshold=0.9999)
    assert result.tracks == []


def test_stride_longer_than_the_clip_and_bad_options_are_refused():
    rt = SceneClipRuntime(moving(4), 4)
    with pytest.raises(EdgesegError, match="longer than the clip"):
        ClipMatchingTracker(rt, spec(4), ClipMatchConfig(stride=5))
    for bad in (dict(stride=0), dict(match_threshold=1.5), dict(score_threshold=-0.1), dict(max_instances=0)):
        with pytest.raises(EdgesegError):
            ClipMatchConfig(**bad)
    with pytest.raises(EdgesegError, match="--max-gap does not apply"):
        ClipMatchConfig.from_options(max_gap=2)


# ------------------------------------------------------------------------- pieces
def test_soft_iou_and_assignment():
    a = np.zeros((2, 1, 4, 4), np.float32)
    a[0, 0, :2, :2] = 1.0
    a[1, 0, 2:, 2:] = 1.0
    b = a[::-1].copy()
    iou = soft_iou(a, b)
    np.testing.assert_allclose(iou, [[0.0, 1.0], [1.0, 0.0]], atol=1e-6)
    assert assign(iou, 0.5) == [(0, 1), (1, 0)]
    assert assign(iou * 0.4, 0.5) == []
    half = a.copy()
    half[0, 0, :2, :2] = 0.5
    assert soft_iou(half[:1], a[:1])[0, 0] == pytest.approx(0.5)


def test_clip_instances_use_the_softmax_without_no_object():
    logits = np.array([[[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]]], np.float32)
    masks = np.zeros((1, 2, 3, 2, 2), np.float32)
    inst = clip_instances({"logits": logits, "masks": masks}, 0.1, 10)
    assert list(inst.queries) == [0] and inst.labels[0] == 0
    e = np.exp([2.0, 0, 0, 0])
    assert inst.scores[0] == pytest.approx(e[0] / e.sum(), rel=1e-5)
    assert inst.probs.shape == (1, 3, 2, 2)


def test_a_track_can_be_reported_under_every_likely_class():
    """IFC's own inference reports a track once per class above a probability (MULTI_CLS_ON)."""
    objects = moving(6)
    result, _, _ = run(objects, t=4, stride=1)
    assert video_results(result, 1)[0]["category_id"] == 1 and len(video_results(result, 1)) == 1
    result, _, _ = run(objects, t=4, stride=1, class_threshold=1e-5)
    items = video_results(result, 1)
    assert [i["category_id"] for i in items] == [1, 2, 3]        # best class first, then the others
    assert items[0]["score"] > items[1]["score"] and len({i["track_id"] for i in items}) == 1
    assert items[1]["segmentations"] == items[0]["segmentations"]
