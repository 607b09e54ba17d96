"""Synthetic instance-segmentation data: textured shapes on noisy backgrounds.

No public dataset can be downloaded where edgeseg is developed and tested, so the
project makes its own: COCO-format images and YouTube-VIS-format videos of four shape
classes. The task is chosen to be learnable by a small MobileInst on a CPU in minutes
(distinct silhouettes, small images) while keeping what makes segmentation hard:
textures (solid, stripes, noise), clutter backgrounds (gradients, blotches, sensor
noise), occlusion (only the *visible* part of an object is annotated), objects of all
three COCO size buckets, and in videos motion, bounces, and objects entering and
leaving the frame.

Everything is drawn with numpy over each shape's bounding box (no per-pixel Python
loops). Each image / video has its own random stream derived from ``(seed, split,
index)``, so the same seed gives byte-identical files, and changing ``--train`` does not
change the val images.

Layout written by :func:`generate` (see ``LAYOUT``)::

    DIR/synth.json                          config + per-split statistics
    DIR/coco/{train,val}/000000.png         images
    DIR/coco/annotations/{train,val}.json   COCO instances (uncompressed RLE, iscrowd 0)
    DIR/ytvis/JPEGImages/<split>_0000/00000.jpg
    DIR/ytvis/annotations/{train,val}.json  YouTube-VIS (per-frame RLE or null)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.data.rle import bbox_of, encode_uncompressed
from edgeseg.errors import EdgesegError

CLASSES: tuple[str, ...] = ("circle", "triangle", "rectangle", "star")
TEXTURES: tuple[str, ...] = ("solid", "stripes", "noise")
SPLITS: tuple[str, ...] = ("train", "val")
MARKER = "synth.json"  # marks a folder as ours and lists its files (utils/outputs.py)

LAYOUT = {
    "coco_images": "coco/{split}",
    "coco_annotations": "coco/annotations/{split}.json",
    "ytvis_frames": "ytvis/JPEGImages",
    "ytvis_annotations": "ytvis/annotations/{split}.json",
}

# COCO's size buckets (pixel area of the mask): small < 32^2 <= medium < 96^2 <= large.
COCO_SMALL, COCO_MEDIUM = 32 ** 2, 96 ** 2
# Full (unoccluded) shape areas drawn per bucket. Kept inside COCO's buckets with a margin
# so that, after occlusion and border clipping, every bucket still has a fair share.
AREA_RANGES = {"small": (200.0, 900.0), "medium": (1400.0, 8000.0), "large": (10500.0, 24000.0)}
BUCKET_WEIGHTS = {"small": 0.35, "medium": 0.40, "large": 0.25}
MAX_AREA_FRACTION = 0.40  # no single shape covers more than this share of the image

# An object stays annotated only while enough of it shows: placement rejects positions
# that would hide more than (1 - KEEP_VISIBLE) of an earlier object, and anything left
# with fewer pixels than this (slivers at borders) is dropped from the annotations.
KEEP_VISIBLE = 0.35
MIN_VISIBLE_PIXELS = 20
MIN_VISIBLE_PIXELS_VIDEO = 4  # a video frame shows an object from 4 visible pixels on
PLACEMENT_TRIES = 8
JPEG_QUALITY = 92


@dataclass(frozen=True)
class SynthConfig:
    train: int = 200
    val: int = 50
    videos: int = 8  # training videos
    val_videos: int = 4
    frames: int = 12
    height: int = 256
    width: int = 256
    seed: int = 0
    max_objects: int = 5

    def validate(self) -> None:
        for name in ("train", "val", "videos", "val_videos"):
            if getattr(self, name) < 0:
                raise EdgesegError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}",
                                   "pass a non-negative count")
        if self.train + self.val + self.videos + self.val_videos == 0:
            raise EdgesegError("nothing to generate: every count is 0",
                               "ask for some images (--train/--val) or videos (--videos/--val-videos)")
        if min(self.height, self.width) < 48:
            raise EdgesegError(f"image size {self.height}x{self.width} is too small for shapes",
                               "use at least 48x48 (default 256x256)")
        if max(self.height, self.width) > 4096:
            raise EdgesegError(f"image size {self.height}x{self.width} is larger than 4096",
                               "synthetic shapes do not need big images; use e.g. 256x256")
        if self.frames < 2 and (self.videos or self.val_videos):
            raise EdgesegError(f"--frames must be at least 2, got {self.frames}", "use e.g. --frames 12")
        if self.max_objects < 1:
            raise EdgesegError(f"--max-objects must be at least 1, got {self.max_objects}", "use e.g. 5")
        if self.seed < 0:
            raise EdgesegError(f"--seed must be 0 or more, got {self.seed}", "pass a non-negative integer")


@dataclass
class CocoSplitStats:
    split: str
    images: int = 0
    instances: int = 0
    small: int = 0
    medium: int = 0
    large: int = 0
    per_class: dict[str, int] = field(default_factory=dict)


@dataclass
class VideoSplitStats:
    split: str
    videos: int = 0
    frames: int = 0
    tracks: int = 0
    entering: int = 0  # tracks absent in the first frame, visible later
    leaving: int = 0  # tracks visible at some point, absent in the last frame


@dataclass
class SynthReport:
    root: str
    config: dict[str, Any]
    coco: list[CocoSplitStats]
    ytvis: list[VideoSplitStats]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def categories() -> list[dict[str, Any]]:
    """COCO categories: ids 1..K in CLASSES order."""
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)]


# --------------------------------------------------------------------------- shapes
@dataclass
class Texture:
    kind: str
    colour: np.ndarray  # (3,) float, 0..255
    colour2: np.ndarray  # second stripe colour
    period: float = 8.0  # stripes: pixels per light+dark pair
    direction: float = 0.0  # stripes: angle in the object's own frame
    noise: np.ndarray | None = None  # noise: (S, S) tile in object coordinates
    cell: int = 1  # noise: pixels per noise cell


@dataclass
class Shape:
    """A shape in its own frame (centred at 0, unrotated) plus its pose in the image."""

    label: int  # 0-based index into CLASSES
    radii: tuple[float, float] | None  # ellipse semi-axes (circle class)
    vertices: np.ndarray | None  # (K, 2) polygon (other classes)
    extent: float  # radius of a disc that holds the whole shape
    texture: Texture | None
    cx: float = 0.0
    cy: float = 0.0
    angle: float = 0.0


def _polygon_area(v: np.ndarray) -> float:
    x, y = v[:, 0], v[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _unit_geometry(rng: np.random.Generator, label: int):
    """Geometry of roughly unit size; scaled to the wanted area afterwards."""
    name = CLASSES[label]
    if name == "circle":
        # Slightly elliptic at most, so the class stays "round".
        return (1.0, float(rng.uniform(0.8, 1.0))), None
    if name == "triangle":
        base = np.deg2rad(90 + np.arange(3) * 120 + rng.uniform(-8, 8, 3))
        r = rng.uniform(0.85, 1.15, 3)
        return None, np.stack([r * np.cos(base), r * np.sin(base)], axis=1)
    if name == "rectangle":
        aspect = rng.uniform(0.55, 1.8)
        a, b = math.sqrt(aspect), 1 / math.sqrt(aspect)
        return None, np.array([[-a, -b], [a, -b], [a, b], [-a, b]], dtype=np.float64)
    if name == "star":
        inner = rng.uniform(0.4, 0.55)
        ang = np.deg2rad(90 + np.arange(10) * 36)
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        return None, np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1)
    raise AssertionError(name)


def _pick_colour(rng: np.random.Generator, reference: np.ndarray) -> np.ndarray:
    """A colour that stands out from ``reference`` (the local background)."""
    for _ in range(32):
        c = rng.uniform(0, 255, 3)
        if np.abs(c - reference).sum() > 160:
            return c
    return 255.0 - reference


def _make_texture(rng: np.random.Generator, extent: float, reference: np.ndarray) -> Texture:
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    colour = _pick_colour(rng, reference)
    # Second stripe colour: the first pushed towards black or white, so the object keeps
    # its contrast with the background on both stripe phases.
    target = 0.0 if colour.mean() > 127 else 255.0
    colour2 = colour + (target - colour) * rng.uniform(0.45, 0.7)
    tex = Texture(kind, colour, colour2, period=float(rng.uniform(5, 12)),
                  direction=float(rng.uniform(0, np.pi)))
    if kind == "noise":
        tex.cell = int(rng.integers(1, 4))
        side = int(2 * extent / tex.cell) + 3
        tex.noise = rng.normal(0.0, rng.uniform(18, 35), (side, side)).astype(np.float32)
    return tex


def _make_shape(rng: np.random.Generator, label: int, area: float) -> Shape:
    """Geometry and pose; the texture is chosen once the shape has a place (it depends on
    the background under it)."""
    radii, verts = _unit_geometry(rng, label)
    if radii is not None:
        scale = math.sqrt(area / (math.pi * radii[0] * radii[1]))
        radii = (radii[0] * scale, radii[1] * scale)
        extent = max(radii)
    else:
        scale = math.sqrt(area / _polygon_area(verts))
        verts = verts * scale
        extent = float(np.hypot(verts[:, 0], verts[:, 1]).max())
    return Shape(label, radii, verts, extent, texture=None, angle=float(rng.uniform(0, 2 * np.pi)))


def _region(shape: Shape, height: int, width: int):
    """Pixel box around the shape, clipped to the image, with object-frame coordinates."""
    e = shape.extent + 1.0
    x0, x1 = max(0, int(math.floor(shape.cx - e))), min(width, int(math.ceil(shape.cx + e)))
    y0, y1 = max(0, int(math.floor(shape.cy - e))), min(height, int(math.ceil(shape.cy + e)))
    if x0 >= x1 or y0 >= y1:
        return None
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - shape.cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - shape.cy)[:, None]
    c, s = math.cos(shape.angle), math.sin(shape.angle)
    u = c * dx + s * dy  # rotate the image grid into the shape's own frame
    v = -s * dx + c * dy
    return (slice(y0, y1), slice(x0, x1)), u, v


def _inside(shape: Shape, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape.radii is not None:
        rx, ry = shape.radii
        return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    # Even-odd rule, one vectorised pass per edge (stars are not convex).
    verts = shape.vertices
    inside = np.zeros(u.shape, dtype=bool)
    for i in range(len(verts)):
        (x1, y1), (x2, y2) = verts[i], verts[(i + 1) % len(verts)]
        if y1 == y2:
            continue
        crosses = (y1 > v) != (y2 > v)
        x_at = x1 + (v - y1) * ((x2 - x1) / (y2 - y1))
        inside ^= crosses & (u < x_at)
    return inside


def _texture_pixels(tex: Texture, u: np.ndarray, v: np.ndarray, extent: float) -> np.ndarray:
    """Colours of the object's pixels, computed in the object's frame so textures move
    and rotate with it in videos."""
    shape = np.broadcast_shapes(u.shape, v.shape)
    if tex.kind == "stripes":
        t = (u * math.cos(tex.direction) + v * math.sin(tex.direction)) / tex.period
        light = (t - np.floor(t)) < 0.5
        return np.where(light[..., None], tex.colour, tex.colour2).astype(np.float32)
    out = np.broadcast_to(tex.colour.astype(np.float32), shape + (3,)).copy()
    if tex.kind == "noise":
        side = tex.noise.shape[0]
        iu = np.clip(((u + extent) / tex.cell).astype(np.int64), 0, side - 1)
        iv = np.clip(((v + extent) / tex.cell).astype(np.int64), 0, side - 1)
        out += tex.noise[np.broadcast_to(iv, shape), np.broadcast_to(iu, shape)][..., None]
    return out


def _rasterise(shape: Shape, height: int, width: int) -> np.ndarray:
    """Full (unoccluded) HxW mask of the shape, clipped to the image."""
    mask = np.zeros((height, width), dtype=bool)
    reg = _region(shape, height, width)
    if reg is not None:
        box, u, v = reg
        mask[box] = _inside(shape, u, v)
    return mask


def _paint(canvas: np.ndarray, shape: Shape) -> None:
    reg = _region(shape, canvas.shape[0], canvas.shape[1])
    if reg is None:
        return
    box, u, v = reg
    inside = _inside(shape, u, v)
    patch = canvas[box]
    patch[inside] = _texture_pixels(shape.texture, u, v, shape.extent)[inside]


# --------------------------------------------------------------------------- backgrounds
def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Clutter without objects: a colour gradient or soft blotches (float32 HxWx3)."""
    from PIL import Image

    if rng.random() < 0.5:
        c1, c2 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
        theta = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        t = xs * math.cos(theta) + ys * math.sin(theta)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        return (c1 * (1 - t[..., None]) + c2 * t[..., None]).astype(np.float32)
    gh, gw = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    grid = rng.uniform(20, 235, (gh, gw, 3)).astype(np.uint8)
    big = Image.fromarray(grid).resize((width, height), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32)


def _sensor_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    noisy = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _buckets_for(height: int, width: int) -> tuple[list[str], np.ndarray]:
    """Size buckets that fit this image size, with their sampling weights."""
    cap = MAX_AREA_FRACTION * height * width
    names = [b for b in AREA_RANGES if AREA_RANGES[b][0] <= cap]
    w = np.array([BUCKET_WEIGHTS[b] for b in names])
    return names, w / w.sum()


def _sample_area(rng: np.random.Generator, height: int, width: int, cap_fraction: float = MAX_AREA_FRACTION) -> float:
    names, weights = _buckets_for(height, width)
    bucket = names[int(rng.choice(len(names), p=weights))]
    lo, hi = AREA_RANGES[bucket]
    hi = min(hi, cap_fraction * height * width)
    lo = min(lo, hi)
    # Log-uniform: as many shapes near the bottom of a bucket as near its top.
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


# --------------------------------------------------------------------------- images
@dataclass
class RenderedImage:
    image: np.ndarray  # HxWx3 uint8
    labels: list[int]  # 0-based class per annotated object, bottom-to-top drawing order
    masks: list[np.ndarray]  # visible HxW bool mask per annotated object
    full_masks: list[np.ndarray]  # unoccluded masks (clipped to the image), same order


def render_image(rng: np.random.Generator, height: int = 256, width: int = 256,
                 max_objects: int = 5) -> RenderedImage:
    """One image with 1..max_objects shapes; masks are what is visible after occlusion."""
    canvas = _background(rng, height, width)
    bg_sigma = rng.uniform(2, 9)
    n = int(rng.integers(1, max_objects + 1))
    shapes: list[Shape] = []
    full: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    for _ in range(n):
        label = int(rng.integers(len(CLASSES)))
        area = _sample_area(rng, height, width)
        shape = None
        for _attempt in range(PLACEMENT_TRIES):
            cand = _make_shape(rng, label, area)
            # Centre far enough inside that at least about half the shape shows.
            m = min(cand.extent * 0.5, width / 2), min(cand.extent * 0.5, height / 2)
            cand.cx = float(rng.uniform(m[0], width - m[0]))
            cand.cy = float(rng.uniform(m[1], height - m[1]))
            mask = _rasterise(cand, height, width)
            if mask.sum() < MIN_VISIBLE_PIXELS:
                continue
            # Reject positions that would bury an earlier object: annotations must stay
            # recognisable, and an object the model cannot see teaches it nothing.
            if any((vis & ~mask).sum() < KEEP_VISIBLE * f.sum() for vis, f in zip(visible, full)):
                continue
            shape = cand
            break
        if shape is None:
            continue
        local = canvas[int(min(max(shape.cy, 0), height - 1)), int(min(max(shape.cx, 0), width - 1))]
        shape.texture = _make_texture(rng, shape.extent, local)
        visible = [vis & ~mask for vis in visible]
        shapes.append(shape)
        full.append(mask)
        visible.append(mask.copy())
    for shape in shapes:
        _paint(canvas, shape)
    image = _sensor_noise(rng, canvas, bg_sigma)
    keep = [i for i, vis in enumerate(visible) if vis.sum() >= MIN_VISIBLE_PIXELS]
    return RenderedImage(image, [shapes[i].label for i in keep], [visible[i] for i in keep],
                         [full[i] for i in keep])


# --------------------------------------------------------------------------- videos
@dataclass
class MovingObject:
    shape: Shape
    path: np.ndarray  # (T, 2) centre per frame
    spin: float  # radians per frame
    motion: str  # "bounce" | "cross"


@dataclass
class RenderedVideo:
    frames: list[np.ndarray]  # T x (HxWx3 uint8)
    labels: list[int]  # 0-based class per track
    masks: list[list[np.ndarray | None]]  # per track, per frame: visible mask or None
    motions: list[str]


def _bounce_path(rng: np.random.Generator, extent: float, frames: int, height: int, width: int) -> np.ndarray:
    """Linear motion that reflects off the frame borders (the shape stays inside)."""
    lo_x, hi_x = min(extent, width / 2), max(width - extent, width / 2)
    lo_y, hi_y = min(extent, height / 2), max(height - extent, height / 2)
    pos = np.array([rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)])
    speed = rng.uniform(0.01, 0.03) * (width + height)
    theta = rng.uniform(0, 2 * np.pi)
    vel = speed * np.array([math.cos(theta), math.sin(theta)])
    lo, hi = np.array([lo_x, lo_y]), np.array([hi_x, hi_y])
    path = np.zeros((frames, 2))
    for t in range(frames):
        path[t] = pos
        pos = pos + vel
        for k in range(2):
            if hi[k] <= lo[k]:
                pos[k] = lo[k]
                continue
            if pos[k] < lo[k]:
                pos[k], vel[k] = 2 * lo[k] - pos[k], -vel[k]
            elif pos[k] > hi[k]:
                pos[k], vel[k] = 2 * hi[k] - pos[k], -vel[k]
    return path


def _cross_path(rng: np.random.Generator, extent: float, frames: int, height: int, width: int,
                must_enter_and_leave: bool) -> np.ndarray:
    """Straight across the frame: starts outside one border, exits through the opposite one.

    With ``must_enter_and_leave`` it is outside in the first and in the last frame, so the
    data always holds objects that appear and disappear mid-video.
    """
    horizontal = rng.random() < 0.5
    along, across = (width, height) if horizontal else (height, width)
    distance = along + 2 * extent
    if must_enter_and_leave:
        # Entering at frame `enter` (just outside), reaching the far side `span` frames later.
        span = rng.uniform(0.5, 0.85) * (frames - 1)
        enter = rng.uniform(0.5, max(0.5, frames - 1 - span - 0.5))
    else:
        span = rng.uniform(0.5, 1.3) * frames
        enter = rng.uniform(-0.5 * span, 0.5 * frames)
    speed = distance / span
    t = np.arange(frames, dtype=np.float64)
    a = -extent + speed * (t - enter)
    offset = rng.uniform(min(extent, across / 2), max(across - extent, across / 2))
    b = offset + rng.uniform(-0.3, 0.3) * speed * (t - enter)  # a little drift
    if rng.random() < 0.5:  # travel in the other direction
        a = along - a
    return np.stack([a, b], axis=1) if horizontal else np.stack([b, a], axis=1)


def render_video(rng: np.random.Generator, frames: int = 12, height: int = 256, width: int = 256,
                 max_objects: int = 4) -> RenderedVideo:
    """A static cluttered scene with 2..max_objects moving shapes."""
    background = _background(rng, height, width)
    sigma = rng.uniform(2, 8)
    n = int(rng.integers(min(2, max_objects), max(2, min(max_objects, 4)) + 1))
    objects: list[MovingObject] = []
    for i in range(n):
        label = int(rng.integers(len(CLASSES)))
        # Smaller cap than stills: a huge shape leaves no room to move.
        area = _sample_area(rng, height, width, cap_fraction=0.2)
        shape = _make_shape(rng, label, area)
        shape.texture = _make_texture(rng, shape.extent, background.mean(axis=(0, 1)))
        cross = (i == 0 and frames >= 6) or rng.random() < 0.35
        if cross:
            path = _cross_path(rng, shape.extent, frames, height, width, must_enter_and_leave=(i == 0))
        else:
            path = _bounce_path(rng, shape.extent, frames, height, width)
        objects.append(MovingObject(shape, path, float(rng.uniform(-0.08, 0.08)), "cross" if cross else "bounce"))
    order = rng.permutation(n)  # drawing order = depth; independent of motion type
    objects = [objects[i] for i in order]

    out_frames: list[np.ndarray] = []
    per_track: list[list[np.ndarray | None]] = [[] for _ in objects]
    angle0 = [o.shape.angle for o in objects]
    for t in range(frames):
        canvas = background.copy()
        masks = []
        for k, obj in enumerate(objects):
            obj.shape.cx, obj.shape.cy = float(obj.path[t, 0]), float(obj.path[t, 1])
            obj.shape.angle = angle0[k] + obj.spin * t
            masks.append(_rasterise(obj.shape, height, width))
            _paint(canvas, obj.shape)
        covered = np.zeros((height, width), dtype=bool)
        for k in range(len(objects) - 1, -1, -1):  # top-most first
            vis = masks[k] & ~covered
            covered |= masks[k]
            per_track[k].append(vis if vis.sum() >= MIN_VISIBLE_PIXELS_VIDEO else None)
        out_frames.append(_sensor_noise(rng, canvas, sigma))
    keep = [k for k, m in enumerate(per_track) if any(x is not None for x in m)]
    return RenderedVideo(out_frames, [objects[k].shape.label for k in keep], [per_track[k] for k in keep],
                         [objects[k].motion for k in keep])


# --------------------------------------------------------------------------- writers
def _rng(seed: int, kind: int, split: int, index: int) -> np.random.Generator:
    # One independent stream per item: reproducible, and counts do not shift other items.
    return np.random.default_rng([seed, kind, split, index])


def _dump_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Compact and key-ordered: the files are byte-identical for the same seed.
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n", encoding="utf-8")


def _info(cfg: SynthConfig, what: str) -> dict[str, Any]:
    return {"description": f"edgeseg synthetic shapes ({what})", "seed": cfg.seed,
            "url": "https://github.com/edgeseg", "generator": "edgeseg.data.synthetic"}


def _write_coco_split(root: Path, split: str, count: int, cfg: SynthConfig, progress) -> CocoSplitStats:
    from PIL import Image

    image_dir = root / LAYOUT["coco_images"].format(split=split)
    image_dir.mkdir(parents=True, exist_ok=True)
    stats = CocoSplitStats(split, per_class={c: 0 for c in CLASSES})
    images, annotations = [], []
    for idx in range(count):
        r = render_image(_rng(cfg.seed, 0, SPLITS.index(split), idx), cfg.height, cfg.width, cfg.max_objects)
        name = f"{idx:06d}.png"
        Image.fromarray(r.image).save(image_dir / name)  # sensor noise: PNG levels barely differ
        images.append({"id": idx + 1, "file_name": name, "width": cfg.width, "height": cfg.height})
        for label, mask in zip(r.labels, r.masks):
            area = int(mask.sum())
            annotations.append({
                "id": len(annotations) + 1, "image_id": idx + 1, "category_id": label + 1,
                "segmentation": encode_uncompressed(mask), "area": float(area),
                "bbox": bbox_of(mask), "iscrowd": 0,
            })
            stats.instances += 1
            stats.per_class[CLASSES[label]] += 1
            if area < COCO_SMALL:
                stats.small += 1
            elif area < COCO_MEDIUM:
                stats.medium += 1
            else:
                stats.large += 1
        stats.images += 1
        progress()
    _dump_json(root / LAYOUT["coco_annotations"].format(split=split), {
        "info": _info(cfg, f"COCO {split}"), "licenses": [], "images": images,
        "annotations": annotations, "categories": categories(),
    })
    return stats


def _write_ytvis_split(root: Path, split: str, count: int, cfg: SynthConfig, progress) -> VideoSplitStats:
    from PIL import Image

    frame_root = root / LAYOUT["ytvis_frames"]
    stats = VideoSplitStats(split)
    videos, annotations = [], []
    for idx in range(count):
        v = render_video(_rng(cfg.seed, 1, SPLITS.index(split), idx), cfg.frames, cfg.height, cfg.width,
                         min(cfg.max_objects, 4))
        name = f"{split}_{idx:04d}"
        (frame_root / name).mkdir(parents=True, exist_ok=True)
        file_names = []
        for t, frame in enumerate(v.frames):
            Image.fromarray(frame).save(frame_root / name / f"{t:05d}.jpg", quality=JPEG_QUALITY)
            file_names.append(f"{name}/{t:05d}.jpg")
        vid = idx + 1
        videos.append({"id": vid, "file_names": file_names, "width": cfg.width, "height": cfg.height,
                       "length": cfg.frames})
        for label, masks in zip(v.labels, v.masks):
            annotations.append({
                "id": len(annotations) + 1, "video_id": vid, "category_id": label + 1, "iscrowd": 0,
                "width": cfg.width, "height": cfg.height, "length": 1,
                "segmentations": [None if m is None else encode_uncompressed(m) for m in masks],
                "areas": [None if m is None else float(m.sum()) for m in masks],
                "bboxes": [None if m is None else bbox_of(m) for m in masks],
            })
            stats.tracks += 1
            stats.entering += int(masks[0] is None)
            stats.leaving += int(masks[-1] is None)
        stats.videos += 1
        stats.frames += cfg.frames
        progress()
    _dump_json(root / LAYOUT["ytvis_annotations"].format(split=split), {
        "info": _info(cfg, f"YouTube-VIS {split}"), "licenses": [], "videos": videos,
        "annotations": annotations, "categories": categories(),
    })
    return stats


def generate(out: str | Path, cfg: SynthConfig = SynthConfig(), overwrite: bool = False) -> SynthReport:
    """Write the synthetic COCO + YouTube-VIS dataset to ``out`` (atomically)."""
    from edgeseg.utils.progress import track

    cfg.validate()
    from edgeseg.utils import outputs

    out = Path(out)
    # An earlier synthetic dataset there is replaced (its recorded files only); any other
    # non-empty folder needs --overwrite, and even then no file of yours is touched.
    checked = outputs.check_output_folder(out, outputs.SYNTH, overwrite=overwrite)
    start = time.perf_counter()
    total = cfg.train + cfg.val + cfg.videos + cfg.val_videos
    ticks = iter(track(range(total), "synthesising data", total=total))

    def progress() -> None:
        next(ticks, None)

    try:
        report = _generate_into(out, cfg, progress, checked.owned_now)
    except OSError as e:  # read-only disk, no space, a file where a folder should be...
        raise EdgesegError(f"cannot write the dataset to {out}: {e.strerror or e}",
                           "choose a writable -o folder with free space") from e
    next(ticks, None)  # let the progress bar close
    report.seconds = time.perf_counter() - start
    return report


def _generate_into(out: Path, cfg: SynthConfig, progress, owned) -> SynthReport:
    from edgeseg.utils.atomic import atomic_directory

    coco_stats: list[CocoSplitStats] = []
    vis_stats: list[VideoSplitStats] = []
    with atomic_directory(out, owned=owned) as tmp:
        for split, n in (("train", cfg.train), ("val", cfg.val)):
            if n:
                coco_stats.append(_write_coco_split(tmp, split, n, cfg, progress))
        for split, n in (("train", cfg.videos), ("val", cfg.val_videos)):
            if n:
                vis_stats.append(_write_ytvis_split(tmp, split, n, cfg, progress))
        report = SynthReport(str(out), asdict(cfg), coco_stats, vis_stats)
        marker = report.to_dict()
        marker.pop("seconds")
        marker.pop("root")  # keep synth.json identical wherever the data is written
        marker["layout"] = LAYOUT
        marker["classes"] = list(CLASSES)
        # Every file written: all that a later `data synth` here may replace or remove.
        marker["files"] = sorted(q.relative_to(tmp).as_posix() for q in tmp.rglob("*") if q.is_file())
        _dump_json(tmp / MARKER, marker)
    return report
