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
"""

import os

import numpy as np

from . import _drivekit
from ._drivekit import InvalidArgumentError
from .camera import Camera

__all__ = ["Scene", "Camera", "load_ply"]


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
    """An immutable Gaussian-splat scene. Make one with :func:`load_ply` or
    :meth:`from_arrays`. ``len(scene)`` is the number of Gaussians."""

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

    def render(self, camera, cam_to_world, *, background=(0.0, 0.0, 0.0), threads=1,
               rolling_shutter=False, cam_to_world_end=None):
        """Renders the scene seen by ``camera`` placed at ``cam_to_world``.

        ``camera``: a :class:`drivekit.camera.Camera`. ``cam_to_world``: 4x4
        rigid transform (OpenCV camera frame -> world); a matrix that is not a
        rotation + translation raises :class:`drivekit.DecodeError`, non-finite
        values :class:`drivekit.InvalidArgumentError`. ``background``: rgb
        composited behind. ``threads``: an int or a :class:`drivekit.Pool`.
        ``rolling_shutter``: ``cam_to_world`` is the pose at the start of the
        readout and ``cam_to_world_end`` (required) at its end, in the
        camera's ``shutter`` order.

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
                                           cam_to_world_end=end)
        return {"rgb": np.asarray(rgb), "alpha": np.asarray(alpha), "depth": np.asarray(depth)}


def load_ply(path, *, allow_invalid=False):
    """Loads a 3DGS PLY (binary little-endian; SH degree 0..3; optional normals,
    lidar fields and actor ids). Malformed files raise :class:`drivekit.DecodeError`
    naming the file, property, vertex and byte offset; a missing file
    :class:`drivekit.NotFoundError`. ``allow_invalid`` accepts non-finite values
    and zero quaternions (the renderer culls those Gaussians)."""
    return Scene(_drivekit.scene_load_ply(os.fspath(path), allow_invalid=allow_invalid))
