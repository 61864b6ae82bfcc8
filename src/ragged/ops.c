/*
 * Batched indexing ops over ragged batches, forward and backward. Every op
 * validates its indices on the calling thread first (so errors name the
 * lowest offending sample and position and are raised where dk_errmsg() is
 * read), then moves data in parallel over samples: each sample's entries are
 * written by one task in index order, which makes ADD with repeated indices
 * deterministic.
 */
#include <math.h>

#include "ragged_impl.h"

/* ------------------------------------------------------------------------ */
/* The general move                                                          */

typedef struct map_job {
    dk__rv src, dst, si, di;   /* si / di: base NULL when absent */
    int has_si, has_di;
    dk_ragged_mode mode;
    int fill_rest;             /* dst positions j >= count get `filler` (no dst idx) */
    int zero_dst;              /* dst zeroed (every position) before the move */
    unsigned char filler[16];
} map_job;

static int64_t map_count(const map_job *j, int64_t s)
{
    return j->has_si ? dk__rv_size(&j->si, s) : dk__rv_size(&j->di, s);
}

static void map_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const map_job *j = ctx;
    const dk__rv *src = &j->src, *dst = &j->dst;
    unsigned char zero[16] = {0};
    for (int64_t s = b; s < e; s++) {
        int64_t n = map_count(j, s);
        int64_t ss = dk__rv_soff(src, s), ds = dk__rv_soff(dst, s);
        int64_t sio = j->has_si ? dk__rv_soff(&j->si, s) : 0;
        int64_t dio = j->has_di ? dk__rv_soff(&j->di, s) : 0;
        for (int64_t a = 0; a < src->A; a++) {
            int64_t sa = ss + dk__rv_aoff(src, a), da = ds + dk__rv_aoff(dst, a);
            if (j->zero_dst)
                for (int64_t k = 0; k < dst->N; k++)
                    dk__blk_fill(dst, dk__rv_at(dst, da + k * dst->nstride), zero);
            for (int64_t k = 0; k < n; k++) {
                int64_t si = j->has_si ? dk__rv_idx(&j->si, sio + k * j->si.nstride) : k;
                int64_t di = j->has_di ? dk__rv_idx(&j->di, dio + k * j->di.nstride) : k;
                char *d = dk__rv_at(dst, da + di * dst->nstride);
                const char *sp = dk__rv_at(src, sa + si * src->nstride);
                if (j->mode == DK_RAGGED_ADD)
                    dk__blk_add(dst, d, src, sp);
                else
                    dk__blk_copy(dst, d, src, sp);
            }
            if (j->fill_rest)
                for (int64_t k = n; k < dst->N; k++)
                    dk__blk_fill(dst, dk__rv_at(dst, da + k * dst->nstride), j->filler);
        }
    }
}

/* Checks the index ranges (and repeats for SET) of a prepared job. */
static int map_check(const map_job *j, const char *func, const char *siname, const char *diname)
{
    const dk__rv *src = &j->src, *dst = &j->dst;
    int64_t *seen = NULL;
    int check_rep = j->has_di && j->mode == DK_RAGGED_SET;
    if (check_rep && dst->N > 0) {
        seen = dk_calloc((size_t)dst->N, sizeof *seen);
        if (!seen) return dk__error(DK_ENOMEM, func, "out of memory");
    }
    int rc = DK_OK;
    for (int64_t s = 0; s < src->S && !rc; s++) {
        int64_t n = map_count(j, s);
        if (j->has_si && j->has_di && dk__rv_size(&j->di, s) != n) {
            rc = dk__error(DK_EINVAL, func, "sample %lld: %s has %lld entries but %s has %lld",
                           (long long)s, siname, (long long)n, diname,
                           (long long)dk__rv_size(&j->di, s));
            break;
        }
        int64_t slimit = dk__rv_size(src, s), dlimit = dst->N;
        if (!j->has_si && n > slimit) {
            rc = dk__error(DK_ERANGE, func, "sample %lld: %lld entries to move but the source holds %lld",
                           (long long)s, (long long)n, (long long)slimit);
            break;
        }
        if (!j->has_di && n > dlimit) {
            rc = dk__error(DK_ERANGE, func,
                           "sample %lld: %lld entries to move but the destination holds %lld",
                           (long long)s, (long long)n, (long long)dlimit);
            break;
        }
        int64_t sio = j->has_si ? dk__rv_soff(&j->si, s) : 0;
        int64_t dio = j->has_di ? dk__rv_soff(&j->di, s) : 0;
        for (int64_t k = 0; k < n; k++) {
            if (j->has_si) {
                int64_t x = dk__rv_idx(&j->si, sio + k * j->si.nstride);
                if (x < 0 || x >= slimit) {
                    rc = dk__error(DK_ERANGE, func, "%s: sample %lld, entry %lld: index %lld outside [0, %lld)",
                                   siname, (long long)s, (long long)k, (long long)x,
                                   (long long)slimit);
                    break;
                }
            }
            if (j->has_di) {
                int64_t x = dk__rv_idx(&j->di, dio + k * j->di.nstride);
                if (x < 0 || x >= dlimit) {
                    rc = dk__error(DK_ERANGE, func, "%s: sample %lld, entry %lld: index %lld outside [0, %lld)",
                                   diname, (long long)s, (long long)k, (long long)x,
                                   (long long)dlimit);
                    break;
                }
                if (seen) {
                    if (seen[x]) {
                        rc = dk__error(DK_EINVAL, func,
                                       "%s: sample %lld: entries %lld and %lld both write "
                                       "position %lld",
                                       diname, (long long)s, (long long)(seen[x] - 1),
                                       (long long)k, (long long)x);
                        break;
                    }
                    seen[x] = k + 1;
                }
            }
        }
        if (seen)   /* reset only what this sample touched */
            for (int64_t k = 0; k < n; k++) {
                int64_t x = dk__rv_idx(&j->di, dio + k * j->di.nstride);
                if (x >= 0 && x < dlimit) seen[x] = 0;
            }
    }
    dk_free(seen);
    return rc;
}

/* Prepares views and shape checks shared by the index ops. */
static int map_prepare(map_job *j, const dk_ragged *src, const dk_ragged *src_idx,
                       const dk_ragged *dst, const dk_ragged *dst_idx, dk_ragged_mode mode,
                       int dst_sizes, const char *func, const char *sname, const char *dname,
                       const char *siname, const char *diname)
{
    memset(j, 0, sizeof *j);
    int rc = dk__rv_ragged(&j->src, src, func, sname);
    if (rc) return rc;
    if (dst_sizes) {
        rc = dk__rv_ragged(&j->dst, dst, func, dname);
    } else {
        dk_ragged probe;
        if (!dst) return dk__error(DK_EINVAL, func, "%s is NULL", dname);
        probe = *dst;
        probe.sizes = NULL;
        rc = dk__rv_ragged(&j->dst, &probe, func, dname);
    }
    if (rc) return rc;
    if (!src_idx && !dst_idx) return dk__error(DK_EINVAL, func, "no index batch given");
    if (src_idx) {
        rc = dk__rv_index(&j->si, src_idx, func, siname);
        if (!rc) rc = dk__rv_same_batch(&j->si, &j->src, func, siname, sname);
        if (rc) return rc;
        j->has_si = 1;
    }
    if (dst_idx) {
        rc = dk__rv_index(&j->di, dst_idx, func, diname);
        if (!rc) rc = dk__rv_same_batch(&j->di, &j->src, func, diname, sname);
        if (rc) return rc;
        j->has_di = 1;
    }
    rc = dk__rv_same_batch(&j->src, &j->dst, func, sname, dname);
    if (!rc) rc = dk__rv_same_inner(&j->src, &j->dst, 1, func, sname, dname);
    if (rc) return rc;
    if (mode != DK_RAGGED_SET && mode != DK_RAGGED_ADD)
        return dk__error(DK_EINVAL, func, "mode %d is neither SET nor ADD", (int)mode);
    if (mode == DK_RAGGED_ADD && !dk__is_float(j->dst.dtype))
        return dk__error(DK_EUNSUPPORTED, func, "ADD needs float32 or float64 data, not %s",
                         dk_dtype_name(j->dst.dtype));
    j->mode = mode;
    return DK_OK;
}

int dk_ragged_index_map(dk_pool *pool, const dk_ragged *src, const dk_ragged *src_idx,
                        dk_ragged *dst, const dk_ragged *dst_idx, dk_ragged_mode mode)
{
    map_job j;
    int rc = map_prepare(&j, src, src_idx, dst, dst_idx, mode, 0, __func__, "src", "dst",
                         "src_idx", "dst_idx");
    if (!rc) rc = map_check(&j, __func__, "src_idx", "dst_idx");
    if (rc) return rc;
    return dk_pool_for(pool, j.src.S, 0, map_range, &j);
}

int dk_ragged_index_access(dk_pool *pool, const dk_ragged *in, const dk_ragged *idx,
                           double filler, dk_ragged *out)
{
    map_job j;
    int rc = map_prepare(&j, in, idx, out, NULL, DK_RAGGED_SET, 0, __func__, "in", "out", "idx",
                         "out");
    if (!rc) rc = map_check(&j, __func__, "idx", "out");
    if (rc) return rc;
    j.fill_rest = 1;
    dk__scalar_from_double(j.dst.dtype, filler, j.filler);
    rc = dk_pool_for(pool, j.src.S, 0, map_range, &j);
    if (!rc && out->sizes)
        for (int64_t s = 0; s < j.src.S; s++) out->sizes[s] = dk__rv_size(&j.si, s);
    return rc;
}

int dk_ragged_index_access_backward(dk_pool *pool, const dk_ragged *grad_out,
                                    const dk_ragged *idx, dk_ragged *grad_in)
{
    map_job j;
    int rc = map_prepare(&j, grad_out, NULL, grad_in, idx, DK_RAGGED_ADD, 0, __func__,
                         "grad_out", "grad_in", "grad_out", "idx");
    if (!rc) rc = map_check(&j, __func__, "grad_out", "idx");
    if (rc) return rc;
    j.zero_dst = 1;
    return dk_pool_for(pool, j.src.S, 0, map_range, &j);
}

int dk_ragged_index_write(dk_pool *pool, const dk_ragged *src, const dk_ragged *idx,
                          dk_ragged *dst)
{
    map_job j;
    int rc = map_prepare(&j, src, NULL, dst, idx, DK_RAGGED_SET, 0, __func__, "src", "dst", "src",
                         "idx");
    if (!rc) rc = map_check(&j, __func__, "src", "idx");
    if (rc) return rc;
    return dk_pool_for(pool, j.src.S, 0, map_range, &j);
}

/* ------------------------------------------------------------------------ */
/* Fill at indices, masks from indices                                       */

typedef struct ifill_job {
    dk__rv dst, idx;
    unsigned char value[16];
    int as_mask;   /* dst is a (*batch, M) mask: zero it, then set 1 */
} ifill_job;

static void ifill_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const ifill_job *j = ctx;
    const dk__rv *d = &j->dst;
    for (int64_t s = b; s < e; s++) {
        int64_t ds = dk__rv_soff(d, s), io = dk__rv_soff(&j->idx, s);
        int64_t n = dk__rv_size(&j->idx, s);
        if (j->as_mask)
            for (int64_t k = 0; k < d->N; k++) ((uint8_t *)d->base)[ds + k * d->nstride] = 0;
        for (int64_t a = 0; a < d->A; a++) {
            int64_t da = ds + dk__rv_aoff(d, a);
            for (int64_t k = 0; k < n; k++) {
                int64_t x = dk__rv_idx(&j->idx, io + k * j->idx.nstride);
                dk__blk_fill(d, dk__rv_at(d, da + x * d->nstride), j->value);
            }
        }
    }
}

static int ifill_check(const ifill_job *j, const char *func)
{
    for (int64_t s = 0; s < j->idx.S; s++) {
        int64_t io = dk__rv_soff(&j->idx, s), n = dk__rv_size(&j->idx, s);
        for (int64_t k = 0; k < n; k++) {
            int64_t x = dk__rv_idx(&j->idx, io + k * j->idx.nstride);
            if (x < 0 || x >= j->dst.N)
                return dk__error(DK_ERANGE, func,
                                 "idx: sample %lld, entry %lld: index %lld outside [0, %lld)",
                                 (long long)s, (long long)k, (long long)x, (long long)j->dst.N);
        }
    }
    return DK_OK;
}

int dk_ragged_index_fill(dk_pool *pool, dk_ragged *dst, const dk_ragged *idx, double value)
{
    ifill_job j;
    memset(&j, 0, sizeof j);
    if (!dst) return dk__error(DK_EINVAL, __func__, "dst is NULL");
    dk_ragged probe = *dst;
    probe.sizes = NULL;
    int rc = dk__rv_ragged(&j.dst, &probe, __func__, "dst");
    if (!rc) rc = dk__rv_index(&j.idx, idx, __func__, "idx");
    if (!rc) rc = dk__rv_same_batch(&j.idx, &j.dst, __func__, "idx", "dst");
    if (!rc) rc = ifill_check(&j, __func__);
    if (rc) return rc;
    dk__scalar_from_double(j.dst.dtype, value, j.value);
    return dk_pool_for(pool, j.dst.S, 0, ifill_range, &j);
}

int dk_ragged_mask_from_indices(dk_pool *pool, const dk_ragged *idx, dk_tensor *mask)
{
    ifill_job j;
    memset(&j, 0, sizeof j);
    int rc = dk__rv_index(&j.idx, idx, __func__, "idx");
    if (!rc) rc = dk__rv_mask(&j.dst, mask, idx->batch_dims, __func__, "mask");
    if (!rc) rc = dk__rv_same_batch(&j.idx, &j.dst, __func__, "idx", "mask");
    if (!rc) rc = ifill_check(&j, __func__);
    if (rc) return rc;
    j.value[0] = 1;
    j.as_mask = 1;
    return dk_pool_for(pool, j.dst.S, 0, ifill_range, &j);
}

/* ------------------------------------------------------------------------ */
/* Boolean selection                                                         */

typedef struct bool_job {
    dk__rv src, dst, mask;
    int op;                  /* 0 indices, 1 select, 2 write */
    unsigned char filler[16];
} bool_job;

static void bool_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const bool_job *j = ctx;
    const dk__rv *m = &j->mask, *src = &j->src, *dst = &j->dst;
    for (int64_t s = b; s < e; s++) {
        int64_t mo = dk__rv_soff(m, s);
        if (j->op == 0) {
            int64_t o = dk__rv_soff(dst, s), n = 0;
            for (int64_t k = 0; k < m->N; k++)
                if (dk__rv_bool(m, mo + k * m->nstride)) {
                    int64_t at = o + n * dst->nstride;
                    if (dst->dtype == DK_I64)
                        ((int64_t *)(void *)dst->base)[at] = k;
                    else
                        ((int32_t *)(void *)dst->base)[at] = (int32_t)k;
                    n++;
                }
            for (int64_t k = n; k < dst->N; k++) {
                int64_t at = o + k * dst->nstride;
                if (dst->dtype == DK_I64)
                    ((int64_t *)(void *)dst->base)[at] = 0;
                else
                    ((int32_t *)(void *)dst->base)[at] = 0;
            }
            continue;
        }
        int64_t ss = dk__rv_soff(src, s), ds = dk__rv_soff(dst, s);
        for (int64_t a = 0; a < src->A; a++) {
            int64_t sa = ss + dk__rv_aoff(src, a), da = ds + dk__rv_aoff(dst, a), n = 0;
            for (int64_t k = 0; k < m->N; k++) {
                if (!dk__rv_bool(m, mo + k * m->nstride)) continue;
                if (j->op == 1)
                    dk__blk_copy(dst, dk__rv_at(dst, da + n * dst->nstride), src,
                                 dk__rv_at(src, sa + k * src->nstride));
                else
                    dk__blk_copy(dst, dk__rv_at(dst, da + k * dst->nstride), src,
                                 dk__rv_at(src, sa + n * src->nstride));
                n++;
            }
            if (j->op == 1)
                for (int64_t k = n; k < dst->N; k++)
                    dk__blk_fill(dst, dk__rv_at(dst, da + k * dst->nstride), j->filler);
        }
    }
}

/* counts of the mask per sample into a new array (caller frees). */
static int bool_counts(const bool_job *j, int64_t **out, const char *func)
{
    int64_t *c = dk_malloc((size_t)(j->mask.S ? j->mask.S : 1) * sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, func, "out of memory");
    for (int64_t s = 0; s < j->mask.S; s++) {
        int64_t mo = dk__rv_soff(&j->mask, s), n = 0;
        for (int64_t k = 0; k < j->mask.N; k++) n += dk__rv_bool(&j->mask, mo + k * j->mask.nstride);
        c[s] = n;
    }
    *out = c;
    return DK_OK;
}

int dk_ragged_indices_from_mask(dk_pool *pool, const dk_tensor *mask, int batch_dims,
                                dk_ragged *out)
{
    bool_job j;
    memset(&j, 0, sizeof j);
    if (!out || !out->sizes) return dk__error(DK_EINVAL, __func__, "out or out->sizes is NULL");
    if (batch_dims < 1) return dk__error(DK_EINVAL, __func__, "batch_dims must be >= 1");
    dk_ragged probe = *out;
    probe.sizes = NULL;
    int rc = dk__rv_mask(&j.mask, mask, batch_dims, __func__, "mask");
    if (!rc) rc = dk__rv_index(&j.dst, &probe, __func__, "out");
    if (!rc) rc = dk__rv_same_batch(&j.mask, &j.dst, __func__, "mask", "out");
    if (rc) return rc;
    int64_t *c;
    rc = bool_counts(&j, &c, __func__);
    if (rc) return rc;
    for (int64_t s = 0; s < j.mask.S && !rc; s++)
        if (c[s] > j.dst.N)
            rc = dk__error(DK_ERANGE, __func__,
                           "sample %lld has %lld true entries but out holds only %lld",
                           (long long)s, (long long)c[s], (long long)j.dst.N);
    if (!rc) {
        j.op = 0;
        rc = dk_pool_for(pool, j.mask.S, 0, bool_range, &j);
        if (!rc) memcpy(out->sizes, c, (size_t)j.mask.S * sizeof *c);
    }
    dk_free(c);
    return rc;
}

static int bool_prepare(bool_job *j, const dk_ragged *src, const dk_tensor *mask,
                        const dk_ragged *dst, const char *func)
{
    memset(j, 0, sizeof *j);
    if (!dst) return dk__error(DK_EINVAL, func, "%s is NULL", "out");
    dk_ragged probe = *dst;
    probe.sizes = NULL;
    int rc = dk__rv_ragged(&j->src, src, func, "in");
    if (!rc) rc = dk__rv_ragged(&j->dst, &probe, func, "out");
    if (!rc) rc = dk__rv_mask(&j->mask, mask, src->batch_dims, func, "mask");
    if (!rc) rc = dk__rv_same_batch(&j->src, &j->dst, func, "in", "out");
    if (!rc) rc = dk__rv_same_batch(&j->src, &j->mask, func, "in", "mask");
    if (!rc) rc = dk__rv_same_inner(&j->src, &j->dst, 1, func, "in", "out");
    return rc;
}

int dk_ragged_bool_select(dk_pool *pool, const dk_ragged *in, const dk_tensor *mask,
                          double filler, dk_ragged *out)
{
    bool_job j;
    int rc = bool_prepare(&j, in, mask, out, __func__);
    if (rc) return rc;
    if (!out->sizes) return dk__error(DK_EINVAL, __func__, "out->sizes is NULL");
    if (j.mask.N != j.src.N)
        return dk__error(DK_EINVAL, __func__, "mask has %lld entries per sample but in has %lld",
                         (long long)j.mask.N, (long long)j.src.N);
    int64_t *c;
    rc = bool_counts(&j, &c, __func__);
    if (rc) return rc;
    for (int64_t s = 0; s < j.mask.S && !rc; s++)
        if (c[s] > j.dst.N)
            rc = dk__error(DK_ERANGE, __func__,
                           "sample %lld selects %lld entries but out holds only %lld",
                           (long long)s, (long long)c[s], (long long)j.dst.N);
    if (!rc) {
        j.op = 1;
        dk__scalar_from_double(j.dst.dtype, filler, j.filler);
        rc = dk_pool_for(pool, j.src.S, 0, bool_range, &j);
        if (!rc) memcpy(out->sizes, c, (size_t)j.mask.S * sizeof *c);
    }
    dk_free(c);
    return rc;
}

int dk_ragged_bool_write(dk_pool *pool, const dk_ragged *src, const dk_tensor *mask,
                         dk_ragged *dst)
{
    bool_job j;
    int rc = bool_prepare(&j, src, mask, dst, __func__);
    if (rc) return rc;
    if (j.mask.N != j.dst.N)
        return dk__error(DK_EINVAL, __func__, "mask has %lld entries per sample but dst has %lld",
                         (long long)j.mask.N, (long long)j.dst.N);
    int64_t *c;
    rc = bool_counts(&j, &c, __func__);
    if (rc) return rc;
    for (int64_t s = 0; s < j.mask.S && !rc; s++)
        if (c[s] != dk__rv_size(&j.src, s))
            rc = dk__error(DK_EINVAL, __func__,
                           "sample %lld: the mask has %lld true entries but src holds %lld",
                           (long long)s, (long long)c[s], (long long)dk__rv_size(&j.src, s));
    dk_free(c);
    if (rc) return rc;
    j.op = 2;
    return dk_pool_for(pool, j.src.S, 0, bool_range, &j);
}

/* ------------------------------------------------------------------------ */
/* Masks and reductions                                                      */

typedef struct amask_job {
    dk__rv in, out, mask;
    int invert, inplace;
    unsigned char value[16];
} amask_job;

static void amask_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const amask_job *j = ctx;
    const dk__rv *in = &j->in, *out = &j->out, *m = &j->mask;
    for (int64_t s = b; s < e; s++) {
        int64_t is = dk__rv_soff(in, s), os = dk__rv_soff(out, s), ms = dk__rv_soff(m, s);
        for (int64_t a = 0; a < in->A; a++) {
            int64_t ia = is + dk__rv_aoff(in, a), oa = os + dk__rv_aoff(out, a);
            for (int64_t k = 0; k < in->N; k++) {
                int keep = dk__rv_bool(m, ms + k * m->nstride) != j->invert;
                char *d = dk__rv_at(out, oa + k * out->nstride);
                if (!keep)
                    dk__blk_fill(out, d, j->value);
                else if (!j->inplace)
                    dk__blk_copy(out, d, in, dk__rv_at(in, ia + k * in->nstride));
            }
        }
    }
}

int dk_ragged_apply_mask(dk_pool *pool, const dk_ragged *in, const dk_tensor *mask, int invert,
                         double value, dk_tensor *out)
{
    amask_job j;
    memset(&j, 0, sizeof j);
    if (!in || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    dk_ragged probe = *in;
    probe.sizes = NULL;
    int rc = dk__rv_ragged(&j.in, &probe, __func__, "in");
    if (!rc) rc = dk__rv_make(&j.out, out, in->batch_dims, in->dim, NULL, __func__, "out");
    if (!rc) rc = dk__rv_mask(&j.mask, mask, in->batch_dims, __func__, "mask");
    if (!rc) rc = dk__rv_same_batch(&j.in, &j.out, __func__, "in", "out");
    if (!rc) rc = dk__rv_same_batch(&j.in, &j.mask, __func__, "in", "mask");
    if (!rc) rc = dk__rv_same_inner(&j.in, &j.out, 1, __func__, "in", "out");
    if (rc) return rc;
    if (j.out.N != j.in.N || j.mask.N != j.in.N)
        return dk__error(DK_EINVAL, __func__,
                         "in has %lld entries along dim %d but out has %lld and mask %lld",
                         (long long)j.in.N, (int)in->dim, (long long)j.out.N, (long long)j.mask.N);
    int same = in->data.data == out->data && in->data.ndim == out->ndim;
    for (int d = 0; same && d < out->ndim; d++) same = in->data.strides[d] == out->strides[d];
    j.inplace = same;
    j.invert = invert != 0;
    dk__scalar_from_double(j.out.dtype, value, j.value);
    return dk_pool_for(pool, j.in.S, 0, amask_range, &j);
}

typedef struct sum_job {
    dk__rv in, out;          /* out viewed with a unit dim at `dim` */
    int average, nans_to_zero, backward;
} sum_job;

static void sum_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const sum_job *j = ctx;
    const dk__rv *in = &j->in, *out = &j->out;
    for (int64_t s = b; s < e; s++) {
        int64_t n = dk__rv_size(in, s);
        int64_t is = dk__rv_soff(in, s), os = dk__rv_soff(out, s);
        for (int64_t a = 0; a < in->A; a++) {
            int64_t ia = is + dk__rv_aoff(in, a), oa = os + dk__rv_aoff(out, a);
            for (int64_t f = 0; f < in->F; f++) {
                int64_t fi = dk__blk_off(in, f), fo = dk__blk_off(out, f);
                if (j->backward) {
                    double g = dk__ldf(out->dtype, out->base, oa + fo);
                    if (j->average) g = n ? g / (double)n : 0.0;
                    for (int64_t k = 0; k < in->N; k++)
                        dk__stf(in->dtype, in->base, ia + k * in->nstride + fi, k < n ? g : 0.0);
                    continue;
                }
                double acc = 0;
                for (int64_t k = 0; k < n; k++)
                    acc += dk__ldf(in->dtype, in->base, ia + k * in->nstride + fi);
                if (j->average) acc = n ? acc / (double)n : (j->nans_to_zero ? 0.0 : NAN);
                dk__stf(out->dtype, out->base, oa + fo, acc);
            }
        }
    }
}

static int sum_prepare(sum_job *j, const dk_ragged *in, const dk_tensor *out, int need_sizes,
                       const char *func, const char *inname, const char *outname)
{
    memset(j, 0, sizeof *j);
    int rc = dk__rv_ragged(&j->in, in, func, inname);
    if (rc) return rc;
    if (need_sizes && !in->sizes) return dk__error(DK_EINVAL, func, "%s->sizes is NULL", inname);
    if (!out) return dk__error(DK_EINVAL, func, "%s is NULL", outname);
    if (!dk__is_float(j->in.dtype) || out->dtype != j->in.dtype)
        return dk__error(DK_EUNSUPPORTED, func, "needs float32 or float64 %s and %s of one dtype, got %s and %s",
                         inname, outname, dk_dtype_name(j->in.dtype), dk_dtype_name(out->dtype));
    int nd = in->data.ndim;
    char s1[128], s2[128];
    int ok = out->ndim == nd - 1;
    for (int d = 0, k = 0; ok && d < nd; d++)
        if (d != in->dim) ok = out->shape[k++] == in->data.shape[d];
    if (!ok)
        return dk__error(DK_EINVAL, func, "%s has shape %s; expected %s's shape %s without dim %d",
                         outname, dk__shape_str(out->shape, out->ndim, s1, sizeof s1), inname,
                         dk__shape_str(in->data.shape, nd, s2, sizeof s2), (int)in->dim);
    dk_tensor t = *out;
    for (int d = t.ndim; d > in->dim; d--) {
        t.shape[d] = t.shape[d - 1];
        t.strides[d] = t.strides[d - 1];
    }
    t.shape[in->dim] = 1;
    t.strides[in->dim] = 0;
    t.ndim++;
    return dk__rv_make(&j->out, &t, in->batch_dims, in->dim, NULL, func, outname);
}

int dk_ragged_sum(dk_pool *pool, const dk_ragged *in, int average, int nans_to_zero,
                  dk_tensor *out)
{
    sum_job j;
    int rc = sum_prepare(&j, in, out, 0, __func__, "in", "out");
    if (rc) return rc;
    j.average = average != 0;
    j.nans_to_zero = nans_to_zero != 0;
    return dk_pool_for(pool, j.in.S, 0, sum_range, &j);
}

int dk_ragged_sum_backward(dk_pool *pool, const dk_tensor *grad_out, int average,
                           dk_ragged *grad_in)
{
    sum_job j;
    int rc = sum_prepare(&j, grad_in, grad_out, 1, __func__, "grad_in", "grad_out");
    if (rc) return rc;
    j.average = average != 0;
    j.backward = 1;
    return dk_pool_for(pool, j.in.S, 0, sum_range, &j);
}
