"""The one ``Runtime`` interface every backend implements.

A runtime is loaded from an artifact, reports its inputs and outputs, and runs a dict of
numpy feeds to a dict of numpy outputs. Backends live in their own modules and are
imported only when used (Polygraphy style), so the CLI works without TensorFlow or
TensorRT installed.
"""

from __future__ import annotations

import abc
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError


@dataclass
class TensorInfo:
    name: str
    shape: list[Any]  # ints, or strings for symbolic dims
    dtype: str  # numpy dtype name: float32, float16, int8, uint8, int64...

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class Runtime(abc.ABC):
    """Load once, run many times. ``threads`` is the number of compute threads (1 = one core)."""

    backend: str = "?"
    # How int8 is computed (edgeseg.runtimes.numerics): ONNX Runtime sets simulated or
    # fused per session; every other backend runs its own kernels ("native").
    numerics: str = "native"

    def __init__(self, path: str | os.PathLike, threads: int = 1, **options: Any):
        self.path = Path(path)
        self.threads = threads
        self.options = options

    @abc.abstractmethod
    def inputs(self) -> list[TensorInfo]: ...

    @abc.abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Validate ``feeds`` (names, shapes: one clear error instead of a backend's stack
        trace), then run. Backends implement :meth:`_run`, so none can skip the check
        (Polygraphy's ``infer`` / ``infer_impl`` split)."""
        self.check_feeds(feeds)
        out = self._run(feeds, output_names)
        if output_names:
            missing = [n for n in output_names if n not in out]
            if missing:
                raise EdgesegError(f"{self.path.name} has no output {', '.join(map(repr, missing))}",
                                   f"its outputs: {', '.join(out)}")
            out = {n: out[n] for n in output_names}
        return out

    @abc.abstractmethod
    def _run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run already validated ``feeds``; all outputs, or only ``output_names`` where the
        backend can restrict them."""

    def close(self) -> None:  # pragma: no cover - backends override when they hold resources
        pass

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- helpers
    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Clear errors for missing inputs and wrong shapes (instead of a backend stack trace)."""
        for info in self.inputs():
            if info.name not in feeds:
                raise EdgesegError(f"missing input {info.name!r}",
                                   f"the model takes: {', '.join(i.name for i in self.inputs())}")
            got = tuple(feeds[info.name].shape)
            want = tuple(info.shape)
            if len(got) != len(want) or any(isinstance(w, int) and w > 0 and w != g for g, w in zip(got, want)):
                raise EdgesegError(f"input {info.name!r} has shape {got}, the model expects {want}",
                                   "re-export with `--input-size` matching your data, or resize the input")

    def random_feeds(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Feeds of the right shapes and dtypes (for benchmarks and smoke tests)."""
        rng = np.random.default_rng(seed)
        feeds = {}
        for info in self.inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in info.shape]
            if np.issubdtype(np.dtype(info.dtype), np.floating):
                feeds[info.name] = rng.standard_normal(shape).astype(info.dtype)
            else:
                feeds[info.name] = rng.integers(0, 100, shape).astype(info.dtype)
        return feeds


# backend name -> "module:Class"; imported on first use only. TensorRT engines run in
# process where TensorRT is installed (a Jetson, a GPU host); elsewhere trtexec times them
# on the device (benchmark/targets/ssh.py).
BACKENDS: dict[str, str] = {
    "onnxruntime": "edgeseg.runtimes.onnxruntime:OnnxRuntimeRuntime",
    "torch": "edgeseg.runtimes.torch_eager:TorchEagerRuntime",
    "tflite": "edgeseg.runtimes.tflite:TFLiteRuntime",
    "tensorrt": "edgeseg.runtimes.tensorrt:TensorRTRuntime",
}

# file suffix -> backend
SUFFIXES: dict[str, str] = {
    ".onnx": "onnxruntime",
    ".tflite": "tflite",
    ".pt": "torch",
    ".pth": "torch",
    ".safetensors": "torch",
    ".engine": "tensorrt",
}


def backend_for(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise EdgesegError(f"don't know which runtime runs {Path(path).name!r}",
                           f"pass one of: {', '.join(sorted(SUFFIXES))} (or --backend)")
    return SUFFIXES[suffix]


def resolve_artifact(path: str | os.PathLike) -> Path:
    """A file, or an artifact folder (its manifest's primary artifact)."""
    p = Path(path)
    if p.is_dir():
        from edgeseg.export.manifest import Manifest

        m = Manifest.load(p)
        primary = next((f for f, info in m.artifacts.items() if info.get("primary")), None)
        primary = primary or next(iter(m.artifacts), None)
        if primary is None:
            raise EdgesegError(f"{p} has a manifest but no artifacts", "re-run `edgeseg export`")
        p = p / primary
    if not p.exists():
        raise EdgesegError(f"artifact {p} does not exist", "check the path, or run `edgeseg export` first")
    return p


def load_runtime(path: str | os.PathLike, backend: str | None = None, threads: int = 1,
                 numerics: str | None = None, **options: Any) -> Runtime:
    """Open an artifact with the right backend (by suffix unless ``backend`` is given).

    ``numerics`` (``simulated`` | ``fused``, see :mod:`edgeseg.runtimes.numerics`) applies to
    ONNX Runtime; ``None`` keeps the runtime's default (simulated). Other backends run
    their own kernels whatever is asked (their ``numerics`` reads ``native``).
    """
    from edgeseg.runtimes.numerics import check_numerics

    p = resolve_artifact(path)
    name = backend or backend_for(p)
    if name not in BACKENDS:
        raise EdgesegError(f"unknown backend {name!r}", f"use one of: {', '.join(BACKENDS)}")
    if numerics is not None:
        check_numerics(numerics)
        if name == "onnxruntime":
            options["numerics"] = numerics
    module, cls = BACKENDS[name].split(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        extra = {"tflite": "pip install 'edgeseg[tflite]'", "tensorrt": "pip install 'edgeseg[tensorrt]'"}
        raise EdgesegError(f"the {name} backend is not available: {e}",
                           extra.get(name, "reinstall edgeseg")) from e
    return getattr(mod, cls)(p, threads=threads, **options)
