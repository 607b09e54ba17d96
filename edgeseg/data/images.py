"""Calibration (and held-out) image sets: a folder of JPEG/PNG files, chosen reproducibly.

Selection is deterministic: the folder is listed recursively and sorted, a seeded
permutation picks ``num`` files (unreadable ones are skipped and replaced by the next
in that permutation), and the picked files are sorted again. The same folder, ``num``
and seed give the same images on every machine, and the hash of their sorted relative
paths goes into the calibration table so a table can be traced to its images.

Images are decoded and preprocessed lazily, one at a time, so a calibration over
thousands of images never holds more than one preprocessed tensor.

A clip graph (IFC: input ``[T, 3, H, W]``, the spec's ``frames`` = T) is fed *clips*: T
consecutive frames (sorted by name) of one folder, e.g. one video of a YouTube-VIS
``JPEGImages`` folder. The folder's clips are its non-overlapping windows of T frames;
``num`` counts clips, chosen by the same seeded permutation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from edgeseg.data.preprocess import InputSpec, load_image, preprocess
from edgeseg.errors import EdgesegError
from edgeseg.utils.hashing import sha256_lines

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Every JPEG/PNG under ``folder`` (recursive, hidden entries skipped), sorted by relative path."""
    root = Path(folder)
    if not root.exists():
        raise EdgesegError(f"image folder {root} does not exist",
                           "pass a folder of JPEG/PNG images (e.g. made by `edgeseg data synth`)")
    if not root.is_dir():
        raise EdgesegError(f"{root} is not a folder", "pass a folder of JPEG/PNG images, not a single file")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES):
                found.append(Path(dirpath) / f)
    # Sort on the relative POSIX path so the order is the same on every OS and filesystem.
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _readable(path: Path) -> bool:
    try:
        load_image(path)  # a full decode: truncated JPEGs pass a header check but not this
        return True
    except EdgesegError:
        return False


@dataclass
class ImageSet:
    """A chosen, sorted list of readable images and how to feed them to a graph."""

    root: Path
    files: list[Path]
    spec: InputSpec
    skipped: list[Path] = field(default_factory=list)  # unreadable files met while choosing
    available: int = 0  # image files found in the folder
    num: int | None = None  # requested count (None = all)
    seed: int = 0

    def __len__(self) -> int:
        return len(self.files)

    @property
    def names(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self.files]

    @property
    def sha256(self) -> str:
        return sha256_lines(self.names)

    def shortfall(self) -> str | None:
        """A sentence when fewer images were used than asked for (the folder holds fewer)."""
        if self.num is None or len(self.files) >= self.num:
            return None
        skipped = f", {len(self.skipped)} of them unreadable" if self.skipped else ""
        return (f"asked for {self.num} images but {self.root} holds {self.available} image files{skipped}: "
                f"used all {len(self.files)} readable ones")

    def settings(self) -> dict:
        return {"num_requested": self.num, "seed": self.seed, "images_found": self.available,
                "images_skipped": len(self.skipped), "input": self.spec.to_dict()}

    def arrays(self) -> Iterator[np.ndarray]:
        """Preprocessed 1xCxHxW (or NHWC) float32 tensors, one at a time."""
        for p in self.files:
            yield preprocess(load_image(p), self.spec)

    def feeds(self) -> "Feeds":
        return Feeds(self)


@dataclass
class ClipSet(ImageSet):
    """Clips of T consecutive frames for a clip graph; ``files`` lists every frame used."""

    clips: list[list[Path]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.clips)

    def settings(self) -> dict:
        return {**super().settings(), "clips": len(self.clips), "frames_per_clip": self.spec.frames}

    def arrays(self) -> Iterator[np.ndarray]:
        """Preprocessed ``[T, C, H, W]`` (or NHWC) float32 clips, one at a time."""
        from edgeseg.data.preprocess import preprocess_clip

        for clip in self.clips:
            yield preprocess_clip([load_image(p) for p in clip], self.spec)


class Feeds:
    """Re-iterable ``{input_name: tensor}`` dicts (calibration may need several passes)."""

    def __init__(self, images: ImageSet):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        name = self.images.spec.name
        for x in self.images.arrays():
            yield {name: x}


def select_images(folder: str | os.PathLike, spec: InputSpec, num: int | None = None,
                  seed: int = 0, exclude: set[str] | None = None) -> ImageSet:
    """Choose ``num`` readable images (all when ``None``) from ``folder`` with ``seed``.

    ``exclude`` holds relative paths that must not be picked (e.g. the calibration images
    when choosing held-out images for a fidelity report).
    """
    if num is not None and num <= 0:
        raise EdgesegError(f"--num must be a positive number of images, got {num}", "use e.g. --num 100")
    root = Path(folder)
    files = list_images(root)
    if exclude:
        files = [p for p in files if p.relative_to(root).as_posix() not in exclude]
    if spec.frames is not None and spec.frames > 1:
        return _select_clips(root, files, spec, num, seed)
    if not files:
        what = "no JPEG/PNG images" + (" left after excluding the calibration images" if exclude else "")
        raise EdgesegError(f"{root} holds {what}",
                           "put .jpg/.jpeg/.png files in it (sub-folders are searched), "
                           "or make some with `edgeseg data synth`")
    order = np.random.default_rng(seed).permutation(len(files)) if num is not None else range(len(files))
    want = len(files) if num is None else num
    chosen: list[Path] = []
    skipped: list[Path] = []
    for i in order:
        if len(chosen) == want:
            break
        p = files[int(i)]
        (chosen if _readable(p) else skipped).append(p)
    if not chosen:
        raise EdgesegError(f"none of the {len(files)} image files in {root} could be read",
                           "check they are valid JPEG/PNG files (not truncated, not another format)")
    chosen.sort(key=lambda p: p.relative_to(root).as_posix())
    return ImageSet(root=root, files=chosen, spec=spec, skipped=skipped, available=len(files),
                    num=num, seed=seed)


def _select_clips(root: Path, files: list[Path], spec: InputSpec, num: int | None, seed: int) -> ClipSet:
    """``num`` clips (all when None) of ``spec.frames`` consecutive frames of one folder each."""
    t = int(spec.frames)
    by_folder: dict[Path, list[Path]] = {}
    for p in files:
        by_folder.setdefault(p.parent, []).append(p)
    windows = [frames[i:i + t] for _, frames in sorted(by_folder.items(), key=lambda kv: kv[0].as_posix())
               for i in range(0, len(frames) - t + 1, t)]
    if not windows:
        raise EdgesegError(f"no folder under {root} holds {t} frames for one clip (the graph takes clips of {t})",
                           "pass a folder of videos as frame folders (e.g. a YouTube-VIS JPEGImages folder from "
                           "`edgeseg data synth --videos N`)")
    order = np.random.default_rng(seed).permutation(len(windows)) if num is not None else range(len(windows))
    want = len(windows) if num is None else num
    chosen: list[list[Path]] = []
    skipped: list[Path] = []
    for i in order:
        if len(chosen) == want:
            break
        clip = windows[int(i)]
        bad = [p for p in clip if not _readable(p)]
        if bad:
            skipped += bad
        else:
            chosen.append(clip)
    if not chosen:
        raise EdgesegError(f"none of the {len(windows)} clips in {root} could be read",
                           "check the frames are valid JPEG/PNG files")
    chosen.sort(key=lambda c: c[0].relative_to(root).as_posix())
    return ClipSet(root=root, files=[p for c in chosen for p in c], spec=spec, skipped=skipped,
                   available=len(files), num=num, seed=seed, clips=chosen)


def _graph_inputs(onnx_model) -> list:
    inits = {i.name for i in onnx_model.graph.initializer}
    return [i for i in onnx_model.graph.input if i.name not in inits]


def _dims(value_info) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else 0 for d in value_info.type.tensor_type.shape.dim]


def _check_graph_input(onnx_model, spec: InputSpec, model_path: Path, manifest_path: Path) -> None:
    """The graph must take the input the manifest describes (else ONNX Runtime fails mid-run)."""
    inputs = {i.name: _dims(i) for i in _graph_inputs(onnx_model)}
    want = list(spec.shape)
    got = inputs.get(spec.name)
    if got is not None and all(g in (0, w) for g, w in zip(got, want)) and len(got) == len(want):
        return
    takes = ", ".join(f"{n!r} {d}" for n, d in inputs.items()) or "no inputs"
    raise EdgesegError(f"{model_path.name} takes {takes}, but {manifest_path} describes input {spec.name!r} "
                       f"{want}: the file is not the model that manifest belongs to",
                       f"move {model_path.name} to a folder of its own (without manifest.json) to calibrate it "
                       "as a bare model, or re-export the model with `edgeseg export`")


def spec_for_model(model_path: str | os.PathLike, onnx_model=None) -> tuple[InputSpec, str]:
    """The input spec to preprocess with: the manifest's when there is one, else from the graph.

    Returns ``(spec, source)``; ``source`` says where it came from so the CLI can warn
    when ImageNet mean/std are only a guess.
    """
    from edgeseg.export.manifest import Manifest, find_manifest, input_spec_of, verify_artifact

    found = find_manifest(model_path)
    if found is not None:
        verify_artifact(model_path)  # a foreign or replaced file is not the model the manifest describes
        manifest = Manifest.load(found)
        if manifest.input:
            spec = input_spec_of(manifest)
            if onnx_model is not None:
                _check_graph_input(onnx_model, spec, Path(model_path), found)
            return spec, "manifest"
    if onnx_model is None:
        from edgeseg.quantize.calibrate import load_onnx

        onnx_model = load_onnx(model_path)
    inputs = _graph_inputs(onnx_model)
    if len(inputs) != 1:
        raise EdgesegError(f"{Path(model_path).name} has {len(inputs)} inputs; calibration feeds one image tensor",
                           "export a single-input image model with `edgeseg export`")
    inp = inputs[0]
    dims = _dims(inp)
    if len(dims) != 4 or any(d <= 0 for d in dims[1:]):
        raise EdgesegError(f"input {inp.name!r} has shape {dims}; need a static 4-D image shape",
                           "export with a fixed --input-size, or put manifest.json beside the model")
    # A first axis above 1 is a clip of that many frames (IFC's [T, 3, H, W]).
    frames = dims[0] if dims[0] > 1 else None
    if dims[1] in (1, 3):
        spec = InputSpec(height=dims[2], width=dims[3], channels=dims[1], layout="NCHW", name=inp.name,
                         frames=frames)
    else:
        spec = InputSpec(height=dims[1], width=dims[2], channels=dims[3], layout="NHWC", name=inp.name,
                         frames=frames)
    return spec, "graph"
