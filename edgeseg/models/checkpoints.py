"""Load and save zoo weights without ever unpickling arbitrary objects.

``load_weights(model, path)`` accepts

* our own files: ``.safetensors`` written by :func:`save_weights`, or ``.pth``/``.pt``
  state dicts (also wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``, with
  DataParallel's ``module.`` or ``torch.compile``'s ``_orig_mod.`` prefixes);
* official backbone checkpoints, loaded into ``model.backbone`` with the heads dropped:
  TopFormer's ImageNet classifiers (``topformer-{T,S,B}-224-*.pth``: ``tpm.*``,
  ``trans.*``, ``head.*``, EMA weights preferred as the official loader does), TopFormer's
  ADE20K segmenters (mmseg: ``backbone.*``, ``decode_head.*``) and torchvision's
  MobileNetV2 (``features.*``, ``classifier.*``). Our backbones use the official key
  names, so no renaming table is needed.

Pickle files are read with ``torch.load(weights_only=True)``: tensors and plain
containers only. A file holding other Python objects is refused with one clear error
(loading it could execute code); ``argparse.Namespace`` (training scripts store their
arguments that way) is the single exception, being an attribute bag with no behaviour.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from edgeseg.errors import EdgesegError
from edgeseg.utils.atomic import atomic_path

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
SAFETENSORS_SUFFIX = ".safetensors"
# Wrappers around the real state dict, in the official TopFormer loader's order
# (EMA weights first: they are the ones the published accuracy was measured with).
_CONTAINER_KEYS = ("state_dict_ema", "state_dict", "model_ema", "model", "module", "net", "weights")
# Prefixes added by wrappers: DataParallel/DDP, torch.compile, Lightning-style modules.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
# Keys of segmentation heads that mmseg/detectron2-style backbone checkpoints carry and a
# detection model does not use: dropped silently when loading only the backbone. Each
# backbone class adds its own (``checkpoint_head_prefixes``: TopFormer's ``head.``,
# MobileNetV2's ``classifier.``...) and names the parts official pre-training lacks
# (``not_pretrained_prefixes``), so no backbone is special-cased here.
_HEAD_PREFIXES = ("decode_head.", "auxiliary_head.", "neck.")
_SHOW = 5


# BatchNorm's update counter: a buffer, not a weight. PyTorch before 0.4.1 did not save
# it; it only matters for training with momentum=None, so a file without it is complete.
_BN_COUNTER = "num_batches_tracked"


def _is_bn_counter(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == _BN_COUNTER


@dataclass
class LoadReport:
    """What :func:`load_weights` did, for the CLI to print and the manifest to record."""

    path: str
    target: str                 # "model" or "backbone"
    source: str                 # what the file looked like
    loaded: int
    missing: list[str] = field(default_factory=list)    # target keys left at their initial values
    ignored: list[str] = field(default_factory=list)    # file keys not used
    stripped_prefix: str | None = None
    # Whole-model view (full key names, model order): what came from the file and what
    # kept its initial values, e.g. the decoder when only a backbone was loaded.
    loaded_keys: list[str] = field(default_factory=list)
    initial_keys: list[str] = field(default_factory=list)

    def by_module(self) -> tuple[dict[str, int], dict[str, int]]:
        """(loaded, initial) tensor counts per component, split one level further where a
        component is partly loaded (``backbone.SIM`` kept its initial values, ``backbone.tpm``
        did not)."""
        return group_by_module(self.loaded_keys, self.initial_keys)

    def to_dict(self) -> dict[str, Any]:
        loaded, initial = self.by_module()
        return {"target": self.target, "source": self.source, "loaded": self.loaded,
                "loaded_by_module": loaded, "initial": len(self.initial_keys), "initial_by_module": initial,
                "ignored": len(self.ignored), "ignored_examples": self.ignored[:_SHOW],
                "stripped_prefix": self.stripped_prefix}

    def summary(self) -> str:
        text = f"loaded {self.loaded} tensors from {Path(self.path).name} ({self.source}) into the {self.target}"
        if self.stripped_prefix:
            text += f"; stripped prefix {self.stripped_prefix!r}"
        if self.missing:
            text += f"; {len(self.missing)} left at initial values ({_preview(self.missing)})"
        if self.ignored:
            text += f"; ignored {len(self.ignored)} ({_preview(self.ignored)})"
        return text


def group_by_module(loaded: list[str], initial: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Count keys per top-level module; a module with keys in both lists is split by its
    sub-modules so the summary says which part kept its initial values."""
    def prefix(key: str, depth: int) -> str:
        return ".".join(key.split(".")[:depth])

    mixed = {prefix(k, 1) for k in loaded} & {prefix(k, 1) for k in initial}

    def count(keys: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in keys:
            group = prefix(k, 2) if prefix(k, 1) in mixed else prefix(k, 1)
            out[group] = out.get(group, 0) + 1
        return out

    return count(loaded), count(initial)


def _preview(keys: list[str], n: int = _SHOW) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


# ------------------------------------------------------------------------------ reading
def _unsafe_globals(path: Path, error: Exception) -> list[str]:
    """The non-allowlisted globals a pickle references ([] when it is simply unreadable)."""
    import torch

    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        if names:
            return names
    except Exception:  # noqa: BLE001 - legacy (non-zip) files: fall back to the error text
        pass
    return re.findall(r"Unsupported global: GLOBAL (\S+)", str(error))


# What a file torch.load can read starts with: a zip archive (torch.save since 1.6), a
# pickle (the legacy format; protocol 2+ opens with 0x80) or a tar archive (pre-0.4).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"
_TAR_MAGIC_OFFSET, _TAR_MAGIC = 257, b"ustar"
_READ_FIX = "check the file is complete (re-download it) and is a .pth/.pt state dict"


def _looks_like_torch_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(_TAR_MAGIC_OFFSET + len(_TAR_MAGIC))
    except OSError as e:
        raise EdgesegError(f"cannot read {path}: {e}", "check the file's permissions") from e
    return (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)
            or head[_TAR_MAGIC_OFFSET:] == _TAR_MAGIC)


def _describe_content(path: Path) -> str:
    """'empty', 'text starting "..."' or 'binary data' (for the error message)."""
    head = path.read_bytes()[:64]
    if not head:
        return "it is empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "it holds other binary data"
    first = text.splitlines()[0][:40] if text.strip() else ""
    return f"it is text (starting {first!r})" if first else "it is blank text"


def _torch_load(path: Path) -> Any:
    import argparse

    import torch

    if not _looks_like_torch_file(path):
        # A text file renamed .pth would otherwise reach the unpickler and fail with a
        # KeyError from deep inside torch.
        raise EdgesegError(f"cannot read {path} as a PyTorch checkpoint: {_describe_content(path)}, "
                           "not a file written by torch.save", _READ_FIX)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        names = _unsafe_globals(path, e)
        if not names:
            raise EdgesegError(f"cannot read {path} as a PyTorch checkpoint (not a torch.save file, or damaged)",
                               _READ_FIX) from e
        raise EdgesegError(
            f"refusing to load {path}: it contains Python objects other than tensors "
            f"({', '.join(names[:_SHOW])}), and unpickling them could run arbitrary code",
            "if you trust the file, convert it once to plain weights: python -c \"import torch; "
            f"c = torch.load('{path}', weights_only=False); torch.save(c.get('state_dict', c), 'clean.pth')\" "
            "(or save a .safetensors file)") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise EdgesegError(f"cannot read {path} as a PyTorch checkpoint: {e}", _READ_FIX) from e
    except (KeyError, IndexError, AttributeError, TypeError, struct.error) as e:
        # A damaged pickle that starts like a real one: the unpickler's own errors.
        raise EdgesegError(f"cannot read {path} as a PyTorch checkpoint: the file is damaged "
                           f"({type(e).__name__}: {e})", _READ_FIX) from e


def _safetensors_load(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import safe_open

    try:
        tensors, meta = {}, {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
        return tensors, meta
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise EdgesegError(f"cannot read {path} as safetensors: {e}",
                           "check the file is complete and was written by safetensors") from e


def _find_state_dict(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    def tensors_of(d: Mapping) -> dict[str, Any]:
        return {k: v for k, v in d.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}

    if isinstance(obj, Mapping):
        direct = tensors_of(obj)
        if direct and len(direct) == len(obj):
            return direct
        for key in _CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping) and tensors_of(obj[key]):
                return tensors_of(obj[key])
        if direct:
            return direct
    top = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, Mapping) else type(obj).__name__
    raise EdgesegError(f"no weights found in {path} (top level: {top})",
                       "pass a state dict, or a checkpoint with a 'state_dict' or 'model' entry")


def read_state_dict(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors of a weights file and its metadata (safetensors only), containers unwrapped."""
    p = Path(path)
    if not p.is_file():
        raise EdgesegError(f"weights file not found: {p}", "check the path passed to --weights")
    suffix = p.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        tensors, meta = _safetensors_load(p)
        return _find_state_dict(tensors, p), meta
    if suffix in PICKLE_SUFFIXES:
        return _find_state_dict(_torch_load(p), p), {}
    raise EdgesegError(f"unsupported weights format {p.suffix or '(no suffix)'!r}: {p}",
                       f"use {SAFETENSORS_SUFFIX} or one of {', '.join(PICKLE_SUFFIXES)}")


def _strip_wrappers(state: dict[str, Any], model_keys: set[str]) -> tuple[dict[str, Any], str | None]:
    stripped = []
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                candidate = {k[len(prefix):]: v for k, v in state.items()}
                # "model." may be a real attribute name: strip only if that matches better.
                if prefix == "model." and len(model_keys & set(candidate)) <= len(model_keys & set(state)):
                    continue
                state, changed = candidate, True
                stripped.append(prefix)
    return state, "".join(stripped) or None


def _describe_source(backbone, keys: set[str]) -> str:
    describe = getattr(backbone, "describe_checkpoint", None)
    return (describe(keys) if describe else None) or "backbone weights"


# ------------------------------------------------------------------------------ loading
def load_weights(model, path: str | Path, strict: bool = True) -> LoadReport:
    """Load a weights file into a zoo model (or just its backbone); return what happened.

    With ``strict`` every model key must be filled from a full checkpoint with the same
    shape; for a backbone checkpoint every backbone key must be filled except the parts
    official pre-training lacks (each backbone's ``not_pretrained_prefixes``: TopFormer's SIM,
    MobileNetV2's stride-64 block). A
    mismatch raises :class:`EdgesegError` naming the keys and the likely cause. Without
    ``strict``, whatever matches by name and shape is loaded and the rest reported.
    """
    p = Path(path)
    state, meta = read_state_dict(p)
    model_state = model.state_dict()
    state, stripped = _strip_wrappers(state, set(model_state))
    state = _family_weights_map(model, state)
    keys = set(state)
    decoder_keys = {k for k in model_state if not k.startswith("backbone.")}
    has_backbone = hasattr(model, "backbone")

    if not has_backbone or keys & decoder_keys:
        report = _load_into(model, model_state, state, p, strict, target="model",
                            source="edgeseg checkpoint", meta=meta, stripped=stripped)
        return _with_model_view(report, model_state, "")

    # A backbone-only file: mmseg-style "backbone." keys, or bare backbone keys.
    source = _describe_source(model.backbone, keys)
    if any(k.startswith("backbone.") for k in keys):
        ignored = sorted(k for k in keys if not k.startswith("backbone."))
        sub = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    else:
        ignored, sub = [], dict(state)
    backbone_state = model.backbone.state_dict()
    head_prefixes = _HEAD_PREFIXES + tuple(getattr(model.backbone, "checkpoint_head_prefixes", ()))
    heads = sorted(k for k in sub if k not in backbone_state and k.startswith(head_prefixes))
    sub = {k: v for k, v in sub.items() if k not in heads}
    report = _load_into(model.backbone, backbone_state, sub, p, strict, target="backbone", source=source,
                        meta=meta, stripped=stripped,
                        allowed_missing=tuple(getattr(model.backbone, "not_pretrained_prefixes", ())),
                        full_model=model)
    report.ignored = ignored + heads + report.ignored
    return _with_model_view(report, model_state, "backbone.")


def _with_model_view(report: LoadReport, model_state: dict[str, Any], prefix: str) -> LoadReport:
    loaded = {prefix + k for k in report.loaded_keys}
    report.loaded_keys = [k for k in model_state if k in loaded]
    report.initial_keys = [k for k in model_state if k not in loaded and not _is_bn_counter(k)]
    return report


def _family_weights_map(model, state: dict[str, Any]) -> dict[str, Any]:
    """The model family's ``weights_map`` (official checkpoint layouts -> ours), if it has one.

    Each family knows its official checkpoints' key names (timm's ``checkpoint_filter_fn``);
    a file already in our layout passes through unchanged.
    """
    name = getattr(model, "family", None)
    if not name:
        return state
    from edgeseg.models.registry import family

    fam = family(name)
    if fam.weights_map is None:
        return state
    return dict(fam.load("weights_map")(state, model))


def _load_into(module, module_state: dict[str, Any], state: dict[str, Any], path: Path, strict: bool, *,
               target: str, source: str, meta: dict[str, str], stripped: str | None,
               allowed_missing: tuple[str, ...] = (), full_model=None) -> LoadReport:
    missing = sorted(k for k in module_state if k not in state and not _is_bn_counter(k))
    unexpected = sorted(k for k in state if k not in module_state)
    mismatched = sorted(k for k in state if k in module_state and tuple(state[k].shape) != tuple(module_state[k].shape))
    # BatchNorm's step counter is no weight: detectron2's FrozenBatchNorm2d (FastInst, IFC
    # checkpoints) has none, and it plays no part in inference.
    blocking_missing = [k for k in missing if not k.startswith(allowed_missing)
                        and not k.endswith(".num_batches_tracked")]
    matched = {k: v for k, v in state.items() if k in module_state and k not in mismatched}

    if not matched:
        raise EdgesegError(
            f"none of the {len(state)} tensors in {path.name} match the {target} of "
            f"{getattr(full_model or module, 'model_name', type(module).__name__)} "
            f"(file keys e.g. {_preview(sorted(state), 3)}; model keys e.g. {_preview(sorted(module_state), 3)})",
            "check the file is weights for this model family; `edgeseg models` lists the variants")
    if strict and (blocking_missing or unexpected or mismatched):
        problem, fix = _diagnose(full_model or module, path, state, module_state, blocking_missing,
                                 unexpected, mismatched, target, meta)
        raise EdgesegError(problem, fix)

    module.load_state_dict(matched, strict=False)
    return LoadReport(str(path), target, source, loaded=len(matched), missing=missing,
                      ignored=sorted(set(unexpected) | set(mismatched)), stripped_prefix=stripped,
                      loaded_keys=list(matched))


def _diagnose(model, path: Path, state, module_state, missing, unexpected, mismatched, target, meta) -> tuple[str, str]:
    name = getattr(model, "model_name", type(model).__name__)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_preview(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_preview(unexpected)})")
    if mismatched:
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(module_state[k].shape)}" for k in mismatched]
        parts.append(f"{len(mismatched)} with other shapes ({_preview(shapes, 3)})")
    problem = f"{path.name} does not fit the {target} of {name}: " + "; ".join(parts)

    saved_as = meta.get("edgeseg.model")
    cls_keys = {k for k in mismatched if ".cls_head." in k}
    if target == "model" and mismatched and cls_keys == set(mismatched) and not missing and not unexpected:
        n = state[sorted(cls_keys)[0]].shape[0]
        return (problem + f" (the file was trained for {n} classes, the model has "
                f"{module_state[sorted(cls_keys)[0]].shape[0]})",
                f"create the model with num_classes={n}, or load with strict=False to keep only the "
                "other weights (fine-tuning to a new class set)")
    query_keys = {"instance_decoder.query_feat", "instance_decoder.query_pos"}
    if target == "model" and mismatched and set(mismatched) <= query_keys and not missing and not unexpected:
        n = state["instance_decoder.query_feat"].shape[0]
        return problem, f"the file has {n} queries: create the model with num_queries={n}"
    if any("module." in k for k in unexpected):
        return problem, ("the file mixes DataParallel 'module.' prefixes with plain keys; "
                         "re-save it from model.module.state_dict()")
    if target == "backbone":
        guesser = getattr(getattr(model, "backbone", None), "guess_checkpoint", None)
        guess = guesser(state) if guesser else None
        hint = f"the file looks like a {guess} backbone; " if guess else ""
        return problem, (f"{hint}use the zoo variant with that backbone (`edgeseg models`), "
                         "or pass strict=False to load only the matching layers")
    guess = saved_as or _guess_variant(state, exclude=name)
    if guess and guess != name:
        return problem, f"the file looks like {guess}: create that model instead (or pass its options)"
    return problem, ("the file was saved from a different variant or configuration; `edgeseg models` "
                     "lists the variants, or pass strict=False to load what matches")


def _guess_variant(state: dict[str, Any], exclude: str | None) -> str | None:
    """The registered variant whose keys and shapes match the file (classes aside), if any."""
    from edgeseg.models.registry import create_model, list_models

    sig = {k: tuple(v.shape) for k, v in state.items() if ".cls_head." not in k}
    for name in list_models():
        if name == exclude:
            continue
        try:
            cand = create_model(name, input_size=(64, 64))
        except Exception:  # noqa: BLE001 - a family that cannot build tiny is simply no match
            continue
        ref = {k: tuple(v.shape) for k, v in cand.state_dict().items() if ".cls_head." not in k}
        if ref == sig:
            return name
    return None


# ------------------------------------------------------------------------------- saving
def save_weights(model, path: str | Path, *, manifest=None, dtype: str | None = None) -> Path:
    """Write the model's state dict atomically: ``.safetensors`` (preferred) or ``.pth``/``.pt``.

    safetensors files carry the model name and configuration as metadata, so a later
    mismatch can say which variant the file came from. ``manifest`` (a ``Manifest``)
    replaces the embedded one read off the model, e.g. to add a training record to its
    history. ``dtype="float16"`` stores floating-point tensors in half precision (half
    the file size, for committed zoo checkpoints); :func:`load_weights` needs nothing
    special, ``load_state_dict`` casts them back to the model's dtype.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (SAFETENSORS_SUFFIX, ".pth", ".pt"):
        raise EdgesegError(f"cannot save weights as {p.suffix or '(no suffix)'!r}: {p}",
                           "use a .safetensors (recommended) or .pth path")
    if dtype not in (None, "float32", "float16"):
        raise EdgesegError(f"cannot store weights as {dtype!r}", "use float32 (default) or float16")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype == "float16":
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    with atomic_path(p) as tmp:
        if suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import save_file

            meta = {"format": "pt"}
            if getattr(model, "model_name", None):
                meta["edgeseg.model"] = str(model.model_name)
            cfg = getattr(model, "model_cfg", None)
            if cfg is not None:
                meta["edgeseg.cfg"] = json.dumps(cfg, default=str, sort_keys=True)
            if hasattr(model, "component_map") and hasattr(model, "input_spec"):
                # The whole model-level manifest, so `edgeseg eval/track/bench CKPT` know the
                # model, its input spec and components without a manifest.json beside it.
                from edgeseg.export.manifest import CHECKPOINT_METADATA_KEY, Manifest

                m = manifest if manifest is not None else Manifest.from_model(model)
                meta[CHECKPOINT_METADATA_KEY] = json.dumps(m.to_dict(), default=str)
            save_file(tensors, str(tmp), metadata=meta)
        else:
            import torch

            torch.save(tensors, tmp)
    return p
