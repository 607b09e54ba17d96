"""The MobileInst family: ``family.py`` (torch-free description), ``model.py`` (the module),
``decode.py`` (NumPy decoder), ``loss.py`` (training objective).

Importing this package imports no torch; the module's classes are reachable here lazily
(``from edgeseg.models.mobileinst import MobileInst``) for convenience.
"""

from __future__ import annotations

_LAZY = {"MobileInst": "model", "MobileInstFeatures": "model", "build": "model",
         "MobileInstConfig": "family", "FAMILY": "family"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(name)
