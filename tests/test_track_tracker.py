"""KernelReuseTracker on scripted runtimes: keyframes, reuse, ids, gaps, swaps, errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import EdgesegError
from edgeseg.models.mobileinst.decode import mobileinst_postprocess
from edgeseg.track.associate import associate
from edgeseg.track.kernel_reuse import KernelReuseTracker, TrackerConfig
from tests.track_scenes import NET, Obj, Scene, SceneRuntime, frame, id_by_object, run_scene, spec


def _two_moving(n_frames: int) -> list[list[Obj]]:
    # A moves right one cell per frame, B moves down; they never overlap.
    return [[Obj(0, 0, (0, t % 6, 2, t % 6 + 2), label=1), Obj(1, 1, (t % 3 + 4, 0, t % 3 + 6, 2), label=2)]
            for t in range(n_frames)]


@pytest.mark.parametrize("reuse", [1, 2, 3])
def test_ids_stay_stable_for_persisting_objects(reuse):
    frames = _two_moving(9)
    per_frame, result, scene = run_scene(frames, TrackerConfig(reuse=reuse))
    seen = [id_by_object(inst, objs) for inst, objs in zip(per_frame, frames)]
    assert all(s == seen[0] for s in seen), seen
    assert sorted(seen[0].values()) == [1, 2]
    assert len(result.tracks) == 2
    by_id = {t.id: t for t in result.tracks}
    assert by_id[seen[0][0]].label == 1 and by_id[seen[0][1]].label == 2
    # Every frame has a mask for both tracks.
    assert all(len(result.track_masks(t)) == 9 and None not in result.track_masks(t) for t in result.tracks)


def test_keyframes_are_every_T_th_frame_from_the_first():
    _, result, scene = run_scene(_two_moving(8), TrackerConfig(reuse=3))
    assert scene.calls == ["frame", "features", "features", "frame", "features", "features", "frame", "features"]
    assert [t.keyframe for t in result.timings] == [i % 3 == 0 for i in range(8)]


def test_reuse_frames_render_reused_kernels_on_new_features():
    """On a reuse frame the mask follows the object (new mask features), the kernel is the keyframe's."""
    frames = _two_moving(3)
    per_frame, _, _ = run_scene(frames, TrackerConfig(reuse=3))
    for t in (1, 2):
        inst = per_frame[t]
        assert not any(i.keyframe for i in inst)
        a = next(i for i in inst if i.label == 1)
        y0, x0, y1, x1 = frames[t][0].box
        full = a.mask.full()
        s = NET // 8
        assert full[y0 * s + 2:y1 * s - 2, x0 * s + 2:x1 * s - 2].all()  # the object's new cells
        assert not full[:, : max(0, x0 * s - s)].any()  # nothing left where it was two cells ago


def test_swapped_query_slots_keep_ids_with_the_objects():
    frames = []
    for t in range(6):
        swap = t >= 3  # from the second keyframe on, A and B trade query slots
        frames.append([Obj(0, 1 if swap else 0, (0, 0, 2, 2), label=0, kernel_noise=_noise(t, 0)),
                       Obj(1, 0 if swap else 1, (5, 5, 7, 7), label=0, kernel_noise=_noise(t, 1))])
    per_frame, result, _ = run_scene(frames, TrackerConfig(reuse=3))
    assert id_by_object(per_frame[0], frames[0]) == id_by_object(per_frame[3], frames[3]) == \
        id_by_object(per_frame[5], frames[5])
    assert len(result.tracks) == 2


def _noise(t, k):
    return np.random.default_rng(100 * t + k).standard_normal(8).astype(np.float32) * 0.1


def test_new_object_gets_a_new_id_on_the_next_keyframe():
    a = lambda: Obj(0, 0, (0, 0, 2, 2))  # noqa: E731
    b = Obj(2, 3, (5, 5, 7, 7))
    frames = [[a()], [a()], [a(), b], [a(), b], [a(), b], [a(), b]]
    per_frame, result, _ = run_scene(frames, TrackerConfig(reuse=3))
    assert [len(p) for p in per_frame] == [1, 1, 1, 2, 2, 2]  # found at keyframe 3, not on reuse frame 2
    ids3 = id_by_object(per_frame[3], frames[3])
    assert ids3[0] == 1 and ids3[2] == 2
    assert len(result.tracks) == 2


def _gap_scene(absent: int) -> list[list[Obj]]:
    obj = lambda: Obj(0, 0, (2, 2, 5, 5))  # noqa: E731
    return [[obj()]] * 2 + [[]] * absent + [[obj()]] * 2


@pytest.mark.parametrize("absent,same_id", [(1, True), (2, True), (3, False)])
def test_gap_up_to_G_keyframes_keeps_the_id(absent, same_id):
    frames = _gap_scene(absent)
    per_frame, result, _ = run_scene(frames, TrackerConfig(reuse=1, max_gap=2))
    before, after = per_frame[0][0].track_id, per_frame[-1][0].track_id
    assert (before == after) is same_id
    assert len(result.tracks) == (1 if same_id else 2)
    for t in range(2, 2 + absent):
        assert per_frame[t] == []  # a track in its gap is hidden
    masks = result.track_masks(result.tracks[0])
    assert masks[2:2 + absent] == [None] * absent


def test_T1_equals_per_frame_decoding_and_association():
    """With T=1 each frame's instances are the image decoder's detections, and the ids
    are what associating consecutive frames' kernels gives."""
    frames = _two_moving(5)
    frames[2] = frames[2] + [Obj(2, 4, (6, 6, 8, 8), label=0, logit=2.0)]  # a third, weaker object
    frames[3] = [frames[3][1], Obj(0, 5, frames[3][0].box, label=1)]  # A changes slot
    per_frame, _, _ = run_scene(frames, TrackerConfig(reuse=1, score_threshold=0.3))
    ref_scene = Scene(frames)
    prev_kernels, prev_ids, next_id = None, None, 1
    for t, inst in enumerate(per_frame):
        out = ref_scene.outputs(t, "frame")
        dets = mobileinst_postprocess(out, (NET, NET), score_threshold=0.3)
        assert [(d.label, round(d.score, 5)) for d in dets] == [(i.label, round(i.score, 5)) for i in inst]
        for d, i in zip(dets, inst):
            np.testing.assert_array_equal(d.mask, i.mask.full())
        # reference ids: associate with the previous frame's detections (G irrelevant here)
        scores = np.sqrt(1 / (1 + np.exp(-out["logits"][0])) * 1 / (1 + np.exp(-out["objectness"][0])))
        keep = [q for q in np.argsort(-scores.max(1), kind="stable") if scores[q].max() > 0.3]
        kernels = out["kernels"][0][keep]
        if prev_kernels is None:
            ids = list(range(1, len(keep) + 1))
        else:
            res = associate(prev_kernels, kernels, 0.5)
            ids = [None] * len(keep)
            for pt, d in res.matches:
                ids[d] = prev_ids[pt]
        for j in range(len(ids)):
            if ids[j] is None:
                next_id = max(next_id, max(i for i in (prev_ids or [0]) if i) + 1)
                ids[j] = next_id
                next_id += 1
        next_id = max(next_id, max(ids) + 1)
        # compare as sets of (label, id): ordering by score may tie-break differently
        assert sorted((i.label, i.track_id) for i in inst) == sorted(
            (int(scores[q].argmax()), ids[j]) for j, q in enumerate(keep))
        prev_kernels, prev_ids = kernels, ids


def test_masks_come_at_the_frame_size():
    frames = _two_moving(4)
    per_frame, result, _ = run_scene(frames, TrackerConfig(reuse=2), frame_hw=(48, 80))
    assert result.frame_hw == (48, 80)
    for inst in per_frame:
        for i in inst:
            assert (i.mask.height, i.mask.width) == (48, 80) and i.mask.area > 0
    rle = result.track_masks(result.tracks[0])[0]
    assert rle["size"] == [48, 80] and sum(rle["counts"]) == 48 * 80


def test_track_category_and_score_aggregate_keyframes():
    # Label 1 with score ~0.99 twice, label 2 once at ~0.7: the track is label 1.
    frames = [[Obj(0, 0, (1, 1, 4, 4), label=lab, logit=lg)] for lab, lg in [(1, 6.0), (2, 0.0), (1, 6.0)]]
    per_frame, result, _ = run_scene(frames, TrackerConfig(reuse=1))
    (track,) = result.tracks
    assert track.label == 1
    assert track.score == pytest.approx(np.mean([i[0].score for i in per_frame]))
    assert per_frame[1][0].label == 2  # per-frame label is that keyframe's


def test_score_threshold_and_max_instances():
    objs = [Obj(k, k, (k, k, k + 1, k + 1), logit=4.0 + k) for k in range(5)]
    per_frame, _, _ = run_scene([objs], TrackerConfig(reuse=1, max_instances=3))
    assert len(per_frame[0]) == 3
    per_frame, _, _ = run_scene([objs], TrackerConfig(reuse=1, score_threshold=0.9999))
    assert per_frame[0] == []


def test_timings_and_reset():
    scene = Scene(_two_moving(4) + _two_moving(2))
    tracker = KernelReuseTracker(SceneRuntime(scene, "frame"), SceneRuntime(scene, "features"), spec(),
                                 TrackerConfig(reuse=2))
    for _ in range(4):
        tracker.step(frame())
    first = tracker.finish()
    assert len(first.timings) == 4 and all(t.model_ms >= 0 and t.host_ms > 0 for t in first.timings)
    tracker.reset()
    scene.calls.clear()
    scene.frames = _two_moving(2)
    inst = tracker.step(frame(32, 32))  # a new video may have another size
    assert sorted(i.track_id for i in inst) == [1, 2]
    assert scene.calls == ["frame"]


# ---------------------------------------------------------------------------------- errors
def test_reuse_must_be_positive():
    for bad in (0, -1):
        with pytest.raises(EdgesegError, match="reuse"):
            TrackerConfig(reuse=bad)


def test_reuse_needs_a_features_graph():
    scene = Scene(_two_moving(2))
    with pytest.raises(EdgesegError, match="features graph"):
        KernelReuseTracker(SceneRuntime(scene, "frame"), None, spec(), TrackerConfig(reuse=3))
    # T=1 runs without one
    tracker = KernelReuseTracker(SceneRuntime(scene, "frame"), None, spec(), TrackerConfig(reuse=1))
    assert len(tracker.step(frame())) == 2


def test_graphs_must_agree_on_mask_features():
    scene = Scene(_two_moving(2))

    class Wrong(SceneRuntime):
        def outputs(self):
            out = super().outputs()
            out[0].shape = [1, 8, 16, 16]
            return out

    with pytest.raises(EdgesegError, match="mask_features shapes differ"):
        KernelReuseTracker(SceneRuntime(scene, "frame"), Wrong(scene, "features"), spec(), TrackerConfig())


def test_frame_graph_without_tracking_outputs_is_rejected():
    scene = Scene(_two_moving(2))
    with pytest.raises(EdgesegError, match="lacks outputs"):
        KernelReuseTracker(SceneRuntime(scene, "features"), SceneRuntime(scene, "features"), spec(), TrackerConfig())


def test_frame_size_change_and_bad_frames():
    scene = Scene(_two_moving(3))
    tracker = KernelReuseTracker(SceneRuntime(scene, "frame"), SceneRuntime(scene, "features"), spec(),
                                 TrackerConfig(reuse=2))
    tracker.step(frame())
    with pytest.raises(EdgesegError, match="one size"):
        tracker.step(frame(32, 64))
    with pytest.raises(EdgesegError, match="uint8"):
        tracker.step(np.zeros((NET, NET, 3), np.float32))


def test_finish_without_frames_is_an_error():
    scene = Scene([])
    tracker = KernelReuseTracker(SceneRuntime(scene, "frame"), SceneRuntime(scene, "features"), spec(),
                                 TrackerConfig())
    with pytest.raises(EdgesegError, match="no frames"):
        tracker.finish()
