"""``edgeseg track`` end to end on a tiny exported MobileInst and synthetic moving shapes."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.data.ytvis import YtvisDataset
from edgeseg.eval.vis import evaluate_vis
from edgeseg.track.results import check_results
from tests.track_artifacts import FRAME_HW, synth_videos, tiny_mobileinst, tiny_mobileinst_frame_only  # noqa: F401

# Random weights score ~0.05 per query: a low threshold makes every query a tracked
# instance, so masks, ids and results are exercised (AP itself is meaningless here).
LOW = ["--score-threshold", "0.001"]


def run(*args) -> tuple[int, str, str]:
    """The CLI in process (fast); exit code, stdout, stderr."""
    import contextlib
    import io

    from edgeseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, out.getvalue(), err.getvalue()


def _video0(synth_videos) -> tuple[Path, dict]:
    ann = json.loads((synth_videos / "annotations" / "val.json").read_text())
    video = ann["videos"][0]
    return synth_videos / "JPEGImages" / Path(video["file_names"][0]).parent, video


@pytest.mark.parametrize("reuse", [1, 3])
def test_track_frame_folder_writes_results_and_overlay(tiny_mobileinst, synth_videos, tmp_path, reuse):
    folder, video = _video0(synth_videos)
    n = video["length"]
    res, ov = tmp_path / "results.json", tmp_path / "overlay"
    code, out, err = run("track", folder, "--artifact", tiny_mobileinst.folder, "--reuse", reuse,
                         "-o", res, "--overlay", ov, *LOW)
    assert code == 0, err
    keyframes = math.ceil(n / reuse)
    assert f"{keyframes} keyframes" in out and f"{n - keyframes} non-keyframes" in out
    items = json.loads(res.read_text())
    assert items, "random weights at a 0.001 threshold must still give tracks"
    check_results(items, {1: n})
    assert all(len(i["segmentations"]) == n for i in items)
    assert {tuple(s["size"]) for i in items for s in i["segmentations"] if s} == {FRAME_HW}
    assert len({i["track_id"] for i in items}) == len(items)
    pngs = sorted(ov.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(n)]
    # The frames are listed in the folder's marker: the only files a later overlay may replace.
    assert json.loads((ov / ".edgeseg.json").read_text())["files"] == [p.name for p in pngs]
    assert sorted(p.name for p in ov.iterdir()) == sorted([".edgeseg.json"] + [p.name for p in pngs])
    from PIL import Image

    first = np.asarray(Image.open(pngs[0]))
    raw = np.asarray(Image.open(folder / sorted(os.listdir(folder))[0]))
    assert first.shape == raw.shape and not np.array_equal(first, raw)  # tinted where masks are


def test_track_outputs_never_replace_the_users_files(tiny_mobileinst, synth_videos, tmp_path):
    """Before: --overlay DIR replaced the whole folder and -o overwrote any file."""
    folder, video = _video0(synth_videos)
    ov, res = tmp_path / "ov", tmp_path / "results.json"
    ov.mkdir()
    (ov / "holiday.png").write_bytes(b"the user's photo")
    base = ["track", folder, "--artifact", tiny_mobileinst.folder, "--reuse", 3, *LOW]
    code, _, err = run(*base, "--overlay", ov)
    assert code == 1 and "is not empty" in err and "--overwrite" in err
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "data"}')
    code, _, err = run(*base, "-o", mine)
    assert code == 1 and "edgeseg did not write it" in err and mine.read_text() == '{"my": "data"}'

    code, _, err = run(*base, "-o", res, "--overlay", ov, "--overwrite")
    assert code == 0, err
    assert (ov / "holiday.png").read_bytes() == b"the user's photo"
    assert len(list(ov.glob("0*.png"))) == video["length"]
    code, _, err = run(*base, "-o", res, "--overlay", ov)  # edgeseg's own outputs: replaced freely
    assert code == 0, err
    assert (ov / "holiday.png").read_bytes() == b"the user's photo"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.json", "ov", "results.json"]


def test_T1_and_T3_share_keyframe_masks(tiny_mobileinst, synth_videos, tmp_path):
    """Frame 0 is a keyframe at every T, so its masks must be identical; reuse frames differ."""
    folder, video = _video0(synth_videos)
    by_t = {}
    for t in (1, 3):
        code, _, err = run("track", folder, "--artifact", tiny_mobileinst.folder, "--reuse", t,
                           "-o", tmp_path / f"r{t}.json", *LOW)
        assert code == 0, err
        by_t[t] = {i["track_id"]: i for i in json.loads((tmp_path / f"r{t}.json").read_text())}
    first = {t: sorted(json.dumps(i["segmentations"][0]) for i in items.values()) for t, items in by_t.items()}
    assert first[1] == first[3]
    later = {t: sorted(json.dumps(i["segmentations"][1]) for i in items.values()) for t, items in by_t.items()}
    assert later[1] != later[3]  # frame 1: new kernels (T=1) vs frame 0's kernels (T=3)


def test_track_video_file_and_mp4_overlay(tiny_mobileinst, synth_videos, tmp_path):
    import av

    folder, video = _video0(synth_videos)
    from PIL import Image

    frames = [np.asarray(Image.open(folder / f)) for f in sorted(os.listdir(folder))]
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as c:
        s = c.add_stream("libx264", rate=6)
        s.width, s.height, s.pix_fmt = FRAME_HW[1], FRAME_HW[0], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    code, out, err = run("track", clip, "--artifact", tiny_mobileinst.folder, "--reuse", 2,
                         "-o", tmp_path / "r.json", "--overlay", tmp_path / "tracked.mp4", *LOW)
    assert code == 0, err
    assert f"{len(frames)} frames ({FRAME_HW[1]}x{FRAME_HW[0]})" in out
    with av.open(str(tmp_path / "tracked.mp4")) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == len(frames) and decoded[0].shape == (*FRAME_HW, 3)
    check_results(json.loads((tmp_path / "r.json").read_text()), {1: len(frames)})
    # The overlay video carries edgeseg's comment tag; the user's clip does not.
    from edgeseg.utils.outputs import written_by_edgeseg

    assert written_by_edgeseg(tmp_path / "tracked.mp4") and not written_by_edgeseg(clip)
    code, _, err = run("track", clip, "--artifact", tiny_mobileinst.folder, "-o", tmp_path / "r.json",
                       "--overlay", clip, "--overwrite", *LOW)
    assert code == 1 and "is an input of this command" in err  # never over the input, even with --overwrite


def test_results_of_ground_truth_score_100(synth_videos, tmp_path):
    """Results written by the tracker's writer from perfect tracks score AP 100 (and the
    writer's RLE strings decode to the ground truth)."""
    from edgeseg.data.rle import decode
    from edgeseg.track.kernel_reuse import Track, VideoResult
    from edgeseg.track.masks import BoxMask
    from edgeseg.track.results import label_to_category, video_results

    ds = YtvisDataset(synth_videos / "annotations" / "val.json", check_files=False)
    items = []
    for v in ds.videos:
        tracks = []
        for gt in ds.tracks(v.id):
            t = Track(id=gt.id, kernel=np.zeros(1), first_frame=0, label_scores={gt.label: 1.0}, scores=[0.9])
            for f, m in enumerate(gt.masks(v.height, v.width)):
                if m.any():
                    t.masks[f] = BoxMask.from_full(m).rle()
            tracks.append(t)
        items += video_results(VideoResult(v.length, (v.height, v.width), tracks, [], 1), v.id,
                               label_to_category(ds.categories))
    check_results(items, {v.id: v.length for v in ds.videos})
    assert all(isinstance(s["counts"], str) for i in items for s in i["segmentations"] if s)
    scores = evaluate_vis(ds, items)
    assert scores["AP"] == pytest.approx(100.0) and scores["AP50"] == pytest.approx(100.0)
    # and a corrupted copy (one track's masks dropped on half its frames) scores lower
    broken = json.loads(json.dumps(items))
    segs = broken[0]["segmentations"]
    for f in [i for i, s in enumerate(segs) if s][::2]:
        segs[f] = None
    assert evaluate_vis(ds, broken)["AP"] < 100.0
    gt0 = ds.tracks(ds.videos[0].id)[0]
    f0 = next(i for i, s in enumerate(items[0]["segmentations"]) if s)
    np.testing.assert_array_equal(decode(items[0]["segmentations"][f0], ds.videos[0].height, ds.videos[0].width),
                                  gt0.masks(ds.videos[0].height, ds.videos[0].width)[f0])


def test_dataset_sweep_prints_and_saves_the_table(tiny_mobileinst, synth_videos, tmp_path):
    code, out, err = run("track", "--dataset", synth_videos / "annotations" / "val.json",
                         "--artifact", tiny_mobileinst.folder, "--reuse", "1,3", "-o", tmp_path / "sweep.json",
                         "--core", sorted(os.sched_getaffinity(0))[0], *LOW)
    assert code == 0, err
    assert "AP50" in out and "keyframe" in out and "random weights" in out.replace("\n", " ")
    report = json.loads((tmp_path / "sweep.json").read_text())
    ds = YtvisDataset(synth_videos / "annotations" / "val.json", check_files=False)
    lengths = [v.length for v in ds.videos]
    rows = {r["reuse"]: r for r in report["rows"]}
    assert sorted(rows) == [1, 3]
    assert rows[1]["frames"] == rows[3]["frames"] == sum(lengths)
    assert rows[1]["keyframes"] == sum(lengths)
    assert rows[3]["keyframes"] == sum(math.ceil(n / 3) for n in lengths)
    assert rows[1]["reuse_model_ms"] is None and rows[3]["reuse_model_ms"] > 0
    for r in rows.values():
        assert r["ap"] is not None and 0.0 <= r["ap"] <= 100.0
        assert r["total_ms"] == pytest.approx(r["model_ms"] + r["host_ms"])
    assert report["settings"]["threads"] == 1 and report["settings"]["videos"] == len(lengths)
    md = (tmp_path / "sweep.md").read_text()
    assert "| T | VIS AP |" in md and md.count("\n| ") >= 3


# ----------------------------------------------------------------------------- errors
def _before_after(tmp_path):
    return sorted(p.name for p in tmp_path.rglob("*"))


def test_unreadable_video_is_one_clear_error(tiny_mobileinst, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    code, _, err = run("track", bad, "--artifact", tiny_mobileinst.folder, "-o", tmp_path / "r.json",
                       "--overlay", tmp_path / "o.mp4")
    assert code == 1
    assert "cannot read video" in err and "fix:" in err and "Traceback" not in err
    assert _before_after(tmp_path) == ["broken.mp4"]


def test_empty_folder_is_an_error(tiny_mobileinst, tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "notes.txt").write_text("no images here")
    code, _, err = run("track", tmp_path / "frames", "--artifact", tiny_mobileinst.folder, "-o", tmp_path / "r.json")
    assert code == 1 and "holds no frames" in err
    assert not (tmp_path / "r.json").exists()


def test_corrupt_frame_midway_leaves_no_partial_output(tiny_mobileinst, synth_videos, tmp_path):
    folder, _ = _video0(synth_videos)
    frames = tmp_path / "frames"
    shutil.copytree(folder, frames)
    third = sorted(frames.iterdir())[2]
    third.write_bytes(b"garbage")
    code, _, err = run("track", frames, "--artifact", tiny_mobileinst.folder, "-o", tmp_path / "r.json",
                       "--overlay", tmp_path / "ov", *LOW)
    assert code == 1 and "cannot read image" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no results, no overlay, no temp files


def test_frames_of_different_sizes_are_an_error(tiny_mobileinst, synth_videos, tmp_path):
    from PIL import Image

    folder, _ = _video0(synth_videos)
    frames = tmp_path / "frames"
    shutil.copytree(folder, frames)
    last = sorted(frames.iterdir())[-1]
    Image.open(last).resize((50, 40)).save(last)
    code, _, err = run("track", frames, "--artifact", tiny_mobileinst.folder, "-o", tmp_path / "r.json")
    assert code == 1 and "must have one size" in err
    assert not (tmp_path / "r.json").exists()


def test_artifact_without_features_graph(tiny_mobileinst_frame_only, synth_videos, tmp_path):
    folder, video = _video0(synth_videos)
    code, _, err = run("track", folder, "--artifact", tiny_mobileinst_frame_only.folder, "--reuse", 3,
                       "-o", tmp_path / "r.json")
    assert code == 1 and "no features graph" in err and "--reuse 1" in err
    assert not (tmp_path / "r.json").exists()
    # T=1 never needs it
    code, _, err = run("track", folder, "--artifact", tiny_mobileinst_frame_only.folder, "--reuse", 1,
                       "-o", tmp_path / "r.json", *LOW)
    assert code == 0, err


@pytest.mark.parametrize("args, message", [
    (["--reuse", "0"], "T must be at least 1"),
    (["--reuse", "-2"], "T must be at least 1"),
    (["--reuse", "x"], "not a whole number"),
    (["--reuse", "1,3"], "one video is tracked at one T"),
    (["--match-threshold", "1.5"], "not a cosine"),
    (["--overlay", "{tmp}/o.gif"], "don't know how to write an overlay"),
])
def test_bad_options_are_clear_errors(tiny_mobileinst, synth_videos, tmp_path, args, message):
    folder, _ = _video0(synth_videos)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run("track", folder, "--artifact", tiny_mobileinst.folder, "-o", tmp_path / "r.json", *args)
    assert code == 1 and message in err, err
    assert not (tmp_path / "r.json").exists()


def test_missing_artifact_and_missing_input(synth_videos, tmp_path):
    folder, _ = _video0(synth_videos)
    code, _, err = run("track", folder, "--artifact", tmp_path / "nope")
    assert code == 1 and "does not exist" in err
    code, _, err = run("track", "--artifact", tmp_path / "nope")
    assert code == 1 and "nothing to track" in err


def test_exit_code_and_message_from_a_real_process(tiny_mobileinst, tmp_path):
    """As a user sees it: a non-zero exit and one message, no traceback."""
    env = {**os.environ, "EDGESEG_PROGRESS": "0"}
    p = subprocess.run([sys.executable, "-m", "edgeseg", "track", str(tmp_path / "missing.mp4"), "--artifact",
                        str(tiny_mobileinst.folder)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "does not exist" in p.stderr and "Traceback" not in p.stderr


def test_dataset_with_other_categories_is_refused(tiny_mobileinst, synth_videos, tmp_path):
    ann = json.loads((synth_videos / "annotations" / "val.json").read_text())
    ann["categories"] = ann["categories"][:2]  # the model predicts 4 classes
    ann["annotations"] = [a for a in ann["annotations"] if a["category_id"] in {c["id"] for c in ann["categories"]}]
    (tmp_path / "two.json").write_text(json.dumps(ann))
    code, _, err = run("track", "--dataset", tmp_path / "two.json", "--videos", synth_videos / "JPEGImages",
                       "--artifact", tiny_mobileinst.folder, "--reuse", "1", "-o", tmp_path / "s.json")
    assert code == 1 and "predicts 4 classes" in err and "--num-classes 2" in err
    assert not (tmp_path / "s.json").exists()
