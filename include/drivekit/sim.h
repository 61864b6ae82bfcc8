/*
 * drivekit sim: Gaussian-splat scenes and their rendering as camera images.
 *
 * A dk_scene holds N 3-D Gaussians as structure-of-arrays float32 data, with
 * the PRE-ACTIVATION values of the standard 3DGS PLY (graphdeco / 3dgrut):
 *   means      (N, 3)  world position, metres
 *   scales     (N, 3)  log of the per-axis standard deviation (metres);
 *                      activated with exp
 *   rotations  (N, 4)  quaternion (w, x, y, z) as stored, not necessarily
 *                      unit; activated by normalising
 *   opacities  (N)     logit; activated with the sigmoid
 *   sh         (N, 3, K) spherical-harmonic colour coefficients, K =
 *                      (sh_degree + 1)^2, channel-major like the PLY:
 *                      sh[(i*3 + c)*K + 0] = f_dc_c and
 *                      sh[(i*3 + c)*K + k] = f_rest_{c*(K-1) + k-1}, k >= 1.
 *                      Colour = max(0, SH(dir) + 0.5), dir = unit vector from
 *                      the camera centre to the mean (world frame).
 * and optional per-Gaussian fields (NULL when absent):
 *   normals         (N, 3) the PLY's nx, ny, nz (unused by the renderer)
 *   lidar_intensity (N)    lidar feature (PLY property "lidar_intensity")
 *   lidar_raydrop   (N)    ray-drop logit (PLY property "lidar_raydrop")
 *   actor_id        (N)    int32, -1 = static (PLY property "actor_id", int)
 * Keeping the stored values makes save-then-load bit-identical; the renderer
 * activates them on the fly.
 *
 * World frame: any right-handed metric frame (drivekit uses FLU). Camera
 * frame and pixel conventions are those of camera.h (OpenCV axes, pixel
 * (i, j) centred at (i + 0.5, j + 0.5)).
 *
 * Example:
 *     dk_scene *s;
 *     if (dk_scene_load_ply("point_cloud.ply", 0, &s)) { puts(dk_errmsg()); ... }
 *     dk_camera cam;
 *     dk_camera_init_pinhole(&cam, 960, 540, 800, 800, 480, 270);
 *     dk_pose cam_to_world = dk_pose_identity();
 *     dk_render_config rc;
 *     dk_render_config_init(&rc);
 *     float *rgb = malloc(960 * 540 * 3 * 4), *alpha = malloc(960 * 540 * 4);
 *     dk_render_camera(s, &cam, &cam_to_world, &rc, pool, rgb, alpha, NULL);
 *     dk_scene_destroy(s);
 *
 * Thread safety: a dk_scene may be rendered by several threads at once as
 * long as nobody modifies it. Functions report errors through dk_errmsg()
 * (thread-local), naming the file, element/property and byte offset for
 * PLY problems.
 */
#ifndef DRIVEKIT_SIM_H
#define DRIVEKIT_SIM_H

#include "drivekit/camera.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Gaussian scenes                                                           */

#define DK_SCENE_MAX_SH_DEGREE 3
/** Largest number of Gaussians in a scene (indices fit in 31 bits). */
#define DK_SCENE_MAX_GAUSSIANS ((int64_t)0x7fffffff)

/** Optional fields, for dk_scene_create. */
#define DK_SCENE_NORMALS  0x1u   /* normals */
#define DK_SCENE_LIDAR    0x2u   /* lidar_intensity and lidar_raydrop */
#define DK_SCENE_ACTOR_ID 0x4u   /* actor_id */

typedef struct dk_scene {
    int64_t n;              /* number of Gaussians */
    int sh_degree;          /* 0..3 */
    int sh_coeffs;          /* K = (sh_degree + 1)^2 */
    float *means;           /* n*3 */
    float *scales;          /* n*3, log */
    float *rotations;       /* n*4, (w, x, y, z) */
    float *opacities;       /* n, logit */
    float *sh;              /* n*3*K */
    float *normals;         /* n*3 or NULL */
    float *lidar_intensity; /* n or NULL */
    float *lidar_raydrop;   /* n or NULL */
    int32_t *actor_id;      /* n or NULL */
    struct dk_scene_actors *actors;  /* private: actor tracks (dk_scene_set_actor_track) */
} dk_scene;

/** Allocates a scene of n zero-filled Gaussians (every array owned by the
 *  scene; the fields in `fields` allocated, the others NULL; actor_id filled
 *  with -1). Returns DK_EINVAL (NULL out, n < 0 or > DK_SCENE_MAX_GAUSSIANS,
 *  sh_degree outside 0..3, unknown field bits), DK_ENOMEM. *out is NULL on
 *  error. */
DK_API int dk_scene_create(int64_t n, int sh_degree, unsigned fields, dk_scene **out);
/** Frees the scene and its arrays. NULL-safe. Only for scenes made by
 *  dk_scene_create / dk_scene_load_ply*. */
DK_API void dk_scene_destroy(dk_scene *s);

/** Checks that every stored value is finite and every rotation quaternion has
 *  a norm >= 1e-12. Returns DK_OK, DK_EINVAL for a NULL/inconsistent scene,
 *  or DK_EINVALIDDATA naming the Gaussian and field
 *  ("dk_scene_validate(): gaussian 17: scale_1 is inf"). */
DK_API int dk_scene_validate(const dk_scene *s);

/* ------------------------------------------------------------------------ */
/* Actors: rigid per-actor poses over time                                   */

/* A Gaussian with actor_id a >= 0 stores its mean and rotation in actor a's
 * local frame; at time t the renderers place it with actor_to_world(t) from
 * the actor's track (mean' = R mean + t, rotation' = q_actor * q). A Gaussian
 * whose actor has no track, and every Gaussian with actor_id -1, is static:
 * its stored values are world coordinates. Times are seconds on any clock
 * shared with the render calls (dk_render_config.time). */

/** Largest number of tracked actors in one scene. */
#define DK_SCENE_MAX_ACTORS 65536

/** Sets (replaces) actor `actor_id`'s track: n >= 1 keyframes at strictly
 *  increasing finite `times` with rigid poses actor_to_world (unit
 *  quaternions within 1e-6, finite translations; stored normalised). Between
 *  keyframes the pose is interpolated (translation lerp, rotation slerp);
 *  before the first and after the last it is held. Returns DK_EINVAL (NULL
 *  arguments, actor_id < 0, n < 1), DK_EINVALIDDATA naming the keyframe
 *  ("keyframe 3: time 0.2 is not after 0.25", "keyframe 0: quaternion norm
 *  0.5 is not 1"), DK_ERANGE (more than DK_SCENE_MAX_ACTORS tracks),
 *  DK_ENOMEM. On error the scene is unchanged. Not thread-safe against
 *  concurrent renders of the same scene. */
DK_API int dk_scene_set_actor_track(dk_scene *s, int32_t actor_id, int n, const double *times,
                                    const dk_pose *poses);
/** Removes actor `actor_id`'s track (its Gaussians become static). DK_ENOENT
 *  if it has none, DK_EINVAL for NULL. */
DK_API int dk_scene_remove_actor_track(dk_scene *s, int32_t actor_id);
/** Actor `actor_id`'s pose at time t (see above). DK_ENOENT if the actor has
 *  no track (*out = identity), DK_EINVAL for NULL arguments or non-finite t. */
DK_API int dk_scene_actor_pose(const dk_scene *s, int32_t actor_id, double t, dk_pose *out);
/** Number of tracks; dk_scene_actor_track_ids writes up to `cap` of their
 *  ids in ascending order and returns the count. */
DK_API int dk_scene_actor_track_count(const dk_scene *s);
DK_API int dk_scene_actor_track_ids(const dk_scene *s, int32_t *ids, int cap);
/** Keyframes of one track: *n, and pointers valid until the track changes.
 *  DK_ENOENT if none. */
DK_API int dk_scene_actor_track(const dk_scene *s, int32_t actor_id, int *n,
                                const double **times, const dk_pose **poses);

/* ------------------------------------------------------------------------ */
/* PLY I/O (3DGS layout)                                                     */

/** Load flag: accept non-finite values and zero quaternions (the renderer
 *  then culls those Gaussians). By default they are an error. */
#define DK_PLY_ALLOW_INVALID 0x1u

/** Loads a 3DGS point cloud: a binary little-endian PLY with a `vertex`
 *  element of float32 properties x, y, z, f_dc_0..2, f_rest_0..M-1
 *  (M = 0, 9, 24 or 45: SH degree 0..3), opacity, scale_0..2, rot_0..3, in
 *  any order; optionally float nx, ny, nz (all three), float lidar_intensity
 *  and lidar_raydrop (both), int/int32 actor_id. Other properties (any scalar
 *  type) and other elements after `vertex` are ignored; elements before it
 *  must have fixed-size rows. Header at most 64 KiB, lines ending in LF or
 *  CRLF.
 *  Returns:
 *    DK_EINVAL        NULL arguments or unknown flags
 *    DK_ENOENT, DK_EIO  the file cannot be read (dk_file_read)
 *    DK_EUNSUPPORTED  ASCII or big-endian format, a required property that is
 *                     not float32, list properties at or before `vertex`, an
 *                     f_rest count that is not 0, 9, 24 or 45
 *    DK_EINVALIDDATA  not a PLY, malformed or truncated header, no vertex
 *                     element, missing or duplicated required properties,
 *                     counts that do not fit the file size, non-finite values
 *                     or zero quaternions (unless DK_PLY_ALLOW_INVALID);
 *                     the message names the file, element/property, vertex
 *                     and byte offset
 *    DK_ENOMEM
 *  Nothing is allocated before the counts are checked against the file size. */
DK_API int dk_scene_load_ply(const char *path, unsigned flags, dk_scene **out);
/** The same from memory; `name` (may be NULL) is used in messages. */
DK_API int dk_scene_load_ply_memory(const void *data, size_t size, const char *name,
                                    unsigned flags, dk_scene **out);

/** Writes the scene as a binary little-endian PLY in the graphdeco order
 *  (x y z [nx ny nz] f_dc_0..2 f_rest_* opacity scale_0..2 rot_0..3, then
 *  lidar_intensity lidar_raydrop and int actor_id when present). Loading the
 *  result gives bit-identical arrays. Returns DK_EINVAL (NULL or inconsistent
 *  scene), DK_ENOMEM, DK_EOVERFLOW, DK_EIO (dk_file_write). */
DK_API int dk_scene_save_ply(const dk_scene *s, const char *path);
/** The same into a dk_malloc'd buffer (free with dk_free). */
DK_API int dk_scene_save_ply_memory(const dk_scene *s, uint8_t **out, size_t *out_size);

/* ------------------------------------------------------------------------ */
/* Camera rendering (CPU tile rasterizer)                                    */

typedef enum dk_projection {
    DK_PROJ_AUTO = 0,  /* EWA for DK_CAM_PINHOLE, unscented transform otherwise */
    DK_PROJ_EWA = 1,   /* linearised pinhole (pinhole cameras only) */
    DK_PROJ_UT = 2,    /* unscented transform through dk_camera_project */
} dk_projection;

typedef struct dk_render_config {
    float background[3];   /* colour composited behind: rgb + T * background. Default 0 */
    double near_z;         /* cull Gaussians whose camera z <= near_z (m). Default 0.2 */
    int sh_degree;         /* SH bands used, -1 = the scene's. Default -1 */
    dk_projection projection;  /* default AUTO */
    double ut_alpha, ut_beta, ut_kappa;  /* unscented transform; default 1, 2, 0 (3dgrut) */
    double dilation;       /* added to the 2-D covariance diagonal (px^2). Default 0.3 */
    /* Rolling shutter. When set, cam_to_world is the pose at the start of the
       readout and cam_to_world_end the pose at its end; the readout order is
       cam->shutter (dk_camera_shutter_time). Every sigma point is projected
       with the pose at its own readout time (cam_to_world interpolated: centre
       lerp, orientation slerp), found by re-projecting up to rs_iterations
       times (3DGUT); forces the unscented transform. Default 0 (global). */
    int rolling_shutter;
    dk_pose cam_to_world_end;   /* default identity */
    int rs_iterations;          /* 1..100, default 5 */
    /* Time of the exposure (global shutter) or of the start of the readout
       (rolling shutter), seconds: tracked actors are placed with their pose
       at this time (dk_scene_set_actor_track). Default 0. */
    double time;
    /* Rolling shutter only: seconds from the first to the last readout; a
       Gaussian read out at shutter fraction u (dk_camera_shutter_time) sees
       tracked actors at time + u * readout_duration, so actors move during
       the readout too. Default 0. */
    double readout_duration;
} dk_render_config;

DK_API void dk_render_config_init(dk_render_config *cfg);

/** Renders the scene seen by `cam` (validated, see dk_camera_validate)
 *  placed at `cam_to_world` (OpenCV camera frame -> world); global shutter
 *  unless cfg->rolling_shutter (then the depth z_i, the near cull and the SH
 *  view direction use the pose at the readout time of the Gaussian's mean).
 *
 *  Per Gaussian: activation; cull if the camera-frame mean has z <= near_z,
 *  opacity < 1/255, non-finite values or a zero quaternion; 3-D covariance
 *  R S^2 R^T; 2-D mean and covariance by EWA (J W Σ W^T J^T, tangents clamped
 *  to 1.3x the field of view) or by the unscented transform (7 sigma points,
 *  all of which must project to a defined pixel, else culled); + dilation on
 *  the diagonal; conic = inverse (culled if the determinant is not > 0, or
 *  if the 2-D mean lies more than 1e7 px from the image origin); the
 *  footprint is the ellipse where opacity*exp(-0.5 d^T conic d) >= 1/255,
 *  bounded by its axis-aligned box, binned to 16x16 tiles (64-bit pair
 *  counts). Per tile, Gaussians are sorted by (camera z, index) and blended
 *  front to back at pixel centres (i + 0.5, j + 0.5):
 *    alpha = min(0.99, opacity * exp(-0.5 d^T conic d)), skipped if < 1/255;
 *    a pixel stops before a Gaussian that would take T below 1e-4.
 *  Blending is float32 with a polynomial exp (relative error ~2e-7).
 *  Not (yet) done: the Mip-Splatting opacity compensation and 3DGUT's
 *  per-ray 3-D evaluation; footprints are always the 2-D conic.
 *
 *  Outputs (caller-allocated, C-contiguous float32; any may be NULL):
 *    rgb    (H, W, 3)  Σ c_i a_i T_i + T * background
 *    alpha  (H, W)     1 - T
 *    depth  (H, W)     Σ z_i a_i T_i / Σ a_i T_i: the expected camera z of
 *                      the visible surface, normalised by the accumulated
 *                      weight (= alpha = 1 - T up to rounding); 0 where
 *                      alpha = 0. z_i is the camera z of Gaussian i's mean.
 *
 *  `pool` may be NULL (caller's thread). Results are bit-identical for any
 *  pool size. Returns DK_EINVAL (NULL scene/camera/pose/cfg, an invalid
 *  camera, bad config values, DK_PROJ_EWA with a non-pinhole camera or a
 *  rolling shutter, sh_degree above the scene's, rs_iterations outside
 *  1..100), DK_ENOMEM, DK_EOVERFLOW. */
DK_API int dk_render_camera(const dk_scene *s, const dk_camera *cam, const dk_pose *cam_to_world,
                            const dk_render_config *cfg, dk_pool *pool, float *rgb,
                            float *alpha, float *depth);

#ifdef __cplusplus
}
#endif

#endif /* DRIVEKIT_SIM_H */
