/*
 * Private to src/ragged: the canonical view every op works through, scalar
 * conversions, and the dense assignment solver shared by assign.c and loss.c.
 */
#ifndef DK_RAGGED_IMPL_H
#define DK_RAGGED_IMPL_H

#include <stdint.h>
#include <string.h>

#include "drivekit/ragged.h"
#include "internal.h"

/* A tensor seen as (S samples, A middle, N along the indexed dim, F trailing
 * elements): every op is a loop over (s, a, n) moving or combining F-blocks.
 * Multi-dim batch/middle/trailing parts keep their own shapes and strides
 * (elements); trailing dims are collapsed where memory allows. */
typedef struct dk__rv {
    char *base;
    dk_dtype dtype;
    size_t isz;
    int64_t S, A, N, F;
    int nb, na, nf;
    int64_t bshape[DK_MAX_DIMS], bstride[DK_MAX_DIMS];
    int64_t ashape[DK_MAX_DIMS], astride[DK_MAX_DIMS];
    int64_t nstride;
    int64_t fshape[DK_MAX_DIMS], fstride[DK_MAX_DIMS];
    int fcontig;                 /* trailing block = F elements at unit stride */
    int nt;                      /* logical trailing shape (for comparisons) */
    int64_t tshape[DK_MAX_DIMS];
    const int64_t *sizes;        /* NULL: every sample has N */
} dk__rv;

/* Builds the view of `t` with `nb` batch dims and the indexed dim `dim`.
 * Errors name `func` and `what`. Does not check sizes (dk__rv_check_sizes). */
int dk__rv_make(dk__rv *v, const dk_tensor *t, int nb, int dim, const int64_t *sizes,
                const char *func, const char *what);
/* The view of a dk_ragged (validated descriptor + sizes in range). */
int dk__rv_ragged(dk__rv *v, const dk_ragged *r, const char *func, const char *what);
/* An index batch (*batch, K): int32/int64, dim = batch_dims = ndim - 1. */
int dk__rv_index(dk__rv *v, const dk_ragged *r, const char *func, const char *what);
/* A mask (*batch, M), bool/uint8, with nb batch dims. */
int dk__rv_mask(dk__rv *v, const dk_tensor *t, int nb, const char *func, const char *what);
int dk__rv_check_sizes(const dk__rv *v, const char *func, const char *what);

/* Same batch shape (dims and extents) in a and b; the message names both. */
int dk__rv_same_batch(const dk__rv *a, const dk__rv *b, const char *func, const char *an,
                      const char *bn);
/* Same middle and trailing dims (and dtype when `dtype`). */
int dk__rv_same_inner(const dk__rv *a, const dk__rv *b, int dtype, const char *func,
                      const char *an, const char *bn);

/* "(2, 3, 4)" into buf. */
const char *dk__shape_str(const int64_t *shape, int n, char *buf, size_t cap);

static inline int64_t dk__rv_soff(const dk__rv *v, int64_t s)
{
    int64_t off = 0;
    for (int i = v->nb - 1; i >= 0; i--) {
        int64_t e = v->bshape[i];
        off += (s % e) * v->bstride[i];
        s /= e;
    }
    return off;
}

static inline int64_t dk__rv_aoff(const dk__rv *v, int64_t a)
{
    int64_t off = 0;
    for (int i = v->na - 1; i >= 0; i--) {
        int64_t e = v->ashape[i];
        off += (a % e) * v->astride[i];
        a /= e;
    }
    return off;
}

static inline char *dk__rv_at(const dk__rv *v, int64_t off)
{
    return v->base + off * (int64_t)v->isz;
}

static inline int64_t dk__rv_size(const dk__rv *v, int64_t s)
{
    return v->sizes ? v->sizes[s] : v->N;
}

/* Integer element of an index view at element offset `off`. */
static inline int64_t dk__rv_idx(const dk__rv *v, int64_t off)
{
    if (v->dtype == DK_I64) return ((const int64_t *)(const void *)v->base)[off];
    return ((const int32_t *)(const void *)v->base)[off];
}

static inline int dk__rv_bool(const dk__rv *v, int64_t off)
{
    return ((const uint8_t *)v->base)[off] != 0;
}

/* Element offset of the k-th (row-major) element of a trailing block. */
static inline int64_t dk__blk_off(const dk__rv *v, int64_t k)
{
    if (v->fcontig) return k;
    int64_t off = 0;
    for (int i = v->nf - 1; i >= 0; i--) {
        int64_t e = v->fshape[i];
        off += (k % e) * v->fstride[i];
        k /= e;
    }
    return off;
}

/* F-block operations between two views with equal trailing shapes. */
void dk__blk_copy(const dk__rv *dv, char *d, const dk__rv *sv, const char *s);
void dk__blk_add(const dk__rv *dv, char *d, const dk__rv *sv, const char *s);
void dk__blk_fill(const dk__rv *dv, char *d, const void *value);
/* Scales a float block by c (float32/float64). */
void dk__blk_scale(const dk__rv *dv, char *d, double c);

/* `x` converted to dtype t, written to out (dk_dtype_size(t) bytes). */
void dk__scalar_from_double(dk_dtype t, double x, void *out);
/* Element i of a float32/float64 array. */
static inline double dk__ldf(dk_dtype t, const void *p, int64_t i)
{
    return t == DK_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}
static inline void dk__stf(dk_dtype t, void *p, int64_t i, double x)
{
    if (t == DK_F32)
        ((float *)p)[i] = (float)x;
    else
        ((double *)p)[i] = x;
}
static inline int dk__is_float(dk_dtype t)
{
    return t == DK_F32 || t == DK_F64;
}

/* Error raised in a pool task, reported on the calling thread afterwards. */
typedef struct dk__task_err {
    int status;
    char msg[DK_ERRMSG_MAX];
} dk__task_err;

/* ------------------------------------------------------------------------ */
/* Dense assignment (assign.c)                                               */

/* Workspace of the solvers for up to nr x nc (nr <= nc). */
typedef struct dk__lsa_ws {
    double *u, *v, *shortest;
    int64_t *path, *row4col, *col4row, *rows_seen, *cols_done;
    uint8_t *done;
    /* sparse solver: per-row candidate lists of unassigned columns */
    double *cand_c;
    int64_t *cand_j, *tlist;
    int32_t *cand_n, *cand_p;
    uint8_t *assigned;
    float *pen;                  /* 0, or +inf for assigned columns */
    int64_t cap_r, cap_c;
    void *mem;
} dk__lsa_ws;

/* A cost matrix for the solvers: row-major with row stride ld, float32 (f)
 * or float64 (d), every entry finite. */
typedef struct dk__lsa_mat {
    const float *f;
    const double *d;
    int64_t ld;
} dk__lsa_mat;

int dk__lsa_ws_reserve(dk__lsa_ws *ws, int64_t nr, int64_t nc);
void dk__lsa_ws_free(dk__lsa_ws *ws);

/* Solves the nr x nc problem (nr <= nc): ws->col4row[i] is row i's column,
 * ws->row4col the inverse (-1: free), ws->u, ws->v the duals. Cannot fail.
 * dk__lsa_dense scans every column at every Dijkstra step; dk__lsa_sparse
 * serves the unassigned columns (potential 0) from sorted per-row candidate
 * lists and scans only assigned ones, which is much faster when nr << nc.
 * Both give identical results (same arithmetic, same tie order);
 * dk__lsa_solve picks one. */
void dk__lsa_dense(const dk__lsa_mat *m, int64_t nr, int64_t nc, dk__lsa_ws *ws);
void dk__lsa_sparse(const dk__lsa_mat *m, int64_t nr, int64_t nc, dk__lsa_ws *ws);
void dk__lsa_solve(const dk__lsa_mat *m, int64_t nr, int64_t nc, dk__lsa_ws *ws);

#endif /* DK_RAGGED_IMPL_H */
