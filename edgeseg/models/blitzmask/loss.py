"""BlitzMask's training objective: CenterNet's heatmap loss, box-size losses and a mask loss.

Targets are built per image on the output grid (stride 4), with cell ``(i, j)`` centred at
input pixel ``((j + 0.5) * 4, (i + 0.5) * 4)``:

* **heatmap**: for each instance, a Gaussian peak of value 1 at the cell holding its mask's
  centre of mass, with CenterNet's radius for the instance's box (overlap 0.7), maxed over
  instances of the same class. Loss: CenterNet's penalty-reduced focal loss (alpha 2,
  beta 4), summed and divided by the number of instances.
* **size**: at each instance's peak cell, the distances to the left, top, right and bottom
  sides of its box (the tight box of its mask), in cells. Loss: L1 (weight 0.1, as
  CenterNet's size loss) plus UnitBox's IoU loss ``-ln(IoU)`` of the two boxes anchored at
  the same cell (predictions clamped at 0 for it; L1 sees them raw, so negative sizes are
  pushed back up).
* **mask**: the instance's logits ``sum_k coefficients_k(peak) * spanning_set_k`` against
  its mask resized to the grid, inside its box (the decoder crops there too): per-pixel
  binary cross-entropy averaged over the box's cells and dice over the box, per instance,
  then averaged over instances, so a small object weighs as much as a large one.

Optionally (``aux_semantic`` > 0, off by default: the paper's losses only) a training-only
per-pixel class head on the FPN output (:mod:`edgeseg.train.auxiliary`): a dense class
signal for a backbone trained from scratch. It is never part of the model or its exports.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgeseg.errors import EdgesegError
from edgeseg.train.auxiliary import SemanticHead, semantic_loss
from edgeseg.train.losses import resize_targets
from edgeseg.train.objective import LossResult, Objective

FOCAL_ALPHA = 2.0   # CenterNet: (1 - p)^alpha on peaks, p^alpha elsewhere
FOCAL_BETA = 4.0    # (1 - Y)^beta: cells near a peak are penalised less
GAUSSIAN_OVERLAP = 0.7
_EPS = 1e-6


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = GAUSSIAN_OVERLAP) -> torch.Tensor:
    """CenterNet's radius: the largest corner shift that keeps a box of this size above
    ``min_overlap`` IoU with the original, in the three cases of CornerNet (the smallest
    of the three roots), elementwise over boxes given in cells."""
    h, w = height.float(), width.float()
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


@dataclass
class InstanceTargets:
    """One image's instances on the output grid."""

    labels: torch.Tensor      # [M] int64
    peaks: torch.Tensor       # [M, 2] int64 (row, col) of the centre-of-mass cell
    sizes: torch.Tensor       # [M, 4] float: left, top, right, bottom distances in cells
    boxes: torch.Tensor       # [M, 4] int64 cell ranges (x0, y0, x1, y1), end exclusive
    masks: torch.Tensor       # [M, h, w] soft masks on the grid
    heatmap: torch.Tensor     # [C, h, w]


def build_targets(labels: torch.Tensor, masks: torch.Tensor, num_classes: int, grid_hw: tuple[int, int],
                  stride: int) -> InstanceTargets:
    """Targets of one image from its ``labels`` ``[M]`` and input-size ``masks`` ``[M, H, W]``."""
    h, w = grid_hw
    heatmap = torch.zeros(num_classes, h, w)
    binary = masks > 0.5
    keep = binary.flatten(1).any(1)
    labels, masks, binary = labels[keep], masks[keep].float(), binary[keep]
    m = int(labels.numel())
    if m == 0:
        z = torch.zeros(0, 4)
        return InstanceTargets(labels, torch.zeros(0, 2, dtype=torch.int64), z, z.long(),
                               masks.new_zeros(0, h, w), heatmap)
    ys = torch.arange(masks.shape[1], dtype=torch.float32) + 0.5
    xs = torch.arange(masks.shape[2], dtype=torch.float32) + 0.5
    weight = masks * binary  # centre of mass of the mask (soft inside, nothing outside)
    total = weight.sum((1, 2)).clamp_min(_EPS)
    cy = (weight.sum(2) * ys).sum(1) / total
    cx = (weight.sum(1) * xs).sum(1) / total
    # Tight box (pixel edges) of the binary mask.
    rows, cols = binary.any(2), binary.any(1)
    y0 = rows.float().argmax(1).float()
    y1 = masks.shape[1] - rows.flip(1).float().argmax(1).float()
    x0 = cols.float().argmax(1).float()
    x1 = masks.shape[2] - cols.flip(1).float().argmax(1).float()
    # Peak cell and its centre in input pixels.
    pi = (cy / stride).floor().long().clamp(0, h - 1)
    pj = (cx / stride).floor().long().clamp(0, w - 1)
    py, px = (pi.float() + 0.5) * stride, (pj.float() + 0.5) * stride
    sizes = torch.stack([px - x0, py - y0, x1 - px, y1 - py], 1).clamp_min(0) / stride
    boxes = torch.stack([(x0 / stride).floor(), (y0 / stride).floor(), (x1 / stride).ceil(), (y1 / stride).ceil()],
                        1).long()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)

    radius = gaussian_radius((y1 - y0) / stride, (x1 - x0) / stride).clamp_min(0).floor()
    sigma = (2 * radius + 1) / 6
    gy = torch.arange(h, dtype=torch.float32)[None, :, None] - pi[:, None, None].float()
    gx = torch.arange(w, dtype=torch.float32)[None, None, :] - pj[:, None, None].float()
    gauss = torch.exp(-(gy ** 2 + gx ** 2) / (2 * sigma[:, None, None] ** 2))
    inside = (gy.abs() <= radius[:, None, None]) & (gx.abs() <= radius[:, None, None])
    gauss = gauss * inside
    for k in range(m):
        c = int(labels[k])
        heatmap[c] = torch.maximum(heatmap[c], gauss[k])
    return InstanceTargets(labels.long(), torch.stack([pi, pj], 1), sizes, boxes,
                           resize_targets(masks, (h, w)), heatmap)


def heatmap_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss, summed (not normalised)."""
    pos = target.eq(1).float()
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = logits.sigmoid()
    pos_loss = log_p * (1 - p) ** FOCAL_ALPHA * pos
    neg_loss = log_not_p * p ** FOCAL_ALPHA * (1 - target) ** FOCAL_BETA * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum())


def iou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """UnitBox: ``-ln(IoU)`` of (l, t, r, b) boxes sharing their anchor point, ``[N, 4]`` -> ``[N]``."""
    pred = pred.clamp_min(0)
    pl, pt, pr, pb = pred.unbind(1)
    tl, tt, tr, tb = target.unbind(1)
    area_p = (pl + pr) * (pt + pb)
    area_t = (tl + tr) * (tt + tb)
    inter = (torch.minimum(pl, tl) + torch.minimum(pr, tr)) * (torch.minimum(pt, tt) + torch.minimum(pb, tb))
    union = area_p + area_t - inter
    return -torch.log((inter + 1.0) / (union + 1.0))


def box_mask_loss(logits: torch.Tensor, target: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(BCE averaged over the box's cells, 1 - dice over the box) of one instance."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        zero = logits.sum() * 0.0
        return zero, zero
    lg, tg = logits[y0:y1, x0:x1], target[y0:y1, x0:x1]
    bce = F.binary_cross_entropy_with_logits(lg, tg, reduction="mean")
    p = lg.sigmoid()
    dice = 1 - (2 * (p * tg).sum() + 1.0) / ((p * p).sum() + (tg * tg).sum() + 1.0)
    return bce, dice


class BlitzMaskObjective(Objective):
    """The paper's losses on BlitzMask's four outputs (see the module docstring)."""

    @dataclass
    class Options:
        heatmap: float = 1.0
        size_l1: float = 0.1
        size_iou: float = 1.0
        mask_bce: float = 1.0
        mask_dice: float = 1.0
        aux_semantic: float = 0.0   # training-only per-pixel class loss on the FPN output (0: off)

    def __init__(self, model, num_classes: int, **options):
        super().__init__(model, num_classes, **options)
        o = self.options
        if not all(v >= 0 and math.isfinite(v) for v in dataclasses.asdict(o).values()):
            raise EdgesegError(f"loss weights must be finite and >= 0, got {dataclasses.asdict(o)}", "e.g. size_l1=0.1")
        self.stride = int(getattr(model, "output_stride", 4))
        self.semantic = SemanticHead(model.cfg.fpn_dim, num_classes) if o.aux_semantic > 0 else None

    def forward(self, model, images, targets) -> LossResult:
        # The model's own forward, spelled out to keep the FPN output for the auxiliary head.
        features = model.fpn(model.backbone(images))
        heatmap, size, coefficients, spanning_set = model.head(features)
        b, c, h, w = heatmap.shape
        built = [build_targets(t["labels"], t["masks"], c, (h, w), self.stride) for t in targets]
        num = max(sum(int(t.labels.numel()) for t in built), 1)
        gt_heatmap = torch.stack([t.heatmap for t in built]).to(heatmap)
        loss_heat = heatmap_focal_loss(heatmap, gt_heatmap) / num

        l1, iou, bce, dice = [], [], [], []
        for i, t in enumerate(built):
            if not t.labels.numel():
                continue
            pi, pj = t.peaks[:, 0], t.peaks[:, 1]
            pred_size = size[i, :, pi, pj].T                   # [M, 4]
            l1.append(F.l1_loss(pred_size, t.sizes, reduction="none").sum(1))
            iou.append(iou_loss(pred_size, t.sizes))
            coef = coefficients[i, :, pi, pj].T                 # [M, K]
            logits = torch.einsum("mk,khw->mhw", coef, spanning_set[i])
            for k in range(t.labels.numel()):
                a, d = box_mask_loss(logits[k], t.masks[k].to(logits), t.boxes[k])
                bce.append(a)
                dice.append(d)
        if l1:
            loss_l1 = torch.cat(l1).sum() / num
            loss_iou = torch.cat(iou).sum() / num
            loss_bce = torch.stack(bce).mean()
            loss_dice = torch.stack(dice).mean()
        else:
            # No instance in the batch: keep every output in the graph (zero gradient).
            loss_l1 = loss_iou = size.sum() * 0.0
            loss_bce = loss_dice = (coefficients.sum() + spanning_set.sum()) * 0.0
        o = self.options
        parts = {"heat": o.heatmap * loss_heat, "l1": o.size_l1 * loss_l1, "iou": o.size_iou * loss_iou,
                 "bce": o.mask_bce * loss_bce, "dice": o.mask_dice * loss_dice}
        if self.semantic is not None:
            parts["sem"] = o.aux_semantic * semantic_loss(self.semantic(features), targets)
        total = sum(parts.values())
        return LossResult(total, {k: float(v.detach()) for k, v in parts.items()})
