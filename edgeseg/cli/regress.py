"""``edgeseg regress``: gate CI on accuracy / latency regressions against a baseline sweep."""

from __future__ import annotations

from pathlib import Path

import click

_EPILOG = """\b
Exit status (CI can tell a regression from a gate that could not run):
  0  passed (warnings included), or --update-baseline wrote the baseline
  1  a plan regressed: its AP dropped or its latency ratio grew beyond tolerance
  2  usage or configuration problem: result or baseline missing or not a sweep JSON,
     sweeps that cannot be compared (other model, checkpoint, dataset, backend),
     a baseline plan missing from the result, bad options

\b
Examples:
  edgeseg regress reports/sweep.json --baseline benchmarks/baselines/sweep_ci.json
  edgeseg regress reports/sweep.json --baseline base.json --ap-tol 0.5 --latency-tol 0.25
  edgeseg regress reports/sweep.json --baseline base.json --update-baseline
"""

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "missing": "bold red", "new": "cyan"}


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def print_diff(report, result_path: Path, baseline_path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)  # CI logs: do not fold the table
    t = Table(title=f"{result_path} vs baseline {baseline_path}  (AP tol {report.ap_tol:g} points, "
                    f"{report.latency_stat} latency-ratio tol {100 * report.latency_tol:g}%)")
    for col, just in (("plan", "left"), ("AP base", "right"), ("AP now", "right"), ("dAP", "right"),
                      ("ratio base", "right"), ("ratio now", "right"), ("d ratio", "right"),
                      ("status", "left"), ("why", "left")):
        t.add_column(col, justify=just)
    for r in report.rows:
        style = _STYLE.get(r.status, "")
        t.add_row(r.label, _num(r.ap_base, ".2f"), _num(r.ap_now, ".2f"), _num(r.ap_delta, "+.2f"),
                  _num(r.ratio_base, ".3f"), _num(r.ratio_now, ".3f"),
                  "-" if r.ratio_change is None else f"{100 * r.ratio_change:+.1f}%",
                  f"[{style}]{r.status.upper()}[/{style}]", "; ".join(r.reasons))
    console.print(t)
    for n in report.notes:
        console.print(f"[dim]note:[/dim] {n}")


@click.command("regress", epilog=_EPILOG, context_settings={"max_content_width": 100})
@click.argument("result", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--baseline", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Sweep JSON to compare against (committed, e.g. benchmarks/baselines/sweep_ci.json).")
@click.option("--ap-tol", type=float, default=1.0, show_default=True,
              help="Largest AP drop (points, 0-100 scale) that still passes.")
@click.option("--latency-tol", type=float, default=0.15, show_default=True,
              help="Largest relative growth of a plan's latency ratio to FP32 that still passes.")
@click.option("--latency-stat", type=click.Choice(["p10", "p50"]), default="p10", show_default=True,
              help="Which latency statistic's ratio to FP32 is gated (p10: robust on a shared machine).")
@click.option("--update-baseline", is_flag=True,
              help="Write RESULT over --baseline (atomically) after showing the diff; exits 0.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the verdict as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --json file that edgeseg did not write.")
@click.pass_context
def regress(ctx, result, baseline, ap_tol, latency_tol, latency_stat, update_baseline, json_out, overwrite) -> None:
    """Compare RESULT (from `edgeseg sweep`) with --baseline, plan by plan.

    FAILS (exit 1) when a plan's mask AP drops by more than --ap-tol or its latency ratio
    to FP32 (--latency-stat of the plan / of FP32, measured in the same run, so machine
    speed cancels) grows by more than --latency-tol. Exits 2 when the gate cannot give a
    verdict: a missing or invalid file, incomparable sweeps, a baseline plan the result
    lacks. WARNS when a figure improved beyond tolerance (the baseline is stale). New
    plans are noted.
    """
    from edgeseg.errors import EdgesegError, UsageError

    try:
        _regress(ctx, result, baseline, ap_tol, latency_tol, latency_stat, update_baseline, json_out, overwrite)
    except UsageError:
        raise
    except EdgesegError as e:
        # Every error of the gate itself is "could not check" (exit 2), never "regressed" (1).
        raise UsageError(e.problem, e.fix) from e


def _regress(ctx, result, baseline, ap_tol, latency_tol, latency_stat, update_baseline, json_out,
             overwrite=False) -> None:
    from edgeseg.errors import EdgesegError, UsageError
    from edgeseg.eval.regress import check_tolerances, compare
    from edgeseg.quantize.sweep_report import load_sweep
    from edgeseg.utils import atomic

    check_tolerances(ap_tol, latency_tol)
    from edgeseg.utils.outputs import check_output_file, check_writable

    if json_out:
        check_output_file(json_out, flag="--json", overwrite=overwrite)
    if update_baseline:  # --update-baseline is the permission to replace it; it must be writable
        check_writable(baseline, want_dir=False, flag="--baseline")
    res = load_sweep(result, "result")
    if update_baseline and not baseline.exists():
        atomic.write_json(baseline, res.to_dict())
        click.echo(f"created baseline {baseline} from {result} ({len(res.plans)} plans)")
        return
    if not baseline.exists():
        raise EdgesegError(f"baseline {baseline} not found",
                           f"create it from this result: edgeseg regress {result} --baseline {baseline} "
                           "--update-baseline")
    base = load_sweep(baseline, "baseline")
    try:
        report = compare(res, base, ap_tol=ap_tol, latency_tol=latency_tol, latency_stat=latency_stat)
    except EdgesegError as e:
        if not update_baseline:
            raise
        # Accepting a run of another checkpoint/dataset is what --update-baseline is for.
        atomic.write_json(baseline, res.to_dict())
        click.echo(f"replaced baseline {baseline} (not comparable: {e.problem})")
        return
    print_diff(report, result, baseline)
    if json_out:
        atomic.write_json(json_out, report.to_dict())
    n_fail, n_missing, n_warn = len(report.regressed), len(report.missing), len(report.warned)
    if update_baseline:
        atomic.write_json(baseline, res.to_dict())
        click.echo(f"updated baseline {baseline} from {result}"
                   + (f" (accepting {n_fail + n_missing} regression(s))" if n_fail + n_missing else ""))
        return
    if n_warn:
        click.secho(f"warning: {n_warn} plan(s) improved beyond tolerance; the baseline is stale "
                    f"(refresh it with --update-baseline)", fg="yellow", err=True)
    if n_fail:
        also = f"; {n_missing} baseline plan(s) not measured" if n_missing else ""
        click.secho(f"FAILED: {n_fail} of {len(report.rows)} plan(s) regressed{also}", fg="red", err=True)
        ctx.exit(1)
    if n_missing:
        labels = ", ".join(r.label for r in report.missing)
        raise UsageError(f"{result} did not measure {n_missing} plan(s) of the baseline ({labels}), so the gate "
                         "cannot say whether they regressed",
                         "run the sweep with the baseline's --plans, or accept the new set of plans with "
                         "--update-baseline")
    click.secho(f"passed: {len(report.rows)} plan(s) within tolerance", fg="green", err=True)
