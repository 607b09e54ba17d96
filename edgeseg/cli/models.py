"""``edgeseg models``: list the zoo."""

from __future__ import annotations

import json

import click


_EPILOG = """\b
Examples:
  edgeseg models
  edgeseg models --json | jq '.[] | select(.shipped_weights) | .name'
"""


@click.command("models", epilog=_EPILOG)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def models(as_json: bool) -> None:
    """List the registered models: family, input size, and whether the package ships
    trained weights for it (`--weights zoo`)."""
    from edgeseg.models.pretrained import zoo_checkpoints
    from edgeseg.models.registry import list_models, model_entry

    shipped = zoo_checkpoints()  # a folder listing: no torch
    rows = []
    for name in list_models():
        e = model_entry(name)
        size = e.default_cfg.get("input_size")
        rows.append({"name": name, "family": e.family, "description": e.description,
                     "input_size": list(size) if isinstance(size, (tuple, list)) else size,
                     "shipped_weights": shipped[name].name if name in shipped else None,
                     "default_cfg": {k: (list(v) if isinstance(v, tuple) else v) for k, v in e.default_cfg.items()}})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="edgeseg model zoo",
                  caption="weights: 'shipped' = trained weights in the package (--weights zoo); "
                          "the others start from random weights unless you pass --weights")
    table.add_column("model", style="bold")
    table.add_column("family")
    table.add_column("input", justify="right")
    table.add_column("weights")
    table.add_column("description")
    for r in rows:
        size = r["input_size"]
        table.add_row(r["name"], r["family"], "x".join(map(str, size)) if isinstance(size, list) else str(size or "-"),
                      "[green]shipped[/green]" if r["shipped_weights"] else "-", r["description"])
    Console().print(table)
