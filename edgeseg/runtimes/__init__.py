"""Runtimes: one interface (load, inputs, outputs, run) over every backend."""

from edgeseg.runtimes.base import Runtime, TensorInfo, load_runtime  # noqa: F401
