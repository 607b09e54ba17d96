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
    :class:`~edgeseg.track.video_io.OverlayWriter`) when given.

    A delayed (near-online) tracker gives a frame's instances only once they are final:
    its frames wait here, in order, until then (at most a clip's worth of frames).
    """
    from edgeseg.track.video_io import draw_overlay

    tracker.reset()
    delayed = bool(getattr(tracker, "delayed", False))
    waiting: dict[int, np.ndarray] = {}

    def draw(ready) -> None:
        for item in ready:
            frame = waiting.pop(item.index)
            if overlay is not None:
                overlay.write(draw_overlay(frame, item.instances, class_names))

    for index, frame in enumerate(progress(frames, description, total=total)):
        if delayed:
            waiting[index] = frame
            draw(tracker.step(frame))
            continue
        instances = tracker.step(frame)
        if overlay is not None:
            overlay.write(draw_overlay(frame, instances, class_names))
    if delayed and tracker.frame_index:
        draw(tracker.flush())
    return tracker.finish()
