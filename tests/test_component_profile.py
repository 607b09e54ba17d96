"""ONNX Runtime's kernel profile rolled up by component (benchmarks/where_time_goes.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.benchmark.component_profile import attribute_kernels, least_disturbed, profile_components, roll_up
from edgeseg.errors import EdgesegError
from edgeseg.models.base import ComponentMap

NAMES = {"/backbone/conv1/Conv": "backbone", "/backbone/conv1/Relu_output_0": "backbone",
         "/fpn/Add": "fpn", "/head/out/Conv": "head"}
CMAP = ComponentMap({"backbone": "backbone", "fpn": "fpn", "head": "head"})


def _event(name, ts, dur, cat="Node"):
    return {"cat": cat, "name": name, "ts": ts, "dur": dur}


def test_kernels_are_attributed_by_tag_scope_and_neighbour():
    kernels = ["/backbone/conv1/Relu_output_0_nchwc_kernel_time",   # fused, named after its output
               "ReorderOutput_token_3_kernel_time",                  # serves the producer before it
               "ReorderInput_kernel_time",                           # serves the consumer after it
               "/fpn/Add_kernel_time",
               "/head/branch/Conv_output_0_kernel_time",             # not a tagged name: by scope
               "/head/out/Conv_kernel_time"]
    assert attribute_kernels(kernels, NAMES, CMAP) == ["backbone", "backbone", "fpn", "fpn", "head", "head"]


def test_roll_up_sums_each_run_and_skips_warm_up():
    events = [_event("model_run", 0, 100, "Session"), _event("model_run", 200, 100, "Session"),
              _event("/backbone/conv1/Conv_kernel_time", 1, 40), _event("ReorderOutput_kernel_time", 45, 10),
              _event("/fpn/Add_kernel_time", 60, 20), _event("/head/out/Conv_kernel_time", 85, 10),
              _event("/backbone/conv1/Conv_kernel_time", 201, 30), _event("/head/out/Conv_kernel_time", 240, 5)]
    both = roll_up(events, NAMES, CMAP)
    assert both == {"backbone": [0.05, 0.03], "fpn": [0.02, 0.0], "head": [0.01, 0.005]}
    assert roll_up(events, NAMES, CMAP, skip_runs=1) == {"backbone": [0.03], "fpn": [0.0], "head": [0.005]}
    with pytest.raises(EdgesegError, match="no model runs"):
        roll_up([], NAMES, CMAP)


def test_least_disturbed_sums_each_kernels_shortest_run():
    # Run 2 is disturbed in its conv, run 1 in its add; a kernel's best is taken per kernel,
    # the second Conv of a run (same name) being a kernel of its own.
    events = [_event("model_run", 0, 100, "Session"), _event("model_run", 200, 100, "Session"),
              _event("/backbone/conv1/Conv_kernel_time", 1, 40), _event("/backbone/conv1/Conv_kernel_time", 42, 8),
              _event("/fpn/Add_kernel_time", 60, 30),
              _event("/backbone/conv1/Conv_kernel_time", 201, 70), _event("/backbone/conv1/Conv_kernel_time", 272, 6),
              _event("/fpn/Add_kernel_time", 280, 10)]
    best = least_disturbed(events, NAMES, CMAP)
    assert best == pytest.approx({"backbone": 0.046, "fpn": 0.01})
    assert least_disturbed(events, NAMES, CMAP, skip_runs=1) == pytest.approx({"backbone": 0.076, "fpn": 0.01})


def test_a_real_profile_covers_every_component(tmp_path):
    import torch

    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    torch.manual_seed(0)
    onnx_path = export_onnx(create_model("blitzmask_test").eval(), tmp_path / "bm").onnx_path
    feed = {"image": np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)}
    p = profile_components(onnx_path, feeds=feed, runs=3, warmup=1)
    assert [c.component for c in p.components] == ["backbone", "fpn", "head"]
    assert all(c.p50_ms > 0 and c.kernels > 0 for c in p.components)
    assert sum(c.share for c in p.components) == pytest.approx(1.0)
    assert sum(c.best_share for c in p.components) == pytest.approx(1.0)
    assert all(0 < c.best_ms <= c.p50_ms for c in p.components)
    assert all(len(v) == 3 for v in p.per_run_ms.values())
    assert "| backbone |" in p.table()
