"""Frames in (a video file or a folder of images), overlays out (a video or PNG folder).

Video files are read and written with PyAV (``pip install 'edgeseg[video]'``), which
bundles FFmpeg, so nothing has to be installed on the system. Folders of frames need
nothing beyond Pillow. Both sources are checked when opened (the first frame is decoded),
so an unreadable input fails before any output is created.
"""

from __future__ import annotations

import colorsys
import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgeseg.errors import EdgesegError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
DEFAULT_FPS = 10.0  # for frame folders, which carry no rate (YouTube-VIS samples at ~6 fps)


def _natural_key(name: str) -> list[Any]:
    # frame_2.jpg before frame_10.jpg, as a person numbering frames means it.
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _import_av():
    try:
        import av
    except ImportError as e:
        raise EdgesegError(f"reading or writing video files needs PyAV ({e})",
                           "pip install 'edgeseg[video]', or pass a folder of frames instead") from e
    return av


@dataclass
class FrameSource:
    """Frames of one video, iterated as HxWx3 uint8 RGB arrays."""

    path: Path
    kind: str  # "folder" | "video"
    count: int | None  # frames, when known up front (folders; most containers)
    fps: float
    files: list[Path] = field(default_factory=list)  # folder frames, in order

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.kind == "folder":
            from edgeseg.data.preprocess import load_image

            for f in self.files:
                yield load_image(f)
            return
        av = _import_av()
        try:
            with av.open(os.fspath(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise EdgesegError(f"video {self.path} broke off while decoding: {e}",
                               "re-encode the file (e.g. ffmpeg -i in.mp4 out.mp4) or extract its frames") from e


def open_frames(path: str | os.PathLike) -> FrameSource:
    """A video file or a folder of frames (sorted by name, numbers in natural order)."""
    p = Path(path)
    if not p.exists():
        raise EdgesegError(f"{p} does not exist", "pass a video file (mp4, mkv, avi...) or a folder of frames")
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda f: _natural_key(f.name))
        if not files:
            raise EdgesegError(f"folder {p} holds no frames ({', '.join(IMAGE_SUFFIXES)})",
                               "pass a folder of JPEG/PNG frames, or a video file")
        from edgeseg.data.preprocess import load_image

        load_image(files[0])  # unreadable first frame: fail now, not mid-run
        return FrameSource(p, "folder", len(files), DEFAULT_FPS, files)
    av = _import_av()
    try:
        with av.open(os.fspath(p)) as container:
            if not container.streams.video:
                raise EdgesegError(f"{p} has no video stream", "pass a video file or a folder of frames")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
            count = int(stream.frames) or None
            first = next(container.decode(stream), None)
    except av.error.FFmpegError as e:
        raise EdgesegError(f"cannot read video {p}: {e}",
                           "check the file is a video (mp4, mkv, avi...) or pass a folder of frames") from e
    if first is None:
        raise EdgesegError(f"video {p} has no frames", "pass a video with at least one frame")
    return FrameSource(p, "video", count, fps)


# ------------------------------------------------------------------------------ overlays
def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, well-separated colour per track id (golden-ratio hue steps)."""
    hue = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_overlay(frame: np.ndarray, instances, class_names: list[str] | None = None,
                 alpha: float = 0.5) -> np.ndarray:
    """The frame with each instance's mask tinted in its track's colour, outlined and labelled."""
    from PIL import Image, ImageDraw

    out = frame[..., :3].copy()
    labels = []
    for inst in instances:
        m = inst.mask
        if m.area == 0:
            continue
        h, w = m.crop.shape
        region = out[m.top:m.top + h, m.left:m.left + w]
        color = np.asarray(track_color(inst.track_id), np.float32)
        tinted = region[m.crop].astype(np.float32) * (1 - alpha) + color * alpha
        region[m.crop] = tinted.astype(np.uint8)
        # Outline: mask pixels with a background 4-neighbour (crop edges count as background).
        padded = np.pad(m.crop, 1)
        inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        region[m.crop & ~inner] = color.astype(np.uint8)
        name = class_names[inst.label] if class_names and inst.label < len(class_names) else str(inst.label)
        labels.append((m.left, m.top, f"#{inst.track_id} {name} {inst.score:.2f}", tuple(int(c) for c in color)))
    if labels:
        image = Image.fromarray(out)
        draw = ImageDraw.Draw(image)
        for x, y, text, color in labels:
            box = draw.textbbox((x, y), text)
            draw.rectangle(box, fill=(0, 0, 0))
            draw.text((x, y), text, fill=color)
        out = np.asarray(image)
    return out


class OverlayWriter:
    """Writes overlay frames to a video file (by suffix) or a folder of PNGs, atomically:
    the output appears complete when the writer closes without error, or not at all."""

    def __init__(self, path: str | os.PathLike, fps: float = DEFAULT_FPS, owned=()):
        """``owned``: the frames an earlier overlay wrote into the folder (see
        :func:`edgeseg.utils.outputs.check_output_folder`); only those are replaced."""
        self.path = Path(path)
        self.owned = owned
        self.fps = fps
        self.is_video = self.path.suffix.lower() in VIDEO_SUFFIXES
        if self.path.suffix and not self.is_video and not self.path.is_dir():
            raise EdgesegError(f"don't know how to write an overlay to {self.path.name}",
                               f"use a video suffix ({', '.join(VIDEO_SUFFIXES)}) or a folder name for PNG frames")
        if self.is_video:
            _import_av()  # fail before any frame is processed
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stack = contextlib.ExitStack()
        self._tmp: Path | None = None
        self._container = None
        self._stream = None
        self._count = 0

    def __enter__(self) -> "OverlayWriter":
        from edgeseg.utils import atomic

        if self.is_video:
            self._tmp = self._stack.enter_context(atomic.atomic_path(self.path))
        else:
            self._tmp = self._stack.enter_context(atomic.atomic_directory(self.path, owned=self.owned))
        return self

    def write(self, frame: np.ndarray) -> None:
        assert self._tmp is not None, "use as a context manager"
        if not self.is_video:
            from PIL import Image

            Image.fromarray(frame).save(self._tmp / f"{self._count:05d}.png")
            self._count += 1
            return
        h, w = frame.shape[:2]
        # H.264 in yuv420p needs even sizes: repeat the last row/column when odd.
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._container is None:
            self._open_video(frame.shape[0], frame.shape[1])
        av = _import_av()
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self._container.mux(packet)
        self._count += 1

    def _open_video(self, height: int, width: int) -> None:
        av = _import_av()
        from fractions import Fraction

        fmt = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi",
               ".webm": "webm"}[self.path.suffix.lower()]
        codec = {"webm": "libvpx-vp9", "avi": "mpeg4"}.get(fmt, "libx264")
        self._container = av.open(os.fspath(self._tmp), mode="w", format=fmt)
        # How a later run recognises the file as its own before replacing it (utils/outputs.py).
        self._container.metadata["comment"] = "written by edgeseg track"
        self._stream = self._container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1000))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._container is not None:
                if exc_type is None:
                    for packet in self._stream.encode():  # flush the encoder's delayed frames
                        self._container.mux(packet)
                self._container.close()
            if exc_type is None and self._count == 0:
                raise EdgesegError("no frames were written to the overlay", "check the input has frames")
            if exc_type is None and not self.is_video:
                from edgeseg.utils import atomic, outputs

                atomic.write_json(self._tmp / outputs.FOLDER_MARKER, outputs.folder_marker(
                    "overlay-frames", (f"{i:05d}.png" for i in range(self._count))))
        except BaseException as e:
            self._stack.__exit__(type(e), e, e.__traceback__)  # discards the partial output
            raise
        self._stack.__exit__(exc_type, exc, tb)
