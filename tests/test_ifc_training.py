"""Training a clip model: clip batches from YouTube-VIS videos, IFC's clip-level objective,
and the generic trainer on video data (VIS AP validation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseg.data.ytvis import YtvisDataset
from edgeseg.errors import EdgesegError


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from edgeseg.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("ifc_videos") / "vis"
    generate(root, SynthConfig(train=0, val=0, videos=3, val_videos=2, frames=6, height=64, width=64, seed=5,
                               max_objects=3))
    return root / "ytvis"


def _spec(frames=3):
    from edgeseg.data.preprocess import InputSpec

    return InputSpec(height=64, width=64, stride=64, frames=frames)


# --------------------------------------------------------------------------- clip data
def test_clip_batches_hold_space_time_targets(videos):
    from edgeseg.train.clip_data import ClipTrainData

    ds = YtvisDataset(videos / "annotations" / "train.json", videos / "JPEGImages")
    data = ClipTrainData(ds, _spec(), 3, seed=0)
    clips, targets = data.batch(0, 2)
    assert clips.shape == (2, 3, 3, 64, 64) and clips.dtype == torch.float32
    for t in targets:
        m = t["masks"]
        assert m.ndim == 4 and m.shape[1:] == (3, 64, 64)
        assert t["labels"].shape == t["ids"].shape == (m.shape[0],)
        assert ((m > 0.5).flatten(2).sum(-1) >= 8).any(dim=1).all()  # every kept object shows on some frame
    again, targets2 = data.batch(0, 2)
    torch.testing.assert_close(clips, again)  # a function of (seed, iteration): resumable
    assert all(torch.equal(a["masks"], b["masks"]) for a, b in zip(targets, targets2))


def test_an_unaugmented_clip_is_the_first_frames_with_their_ground_truth(videos):
    from edgeseg.data.preprocess import preprocess
    from edgeseg.train.clip_data import ClipTrainData

    ds = YtvisDataset(videos / "annotations" / "train.json", videos / "JPEGImages")
    data = ClipTrainData(ds, _spec(), 3)
    clip, target = data.sample(0, None)
    video = ds.videos[0]
    for i in range(3):
        np.testing.assert_allclose(clip[i].numpy(), preprocess(ds.load_frame(video, i), _spec(None))[0])
    tracks = [tr for tr in ds.tracks(video.id) if any(tr.present()[:3])]
    assert sorted(target["ids"].tolist()) == sorted(tr.id for tr in tracks)
    for tr in tracks:
        k = target["ids"].tolist().index(tr.id)
        gt = tr.masks(video.height, video.width)[:3]
        assert ((target["masks"][k] > 0.5).numpy() == gt).mean() > 0.98
        assert int(target["labels"][k]) == tr.label


def test_frame_indices_fit_short_videos():
    from edgeseg.train.clip_data import ClipTrainData

    data = ClipTrainData.__new__(ClipTrainData)
    data.clip_length, data.max_frame_step = 5, 2
    assert data.frame_indices(3, None) == [0, 1, 2, 2, 2]
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = data.frame_indices(12, rng)
        assert len(idx) == 5 and idx == sorted(idx) and idx[-1] < 12
        assert len(set(np.diff(idx))) == 1


# ---------------------------------------------------------------------------- objective
def _targets(t=3, hw=128):
    masks = torch.zeros(2, t, hw, hw)
    masks[0, :, :40, :40] = 1.0
    masks[1, 1:, 60:, 50:] = 1.0   # absent on the first frame
    return [{"labels": torch.tensor([0, 2]), "masks": masks, "ids": torch.tensor([1, 2])}]


def test_matching_uses_the_whole_space_time_mask():
    from edgeseg.models.ifc.loss import match_clip

    t, h = 3, 8
    target = torch.zeros(1, t, h, h)
    target[0, :, :4, :4] = 1.0
    good_first_frame_only = torch.full((2, t, h, h), -10.0)
    good_first_frame_only[0, 0, :4, :4] = 10.0           # right on frame 0 only
    good_first_frame_only[1, :, :4, :4] = 10.0           # right on every frame
    logits = torch.zeros(2, 4)
    m = match_clip(logits, good_first_frame_only, torch.tensor([1]), target)
    assert m.queries.tolist() == [1] and m.targets.tolist() == [0]


def test_the_no_object_class_is_down_weighted_by_ten():
    from edgeseg.models.ifc.loss import IFCObjective, clip_set_loss

    logits = torch.zeros(1, 4, 4)
    masks = torch.zeros(1, 4, 2, 4, 4)
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 2, 4, 4)}]
    small = [torch.zeros(0, 2, 4, 4)]
    w = IFCObjective.Options()
    # every query is "no object": the weighted mean of equal terms is the term itself
    assert w.no_object == pytest.approx(0.1)
    base = clip_set_loss(logits, masks, empty, small, 1, w).parts["cls"]
    assert float(base) == pytest.approx(np.log(4), rel=1e-5)
    one = [{"labels": torch.tensor([2]), "masks": torch.ones(1, 2, 4, 4)}]
    out = clip_set_loss(logits, masks, one, [torch.ones(1, 2, 4, 4)], 1, w)
    # one matched query (weight 1) and three background ones (weight 0.1 each): all have
    # the same cross-entropy here, so the mean is unchanged, but the matched query's share
    # of the gradient is 1 / (1 + 3 * 0.1)
    logits_g = logits.clone().requires_grad_(True)
    clip_set_loss(logits_g, masks, one, [torch.ones(1, 2, 4, 4)], 1, w).parts["cls"].backward()
    grads = logits_g.grad[0].abs().sum(-1)
    matched = int(out.matches[0].queries[0])
    others = [q for q in range(4) if q != matched]
    assert float(grads[matched]) == pytest.approx(10 * float(grads[others[0]]), rel=1e-4)


def test_one_training_step_reaches_every_parameter():
    from edgeseg.models import create_model
    from edgeseg.models.ifc.loss import IFCObjective

    torch.manual_seed(0)
    model = create_model("ifc_test").train()
    objective = IFCObjective(model, 3)
    clips = torch.randn(1, 3, 3, 128, 128)
    out = objective(model, clips, _targets())
    assert out.total.ndim == 0 and torch.isfinite(out.total)
    assert {"cls", "focal", "dice", "aux"} <= set(out.parts)
    out.total.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not dead, dead[:5]


def test_bad_targets_and_options_are_clear_errors():
    from edgeseg.models import create_model
    from edgeseg.models.ifc.loss import IFCObjective

    model = create_model("ifc_test")
    with pytest.raises(EdgesegError, match="no_object"):
        IFCObjective(model, 3, no_object="0")
    with pytest.raises(EdgesegError, match="clips"):
        IFCObjective(model, 3)(model, torch.randn(3, 3, 128, 128), _targets())


# ------------------------------------------------------------------------------ trainer
@pytest.mark.slow
def test_edgeseg_train_runs_a_clip_model_and_measures_vis_ap(videos, tmp_path):
    from tests.test_track_cli import run

    ckpt = tmp_path / "ifc.safetensors"
    code, out, err = run("train", "ifc_test", "--dataset", videos / "annotations" / "train.json",
                         "--images", videos / "JPEGImages", "--val-dataset", videos / "annotations" / "val.json",
                         "--val-images", videos / "JPEGImages", "--input-size", "64", "--iters", "3",
                         "--batch-size", "1", "--threads", "1", "--freeze", "backbone", "--val-interval", "2",
                         "-o", ckpt)
    assert code == 0, err
    assert "val VIS AP" in out and ckpt.exists()
    from edgeseg.export.manifest import manifest_for_artifact

    rec = [h for h in manifest_for_artifact(ckpt).history if h["step"] == "train"][-1]
    assert rec["videos"] == 3 and rec["val"]["interval"] == 2 and rec["val"]["videos"] == 2
    assert rec["val"]["AP"] is None or 0.0 <= rec["val"]["AP"] <= 100.0
    # the frozen backbone kept its initial weights (same seed, same init)
    from edgeseg.models import create_model
    from edgeseg.models.checkpoints import load_weights

    torch.manual_seed(0)
    fresh = create_model("ifc_test", num_classes=4, input_size=(64, 64))
    trained = create_model("ifc_test", num_classes=4, input_size=(64, 64))
    load_weights(trained, ckpt)
    for k, v in fresh.backbone.state_dict().items():
        torch.testing.assert_close(trained.backbone.state_dict()[k], v)
    assert not torch.allclose(trained.decoder.query_embed.weight, fresh.decoder.query_embed.weight)


def test_freeze_names_components():
    from edgeseg.models import create_model
    from edgeseg.train.trainer import _apply_freeze

    model = create_model("ifc_test")
    with pytest.raises(EdgesegError, match="not a component"):
        _apply_freeze(model, ("backbon",))
    with pytest.raises(EdgesegError, match="nothing would train"):
        _apply_freeze(model, ("backbone", "encoder", "decoder", "mask_head"))
    assert _apply_freeze(model, ("backbone",)) == ["backbone"]
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
