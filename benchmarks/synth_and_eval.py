"""Speed of the synthetic data generator and of the AP evaluators (prints figures).

    python benchmarks/synth_and_eval.py [--train 200] [--val 50] [--videos 8] [--frames 12]

Targets (from the design): ~200 small images in seconds, evaluation overhead (RLE +
pycocotools) small next to model inference.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--val", type=int, default=50)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--val-videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()

    from edgeseg.data.coco import CocoDataset
    from edgeseg.data.synthetic import SynthConfig, generate
    from edgeseg.eval.coco import evaluate_detections
    from edgeseg.eval.vis import evaluate_vis

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "shapes"
        cfg = SynthConfig(train=args.train, val=args.val, videos=args.videos, val_videos=args.val_videos,
                          frames=args.frames, height=args.size, width=args.size)
        t = time.perf_counter()
        report = generate(root, cfg)
        dt = time.perf_counter() - t
        images = args.train + args.val
        frames = (args.videos + args.val_videos) * args.frames
        print(f"synth: {images} images + {frames} video frames at {args.size}x{args.size} in {dt:.2f} s "
              f"({sum(s.instances for s in report.coco)} instances, "
              f"{sum(s.tracks for s in report.ytvis)} tracks)")

        if args.val:
            ds = CocoDataset(root / "coco/annotations/val.json", root / "coco/val")

            class Det:
                def __init__(self, label, score, mask):
                    self.label, self.score, self.mask = label, score, mask

            dets = {s.image_id: [Det(int(l), 0.9, m) for l, m in zip(s.labels, s.masks)] for s in ds}
            t = time.perf_counter()
            r = evaluate_detections(ds, dets)
            dt = time.perf_counter() - t
            print(f"coco eval: {len(ds)} images, {r['detections']} detections in {dt:.3f} s "
                  f"({1000 * dt / len(ds):.2f} ms/image), perfect AP = {r['AP']}")

        if args.val_videos:
            import json

            gt_path = root / "ytvis/annotations/val.json"
            gt = json.loads(gt_path.read_text())
            res = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
                    "segmentations": a["segmentations"]} for a in gt["annotations"]]
            t = time.perf_counter()
            r = evaluate_vis(gt, res)
            dt = time.perf_counter() - t
            print(f"vis eval: {r['videos']} videos, {len(res)} predicted tracks in {dt:.3f} s, perfect AP = {r['AP']}")


if __name__ == "__main__":
    main()
