/*
 * Refcounted buffers and tensor views.
 *
 * dk_buffer_alloc puts the header and the data in one 64-byte aligned block
 * (the data starts one cache line after the header), so a tensor costs one
 * allocation. Wrapped buffers carry a free callback instead; either way the
 * last dk_buffer_unref releases the memory exactly once, from any thread.
 *
 * The buffer cache keeps released blocks of at least DK_BUFFER_CACHE_MIN
 * bytes (most recently released first) for the next allocation they fit
 * closely. Blocks that big come from mmap in most C libraries and are
 * returned to the system when freed, so without it every batch of frames or
 * images would be faulted in page by page again.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "internal.h"

struct dk_buffer {
    atomic_int refs;
    int inline_data;         /* data lives in the same block as the header */
    void *data;
    size_t size;
    dk_buffer_free_fn free_fn;
    void *opaque;
    size_t capacity;         /* inline blocks: data bytes the block holds */
    dk_buffer *next;         /* in the buffer cache */
};

#define BUFFER_HEADER 64
_Static_assert(sizeof(dk_buffer) <= BUFFER_HEADER, "buffer header too large");

static pthread_mutex_t g_cache_mu = PTHREAD_MUTEX_INITIALIZER;
static dk_buffer *g_cache;          /* most recently released first */
static size_t g_cache_limit, g_cache_bytes;
static int64_t g_cache_blocks, g_cache_hits;
static atomic_llong g_cache_blocks_atomic;   /* for dk_alloc_live, without the lock */

/* Takes the smallest cached block that holds `size` bytes without wasting
 * more than a quarter of them; NULL if none. */
static dk_buffer *cache_take(size_t size)
{
    dk_buffer *got = NULL;
    pthread_mutex_lock(&g_cache_mu);
    if (g_cache) {
        dk_buffer **best = NULL;
        for (dk_buffer **p = &g_cache; *p; p = &(*p)->next) {
            size_t cap = (*p)->capacity;
            if (cap >= size && cap - size <= size / 4 && (!best || cap < (*best)->capacity))
                best = p;
        }
        if (best) {
            got = *best;
            *best = got->next;
            g_cache_bytes -= got->capacity;
            g_cache_blocks--;
            g_cache_hits++;
            atomic_fetch_sub_explicit(&g_cache_blocks_atomic, 1, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&g_cache_mu);
    return got;
}

/* Unlinks blocks from the oldest end until the cache holds at most `limit`
 * bytes; returns them as a list to free outside the lock. */
static dk_buffer *cache_shrink_locked(size_t limit)
{
    dk_buffer *out = NULL;
    while (g_cache_bytes > limit) {
        dk_buffer **p = &g_cache;
        while ((*p)->next) p = &(*p)->next;
        dk_buffer *b = *p;
        *p = NULL;
        g_cache_bytes -= b->capacity;
        g_cache_blocks--;   /* g_cache_blocks_atomic drops once the block is freed */
        b->next = out;
        out = b;
    }
    return out;
}

/* Frees blocks unlinked by cache_shrink_locked; dk_alloc_live never counts
 * them twice in between. */
static void free_list(dk_buffer *b)
{
    while (b) {
        dk_buffer *n = b->next;
        dk_free_aligned(b);
        atomic_fetch_sub_explicit(&g_cache_blocks_atomic, 1, memory_order_relaxed);
        b = n;
    }
}

/* Keeps a released inline block if the cache takes it; 0 if not. */
static int cache_put(dk_buffer *b)
{
    if (b->capacity < DK_BUFFER_CACHE_MIN) return 0;
    pthread_mutex_lock(&g_cache_mu);
    if (b->capacity > g_cache_limit) {
        pthread_mutex_unlock(&g_cache_mu);
        return 0;
    }
    b->next = g_cache;
    g_cache = b;
    g_cache_bytes += b->capacity;
    g_cache_blocks++;
    atomic_fetch_add_explicit(&g_cache_blocks_atomic, 1, memory_order_relaxed);
    dk_buffer *drop = cache_shrink_locked(g_cache_limit);
    pthread_mutex_unlock(&g_cache_mu);
    free_list(drop);
    return 1;
}

size_t dk_buffer_cache_set_limit(size_t max_bytes)
{
    pthread_mutex_lock(&g_cache_mu);
    size_t old = g_cache_limit;
    g_cache_limit = max_bytes;
    dk_buffer *drop = cache_shrink_locked(max_bytes);
    pthread_mutex_unlock(&g_cache_mu);
    free_list(drop);
    return old;
}

void dk_buffer_cache_get_stats(dk_buffer_cache_stats *s)
{
    if (!s) return;
    pthread_mutex_lock(&g_cache_mu);
    s->limit = g_cache_limit;
    s->bytes = g_cache_bytes;
    s->blocks = g_cache_blocks;
    s->hits = g_cache_hits;
    pthread_mutex_unlock(&g_cache_mu);
}

int64_t dk__buffer_cache_blocks(void)
{
    return atomic_load_explicit(&g_cache_blocks_atomic, memory_order_relaxed);
}

void dk__buffer_cache_drop(void)
{
    pthread_mutex_lock(&g_cache_mu);
    dk_buffer *drop = cache_shrink_locked(0);
    pthread_mutex_unlock(&g_cache_mu);
    free_list(drop);
}

int dk_buffer_alloc(size_t size, int zero, dk_buffer **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    size_t total;
    if (dk__add_overflow(size, BUFFER_HEADER, &total))
        return dk__error(DK_EOVERFLOW, __func__, "buffer of %zu bytes is too large", size);
    dk_buffer *b = size >= DK_BUFFER_CACHE_MIN ? cache_take(size) : NULL;
    size_t capacity = b ? b->capacity : size;
    if (!b) {
        unsigned char *block = dk_malloc_aligned(total, 64);
        if (!block && dk__buffer_cache_blocks() > 0) {
            /* Memory is short: what the cache holds is the first to go. */
            dk__buffer_cache_drop();
            block = dk_malloc_aligned(total, 64);
        }
        if (!block) return dk__error(DK_ENOMEM, __func__, "cannot allocate %zu bytes", size);
        b = (dk_buffer *)block;
    }
    atomic_init(&b->refs, 1);
    b->inline_data = 1;
    b->data = (unsigned char *)b + BUFFER_HEADER;
    b->size = size;
    b->free_fn = NULL;
    b->opaque = NULL;
    b->capacity = capacity;
    b->next = NULL;
    if (zero) memset(b->data, 0, size);
    *out = b;
    return DK_OK;
}

int dk_buffer_wrap(void *data, size_t size, dk_buffer_free_fn free_fn, void *opaque,
                   dk_buffer **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    dk_buffer *b = dk_malloc(sizeof *b);
    if (!b) return dk__error(DK_ENOMEM, __func__, "cannot allocate a buffer header");
    atomic_init(&b->refs, 1);
    b->inline_data = 0;
    b->data = data;
    b->size = size;
    b->free_fn = free_fn;
    b->opaque = opaque;
    *out = b;
    return DK_OK;
}

dk_buffer *dk_buffer_ref(dk_buffer *b)
{
    if (b) atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

void dk_buffer_unref(dk_buffer *b)
{
    if (!b) return;
    /* Release/acquire so every write made through other references is visible
     * to the thread that frees. */
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1) return;
    if (b->inline_data) {
        if (!cache_put(b)) dk_free_aligned(b);
        return;
    }
    if (b->free_fn) b->free_fn(b->opaque, b->data);
    dk_free(b);
}

void *dk_buffer_data(const dk_buffer *b)
{
    return b ? b->data : NULL;
}

size_t dk_buffer_size(const dk_buffer *b)
{
    return b ? b->size : 0;
}

int dk_buffer_refcount(const dk_buffer *b)
{
    return b ? atomic_load(&((dk_buffer *)b)->refs) : 0;
}

/* ------------------------------------------------------------------------ */
/* dtypes and tensors                                                        */

static const struct {
    const char *name;
    uint8_t size, code, bits;
} dtype_info[DK_DTYPE_COUNT] = {
    [DK_DTYPE_INVALID] = {"invalid", 0, 0, 0},
    [DK_U8] = {"uint8", 1, 1, 8},     [DK_I8] = {"int8", 1, 0, 8},
    [DK_U16] = {"uint16", 2, 1, 16},  [DK_I16] = {"int16", 2, 0, 16},
    [DK_U32] = {"uint32", 4, 1, 32},  [DK_I32] = {"int32", 4, 0, 32},
    [DK_U64] = {"uint64", 8, 1, 64},  [DK_I64] = {"int64", 8, 0, 64},
    [DK_F16] = {"float16", 2, 2, 16}, [DK_BF16] = {"bfloat16", 2, 4, 16},
    [DK_F32] = {"float32", 4, 2, 32}, [DK_F64] = {"float64", 8, 2, 64},
    [DK_BOOL] = {"bool", 1, 6, 8},
};

static int dtype_valid(dk_dtype t)
{
    return t > DK_DTYPE_INVALID && t < DK_DTYPE_COUNT;
}

size_t dk_dtype_size(dk_dtype t)
{
    return dtype_valid(t) ? dtype_info[t].size : 0;
}

const char *dk_dtype_name(dk_dtype t)
{
    return dtype_valid(t) ? dtype_info[t].name : "invalid";
}

int dk_dtype_dlpack(dk_dtype t, uint8_t *code, uint8_t *bits)
{
    if (!dtype_valid(t)) return dk__error(DK_EINVAL, __func__, "invalid dtype %d", (int)t);
    if (code) *code = dtype_info[t].code;
    if (bits) *bits = dtype_info[t].bits;
    return DK_OK;
}

static int check_shape(const char *func, dk_dtype dtype, int ndim, const int64_t *shape,
                       size_t *nbytes)
{
    if (!dtype_valid(dtype)) return dk__error(DK_EINVAL, func, "invalid dtype %d", (int)dtype);
    if (ndim < 0 || ndim > DK_MAX_DIMS)
        return dk__error(DK_EINVAL, func, "ndim %d outside [0, %d]", ndim, DK_MAX_DIMS);
    if (ndim > 0 && !shape) return dk__error(DK_EINVAL, func, "shape is NULL");
    size_t n = dtype_info[dtype].size;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return dk__error(DK_EINVAL, func, "shape[%d] = %lld is negative", i,
                             (long long)shape[i]);
        if (dk__mul_overflow(n, (size_t)shape[i], &n))
            return dk__error(DK_EOVERFLOW, func, "tensor size overflows");
    }
    if (n > (size_t)INT64_MAX) return dk__error(DK_EOVERFLOW, func, "tensor size overflows");
    *nbytes = n;
    return DK_OK;
}

static void set_contiguous(dk_tensor *t, void *data, dk_dtype dtype, int ndim,
                           const int64_t *shape)
{
    memset(t, 0, sizeof *t);
    t->data = data;
    t->dtype = dtype;
    t->ndim = ndim;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->strides[i] = stride;
        stride *= shape[i] ? shape[i] : 1;
    }
}

int dk_tensor_view(dk_tensor *t, void *data, dk_dtype dtype, int ndim, const int64_t *shape)
{
    if (!t) return dk__error(DK_EINVAL, __func__, "tensor is NULL");
    size_t nbytes;
    int st = check_shape(__func__, dtype, ndim, shape, &nbytes);
    if (st) return st;
    set_contiguous(t, data, dtype, ndim, shape);
    return DK_OK;
}

static int tensor_alloc(const char *fn, dk_tensor *t, dk_dtype dtype, int ndim,
                        const int64_t *shape, int zero)
{
    if (!t) return dk__error(DK_EINVAL, fn, "tensor is NULL");
    memset(t, 0, sizeof *t);
    size_t nbytes;
    int st = check_shape(fn, dtype, ndim, shape, &nbytes);
    if (st) return st;
    dk_buffer *b;
    st = dk_buffer_alloc(nbytes, zero, &b);
    if (st) return st;
    set_contiguous(t, dk_buffer_data(b), dtype, ndim, shape);
    t->owner = b;
    return DK_OK;
}

int dk_tensor_alloc(dk_tensor *t, dk_dtype dtype, int ndim, const int64_t *shape)
{
    return tensor_alloc(__func__, t, dtype, ndim, shape, 1);
}

int dk_tensor_empty(dk_tensor *t, dk_dtype dtype, int ndim, const int64_t *shape)
{
    return tensor_alloc(__func__, t, dtype, ndim, shape, 0);
}

void dk_tensor_release(dk_tensor *t)
{
    if (!t) return;
    dk_buffer_unref(t->owner);
    memset(t, 0, sizeof *t);
}

dk_tensor dk_tensor_share(const dk_tensor *t)
{
    dk_tensor c = *t;
    dk_buffer_ref(c.owner);
    return c;
}

int64_t dk_tensor_numel(const dk_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t dk_tensor_nbytes(const dk_tensor *t)
{
    return (size_t)dk_tensor_numel(t) * dk_dtype_size(t->dtype);
}

int dk_tensor_is_contiguous(const dk_tensor *t)
{
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 0) return 1;
        if (t->shape[i] != 1 && t->strides[i] != expect) return 0;
        expect *= t->shape[i];
    }
    return 1;
}

void *dk_tensor_at(const dk_tensor *t, const int64_t *idx)
{
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++) off += idx[i] * t->strides[i];
    return (unsigned char *)t->data + off * (int64_t)dk_dtype_size(t->dtype);
}
