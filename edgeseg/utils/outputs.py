"""Where edgeseg may write, checked before the work starts.

Two promises, kept by every verb:

* **Never delete or overwrite a user's file.** edgeseg replaces only files it can show it
  wrote itself: files listed in the ``manifest.json`` of their folder, files carrying an
  edgeseg marker (JSON reports with ``"format": "edgeseg-..."``, Markdown/HTML reports with
  :data:`TEXT_MARKER`, ONNX files whose producer is edgeseg, safetensors with edgeseg
  metadata), and the files recorded by a folder's own marker (:class:`FolderKind`).
* **Fail before the work, not after it.** An output that cannot be written (a file where a
  folder is needed, a folder where a file is needed, no permission), an output that would
  swallow the current folder or the inputs, or a user's file in the way are all reported
  as one :class:`~edgeseg.errors.EdgesegError` before any model is built.

The rules (also in docs/architecture.md, "Output safety"):

Folders (``export -o``, ``sweep -o`` / ``--work-dir``, ``data synth -o``, ``track
--overlay DIR``)
  F1. A new or empty folder is written as a whole (one atomic rename).
  F2. A folder edgeseg wrote, of the same kind (its marker: ``manifest.json`` for an export,
      ``synth.json``, ``sweep.json``...), is updated in place: the files its marker lists are
      replaced or removed, anything else in it stays.
  F3. Any other non-empty folder is refused, unless ``--overwrite``: then edgeseg adds its
      files beside the ones there and never replaces or removes one it did not write (a name
      clash is refused, even with ``--overwrite``). The folder itself is never removed.
  F4. The current folder, any folder above it, and any folder that holds an input of the
      command are refused as output folders (``-o .``, ``-o ..``).

Files (``-o FILE`` of bench, eval, calibrate, quantize, train, track, regress --json)
  S1. A file edgeseg wrote (recognised as above) is replaced.
  S2. Any other existing file is replaced only with ``--overwrite`` (the user named it).
  S3. A folder given where a file is needed, or a file given where a folder is needed, is
      refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from edgeseg.errors import EdgesegError

# First line of Markdown reports, inside the <head> of HTML reports: invisible when
# rendered, and how edgeseg recognises a report it wrote before replacing it.
TEXT_MARKER = "<!-- written by edgeseg -->"
# The marker file of folders that have no manifest of their own (overlay frames).
FOLDER_MARKER = ".edgeseg.json"
FOLDER_MARKER_FORMAT = "edgeseg-folder"


# ============================================================================ recognising our files
def _json_is_ours(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if isinstance(data, dict):
        fmt = data.get("format")
        return (isinstance(fmt, str) and fmt.startswith("edgeseg")) or (
            "model" in data and "artifacts" in data and "history" in data)  # manifest.json
    if isinstance(data, list):
        # YouTube-VIS results (`edgeseg track -o`): the format is a bare list, so the marker
        # is the exact item layout edgeseg writes (with its track ids).
        from edgeseg.track.results import RESULT_KEYS

        keys = set(RESULT_KEYS) | {"track_id"}
        return all(isinstance(r, dict) and set(r) == keys for r in data)
    return False


# How reports began before they carried TEXT_MARKER (so outputs of earlier versions, e.g.
# `make demo`'s reports/, are still recognised).
_LEGACY_TEXT_HEADS = (b"# Benchmark: ", b"Fidelity of `", b"# Kernel reuse sweep: ")
_LEGACY_HTML = b"<title>edgeseg benchmark: "


def _text_is_ours(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        return False
    return TEXT_MARKER.encode() in head or head.startswith(_LEGACY_TEXT_HEADS) or _LEGACY_HTML in head


def _onnx_producer(path: Path) -> str | None:
    """``ModelProto.producer_name`` read from the first bytes (onnx writes fields in order:
    ir_version = 1, producer_name = 2), without parsing a possibly huge file."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None

    def varint(buf: bytes, i: int) -> tuple[int, int]:
        shift = value = 0
        while i < len(buf):
            b = buf[i]
            value |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                return value, i
            shift += 7
        raise ValueError("truncated")

    try:
        i = 0
        while i < len(head):
            key, i = varint(head, i)
            field_no, wire = key >> 3, key & 7
            if wire == 0:
                _, i = varint(head, i)
            elif wire == 2:
                n, i = varint(head, i)
                if field_no == 2:
                    return head[i:i + n].decode("utf-8", "replace")
                i += n
            else:
                return None
    except ValueError:
        return None
    return None


def _safetensors_is_ours(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100_000_000:
                return False
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return False
    meta = header.get("__metadata__") or {}
    return any(str(k).startswith("edgeseg") for k in meta)


def _video_is_ours(path: Path) -> bool:
    try:
        import av
    except ImportError:
        return False
    try:
        with av.open(os.fspath(path)) as c:  # Matroska spells the tag COMMENT
            return any(k.lower() == "comment" and "edgeseg" in str(v) for k, v in (c.metadata or {}).items())
    except Exception:  # noqa: BLE001 - not a readable container: not ours
        return False


def listed_in_manifest(path: Path) -> bool:
    """Whether ``path`` is a file the ``manifest.json`` of its folder says edgeseg wrote."""
    from edgeseg.export.manifest import read_written_files

    files = read_written_files(path.parent)
    return files is not None and path.name in files


def written_by_edgeseg(path: str | os.PathLike) -> bool:
    """Whether the existing file ``path`` is recognisably one edgeseg wrote (see the module doc)."""
    p = Path(path)
    if not p.is_file():
        return False
    if listed_in_manifest(p):
        return True
    suffix = p.suffix.lower()
    if suffix == ".json":
        return _json_is_ours(p)
    if suffix in (".md", ".html", ".htm"):
        return _text_is_ours(p)
    if suffix == ".log":  # conversion logs start by naming edgeseg (export/tflite.py)
        try:
            with open(p, "rb") as f:
                return f.read(8) == b"edgeseg "
        except OSError:
            return False
    if suffix == ".onnx":
        return _onnx_producer(p) == "edgeseg"
    if suffix == ".safetensors":
        return _safetensors_is_ours(p)
    if suffix in (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm"):
        return _video_is_ours(p)
    return False


def mark_text(text: str, suffix: str) -> str:
    """Add :data:`TEXT_MARKER` to a Markdown or HTML report (where it renders as nothing)."""
    suffix = suffix.lower()
    if TEXT_MARKER in text[:1024]:
        return text
    if suffix in (".html", ".htm"):
        head = text.find("<head>")
        if head >= 0:
            return text[:head + 6] + TEXT_MARKER + text[head + 6:]
        return TEXT_MARKER + "\n" + text
    if suffix == ".md":
        return TEXT_MARKER + "\n" + text
    return text


# ============================================================================ location checks
def _named(flag: str, path: Path) -> str:
    """``-o out/x``: a path as the user typed it, with its flag ("" for paths edgeseg chose)."""
    return f"{flag} {path}" if flag else str(path)


def check_writable(path: str | os.PathLike, *, want_dir: bool, flag: str = "-o") -> Path:
    """``path`` can be created (or replaced) as a folder (``want_dir``) or a file: the
    right type where it exists, and its nearest existing parent is a writable folder."""
    p = Path(path)
    what = "folder" if want_dir else "file"
    if p.exists() or p.is_symlink():
        if want_dir and not p.is_dir():
            raise EdgesegError(f"{_named(flag, p)} is a file, but a folder is needed here",
                               f"give {flag or 'it'} a folder path (new or empty), e.g. {p.with_suffix('')}_out")
        if not want_dir and p.is_dir():
            raise EdgesegError(f"{_named(flag, p)} is a folder, but a file name is needed here",
                               f"name the file to write inside it, e.g. {p / 'result'}")
    parent = p if (want_dir and p.is_dir()) else p.parent
    probe = parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise EdgesegError(f"{_named(flag, p)} cannot be created: {probe} is a file, not a folder",
                           f"choose a {what} path whose parent folders are folders")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise EdgesegError(f"{_named(flag, p)} cannot be written: no permission to write in {probe}",
                           f"choose a {what} in a folder you can write to, or fix its permissions")
    return p


def check_output_file(path: str | os.PathLike, *, flag: str = "-o", overwrite: bool = False,
                      inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Rules S1-S3 for an output file; returns the path. Call it before the work. An input
    of the command is never an output, even with ``overwrite``."""
    p = check_writable(path, want_dir=False, flag=flag)
    for item in inputs:
        if item is not None and _resolved(item).resolve() == _resolved(p).resolve():
            raise EdgesegError(f"{_named(flag, p)} is an input of this command", "write the output to another file")
    if p.is_file() and not overwrite and not written_by_edgeseg(p):
        raise EdgesegError(f"{_named(flag, p)} already exists and edgeseg did not write it",
                           "pass --overwrite to replace it, or choose another file name")
    return p


def _resolved(p: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(p))))


def check_not_enclosing(path: str | os.PathLike, *, flag: str = "-o",
                        inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Rule F4: the output folder is not the current folder, a folder above it, or a
    folder holding one of the command's inputs."""
    out = _resolved(path).resolve()
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        where = "the current folder" if out == cwd else f"a folder above the current one ({cwd})"
        raise EdgesegError(f"{flag or 'the output'} {path} is {where}; edgeseg writes an output folder of its own",
                           f"name a new or empty folder, e.g. {flag} out/{cwd.name or 'result'}")
    for item in inputs:
        if item is None:
            continue
        src = _resolved(item).resolve()
        if out == src or out in src.parents:
            raise EdgesegError(f"{flag or 'the output'} {path} holds the input {item}",
                               "write the output to a folder of its own, next to the inputs rather than around them")


# ============================================================================ folder kinds
@dataclass(frozen=True)
class FolderKind:
    """A kind of folder edgeseg writes, and how to read back which files it wrote there.

    ``owned(folder)`` returns the files (relative POSIX paths) recorded as edgeseg's, or
    None when ``folder`` is not a folder of this kind.
    """

    name: str
    marker: str
    owned: Callable[[Path], set[str] | None]


def _export_owned(folder: Path) -> set[str] | None:
    from edgeseg.export.manifest import read_written_files

    return read_written_files(folder)


def _synth_owned(folder: Path) -> set[str] | None:
    marker = folder / "synth.json"
    if not marker.is_file():
        return None
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or "config" not in meta:
        return None
    files = meta.get("files")
    if not isinstance(files, list):  # written before the file list was recorded: its layout folders
        files = [p.relative_to(folder).as_posix() for top in ("coco", "ytvis") if (folder / top).is_dir()
                 for p in (folder / top).rglob("*") if p.is_file()]
    return {str(f) for f in files} | {"synth.json"}


def _marker_owned(kind: str) -> Callable[[Path], set[str] | None]:
    def owned(folder: Path) -> set[str] | None:
        marker = folder / FOLDER_MARKER
        try:
            meta = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("format") != FOLDER_MARKER_FORMAT or meta.get("kind") != kind:
            return None
        return {str(f) for f in meta.get("files", [])} | {FOLDER_MARKER}
    return owned


def _sweep_reports_owned(folder: Path) -> set[str] | None:
    from edgeseg.quantize.sweep import REPORT_NAMES, WORK_MARKER

    if _json_is_ours(folder / REPORT_NAMES[0]):
        return set(REPORT_NAMES)
    # A sweep that failed before its reports left only its work folder (OUT/work/<model>/).
    work = folder / "work"
    if [p.name for p in folder.iterdir()] == ["work"] and work.is_dir() and all(
            (m / WORK_MARKER).is_file() for m in work.iterdir()):
        return set()
    return None


def _sweep_work_owned(folder: Path) -> set[str] | None:
    from edgeseg.quantize.sweep import WORK_MARKER

    if not (folder / WORK_MARKER).is_file():
        return None
    return (_export_owned(folder) or set()) | {WORK_MARKER}


EXPORT = FolderKind("artifact folder (edgeseg export)", "manifest.json", _export_owned)
SYNTH = FolderKind("synthetic dataset (edgeseg data synth)", "synth.json", _synth_owned)
SWEEP_REPORTS = FolderKind("sweep report folder (edgeseg sweep)", "sweep.json", _sweep_reports_owned)
SWEEP_WORK = FolderKind("sweep work folder (edgeseg sweep)", ".edgeseg-sweep-work", _sweep_work_owned)
OVERLAY_FRAMES = FolderKind("overlay frame folder (edgeseg track)", FOLDER_MARKER, _marker_owned("overlay-frames"))


def folder_marker(kind: str, files: Iterable[str]) -> dict:
    """The content of :data:`FOLDER_MARKER` for a folder of ``kind`` holding ``files``."""
    return {"format": FOLDER_MARKER_FORMAT, "kind": kind, "files": sorted(files)}


@dataclass
class OutputFolder:
    """An output folder that passed :func:`check_output_folder`; ``owned`` are the files
    edgeseg may replace or remove there (rule F2), empty for a foreign folder (F3)."""

    path: Path
    kind: FolderKind
    owned: set[str] = field(default_factory=set)
    existed: bool = False
    foreign: bool = False  # non-empty and not of this kind (allowed by --overwrite)

    def owned_now(self) -> set[str]:
        """Re-read at commit time (another edgeseg step may have recorded more files)."""
        if not self.path.is_dir():
            return set()
        fresh = self.kind.owned(self.path)
        return set(fresh) if fresh is not None else set()


def check_output_folder(path: str | os.PathLike, kind: FolderKind, *, flag: str = "-o", overwrite: bool = False,
                        inputs: Iterable[str | os.PathLike | None] = (),
                        expected: Iterable[str] = ()) -> OutputFolder:
    """Rules F1-F4 for an output folder, before the work. ``expected`` are file names the
    command will write: one held by a file edgeseg did not write is refused up front."""
    p = Path(path)
    check_not_enclosing(p, flag=flag, inputs=inputs)
    check_writable(p, want_dir=True, flag=flag)
    if not p.is_dir() or not any(p.iterdir()):
        return OutputFolder(p, kind, set(), existed=p.is_dir())
    owned = kind.owned(p)
    foreign = owned is None
    if foreign:
        if not overwrite:
            raise EdgesegError(
                f"{_named(flag, p)} is not empty and is not an edgeseg {kind.name} (no {kind.marker})",
                "choose a new or empty folder, or pass --overwrite to add edgeseg's files beside what is there "
                "(edgeseg never replaces or deletes a file it did not write)")
        owned = set()
    for name in expected:
        target = p / name
        if (target.exists() or target.is_symlink()) and name not in owned:
            raise EdgesegError(f"{_named(flag, p)}: {target} is in the way and edgeseg did not write it",
                               "move it elsewhere, or choose another output folder")
    return OutputFolder(p, kind, set(owned), existed=True, foreign=foreign)
