/*
 * Image steps and the fused image pass.
 *
 * The steps only edit dk__image_plan records (and geometry fields); the pass
 * decodes each source once, at the lowest cost that keeps the quality the
 * warp can use, and writes every output element once: one output row at a
 * time, through small float scratch rows that stay in L1.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <jerror.h>
#include <jpeglib.h>

#include "data_impl.h"

#define MSG_PATH 192

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static int valid_field_name(const char *s)
{
    if (!s || !*s || strlen(s) >= DK_FIELD_NAME_MAX) return 0;
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return 0;
    for (const char *c = s + 1; *c; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
              *c == '_'))
            return 0;
    return 1;
}

/* "name1,name2": every item a valid field name (spaces around items allowed). */
static int valid_name_list(const char *s)
{
    if (!s) return 1;
    const char *p = s;
    while (*p) {
        while (*p == ' ') p++;
        const char *b = p;
        while (*p && *p != ',' && *p != ' ') p++;
        size_t n = (size_t)(p - b);
        char name[DK_FIELD_NAME_MAX];
        if (n == 0 || n >= sizeof name) return *b == 0 && b == s ? 1 : 0;
        memcpy(name, b, n);
        name[n] = 0;
        if (!valid_field_name(name)) return 0;
        while (*p == ' ') p++;
        if (*p == ',') {
            p++;
            if (!*p) return 0;
        }
    }
    return 1;
}

/* Item i of a name list into buf; 0 past the end. */
static int name_list_item(const char *s, int i, char *buf, size_t cap)
{
    const char *p = s;
    for (int k = 0; p && *p; k++) {
        while (*p == ' ') p++;
        const char *b = p;
        while (*p && *p != ',' && *p != ' ') p++;
        size_t n = (size_t)(p - b);
        while (*p == ' ') p++;
        if (*p == ',') p++;
        if (n == 0) break;
        if (k == i) {
            if (n >= cap) n = cap - 1;
            memcpy(buf, b, n);
            buf[n] = 0;
            return 1;
        }
    }
    return 0;
}

static void field_path(const dk_group *fmt, int id, char *buf, size_t cap)
{
    if (dk_group_path(fmt, id, buf, cap) < 0) snprintf(buf, cap, "field #%d", id);
}

/* The current thread's message without its leading "func(): ", and without a
 * leading "<path>: " when it repeats `path`. */
static void inner_msg(char *buf, size_t cap, const char *path)
{
    const char *m = dk_errmsg();
    const char *f = strstr(m, "(): ");
    if (f && f - m < 64) m = f + 4;
    size_t pl = path ? strlen(path) : 0;
    if (pl && !strncmp(m, path, pl) && m[pl] == ':' && m[pl + 1] == ' ') m += pl + 2;
    snprintf(buf, cap, "%s", m);
}

static int is_int_dtype(dk_dtype t)
{
    return t == DK_U8 || t == DK_I8 || t == DK_U16 || t == DK_I16 || t == DK_U32 ||
           t == DK_I32 || t == DK_U64 || t == DK_I64;
}

/* Reads element i (in C order, following strides) of a numeric tensor. */
static double tensor_get(const dk_tensor *t, int64_t i)
{
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t n = t->shape[d] > 0 ? t->shape[d] : 1;
        off += (i % n) * t->strides[d];
        i /= n;
    }
    const char *p = (const char *)t->data + off * (int64_t)dk_dtype_size(t->dtype);
    switch (t->dtype) {
    case DK_U8: return *(const uint8_t *)p;
    case DK_I8: return *(const int8_t *)p;
    case DK_U16: return *(const uint16_t *)p;
    case DK_I16: return *(const int16_t *)p;
    case DK_U32: return *(const uint32_t *)p;
    case DK_I32: return *(const int32_t *)p;
    case DK_U64: return (double)*(const uint64_t *)p;
    case DK_I64: return (double)*(const int64_t *)p;
    case DK_F32: return *(const float *)p;
    case DK_F64: return *(const double *)p;
    default: return 0;
    }
}

/* A string value (1-D uint8) into buf. DK_ENOENT when unset. */
static int get_string(const dk_sample *x, int id, char *buf, size_t cap)
{
    if (id < 0 || id >= x->n || (!x->values[id].data && x->values[id].ndim == 0)) {
        buf[0] = 0;
        return DK_ENOENT;
    }
    const dk_tensor *t = &x->values[id];
    if (t->dtype != DK_U8 || t->ndim != 1) return DK_EINVALIDDATA;
    int64_t n = t->shape[0];
    if ((size_t)n >= cap) return DK_ERANGE;
    for (int64_t i = 0; i < n; i++)
        buf[i] = (char)((const uint8_t *)t->data)[i * t->strides[0]];
    buf[n] = 0;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Affine algebra: 2x3 row-major [a b c; d e f], x' = a x + b y + c, ...     */

static void aff_mul(const double a[6], const double b[6], double o[6])
{
    double r[6];
    r[0] = a[0] * b[0] + a[1] * b[3];
    r[1] = a[0] * b[1] + a[1] * b[4];
    r[2] = a[0] * b[2] + a[1] * b[5] + a[2];
    r[3] = a[3] * b[0] + a[4] * b[3];
    r[4] = a[3] * b[1] + a[4] * b[4];
    r[5] = a[3] * b[2] + a[4] * b[5] + a[5];
    memcpy(o, r, sizeof r);
}

static double aff_det(const double a[6])
{
    return a[0] * a[4] - a[1] * a[3];
}

static int aff_inv(const double a[6], double o[6])
{
    double det = aff_det(a);
    if (!(fabs(det) > 1e-12) || !isfinite(det)) return 0;
    double r[6];
    r[0] = a[4] / det;
    r[1] = -a[1] / det;
    r[3] = -a[3] / det;
    r[4] = a[0] / det;
    r[2] = -(r[0] * a[2] + r[1] * a[5]);
    r[5] = -(r[3] * a[2] + r[4] * a[5]);
    memcpy(o, r, sizeof r);
    return 1;
}

/* T := L about (cx, cy) * T, with L = [l0 l1; l2 l3]. */
static void aff_about(double T[6], double l0, double l1, double l2, double l3, double cx,
                      double cy)
{
    double m[6] = {l0, l1, cx - l0 * cx - l1 * cy, l2, l3, cy - l2 * cx - l3 * cy};
    aff_mul(m, T, T);
}

static void aff_translate(double T[6], double tx, double ty)
{
    T[2] += tx;
    T[5] += ty;
}

/* ------------------------------------------------------------------------ */
/* Step configurations                                                       */

/* Every image step's configuration starts with this, so that
 * dk_step_set_image_name works on any of them. */
typedef struct img_common {
    char image_name[DK_FIELD_NAME_MAX];
} img_common;

typedef struct decode_cfg {
    img_common c;
    char *root;
    dk_image_source source;
    char file_field[DK_FIELD_NAME_MAX], video_field[DK_FIELD_NAME_MAX],
        frame_field[DK_FIELD_NAME_MAX];
} decode_cfg;

typedef struct affine_cfg {
    img_common c;
    dk_affine_config a;       /* string pointers replaced by the copies below */
    char *matrix_fields;      /* NULL: the optional default list */
    char *point_fields;
} affine_cfg;

typedef struct photo_cfg {
    img_common c;
    dk_photometric_config p;
} photo_cfg;

typedef struct norm_cfg {
    img_common c;
    float mean[3], std[3];
    int bgr;
} norm_cfg;

typedef struct pad_cfg {
    img_common c;
    int multiple, width, height;
    float value;
} pad_cfg;

typedef struct layout_cfg {
    img_common c;
    int chw;
    dk_dtype dtype;
} layout_cfg;

static void destroy_plain(dk_step *s)
{
    dk_free(s->cfg);
    s->cfg = NULL;
}

static void destroy_decode(dk_step *s)
{
    decode_cfg *c = s->cfg;
    if (c) dk_free(c->root);
    dk_free(c);
    s->cfg = NULL;
}

static void destroy_affine(dk_step *s)
{
    affine_cfg *c = s->cfg;
    if (c) {
        dk_free(c->matrix_fields);
        dk_free(c->point_fields);
    }
    dk_free(c);
    s->cfg = NULL;
}

/* ------------------------------------------------------------------------ */
/* Image bindings shared by the steps                                        */

typedef struct img_ref {
    int in_id;        /* the image's id before the step */
    int out_id;       /* after it (differs when the step changed the dtype) */
    dk_dtype dtype;   /* the format's dtype after the step */
    char path[MSG_PATH];
} img_ref;

typedef struct geo_ref {
    int id;
    int image;        /* index into the image refs */
    int points;       /* 0 matrix, 1 points */
    char path[MSG_PATH];
} geo_ref;

typedef struct img_binding {
    int n;
    img_ref *r;
    int n_geo;
    geo_ref *g;
} img_binding;

static void img_unbind(void *binding)
{
    img_binding *b = binding;
    if (!b) return;
    dk_free(b->r);
    dk_free(b->g);
    dk_free(b);
}

enum { RETYPE_KEEP = 0, RETYPE_FLOAT, RETYPE_SET };

/* Replaces tensor field `id` by one of dtype `dt` (same name, parent, rank). */
static int retype(dk_group *fmt, int id, dk_dtype dt, int *new_id)
{
    dk_field_info fi;
    int st = dk_group_info(fmt, id, &fi);
    if (st) return st;
    if (fi.dtype == dt) {
        *new_id = id;
        return DK_OK;
    }
    char name[DK_FIELD_NAME_MAX];
    snprintf(name, sizeof name, "%s", fi.name);
    int parent = fi.parent, ndim = fi.ndim;
    st = dk_group_remove(fmt, id);
    if (st) return st;
    int nid = dk_group_add_tensor(fmt, parent, name, dt, ndim);
    if (nid < 0) return nid;
    *new_id = nid;
    return DK_OK;
}

/* Finds the image fields named `name` under root (tensors of rank 3) and
 * applies the dtype change. */
static int bind_images(dk_group *fmt, int root, const char *name, int mode, dk_dtype dt,
                       img_binding **out)
{
    int cap = dk_group_id_limit(fmt);
    int *ids = dk_malloc((size_t)(cap > 0 ? cap : 1) * sizeof *ids);
    img_binding *b = dk_calloc(1, sizeof *b);
    if (!ids || !b) {
        dk_free(ids);
        dk_free(b);
        return dk__error(DK_ENOMEM, "bind", "out of memory");
    }
    int n = dk_group_find_all(fmt, root, name, ids, cap);
    if (n > cap) n = cap;
    int st = DK_OK;
    b->r = dk_calloc((size_t)(n > 0 ? n : 1), sizeof *b->r);
    if (!b->r) st = dk__error(DK_ENOMEM, "bind", "out of memory");
    for (int i = 0; i < n && !st; i++) {
        dk_field_info fi;
        char path[MSG_PATH];
        dk_group_info(fmt, ids[i], &fi);
        field_path(fmt, ids[i], path, sizeof path);
        if (fi.kind != DK_FIELD_TENSOR) continue;
        if (fi.ndim != 3) {
            st = dk__error(DK_EINVALIDDATA, "bind", "%s: an image of rank 3 expected, got %s rank %d",
                           path, dk_dtype_name(fi.dtype), fi.ndim);
            break;
        }
        img_ref *r = &b->r[b->n];
        r->in_id = ids[i];
        dk_dtype want = fi.dtype;
        if (mode == RETYPE_FLOAT && !(fi.dtype == DK_F32 || fi.dtype == DK_F16)) want = DK_F32;
        if (mode == RETYPE_SET) want = dt;
        st = retype(fmt, ids[i], want, &r->out_id);
        if (st) break;
        r->dtype = want;
        field_path(fmt, r->out_id, r->path, sizeof r->path);
        b->n++;
    }
    if (!st && b->n == 0) {
        char where[MSG_PATH];
        field_path(fmt, root, where, sizeof where);
        st = dk__error(DK_ENOENT, "bind", "no image field named '%s' under '%s'", name, where);
    }
    dk_free(ids);
    if (st) {
        img_unbind(b);
        return st;
    }
    *out = b;
    return DK_OK;
}

static void plan_defaults(dk__image_plan *p, int id)
{
    p->id = id;
    p->A[0] = 1;
    p->A[1] = 0;
    p->A[2] = 0;
    p->A[3] = 0;
    p->A[4] = 1;
    p->A[5] = 0;
    p->nearest = 0;
    p->fill[0] = p->fill[1] = p->fill[2] = 0;
    p->photometric = 0;
    p->brightness = 0;
    p->contrast = 1;
    p->contrast_last = 0;
    p->saturation = 1;
    p->hue = 0;
    for (int c = 0; c < 3; c++) {
        p->swap[c] = c;
        p->mean[c] = 0;
        p->std[c] = 1;
    }
    p->normalize = 0;
    p->bgr = 0;
    p->pad_w = p->pad_h = 0;
    p->pad_value = 0;
    p->chw = 0;
    p->dtype = DK_U8;
}

/* The pending plan of an image, or a new one whose source is the field's
 * current uint8 (H, W, 3) value. The plan takes the id the step gives the
 * image; a value that has to move with it is moved (the fused pass reads
 * the source from the plan's own field and then replaces it). */
static int ensure_plan(dk__step_ctx *ctx, dk_sample *x, const img_ref *r, dk__image_plan **out)
{
    dk__image_plan *p = dk__image_plan_find(ctx->plans, r->in_id);
    if (p && (p->src != DK__IMG_TENSOR || r->in_id == r->out_id)) {
        p->id = r->out_id;
        *out = p;
        return DK_OK;
    }
    if (p && r->out_id >= x->n) {
        int st = dk_sample_resize(x, r->out_id + 1);
        if (st) return st;
    }
    if (p) {
        /* A pending plan over a value: the value moves with the plan. */
        dk_tensor_release(&x->values[r->out_id]);
        x->values[r->out_id] = x->values[r->in_id];
        memset(&x->values[r->in_id], 0, sizeof x->values[r->in_id]);
        p->id = r->out_id;
        *out = p;
        return DK_OK;
    }
    const dk_tensor *t = r->in_id < x->n ? &x->values[r->in_id] : NULL;
    if (!t || !t->data || t->dtype != DK_U8 || t->ndim != 3 || t->shape[2] != 3 ||
        t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > INT32_MAX || t->shape[1] > INT32_MAX) {
        if (!t || t->dtype == DK_DTYPE_INVALID)
            return dk__error(DK_EINVALIDDATA, "run", "%s: no image (no value and no pending decode)",
                             r->path);
        return dk__error(DK_EINVALIDDATA, "run",
                         "%s: a uint8 (H, W, 3) image is needed, the value is %s rank %d%s", r->path,
                         dk_dtype_name(t->dtype), t->ndim,
                         t->dtype == DK_U8 ? "" : " (image steps after a finished image run "
                                                  "need an image that was left uint8 HWC)");
    }
    if (r->out_id != r->in_id) {
        if (r->out_id >= x->n) {
            int st = dk_sample_resize(x, r->out_id + 1);
            if (st) return st;
        }
        dk_tensor_release(&x->values[r->out_id]);
        x->values[r->out_id] = x->values[r->in_id];
        memset(&x->values[r->in_id], 0, sizeof x->values[r->in_id]);
    }
    p = dk__image_plan_add(ctx->plans, r->out_id);
    if (!p) return dk__error(DK_ENOMEM, "run", "out of memory");
    const dk_tensor *v = &x->values[r->out_id];
    plan_defaults(p, r->out_id);
    p->src = DK__IMG_TENSOR;
    p->src_w = (int)v->shape[1];
    p->src_h = (int)v->shape[0];
    p->out_w = p->src_w;
    p->out_h = p->src_h;
    p->dtype = r->dtype;
    *out = p;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Decode step                                                               */

void dk_image_decode_config_init(dk_image_decode_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->source = DK_IMAGE_SOURCE_AUTO;
    cfg->image_name = "image";
    cfg->file_field = "filename";
    cfg->video_field = "video";
    cfg->frame_field = "video_frame";
}

typedef struct dec_item {
    int file_id, video_id, frame_id, image_id;
    char path[MSG_PATH];
} dec_item;

typedef struct dec_binding {
    int n;
    dec_item *it;
} dec_binding;

static void dec_unbind(void *binding)
{
    dec_binding *b = binding;
    if (!b) return;
    dk_free(b->it);
    dk_free(b);
}

static int child_kind(const dk_group *fmt, int parent, const char *name, dk_field_info *fi)
{
    int id = dk_group_child(fmt, parent, name);
    if (id < 0) return -1;
    if (dk_group_info(fmt, id, fi)) return -1;
    return id;
}

static int dec_bind(dk_step *s, dk_group *fmt, int root, void **binding)
{
    const decode_cfg *c = s->cfg;
    int cap = dk_group_id_limit(fmt);
    int *ids = dk_malloc((size_t)(cap > 0 ? cap : 1) * 2 * sizeof *ids);
    int *groups = dk_malloc((size_t)(cap > 0 ? cap : 1) * 2 * sizeof *groups);
    dec_binding *b = dk_calloc(1, sizeof *b);
    if (!ids || !groups || !b) {
        dk_free(ids);
        dk_free(groups);
        dk_free(b);
        return dk__error(DK_ENOMEM, "bind", "out of memory");
    }
    /* Groups holding a source field, in the order the fields are found. */
    int ng = 0;
    const char *names[2] = {c->source != DK_IMAGE_SOURCE_VIDEO ? c->file_field : NULL,
                            c->source != DK_IMAGE_SOURCE_FILE ? c->video_field : NULL};
    for (int k = 0; k < 2; k++) {
        if (!names[k]) continue;
        int n = dk_group_find_all(fmt, root, names[k], ids, cap);
        if (n > cap) n = cap;
        for (int i = 0; i < n; i++) {
            dk_field_info fi;
            if (dk_group_info(fmt, ids[i], &fi)) continue;
            int g = fi.parent, dup = 0;
            for (int j = 0; j < ng; j++) dup |= groups[j] == g;
            if (!dup) groups[ng++] = g;
        }
    }
    int st = DK_OK;
    b->it = dk_calloc((size_t)(ng > 0 ? ng : 1), sizeof *b->it);
    if (!b->it) st = dk__error(DK_ENOMEM, "bind", "out of memory");
    for (int i = 0; i < ng && !st; i++) {
        int g = groups[i];
        dec_item *it = &b->it[b->n];
        dk_field_info fi;
        char gpath[MSG_PATH];
        field_path(fmt, g, gpath, sizeof gpath);
        it->file_id = it->video_id = it->frame_id = -1;
        if (c->source != DK_IMAGE_SOURCE_VIDEO) {
            int id = child_kind(fmt, g, c->file_field, &fi);
            if (id >= 0 && fi.kind != DK_FIELD_STRING) {
                st = dk__error(DK_EINVALIDDATA, "bind", "%s%s%s: a string expected", gpath,
                               *gpath ? "." : "", c->file_field);
                break;
            }
            it->file_id = id;
        }
        if (c->source != DK_IMAGE_SOURCE_FILE) {
            int id = child_kind(fmt, g, c->video_field, &fi);
            if (id >= 0 && fi.kind != DK_FIELD_STRING) {
                st = dk__error(DK_EINVALIDDATA, "bind", "%s%s%s: a string expected", gpath,
                               *gpath ? "." : "", c->video_field);
                break;
            }
            int fid = child_kind(fmt, g, c->frame_field, &fi);
            if (fid >= 0 && (fi.kind != DK_FIELD_TENSOR || !is_int_dtype(fi.dtype) || fi.ndim > 1)) {
                st = dk__error(DK_EINVALIDDATA, "bind", "%s%s%s: an integer of rank 0 or 1 expected",
                               gpath, *gpath ? "." : "", c->frame_field);
                break;
            }
            if (id >= 0 && fid < 0) {
                if (c->source == DK_IMAGE_SOURCE_VIDEO) {
                    st = dk__error(DK_ENOENT, "bind", "%s%s%s: no such field (the video's frame)",
                                   gpath, *gpath ? "." : "", c->frame_field);
                    break;
                }
                id = -1;
            }
            it->video_id = id;
            it->frame_id = id >= 0 ? fid : -1;
        }
        if (it->file_id < 0 && it->video_id < 0) continue;
        int img = child_kind(fmt, g, c->c.image_name, &fi);
        if (img >= 0 && (fi.kind != DK_FIELD_TENSOR || fi.dtype != DK_U8 || fi.ndim != 3)) {
            st = dk__error(DK_ESTATE, "bind", "%s%s%s: exists and is not a uint8 rank-3 image",
                           gpath, *gpath ? "." : "", c->c.image_name);
            break;
        }
        if (img < 0) img = dk_group_add_tensor(fmt, g, c->c.image_name, DK_U8, 3);
        if (img < 0) {
            st = img;
            break;
        }
        it->image_id = img;
        field_path(fmt, img, it->path, sizeof it->path);
        b->n++;
    }
    if (!st && b->n == 0) {
        char where[MSG_PATH];
        field_path(fmt, root, where, sizeof where);
        if (c->source == DK_IMAGE_SOURCE_FILE)
            st = dk__error(DK_ENOENT, "bind", "no string field '%s' under '%s'", c->file_field, where);
        else if (c->source == DK_IMAGE_SOURCE_VIDEO)
            st = dk__error(DK_ENOENT, "bind", "no fields '%s' + '%s' under '%s'", c->video_field,
                           c->frame_field, where);
        else
            st = dk__error(DK_ENOENT, "bind", "no field '%s' or '%s' + '%s' under '%s'",
                           c->file_field, c->video_field, c->frame_field, where);
    }
    dk_free(ids);
    dk_free(groups);
    if (st) {
        dec_unbind(b);
        return st;
    }
    *binding = b;
    return DK_OK;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int is_png(const uint8_t *d, size_t n)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    return n >= 8 && !memcmp(d, sig, 8);
}

static int is_jpeg(const uint8_t *d, size_t n)
{
    return n >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff;
}

/* Width and height of a JPEG or PNG file. A JPEG is read whole and its bytes
 * handed to the caller (*keep, for the fused pass, which then reads nothing);
 * for a PNG only the header is read. Errors name the file. */
/* Reads a whole file into a scratch block. Errors name the path. */
static int read_scratch(dk__video_cache *vc, const char *path, uint8_t **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return dk__error(errno == ENOENT || errno == ENOTDIR ? DK_ENOENT : DK_EIO, __func__,
                         "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) || sb.st_size < 0) {
        fclose(f);
        return dk__error(DK_EIO, __func__, "%s: cannot stat the file", path);
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *buf = dk__scratch_get(vc, n ? n : 1);
    if (!buf) {
        fclose(f);
        return dk__error(DK_ENOMEM, __func__, "%s: out of memory for %zu bytes", path, n);
    }
    size_t got = n ? fread(buf, 1, n, f) : 0;
    int bad = got != n || ferror(f);
    fclose(f);
    if (bad) {
        dk__scratch_put(vc, buf);
        return dk__error(DK_EIO, __func__, "%s: read error", path);
    }
    *out = buf;
    *n_out = n;
    return DK_OK;
}

static int image_file_size(dk__video_cache *vc, const char *path, dk_jpeg **jp, int *w, int *h,
                           uint8_t **keep, size_t *keep_n)
{
    *keep = NULL;
    *keep_n = 0;
    uint8_t *buf;
    size_t n;
    int st = read_scratch(vc, path, &buf, &n);
    if (st) return st;
    if (is_png(buf, n)) {
        if (n < 24 || memcmp(buf + 12, "IHDR", 4))
            st = dk__error(DK_EINVALIDDATA, __func__, "%s: PNG without an IHDR chunk", path);
        else {
            uint32_t pw = be32(buf + 16), ph = be32(buf + 20);
            if (pw == 0 || ph == 0 || pw > 65535 || ph > 65535)
                st = dk__error(DK_EINVALIDDATA, __func__, "%s: PNG size %ux%u", path, pw, ph);
            *w = (int)pw;
            *h = (int)ph;
        }
    } else if (is_jpeg(buf, n)) {
        if (!*jp) st = dk_jpeg_create(jp);
        dk_jpeg_info info;
        if (!st) st = dk_jpeg_info_get(*jp, buf, n, &info);
        if (!st) {
            *w = info.width;
            *h = info.height;
            *keep = buf;
            *keep_n = n;
            buf = NULL;
        } else if (st != DK_ENOMEM && st != DK_ENOENT && st != DK_EIO) {
            char m[DK_ERRMSG_MAX];
            inner_msg(m, sizeof m, path);
            st = dk__error(DK_EINVALIDDATA, __func__, "%s: %s", path, m);
        }
    } else {
        st = dk__error(DK_EINVALIDDATA, __func__, "%s: not a JPEG or PNG file%s", path,
                       n == 0 ? " (empty)" : "");
    }
    dk__scratch_put(vc, buf);
    return st;
}

static int join_path(const char *root, const char *name, char *out, size_t cap)
{
    int n;
    if (!root || !*root || name[0] == '/')
        n = snprintf(out, cap, "%s", name);
    else
        n = snprintf(out, cap, "%s%s%s", root, root[strlen(root) - 1] == '/' ? "" : "/", name);
    return n < 0 || (size_t)n >= cap ? DK_ERANGE : DK_OK;
}

static int dec_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const decode_cfg *c = s->cfg;
    const dec_binding *b = binding;
    dk_jpeg *jp = NULL;
    int st = DK_OK;
    for (int i = 0; i < b->n && !st; i++) {
        const dec_item *it = &b->it[i];
        char name[4096], path[4096];
        int use_video = 0;
        int64_t frame = -1;
        if (it->video_id >= 0) {
            int vs = get_string(x, it->video_id, name, sizeof name);
            const dk_tensor *ft = it->frame_id < x->n ? &x->values[it->frame_id] : NULL;
            int have_frame = ft && ft->data && dk_tensor_numel(ft) == 1;
            if (have_frame) frame = (int64_t)tensor_get(ft, 0);
            if (c->source == DK_IMAGE_SOURCE_VIDEO) {
                if (vs || !name[0] || !have_frame) {
                    st = dk__error(DK_EINVALIDDATA, "run", "%s: no video or frame for the image%s",
                                   it->path, vs == DK_ERANGE ? " (name too long)" : "");
                    break;
                }
                use_video = 1;
            } else {
                use_video = !vs && name[0] && have_frame && frame >= 0;
            }
        }
        if (!use_video) {
            int fs = it->file_id >= 0 ? get_string(x, it->file_id, name, sizeof name) : DK_ENOENT;
            if (fs || !name[0]) {
                st = dk__error(DK_EINVALIDDATA, "run", "%s: no file name%s", it->path,
                               it->video_id >= 0 ? " and no video frame" : "");
                break;
            }
        }
        if (join_path(c->root, name, path, sizeof path)) {
            st = dk__error(DK_EINVAL, "run", "%s: path too long: %s", it->path, name);
            break;
        }
        int w = 0, h = 0;
        uint8_t *bytes = NULL;
        size_t n_bytes = 0;
        if (use_video) {
            dk_video *v = NULL;
            dk_video_info vi;
            if (!ctx->videos) {
                st = dk__error(DK_EINVAL, "run", "%s: %s: no video cache", it->path, path);
                break;
            }
            st = dk__video_cache_get(ctx->videos, path, &v);
            if (!st) {
                st = dk_video_get_info(v, &vi);
                dk__video_cache_put(ctx->videos, v);
            }
            if (st) {
                char m[DK_ERRMSG_MAX];
                inner_msg(m, sizeof m, path);
                st = dk__error(st, "run", "%s: %s: %s", it->path, path, m);
                break;
            }
            if (frame < 0 || frame >= vi.n_frames) {
                st = dk__error(DK_EINVALIDDATA, "run", "%s: %s: frame %lld outside [0, %lld)",
                               it->path, path, (long long)frame, (long long)vi.n_frames);
                break;
            }
            w = vi.width;
            h = vi.height;
        } else {
            st = image_file_size(ctx->videos, path, &jp, &w, &h, &bytes, &n_bytes);
            if (st) {
                char m[DK_ERRMSG_MAX];
                inner_msg(m, sizeof m, path);
                st = dk__error(st, "run", "%s: %s: %s", it->path, path, m);
                break;
            }
        }
        dk__image_plan *p = dk__image_plan_add(ctx->plans, it->image_id);
        char *pc = p ? dk_strdup(path) : NULL;
        if (!p || !pc) {
            dk_free(pc);
            dk__scratch_put(ctx->videos, bytes);
            st = dk__error(DK_ENOMEM, "run", "out of memory");
            break;
        }
        plan_defaults(p, it->image_id);
        p->src = use_video ? DK__IMG_VIDEO_FRAME : DK__IMG_JPEG_FILE;
        p->path = pc;
        p->data = bytes;
        p->data_size = n_bytes;
        bytes = NULL;
        p->frame = use_video ? frame : -1;
        p->src_w = w;
        p->src_h = h;
        p->out_w = w;
        p->out_h = h;
    }
    dk_jpeg_destroy(jp);
    return st;
}

static const dk__step_vt decode_vt = {"image_decode", dec_bind, dec_run, dec_unbind,
                                      destroy_decode, 1};

int dk_step_image_decode(const dk_image_decode_config *cfg, dk_step **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!cfg) return dk__error(DK_EINVAL, __func__, "NULL config");
    if (cfg->source != DK_IMAGE_SOURCE_AUTO && cfg->source != DK_IMAGE_SOURCE_FILE &&
        cfg->source != DK_IMAGE_SOURCE_VIDEO)
        return dk__error(DK_EINVAL, __func__, "unknown source %d", (int)cfg->source);
    const char *names[4] = {cfg->image_name, cfg->file_field, cfg->video_field, cfg->frame_field};
    for (int i = 0; i < 4; i++)
        if (!valid_field_name(names[i]))
            return dk__error(DK_EINVAL, __func__, "invalid field name '%s'", dk__str(names[i]));
    decode_cfg *c = dk_calloc(1, sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, __func__, "out of memory");
    snprintf(c->c.image_name, sizeof c->c.image_name, "%s", cfg->image_name);
    snprintf(c->file_field, sizeof c->file_field, "%s", cfg->file_field);
    snprintf(c->video_field, sizeof c->video_field, "%s", cfg->video_field);
    snprintf(c->frame_field, sizeof c->frame_field, "%s", cfg->frame_field);
    c->source = cfg->source;
    if (cfg->root && *cfg->root && !(c->root = dk_strdup(cfg->root))) {
        dk_free(c);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    int st = dk__step_new(&decode_vt, c, out);
    if (st) {
        dk_free(c->root);
        dk_free(c);
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* Affine step                                                               */

void dk_affine_config_init(dk_affine_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->resize_mode = DK_RESIZE_STRETCH;
    cfg->anchor = DK_ANCHOR_CENTER;
    cfg->image_name = "image";
    cfg->matrix_fields = NULL;
    cfg->point_fields = NULL;
    cfg->pixel_center = 0;
}

dk_affine_op *dk_affine_config_add(dk_affine_config *cfg, dk_affine_op_kind kind, double prob,
                                   double lo0, double hi0, double lo1, double hi1)
{
    if (!cfg || cfg->n_ops < 0 || cfg->n_ops >= DK_AFFINE_MAX_OPS) return NULL;
    dk_affine_op *op = &cfg->ops[cfg->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->prob = prob;
    op->lo[0] = lo0;
    op->hi[0] = hi0;
    op->lo[1] = lo1;
    op->hi[1] = hi1;
    op->axes = 3;
    op->border = DK_BORDER_BOTTOM;
    return op;
}

void dk_affine_config_streampetr_eval(dk_affine_config *cfg)
{
    if (!cfg) return;
    dk_affine_config_init(cfg);
    cfg->out_w = 704;
    cfg->out_h = 256;
    dk_affine_config_add(cfg, DK_AFFINE_RESIZE_CROP_EVAL, 1.0, 0, 0, 0.0, 0.0);
}

void dk_affine_config_streampetr(dk_affine_config *cfg)
{
    if (!cfg) return;
    dk_affine_config_init(cfg);
    cfg->out_w = 704;
    cfg->out_h = 256;
    dk_affine_config_add(cfg, DK_AFFINE_RESIZE_CROP, 1.0, 0.38, 0.55, 0.0, 0.0);
    dk_affine_config_add(cfg, DK_AFFINE_FLIP, 0.5, 0, 0, 0, 0);
}

static int range_ok(double lo, double hi)
{
    return isfinite(lo) && isfinite(hi) && lo <= hi;
}

static int affine_validate(const dk_affine_config *a)
{
    const char *f = "dk_step_affine";
    if (a->out_w < 0 || a->out_h < 0 || (a->out_w == 0) != (a->out_h == 0) || a->out_w > 65535 ||
        a->out_h > 65535)
        return dk__error(DK_EINVAL, f, "bad output size %dx%d", a->out_w, a->out_h);
    if (a->n_ops < 0 || a->n_ops > DK_AFFINE_MAX_OPS)
        return dk__error(DK_EINVAL, f, "%d ops (at most %d)", a->n_ops, DK_AFFINE_MAX_OPS);
    if (a->resize_mode < DK_RESIZE_STRETCH || a->resize_mode > DK_RESIZE_CROP)
        return dk__error(DK_EINVAL, f, "unknown resize mode %d", (int)a->resize_mode);
    if (a->anchor < DK_ANCHOR_CENTER || a->anchor > DK_ANCHOR_BOTTOM_RIGHT)
        return dk__error(DK_EINVAL, f, "unknown anchor %d", (int)a->anchor);
    if (a->nearest != 0 && a->nearest != 1)
        return dk__error(DK_EINVAL, f, "nearest must be 0 or 1");
    for (int c = 0; c < 3; c++)
        if (!isfinite(a->fill[c])) return dk__error(DK_EINVAL, f, "fill is not finite");
    if (!isfinite(a->pixel_center)) return dk__error(DK_EINVAL, f, "pixel_center is not finite");
    if (!valid_field_name(a->image_name))
        return dk__error(DK_EINVAL, f, "invalid image name '%s'", dk__str(a->image_name));
    if (!valid_name_list(a->matrix_fields))
        return dk__error(DK_EINVAL, f, "invalid matrix_fields '%s'", a->matrix_fields);
    if (!valid_name_list(a->point_fields))
        return dk__error(DK_EINVAL, f, "invalid point_fields '%s'", a->point_fields);
    int turned = 0;   /* a rotation or shear may have happened before */
    for (int i = 0; i < a->n_ops; i++) {
        const dk_affine_op *op = &a->ops[i];
        if (!(op->prob >= 0 && op->prob <= 1))
            return dk__error(DK_EINVAL, f, "op %d: probability %g outside [0, 1]", i, op->prob);
        int r0 = range_ok(op->lo[0], op->hi[0]), r1 = range_ok(op->lo[1], op->hi[1]);
        switch (op->kind) {
        case DK_AFFINE_SCALE:
            if (!r0 || !(op->lo[0] > 0))
                return dk__error(DK_EINVAL, f, "op %d (scale): range [%g, %g] must be positive and "
                                 "not empty", i, op->lo[0], op->hi[0]);
            break;
        case DK_AFFINE_SCALE_XY:
            for (int k = 0; k < 2; k++)
                if (!range_ok(op->lo[k], op->hi[k]) || !(op->lo[k] > 0 || op->hi[k] < 0))
                    return dk__error(DK_EINVAL, f, "op %d (scale_xy): range %d [%g, %g] is empty or "
                                     "holds 0", i, k, op->lo[k], op->hi[k]);
            break;
        case DK_AFFINE_FLIP: break;
        case DK_AFFINE_ROTATE:
            if (!r0) return dk__error(DK_EINVAL, f, "op %d (rotate): empty range", i);
            turned = 1;
            break;
        case DK_AFFINE_SHEAR:
            for (int k = 0; k < 2; k++)
                if (!range_ok(op->lo[k], op->hi[k]) || !(op->lo[k] > -90 && op->hi[k] < 90))
                    return dk__error(DK_EINVAL, f, "op %d (shear): range %d [%g, %g] is empty or "
                                     "not within (-90, 90) degrees", i, k, op->lo[k], op->hi[k]);
            turned = 1;
            break;
        case DK_AFFINE_TRANSLATE:
            if (!r0 || !r1) return dk__error(DK_EINVAL, f, "op %d (translate): empty range", i);
            break;
        case DK_AFFINE_SHIFT_INSIDE:
        case DK_AFFINE_ALIGN_BORDER:
            if (turned)
                return dk__error(DK_EINVAL, f, "op %d (%s) cannot follow a rotation or shear", i,
                                 op->kind == DK_AFFINE_SHIFT_INSIDE ? "shift_inside" : "align_border");
            if (op->kind == DK_AFFINE_SHIFT_INSIDE && (op->axes < 1 || op->axes > 3))
                return dk__error(DK_EINVAL, f, "op %d (shift_inside): axes %d (1, 2 or 3)", i,
                                 op->axes);
            if (op->kind == DK_AFFINE_ALIGN_BORDER &&
                (op->border < DK_BORDER_TOP || op->border > DK_BORDER_RIGHT))
                return dk__error(DK_EINVAL, f, "op %d (align_border): unknown border %d", i,
                                 (int)op->border);
            break;
        case DK_AFFINE_RESIZE_CROP:
        case DK_AFFINE_RESIZE_CROP_EVAL:
            if (a->out_w <= 0)
                return dk__error(DK_EINVAL, f, "op %d (resize_crop) needs an output size", i);
            if (op->kind == DK_AFFINE_RESIZE_CROP && (!r0 || !(op->lo[0] > 0)))
                return dk__error(DK_EINVAL, f, "op %d (resize_crop): ratio range [%g, %g] must be "
                                 "positive and not empty", i, op->lo[0], op->hi[0]);
            if (!r1 || !(op->lo[1] >= 0 && op->hi[1] < 1))
                return dk__error(DK_EINVAL, f, "op %d (resize_crop): bottom range [%g, %g] must be "
                                 "within [0, 1)", i, op->lo[1], op->hi[1]);
            break;
        default: return dk__error(DK_EINVAL, f, "op %d: unknown kind %d", i, (int)op->kind);
        }
    }
    return DK_OK;
}

static double lerp(double lo, double hi, double u)
{
    return lo + (hi - lo) * u;
}

/* The extent of the source image [0, W0] x [0, H0] mapped by an
 * axis-aligned T. */
static void mapped_extent(const double T[6], double W0, double H0, double mn[2], double mx[2])
{
    double x0 = T[2], y0 = T[5];
    double x1 = T[0] * W0 + T[1] * H0 + T[2], y1 = T[3] * W0 + T[4] * H0 + T[5];
    mn[0] = fmin(x0, x1);
    mx[0] = fmax(x0, x1);
    mn[1] = fmin(y0, y1);
    mx[1] = fmax(y0, y1);
}

/* M for an input of W x H from the draws u (4 per op); output size. */
static void affine_matrix(const dk_affine_config *a, const double (*u)[4], int W, int H,
                          double M[6], int *ow, int *oh)
{
    double T[6] = {1, 0, 0, 0, 1, 0};
    double vw = W, vh = H;
    const double deg = 3.14159265358979323846 / 180.0;
    for (int i = 0; i < a->n_ops; i++) {
        const dk_affine_op *op = &a->ops[i];
        const double *r = u[i];
        if (!(r[0] < op->prob)) continue;
        double cx = vw * 0.5, cy = vh * 0.5;
        switch (op->kind) {
        case DK_AFFINE_SCALE: {
            double s = lerp(op->lo[0], op->hi[0], r[1]);
            aff_about(T, s, 0, 0, s, cx, cy);
            break;
        }
        case DK_AFFINE_SCALE_XY:
            aff_about(T, lerp(op->lo[0], op->hi[0], r[1]), 0, 0, lerp(op->lo[1], op->hi[1], r[2]),
                      cx, cy);
            break;
        case DK_AFFINE_FLIP: aff_about(T, -1, 0, 0, 1, cx, cy); break;
        case DK_AFFINE_ROTATE: {
            /* Counter-clockwise on screen (y down): (x, y) -> (x cos + y sin,
               -x sin + y cos) about the centre. */
            double t = lerp(op->lo[0], op->hi[0], r[1]) * deg, c = cos(t), s = sin(t);
            aff_about(T, c, s, -s, c, cx, cy);
            break;
        }
        case DK_AFFINE_SHEAR: {
            double ax = lerp(op->lo[0], op->hi[0], r[1]) * deg;
            double ay = lerp(op->lo[1], op->hi[1], r[2]) * deg;
            aff_about(T, 1, tan(ax), tan(ay), 1, cx, cy);
            break;
        }
        case DK_AFFINE_TRANSLATE:
            aff_translate(T, lerp(op->lo[0], op->hi[0], r[1]), lerp(op->lo[1], op->hi[1], r[2]));
            break;
        case DK_AFFINE_SHIFT_INSIDE: {
            double mn[2], mx[2], t[2] = {0, 0}, vs[2] = {vw, vh};
            mapped_extent(T, W, H, mn, mx);
            for (int k = 0; k < 2; k++) {
                if (!(op->axes & (1 << k))) continue;
                double lo = -mn[k], hi = vs[k] - mx[k];
                if (lo > hi) {
                    double tmp = lo;
                    lo = hi;
                    hi = tmp;
                }
                /* Only when the image covers the viewport along k. */
                if (mx[k] - mn[k] >= vs[k] && lo < hi) t[k] = lerp(lo, hi, r[1 + k]);
            }
            aff_translate(T, t[0], t[1]);
            break;
        }
        case DK_AFFINE_ALIGN_BORDER: {
            double mn[2], mx[2];
            mapped_extent(T, W, H, mn, mx);
            switch (op->border) {
            case DK_BORDER_TOP: aff_translate(T, 0, -mn[1]); break;
            case DK_BORDER_LEFT: aff_translate(T, -mn[0], 0); break;
            case DK_BORDER_BOTTOM: aff_translate(T, 0, vh - mx[1]); break;
            case DK_BORDER_RIGHT: aff_translate(T, vw - mx[0], 0); break;
            }
            break;
        }
        case DK_AFFINE_RESIZE_CROP:
        case DK_AFFINE_RESIZE_CROP_EVAL: {
            int eval = op->kind == DK_AFFINE_RESIZE_CROP_EVAL;
            double ratio = eval ? fmax(a->out_w / vw, a->out_h / vh)
                                : lerp(op->lo[0], op->hi[0], r[1]);
            int nw = (int)(vw * ratio), nh = (int)(vh * ratio);
            double bot = eval ? 0.5 * (op->lo[1] + op->hi[1]) : lerp(op->lo[1], op->hi[1], r[2]);
            int crop_y = (int)((1 - bot) * nh) - a->out_h;
            int crop_x = nw <= a->out_w ? 0
                         : eval     ? (int)((nw - a->out_w) / 2.0)
                                    : (int)(r[3] * (double)(nw - a->out_w));
            double S[6] = {nw / vw, 0, -crop_x, 0, nh / vh, -crop_y};
            aff_mul(S, T, T);
            vw = a->out_w;
            vh = a->out_h;
            break;
        }
        }
    }
    double R[6] = {1, 0, 0, 0, 1, 0};
    if (a->out_w > 0) {
        double sx = a->out_w / vw, sy = a->out_h / vh;
        if (a->resize_mode == DK_RESIZE_STRETCH) {
            R[0] = sx;
            R[4] = sy;
        } else {
            double s = a->resize_mode == DK_RESIZE_PAD ? fmin(sx, sy) : fmax(sx, sy);
            double k = a->anchor == DK_ANCHOR_CENTER ? 0.5 : a->anchor == DK_ANCHOR_TOP_LEFT ? 0 : 1;
            R[0] = R[4] = s;
            R[2] = k * (a->out_w - s * vw);
            R[5] = k * (a->out_h - s * vh);
        }
        *ow = a->out_w;
        *oh = a->out_h;
    } else {
        *ow = (int)lround(vw);
        *oh = (int)lround(vh);
    }
    aff_mul(R, T, M);
}

/* Is `anc` an ancestor of `id` (or id itself)? */
static int has_ancestor(const dk_group *fmt, int id, int anc)
{
    for (int guard = 0; id >= 0 && guard < 1 << 20; guard++) {
        if (id == anc) return 1;
        dk_field_info fi;
        if (dk_group_info(fmt, id, &fi)) return 0;
        id = fi.parent;
    }
    return 0;
}

static int affine_bind_geo(const affine_cfg *c, dk_group *fmt, int root, img_binding *b,
                           const char *list, int optional, int points)
{
    int cap = dk_group_id_limit(fmt);
    int *ids = dk_malloc((size_t)(cap > 0 ? cap : 1) * sizeof *ids);
    if (!ids) return dk__error(DK_ENOMEM, "bind", "out of memory");
    char name[DK_FIELD_NAME_MAX];
    int st = DK_OK;
    for (int k = 0; !st && name_list_item(list, k, name, sizeof name); k++) {
        int n = dk_group_find_all(fmt, root, name, ids, cap);
        if (n > cap) n = cap;
        if (n == 0 && !optional) {
            st = dk__error(DK_ENOENT, "bind", "no %s field named '%s'", points ? "point" : "matrix",
                           name);
            break;
        }
        geo_ref *g = dk_realloc(b->g, (size_t)(b->n_geo + n + 1) * sizeof *g);
        if (!g) {
            st = dk__error(DK_ENOMEM, "bind", "out of memory");
            break;
        }
        b->g = g;
        for (int i = 0; i < n && !st; i++) {
            dk_field_info fi;
            geo_ref *r = &b->g[b->n_geo];
            dk_group_info(fmt, ids[i], &fi);
            field_path(fmt, ids[i], r->path, sizeof r->path);
            if (fi.kind != DK_FIELD_TENSOR || (fi.dtype != DK_F32 && fi.dtype != DK_F64) ||
                fi.ndim < (points ? 1 : 2)) {
                st = dk__error(DK_EINVALIDDATA, "bind", "%s: float32 or float64 of rank >= %d "
                               "expected, got %s rank %d", r->path, points ? 1 : 2,
                               fi.kind == DK_FIELD_TENSOR ? dk_dtype_name(fi.dtype) : "non-tensor",
                               fi.ndim);
                break;
            }
            r->id = ids[i];
            r->points = points;
            r->image = -1;
            /* The nearest enclosing group with an image decides. */
            for (int anc = fi.parent; anc >= 0 && r->image < 0;) {
                for (int m = 0; m < b->n && r->image < 0; m++)
                    if (has_ancestor(fmt, b->r[m].out_id, anc)) r->image = m;
                if (anc == root) break;
                dk_field_info ai;
                if (dk_group_info(fmt, anc, &ai)) break;
                anc = ai.parent;
            }
            if (r->image < 0) {
                st = dk__error(DK_ENOENT, "bind", "%s: no image '%s' in any group holding it",
                               r->path, c->c.image_name);
                break;
            }
            b->n_geo++;
        }
    }
    dk_free(ids);
    return st;
}

static int affine_bind(dk_step *s, dk_group *fmt, int root, void **binding)
{
    const affine_cfg *c = s->cfg;
    img_binding *b;
    int st = bind_images(fmt, root, c->c.image_name, RETYPE_KEEP, DK_DTYPE_INVALID, &b);
    if (st) return st;
    if (c->matrix_fields)
        st = affine_bind_geo(c, fmt, root, b, c->matrix_fields, 0, 0);
    else
        st = affine_bind_geo(c, fmt, root, b, "lidar2img,intrinsic", 1, 0);
    if (!st && c->point_fields) st = affine_bind_geo(c, fmt, root, b, c->point_fields, 0, 1);
    if (st) {
        img_unbind(b);
        return st;
    }
    *binding = b;
    return DK_OK;
}

/* A geometry value transformed by the 2-D affine G into a new tensor. */
static int transform_geo(const geo_ref *g, const double G[6], dk_sample *x)
{
    if (g->id >= x->n || !x->values[g->id].data)
        return dk__error(DK_EINVALIDDATA, "run", "%s: no value", g->path);
    const dk_tensor *t = &x->values[g->id];
    if (t->dtype != DK_F32 && t->dtype != DK_F64)
        return dk__error(DK_EINVALIDDATA, "run", "%s: float32 or float64 expected, got %s", g->path,
                         dk_dtype_name(t->dtype));
    int64_t numel = dk_tensor_numel(t);
    int64_t cols = t->ndim >= 1 ? t->shape[t->ndim - 1] : 0;
    int64_t rows = t->ndim >= 2 ? t->shape[t->ndim - 2] : 0;
    if (g->points) {
        if (t->ndim < 1 || cols % 2)
            return dk__error(DK_EINVALIDDATA, "run", "%s: points need x, y pairs in the last "
                             "dimension, shape has %lld", g->path, (long long)cols);
    } else if (t->ndim < 2 || (rows != 3 && rows != 4)) {
        return dk__error(DK_EINVALIDDATA, "run", "%s: a (.., 3 or 4, C) matrix expected, got rank "
                         "%d with %lld rows", g->path, t->ndim, (long long)rows);
    }
    dk_tensor o;
    int st = dk_tensor_alloc(&o, t->dtype, t->ndim, t->shape);
    if (st) return st;
    double *v = dk_malloc((size_t)(numel > 0 ? numel : 1) * sizeof *v);
    if (!v) {
        dk_tensor_release(&o);
        return dk__error(DK_ENOMEM, "run", "out of memory");
    }
    for (int64_t i = 0; i < numel; i++) v[i] = tensor_get(t, i);
    if (g->points) {
        for (int64_t i = 0; i + 1 < numel; i += 2) {
            double px = v[i], py = v[i + 1];
            v[i] = G[0] * px + G[1] * py + G[2];
            v[i + 1] = G[3] * px + G[4] * py + G[5];
        }
    } else {
        int64_t mat = rows * cols;
        for (int64_t b0 = 0; b0 + mat <= numel; b0 += mat) {
            double *r0 = v + b0, *r1 = r0 + cols, *r2 = r1 + cols;
            for (int64_t k = 0; k < cols; k++) {
                double a0 = r0[k], a1 = r1[k], a2 = r2[k];
                r0[k] = G[0] * a0 + G[1] * a1 + G[2] * a2;
                r1[k] = G[3] * a0 + G[4] * a1 + G[5] * a2;
            }
        }
    }
    if (o.dtype == DK_F32)
        for (int64_t i = 0; i < numel; i++) ((float *)o.data)[i] = (float)v[i];
    else
        memcpy(o.data, v, (size_t)numel * sizeof *v);
    dk_free(v);
    return dk_sample_set(x, g->id, &o);
}

static int affine_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const affine_cfg *c = s->cfg;
    const dk_affine_config *a = &c->a;
    const img_binding *b = binding;
    double u[DK_AFFINE_MAX_OPS][4];
    for (int i = 0; i < a->n_ops; i++)
        for (int k = 0; k < 4; k++) u[i][k] = dk_rng_uniform_f64(&ctx->rng);
    double *Ms = dk_malloc((size_t)b->n * 6 * sizeof *Ms);
    if (!Ms) return dk__error(DK_ENOMEM, "run", "out of memory");
    int st = DK_OK;
    for (int i = 0; i < b->n && !st; i++) {
        dk__image_plan *p = NULL;
        st = ensure_plan(ctx, x, &b->r[i], &p);
        if (st) break;
        if (p->pad_w != 0 || p->pad_h != 0) {
            st = dk__error(DK_ESTATE, "run", "%s: affine after pad in one image run", b->r[i].path);
            break;
        }
        double *M = Ms + 6 * i;
        int ow, oh;
        affine_matrix(a, (const double(*)[4])u, p->out_w, p->out_h, M, &ow, &oh);
        if (!(fabs(aff_det(M)) > 1e-12) || !isfinite(aff_det(M)) || ow < 1 || oh < 1) {
            st = dk__error(DK_EINVALIDDATA, "run", "%s: singular affine map [%g %g %g; %g %g %g] "
                           "or empty output %dx%d", b->r[i].path, M[0], M[1], M[2], M[3], M[4],
                           M[5], ow, oh);
            break;
        }
        aff_mul(M, p->A, p->A);
        p->out_w = ow;
        p->out_h = oh;
        p->nearest = a->nearest;
        for (int k = 0; k < 3; k++) p->fill[k] = a->fill[k];
    }
    /* Geometry in its own pixel convention: p_field = p - d. */
    double d = 0.5 - a->pixel_center;
    for (int i = 0; i < b->n_geo && !st; i++) {
        const double *M = Ms + 6 * b->g[i].image;
        double G[6] = {M[0], M[1], M[2] + M[0] * d + M[1] * d - d,
                       M[3], M[4], M[5] + M[3] * d + M[4] * d - d};
        st = transform_geo(&b->g[i], G, x);
    }
    dk_free(Ms);
    return st;
}

static const dk__step_vt affine_vt = {"affine", affine_bind, affine_run, img_unbind,
                                      destroy_affine, 1};

int dk_step_affine(const dk_affine_config *cfg, dk_step **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!cfg) return dk__error(DK_EINVAL, __func__, "NULL config");
    int st = affine_validate(cfg);
    if (st) return st;
    affine_cfg *c = dk_calloc(1, sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, __func__, "out of memory");
    c->a = *cfg;
    snprintf(c->c.image_name, sizeof c->c.image_name, "%s", cfg->image_name);
    if (cfg->matrix_fields) c->matrix_fields = dk_strdup(cfg->matrix_fields);
    if (cfg->point_fields && *cfg->point_fields) c->point_fields = dk_strdup(cfg->point_fields);
    c->a.image_name = NULL;
    c->a.matrix_fields = NULL;
    c->a.point_fields = NULL;
    if ((cfg->matrix_fields && !c->matrix_fields) ||
        (cfg->point_fields && *cfg->point_fields && !c->point_fields)) {
        destroy_affine(&(dk_step){&affine_vt, c});
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    st = dk__step_new(&affine_vt, c, out);
    if (st) destroy_affine(&(dk_step){&affine_vt, c});
    return st;
}

/* ------------------------------------------------------------------------ */
/* Photometric, normalize, pad, layout                                       */

void dk_photometric_config_init(dk_photometric_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->image_name = "image";
    cfg->brightness_delta = 32;
    cfg->contrast_lo = 0.5f;
    cfg->contrast_hi = 1.5f;
    cfg->saturation_lo = 0.5f;
    cfg->saturation_hi = 1.5f;
    cfg->hue_delta = 18;
    cfg->prob_brightness = cfg->prob_contrast = cfg->prob_saturation = cfg->prob_hue = 0.5f;
    cfg->prob_swap = 0;
}

static int bind_keep(dk_step *s, dk_group *fmt, int root, void **binding)
{
    const img_common *c = s->cfg;
    img_binding *b;
    int st = bind_images(fmt, root, c->image_name, RETYPE_KEEP, DK_DTYPE_INVALID, &b);
    if (!st) *binding = b;
    return st;
}

static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};

static int photo_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const dk_photometric_config *c = &((const photo_cfg *)s->cfg)->p;
    const img_binding *b = binding;
    dk_rng *r = &ctx->rng;
    int do_b = dk_rng_uniform(r) < c->prob_brightness;
    float delta = dk_rng_range(r, -c->brightness_delta, c->brightness_delta);
    int contrast_last = dk_rng_uniform(r) < 0.5f;
    int do_c = dk_rng_uniform(r) < c->prob_contrast;
    float alpha = dk_rng_range(r, c->contrast_lo, c->contrast_hi);
    int do_s = dk_rng_uniform(r) < c->prob_saturation;
    float sat = dk_rng_range(r, c->saturation_lo, c->saturation_hi);
    int do_h = dk_rng_uniform(r) < c->prob_hue;
    float hue = dk_rng_range(r, -c->hue_delta, c->hue_delta);
    int do_sw = dk_rng_uniform(r) < c->prob_swap;
    int perm = (int)dk_rng_below(r, 6);
    for (int i = 0; i < b->n; i++) {
        dk__image_plan *p = NULL;
        int st = ensure_plan(ctx, x, &b->r[i], &p);
        if (st) return st;
        if (p->photometric || p->normalize)
            return dk__error(DK_ESTATE, "run", "%s: photometric after %s in one image run",
                             b->r[i].path, p->photometric ? "another photometric step" : "normalize");
        p->photometric = do_b || do_c || do_s || do_h || do_sw;
        p->brightness = do_b ? delta : 0;
        p->contrast = do_c ? alpha : 1;
        p->contrast_last = contrast_last;
        p->saturation = do_s ? sat : 1;
        p->hue = do_h ? hue : 0;
        for (int k = 0; k < 3; k++) p->swap[k] = do_sw ? perms[perm][k] : k;
    }
    return DK_OK;
}

static const dk__step_vt photo_vt = {"photometric", bind_keep, photo_run, img_unbind, destroy_plain,
                                     1};

int dk_step_photometric(const dk_photometric_config *cfg, dk_step **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!cfg) return dk__error(DK_EINVAL, __func__, "NULL config");
    const char *f = __func__;
    if (!valid_field_name(cfg->image_name))
        return dk__error(DK_EINVAL, f, "invalid image name '%s'", dk__str(cfg->image_name));
    if (!(cfg->brightness_delta >= 0) || !isfinite(cfg->brightness_delta))
        return dk__error(DK_EINVAL, f, "brightness_delta %g must be >= 0", cfg->brightness_delta);
    if (!range_ok(cfg->contrast_lo, cfg->contrast_hi) || !(cfg->contrast_lo >= 0))
        return dk__error(DK_EINVAL, f, "contrast range [%g, %g] is empty or negative",
                         cfg->contrast_lo, cfg->contrast_hi);
    if (!range_ok(cfg->saturation_lo, cfg->saturation_hi) || !(cfg->saturation_lo >= 0))
        return dk__error(DK_EINVAL, f, "saturation range [%g, %g] is empty or negative",
                         cfg->saturation_lo, cfg->saturation_hi);
    if (!(cfg->hue_delta >= 0 && cfg->hue_delta <= 180))
        return dk__error(DK_EINVAL, f, "hue_delta %g outside [0, 180]", cfg->hue_delta);
    float probs[5] = {cfg->prob_brightness, cfg->prob_contrast, cfg->prob_saturation,
                      cfg->prob_hue, cfg->prob_swap};
    for (int i = 0; i < 5; i++)
        if (!(probs[i] >= 0 && probs[i] <= 1))
            return dk__error(DK_EINVAL, f, "probability %g outside [0, 1]", probs[i]);
    photo_cfg *c = dk_calloc(1, sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, f, "out of memory");
    c->p = *cfg;
    c->p.image_name = NULL;
    snprintf(c->c.image_name, sizeof c->c.image_name, "%s", cfg->image_name);
    int st = dk__step_new(&photo_vt, c, out);
    if (st) dk_free(c);
    return st;
}

static int norm_bind(dk_step *s, dk_group *fmt, int root, void **binding)
{
    const img_common *c = s->cfg;
    img_binding *b;
    int st = bind_images(fmt, root, c->image_name, RETYPE_FLOAT, DK_DTYPE_INVALID, &b);
    if (!st) *binding = b;
    return st;
}

static int norm_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const norm_cfg *c = s->cfg;
    const img_binding *b = binding;
    for (int i = 0; i < b->n; i++) {
        dk__image_plan *p = NULL;
        int st = ensure_plan(ctx, x, &b->r[i], &p);
        if (st) return st;
        if (p->normalize)
            return dk__error(DK_ESTATE, "run", "%s: a second normalize in one image run",
                             b->r[i].path);
        p->normalize = 1;
        for (int k = 0; k < 3; k++) {
            p->mean[k] = c->mean[k];
            p->std[k] = c->std[k];
        }
        p->bgr = c->bgr;
        p->dtype = b->r[i].dtype;
    }
    return DK_OK;
}

static const dk__step_vt norm_vt = {"normalize", norm_bind, norm_run, img_unbind, destroy_plain, 1};

int dk_step_normalize(const float mean[3], const float std[3], int to_bgr, dk_step **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!mean || !std) return dk__error(DK_EINVAL, __func__, "NULL mean or std");
    for (int k = 0; k < 3; k++)
        if (!isfinite(mean[k]) || !isfinite(std[k]) || std[k] == 0)
            return dk__error(DK_EINVAL, __func__, "channel %d: mean %g, std %g (std must be finite "
                             "and non-zero)", k, mean[k], std[k]);
    if (to_bgr != 0 && to_bgr != 1) return dk__error(DK_EINVAL, __func__, "to_bgr must be 0 or 1");
    norm_cfg *c = dk_calloc(1, sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, __func__, "out of memory");
    snprintf(c->c.image_name, sizeof c->c.image_name, "image");
    memcpy(c->mean, mean, sizeof c->mean);
    memcpy(c->std, std, sizeof c->std);
    c->bgr = to_bgr;
    int st = dk__step_new(&norm_vt, c, out);
    if (st) dk_free(c);
    return st;
}

static int pad_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const pad_cfg *c = s->cfg;
    const img_binding *b = binding;
    for (int i = 0; i < b->n; i++) {
        dk__image_plan *p = NULL;
        int st = ensure_plan(ctx, x, &b->r[i], &p);
        if (st) return st;
        if (p->pad_w != 0 || p->pad_h != 0)
            return dk__error(DK_ESTATE, "run", "%s: a second pad in one image run", b->r[i].path);
        if (c->multiple > 0) {
            int64_t w = ((int64_t)p->out_w + c->multiple - 1) / c->multiple * c->multiple;
            int64_t h = ((int64_t)p->out_h + c->multiple - 1) / c->multiple * c->multiple;
            if (w > INT32_MAX || h > INT32_MAX)
                return dk__error(DK_EINVALIDDATA, "run", "%s: padded size overflows", b->r[i].path);
            p->pad_w = (int)w;
            p->pad_h = (int)h;
        } else {
            if (p->out_w > c->width || p->out_h > c->height)
                return dk__error(DK_EINVALIDDATA, "run", "%s: the image (%dx%d) is larger than the "
                                 "pad size %dx%d", b->r[i].path, p->out_w, p->out_h, c->width,
                                 c->height);
            p->pad_w = c->width;
            p->pad_h = c->height;
        }
        p->pad_value = c->value;
    }
    return DK_OK;
}

static const dk__step_vt pad_vt = {"pad", bind_keep, pad_run, img_unbind, destroy_plain, 1};

int dk_step_pad(int multiple, int width, int height, float value, dk_step **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    int fixed = width > 0 && height > 0;
    if (multiple < 0 || width < 0 || height < 0 || (multiple > 0) == fixed ||
        (!fixed && (width || height)) || multiple > 65536 || width > 65535 || height > 65535)
        return dk__error(DK_EINVAL, __func__, "give either a multiple > 0 or a size > 0 (got "
                         "multiple %d, size %dx%d)", multiple, width, height);
    if (!isfinite(value)) return dk__error(DK_EINVAL, __func__, "pad value is not finite");
    pad_cfg *c = dk_calloc(1, sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, __func__, "out of memory");
    snprintf(c->c.image_name, sizeof c->c.image_name, "image");
    c->multiple = multiple;
    c->width = width;
    c->height = height;
    c->value = value;
    int st = dk__step_new(&pad_vt, c, out);
    if (st) dk_free(c);
    return st;
}

static int layout_bind(dk_step *s, dk_group *fmt, int root, void **binding)
{
    const layout_cfg *c = s->cfg;
    img_binding *b;
    int st = bind_images(fmt, root, c->c.image_name,
                         c->dtype == DK_DTYPE_INVALID ? RETYPE_KEEP : RETYPE_SET, c->dtype, &b);
    if (st) return st;
    for (int i = 0; i < b->n; i++)
        if (b->r[i].dtype != DK_U8 && b->r[i].dtype != DK_F32 && b->r[i].dtype != DK_F16) {
            st = dk__error(DK_EINVALIDDATA, "bind", "%s: %s images cannot be written (uint8, "
                           "float32 or float16)", b->r[i].path, dk_dtype_name(b->r[i].dtype));
            img_unbind(b);
            return st;
        }
    *binding = b;
    return DK_OK;
}

static int layout_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const layout_cfg *c = s->cfg;
    const img_binding *b = binding;
    for (int i = 0; i < b->n; i++) {
        dk__image_plan *p = NULL;
        int st = ensure_plan(ctx, x, &b->r[i], &p);
        if (st) return st;
        p->chw = c->chw;
        p->dtype = b->r[i].dtype;
    }
    return DK_OK;
}

static const dk__step_vt layout_vt = {"layout", layout_bind, layout_run, img_unbind, destroy_plain,
                                      1};

int dk_step_layout(int chw, dk_dtype dtype, dk_step **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (chw != 0 && chw != 1) return dk__error(DK_EINVAL, __func__, "chw must be 0 or 1");
    if (dtype != DK_DTYPE_INVALID && dtype != DK_U8 && dtype != DK_F32 && dtype != DK_F16)
        return dk__error(DK_EINVAL, __func__, "dtype %s (uint8, float32 or float16)",
                         dk_dtype_name(dtype));
    layout_cfg *c = dk_calloc(1, sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, __func__, "out of memory");
    snprintf(c->c.image_name, sizeof c->c.image_name, "image");
    c->chw = chw;
    c->dtype = dtype;
    int st = dk__step_new(&layout_vt, c, out);
    if (st) dk_free(c);
    return st;
}

int dk_step_set_image_name(dk_step *s, const char *name)
{
    if (!s || !s->cfg) return dk__error(DK_EINVAL, __func__, "NULL step");
    const dk__step_vt *vt = s->vt;
    if (vt != &decode_vt && vt != &affine_vt && vt != &photo_vt && vt != &norm_vt &&
        vt != &pad_vt && vt != &layout_vt)
        return dk__error(DK_EINVAL, __func__, "%s is not an image step", dk__str(dk_step_name(s)));
    if (!valid_field_name(name))
        return dk__error(DK_EINVAL, __func__, "invalid field name '%s'", dk__str(name));
    img_common *c = s->cfg;
    snprintf(c->image_name, sizeof c->image_name, "%s", name);
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* The fused pass                                                            */

typedef struct src_img {
    const uint8_t *px;     /* RGB, 3 bytes per pixel */
    int w, h;
    ptrdiff_t stride;      /* bytes per row */
} src_img;

/* float -> IEEE half, round to nearest even; overflow to infinity. */
static inline uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);   /* rounds past 65504 */
    if (ax < 0x38800000u) {                                       /* below 2^-14: subnormal */
        float a;
        memcpy(&a, &ax, sizeof a);
        return (uint16_t)(sign | (uint32_t)lrintf(a * 16777216.0f));
    }
    ax += 0xc8000fffu + ((ax >> 13) & 1u);                        /* rebias, round to even */
    return (uint16_t)(sign | (ax >> 13));
}

static inline uint8_t to_u8(float v)
{
    v = v > 0 ? v : 0;
    v = v < 255 ? v : 255;
    return (uint8_t)(v + 0.5f);
}

/* OpenCV's float RGB <-> HSV (H in degrees, S in [0, 1] for in-range input),
 * with mmdetection's saturation scaling and hue shift in between. */
static void hsv_adjust(float *px, int n, float sat, float hue)
{
    for (int i = 0; i < n; i++, px += 3) {
        float r = px[0], g = px[1], b = px[2];
        float v = r, mn = r;
        if (v < g) v = g;
        if (v < b) v = b;
        if (mn > g) mn = g;
        if (mn > b) mn = b;
        float diff = v - mn;
        float s = diff / (fabsf(v) + FLT_EPSILON);
        float k = 60.0f / (diff + FLT_EPSILON);
        float h;
        if (v == r)
            h = (g - b) * k;
        else if (v == g)
            h = (b - r) * k + 120.0f;
        else
            h = (r - g) * k + 240.0f;
        if (h < 0) h += 360.0f;
        s *= sat;
        h += hue;
        if (h > 360.0f) h -= 360.0f;
        if (h < 0) h += 360.0f;
        if (s == 0) {
            px[0] = px[1] = px[2] = v;
            continue;
        }
        float hh = h * (6.0f / 360.0f);
        while (hh < 0) hh += 6;
        while (hh >= 6) hh -= 6;
        if (!(hh >= 0 && hh < 6)) hh = 0;
        int sector = (int)hh;
        hh -= (float)sector;
        float t0 = v, t1 = v * (1.0f - s), t2 = v * (1.0f - s * hh), t3 = v * (1.0f - s * (1.0f - hh));
        switch (sector) {
        case 0: r = t0; g = t3; b = t1; break;
        case 1: r = t2; g = t0; b = t1; break;
        case 2: r = t1; g = t0; b = t3; break;
        case 3: r = t1; g = t2; b = t0; break;
        case 4: r = t3; g = t1; b = t0; break;
        default: r = t0; g = t1; b = t2; break;
        }
        px[0] = r;
        px[1] = g;
        px[2] = b;
    }
}

static void photometric_row(const dk__image_plan *p, float *row, int n)
{
    int m = 3 * n;
    if (p->brightness != 0) {
        float d = p->brightness;
        for (int k = 0; k < m; k++) row[k] += d;
    }
    if (!p->contrast_last && p->contrast != 1) {
        float a = p->contrast;
        for (int k = 0; k < m; k++) row[k] *= a;
    }
    if (p->saturation != 1 || p->hue != 0) hsv_adjust(row, n, p->saturation, p->hue);
    if (p->contrast_last && p->contrast != 1) {
        float a = p->contrast;
        for (int k = 0; k < m; k++) row[k] *= a;
    }
}

/* Bilinear (or nearest) sampling of one output row when the inverse map is
 * axis-aligned: the two source rows are blended once over the columns the
 * row uses (a vectorisable loop, sep_vrow), then each output pixel
 * interpolates horizontally from a per-column index and weight table
 * (sep_row, or sep_row_planes straight into the output). vb holds columns
 * -1..W + 1 (-1, W and W + 1 are the fill). */
static void sep_vrow(const src_img *s, int cx0, int cx1, double v, int nearest,
                     const float fill[3], float *vb)
{
    int W = s->w, H = s->h;
    int y0 = -2;
    float wy = 0;
    if (v > -2.0 && v < H + 1.0) {
        if (nearest) {
            y0 = (int)(v + 2.5) - 2;
        } else {
            y0 = (int)(v + 2.0) - 2;
            wy = (float)(v - y0);
        }
    }
    const uint8_t *r0 = y0 >= 0 && y0 < H ? s->px + (ptrdiff_t)y0 * s->stride : NULL;
    const uint8_t *r1 = wy != 0 && y0 + 1 >= 0 && y0 + 1 < H ? s->px + (ptrdiff_t)(y0 + 1) * s->stride
                                                              : NULL;
    for (int c = 0; c < 3; c++) {
        vb[c] = fill[c];
        vb[(W + 1) * 3 + c] = fill[c];
        vb[(W + 2) * 3 + c] = fill[c];
    }
    if (cx0 <= cx1) {
        float *o = vb + (cx0 + 1) * 3;
        int m = (cx1 - cx0 + 1) * 3;
        if (r0 && r1) {
            const uint8_t *a = r0 + cx0 * 3, *b = r1 + cx0 * 3;
            for (int k = 0; k < m; k++) o[k] = (float)a[k] + ((float)b[k] - (float)a[k]) * wy;
        } else if (r0 && wy == 0) {
            const uint8_t *a = r0 + cx0 * 3;
            for (int k = 0; k < m; k++) o[k] = (float)a[k];
        } else if (r0 || r1) {
            const uint8_t *a = (r0 ? r0 : r1) + cx0 * 3;
            float wa = r0 ? 1 - wy : wy;
            for (int k = 0; k < m; k += 3)
                for (int c = 0; c < 3; c++)
                    o[k + c] = (float)a[k + c] * wa + fill[c] * (1 - wa);
        } else {
            for (int k = 0; k < m; k += 3)
                for (int c = 0; c < 3; c++) o[k + c] = fill[c];
        }
    }
}

static void sep_row(const int *xi, const float *wx, int ow, const float *vb, float *row)
{
    for (int i = 0; i < ow; i++) {
        const float *q = vb + (xi[i] + 1) * 3;
        float w = wx[i];
        float *d = row + i * 3;
        d[0] = q[0] + (q[3] - q[0]) * w;
        d[1] = q[1] + (q[4] - q[1]) * w;
        d[2] = q[2] + (q[5] - q[2]) * w;
    }
}

/* sep_row, then output channel k = working channel sc[k] * na[k] + nb[k],
 * written to the three float planes d[k] (CHW float32 without photometric
 * distortion: no intermediate rows). */
static void sep_row_planes(const int *restrict xi, const float *restrict wx, int ow,
                           const float *restrict vb, const int sc[3], const float na[3],
                           const float nb[3], float *restrict d0, float *restrict d1,
                           float *restrict d2)
{
    int s0 = sc[0], s1 = sc[1], s2 = sc[2];
    float a0 = na[0], a1 = na[1], a2 = na[2], b0 = nb[0], b1 = nb[1], b2 = nb[2];
    for (int i = 0; i < ow; i++) {
        const float *q = vb + (xi[i] + 1) * 3;
        float w = wx[i];
        d0[i] = (q[s0] + (q[s0 + 3] - q[s0]) * w) * a0 + b0;
        d1[i] = (q[s1] + (q[s1 + 3] - q[s1]) * w) * a1 + b1;
        d2[i] = (q[s2] + (q[s2 + 3] - q[s2]) * w) * a2 + b2;
    }
}

/* One output row for a general affine map: source coordinates advance by a
 * constant step per output pixel. */
/* The output pixels [*a, *b) whose source position t0 + dt * i lies in
 * [lo, hi] (with a margin, so rounding cannot step outside). */
static void inside_span(double t0, double dt, double lo, double hi, int ow, int *a, int *b)
{
    lo += 1e-3;
    hi -= 1e-3;
    double ia, ib;
    if (dt == 0) {
        ia = t0 >= lo && t0 <= hi ? 0 : ow;
        ib = ow;
    } else if (dt > 0) {
        ia = ceil((lo - t0) / dt);
        ib = floor((hi - t0) / dt) + 1;
    } else {
        ia = ceil((hi - t0) / dt);
        ib = floor((lo - t0) / dt) + 1;
    }
    ia = ia < 0 ? 0 : ia > ow ? ow : ia;
    ib = ib < ia ? ia : ib > ow ? ow : ib;
    if (*a < (int)ia) *a = (int)ia;
    if (*b > (int)ib) *b = (int)ib;
}

static void gen_row(const src_img *s, double u0, double v0, double du, double dv, int ow,
                    int nearest, const float fill[3], float *row)
{
    int W = s->w, H = s->h;
    /* Bilinear pixels whose whole 2x2 footprint is inside: no tests. */
    int ia = 0, ib = ow;
    if (!nearest && W >= 2 && H >= 2) {
        inside_span(u0, du, 0, W - 1, ow, &ia, &ib);
        inside_span(v0, dv, 0, H - 1, ow, &ia, &ib);
    } else {
        ia = ib = 0;
    }
    {
        /* Float from the span's first pixel on: about 1e-4 pixel of error
           for sources up to 2^13 pixels, far below what bilinear weights
           resolve in 8-bit values. */
        float ua = (float)(u0 + du * ia), va = (float)(v0 + dv * ia);
        float duf = (float)du, dvf = (float)dv;
        ptrdiff_t st = s->stride;
        for (int i = ia; i < ib; i++) {
            float u = ua + duf * (float)(i - ia), v = va + dvf * (float)(i - ia);
            int x0 = (int)u, y0 = (int)v;
            x0 = x0 < 0 ? 0 : x0 > W - 2 ? W - 2 : x0;
            y0 = y0 < 0 ? 0 : y0 > H - 2 ? H - 2 : y0;
            float fx = u - (float)x0, fy = v - (float)y0;
            const uint8_t *p = s->px + (ptrdiff_t)y0 * st + x0 * 3;
            const uint8_t *q = p + st;
            float *d = row + i * 3;
            float w11 = fx * fy, w10 = fx - w11, w01 = fy - w11, w00 = 1.0f - fx - w01;
            d[0] = w00 * p[0] + w10 * p[3] + w01 * q[0] + w11 * q[3];
            d[1] = w00 * p[1] + w10 * p[4] + w01 * q[1] + w11 * q[4];
            d[2] = w00 * p[2] + w10 * p[5] + w01 * q[2] + w11 * q[5];
        }
    }
    for (int i = 0; i < ow; i++) {
        if (i == ia && ib > ia) {
            i = ib - 1;
            continue;
        }
        double u = u0 + du * i, v = v0 + dv * i;
        float *d = row + i * 3;
        if (!(u > -2.0 && u < W + 1.0 && v > -2.0 && v < H + 1.0)) {
            d[0] = fill[0];
            d[1] = fill[1];
            d[2] = fill[2];
            continue;
        }
        int x0, y0;
        float fx, fy;
        if (nearest) {
            x0 = (int)(u + 2.5) - 2;
            y0 = (int)(v + 2.5) - 2;
            fx = fy = 0;
        } else {
            x0 = (int)(u + 2.0) - 2;
            y0 = (int)(v + 2.0) - 2;
            fx = (float)(u - x0);
            fy = (float)(v - y0);
        }
        if ((unsigned)x0 < (unsigned)(W - 1) && (unsigned)y0 < (unsigned)(H - 1)) {
            const uint8_t *a = s->px + (ptrdiff_t)y0 * s->stride + x0 * 3;
            const uint8_t *b = a + s->stride;
            for (int c = 0; c < 3; c++) {
                float t = (float)a[c] + ((float)a[c + 3] - (float)a[c]) * fx;
                float bt = (float)b[c] + ((float)b[c + 3] - (float)b[c]) * fx;
                d[c] = t + (bt - t) * fy;
            }
            continue;
        }
        /* Near or across the border: each tap is the pixel or the fill. */
        float tap[4][3];
        for (int t = 0; t < 4; t++) {
            int xx = x0 + (t & 1), yy = y0 + (t >> 1);
            const uint8_t *q = xx >= 0 && xx < W && yy >= 0 && yy < H
                                   ? s->px + (ptrdiff_t)yy * s->stride + xx * 3
                                   : NULL;
            for (int c = 0; c < 3; c++) tap[t][c] = q ? (float)q[c] : fill[c];
        }
        for (int c = 0; c < 3; c++) {
            float t = tap[0][c] + (tap[1][c] - tap[0][c]) * fx;
            float bt = tap[2][c] + (tap[3][c] - tap[2][c]) * fx;
            d[c] = t + (bt - t) * fy;
        }
    }
}

/* Writes row j of the output from nrow (pw x 3 floats in output channel
 * order, padding included). */
static void store_row(const dk__image_plan *p, void *dst, int j, int pw, int ph, const float *nrow)
{
    size_t plane = (size_t)pw * (size_t)ph;
    if (p->dtype == DK_F32) {
        float *o = dst;
        if (!p->chw) {
            memcpy(o + (size_t)j * pw * 3, nrow, (size_t)pw * 3 * sizeof *o);
        } else {
            for (int c = 0; c < 3; c++) {
                float *d = o + c * plane + (size_t)j * pw;
                for (int i = 0; i < pw; i++) d[i] = nrow[i * 3 + c];
            }
        }
    } else if (p->dtype == DK_U8) {
        uint8_t *o = dst;
        if (!p->chw) {
            uint8_t *d = o + (size_t)j * pw * 3;
            for (int k = 0; k < pw * 3; k++) d[k] = to_u8(nrow[k]);
        } else {
            for (int c = 0; c < 3; c++) {
                uint8_t *d = o + c * plane + (size_t)j * pw;
                for (int i = 0; i < pw; i++) d[i] = to_u8(nrow[i * 3 + c]);
            }
        }
    } else {
        uint16_t *o = dst;
        if (!p->chw) {
            uint16_t *d = o + (size_t)j * pw * 3;
            for (int k = 0; k < pw * 3; k++) d[k] = f32_to_f16(nrow[k]);
        } else {
            for (int c = 0; c < 3; c++) {
                uint16_t *d = o + c * plane + (size_t)j * pw;
                for (int i = 0; i < pw; i++) d[i] = f32_to_f16(nrow[i * 3 + c]);
            }
        }
    }
}

/* Runs plan p over source s, A mapping s's continuous coordinates to the
 * output's, into dst (laid out as the plan says). */
static int fused_pass(const dk__image_plan *p, const double A[6], const src_img *s, void *dst,
                      int pw, int ph)
{
    double B[6];
    if (!aff_inv(A, B))
        return dk__error(DK_EINVALIDDATA, "dk__image_materialize", "singular image transform");
    int ow = p->out_w, oh = p->out_h, W = s->w;
    /* Separable when the inverse map keeps rows and columns apart (scales,
       flips, translations): the exact zero survives every composition. */
    int sep = B[1] == 0 && B[3] == 0;
    size_t nrow_n = (size_t)pw * 3, row_n = (size_t)ow * 3;
    size_t vb_n = sep ? (size_t)(W + 3) * 3 : 0;
    size_t tab_n = sep ? (size_t)ow : 0;
    float *row = dk_malloc((row_n + nrow_n + vb_n + tab_n + 4) * sizeof(float));
    int *xi = sep ? dk_malloc((tab_n + 1) * sizeof *xi) : NULL;
    if (!row || (sep && !xi)) {
        dk_free(row);
        dk_free(xi);
        return dk__error(DK_ENOMEM, "dk__image_materialize", "out of memory");
    }
    float *nrow = row + row_n, *vb = nrow + nrow_n, *wx = vb + vb_n;
    int cx0 = W, cx1 = -1;
    if (sep) {
        for (int i = 0; i < ow; i++) {
            double u = B[0] * (i + 0.5) + B[2] - 0.5;
            int x0 = -1;
            float w = 0;
            if (u > -2.0 && u < W + 1.0) {
                if (p->nearest) {
                    x0 = (int)(u + 2.5) - 2;
                } else {
                    x0 = (int)(u + 2.0) - 2;
                    w = (float)(u - x0);
                }
                if (x0 < -1 || x0 >= W) {
                    x0 = -1;
                    w = 0;
                }
            }
            int lo = x0 < 0 ? 0 : x0, hi = x0 + 1 > W - 1 ? W - 1 : x0 + 1;
            if (x0 >= 0 || w != 0) {
                if (lo < cx0) cx0 = lo;
                if (hi > cx1) cx1 = hi;
            }
            /* Both taps of a pixel outside the source in the fill columns
               W and W + 1: a weight of 0 on a column the rows were not
               blended into would still read it. */
            if (x0 < 0 && w == 0) x0 = W;
            xi[i] = x0;
            wx[i] = w;
        }
    }
    /* Output channel k reads working channel sc[k] (swap in RGB, then the
       output order), scaled and shifted by the normalisation. */
    int sc[3];
    float na[3], nb[3];
    for (int k = 0; k < 3; k++) {
        sc[k] = p->swap[p->bgr ? 2 - k : k];
        if ((unsigned)sc[k] > 2) sc[k] = k;
        na[k] = p->normalize ? 1.0f / p->std[k] : 1.0f;
        nb[k] = p->normalize ? -p->mean[k] / p->std[k] : 0.0f;
    }
    for (size_t k = (size_t)ow * 3; k < nrow_n; k++) nrow[k] = p->pad_value;
    int photo = p->photometric && (p->brightness != 0 || p->contrast != 1 || p->saturation != 1 ||
                                   p->hue != 0);
    int direct = sep && !photo && p->dtype == DK_F32 && p->chw;
    for (int j = 0; j < oh; j++) {
        if (sep) sep_vrow(s, cx0, cx1, B[4] * (j + 0.5) + B[5] - 0.5, p->nearest, p->fill, vb);
        if (direct) {
            float *o = dst;
            size_t plane = (size_t)pw * (size_t)ph, at = (size_t)j * pw;
            sep_row_planes(xi, wx, ow, vb, sc, na, nb, o + at, o + plane + at, o + 2 * plane + at);
            for (int k = 0; k < 3; k++)
                for (int i = ow; i < pw; i++) o[k * plane + at + i] = p->pad_value;
            continue;
        }
        if (sep)
            sep_row(xi, wx, ow, vb, row);
        else
            gen_row(s, B[0] * 0.5 + B[1] * (j + 0.5) + B[2] - 0.5,
                    B[3] * 0.5 + B[4] * (j + 0.5) + B[5] - 0.5, B[0], B[3], ow, p->nearest,
                    p->fill, row);
        if (photo) photometric_row(p, row, ow);
        if (!p->normalize && sc[0] == 0 && sc[1] == 1 && sc[2] == 2) {
            memcpy(nrow, row, row_n * sizeof *row);
        } else {
            for (int i = 0; i < ow; i++) {
                const float *q = row + i * 3;
                float *d = nrow + i * 3;
                d[0] = q[sc[0]] * na[0] + nb[0];
                d[1] = q[sc[1]] * na[1] + nb[1];
                d[2] = q[sc[2]] * na[2] + nb[2];
            }
        }
        store_row(p, dst, j, pw, ph, nrow);
    }
    if (oh < ph) {
        for (size_t k = 0; k < nrow_n; k++) nrow[k] = p->pad_value;
        for (int j = oh; j < ph; j++) store_row(p, dst, j, pw, ph, nrow);
    }
    dk_free(row);
    dk_free(xi);
    return DK_OK;
}

static int mat_error(int st, const char *field, const char *file, int64_t frame, const char *what,
                     const char *reason)
{
    char fr[40] = "";
    if (frame >= 0) snprintf(fr, sizeof fr, ": frame %lld", (long long)frame);
    return dk__error(st, "dk__image_materialize", "%s: %s%s: %s%s%s%s", field, dk__str(file), fr,
                     reason, what ? " (sample " : "", what ? what : "", what ? ")" : "");
}

/* Relative cost of decoding a JPEG at the DCT scale n/8 (index n), a full
 * decode = 1: libjpeg-turbo 2.1 on 1600x900 4:2:0 pictures. The reduced
 * IDCTs of 1/8, 2/8 and 4/8 (and the full one) have SIMD code; 3/8, 5/8,
 * 6/8 and 7/8 run plain C and, except 3/8, cost more than a full decode. */
static const double jpeg_scale_cost[9] = {0, 0.40, 0.55, 0.74, 0.66, 1.31, 1.57, 2.13, 1.0};

/* The DCT scale n/8 at which a JPEG is decoded for map A: the cheapest n
 * (jpeg_scale_cost) among those whose resolution is at least the scale the
 * warp samples at (the larger column norm: how far one source pixel moves in
 * the output); the smaller n when two cost the same. */
static int jpeg_scale_for(const double A[6])
{
    double s = fmax(hypot(A[0], A[3]), hypot(A[1], A[4]));
    if (!(s < 1.0)) return 8;
    int lo = (int)ceil(s * 8.0 - 1e-9);
    lo = lo < 1 ? 1 : lo > 8 ? 8 : lo;
    int best = 8;
    for (int n = lo; n <= 8; n++)
        if (jpeg_scale_cost[n] < jpeg_scale_cost[best]) best = n;
    return best;
}

/* ------------------------------------------------------------------------ */
/* Windowed JPEG decode (libjpeg API of libjpeg-turbo)                       */

/* The decoded window extends this many decoded pixels past the last one a
 * bilinear tap can reach: the columns at a cropped edge may differ from a
 * full decode (fancy chroma upsampling treats them as the image edge), and
 * they must stay out of reach. */
#define JWIN_MARGIN 4
/* As TurboJPEG's LIMITSCANS: a progressive file with thousands of tiny scans
 * can keep the decoder busy for minutes on a few kilobytes. */
#define JWIN_MAX_SCANS 500
#define JWIN_MAX_PIXELS ((int64_t)1 << 31)

typedef struct jwin_err {
    struct jpeg_error_mgr pub;   /* first: libjpeg hands back its address */
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    int status;
    char msg[JMSG_LENGTH_MAX + 64];
} jwin_err;

/* What to decode and what came out. */
typedef struct jwin {
    const uint8_t *data;
    size_t size;
    int src_w, src_h;     /* the plan's source size: the header must agree */
    int n;                /* DCT scale n/8 */
    double rx0, ry0, rx1, ry1;   /* source region the warp reads, full-resolution
                                    continuous coordinates */
    uint8_t *px;          /* RGB window, a scratch block of pool */
    dk__video_cache *pool;
    int w, h;             /* window size, decoded pixels */
    int x0, y0;           /* its offset in the decode at scale n/8 */
} jwin;

static _Noreturn void jwin_fail(j_common_ptr c, int status, const char *text)
{
    jwin_err *e = (jwin_err *)c->err;
    e->status = status;
    snprintf(e->msg, sizeof e->msg, "%s", text);
    longjmp(e->jb, 1);
}

static void jwin_error_exit(j_common_ptr c)
{
    char text[JMSG_LENGTH_MAX], m[JMSG_LENGTH_MAX + 32];
    (*c->err->format_message)(c, text);
    int oom = c->err->msg_code == JERR_OUT_OF_MEMORY;
    snprintf(m, sizeof m, "%s: %s", oom ? "out of memory decoding JPEG" : "corrupt JPEG data",
             text);
    jwin_fail(c, oom ? DK_ENOMEM : DK_EINVALIDDATA, m);
}

/* Warnings (level -1: corrupt data libjpeg would paper over, e.g. a
 * truncated scan filled with grey) fail the decode; traces are ignored. */
static void jwin_emit(j_common_ptr c, int level)
{
    if (level < 0) jwin_error_exit(c);
}

static void jwin_progress(j_common_ptr c)
{
    if (c->is_decompressor && ((j_decompress_ptr)c)->input_scan_number > JWIN_MAX_SCANS) {
        char m[96];
        snprintf(m, sizeof m, "corrupt JPEG data: more than %d scans", JWIN_MAX_SCANS);
        jwin_fail(c, DK_EINVALIDDATA, m);
    }
}

/* Decoded pixel range [lo, hi] whose taps a sample between source
 * coordinates a and b (full resolution) can reach at scale f, with the
 * margin, clamped to [0, size - 1] (never empty). */
static void jwin_range(double a, double b, double f, int size, int *lo, int *hi)
{
    double u0 = floor(a * f - 0.5) - JWIN_MARGIN, u1 = floor(b * f - 0.5) + 1 + JWIN_MARGIN;
    int l = u0 < 0 ? 0 : u0 > size - 1 ? size - 1 : (int)u0;
    int h = u1 < l ? l : u1 > size - 1 ? size - 1 : (int)u1;
    *lo = l;
    *hi = h;
}

/* Decodes the part of the JPEG that jw's region needs at scale n/8: columns
 * through jpeg_crop_scanline (widened to an iMCU boundary), rows above the
 * band skipped (still entropy-decoded, so damage there is found), rows below
 * it not read at all. ci and e belong to the caller, so that nothing this
 * function changes after setjmp lives in its own frame. */
static int jwin_decode(struct jpeg_decompress_struct *ci, jwin_err *e, jwin *jw)
{
    jw->px = NULL;
    ci->err = jpeg_std_error(&e->pub);
    e->pub.error_exit = jwin_error_exit;
    e->pub.emit_message = jwin_emit;
    e->progress.progress_monitor = jwin_progress;
    e->status = DK_OK;
    e->msg[0] = 0;
    if (setjmp(e->jb)) {
        jpeg_destroy_decompress(ci);
        dk__scratch_put(jw->pool, jw->px);
        jw->px = NULL;
        return e->status ? e->status : DK_EINVALIDDATA;
    }
    jpeg_create_decompress(ci);
    ci->progress = &e->progress;
    jpeg_mem_src(ci, jw->data, (unsigned long)jw->size);
    jpeg_read_header(ci, TRUE);
    if ((int64_t)ci->image_width != jw->src_w || (int64_t)ci->image_height != jw->src_h) {
        char m[128];
        snprintf(m, sizeof m, "the image is %ux%u, it was %dx%d when the plan was made",
                 (unsigned)ci->image_width, (unsigned)ci->image_height, jw->src_w, jw->src_h);
        jwin_fail((j_common_ptr)ci, DK_EINVALIDDATA, m);
    }
    if (ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK) {
        char m[96];
        snprintf(m, sizeof m, "CMYK/YCCK JPEG (%dx%d) is not supported", jw->src_w, jw->src_h);
        jwin_fail((j_common_ptr)ci, DK_EUNSUPPORTED, m);
    }
    ci->out_color_space = JCS_RGB;
    ci->scale_num = (unsigned)jw->n;
    ci->scale_denom = 8;
    ci->dct_method = JDCT_ISLOW;
    ci->do_fancy_upsampling = TRUE;
    jpeg_calc_output_dimensions(ci);
    int ow = (int)ci->output_width, oh = (int)ci->output_height;
    if ((int64_t)ow * oh > JWIN_MAX_PIXELS) {
        char m[96];
        snprintf(m, sizeof m, "JPEG output %dx%d is too large", ow, oh);
        jwin_fail((j_common_ptr)ci, DK_EOVERFLOW, m);
    }
    double f = jw->n / 8.0;
    int xl, xh, yl, yh;
    jwin_range(jw->rx0, jw->rx1, f, ow, &xl, &xh);
    jwin_range(jw->ry0, jw->ry1, f, oh, &yl, &yh);
    jpeg_start_decompress(ci);
    JDIMENSION xoff = (JDIMENSION)xl, cw = (JDIMENSION)(xh - xl + 1);
    if ((int)cw < ow) jpeg_crop_scanline(ci, &xoff, &cw);
    /* Skip whole iMCU rows only: the skip then starts and ends on row-group
       boundaries, where libjpeg-turbo resumes exactly. */
    int imcu = ci->max_v_samp_factor * ci->min_DCT_scaled_size;
    int skip = imcu > 0 ? yl / imcu * imcu : 0;
    if (skip > 0 && (int)jpeg_skip_scanlines(ci, (JDIMENSION)skip) != skip)
        jwin_fail((j_common_ptr)ci, DK_EINVALIDDATA, "corrupt JPEG data: cannot skip rows");
    int w = (int)ci->output_width, h = yh + 1 - skip;
    if (ci->output_components != 3 || w < 1 || (int)xoff + w > ow || h < 1)
        jwin_fail((j_common_ptr)ci, DK_EINTERNAL, "unexpected decoder state");
    size_t stride = (size_t)w * 3;
    jw->px = dk__scratch_get(jw->pool, stride * (size_t)h);
    if (!jw->px) jwin_fail((j_common_ptr)ci, DK_ENOMEM, "out of memory");
    while ((int)ci->output_scanline < yh + 1) {
        JSAMPROW rows[16];
        int at = (int)ci->output_scanline - skip, k = yh + 1 - (int)ci->output_scanline;
        k = k > 16 ? 16 : k;
        for (int r = 0; r < k; r++) rows[r] = jw->px + (size_t)(at + r) * stride;
        if (jpeg_read_scanlines(ci, rows, (JDIMENSION)k) == 0)
            jwin_fail((j_common_ptr)ci, DK_EINVALIDDATA, "corrupt JPEG data: no rows decoded");
    }
    /* The whole image read: check the end of the file too. */
    if (yh + 1 == oh) jpeg_finish_decompress(ci);
    jpeg_destroy_decompress(ci);
    jw->w = w;
    jw->h = h;
    jw->x0 = (int)xoff;
    jw->y0 = skip;
    return DK_OK;
}

static int materialize_one(dk__image_plan *p, dk_sample *x, const dk_group *fmt,
                           dk__video_cache *videos, const char *what)
{
    char field[MSG_PATH];
    field_path(fmt, p->id, field, sizeof field);
    const char *fn = "dk__image_materialize";
    dk_field_info fi;
    if (dk_group_info(fmt, p->id, &fi) || fi.kind != DK_FIELD_TENSOR || fi.ndim != 3 ||
        fi.dtype != p->dtype)
        return dk__error(DK_EINTERNAL, fn, "%s: the format does not hold a rank-3 %s image", field,
                         dk_dtype_name(p->dtype));
    if (p->dtype != DK_U8 && p->dtype != DK_F32 && p->dtype != DK_F16)
        return dk__error(DK_EINVALIDDATA, fn, "%s: cannot write %s images", field,
                         dk_dtype_name(p->dtype));
    if (p->out_w < 1 || p->out_h < 1 || p->src_w < 1 || p->src_h < 1)
        return dk__error(DK_EINVALIDDATA, fn, "%s: empty image (%dx%d from %dx%d)", field,
                         p->out_w, p->out_h, p->src_w, p->src_h);
    int pw = p->pad_w > p->out_w ? p->pad_w : p->out_w;
    int ph = p->pad_h > p->out_h ? p->pad_h : p->out_h;

    src_img s = {0};
    double A[6];
    memcpy(A, p->A, sizeof A);
    dk_tensor dec = {0};
    uint8_t *file = NULL, *frame_buf = NULL;
    size_t file_n = 0;
    int st = DK_OK;
    char m[DK_ERRMSG_MAX];
    switch (p->src) {
    case DK__IMG_JPEG_FILE: {
        if (p->data) {
            /* Read by the decode step: take the bytes over. */
            file = p->data;
            file_n = p->data_size;
            p->data = NULL;
        } else {
            st = read_scratch(videos, p->path, &file, &file_n);
        }
        if (st) {
            inner_msg(m, sizeof m, p->path);
            return mat_error(st, field, p->path, -1, what, m);
        }
        if (is_jpeg(file, file_n)) {
            /* Nearest sampling must see the file's own pixels. */
            jwin jw = {0};
            jw.pool = videos;
            jw.data = file;
            jw.size = file_n;
            jw.src_w = p->src_w;
            jw.src_h = p->src_h;
            jw.n = p->nearest ? 8 : jpeg_scale_for(A);
            jw.rx0 = 0;
            jw.ry0 = 0;
            jw.rx1 = p->src_w;
            jw.ry1 = p->src_h;
            double B[6];
            if (aff_inv(A, B)) {
                /* The source rectangle the output's corners map to. */
                double cx[4] = {0, p->out_w, 0, p->out_w}, cy[4] = {0, 0, p->out_h, p->out_h};
                jw.rx0 = jw.ry0 = INFINITY;
                jw.rx1 = jw.ry1 = -INFINITY;
                for (int k = 0; k < 4; k++) {
                    double u = B[0] * cx[k] + B[1] * cy[k] + B[2];
                    double v = B[3] * cx[k] + B[4] * cy[k] + B[5];
                    jw.rx0 = fmin(jw.rx0, u);
                    jw.rx1 = fmax(jw.rx1, u);
                    jw.ry0 = fmin(jw.ry0, v);
                    jw.ry1 = fmax(jw.ry1, v);
                }
                if (!(isfinite(jw.rx0) && isfinite(jw.rx1) && isfinite(jw.ry0) &&
                      isfinite(jw.ry1))) {
                    jw.rx0 = jw.ry0 = 0;
                    jw.rx1 = p->src_w;
                    jw.ry1 = p->src_h;
                }
            }
            struct jpeg_decompress_struct ci;
            jwin_err je;
            st = jwin_decode(&ci, &je, &jw);
            if (st) {
                st = mat_error(st, field, p->path, -1, what, je.msg);
                break;
            }
            /* A decoded pixel covers 8/n original ones (libjpeg-turbo's DCT
               scaling keeps the continuous coordinates' origin); the window
               starts at (x0, y0) of that decode. */
            double f = 8.0 / jw.n;
            A[0] *= f;
            A[1] *= f;
            A[3] *= f;
            A[4] *= f;
            A[2] += A[0] * jw.x0 + A[1] * jw.y0;
            A[5] += A[3] * jw.x0 + A[4] * jw.y0;
            frame_buf = jw.px;
            s.px = jw.px;
            s.w = jw.w;
            s.h = jw.h;
            s.stride = (ptrdiff_t)jw.w * 3;
            break;
        } else if (is_png(file, file_n)) {
            st = dk_png_decode(file, file_n, DK_PIX_RGB, &dec);
            if (!st && (dec.shape[1] != p->src_w || dec.shape[0] != p->src_h)) {
                snprintf(m, sizeof m, "the image is %lldx%lld, it was %dx%d when the plan was made",
                         (long long)dec.shape[1], (long long)dec.shape[0], p->src_w, p->src_h);
                st = mat_error(DK_EINVALIDDATA, field, p->path, -1, what, m);
                break;
            }
        } else {
            st = mat_error(DK_EINVALIDDATA, field, p->path, -1, what, "not a JPEG or PNG file");
            break;
        }
        if (st) {
            inner_msg(m, sizeof m, p->path);
            st = mat_error(st == DK_EUNSUPPORTED || st == DK_ENOMEM ? st : DK_EINVALIDDATA, field,
                           p->path, -1, what, m);
            break;
        }
        s.px = dec.data;
        s.w = (int)dec.shape[1];
        s.h = (int)dec.shape[0];
        s.stride = (ptrdiff_t)dec.strides[0];
        break;
    }
    case DK__IMG_VIDEO_FRAME: {
        dk_video *v = NULL;
        dk_video_info vi;
        if (!videos) return mat_error(DK_EINVAL, field, p->path, p->frame, what, "no video cache");
        st = dk__video_cache_get(videos, p->path, &v);
        if (!st) st = dk_video_get_info(v, &vi);
        if (st) {
            inner_msg(m, sizeof m, p->path);
            dk__video_cache_put(videos, v);
            return mat_error(st, field, p->path, p->frame, what, m);
        }
        size_t fb = dk_video_frame_bytes(v);
        if (vi.width != p->src_w || vi.height != p->src_h ||
            fb != (size_t)vi.width * (size_t)vi.height * 3) {
            dk__video_cache_put(videos, v);
            return mat_error(DK_EINVALIDDATA, field, p->path, p->frame, what,
                             "frame size differs from the plan's");
        }
        frame_buf = dk__scratch_get(videos, fb);
        if (!frame_buf) {
            dk__video_cache_put(videos, v);
            return dk__error(DK_ENOMEM, fn, "out of memory");
        }
        int fst = DK_OK;
        st = dk_video_get_frames_into(v, NULL, &p->frame, 1, frame_buf, fb, &fst);
        dk__video_cache_put(videos, v);
        if (st || fst) {
            if (!st) st = fst;
            inner_msg(m, sizeof m, p->path);
            st = mat_error(st, field, p->path, p->frame, what, m);
            break;
        }
        s.px = frame_buf;
        s.w = vi.width;
        s.h = vi.height;
        s.stride = (ptrdiff_t)vi.width * 3;
        break;
    }
    case DK__IMG_TENSOR: {
        const dk_tensor *t = p->id < x->n ? &x->values[p->id] : NULL;
        if (!t || !t->data || t->dtype != DK_U8 || t->ndim != 3 || t->shape[2] != 3 ||
            t->shape[1] != p->src_w || t->shape[0] != p->src_h)
            return dk__error(DK_EINVALIDDATA, fn, "%s: the source value is not the uint8 (%d, %d, "
                             "3) image the plan was made for%s%s%s", field, p->src_h, p->src_w,
                             what ? " (sample " : "", what ? what : "", what ? ")" : "");
        if (t->strides[2] == 1 && t->strides[1] == 3 && t->strides[0] >= 3 * t->shape[1]) {
            s.px = t->data;
            s.stride = (ptrdiff_t)t->strides[0];
        } else {
            /* A strided view: one compact copy. */
            frame_buf = dk__scratch_get(videos, (size_t)p->src_w * (size_t)p->src_h * 3);
            if (!frame_buf) return dk__error(DK_ENOMEM, fn, "out of memory");
            for (int64_t y = 0; y < t->shape[0]; y++)
                for (int64_t xx = 0; xx < t->shape[1]; xx++)
                    for (int c = 0; c < 3; c++)
                        frame_buf[(y * t->shape[1] + xx) * 3 + c] =
                            ((const uint8_t *)t->data)[y * t->strides[0] + xx * t->strides[1] +
                                                       c * t->strides[2]];
            s.px = frame_buf;
            s.stride = (ptrdiff_t)p->src_w * 3;
        }
        s.w = p->src_w;
        s.h = p->src_h;
        break;
    }
    default:
        return dk__error(DK_EINTERNAL, fn, "%s: plan without a source", field);
    }
    if (!st) {
        dk_tensor out;
        int64_t shape[3];
        if (p->chw) {
            shape[0] = 3;
            shape[1] = ph;
            shape[2] = pw;
        } else {
            shape[0] = ph;
            shape[1] = pw;
            shape[2] = 3;
        }
        /* Into the caller's destination when it has exactly this shape. */
        const dk_tensor *d = x->dest && p->id < x->n_dest ? &x->dest[p->id] : NULL;
        if (d && d->data && d->dtype == p->dtype && d->ndim == 3 && d->shape[0] == shape[0] &&
            d->shape[1] == shape[1] && d->shape[2] == shape[2] && dk_tensor_is_contiguous(d))
            out = dk_tensor_share(d);
        else
            st = dk_tensor_empty(&out, p->dtype, 3, shape);
        if (!st) {
            st = fused_pass(p, A, &s, out.data, pw, ph);
            if (st)
                dk_tensor_release(&out);
            else
                st = dk_sample_set(x, p->id, &out);
        }
    }
    dk_tensor_release(&dec);
    dk__scratch_put(videos, file);
    dk__scratch_put(videos, frame_buf);
    return st;
}

int dk__image_materialize(dk__image_plans *ps, dk_sample *x, const dk_group *fmt,
                          dk__video_cache *videos, const char *what)
{
    if (!ps || !x || !fmt) return dk__error(DK_EINVAL, __func__, "NULL argument");
    int st = DK_OK;
    for (int i = 0; i < ps->n && !st; i++) {
        if (ps->p[i].id >= x->n) st = dk_sample_resize(x, ps->p[i].id + 1);
        if (!st) st = materialize_one(&ps->p[i], x, fmt, videos, what);
    }
    dk__image_plans_clear(ps);
    return st;
}
