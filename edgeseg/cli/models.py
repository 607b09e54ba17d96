"""``edgeseg models``: list the zoo."""

from __future__ import annotations

import json

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def models(as_json: bool) -> None:
    """List the registered models.

    \b
    Example:
      edgeseg models
      edgeseg models --json | jq '.[].name'
    """
    from edgeseg.models.registry import list_models, model_entry

    rows = []
    for name in list_models():
        e = model_entry(name)
        rows.append({"name": name, "family": e.family, "description": e.description,
                     "default_cfg": {k: (list(v) if isinstance(v, tuple) else v) for k, v in e.default_cfg.items()}})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="edgeseg model zoo")
    table.add_column("model", style="bold")
    table.add_column("family")
    table.add_column("description")
    for r in rows:
        table.add_row(r["name"], r["family"], r["description"])
    Console().print(table)
