"""What users touch first stays light: the CLI's help, the registry, manifests, plans and the
contract import none of torch, onnxruntime, TensorFlow or TensorRT (Polygraphy's
test_dependencies, edgeseg's version)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "tensorflow", "tensorrt", "ai_edge_litert")

CASES = {
    "cli help": "from edgeseg.cli import cli; from click.testing import CliRunner; "
                "assert CliRunner().invoke(cli, ['--help']).exit_code == 0",
    "registry": "from edgeseg.models.registry import list_models, list_families, family; "
                "[family(f).load('decoder') for f in list_families()]; list_models()",
    "manifest + plan": "from edgeseg.export.manifest import Manifest; from edgeseg.quantize.plan import PrecisionPlan; "
                       "m = Manifest(model='x', components={'a': {}, 'b': {}}); m.plan('a=int8,b=fp16')",
    "contract": "import edgeseg.models.contract, edgeseg.track.strategy, edgeseg.export, edgeseg.api",
}


def _imported(code: str) -> list[str]:
    probe = code + "; import sys; print(','.join(m for m in " + repr(HEAVY) + " if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [m for m in p.stdout.strip().split(",") if m]


def test_light_entry_points_import_no_heavy_dependency():
    heavy = {name: _imported(code) for name, code in CASES.items()}
    assert all(not mods for mods in heavy.values()), heavy
