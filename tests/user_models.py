"""Models a user might bring (importable as ``tests.user_models:FUNCTION``), for the tests of
``edgeseg export FILE.py:fn`` / ``package.module:fn`` and ``--decoder``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QueryModel(nn.Module):
    """Outputs shaped like MobileInst's (logits, objectness, masks at 1/8), so its AP can be
    measured with ``--decoder mobileinst``; no edgeseg attributes at all."""

    def __init__(self, num_classes: int = 4, queries: int = 6, dim: int = 8):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, dim, 3, 2, 1), nn.ReLU(), nn.Conv2d(dim, dim, 3, 2, 1), nn.ReLU(),
                                     nn.Conv2d(dim, dim, 3, 2, 1))
        self.decoder = nn.ModuleDict({"queries": nn.Embedding(queries, dim), "cls": nn.Linear(dim, num_classes),
                                      "obj": nn.Linear(dim, 1)})

    def forward(self, image):
        feats = self.encoder(image)                              # [B, D, H/8, W/8]
        b, d, h, w = feats.shape
        q = self.decoder["queries"].weight.unsqueeze(0).expand(b, -1, -1)
        attn = torch.softmax(torch.matmul(q, feats.reshape(b, d, h * w)), dim=-1)
        q = q + torch.matmul(attn, feats.reshape(b, d, h * w).transpose(1, 2))
        masks = torch.matmul(q, feats.reshape(b, d, h * w)).reshape(b, -1, h, w)
        return self.decoder["cls"](q), self.decoder["obj"](F.relu(q)), masks


def build_query_model() -> QueryModel:
    torch.manual_seed(0)
    return QueryModel()


def build_not_a_module():
    return {"not": "a module"}
