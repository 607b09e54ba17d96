"""Session fixtures for the tracker's end-to-end tests: a tiny exported MobileInst and
synthetic moving-shapes videos. Import the fixtures into a test module to use them."""

from __future__ import annotations

import pytest

INPUT = 64  # mobileinst_test at 64x64: an 8x8 mask grid, exports in seconds
FRAME_HW = (64, 96)  # frames are not the network size, so masks must be resized back


@pytest.fixture(scope="session")
def tiny_mobileinst(tmp_path_factory):
    """Artifact folder with the frame and features graphs of mobileinst_test (4 classes)."""
    import torch

    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    torch.manual_seed(0)
    model = create_model("mobileinst_test", num_classes=4, input_size=(INPUT, INPUT)).eval()
    return export_onnx(model, tmp_path_factory.mktemp("track_art") / "mobileinst_test")


@pytest.fixture(scope="session")
def tiny_mobileinst_frame_only(tmp_path_factory):
    import torch

    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    torch.manual_seed(0)
    model = create_model("mobileinst_test", num_classes=4, input_size=(INPUT, INPUT)).eval()
    return export_onnx(model, tmp_path_factory.mktemp("track_art1") / "frame_only", graphs=("frame",))


@pytest.fixture(scope="session")
def synth_videos(tmp_path_factory):
    """Two 7-frame YouTube-VIS validation videos of moving shapes at 64x96."""
    from edgeseg.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("track_data") / "shapes"
    generate(root, SynthConfig(train=0, val=0, videos=0, val_videos=2, frames=7, height=FRAME_HW[0],
                               width=FRAME_HW[1], seed=3, max_objects=3))
    return root / "ytvis"
