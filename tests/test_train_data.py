"""Training batches: image and masks move together, the order is a function of the seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeseg.data.coco import CocoDataset
from edgeseg.data.preprocess import InputSpec, preprocess
from edgeseg.data.rle import encode_uncompressed
from edgeseg.errors import EdgesegError
from edgeseg.models.pretrained import checkpoint_model_cfg, resolve_weights, zoo_checkpoint
from edgeseg.train.data import AugmentConfig, TrainData
from edgeseg.train.schedule import lr_at


def _dataset(tmp_path: Path, n: int = 3, size: int = 64) -> CocoDataset:
    """n images: a white rectangle (the one instance) on black, at a different place in each."""
    (tmp_path / "img").mkdir()
    images, anns = [], []
    for i in range(n):
        mask = np.zeros((size, size), bool)
        mask[8 + 4 * i:30 + 4 * i, 5 + 6 * i:41 + 3 * i] = True  # asymmetric: flips are visible
        Image.fromarray((mask * 255).astype(np.uint8)).convert("RGB").save(tmp_path / "img" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 7, "iscrowd": 0, "area": float(mask.sum()),
                     "bbox": [0, 0, 1, 1], "segmentation": encode_uncompressed(mask)})
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                   "categories": [{"id": 7, "name": "box"}]}))
    return CocoDataset(tmp_path / "ann.json", tmp_path / "img")


def test_without_augmentation_the_image_is_exactly_evals_preprocessing(tmp_path):
    ds = _dataset(tmp_path)
    spec = InputSpec(64, 64, stride=64)
    image, target = TrainData(ds, spec).sample(1, rng=None)
    assert torch.equal(image, torch.from_numpy(preprocess(ds.load_image(ds.images[1]), spec)[0]))
    assert target["labels"].tolist() == [0]  # category 7 -> label 0
    assert torch.equal(target["masks"][0] > 0.5, torch.from_numpy(ds[1].masks[0]))


def test_augmented_masks_stay_on_the_object(tmp_path):
    ds = _dataset(tmp_path)
    spec = InputSpec(64, 64, stride=64)
    data = TrainData(ds, spec, AugmentConfig(flip=0.5, scale_min=0.6, scale_max=1.5, min_pixels=1), seed=5)
    scaled = 0
    for it in range(12):
        rng = np.random.default_rng([5, 1, it, 0])
        image, target = data.sample(it % 3, rng)
        bright = image.mean(0) > 0  # white object vs black background (and zero padding)
        if target["masks"].shape[0] == 0:
            assert bright.sum() < 4  # the object was cropped away entirely
            continue
        mask = target["masks"][0] > 0.5
        inter = (mask & bright).sum().item()
        union = (mask | bright).sum().item()
        assert inter / union > 0.9, it
        scaled += int(mask.sum().item() != int(ds[it % 3].masks[0].sum()))
    assert scaled > 0  # the jitter did something


def test_flip_mirrors_image_and_masks(tmp_path):
    ds = _dataset(tmp_path)
    spec = InputSpec(64, 64, stride=64)
    data = TrainData(ds, spec, AugmentConfig(flip=1.0, scale_min=1.0, scale_max=1.0))
    image, target = data.sample(0, np.random.default_rng(0))
    plain_image, plain_target = data.sample(0, rng=None)
    assert torch.equal(image, plain_image.flip(-1))
    assert torch.equal(target["masks"], plain_target["masks"].flip(-1))
    assert not torch.equal(target["masks"], plain_target["masks"])  # the object is not symmetric


def test_crops_keep_the_scale_and_the_alignment(tmp_path):
    ds = _dataset(tmp_path)
    spec = InputSpec(128, 128, stride=64)  # the 64x64 images are preprocessed to 128, then cropped to 64
    data = TrainData(ds, spec, AugmentConfig(flip=0.0, scale_min=1.0, scale_max=1.0, crop=(64, 64), min_pixels=1))
    full_image, full_target = data.sample(2, rng=None)
    for it in range(6):
        image, target = data.sample(2, np.random.default_rng(it))
        assert image.shape == (3, 64, 64)
        # The crop is a window of the full (unaugmented) input: find it and compare.
        hits = [(y, x) for y in range(65) for x in range(65)
                if torch.equal(full_image[:, y:y + 64, x:x + 64], image)]
        assert hits, it
        y, x = hits[0]
        window = full_target["masks"][:, y:y + 64, x:x + 64]
        kept = (window > 0.5).flatten(1).sum(1) >= 1
        assert torch.equal(target["masks"], window[kept])
    with pytest.raises(EdgesegError, match="crop 96x96"):
        TrainData(ds, spec, AugmentConfig(crop=(96, 96)))


def test_object_zoom_centres_an_object_at_the_requested_size(tmp_path):
    ds = _dataset(tmp_path)
    spec = InputSpec(128, 128, stride=64)
    data = TrainData(ds, spec, AugmentConfig(flip=0.0, crop=(64, 64), zoom=1.0, zoom_range=(0.5, 0.5),
                                             min_pixels=1))
    for it in range(6):
        image, target = data.sample(it % 3, np.random.default_rng(it))
        assert image.shape == (3, 64, 64) and target["masks"].shape[0] == 1
        ys, xs = torch.nonzero(target["masks"][0] > 0.5, as_tuple=True)
        extent = max(int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1)
        assert abs(extent - 32) <= 2, extent  # half of the crop side
        assert 16 - 1 <= ys.float().mean() <= 48 + 1 and 16 - 1 <= xs.float().mean() <= 48 + 1
        bright = image.mean(0) > 0
        assert ((target["masks"][0] > 0.5) & bright).sum() / ((target["masks"][0] > 0.5) | bright).sum() > 0.9
    with pytest.raises(EdgesegError, match="needs a crop size"):
        TrainData(ds, spec, AugmentConfig(zoom=0.5))


def test_epochs_are_seeded_permutations(tmp_path):
    ds = _dataset(tmp_path, n=5)
    a = TrainData(ds, InputSpec(64, 64), seed=1)
    order = [i for it in range(5) for i in a.indices(it, 2)]  # 10 samples = 2 epochs
    assert sorted(order[:5]) == list(range(5)) and sorted(order[5:]) == list(range(5))
    assert order == [i for it in range(5) for i in TrainData(ds, InputSpec(64, 64), seed=1).indices(it, 2)]
    assert order != [i for it in range(5) for i in TrainData(ds, InputSpec(64, 64), seed=2).indices(it, 2)]


def test_bad_augmentation_ranges_are_refused(tmp_path):
    ds = _dataset(tmp_path)
    with pytest.raises(EdgesegError, match="scale jitter"):
        TrainData(ds, InputSpec(64, 64), AugmentConfig(scale_min=1.5, scale_max=1.0))


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(i, 100, 1e-3, warmup=10, min_ratio=0.01) for i in range(100)]
    assert lrs[0] == pytest.approx(1e-6) and lrs[10] == pytest.approx(1e-3)
    assert all(b > a for a, b in zip(lrs[:10], lrs[1:11]))          # warm-up rises
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))          # then never rises
    assert lr_at(100, 100, 1e-3, warmup=10, min_ratio=0.01) == pytest.approx(1e-5)


def test_zoo_names_resolve_or_say_what_exists(tmp_path):
    assert resolve_weights("some/file.safetensors", "mobileinst_test") == Path("some/file.safetensors")
    with pytest.raises(EdgesegError, match="no shipped checkpoint for mobileinst_test"):
        resolve_weights("zoo", "mobileinst_test")
    with pytest.raises(EdgesegError, match="no shipped checkpoint"):
        zoo_checkpoint("nope")


def test_checkpoint_cfg_comes_only_from_an_edgeseg_checkpoint_of_that_model(tmp_path):
    from safetensors.torch import save_file

    from edgeseg.models import create_model
    from edgeseg.models.checkpoints import save_weights

    m = create_model("mobileinst_test", num_classes=5, input_size=(128, 64))
    save_weights(m, tmp_path / "m.safetensors")
    cfg = checkpoint_model_cfg(tmp_path / "m.safetensors", "mobileinst_test")
    assert cfg["num_classes"] == 5 and cfg["input_size"] == (128, 64)
    assert checkpoint_model_cfg(tmp_path / "m.safetensors", "mobileinst_topformer_tiny") == {}
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    assert checkpoint_model_cfg(tmp_path / "plain.safetensors", "mobileinst_test") == {}
