#!/usr/bin/env python
"""Ship a trained checkpoint into the zoo: copy it to ``edgeseg/zoo/<model>.safetensors``
and write ``edgeseg/zoo/<model>.json``, the record of how it was made and what it scores.

    python scripts/zoo_record.py runs/mobileinst_topformer_synth.safetensors
    python scripts/zoo_record.py runs/yolact_edge_mobilenetv2_synth_flow.safetensors
    python scripts/zoo_record.py runs/blitzmask_mobilenetv2_synth.safetensors --val-dir /work/data/shapes8k

The record holds the commands that reproduce the checkpoint (``RECIPES`` below: the data,
then the training phases), the synthetic val split it was measured on, its size and
sha256, and its mask AP measured here twice: through PyTorch (``edgeseg eval CKPT``) and
through the exported FP32 ONNX graph on ONNX Runtime (``edgeseg export`` + ``edgeseg eval
DIR``). tests/test_train_zoo.py (MobileInst), tests/test_yolact_edge_zoo.py and
tests/test_blitzmask_zoo.py re-measure the PyTorch figure on every CI run. The model is the one
the checkpoint's embedded manifest names.

A recipe is the whole plan; the record keeps the part that made this checkpoint: the
training command whose run wrote it is found from the checkpoint's own training record
(its stage, seed and whether it started from weights), and a checkpoint written before
that run's last iteration (``--save-every``) is recorded as such (``stopped_at``): the
learning-rate schedule spans the command's ``--iters``, so reproducing it means running
that command and taking the checkpoint written at that iteration.
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

MODEL = "mobileinst_topformer_synth"
DATA = {"seed": 0, "train": 8000, "val": 200, "size": 256}
# Phase 1 learns from object-centred 128x128 crops (cheap steps; the classes come far
# sooner from normalised scales); phase 2 fine-tunes on whole 256x256 images, the
# distribution the model is evaluated on. Phase 1 of the shipped run was interrupted at
# iteration 9500 and continued with the same command plus --resume (the state file
# restores model, optimiser, schedule and data order).
MOBILEINST_RECIPE = [
    "edgeseg data synth -o data/shapes8k --train 8000 --val 200 --videos 0 --val-videos 0 --seed 0",
    f"edgeseg train {MODEL} --dataset data/shapes8k/coco/annotations/train.json"
    " --images data/shapes8k/coco/train --val-dataset data/shapes8k/coco/annotations/val.json"
    " --val-images data/shapes8k/coco/val --iters 12000 --batch-size 16 --crop 128 --zoom 0.5"
    " --lr 1e-3 --threads 1 --seed 0 --val-every 1000 --save-every 250 --log-every 100 --save-fp16"
    " -o runs/phase1.safetensors",
    f"edgeseg train {MODEL} --weights runs/phase1.safetensors"
    " --dataset data/shapes8k/coco/annotations/train.json --images data/shapes8k/coco/train"
    " --val-dataset data/shapes8k/coco/annotations/val.json --val-images data/shapes8k/coco/val"
    " --iters 5000 --batch-size 8 --lr 3e-4 --threads 2 --seed 1 --val-every 1000 --save-every 250"
    f" --log-every 50 --save-fp16 -o runs/{MODEL}.safetensors",
    f"edgeseg eval runs/{MODEL}.safetensors --dataset data/shapes8k/coco/annotations/val.json"
    " --images data/shapes8k/coco/val",
]

# YolactEdge (MobileNetV2 0.5x, 64-channel FPN / ProtoNet / head): the same two image phases
# (object-zoomed 128 crops, then whole 256 images), then FeatFlowNet alone on frame pairs of
# synthetic YouTube-VIS videos with everything else frozen (the paper's second stage).
# Phase 1 of the shipped run was interrupted at iteration 750 and continued with the same
# command plus --resume (model, optimiser, schedule and data order restored).
YE = "yolact_edge_mobilenetv2_synth"
YOLACT_EDGE_RECIPE = [
    "edgeseg data synth -o data/shapes8k --train 8000 --val 200 --videos 0 --val-videos 0 --seed 0",
    "edgeseg data synth -o data/vis --train 0 --val 0 --videos 600 --val-videos 10 --frames 24 --seed 0",
    f"edgeseg train {YE} --dataset data/shapes8k/coco/annotations/train.json --images data/shapes8k/coco/train"
    " --val-dataset data/shapes8k/coco/annotations/val.json --val-images data/shapes8k/coco/val --iters 4500"
    " --batch-size 16 --crop 128 --zoom 0.5 --lr 1e-3 --threads 1 --seed 0 --val-every 1500 --save-every 250"
    " --log-every 100 --save-fp16 -o runs/phase1.safetensors",
    f"edgeseg train {YE} --weights runs/phase1.safetensors --dataset data/shapes8k/coco/annotations/train.json"
    " --images data/shapes8k/coco/train --val-dataset data/shapes8k/coco/annotations/val.json"
    " --val-images data/shapes8k/coco/val --iters 1500 --batch-size 8 --lr 3e-4 --threads 1 --seed 1"
    f" --val-every 500 --save-every 250 --log-every 50 --save-fp16 -o runs/{YE}.safetensors",
    # Phase 2b: phase 2 ended at 38.6 AP, under the 40; 1000 more whole-image
    # iterations at a lower peak lr. (The shipped run read a byte-identical copy of phase 2's
    # output, runs/ye_phase2.safetensors, which its embedded record names as init.)
    f"edgeseg train {YE} --weights runs/{YE}.safetensors --dataset data/shapes8k/coco/annotations/train.json"
    " --images data/shapes8k/coco/train --val-dataset data/shapes8k/coco/annotations/val.json"
    " --val-images data/shapes8k/coco/val --iters 1000 --batch-size 8 --lr 2e-4 --threads 1 --seed 2"
    " --val-every 500 --save-every 250 --log-every 50 --save-fp16 -o runs/ye_phase2b.safetensors",
    f"python -m edgeseg.models.yolact_edge.flow_train {YE} --weights runs/ye_phase2b.safetensors"
    " --dataset data/vis/ytvis/annotations/train.json --videos data/vis/ytvis/JPEGImages --iters 800"
    " --batch-size 8 --lr 1e-3 --max-offset 4 --seed 0 --threads 1 --save-every 100 --log-every 20 --save-fp16"
    f" -o runs/{YE}_flow.safetensors",
    f"edgeseg eval runs/{YE}_flow.safetensors --dataset data/shapes8k/coco/annotations/val.json"
    " --images data/shapes8k/coco/val",
]

SYNTH = "edgeseg data synth -o data/shapes8k --train 8000 --val 200 --videos 0 --val-videos 0 --seed 0"
_SPLITS = ("--dataset data/shapes8k/coco/annotations/train.json --images data/shapes8k/coco/train"
           " --val-dataset data/shapes8k/coco/annotations/val.json --val-images data/shapes8k/coco/val")
# BlitzMask: one phase on object-centred 128 crops reached 49.9 AP on the whole 256 images
# (2 h of one core), past the 40 the issue asks for, so no whole-image phase was run.
BLITZMASK_RECIPE = [
    SYNTH,
    f"edgeseg train blitzmask_mobilenetv2_synth {_SPLITS} --iters 5000 --batch-size 16 --crop 128"
    " --zoom 0.5 --lr 1e-3 --threads 1 --seed 0 --val-every 1000 --save-every 100 --log-every 50"
    " --save-fp16 -o runs/phase1.safetensors",
    "edgeseg eval runs/phase1.safetensors --dataset data/shapes8k/coco/annotations/val.json"
    " --images data/shapes8k/coco/val",
]

# FastInst: four runs (README, FastInst, Training). Phase 1 was stopped after iteration
# 2500 of its 10000-iteration schedule; phase 2 starts from the checkpoint phase 1 saved
# there (--save-every 250), copied before it went on; phases 3 and 4 are further cosine
# cycles at lower peaks.
FASTINST_RECIPE = [
    SYNTH,
    f"edgeseg train fastinst_topformer_synth {_SPLITS} --iters 10000 --batch-size 16 --crop 128 --zoom 0.5"
    " --lr 1e-3 --threads 1 --seed 0 --val-every 1000 --save-every 250 --log-every 100 --save-fp16"
    " -o runs/phase1.safetensors",
    "cp runs/phase1.safetensors runs/phase1_2500.safetensors",
    f"edgeseg train fastinst_topformer_synth --weights runs/phase1_2500.safetensors {_SPLITS}"
    " --iters 6000 --batch-size 8 --lr 3e-4 --threads 1 --seed 1 --val-every 1000 --save-every 250"
    " --log-every 50 --save-fp16 -o runs/fastinst_topformer_synth.safetensors",
    "cp runs/fastinst_topformer_synth.safetensors runs/phase2_6000.safetensors",
    # Phase 2 ended at 6000 still rising (30.8 / 34.5 / 35.8 AP at 3000 / 4000 / 5000): a
    # second cosine cycle at a lower peak.
    f"edgeseg train fastinst_topformer_synth --weights runs/phase2_6000.safetensors {_SPLITS}"
    " --iters 3000 --batch-size 8 --lr 2e-4 --threads 1 --seed 2 --val-every 1000 --save-every 250"
    " --log-every 50 --save-fp16 -o runs/phase3.safetensors",
    # Phase 3 ended flat (39.4 AP at 2000 and 3000): one more cycle, peak lr 1.5e-4.
    f"edgeseg train fastinst_topformer_synth --weights runs/phase3.safetensors {_SPLITS}"
    " --iters 2500 --batch-size 8 --lr 1.5e-4 --threads 1 --seed 3 --val-every 500 --save-every 250"
    " --log-every 50 --save-fp16 -o runs/phase4.safetensors",
    "edgeseg eval runs/phase4.safetensors --dataset data/shapes8k/coco/annotations/val.json"
    " --images data/shapes8k/coco/val",
]

RECIPES = {MODEL: MOBILEINST_RECIPE, YE: YOLACT_EDGE_RECIPE, "blitzmask_mobilenetv2_synth": BLITZMASK_RECIPE,
           "fastinst_topformer_synth": FASTINST_RECIPE}
RECIPE = MOBILEINST_RECIPE  # the name earlier scripts used


def _is_data(cmd: list[str]) -> bool:
    return cmd[:3] == ["edgeseg", "data", "synth"]


def _is_training(cmd: list[str]) -> bool:
    return cmd[:2] == ["edgeseg", "train"] or (len(cmd) > 2 and cmd[1] == "-m" and cmd[2].endswith("flow_train"))


def _flag(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


def recipe_for(recipe: list[str], train_rec: dict) -> tuple[list[str], dict | None]:
    """The commands of ``recipe`` that made a checkpoint whose last training record is
    ``train_rec``: the data commands, the training commands up to the one that wrote it,
    and the eval of its output; plus ``stopped_at`` when that run had not finished."""
    cmds = [shlex.split(c) for c in recipe]
    training = [i for i, c in enumerate(cmds) if _is_training(c)]
    if train_rec.get("stage") == "flow_net":
        match = [i for i in training if cmds[i][:2] != ["edgeseg", "train"]]
    else:
        match = [i for i in training if cmds[i][:2] == ["edgeseg", "train"]
                 and int(_flag(cmds[i], "--seed") or 0) == int(train_rec.get("seed") or 0)
                 and ("--weights" in cmds[i]) == (train_rec.get("init") is not None)]
    if len(match) != 1:
        raise SystemExit(f"the checkpoint's training record (seed {train_rec.get('seed')}, init "
                         f"{train_rec.get('init')}, stage {train_rec.get('stage')}) matches {len(match)} commands "
                         "of the recipe; fix RECIPES")
    last = match[0]
    made_it = cmds[last]
    evals = [c for c in cmds if c[:2] == ["edgeseg", "eval"]]
    kept_training = [cmds[i] for i in training if i <= last]

    def used(data_cmd: list[str]) -> bool:  # a data command stays if a kept training reads its output
        out = _flag(data_cmd, "-o") or ""
        return any(tok.startswith(out) for c in kept_training for tok in c)

    evals_at = {i for i, c in enumerate(cmds) if c[:2] == ["edgeseg", "eval"]}
    # Other steps (a `cp` between phases) stay when they come before the command that made it.
    keep = [recipe[i] for i, c in enumerate(cmds) if (_is_data(c) and used(c)) or (i in training and i <= last)
            or (i < last and not _is_data(c) and i not in training and i not in evals_at)]
    if evals:  # the recipe's eval, of this command's output
        ev = list(evals[-1])
        ev[2] = _flag(made_it, "-o")
        keep.append(shlex.join(ev))
    planned, done = int(_flag(made_it, "--iters")), int(train_rec.get("iterations") or 0)
    stopped = None
    if done < planned:
        stopped = {"command": len(keep) - 1 - bool(evals), "iterations": done, "of": planned,
                   "note": (f"the checkpoint that command wrote at iteration {done} of {planned} (--save-every); "
                            f"its learning-rate schedule spans all {planned}, so this is not a finished run")}
    return keep, stopped


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
    name = manifest.model
    if name not in RECIPES:
        sys.exit(f"{args.checkpoint} holds {name}; the zoo records {', '.join(RECIPES)}")
    for cmd in RECIPES[name]:
        shlex.split(cmd)  # a typo in the recipe fails here, not in a user's shell
    train_rec = [h for h in manifest.history if h.get("step") == "train"][-1]
    image_rec = train_rec.get("image_training") or train_rec  # a later stage keeps the image training's record
    recipe, stopped_at = recipe_for(RECIPES[name], train_rec)
    if stopped_at:
        print(f"note: {stopped_at['note']}", flush=True)

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
        model = create_model(name, **cfg).eval()
        load_weights(model, args.checkpoint)
        onnx_dir = Path(tmp) / "onnx"
        export_onnx(model, onnx_dir)
        val["onnxruntime"] = evaluate_artifact(onnx_dir, ann, images, threads=1).metrics
        print(f"onnxruntime (FP32 ONNX): AP {val['onnxruntime']['AP']:.1f}", flush=True)

    ZOO_DIR.mkdir(exist_ok=True)
    shipped = ZOO_DIR / f"{name}.safetensors"
    shutil.copyfile(args.checkpoint, shipped)
    keep = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    record = {
        "model": name,
        "file": shipped.name,
        "bytes": shipped.stat().st_size,
        "sha256": sha256_file(shipped),
        "weights_dtype": "float16",
        "data": {**DATA, "note": "edgeseg data synth: val images depend only on (seed, index)"},
        "reproduce": recipe,
        **({"stopped_at": stopped_at} if stopped_at else {}),
        "training": {"iterations": image_rec.get("iterations"), "seed": image_rec.get("seed"),
                     "val_during_training": image_rec.get("val"),
                     **({"later_stage": {k: train_rec.get(k) for k in ("stage", "iterations", "seed", "loss_last")}}
                        if train_rec is not image_rec else {})},
        "val": {k: {m: v[m] for m in keep} for k, v in val.items()},
        "val_note": ("mask AP (COCO, pycocotools) on the synthetic val split, measured on the weights as "
                     "stored (float16). The training record embedded in the checkpoint was measured on the "
                     "float32 weights in memory before storing, so it may differ in the last digit."),
    }
    write_json(ZOO_DIR / f"{name}.json", record)
    print(json.dumps(record["val"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
