"""Shared inputs for the sweep and regression-gate tests: hand-made sweep reports with
chosen figures, and one real end-to-end sweep of a tiny MobileInst (seconds, not minutes)."""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import pytest

COMPONENTS = ["backbone", "mask_decoder", "instance_decoder"]


def plan_dict(precisions: list[str], ap: float, p50: float, ref_p50: float, name: str | None = None,
              ap50: float | None = None) -> dict:
    spec = ",".join(f"{c}={p}" for c, p in zip(COMPONENTS, precisions))
    # p10 sits 10% under p50 for every plan, so both ratios equal p50 / ref_p50 here
    return {"spec": spec, "name": name, "precisions": dict(zip(COMPONENTS, precisions)),
            "metrics": {"AP": ap, "AP50": ap + 20.0 if ap50 is None else ap50, "AP75": ap - 5.0},
            "latency_ms": {"p10": p50 * 0.9, "p50": p50, "mean": p50 * 1.01, "min": p50 * 0.87}, "runs": 40,
            "latency_ratio": p50 / ref_p50, "latency_ratios": {"p10": p50 / ref_p50, "p50": p50 / ref_p50},
            "file": f"m.{'-'.join(precisions)}.onnx"}


def report_dict(plans: list[tuple] | None = None) -> dict:
    """A valid sweep JSON; ``plans``: (precisions, AP, p50, name) with FP32 first."""
    plans = plans or [
        (["fp32"] * 3, 45.0, 40.0, "fp32"),
        (["fp16"] * 3, 45.1, 52.0, "fp16"),
        (["int8", "int8", "fp16"], 44.4, 30.0, "mixed"),
        (["int8"] * 3, 41.0, 26.0, "int8"),
        (["int8", "fp16", "fp16"], 44.0, 33.0, None),  # dominated by mixed (slower, less accurate)
    ]
    ref = plans[0][2]
    return {
        "format": "edgeseg-sweep", "version": 1, "created": "2026-01-01T00:00:00+00:00",
        "model": {"name": "mobileinst_topformer_synth", "components": list(COMPONENTS), "input_size": [256, 256],
                  "checkpoint_sha256": "c" * 64, "onnx_sha256": "o" * 64},
        "dataset": {"annotations": "val.json", "annotations_sha256": "d" * 64, "images": 50},
        "backend": "onnxruntime",
        "calibration": {"method": "kl", "num_images": 32, "table_sha256": "t" * 64},
        "latency": {"runs": 40, "warmup": 10, "repeats": 5, "core": 1, "threads": 1},
        "tool_versions": {"edgeseg": "0.1.0", "onnxruntime": "1.20.0"},
        "max_ap_drop": 1.0,
        "plans": [plan_dict(p, ap, p50, ref, name) for p, ap, p50, name in plans],
    }


def doctored(base: dict, spec_label: str, *, ap: float | None = None, ratio_factor: float | None = None,
             stats: tuple[str, ...] = ("p10", "p50")) -> dict:
    """A copy of ``base`` with one plan's AP set or latency (ratios of ``stats``) scaled."""
    out = copy.deepcopy(base)
    for p in out["plans"]:
        if "-".join(p["precisions"].values()) == spec_label or p.get("name") == spec_label:
            if ap is not None:
                p["metrics"]["AP"] = ap
            if ratio_factor is not None:
                for stat in stats:
                    p["latency_ratios"][stat] *= ratio_factor
                    p["latency_ms"][stat] *= ratio_factor
                if "p50" in stats:
                    p["latency_ratio"] *= ratio_factor
            return out
    raise KeyError(spec_label)


def run_cli(args: list) -> tuple[int, str, str]:
    from edgeseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def tiny_sweep_inputs(tmp_path_factory):
    """A mobileinst_test checkpoint at 128x128 (4 classes) and a few synthetic images."""
    import torch

    from edgeseg.data.synthetic import SynthConfig, generate
    from edgeseg.models import create_model
    from edgeseg.models.checkpoints import save_weights

    root = tmp_path_factory.mktemp("sweep_inputs")
    torch.manual_seed(0)
    model = create_model("mobileinst_test", num_classes=4, input_size=(128, 128)).eval()
    ckpt = save_weights(model, root / "mobileinst_test.safetensors")
    generate(root / "shapes", SynthConfig(train=6, val=4, videos=0, val_videos=0, height=128, width=128,
                                          seed=1, max_objects=3))
    coco = root / "shapes" / "coco"
    return {"ckpt": ckpt, "train": coco / "train", "val": coco / "val",
            "val_json": coco / "annotations" / "val.json", "root": root}


@pytest.fixture(scope="session")
def tiny_sweep(tiny_sweep_inputs, tmp_path_factory):
    """`edgeseg sweep` end to end on the tiny checkpoint: FP32 + int8 + mixed."""
    inp = tiny_sweep_inputs
    out = tmp_path_factory.mktemp("sweep_out") / "reports"
    code, stdout, stderr = run_cli(["sweep", inp["ckpt"], "--calib", inp["train"], "--dataset", inp["val_json"],
                                    "--plans", "int8;mixed", "--runs", "6", "--repeats", "2", "--warmup", "1",
                                    "--calib-num", "4", "--max-ap-drop", "1", "-o", out])
    assert code == 0, stderr
    return {"out": Path(out), "stdout": stdout, "stderr": stderr, **inp}
