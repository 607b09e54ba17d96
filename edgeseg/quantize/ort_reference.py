"""ONNX Runtime's own quantizer (``quantize_static``) as the reference our QDQ graphs are measured against.

What a user gets from ONNX Runtime in three lines: QDQ format, per-channel weights,
MinMax calibration, its default op types and activation / weight types, fed the same
calibration images we calibrate on. Benchmarks only (``benchmarks/int8_profile.py``,
``benchmarks/int8_vs_ort.py``); edgeseg's artifacts are written by :mod:`edgeseg.quantize.qdq`.

``ranges=`` builds the variant the decision in ``docs/architecture.md`` was measured on:
ONNX Runtime's quantizer fed *our* calibration table (one symmetric range per tensor, as
``TensorQuantOverrides``; its own calibration pass then only fills tensors we have no
range for) with the nodes outside the plan's int8 components excluded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable


class _Reader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over our preprocessed feeds."""

    def __init__(self, feeds: Iterable[dict[str, Any]]):
        self._it = iter(list(feeds))

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:  # some ORT versions call it between passes
        pass


def quantize_static_reference(src: str | os.PathLike, out: str | os.PathLike, feeds: Iterable[dict[str, Any]],
                              nodes_to_exclude: list[str] | None = None,
                              ranges: dict[str, float] | None = None, activation_type: str = "int8") -> Path:
    """Write ONNX Runtime's ``quantize_static`` output for ``src`` to ``out``.

    Defaults as ONNX Runtime ships them (QDQ, MinMax, its default op types, int8
    activations and weights) plus ``per_channel=True``. ``activation_type="uint8"`` is
    ONNX Runtime's own advice for x86. ``ranges`` (tensor -> amax) are given to it as
    symmetric overrides.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[activation_type]
    # Not CalibMaxIntermediateOutputs: in ONNX Runtime 1.32 it drops the batches it flushes.
    extra: dict[str, Any] = {}
    if ranges:
        import numpy as np

        # numpy scalars: ONNX Runtime's compute_scale_zp calls .dtype on them.
        extra["TensorQuantOverrides"] = {
            name: [{"rmin": np.float32(-amax), "rmax": np.float32(amax)}] for name, amax in ranges.items() if amax > 0}
        extra["ActivationSymmetric"] = True
    out = Path(out)
    # No quant_pre_process: it renames tensors, and the graphs compared must be the same
    # exported file (edgeseg's export already ran onnxslim on it).
    quantize_static(os.fspath(src), os.fspath(out), _Reader(feeds), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=qtype, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=nodes_to_exclude or [],
                    extra_options=extra)
    onnx.checker.check_model(os.fspath(out))
    return out
