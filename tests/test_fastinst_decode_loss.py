"""FastInst's NumPy decoder and training objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeseg.errors import EdgesegError
from edgeseg.models import create_model
from edgeseg.models.fastinst.decode import decode
from edgeseg.models.fastinst.loss import (FastInstObjective, ImageTargets, Weights, match_proposals, match_queries,
                                          softmax_focal_loss)


# ------------------------------------------------------------------------------ decoding
def _outputs(num_queries=4, classes=3, hw=(4, 4)):
    logits = np.full((num_queries, classes + 1), -5.0, np.float32)
    logits[:, -1] = 5.0  # no object by default
    masks = np.full((num_queries, *hw), -8.0, np.float32)
    return logits, masks


def test_decode_scores_classes_without_the_no_object_column():
    logits, masks = _outputs()
    logits[1] = [6.0, -5, -5, -5]       # query 1: class 0, confidently
    logits[2] = [3.0, 3.2, -5, -5]      # query 2: classes 0 and 1 both likely
    masks[1, :2, :2] = 8.0
    masks[2, 2:, 2:] = 8.0
    dets = decode({"logits": logits[None], "masks": masks[None]}, (16, 16), score_threshold=0.1)
    p = np.exp(6.0) / (np.exp(6.0) + 3 * np.exp(-5.0))
    maskness = 1 / (1 + np.exp(-8.0))
    assert (dets[0].label, dets[0].score) == (0, pytest.approx(p * maskness, rel=1e-5))
    # Per-class top-k (as the official instance_inference): query 2 appears with both classes.
    assert sorted(d.label for d in dets) == [0, 0, 1]
    assert dets[0].mask.shape == (16, 16) and dets[0].mask[:6, :6].all() and not dets[0].mask[10:].any()
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_decode_rescores_by_maskness_and_caps_the_count():
    logits, masks = _outputs()
    logits[0] = logits[1] = [6.0, -5, -5, -5]
    masks[0, :2, :2] = 8.0          # confident mask
    masks[1, :2, :2] = 0.3          # barely above 0.5 probability
    dets = decode({"logits": logits, "masks": masks}, (8, 8), score_threshold=0.05, max_detections=1)
    assert len(dets) == 1 and dets[0].mask[:4, :4].all()
    both = decode({"logits": logits, "masks": masks}, (8, 8))
    assert both[0].score > 0.99 and both[1].score < 0.6


def test_decode_refuses_outputs_that_are_not_fastinst():
    logits, masks = _outputs()
    with pytest.raises(EdgesegError, match="number of queries"):
        decode({"logits": logits, "masks": masks[:2]}, (8, 8))
    with pytest.raises(EdgesegError, match="needs output 'masks'"):
        decode({"logits": logits}, (8, 8))


# ------------------------------------------------------------------------------ objective
def test_focal_loss_with_gamma_zero_is_the_official_weighted_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 7, 4, generator=g), torch.randint(0, 4, (2, 7), generator=g)
    weight = torch.tensor([1.0, 1.0, 1.0, 0.1])
    want = F.cross_entropy(logits.transpose(1, 2), target, weight)
    assert torch.allclose(softmax_focal_loss(logits, target, weight, 0.0), want)
    assert softmax_focal_loss(logits, target, weight, 2.0) < want


def test_location_cost_matches_a_query_to_the_object_under_its_pixel():
    # Query 0's mask fits object 0 best, but it was selected on a pixel of object 1.
    masks8 = torch.zeros(2, 16)
    masks8[0, :8], masks8[1, 8:] = 1, 1
    tgt = ImageTargets(torch.tensor([0, 1]), masks8, torch.zeros(2, 4))
    pred_masks = torch.stack([masks8[0] * 12 - 6, masks8[1] * 12 - 6, torch.full((16,), -6.0)])
    logits = torch.zeros(3, 3)
    inside = torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])   # [N, M]
    without = match_queries(logits, pred_masks, torch.zeros(3, 2), tgt, Weights())
    assert dict(zip(without.queries.tolist(), without.targets.tolist())) == {0: 0, 1: 1}
    with_location = match_queries(logits, pred_masks, inside, tgt, Weights())
    assert dict(zip(with_location.queries.tolist(), with_location.targets.tolist())) == {0: 1, 2: 0}


def test_proposals_match_one_pixel_inside_each_object():
    tgt = ImageTargets(torch.tensor([2, 0]), torch.zeros(2, 4), torch.zeros(2, 9))
    tgt.inside16[0, [0, 1]] = 1
    tgt.inside16[1, [7]] = 1
    logits = torch.zeros(4, 9)
    logits[2, 4] = 9.0   # the most confident class-2 pixel lies outside object 0
    m = match_proposals(logits, tgt, Weights())
    assert dict(zip(m.targets.tolist(), m.queries.tolist())) == {0: 0, 1: 7} or \
        dict(zip(m.targets.tolist(), m.queries.tolist())) == {0: 1, 1: 7}


def _batch(size=128):
    masks = torch.zeros(2, size, size)
    masks[0, 10:60, 20:90] = 1
    masks[1, 70:120, 30:70] = 1
    targets = [{"labels": torch.tensor([1, 2]), "masks": masks},
               {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, size, size)}]
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)), targets


def test_objective_sums_every_prediction_and_the_guided_pass():
    torch.manual_seed(0)
    model = create_model("fastinst_test").train()
    images, targets = _batch()
    guided = FastInstObjective(model, 3)(model, images, targets)
    assert {"cls", "mask", "dice", "g_cls", "g_mask", "g_dice", "proposal", "sem"} <= set(guided.parts)
    torch.manual_seed(0)
    plain = FastInstObjective(model, 3, guided="false", aux_semantic=0)(model, images, targets)
    assert not any(k.startswith("g_") for k in plain.parts) and "sem" not in plain.parts
    assert plain.parts["cls"] == pytest.approx(guided.parts["cls"], rel=1e-5)   # same main pass


def test_objective_learns_one_image():
    """A few steps on one batch lower the loss: the objective and the model train together."""
    torch.manual_seed(0)
    model = create_model("fastinst_test").train()
    objective = FastInstObjective(model, 3)
    images, targets = _batch()
    opt = torch.optim.AdamW(list(model.parameters()) + list(objective.parameters()), lr=3e-3)
    losses = []
    for _ in range(6):
        out = objective(model, images, targets)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        losses.append(float(out.total.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_objective_refuses_negative_weights():
    model = create_model("fastinst_test")
    with pytest.raises(EdgesegError, match=">= 0"):
        FastInstObjective(model, 3, dice=-1)
