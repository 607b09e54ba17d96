"""``edgeseg eval``: mask AP of an artifact on a COCO-format dataset."""

from __future__ import annotations

from pathlib import Path

import click


def guess_images_dir(dataset_json: str) -> Path | None:
    """The image folder of the usual layouts: ``X/annotations/val.json`` -> ``X/val``
    (edgeseg data synth) and ``X/annotations/instances_val2017.json`` -> ``X/val2017``."""
    ann = Path(dataset_json)
    stem = ann.stem.removeprefix("instances_")
    cand = ann.parent.parent / stem
    return cand if ann.parent.name == "annotations" and cand.is_dir() else None


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def print_result(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    plan = (result.precision or {}).get("spec") or (result.precision or {}).get("name") or "n/a"
    console.print(f"[bold]{result.model}[/bold]  {result.file}  backend={result.backend}  plan={plan}  "
                  f"numerics={result.numerics}")
    t = Table(title=f"AP on {result.images} images ({result.detections} detections, {result.seconds:.1f} s)")
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
    t.add_column("")
    for k in keys:
        t.add_column(k, justify="right")
    t.add_row("mask", *(_fmt(result.metrics[k]) for k in keys))
    if result.box:  # boxes of the predicted masks
        t.add_row("box", *(_fmt(result.box.get(k)) for k in keys[:-1]), "")
    console.print(t)
    pc = Table(title="AP per class")
    for name in result.per_class:
        pc.add_column(name, justify="right")
    pc.add_row(*(_fmt(v) for v in result.per_class.values()))
    console.print(pc)


_EPILOG = """\b
Examples:
  edgeseg data synth -o data/shapes
  edgeseg eval out/mobileinst --dataset data/shapes/coco/annotations/val.json \\
      --images data/shapes/coco/val -o out/mobileinst/eval.json
  edgeseg eval runs/shapes.safetensors --dataset data/shapes/coco/annotations/val.json
"""


@click.command("eval", epilog=_EPILOG)
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--dataset", "dataset_json", required=True, type=click.Path(dir_okay=False),
              help="COCO instances JSON (ground truth).")
@click.option("--images", "images_dir", type=click.Path(file_okay=False),
              help="Folder holding the images named in the JSON (default: X/val for X/annotations/val.json).")
@click.option("--backend", default=None, help="onnxruntime | torch | tflite (default: by file suffix).")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N images.")
@click.option("--threads", type=int, default=1, show_default=True, help="Runtime compute threads.")
@click.option("--box", is_flag=True, help="Also report box AP (boxes of the predicted masks).")
@click.option("--numerics", type=click.Choice(["simulated", "fused"]), default="simulated", show_default=True,
              help="How ONNX Runtime computes int8: simulated Q/DQ (what a phone or TensorRT computes, the "
                   "same on every host) or fused (ONNX Runtime's int8 kernels of this CPU, for x86 "
                   "deployment with ONNX Runtime; they saturate on x86 without VNNI).")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), help="Write the result as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace an existing -o file that edgeseg did not write.")
def eval_command(artifact, dataset_json, images_dir, backend, limit, threads, box, numerics, output,
                 overwrite) -> None:
    """Mask AP, AP50, AP75, APs/m/l of ARTIFACT with pycocotools.

    ARTIFACT is an artifact folder from `edgeseg export` / `edgeseg quantize`, a file in it
    (.onnx, .tflite), or an edgeseg checkpoint (.safetensors). Images are preprocessed as
    the manifest says, run on the runtime, and post-processed by the model's own
    post-processing (masks resized to each image, RLE-encoded).
    """
    from edgeseg.errors import EdgesegError
    from edgeseg.eval.coco import evaluate_artifact

    if output:
        from edgeseg.utils.outputs import check_output_file

        # before the evaluation, not after
        check_output_file(output, flag="-o", overwrite=overwrite, inputs=[artifact, dataset_json])
    if images_dir is None:
        images_dir = guess_images_dir(dataset_json)
        if images_dir is None:
            raise EdgesegError(f"no image folder given and none found beside {dataset_json}",
                               "pass --images DIR (the folder holding the files named in the JSON)")
    result = evaluate_artifact(artifact, dataset_json, images_dir, backend=backend, limit=limit,
                               threads=threads, box=box, numerics=numerics)
    print_result(result)
    if output:
        result.save(output)
        click.echo(f"wrote {output}")


eval = eval_command  # noqa: A001 - COMMANDS registers this verb as edgeseg.cli.eval:eval
