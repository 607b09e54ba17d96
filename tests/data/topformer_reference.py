"""Reference outputs of the OFFICIAL TopFormer code, for tests/test_models.py.

The test fills our TopFormer-Tiny with deterministic weights (``fill_deterministic``),
runs one deterministic image and compares against summaries of what the official
implementation (hustvl/TopFormer, mmseg/models/backbones/topformer.py, commit cc0f436)
computes with the same weights. The official code is not part of this project; to
regenerate ``topformer_tiny_reference.npz``:

    git clone https://github.com/hustvl/TopFormer /tmp/TopFormer
    python tests/data/topformer_reference.py /tmp/TopFormer

(mmcv is not needed: the three mmcv helpers the official file imports are replaced by
minimal stand-ins below.)
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "topformer_tiny_reference.npz"
INPUT_HW = (128, 192)  # not square, so a swapped H/W shows up


def fill_deterministic(module) -> None:
    """Overwrite every float tensor of ``module`` with a fixed, well-scaled pattern (no RNG)."""
    import torch

    with torch.no_grad():
        for i, (name, t) in enumerate(sorted(module.state_dict().items())):
            if not t.is_floating_point():
                continue
            wave = torch.sin(torch.arange(t.numel(), dtype=torch.float64) * 0.7 + i).reshape(t.shape)
            if name.endswith("running_var"):
                value = 1.0 + 0.25 * wave
            elif name.endswith("running_mean") or name.endswith("bias"):
                value = 0.1 * wave
            elif t.ndim == 1:  # BN weight
                value = 1.0 + 0.2 * wave
            else:
                fan_in = t[0].numel()
                value = wave * (1.5 / fan_in) ** 0.5
            t.copy_(value.to(t.dtype))


def make_input():
    import torch

    h, w = INPUT_HW
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([torch.sin(yy / 7), torch.cos(xx / 11), torch.sin((yy + xx) / 13)])[None]


def summaries(outputs) -> dict[str, np.ndarray]:
    """Per-channel means and per-pixel channel means of each output: small, but any
    wrong weight, stride, pooling or resize changes them."""
    out = {}
    for name, t in zip(("x3", "x4", "x5", "x6"), outputs):
        a = t[0].detach().double().numpy()
        out[f"{name}_channel_mean"] = a.mean(axis=(1, 2))
        out[f"{name}_pixel_mean"] = a.mean(axis=0)
    return out


def _mmcv_stand_ins():
    import torch.nn as nn

    class ConvModule(nn.Module):
        def __init__(self, inp, oup, kernel_size=1, norm_cfg=None, act_cfg=dict(type="ReLU")):
            super().__init__()
            self.conv = nn.Conv2d(inp, oup, kernel_size, bias=norm_cfg is None)
            if norm_cfg is not None:
                self.bn = nn.BatchNorm2d(oup)
            self.act = nn.ReLU() if act_cfg is not None else None

        def forward(self, x):
            x = self.conv(x)
            if hasattr(self, "bn"):
                x = self.bn(x)
            return self.act(x) if self.act is not None else x

    class Registry:
        def register_module(self):
            return lambda cls: cls

    return dict(ConvModule=ConvModule, build_norm_layer=lambda cfg, n: ("bn", nn.BatchNorm2d(n)),
                BaseModule=nn.Module, _load_checkpoint=None, get_root_logger=lambda: None, BACKBONES=Registry())


def main(official_repo: str) -> None:
    import torch

    source = (Path(official_repo) / "mmseg/models/backbones/topformer.py").read_text()
    stand_ins = _mmcv_stand_ins()
    for line in ("from mmcv.cnn import ConvModule", "from mmcv.cnn import build_norm_layer",
                 "from mmcv.runner import BaseModule", "from mmcv.runner import _load_checkpoint",
                 "from mmseg.utils import get_root_logger", "from ..builder import BACKBONES"):
        source = source.replace(line, "")
    official = types.ModuleType("official_topformer")
    official.__dict__.update(stand_ins)
    exec(compile(source, "official_topformer.py", "exec"), official.__dict__)

    ns: dict = {"dict": dict}
    exec((Path(official_repo) / "local_configs/topformer/topformer_tiny.py").read_text(), ns)
    c = ns["model_cfgs"]
    model = official.Topformer(cfgs=c["cfg"], channels=c["channels"], out_channels=c["out_channels"],
                               embed_out_indice=c["embed_out_indice"], decode_out_indices=c["decode_out_indices"],
                               depths=4, num_heads=c["num_heads"], c2t_stride=c["c2t_stride"],
                               norm_cfg=dict(type="BN")).eval()
    fill_deterministic(model)
    x = make_input()
    with torch.no_grad():
        injected = model(x)
        tokens = model.trans(model.ppa(model.tpm(x)))
    np.savez_compressed(REFERENCE, **summaries(list(injected) + [tokens]))
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))
    main(sys.argv[1])
