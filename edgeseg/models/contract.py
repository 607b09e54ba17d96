"""The model-family contract: everything the toolchain needs to know about a family.

A *family* (MobileInst, YolactEdge, BlitzMask, FastInst, IFC, or a user's own model) is
one package under ``edgeseg/models/<family>/``. Its ``family.py`` is torch-free and
declares a :class:`Family`: the components, the output names, the input stride, named
variants, precision presets, and *where* the heavier parts live, as ``"module:attr"``
strings imported only when used (timm's registry, Polygraphy's lazy loaders):

====================  ========================================================  =========
field                 what it names                                              required
====================  ========================================================  =========
``build``             ``build(variant_name, cfg) -> nn.Module`` (see below)      yes
``decoder``           ``decode(outputs, image_hw, **opts) -> [Detection]``       yes
``objective``         training objective: ``Objective(model, num_classes, ...)``  no
``video``             video strategy for ``edgeseg track`` (``track/``)          no
``weights_map``       ``filter_state_dict(state, model) -> state``: official     no
                      checkpoint layouts -> ours, before loading
``graph_calibration`` ``hook(settings, plan, table) -> settings``: plan, table   no
                      and sample inputs of graphs that do not share the frame
                      graph's (:mod:`edgeseg.export.graph_settings`)
====================  ========================================================  =========

The ``nn.Module`` a family builds (and a user's own module, wrapped by
:mod:`edgeseg.models.user`) carries these attributes, which export, calibration,
quantization, eval, sweep, track and train read instead of naming a family:

* ``component_map`` (:class:`~edgeseg.models.base.ComponentMap`): component -> module path;
* ``input_spec`` (:class:`~edgeseg.data.preprocess.InputSpec`): size, stride, mean/std;
* ``output_names``: names of what ``forward`` returns, in order;
* ``model_name``, ``model_cfg``, ``precision_presets``, ``family`` (the family's name);
* optionally ``graph_modules()`` -> ``{graph name: nn.Module}`` for graphs beyond the
  frame graph (MobileInst's ``features`` graph for kernel reuse; a keyframe / non-keyframe
  pair for feature warping); each carries the same attributes, and may declare
  ``extra_inputs`` (:class:`TensorSpec` list) fed besides the image.

Decoders turn one image's raw outputs (a dict of NumPy arrays, batch of 1 or none) into
:class:`Detection` objects, in NumPy only, so every runtime's outputs decode identically.
Their keyword options are those of :data:`DECODE_DEFAULTS`.

This module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from edgeseg.errors import EdgesegError

# Keyword options every decoder accepts (each family keeps its own meaning of "score").
DECODE_DEFAULTS: dict[str, Any] = {
    "score_threshold": 0.05,   # drop detections scoring at or below this
    "max_detections": 100,     # per image, best first
    "mask_threshold": 0.5,     # on mask probabilities
    "input_hw": None,          # the network input (height, width); default: from the outputs
}


@dataclass
class Detection:
    """One instance in one image: 0-based class, score, boolean mask at image size."""

    label: int
    score: float
    mask: np.ndarray  # bool [h, w]

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Tight ``(x0, y0, x1, y1)`` box around the mask (pixel edges), zeros if empty."""
        ys, xs = np.nonzero(self.mask)
        if xs.size == 0:
            return 0.0, 0.0, 0.0, 0.0
        return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


class Decoder(Protocol):
    def __call__(self, outputs: Mapping[str, np.ndarray], image_hw: tuple[int, int],
                 **options: Any) -> list[Detection]: ...


@dataclass(frozen=True)
class TensorSpec:
    """A graph input besides the image (e.g. keyframe features for a warping graph)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class Variant:
    """A named configuration of a family (``mobileinst_topformer``): the registry's unit."""

    name: str
    description: str
    cfg: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def with_defaults(cls, defaults: Any, name: str, description: str, **overrides: Any) -> "Variant":
        """A variant holding its family's complete default configuration (a dataclass
        instance) with ``overrides`` applied, so a manifest's ``model_cfg`` records all of it."""
        import dataclasses

        cfg = dataclasses.asdict(defaults)
        unknown = set(overrides) - set(cfg)
        if unknown:  # a typo in a family's variant table fails at import, not as a silently ignored key
            raise TypeError(f"variant {name}: unknown config keys {sorted(unknown)}")
        cfg.update(overrides)
        return cls(name, description, cfg)


@dataclass
class Family:
    """A model family's torch-free description (see the module docstring)."""

    name: str
    title: str                              # "MobileInst (Zhang et al., AAAI 2024)"
    components: tuple[str, ...]             # in pipeline order
    outputs: tuple[str, ...]                # frame graph outputs, in order
    build: str                              # "module:attr"
    decoder: str                            # "module:attr"
    input_stride: int = 32                  # input sizes must be multiples of this
    graphs: tuple[str, ...] = ("frame",)    # every graph the module can give (frame first)
    objective: str | None = None            # "module:attr"
    train_data: str = "coco"                # what the objective trains on: "coco" images | "ytvis" clips
    # The frame graph takes a clip of T frames stacked on the batch axis, [T, 3, H, W]
    # (IFC); T is the variant config's ``clip_length`` (``edgeseg export --clip-length``),
    # and the module's input spec records it as ``frames``.
    clip_input: bool = False
    video: str | None = None                # "module:attr" of a VideoStrategy
    weights_map: str | None = None          # "module:attr"
    graph_calibration: str | None = None    # "module:attr" (see edgeseg.export.graph_settings)
    presets: dict[str, str] = field(default_factory=dict)
    variants: tuple[Variant, ...] = ()

    def load(self, what: str) -> Any:
        """Import the object named by field ``what`` (``"decoder"``, ``"objective"``...)."""
        ref = getattr(self, what)
        if ref is None:
            raise EdgesegError(f"the {self.name} family has no {what.replace('_', ' ')}",
                               _MISSING_FIX.get(what, "see docs/architecture.md, 'Model families'"))
        return import_object(ref)


_MISSING_FIX = {
    "objective": "`edgeseg train` needs a family with a training objective (`edgeseg models` lists families)",
    "video": "`edgeseg track` needs a family with a video strategy (MobileInst: kernel reuse)",
    "weights_map": "load an edgeseg checkpoint or a file with this model's own key names",
}


def import_object(ref: str) -> Any:
    """``"package.module:attr"`` -> the object (the module is imported now)."""
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise EdgesegError(f"cannot read {ref!r} as module:attribute", "write it as package.module:name")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise EdgesegError(f"cannot import {module} (for {ref}): {e}",
                           "check the module path, and that its dependencies are installed") from e
    try:
        obj = mod
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        names = [n for n in dir(mod) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=3)
        raise EdgesegError(f"{module} has no attribute {attr!r}",
                           f"did you mean {', '.join(close)}?" if close else
                           f"it defines: {', '.join(names[:12]) or 'nothing public'}") from None
    return obj


# --------------------------------------------------------------------- decoders by name
def decoder_names() -> list[str]:
    """Every registered family's name: what ``--decoder`` accepts besides module:attr."""
    from edgeseg.models.registry import list_families

    return list_families()


def resolve_decoder(ref: str) -> Callable[..., list[Detection]]:
    """A decoder from a family name (``mobileinst``) or ``module:attr``."""
    if ":" in ref:
        fn = import_object(ref)
    else:
        from edgeseg.models.registry import family

        fn = family(ref).load("decoder")
    if not callable(fn):
        raise EdgesegError(f"decoder {ref!r} is not callable", "name a function decode(outputs, image_hw, **opts)")
    return fn


def decoder_for_manifest(manifest) -> Callable[..., list[Detection]]:
    """The decoder an artifact's outputs go through: the manifest's ``decoder`` (a family
    name or module:attr, recorded for user models exported with ``--decoder``), else the
    family of its model."""
    ref = getattr(manifest, "decoder", None)
    if ref:
        return resolve_decoder(ref)
    fam = getattr(manifest, "family", None)
    if fam:
        return resolve_decoder(fam)
    from edgeseg.models.registry import family_of_model

    found = family_of_model(manifest.model)
    if found is None:
        raise EdgesegError(f"no decoder is known for {manifest.model!r} (a model outside the zoo)",
                           "export it with --decoder NAME (a family: "
                           f"{', '.join(decoder_names())}) or --decoder module:function")
    return found.load("decoder")


# --------------------------------------------------------------------- module checks
REQUIRED_ATTRS = ("component_map", "input_spec", "output_names")


def check_module(module: Any, where: str = "the model") -> None:
    """Refuse a module that does not carry what the toolchain reads (one clear error)."""
    missing = [a for a in REQUIRED_ATTRS if not hasattr(module, a)]
    if missing:
        raise EdgesegError(f"{where} lacks {', '.join(missing)}",
                           "build it through a family (edgeseg.models.create_model) or wrap your own "
                           "module with edgeseg.models.user.wrap_user_model(...)")
    names = module.component_map.names()
    if not names:
        raise EdgesegError(f"{where} has no components", "give at least one component, e.g. model=''")
    submodules = dict(module.named_modules())
    for comp in names:
        path = module.component_map.module_path(comp)
        if path not in submodules:
            close = difflib.get_close_matches(path, [n for n in submodules if n], n=3)
            raise EdgesegError(f"component {comp!r} names module {path!r}, which the model does not have",
                               f"did you mean {', '.join(close)}?" if close else
                               f"top-level modules: {', '.join(n for n, _ in module.named_children())}")


# --------------------------------------------------------------------- builder helpers
def config_from(cls: type, name: str, cfg: Mapping[str, Any]):
    """A family's config dataclass from a variant's dict; an unknown key is one error
    with a did-you-mean hint (so a typo never silently builds the default model)."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    for key in cfg:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise EdgesegError(f"unknown option {key!r} for model {name}",
                               f"{hint}options: {', '.join(sorted(known))}")
    config = cls(**cfg)
    if hasattr(config, "num_classes") and int(config.num_classes) < 1:
        raise EdgesegError(f"num_classes must be at least 1, got {config.num_classes}", "pass num_classes=80 for COCO")
    return config


def input_size_of(value: Any, stride: int, why: str = "") -> tuple[int, int]:
    """``640`` / ``(512, 640)`` -> (height, width), checked: positive, at most
    ``MAX_INPUT_SIDE`` per side (:func:`edgeseg.data.preprocess.check_input_side`), and a
    multiple of the family's ``stride``."""
    from edgeseg.data.preprocess import check_input_side

    if isinstance(value, int):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise EdgesegError(f"cannot read input_size {value!r}", "give (height, width), e.g. (640, 640)") from None
    check_input_side(h, w)
    for v in (h, w):
        if v % stride:
            near = max(stride, round(v / stride) * stride)
            raise EdgesegError(f"input size {h}x{w} is not a multiple of {stride}" + (f" ({why})" if why else ""),
                               f"use multiples of {stride}, e.g. {near}")
    return h, w
