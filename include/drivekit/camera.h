/*
 * drivekit camera: camera models, rigid poses, rolling-shutter timing, lidar
 * scan patterns and sensor rigs.
 *
 * Conventions (the same everywhere in drivekit):
 *   - Camera frame: OpenCV axes, x right, y down, z forward. Units: metres.
 *   - Image coordinates are continuous: pixel (i, j) (column i, row j) covers
 *     [i, i+1) x [j, j+1), so its centre is (i + 0.5, j + 0.5). cx, cy are in
 *     these coordinates, for every model. (OpenCV's and nuScenes' intrinsics put
 *     pixel centres on integers: cx_drivekit = cx_opencv + 0.5. NVIDIA f-theta
 *     calibrations put the origin at the first pixel's centre too, so add 0.5.)
 *   - Poses are rigid transforms "a_to_b" mapping points in frame a to frame b:
 *     p_b = R p_a + t. Quaternions are (w, x, y, z), unit norm.
 *   - Ego/world frames: x forward, y left, z up (FLU), as in nuScenes.
 *
 * Models (dk_camera.model), each with project (3-D point -> pixel), its 2x3
 * Jacobian, unproject (pixel -> unit ray) and a validity test (inside the
 * model's field of view and the image, with a margin):
 *   DK_CAM_PINHOLE   u = fx x/z + cx, v = fy y/z + cy; valid for z > 0.
 *   DK_CAM_OPENCV    rational radial k1..k6, tangential p1, p2, thin prism s1..s4
 *                    (cv2.projectPoints' full model); unproject by 2-D Newton.
 *   DK_CAM_FISHEYE   OpenCV fisheye / Kannala-Brandt, r(θ) = θ(1 + k1θ² + k2θ⁴ +
 *                    k3θ⁶ + k4θ⁸) (cv2.fisheye.projectPoints); unproject by Newton.
 *   DK_CAM_FTHETA    NVIDIA f-theta: polynomial pixel-distance <-> angle in either
 *                    reference direction, plus the 2x2 linear term [[c, d], [e, 1]].
 *
 * Example:
 *     dk_camera cam;
 *     dk_camera_init_pinhole(&cam, 1600, 900, 1266.4, 1266.4, 816.3, 491.5);
 *     double p[3] = {1, 0.5, 10}, uv[2];
 *     if (dk_camera_project(&cam, p, uv, NULL)) ...   // visible at uv
 *
 * Thread safety: all functions are pure or write only to their arguments;
 * a dk_camera, dk_lidar_model or dk_rig may be shared read-only by threads.
 */
#ifndef DRIVEKIT_CAMERA_H
#define DRIVEKIT_CAMERA_H

#include "drivekit/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Rigid poses                                                               */

/** A rigid transform a_to_b: p_b = R(q) p_a + t. q = (w, x, y, z), unit. */
typedef struct dk_pose {
    double q[4];
    double t[3];
} dk_pose;

DK_API dk_pose dk_pose_identity(void);
/** Rotation about z (yaw, radians, counter-clockwise seen from above) then
 *  translation: the usual planar pose of a vehicle in an FLU world. */
DK_API dk_pose dk_pose_from_yaw(double x, double y, double z, double yaw);
/** From intrinsic Z-Y-X Euler angles (yaw, pitch, roll), radians. */
DK_API dk_pose dk_pose_from_euler(const double t[3], double yaw, double pitch, double roll);
/** Yaw of the pose's x axis in the xy plane (atan2 of R[1][0], R[0][0]). */
DK_API double dk_pose_yaw(const dk_pose *p);
/** a_to_c = b_to_c * a_to_b. */
DK_API dk_pose dk_pose_compose(const dk_pose *b_to_c, const dk_pose *a_to_b);
DK_API dk_pose dk_pose_inverse(const dk_pose *p);
DK_API void dk_pose_apply(const dk_pose *p, const double in[3], double out[3]);
/** Rotation only (directions). */
DK_API void dk_pose_rotate(const dk_pose *p, const double in[3], double out[3]);
/** Row-major 4x4 matrix [R t; 0 0 0 1]. */
DK_API void dk_pose_to_matrix(const dk_pose *p, double m[16]);
/** From a row-major 4x4 matrix. Returns DK_EINVALIDDATA if the 3x3 block is not
 *  a rotation (|RᵀR - I| > 1e-4 or det < 0) or the last row is not 0 0 0 1,
 *  DK_EINVAL for non-finite values. The rotation is re-orthonormalised. */
DK_API int dk_pose_from_matrix(const double m[16], dk_pose *out);
/** Translation lerp + quaternion slerp (shortest arc), s in [0, 1]. */
DK_API dk_pose dk_pose_interpolate(const dk_pose *a, const dk_pose *b, double s);
/** Rotation matrix R (row-major 3x3) of a unit quaternion. */
DK_API void dk_quat_to_rotation(const double q[4], double r[9]);
/** Quaternion of a rotation matrix (w >= 0). */
DK_API void dk_rotation_to_quat(const double r[9], double q[4]);

/* ------------------------------------------------------------------------ */
/* Camera models                                                             */

typedef enum dk_camera_model {
    DK_CAM_PINHOLE = 0,
    DK_CAM_OPENCV = 1,
    DK_CAM_FISHEYE = 2,
    DK_CAM_FTHETA = 3,
} dk_camera_model;

/** Which f-theta polynomial is the calibrated one; the other direction is
 *  obtained by Newton inversion of it (the stored other polynomial, if any,
 *  only seeds the iteration). */
typedef enum dk_ftheta_ref {
    DK_FTHETA_ANGLE_TO_PIXELDIST = 0,   /* forward poly is the reference */
    DK_FTHETA_PIXELDIST_TO_ANGLE = 1,   /* backward poly is the reference */
} dk_ftheta_ref;

/** Rolling-shutter readout direction. The relative readout time of an image
 *  point is (3DGUT / gsplat definition):
 *    TOP_TO_BOTTOM floor(v)/(H-1), BOTTOM_TO_TOP (H - ceil(v))/(H-1),
 *    LEFT_TO_RIGHT floor(u)/(W-1), RIGHT_TO_LEFT (W - ceil(u))/(W-1),
 *    GLOBAL 0; clamped to [0, 1]. */
typedef enum dk_shutter {
    DK_SHUTTER_GLOBAL = 0,
    DK_SHUTTER_TOP_TO_BOTTOM,
    DK_SHUTTER_BOTTOM_TO_TOP,
    DK_SHUTTER_LEFT_TO_RIGHT,
    DK_SHUTTER_RIGHT_TO_LEFT,
} dk_shutter;

/** A camera's intrinsics. A visible struct: fill it with one of the
 *  dk_camera_init_* functions (which also derive max_angle), or set the fields
 *  and call dk_camera_validate. Unused fields are zero. */
typedef struct dk_camera {
    dk_camera_model model;
    int width, height;          /* pixels */
    double fx, fy;              /* focal lengths, pixels (not used by f-theta) */
    double cx, cy;              /* principal point, continuous pixel coordinates */
    double k[6];                /* OPENCV: k1..k6; FISHEYE: k1..k4 */
    double p[2];                /* OPENCV: p1, p2 */
    double s[4];                /* OPENCV: s1..s4 */
    /* F-theta */
    dk_ftheta_ref ftheta_ref;
    double fw_poly[6];          /* angle (rad) -> pixel distance, c0..c5 */
    double bw_poly[6];          /* pixel distance -> angle (rad), c0..c5 */
    double linear_c, linear_d, linear_e;  /* A = [[c, d], [e, 1]]; identity: 1, 0, 0 */
    /* FISHEYE and FTHETA: largest valid angle from the optical axis (rad),
       at most π. 0 asks dk_camera_validate to derive it: the first angle
       where the model stops being monotonic (first positive root of the
       derivative of r(θ), fw or bw), bounded by the angle of the farthest
       corner of the image expanded by the margin, and by π. */
    double max_angle;
    /* Points within margin * (width, height) outside the image still count
       as valid (sigma points of large Gaussians need it). Default 0. */
    double margin;
    dk_shutter shutter;         /* default GLOBAL */
} dk_camera;

DK_API void dk_camera_init_pinhole(dk_camera *c, int width, int height, double fx, double fy,
                                   double cx, double cy);
/** k: 6 radial (k1..k6), p: 2 tangential, s: 4 thin prism; NULL = zeros. */
DK_API void dk_camera_init_opencv(dk_camera *c, int width, int height, double fx, double fy,
                                  double cx, double cy, const double k[6], const double p[2],
                                  const double s[4]);
/** k: k1..k4 (NULL = equidistant). max_angle 0 = derive. The fisheye and
 *  f-theta initialisers run dk_camera_validate's completion; with invalid
 *  parameters they leave max_angle as given (and no error message): call
 *  dk_camera_validate to learn what is wrong. */
DK_API void dk_camera_init_fisheye(dk_camera *c, int width, int height, double fx, double fy,
                                   double cx, double cy, const double k[4], double max_angle);
/** `poly` is the reference polynomial (6 coefficients); linear_cde may be NULL
 *  (identity). max_angle 0 = derive. The other direction's polynomial is
 *  fitted (least squares, degree 5) for speed and as a Newton seed. */
DK_API void dk_camera_init_ftheta(dk_camera *c, int width, int height, double cx, double cy,
                                  dk_ftheta_ref ref, const double poly[6],
                                  const double linear_cde[3], double max_angle);

/** Checks and completes a camera: sizes > 0 and <= 65536, finite parameters,
 *  margin >= 0, fx, fy > 0 (pinhole, opencv, fisheye), c - e*d != 0 (f-theta),
 *  a reference polynomial that increases from 0 (constant term exactly 0,
 *  positive slope), a fisheye r(θ) / f-theta reference polynomial that keeps
 *  increasing up to max_angle, max_angle in [0, π]; derives max_angle when 0,
 *  and fits the non-reference f-theta polynomial when it is all zeros.
 *  Returns DK_OK or DK_EINVAL naming the model and field
 *  ("dk_camera_validate(): fisheye: k[2] is NaN"); on error *c is unchanged.
 *  The projection functions below expect a validated camera. */
DK_API int dk_camera_validate(dk_camera *c);

/** Projects a camera-frame point to continuous pixel coordinates. Returns 1 if
 *  the point is valid (in front / inside max_angle, and within the image
 *  expanded by the margin), else 0; uv is written whenever the model is
 *  defined at the point (check the return value, not uv). If J is not NULL it
 *  receives the row-major 2x3 Jacobian d(u,v)/d(x,y,z). */
DK_API int dk_camera_project(const dk_camera *c, const double p[3], double uv[2], double J[6]);

/** Unprojects a pixel to a unit ray in the camera frame (z > 0 unless an
 *  f-theta/fisheye max_angle exceeds 90 degrees). Returns 1 on success, 0 if the
 *  pixel lies outside the model's domain (Newton failed, beyond max_angle, an
 *  OpenCV radial factor <= 0.8). The image bounds are not checked: a ray that
 *  succeeds projects back to uv (to ~1e-12 px). */
DK_API int dk_camera_unproject(const dk_camera *c, const double uv[2], double ray[3]);

/** Relative readout time in [0, 1] of the image point uv (see dk_shutter). */
DK_API double dk_camera_shutter_time(const dk_camera *c, const double uv[2]);

/** Batch projection of n points (xyz float32, camera frame) on a pool:
 *  uv (n x 2; NaN where the model is undefined) and valid (n, 0/1; may be
 *  NULL). Computed in double per point. Returns DK_EINVAL for NULL arguments
 *  or n < 0. Identical results for any pool size. */
DK_API int dk_camera_project_points(const dk_camera *c, dk_pool *pool, int64_t n,
                                    const float *xyz, float *uv, uint8_t *valid);
/** Unit rays for every pixel centre (i + 0.5, j + 0.5), (height x width x 3)
 *  float32, (0, 0, 0) where dk_camera_unproject fails, and a validity mask
 *  (may be NULL). Returns DK_EINVAL for NULL arguments or a size outside
 *  [1, 65536]. Identical results for any pool size. */
DK_API int dk_camera_pixel_rays(const dk_camera *c, dk_pool *pool, float *rays, uint8_t *valid);

/** Model name: "pinhole", "opencv", "fisheye", "ftheta"; "unknown". */
DK_API const char *dk_camera_model_name(dk_camera_model m);
/** Parses a model name. Returns DK_EINVAL for an unknown name. */
DK_API int dk_camera_model_parse(const char *name, dk_camera_model *out);

/* ------------------------------------------------------------------------ */
/* Spinning lidar scan patterns                                              */

#define DK_LIDAR_MAX_BEAMS 256

/** A spinning lidar's firing pattern: beams fire together per column; the
 *  head turns through n_columns columns per revolution at spin_hz.
 *  Column c fires at time c / (n_columns * spin_hz) after the sweep start, at
 *  azimuth az0 + dir * 2π c / n_columns (radians, CCW from the sensor's x axis;
 *  dir = +1 counter-clockwise, -1 clockwise). Beam b points at elevation
 *  elevation[b] (radians, positive up), with azimuth offset azimuth_offset[b]. */
typedef struct dk_lidar_model {
    int n_beams;
    int n_columns;
    double spin_hz;
    int direction;                       /* +1 CCW, -1 CW */
    double azimuth_start;                /* az0, radians */
    double min_range, max_range;         /* metres */
    double elevation[DK_LIDAR_MAX_BEAMS];
    double azimuth_offset[DK_LIDAR_MAX_BEAMS];
} dk_lidar_model;

typedef enum dk_lidar_preset {
    DK_LIDAR_32 = 32,    /* HDL-32E-like: 32 beams -30.67..+10.67 deg, 1084 columns, 20 Hz (nuScenes) */
    DK_LIDAR_64 = 64,    /* HDL-64E-like: 64 beams -24.9..+2 deg, 2048 columns, 10 Hz */
    DK_LIDAR_128 = 128,  /* 128 beams -25..+15 deg, 3600 columns, 10 Hz */
} dk_lidar_preset;

/** Fills a preset: beam 0 is the lowest, elevations evenly spaced and
 *  ascending, no azimuth offsets, azimuth_start 0 (+x), clockwise (-1) as
 *  Velodyne sensors spin. Ranges: 32: 1..100 m, 64: 1..120 m, 128: 0.5..200 m.
 *  Returns DK_EINVAL for an unknown preset. */
DK_API int dk_lidar_model_preset(dk_lidar_model *m, dk_lidar_preset preset);
/** Checks ranges and counts (n_beams 1..DK_LIDAR_MAX_BEAMS, n_columns 1..1e6,
 *  spin_hz > 0, direction +-1, 0 <= min_range < max_range, finite angles).
 *  DK_EINVAL naming the field. */
DK_API int dk_lidar_model_validate(const dk_lidar_model *m);
/** Unit direction (sensor frame, FLU) of beam b at column c, and its firing
 *  time relative to the sweep start (seconds). dir or time may be NULL.
 *  beam must lie in [0, n_beams) (asserted); columns outside [0, n_columns)
 *  continue the pattern. */
DK_API void dk_lidar_ray(const dk_lidar_model *m, int beam, int column, double dir[3],
                         double *time);

/* ------------------------------------------------------------------------ */
/* Sensor rigs                                                               */

#define DK_RIG_MAX_SENSORS 16
#define DK_SENSOR_NAME_MAX 32

typedef enum dk_sensor_kind { DK_SENSOR_CAMERA = 0, DK_SENSOR_LIDAR = 1 } dk_sensor_kind;

/** A sensor mounted on the ego vehicle. For cameras, sensor_to_ego maps the
 *  OpenCV camera frame to the ego frame (FLU); for lidars, the lidar's FLU frame. */
typedef struct dk_rig_sensor {
    char name[DK_SENSOR_NAME_MAX];       /* "CAM_FRONT", "LIDAR_TOP", ... */
    dk_sensor_kind kind;
    dk_pose sensor_to_ego;
    double rate_hz;                      /* capture rate */
    double time_offset;                  /* seconds after each rate tick */
    dk_camera camera;                    /* kind == CAMERA */
    dk_lidar_model lidar;                /* kind == LIDAR */
    double readout_time;                 /* camera rolling-shutter readout, seconds */
} dk_rig_sensor;

typedef struct dk_rig {
    int n_sensors;
    dk_rig_sensor sensors[DK_RIG_MAX_SENSORS];
} dk_rig;

/** The nuScenes-like rig: CAM_FRONT, CAM_FRONT_RIGHT, CAM_BACK_RIGHT, CAM_BACK,
 *  CAM_BACK_LEFT, CAM_FRONT_LEFT (1600x900 pinhole, 12 Hz, 70 deg horizontal
 *  FOV except CAM_BACK at 110), and LIDAR_TOP (32 beams, 20 Hz). Cameras are
 *  yawed 0, -55, -110, 180, +110, +55 deg with horizontal optical axes, read
 *  out TOP_TO_BOTTOM in 30 ms, and fire (time_offset) when the clockwise lidar
 *  sweep, which starts facing forward, crosses their optical axis. `width` and
 *  `height` scale the cameras (0 = 1600, resp. 900). */
DK_API void dk_rig_nuscenes(dk_rig *rig, int width, int height);
/** Index of the sensor named `name`, or -1. */
DK_API int dk_rig_find(const dk_rig *rig, const char *name);
/** Validates every sensor (names unique and non-empty, cameras, lidars, rates
 *  > 0). DK_EINVAL naming the sensor and field. */
DK_API int dk_rig_validate(dk_rig *rig);

#ifdef __cplusplus
}
#endif

#endif /* DRIVEKIT_CAMERA_H */
