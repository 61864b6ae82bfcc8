"""Tests of drivekit.sim.from_scenario (Gaussian scenes of the sample drive),
actor tracks from Python (set, query, save, load, render at a time) and the
`drivekit sim from-world` command with `sim render --tracks --time`.

Run: PYTHONPATH=build/python DK_BUILD_DIR=build /usr/bin/python3 -m pytest -q tests/python/test_sim_world.py
(DK_BUILD_DIR picks another build folder than <repo>/build.)
"""
import json
import os
import subprocess

import numpy as np
import pytest

import drivekit
from drivekit import sim
from drivekit.camera import nuscenes_rig

import cv2  # noqa: E402  (Debian python3-opencv)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("DK_BUILD_DIR") or os.path.join(REPO, "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(REPO, BUILD)
DRIVEKIT = os.path.join(BUILD, "bin", "drivekit")
SCENARIO_JSON = os.path.join(REPO, "fuzz", "corpus", "scenario", "two_lanes.json")

# Small densities keep the tests fast.
SMALL = dict(duration=6.0, density=1.0, object_density=4.0, margin=25.0)


@pytest.fixture(scope="module")
def scene():
    return sim.from_scenario(**SMALL)


def front_camera(width=160, height=90):
    cam = next(d for d in nuscenes_rig(width, height) if d["name"] == "CAM_FRONT")
    return cam["camera"], cam["sensor_to_ego"]


def is_rigid(m):
    r = m[:3, :3]
    return (np.allclose(r @ r.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(r), 1.0)
            and np.allclose(m[3], [0, 0, 0, 1]))


def test_from_scenario_contents(scene):
    assert len(scene) > 5000
    ids = scene.actor_ids
    assert ids[0] == 0 and ids == sorted(ids) and len(ids) > 3
    # the ego's track: on the ground, driving forward along the main road
    p0, p1 = scene.actor_pose(0, 0.0), scene.actor_pose(0, 3.0)
    assert is_rigid(p0) and is_rigid(p1)
    assert abs(p0[2, 3]) < 1e-9
    assert 5 < np.linalg.norm(p1[:3, 3] - p0[:3, 3]) < 60
    with pytest.raises(drivekit.NotFoundError):
        scene.actor_pose(987654, 0.0)
    a = scene.arrays()
    assert np.isfinite(a["means"]).all() and np.isfinite(a["sh_dc"]).all()
    # only the ego track, nothing else
    only = sim.from_scenario(**SMALL, include=["ego_track"])
    assert len(only) == 0 and only.actor_ids == [0]
    # a scenario JSON file
    s2 = sim.from_scenario(SCENARIO_JSON, density=1.0, object_density=4.0, margin=20.0)
    assert len(s2) > 0 and 0 in s2.actor_ids


def test_from_scenario_deterministic(scene):
    again = sim.from_scenario(**SMALL)
    a, b = scene.arrays(), again.arrays()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    other = sim.from_scenario(**SMALL, jitter_seed=5).arrays()
    assert other["means"].shape != a["means"].shape or not np.array_equal(other["means"],
                                                                           a["means"])


def test_from_scenario_errors(tmp_path):
    with pytest.raises(drivekit.InvalidArgumentError, match="density"):
        sim.from_scenario(**dict(SMALL, density=0.0))
    with pytest.raises(drivekit.InvalidArgumentError, match="margin"):
        sim.from_scenario(**dict(SMALL, margin=1e6))
    with pytest.raises(drivekit.InvalidArgumentError, match="include"):
        sim.from_scenario(**SMALL, include=["sky"])
    with pytest.raises(drivekit.NotFoundError):
        sim.from_scenario(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "drivekit.scenario", "version": 1, "actors": 3}')
    with pytest.raises(drivekit.DecodeError, match="bad.json"):
        sim.from_scenario(bad)


def test_render_at_time_follows_tracks(scene):
    cam, s2e = front_camera()
    t = 2.0
    c2w = scene.actor_pose(0, t) @ s2e
    bg = (0.74, 0.8, 0.87)
    img = scene.render(cam, c2w, time=t, background=bg)["rgb"]
    assert img.shape == (90, 160, 3)
    # road below the horizon, sky (the background) above it
    road = img[75:, 60:100]
    assert (np.abs(road - road.mean(axis=2, keepdims=True)) < 0.06).mean() > 0.8
    assert 0.15 < road.mean() < 0.45
    assert np.allclose(img[2, 80], bg, atol=0.02)

    # Put a parked-looking actor 10 m in front of the camera at time t: its
    # Gaussians appear in the image centre, and only at that time.
    aid = next(i for i in scene.actor_ids if i != 0)
    ego = scene.actor_pose(0, t)
    ahead = ego.copy()
    ahead[:3, 3] = ego[:3, 3] + ego[:3, 0] * 12.0 + np.array([0, 0, 1.0])
    far = ego.copy()
    far[:3, 3] += np.array([0, 0, -1e5])
    s = sim.from_scenario(**SMALL)
    s.set_actor_track(aid, [t - 0.5, t, t + 0.5], np.stack([far, ahead, far]))
    assert np.allclose(s.actor_pose(aid, t), ahead)
    with_actor = s.render(cam, c2w, time=t, background=bg)["rgb"]
    without = s.render(cam, c2w, time=t + 0.5, background=bg)["rgb"]
    centre = (slice(35, 55), slice(70, 90))
    assert np.abs(with_actor[centre] - without[centre]).mean() > 0.05
    # the track file carries it
    assert aid in s.actor_ids


def test_tracks_round_trip_and_errors(tmp_path, scene):
    path = tmp_path / "scene.tracks.json"
    scene.save_tracks(path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "drivekit.tracks" and doc["version"] == 1
    assert [a["id"] for a in doc["actors"]] == scene.actor_ids
    ply = tmp_path / "scene.ply"
    scene.save_ply(ply)
    loaded = sim.load_ply(ply)
    assert loaded.actor_ids == []
    loaded.load_tracks(path)
    assert loaded.actor_ids == scene.actor_ids
    for aid in scene.actor_ids:
        for t in (0.0, 1.37, 5.9):
            assert np.array_equal(loaded.actor_pose(aid, t), scene.actor_pose(aid, t))

    s = sim.load_ply(ply)
    s.set_actor_track(4, [0.0, 1.0], [np.eye(4), np.eye(4)])
    bad = tmp_path / "bad.tracks.json"
    doc["actors"][1]["poses"][2] = [1, 0, 0, 0, 0, 0]
    bad.write_text(json.dumps(doc))
    with pytest.raises(drivekit.DecodeError, match=r"bad.tracks.json: actors\[1\].poses\[2\]"):
        s.load_tracks(bad)
    assert s.actor_ids == [4]   # unchanged
    bad.write_text('{"version": 1, "actors": [{"id": 2, "times": [0, 1, 1], '
                   '"poses": [[1,0,0,0,0,0,0],[1,0,0,0,0,0,0],[1,0,0,0,0,0,0]]}]}')
    with pytest.raises(drivekit.DecodeError, match=r"actors\[0\].times\[2\]"):
        s.load_tracks(bad)
    bad.write_text(path.read_text()[:200])
    with pytest.raises(drivekit.DecodeError, match="bad.tracks.json"):
        s.load_tracks(bad)
    with pytest.raises(drivekit.NotFoundError):
        s.load_tracks(tmp_path / "missing.json")
    with pytest.raises(drivekit.DecodeError, match="not after"):
        s.set_actor_track(5, [1.0, 1.0], [np.eye(4), np.eye(4)])
    skew = np.eye(4)
    skew[0, 1] = 0.5
    with pytest.raises(drivekit.DecodeError):
        s.set_actor_track(5, [0.0], [skew])
    with pytest.raises(drivekit.InvalidArgumentError):
        s.set_actor_track(5, [0.0, 1.0], [np.eye(4)])
    with pytest.raises(drivekit.InvalidArgumentError):
        s.set_actor_track(-1, [0.0], [np.eye(4)])
    assert s.actor_ids == [4]


def run_cli(*args):
    assert os.access(DRIVEKIT, os.X_OK), f"{DRIVEKIT} not built (set DK_BUILD_DIR)"
    return subprocess.run([DRIVEKIT, "sim", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_from_world_and_render(tmp_path):
    out = tmp_path / "scene.ply"
    r = run_cli("from-world", "--seed", 3, "--duration", 5, "--out", out, "--density", 1,
                "--object-density", 4, "--margin", 25)
    assert r.returncode == 0, r.stderr
    tracks = tmp_path / "scene.tracks.json"
    assert out.exists() and tracks.exists()
    assert str(tracks) in r.stdout
    pose = r.stdout.split("--pose ")[1].split()[0]
    s = sim.load_ply(out)
    s.load_tracks(tracks)
    assert 0 in s.actor_ids and len(s) > 1000

    img = tmp_path / "front.png"
    r = run_cli("render", "--ply", out, "--tracks", tracks, "--time", 1.5, "--pose", pose,
                "--width", 96, "--height", 54, "--fov", 70, "--out", img)
    assert r.returncode == 0, r.stderr
    px = cv2.imread(str(img))
    assert px is not None and px.shape == (54, 96, 3)
    assert px[40:].mean() > 20   # the road in the lower part

    # explicit --tracks path, SH degree 1, a scenario file
    r = run_cli("from-world", "--scenario", SCENARIO_JSON, "--out", tmp_path / "b.ply",
                "--tracks", tmp_path / "b.json", "--sh-degree", 1, "--density", 1,
                "--object-density", 4, "--no-paint")
    assert r.returncode == 0, r.stderr
    assert sim.load_ply(tmp_path / "b.ply").sh_degree == 1
    assert (tmp_path / "b.json").exists()

    # usage errors: 2
    for bad in (["--out", out, "--density", "abc"],
                ["--seed", 1, "--scenario", SCENARIO_JSON, "--out", out],
                ["--seed", 1],
                ["--out", out, "--sh-degree", 3],
                ["--out", out, "--bogus"]):
        r = run_cli("from-world", *bad)
        assert r.returncode == 2, (bad, r.stderr)
        assert "usage" in r.stderr
    r = run_cli("render", "--ply", out, "--out", img, "--time", "soon")
    assert r.returncode == 2
    # failures: 1, naming the file
    r = run_cli("from-world", "--scenario", tmp_path / "none.json", "--out", out)
    assert r.returncode == 1 and "none.json" in r.stderr
    broken = tmp_path / "broken.tracks.json"
    broken.write_text('{"version": 1, "actors": [{"id": 1}]}')
    r = run_cli("render", "--ply", out, "--tracks", broken, "--out", img)
    assert r.returncode == 1 and "broken.tracks.json" in r.stderr
    r = run_cli("from-world", "--help")
    assert r.returncode == 0 and "--scenario" in r.stdout
