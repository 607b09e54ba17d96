"""MobileInst's decoder (NumPy), on hand-made outputs with known answers; decoders by family."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgeseg.errors import EdgesegError
from edgeseg.models.contract import Detection, decoder_for_manifest, resolve_decoder
from edgeseg.models.decoding import resize_masks, sigmoid
from edgeseg.models.mobileinst.decode import mobileinst_postprocess
from edgeseg.models.registry import family_of_model


def postprocess_for(model_name):
    """The decoder an artifact of ``model_name`` goes through (as eval looks it up)."""
    from edgeseg.export.manifest import Manifest

    return decoder_for_manifest(Manifest(model=model_name))


def logit(p):
    return float(np.log(p / (1 - p)))


def outputs(cls_probs, obj_probs, masks):
    """Raw graph outputs (logits) with a batch of 1 from probabilities and mask logits."""
    cls_probs = np.asarray(cls_probs, np.float64)
    return {
        "logits": np.log(cls_probs / (1 - cls_probs))[None].astype(np.float32),
        "objectness": np.array([[logit(p)] for p in obj_probs], np.float32)[None],
        "masks": np.asarray(masks, np.float32)[None],
        "kernels": np.zeros((1, len(obj_probs), 4), np.float32),  # present in real outputs, unused
    }


def block_mask(h, w, y0, y1, x0, x1, inside=8.0, outside=-8.0):
    m = np.full((h, w), outside, np.float32)
    m[y0:y1, x0:x1] = inside
    return m


def test_scores_labels_threshold_and_maskness_rescoring():
    h = w = 4
    # Query 0: class 2 at 0.9, objectness 0.4, mask probability 0.8 on half the map -> maskness 0.8.
    m0 = np.full((h, w), -9.0, np.float32)
    m0[:2, :] = logit(0.8)
    # Query 1: best class 0.3, objectness 0.1 -> sqrt(0.03) = 0.173, full mask at 0.99.
    m1 = np.full((h, w), logit(0.99), np.float32)
    # Query 2: below the score threshold: sqrt(0.02 * 0.05) = 0.03.
    m2 = np.full((h, w), 5.0, np.float32)
    out = outputs([[0.1, 0.2, 0.9], [0.3, 0.1, 0.05], [0.02, 0.01, 0.01]], [0.4, 0.1, 0.05], [m0, m1, m2])
    dets = mobileinst_postprocess(out, image_hw=(32, 32), score_threshold=0.05)
    assert [d.label for d in dets] == [2, 0]
    assert dets[0].score == pytest.approx(np.sqrt(0.9 * 0.4) * 0.8, rel=1e-4)
    assert dets[1].score == pytest.approx(np.sqrt(0.3 * 0.1) * 0.99, rel=1e-4)
    assert all(isinstance(d, Detection) and d.mask.dtype == bool and d.mask.shape == (32, 32) for d in dets)
    # A higher threshold keeps only the first; an empty result is an empty list.
    assert len(mobileinst_postprocess(out, (32, 32), score_threshold=0.2)) == 1
    assert mobileinst_postprocess(out, (32, 32), score_threshold=0.99) == []


def test_sorted_by_rescored_score_and_capped():
    masks = [np.full((2, 2), 4.0, np.float32)] * 5
    probs = [0.2, 0.9, 0.5, 0.7, 0.3]
    out = outputs([[p] for p in probs], [1 - 1e-6] * 5, masks)
    dets = mobileinst_postprocess(out, (16, 16), max_detections=3)
    assert len(dets) == 3
    assert [round(d.score ** 2 / sigmoid(np.float32(4.0)) ** 2, 3) for d in dets] == [0.9, 0.7, 0.5]


def test_masks_are_upsampled_to_the_input_then_resized_to_the_image():
    """Compared with the official two-step torch interpolation, pixel for pixel."""
    import torch
    import torch.nn.functional as F

    mask = block_mask(16, 16, 0, 8, 0, 8)  # top-left quadrant at 1/8 of a 128x128 input
    mask[10:13, 2:15] = 3.0
    out = outputs([[0.9]], [0.9], [mask])
    image_hw = (100, 150)
    (det,) = mobileinst_postprocess(out, image_hw, mask_threshold=0.5)
    up = F.interpolate(torch.from_numpy(sigmoid(mask))[None, None], size=(128, 128), mode="bilinear",
                       align_corners=False)
    ref = F.interpolate(up, size=image_hw, mode="bilinear", align_corners=False)[0, 0].numpy() > 0.5
    assert det.mask.shape == image_hw
    assert (det.mask != ref).sum() == 0
    assert det.mask[:45, :70].all() and not det.mask[:45, 80:].any()
    assert det.box[0] == 0 and det.box[1] == 0


def test_input_size_can_be_given_when_not_8x_the_masks():
    mask = block_mask(4, 4, 0, 2, 0, 4)
    out = outputs([[0.9]], [0.9], [mask])
    a = mobileinst_postprocess(out, (40, 40))[0].mask
    b = mobileinst_postprocess(out, (40, 40), input_hw=(32, 32))[0].mask
    assert np.array_equal(a, b)  # default input is 8x the mask size


def test_resize_masks_matches_torch_bilinear_for_up_and_down_scaling():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    for src, dst in [((16, 16), (128, 128)), ((10, 7), (33, 50)), ((40, 40), (13, 17))]:
        m = rng.standard_normal((3, *src)).astype(np.float32)
        ref = F.interpolate(torch.from_numpy(m)[None], size=dst, mode="bilinear", align_corners=False)[0].numpy()
        np.testing.assert_allclose(resize_masks(m, dst), ref, atol=1e-5)


def test_batch_and_shape_errors():
    out = outputs([[0.9]], [0.9], [np.zeros((2, 2), np.float32)])
    unbatched = {k: v[0] for k, v in out.items()}
    assert len(mobileinst_postprocess(unbatched, (8, 8), score_threshold=0.0)) == 1
    batch2 = {k: np.concatenate([v, v]) for k, v in out.items()}
    with pytest.raises(EdgesegError, match="batch of 2"):
        mobileinst_postprocess(batch2, (8, 8))
    with pytest.raises(EdgesegError, match="'masks'"):
        mobileinst_postprocess({"logits": out["logits"], "objectness": out["objectness"]}, (8, 8))
    bad = dict(out, objectness=np.zeros((1, 3, 1), np.float32))
    with pytest.raises(EdgesegError, match="number of queries"):
        mobileinst_postprocess(bad, (8, 8))


def test_decoder_is_found_through_the_family():
    assert postprocess_for("mobileinst_topformer") is mobileinst_postprocess
    assert postprocess_for("mobileinst_test") is mobileinst_postprocess
    assert family_of_model("mobileinst_test").name == "mobileinst"
    with pytest.raises(EdgesegError, match="no decoder is known"):
        postprocess_for("maskrcnn_r50")
    with pytest.raises(EdgesegError):
        postprocess_for("mobileinstx")
    # a user model names a decoder: a family, or module:function
    assert resolve_decoder("mobileinst") is mobileinst_postprocess
    assert resolve_decoder("edgeseg.models.mobileinst.decode:decode") is mobileinst_postprocess
    with pytest.raises(EdgesegError, match="unknown model family"):
        resolve_decoder("mobileinstt")
    with pytest.raises(EdgesegError, match="has no attribute"):
        resolve_decoder("edgeseg.models.mobileinst.decode:decod")


def test_empty_mask_box_is_zero():
    assert Detection(0, 1.0, np.zeros((3, 3), bool)).box == (0.0, 0.0, 0.0, 0.0)


def test_postprocess_does_not_import_torch():
    code = ("import sys, edgeseg.models.mobileinst.decode, edgeseg.models.registry as r; r.list_models(); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_runs_on_real_model_outputs():
    import torch
    from edgeseg.models import create_model

    model = create_model("mobileinst_test", num_classes=3, input_size=(64, 128)).eval()
    with torch.no_grad():
        raw = model(torch.randn(1, 3, 64, 128))
    out = {name: t.numpy() for name, t in zip(model.output_names, raw, strict=True)}
    dets = postprocess_for(model.model_name)(out, (48, 100), score_threshold=0.0, max_detections=5)
    assert 0 < len(dets) <= 5
    assert all(0 <= d.label < 3 and d.mask.shape == (48, 100) for d in dets)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
