"""The engine-build plan: everything a TensorRT build depends on, decided before TensorRT runs.

:func:`make_build_plan` is a pure function of the precision plan, the TensorRT version,
the kind of ONNX at hand and the options; the builder (``builder.py``) and the trtexec
command lines (``trtexec.py``) both only *carry out* an :class:`EngineBuildPlan`, so what
they will do is tested on machines without TensorRT. Flags are kept as the names of
TensorRT's enum members (``"FP16"`` is ``trt.BuilderFlag.FP16``).

Strongly typed (TensorRT >= 10): network flag ``STRONGLY_TYPED`` and no precision flag;
the ONNX must carry the plan (Q/DQ for int8 components, fp16 tensors and boundary casts
for fp16 components), which ``export.py`` prepares from the FP32 export, the plan and
the calibration table.

Weak typing (TensorRT 8.5 / 8.6): network flag ``EXPLICIT_BATCH``; ``FP16``/``INT8``
builder flags for the precisions the plan uses; a mixed plan also sets
``OBEY_PRECISION_CONSTRAINTS`` (or ``PREFER_...``) and one precision per network layer
by component; INT8 ranges come from the calibration cache (``calibration="cache"``) or,
for a QDQ ONNX, from its Q/DQ scales (``"qdq"``, whose int8 layers are then left alone:
constraining them again conflicts with the Q/DQ placement).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.export.tensorrt.versions import TYPINGS, TrtVersion, choose_typing

BUILD_PLAN_SCHEMA = 1
CONSTRAINTS = ("obey", "prefer")
_OPTION_KEYS = ("workspace", "dla", "gpu-fallback", "timing-cache", "typing", "constraints", "opt-level",
                "engine-cache")


@dataclass
class BuildOptions:
    workspace_mib: int | None = None  # None: TensorRT's default (the device's memory)
    dla_core: int | None = None  # Jetson Xavier/Orin DLA core; None: GPU only
    gpu_fallback: bool = True  # with DLA: layers DLA cannot run go to the GPU
    timing_cache: Path | None = None  # read before and updated after each build (faster rebuilds)
    typing: str = "auto"  # auto | strong | weak
    constraints: str = "obey"  # weak typing, mixed plans: obey | prefer
    optimization_level: int | None = None  # builder optimization level 0..5 (TensorRT 8.6+)
    engine_cache: Path | None = None  # folder of built engines keyed by build inputs (None: default)

    @classmethod
    def parse(cls, items: list[str] | tuple[str, ...]) -> "BuildOptions":
        """``["workspace=2048", "dla=0", "timing-cache=t.cache", "typing=weak"]`` -> options."""
        opts = cls()
        for item in items:
            key, sep, value = item.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep or key not in _OPTION_KEYS:
                raise EdgesegError(f"cannot read TensorRT option {item!r}",
                                   f"use KEY=VALUE with KEY one of: {', '.join(_OPTION_KEYS)}")
            try:
                if key == "workspace":
                    opts.workspace_mib = int(value)
                elif key == "dla":
                    opts.dla_core = int(value)
                elif key == "gpu-fallback":
                    opts.gpu_fallback = value.lower() in ("1", "true", "yes", "on")
                elif key == "timing-cache":
                    opts.timing_cache = Path(value)
                elif key == "typing":
                    opts.typing = value
                elif key == "constraints":
                    opts.constraints = value
                elif key == "opt-level":
                    opts.optimization_level = int(value)
                elif key == "engine-cache":
                    opts.engine_cache = Path(value)
            except ValueError as e:
                raise EdgesegError(f"TensorRT option {key} needs a number, got {value!r}",
                                   f"e.g. {key}=0" if key != "workspace" else "e.g. workspace=2048 (MiB)") from e
        opts.validate()
        return opts

    def validate(self) -> None:
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise EdgesegError(f"workspace must be at least 1 MiB (got {self.workspace_mib})", "e.g. workspace=2048")
        if self.dla_core is not None and self.dla_core < 0:
            raise EdgesegError(f"DLA core {self.dla_core} does not exist", "Xavier and Orin have DLA cores 0 and 1")
        if self.typing not in TYPINGS:
            raise EdgesegError(f"unknown typing {self.typing!r}", f"use one of: {', '.join(TYPINGS)}")
        if self.constraints not in CONSTRAINTS:
            raise EdgesegError(f"unknown precision constraints {self.constraints!r}",
                               "use constraints=obey (fail when a layer cannot run as planned) or prefer")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise EdgesegError(f"builder optimization level {self.optimization_level} is out of range",
                               "use opt-level=0..5 (TensorRT's default is 3)")


@dataclass
class EngineBuildPlan:
    trt_version: str
    typing: str  # strong | weak
    precisions: dict[str, str]  # component -> fp32 | fp16 | int8 (the precision plan)
    plan_spec: str
    onnx_kind: str  # "fp32" (untouched export) | "qdq" (Q/DQ and/or fp16 in the graph)
    network_flags: list[str]
    builder_flags: list[str]
    layer_precisions: dict[str, str] = field(default_factory=dict)  # component -> precision per layer (weak)
    calibration: str = "none"  # none | cache (calibrator serves our table) | qdq (scales in the ONNX)
    workspace_bytes: int | None = None
    dla_core: int | None = None
    optimization_level: int | None = None
    profiling_verbosity: str = "DETAILED"  # layer precisions readable by the engine inspector

    def to_dict(self) -> dict[str, Any]:
        return {"schema": BUILD_PLAN_SCHEMA, **asdict(self)}

    @property
    def uses_int8(self) -> bool:
        return "int8" in self.precisions.values()

    def cache_key(self, onnx_sha256: str, ranges_sha256: str | None, device: str) -> str:
        """sha256 of everything the engine depends on: ONNX, plan, ranges, TensorRT version, GPU."""
        payload = {"onnx": onnx_sha256, "plan": self.to_dict(), "ranges": ranges_sha256 or "",
                   "tensorrt": self.trt_version, "device": device}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def make_build_plan(precisions: dict[str, str], version: TrtVersion, onnx_kind: str,
                    options: BuildOptions | None = None, plan_spec: str | None = None) -> EngineBuildPlan:
    options = options or BuildOptions()
    options.validate()
    if onnx_kind not in ("fp32", "qdq"):
        raise ValueError(onnx_kind)
    bad = {c: p for c, p in precisions.items() if p not in ("fp32", "fp16", "int8")}
    if bad:
        raise EdgesegError(f"precision(s) {bad} have no TensorRT equivalent", "use fp32, fp16 or int8")
    typing = choose_typing(version, options.typing)
    used = set(precisions.values())
    spec = plan_spec or ",".join(f"{c}={p}" for c, p in precisions.items())
    if options.dla_core is not None and used == {"fp32"}:
        raise EdgesegError("the DLA runs fp16 and int8 layers only; an FP32 plan cannot use it",
                           "drop dla=N, or use a plan with fp16/int8 components")
    common = dict(trt_version=version.text, typing=typing, precisions=dict(precisions), plan_spec=spec,
                  onnx_kind=onnx_kind,
                  workspace_bytes=options.workspace_mib * (1 << 20) if options.workspace_mib else None,
                  dla_core=options.dla_core, optimization_level=options.optimization_level)
    fallback = ["GPU_FALLBACK"] if options.dla_core is not None and options.gpu_fallback else []
    if typing == "strong":
        if used != {"fp32"} and onnx_kind != "qdq":
            raise EdgesegError("a strongly typed build needs the plan written into the ONNX (Q/DQ + fp16)",
                               "build from the export folder (edgeseg writes the QDQ/fp16 ONNX itself) "
                               "or pass the ONNX made by `edgeseg quantize`")
        return EngineBuildPlan(network_flags=["STRONGLY_TYPED"], builder_flags=fallback,
                               calibration="qdq" if "int8" in used else "none", **common)

    flags: list[str] = []
    if "fp16" in used:
        flags.append("FP16")
    if "int8" in used:
        flags.append("INT8")
    calibration = "none"
    if "int8" in used:
        calibration = "qdq" if onnx_kind == "qdq" else "cache"
    layer_precisions: dict[str, str] = {}
    constrained = {c: p for c, p in precisions.items() if not (onnx_kind == "qdq" and p == "int8")}
    if len(used) > 1:  # uniform plans need no constraint: the flags alone allow one precision
        layer_precisions = constrained
        if layer_precisions:
            flags.append("OBEY_PRECISION_CONSTRAINTS" if options.constraints == "obey"
                         else "PREFER_PRECISION_CONSTRAINTS")
    return EngineBuildPlan(network_flags=["EXPLICIT_BATCH"], builder_flags=flags + fallback,
                           layer_precisions=layer_precisions, calibration=calibration, **common)
