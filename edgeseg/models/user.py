"""A user's own PyTorch model through the same contract as the zoo's families.

The user's code is imported, never unpickled: ``path/to/file.py:build_fn`` or
``package.module:build_fn`` names a function (or class) returning an ``nn.Module``. The
module is then given what the toolchain reads (the contract's module attributes):

* ``component_map``: ``--components backbone=backbone,neck=fpn,head=head`` (component =
  module path), default: the module's top-level children, in order;
* ``input_spec``: ``--input-size`` (required unless the module carries an ``input_spec``),
  ``--mean`` / ``--std`` (default ImageNet's, on 0..255 pixels);
* ``output_names``: ``--output-names``, else the module's own ``output_names``, else
  ``output0``, ``output1``... counted from one forward pass;
* a decoder (optional): a family name (``mobileinst``, ...) or ``module:function``, recorded
  in the manifest so ``eval`` / ``sweep`` can measure AP;
* ``model_name``, ``model_cfg``, ``edgeseg_source`` (the entry point, for the manifest);
  ``edgeseg_decoder`` (namespaced: a user's module may have a child called ``decoder``).

After that the model is exported, calibrated, quantized per component, converted and
benchmarked exactly like a zoo model. From Python::

    import edgeseg
    edgeseg.export(model, "out/mine", components={"backbone": "backbone", "head": "head"},
                   input_size=320)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from edgeseg.errors import EdgesegError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_user_entry(text: str) -> bool:
    """``file.py:fn``, ``pkg.mod:fn`` or ``file.py`` (not a zoo name, not an ONNX file)."""
    return ":" in text or text.endswith(".py")


def load_entry(ref: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """Import ``ref`` and return (the callable, a description for the manifest)."""
    target, sep, attr = ref.rpartition(":")
    if not sep:  # "file.py" alone: its build_model / build / model function
        target, attr = ref, ""
    if not target:
        raise EdgesegError(f"cannot read {ref!r} as FILE.py:FUNCTION or package.module:FUNCTION",
                           "e.g. edgeseg export examples/tiny_user_model.py:build_model")
    info: dict[str, Any] = {"kind": "user", "entry": ref}
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise EdgesegError(f"model file {path} does not exist", "check the path before ':'")
        module = _import_file(path)
        info["file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise EdgesegError(f"cannot import {target}: {e}",
                               "make the package importable (pip install -e it, or set PYTHONPATH), "
                               "or pass the file path: path/to/file.py:FUNCTION") from e
    if not attr:
        attr = next((a for a in ("build_model", "build", "model") if callable(getattr(module, a, None))), "")
        if not attr:
            raise EdgesegError(f"{target} has no build_model() (or build/model) function",
                               f"name the function: {target}:FUNCTION")
        info["entry"] = f"{target}:{attr}"
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise EdgesegError(f"{target} has no callable {attr!r}", f"it defines: {', '.join(public[:12]) or 'nothing'}")
    return fn, info


def _import_file(path: Path):
    name = "edgeseg_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EdgesegError(f"cannot import {path} as Python", "pass a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # The file's own folder first, so it can import its siblings as a script would.
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code: any error is theirs, said in one line
        sys.modules.pop(name, None)
        raise EdgesegError(f"importing {path} failed: {type(e).__name__}: {e}", "fix the model file") from e
    finally:
        sys.path.pop(0)
    return module


def parse_mapping(text: str | None, what: str, example: str) -> dict[str, str]:
    """``a=x,b=y`` -> {"a": "x", "b": "y"} (a comma only separates before ``name=``, so
    regexes may contain commas)."""
    if not text:
        return {}
    out: dict[str, str] = {}
    for item in re.split(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)", text):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _NAME.match(key):
            raise EdgesegError(f"cannot read {what} {item!r}: expected NAME=VALUE", f"e.g. {example}")
        if key in out:
            raise EdgesegError(f"{what} names {key!r} twice", f"e.g. {example}")
        out[key] = value.strip()
    return out


def _floats(text: str | tuple | list | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    values = text if isinstance(text, (tuple, list)) else str(text).split(",")
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        raise EdgesegError(f"cannot read {what} {text!r}", f"give three numbers, e.g. {what} 123.7,116.3,103.5") from None
    if len(out) not in (1, 3):
        raise EdgesegError(f"{what} needs 1 or 3 values, got {len(out)}", f"e.g. {what} 123.7,116.3,103.5")
    return out * 3 if len(out) == 1 else out


def wrap_user_model(module, *, name: str | None = None, components: Mapping[str, str] | str | None = None,
                    input_size: int | tuple[int, int] | str | None = None,
                    output_names: list[str] | str | None = None, mean=None, std=None,
                    decoder: str | None = None, input_name: str = "image", source: dict[str, Any] | None = None):
    """Give a plain ``nn.Module`` the contract's attributes (in place) and return it."""
    import torch

    from edgeseg.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, InputSpec, parse_input_size
    from edgeseg.models.base import ComponentMap
    from edgeseg.models.contract import check_module, input_size_of, resolve_decoder

    if not isinstance(module, torch.nn.Module):
        raise EdgesegError(f"the build function returned {type(module).__name__}, not a torch.nn.Module",
                           "return the model instance from the function")
    name = name or getattr(module, "model_name", None) or type(module).__name__.lower()
    if not _NAME.match(name):
        name = re.sub(r"\W+", "_", name).strip("_") or "model"
    # components: explicit, the module's own, or its top-level children
    if isinstance(components, str):
        components = parse_mapping(components, "--components", "backbone=backbone,neck=fpn,head=head")
    if components:
        cmap = ComponentMap(dict(components))
    elif isinstance(getattr(module, "component_map", None), ComponentMap):
        cmap = module.component_map
    else:
        children = [n for n, _ in module.named_children()]
        if not children:
            raise EdgesegError(f"{name} has no sub-modules to use as components",
                               "pass --components NAME=module.path,... (e.g. model= for the whole model)")
        cmap = ComponentMap({n: n for n in children})
    module.component_map = cmap

    # input spec
    spec = getattr(module, "input_spec", None)
    if input_size is not None:
        hw = parse_input_size(input_size, stride=1) if isinstance(input_size, str) else input_size
        h, w = input_size_of(hw, 1)
        spec = InputSpec(height=h, width=w, stride=1, name=input_name)
    if not isinstance(spec, InputSpec):
        raise EdgesegError(f"{name}: the input size is unknown", "pass --input-size, e.g. --input-size 320 or 256x320")
    m, s = _floats(mean, "--mean"), _floats(std, "--std")
    if m or s:
        from dataclasses import replace

        spec = replace(spec, mean=m or IMAGENET_MEAN, std=s or IMAGENET_STD)
    if s and any(v <= 0 for v in s):
        raise EdgesegError(f"--std values must be positive, got {s}", "e.g. --std 58.4,57.1,57.4")
    module.input_spec = spec

    # outputs
    if isinstance(output_names, str):
        output_names = [n.strip() for n in output_names.split(",") if n.strip()]
    count = _count_outputs(module, spec)
    names = list(output_names or getattr(module, "output_names", None) or [f"output{i}" for i in range(count)])
    if len(names) != count:
        raise EdgesegError(f"{name} returns {count} output(s) but {len(names)} name(s) were given ({', '.join(names)})",
                           f"pass --output-names with {count} names")
    if len(set(names)) != len(names):
        raise EdgesegError(f"output names repeat: {', '.join(names)}", "give each output its own name")
    module.output_names = names

    if decoder:
        resolve_decoder(decoder)  # a wrong name fails now, not at eval time
    # edgeseg_* names: a user's module may well have children called "decoder" or "source".
    module.edgeseg_decoder = decoder
    module.edgeseg_source = source or {"kind": "user",
                                       "entry": f"{type(module).__module__}.{type(module).__qualname__}"}
    module.model_name = name
    module.model_cfg = {"input_size": [spec.height, spec.width]}
    module.precision_presets = dict(getattr(module, "precision_presets", {}) or {})
    check_module(module, name)
    return module.eval()


def _count_outputs(module, spec) -> int:
    """Outputs of one forward pass on a zero image (tensors, or a tuple/list of them)."""
    import torch

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(spec.shape))
    except Exception as e:  # the user's forward: report it, with the shape we fed
        raise EdgesegError(f"the model's forward failed on a {'x'.join(map(str, spec.shape))} input: "
                           f"{type(e).__name__}: {e}", "check --input-size and the model's forward") from e
    finally:
        module.train(was_training)
    if isinstance(out, torch.Tensor):
        return 1
    if isinstance(out, (tuple, list)) and out and all(isinstance(t, torch.Tensor) for t in out):
        return len(out)
    raise EdgesegError(f"the model's forward returns {type(out).__name__}; export needs a tensor or a tuple of tensors",
                       "return a tuple of tensors (a dict can be turned into one in a small wrapper)")


def build_user_model(ref: str, *, components=None, input_size=None, output_names=None, mean=None, std=None,
                     decoder=None, weights: str | None = None):
    """The CLI's path: import ``ref``, build, wrap, load ``weights``; returns (module, weights info)."""
    fn, info = load_entry(ref)
    try:
        module = fn()
    except TypeError as e:
        raise EdgesegError(f"calling {info['entry']}() failed: {e}",
                           "the build function must work without arguments (give its arguments defaults)") from e
    stem = Path(ref.rpartition(":")[0] or ref).stem if ".py" in ref else ref.rpartition(":")[2]
    default_name = stem.split(".")[-1]
    model = wrap_user_model(module, name=getattr(module, "model_name", None) or default_name,
                            components=components, input_size=input_size, output_names=output_names,
                            mean=mean, std=std, decoder=decoder, source=info)
    winfo = None
    if weights:
        from edgeseg.models.checkpoints import load_weights
        from edgeseg.utils.hashing import sha256_file

        report = load_weights(model, weights)
        winfo = {"path": str(weights), "sha256": sha256_file(weights), "format": Path(weights).suffix.lstrip("."),
                 "summary": report.summary()}
    return model, winfo
