"""Content hashes recorded in manifests and calibration tables (so stale data is detectable)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_lines(lines: Iterable[str]) -> str:
    """Hash of an ordered list of strings (e.g. the sorted calibration image list)."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def short(digest: str, n: int = 12) -> str:
    return digest[:n]


def relpath_or_name(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name
