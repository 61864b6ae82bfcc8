/*
 * drivekit core: the ground every module stands on.
 *
 *   status + errors   int status codes, dk_status_str(), thread-local messages
 *   memory            replaceable allocator, live-allocation counters, arenas
 *   dk_buffer         refcounted memory with a free callback (zero-copy export)
 *   dk_tensor         strided view: dtype, shape, strides in elements (DLPack units)
 *   dk_pool           explicit thread pool: (ith, nth) splits, ranges, task groups
 *   dk_rng            Philox 4x32-10 keyed by (seed, stream), counter based
 *   images            JPEG via TurboJPEG (incl. DCT-domain scaled decode), PNG via libpng
 *   JSON              reading through cJSON with path-naming errors; a streaming writer
 *   log + progress    one log callback; a progress reporter (bar on a tty, lines otherwise)
 *
 * Example: decode a JPEG at half size on a pool of 2 threads' worth of work.
 *
 *     dk_tensor img;
 *     dk_jpeg_decode_opts o; dk_jpeg_decode_opts_init(&o);
 *     o.scale_num = 1; o.scale_den = 2;
 *     if (dk_image_load("cam.jpg", &o, &img) != DK_OK)
 *         fprintf(stderr, "%s\n", dk_errmsg());   // "dk_image_load(): cam.jpg: ..."
 *     ...                                           // img.data, img.shape = {H, W, 3}
 *     dk_tensor_release(&img);
 *
 * Thread safety: every function here may be called from any thread. A dk_pool
 * accepts work from several threads at once, also from inside its own tasks.
 * dk_arena, dk_jpeg, dk_jsonw are not thread-safe: use one per thread.
 * dk_set_allocator() and dk_log_set() must be called before other threads use
 * the library.
 */
#ifndef DRIVEKIT_CORE_H
#define DRIVEKIT_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DK_BUILDING_SHARED) && defined(__GNUC__)
#define DK_API __attribute__((visibility("default")))
#else
#define DK_API
#endif

#if defined(__GNUC__)
#define DK_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define DK_PRINTF(fmt, args)
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                   */

/** Library version as 0xMMmmpp (same layout as DK_VERSION_HEX). */
DK_API int dk_version(void);
/** Library version string, "MAJOR.MINOR.PATCH". Static storage. */
DK_API const char *dk_version_str(void);

/* ------------------------------------------------------------------------ */
/* Status codes and error messages                                           */

enum dk_status {
    DK_OK = 0,
    DK_EINVAL = -1,        /* invalid argument (programmer-visible misuse) */
    DK_ENOMEM = -2,        /* allocation failed */
    DK_EIO = -3,           /* read/write/open failed at the OS level */
    DK_ENOENT = -4,        /* file, key, field or item not found */
    DK_EINVALIDDATA = -5,  /* input data is corrupt, truncated or malformed */
    DK_EUNSUPPORTED = -6,  /* valid but unsupported input or feature */
    DK_ERANGE = -7,        /* index or value out of range */
    DK_EOVERFLOW = -8,     /* a size computation would overflow */
    DK_ESTATE = -9,        /* call not valid in the object's current state */
    DK_EAGAIN = -10,       /* not ready yet; try again */
    DK_EOF = -11,          /* end of stream */
    DK_ECANCELED = -12,    /* operation was cancelled */
    DK_ESYS = -13,         /* operating-system resource failure (threads, ...) */
    DK_EINTERNAL = -14,    /* internal invariant broken: a bug in drivekit */
};
#define DK_STATUS_MIN DK_EINTERNAL

/** Short, static name of a status code ("DK_EINVALIDDATA: invalid data").
 *  Unknown codes give "unknown status". Never NULL. */
DK_API const char *dk_status_str(int status);

/** The calling thread's last error message: "function(): what, where".
 *  Valid until the thread's next failing drivekit call. Never NULL; "" when no
 *  error was recorded on this thread. Handles keep their own copy too
 *  (dk_x_errmsg(handle)). */
DK_API const char *dk_errmsg(void);

/** Clears the calling thread's error message. */
DK_API void dk_errmsg_clear(void);

/** Maximum length of an error message including the terminator. */
#define DK_ERRMSG_MAX 512

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */

/** A replaceable allocator. Every allocation drivekit makes itself goes through
 *  it (third-party libraries it calls use their own). `free` gets NULL-safe
 *  calls only with pointers from `malloc`/`realloc`. Allocations are aligned
 *  to at least 16 bytes; large tensor buffers ask for 64 via dk_malloc_aligned,
 *  which drivekit builds on top of `malloc`. */
typedef struct dk_allocator {
    void *(*malloc)(void *ctx, size_t size);
    void *(*realloc)(void *ctx, void *ptr, size_t size);
    void (*free)(void *ctx, void *ptr);
    void *ctx;
} dk_allocator;

/** Installs `a` (copied), or restores the C library's malloc when `a` is NULL.
 *  Call it before any drivekit object exists: memory is always freed through the
 *  allocator that was current when it was allocated only if it did not change.
 *  Blocks kept by the buffer cache are freed first (with the allocator that
 *  made them). Returns DK_EINVAL if a function pointer is NULL, DK_ESTATE while
 *  drivekit memory is still live (dk_alloc_live() != 0). */
DK_API int dk_set_allocator(const dk_allocator *a);

/** Allocation through the current allocator. NULL on failure or size 0 is
 *  allowed (returns a unique pointer). dk_free(NULL) is a no-op. */
DK_API void *dk_malloc(size_t size);
DK_API void *dk_calloc(size_t n, size_t size);       /* NULL on n*size overflow */
DK_API void *dk_realloc(void *ptr, size_t size);
DK_API void dk_free(void *ptr);
/** `align` must be a power of two <= 4096. Free with dk_free_aligned(). */
DK_API void *dk_malloc_aligned(size_t size, size_t align);
DK_API void dk_free_aligned(void *ptr);
/** Duplicates a NUL-terminated string; NULL on failure or NULL input. */
DK_API char *dk_strdup(const char *s);

/** Live allocations made through dk_malloc & co. (allocations minus frees,
 *  blocks kept by the buffer cache not counted),
 *  and the total count ever made. Atomic counters: cheap and always on, so a
 *  test can check that every buffer is freed exactly once. */
DK_API int64_t dk_alloc_live(void);
DK_API int64_t dk_alloc_total(void);

/** Bump arena for per-batch scratch memory. Allocations are freed all at once
 *  by dk_arena_reset(); after a reset that followed growth, the arena keeps one
 *  block big enough for the previous peak, so steady-state batches allocate
 *  nothing. Not thread-safe. */
typedef struct dk_arena dk_arena;

/** Creates an arena whose first block holds `initial_size` bytes (0 = 64 KiB).
 *  Returns DK_EINVAL if `out` is NULL, DK_ENOMEM on allocation failure. */
DK_API int dk_arena_create(size_t initial_size, dk_arena **out);
/** Arena over caller memory: never grows; running out is DK_ENOMEM (NULL). */
DK_API int dk_arena_create_fixed(void *buffer, size_t size, dk_arena **out);
DK_API void dk_arena_destroy(dk_arena *a);
/** `size` bytes aligned to `align` (power of two, 0 = 16). NULL when out of
 *  memory (fixed arena full, or the allocator failed); the message says which. */
DK_API void *dk_arena_alloc(dk_arena *a, size_t size, size_t align);
DK_API void dk_arena_reset(dk_arena *a);
/** Bytes handed out since the last reset, and the peak over the arena's life. */
DK_API size_t dk_arena_used(const dk_arena *a);
DK_API size_t dk_arena_peak(const dk_arena *a);

/* ------------------------------------------------------------------------ */
/* Refcounted buffers                                                        */

/** Reference-counted memory. The free callback runs exactly once, when the
 *  last reference is dropped, on whichever thread drops it. Thread-safe. */
typedef struct dk_buffer dk_buffer;
typedef void (*dk_buffer_free_fn)(void *opaque, void *data);

/** Allocates `size` bytes, 64-byte aligned, zero-filled if `zero`, refcount 1.
 *  Returns DK_EINVAL if `out` is NULL, DK_ENOMEM on failure. */
DK_API int dk_buffer_alloc(size_t size, int zero, dk_buffer **out);
/** Wraps foreign memory; `free_fn(opaque, data)` runs when the last ref goes
 *  (NULL free_fn: memory is borrowed and never freed). Returns DK_ENOMEM. */
DK_API int dk_buffer_wrap(void *data, size_t size, dk_buffer_free_fn free_fn,
                          void *opaque, dk_buffer **out);
DK_API dk_buffer *dk_buffer_ref(dk_buffer *b);   /* returns b; NULL-safe */
DK_API void dk_buffer_unref(dk_buffer *b);       /* NULL-safe */
DK_API void *dk_buffer_data(const dk_buffer *b);
DK_API size_t dk_buffer_size(const dk_buffer *b);
DK_API int dk_buffer_refcount(const dk_buffer *b);

/** The buffer cache. Memory that large comes from the system in fresh pages in
 *  most C libraries, and a batch of decoded frames or images would be faulted
 *  in page by page on every call (a fifth of the time of a random-access
 *  request for 100 1600x900 RGB frames). With a limit set, the last unref of a
 *  dk_buffer_alloc block of at least DK_BUFFER_CACHE_MIN bytes keeps the block
 *  (most recently released first, the oldest dropped beyond the limit), and
 *  dk_buffer_alloc reuses the smallest kept block that holds the request
 *  without wasting more than a quarter of it. Kept blocks do not count in
 *  dk_alloc_live(). Off (limit 0) by default in C; the Python package sets
 *  512 MiB (drivekit.set_buffer_cache). Returns the previous limit; a lower
 *  limit frees what is over it at once (0 frees everything). Thread-safe. */
#define DK_BUFFER_CACHE_MIN ((size_t)1 << 20)
DK_API size_t dk_buffer_cache_set_limit(size_t max_bytes);

typedef struct dk_buffer_cache_stats {
    size_t limit, bytes;     /* configured limit, bytes of the kept blocks */
    int64_t blocks;          /* kept blocks */
    int64_t hits;            /* allocations served from the cache, ever */
} dk_buffer_cache_stats;
DK_API void dk_buffer_cache_get_stats(dk_buffer_cache_stats *s);

/* ------------------------------------------------------------------------ */
/* Tensor views                                                              */

/** Element types. The values are stable; dk_dtype_dlpack() gives the DLPack
 *  (code, bits) pair. */
typedef enum dk_dtype {
    DK_DTYPE_INVALID = 0,
    DK_U8, DK_I8, DK_U16, DK_I16, DK_U32, DK_I32, DK_U64, DK_I64,
    DK_F16, DK_BF16, DK_F32, DK_F64, DK_BOOL,
    DK_DTYPE_COUNT
} dk_dtype;

DK_API size_t dk_dtype_size(dk_dtype t);          /* bytes per element; 0 if invalid */
DK_API const char *dk_dtype_name(dk_dtype t);     /* "uint8", "float32", ...; "invalid" */
/** DLPack type code (0 int, 1 uint, 2 float, 4 bfloat, 6 bool) and bit width.
 *  Returns DK_EINVAL for an invalid dtype. */
DK_API int dk_dtype_dlpack(dk_dtype t, uint8_t *code, uint8_t *bits);

#define DK_MAX_DIMS 8

/** A strided view of memory. Small, visible, copied by value.
 *  - data: address of element [0, 0, ...] (already offset; may be NULL when
 *    numel is 0).
 *  - shape[i] >= 0; strides[i] in ELEMENTS (DLPack units), may be 0 or negative.
 *  - owner: the buffer keeping `data` alive, or NULL for a borrowed view. A view
 *    that holds a reference is released with dk_tensor_release().
 *  Entries past ndim are unused (0). */
typedef struct dk_tensor {
    void *data;
    dk_dtype dtype;
    int32_t ndim;
    int64_t shape[DK_MAX_DIMS];
    int64_t strides[DK_MAX_DIMS];
    dk_buffer *owner;
} dk_tensor;

/** Fills `t` as a borrowed, C-contiguous view of `data`. Returns DK_EINVAL for
 *  a bad dtype, ndim outside [0, DK_MAX_DIMS] or a negative extent. */
DK_API int dk_tensor_view(dk_tensor *t, void *data, dk_dtype dtype, int ndim,
                          const int64_t *shape);
/** Allocates a zero-filled, C-contiguous tensor owning a new dk_buffer.
 *  Returns DK_EINVAL (as above), DK_EOVERFLOW if the byte size overflows,
 *  DK_ENOMEM. */
DK_API int dk_tensor_alloc(dk_tensor *t, dk_dtype dtype, int ndim, const int64_t *shape);
/** dk_tensor_alloc without the zero fill: the contents are unspecified (for
 *  producers that write every element). Same errors. */
DK_API int dk_tensor_empty(dk_tensor *t, dk_dtype dtype, int ndim, const int64_t *shape);
/** Drops the owner reference (if any) and clears `t`. NULL-safe. */
DK_API void dk_tensor_release(dk_tensor *t);
/** Copies the view and takes a new reference on its owner. */
DK_API dk_tensor dk_tensor_share(const dk_tensor *t);
DK_API int64_t dk_tensor_numel(const dk_tensor *t);
/** Bytes spanned by the elements of a C-contiguous tensor (numel * size). */
DK_API size_t dk_tensor_nbytes(const dk_tensor *t);
DK_API int dk_tensor_is_contiguous(const dk_tensor *t);
/** Address of the element at `idx` (ndim entries, unchecked). */
DK_API void *dk_tensor_at(const dk_tensor *t, const int64_t *idx);

/* ------------------------------------------------------------------------ */
/* Thread pool                                                               */

/** An explicit pool of worker threads. drivekit never starts threads of its
 *  own: anything parallel takes a dk_pool (NULL means "run on the caller").
 *  The calling thread always takes part in the work it submits, and a thread
 *  waiting for work runs queued tasks meanwhile, so tasks may submit and wait
 *  on nested work without deadlock. Thread-safe. */
typedef struct dk_pool dk_pool;

typedef struct dk_pool_config {
    int n_threads;   /* total threads doing work, the caller included; >= 1.
                        Default: 1 (no worker threads). */
} dk_pool_config;

DK_API void dk_pool_config_init(dk_pool_config *cfg);
/** Returns DK_EINVAL (NULL out, n_threads < 1 or > 1024), DK_ENOMEM, DK_ESYS
 *  when a thread cannot be started (no threads are left running then). */
DK_API int dk_pool_create(const dk_pool_config *cfg, dk_pool **out);
/** Waits for queued tasks to finish, joins the workers. NULL-safe. */
DK_API void dk_pool_destroy(dk_pool *pool);
/** Threads that execute work: n_threads of the config; 1 for a NULL pool. */
DK_API int dk_pool_size(const dk_pool *pool);

/** Runs fn(ctx, ith, nth) for ith = 0..nth-1 with nth = `nth` (or the pool size
 *  when nth <= 0), in parallel, and returns when all have finished. */
typedef void (*dk_pool_fn)(void *ctx, int ith, int nth);
DK_API int dk_pool_run(dk_pool *pool, int nth, dk_pool_fn fn, void *ctx);

/** Calls fn(ctx, begin, end, ith) over [0, n) in chunks of `grain` items
 *  (grain <= 0 picks one), handed out dynamically. Every index is covered by
 *  exactly one call. `ith` identifies the executing slot (0..pool size-1), so
 *  per-thread scratch can be indexed by it. Returns DK_EINVAL if n < 0. */
typedef void (*dk_pool_range_fn)(void *ctx, int64_t begin, int64_t end, int ith);
DK_API int dk_pool_for(dk_pool *pool, int64_t n, int64_t grain, dk_pool_range_fn fn,
                       void *ctx);

/** A group of asynchronous tasks to wait on together. Initialise with
 *  dk_pool_group_init (no allocation), submit, then dk_pool_group_wait. */
typedef struct dk_pool_group {
    volatile int64_t pending;     /* managed by the pool, read atomically */
} dk_pool_group;

DK_API void dk_pool_group_init(dk_pool_group *g);
/** Queues fn(arg). With a NULL or single-thread pool, runs it now. Returns
 *  DK_ENOMEM when the task cannot be queued (fn was not run). */
DK_API int dk_pool_submit(dk_pool *pool, dk_pool_group *g, void (*fn)(void *arg), void *arg);
/** Returns when every task of `g` has finished; runs queued tasks meanwhile. */
DK_API void dk_pool_group_wait(dk_pool *pool, dk_pool_group *g);

/* ------------------------------------------------------------------------ */
/* Counter-based random numbers: Philox 4x32-10                              */

/** One Philox4x32-10 block: out = philox(ctr, key), as in Salmon et al.,
 *  "Parallel random numbers: as easy as 1, 2, 3" (SC'11). */
DK_API void dk_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/** A stream of random numbers keyed by (seed, stream): key = seed, counter =
 *  (position, stream). Value number i of a stream is a pure function of
 *  (seed, stream, i), so results never depend on thread count or order. */
typedef struct dk_rng {
    uint32_t key[2];
    uint64_t stream;
    uint64_t block;      /* next 128-bit block index */
    uint32_t buf[4];
    int avail;           /* unread words left in buf (consumed in order) */
} dk_rng;

DK_API void dk_rng_init(dk_rng *r, uint64_t seed, uint64_t stream);
/** Jumps to 32-bit word `index` of the stream. */
DK_API void dk_rng_seek(dk_rng *r, uint64_t index);
/** Mixes up to four ids (e.g. epoch, sample, step, camera) into one 64-bit
 *  stream id through two Philox passes. Treat it as a 64-bit hash: two
 *  distinct tuples collide with probability about 2^-64. */
DK_API uint64_t dk_rng_stream_id(uint64_t a, uint64_t b, uint64_t c, uint64_t d);
DK_API uint32_t dk_rng_u32(dk_rng *r);
DK_API uint64_t dk_rng_u64(dk_rng *r);
/** Uniform in [0, 1) with 24 (float) or 53 (double) random bits. */
DK_API float dk_rng_uniform(dk_rng *r);
DK_API double dk_rng_uniform_f64(dk_rng *r);
/** Uniform in [lo, hi). */
DK_API float dk_rng_range(dk_rng *r, float lo, float hi);
/** Unbiased integer in [0, n) (n > 0; returns 0 for n == 0). */
DK_API uint32_t dk_rng_below(dk_rng *r, uint32_t n);
/** Standard normal (Box-Muller on two uniforms; one draw uses two words). */
DK_API float dk_rng_normal(dk_rng *r);

/** Fills out[0..n) with words offset..offset+n-1 of stream (seed, stream), split
 *  over `pool` (may be NULL). Identical output for any pool size. */
DK_API int dk_rng_fill_u32(dk_pool *pool, uint64_t seed, uint64_t stream, uint64_t offset,
                           uint32_t *out, int64_t n);
/** Same words mapped to floats uniform in [0, 1). */
DK_API int dk_rng_fill_uniform(dk_pool *pool, uint64_t seed, uint64_t stream,
                               uint64_t offset, float *out, int64_t n);

/* ------------------------------------------------------------------------ */
/* Images: JPEG (TurboJPEG) and PNG (libpng)                                 */

/** Pixel layouts images decode to and encode from: interleaved 8-bit. */
typedef enum dk_pixfmt {
    DK_PIX_RGB = 0,   /* 3 channels */
    DK_PIX_BGR,       /* 3 channels, OpenCV order */
    DK_PIX_RGBA,      /* 4 channels */
    DK_PIX_GRAY,      /* 1 channel */
} dk_pixfmt;

DK_API int dk_pixfmt_channels(dk_pixfmt f);   /* 0 for an unknown format */

typedef struct dk_jpeg_info {
    int width, height;
    int subsampling;   /* 444, 422, 420, 440, 411 or 400 (gray); -1 unknown */
    int colorspace;    /* 0 YCbCr, 1 gray, 2 RGB, 3 CMYK, 4 YCCK */
} dk_jpeg_info;

typedef struct dk_jpeg_decode_opts {
    dk_pixfmt format;        /* default DK_PIX_RGB */
    /* DCT-domain scaling: output = ceil(size * num / den). Supported factors
       are those of libjpeg-turbo (n/8 for n = 1..16). Default 1/1. */
    int scale_num, scale_den;
    /* Alternatively (when > 0): pick the smallest supported factor whose
       output is at least min_width x min_height (never upscales; falls back to
       1/1 when the image is already smaller). Overrides scale_num/den. */
    int min_width, min_height;
    int fast_dct;            /* faster, slightly less accurate IDCT; default 0 */
    int allow_warnings;      /* accept data libjpeg only warns about (e.g. a
                                truncated scan filled with grey); default 0:
                                such images fail with DK_EINVALIDDATA */
} dk_jpeg_decode_opts;

DK_API void dk_jpeg_decode_opts_init(dk_jpeg_decode_opts *o);

/** Output size for a scaling factor: ceil(size * num / den). Returns DK_EINVAL
 *  for an unsupported factor. */
DK_API int dk_jpeg_scaled_size(int width, int height, int num, int den, int *out_w,
                               int *out_h);

/** A reusable JPEG codec (holds the TurboJPEG handles). Not thread-safe: one
 *  per thread. The one-shot functions below make a temporary one. */
typedef struct dk_jpeg dk_jpeg;
DK_API int dk_jpeg_create(dk_jpeg **out);     /* DK_ENOMEM */
DK_API void dk_jpeg_destroy(dk_jpeg *j);
DK_API const char *dk_jpeg_errmsg(const dk_jpeg *j);

/** Reads the header. Returns DK_EINVALIDDATA (not a JPEG, corrupt header). */
DK_API int dk_jpeg_info_get(dk_jpeg *j, const void *data, size_t size, dk_jpeg_info *info);

/** Decodes into a new tensor (H, W, C) uint8 owning its buffer.
 *  Returns DK_EINVAL (NULL args, bad opts), DK_EINVALIDDATA (corrupt or
 *  truncated data; warnings too unless allow_warnings), DK_EOVERFLOW (absurd
 *  dimensions), DK_ENOMEM. On failure `out` is left empty. */
DK_API int dk_jpeg_decode(dk_jpeg *j, const void *data, size_t size,
                          const dk_jpeg_decode_opts *opts, dk_tensor *out);
/** Decodes into caller memory: `dst` is H x W x C with `dst_stride` bytes per
 *  row (0 = packed); its size must match the scaled output size, which
 *  dk_jpeg_info_get + dk_jpeg_scaled_size give. Returns DK_ERANGE if it does
 *  not, plus the errors of dk_jpeg_decode. */
DK_API int dk_jpeg_decode_into(dk_jpeg *j, const void *data, size_t size,
                               const dk_jpeg_decode_opts *opts, void *dst, int dst_w,
                               int dst_h, size_t dst_stride);

/** Encodes an (H, W, C) uint8 image (C matching `format`; row stride taken from
 *  the tensor, element stride must be 1) at quality 1..100 with 4:2:0
 *  subsampling (4:4:4 if `subsamp444`). *out is a dk_malloc'd buffer the caller
 *  frees with dk_free. Returns DK_EINVAL, DK_ENOMEM, DK_EINTERNAL. */
DK_API int dk_jpeg_encode(dk_jpeg *j, const dk_tensor *img, dk_pixfmt format, int quality,
                          int subsamp444, uint8_t **out, size_t *out_size);

/** PNG decode to 8-bit (16-bit sources are reduced) in `format`: gray, RGB or
 *  RGBA (BGR is not offered for PNG). Returns DK_EINVALIDDATA with libpng's
 *  reason for corrupt data (bad signature, CRC, truncation), DK_ENOMEM. */
DK_API int dk_png_decode(const void *data, size_t size, dk_pixfmt format, dk_tensor *out);
/** PNG encode of an (H, W, C) uint8 tensor, C = 1, 3 or 4 (gray, RGB, RGBA).
 *  Returns a dk_malloc'd buffer. */
DK_API int dk_png_encode(const dk_tensor *img, uint8_t **out, size_t *out_size);

/** Reads a whole file into a dk_malloc'd buffer. Errors name the path:
 *  DK_ENOENT (missing), DK_EIO (other open/read failure), DK_ENOMEM,
 *  DK_EOVERFLOW (larger than SIZE_MAX). */
DK_API int dk_file_read(const char *path, uint8_t **out, size_t *out_size);
/** Writes `size` bytes to `path` atomically (temp file + rename). DK_EIO. */
DK_API int dk_file_write(const char *path, const void *data, size_t size);

/** Loads a JPEG or PNG file (recognised by its signature, not its name) as
 *  (H, W, C) uint8. `jpeg_opts` may be NULL (defaults); for PNG only its format
 *  is used. Errors name the file: DK_ENOENT, DK_EIO, DK_EINVALIDDATA,
 *  DK_EUNSUPPORTED (neither JPEG nor PNG), DK_ENOMEM. */
DK_API int dk_image_load(const char *path, const dk_jpeg_decode_opts *jpeg_opts,
                         dk_tensor *out);
/** Saves as PNG or JPEG by the extension (.png, .jpg/.jpeg); `quality` for JPEG.
 *  C = 1, 3 or 4 (RGBA is PNG-only). Returns DK_EUNSUPPORTED for another
 *  extension, DK_EIO, DK_EINVAL, DK_ENOMEM. */
DK_API int dk_image_save(const char *path, const dk_tensor *img, int quality);

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */

/** A parsed JSON document (cJSON underneath) read through cursors that carry
 *  their path, so every error names file and field: "scene.json: actors[3].size:
 *  expected 3 numbers, got 2". */
typedef struct dk_json dk_json;

typedef enum dk_json_type {
    DK_JSON_NULL = 0, DK_JSON_BOOL, DK_JSON_NUMBER, DK_JSON_STRING, DK_JSON_ARRAY,
    DK_JSON_OBJECT, DK_JSON_MISSING
} dk_json_type;

#define DK_JSON_PATH_MAX 192

/** A position in a document: the node plus its path from the root. */
typedef struct dk_json_cur {
    const void *node;            /* private */
    const dk_json *doc;
    char path[DK_JSON_PATH_MAX]; /* "actors[3].size"; "" at the root */
} dk_json_cur;

/** Parses `len` bytes; `name` (e.g. a file name, may be NULL) is used in
 *  messages. Returns DK_EINVALIDDATA with the line and column of the syntax
 *  error, DK_ENOMEM. */
DK_API int dk_json_parse(const char *text, size_t len, const char *name, dk_json **out);
/** Reads and parses a file. DK_ENOENT, DK_EIO, DK_EINVALIDDATA, DK_ENOMEM. */
DK_API int dk_json_load(const char *path, dk_json **out);
DK_API void dk_json_free(dk_json *doc);
DK_API const char *dk_json_name(const dk_json *doc);
DK_API dk_json_cur dk_json_root(const dk_json *doc);

DK_API dk_json_type dk_json_type_of(const dk_json_cur *c);
/** Number of items of an array or members of an object; 0 otherwise. */
DK_API size_t dk_json_size(const dk_json_cur *c);
/** Member `key` of an object. Returns DK_ENOENT if absent, DK_EINVALIDDATA if
 *  `c` is not an object; both messages name the path. */
DK_API int dk_json_field(const dk_json_cur *c, const char *key, dk_json_cur *out);
/** Like dk_json_field but absence is not an error: returns 0 and sets
 *  out->node = NULL (type DK_JSON_MISSING). */
DK_API int dk_json_field_opt(const dk_json_cur *c, const char *key, dk_json_cur *out);
/** Item i of an array. DK_ERANGE past the end, DK_EINVALIDDATA if not an array. */
DK_API int dk_json_item(const dk_json_cur *c, size_t i, dk_json_cur *out);
/** Member i of an object (key in *key). */
DK_API int dk_json_member(const dk_json_cur *c, size_t i, const char **key, dk_json_cur *out);

/** Typed reads: DK_EINVALIDDATA naming the path when the type differs. */
DK_API int dk_json_number(const dk_json_cur *c, double *out);
/** Finite number that is an integer in [lo, hi]; DK_ERANGE otherwise. */
DK_API int dk_json_int(const dk_json_cur *c, int64_t lo, int64_t hi, int64_t *out);
DK_API int dk_json_bool(const dk_json_cur *c, int *out);
/** The string stays valid while the document lives. */
DK_API int dk_json_string(const dk_json_cur *c, const char **out);
/** Array of exactly n finite numbers. */
DK_API int dk_json_numbers(const dk_json_cur *c, double *out, size_t n);

/** Convenience: field + typed read in one call. */
DK_API int dk_json_get_number(const dk_json_cur *obj, const char *key, double *out);
DK_API int dk_json_get_int(const dk_json_cur *obj, const char *key, int64_t lo, int64_t hi,
                           int64_t *out);
DK_API int dk_json_get_string(const dk_json_cur *obj, const char *key, const char **out);
DK_API int dk_json_get_numbers(const dk_json_cur *obj, const char *key, double *out, size_t n);

/** Streaming JSON writer into a growing memory buffer. Errors are sticky: the
 *  first failure is kept and returned by dk_jsonw_finish. Not thread-safe.
 *  Numbers are written with the shortest round-trip form; non-finite numbers
 *  are an error (JSON has none). */
typedef struct dk_jsonw dk_jsonw;

/** `indent` spaces per level (0 = compact). DK_ENOMEM. */
DK_API int dk_jsonw_create(int indent, dk_jsonw **out);
DK_API void dk_jsonw_destroy(dk_jsonw *w);
DK_API void dk_jsonw_object_begin(dk_jsonw *w);
DK_API void dk_jsonw_object_end(dk_jsonw *w);
DK_API void dk_jsonw_array_begin(dk_jsonw *w);
DK_API void dk_jsonw_array_end(dk_jsonw *w);
/** Key of the next value; only inside an object. */
DK_API void dk_jsonw_key(dk_jsonw *w, const char *key);
DK_API void dk_jsonw_string(dk_jsonw *w, const char *s);   /* NULL writes null */
DK_API void dk_jsonw_number(dk_jsonw *w, double v);
DK_API void dk_jsonw_int(dk_jsonw *w, int64_t v);
DK_API void dk_jsonw_bool(dk_jsonw *w, int v);
DK_API void dk_jsonw_null(dk_jsonw *w);
/** Checks the document is complete and returns its text (NUL-terminated,
 *  owned by the writer). DK_ESTATE for unbalanced nesting or a key without a
 *  value, DK_EINVAL for a non-finite number or misplaced key, DK_ENOMEM. */
DK_API int dk_jsonw_finish(dk_jsonw *w, const char **text, size_t *len);
/** dk_jsonw_finish + dk_file_write. */
DK_API int dk_jsonw_save(dk_jsonw *w, const char *path);

/* ------------------------------------------------------------------------ */
/* Logging and progress                                                      */

typedef enum dk_log_level {
    DK_LOG_DEBUG = 0, DK_LOG_INFO = 1, DK_LOG_WARN = 2, DK_LOG_ERROR = 3, DK_LOG_NONE = 4
} dk_log_level;

typedef void (*dk_log_fn)(void *user, dk_log_level level, const char *msg);

/** Routes library messages at `level` and above to `fn` (NULL: the default,
 *  which writes "drivekit: warning: ..." to stderr). Default level: WARN, or the
 *  DK_LOG_LEVEL environment variable (debug, info, warn, error, none). */
DK_API void dk_log_set(dk_log_fn fn, void *user, dk_log_level level);
DK_API void dk_log(dk_log_level level, const char *fmt, ...) DK_PRINTF(2, 3);

/** Progress callback for long jobs: `done` of `total` units of `what`.
 *  Called from the thread that drives the job. */
typedef void (*dk_progress_fn)(void *user, int64_t done, int64_t total, const char *what);

/** A ready-made reporter for dk_progress_fn: a redrawn bar with rate and ETA
 *  when `stream` is a terminal, otherwise a plain line at every 10% (and at the
 *  end). Pass dk_progress_report as the callback and the reporter as `user`. */
typedef struct dk_progress dk_progress;
DK_API int dk_progress_create(FILE *stream, const char *label, dk_progress **out);
/** Forces terminal (1) or plain-line (0) mode; -1 = detect (default). */
DK_API void dk_progress_set_mode(dk_progress *p, int tty);
DK_API void dk_progress_report(void *progress, int64_t done, int64_t total, const char *what);
/** Ends the line on a terminal. NULL-safe. */
DK_API void dk_progress_destroy(dk_progress *p);

#ifdef __cplusplus
}
#endif

#endif /* DRIVEKIT_CORE_H */
