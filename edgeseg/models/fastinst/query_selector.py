"""Instance-activation-guided query selection (``QueryProposal`` in the official code).

A per-pixel class head on the stride-16 features (3x3 conv, ReLU, 1x1 conv to C + 1
logits, the last being "no object") gives each pixel a class distribution. Each pixel
keeps only its best object class (one-hot, as the official code); a pixel that is a
3x3 local maximum of that class map gets +1, so local maxima come first; the
``num_queries`` pixels with the highest ``p + [local max]`` become the queries: their
features and their position embeddings are gathered.

Two ways to pick the top-k pixels (``query_select``), identical in which pixels they pick
(ties go to the lower pixel index in both; tests compare them):

* ``"topk"``: TopK + Gather. ONNX Runtime and TensorRT run it; TFLite (onnx2tf fails on
  TopK) and TNN on ARM (no TopK kernel) do not: ``edgeseg check`` reports it.
* ``"rank"`` (default): each pixel's rank is the number of pixels that come before it
  (higher score, or equal score and lower index), from pairwise ``Sign`` of differences
  summed over a row; the pixels ranked below K are chosen, each gets a slot (the number of
  chosen pixels with a lower index: a MatMul), query ``k`` is the one-hot row
  ``relu(1 - |slot - k|)``, and the gather is a MatMul of that one-hot matrix with the
  features. Only Sub, Sign, Relu, Abs, ReduceSum, MaxPool and MatMul: builtins of TFLite
  and ARM kernels of TNN. Ranks are integers below ``H * W``, exact in fp32 and fp16 (up to
  2048 pixels: a 720x720 input).

Queries come in *pixel order*, not score order (the official code keeps torch.topk's
order). The decoder is permutation-equivariant over queries, so this changes nothing but
the order of the outputs, and makes that order stable: two selected pixels whose scores
differ by 1e-7 would otherwise swap between runtimes (PyTorch and ONNX Runtime round
differently), and with them every output row of both queries.

Comparisons are written with ``Sign`` as well (``a >= b`` as ``1 - sign(b - a)`` where
``b >= a`` is known), since TNN has no ARM kernel for Equal / Greater / Where.
Training always uses ``torch.topk`` (faster, same pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOCAL_MAX_EPS = 1e-6   # the official seek_local_maximum's epsilon: a peak needs p >= eps


def _indicator_nonneg(x: torch.Tensor) -> torch.Tensor:
    """``[x == 0]`` for ``x >= 0`` (float 0/1)."""
    return 1.0 - torch.sign(x)


def _indicator_pos(x: torch.Tensor) -> torch.Tensor:
    """``[x > 0]`` (float 0/1)."""
    return F.relu(torch.sign(x))


class QuerySelector(nn.Module):
    """E4 ``[B, C, H, W]`` + its position embedding -> queries, their positions, the
    proposal logits (for the proposal loss) and the picked pixel indices (training)."""

    def __init__(self, hidden_dim: int, num_queries: int, num_classes: int, mode: str = "rank"):
        super().__init__()
        if mode not in ("rank", "topk"):
            raise ValueError(f"unknown query selection {mode!r}")
        self.num_queries = num_queries
        self.num_classes = num_classes
        self.mode = mode
        self.conv_proposal_cls_logits = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, num_classes + 1, 1))

    # ------------------------------------------------------------------ scores
    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B, C+1, H, W]`` proposal logits -> ``[B, H*W]`` selection scores
        ``max_c p_c + [the pixel is a 3x3 local maximum of its best class]``."""
        b, c1, h, w = logits.shape
        c = c1 - 1
        # Softmax on the last axis (NHWC tokens): portable, and the same numbers as dim=1.
        probs = logits.reshape(b, c1, h * w).transpose(1, 2).softmax(-1)[..., :c]   # [B, HW, C]
        best = probs.amax(-1, keepdim=True)                                           # [B, HW, 1]
        is_best = _indicator_nonneg(best - probs)
        # The first best class only, as argmax + one_hot (classes tie in flat, uncertain
        # regions): count the best classes before each with a strictly triangular MatMul.
        earlier = torch.ones(c, c, dtype=probs.dtype, device=probs.device).triu(1)   # [c', c]: c' < c
        is_first = is_best * _indicator_nonneg(torch.matmul(is_best, earlier))
        one_hot = probs * is_first          # keep only the best class per pixel
        maps = one_hot.transpose(1, 2).reshape(b, c, h, w)
        # Zero padding in the official code; with probabilities >= 0 MaxPool's -inf padding
        # compares the same.
        peak = F.max_pool2d(maps, 3, 1, 1)
        is_peak = _indicator_nonneg(peak - maps) * _indicator_pos(maps - LOCAL_MAX_EPS)
        return best.squeeze(-1) + is_peak.amax(1).reshape(b, h * w)   # squeeze: no Gather (TNN ARM int8 lacks it)

    # ------------------------------------------------------------------ selection
    def rank_one_hot(self, scores: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` scores -> ``[B, K, N]`` one-hot rows of the top-K pixels, in pixel order."""
        b, n = scores.shape
        k = self.num_queries
        ramp = torch.arange(n, dtype=scores.dtype, device=scores.device)
        # Added to 0 * scores so the export cannot fold the N x N index comparison into a
        # constant table (N^2 floats: 10 MB at a 640 input); costs one Mul and one Add.
        index = ramp + scores * 0.0                                              # [B, N]
        value_before = torch.sign(scores[:, None, :] - scores[:, :, None])        # [B, i, j]: sign(s_j - s_i)
        index_before = torch.sign(index[:, :, None] - index[:, None, :])         # sign(i - j)
        # j comes before i: a higher score, or the same score and a lower index.
        rank = _indicator_pos(2.0 * value_before + index_before).sum(-1)         # [B, N]: a permutation of 0..N-1
        chosen = _indicator_pos((k - 0.5) - rank)                                # [B, N]: in the top K
        # Slot of a chosen pixel = chosen pixels with a lower index (a MatMul with [j < i]).
        slot = torch.matmul(F.relu(index_before), chosen[..., None]).squeeze(-1)   # [B, N]
        slots = torch.arange(k, dtype=scores.dtype, device=scores.device)[:, None]
        return chosen[:, None, :] * F.relu(1.0 - torch.abs(slot[:, None, :] - slots))   # [B, K, N]

    def topk_indices(self, scores: torch.Tensor) -> torch.Tensor:
        """The top-K pixel indices ``[B, K]``, in pixel order (as :meth:`rank_one_hot`)."""
        return torch.topk(scores, self.num_queries, dim=1).indices.sort(dim=1).values

    @staticmethod
    def gather(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` gathered at ``[B, K]`` -> ``[B, K, C]`` with one Gather on a flat axis
        (not GatherElements, which TFLite has no builtin for)."""
        b, n, c = tokens.shape
        offsets = torch.arange(b, device=index.device)[:, None] * n
        return tokens.reshape(b * n, c)[(index + offsets).reshape(-1)].reshape(b, index.shape[1], c)

    def forward(self, x: torch.Tensor, pos: torch.Tensor):
        """``x`` ``[B, C, H, W]``, ``pos`` ``[H*W, C]`` -> (queries ``[B, K, C]``, query positions
        ``[B, K, C]``, proposal logits ``[B, C+1, H, W]``, picked pixel indices ``[B, K]`` or None)."""
        b, c, h, w = x.shape
        if h * w < self.num_queries:
            raise ValueError(f"{self.num_queries} queries need at least that many pixels at stride 16, "
                             f"got {h}x{w}: use a larger input")
        logits = self.conv_proposal_cls_logits(x)
        tokens = x.reshape(b, c, h * w).transpose(1, 2)                  # [B, HW, C]
        with torch.no_grad():
            scores = self.scores(logits)
        if self.training or self.mode == "topk":
            index = self.topk_indices(scores)
            queries = self.gather(tokens, index)
            query_pos = self.gather(pos[None].expand(b, -1, -1), index)
            return queries, query_pos, logits, index
        one_hot = self.rank_one_hot(scores)
        return torch.matmul(one_hot, tokens), torch.matmul(one_hot, pos), logits, None

    def pixel_locations(self, index: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Picked pixel indices ``[B, K]`` -> ``(row, col)`` ``[B, K, 2]`` on the stride-16 grid."""
        return torch.stack([index // hw[1], index % hw[1]], dim=-1)

