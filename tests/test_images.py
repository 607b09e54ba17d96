"""Calibration image sets: recursive sorted listing, seeded choice, skipped unreadable files, errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data.images import list_images, select_images, spec_for_model
from edgeseg.data.preprocess import InputSpec
from edgeseg.errors import EdgesegError
from tests.quant_models import make_images

SPEC = InputSpec(height=16, width=24, stride=8)


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "imgs"
    make_images(root, n=4, seed=1)
    make_images(root / "sub" / "deeper", n=3, seed=2)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"x")
    return root


def test_listing_is_recursive_sorted_and_ignores_other_files(folder):
    names = [p.relative_to(folder).as_posix() for p in list_images(folder)]
    assert names == sorted(names)
    assert len(names) == 7
    assert "sub/deeper/img_000.png" in names
    assert not any(n.endswith(".txt") or n.startswith(".") for n in names)


def test_choice_is_deterministic_per_seed_and_sorted(folder):
    a = select_images(folder, SPEC, num=4, seed=3)
    b = select_images(folder, SPEC, num=4, seed=3)
    assert a.names == b.names and a.sha256 == b.sha256
    assert a.names == sorted(a.names) and len(a) == 4
    others = {tuple(select_images(folder, SPEC, num=4, seed=s).names) for s in range(6)}
    assert len(others) > 1  # the seed matters
    assert len(select_images(folder, SPEC, num=100).names) == 7  # asking for more gives all


def test_unreadable_files_are_skipped_and_counted(folder):
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "sub" / "empty.png").write_bytes(b"")
    s = select_images(folder, SPEC, num=None)
    assert len(s) == 7 and len(s.skipped) == 2
    assert s.available == 9
    assert s.settings()["images_skipped"] == 2
    # A sample that hits an unreadable file replaces it with the next readable one.
    for seed in range(5):
        assert len(select_images(folder, SPEC, num=7, seed=seed)) == 7


def test_feeds_are_preprocessed_and_re_iterable(folder):
    s = select_images(folder, SPEC, num=3)
    feeds = s.feeds()
    first = [f["image"] for f in feeds]
    second = [f["image"] for f in feeds]
    assert len(first) == 3 and len(feeds) == 3
    assert first[0].shape == (1, 3, 16, 24) and first[0].dtype == np.float32
    assert all(np.array_equal(x, y) for x, y in zip(first, second))


def test_exclude_holds_out_images(folder):
    calib = select_images(folder, SPEC, num=4)
    held = select_images(folder, SPEC, num=None, exclude=set(calib.names))
    assert set(held.names).isdisjoint(calib.names) and len(held) == 3
    with pytest.raises(EdgesegError, match="left after excluding"):
        select_images(folder, SPEC, exclude={p.relative_to(folder).as_posix() for p in list_images(folder)})


def test_bad_folders_are_one_clear_error(tmp_path):
    with pytest.raises(EdgesegError, match="does not exist"):
        select_images(tmp_path / "missing", SPEC)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgesegError, match="no JPEG/PNG") as e:
        select_images(tmp_path / "empty", SPEC)
    assert "edgeseg data synth" in e.value.fix
    f = tmp_path / "file.png"
    f.write_bytes(b"")
    with pytest.raises(EdgesegError, match="not a folder"):
        select_images(f, SPEC)
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.jpg").write_bytes(b"nope")
    with pytest.raises(EdgesegError, match="none of the 3"):
        select_images(bad, SPEC)
    with pytest.raises(EdgesegError, match="positive"):
        select_images(tmp_path, SPEC, num=0)


def test_spec_comes_from_manifest_else_from_graph(tmp_path):
    from tests.quant_models import make_model

    with_manifest = make_model(tmp_path / "a")
    spec, source = spec_for_model(with_manifest)
    assert source == "manifest" and spec.stride == 8 and (spec.height, spec.width) == (32, 32)
    bare = make_model(tmp_path / "b", with_manifest=False)
    spec, source = spec_for_model(bare)
    assert source == "graph" and spec.name == "image" and spec.layout == "NCHW" and spec.height == 32
