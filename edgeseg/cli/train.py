"""``edgeseg train``: train or fine-tune a zoo model on a COCO-format dataset (images) or a
YouTube-VIS-format dataset (clip models such as IFC)."""

from __future__ import annotations

import click


def _loss_options(pairs, aux_semantic) -> dict:
    from edgeseg.train.objective import parse_loss_options

    options = parse_loss_options(pairs)
    if aux_semantic is not None:
        options["aux_semantic"] = str(aux_semantic)
    return options


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


_EPILOG = """\b
Examples:
  edgeseg data synth -o data/shapes --train 200 --val 50
  edgeseg train mobileinst_topformer_synth --dataset data/shapes/coco/annotations/train.json \\
      --images data/shapes/coco/train --val-dataset data/shapes/coco/annotations/val.json \\
      --val-images data/shapes/coco/val --epochs 12 -o runs/shapes.safetensors
  edgeseg eval runs/shapes.safetensors --dataset data/shapes/coco/annotations/val.json

\b
  # fine-tune the shipped checkpoint on your own classes
  edgeseg train mobileinst_topformer_synth --weights zoo --dataset my/train.json --images my/imgs \\
      --iters 500 -o runs/mine.safetensors

\b
  # a clip model (IFC) on synthetic videos, VIS AP on the val videos
  edgeseg data synth -o data/vis --train 0 --val 0 --videos 100 --val-videos 10 --frames 24
  edgeseg train ifc_topformer_synth --dataset data/vis/ytvis/annotations/train.json \\
      --images data/vis/ytvis/JPEGImages --val-dataset data/vis/ytvis/annotations/val.json \\
      --val-images data/vis/ytvis/JPEGImages --iters 2000 --batch-size 2 -o runs/ifc.safetensors
"""


@click.command("train", epilog=_EPILOG, context_settings={"max_content_width": 110})
@click.argument("model_name", metavar="MODEL")
@click.option("--dataset", "train_json", required=True, type=click.Path(dir_okay=False),
              help="COCO instances JSON to train on (its categories set the number of classes); for clip "
                   "models (IFC) a YouTube-VIS JSON.")
@click.option("--images", "train_images", required=True, type=click.Path(file_okay=False),
              help="Folder holding the training images (YouTube-VIS: the JPEGImages folder of the frames).")
@click.option("--val-dataset", "val_json", type=click.Path(dir_okay=False),
              help="Val split in the same format: mask AP (COCO) or VIS AP (YouTube-VIS) at the end "
                   "(and every --val-every iterations).")
@click.option("--val-images", "val_images", type=click.Path(file_okay=False), help="Folder of the val images.")
@click.option("--val-interval", type=int, default=None,
              help="Clip models: the near-online stride S of val tracking (default: the video strategy's).")
@click.option("--freeze", default=None,
              help="Components to keep as loaded, e.g. backbone (not trained, BatchNorm statistics fixed; "
                   "with --weights: fine-tune the rest only, and no backward through them).")
@click.option("--epochs", type=float, default=None, help="Passes over the training set (default 12).")
@click.option("--iters", type=int, default=None, help="Iterations (batches) instead of --epochs.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="AdamW peak learning rate.")
@click.option("--weight-decay", type=float, default=0.05, show_default=True)
@click.option("--warmup", "warmup_iters", type=int, default=None,
              help="Warm-up iterations (default: 5% of the run, at most 200).")
@click.option("--clip-grad", type=float, default=1.0, show_default=True, help="Max gradient norm (0: off).")
@click.option("--ema", type=float, default=0.0, show_default=True,
              help="Keep an exponential moving average of the weights with this decay (e.g. 0.999) and "
                   "validate and save it instead of the raw weights (0: off).")
@click.option("--input-size", default=None, help="N or HEIGHTxWIDTH, multiples of 64 (default: the model's).")
@click.option("--scale-jitter", default="0.75,1.25", show_default=True,
              help="Random rescale range MIN,MAX before cropping/padding back ('1,1': off).")
@click.option("--weights", default=None,
              help="Initial weights: a checkpoint, or 'zoo' for the model's shipped one. A different "
                   "class count re-initialises the class head (fine-tuning).")
@click.option("--crop", default=None,
              help="Train on random N or HxW crops at the input's scale (cheaper steps; multiples of 64).")
@click.option("--zoom", type=float, default=0.0, show_default=True,
              help="With --crop: share of crops centred on an object zoomed to 30-70% of the crop "
                   "(normalised scales: classes learned from scratch much sooner).")
@click.option("--loss-option", "loss_option", multiple=True, metavar="KEY=VALUE",
              help="An option of the family's training objective (repeatable), e.g. aux_semantic=0.5 "
                   "or cls=2; a wrong key lists the valid ones.")
@click.option("--aux-semantic", type=float, default=None,
              help="Shortcut for --loss-option aux_semantic=X: weight of a training-only per-pixel class "
                   "loss (MobileInst: on the mask features; 0: off). Never exported.")
@click.option("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice; on a machine busy with other "
                   "work, 1 is often much faster than oversubscribed cores).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same run.")
@click.option("--val-every", type=int, default=0, show_default=True, help="Iterations between val AP runs.")
@click.option("--val-limit", type=int, default=None, help="Evaluate only the first N val images.")
@click.option("--save-every", type=int, default=200, show_default=True,
              help="Iterations between checkpoint + resumable state writes.")
@click.option("--save-fp16", is_flag=True, help="Store the checkpoint's weights in float16 (half the size).")
@click.option("--resume", is_flag=True, help="Continue from OUT's training state (OUT.state.safetensors).")
@click.option("--log-every", type=int, default=20, show_default=True, help="Iterations between log lines.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint to write (.safetensors, with the model's manifest embedded).")
@click.option("--overwrite", is_flag=True, help="Replace an existing -o file that edgeseg did not write.")
def train(model_name, train_json, train_images, val_json, val_images, val_interval, freeze, epochs, iters,
          batch_size, lr, weight_decay, warmup_iters, clip_grad, ema, input_size, scale_jitter, crop, zoom, loss_option,
          aux_semantic, weights, threads, seed, val_every, val_limit, save_every, save_fp16, resume, log_every,
          output, overwrite) -> None:
    """Train MODEL (a zoo model whose family has a training objective) on a COCO-format dataset,
    or a clip model (IFC) on a YouTube-VIS-format dataset.

    The loop is generic (seeded batches, AdamW with warm-up and cosine decay, gradient
    clipping, periodic val AP, resumable state); the losses are the family's own, e.g.
    MobileInst: queries matched one-to-one to ground truth (SparseInst's dice x class
    score), focal classification, dice + BCE masks, IoU-aware objectness (2, 2, 1), and a
    training-only per-pixel class head (aux_semantic, never exported) that helps a
    backbone trained from scratch learn the classes.
    The checkpoint embeds its manifest, so `edgeseg eval OUT` and
    `edgeseg export MODEL --weights OUT` need no other flags.
    """
    from rich.console import Console
    from rich.table import Table

    from edgeseg.data.preprocess import parse_input_size
    from edgeseg.errors import EdgesegError
    from edgeseg.train.data import AugmentConfig
    from edgeseg.train.log import TrainLog
    from edgeseg.train.trainer import TrainConfig
    from edgeseg.train.trainer import train as run_training

    from edgeseg.train.state import state_path
    from edgeseg.utils.outputs import check_output_file

    # The checkpoint and its resumable state beside it: checked now, not after the first save.
    inputs = [train_json, val_json, weights if weights != "zoo" else None]
    check_output_file(output, flag="-o", overwrite=overwrite, inputs=inputs)
    check_output_file(state_path(output), flag="", overwrite=overwrite, inputs=inputs)
    try:
        lo, hi = (float(v) for v in scale_jitter.split(","))
    except ValueError:
        raise EdgesegError(f"cannot read --scale-jitter {scale_jitter!r}", "give MIN,MAX, e.g. 0.75,1.25") from None
    cfg = TrainConfig(
        model=model_name, train_json=train_json, train_images=train_images, output=output, val_json=val_json,
        val_images=val_images, input_size=parse_input_size(input_size, stride=1) if input_size else None,
        epochs=epochs, iters=iters, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        warmup_iters=warmup_iters, clip_grad=clip_grad, ema=ema, weights=weights, threads=threads, seed=seed,
        val_every=val_every, val_limit=val_limit, save_every=save_every, log_every=log_every,
        save_dtype="float16" if save_fp16 else "float32", resume=resume,
        augment=AugmentConfig(scale_min=lo, scale_max=hi, crop=parse_input_size(crop, stride=1) if crop else None,
                              zoom=zoom),
        loss_options=_loss_options(loss_option, aux_semantic),
        freeze=tuple(c.strip() for c in freeze.split(",") if c.strip()) if freeze else (),
        val_interval=val_interval)
    log = TrainLog(log_every=log_every)
    started = False

    def on_step(info) -> None:
        nonlocal started
        if not started:
            log.start(info.iteration - 1, info.total)
            started = True
        log.step(info)

    try:
        result = run_training(cfg, log=log.message, step_callback=on_step)
    finally:
        log.close()

    console = Console()
    first = result.losses[0] if result.losses else None
    last = sum(result.losses[-10:]) / len(result.losses[-10:]) if result.losses else None
    console.print(f"[bold]{result.model}[/bold] {result.model_cfg.get('num_classes')} classes at "
                  f"{'x'.join(map(str, result.model_cfg.get('input_size', '')))}: "
                  f"{result.iterations - result.started_at} iterations in {result.seconds:.0f} s"
                  + (f", loss {first:.3f} -> {last:.3f} (mean of the last 10)" if first is not None else ""))
    if result.val:
        video = "AR10" in result.val and "APs" not in result.val
        t = Table(title="val VIS AP" if video else "val mask AP")
        keys = ("AP", "AP50", "AP75", "AR1", "AR10") if video else ("AP", "AP50", "AP75", "APs", "APm", "APl")
        for k in keys:
            t.add_column(k, justify="right")
        t.add_row(*(_fmt(result.val.get(k)) for k in keys))
        console.print(t)
    console.print(f"[green]wrote[/green] {result.output} (resumable state: {result.state})")
