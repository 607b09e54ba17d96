"""Loss building blocks shared by the families' training objectives.

Each family's objective (``edgeseg/models/<family>/loss.py``) composes these: sigmoid
focal loss (Lin et al. 2017), dice loss (as SparseInst / Mask2Former compute it), and
target masks resized to a prediction's resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeseg.train.matcher import DICE_EPS

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


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


def resize_targets(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[M, H, W]`` masks -> ``[M, h, w]`` soft masks at the prediction's resolution."""
    if masks.numel() == 0:
        return masks.new_zeros((masks.shape[0], *size))
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks.float()
    return F.interpolate(masks[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
