"""The shipped IFC checkpoint: small, loadable by name, and as accurate as its record says.

The VIS AP test re-measures the figure written in ``edgeseg/zoo/ifc_topformer_synth.json``
on the same synthetic val videos (regenerated from their seed: the val videos do not
depend on the size of the train split), tracked near-online by the family's video
strategy on the PyTorch module at the record's test stride, as training's validation and
``scripts/zoo_record_video.py`` measure it.
"""

from __future__ import annotations

import shlex

import pytest

from edgeseg.models.pretrained import zoo_checkpoints
from tests.zoo_checks import load_record

NAME = "ifc_topformer_synth"


@pytest.fixture(scope="module")
def record() -> dict:
    return load_record(NAME)


def test_the_checkpoint_is_shipped_small_and_found_by_name(record):
    path = zoo_checkpoints()[NAME]
    assert path.stat().st_size < 5 * 1024 * 1024
    assert record["bytes"] == path.stat().st_size
    from edgeseg.utils.hashing import sha256_file

    assert record["sha256"] == sha256_file(path)


def test_it_loads_strictly_via_the_zoo_keyword_at_any_clip_length():
    from edgeseg.cli.export import build_model

    model, info = build_model(NAME, None, None, "zoo")
    assert model.num_classes == 4 and model.input_spec.shape == [5, 3, 256, 256]
    assert info["path"].endswith(f"{NAME}.safetensors")
    model3, _ = build_model(NAME, None, None, "zoo", clip_length=3)  # the weights do not depend on T
    assert model3.input_spec.frames == 3


def test_the_record_holds_the_reproduce_commands_and_the_embedded_training_record(record):
    from edgeseg.export.manifest import manifest_for_artifact

    commands = [shlex.split(c) for c in record["reproduce"]]
    synth = commands[0]
    assert synth[:3] == ["edgeseg", "data", "synth"] and synth[synth.index("--seed") + 1] == "0"
    assert synth[synth.index("--val-videos") + 1] == str(record["data"]["val_videos"])
    trains = [c for c in commands if c[:3] == ["edgeseg", "train", NAME]]
    assert trains
    # every later phase starts from what the one before wrote
    for before, after in zip(trains, trains[1:]):
        assert after[after.index("--weights") + 1] == before[before.index("-o") + 1]
    # the recipe's last phase is the run that wrote the shipped file: its embedded config says so
    m = manifest_for_artifact(zoo_checkpoints()[NAME])
    rec = [h for h in m.history if h["step"] == "train"][-1]
    cfg = rec["config"]
    last = trains[-1]

    def arg(flag):
        return last[last.index(flag) + 1]

    assert rec["seed"] == int(arg("--seed")) and rec["iterations"] == int(arg("--iters"))
    assert rec["init"] == arg("--weights") and cfg["output"] == arg("-o")
    assert cfg["lr"] == pytest.approx(float(arg("--lr"))) and cfg["batch_size"] == int(arg("--batch-size"))
    assert cfg["warmup_iters"] == int(arg("--warmup"))
    assert cfg["freeze"] == ([arg("--freeze")] if "--freeze" in last else [])
    # the record's last command ships what that phase wrote
    assert commands[-1][:2] == ["python", "scripts/zoo_record_video.py"] and commands[-1][2] == arg("-o")
    # the training-time figure the record keeps is the one embedded in the checkpoint
    assert record["training"]["val_during_training"]["AP"] == pytest.approx(rec["val"]["AP"])


@pytest.mark.slow  # 240 frames through the clip model: ~24 s on an idle core, ~85 s at load average 5 here
def test_its_vis_ap_is_what_the_record_says(record, tmp_path):
    import torch

    from edgeseg.data.synthetic import SynthConfig, generate
    from edgeseg.data.ytvis import YtvisDataset
    from edgeseg.models import create_model
    from edgeseg.models.checkpoints import load_weights
    from edgeseg.train.trainer import evaluate_video_model

    data = record["data"]
    generate(tmp_path / "vis", SynthConfig(train=0, val=0, videos=0, val_videos=data["val_videos"],
                                           frames=data["frames"], seed=data["seed"]))
    ytvis = tmp_path / "vis" / "ytvis"
    dataset = YtvisDataset(ytvis / "annotations" / "val.json", ytvis / "JPEGImages")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model(NAME)
    load_weights(model, zoo_checkpoints()[NAME])
    stride = record["val"]["test_stride"]
    got = evaluate_video_model(model, dataset, interval=stride)
    want = record["val"]["torch"][f"S={stride}"]
    assert got["videos"] == data["val_videos"]
    for k in ("AP", "AP50", "AP75"):
        assert got[k] == pytest.approx(want[k], abs=0.5), k
    assert got["AP"] >= 25.0  # the bar (MobileInst's kernel reuse: 26-30 on these videos)
