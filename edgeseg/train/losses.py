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

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from edgeseg.train.matcher import DICE_EPS, Match, match_image

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
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


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = FOCAL_ALPHA,
                       gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Elementwise focal loss (Lin et al. 2017), not reduced.

    ``alpha`` weighs positives (1 - alpha the negatives); ``(1 - p_t)^gamma`` down-weights
    the easy examples, i.e. the many queries that are confidently background.
    """
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def dice_loss(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 - dice`` per instance, ``[K, P]`` logits vs ``[K, P]`` soft targets -> ``[K]``."""
    probs = mask_logits.sigmoid()
    numerator = 2.0 * (probs * targets).sum(-1)
    denominator = (probs * probs).sum(-1) + (targets * targets).sum(-1)
    return 1.0 - numerator / (denominator + DICE_EPS)


@torch.no_grad()
def mask_iou(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of binarised predictions with binarised targets, ``[K, P]`` -> ``[K]`` (0 when both empty)."""
    pred = (mask_logits.sigmoid() >= IOU_PRED_THRESHOLD).float()
    tgt = (targets > IOU_TARGET_THRESHOLD).float()
    inter = (pred * tgt).sum(-1)
    union = pred.sum(-1) + tgt.sum(-1) - inter
    return inter / (union + 1e-6)


def resize_targets(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[M, H, W]`` masks -> ``[M, h, w]`` soft masks at the prediction's resolution."""
    if masks.numel() == 0:
        return masks.new_zeros((masks.shape[0], *size))
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks.float()
    return F.interpolate(masks[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


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
