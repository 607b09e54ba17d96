"""Official yolact_edge checkpoints load into the family's modules (weights_only=True).

``tests/data/yolact_edge_official_keys.json`` lists the state-dict keys and shapes of the
official ``Yolact`` module (haotian-liu/yolact_edge at 873fceb, instantiated once on CPU)
for the image config ``yolact_edge_mobilenetv2`` and the video config ``yolact_edge_vid``
(ResNet-101, 40 YouTube-VIS classes, FeatFlowNet, SPA). A file with exactly those keys
and shapes is generated here and loaded through the same path as ``--weights``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

KEYS = json.loads((Path(__file__).parent / "data" / "yolact_edge_official_keys.json").read_text())["configs"]


def _official_file(tmp_path, config: str):
    import torch

    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in KEYS[config].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g)
    path = tmp_path / "yolact_edge_mobilenetv2_54_800000.pth"
    torch.save(state, path)  # an OrderedDict of tensors, as the official save_weights writes
    return path, state


def test_an_official_mobilenetv2_checkpoint_loads_strictly(tmp_path):
    import torch

    from edgeseg.models import create_model
    from edgeseg.models.checkpoints import load_weights

    path, state = _official_file(tmp_path, "yolact_edge_mobilenetv2_config")
    model = create_model("yolact_edge_mobilenetv2")
    flow_before = model.flow_net.pred2.scale.bias.clone()
    report = load_weights(model, path, strict=True)   # reads with torch.load(weights_only=True)
    assert report.target == "model" and not report.missing
    own = model.state_dict()
    # Same names: backbone, ProtoNet, head.
    for key in ("backbone.layers.0.0.weight", "backbone.layers.6.2.conv.3.running_var", "proto_net.10.weight",
                "prediction_layers.0.upfeature.0.weight", "prediction_layers.0.bbox_layer.weight",
                "prediction_layers.0.conf_layer.bias", "prediction_layers.0.mask_layer.weight"):
        assert torch.equal(own[key], state[key]), key
    # yolact_edge's two-phase FPN -> YOLACT's fpn.*
    assert torch.equal(own["fpn.lat_layers.0.weight"], state["fpn_phase_1.lat_layers.0.weight"])
    assert torch.equal(own["fpn.pred_layers.2.bias"], state["fpn_phase_2.pred_layers.2.bias"])
    assert torch.equal(own["fpn.downsample_layers.1.weight"], state["fpn_phase_2.downsample_layers.1.weight"])
    assert own["fpn.lat_layers.0.weight"].shape == (256, 160, 1, 1)    # C5 of MobileNetV2 first
    # Training-only / never-run tensors are not part of the model; an image checkpoint has
    # no flow net, so ours keeps its (identity) initialisation.
    assert not any(k.startswith(("semantic_seg_conv", "backbone.layers.7", "backbone.layers.8")) for k in own)
    assert torch.equal(model.flow_net.pred2.scale.bias, flow_before)


def test_the_video_config_maps_onto_the_model_key_for_key():
    from edgeseg.models import create_model
    from edgeseg.models.yolact_edge.weights import dropped_keys, filter_state_dict

    official = KEYS["yolact_edge_vid_config"]
    model = create_model("yolact_edge_resnet101", num_classes=40)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    mapped = filter_state_dict(official, model)
    assert mapped == ours
    dropped = dropped_keys(official, model)
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in dropped} == {
        "semantic_seg_conv.weight", "semantic_seg_conv.bias", "flow_net.pred1", "flow_net.upfeat2",
        "flow_net.upflow2", "spa.refine_convs"}
    assert ours["flow_net.pre_convs.convs.0.0.weight"] == official["flow_net_pre_convs.convs.0.0.weight"] == [64, 256, 3, 3]


def test_a_partial_flow_net_is_refused(tmp_path):
    import torch

    from edgeseg.errors import EdgesegError
    from edgeseg.models import create_model
    from edgeseg.models.checkpoints import load_weights

    model = create_model("yolact_edge_test")
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "flow_net.conv3.1.0.weight"}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(EdgesegError, match="flow_net.conv3.1.0.weight"):
        load_weights(model, path, strict=True)
