"""Tiny tagged ONNX models and image folders for the calibration / quantization tests.

The model has the structures the quantizer must handle in a real segmenter:
Conv + ReLU with a residual Add (backbone), an upsampling Resize with a float32
``scales`` input (neck), Linear layers, a MatMul between two activations and a Softmax
(attention in the head). Exported with the TorchScript exporter at opset 17 and tagged
from module scopes, exactly like ``edgeseg export`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COMPONENTS = ("backbone", "neck", "head")
SIZE = 32


def _build_module():
    import torch
    import torch.nn as nn

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
            self.conv1 = nn.Conv2d(8, 8, 3, 1, 1)
            self.conv2 = nn.Conv2d(8, 16, 3, 2, 1)

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(self.conv1(x)) + x  # residual
            return torch.relu(self.conv2(x))

    class Neck(nn.Module):
        def __init__(self):
            super().__init__()
            self.reduce = nn.Conv2d(16, 16, 1)
            self.smooth = nn.Conv2d(16, 16, 3, 1, 1)

        def forward(self, x):
            y = torch.relu(self.reduce(nn.functional.max_pool2d(x, 2)))
            y = nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")  # Resize(scales)
            return self.smooth(y + x)

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(16, 16)
            self.k = nn.Linear(16, 16)
            self.cls = nn.Linear(16, 3)

        def forward(self, f):
            b, c, h, w = f.shape
            t = f.flatten(2).transpose(1, 2)  # B, HW, C
            attn = torch.softmax(torch.matmul(self.q(t), self.k(t).transpose(1, 2)) / 4.0, dim=-1)
            mixed = torch.matmul(attn, t)  # MatMul of two activations
            masks = mixed.transpose(1, 2).reshape(b, c, h, w)
            return self.cls(mixed.mean(1)), masks

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.neck, self.head = Backbone(), Neck(), Head()

        def forward(self, x):
            return self.head(self.neck(self.backbone(x)))

    torch.manual_seed(0)
    return Net().eval()


def make_model(folder: Path, name: str = "tiny", with_manifest: bool = True, seed: int = 0) -> Path:
    """Export the tiny model to ``folder/name.onnx`` (tagged), plus a manifest.json."""
    import onnx
    import torch

    from edgeseg.data.preprocess import InputSpec
    from edgeseg.export.manifest import Manifest
    from edgeseg.export.tags import tag_graph
    from edgeseg.models.base import ComponentMap

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    module = _build_module()
    if seed:
        torch.manual_seed(seed)
        for p in module.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.randn(1, 3, SIZE, SIZE), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits", "masks"])
    model = onnx.load(str(path))
    cmap = ComponentMap({c: c for c in COMPONENTS})
    tag_graph(model, cmap)
    onnx.save(model, str(path))
    if with_manifest:
        spec = InputSpec(height=SIZE, width=SIZE, stride=8)
        m = Manifest(model=name, input=spec.to_dict(), components={c: {"module": c} for c in COMPONENTS},
                     presets={"mixed": "backbone=int8,neck=int8,head=fp16"})
        m.add_artifact(path.name, kind="onnx", graph="frame", primary=True)
        m.record("export")
        m.save(folder)
    return path


def make_images(folder: Path, n: int = 6, seed: int = 0, size: tuple[int, int] = (40, 48)) -> Path:
    """``n`` small PNG/JPEG images with structure (gradients + noise + a bright square)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        base = (xx / w * 255 * rng.uniform(0.3, 1.0))[..., None] + (yy / h * 120)[..., None] * rng.uniform(0, 1, 3)
        img = base + rng.normal(0, 20, (h, w, 3))
        y0, x0 = rng.integers(0, h - 10), rng.integers(0, w - 10)
        img[y0:y0 + 8, x0:x0 + 8] = 255
        arr = np.clip(img, 0, 255).astype(np.uint8)
        ext = "png" if i % 2 == 0 else "jpg"
        Image.fromarray(arr).save(folder / f"img_{i:03d}.{ext}")
    return folder
