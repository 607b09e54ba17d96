"""Learning rate schedule: linear warm-up, then cosine decay to a floor.

Warm-up matters for the transformer decoder trained from scratch: AdamW's first steps
use poorly estimated second moments, and a full learning rate there can push the
attention into saturation it never recovers from.
"""

from __future__ import annotations


def lr_at(iteration: int, total: int, base_lr: float, warmup: int, min_ratio: float = 0.01,
          warmup_start: float = 0.001) -> float:
    """Learning rate of (0-based) ``iteration`` out of ``total``."""
    import math

    if warmup > 0 and iteration < warmup:
        t = iteration / warmup
        return base_lr * (warmup_start + (1.0 - warmup_start) * t)
    span = max(1, total - warmup)
    t = min(1.0, (iteration - warmup) / span)
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t)))
