"""The sweep's Pareto plot: mask AP against single-core p50 latency, one point per plan.

Pareto-optimal plans are drawn filled and labelled, joined by the staircase of the
front; the others are drawn hollow; FP32 (the reference) is a square. The coordinates
*read back from the drawn artists* are stored in the PNG's ``edgeseg.points`` text
chunk, so a test (or a curious user) can check the picture shows the JSON's numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgeseg.quantize.sweep_report import SweepReport, fmt_ap

POINTS_KEY = "edgeseg.points"


def plot_pareto(report: SweepReport, path: str | os.PathLike) -> Path:
    """Write the PNG atomically; returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines; must precede pyplot
    import matplotlib.pyplot as plt

    from edgeseg.utils.atomic import atomic_path

    plans = report.plans
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    try:
        front = sorted((p for p in plans if p.pareto), key=lambda p: p.p50)
        rest = [p for p in plans if not p.pareto]
        if len(front) > 1:
            xs, ys = [], []
            for p in front:  # staircase: what the best AP is at each latency budget
                if xs:
                    xs.append(p.p50)
                    ys.append(ys[-1])
                xs.append(p.p50)
                ys.append(p.ap or 0.0)
            ax.plot(xs, ys, color="tab:blue", lw=1.2, alpha=0.6, zorder=1)
        drawn = {}
        if rest:
            drawn["dominated"] = ax.scatter([p.p50 for p in rest], [p.ap or 0.0 for p in rest], s=40,
                                            facecolors="none", edgecolors="grey", label="dominated", zorder=2)
        if front:
            drawn["pareto"] = ax.scatter([p.p50 for p in front], [p.ap or 0.0 for p in front], s=55,
                                         color="tab:blue", label="Pareto-optimal", zorder=3)
        ref = report.reference()
        ax.scatter([ref.p50], [ref.ap or 0.0], s=120, marker="s", facecolors="none", edgecolors="black",
                   label="FP32 reference", zorder=4)
        for p in rest:  # named quietly: the eye should go to the front, but every point is findable
            ax.annotate(p.display_name(), (p.p50, p.ap or 0.0), textcoords="offset points", xytext=(5, -9),
                        fontsize=6, color="grey")
        labelled = []
        # Front points are numbered on the plot and spelled out beside it: neighbours on
        # the front are often a few pixels apart, and full labels would overlap.
        listing = []
        for i, p in enumerate(front, start=1):
            ax.annotate(str(i), (p.p50, p.ap or 0.0), textcoords="offset points", xytext=(5, 4), fontsize=8,
                        color="tab:blue", fontweight="bold")
            listing.append(f"{i}. {p.display_name()}: {fmt_ap(p.ap)} AP, {p.p50:.2f} ms, {p.speedup:.2f}x")
            labelled.append(p.spec)
        if listing:
            ax.text(1.01, 0.0, "Pareto-optimal plans\n" + "\n".join(listing), transform=ax.transAxes,
                    fontsize=7, va="bottom", ha="left", family="monospace")
        ax.set_xlabel(f"p50 latency, ms (one pinned core, {report.backend})")
        ax.set_ylabel("mask AP")
        ax.set_title(f"{report.model.get('name', '?')}: accuracy vs latency per precision plan "
                     f"({'/'.join(report.components)})", fontsize=9)
        ax.grid(True, alpha=0.3)
        # Outside the axes: inside, it can hide a plan.
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        ax.margins(x=0.15, y=0.15)
        points = {kind: [list(map(float, xy)) for xy in col.get_offsets()] for kind, col in drawn.items()}
        meta = {"pareto": points.get("pareto", []), "dominated": points.get("dominated", []),
                "labelled": labelled}
        out = Path(path)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight", metadata={POINTS_KEY: json.dumps(meta)})
    finally:
        plt.close(fig)
    return out


def read_points(path: str | os.PathLike) -> dict:
    """The plotted coordinates stored in a PNG written by :func:`plot_pareto`."""
    from PIL import Image

    with Image.open(path) as im:
        return json.loads(im.text[POINTS_KEY])
