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
 *  format, keeping x->epoch when x already held values) with sample i and
 *  sets x->index = i. Only the points file is
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
    const char *name;      /* "" for the root; valid until the group is next modified */
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
    /* Optional destinations by field id (NULL: none; n_dest entries): a step
       that makes a value of exactly dest[id]'s dtype and shape may write it
       there and set values[id] to that view instead of allocating. The
       loader uses this to assemble batches in place. Owned by the caller;
       dk_sample_init clears it, dk_sample_free leaves it alone. */
    const dk_tensor *dest;
    int n_dest;
} dk_sample;

/** Allocates n empty values. DK_EINVAL, DK_ENOMEM. */
DK_API int dk_sample_init(dk_sample *x, int n);
/** Releases every value and the array. NULL-safe. */
DK_API void dk_sample_free(dk_sample *x);
/** Grows the value array to n entries (new ones empty). */
DK_API int dk_sample_resize(dk_sample *x, int n);
/** Replaces value `id` with `t`: the sample takes t's reference and clears
 *  *t, also on error (then the reference is released). DK_ERANGE for a bad
 *  id, DK_EINVAL for NULL. */
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
 * JPEG at the cheapest DCT scale that covers the output, only the part the
 * output samples; or a video frame) and writes each output pixel once (warp,
 * photometric, normalize, pad, layout and dtype). Geometry that depends on
 * the image (intrinsics, lidar2img, 2-D points) is updated by the step that
 * changes it.
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
/* Image steps                                                               */

/* Image steps edit a per-image plan, not pixels (see "Pipelines and steps");
 * each run of consecutive image steps ends in ONE fused pass per image:
 *
 *     source   a JPEG decoded at a DCT scale n/8 (n = 1..8): among the n
 *              whose n/8 is at least the scale the warp samples at (the
 *              larger column norm of its 2x2 part; 8 for nearest sampling),
 *              the cheapest for libjpeg-turbo: 1/8, 2/8, 4/8 and 8/8 have
 *              SIMD IDCTs, 3/8 costs a little more than 4/8, and 5/8..7/8
 *              more than a full decode, so in practice the smallest of 1/8,
 *              2/8, 4/8 and 8/8 that qualifies. Only the part the output
 *              samples is decoded: the columns it needs (widened to an iMCU),
 *              rows above them skipped (still entropy-decoded), rows below
 *              them not read at all, so damage confined to those rows is not
 *              detected. Else a PNG, a video frame (RGB), or the field's
 *              current uint8 (H, W, 3) value. A downscaled decode differs from
 *              a full decode + warp by about 0.4 levels on average (a few at
 *              most): it drops the high-frequency JPEG noise the full decode
 *              keeps, and is as close to the picture before compression
 *     warp     each output pixel centre mapped back through the affine
 *              matrix, bilinear (or nearest) sampling, `fill` outside the
 *              source (OpenCV warpAffine with BORDER_CONSTANT semantics)
 *     photometric distortion, then (v - mean) / std, then padding, then the
 *              layout (HWC or CHW), channel order and dtype,
 *
 * writing every output element once. The result is that of these operations
 * done one after the other in this order, whatever the order of the steps;
 * orders that cannot be fused exactly are refused when the step runs
 * (DK_ESTATE): affine after pad, photometric after normalize, a second
 * photometric, normalize or pad in one image run.
 *
 * Conventions: images are RGB; pixel (i, j) (column i, row j) covers
 * [i, i+1) x [j, j+1), its centre is at (i + 0.5, j + 0.5); matrices are
 * row-major; uint8 intensities are 0..255 and photometric parameters use
 * those units. Every image step matches every tensor field named image_name
 * (default "image"; see dk_step_set_image_name) in its subtree and makes ONE
 * draw per sample, shared by all the images it matched (all cameras flip
 * together); wrapped in dk_step_per_element it draws once per element. Draws
 * come only from the step's Philox stream (seed, epoch, sample, step,
 * element), so they do not depend on threads or order.
 *
 * Format: the decode step declares the image uint8 rank 3 (H, W, 3); the
 * normalize step makes it float32 (unless it is float already); the layout
 * step sets its dtype. A dtype change replaces the field in the format: same
 * name and parent, a new id, last among its siblings. Output shapes are
 * (H, W, 3) (HWC) or (3, H, W) (CHW), H and W the padded size.
 *
 * Errors when a sample runs name the field path, the file (and frame) and
 * the sample (`what`): a missing file DK_ENOENT, an unreadable one DK_EIO, a
 * file that is not a JPEG or PNG or is corrupt or truncated DK_EINVALIDDATA
 * (never a grey image; for a JPEG, where the data up to the last row the
 * output needs is damaged), a CMYK JPEG DK_EUNSUPPORTED, a video frame that does not decode (the video's
 * status), an image whose value is not uint8 (H, W, 3) where pixels are
 * needed DK_EINVALIDDATA. */

/** Makes an image step match fields named `name` instead of "image". Call it
 *  before handing the step to a pipeline. DK_EINVAL for a NULL or invalid
 *  name or a step that is not an image step. */
DK_API int dk_step_set_image_name(dk_step *s, const char *name);

typedef enum dk_image_source {
    DK_IMAGE_SOURCE_AUTO = 0,   /* per sample: the video frame when the video
                                   string is non-empty and the frame >= 0,
                                   else the file */
    DK_IMAGE_SOURCE_FILE = 1,   /* JPEG or PNG file (told apart by signature) */
    DK_IMAGE_SOURCE_VIDEO = 2,  /* frame of a video; a pipeline keeps up to 32
                                   videos open, without decoded-frame cache;
                                   beyond that the least recently used are
                                   trimmed (dk_video_trim): up to 8192 of them
                                   and 64 MiB of indexes stay known, so going
                                   back to one costs no scan */
} dk_image_source;

typedef struct dk_image_decode_config {
    /* Folder relative names are joined to ("root/name"); NULL or "" (default):
       names are used as given. Absolute names are never joined. */
    const char *root;
    dk_image_source source;     /* default DK_IMAGE_SOURCE_AUTO */
    const char *image_name;     /* the image field to declare; default "image" */
    const char *file_field;     /* string; default "filename" */
    const char *video_field;    /* string; default "video" */
    const char *frame_field;    /* integer, one element; default "video_frame" */
} dk_image_decode_config;

DK_API void dk_image_decode_config_init(dk_image_decode_config *cfg);
/** Image source step. Matches every group of its subtree that has the source
 *  fields (file_field for FILE, video_field and frame_field for VIDEO, either
 *  for AUTO) and declares image_name there as uint8 rank 3 (an existing uint8
 *  rank-3 field of that name is reused). When run it only reads the image's
 *  size (the JPEG or PNG header, or the video's info) and starts the plan:
 *  identity geometry, output = source size. The pixels are decoded by the
 *  fused pass. No randomness. The strings of cfg are copied.
 *  Construction: DK_EINVAL (NULL cfg or out, a bad source or name),
 *  DK_ENOMEM. Binding: DK_ENOENT (no group with the source fields),
 *  DK_EINVALIDDATA (a source field of the wrong kind or dtype), DK_ESTATE (an
 *  image_name field that is not uint8 rank 3). Run: DK_ENOENT, DK_EIO,
 *  DK_EINVALIDDATA (not a JPEG/PNG, corrupt header, frame outside the video),
 *  the video's errors; messages name the field, file, frame and sample. */
DK_API int dk_step_image_decode(const dk_image_decode_config *cfg, dk_step **out);

/* Affine augmentation (ACCV-Lab AffineTransformer semantics). A chain of
 * operations builds a 2-D affine map T from source pixel coordinates to a
 * "viewport" that starts as the input image (W x H); scalings, rotations,
 * shears and flips act about the viewport centre (W/2, H/2). Then the
 * viewport is resized to the output (out_w x out_h) according to
 * resize_mode and anchor, giving M = R * T. Each op is applied with
 * probability prob; every op draws four uniforms whether or not it applies,
 * so later ops see the same numbers. Values are drawn uniformly in [lo, hi]. */
typedef enum dk_affine_op_kind {
    DK_AFFINE_SCALE = 1,        /* uniform scale s in [lo[0], hi[0]] (0 < lo) */
    DK_AFFINE_SCALE_XY,         /* sx in [lo[0], hi[0]], sy in [lo[1], hi[1]];
                                   a range may be negative (mirror) but not hold 0 */
    DK_AFFINE_FLIP,             /* horizontal mirror: x -> W - x */
    DK_AFFINE_ROTATE,           /* angle in degrees in [lo[0], hi[0]],
                                   positive = counter-clockwise on screen */
    DK_AFFINE_SHEAR,            /* angles ax in [lo[0], hi[0]], ay in [lo[1], hi[1]]
                                   degrees in (-90, 90): x += tan(ax) y, y += tan(ay) x */
    DK_AFFINE_TRANSLATE,        /* (tx, ty) in [lo, hi] viewport pixels */
    DK_AFFINE_SHIFT_INSIDE,     /* a random shift that keeps the viewport covered
                                   by the transformed image along `axes` (1 x, 2 y,
                                   3 both); nothing along an axis where the image
                                   is smaller than the viewport */
    DK_AFFINE_ALIGN_BORDER,     /* shift the transformed image so that its `border`
                                   lies on the viewport's */
    DK_AFFINE_RESIZE_CROP,      /* StreamPETR's ResizeCropFlipRotImage (training):
                                   r in [lo[0], hi[0]]; newW = (int)(W r), newH =
                                   (int)(H r); the image is resized to newW x newH;
                                   crop_y = (int)((1 - b) newH) - out_h with b in
                                   [lo[1], hi[1]]; crop_x = (int)(u (newW - out_w))
                                   with u in [0, 1) when newW > out_w, else 0; the
                                   viewport becomes the out_w x out_h window at
                                   (crop_x, crop_y) of the resized image */
    DK_AFFINE_RESIZE_CROP_EVAL, /* its test-time form, no randomness: r =
                                   max(out_w / W, out_h / H) (the ranges of [0]
                                   are ignored), b = (lo[1] + hi[1]) / 2, crop_x =
                                   (int)(max(0, newW - out_w) / 2) */
} dk_affine_op_kind;

typedef enum dk_border {
    DK_BORDER_TOP = 0, DK_BORDER_LEFT, DK_BORDER_BOTTOM, DK_BORDER_RIGHT
} dk_border;

typedef struct dk_affine_op {
    dk_affine_op_kind kind;
    double prob;                /* probability of applying it, [0, 1] */
    double lo[2], hi[2];        /* ranges as the kind says (lo == hi: fixed) */
    int axes;                   /* DK_AFFINE_SHIFT_INSIDE */
    dk_border border;           /* DK_AFFINE_ALIGN_BORDER */
} dk_affine_op;

/** How the viewport is resized to the output when their shapes differ. */
typedef enum dk_resize_mode {
    DK_RESIZE_STRETCH = 0,      /* scale x and y separately */
    DK_RESIZE_PAD,              /* uniform scale, the whole viewport fits (fill around) */
    DK_RESIZE_CROP,             /* uniform scale, the viewport covers the output */
} dk_resize_mode;

typedef enum dk_resize_anchor {
    DK_ANCHOR_CENTER = 0,       /* centres coincide */
    DK_ANCHOR_TOP_LEFT,         /* top-left corners coincide */
    DK_ANCHOR_BOTTOM_RIGHT,     /* bottom-right corners coincide */
} dk_resize_anchor;

#define DK_AFFINE_MAX_OPS 16

typedef struct dk_affine_config {
    /* Output size in pixels; 0 x 0 (default) keeps the viewport's size. */
    int out_w, out_h;
    dk_resize_mode resize_mode;       /* default DK_RESIZE_STRETCH */
    dk_resize_anchor anchor;          /* PAD / CROP; default DK_ANCHOR_CENTER */
    int n_ops;
    dk_affine_op ops[DK_AFFINE_MAX_OPS];
    const char *image_name;           /* default "image" */
    /* Comma-separated names of projection matrices to update: float32 or
       float64, rank >= 2, last two dims (3 or 4, C); rows 0 and 1 become
       m00 r0 + m01 r1 + m02 r2 and m10 r0 + m11 r1 + m12 r2 (row 2 is the
       homogeneous coordinate): lidar2img (4, 4), intrinsic (3, 3), ...
       NULL (default): "lidar2img,intrinsic", skipping absent ones; names
       given explicitly must exist (DK_ENOENT at binding); "" for none. */
    const char *matrix_fields;
    /* Comma-separated names of 2-D point fields: float32 or float64 (..., 2k),
       each row k (x, y) pairs (points, [x1, y1, x2, y2] boxes). Default none. */
    const char *point_fields;
    int nearest;                      /* 0 bilinear (default), 1 nearest */
    float fill[3];                    /* RGB value outside the source, 0..255 */
    /* Where the geometry fields put the first pixel's centre: 0 (default:
       OpenCV, nuScenes and mmdetection3d intrinsics) or 0.5 (drivekit's
       camera models). The image warp itself is exact either way. */
    double pixel_center;
} dk_affine_config;

/** Defaults: no ops, keep size, bilinear, fill 0, pixel_center 0. */
DK_API void dk_affine_config_init(dk_affine_config *cfg);
/** Appends an op (kind, prob, ranges; axes 3 and border BOTTOM preset; set
 *  other fields on the returned pointer). NULL when the chain is full. */
DK_API dk_affine_op *dk_affine_config_add(dk_affine_config *cfg, dk_affine_op_kind kind,
                                          double prob, double lo0, double hi0, double lo1,
                                          double hi1);
/** StreamPETR's R50 training augmentation of nuScenes images (1600 x 900):
 *  resize ratio in [0.38, 0.55], crop 704 x 256 aligned to the bottom
 *  (bot_pct_lim (0, 0)), random crop_x, horizontal flip with p = 0.5; one
 *  draw for all cameras. Equivalent to ops {RESIZE_CROP, FLIP 0.5} with out
 *  704 x 256. */
DK_API void dk_affine_config_streampetr(dk_affine_config *cfg);
/** Its evaluation counterpart: {RESIZE_CROP_EVAL} with out 704 x 256 (the
 *  whole width scaled to 704 when the aspect allows, bottom-aligned). */
DK_API void dk_affine_config_streampetr_eval(dk_affine_config *cfg);
/** Affine step. For every matched image, M is computed from the shared draw
 *  and the image's current size (so cameras of equal size get one M), the
 *  plan becomes A = M * A with output out_w x out_h. Each matrix and point
 *  field is updated with the M of its image: the first matched image inside
 *  the smallest group that holds both (e.g. cams[2].lidar2img follows
 *  cams[2].image), in the field's pixel convention (pixel_center). Geometry
 *  values are replaced by new tensors (never modified in place).
 *  Construction: DK_EINVAL (NULL arguments, out size negative or only one of
 *  them 0, too many ops, an unknown kind, prob outside [0, 1], an empty or
 *  non-finite range, a scale range holding 0, shear angles outside (-90, 90),
 *  RESIZE_CROP(_EVAL) without an output size or with b outside [0, 1), SHIFT_INSIDE
 *  or ALIGN_BORDER after a possible ROTATE or SHEAR, a bad mode, anchor,
 *  border or axes). Binding: DK_ENOENT (no image; an explicit geometry name
 *  that does not exist; a geometry field with no image in any enclosing
 *  group), DK_EINVALIDDATA (dtype or rank). Run: DK_EINVALIDDATA (a matrix
 *  whose shape is not (.., 3|4, C), points with an odd last dim, a singular
 *  M), DK_ESTATE (after a pad in the same image run). */
DK_API int dk_step_affine(const dk_affine_config *cfg, dk_step **out);

typedef struct dk_photometric_config {
    const char *image_name;          /* default "image" */
    float brightness_delta;          /* added delta in [-d, d]; default 32 */
    float contrast_lo, contrast_hi;  /* multiplier; default 0.5, 1.5 */
    float saturation_lo, saturation_hi;  /* multiplier of S; default 0.5, 1.5 */
    float hue_delta;                 /* degrees added to H, in [-d, d]; default 18 */
    float prob_brightness, prob_contrast, prob_saturation, prob_hue;  /* default 0.5 */
    float prob_swap;                 /* random channel permutation; default 0 */
} dk_photometric_config;

DK_API void dk_photometric_config_init(dk_photometric_config *cfg);
/** mmdetection's PhotoMetricDistortion (ACCV-Lab PhotoMetricDistorter), on
 *  the warped RGB value v (float, 0..255 units, no clamping in between):
 *  v += delta (prob_brightness); contrast v *= alpha (prob_contrast) either
 *  before or after the HSV part (each with probability 0.5); in HSV (H in
 *  degrees, S = (max - min) / max, V = max, OpenCV's float formulas) S *=
 *  saturation (prob_saturation) and H += hue wrapped to [0, 360)
 *  (prob_hue); back to RGB; then a uniformly random channel permutation
 *  (prob_swap). Draws, in this order, whether or not they apply: brightness
 *  (2 uniforms), contrast order (1), contrast (2), saturation (2), hue (2),
 *  swap (1 uniform + 1 permutation index).
 *  Construction: DK_EINVAL (NULL arguments, negative delta, empty or
 *  negative multiplier ranges, hue_delta outside [0, 180], probabilities
 *  outside [0, 1], non-finite values). Run: DK_ESTATE (after normalize or
 *  another photometric step in the same image run). */
DK_API int dk_step_photometric(const dk_photometric_config *cfg, dk_step **out);

/** (v - mean[c]) / std[c] per OUTPUT channel c, after the photometric
 *  distortion; to_bgr = 1 writes the channels in B, G, R order (mean and std
 *  are then in that order too; StreamPETR's R50 config: mean {103.530,
 *  116.280, 123.675}, std {57.375, 57.120, 58.395}, BGR). The image becomes
 *  float32 unless it already is a float type. No randomness.
 *  Construction: DK_EINVAL (NULL arguments, std 0 or non-finite values).
 *  Run: DK_ESTATE (a second normalize in the same image run). */
DK_API int dk_step_normalize(const float mean[3], const float std[3], int to_bgr,
                             dk_step **out);

/** Pads the (warped) image at the right and bottom with `value` (in output
 *  units: after normalisation; rounded and clamped for uint8): to the next
 *  multiple of `multiple` in both directions (width = height = 0), or to the
 *  fixed width x height (multiple = 0). No randomness.
 *  Construction: DK_EINVAL (multiple 0 without a size, both given, negative
 *  values, a non-finite value). Run: DK_EINVALIDDATA (the image is larger
 *  than the fixed size), DK_ESTATE (a second pad in the same image run). */
DK_API int dk_step_pad(int multiple, int width, int height, float value, dk_step **out);

/** Output layout and dtype: chw = 1 for (3, H, W), 0 for (H, W, 3); dtype
 *  DK_U8 (rounded half up and clamped to 0..255), DK_F32, DK_F16 (round to
 *  nearest even), or DK_DTYPE_INVALID to keep the current one.
 *  Construction: DK_EINVAL (another dtype, chw not 0 or 1, NULL out). */
DK_API int dk_step_layout(int chw, dk_dtype dtype, dk_step **out);

/* ------------------------------------------------------------------------ */
/* 3-D and annotation steps                                                  */

/* Steps over the 3-D annotations and point clouds of a sample (no image
 * stage: they run between fused image passes, on materialised values).
 * Field names are parameters; the defaults follow the standard nuScenes
 * sample format: gt_bboxes_3d float32 (N, D >= 7) = x, y, z (box centre),
 * l, w, h, yaw (heading from the lidar x axis, as dk_nusc_box) and, when D
 * >= 9, vx, vy, in the lidar frame; gt_labels_3d, gt_num_lidar_pts,
 * gt_visibility int32 (N); points float32 (M, C >= 3) x, y, z, ...;
 * lidar2img float32 (4, 4) per camera.
 *
 * Binding resolves every occurrence of each name in the step's subtree and
 * checks dtype and rank; errors name the step and the field path
 * ("dk_step_heatmap: gt_labels_3d: int32 rank 1 expected, got float32 rank
 * 1", DK_EINVALIDDATA; a required field that is absent, DK_ENOENT; an output
 * name that already exists, DK_ESTATE). Run-time errors (shapes that
 * disagree, a non-finite box) are DK_EINVALIDDATA naming the step, the field,
 * the row and the sample. Steps never modify a value in place when its
 * buffer is shared: they write new tensors.
 *
 * Per-box fields: the filters below remove rows from every per-box field at
 * once (ConditionalElementRemover semantics): fields whose first dimension
 * indexes the boxes. `fields` lists their names (all occurrences in the
 * subtree); NULL (n_fields 0) means the default set {"gt_bboxes_3d",
 * "gt_labels_3d", "gt_num_lidar_pts", "gt_num_radar_pts", "gt_visibility",
 * "gt_instance", "gt_velocity", "gt_visible"} (the last: the per-camera
 * masks of dk_step_visible_boxes, whose first dim is the boxes too), of
 * which absent ones are skipped; a name given explicitly must exist
 * (DK_ENOENT). Per-camera compacted 2-D fields (gt_bboxes_2d, ...) are not
 * per-box fields: filter the boxes before making them.
 *
 * Masks: a filter either removes rows at once (remove = 1, default) or only
 * writes its decision as a bool (N) field named `mask` (remove = 0), added as
 * a sibling of the field the decision is computed from. When `mask` names an
 * existing bool rank-1 field, the decision is ANDed with it, so several
 * filters can accumulate into one mask; with remove = 1 such a mask is used,
 * then removed from the format. dk_step_remove_masked applies a mask later.
 * remove = 0 without a mask name is DK_EINVAL. The field the decision is
 * computed from must occur once in the subtree. */

/** Global BEV augmentation of the lidar frame (mmdetection3d's
 *  GlobalRotScaleTrans followed by RandomFlip3D; ACCV-Lab's
 *  BEVBBoxesTransformer3D). One draw per sample: rotation angle a uniform in
 *  rot_range, scale s uniform in scale_range, translation t ~ N(0,
 *  translation_std) per axis, then a horizontal flip (mirror y) with
 *  probability flip_h_prob and a vertical flip (mirror x) with flip_v_prob.
 *  The augmentation of a lidar-frame point is
 *      T = F * Trans(t) * Scale(s) * Rz(a),     p' = T p,
 *  with F = diag(-1 if vertical, -1 if horizontal, 1). Applied to:
 *   - box centres: c' = T c; sizes l, w, h times s; yaw: the heading
 *     (cos yaw, sin yaw) mapped by the linear part of T and re-measured,
 *     i.e. yaw + a, then -yaw for a horizontal and pi - yaw for a vertical
 *     flip, wrapped to [-pi, pi); velocities (vx, vy) mapped by the linear
 *     part (rotated, flipped and scaled by s as mmdetection3d does; never
 *     translated);
 *   - points: x, y, z mapped by T (other columns kept);
 *   - matrices that map FROM the lidar frame (`from_lidar`, default
 *     "lidar2img", "lidar2cam", "lidar2ego"; shape (3, 4) or (4, 4)): M' = M
 *     T^-1, so a transformed point projects with the updated lidar2img to
 *     the same pixel as before (and lidar2cam gives the same camera point).
 *     lidar2ego' = lidar2ego T^-1 keeps every ego and global quantity true:
 *     the chain ego2global * lidar2ego' maps an augmented point to its
 *     original global position, which temporal models (StreamPETR's memory
 *     alignment, BEVFormer's can_bus and prev BEV) rely on; ego2global,
 *     cam2ego and the intrinsics do not involve the lidar frame and are not
 *     changed;
 *   - matrices that map TO the lidar frame (`to_lidar`, default none, e.g.
 *     "ego2lidar", (4, 4)): M' = T M;
 *   - `matrix_out` (default NULL): a float32 (4, 4) field receiving T (added
 *     at the subtree's root; when it already exists it becomes T * old, so
 *     chained augmentations compose; BEVDet's bda_mat).
 *  Boxes are float32 (N, D >= 7), points float32 (M, C >= 3), matrices
 *  float32 or float64. Every occurrence of each name in the subtree is
 *  transformed with the same draw; the boxes must occur (unless boxes is
 *  NULL), points and matrices may not. Errors at
 *  dk_step_global_transform_3d: DK_EINVAL for lo > hi, non-finite values,
 *  probabilities outside [0, 1], a scale range not inside (0, inf),
 *  negative standard deviations. Run: a non-finite box is DK_EINVALIDDATA. */
typedef struct dk_global_transform_3d_config {
    float rot_range[2];          /* radians; default {-0.3925, 0.3925} (+-22.5 deg) */
    float scale_range[2];        /* default {0.95, 1.05} */
    float translation_std[3];    /* metres; default {0, 0, 0} */
    float flip_h_prob;           /* mirror y; default 0.5 */
    float flip_v_prob;           /* mirror x; default 0.5 */
    const char *boxes;           /* default "gt_bboxes_3d"; NULL: none */
    const char *points;          /* default "points"; NULL: none */
    const char *const *from_lidar;   /* default {"lidar2img", "lidar2cam", "lidar2ego"} */
    int n_from_lidar;                /* default 3 */
    const char *const *to_lidar;     /* default NULL */
    int n_to_lidar;                  /* default 0 */
    const char *matrix_out;      /* default NULL */
} dk_global_transform_3d_config;

DK_API void dk_global_transform_3d_config_init(dk_global_transform_3d_config *cfg);
/** Strings and lists are copied. DK_EINVAL for a bad config (the message
 *  names the parameter), DK_ENOMEM. */
DK_API int dk_step_global_transform_3d(const dk_global_transform_3d_config *cfg, dk_step **out);

/** Keeps the points (rows of every `points` field, float32 (M, C >= 3))
 *  strictly inside range = {x_min, y_min, z_min, x_max, y_max, z_max}
 *  (mmdetection3d's PointsRangeFilter); the rows of `fields` (per-point
 *  fields sharing the first dim, e.g. point labels; all occurrences, each
 *  must exist) are removed with them. */
typedef struct dk_points_in_range_config {
    const char *points;          /* default "points" */
    float range[6];              /* default {-51.2, -51.2, -5, 51.2, 51.2, 3} */
    const char *const *fields;   /* default NULL */
    int n_fields;
} dk_points_in_range_config;

DK_API void dk_points_in_range_config_init(dk_points_in_range_config *cfg);
/** DK_EINVAL (min > max, non-finite range), DK_ENOMEM. */
DK_API int dk_step_points_in_range(const dk_points_in_range_config *cfg, dk_step **out);

/** Keeps the boxes whose centre lies strictly inside the range in BEV (x, y;
 *  mmdetection3d's ObjectRangeFilter), or in x, y and z when use_z. With
 *  wrap_yaw (default 1) the kept boxes' yaw is wrapped to [-pi, pi) as
 *  ObjectRangeFilter does. Per-box fields and masks: see above. */
typedef struct dk_boxes_in_range_config {
    const char *boxes;           /* default "gt_bboxes_3d", float32 (N, D >= 7) */
    float range[6];              /* default {-51.2, -51.2, -5, 51.2, 51.2, 3} */
    int use_z;                   /* default 0 */
    int wrap_yaw;                /* default 1 */
    const char *const *fields;   /* per-box fields, default NULL (the default set) */
    int n_fields;
    const char *mask;            /* default NULL */
    int remove;                  /* default 1 */
} dk_boxes_in_range_config;

DK_API void dk_boxes_in_range_config_init(dk_boxes_in_range_config *cfg);
DK_API int dk_step_boxes_in_range(const dk_boxes_in_range_config *cfg, dk_step **out);

/** Keeps the boxes whose label (int32 (N)) is one of classes[0..n_classes);
 *  with remap, a kept label becomes its position in the list (classes
 *  {8, 0} maps 8 -> 0, 0 -> 1; with remove = 0 the labels of dropped boxes
 *  become -1). Negative labels (categories outside the benchmark) are never
 *  in the list. DK_EINVAL for n_classes < 1 or a
 *  repeated class. */
typedef struct dk_class_filter_config {
    const char *labels;          /* default "gt_labels_3d" */
    const int32_t *classes;      /* required */
    int n_classes;
    int remap;                   /* default 0 */
    const char *const *fields;
    int n_fields;
    const char *mask;
    int remove;                  /* default 1 */
} dk_class_filter_config;

DK_API void dk_class_filter_config_init(dk_class_filter_config *cfg);
DK_API int dk_step_class_filter(const dk_class_filter_config *cfg, dk_step **out);

/** Keeps the boxes with num_lidar_pts (int32 (N)) >= min_points (default 1). */
typedef struct dk_min_points_filter_config {
    const char *num_points;      /* default "gt_num_lidar_pts" */
    int min_points;              /* default 1 */
    const char *const *fields;
    int n_fields;
    const char *mask;
    int remove;                  /* default 1 */
} dk_min_points_filter_config;

DK_API void dk_min_points_filter_config_init(dk_min_points_filter_config *cfg);
DK_API int dk_step_min_points_filter(const dk_min_points_filter_config *cfg, dk_step **out);

/** Removes the rows where the bool (N) field `mask` is false from every
 *  per-box field `fields` (NULL: the default set); the mask is then removed
 *  from the format unless keep_mask. The mask is looked up in the subtree,
 *  and must occur once. */
DK_API int dk_step_remove_masked(const char *mask, const char *const *fields, int n_fields,
                                 int keep_mask, dk_step **out);

/** Which 3-D boxes each camera sees, and their 2-D boxes (StreamPETR's
 *  per-camera gt_bboxes, gt_labels, centers2d, depths). For every
 *  `lidar2img` field in the step's subtree (one camera; wrap the step with
 *  dk_step_per_element(step, "cams") or run it unwrapped over all cameras,
 *  no randomness either way), with the image size W x H of its sibling
 *  `image` (or image_w x image_h when both > 0):
 *   - the box's centre must lie at depth > min_depth (the third row of
 *     lidar2img: camera z for lidar2img = [K 0; 0 1] lidar2cam);
 *   - its 8 corners are projected, the 12 edges clipped at the near plane
 *     z = min_depth, and the convex hull of the projection clipped to the
 *     image [0, W] x [0, H] (continuous pixel coordinates): an empty
 *     intersection means outside; the 2-D box is the bounding box of the
 *     clipped hull (x1, y1, x2, y2), which must be at least min_size pixels
 *     wide and high;
 *   - with occlusion (default 0, ACCV-Lab's VisibleBboxSelector): a box
 *     whose 2-D box is entirely covered by the union of the 2-D boxes of
 *     boxes with a smaller centre depth is not visible (2-D boxes
 *     over-approximate the silhouettes, so this misses partly hidden boxes
 *     and never hides a box that shows).
 *  The boxes and labels fields are looked up in the step's subtree and then
 *  among the children of the groups above it (so a step bound to cams[i]
 *  finds the sample's gt_bboxes_3d). Outputs, siblings of each lidar2img
 *  (each NULL to skip): mask bool (N) over all boxes; for the K visible ones
 *  in box order: bboxes float32 (K, 4), centers float32 (K, 2) = the
 *  projected 3-D centre (not clipped: a truncated box's centre may lie
 *  outside the image), depths float32 (K) = centre depth, labels int32 (K)
 *  gathered from `labels`, index int32 (K) = row of the 3-D box. lidar2img
 *  float32/float64 (3, 4) or (4, 4); image uint8/float32/float16 (H, W, C),
 *  (C, H, W) with image_chw, or (H, W). */
typedef struct dk_visible_boxes_config {
    const char *boxes;           /* default "gt_bboxes_3d" */
    const char *labels;          /* default "gt_labels_3d"; NULL: no labels output */
    const char *lidar2img;       /* default "lidar2img" */
    const char *image;           /* default "image" */
    int image_chw;               /* default 0 */
    int image_w, image_h;        /* default 0: the image field's size */
    float min_depth;             /* metres, default 0.01 */
    float min_size;              /* pixels, default 1 */
    int occlusion;               /* default 0 */
    const char *mask_out;        /* default "gt_visible" */
    const char *bboxes_out;      /* default "gt_bboxes_2d" */
    const char *centers_out;     /* default "centers2d" */
    const char *depths_out;      /* default "depths" */
    const char *labels_out;      /* default "gt_labels_2d" */
    const char *index_out;       /* default NULL */
} dk_visible_boxes_config;

DK_API void dk_visible_boxes_config_init(dk_visible_boxes_config *cfg);
/** DK_EINVAL (min_depth <= 0, min_size < 0, non-finite, one of image_w/h
 *  set, no output, labels_out without labels), DK_ENOMEM. */
DK_API int dk_step_visible_boxes(const dk_visible_boxes_config *cfg, dk_step **out);

/** Pads every occurrence of the named variable-length fields (rank >= 1)
 *  along the first dim to `capacity` rows with `fill` (converted to the
 *  field's dtype), and adds a sibling int32 rank-0 field <name><count_suffix>
 *  holding the number of real rows, so every sample of a batch has the same
 *  shapes (ACCV-Lab's PaddingToUniform with a fixed size). A field with more
 *  rows than capacity is DK_ERANGE at run time (naming it and the count)
 *  unless truncate, which keeps the first capacity rows. */
typedef struct dk_pad_to_uniform_config {
    const char *const *names;    /* required */
    int n_names;
    int64_t capacity;            /* required, >= 0 */
    double fill;                 /* default 0 */
    int truncate;                /* default 0 */
    const char *count_suffix;    /* default "_count" */
} dk_pad_to_uniform_config;

DK_API void dk_pad_to_uniform_config_init(dk_pad_to_uniform_config *cfg);
DK_API int dk_step_pad_to_uniform(const dk_pad_to_uniform_config *cfg, dk_step **out);

/** CenterPoint's BEV heatmap target (mmdetection3d CenterHead.get_targets,
 *  one head with num_classes channels): a float32 (num_classes, H, W) field
 *  `out` (sibling of boxes) with, per box of label c in [0, num_classes)
 *  (others skipped), a Gaussian in channel c drawn by
 *  dk_ragged_draw_gaussians (max-combined, sigma = (2 r + 1) / 6) at
 *      (int)((x - range[0]) / voxel_size[0] / out_size_factor),
 *      (int)((y - range[1]) / voxel_size[1] / out_size_factor)
 *  (column, row; truncated toward zero, outside the map skipped) with
 *  radius r = max(min_radius, (int)dk_ragged_gaussian_radius(
 *  w / voxel_size[1] / f, l / voxel_size[0] / f, min_overlap)); boxes with
 *  l or w <= 0 are skipped. W = round((range[3] - range[0]) / voxel_size[0]
 *  / f), H likewise in y. */
typedef struct dk_heatmap_config {
    const char *boxes;           /* default "gt_bboxes_3d" */
    const char *labels;          /* default "gt_labels_3d" */
    const char *out;             /* default "heatmap" */
    int num_classes;             /* default 10 */
    float range[6];              /* default {-51.2, -51.2, -5, 51.2, 51.2, 3} */
    float voxel_size[2];         /* default {0.1, 0.1} */
    int out_size_factor;         /* default 8 (a 128 x 128 map) */
    float min_overlap;           /* default 0.1 */
    int min_radius;              /* default 2 */
} dk_heatmap_config;

DK_API void dk_heatmap_config_init(dk_heatmap_config *cfg);
/** DK_EINVAL (a map outside 1..16384 per side, num_classes outside
 *  1..1024, min_overlap outside (0, 1), bad range/voxel size). */
DK_API int dk_step_heatmap(const dk_heatmap_config *cfg, dk_step **out);

/** Removes every field (leaf or group) with one of the names, anywhere in
 *  the step's subtree (ACCV-Lab's UnneededFieldRemover): the format at
 *  bind time, the values when it runs. A name that matches nothing is
 *  DK_ENOENT at bind time. */
DK_API int dk_step_remove_fields(const char *const *names, int n_names, dk_step **out);

/* ------------------------------------------------------------------------ */
/* Pipeline specs and presets                                                */

/** Appends the steps of a JSON array to p, each an object {"step": NAME,
 *  parameters...}; NAME is the constructor's name without dk_step_ and the
 *  parameters its config fields or arguments (ranges as [lo, hi] arrays,
 *  enums as lower-case names: image_decode "source" "auto"/"file"/"video",
 *  layout "dtype" "uint8"/"float32"/"float16"; name lists as arrays of
 *  strings; affine "size": [w, h] and ops as {"op": "resize_crop", "prob",
 *  "lo", "hi", "axes", "border"}, "preset": "streampetr" or
 *  "streampetr_eval"; class_filter "classes" as labels or class names;
 *  visible_boxes "image_size": [w, h]); unknown parameters are errors. E.g.
 *    [{"step": "image_decode"}, {"step": "affine", "preset": "streampetr"},
 *     {"step": "normalize", "mean": [103.53, 116.28, 123.675],
 *      "std": [57.375, 57.12, 58.395], "to_bgr": true},
 *     {"step": "pad", "multiple": 32}, {"step": "layout", "chw": true,
 *      "dtype": "float32"}]
 *  A step may carry "per_element": "cams" (dk_step_per_element) or "at":
 *  PATH (dk_step_at_path). Errors name the array index and the key
 *  ("steps[2]: ...: [2].mean: expected array of 3 numbers"); the steps
 *  before the bad one stay added. */
DK_API int dk_pipeline_add_json(dk_pipeline *p, const char *json, size_t len);
/** Appends a named preset for the nuScenes source format:
 *    "streampetr": StreamPETR's R50 training pipeline at 256x704 for
 *      1600x900 cameras: ObjectRangeFilter + ObjectNameFilter (point cloud
 *      range [-51.2, -51.2, -5, 51.2, 51.2, 3], the 10 classes), image
 *      decode (`source` "jpeg" or "video"), ResizeCropFlipRotImage (one
 *      draw for the six cameras: resize 0.38..0.55, bottom crop to 256x704,
 *      flip p = 0.5),
 *      GlobalRotScaleTransImage (rotation +-0.3925 rad, scale 0.95..1.05,
 *      boxes, points when present, lidar2img/lidar2cam/lidar2ego updated),
 *      normalize (caffe mean/std, BGR), pad to a multiple of 32, CHW
 *      float32;
 *    "streampetr_test": the evaluation form: the same filters, the fixed
 *      test-time resize and centred bottom crop (dk_affine_config_streampetr_eval),
 *      no flip, no global transform;
 *    "decode": image decode only (uint8 HWC at full resolution).
 *  DK_EINVAL for an unknown name or source. */
DK_API int dk_pipeline_add_preset(dk_pipeline *p, const char *name, const char *source);

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
/** Drops the batches in flight (waiting for their tasks) and restarts the
 *  sampler at `epoch` (dk_sampler_set_epoch). */
DK_API int dk_loader_reset(dk_loader *l, int epoch);
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
