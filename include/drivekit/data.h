/*
 * drivekit data: training-data input for multi-camera models.
 *
 * This header has the nuScenes reader: the 13 tables of a nuScenes v1.0
 * dataset (the real one or the sample drive `drivekit world generate`
 * writes) resolved once into per-sample records: the six cameras (file,
 * video frame, intrinsics, sensor2ego, ego2global, lidar2img), LIDAR_TOP and
 * the 3-D boxes of the sample in the lidar frame, with classes and
 * velocities.
 *
 * Example:
 *     dk_nusc *db;
 *     if (dk_nusc_open("data/nuscenes", NULL, &db)) { puts(dk_errmsg()); ... }
 *     dk_nusc_sample s;
 *     dk_nusc_get_sample(db, 0, &s);
 *     printf("%s %s\n", s.token, s.cams[0].filename);   // samples/CAM_FRONT/...
 *     const dk_nusc_box *boxes;
 *     int64_t n = dk_nusc_get_boxes(db, 0, &boxes);
 *     dk_nusc_close(db);
 *
 * Frames and units (nuScenes conventions): poses map the sensor frame to the
 * ego frame (sensor2ego, calibrated_sensor) and the ego frame to the global
 * frame (ego2global, ego_pose at the sensor's timestamp); metres, seconds,
 * timestamps in microseconds. Camera frames are OpenCV axes (x right, y down,
 * z forward), the lidar and ego frames FLU. Matrices are row-major 4x4.
 *
 * Thread safety: a dk_nusc is immutable after dk_nusc_open; every query may
 * run concurrently. Pointers it hands out stay valid until dk_nusc_close.
 */
#ifndef DRIVEKIT_DATA_H
#define DRIVEKIT_DATA_H

#include "drivekit/camera.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* nuScenes reader                                                           */

typedef struct dk_nusc dk_nusc;
typedef struct dk_group dk_group;     /* a sample format, see below */
typedef struct dk_sample dk_sample;   /* a sample's values, see below */

/** Cameras of a sample, in the order mmdetection3d and StreamPETR use. */
#define DK_NUSC_NUM_CAMS 6
/** The 10 detection classes of the nuScenes detection benchmark, in
 *  mmdetection3d's order; dk_nusc_box.label indexes this list. */
#define DK_NUSC_NUM_CLASSES 10

/** "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK",
 *  "CAM_BACK_LEFT", "CAM_BACK_RIGHT" for i = 0..5, else NULL. */
DK_API const char *dk_nusc_camera_name(int i);
/** "car", "truck", "construction_vehicle", "bus", "trailer", "barrier",
 *  "motorcycle", "bicycle", "pedestrian", "traffic_cone" for 0..9, else NULL. */
DK_API const char *dk_nusc_class_name(int label);
/** Detection class of a nuScenes category name ("vehicle.car" -> 0,
 *  "human.pedestrian.adult" -> 8, "movable_object.trafficcone" -> 9, ... as
 *  mmdetection3d's NameMapping), or -1 for categories outside the 10. */
DK_API int dk_nusc_class_of_category(const char *category);

typedef struct dk_nusc_config {
    /* Table folder under the root, e.g. "v1.0-trainval". NULL (default): the
       only folder named v1.0-* (an error when there are several). */
    const char *version;
} dk_nusc_config;

DK_API void dk_nusc_config_init(dk_nusc_config *cfg);

/** Reads the tables ROOT/<version>/<table>.json (attribute, calibrated_sensor, category,
 *  ego_pose, instance, log, map, sample, sample_annotation, sample_data,
 *  scene, sensor, visibility; map, log and attribute are checked for syntax
 *  only) and resolves every sample. Samples are numbered scene by scene (in
 *  scene.json's order), each scene's samples in time order along its
 *  first_sample_token / next chain, so samples i and i + 1 of one scene are
 *  consecutive key frames.
 *  Returns DK_EINVAL (NULL arguments), DK_ENOENT (no such root, version
 *  folder or table; several v1.0-* folders), DK_EIO, DK_ENOMEM,
 *  DK_EINVALIDDATA for malformed tables, naming the table file, the row and
 *  the field: "sample_data.json: [17].calibrated_sensor_token: no
 *  calibrated_sensor with token 6fce...", "ego_pose.json: [3].rotation: not
 *  a unit quaternion", a scene chain that loops or leaves its scene, a key
 *  frame without one of the six cameras or LIDAR_TOP ("sample 3f2c...: no
 *  CAM_BACK key frame"). Files the rows point to (images, point clouds) are
 *  not opened here. *out is NULL on error. */
DK_API int dk_nusc_open(const char *root, const dk_nusc_config *cfg, dk_nusc **out);
/** NULL-safe. */
DK_API void dk_nusc_close(dk_nusc *db);

/** Root folder as given, and the table folder's name. */
DK_API const char *dk_nusc_root(const dk_nusc *db);
DK_API const char *dk_nusc_version(const dk_nusc *db);
DK_API int64_t dk_nusc_num_samples(const dk_nusc *db);
DK_API int dk_nusc_num_scenes(const dk_nusc *db);

typedef struct dk_nusc_scene {
    const char *token, *name;
    int64_t first_sample;     /* index of its first sample */
    int64_t n_samples;
} dk_nusc_scene;

/** Scene i. DK_ERANGE outside [0, dk_nusc_num_scenes). */
DK_API int dk_nusc_get_scene(const dk_nusc *db, int i, dk_nusc_scene *out);

typedef struct dk_nusc_cam {
    const char *channel;      /* "CAM_FRONT", ... */
    const char *token;        /* sample_data token */
    const char *filename;     /* relative to the root: "samples/CAM_FRONT/....jpg" */
    /* The camera's video, relative to the root ("video/<scene name>/<channel>.mp4",
       the layout drivekit's writer uses), or NULL when that file does not
       exist; video_frame is then -1. Otherwise video_frame is this key frame's
       index among all of the scene's frames of this channel (key frames and
       sweeps) in time order, which is its frame index in the video. */
    const char *video;
    int64_t video_frame;
    int width, height;        /* as the table says (0 when absent) */
    int64_t timestamp;        /* microseconds */
    double intrinsic[9];      /* K, row-major 3x3 */
    dk_pose sensor2ego;       /* camera (OpenCV axes) -> ego at timestamp */
    dk_pose ego2global;       /* ego -> global at timestamp */
    /* LIDAR_TOP frame of the sample (at the lidar's timestamp) -> this camera
       (at the camera's timestamp), through the global frame:
       lidar2cam = sensor2ego^-1 * ego2global(cam)^-1 * ego2global(lidar) * lidar2ego;
       lidar2img = [K 0; 0 1] * lidar2cam (divide x and y by z for pixels). */
    double lidar2cam[16];
    double lidar2img[16];
} dk_nusc_cam;

typedef struct dk_nusc_sample {
    const char *token;
    const char *scene_token;
    int scene;                /* index for dk_nusc_get_scene */
    int64_t index_in_scene;   /* 0 for a scene's first sample */
    int64_t prev, next;       /* neighbouring samples of the scene, or -1 */
    int64_t timestamp;        /* microseconds (the sample's) */
    dk_nusc_cam cams[DK_NUSC_NUM_CAMS];
    /* LIDAR_TOP key frame. */
    const char *lidar_token;
    const char *lidar_filename;   /* relative to the root: samples/LIDAR_TOP/....pcd.bin */
    int64_t lidar_timestamp;
    dk_pose lidar2ego, ego2global;  /* ego2global at the lidar's timestamp */
    int64_t n_boxes;
} dk_nusc_sample;

/** Fills *out with sample i (strings and poses point into db). DK_ERANGE
 *  outside [0, dk_nusc_num_samples), DK_EINVAL for NULL. */
DK_API int dk_nusc_get_sample(const dk_nusc *db, int64_t i, dk_nusc_sample *out);
/** Index of the sample with this token, or -1. */
DK_API int64_t dk_nusc_find_sample(const dk_nusc *db, const char *token);

/** A 3-D box of a sample in its LIDAR_TOP frame. */
typedef struct dk_nusc_box {
    float center[3];          /* box centre (the middle of its height), metres */
    float size[3];            /* l (along the heading), w, h: nuScenes' size is (w, l, h) */
    float yaw;                /* heading about the lidar z axis from the lidar x axis, radians */
    float velocity[2];        /* vx, vy in the lidar frame, m/s; 0 when unknown (an
                                 annotation with neither neighbour within 1.5 s) */
    int32_t label;            /* detection class 0..9, or -1 (category outside them) */
    int32_t num_lidar_pts;
    int32_t num_radar_pts;
    int32_t visibility;       /* visibility level 1..4 (0-40% .. 80-100%), 0 unknown */
    int32_t instance;         /* index of the instance (track) in instance.json order */
    const char *token;        /* sample_annotation token */
    const char *category;     /* "vehicle.car", ... */
} dk_nusc_box;

/** The boxes of sample i (in sample_annotation.json order) and their count,
 *  or a negative status (DK_ERANGE, DK_EINVAL). */
DK_API int64_t dk_nusc_get_boxes(const dk_nusc *db, int64_t i, const dk_nusc_box **boxes);

/** Reads sample i's LIDAR_TOP point cloud: a .pcd.bin of float32 records of
 *  `dims` values (nuScenes: 5 = x, y, z, intensity, ring index), in the lidar
 *  frame. *points is dk_malloc'd (free with dk_free), *n_points rows of dims
 *  floats. Returns DK_ERANGE, DK_EINVAL (dims outside 3..16), DK_ENOENT /
 *  DK_EIO naming the sample token and file, DK_EINVALIDDATA when the file
 *  size is not a multiple of 4 * dims bytes or a coordinate is not finite. */
DK_API int dk_nusc_load_points(const dk_nusc *db, int64_t i, int dims, float **points,
                               int64_t *n_points);

/* ------------------------------------------------------------------------ */
/* nuScenes samples as pipeline input                                        */

/* The format dk_nusc_source_format gives (the input of a pipeline; matrices
 * row-major, float32; timestamps in seconds):
 *   token, scene_token            string
 *   index_in_scene                int64 rank 0
 *   timestamp                     float64 rank 0
 *   lidar2ego, ego2global         float32 (4, 4)   (ego2global at the lidar time)
 *   cams[6]                       in dk_nusc_camera_name order, each:
 *     channel, filename           string (filename joined to the root)
 *     video                       string (joined to the root; "" without video)
 *     video_frame                 int64 rank 0 (-1 without video)
 *     timestamp                   float64 rank 0
 *     intrinsic                   float32 (3, 3)
 *     cam2ego, ego2global         float32 (4, 4)
 *     lidar2cam, lidar2img        float32 (4, 4)
 *   gt_bboxes_3d                  float32 (N, 9): x, y, z (centre), l, w, h, yaw,
 *                                 vx, vy in the lidar frame (dk_nusc_box)
 *   gt_labels_3d                  int32 (N), -1 outside the 10 classes
 *   gt_num_lidar_pts              int32 (N)
 *   gt_visibility                 int32 (N)
 *   points                        float32 (M, 5) x, y, z, intensity, ring (only
 *                                 with DK_NUSC_SOURCE_POINTS) */

typedef struct dk_nusc_source dk_nusc_source;

#define DK_NUSC_SOURCE_POINTS 0x1u   /* read LIDAR_TOP points into `points` */

/** A reader of samples of `db` (borrowed: it must outlive the source) in the
 *  format above. DK_EINVAL, DK_ENOMEM. */
DK_API int dk_nusc_source_create(const dk_nusc *db, unsigned flags, dk_nusc_source **out);
DK_API void dk_nusc_source_destroy(dk_nusc_source *s);
DK_API const dk_group *dk_nusc_source_format(const dk_nusc_source *s);
/** Fills x (any previous values are released; it is (re)initialised for the
 *  format) with sample i and sets x->index = i. Only the points file is
 *  read (with DK_NUSC_SOURCE_POINTS); images are read by the image steps.
 *  Errors as dk_nusc_get_sample / dk_nusc_load_points (naming the sample
 *  token and file). Thread-safe. */
DK_API int dk_nusc_source_read(const dk_nusc_source *s, int64_t i, dk_sample *x);

/* ------------------------------------------------------------------------ */
/* Samplers                                                                  */

/* A sampler hands out the dataset indices of each batch of one rank.
 *   SHUFFLED (like torch's DistributedSampler): each epoch a permutation of
 *   0..n-1 (Philox keyed by seed and epoch; identity without shuffling) is
 *   cut into world_size strided shards (rank r takes positions r,
 *   r + world_size, ...; the permutation is padded by repeating its start so
 *   every rank gets the same count), then into batches; a short last batch
 *   is dropped with drop_last. The epoch ends with DK_EOF.
 *   SEQUENCE (as StreamPETR trains): each of the batch_size slots of a rank
 *   walks whole scenes in order, so slot k of consecutive batches holds
 *   consecutive samples of one scene; when a slot finishes a scene it takes
 *   the next scene of a queue made of shuffled scene orders (Philox keyed by
 *   seed and a cycle number), passing over scenes another slot of any rank
 *   is walking (every rank computes all slots, so none coordinates).
 *   Never ends; `epoch` is the cycle of the queue position. */

typedef struct dk_sampler dk_sampler;

typedef enum dk_sampler_kind { DK_SAMPLER_SHUFFLED = 0, DK_SAMPLER_SEQUENCE = 1 } dk_sampler_kind;

typedef struct dk_sampler_config {
    dk_sampler_kind kind;     /* default SHUFFLED */
    int64_t n;                /* dataset size (SHUFFLED) */
    /* SEQUENCE: samples of scene k are first[k] .. first[k] + length[k] - 1. */
    int n_scenes;
    const int64_t *scene_first, *scene_length;
    int batch_size;           /* per rank, >= 1; default 1 */
    int rank, world_size;     /* default 0, 1 */
    int shuffle;              /* default 1 */
    int drop_last;            /* default 0 */
    uint64_t seed;            /* default 0 */
} dk_sampler_config;

DK_API void dk_sampler_config_init(dk_sampler_config *cfg);
/** DK_EINVAL naming the field (rank outside [0, world_size), empty dataset,
 *  fewer scenes than batch_size * world_size for SEQUENCE, ...), DK_ENOMEM. */
DK_API int dk_sampler_create(const dk_sampler_config *cfg, dk_sampler **out);
DK_API void dk_sampler_destroy(dk_sampler *s);
/** Writes the next batch's indices (at most batch_size) and returns their
 *  count; *epoch (may be NULL) receives the epoch they belong to. SHUFFLED
 *  returns DK_EOF once at the end of each epoch, then continues with the next
 *  epoch. */
DK_API int dk_sampler_next(dk_sampler *s, int64_t *indices, int *epoch);
/** Batches per epoch (SHUFFLED), or -1 (SEQUENCE). */
DK_API int64_t dk_sampler_batches_per_epoch(const dk_sampler *s);
/** Starts epoch `epoch` from its beginning (SHUFFLED), or cycle `epoch` (SEQUENCE). */
DK_API int dk_sampler_set_epoch(dk_sampler *s, int epoch);

/* ------------------------------------------------------------------------ */
/* Sample data groups (formats) and samples (values)                         */

/* A sample's FORMAT is a tree, dk_group: ordered children that are leaves (a
 * tensor of one dtype and rank, or a string) or groups; an ARRAY is a group
 * whose children are groups named "0".."n-1" with one format (the cameras
 * of a sample). Nodes are addressed by integer field ids, unique in their
 * tree (the root is DK_GROUP_ROOT) and kept by dk_group_clone. Ids of removed
 * nodes are not reused.
 *
 * A sample's VALUES (dk_sample) are a flat array indexed by field id, so code
 * that resolved its fields once (a step, when its pipeline is built) reaches
 * them in O(1). Tensor leaves hold dk_tensors; string leaves hold 1-D uint8
 * tensors of the bytes (no terminating NUL). Groups hold nothing.
 *
 * Names: [A-Za-z_][A-Za-z0-9_]*, unique among siblings (array elements are
 * "0".."n-1"). Paths: names joined by '.', array elements as "[i]" or ".i":
 * "cams[2].image" == "cams.2.image".
 *
 * Thread safety: a dk_group is not thread-safe to modify; concurrent reads
 * are fine. dk_sample is owned by one thread at a time. */

#define DK_GROUP_ROOT 0
#define DK_FIELD_NAME_MAX 64

typedef enum dk_field_kind {
    DK_FIELD_TENSOR = 1,
    DK_FIELD_STRING = 2,
    DK_FIELD_GROUP = 3,
    DK_FIELD_ARRAY = 4,
} dk_field_kind;

typedef struct dk_group dk_group;

typedef struct dk_field_info {
    dk_field_kind kind;
    const char *name;      /* "" for the root; valid until the node is removed */
    int parent;            /* -1 for the root */
    dk_dtype dtype;        /* tensors; DK_U8 for strings */
    int ndim;              /* tensors; 1 for strings */
    int n_children;        /* groups and arrays */
} dk_field_info;

/** An empty root group. DK_EINVAL, DK_ENOMEM. */
DK_API int dk_group_create(dk_group **out);
/** NULL-safe. */
DK_API void dk_group_destroy(dk_group *g);
/** A deep copy with the same ids. */
DK_API int dk_group_clone(const dk_group *g, dk_group **out);

/** Add a child to group/array `parent` and return its id (>= 0), or
 *  DK_EINVAL (bad parent, name, dtype or ndim outside 0..DK_MAX_DIMS; adding
 *  named children to an array), DK_ESTATE (a sibling has that name),
 *  DK_ENOMEM. Messages name the path. */
DK_API int dk_group_add_tensor(dk_group *g, int parent, const char *name, dk_dtype dtype, int ndim);
DK_API int dk_group_add_string(dk_group *g, int parent, const char *name);
DK_API int dk_group_add_group(dk_group *g, int parent, const char *name);
/** An array of n >= 1 elements, each a copy of the subtree `element` of
 *  `src` (a group node; src may be g itself when element is not inside
 *  `parent`'s path). Returns the array's id; element i is
 *  dk_group_child(g, array, "i"). */
DK_API int dk_group_add_array(dk_group *g, int parent, const char *name, const dk_group *src,
                              int element, int n);
/** Removes a node and its subtree (not the root). DK_EINVAL, DK_ENOENT. */
DK_API int dk_group_remove(dk_group *g, int id);

/** Number of ids ever assigned (ids are < this). */
DK_API int dk_group_id_limit(const dk_group *g);
/** Info of a live node: DK_ENOENT for a removed or unknown id. */
DK_API int dk_group_info(const dk_group *g, int id, dk_field_info *out);
/** Child i (in order) of a group/array, or DK_ERANGE / DK_ENOENT. */
DK_API int dk_group_child_at(const dk_group *g, int id, int i);
/** Child named `name`, or DK_ENOENT. */
DK_API int dk_group_child(const dk_group *g, int id, const char *name);
/** The node at `path` below `from`, or DK_ENOENT naming the first missing
 *  part, DK_EINVAL for a malformed path. */
DK_API int dk_group_find(const dk_group *g, int from, const char *path);
/** Every node named `name` in the subtree of `from` (from itself excluded),
 *  depth-first in child order; writes up to `cap` ids, returns the count. */
DK_API int dk_group_find_all(const dk_group *g, int from, const char *name, int *ids, int cap);
/** Leaves (tensors and strings) of the subtree of `from` in depth-first
 *  child order: the flattening order. Writes up to cap ids, returns the count. */
DK_API int dk_group_leaves(const dk_group *g, int from, int *ids, int cap);
/** "cams[2].image". Returns the length, or DK_ENOENT; truncates to cap. */
DK_API int dk_group_path(const dk_group *g, int id, char *buf, size_t cap);
/** 1 when the subtrees have the same kinds, dtypes and ranks and their
 *  descendants the same names, in the same order (ids and the two top nodes'
 *  own names may differ: array elements compare equal), else 0. */
DK_API int dk_group_same_format(const dk_group *a, int ida, const dk_group *b, int idb);
/** Writes the tree as indented text ("cams[6]\n  image uint8[3]\n...") into a
 *  dk_malloc'd string. */
DK_API int dk_group_describe(const dk_group *g, char **out);

/** Values of one sample for a format with id limit n. */
typedef struct dk_sample {
    int n;                 /* id limit of the format the values follow */
    dk_tensor *values;     /* n entries, by field id; empty (data NULL, ndim 0,
                              dtype invalid) where unset or not a leaf */
    int64_t index;         /* dataset index of the sample */
    int epoch;
} dk_sample;

/** Allocates n empty values. DK_EINVAL, DK_ENOMEM. */
DK_API int dk_sample_init(dk_sample *x, int n);
/** Releases every value and the array. NULL-safe. */
DK_API void dk_sample_free(dk_sample *x);
/** Grows the value array to n entries (new ones empty). */
DK_API int dk_sample_resize(dk_sample *x, int n);
/** Replaces value `id` with `t` (the sample takes t's reference: do not
 *  release t afterwards). DK_ERANGE for a bad id. */
DK_API int dk_sample_set(dk_sample *x, int id, dk_tensor *t);
/** Copies a string into a new 1-D uint8 value. */
DK_API int dk_sample_set_string(dk_sample *x, int id, const char *s);
/** Copies `nbytes` of C-contiguous data of the given shape into a new value. */
DK_API int dk_sample_set_copy(dk_sample *x, int id, dk_dtype dtype, int ndim,
                              const int64_t *shape, const void *data);
/** Checks that every leaf of `fmt` has a value of its dtype and rank.
 *  DK_EINVALIDDATA naming the path ("cams[3].image: uint8 rank 3 expected,
 *  got float32 rank 2"; "lidar2img: no value"). */
DK_API int dk_sample_check(const dk_sample *x, const dk_group *fmt);

/* ------------------------------------------------------------------------ */
/* Pipelines and steps                                                       */

/* A pipeline is a plan built once: steps are added in order, and each is
 * BOUND when added: it resolves its fields by name in the current format
 * (all occurrences in the subtree it applies to), checks their dtypes and
 * ranks, and edits the format (adds or removes fields); errors then name the
 * step and the field. Running a sample executes the bound steps; nothing is
 * looked up by name at run time.
 *
 * Randomness: each step draws from a Philox stream keyed by (seed, epoch,
 * sample index, step index, element), so a sample's output is the same for
 * any thread count and order. By default a step makes ONE draw per sample and
 * applies it to every field it matched (all cameras flip together); wrapped
 * with dk_step_per_element it runs once per element of an array (each camera
 * its own draw).
 *
 * Image steps (decode, affine, photometric, normalize, pad, layout) do not
 * touch pixels when they run: they extend a per-image plan, and every run of
 * consecutive image steps ends in ONE fused pass that decodes the source (a
 * JPEG at the smallest DCT scale that covers the output, or a video frame)
 * and writes each output pixel once (warp, photometric, normalize, pad,
 * layout and dtype). Geometry that depends on the image (intrinsics,
 * lidar2img, 2-D points) is updated by the step that changes it.
 *
 * Thread safety: building is single-threaded; dk_pipeline_run may run on
 * several samples concurrently once the pipeline is built. */

typedef struct dk_step dk_step;
typedef struct dk_pipeline dk_pipeline;

/** Frees a step that was not handed to a pipeline. NULL-safe. */
DK_API void dk_step_destroy(dk_step *s);
/** The step's kind ("affine", "normalize", ...). */
DK_API const char *dk_step_name(const dk_step *s);
/** Wraps `inner` (taking ownership, also on error) so it runs once per
 *  element of every array named `array_name` in its subtree, bound to each
 *  element's subtree, with an independent draw per element. DK_EINVAL,
 *  DK_ENOMEM. */
DK_API int dk_step_per_element(dk_step *inner, const char *array_name, dk_step **out);
/** Restricts `inner` (taking ownership) to the subtree at `path`. */
DK_API int dk_step_at_path(dk_step *inner, const char *path, dk_step **out);

typedef struct dk_pipeline_config {
    uint64_t seed;       /* default 0 */
} dk_pipeline_config;

DK_API void dk_pipeline_config_init(dk_pipeline_config *cfg);
/** A pipeline whose input samples follow `input_format` (copied). */
DK_API int dk_pipeline_create(const dk_group *input_format, const dk_pipeline_config *cfg,
                              dk_pipeline **out);
DK_API void dk_pipeline_destroy(dk_pipeline *p);
/** Binds `step` to the current format and appends it; the pipeline owns the
 *  step from now on (also on error, when it is destroyed). Errors from the
 *  binding name the step: "dk_pipeline_add(): step 3 (affine): cams[0].image:
 *  no such field" (DK_ENOENT), "...: lidar2img: float32 rank 3 expected, got
 *  float64 rank 2" (DK_EINVALIDDATA). The pipeline is unchanged on error. */
DK_API int dk_pipeline_add(dk_pipeline *p, dk_step *step);
/** The input format, and the output format after the steps added so far. */
DK_API const dk_group *dk_pipeline_input_format(const dk_pipeline *p);
DK_API const dk_group *dk_pipeline_format(const dk_pipeline *p);
DK_API int dk_pipeline_num_steps(const dk_pipeline *p);
/** Runs every step on x (whose values follow the input format, with
 *  x->index and x->epoch set); on success x follows the output format.
 *  On error x is left in an unspecified but freeable state; the message
 *  names the step, the field and `what` (e.g. the sample token; may be NULL).
 *  Thread-safe for distinct samples. */
DK_API int dk_pipeline_run(const dk_pipeline *p, dk_sample *x, const char *what);
/** Accumulated wall time (seconds, summed over threads) and calls of step i
 *  since creation or the last reset. Image steps only plan, so their pixel
 *  work shows in dk_pipeline_fused_stats. DK_ERANGE for a bad index. */
DK_API int dk_pipeline_step_stats(const dk_pipeline *p, int i, double *seconds, int64_t *calls);
/** The same for the fused image passes (decode + one pass per image). */
DK_API void dk_pipeline_fused_stats(const dk_pipeline *p, double *seconds, int64_t *calls);
/** Step i's kind name, or NULL. */
DK_API const char *dk_pipeline_step_name(const dk_pipeline *p, int i);
DK_API void dk_pipeline_reset_stats(dk_pipeline *p);

/* ------------------------------------------------------------------------ */
/* Loader: sampler + source + pipeline on a pool, batches in one buffer      */

/* dk_loader runs the pipeline on the samples of each batch the sampler
 * hands out, on a dk_pool, keeping up to `prefetch` batches in flight, and
 * assembles each batch in ONE contiguous buffer (64-byte aligned fields,
 * ready for a single pinned host-to-device copy).
 *
 * Collation: leaves are grouped by their path with array indices removed
 * ("cams[3].image" -> "cams.image"); a group's values are stacked to
 * (B, n_elements, ...) (or (B, ...) outside arrays) when every value has
 * the same shape, else (per-sample variable length, e.g. boxes) the values
 * are concatenated along their first dimension into a RAGGED field with
 * per-sample sizes. Strings are ragged uint8.
 *
 * Bad samples: with DK_LOADER_RAISE (default) dk_loader_next fails with the
 * sample's message (naming its token and file); with DK_LOADER_SKIP the
 * sample is left out of its batch (which gets smaller), counted in
 * dk_loader_stats, and its message kept as the last skipped error. */

typedef struct dk_loader dk_loader;

/** Reads dataset sample `index` into x (dk_sample_init'ed by the callee);
 *  returns a status. `what` receives a name for messages (e.g. the token,
 *  copied; may be left empty). */
typedef int (*dk_loader_read_fn)(void *user, int64_t index, dk_sample *x, char *what,
                                 size_t what_cap);

typedef enum dk_loader_policy { DK_LOADER_RAISE = 0, DK_LOADER_SKIP = 1 } dk_loader_policy;

typedef struct dk_loader_config {
    dk_loader_read_fn read;   /* required */
    void *read_user;
    const dk_pipeline *pipeline;   /* required; borrowed */
    dk_sampler *sampler;      /* required; borrowed, only used by dk_loader_next */
    dk_pool *pool;            /* NULL: everything runs in dk_loader_next */
    int prefetch;             /* batches in flight, >= 1; default 2 */
    dk_loader_policy policy;  /* default RAISE */
} dk_loader_config;

DK_API void dk_loader_config_init(dk_loader_config *cfg);
DK_API int dk_loader_create(const dk_loader_config *cfg, dk_loader **out);
/** Waits for batches in flight, then frees. NULL-safe. */
DK_API void dk_loader_destroy(dk_loader *l);

typedef struct dk_batch_field {
    char name[256];            /* "cams.image", "gt_bboxes_3d", ... */
    int ragged;
    dk_field_kind kind;        /* DK_FIELD_TENSOR or DK_FIELD_STRING */
    dk_tensor data;            /* stacked: (B[, n_elements], ...); ragged: (sum N_i, ...)
                                  or, under arrays, (sum over samples and elements, ...) */
    dk_tensor sizes;           /* ragged: int64 (B) or (B, n_elements); else empty */
} dk_batch_field;

typedef struct dk_batch {
    int n_samples;
    int64_t *indices;          /* n_samples dataset indices */
    int epoch;
    int n_fields;
    dk_batch_field *fields;
    dk_buffer *buffer;         /* all field data; every tensor holds a reference */
} dk_batch;

/** The next batch (its indices from the sampler). Returns DK_OK, DK_EOF at
 *  the end of a SHUFFLED epoch (the next call starts the next epoch), or the
 *  error of a bad sample under RAISE. */
DK_API int dk_loader_next(dk_loader *l, dk_batch *out);
/** Releases the batch's references. NULL-safe. */
DK_API void dk_batch_free(dk_batch *b);
/** Index of the field named `name`, or -1. */
DK_API int dk_batch_find(const dk_batch *b, const char *name);

typedef struct dk_loader_stats {
    int64_t batches, samples, skipped;
    double read_seconds, pipeline_seconds, collate_seconds, wait_seconds;
    char last_skipped[512];
} dk_loader_stats;

DK_API void dk_loader_get_stats(const dk_loader *l, dk_loader_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* DRIVEKIT_DATA_H */
