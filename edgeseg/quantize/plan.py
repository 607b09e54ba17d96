"""Per-component precision plans: ``backbone=int8,mask_decoder=int8,instance_decoder=fp16``.

Below the component level a plan may name *exceptions*: a key with a ``/`` is a unit inside
a component, by module path (``instance_decoder/cls_head=fp16``: the nodes of that module,
a "layer group" in the sensitivity report), or ``re:REGEX`` over node names. The longest
matching unit decides a node's precision; every backend honours it
(:mod:`edgeseg.quantize.units` rewrites the plan into per-unit components before QDQ).

YolactEdge's finding is that precision has to be chosen per component (INT8 backbone and
FPN, FP16 ProtoNet and head: an INT8 head costs ~4 AP). A :class:`PrecisionPlan` maps
every component of a model to ``fp32``, ``fp16`` or ``int8``; it is validated against
the component names recorded in the manifest, so a typo never silently quantizes nothing.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable

from edgeseg.errors import EdgesegError

PRECISIONS = ("fp32", "fp16", "int8")
_ALIASES = {"float32": "fp32", "float": "fp32", "f32": "fp32", "float16": "fp16", "half": "fp16",
            "f16": "fp16", "i8": "int8", "qint8": "int8"}

# Presets every model has. Models add their own (e.g. MobileInst's "mixed") through the
# manifest's ``presets`` so the best-known mix for each family has a short name.
GENERIC_PRESETS = {
    "fp32": "*=fp32",
    "fp16": "*=fp16",
    "int8": "*=int8",
}


def _norm_precision(p: str, where: str) -> str:
    q = _ALIASES.get(p.strip().lower(), p.strip().lower())
    if q not in PRECISIONS:
        raise EdgesegError(f"unknown precision {p!r} for {where}",
                           f"use one of {', '.join(PRECISIONS)}")
    return q


@dataclass
class PrecisionPlan:
    """component -> precision, covering every component of the model, in pipeline order."""

    precisions: dict[str, str] = field(default_factory=dict)
    name: str | None = None  # preset name, when it came from one
    # unit (``component/module/path`` or ``re:REGEX``) -> precision, applied over the components'
    exceptions: dict[str, str] = field(default_factory=dict)

    # ---------------------------------------------------------------- parsing
    @classmethod
    def parse(cls, spec: str, components: Iterable[str],
              presets: dict[str, str] | None = None, *, name_presets: bool = True) -> "PrecisionPlan":
        """Parse ``a=int8,b=fp16`` (``*=`` sets the default, else fp32) or a preset name.

        A plan equal to a preset gets the preset's name (``name_presets``), however it was
        written: ``backbone=int8,...`` and ``mixed`` name the same files.
        """
        comps = list(components)
        if not comps:
            raise EdgesegError("the model has no components to plan for",
                               "re-export it with `edgeseg export` so the manifest lists its components")
        all_presets = {**GENERIC_PRESETS, **(presets or {})}
        text = spec.strip()
        name = None
        if text in all_presets:
            name, text = text, all_presets[text]
        if not text:
            raise EdgesegError("empty precision plan",
                               f"write e.g. {comps[0]}=int8,*=fp16 or a preset: {', '.join(all_presets)}")
        default = "fp32"
        explicit: dict[str, str] = {}
        exceptions: dict[str, str] = {}
        for item in _split_items(text):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                raise EdgesegError(
                    f"cannot read {item!r} in precision plan {spec!r}",
                    f"write COMPONENT=PRECISION pairs, e.g. {comps[0]}=int8; presets: {', '.join(all_presets)}")
            key, val = (s.strip() for s in item.rsplit("=", 1)) if item.startswith("re:") else \
                (s.strip() for s in item.split("=", 1))
            if key.startswith("re:") or "/" in key:
                _check_unit(key, comps)
                if key in exceptions:
                    raise EdgesegError(f"unit {key!r} appears twice in precision plan {spec!r}", "give each unit once")
                exceptions[key] = _norm_precision(val, key)
                continue
            if key == "*":
                default = _norm_precision(val, "'*'")
                continue
            if key not in comps:
                close = difflib.get_close_matches(key, comps, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise EdgesegError(f"unknown component {key!r} in precision plan",
                                   f"{hint}valid components: {', '.join(comps)}")
            if key in explicit:
                raise EdgesegError(f"component {key!r} appears twice in precision plan {spec!r}",
                                   "give each component once")
            explicit[key] = _norm_precision(val, key)
        precisions = {c: explicit.get(c, default) for c in comps}
        if exceptions:
            return cls(precisions, name=None, exceptions=exceptions)
        if name is None and name_presets:
            name = _preset_matching(precisions, comps, all_presets)
        return cls(precisions, name=name)

    @classmethod
    def uniform(cls, precision: str, components: Iterable[str]) -> "PrecisionPlan":
        p = _norm_precision(precision, "plan")
        return cls({c: p for c in components}, name=p)

    # ---------------------------------------------------------------- queries
    def precision_of(self, component: str) -> str:
        return self.precisions.get(component, "fp32")

    def components_at(self, precision: str) -> list[str]:
        return [c for c, p in self.precisions.items() if p == precision]

    @property
    def needs_calibration(self) -> bool:
        return "int8" in self.precisions.values() or "int8" in self.exceptions.values()

    @property
    def is_fp32(self) -> bool:
        return all(p == "fp32" for p in (*self.precisions.values(), *self.exceptions.values()))

    def spec(self) -> str:
        return ",".join([f"{c}={p}" for c, p in self.precisions.items()] +
                        [f"{u}={p}" for u, p in self.exceptions.items()])

    def label(self) -> str:
        """Short label for tables and file names: ``int8-int8-fp16`` (pipeline order); with
        exceptions, a short hash of them (``int8-int8-int8-x3f2a91``) so files never collide."""
        base = "-".join(self.precisions.values())
        if not self.exceptions:
            return base
        import hashlib

        digest = hashlib.sha256(",".join(f"{u}={p}" for u, p in sorted(self.exceptions.items())).encode()).hexdigest()
        return f"{base}-x{digest[:6]}"

    def with_exceptions(self, exceptions: dict[str, str]) -> "PrecisionPlan":
        return PrecisionPlan(dict(self.precisions), exceptions={**self.exceptions, **exceptions})

    def file_label(self) -> str:
        """What file names carry (``model.<file_label>.onnx``, ``.tflite``): the preset's name
        when the plan is one (however it was spelt), else :meth:`label`. ``quantize``,
        ``export --plan``, TFLite and the sweep all name files with it."""
        return self.name or self.label()

    def to_dict(self) -> dict:
        d = {"name": self.name, "spec": self.spec(), "precisions": dict(self.precisions)}
        if self.exceptions:
            d["exceptions"] = dict(self.exceptions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PrecisionPlan":
        return cls(dict(d["precisions"]), name=d.get("name"), exceptions=dict(d.get("exceptions") or {}))

    def __str__(self) -> str:
        return self.name or self.spec()


def _split_items(text: str) -> list[str]:
    """Split on commas that start a new ``KEY=`` item, so a ``re:`` unit may hold commas."""
    import re

    return re.split(r",(?=\s*(?:re:|[\w*.\-]+(?:/[\w.\-()]+)*\s*=))", text)


def _check_unit(key: str, components: list[str]) -> None:
    if key.startswith("re:"):
        import re

        try:
            re.compile(key[3:])
        except re.error as e:
            raise EdgesegError(f"unit {key!r} is not a valid regular expression: {e}",
                               "e.g. re:/cls_head/=fp16") from None
        if not key[3:]:
            raise EdgesegError("empty re: unit in the precision plan", "e.g. re:/cls_head/=fp16")
        return
    comp, _, sub = key.partition("/")
    if comp not in components:
        close = difflib.get_close_matches(comp, components, n=1)
        hint = f"did you mean {close[0]}/{sub}? " if close else ""
        raise EdgesegError(f"unit {key!r} is not inside a component of the model",
                           f"{hint}units are COMPONENT/module/path, components: {', '.join(components)}")
    if not sub.strip("/"):
        raise EdgesegError(f"unit {key!r} names no module inside {comp}", f"e.g. {comp}/head=fp16")


def _preset_matching(precisions: dict[str, str], comps: list[str], presets: dict[str, str]) -> str | None:
    """The name of the first preset (generic ones first) giving exactly ``precisions``, so the
    same plan has the same name and file name whichever way it was written."""
    for name, text in presets.items():
        if text in presets:  # a preset defined as another preset's name
            text = presets[text]
        try:
            other = PrecisionPlan.parse(text, comps, name_presets=False) if "=" in text else None
        except EdgesegError:
            continue  # a preset for components this graph lacks
        if other is not None and other.precisions == precisions:
            return name
    return None


def all_combinations(components: list[str], precisions: Iterable[str] = ("fp16", "int8")) -> list[PrecisionPlan]:
    """Every assignment of ``precisions`` over the components (the sweep's default set)."""
    import itertools

    plist = list(precisions)
    return [PrecisionPlan(dict(zip(components, combo)))
            for combo in itertools.product(plist, repeat=len(components))]
