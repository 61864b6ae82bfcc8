/*
 * The ragged batch descriptor, the canonical (S, A, N, F) view the ops work
 * through, and the conversions: mask <-> sizes, padded <-> packed, combine.
 */
#include <math.h>
#include <stdio.h>

#include "ragged_impl.h"

/* ------------------------------------------------------------------------ */
/* Scalars                                                                   */

static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t man = x & 0x7fffffu;
    if (exp == 0xffu) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1u), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) half++;  /* may carry into exp: fine */
    return (uint16_t)half;
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

void dk__scalar_from_double(dk_dtype t, double x, void *out)
{
    switch (t) {
    case DK_U8: { uint8_t v = (uint8_t)(int64_t)x; memcpy(out, &v, 1); break; }
    case DK_I8: { int8_t v = (int8_t)(int64_t)x; memcpy(out, &v, 1); break; }
    case DK_U16: { uint16_t v = (uint16_t)(int64_t)x; memcpy(out, &v, 2); break; }
    case DK_I16: { int16_t v = (int16_t)(int64_t)x; memcpy(out, &v, 2); break; }
    case DK_U32: { uint32_t v = (uint32_t)(int64_t)x; memcpy(out, &v, 4); break; }
    case DK_I32: { int32_t v = (int32_t)(int64_t)x; memcpy(out, &v, 4); break; }
    case DK_U64: { uint64_t v = x < 0 ? (uint64_t)(int64_t)x : (uint64_t)x; memcpy(out, &v, 8); break; }
    case DK_I64: { int64_t v = (int64_t)x; memcpy(out, &v, 8); break; }
    case DK_F16: { uint16_t v = f32_to_f16((float)x); memcpy(out, &v, 2); break; }
    case DK_BF16: { uint16_t v = f32_to_bf16((float)x); memcpy(out, &v, 2); break; }
    case DK_F32: { float v = (float)x; memcpy(out, &v, 4); break; }
    case DK_F64: memcpy(out, &x, 8); break;
    case DK_BOOL: { uint8_t v = x != 0; memcpy(out, &v, 1); break; }
    default: break;
    }
}

const char *dk__shape_str(const int64_t *shape, int n, char *buf, size_t cap)
{
    size_t len = 0;
    len += (size_t)snprintf(buf + len, cap - len, "(");
    for (int i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "",
                                (long long)shape[i]);
    if (n == 1 && len < cap) len += (size_t)snprintf(buf + len, cap - len, ",");
    if (len < cap) snprintf(buf + len, cap - len, ")");
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Views                                                                     */

int dk__rv_make(dk__rv *v, const dk_tensor *t, int nb, int dim, const int64_t *sizes,
                const char *func, const char *what)
{
    memset(v, 0, sizeof *v);
    if (!t) return dk__error(DK_EINVAL, func, "%s is NULL", what);
    size_t isz = dk_dtype_size(t->dtype);
    if (!isz) return dk__error(DK_EINVAL, func, "%s: invalid dtype", what);
    if (t->ndim < 1 || t->ndim > DK_MAX_DIMS)
        return dk__error(DK_EINVAL, func, "%s: ndim = %d outside [1, %d]", what, (int)t->ndim,
                         DK_MAX_DIMS);
    if (nb < 0 || dim < nb || dim >= t->ndim)
        return dk__error(DK_EINVAL, func,
                         "%s: needs batch dims (%d) <= non-uniform dim (%d) < ndim (%d)", what,
                         nb, dim, (int)t->ndim);
    int64_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0)
            return dk__error(DK_EINVAL, func, "%s: negative extent %lld in dim %d", what,
                             (long long)t->shape[i], i);
        numel *= t->shape[i];
    }
    if (numel > 0 && !t->data) return dk__error(DK_EINVAL, func, "%s: data is NULL", what);
    v->base = (char *)t->data;
    v->dtype = t->dtype;
    v->isz = isz;
    v->sizes = sizes;
    v->S = 1;
    for (int i = 0; i < nb; i++) {
        v->bshape[i] = t->shape[i];
        v->bstride[i] = t->strides[i];
        v->S *= t->shape[i];
    }
    v->nb = nb;
    v->A = 1;
    for (int i = nb; i < dim; i++) {
        v->ashape[v->na] = t->shape[i];
        v->astride[v->na] = t->strides[i];
        v->na++;
        v->A *= t->shape[i];
    }
    v->N = t->shape[dim];
    v->nstride = t->strides[dim];
    /* Trailing dims, innermost first, merged where one steps over the next. */
    int64_t fs[DK_MAX_DIMS], ft[DK_MAX_DIMS];
    int nf = 0;
    v->F = 1;
    for (int i = dim + 1; i < t->ndim; i++) v->tshape[v->nt++] = t->shape[i];
    for (int i = t->ndim - 1; i > dim; i--) {
        int64_t e = t->shape[i], st = t->strides[i];
        v->F *= e;
        if (e == 1) continue;
        if (nf > 0 && st == fs[nf - 1] * ft[nf - 1]) {
            fs[nf - 1] *= e;
            continue;
        }
        fs[nf] = e;
        ft[nf] = st;
        nf++;
    }
    v->nf = nf;
    for (int i = 0; i < nf; i++) {   /* store outermost first */
        v->fshape[i] = fs[nf - 1 - i];
        v->fstride[i] = ft[nf - 1 - i];
    }
    v->fcontig = v->F == 0 || nf == 0 || (nf == 1 && v->fstride[0] == 1);
    return DK_OK;
}

int dk__rv_check_sizes(const dk__rv *v, const char *func, const char *what)
{
    if (!v->sizes) return DK_OK;
    for (int64_t s = 0; s < v->S; s++) {
        if (v->sizes[s] < 0 || v->sizes[s] > v->N)
            return dk__error(DK_ERANGE, func, "%s: sample %lld has size %lld outside [0, %lld]",
                             what, (long long)s, (long long)v->sizes[s], (long long)v->N);
    }
    return DK_OK;
}

int dk__rv_ragged(dk__rv *v, const dk_ragged *r, const char *func, const char *what)
{
    if (!r) return dk__error(DK_EINVAL, func, "%s is NULL", what);
    if (r->batch_dims < 1)
        return dk__error(DK_EINVAL, func, "%s: batch_dims = %d, needs >= 1", what,
                         (int)r->batch_dims);
    int rc = dk__rv_make(v, &r->data, r->batch_dims, r->dim, r->sizes, func, what);
    if (rc) return rc;
    return dk__rv_check_sizes(v, func, what);
}

int dk__rv_index(dk__rv *v, const dk_ragged *r, const char *func, const char *what)
{
    int rc = dk__rv_ragged(v, r, func, what);
    if (rc) return rc;
    if (v->dtype != DK_I64 && v->dtype != DK_I32)
        return dk__error(DK_EINVAL, func, "%s: indices must be int64 or int32, not %s", what,
                         dk_dtype_name(v->dtype));
    if (r->dim != r->batch_dims || r->data.ndim != r->batch_dims + 1)
        return dk__error(DK_EINVAL, func,
                         "%s: an index batch has shape (*batch, K) with its non-uniform dim "
                         "last; got ndim %d, batch_dims %d, dim %d",
                         what, (int)r->data.ndim, (int)r->batch_dims, (int)r->dim);
    return DK_OK;
}

int dk__rv_mask(dk__rv *v, const dk_tensor *t, int nb, const char *func, const char *what)
{
    if (!t) return dk__error(DK_EINVAL, func, "%s is NULL", what);
    if (t->ndim != nb + 1)
        return dk__error(DK_EINVAL, func, "%s: a mask has shape (*batch, M): %d dims, got %d",
                         what, nb + 1, (int)t->ndim);
    int rc = dk__rv_make(v, t, nb, nb, NULL, func, what);
    if (rc) return rc;
    if (v->dtype != DK_BOOL && v->dtype != DK_U8 && v->dtype != DK_I8)
        return dk__error(DK_EINVAL, func, "%s: a mask must be bool or uint8, not %s", what,
                         dk_dtype_name(v->dtype));
    return DK_OK;
}

int dk__rv_same_batch(const dk__rv *a, const dk__rv *b, const char *func, const char *an,
                      const char *bn)
{
    int same = a->nb == b->nb;
    for (int i = 0; same && i < a->nb; i++) same = a->bshape[i] == b->bshape[i];
    if (same) return DK_OK;
    char s1[96], s2[96];
    return dk__error(DK_EINVAL, func, "%s has batch shape %s but %s has %s", an,
                     dk__shape_str(a->bshape, a->nb, s1, sizeof s1), bn,
                     dk__shape_str(b->bshape, b->nb, s2, sizeof s2));
}

int dk__rv_same_inner(const dk__rv *a, const dk__rv *b, int dtype, const char *func,
                      const char *an, const char *bn)
{
    char s1[96], s2[96];
    if (dtype && a->dtype != b->dtype)
        return dk__error(DK_EINVAL, func, "%s is %s but %s is %s", an, dk_dtype_name(a->dtype), bn,
                         dk_dtype_name(b->dtype));
    int same = a->na == b->na;
    for (int i = 0; same && i < a->na; i++) same = a->ashape[i] == b->ashape[i];
    if (!same)
        return dk__error(DK_EINVAL, func,
                         "%s has dims %s between batch and indexed dim but %s has %s", an,
                         dk__shape_str(a->ashape, a->na, s1, sizeof s1), bn,
                         dk__shape_str(b->ashape, b->na, s2, sizeof s2));
    same = a->nt == b->nt;
    for (int i = 0; same && i < a->nt; i++) same = a->tshape[i] == b->tshape[i];
    if (!same)
        return dk__error(DK_EINVAL, func, "%s has trailing dims %s after the indexed dim but %s has %s",
                         an, dk__shape_str(a->tshape, a->nt, s1, sizeof s1), bn,
                         dk__shape_str(b->tshape, b->nt, s2, sizeof s2));
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* F-blocks                                                                  */

#define blk_off dk__blk_off

void dk__blk_copy(const dk__rv *dv, char *d, const dk__rv *sv, const char *s)
{
    size_t isz = dv->isz;
    if (dv->fcontig && sv->fcontig) {
        memcpy(d, s, (size_t)dv->F * isz);
        return;
    }
    for (int64_t k = 0; k < dv->F; k++)
        memcpy(d + blk_off(dv, k) * (int64_t)isz, s + blk_off(sv, k) * (int64_t)isz, isz);
}

void dk__blk_add(const dk__rv *dv, char *d, const dk__rv *sv, const char *s)
{
    int cont = dv->fcontig && sv->fcontig;
    if (dv->dtype == DK_F32) {
        float *dd = (float *)(void *)d;
        const float *ss = (const float *)(const void *)s;
        if (cont)
            for (int64_t k = 0; k < dv->F; k++) dd[k] += ss[k];
        else
            for (int64_t k = 0; k < dv->F; k++) dd[blk_off(dv, k)] += ss[blk_off(sv, k)];
    } else {
        double *dd = (double *)(void *)d;
        const double *ss = (const double *)(const void *)s;
        if (cont)
            for (int64_t k = 0; k < dv->F; k++) dd[k] += ss[k];
        else
            for (int64_t k = 0; k < dv->F; k++) dd[blk_off(dv, k)] += ss[blk_off(sv, k)];
    }
}

void dk__blk_fill(const dk__rv *dv, char *d, const void *value)
{
    size_t isz = dv->isz;
    if (dv->fcontig) {
        for (int64_t k = 0; k < dv->F; k++) memcpy(d + k * (int64_t)isz, value, isz);
        return;
    }
    for (int64_t k = 0; k < dv->F; k++) memcpy(d + blk_off(dv, k) * (int64_t)isz, value, isz);
}

void dk__blk_scale(const dk__rv *dv, char *d, double c)
{
    for (int64_t k = 0; k < dv->F; k++) {
        int64_t o = dv->fcontig ? k : blk_off(dv, k);
        if (dv->dtype == DK_F32)
            ((float *)(void *)d)[o] = (float)(((float *)(void *)d)[o] * c);
        else
            ((double *)(void *)d)[o] *= c;
    }
}

/* ------------------------------------------------------------------------ */
/* Descriptor                                                                */

int dk_ragged_validate(const dk_ragged *r)
{
    dk__rv v;
    return dk__rv_ragged(&v, r, __func__, "ragged");
}

int dk_ragged_wrap(dk_ragged *r, const dk_tensor *data, int batch_dims, int dim, int64_t *sizes)
{
    if (!r || !data) return dk__error(DK_EINVAL, __func__, "NULL argument");
    memset(r, 0, sizeof *r);
    r->data = *data;
    r->data.owner = NULL;
    r->sizes = sizes;
    r->batch_dims = batch_dims;
    r->dim = dim;
    dk__rv v;
    int rc = dk__rv_ragged(&v, r, __func__, "ragged");
    if (rc) memset(r, 0, sizeof *r);
    return rc;
}

int dk_ragged_alloc(dk_ragged *r, dk_dtype dtype, int ndim, const int64_t *shape, int batch_dims,
                    int dim)
{
    if (!r || !shape) return dk__error(DK_EINVAL, __func__, "NULL argument");
    memset(r, 0, sizeof *r);
    if (ndim < 1 || ndim > DK_MAX_DIMS || batch_dims < 1 || dim < batch_dims || dim >= ndim)
        return dk__error(DK_EINVAL, __func__,
                         "needs 1 <= batch_dims (%d) <= dim (%d) < ndim (%d) <= %d", batch_dims,
                         dim, ndim, DK_MAX_DIMS);
    int rc = dk_tensor_alloc(&r->data, dtype, ndim, shape);
    if (rc) return rc;
    size_t n = 1;
    for (int i = 0; i < batch_dims; i++) n *= (size_t)shape[i];
    rc = dk_buffer_alloc((n ? n : 1) * sizeof(int64_t), 1, &r->sizes_owner);
    if (rc) {
        dk_tensor_release(&r->data);
        memset(r, 0, sizeof *r);
        return rc;
    }
    r->sizes = (int64_t *)dk_buffer_data(r->sizes_owner);
    r->batch_dims = batch_dims;
    r->dim = dim;
    return DK_OK;
}

void dk_ragged_release(dk_ragged *r)
{
    if (!r) return;
    dk_tensor_release(&r->data);
    dk_buffer_unref(r->sizes_owner);
    memset(r, 0, sizeof *r);
}

int64_t dk_ragged_num_samples(const dk_ragged *r)
{
    if (!r) return 0;
    int64_t n = 1;
    for (int i = 0; i < r->batch_dims && i < r->data.ndim; i++) n *= r->data.shape[i];
    return n;
}

int64_t dk_ragged_max_size(const dk_ragged *r)
{
    if (!r || r->dim < 0 || r->dim >= r->data.ndim) return 0;
    return r->data.shape[r->dim];
}

int64_t dk_ragged_size(const dk_ragged *r, int64_t i)
{
    if (!r || i < 0 || i >= dk_ragged_num_samples(r)) return -1;
    return r->sizes ? r->sizes[i] : dk_ragged_max_size(r);
}

int64_t dk_ragged_total(const dk_ragged *r)
{
    int64_t n = dk_ragged_num_samples(r), t = 0;
    for (int64_t i = 0; i < n; i++) t += dk_ragged_size(r, i);
    return t;
}

int dk_ragged_sample(const dk_ragged *r, int64_t i, dk_tensor *view)
{
    dk__rv v;
    int rc = dk__rv_ragged(&v, r, __func__, "ragged");
    if (rc) return rc;
    if (!view) return dk__error(DK_EINVAL, __func__, "view is NULL");
    if (i < 0 || i >= v.S)
        return dk__error(DK_ERANGE, __func__, "sample %lld outside [0, %lld)", (long long)i,
                         (long long)v.S);
    memset(view, 0, sizeof *view);
    int nb = r->batch_dims;
    view->dtype = r->data.dtype;
    view->ndim = r->data.ndim - nb;
    for (int d = nb; d < r->data.ndim; d++) {
        view->shape[d - nb] = r->data.shape[d];
        view->strides[d - nb] = r->data.strides[d];
    }
    view->shape[r->dim - nb] = dk__rv_size(&v, i);
    view->data = r->data.data ? dk__rv_at(&v, dk__rv_soff(&v, i)) : NULL;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Mask <-> sizes, fillers                                                   */

typedef struct mask_job {
    dk__rv m;
    const int64_t *sizes;
    int64_t *out_sizes;
    int64_t *bad;           /* per sample: first bad position, -1 if none */
} mask_job;

static void mask_write_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const mask_job *j = ctx;
    for (int64_t s = b; s < e; s++) {
        int64_t so = dk__rv_soff(&j->m, s), n = j->sizes ? j->sizes[s] : j->m.N;
        for (int64_t k = 0; k < j->m.N; k++)
            ((uint8_t *)j->m.base)[so + k * j->m.nstride] = k < n;
    }
}

int dk_ragged_mask(dk_pool *pool, const dk_ragged *r, dk_tensor *mask)
{
    dk__rv v;
    mask_job j;
    int rc = dk__rv_ragged(&v, r, __func__, "ragged");
    if (!rc) rc = dk__rv_mask(&j.m, mask, r->batch_dims, __func__, "mask");
    if (!rc) rc = dk__rv_same_batch(&v, &j.m, __func__, "ragged", "mask");
    if (rc) return rc;
    if (j.m.N != v.N)
        return dk__error(DK_EINVAL, __func__, "mask has %lld columns but the padded size is %lld",
                         (long long)j.m.N, (long long)v.N);
    j.sizes = r->sizes;
    return dk_pool_for(pool, v.S, 0, mask_write_range, &j);
}

static void mask_count_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const mask_job *j = ctx;
    for (int64_t s = b; s < e; s++) {
        int64_t so = dk__rv_soff(&j->m, s), n = 0, bad = -1;
        int seen_false = 0;
        for (int64_t k = 0; k < j->m.N; k++) {
            int t = dk__rv_bool(&j->m, so + k * j->m.nstride);
            n += t;
            if (!t) seen_false = 1;
            else if (seen_false && bad < 0) bad = k;
        }
        j->out_sizes[s] = n;
        if (j->bad) j->bad[s] = bad;
    }
}

int dk_ragged_sizes_from_mask(dk_pool *pool, const dk_tensor *mask, int batch_dims,
                              int64_t *sizes)
{
    mask_job j;
    memset(&j, 0, sizeof j);
    int rc = dk__rv_mask(&j.m, mask, batch_dims, __func__, "mask");
    if (rc) return rc;
    if (batch_dims < 1) return dk__error(DK_EINVAL, __func__, "batch_dims must be >= 1");
    if (!sizes) return dk__error(DK_EINVAL, __func__, "sizes is NULL");
    j.out_sizes = sizes;
    j.bad = dk_malloc((size_t)(j.m.S ? j.m.S : 1) * sizeof(int64_t));
    if (!j.bad) return dk__error(DK_ENOMEM, __func__, "out of memory");
    rc = dk_pool_for(pool, j.m.S, 0, mask_count_range, &j);
    for (int64_t s = 0; !rc && s < j.m.S; s++) {
        if (j.bad[s] >= 0)
            rc = dk__error(DK_EINVALIDDATA, __func__,
                           "sample %lld: mask entry %lld is true after a false one (valid "
                           "entries must come first)",
                           (long long)s, (long long)j.bad[s]);
    }
    dk_free(j.bad);
    return rc;
}

int dk_ragged_count_mask(dk_pool *pool, const dk_tensor *mask, int batch_dims, int64_t *counts)
{
    mask_job j;
    memset(&j, 0, sizeof j);
    int rc = dk__rv_mask(&j.m, mask, batch_dims, __func__, "mask");
    if (rc) return rc;
    if (batch_dims < 1) return dk__error(DK_EINVAL, __func__, "batch_dims must be >= 1");
    if (!counts) return dk__error(DK_EINVAL, __func__, "counts is NULL");
    j.out_sizes = counts;
    return dk_pool_for(pool, j.m.S, 0, mask_count_range, &j);
}

typedef struct fill_job {
    dk__rv v;
    unsigned char value[16];
} fill_job;

static void set_padded_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const fill_job *j = ctx;
    const dk__rv *v = &j->v;
    for (int64_t s = b; s < e; s++) {
        int64_t so = dk__rv_soff(v, s), n = dk__rv_size(v, s);
        for (int64_t a = 0; a < v->A; a++) {
            int64_t ao = so + dk__rv_aoff(v, a);
            for (int64_t k = n; k < v->N; k++) dk__blk_fill(v, dk__rv_at(v, ao + k * v->nstride), j->value);
        }
    }
}

int dk_ragged_set_padded(dk_pool *pool, dk_ragged *r, double value)
{
    fill_job j;
    int rc = dk__rv_ragged(&j.v, r, __func__, "ragged");
    if (rc) return rc;
    if (!r->sizes) return DK_OK;
    dk__scalar_from_double(j.v.dtype, value, j.value);
    return dk_pool_for(pool, j.v.S, 0, set_padded_range, &j);
}

int dk_ragged_offsets(const dk_ragged *r, int64_t *offsets)
{
    dk__rv v;
    int rc = dk__rv_ragged(&v, r, __func__, "ragged");
    if (rc) return rc;
    if (!offsets) return dk__error(DK_EINVAL, __func__, "offsets is NULL");
    offsets[0] = 0;
    for (int64_t s = 0; s < v.S; s++) {
        if (__builtin_add_overflow(offsets[s], dk__rv_size(&v, s), &offsets[s + 1]))
            return dk__error(DK_EOVERFLOW, __func__, "total size overflows");
    }
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Packed form                                                               */

/* The packed values seen with the same (A, F) structure as the padded data:
 * shape (total, A dims..., 1, F dims...), batch dims 1, indexed dim 1 + na. */
static int packed_view(dk__rv *pv, const dk_tensor *values, const dk_ragged *r,
                       const char *func)
{
    if (!values) return dk__error(DK_EINVAL, func, "values is NULL");
    int nb = r->batch_dims, nd = r->data.ndim;
    int want = nd - nb;   /* total + the other non-batch dims */
    char s1[128], s2[128], s3[128];
    int64_t expect[DK_MAX_DIMS];
    expect[0] = values->ndim > 0 ? values->shape[0] : 0;
    int k = 1;
    for (int d = nb; d < nd; d++)
        if (d != r->dim) expect[k++] = r->data.shape[d];
    int ok = values->ndim == want;
    for (int i = 1; ok && i < want; i++) ok = values->shape[i] == expect[i];
    if (!ok)
        return dk__error(DK_EINVAL, func,
                         "packed values have shape %s; expected (total, ...) = %s for padded "
                         "data %s with dim %d",
                         dk__shape_str(values->shape, values->ndim, s1, sizeof s1),
                         dk__shape_str(expect, want, s2, sizeof s2),
                         dk__shape_str(r->data.shape, nd, s3, sizeof s3), (int)r->dim);
    if (values->dtype != r->data.dtype)
        return dk__error(DK_EINVAL, func, "packed values are %s but the padded data is %s",
                         dk_dtype_name(values->dtype), dk_dtype_name(r->data.dtype));
    dk_tensor t = *values;
    int na = r->dim - nb;
    /* Insert a unit dim at position 1 + na. */
    if (t.ndim + 1 > DK_MAX_DIMS)
        return dk__error(DK_EUNSUPPORTED, func, "too many dims for the packed view");
    for (int i = t.ndim; i > 1 + na; i--) {
        t.shape[i] = t.shape[i - 1];
        t.strides[i] = t.strides[i - 1];
    }
    t.shape[1 + na] = 1;
    t.strides[1 + na] = 0;
    t.ndim++;
    return dk__rv_make(pv, &t, 1, 1 + na, NULL, func, "values");
}

typedef struct pack_job {
    dk__rv v, pv;
    const int64_t *offsets;
    int to_packed;
    unsigned char filler[16];
} pack_job;

static void pack_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const pack_job *j = ctx;
    const dk__rv *v = &j->v, *pv = &j->pv;
    for (int64_t s = b; s < e; s++) {
        int64_t so = dk__rv_soff(v, s), n = j->offsets[s + 1] - j->offsets[s];
        for (int64_t k = 0; k < v->N; k++) {
            for (int64_t a = 0; a < v->A; a++) {
                char *pd = dk__rv_at(v, so + dk__rv_aoff(v, a) + k * v->nstride);
                if (k >= n) {
                    if (!j->to_packed) dk__blk_fill(v, pd, j->filler);
                    continue;
                }
                char *pp = dk__rv_at(pv, dk__rv_soff(pv, j->offsets[s] + k) + dk__rv_aoff(pv, a));
                if (j->to_packed)
                    dk__blk_copy(pv, pp, v, pd);
                else
                    dk__blk_copy(v, pd, pv, pp);
            }
            if (k >= n && j->to_packed) break;
        }
    }
}

int dk_ragged_to_packed(dk_pool *pool, const dk_ragged *r, dk_ragged_packed *out)
{
    pack_job j;
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    int rc = dk__rv_ragged(&j.v, r, __func__, "ragged");
    if (!rc) rc = packed_view(&j.pv, &out->values, r, __func__);
    if (rc) return rc;
    int64_t *off = out->offsets ? out->offsets : dk_malloc((size_t)(j.v.S + 1) * sizeof(int64_t));
    if (!off) return dk__error(DK_ENOMEM, __func__, "out of memory");
    rc = dk_ragged_offsets(r, off);
    if (!rc && off[j.v.S] != j.pv.S)
        rc = dk__error(DK_EINVAL, __func__, "packed values have %lld rows but the sizes sum to %lld",
                       (long long)j.pv.S, (long long)off[j.v.S]);
    if (!rc) {
        out->n_samples = j.v.S;
        j.offsets = off;
        j.to_packed = 1;
        rc = dk_pool_for(pool, j.v.S, 0, pack_range, &j);
    }
    if (off != out->offsets) dk_free(off);
    return rc;
}

int dk_ragged_from_packed(dk_pool *pool, const dk_ragged_packed *in, double filler,
                          dk_ragged *out)
{
    pack_job j;
    if (!out || !in || !in->offsets) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (!out->sizes) return dk__error(DK_EINVAL, __func__, "out->sizes is NULL");
    const int64_t *offsets = in->offsets;
    dk_ragged probe = *out;
    probe.sizes = NULL;
    int rc = dk__rv_ragged(&j.v, &probe, __func__, "out");
    if (!rc) rc = packed_view(&j.pv, &in->values, out, __func__);
    if (rc) return rc;
    if (in->n_samples != j.v.S)
        return dk__error(DK_EINVAL, __func__, "the packed batch has %lld samples but out holds %lld",
                         (long long)in->n_samples, (long long)j.v.S);
    if (offsets[0] != 0)
        return dk__error(DK_EINVAL, __func__, "offsets[0] = %lld, must be 0", (long long)offsets[0]);
    for (int64_t s = 0; s < j.v.S; s++) {
        int64_t n = offsets[s + 1] - offsets[s];
        if (n < 0)
            return dk__error(DK_EINVAL, __func__, "offsets decrease at %lld: %lld -> %lld",
                             (long long)s, (long long)offsets[s], (long long)offsets[s + 1]);
        if (n > j.v.N)
            return dk__error(DK_ERANGE, __func__,
                             "sample %lld has %lld entries, more than the padded size %lld",
                             (long long)s, (long long)n, (long long)j.v.N);
    }
    if (offsets[j.v.S] != j.pv.S)
        return dk__error(DK_EINVAL, __func__, "offsets end at %lld but values have %lld rows",
                         (long long)offsets[j.v.S], (long long)j.pv.S);
    for (int64_t s = 0; s < j.v.S; s++) out->sizes[s] = offsets[s + 1] - offsets[s];
    j.offsets = offsets;
    j.to_packed = 0;
    dk__scalar_from_double(j.v.dtype, filler, j.filler);
    return dk_pool_for(pool, j.v.S, 0, pack_range, &j);
}

/* ------------------------------------------------------------------------ */
/* Combine                                                                   */

typedef struct combine_job {
    dk__rv out;
    dk__rv *parts;
    unsigned char filler[16];
} combine_job;

static void combine_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const combine_job *j = ctx;
    const dk__rv *o = &j->out;
    for (int64_t s = b; s < e; s++) {
        const dk__rv *p = &j->parts[s];
        int64_t so = dk__rv_soff(o, s);
        for (int64_t a = 0; a < o->A; a++) {
            int64_t oa = so + dk__rv_aoff(o, a), pa = dk__rv_aoff(p, a);
            for (int64_t k = 0; k < o->N; k++) {
                char *d = dk__rv_at(o, oa + k * o->nstride);
                if (k < p->N)
                    dk__blk_copy(o, d, p, dk__rv_at(p, pa + k * p->nstride));
                else
                    dk__blk_fill(o, d, j->filler);
            }
        }
    }
}

int dk_ragged_combine(dk_pool *pool, int64_t n, const dk_tensor *parts, int dim, double filler,
                      dk_ragged *out)
{
    if (!out || (n > 0 && !parts)) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (!out->sizes) return dk__error(DK_EINVAL, __func__, "out->sizes is NULL");
    combine_job j;
    dk_ragged probe = *out;
    probe.sizes = NULL;
    int rc = dk__rv_ragged(&j.out, &probe, __func__, "out");
    if (rc) return rc;
    if (out->batch_dims != 1 || out->dim != dim + 1)
        return dk__error(DK_EINVAL, __func__,
                         "out must have batch_dims 1 and dim = %d + 1, got %d and %d", dim,
                         (int)out->batch_dims, (int)out->dim);
    if (j.out.S != n)
        return dk__error(DK_EINVAL, __func__, "out holds %lld samples but %lld parts were given",
                         (long long)j.out.S, (long long)n);
    j.parts = dk_malloc((size_t)(n ? n : 1) * sizeof *j.parts);
    if (!j.parts) return dk__error(DK_ENOMEM, __func__, "out of memory");
    char s1[128], s2[128];
    for (int64_t i = 0; i < n && !rc; i++) {
        const dk_tensor *p = &parts[i];
        if (p->ndim != out->data.ndim - 1 || p->dtype != out->data.dtype) {
            rc = dk__error(DK_EINVAL, __func__, "part %lld is %s %s; expected %d dims of %s",
                           (long long)i, dk_dtype_name(p->dtype),
                           dk__shape_str(p->shape, p->ndim, s1, sizeof s1),
                           (int)out->data.ndim - 1, dk_dtype_name(out->data.dtype));
            break;
        }
        for (int d = 0; d < p->ndim && !rc; d++) {
            if (d != dim && p->shape[d] != out->data.shape[d + 1])
                rc = dk__error(DK_EINVAL, __func__,
                               "part %lld has shape %s but the others have %s (dim %d may "
                               "differ)",
                               (long long)i, dk__shape_str(p->shape, p->ndim, s1, sizeof s1),
                               dk__shape_str(out->data.shape + 1, p->ndim, s2, sizeof s2), dim);
        }
        if (rc) break;
        if (p->shape[dim] > j.out.N) {
            rc = dk__error(DK_ERANGE, __func__, "part %lld has %lld entries, more than the padded size %lld",
                           (long long)i, (long long)p->shape[dim], (long long)j.out.N);
            break;
        }
        /* Parts are viewed with no batch dim: S = 1, same middle/trailing. */
        rc = dk__rv_make(&j.parts[i], p, 0, dim, NULL, __func__, "part");
    }
    if (!rc) {
        for (int64_t i = 0; i < n; i++) out->sizes[i] = parts[i].shape[dim];
        dk__scalar_from_double(j.out.dtype, filler, j.filler);
        rc = dk_pool_for(pool, n, 0, combine_range, &j);
    }
    dk_free(j.parts);
    return rc;
}
