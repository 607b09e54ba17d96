"""What every zoo model exposes to the toolchain.

A zoo model is a ``torch.nn.Module`` that also carries:

* ``component_map``: ordered component name -> attribute path of the sub-module. Export
  tags every ONNX node with the component whose module scope produced it, and precision
  plans are written in these names.
* ``input_spec``: default input size, layout and normalisation (written to the manifest).
* ``output_names``: names of the tensors ``forward`` returns, in order (ONNX output names).

This module is torch-free so manifests and plans can be handled without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ComponentMap:
    """Ordered mapping component -> module path (``"backbone" -> "backbone"``)."""

    components: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        return list(self.components)

    def module_path(self, component: str) -> str:
        return self.components[component]

    def component_for_scope(self, scope: str) -> str | None:
        """The component owning an ONNX node name / torch scope like ``/backbone/stem/Conv``.

        The longest matching module path wins, so nested components (``head`` inside
        ``decoder``) resolve to the innermost one.
        """
        parts = [p for p in scope.replace(".", "/").split("/") if p]
        best, best_len = None, -1
        for comp, path in self.components.items():
            mp = [p for p in path.replace(".", "/").split("/") if p]
            if len(mp) > best_len and parts[: len(mp)] == mp:
                best, best_len = comp, len(mp)
        return best

    def to_dict(self) -> dict[str, str]:
        return dict(self.components)

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> "ComponentMap":
        return cls(dict(d))


@dataclass
class OutputSpec:
    name: str
    shape: list[int]
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
