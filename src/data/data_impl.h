/* Internal interfaces of src/data: how steps plug into pipelines. */
#ifndef DK_DATA_IMPL_H
#define DK_DATA_IMPL_H

#include "drivekit/data.h"
#include "drivekit/video.h"
#include "internal.h"

/* What a step sees while it runs on one sample. */
typedef struct dk__step_ctx {
    dk_rng rng;            /* this step's stream for this sample (and element) */
    uint64_t seed;
    int epoch;
    int64_t sample;        /* dataset index */
    int step;              /* index of the step in its pipeline */
    int element;           /* array element under dk_step_per_element, else -1 */
    const char *what;      /* for messages: e.g. the sample token; may be NULL */
    struct dk__image_plans *plans;   /* pending image plans of this sample */
    struct dk__video_cache *videos;  /* the pipeline's open videos */
} dk__step_ctx;

/* Videos shared by a pipeline's runs (thread-safe): get returns the handle
 * for a path, opened on first use, and holds it until put.
 *   - At most max_open handles keep decoders (and open files): beyond that
 *     the least recently used one nobody holds is trimmed (dk_video_trim),
 *     keeping its index, so opening it again costs no scan. (A pipe or
 *     device is never picked: it would keep its decoders anyway.)
 *   - Trimmed handles are kept while there are at most max_known handles and
 *     their indexes take at most index_budget bytes; beyond that the least
 *     recently used are closed.
 *   - A handle whose file changed since it was opened (inode, size,
 *     modification time; checked on every get) is closed, or when held, on
 *     its last put and never handed out again; the file is opened anew.
 * The handles keep no decoded-frame cache and a small packet cache (a sample
 * asks for each frame once; per-handle caches times thousands of videos would
 * have no bound). */
#define DK__MAX_OPEN_VIDEOS 32
#define DK__MAX_KNOWN_VIDEOS 8192
#define DK__VIDEO_INDEX_BUDGET ((size_t)64 << 20)
typedef struct dk__video_cache dk__video_cache;
int dk__video_cache_create(int max_open, int max_known, size_t index_budget,
                           dk__video_cache **out);
void dk__video_cache_destroy(dk__video_cache *vc);
int dk__video_cache_get(dk__video_cache *vc, const char *path, dk_video **out);
void dk__video_cache_put(dk__video_cache *vc, dk_video *v);
/* Handles with decoders, handles kept, and their index bytes (any may be
 * NULL). */
void dk__video_cache_counts(dk__video_cache *vc, int *open, int *known, size_t *index_bytes);
/* Handles with decoders of a pipeline (for tests). */
int dk__pipeline_open_videos(const dk_pipeline *p);

/* Scratch blocks recycled by a pipeline's runs (file bytes, decoded
 * windows): get returns a block of at least `size` bytes (NULL when out of
 * memory), put gives it back for reuse (or frees it; vc may be NULL: then
 * get allocates and put frees). Large blocks freed and allocated per image
 * would otherwise fault fresh pages in every time. Thread-safe. */
void *dk__scratch_get(dk__video_cache *vc, size_t size);
void dk__scratch_put(dk__video_cache *vc, void *p);

/* A step kind. bind() resolves the step's fields in the subtree `root` of
 * `fmt` (which it may edit: add or remove fields) and returns a binding (any
 * state run() needs: field ids, ...), or an error naming the field (the
 * pipeline prefixes the step). run() executes one binding on one sample; it
 * must not modify the step or the binding (samples run concurrently).
 * A step with image_stage != 0 only edits image plans (dk__image_plan) and
 * geometry fields; the pipeline fuses consecutive image stages and runs
 * dk__image_materialize after the last one. */
typedef struct dk__step_vt {
    const char *name;
    int (*bind)(dk_step *s, dk_group *fmt, int root, void **binding);
    int (*run)(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx);
    void (*unbind)(void *binding);
    void (*destroy)(dk_step *s);
    int image_stage;
} dk__step_vt;

struct dk_step {
    const dk__step_vt *vt;
    void *cfg;             /* the kind's own configuration (freed by vt->destroy) */
};

/* Allocates a step of kind vt owning cfg (on failure cfg is left to the
 * caller). */
int dk__step_new(const dk__step_vt *vt, void *cfg, dk_step **out);

/* Batch size of a sampler (loader). */
int dk__sampler_batch_size(const dk_sampler *s);

/* ------------------------------------------------------------------------ */
/* Image plans: what the fused pass does for one image field.                */

typedef enum dk__image_source {
    DK__IMG_NONE = 0,
    DK__IMG_JPEG_FILE,     /* path: a JPEG (or PNG) file */
    DK__IMG_VIDEO_FRAME,   /* path + frame: a frame of a video */
    DK__IMG_TENSOR,        /* the field's current value, uint8 (H, W, 3) */
} dk__image_source;

typedef struct dk__image_plan {
    int id;                /* field id of the image */
    dk__image_source src;
    char *path;            /* dk_malloc'd, JPEG_FILE / VIDEO_FRAME */
    uint8_t *data;         /* JPEG_FILE: the file's bytes when the decode step
                              read them already (a dk__scratch_get block), else NULL */
    size_t data_size;
    int64_t frame;         /* VIDEO_FRAME */
    int src_w, src_h;      /* full-resolution source size, pixels */
    /* Geometry: output continuous pixel coordinates (pixel centres at +0.5)
       = A * (source continuous coordinates, full resolution). Starts as the
       identity with out = src size. */
    double A[6];           /* row-major 2x3 */
    int out_w, out_h;      /* size of the warped image, before padding */
    int nearest;           /* 0 bilinear (default), 1 nearest */
    float fill[3];         /* value outside the source, in 0..255 units */
    /* Photometric distortion (mmdet PhotoMetricDistortion semantics), applied
       to the interpolated RGB value in 0..255 float. */
    int photometric;
    float brightness;      /* added */
    float contrast;        /* multiplied; 1 = none */
    int contrast_last;     /* 1: after the HSV adjustments, 0: before */
    float saturation;      /* multiplier of S; 1 = none */
    float hue;             /* degrees added to H; 0 = none */
    int swap[3];           /* channel permutation, {0, 1, 2} = none */
    /* Normalisation: (v - mean) / std per channel, after photometric. */
    int normalize;
    float mean[3], std[3];
    int bgr;               /* output channel order BGR (default RGB) */
    /* Padding of the warped image to (pad_w, pad_h) >= (out_w, out_h) with
       pad_value (in output units, after normalisation). */
    int pad_w, pad_h;
    float pad_value;
    /* Output layout and type. */
    int chw;               /* 0 HWC (default), 1 CHW */
    dk_dtype dtype;        /* DK_U8 (default, rounded and clamped), DK_F32, DK_F16 */
} dk__image_plan;

typedef struct dk__image_plans {
    int n, cap;
    dk__image_plan *p;
} dk__image_plans;

/* The plan of field `id`, or NULL. */
dk__image_plan *dk__image_plan_find(dk__image_plans *ps, int id);
/* A new plan for field `id` (replacing any), identity geometry, defaults. */
dk__image_plan *dk__image_plan_add(dk__image_plans *ps, int id);
void dk__image_plans_clear(dk__image_plans *ps);
/* Runs every pending plan of x: decode + fused pass into a new value of the
 * plan's field; then clears the plans. Errors name the field, the source file
 * (and frame) and `what`. */
int dk__image_materialize(dk__image_plans *ps, dk_sample *x, const dk_group *fmt,
                          dk__video_cache *videos, const char *what);

#endif
