/*
 * drivekit sim: Gaussian-splat scenes and their rendering as camera images
 * and lidar sweeps.
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
#include "drivekit/world.h"

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

/* Tracks files. PLY carries only each Gaussian's actor_id; the tracks travel
 * next to it as JSON (scene.ply + scene.tracks.json):
 *     {"format": "drivekit.tracks", "version": 1,
 *      "actors": [{"id": 3, "times": [0, 0.1, ...],
 *                  "poses": [[qw, qx, qy, qz, tx, ty, tz], ...]}, ...]}
 * one pose (actor_to_world, unit quaternion + translation in metres) per
 * time, actors in ascending id order. */
#define DK_TRACKS_FORMAT "drivekit.tracks"
#define DK_TRACKS_VERSION 1

/** Writes every track of the scene (none: an empty "actors" array). Doubles
 *  are written in their shortest round-trip form, so loading gives the same
 *  keyframes bit for bit. Returns DK_EINVAL (NULL arguments), DK_ENOMEM,
 *  DK_EIO (dk_file_write). */
DK_API int dk_scene_save_tracks_json(const dk_scene *s, const char *path);
/** The same into a dk_malloc'd NUL-terminated buffer (free with dk_free). */
DK_API int dk_scene_save_tracks_json_memory(const dk_scene *s, char **out, size_t *out_size);
/** Replaces ALL of the scene's tracks with the file's (tracks the file does not
 *  name are removed; the Gaussians are untouched). Everything is checked
 *  before the scene changes: "format" (optional, must be "drivekit.tracks"),
 *  "version" (required, 1), "actors" (array of at most DK_SCENE_MAX_ACTORS
 *  objects), per actor "id" (integer 0..2^31-1, unique), "times" (1 or more
 *  finite numbers, strictly increasing) and "poses" (as many arrays of 7
 *  finite numbers, quaternion norm within 1e-6 of 1). Returns DK_EINVAL
 *  (NULL arguments), DK_ENOENT / DK_EIO (the file cannot be read),
 *  DK_EINVALIDDATA naming the file and field ("tracks.json: actors[2].poses[5]:
 *  expected array of 7 numbers, got 6 items"; "tracks.json: actors[0].times[3]:
 *  4.5 is not after 4.5"), DK_ENOMEM. On error the scene is unchanged. Not
 *  thread-safe against renders of the same scene. */
DK_API int dk_scene_load_tracks_json(dk_scene *s, const char *path);
/** The same from memory; `name` (may be NULL) is used in messages. */
DK_API int dk_scene_parse_tracks_json(dk_scene *s, const char *text, size_t len,
                                      const char *name);

/* ------------------------------------------------------------------------ */
/* Scenes from scenarios                                                     */

/* dk_scene_from_scenario turns a drivekit scenario (world.h: generated by
 * dk_world_generate or loaded from JSON) into a Gaussian scene that looks like
 * dk_world_render_camera's images, so there is something real to render
 * without downloads. Around the ego's path (within cfg->margin metres):
 *   ground     grass, drivable area (asphalt) and sidewalks (concrete) as flat
 *              discs on z = 0 tiling the area on a jittered grid of
 *              1/sqrt(density) metres
 *   paint      lane lines (solid, dashed 3 m of every 9, double yellow), road
 *              boundaries (kerbs), stop lines as thin flat Gaussians 1 cm
 *              above the ground; crosswalks (zebra stripes) and road markings
 *              as small discs
 *   objects    poles, traffic lights and signs as boxes (static, actor_id -1)
 *   actors     every scenario actor whose path comes within the margin, as
 *              flat Gaussians on its box surface (object_density per m^2):
 *              class colours (the palettes of the world renderer), darker
 *              windows, wheels and sills on vehicles, skin / shirt / trousers
 *              on people, stripes on cones and barriers. actor_id = the
 *              scenario actor's id. Moving actors are stored in their box
 *              frame (centre of the box, x along its length) with a track
 *              holding the scenario states as keyframes (same interpolation
 *              as dk_actor_state_at); an actor that exists only for part of
 *              [0, duration] is moved 100 km below its first / last position
 *              outside its time span (keyframes 1 ms before / after it).
 *              Parked actors that never move are static Gaussians in world
 *              coordinates that keep their actor_id (no track).
 *   ego track  the ego's trajectory as the track of actor 0 (no Gaussian has
 *              id 0): its pose is the ego frame (rear axle on the ground), so a
 *              rig camera at time t sits at actor_pose(0, t) * sensor_to_ego.
 * Colours are the world renderer's albedos times its sun and ambient light
 * (ground at the mean of its noise; box faces lit at the actor's first state),
 * with a small per-Gaussian jitter; the sky is not part of the scene (render
 * with a background). Every Gaussian carries lidar features: lidar_intensity
 * = the world renderer's lidar reflectivity of the material / 255 (asphalt
 * 0.05, paint 0.47, signs 0.86, car bodies 0.22, ...; glass 0.4x the body)
 * and lidar_raydrop = logit of the drop probability (0.01; 0.3 for glass).
 * The scene has DK_SCENE_LIDAR | DK_SCENE_ACTOR_ID. Same scenario, config and
 * seed: the same scene, bit for bit. */

/** What dk_scene_from_scenario includes. */
#define DK_FROM_WORLD_GROUND    0x01u  /* grass where no map surface is */
#define DK_FROM_WORLD_SURFACES  0x02u  /* drivable area, sidewalks */
#define DK_FROM_WORLD_PAINT     0x04u  /* lane lines, kerbs, stop lines, crosswalks, markings */
#define DK_FROM_WORLD_OBJECTS   0x08u  /* poles, traffic lights, traffic signs */
#define DK_FROM_WORLD_PARKED    0x10u  /* parked actors (vehicles, cones, barriers) */
#define DK_FROM_WORLD_MOVING    0x20u  /* moving vehicles, pedestrians, cyclists */
#define DK_FROM_WORLD_EGO_TRACK 0x40u  /* the ego's track as actor 0 */
#define DK_FROM_WORLD_ALL       0x7fu

typedef struct dk_scene_from_world_config {
    double density;          /* Gaussians per m^2 on the ground, (0, 400]. Default 4 */
    double object_density;   /* per m^2 on boxes and paint fills, (0, 400]. Default 16 */
    double margin;           /* metres around the ego's path (its states over the
                                whole scenario) that are covered, [1, 2000]. Default 40 */
    uint64_t seed;           /* positions and colour jitter. Default 0 */
    int sh_degree;           /* 0 or 1 (degree-1 coefficients are 0). Default 0 */
    unsigned include;        /* DK_FROM_WORLD_* bits. Default DK_FROM_WORLD_ALL */
    int64_t max_gaussians;   /* refuse larger scenes, 1..DK_SCENE_MAX_GAUSSIANS.
                                Default 20'000'000 (about 1.4 GB) */
} dk_scene_from_world_config;

DK_API void dk_scene_from_world_config_init(dk_scene_from_world_config *cfg);

/** Makes the Gaussian scene of scenario `sc` (see above). `cfg` may be NULL
 *  (defaults). Single-threaded; reads `sc` only (it may be shared by
 *  threads). Returns DK_EINVAL (NULL scenario or out, a config field out of
 *  range, named), DK_EINVALIDDATA (the scenario fails dk_scenario_validate;
 *  its message), DK_ERANGE (the scene would exceed cfg->max_gaussians or the
 *  covered area is too large: lower margin or densities), DK_ENOMEM. *out is
 *  NULL on error. */
DK_API int dk_scene_from_scenario(const dk_scenario *sc, const dk_scene_from_world_config *cfg,
                                  dk_scene **out);

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
       at this time (dk_scene_set_actor_track). Finite. Default 0. */
    double time;
    /* Rolling shutter only: seconds from the first to the last readout; a
       Gaussian read out at shutter fraction u (dk_camera_shutter_time) sees
       tracked actors at time + u * readout_duration, so actors move during
       the readout too. Finite, >= 0. Default 0. */
    double readout_duration;
} dk_render_config;

DK_API void dk_render_config_init(dk_render_config *cfg);

/** Renders the scene seen by `cam` (validated, see dk_camera_validate)
 *  placed at `cam_to_world` (OpenCV camera frame -> world); global shutter
 *  unless cfg->rolling_shutter (then the depth z_i, the near cull and the SH
 *  view direction use the pose at the readout time of the Gaussian's mean).
 *
 *  Tracked actors: a Gaussian whose actor has a track is first placed by
 *  actor_to_world (mean' = R mean + t, rotation' = q_actor * q; the SH view
 *  direction is taken from the placed mean). Global shutter: every actor at
 *  cfg->time. Rolling shutter: each projected point (the mean and every
 *  sigma point, at each re-projection) sees its actor at cfg->time + u *
 *  cfg->readout_duration, u its readout fraction, so actors move during the
 *  readout too. Untracked actor ids (and -1) are static.
 *
 *  Per Gaussian: activation; cull if the camera-frame mean has z <= near_z,
 *  opacity < 1/255, non-finite values or a zero quaternion; 3-D covariance
 *  R S^2 R^T; 2-D mean and covariance by EWA (J W Σ W^T J^T, tangents clamped
 *  to 1.3x the field of view) or by the unscented transform (7 sigma points,
 *  all of which must project to a defined pixel, else culled; for the
 *  perspective models, pinhole and OpenCV, a Gaussian with a sigma point at
 *  camera z <= near_z or more than 15% of the image size outside it is
 *  linearised at its mean instead: the model's Jacobian with EWA's tangent
 *  clamp, at the mean's readout pose); + dilation on
 *  the diagonal; conic = inverse (culled if the determinant is not > 0, or
 *  if the 2-D mean lies more than 1e7 px from the image origin); the
 *  footprint is the ellipse where opacity*exp(-0.5 d^T conic d) >= 1/255,
 *  binned to the 16x16 tiles whose pixel centres it reaches (64-bit pair
 *  counts). Gaussians are blended in (camera z, index) order, front to back,
 *  at pixel centres (i + 0.5, j + 0.5):
 *    alpha = min(0.99, opacity * exp(-0.5 d^T conic d)), skipped if < 1/255;
 *    a pixel stops before a Gaussian that would take T below 1e-4.
 *  Blending is float32 with a polynomial exp (relative error < 3e-7). Work
 *  goes front to back in slabs of the depth order and stops for tiles whose
 *  pixels have all stopped, so Gaussians hidden behind them are never fully
 *  preprocessed (their colour is never evaluated) and the cost follows what
 *  is visible rather than the scene size.
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
 *  1..100, a time that is not finite, a readout_duration that is not finite
 *  and >= 0), DK_ENOMEM, DK_EOVERFLOW. */
DK_API int dk_render_camera(const dk_scene *s, const dk_camera *cam, const dk_pose *cam_to_world,
                            const dk_render_config *cfg, dk_pool *pool, float *rgb,
                            float *alpha, float *depth);

/* ------------------------------------------------------------------------ */
/* Lidar rendering (per-ray evaluation of the 3-D Gaussians)                 */

/* A spinning lidar (dk_lidar_model, camera.h) placed at lidar_to_world (the
 * lidar's FLU frame: x forward, y left, z up -> world) sees the scene along
 * the rays of dk_lidar_ray: beam b, column c has the unit direction
 *   (cos el_b cos az, cos el_b sin az, sin el_b),
 *   az = azimuth_start + direction * 2π c / n_columns + azimuth_offset[b],
 * and fires at time + c / (n_columns * spin_hz) (every beam of a column at
 * once). Outputs are range images of (n_beams, n_columns) float32, row =
 * beam index (beam 0 is the lowest beam of the presets), column = firing
 * order.
 *
 * Per ray o + t d and Gaussian (μ, Σ = R S² Rᵀ) the density along the ray
 * peaks at t* = dᵀ Σ⁻¹ (μ - o) / dᵀ Σ⁻¹ d with response exp(-0.5 m²), m² the
 * Mahalanobis distance of that point (3DGUT / 3DGRT evaluation; no 2-D
 * projection, so wide rays at any elevation are exact):
 *   alpha = min(0.99, sigmoid(opacity) * exp(-0.5 m²)), skipped below 1/255
 *   (so only the ellipsoid m <= sqrt(2 ln(255 sigmoid(opacity))) <= 3.33
 *   matters), and skipped when t* lies outside [min_range, max_range] of the
 *   model (the sensor's blind zone, e.g. the ego vehicle's own Gaussians, and
 *   what lies beyond its reach);
 *   contributions are blended front to back in order of t*: Gaussians are
 *   visited by the distance of their mean, and a contribution waits in its
 *   ray's pending list (64 entries) until no later Gaussian can come before
 *   it (by a lower bound of t*), so the order is exact unless a ray has more
 *   than 64 contributions waiting at once (then the nearest is blended
 *   early);
 *   a ray stops before a Gaussian that would take T below 1e-4.
 * With weights w_i = alpha_i T_i and W = Σ w_i:
 *   alpha     1 - T (accumulated opacity)
 *   range     Σ t*_i w_i / W where alpha >= cfg->hit_threshold, else 0 (no
 *             return); metres along the ray from the lidar's origin
 *   intensity Σ I_i w_i / W where range > 0, else 0; I_i = sigmoid of the
 *             Gaussian's lidar_intensity, or cfg->default_intensity for
 *             scenes without lidar fields; in [0, 1]
 *   raydrop   1 - alpha * (1 - Σ p_i w_i / W) (1 where W = 0): the ray is
 *             lost either by missing everything (probability T) or by the
 *             surface's drop probability p_i = sigmoid(lidar_raydrop), or
 *             cfg->default_raydrop for scenes without lidar fields
 * Gaussians are binned into tiles of 32 columns x 8 beams (beams sorted by
 * elevation) by a conservative angular box of that ellipsoid (exact azimuth
 * bounds, wrapping at ±π; elevation bounds found in the beam table by binary
 * search), 64-bit pair counts, and each tile is rendered on the pool. Results
 * are bit-identical for any pool size.
 *
 * Time: tracked actors (dk_scene_set_actor_track) are placed with their pose
 * at each column's own firing time, exactly (the ray is carried into the
 * actor's frame). With cfg->sensor_motion the lidar moves during the sweep:
 * lidar_to_world is its pose at the sweep start and cfg->lidar_to_world_end
 * its pose one revolution (1 / spin_hz) later; column c uses the pose
 * interpolated at s = c / n_columns (centre lerp, orientation slerp), so
 * consecutive sweeps chain. Ranges stay distances along each column's own
 * ray; dk_lidar_points moves the points into the frame at the sweep start
 * (motion compensation). */

/** Ray-drop decision of dk_lidar_points. */
typedef enum dk_lidar_raydrop_mode {
    DK_LIDAR_RAYDROP_NONE = 0,       /* keep every return */
    DK_LIDAR_RAYDROP_THRESHOLD = 1,  /* drop where raydrop >= raydrop_threshold */
    DK_LIDAR_RAYDROP_SAMPLE = 2,     /* drop where u < raydrop, u uniform in [0, 1)
                                        from Philox keyed by raydrop_seed, one draw
                                        per ray index b * n_columns + c */
} dk_lidar_raydrop_mode;

typedef struct dk_lidar_render_config {
    /* Sweep start, seconds on the clock of the actor tracks. Default 0. */
    double time;
    /* 0: the lidar stays at lidar_to_world. 1: it moves (see above) to
       lidar_to_world_end, its pose 1 / spin_hz after the sweep start.
       Default 0. */
    int sensor_motion;
    dk_pose lidar_to_world_end;   /* default identity */
    /* Accumulated opacity a ray needs to return, in (0, 1]. Default 0.5. */
    double hit_threshold;
    /* Per-Gaussian intensity in [0, 1] and drop probability in [0, 1] used
       when the scene has no lidar fields. Defaults 0.5 (= sigmoid(0), what
       a zero lidar_intensity gives) and 0. */
    float default_intensity;
    float default_raydrop;
    /* dk_lidar_points: which returns the ray-drop model removes. Default
       DK_LIDAR_RAYDROP_THRESHOLD with threshold 0.5. */
    dk_lidar_raydrop_mode raydrop_mode;
    double raydrop_threshold;     /* in [0, 1] */
    uint64_t raydrop_seed;        /* DK_LIDAR_RAYDROP_SAMPLE; default 0 */
} dk_lidar_render_config;

DK_API void dk_lidar_render_config_init(dk_lidar_render_config *cfg);

/** Renders one sweep of lidar `m` at `lidar_to_world` (see above). Outputs
 *  are caller-allocated C-contiguous float32 arrays of n_beams * n_columns
 *  elements, row = beam; any may be NULL: range (m, 0 = no return),
 *  intensity, raydrop (probability), alpha (accumulated opacity).
 *  Gaussians with non-finite values, zero quaternions or opacity below
 *  1/255 are culled, as by dk_render_camera.
 *  `pool` may be NULL. Returns DK_EINVAL (NULL scene/model/pose/cfg, an
 *  inconsistent scene (missing arrays, only one of the lidar fields), a model
 *  that fails dk_lidar_model_validate or has a beam at |elevation| >= 89.9
 *  deg, a pose with non-finite values or a quaternion norm not within 1e-6
 *  of 1, a non-finite time, hit_threshold outside (0, 1], defaults outside
 *  [0, 1]), DK_ENOMEM, DK_EOVERFLOW. The message names the argument. */
DK_API int dk_render_lidar(const dk_scene *s, const dk_lidar_model *m,
                           const dk_pose *lidar_to_world, const dk_lidar_render_config *cfg,
                           dk_pool *pool, float *range, float *intensity, float *raydrop,
                           float *alpha);

/** Turns range images of dk_render_lidar (same m, lidar_to_world and cfg)
 *  into points, ordered by column then beam: rows of 6 float32
 *    x, y, z    metres in the lidar frame at the sweep start (with
 *               cfg->sensor_motion, each point is carried there from its
 *               column's pose: motion compensated)
 *    intensity  from `intensity` (0 when it is NULL)
 *    ring       the beam index b, as a float
 *    time       firing time of the column after the sweep start, seconds
 *  Rays whose range is 0 (no return) or not finite, and rays the ray-drop
 *  model removes (cfg->raydrop_mode; needs `raydrop` unless
 *  DK_LIDAR_RAYDROP_NONE) give no point. The result is deterministic (the
 *  sampled mode draws from Philox keyed by cfg->raydrop_seed).
 *  `points` may be NULL (count only); else it holds `capacity` rows
 *  (n_beams * n_columns always suffice). *n_points gets the count.
 *  Returns DK_EINVAL (NULL m/lidar_to_world/cfg/range/n_points, NULL raydrop
 *  with a drop mode, an invalid model, pose or config as in
 *  dk_render_lidar, raydrop_threshold outside [0, 1]), DK_ERANGE (more
 *  points than `capacity`; *n_points holds the count needed). */
DK_API int dk_lidar_points(const dk_lidar_model *m, const dk_pose *lidar_to_world,
                           const dk_lidar_render_config *cfg, const float *range,
                           const float *intensity, const float *raydrop, float *points,
                           int64_t capacity, int64_t *n_points);

/* ------------------------------------------------------------------------ */
/* Closed loop                                                               */

/* A dk_sim renders the sensors of a rig mounted on an ego vehicle that the
 * caller drives: each call takes the ego's pose (ego frame FLU -> world) and
 * a timestamp, composes sensor_to_world = ego_to_world * sensor_to_ego and
 * renders that sensor, applying the camera's rolling shutter or the lidar's
 * motion during its sweep. Other actors
 * follow their recorded tracks (dk_scene_set_actor_track) unless the caller
 * overrides them (dk_sim_set_actor_pose), e.g. from a traffic model.
 *
 * Example:
 *     dk_rig rig;
 *     dk_rig_nuscenes(&rig, 480, 270);
 *     dk_sim_config sc;
 *     dk_sim_config_init(&sc);
 *     sc.n_threads = 4;
 *     dk_sim *sim;
 *     if (dk_sim_create(scene, &rig, &sc, &sim)) { puts(dk_errmsg()); ... }
 *     int cam = dk_sim_find_sensor(sim, "CAM_FRONT");
 *     for (int k = 0; k < 100; k++) {
 *         double t = 0.1 * k;
 *         dk_pose ego = my_vehicle_pose(t), ego_end = my_vehicle_pose(t + 0.03);
 *         dk_sim_render_camera(sim, cam, &ego, t, &ego_end, rgb, NULL, NULL);
 *     }
 *     dk_sim_destroy(sim);
 *     dk_scene_destroy(scene);   // after the sim
 *
 * Thread safety: every dk_sim function may be called from any thread; calls on
 * one dk_sim are serialised by an internal mutex (one render or update at a
 * time), and a render uses the dk_sim's own pool. Different dk_sims may render
 * the same scene at once. The scene must not be modified (no
 * dk_scene_set_actor_track) while a dk_sim on it exists: the dk_sim keeps its
 * own copy of the actor tracks, taken at dk_sim_create. */

typedef struct dk_sim dk_sim;

typedef struct dk_sim_config {
    int n_threads;            /* render threads, caller included, 1..1024. Default 1 */
    /* Base settings of camera renders (background, near_z, sh_degree,
       projection, UT parameters, dilation, rs_iterations). The pose, time
       and rolling-shutter fields are set per render and ignored here. */
    dk_render_config render;
    /* Apply the rig's camera rolling shutter: cameras with shutter !=
       DK_SHUTTER_GLOBAL and readout_time > 0 are read out over readout_time
       seconds (the unscented transform then projects every Gaussian). 0
       renders every camera with a global shutter at the timestamp. Default 1. */
    int rolling_shutter;
    /* Base settings of lidar renders and dk_sim_lidar_points (hit_threshold,
       default_intensity/raydrop, raydrop_mode/threshold/seed); time,
       sensor_motion and lidar_to_world_end are set per render. */
    dk_lidar_render_config lidar;
} dk_sim_config;

DK_API void dk_sim_config_init(dk_sim_config *cfg);

/** Creates a simulator of `rig` (copied and validated with dk_rig_validate)
 *  in `scene`, which is BORROWED: it must outlive the dk_sim and stay
 *  unmodified. The dk_sim copies the scene's actor tracks (it never writes to
 *  the scene) and starts a pool of cfg->n_threads threads. `cfg` may be NULL
 *  (defaults). Returns DK_EINVAL (NULL scene/rig/out, an inconsistent scene,
 *  an invalid rig naming the sensor, a bad config), DK_ENOMEM, DK_ESYS (the
 *  pool's threads). *out is NULL on error. */
DK_API int dk_sim_create(const dk_scene *scene, const dk_rig *rig, const dk_sim_config *cfg,
                         dk_sim **out);
/** Stops the pool and frees the dk_sim (not the scene). NULL-safe. Must not
 *  race with other calls on the same dk_sim. */
DK_API void dk_sim_destroy(dk_sim *sim);
/** The last error of a call on this dk_sim ("" when none). Valid until the
 *  next failing call on it. */
DK_API const char *dk_sim_errmsg(const dk_sim *sim);
/** The validated rig (owned by the dk_sim; read-only; lives as long as it). */
DK_API const dk_rig *dk_sim_rig(const dk_sim *sim);
/** Index of the sensor named `name` (>= 0), or DK_ENOENT listing the rig's
 *  sensors, DK_EINVAL for NULL arguments. */
DK_API int dk_sim_find_sensor(const dk_sim *sim, const char *name);

/** Renders camera `sensor` of the rig with the ego at `ego_to_world` at time
 *  `timestamp` (seconds on the clock of the scene's actor tracks; the start
 *  of the readout). The camera is at ego_to_world * sensor_to_ego; tracked
 *  actors are placed at their (possibly overridden) pose at `timestamp`.
 *  With the rig's rolling shutter in effect (see dk_sim_config), the image is
 *  read out over the sensor's readout_time in the camera's shutter order:
 *  the ego moves from ego_to_world to `ego_to_world_end` (its pose at
 *  timestamp + readout_time; NULL = the ego stands still) and actors move
 *  along their tracks during the readout. Without a rolling shutter
 *  `ego_to_world_end` is ignored (a global-shutter image at `timestamp`).
 *  The result is exactly dk_render_camera of the composed pose(s) with
 *  cfg->render plus time = timestamp (and rolling_shutter, cam_to_world_end,
 *  readout_duration = readout_time when a rolling shutter applies).
 *
 *  Outputs as dk_render_camera: rgb (H, W, 3), alpha (H, W), depth (H, W)
 *  float32 for the sensor's camera size, any may be NULL.
 *  Returns DK_ERANGE (sensor index outside the rig), DK_EINVAL (NULL sim or
 *  pose, a sensor that is not a camera, a non-finite timestamp, a pose that
 *  is not rigid: non-finite values or a quaternion whose norm is not 1
 *  within 1e-6), and dk_render_camera's errors. */
DK_API int dk_sim_render_camera(dk_sim *sim, int sensor, const dk_pose *ego_to_world,
                                double timestamp, const dk_pose *ego_to_world_end, float *rgb,
                                float *alpha, float *depth);

/** Renders one sweep of lidar `sensor` of the rig, starting at `timestamp`,
 *  with the ego at `ego_to_world`: the lidar is at ego_to_world *
 *  sensor_to_ego and, when `ego_to_world_end` (the ego's pose one revolution,
 *  1 / spin_hz, later) is given, moves with the ego during the sweep
 *  (dk_lidar_render_config.sensor_motion). Tracked actors are placed at each
 *  column's firing time (overrides included). Exactly dk_render_lidar of the
 *  composed pose(s) with cfg->lidar plus time = timestamp. Outputs: range,
 *  intensity, raydrop, alpha, each (n_beams, n_columns) float32, any may be
 *  NULL. Returns the errors of dk_sim_render_camera (DK_EINVAL for a sensor
 *  that is not a lidar) and of dk_render_lidar. */
DK_API int dk_sim_render_lidar(dk_sim *sim, int sensor, const dk_pose *ego_to_world,
                               double timestamp, const dk_pose *ego_to_world_end, float *range,
                               float *intensity, float *raydrop, float *alpha);
/** dk_lidar_points for a sweep of dk_sim_render_lidar with the same sensor,
 *  poses and timestamp: rows of x, y, z (lidar frame at the sweep start),
 *  intensity, ring, time; `points` may be NULL (count only). Same errors as
 *  dk_lidar_points plus those of the arguments above. */
DK_API int dk_sim_lidar_points(dk_sim *sim, int sensor, const dk_pose *ego_to_world,
                               double timestamp, const dk_pose *ego_to_world_end,
                               const float *range, const float *intensity, const float *raydrop,
                               float *points, int64_t capacity, int64_t *n_points);

/** Replaces the dk_sim's recorded tracks with those of a tracks JSON file
 *  (dk_scene_load_tracks_json; the scene itself is not touched) and drops
 *  every override. Returns that function's errors; on error the dk_sim is
 *  unchanged. */
DK_API int dk_sim_load_tracks_json(dk_sim *sim, const char *path);

/** Closed-loop override of actor `actor_id` (a tracked actor of the scene):
 *  from `timestamp` on the actor stands at `actor_to_world` (a rigid pose,
 *  normalised on storage) until a later override. Renders at times before
 *  `timestamp` see the track as it was: the recorded track, as modified by
 *  earlier overrides. Concretely the dk_sim's copy of the track keeps its
 *  keyframes before `timestamp`, gains one holding the old pose at the
 *  largest double below `timestamp`, and ends with the new pose at
 *  `timestamp` (held afterwards); keyframes at or after `timestamp`
 *  (recorded ones included) are dropped. Calling it every simulation step
 *  with increasing timestamps drives the actor step by step.
 *  Returns DK_EINVAL (NULL arguments, non-finite timestamp, a non-rigid
 *  pose), DK_ENOENT (the scene has no track for actor_id: only tracked
 *  actors' Gaussians are stored in an actor frame), DK_ENOMEM. */
DK_API int dk_sim_set_actor_pose(dk_sim *sim, int32_t actor_id, double timestamp,
                                 const dk_pose *actor_to_world);
/** Restores actor `actor_id`'s recorded track (drops its overrides), or
 *  every actor's when actor_id < 0. Returns DK_ENOENT for an actor without
 *  overrides, DK_EINVAL for NULL, DK_ENOMEM. */
DK_API int dk_sim_clear_actor_pose(dk_sim *sim, int32_t actor_id);
/** Actor `actor_id`'s pose at time t as the dk_sim renders it (overrides
 *  included). DK_ENOENT if it has no track, DK_EINVAL for NULL arguments or
 *  non-finite t. */
DK_API int dk_sim_actor_pose(dk_sim *sim, int32_t actor_id, double t, dk_pose *out);

#ifdef __cplusplus
}
#endif

#endif /* DRIVEKIT_SIM_H */
