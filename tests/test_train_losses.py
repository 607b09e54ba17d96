"""Losses on inputs whose values can be worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from edgeseg.models.mobileinst.loss import LossWeights, mask_iou, mobileinst_loss
from edgeseg.train.losses import dice_loss, resize_targets, sigmoid_focal_loss

BIG = 20.0


def test_focal_loss_at_even_odds_matches_the_formula():
    # p = 0.5: CE = ln 2, (1 - p_t)^2 = 1/4; alpha 0.25 on positives, 0.75 on negatives.
    loss = sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
    assert loss[0].item() == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-6)
    assert loss[1].item() == pytest.approx(0.75 * 0.25 * math.log(2), rel=1e-6)


def test_focal_loss_down_weights_easy_examples():
    # A confident correct prediction costs far less than plain BCE would charge it.
    x, t = torch.tensor([3.0]), torch.tensor([1.0])
    bce = F.binary_cross_entropy_with_logits(x, t)
    p = torch.sigmoid(x)
    assert sigmoid_focal_loss(x, t).item() == pytest.approx(0.25 * (1 - p.item()) ** 2 * bce.item(), rel=1e-5)
    assert sigmoid_focal_loss(x, t, alpha=-1).item() < bce.item() / 20


def test_dice_loss_perfect_disjoint_and_half():
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    perfect = torch.tensor([[BIG, BIG, -BIG, -BIG]])
    disjoint = torch.tensor([[-BIG, -BIG, BIG, BIG]])
    half = torch.tensor([[BIG, -BIG, BIG, -BIG]])
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    assert dice_loss(disjoint, target).item() == pytest.approx(1.0, abs=1e-6)
    assert dice_loss(half, target).item() == pytest.approx(1 - 2 * 1 / (2 + 2), abs=1e-4)


def test_mask_iou_binarises_at_0_4_and_0_5():
    # probabilities 0.45 count as foreground (>= 0.4); the target is cut at 0.5.
    logit_045 = math.log(0.45 / 0.55)
    pred = torch.tensor([[logit_045, BIG, -BIG, BIG]])
    target = torch.tensor([[1.0, 1.0, 0.6, 0.4]])
    # pred {0, 1, 3}, target {0, 1, 2}: intersection 2, union 4
    assert mask_iou(pred, target).item() == pytest.approx(0.5, abs=1e-5)


def _scene():
    """One image, 3 queries, 1 object; query 2 predicts half of it."""
    h = w = 8
    obj = torch.zeros(h, w)
    obj[0:4, 0:4] = 1.0
    masks = torch.full((1, 3, h, w), -BIG)
    masks[0, 2, 0:4, 0:2] = BIG            # covers 8 of the object's 16 pixels: IoU 0.5
    logits = torch.full((1, 3, 2), -2.0)
    objectness = torch.tensor([[[0.3], [-1.0], [0.7]]])
    targets = [{"labels": torch.tensor([1]), "masks": obj[None]}]
    return logits, objectness, masks, targets


def test_objectness_target_is_the_matched_mask_iou_and_is_detached():
    logits, objectness, masks, targets = _scene()
    masks.requires_grad_(True)
    objectness.requires_grad_(True)
    out = mobileinst_loss(logits, objectness, masks, targets, LossWeights(cls=0, dice=0, bce=0, objectness=1))
    assert out.matches[0].queries.tolist() == [2]
    assert out.ious.tolist() == pytest.approx([0.5], abs=1e-5)
    expected = F.binary_cross_entropy_with_logits(torch.tensor(0.7), torch.tensor(0.5))
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)
    out.total.backward()
    # The IoU is a target: the objectness loss must not push the masks.
    assert masks.grad is None or torch.count_nonzero(masks.grad) == 0
    assert objectness.grad[0, 2, 0] != 0 and objectness.grad[0, 0, 0] == 0


def test_class_targets_are_one_hot_on_the_matched_query_only():
    logits, objectness, masks, targets = _scene()
    out = mobileinst_loss(logits, objectness, masks, targets, LossWeights(cls=1, dice=0, bce=0, objectness=0))
    onehot = torch.zeros(1, 3, 2)
    onehot[0, 2, 1] = 1.0
    expected = sigmoid_focal_loss(logits, onehot).sum() / 1  # one instance
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_mask_terms_use_targets_downsampled_to_the_prediction():
    logits, objectness, masks, targets = _scene()
    big = F.interpolate(targets[0]["masks"][None], scale_factor=4, mode="nearest")[0]  # 32x32 target
    original = targets[0]["masks"].clone()
    targets[0]["masks"] = big
    # Bilinear /4 of 4x4 constant blocks samples inside each block: exactly the 8x8 mask again.
    assert torch.allclose(resize_targets(big, (8, 8)), original)
    out = mobileinst_loss(logits, objectness, masks, targets, LossWeights(cls=0, dice=1, bce=0, objectness=0))
    assert out.total.item() == pytest.approx(1 - 2 * 8 / (8 + 16), abs=1e-4)


def test_a_batch_without_objects_still_trains_the_classifier():
    logits = torch.zeros(2, 4, 3, requires_grad=True)
    masks = torch.zeros(2, 4, 8, 8, requires_grad=True)
    objectness = torch.zeros(2, 4, 1, requires_grad=True)
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 32, 32)}
    out = mobileinst_loss(logits, objectness, masks, [empty, empty])
    assert math.isfinite(out.total.item()) and out.parts["dice"] == 0 and out.parts["obj"] == 0
    out.total.backward()
    assert (logits.grad > 0).all()  # every query pushed towards "no object"


def test_semantic_targets_are_the_union_of_each_class_instances():
    from edgeseg.train.auxiliary import SemanticHead, semantic_labels, semantic_loss, semantic_targets

    a = torch.zeros(3, 8, 8)
    a[0, 0:2, 0:2] = 1.0   # class 1
    a[1, 4:6, 4:6] = 1.0   # class 1 again
    a[2, 0:2, 6:8] = 1.0   # class 0
    targets = [{"labels": torch.tensor([1, 1, 0]), "masks": a},
               {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8)}]
    t = semantic_targets(targets, 3, (8, 8))
    assert t.shape == (2, 3, 8, 8)
    assert torch.equal(t[0, 1], torch.maximum(a[0], a[1])) and torch.equal(t[0, 0], a[2])
    assert t[0, 2].sum() == 0 and t[1].sum() == 0
    labels = semantic_labels(targets, 3, (8, 8))
    assert labels[0, 0, 0] == 2 and labels[0, 5, 5] == 2 and labels[0, 0, 7] == 1 and labels[0, 7, 0] == 0
    assert labels[1].sum() == 0
    # Uniform logits: cross-entropy is log(1 + C) at every pixel.
    head = SemanticHead(mask_dim=4, num_classes=3)
    torch.nn.init.zeros_(head.conv.weight)
    torch.nn.init.zeros_(head.conv.bias)
    loss = semantic_loss(head(torch.zeros(2, 4, 8, 8)), targets)
    assert loss.item() == pytest.approx(math.log(4), rel=1e-6)
