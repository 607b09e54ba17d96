"""SparseInst-style matching: obvious pairs, dice scores, the class tie-break, empty images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseg.train.matcher import dice_score_matrix, match_from_score, match_image, matching_score

BIG = 20.0  # a logit whose sigmoid is 1 to 1e-8


def _square(h: int, w: int, y0: int, x0: int, size: int) -> torch.Tensor:
    m = torch.zeros(h, w)
    m[y0:y0 + size, x0:x0 + size] = 1.0
    return m


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask > 0.5, torch.tensor(BIG), torch.tensor(-BIG))


def test_hand_made_score_assigns_the_obvious_pairs():
    # 4 queries x 3 targets: the best query of each target is unambiguous, and the greedy
    # choice (query 0 for target 0, its best) would be wrong for the total.
    score = np.array([[0.9, 0.8, 0.0],
                      [0.85, 0.1, 0.0],
                      [0.0, 0.0, 0.05],
                      [0.0, 0.0, 0.7]])
    m = match_from_score(score)
    pairs = dict(zip(m.targets.tolist(), m.queries.tolist()))
    assert pairs == {0: 1, 1: 0, 2: 3}
    assert m.queries.dtype == torch.int64 and len(m) == 3


def test_dice_score_of_identical_disjoint_and_half_overlapping_masks():
    a, b = _square(8, 8, 0, 0, 4), _square(8, 8, 4, 4, 4)
    half = _square(8, 8, 0, 2, 4)  # shares 8 of its 16 pixels with a
    preds = torch.stack([_logits(a), _logits(b)]).flatten(1)
    targets = torch.stack([a, half]).flatten(1)
    d = dice_score_matrix(preds, targets)
    assert d[0, 0] == pytest.approx(1.0, abs=1e-4)     # identical
    assert d[1, 0] == pytest.approx(0.0, abs=1e-6)     # disjoint
    assert d[0, 1] == pytest.approx(2 * 8 / (16 + 16), abs=1e-4)  # 2|A n B| / (|A| + |B|)


def test_match_image_finds_the_query_that_predicts_each_object():
    h = w = 16
    objects = [_square(h, w, 0, 0, 6), _square(h, w, 8, 8, 6)]
    masks = torch.full((5, h, w), -BIG)
    masks[3] = _logits(objects[0])   # query 3 predicts object 0
    masks[1] = _logits(objects[1])   # query 1 predicts object 1
    class_logits = torch.zeros(5, 2)
    m = match_image(class_logits, masks, torch.tensor([0, 1]), torch.stack(objects))
    assert dict(zip(m.targets.tolist(), m.queries.tolist())) == {0: 3, 1: 1}


def test_class_probability_breaks_a_tie_between_identical_masks():
    h = w = 8
    obj = _square(h, w, 2, 2, 4)
    masks = torch.stack([_logits(obj), _logits(obj)])
    class_logits = torch.tensor([[-3.0, 2.0], [2.0, -3.0]])  # query 1 believes in class 0
    m = match_image(class_logits, masks, torch.tensor([0]), obj[None])
    assert m.queries.tolist() == [1]
    s = matching_score(class_logits, masks, torch.tensor([0]), obj[None])
    assert s[1, 0] > s[0, 0]


def test_an_image_without_objects_matches_nothing():
    m = match_image(torch.zeros(4, 3), torch.zeros(4, 8, 8), torch.zeros(0, dtype=torch.int64),
                    torch.zeros(0, 8, 8))
    assert len(m) == 0 and m.queries.numel() == 0 and m.targets.numel() == 0
