"""Checkpoints shipped with the package: ``edgeseg/zoo/<model>.safetensors``.

``--weights zoo`` (train, export) means "the committed checkpoint of this model", found
here by model name, so it works the same from a source checkout and from an installed
wheel (pyproject ships ``edgeseg/zoo/*.safetensors`` as package data). Each file embeds
its manifest, and ``<model>.json`` beside it says how it was made.
"""

from __future__ import annotations

from pathlib import Path

from edgeseg.errors import EdgesegError

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
ZOO_KEYWORD = "zoo"


def zoo_checkpoints() -> dict[str, Path]:
    """Model name -> shipped checkpoint."""
    if not ZOO_DIR.is_dir():
        return {}
    # A resumable training state written beside a checkpoint is not a checkpoint.
    return {p.stem: p for p in sorted(ZOO_DIR.glob("*.safetensors")) if not p.stem.endswith(".state")}


def zoo_checkpoint(model_name: str) -> Path:
    """The shipped checkpoint of ``model_name``; a clear error naming those that exist."""
    found = zoo_checkpoints()
    if model_name not in found:
        have = ", ".join(found) or "none"
        raise EdgesegError(f"no shipped checkpoint for {model_name} (the package has: {have})",
                           "pass a checkpoint path to --weights, or use a model that has one")
    return found[model_name]


def resolve_weights(weights: str | Path | None, model_name: str) -> Path | None:
    """``"zoo"`` -> the shipped checkpoint of ``model_name``; a path stays a path."""
    if weights is None:
        return None
    if str(weights) == ZOO_KEYWORD:
        return zoo_checkpoint(model_name)
    return Path(weights)


def checkpoint_model_cfg(weights: str | Path | None, model_name: str) -> dict:
    """The configuration embedded in an edgeseg checkpoint of ``model_name`` ({} otherwise).

    Lets ``edgeseg export MODEL --weights CKPT`` rebuild the trained configuration (class
    count, input size) without the user repeating it; flags given explicitly still win.
    A checkpoint of another model contributes nothing (``load_weights`` then explains
    the mismatch).
    """
    if weights is None or Path(weights).suffix != ".safetensors" or not Path(weights).is_file():
        return {}
    from edgeseg.export.manifest import manifest_for_artifact

    try:
        manifest = manifest_for_artifact(weights)
    except EdgesegError:
        return {}  # a plain safetensors file without an edgeseg manifest
    if manifest.model != model_name:
        return {}
    cfg = dict(manifest.model_cfg or {})
    if isinstance(cfg.get("input_size"), list):  # JSON turned the tuple into a list
        cfg["input_size"] = tuple(cfg["input_size"])
    return cfg
