"""FastInst's module: the query selection against the official rule, the rank form against
top-k, the pyramid pooling as matrices, masked attention against nn.MultiheadAttention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeseg.errors import EdgesegError
from edgeseg.models import create_model
from edgeseg.models.fastinst.pixel_decoder import PyramidPoolingModule
from edgeseg.models.fastinst.query_selector import QuerySelector
from edgeseg.models.fastinst.transformer_decoder import PackedAttention, attention_bias


def _official_scores(logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The official rule, written independently: softmax over C+1 on the channel axis, keep
    each pixel's best object class (first on ties), +1 where it is >= its 8 zero-padded
    neighbours in that class map and >= eps, max over the object classes."""
    b, c1, h, w = logits.shape
    probs = logits.softmax(1)
    best = probs[:, :-1].argmax(1)
    keep = F.one_hot(best, c1).permute(0, 3, 1, 2).to(probs)
    probs = probs * keep
    pad = F.pad(probs, (1, 1, 1, 1))
    peak = probs >= eps
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) != (1, 1):
                peak &= probs >= pad[:, :, dy:dy + h, dx:dx + w]
    return (probs + peak.to(probs))[:, :-1].flatten(2).amax(1)


def test_selection_scores_follow_the_official_rule():
    torch.manual_seed(0)
    sel = QuerySelector(8, 5, 3)
    logits = torch.randn(2, 4, 7, 9) * 3
    logits[1, :, 2:5, 3:7] = 0.5  # a flat region: every pixel in it is a (tied) local maximum
    assert torch.allclose(sel.scores(logits), _official_scores(logits), atol=1e-6)


def test_rank_selection_picks_the_topk_pixels_lower_index_first_on_ties_in_pixel_order():
    sel = QuerySelector(8, 12, 3)
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 5, (3, 40), generator=g).float() / 4  # many exact ties
    one_hot = sel.rank_one_hot(scores)
    assert one_hot.shape == (3, 12, 40)
    assert torch.equal(one_hot.sum(-1), torch.ones(3, 12))  # each slot one pixel
    assert set(one_hot.unique().tolist()) == {0.0, 1.0}
    want = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :12].sort(dim=1).values
    assert torch.equal(one_hot.argmax(-1), want)
    # Same pixels as torch.topk where there are no ties at the K-th place.
    distinct = torch.randperm(40, generator=g).float()[None]
    assert torch.equal(sel.rank_one_hot(distinct).argmax(-1), sel.topk_indices(distinct))


def test_rank_and_topk_modes_give_the_same_outputs():
    torch.manual_seed(0)
    model = create_model("fastinst_test").eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        rank = model(x)
        model.query_selector.mode = "topk"
        topk = model(x)
    for a, b in zip(rank, topk):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("hw", [(8, 8), (20, 20), (5, 7)])
def test_pyramid_pooling_as_matrices_equals_adaptive_pooling_and_bilinear_resize(hw):
    torch.manual_seed(0)
    ppm = PyramidPoolingModule(8, 2).eval()
    x = torch.randn(2, 8, *hw)
    priors = [F.interpolate(F.relu(stage[1](F.adaptive_avg_pool2d(x, s))), size=hw, mode="bilinear",
                            align_corners=False) for s, stage in zip(ppm.sizes, ppm.stages)]
    want = F.relu(ppm.bottleneck(torch.cat(priors + [x], 1)))
    assert torch.allclose(ppm(x), want, atol=1e-5)


def test_masked_attention_as_a_bias_equals_a_boolean_mask():
    torch.manual_seed(0)
    dim, heads, n, aux, hw = 16, 4, 5, 2, 30
    ours = PackedAttention(dim, heads)
    ref = torch.nn.MultiheadAttention(dim, heads, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    q, kv = torch.randn(2, n + aux, dim), torch.randn(2, hw, dim)
    masked = (torch.rand(2, n, hw) > 0.6).float()
    masked[0, 1] = 1.0  # a query covering no pixel attends everywhere
    bias = attention_bias(masked, aux)
    bool_mask = torch.cat([masked, torch.zeros(2, aux, hw)], 1).bool()
    bool_mask[0, 1] = False
    want = ref(q, kv, kv, attn_mask=bool_mask.repeat_interleave(heads, 0), need_weights=False)[0]
    assert torch.allclose(ours(q, kv, kv, bias), want, atol=1e-5)


def test_builder_refuses_bad_configurations():
    with pytest.raises(EdgesegError, match="query_select"):
        create_model("fastinst_test", query_select="argmax")
    with pytest.raises(EdgesegError, match="num_heads"):
        create_model("fastinst_test", hidden_dim=18, num_heads=4)
    with pytest.raises(EdgesegError, match="queries need at least"):
        create_model("fastinst_test", input_size=(64, 64), num_queries=20)
    with pytest.raises(EdgesegError, match="multiple of 64"):
        create_model("fastinst_test", input_size=(96, 96))


def test_training_forward_keeps_what_the_objective_needs():
    torch.manual_seed(0)
    model = create_model("fastinst_test").train()
    state = model(torch.randn(2, 3, 128, 128))
    cfg = model.model_cfg
    assert len(state.predictions) == cfg["dec_layers"] + 1 and len(state.queries) == cfg["dec_layers"]
    assert all(p.logits.shape == (2, cfg["num_queries"], cfg["num_classes"] + 1) for p in state.predictions)
    assert state.predictions[-1].masks.shape == (2, cfg["num_queries"], 16 * 16)
    assert state.selected.shape == (2, cfg["num_queries"]) and state.proposal_hw == (8, 8)
    assert np.all(np.diff(np.sort(state.selected.numpy(), 1), axis=1) > 0)  # distinct pixels
