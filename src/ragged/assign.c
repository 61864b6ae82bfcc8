/*
 * Exact rectangular linear sum assignment by shortest augmenting paths.
 *
 * For nr <= nc, rows are added one at a time. Each addition runs Dijkstra
 * from the new row over the reduced costs c[i][j] - u[i] - v[j] (all >= 0),
 * alternating row -> column (reduced cost) and column -> its assigned row
 * (cost 0), until it reaches an unassigned column; then the potentials are
 * shifted so that reduced costs stay >= 0 and are 0 along the path, and the
 * path is flipped. This is the scheme of Jonker & Volgenant (1987) without
 * their initialisation heuristics, in the rectangular form analysed by Crouse
 * (IEEE TAES 2016). With v starting at 0 and only decreasing, the potentials
 * are a dual certificate of optimality: reduced costs >= 0, 0 on the chosen
 * pairs, v <= 0 and v = 0 on unchosen columns.
 *
 * The dense scan is O(nc) per Dijkstra step; DETR matching has few rows
 * (ground truth) and many columns (queries), and most augmenting paths end
 * after one or two steps at a free query.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "ragged_impl.h"

/* Candidates kept per row by the sparse solver (refilled when used up), and
 * the blocks whose minima bound them. */
#define LSA_CAND 8
#define LSA_BLOCKS 16

int dk__lsa_ws_reserve(dk__lsa_ws *ws, int64_t nr, int64_t nc)
{
    if (ws->mem && nr <= ws->cap_r && nc <= ws->cap_c) return DK_OK;
    if (nr < ws->cap_r) nr = ws->cap_r;
    if (nc < ws->cap_c) nc = ws->cap_c;
    size_t r = (size_t)(nr > 0 ? nr : 1), c = (size_t)(nc > 0 ? nc : 1);
    size_t k = LSA_CAND;
    size_t bytes = (r + 2 * c + r * k) * sizeof(double) +          /* u v shortest cand_c */
                   (3 * c + 2 * r + r * k + c) * sizeof(int64_t) +  /* path row4col cols_done
                                                                       col4row rows_seen cand_j tlist */
                   c * sizeof(float) +                               /* pen */
                   2 * r * sizeof(int32_t) + 2 * c;                 /* cand_n cand_p done assigned */
    char *m = dk_malloc(bytes);
    if (!m) return DK_ENOMEM;
    dk_free(ws->mem);
    ws->mem = m;
    ws->u = (double *)(void *)m;
    ws->v = ws->u + r;
    ws->shortest = ws->v + c;
    ws->cand_c = ws->shortest + c;
    ws->path = (int64_t *)(void *)(ws->cand_c + r * k);
    ws->row4col = ws->path + c;
    ws->cols_done = ws->row4col + c;
    ws->col4row = ws->cols_done + c;
    ws->rows_seen = ws->col4row + r;
    ws->cand_j = ws->rows_seen + r;
    ws->tlist = ws->cand_j + r * k;
    ws->pen = (float *)(void *)(ws->tlist + c);
    ws->cand_n = (int32_t *)(void *)(ws->pen + c);
    ws->cand_p = ws->cand_n + r;
    ws->done = (uint8_t *)(void *)(ws->cand_p + r);
    ws->assigned = ws->done + c;
    ws->cap_r = (int64_t)r;
    ws->cap_c = (int64_t)c;
    return DK_OK;
}

void dk__lsa_ws_free(dk__lsa_ws *ws)
{
    if (!ws) return;
    dk_free(ws->mem);
    memset(ws, 0, sizeof *ws);
}

static inline double mat_at(const dk__lsa_mat *m, int64_t i, int64_t j)
{
    return m->f ? (double)m->f[i * m->ld + j] : m->d[i * m->ld + j];
}

static void lsa_init(int64_t nr, int64_t nc, dk__lsa_ws *ws)
{
    for (int64_t i = 0; i < nr; i++) {
        ws->u[i] = 0;
        ws->col4row[i] = -1;
    }
    for (int64_t j = 0; j < nc; j++) {
        ws->v[j] = 0;
        ws->row4col[j] = -1;
    }
}

/* Potentials after a search that reached `sink` with distance minv, then the
 * flip of the alternating path. */
static void lsa_finish(int64_t cur, int64_t sink, double minv, int64_t nseen, int64_t ndone,
                       dk__lsa_ws *ws)
{
    double *u = ws->u, *v = ws->v, *shortest = ws->shortest;
    ws->u[cur] += minv;
    for (int64_t k = 1; k < nseen; k++) {
        int64_t r = ws->rows_seen[k];
        u[r] += minv - shortest[ws->col4row[r]];
    }
    for (int64_t k = 0; k < ndone; k++) {
        int64_t j = ws->cols_done[k];
        v[j] -= minv - shortest[j];
    }
    for (int64_t j = sink;;) {
        int64_t r = ws->path[j];
        ws->row4col[j] = r;
        int64_t prev = ws->col4row[r];
        ws->col4row[r] = j;
        j = prev;
        if (r == cur) break;
    }
}

void dk__lsa_dense(const dk__lsa_mat *m, int64_t nr, int64_t nc, dk__lsa_ws *ws)
{
    double *u = ws->u, *v = ws->v, *shortest = ws->shortest;
    int64_t *path = ws->path, *row4col = ws->row4col;
    uint8_t *done = ws->done;
    lsa_init(nr, nc, ws);
    for (int64_t cur = 0; cur < nr; cur++) {
        for (int64_t j = 0; j < nc; j++) {
            shortest[j] = INFINITY;
            done[j] = 0;
        }
        int64_t nseen = 0, ndone = 0, i = cur, sink;
        double minv = 0;
        for (;;) {
            ws->rows_seen[nseen++] = i;
            double base = minv - u[i], lowest = INFINITY;
            int64_t jb = -1;
            int jb_free = 0;
            for (int64_t j = 0; j < nc; j++) {
                if (done[j]) continue;
                double r = base + mat_at(m, i, j) - v[j];
                if (r < shortest[j]) {
                    shortest[j] = r;
                    path[j] = i;
                }
                double sj = shortest[j];
                /* Tie rule: the closest column; among equals a free one; then
                   the lowest index (first met). */
                if (sj < lowest) {
                    lowest = sj;
                    jb = j;
                    jb_free = row4col[j] < 0;
                } else if (sj == lowest && !jb_free && row4col[j] < 0) {
                    jb = j;
                    jb_free = 1;
                }
            }
            /* nr <= nc and finite costs: some column is always left. */
            minv = lowest;
            done[jb] = 1;
            ws->cols_done[ndone++] = jb;
            if (row4col[jb] < 0) {
                sink = jb;
                break;
            }
            i = row4col[jb];
        }
        lsa_finish(cur, sink, minv, nseen, ndone, ws);
    }
}

/* Sorted insertion of (x, j) into a list of n <= LSA_CAND; equal values keep
 * index order because columns are offered in increasing j. */
static inline int cand_insert(double *cc, int64_t *cj, int n, double x, int64_t j)
{
    if (n == LSA_CAND && !(x < cc[LSA_CAND - 1])) return n;
    int p = n < LSA_CAND ? n : LSA_CAND - 1;
    while (p > 0 && cc[p - 1] > x) {
        cc[p] = cc[p - 1];
        cj[p] = cj[p - 1];
        p--;
    }
    cc[p] = x;
    cj[p] = j;
    return n < LSA_CAND ? n + 1 : n;
}

/* Minimum of r[j] + pen[j] over [j, j1). */
static double block_min(const float *rf, const double *rd, const float *pen, int64_t j, int64_t j1)
{
    double bm = INFINITY;
#if defined(__SSE2__)
    if (rf) {
        __m128 m0 = _mm_set1_ps(INFINITY), m1 = m0;
        for (; j + 8 <= j1; j += 8) {
            m0 = _mm_min_ps(m0, _mm_add_ps(_mm_loadu_ps(rf + j), _mm_loadu_ps(pen + j)));
            m1 = _mm_min_ps(m1, _mm_add_ps(_mm_loadu_ps(rf + j + 4), _mm_loadu_ps(pen + j + 4)));
        }
        m0 = _mm_min_ps(m0, m1);
        m0 = _mm_min_ps(m0, _mm_movehl_ps(m0, m0));
        m0 = _mm_min_ss(m0, _mm_shuffle_ps(m0, m0, 1));
        bm = (double)_mm_cvtss_f32(m0);
    } else {
        __m128d m0 = _mm_set1_pd(INFINITY), m1 = m0;
        for (; j + 4 <= j1; j += 4) {
            __m128 pf = _mm_loadu_ps(pen + j);
            m0 = _mm_min_pd(m0, _mm_add_pd(_mm_loadu_pd(rd + j), _mm_cvtps_pd(pf)));
            m1 = _mm_min_pd(m1, _mm_add_pd(_mm_loadu_pd(rd + j + 2),
                                           _mm_cvtps_pd(_mm_movehl_ps(pf, pf))));
        }
        m0 = _mm_min_pd(m0, m1);
        m0 = _mm_min_sd(m0, _mm_unpackhi_pd(m0, m0));
        bm = _mm_cvtsd_f64(m0);
    }
#endif
    for (; j < j1; j++) {
        double x = (rf ? (double)rf[j] : rd[j]) + (double)pen[j];
        bm = x < bm ? x : bm;
    }
    return bm;
}

/* Fills row i's candidate list: its LSA_CAND smallest unassigned columns by
 * (cost, index), sorted. The row is cut into LSA_BLOCKS blocks; the
 * LSA_CAND-th smallest block minimum (assigned columns count as +inf) bounds
 * the LSA_CAND-th smallest entry from above, since each of those blocks holds
 * an entry <= it. A second pass inserts only the entries <= the bound, about
 * ten of a 900-column row. */
static void cand_fill(const dk__lsa_mat *m, int64_t i, int64_t nc, dk__lsa_ws *ws)
{
    double *cc = ws->cand_c + i * LSA_CAND;
    int64_t *cj = ws->cand_j + i * LSA_CAND;
    const uint8_t *as = ws->assigned;
    const float *pen = ws->pen;
    const float *rf = m->f ? m->f + i * m->ld : NULL;
    const double *rd = m->d ? m->d + i * m->ld : NULL;
    double bound = INFINITY;
    int n = 0;
    if (nc >= 4 * LSA_BLOCKS) {
        int64_t nb = LSA_BLOCKS, bs = nc / nb;
        double top[LSA_CAND];   /* the LSA_CAND smallest block minima, sorted */
        int nt = 0;
        for (int64_t b = 0; b < nb; b++) {
            int64_t j0 = b * bs, j1 = b == nb - 1 ? nc : j0 + bs;
            double bm = block_min(rf, rd, pen, j0, j1);
            if (nt == LSA_CAND && !(bm < top[LSA_CAND - 1])) continue;
            int p = nt < LSA_CAND ? nt++ : LSA_CAND - 1;
            while (p > 0 && top[p - 1] > bm) {
                top[p] = top[p - 1];
                p--;
            }
            top[p] = bm;
        }
        bound = top[LSA_CAND - 1];   /* +inf when fewer blocks hold free columns */
    }
    int64_t j = 0;
#if defined(__SSE2__)
    if (rf && bound < INFINITY) {
        __m128 bv = _mm_set1_ps((float)bound);   /* bound is one of the floats */
        for (; j + 8 <= nc; j += 8) {
            int mk = _mm_movemask_ps(_mm_cmple_ps(_mm_loadu_ps(rf + j), bv)) |
                     (_mm_movemask_ps(_mm_cmple_ps(_mm_loadu_ps(rf + j + 4), bv)) << 4);
            while (mk) {
                int k = __builtin_ctz((unsigned)mk);
                mk &= mk - 1;
                if (!as[j + k]) n = cand_insert(cc, cj, n, (double)rf[j + k], j + k);
            }
        }
    } else if (rd && bound < INFINITY) {
        __m128d bv = _mm_set1_pd(bound);
        for (; j + 4 <= nc; j += 4) {
            int mk = _mm_movemask_pd(_mm_cmple_pd(_mm_loadu_pd(rd + j), bv)) |
                     (_mm_movemask_pd(_mm_cmple_pd(_mm_loadu_pd(rd + j + 2), bv)) << 2);
            while (mk) {
                int k = __builtin_ctz((unsigned)mk);
                mk &= mk - 1;
                if (!as[j + k]) n = cand_insert(cc, cj, n, rd[j + k], j + k);
            }
        }
    }
#endif
    for (; j < nc; j++) {
        double x = rf ? (double)rf[j] : rd[j];
        if (x > bound || as[j]) continue;
        n = cand_insert(cc, cj, n, x, j);
    }
    ws->cand_n[i] = n;
    ws->cand_p[i] = 0;
}

void dk__lsa_sparse(const dk__lsa_mat *m, int64_t nr, int64_t nc, dk__lsa_ws *ws)
{
    double *u = ws->u, *v = ws->v, *shortest = ws->shortest;
    int64_t *path = ws->path, *row4col = ws->row4col, *tlist = ws->tlist;
    uint8_t *done = ws->done, *assigned = ws->assigned;
    lsa_init(nr, nc, ws);
    for (int64_t j = 0; j < nc; j++) {
        assigned[j] = 0;
        ws->pen[j] = 0;
    }
    for (int64_t i = 0; i < nr; i++) ws->cand_n[i] = -1;   /* filled on first visit */
    int64_t nt = 0;
    for (int64_t cur = 0; cur < nr; cur++) {
        for (int64_t t = 0; t < nt; t++) {
            shortest[tlist[t]] = INFINITY;
            done[tlist[t]] = 0;
        }
        int64_t nseen = 0, ndone = 0, i = cur, sink;
        double minv = 0;
        /* best unassigned column seen so far: (distance, column, from row) */
        double ubest = INFINITY;
        int64_t uj = -1, ur = -1;
        for (;;) {
            ws->rows_seen[nseen++] = i;
            double base = minv - u[i];
            /* Unassigned columns have v = 0 and end the search when chosen,
               so only the closest one per visited row matters. */
            if (ws->cand_n[i] < 0) cand_fill(m, i, nc, ws);
            int32_t *cp = &ws->cand_p[i];
            while (*cp < ws->cand_n[i] && assigned[ws->cand_j[i * LSA_CAND + *cp]]) (*cp)++;
            if (*cp == ws->cand_n[i]) cand_fill(m, i, nc, ws);   /* exhausted: refill */
            {
                double val = base + ws->cand_c[i * LSA_CAND + *cp];
                int64_t j = ws->cand_j[i * LSA_CAND + *cp];
                if (val < ubest || (val == ubest && j < uj)) {
                    ubest = val;
                    uj = j;
                    ur = i;
                }
            }
            /* Assigned columns: the dense update over them only. */
            double lowest = INFINITY;
            int64_t jb = -1;
            for (int64_t t = 0; t < nt; t++) {
                int64_t j = tlist[t];
                if (done[j]) continue;
                double r = base + mat_at(m, i, j) - v[j];
                if (r < shortest[j]) {
                    shortest[j] = r;
                    path[j] = i;
                }
                double sj = shortest[j];
                if (sj < lowest || (sj == lowest && j < jb)) {
                    lowest = sj;
                    jb = j;
                }
            }
            if (ubest <= lowest) {   /* a free column wins ties */
                minv = ubest;
                sink = uj;
                path[sink] = ur;
                shortest[sink] = minv;
                ws->cols_done[ndone++] = sink;
                break;
            }
            minv = lowest;
            done[jb] = 1;
            ws->cols_done[ndone++] = jb;
            i = row4col[jb];
        }
        lsa_finish(cur, sink, minv, nseen, ndone, ws);
        assigned[sink] = 1;
        ws->pen[sink] = INFINITY;
        tlist[nt++] = sink;
        done[sink] = 0;
    }
}

void dk__lsa_solve(const dk__lsa_mat *m, int64_t nr, int64_t nc, dk__lsa_ws *ws)
{
    if (nc >= 2 * nr && nc > LSA_CAND)
        dk__lsa_sparse(m, nr, nc, ws);
    else
        dk__lsa_dense(m, nr, nc, ws);
}

/* ------------------------------------------------------------------------ */
/* One matrix                                                                */

typedef struct lsa_fail {
    int status;                /* 0 ok */
    int64_t row, col;
    double value;
} lsa_fail;

/* Copies `cost` (r x c) into ws-owned contiguous memory in solver orientation
 * (transposed when r > c), checking finiteness. */
/* Copies an r x c matrix of T (strides s0, s1) into m in solver orientation
 * (transposed when tr), in 32 x 32 tiles so that neither side strides through
 * memory; returns nonzero when an entry is not finite (exponent all ones). */
#define LSA_COPY(NAME, T, UT, EXPMASK)                                                     \
    static int NAME(const T *src, int64_t r, int64_t c, int64_t s0, int64_t s1, int tr,     \
                    int64_t nc, T *m)                                                      \
    {                                                                                      \
        UT bad = 0;                                                                        \
        for (int64_t i0 = 0; i0 < r; i0 += 32)                                             \
            for (int64_t j0 = 0; j0 < c; j0 += 32) {                                       \
                int64_t i1 = i0 + 32 < r ? i0 + 32 : r, j1 = j0 + 32 < c ? j0 + 32 : c;    \
                for (int64_t i = i0; i < i1; i++)                                          \
                    for (int64_t j = j0; j < j1; j++) {                                    \
                        T x = src[i * s0 + j * s1];                                        \
                        UT b;                                                              \
                        memcpy(&b, &x, sizeof b);                                          \
                        bad |= (UT)((b & (EXPMASK)) == (EXPMASK));                         \
                        m[tr ? j * nc + i : i * nc + j] = x;                               \
                    }                                                                      \
            }                                                                              \
        return bad != 0;                                                                   \
    }
LSA_COPY(lsa_copy_f32, float, uint32_t, 0x7f800000u)
LSA_COPY(lsa_copy_f64, double, uint64_t, 0x7ff0000000000000ull)

static int lsa_solve_tensor(const dk_tensor *cost, dk__lsa_ws *ws, double **buf, size_t *bufcap,
                            int64_t *row_ind, int64_t *col_ind, double *u, double *v,
                            double *total, lsa_fail *fail)
{
    int64_t r = cost->shape[0], c = cost->shape[1];
    int tr = r > c, f32 = cost->dtype == DK_F32;
    int64_t nr = tr ? c : r, nc = tr ? r : c;
    /* float32 costs stay float32: the solver reads them exactly as doubles */
    size_t need = (size_t)(nr * nc) * (f32 ? sizeof(float) : sizeof(double));
    need = (need + sizeof(double) - 1) / sizeof(double);
    if (need > *bufcap) {
        double *nb = dk_malloc(need * sizeof(double));
        if (!nb) return DK_ENOMEM;
        dk_free(*buf);
        *buf = nb;
        *bufcap = need;
    }
    int64_t s0 = cost->strides[0], s1 = cost->strides[1];
    float *mf = f32 ? (float *)(void *)*buf : NULL;
    double *md = f32 ? NULL : *buf;
    int bad = f32 ? lsa_copy_f32((const float *)cost->data, r, c, s0, s1, tr, nc, mf)
                  : lsa_copy_f64((const double *)cost->data, r, c, s0, s1, tr, nc, md);
    if (bad) {   /* report the first one in row-major order */
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < c; j++) {
                int64_t off = i * s0 + j * s1;
                double x = f32 ? (double)((const float *)cost->data)[off]
                               : ((const double *)cost->data)[off];
                if (!isfinite(x)) {
                    fail->status = DK_EINVAL;
                    fail->row = i;
                    fail->col = j;
                    fail->value = x;
                    return DK_EINVAL;
                }
            }
    }
    if (dk__lsa_ws_reserve(ws, nr, nc)) return DK_ENOMEM;
    dk__lsa_mat mat = {mf, md, nc};
    dk__lsa_solve(&mat, nr, nc, ws);
    double sum = 0;
    if (!tr) {
        for (int64_t i = 0; i < nr; i++) {
            row_ind[i] = i;
            col_ind[i] = ws->col4row[i];
            sum += mat_at(&mat, i, ws->col4row[i]);
        }
        if (u) memcpy(u, ws->u, (size_t)nr * sizeof(double));
        if (v) memcpy(v, ws->v, (size_t)nc * sizeof(double));
    } else {
        int64_t k = 0;
        for (int64_t j = 0; j < nc; j++) {
            if (ws->row4col[j] < 0) continue;
            row_ind[k] = j;
            col_ind[k] = ws->row4col[j];
            sum += mat_at(&mat, ws->row4col[j], j);
            k++;
        }
        if (u) memcpy(u, ws->v, (size_t)nc * sizeof(double));
        if (v) memcpy(v, ws->u, (size_t)nr * sizeof(double));
    }
    if (total) *total = sum;
    return DK_OK;
}

static int check_cost(const dk_tensor *c, const char *func, const char *what, int64_t i)
{
    if (!c) return dk__error(DK_EINVAL, func, "%s %lld is NULL", what, (long long)i);
    if (c->ndim != 2)
        return dk__error(DK_EINVAL, func, "%s %lld: a cost matrix has 2 dims, got %d", what,
                         (long long)i, (int)c->ndim);
    if (c->dtype != DK_F32 && c->dtype != DK_F64)
        return dk__error(DK_EUNSUPPORTED, func, "%s %lld: costs must be float32 or float64, not %s",
                         what, (long long)i, dk_dtype_name(c->dtype));
    if (c->shape[0] < 0 || c->shape[1] < 0)
        return dk__error(DK_EINVAL, func, "%s %lld: negative extent", what, (long long)i);
    if (c->shape[0] * c->shape[1] > 0 && !c->data)
        return dk__error(DK_EINVAL, func, "%s %lld: data is NULL", what, (long long)i);
    return DK_OK;
}

static int fail_error(const lsa_fail *f, int rc, const char *func, int64_t sample, int batched)
{
    if (rc == DK_ENOMEM) return dk__error(DK_ENOMEM, func, "out of memory");
    char where[48] = "";
    if (batched) snprintf(where, sizeof where, "sample %lld: ", (long long)sample);
    return dk__error(DK_EINVAL, func, "%scost[%lld][%lld] is %s; costs must be finite", where,
                     (long long)f->row, (long long)f->col,
                     isnan(f->value) ? "NaN" : f->value > 0 ? "+inf" : "-inf");
}

int dk_ragged_assign_one(const dk_tensor *cost, int64_t *row_ind, int64_t *col_ind, double *u,
                         double *v, double *total)
{
    int rc = check_cost(cost, __func__, "cost", 0);
    if (rc) return rc;
    int64_t k = cost->shape[0] < cost->shape[1] ? cost->shape[0] : cost->shape[1];
    if (k > 0 && (!row_ind || !col_ind))
        return dk__error(DK_EINVAL, __func__, "row_ind or col_ind is NULL");
    dk__lsa_ws ws;
    memset(&ws, 0, sizeof ws);
    double *buf = NULL;
    size_t cap = 0;
    lsa_fail f = {0, 0, 0, 0};
    rc = lsa_solve_tensor(cost, &ws, &buf, &cap, row_ind, col_ind, u, v, total, &f);
    dk_free(buf);
    dk__lsa_ws_free(&ws);
    if (rc) return fail_error(&f, rc, __func__, 0, 0);
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                   */

typedef struct assign_slot {
    dk__lsa_ws ws;
    double *buf;
    size_t cap;
} assign_slot;

typedef struct assign_job {
    const dk_tensor *costs;
    const int64_t *order;      /* samples, largest first */
    const int64_t *offsets;    /* output offset per sample */
    int64_t *row_ind, *col_ind;
    double *total;
    assign_slot *slots;
    lsa_fail *fails;
} assign_job;

static void assign_range(void *ctx, int64_t b, int64_t e, int ith)
{
    const assign_job *j = ctx;
    assign_slot *sl = &j->slots[ith];
    for (int64_t t = b; t < e; t++) {
        int64_t s = j->order[t];
        int rc = lsa_solve_tensor(&j->costs[s], &sl->ws, &sl->buf, &sl->cap,
                                  j->row_ind + j->offsets[s], j->col_ind + j->offsets[s], NULL,
                                  NULL, j->total ? &j->total[s] : NULL, &j->fails[s]);
        if (rc) j->fails[s].status = rc;
    }
}

/* Work estimate of one matrix, for scheduling the big ones first. */
static int64_t assign_work(const dk_tensor *c)
{
    int64_t a = c->shape[0], b = c->shape[1];
    int64_t mn = a < b ? a : b;
    return mn * a * b;
}

static int cmp_work(const void *x, const void *y, void *ctx)
{
    const dk_tensor *c = ctx;
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    int64_t wa = assign_work(&c[a]), wb = assign_work(&c[b]);
    if (wa != wb) return wa > wb ? -1 : 1;
    return a < b ? -1 : a > b;
}

int dk_ragged_assign(dk_pool *pool, int64_t n, const dk_tensor *costs, int64_t *row_ind,
                     int64_t *col_ind, double *total)
{
    if (n < 0) return dk__error(DK_EINVAL, __func__, "n = %lld is negative", (long long)n);
    if (n > 0 && !costs) return dk__error(DK_EINVAL, __func__, "costs is NULL");
    int64_t pairs = 0;
    for (int64_t i = 0; i < n; i++) {
        int rc = check_cost(&costs[i], __func__, "sample", i);
        if (rc) return rc;
        pairs += costs[i].shape[0] < costs[i].shape[1] ? costs[i].shape[0] : costs[i].shape[1];
    }
    if (pairs > 0 && (!row_ind || !col_ind))
        return dk__error(DK_EINVAL, __func__, "row_ind or col_ind is NULL");
    if (n == 0) return DK_OK;
    int nslots = dk_pool_size(pool);
    size_t bytes = (size_t)n * (2 * sizeof(int64_t) + sizeof(lsa_fail)) +
                   (size_t)nslots * sizeof(assign_slot);
    char *mem = dk_calloc(1, bytes);
    if (!mem) return dk__error(DK_ENOMEM, __func__, "out of memory");
    assign_job j;
    int64_t *order = (int64_t *)(void *)mem;
    int64_t *offsets = order + n;
    j.fails = (lsa_fail *)(void *)(offsets + n);
    j.slots = (assign_slot *)(void *)(j.fails + n);
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        order[i] = i;
        offsets[i] = off;
        off += costs[i].shape[0] < costs[i].shape[1] ? costs[i].shape[0] : costs[i].shape[1];
    }
    qsort_r(order, (size_t)n, sizeof *order, cmp_work, (void *)costs);
    j.costs = costs;
    j.order = order;
    j.offsets = offsets;
    j.row_ind = row_ind;
    j.col_ind = col_ind;
    j.total = total;
    int rc = dk_pool_for(pool, n, 1, assign_range, &j);
    for (int64_t i = 0; !rc && i < n; i++)
        if (j.fails[i].status) rc = fail_error(&j.fails[i], j.fails[i].status, __func__, i, 1);
    for (int s = 0; s < nslots; s++) {
        dk_free(j.slots[s].buf);
        dk__lsa_ws_free(&j.slots[s].ws);
    }
    dk_free(mem);
    return rc;
}

int dk_ragged_assign_padded(dk_pool *pool, const dk_tensor *costs, const int64_t *rows,
                            const int64_t *cols, int64_t *row_ind, int64_t *col_ind,
                            int64_t *n_pairs, double *total)
{
    if (!costs) return dk__error(DK_EINVAL, __func__, "costs is NULL");
    if (costs->ndim < 2 || costs->ndim > DK_MAX_DIMS)
        return dk__error(DK_EINVAL, __func__, "costs must have shape (*batch, R, C), got %d dims",
                         (int)costs->ndim);
    int nd = costs->ndim;
    int64_t R = costs->shape[nd - 2], C = costs->shape[nd - 1], S = 1;
    for (int d = 0; d < nd - 2; d++) S *= costs->shape[d];
    int64_t K = R < C ? R : C;
    dk__rv v;
    int rc = dk__rv_make(&v, costs, nd - 2, nd - 2, NULL, __func__, "costs");
    if (rc) return rc;
    if (S * K > 0 && (!row_ind || !col_ind))
        return dk__error(DK_EINVAL, __func__, "row_ind or col_ind is NULL");
    for (int64_t s = 0; s < S; s++) {
        if (rows && (rows[s] < 0 || rows[s] > R))
            return dk__error(DK_ERANGE, __func__, "sample %lld: rows = %lld outside [0, %lld]",
                             (long long)s, (long long)rows[s], (long long)R);
        if (cols && (cols[s] < 0 || cols[s] > C))
            return dk__error(DK_ERANGE, __func__, "sample %lld: cols = %lld outside [0, %lld]",
                             (long long)s, (long long)cols[s], (long long)C);
    }
    dk_tensor *views = dk_malloc((size_t)(S ? S : 1) * sizeof *views);
    int64_t nk = S * K > 0 ? S * K : 1;
    int64_t *ri = dk_malloc((size_t)nk * 2 * sizeof(int64_t));
    if (!views || !ri) {
        dk_free(views);
        dk_free(ri);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    for (int64_t s = 0; s < S; s++) {
        dk_tensor *t = &views[s];
        memset(t, 0, sizeof *t);
        t->dtype = costs->dtype;
        t->ndim = 2;
        t->shape[0] = rows ? rows[s] : R;
        t->shape[1] = cols ? cols[s] : C;
        t->strides[0] = costs->strides[nd - 2];
        t->strides[1] = costs->strides[nd - 1];
        t->data = costs->data ? dk__rv_at(&v, dk__rv_soff(&v, s)) : NULL;
    }
    int64_t *ci = ri + S * K;
    rc = dk_ragged_assign(pool, S, views, ri, ci, total);
    if (!rc) {
        int64_t off = 0;
        for (int64_t s = 0; s < S; s++) {
            int64_t k = views[s].shape[0] < views[s].shape[1] ? views[s].shape[0] : views[s].shape[1];
            for (int64_t q = 0; q < K; q++) {
                row_ind[s * K + q] = q < k ? ri[off + q] : -1;
                col_ind[s * K + q] = q < k ? ci[off + q] : -1;
            }
            if (n_pairs) n_pairs[s] = k;
            off += k;
        }
    }
    dk_free(views);
    dk_free(ri);
    return rc;
}
