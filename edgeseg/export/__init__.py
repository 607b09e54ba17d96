"""Export and conversion: ``onnx.py`` (torch -> tagged ONNX), one package per target
(``tnn/``, ``tflite/``, ``tensorrt/``), ``manifest.py``, ``tags.py``, ``foreign.py``.

The package is also callable, the short Python API for any model (zoo or your own)::

    import edgeseg
    result = edgeseg.export(model, "out/mine", components={"backbone": "backbone", "head": "head"},
                            input_size=320)

(:func:`edgeseg.api.export_model`; importing this package imports no torch.)
"""

from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    # ``edgeseg.export`` is both this package and the documented function: a module whose
    # class defines __call__ is the one way to have both under one name.
    def __call__(self, model, out_dir, **options):
        from edgeseg.api import export_model

        return export_model(model, out_dir, **options)


sys.modules[__name__].__class__ = _CallableModule
