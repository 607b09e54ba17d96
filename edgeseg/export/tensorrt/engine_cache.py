"""Built engines kept by what they were built from: ONNX, build plan, INT8 ranges, TensorRT, GPU.

A TensorRT build takes minutes on a Jetson; the same inputs always give an equivalent
engine, so an engine is stored under the sha256 of its inputs
(:meth:`~edgeseg.export.tensorrt.build_plan.EngineBuildPlan.cache_key`) and reused when
they recur (a re-export, a second sweep). Anything that changes the key -- another ONNX,
plan, calibration, TensorRT version or GPU -- builds anew; nothing is ever reused on a
guess. Entries are ``<dir>/<key[:2]>/<key>.engine`` with a ``.json`` beside it holding the
build plan and the engine's sha256 (checked on every read), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edgeseg.utils import atomic


def default_cache_dir() -> Path:
    base = os.environ.get("EDGESEG_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "edgeseg")
    return Path(base) / "tensorrt-engines"


def ranges_sha256(table) -> str | None:
    """sha256 of a calibration table's ranges (tensor -> range), canonical JSON; None without a table."""
    if table is None:
        return None
    ranges = {k: v.to_dict() for k, v in sorted(table.ranges.items())}
    return hashlib.sha256(json.dumps(ranges, sort_keys=True).encode()).hexdigest()


class EngineCache:
    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_cache_dir()

    def _paths(self, key: str) -> tuple[Path, Path]:
        if len(key) < 16 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key!r}")
        d = self.folder / key[:2]
        return d / f"{key}.engine", d / f"{key}.json"

    def get(self, key: str) -> tuple[bytes, dict[str, Any]] | None:
        engine, meta = self._paths(key)
        if not (engine.is_file() and meta.is_file()):
            return None
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        data = engine.read_bytes()
        if hashlib.sha256(data).hexdigest() != info.get("engine_sha256"):
            return None  # damaged or half-replaced: build again rather than trust it
        return data, info

    def put(self, key: str, engine_bytes: bytes, meta: dict[str, Any]) -> Path:
        engine, meta_path = self._paths(key)
        atomic.write_bytes(engine, engine_bytes)
        atomic.write_json(meta_path, {**meta, "key": key, "engine_sha256": hashlib.sha256(engine_bytes).hexdigest()})
        return engine
