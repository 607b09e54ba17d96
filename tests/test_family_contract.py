"""Every registered family honours the contract (timm's test-over-the-registry, edgeseg style).

For each family's ``<family>_test`` variant (tiny widths, small input): build, forward shapes
match the declared outputs, ONNX export of every graph with parity and every node tagged,
the NumPy decoder on the exported outputs, a training step through the family objective
(backward reaches every trainable parameter), and the torch-free description.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgeseg.models.contract import Detection, Family, check_module
from edgeseg.models.registry import family, list_families, list_models


def _test_variant(fam: Family) -> str:
    name = f"{fam.name}_test"
    assert name in list_models(), f"family {fam.name} must register a tiny {name} variant for the contract tests"
    return name


FAMILIES = list_families()


def test_listing_families_and_models_imports_no_heavy_module():
    code = ("import sys; from edgeseg.models.registry import list_families, list_models, family; "
            "[family(f) for f in list_families()]; list_models(); "
            "heavy = [m for m in ('torch', 'onnxruntime', 'tensorflow', 'tensorrt') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("name", FAMILIES)
def test_description_is_complete_and_resolvable(name):
    fam = family(name)
    assert fam.components and len(set(fam.components)) == len(fam.components)
    assert fam.outputs and fam.graphs[0] == "frame"
    assert callable(fam.load("build")) and callable(fam.load("decoder"))
    for optional in ("objective", "video", "weights_map"):
        if getattr(fam, optional) is not None:
            assert fam.load(optional) is not None
    for preset, spec in fam.presets.items():
        from edgeseg.quantize.plan import PrecisionPlan

        plan = PrecisionPlan.parse(spec, fam.components, fam.presets)
        assert set(plan.precisions) == set(fam.components), preset


@pytest.fixture(scope="module", params=FAMILIES)
def built(request):
    import torch

    from edgeseg.models import create_model

    fam = family(request.param)
    torch.manual_seed(0)
    model = create_model(_test_variant(fam)).eval()
    return fam, model


def test_module_carries_the_contract_attributes(built):
    fam, model = built
    check_module(model, f"{fam.name}_test")
    assert model.family == fam.name
    assert tuple(model.output_names) == fam.outputs
    extra = model.graph_modules() if hasattr(model, "graph_modules") else {}
    assert ("frame", *extra) == fam.graphs
    # Each graph has a subset of the family's components, in the family's order; together
    # they have all of them (a video-only component, e.g. a flow network, may live in
    # another graph than the frame graph).
    seen = []
    for g, module in {"frame": model, **extra}.items():
        check_module(module, f"the {g} graph")
        names = module.component_map.names()
        assert names == [c for c in fam.components if c in names], g
        seen += names
    assert set(seen) == set(fam.components)


def test_export_decode_and_parity_of_every_graph(built, tmp_path):
    import onnx

    from edgeseg.export import tags
    from edgeseg.export.onnx import export_onnx
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    fam, model = built
    result = export_onnx(model, tmp_path / fam.name)
    assert tuple(result.graphs) == fam.graphs
    for g, res in result.graphs.items():
        assert all(p.ok for p in res.parity), (g, res.parity)
        proto = onnx.load(str(res.path))
        assert tags.untagged_nodes(proto) == []
        graph_module = model if g == "frame" else model.graph_modules()[g]
        assert {tags.get_component(n) for n in proto.graph.node} == set(graph_module.component_map.names())
    assert result.manifest.family == fam.name
    rt = OnnxRuntimeRuntime(result.onnx_path)
    feeds = rt.random_feeds(0)
    outputs = rt.run(feeds)
    assert list(outputs) == list(fam.outputs)
    decode = fam.load("decoder")
    dets = decode(outputs, (50, 70), score_threshold=0.0, max_detections=3)
    assert len(dets) <= 3
    for d in dets:
        assert isinstance(d, Detection) and d.mask.shape == (50, 70) and d.mask.dtype == bool
        assert 0 <= d.label < model.model_cfg["num_classes"] and np.isfinite(d.score)


# Image objectives: one generic step here; clip objectives (train_data="ytvis") are exercised
# by their family's own tests with clip targets.
TRAINABLE = [f for f in FAMILIES if family(f).objective is not None and family(f).train_data == "coco"]


@pytest.mark.parametrize("name", TRAINABLE)
def test_one_training_step_reaches_every_parameter(name):
    import torch

    from edgeseg.models import create_model

    fam = family(name)
    torch.manual_seed(0)
    model = create_model(_test_variant(fam)).train()
    objective = fam.load("objective")(model, model.model_cfg["num_classes"])
    spec = model.input_spec
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, spec.height, spec.width, generator=g)
    masks = torch.zeros(2, spec.height, spec.width)
    masks[0, : spec.height // 2, : spec.width // 2] = 1
    masks[1, spec.height // 4:, spec.width // 3:] = 1
    targets = [{"labels": torch.tensor([0]), "masks": masks[i:i + 1]} for i in range(2)]
    out = objective(model, images, targets)
    assert out.total.ndim == 0 and torch.isfinite(out.total)
    out.total.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not dead, f"no gradient reaches {dead[:5]}"
