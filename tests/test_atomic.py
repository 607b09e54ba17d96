"""Atomic writes: nothing half-written on failure."""

from __future__ import annotations

import pytest

from edgeseg.utils import atomic


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("fail mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    atomic.write_text(target, "new")
    assert target.read_text() == "new"


def test_atomic_directory_all_or_nothing(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(KeyError):
        with atomic.atomic_directory(out) as d:
            (d / "model.onnx").write_bytes(b"x")
            raise KeyError("fail")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with atomic.atomic_directory(out) as d:
        (d / "model.onnx").write_bytes(b"v1")
    with atomic.atomic_directory(out) as d:
        (d / "model.onnx").write_bytes(b"v2")
    assert (out / "model.onnx").read_bytes() == b"v2"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def test_atomic_directory_without_overwrite_refuses(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    with pytest.raises(FileExistsError):
        with atomic.atomic_directory(out, overwrite=False) as d:
            (d / "f").write_text("x")
    assert list(out.iterdir()) == []


def test_artifacts_get_the_umask_mode_not_the_tempfile_mode(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        f = atomic.write_text(tmp_path / "r.json", "{}")
        with atomic.atomic_directory(tmp_path / "d") as d:
            (d / "x").write_text("x")
    finally:
        os.umask(old)
    assert f.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
