"""The precision sweep: plans, Pareto front, fastest-within-drop, Table I and plot agree with
the JSON, and one real end-to-end sweep of a tiny MobileInst checkpoint."""

from __future__ import annotations

import json

import pytest

from edgeseg.errors import EdgesegError
from edgeseg.quantize.sweep_report import SweepReport, load_sweep, pareto_front
from tests.sweep_artifacts import COMPONENTS, report_dict, run_cli, tiny_sweep, tiny_sweep_inputs  # noqa: F401


def _table_rows(markdown: str, n_components: int) -> list[list[str]]:
    """Body rows of the Markdown table (header and separator dropped)."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in rows]
    assert cells[0][:n_components] == COMPONENTS[:n_components] or n_components != 3
    return cells[2:]


def _flat(points) -> list[float]:
    """Sorted (x, y) points as one flat list, for pytest.approx."""
    return [v for xy in sorted(tuple(p) for p in points) for v in xy]


# ------------------------------------------------------------------ Pareto / fastest
def test_pareto_front_hand_made_points():
    # (latency, AP): a is fastest, c most accurate, b between; d is beaten by b on both counts;
    # e ties b's latency with less AP (dominated); f duplicates c (neither dominates the other).
    pts = [(10.0, 30.0), (20.0, 40.0), (30.0, 45.0), (25.0, 39.0), (20.0, 35.0), (30.0, 45.0)]
    assert pareto_front(pts) == {0, 1, 2, 5}
    assert pareto_front([(5.0, 1.0)]) == {0}
    # a plan both slower and less accurate than FP32 is never on the front
    assert pareto_front([(1.0, 50.0), (2.0, 49.0)]) == {0}


def test_mark_pareto_and_fastest_within():
    rep = SweepReport.from_dict(report_dict())
    rep.mark_pareto()
    on_front = {p.display_name() for p in rep.plans if p.pareto}
    # fp16 is slower than fp32 with +0.1 AP: still on the front (nothing beats it on AP)
    assert on_front == {"fp32", "fp16", "mixed", "int8"}
    assert rep.fastest_within(1.0).name == "mixed"  # 44.4 >= 45.0 - 1.0 and fastest such
    assert rep.fastest_within(0.6).name == "mixed"  # the boundary counts as within
    assert rep.fastest_within(0.5).name == "fp32"  # nothing faster loses at most 0.5 AP
    assert rep.fastest_within(10.0).name == "int8"


# ------------------------------------------------------------------ plans
def test_default_plans_are_fp32_plus_every_combination():
    from edgeseg.export.manifest import Manifest
    from edgeseg.quantize.sweep import parse_plans

    m = Manifest(model="m", components={c: {} for c in COMPONENTS},
                 presets={"mixed": "backbone=int8,mask_decoder=int8,instance_decoder=fp16"})
    plans = parse_plans("default", m)
    assert len(plans) == 1 + 2 ** 3
    assert plans[0].is_fp32
    assert len({p.spec() for p in plans}) == len(plans)
    assert all(set(p.precisions.values()) <= {"fp16", "int8"} for p in plans[1:])
    names = {p.name for p in plans}
    assert {"fp32", "fp16", "int8", "mixed"} <= names  # presets recognised by value
    # explicit plans: FP32 still added first, duplicates (preset vs spelled out) dropped
    plans = parse_plans("mixed; backbone=int8,mask_decoder=int8,instance_decoder=fp16 ;int8", m)
    assert [p.name for p in plans] == ["fp32", "mixed", "int8"]


@pytest.mark.parametrize("text, message", [("backbon=int8", "unknown component"), ("  ;  ", "--plans is empty"),
                                           ("backbone=int4", "unknown precision")])
def test_bad_plans_are_one_clear_error(text, message):
    from edgeseg.export.manifest import Manifest
    from edgeseg.quantize.sweep import parse_plans

    m = Manifest(model="m", components={c: {} for c in COMPONENTS})
    with pytest.raises(EdgesegError, match=message):
        parse_plans(text, m)


# ------------------------------------------------------------------ report <-> table/plot
def test_markdown_table_matches_json_for_hand_made_report():
    rep = SweepReport.from_dict(report_dict())
    rep.mark_pareto()
    rows = _table_rows(rep.to_markdown(), 3)
    assert len(rows) == len(rep.plans)
    for row, p in zip(rows, rep.plans):
        assert row[:3] == [p.precisions[c].upper() for c in COMPONENTS]
        assert float(row[3]) == pytest.approx(p.metrics["AP"], abs=0.05)
        assert float(row[4]) == pytest.approx(p.metrics["AP50"], abs=0.05)
        assert float(row[5]) == pytest.approx(p.p50, abs=0.005)
        assert float(row[6].rstrip("x")) == pytest.approx(40.0 / p.p50, abs=0.005)  # FP32 p50 is 40 ms
        assert (row[7] == "yes") == p.pareto
    assert "Fastest plan within 1 AP of FP32" in rep.to_markdown()
    assert "backbone=int8,mask_decoder=int8,instance_decoder=fp16" in rep.to_markdown().split("Fastest")[1]


def test_plot_points_match_json(tmp_path):
    from edgeseg.quantize.sweep_plot import plot_pareto, read_points

    rep = SweepReport.from_dict(report_dict())
    rep.mark_pareto()
    png = plot_pareto(rep, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pts = read_points(png)
    front = sorted((p.p50, p.ap) for p in rep.plans if p.pareto)
    rest = sorted((p.p50, p.ap) for p in rep.plans if not p.pareto)
    assert _flat(pts["pareto"]) == pytest.approx(_flat(front))
    assert _flat(pts["dominated"]) == pytest.approx(_flat(rest))
    assert set(pts["labelled"]) == {p.spec for p in rep.plans if p.pareto}


def test_write_reports_is_all_or_nothing(tmp_path, monkeypatch):
    from edgeseg.quantize import sweep_plot
    from edgeseg.quantize.sweep import write_reports

    rep = SweepReport.from_dict(report_dict())

    def broken(report, path):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(sweep_plot, "plot_pareto", broken)
    with pytest.raises(RuntimeError):
        write_reports(rep, tmp_path / "r")
    assert list((tmp_path / "r").iterdir()) == []  # no JSON without its plot, no temp files


def test_invalid_sweep_json_is_one_clear_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(EdgesegError, match="not valid JSON"):
        load_sweep(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(EdgesegError, match="not an edgeseg sweep result"):
        load_sweep(bad)
    d = report_dict()
    del d["plans"][1]["latency_ratio"]
    bad.write_text(json.dumps(d))
    with pytest.raises(EdgesegError, match="malformed field"):
        load_sweep(bad)
    with pytest.raises(EdgesegError, match="not found"):
        load_sweep(tmp_path / "missing.json")


# ------------------------------------------------------------------ end to end
def test_sweep_end_to_end_outputs_agree(tiny_sweep):
    out = tiny_sweep["out"]
    data = json.loads((out / "sweep.json").read_text())
    rep = load_sweep(out / "sweep.json")
    assert [p.name for p in rep.plans] == ["fp32", "int8", "mixed"]
    assert rep.model["checkpoint_sha256"] and rep.calibration["table_sha256"]
    assert rep.calibration["num_images"] == 4
    assert rep.dataset["images"] == 4 and rep.backend == "onnxruntime"
    assert {"onnxruntime", "onnx", "edgeseg"} <= set(rep.tool_versions)
    ref = rep.reference()
    assert ref.latency_ratio == 1.0
    for p in rep.plans:
        assert p.runs == 6
        assert len(p.latency_ms["per_round_p50"]) == 2
        assert p.latency_ratio == pytest.approx(p.p50 / ref.p50)
        assert p.ratio("p10") == pytest.approx(p.latency_ms["p10"] / ref.latency_ms["p10"])
        assert p.latency_ms["min"] <= p.latency_ms["p10"] <= p.p50
        assert 0.0 <= p.ap <= 100.0
        assert (out / "work" / "mobileinst_test" / p.file).is_file()
    # Pareto flags are exactly the front of the measured points
    front = pareto_front([(p.p50, p.ap) for p in rep.plans])
    assert [p.pareto for p in rep.plans] == [i in front for i in range(len(rep.plans))]
    assert [p["pareto"] for p in data["plans"]] == [p.pareto for p in rep.plans]
    # the Markdown table shows the JSON's numbers, plan by plan
    rows = _table_rows((out / "sweep.md").read_text(), 3)
    assert len(rows) == 3
    for row, p in zip(rows, rep.plans):
        assert row[:3] == [p.precisions[c].upper() for c in COMPONENTS]
        assert float(row[3]) == pytest.approx(p.ap, abs=0.05)
        assert float(row[5]) == pytest.approx(p.p50, abs=0.005)
        assert float(row[6].rstrip("x")) == pytest.approx(p.speedup, abs=0.005)
        assert (row[7] == "yes") == p.pareto
    # the plot shows the JSON's points
    from edgeseg.quantize.sweep_plot import read_points

    pts = read_points(out / "sweep_pareto.png")
    assert _flat(pts["pareto"]) == pytest.approx(_flat((p.p50, p.ap) for p in rep.plans if p.pareto))
    assert len(pts["pareto"]) + len(pts["dominated"]) == 3
    # --max-ap-drop answer printed
    best = rep.fastest_within(1.0)
    assert "Fastest plan within 1 AP of FP32" in tiny_sweep["stdout"]
    assert best.spec in tiny_sweep["stdout"]
    assert "[3/3] int8" not in tiny_sweep["stderr"] and "[3/3] mixed" in tiny_sweep["stderr"]  # progress
    # AP with simulated Q/DQ (the same on every host), latency with the fused kernels; both
    # read back from the runtimes, recorded with the host's ISA in JSON and Markdown.
    assert data["numerics"]["accuracy"] == "simulated" and data["numerics"]["latency"] == "fused"
    assert data["numerics"]["host_isa"] and data["numerics"]["host_int8_dot"]
    assert data["latency"]["runtime"]["numerics"] == "fused"
    assert isinstance(data["latency"]["device_before"]["isa"], dict)
    assert "int8 numerics: AP simulated, latency fused" in (out / "sweep.md").read_text()


def test_sweep_ap_is_what_eval_measures(tiny_sweep):
    """The sweep's AP for a plan equals `evaluate_artifact` run on that very file."""
    from edgeseg.eval.coco import evaluate_artifact

    rep = load_sweep(tiny_sweep["out"] / "sweep.json")
    mixed = rep.plan("backbone=int8,mask_decoder=int8,instance_decoder=fp16")
    file = tiny_sweep["out"] / "work" / "mobileinst_test" / mixed.file
    res = evaluate_artifact(file, tiny_sweep["val_json"], tiny_sweep["val"])
    assert res.metrics["AP"] == mixed.metrics["AP"] and res.detections == mixed.detections
    assert res.numerics == rep.numerics["accuracy"] == "simulated"


def test_regress_on_a_real_sweep(tiny_sweep, tmp_path):
    """The gate passes a real result against itself and fails it with a doctored latency ratio."""
    result = tiny_sweep["out"] / "sweep.json"
    assert run_cli(["regress", result, "--baseline", result])[0] == 0
    data = json.loads(result.read_text())
    data["plans"][2]["latency_ratios"]["p10"] *= 1.25  # mixed got 25% slower relative to FP32
    (tmp_path / "d.json").write_text(json.dumps(data))
    code, out, err = run_cli(["regress", tmp_path / "d.json", "--baseline", result])
    assert code == 1 and "grew 25.0%" in out


def test_sweep_of_an_export_folder_leaves_it_untouched(tiny_sweep, tmp_path):
    inp = tiny_sweep
    art = inp["out"] / "work" / "mobileinst_test"  # an export folder (FP32 ONNX + manifest)
    before = sorted(p.name for p in art.iterdir())
    manifest_before = (art / "manifest.json").read_text()
    code, stdout, stderr = run_cli(["sweep", art, "--plans", "fp16", "--dataset", inp["val_json"],
                                    "--runs", "2", "--repeats", "1", "--warmup", "0", "-o", tmp_path / "rep"])
    assert code == 0, stderr  # no INT8 plan: no --calib needed
    assert sorted(p.name for p in art.iterdir()) == before
    assert (art / "manifest.json").read_text() == manifest_before
    rep = load_sweep(tmp_path / "rep" / "sweep.json")
    assert [p.name for p in rep.plans] == ["fp32", "fp16"] and rep.calibration is None


@pytest.mark.parametrize("case", ["plan", "dataset", "calib", "classes"])
def test_sweep_errors_before_any_work(tiny_sweep_inputs, tmp_path, case):
    inp = tiny_sweep_inputs
    args = ["sweep", inp["ckpt"], "--calib", inp["train"], "--dataset", inp["val_json"], "--plans", "int8",
            "--runs", "2", "--repeats", "1", "-o", tmp_path / "rep"]
    expect = {"plan": "unknown component", "dataset": "not found|does not exist|no such",
              "calib": "need|calibration", "classes": "classes"}[case]
    if case == "plan":
        args[args.index("int8")] = "backbone=int8,decodr=fp16"
    elif case == "dataset":
        args[args.index(inp["val_json"])] = tmp_path / "nope.json"
        args += ["--images", inp["val"]]
    elif case == "calib":
        i = args.index("--calib")
        del args[i:i + 2]
    else:
        data = json.loads(inp["val_json"].read_text())
        data["categories"] = data["categories"][:3]
        data["annotations"] = [a for a in data["annotations"] if a["category_id"] in
                               {c["id"] for c in data["categories"]}]
        other = tmp_path / "three.json"
        other.write_text(json.dumps(data))
        args[args.index(inp["val_json"])] = other
        args += ["--images", inp["val"]]
    code, _, err = run_cli(args)
    assert code == 1
    assert "error:" in err and "fix:" in err
    import re

    assert re.search(expect, err, re.IGNORECASE), err
    assert not (tmp_path / "rep" / "work").exists()  # nothing exported, calibrated or written
    assert not (tmp_path / "rep" / "sweep.json").exists()


def test_work_dir_of_someone_else_is_refused(tiny_sweep_inputs, tmp_path):
    inp = tiny_sweep_inputs
    work = tmp_path / "work"
    (work / "mobileinst_test").mkdir(parents=True)
    (work / "mobileinst_test" / "precious.txt").write_text("keep me")
    code, _, err = run_cli(["sweep", inp["ckpt"], "--plans", "fp16", "--dataset", inp["val_json"],
                            "--work-dir", work, "-o", tmp_path / "rep"])
    assert code == 1 and "not an edgeseg sweep work folder" in err and "--overwrite" in err
    assert (work / "mobileinst_test" / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_rerun_replaces_only_the_sweeps_own_files(tiny_sweep_inputs, tmp_path):
    """Reports folder and work folder: a second sweep replaces what the first wrote, keeps
    the user's files, and a foreign non-empty work folder is used only with --overwrite."""
    inp = tiny_sweep_inputs
    rep, work = tmp_path / "rep", tmp_path / "work"
    (work / "mobileinst_test").mkdir(parents=True)
    (work / "mobileinst_test" / "precious.txt").write_text("keep me")
    args = ["sweep", inp["ckpt"], "--plans", "fp16", "--dataset", inp["val_json"], "--runs", "2",
            "--repeats", "1", "--work-dir", work, "-o", rep]
    code, _, err = run_cli(args + ["--overwrite"])
    assert code == 0, err
    assert (work / "mobileinst_test" / "precious.txt").read_text() == "keep me"
    (rep / "my_notes.md").write_text("mine")
    stale = work / "mobileinst_test" / "mobileinst_test.fp16.onnx"
    assert stale.is_file()
    code, _, err = run_cli(args[:3] + ["fp32"] + args[4:])  # an earlier sweep's folders: no --overwrite needed
    assert code == 0, err
    assert not stale.exists()  # the first sweep's artifact, recorded in the work manifest, is gone
    assert (work / "mobileinst_test" / "precious.txt").read_text() == "keep me"
    assert (rep / "my_notes.md").read_text() == "mine"
    assert json.loads((rep / "sweep.json").read_text())["plans"][0]["precisions"]["backbone"] == "fp32"


def test_sweep_with_an_existing_calibration_table(tiny_sweep, tmp_path):
    """--calib TABLE.json: no new calibration; same ONNX + same table = the same INT8 AP."""
    from edgeseg.utils.hashing import sha256_file

    art = tiny_sweep["out"] / "work" / "mobileinst_test"
    table = art / "mobileinst_test.kl.calib.json"
    code, _, err = run_cli(["sweep", art, "--calib", table, "--plans", "int8", "--dataset", tiny_sweep["val_json"],
                            "--runs", "2", "--repeats", "1", "--warmup", "0", "-o", tmp_path / "rep"])
    assert code == 0, err
    assert "calibrating" not in err
    rep = load_sweep(tmp_path / "rep" / "sweep.json")
    first = load_sweep(tiny_sweep["out"] / "sweep.json")
    assert rep.calibration["table_sha256"] == sha256_file(table) == first.calibration["table_sha256"]
    assert rep.calibration["ranges_sha256"] == first.calibration["ranges_sha256"]
    spec = "backbone=int8,mask_decoder=int8,instance_decoder=int8"
    assert rep.plan(spec).file_sha256 == first.plan(spec).file_sha256
    assert rep.plan(spec).metrics == first.plan(spec).metrics
    # a table computed on another graph is refused before any plan is built
    other = json.loads(table.read_text())
    other["model_sha256"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    code, _, err = run_cli(["sweep", art, "--calib", tmp_path / "other.json", "--plans", "int8",
                            "--dataset", tiny_sweep["val_json"], "-o", tmp_path / "rep2"])
    assert code == 1 and "different model" in err
    assert not (tmp_path / "rep2" / "sweep.json").exists()


def test_source_inside_the_work_folder_is_refused(tiny_sweep, tmp_path):
    art = tiny_sweep["out"] / "work" / "mobileinst_test"
    code, _, err = run_cli(["sweep", art, "--plans", "fp16", "--dataset", tiny_sweep["val_json"],
                            "--work-dir", tiny_sweep["out"] / "work", "-o", tmp_path / "rep"])
    assert code == 1 and "work folder" in err
    assert (art / "mobileinst_test.onnx").is_file()  # not cleared


def test_unknown_backend_and_source_are_clear_errors(tmp_path):
    from edgeseg.quantize.sweep import _check_backend, describe_source

    with pytest.raises(EdgesegError, match="unknown sweep backend"):
        _check_backend("coreml")
    import sys

    saved = sys.modules.get("tensorrt")
    sys.modules["tensorrt"] = None  # `import tensorrt` fails, as on a machine without it
    try:
        with pytest.raises(EdgesegError, match="TensorRT Python package is not installed") as e:
            _check_backend("tensorrt")  # a known backend: one clear error with the install line
        assert "edgeseg[tensorrt]" in e.value.fix
    finally:
        if saved is None:
            del sys.modules["tensorrt"]
        else:
            sys.modules["tensorrt"] = saved
    with pytest.raises(EdgesegError, match="neither a file"):
        describe_source(str(tmp_path / "nothing_here"))
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(EdgesegError, match="no manifest.json"):
        describe_source(tmp_path / "m.onnx")


# ------------------------------------------------------------------ interleaved timing
class _FakeTarget:
    """Records what the sweep asks of it. A run costs a fixed time per model times a
    machine that slows down steadily (1% per timed run): the drift interleaving must cancel."""

    log: list = []
    opened: list = []
    runs_so_far = 0

    def __init__(self, file, core=None, backend=None):
        self.file, self.core = str(file), core
        self.cost = {"a": 10.0, "b": 5.0, "c": 20.0}[self.file]

    def open(self):
        _FakeTarget.opened.append(self.file)

    def close(self):
        _FakeTarget.opened.remove(self.file)

    def device_state(self):
        from edgeseg.benchmark.device_info import DeviceState

        return DeviceState(core=self.core)

    def runtime_info(self):
        return {"core": self.core, "unpinned_threads": 0, "threads_intra_op": 1}

    def measure(self, runs, warmup):
        from edgeseg.benchmark.stats import LatencyStats
        from edgeseg.benchmark.targets.base import Measurement

        _FakeTarget.log.append((self.file, runs, warmup))
        samples = []
        for _ in range(runs):
            samples.append(self.cost * (1.0 + 0.01 * _FakeTarget.runs_so_far))
            _FakeTarget.runs_so_far += 1
        return Measurement(LatencyStats.from_samples(samples, warmup=warmup))


def _fake_run(runs, repeats, warmup=4):
    from edgeseg.quantize.sweep_latency import LatencySettings, measure_interleaved

    _FakeTarget.log, _FakeTarget.opened, _FakeTarget.runs_so_far = [], [], 0
    return measure_interleaved({"A": "a", "B": "b", "C": "c"},
                               LatencySettings(runs=runs, warmup=warmup, repeats=repeats, rewarm=1, core=0),
                               target_factory=_FakeTarget)


def test_interleaved_rounds_rotate_and_split_runs():
    run = _fake_run(10, 3)
    assert _FakeTarget.opened == []  # every target closed again
    assert [f for f, _, _ in _FakeTarget.log] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # rotation
    assert [r for _, r, _ in _FakeTarget.log] == [4, 4, 4, 3, 3, 3, 3, 3, 3]  # 10 runs over 3 rounds
    assert [w for _, _, w in _FakeTarget.log] == [4, 4, 4, 1, 1, 1, 1, 1, 1]  # full warm-up once
    assert {k: s.n for k, s in run.stats.items()} == {"A": 10, "B": 10, "C": 10}
    assert all(len(v) == 3 for v in run.per_round_p50.values())


def test_interleaving_cancels_a_drifting_machine():
    """True ratio B/A = 0.5. In sequence, the drift makes B look 26% slower than it is."""
    seq = _fake_run(30, 1)
    seq_ratio = seq.stats["B"].p50_ms / seq.stats["A"].p50_ms
    assert abs(seq_ratio / 0.5 - 1) > 0.2
    inter = _fake_run(30, 10)
    assert inter.stats["B"].p50_ms / inter.stats["A"].p50_ms == pytest.approx(0.5, rel=0.03)
    assert inter.stats["C"].p50_ms / inter.stats["A"].p50_ms == pytest.approx(2.0, rel=0.03)


def test_zoo_name_uses_the_shipped_checkpoint(tiny_sweep_inputs, tmp_path, monkeypatch):
    import shutil

    from edgeseg.models import pretrained
    from edgeseg.quantize.sweep import describe_source

    monkeypatch.setattr(pretrained, "ZOO_DIR", tmp_path)
    with pytest.raises(EdgesegError, match="no shipped checkpoint for mobileinst_test"):
        describe_source("mobileinst_test")
    shutil.copyfile(tiny_sweep_inputs["ckpt"], tmp_path / "mobileinst_test.safetensors")
    kind, path, manifest = describe_source("mobileinst_test")
    assert kind == "checkpoint" and path == tmp_path / "mobileinst_test.safetensors"
    assert manifest.model == "mobileinst_test" and manifest.model_cfg["num_classes"] == 4


def test_sweep_says_when_calib_num_exceeds_the_folder(tiny_sweep, tmp_path):
    art = tiny_sweep["out"] / "work" / "mobileinst_test"
    n = len(list(tiny_sweep["train"].glob("*.png")))
    code, _, err = run_cli(["sweep", art, "--calib", tiny_sweep["train"], "--calib-num", 50, "--plans", "int8",
                            "--dataset", tiny_sweep["val_json"], "--runs", "2", "--repeats", "1", "--warmup", "0",
                            "-o", tmp_path / "rep"])
    assert code == 0, err
    assert "--calib-num asked for 50 images" in err and f"used all {n} readable ones" in err
    rep = load_sweep(tmp_path / "rep" / "sweep.json")
    assert rep.calibration["num_images"] == n and rep.calibration["num_requested"] == 50
    assert "(--calib-num 50: the folder holds no more)" in (tmp_path / "rep" / "sweep.md").read_text()


def test_clock_cpu_reaches_every_target_and_a_bad_clock_is_refused(tmp_path):
    """--clock cpu: every plan timed with the process's CPU time (a shared machine's waits
    left out), recorded in the runtime facts the report prints."""
    from edgeseg.quantize.sweep_latency import LatencySettings, measure_interleaved
    from tests.quant_models import make_model

    model = make_model(tmp_path / "m")
    run = measure_interleaved({"A": model, "B": model}, LatencySettings(runs=2, warmup=0, repeats=1, clock="cpu"))
    assert "process_time_ns" in run.runtime["timer"] and run.stats["B"].n == 2
    with pytest.raises(EdgesegError, match="unknown clock 'gpu'"):
        LatencySettings(clock="gpu").validate()
