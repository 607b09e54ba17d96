"""YouTube-VIS AP: COCO-style AP over whole-video (spatio-temporal) mask IoU.

Conventions follow the YouTube-VIS variant of the COCO API (``YTVOSeval``):

* IoU of a predicted track and a ground-truth track is computed over the whole video:
  the sum over frames of the intersections divided by the sum over frames of the unions.
  Frames where both are absent (``None``) contribute nothing; a frame where only one is
  present adds its area to the union.
* Matching is done per (video, category): predictions in descending score order (stable
  sort), at most 100 per (video, category), each greedily takes the unmatched ground
  truth of highest IoU >= the threshold; crowd tracks are "ignore" regions.
* Videos are evaluated in ascending id order, each id once (YTVOSeval sorts and
  de-duplicates ``vidIds``): when predictions of different videos tie on score, that order
  ranks them in the precision curve, whatever order the JSON lists the videos in.
* Precision is interpolated (monotone envelope) and read at 101 recall points, per
  category, over IoU thresholds 0.50:0.05:0.95; AP is the mean over thresholds, recall
  points and the categories that have ground truth. AR@k is the maximum recall with the
  top k predictions per (video, category), averaged over thresholds and categories.

Only the "all" area range is reported (the size buckets of YouTube-VIS are rarely used
for small-image data). Figures are on the 0-100 scale.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgeseg.data.ytvis import YtvisDataset
from edgeseg.errors import EdgesegError

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)


@dataclass
class _Track:
    """A track (ground truth or prediction) reduced to what matching needs."""

    category_id: int
    score: float
    rles: list[Any]  # per frame: compressed RLE or None
    iscrowd: int = 0


def _frame_rles(segmentations: list[Any], height: int, width: int) -> list[Any]:
    from edgeseg.data.rle import to_compressed

    return [None if s is None else to_compressed(s, height, width) for s in segmentations]


def spatiotemporal_iou(dts: list[_Track], gts: list[_Track], length: int) -> np.ndarray:
    """(D, G) IoU of whole tracks: sum of per-frame intersections / sum of per-frame unions."""
    from edgeseg.data.rle import mask_api

    mask_utils = mask_api()

    inter = np.zeros((len(dts), len(gts)))
    area_d = np.zeros(len(dts))
    area_g = np.zeros(len(gts))
    for t in range(length):
        di = [i for i, d in enumerate(dts) if d.rles[t] is not None]
        gi = [j for j, g in enumerate(gts) if g.rles[t] is not None]
        ad = mask_utils.area([dts[i].rles[t] for i in di]).astype(np.float64) if di else np.zeros(0)
        ag = mask_utils.area([gts[j].rles[t] for j in gi]).astype(np.float64) if gi else np.zeros(0)
        area_d[di] += ad
        area_g[gi] += ag
        if di and gi:
            iou = np.asarray(mask_utils.iou([dts[i].rles[t] for i in di], [gts[j].rles[t] for j in gi],
                                            [0] * len(gi)), dtype=np.float64).reshape(len(di), len(gi))
            # pycocotools gives I/U per frame; I/U with U = a + b - I means
            # I = iou * (a + b) / (1 + iou). Pixel counts are integers, so round away
            # the float error and the sums stay exact.
            frame_inter = np.rint(iou * (ad[:, None] + ag[None, :]) / (1.0 + iou))
            inter[np.ix_(di, gi)] += frame_inter
    union = area_d[:, None] + area_g[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class _Matches:
    scores: np.ndarray  # (D,) sorted descending
    matched: np.ndarray  # (T, D) bool
    dt_ignore: np.ndarray  # (T, D) bool
    gt_ignore: np.ndarray  # (G,) bool


def _match(dts: list[_Track], gts: list[_Track], ious: np.ndarray) -> _Matches:
    """COCO greedy matching for one (video, category); ``dts`` sorted by score already."""
    gt_ignore = np.array([bool(g.iscrowd) for g in gts], dtype=bool)
    order = np.argsort(gt_ignore, kind="mergesort")  # ignore regions last
    gt_ignore = gt_ignore[order]
    crowd = gt_ignore  # ignore == crowd here (no area range)
    ious = ious[:, order] if ious.size else ious
    T, D, G = len(IOU_THRESHOLDS), len(dts), len(gts)
    gt_taken = np.zeros((T, G), dtype=bool)
    matched = np.zeros((T, D), dtype=bool)
    dt_ignore = np.zeros((T, D), dtype=bool)
    for ti, thr in enumerate(IOU_THRESHOLDS):
        for di in range(D):
            best, m = min(thr, 1 - 1e-10), -1
            for gi in range(G):
                if gt_taken[ti, gi] and not crowd[gi]:
                    continue
                if m > -1 and not gt_ignore[m] and gt_ignore[gi]:
                    break  # already matched a real track; only ignore regions remain
                if ious[di, gi] < best:
                    continue
                best, m = ious[di, gi], gi
            if m == -1:
                continue
            dt_ignore[ti, di] = gt_ignore[m]
            matched[ti, di] = True
            gt_taken[ti, m] = True
    return _Matches(np.array([d.score for d in dts], dtype=np.float64), matched, dt_ignore, gt_ignore)


def _accumulate(per_category: list[list[_Matches]]):
    """precision (T, R, K, M) and recall (T, K, M); -1 where a category has no ground truth."""
    T, R, K, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(per_category), len(MAX_DETS)
    precision = -np.ones((T, R, K, M))
    recall = -np.ones((T, K, M))
    for k, entries in enumerate(per_category):
        if not entries:
            continue
        n_gt = int(sum((~e.gt_ignore).sum() for e in entries))
        if n_gt == 0:
            continue
        for mi, max_det in enumerate(MAX_DETS):
            scores = np.concatenate([e.scores[:max_det] for e in entries])
            order = np.argsort(-scores, kind="mergesort")
            matched = np.concatenate([e.matched[:, :max_det] for e in entries], axis=1)[:, order]
            ignore = np.concatenate([e.dt_ignore[:, :max_det] for e in entries], axis=1)[:, order]
            tps = np.cumsum(matched & ~ignore, axis=1).astype(np.float64)
            fps = np.cumsum(~matched & ~ignore, axis=1).astype(np.float64)
            for ti in range(T):
                tp, fp = tps[ti], fps[ti]
                nd = len(tp)
                rc = tp / n_gt
                pr = tp / (tp + fp + np.spacing(1))
                recall[ti, k, mi] = rc[-1] if nd else 0.0
                # Interpolated precision: the best precision at any recall >= r.
                pr = np.maximum.accumulate(pr[::-1])[::-1] if nd else pr
                q = np.zeros(R)
                idx = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
                ok = idx < nd
                q[ok] = pr[idx[ok]]
                precision[ti, :, k, mi] = q
    return precision, recall


def _mean(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return None if valid.size == 0 else round(float(valid.mean()) * 100.0, 3)


def load_results(results: str | os.PathLike | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(results, (str, os.PathLike)):
        p = Path(results)
        if not p.is_file():
            raise EdgesegError(f"results file {p} does not exist", "pass the JSON written by `edgeseg track -o`")
        try:
            results = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise EdgesegError(f"{p} is not valid JSON: {e}", "pass the JSON written by `edgeseg track -o`") from e
    if not isinstance(results, list):
        raise EdgesegError("YouTube-VIS results must be a list of tracks",
                           "each item: {video_id, category_id, score, segmentations: [RLE or null per frame]}")
    return results


def evaluate_vis(gt: str | os.PathLike | dict[str, Any] | YtvisDataset,
                 results: str | os.PathLike | list[dict[str, Any]],
                 video_ids: Iterable[int] | None = None) -> dict[str, Any]:
    """YouTube-VIS AP of ``results`` (list of {video_id, category_id, score,
    segmentations}) against YouTube-VIS ground truth (path, dict or dataset).

    Returns ``{"AP", "AP50", "AP75", "AR1", "AR10", "AR100", "per_class", "videos",
    "tracks", "predictions"}`` on the 0-100 scale (``None`` where nothing is defined).
    """
    dataset = gt if isinstance(gt, YtvisDataset) else YtvisDataset(gt, check_files=False)
    results = load_results(results)
    # Ascending, de-duplicated video ids, as YTVOSeval evaluates them: the order decides how
    # equal scores of different videos rank in the per-category precision curve, and a
    # repeated id must not count its tracks twice.
    vids = sorted({dataset.video(int(v)).id for v in (video_ids if video_ids is not None else
                                                        [v.id for v in dataset.videos])})
    cat_ids = dataset.categories.ids

    preds: dict[tuple[int, int], list[_Track]] = {}
    for n, r in enumerate(results):
        for key in ("video_id", "category_id", "score", "segmentations"):
            if key not in r:
                raise EdgesegError(f"result {n} has no {key!r}",
                                   "each item: {video_id, category_id, score, segmentations: [RLE or null per frame]}")
        video = dataset.video(int(r["video_id"]))
        dataset.categories.label_of(r["category_id"])  # unknown category -> clear error
        segs = r["segmentations"]
        if not isinstance(segs, list) or len(segs) != video.length:
            raise EdgesegError(f"result {n} (video {video.id}) has {len(segs) if isinstance(segs, list) else 'no'} "
                               f"segmentations for a {video.length}-frame video",
                               "give one RLE (or null) per frame of the video")
        score = float(r["score"])
        if not np.isfinite(score):
            raise EdgesegError(f"result {n} has score {score}", "scores must be finite numbers")
        preds.setdefault((video.id, int(r["category_id"])), []).append(
            _Track(int(r["category_id"]), score, _frame_rles(segs, video.height, video.width)))

    per_category: list[list[_Matches]] = [[] for _ in cat_ids]
    n_tracks = 0
    for vid in vids:
        video = dataset.video(vid)
        gts_all = [_Track(t.category_id, 0.0, _frame_rles(t.segmentations, video.height, video.width), t.iscrowd)
                   for t in dataset.tracks(vid)]
        n_tracks += len(gts_all)
        for k, cat in enumerate(cat_ids):
            gts = [g for g in gts_all if g.category_id == cat]
            dts = preds.get((vid, cat), [])
            if not gts and not dts:
                continue
            order = np.argsort([-d.score for d in dts], kind="mergesort")[:MAX_DETS[-1]]
            dts = [dts[i] for i in order]
            ious = spatiotemporal_iou(dts, gts, video.length) if dts and gts else np.zeros((len(dts), len(gts)))
            per_category[k].append(_match(dts, gts, ious))

    precision, recall = _accumulate(per_category)
    m100 = MAX_DETS.index(100)
    per_class = {dataset.categories.names[k]: _mean(precision[:, :, k, m100]) for k in range(len(cat_ids))}
    return {
        "AP": _mean(precision[:, :, :, m100]),
        "AP50": _mean(precision[0, :, :, m100]),
        "AP75": _mean(precision[int(np.argmin(np.abs(IOU_THRESHOLDS - 0.75))), :, :, m100]),
        "AR1": _mean(recall[:, :, MAX_DETS.index(1)]),
        "AR10": _mean(recall[:, :, MAX_DETS.index(10)]),
        "AR100": _mean(recall[:, :, m100]),
        "per_class": per_class,
        "videos": len(vids),
        "tracks": n_tracks,
        "predictions": len(results),
    }
