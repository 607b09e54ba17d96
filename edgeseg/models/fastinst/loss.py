"""FastInst's training objective, as the official ``SetCriterion`` / ``HungarianMatcher``.

Matching (per image, per prediction, Hungarian): cost =
``mask * BCE + cls * (-p(class)) + dice * (1 - dice) + location * (-[the query's pixel lies
inside the object])``. The *location cost* (weight 1000) makes a query match only objects
that cover the stride-16 pixel it was selected from, whenever one does: an IA-guided
query is meant for the object it was picked on. "Inside" is the object's mask
average-pooled to the stride-16 grid being > 0, as the official proposal matcher
computes it (the official query matcher samples the full mask at the pixel's corner
coordinates; the same cells up to border rounding).

Losses, summed over every prediction (deep supervision: the heads before the first layer,
after each layer, and after each layer of the GT mask-guided pass):

* class: softmax focal loss over C + "no object" (``(1 - p_t)^gamma`` times the
  cross-entropy, the no-object class weighted 0.1, a weighted mean). ``focal_gamma=0``
  is exactly the official cross-entropy.
* masks, matched queries: per-pixel BCE (mean over pixels) and dice (+1 smoothing, as
  the official ``dice_loss``), each summed and divided by the batch's instance count. At
  the prediction's stride-8 resolution (targets resized bilinearly) instead of the
  official 12544 importance-sampled points: at a 256 input that is all 1024 pixels.
* proposals: the stride-16 pixel class map; one pixel per object is matched (cost
  ``cls * (-p) + location * (-inside)``), all other pixels learn "no object"; pixel-wise
  cross-entropy, weight 20.
* GT mask-guided learning: after the main pass, the last layer's matching assigns each
  matched query its ground-truth mask; the decoder layers run again with those masks as
  attention masks, and their predictions (matched as the last layer) are supervised too.
* optional, not in the paper: ``aux_semantic`` (default 1): a training-only per-pixel
  class head on the stride-8 pixel features (:mod:`edgeseg.train.auxiliary`), the dense
  class signal a backbone trained from scratch is short of (MobileInst's finding).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgeseg.errors import EdgesegError
from edgeseg.train.auxiliary import SemanticHead, semantic_loss
from edgeseg.train.losses import resize_targets
from edgeseg.train.matcher import Match, match_from_score
from edgeseg.train.objective import LossResult, Objective


# ----------------------------------------------------------------------------- costs
def batch_bce_cost(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[N, P]`` logits vs ``[M, P]`` soft targets -> ``[N, M]`` mean per-pixel BCE."""
    pos = F.binary_cross_entropy_with_logits(mask_logits, torch.ones_like(mask_logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(mask_logits, torch.zeros_like(mask_logits), reduction="none")
    return (pos @ targets.t() + neg @ (1 - targets).t()) / mask_logits.shape[1]


def batch_dice_cost(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[N, P]`` logits vs ``[M, P]`` -> ``[N, M]`` ``1 - dice`` with +1 smoothing."""
    p = mask_logits.sigmoid()
    numerator = 2 * p @ targets.t()
    denominator = p.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def dice_loss(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[K, P]`` -> ``[K]`` ``1 - dice`` with +1 smoothing (the official ``dice_loss``)."""
    p = mask_logits.sigmoid()
    return 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)


def softmax_focal_loss(logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor,
                       gamma: float) -> torch.Tensor:
    """Weighted-mean focal loss over a softmax: ``[..., C+1]`` logits, ``[...]`` int targets."""
    logp = F.log_softmax(logits.float(), dim=-1)
    logp_t = logp.gather(-1, target[..., None])[..., 0]
    w = class_weight[target]
    loss = -logp_t
    if gamma > 0:
        loss = loss * (1 - logp_t.exp()) ** gamma
    return (w * loss).sum() / w.sum().clamp(min=1e-6)


@dataclass
class Weights:
    cls: float = 2.0
    mask: float = 5.0
    dice: float = 5.0
    location: float = 1000.0
    proposal: float = 20.0
    no_object: float = 0.1
    focal_gamma: float = 2.0


@dataclass
class ImageTargets:
    """One image's targets at the prediction resolutions."""

    labels: torch.Tensor       # [M]
    masks8: torch.Tensor       # [M, h8*w8] soft
    inside16: torch.Tensor     # [M, h16*w16] 0/1: the object covers the stride-16 cell


def prepare_targets(targets, pixel_hw, proposal_hw) -> list[ImageTargets]:
    out = []
    for t in targets:
        masks = t["masks"].float()
        m = masks.shape[0]
        small = resize_targets(masks, pixel_hw).reshape(m, pixel_hw[0] * pixel_hw[1])
        if m:
            inside = (F.adaptive_avg_pool2d(masks[None], proposal_hw)[0] > 0).float().reshape(m, -1)
        else:
            inside = masks.new_zeros(0, proposal_hw[0] * proposal_hw[1])
        out.append(ImageTargets(t["labels"], small, inside))
    return out


@torch.no_grad()
def match_queries(logits, masks, locations_inside, tgt: ImageTargets, w: Weights) -> Match:
    """One image: ``logits`` ``[N, C+1]``, ``masks`` ``[N, P]``, ``locations_inside`` ``[N, M]``."""
    if tgt.labels.numel() == 0:
        return match_from_score(torch.zeros(logits.shape[0], 0))
    masks = masks.float()
    prob = logits.float().softmax(-1)[:, tgt.labels]
    cost = (w.mask * batch_bce_cost(masks, tgt.masks8) + w.cls * (-prob)
            + w.dice * batch_dice_cost(masks, tgt.masks8) + w.location * (-locations_inside))
    return match_from_score(-cost)


@torch.no_grad()
def match_proposals(proposal_logits, tgt: ImageTargets, w: Weights) -> Match:
    """One image: ``proposal_logits`` ``[C+1, HW]`` -> one pixel per object."""
    if tgt.labels.numel() == 0:
        return match_from_score(torch.zeros(proposal_logits.shape[1], 0))
    prob = proposal_logits.float().t().softmax(-1)[:, tgt.labels]            # [HW, M]
    cost = w.cls * (-prob) + w.location * (-tgt.inside16.t())
    return match_from_score(-cost)


# ----------------------------------------------------------------------------- the objective
class FastInstObjective(Objective):
    """FastInst's matching and losses on :class:`~.transformer_decoder.DecoderState`."""

    @dataclass
    class Options:
        cls: float = 2.0
        mask: float = 5.0
        dice: float = 5.0
        location: float = 1000.0     # matching cost only
        proposal: float = 20.0
        no_object: float = 0.1
        focal_gamma: float = 2.0     # 0: the official cross-entropy
        guided: bool = True          # the GT mask-guided second pass
        aux_semantic: float = 1.0    # training-only semantic head on the pixel features (0: off)

    def __init__(self, model, num_classes: int, **options):
        super().__init__(model, num_classes, **options)
        o = self.options
        values = dataclasses.asdict(o)
        if any(values[k] < 0 for k in ("cls", "mask", "dice", "location", "proposal", "no_object",
                                       "focal_gamma", "aux_semantic")):
            raise EdgesegError(f"loss weights must be >= 0, got {values}", "e.g. focal_gamma=2")
        self.weights = Weights(o.cls, o.mask, o.dice, o.location, o.proposal, o.no_object, o.focal_gamma)
        class_weight = torch.ones(num_classes + 1)
        class_weight[-1] = o.no_object
        self.register_buffer("class_weight", class_weight, persistent=False)
        self.semantic = SemanticHead(model.hidden_dim, num_classes) if o.aux_semantic > 0 else None

    # ------------------------------------------------------------------ pieces
    def _inside(self, state, tgts: list[ImageTargets]) -> list[torch.Tensor]:
        """``[N, M]`` per image: the object covers the pixel query n was selected from."""
        return [t.inside16[:, state.selected[b]].t() for b, t in enumerate(tgts)]

    def _prediction_loss(self, pred, matches: list[Match], tgts: list[ImageTargets], num_masks: float):
        w = self.weights
        b, n, c1 = pred.logits.shape
        target = torch.full((b, n), c1 - 1, dtype=torch.int64, device=pred.logits.device)
        for i, m in enumerate(matches):
            if len(m):
                target[i, m.queries] = tgts[i].labels[m.targets]
        loss_cls = softmax_focal_loss(pred.logits, target, self.class_weight, w.focal_gamma)
        batch_idx = torch.cat([torch.full((len(m),), i, dtype=torch.int64) for i, m in enumerate(matches)])
        query_idx = torch.cat([m.queries for m in matches])
        if query_idx.numel():
            src = pred.masks[batch_idx, query_idx].float()
            tgt = torch.cat([tgts[i].masks8[m.targets] for i, m in enumerate(matches)]).to(src)
            loss_bce = F.binary_cross_entropy_with_logits(src, tgt, reduction="none").mean(1).sum() / num_masks
            loss_dice = dice_loss(src, tgt).sum() / num_masks
        else:
            loss_bce = loss_dice = pred.masks.sum() * 0.0
        return {"cls": w.cls * loss_cls, "mask": w.mask * loss_bce, "dice": w.dice * loss_dice}

    def _proposal_loss(self, state, tgts: list[ImageTargets]) -> torch.Tensor:
        logits = state.proposal_logits.flatten(2)                              # [B, C+1, HW]
        b, c1, hw = logits.shape
        target = torch.full((b, hw), c1 - 1, dtype=torch.int64, device=logits.device)
        for i, t in enumerate(tgts):
            m = match_proposals(logits[i].detach(), t, self.weights)
            if len(m):
                target[i, m.queries] = t.labels[m.targets]
        return F.cross_entropy(logits.float(), target)

    def _gt_attention(self, state, match: list[Match], targets) -> torch.Tensor:
        """``[B, N, HW]``: 1 outside the ground-truth mask matched to each query (0 rows for
        unmatched queries), targets resized by nearest neighbour as the official code."""
        b, n, hw = state.predictions[-1].masks.shape
        out = state.predictions[-1].masks.new_zeros(b, n, hw)
        for i, m in enumerate(match):
            if len(m):
                gt = F.interpolate(targets[i]["masks"][None].float(), size=state.pixel_hw, mode="nearest")[0]
                out[i, m.queries] = 1.0 - (gt[m.targets] > 0.5).float().reshape(len(m), -1)
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, model, images, targets) -> LossResult:
        state = model(images)
        tgts = prepare_targets(targets, state.pixel_hw, state.proposal_hw)
        num_masks = float(max(sum(int(t.labels.numel()) for t in tgts), 1))
        inside = self._inside(state, tgts)
        w = self.weights

        def matches_for(pred):
            return [match_queries(pred.logits[i].detach(), pred.masks[i].detach(), inside[i], t, w)
                    for i, t in enumerate(tgts)]

        parts: dict[str, torch.Tensor] = {}

        def add(terms: dict[str, torch.Tensor]) -> None:
            for k, v in terms.items():
                parts[k] = parts.get(k, 0.0) + v

        last_match = None
        for j, pred in enumerate(state.predictions):
            match = matches_for(pred)
            add(self._prediction_loss(pred, match, tgts, num_masks))
            last_match = match
        if self.options.guided:
            gt_masked = self._gt_attention(state, last_match, targets)
            for pred in model.transformer_decoder.guided_pass(state, gt_masked):
                add({f"g_{k}": v for k, v in self._prediction_loss(pred, last_match, tgts, num_masks).items()})
        parts["proposal"] = w.proposal * self._proposal_loss(state, tgts)
        if self.semantic is not None:
            b, hw, c = state.pixel_features.shape
            fmap = state.pixel_features.transpose(1, 2).reshape(b, c, *state.pixel_hw)
            parts["sem"] = self.options.aux_semantic * semantic_loss(self.semantic(fmap), targets)
        total = sum(parts.values())
        return LossResult(total, {k: float(v.detach()) for k, v in parts.items()})
