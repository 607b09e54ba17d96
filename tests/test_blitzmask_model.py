"""BlitzMask's module and objective (the generic contract tests cover build, export parity,
tags, decode and one training step; these cover what is BlitzMask's own)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseg.errors import EdgesegError
from edgeseg.models import create_model
from edgeseg.models.blitzmask.loss import (BlitzMaskObjective, build_targets, gaussian_radius, heatmap_focal_loss,
                                           iou_loss)

# What "only mobile-friendly layers" means in the exported graph (BN folded into Conv).
MOBILE_OPS = {"Conv", "Relu", "Clip", "Add", "Resize"}


def test_outputs_are_at_a_quarter_of_the_input_and_the_graph_is_mobile_friendly(tmp_path):
    import onnx

    from edgeseg.export.onnx import export_onnx

    torch.manual_seed(0)
    model = create_model("blitzmask_test", num_classes=3, input_size=(64, 96)).eval()
    heat, size, coef, basis = model(torch.randn(1, 3, 64, 96))
    assert heat.shape == (1, 3, 16, 24) and size.shape == (1, 4, 16, 24)
    assert coef.shape == basis.shape == (1, 4, 16, 24)
    proto = onnx.load(str(export_onnx(model, tmp_path / "bm").onnx_path))
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= MOBILE_OPS, ops - MOBILE_OPS
    # Upsampling is a constant-scale bilinear Resize (no transposed convolution).
    for n in proto.graph.node:
        if n.op_type == "Resize":
            assert dict((a.name, a.s) for a in n.attribute)["mode"] == b"linear"


@pytest.mark.parametrize("backbone,channels", [("mobilenetv2", (24, 32, 96, 320)),
                                               ("efficientnet_lite0", (24, 40, 112, 320)),
                                               ("efficientnet_lite4", (32, 56, 160, 448))])
def test_backbones_give_strides_4_to_32(backbone, channels):
    model = create_model("blitzmask_mobilenetv2", backbone=backbone, input_size=(64, 64))
    assert model.backbone.out_strides == (4, 8, 16, 32)
    assert model.backbone.out_channels == channels
    # MobileNetV2 here has no stride-64 block: nothing that would never be trained.
    assert not hasattr(model.backbone, "global_block") or model.backbone.global_block is None


def test_bad_configs_are_one_clear_error():
    with pytest.raises(EdgesegError, match="did you mean 'efficientnet_lite2'"):
        create_model("blitzmask_test", backbone="efficientnet_lite_2")
    with pytest.raises(EdgesegError, match="multiple of 32"):
        create_model("blitzmask_test", input_size=(80, 80))
    with pytest.raises(EdgesegError, match="num_bases must be at least 1"):
        create_model("blitzmask_test", num_bases=0)


def test_a_torchvision_mobilenetv2_checkpoint_loads_into_the_backbone(tmp_path):
    from edgeseg.models.backbones import MobileNetV2
    from edgeseg.models.checkpoints import load_weights

    torchvision_like = {k: v for k, v in MobileNetV2().state_dict().items() if not k.startswith("global_block.")}
    torchvision_like["classifier.1.weight"] = torch.zeros(1000, 1280)
    torchvision_like["features.18.0.weight"] = torch.zeros(1280, 320, 1, 1)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(torchvision_like, path)
    model = create_model("blitzmask_mobilenetv2", num_classes=3, input_size=(64, 64))
    report = load_weights(model, path)  # strict
    assert report.target == "backbone" and report.missing == []


# ------------------------------------------------------------------------------ targets
def test_targets_of_a_rectangle():
    masks = torch.zeros(1, 64, 64)
    masks[0, 8:40, 16:48] = 1.0  # box x 16..48, y 8..40 (pixel edges): centre (32, 24)
    t = build_targets(torch.tensor([2]), masks, 3, (16, 16), 4)
    assert t.peaks.tolist() == [[6, 8]]                       # row 24 // 4, col 32 // 4
    assert t.heatmap[2, 6, 8] == 1.0 and t.heatmap[:2].max() == 0
    assert int((t.heatmap == 1).sum()) == 1
    # Cell (6, 8) is centred at (34, 26): 18 px to the left side, 18 to the top, 14, 14.
    assert t.sizes[0].tolist() == pytest.approx([18 / 4, 18 / 4, 14 / 4, 14 / 4])
    assert t.boxes[0].tolist() == [4, 2, 12, 10]
    # The Gaussian falls off with distance and stays within the radius.
    r = int(gaussian_radius(torch.tensor([8.0]), torch.tensor([8.0])).floor())
    assert 0 < t.heatmap[2, 6, 8 + r] < 1 and t.heatmap[2, 6, 8 + r + 1] == 0


def test_targets_centre_of_mass_not_box_centre():
    masks = torch.zeros(1, 64, 64)
    masks[0, 0:8, 0:64] = 1.0      # a wide bar on top ...
    masks[0, 8:64, 0:8] = 1.0      # ... and a thin leg: an L, mass near the top-left
    t = build_targets(torch.tensor([0]), masks, 1, (16, 16), 4)
    i, j = t.peaks[0].tolist()
    assert i < 8 and j < 8  # the box centre would be (8, 8)


def test_losses():
    t = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert float(iou_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(iou_loss(t * 0.5, t)) > float(iou_loss(t * 0.9, t)) > 0
    target = torch.zeros(1, 1, 5, 5)
    target[0, 0, 2, 2] = 1.0
    target[0, 0, 2, 3] = 0.5
    good = torch.full((1, 1, 5, 5), -6.0)
    good[0, 0, 2, 2] = 6.0
    assert float(heatmap_focal_loss(good, target)) < float(heatmap_focal_loss(torch.zeros(1, 1, 5, 5), target))
    # A near-peak cell predicted high is penalised less than a far one (penalty reduction).
    near, far = good.clone(), good.clone()
    near[0, 0, 2, 3] = 2.0
    far[0, 0, 0, 0] = 2.0
    assert float(heatmap_focal_loss(near, target)) < float(heatmap_focal_loss(far, target))


@pytest.fixture
def one_thread():
    # Tiny tensors: one thread is fastest, and on a loaded 2-core machine two threads
    # spinning on each other made this test 100x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_objective_learns_one_batch(one_thread):
    torch.manual_seed(0)
    model = create_model("blitzmask_test", num_classes=2).train()
    objective = BlitzMaskObjective(model, 2)
    images = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(2, 64, 64)
    masks[0, 10:40, 8:30] = 1
    masks[1, 30:60, 20:60] = 1
    targets = [{"labels": torch.tensor([0]), "masks": masks[:1]}, {"labels": torch.tensor([1]), "masks": masks[1:]}]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(20):
        out = objective(model, images, targets)
        first = first if first is not None else dict(out.parts)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    assert set(out.parts) == {"heat", "l1", "iou", "bce", "dice"}
    for k in ("heat", "l1", "iou", "bce", "dice"):
        assert out.parts[k] < 0.5 * first[k], (k, first[k], out.parts[k])


def test_an_image_without_instances_still_trains(one_thread):
    model = create_model("blitzmask_test", num_classes=2).train()
    objective = BlitzMaskObjective(model, 2)
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 64, 64)}] * 2
    out = objective(model, torch.randn(2, 3, 64, 64), targets)
    out.total.backward()
    assert np.isfinite(float(out.total.detach())) and out.parts["bce"] == 0.0


def test_loss_options_are_checked():
    model = create_model("blitzmask_test")
    with pytest.raises(EdgesegError, match="unknown loss option"):
        BlitzMaskObjective(model, 2, **{"size_l2": "1"})
    with pytest.raises(EdgesegError, match=">= 0"):
        BlitzMaskObjective(model, 2, heatmap=-1.0)


def test_the_training_only_semantic_head_is_off_by_default_and_never_in_the_model(one_thread):
    model = create_model("blitzmask_test", num_classes=2).train()
    keys = set(model.state_dict())
    assert BlitzMaskObjective(model, 2).semantic is None
    objective = BlitzMaskObjective(model, 2, aux_semantic="0.5")
    masks = torch.zeros(1, 64, 64)
    masks[0, 10:40, 8:30] = 1
    targets = [{"labels": torch.tensor([1]), "masks": masks}] * 2
    out = objective(model, torch.randn(2, 3, 64, 64), targets)
    out.total.backward()
    assert out.parts["sem"] > 0 and objective.semantic.conv.weight.grad is not None
    assert set(model.state_dict()) == keys
