"""Atomic writes: nothing half-written on failure."""

from __future__ import annotations

import pytest

from edgeseg.errors import EdgesegError
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
    with atomic.atomic_directory(out, owned={"model.onnx"}) as d:
        (d / "model.onnx").write_bytes(b"v2")
    assert (out / "model.onnx").read_bytes() == b"v2"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def test_atomic_directory_replaces_only_the_files_it_owns(tmp_path):
    """Before: the whole folder was renamed away and deleted, user files included."""
    out = tmp_path / "art"
    out.mkdir()
    (out / "important.txt").write_text("mine")
    (out / "old.onnx").write_text("written by edgeseg before")
    (out / "sub").mkdir()
    (out / "sub" / "a.png").write_text("edgeseg's")
    with atomic.atomic_directory(out, owned=lambda: {"old.onnx", "sub/a.png"}) as d:
        (d / "new.onnx").write_text("new")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["important.txt", "new.onnx"]
    assert (out / "important.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temporary or backup left


def test_atomic_directory_never_replaces_a_file_it_does_not_own(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "model.onnx").write_text("the user's own model")
    (out / "edgeseg.txt").write_text("ours")
    with pytest.raises(EdgesegError, match="in the way"):
        with atomic.atomic_directory(out, owned={"edgeseg.txt"}) as d:
            (d / "model.onnx").write_text("new")
    assert (out / "model.onnx").read_text() == "the user's own model"
    assert (out / "edgeseg.txt").read_text() == "ours"  # nothing moved before the refusal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_atomic_directory_puts_old_files_back_when_moving_in_fails(tmp_path, monkeypatch):
    import os

    out = tmp_path / "art"
    out.mkdir()
    (out / "a.onnx").write_text("old a")
    (out / "b.onnx").write_text("old b")
    real_replace = os.replace
    calls = {"n": 0}

    def flaky(src, dst):
        if str(src).endswith("b.onnx") and ".tmp" in str(src):
            calls["n"] += 1
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", flaky)
    with pytest.raises(OSError):
        with atomic.atomic_directory(out, owned={"a.onnx", "b.onnx"}) as d:
            (d / "a.onnx").write_text("new a")
            (d / "b.onnx").write_text("new b")
    assert calls["n"] == 1
    assert (out / "a.onnx").read_text() == "old a" and (out / "b.onnx").read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


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
