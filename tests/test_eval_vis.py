"""YouTube-VIS AP against hand-computed cases, and against pycocotools on 1-frame videos."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from edgeseg.data.rle import encode, encode_uncompressed
from edgeseg.errors import EdgesegError
from edgeseg.eval.vis import evaluate_vis, spatiotemporal_iou

H, W = 20, 20


def box(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def segs(masks, enc=encode):
    return [None if m is None else enc(m) for m in masks]


def gt_of(tracks, length, categories=((1, "a"), (2, "b"))):
    """tracks: list of (category_id, [mask or None per frame]) in one video."""
    return {
        "videos": [{"id": 1, "file_names": [f"v/{t:05d}.jpg" for t in range(length)], "width": W, "height": H,
                    "length": length}],
        "categories": [{"id": i, "name": n} for i, n in categories],
        "annotations": [{"id": k + 1, "video_id": 1, "category_id": c, "iscrowd": 0,
                         "segmentations": segs(ms, encode_uncompressed)} for k, (c, ms) in enumerate(tracks)],
    }


def pred(masks, score, cat=1, video=1):
    return {"video_id": video, "category_id": cat, "score": score, "segmentations": segs(masks)}


G1 = [box(0, 10, 0, 10), box(0, 10, 0, 10)]  # 100 px in both frames
G2 = [box(10, 20, 10, 20), None]  # only in frame 0


def test_perfect_predictions_score_100():
    gt = gt_of([(1, G1), (1, G2)], 2)
    r = evaluate_vis(gt, [pred(G1, 0.9), pred(G2, 0.8)])
    assert r["AP"] == r["AP50"] == r["AP75"] == r["AR10"] == 100.0
    # one prediction per (video, category) with maxDets=1 finds 1 of the 2 tracks
    assert r["AR1"] == 50.0
    assert r["per_class"] == {"a": 100.0, "b": None}  # no ground truth for b: undefined, not 0


def test_empty_predictions_score_0():
    r = evaluate_vis(gt_of([(1, G1), (1, G2)], 2), [])
    assert r["AP"] == r["AP50"] == r["AP75"] == r["AR1"] == r["AR10"] == 0.0


def test_wrong_category_scores_0():
    r = evaluate_vis(gt_of([(1, G1)], 2), [pred(G1, 0.9, cat=2)])
    assert r["AP"] == 0.0 and r["AR10"] == 0.0


def test_partial_overlap_crosses_known_thresholds():
    # Frame 0 exact (I=100, U=100); frame 1 a 6x6 corner of the 10x10 (I=36, U=100):
    # IoU = 136 / 200 = 0.68 -> a hit at 0.50, 0.55, 0.60, 0.65; a miss from 0.70 on.
    gt = gt_of([(1, G1)], 2)
    p = [box(0, 10, 0, 10), box(0, 6, 0, 6)]
    r = evaluate_vis(gt, [pred(p, 0.9)])
    assert r["AP"] == pytest.approx(40.0)
    assert r["AP50"] == 100.0 and r["AP75"] == 0.0
    assert r["AR1"] == pytest.approx(40.0)


def test_track_present_in_only_some_frames():
    # Ground truth in frames 0-1 of 4. A prediction covering exactly those frames and
    # nothing else has IoU 1: frames where both are absent contribute nothing.
    g = [box(0, 10, 0, 10), box(2, 12, 2, 12), None, None]
    gt = gt_of([(1, g)], 4)
    assert evaluate_vis(gt, [pred(g, 0.5)])["AP"] == 100.0
    # Spilling into frame 2 (60 px where there is no object) adds to the union only:
    # IoU = 200 / 260 = 0.769 -> hits at 0.50..0.75 (6 of 10 thresholds).
    spill = [g[0], g[1], box(0, 6, 0, 10), None]
    r = evaluate_vis(gt, [pred(spill, 0.5)])
    assert r["AP"] == pytest.approx(60.0) and r["AP75"] == 100.0


def test_ranked_false_positive_gives_the_hand_computed_precision_curve():
    # d1 (0.9) hits track 1, d2 (0.8) hits nothing, d3 (0.7) hits track 2.
    # precision after each: 1, 1/2, 2/3; recall 1/2, 1/2, 1. Interpolated precision is 1
    # for recall <= 0.5 (51 of the 101 recall points) and 2/3 above (50 points):
    # AP = (51 + 50 * 2/3) / 101 = 83.498 at every IoU threshold.
    gt = gt_of([(1, G1), (1, G2)], 2)
    r = evaluate_vis(gt, [pred(G1, 0.9), pred([box(0, 3, 15, 20), None], 0.8), pred(G2, 0.7)])
    assert r["AP"] == pytest.approx(100 * (51 + 50 * 2 / 3) / 101, abs=1e-3)
    assert r["AR1"] == 50.0 and r["AR10"] == 100.0


def test_duplicate_prediction_is_a_false_positive():
    gt = gt_of([(1, G1)], 2)
    r = evaluate_vis(gt, [pred(G1, 0.9), pred(G1, 0.8)])
    assert r["AP"] == 100.0  # the duplicate ranks after the hit: precision at recall 1 stays 1
    r = evaluate_vis(gt, [pred(G1, 0.7), pred([box(0, 2, 0, 2), None], 0.8)])
    # the false positive ranks first: precision 1/2 at recall 1 -> AP 50
    assert r["AP"] == pytest.approx(50.0)


def test_spatiotemporal_iou_sums_frames():
    from edgeseg.eval.vis import _frame_rles, _Track

    gt = _Track(1, 0, _frame_rles(segs(G1), H, W))
    p = _Track(1, 0.9, _frame_rles(segs([box(0, 10, 0, 10), box(0, 6, 0, 6)]), H, W))
    empty = _Track(1, 0.5, [None, None])
    iou = spatiotemporal_iou([p, empty], [gt], 2)
    assert iou.shape == (2, 1)
    assert iou[0, 0] == pytest.approx(136 / 200) and iou[1, 0] == 0.0


def test_single_frame_videos_agree_with_pycocotools():
    """With one frame per video, VIS AP must equal COCO mask AP (area 'all')."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    videos, images, gts, anns, preds, results = [], [], [], [], [], []
    for v in range(1, 9):
        videos.append({"id": v, "file_names": [f"{v}/0.jpg"], "width": W, "height": H, "length": 1})
        images.append({"id": v, "file_name": f"{v}.png", "width": W, "height": H})
        for _ in range(int(rng.integers(1, 4))):
            y, x = rng.integers(0, 12, 2)
            m = box(y, y + int(rng.integers(4, 9)), x, x + int(rng.integers(4, 9)))
            cat = int(rng.integers(1, 3))
            gts.append({"id": len(gts) + 1, "video_id": v, "category_id": cat, "iscrowd": 0,
                        "segmentations": [encode_uncompressed(m)]})
            anns.append({"id": len(anns) + 1, "image_id": v, "category_id": cat, "iscrowd": 0,
                         "segmentation": encode_uncompressed(m), "area": float(m.sum()),
                         "bbox": [0, 0, 1, 1]})
            for _ in range(int(rng.integers(0, 3))):  # jittered copies, sometimes wrong class
                dy, dx = rng.integers(-3, 4, 2)
                pm = np.roll(np.roll(m, dy, 0), dx, 1)
                pc = cat if rng.random() < 0.8 else 3 - cat
                s = float(rng.random())
                preds.append({"video_id": v, "category_id": pc, "score": s, "segmentations": [encode(pm)]})
                results.append({"image_id": v, "category_id": pc, "score": s, "segmentation": encode(pm)})
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    ours = evaluate_vis({"videos": videos, "categories": cats, "annotations": gts}, preds)

    gt = COCO()
    gt.dataset = {"images": images, "categories": cats, "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(results))), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats * 100
    assert 0 < ours["AP"] < 100  # a non-trivial case
    assert ours["AP"] == pytest.approx(s[0], abs=1e-3)
    assert ours["AP50"] == pytest.approx(s[1], abs=1e-3)
    assert ours["AP75"] == pytest.approx(s[2], abs=1e-3)
    assert ours["AR1"] == pytest.approx(s[6], abs=1e-3)
    assert ours["AR10"] == pytest.approx(s[7], abs=1e-3)
    assert ours["AR100"] == pytest.approx(s[8], abs=1e-3)


def test_results_file_and_synthetic_ground_truth(tmp_path):
    """Perfect predictions built from the synthetic videos' own annotations score 100."""
    from edgeseg.data.synthetic import SynthConfig, generate

    generate(tmp_path / "d", SynthConfig(train=0, val=0, videos=0, val_videos=2, frames=5, height=64, width=64))
    gt_path = tmp_path / "d/ytvis/annotations/val.json"
    gt = json.loads(gt_path.read_text())
    perfect = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
                "segmentations": a["segmentations"]} for a in gt["annotations"]]
    (tmp_path / "res.json").write_text(json.dumps(perfect))
    r = evaluate_vis(gt_path, tmp_path / "res.json")
    assert r["AP"] == 100.0 and r["videos"] == 2 and r["tracks"] == len(perfect)
    assert evaluate_vis(gt_path, [])["AP"] == 0.0


@pytest.mark.parametrize("bad, message", [
    ({"video_id": 9}, "video id 9"),
    ({"category_id": 7}, "category id 7"),
    ({"segmentations": [None]}, "1 segmentations for a 2-frame video"),
    ({"score": float("nan")}, "scores must be finite"),
])
def test_bad_results_are_one_clear_error(bad, message):
    gt = gt_of([(1, G1)], 2)
    with pytest.raises(EdgesegError, match=message):
        evaluate_vis(gt, [{**pred(G1, 0.9), **bad}])


def test_bad_ground_truth_is_one_clear_error(tmp_path):
    with pytest.raises(EdgesegError, match="does not exist"):
        evaluate_vis(tmp_path / "missing.json", [])
    gt = gt_of([(1, G1)], 2)
    gt["annotations"][0]["video_id"] = 5
    with pytest.raises(EdgesegError, match="refer to video ids that are not in"):
        evaluate_vis(gt, [])
    coco_like = {"images": [], "annotations": [], "categories": []}
    with pytest.raises(EdgesegError, match="COCO"):
        evaluate_vis(coco_like, [])


def _two_videos(order):
    """Two 1-frame videos (ids 1 and 2) of one category, listed in the JSON in ``order``."""
    videos = {vid: {"id": vid, "file_names": [f"v{vid}/00000.jpg"], "width": W, "height": H, "length": 1}
              for vid in (1, 2)}
    return {
        "videos": [videos[v] for v in order],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": vid, "video_id": vid, "category_id": 1, "iscrowd": 0,
                         "segmentations": segs([G1[0]], encode_uncompressed)} for vid in order],
    }


def test_score_ties_across_videos_rank_by_ascending_video_id_not_json_order():
    # Video 1 has a hit, video 2 a miss, both at score 0.5. YTVOSeval ranks ties by
    # ascending video id: hit then miss -> precision 1 up to recall 0.5 -> AP 51/101.
    # Ranking by JSON order (2 before 1) would give miss then hit -> precision 0.5 there.
    results = [pred([G1[0]], 0.5, video=1), pred([box(10, 20, 10, 20)], 0.5, video=2)]
    want = pytest.approx(100 * 51 / 101, abs=1e-3)
    assert evaluate_vis(_two_videos([1, 2]), results)["AP"] == want
    assert evaluate_vis(_two_videos([2, 1]), results)["AP"] == want


def test_repeated_video_ids_are_evaluated_once():
    gt = _two_videos([1, 2])
    results = [pred([G1[0]], 0.9, video=1), pred([box(10, 20, 10, 20)], 0.5, video=2)]
    once = evaluate_vis(gt, results, video_ids=[1, 2])
    twice = evaluate_vis(gt, results, video_ids=[2, 1, 1, 2])
    assert twice["videos"] == once["videos"] == 2 and twice["tracks"] == once["tracks"] == 2
    assert twice["AP"] == once["AP"]
