"""``edgeseg bench`` end to end, as a user runs it (a real subprocess, real exit codes)."""

import json
import os
import subprocess
import sys

import pytest

from tests.bench_helpers import tiny_artifact_folder, tiny_conv_onnx

CORE = str(sorted(os.sched_getaffinity(0))[0])


def edgeseg(*args, cwd=None):
    env = {**os.environ, "EDGESEG_PROGRESS": "0", "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "edgeseg", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


def test_bench_folder_writes_all_formats(tmp_path):
    folder = tiny_artifact_folder(tmp_path / "art")
    out = tmp_path / "reports"
    res = edgeseg("bench", folder, "--runs", 9, "--warmup", 2, "--core", CORE,
                  "-o", out / "r.json", "-o", out / "r.md", "-o", out / "r.html")
    assert res.returncode == 0, res.stderr
    assert "p50" in res.stdout and "onnxruntime" in res.stdout  # the rich table on stdout
    d = json.loads((out / "r.json").read_text())
    assert d["complete"] is True
    assert d["latency"]["n"] == 9 and d["latency"]["warmup"] == 2
    assert d["runtime"]["affinity"] == [int(CORE)]
    assert d["runtime"]["threads_intra_op"] == 1
    assert d["artifact"]["model"] == "tiny_conv"
    assert "| p50 |" in (out / "r.md").read_text()
    assert "<svg" in (out / "r.html").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["r.html", "r.json", "r.md"]  # no temp leftovers


def test_bench_bare_onnx_file(tmp_path):
    onnx_path = tiny_conv_onnx(tmp_path / "m.onnx")
    res = edgeseg("bench", onnx_path, "--runs", 3, "--warmup", 0, "--core", CORE, "-o", tmp_path / "r.json")
    assert res.returncode == 0, res.stderr
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["plan"] is None and d["artifact"]["name"] == "m.onnx"


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "does not exist"),
    (["{onnx}", "-o", "{tmp}/r.txt"], "cannot write a report"),
    (["{onnx}", "--runs", "0"], "--runs must be at least 1"),
    (["{onnx}", "--core", "100000"], "not available to this process"),
    (["{onnx}", "--target", "ftp://x"], "unknown target"),
    (["{corrupt}", "-o", "{tmp}/r.json"], "cannot load"),
])
def test_bench_errors_are_one_clear_message_and_leave_nothing(tmp_path, args, message):
    onnx_path = tiny_conv_onnx(tmp_path / "m.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x01garbage")
    subst = {"missing": tmp_path / "nope", "onnx": onnx_path, "corrupt": corrupt, "tmp": tmp_path}
    before = set(tmp_path.iterdir())
    res = edgeseg("bench", *[a.format(**subst) for a in args])
    assert res.returncode != 0
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert "fix:" in res.stderr
    assert set(tmp_path.iterdir()) == before  # no report, no temp file


def test_bench_help_shows_examples():
    res = edgeseg("bench", "--help")
    assert res.returncode == 0
    assert "Examples:" in res.stdout and "--target adb" in res.stdout and "ssh://" in res.stdout
