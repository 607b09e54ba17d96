"""COCO and YouTube-VIS readers: what training and evaluation get, and one clear error
for every way a user can point at the wrong thing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeseg.data.coco import CocoDataset
from edgeseg.data.synthetic import SynthConfig, generate
from edgeseg.data.ytvis import YtvisDataset
from edgeseg.errors import EdgesegError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "d"
    generate(root, SynthConfig(train=0, val=4, videos=0, val_videos=2, frames=4, height=64, width=80, seed=2))
    return root


@pytest.fixture
def copy(data, tmp_path):
    dst = tmp_path / "d"
    shutil.copytree(data, dst)
    return dst


def edit(path, fn):
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def test_coco_sample_has_labels_masks_boxes(data):
    ds = CocoDataset(data / "coco/annotations/val.json", data / "coco/val")
    assert len(ds) == 4 and ds.num_classes == 4 and ds.class_names[0] == "circle"
    raw = json.loads((data / "coco/annotations/val.json").read_text())
    for sample in ds:
        anns = [a for a in raw["annotations"] if a["image_id"] == sample.image_id]
        assert sample.image.shape == (64, 80, 3) and sample.image.dtype == np.uint8
        assert sample.masks.shape == (len(anns), 64, 80) and sample.masks.dtype == bool
        assert [int(m.sum()) for m in sample.masks] == [a["area"] for a in anns]
        assert list(sample.labels) == [a["category_id"] - 1 for a in anns]
        for b, a in zip(sample.boxes, anns):
            x, y, w, h = a["bbox"]
            assert list(b) == [x, y, x + w, y + h]
    # the pycocotools view is built once and does not alter our annotations
    api = ds.coco_api()
    assert api is ds.coco_api() and len(api.getImgIds()) == 4


def test_ytvis_tracks_and_frames(data):
    ds = YtvisDataset(data / "ytvis/annotations/val.json", data / "ytvis/JPEGImages")
    assert len(ds) == 2 and ds.class_names == ["circle", "triangle", "rectangle", "star"]
    v = ds.videos[0]
    assert v.name == "val_0000" and v.length == 4
    assert ds.load_frame(v, 0).shape == (64, 80, 3)
    raw = json.loads((data / "ytvis/annotations/val.json").read_text())
    for track in ds.tracks(v.id):
        a = next(x for x in raw["annotations"] if x["id"] == track.id)
        masks = track.masks(v.height, v.width)
        assert masks.shape == (4, 64, 80)
        assert [int(m.sum()) if p else None for m, p in zip(masks, track.present())] == a["areas"]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(images=[]), "lists no images"),
    (lambda d: d.pop("annotations"), "no 'annotations' list"),
    (lambda d: d.update(categories=[]), "has no categories"),
    (lambda d: d["annotations"][0].update(image_id=999), "refer to image ids that are not in"),
    (lambda d: d["annotations"][0].update(category_id=42), "category id 42"),
    (lambda d: d["images"].append(dict(d["images"][0])), "repeats image ids"),
    (lambda d: d["images"][0].pop("file_name"), "lacks file_name"),
])
def test_coco_bad_annotation_files(copy, mutate, message):
    ann = copy / "coco/annotations/val.json"
    edit(ann, mutate)
    with pytest.raises(EdgesegError, match=message) as e:
        CocoDataset(ann, copy / "coco/val")
    assert e.value.fix


def test_coco_missing_or_wrong_files(copy, tmp_path):
    with pytest.raises(EdgesegError, match="does not exist") as e:
        CocoDataset(tmp_path / "nope.json", copy / "coco/val")
    assert "edgeseg data synth" in e.value.fix
    with pytest.raises(EdgesegError, match="is a folder"):
        CocoDataset(copy / "coco/annotations", copy / "coco/val")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(EdgesegError, match="not valid JSON"):
        CocoDataset(bad, copy / "coco/val")
    with pytest.raises(EdgesegError, match="YouTube-VIS"):
        CocoDataset(copy / "ytvis/annotations/val.json", copy / "coco/val")
    with pytest.raises(EdgesegError, match="image folder .* does not exist"):
        CocoDataset(copy / "coco/annotations/val.json", tmp_path / "no-images")
    (copy / "coco/val/000001.png").unlink()
    with pytest.raises(EdgesegError, match="1 of 4 images") as e:
        CocoDataset(copy / "coco/annotations/val.json", copy / "coco/val")
    assert "000001.png" in e.value.problem


def test_coco_unreadable_or_mismatched_image(copy):
    (copy / "coco/val/000000.png").write_bytes(b"not a png")
    ds = CocoDataset(copy / "coco/annotations/val.json", copy / "coco/val")
    with pytest.raises(EdgesegError, match="cannot read image"):
        ds[0]
    from PIL import Image

    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(copy / "coco/val/000000.png")
    with pytest.raises(EdgesegError, match="do not belong together"):
        ds.load_image(ds.images[0])


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(videos=[]), "lists no videos"),
    (lambda d: d["annotations"][0].update(video_id=77), "refer to video ids that are not in"),
    (lambda d: d["annotations"][0]["segmentations"].pop(), "segmentations for 4 frames"),
    (lambda d: d["videos"][0].update(length=9), "says length 9"),
])
def test_ytvis_bad_annotation_files(copy, mutate, message):
    ann = copy / "ytvis/annotations/val.json"
    edit(ann, mutate)
    with pytest.raises(EdgesegError, match=message):
        YtvisDataset(ann, copy / "ytvis/JPEGImages")


def test_ytvis_missing_frames(copy):
    (copy / "ytvis/JPEGImages/val_0001/00002.jpg").unlink()
    with pytest.raises(EdgesegError, match="1 frames listed") as e:
        YtvisDataset(copy / "ytvis/annotations/val.json", copy / "ytvis/JPEGImages")
    assert "val_0001/00002.jpg" in e.value.problem
    with pytest.raises(EdgesegError, match="COCO"):
        YtvisDataset(copy / "coco/annotations/val.json")


def test_missing_pycocotools_is_one_clear_error(monkeypatch):
    import sys

    from edgeseg.data import rle

    monkeypatch.setitem(sys.modules, "pycocotools", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    with pytest.raises(EdgesegError, match="pycocotools is not installed") as e:
        rle.encode(np.zeros((2, 2), bool))
    assert "edgeseg[eval]" in e.value.fix
    # the synthetic generator's own RLE needs no pycocotools
    assert rle.encode_uncompressed(np.ones((2, 2), bool))["counts"] == [0, 4]
