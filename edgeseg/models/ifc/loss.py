"""IFC's training objective: clip-level set prediction (DETR's losses on space-time masks).

For every clip of the batch the N_q predictions are matched one-to-one to the clip's
ground-truth instances (an instance = one object over the T frames, its mask empty on the
frames it is absent from). The matching maximises ``dice * w_dice + p(class) * w_class``
with the dice coefficient of the *whole space-time mask* (all T frames at once), as the
paper's clip-level matching; scipy's ``linear_sum_assignment`` solves it.

Losses, over the whole clip, as the paper:

* class: softmax cross-entropy over K classes + "no object", the no-object class weighted
  ``no_object`` (0.1: down-weighted by 10) because most queries are background;
* masks of matched queries, on the T frames at the prediction's 1/8 grid (targets
  resized bilinearly): sigmoid focal loss (mean over the space-time pixels) and dice loss,
  each summed over instances and divided by the instance count of the batch.

Weights: class 1, focal 3, dice 3 (the official configuration's MASK_WEIGHT / DICE_WEIGHT),
and the same losses on every decoder layer's predictions (deep supervision, ``aux=1``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgeseg.errors import EdgesegError
from edgeseg.train.losses import resize_targets, sigmoid_focal_loss
from edgeseg.train.matcher import Match, match_from_score
from edgeseg.train.objective import LossResult, Objective


def clip_dice_coefficient(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[N, P]`` logits vs ``[M, P]`` soft targets -> ``[N, M]`` smoothed dice coefficients
    (``(2 |a.b| + 1) / (|a| + |b| + 1)``, P = every pixel of every frame of the clip)."""
    probs = mask_logits.sigmoid()
    numerator = 2.0 * probs @ targets.t()
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return (numerator + 1.0) / (denominator + 1.0)


def clip_dice_loss(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 - dice`` per matched pair, ``[K, P]`` -> ``[K]`` (same smoothing as the matching)."""
    probs = mask_logits.sigmoid()
    numerator = 2.0 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)


@torch.no_grad()
def match_clip(class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor,
               target_masks: torch.Tensor, cost_class: float = 1.0, cost_dice: float = 3.0) -> Match:
    """Match the N queries of one clip to its M instances.

    ``class_logits [N, K+1]``, ``mask_logits [N, T, h, w]``, ``labels [M]`` (0-based),
    ``target_masks [M, T, h, w]`` in [0, 1].
    """
    if labels.numel() == 0:
        return match_from_score(np.zeros((class_logits.shape[0], 0), dtype=np.float32))
    prob = class_logits.float().softmax(-1)[:, labels]
    dice = clip_dice_coefficient(mask_logits.float().flatten(1), target_masks.float().flatten(1))
    return match_from_score(cost_dice * dice + cost_class * prob)


@dataclass
class ClipLoss:
    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    matches: list[Match]


def clip_set_loss(logits: torch.Tensor, masks: torch.Tensor, targets: list[dict[str, torch.Tensor]],
                  small: list[torch.Tensor], num_instances: float, weights) -> ClipLoss:
    """The losses of one decoder layer: ``logits [B, N, K+1]``, ``masks [B, N, T, h, w]``;
    ``small[b]`` the targets of clip b at the mask grid ``[M, T, h, w]``."""
    b, n, k1 = logits.shape
    matches = [match_clip(logits[i], masks[i], targets[i]["labels"], small[i], weights.match_class,
                          weights.match_dice) for i in range(b)]
    target_classes = torch.full((b, n), k1 - 1, dtype=torch.int64)
    for i, m in enumerate(matches):
        if len(m):
            target_classes[i, m.queries] = targets[i]["labels"][m.targets]
    class_weight = torch.ones(k1, dtype=logits.dtype)
    class_weight[-1] = weights.no_object
    loss_cls = F.cross_entropy(logits.transpose(1, 2), target_classes, class_weight)

    batch_idx = torch.cat([torch.full((len(m),), i, dtype=torch.int64) for i, m in enumerate(matches)])
    query_idx = torch.cat([m.queries for m in matches])
    if query_idx.numel():
        pred = masks[batch_idx, query_idx].flatten(1)
        tgt = torch.cat([small[i][m.targets] for i, m in enumerate(matches)]).flatten(1).to(pred)
        loss_focal = sigmoid_focal_loss(pred, tgt).mean(1).sum() / num_instances
        loss_dice = clip_dice_loss(pred, tgt).sum() / num_instances
    else:
        # No instance in the batch: the mask terms learn nothing but stay in the graph
        # (as zeros) so every parameter still gets a gradient.
        loss_focal = loss_dice = masks.sum() * 0.0
    parts = {"cls": weights.cls * loss_cls, "focal": weights.focal * loss_focal, "dice": weights.dice * loss_dice}
    return ClipLoss(sum(parts.values()), parts, matches)


class IFCObjective(Objective):
    """Clip-level Hungarian matching and DETR's losses on IFC's outputs (see the module doc)."""

    @dataclass
    class Options:
        cls: float = 1.0
        focal: float = 3.0
        dice: float = 3.0
        no_object: float = 0.1      # weight of the "no object" class in the class loss
        match_class: float = 1.0
        match_dice: float = 3.0
        aux: float = 1.0            # weight of the deep-supervision losses of the earlier decoder layers

    def __init__(self, model, num_classes: int, **options):
        super().__init__(model, num_classes, **options)
        o = self.options
        values = dataclasses.asdict(o)
        if not all(v >= 0 for v in values.values()) or not 0 < o.no_object <= 1:
            raise EdgesegError(f"loss weights must be >= 0 and no_object in (0, 1], got {values}",
                               "e.g. no_object=0.1 (IFC's down-weighting of the background class by 10)")

    def forward(self, model, clips, targets) -> LossResult:
        if clips.ndim != 5:
            raise EdgesegError(f"IFC trains on clips [B, T, 3, H, W], got {tuple(clips.shape)}",
                               "train it on YouTube-VIS-format videos")
        logits, masks = model.forward_all_layers(clips)  # [L, B, N, K+1], [L, B, N, T, h, w]
        grid = tuple(masks.shape[-2:])
        small = []
        for t in targets:
            m = t["masks"]
            if m.ndim != 4:
                raise EdgesegError(f"clip targets must be [M, T, H, W] masks, got {tuple(m.shape)}",
                                   "build targets with edgeseg.train.clip_data")
            flat = resize_targets(m.flatten(0, 1), grid)
            small.append(flat.reshape(m.shape[0], m.shape[1], *grid))
        num_instances = max(sum(int(t["labels"].numel()) for t in targets), 1)
        layers = logits.shape[0]
        total = logits.new_zeros(())
        parts: dict[str, float] = {}
        for layer in range(layers):
            scale = 1.0 if layer == layers - 1 else self.options.aux
            if scale == 0:
                continue
            out = clip_set_loss(logits[layer], masks[layer], targets, small, num_instances, self.options)
            total = total + scale * out.total
            for k, v in out.parts.items():
                key = k if layer == layers - 1 else "aux"
                parts[key] = parts.get(key, 0.0) + scale * float(v.detach())
        return LossResult(total, parts)
