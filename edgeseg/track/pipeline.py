"""Run a tracker over one video's frames (with a progress bar and an optional overlay)."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from edgeseg.track.kernel_reuse import KernelReuseTracker, VideoResult
from edgeseg.utils.progress import track as progress


def track_video(tracker: KernelReuseTracker, frames: Iterable[np.ndarray], *, total: int | None = None,
                overlay=None, class_names: list[str] | None = None,
                description: str = "tracking") -> VideoResult:
    """Feed every frame to a fresh tracker state; draw each frame into ``overlay`` (an
    :class:`~edgeseg.track.video_io.OverlayWriter`) when given."""
    from edgeseg.track.video_io import draw_overlay

    tracker.reset()
    for frame in progress(frames, description, total=total):
        instances = tracker.step(frame)
        if overlay is not None:
            overlay.write(draw_overlay(frame, instances, class_names))
    return tracker.finish()
