"""Per-target preflight: will this ONNX graph convert and run on the target device?

``check(onnx_model, target, device)`` returns a :class:`CompatReport`: one item per
problem, grouped by op type, component, reason and fix, with the ONNX nodes it concerns.
``error`` items stop an export; ``warn`` items run but cost speed or precision.

Each target is one module with a ``check(onnx_model, device=None, plan=None)`` function,
registered in :data:`CHECKERS`; adding a target is a module plus one line there.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeseg.errors import EdgesegError

# target -> "module:function"; modules are imported only when their target is checked.
CHECKERS: dict[str, str] = {
    "tnn": "edgeseg.export.compat.tnn:check",
    "tflite": "edgeseg.export.tflite.compat:check",
}

SEVERITIES = ("error", "warn")


@dataclass
class CompatItem:
    op_type: str
    nodes: list[str]
    component: str
    severity: str  # "error": conversion or loading fails; "warn": runs, slower or less precise
    reason: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompatReport:
    target: str
    device: str | None
    items: list[CompatItem] = field(default_factory=list)
    checked_nodes: int = 0

    @property
    def errors(self) -> list[CompatItem]:
        return [i for i in self.items if i.severity == "error"]

    @property
    def warnings(self) -> list[CompatItem]:
        return [i for i in self.items if i.severity == "warn"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, op_type: str, node: str, component: str, severity: str, reason: str, fix: str) -> None:
        """Add one node's problem, merging it into an item with the same op, component, reason and fix."""
        if severity not in SEVERITIES:
            raise ValueError(severity)
        for item in self.items:
            if (item.op_type, item.component, item.severity, item.reason, item.fix) == (
                    op_type, component, severity, reason, fix):
                if node not in item.nodes:
                    item.nodes.append(node)
                return
        self.items.append(CompatItem(op_type, [node], component, severity, reason, fix))

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "device": self.device, "ok": self.ok, "checked_nodes": self.checked_nodes,
                "errors": len(self.errors), "warnings": len(self.warnings),
                "items": [i.to_dict() for i in self.items]}

    def as_error(self) -> EdgesegError:
        """One error naming every failing op, its nodes and its fix."""
        lines = []
        for item in self.errors:
            where = ", ".join(item.nodes[:3]) + (f" (+{len(item.nodes) - 3} more)" if len(item.nodes) > 3 else "")
            comp = f" [{item.component}]" if item.component else ""
            lines.append(f"{item.op_type}{comp} at {where}: {item.reason} -> fix: {item.fix}")
        device = f" ({self.device})" if self.device else ""
        return EdgesegError(
            f"{len(self.errors)} problem(s) stop the {self.target}{device} export:\n    " + "\n    ".join(lines),
            f"apply the fixes above; `edgeseg check MODEL.onnx --target {self.target}` lists everything")


def _load(onnx_model):
    if isinstance(onnx_model, (str, os.PathLike)):
        from edgeseg.export.tnn.writer import _load as load_onnx

        return load_onnx(onnx_model)[0]
    return onnx_model


def check(onnx_model, target: str, device: str | None = None, plan=None) -> CompatReport:
    """Preflight ``onnx_model`` (path or ModelProto) for ``target``."""
    if target not in CHECKERS:
        raise EdgesegError(f"unknown target {target!r}", f"use one of: {', '.join(sorted(CHECKERS))}")
    module, fn = CHECKERS[target].split(":")
    return getattr(importlib.import_module(module), fn)(_load(onnx_model), device=device, plan=plan)


def print_report(report: CompatReport, console=None) -> None:
    """A table of the report's items (rich), then a one-line verdict."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    device = f" on {report.device}" if report.device else ""
    if report.items:
        table = Table(title=f"{report.target}{device}: {report.checked_nodes} nodes checked", show_lines=False)
        for col in ("severity", "op", "component", "nodes", "reason", "fix"):
            table.add_column(col, overflow="fold")
        for item in sorted(report.items, key=lambda i: (SEVERITIES.index(i.severity), i.op_type)):
            nodes = ", ".join(item.nodes[:3]) + (f" +{len(item.nodes) - 3}" if len(item.nodes) > 3 else "")
            style = "red" if item.severity == "error" else "yellow"
            table.add_row(f"[{style}]{item.severity}[/{style}]", item.op_type, item.component or "-",
                          nodes, item.reason, item.fix)
        console.print(table)
    verdict = "[green]OK[/green]" if report.ok else "[red]FAILS[/red]"
    console.print(f"{verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s) "
                  f"for {report.target}{device}")
