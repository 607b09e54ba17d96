"""The video side of the model-family contract: a *strategy* turns an artifact folder into
trackers, and ``edgeseg track`` / the interval sweep (:mod:`edgeseg.track.sweep`) use it
without naming a family.

A family names its strategy in ``Family.video`` (``"module:Class"``). The class provides::

    name: str                       # "kernel reuse"
    interval_name: str              # the swept knob's letter: "T" (key interval), "S" (clip stride)
    interval_help: str              # what --key-interval means for it
    config(**options) -> config     # its tracker config from `edgeseg track` options, with its defaults
    open(artifact, *, backend, threads, max_interval, make_missing, numerics) -> VideoSession
    open_module(model) -> VideoSession   # optional: an in-memory module (validation in training)

and a :class:`VideoSession` holds the opened runtimes of one artifact and makes one
tracker per interval (``default_interval`` when none is asked for; a clip strategy's
session also says its ``clip_length``). A tracker has ``reset()``, ``step(frame)``,
``finish() -> VideoResult`` and ``timings`` (one
:class:`~edgeseg.track.kernel_reuse.FrameTiming` per frame), so the same pipeline,
overlay, results JSON and sweep serve kernel reuse (MobileInst), feature warping
(YolactEdge) and clip matching (IFC).

Per-frame trackers return the instances of the frame just given from ``step``. A
*delayed* tracker (``tracker.delayed`` true: near-online clip models, whose frame results
exist only once a clip covering them has run) returns from ``step`` the
:class:`~edgeseg.track.clip_matching.FrameInstances` of the frames that became final, and
``flush()`` returns the rest at the end of the video; ``finish()`` flushes by itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from edgeseg.errors import EdgesegError


class VideoSession(Protocol):
    manifest: Any
    graphs: dict[str, str | None]   # role -> artifact file (for reports), e.g. {"frame": ..., "features": ...}
    notes: list[str]                 # what opening did (e.g. a graph made on the fly)
    backend: str
    numerics: str                    # how ONNX Runtime runs int8: "fused" (timed as deployed) or "simulated"

    def tracker(self, interval: int, config: Any) -> Any: ...

    def warm_up(self) -> None: ...

    def check_classes(self, num_categories: int, source: str) -> None: ...

    def close(self) -> None: ...


def open_artifact(artifact: str | os.PathLike):
    """``(path, manifest, folder)`` of an artifact folder, or of a graph file in one: how
    every strategy's ``open`` starts (one existence check, one error text)."""
    from edgeseg.export.manifest import Manifest

    p = Path(artifact)
    if not p.exists():
        raise EdgesegError(f"artifact {p} does not exist", "export one with `edgeseg export MODEL -o DIR`")
    return p, Manifest.load(p), (p if p.is_dir() else p.parent)


def strategy_for(artifact: str | os.PathLike):
    """The video strategy of the family an artifact belongs to (from its manifest)."""
    from edgeseg.models.registry import family, family_of_model

    _, manifest, _ = open_artifact(artifact)
    fam = family(manifest.family) if manifest.family else family_of_model(manifest.model)
    if fam is None:
        raise EdgesegError(f"{manifest.model} is not a zoo model, so no video strategy is known for it",
                           "track with an artifact of a zoo family that has one (`edgeseg models`)")
    if fam.video is None:
        raise EdgesegError(f"the {fam.name} family has no video strategy",
                           "`edgeseg track` runs families with one (MobileInst: kernel reuse)")
    return fam.load("video")
