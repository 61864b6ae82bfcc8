/*
 * drivekit world: driving scenarios and everything made from them.
 *
 *   dk_scenario       the scenario model: HD map elements, actors with timed
 *                     poses, the ego trajectory, the sensor rig; JSON on disk
 *   generator         a seeded procedural town drive (multi-lane roads, an
 *                     intersection, parked and moving vehicles, pedestrians,
 *                     cyclists on kinematically plausible, collision-free paths)
 *   edits             corner cases: cut-in, hard-braking lead, jaywalker,
 *                     stopped vehicle in lane, wrong-way vehicle
 *   sensor rendering  shaded camera images and a spinning lidar, ray cast
 *   conditions        the layout condition videos driving world models consume
 *                     (HD map + 3D boxes per camera, Cosmos-Drive-Dreams rules)
 *   nuScenes writer   a dataset in the nuScenes v1.0 layout: 13 tables, JPEG
 *                     keyframes and sweeps, .pcd.bin lidar, one MP4 per camera
 *
 * Frames: world and ego frames are FLU (x forward, y left, z up), metres,
 * seconds. Camera conventions are those of camera.h.
 *
 * Example: generate 5 s of drive with a cut-in and write it as nuScenes.
 *
 *     dk_world_gen_config g; dk_world_gen_config_init(&g);
 *     g.seed = 7; g.duration = 5.0;
 *     dk_scenario *s;
 *     if (dk_world_generate(&g, &s)) fail(dk_errmsg());
 *     dk_edit_record rec;
 *     dk_world_edit(s, DK_EDIT_CUT_IN, NULL, &rec);
 *     dk_nuscenes_config n; dk_nuscenes_config_init(&n);
 *     dk_world_write_nuscenes((const dk_scenario *const[]){s}, 1, "out", &n, pool, NULL, NULL);
 *     dk_scenario_destroy(s);
 *
 * Ownership: a dk_scenario owns all of its arrays; read its fields freely,
 * change it only through the functions here. Thread safety: a scenario may be
 * read by many threads; functions that modify it need exclusive access.
 */
#ifndef DRIVEKIT_WORLD_H
#define DRIVEKIT_WORLD_H

#include "drivekit/camera.h"
#include "drivekit/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Scenario model                                                            */

/** HD-map layers. The first nine carry the Cosmos-Drive-Dreams names and
 *  geometry; DRIVABLE_AREA and SIDEWALK are surfaces used for shading. */
typedef enum dk_map_layer {
    DK_MAP_LANELINE = 0,      /* "lanelines", polyline */
    DK_MAP_LANE,              /* "lanes" (lane centre lines), polyline */
    DK_MAP_POLE,              /* "poles", polyline (bottom to top) */
    DK_MAP_ROAD_BOUNDARY,     /* "road_boundaries", polyline */
    DK_MAP_WAIT_LINE,         /* "wait_lines" (stop lines), polyline */
    DK_MAP_CROSSWALK,         /* "crosswalks", polygon */
    DK_MAP_ROAD_MARKING,      /* "road_markings", polygon */
    DK_MAP_TRAFFIC_SIGN,      /* "traffic_signs", cuboid */
    DK_MAP_TRAFFIC_LIGHT,     /* "traffic_lights", cuboid */
    DK_MAP_DRIVABLE_AREA,     /* "drivable_area", polygon */
    DK_MAP_SIDEWALK,          /* "sidewalks", polygon */
    DK_MAP_LAYER_COUNT
} dk_map_layer;

typedef enum dk_geometry {
    DK_GEOM_POLYLINE = 0,
    DK_GEOM_POLYGON,          /* closed implicitly; simple, counter-clockwise */
    DK_GEOM_CUBOID,
} dk_geometry;

/** Paint style of lane lines (ignored by other layers). */
typedef enum dk_line_style {
    DK_LINE_SOLID_WHITE = 0,
    DK_LINE_DASHED_WHITE,
    DK_LINE_SOLID_YELLOW,
    DK_LINE_DOUBLE_YELLOW,
} dk_line_style;

typedef struct dk_map_element {
    int32_t id;
    dk_map_layer layer;
    dk_geometry geometry;     /* fixed by the layer (dk_map_layer_geometry) */
    dk_line_style style;
    int32_t n_points;         /* polyline >= 2, polygon >= 3, cuboid 0 */
    double *points;           /* n_points x 3, world frame */
    /* cuboids: centre, size (length along its x, width, height), Z-Y-X Euler */
    double center[3], size[3], yaw, pitch, roll;
} dk_map_element;

/** Actor classes: the ten nuScenes detection classes. */
typedef enum dk_actor_class {
    DK_CLASS_CAR = 0,
    DK_CLASS_TRUCK,
    DK_CLASS_BUS,
    DK_CLASS_TRAILER,
    DK_CLASS_CONSTRUCTION_VEHICLE,
    DK_CLASS_PEDESTRIAN,
    DK_CLASS_MOTORCYCLE,
    DK_CLASS_BICYCLE,          /* with a rider: a cyclist */
    DK_CLASS_TRAFFIC_CONE,
    DK_CLASS_BARRIER,
    DK_CLASS_COUNT
} dk_actor_class;

/** One timed state. (x, y, z) is the box centre in the world frame; yaw the
 *  heading of the box's length axis. */
typedef struct dk_actor_state {
    double t;                 /* seconds from scenario start */
    double x, y, z, yaw;
} dk_actor_state;

typedef struct dk_actor {
    int32_t id;               /* >= 1, unique; 0 is the ego */
    dk_actor_class cls;
    double size[3];           /* length (x), width (y), height (z), metres */
    int32_t n_states;         /* >= 1, strictly increasing t */
    dk_actor_state *states;   /* the actor exists for t in [states[0].t, states[n-1].t] */
    int parked;               /* static for the whole scenario */
} dk_actor;

typedef enum dk_edit_kind {
    DK_EDIT_CUT_IN = 0,        /* a vehicle in the adjacent lane cuts in ahead of the ego */
    DK_EDIT_HARD_BRAKE,        /* the lead vehicle brakes hard (about -7 m/s²) */
    DK_EDIT_JAYWALK,           /* a pedestrian crosses the ego's road outside a crosswalk */
    DK_EDIT_STOPPED_VEHICLE,   /* a vehicle stands still in the ego's lane ahead */
    DK_EDIT_WRONG_WAY,         /* a vehicle drives against traffic in the ego's direction's lane */
    DK_EDIT_COUNT
} dk_edit_kind;

/** What an edit changed, kept in the scenario and its JSON. */
typedef struct dk_edit_record {
    dk_edit_kind kind;
    int32_t actor_id;          /* the actor added or modified */
    int added;                 /* 1 if the actor was added, 0 if modified */
    double t_start, t_end;     /* the edited interval, seconds */
    char description[256];     /* human-readable summary with numbers */
} dk_edit_record;

#define DK_EGO_BOX_OFFSET_X 1.4

typedef struct dk_scenario {
    char name[64];             /* "scene-0001" */
    char location[64];         /* nuScenes log location, e.g. "drivekit-town" */
    uint64_t seed;
    int64_t start_us;          /* absolute timestamp of t = 0, microseconds */
    double duration;           /* seconds */
    int32_t n_map;
    dk_map_element *map;
    int32_t n_actors;
    dk_actor *actors;
    /* The ego (id 0, class car). Unlike other actors its states are the ego
       frame's origin, nuScenes-style: the rear-axle centre on the ground
       (z = 0 on flat ground). Its box centre lies DK_EGO_BOX_OFFSET_X ahead of
       that origin and size[2] / 2 above it. */
    dk_actor ego;
    dk_rig rig;
    int32_t n_edits;
    dk_edit_record *edits;
} dk_scenario;

DK_API const char *dk_map_layer_name(dk_map_layer l);           /* "lanelines", ... */
DK_API int dk_map_layer_parse(const char *name, dk_map_layer *out);
DK_API dk_geometry dk_map_layer_geometry(dk_map_layer l);
DK_API const char *dk_actor_class_name(dk_actor_class c);       /* "car", "pedestrian", ... */
DK_API int dk_actor_class_parse(const char *name, dk_actor_class *out);
/** nuScenes category name: "vehicle.car", "human.pedestrian.adult", ... */
DK_API const char *dk_actor_class_category(dk_actor_class c);
DK_API const char *dk_edit_kind_name(dk_edit_kind k);           /* "cut-in", ... */
DK_API int dk_edit_kind_parse(const char *name, dk_edit_kind *out);

/** An empty scenario: no map, no actors, the ego (4.08 x 1.73 x 1.56 m) with
 *  one state at the origin at t = 0, the nuScenes rig, name "scene-0001",
 *  location "drivekit-town", seed, start_us and duration 0. DK_ENOMEM. */
DK_API int dk_scenario_create(dk_scenario **out);
DK_API void dk_scenario_destroy(dk_scenario *s);
/** Deep copy. DK_ENOMEM. */
DK_API int dk_scenario_clone(const dk_scenario *s, dk_scenario **out);
/** Appends copies (the scenario owns them) as the last element of s->map /
 *  s->actors. Map element ids and actor ids are assigned (largest + 1) when
 *  <= 0; a map element's geometry is set from its layer. DK_EINVAL for invalid
 *  geometry, sizes or states, or an id in use. */
DK_API int dk_scenario_add_map_element(dk_scenario *s, const dk_map_element *e);
DK_API int dk_scenario_add_actor(dk_scenario *s, const dk_actor *a);
/** Replaces actor `id`'s states (copied); id 0 replaces the ego's.
 *  DK_ENOENT, DK_EINVAL. */
DK_API int dk_scenario_set_actor_states(dk_scenario *s, int32_t id, const dk_actor_state *st,
                                        int32_t n);
/** Removes actor `id`. DK_ENOENT. */
DK_API int dk_scenario_remove_actor(dk_scenario *s, int32_t id);
/** Index of actor `id` in s->actors, or -1. */
DK_API int dk_scenario_find_actor(const dk_scenario *s, int32_t id);

/** Checks every invariant: finite numbers, sizes > 0, states strictly
 *  increasing in time, unique ids, geometry matching layers, a valid rig.
 *  DK_EINVALIDDATA naming the field ("actors[3].states[7].t: not increasing"). */
DK_API int dk_scenario_validate(const dk_scenario *s);

/** Interpolated state of an actor (or the ego) at time t: linear in position,
 *  shortest-arc in yaw (returned in [-pi, pi]); velocity (world frame, m/s) by
 *  the local slope (0 for a single state). Returns 1 if the actor exists at t,
 *  0 otherwise (outside its time span; the ego is not clamped here). out and
 *  vel may be NULL. */
DK_API int dk_actor_state_at(const dk_actor *a, double t, dk_actor_state *out, double vel[3]);
/** Box-to-world pose of an actor at t (centre + yaw). Same return. */
DK_API int dk_actor_pose_at(const dk_actor *a, double t, dk_pose *out);
/** Ego-to-world pose at t (the ego state is its rear-axle-centre-on-ground
 *  frame: z of the ego states is 0 on flat ground). Clamped to the ends. */
DK_API dk_pose dk_scenario_ego_pose(const dk_scenario *s, double t);

/** JSON on disk. Errors name the file and the field path:
 *  "scene.json: actors[2].size: expected array of 3 numbers". DK_ENOENT,
 *  DK_EIO, DK_EINVALIDDATA, DK_ENOMEM. */
DK_API int dk_scenario_load(const char *path, dk_scenario **out);
DK_API int dk_scenario_parse(const char *text, size_t len, const char *name, dk_scenario **out);
DK_API int dk_scenario_save(const dk_scenario *s, const char *path);

/** A pair of actors (or actor and ego, id 0) whose footprints (oriented
 *  rectangles in the xy plane) overlap at time t. */
typedef struct dk_collision {
    int32_t a, b;
    double t;
} dk_collision;

/** Checks all pairs at times 0, dt, 2dt, ... up to the duration (dt <= 0:
 *  0.1 s; at most 1e7 steps), the ego included (its box, clamped in time).
 *  Footprints that only touch do not collide. Each colliding pair is counted
 *  once, at its earliest time, with a < b; up to max_out of them are written
 *  to out (may be NULL) in time order (then by ids), their total count to
 *  *n_out. Pedestrian-pedestrian pairs are ignored (people may pass close).
 *  Returns DK_EINVAL for NULL s/n_out, DK_ENOMEM. */
DK_API int dk_scenario_collisions(const dk_scenario *s, double dt, dk_collision *out,
                                  int max_out, int *n_out);

/* ------------------------------------------------------------------------ */
/* Procedural generator                                                      */

typedef struct dk_world_gen_config {
    uint64_t seed;            /* default 1 */
    double duration;          /* seconds, default 20 */
    int64_t start_us;         /* default 1'533'151'603'547'590 (a nuScenes-like epoch) */
    int lanes_per_direction;  /* main road, default 2 (1..4) */
    int n_moving_vehicles;    /* default 14 */
    int n_parked_vehicles;    /* default 10 */
    int n_pedestrians;        /* default 12 */
    int n_cyclists;           /* default 3; counts are upper bounds: vehicles
                                 that find no room on the road are left out */
    double ego_speed;         /* cruise speed, m/s, default 9 */
    int camera_width, camera_height;  /* rig cameras, default 1600 x 900 */
} dk_world_gen_config;

DK_API void dk_world_gen_config_init(dk_world_gen_config *cfg);
/** Generates a town drive: a main road with lanes_per_direction lanes each way
 *  crossing a two-lane road at a signalised intersection, sidewalks, crosswalks,
 *  stop lines, poles, traffic lights and signs; the ego drives the main road
 *  through the intersection; moving vehicles follow lanes with car-following
 *  (no collisions), parked vehicles line the kerbs, pedestrians walk sidewalks
 *  and crosswalks, cyclists ride the outer lanes. Same seed, same scenario.
 *  Returns DK_EINVAL for out-of-range config fields (named), DK_ENOMEM. */
DK_API int dk_world_generate(const dk_world_gen_config *cfg, dk_scenario **out);

/* ------------------------------------------------------------------------ */
/* Corner-case edits                                                         */

typedef struct dk_edit_params {
    double t_trigger;         /* when the event starts, seconds; < 0 = automatic
                                 (about a third into the scenario) */
    uint64_t seed;            /* choices made by the edit; default 0 */
    double strength;          /* 0..1 scaling of severity (gap, deceleration,
                                 speed); default 0.5 */
} dk_edit_params;

DK_API void dk_edit_params_init(dk_edit_params *p);
/** Applies a corner case to `s` (params may be NULL: defaults). The edited
 *  trajectories stay kinematically plausible and free of collisions except the
 *  conflict the case is about, which is created with the ego's *unedited*
 *  motion and is a near miss (a small gap, time headway, time-to-collision or
 *  post-encroachment time; edit.c documents each case), never a collision:
 *  dk_scenario_collisions finds none involving the edited actor. Other actors
 *  the edited one would touch are removed. A record is appended to s->edits and
 *  copied to *rec (may be NULL). Returns DK_EINVAL (bad params, an invalid
 *  scenario, a duration over 3600 s), DK_ENOENT when the scenario offers no
 *  place for the case (e.g. no lane of the ego's direction next to it for a
 *  cut-in; a missing lead vehicle to brake is added instead), DK_ENOMEM. On
 *  failure `s` is unchanged. */
DK_API int dk_world_edit(dk_scenario *s, dk_edit_kind kind, const dk_edit_params *p,
                         dk_edit_record *rec);

/* ------------------------------------------------------------------------ */
/* Sensor rendering                                                          */

/** A scenario prepared for rendering (ground paint texture, static geometry).
 *  Thread-safe for rendering; the scenario must outlive it and not change. */
typedef struct dk_world_renderer dk_world_renderer;

typedef struct dk_world_renderer_config {
    double ground_texel;      /* metres per ground-paint texel, default 0.05 */
    double lidar_drop_prob;   /* random ray drop probability, default 0.05 */
    uint64_t seed;            /* noise and ray drop, default 0 */
} dk_world_renderer_config;

DK_API void dk_world_renderer_config_init(dk_world_renderer_config *cfg);
/** Prepares `s` for rendering. The ground is the plane z = 0; ground_texel is
 *  coarsened for maps larger than about 400 m square to bound memory. Returns
 *  DK_EINVAL (bad config, a rig camera failing dk_camera_validate), DK_ENOMEM. */
DK_API int dk_world_renderer_create(const dk_scenario *s, const dk_world_renderer_config *cfg,
                                    dk_world_renderer **out);
DK_API void dk_world_renderer_destroy(dk_world_renderer *r);
/** How the renderers paint an actor (renderer seed `seed`; the renderer
 *  config's seed, 0 by default): its base and secondary colours (RGB,
 *  0..255; windows, trousers, a trailer, ...) and its class's lidar
 *  reflectivity (0..255). Any output may be NULL. */
DK_API void dk_world_actor_style(dk_actor_class cls, int32_t id, uint64_t seed, float body[3],
                                 float second[3], float *reflectivity);

/** Renders rig camera `sensor` at time t (seconds; the camera's own rolling
 *  shutter is applied with its readout_time, ego and actors moving during
 *  readout). rgb: new (H, W, 3) uint8 tensor. instance (may be NULL): new
 *  (H, W) int32 tensor of the actor id seen at each pixel (0 none/ego). Returns
 *  DK_EINVAL (not a camera sensor), DK_ENOMEM. */
DK_API int dk_world_render_camera(const dk_world_renderer *r, int sensor, double t,
                                  dk_pool *pool, dk_tensor *rgb, dk_tensor *instance);

/** Lidar point fields, float32, one row per returned point. */
enum { DK_LIDAR_X = 0, DK_LIDAR_Y, DK_LIDAR_Z, DK_LIDAR_INTENSITY, DK_LIDAR_RING, DK_LIDAR_FIELDS };

/** One sweep of rig lidar `sensor` starting at t: ray cast against ground and
 *  boxes, each column at its firing time (ego and actors moving). The ego's own
 *  box neither blocks rays nor returns points (nuScenes removes them too).
 *  Returns DK_EINVAL (not a lidar sensor, non-finite t), DK_ENOMEM. Points are
 *  in the lidar frame at time t (motion compensated), (N, 5) float32 x, y, z,
 *  intensity (0..255, by material and incidence), ring (beam index). Dropped
 *  rays and misses return nothing. point_actor (may be NULL): new (N,) int32
 *  actor id hit by each point (0 for map/ground). */
DK_API int dk_world_render_lidar(const dk_world_renderer *r, int sensor, double t,
                                 dk_pool *pool, dk_tensor *points, dk_tensor *point_actor);

/* ------------------------------------------------------------------------ */
/* Condition videos for world models                                         */

typedef struct dk_conditions_config {
    int width, height;        /* output size; default 1280 x 720 */
    double fps;               /* default 30 */
    /* Camera model for all views: DK_CAM_PINHOLE keeps each rig camera's
       pinhole (rescaled to width x height); DK_CAM_FTHETA renders an f-theta
       camera of ftheta_fov_deg horizontal field of view at the rig pose. */
    dk_camera_model model;    /* default DK_CAM_PINHOLE */
    double ftheta_fov_deg;    /* default 120 */
    uint32_t layers;          /* bit mask of (1 << dk_map_layer): default the
                                 Cosmos MINIMAP_TYPES: lanelines, road_boundaries,
                                 crosswalks, road_markings, wait_lines, poles,
                                 traffic_signs, traffic_lights. DRIVABLE_AREA
                                 and SIDEWALK have no condition colour and are
                                 ignored. */
    int line_px;              /* polyline thickness, default 8 */
    int box_px;               /* box edge thickness, default 5 */
    double depth_max;         /* default 122.5 m */
    double resample;          /* lanelines and boundaries resampled every, default 0.8 m */
    int crf;                  /* x264 quality, default 18 */
} dk_conditions_config;

DK_API void dk_conditions_config_init(dk_conditions_config *cfg);

/** Renders one condition frame for rig camera `sensor` at time t: each map
 *  layer on its own canvas in its Cosmos colour with depth fade
 *  colour * 2 * (depth_max - clip(depth, 0, depth_max)) / 255, lines clipped at
 *  the camera plane (depth 0.2), polygons and cuboids as filled convex hulls,
 *  boxes as the 16-point edge polyline in class colours, all merged by
 *  per-pixel max. rgb: new (height, width, 3) uint8. DK_EINVAL, DK_ENOMEM. */
DK_API int dk_world_render_conditions(const dk_scenario *s, int sensor, double t,
                                      const dk_conditions_config *cfg, dk_tensor *rgb);

/** Writes OUT_DIR/<camera name>.mp4 (H.264, yuv420p, cfg->fps) for every rig
 *  camera over the scenario's duration, plus OUT_DIR/conditions.json (the
 *  config and frame timestamps). Returns DK_EINVAL (bad config; width and
 *  height must be even for H.264), DK_EIO (cannot write), DK_EUNSUPPORTED (no
 *  H.264 encoder in libavcodec), DK_ENOMEM. */
DK_API int dk_world_write_conditions(const dk_scenario *s, const char *out_dir,
                                     const dk_conditions_config *cfg, dk_pool *pool,
                                     dk_progress_fn progress, void *progress_user);

/* ------------------------------------------------------------------------ */
/* nuScenes-layout writer                                                    */

typedef struct dk_nuscenes_config {
    const char *version;      /* table folder name, default "v1.0-mini" */
    double keyframe_hz;       /* samples per second, default 2 */
    int jpeg_quality;         /* default 90 */
    int write_video;          /* OUT/video/<scene>/<CHANNEL>.mp4, default 1 */
    int video_crf;            /* default 23 */
    uint64_t seed;            /* token generation; the renderer of each scene is
                                 seeded with seed ^ scenario seed. Default 0 */
} dk_nuscenes_config;

DK_API void dk_nuscenes_config_init(dk_nuscenes_config *cfg);

/** Renders and writes every scenario as one nuScenes scene into out_dir:
 *  OUT/<version>/{attribute, calibrated_sensor, category, ego_pose, instance,
 *  log, map, sample, sample_annotation, sample_data, scene, sensor,
 *  visibility}.json; samples/<CHANNEL>/ keyframes (cameras JPEG at their
 *  rate's nearest frames, LIDAR_TOP .pcd.bin x,y,z,intensity,ring float32);
 *  sweeps/<CHANNEL>/ for frames between keyframes; annotations per keyframe
 *  (size w,l,h; rotation w,x,y,z; num_lidar_pts = points inside the box in the
 *  keyframe sweep; visibility from the rendered instance masks); and
 *  video/<scene>/<CHANNEL>.mp4 with every frame of that camera in order.
 *  Tokens are deterministic. DK_EIO, DK_EUNSUPPORTED, DK_EINVAL, DK_ENOMEM. */
DK_API int dk_world_write_nuscenes(const dk_scenario *const *scenes, int n_scenes,
                                   const char *out_dir, const dk_nuscenes_config *cfg,
                                   dk_pool *pool, dk_progress_fn progress,
                                   void *progress_user);

#ifdef __cplusplus
}
#endif

#endif /* DRIVEKIT_WORLD_H */
