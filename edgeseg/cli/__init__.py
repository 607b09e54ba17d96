"""``edgeseg`` command line: a thin click group.

Each verb lives in its own module under ``edgeseg/cli/`` and is imported only when it
is invoked (``edgeseg --help`` imports neither torch nor onnxruntime). Commands parse
arguments, call the library and print; every user-facing failure is an
:class:`~edgeseg.errors.EdgesegError`, printed as one clear message with its fix.
"""

from __future__ import annotations

import importlib
import sys

import click

from edgeseg import __version__
from edgeseg.errors import EdgesegError

# verb -> (module, attribute, one-line help). Adding a verb = one line here + its module.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "models": ("edgeseg.cli.models", "models", "List the model zoo."),
    "export": ("edgeseg.cli.export", "export", "Export a zoo model to ONNX (and TFLite / TNN; TensorRT engines: bench --target ssh://)."),
    "calibrate": ("edgeseg.cli.calibrate", "calibrate", "Compute activation ranges (KL / min-max / percentile) from images."),
    "quantize": ("edgeseg.cli.quantize", "quantize", "Apply a per-component precision plan (QDQ INT8 / FP16 ONNX)."),
    "check": ("edgeseg.cli.check", "check", "Preflight an ONNX model for a target (tflite, tnn)."),
    "bench": ("edgeseg.cli.bench", "bench", "Benchmark an artifact on one pinned core, a phone (adb) or a Jetson (ssh)."),
    "eval": ("edgeseg.cli.eval", "eval", "Mask AP of an artifact on a COCO-format dataset."),
    "sweep": ("edgeseg.cli.sweep", "sweep", "Accuracy vs latency over precision plans (table + Pareto plot)."),
    "sensitivity": ("edgeseg.cli.sensitivity", "sensitivity",
                    "AP drop per component and layer group at int8/fp16; greedy plan search."),
    "regress": ("edgeseg.cli.regress", "regress", "Gate CI on accuracy/latency regressions against a baseline."),
    "track": ("edgeseg.cli.track", "track", "Video instance segmentation with kernel reuse + association."),
    "train": ("edgeseg.cli.train", "train", "Train or fine-tune a zoo model on a COCO-format dataset."),
    "data": ("edgeseg.cli.data", "data", "Generate synthetic COCO / YouTube-VIS data."),
    "inspect": ("edgeseg.cli.inspect", "inspect", "Dump an artifact (ONNX, TNN, TFLite, calibration table)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        # Short help comes from the table so listing verbs imports nothing heavy.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeseg")
def cli() -> None:
    """edgeseg: instance segmentation from PyTorch to phones and edge boards.

    \b
    Example:
      edgeseg export mobileinst_topformer --input-size 640 -o out/mobileinst
      edgeseg bench out/mobileinst --runs 50
    """


class _WarningPrinter:
    """edgeseg's own warnings as one 'warning:' line (no source location); others as Python shows them."""

    def __init__(self, default):
        self.default = default

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        if category.__module__.startswith("edgeseg."):
            click.secho(f"warning: {message}", fg="yellow", err=True)
        else:
            self.default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> None:
    import warnings

    if not isinstance(warnings.showwarning, _WarningPrinter):
        warnings.showwarning = _WarningPrinter(warnings.showwarning)
    try:
        # standalone_mode=False: click returns ctx.exit()'s code instead of exiting, so
        # commands signal failure with ``ctx.exit(1)`` (e.g. the regression gate).
        rc = cli.main(args=argv, prog_name="edgeseg", standalone_mode=False)
    except EdgesegError as e:
        click.secho(f"error: {e.problem}", fg="red", err=True)
        if e.fix:
            click.echo(f"  fix: {e.fix}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    else:
        sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
