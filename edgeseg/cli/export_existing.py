"""``edgeseg export FOLDER --to ...``: convert an existing export instead of exporting again.

The folder's FP32 graphs (the primary ONNX and any other graph its manifest records, e.g.
the video features graph) go to each target with ``--plan``. INT8 needs a calibration
table: the one the manifest records for the ONNX, else one computed now from ``--calib DIR``.
"""

from __future__ import annotations

from pathlib import Path

from edgeseg.errors import EdgesegError


def export_graphs(source: Path) -> list[Path]:
    """The FP32 graphs of an export: the primary ONNX first, then the other recorded graphs."""
    from edgeseg.export.manifest import Manifest
    from edgeseg.runtimes.base import resolve_artifact

    primary = resolve_artifact(source)
    if primary.suffix.lower() != ".onnx":
        raise EdgesegError(f"{source} does not resolve to an ONNX file ({primary.name})",
                           "pass the folder written by `edgeseg export` or its .onnx")
    manifest = Manifest.load(primary)
    if not _fp32(manifest.artifacts.get(primary.name, {})):
        raise EdgesegError(f"{primary.name} is a quantized ONNX; conversions start from the FP32 export",
                           "pass the export folder (or its FP32 .onnx) and the plan with --plan")
    others = [primary.parent / name for name, i in manifest.artifacts.items()
              if name != primary.name and i.get("kind") == "onnx" and i.get("graph") not in (None, "frame")
              and _fp32(i) and (primary.parent / name).is_file()]
    return [primary, *others]


def _fp32(info: dict) -> bool:
    precisions = (info.get("precision") or {}).get("precisions") or {}
    return all(p == "fp32" for p in precisions.values())


def _table(onnx: Path, plan_spec: str | None, calib_dir, calib_num: int) -> Path | None:
    from edgeseg.export.manifest import Manifest
    from edgeseg.quantize.pipeline import parse_plan

    if not plan_spec or not parse_plan(onnx, plan_spec).needs_calibration:
        return None
    if calib_dir is not None:
        from edgeseg.quantize.pipeline import run_calibration

        return run_calibration(onnx, calib_dir, num=calib_num).table_path
    m = Manifest.load(onnx)
    names = [n for n, i in m.artifacts.items() if i.get("kind") == "calibration-table" and i.get("model") == onnx.name]
    if not names:
        raise EdgesegError(f"plan {plan_spec} has int8 components and {onnx.parent} records no calibration table",
                           f"add --calib DIR (images), or run `edgeseg calibrate {onnx} --images DIR` first")
    return onnx.parent / names[-1]


def convert_existing(source: Path, targets, plan_spec, calib_dir, calib_num, calib_source, tnn_device,
                     trt_options) -> None:
    if not targets:
        raise EdgesegError(f"{source} is already exported; nothing to do without --to",
                           "add --to tensorrt (or tnn, tflite), or pass a zoo model name to export again")
    paths = export_graphs(source)
    if plan_spec:
        from edgeseg.quantize.pipeline import parse_plan

        parse_plan(paths[0], plan_spec)  # a wrong plan fails before any conversion
    table = _table(paths[0], plan_spec, calib_dir, calib_num)
    if "tnn" in targets:
        from edgeseg.export.tnn.artifacts import export_tnn_graphs, print_tnn_results

        print_tnn_results(export_tnn_graphs(paths, plan_spec, table, tnn_device))
    if "tflite" in targets:
        from edgeseg.export.tflite import export_tflite_graphs, print_tflite_results

        print_tflite_results(export_tflite_graphs(paths, plan_spec, table, calib_dir, calib_source))
    if "tensorrt" in targets:
        from edgeseg.export.tensorrt.export import export_tensorrt_graphs, print_tensorrt_results

        print_tensorrt_results(export_tensorrt_graphs(paths, plan_spec, table, trt_options))
