"""Official FastInst checkpoints load with weights_only=True: a generated file holding exactly
the keys and shapes of junjiehe96/FastInst's R50-D3 COCO model (detectron2 layout)."""

from __future__ import annotations

import pytest
import torch

from edgeseg.models import create_model
from edgeseg.models.checkpoints import load_weights


def official_head_shapes(num_classes=80, hidden=256, mask_dim=256, queries=100, aux=8, ffn=1024, layers=3,
                         in_channels=(512, 1024, 2048)) -> dict[str, tuple[int, ...]]:
    """The heads' keys and shapes as the official FastInstHead builds them (GN pixel decoder)."""
    shapes: dict[str, tuple[int, ...]] = {}
    pd = "sem_seg_head.pixel_decoder."
    for i, cin in enumerate(in_channels, start=1):
        shapes[f"{pd}adapter_{i}.weight"] = (hidden, cin, 1, 1)
        shapes[f"{pd}layer_{i}.weight"] = (hidden, hidden, 3, 3)
        for conv in (f"adapter_{i}", f"layer_{i}"):
            shapes[f"{pd}{conv}.norm.weight"] = shapes[f"{pd}{conv}.norm.bias"] = (hidden,)
    for s in range(4):
        shapes[f"{pd}ppm.stages.{s}.1.weight"] = (hidden // 4, hidden, 1, 1)
        shapes[f"{pd}ppm.stages.{s}.1.bias"] = (hidden // 4,)
    shapes[f"{pd}ppm.bottleneck.weight"] = (hidden, 2 * hidden, 1, 1)
    shapes[f"{pd}ppm.bottleneck.bias"] = (hidden,)

    p = "sem_seg_head.predictor."
    side = round(queries ** 0.5)
    shapes[f"{p}meta_pos_embed"] = (1, hidden, side, side)
    shapes[f"{p}empty_query_features.weight"] = shapes[f"{p}empty_query_pos_embed.weight"] = (aux, hidden)
    q = f"{p}query_proposal.conv_proposal_cls_logits."
    shapes.update({f"{q}0.weight": (hidden, hidden, 3, 3), f"{q}0.bias": (hidden,),
                   f"{q}2.weight": (num_classes + 1, hidden, 1, 1), f"{q}2.bias": (num_classes + 1,)})

    def attention(prefix):
        shapes.update({f"{prefix}in_proj_weight": (3 * hidden, hidden), f"{prefix}in_proj_bias": (3 * hidden,),
                       f"{prefix}out_proj.weight": (hidden, hidden), f"{prefix}out_proj.bias": (hidden,)})

    def norm(prefix):
        shapes[f"{prefix}norm.weight"] = shapes[f"{prefix}norm.bias"] = (hidden,)

    def ffn_layer(prefix):
        shapes.update({f"{prefix}linear1.weight": (ffn, hidden), f"{prefix}linear1.bias": (ffn,),
                       f"{prefix}linear2.weight": (hidden, ffn), f"{prefix}linear2.bias": (hidden,)})
        norm(prefix)

    for i in range(layers):
        for kind in ("query", "mask"):
            attention(f"{p}transformer_{kind}_cross_attention_layers.{i}.multihead_attn.")
            norm(f"{p}transformer_{kind}_cross_attention_layers.{i}.")
            ffn_layer(f"{p}transformer_{kind}_ffn_layers.{i}.")
        attention(f"{p}transformer_query_self_attention_layers.{i}.self_attn.")
        norm(f"{p}transformer_query_self_attention_layers.{i}.")
    for j in range(layers + 1):
        shapes[f"{p}decoder_query_norm_layers.{j}.weight"] = shapes[f"{p}decoder_query_norm_layers.{j}.bias"] = (hidden,)
        for head, out in (("class_embed_layers", num_classes + 1), ("mask_embed_layers", mask_dim)):
            for k, (cout, cin) in enumerate(((hidden, hidden), (hidden, hidden), (out, hidden))):
                shapes[f"{p}{head}.{j}.layers.{k}.weight"] = (cout, cin)
                shapes[f"{p}{head}.{j}.layers.{k}.bias"] = (cout,)
        shapes[f"{p}mask_features_layers.{j}.weight"] = (mask_dim, hidden)
        shapes[f"{p}mask_features_layers.{j}.bias"] = (mask_dim,)
    # The criterion's no-object weights, stored twice: FastInst.criterion and the predictor's reference.
    shapes["criterion.empty_weight"] = shapes[f"{p}criterion.empty_weight"] = (num_classes + 1,)
    return shapes


@pytest.mark.slow
def test_an_official_r50_d3_checkpoint_loads_into_every_tensor(tmp_path):
    model = create_model("fastinst_r50_d3")
    # detectron2's ResNet keys (FrozenBatchNorm2d: no num_batches_tracked); the backbone's own
    # layout is tested in tests/test_backbone_resnet.py.
    shapes = {f"backbone.{k}": tuple(v.shape) for k, v in model.backbone.state_dict().items()
              if not k.endswith("num_batches_tracked")}
    shapes.update(official_head_shapes())
    # Each tensor filled with its own index, so a key loaded into the wrong place shows.
    state = {k: torch.full(s, float(i)) for i, (k, s) in enumerate(shapes.items())}
    path = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 368749}, path)   # detectron2's checkpointer layout

    report = load_weights(model, path)   # strict; torch.load(weights_only=True) inside
    own = model.state_dict()
    assert report.missing == [] and report.target == "model"
    assert report.ignored == []
    assert report.loaded == len(own)   # num_batches_tracked filled by the weights map
    index = {k: i for i, k in enumerate(shapes)}
    renamed = {"query_selector.conv_proposal_cls_logits.2.bias":
               "sem_seg_head.predictor.query_proposal.conv_proposal_cls_logits.2.bias",
               "pixel_decoder.ppm.stages.3.1.weight": "sem_seg_head.pixel_decoder.ppm.stages.3.1.weight",
               "transformer_decoder.transformer_query_cross_attention_layers.2.multihead_attn.in_proj_weight":
               "sem_seg_head.predictor.transformer_query_cross_attention_layers.2.multihead_attn.in_proj_weight",
               "transformer_decoder.class_embed_layers.3.layers.2.weight":
               "sem_seg_head.predictor.class_embed_layers.3.layers.2.weight",
               "backbone.res4.5.conv3.norm.running_var": "backbone.res4.5.conv3.norm.running_var"}
    for ours, official in renamed.items():
        assert torch.all(own[ours] == index[official]), ours
    # Every tensor (except the criterion's) landed in exactly one place.
    values = sorted({float(v.flatten()[0]) for k, v in own.items() if not k.endswith("num_batches_tracked")})
    assert values == sorted(float(index[k]) for k in shapes if "criterion." not in k)
