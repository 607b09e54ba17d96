"""A registry of model families and their named variants, in the style of timm.

Each family package declares a torch-free :class:`~edgeseg.models.contract.Family` in its
``family.py`` (components, outputs, variants, presets, and ``"module:attr"`` references to
the builder, decoder, objective, video strategy and weights map). The registry imports
those descriptions lazily on first use, so ``edgeseg models`` and ``edgeseg --help``
never import torch; ``create_model`` imports the family's builder only when a model is
built.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.models.contract import Family, import_object

# Family descriptions registered when first needed. Adding a family = one line here.
_FAMILY_MODULES = (
    "edgeseg.models.mobileinst.family",
    "edgeseg.models.yolact_edge.family",
    "edgeseg.models.ifc.family",
    "edgeseg.models.fastinst.family",
    "edgeseg.models.blitzmask.family",
)


@dataclass
class ModelEntry:
    name: str
    family: str
    description: str = ""
    default_cfg: dict[str, Any] = field(default_factory=dict)


_FAMILIES: dict[str, Family] = {}
_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False


def register_family(fam: Family) -> Family:
    """Register a family and all its variants (called by each ``family.py``)."""
    if fam.name in _FAMILIES and _FAMILIES[fam.name] is not fam:
        raise ValueError(f"family {fam.name!r} registered twice")
    _FAMILIES[fam.name] = fam
    for v in fam.variants:
        if v.name in _REGISTRY and _REGISTRY[v.name].family != fam.name:
            raise ValueError(f"model {v.name!r} registered twice")
        _REGISTRY[v.name] = ModelEntry(v.name, fam.name, v.description, dict(v.cfg))
    return fam


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in _FAMILY_MODULES:
            importlib.import_module(mod)


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def list_families() -> list[str]:
    _ensure_loaded()
    return sorted(_FAMILIES)


def family(name: str) -> Family:
    """A family by name, with a did-you-mean hint."""
    _ensure_loaded()
    if name not in _FAMILIES:
        close = difflib.get_close_matches(name, list(_FAMILIES), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise EdgesegError(f"unknown model family {name!r}",
                           f"{hint}families: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def family_of_model(name: str) -> Family | None:
    """The family of a registered model name (None for a name outside the zoo)."""
    _ensure_loaded()
    entry = _REGISTRY.get(name)
    return _FAMILIES[entry.family] if entry else None


def model_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise EdgesegError(f"unknown model {name!r}",
                           f"{hint}`edgeseg models` lists the {len(_REGISTRY)} available models; your own "
                           "model: `edgeseg export path/to/file.py:build_fn --components ...`")
    return _REGISTRY[name]


def create_model(name: str, **cfg: Any):
    """Build a registered model. ``cfg`` overrides the variant's defaults."""
    entry = model_entry(name)
    fam = _FAMILIES[entry.family]
    merged = {**entry.default_cfg, **cfg}
    build = import_object(fam.build)
    model = build(name, merged)
    model.model_name = name
    model.model_cfg = merged
    model.family = fam.name
    return model
