#!/usr/bin/env python
"""Ship a trained checkpoint into the zoo: copy it to ``edgeseg/zoo/<model>.safetensors``
and write ``edgeseg/zoo/<model>.json``, the record of how it was made and what it scores.

    python scripts/zoo_record.py runs/mobileinst_topformer_synth.safetensors
    python scripts/zoo_record.py runs/blitzmask_mobilenetv2_synth.safetensors --val-dir /work/data/shapes8k

The model is the one the checkpoint's embedded manifest names. The record holds the
commands that reproduce the checkpoint (``RECIPES`` below: the data, then the two training
phases), the synthetic val split it was measured on, its size and
sha256, and its mask AP measured here twice: through PyTorch (``edgeseg eval CKPT``) and
through the exported FP32 ONNX graph on ONNX Runtime (``edgeseg export`` + ``edgeseg eval
DIR``). tests/test_train_zoo.py re-measures the PyTorch figure on every CI run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = {"seed": 0, "train": 8000, "val": 200, "size": 256}
SYNTH = "edgeseg data synth -o data/shapes8k --train 8000 --val 200 --videos 0 --val-videos 0 --seed 0"
_SPLITS = ("--dataset data/shapes8k/coco/annotations/train.json --images data/shapes8k/coco/train"
           " --val-dataset data/shapes8k/coco/annotations/val.json --val-images data/shapes8k/coco/val")
# Phase 1 learns from object-centred 128x128 crops (cheap steps; the classes come far
# sooner from normalised scales); phase 2 fine-tunes on whole 256x256 images, the
# distribution the model is evaluated on. MobileInst's phase 1 was interrupted at
# iteration 9500 and continued with the same command plus --resume (the state file
# restores model, optimiser, schedule and data order).
RECIPES = {
    "mobileinst_topformer_synth": [
        SYNTH,
        "edgeseg train mobileinst_topformer_synth --dataset data/shapes8k/coco/annotations/train.json"
        " --images data/shapes8k/coco/train --val-dataset data/shapes8k/coco/annotations/val.json"
        " --val-images data/shapes8k/coco/val --iters 12000 --batch-size 16 --crop 128 --zoom 0.5"
        " --lr 1e-3 --threads 1 --seed 0 --val-every 1000 --save-every 250 --log-every 100 --save-fp16"
        " -o runs/phase1.safetensors",
        "edgeseg train mobileinst_topformer_synth --weights runs/phase1.safetensors"
        " --dataset data/shapes8k/coco/annotations/train.json --images data/shapes8k/coco/train"
        " --val-dataset data/shapes8k/coco/annotations/val.json --val-images data/shapes8k/coco/val"
        " --iters 5000 --batch-size 8 --lr 3e-4 --threads 2 --seed 1 --val-every 1000 --save-every 250"
        " --log-every 50 --save-fp16 -o runs/mobileinst_topformer_synth.safetensors",
        "edgeseg eval runs/mobileinst_topformer_synth.safetensors --dataset data/shapes8k/coco/annotations/val.json"
        " --images data/shapes8k/coco/val",
    ],
    # BlitzMask: one phase on object-centred 128 crops reached 49.9 AP on the whole 256 images
    # (2 h of one core), past the 40 the issue asks for, so no whole-image phase was run.
    "blitzmask_mobilenetv2_synth": [
        SYNTH,
        f"edgeseg train blitzmask_mobilenetv2_synth {_SPLITS} --iters 5000 --batch-size 16 --crop 128"
        " --zoom 0.5 --lr 1e-3 --threads 1 --seed 0 --val-every 1000 --save-every 100 --log-every 50"
        " --save-fp16 -o runs/phase1.safetensors",
        "edgeseg eval runs/phase1.safetensors --dataset data/shapes8k/coco/annotations/val.json"
        " --images data/shapes8k/coco/val",
    ],
    # FastInst: not shipped yet (19.7 AP at phase-2 iteration 750: see README, FastInst).
    # Phase 1 was stopped after iteration 2500 of its 10000-iteration schedule; phase 2 starts
    # from the checkpoint phase 1 saved there (--save-every 250), copied before it went on.
    "fastinst_topformer_synth": [
        SYNTH,
        f"edgeseg train fastinst_topformer_synth {_SPLITS} --iters 10000 --batch-size 16 --crop 128 --zoom 0.5"
        " --lr 1e-3 --threads 1 --seed 0 --val-every 1000 --save-every 250 --log-every 100 --save-fp16"
        " -o runs/phase1.safetensors",
        "cp runs/phase1.safetensors runs/phase1_2500.safetensors",
        f"edgeseg train fastinst_topformer_synth --weights runs/phase1_2500.safetensors {_SPLITS}"
        " --iters 6000 --batch-size 8 --lr 3e-4 --threads 1 --seed 1 --val-every 1000 --save-every 250"
        " --log-every 50 --save-fp16 -o runs/fastinst_topformer_synth.safetensors",
        "edgeseg eval runs/fastinst_topformer_synth.safetensors --dataset data/shapes8k/coco/annotations/val.json"
        " --images data/shapes8k/coco/val",
    ],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--val-dir", type=Path, default=None,
                    help="An existing synthetic dataset folder with the val split (default: generate it).")
    args = ap.parse_args()

    from edgeseg.data.synthetic import SynthConfig, generate
    from edgeseg.eval.coco import evaluate_artifact
    from edgeseg.export.manifest import manifest_for_artifact
    from edgeseg.export.onnx import export_onnx
    from edgeseg.models.checkpoints import load_weights
    from edgeseg.models.pretrained import ZOO_DIR
    from edgeseg.models import create_model
    from edgeseg.utils.atomic import write_json
    from edgeseg.utils.hashing import sha256_file

    manifest = manifest_for_artifact(args.checkpoint)
    model_name = manifest.model
    if model_name not in RECIPES:
        sys.exit(f"{args.checkpoint} holds {model_name}, which has no recipe here (known: {', '.join(RECIPES)})")
    recipe = RECIPES[model_name]
    for cmd in recipe:
        shlex.split(cmd)  # a typo in the recipe fails here, not in a user's shell
    train_rec = [h for h in manifest.history if h.get("step") == "train"][-1]

    with tempfile.TemporaryDirectory() as tmp:
        root = args.val_dir
        if root is None:
            root = Path(tmp) / "shapes"
            generate(root, SynthConfig(train=0, val=DATA["val"], videos=0, val_videos=0, seed=DATA["seed"]))
        ann, images = root / "coco" / "annotations" / "val.json", root / "coco" / "val"
        val: dict[str, dict] = {}
        t0 = time.perf_counter()
        val["torch"] = evaluate_artifact(args.checkpoint, ann, images, threads=1).metrics
        print(f"torch: AP {val['torch']['AP']:.1f} ({time.perf_counter() - t0:.0f} s)", flush=True)

        cfg = dict(manifest.model_cfg or {})
        if isinstance(cfg.get("input_size"), list):
            cfg["input_size"] = tuple(cfg["input_size"])
        model = create_model(model_name, **cfg).eval()
        load_weights(model, args.checkpoint)
        onnx_dir = Path(tmp) / "onnx"
        export_onnx(model, onnx_dir)
        val["onnxruntime"] = evaluate_artifact(onnx_dir, ann, images, threads=1).metrics
        print(f"onnxruntime (FP32 ONNX): AP {val['onnxruntime']['AP']:.1f}", flush=True)

    ZOO_DIR.mkdir(exist_ok=True)
    shipped = ZOO_DIR / f"{model_name}.safetensors"
    shutil.copyfile(args.checkpoint, shipped)
    keep = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    record = {
        "model": model_name,
        "file": shipped.name,
        "bytes": shipped.stat().st_size,
        "sha256": sha256_file(shipped),
        "weights_dtype": "float16",
        "data": {**DATA, "note": "edgeseg data synth: val images depend only on (seed, index)"},
        "reproduce": recipe,
        "training": {"iterations": train_rec.get("iterations"), "seed": train_rec.get("seed"),
                     "val_during_training": train_rec.get("val")},
        "val": {k: {m: v[m] for m in keep} for k, v in val.items()},
        "val_note": ("mask AP (COCO, pycocotools) on the synthetic val split, measured on the weights as "
                     "stored (float16). The training record embedded in the checkpoint was measured on the "
                     "float32 weights in memory before storing, so it may differ in the last digit."),
    }
    write_json(ZOO_DIR / f"{model_name}.json", record)
    print(json.dumps(record["val"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
