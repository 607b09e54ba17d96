"""``edgeseg data``: datasets (``synth`` generates the synthetic shapes data)."""

from __future__ import annotations

import click


@click.group("data", epilog="""\b
Examples:
  edgeseg data synth -o data/shapes --train 200 --val 50 --videos 8 --frames 12
""")
def data() -> None:
    """Generate datasets (synthetic COCO images and YouTube-VIS videos)."""


@data.command("synth", epilog="""\b
Examples:
  edgeseg data synth -o data/shapes --train 200 --val 50 --seed 0
  edgeseg eval out/mobileinst --dataset data/shapes/coco/annotations/val.json --images data/shapes/coco/val
""", context_settings={"max_content_width": 110})
@click.option("-o", "--out", "out", required=True, type=click.Path(),
              help="Output folder (written atomically).")
@click.option("--train", default=200, show_default=True, help="Training images (COCO).")
@click.option("--val", default=50, show_default=True, help="Validation images (COCO).")
@click.option("--videos", default=8, show_default=True, help="Training videos (YouTube-VIS).")
@click.option("--val-videos", default=4, show_default=True, help="Validation videos (YouTube-VIS).")
@click.option("--frames", default=12, show_default=True, help="Frames per video.")
@click.option("--size", default="256", show_default=True, help="Image size: N or HEIGHTxWIDTH.")
@click.option("--seed", default=0, show_default=True, help="Same seed, byte-identical files.")
@click.option("--max-objects", default=5, show_default=True, help="Most shapes per image (videos: at most 4).")
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty folder that is not a synthetic dataset (your files there are kept).")
def synth(out, train, val, videos, val_videos, frames, size, seed, max_objects, overwrite) -> None:
    """Synthetic COCO images and YouTube-VIS videos of textured shapes.

    Four classes (circle, triangle, rectangle, star), solid / striped / noisy textures,
    gradient and blotchy backgrounds with sensor noise, occlusion (only the visible part
    is annotated), small / medium / large objects; videos add linear and bouncing motion
    and objects that enter and leave the frame.

    \b
    Writes:
      OUT/coco/{train,val}/*.png  OUT/coco/annotations/{train,val}.json
      OUT/ytvis/JPEGImages/<video>/*.jpg  OUT/ytvis/annotations/{train,val}.json
      OUT/synth.json (settings, statistics and the list of files written)

    An earlier synthetic dataset in OUT is replaced (the files its synth.json lists; any
    other file stays). A non-empty folder of anything else needs --overwrite.
    """
    from rich.console import Console
    from rich.table import Table

    from edgeseg.data.preprocess import parse_input_size
    from edgeseg.data.synthetic import SynthConfig, generate

    height, width = parse_input_size(size, stride=1)
    cfg = SynthConfig(train=train, val=val, videos=videos, val_videos=val_videos, frames=frames,
                      height=height, width=width, seed=seed, max_objects=max_objects)
    report = generate(out, cfg, overwrite=overwrite)

    console = Console()
    if report.coco:
        t = Table(title=f"COCO images in {out}/coco")
        for col in ("split", "images", "instances", "small", "medium", "large"):
            t.add_column(col, justify="left" if col == "split" else "right")
        for s in report.coco:
            t.add_row(s.split, str(s.images), str(s.instances), str(s.small), str(s.medium), str(s.large))
        console.print(t)
        classes = list(report.coco[0].per_class)
        t = Table(title="instances per class")
        for col in ("split", *classes):
            t.add_column(col, justify="left" if col == "split" else "right")
        for s in report.coco:
            t.add_row(s.split, *(str(s.per_class[c]) for c in classes))
        console.print(t)
    if report.ytvis:
        t = Table(title=f"YouTube-VIS videos in {out}/ytvis")
        for col in ("split", "videos", "frames", "tracks", "entering", "leaving"):
            t.add_column(col, justify="left" if col == "split" else "right")
        for s in report.ytvis:
            t.add_row(s.split, str(s.videos), str(s.frames), str(s.tracks), str(s.entering), str(s.leaving))
        console.print(t)
    console.print(f"wrote {out} in {report.seconds:.1f} s")
