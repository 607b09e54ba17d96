"""Plan, calibration table and sample inputs for each graph of an artifact, per target.

``edgeseg export --to tnn|tflite --plan P`` converts every graph of an export. By default
all graphs take the frame graph's plan and table: a graph built from the same modules on
the same image (MobileInst's features graph) shares the frame graph's tensor names.
Graphs that take other inputs (the contract's ``TensorSpec`` extra inputs: YolactEdge's
flow and warped graphs take keyframe features) or hold a component the frame graph lacks
need their own: the family names a ``graph_calibration`` hook
(``hook(settings, plan, table) -> settings``) that returns them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class GraphSettings:
    path: Path
    plan: Any                 # PrecisionPlan or None (fp32 as exported)
    table: Any                # CalibrationTable or None
    check_table: bool         # the table was computed on this very file
    extra_samples: dict[str, Any] | None = None  # input name -> [N, ...] arrays (TFLite conversion)


def settings_for_graphs(paths, plan, table) -> list[GraphSettings]:
    """One :class:`GraphSettings` per ONNX file, the frame graph (the one ``table`` was
    computed on) first."""
    paths = [Path(p) for p in paths]
    default = [GraphSettings(p, plan, table, i == 0) for i, p in enumerate(paths)]
    if plan is None or len(paths) < 2:
        return default
    from edgeseg.export.manifest import Manifest, find_manifest

    if not find_manifest(paths[0]):
        return default
    manifest = Manifest.load(paths[0])
    if not manifest.family:
        return default
    from edgeseg.models.registry import family

    fam = family(manifest.family)
    if fam.graph_calibration is None:
        return default
    return list(fam.load("graph_calibration")(default, plan, table))
