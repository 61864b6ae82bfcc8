/*
 * Refcounted buffers and tensor views.
 *
 * dk_buffer_alloc puts the header and the data in one 64-byte aligned block
 * (the data starts one cache line after the header), so a tensor costs one
 * allocation. Wrapped buffers carry a free callback instead; either way the
 * last dk_buffer_unref releases the memory exactly once, from any thread.
 */
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
};

#define BUFFER_HEADER 64

int dk_buffer_alloc(size_t size, int zero, dk_buffer **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    size_t total;
    if (dk__add_overflow(size, BUFFER_HEADER, &total))
        return dk__error(DK_EOVERFLOW, __func__, "buffer of %zu bytes is too large", size);
    unsigned char *block = dk_malloc_aligned(total, 64);
    if (!block) return dk__error(DK_ENOMEM, __func__, "cannot allocate %zu bytes", size);
    dk_buffer *b = (dk_buffer *)block;
    atomic_init(&b->refs, 1);
    b->inline_data = 1;
    b->data = block + BUFFER_HEADER;
    b->size = size;
    b->free_fn = NULL;
    b->opaque = NULL;
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
        dk_free_aligned(b);
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

int dk_tensor_alloc(dk_tensor *t, dk_dtype dtype, int ndim, const int64_t *shape)
{
    if (!t) return dk__error(DK_EINVAL, __func__, "tensor is NULL");
    memset(t, 0, sizeof *t);
    size_t nbytes;
    int st = check_shape(__func__, dtype, ndim, shape, &nbytes);
    if (st) return st;
    dk_buffer *b;
    st = dk_buffer_alloc(nbytes, 1, &b);
    if (st) return st;
    set_contiguous(t, dk_buffer_data(b), dtype, ndim, shape);
    t->owner = b;
    return DK_OK;
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
