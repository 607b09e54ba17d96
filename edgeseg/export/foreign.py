"""ONNX files edgeseg did not export: whole-model plans, or components by node-name patterns.

A plain ONNX from elsewhere has no component tags. Two ways in:

* whole-model plans (``*=fp16``, ``*=int8``, the ``fp16`` / ``int8`` presets) need no tags:
  every node belongs to one component called :data:`WHOLE_MODEL`;
* component plans name components by regular expressions over node names
  (``--components backbone=^/backbone/,head=^/head/``): every node takes the first pattern
  that matches (``re.search``), nodes no pattern matches take their neighbours' component
  (the same propagation export uses after simplification), and the patterns are recorded
  once in a ``manifest.json`` beside the file, so later steps (calibrate, quantize, bench,
  ``--to tflite``) read them from there. The user's ONNX file itself is never rewritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError

WHOLE_MODEL = "model"
PATTERN_KEY = "pattern"


@dataclass
class PatternMap:
    """Component -> regex over node names; quacks like :class:`~edgeseg.models.base.ComponentMap`
    for :func:`edgeseg.export.tags.tag_graph`."""

    patterns: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._compiled = {}
        for comp, pattern in self.patterns.items():
            try:
                self._compiled[comp] = re.compile(pattern)
            except re.error as e:
                raise EdgesegError(f"--components {comp}={pattern!r} is not a valid regular expression: {e}",
                                   "e.g. --components backbone=^/backbone/,head=^/head/") from None

    def names(self) -> list[str]:
        return list(self.patterns)

    def component_for_scope(self, name: str) -> str | None:
        return next((c for c, rx in self._compiled.items() if rx.search(name)), None)


def is_tagged(model) -> bool:
    from edgeseg.export.tags import untagged_nodes

    return not untagged_nodes(model)


def tag_by_patterns(model, patterns: dict[str, str]) -> dict[str, int]:
    """Tag every node of ``model`` in place from ``patterns``; one clear error for a pattern
    that matches nothing or nodes that no pattern reaches."""
    from edgeseg.export.tags import tag_graph

    pmap = PatternMap(dict(patterns))
    hits = {c: 0 for c in pmap.names()}
    for node in model.graph.node:
        c = pmap.component_for_scope(node.name)
        if c is not None:
            hits[c] += 1
    empty = [c for c, n in hits.items() if n == 0]
    if empty:
        sample = ", ".join(n.name for n in list(model.graph.node)[:4])
        raise EdgesegError(f"--components pattern(s) for {', '.join(empty)} match no node name",
                           f"node names look like: {sample}")
    try:
        return tag_graph(model, pmap)
    except ValueError as e:
        raise EdgesegError(f"some nodes match no --components pattern and have no tagged neighbour ({e})",
                           "add a pattern that covers them, e.g. other=.") from None


def tag_whole_model(model) -> None:
    from edgeseg.export.tags import set_component

    for node in model.graph.node:
        set_component(node, WHOLE_MODEL)


def patterns_of(manifest) -> dict[str, str]:
    """The node-name patterns recorded for a foreign ONNX (empty for edgeseg's own exports)."""
    return {c: info[PATTERN_KEY] for c, info in (manifest.components or {}).items()
            if isinstance(info, dict) and PATTERN_KEY in info}


def ensure_tagged(model, path: Path, components: list[str]) -> None:
    """Make ``model`` (loaded from ``path``) carry component tags before quantizing it:
    edgeseg exports already do; a foreign ONNX gets them from the patterns in its manifest,
    or is one :data:`WHOLE_MODEL` component for a whole-model plan."""
    if is_tagged(model):
        return
    from edgeseg.export.manifest import Manifest, find_manifest

    if find_manifest(path) is not None:
        patterns = patterns_of(Manifest.load(path))
        if patterns:
            tag_by_patterns(model, patterns)
            return
    if components == [WHOLE_MODEL]:
        tag_whole_model(model)
        return
    raise EdgesegError(f"{Path(path).name} has no component tags for the plan's components ({', '.join(components)})",
                       "pass --components NAME=REGEX,... (patterns over node names), or a whole-model plan "
                       "such as --plan '*=fp16'")


def adopt(path: str | Path, patterns: dict[str, str] | None, *, mean=None, std=None) -> Any:
    """Describe a foreign ONNX in a ``manifest.json`` beside it (components by pattern, input
    spec from the graph) and return that manifest. Refuses a folder whose manifest belongs to
    another file, and never touches the ONNX file."""
    from edgeseg.data.images import spec_for_model
    from edgeseg.export.manifest import MANIFEST_NAME, Manifest, find_manifest, tool_versions
    from edgeseg.quantize.calibrate import load_onnx
    from edgeseg.utils.hashing import sha256_file

    path = Path(path)
    model = load_onnx(path)
    existing = find_manifest(path)
    if existing is not None:
        manifest = Manifest.load(existing)
        if path.name not in manifest.artifacts:
            raise EdgesegError(f"{existing} describes other files ({', '.join(manifest.artifacts) or 'none'}), "
                               f"not {path.name}",
                               f"copy {path.name} into a folder of its own, or export it with `edgeseg export "
                               f"{path} --components ... -o DIR`")
        if patterns and patterns_of(manifest) != patterns:
            raise EdgesegError(f"{existing} already records other components for {path.name} "
                               f"({', '.join(f'{c}={p}' for c, p in patterns_of(manifest).items()) or 'none'})",
                               "drop --components to use them, or start from a copy of the file in a new folder")
        return manifest
    if patterns:
        counts = tag_by_patterns(model, patterns)
    else:
        tag_whole_model(model)
        counts = {WHOLE_MODEL: len(model.graph.node)}
        patterns = {WHOLE_MODEL: "."}
    spec, _ = spec_for_model(path, model)
    if mean is not None or std is not None:
        from dataclasses import replace

        spec = replace(spec, **{k: tuple(v) for k, v in (("mean", mean), ("std", std)) if v is not None})
    manifest = Manifest(model=path.stem, input=spec.to_dict(),
                        outputs=[{"name": o.name} for o in model.graph.output],
                        components={c: {PATTERN_KEY: p} for c, p in patterns.items()},
                        source={"kind": "onnx", "file": path.name})
    manifest.add_artifact(path.name, kind="onnx", graph="frame", primary=True, sha256=sha256_file(path),
                          precision={"name": "fp32", "spec": ",".join(f"{c}=fp32" for c in patterns),
                                     "precisions": {c: "fp32" for c in patterns}},
                          components_by_pattern=counts)
    manifest.record("adopt", file=path.name, components=patterns, versions=tool_versions("onnx"))
    manifest.save(path.parent)
    assert (path.parent / MANIFEST_NAME).is_file()
    return manifest


def export_foreign(path: str | Path, out_dir: str | Path, patterns: dict[str, str] | None, *, mean=None, std=None,
                   decoder: str | None = None, owned=()):
    """``edgeseg export their.onnx --components ...``: an artifact folder holding a tagged copy
    of the file and its manifest, so every later step treats it like an edgeseg export."""
    import os

    import onnx

    from edgeseg.data.images import spec_for_model
    from edgeseg.export.manifest import Manifest, tool_versions
    from edgeseg.export.onnx import ExportResult, GraphExport
    from edgeseg.export.tags import nodes_by_component
    from edgeseg.models.contract import resolve_decoder
    from edgeseg.models.user import _floats
    from edgeseg.quantize.calibrate import load_onnx
    from edgeseg.utils import atomic
    from edgeseg.utils.hashing import sha256_file

    src = Path(path)
    model = load_onnx(src)
    if decoder:
        resolve_decoder(decoder)
    spec, _ = spec_for_model(src, model)
    m, s = _floats(mean, "--mean"), _floats(std, "--std")
    if m or s:
        from dataclasses import replace

        spec = replace(spec, **{k: v for k, v in (("mean", m), ("std", s)) if v})
    if patterns:
        counts = tag_by_patterns(model, patterns)
    else:
        tag_whole_model(model)
        patterns, counts = {WHOLE_MODEL: "."}, {WHOLE_MODEL: len(model.graph.node)}
    name = src.stem
    final = Path(out_dir)
    with atomic.atomic_directory(final, owned=owned) as tmp:
        dst = tmp / f"{name}.onnx"
        onnx.save(model, os.fspath(dst))
        manifest = Manifest(model=name, input=spec.to_dict(), outputs=[{"name": o.name} for o in model.graph.output],
                            components={c: {PATTERN_KEY: p} for c, p in patterns.items()}, decoder=decoder,
                            source={"kind": "onnx", "file": str(src), "sha256": sha256_file(src)})
        manifest.add_artifact(dst.name, kind="onnx", graph="frame", primary=True, sha256=sha256_file(dst),
                              precision={"name": "fp32", "spec": ",".join(f"{c}=fp32" for c in patterns),
                                         "precisions": {c: "fp32" for c in patterns}},
                              components=nodes_by_component(model))
        manifest.record("export", source=str(src), components=patterns, versions=tool_versions("onnx"))
        manifest.save(tmp)
    graph = GraphExport("frame", final / f"{name}.onnx", [], dict(counts), "none", len(model.graph.node),
                        len(model.graph.node), 0, 0)
    return ExportResult(final, manifest, {"frame": graph})
