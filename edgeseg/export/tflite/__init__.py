"""TFLite backend: ONNX -> ``.tflite`` through onnx2tf and TensorFlow's converter.

* :mod:`.converter`   ``export_tflite``: validate, run the worker, check parity, write atomically
* :mod:`.worker`      the TensorFlow side, run as ``python -m edgeseg.export.tflite.worker JOB.json``
* :mod:`.mapping`     TFLite op <-> ONNX node <-> component, from the conversion record
* :mod:`.flatbuffer`  read / patch the flatbuffer (ranges, fp16 weights) with TFLite's schema
* :mod:`.compat`      preflight (``edgeseg check --target tflite``): Flex, broken and int8-lossy ops

Nothing here imports TensorFlow in the caller's process; ``import edgeseg.export.tflite``
imports nothing heavy (the names below are loaded on first use).
"""

from __future__ import annotations

from typing import Any

# Public names of the converter, re-exported lazily so the CLI stays cheap to import.
_CONVERTER_NAMES = ("export_tflite", "export_tflite_graphs", "print_tflite_results", "build_tflite_artifact",
                    "check_toolchain", "first_divergence", "TFLiteExport", "CALIB_SOURCES", "TOOLCHAIN",
                    "INSTALL_FIX", "preflight", "_wait_showing_stages")

__all__ = list(_CONVERTER_NAMES)


def __getattr__(name: str) -> Any:
    if name in _CONVERTER_NAMES:
        from edgeseg.export.tflite import converter

        return getattr(converter, name)
    raise AttributeError(name)
