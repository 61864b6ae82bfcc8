"""Tests of drivekit.camera: camera models against OpenCV, round trips, Jacobians,
validation, OpenCV conversions, lidar patterns and the nuScenes rig.

Run: PYTHONPATH=build/python /usr/bin/python3 -m pytest -q tests/python/test_camera.py
"""
import copy
import gc
import math
import pickle

import numpy as np
import pytest

import drivekit
from drivekit import camera
from drivekit.camera import Camera

import cv2  # noqa: E402  (Debian python3-opencv, installed by scripts/setup)


# Distortions strong enough to matter, mild enough that the whole image is
# inside OpenCV's calibrated range.
OCV_K = (0.12, -0.05, 0.01, 0.02, -0.01, 0.005)
OCV_P = (1.2e-3, -8e-4)
OCV_S = (1e-3, -2e-4, 5e-4, 1e-4)

# gsplat's camera_front_fisheye_140fov (reference/nre.md, 1.3).
FISHEYE = dict(width=3840, height=2160, fx=1913.76, fy=1914.00, cx=1928.18 + 0.5,
               cy=1083.86 + 0.5, k=(-0.030093, -0.005104, -0.000850, 0.001080),
               max_angle=1.2217)

# gsplat's camera_cross_left_120fov f-theta calibration (reference/nre.md, 1.4).
FTHETA_FW = (0.0, 1888.838, -41.7718, 111.5047, -180.2714, 64.0710)
FTHETA_BW = (0.0, 5.2871e-4, 9.6068e-9, -1.3836e-11, 1.0398e-14, -1.8811e-18)
FTHETA = dict(width=3840, height=2160, cx=1919.70 + 0.5, cy=1486.51 + 0.5,
              linear_cde=(0.99967, 3.40e-6, 3.74e-5), max_angle=1.34617)


def settle():
    gc.collect()
    gc.collect()


def make_pinhole():
    return Camera.pinhole(1600, 900, 1266.4, 1260.1, 816.3, 491.5)


def make_opencv():
    return Camera.opencv(1280, 720, 900.0, 905.0, 652.3, 371.8, k=OCV_K, p=OCV_P, s=OCV_S)


def make_fisheye():
    return Camera.fisheye(FISHEYE["width"], FISHEYE["height"], FISHEYE["fx"], FISHEYE["fy"],
                          FISHEYE["cx"], FISHEYE["cy"], k=FISHEYE["k"],
                          max_angle=FISHEYE["max_angle"])


def make_ftheta(reference="angle_to_pixeldist"):
    poly = FTHETA_FW if reference == "angle_to_pixeldist" else FTHETA_BW
    return Camera.ftheta(FTHETA["width"], FTHETA["height"], FTHETA["cx"], FTHETA["cy"], poly,
                         reference=reference, linear_cde=FTHETA["linear_cde"],
                         max_angle=FTHETA["max_angle"])


ALL_CAMERAS = {
    "pinhole": make_pinhole,
    "opencv": make_opencv,
    "fisheye": make_fisheye,
    "ftheta_fw": make_ftheta,
    "ftheta_bw": lambda: make_ftheta("pixeldist_to_angle"),
}


def random_points_in_view(cam, n, seed, zmin=1.0, zmax=30.0):
    """Camera-frame points whose pixels are uniform over the image: unproject
    random pixels (drivekit's own inverse) and scale by random depths."""
    rng = np.random.default_rng(seed)
    uv = rng.uniform([0, 0], [cam.width, cam.height], size=(n, 2))
    rays, ok = cam.unproject(uv)
    rays = rays[ok]
    depth = rng.uniform(zmin, zmax, size=(len(rays), 1))
    return rays / rays[:, 2:3] * depth


def pixel_grid(cam, step=37):
    us = np.arange(0.5, cam.width, step)
    vs = np.arange(0.5, cam.height, step)
    uu, vv = np.meshgrid(us, vs)
    return np.stack([uu.ravel(), vv.ravel()], axis=1)


# --------------------------------------------------------------------------
# construction, attributes, validation


def test_attributes_and_dict_round_trip():
    cam = make_opencv()
    assert cam.model == "opencv"
    assert (cam.width, cam.height) == (1280, 720)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (900.0, 905.0, 652.3, 371.8)
    assert cam.k == OCV_K and cam.p == OCV_P and cam.s == OCV_S
    assert cam.fw_poly is None and cam.max_angle is None and cam.reference is None
    assert cam.shutter == "global" and cam.margin == 0.0
    d = cam.to_dict()
    assert d["model"] == "opencv" and "fw_poly" not in d
    assert Camera(**d) == cam
    assert Camera.from_dict(d) == cam
    assert "opencv" in repr(cam) and "k=(0.12" in repr(cam)
    with pytest.raises(AttributeError):
        cam.fx = 1.0

    pin = make_pinhole()
    assert pin.k is None and pin.p is None and pin.s is None and pin.max_angle is None
    assert pin != cam and hash(pin) == hash(make_pinhole())

    for make in ALL_CAMERAS.values():
        c = make()
        assert Camera(**c.to_dict()) == c
        assert pickle.loads(pickle.dumps(c)) == c
        assert copy.deepcopy(c) is c
        assert eval(repr(c), {"Camera": Camera}) == c


def test_short_coefficient_lists_are_zero_padded():
    cam = Camera.opencv(640, 480, 500, 500, 320, 240, k=(0.1, -0.02), p=(1e-3,))
    assert cam.k == (0.1, -0.02, 0, 0, 0, 0)
    assert cam.p == (1e-3, 0) and cam.s == (0, 0, 0, 0)
    fe = Camera.fisheye(640, 480, 300, 300, 320, 240, k=[0.01])
    assert fe.k == (0.01, 0, 0, 0)
    assert 0 < fe.max_angle <= math.pi


def test_fisheye_and_ftheta_complete_on_construction():
    fe = Camera.fisheye(1920, 1080, 600, 600, 960, 540, k=(0.02, -0.01, 0.001, 0))
    assert 0 < fe.max_angle <= math.pi      # derived from the polynomial and the corners
    ft = make_ftheta()
    assert ft.reference == "angle_to_pixeldist"
    assert ft.fw_poly == FTHETA_FW
    assert any(c != 0 for c in ft.bw_poly)  # fitted
    assert ft.max_angle == FTHETA["max_angle"]
    assert ft.linear_cde == FTHETA["linear_cde"]
    assert ft.fx is None and ft.k is None
    bw = make_ftheta("pixeldist_to_angle")
    assert bw.reference == "pixeldist_to_angle" and bw.bw_poly == FTHETA_BW
    # the fitted inverse of the BW reference agrees with the FW calibration
    assert abs(bw.fw_poly[1] - FTHETA_FW[1]) / FTHETA_FW[1] < 0.01


def test_shutter_and_margin_keywords():
    for make, args in [(Camera.pinhole, (100, 80, 50, 50, 50, 40)),
                       (Camera.opencv, (100, 80, 50, 50, 50, 40)),
                       (Camera.fisheye, (100, 80, 50, 50, 50, 40)),
                       (Camera.ftheta, (100, 80, 50, 40, (0, 50)))]:
        cam = make(*args, shutter="top_to_bottom", margin=0.25)
        assert cam.shutter == "top_to_bottom" and cam.margin == 0.25
    for name in camera.SHUTTERS:
        assert Camera.pinhole(10, 10, 5, 5, 5, 5, shutter=name).shutter == name


@pytest.mark.parametrize("make, field", [
    (lambda: Camera.pinhole(640, 480, 0.0, 500, 320, 240), "fx"),
    (lambda: Camera.pinhole(640, 480, 500, -1, 320, 240), "fy"),
    (lambda: Camera.pinhole(0, 480, 500, 500, 320, 240), "size"),
    (lambda: Camera.pinhole(640, 480, 500, 500, float("inf"), 240), "cx"),
    (lambda: Camera.opencv(640, 480, 500, 500, 320, 240, k=(0.1, float("nan"))), "k[1]"),
    (lambda: Camera.opencv(640, 480, 500, 500, 320, 240, s=(0, 0, float("nan"))), "s[2]"),
    (lambda: Camera.fisheye(640, 480, 500, 500, 320, 240, k=(0, 0, float("nan"))), "k[2]"),
    (lambda: Camera.fisheye(640, 480, 300, 300, 320, 240, max_angle=4.0), "max_angle"),
    (lambda: Camera.pinhole(640, 480, 500, 500, 320, 240, margin=-0.1), "margin"),
    (lambda: Camera.ftheta(640, 480, 320, 240, (1.0, 500.0)), "fw_poly[0]"),
    (lambda: Camera.ftheta(640, 480, 320, 240, (0, -500.0)), "fw_poly"),
    (lambda: Camera.ftheta(640, 480, 320, 240, (0, 5e-4), reference="pixeldist_to_angle",
                           linear_cde=(1, float("nan"), 0)), "linear_d"),
    (lambda: Camera.ftheta(640, 480, 320, 240, (0, 500.0), linear_cde=(0, 1, 0)), "linear_c"),
])
def test_validation_errors_name_the_field(make, field):
    with pytest.raises(drivekit.InvalidArgumentError) as ei:
        make()
    assert field in str(ei.value), str(ei.value)
    assert ei.value.status == drivekit._drivekit.EINVAL
    assert isinstance(ei.value, ValueError)


def test_binding_argument_errors():
    with pytest.raises(drivekit.InvalidArgumentError, match="unknown camera model"):
        Camera("kannala", width=10, height=10, fx=1, fy=1, cx=5, cy=5)
    with pytest.raises(drivekit.InvalidArgumentError, match="shutter"):
        Camera.pinhole(10, 10, 5, 5, 5, 5, shutter="sideways")
    with pytest.raises(drivekit.InvalidArgumentError, match="reference"):
        Camera.ftheta(10, 10, 5, 5, (0, 5), reference="forward")
    with pytest.raises(drivekit.InvalidArgumentError, match="at most 6"):
        Camera.opencv(10, 10, 5, 5, 5, 5, k=(0,) * 7)
    with pytest.raises(drivekit.InvalidArgumentError, match="at most 4"):
        Camera.fisheye(10, 10, 5, 5, 5, 5, k=(0,) * 5)
    with pytest.raises(drivekit.InvalidArgumentError, match="not a parameter"):
        Camera("pinhole", width=10, height=10, fx=1, fy=1, cx=5, cy=5, k=(0.1,))
    with pytest.raises(drivekit.InvalidArgumentError, match="not a parameter"):
        Camera("ftheta", width=10, height=10, fx=1, fy=1, cx=5, cy=5, fw_poly=(0, 5))
    with pytest.raises(TypeError, match="needs fx"):
        Camera("pinhole", width=10, height=10, fy=1, cx=5, cy=5)
    with pytest.raises(TypeError):
        Camera.opencv(10, 10, 5, 5, 5, 5, k="abc")
    with pytest.raises(TypeError):
        Camera.pinhole(10.5, 10, 5, 5, 5, 5)
    cam = make_pinhole()
    with pytest.raises(drivekit.InvalidArgumentError, match=r"shape \(N, 3\)"):
        cam.project(np.zeros((4, 2)))
    with pytest.raises(drivekit.InvalidArgumentError, match=r"shape \(N, 2\)"):
        cam.unproject(np.zeros((4, 3)))
    with pytest.raises(drivekit.InvalidArgumentError):
        cam._project(np.zeros((4, 3), dtype=np.float32))   # the C layer takes float64 only
    with pytest.raises(drivekit.InvalidArgumentError):
        cam.pixel_rays(threads=0)


# --------------------------------------------------------------------------
# against OpenCV


def cv2_project(cam, pts):
    img, _ = cv2.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3),
                               cam.intrinsic_matrix(), cam.dist_coeffs())
    return img.reshape(-1, 2)


@pytest.mark.parametrize("make", [make_pinhole, make_opencv])
def test_project_matches_cv2(make):
    cam = make()
    pts = random_points_in_view(cam, 3000, seed=1)
    assert len(pts) > 2500
    uv, valid = cam.project(pts)
    assert valid.dtype == np.bool_ and uv.dtype == np.float64
    assert valid.mean() > 0.99
    ref = cv2_project(cam, pts)
    err = np.abs((uv[valid] - 0.5) - ref[valid]).max()
    assert err < 1e-6, err


def test_project_float32_and_nd_inputs():
    cam = make_opencv()
    pts = random_points_in_view(cam, 60, seed=2)
    uv, valid = cam.project(pts)
    uv32, valid32 = cam.project(pts.astype(np.float32))
    assert uv32.dtype == np.float64
    np.testing.assert_allclose(uv32, cam.project(pts.astype(np.float32).astype(np.float64))[0])
    uv3, valid3 = cam.project(pts[:60].reshape(3, 20, 3))
    assert uv3.shape == (3, 20, 2) and valid3.shape == (3, 20)
    np.testing.assert_array_equal(uv3.reshape(-1, 2), uv[:60])
    one_uv, one_valid = cam.project(pts[0].tolist())
    assert one_uv.shape == (2,) and one_valid.shape == ()
    empty_uv, empty_valid = cam.project(np.zeros((0, 3)))
    assert empty_uv.shape == (0, 2) and empty_valid.shape == (0,)
    # points behind the camera are invalid; z = 0 is undefined (NaN)
    uv_b, ok_b = cam.project([[0.1, 0.1, -1.0], [0.1, 0.1, 0.0]])
    assert not ok_b.any() and np.isnan(uv_b[1]).all()


def test_fisheye_matches_cv2_fisheye():
    cam = make_fisheye()
    rng = np.random.default_rng(3)
    n = 3000
    theta = rng.uniform(0, 0.98 * cam.max_angle, n)
    phi = rng.uniform(-math.pi, math.pi, n)
    r = rng.uniform(1, 30, n)
    pts = np.stack([r * np.sin(theta) * np.cos(phi), r * np.sin(theta) * np.sin(phi),
                    r * np.cos(theta)], axis=1)
    uv, valid = cam.project(pts)
    assert valid.mean() > 0.5
    ref, _ = cv2.fisheye.projectPoints(pts.reshape(1, -1, 3), np.zeros(3), np.zeros(3),
                                       cam.intrinsic_matrix(), cam.dist_coeffs())
    ref = ref.reshape(-1, 2)
    finite = np.isfinite(uv).all(axis=1)
    assert finite.all()
    err = np.abs((uv - 0.5) - ref).max()
    assert err < 1e-6, err


def test_unproject_matches_cv2_undistort_points():
    cam = make_opencv()
    uv = pixel_grid(cam, step=23)
    rays, valid = cam.unproject(uv)
    assert valid.all()
    assert np.allclose(np.linalg.norm(rays, axis=1), 1, atol=1e-12)
    ours = rays[:, :2] / rays[:, 2:3]
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 500, 1e-15)
    ref = cv2.undistortPointsIter((uv - 0.5).reshape(-1, 1, 2), cam.intrinsic_matrix(),
                                  cam.dist_coeffs(), None, None, criteria).reshape(-1, 2)
    err = np.abs(ours - ref).max()
    assert err < 1e-6, err


# --------------------------------------------------------------------------
# round trips, Jacobians, pixel rays, shutter


@pytest.mark.parametrize("name", sorted(ALL_CAMERAS))
def test_unproject_round_trip(name):
    cam = ALL_CAMERAS[name]()
    uv = pixel_grid(cam, step=29 if cam.width < 2000 else 61)
    rays, valid = cam.unproject(uv)
    assert valid.mean() > 0.95, valid.mean()
    assert np.isnan(rays[~valid]).all()
    assert np.allclose(np.linalg.norm(rays[valid], axis=1), 1, atol=1e-12)
    back, _ = cam.project(rays[valid] * 7.0)
    err = np.abs(back - uv[valid]).max()
    assert err < 1e-3, err   # expected ~1e-9
    assert err < 1e-6, err


def test_ftheta_references_agree():
    fw, bw = make_ftheta(), make_ftheta("pixeldist_to_angle")
    rng = np.random.default_rng(4)
    theta = rng.uniform(0, 1.2, 500)
    phi = rng.uniform(-math.pi, math.pi, 500)
    pts = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], 1)
    # the two published polynomials are independent fits of one lens: within a few px
    d = np.linalg.norm(fw.project(pts)[0] - bw.project(pts)[0], axis=1)
    assert np.nanmax(d) < 5.0, np.nanmax(d)


def test_ftheta_optical_axis_and_linear_term():
    cam = make_ftheta()
    uv, ok = cam.project([[0.0, 0.0, 1.0]])
    assert ok[0]
    np.testing.assert_allclose(uv[0], [cam.cx, cam.cy], atol=1e-9)
    # beyond max_angle: invalid
    a = cam.max_angle + 0.05
    _, ok = cam.project([[math.sin(a), 0.0, math.cos(a)]])
    assert not ok[0]


@pytest.mark.parametrize("name", sorted(ALL_CAMERAS))
def test_jacobian_matches_finite_differences(name):
    cam = ALL_CAMERAS[name]()
    pts = random_points_in_view(cam, 200, seed=5, zmin=2.0, zmax=20.0)
    uv, J, valid = cam.project_with_jacobian(pts)
    assert J.shape == (len(pts), 2, 3)
    uv2, valid2 = cam.project(pts)
    np.testing.assert_array_equal(uv, uv2)
    np.testing.assert_array_equal(valid, valid2)
    h = 1e-6
    num = np.empty_like(J)
    for a in range(3):
        dp = np.zeros(3)
        dp[a] = h
        up, _ = cam.project(pts + dp)
        um, _ = cam.project(pts - dp)
        num[:, :, a] = (up - um) / (2 * h)
    scale = np.abs(J).max(axis=(1, 2), keepdims=True)
    rel = np.abs(J - num) / scale
    assert rel[valid].max() < 1e-5, rel[valid].max()


def test_pixel_rays_threads_and_unproject():
    cam = Camera.opencv(320, 200, 250.0, 252.0, 161.0, 99.0, k=OCV_K, p=OCV_P, s=OCV_S)
    rays1, valid1 = cam.pixel_rays(threads=1)
    rays2, valid2 = cam.pixel_rays(threads=2)
    pool = drivekit.Pool(3)
    rays3, valid3 = cam.pixel_rays(threads=pool)
    assert rays1.shape == (200, 320, 3) and rays1.dtype == np.float32
    assert valid1.shape == (200, 320) and valid1.dtype == np.bool_
    np.testing.assert_array_equal(rays1, rays2)
    np.testing.assert_array_equal(rays1, rays3)
    np.testing.assert_array_equal(valid1, valid2)
    np.testing.assert_array_equal(valid1, valid3)
    vv, uu = np.mgrid[0:200, 0:320]
    centres = np.stack([uu + 0.5, vv + 0.5], axis=-1)
    ref, ok = cam.unproject(centres)
    np.testing.assert_array_equal(ok, valid1)
    np.testing.assert_array_equal(ref[ok].astype(np.float32), rays1[ok])
    # projection on a pool: identical to one thread
    pts = random_points_in_view(cam, 20000, seed=6)
    a = cam.project(pts, threads=1)
    b = cam.project(pts, threads=pool)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = cam.unproject(centres.reshape(-1, 2), threads=4)
    np.testing.assert_array_equal(c[0], ref.reshape(-1, 3))


def test_shutter_time():
    h, w = 100, 50
    uv = np.array([[0.5, 0.5], [10.2, 49.9], [49.99, 99.5], [20.0, 150.0], [-5.0, -5.0]])
    t = Camera.pinhole(w, h, 40, 40, 25, 50, shutter="top_to_bottom").shutter_time(uv)
    np.testing.assert_allclose(t, [0, 49 / 99, 1, 1, 0])
    t = Camera.pinhole(w, h, 40, 40, 25, 50, shutter="bottom_to_top").shutter_time(uv)
    np.testing.assert_allclose(t, [99 / 99, (100 - 50) / 99, 0, 0, 1])
    t = Camera.pinhole(w, h, 40, 40, 25, 50, shutter="left_to_right").shutter_time(uv)
    np.testing.assert_allclose(t, [0, 10 / 49, 49 / 49, 20 / 49, 0])
    t = Camera.pinhole(w, h, 40, 40, 25, 50).shutter_time(uv)
    np.testing.assert_array_equal(t, 0)


def test_margin_widens_validity():
    tight = Camera.pinhole(100, 100, 50, 50, 50, 50)
    loose = Camera.pinhole(100, 100, 50, 50, 50, 50, margin=0.2)
    p = [[1.1, 0.0, 1.0]]   # u = 105
    assert not tight.project(p)[1][0]
    assert loose.project(p)[1][0]


# --------------------------------------------------------------------------
# OpenCV conversions


def test_from_opencv_matrix_round_trip():
    K = np.array([[900.0, 0, 640.2], [0, 905.0, 359.7], [0, 0, 1]])
    dist12 = np.array([0.12, -0.05, 1.2e-3, -8e-4, 0.01, 0.02, -0.01, 0.005,
                       1e-3, -2e-4, 5e-4, 1e-4])
    cam = Camera.from_opencv_matrix(1280, 720, K, dist12)
    assert cam.model == "opencv"
    assert (cam.cx, cam.cy) == (640.2 + 0.5, 359.7 + 0.5)
    np.testing.assert_array_equal(cam.intrinsic_matrix(), K)
    np.testing.assert_allclose(cam.intrinsic_matrix(opencv=False)[:2, 2], [640.7, 360.2])
    np.testing.assert_array_equal(cam.dist_coeffs(), dist12)
    assert cam.k == (0.12, -0.05, 0.01, 0.02, -0.01, 0.005)
    assert cam.p == (1.2e-3, -8e-4)

    for n in (4, 5, 8, 14):
        d = np.concatenate([dist12, [0, 0]])[:n]
        c = Camera.from_opencv_matrix(1280, 720, K, d.reshape(1, -1))
        np.testing.assert_array_equal(c.dist_coeffs()[:min(n, 12)], d[:12])
        pts = random_points_in_view(c, 200, seed=n)
        uv, ok = c.project(pts)
        ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K, d)
        assert np.abs(uv[ok] - 0.5 - ref.reshape(-1, 2)[ok]).max() < 1e-6

    pin = Camera.from_opencv_matrix(1280, 720, K)
    assert pin.model == "pinhole"
    np.testing.assert_array_equal(pin.intrinsic_matrix(), K)
    fe = Camera.from_opencv_matrix(1280, 720, K, [0.01, -0.002, 0.0, 0.0], fisheye=True)
    assert fe.model == "fisheye" and fe.k == (0.01, -0.002, 0.0, 0.0)
    np.testing.assert_array_equal(fe.intrinsic_matrix(), K)

    with pytest.raises(drivekit.InvalidArgumentError):
        Camera.from_opencv_matrix(1280, 720, K, np.zeros(6))
    with pytest.raises(drivekit.InvalidArgumentError, match="skew"):
        Camera.from_opencv_matrix(1280, 720, [[900, 1, 640], [0, 900, 360], [0, 0, 1]])
    with pytest.raises(drivekit.InvalidArgumentError, match="tilt"):
        Camera.from_opencv_matrix(1280, 720, K, np.r_[np.zeros(12), 0.1, 0])
    with pytest.raises(drivekit.InvalidArgumentError):
        make_ftheta().intrinsic_matrix()


# --------------------------------------------------------------------------
# lidar and rig


def test_lidar_presets_and_rays():
    for n, cols, hz in [(32, 1084, 20), (64, 2048, 10), (128, 3600, 10)]:
        m = camera.lidar_preset(n)
        assert m["n_beams"] == n and m["n_columns"] == cols and m["spin_hz"] == hz
        assert m["direction"] == -1
        el = m["elevation"]
        assert isinstance(el, list) and len(el) == n
        assert all(a < b for a, b in zip(el, el[1:]))
        assert m["min_range"] < m["max_range"]
    m = camera.lidar_preset(32)
    dirs, times = camera.lidar_rays(32)
    assert dirs.shape == (32, 1084, 3) and times.shape == (1084,)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=-1), 1, atol=1e-12)
    np.testing.assert_allclose(times, np.arange(1084) / (1084 * 20.0))
    # column 0 faces +x; elevation of beam b
    np.testing.assert_allclose(np.arcsin(dirs[:, 0, 2]), m["elevation"], atol=1e-12)
    assert np.all(dirs[:, 0, 0] > 0) and np.allclose(dirs[:, 0, 1], 0, atol=1e-12)
    # clockwise: the second column turns towards -y
    assert dirs[16, 1, 1] < 0
    # an edited dict
    m2 = dict(m, n_columns=10, direction=1)
    d2, t2 = camera.lidar_rays(m2)
    assert d2.shape == (32, 10, 3) and d2[16, 1, 1] > 0
    with pytest.raises(drivekit.InvalidArgumentError):
        camera.lidar_preset(16)
    with pytest.raises(drivekit.InvalidArgumentError, match="spin_hz"):
        camera.lidar_rays(dict(m, spin_hz=0.0))
    with pytest.raises(drivekit.InvalidArgumentError, match="elevation"):
        camera.lidar_rays(dict(m, elevation=m["elevation"][:-1]))
    with pytest.raises(drivekit.InvalidArgumentError, match="missing"):
        camera.lidar_rays({"n_beams": 1})


def test_nuscenes_rig():
    rig = camera.nuscenes_rig()
    names = [s["name"] for s in rig]
    assert names == ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK",
                     "CAM_BACK_LEFT", "CAM_FRONT_LEFT", "LIDAR_TOP"]
    cams = [s for s in rig if s["kind"] == "camera"]
    assert len(cams) == 6
    for s in cams:
        cam = s["camera"]
        assert isinstance(cam, Camera) and cam.model == "pinhole"
        assert (cam.width, cam.height) == (1600, 900) and cam.shutter == "top_to_bottom"
        assert s["rate_hz"] == 12.0 and s["lidar"] is None
        T = s["sensor_to_ego"]
        assert T.shape == (4, 4)
        R = T[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(T[3], [0, 0, 0, 1])
        np.testing.assert_allclose(T[:3, 3], s["translation"])
        # image "down" is ego -z for every camera (horizontal optical axes)
        np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, -1], atol=1e-12)
    front = rig[0]
    np.testing.assert_allclose(front["sensor_to_ego"][:3, :3] @ [0, 0, 1], [1, 0, 0],
                               atol=1e-12)
    back = rig[3]
    np.testing.assert_allclose(back["sensor_to_ego"][:3, :3] @ [0, 0, 1], [-1, 0, 0],
                               atol=1e-12)
    # a point 10 m ahead of CAM_FRONT, in ego coordinates, projects to the image centre
    T = front["sensor_to_ego"]
    p_ego = T[:3, 3] + np.array([10.0, 0, 0])
    p_cam = T[:3, :3].T @ (p_ego - T[:3, 3])
    uv, ok = front["camera"].project(p_cam)
    assert ok and np.allclose(uv, [800, 450])
    lidar = rig[6]
    assert lidar["kind"] == "lidar" and lidar["camera"] is None
    assert lidar["lidar"]["n_beams"] == 32 and lidar["rate_hz"] == 20.0
    # time offsets follow the clockwise sweep: front first, front-left last
    offs = [s["time_offset"] for s in cams]
    assert offs[0] == 0 and all(a < b for a, b in zip(offs, offs[1:]))

    small = camera.nuscenes_rig(800, 450)
    assert small[0]["camera"].width == 800
    assert small[0]["camera"].fx == pytest.approx(front["camera"].fx / 2)
    with pytest.raises(drivekit.InvalidArgumentError):
        camera.nuscenes_rig(0, 450)


# --------------------------------------------------------------------------
# memory


def test_no_leaks():
    settle()
    base = drivekit.alloc_live()
    objs = []
    for make in ALL_CAMERAS.values():
        cam = make()
        pts = random_points_in_view(cam, 100, seed=7)
        objs.append(cam.project(pts))
        objs.append(cam.project_with_jacobian(pts, threads=2))
        objs.append(cam.unproject(pixel_grid(cam, 200), threads=3))
        objs.append(cam.shutter_time(pixel_grid(cam, 200)))
    objs.append(Camera.pinhole(64, 48, 40, 40, 32, 24).pixel_rays(threads=2))
    objs.append(camera.lidar_rays(64))
    objs.append(camera.nuscenes_rig())
    for bad in (lambda: Camera.pinhole(64, 48, 0, 40, 32, 24),
                lambda: camera.lidar_preset(7),
                lambda: make_pinhole().project(np.zeros((3, 2)))):
        with pytest.raises(drivekit.InvalidArgumentError):
            bad()
    assert drivekit.alloc_live() > base
    del objs, cam, pts
    settle()
    assert drivekit.alloc_live() == base
