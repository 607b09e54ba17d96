"""Calibration tables: tensor -> activation range, computed once on the host.

The same :class:`CalibrationTable` feeds every backend: QDQ scales for ONNX Runtime,
TensorRT's calibration cache for trtexec on a Jetson, TFLite and TNN quantization
parameters. It records the method, the image count and sha256 hashes of the model and
of the sorted image list, so a table computed for another model or data set is caught.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.utils import atomic

TABLE_FORMAT = "edgeseg-calibration-table"
TABLE_VERSION = 1


@dataclass
class TensorRange:
    """Range of one activation tensor.

    ``amax`` is the symmetric clipping threshold used for int8 (scale = amax / 127).
    ``min``/``max`` are the observed extremes (for asymmetric consumers and reports).
    """

    amax: float
    min: float | None = None
    max: float | None = None

    @property
    def scale(self) -> float:
        """Symmetric int8 scale (TensorRT convention: amax / 127)."""
        return self.amax / 127.0 if self.amax > 0 else 1.0 / 127.0

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class CalibrationTable:
    method: str
    ranges: dict[str, TensorRange] = field(default_factory=dict)
    num_images: int = 0
    model_sha256: str = ""
    images_sha256: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # num_bins, percentile, seed...

    def amax(self, tensor: str) -> float:
        if tensor not in self.ranges:
            raise EdgesegError(f"calibration table has no range for tensor {tensor!r}",
                               "re-run `edgeseg calibrate` on this exact ONNX file")
        return self.ranges[tensor].amax

    def __contains__(self, tensor: str) -> bool:
        return tensor in self.ranges

    def __len__(self) -> int:
        return len(self.ranges)

    # ---------------------------------------------------------------- json
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_VERSION,
            "method": self.method,
            "num_images": self.num_images,
            "model_sha256": self.model_sha256,
            "images_sha256": self.images_sha256,
            "settings": self.settings,
            "ranges": {k: v.to_dict() for k, v in self.ranges.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CalibrationTable":
        if d.get("format") != TABLE_FORMAT:
            raise EdgesegError("file is not an edgeseg calibration table",
                               "create one with `edgeseg calibrate MODEL.onnx --images DIR -o table.json`")
        ranges = {}
        for name, r in d.get("ranges", {}).items():
            amax = float(r["amax"])
            if not math.isfinite(amax) or amax < 0:
                raise EdgesegError(f"calibration range for {name!r} is invalid ({amax})",
                                   "re-run `edgeseg calibrate`")
            ranges[name] = TensorRange(amax, r.get("min"), r.get("max"))
        return cls(method=d["method"], ranges=ranges, num_images=int(d.get("num_images", 0)),
                   model_sha256=d.get("model_sha256", ""), images_sha256=d.get("images_sha256", ""),
                   settings=d.get("settings", {}))

    def save(self, path: str | os.PathLike) -> Path:
        return atomic.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CalibrationTable":
        p = Path(path)
        if not p.is_file():
            raise EdgesegError(f"calibration table {p} not found",
                               "create one with `edgeseg calibrate MODEL.onnx --images DIR -o table.json`")
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise EdgesegError(f"cannot read calibration table {p}: {e}",
                               "re-create it with `edgeseg calibrate`") from e

    def check_model(self, model_sha256: str, what: str = "model") -> None:
        """Refuse a table computed on a different graph (tensor names would silently not match)."""
        if self.model_sha256 and model_sha256 and self.model_sha256 != model_sha256:
            raise EdgesegError(
                f"calibration table was computed for a different {what} "
                f"(sha256 {self.model_sha256[:12]} != {model_sha256[:12]})",
                "re-run `edgeseg calibrate` on this ONNX file")
