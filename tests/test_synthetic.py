"""Synthetic data: determinism, valid COCO / YouTube-VIS annotations, occlusion, motion,
atomic output and the `edgeseg data synth` command."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.data import synthetic as S
from edgeseg.data.rle import decode, decode_uncompressed, encode, encode_uncompressed
from edgeseg.errors import EdgesegError

SMALL = S.SynthConfig(train=6, val=3, videos=2, val_videos=1, frames=8, height=96, width=128, seed=7)


def edgeseg(*args):
    env = {**os.environ, "EDGESEG_PROGRESS": "0", "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "edgeseg", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    report = S.generate(root, SMALL)
    return root, report


def coco_api(path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


# ----------------------------------------------------------------------- RLE
def test_uncompressed_rle_round_trips_and_matches_pycocotools():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    for shape in [(5, 7), (1, 1), (16, 3)]:
        for fill in (0.0, 0.5, 1.0):
            m = rng.random(shape) < fill
            rle = encode_uncompressed(m)
            assert rle["counts"][0] >= 0 and sum(rle["counts"]) == m.size
            assert np.array_equal(decode_uncompressed(rle, *shape), m)
            # pycocotools reads our uncompressed RLE to the same mask and area
            compressed = mask_utils.frPyObjects(rle, *shape)
            assert np.array_equal(mask_utils.decode(compressed).astype(bool), m)
            assert int(mask_utils.area(compressed)) == int(m.sum())
            assert np.array_equal(decode(encode(m), *shape), m)


# ----------------------------------------------------------------------- determinism
def test_same_seed_gives_byte_identical_files(small_data, tmp_path):
    root, _ = small_data
    again = tmp_path / "again"
    S.generate(again, SMALL)
    a, b = files_of(root), files_of(again)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]


def test_other_seed_gives_other_images(small_data, tmp_path):
    root, _ = small_data
    other = tmp_path / "other"
    S.generate(other, S.SynthConfig(**{**SMALL.__dict__, "seed": 8}))
    assert (root / "coco/train/000000.png").read_bytes() != (other / "coco/train/000000.png").read_bytes()


def test_val_split_does_not_depend_on_train_count(small_data, tmp_path):
    root, _ = small_data
    more = tmp_path / "more"
    S.generate(more, S.SynthConfig(**{**SMALL.__dict__, "train": 9, "videos": 0, "val_videos": 0}))
    assert (root / "coco/annotations/val.json").read_bytes() == (more / "coco/annotations/val.json").read_bytes()
    assert files_of(root / "coco/val") == files_of(more / "coco/val")


# ----------------------------------------------------------------------- COCO
def test_layout_and_report(small_data):
    root, report = small_data
    assert (root / "synth.json").is_file()
    for split, n in (("train", SMALL.train), ("val", SMALL.val)):
        assert len(list((root / "coco" / split).glob("*.png"))) == n
        assert (root / f"coco/annotations/{split}.json").is_file()
        assert (root / f"ytvis/annotations/{split}.json").is_file()
    meta = json.loads((root / "synth.json").read_text())
    assert meta["classes"] == list(S.CLASSES) and meta["config"]["seed"] == 7
    assert [s.split for s in report.coco] == ["train", "val"]
    assert sum(s.instances for s in report.coco) == sum(
        len(json.loads((root / f"coco/annotations/{sp}.json").read_text())["annotations"]) for sp in ("train", "val"))


def test_coco_annotations_are_valid_and_masks_match_areas(small_data):
    from PIL import Image

    root, _ = small_data
    for split in ("train", "val"):
        coco = coco_api(root / f"coco/annotations/{split}.json")
        assert len(coco.getCatIds()) >= 3
        assert len(coco.getImgIds()) == getattr(SMALL, split)
        assert coco.getAnnIds(), "no annotations"
        for img in coco.imgs.values():
            with Image.open(root / "coco" / split / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"]) == (SMALL.width, SMALL.height)
        for ann in coco.anns.values():
            m = coco.annToMask(ann).astype(bool)
            assert ann["iscrowd"] == 0
            assert m.sum() == ann["area"] >= S.MIN_VISIBLE_PIXELS
            ys, xs = np.nonzero(m)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["category_id"] in coco.cats


def test_all_coco_size_buckets_are_populated_at_the_default_size():
    areas = []
    for i in range(60):
        r = S.render_image(np.random.default_rng([0, 0, 0, i]), 256, 256)
        areas += [int(m.sum()) for m in r.masks]
    a = np.array(areas)
    shares = [(a < 32 ** 2).mean(), ((a >= 32 ** 2) & (a < 96 ** 2)).mean(), (a >= 96 ** 2).mean()]
    assert all(s >= 0.15 for s in shares), shares


def test_occlusion_annotates_only_visible_pixels():
    occluded = 0
    for i in range(40):
        r = S.render_image(np.random.default_rng([1, 0, 0, i]), 128, 128)
        # Drawing order is bottom to top: visible = full minus everything drawn later.
        for k, (vis, full) in enumerate(zip(r.masks, r.full_masks)):
            later = np.zeros_like(vis)
            for f in r.full_masks[k + 1:]:
                later |= f
            assert np.array_equal(vis, full & ~later)
            assert vis.sum() >= S.KEEP_VISIBLE * full.sum() - 1e-9  # never (almost) hidden
            occluded += int(vis.sum() < full.sum())
        # each pixel belongs to at most one object
        if r.masks:
            assert np.stack(r.masks).sum(axis=0).max() <= 1
    assert occluded > 0, "no occlusion in 40 images"


def test_annotated_pixels_show_the_object_not_the_background():
    # The object was painted over the background at its visible mask: the image differs
    # from a re-render without shapes there (guards against masks drawn at wrong places).
    r = S.render_image(np.random.default_rng([3, 0, 0, 0]), 128, 128)
    assert r.masks
    img = r.image.astype(np.int32)
    for m in r.masks:
        ring = np.zeros_like(m)
        ys, xs = np.nonzero(m)
        inside = img[m].mean(axis=0)
        ring[max(ys.min() - 3, 0):ys.max() + 4, max(xs.min() - 3, 0):xs.max() + 4] = True
        ring &= ~np.any(np.stack(r.full_masks), axis=0)
        if ring.sum() > 20:
            outside = img[ring].mean(axis=0)
            assert np.abs(inside - outside).sum() > 30


# ----------------------------------------------------------------------- YouTube-VIS
def test_ytvis_annotations_are_valid(small_data):
    from pycocotools import mask as mask_utils

    root, _ = small_data
    data = json.loads((root / "ytvis/annotations/train.json").read_text())
    assert len(data["videos"]) == SMALL.videos and len(data["categories"]) >= 3
    ids = [a["id"] for a in data["annotations"]]
    assert len(ids) == len(set(ids)), "track ids must be unique (persistent per object)"
    for v in data["videos"]:
        assert v["length"] == len(v["file_names"]) == SMALL.frames
        assert all((root / "ytvis/JPEGImages" / f).is_file() for f in v["file_names"])
    for a in data["annotations"]:
        assert len(a["segmentations"]) == len(a["areas"]) == len(a["bboxes"]) == SMALL.frames
        assert any(s is not None for s in a["segmentations"])
        for seg, area, box in zip(a["segmentations"], a["areas"], a["bboxes"]):
            assert (seg is None) == (area is None) == (box is None)
            if seg is not None:
                rle = mask_utils.frPyObjects(seg, SMALL.height, SMALL.width)
                assert int(mask_utils.area(rle)) == area >= S.MIN_VISIBLE_PIXELS_VIDEO


def test_videos_have_objects_entering_leaving_and_moving():
    entering = leaving = 0
    for i in range(6):
        v = S.render_video(np.random.default_rng([5, 1, 0, i]), frames=12, height=128, width=128)
        assert len(v.frames) == 12 and all(f.shape == (128, 128, 3) for f in v.frames)
        for masks in v.masks:
            present = [m is not None for m in masks]
            first, last = present.index(True), len(present) - 1 - present[::-1].index(True)
            entering += int(first > 0)
            leaving += int(last < len(present) - 1)
            # Same object from frame to frame: consecutive centroids stay close.
            cents = [np.argwhere(m).mean(axis=0) if m is not None else None for m in masks]
            for a, b in zip(cents, cents[1:]):
                if a is not None and b is not None:
                    assert np.linalg.norm(a - b) < 64
            moved = [c for c in cents if c is not None]
            if len(moved) > 2:
                assert np.linalg.norm(moved[0] - moved[-1]) > 1.0, "object does not move"
        # visible masks in one frame never overlap (occlusion resolved per frame)
        for t in range(12):
            stack = [m[t] for m in v.masks if m[t] is not None]
            if stack:
                assert np.stack(stack).sum(axis=0).max() <= 1
    assert entering > 0 and leaving > 0


# ----------------------------------------------------------------------- errors / atomicity
@pytest.mark.parametrize("change, message", [
    ({"height": 20}, "too small"),
    ({"train": -1}, "--train must be 0 or more"),
    ({"train": 0, "val": 0, "videos": 0, "val_videos": 0}, "nothing to generate"),
    ({"frames": 1}, "--frames must be at least 2"),
    ({"seed": -3}, "--seed"),
])
def test_bad_settings_are_one_clear_error(tmp_path, change, message):
    with pytest.raises(EdgesegError, match=message) as e:
        S.generate(tmp_path / "x", S.SynthConfig(**{**SMALL.__dict__, **change}))
    assert e.value.fix
    assert not (tmp_path / "x").exists()


def test_failure_midway_leaves_no_partial_output(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = S.render_image

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(S, "render_image", flaky)
    with pytest.raises(RuntimeError):
        S.generate(tmp_path / "out", SMALL)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temp sibling


def test_unwritable_output_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(EdgesegError, match="cannot be created: .*file.txt is a file") as e:
        S.generate(blocker / "data", SMALL)
    assert "folder" in e.value.fix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_foreign_folder_needs_overwrite_and_keeps_the_users_files(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(EdgesegError, match="not an edgeseg synthetic dataset") as e:
        S.generate(foreign, SMALL)
    assert "--overwrite" in e.value.fix
    # Before the fix, --overwrite refused outright; now it adds the dataset beside the
    # user's file and never touches it.
    S.generate(foreign, SMALL, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"
    assert (foreign / "synth.json").is_file() and (foreign / "coco" / "annotations" / "train.json").is_file()


def test_regenerating_replaces_only_the_files_synth_json_lists(tmp_path):
    out = tmp_path / "data"
    S.generate(out, SMALL)
    listed = set(json.loads((out / "synth.json").read_text())["files"])
    assert listed == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"synth.json"}
    (out / "coco" / "train" / "my_extra_image.png").write_bytes(b"the user's")
    (out / "notes.txt").write_text("mine")
    S.generate(out, dataclasses.replace(SMALL, train=1))
    assert len(list((out / "coco/train").glob("0*.png"))) == 1  # the old, more numerous images are gone
    assert (out / "coco" / "train" / "my_extra_image.png").read_bytes() == b"the user's"
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# ----------------------------------------------------------------------- CLI
def test_cli_synth_end_to_end(tmp_path):
    out = tmp_path / "shapes"
    args = ["data", "synth", "-o", out, "--train", 3, "--val", 2, "--videos", 1, "--val-videos", 1,
            "--frames", 4, "--size", "64x96", "--seed", 3]
    res = edgeseg(*args)
    assert res.returncode == 0, res.stderr
    assert "small" in res.stdout and "entering" in res.stdout
    ann = json.loads((out / "coco/annotations/val.json").read_text())
    assert len(ann["images"]) == 2 and ann["images"][0]["width"] == 96 and ann["images"][0]["height"] == 64
    assert len(json.loads((out / "ytvis/annotations/train.json").read_text())["videos"]) == 1

    # An earlier synthetic dataset is ours: regenerated in place without --overwrite.
    res = edgeseg(*args, "--train", 1)
    assert res.returncode == 0, res.stderr
    assert len(list((out / "coco/train").glob("*.png"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no temp leftovers


def test_cli_synth_bad_size(tmp_path):
    res = edgeseg("data", "synth", "-o", tmp_path / "x", "--size", "big")
    assert res.returncode != 0 and "cannot read input size" in res.stderr and "fix:" in res.stderr
