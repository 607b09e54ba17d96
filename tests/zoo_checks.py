"""Checks every image model's shipped checkpoint test makes: the file is what its record
says (small, float16, loadable by name) and its val AP re-measures to the record's figure."""

from __future__ import annotations

import pytest


def check_shipped_float16(name: str, record: dict):
    """Size under the repository's 5 MB warning, bytes and sha256 as recorded, every float
    tensor float16, and a strict load by name; returns the model."""
    from safetensors import safe_open

    from edgeseg.cli.export import build_model
    from edgeseg.models.pretrained import zoo_checkpoints
    from edgeseg.utils.hashing import sha256_file

    path = zoo_checkpoints()[name]
    assert path.stat().st_size < 5 * 1024 * 1024
    assert record["bytes"] == path.stat().st_size and record["sha256"] == sha256_file(path)
    with safe_open(str(path), framework="pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys() if f.get_tensor(k).is_floating_point()}
    assert dtypes == {"torch.float16"}
    model, info = build_model(name, None, None, "zoo")  # strict load of every component
    assert info["path"].endswith(f"{name}.safetensors")
    return model


def remeasure_val_ap(name: str, record: dict, tmp_path, bar: float = 40.0) -> None:
    """Regenerate the val split from the record's seed, evaluate the shipped file the way
    `edgeseg eval` does, and compare with the record (and the issue's bar)."""
    from edgeseg.data.synthetic import SynthConfig, generate
    from edgeseg.eval.coco import evaluate_artifact
    from edgeseg.models.pretrained import zoo_checkpoints

    generate(tmp_path / "shapes", SynthConfig(train=0, val=record["data"]["val"], videos=0, val_videos=0,
                                              seed=record["data"]["seed"]))
    coco = tmp_path / "shapes" / "coco"
    result = evaluate_artifact(zoo_checkpoints()[name], coco / "annotations" / "val.json", coco / "val",
                               threads=1)
    assert result.images == record["data"]["val"]
    for k in ("AP", "AP50", "AP75"):
        assert result.metrics[k] == pytest.approx(record["val"]["torch"][k], abs=0.5), k
    assert result.metrics["AP"] >= bar


def load_record(name: str) -> dict:
    """The JSON record written beside a shipped checkpoint (scripts/zoo_record.py)."""
    import json

    from edgeseg.models.pretrained import ZOO_DIR

    return json.loads((ZOO_DIR / f"{name}.json").read_text(encoding="utf-8"))


def arg(cmd: list[str], flag: str) -> str:
    """The value after ``flag`` in a recorded command."""
    return cmd[cmd.index(flag) + 1]
