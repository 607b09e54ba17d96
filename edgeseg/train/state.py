"""What training writes: the checkpoint users keep, and the state a run resumes from.

* The **checkpoint** (``OUT.safetensors``) is the model's weights with the model-level
  manifest embedded (``save_weights``), plus a ``train`` entry in the manifest's
  history (dataset, iterations, seed, val AP...). ``edgeseg eval OUT.safetensors`` and
  ``edgeseg export MODEL --weights OUT.safetensors`` need nothing else.
* The **training state** (``OUT.state.safetensors``, beside it) adds the AdamW moments
  and the iteration reached, in safetensors too (no pickle), so ``--resume`` continues
  the run where it stopped; batches and augmentation are functions of the iteration, so
  the continued run matches the uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from edgeseg.errors import EdgesegError
from edgeseg.utils.atomic import atomic_path

STATE_KEY = "edgeseg.train_state"


def state_path(checkpoint: str | Path) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.stem + ".state" + p.suffix)


def save_checkpoint(model, path: str | Path, record: dict[str, Any], dtype: str | None = None) -> Path:
    """Weights + embedded manifest whose history ends with the training ``record``."""
    from edgeseg.export.manifest import Manifest, tool_versions
    from edgeseg.models.checkpoints import save_weights

    manifest = Manifest.from_model(model)
    manifest.record("train", **record, versions=tool_versions("torch"))
    return save_weights(model, path, manifest=manifest, dtype=dtype)


def save_state(path: str | Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
               info: dict[str, Any]) -> Path:
    """Everything ``--resume`` needs, atomically: the weights of ``modules`` (the model and
    any training-only heads, by name), optimizer moments, progress."""
    from safetensors.torch import save_file

    tensors = {f"{name}.{k}": v.detach().cpu().contiguous()
               for name, module in modules.items() for k, v in module.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, value in st.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{idx}.{key}"] = t.detach().cpu().contiguous()
    meta = {STATE_KEY: json.dumps({**info, "param_groups": opt["param_groups"]}, default=str)}
    p = Path(path)
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return p


def load_state(path: str | Path, modules: dict[str, torch.nn.Module],
               optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore weights and optimizer from :func:`save_state`; returns the saved ``info``."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise EdgesegError(f"no training state to resume from: {p} does not exist",
                           "run without --resume to start a new run (the state is written beside -o "
                           "every --save-every iterations)")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        info = json.loads(meta[STATE_KEY])
    except Exception as e:  # noqa: BLE001 - damaged file, or a plain checkpoint passed by mistake
        raise EdgesegError(f"{p} is not an edgeseg training state ({e})",
                           "resume needs the .state.safetensors written during training; "
                           "delete it to start over") from e
    for name, module in modules.items():
        prefix = name + "."
        sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(sub, strict=True)
        except RuntimeError as e:
            raise EdgesegError(f"the training state {p.name} was written for another model, class count or "
                               f"set of training heads ({name}: {str(e).splitlines()[0]})",
                               "resume with the same MODEL, dataset and options, or delete the state file "
                               "to start a new run") from e
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            opt_state.setdefault(int(idx), {})[key] = v
    groups = info.pop("param_groups")
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    return info
