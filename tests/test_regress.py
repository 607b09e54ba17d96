"""The regression gate: passes on its own baseline, fails on doctored results (AP drop,
latency-ratio growth, missing plan), warns on improvements, refuses incomparable runs.
(The gate on a real sweep result is in test_sweep.py, which owns the end-to-end sweep.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeseg.errors import EdgesegError
from edgeseg.eval.regress import compare
from edgeseg.quantize.sweep_report import SweepReport
from tests.sweep_artifacts import doctored, report_dict, run_cli


def _cmp(result: dict, baseline: dict, **kw):
    return compare(SweepReport.from_dict(result), SweepReport.from_dict(baseline), **kw)


def _status(report) -> dict[str, str]:
    return {r.label: r.status for r in report.rows}


def _write(path, data: dict):
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------ library
def test_baseline_against_itself_passes():
    base = report_dict()
    rep = _cmp(base, base)
    assert rep.passed and not rep.warned
    assert set(_status(rep).values()) == {"ok"}


def test_ap_drop_beyond_tolerance_fails_and_within_passes():
    base = report_dict()  # int8 AP 41.0
    rep = _cmp(doctored(base, "int8", ap=39.9), base, ap_tol=1.0)
    assert _status(rep)["int8"] == "fail" and not rep.passed
    assert "AP dropped 1.10" in rep.rows[3].reasons[0]
    assert not rep.latency_only
    both = _cmp(doctored(doctored(base, "int8", ap=39.9), "mixed", ratio_factor=1.5), base)
    assert len(both.failed) == 2 and not both.latency_only  # an AP failure is never re-measured away
    assert _cmp(doctored(base, "int8", ap=40.0), base, ap_tol=1.0).passed  # exactly the tolerance
    assert _cmp(doctored(base, "int8", ap=40.5), base, ap_tol=1.0).passed
    assert not _cmp(doctored(base, "int8", ap=40.5), base, ap_tol=0.25).passed
    # the FP32 reference is gated on AP too
    assert _status(_cmp(doctored(base, "fp32", ap=43.0), base))["fp32"] == "fail"


def test_latency_ratio_growth_beyond_tolerance_fails():
    base = report_dict()
    rep = _cmp(doctored(base, "mixed", ratio_factor=1.20), base, latency_tol=0.15)
    assert _status(rep)["mixed"] == "fail"
    assert "grew 20.0%" in " ".join(r for row in rep.rows for r in row.reasons)
    assert rep.latency_only  # what CI may confirm by re-measuring
    assert _cmp(doctored(base, "mixed", ratio_factor=1.10), base, latency_tol=0.15).passed
    assert not _cmp(doctored(base, "mixed", ratio_factor=1.10), base, latency_tol=0.05).passed


def test_gated_statistic_is_p10_by_default_and_p50_on_request():
    base = report_dict()
    noisy_median = doctored(base, "int8", ratio_factor=1.4, stats=("p50",))  # p50 jumped, p10 did not
    assert _cmp(noisy_median, base).passed
    rep = _cmp(noisy_median, base, latency_stat="p50")
    assert _status(rep)["int8"] == "fail" and "p50 latency ratio" in " ".join(rep.rows[3].reasons)
    slow_fast_decile = doctored(base, "int8", ratio_factor=1.4, stats=("p10",))
    assert _status(_cmp(slow_fast_decile, base))["int8"] == "fail"
    old = json.loads(json.dumps(base))
    for p in old["plans"]:
        del p["latency_ratios"]  # a result written before p10 was recorded
    with pytest.raises(EdgesegError, match="no p10 latency ratio"):
        _cmp(base, old)
    assert _cmp(base, old, latency_stat="p50").passed


def test_machine_speed_cancels_in_the_ratio():
    """Every p50 twice as slow (a slower CI machine), same ratios: passes."""
    base = report_dict()
    slow = json.loads(json.dumps(base))
    for p in slow["plans"]:
        for stat in ("p10", "p50"):
            p["latency_ms"][stat] *= 2.0
    rep = _cmp(slow, base)
    assert rep.passed and not rep.warned


def test_improvements_beyond_tolerance_warn_but_pass():
    base = report_dict()
    rep = _cmp(doctored(doctored(base, "int8", ap=43.5), "mixed", ratio_factor=0.7), base)
    assert rep.passed
    assert _status(rep)["int8"] == "warn" and _status(rep)["mixed"] == "warn"
    assert any("stale baseline" in r for row in rep.warned for r in row.reasons)


def test_missing_plan_fails_and_new_plan_is_noted():
    base = report_dict()
    fewer = json.loads(json.dumps(base))
    del fewer["plans"][2]  # mixed
    rep = _cmp(fewer, base)
    assert _status(rep)["mixed"] == "missing" and not rep.passed
    rep = _cmp(base, fewer)  # the result has a plan the baseline lacks
    assert rep.passed and _status(rep)["mixed"] == "new"


@pytest.mark.parametrize("field, value, message", [
    (("model", "name"), "mobileinst_topformer", "baseline is for model"),
    (("model", "checkpoint_sha256"), "e" * 64, "another checkpoint"),
    (("model", "input_size"), [320, 320], "input"),
    (("dataset", "annotations_sha256"), "f" * 64, "another dataset"),
    (("dataset", "images"), 20, "evaluated 50 images"),
    (("backend",), "tflite", "measured on onnxruntime"),
])
def test_incomparable_runs_are_refused(field, value, message):
    base = report_dict()
    other = json.loads(json.dumps(base))
    target = other
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    with pytest.raises(EdgesegError, match=message):
        _cmp(other, base)


def test_harmless_differences_are_notes():
    base = report_dict()
    other = json.loads(json.dumps(base))
    other["calibration"]["table_sha256"] = "u" * 64
    other["tool_versions"]["onnxruntime"] = "1.21.0"
    rep = _cmp(other, base)
    assert rep.passed
    assert any("calibration ranges differ (table_sha256" in n for n in rep.notes)
    assert any("onnxruntime 1.20.0 -> 1.21.0" in n for n in rep.notes)


def test_calibrations_compare_by_ranges_when_both_sides_have_them():
    # Same ranges from images in another folder (another machine): not a difference.
    base = report_dict()
    base["calibration"]["ranges_sha256"] = "r" * 64
    moved = json.loads(json.dumps(base))
    moved["calibration"]["table_sha256"] = "u" * 64
    assert not any("calibration" in n for n in _cmp(moved, base).notes)
    changed = json.loads(json.dumps(base))
    changed["calibration"]["ranges_sha256"] = "s" * 64
    assert any("calibration ranges differ (ranges_sha256" in n for n in _cmp(changed, base).notes)


def _with_numerics(d: dict, accuracy: str, int8_dot: str = "AVX512-VNNI") -> dict:
    out = json.loads(json.dumps(d))
    out["numerics"] = {"accuracy": accuracy, "latency": "fused", "host_isa": "x86_64: ...", "host_int8_dot": int8_dot}
    return out


def test_ap_measured_with_other_int8_numerics_is_refused():
    base = _with_numerics(report_dict(), "fused")
    with pytest.raises(EdgesegError, match="fused int8 numerics, the result's with simulated") as e:
        _cmp(_with_numerics(report_dict(), "simulated"), base)
    assert "--numerics fused" in e.value.fix
    assert _cmp(_with_numerics(report_dict(), "simulated"), _with_numerics(report_dict(), "simulated")).passed


def test_numerics_notes_for_an_old_baseline_and_another_int8_path():
    old = report_dict()  # written before sweeps recorded numerics (their AP used fused kernels)
    rep = _cmp(_with_numerics(report_dict(), "simulated"), old)
    assert any("does not record its int8 numerics" in n for n in rep.notes)
    avx2 = _with_numerics(report_dict(), "simulated", "AVX2 without VNNI (VPMADDUBSW, saturating int16 pairs)")
    rep = _cmp(avx2, _with_numerics(report_dict(), "simulated"))
    assert rep.passed and any("int8 paths differ (AVX512-VNNI -> AVX2 without VNNI" in n for n in rep.notes)


def test_bad_tolerances():
    base = report_dict()
    with pytest.raises(EdgesegError, match="--ap-tol"):
        _cmp(base, base, ap_tol=-1)
    with pytest.raises(EdgesegError, match="--latency-tol"):
        _cmp(base, base, latency_tol=1.5)


# ------------------------------------------------------------------ CLI
def test_cli_exit_codes(tmp_path):
    base = _write(tmp_path / "base.json", report_dict())
    code, out, err = run_cli(["regress", base, "--baseline", base])
    assert code == 0 and "passed" in err
    bad = _write(tmp_path / "bad.json", doctored(report_dict(), "int8", ap=30.0))
    code, out, err = run_cli(["regress", bad, "--baseline", base, "--json", tmp_path / "verdict.json"])
    assert code == 1 and "FAILED" in err
    assert "FAIL" in out and "AP dropped 11.00" in out  # the diff table says which and why
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["passed"] is False
    slow = _write(tmp_path / "slow.json", doctored(report_dict(), "mixed", ratio_factor=1.5))
    assert run_cli(["regress", slow, "--baseline", base])[0] == 1
    better = _write(tmp_path / "better.json", doctored(report_dict(), "int8", ap=44.0))
    code, out, err = run_cli(["regress", better, "--baseline", base])
    assert code == 0 and "stale" in err


@pytest.mark.parametrize("case", ["missing", "invalid", "not-a-sweep", "other-model", "no-baseline"])
def test_cli_error_paths(tmp_path, case):
    base = _write(tmp_path / "base.json", report_dict())
    result = tmp_path / "result.json"
    if case == "invalid":
        result.write_text("{")
    elif case == "not-a-sweep":
        result.write_text(json.dumps({"AP": 40.0}))
    elif case == "other-model":
        d = report_dict()
        d["model"]["name"] = "yolact_edge"
        _write(result, d)
    elif case == "no-baseline":
        _write(result, report_dict())
        base = tmp_path / "nope.json"
    code, out, err = run_cli(["regress", result, "--baseline", base])
    assert code == 2  # no verdict: CI must not read it as a regression (exit 1)
    assert "error:" in err and "fix:" in err
    assert "Traceback" not in err


def test_cli_bad_option_value_is_a_usage_error_not_a_regression(tmp_path):
    base = _write(tmp_path / "base.json", report_dict())
    code, out, err = run_cli(["regress", base, "--baseline", base, "--ap-tol", "-1"])
    assert code == 2 and "--ap-tol" in err and "Traceback" not in err


def test_cli_missing_plan_is_a_configuration_problem_unless_another_plan_regressed(tmp_path):
    base = _write(tmp_path / "base.json", report_dict())
    fewer = report_dict()
    fewer["plans"] = [p for p in fewer["plans"] if p["name"] != "int8"]
    result = _write(tmp_path / "fewer.json", fewer)
    code, out, err = run_cli(["regress", result, "--baseline", base, "--json", tmp_path / "verdict.json"])
    assert code == 2 and "did not measure 1 plan" in err and "--plans" in err
    assert json.loads((tmp_path / "verdict.json").read_text())["passed"] is False
    worse = doctored(fewer, "mixed", ap=30.0)
    code, out, err = run_cli(["regress", _write(tmp_path / "worse.json", worse), "--baseline", base])
    assert code == 1 and "FAILED: 1 of" in err and "1 baseline plan(s) not measured" in err


def test_update_baseline_rewrites_it_atomically(tmp_path):
    base = _write(tmp_path / "base.json", report_dict())
    new = doctored(report_dict(), "int8", ap=30.0)
    result = _write(tmp_path / "result.json", new)
    code, out, err = run_cli(["regress", result, "--baseline", base, "--update-baseline"])
    assert code == 0 and "updated baseline" in out and "accepting 1 regression" in out
    assert SweepReport.from_dict(json.loads(base.read_text())).to_dict() == SweepReport.from_dict(new).to_dict()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    assert run_cli(["regress", result, "--baseline", base])[0] == 0
    # a missing baseline is created; an incomparable one is replaced
    fresh = tmp_path / "sub" / "fresh.json"
    assert run_cli(["regress", result, "--baseline", fresh, "--update-baseline"])[0] == 0
    assert json.loads(fresh.read_text())["plans"][3]["metrics"]["AP"] == 30.0
    other = report_dict()
    other["model"]["checkpoint_sha256"] = "9" * 64
    _write(result, other)
    code, out, _ = run_cli(["regress", result, "--baseline", base, "--update-baseline"])
    assert code == 0 and "replaced baseline" in out
    assert json.loads(base.read_text())["model"]["checkpoint_sha256"] == "9" * 64


# ------------------------------------------------------------------ scripts/ci-regress.sh
FAKE_EDGESEG = """#!/usr/bin/env bash
# Stands in for edgeseg: logs each verb; `regress` exits with $FAKE_RC (first call) or
# $FAKE_RC2 (later calls) and writes the verdict JSON the script reads.
echo "$1" >> "$FAKE_LOG"
if [ "$1" = regress ]; then
  n=$(grep -c '^regress$' "$FAKE_LOG")
  rc=$FAKE_RC; [ "$n" -gt 1 ] && rc=$FAKE_RC2
  for ((i = 1; i <= $#; i++)); do
    if [ "${!i}" = --json ]; then j=$((i + 1)); mkdir -p "$(dirname "${!j}")"
      echo "{\\"latency_only_failure\\": $FAKE_LATENCY_ONLY}" > "${!j}"; fi
  done
  exit "$rc"
fi
exit 0
"""


@pytest.mark.parametrize("rc, latency_only, rc2, want_rc, want_sweeps", [
    (0, "false", 0, 0, 1),
    (2, "false", 0, 2, 1),   # no verdict: passed on as 2, nothing re-measured
    (1, "false", 0, 1, 1),   # an AP regression: fails at once
    (1, "true", 0, 0, 2),    # latency only: re-measured once, the second run decides
    (1, "true", 1, 1, 2),
])
def test_ci_script_passes_the_gates_exit_codes_on(tmp_path, rc, latency_only, rc2, want_rc, want_sweeps):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    fake = tmp_path / "edgeseg"
    fake.write_text(FAKE_EDGESEG)
    fake.chmod(0o755)
    log = tmp_path / "log"
    env = dict(os.environ, EDGESEG=str(fake), PYTHON=sys.executable, CI_REGRESS_OUT=str(tmp_path / "out"),
               FAKE_LOG=str(log), FAKE_RC=str(rc), FAKE_RC2=str(rc2),
               FAKE_LATENCY_ONLY=latency_only)
    proc = subprocess.run(["bash", str(root / "scripts" / "ci-regress.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == want_rc, proc.stderr
    assert log.read_text().split().count("sweep") == want_sweeps
