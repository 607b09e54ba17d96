"""A quantized frame graph's features graph, at the same plan and with the same scales.

Kernel reuse runs two graphs: the frame graph on keyframes, the features graph on the
frames in between. When the frame graph is quantized (``edgeseg quantize``), the features
graph must be quantized the same way, or reuse frames would see different mask features
than keyframes. Both graphs are exported from the same modules, so their backbone and
mask-decoder tensors carry the same names: the frame graph's calibration table covers
the features graph, and the plan restricted to the features graph's components (it has
no instance decoder) gives the very same QDQ scales. The result is checked: on one
input, both quantized graphs must give the same ``mask_features``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError

# Same ops, same scales, same weights: the two graphs' mask features agree to float
# rounding (measured 0.0 on mobileinst_test); anything larger means different quantization.
MATCH_TOLERANCE = 1e-4


def features_name(frame_file: str) -> str:
    """``m.mixed.onnx`` -> ``m.features.mixed.onnx`` (the export's naming, plan kept)."""
    stem, dot, rest = frame_file.partition(".")
    return f"{stem}.features.{rest}" if dot else f"{stem}.features"


def _fp32_features_of(manifest, source: str) -> str:
    from edgeseg.track.kernel_reuse import pick_video_graphs

    _, features = pick_video_graphs(manifest, source)
    if features is None:
        raise EdgesegError(f"the export behind {source} has no features graph",
                           "re-export with `edgeseg export MODEL` (it writes <model>.features.onnx by default)")
    return features


def has_features_graph(folder: str | os.PathLike, source: str) -> bool:
    """Whether the export behind the fp32 frame graph ``source`` also wrote a features graph."""
    from edgeseg.export.manifest import Manifest, find_manifest

    if find_manifest(Path(folder)) is None:
        return False
    from edgeseg.track.kernel_reuse import pick_video_graphs

    manifest = Manifest.load(folder)
    if manifest.artifacts.get(source, {}).get("graph", "frame") != "frame":
        return False
    return pick_video_graphs(manifest, source)[1] is not None


def quantize_features_graph(folder: str | os.PathLike, frame_file: str, table=None) -> Path:
    """Write (and record in the manifest) the features graph matching the quantized
    ``frame_file`` of an artifact folder; returns its path. ``table`` is the calibration
    table used for the frame graph (default: the one recorded for it in the manifest)."""
    from edgeseg.export.manifest import Manifest
    from edgeseg.export.tags import nodes_by_component
    from edgeseg.quantize.cache import CalibrationTable
    from edgeseg.quantize.calibrate import load_onnx
    from edgeseg.quantize.plan import PrecisionPlan
    from edgeseg.quantize.qdq import quantize_model
    from edgeseg.utils import atomic
    from edgeseg.utils.hashing import sha256_file

    folder = Path(folder)
    manifest = Manifest.load(folder)
    entry = manifest.artifact(frame_file)
    source = entry.get("source")
    if entry.get("graph", "frame") != "frame" or not source or source not in manifest.artifacts:
        raise EdgesegError(f"{frame_file} is not a quantized frame graph recorded with its source",
                           "quantize the exported frame graph with `edgeseg quantize`")
    fp32_features = _fp32_features_of(manifest, source)
    features_model = load_onnx(folder / fp32_features)
    components = [c for c in nodes_by_component(features_model) if c]
    precisions = (entry.get("precision") or {}).get("precisions") or {}
    missing = [c for c in components if c not in precisions]
    if missing:
        raise EdgesegError(f"the plan of {frame_file} does not cover {', '.join(missing)}",
                           "re-quantize the frame graph with a plan for every component")
    # Units of the plan inside the features graph's components stay (its mask features must
    # match the frame graph's); those in components it lacks are skipped.
    from edgeseg.quantize.units import plan_for_graph

    exceptions = (entry.get("precision") or {}).get("exceptions") or {}
    plan = plan_for_graph(PrecisionPlan({c: precisions[c] for c in components},
                                        name=(entry.get("precision") or {}).get("name"),
                                        exceptions={u: p for u, p in exceptions.items()
                                                    if u.startswith("re:") or u.split("/")[0] in components}),
                          features_model)
    calibration = entry.get("calibration")
    if plan.needs_calibration and table is None:
        if not calibration or not calibration.get("table"):
            raise EdgesegError(f"{frame_file} has int8 components but no calibration table is recorded",
                               "re-quantize it with `edgeseg quantize ... --calib TABLE` inside the artifact folder")
        table = CalibrationTable.load(folder / calibration["table"])
    if plan.needs_calibration:
        # The table must be the one measured on this export's fp32 frame graph: then its
        # tensor names are the features graph's too.
        table.check_model(manifest.artifact(source).get("sha256") or sha256_file(folder / source),
                          what=f"model than {source}")
    activation = (entry.get("quantization") or {}).get("activation_dtype", "uint8")
    qmodel, report = quantize_model(features_model, plan, table, activation)
    out_name = features_name(frame_file)
    out = folder / out_name
    import onnx

    with atomic.atomic_path(out) as tmp:
        onnx.save(qmodel, os.fspath(tmp))
        diff = _mask_features_difference(folder / frame_file, tmp)
        if diff > MATCH_TOLERANCE:
            raise EdgesegError(f"the quantized features graph gives mask features {diff:.3g} away from "
                               f"{frame_file}'s (tolerance {MATCH_TOLERANCE})",
                               "report this with the model and plan; track with --reuse 1 meanwhile")

    def record(m) -> None:
        m.add_artifact(out_name, kind="onnx", graph="features", primary=False, source=fp32_features,
                       precision=plan.to_dict(), calibration=calibration, quantization=report.to_dict(),
                       sha256=sha256_file(out), frame_graph=frame_file, mask_features_max_abs_diff=diff)
        m.artifact(frame_file)["features"] = out_name
        m.record("quantize-features", frame_graph=frame_file, output=out_name, plan=plan.spec())

    record(manifest)
    manifest.save(folder)
    return out


def _mask_features_difference(frame_path: Path, features_path: Path) -> float:
    """Max abs difference of ``mask_features`` of the two graphs on one seeded input."""
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    # Simulated Q/DQ: the check compares the quantization itself, not this CPU's kernels.
    frame = OnnxRuntimeRuntime(frame_path, threads=1, numerics="simulated")
    feats = OnnxRuntimeRuntime(features_path, threads=1, numerics="simulated")
    x: dict[str, Any] = frame.random_feeds(0)
    a = frame.run(x)["mask_features"]
    b = feats.run(x)["mask_features"]
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
