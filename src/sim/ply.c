/*
 * 3DGS PLY reader and writer (binary little-endian; see sim.h for the layout).
 *
 * The reader treats the file as hostile: the header is bounded, every count is
 * checked against the bytes actually present before anything is allocated, and
 * values are read with explicit little-endian loads (no alignment or host
 * byte-order assumptions).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivekit/sim.h"
#include "internal.h"

#define PLY_MAX_HEADER 65536
#define PLY_MAX_ELEMENTS 64
#define PLY_MAX_PROPS 1024

typedef enum ptype {
    PT_NONE = 0, PT_I8, PT_U8, PT_I16, PT_U16, PT_I32, PT_U32, PT_F32, PT_F64
} ptype;

static const struct {
    const char *name;
    ptype t;
} ply_types[] = {
    { "char", PT_I8 },    { "int8", PT_I8 },     { "uchar", PT_U8 },   { "uint8", PT_U8 },
    { "short", PT_I16 },  { "int16", PT_I16 },   { "ushort", PT_U16 }, { "uint16", PT_U16 },
    { "int", PT_I32 },    { "int32", PT_I32 },   { "uint", PT_U32 },   { "uint32", PT_U32 },
    { "float", PT_F32 },  { "float32", PT_F32 }, { "double", PT_F64 }, { "float64", PT_F64 },
};

static int ptype_size(ptype t)
{
    static const int sz[] = { 0, 1, 1, 2, 2, 4, 4, 4, 8 };
    return sz[t];
}

static ptype ptype_parse(const char *s)
{
    for (size_t i = 0; i < sizeof ply_types / sizeof ply_types[0]; i++)
        if (strcmp(s, ply_types[i].name) == 0) return ply_types[i].t;
    return PT_NONE;
}

typedef struct ply_prop {
    char name[64];
    ptype t;
    int is_list;
    size_t offset;   /* within the row */
} ply_prop;

typedef struct ply_elem {
    char name[64];
    uint64_t count;
    int n_props;
    int has_list;
    size_t row_size;
    ply_prop *props;
} ply_elem;

typedef struct ply_header {
    int n_elems;
    ply_elem elems[PLY_MAX_ELEMENTS];
    ply_prop props[PLY_MAX_PROPS];
    int n_props_total;
    size_t header_len;
} ply_header;

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float lef32(const uint8_t *p)
{
    uint32_t u = le32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void put32(uint8_t *p, uint32_t u)
{
    p[0] = (uint8_t)u;
    p[1] = (uint8_t)(u >> 8);
    p[2] = (uint8_t)(u >> 16);
    p[3] = (uint8_t)(u >> 24);
}

static void putf32(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    put32(p, u);
}

/* Splits a header line (NUL-terminated, modified in place) into at most
 * max tokens; returns the count, or max + 1 when there are more. */
static int tokenize(char *line, char **tok, int max)
{
    int n = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) break;
        if (n == max) return max + 1;
        tok[n++] = p;
        while (*p && *p != ' ' && *p != '\t') p++;
        if (*p) *p++ = '\0';
    }
    return n;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s) return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        if (v > (UINT64_MAX - 9) / 10) return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

static int copy_name(char dst[64], const char *src)
{
    size_t n = strlen(src);
    if (n >= 64) return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

#define FAIL(st, ...) return dk__error(st, "dk_scene_load_ply", __VA_ARGS__)

static int parse_header(const uint8_t *data, size_t size, const char *name, ply_header *h)
{
    if (size < 4 || memcmp(data, "ply", 3) != 0 || (data[3] != '\n' && data[3] != '\r'))
        FAIL(DK_EINVALIDDATA, "%s: not a PLY file (no 'ply' magic at byte 0)", name);
    size_t limit = size < PLY_MAX_HEADER ? size : PLY_MAX_HEADER;
    char line[1024];
    size_t pos = 0;
    int line_no = 0, have_format = 0, done = 0;
    ply_elem *cur = NULL;
    memset(h, 0, offsetof(ply_header, props));
    h->n_props_total = 0;
    while (!done) {
        size_t start = pos;
        while (pos < limit && data[pos] != '\n') pos++;
        if (pos >= limit) {
            if (limit == PLY_MAX_HEADER)
                FAIL(DK_EINVALIDDATA, "%s: header longer than %d bytes (no end_header)", name,
                     PLY_MAX_HEADER);
            FAIL(DK_EINVALIDDATA, "%s: truncated header: no end_header line (file has %zu bytes)",
                 name, size);
        }
        size_t len = pos - start;
        pos++;  /* past '\n' */
        line_no++;
        if (len && data[start + len - 1] == '\r') len--;
        if (len >= sizeof line)
            FAIL(DK_EINVALIDDATA, "%s: header line %d at byte %zu is too long", name, line_no,
                 start);
        memcpy(line, data + start, len);
        line[len] = '\0';
        if (memchr(line, '\0', len))
            FAIL(DK_EINVALIDDATA, "%s: header line %d at byte %zu contains a NUL byte", name,
                 line_no, start);
        char *tok[6];
        int nt = tokenize(line, tok, 5);
        if (line_no == 1) {
            if (nt != 1 || strcmp(tok[0], "ply") != 0)
                FAIL(DK_EINVALIDDATA, "%s: not a PLY file", name);
            continue;
        }
        if (nt == 0) continue;
        if (strcmp(tok[0], "comment") == 0 || strcmp(tok[0], "obj_info") == 0) continue;
        if (strcmp(tok[0], "format") == 0) {
            if (nt != 3 || have_format)
                FAIL(DK_EINVALIDDATA, "%s: bad format line %d at byte %zu", name, line_no, start);
            if (strcmp(tok[1], "ascii") == 0 || strcmp(tok[1], "binary_big_endian") == 0)
                FAIL(DK_EUNSUPPORTED, "%s: format %s is not supported (binary_little_endian only)",
                     name, tok[1]);
            if (strcmp(tok[1], "binary_little_endian") != 0 || strcmp(tok[2], "1.0") != 0)
                FAIL(DK_EINVALIDDATA, "%s: unknown format '%s %s' on line %d", name, tok[1],
                     tok[2], line_no);
            have_format = 1;
        } else if (strcmp(tok[0], "element") == 0) {
            if (nt != 3)
                FAIL(DK_EINVALIDDATA, "%s: bad element line %d at byte %zu", name, line_no, start);
            if (h->n_elems == PLY_MAX_ELEMENTS)
                FAIL(DK_EINVALIDDATA, "%s: more than %d elements", name, PLY_MAX_ELEMENTS);
            cur = &h->elems[h->n_elems++];
            if (copy_name(cur->name, tok[1]))
                FAIL(DK_EINVALIDDATA, "%s: element name too long on line %d", name, line_no);
            if (parse_u64(tok[2], &cur->count))
                FAIL(DK_EINVALIDDATA, "%s: element %s: bad count '%s'", name, cur->name, tok[2]);
            cur->props = h->props + h->n_props_total;
        } else if (strcmp(tok[0], "property") == 0) {
            if (!cur)
                FAIL(DK_EINVALIDDATA, "%s: property before any element on line %d", name,
                     line_no);
            if (h->n_props_total == PLY_MAX_PROPS)
                FAIL(DK_EINVALIDDATA, "%s: more than %d properties", name, PLY_MAX_PROPS);
            ply_prop *p = &h->props[h->n_props_total];
            memset(p, 0, sizeof *p);
            const char *pname;
            if (nt == 5 && strcmp(tok[1], "list") == 0) {
                if (ptype_parse(tok[2]) == PT_NONE || ptype_parse(tok[3]) == PT_NONE)
                    FAIL(DK_EINVALIDDATA, "%s: element %s: bad list types on line %d", name,
                         cur->name, line_no);
                p->is_list = 1;
                cur->has_list = 1;
                pname = tok[4];
            } else if (nt == 3) {
                p->t = ptype_parse(tok[1]);
                if (p->t == PT_NONE)
                    FAIL(DK_EINVALIDDATA, "%s: element %s: unknown type '%s' on line %d", name,
                         cur->name, tok[1], line_no);
                pname = tok[2];
            } else {
                FAIL(DK_EINVALIDDATA, "%s: bad property line %d at byte %zu", name, line_no,
                     start);
            }
            if (copy_name(p->name, pname))
                FAIL(DK_EINVALIDDATA, "%s: property name too long on line %d", name, line_no);
            for (int i = 0; i < cur->n_props; i++)
                if (strcmp(cur->props[i].name, p->name) == 0)
                    FAIL(DK_EINVALIDDATA, "%s: element %s: duplicate property '%s'", name,
                         cur->name, p->name);
            if (!p->is_list) {
                p->offset = cur->row_size;
                cur->row_size += (size_t)ptype_size(p->t);
            }
            cur->n_props++;
            h->n_props_total++;
        } else if (strcmp(tok[0], "end_header") == 0 && nt == 1) {
            done = 1;
        } else {
            FAIL(DK_EINVALIDDATA, "%s: unknown header keyword '%s' on line %d at byte %zu", name,
                 tok[0], line_no, start);
        }
    }
    if (!have_format) FAIL(DK_EINVALIDDATA, "%s: header has no format line", name);
    h->header_len = pos;
    return DK_OK;
}

enum { F_X, F_Y, F_Z, F_NX, F_NY, F_NZ, F_DC0, F_DC1, F_DC2, F_OPACITY, F_S0, F_S1, F_S2,
       F_R0, F_R1, F_R2, F_R3, F_LI, F_LD, F_ACTOR, F_FIXED };
static const char *const fixed_names[F_FIXED] = {
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
    "lidar_intensity", "lidar_raydrop", "actor_id",
};

/* f_rest_<digits> without leading zeros; returns the index or -1. */
static int rest_index(const char *s)
{
    if (strncmp(s, "f_rest_", 7) != 0) return -1;
    s += 7;
    if (!*s || (s[0] == '0' && s[1])) return -1;
    int v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 100000) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

static int all_finite(const float *v, int n)
{
    int ok = 1;
    for (int k = 0; k < n; k++) ok &= isfinite(v[k]) != 0;
    return ok;
}

/* Whether Gaussian i holds a non-finite value (the fast check; the caller then
 * looks for the property to name). */
static int row_bad(const dk_scene *s, int64_t i)
{
    int ok = all_finite(s->means + i * 3, 3) && all_finite(s->scales + i * 3, 3) &&
             all_finite(s->rotations + i * 4, 4) && all_finite(s->opacities + i, 1) &&
             all_finite(s->sh + (size_t)i * 3 * (size_t)s->sh_coeffs, 3 * s->sh_coeffs);
    if (s->normals) ok = ok && all_finite(s->normals + i * 3, 3);
    if (s->lidar_intensity)
        ok = ok && all_finite(s->lidar_intensity + i, 1) && all_finite(s->lidar_raydrop + i, 1);
    return !ok;
}

int dk_scene_load_ply_memory(const void *data_, size_t size, const char *name, unsigned flags,
                             dk_scene **out)
{
    if (out) *out = NULL;
    if (!out || (!data_ && size))
        return dk__error(DK_EINVAL, "dk_scene_load_ply", "NULL argument");
    if (flags & ~DK_PLY_ALLOW_INVALID)
        return dk__error(DK_EINVAL, "dk_scene_load_ply", "unknown flags 0x%x", flags);
    if (!name) name = "(memory)";
    const uint8_t *data = data_;
    ply_header *h = dk_malloc(sizeof *h);
    if (!h) return dk__error(DK_ENOMEM, "dk_scene_load_ply", "out of memory");
    int st = parse_header(data, size, name, h);
    if (st) goto done;

    /* Locate the vertex element; skip fixed-size elements before it. */
    size_t off = h->header_len;
    ply_elem *v = NULL;
    for (int e = 0; e < h->n_elems; e++) {
        ply_elem *el = &h->elems[e];
        if (v) break;
        if (el->has_list) {
            {
                st = dk__error(DK_EUNSUPPORTED, "dk_scene_load_ply",
                               "%s: element %s has list properties (not supported before or in "
                               "the vertex element)", name, el->name);
                goto done;
            }
        }
        size_t rem = size - off, need;
        if (el->count > (uint64_t)SIZE_MAX ||
            dk__mul_overflow((size_t)el->count, el->row_size, &need) ||
            need > rem) {
            st = dk__error(DK_EINVALIDDATA, "dk_scene_load_ply",
                           "%s: element %s: %llu rows of %zu bytes at byte offset %zu exceed the "
                           "%zu bytes left in the file", name, el->name,
                           (unsigned long long)el->count, el->row_size, off, rem);
            goto done;
        }
        if (strcmp(el->name, "vertex") == 0)
            v = el;
        else
            off += need;
    }
    if (!v) {
        st = dk__error(DK_EINVALIDDATA, "dk_scene_load_ply", "%s: no vertex element", name);
        goto done;
    }
    if (v->count > (uint64_t)DK_SCENE_MAX_GAUSSIANS) {
        st = dk__error(DK_EINVALIDDATA, "dk_scene_load_ply",
                       "%s: element vertex: count %llu too large",
                       name, (unsigned long long)v->count);
        goto done;
    }

    /* Map properties. */
    const ply_prop *fixed[F_FIXED] = { 0 };
    const ply_prop *rest[45] = { 0 };
    int n_rest = 0, max_rest = -1;
    for (int i = 0; i < v->n_props; i++) {
        const ply_prop *p = &v->props[i];
        int f = -1;
        for (int j = 0; j < F_FIXED; j++)
            if (strcmp(p->name, fixed_names[j]) == 0) f = j;
        int r = f < 0 ? rest_index(p->name) : -1;
        if (f < 0 && r < 0) continue;   /* extra property: ignored */
        ptype want = f == F_ACTOR ? PT_I32 : PT_F32;
        if (p->t != want) {
            st = dk__error(DK_EUNSUPPORTED, "dk_scene_load_ply",
                           "%s: element vertex: property %s must be %s", name, p->name,
                           want == PT_I32 ? "int" : "float");
            goto done;
        }
        if (f >= 0) {
            fixed[f] = p;
        } else {
            if (r >= 45) {
                st = dk__error(DK_EUNSUPPORTED, "dk_scene_load_ply",
                               "%s: element vertex: property %s: SH degree above 3", name,
                               p->name);
                goto done;
            }
            rest[r] = p;
            n_rest++;
            if (r > max_rest) max_rest = r;
        }
    }
    static const int req[] = { F_X, F_Y, F_Z, F_DC0, F_DC1, F_DC2, F_OPACITY,
                               F_S0, F_S1, F_S2, F_R0, F_R1, F_R2, F_R3 };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        if (!fixed[req[i]]) {
            st = dk__error(DK_EINVALIDDATA, "dk_scene_load_ply",
                           "%s: element vertex: missing property %s", name, fixed_names[req[i]]);
            goto done;
        }
    if (n_rest != max_rest + 1) {
        for (int r = 0; r <= max_rest; r++)
            if (!rest[r]) {
                st = dk__error(DK_EINVALIDDATA, "dk_scene_load_ply",
                               "%s: element vertex: missing property f_rest_%d", name, r);
                goto done;
            }
    }
    int degree = n_rest == 0 ? 0 : n_rest == 9 ? 1 : n_rest == 24 ? 2 : n_rest == 45 ? 3 : -1;
    if (degree < 0) {
        st = dk__error(DK_EUNSUPPORTED, "dk_scene_load_ply",
                       "%s: element vertex: %d f_rest properties (SH degree 0..3 need 0, 9, 24 "
                       "or 45)", name, n_rest);
        goto done;
    }
    int has_normals = fixed[F_NX] && fixed[F_NY] && fixed[F_NZ];
    if (!fixed[F_LI] != !fixed[F_LD]) {
        st = dk__error(DK_EINVALIDDATA, "dk_scene_load_ply",
                       "%s: element vertex: lidar_intensity and lidar_raydrop come together", name);
        goto done;
    }
    unsigned fields = (has_normals ? DK_SCENE_NORMALS : 0u) | (fixed[F_LI] ? DK_SCENE_LIDAR : 0u) |
                      (fixed[F_ACTOR] ? DK_SCENE_ACTOR_ID : 0u);
    dk_scene *s = NULL;
    st = dk_scene_create((int64_t)v->count, degree, fields, &s);
    if (st) goto done;

    int K = s->sh_coeffs;
    const uint8_t *base = data + off;
    for (int64_t i = 0; i < s->n; i++) {
        const uint8_t *row = base + (size_t)i * v->row_size;
#define RD(f) lef32(row + fixed[f]->offset)
        s->means[i * 3 + 0] = RD(F_X);
        s->means[i * 3 + 1] = RD(F_Y);
        s->means[i * 3 + 2] = RD(F_Z);
        for (int j = 0; j < 3; j++) s->scales[i * 3 + j] = RD(F_S0 + j);
        for (int j = 0; j < 4; j++) s->rotations[i * 4 + j] = RD(F_R0 + j);
        s->opacities[i] = RD(F_OPACITY);
        for (int c = 0; c < 3; c++) {
            float *sh = s->sh + ((size_t)i * 3 + (size_t)c) * (size_t)K;
            sh[0] = RD(F_DC0 + c);
            for (int k = 1; k < K; k++) sh[k] = lef32(row + rest[c * (K - 1) + k - 1]->offset);
        }
        if (has_normals)
            for (int j = 0; j < 3; j++) s->normals[i * 3 + j] = RD(F_NX + j);
        if (s->lidar_intensity) {
            s->lidar_intensity[i] = RD(F_LI);
            s->lidar_raydrop[i] = RD(F_LD);
        }
        if (s->actor_id) s->actor_id[i] = (int32_t)le32(row + fixed[F_ACTOR]->offset);
#undef RD
        if (flags & DK_PLY_ALLOW_INVALID) continue;
        if (row_bad(s, i)) {
            /* Non-finite values: find the offending property to name it. */
            for (int p = 0; p < v->n_props; p++) {
                const ply_prop *pp = &v->props[p];
                if (pp->t != PT_F32) continue;
                int wanted = rest_index(pp->name) >= 0;
                for (int j = 0; j < F_FIXED && !wanted; j++)
                    wanted = fixed[j] == pp && j != F_ACTOR &&
                             (j < F_NX || j > F_NZ || has_normals);
                if (!wanted) continue;
                float x = lef32(row + pp->offset);
                if (!isfinite(x)) {
                    dk_scene_destroy(s);
                    st = dk__error(DK_EINVALIDDATA, "dk_scene_load_ply",
                                   "%s: element vertex: vertex %lld: property %s is %s at "
                                   "byte offset %zu", name, (long long)i, pp->name,
                                   isnan(x) ? "nan" : "inf", (size_t)(row - data) + pp->offset);
                    goto done;
                }
            }
        }
        const float *q = s->rotations + i * 4;
        double nn = (double)q[0] * q[0] + (double)q[1] * q[1] + (double)q[2] * q[2] +
                    (double)q[3] * q[3];
        if (!(nn >= 1e-24)) {
            dk_scene_destroy(s);
            st = dk__error(DK_EINVALIDDATA, "dk_scene_load_ply",
                           "%s: element vertex: vertex %lld: rot_0..3 is a zero quaternion "
                           "(row at byte offset %zu)", name, (long long)i, (size_t)(row - data));
            goto done;
        }
    }
    *out = s;
done:
    dk_free(h);
    return st;
}

int dk_scene_load_ply(const char *path, unsigned flags, dk_scene **out)
{
    if (out) *out = NULL;
    if (!path || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    uint8_t *buf = NULL;
    size_t size = 0;
    int st = dk_file_read(path, &buf, &size);
    if (st) return st;
    st = dk_scene_load_ply_memory(buf, size, path, flags, out);
    dk_free(buf);
    return st;
}

static int scene_ok(const dk_scene *s)
{
    return s && s->n >= 0 && s->n <= DK_SCENE_MAX_GAUSSIANS && s->sh_degree >= 0 &&
           s->sh_degree <= DK_SCENE_MAX_SH_DEGREE &&
           s->sh_coeffs == (s->sh_degree + 1) * (s->sh_degree + 1) && s->means && s->scales &&
           s->rotations && s->opacities && s->sh && !s->lidar_intensity == !s->lidar_raydrop;
}

int dk_scene_save_ply_memory(const dk_scene *s, uint8_t **out, size_t *out_size)
{
    if (out) *out = NULL;
    if (out_size) *out_size = 0;
    if (!out || !out_size || !scene_ok(s))
        return dk__error(DK_EINVAL, __func__, "NULL argument or inconsistent scene");
    int K = s->sh_coeffs;
    char hdr[4096];
    size_t hl = 0;
#define HP(...) hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl, __VA_ARGS__)
    HP("ply\nformat binary_little_endian 1.0\nelement vertex %lld\n", (long long)s->n);
    HP("property float x\nproperty float y\nproperty float z\n");
    if (s->normals) HP("property float nx\nproperty float ny\nproperty float nz\n");
    for (int c = 0; c < 3; c++) HP("property float f_dc_%d\n", c);
    for (int r = 0; r < 3 * (K - 1); r++) HP("property float f_rest_%d\n", r);
    HP("property float opacity\n");
    for (int j = 0; j < 3; j++) HP("property float scale_%d\n", j);
    for (int j = 0; j < 4; j++) HP("property float rot_%d\n", j);
    if (s->lidar_intensity) HP("property float lidar_intensity\nproperty float lidar_raydrop\n");
    if (s->actor_id) HP("property int actor_id\n");
    HP("end_header\n");
#undef HP
    size_t nf = 3 + (s->normals ? 3 : 0) + 3 * (size_t)K + 1 + 3 + 4 +
                (s->lidar_intensity ? 2 : 0) + (s->actor_id ? 1 : 0);
    size_t row = nf * 4, body, total;
    if (dk__mul_overflow(row, (size_t)s->n, &body) || dk__add_overflow(body, hl, &total))
        return dk__error(DK_EOVERFLOW, __func__, "scene too large");
    uint8_t *buf = dk_malloc(total);
    if (!buf) return dk__error(DK_ENOMEM, __func__, "out of memory (%zu bytes)", total);
    memcpy(buf, hdr, hl);
    uint8_t *p = buf + hl;
    for (int64_t i = 0; i < s->n; i++) {
        for (int j = 0; j < 3; j++, p += 4) putf32(p, s->means[i * 3 + j]);
        if (s->normals)
            for (int j = 0; j < 3; j++, p += 4) putf32(p, s->normals[i * 3 + j]);
        for (int c = 0; c < 3; c++, p += 4)
            putf32(p, s->sh[((size_t)i * 3 + (size_t)c) * (size_t)K]);
        for (int c = 0; c < 3; c++)
            for (int k = 1; k < K; k++, p += 4)
                putf32(p, s->sh[((size_t)i * 3 + (size_t)c) * (size_t)K + (size_t)k]);
        putf32(p, s->opacities[i]);
        p += 4;
        for (int j = 0; j < 3; j++, p += 4) putf32(p, s->scales[i * 3 + j]);
        for (int j = 0; j < 4; j++, p += 4) putf32(p, s->rotations[i * 4 + j]);
        if (s->lidar_intensity) {
            putf32(p, s->lidar_intensity[i]);
            putf32(p + 4, s->lidar_raydrop[i]);
            p += 8;
        }
        if (s->actor_id) {
            put32(p, (uint32_t)s->actor_id[i]);
            p += 4;
        }
    }
    *out = buf;
    *out_size = total;
    return DK_OK;
}

int dk_scene_save_ply(const dk_scene *s, const char *path)
{
    if (!path) return dk__error(DK_EINVAL, __func__, "path is NULL");
    uint8_t *buf = NULL;
    size_t size = 0;
    int st = dk_scene_save_ply_memory(s, &buf, &size);
    if (st) return st;
    st = dk_file_write(path, buf, size);
    dk_free(buf);
    return st;
}
