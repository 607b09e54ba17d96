"""TNN files for an exported artifact folder (what ``edgeseg export --to tnn`` runs).

Every ONNX graph of the folder (the frame graph and, for video models, the features
graph) becomes ``<graph>.tnnproto`` + ``<graph>.tnnmodel`` beside it, with the same
precision plan; int8 plans use the calibration table computed on the frame graph, whose
tensor names the features graph shares.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeseg.export.tnn.writer import TnnExportResult, export_tnn


def plan_for(onnx_path: Path, spec: str | None):
    """Parse ``spec`` against the manifest's components (or the graph's tags without one)."""
    if not spec:
        return None
    from edgeseg.export.manifest import Manifest, find_manifest

    if find_manifest(onnx_path):
        return Manifest.load(onnx_path).plan(spec)
    import onnx

    from edgeseg.export import tags
    from edgeseg.quantize.plan import PrecisionPlan

    model = onnx.load(str(onnx_path), load_external_data=False)
    components = [c for c in dict.fromkeys(tags.get_component(n) for n in model.graph.node) if c]
    return PrecisionPlan.parse(spec, components)


def export_tnn_graphs(onnx_paths: list[str | os.PathLike], plan_spec: str | None = None,
                      table_path: str | os.PathLike | None = None, device: str = "arm") -> list[TnnExportResult]:
    """Convert each graph into its own folder; the first one is the graph the table was computed on."""
    from edgeseg.quantize.cache import CalibrationTable

    paths = [Path(p) for p in onnx_paths]
    plan = plan_for(paths[0], plan_spec)
    table = CalibrationTable.load(table_path) if table_path and plan is not None and plan.needs_calibration else None
    return [export_tnn(p, p.parent, plan=plan, table=table, device=device, check_table=(i == 0), other_graph=(i > 0))
            for i, p in enumerate(paths)]


def print_tnn_results(results: list[TnnExportResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="TNN")
    for col in ("file", "layers", "precision", "int8 layers", "size", "TNNTest flags"):
        table.add_column(col, overflow="fold")
    for r in results:
        precision = ",".join(f"{c}={p}" for c, p in r.precisions.items())
        size = (r.proto_path.stat().st_size + r.model_path.stat().st_size) / 1e6
        table.add_row(r.proto_path.name, str(r.layers), precision, str(len(r.quantized_layers)), f"{size:.1f} MB",
                      " ".join(r.test_flags))
    console.print(table)
    for r in results:
        for w in r.warnings:
            console.print(f"  [yellow]warn[/yellow] {r.proto_path.name}: {w}")
