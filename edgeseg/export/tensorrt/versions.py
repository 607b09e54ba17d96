"""TensorRT versions: which build path a version takes, and reading the version off a device.

Two paths, chosen by the TensorRT that will build the engine:

* **strongly typed** (TensorRT >= 10): precision lives in the ONNX itself (Q/DQ pairs for
  int8, Casts at fp16 boundaries: our QDQ/fp16 ONNX), the network is created with
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` / ``trtexec --stronglyTyped``, and no
  precision flag is set. TensorRT 10.12 deprecated everything else; TensorRT 11 removed it.
* **weak typing** (TensorRT 8.5 / 8.6, JetPack 5 / 6): builder flags (FP16, INT8), one
  precision per layer from the component tags with ``OBEY_PRECISION_CONSTRAINTS``, and
  INT8 ranges from a calibrator that hands TensorRT our calibration table as its cache.

Versions are compared as tuples; TensorRT's own integer encoding (``8502``, ``100300``)
and the strings ``trtexec``, ``dpkg`` and ``tensorrt.__version__`` print are all read here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeseg.errors import EdgesegError

MIN_SUPPORTED = (8, 5)  # JetPack 5.1 (Xavier): TensorRT 8.5.2; the name-based I/O API starts here
STRONG_TYPING_FROM = (10, 0)
WEAK_TYPING_REMOVED_IN = (11, 0)
TYPINGS = ("auto", "strong", "weak")


@dataclass(frozen=True, order=True)
class TrtVersion:
    major: int
    minor: int = 0
    patch: int = 0

    @classmethod
    def parse(cls, text: str | int) -> "TrtVersion":
        """``"8.5.2"``, ``"8.5.2.2"``, ``"10.3.0.26"``, ``"8.5.2-1+cuda11.4"`` or a code (``8502``, ``100300``)."""
        s = str(text).strip()
        if s.isdigit() and len(s) >= 4:
            v = int(s)
            if v >= 100000:  # TensorRT 10 widened the encoding: major*10000 + minor*100 + patch
                return cls(v // 10000, (v // 100) % 100, v % 100)
            return cls(v // 1000, (v // 100) % 10, v % 100)
        m = re.match(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?", s)
        if not m:
            raise EdgesegError(f"cannot read TensorRT version {text!r}",
                               "give it as MAJOR.MINOR.PATCH (e.g. 8.5.2) or as TensorRT's number (8502)")
        return cls(int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0))

    @property
    def text(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def code(self) -> str:
        """TensorRT's ``NV_TENSORRT_VERSION`` (the number in ``[TensorRT v8502]`` and cache headers)."""
        if self.major >= 10:
            return str(self.major * 10000 + self.minor * 100 + self.patch)
        return str(self.major * 1000 + self.minor * 100 + self.patch)

    def at_least(self, *version: int) -> bool:
        return (self.major, self.minor, self.patch) >= tuple(version) + (0,) * (3 - len(version))

    def __str__(self) -> str:
        return self.text


def choose_typing(version: TrtVersion, requested: str = "auto") -> str:
    """``"strong"`` or ``"weak"`` for ``version``; refuses what that TensorRT cannot do."""
    if requested not in TYPINGS:
        raise EdgesegError(f"unknown TensorRT typing {requested!r}", f"use one of: {', '.join(TYPINGS)}")
    if not version.at_least(*MIN_SUPPORTED):
        raise EdgesegError(f"TensorRT {version} is older than {'.'.join(map(str, MIN_SUPPORTED))}, "
                           "the oldest edgeseg builds for",
                           "use JetPack 5.1 or newer (TensorRT 8.5.2), or a TensorRT 8.5+ / 10.x install")
    if requested == "auto":
        return "strong" if version.at_least(*STRONG_TYPING_FROM) else "weak"
    if requested == "strong" and not version.at_least(*STRONG_TYPING_FROM):
        raise EdgesegError(f"TensorRT {version} builds strongly typed networks only from TensorRT 10",
                           "use typing=weak (per-layer precisions + calibration cache) on TensorRT 8.x")
    if requested == "weak" and version.at_least(*WEAK_TYPING_REMOVED_IN):
        raise EdgesegError(f"TensorRT {version} has no weak typing (no FP16/INT8 flags, no calibrator)",
                           "use typing=strong: precision comes from the QDQ/fp16 ONNX")
    return requested


# --------------------------------------------------------------------------- reading a device
_BANNER = re.compile(r"\[TensorRT v(\d{4,6})\]")
_TRT_LINE = re.compile(r"TensorRT version:\s*(\d+\.\d+(?:\.\d+)?)")
_DPKG = re.compile(r"^ii\s+(?:libnvinfer\d*|tensorrt|libnvinfer-bin|nvidia-tensorrt)\s+(\d+\.\d+\.\d+)", re.M)
_PY = re.compile(r"^\s*(\d+\.\d+\.\d+)(?:\.\d+)?\s*$", re.M)

# One device-side script, three sources in order of trust: the trtexec that will run the
# command, the Python bindings (where `edgeseg eval` could run there), the packages.
VERSION_PROBE = {
    "python": "python3 -c 'import tensorrt; print(tensorrt.__version__)'",
    "dpkg": "dpkg -l 'libnvinfer*' 'tensorrt' 2>/dev/null | grep '^ii'",
}


def version_from_trtexec(output: str) -> TrtVersion | None:
    """``&&&& RUNNING TensorRT.trtexec [TensorRT v8502]`` or ``TensorRT version: 8.6.2``."""
    m = _BANNER.search(output or "")
    if m:
        return TrtVersion.parse(m.group(1))
    m = _TRT_LINE.search(output or "")
    return TrtVersion.parse(m.group(1)) if m else None


def version_from_dpkg(output: str) -> TrtVersion | None:
    """``ii  libnvinfer8  8.5.2-1+cuda11.4  arm64 ...`` -> 8.5.2 (the newest listed)."""
    found = [TrtVersion.parse(v) for v in _DPKG.findall(output or "")]
    return max(found) if found else None


def version_from_python(output: str) -> TrtVersion | None:
    """``python3 -c 'import tensorrt; print(tensorrt.__version__)'`` -> ``10.3.0`` (last version line)."""
    found = _PY.findall(output or "")
    return TrtVersion.parse(found[-1]) if found else None


@dataclass(frozen=True)
class DeviceTensorRT:
    version: TrtVersion | None
    source: str  # "trtexec banner" | "python tensorrt" | "dpkg" | "unavailable"
    python_bindings: bool  # `import tensorrt` works there (edgeseg could evaluate on the device)


def device_tensorrt(trtexec_output: str, python_output: str | None = None,
                    dpkg_output: str | None = None) -> DeviceTensorRT:
    """The device's TensorRT from what its tools printed: trtexec first, then Python, then dpkg."""
    py = version_from_python(python_output or "")
    for source, version in (("trtexec banner", version_from_trtexec(trtexec_output)),
                            ("python tensorrt", py), ("dpkg", version_from_dpkg(dpkg_output or ""))):
        if version is not None:
            return DeviceTensorRT(version, source, py is not None)
    return DeviceTensorRT(None, "unavailable", False)
