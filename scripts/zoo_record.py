#!/usr/bin/env python
"""Ship a trained checkpoint into the zoo: copy it to ``edgeseg/zoo/<model>.safetensors``
and write ``edgeseg/zoo/<model>.json``, the record of how it was made and what it scores.

    python scripts/zoo_record.py runs/mobileinst_topformer_synth.safetensors

The model is the one the checkpoint's embedded manifest names. The record holds the
commands that reproduce the checkpoint (``RECIPES`` below: the data,
then the two training phases), the synthetic val split it was measured on, its size and
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
TRAIN = ("--dataset data/shapes8k/coco/annotations/train.json --images data/shapes8k/coco/train"
         " --val-dataset data/shapes8k/coco/annotations/val.json --val-images data/shapes8k/coco/val")
SYNTH = "edgeseg data synth -o data/shapes8k --train 8000 --val 200 --videos 0 --val-videos 0 --seed 0"


def _eval(model: str) -> str:
    return (f"edgeseg eval runs/{model}.safetensors --dataset data/shapes8k/coco/annotations/val.json"
            " --images data/shapes8k/coco/val")


# Per shipped model: the commands that reproduce it. Phase 1 learns from object-centred
# 128x128 crops (cheap steps; the classes come far sooner from normalised scales); phase 2
# fine-tunes on whole 256x256 images, the distribution the model is evaluated on.
RECIPES = {
    # Phase 1 of the shipped run was interrupted at iteration 9500 and continued with the same
    # command plus --resume (the state file restores model, optimiser, schedule and data order).
    "mobileinst_topformer_synth": [
        SYNTH,
        f"edgeseg train mobileinst_topformer_synth {TRAIN} --iters 12000 --batch-size 16 --crop 128 --zoom 0.5"
        " --lr 1e-3 --threads 1 --seed 0 --val-every 1000 --save-every 250 --log-every 100 --save-fp16"
        " -o runs/phase1.safetensors",
        f"edgeseg train mobileinst_topformer_synth --weights runs/phase1.safetensors {TRAIN}"
        " --iters 5000 --batch-size 8 --lr 3e-4 --threads 2 --seed 1 --val-every 1000 --save-every 250"
        " --log-every 50 --save-fp16 -o runs/mobileinst_topformer_synth.safetensors",
        _eval("mobileinst_topformer_synth"),
    ],
    # Not shipped yet (training unfinished: see README, FastInst, Training). Phase 1 was
    # stopped after iteration 2500 of its 10000-iteration schedule; phase 2 starts from the
    # checkpoint phase 1 saved there (--save-every 250), kept as runs/phase1_2500.safetensors.
    "fastinst_topformer_synth": [
        SYNTH,
        f"edgeseg train fastinst_topformer_synth {TRAIN} --iters 10000 --batch-size 16 --crop 128 --zoom 0.5"
        " --lr 1e-3 --threads 1 --seed 0 --val-every 1000 --save-every 250 --log-every 100 --save-fp16"
        " -o runs/phase1.safetensors",
        "cp runs/phase1.safetensors runs/phase1_2500.safetensors",
        f"edgeseg train fastinst_topformer_synth --weights runs/phase1_2500.safetensors {TRAIN}"
        " --iters 6000 --batch-size 8 --lr 3e-4 --threads 1 --seed 1 --val-every 1000 --save-every 250"
        " --log-every 50 --save-fp16 -o runs/fastinst_topformer_synth.safetensors",
        _eval("fastinst_topformer_synth"),
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
    model = manifest.model
    if model not in RECIPES:
        sys.exit(f"{args.checkpoint} holds {model}, which has no recipe here (known: {', '.join(RECIPES)})")
    recipe = RECIPES[model]
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
        net = create_model(model, **cfg).eval()
        load_weights(net, args.checkpoint)
        onnx_dir = Path(tmp) / "onnx"
        export_onnx(net, onnx_dir)
        val["onnxruntime"] = evaluate_artifact(onnx_dir, ann, images, threads=1).metrics
        print(f"onnxruntime (FP32 ONNX): AP {val['onnxruntime']['AP']:.1f}", flush=True)

    ZOO_DIR.mkdir(exist_ok=True)
    shipped = ZOO_DIR / f"{model}.safetensors"
    shutil.copyfile(args.checkpoint, shipped)
    keep = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    record = {
        "model": model,
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
    write_json(ZOO_DIR / f"{model}.json", record)
    print(json.dumps(record["val"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
