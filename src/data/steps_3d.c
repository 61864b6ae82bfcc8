/*
 * 3-D and annotation steps: the global BEV augmentation, range / class /
 * point-count filters over per-box fields, per-camera visibility and 2-D
 * boxes, padding to a fixed capacity, CenterPoint heatmaps and field removal.
 *
 * Every step writes new tensors unless it holds the only reference to a
 * contiguous buffer, so values shared with a reader's cache (or with another
 * sample) are never modified behind its back.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_impl.h"
#include "drivekit/ragged.h"

#define PI_D 3.14159265358979323846
#define PATH_CAP 192

/* ------------------------------------------------------------------------ */
/* Shared helpers                                                            */

/* A field resolved at bind time, with its path for run-time messages. */
typedef struct fld {
    int id;
    char path[PATH_CAP];
} fld;

static void fld_set(fld *f, const dk_group *g, int id)
{
    f->id = id;
    if (dk_group_path(g, id, f->path, sizeof f->path) < 0)
        snprintf(f->path, sizeof f->path, "#%d", id);
}

static int run_error(int st, const char *func, const dk__step_ctx *ctx, const char *fmt, ...)
    DK_PRINTF(4, 5);
static int run_error(int st, const char *func, const dk__step_ctx *ctx, const char *fmt, ...)
{
    char msg[DK_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    long long s = ctx ? (long long)ctx->sample : -1;
    if (ctx && ctx->what) return dk__error(st, func, "%s (sample %lld, %s)", msg, s, ctx->what);
    return dk__error(st, func, "%s (sample %lld)", msg, s);
}

static char *dup_name(const char *s, const char *func, const char *param, int *st)
{
    if (*st) return NULL;
    if (!s) return NULL;
    if (!*s) {
        *st = dk__error(DK_EINVAL, func, "%s is an empty name", param);
        return NULL;
    }
    char *d = dk_strdup(s);
    if (!d) *st = dk__error(DK_ENOMEM, func, "out of memory");
    return d;
}

typedef struct namelist {
    char **v;
    int n;
} namelist;

static void names_free(namelist *l)
{
    for (int i = 0; i < l->n; i++) dk_free(l->v[i]);
    dk_free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int names_copy(namelist *l, const char *const *src, int n, const char *func,
                      const char *param)
{
    l->v = NULL;
    l->n = 0;
    if (n < 0 || (n > 0 && !src))
        return dk__error(DK_EINVAL, func, "%s: %d names and %s list", param, n,
                         src ? "a" : "no");
    if (n == 0) return DK_OK;
    l->v = dk_calloc((size_t)n, sizeof *l->v);
    if (!l->v) return dk__error(DK_ENOMEM, func, "out of memory");
    for (int i = 0; i < n; i++) {
        if (!src[i] || !*src[i]) {
            names_free(l);
            return dk__error(DK_EINVAL, func, "%s[%d] is NULL or empty", param, i);
        }
        l->v[i] = dk_strdup(src[i]);
        l->n = i + 1;
        if (!l->v[i]) {
            names_free(l);
            return dk__error(DK_ENOMEM, func, "out of memory");
        }
    }
    return DK_OK;
}

static int finite_range(int n_axes, const float *range6, const char *func, const char *param)
{
    for (int a = 0; a < n_axes; a++) {
        float lo = range6[a], hi = range6[a + 3];
        if (!isfinite(lo) || !isfinite(hi) || lo > hi)
            return dk__error(DK_EINVAL, func, "%s: axis %d: [%g, %g] is not a range (lo <= hi, finite)",
                             param, a, (double)lo, (double)hi);
    }
    return DK_OK;
}

/* Every occurrence of `name` in the subtree of root (dk_malloc'd ids). */
static int find_all(const dk_group *g, int root, const char *name, int **ids, int *n,
                    const char *func)
{
    int cap = dk_group_id_limit(g);
    int *v = dk_malloc(sizeof(int) * (size_t)(cap > 0 ? cap : 1));
    if (!v) return dk__error(DK_ENOMEM, func, "out of memory");
    int c = dk_group_find_all(g, root, name, v, cap);
    if (c < 0) {
        dk_free(v);
        return c;
    }
    *ids = v;
    *n = c < cap ? c : cap;
    return DK_OK;
}

static void root_path(const dk_group *g, int root, char *buf, size_t cap)
{
    if (root == DK_GROUP_ROOT || dk_group_path(g, root, buf, cap) <= 0)
        snprintf(buf, cap, "the sample");
}

/* The single occurrence of `name` in the subtree; with `scoped`, when there
 * is none, the nearest child named `name` of a group above the subtree. */
static int find_one(const dk_group *g, int root, const char *name, int scoped, const char *func,
                    int *out)
{
    int *ids = NULL, n = 0;
    int st = find_all(g, root, name, &ids, &n, func);
    if (st) return st;
    char where[PATH_CAP];
    root_path(g, root, where, sizeof where);
    if (n > 1) {
        char a[PATH_CAP], b[PATH_CAP];
        dk_group_path(g, ids[0], a, sizeof a);
        dk_group_path(g, ids[1], b, sizeof b);
        dk_free(ids);
        return dk__error(DK_EINVALIDDATA, func,
                         "%s: %d fields in %s (%s, %s, ...): restrict the step with dk_step_at_path",
                         name, n, where, a, b);
    }
    if (n == 1) {
        *out = ids[0];
        dk_free(ids);
        return DK_OK;
    }
    dk_free(ids);
    if (scoped) {
        int at = root;
        for (;;) {
            dk_field_info fi;
            if (dk_group_info(g, at, &fi) || fi.parent < 0) break;
            at = fi.parent;
            int c = dk_group_child(g, at, name);
            if (c >= 0) {
                *out = c;
                return DK_OK;
            }
        }
    }
    return dk__error(DK_ENOENT, func, "%s: no such field in %s%s", name, where,
                     scoped ? " or the groups above it" : "");
}

static void dtype_list(unsigned mask, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = 0;
    int first = 1;
    for (int t = 1; t < DK_DTYPE_COUNT; t++) {
        if (!(mask & (1u << t))) continue;
        int w = snprintf(buf + len, cap - len, "%s%s", first ? "" : " or ", dk_dtype_name((dk_dtype)t));
        if (w < 0 || (size_t)w >= cap - len) break;
        len += (size_t)w;
        first = 0;
    }
}

#define DT(t) (1u << (t))
#define DT_ANY 0xffffffffu

/* Checks that `id` is a tensor of one of the dtypes in `mask` with a rank in
 * [rmin, rmax]. */
static int check_leaf(const dk_group *g, int id, unsigned mask, int rmin, int rmax,
                      const char *func)
{
    dk_field_info fi;
    char path[PATH_CAP];
    int st = dk_group_info(g, id, &fi);
    if (st) return dk__error(DK_ENOENT, func, "field #%d does not exist", id);
    dk_group_path(g, id, path, sizeof path);
    char want[96], rank[32];
    if (mask == DT_ANY)
        snprintf(want, sizeof want, "a tensor");
    else
        dtype_list(mask, want, sizeof want);
    if (rmin == rmax)
        snprintf(rank, sizeof rank, "rank %d", rmin);
    else if (rmax >= DK_MAX_DIMS)
        snprintf(rank, sizeof rank, "rank >= %d", rmin);
    else
        snprintf(rank, sizeof rank, "rank %d..%d", rmin, rmax);
    if (fi.kind != DK_FIELD_TENSOR)
        return dk__error(DK_EINVALIDDATA, func, "%s: %s %s expected, got a %s", path, want, rank,
                         fi.kind == DK_FIELD_STRING ? "string" : "group");
    if (!(mask & (1u << fi.dtype)) || fi.ndim < rmin || fi.ndim > rmax)
        return dk__error(DK_EINVALIDDATA, func, "%s: %s %s expected, got %s rank %d", path, want,
                         rank, dk_dtype_name(fi.dtype), fi.ndim);
    return DK_OK;
}

static int parent_of(const dk_group *g, int id)
{
    dk_field_info fi;
    return dk_group_info(g, id, &fi) ? DK_GROUP_ROOT : fi.parent;
}

/* Adds an output tensor field `name` under parent. */
static int add_output(dk_group *g, int parent, const char *name, dk_dtype dt, int ndim,
                      const char *func, fld *f)
{
    char where[PATH_CAP], msg[DK_ERRMSG_MAX];
    root_path(g, parent, where, sizeof where);
    if (dk_group_child(g, parent, name) >= 0)
        return dk__error(DK_ESTATE, func, "cannot add %s to %s: a field with that name exists",
                         name, where);
    int id = dk_group_add_tensor(g, parent, name, dt, ndim);
    if (id < 0) {
        snprintf(msg, sizeof msg, "%s", dk_errmsg());
        return dk__error(id, func, "cannot add %s to %s: %s", name, where, msg);
    }
    fld_set(f, g, id);
    return DK_OK;
}

/* Run-time access to the value of a bound field, with a dtype (0: any) and
 * rank (-1: any) check. */
static int get_value(dk_sample *x, const fld *f, dk_dtype dt, int ndim, const char *func,
                     const dk__step_ctx *ctx, dk_tensor **out)
{
    dk_tensor *t = f->id >= 0 && f->id < x->n ? &x->values[f->id] : NULL;
    if (!t || t->dtype == DK_DTYPE_INVALID)
        return run_error(DK_EINVALIDDATA, func, ctx, "%s: no value", f->path);
    if ((dt && t->dtype != dt) || (ndim >= 0 && t->ndim != ndim))
        return run_error(DK_EINVALIDDATA, func, ctx, "%s: %s rank %d expected, got %s rank %d",
                         f->path, dt ? dk_dtype_name(dt) : "a tensor of", ndim,
                         dk_dtype_name(t->dtype), (int)t->ndim);
    if (dk_tensor_numel(t) > 0 && !t->data)
        return run_error(DK_EINVALIDDATA, func, ctx, "%s: no data", f->path);
    *out = t;
    return DK_OK;
}

static void strided_copy(const dk_tensor *src, void *dst)
{
    size_t es = dk_dtype_size(src->dtype);
    int64_t n = dk_tensor_numel(src);
    int64_t idx[DK_MAX_DIMS] = {0};
    char *d = dst;
    for (int64_t k = 0; k < n; k++) {
        memcpy(d + (size_t)k * es, dk_tensor_at(src, idx), es);
        for (int i = src->ndim - 1; i >= 0; i--) {
            if (++idx[i] < src->shape[i]) break;
            idx[i] = 0;
        }
    }
}

/* Makes the value in `slot` C-contiguous and, with `writable`, the only
 * reference to its buffer, by copying when needed. */
static int make_contig(dk_tensor *slot, int writable, const char *func)
{
    int alone = slot->owner && dk_buffer_refcount(slot->owner) == 1;
    if (dk_tensor_is_contiguous(slot) && (!writable || alone)) return DK_OK;
    dk_tensor t;
    int st = dk_tensor_alloc(&t, slot->dtype, slot->ndim, slot->shape);
    if (st) return dk__error(st, func, "out of memory");
    if (dk_tensor_numel(slot) > 0) strided_copy(slot, t.data);
    dk_tensor_release(slot);
    *slot = t;
    return DK_OK;
}

static int new_tensor(dk_tensor *t, dk_dtype dt, int ndim, const int64_t *shape, const char *func)
{
    int64_t one = 1;
    int st = dk_tensor_alloc(t, dt, ndim, ndim ? shape : &one);
    if (st) return dk__error(st, func, "cannot allocate a %s tensor: %s", dk_dtype_name(dt),
                             dk_status_str(st));
    return DK_OK;
}

static void set_value(dk_sample *x, int id, dk_tensor *t)
{
    dk_tensor_release(&x->values[id]);
    x->values[id] = *t;
    memset(t, 0, sizeof *t);
}

/* Keeps the rows i with keep[i] (n == shape[0]) of the value in slot. */
static int filter_rows(dk_tensor *slot, const uint8_t *keep, int64_t n, int64_t kept,
                       const char *func)
{
    if (kept == n) return DK_OK;
    int st = make_contig(slot, 0, func);
    if (st) return st;
    int64_t shape[DK_MAX_DIMS];
    memcpy(shape, slot->shape, sizeof shape);
    shape[0] = kept;
    dk_tensor t;
    if ((st = new_tensor(&t, slot->dtype, slot->ndim, shape, func))) return st;
    size_t row = dk_dtype_size(slot->dtype);
    for (int d = 1; d < slot->ndim; d++) row *= (size_t)slot->shape[d];
    const char *s = slot->data;
    char *o = t.data;
    for (int64_t i = 0, k = 0; i < n; i++)
        if (keep[i]) memcpy(o + (size_t)(k++) * row, s + (size_t)i * row, row);
    dk_tensor_release(slot);
    *slot = t;
    return DK_OK;
}

static double load_f(const void *p, dk_dtype dt, int64_t i)
{
    return dt == DK_F64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

static void store_f(void *p, dk_dtype dt, int64_t i, double v)
{
    if (dt == DK_F64)
        ((double *)p)[i] = v;
    else
        ((float *)p)[i] = (float)v;
}

static double wrap_angle(double a)
{
    double w = fmod(a + PI_D, 2 * PI_D);
    if (w < 0) w += 2 * PI_D;
    w -= PI_D;
    return w >= PI_D ? w - 2 * PI_D : w;
}

/* Columns 0..ncols-1 of n rows of d floats must be finite. */
static int check_rows_finite(const float *b, int64_t n, int64_t d, int64_t ncols, const fld *f,
                             const char *func, const dk__step_ctx *ctx)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < ncols; k++)
            if (!isfinite(b[i * d + k]))
                return run_error(DK_EINVALIDDATA, func, ctx, "%s: box %lld: column %lld is %g",
                                 f->path, (long long)i, (long long)k, (double)b[i * d + k]);
    return DK_OK;
}

/* Box values: float32 (N, D >= 7). */
static int get_boxes(dk_sample *x, const fld *f, const char *func, const dk__step_ctx *ctx,
                     int writable, dk_tensor **out)
{
    dk_tensor *t = NULL;
    int st = get_value(x, f, DK_F32, 2, func, ctx, &t);
    if (st) return st;
    if (t->shape[1] < 7)
        return run_error(DK_EINVALIDDATA, func, ctx,
                         "%s: (N, D >= 7) boxes expected (x, y, z, l, w, h, yaw, ...), got D = %lld",
                         f->path, (long long)t->shape[1]);
    if ((st = make_contig(t, writable, func))) return st;
    *out = t;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Global BEV augmentation                                                   */

static const char *const default_from_lidar[] = {"lidar2img", "lidar2cam", "lidar2ego"};

void dk_global_transform_3d_config_init(dk_global_transform_3d_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->rot_range[0] = -0.3925f;
    cfg->rot_range[1] = 0.3925f;
    cfg->scale_range[0] = 0.95f;
    cfg->scale_range[1] = 1.05f;
    cfg->flip_h_prob = 0.5f;
    cfg->flip_v_prob = 0.5f;
    cfg->boxes = "gt_bboxes_3d";
    cfg->points = "points";
    cfg->from_lidar = default_from_lidar;
    cfg->n_from_lidar = 3;
}

typedef struct gt_cfg {
    dk_global_transform_3d_config c;   /* numbers; the strings below are owned */
    char *boxes, *points, *matrix_out;
    namelist from, to;
} gt_cfg;

typedef struct gt_bind {
    fld *boxes, *points, *from, *to;
    int n_boxes, n_points, n_from, n_to;
    int has_out, out_exists;
    fld out;
} gt_bind;

static void gt_destroy(dk_step *s)
{
    gt_cfg *c = s->cfg;
    if (!c) return;
    dk_free(c->boxes);
    dk_free(c->points);
    dk_free(c->matrix_out);
    names_free(&c->from);
    names_free(&c->to);
    dk_free(c);
}

static void gt_unbind(void *binding)
{
    gt_bind *b = binding;
    if (!b) return;
    dk_free(b->boxes);
    dk_free(b->points);
    dk_free(b->from);
    dk_free(b->to);
    dk_free(b);
}

/* Appends every occurrence of `name` (checked) to *list. */
static int collect(const dk_group *g, int root, const char *name, unsigned mask, int rmin,
                   int rmax, const char *func, fld **list, int *n)
{
    int *ids = NULL, c = 0;
    int st = find_all(g, root, name, &ids, &c, func);
    if (st) return st;
    fld *nl = c ? dk_realloc(*list, sizeof(fld) * (size_t)(*n + c)) : *list;
    if (c && !nl) {
        dk_free(ids);
        return dk__error(DK_ENOMEM, func, "out of memory");
    }
    *list = nl;
    for (int i = 0; i < c && !st; i++) {
        st = check_leaf(g, ids[i], mask, rmin, rmax, func);
        if (!st) fld_set(&nl[(*n)++], g, ids[i]);
    }
    dk_free(ids);
    return st;
}

static const char gt_func[] = "dk_step_global_transform_3d";

static int gt_bind_fn(dk_step *s, dk_group *fmt, int root, void **binding)
{
    const gt_cfg *c = s->cfg;
    gt_bind *b = dk_calloc(1, sizeof *b);
    if (!b) return dk__error(DK_ENOMEM, gt_func, "out of memory");
    int st = DK_OK;
    if (c->boxes) {
        st = collect(fmt, root, c->boxes, DT(DK_F32), 2, 2, gt_func, &b->boxes, &b->n_boxes);
        if (!st && !b->n_boxes) {
            char where[PATH_CAP];
            root_path(fmt, root, where, sizeof where);
            st = dk__error(DK_ENOENT, gt_func, "%s: no such field in %s", c->boxes, where);
        }
    }
    if (!st && c->points)
        st = collect(fmt, root, c->points, DT(DK_F32), 2, 2, gt_func, &b->points, &b->n_points);
    for (int i = 0; i < c->from.n && !st; i++)
        st = collect(fmt, root, c->from.v[i], DT(DK_F32) | DT(DK_F64), 2, 2, gt_func, &b->from,
                     &b->n_from);
    for (int i = 0; i < c->to.n && !st; i++)
        st = collect(fmt, root, c->to.v[i], DT(DK_F32) | DT(DK_F64), 2, 2, gt_func, &b->to,
                     &b->n_to);
    if (!st && c->matrix_out) {
        int id = dk_group_child(fmt, root, c->matrix_out);
        b->has_out = 1;
        if (id >= 0) {
            st = check_leaf(fmt, id, DT(DK_F32), 2, 2, gt_func);
            if (!st) fld_set(&b->out, fmt, id);
            b->out_exists = 1;
        } else {
            st = add_output(fmt, root, c->matrix_out, DK_F32, 2, gt_func, &b->out);
        }
    }
    if (st) {
        gt_unbind(b);
        return st;
    }
    *binding = b;
    return DK_OK;
}

/* The augmentation of one draw: p' = A p + t (A = F s Rz(a), t = F t0), and
 * its inverse. Row-major 4x4. */
typedef struct aug3d {
    double T[16], Tinv[16];
    double s;
} aug3d;

static void aug_draw(const dk_global_transform_3d_config *c, dk_rng *r, aug3d *g)
{
    /* Always the same seven draws in the same order, whatever the config, so
       one parameter's range never shifts another's value. */
    double ua = dk_rng_uniform_f64(r), us = dk_rng_uniform_f64(r);
    double n0 = dk_rng_normal(r), n1 = dk_rng_normal(r), n2 = dk_rng_normal(r);
    double uh = dk_rng_uniform_f64(r), uv = dk_rng_uniform_f64(r);
    double a = c->rot_range[0] + (double)(c->rot_range[1] - c->rot_range[0]) * ua;
    double s = c->scale_range[0] + (double)(c->scale_range[1] - c->scale_range[0]) * us;
    double t0[3] = {n0 * c->translation_std[0], n1 * c->translation_std[1],
                    n2 * c->translation_std[2]};
    double fx = uv < (double)c->flip_v_prob ? -1 : 1;
    double fy = uh < (double)c->flip_h_prob ? -1 : 1;
    double ca = cos(a), sa = sin(a);
    double A[9] = {fx * s * ca, -fx * s * sa, 0, fy * s * sa, fy * s * ca, 0, 0, 0, s};
    double t[3] = {fx * t0[0], fy * t0[1], t0[2]};
    /* A^-1 = Rz(-a) F / s (F is its own inverse). */
    double Ai[9] = {ca * fx / s, sa * fy / s, 0, -sa * fx / s, ca * fy / s, 0, 0, 0, 1 / s};
    memset(g, 0, sizeof *g);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            g->T[i * 4 + j] = A[i * 3 + j];
            g->Tinv[i * 4 + j] = Ai[i * 3 + j];
        }
        g->T[i * 4 + 3] = t[i];
        g->Tinv[i * 4 + 3] = -(Ai[i * 3] * t[0] + Ai[i * 3 + 1] * t[1] + Ai[i * 3 + 2] * t[2]);
    }
    g->T[15] = g->Tinv[15] = 1;
    g->s = s;
}

static void mat4_mul(const double *a, const double *b, double *o)
{
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double v = 0;
            for (int k = 0; k < 4; k++) v += a[i * 4 + k] * b[k * 4 + j];
            o[i * 4 + j] = v;
        }
}

static void aug_boxes(const aug3d *g, float *b, int64_t n, int64_t d)
{
    const double *T = g->T;
    for (int64_t i = 0; i < n; i++) {
        float *r = b + i * d;
        double x = r[0], y = r[1], z = r[2];
        r[0] = (float)(T[0] * x + T[1] * y + T[2] * z + T[3]);
        r[1] = (float)(T[4] * x + T[5] * y + T[6] * z + T[7]);
        r[2] = (float)(T[8] * x + T[9] * y + T[10] * z + T[11]);
        for (int k = 3; k < 6; k++) r[k] = (float)(r[k] * g->s);
        double hx = cos((double)r[6]), hy = sin((double)r[6]);
        r[6] = (float)wrap_angle(atan2(T[4] * hx + T[5] * hy, T[0] * hx + T[1] * hy));
        if (d >= 9) {
            double vx = r[7], vy = r[8];
            r[7] = (float)(T[0] * vx + T[1] * vy);
            r[8] = (float)(T[4] * vx + T[5] * vy);
        }
    }
}

static int gt_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const gt_cfg *c = s->cfg;
    const gt_bind *b = binding;
    aug3d g;
    aug_draw(&c->c, &ctx->rng, &g);
    int st = DK_OK;
    for (int i = 0; i < b->n_boxes && !st; i++) {
        dk_tensor *t = NULL;
        if ((st = get_boxes(x, &b->boxes[i], gt_func, ctx, 0, &t))) break;
        int64_t n = t->shape[0], d = t->shape[1];
        if ((st = check_rows_finite(t->data, n, d, d, &b->boxes[i], gt_func, ctx))) break;
        if ((st = make_contig(t, 1, gt_func))) break;
        aug_boxes(&g, t->data, n, d);
    }
    for (int i = 0; i < b->n_points && !st; i++) {
        dk_tensor *t = NULL;
        if ((st = get_value(x, &b->points[i], DK_F32, 2, gt_func, ctx, &t))) break;
        if (t->shape[1] < 3) {
            st = run_error(DK_EINVALIDDATA, gt_func, ctx, "%s: (M, C >= 3) points expected, got C = %lld",
                           b->points[i].path, (long long)t->shape[1]);
            break;
        }
        if ((st = make_contig(t, 1, gt_func))) break;
        float *p = t->data;
        int64_t m = t->shape[0], cc = t->shape[1];
        const double *T = g.T;
        for (int64_t k = 0; k < m; k++) {
            float *q = p + k * cc;
            double px = q[0], py = q[1], pz = q[2];
            q[0] = (float)(T[0] * px + T[1] * py + T[2] * pz + T[3]);
            q[1] = (float)(T[4] * px + T[5] * py + T[6] * pz + T[7]);
            q[2] = (float)(T[8] * px + T[9] * py + T[10] * pz + T[11]);
        }
    }
    for (int i = 0; i < b->n_from && !st; i++) {
        dk_tensor *t = NULL;
        if ((st = get_value(x, &b->from[i], 0, 2, gt_func, ctx, &t))) break;
        if ((t->shape[0] != 3 && t->shape[0] != 4) || t->shape[1] != 4) {
            st = run_error(DK_EINVALIDDATA, gt_func, ctx, "%s: a (3, 4) or (4, 4) matrix expected, got (%lld, %lld)",
                           b->from[i].path, (long long)t->shape[0], (long long)t->shape[1]);
            break;
        }
        if ((st = make_contig(t, 1, gt_func))) break;
        for (int64_t r = 0; r < t->shape[0]; r++) {
            double row[4], o[4];
            for (int k = 0; k < 4; k++) row[k] = load_f(t->data, t->dtype, r * 4 + k);
            for (int j = 0; j < 4; j++) {
                o[j] = 0;
                for (int k = 0; k < 4; k++) o[j] += row[k] * g.Tinv[k * 4 + j];
            }
            for (int k = 0; k < 4; k++) store_f(t->data, t->dtype, r * 4 + k, o[k]);
        }
    }
    for (int i = 0; i < b->n_to && !st; i++) {
        dk_tensor *t = NULL;
        if ((st = get_value(x, &b->to[i], 0, 2, gt_func, ctx, &t))) break;
        if (t->shape[0] != 4 || t->shape[1] != 4) {
            st = run_error(DK_EINVALIDDATA, gt_func, ctx, "%s: a (4, 4) matrix expected, got (%lld, %lld)",
                           b->to[i].path, (long long)t->shape[0], (long long)t->shape[1]);
            break;
        }
        if ((st = make_contig(t, 1, gt_func))) break;
        double m[16], o[16];
        for (int k = 0; k < 16; k++) m[k] = load_f(t->data, t->dtype, k);
        mat4_mul(g.T, m, o);
        for (int k = 0; k < 16; k++) store_f(t->data, t->dtype, k, o[k]);
    }
    if (!st && b->has_out) {
        double old[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}, o[16];
        if (b->out_exists) {
            dk_tensor *t = NULL;
            if ((st = get_value(x, &b->out, DK_F32, 2, gt_func, ctx, &t))) return st;
            if (t->shape[0] != 4 || t->shape[1] != 4)
                return run_error(DK_EINVALIDDATA, gt_func, ctx, "%s: a (4, 4) matrix expected",
                                 b->out.path);
            if ((st = make_contig(t, 0, gt_func))) return st;
            for (int k = 0; k < 16; k++) old[k] = ((const float *)t->data)[k];
        }
        mat4_mul(g.T, old, o);
        dk_tensor t;
        int64_t shape[2] = {4, 4};
        if ((st = new_tensor(&t, DK_F32, 2, shape, gt_func))) return st;
        for (int k = 0; k < 16; k++) ((float *)t.data)[k] = (float)o[k];
        set_value(x, b->out.id, &t);
    }
    return st;
}

static const dk__step_vt gt_vt = {"global_transform_3d", gt_bind_fn, gt_run, gt_unbind,
                                  gt_destroy, 0};

static int finish_step(const dk__step_vt *vt, void *cfg, void (*destroy)(dk_step *), int st,
                       dk_step **out)
{
    if (!st) st = dk__step_new(vt, cfg, out);
    if (st) {
        dk_step tmp = {vt, cfg};
        destroy(&tmp);
        *out = NULL;
    }
    return st;
}

int dk_step_global_transform_3d(const dk_global_transform_3d_config *cfg, dk_step **out)
{
    if (!out) return dk__error(DK_EINVAL, gt_func, "out is NULL");
    *out = NULL;
    dk_global_transform_3d_config def;
    if (!cfg) {
        dk_global_transform_3d_config_init(&def);
        cfg = &def;
    }
    const dk_global_transform_3d_config *k = cfg;
    float rr[6] = {k->rot_range[0], k->scale_range[0], 0, k->rot_range[1], k->scale_range[1], 0};
    int st = finite_range(1, rr, gt_func, "rot_range");
    if (!st) st = finite_range(1, rr + 1, gt_func, "scale_range");
    if (!st && !(k->scale_range[0] > 0))
        st = dk__error(DK_EINVAL, gt_func, "scale_range: %g is not > 0", (double)k->scale_range[0]);
    for (int i = 0; i < 3 && !st; i++)
        if (!(k->translation_std[i] >= 0) || !isfinite(k->translation_std[i]))
            st = dk__error(DK_EINVAL, gt_func, "translation_std[%d] = %g: not a standard deviation",
                           i, (double)k->translation_std[i]);
    if (!st && (!(k->flip_h_prob >= 0 && k->flip_h_prob <= 1) ||
                !(k->flip_v_prob >= 0 && k->flip_v_prob <= 1)))
        st = dk__error(DK_EINVAL, gt_func, "flip probabilities %g, %g: not in [0, 1]",
                       (double)k->flip_h_prob, (double)k->flip_v_prob);
    if (st) return st;
    gt_cfg *c = dk_calloc(1, sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, gt_func, "out of memory");
    c->c = *k;
    c->boxes = dup_name(k->boxes, gt_func, "boxes", &st);
    c->points = dup_name(k->points, gt_func, "points", &st);
    c->matrix_out = dup_name(k->matrix_out, gt_func, "matrix_out", &st);
    if (!st) st = names_copy(&c->from, k->from_lidar, k->n_from_lidar, gt_func, "from_lidar");
    if (!st) st = names_copy(&c->to, k->to_lidar, k->n_to_lidar, gt_func, "to_lidar");
    c->c.boxes = c->c.points = c->c.matrix_out = NULL;
    c->c.from_lidar = c->c.to_lidar = NULL;
    return finish_step(&gt_vt, c, gt_destroy, st, out);
}

/* ------------------------------------------------------------------------ */
/* Row filters: points in range, boxes in range, classes, point counts, masks */

typedef enum bf_kind { BF_POINTS, BF_RANGE, BF_CLASS, BF_MINPTS, BF_MASK } bf_kind;

static const char *const default_box_fields[] = {
    "gt_bboxes_3d", "gt_labels_3d", "gt_num_lidar_pts", "gt_num_radar_pts",
    "gt_visibility", "gt_instance", "gt_velocity", "gt_visible"};

typedef struct bf_cfg {
    bf_kind kind;
    const char *func;
    char *src;             /* the field the decision is computed from */
    float range[6];
    int use_z, wrap_yaw;
    int32_t *classes;
    int n_classes, remap;
    int min_points;
    namelist fields;       /* empty: the default set (boxes) or none (points) */
    char *mask;
    int remove;
} bf_cfg;

typedef struct bf_bind {
    int n_src;
    fld *src;              /* points: every occurrence; others: exactly one */
    fld *fields;           /* rows removed with the source's (source excluded) */
    int n_fields;
    int has_mask, mask_existed, mask_drop;
    fld mask;
    int has_labels;        /* class remap: the labels are the source */
} bf_bind;

static void bf_destroy(dk_step *s)
{
    bf_cfg *c = s->cfg;
    if (!c) return;
    dk_free(c->src);
    dk_free(c->classes);
    names_free(&c->fields);
    dk_free(c->mask);
    dk_free(c);
}

static void bf_unbind(void *binding)
{
    bf_bind *b = binding;
    if (!b) return;
    dk_free(b->src);
    dk_free(b->fields);
    dk_free(b);
}

static int bf_add_field(bf_bind *b, const dk_group *g, int id, const char *func)
{
    for (int i = 0; i < b->n_src; i++)
        if (b->src[i].id == id) return DK_OK;
    for (int i = 0; i < b->n_fields; i++)
        if (b->fields[i].id == id) return DK_OK;
    fld *nf = dk_realloc(b->fields, sizeof(fld) * (size_t)(b->n_fields + 1));
    if (!nf) return dk__error(DK_ENOMEM, func, "out of memory");
    b->fields = nf;
    fld_set(&nf[b->n_fields++], g, id);
    return DK_OK;
}

static int bf_bind_fn(dk_step *s, dk_group *fmt, int root, void **binding)
{
    const bf_cfg *c = s->cfg;
    const char *func = c->func;
    bf_bind *b = dk_calloc(1, sizeof *b);
    if (!b) return dk__error(DK_ENOMEM, func, "out of memory");
    int st = DK_OK;
    /* The source field. */
    if (c->kind == BF_POINTS) {
        st = collect(fmt, root, c->src, DT(DK_F32), 2, 2, func, &b->src, &b->n_src);
        if (!st && !b->n_src) {
            char where[PATH_CAP];
            root_path(fmt, root, where, sizeof where);
            st = dk__error(DK_ENOENT, func, "%s: no such field in %s", c->src, where);
        }
        if (!st && b->n_src > 1 && c->fields.n)
            st = dk__error(DK_EINVALIDDATA, func,
                           "%s: %d fields, so the per-point fields are ambiguous: restrict the step with dk_step_at_path",
                           c->src, b->n_src);
    } else {
        int id = -1;
        st = find_one(fmt, root, c->src, 0, func, &id);
        if (!st) {
            switch (c->kind) {
            case BF_RANGE: st = check_leaf(fmt, id, DT(DK_F32), 2, 2, func); break;
            case BF_MASK: st = check_leaf(fmt, id, DT(DK_BOOL), 1, 1, func); break;
            default: st = check_leaf(fmt, id, DT(DK_I32), 1, 1, func); break;
            }
        }
        if (!st) {
            b->src = dk_malloc(sizeof(fld));
            if (!b->src)
                st = dk__error(DK_ENOMEM, func, "out of memory");
            else {
                fld_set(b->src, fmt, id);
                b->n_src = 1;
            }
        }
    }
    /* The fields whose rows go with the source's. */
    if (!st && c->remove) {
        if (c->fields.n) {
            for (int i = 0; i < c->fields.n && !st; i++) {
                int *ids = NULL, n = 0;
                if ((st = find_all(fmt, root, c->fields.v[i], &ids, &n, func))) break;
                if (!n) {
                    char where[PATH_CAP];
                    root_path(fmt, root, where, sizeof where);
                    st = dk__error(DK_ENOENT, func, "fields: %s: no such field in %s",
                                   c->fields.v[i], where);
                }
                for (int k = 0; k < n && !st; k++) {
                    st = check_leaf(fmt, ids[k], DT_ANY, 1, DK_MAX_DIMS, func);
                    if (!st) st = bf_add_field(b, fmt, ids[k], func);
                }
                dk_free(ids);
            }
        } else if (c->kind != BF_POINTS) {
            size_t nd = sizeof default_box_fields / sizeof default_box_fields[0];
            for (size_t i = 0; i < nd && !st; i++) {
                int *ids = NULL, n = 0;
                if ((st = find_all(fmt, root, default_box_fields[i], &ids, &n, func))) break;
                for (int k = 0; k < n && !st; k++) {
                    dk_field_info fi;
                    dk_group_info(fmt, ids[k], &fi);
                    if (fi.kind == DK_FIELD_TENSOR && fi.ndim >= 1)
                        st = bf_add_field(b, fmt, ids[k], func);
                }
                dk_free(ids);
            }
        }
    }
    /* The mask. */
    if (!st && c->kind == BF_MASK) {
        /* dk_step_remove_masked: the source is the mask, dropped unless
           keep_mask (then filtered with the rows: all true). */
        b->mask_drop = c->remove == 1;
        if (b->mask_drop) st = dk_group_remove(fmt, b->src[0].id);
    } else if (!st && c->mask) {
        int *ids = NULL, n = 0;
        if (!(st = find_all(fmt, root, c->mask, &ids, &n, func))) {
            if (n > 1) {
                st = dk__error(DK_EINVALIDDATA, func, "mask %s: %d fields in the subtree", c->mask, n);
            } else if (n == 1) {
                st = check_leaf(fmt, ids[0], DT(DK_BOOL), 1, 1, func);
                if (!st) fld_set(&b->mask, fmt, ids[0]);
                b->has_mask = b->mask_existed = 1;
            } else if (c->remove) {
                st = dk__error(DK_ENOENT, func, "mask %s: no such field (a mask is created only with remove = 0)",
                               c->mask);
            } else {
                st = add_output(fmt, parent_of(fmt, b->src[0].id), c->mask, DK_BOOL, 1, func,
                                &b->mask);
                b->has_mask = 1;
            }
            dk_free(ids);
        }
        if (!st && b->has_mask && c->remove) {
            /* Used, then removed with its value: not among the filtered fields. */
            for (int i = 0; i < b->n_fields; i++)
                if (b->fields[i].id == b->mask.id) {
                    b->fields[i] = b->fields[--b->n_fields];
                    break;
                }
            b->mask_drop = 1;
            st = dk_group_remove(fmt, b->mask.id);
        }
    }
    if (st) {
        bf_unbind(b);
        return st;
    }
    *binding = b;
    return DK_OK;
}

static int bf_apply(const bf_cfg *c, const bf_bind *b, const fld *src, dk_sample *x,
                    dk__step_ctx *ctx)
{
    const char *func = c->func;
    dk_tensor *t = NULL;
    int st;
    int64_t n;
    switch (c->kind) {
    case BF_POINTS:
        if ((st = get_value(x, src, DK_F32, 2, func, ctx, &t))) return st;
        if (t->shape[1] < 3)
            return run_error(DK_EINVALIDDATA, func, ctx, "%s: (M, C >= 3) points expected, got C = %lld",
                             src->path, (long long)t->shape[1]);
        break;
    case BF_RANGE:
        if ((st = get_boxes(x, src, func, ctx, 0, &t))) return st;
        break;
    case BF_MASK: st = get_value(x, src, DK_BOOL, 1, func, ctx, &t); break;
    default: st = get_value(x, src, DK_I32, 1, func, ctx, &t); break;
    }
    if (st) return st;
    if ((st = make_contig(t, 0, func))) return st;
    n = t->shape[0];
    uint8_t *keep = dk_malloc((size_t)(n > 0 ? n : 1));
    if (!keep) return dk__error(DK_ENOMEM, func, "out of memory");
    const float *r = c->range;
    switch (c->kind) {
    case BF_POINTS: {
        const float *p = t->data;
        int64_t cc = t->shape[1];
        for (int64_t i = 0; i < n; i++) {
            const float *q = p + i * cc;
            keep[i] = q[0] > r[0] && q[1] > r[1] && q[2] > r[2] && q[0] < r[3] && q[1] < r[4] &&
                      q[2] < r[5];
        }
        break;
    }
    case BF_RANGE: {
        const float *p = t->data;
        int64_t d = t->shape[1];
        if ((st = check_rows_finite(p, n, d, d < 9 ? d : 9, src, func, ctx))) break;
        for (int64_t i = 0; i < n; i++) {
            const float *q = p + i * d;
            keep[i] = q[0] > r[0] && q[1] > r[1] && q[0] < r[3] && q[1] < r[4] &&
                      (!c->use_z || (q[2] > r[2] && q[2] < r[5]));
        }
        break;
    }
    case BF_CLASS: {
        const int32_t *l = t->data;
        for (int64_t i = 0; i < n; i++) {
            keep[i] = 0;
            for (int k = 0; k < c->n_classes; k++)
                if (l[i] == c->classes[k]) keep[i] = 1;
        }
        break;
    }
    case BF_MINPTS: {
        const int32_t *l = t->data;
        for (int64_t i = 0; i < n; i++) keep[i] = l[i] >= c->min_points;
        break;
    }
    case BF_MASK: {
        const uint8_t *m = t->data;
        for (int64_t i = 0; i < n; i++) keep[i] = m[i] != 0;
        break;
    }
    }
    /* AND with an existing mask. */
    if (!st && b->mask_existed) {
        dk_tensor *m = NULL;
        if (!(st = get_value(x, &b->mask, DK_BOOL, 1, func, ctx, &m))) {
            if (m->shape[0] != n)
                st = run_error(DK_EINVALIDDATA, func, ctx, "%s: %lld entries, %s has %lld rows",
                               b->mask.path, (long long)m->shape[0], src->path, (long long)n);
            else if (!(st = make_contig(m, 0, func))) {
                const uint8_t *mv = m->data;
                for (int64_t i = 0; i < n; i++) keep[i] = keep[i] && mv[i];
            }
        }
    }
    int64_t kept = 0;
    for (int64_t i = 0; i < n && !st; i++) kept += keep[i];
    /* Check every per-row field before changing any. */
    for (int i = 0; i < b->n_fields && !st && c->remove; i++) {
        dk_tensor *f = NULL;
        if ((st = get_value(x, &b->fields[i], 0, -1, func, ctx, &f))) break;
        if (f->ndim < 1 || f->shape[0] != n)
            st = run_error(DK_EINVALIDDATA, func, ctx, "%s: %lld rows expected (as %s), got %lld",
                           b->fields[i].path, (long long)n, src->path,
                           f->ndim ? (long long)f->shape[0] : 0LL);
    }
    if (!st && c->remove) {
        int src_dropped = c->kind == BF_MASK && b->mask_drop;
        if (!src_dropped) st = filter_rows(&x->values[src->id], keep, n, kept, func);
        for (int i = 0; i < b->n_fields && !st; i++)
            st = filter_rows(&x->values[b->fields[i].id], keep, n, kept, func);
        if (!st && b->mask_drop)
            dk_tensor_release(&x->values[c->kind == BF_MASK ? src->id : b->mask.id]);
    } else if (!st && b->has_mask) {
        dk_tensor m;
        int64_t shape[1] = {n};
        if (!(st = new_tensor(&m, DK_BOOL, 1, shape, func))) {
            memcpy(m.data, keep, (size_t)n);
            set_value(x, b->mask.id, &m);
        }
    }
    /* Dependent values of the kept rows. */
    if (!st && c->kind == BF_CLASS && c->remap) {
        dk_tensor *l = &x->values[src->id];
        if (!(st = make_contig(l, 1, func))) {
            int32_t *lv = l->data;
            for (int64_t i = 0; i < l->shape[0]; i++) {
                int32_t to = -1;
                for (int k = 0; k < c->n_classes; k++)
                    if (lv[i] == c->classes[k]) to = k;
                lv[i] = (!c->remove && !keep[i]) ? -1 : to;
            }
        }
    }
    if (!st && c->kind == BF_RANGE && c->wrap_yaw) {
        dk_tensor *bx = &x->values[src->id];
        if (!(st = make_contig(bx, 1, func))) {
            float *p = bx->data;
            int64_t d = bx->shape[1];
            for (int64_t i = 0; i < bx->shape[0]; i++)
                p[i * d + 6] = (float)wrap_angle((double)p[i * d + 6]);
        }
    }
    dk_free(keep);
    return st;
}

static int bf_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const bf_cfg *c = s->cfg;
    const bf_bind *b = binding;
    int st = DK_OK;
    for (int i = 0; i < b->n_src && !st; i++) st = bf_apply(c, b, &b->src[i], x, ctx);
    return st;
}

static const dk__step_vt points_vt = {"points_in_range", bf_bind_fn, bf_run, bf_unbind,
                                      bf_destroy, 0};
static const dk__step_vt boxes_range_vt = {"boxes_in_range", bf_bind_fn, bf_run, bf_unbind,
                                           bf_destroy, 0};
static const dk__step_vt class_vt = {"class_filter", bf_bind_fn, bf_run, bf_unbind, bf_destroy,
                                     0};
static const dk__step_vt minpts_vt = {"min_points_filter", bf_bind_fn, bf_run, bf_unbind,
                                      bf_destroy, 0};
static const dk__step_vt masked_vt = {"remove_masked", bf_bind_fn, bf_run, bf_unbind,
                                      bf_destroy, 0};

static int bf_make(const dk__step_vt *vt, bf_cfg *proto, const char *src, const char *const *fields,
                   int n_fields, const char *mask, dk_step **out)
{
    const char *func = proto->func;
    int st = DK_OK;
    bf_cfg *c = dk_calloc(1, sizeof *c);
    if (!c) {
        dk_free(proto->classes);
        return dk__error(DK_ENOMEM, func, "out of memory");
    }
    *c = *proto;
    c->fields.v = NULL;
    c->fields.n = 0;
    c->src = dup_name(src, func, "source field", &st);
    if (!st && !c->src) st = dk__error(DK_EINVAL, func, "the source field name is NULL");
    c->mask = dup_name(mask, func, "mask", &st);
    if (!st) st = names_copy(&c->fields, fields, n_fields, func, "fields");
    return finish_step(vt, c, bf_destroy, st, out);
}

void dk_points_in_range_config_init(dk_points_in_range_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->points = "points";
    const float r[6] = {-51.2f, -51.2f, -5.0f, 51.2f, 51.2f, 3.0f};
    memcpy(cfg->range, r, sizeof r);
}

int dk_step_points_in_range(const dk_points_in_range_config *cfg, dk_step **out)
{
    static const char func[] = "dk_step_points_in_range";
    if (!out) return dk__error(DK_EINVAL, func, "out is NULL");
    *out = NULL;
    dk_points_in_range_config def;
    if (!cfg) {
        dk_points_in_range_config_init(&def);
        cfg = &def;
    }
    int st = finite_range(3, cfg->range, func, "range");
    if (st) return st;
    bf_cfg p;
    memset(&p, 0, sizeof p);
    p.kind = BF_POINTS;
    p.func = func;
    memcpy(p.range, cfg->range, sizeof p.range);
    p.remove = 1;
    return bf_make(&points_vt, &p, cfg->points, cfg->fields, cfg->n_fields, NULL, out);
}

void dk_boxes_in_range_config_init(dk_boxes_in_range_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->boxes = "gt_bboxes_3d";
    const float r[6] = {-51.2f, -51.2f, -5.0f, 51.2f, 51.2f, 3.0f};
    memcpy(cfg->range, r, sizeof r);
    cfg->wrap_yaw = 1;
    cfg->remove = 1;
}

int dk_step_boxes_in_range(const dk_boxes_in_range_config *cfg, dk_step **out)
{
    static const char func[] = "dk_step_boxes_in_range";
    if (!out) return dk__error(DK_EINVAL, func, "out is NULL");
    *out = NULL;
    dk_boxes_in_range_config def;
    if (!cfg) {
        dk_boxes_in_range_config_init(&def);
        cfg = &def;
    }
    int st = finite_range(3, cfg->range, func, "range");
    if (st) return st;
    bf_cfg p;
    memset(&p, 0, sizeof p);
    p.kind = BF_RANGE;
    p.func = func;
    memcpy(p.range, cfg->range, sizeof p.range);
    p.use_z = cfg->use_z != 0;
    p.wrap_yaw = cfg->wrap_yaw != 0;
    p.remove = cfg->remove != 0;
    if (!p.remove && !cfg->mask)
        return dk__error(DK_EINVAL, func, "remove = 0 needs a mask name to write to");
    return bf_make(&boxes_range_vt, &p, cfg->boxes, cfg->fields, cfg->n_fields, cfg->mask, out);
}

void dk_class_filter_config_init(dk_class_filter_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->labels = "gt_labels_3d";
    cfg->remove = 1;
}

int dk_step_class_filter(const dk_class_filter_config *cfg, dk_step **out)
{
    static const char func[] = "dk_step_class_filter";
    if (!out) return dk__error(DK_EINVAL, func, "out is NULL");
    *out = NULL;
    if (!cfg) return dk__error(DK_EINVAL, func, "NULL config (classes are required)");
    if (cfg->n_classes < 1 || !cfg->classes)
        return dk__error(DK_EINVAL, func, "classes: %d classes and %s list", cfg->n_classes,
                         cfg->classes ? "a" : "no");
    for (int i = 0; i < cfg->n_classes; i++)
        for (int k = 0; k < i; k++)
            if (cfg->classes[i] == cfg->classes[k])
                return dk__error(DK_EINVAL, func, "classes[%d] = %d repeats classes[%d]", i,
                                 (int)cfg->classes[i], k);
    if (!cfg->remove && !cfg->mask)
        return dk__error(DK_EINVAL, func, "remove = 0 needs a mask name to write to");
    bf_cfg p;
    memset(&p, 0, sizeof p);
    p.kind = BF_CLASS;
    p.func = func;
    p.remap = cfg->remap != 0;
    p.remove = cfg->remove != 0;
    p.n_classes = cfg->n_classes;
    p.classes = dk_malloc(sizeof(int32_t) * (size_t)cfg->n_classes);
    if (!p.classes) return dk__error(DK_ENOMEM, func, "out of memory");
    memcpy(p.classes, cfg->classes, sizeof(int32_t) * (size_t)cfg->n_classes);
    return bf_make(&class_vt, &p, cfg->labels, cfg->fields, cfg->n_fields, cfg->mask, out);
}

void dk_min_points_filter_config_init(dk_min_points_filter_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->num_points = "gt_num_lidar_pts";
    cfg->min_points = 1;
    cfg->remove = 1;
}

int dk_step_min_points_filter(const dk_min_points_filter_config *cfg, dk_step **out)
{
    static const char func[] = "dk_step_min_points_filter";
    if (!out) return dk__error(DK_EINVAL, func, "out is NULL");
    *out = NULL;
    dk_min_points_filter_config def;
    if (!cfg) {
        dk_min_points_filter_config_init(&def);
        cfg = &def;
    }
    if (!cfg->remove && !cfg->mask)
        return dk__error(DK_EINVAL, func, "remove = 0 needs a mask name to write to");
    bf_cfg p;
    memset(&p, 0, sizeof p);
    p.kind = BF_MINPTS;
    p.func = func;
    p.min_points = cfg->min_points;
    p.remove = cfg->remove != 0;
    return bf_make(&minpts_vt, &p, cfg->num_points, cfg->fields, cfg->n_fields, cfg->mask, out);
}

int dk_step_remove_masked(const char *mask, const char *const *fields, int n_fields,
                          int keep_mask, dk_step **out)
{
    static const char func[] = "dk_step_remove_masked";
    if (!out) return dk__error(DK_EINVAL, func, "out is NULL");
    *out = NULL;
    if (!mask || !*mask) return dk__error(DK_EINVAL, func, "mask: no name");
    bf_cfg p;
    memset(&p, 0, sizeof p);
    p.kind = BF_MASK;
    p.func = func;
    /* remove = 1: rows are removed and the mask dropped; 2: the mask is kept
       (filtered with the rows, so all true). */
    p.remove = keep_mask ? 2 : 1;
    return bf_make(&masked_vt, &p, mask, fields, n_fields, NULL, out);
}

/* ------------------------------------------------------------------------ */
/* Visible boxes per camera                                                  */

void dk_visible_boxes_config_init(dk_visible_boxes_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->boxes = "gt_bboxes_3d";
    cfg->labels = "gt_labels_3d";
    cfg->lidar2img = "lidar2img";
    cfg->image = "image";
    cfg->min_depth = 0.01f;
    cfg->min_size = 1.0f;
    cfg->mask_out = "gt_visible";
    cfg->bboxes_out = "gt_bboxes_2d";
    cfg->centers_out = "centers2d";
    cfg->depths_out = "depths";
    cfg->labels_out = "gt_labels_2d";
}

enum { VB_MASK, VB_BBOXES, VB_CENTERS, VB_DEPTHS, VB_LABELS, VB_INDEX, VB_NOUT };

typedef struct vb_cfg {
    dk_visible_boxes_config c;   /* numbers; strings below */
    char *boxes, *labels, *lidar2img, *image;
    char *outs[VB_NOUT];
} vb_cfg;

typedef struct vb_cam {
    fld l2i, img;
    int has_img;
    fld out[VB_NOUT];
    int has_out[VB_NOUT];
} vb_cam;

typedef struct vb_bind {
    fld boxes, labels;
    int has_labels;
    vb_cam *cams;
    int n_cams;
} vb_bind;

static const char vb_func[] = "dk_step_visible_boxes";

static void vb_destroy(dk_step *s)
{
    vb_cfg *c = s->cfg;
    if (!c) return;
    dk_free(c->boxes);
    dk_free(c->labels);
    dk_free(c->lidar2img);
    dk_free(c->image);
    for (int i = 0; i < VB_NOUT; i++) dk_free(c->outs[i]);
    dk_free(c);
}

static void vb_unbind(void *binding)
{
    vb_bind *b = binding;
    if (!b) return;
    dk_free(b->cams);
    dk_free(b);
}

static int vb_bind_fn(dk_step *s, dk_group *fmt, int root, void **binding)
{
    const vb_cfg *c = s->cfg;
    vb_bind *b = dk_calloc(1, sizeof *b);
    if (!b) return dk__error(DK_ENOMEM, vb_func, "out of memory");
    int id = -1, *ids = NULL, n = 0;
    int st = find_one(fmt, root, c->boxes, 1, vb_func, &id);
    if (!st) st = check_leaf(fmt, id, DT(DK_F32), 2, 2, vb_func);
    if (!st) fld_set(&b->boxes, fmt, id);
    if (!st && c->outs[VB_LABELS]) {
        st = find_one(fmt, root, c->labels, 1, vb_func, &id);
        if (!st) st = check_leaf(fmt, id, DT(DK_I32), 1, 1, vb_func);
        if (!st) fld_set(&b->labels, fmt, id);
        b->has_labels = 1;
    }
    if (!st) st = find_all(fmt, root, c->lidar2img, &ids, &n, vb_func);
    if (!st && !n) {
        char where[PATH_CAP];
        root_path(fmt, root, where, sizeof where);
        st = dk__error(DK_ENOENT, vb_func, "%s: no such field in %s", c->lidar2img, where);
    }
    if (!st) {
        b->cams = dk_calloc((size_t)n, sizeof *b->cams);
        if (!b->cams) st = dk__error(DK_ENOMEM, vb_func, "out of memory");
    }
    static const dk_dtype out_dt[VB_NOUT] = {DK_BOOL, DK_F32, DK_F32, DK_F32, DK_I32, DK_I32};
    static const int out_nd[VB_NOUT] = {1, 2, 2, 1, 1, 1};
    for (int i = 0; i < n && !st; i++) {
        vb_cam *cam = &b->cams[i];
        st = check_leaf(fmt, ids[i], DT(DK_F32) | DT(DK_F64), 2, 2, vb_func);
        if (st) break;
        fld_set(&cam->l2i, fmt, ids[i]);
        int parent = parent_of(fmt, ids[i]);
        if (!(c->c.image_w > 0)) {
            int im = dk_group_child(fmt, parent, c->image);
            if (im < 0) {
                st = dk__error(DK_ENOENT, vb_func, "%s: no sibling field %s for the image size (or set image_w, image_h)",
                               cam->l2i.path, c->image);
                break;
            }
            if ((st = check_leaf(fmt, im, DT_ANY, 2, 3, vb_func))) break;
            fld_set(&cam->img, fmt, im);
            cam->has_img = 1;
        }
        for (int k = 0; k < VB_NOUT && !st; k++) {
            if (!c->outs[k]) continue;
            st = add_output(fmt, parent, c->outs[k], out_dt[k], out_nd[k], vb_func, &cam->out[k]);
            cam->has_out[k] = !st;
        }
        b->n_cams = i + 1;
    }
    dk_free(ids);
    if (st) {
        vb_unbind(b);
        return st;
    }
    *binding = b;
    return DK_OK;
}

typedef struct pt2 {
    double x, y;
} pt2;

static double cross3(pt2 o, pt2 a, pt2 b)
{
    return (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x);
}

/* Convex hull (counter-clockwise in x-right, y-up terms) by the monotone
 * chain; p is sorted in place. Returns the vertex count (<= n). */
static int convex_hull(pt2 *p, int n, pt2 *h)
{
    for (int i = 1; i < n; i++) {
        pt2 v = p[i];
        int j = i - 1;
        while (j >= 0 && (p[j].x > v.x || (p[j].x == v.x && p[j].y > v.y))) {
            p[j + 1] = p[j];
            j--;
        }
        p[j + 1] = v;
    }
    if (n < 3) {
        for (int i = 0; i < n; i++) h[i] = p[i];
        return n;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        while (k >= 2 && cross3(h[k - 2], h[k - 1], p[i]) <= 0) k--;
        h[k++] = p[i];
    }
    for (int i = n - 2, t = k + 1; i >= 0; i--) {
        while (k >= t && cross3(h[k - 2], h[k - 1], p[i]) <= 0) k--;
        h[k++] = p[i];
    }
    return k - 1;
}

/* Clips a convex polygon to the half-plane a x + b y <= c (Sutherland-
 * Hodgman). Returns the new count. */
static int clip_half(const pt2 *in, int n, pt2 *out, double a, double b, double c)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        pt2 p = in[i], q = in[(i + 1) % n];
        double dp = a * p.x + b * p.y - c, dq = a * q.x + b * q.y - c;
        if (dp <= 0) out[m++] = p;
        if ((dp < 0 && dq > 0) || (dp > 0 && dq < 0)) {
            double t = dp / (dp - dq);
            out[m++] = (pt2){p.x + t * (q.x - p.x), p.y + t * (q.y - p.y)};
        }
    }
    return m;
}

/* The 2-D box of the visible part of a 3-D box seen through P (3 rows of a
 * lidar2img), clipped to [0, W] x [0, H]. Returns 1 and fills bb when the
 * centre is in front of the near plane and the projection meets the image. */
static int project_box(const double P[12], const float *box, double zn, double W, double H,
                       double bb[4], double ctr[3])
{
    double cx = box[0], cy = box[1], cz = box[2];
    double zc = P[8] * cx + P[9] * cy + P[10] * cz + P[11];
    ctr[0] = (P[0] * cx + P[1] * cy + P[2] * cz + P[3]) / zc;
    ctr[1] = (P[4] * cx + P[5] * cy + P[6] * cz + P[7]) / zc;
    ctr[2] = zc;
    if (!(zc > zn)) return 0;
    double c = cos((double)box[6]), s = sin((double)box[6]);
    double hl = box[3] * 0.5, hw = box[4] * 0.5, hh = box[5] * 0.5;
    double q[8][3];
    for (int k = 0; k < 8; k++) {
        double lx = (k & 1) ? hl : -hl, ly = (k & 2) ? hw : -hw, lz = (k & 4) ? hh : -hh;
        double x = cx + c * lx - s * ly, y = cy + s * lx + c * ly, z = cz + lz;
        for (int r = 0; r < 3; r++) q[k][r] = P[r * 4] * x + P[r * 4 + 1] * y + P[r * 4 + 2] * z + P[r * 4 + 3];
    }
    pt2 pts[20], hull[41], a[48], b[48];
    int np = 0;
    for (int k = 0; k < 8; k++)
        if (q[k][2] > zn) pts[np++] = (pt2){q[k][0] / q[k][2], q[k][1] / q[k][2]};
    /* Edges join corners that differ in one bit; the part in front of the
       near plane ends where the edge crosses it. */
    for (int k = 0; k < 8; k++)
        for (int bit = 1; bit < 8; bit <<= 1) {
            int j = k | bit;
            if (j == k) continue;
            double za = q[k][2], zb = q[j][2];
            if ((za > zn) == (zb > zn)) continue;
            double t = (zn - za) / (zb - za);
            double ux = q[k][0] + t * (q[j][0] - q[k][0]), uy = q[k][1] + t * (q[j][1] - q[k][1]);
            pts[np++] = (pt2){ux / zn, uy / zn};
        }
    int nh = convex_hull(pts, np, hull);
    if (nh == 0) return 0;
    int m = clip_half(hull, nh, a, -1, 0, 0);      /* x >= 0 */
    m = clip_half(a, m, b, 1, 0, W);               /* x <= W */
    m = clip_half(b, m, a, 0, -1, 0);              /* y >= 0 */
    m = clip_half(a, m, b, 0, 1, H);               /* y <= H */
    if (m == 0) return 0;
    bb[0] = bb[2] = b[0].x;
    bb[1] = bb[3] = b[0].y;
    for (int i = 1; i < m; i++) {
        bb[0] = fmin(bb[0], b[i].x);
        bb[2] = fmax(bb[2], b[i].x);
        bb[1] = fmin(bb[1], b[i].y);
        bb[3] = fmax(bb[3], b[i].y);
    }
    return bb[2] > bb[0] && bb[3] > bb[1];
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Whether rectangle r is covered by the union of rects[0..n) (each x1, y1,
 * x2, y2): every cell of the grid their edges cut r into must be inside one.
 * xs, ys: scratch of 2 n + 2 doubles. */
static int rect_covered(const double *r, const double *rects, int n, double *xs, double *ys)
{
    int nx = 0, ny = 0;
    xs[nx++] = r[0];
    xs[nx++] = r[2];
    ys[ny++] = r[1];
    ys[ny++] = r[3];
    for (int i = 0; i < n; i++) {
        const double *q = rects + 4 * i;
        if (q[0] > r[0] && q[0] < r[2]) xs[nx++] = q[0];
        if (q[2] > r[0] && q[2] < r[2]) xs[nx++] = q[2];
        if (q[1] > r[1] && q[1] < r[3]) ys[ny++] = q[1];
        if (q[3] > r[1] && q[3] < r[3]) ys[ny++] = q[3];
    }
    qsort(xs, (size_t)nx, sizeof *xs, cmp_double);
    qsort(ys, (size_t)ny, sizeof *ys, cmp_double);
    for (int i = 0; i + 1 < nx; i++) {
        if (!(xs[i + 1] > xs[i])) continue;
        double mx = 0.5 * (xs[i] + xs[i + 1]);
        for (int j = 0; j + 1 < ny; j++) {
            if (!(ys[j + 1] > ys[j])) continue;
            double my = 0.5 * (ys[j] + ys[j + 1]);
            int in = 0;
            for (int k = 0; k < n && !in; k++) {
                const double *q = rects + 4 * k;
                in = q[0] <= mx && mx <= q[2] && q[1] <= my && my <= q[3];
            }
            if (!in) return 0;
        }
    }
    return 1;
}

static int vb_camera(const vb_cfg *c, const vb_bind *b, const vb_cam *cam, dk_sample *x,
                     dk__step_ctx *ctx)
{
    double W, H;
    dk_tensor *t = NULL;
    int st;
    if (cam->has_img) {
        if ((st = get_value(x, &cam->img, 0, -1, vb_func, ctx, &t))) return st;
        if (t->ndim == 2) {
            H = (double)t->shape[0];
            W = (double)t->shape[1];
        } else if (t->ndim == 3) {
            H = (double)t->shape[c->c.image_chw ? 1 : 0];
            W = (double)t->shape[c->c.image_chw ? 2 : 1];
        } else {
            return run_error(DK_EINVALIDDATA, vb_func, ctx, "%s: an image of rank 2 or 3 expected, got rank %d",
                             cam->img.path, (int)t->ndim);
        }
    } else {
        W = c->c.image_w;
        H = c->c.image_h;
    }
    double P[12];
    if ((st = get_value(x, &cam->l2i, 0, 2, vb_func, ctx, &t))) return st;
    if ((t->shape[0] != 3 && t->shape[0] != 4) || t->shape[1] != 4)
        return run_error(DK_EINVALIDDATA, vb_func, ctx, "%s: a (3, 4) or (4, 4) matrix expected, got (%lld, %lld)",
                         cam->l2i.path, (long long)t->shape[0], (long long)t->shape[1]);
    if ((st = make_contig(t, 0, vb_func))) return st;
    for (int k = 0; k < 12; k++) {
        P[k] = load_f(t->data, t->dtype, k);
        if (!isfinite(P[k]))
            return run_error(DK_EINVALIDDATA, vb_func, ctx, "%s: entry %d is %g", cam->l2i.path, k, P[k]);
    }
    if ((st = get_boxes(x, &b->boxes, vb_func, ctx, 0, &t))) return st;
    int64_t n = t->shape[0], d = t->shape[1];
    const float *bx = t->data;
    if ((st = check_rows_finite(bx, n, d, 7, &b->boxes, vb_func, ctx))) return st;
    const int32_t *labels = NULL;
    if (b->has_labels) {
        dk_tensor *l = NULL;
        if ((st = get_value(x, &b->labels, DK_I32, 1, vb_func, ctx, &l))) return st;
        if (l->shape[0] != n)
            return run_error(DK_EINVALIDDATA, vb_func, ctx, "%s: %lld labels for %lld boxes",
                             b->labels.path, (long long)l->shape[0], (long long)n);
        if ((st = make_contig(l, 0, vb_func))) return st;
        labels = l->data;
    }
    size_t nn = (size_t)(n > 0 ? n : 1);
    double *bb = dk_malloc(nn * 4 * sizeof(double)), *ctr = dk_malloc(nn * 3 * sizeof(double));
    uint8_t *inimg = dk_malloc(nn), *vis = dk_malloc(nn);
    double *occ = c->c.occlusion ? dk_malloc(nn * 4 * sizeof(double)) : NULL;
    double *xs = c->c.occlusion ? dk_malloc((2 * nn + 2) * sizeof(double)) : NULL;
    double *ys = c->c.occlusion ? dk_malloc((2 * nn + 2) * sizeof(double)) : NULL;
    if (!bb || !ctr || !inimg || !vis || (c->c.occlusion && (!occ || !xs || !ys))) {
        st = dk__error(DK_ENOMEM, vb_func, "out of memory");
        goto done;
    }
    double zn = c->c.min_depth, ms = c->c.min_size;
    for (int64_t i = 0; i < n; i++) {
        inimg[i] = (uint8_t)project_box(P, bx + i * d, zn, W, H, bb + 4 * i, ctr + 3 * i);
        vis[i] = inimg[i] && bb[4 * i + 2] - bb[4 * i] >= ms && bb[4 * i + 3] - bb[4 * i + 1] >= ms;
    }
    if (c->c.occlusion) {
        for (int64_t i = 0; i < n; i++) {
            if (!vis[i]) continue;
            const double *r = bb + 4 * i;
            int m = 0;
            for (int64_t j = 0; j < n; j++) {
                if (j == i || !inimg[j] || !(ctr[3 * j + 2] < ctr[3 * i + 2])) continue;
                const double *q = bb + 4 * j;
                if (q[2] <= r[0] || q[0] >= r[2] || q[3] <= r[1] || q[1] >= r[3]) continue;
                memcpy(occ + 4 * m++, q, 4 * sizeof(double));
            }
            if (m && rect_covered(r, occ, m, xs, ys)) vis[i] = 0;
        }
    }
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += vis[i];
    for (int o = 0; o < VB_NOUT && !st; o++) {
        if (!cam->has_out[o]) continue;
        dk_tensor v;
        int64_t shape[2] = {o == VB_MASK ? n : k, o == VB_BBOXES ? 4 : 2};
        static const dk_dtype dt[VB_NOUT] = {DK_BOOL, DK_F32, DK_F32, DK_F32, DK_I32, DK_I32};
        static const int nd[VB_NOUT] = {1, 2, 2, 1, 1, 1};
        if ((st = new_tensor(&v, dt[o], nd[o], shape, vb_func))) break;
        int64_t at = 0;
        for (int64_t i = 0; i < n; i++) {
            if (o == VB_MASK) {
                ((uint8_t *)v.data)[i] = vis[i];
                continue;
            }
            if (!vis[i]) continue;
            switch (o) {
            case VB_BBOXES:
                for (int e = 0; e < 4; e++) ((float *)v.data)[at * 4 + e] = (float)bb[4 * i + e];
                break;
            case VB_CENTERS:
                ((float *)v.data)[at * 2] = (float)ctr[3 * i];
                ((float *)v.data)[at * 2 + 1] = (float)ctr[3 * i + 1];
                break;
            case VB_DEPTHS: ((float *)v.data)[at] = (float)ctr[3 * i + 2]; break;
            case VB_LABELS: ((int32_t *)v.data)[at] = labels[i]; break;
            default: ((int32_t *)v.data)[at] = (int32_t)i; break;
            }
            at++;
        }
        set_value(x, cam->out[o].id, &v);
    }
done:
    dk_free(bb);
    dk_free(ctr);
    dk_free(inimg);
    dk_free(vis);
    dk_free(occ);
    dk_free(xs);
    dk_free(ys);
    return st;
}

static int vb_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const vb_bind *b = binding;
    int st = DK_OK;
    for (int i = 0; i < b->n_cams && !st; i++) st = vb_camera(s->cfg, b, &b->cams[i], x, ctx);
    return st;
}

static const dk__step_vt vb_vt = {"visible_boxes", vb_bind_fn, vb_run, vb_unbind, vb_destroy, 0};

int dk_step_visible_boxes(const dk_visible_boxes_config *cfg, dk_step **out)
{
    if (!out) return dk__error(DK_EINVAL, vb_func, "out is NULL");
    *out = NULL;
    dk_visible_boxes_config def;
    if (!cfg) {
        dk_visible_boxes_config_init(&def);
        cfg = &def;
    }
    const char *outs[VB_NOUT] = {cfg->mask_out, cfg->bboxes_out, cfg->centers_out,
                                 cfg->depths_out, cfg->labels_out, cfg->index_out};
    int any = 0;
    for (int i = 0; i < VB_NOUT; i++) any |= outs[i] != NULL;
    if (!(cfg->min_depth > 0) || !isfinite(cfg->min_depth))
        return dk__error(DK_EINVAL, vb_func, "min_depth = %g: not > 0", (double)cfg->min_depth);
    if (!(cfg->min_size >= 0) || !isfinite(cfg->min_size))
        return dk__error(DK_EINVAL, vb_func, "min_size = %g: not >= 0", (double)cfg->min_size);
    if ((cfg->image_w > 0) != (cfg->image_h > 0) || cfg->image_w < 0 || cfg->image_h < 0)
        return dk__error(DK_EINVAL, vb_func, "image_w = %d, image_h = %d: set both (> 0) or neither",
                         cfg->image_w, cfg->image_h);
    if (!any) return dk__error(DK_EINVAL, vb_func, "no output field named");
    if (cfg->labels_out && !cfg->labels)
        return dk__error(DK_EINVAL, vb_func, "labels_out needs the labels field");
    if (!cfg->boxes || !cfg->lidar2img || (!(cfg->image_w > 0) && !cfg->image))
        return dk__error(DK_EINVAL, vb_func, "boxes, lidar2img and image (or image_w/h) must be named");
    vb_cfg *c = dk_calloc(1, sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, vb_func, "out of memory");
    int st = DK_OK;
    c->c = *cfg;
    c->boxes = dup_name(cfg->boxes, vb_func, "boxes", &st);
    c->labels = dup_name(cfg->labels_out ? cfg->labels : NULL, vb_func, "labels", &st);
    c->lidar2img = dup_name(cfg->lidar2img, vb_func, "lidar2img", &st);
    c->image = dup_name(cfg->image_w > 0 ? NULL : cfg->image, vb_func, "image", &st);
    static const char *const pnames[VB_NOUT] = {"mask_out", "bboxes_out", "centers_out",
                                                "depths_out", "labels_out", "index_out"};
    for (int i = 0; i < VB_NOUT; i++) c->outs[i] = dup_name(outs[i], vb_func, pnames[i], &st);
    for (int i = 0; i < VB_NOUT && !st; i++)
        for (int j = 0; j < i && !st; j++)
            if (outs[i] && outs[j] && !strcmp(outs[i], outs[j]))
                st = dk__error(DK_EINVAL, vb_func, "%s and %s are both %s", pnames[j], pnames[i],
                               outs[i]);
    c->c.boxes = c->c.labels = c->c.lidar2img = c->c.image = NULL;
    c->c.mask_out = c->c.bboxes_out = c->c.centers_out = NULL;
    c->c.depths_out = c->c.labels_out = c->c.index_out = NULL;
    return finish_step(&vb_vt, c, vb_destroy, st, out);
}

/* ------------------------------------------------------------------------ */
/* Padding to a uniform first dimension                                      */

void dk_pad_to_uniform_config_init(dk_pad_to_uniform_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->capacity = -1;
    cfg->count_suffix = "_count";
}

typedef struct pad_cfg {
    namelist names;
    int64_t capacity;
    double fill;
    int truncate;
    char *suffix;
} pad_cfg;

typedef struct pad_item {
    fld f, count;
} pad_item;

typedef struct pad_bind {
    pad_item *items;
    int n;
} pad_bind;

static const char pad_func[] = "dk_step_pad_to_uniform";

static void pad_destroy(dk_step *s)
{
    pad_cfg *c = s->cfg;
    if (!c) return;
    names_free(&c->names);
    dk_free(c->suffix);
    dk_free(c);
}

static void pad_unbind(void *binding)
{
    pad_bind *b = binding;
    if (!b) return;
    dk_free(b->items);
    dk_free(b);
}

static int pad_bind_fn(dk_step *s, dk_group *fmt, int root, void **binding)
{
    const pad_cfg *c = s->cfg;
    pad_bind *b = dk_calloc(1, sizeof *b);
    if (!b) return dk__error(DK_ENOMEM, pad_func, "out of memory");
    int st = DK_OK;
    for (int i = 0; i < c->names.n && !st; i++) {
        int *ids = NULL, n = 0;
        if ((st = find_all(fmt, root, c->names.v[i], &ids, &n, pad_func))) break;
        if (!n) {
            char where[PATH_CAP];
            root_path(fmt, root, where, sizeof where);
            st = dk__error(DK_ENOENT, pad_func, "%s: no such field in %s", c->names.v[i], where);
        }
        pad_item *ni = n ? dk_realloc(b->items, sizeof(pad_item) * (size_t)(b->n + n)) : b->items;
        if (n && !ni) st = dk__error(DK_ENOMEM, pad_func, "out of memory");
        if (ni) b->items = ni;
        for (int k = 0; k < n && !st; k++) {
            if ((st = check_leaf(fmt, ids[k], DT_ANY, 1, DK_MAX_DIMS, pad_func))) break;
            for (int j = 0; j < b->n && !st; j++)
                if (b->items[j].f.id == ids[k])
                    st = dk__error(DK_EINVAL, pad_func, "%s: named twice", b->items[j].f.path);
            if (st) break;
            pad_item *it = &b->items[b->n];
            fld_set(&it->f, fmt, ids[k]);
            char cname[2 * DK_FIELD_NAME_MAX + 8];
            snprintf(cname, sizeof cname, "%s%s", c->names.v[i], c->suffix);
            st = add_output(fmt, parent_of(fmt, ids[k]), cname, DK_I32, 0, pad_func, &it->count);
            if (!st) b->n++;
        }
        dk_free(ids);
    }
    if (st) {
        pad_unbind(b);
        return st;
    }
    *binding = b;
    return DK_OK;
}

static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, e = (x >> 23) & 0xffu, mant = x & 0x7fffffu;
    if (e == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    int32_t exp = (int32_t)e - 127 + 15;
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp), h = mant >> shift, rem = mant & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)h;
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* One element of dtype dt holding v (saturated for integers). */
static void encode_fill(dk_dtype dt, double v, unsigned char *out)
{
#define SAT(T, lo, hi) \
    do { \
        double w = v != v ? 0 : v < (double)(lo) ? (double)(lo) : v > (double)(hi) ? (double)(hi) : v; \
        T z = (T)w; \
        memcpy(out, &z, sizeof z); \
    } while (0)
    switch (dt) {
    case DK_U8: SAT(uint8_t, 0, UINT8_MAX); break;
    case DK_I8: SAT(int8_t, INT8_MIN, INT8_MAX); break;
    case DK_U16: SAT(uint16_t, 0, UINT16_MAX); break;
    case DK_I16: SAT(int16_t, INT16_MIN, INT16_MAX); break;
    case DK_U32: SAT(uint32_t, 0, UINT32_MAX); break;
    case DK_I32: SAT(int32_t, INT32_MIN, INT32_MAX); break;
    case DK_U64: SAT(uint64_t, 0, 18446744073709549568.0); break;
    case DK_I64: SAT(int64_t, -9223372036854775808.0, 9223372036854774784.0); break;
    case DK_F16: { uint16_t h = f32_to_f16((float)v); memcpy(out, &h, 2); break; }
    case DK_BF16: { uint16_t h = f32_to_bf16((float)v); memcpy(out, &h, 2); break; }
    case DK_F32: { float z = (float)v; memcpy(out, &z, 4); break; }
    case DK_F64: memcpy(out, &v, 8); break;
    case DK_BOOL: out[0] = v != 0; break;
    default: break;
    }
#undef SAT
}

static int pad_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const pad_cfg *c = s->cfg;
    const pad_bind *b = binding;
    int st = DK_OK;
    for (int i = 0; i < b->n && !st; i++) {
        const pad_item *it = &b->items[i];
        dk_tensor *t = NULL;
        if ((st = get_value(x, &it->f, 0, -1, pad_func, ctx, &t))) break;
        if (t->ndim < 1) {
            st = run_error(DK_EINVALIDDATA, pad_func, ctx, "%s: rank >= 1 expected", it->f.path);
            break;
        }
        int64_t n = t->shape[0];
        if (n > c->capacity && !c->truncate) {
            st = run_error(DK_ERANGE, pad_func, ctx, "%s: %lld rows, more than the capacity %lld",
                           it->f.path, (long long)n, (long long)c->capacity);
            break;
        }
        int64_t keep = n < c->capacity ? n : c->capacity;
        if ((st = make_contig(t, 0, pad_func))) break;
        int64_t shape[DK_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        shape[0] = c->capacity;
        dk_tensor o, cnt;
        if ((st = new_tensor(&o, t->dtype, t->ndim, shape, pad_func))) break;
        size_t es = dk_dtype_size(t->dtype), row = es;
        for (int d = 1; d < t->ndim; d++) row *= (size_t)t->shape[d];
        if (keep) memcpy(o.data, t->data, row * (size_t)keep);
        unsigned char fill[8];
        encode_fill(t->dtype, c->fill, fill);
        size_t total = row * (size_t)c->capacity;
        for (size_t off = row * (size_t)keep; off < total; off += es)
            memcpy((char *)o.data + off, fill, es);
        if ((st = new_tensor(&cnt, DK_I32, 0, NULL, pad_func))) {
            dk_tensor_release(&o);
            break;
        }
        *(int32_t *)cnt.data = (int32_t)keep;
        set_value(x, it->f.id, &o);
        set_value(x, it->count.id, &cnt);
    }
    return st;
}

static const dk__step_vt pad_vt = {"pad_to_uniform", pad_bind_fn, pad_run, pad_unbind,
                                   pad_destroy, 0};

int dk_step_pad_to_uniform(const dk_pad_to_uniform_config *cfg, dk_step **out)
{
    if (!out) return dk__error(DK_EINVAL, pad_func, "out is NULL");
    *out = NULL;
    if (!cfg) return dk__error(DK_EINVAL, pad_func, "NULL config (names and capacity are required)");
    if (cfg->n_names < 1) return dk__error(DK_EINVAL, pad_func, "names: no field named");
    if (cfg->capacity < 0 || cfg->capacity > ((int64_t)1 << 31))
        return dk__error(DK_EINVAL, pad_func, "capacity = %lld: not in [0, 2^31]",
                         (long long)cfg->capacity);
    if (!cfg->count_suffix || !*cfg->count_suffix)
        return dk__error(DK_EINVAL, pad_func, "count_suffix: no suffix");
    pad_cfg *c = dk_calloc(1, sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, pad_func, "out of memory");
    int st = names_copy(&c->names, cfg->names, cfg->n_names, pad_func, "names");
    c->capacity = cfg->capacity;
    c->fill = cfg->fill;
    c->truncate = cfg->truncate != 0;
    c->suffix = dup_name(cfg->count_suffix, pad_func, "count_suffix", &st);
    return finish_step(&pad_vt, c, pad_destroy, st, out);
}

/* ------------------------------------------------------------------------ */
/* CenterPoint heatmap                                                       */

void dk_heatmap_config_init(dk_heatmap_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->boxes = "gt_bboxes_3d";
    cfg->labels = "gt_labels_3d";
    cfg->out = "heatmap";
    cfg->num_classes = 10;
    const float r[6] = {-51.2f, -51.2f, -5.0f, 51.2f, 51.2f, 3.0f};
    memcpy(cfg->range, r, sizeof r);
    cfg->voxel_size[0] = cfg->voxel_size[1] = 0.1f;
    cfg->out_size_factor = 8;
    cfg->min_overlap = 0.1f;
    cfg->min_radius = 2;
}

typedef struct hm_cfg {
    dk_heatmap_config c;
    char *boxes, *labels, *out;
    int W, H;
} hm_cfg;

typedef struct hm_bind {
    fld boxes, labels, out;
} hm_bind;

static const char hm_func[] = "dk_step_heatmap";

static void hm_destroy(dk_step *s)
{
    hm_cfg *c = s->cfg;
    if (!c) return;
    dk_free(c->boxes);
    dk_free(c->labels);
    dk_free(c->out);
    dk_free(c);
}

static void hm_unbind(void *binding)
{
    dk_free(binding);
}

static int hm_bind_fn(dk_step *s, dk_group *fmt, int root, void **binding)
{
    const hm_cfg *c = s->cfg;
    hm_bind *b = dk_calloc(1, sizeof *b);
    if (!b) return dk__error(DK_ENOMEM, hm_func, "out of memory");
    int id = -1;
    int st = find_one(fmt, root, c->boxes, 0, hm_func, &id);
    if (!st) st = check_leaf(fmt, id, DT(DK_F32), 2, 2, hm_func);
    if (!st) fld_set(&b->boxes, fmt, id);
    if (!st) st = find_one(fmt, root, c->labels, 0, hm_func, &id);
    if (!st) st = check_leaf(fmt, id, DT(DK_I32), 1, 1, hm_func);
    if (!st) fld_set(&b->labels, fmt, id);
    if (!st) st = add_output(fmt, parent_of(fmt, b->boxes.id), c->out, DK_F32, 3, hm_func, &b->out);
    if (st) {
        dk_free(b);
        return st;
    }
    *binding = b;
    return DK_OK;
}

static int hm_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const hm_cfg *c = s->cfg;
    const hm_bind *b = binding;
    dk_tensor *bt = NULL, *lt = NULL;
    int st = get_boxes(x, &b->boxes, hm_func, ctx, 0, &bt);
    if (!st) st = get_value(x, &b->labels, DK_I32, 1, hm_func, ctx, &lt);
    if (st) return st;
    int64_t n = bt->shape[0], d = bt->shape[1];
    if (lt->shape[0] != n)
        return run_error(DK_EINVALIDDATA, hm_func, ctx, "%s: %lld labels for %lld boxes",
                         b->labels.path, (long long)lt->shape[0], (long long)n);
    if ((st = make_contig(lt, 0, hm_func))) return st;
    const float *bx = bt->data;
    const int32_t *lab = lt->data;
    if ((st = check_rows_finite(bx, n, d, 7, &b->boxes, hm_func, ctx))) return st;
    int C = c->c.num_classes;
    int64_t hshape[3] = {C, c->H, c->W};
    dk_tensor heat;
    if ((st = new_tensor(&heat, DK_F32, 3, hshape, hm_func))) return st;
    size_t nn = (size_t)(n > 0 ? n : 1);
    float *ctr = dk_malloc(nn * 2 * sizeof(float));
    int32_t *rad = dk_malloc(nn * sizeof(int32_t)), *cls = dk_malloc(nn * sizeof(int32_t));
    if (!ctr || !rad || !cls) {
        st = dk__error(DK_ENOMEM, hm_func, "out of memory");
        goto done;
    }
    double f = c->c.out_size_factor, vx = c->c.voxel_size[0], vy = c->c.voxel_size[1];
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *r = bx + i * d;
        if (lab[i] < 0 || lab[i] >= C) continue;
        double wx = r[3] / vx / f, wy = r[4] / vy / f;
        if (!(wx > 0) || !(wy > 0)) continue;
        double g = dk_ragged_gaussian_radius(wy, wx, c->c.min_overlap);
        int radius = (int)g;
        if (radius < c->c.min_radius) radius = c->c.min_radius;
        ctr[2 * k] = (float)((r[0] - c->c.range[0]) / vx / f);
        ctr[2 * k + 1] = (float)((r[1] - c->c.range[1]) / vy / f);
        /* Far outside the map: the float-to-int conversion of the drawing
           code must stay defined. */
        if (!(fabsf(ctr[2 * k]) < 1e8f) || !(fabsf(ctr[2 * k + 1]) < 1e8f)) continue;
        rad[k] = radius;
        cls[k] = lab[i];
        k++;
    }
    if (k) {
        dk_tensor hv, cv, rv, lv;
        int64_t hs[4] = {1, C, c->H, c->W}, cs[3] = {1, k, 2}, rs[2] = {1, k};
        dk_ragged cr, rr, lr;
        st = dk_tensor_view(&hv, heat.data, DK_F32, 4, hs);
        if (!st) st = dk_tensor_view(&cv, ctr, DK_F32, 3, cs);
        if (!st) st = dk_tensor_view(&rv, rad, DK_I32, 2, rs);
        if (!st) st = dk_tensor_view(&lv, cls, DK_I32, 2, rs);
        if (!st) st = dk_ragged_wrap(&cr, &cv, 1, 1, NULL);
        if (!st) st = dk_ragged_wrap(&rr, &rv, 1, 1, NULL);
        if (!st) st = dk_ragged_wrap(&lr, &lv, 1, 1, NULL);
        if (!st) st = dk_ragged_draw_gaussians(NULL, &hv, &cr, &rr, &lr, 6.0, 1.0);
        if (st) {
            char msg[DK_ERRMSG_MAX];
            snprintf(msg, sizeof msg, "%s", dk_errmsg());
            st = run_error(st, hm_func, ctx, "%s: %s", b->boxes.path, msg);
        }
    }
done:
    dk_free(ctr);
    dk_free(rad);
    dk_free(cls);
    if (st)
        dk_tensor_release(&heat);
    else
        set_value(x, b->out.id, &heat);
    return st;
}

static const dk__step_vt hm_vt = {"heatmap", hm_bind_fn, hm_run, hm_unbind, hm_destroy, 0};

int dk_step_heatmap(const dk_heatmap_config *cfg, dk_step **out)
{
    if (!out) return dk__error(DK_EINVAL, hm_func, "out is NULL");
    *out = NULL;
    dk_heatmap_config def;
    if (!cfg) {
        dk_heatmap_config_init(&def);
        cfg = &def;
    }
    int st = finite_range(3, cfg->range, hm_func, "range");
    if (st) return st;
    if (cfg->num_classes < 1 || cfg->num_classes > 1024)
        return dk__error(DK_EINVAL, hm_func, "num_classes = %d: not in 1..1024", cfg->num_classes);
    if (cfg->out_size_factor < 1)
        return dk__error(DK_EINVAL, hm_func, "out_size_factor = %d: not >= 1", cfg->out_size_factor);
    for (int a = 0; a < 2; a++)
        if (!(cfg->voxel_size[a] > 0) || !isfinite(cfg->voxel_size[a]))
            return dk__error(DK_EINVAL, hm_func, "voxel_size[%d] = %g: not > 0", a,
                             (double)cfg->voxel_size[a]);
    if (!(cfg->min_overlap > 0 && cfg->min_overlap < 1))
        return dk__error(DK_EINVAL, hm_func, "min_overlap = %g: not in (0, 1)",
                         (double)cfg->min_overlap);
    if (cfg->min_radius < 0 || cfg->min_radius > 4096)
        return dk__error(DK_EINVAL, hm_func, "min_radius = %d: not in 0..4096", cfg->min_radius);
    double size[2];
    for (int a = 0; a < 2; a++) {
        size[a] = round(((double)cfg->range[a + 3] - cfg->range[a]) / cfg->voxel_size[a] /
                        cfg->out_size_factor);
        if (!(size[a] >= 1 && size[a] <= 16384))
            return dk__error(DK_EINVAL, hm_func, "the map is %g cells along %c: not in 1..16384",
                             size[a], "xy"[a]);
    }
    if ((double)cfg->num_classes * size[0] * size[1] > (double)((int64_t)1 << 30))
        return dk__error(DK_EINVAL, hm_func, "%d x %g x %g cells: too large", cfg->num_classes,
                         size[1], size[0]);
    if (!cfg->boxes || !cfg->labels || !cfg->out)
        return dk__error(DK_EINVAL, hm_func, "boxes, labels and out must be named");
    hm_cfg *c = dk_calloc(1, sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, hm_func, "out of memory");
    c->c = *cfg;
    c->W = (int)size[0];
    c->H = (int)size[1];
    c->boxes = dup_name(cfg->boxes, hm_func, "boxes", &st);
    c->labels = dup_name(cfg->labels, hm_func, "labels", &st);
    c->out = dup_name(cfg->out, hm_func, "out", &st);
    c->c.boxes = c->c.labels = c->c.out = NULL;
    return finish_step(&hm_vt, c, hm_destroy, st, out);
}

/* ------------------------------------------------------------------------ */
/* Field removal                                                             */

typedef struct rm_bind {
    int *leaves;
    int n;
} rm_bind;

static const char rm_func[] = "dk_step_remove_fields";

static void rm_destroy(dk_step *s)
{
    namelist *l = s->cfg;
    if (!l) return;
    names_free(l);
    dk_free(l);
}

static void rm_unbind(void *binding)
{
    rm_bind *b = binding;
    if (!b) return;
    dk_free(b->leaves);
    dk_free(b);
}

static int rm_bind_fn(dk_step *s, dk_group *fmt, int root, void **binding)
{
    const namelist *l = s->cfg;
    rm_bind *b = dk_calloc(1, sizeof *b);
    int cap = dk_group_id_limit(fmt);
    if (b) b->leaves = dk_malloc(sizeof(int) * (size_t)(cap > 0 ? cap : 1));
    if (!b || !b->leaves) {
        rm_unbind(b);
        return dk__error(DK_ENOMEM, rm_func, "out of memory");
    }
    int st = DK_OK;
    for (int i = 0; i < l->n && !st; i++) {
        int *ids = NULL, n = 0;
        if ((st = find_all(fmt, root, l->v[i], &ids, &n, rm_func))) break;
        if (!n) {
            char where[PATH_CAP];
            root_path(fmt, root, where, sizeof where);
            st = dk__error(DK_ENOENT, rm_func, "%s: no such field in %s", l->v[i], where);
        }
        for (int k = 0; k < n && !st; k++) {
            /* Occurrences are depth-first: an earlier one may contain a later
               one, which is gone with it. */
            dk_field_info fi;
            if (dk_group_info(fmt, ids[k], &fi)) continue;
            b->n += dk_group_leaves(fmt, ids[k], b->leaves + b->n, cap - b->n);
            st = dk_group_remove(fmt, ids[k]);
        }
        dk_free(ids);
    }
    if (st) {
        rm_unbind(b);
        return st;
    }
    *binding = b;
    return DK_OK;
}

static int rm_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    (void)s;
    (void)ctx;
    const rm_bind *b = binding;
    for (int i = 0; i < b->n; i++)
        if (b->leaves[i] < x->n) dk_tensor_release(&x->values[b->leaves[i]]);
    return DK_OK;
}

static const dk__step_vt rm_vt = {"remove_fields", rm_bind_fn, rm_run, rm_unbind, rm_destroy, 0};

int dk_step_remove_fields(const char *const *names, int n_names, dk_step **out)
{
    if (!out) return dk__error(DK_EINVAL, rm_func, "out is NULL");
    *out = NULL;
    if (n_names < 1) return dk__error(DK_EINVAL, rm_func, "names: no field named");
    namelist *l = dk_calloc(1, sizeof *l);
    if (!l) return dk__error(DK_ENOMEM, rm_func, "out of memory");
    int st = names_copy(l, names, n_names, rm_func, "names");
    return finish_step(&rm_vt, l, rm_destroy, st, out);
}
