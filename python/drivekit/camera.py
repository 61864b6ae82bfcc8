"""Camera models, lidar scan patterns and the nuScenes-like sensor rig.

:class:`Camera` wraps drivekit's C camera (``dk_camera``): pinhole, OpenCV
(rational radial + tangential + thin prism, ``cv2.projectPoints``' full
model), OpenCV fisheye (Kannala-Brandt, ``cv2.fisheye``) and NVIDIA f-theta.
Its methods take anything numpy can turn into an array of shape ``(..., 3)``
(points) or ``(..., 2)`` (pixels) and return numpy arrays; the C loops run with
the GIL released, optionally on a thread pool (``threads=``), with results
that do not depend on the number of threads.

Conventions (the same in the whole of drivekit):

* Camera frame: OpenCV axes, x right, y down, z forward; metres.
* Pixel coordinates are continuous: pixel ``(i, j)`` (column i, row j) covers
  ``[i, i+1) x [j, j+1)``, so its centre is ``(i + 0.5, j + 0.5)``. OpenCV and
  nuScenes put pixel centres on integers, so **cx_drivekit = cx_opencv + 0.5**
  (likewise cy, and every projected u, v). :meth:`Camera.from_opencv_matrix`
  and :meth:`Camera.intrinsic_matrix` convert.
* Ego / lidar frames: x forward, y left, z up (FLU), as in nuScenes.
"""

import numpy as np

from . import _drivekit
from ._drivekit import InvalidArgumentError

__all__ = ["Camera", "MODELS", "SHUTTERS", "lidar_preset", "lidar_rays", "nuscenes_rig"]

MODELS = ("pinhole", "opencv", "fisheye", "ftheta")
SHUTTERS = ("global", "top_to_bottom", "bottom_to_top", "left_to_right", "right_to_left")


def _invalid(message):
    err = InvalidArgumentError(message)
    err.status = _drivekit.EINVAL
    return err


def _rows(x, cols, what, fn):
    """``x`` as a C-contiguous float64 (N, cols) array and its leading shape."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise _invalid(f"{fn}: {what} must be an array of numbers of shape (..., {cols}): {e}") \
            from None
    if a.ndim == 0 or a.shape[-1] != cols:
        raise _invalid(f"{fn}: {what} must have shape (N, {cols}) (or (..., {cols})), "
                       f"got {a.shape}")
    lead = a.shape[:-1]
    return np.ascontiguousarray(a.reshape(-1, cols)), lead


def _rebuild(cls, params):
    return cls(**params)


class Camera(_drivekit.Camera):
    """A validated, immutable camera model.

    Build one with the named constructors -- :meth:`pinhole`, :meth:`opencv`,
    :meth:`fisheye`, :meth:`ftheta`, :meth:`from_opencv_matrix` -- or
    ``Camera(model, **params)`` with the keywords of :meth:`to_dict`
    (``Camera(**cam.to_dict()) == cam``). Every constructor runs the library's
    ``dk_camera_validate``, which also derives ``max_angle`` (fisheye, f-theta,
    when given as 0) and fits the non-reference f-theta polynomial, and raises
    :class:`drivekit.InvalidArgumentError` naming the model and the field
    (``"dk_camera_validate(): opencv: k[1] is NaN"``).

    **Pixel convention**: continuous coordinates with pixel centres at
    ``(i + 0.5, j + 0.5)``; ``cx``, ``cy`` are in these coordinates for every
    model. A camera calibrated with OpenCV (integer pixel centres) has
    ``cx = K[0, 2] + 0.5`` and ``cy = K[1, 2] + 0.5`` here, and a drivekit
    ``u`` is OpenCV's ``u + 0.5``. NVIDIA f-theta calibrations also put the
    origin at the first pixel's centre: add 0.5 to their principal point.

    Attributes (read-only): ``model``, ``width``, ``height``, ``fx``, ``fy``,
    ``cx``, ``cy``, ``k``, ``p``, ``s``, ``reference``, ``fw_poly``,
    ``bw_poly``, ``linear_cde``, ``max_angle``, ``shutter``, ``margin``;
    parameters the model does not have are ``None`` (``k`` of a pinhole
    camera, ``fx`` of an f-theta camera).

    Common keywords of the constructors:

    :param shutter: rolling-shutter readout, one of :data:`SHUTTERS`; see
        :meth:`shutter_time`.
    :param margin: points up to ``margin * (width, height)`` outside the image
        still count as valid (>= 0).
    """

    __slots__ = ()

    # ------------------------------------------------------------------
    # constructors

    @classmethod
    def pinhole(cls, width, height, fx, fy, cx, cy, *, shutter="global", margin=0.0):
        """``u = fx x/z + cx``, ``v = fy y/z + cy``; valid for z > 0 inside the image."""
        return cls("pinhole", width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy,
                   shutter=shutter, margin=margin)

    @classmethod
    def opencv(cls, width, height, fx, fy, cx, cy, k=(), p=(), s=(), *, shutter="global",
               margin=0.0):
        """OpenCV's full model: rational radial ``k`` (k1..k6, up to 6 values,
        zero-padded), tangential ``p`` (p1, p2), thin prism ``s`` (s1..s4).

        Points whose radial factor ``(1 + k1 r² + k2 r⁴ + k3 r⁶) / (1 + k4 r² +
        k5 r⁴ + k6 r⁶)`` is <= 0.8 are invalid (outside the calibrated range).
        """
        return cls("opencv", width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy, k=k, p=p,
                   s=s, shutter=shutter, margin=margin)

    @classmethod
    def fisheye(cls, width, height, fx, fy, cx, cy, k=(), max_angle=0.0, *, shutter="global",
                margin=0.0):
        """OpenCV fisheye (Kannala-Brandt): ``r(θ) = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸)``.

        :param k: k1..k4 (up to 4 values, zero-padded).
        :param max_angle: largest valid angle from the optical axis (rad);
            0 derives it (where r(θ) stops increasing, bounded by the image
            corners and π).
        """
        return cls("fisheye", width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy, k=k,
                   max_angle=max_angle, shutter=shutter, margin=margin)

    @classmethod
    def ftheta(cls, width, height, cx, cy, poly, reference="angle_to_pixeldist",
               linear_cde=(1.0, 0.0, 0.0), max_angle=0.0, *, shutter="global", margin=0.0):
        """NVIDIA f-theta.

        :param cx, cy: principal point in drivekit coordinates (calibration
            value + 0.5).
        :param poly: the calibrated polynomial c0..c5 (up to 6 values,
            zero-padded; c0 must be 0): angle (rad) -> pixel distance when
            ``reference="angle_to_pixeldist"``, pixel distance -> angle when
            ``reference="pixeldist_to_angle"``. The other direction is fitted
            and refined by Newton inversion of the reference.
        :param linear_cde: ``(c, d, e)`` of ``A = [[c, d], [e, 1]]``.
        :param max_angle: as for :meth:`fisheye`.
        """
        key = "bw_poly" if reference == "pixeldist_to_angle" else "fw_poly"
        return cls("ftheta", width=width, height=height, cx=cx, cy=cy, reference=reference,
                   linear_cde=linear_cde, max_angle=max_angle, shutter=shutter, margin=margin,
                   **{key: poly})

    @classmethod
    def from_opencv_matrix(cls, width, height, K, dist=None, *, fisheye=False, shutter="global",
                           margin=0.0):
        """A camera from OpenCV's intrinsic matrix and distortion vector.

        :param K: 3x3 camera matrix in OpenCV's convention (integer pixel
            centres); the principal point is shifted by +0.5. Skew must be 0.
        :param dist: ``None`` (pinhole) or cv2's ``distCoeffs`` of length 4, 5,
            8, 12 (or 14 with zero tilt): ``k1, k2, p1, p2[, k3[, k4, k5, k6[,
            s1, s2, s3, s4]]]``. With ``fisheye=True``, ``cv2.fisheye``'s ``D``
            = ``(k1, k2, k3, k4)``.
        """
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise _invalid(f"from_opencv_matrix: K must be 3x3, got shape {K.shape}")
        if K[0, 1] != 0 or K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
            raise _invalid("from_opencv_matrix: K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] "
                           f"(skew is not supported), got {K.tolist()}")
        fx, fy = K[0, 0], K[1, 1]
        cx, cy = K[0, 2] + 0.5, K[1, 2] + 0.5
        d = None if dist is None else np.asarray(dist, dtype=np.float64).ravel()
        if fisheye:
            if d is not None and d.size != 4:
                raise _invalid(f"from_opencv_matrix: fisheye D must have 4 values, got {d.size}")
            return cls.fisheye(width, height, fx, fy, cx, cy, () if d is None else d,
                               shutter=shutter, margin=margin)
        if d is None:
            return cls.pinhole(width, height, fx, fy, cx, cy, shutter=shutter, margin=margin)
        if d.size not in (4, 5, 8, 12, 14):
            raise _invalid("from_opencv_matrix: dist must have 4, 5, 8, 12 or 14 values, got "
                           f"{d.size}")
        if d.size == 14 and (d[12] != 0 or d[13] != 0):
            raise _invalid("from_opencv_matrix: the tilted-sensor terms (tauX, tauY) are not "
                           "supported")
        d = np.concatenate([d, np.zeros(12)])[:12]
        k = (d[0], d[1], d[4], d[5], d[6], d[7])
        return cls.opencv(width, height, fx, fy, cx, cy, k=k, p=(d[2], d[3]), s=d[8:12],
                          shutter=shutter, margin=margin)

    @classmethod
    def from_dict(cls, params):
        """``cls(**params)``: the inverse of :meth:`to_dict`."""
        return cls(**params)

    # ------------------------------------------------------------------
    # OpenCV interoperability

    def intrinsic_matrix(self, opencv=True):
        """The 3x3 matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (float64).

        :param opencv: give the principal point in OpenCV's convention
            (``cx - 0.5``, ``cy - 0.5``), as ``cv2.projectPoints`` expects;
            False keeps drivekit's.
        :raises InvalidArgumentError: an f-theta camera (no focal length).
        """
        if self.model == "ftheta":
            raise _invalid("intrinsic_matrix: an ftheta camera has no intrinsic matrix")
        off = 0.5 if opencv else 0.0
        return np.array([[self.fx, 0.0, self.cx - off], [0.0, self.fy, self.cy - off],
                         [0.0, 0.0, 1.0]])

    def dist_coeffs(self):
        """The distortion vector as OpenCV takes it (float64): 12 values
        ``(k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4)`` for ``opencv``,
        ``D = (k1, k2, k3, k4)`` for ``fisheye`` (``cv2.fisheye``), 5 zeros
        for ``pinhole``.

        :raises InvalidArgumentError: an f-theta camera.
        """
        if self.model == "opencv":
            k, p, s = self.k, self.p, self.s
            return np.array([k[0], k[1], p[0], p[1], k[2], k[3], k[4], k[5], *s])
        if self.model == "fisheye":
            return np.array(self.k)
        if self.model == "pinhole":
            return np.zeros(5)
        raise _invalid("dist_coeffs: an ftheta camera has no OpenCV distortion vector")

    # ------------------------------------------------------------------
    # projection

    def project(self, points, threads=1):
        """Project camera-frame points to pixels.

        :param points: array-like ``(N, 3)`` (or ``(..., 3)``), metres.
        :param threads: an int or a :class:`drivekit.Pool`.
        :returns: ``(uv, valid)``: ``uv`` float64 ``(N, 2)`` in drivekit pixel
            coordinates, NaN where the model is undefined at the point;
            ``valid`` bool ``(N,)``: in front / within ``max_angle`` and inside
            the image expanded by the margin. ``uv`` is meaningful wherever it
            is finite, valid or not.
        """
        pts, lead = _rows(points, 3, "points", "project")
        uv, _, valid = self._project(pts, False, threads)
        return np.asarray(uv).reshape(lead + (2,)), np.asarray(valid).reshape(lead)

    def project_with_jacobian(self, points, threads=1):
        """:meth:`project` plus the Jacobian.

        :returns: ``(uv, J, valid)`` with ``J`` float64 ``(N, 2, 3)`` =
            d(u, v)/d(x, y, z) (NaN where the model is undefined).
        """
        pts, lead = _rows(points, 3, "points", "project_with_jacobian")
        uv, jac, valid = self._project(pts, True, threads)
        return (np.asarray(uv).reshape(lead + (2,)), np.asarray(jac).reshape(lead + (2, 3)),
                np.asarray(valid).reshape(lead))

    def unproject(self, uv, threads=1):
        """Unit rays (camera frame) of pixel positions.

        :param uv: array-like ``(N, 2)`` (or ``(..., 2)``) drivekit pixel
            coordinates; the image bounds are not checked.
        :returns: ``(rays, valid)``: ``rays`` float64 ``(N, 3)``, unit norm, NaN
            where ``valid`` is False (outside the model's domain: beyond
            ``max_angle``, OpenCV radial factor <= 0.8, no convergence).
            A valid ray projects back to ``uv`` (to ~1e-9 px).
        """
        pix, lead = _rows(uv, 2, "uv", "unproject")
        rays, valid = self._unproject(pix, threads)
        return np.asarray(rays).reshape(lead + (3,)), np.asarray(valid).reshape(lead)

    def shutter_time(self, uv, threads=1):
        """Relative rolling-shutter readout time in [0, 1] of pixel positions.

        ``top_to_bottom``: ``floor(v) / (H - 1)``; ``bottom_to_top``:
        ``(H - ceil(v)) / (H - 1)``; ``left_to_right`` / ``right_to_left``
        likewise with u and W; ``global``: 0. Clamped to [0, 1].

        :returns: float64 ``(N,)``.
        """
        pix, lead = _rows(uv, 2, "uv", "shutter_time")
        return np.asarray(self._shutter_time(pix, threads)).reshape(lead)

    def pixel_rays(self, threads=1):
        """Unit rays of every pixel centre ``(i + 0.5, j + 0.5)``.

        :param threads: an int or a :class:`drivekit.Pool`; the result does not
            depend on it.
        :returns: ``(rays, valid)``: float32 ``(H, W, 3)`` (zeros where
            unprojection fails) and bool ``(H, W)``.
        """
        rays, valid = self._pixel_rays(threads)
        return np.asarray(rays), np.asarray(valid)

    # ------------------------------------------------------------------
    # value semantics

    def __eq__(self, other):
        if not isinstance(other, _drivekit.Camera):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(tuple(self.to_dict().items()))

    def __reduce__(self):
        return (_rebuild, (type(self), self.to_dict()))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


# ----------------------------------------------------------------------
# lidar and rig


def lidar_preset(n_beams):
    """A spinning-lidar preset.

    :param n_beams: 32 (HDL-32E-like, 1084 columns, 20 Hz, as nuScenes'),
        64 (HDL-64E-like, 2048 columns, 10 Hz) or 128 (3600 columns, 10 Hz).
    :returns: ``dict`` with ``n_beams``, ``n_columns``, ``spin_hz``,
        ``direction`` (+1 counter-clockwise, -1 clockwise seen from above),
        ``azimuth_start`` (rad, from +x), ``min_range``, ``max_range``
        (metres), ``elevation`` (list, rad, ascending from beam 0) and
        ``azimuth_offset`` (list, rad). Edit it and pass it to :func:`lidar_rays`.
    :raises InvalidArgumentError: another number.
    """
    d = _drivekit.lidar_preset(n_beams)
    d["elevation"] = list(d["elevation"])
    d["azimuth_offset"] = list(d["azimuth_offset"])
    return d


def lidar_rays(model):
    """Beam directions and column firing times of one lidar revolution.

    :param model: a preset number (32, 64, 128) or a dict like
        :func:`lidar_preset`'s (``azimuth_start`` and ``azimuth_offset``
        optional); it is validated.
    :returns: ``(dirs, times)``: ``dirs`` float64 ``(n_beams, n_columns, 3)``
        unit vectors in the sensor's FLU frame, ``times`` float64
        ``(n_columns,)`` seconds after the sweep start.
    """
    dirs, times = _drivekit.lidar_rays(model)
    return np.asarray(dirs), np.asarray(times)


def nuscenes_rig(width=1600, height=900):
    """The nuScenes-like rig: six 12 Hz pinhole cameras (``CAM_FRONT``,
    ``CAM_FRONT_RIGHT``, ``CAM_BACK_RIGHT``, ``CAM_BACK``, ``CAM_BACK_LEFT``,
    ``CAM_FRONT_LEFT``; rolling shutter top to bottom) and ``LIDAR_TOP``
    (32 beams, 20 Hz). ``width``, ``height`` scale the cameras.

    :returns: ``list`` of ``dict``, one per sensor: ``name``, ``kind``
        (``"camera"`` or ``"lidar"``), ``sensor_to_ego`` (4x4 float64 numpy,
        maps the sensor frame -- OpenCV axes for cameras, FLU for the lidar --
        to the ego frame, FLU), ``rotation`` (quaternion w, x, y, z) and
        ``translation`` of the same transform, ``rate_hz``, ``time_offset``
        (seconds after each rate tick), ``readout_time`` (rolling-shutter
        readout, seconds), ``camera`` (:class:`Camera` or None) and ``lidar``
        (a :func:`lidar_preset`-like dict or None).
    """
    out = []
    for d in _drivekit.rig_nuscenes(width, height):
        d["sensor_to_ego"] = np.array(d["sensor_to_ego"], dtype=np.float64).reshape(4, 4)
        if d["camera"] is not None:
            d["camera"] = Camera(**d["camera"])
        if d["lidar"] is not None:
            d["lidar"]["elevation"] = list(d["lidar"]["elevation"])
            d["lidar"]["azimuth_offset"] = list(d["lidar"]["azimuth_offset"])
        out.append(d)
    return out
