"""Every shipped checkpoint: small, loadable by name, and as accurate as its record says.

One set of tests per record ``edgeseg/zoo/<model>.json`` (a family's checkpoint is covered
as soon as ``scripts/zoo_record.py`` ships it). The AP test re-measures the figure written
in the record on the same synthetic val split (regenerated from its seed: the val images do
not depend on the size of the train split), through the same runtime as ``edgeseg eval``.
"""

from __future__ import annotations

import json
import shlex

import pytest

from edgeseg.models.pretrained import ZOO_DIR, zoo_checkpoints

SHIPPED = sorted(p.stem for p in ZOO_DIR.glob("*.json"))


def _record(name: str) -> dict:
    return json.loads((ZOO_DIR / f"{name}.json").read_text(encoding="utf-8"))


def test_the_zoo_ships_the_mobileinst_checkpoint_with_its_record():
    # Guards the parametrisation below against an empty or misplaced zoo folder.
    assert "mobileinst_topformer_synth" in SHIPPED
    assert set(SHIPPED) <= set(zoo_checkpoints())


@pytest.mark.parametrize("name", SHIPPED)
def test_the_checkpoint_is_shipped_small_and_found_by_name(name):
    from edgeseg.utils.hashing import sha256_file

    record = _record(name)
    path = zoo_checkpoints()[name]
    assert path.stat().st_size < 5 * 1024 * 1024  # the repository warns above 5 MB
    assert record["bytes"] == path.stat().st_size
    assert record["sha256"] == sha256_file(path)


@pytest.mark.parametrize("name", SHIPPED)
def test_it_loads_strictly_into_the_registered_variant_and_via_the_zoo_keyword(name):
    from edgeseg.cli.export import build_model

    size = _record(name)["data"]["size"]
    model, info = build_model(name, None, None, "zoo")
    assert model.num_classes == 4 and (model.input_spec.height, model.input_spec.width) == (size, size)
    assert info["path"].endswith(f"{name}.safetensors")


def _produced(command: list[str]) -> str | None:
    """The file a recipe command writes: a training's ``-o``, or a copy's destination."""
    if command[:2] == ["edgeseg", "train"]:
        return command[command.index("-o") + 1]
    if command[0] == "cp":
        return command[-1]
    return None


@pytest.mark.parametrize("name", SHIPPED)
def test_the_record_holds_the_reproduce_commands_and_the_embedded_training_record(name):
    from edgeseg.export.manifest import manifest_for_artifact

    record = _record(name)
    commands = [shlex.split(c) for c in record["reproduce"]]
    assert commands[0][:3] == ["edgeseg", "data", "synth"] and "--seed" in commands[0]
    trains = [c for c in commands if c[:2] == ["edgeseg", "train"]]
    assert len(trains) >= 2 and all(c[2] == name for c in trains)
    last = trains[-1]
    # The last phase fine-tunes what an earlier command wrote.
    init = last[last.index("--weights") + 1]
    before = commands[:commands.index(last)]
    assert init in {_produced(c) for c in before}
    m = manifest_for_artifact(zoo_checkpoints()[name])
    rec = [h for h in m.history if h["step"] == "train"][-1]
    assert rec["iterations"] == int(last[last.index("--iters") + 1])
    assert rec["seed"] == int(last[last.index("--seed") + 1])
    assert rec["init"] is not None
    # Training measured its float32 weights in memory; the record measures them as stored
    # (float16): the same figure up to the rounding of the weights.
    assert rec["val"]["AP"] == pytest.approx(record["val"]["torch"]["AP"], abs=0.5)


@pytest.mark.parametrize("name", SHIPPED)
def test_its_val_ap_is_what_the_record_says(name, tmp_path):
    from edgeseg.data.synthetic import SynthConfig, generate
    from edgeseg.eval.coco import evaluate_artifact

    record = _record(name)
    seed = record["data"]["seed"]
    generate(tmp_path / "shapes", SynthConfig(train=0, val=record["data"]["val"], videos=0, val_videos=0,
                                              seed=seed))
    coco = tmp_path / "shapes" / "coco"
    result = evaluate_artifact(zoo_checkpoints()[name], coco / "annotations" / "val.json", coco / "val",
                               threads=1)
    assert result.images == record["data"]["val"]
    for k in ("AP", "AP50", "AP75"):
        assert result.metrics[k] == pytest.approx(record["val"]["torch"][k], abs=0.5), k
    assert result.metrics["AP"] >= 40.0
