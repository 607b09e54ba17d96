"""The training loop on tiny synthetic data: it learns, it resumes, it fine-tunes, it refuses bad input.

mobileinst_test at 64x64 on 2-4 images: every test here runs in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgeseg.data.synthetic import SynthConfig, generate
from edgeseg.errors import EdgesegError
from edgeseg.models import create_model
from edgeseg.models.checkpoints import read_state_dict, save_weights
from edgeseg.train.data import AugmentConfig
from edgeseg.train.trainer import TrainConfig, train

NO_AUG = AugmentConfig(flip=0.0, scale_min=1.0, scale_max=1.0)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """4 classes, 2 train + 2 val images of 64x64."""
    out = tmp_path_factory.mktemp("train") / "shapes"
    generate(out, SynthConfig(train=2, val=2, videos=0, val_videos=0, height=64, width=64, seed=3, max_objects=3))
    return out / "coco"


def _cfg(shapes: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="mobileinst_test", train_json=str(shapes / "annotations/train.json"),
                train_images=str(shapes / "train"), output=str(out), input_size=(64, 64), iters=2,
                batch_size=2, lr=5e-3, threads=1, warmup_iters=0, save_every=0, augment=NO_AUG)
    base.update(kw)
    return TrainConfig(**base)


def test_overfitting_two_images_reduces_the_loss_substantially(shapes, tmp_path):
    r = train(_cfg(shapes, tmp_path / "m.safetensors", iters=30, warmup_iters=3))
    first = sum(r.losses[:3]) / 3
    last = sum(r.losses[-5:]) / 5
    assert len(r.losses) == 30
    assert last < 0.5 * first, (first, last)


def test_same_seed_same_run(shapes, tmp_path):
    a = train(_cfg(shapes, tmp_path / "a.safetensors", iters=3, augment=AugmentConfig()))
    b = train(_cfg(shapes, tmp_path / "b.safetensors", iters=3, augment=AugmentConfig()))
    assert a.losses == b.losses
    wa, _ = read_state_dict(tmp_path / "a.safetensors")
    wb, _ = read_state_dict(tmp_path / "b.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_continues_exactly_where_the_run_stopped(shapes, tmp_path):
    # Constant LR (no warm-up, floor = peak) so a 2-iteration run is a prefix of a 4-iteration one.
    const = dict(min_lr_ratio=1.0, augment=AugmentConfig())
    full = train(_cfg(shapes, tmp_path / "full.safetensors", iters=4, **const))
    train(_cfg(shapes, tmp_path / "part.safetensors", iters=2, **const))
    resumed = train(_cfg(shapes, tmp_path / "part.safetensors", iters=4, resume=True, **const))
    assert resumed.started_at == 2 and len(resumed.losses) == 2
    assert resumed.losses == pytest.approx(full.losses[2:], rel=1e-5)
    wf, _ = read_state_dict(tmp_path / "full.safetensors")
    wr, _ = read_state_dict(tmp_path / "part.safetensors")
    for k in wf:
        assert torch.allclose(wf[k].float(), wr[k].float(), atol=1e-5), k


def test_ema_saves_the_running_average_and_resumes_it(shapes, tmp_path):
    """--ema: the checkpoint holds the average of the weights along the run (not the last
    raw weights), and a resumed run continues the same average."""
    from safetensors.torch import load_file

    from edgeseg.train.state import state_path

    const = dict(min_lr_ratio=1.0, augment=AugmentConfig(), ema=0.5)
    train(_cfg(shapes, tmp_path / "full.safetensors", iters=4, **const))
    saved, _ = read_state_dict(tmp_path / "full.safetensors")
    state = load_file(str(state_path(tmp_path / "full.safetensors")))
    raw = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    avg = {k[len("ema."):]: v for k, v in state.items() if k.startswith("ema.")}
    floats = [k for k in saved if saved[k].is_floating_point() and k in raw]
    assert floats and all(torch.equal(saved[k], avg[k]) for k in floats)
    assert any(not torch.allclose(saved[k], raw[k]) for k in floats)  # the average, not the last step
    train(_cfg(shapes, tmp_path / "part.safetensors", iters=2, **const))
    train(_cfg(shapes, tmp_path / "part.safetensors", iters=4, resume=True, **const))
    part, _ = read_state_dict(tmp_path / "part.safetensors")
    for k in floats:
        assert torch.allclose(saved[k], part[k], atol=1e-5), k


def test_weight_average_ramps_up_then_decays():
    from edgeseg.train.trainer import WeightAverage

    live = torch.nn.BatchNorm1d(2)
    avg = WeightAverage(live, decay=0.9)
    with torch.no_grad():
        live.weight.fill_(3.0)
        live.num_batches_tracked.fill_(7)
    avg.update(live, 0)  # d = min(0.9, 1/10): mostly the new weights
    assert torch.allclose(avg.model.weight, torch.full((2,), 0.1 * 1.0 + 0.9 * 3.0))
    assert int(avg.model.num_batches_tracked) == 7
    avg.update(live, 1000)  # d = 0.9
    assert torch.allclose(avg.model.weight, 0.9 * torch.full((2,), 2.8) + 0.1 * 3.0)


def test_resume_without_a_state_says_how_to_start(shapes, tmp_path):
    with pytest.raises(EdgesegError, match="no training state"):
        train(_cfg(shapes, tmp_path / "new.safetensors", resume=True))


def test_fine_tuning_from_another_class_count_reinitialises_the_class_head(shapes, tmp_path):
    torch.manual_seed(7)
    src = create_model("mobileinst_test", num_classes=3, input_size=(64, 64))
    init = save_weights(src, tmp_path / "three_classes.safetensors")
    messages: list[str] = []
    # lr ~ 0: what is in the output is (up to BatchNorm statistics) what was loaded.
    r = train(_cfg(shapes, tmp_path / "ft.safetensors", iters=1, lr=1e-12, weights=str(init)),
              log=messages.append)
    assert any("class head re-initialised" in m and "3 classes" in m and "4" in m for m in messages), messages
    assert r.model_cfg["num_classes"] == 4
    out, _ = read_state_dict(tmp_path / "ft.safetensors")
    assert out["instance_decoder.cls_head.weight"].shape[0] == 4
    sd = src.state_dict()
    for k in ("backbone.tpm.stem.0.c.weight", "instance_decoder.kernel_head.weight",
              "instance_decoder.query_feat"):
        assert torch.allclose(out[k], sd[k], atol=1e-6), k


def test_val_ap_is_measured_and_recorded_in_the_checkpoint(shapes, tmp_path):
    from edgeseg.export.manifest import manifest_for_artifact

    r = train(_cfg(shapes, tmp_path / "v.safetensors", iters=2, val_json=str(shapes / "annotations/val.json"),
                   val_images=str(shapes / "val")))
    assert r.val is not None and 0.0 <= r.val["AP"] <= 100.0 and r.val["images"] == 2
    m = manifest_for_artifact(tmp_path / "v.safetensors")
    assert m.model == "mobileinst_test" and m.model_cfg["num_classes"] == 4 and m.model_cfg["input_size"] == [64, 64]
    rec = m.history[-1]
    assert rec["step"] == "train" and rec["iterations"] == 2 and rec["val"]["AP"] == r.val["AP"]
    # The training-only semantic head lives in the resumable state, never in the checkpoint.
    weights, _ = read_state_dict(tmp_path / "v.safetensors")
    state, _ = read_state_dict(tmp_path / "v.state.safetensors")
    assert set(weights) == set(create_model("mobileinst_test", num_classes=4).state_dict())
    assert any(k.startswith("objective.semantic.") for k in state)


def test_a_periodic_checkpoint_records_only_its_own_val_run(shapes, tmp_path, monkeypatch):
    """A checkpoint written between val runs must not carry the earlier run's AP as its own."""
    import edgeseg.train.state as state
    from edgeseg.export.manifest import manifest_for_artifact

    seen: list[tuple[int, object]] = []
    real = state.save_checkpoint

    def spy(model, path, record, **kw):
        seen.append((record["iterations"], record["val"] and record["val"]["AP"]))
        return real(model, path, record, **kw)

    monkeypatch.setattr(state, "save_checkpoint", spy)
    train(_cfg(shapes, tmp_path / "p.safetensors", iters=4, save_every=1, val_every=2,
               val_json=str(shapes / "annotations/val.json"), val_images=str(shapes / "val")))
    assert [i for i, _ in seen] == [1, 2, 3, 4]
    assert seen[0][1] is None and seen[1][1] is not None and seen[2][1] is None and seen[3][1] is not None
    assert manifest_for_artifact(tmp_path / "p.safetensors").history[-1]["val"] is not None


# ------------------------------------------------------------------------------- errors
def test_a_dataset_without_annotations_is_refused(shapes, tmp_path):
    data = json.loads((shapes / "annotations/train.json").read_text())
    data["annotations"] = []
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(data))
    with pytest.raises(EdgesegError, match="no \\(non-crowd\\) annotations"):
        train(_cfg(shapes, tmp_path / "x.safetensors", train_json=str(empty)))
    assert not (tmp_path / "x.safetensors").exists()


def test_missing_images_are_refused_before_training(shapes, tmp_path):
    import shutil

    partial = tmp_path / "images"
    shutil.copytree(shapes / "train", partial)
    sorted(partial.iterdir())[0].unlink()
    with pytest.raises(EdgesegError, match="1 of 2 images .* are not in"):
        train(_cfg(shapes, tmp_path / "x.safetensors", train_images=str(partial)))
    with pytest.raises(EdgesegError, match="does not exist"):
        train(_cfg(shapes, tmp_path / "x.safetensors", train_images=str(tmp_path / "nowhere")))
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("change, message", [
    ({"input_size": (100, 100)}, "not a multiple of 64"),
    ({"batch_size": 1}, "at least 2"),
    ({"iters": 2, "epochs": 1.0}, "both --epochs and --iters"),
    ({"lr": 0.0}, "positive"),
    ({"ema": 1.0}, "--ema must be in"),
    ({"output": "model.pth"}, ".safetensors"),
    ({"model": "no_such_model"}, "unknown model"),
])
def test_bad_settings_are_one_clear_error(shapes, tmp_path, change, message):
    kw = {"output": str(tmp_path / "x.safetensors"), **change}
    out = kw.pop("output")
    with pytest.raises(EdgesegError, match=message) as e:
        train(_cfg(shapes, Path(out), **kw))
    assert e.value.fix
    assert not list(tmp_path.iterdir())
