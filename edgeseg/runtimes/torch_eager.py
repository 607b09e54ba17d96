"""PyTorch eager backend: the reference every exported artifact is compared against.

Opens either a checkpoint (``.safetensors`` / ``.pt`` / ``.pth``) or an artifact folder.
Which zoo model to build comes from, in order: the ``model=`` option, the checkpoint's
embedded edgeseg metadata (``save_weights`` writes it into safetensors files), or the
manifest beside the file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.runtimes.base import Runtime, TensorInfo


def module_outputs(model, x: np.ndarray, strict: bool = False) -> dict[str, np.ndarray]:
    """One inference of a zoo module on a preprocessed input, as the output dict every
    runtime returns (float32 NumPy by ``model.output_names``). ``strict``: a module that
    returns another number of outputs than it names is an error."""
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(x)))
    if isinstance(out, torch.Tensor):
        out = (out,)
    if strict and len(out) != len(model.output_names):
        raise EdgesegError("model returned an unexpected number of outputs", "report this as a bug")
    return {n: t.detach().float().numpy() for n, t in zip(model.output_names, out)}


class TorchEagerRuntime(Runtime):
    backend = "torch"

    def __init__(self, path, threads: int = 1, model: str | None = None,
                 model_cfg: dict[str, Any] | None = None, **options: Any):
        super().__init__(path, threads=threads, **options)
        import torch

        from edgeseg.export.manifest import manifest_for_artifact
        from edgeseg.models import create_model
        from edgeseg.models.checkpoints import load_weights

        torch.set_num_threads(threads)
        cfg = dict(model_cfg or {})
        name = model
        if name is None:
            m = manifest_for_artifact(self.path)
            name = m.model
            cfg = {**m.model_cfg, **cfg}
        if cfg.get("input_size") is None:
            cfg.pop("input_size", None)
        elif isinstance(cfg["input_size"], list):  # JSON turns the tuple into a list
            cfg["input_size"] = tuple(cfg["input_size"])
        self.model = create_model(name, **cfg).eval()
        if self.path.suffix in (".pt", ".pth", ".safetensors"):
            load_weights(self.model, self.path)
        self.spec = self.model.input_spec

    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo(self.spec.name, self.spec.shape, "float32")]

    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo(n, [], "float32") for n in self.model.output_names]

    def _run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        return module_outputs(self.model, feeds[self.spec.name], strict=True)


class ModuleRuntime(Runtime):
    """An in-memory zoo module as a runtime (no file): what validation during training
    runs video strategies on, so the trainer's figures come from the same tracking code
    as ``edgeseg track``. Output shapes come from one run on zeros, at construction."""

    backend = "torch"

    def __init__(self, module, threads: int | None = None):
        import torch

        super().__init__(f"<{getattr(module, 'model_name', type(module).__name__)} in memory>",
                         threads=threads or torch.get_num_threads())
        self.model = module
        self.spec = module.input_spec
        zeros = np.zeros(self.spec.shape, np.float32)
        self._out_shapes = {n: list(v.shape) for n, v in self.run({self.spec.name: zeros}).items()}

    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo(self.spec.name, self.spec.shape, "float32")]

    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo(n, self._out_shapes.get(n, []) if hasattr(self, "_out_shapes") else [], "float32")
                for n in self.model.output_names]

    def _run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        return module_outputs(self.model, feeds[self.spec.name])
