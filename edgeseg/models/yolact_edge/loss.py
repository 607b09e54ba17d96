"""YOLACT's training losses (``MultiBoxLoss`` of dbolya/yolact, which YolactEdge keeps).

Per image, priors are matched to ground-truth boxes (the tight boxes of the masks): IoU
>= 0.5 positive, < 0.4 background, in between ignored, and every ground truth keeps its
best prior whatever the IoU (SSD matching). Then:

* **class** (C): softmax cross-entropy over background + classes, with online hard
  negative mining: all positives and the 3x as many background priors with the highest
  background loss;
* **box** (B): smooth-L1 on the SSD-encoded offsets of the positives (weight 1.5);
* **mask** (M): for each positive (at most 100 per image, sampled), the mask
  sigmoid(prototypes x coefficients) against its ground truth downsampled to the
  prototypes and binarised, per-pixel BCE *inside the ground-truth box only*, normalised
  by the box area (the official ``mask_proto_normalize_emulate_roi_pooling``), weight
  6.125 / (prototype height x width);
* **semantic** (S): a 1x1 conv on P3 predicting per-class masks, sigmoid BCE against the
  union of each class's masks (weight 1). Training-only: the conv lives in this objective
  (``semantic_seg_conv``), never in the checkpoint or an exported graph.

B, C and M are divided by the number of positives in the batch, S by the batch size.
Image training leaves FeatFlowNet untouched (its parameters are frozen here): the paper
trains it afterwards on video with everything else frozen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.errors import EdgesegError
from edgeseg.models.yolact_edge.family import BOX_VARIANCES
from edgeseg.models.yolact_edge.priors import make_priors
from edgeseg.train.objective import LossResult, Objective


def masks_to_boxes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight relative boxes ``(x0, y0, x1, y1)`` of masks ``[M, H, W]`` (> 0.5), and which are non-empty."""
    m, h, w = masks.shape
    binary = masks > 0.5
    rows, cols = binary.any(2), binary.any(1)                       # [M, H], [M, W]
    valid = rows.any(1)
    ar_h = torch.arange(h, dtype=torch.float32)
    ar_w = torch.arange(w, dtype=torch.float32)
    big = float(max(h, w) + 1)
    y0 = torch.where(rows, ar_h, big).amin(1)
    y1 = torch.where(rows, ar_h, -1.0).amax(1) + 1
    x0 = torch.where(cols, ar_w, big).amin(1)
    x1 = torch.where(cols, ar_w, -1.0).amax(1) + 1
    boxes = torch.stack([x0 / w, y0 / h, x1 / w, y1 / h], dim=1)
    return boxes, valid


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)


def point_form(priors: torch.Tensor) -> torch.Tensor:
    return torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1)


def encode(matched: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    v0, v1 = BOX_VARIANCES
    centre = (matched[:, :2] + matched[:, 2:]) / 2
    size = (matched[:, 2:] - matched[:, :2]).clamp(min=1e-6)
    return torch.cat([(centre - priors[:, :2]) / (v0 * priors[:, 2:]), torch.log(size / priors[:, 2:]) / v1], dim=1)


@dataclass
class Match:
    conf_t: torch.Tensor   # [P] int64: 0 background, c+1 class c, -1 ignored
    loc_t: torch.Tensor    # [P, 4] encoded offsets
    idx_t: torch.Tensor    # [P] index of the matched ground truth
    boxes: torch.Tensor    # [M, 4] ground-truth boxes used


def match_priors(boxes: torch.Tensor, labels: torch.Tensor, priors: torch.Tensor,
                 pos_threshold: float = 0.5, neg_threshold: float = 0.4) -> Match:
    """SSD / YOLACT matching of one image (``boxes`` relative point form, ``priors`` centre-size)."""
    num_p = priors.shape[0]
    if boxes.shape[0] == 0:
        return Match(torch.zeros(num_p, dtype=torch.int64), torch.zeros(num_p, 4), torch.zeros(num_p, dtype=torch.int64),
                     boxes)
    overlaps = box_iou(boxes, point_form(priors))                    # [M, P]
    best_truth_overlap, best_truth_idx = overlaps.max(0)
    # Every ground truth keeps its best prior, highest overlaps first (official order).
    work = overlaps.clone()
    for _ in range(boxes.shape[0]):
        best_prior_overlap, best_prior_idx = work.max(1)
        j = int(best_prior_overlap.argmax())
        i = int(best_prior_idx[j])
        work[:, i] = -1
        work[j, :] = -1
        best_truth_overlap[i] = 2.0
        best_truth_idx[i] = j
    conf = labels[best_truth_idx] + 1
    conf = torch.where(best_truth_overlap < pos_threshold, torch.full_like(conf, -1), conf)
    conf = torch.where(best_truth_overlap < neg_threshold, torch.zeros_like(conf), conf)
    return Match(conf, encode(boxes[best_truth_idx], priors), best_truth_idx, boxes)


def ohem_conf_loss(conf: torch.Tensor, conf_t: torch.Tensor, negpos_ratio: int = 3) -> torch.Tensor:
    """Softmax CE over positives + the hardest ``negpos_ratio`` x as many negatives (summed)."""
    b, p, c = conf.shape
    pos = conf_t > 0
    with torch.no_grad():
        background_loss = torch.logsumexp(conf, dim=-1) - conf[..., 0]      # [B, P]
        background_loss = background_loss.masked_fill(pos | (conf_t < 0), 0.0)
        rank = background_loss.argsort(dim=1, descending=True).argsort(dim=1)
        num_neg = (negpos_ratio * pos.sum(1, keepdim=True)).clamp(max=p - 1)
        neg = (rank < num_neg) & ~pos & (conf_t >= 0)
    chosen = pos | neg
    return F.cross_entropy(conf[chosen], conf_t[chosen], reduction="sum")


def crop_region(h: int, w: int, boxes: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """``[N, h, w]`` float mask of each relative box (+ ``padding`` pixels), as the official ``crop``."""
    x0 = (torch.minimum(boxes[:, 0], boxes[:, 2]) * w - padding).clamp(min=0)
    x1 = (torch.maximum(boxes[:, 0], boxes[:, 2]) * w + padding).clamp(max=w)
    y0 = (torch.minimum(boxes[:, 1], boxes[:, 3]) * h - padding).clamp(min=0)
    y1 = (torch.maximum(boxes[:, 1], boxes[:, 3]) * h + padding).clamp(max=h)
    cols = torch.arange(w, dtype=torch.float32)
    rows = torch.arange(h, dtype=torch.float32)
    in_x = (cols[None] >= x0[:, None]) & (cols[None] < x1[:, None])
    in_y = (rows[None] >= y0[:, None]) & (rows[None] < y1[:, None])
    return (in_y[:, :, None] & in_x[:, None, :]).float()


class YolactObjective(Objective):
    """YOLACT's matching and losses on YolactEdge's outputs (see the module docstring)."""

    @dataclass
    class Options:
        conf_alpha: float = 1.0
        bbox_alpha: float = 1.5
        mask_alpha: float = 6.125
        semantic_alpha: float = 1.0     # the auxiliary semantic segmentation loss (0: off)
        negpos_ratio: int = 3           # OHEM: negatives per positive
        pos_threshold: float = 0.5
        neg_threshold: float = 0.4
        masks_to_train: int = 100       # positives per image in the mask loss (sampled beyond)

    def __init__(self, model, num_classes: int, **options):
        super().__init__(model, num_classes, **options)
        o = self.options
        if min(o.conf_alpha, o.bbox_alpha, o.mask_alpha, o.semantic_alpha) < 0:
            raise EdgesegError(f"loss weights must be >= 0, got {dataclasses.asdict(o)}", "e.g. semantic_alpha=1")
        if not 0 < o.neg_threshold <= o.pos_threshold <= 1:
            raise EdgesegError(f"thresholds need 0 < neg ({o.neg_threshold}) <= pos ({o.pos_threshold}) <= 1",
                               "YOLACT uses pos_threshold=0.5, neg_threshold=0.4")
        if o.negpos_ratio < 1 or o.masks_to_train < 1:
            raise EdgesegError("negpos_ratio and masks_to_train must be at least 1", "YOLACT uses 3 and 100")
        self.input_hw = (model.input_spec.height, model.input_spec.width)
        self.semantic_seg_conv = (nn.Conv2d(model.cfg.fpn_channels, num_classes, 1)
                                  if o.semantic_alpha > 0 else None)
        # FeatFlowNet trains on video afterwards, with everything else frozen (the paper).
        model.flow_net.requires_grad_(False)
        self._priors: dict[tuple, torch.Tensor] = {}

    def priors(self, p3_hw: tuple[int, int], image_hw: tuple[int, int]) -> torch.Tensor:
        key = (*p3_hw, *image_hw)
        if key not in self._priors:
            # Anchors keep their configured pixel size on training crops of another size.
            scale = (self.input_hw[0] / image_hw[0], self.input_hw[1] / image_hw[1])
            self._priors[key] = torch.from_numpy(make_priors(p3_hw, scale))
        return self._priors[key]

    def forward(self, model, images, targets) -> LossResult:
        o = self.options
        loc, conf, coef, proto, p3 = model.forward_train(images)
        b = images.shape[0]
        priors = self.priors(tuple(p3.shape[-2:]), tuple(images.shape[-2:]))
        hp, wp = proto.shape[-2:]
        matches, small_masks = [], []
        for t in targets:
            masks = t["masks"].float()
            boxes, valid = masks_to_boxes(masks)
            labels = t["labels"][valid]
            masks = masks[valid]
            matches.append(match_priors(boxes[valid], labels, priors, o.pos_threshold, o.neg_threshold))
            small = (F.interpolate(masks[None], (hp, wp), mode="bilinear", align_corners=False)[0] > 0.5).float() \
                if masks.shape[0] else masks.new_zeros(0, hp, wp)
            small_masks.append((small, labels, masks))
        conf_t = torch.stack([m.conf_t for m in matches])
        loc_t = torch.stack([m.loc_t for m in matches])
        pos = conf_t > 0
        num_pos = max(int(pos.sum()), 1)

        loss_b = F.smooth_l1_loss(loc[pos], loc_t[pos], reduction="sum") * o.bbox_alpha
        loss_c = ohem_conf_loss(conf, conf_t, o.negpos_ratio) * o.conf_alpha
        loss_m = self._mask_loss(proto, coef, pos, matches, small_masks) * o.mask_alpha / (hp * wp)
        parts = {"B": loss_b / num_pos, "C": loss_c / num_pos, "M": loss_m / num_pos}
        if self.semantic_seg_conv is not None:
            parts["S"] = self._semantic_loss(self.semantic_seg_conv(p3), small_masks) * o.semantic_alpha / b
        total = sum(parts.values())
        return LossResult(total, {k: float(v.detach()) for k, v in parts.items()})

    def _mask_loss(self, proto, coef, pos, matches, small_masks) -> torch.Tensor:
        k, hp, wp = proto.shape[1:]
        loss = proto.sum() * 0.0  # stays in the graph when a batch has no positive
        for i, m in enumerate(matches):
            idx = torch.nonzero(pos[i]).squeeze(1)
            if idx.numel() == 0:
                continue
            total = idx.numel()
            if total > self.options.masks_to_train:
                idx = idx[torch.randperm(total)[: self.options.masks_to_train]]
            gt_idx = m.idx_t[idx]
            boxes = m.boxes[gt_idx]                                         # [n, 4] relative
            target = small_masks[i][0][gt_idx]                              # [n, hp, wp]
            logits = (coef[i, idx] @ proto[i].reshape(k, hp * wp)).reshape(-1, hp, wp)
            region = crop_region(hp, wp, boxes)
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * region
            # Emulate RoI pooling: each mask's loss normalised by its box area (in prototype pixels).
            area = ((boxes[:, 2] - boxes[:, 0]) * wp * (boxes[:, 3] - boxes[:, 1]) * hp).clamp(min=1.0)
            per_mask = bce.sum(dim=(1, 2)) / area * (hp * wp)
            loss = loss + per_mask.sum() * (total / idx.numel())
        return loss

    @staticmethod
    def _semantic_loss(logits: torch.Tensor, small_masks) -> torch.Tensor:
        b, c, h, w = logits.shape
        target = torch.zeros_like(logits)
        for i, (_, labels, masks) in enumerate(small_masks):
            if masks.shape[0] == 0:
                continue
            down = (F.interpolate(masks[None], (h, w), mode="bilinear", align_corners=False)[0] > 0.5).float()
            for j, label in enumerate(labels.tolist()):
                target[i, label] = torch.maximum(target[i, label], down[j])
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / (h * w)
