"""FastInst's shipped checkpoint: small, loadable by name, made the way its record says,
and as accurate as its record says.

Four training runs on the synthetic shapes (128 crops, whole images, two more cosine
cycles); a run stopped early hands its saved checkpoint on through a ``cp`` in the record.
The mask AP is re-measured on the 200-image synthetic val split, regenerated from its seed.
"""

from __future__ import annotations

import shlex

import pytest

from edgeseg.models.pretrained import zoo_checkpoints
from tests.zoo_checks import arg, check_shipped_float16, load_record, remeasure_val_ap

NAME = "fastinst_topformer_synth"


@pytest.fixture(scope="module")
def record() -> dict:
    return load_record(NAME)


def test_the_checkpoint_is_shipped_small_in_float16_and_loads_by_name(record):
    model = check_shipped_float16(NAME, record)
    assert model.num_classes == 4 and (model.input_spec.height, model.input_spec.width) == (256, 256)


def test_the_record_chains_the_training_runs_it_reproduces(record):
    from edgeseg.export.manifest import manifest_for_artifact

    cmds = [shlex.split(c) for c in record["reproduce"]]
    assert cmds[0][:3] == ["edgeseg", "data", "synth"] and arg(cmds[0], "--seed") == "0"
    # Each run starts from what the one before wrote (directly or through a copy); the
    # eval measures the last one's output.
    produced: set[str] = set()
    train = []
    for c in cmds[1:-1]:
        if c[0] == "cp":
            assert c[1] in produced, c
            produced.add(c[2])
            continue
        assert c[:3] == ["edgeseg", "train", NAME], c
        if train:
            assert arg(c, "--weights") in produced
        else:
            assert "--weights" not in c  # the first run starts from scratch
        produced.add(arg(c, "-o"))
        train.append(c)
    assert len(train) == 4
    assert cmds[-1][:3] == ["edgeseg", "eval", arg(train[-1], "-o")]

    rec = [h for h in manifest_for_artifact(zoo_checkpoints()[NAME]).history if h["step"] == "train"][-1]
    last = train[-1]
    assert rec["seed"] == int(arg(last, "--seed")) and rec["batch_size"] == int(arg(last, "--batch-size"))
    stopped = record.get("stopped_at")
    assert rec["iterations"] == (stopped["iterations"] if stopped else int(arg(last, "--iters")))
    # Training measured its float32 weights in memory; the record measures them as stored
    # (float16): the same figure up to the rounding of the weights.
    assert rec["val"]["AP"] == pytest.approx(record["val"]["torch"]["AP"], abs=0.5)
    assert record["val"]["onnxruntime"]["AP"] == pytest.approx(record["val"]["torch"]["AP"], abs=0.5)


@pytest.mark.slow  # 200 images through PyTorch
def test_its_val_ap_is_what_the_record_says(record, tmp_path):
    remeasure_val_ap(NAME, record, tmp_path)  # >= 40, the bar
