"""INT8 fidelity with simulated vs fused ONNX Runtime numerics, natively and on an emulated AVX2 CPU.

ONNX Runtime's fused x86 int8 kernels (U8S8, VPMADDUBSW) add pairs of products in
saturating int16 on CPUs without VNNI; ``session.disable_quant_qdq=1`` runs Q/DQ as float
ops instead (what a phone or TensorRT computes). This script shows the difference as the
cosine of int8 outputs to FP32 on held-out inputs, for two models:

* ``tiny``: the quantizer's test model (tests/quant_models.py), calibrated as
  tests/test_qdq.py does: its all-int8 ``masks`` output is the 0.955 of issue 12;
* ``synth``: the shipped MobileInst-TopFormer checkpoint (mobileinst_topformer_synth, as
  the CI gate sweeps it), KL-calibrated on 32 synthetic train images, 4 val images.

Steps (only ``prepare`` needs torch; ``measure`` needs onnxruntime + NumPy, so it can run
under an emulator):

    python benchmarks/int8_numerics.py prepare --dir out/int8_numerics     # export, calibrate, quantize
    python benchmarks/int8_numerics.py measure --dir out/int8_numerics     # this host, JSON + table
    python benchmarks/int8_numerics.py compare --dir out/int8_numerics     # this host and qemu -cpu Haswell

``compare`` runs ``measure`` natively and under ``qemu-x86_64 -cpu Haswell`` (Debian's
qemu-user; TCG emulates AVX2 but no AVX-512/VNNI, so ONNX Runtime picks its AVX2 kernels)
and prints both side by side. It is slow under emulation (minutes), hence a script and not
a test. Note: under qemu-user /proc/cpuinfo is the host's file, so the ISA the script
detects there is the host's; ONNX Runtime itself reads CPUID, which qemu emulates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SYNTH = "mobileinst_topformer_synth"


# ============================================================================ prepare (torch)
def prepare(folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from edgeseg.data.images import select_images, spec_for_model
    from edgeseg.quantize.calibrate import calibrate
    from edgeseg.quantize.pipeline import run_calibration, run_quantize
    from edgeseg.quantize.plan import PrecisionPlan
    from edgeseg.quantize.qdq import quantize_file
    from tests.quant_models import COMPONENTS, make_images, make_model

    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict = {}
    # -- tiny: exactly tests/test_qdq.py's setting
    tiny = folder / "tiny"
    model = make_model(tiny / "model")
    images = make_images(tiny / "images", n=6)
    spec, _ = spec_for_model(model)
    table = calibrate(model, select_images(images, spec, num=4), method="minmax")
    plans = {"int8": "int8", "mixed": "backbone=int8,neck=int8,head=fp16"}
    files = {}
    for label, text in plans.items():
        out = tiny / "model" / f"tiny.{label}.onnx"
        quantize_file(model, PrecisionPlan.parse(text, COMPONENTS), table, out)
        files[label] = str(out.relative_to(folder))
    x = next(iter(select_images(images, spec, num=1, seed=5).feeds()))["image"]
    np.save(tiny / "inputs.npy", x[None])
    manifest["tiny"] = {"fp32": str(model.relative_to(folder)), "quantized": files, "inputs": "tiny/inputs.npy"}

    # -- synth: the shipped checkpoint as the CI gate sweeps it
    from edgeseg.data.synthetic import SynthConfig, generate
    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model
    from edgeseg.models.checkpoints import load_weights
    from edgeseg.models.pretrained import zoo_checkpoint
    from edgeseg.export.manifest import manifest_for_artifact

    synth = folder / "synth"
    data = synth / "shapes"
    if not data.exists():
        generate(data, SynthConfig(train=32, val=4, videos=0, val_videos=0, seed=0))
    ckpt = zoo_checkpoint(SYNTH)
    m = manifest_for_artifact(ckpt)
    cfg = dict(m.model_cfg or {})
    if isinstance(cfg.get("input_size"), list):
        cfg["input_size"] = tuple(cfg["input_size"])
    net = create_model(m.model, **cfg)
    load_weights(net, ckpt)
    net.eval()
    res = export_onnx(net, synth / "export", graphs=("frame",))
    cal = run_calibration(res.onnx_path, data / "coco" / "train", method="kl", num=32, threads=1)
    files = {}
    for label in ("int8", "mixed"):
        q = run_quantize(res.onnx_path, label, cal.table_path, threads=1, with_fidelity=False, with_features=False)
        files[label] = str(q.path.relative_to(folder))
    spec, _ = spec_for_model(res.onnx_path)
    xs = np.stack([f["image"] for f in select_images(data / "coco" / "val", spec, num=4).feeds()])
    np.save(synth / "inputs.npy", xs)
    manifest["synth"] = {"fp32": str(res.onnx_path.relative_to(folder)), "quantized": files,
                         "inputs": "synth/inputs.npy"}
    (folder / "int8_numerics.json").write_text(json.dumps(manifest, indent=2))
    print(f"prepared {folder}")


# ============================================================================ measure (ORT + NumPy)
def _cosine(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    dot = ref2 = cand2 = 0.0
    for r, c in pairs:
        r, c = r.astype(np.float64).ravel(), c.astype(np.float64).ravel()
        dot, ref2, cand2 = dot + float(r @ c), ref2 + float(r @ r), cand2 + float(c @ c)
    return dot / (ref2 ** 0.5 * cand2 ** 0.5) if ref2 and cand2 else float(ref2 == cand2)


def measure(folder: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from edgeseg.benchmark.cpu_isa import host_isa
    from edgeseg.runtimes.onnxruntime import make_session

    spec = json.loads((folder / "int8_numerics.json").read_text())
    out: dict = {"cpuinfo_isa": host_isa().summary(), "emulated_cpu": os.environ.get("EDGESEG_EMULATED_CPU"),
                 "models": {}}
    for name, entry in spec.items():
        xs = np.load(folder / entry["inputs"])
        ref_sess = make_session(folder / entry["fp32"], numerics="simulated")
        names = [o.name for o in ref_sess.get_outputs()]
        inp = ref_sess.get_inputs()[0].name
        refs = [dict(zip(names, ref_sess.run(None, {inp: x}))) for x in xs]
        rows = out["models"][name] = {}
        for plan, rel in entry["quantized"].items():
            for numerics in ("simulated", "fused"):
                t0 = time.perf_counter()
                sess = make_session(folder / rel, numerics=numerics)
                got = [dict(zip(names, sess.run(None, {inp: x}))) for x in xs]
                rows[f"{plan}/{numerics}"] = {
                    "cosine": {n: _cosine([(r[n], g[n]) for r, g in zip(refs, got)]) for n in names},
                    "seconds": round(time.perf_counter() - t0, 2)}
    return out


def print_table(results: dict[str, dict]) -> None:
    hosts = list(results)
    print("\nINT8 fidelity: cosine of outputs to FP32 (1.0 = identical)\n")
    for h in hosts:
        r = results[h]
        print(f"- {h}: /proc/cpuinfo says {r['cpuinfo_isa']}" + (f"; emulated CPU {r['emulated_cpu']}"
                                                                  if r.get("emulated_cpu") else ""))
    print()
    header = ["model", "plan", "output"] + [f"{h} {n}" for h in hosts for n in ("simulated", "fused")]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * 3 + "---:|" * (len(header) - 3))
    first = results[hosts[0]]["models"]
    for model, rows in first.items():
        plans = sorted({k.split("/")[0] for k in rows}, key=["int8", "mixed"].index)
        for plan in plans:
            for output in rows[f"{plan}/simulated"]["cosine"]:
                cells = []
                for h in hosts:
                    for n in ("simulated", "fused"):
                        v = results[h]["models"].get(model, {}).get(f"{plan}/{n}", {}).get("cosine", {}).get(output)
                        cells.append("-" if v is None else f"{v:.5f}")
                print(f"| {model} | {plan} | {output} | " + " | ".join(cells) + " |")


def compare(folder: Path, cpu: str, timeout: float) -> int:
    results = {}
    native = subprocess.run([sys.executable, __file__, "measure", "--dir", str(folder), "--json"],
                            capture_output=True, text=True, timeout=timeout)
    if native.returncode != 0:
        print(native.stderr, file=sys.stderr)
        return 1
    results["native"] = json.loads(native.stdout)
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        print("qemu-x86_64 not found (Debian: apt-get install qemu-user); native figures only", file=sys.stderr)
    else:
        env = {**os.environ, "EDGESEG_EMULATED_CPU": cpu}
        t0 = time.perf_counter()
        emu = subprocess.run([qemu, "-cpu", cpu, sys.executable, __file__, "measure", "--dir", str(folder), "--json"],
                             capture_output=True, text=True, timeout=timeout, env=env)
        if emu.returncode != 0:
            err = "\n".join(line for line in emu.stderr.splitlines() if "TCG doesn't support" not in line)
            print(f"under qemu -cpu {cpu} the measurement failed (exit {emu.returncode}):\n{err[-3000:]}",
                  file=sys.stderr)
        else:
            results[f"qemu {cpu}"] = json.loads(emu.stdout)
            print(f"(emulated run: {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    print_table(results)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["prepare", "measure", "compare"])
    ap.add_argument("--dir", default="out/int8_numerics")
    ap.add_argument("--json", action="store_true", help="measure: print JSON instead of the table")
    ap.add_argument("--cpu", default="Haswell", help="compare: qemu CPU model (AVX2, no AVX-512/VNNI)")
    ap.add_argument("--timeout", type=float, default=3600.0)
    args = ap.parse_args()
    folder = Path(args.dir)
    if args.step == "prepare":
        prepare(folder)
        return 0
    if args.step == "measure":
        res = measure(folder)
        if args.json:
            print(json.dumps(res))
        else:
            print_table({"this host": res})
        return 0
    return compare(folder, args.cpu, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
