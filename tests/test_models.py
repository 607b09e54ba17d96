"""The model zoo: MobileInst variants, their backbones and the zoo interface contract."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeseg.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from edgeseg.errors import EdgesegError
from edgeseg.models import create_model, list_models
from edgeseg.models.backbones import MobileNetV2, TopFormer
from edgeseg.models.layers import PortableLayerNorm, sine_position_embedding
from edgeseg.quantize.plan import PrecisionPlan

COMPONENTS = {"backbone": "backbone", "mask_decoder": "mask_decoder", "instance_decoder": "instance_decoder"}
VARIANTS = ["mobileinst_topformer", "mobileinst_mobilenetv2", "mobileinst_topformer_tiny", "mobileinst_test"]


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return create_model("mobileinst_test", num_classes=5, input_size=(128, 192)).eval()


# ------------------------------------------------------------------------------ registry
def test_registry_lists_every_variant():
    assert set(VARIANTS) <= set(list_models())


def test_unknown_model_is_one_clear_error_with_suggestions():
    with pytest.raises(EdgesegError) as e:
        create_model("mobileinst_topformr")
    assert "unknown model" in e.value.problem
    assert "mobileinst_topformer" in e.value.fix


def test_unknown_option_names_the_close_match():
    with pytest.raises(EdgesegError) as e:
        create_model("mobileinst_test", num_class=3)
    assert "num_class" in e.value.problem and "num_classes" in e.value.fix


@pytest.mark.parametrize("size, says", [((100, 128), "multiple of 64"), ((128, 96), "multiple of 64"),
                                        ((0, 64), "must be positive"), ((64, 4160), "4096 pixels per side")])
def test_input_size_must_be_a_positive_multiple_of_64_and_not_absurd(size, says):
    with pytest.raises(EdgesegError) as e:
        create_model("mobileinst_test", input_size=size)
    assert says in e.value.problem


def test_defaults_follow_the_interface():
    model = create_model("mobileinst_test")
    assert (model.input_spec.height, model.input_spec.width) == (640, 640)
    assert model.num_classes == 80 and model.num_queries == 8
    assert model.model_name == "mobileinst_test"
    assert model.model_cfg["num_classes"] == 80


# ------------------------------------------------------------------------- the contract
def test_outputs_are_a_tuple_in_output_name_order(small):
    x = torch.randn(2, 3, 128, 192)
    with torch.no_grad():
        out = small(x)
    assert small.output_names == ["logits", "objectness", "kernels", "mask_features", "masks"]
    assert isinstance(out, tuple) and len(out) == 5
    logits, objectness, kernels, mask_features, masks = out
    d = small.mask_dim
    assert logits.shape == (2, 8, 5)
    assert objectness.shape == (2, 8, 1)
    assert kernels.shape == (2, 8, d)
    assert mask_features.shape == (2, d, 16, 24)
    assert masks.shape == (2, 8, 16, 24)


def test_masks_are_kernels_times_mask_features(small):
    with torch.no_grad():
        _, _, kernels, mask_features, masks = small(torch.randn(1, 3, 128, 192))
    expected = torch.einsum("bnd,bdhw->bnhw", kernels, mask_features)  # reference only
    torch.testing.assert_close(masks, expected, rtol=1e-5, atol=1e-5)


def test_component_map_attributes_and_input_spec(small):
    assert small.component_map.to_dict() == COMPONENTS
    for path in COMPONENTS.values():
        assert isinstance(getattr(small, path), torch.nn.Module)
    spec = small.input_spec
    assert (spec.height, spec.width, spec.layout, spec.color) == (128, 192, "NCHW", "RGB")
    assert tuple(spec.mean) == IMAGENET_MEAN and tuple(spec.std) == IMAGENET_STD
    assert spec.stride == 64


def test_every_parameter_and_buffer_belongs_to_one_component(small):
    names = [n for n, _ in small.named_parameters()] + [n for n, _ in small.named_buffers()]
    owners = [small.component_map.component_for_scope(n) for n in names]
    assert None not in owners, [n for n, o in zip(names, owners) if o is None]
    per_component = sum(sum(p.numel() for p in getattr(small, c).parameters()) for c in COMPONENTS)
    assert per_component == sum(p.numel() for p in small.parameters())


def test_precision_presets_parse_against_the_components(small):
    plan = PrecisionPlan.parse("mixed", small.component_map.names(), small.precision_presets)
    assert plan.precisions == {"backbone": "int8", "mask_decoder": "int8", "instance_decoder": "fp16"}
    for spec in small.precision_presets.values():
        PrecisionPlan.parse(spec, small.component_map.names())


def test_features_model_shares_weights_and_matches_forward(small):
    feats = small.features_model()
    assert feats.backbone is small.backbone and feats.mask_decoder is small.mask_decoder
    assert feats.output_names == ["mask_features"]
    assert feats.component_map.to_dict() == {"backbone": "backbone", "mask_decoder": "mask_decoder"}
    assert feats.input_spec == small.input_spec
    assert not hasattr(feats, "instance_decoder")
    plan = PrecisionPlan.parse("mixed", feats.component_map.names(), feats.precision_presets)
    assert plan.precisions == {"backbone": "int8", "mask_decoder": "int8"}

    x = torch.randn(1, 3, 128, 192)
    with torch.no_grad():
        full = small(x)[3]
        only = feats(x)
    assert torch.equal(full, only)
    # Shared, not copied: a change to the full model shows in the features graph.
    with torch.no_grad():
        small.mask_decoder.mask_proj.bias.add_(1.0)
        try:
            torch.testing.assert_close(feats(x), full + 1.0)
        finally:
            small.mask_decoder.mask_proj.bias.sub_(1.0)


def test_other_input_sizes_work_in_eager_mode(small):
    """The position embedding is precomputed for input_size but recomputed for other sizes."""
    other = create_model("mobileinst_test", num_classes=5, input_size=(192, 128)).eval()
    other.load_state_dict(small.state_dict())
    x = torch.randn(1, 3, 192, 128)
    with torch.no_grad():
        for a, b in zip(small(x), other(x), strict=True):
            torch.testing.assert_close(a, b)


def test_training_mode_gives_every_parameter_a_gradient():
    torch.manual_seed(0)
    model = create_model("mobileinst_test", num_classes=3, input_size=(128, 128)).train()
    outputs = model(torch.randn(2, 3, 128, 128))
    sum(o.float().square().mean() for o in outputs).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not dead


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_builds_and_runs(name):
    model = create_model(name, num_classes=7, input_size=(128, 128)).eval()
    with torch.no_grad():
        logits, objectness, kernels, mask_features, masks = model(torch.randn(1, 3, 128, 128))
    n, d = model.num_queries, model.mask_dim
    assert logits.shape == (1, n, 7) and objectness.shape == (1, n, 1) and kernels.shape == (1, n, d)
    assert mask_features.shape == (1, d, 16, 16) and masks.shape == (1, n, 16, 16)
    assert all(torch.isfinite(t).all() for t in (logits, objectness, kernels, mask_features, masks))


@pytest.mark.slow
def test_paper_model_at_640():
    model = create_model("mobileinst_topformer", num_classes=80).eval()
    assert model.num_queries == 100
    with torch.no_grad():
        logits, objectness, kernels, mask_features, masks = model(torch.randn(1, 3, 640, 640))
    assert logits.shape == (1, 100, 80) and objectness.shape == (1, 100, 1) and kernels.shape == (1, 100, 128)
    assert mask_features.shape == (1, 128, 80, 80) and masks.shape == (1, 100, 80, 80)


# ---------------------------------------------------------------------------- ONNX graph
def _export(module, size, names):
    import onnx

    buf = io.BytesIO()
    torch.onnx.export(module, torch.randn(1, 3, *size), buf, opset_version=17, dynamo=False,
                      input_names=["image"], output_names=names)
    return onnx.load_from_string(buf.getvalue())


def test_onnx_export_is_portable_and_fully_scoped(small):
    import onnxruntime as ort

    from edgeseg.export.tags import tag_graph

    graph = _export(small, (128, 192), small.output_names)
    initializers = {i.name for i in graph.graph.initializer}
    for node in graph.graph.node:
        if node.op_type == "Constant" or (node.op_type == "Identity" and set(node.input) <= initializers):
            continue  # exporter-made constants / de-duplicated weights: no computation, tagged via consumers
        assert small.component_map.component_for_scope(node.name), f"unscoped node {node.name}"
    ops = {n.op_type for n in graph.graph.node}
    assert not ops & {"Einsum", "Erf", "Gelu", "LayerNormalization"}
    assert {"MatMul", "Softmax", "MaxPool", "Resize"} <= ops
    for node in graph.graph.node:
        if node.op_type == "Softmax":
            assert [a.i for a in node.attribute if a.name == "axis"] == [-1]
    counts = tag_graph(graph, small.component_map)
    assert set(counts) == set(COMPONENTS)
    assert [o.name for o in graph.graph.output] == small.output_names
    assert [d.dim_value for d in graph.graph.output[4].type.tensor_type.shape.dim] == [1, 8, 16, 24]

    # The static graph computes what the module computes.
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 192)).astype(np.float32)
    got = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    with torch.no_grad():
        want = small(torch.from_numpy(x))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-3, atol=1e-4)


def test_features_graph_exports_without_instance_decoder(small):
    feats = small.features_model()
    graph = _export(feats, (128, 192), feats.output_names)
    assert [o.name for o in graph.graph.output] == ["mask_features"]
    assert not [n.name for n in graph.graph.node if n.name.startswith("/instance_decoder")]
    assert any(n.name.startswith("/mask_decoder") for n in graph.graph.node)


# ----------------------------------------------------------------------------- backbones
def _reference_module():
    path = Path(__file__).parent / "data" / "topformer_reference.py"
    spec = importlib.util.spec_from_file_location("topformer_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_topformer_tiny_reproduces_the_official_implementation():
    """Same weights, same image: our TopFormer-Tiny equals the official code's outputs."""
    ref = _reference_module()
    model = TopFormer("tiny").eval()
    ref.fill_deterministic(model)
    with torch.no_grad():
        got = ref.summaries(model(ref.make_input()))
    expected = np.load(ref.REFERENCE)
    assert set(expected.files) == set(got)
    for key in expected.files:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_topformer_uses_the_official_key_names():
    sd = TopFormer("base").state_dict()
    assert len(sd) == 386  # the official TopFormer-Base backbone's state dict size
    expected_shapes = {
        "tpm.stem.0.c.weight": (16, 3, 3, 3),
        "tpm.layer1.conv.0.c.weight": (16, 1, 3, 3),      # expand ratio 1: no expansion conv
        "tpm.layer10.conv.4.bn.running_var": (160,),
        "trans.transformer_blocks.3.attn.to_q.c.weight": (128, 384, 1, 1),
        "trans.transformer_blocks.0.attn.proj.1.c.weight": (384, 256, 1, 1),
        "trans.transformer_blocks.0.mlp.dwconv.bias": (768,),
        "SIM.1.local_embedding.conv.weight": (256, 64, 1, 1),
        "SIM.3.global_act.bn.weight": (256,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("SIM.0.") for k in sd)


@pytest.mark.parametrize("size", ["tiny", "test"])
def test_topformer_outputs_match_declared_channels_and_strides(size):
    model = TopFormer(size).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 128, 256))
    assert model.out_strides == (8, 16, 32, 64)
    for t, c, s in zip(outs, model.out_channels, model.out_strides, strict=True):
        assert t.shape == (1, c, 128 // s, 256 // s)


def test_mobilenetv2_follows_torchvision_layout_and_width_multiplier():
    model = MobileNetV2().eval()
    sd = model.state_dict()
    assert tuple(sd["features.0.0.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["features.1.conv.1.weight"].shape) == (16, 32, 1, 1)  # t=1 block: dw then project
    assert tuple(sd["features.2.conv.0.0.weight"].shape) == (96, 16, 1, 1)
    assert tuple(sd["features.17.conv.3.running_var"].shape) == (320,)
    assert not any(k.startswith(("features.18.", "classifier.")) for k in sd)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 128, 128))
    assert [tuple(t.shape[1:]) for t in outs] == [(32, 16, 16), (96, 8, 8), (320, 4, 4), (256, 2, 2)]
    half = MobileNetV2(width_mult=0.5)
    assert half.out_channels == (16, 48, 160, 128)


# ------------------------------------------------------------------------------- layers
def _detr_sine(h, w, dim, temperature=10000.0):
    """DETR's PositionEmbeddingSine(normalize=True), written the torch way, as the reference."""
    ones = torch.ones(1, h, w)
    y = ones.cumsum(1)
    x = ones.cumsum(2)
    eps, scale = 1e-6, 2 * np.pi
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    half = dim // 2
    dim_t = temperature ** (2 * (torch.arange(half, dtype=torch.float32) // 2) / half)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3)[0].reshape(h * w, dim)


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (10, 10)])
def test_sine_position_embedding_matches_detr(hw):
    torch.testing.assert_close(sine_position_embedding(*hw, 32), _detr_sine(*hw, 32), rtol=1e-5, atol=1e-5)


def test_portable_layernorm_equals_nn_layernorm():
    ours, ref = PortableLayerNorm(24), torch.nn.LayerNorm(24)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 7, 24) * 5 + 2
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_upsampling_by_scale_equals_upsampling_to_size():
    """The decoders upsample with constant scale factors; that must equal the official size= calls."""
    x = torch.randn(1, 4, 3, 5)
    torch.testing.assert_close(F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False),
                               F.interpolate(x, size=(12, 20), mode="bilinear", align_corners=False))
