"""Tests of drivekit.sim lidar rendering: a wall of flat Gaussians against
analytic ray-plane ranges, shapes and dtypes, points against the range image,
thread-count independence, error mapping, and the `drivekit sim lidar` command.

Run: PYTHONPATH=build/python DK_BUILD_DIR=build /usr/bin/python3 -m pytest -q tests/python/test_sim_lidar.py
(DK_BUILD_DIR picks another build folder than <repo>/build.)
"""
import math
import os
import subprocess

import numpy as np
import pytest

import drivekit
from drivekit import camera, sim

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("DK_BUILD_DIR") or os.path.join(REPO, "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(REPO, BUILD)
DRIVEKIT = os.path.join(BUILD, "bin", "drivekit")

SPACING, SIGMA_P, SIGMA_N = 0.1, 0.08, 0.002


def wall(x=10.0, half_y=6.0, half_z=3.0):
    """Flat Gaussians on the plane x = `x` (normal along x), |y| <= half_y, |z| <= half_z."""
    ys = np.arange(-half_y, half_y + 1e-9, SPACING)
    zs = np.arange(-half_z, half_z + 1e-9, SPACING)
    yy, zz = np.meshgrid(ys, zs, indexing="ij")
    n = yy.size
    means = np.stack([np.full(n, x), yy.ravel(), zz.ravel()], 1)
    # Local axes u = y, v = z, normal = x: the rotation taking (1,0,0) -> y,
    # (0,1,0) -> z, (0,0,1) -> x is a 120 degree turn about (1,1,1).
    q = np.tile([0.5, 0.5, 0.5, 0.5], (n, 1))
    scales = np.log(np.tile([SIGMA_P, SIGMA_P, SIGMA_N], (n, 1)))
    return sim.Scene.from_arrays(means, scales, q, np.full(n, 6.0), np.zeros((n, 3)))


def small_lidar():
    m = camera.lidar_preset(32)
    m["n_columns"] = 360
    return m


def test_plane_matches_analytic():
    s = wall()
    m = small_lidar()
    out = s.render_lidar(m, np.eye(4))
    dirs, times = camera.lidar_rays(m)
    rng = out["range"]
    assert rng.shape == (32, 360) and rng.dtype == np.float32
    with np.errstate(divide="ignore", invalid="ignore"):
        t = 10.0 / dirs[..., 0]
    y, z = t * dirs[..., 1], t * dirs[..., 2]
    inside = (dirs[..., 0] > 0) & (np.abs(y) < 5.7) & (np.abs(z) < 2.7)
    outside = (dirs[..., 0] <= 0) | (np.abs(y) > 6.3) | (np.abs(z) > 3.3)
    assert inside.sum() > 200 and outside.sum() > 5000
    tol = 4 * SIGMA_N / dirs[..., 0][inside] + 2e-6 * t[inside] + 1e-4
    assert np.all(np.abs(rng[inside] - t[inside]) <= tol)
    assert np.all(out["alpha"][inside] > 0.99)
    assert np.all(rng[outside] == 0)
    assert np.all(out["raydrop"][outside] == 1)
    # Defaults without lidar fields: intensity 0.5, drop = 1 - alpha.
    assert np.allclose(out["intensity"][inside], 0.5)
    assert np.allclose(out["raydrop"][inside], 1 - out["alpha"][inside], atol=1e-6)


def test_shapes_points_and_threads():
    s = wall()
    for preset, shape in ((32, (32, 1084)), (64, (64, 2048))):
        pose = np.eye(4)
        pose[:3, 3] = [1.0, 0.5, 0.2]
        out = s.render_lidar(preset, pose, threads=1)
        for k in ("range", "intensity", "raydrop", "alpha"):
            assert out[k].shape == shape and out[k].dtype == np.float32, k
        pts = out["points"]
        assert pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == 6
        # Default ray drop: threshold 0.5 on the drop probability.
        keep = (out["range"] > 0) & (out["raydrop"] < 0.5)
        assert len(pts) == keep.sum() > 100
        b, c = np.nonzero(keep.T)[::-1]   # column-major order: by column, then beam
        m = camera.lidar_preset(preset)
        dirs, times = camera.lidar_rays(m)
        r = out["range"][b, c]
        assert np.array_equal(pts[:, 4], b.astype(np.float32))
        assert np.allclose(pts[:, 5], times[c], atol=1e-7)
        assert np.allclose(pts[:, :3], r[:, None] * dirs[b, c], atol=1e-4)
        assert np.array_equal(pts[:, 3], out["intensity"][b, c])
        # The points lie on the wall x = 10 in the world.
        assert np.allclose(pts[:, 0] + 1.0, 10.0, atol=0.01)
        two = s.render_lidar(preset, pose, threads=2)
        for k in out:
            assert np.array_equal(out[k], two[k]), k


def test_raydrop_modes_and_motion():
    s = wall()
    m = small_lidar()
    none = s.render_lidar(m, np.eye(4), raydrop="none")
    assert len(none["points"]) == (none["range"] > 0).sum()
    a = s.render_lidar(m, np.eye(4), raydrop="sample", seed=5)
    b = s.render_lidar(m, np.eye(4), raydrop="sample", seed=5)
    assert np.array_equal(a["points"], b["points"])
    # The lidar drives 2 m along x during the sweep: compensated points stay on the wall.
    end = np.eye(4)
    end[0, 3] = 2.0
    mv = s.render_lidar(m, np.eye(4), lidar_to_world_end=end, raydrop="none")
    p = mv["points"]
    on = (np.abs(p[:, 1]) < 5.5) & (np.abs(p[:, 2]) < 2.5)
    assert on.sum() > 200
    assert np.allclose(p[on, 0], 10.0, atol=0.02)
    assert not np.allclose(mv["range"], none["range"])


def test_bad_input():
    s = wall()
    with pytest.raises(drivekit.InvalidArgumentError, match="preset"):
        s.render_lidar(33, np.eye(4))
    m = small_lidar()
    m["elevation"][0] = float("nan")
    with pytest.raises(drivekit.InvalidArgumentError, match="elevation"):
        s.render_lidar(m, np.eye(4))
    m = small_lidar()
    m["spin_hz"] = 0.0
    with pytest.raises(drivekit.InvalidArgumentError, match="spin_hz"):
        s.render_lidar(m, np.eye(4))
    with pytest.raises(drivekit.InvalidArgumentError, match="shape"):
        s.render_lidar(32, np.eye(3))
    skew = np.eye(4)
    skew[0, 0] = 2.0
    with pytest.raises(drivekit.DecodeError):
        s.render_lidar(32, skew)
    nan = np.eye(4)
    nan[0, 3] = float("nan")
    with pytest.raises(drivekit.InvalidArgumentError):
        s.render_lidar(32, nan)
    with pytest.raises(drivekit.InvalidArgumentError, match="time"):
        s.render_lidar(32, np.eye(4), time=float("nan"))
    with pytest.raises(drivekit.InvalidArgumentError, match="hit_threshold"):
        s.render_lidar(32, np.eye(4), hit_threshold=0.0)
    with pytest.raises(drivekit.InvalidArgumentError, match="raydrop"):
        s.render_lidar(32, np.eye(4), raydrop="sometimes")
    with pytest.raises(drivekit.InvalidArgumentError, match="raydrop_threshold"):
        s.render_lidar(32, np.eye(4), raydrop_threshold=1.5)
    with pytest.raises(TypeError):
        s.render_lidar("32", np.eye(4))
    with pytest.raises(drivekit.InvalidArgumentError, match="threads"):
        s.render_lidar(32, np.eye(4), threads=0)


def run_cli(*args):
    assert os.access(DRIVEKIT, os.X_OK), f"{DRIVEKIT} not built (set DK_BUILD_DIR)"
    return subprocess.run([DRIVEKIT, "sim", "lidar", *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def test_cli_lidar(tmp_path):
    ply = tmp_path / "wall.ply"
    wall().save_ply(ply)
    out = tmp_path / "pts.bin"
    r = run_cli("--ply", ply, "--out", out, "--preset", 32, "--pose", "1,0,0,0", "--threads", 2)
    assert r.returncode == 0, r.stderr
    assert "32 beams x 1084 columns" in r.stdout and "points" in r.stdout
    pts = np.fromfile(out, "<f4").reshape(-1, 6)
    assert len(pts) > 100
    assert np.allclose(pts[:, 0], 9.0, atol=0.02)   # the wall, seen from x = 1
    assert set(np.unique(pts[:, 4])) <= set(range(32))
    # The same sweep from Python gives the same points.
    pose = np.eye(4)
    pose[0, 3] = 1.0
    py = sim.load_ply(ply).render_lidar(32, pose)
    assert np.array_equal(py["points"], pts)
    png = tmp_path / "range.png"
    r = run_cli("--ply", ply, "--out", png, "--preset", 32)
    assert r.returncode == 0, r.stderr
    import cv2   # Debian python3-opencv
    img = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    assert img.shape == (32, 1084) and img.dtype == np.uint8
    expect = sim.load_ply(ply).render_lidar(32, np.eye(4))
    keep = (expect["range"] > 0) & (expect["raydrop"] < 0.5)
    assert np.array_equal(img[::-1] > 0, keep)
    v = np.clip(np.rint(255 * expect["range"][keep] / 100.0), 1, 255)
    assert np.array_equal(img[::-1][keep], v.astype(np.uint8))

    r = run_cli("--ply", ply, "--out", tmp_path / "x.bin", "--bogus")
    assert r.returncode == 2 and "--bogus" in r.stderr
    r = run_cli("--ply", ply, "--out", tmp_path / "x.bin", "--preset", 16)
    assert r.returncode == 2 and "preset" in r.stderr
    r = run_cli("--ply", ply, "--out", tmp_path / "x.txt")
    assert r.returncode == 2
    r = run_cli("--ply", tmp_path / "missing.ply", "--out", tmp_path / "x.bin")
    assert r.returncode == 1 and "missing.ply" in r.stderr
    assert not (tmp_path / "x.bin").exists()
    r = run_cli("--ply", ply, "--out", tmp_path / "x.bin", "--tracks", tmp_path / "none.json")
    assert r.returncode == 1 and "none.json" in r.stderr
    r = run_cli("--help")
    assert r.returncode == 0 and "--preset" in r.stdout and "--tracks" in r.stdout
