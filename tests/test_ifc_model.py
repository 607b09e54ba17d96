"""IFC's module: clip shapes, the memory-token encoder, official checkpoint keys, config checks."""

from __future__ import annotations

import pytest
import torch

from edgeseg.errors import EdgesegError
from edgeseg.models import create_model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("ifc_test").eval()


def test_a_clip_in_gives_clip_level_predictions(tiny):
    t = tiny.input_spec.frames
    assert tiny.input_spec.shape == [t, 3, 128, 128] and tiny.input_spec.is_clip
    with torch.no_grad():
        logits, masks = tiny(torch.randn(t, 3, 128, 128))
    n, k = tiny.num_queries, tiny.num_classes
    assert logits.shape == (1, n, k + 1)                 # K classes + "no object"
    assert masks.shape == (1, n, t, 16, 16)              # every frame at 1/8
    with torch.no_grad():
        l2, m2 = tiny.forward_all_layers(torch.randn(2, t, 3, 128, 128))
    layers = tiny.cfg.dec_layers
    assert l2.shape == (layers, 2, n, k + 1) and m2.shape == (layers, 2, n, t, 16, 16)


def test_clip_length_is_a_config_flag():
    m = create_model("ifc_test", clip_length=5).eval()
    assert m.input_spec.frames == 5
    with torch.no_grad():
        _, masks = m(torch.randn(5, 3, 128, 128))
    assert masks.shape[2] == 5


def test_frames_communicate_through_the_memory_tokens(tiny):
    """Frame 0's predictions depend on frame 2's pixels only through Gather-Communicate and
    the clip decoder: change frame 2 and frame 0's masks change; the backbone and the
    per-frame encoder tokens of frame 0 do not."""
    torch.manual_seed(1)
    clip = torch.randn(3, 3, 128, 128)
    other = clip.clone()
    other[2] = torch.randn(3, 128, 128)
    with torch.no_grad():
        _, a = tiny(clip)
        _, b = tiny(other)
        feats_a = tiny.backbone(clip)[0][0]
        feats_b = tiny.backbone(other)[0][0]
    torch.testing.assert_close(feats_a, feats_b)
    assert not torch.allclose(a[0, :, 0], b[0, :, 0], atol=1e-5)


def test_gather_communicate_mixes_one_memory_index_across_frames(tiny):
    enc = tiny.encoder
    c = tiny.cfg.hidden_dim
    t, m = 3, tiny.cfg.num_memory
    features = torch.randn(t, tiny.backbone.out_channels[2], 4, 4)
    pos = tiny._positions((4, 4), features)
    with torch.no_grad():
        tokens, bus = enc(features, pos, 1, t)
        changed = features.clone()
        changed[1] += 1.0
        _, bus2 = enc(changed, pos, 1, t)
    assert tokens.shape == (t, 16, c) and bus.shape == (1, t, m, c)
    # Frame 1 changed: its memory changed, and through communication frame 0's too.
    assert not torch.allclose(bus[0, 0], bus2[0, 0], atol=1e-5)


def test_components_are_the_contract_names(tiny):
    assert tiny.component_map.names() == ["backbone", "encoder", "decoder", "mask_head"]
    assert tiny.family == "ifc"


@pytest.mark.parametrize("cfg, message", [
    ({"clip_length": 0}, "clip length"),
    ({"num_heads": 3}, "not divisible by num_heads"),
    ({"hidden_dim": 18}, "multiple of 4"),
    ({"mask_groups": 3}, "GroupNorm"),
    ({"input_size": (100, 128)}, "multiple of 64"),
    ({"num_memry": 4}, "did you mean 'num_memory'"),
])
def test_bad_configs_are_clear_errors(cfg, message):
    with pytest.raises(EdgesegError, match=message):
        create_model("ifc_test", **cfg)


# ------------------------------------------------------------------ official checkpoints
def _official_r50_layout(model) -> dict[str, tuple[int, ...]]:
    """The key names and shapes of an official IFC R-50 YouTube-VIS 2019 checkpoint
    (sukjunhwang/IFC: ``Ifc.detr`` = ``IFC(backbone=Joiner(MaskedBackbone, sine),
    transformer=IFCTransformer, mask_head=MaskHead)``, d=256, FFN 2048, 3+3 layers, M=8,
    100 queries, 40 classes), written out from the official module definitions."""
    d, ffn, m, q, k = 256, 2048, 8, 100, 40
    keys: dict[str, tuple[int, ...]] = {}
    # detectron2 ResNet-50 (FrozenBatchNorm2d: no num_batches_tracked); its own key layout
    # is checked in test_backbone_resnet.py.
    for name, tensor in model.backbone.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            keys[f"detr.backbone.0.backbone.{name}"] = tuple(tensor.shape)

    def attn(prefix):
        keys[f"{prefix}.in_proj_weight"] = (3 * d, d)
        keys[f"{prefix}.in_proj_bias"] = (3 * d,)
        keys[f"{prefix}.out_proj.weight"] = (d, d)
        keys[f"{prefix}.out_proj.bias"] = (d,)

    def ffn_norms(prefix, norms):
        keys.update({f"{prefix}.linear1.weight": (ffn, d), f"{prefix}.linear1.bias": (ffn,),
                     f"{prefix}.linear2.weight": (d, ffn), f"{prefix}.linear2.bias": (d,)})
        for i in range(1, norms + 1):
            keys[f"{prefix}.norm{i}.weight"] = (d,)
            keys[f"{prefix}.norm{i}.bias"] = (d,)

    tr = "detr.transformer"
    keys[f"{tr}.memory_bus"] = (m, d)
    keys[f"{tr}.memory_pos"] = (m, d)
    for kind in ("enc_layers", "bus_layers"):
        for i in range(3):
            attn(f"{tr}.encoder.{kind}.{i}.self_attn")
            ffn_norms(f"{tr}.encoder.{kind}.{i}", 2)
    for i in range(3):
        attn(f"{tr}.clip_decoder.layers.{i}.self_attn")
        attn(f"{tr}.clip_decoder.layers.{i}.multihead_attn")
        ffn_norms(f"{tr}.clip_decoder.layers.{i}", 3)
    keys[f"{tr}.clip_decoder.norm.weight"] = (d,)
    keys[f"{tr}.clip_decoder.norm.bias"] = (d,)
    keys.update({"detr.class_embed.layers.0.weight": (d, d), "detr.class_embed.layers.0.bias": (d,),
                 "detr.class_embed.layers.1.weight": (k + 1, d), "detr.class_embed.layers.1.bias": (k + 1,),
                 "detr.query_embed.weight": (q, d),
                 "detr.input_proj.weight": (d, 2048, 1, 1), "detr.input_proj.bias": (d,)})
    mh = "detr.mask_head"
    for i in (1, 2, 3):
        keys[f"{mh}.lay{i}.weight"] = (d, d, 3, 3)
        keys[f"{mh}.lay{i}.bias"] = (d,)
        keys[f"{mh}.gn{i}.weight"] = (d,)
        keys[f"{mh}.gn{i}.bias"] = (d,)
    keys.update({f"{mh}.out_lay.depthwise.weight": (d, 1, 5, 5), f"{mh}.out_lay.depthwise.bias": (d,),
                 f"{mh}.out_lay.pointwise.weight": (d, d, 1, 1), f"{mh}.out_lay.pointwise.bias": (d,),
                 f"{mh}.adapter1.weight": (d, 1024, 1, 1), f"{mh}.adapter1.bias": (d,),
                 f"{mh}.adapter2.weight": (d, 512, 1, 1), f"{mh}.adapter2.bias": (d,)})
    for i in range(3):
        keys[f"{mh}.convert_to_weight.layers.{i}.weight"] = (d, d)
        keys[f"{mh}.convert_to_weight.layers.{i}.bias"] = (d,)
    keys["criterion.empty_weight"] = (k + 1,)  # the criterion's buffer is saved with the model
    return keys


def test_an_official_r50_checkpoint_loads_with_weights_only(tmp_path):
    from edgeseg.models.checkpoints import load_weights

    torch.manual_seed(0)
    model = create_model("ifc_r50").eval()
    layout = _official_r50_layout(model)
    # One distinct value per tensor, stored as an expanded scalar: the file stays tiny while
    # every key has the official shape.
    state = {name: torch.tensor((i + 1) * 1e-4).expand(shape) for i, (name, shape) in enumerate(layout.items())}
    path = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 39999}, path)  # detectron2's checkpoint layout
    assert path.stat().st_size < 1_000_000
    report = load_weights(model, path, strict=True)  # torch.load(weights_only=True) inside
    own = model.state_dict()
    trainable = [k for k in own if not k.endswith("num_batches_tracked")]
    assert report.loaded == len(trainable) == len(layout) - 1  # all but the criterion buffer

    def value(official):
        return (list(layout).index(official) + 1) * 1e-4

    for official, ours in [("detr.backbone.0.backbone.res4.5.conv2.norm.running_var", "backbone.res4.5.conv2.norm.running_var"),
                           ("detr.transformer.memory_bus", "encoder.memory_bus"),
                           ("detr.transformer.encoder.bus_layers.2.linear2.weight", "encoder.bus_layers.2.linear2.weight"),
                           ("detr.input_proj.bias", "encoder.input_proj.bias"),
                           ("detr.transformer.clip_decoder.layers.1.multihead_attn.in_proj_weight",
                            "decoder.layers.1.multihead_attn.in_proj_weight"),
                           ("detr.query_embed.weight", "decoder.query_embed.weight"),
                           ("detr.class_embed.layers.1.bias", "decoder.class_embed.layers.1.bias"),
                           ("detr.mask_head.out_lay.depthwise.weight", "mask_head.out_lay.depthwise.weight")]:
        assert torch.all(own[ours] == value(official)), (official, ours)


def test_a_wrong_official_shape_is_refused(tmp_path):
    from edgeseg.models.checkpoints import load_weights

    model = create_model("ifc_test")
    state = {f"detr.{k.replace('encoder.memory_bus', 'transformer.memory_bus')}": v
             for k, v in model.state_dict().items() if k == "encoder.memory_bus"}
    state["detr.transformer.memory_bus"] = torch.zeros(7, 16)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(EdgesegError):
        load_weights(model, tmp_path / "bad.pth", strict=True)


def test_our_own_checkpoints_pass_the_map_unchanged(tmp_path):
    from edgeseg.models.checkpoints import load_weights, save_weights
    from edgeseg.models.ifc.weights import filter_state_dict

    torch.manual_seed(0)
    a = create_model("ifc_test")
    state = a.state_dict()
    assert filter_state_dict(state, a) == state
    save_weights(a, tmp_path / "a.safetensors")
    torch.manual_seed(1)
    b = create_model("ifc_test")
    load_weights(b, tmp_path / "a.safetensors")
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v)
