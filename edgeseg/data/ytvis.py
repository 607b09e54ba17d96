"""A small reader for YouTube-VIS-format video instance segmentation datasets.

A YouTube-VIS file lists ``videos`` (``file_names`` of their frames, width, height,
length) and ``annotations``, one per object *track*: a persistent id, a category and, for
every frame of the video, a segmentation (RLE or polygons) or ``null`` where the object
is not visible. Used by the tracker's reuse sweep and by :mod:`edgeseg.eval.vis`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.data.coco import CategoryMap, _examples, check_categories, read_annotation_json
from edgeseg.data.rle import segmentation_problem
from edgeseg.errors import EdgesegError


@dataclass
class Video:
    id: int
    file_names: list[str]
    width: int
    height: int
    length: int

    @property
    def name(self) -> str:
        """The frames' folder (``train_0000`` for ``train_0000/00000.jpg``)."""
        parent = Path(self.file_names[0]).parent.as_posix() if self.file_names else ""
        return parent or str(self.id)


@dataclass
class Track:
    id: int
    video_id: int
    category_id: int
    label: int
    segmentations: list[Any]  # one per frame; None where the object is absent
    iscrowd: int = 0

    def present(self) -> list[bool]:
        return [s is not None for s in self.segmentations]

    def masks(self, height: int, width: int) -> np.ndarray:
        """(T, H, W) bool; all-false frames where the object is absent."""
        from edgeseg.data.rle import decode

        out = np.zeros((len(self.segmentations), height, width), dtype=bool)
        for t, s in enumerate(self.segmentations):
            if s is not None:
                out[t] = decode(s, height, width)
        return out


class YtvisDataset:
    """A YouTube-VIS annotation file (path or already-loaded dict) and, optionally, the
    ``JPEGImages`` folder its ``file_names`` are relative to."""

    def __init__(self, annotations: str | os.PathLike | dict[str, Any],
                 frames_dir: str | os.PathLike | None = None, check_files: bool = True):
        if isinstance(annotations, dict):
            data, self.source = annotations, "<ground truth dict>"
        else:
            self.source = str(annotations)
            data = read_annotation_json(annotations, "YouTube-VIS")
        if "images" in data and "videos" not in data:
            raise EdgesegError(f"{self.source} is a COCO (image) file, not YouTube-VIS",
                               "pass the video annotation file (e.g. DIR/ytvis/annotations/val.json)")
        for key in ("videos", "annotations"):
            if not isinstance(data.get(key), list):
                raise EdgesegError(f"{self.source} has no '{key}' list; it is not a YouTube-VIS file",
                                   "pass a YouTube-VIS annotation JSON (e.g. DIR/ytvis/annotations/val.json)")
        self.raw = data
        self.frames_dir = Path(frames_dir) if frames_dir is not None else None
        self.categories: CategoryMap = check_categories(data, self.source)
        if not data["videos"]:
            raise EdgesegError(f"{self.source} lists no videos (empty dataset)", "point at a dataset with videos")
        self.videos: list[Video] = []
        for v in data["videos"]:
            missing = [k for k in ("id", "file_names", "width", "height") if k not in v]
            if missing:
                raise EdgesegError(f"{self.source}: video entry {str(v)[:80]} lacks {', '.join(missing)}",
                                   "every video needs id, file_names, width and height")
            names = [str(f) for f in v["file_names"]]
            length = int(v.get("length", len(names)))
            if length != len(names):
                raise EdgesegError(f"{self.source}: video {v['id']} says length {length} but lists {len(names)} frames",
                                   "make 'length' equal the number of file_names")
            self.videos.append(Video(int(v["id"]), names, int(v["width"]), int(v["height"]), length))
        ids = [v.id for v in self.videos]
        if len(set(ids)) != len(ids):
            raise EdgesegError(f"{self.source} repeats video ids", "give each video a unique id")
        self._by_id = {v.id: v for v in self.videos}
        self._tracks: dict[int, list[Track]] = {v.id: [] for v in self.videos}
        stray = []
        for a in data["annotations"]:
            vid = a.get("video_id")
            if vid not in self._by_id:
                stray.append(vid)
                continue
            segs = a.get("segmentations")
            if not isinstance(segs, list) or len(segs) != self._by_id[vid].length:
                raise EdgesegError(
                    f"{self.source}: track {a.get('id')} of video {vid} has "
                    f"{len(segs) if isinstance(segs, list) else 'no'} segmentations for {self._by_id[vid].length} frames",
                    "give one segmentation (or null) per frame")
            if "category_id" not in a:
                raise EdgesegError(f"{self.source}: track {a.get('id')} has no category_id", "add one per annotation")
            video = self._by_id[vid]
            for t, seg in enumerate(segs):
                problem = None if seg is None else segmentation_problem(seg, video.height, video.width)
                if problem:
                    raise EdgesegError(f"{self.source}: track {a.get('id')} of video {vid}, frame {t}: {problem}",
                                       "fix or drop that track: each frame's segmentation is null, polygons or RLE "
                                       "{'size': [height, width], 'counts': ...} covering the frame")
            self._tracks[vid].append(Track(int(a.get("id", 0)), vid, int(a["category_id"]),
                                           self.categories.label_of(a["category_id"]), segs,
                                           int(a.get("iscrowd", 0))))
        if stray:
            raise EdgesegError(f"{len(stray)} annotations in {self.source} refer to video ids that are not in its "
                               f"'videos' list ({_examples(sorted(set(map(str, stray))))})",
                               "the annotations and the video list do not belong together")
        if check_files and self.frames_dir is not None:
            self.check_files()

    def check_files(self) -> None:
        assert self.frames_dir is not None
        if not self.frames_dir.is_dir():
            raise EdgesegError(f"frame folder {self.frames_dir} does not exist",
                               "pass the folder the file_names are relative to (e.g. DIR/ytvis/JPEGImages)")
        missing = [f for v in self.videos for f in v.file_names if not (self.frames_dir / f).is_file()]
        if missing:
            raise EdgesegError(f"{len(missing)} frames listed in {self.source} are not in {self.frames_dir} "
                               f"({_examples(missing)})",
                               "point at the folder the file_names are relative to (e.g. DIR/ytvis/JPEGImages)")

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def class_names(self) -> list[str]:
        return self.categories.names

    def video(self, video_id: int) -> Video:
        if video_id not in self._by_id:
            raise EdgesegError(f"video id {video_id} is not in {self.source}", f"known ids: {_examples(self._by_id)}")
        return self._by_id[video_id]

    def tracks(self, video_id: int) -> list[Track]:
        self.video(video_id)
        return self._tracks[video_id]

    def frame_paths(self, video: Video | int) -> list[Path]:
        if self.frames_dir is None:
            raise EdgesegError("no frame folder was given", "pass the JPEGImages folder of the dataset")
        v = video if isinstance(video, Video) else self.video(video)
        return [self.frames_dir / f for f in v.file_names]

    def load_frame(self, video: Video | int, t: int) -> np.ndarray:
        from edgeseg.data.preprocess import load_image

        v = video if isinstance(video, Video) else self.video(video)
        return load_image(self.frame_paths(v)[t])
