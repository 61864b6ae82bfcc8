"""Gaussian-splat scenes (3DGS PLY) and their rendering as camera images.

A :class:`Scene` wraps drivekit's C ``dk_scene``: N 3-D Gaussians with the
*pre-activation* values of the standard 3DGS PLY (graphdeco / 3dgrut) --
means (N, 3) in metres, log standard deviations (N, 3), quaternions
(w, x, y, z) (N, 4) not necessarily unit, opacity logits (N,) and
spherical-harmonic colour coefficients. Colour = max(0, SH(dir) + 0.5).

:meth:`Scene.render` runs the library's CPU tile rasterizer
(``dk_render_camera``) for any drivekit camera model (pinhole by EWA, the
others by the unscented transform), optionally with a rolling shutter, with
the GIL released and results that do not depend on ``threads``.
:meth:`Scene.render_lidar` renders spinning-lidar sweeps (``dk_render_lidar``:
every ray evaluated against the 3-D Gaussians) as range, intensity, ray-drop
and opacity images plus motion-compensated points; the lidar frame is FLU.

Conventions: world frame any right-handed metric frame (drivekit uses FLU);
``cam_to_world`` maps the OpenCV camera frame (x right, y down, z forward) to
the world; pixel ``(i, j)`` is centred at ``(i + 0.5, j + 0.5)``
(see :mod:`drivekit.camera`).

Example::

    from drivekit import sim
    scene = sim.load_ply("point_cloud.ply")
    cam = sim.Camera.pinhole(960, 540, 800, 800, 480, 270)
    out = scene.render(cam, np.eye(4), threads=4)
    out["rgb"]     # (540, 960, 3) float32, zero-copy view of drivekit memory
    sweep = scene.render_lidar(128, np.eye(4), threads=4)
    sweep["range"]  # (128, 3600) float32 metres, 0 = no return; sweep["points"] (N, 6)
"""

import os

import numpy as np

from . import _drivekit
from ._drivekit import InvalidArgumentError
from .camera import Camera

__all__ = ["Scene", "Camera", "Simulator", "load_ply", "from_scenario"]


def _invalid(message):
    err = InvalidArgumentError(message)
    err.status = _drivekit.EINVAL
    return err


def _f32(x, shape, what):
    try:
        a = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise _invalid(f"Scene.from_arrays(): {what} must be an array of numbers: {e}") from None
    if a.shape != shape:
        raise _invalid(f"Scene.from_arrays(): {what} must have shape {shape}, got {a.shape}")
    return np.ascontiguousarray(a)


def _pose(m, what):
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise _invalid(f"Scene.render(): {what} must be a 4x4 array of numbers: {e}") from None
    if a.shape != (4, 4):
        raise _invalid(f"Scene.render(): {what} must have shape (4, 4), got {a.shape}")
    return np.ascontiguousarray(a)


class Scene:
    """A Gaussian-splat scene. Make one with :func:`load_ply`,
    :meth:`from_arrays` or :func:`from_scenario`. ``len(scene)`` is the number
    of Gaussians. The Gaussians never change; the actor tracks placing those
    with an actor id may (:meth:`set_actor_track`, :meth:`load_tracks`), but
    not while another thread renders the scene (that raises
    :class:`drivekit.Error`)."""

    __slots__ = ("_s",)

    def __init__(self, _handle):
        if not isinstance(_handle, _drivekit.Scene):
            raise TypeError("use drivekit.sim.load_ply() or Scene.from_arrays()")
        self._s = _handle

    @classmethod
    def from_arrays(cls, means, scales_log, rotations_wxyz, opacity_logit, sh_dc, sh_rest=None):
        """A scene from numpy arrays (copied, as float32) of the PLY's stored values.

        ``means`` (N, 3); ``scales_log`` (N, 3); ``rotations_wxyz`` (N, 4);
        ``opacity_logit`` (N,); ``sh_dc`` (N, 3) = f_dc_0..2; ``sh_rest`` None
        (degree 0) or (N, 3, K-1) channel-major (``sh_rest[i, c, k-1]`` =
        f_rest_{c*(K-1) + k-1}), K-1 = 3, 8 or 15 for degree 1, 2, 3. A flat
        (N, 3*(K-1)) array in PLY order is accepted too.
        """
        m = np.asarray(means)
        if m.ndim != 2 or m.shape[1] != 3:
            raise _invalid(f"Scene.from_arrays(): means must have shape (N, 3), got {m.shape}")
        n = m.shape[0]
        means = _f32(m, (n, 3), "means")
        scales = _f32(scales_log, (n, 3), "scales_log")
        rots = _f32(rotations_wxyz, (n, 4), "rotations_wxyz")
        opac = _f32(opacity_logit, (n,), "opacity_logit")
        dc = _f32(sh_dc, (n, 3), "sh_dc")
        if sh_rest is None:
            degree, rest = 0, np.zeros((n, 3, 0), np.float32)
        else:
            r = np.asarray(sh_rest, dtype=np.float32)
            if r.ndim == 2 and r.shape[0] == n and r.shape[1] % 3 == 0:
                r = r.reshape(n, 3, r.shape[1] // 3)
            degrees = {0: 0, 3: 1, 8: 2, 15: 3}
            if r.ndim != 3 or r.shape[:2] != (n, 3) or r.shape[2] not in degrees:
                raise _invalid("Scene.from_arrays(): sh_rest must have shape (N, 3, K-1) with "
                               f"K-1 in (0, 3, 8, 15), got {np.shape(sh_rest)}")
            degree, rest = degrees[r.shape[2]], r
        sh = np.ascontiguousarray(np.concatenate([dc[:, :, None], rest], axis=2))
        return cls(_drivekit.scene_from_arrays(n, degree, means, scales, rots, opac, sh))

    def __len__(self):
        return len(self._s)

    @property
    def sh_degree(self):
        """SH degree of the stored colours (0..3)."""
        return self._s.sh_degree

    def __repr__(self):
        return repr(self._s)

    def save_ply(self, path):
        """Writes the scene as a binary little-endian 3DGS PLY; loading it back
        gives bit-identical arrays."""
        self._s.save_ply(os.fspath(path))

    def arrays(self):
        """Copies of the stored values as numpy float32 arrays: ``means``,
        ``scales_log``, ``rotations_wxyz``, ``opacity_logit``, ``sh_dc``
        (N, 3) and ``sh_rest`` (N, 3, K-1), the arguments of :meth:`from_arrays`."""
        d = {k: np.asarray(v) for k, v in self._s.arrays().items()}
        sh = d.pop("sh")
        d["sh_dc"] = sh[:, :, 0]
        d["sh_rest"] = sh[:, :, 1:]
        return d

    @property
    def actor_ids(self):
        """Ids of the actors that have a track, ascending."""
        return self._s.actor_ids()

    def set_actor_track(self, actor_id, times, poses_4x4):
        """Sets (replaces) the track of actor ``actor_id`` (>= 0): ``times``
        (n,) strictly increasing seconds and ``poses_4x4`` (n, 4, 4) rigid
        actor_to_world matrices. The Gaussians with this actor id store
        actor-frame values; renders at time t place them with the pose
        interpolated at t (translation lerp, rotation slerp; held outside)."""
        t = np.ascontiguousarray(np.asarray(times, dtype=np.float64).reshape(-1))
        p = np.ascontiguousarray(np.asarray(poses_4x4, dtype=np.float64))
        if p.shape != (t.shape[0], 4, 4):
            raise _invalid(f"Scene.set_actor_track(): poses_4x4 must have shape "
                           f"({t.shape[0]}, 4, 4) for {t.shape[0]} times, got {p.shape}")
        self._s.set_actor_track(int(actor_id), t.shape[0], t, p)

    def actor_pose(self, actor_id, t):
        """Actor ``actor_id``'s pose at time ``t`` as a (4, 4) float64
        actor_to_world matrix; :class:`drivekit.NotFoundError` if it has no
        track."""
        return np.array(self._s.actor_pose(int(actor_id), float(t)), dtype=np.float64).reshape(4, 4)

    def save_tracks(self, path):
        """Writes the actor tracks as JSON (``drivekit.tracks`` version 1)."""
        self._s.save_tracks(os.fspath(path))

    def load_tracks(self, path):
        """Replaces every actor track with those of a tracks JSON file (e.g. the
        ``scene.tracks.json`` of ``drivekit sim from-world``). Malformed files
        raise :class:`drivekit.DecodeError` naming the file and field; on error
        the tracks are unchanged."""
        self._s.load_tracks(os.fspath(path))

    def render(self, camera, cam_to_world, *, background=(0.0, 0.0, 0.0), threads=1,
               rolling_shutter=False, cam_to_world_end=None, time=0.0):
        """Renders the scene seen by ``camera`` placed at ``cam_to_world``.

        ``camera``: a :class:`drivekit.camera.Camera`. ``cam_to_world``: 4x4
        rigid transform (OpenCV camera frame -> world); a matrix that is not a
        rotation + translation raises :class:`drivekit.DecodeError`, non-finite
        values :class:`drivekit.InvalidArgumentError`. ``background``: rgb
        composited behind. ``threads``: an int or a :class:`drivekit.Pool`.
        ``rolling_shutter``: ``cam_to_world`` is the pose at the start of the
        readout and ``cam_to_world_end`` (required) at its end, in the
        camera's ``shutter`` order. ``time``: seconds on the actor tracks'
        clock at which tracked actors are placed (the start of the readout).

        Returns a dict of numpy float32 arrays viewing drivekit memory (no
        copies): ``rgb`` (H, W, 3), ``alpha`` (H, W) = 1 - transmittance,
        ``depth`` (H, W) = the expected camera z of the visible surface
        (0 where alpha is 0).
        """
        if not isinstance(camera, _drivekit.Camera):
            raise TypeError(f"Scene.render(): camera must be a drivekit.camera.Camera, "
                            f"not {type(camera).__name__}")
        try:
            bg = tuple(float(v) for v in background)
        except (TypeError, ValueError):
            bg = ()
        if len(bg) != 3:
            raise _invalid(f"Scene.render(): background must be 3 numbers, got {background!r}")
        pose = _pose(cam_to_world, "cam_to_world")
        end = None if cam_to_world_end is None else _pose(cam_to_world_end, "cam_to_world_end")
        rgb, alpha, depth = self._s.render(camera, pose, background=bg, threads=threads,
                                           rolling_shutter=bool(rolling_shutter),
                                           cam_to_world_end=end, time=float(time))
        return {"rgb": np.asarray(rgb), "alpha": np.asarray(alpha), "depth": np.asarray(depth)}

    def render_lidar(self, lidar, lidar_to_world, *, time=0.0, lidar_to_world_end=None,
                     threads=1, hit_threshold=0.5, raydrop="threshold", raydrop_threshold=0.5,
                     seed=0, default_intensity=0.5, default_raydrop=0.0):
        """Renders one sweep of a spinning lidar (``dk_render_lidar``): every
        ray is evaluated against the 3-D Gaussians and blended in order of
        the peak distance t*.

        ``lidar``: a preset number (32, 64, 128) or a dict like
        :func:`drivekit.camera.lidar_preset`'s. ``lidar_to_world``: 4x4 rigid
        transform (lidar FLU frame -> world) at the sweep start; with
        ``lidar_to_world_end`` (its pose one revolution, ``1 / spin_hz``,
        later) the lidar moves during the sweep, each column at its own
        interpolated pose. ``time``: sweep start, seconds on the clock of the
        actor tracks (each column sees actors at its firing time).
        ``hit_threshold``: accumulated opacity a ray needs to return.
        ``raydrop``: how ``points`` drops rays -- ``"none"``, ``"threshold"``
        (drop where the ray-drop probability >= ``raydrop_threshold``) or
        ``"sample"`` (Philox draws keyed by ``seed``: reproducible).
        ``default_intensity`` / ``default_raydrop``: per-Gaussian values for
        scenes without lidar fields (intensity is sigmoid(lidar_intensity)
        otherwise). ``threads``: an int or a :class:`drivekit.Pool`; results
        do not depend on it.

        Returns a dict of numpy float32 arrays viewing drivekit memory:
        ``range`` (n_beams, n_columns) metres, 0 = no return (row = beam,
        beam 0 the lowest of the presets; column = firing order);
        ``intensity``, ``raydrop`` (probability), ``alpha`` (accumulated
        opacity), same shape; ``points`` (N, 6) = x, y, z in the lidar frame
        at the sweep start (motion-compensated), intensity, ring (beam),
        time (seconds after the sweep start), ordered by column then beam.
        """
        modes = {"none": 0, "threshold": 1, "sample": 2}
        if raydrop not in modes:
            raise _invalid(f"Scene.render_lidar(): raydrop must be one of {sorted(modes)}, "
                           f"got {raydrop!r}")
        pose = _pose(lidar_to_world, "lidar_to_world")
        end = None if lidar_to_world_end is None else _pose(lidar_to_world_end,
                                                             "lidar_to_world_end")
        try:
            args = dict(time=float(time), hit_threshold=float(hit_threshold),
                        raydrop_threshold=float(raydrop_threshold),
                        default_intensity=float(default_intensity),
                        default_raydrop=float(default_raydrop))
            seed = int(seed)
        except (TypeError, ValueError) as e:
            raise _invalid(f"Scene.render_lidar(): {e}") from None
        if not 0 <= seed < 2 ** 64:
            raise _invalid(f"Scene.render_lidar(): seed must be in [0, 2**64), got {seed}")
        out = self._s.render_lidar(lidar, pose, lidar_to_world_end=end, threads=threads,
                                   raydrop_mode=modes[raydrop], seed=seed, **args)
        names = ("range", "intensity", "raydrop", "alpha", "points")
        return {k: np.asarray(v) for k, v in zip(names, out)}


class Simulator:
    """Closed-loop rendering of a sensor rig on an ego vehicle that you drive.

    ``Simulator(scene, rig="nuscenes", width=1600, height=900, threads=1)``
    wraps drivekit's ``dk_sim``: each :meth:`render` takes the ego's pose
    (``ego_to_world``, 4x4: ego frame FLU, rear axle on the ground -> world)
    and a timestamp (seconds on the clock of the scene's actor tracks),
    places the sensor at ``ego_to_world @ sensor_to_ego`` and renders it --
    cameras with the rig's rolling shutter (``rolling_shutter=False`` renders
    global-shutter images), lidars as one sweep. Actors follow their tracks
    unless :meth:`set_actor_pose` overrides them. The scene is kept alive by
    the simulator and never modified. Calls on one simulator are serialised
    (safe from several threads); they release the GIL.

    ``rig``: only ``"nuscenes"`` (six cameras of ``width`` x ``height`` and
    ``LIDAR_TOP``, see :func:`drivekit.camera.nuscenes_rig`).
    ``threads``: render threads, the caller included.
    ``background``: rgb composited behind camera renders.
    ``tracks``: a tracks JSON file (``scene.tracks.json`` of ``drivekit sim
    from-world``) whose tracks the simulator uses instead of the scene's.
    """

    __slots__ = ("_sim", "_scene", "_sensors", "_index")

    def __init__(self, scene, rig="nuscenes", *, width=1600, height=900, threads=1,
                 rolling_shutter=True, background=(0.0, 0.0, 0.0), tracks=None):
        if not isinstance(scene, Scene):
            raise TypeError(f"Simulator(): scene must be a drivekit.sim.Scene, "
                            f"not {type(scene).__name__}")
        if rig != "nuscenes":
            raise _invalid(f"Simulator(): unknown rig {rig!r} (only 'nuscenes')")
        try:
            bg = tuple(float(v) for v in background)
        except (TypeError, ValueError):
            bg = ()
        if len(bg) != 3:
            raise _invalid(f"Simulator(): background must be 3 numbers, got {background!r}")
        self._scene = scene
        self._sim = _drivekit.sim_create(scene._s, int(width), int(height), int(threads),
                                         bool(rolling_shutter), bg,
                                         None if tracks is None else os.fspath(tracks))
        sensors = []
        for d in self._sim.sensors():
            d["sensor_to_ego"] = np.array(d["sensor_to_ego"], dtype=np.float64).reshape(4, 4)
            if d["camera"] is not None:
                d["camera"] = Camera(**d["camera"])
            if d["lidar"] is not None:
                d["lidar"]["elevation"] = list(d["lidar"]["elevation"])
                d["lidar"]["azimuth_offset"] = list(d["lidar"]["azimuth_offset"])
            sensors.append(d)
        self._sensors = sensors
        self._index = {d["name"]: i for i, d in enumerate(sensors)}

    @property
    def sensors(self):
        """The rig: a list of dicts like :func:`drivekit.camera.nuscenes_rig`'s
        (``name``, ``kind``, ``sensor_to_ego``, ``camera``, ``lidar``, ...)."""
        return list(self._sensors)

    @property
    def scene(self):
        return self._scene

    def _sensor(self, sensor):
        if isinstance(sensor, str):
            i = self._index.get(sensor)
            if i is None:
                self._sim.find_sensor(sensor)   # raises NotFoundError listing the rig
            return i
        if isinstance(sensor, (int, np.integer)) and not isinstance(sensor, bool):
            return int(sensor)
        raise TypeError(f"Simulator: sensor must be a name or an index, not {type(sensor).__name__}")

    def render(self, sensor, ego_to_world, timestamp, *, ego_to_world_end=None, points=False):
        """Renders ``sensor`` (name or index) with the ego at ``ego_to_world``
        at ``timestamp`` (the start of the camera readout or lidar sweep).

        ``ego_to_world_end``: the ego's pose at the end of the readout
        (cameras: ``timestamp + readout_time``) or of the sweep (lidars: one
        revolution later); None: the ego stands still meanwhile.

        Cameras return the dict of :meth:`Scene.render`: ``rgb`` (H, W, 3),
        ``alpha`` (H, W), ``depth`` (H, W) float32. Lidars return ``range``,
        ``intensity``, ``raydrop``, ``alpha`` as (beams, columns) float32
        range images (range 0 = no return) and, with ``points=True``,
        ``points`` (N, 6) = x, y, z (lidar frame at the sweep start),
        intensity, ring, time. Non-rigid poses raise
        :class:`drivekit.DecodeError` / :class:`drivekit.InvalidArgumentError`,
        an unknown sensor :class:`drivekit.NotFoundError`.
        """
        i = self._sensor(sensor)
        pose = _pose(ego_to_world, "ego_to_world")
        end = None if ego_to_world_end is None else _pose(ego_to_world_end, "ego_to_world_end")
        try:
            t = float(timestamp)
        except (TypeError, ValueError):
            raise _invalid(f"Simulator.render(): timestamp must be a number, "
                           f"got {timestamp!r}") from None
        if 0 <= i < len(self._sensors) and self._sensors[i]["kind"] == "lidar":
            out = self._sim.render_lidar(i, pose, t, end, bool(points))
            return {k: np.asarray(v) for k, v in out.items()}
        if points:
            raise _invalid("Simulator.render(): points=True applies to lidars only")
        rgb, alpha, depth = self._sim.render_camera(i, pose, t, end)
        return {"rgb": np.asarray(rgb), "alpha": np.asarray(alpha), "depth": np.asarray(depth)}

    def set_actor_pose(self, actor_id, timestamp, actor_to_world):
        """Closed-loop override: from ``timestamp`` on, tracked actor
        ``actor_id`` stands at ``actor_to_world`` (4x4) until a later
        override; earlier times keep the track as it was
        (``dk_sim_set_actor_pose``). An actor without a track raises
        :class:`drivekit.NotFoundError`."""
        self._sim.set_actor_pose(int(actor_id), float(timestamp),
                                 _pose(actor_to_world, "actor_to_world"))

    def clear_actor_pose(self, actor_id=None):
        """Restores actor ``actor_id``'s recorded track (None: every actor's)."""
        self._sim.clear_actor_pose(-1 if actor_id is None else int(actor_id))

    def actor_pose(self, actor_id, t):
        """Actor ``actor_id``'s pose at time ``t`` as rendered (4x4 float64)."""
        return np.array(self._sim.actor_pose(int(actor_id), float(t)), dtype=np.float64).reshape(4, 4)


def load_ply(path, *, allow_invalid=False):
    """Loads a 3DGS PLY (binary little-endian; SH degree 0..3; optional normals,
    lidar fields and actor ids). Malformed files raise :class:`drivekit.DecodeError`
    naming the file, property, vertex and byte offset; a missing file
    :class:`drivekit.NotFoundError`. ``allow_invalid`` accepts non-finite values
    and zero quaternions (the renderer culls those Gaussians)."""
    return Scene(_drivekit.scene_load_ply(os.fspath(path), allow_invalid=allow_invalid))


# What from_scenario includes (sim.h DK_FROM_WORLD_*).
_FROM_WORLD_PARTS = {"ground": 0x01, "surfaces": 0x02, "paint": 0x04, "objects": 0x08,
                     "parked": 0x10, "moving": 0x20, "ego_track": 0x40}


def from_scenario(scenario=None, *, seed=1, duration=20.0, density=4.0, object_density=16.0,
                  margin=40.0, sh_degree=0, include=None, jitter_seed=0):
    """A Gaussian scene of a driving scenario (``dk_scene_from_scenario``).

    ``scenario``: a scenario JSON file (``drivekit world generate`` writes
    them); ``None`` generates the procedural town drive with ``seed`` and
    ``duration`` (seconds). Around the ego's path (``margin`` metres): grass,
    road and sidewalks as flat Gaussians (``density`` per m^2), lane paint,
    crosswalks, poles, lights and signs, and the actors as Gaussians on their
    box surfaces (``object_density`` per m^2) in the world renderer's colours,
    with lidar features. Each actor's Gaussians carry its scenario id; moving
    actors follow their tracks (:meth:`Scene.actor_pose`), and the ego's track
    is actor 0 (the ego frame), so a rig camera sits at
    ``scene.actor_pose(0, t) @ sensor_to_ego``. ``include``: None (all) or an
    iterable of ``"ground"``, ``"surfaces"``, ``"paint"``, ``"objects"``,
    ``"parked"``, ``"moving"``, ``"ego_track"``. ``jitter_seed`` seeds
    positions and colour jitter; the result is deterministic.
    """
    bits = 0x7F
    if include is not None:
        if isinstance(include, str):
            include = (include,)
        bits = 0
        for name in include:
            if name not in _FROM_WORLD_PARTS:
                raise _invalid(f"from_scenario(): unknown include {name!r} "
                               f"(one of {', '.join(_FROM_WORLD_PARTS)})")
            bits |= _FROM_WORLD_PARTS[name]
    path = None if scenario is None else os.fspath(scenario)
    return Scene(_drivekit.scene_from_scenario(
        path, seed=int(seed), duration=float(duration), density=float(density),
        object_density=float(object_density), margin=float(margin), sh_degree=int(sh_degree),
        include=bits, jitter_seed=int(jitter_seed)))
