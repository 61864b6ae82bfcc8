"""Tests of drivekit.sim: PLY round trips, a single Gaussian against the
analytic EWA footprint, thread-count independence, error mapping, leaks, and
the `drivekit sim render` command.

Run: PYTHONPATH=build/python DK_BUILD_DIR=build /usr/bin/python3 -m pytest -q tests/python/test_sim.py
(DK_BUILD_DIR picks another build folder than <repo>/build.)
"""
import gc
import math
import os
import subprocess

import numpy as np
import pytest

import drivekit
from drivekit import sim

import cv2  # noqa: E402  (Debian python3-opencv)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("DK_BUILD_DIR") or os.path.join(REPO, "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(REPO, BUILD)
DRIVEKIT = os.path.join(BUILD, "bin", "drivekit")

SH_C0 = 0.28209479177387814


def settle():
    gc.collect()
    gc.collect()


def random_scene(n, degree, seed=0, z=5.0):
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2
    means = rng.normal(size=(n, 3)) * [1.5, 1.0, 1.0] + [0, 0, z]
    return sim.Scene.from_arrays(
        means, rng.uniform(-3.5, -1.5, size=(n, 3)), rng.normal(size=(n, 4)),
        rng.normal(size=n), rng.normal(size=(n, 3)),
        None if degree == 0 else rng.normal(size=(n, 3, k - 1)) * 0.2)


def test_module_surface():
    assert "sim" in drivekit.__all__
    assert sim.Camera is drivekit.camera.Camera
    cam = sim.Camera.pinhole(32, 24, 30, 30, 16, 12)
    assert isinstance(cam, drivekit.camera.Camera)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_ply_round_trip(tmp_path, degree):
    s = random_scene(57, degree, seed=degree)
    assert len(s) == 57 and s.sh_degree == degree
    path = tmp_path / "scene.ply"
    s.save_ply(path)
    t = sim.load_ply(str(path))
    assert len(t) == 57 and t.sh_degree == degree
    a, b = s.arrays(), t.arrays()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == np.float32
        assert np.array_equal(a[key], b[key]), key
    assert a["sh_rest"].shape == (57, 3, (degree + 1) ** 2 - 1)
    # from_arrays(**arrays()) rebuilds the same scene.
    u = sim.Scene.from_arrays(**{k: v for k, v in b.items() if k != "sh_rest" or degree})
    for key, v in u.arrays().items():
        assert np.array_equal(v, a[key])


def test_from_arrays_validation():
    n = 4
    ok = dict(means=np.zeros((n, 3)), scales_log=np.zeros((n, 3)),
              rotations_wxyz=np.tile([1.0, 0, 0, 0], (n, 1)), opacity_logit=np.zeros(n),
              sh_dc=np.zeros((n, 3)))
    assert len(sim.Scene.from_arrays(**ok)) == n
    with pytest.raises(drivekit.InvalidArgumentError, match="scales_log"):
        sim.Scene.from_arrays(**{**ok, "scales_log": np.zeros((n, 2))})
    with pytest.raises(drivekit.InvalidArgumentError, match="sh_rest"):
        sim.Scene.from_arrays(**ok, sh_rest=np.zeros((n, 3, 5)))
    with pytest.raises(TypeError):
        sim.Scene(object())


def ewa_reference(a, cam):
    """The C test's analytic footprint, from the stored float32 values."""
    q = a["rotations_wxyz"][0].astype(np.float64)
    w, x, y, z = q / np.linalg.norm(q)
    R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    S2 = np.exp(2.0 * a["scales_log"][0].astype(np.float64))
    cov = R @ np.diag(S2) @ R.T
    px, py, pz = a["means"][0].astype(np.float64)
    J = np.array([[cam.fx / pz, 0, -cam.fx * px / pz ** 2],
                  [0, cam.fy / pz, -cam.fy * py / pz ** 2]])
    S = J @ cov @ J.T + 0.3 * np.eye(2)
    conic = np.linalg.inv(S)
    m2 = np.array([cam.fx * px / pz + cam.cx, cam.fy * py / pz + cam.cy])
    op = 1.0 / (1.0 + math.exp(-float(a["opacity_logit"][0])))
    return m2, conic, op


@pytest.mark.parametrize("opacity,on_centre", [(0.3, False), (0.8, False), (0.997, True)])
def test_single_gaussian_matches_ewa(opacity, on_centre):
    W, H = 70, 50
    cam = sim.Camera.pinhole(W, H, 60, 55, 33.3, 24.1)
    mean = [0.3, -0.2, 4.0]
    if on_centre:   # mean on a pixel centre, so the 0.99 cap is reached
        mean = [(35.5 - 33.3) * 4.0 / 60, (20.5 - 24.1) * 4.0 / 55, 4.0]
    col = np.array([0.8, 0.4, 0.1])
    s = sim.Scene.from_arrays([mean], [np.log([0.2, 0.07, 0.12])], [[0.9, 0.2, -0.3, 0.25]],
                              [math.log(opacity / (1 - opacity))], [(col - 0.5) / SH_C0])
    out = s.render(cam, np.eye(4))
    assert out["rgb"].shape == (H, W, 3) and out["alpha"].shape == (H, W)
    assert out["depth"].shape == (H, W)
    assert all(v.dtype == np.float32 for v in out.values())

    m2, conic, op = ewa_reference(s.arrays(), cam)
    ii, jj = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    dx, dy = ii - m2[0], jj - m2[1]
    g = op * np.exp(-0.5 * (conic[0, 0] * dx * dx + 2 * conic[0, 1] * dx * dy
                            + conic[1, 1] * dy * dy))
    want = np.minimum(g, 0.99)
    want[want < 1.0 / 255] = 0
    keep = np.abs(g - 1.0 / 255) >= 1e-5   # float vs double at the cut
    alpha = out["alpha"].astype(np.float64)
    assert np.abs(alpha - want)[keep].max() <= 1e-5
    rgb = out["rgb"].astype(np.float64)
    assert np.abs(rgb - col * want[..., None])[keep].max() <= 1e-5
    inside = keep & (want > 0)
    assert inside.sum() > 50
    assert np.abs(out["depth"][inside] - 4.0).max() <= 2e-6
    assert np.all(out["depth"][keep & (want == 0)] == 0)
    if on_centre:
        assert (g > 0.99).any() and np.isclose(alpha.max(), 0.99, atol=1e-6)


def test_background_and_zero_copy():
    s = random_scene(10, 0, z=-5.0)   # everything behind the camera
    cam = sim.Camera.pinhole(16, 12, 10, 10, 8, 6)
    out = s.render(cam, np.eye(4), background=(0.25, 0, 0.5))
    assert np.all(out["alpha"] == 0)
    assert np.all(out["rgb"] == np.array([0.25, 0, 0.5], np.float32))
    assert not out["rgb"].flags.owndata   # a view of drivekit memory


@pytest.mark.parametrize("model", ["pinhole", "ftheta"])
def test_threads_identical(model):
    s = random_scene(3000, 3, seed=7)
    if model == "pinhole":
        cam = sim.Camera.pinhole(160, 96, 100, 100, 80, 48)
    else:
        cam = sim.Camera.ftheta(160, 96, 80, 48, [0, 90, 0, 0, 0, 0])
    pose = np.eye(4)
    pose[:3, 3] = [0.1, -0.2, 0.3]
    a = s.render(cam, pose, threads=1)
    b = s.render(cam, pose, threads=2)
    c = s.render(cam, pose, threads=drivekit.Pool(3))
    assert a["alpha"].max() > 0.5
    for key in a:
        assert np.array_equal(a[key], b[key]) and np.array_equal(a[key], c[key]), key


def test_rolling_shutter():
    s = random_scene(500, 1, seed=3)
    cam = sim.Camera.pinhole(64, 48, 50, 50, 32, 24, shutter="top_to_bottom")
    end = np.eye(4)
    end[0, 3] = 0.3
    rs = s.render(cam, np.eye(4), rolling_shutter=True, cam_to_world_end=end)
    same = s.render(cam, np.eye(4), rolling_shutter=True, cam_to_world_end=np.eye(4))
    glob = s.render(cam, np.eye(4))
    assert not np.array_equal(rs["rgb"], same["rgb"])
    # Same pose at both ends: the unscented transform's footprints, close to EWA's.
    diff = np.abs(same["alpha"] - glob["alpha"])
    assert diff.max() < 0.05 and diff.mean() < 5e-3
    with pytest.raises(drivekit.InvalidArgumentError):
        s.render(cam, np.eye(4), rolling_shutter=True)


def test_malformed_ply_names_file(tmp_path):
    good = tmp_path / "good.ply"
    random_scene(20, 1).save_ply(good)
    data = good.read_bytes()
    bad = tmp_path / "truncated.ply"
    bad.write_bytes(data[:-7])
    with pytest.raises(drivekit.DecodeError, match="truncated.ply") as e:
        sim.load_ply(bad)
    assert e.value.status == drivekit._drivekit.EINVALIDDATA
    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"not a ply at all\n")
    with pytest.raises(drivekit.DecodeError, match="junk.ply"):
        sim.load_ply(junk)
    with pytest.raises(drivekit.NotFoundError, match="missing.ply"):
        sim.load_ply(tmp_path / "missing.ply")


def test_bad_pose_and_camera():
    s = random_scene(5, 0)
    cam = sim.Camera.pinhole(16, 12, 10, 10, 8, 6)
    with pytest.raises(drivekit.DecodeError, match="dk_pose_from_matrix"):
        s.render(cam, 2 * np.eye(4))   # not a rotation
    nan = np.eye(4)
    nan[0, 3] = np.nan
    with pytest.raises(drivekit.InvalidArgumentError, match="not finite"):
        s.render(cam, nan)
    with pytest.raises(drivekit.InvalidArgumentError, match="shape"):
        s.render(cam, np.eye(3))
    with pytest.raises(TypeError):
        s.render("pinhole", np.eye(4))
    with pytest.raises(drivekit.InvalidArgumentError):
        s.render(cam, np.eye(4), threads=0)


def test_no_leaks(tmp_path):
    settle()
    base = drivekit.alloc_live()
    s = random_scene(300, 2)
    path = tmp_path / "s.ply"
    s.save_ply(path)
    t = sim.load_ply(path)
    cam = sim.Camera.fisheye(48, 32, 20, 20, 24, 16)
    outs = [t.render(cam, np.eye(4), threads=2), s.render(cam, np.eye(4))]
    arrays = t.arrays()
    try:
        sim.load_ply(tmp_path / "nope.ply")
    except drivekit.NotFoundError:
        pass
    assert drivekit.alloc_live() > base
    del s, t, outs, arrays
    settle()
    assert drivekit.alloc_live() == base


def run_cli(*args):
    assert os.access(DRIVEKIT, os.X_OK), f"{DRIVEKIT} not built (set DK_BUILD_DIR)"
    return subprocess.run([DRIVEKIT, "sim", "render", *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def test_cli_render(tmp_path):
    ply = tmp_path / "scene.ply"
    # Gaussians around (5, 0, 1.5) in an FLU world: in front of a camera at
    # (0, 0, 1.5) with yaw 0.
    rng = np.random.default_rng(1)
    n = 400
    means = rng.normal(size=(n, 3)) * 0.7 + [5, 0, 1.5]
    sim.Scene.from_arrays(means, np.full((n, 3), -2.0), rng.normal(size=(n, 4)),
                          np.full(n, 2.0), rng.normal(size=(n, 3))).save_ply(ply)
    for model in ("pinhole", "fisheye", "ftheta"):
        out = tmp_path / f"{model}.png"
        r = run_cli("--ply", ply, "--out", out, "--camera", model, "--width", 96, "--height", 64,
                    "--fov", 100, "--pose", "0,0,1.5,0", "--threads", 2)
        assert r.returncode == 0, r.stderr
        assert "96x64" in r.stdout and "400 Gaussians" in r.stdout and "ms" in r.stdout
        img = cv2.imread(str(out))
        assert img is not None and img.shape == (64, 96, 3)
        assert img.max() > 0   # the scene is in view
    # Looking away (yaw 180): nothing in view.
    r = run_cli("--ply", ply, "--out", tmp_path / "away.png", "--width", 32, "--height", 20,
                "--pose", "0,0,1.5,180")
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(tmp_path / "away.png")).max() == 0

    r = run_cli("--ply", ply, "--out", tmp_path / "x.png", "--bogus")
    assert r.returncode == 2 and "--bogus" in r.stderr
    r = run_cli("--ply", ply, "--out", tmp_path / "x.png", "--pose", "1,2")
    assert r.returncode == 2
    r = run_cli("--ply", tmp_path / "missing.ply", "--out", tmp_path / "x.png")
    assert r.returncode == 1 and "missing.ply" in r.stderr
    assert not (tmp_path / "x.png").exists()
