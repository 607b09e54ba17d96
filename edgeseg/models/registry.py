"""A registry of model families, in the style of timm.

Each family file (``mobileinst.py``, ...) registers named variants with
``@register_model``. ``create_model(name, **cfg)`` builds one; ``list_models()``
lists them. The registry imports the family modules lazily on first use so that
``edgeseg --help`` does not import torch.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from edgeseg.errors import EdgesegError

# Family modules that register models when imported. Adding a family = one line here.
_FAMILY_MODULES = (
    "edgeseg.models.mobileinst",
)


@dataclass
class ModelEntry:
    name: str
    family: str
    fn: Callable[..., Any]
    description: str = ""
    default_cfg: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False


def register_model(name: str | None = None, *, family: str, description: str = "",
                   **default_cfg: Any) -> Callable:
    """Decorator: register a model constructor under ``name`` (default: function name)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = name or fn.__name__
        if key in _REGISTRY and _REGISTRY[key].fn is not fn:
            raise ValueError(f"model {key!r} registered twice")
        _REGISTRY[key] = ModelEntry(key, family, fn, description or (fn.__doc__ or "").strip().split("\n")[0],
                                    dict(default_cfg))
        return fn

    return wrap


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        for mod in _FAMILY_MODULES:
            importlib.import_module(mod)
        _loaded = True


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise EdgesegError(f"unknown model {name!r}",
                           f"{hint}`edgeseg models` lists the {len(_REGISTRY)} available models")
    return _REGISTRY[name]


def create_model(name: str, **cfg: Any):
    """Build a registered model. ``cfg`` overrides the variant's defaults."""
    entry = model_entry(name)
    merged = {**entry.default_cfg, **cfg}
    model = entry.fn(**merged)
    model.model_name = name
    model.model_cfg = merged
    return model
