"""scripts/build_tnn.sh: the TNN build the README's TNN figures came from, per device."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_tnn.sh"


def run(*args):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_dry_run_prints_the_device_flags(tmp_path):
    (tmp_path / "CMakeLists.txt").write_text("project(TNN)\n")
    arm = run("--dry-run", tmp_path, "arm", tmp_path / "b")
    assert arm.returncode == 0, arm.stderr
    assert "-DTNN_ARM_ENABLE=ON -DTNN_X86_ENABLE=OFF" in arm.stdout and "-DTNN_TEST_ENABLE=ON" in arm.stdout
    assert f"ninja -C {tmp_path / 'b'} TNNTest" in arm.stdout
    x86 = run("--dry-run", tmp_path, "x86")
    assert "-DTNN_ARM_ENABLE=OFF -DTNN_X86_ENABLE=ON" in x86.stdout and "build-edgeseg-x86" in x86.stdout


def test_not_a_tnn_checkout_or_unknown_device_is_one_error(tmp_path):
    for args in ((tmp_path, "arm"), (tmp_path, "riscv"), ()):
        r = run(*args)
        assert r.returncode == 2 and r.stderr.startswith("error: usage") and "fix:" in r.stderr
