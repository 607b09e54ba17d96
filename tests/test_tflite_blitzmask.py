"""BlitzMask (zoo test variant, 96x96) through `edgeseg export --to tflite`: every depthwise
convolution stays a DEPTHWISE_CONV_2D (onnx2tf 1.29 built the FPN's, which read an Add, as
Keras grouped convolutions and the SavedModel could not even be written), FP32 parity with
ONNX Runtime, and the decoder on the LiteRT outputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.cli import main
from edgeseg.runtimes.base import load_runtime
from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
from tests.tflite_helpers import cosine, first_image, synth_images

pytestmark = pytest.mark.tflite


def _cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("blitzmask-tflite")
    images = synth_images(root / "synth", size=96, count=4)
    out = root / "bm"
    assert _cli("export", "blitzmask_test", "--input-size", 96, "--num-classes", 4, "-o", out, "--to", "tflite") == 0
    return out, images


def test_depthwise_convolutions_stay_depthwise(exported):
    import onnx

    from edgeseg.export.tflite.flatbuffer import describe

    out, _ = exported
    proto = onnx.load(str(out / "blitzmask_test.onnx"))
    depthwise = [n for n in proto.graph.node if n.op_type == "Conv"
                 and next(a.i for a in n.attribute if a.name == "group") > 1]
    ops = describe((out / "blitzmask_test.fp32.tflite").read_bytes()).op_types()
    assert ops.count("DEPTHWISE_CONV_2D") == len(depthwise) > 0
    assert "TRANSPOSE" not in ops


def test_fp32_matches_onnxruntime_and_decodes(exported):
    from edgeseg.models.blitzmask.decode import decode

    out, images = exported
    onnx_path = out / "blitzmask_test.onnx"
    x = first_image(images, onnx_path)
    ref = OnnxRuntimeRuntime(onnx_path).run({"image": x})
    with load_runtime(out / "blitzmask_test.fp32.tflite") as rt:
        got = rt.run({"image": x})
    assert set(got) == set(ref) == {"heatmap", "size", "coefficients", "spanning_set"}
    for name in ref:
        assert got[name].shape == ref[name].shape, name
        assert cosine(got[name], ref[name]) > 0.9999, name
    a = decode(got, (96, 96), score_threshold=0.0, max_detections=5)
    b = decode(ref, (96, 96), score_threshold=0.0, max_detections=5)
    assert [d.label for d in a] == [d.label for d in b]
    assert all(np.mean(da.mask != db.mask) < 0.01 for da, db in zip(a, b))
