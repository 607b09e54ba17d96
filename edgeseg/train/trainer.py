"""Train or fine-tune any zoo model whose family has a training objective.

``train(TrainConfig(...))`` runs the generic loop: seeded batches from the family's kind of
training data (``Family.train_data``: COCO images, or clips of YouTube-VIS videos for
clip models), the family's objective (``Family.objective``, see
:mod:`edgeseg.train.objective`), AdamW with warm-up + cosine, gradient clipping,
periodic validation (mask AP on a COCO val split, measured by ``edgeseg.eval.coco``
exactly as ``edgeseg eval`` measures it; VIS AP on a YouTube-VIS val split, tracked by
the family's video strategy exactly as ``edgeseg track --dataset`` does), atomic
checkpoints with the embedded manifest, and ``resume`` from the training state written
beside the checkpoint. ``freeze`` keeps components (e.g. a pretrained backbone) fixed.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.train.data import AugmentConfig

# Exponential moving average of the loss for display (noisy per batch).
_EMA = 0.9


@dataclass
class TrainConfig:
    model: str
    train_json: str
    train_images: str
    output: str                               # OUT.safetensors
    val_json: str | None = None
    val_images: str | None = None
    input_size: tuple[int, int] | None = None  # default: the model variant's
    epochs: float | None = None                # one of epochs / iters (default 12 epochs)
    iters: int | None = None
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_iters: int | None = None            # default: 5% of the run, at most 200
    min_lr_ratio: float = 0.01
    clip_grad: float = 1.0                     # max gradient norm (0 = off)
    # Exponential moving average of the weights (0 = off): validated and saved instead of
    # the raw weights, which a small batch leaves noisy at the end of a run.
    ema: float = 0.0
    weights: str | None = None                 # initial weights (a path, or "zoo")
    threads: int | None = None                 # torch.set_num_threads; default: torch's
    seed: int = 0
    val_every: int = 0                         # iterations between val AP runs (0: only at the end)
    val_limit: int | None = None               # evaluate only the first N val images
    save_every: int = 200                      # iterations between checkpoint + state writes
    log_every: int = 20
    save_dtype: str = "float32"                # "float16" halves the checkpoint (zoo files)
    resume: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # The family objective's options (``--loss-option key=value``), e.g. MobileInst's
    # ``aux_semantic`` (weight of a training-only semantic head; 0 = the paper's losses only).
    loss_options: dict[str, Any] = field(default_factory=dict)
    # Components whose weights stay as loaded (e.g. a backbone from --weights): not
    # optimised, kept in eval mode (BatchNorm statistics frozen), no backward through them.
    freeze: tuple[str, ...] = ()
    # Video families: the near-online stride S of the val tracking (default: the strategy's).
    val_interval: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["input_size"] is not None:
            d["input_size"] = list(d["input_size"])
        return d

    def validate(self) -> None:
        if self.epochs is not None and self.iters is not None:
            raise EdgesegError("both --epochs and --iters given", "pass one of them")
        if self.iters is not None and self.iters < 1:
            raise EdgesegError(f"--iters must be at least 1, got {self.iters}", "e.g. --iters 2000")
        if self.epochs is not None and self.epochs <= 0:
            raise EdgesegError(f"--epochs must be positive, got {self.epochs}", "e.g. --epochs 12")
        if self.batch_size < 1:
            raise EdgesegError(f"--batch-size must be at least 1, got {self.batch_size}", "use --batch-size 2 or more")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise EdgesegError(f"--lr must be a positive number, got {self.lr}", "e.g. --lr 5e-4")
        if not 0.0 <= self.ema < 1.0:
            raise EdgesegError(f"--ema must be in [0, 1), got {self.ema}", "e.g. --ema 0.999 (0: off)")
        if self.threads is not None and self.threads < 1:
            raise EdgesegError(f"--threads must be at least 1, got {self.threads}", "e.g. --threads 2")
        if self.save_dtype not in ("float32", "float16"):
            raise EdgesegError(f"cannot store weights as {self.save_dtype!r}", "use float32 or float16")
        if (self.val_json is None) != (self.val_images is None):
            raise EdgesegError("--val-dataset and --val-images go together", "pass both, or neither")
        if Path(self.output).suffix != ".safetensors":
            raise EdgesegError(f"the output must be a .safetensors file, got {self.output}",
                               "e.g. -o runs/shapes.safetensors (weights + embedded manifest)")


@dataclass
class TrainResult:
    output: str
    state: str
    model: str
    model_cfg: dict[str, Any]
    iterations: int              # total reached
    started_at: int              # iteration the run began at (> 0 when resumed)
    seconds: float               # this invocation's training time (val excluded)
    losses: list[float]          # per-iteration total loss of this invocation
    val: dict[str, Any] | None   # final val AP figures (AP, AP50, ...), None without a val split
    val_history: list[dict[str, Any]] = field(default_factory=list)
    init: str | None = None      # what --weights loaded, in words
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------ pieces
def _param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on biases, norm scales and the learned query embeddings: decaying them
    # only pulls them to zero without regularising anything (DETR/SparseInst practice).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(("query_feat", "query_pos")) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _load_init(model, weights: str, model_name: str, log) -> str:
    """Load initial weights leniently (fine-tuning), say what was kept and what was not."""
    from edgeseg.models.checkpoints import load_weights, read_state_dict
    from edgeseg.models.pretrained import resolve_weights

    path = resolve_weights(weights, model_name)
    report = load_weights(model, path, strict=False)
    text = report.summary()
    state, meta = read_state_dict(path)
    own = model.state_dict()
    reshaped = [k for k in report.ignored if k in own and k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if reshaped:
        # Another class count (or query count) in the file: those layers start fresh.
        saved_classes = _saved_num_classes(meta)
        if saved_classes is not None and saved_classes != model.model_cfg.get("num_classes"):
            log(f"class head re-initialised: {path.name} predicts {saved_classes} classes, the dataset has "
                f"{model.model_cfg.get('num_classes')} ({len(reshaped)} tensors, e.g. {reshaped[0]})")
        else:
            log(f"re-initialised {len(reshaped)} tensor(s) whose shape differs in {path.name} "
                f"(e.g. {reshaped[0]}: {tuple(state[reshaped[0]].shape)} in the file, "
                f"{tuple(own[reshaped[0]].shape)} here)")
    saved_as = meta.get("edgeseg.model")
    if saved_as and saved_as != model_name:
        log(f"note: {path.name} was saved from {saved_as}; only the layers that match {model_name} were loaded")
    log(text)
    return text


def _saved_num_classes(meta: dict[str, str]) -> int | None:
    """The class count recorded in an edgeseg checkpoint's embedded manifest."""
    import json

    from edgeseg.export.manifest import CHECKPOINT_METADATA_KEY

    try:
        n = json.loads(meta.get(CHECKPOINT_METADATA_KEY, "{}")).get("model_cfg", {}).get("num_classes")
    except (ValueError, AttributeError):
        return None
    return int(n) if isinstance(n, int) else None


def evaluate_model(model, dataset, limit: int | None = None) -> dict[str, Any]:
    """Mask AP of the PyTorch model on a COCO dataset, via the same code as ``edgeseg eval``
    (the model's family decoder)."""
    from edgeseg.eval.coco import evaluate_detections, predict_dataset
    from edgeseg.models.registry import family
    from edgeseg.runtimes.torch_eager import module_outputs

    decode = family(model.family).load("decoder")
    was_training = model.training
    model.eval()

    images = dataset.images[:limit] if limit else dataset.images
    try:
        dets = predict_dataset(functools.partial(module_outputs, model), dataset, model.input_spec, decode, images,
                               description="val AP")
        figures = evaluate_detections(dataset, dets, image_ids=[im.id for im in images])
    finally:
        model.train(was_training)
    return figures


def evaluate_video_model(model, dataset, limit: int | None = None, interval: int | None = None) -> dict[str, Any]:
    """VIS AP of the PyTorch model on a YouTube-VIS dataset: every video tracked by the
    family's video strategy (as ``edgeseg track --dataset`` does, on the module instead of
    an exported graph), scored by :func:`edgeseg.eval.vis.evaluate_vis`."""
    from edgeseg.eval.vis import evaluate_vis
    from edgeseg.models.registry import family
    from edgeseg.track.results import label_to_category, video_results
    from edgeseg.utils.progress import track as progress

    strategy = family(model.family).load("video")
    if not hasattr(strategy, "open_module"):
        raise EdgesegError(f"the {model.family} video strategy cannot run a PyTorch module",
                           "validate by exporting the checkpoint and running `edgeseg track --dataset`")
    videos = dataset.videos[:limit] if limit else dataset.videos
    was_training = model.training
    model.eval()
    category_of = label_to_category(dataset.categories)
    results: list[dict[str, Any]] = []
    try:
        session = strategy.open_module(model)
        interval = interval or session.default_interval
        tracker = session.tracker(interval, strategy.config())
        for video in progress(videos, "val VIS AP", total=len(videos)):
            tracker.reset()
            for i in range(video.length):
                tracker.step(dataset.load_frame(video, i))
            results += video_results(tracker.finish(), video.id, category_of)
    finally:
        model.train(was_training)
    figures = evaluate_vis(dataset, results, video_ids=[v.id for v in videos])
    return {**figures, "interval": interval}


_TRAIN_DATA = ("coco", "ytvis")


def _family_for(model_name: str):
    """The family of MODEL, refused up front when it cannot be trained."""
    from edgeseg.models.registry import family, model_entry

    fam = family(model_entry(model_name).family)
    if fam.objective is None:
        raise EdgesegError(f"the {fam.name} family has no training objective, so {model_name} cannot be trained here",
                           "train a model of a family with one (`edgeseg models` shows them)")
    if fam.train_data not in _TRAIN_DATA:
        raise EdgesegError(f"{model_name} trains on {fam.train_data} data, which `edgeseg train` does not read",
                           f"families train on {' or '.join(_TRAIN_DATA)}")
    return fam


def _open_datasets(fam, cfg: TrainConfig):
    """(train, val) datasets of the family's kind: COCO images or YouTube-VIS videos."""
    if fam.train_data == "ytvis":
        from edgeseg.data.ytvis import YtvisDataset

        train_set = YtvisDataset(cfg.train_json, cfg.train_images)
        val_set = YtvisDataset(cfg.val_json, cfg.val_images) if cfg.val_json else None
    else:
        from edgeseg.data.coco import CocoDataset

        train_set = CocoDataset(cfg.train_json, cfg.train_images)
        val_set = CocoDataset(cfg.val_json, cfg.val_images) if cfg.val_json else None
    return train_set, val_set


def _apply_freeze(model, names: tuple[str, ...]) -> list[str]:
    """Freeze the named components (their parameters untrained, their modules in eval mode)."""
    comps = model.component_map.names()
    unknown = [n for n in names if n not in comps]
    if unknown:
        raise EdgesegError(f"--freeze {','.join(unknown)}: not a component of {model.model_name}",
                           f"components: {', '.join(comps)}")
    if set(names) == set(comps):
        raise EdgesegError("--freeze names every component: nothing would train", "leave at least one out")
    modules = dict(model.named_modules())
    frozen = []
    for n in names:
        sub = modules[model.component_map.module_path(n)]
        for p in sub.parameters():
            p.requires_grad_(False)
        frozen.append(model.component_map.module_path(n))
    return frozen


def _set_train_mode(modules, frozen: list[str]) -> None:
    for m in modules.values():
        m.train()
    if frozen:
        named = dict(modules["model"].named_modules())
        for path in frozen:
            named[path].eval()


def _input_size(cfg: TrainConfig, stride: int) -> tuple[int, int] | None:
    """The requested input size, checked up front (before datasets are read)."""
    if cfg.input_size is None:
        return None
    from edgeseg.models.contract import input_size_of

    return input_size_of(cfg.input_size, stride)


class WeightAverage:
    """An exponential moving average of a model's weights (and BatchNorm statistics).

    ``decay`` ramps up as ``(1 + t) / (10 + t)`` over the first iterations (t: the run's
    iteration, so a resumed run continues the same ramp), so the average does not sit on
    the initial weights; integer buffers (BatchNorm's batch counters) are copied.
    """

    def __init__(self, model, decay: float):
        import copy

        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def update(self, model, iteration: int) -> None:
        import torch

        d = min(self.decay, (1.0 + iteration) / (10.0 + iteration))
        with torch.no_grad():
            live = model.state_dict()
            for name, avg in self.model.state_dict().items():
                if avg.is_floating_point():
                    avg.mul_(d).add_(live[name].detach(), alpha=1.0 - d)
                else:
                    avg.copy_(live[name])


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


# ------------------------------------------------------------------------------ the loop
def train(cfg: TrainConfig, log=None, step_callback=None) -> TrainResult:
    """Run (or resume) training; returns what happened. ``log(str)`` receives messages,
    ``step_callback(StepInfo)`` every iteration (the CLI's progress bar)."""
    import torch

    from edgeseg.models import create_model
    from edgeseg.train.log import StepInfo
    from edgeseg.train.schedule import lr_at
    from edgeseg.train.state import load_state, save_checkpoint, save_state, state_path

    log = log or (lambda text: None)
    cfg.validate()
    fam = _family_for(cfg.model)
    objective_cls = fam.load("objective")
    objective_cls.parse_options(cfg.loss_options)  # a wrong --loss-option fails before any work
    size = _input_size(cfg, fam.input_stride)
    # Datasets first: a wrong path fails in milliseconds, before a model is built.
    train_set, val_set = _open_datasets(fam, cfg)
    if val_set is not None and val_set.class_names != train_set.class_names:
        raise EdgesegError(f"the val categories ({', '.join(val_set.class_names)}) differ from the training "
                           f"categories ({', '.join(train_set.class_names)})",
                           "validate on a split of the same dataset")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    torch.manual_seed(cfg.seed)  # the initial weights are part of what the seed fixes
    num_classes = len(train_set.class_names)
    model_cfg: dict[str, Any] = {"num_classes": num_classes}
    if size is not None:
        model_cfg["input_size"] = size
    model = create_model(cfg.model, **model_cfg)
    # NHWC convolutions and BatchNorm cost ~30% less CPU time than NCHW here (oneDNN);
    # values are the same, and the saved tensors are made contiguous again.
    model = model.to(memory_format=torch.channels_last)
    clips = fam.train_data == "ytvis"
    if clips:
        from edgeseg.train.clip_data import ClipTrainData

        frames = int(model.input_spec.frames or 1)
        data = ClipTrainData(train_set, model.input_spec, frames, cfg.augment, seed=cfg.seed)
    else:
        from edgeseg.train.data import TrainData

        frames = 1
        data = TrainData(train_set, model.input_spec, cfg.augment, seed=cfg.seed)
    if cfg.batch_size * frames < 2:
        # BatchNorm statistics of one image at the coarsest levels (1x1 at 64x64) are
        # undefined: PyTorch raises mid-forward. Say so up front.
        raise EdgesegError(f"--batch-size must be at least 2 (BatchNorm needs 2 images per batch), "
                           f"got {cfg.batch_size}", "use --batch-size 2 or more")
    total = cfg.iters if cfg.iters is not None else \
        max(1, math.ceil((cfg.epochs if cfg.epochs is not None else 12) * len(train_set) / cfg.batch_size))
    warmup = cfg.warmup_iters if cfg.warmup_iters is not None else min(200, total // 20)

    init_text = _load_init(model, cfg.weights, cfg.model, log) if cfg.weights else None
    frozen = _apply_freeze(model, tuple(cfg.freeze))
    if frozen:
        log(f"frozen (not trained, BatchNorm statistics fixed): {', '.join(cfg.freeze)}")
    # Training-only modules (auxiliary heads) live in the objective: optimised, kept in
    # the resumable state, never in the checkpoint.
    objective = objective_cls(model, num_classes, **cfg.loss_options).to(
        memory_format=torch.channels_last)
    modules: dict[str, torch.nn.Module] = {"model": model, "objective": objective}
    _set_train_mode(modules, frozen)
    optimizer = torch.optim.AdamW([g for m in modules.values() for g in _param_groups(m, cfg.weight_decay)],
                                  lr=cfg.lr)
    ema = WeightAverage(model, cfg.ema) if cfg.ema else None
    # What is validated and saved: the averaged weights when --ema is on.
    kept = ema.model if ema is not None else model
    state_modules = {**modules, "ema": ema.model} if ema is not None else modules
    state_file = state_path(cfg.output)
    start, val_history, seconds_before = 0, [], 0.0
    if cfg.resume:
        info = load_state(state_file, state_modules, optimizer)
        if info.get("model") != cfg.model:
            raise EdgesegError(f"the training state {state_file.name} is for {info.get('model')}, not {cfg.model}",
                               "resume with the same MODEL, or delete the state file to start over")
        start, val_history = int(info["iteration"]), list(info.get("val_history", []))
        seconds_before = float(info.get("seconds", 0.0))
        log(f"resumed {state_file.name} at iteration {start}/{total}")
        if start >= total:
            log("nothing left to train: raise --iters/--epochs to continue")

    def record(val: dict[str, Any] | None, done: int, seconds: float) -> dict[str, Any]:
        return {"dataset": str(cfg.train_json), ("videos" if clips else "images"): len(train_set),
                "val_dataset": cfg.val_json,
                "iterations": done, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed,
                "init": str(cfg.weights) if cfg.weights else None, "seconds": round(seconds, 1),
                "val": None if val is None else {k: v for k, v in val.items() if k != "per_class"},
                "config": cfg.to_dict()}

    def checkpoint(done: int, seconds: float, val: dict[str, Any] | None) -> None:
        save_checkpoint(kept, cfg.output, record(val, done, seconds), dtype=cfg.save_dtype)
        save_state(state_file, state_modules, optimizer, {"model": cfg.model, "iteration": done, "seconds": seconds,
                                                  "val_history": val_history, "config": cfg.to_dict()})

    def validate(done: int) -> dict[str, Any]:
        if clips:
            figures = evaluate_video_model(kept, val_set, cfg.val_limit, cfg.val_interval)
        else:
            figures = evaluate_model(kept, val_set, cfg.val_limit)
        _set_train_mode(modules, frozen)
        val_history.append({"iteration": done, **{k: figures[k] for k in ("AP", "AP50", "AP75")}})
        log(f"val {'VIS' if clips else 'mask'} AP at iteration {done}: AP {_fmt(figures['AP'])}  "
            f"AP50 {_fmt(figures['AP50'])}  AP75 {_fmt(figures['AP75'])}")
        return figures

    losses: list[float] = []
    smoothed = None
    train_seconds = 0.0
    val = None
    for it in range(start, total):
        t0 = time.perf_counter()
        lr = lr_at(it, total, cfg.lr, warmup, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(cfg.seed * 1_000_003 + it)  # any randomness in the model (drop path)
        images, targets = data.batch(it, cfg.batch_size)
        if images.ndim == 5:  # clips [B, T, 3, H, W]: NHWC frames, viewed back as clips
            images = images.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(
                0, images.shape[:2])
        else:
            images = images.contiguous(memory_format=torch.channels_last)
        out = objective(model, images, targets)
        loss = float(out.total.detach())
        if not math.isfinite(loss):
            raise EdgesegError(f"the loss became {loss} at iteration {it + 1} (parts: {out.parts})",
                               f"lower --lr (now {cfg.lr:g}) or keep --clip-grad on; the last good "
                               f"checkpoint is {cfg.output} if one was written")
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        if cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_([p for m in modules.values() for p in m.parameters() if p.requires_grad],
                                           cfg.clip_grad)
        optimizer.step()
        if ema is not None:
            ema.update(model, it)
        train_seconds += time.perf_counter() - t0

        losses.append(loss)
        smoothed = loss if smoothed is None else _EMA * smoothed + (1 - _EMA) * loss
        if step_callback is not None:
            step_callback(StepInfo(it + 1, total, loss, smoothed, out.parts, lr))
        done = it + 1
        val = None  # a periodic checkpoint records only a val run of its own weights, never an earlier one
        if val_set is not None and cfg.val_every and done % cfg.val_every == 0 and done < total:
            val = validate(done)
        if cfg.save_every and done % cfg.save_every == 0 and done < total:
            checkpoint(done, seconds_before + train_seconds, val)

    # The final figures always describe the final weights (not an earlier periodic run).
    val = validate(total) if val_set is not None else None
    checkpoint(total, seconds_before + train_seconds, val)
    return TrainResult(output=str(cfg.output), state=str(state_file), model=cfg.model,
                       model_cfg=dict(model.model_cfg), iterations=total, started_at=start,
                       seconds=round(train_seconds, 2), losses=losses, val=val, val_history=val_history,
                       init=init_text)
