"""Loading and saving weights: round trips, official backbone layouts, clear refusals."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from edgeseg.errors import EdgesegError
from edgeseg.models import create_model
from edgeseg.models.backbones import MobileNetV2, TopFormer
from edgeseg.models.checkpoints import load_weights, read_state_dict, save_weights

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "edgeseg-evil-pickle-ran"


def _model(seed: int, **cfg):
    torch.manual_seed(seed)
    return create_model("mobileinst_test", **{"num_classes": 3, "input_size": (64, 64), **cfg})


def _assert_same(a: dict, b: dict, keys=None):
    for k in keys or a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------- round trips
def test_safetensors_round_trip_with_metadata(tmp_path):
    src, dst = _model(0), _model(1)
    path = save_weights(src, tmp_path / "w.safetensors")
    report = load_weights(dst, path)
    _assert_same(src.state_dict(), dst.state_dict())
    assert report.target == "model" and report.loaded == len(src.state_dict()) and not report.missing
    _, meta = read_state_dict(path)
    assert meta["edgeseg.model"] == "mobileinst_test"
    assert '"num_classes": 3' in meta["edgeseg.cfg"]


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "dataparallel", "compiled"])
def test_pth_round_trips_through_common_containers(tmp_path, wrap):
    src, dst = _model(0), _model(1)
    sd = src.state_dict()
    obj = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 7, "meta": {"CLASSES": ("a", "b")}},
        "model": {"model": sd, "optimizer": {"lr": 0.1}},
        "dataparallel": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "compiled": {f"_orig_mod.{k}": v for k, v in sd.items()},
    }[wrap]
    torch.save(obj, tmp_path / "w.pth")
    report = load_weights(dst, tmp_path / "w.pth")
    _assert_same(sd, dst.state_dict())
    assert report.stripped_prefix == {"dataparallel": "module.", "compiled": "_orig_mod."}.get(wrap)


def test_save_weights_pth_is_loadable_weights_only(tmp_path):
    src = _model(0)
    save_weights(src, tmp_path / "w.pth")
    loaded = torch.load(tmp_path / "w.pth", weights_only=True)
    _assert_same(src.state_dict(), loaded)


def test_save_weights_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    import safetensors.torch

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        save_weights(_model(0), tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(EdgesegError, match="cannot save weights"):
        save_weights(_model(0), tmp_path / "w.onnx")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- refusals
def _evil_payload():
    MARKER.write_text("pickle executed code")


class Evil:
    def __reduce__(self):
        return (_evil_payload, ())


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_with_arbitrary_objects_is_refused_and_never_executed(tmp_path, zip_format):
    MARKER.unlink(missing_ok=True)
    torch.save({"state_dict": _model(0).state_dict(), "hook": Evil()}, tmp_path / "evil.pth",
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(EdgesegError) as e:
        load_weights(_model(1), tmp_path / "evil.pth")
    assert "refusing" in e.value.problem and "arbitrary code" in e.value.problem
    assert "_evil_payload" in e.value.problem  # names the offending global
    assert "trust" in e.value.fix
    assert not MARKER.exists()


def test_training_args_namespace_is_allowed_and_ema_weights_preferred(tmp_path):
    """timm-style checkpoints (TopFormer's ImageNet ones) store args as a Namespace and EMA weights."""
    ema, raw, dst = _model(0), _model(1), _model(2)
    torch.save({"state_dict": raw.state_dict(), "state_dict_ema": ema.state_dict(),
                "args": argparse.Namespace(lr=0.1, model="topformer"), "epoch": 299}, tmp_path / "ck.pth")
    load_weights(dst, tmp_path / "ck.pth")
    _assert_same(ema.state_dict(), dst.state_dict())


@pytest.mark.parametrize("name, content, match", [
    ("missing.pth", None, "not found"),
    ("weights.onnx", b"x", "unsupported weights format"),
    ("broken.pth", b"not a checkpoint", "cannot read"),
    ("broken.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage", "safetensors"),
])
def test_unreadable_files_give_one_clear_error(tmp_path, name, content, match):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(EdgesegError, match=match):
        load_weights(_model(0), tmp_path / name)


def test_file_without_weights_is_explained(tmp_path):
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "empty.pth")
    with pytest.raises(EdgesegError, match="no weights found"):
        load_weights(_model(0), tmp_path / "empty.pth")


# -------------------------------------------------------------------- mismatch messages
def test_num_classes_mismatch_names_the_fix_and_non_strict_keeps_the_rest(tmp_path):
    src = _model(0, num_classes=5)
    save_weights(src, tmp_path / "w.safetensors")
    dst = _model(1, num_classes=3)
    with pytest.raises(EdgesegError) as e:
        load_weights(dst, tmp_path / "w.safetensors")
    assert "cls_head.weight" in e.value.problem and "5 classes" in e.value.problem
    assert "num_classes=5" in e.value.fix

    report = load_weights(dst, tmp_path / "w.safetensors", strict=False)
    assert set(report.ignored) == {"instance_decoder.cls_head.weight", "instance_decoder.cls_head.bias"}
    keep = [k for k in src.state_dict() if ".cls_head." not in k]
    _assert_same(src.state_dict(), dst.state_dict(), keep)


def test_num_queries_mismatch_names_the_fix(tmp_path):
    save_weights(_model(0, num_queries=4), tmp_path / "w.safetensors")
    with pytest.raises(EdgesegError) as e:
        load_weights(_model(1), tmp_path / "w.safetensors")
    assert "query_feat" in e.value.problem and "num_queries=4" in e.value.fix


def test_wrong_variant_is_recognised_from_the_file(tmp_path):
    torch.manual_seed(0)
    src = create_model("mobileinst_topformer_tiny", num_classes=3, input_size=(64, 64))
    torch.save(src.state_dict(), tmp_path / "tiny.pth")  # .pth: no metadata, guessed from shapes
    with pytest.raises(EdgesegError) as e:
        load_weights(_model(0), tmp_path / "tiny.pth")
    assert "unexpected (backbone." in e.value.problem and "with other shapes" in e.value.problem
    assert "mobileinst_topformer_tiny" in e.value.fix


def test_mixed_dataparallel_prefixes_are_diagnosed(tmp_path):
    sd = _model(0).state_dict()
    mixed = {(f"module.{k}" if i % 2 else k): v for i, (k, v) in enumerate(sd.items())}
    torch.save(mixed, tmp_path / "mixed.pth")
    with pytest.raises(EdgesegError) as e:
        load_weights(_model(1), tmp_path / "mixed.pth")
    assert "DataParallel" in e.value.fix


def test_nothing_matching_fails_even_when_not_strict(tmp_path):
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(EdgesegError, match="none of the 1 tensors"):
        load_weights(_model(0), tmp_path / "other.pth", strict=False)


# ------------------------------------------------------------ official backbone layouts
def _topformer_tiny_model():
    torch.manual_seed(3)
    return create_model("mobileinst_topformer_tiny", num_classes=3, input_size=(64, 64))


def test_official_topformer_imagenet_checkpoint_loads_into_the_backbone(tmp_path):
    """topformer-T-224-66.2.pth layout: tpm.*/trans.* + classifier head.*, no SIM, EMA + args."""
    torch.manual_seed(7)
    pretrained = TopFormer("tiny").state_dict()
    sd = {k: v for k, v in pretrained.items() if not k.startswith("SIM.")}
    sd.update({"head.bn.weight": torch.ones(208), "head.bn.bias": torch.zeros(208),
               "head.l.weight": torch.zeros(1000, 208), "head.l.bias": torch.zeros(1000)})
    torch.save({"state_dict_ema": sd, "state_dict": sd, "args": argparse.Namespace(epochs=300)},
               tmp_path / "topformer-T-224-66.2.pth")
    model = _topformer_tiny_model()
    decoder_before = {k: v.clone() for k, v in model.mask_decoder.state_dict().items()}
    report = load_weights(model, tmp_path / "topformer-T-224-66.2.pth")
    assert report.target == "backbone" and "ImageNet" in report.source
    assert {"head.l.weight", "head.bn.bias"} <= set(report.ignored)
    assert report.missing and all(k.startswith("SIM.") for k in report.missing)
    _assert_same(sd, model.backbone.state_dict(), [k for k in sd if not k.startswith("head.")])
    _assert_same(decoder_before, model.mask_decoder.state_dict())
    assert "into the backbone" in report.summary()


def test_official_topformer_ade20k_checkpoint_loads_backbone_with_sim(tmp_path):
    """mmseg layout: {'meta', 'state_dict': {'backbone.*', 'decode_head.*'}}."""
    torch.manual_seed(8)
    pretrained = TopFormer("tiny").state_dict()
    sd = {f"backbone.{k}": v for k, v in pretrained.items()}
    sd.update({"decode_head.conv_seg.weight": torch.zeros(150, 128, 1, 1),
               "decode_head.linear_fuse.conv.weight": torch.zeros(128, 128, 1, 1)})
    torch.save({"meta": {"CLASSES": ("wall", "building"), "PALETTE": [[1, 2, 3]]}, "state_dict": sd},
               tmp_path / "topformer_tiny_ade20k.pth")
    model = _topformer_tiny_model()
    report = load_weights(model, tmp_path / "topformer_tiny_ade20k.pth")
    assert report.target == "backbone" and not report.missing
    assert "decode_head.conv_seg.weight" in report.ignored
    _assert_same(pretrained, model.backbone.state_dict())


def test_backbone_of_another_size_is_named(tmp_path):
    torch.save({"state_dict": TopFormer("base").state_dict()}, tmp_path / "topformer-B.pth")
    with pytest.raises(EdgesegError) as e:
        load_weights(_topformer_tiny_model(), tmp_path / "topformer-B.pth")
    assert "other shapes" in e.value.problem
    assert "TopFormer-Base" in e.value.fix


def test_torchvision_mobilenetv2_checkpoint_loads_into_the_backbone(tmp_path):
    torch.manual_seed(9)
    pretrained = {k: v for k, v in MobileNetV2().state_dict().items() if not k.startswith("global_block.")}
    sd = dict(pretrained)
    sd.update({"features.18.0.weight": torch.zeros(1280, 320, 1, 1), "features.18.1.weight": torch.ones(1280),
               "classifier.1.weight": torch.zeros(1000, 1280), "classifier.1.bias": torch.zeros(1000)})
    torch.save(sd, tmp_path / "mobilenet_v2-b0353104.pth")
    model = create_model("mobileinst_mobilenetv2", num_classes=3, input_size=(64, 64))
    report = load_weights(model, tmp_path / "mobilenet_v2-b0353104.pth")
    assert report.target == "backbone" and "MobileNetV2" in report.source
    assert all(k.startswith("global_block.") for k in report.missing)
    assert {"classifier.1.weight", "features.18.0.weight"} <= set(report.ignored)
    _assert_same(pretrained, model.backbone.state_dict())


def test_safetensors_checkpoint_opens_as_an_artifact(tmp_path):
    """save_weights embeds the model-level manifest, so a bare checkpoint runs like an export."""
    import numpy as np

    from edgeseg.export.manifest import manifest_for_artifact
    from edgeseg.models import create_model
    from edgeseg.runtimes import load_runtime

    model = create_model("mobileinst_test", num_classes=3, input_size=(128, 128)).eval()
    path = save_weights(model, tmp_path / "ck.safetensors")
    m = manifest_for_artifact(path)
    assert m.model == "mobileinst_test"
    assert m.model_cfg["num_classes"] == 3 and m.input["shape"] == [1, 3, 128, 128]
    assert list(m.components) == ["backbone", "mask_decoder", "instance_decoder"]
    rt = load_runtime(path)
    feeds = rt.random_feeds()
    out = rt.run(feeds)
    with torch.no_grad():
        ref = model(torch.from_numpy(feeds["image"]))
    np.testing.assert_allclose(out["logits"], ref[0].numpy(), atol=1e-6)
    assert out["logits"].shape[-1] == 3


# ------------------------------------------------- older files and what a load left alone
def test_weights_saved_without_batchnorm_counters_load_strictly(tmp_path):
    """PyTorch before 0.4.1 saved no BatchNorm num_batches_tracked: such files are complete."""
    src = _model(0)
    old = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(old) < len(src.state_dict())  # the model does have BatchNorm counters
    torch.save(old, tmp_path / "old.pth")
    dst = _model(1)
    report = load_weights(dst, tmp_path / "old.pth")
    assert report.loaded == len(old) and not report.missing and not report.initial_keys
    _assert_same(old, dst.state_dict())


def test_backbone_load_reports_per_module_what_kept_its_initial_values(tmp_path):
    """An ImageNet backbone has no SIM, and the decoders are not in it: all of that stays random."""
    model = _topformer_tiny_model()
    sd = {k: v for k, v in TopFormer("tiny").state_dict().items() if not k.startswith("SIM.")}
    torch.save({"state_dict_ema": sd}, tmp_path / "topformer-T.pth")
    report = load_weights(model, tmp_path / "topformer-T.pth")
    loaded, initial = report.by_module()
    n_sim = sum(1 for k in model.state_dict() if k.startswith("backbone.SIM.") and "num_batches" not in k)
    assert n_sim > 0 and initial["backbone.SIM"] == n_sim
    assert set(initial) == {"backbone.SIM", "mask_decoder", "instance_decoder"}
    assert set(loaded) == {"backbone.tpm", "backbone.trans"} and sum(loaded.values()) == report.loaded
    d = report.to_dict()
    assert d["initial"] == sum(initial.values()) and d["initial_by_module"] == initial


@pytest.mark.slow
def test_export_says_what_weights_it_loaded_and_how_many_calibration_images_it_used(tmp_path):
    """One export covers two silent cases of issue 12: random SIM/decoder tensors after an
    ImageNet backbone, and --calib-num larger than the folder."""
    import json

    from tests.quant_models import make_images
    from tests.test_cli_errors import run

    torch.manual_seed(0)
    backbone = create_model("mobileinst_test", input_size=(64, 64)).backbone.state_dict()
    sd = {k: v for k, v in backbone.items() if not k.startswith("SIM.") and not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "backbone.pth")
    images = make_images(tmp_path / "imgs", n=3, size=(64, 64))
    code, out, err = run("export", "mobileinst_test", "--input-size", 64, "--weights", tmp_path / "backbone.pth",
                         "--graphs", "frame", "-o", tmp_path / "out",
                         "--plan", "int8", "--calib", images, "--calib-num", 50)
    assert code == 0, err
    text = " ".join(out.split())  # rich may wrap lines
    assert f"loaded {len(sd)} tensors: backbone.tpm" in text
    assert "kept initial values" in text and "backbone.SIM" in text and "mask_decoder" in text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    load = manifest["weights"]["load"]
    assert load["loaded"] == len(sd) and load["target"] == "backbone"
    assert set(load["initial_by_module"]) == {"backbone.SIM", "mask_decoder", "instance_decoder"}
    note = " ".join(err.split())
    assert "--calib-num asked for 50 images" in note and "used all 3 readable ones" in note
    calibrated = [h for h in manifest["history"] if h["step"] == "calibrate"]
    assert calibrated and calibrated[0]["num_images"] == 3
