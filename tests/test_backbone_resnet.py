"""ResNet with detectron2's key names: the published parameter count and key layout."""

from __future__ import annotations

import torch

from edgeseg.models.backbones import build_backbone


def test_resnet50_matches_the_published_size_and_strides():
    net = build_backbone("resnet50").eval()
    # torchvision's resnet50 has 25,557,032 parameters, 2,049,000 of them in the fc head.
    assert sum(p.numel() for p in net.parameters()) == 25_557_032 - 2_049_000
    assert net.out_channels == (256, 512, 1024, 2048)
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_state_dict_uses_detectron2_names():
    keys = set(build_backbone("resnet50").state_dict())
    for k in ("stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.shortcut.weight",
              "res2.0.conv1.norm.weight", "res3.3.conv3.weight", "res5.2.conv2.norm.bias"):
        assert k in keys, k
    assert not any(k.startswith(("layer1", "conv1.", "bn1")) for k in keys)
    assert sum(k.startswith("res4.") and k.endswith("conv1.weight") for k in keys) == 6
    assert sum(k.startswith("res4.") and k.endswith("conv1.weight")
               for k in build_backbone("resnet101").state_dict()) == 23


def test_stride_placement_follows_the_weights_convention():
    a = build_backbone("resnet_test")
    b = build_backbone("resnet_test", stride_in_1x1=True)
    assert a.res3[0].conv2.stride == 2 and a.res3[0].conv1.stride == 1
    assert b.res3[0].conv1.stride == 2 and b.res3[0].conv2.stride == 1
