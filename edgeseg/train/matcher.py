"""Bipartite matching of predicted instances to ground truth, as SparseInst does it.

Each query is scored against each ground-truth instance by
``dice(mask)^alpha * p(class)^beta`` (SparseInst: alpha 0.8, beta 0.2): mask overlap
dominates, the class probability breaks ties between queries covering the same object.
The one-to-one assignment maximising the total score is solved per image with scipy's
``linear_sum_assignment``; unmatched queries are "no object". One-to-one matching is what
lets the model run without NMS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# SparseInst's exponents (MobileInst keeps its matcher).
ALPHA = 0.8
BETA = 0.2
# SparseInst's smoothing: keeps the score defined for empty predictions and targets.
DICE_EPS = 1e-4


@dataclass
class Match:
    """Matched pairs of one image: ``queries[k]`` predicts target ``targets[k]``."""

    queries: torch.Tensor  # int64 [K]
    targets: torch.Tensor  # int64 [K]

    def __len__(self) -> int:
        return int(self.queries.numel())


def dice_score_matrix(mask_logits: torch.Tensor, target_masks: torch.Tensor) -> torch.Tensor:
    """``[N, P]`` mask logits vs ``[M, P]`` soft targets -> ``[N, M]`` dice scores in [0, 1]."""
    probs = mask_logits.sigmoid()
    numerator = 2.0 * probs @ target_masks.t()
    denominator = (probs * probs).sum(-1)[:, None] + (target_masks * target_masks).sum(-1)[None, :]
    return numerator / (denominator + DICE_EPS)


def matching_score(class_logits: torch.Tensor, mask_logits: torch.Tensor, target_labels: torch.Tensor,
                   target_masks: torch.Tensor, alpha: float = ALPHA, beta: float = BETA) -> torch.Tensor:
    """``[N, M]`` score of query n for target m (higher is a better match)."""
    dice = dice_score_matrix(mask_logits.flatten(1), target_masks.flatten(1))
    prob = class_logits.sigmoid()[:, target_labels]
    # clamp: 0 ** 0.2 has an infinite gradient and 0 ** alpha would tie every empty query.
    return dice.clamp(min=0) ** alpha * prob ** beta


def match_from_score(score: torch.Tensor | np.ndarray) -> Match:
    """The one-to-one assignment maximising the summed ``[N, M]`` score (N >= M: every target matched)."""
    from scipy.optimize import linear_sum_assignment

    s = score.detach().cpu().numpy() if isinstance(score, torch.Tensor) else np.asarray(score)
    if s.shape[1] == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return Match(empty, empty.clone())
    rows, cols = linear_sum_assignment(s, maximize=True)
    return Match(torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))


@torch.no_grad()
def match_image(class_logits: torch.Tensor, mask_logits: torch.Tensor, target_labels: torch.Tensor,
                target_masks: torch.Tensor, alpha: float = ALPHA, beta: float = BETA) -> Match:
    """Match the ``N`` queries of one image to its ``M`` targets.

    ``class_logits`` ``[N, C]``, ``mask_logits`` ``[N, h, w]``, ``target_labels`` ``[M]``
    (0-based), ``target_masks`` ``[M, h, w]`` in [0, 1] at the prediction's resolution.
    """
    if target_labels.numel() == 0:
        return match_from_score(np.zeros((class_logits.shape[0], 0), dtype=np.float32))
    return match_from_score(matching_score(class_logits.float(), mask_logits.float(), target_labels,
                                           target_masks.float(), alpha, beta))
