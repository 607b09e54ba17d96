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
        """An edgeseg table (JSON) or a TensorRT calibration cache, told apart by content."""
        p = Path(path)
        if not p.is_file():
            raise EdgesegError(f"calibration table {p} not found",
                               "create one with `edgeseg calibrate MODEL.onnx --images DIR -o table.json`")
        with open(p, "rb") as f:
            head = f.read(64)
        if head.startswith(TRT_CACHE_PREFIX):
            # trtexec's or `edgeseg calibrate --trt-cache`'s file: the same ranges as scales.
            return read_trt_cache(p)
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
            what = "text" if head.strip() and _is_text(head) else "binary data"
            raise EdgesegError(f"{p} is neither an edgeseg calibration table (JSON) nor a TensorRT calibration "
                               f"cache (first line TRT-<version>-<calibrator>); it holds {what} ({e})",
                               "pass the table written by `edgeseg calibrate MODEL.onnx --images DIR -o "
                               "table.json` (or its --trt-cache file)") from e

    def check_model(self, model_sha256: str, what: str = "model") -> None:
        """Refuse a table computed on a different graph (tensor names would silently not match)."""
        if self.model_sha256 and model_sha256 and self.model_sha256 != model_sha256:
            raise EdgesegError(
                f"calibration table was computed for a different {what} "
                f"(sha256 {self.model_sha256[:12]} != {model_sha256[:12]})",
                "re-run `edgeseg calibrate` on this ONNX file")


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ---------------------------------------------------------------- TensorRT calibration cache
# trtexec --calib=FILE (and IInt8Calibrator.readCalibrationCache) reads a text file:
#   TRT-<NV_TENSORRT_VERSION>-<calibrator>
#   <tensor name>: <8 hex digits: big-endian IEEE-754 float32 scale>
# with scale = amax / 127. Writing it from our table lets a Jetson build an INT8 engine
# on exactly the ranges every other backend uses, without calibrating on the device.

TRT_CACHE_PREFIX = b"TRT-"
DEFAULT_TRT_VERSION = "8.5.2"  # JetPack 5 (Xavier / Orin) ships TensorRT 8.5.2
TRT_CALIBRATOR = "EntropyCalibration2"


def trt_version_code(version: str | int) -> str:
    """``"8.5.2"`` -> ``"8502"``, ``"10.3.0"`` -> ``"100300"`` (TensorRT's NV_TENSORRT_VERSION).

    TensorRT 8 encodes major*1000 + minor*100 + patch; TensorRT 10 switched to
    major*10000 + minor*100 + patch. A bare number (``8502``) is taken as already encoded.
    """
    text = str(version).strip()
    if text.isdigit():
        return text
    parts = text.split(".")
    try:
        nums = [int(p) for p in parts] + [0] * (3 - len(parts))
    except ValueError:
        nums = []
    if len(parts) > 3 or len(nums) != 3 or any(n < 0 for n in nums):
        raise EdgesegError(f"cannot read TensorRT version {version!r}",
                           "give it as MAJOR.MINOR.PATCH (e.g. 8.5.2) or as TensorRT's number (8502)")
    major, minor, patch = nums
    return str(major * (10000 if major >= 10 else 1000) + minor * 100 + patch)


def _scale_hex(amax: float) -> str:
    import struct

    # A tensor that was always zero still needs a usable, non-zero scale (0 would make
    # TensorRT divide by zero); 1/127 is what TensorRange.scale falls back to.
    scale = amax / 127.0 if amax > 0 else 1.0 / 127.0
    return struct.pack(">f", scale).hex()


def trt_cache_bytes(table: CalibrationTable, trt_version: str | int | None = None) -> bytes:
    """``table`` as the bytes of a TensorRT calibration cache (what ``read_calibration_cache`` returns).

    ``trt_version`` defaults to the version a table read from a cache came with, else
    TensorRT 8.5.2 (JetPack 5). TensorRT ignores a cache whose version line differs from
    its own, so pass the version of the TensorRT that will read it.
    """
    version = trt_version if trt_version is not None else table.settings.get("trt_version", DEFAULT_TRT_VERSION)
    calibrator = table.settings.get("trt_calibrator", TRT_CALIBRATOR)
    lines = [f"TRT-{trt_version_code(version)}-{calibrator}"]
    for name, rng in table.ranges.items():
        if "\n" in name:
            raise EdgesegError(f"tensor name {name!r} contains a newline and cannot go into a TensorRT cache",
                               "rename the tensor in the ONNX graph")
        lines.append(f"{name}: {_scale_hex(rng.amax)}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def write_trt_cache(table: CalibrationTable, path: str | os.PathLike,
                    trt_version: str | int | None = None) -> Path:
    """Write ``table`` as a TensorRT calibration cache file (atomically); see :func:`trt_cache_bytes`."""
    return atomic.write_bytes(path, trt_cache_bytes(table, trt_version))


def read_trt_cache(path: str | os.PathLike) -> CalibrationTable:
    """Read a TensorRT calibration cache into a :class:`CalibrationTable` (amax = scale * 127).

    The version and calibrator of the header are kept in ``settings`` so that
    ``write_trt_cache`` reproduces the file byte for byte.
    """
    import struct

    p = Path(path)
    if not p.is_file():
        raise EdgesegError(f"TensorRT calibration cache {p} not found", "check the path")
    fix = "pass a file written by TensorRT or by `edgeseg calibrate --trt-cache FILE`"
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise EdgesegError(f"{p} is not a text TensorRT calibration cache", fix) from e
    lines = text.splitlines()
    header = lines[0].strip() if lines else ""
    parts = header.split("-", 2)
    if len(parts) != 3 or parts[0] != "TRT" or not parts[1].isdigit() or not parts[2]:
        raise EdgesegError(f"{p} does not start with a TensorRT cache header (TRT-<version>-<calibrator>)", fix)
    ranges: dict[str, TensorRange] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        # Tensor names may contain ':' (``onnx::MatMul_12``); the hex value never does.
        name, sep, value = line.rpartition(":")
        value = value.strip()
        if not sep or len(value) != 8:
            raise EdgesegError(f"{p} line {lineno} is not '<tensor>: <8 hex digits>': {line!r}", fix)
        try:
            scale = struct.unpack(">f", bytes.fromhex(value))[0]
        except ValueError as e:
            raise EdgesegError(f"{p} line {lineno} has a bad hex scale {value!r}", fix) from e
        if not math.isfinite(scale) or scale < 0:
            raise EdgesegError(f"{p} line {lineno}: scale {scale} for {name!r} is not a positive number", fix)
        # float32 scale * 127 is exact in float64, so amax / 127 gives the same float32 back.
        ranges[name] = TensorRange(amax=float(scale) * 127.0)
    return CalibrationTable(method="trt-cache", ranges=ranges,
                            settings={"trt_version": parts[1], "trt_calibrator": parts[2]})
