"""Video instance segmentation as host-side post-processing.

``kernel_reuse``: MobileInst's tracker (keyframe kernels reused for T-1 frames, kernels of
consecutive keyframes associated by cosine similarity); ``associate``: the one-to-one
matching as a pure function; ``masks``: kernels x mask features -> frame-size masks;
``video_io``: frames in (video file or folder), overlays out; ``results``: YouTube-VIS
results JSON; ``sweep``: the reuse sweep (VIS AP and latency per T).

Nothing here imports torch: the tracker's per-frame work is numpy (plus PIL for the
final resize), light enough for a phone's host side.
"""
