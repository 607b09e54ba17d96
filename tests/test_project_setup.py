"""The README's two commands are the whole set-up: `make test` installs what the tests drive."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _dry_run(target: str) -> str:
    if shutil.which("make") is None:
        pytest.fail("make is not installed (the README's commands need it)")
    # -n prints the recipe without running it; the stamp file decides whether install runs,
    # so force the whole recipe with -B.
    out = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout


def test_make_test_installs_the_system_tools_the_tests_drive():
    recipe = _dry_run("test")
    lines = recipe.splitlines()
    deps = next(i for i, line in enumerate(lines) if "scripts/ci-system-deps.sh" in line)
    pytest_line = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert deps < pytest_line  # adb/sshd are there before the first test needs them


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert "make test" in commands
    # no set-up step that the README's command would lack
    assert not any("ci-system-deps" in c for c in commands)
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme.split("\n## ", 2)[1]  # on the first screen
