"""The Python API: a few lines from an ``nn.Module`` to a normal export folder.

``edgeseg.export(model, out_dir, ...)`` (this module's :func:`export_model`) exports a zoo
model as is, and a user's own module after giving it the contract's attributes
(:func:`edgeseg.models.user.wrap_user_model`). The folder it writes is the same as
``edgeseg export``'s: tagged, parity-checked ONNX + manifest, ready for ``calibrate``,
``quantize``, ``--to tflite|tnn``, ``bench`` and ``sweep``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping


def export_model(model, out_dir: str | os.PathLike, *, components: Mapping[str, str] | str | None = None,
                 input_size: int | tuple[int, int] | str | None = None, output_names=None, mean=None, std=None,
                 decoder: str | None = None, name: str | None = None, simplifier: str = "onnxslim",
                 graphs: tuple[str, ...] | None = None, overwrite: bool = True):
    """Export ``model`` into ``out_dir``; returns :class:`edgeseg.export.onnx.ExportResult`."""
    from edgeseg.export.onnx import export_onnx
    from edgeseg.models.user import wrap_user_model

    zoo = isinstance(getattr(model, "family", None), str)
    if not zoo or any(v is not None for v in (components, input_size, output_names, mean, std, decoder, name)):
        info: dict[str, Any] = {"kind": "user", "entry": f"{type(model).__module__}.{type(model).__qualname__}"}
        model = wrap_user_model(model, name=name, components=components, input_size=input_size,
                                output_names=output_names, mean=mean, std=std, decoder=decoder,
                                source=getattr(model, "edgeseg_source", None) or info)
    model.eval()
    return export_onnx(model, out_dir, simplifier=simplifier, graphs=graphs, overwrite=overwrite)
