"""Input specification and host-side preprocessing.

The graph takes a normalised float tensor; the *manifest* records how to make it
(size, layout, mean/std), so every consumer (calibration, eval, tracking, a phone app)
preprocesses exactly the same way. Images are resized straight to the network size
(no letterbox): predictions are resized back to the original image size afterwards.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass
class InputSpec:
    """How to feed the graph: ``name`` is the ONNX input name."""

    height: int = 640
    width: int = 640
    channels: int = 3
    layout: str = "NCHW"
    color: str = "RGB"
    mean: tuple[float, ...] = IMAGENET_MEAN  # on 0..255 pixel values
    std: tuple[float, ...] = IMAGENET_STD
    name: str = "image"
    dtype: str = "float32"
    stride: int = 32  # sizes must be multiples of this (the coarsest feature level)
    # A clip graph (IFC) takes T frames stacked on the batch axis: ``[T, C, H, W]``.
    # None: an image graph, ``[1, C, H, W]``.
    frames: int | None = None

    @property
    def shape(self) -> list[int]:
        n = self.frames or 1
        if self.layout == "NCHW":
            return [n, self.channels, self.height, self.width]
        return [n, self.height, self.width, self.channels]

    @property
    def is_clip(self) -> bool:
        return self.frames is not None

    def frame_spec(self) -> "InputSpec":
        """The spec of one frame of the clip (the image spec for an image graph)."""
        d = asdict(self)
        d["frames"] = None
        return InputSpec(**d)

    def with_size(self, height: int, width: int) -> "InputSpec":
        d = asdict(self)
        d.update(height=height, width=width)
        return InputSpec(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["shape"] = self.shape
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


# Largest input side accepted. Edge instance segmentation runs at 320-1280; at 4096x4096
# the float32 image tensor alone is 192 MiB and a network's activations are tens of
# times that, so a bigger value is a typo (100032 for 1024) that would otherwise end in a
# MemoryError after the model is built.
MAX_INPUT_SIDE = 4096


def check_input_side(height: int, width: int) -> None:
    """Refuse sizes that are not positive or too big to be meant, before anything is allocated."""
    for v in (height, width):
        if v <= 0:
            raise EdgesegError(f"input size {height}x{width} has a side of {v}; sides must be positive",
                               "give a positive size, e.g. 640 (or 512x640 for height x width)")
    if max(height, width) > MAX_INPUT_SIDE:
        nbytes = 3 * height * width * 4
        size = f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"
        raise EdgesegError(
            f"input size {height}x{width} is larger than the {MAX_INPUT_SIDE} pixels per side edgeseg accepts: "
            f"the float32 image tensor alone would take {size} and the activations many times more",
            f"use at most {MAX_INPUT_SIDE} per side (edge models typically run at 320 to 1280, e.g. --input-size 640)")


def parse_input_size(text: str | int | None, stride: int = 32) -> tuple[int, int] | None:
    """``640`` -> (640, 640); ``512x640`` -> (512, 640) as height x width.

    Sizes must be positive multiples of the model's stride (its coarsest feature map),
    otherwise the top-down fusion cannot line feature maps up.
    """
    if text is None:
        return None
    s = str(text).strip().lower()
    m = re.fullmatch(r"(\d+)(?:\s*[x,]\s*(\d+))?", s)
    if not m:
        raise EdgesegError(f"cannot read input size {text!r}",
                           "give one number (640) or HEIGHTxWIDTH (512x640)")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    check_input_side(h, w)
    for v in (h, w):
        if v % stride:
            raise EdgesegError(f"input size {h}x{w} is not a multiple of {stride}",
                               f"use multiples of {stride}, e.g. {max(stride, round(v / stride) * stride)}")
    return h, w


def preprocess(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """HxWx3 uint8 RGB image -> the graph's input: a 1xCxHxW (or NHWC) float32 normalised
    tensor; for a clip graph (``spec.frames`` = T) the image repeated as a still clip of T
    frames, so image datasets (eval, calibration from images) run through clip graphs too."""
    x = _preprocess_one(image, spec)
    if spec.frames is not None and spec.frames != 1:
        x = np.ascontiguousarray(np.repeat(x, spec.frames, axis=0))
    return x


def preprocess_clip(frames, spec: InputSpec) -> np.ndarray:
    """T frames (HxWx3 uint8 RGB each) -> ``[T, C, H, W]`` (or NHWC) float32, each frame
    preprocessed exactly as :func:`preprocess` does an image."""
    frames = list(frames)
    if spec.frames is not None and len(frames) != spec.frames:
        raise EdgesegError(f"the clip graph takes {spec.frames} frames, got {len(frames)}",
                           f"pass clips of {spec.frames} frames (or export with --clip-length {len(frames)})")
    if not frames:
        raise EdgesegError("a clip needs at least one frame", "pass T frames")
    return np.ascontiguousarray(np.concatenate([_preprocess_one(f, spec) for f in frames], axis=0))


def _preprocess_one(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    from PIL import Image

    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise EdgesegError(f"expected an HxWx3 image, got shape {tuple(image.shape)}",
                           "pass an RGB image")
    image = image[..., :3]
    if image.shape[0] != spec.height or image.shape[1] != spec.width:
        image = np.asarray(Image.fromarray(image).resize((spec.width, spec.height), Image.BILINEAR))
    x = image.astype(np.float32)
    if spec.color == "BGR":
        x = x[..., ::-1]
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None])


def to_rgb8(im) -> np.ndarray:
    """A decoded PIL image -> HxWx3 uint8 RGB, scaling instead of clipping deeper pixels.

    Pillow opens 16-bit grayscale PNGs as integer modes (``I;16``, ``I;16B``, ``I``) and
    its ``convert("RGB")`` clips those values to 255, so nearly every pixel of a real
    16-bit image came out white. They are scaled here by 255/65535 (rounded). 16-bit
    colour PNGs already arrive as 8-bit RGB/RGBA (Pillow keeps the high byte). Palette,
    L, LA, RGBA and CMYK images go through Pillow's own conversion; alpha is dropped
    (the colour under it is kept), as camera frames and OpenCV's ``imread`` have none.
    """
    if im.mode.startswith("I"):  # I;16, I;16B, I;16L, I (32-bit integer holding 16-bit data)
        deep = np.asarray(im, dtype=np.float64)
        if deep.ndim != 2:  # pragma: no cover - Pillow's integer modes are single-channel
            deep = deep[..., 0]
        gray = np.clip(np.rint(deep / 257.0), 0, 255).astype(np.uint8)  # 65535 / 255 = 257
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        raise EdgesegError(f"{im.mode!r} (32-bit float) images have no defined 0..255 range",
                           "save the image as 8- or 16-bit PNG or as JPEG")
    return np.asarray(im.convert("RGB"))


def load_image(path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; raise EdgesegError when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return to_rgb8(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise EdgesegError(f"cannot read image {path}: {e}", "check the file is a valid JPEG or PNG") from e
