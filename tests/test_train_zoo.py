"""The shipped checkpoint: small, loadable by name, and as accurate as its record says.

The AP test re-measures the figure written in ``edgeseg/zoo/<model>.json`` on the same
synthetic val split (regenerated from its seed: the val images do not depend on the
size of the train split), through the same runtime as ``edgeseg eval``.
"""

from __future__ import annotations

import shlex

import pytest

from edgeseg.models.pretrained import zoo_checkpoints
from tests.zoo_checks import load_record, remeasure_val_ap

NAME = "mobileinst_topformer_synth"


@pytest.fixture(scope="module")
def record() -> dict:
    return load_record(NAME)


def test_the_checkpoint_is_shipped_small_and_found_by_name(record):
    path = zoo_checkpoints()[NAME]
    assert path.stat().st_size < 5 * 1024 * 1024  # the repository warns above 5 MB
    assert record["bytes"] == path.stat().st_size
    from edgeseg.utils.hashing import sha256_file

    assert record["sha256"] == sha256_file(path)


def test_it_loads_strictly_into_the_registered_variant_and_via_the_zoo_keyword():
    from edgeseg.cli.export import build_model

    model, info = build_model(NAME, None, None, "zoo")
    assert model.num_classes == 4 and (model.input_spec.height, model.input_spec.width) == (256, 256)
    assert info["path"].endswith(f"{NAME}.safetensors")


def test_the_record_holds_the_reproduce_commands_and_the_embedded_training_record(record):
    from edgeseg.export.manifest import manifest_for_artifact

    synth, phase1, phase2 = (shlex.split(c) for c in record["reproduce"][:3])
    assert synth[:3] == ["edgeseg", "data", "synth"] and "--seed" in synth
    assert phase1[:3] == phase2[:3] == ["edgeseg", "train", NAME]
    # Phase 2 fine-tunes what phase 1 wrote.
    assert phase2[phase2.index("--weights") + 1] == phase1[phase1.index("-o") + 1]
    m = manifest_for_artifact(zoo_checkpoints()[NAME])
    rec = [h for h in m.history if h["step"] == "train"][-1]
    assert rec["iterations"] == int(phase2[phase2.index("--iters") + 1])
    assert rec["seed"] == int(phase2[phase2.index("--seed") + 1])
    assert rec["init"] is not None
    # Training measured its float32 weights in memory; the record measures them as stored
    # (float16): the same figure up to the rounding of the weights.
    assert rec["val"]["AP"] == pytest.approx(record["val"]["torch"]["AP"], abs=0.5)


def test_its_val_ap_is_what_the_record_says(record, tmp_path):
    remeasure_val_ap(NAME, record, tmp_path)  # >= 40, the bar
