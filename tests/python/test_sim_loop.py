"""Closed loop: drivekit.sim.Simulator, `drivekit sim serve` and the bicycle
model of scripts/sim_loop.py."""

import importlib.util
import json
import os
import pathlib
import socket
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest

import drivekit
from drivekit import image, sim

ROOT = pathlib.Path(__file__).resolve().parents[2]
W, H = 64, 36


def _drivekit_cli():
    pkg = pathlib.Path(drivekit.__file__).resolve().parent   # BUILD/python/drivekit
    exe = pkg.parent.parent / "bin" / "drivekit"
    assert exe.exists(), f"drivekit command not built next to the package: {exe}"
    return str(exe)


def _scene(n=500, actor=0, seed=3):
    """Gaussians on a ring around the origin; the last `actor` ones are
    actor-local (stored around the origin) -- used with a track elsewhere."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 2 * np.pi, n)
    r = rng.uniform(4, 15, n)
    means = np.c_[r * np.cos(a), r * np.sin(a), rng.uniform(0, 3, n)]
    return sim.Scene.from_arrays(means, rng.uniform(-2.5, -0.8, (n, 3)),
                                 np.c_[np.ones(n) * 1.5, rng.uniform(-0.5, 0.5, (n, 3))],
                                 rng.uniform(0, 4, n), rng.uniform(-1, 1, (n, 3)))


def _ego(x=0.5, y=-0.3, yaw=0.4):
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0, x], [s, c, 0, y], [0, 0, 1, 0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def scene():
    return _scene()


def test_simulator_matches_scene_render(scene):
    s = sim.Simulator(scene, width=W, height=H, threads=2, rolling_shutter=False)
    names = [d["name"] for d in s.sensors]
    assert names[:2] == ["CAM_FRONT", "CAM_FRONT_RIGHT"] and names[-1] == "LIDAR_TOP"
    ego = _ego()
    for i, d in enumerate(s.sensors):
        if d["kind"] != "camera":
            continue
        out = s.render(d["name"], ego, 0.5)
        ref = scene.render(d["camera"], ego @ d["sensor_to_ego"])
        for k in ("rgb", "alpha", "depth"):
            assert out[k].shape == ref[k].shape
            np.testing.assert_array_equal(out[k], ref[k])
        by_index = s.render(i, ego, 0.5)
        np.testing.assert_array_equal(by_index["rgb"], out["rgb"])
    assert s.render("CAM_FRONT", ego, 0.0)["alpha"].sum() > 1


def test_simulator_rolling_shutter_matches(scene):
    s = sim.Simulator(scene, width=W, height=H, threads=1)
    cam = s.sensors[0]
    ego, end = _ego(), _ego(1.0, -0.2, 0.45)
    out = s.render("CAM_FRONT", ego, 0.0, ego_to_world_end=end)
    ref = scene.render(cam["camera"], ego @ cam["sensor_to_ego"], rolling_shutter=True,
                       cam_to_world_end=end @ cam["sensor_to_ego"])
    np.testing.assert_array_equal(out["rgb"], ref["rgb"])


def test_simulator_lidar(scene):
    s = sim.Simulator(scene, width=W, height=H)
    out = s.render("LIDAR_TOP", _ego(), 0.0, points=True)
    lid = s.sensors[-1]["lidar"]
    for k in ("range", "intensity", "raydrop", "alpha"):
        assert out[k].shape == (lid["n_beams"], lid["n_columns"])
    hit = out["range"] > 0
    assert hit.mean() > 0.05
    assert out["points"].shape[1] == 6 and 0 < len(out["points"]) <= hit.sum()
    # Points lie at their range from the lidar.
    d = np.linalg.norm(out["points"][:, :3], axis=1)
    assert np.all(d <= out["range"].max() + 1e-3)


def test_simulator_errors(scene):
    s = sim.Simulator(scene, width=W, height=H)
    with pytest.raises(drivekit.NotFoundError, match="CAM_NOPE"):
        s.render("CAM_NOPE", np.eye(4), 0.0)
    with pytest.raises(drivekit.InvalidArgumentError, match="lidar, not a camera|not a camera"):
        s._sim.render_camera(6, np.eye(4), 0.0)
    with pytest.raises(drivekit.InvalidArgumentError, match="timestamp"):
        s.render("CAM_FRONT", np.eye(4), float("nan"))
    bad = np.eye(4)
    bad[0, 0] = 2
    with pytest.raises(drivekit.DecodeError):
        s.render("CAM_FRONT", bad, 0.0)
    with pytest.raises(drivekit.RangeError):
        s.render(17, np.eye(4), 0.0)
    with pytest.raises(drivekit.NotFoundError, match="no track"):
        s.set_actor_pose(4, 0.0, np.eye(4))
    with pytest.raises(drivekit.InvalidArgumentError, match="rig"):
        sim.Simulator(scene, rig="waymo")
    with pytest.raises(TypeError):
        sim.Simulator("scene.ply")


def test_simulator_actor_override(tmp_path):
    n, k = 300, 80
    base = _scene(n)
    arr = base.arrays()
    rng = np.random.default_rng(1)
    arr["means"][-k:] = rng.uniform(-1, 1, (k, 3))
    arr["opacity_logit"][-k:] = 5
    scene = sim.Scene.from_arrays(**arr)
    # actor ids travel through a PLY written here (from_arrays has none).
    ply = tmp_path / "actor.ply"
    scene.save_ply(ply)
    data = bytearray(ply.read_bytes())
    head_end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:head_end].decode()
    props = [l for l in header.splitlines() if l.startswith("property")]
    rows = np.frombuffer(bytes(data[head_end:]), dtype="<f4").reshape(n, len(props))
    ids = np.full(n, -1, dtype="<i4")
    ids[-k:] = 1
    rec = np.zeros(n, dtype=[("f", "<f4", len(props)), ("id", "<i4")])
    rec["f"], rec["id"] = rows, ids
    header = header.replace("end_header\n", "property int actor_id\nend_header\n")
    ply.write_bytes(header.encode() + rec.tobytes())
    tracks = tmp_path / "actor.tracks.json"
    far = [1, 0, 0, 0, 8, 40, 1]
    tracks.write_text(json.dumps({"format": "drivekit.tracks", "version": 1, "actors": [
        {"id": 1, "times": [0, 1, 2], "poses": [far, far[:5] + [45, 1], far[:5] + [50, 1]]}]}))
    s = sim.Simulator(sim.load_ply(ply), width=W, height=H, tracks=tracks,
                      rolling_shutter=False)
    ego = np.eye(4)
    before = s.render("CAM_FRONT", ego, 1.5)
    ahead = _ego(10, 0, 0.3)
    ahead[2, 3] = 1.5
    s.set_actor_pose(1, 1.2, ahead)
    np.testing.assert_allclose(s.actor_pose(1, 1.2), ahead, atol=1e-12)
    np.testing.assert_allclose(s.actor_pose(1, 0.5)[:3, 3], [8, 42.5, 1], atol=1e-9)
    after = s.render("CAM_FRONT", ego, 1.5)
    assert after["alpha"].sum() > before["alpha"].sum() + 5
    s.clear_actor_pose(1)
    again = s.render("CAM_FRONT", ego, 1.5)
    np.testing.assert_array_equal(again["rgb"], before["rgb"])
    s.clear_actor_pose()


# ---------------------------------------------------------------------------
# The HTTP server


def _post(url, body, timeout=30):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=timeout)


def _raw(sock_port, payload, timeout=10):
    """Sends raw bytes, returns the status code of the answer (0 if none)."""
    with socket.create_connection(("127.0.0.1", sock_port), timeout=timeout) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
    if not got.startswith(b"HTTP/1.1 "):
        return 0, got
    return int(got[9:12]), got


@pytest.fixture(scope="module")
def server(tmp_path_factory, scene):
    d = tmp_path_factory.mktemp("serve")
    ply = d / "scene.ply"
    scene.save_ply(ply)
    proc = subprocess.Popen([_drivekit_cli(), "sim", "serve", "--ply", str(ply), "--port", "0",
                             "--width", str(W), "--height", str(H), "--threads", "2",
                             "--global-shutter", "--client-timeout", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "listening on http://127.0.0.1:" in line, (line, proc.stderr.read())
    port = int(line.split("127.0.0.1:")[1].split()[0])
    yield proc, port, f"http://127.0.0.1:{port}"
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_server_endpoints(server, scene):
    proc, port, url = server
    with urllib.request.urlopen(url + "/health", timeout=30) as r:
        assert json.load(r) == {"status": "ok", "gaussians": len(scene), "sensors": 7}
    with urllib.request.urlopen(url + "/sensors", timeout=30) as r:
        sensors = json.load(r)["sensors"]
    rig = {d["name"]: d for d in drivekit.camera.nuscenes_rig(W, H)}
    assert [s["name"] for s in sensors] == list(rig)
    front = sensors[0]
    assert front["kind"] == "camera" and (front["width"], front["height"]) == (W, H)
    assert front["fx"] == rig["CAM_FRONT"]["camera"].fx
    np.testing.assert_allclose(front["sensor_to_ego"], rig["CAM_FRONT"]["sensor_to_ego"],
                               atol=1e-15)
    assert sensors[-1]["kind"] == "lidar" and sensors[-1]["beams"] == 32

    ego = _ego()
    cam = rig["CAM_BACK"]
    ref = scene.render(cam["camera"], ego @ cam["sensor_to_ego"])
    body = {"sensor": "CAM_BACK", "ego_to_world": ego.tolist(), "timestamp": 0.25}
    with _post(url + "/render", body) as r:
        assert r.headers["Content-Type"] == "image/png"
        png = image.decode_png(r.read())
    expect = np.rint(np.clip(ref["rgb"], 0, 1) * np.float32(255)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(png), expect)

    with _post(url + "/render", dict(body, format="raw", ego_to_world=ego.ravel().tolist())) as r:
        assert r.headers["X-Shape"] == f"{H},{W},5" and r.headers["X-Dtype"] == "float32"
        raw = np.frombuffer(r.read(), dtype="<f4").reshape(H, W, 5)
    np.testing.assert_array_equal(raw[..., :3], ref["rgb"])
    np.testing.assert_array_equal(raw[..., 3], ref["alpha"])
    np.testing.assert_array_equal(raw[..., 4], ref["depth"])

    local = sim.Simulator(scene, width=W, height=H, rolling_shutter=False)
    lref = local.render("LIDAR_TOP", ego, 0.1, points=True)
    with _post(url + "/render", {"sensor": "LIDAR_TOP", "ego_to_world": ego.tolist(),
                                 "timestamp": 0.1}) as r:
        shape = tuple(int(v) for v in r.headers["X-Shape"].split(","))
        img = np.frombuffer(r.read(), dtype="<f4").reshape(shape)
    np.testing.assert_array_equal(img[..., 0], lref["range"])
    np.testing.assert_array_equal(img[..., 3], lref["alpha"])
    with _post(url + "/render", {"sensor": "LIDAR_TOP", "ego_to_world": ego.tolist(),
                                 "timestamp": 0.1, "lidar_output": "points"}) as r:
        pts = np.frombuffer(r.read(), dtype="<f4").reshape(-1, 6)
    np.testing.assert_array_equal(pts, lref["points"])

    # Actors: the scene has no tracks, so an override is refused with 404.
    with pytest.raises(urllib.error.HTTPError) as e:
        _post(url + "/actors", {"id": 2, "timestamp": 0, "actor_to_world": np.eye(4).tolist()})
    assert e.value.code == 404 and "no track" in json.load(e.value)["error"]
    with _post(url + "/actors", {"id": -1, "clear": True}) as r:
        assert json.load(r)["status"] == "ok"


HOSTILE = [
    (b"GET /nope HTTP/1.1\r\n\r\n", 404),
    (b"GET /render HTTP/1.1\r\n\r\n", 405),
    (b"POST /render HTTP/1.1\r\nContent-Length: 5\r\n\r\n{nope", 400),
    (b"POST /render HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 400),
    (b'POST /render HTTP/1.1\r\nContent-Length: 70\r\n\r\n{"sensor": "CAM_FRONT", '
     b'"timestamp": 0, "ego_to_world": [1, 2, 3]}   ', 400),
    (b"POST /render HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"POST /render HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(100)) + b"\r\n", 431),
    (b"GET / HTTP/3.0\r\n\r\n", 505),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\n", 400),
    (b"POST /actors HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 400),   # cut short
    (b"GET /health HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
]


def test_server_hostile_requests(server):
    proc, port, url = server
    for payload, status in HOSTILE:
        code, got = _raw(port, payload)
        assert code == status, (payload[:60], got[:200])
        body = got.split(b"\r\n\r\n", 1)[1]
        assert "error" in json.loads(body)
    # A silent client gets 408 after --client-timeout and does not block others for good.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET /health HTTP/1.1\r\n")
        got = c.recv(4096)
    assert got.startswith(b"HTTP/1.1 408")
    with urllib.request.urlopen(url + "/health", timeout=30) as r:
        assert json.load(r)["status"] == "ok"
    assert proc.poll() is None


def test_server_shutdown(server):
    proc, port, url = server
    with _post(url + "/shutdown", b"") as r:
        assert json.load(r)["status"] == "shutting down"
    assert proc.wait(timeout=30) == 0


def test_server_usage_errors():
    cli = _drivekit_cli()
    r = subprocess.run([cli, "sim", "serve"], capture_output=True, text=True)
    assert r.returncode == 2 and "--ply is required" in r.stderr
    r = subprocess.run([cli, "sim", "serve", "--ply", "x.ply", "--port", "70000"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--port" in r.stderr
    r = subprocess.run([cli, "sim", "serve", "--ply", "/nonexistent/x.ply", "--port", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "/nonexistent/x.ply" in r.stderr
    r = subprocess.run([cli, "sim", "serve", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "POST /render" in r.stdout and "127.0.0.1" in r.stdout


# ---------------------------------------------------------------------------
# The demo's vehicle model and controllers


def _demo():
    spec = importlib.util.spec_from_file_location("sim_loop", ROOT / "scripts" / "sim_loop.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bicycle_loop_stays_on_path():
    m = _demo()
    # An S-bend: straight, left arc of radius 40 m, straight; 9 m/s.
    t = np.arange(0, 12, 0.05)
    s = 9.0 * t
    xy = np.zeros((len(t), 2))
    yaw = np.zeros(len(t))
    for i, si in enumerate(s):
        if si < 30:
            xy[i] = [si, 0]
        elif si < 30 + 40 * np.pi / 2:
            a = (si - 30) / 40
            xy[i] = [30 + 40 * np.sin(a), 40 - 40 * np.cos(a)]
            yaw[i] = a
        else:
            xy[i] = [70, 40 + si - 30 - 40 * np.pi / 2]
            yaw[i] = np.pi / 2
    path = m.Path(t, xy)
    log = m.drive(path, 90, offset=1.0, yaw_error_deg=8.0)
    cte = np.array([e["cross_track_error"] for e in log])
    assert abs(cte[0] - 1.0) < 1e-9
    assert np.abs(cte[30:]).max() < 0.35, np.abs(cte).max()
    speeds = np.array([e["speed"] for e in log])
    assert np.abs(speeds[30:] - 9.0).max() < 1.0
    steer = np.array([e["steer"] for e in log])
    car = m.BicycleModel(0, 0, 0, 0)
    assert np.abs(steer).max() <= car.max_steer + 1e-12
    # The steering rate limit holds between steps.
    assert np.abs(np.diff(steer)).max() <= car.max_steer_rate * m.DT + 1e-9
    # Acceleration limits.
    acc = np.array([e["accel"] for e in log])
    assert acc.max() <= car.max_accel and acc.min() >= -car.max_decel
