"""Run our TNN files with a real TNN build (TNNTest) and compare with ONNX Runtime.

No TNN runtime installs with pip, so this script is for machines that have one: a TNN
build on the host (TNNTest with the CPU/ARM backends; TNN's ARM kernels also compile
for x86 hosts without NEON) or a phone reached through adb by the benchmark tools.

    python benchmarks/tnn_vs_onnxruntime.py MODEL.onnx --tnntest /path/to/TNNTest \
        [--plan backbone=int8,*=fp16 --table table.json] [--device arm|x86] [--image img.png]
    python benchmarks/tnn_vs_onnxruntime.py MODEL.onnx --reference --plan int8 --table table.json

``--reference`` runs the files in ``tests/tnn_reference.py`` instead (no TNN build needed):
a NumPy interpreter of the written layers that models how ``--device`` loads stored data
types and, on ARM, the NC4HW4 memory that NCHW-only kernels read in an int8 network. It
checks what the writer wrote, not TNN's kernels: say which one a figure came from.

Prints, per output, the max abs error against ONNX Runtime on the same input and the
cosine similarity, plus TNNTest's own timing line.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def read_tnntest_output(path: Path) -> dict[str, np.ndarray]:
    """TNNTest -op file: a count, one 'name mat_type: T dims: k d...' line per output, then values."""
    lines = path.read_text().split("\n")
    count = int(lines[0])
    heads = []
    for line in lines[1:1 + count]:
        tok = line.split()
        ndims = int(tok[tok.index("dims:") + 1])
        heads.append((tok[0], [int(d) for d in tok[tok.index("dims:") + 2: tok.index("dims:") + 2 + ndims]]))
    values = np.array([float(v) for v in lines[1 + count:] if v.strip()], np.float64)
    out, pos = {}, 0
    for name, dims in heads:
        n = int(np.prod(dims))
        out[name] = values[pos:pos + n].reshape(dims)
        pos += n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx")
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--tnntest", help="path to a built TNNTest binary")
    how.add_argument("--reference", action="store_true", help="tests/tnn_reference.py instead of a TNN build")
    ap.add_argument("--control", action="store_true",
                    help="--reference: write int8 layers into the network a float export gets (batched MatMuls, "
                         "LayerNorm), i.e. without the ARM int8 layout rewrites, to see what they prevent")
    ap.add_argument("--plan", default=None)
    ap.add_argument("--table", default=None, help="calibration table JSON (int8 plans)")
    ap.add_argument("--device", default="arm", choices=["arm", "x86"])
    ap.add_argument("--dt", default=None, help="TNNTest -dt (default from --device; NAIVE runs TNN's reference kernels)")
    ap.add_argument("--image", default=None, help="image to feed (preprocessed with the manifest's spec)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from edgeseg.export.tnn import export_tnn
    from edgeseg.export.tnn.artifacts import plan_for
    from edgeseg.quantize.cache import CalibrationTable
    from edgeseg.runtimes.onnxruntime import make_session

    onnx_path = Path(args.onnx)
    plan = plan_for(onnx_path, args.plan)
    table = CalibrationTable.load(args.table) if args.table else None
    # Simulated Q/DQ: a QDQ reference must not carry this CPU's int8 kernel quirks.
    sess = make_session(onnx_path, numerics="simulated")
    inputs = sess.get_inputs()
    inp = inputs[0]
    if len(inputs) > 1:
        # TNNTest reads every input from the start of the same -ip file, so input i gets
        # the first size_i values of one sequence; feed ONNX Runtime exactly that.
        sizes = [int(np.prod(i.shape)) for i in inputs]
        seq = np.random.default_rng(args.seed).standard_normal(max(sizes)).astype(np.float32)
        feeds = {i.name: seq[:n].reshape(i.shape) for i, n in zip(inputs, sizes)}
        x = seq
    elif args.image:
        from edgeseg.data.preprocess import InputSpec, load_image, preprocess
        from edgeseg.export.manifest import Manifest, find_manifest

        spec = Manifest.load(onnx_path).input if find_manifest(onnx_path) else {}
        x = preprocess(load_image(args.image), InputSpec.from_dict(spec) if spec else InputSpec())
    else:
        x = np.random.default_rng(args.seed).standard_normal(inp.shape).astype(np.float32)
    if len(inputs) == 1:
        feeds = {inp.name: x}
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result = export_tnn(onnx_path, tmp, plan=plan, table=table, device=args.device)
        if args.reference and args.control:
            got = _run_control(onnx_path, plan, table, feeds, args.device)
        elif args.reference:
            got = _run_reference(result, inputs, feeds, args.device)
        else:
            got = _run_tnntest(args, result, x, tmp)
        if not args.control:
            got = {name: got[result.name_map["outputs"][name]] for name in want}
    _compare(want, got)


def _run_reference(result, inputs, feeds: dict[str, np.ndarray], device: str) -> dict[str, np.ndarray]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import tnn_reference

    from edgeseg.export.tnn import read_tnn

    blobs = result.name_map.get("blobs", {})
    print(f"reference interpreter (tests/tnn_reference.py), device {device}: the written layers, not TNN's kernels")
    return tnn_reference.run(read_tnn(result.proto_path), {blobs.get(i.name, i.name): feeds[i.name] for i in inputs},
                             device=device)


def _run_control(onnx_path: Path, plan, table, feeds, device: str) -> dict[str, np.ndarray]:
    import onnx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import tnn_reference

    from edgeseg.export.tnn.quant import quantize_model
    from edgeseg.export.tnn.writer import convert

    conv = convert(onnx.load(str(onnx_path)))  # the float network's layers
    quantize_model(conv.model, plan.precision_of, table, conv.range_source, conv.tensor_shape)
    print(f"control: int8 layers in the float network's layout (no ARM int8 rewrites), reference interpreter, {device}")
    out = tnn_reference.run(conv.model, {conv.names.blob(k): v for k, v in feeds.items()}, device=device)
    return {name: out[blob] for name, blob in conv.output_map().items()}


def _run_tnntest(args, result, x, tmp: Path) -> dict[str, np.ndarray]:
    (tmp / "input.txt").write_text("\n".join(f"{v:.9g}" for v in x.ravel()))
    flags = list(result.test_flags)
    flags[flags.index("-mp") + 1] = str(result.proto_path)
    if args.dt:
        flags[flags.index("-dt") + 1] = args.dt
    cmd = [args.tnntest, *flags, "-ip", str(tmp / "input.txt"), "-op", str(tmp / "out.txt"), "-ic", "1"]
    print("$", " ".join(cmd))
    run = subprocess.run(cmd, capture_output=True, text=True)
    print(run.stdout.strip()[-2000:])
    if run.returncode != 0 or not (tmp / "out.txt").is_file():
        print(run.stderr[-4000:], file=sys.stderr)
        sys.exit(f"TNNTest failed (rc {run.returncode})")
    return read_tnntest_output(tmp / "out.txt")


def _compare(want, got) -> None:
    print(f"{'output':16s} {'shape':>18s} {'max abs err':>12s} {'max |ref|':>10s} {'cosine':>10s}")
    for name, ref in want.items():
        g = got[name].reshape(ref.shape)
        r = ref.astype(np.float64)
        cos = float(g.ravel() @ r.ravel() / (np.linalg.norm(g) * np.linalg.norm(r) + 1e-30))
        print(f"{name:16s} {'x'.join(map(str, ref.shape)):>18s} {np.abs(g - r).max():12.3e} "
              f"{np.abs(r).max():10.3e} {cos:10.6f}")


if __name__ == "__main__":
    main()
