"""YouTube-VIS videos -> augmented, normalised training clips (families with
``train_data="ytvis"``, whose models take a clip of T frames).

A sample is a clip of T frames of one video: a random start and a random frame step
(1..``max_frame_step``; consecutive frames most of the time, as near-online inference
sees them), every frame brought to the network input exactly as inference does
(:func:`edgeseg.data.preprocess.preprocess`). One augmentation per *clip*, the same for
all its frames (IFC's "choice_by_clip" scale and "flip_by_clip"): scale jitter (zoom in:
random crop; zoom out: placed on a zero canvas) and a horizontal flip.

Targets are per object over the clip: ``labels [M]``, ``masks [M, T, H, W]`` (soft,
all-zero on frames where the object is absent) and ``ids [M]`` (the track ids). Objects
that show fewer than ``min_pixels`` pixels on every frame of the clip are dropped.

Order and augmentation are functions of ``(seed, iteration)`` only (as
:class:`~edgeseg.train.data.TrainData`), so a resumed run sees the same clips.
"""

from __future__ import annotations

import numpy as np
import torch

from edgeseg.data.preprocess import InputSpec, preprocess
from edgeseg.data.ytvis import YtvisDataset
from edgeseg.errors import EdgesegError
from edgeseg.train.data import AugmentConfig, EpochOrder, _place, _resize


def check_trainable_videos(dataset: YtvisDataset, clip_length: int) -> None:
    """Refuse video datasets training cannot learn from, with the reason."""
    if not any(dataset.tracks(v.id) for v in dataset.videos):
        raise EdgesegError(f"{dataset.source} has {len(dataset)} videos but no annotated tracks",
                           "train on an annotated dataset (e.g. `edgeseg data synth -o DIR --videos 100`, then "
                           "DIR/ytvis/annotations/train.json)")
    if dataset.frames_dir is None:
        raise EdgesegError("no frame folder was given for the training videos",
                           "pass --images DIR/ytvis/JPEGImages")
    shortest = min(v.length for v in dataset.videos)
    if shortest < 1:
        raise EdgesegError(f"{dataset.source} has a video without frames", "give every video at least one frame")
    if clip_length < 1:
        raise EdgesegError(f"clip length {clip_length} is not positive", "use e.g. 5")


def _track_masks(track, frames: list[int], height: int, width: int) -> np.ndarray:
    """``[T, H, W]`` float masks of one track on the chosen frames (zeros where absent)."""
    from edgeseg.data.rle import decode

    out = np.zeros((len(frames), height, width), dtype=np.float32)
    for i, f in enumerate(frames):
        seg = track.segmentations[f]
        if seg is not None:
            out[i] = decode(seg, height, width)
    return out


class ClipTrainData(EpochOrder):
    """A YouTube-VIS dataset served as augmented batches of clips for iteration ``i``."""

    def __init__(self, dataset: YtvisDataset, spec: InputSpec, clip_length: int,
                 augment: AugmentConfig | None = None, seed: int = 0, max_frame_step: int = 2):
        check_trainable_videos(dataset, clip_length)
        self.dataset = dataset
        self.spec = spec.frame_spec()
        self.clip_length = int(clip_length)
        self.augment = augment or AugmentConfig()
        self.augment.validate()
        if self.augment.crop is not None or self.augment.zoom > 0:
            raise EdgesegError("--crop / --zoom are image-training options; clips train at the full input",
                               "drop --crop and --zoom for video families")
        self.seed = int(seed)
        self.max_frame_step = max(1, int(max_frame_step))

    def __len__(self) -> int:
        return len(self.dataset)

    # ---------------------------------------------------------------- order (EpochOrder.indices: video indices)
    def frame_indices(self, length: int, rng: np.random.Generator | None) -> list[int]:
        """T frame indices of a video of ``length`` frames (repeating the last ones when the
        video is shorter than the clip); the first T frames without ``rng``."""
        t = self.clip_length
        step = 1
        if rng is not None and self.max_frame_step > 1 and rng.random() < 0.5:
            step = int(rng.integers(2, self.max_frame_step + 1))
        while step > 1 and (t - 1) * step >= length:
            step -= 1
        span = (t - 1) * step + 1
        start = int(rng.integers(0, max(0, length - span) + 1)) if rng is not None else 0
        return [min(start + i * step, length - 1) for i in range(t)]

    # ---------------------------------------------------------------- samples
    def sample(self, index: int, rng: np.random.Generator | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One clip ``[T, 3, H, W]`` and its targets; no augmentation when ``rng`` is None."""
        video = self.dataset.videos[index]
        frames = self.frame_indices(video.length, rng)
        hw = (self.spec.height, self.spec.width)
        images = torch.from_numpy(np.concatenate([preprocess(self.dataset.load_frame(video, f), self.spec)
                                                  for f in frames]))
        if self.spec.layout != "NCHW":
            images = images.permute(0, 3, 1, 2)
        tracks = [t for t in self.dataset.tracks(video.id) if not t.iscrowd]
        t_len = len(frames)
        if tracks:
            full = np.stack([_track_masks(tr, frames, video.height, video.width) for tr in tracks])
            masks = torch.from_numpy(full).reshape(len(tracks) * t_len, video.height, video.width)
            masks = _resize(masks, hw)
        else:
            masks = torch.zeros((0, *hw))
        labels = torch.tensor([tr.label for tr in tracks], dtype=torch.int64)
        ids = torch.tensor([tr.id for tr in tracks], dtype=torch.int64)

        if rng is not None:
            a = self.augment
            scale = float(rng.uniform(a.scale_min, a.scale_max))
            if abs(scale - 1.0) > 1e-6:
                size = (max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale)))
                top = int(rng.integers(min(0, hw[0] - size[0]), max(0, hw[0] - size[0]) + 1))
                left = int(rng.integers(min(0, hw[1] - size[1]), max(0, hw[1] - size[1]) + 1))
                t, c = images.shape[:2]
                images = _place(_resize(images.reshape(t * c, *hw), size), hw, top, left).reshape(t, c, *hw)
                if masks.shape[0]:
                    masks = _place(_resize(masks, size), hw, top, left)
            if rng.random() < a.flip:
                images = images.flip(-1)
                masks = masks.flip(-1)
        masks = masks.reshape(len(tracks), t_len, *hw)
        if len(tracks):
            visible = ((masks > 0.5).flatten(2).sum(-1) >= self.augment.min_pixels).any(dim=1)
            masks, labels, ids = masks[visible], labels[visible], ids[visible]
        return images.contiguous(), {"labels": labels, "masks": masks.contiguous(), "ids": ids}

    def batch(self, iteration: int, batch_size: int) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """Batch ``iteration``: clips ``[B, T, 3, H, W]`` and one target dict per clip."""
        clips, targets = [], []
        for j, index in enumerate(self.indices(iteration, batch_size)):
            rng = np.random.default_rng([self.seed, 1, iteration, j])
            clip, target = self.sample(index, rng)
            clips.append(clip)
            targets.append(target)
        return torch.stack(clips), targets
