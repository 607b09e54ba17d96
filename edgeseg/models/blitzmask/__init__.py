"""The BlitzMask family: ``family.py`` (torch-free description), ``model.py`` (the module),
``decode.py`` (NumPy decoder), ``loss.py`` (training objective), ``weights.py`` (official
backbone checkpoints -> our keys).

Importing this package imports no torch; the module's classes are reachable here lazily.
"""

from __future__ import annotations

_LAZY = {"BlitzMask": "model", "build": "model", "BlitzMaskConfig": "family", "FAMILY": "family"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(name)
