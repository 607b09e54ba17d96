"""``edgeseg sensitivity``: AP drop per component and per layer group, and a greedy plan search."""

from __future__ import annotations

from pathlib import Path

import click


_EPILOG = """\b
Examples:
  edgeseg sensitivity mobileinst_topformer_synth --calib data/shapes/coco/train \\
      --dataset data/shapes/coco/annotations/val.json -o reports/sensitivity
  edgeseg sensitivity out/mi --calib out/mi/table.json --dataset val.json --search --max-ap-drop 0.5 -o rep
"""


@click.command("sensitivity", epilog=_EPILOG)
@click.argument("source", metavar="ARTIFACT_OR_MODEL")
@click.option("--dataset", "dataset_json", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="COCO annotations to measure mask AP on.")
@click.option("--images", "images_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Images of --dataset (default: found beside the JSON).")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration images (a folder) or a table from `edgeseg calibrate`; one calibration serves every unit.")
@click.option("--precision", default="int8", show_default=True, type=click.Choice(["int8", "fp16"]),
              help="What a unit is set to, alone (everything else FP32).")
@click.option("--limit", type=int, default=50, show_default=True,
              help="Screen on the first N images (0: all); the most harmful units are confirmed on all.")
@click.option("--confirm", type=int, default=5, show_default=True, help="Units re-measured on every image.")
@click.option("--min-drop", type=float, default=0.2, show_default=True,
              help="Components whose AP drop reaches this (points) are measured group by group.")
@click.option("--components", "components_text", default=None,
              help="Go below the component level in these (comma-separated) instead of the sensitive ones.")
@click.option("--max-group-nodes", type=int, default=32, show_default=True,
              help="A layer group holds at most this many nodes (scopes are split until it does).")
@click.option("--search", is_flag=True, help="Also search: start all-PRECISION, raise the most harmful unit "
                                             "to fp16 until within --max-ap-drop.")
@click.option("--max-ap-drop", type=float, default=1.0, show_default=True, help="AP budget of --search.")
@click.option("--runs", type=int, default=20, show_default=True, help="Timed runs per plan.")
@click.option("--calib-num", type=int, default=100, show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the plans' artifacts go (default: OUT/work).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Report folder: sensitivity.md / .json / .png.")
@click.option("--overwrite", is_flag=True, help="Replace report files in -o that edgeseg did not write.")
def sensitivity(source, dataset_json, images_dir, calib, precision, limit, confirm, min_drop, components_text,
                max_group_nodes, search, max_ap_drop, runs, calib_num, work_dir, out_dir, overwrite) -> None:
    """Which parts of ARTIFACT_OR_MODEL need higher precision, on the task metric: the mask AP
    drop (and latency change) when only one component, then only one layer group inside the
    sensitive components, runs at --precision. With --search, a greedy plan search that uses
    this ranking (units + steps evaluations instead of 2^units).
    """
    from edgeseg.cli.eval import guess_images_dir
    from edgeseg.errors import EdgesegError
    from edgeseg.quantize.sensitivity import (SensitivitySettings, check_report_folder, run_sensitivity,
                                              write_reports)
    from edgeseg.quantize.sweep_latency import LatencySettings

    if images_dir is None:
        images_dir = guess_images_dir(str(dataset_json))
        if images_dir is None:
            raise EdgesegError(f"no image folder given and none found beside {dataset_json}",
                               "pass --images DIR (the folder holding the files named in the JSON)")
    check_report_folder(out_dir, overwrite, inputs=[source, dataset_json, images_dir, calib])
    comps = tuple(c.strip() for c in components_text.split(",") if c.strip()) if components_text else None
    settings = SensitivitySettings(precision=precision, limit=limit or None, confirm=confirm, min_drop=min_drop,
                                   max_group_nodes=max_group_nodes, components=comps, search=search,
                                   max_ap_drop=max_ap_drop, calib_num=calib_num,
                                   latency=LatencySettings(runs=runs, warmup=5, repeats=max(1, min(4, runs))))
    report = run_sensitivity(source, dataset_json, images_dir, calib, work_dir or out_dir / "work", settings,
                             progress=lambda m: click.echo(m, err=True))
    paths = write_reports(report, out_dir)
    click.echo(report.to_markdown())
    for p in paths.values():
        click.echo(f"wrote {p}", err=True)
