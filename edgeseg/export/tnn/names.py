"""ONNX names -> names TNN can read, and the map back.

TNN splits its proto on commas and spaces and drops quotes, and splits the inputs line
on ``:``; a piece longer than 4095 characters is cut. So every blob and layer name is
rewritten to a safe alphabet, kept short, and made unique; the map from ONNX names to
TNN names goes into the manifest so results can be traced back to the ONNX graph.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_./\-]")
MAX_NAME = 200  # keeps a Concat of many inputs far below TNN's 4095-character piece limit


def sanitize(name: str, fallback: str = "x") -> str:
    """A TNN-safe spelling of ``name`` (no spaces, commas, quotes or colons; bounded length)."""
    safe = _UNSAFE.sub("_", name) or fallback
    if len(safe) > MAX_NAME:
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:10]
        safe = f"{safe[:MAX_NAME - 11]}_{digest}"
    return safe


class NameMap:
    """Unique TNN names for ONNX tensors (blobs) and nodes (layers), and for new ones."""

    def __init__(self) -> None:
        self.blobs: dict[str, str] = {}  # ONNX tensor -> TNN blob
        self.layers: dict[str, str] = {}  # ONNX node -> TNN layer (its main layer)
        self._used_blobs: set[str] = set()
        self._used_layers: set[str] = set()

    @staticmethod
    def _unique(base: str, used: set[str]) -> str:
        name, i = base, 1
        while name in used:
            i += 1
            name = f"{base}_{i}"
        used.add(name)
        return name

    def blob(self, onnx_name: str) -> str:
        if onnx_name not in self.blobs:
            self.blobs[onnx_name] = self._unique(sanitize(onnx_name, "blob"), self._used_blobs)
        return self.blobs[onnx_name]

    def new_blob(self, hint: str) -> str:
        """A blob for a tensor that exists only in the TNN graph (e.g. a Pad's output)."""
        return self._unique(sanitize(hint, "blob"), self._used_blobs)

    def layer(self, onnx_node: str) -> str:
        if onnx_node not in self.layers:
            self.layers[onnx_node] = self._unique(sanitize(onnx_node, "layer"), self._used_layers)
        return self.layers[onnx_node]

    def new_layer(self, hint: str) -> str:
        return self._unique(sanitize(hint, "layer"), self._used_layers)

    def renamed(self) -> dict[str, dict[str, str]]:
        """Only the names that changed (the manifest's ``name_map``)."""
        return {"blobs": {k: v for k, v in self.blobs.items() if k != v},
                "layers": {k: v for k, v in self.layers.items() if k != v}}
