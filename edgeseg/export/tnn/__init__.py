"""TNN backend: our own pure-Python ONNX -> ``.tnnproto`` / ``.tnnmodel`` writer and reader.

* :mod:`.format`  the in-memory model and the byte/text layout of both files
* :mod:`.graph`   ONNX graph view: constants folded, static shapes
* :mod:`.fuse`    GELU / LayerNorm pattern fusion (ARM has kernels for the fused layers)
* :mod:`.ops`     one converter per ONNX op type
* :mod:`.quant`   int8 layers and blob scales from a CalibrationTable
* :mod:`.writer`  ``export_tnn``: convert, preflight, apply the plan, write atomically
* :mod:`.reader`  read both files back (tests, ``edgeseg inspect``)

Nothing here imports torch or onnxruntime; ``onnx`` is imported when a graph is converted.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_tnn", "read_tnn", "convert", "TnnExportResult"]


def __getattr__(name: str) -> Any:
    # Lazy so `import edgeseg.export.tnn` stays cheap for the CLI.
    if name in ("export_tnn", "convert", "TnnExportResult"):
        from edgeseg.export.tnn import writer

        return getattr(writer, name)
    if name == "read_tnn":
        from edgeseg.export.tnn.reader import read_tnn

        return read_tnn
    raise AttributeError(name)
