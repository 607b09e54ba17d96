"""BlitzMask's shipped checkpoint: small, loadable by name, and as accurate as its record says.

The AP test re-measures the figure written in ``edgeseg/zoo/blitzmask_mobilenetv2_synth.json``
on the same 200-image synthetic val split (regenerated from its seed), through the same
runtime as ``edgeseg eval``.
"""

from __future__ import annotations

import shlex

import pytest

from edgeseg.models.pretrained import zoo_checkpoints
from tests.zoo_checks import load_record, remeasure_val_ap

NAME = "blitzmask_mobilenetv2_synth"


@pytest.fixture(scope="module")
def record() -> dict:
    return load_record(NAME)


def test_the_checkpoint_is_shipped_small_and_loads_by_name(record):
    from edgeseg.cli.export import build_model
    from edgeseg.utils.hashing import sha256_file

    path = zoo_checkpoints()[NAME]
    assert path.stat().st_size < 5 * 1024 * 1024
    assert record["bytes"] == path.stat().st_size and record["sha256"] == sha256_file(path)
    model, info = build_model(NAME, None, None, "zoo")
    assert model.num_classes == 4 and (model.input_spec.height, model.input_spec.width) == (256, 256)
    assert info["path"].endswith(f"{NAME}.safetensors")


def test_the_record_holds_the_reproduce_commands(record):
    from edgeseg.export.manifest import manifest_for_artifact

    synth, train, evaluate = (shlex.split(c) for c in record["reproduce"])
    assert synth[:3] == ["edgeseg", "data", "synth"] and "--seed" in synth
    assert train[:3] == ["edgeseg", "train", NAME] and "--weights" not in train  # from scratch, one phase
    assert evaluate[:3] == ["edgeseg", "eval", train[train.index("-o") + 1]]
    rec = [h for h in manifest_for_artifact(zoo_checkpoints()[NAME]).history if h["step"] == "train"][-1]
    assert rec["iterations"] == int(train[train.index("--iters") + 1])
    assert rec["seed"] == int(train[train.index("--seed") + 1])
    assert rec["batch_size"] == int(train[train.index("--batch-size") + 1]) and rec["init"] is None
    # Training measured its float32 weights in memory, the record the stored float16 ones.
    assert rec["val"]["AP"] == pytest.approx(record["val"]["torch"]["AP"], abs=0.5)


@pytest.mark.slow
def test_its_val_ap_is_what_the_record_says(record, tmp_path):
    remeasure_val_ap(NAME, record, tmp_path)  # >= 40, the bar
