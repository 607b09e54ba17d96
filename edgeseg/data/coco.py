"""A small reader for COCO-format instance segmentation datasets.

Used by training (images + labels + masks) and evaluation (image list, category
mapping, the pycocotools ground truth). Models predict 0-based contiguous class labels;
COCO files use arbitrary category ids. :class:`CategoryMap` maps between the two, sorted
by category id (the convention of detectron2 and mmdetection, so label 0 is the
smallest category id).

Problems a user can cause (missing file, wrong folder, annotations that refer to images
that are not listed, an empty file) are reported up front as one
:class:`~edgeseg.errors.EdgesegError` with the fix, not as a KeyError mid-training.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.data.rle import segmentation_problem
from edgeseg.errors import EdgesegError

SYNTH_HINT = "e.g. DIR/coco/annotations/val.json written by `edgeseg data synth -o DIR`"


def read_annotation_json(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Load an annotation file with clear errors; ``kind`` is "COCO" or "YouTube-VIS"."""
    p = Path(path)
    if not p.exists():
        raise EdgesegError(f"annotation file {p} does not exist",
                           f"pass the {kind} annotation JSON ({SYNTH_HINT if kind == 'COCO' else 'e.g. DIR/ytvis/annotations/val.json'})")
    if p.is_dir():
        raise EdgesegError(f"{p} is a folder, not an annotation file", f"pass the {kind} JSON file inside it")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgesegError(f"{p} is not valid JSON: {e}", f"pass a {kind} annotation file") from e
    if not isinstance(data, dict):
        raise EdgesegError(f"{p} holds a JSON {type(data).__name__}, not a {kind} annotation object",
                           "a results/predictions list is not ground truth; pass the annotation file")
    return data


@dataclass
class CategoryMap:
    """Category id <-> contiguous 0-based label, sorted by category id."""

    categories: list[dict[str, Any]]

    def __post_init__(self) -> None:
        self.categories = sorted(self.categories, key=lambda c: c["id"])
        self.ids = [int(c["id"]) for c in self.categories]
        if len(set(self.ids)) != len(self.ids):
            raise EdgesegError("the categories list repeats a category id", "give each category a unique id")
        self.names = [str(c.get("name", c["id"])) for c in self.categories]
        self._label = {cid: i for i, cid in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def label_of(self, category_id: int) -> int:
        try:
            return self._label[int(category_id)]
        except KeyError:
            raise EdgesegError(f"category id {category_id} is not in the dataset's categories",
                               f"known ids: {self.ids}") from None

    def category_id_of(self, label: int) -> int:
        if not 0 <= int(label) < len(self.ids):
            raise EdgesegError(f"class label {label} is out of range for {len(self.ids)} categories",
                               "the model was trained with a different number of classes than this dataset has")
        return self.ids[int(label)]


def check_categories(data: dict[str, Any], source: Path | str) -> CategoryMap:
    cats = data.get("categories")
    if not cats:
        raise EdgesegError(f"{source} has no categories", "add a 'categories' list ({'id', 'name'} per class)")
    if any(not isinstance(c, dict) or "id" not in c for c in cats):
        raise EdgesegError(f"{source}: every category needs an 'id'", "fix the 'categories' list")
    return CategoryMap(cats)


@dataclass
class CocoImage:
    id: int
    file_name: str
    path: Path
    width: int
    height: int


@dataclass
class CocoInstance:
    id: int
    category_id: int
    label: int
    bbox: list[float]  # COCO x, y, w, h
    area: float
    iscrowd: int
    segmentation: Any

    def mask(self, height: int, width: int) -> np.ndarray:
        from edgeseg.data.rle import decode

        if self.segmentation is None:
            raise EdgesegError(f"annotation {self.id} has no segmentation",
                               "instance segmentation needs a mask (polygons or RLE) per annotation")
        return decode(self.segmentation, height, width)


@dataclass
class CocoSample:
    """One image with its instances, as training wants it."""

    image_id: int
    path: Path
    image: np.ndarray  # HxWx3 uint8 RGB
    labels: np.ndarray  # (N,) int64, 0-based
    masks: np.ndarray  # (N, H, W) bool
    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2 in pixels
    iscrowd: np.ndarray  # (N,) bool
    instance_ids: list[int] = field(default_factory=list)


def _examples(values, n: int = 5) -> str:
    values = list(values)
    text = ", ".join(str(v) for v in values[:n])
    return text + (f" and {len(values) - n} more" if len(values) > n else "")


class CocoDataset:
    """A COCO instances file plus the folder holding its images."""

    def __init__(self, annotation_file: str | os.PathLike, images_dir: str | os.PathLike,
                 check_files: bool = True):
        self.annotation_file = Path(annotation_file)
        self.images_dir = Path(images_dir)
        data = read_annotation_json(self.annotation_file, "COCO")
        if "videos" in data and "images" not in data:
            raise EdgesegError(f"{self.annotation_file} is a YouTube-VIS (video) file, not COCO images",
                               "use the COCO file (coco/annotations/*.json); videos are evaluated by eval.vis")
        for key in ("images", "annotations"):
            if not isinstance(data.get(key), list):
                raise EdgesegError(f"{self.annotation_file} has no '{key}' list; it is not a COCO instances file",
                                   f"pass a COCO instances JSON ({SYNTH_HINT})")
        self.raw = data
        self.categories = check_categories(data, self.annotation_file)
        if not data["images"]:
            raise EdgesegError(f"{self.annotation_file} lists no images (empty dataset)",
                               "generate or point at a dataset with images")
        self.images: list[CocoImage] = []
        for im in data["images"]:
            missing = [k for k in ("id", "file_name", "width", "height") if k not in im]
            if missing:
                raise EdgesegError(f"{self.annotation_file}: image entry {str(im)[:80]} lacks {', '.join(missing)}",
                                   "every image needs id, file_name, width and height")
            self.images.append(CocoImage(int(im["id"]), str(im["file_name"]), self.images_dir / im["file_name"],
                                         int(im["width"]), int(im["height"])))
        ids = [im.id for im in self.images]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise EdgesegError(f"{self.annotation_file} repeats image ids ({_examples(dup)})", "give each image a unique id")
        self._by_id = {im.id: im for im in self.images}
        self._instances: dict[int, list[CocoInstance]] = {im.id: [] for im in self.images}
        stray = []
        bad_segm: list[str] = []
        for a in data["annotations"]:
            if not isinstance(a, dict) or a.get("image_id") not in self._by_id:
                stray.append(a.get("image_id") if isinstance(a, dict) else a)
                continue
            if "category_id" not in a:
                raise EdgesegError(f"{self.annotation_file}: annotation {a.get('id')} has no category_id",
                                   "every annotation needs a category_id from 'categories'")
            im = self._by_id[a["image_id"]]
            if a.get("segmentation") is not None and len(bad_segm) < 5:
                problem = segmentation_problem(a["segmentation"], im.height, im.width)
                if problem:
                    bad_segm.append(f"annotation {a.get('id')} (image {im.id}): {problem}")
            self._instances[a["image_id"]].append(CocoInstance(
                int(a.get("id", 0)), int(a["category_id"]), self.categories.label_of(a["category_id"]),
                [float(x) for x in a.get("bbox", [0, 0, 0, 0])], float(a.get("area", 0.0)),
                int(a.get("iscrowd", 0)), a.get("segmentation")))
        if bad_segm:
            raise EdgesegError(f"{self.annotation_file} has unreadable segmentations: {'; '.join(bad_segm)}",
                               "fix or drop those annotations: a segmentation is a list of polygons [x1, y1, x2, "
                               "y2, ...] or RLE {'size': [height, width], 'counts': ...} covering the image")
        if stray:
            raise EdgesegError(
                f"{len(stray)} annotations in {self.annotation_file} refer to image ids that are not in its "
                f"'images' list ({_examples(sorted(set(map(str, stray))))})",
                "the annotations and the image list do not belong together; regenerate the file or fix the ids")
        if check_files:
            self.check_files()
        self._coco = None

    # ------------------------------------------------------------------ checks
    def check_files(self) -> None:
        if not self.images_dir.is_dir():
            raise EdgesegError(f"image folder {self.images_dir} does not exist",
                               "pass --images pointing at the folder with the dataset's images (e.g. DIR/coco/val)")
        missing = [im.file_name for im in self.images if not im.path.is_file()]
        if missing:
            raise EdgesegError(f"{len(missing)} of {len(self.images)} images listed in {self.annotation_file.name} "
                               f"are not in {self.images_dir} ({_examples(missing)})",
                               "point --images at the folder holding the files named by file_name")

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_ids(self) -> list[int]:
        return [im.id for im in self.images]

    @property
    def class_names(self) -> list[str]:
        return self.categories.names

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def image(self, image_id: int) -> CocoImage:
        if image_id not in self._by_id:
            raise EdgesegError(f"image id {image_id} is not in {self.annotation_file.name}",
                               "use ids from the dataset's 'images' list")
        return self._by_id[image_id]

    def instances(self, image_id: int) -> list[CocoInstance]:
        self.image(image_id)
        return self._instances[image_id]

    def load_image(self, image: CocoImage | int) -> np.ndarray:
        """HxWx3 uint8 RGB; the file must have the size the annotation file records."""
        from edgeseg.data.preprocess import load_image

        im = image if isinstance(image, CocoImage) else self.image(image)
        if not im.path.is_file():
            raise EdgesegError(f"image {im.path} does not exist", "point --images at the dataset's image folder")
        pixels = load_image(im.path)
        if pixels.shape[:2] != (im.height, im.width):
            raise EdgesegError(f"{im.path.name} is {pixels.shape[1]}x{pixels.shape[0]} but the annotation file says "
                               f"{im.width}x{im.height}", "the images and the annotation file do not belong together")
        return pixels

    def __getitem__(self, index: int) -> CocoSample:
        im = self.images[index]
        pixels = self.load_image(im)
        inst = self._instances[im.id]
        masks = np.stack([i.mask(im.height, im.width) for i in inst]) if inst else \
            np.zeros((0, im.height, im.width), dtype=bool)
        boxes = np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (i.bbox for i in inst)],
                         dtype=np.float32).reshape(-1, 4)
        return CocoSample(im.id, im.path, pixels, np.array([i.label for i in inst], dtype=np.int64),
                          masks, boxes, np.array([bool(i.iscrowd) for i in inst], dtype=bool),
                          [i.id for i in inst])

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def coco_api(self):
        """pycocotools ``COCO`` ground truth (built once, its prints swallowed)."""
        if self._coco is None:
            from edgeseg.data.rle import mask_api

            mask_api()  # a clear error when pycocotools is missing
            from pycocotools.coco import COCO

            coco = COCO()
            # Shallow copies: COCOeval replaces ann["segmentation"] with its own RLE, and
            # that must not leak into this dataset's annotations.
            coco.dataset = {**self.raw, "annotations": [dict(a) for a in self.raw["annotations"]]}
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
            self._coco = coco
        return self._coco
