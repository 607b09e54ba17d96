"""Plan, calibration table and sample inputs for each graph of an artifact, per target.

``edgeseg export --to tnn|tflite --plan P`` converts every graph of an export. By default
all graphs take the frame graph's plan and table: a graph built from the same modules on
the same image (MobileInst's features graph) shares the frame graph's tensor names.
Graphs that take other inputs (the contract's ``TensorSpec`` extra inputs: YolactEdge's
flow and warped graphs take keyframe features) or hold a component the frame graph lacks
need their own: the family names a ``graph_calibration`` hook
(``hook(settings, plan, table, plans_only=False) -> settings``) that returns them;
``plans_only`` asks for the plans alone (target preflights run before calibration).
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
    hook = _hook(paths[0]) if plan is not None and len(paths) > 1 else None
    return default if hook is None else list(hook(default, plan, table))


def plan_for_graph(path, plan, family_name: str | None = None):
    """The plan one graph of an export runs at (the frame plan, or the family's extension of
    it for that graph): what a target's preflight checks before any calibration (the
    manifest may not be written yet: then ``family_name`` says whose hook applies)."""
    hook = _hook(Path(path), family_name) if plan is not None else None
    if hook is None:
        return plan
    return hook([GraphSettings(Path(path), plan, None, False)], plan, None, plans_only=True)[0].plan


def _hook(path: Path, family_name: str | None = None):
    from edgeseg.export.manifest import Manifest, find_manifest

    if family_name is None and find_manifest(path):
        family_name = Manifest.load(path).family
    if not family_name:
        return None
    from edgeseg.models.registry import family

    fam = family(family_name)
    return fam.load("graph_calibration") if fam.graph_calibration is not None else None
