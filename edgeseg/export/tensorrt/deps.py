"""Lazy imports of TensorRT and a CUDA binding, each missing one a single clear error.

Nothing in edgeseg imports ``tensorrt`` at module level: ``edgeseg --help``, manifests,
plans and the trtexec command lines work on machines without it (this one included).
"""

from __future__ import annotations

import importlib
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.export.tensorrt.versions import MIN_SUPPORTED, TrtVersion

INSTALL_LINE = "pip install 'edgeseg[tensorrt]'"
JETSON_LINE = "on a Jetson, TensorRT comes with JetPack: `sudo apt install python3-libnvinfer` (and pycuda)"


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, checked to be a version edgeseg builds for."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as e:
        raise EdgesegError(f"the TensorRT Python package is not installed ({e})",
                           f"{INSTALL_LINE} on a machine with an NVIDIA GPU; {JETSON_LINE}") from e
    version = tensorrt_version(trt)
    if not version.at_least(*MIN_SUPPORTED):
        raise EdgesegError(f"TensorRT {version} is too old (edgeseg needs {'.'.join(map(str, MIN_SUPPORTED))}+)",
                           "upgrade to JetPack 5.1+ or TensorRT 8.5+")
    return trt


def tensorrt_version(trt: Any) -> TrtVersion:
    return TrtVersion.parse(getattr(trt, "__version__", "0"))


# CUDA memory for the runtime: pycuda (what JetPack's samples use) or NVIDIA's cuda-python
# (``cuda.bindings.runtime`` from 12.6 on, ``cuda.cudart`` before).
CUDA_MODULES = ("pycuda.driver", "cuda.bindings.runtime", "cuda.cudart")


def import_cuda() -> tuple[str, Any]:
    """``(name, module)`` of the first CUDA binding that imports."""
    errors = []
    for name in CUDA_MODULES:
        try:
            return name, importlib.import_module(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise EdgesegError("no CUDA Python binding is installed (" + "; ".join(errors) + ")",
                       f"{INSTALL_LINE} (installs cuda-python), or `pip install pycuda`")
