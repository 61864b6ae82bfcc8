"""End-to-end tests of `drivekit world`: generated nuScenes-layout datasets
checked by an independent reader (nuscenes_check.py), condition videos, and
the command line's error handling.

Run: PYTHONPATH=build/python /usr/bin/python3 -m pytest -q tests/python/test_world.py
(DK_BUILD_DIR picks another build folder than <repo>/build.)
"""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nuscenes_check  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("DK_BUILD_DIR") or os.path.join(REPO, "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(REPO, BUILD)
DRIVEKIT = os.path.join(BUILD, "bin", "drivekit")

# The command is part of the build these tests run against: missing is a failure.
assert os.access(DRIVEKIT, os.X_OK), f"{DRIVEKIT} not built (set DK_BUILD_DIR)"

SMALL = ["--width", "480", "--height", "270", "--threads", "2"]


def run(*args, check=True):
    p = subprocess.run([DRIVEKIT, *args], capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"drivekit {' '.join(args)} exited {p.returncode}:\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ns") / "nuscenes"
    p = run("world", "generate", "--out", str(out), "--seconds", "2", "--save-scenario", *SMALL)
    return out, p


def test_generate_dataset_checks(dataset):
    out, p = dataset
    stats = nuscenes_check.check_dataset(str(out))
    assert stats["scenes"] == 1
    assert 4 <= stats["samples"] <= 5
    assert stats["annotations"] > 0
    assert stats["visible_checked"] > 0
    assert stats["video_frames"] > 0
    # the summary names what was written
    assert str(out) in p.stdout
    assert f"{stats['samples']} samples" in p.stdout
    assert f"{stats['annotations']} annotations" in p.stdout


def test_generate_tables_content(dataset):
    out, _ = dataset
    t = nuscenes_check.load_tables(str(out))
    assert sorted(s["channel"] for s in t["sensor"]) == sorted(nuscenes_check.CAMERAS + ["LIDAR_TOP"])
    assert {s["modality"] for s in t["sensor"]} == {"camera", "lidar"}
    assert len(t["attribute"]) == 8
    names = {c["name"] for c in t["category"]}
    assert "vehicle.car" in names and "human.pedestrian.adult" in names
    for c in t["category"]:
        assert "index" not in c
    # timestamps in microseconds, cameras at about 12 Hz
    cam = [sd for sd in t["sample_data"] if sd["filename"].startswith(("samples/CAM_FRONT/", "sweeps/CAM_FRONT/"))]
    ts = sorted(sd["timestamp"] for sd in cam)
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    assert all(abs(g - 1e6 / 12) < 2 for g in gaps), gaps
    # every file name is <log>__<CHANNEL>__<timestamp>
    logfile = t["log"][0]["logfile"]
    for sd in t["sample_data"][:50]:
        base = os.path.basename(sd["filename"])
        assert base.startswith(logfile + "__") and str(sd["timestamp"]) in base
    # scenario saved next to the dataset
    scene = t["scene"][0]["name"]
    assert os.path.isfile(out / "scenarios" / f"{scene}.json")


def test_generate_cut_in(tmp_path):
    # the lane change takes 3.2 s after a trigger a third into the scene: 6 s fits it
    out = tmp_path / "cutin"
    p = run("world", "generate", "--out", str(out), "--seconds", "6", "--edit", "cut-in",
            "--no-video", "--seed", "5", "--width", "320", "--height", "180", "--threads", "2")
    assert "cut-in" in p.stdout
    stats = nuscenes_check.check_dataset(str(out), check_video=False)
    assert stats["annotations"] > 0
    assert "cut-in" in stats["tables"]["scene"][0]["description"]
    assert not (out / "video").exists()


def test_generate_two_scenes(tmp_path):
    out = tmp_path / "two"
    run("world", "generate", "--out", str(out), "--seconds", "1.5", "--scenes", "2", "--no-video",
        "--seed", "11", *SMALL)
    stats = nuscenes_check.check_dataset(str(out), check_video=False)
    t = stats["tables"]
    assert stats["scenes"] == 2
    assert len({s["name"] for s in t["scene"]}) == 2
    assert len(t["sensor"]) == 7          # shared
    assert len(t["log"]) == 2 and len(t["map"]) == 2
    assert len(t["calibrated_sensor"]) == 14


@pytest.mark.parametrize("args", [
    ["world"],
    ["world", "bogus"],
    ["world", "generate"],                                   # no --out
    ["world", "generate", "--out", "x", "--seconds", "abc"],
    ["world", "generate", "--out", "x", "--edit", "bogus"],
    ["world", "generate", "--out", "x", "--frobnicate"],
    ["world", "generate", "--out", "x", "--threads", "0"],
    ["world", "conditions", "--out", "x"],                   # no --scenario
    ["world", "conditions", "--scenario", "s.json", "--out", "x", "--fps", "-3"],
])
def test_bad_usage_exits_2(args, tmp_path):
    p = subprocess.run([DRIVEKIT, *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 2, (args, p.returncode, p.stderr)
    assert "usage" in p.stderr
    assert not (tmp_path / "x").exists()


def test_help_lists_flags():
    gen = run("world", "generate", "--help").stdout
    for flag in ["--out", "--seed", "--seconds", "--scenes", "--edit", "--width", "--height",
                 "--threads", "--no-video", "--save-scenario"]:
        assert flag in gen, flag
    assert "default" in gen
    cond = run("world", "conditions", "--help").stdout
    for flag in ["--scenario", "--out", "--width", "--height", "--fps", "--ftheta", "--threads"]:
        assert flag in cond, flag
    top = run("--help").stdout
    assert "world" in top


def _frame_count(path):
    import av
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_conditions_from_saved_scenario(dataset, tmp_path):
    out, _ = dataset
    scenes = list((out / "scenarios").glob("*.json"))
    assert len(scenes) == 1
    cond = tmp_path / "cond"
    p = run("world", "conditions", "--scenario", str(scenes[0]), "--out", str(cond),
            "--width", "320", "--height", "180", "--fps", "10", "--threads", "2")
    mp4s = sorted(cond.glob("*.mp4"))
    assert sorted(m.stem for m in mp4s) == sorted(nuscenes_check.CAMERAS), p.stdout
    with open(scenes[0]) as f:
        duration = json.load(f)["duration"]
    expected = None
    meta_path = cond / "conditions.json"
    assert meta_path.is_file()
    with open(meta_path) as f:
        meta = json.load(f)
    if isinstance(meta.get("frames"), list):
        expected = len(meta["frames"])
    if "n_frames" in meta:
        assert expected in (None, meta["n_frames"])
        expected = meta["n_frames"]
    counts = {m.stem: _frame_count(m) for m in mp4s}
    assert len(set(counts.values())) == 1, counts
    n = next(iter(counts.values()))
    if expected is not None:
        assert n == expected
    assert int(duration * 10) <= n <= int(duration * 10) + 1, (n, duration)


def test_conditions_broken_scenario_names_field(dataset, tmp_path):
    out, _ = dataset
    src = next((out / "scenarios").glob("*.json"))
    with open(src) as f:
        doc = json.load(f)
    doc["actors"][0]["size"] = doc["actors"][0]["size"][:2]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    p = subprocess.run([DRIVEKIT, "world", "conditions", "--scenario", str(bad), "--out",
                        str(tmp_path / "c")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert "actors[0].size" in p.stderr
    assert "bad.json" in p.stderr


def test_generate_edit_that_does_not_fit_exits_1(tmp_path):
    # a cut-in's lane change takes seconds: it cannot fit a 1 s scene
    p = subprocess.run([DRIVEKIT, "world", "generate", "--out", str(tmp_path / "o"), "--seconds",
                        "1", "--edit", "cut-in", "--no-video", *SMALL], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    assert "cut-in" in p.stderr


def test_generate_unwritable_output_exits_1(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = subprocess.run([DRIVEKIT, "world", "generate", "--out", str(blocker / "sub"), "--seconds",
                        "1", "--no-video", *SMALL], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "file" in p.stderr
