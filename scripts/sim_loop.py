#!/usr/bin/python3
"""Closed-loop driving demo: a kinematic bicycle model follows the sample
drive's ego path while every camera and the lidar of the nuScenes rig are
rendered from the Gaussian scene of that drive.

    PYTHONPATH=build/python /usr/bin/python3 scripts/sim_loop.py [--steps 40] [--server]

1. ``drivekit sim from-world`` makes the scene of the generated town drive
   (OUT/scene.ply and OUT/scene.tracks.json; the ego's recorded trajectory is
   the track of actor 0, the other actors follow theirs).
2. The ego starts off the path (--offset metres to the left, --yaw-error
   degrees) and is driven at 10 Hz by a kinematic bicycle model (wheelbase,
   steering angle / rate and acceleration limits) under pure pursuit on the
   recorded path plus a PI controller on the recorded speed.
3. Each step renders the six cameras (global shutter, or with
   --rolling-shutter the rig's 30 ms readout with the ego moving during it)
   and one lidar sweep (the ego moving during the sweep), through ``drivekit.sim.Simulator`` or,
   with --server, through ``drivekit sim serve`` over HTTP.
4. OUT/ gets a contact sheet PNG every --sheet-every steps (cameras in rig
   layout plus the lidar range image) and log.json (poses, controls,
   cross-track error, render times); a summary is printed.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np

DT = 0.1  # control and render period, seconds (10 Hz)


# ---------------------------------------------------------------------------
# Vehicle model and controllers


class BicycleModel:
    """Kinematic bicycle on the rear axle (the ego frame's origin):
    x' = v cos(yaw), y' = v sin(yaw), yaw' = v tan(steer) / L, v' = a, with
    the steering angle and its rate, the acceleration and the speed limited."""

    def __init__(self, x, y, yaw, v, *, wheelbase=2.588, max_steer=math.radians(35),
                 max_steer_rate=math.radians(60), max_accel=3.0, max_decel=6.0, max_speed=20.0):
        self.x, self.y, self.yaw, self.v = float(x), float(y), float(yaw), float(v)
        self.steer = 0.0
        self.wheelbase = wheelbase
        self.max_steer, self.max_steer_rate = max_steer, max_steer_rate
        self.max_accel, self.max_decel, self.max_speed = max_accel, max_decel, max_speed

    def step(self, steer_cmd, accel_cmd, dt, substeps=10):
        """Applies the (limited) commands for dt seconds; returns the applied
        (steer, accel)."""
        accel = min(max(accel_cmd, -self.max_decel), self.max_accel)
        target = min(max(steer_cmd, -self.max_steer), self.max_steer)
        h = dt / substeps
        for _ in range(substeps):
            d = target - self.steer
            lim = self.max_steer_rate * h
            self.steer += min(max(d, -lim), lim)
            self.x += self.v * math.cos(self.yaw) * h
            self.y += self.v * math.sin(self.yaw) * h
            self.yaw += self.v * math.tan(self.steer) / self.wheelbase * h
            self.v = min(max(self.v + accel * h, 0.0), self.max_speed)
        self.yaw = math.atan2(math.sin(self.yaw), math.cos(self.yaw))
        return self.steer, accel

    def predict(self, dt):
        """(x, y, yaw) after dt seconds at the current speed and steering."""
        yaw_rate = self.v * math.tan(self.steer) / self.wheelbase
        n = 4
        x, y, yaw = self.x, self.y, self.yaw
        for _ in range(n):
            x += self.v * math.cos(yaw) * dt / n
            y += self.v * math.sin(yaw) * dt / n
            yaw += yaw_rate * dt / n
        return x, y, yaw


class Path:
    """A recorded trajectory: times (K,), xy (K, 2); arc length and speed."""

    def __init__(self, times, xy):
        self.t = np.asarray(times, dtype=np.float64)
        self.xy = np.asarray(xy, dtype=np.float64)
        seg = np.diff(self.xy, axis=0)
        self.seg_len = np.hypot(seg[:, 0], seg[:, 1])
        self.s = np.concatenate([[0.0], np.cumsum(self.seg_len)])
        dt = np.maximum(np.diff(self.t), 1e-9)
        self.seg_speed = self.seg_len / dt

    @classmethod
    def from_tracks(cls, tracks, actor_id=0):
        for a in tracks["actors"]:
            if a["id"] == actor_id:
                poses = np.asarray(a["poses"], dtype=np.float64)
                return cls(a["times"], poses[:, 4:6])
        raise KeyError(f"no track for actor {actor_id}")

    def yaw_at(self, i):
        j = min(max(i, 0), len(self.seg_len) - 1)
        d = self.xy[j + 1] - self.xy[j]
        return math.atan2(d[1], d[0])

    def project(self, x, y):
        """(segment index, arc length, signed cross-track error: + = left of
        the path) of the point's closest point on the polyline."""
        p = np.array([x, y])
        a, b = self.xy[:-1], self.xy[1:]
        d = b - a
        L2 = np.maximum((d ** 2).sum(1), 1e-12)
        u = np.clip(((p - a) * d).sum(1) / L2, 0.0, 1.0)
        q = a + u[:, None] * d
        dist = np.hypot(*(p - q).T)
        i = int(np.argmin(dist))
        cross = d[i, 0] * (y - a[i, 1]) - d[i, 1] * (x - a[i, 0])
        return i, self.s[i] + u[i] * self.seg_len[i], math.copysign(dist[i], cross)

    def point_at(self, s):
        s = min(max(s, 0.0), self.s[-1])
        i = int(np.clip(np.searchsorted(self.s, s) - 1, 0, len(self.seg_len) - 1))
        u = (s - self.s[i]) / max(self.seg_len[i], 1e-12)
        return self.xy[i] + u * (self.xy[i + 1] - self.xy[i])

    def speed_at(self, i):
        return float(self.seg_speed[min(max(i, 0), len(self.seg_speed) - 1)])


class PurePursuit:
    """Steering towards the path point one look-ahead distance ahead."""

    def __init__(self, wheelbase, k=0.6, min_lookahead=4.0):
        self.wheelbase, self.k, self.min_lookahead = wheelbase, k, min_lookahead

    def steer(self, car, path, s_now):
        ld = max(self.min_lookahead, self.k * car.v)
        tx, ty = path.point_at(s_now + ld)
        alpha = math.atan2(ty - car.y, tx - car.x) - car.yaw
        return math.atan2(2.0 * self.wheelbase * math.sin(alpha), ld)


class PISpeed:
    def __init__(self, kp=0.8, ki=0.2, i_limit=5.0):
        self.kp, self.ki, self.i_limit, self.integral = kp, ki, i_limit, 0.0

    def accel(self, v, v_ref, dt):
        e = v_ref - v
        self.integral = min(max(self.integral + e * dt, -self.i_limit), self.i_limit)
        return self.kp * e + self.ki * self.integral


def ego_matrix(x, y, yaw):
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0, x], [s, c, 0, y], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)


def drive(path, steps, *, offset=0.8, yaw_error_deg=5.0, on_step=None):
    """Runs the closed loop for `steps` steps of DT from the path's start,
    displaced `offset` metres to the left and turned by yaw_error_deg.
    on_step(k, t, car) is called before each control update (render there).
    Returns the log: one dict per step."""
    yaw0 = path.yaw_at(0)
    x0, y0 = path.xy[0]
    car = BicycleModel(x0 - math.sin(yaw0) * offset, y0 + math.cos(yaw0) * offset,
                       yaw0 + math.radians(yaw_error_deg), path.speed_at(0))
    pp, pi = PurePursuit(car.wheelbase), PISpeed()
    log = []
    for k in range(steps):
        t = path.t[0] + k * DT
        i, s_now, cte = path.project(car.x, car.y)
        entry = {"step": k, "t": round(t, 6), "x": car.x, "y": car.y, "yaw": car.yaw,
                 "speed": car.v, "cross_track_error": cte, "path_s": s_now}
        if on_step is not None:
            entry.update(on_step(k, t, car) or {})
        v_ref = path.speed_at(i)
        steer, accel = car.step(pp.steer(car, path, s_now), pi.accel(car.v, v_ref, DT), DT)
        entry.update({"steer": steer, "accel": accel, "target_speed": v_ref})
        log.append(entry)
    return log


# ---------------------------------------------------------------------------
# Rendering backends


class LocalRenderer:
    def __init__(self, ply, tracks, width, height, threads, rolling_shutter):
        from drivekit import sim
        self.sim = sim.Simulator(sim.load_ply(ply), width=width, height=height, threads=threads,
                                 background=(0.55, 0.7, 0.9), tracks=tracks,
                                 rolling_shutter=rolling_shutter)
        self.sensors = self.sim.sensors

    def camera(self, name, ego, t, ego_end):
        return self.sim.render(name, ego, t, ego_to_world_end=ego_end)["rgb"]

    def lidar(self, name, ego, t, ego_end):
        return self.sim.render(name, ego, t, ego_to_world_end=ego_end)["range"]

    def close(self):
        pass


class ServerRenderer:
    """The same through `drivekit sim serve` (raw float32 answers)."""

    def __init__(self, drivekit, ply, tracks, width, height, threads, rolling_shutter):
        cmd = [drivekit, "sim", "serve", "--ply", ply, "--tracks", tracks, "--port", "0",
               "--width", str(width), "--height", str(height), "--threads", str(threads)]
        if not rolling_shutter:
            cmd.append("--global-shutter")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "127.0.0.1:" not in line:
            self.proc.kill()
            raise RuntimeError(f"drivekit sim serve did not start: {line!r}")
        port = int(line.split("127.0.0.1:")[1].split()[0])
        self.url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(self.url + "/sensors", timeout=30) as r:
            sensors = json.load(r)["sensors"]
        self.sensors = [{"name": s["name"], "kind": s["kind"]} for s in sensors]

    def _render(self, name, ego, t, ego_end):
        body = {"sensor": name, "ego_to_world": ego.tolist(), "timestamp": t, "format": "raw",
                "ego_to_world_end": ego_end.tolist()}
        req = urllib.request.Request(self.url + "/render", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            shape = tuple(int(v) for v in r.headers["X-Shape"].split(","))
            return np.frombuffer(r.read(), dtype="<f4").reshape(shape)

    def camera(self, name, ego, t, ego_end):
        return self._render(name, ego, t, ego_end)[:, :, :3]

    def lidar(self, name, ego, t, ego_end):
        return self._render(name, ego, t, ego_end)[:, :, 0]

    def close(self):
        try:
            req = urllib.request.Request(self.url + "/shutdown", data=b"{}")
            urllib.request.urlopen(req, timeout=10).read()
        finally:
            self.proc.wait(timeout=30)


# ---------------------------------------------------------------------------
# Output


SHEET_LAYOUT = [["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"],
                ["CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]]


def to_u8(rgb):
    return (np.clip(np.nan_to_num(rgb), 0, 1) * 255 + 0.5).astype(np.uint8)


def range_strip(rng, width, max_range):
    """The range image as colours (near = bright), flipped so the top beam is
    on top, resized to `width` columns by nearest neighbour."""
    img = np.flipud(rng)
    cols = (np.arange(width) * img.shape[1] // width).clip(0, img.shape[1] - 1)
    img = img[:, cols]
    rows = np.repeat(np.arange(img.shape[0]), 3)
    img = img[rows]
    v = np.where(img > 0, 1.0 - np.clip(img / max_range, 0, 1), 0.0)
    return to_u8(np.stack([v, v ** 0.5, 1 - v], axis=-1) * (img > 0)[..., None])


def contact_sheet(images, rng, max_range):
    rows = [np.concatenate([images[n] for n in row], axis=1) for row in SHEET_LAYOUT]
    grid = np.concatenate(rows, axis=0)
    grid = to_u8(grid) if grid.dtype != np.uint8 else grid
    return np.concatenate([grid, range_strip(rng, grid.shape[1], max_range)], axis=0)


def find_drivekit(build):
    for cand in (os.path.join(build, "bin", "drivekit"), shutil.which("drivekit")):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise SystemExit(f"drivekit command not found in {build}/bin (build it first)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build", help="build folder with bin/drivekit")
    ap.add_argument("--out", default="out/sim_loop")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1, help="seed of the generated drive")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=180)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--density", type=float, default=4.0, help="ground Gaussians per m^2")
    ap.add_argument("--offset", type=float, default=0.8, help="initial lateral offset, m")
    ap.add_argument("--yaw-error", type=float, default=5.0, help="initial heading error, deg")
    ap.add_argument("--sheet-every", type=int, default=5)
    ap.add_argument("--server", action="store_true", help="render through drivekit sim serve")
    ap.add_argument("--rolling-shutter", action="store_true",
                    help="cameras read out over 30 ms (unscented transform; slower)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        raise SystemExit("--steps must be >= 1")

    os.makedirs(args.out, exist_ok=True)
    drivekit = find_drivekit(args.build)
    ply = os.path.join(args.out, "scene.ply")
    tracks_path = os.path.join(args.out, "scene.tracks.json")
    duration = args.steps * DT + 2.0
    t0 = time.perf_counter()
    subprocess.run([drivekit, "sim", "from-world", "--seed", str(args.seed), "--duration",
                    f"{duration:g}", "--density", str(args.density), "--out", ply,
                    "--tracks", tracks_path], check=True, stdout=subprocess.DEVNULL)
    build_s = time.perf_counter() - t0
    with open(tracks_path) as f:
        tracks = json.load(f)
    path = Path.from_tracks(tracks, 0)

    if args.server:
        r = ServerRenderer(drivekit, ply, tracks_path, args.width, args.height, args.threads,
                           args.rolling_shutter)
    else:
        r = LocalRenderer(ply, tracks_path, args.width, args.height, args.threads,
                          args.rolling_shutter)
    cams = [s["name"] for s in r.sensors if s["kind"] == "camera"]
    lidars = [s["name"] for s in r.sensors if s["kind"] == "lidar"]
    from drivekit import image as dkimage
    sheets = []

    def on_step(k, t, car):
        ego = ego_matrix(car.x, car.y, car.yaw)
        times, images = {}, {}
        for name in cams:   # readout 30 ms: the ego moves meanwhile
            ego_end = ego_matrix(*car.predict(0.03))
            t1 = time.perf_counter()
            images[name] = r.camera(name, ego, t, ego_end)
            times[name] = (time.perf_counter() - t1) * 1e3
        rng = None
        for name in lidars:   # one 20 Hz revolution
            ego_end = ego_matrix(*car.predict(0.05))
            t1 = time.perf_counter()
            rng = r.lidar(name, ego, t, ego_end)
            times[name] = (time.perf_counter() - t1) * 1e3
        if k % args.sheet_every == 0 and rng is not None:
            p = os.path.join(args.out, f"sheet_{k:04d}.png")
            dkimage.write(p, contact_sheet(images, rng, 60.0))
            sheets.append(p)
        hits = float((rng > 0).mean()) if rng is not None else 0.0
        return {"render_ms": times, "render_ms_total": sum(times.values()),
                "lidar_hit_fraction": hits}

    try:
        t1 = time.perf_counter()
        log = drive(path, args.steps, offset=args.offset, yaw_error_deg=args.yaw_error,
                    on_step=on_step)
        loop_s = time.perf_counter() - t1
    finally:
        r.close()

    cte = np.array([e["cross_track_error"] for e in log])
    total_ms = np.array([e["render_ms_total"] for e in log])
    per_sensor = {n: float(np.mean([e["render_ms"][n] for e in log])) for n in cams + lidars}
    summary = {
        "steps": args.steps, "hz": 1 / DT, "backend": "server" if args.server else "python",
        "image": [args.width, args.height], "threads": args.threads,
        "scene_seconds": build_s, "loop_seconds": loop_s,
        "cross_track_error_initial": float(cte[0]),
        "cross_track_error_final": float(cte[-1]),
        "cross_track_error_max_after_2s": float(np.abs(cte[20:]).max()) if len(cte) > 20 else None,
        "cross_track_error_rms": float(np.sqrt((cte ** 2).mean())),
        "mean_speed": float(np.mean([e["speed"] for e in log])),
        "render_ms_per_step_mean": float(total_ms.mean()),
        "render_ms_per_sensor_mean": per_sensor, "sheets": sheets,
    }
    with open(os.path.join(args.out, "log.json"), "w") as f:
        json.dump({"summary": summary, "steps": log}, f, indent=1)
    print(f"sim_loop: {args.steps} steps at 10 Hz ({summary['backend']}), "
          f"{args.width}x{args.height} x {len(cams)} cameras + {len(lidars)} lidar, "
          f"{args.threads} thread(s)")
    print(f"  scene {build_s:.2f} s; loop {loop_s:.2f} s; render {total_ms.mean():.0f} ms/step "
          f"(" + ", ".join(f"{n} {v:.0f}" for n, v in per_sensor.items()) + " ms)")
    print(f"  cross-track error: {cte[0]:+.2f} m at start, {cte[-1]:+.3f} m at the end, "
          f"rms {summary['cross_track_error_rms']:.3f} m; mean speed {summary['mean_speed']:.1f} m/s")
    print(f"  wrote {len(sheets)} contact sheets and log.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
