"""EfficientNet-Lite B0-B4 as timm builds them: key names, parameter counts, weights loading.

The published parameter counts (timm's ``efficientnet_lite0..4`` with the 1000-class
ImageNet head; the same figures in the TF reference's lite README, rounded) are 4.652 M,
5.417 M, 6.092 M, 8.197 M and 13.007 M. A wrong channel rounding, a stage depth off by one
or an SE block left in would change them.
"""

from __future__ import annotations

import pytest

from edgeseg.models.backbones.efficientnet_lite import LITE_SCALES, build_efficientnet_lite, stage_repeats

PUBLISHED_PARAMS = {
    "efficientnet_lite0": 4_652_008,
    "efficientnet_lite1": 5_416_680,
    "efficientnet_lite2": 6_092_072,
    "efficientnet_lite3": 8_197_096,
    "efficientnet_lite4": 13_006_568,
}
# Rounded to thousands as published (timm's model table / the TF lite README).
PUBLISHED_MILLIONS = {"efficientnet_lite0": 4.652, "efficientnet_lite1": 5.417, "efficientnet_lite2": 6.092,
                      "efficientnet_lite3": 8.197, "efficientnet_lite4": 13.007}


@pytest.mark.parametrize("name", sorted(LITE_SCALES))
def test_parameter_counts_match_the_published_ones(name):
    model = build_efficientnet_lite(name, num_classes=1000)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 3) == PUBLISHED_MILLIONS[name]
    assert n == PUBLISHED_PARAMS[name]


def test_stage_depths_scale_with_ceil_except_first_and_last():
    assert stage_repeats(1.0) == [1, 2, 2, 3, 3, 4, 1]
    assert stage_repeats(1.8) == [1, 4, 4, 6, 6, 8, 1]   # lite4


def test_key_names_are_timms():
    keys = set(build_efficientnet_lite("efficientnet_lite0", num_classes=1000).state_dict())
    expected = {
        "conv_stem.weight", "bn1.weight", "bn1.running_var",
        # stage 0: depthwise-separable (dw first)
        "blocks.0.0.conv_dw.weight", "blocks.0.0.bn1.weight", "blocks.0.0.conv_pw.weight", "blocks.0.0.bn2.bias",
        # inverted residuals: pw expand, dw, pw linear
        "blocks.1.0.conv_pw.weight", "blocks.1.0.bn1.weight", "blocks.1.0.conv_dw.weight",
        "blocks.1.0.bn2.running_mean", "blocks.1.0.conv_pwl.weight", "blocks.1.0.bn3.weight",
        "blocks.5.3.conv_pwl.weight", "blocks.6.0.bn3.num_batches_tracked",
        "conv_head.weight", "bn2.weight", "classifier.weight", "classifier.bias",
    }
    assert expected <= keys
    # No squeeze-and-excitation, no biases on convolutions, no stage beyond 6.
    assert not any(".se." in k or "conv_reduce" in k for k in keys)
    assert not any(k.startswith(("conv_stem.bias", "blocks.7")) for k in keys)
    # Shapes where rounding matters: lite0 stage-1 expansion 16*6 = 96, the fixed 1280 head.
    state = build_efficientnet_lite("efficientnet_lite0", num_classes=1000).state_dict()
    assert tuple(state["blocks.1.0.conv_pw.weight"].shape) == (96, 16, 1, 1)
    assert tuple(state["blocks.2.0.conv_dw.weight"].shape) == (144, 1, 5, 5)
    assert tuple(state["conv_head.weight"].shape) == (1280, 320, 1, 1)
    lite4 = build_efficientnet_lite("efficientnet_lite4", num_classes=1000).state_dict()
    assert tuple(lite4["conv_stem.weight"].shape) == (32, 3, 3, 3)           # stem not scaled
    assert tuple(lite4["conv_head.weight"].shape) == (1280, 448, 1, 1)       # head not scaled; 320 * 1.4


def test_backbone_taps_and_tf_same_padding():
    import torch

    m = build_efficientnet_lite("efficientnet_lite0").eval()
    assert m.out_strides == (4, 8, 16, 32) and m.out_channels == (24, 40, 112, 320)
    outs = m(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    tf = build_efficientnet_lite("tf_efficientnet_lite0").eval()
    assert tf.bn1.eps == 1e-3
    # Same weights, other padding: same shapes, different numbers (TF pads stride-2 convs
    # only after the input), and the keys stay timm's.
    tf.load_state_dict(m.state_dict())
    with torch.no_grad():
        a, b = m(torch.ones(1, 3, 64, 64))[0], tf(torch.ones(1, 3, 64, 64))[0]
    assert a.shape == b.shape and not torch.allclose(a, b)
    assert set(tf.state_dict()) == set(m.state_dict())


def test_a_timm_imagenet_checkpoint_loads_into_blitzmask(tmp_path):
    import torch

    from edgeseg.models import create_model
    from edgeseg.models.checkpoints import load_weights

    torch.manual_seed(0)
    imagenet = build_efficientnet_lite("efficientnet_lite0", num_classes=1000)
    path = tmp_path / "efficientnet_lite0.pth"
    torch.save({"state_dict": imagenet.state_dict()}, path)
    model = create_model("blitzmask_efficientnet_lite0", num_classes=3, input_size=(64, 64))
    report = load_weights(model, path)  # strict: every backbone key filled
    assert report.target == "backbone"
    assert {"classifier.weight", "conv_head.weight", "bn2.weight"}.isdisjoint(model.backbone.state_dict())
    assert torch.equal(model.backbone.blocks[3][1].conv_pwl.weight, imagenet.blocks[3][1].conv_pwl.weight)
