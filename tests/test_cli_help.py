"""Every verb's --help ends with the same "Examples:" block (issue 12, item 8)."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from edgeseg.cli import COMMANDS, cli


def _verbs() -> list[list[str]]:
    """Every command line that has a help page: each verb, and each sub-verb of a group."""
    out = []
    for name in sorted(COMMANDS):
        out.append([name])
        cmd = cli.get_command(click.Context(cli), name)
        if isinstance(cmd, click.Group):
            out += [[name, sub] for sub in sorted(cmd.commands)]
    return out


def _example_block(text: str) -> list[str]:
    parts = re.split(r"\n[ \t]*Examples:\n", text)
    assert len(parts) == 2, "exactly one 'Examples:' heading"
    return parts[1].rstrip().splitlines()


@pytest.mark.parametrize("argv", _verbs(), ids=lambda a: " ".join(a))
def test_help_ends_with_examples_of_this_verb(argv):
    res = CliRunner().invoke(cli, [*argv, "--help"], terminal_width=100)
    assert res.exit_code == 0, res.output
    assert "\x08" not in res.output  # a stray click paragraph marker
    lines = _example_block(res.output)
    commands = [ln.strip() for ln in lines if ln.strip().startswith("edgeseg ")]
    assert any(c.startswith("edgeseg " + " ".join(argv)) for c in commands), lines
    # Nothing but examples after the heading: commands, their continuation lines, comments.
    previous = ""
    for ln in lines:
        s = ln.strip()
        assert not s or s.startswith(("edgeseg ", "#")) or previous.endswith("\\"), \
            f"{' '.join(argv)} --help: {ln!r} after 'Examples:' is not an example"
        previous = s
