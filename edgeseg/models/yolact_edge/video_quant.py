"""Quantized video graphs for a quantized frame graph (work in progress)."""
