"""YOLACT's training objective: matching, OHEM, the mask crop, and a few steps that learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseg.models.yolact_edge.loss import (YolactObjective, crop_region, masks_to_boxes, match_priors,
                                             ohem_conf_loss)
from edgeseg.models.yolact_edge.priors import make_priors


def test_masks_to_boxes_are_tight_and_flag_empty_masks():
    masks = torch.zeros(2, 10, 20)
    masks[0, 2:5, 4:9] = 1.0
    boxes, valid = masks_to_boxes(masks)
    assert valid.tolist() == [True, False]
    assert boxes[0].tolist() == pytest.approx([4 / 20, 2 / 10, 9 / 20, 5 / 10])


def test_matching_marks_positives_ignored_and_forced_priors():
    priors = torch.from_numpy(make_priors((8, 8)))          # a 64x64 input
    target = priors[5]                                        # exactly one prior's box
    box = torch.cat([target[:2] - target[2:] / 2, target[:2] + target[2:] / 2])[None]
    tiny = torch.tensor([[0.50, 0.50, 0.51, 0.51]])           # overlaps no prior by 0.4
    m = match_priors(torch.cat([box, tiny]), torch.tensor([2, 0]), priors)
    assert m.conf_t[5] == 3 and m.loc_t[5].abs().max() < 1e-5
    # The tiny box still gets exactly one (forced) positive, labelled with its class.
    forced = (m.conf_t == 1).nonzero().flatten()
    assert forced.numel() == 1 and m.idx_t[forced[0]] == 1
    assert set(m.conf_t.unique().tolist()) <= {-1, 0, 1, 3}
    assert (m.conf_t == 0).sum() > 0.9 * priors.shape[0]


def test_ohem_takes_three_negatives_per_positive_the_hardest_ones():
    conf = torch.zeros(1, 20, 3)
    conf[0, :, 1] = torch.arange(20, dtype=torch.float32) / 4      # later priors look more "foreground"
    conf_t = torch.zeros(1, 20, dtype=torch.int64)
    conf_t[0, 0], conf_t[0, 1], conf_t[0, 19] = 1, 2, -1           # 2 positives, 1 ignored (the hardest)
    conf.requires_grad_(True)
    loss = ohem_conf_loss(conf, conf_t, negpos_ratio=3)
    loss.backward()
    used = (conf.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()
    assert used == [0, 1, 13, 14, 15, 16, 17, 18]


def test_crop_region_pads_one_pixel_like_the_official_crop():
    region = crop_region(8, 8, torch.tensor([[0.25, 0.5, 0.5, 0.75]]))
    rows, cols = region[0].nonzero().T
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (1, 4, 3, 6)


@pytest.fixture
def one_thread():
    # Tiny convolutions on a shared 2-core machine: one thread is ~20x faster than two.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_few_steps_on_one_batch_lower_every_loss(one_thread):
    from edgeseg.models import create_model

    torch.manual_seed(0)
    model = create_model("yolact_edge_test", num_classes=2).train()
    objective = YolactObjective(model, 2)
    assert not any(p.requires_grad for p in model.flow_net.parameters())  # trained on video later
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 64, 64, generator=g)
    masks = torch.zeros(2, 64, 64)
    masks[0, 8:40, 10:30] = 1
    masks[1, 30:60, 20:60] = 1
    images[0, :, 8:40, 10:30] += 2.0
    images[1, :, 30:60, 20:60] -= 2.0
    targets = [{"labels": torch.tensor([0]), "masks": masks[0:1]}, {"labels": torch.tensor([1]), "masks": masks[1:2]}]
    params = [p for p in [*model.parameters(), *objective.parameters()] if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-3)
    first = None
    for _ in range(25):
        out = objective(model, images, targets)
        first = first or dict(out.parts)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    last = objective(model, images, targets).parts
    assert set(first) == {"B", "C", "M", "S"}
    for k in first:
        assert last[k] < first[k], (k, first[k], last[k])
    assert np.isfinite(list(last.values())).all()
