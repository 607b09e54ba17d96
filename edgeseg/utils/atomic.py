"""Write files and directories so that a failure never leaves a half-written artifact.

Everything is written to a temporary sibling (same filesystem, so the final
``os.replace`` is atomic) and renamed into place only when the block succeeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normal_mode(path: Path, is_dir: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give the final artifact the mode a plain
    ``open()``/``mkdir()`` would have (0666/0777 minus the umask), so others can read it."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The caller writes the temporary file however it likes (``onnx.save``, ``np.save``...).
    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            _normal_mode(tmp_path, tmp_path.is_dir())
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike,
                     owned: Iterable[str] | Callable[[], Iterable[str]] = ()) -> Iterator[Path]:
    """Yield a temporary directory; on success its files are put in place at ``path``.

    Used for artifact folders (model + manifest + caches), datasets and frame folders:

    * ``path`` absent or empty: the temporary folder is renamed to ``path``, one atomic step.
    * otherwise only the files edgeseg wrote there before (``owned``: relative POSIX paths,
      or a callable returning them at commit time) are replaced or removed; every other
      file in ``path`` stays, and ``path`` itself is never removed. A new file whose name
      is held by a file not in ``owned`` is refused before anything moves. The old files
      are moved aside first and put back if moving the new ones in fails.

    On any exception inside the block nothing at ``path`` changes.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        _normal_mode(tmp, is_dir=True)
        if final.is_dir() and not any(final.iterdir()):
            os.replace(tmp, final)  # rename(2) replaces an empty directory
        elif not final.exists():
            os.replace(tmp, final)
        else:
            _merge_into(tmp, final, set(owned() if callable(owned) else owned))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _expand_owned(final: Path, owned: set[str]) -> set[str]:
    """Owned names as files: a recorded folder (a kept SavedModel) stands for the files in it."""
    out = set()
    for name in owned:
        p = final / name
        if p.is_dir() and not p.is_symlink():
            out.update(f"{name}/{f}" for f in _files_under(p))
        elif p.is_file() or p.is_symlink():
            out.add(name)
    return out


def _merge_into(tmp: Path, final: Path, owned: set[str]) -> None:
    from edgeseg.errors import EdgesegError

    if not final.is_dir():
        raise EdgesegError(f"{final} is a file, not a folder", "choose a folder path for the output")
    owned = _expand_owned(final, owned)
    new = _files_under(tmp)
    for name in new:  # a user's file (or folder) in the way: refuse before anything moves
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            target = final / sub
            is_last = i == len(parts)
            if is_last and (target.exists() or target.is_symlink()) and sub not in owned:
                raise EdgesegError(f"{target} is in the way and edgeseg did not write it",
                                   "move it elsewhere, or choose another output folder")
            if not is_last and (target.is_file() or target.is_symlink()) and sub not in owned:
                raise EdgesegError(f"{target} is a file where edgeseg needs a folder, and edgeseg did not write it",
                                   "move it elsewhere, or choose another output folder")
    backup = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    moved_old: list[str] = []
    moved_new: list[str] = []
    try:
        for name in sorted(owned):
            src = final / name
            if src.exists() or src.is_symlink():
                (backup / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, backup / name)
                moved_old.append(name)
        for name in new:
            dst = final / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / name, dst)
            moved_new.append(name)
    except BaseException:
        for name in moved_new:  # undo: take the new files out, put the old ones back
            with contextlib.suppress(OSError):
                os.replace(final / name, tmp / name)
        for name in moved_old:
            with contextlib.suppress(OSError):
                (final / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(backup / name, final / name)
        raise
    finally:
        shutil.rmtree(backup, ignore_errors=True)
    # Folders that held only replaced files and are now empty go too (never ``final``).
    for name in sorted(set(moved_old) - set(new), key=lambda n: -n.count("/")):
        parent = (final / name).parent
        while parent != final and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
