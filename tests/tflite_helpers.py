"""Shared set-up for the TFLite tests: a tiny tagged model, synthetic images, a calibration table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 64  # TFLite conversions are slow: the smallest input the tiny model's strides allow


def synth_images(root: Path, size: int = SIZE, count: int = 8) -> Path:
    """A folder of synthetic shape images (the representative / calibration set)."""
    from edgeseg.data.synthetic import SynthConfig, generate

    generate(root, SynthConfig(train=1, val=count, videos=0, val_videos=0, height=size, width=size, seed=3))
    return root / "coco" / "val"


def tiny_export(root: Path, size: int = SIZE):
    """The three-component tiny model exported (tagged, simplified) to ONNX."""
    import torch

    from edgeseg.export.onnx import export_onnx
    from tests.tiny_models import TinySegModel

    torch.manual_seed(0)
    return export_onnx(TinySegModel(size=size).eval(), root)


def first_image(images: Path, onnx_path: Path) -> np.ndarray:
    """The first image preprocessed exactly as the manifest says (1xCxHxW)."""
    from edgeseg.data.images import select_images
    from edgeseg.export.manifest import Manifest, input_spec_of

    spec = input_spec_of(Manifest.load(onnx_path))
    return next(select_images(images, spec).arrays())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
