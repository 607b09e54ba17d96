"""MobileInst's training losses (those of SparseInst, which MobileInst keeps).

After matching (``matcher.py``):

* classification: sigmoid focal loss (alpha 0.25, gamma 2) over *every* query and class;
  unmatched queries learn "no object" as all-zero targets. Summed, divided by the number
  of ground-truth instances in the batch.
* masks, matched queries only, at the prediction's 1/8 resolution (the targets are
  downsampled bilinearly, as SparseInst does): dice loss (summed, divided by the instance
  count) plus per-pixel BCE (mean).
* IoU-aware objectness, matched queries only: BCE of the objectness logit against the IoU
  of the predicted mask (probability >= 0.4) with its target (> 0.5). The IoU is a
  *target*, so it is computed without gradient: the objectness head learns to predict
  mask quality, and the mask head is not pushed by the objectness loss.

Weights (issue: "weights 2, 2, 1"): class 2, mask 2 (on dice and on BCE), objectness 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from edgeseg.errors import EdgesegError
from edgeseg.train.auxiliary import SemanticHead, semantic_loss
from edgeseg.train.losses import dice_loss, resize_targets, sigmoid_focal_loss
from edgeseg.train.matcher import Match, match_image
from edgeseg.train.objective import LossResult, Objective
# SparseInst binarises predictions at 0.4 (slightly generous) and targets at 0.5 for the IoU.
IOU_PRED_THRESHOLD = 0.4
IOU_TARGET_THRESHOLD = 0.5


@dataclass
class LossWeights:
    cls: float = 2.0
    dice: float = 2.0
    bce: float = 2.0
    objectness: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def mask_iou(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of binarised predictions with binarised targets, ``[K, P]`` -> ``[K]`` (0 when both empty)."""
    pred = (mask_logits.sigmoid() >= IOU_PRED_THRESHOLD).float()
    tgt = (targets > IOU_TARGET_THRESHOLD).float()
    inter = (pred * tgt).sum(-1)
    union = pred.sum(-1) + tgt.sum(-1) - inter
    return inter / (union + 1e-6)


@dataclass
class LossOutput:
    total: torch.Tensor
    parts: dict[str, float]      # weighted components, for logging
    matches: list[Match]
    ious: torch.Tensor           # matched IoUs (objectness targets), for logging / tests


def mobileinst_loss(logits: torch.Tensor, objectness: torch.Tensor, masks: torch.Tensor,
                    targets: list[dict[str, torch.Tensor]], weights: LossWeights | None = None) -> LossOutput:
    """The weighted loss of a batch.

    ``logits`` ``[B, N, C]``, ``objectness`` ``[B, N, 1]``, ``masks`` ``[B, N, h, w]``
    (raw model outputs); ``targets[b]`` has ``labels`` ``[M]`` (0-based int64) and
    ``masks`` ``[M, H, W]`` in [0, 1] (any resolution; resized to ``h, w``).
    """
    w = weights or LossWeights()
    b, n, c = logits.shape
    size = tuple(masks.shape[-2:])
    small = [resize_targets(t["masks"], size) for t in targets]
    matches = [match_image(logits[i], masks[i], targets[i]["labels"], small[i]) for i in range(b)]
    num_instances = max(sum(int(t["labels"].numel()) for t in targets), 1)

    cls_targets = torch.zeros_like(logits)
    for i, m in enumerate(matches):
        if len(m):
            cls_targets[i, m.queries, targets[i]["labels"][m.targets]] = 1.0
    loss_cls = sigmoid_focal_loss(logits, cls_targets).sum() / num_instances

    batch_idx = torch.cat([torch.full((len(m),), i, dtype=torch.int64) for i, m in enumerate(matches)])
    query_idx = torch.cat([m.queries for m in matches])
    if query_idx.numel():
        pred = masks[batch_idx, query_idx].flatten(1)
        tgt = torch.cat([small[i][m.targets] for i, m in enumerate(matches)]).flatten(1).to(pred)
        loss_dice = dice_loss(pred, tgt).sum() / num_instances
        loss_bce = F.binary_cross_entropy_with_logits(pred, tgt, reduction="mean")
        ious = mask_iou(pred, tgt)
        loss_obj = F.binary_cross_entropy_with_logits(objectness[batch_idx, query_idx, 0], ious, reduction="mean")
    else:
        # No instance in the batch: the mask and objectness terms have nothing to learn
        # from, but stay in the graph (as zeros) so every parameter gets a gradient.
        loss_dice = loss_bce = masks.sum() * 0.0
        loss_obj = objectness.sum() * 0.0
        ious = logits.new_zeros(0)

    parts = {"cls": w.cls * loss_cls, "dice": w.dice * loss_dice, "bce": w.bce * loss_bce,
             "obj": w.objectness * loss_obj}
    total = sum(parts.values())
    return LossOutput(total, {k: float(v.detach()) for k, v in parts.items()}, matches, ious)


class MobileInstObjective(Objective):
    """SparseInst's matching and losses on MobileInst's outputs, plus a training-only
    semantic head on the mask features (``aux_semantic``, see :mod:`edgeseg.train.auxiliary`)."""

    @dataclass
    class Options:
        cls: float = 2.0
        dice: float = 2.0
        bce: float = 2.0
        objectness: float = 1.0
        aux_semantic: float = 1.0   # weight of the auxiliary semantic loss (0: the paper's losses only)

    def __init__(self, model, num_classes: int, **options):
        super().__init__(model, num_classes, **options)
        o = self.options
        if not all(v >= 0 for v in (o.cls, o.dice, o.bce, o.objectness, o.aux_semantic)):
            raise EdgesegError(f"loss weights must be >= 0, got {dataclasses.asdict(o)}", "e.g. aux_semantic=1.0")
        self.weights = LossWeights(o.cls, o.dice, o.bce, o.objectness)
        self.semantic = SemanticHead(model.mask_dim, num_classes) if o.aux_semantic > 0 else None

    def forward(self, model, images, targets) -> LossResult:
        logits, objectness, _kernels, features, masks = model(images)
        out = mobileinst_loss(logits, objectness, masks, targets, self.weights)
        total, parts = out.total, dict(out.parts)
        if self.semantic is not None:
            aux = self.options.aux_semantic * semantic_loss(self.semantic(features), targets)
            parts["sem"] = float(aux.detach())
            total = total + aux
        return LossResult(total, parts)
