"""Session fixtures for the tracker's end-to-end tests: a tiny exported MobileInst and
synthetic moving-shapes videos. Import the fixtures into a test module to use them."""

from __future__ import annotations

import pytest

# pytest makes one fixture definition per module that imports these, so a session-scoped
# fixture would still run once per module: the results are cached here to build once.
_BUILT: dict[str, object] = {}

INPUT = 64  # mobileinst_test at 64x64: an 8x8 mask grid, exports in seconds
FRAME_HW = (64, 96)  # frames are not the network size, so masks must be resized back


@pytest.fixture(scope="session")
def tiny_mobileinst(tmp_path_factory):
    """Artifact folder with the frame and features graphs of mobileinst_test (4 classes)."""
    if "both" not in _BUILT:
        _BUILT["both"] = _export(tmp_path_factory, "track_art", "mobileinst_test", None)
    return _BUILT["both"]


@pytest.fixture(scope="session")
def tiny_mobileinst_frame_only(tmp_path_factory):
    if "frame" not in _BUILT:
        _BUILT["frame"] = _export(tmp_path_factory, "track_art1", "frame_only", ("frame",))
    return _BUILT["frame"]


def _export(tmp_path_factory, folder: str, name: str, graphs):
    import torch

    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    torch.manual_seed(0)
    model = create_model("mobileinst_test", num_classes=4, input_size=(INPUT, INPUT)).eval()
    return export_onnx(model, tmp_path_factory.mktemp(folder) / name, graphs=graphs)


@pytest.fixture(scope="session")
def synth_videos(tmp_path_factory):
    """Two 7-frame YouTube-VIS validation videos of moving shapes at 64x96."""
    if "videos" in _BUILT:
        return _BUILT["videos"]
    from edgeseg.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("track_data") / "shapes"
    generate(root, SynthConfig(train=0, val=0, videos=0, val_videos=2, frames=7, height=FRAME_HW[0],
                               width=FRAME_HW[1], seed=3, max_objects=3))
    _BUILT["videos"] = root / "ytvis"
    return _BUILT["videos"]
