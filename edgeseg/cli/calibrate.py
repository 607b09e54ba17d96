"""``edgeseg calibrate``: activation ranges from images (KL / min-max / percentile)."""

from __future__ import annotations

from pathlib import Path

import click


_EPILOG = """\b
Examples:
  edgeseg calibrate out/mobileinst/mobileinst_topformer.onnx --images data/val --num 100
  edgeseg calibrate model.onnx --images imgs --method percentile --percentile 99.9 \\
      -o table.json --trt-cache model.calib
"""


@click.command("calibrate", epilog=_EPILOG)
@click.argument("model", metavar="MODEL.onnx", type=click.Path())
@click.option("--images", "images_dir", required=True, type=click.Path(),
              help="Folder of JPEG/PNG images (searched recursively).")
@click.option("--method", type=click.Choice(["kl", "minmax", "percentile"]), default="kl", show_default=True,
              help="kl: TensorRT EntropyCalibration2; minmax: observed max |x|; percentile: --percentile of |x|.")
@click.option("--percentile", type=float, default=99.99, show_default=True, help="For --method percentile.")
@click.option("--num", type=int, default=100, show_default=True,
              help="Images to use, chosen with --seed (0 = all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False),
              help="Table JSON (default: MODEL.<method>.calib.json beside the model).")
@click.option("--trt-cache", type=click.Path(dir_okay=False),
              help="Also write a TensorRT calibration cache (for trtexec --calib=FILE).")
@click.option("--trt-version", default="8.5.2", show_default=True,
              help="TensorRT version of the device that reads --trt-cache (JetPack 5: 8.5.2).")
@click.option("--threads", type=int, default=0, show_default=True, help="ONNX Runtime threads (0 = all cores).")
@click.option("--max-pass-mb", type=float, default=1024, show_default=True,
              help="Activation memory per pass; bigger graphs are calibrated in several passes.")
@click.option("--histogram", type=click.Choice(["pow2", "trt"]), default="pow2", show_default=True,
              help="pow2: bins on a power-of-two grid, the same ranges whatever the image order; trt: "
                   "TensorRT's calibrator (2048 bins sized by the first image, doubled on overflow), to "
                   "reproduce TensorRT's own ranges.")
@click.option("--overwrite", is_flag=True, help="Replace an existing -o / --trt-cache file that edgeseg did not write.")
def calibrate(model, images_dir, method, percentile, num, seed, out, trt_cache, trt_version, threads,
              max_pass_mb, histogram, overwrite) -> None:
    """Run images through MODEL.onnx and compute the range of every float activation.

    Activations are reduced to histograms as they arrive, so memory stays bounded
    whatever the number of images. One table serves every precision plan and backend.
    """
    from rich.console import Console
    from rich.table import Table

    from edgeseg.quantize.pipeline import check_outputs_beside, default_table_path, run_calibration
    from edgeseg.runtimes.base import resolve_artifact

    path = resolve_artifact(model)
    check_outputs_beside(path, [(out or default_table_path(path, method), "-o"), (trt_cache, "--trt-cache")],
                         overwrite)
    res = run_calibration(path, images_dir, method=method, percentile=percentile, num=num or None, seed=seed,
                          out=out, trt_cache=trt_cache, trt_version=trt_version if trt_cache else None,
                          threads=threads, max_pass_mb=max_pass_mb, histogram=histogram)
    console = Console()
    if res.images.shortfall():
        console.print(f"[yellow]note:[/yellow] --num {res.images.shortfall()}")
    if res.spec_source == "graph":
        console.print("[yellow]note:[/yellow] no manifest.json beside the model: preprocessing uses the "
                      "graph's input size and ImageNet mean/std")
    t = res.table
    summary = Table(title=f"calibration of {Path(path).name}", show_header=False)
    summary.add_row("method", t.method + (f" ({t.settings['percentile']}%)" if t.method == "percentile" else "")
                    + f", {t.settings.get('histogram', 'pow2')} histogram")
    summary.add_row("images", f"{t.num_images} of {res.images.available} found"
                    + (f", {len(res.images.skipped)} unreadable skipped" if res.images.skipped else ""))
    summary.add_row("tensors", str(len(t)))
    summary.add_row("passes", str(t.settings.get("passes", 1)))
    summary.add_row("time", f"{res.seconds:.1f} s")
    console.print(summary)
    clipped = sorted(((r.amax / max(abs(r.min or 0), abs(r.max or 0)), n) for n, r in t.ranges.items()
                      if max(abs(r.min or 0), abs(r.max or 0)) > 0))[:5]
    if t.method != "minmax" and clipped:
        most = Table(title="most clipped tensors (range / observed max |x|)")
        most.add_column("tensor")
        most.add_column("ratio", justify="right")
        for ratio, name in clipped:
            most.add_row(name, f"{ratio:.3f}")
        console.print(most)
    console.print(f"[green]wrote[/green] {res.table_path}" + (f" and {res.trt_cache_path}" if res.trt_cache_path else ""))
