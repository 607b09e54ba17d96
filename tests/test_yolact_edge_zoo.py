"""YolactEdge's shipped checkpoint: small, loadable by name, made the way its record says,
and as accurate as its record says.

The checkpoint is the paper's two stages: the image model (two phases on synthetic shapes),
then FeatFlowNet alone on synthetic video frame pairs with everything else frozen. The
image components are those of the image stage, so the mask AP re-measured here on the
200-image synthetic val split (regenerated from its seed) is the image stage's.
"""

from __future__ import annotations

import shlex

import pytest

from edgeseg.models.pretrained import zoo_checkpoints
from tests.zoo_checks import arg, check_shipped_float16, load_record, remeasure_val_ap

NAME = "yolact_edge_mobilenetv2_synth"
FLOW_TRAIN = "edgeseg.models.yolact_edge.flow_train"


@pytest.fixture(scope="module")
def record() -> dict:
    return load_record(NAME)


def test_the_checkpoint_is_shipped_small_in_float16_and_loads_by_name(record):
    model = check_shipped_float16(NAME, record)  # strict load of every component, flow_net included
    assert model.num_classes == 4 and (model.input_spec.height, model.input_spec.width) == (256, 256)


def test_the_record_chains_the_training_stages_it_reproduces(record):
    from edgeseg.export.manifest import manifest_for_artifact

    cmds = [shlex.split(c) for c in record["reproduce"]]
    data = [c for c in cmds if c[:3] == ["edgeseg", "data", "synth"]]
    train = [c for c in cmds if c[:2] == ["edgeseg", "train"] or c[:3] == ["python", "-m", FLOW_TRAIN]]
    assert len(data) + len(train) + 1 == len(cmds) and data[0][data[0].index("--seed") + 1] == "0"
    assert all(c[c.index(NAME) - 1] in ("train", FLOW_TRAIN) for c in train)
    assert "--weights" not in train[0]  # the first phase starts from scratch
    # Each stage starts from what the one before wrote; the eval measures the last one.
    for before, after in zip(train, train[1:]):
        assert arg(after, "--weights") == arg(before, "-o")
    assert cmds[-1][:3] == ["edgeseg", "eval", arg(train[-1], "-o")]

    rec = [h for h in manifest_for_artifact(zoo_checkpoints()[NAME]).history if h["step"] == "train"][-1]
    last = train[-1]
    assert rec["seed"] == int(arg(last, "--seed"))
    # A checkpoint written before its run's last iteration says so, with the iteration.
    stopped = record.get("stopped_at")
    assert rec["iterations"] == (stopped["iterations"] if stopped else int(arg(last, "--iters")))
    if stopped:
        assert stopped["of"] == int(arg(last, "--iters")) > stopped["iterations"]
    if FLOW_TRAIN in last:  # the paper's second stage: FeatFlowNet alone, on the videos
        vis = [c for c in data if "--videos" in c and c[c.index("--videos") + 1] != "0"]
        assert vis and arg(last, "--dataset").startswith(arg(vis[0], "-o"))
        assert rec["stage"] == "flow_net" and rec["loss_last"] is not None
        image = rec["image_training"]
    else:
        image = rec
    assert record["training"]["iterations"] == image["iterations"]
    # Training measured its float32 weights in memory; the record measures them as stored
    # (float16): the same figure up to the rounding of the weights.
    assert image["val"]["AP"] == pytest.approx(record["val"]["torch"]["AP"], abs=0.5)
    assert record["val"]["onnxruntime"]["AP"] == pytest.approx(record["val"]["torch"]["AP"], abs=0.5)


@pytest.mark.slow  # 200 images through PyTorch: ~20 s on two idle cores
def test_its_val_ap_is_what_the_record_says(record, tmp_path):
    remeasure_val_ap(NAME, record, tmp_path)  # >= 40, the bar
