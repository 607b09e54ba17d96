"""The training-objective side of the model-family contract.

A family that can be trained names an :class:`Objective` subclass in its ``Family``
(``objective="edgeseg.models.<family>.loss:TheObjective"``). The generic loop
(:mod:`edgeseg.train.trainer`) builds it once per run and calls it every step::

    objective = Objective(model, num_classes, **options)   # options: --loss-option k=v
    result = objective(model, images, targets)             # -> LossResult
    result.total.backward()

``images`` is the ``[B, 3, H, W]`` batch (``[B, T, 3, H, W]`` clips for families with
``train_data="ytvis"``); ``targets[b]`` holds ``labels`` (int64 ``[M]``, 0-based) and
``masks`` (float ``[M, H, W]`` in [0, 1], soft at borders), plus ``ids`` for clips. The
objective runs the model itself, so it may run it more than once (FastInst's GT-mask
guided second pass) or read intermediate features.

Training-only modules (an auxiliary semantic head, say) are submodules of the objective:
the loop optimises them and keeps them in the resumable training state, never in the
checkpoint, so exported graphs are exactly the model.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeseg.errors import EdgesegError


@dataclass
class LossResult:
    total: torch.Tensor           # scalar to minimise
    parts: dict[str, float]       # weighted terms, for logging


class Objective(nn.Module):
    """Base class: subclasses set ``Options`` (a dataclass of float/int/bool knobs with
    defaults) and implement :meth:`forward`."""

    @dataclass
    class Options:
        pass

    def __init__(self, model: nn.Module, num_classes: int, **options: Any):
        super().__init__()
        self.num_classes = int(num_classes)
        self.options = self.parse_options(options)

    @classmethod
    def parse_options(cls, options: dict[str, Any]):
        """Options from ``--loss-option key=value`` pairs (strings are converted to the
        field's type); an unknown key is one error listing the known ones."""
        fields = {f.name: f for f in dataclasses.fields(cls.Options)}
        values = {}
        for key, raw in options.items():
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise EdgesegError(f"unknown loss option {key!r} for {cls.__name__}",
                                   f"{hint}options: {', '.join(fields) or 'none'}")
            default = fields[key].default
            try:
                if isinstance(raw, str):
                    if isinstance(default, bool):
                        value = raw.strip().lower() in ("1", "true", "yes", "on")
                    else:
                        value = type(default)(raw)
                else:
                    value = raw
            except (TypeError, ValueError):
                raise EdgesegError(f"loss option {key}={raw!r} is not a {type(default).__name__}",
                                   f"e.g. {key}={default}") from None
            values[key] = value
        return cls.Options(**values)

    def forward(self, model: nn.Module, images: torch.Tensor,
                targets: list[dict[str, torch.Tensor]]) -> LossResult:  # pragma: no cover - abstract
        raise NotImplementedError


def parse_loss_options(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``("aux_semantic=0", "cls=2")`` -> dict, with one clear error for a malformed pair."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EdgesegError(f"--loss-option {pair!r} is not KEY=VALUE", "e.g. --loss-option aux_semantic=0.5")
        out[key.strip()] = value.strip()
    return out
