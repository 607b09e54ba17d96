"""ONNX Runtime's profile rolled up by component tags (the per-component cost table)."""

from __future__ import annotations

import pytest


def test_profile_rolls_every_kernel_up_to_a_component(tmp_path):
    import torch

    from edgeseg.benchmark.component_profile import LAYOUT, profile_components
    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = create_model("yolact_edge_test").eval()
        path = export_onnx(model, tmp_path / "ye", graphs=("frame",)).onnx_path
    finally:
        torch.set_num_threads(before)
    prof = profile_components(path, runs=3, warmup=1)
    assert prof.unmatched_nodes == []
    assert set(prof.component_ms) - {LAYOUT} == {"backbone", "fpn", "protonet", "prediction_head"}
    assert list(prof.component_ms)[:4] == ["backbone", "fpn", "protonet", "prediction_head"]  # pipeline order
    assert sum(prof.shares().values()) == pytest.approx(100.0)
    assert all(ms > 0 for ms in prof.component_ms.values())
    assert "Conv" in prof.op_ms["backbone"]
    assert "| backbone |" in prof.markdown()


def test_profile_refuses_a_missing_file(tmp_path):
    from edgeseg.benchmark.component_profile import profile_components
    from edgeseg.errors import EdgesegError

    with pytest.raises(EdgesegError, match="does not exist"):
        profile_components(tmp_path / "nope.onnx")
