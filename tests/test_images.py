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


# ------------------------------------------------------------ bit depths and colour modes
def _png(path, pixels: np.ndarray, color_type: int) -> None:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit colour)."""
    import struct
    import zlib

    h, w = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _deep_gray(h=16, w=24, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, (h, w)).astype(np.uint16)


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    """Pillow's convert('RGB') clips I;16 to 255: almost every pixel of a real image came out white."""
    from PIL import Image

    from edgeseg.data.preprocess import load_image

    deep = _deep_gray()
    want = np.rint(deep / 257.0).astype(np.uint8)
    Image.fromarray(deep).save(tmp_path / "pillow.png")  # Pillow writes I;16 grayscale
    _png(tmp_path / "raw.png", deep, color_type=0)
    for name in ("pillow.png", "raw.png"):
        got = load_image(tmp_path / name)
        assert got.shape == (16, 24, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, np.repeat(want[..., None], 3, axis=2))
        assert (got == 255).mean() < 0.01


def test_16_bit_images_calibrate_like_their_8_bit_versions(tmp_path):
    """What calibration feeds the graph: a 16-bit file and its 8-bit rounding give the same tensor."""
    from PIL import Image

    deep = _deep_gray(seed=3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(deep).save(tmp_path / "a" / "img.png")
    Image.fromarray(np.rint(deep / 257.0).astype(np.uint8)).save(tmp_path / "b" / "img.png")
    a = next(select_images(tmp_path / "a", SPEC).arrays())
    b = next(select_images(tmp_path / "b", SPEC).arrays())
    np.testing.assert_array_equal(a, b)


def test_16_bit_colour_and_alpha_keep_the_high_byte(tmp_path):
    from edgeseg.data.preprocess import load_image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    rgba = rng.integers(0, 65536, (8, 8, 4)).astype(np.uint16)
    la = rng.integers(0, 65536, (8, 8, 2)).astype(np.uint16)
    _png(tmp_path / "rgb.png", rgb, color_type=2)
    _png(tmp_path / "rgba.png", rgba, color_type=6)
    _png(tmp_path / "la.png", la, color_type=4)
    np.testing.assert_array_equal(load_image(tmp_path / "rgb.png"), rgb >> 8)
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgba[..., :3] >> 8)  # alpha dropped
    np.testing.assert_array_equal(load_image(tmp_path / "la.png"), np.repeat((la[..., :1] >> 8), 3, axis=2))


def test_palette_grayscale_and_alpha_images_become_their_rgb(tmp_path):
    from PIL import Image

    from edgeseg.data.preprocess import load_image

    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    gray = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    alpha = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    palette = Image.fromarray(rgb).quantize(colors=16)
    palette.save(tmp_path / "p.png", transparency=0)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(tmp_path / "la.png")
    Image.fromarray(gray).save(tmp_path / "l.png")
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgb)
    for name in ("la.png", "l.png"):
        np.testing.assert_array_equal(load_image(tmp_path / name), np.repeat(gray[..., None], 3, axis=2))


# ------------------------------------------------------------------ fewer images than --num
def test_asking_for_more_images_than_the_folder_holds_is_said(folder):
    chosen = select_images(folder, SPEC, num=50)
    assert len(chosen) == 7 and "asked for 50 images" in chosen.shortfall() and "all 7" in chosen.shortfall()
    assert select_images(folder, SPEC, num=7).shortfall() is None
    assert select_images(folder, SPEC).shortfall() is None  # all of them, by request


def test_calibrate_cli_says_how_many_images_it_used(tmp_path):
    from tests.bench_helpers import tiny_artifact_folder
    from tests.test_cli_errors import run

    art = tiny_artifact_folder(tmp_path / "art")
    images = make_images(tmp_path / "imgs", n=3, size=(32, 32))
    code, out, err = run("calibrate", art / "tiny.onnx", "--images", images, "--num", 40, "-o", tmp_path / "t.json")
    assert code == 0, err
    text = " ".join(out.split())
    assert "--num asked for 40 images" in text and "used all 3 readable ones" in text
