"""The FastInst family: ``family.py`` (torch-free description), ``model.py`` (the module),
``pixel_decoder.py`` (PPM-FPN), ``query_selector.py`` (instance-activation-guided queries),
``transformer_decoder.py`` (the dual-path decoder), ``decode.py`` (NumPy decoder),
``loss.py`` (training objective), ``weights.py`` (official checkpoint layout -> ours).

Importing this package imports no torch; the module's classes are reachable here lazily.
"""

from __future__ import annotations

_LAZY = {"FastInst": "model", "build": "model", "FastInstConfig": "family", "FAMILY": "family"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(name)
