/* Tests of src/data: image steps and the fused image pass, against a plain
 * scalar reference (decode, warp, photometric, normalize, pad, layout done
 * one after the other in double precision). */
#include <float.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_impl.h"
#include "dk_test.h"

/* ------------------------------------------------------------------------ */
/* Images                                                                    */

static uint32_t hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* (h, w, 3) uint8: smooth waves (JPEG-friendly) or smooth + per-pixel noise. */
static int make_image(int w, int h, uint32_t seed, int noisy, dk_tensor *t)
{
    int64_t shape[3] = {h, w, 3};
    int st = dk_tensor_alloc(t, DK_U8, 3, shape);
    if (st) return st;
    uint8_t *p = t->data;
    double ph = (seed % 97) * 0.1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                double v = 128 + 70 * sin(x / (41.0 + 9 * c) + y / 67.0 + ph + c) +
                           40 * cos(y / (29.0 + 5 * c) - x / 83.0);
                if (noisy) v += (double)(hash32(seed * 7919u + (uint32_t)(y * w + x) * 3u +
                                                (uint32_t)c) % 61) - 30;
                v = v < 0 ? 0 : v > 255 ? 255 : v;
                p[((size_t)y * w + x) * 3 + c] = (uint8_t)(v + 0.5);
            }
    return DK_OK;
}

static float half_to_float(uint16_t h)
{
    uint32_t s = (uint32_t)(h >> 15), e = (h >> 10) & 31u, m = h & 1023u;
    float v;
    if (e == 0)
        v = ldexpf((float)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexpf((float)(m | 1024u), (int)e - 25);
    return s ? -v : v;
}

/* ------------------------------------------------------------------------ */
/* The reference                                                             */

typedef struct ref_params {
    double A[6];
    int out_w, out_h, nearest;
    double fill[3];
    int photometric;
    double brightness, contrast, saturation, hue;
    int contrast_last, swap[3];
    int normalize;
    double mean[3], std[3];
    int bgr, pad_w, pad_h;
    double pad_value;
    int chw;
    dk_dtype dtype;
} ref_params;

static void ref_init(ref_params *r)
{
    memset(r, 0, sizeof *r);
    r->A[0] = r->A[4] = 1;
    r->contrast = r->saturation = 1;
    for (int c = 0; c < 3; c++) {
        r->swap[c] = c;
        r->std[c] = 1;
    }
    r->dtype = DK_U8;
}

static void ref_hsv(double *px, double sat, double hue)
{
    double r = px[0], g = px[1], b = px[2];
    double v = fmax(r, fmax(g, b)), mn = fmin(r, fmin(g, b)), diff = v - mn;
    double s = diff / (fabs(v) + FLT_EPSILON), h;
    double k = 60.0 / (diff + FLT_EPSILON);
    if (v == r)
        h = (g - b) * k;
    else if (v == g)
        h = (b - r) * k + 120;
    else
        h = (r - g) * k + 240;
    if (h < 0) h += 360;
    s *= sat;
    h += hue;
    if (h > 360) h -= 360;
    if (h < 0) h += 360;
    if (s == 0) {
        px[0] = px[1] = px[2] = v;
        return;
    }
    double hh = fmod(h / 60.0, 6.0);
    if (hh < 0) hh += 6;
    int sec = (int)floor(hh);
    double f = hh - sec;
    double p0 = v, p1 = v * (1 - s), p2 = v * (1 - s * f), p3 = v * (1 - s * (1 - f));
    double rgb[6][3] = {{p0, p3, p1}, {p2, p0, p1}, {p1, p0, p3},
                        {p1, p2, p0}, {p3, p1, p0}, {p0, p1, p2}};
    for (int c = 0; c < 3; c++) px[c] = rgb[sec % 6][c];
}

/* Output element values (double) of the reference for image `src`, in the
 * layout of r: (ph, pw, 3) or (3, ph, pw). */
static double *ref_run(const dk_tensor *src, const ref_params *r, int *pw_out, int *ph_out)
{
    int W = (int)src->shape[1], H = (int)src->shape[0];
    const uint8_t *px = src->data;
    int pw = r->pad_w > r->out_w ? r->pad_w : r->out_w;
    int ph = r->pad_h > r->out_h ? r->pad_h : r->out_h;
    double *out = malloc((size_t)pw * ph * 3 * sizeof *out);
    if (!out) return NULL;
    const double *A = r->A;
    double det = A[0] * A[4] - A[1] * A[3];
    double B[6] = {A[4] / det, -A[1] / det, 0, -A[3] / det, A[0] / det, 0};
    B[2] = -(B[0] * A[2] + B[1] * A[5]);
    B[5] = -(B[3] * A[2] + B[4] * A[5]);
    for (int j = 0; j < ph; j++)
        for (int i = 0; i < pw; i++) {
            double o[3];
            if (i >= r->out_w || j >= r->out_h) {
                o[0] = o[1] = o[2] = r->pad_value;
            } else {
                double sx = B[0] * (i + 0.5) + B[1] * (j + 0.5) + B[2];
                double sy = B[3] * (i + 0.5) + B[4] * (j + 0.5) + B[5];
                double v[3];
                if (r->nearest) {
                    int xx = (int)floor(sx), yy = (int)floor(sy);
                    for (int c = 0; c < 3; c++)
                        v[c] = xx >= 0 && xx < W && yy >= 0 && yy < H
                                   ? px[((size_t)yy * W + xx) * 3 + c]
                                   : r->fill[c];
                } else {
                    double u = sx - 0.5, w = sy - 0.5;
                    int x0 = (int)floor(u), y0 = (int)floor(w);
                    double fx = u - x0, fy = w - y0;
                    for (int c = 0; c < 3; c++) {
                        double t[4];
                        for (int k = 0; k < 4; k++) {
                            int xx = x0 + (k & 1), yy = y0 + (k >> 1);
                            t[k] = xx >= 0 && xx < W && yy >= 0 && yy < H
                                       ? px[((size_t)yy * W + xx) * 3 + c]
                                       : r->fill[c];
                        }
                        v[c] = (1 - fy) * ((1 - fx) * t[0] + fx * t[1]) +
                               fy * ((1 - fx) * t[2] + fx * t[3]);
                    }
                }
                if (r->photometric) {
                    for (int c = 0; c < 3; c++) v[c] += r->brightness;
                    if (!r->contrast_last)
                        for (int c = 0; c < 3; c++) v[c] *= r->contrast;
                    if (r->saturation != 1 || r->hue != 0) ref_hsv(v, r->saturation, r->hue);
                    if (r->contrast_last)
                        for (int c = 0; c < 3; c++) v[c] *= r->contrast;
                    double t[3] = {v[r->swap[0]], v[r->swap[1]], v[r->swap[2]]};
                    memcpy(v, t, sizeof t);
                }
                for (int k = 0; k < 3; k++) {
                    o[k] = v[r->bgr ? 2 - k : k];
                    if (r->normalize) o[k] = (o[k] - r->mean[k]) / r->std[k];
                }
            }
            for (int k = 0; k < 3; k++) {
                size_t at = r->chw ? ((size_t)k * ph + j) * pw + i : ((size_t)j * pw + i) * 3 + k;
                out[at] = o[k];
            }
        }
    *pw_out = pw;
    *ph_out = ph;
    return out;
}

/* Largest difference between the output tensor and the reference, in
 * output units; u8 compares with the reference rounded and clamped. */
static double max_diff(const dk_tensor *t, const double *ref, size_t n)
{
    double m = 0;
    for (size_t k = 0; k < n; k++) {
        double got, want = ref[k];
        if (t->dtype == DK_U8) {
            got = ((const uint8_t *)t->data)[k];
            want = floor(fmin(fmax(want, 0), 255) + 0.5);
        } else if (t->dtype == DK_F32) {
            got = ((const float *)t->data)[k];
        } else {
            got = half_to_float(((const uint16_t *)t->data)[k]);
            /* half precision: 11 significant bits */
            double ulp = fabs(want) > 6.1e-5 ? ldexp(1, ilogb(want) - 10) : ldexp(1, -24);
            double d = fabs(got - want) - 0.5 * ulp;
            if (d > m) m = d;
            continue;
        }
        if (fabs(got - want) > m) m = fabs(got - want);
    }
    return m;
}

/* One field "image" of dtype dt under the root. */
static dk_group *image_format(dk_dtype dt, int *id)
{
    dk_group *g;
    if (dk_group_create(&g)) return NULL;
    *id = dk_group_add_tensor(g, DK_GROUP_ROOT, "image", dt, 3);
    return g;
}

static void plan_from_ref(dk__image_plan *p, const ref_params *r)
{
    memcpy(p->A, r->A, sizeof p->A);
    p->out_w = r->out_w;
    p->out_h = r->out_h;
    p->nearest = r->nearest;
    for (int c = 0; c < 3; c++) {
        p->fill[c] = (float)r->fill[c];
        p->swap[c] = r->swap[c];
        p->mean[c] = (float)r->mean[c];
        p->std[c] = (float)r->std[c];
    }
    p->photometric = r->photometric;
    p->brightness = (float)r->brightness;
    p->contrast = (float)r->contrast;
    p->contrast_last = r->contrast_last;
    p->saturation = (float)r->saturation;
    p->hue = (float)r->hue;
    p->normalize = r->normalize;
    p->bgr = r->bgr;
    p->pad_w = r->pad_w;
    p->pad_h = r->pad_h;
    p->pad_value = (float)r->pad_value;
    p->chw = r->chw;
    p->dtype = r->dtype;
}

/* Runs one plan through dk__image_materialize: a TENSOR source (src given)
 * or a file (path given, src_w x src_h). *out receives the new value. */
static int run_plan(const dk_tensor *src, const char *path, int src_w, int src_h,
                    const ref_params *r, const char *what, dk_tensor *out)
{
    int id;
    dk_group *g = image_format(r->dtype, &id);
    if (!g) return DK_ENOMEM;
    dk_sample x;
    int st = dk_sample_init(&x, dk_group_id_limit(g));
    dk__image_plans ps = {0};
    if (!st) {
        dk__image_plan *p = dk__image_plan_add(&ps, id);
        if (!p) st = DK_ENOMEM;
        if (!st && src) {
            dk_tensor sh = dk_tensor_share(src);
            dk_sample_set(&x, id, &sh);
            p->src = DK__IMG_TENSOR;
            p->src_w = (int)src->shape[1];
            p->src_h = (int)src->shape[0];
        } else if (!st) {
            p->src = DK__IMG_JPEG_FILE;
            p->path = dk_strdup(path);
            p->src_w = src_w;
            p->src_h = src_h;
        }
        if (!st) plan_from_ref(p, r);
        if (!st) st = dk__image_materialize(&ps, &x, g, NULL, what);
    }
    if (!st) {
        *out = x.values[id];
        memset(&x.values[id], 0, sizeof x.values[id]);
    }
    dk__image_plans_clear(&ps);
    dk_free(ps.p);
    dk_sample_free(&x);
    dk_group_destroy(g);
    return st;
}

/* A x about the centre of a w x h image: rotation (deg), scale, then shift. */
static void centre_affine(double A[6], int w, int h, double deg, double sx, double sy, double shx,
                          double tx, double ty)
{
    double t = deg * 3.14159265358979 / 180, c = cos(t), s = sin(t);
    double L[4] = {sx * c, sx * s + shx, -sy * s, sy * c};
    double cx = w * 0.5, cy = h * 0.5;
    A[0] = L[0];
    A[1] = L[1];
    A[3] = L[2];
    A[4] = L[3];
    A[2] = cx - L[0] * cx - L[1] * cy + tx;
    A[5] = cy - L[2] * cx - L[3] * cy + ty;
}

/* ------------------------------------------------------------------------ */
/* (a) numerics                                                              */

typedef struct numerics_case {
    const char *name;
    double deg, sx, sy, shx, tx, ty;
    double out_scale;   /* output size relative to the source */
} numerics_case;

static const numerics_case g_cases[] = {
    {"scale 0.4", 0, 0.4, 0.4, 0, 3.3, -2.1, 0.4},
    {"scale 2.3", 0, 2.3, 2.3, 0, -11.7, 5.2, 1.0},
    {"rotate 30", 30, 0.8, 0.8, 0, 1.1, 0.7, 0.9},
    {"flip", 0, -1, 1, 0, 0, 0, 1.0},
    {"crop", 0, 1, 1, 0, -17, -9, 0.7},
    {"shear", 0, 1.1, 0.9, 0.3, 2, 1, 1.0},
    {"stretch", 0, 0.55, 1.45, 0, 0.3, -0.2, 0.8},
};

static void fill_layout(ref_params *r, int variant)
{
    switch (variant % 6) {
    case 0: r->dtype = DK_U8; break;
    case 1:
        r->dtype = DK_F32;
        r->chw = 1;
        r->normalize = 1;
        r->bgr = 1;
        r->mean[0] = 103.53;
        r->mean[1] = 116.28;
        r->mean[2] = 123.675;
        r->std[0] = 57.375;
        r->std[1] = 57.12;
        r->std[2] = 58.395;
        break;
    case 2:
        r->dtype = DK_F16;
        r->normalize = 1;
        for (int c = 0; c < 3; c++) {
            r->mean[c] = 100 + 10 * c;
            r->std[c] = 50 + c;
        }
        r->photometric = 1;
        r->brightness = -17.5;
        r->contrast = 1.3;
        r->saturation = 0.7;
        r->hue = 11;
        break;
    case 3:
        r->dtype = DK_U8;
        r->chw = 1;
        r->pad_w = (r->out_w + 31) / 32 * 32;
        r->pad_h = (r->out_h + 31) / 32 * 32;
        r->pad_value = 7;
        r->fill[0] = 10;
        r->fill[1] = 200;
        r->fill[2] = 90;
        r->photometric = 1;
        r->contrast = 0.6;
        r->contrast_last = 1;
        r->saturation = 1.4;
        r->hue = -15;
        r->swap[0] = 2;
        r->swap[1] = 0;
        r->swap[2] = 1;
        break;
    case 4:
        r->dtype = DK_F32;
        r->pad_w = r->out_w + 5;
        r->pad_h = r->out_h + 3;
        r->pad_value = -1.5;
        r->photometric = 1;
        r->brightness = 25;
        break;
    default:
        r->dtype = DK_F16;
        r->chw = 1;
        r->nearest = 1;
        break;
    }
}

static void test_image_fused_tensor_numerics(void)
{
    dk_tensor src;
    int W = 211, H = 133;
    DK_CHECK_OK(make_image(W, H, 3, 1, &src));
    int checked = 0;
    for (size_t ci = 0; ci < sizeof g_cases / sizeof g_cases[0]; ci++)
        for (int variant = 0; variant < 6; variant++) {
            const numerics_case *nc = &g_cases[ci];
            ref_params r;
            ref_init(&r);
            centre_affine(r.A, W, H, nc->deg, nc->sx, nc->sy, nc->shx, nc->tx, nc->ty);
            r.out_w = (int)(W * nc->out_scale);
            r.out_h = (int)(H * nc->out_scale);
            /* Shrinking outputs: the map also scales to the output size. */
            for (int k = 0; k < 3; k++) {
                r.A[k] *= (double)r.out_w / W;
                r.A[3 + k] *= (double)r.out_h / H;
            }
            if (variant == 5) {
                /* Nearest: keep sample points off pixel borders. */
                r.A[2] += 0.123;
                r.A[5] += 0.377;
            }
            fill_layout(&r, variant);
            dk_tensor out;
            int st = run_plan(&src, NULL, 0, 0, &r, "tok", &out);
            if (st) {
                dk_tensor_release(&src);
                DK_FAIL_("%s variant %d: %s", nc->name, variant, dk_errmsg());
            }
            int pw, ph;
            double *ref = ref_run(&src, &r, &pw, &ph);
            int64_t want0 = r.chw ? 3 : ph, want1 = r.chw ? ph : pw, want2 = r.chw ? pw : 3;
            int shape_ok = out.dtype == r.dtype && out.ndim == 3 && out.shape[0] == want0 &&
                           out.shape[1] == want1 && out.shape[2] == want2;
            double d = ref && shape_ok ? max_diff(&out, ref, (size_t)pw * ph * 3) : 1e9;
            /* Same source pixels, float vs double: far below one level,
               except rounding at .5 for uint8 and nearest-neighbour ties. */
            double one_level = r.normalize ? 1.0 / 50 : 1.0;
            double tol = r.dtype == DK_U8 ? 1.0 : 0.02 * one_level;
            free(ref);
            dk_tensor_release(&out);
            if (!(d <= tol)) {
                dk_tensor_release(&src);
                DK_FAIL_("%s variant %d: max difference %g (tolerance %g), shape ok %d", nc->name,
                         variant, d, tol, shape_ok);
            }
            checked++;
        }
    dk_tensor_release(&src);
    DK_CHECK_EQ_INT(checked, (int)(sizeof g_cases / sizeof g_cases[0]) * 6);
}

/* Every uint8 output element within one level, most exact. */
static void test_image_fused_u8_exactness(void)
{
    dk_tensor src;
    DK_CHECK_OK(make_image(97, 61, 11, 1, &src));
    ref_params r;
    ref_init(&r);
    r.out_w = 97;
    r.out_h = 61;
    dk_tensor out;
    DK_CHECK_OK(run_plan(&src, NULL, 0, 0, &r, NULL, &out));
    /* Identity: the source itself. */
    DK_CHECK(!memcmp(out.data, src.data, 97 * 61 * 3));
    dk_tensor_release(&out);
    /* A flip by +-1 steps is exact too. */
    r.A[0] = -1;
    r.A[2] = 97;
    DK_CHECK_OK(run_plan(&src, NULL, 0, 0, &r, NULL, &out));
    const uint8_t *a = src.data, *b = out.data;
    int bad = 0;
    for (int y = 0; y < 61; y++)
        for (int x = 0; x < 97; x++)
            for (int c = 0; c < 3; c++)
                bad += a[(y * 97 + x) * 3 + c] != b[(y * 97 + (96 - x)) * 3 + c];
    DK_CHECK_EQ_INT(bad, 0);
    dk_tensor_release(&out);
    dk_tensor_release(&src);
}

static void test_image_float16_conversion(void)
{
    /* Values that exercise rounding to even, subnormals and overflow. */
    static const float vals[] = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 65519.0f, 65520.0f, 1e-5f,
                                 6.0e-8f, 3.0e-8f, 2.9e-8f, 1.0009765625f, 1.00048828125f,
                                 1.00146484375f, 0.333333f};
    static const uint16_t want[] = {0x0000, 0x8000, 0x3c00, 0xc100, 0x7bff, 0x7bff, 0x7c00,
                                    0x00a8, 0x0001, 0x0001, 0x0000, 0x3c01, 0x3c00, 0x3c02,
                                    0x3555};
    /* Through the pass: a 1x1 image padded to 2x1. */
    for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++) {
        dk_tensor src;
        int64_t shape[3] = {1, 1, 3};
        DK_CHECK_OK(dk_tensor_alloc(&src, DK_U8, 3, shape));
        ((uint8_t *)src.data)[0] = 1;
        ((uint8_t *)src.data)[1] = 1;
        ((uint8_t *)src.data)[2] = 1;
        ref_params r;
        ref_init(&r);
        r.out_w = r.out_h = 1;
        r.dtype = DK_F16;
        /* The pad value is written as given: it carries the test value. */
        r.pad_w = 2;
        r.pad_value = vals[k];
        dk_tensor out;
        DK_CHECK_OK(run_plan(&src, NULL, 0, 0, &r, NULL, &out));
        uint16_t got = ((const uint16_t *)out.data)[3];
        dk_tensor_release(&out);
        dk_tensor_release(&src);
        if (got != want[k]) DK_FAIL_("f16(%g) = 0x%04x, want 0x%04x", vals[k], got, want[k]);
    }
}

static char *tmp_path(const char *name)
{
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s/dimg_%d_%s", dk_test_tmpdir(), (int)getpid(), name);
    return b;
}

static int write_jpeg(const char *path, const dk_tensor *img, int quality)
{
    return dk_image_save(path, img, quality);
}

/* JPEG sources: downscales to 1/2 or less decode at a DCT scale n/8 (which
 * drops the high-frequency quantisation noise a full decode has) and must
 * match the full decode + the reference warp within one level on average and
 * a few levels at worst, and be at least as close to the picture before JPEG
 * as that reference is. Milder downscales (where the scales 5/8..7/8 would
 * cost more than a full decode) and upscales decode at full size: equal to
 * the reference. */
static void test_image_fused_jpeg_numerics(void)
{
    dk_tensor img, full;
    int W = 640, H = 360;
    DK_CHECK_OK(make_image(W, H, 5, 0, &img));
    const char *path = tmp_path("smooth.jpg");
    DK_CHECK_OK(write_jpeg(path, &img, 95));
    DK_CHECK_OK(dk_image_load(path, NULL, &full));
    static const struct {
        double deg, s, tx, ty;
        double out;
    } cases[] = {{0, 0.4, 0.6, -0.3, 0.4}, {0, 0.3, 0, 0, 0.3}, {0, 0.55, 1.2, 2.1, 0.5},
                 {0, 1.7, -5, 3, 0.8}, {25, 0.45, 0, 0, 0.4}, {0, -0.6, 0, 0, 0.6}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int variant = 0; variant < 2; variant++) {
            ref_params r;
            ref_init(&r);
            /* rotation or mirror about the centre, then a scale about the
               origin (the output shows the scaled picture), then a shift */
            centre_affine(r.A, W, H, cases[k].deg, cases[k].s < 0 ? -1 : 1, 1, 0, 0, 0);
            for (int i = 0; i < 6; i++) r.A[i] *= fabs(cases[k].s);
            r.A[2] += cases[k].tx;
            r.A[5] += cases[k].ty;
            r.out_w = (int)(W * cases[k].out);
            r.out_h = (int)(H * cases[k].out);
            if (variant) fill_layout(&r, 1);
            dk_tensor out;
            int st = run_plan(NULL, path, W, H, &r, "tok", &out);
            if (st) {
                dk_tensor_release(&full);
                dk_tensor_release(&img);
                DK_FAIL_("case %zu: %s", k, dk_errmsg());
            }
            int pw, ph;
            double *ref = ref_run(&full, &r, &pw, &ph);
            double *orig = ref_run(&img, &r, &pw, &ph);
            /* Inside the picture, away from its border (where the fill
               blends in over one decoded pixel, wider at a smaller decode
               scale); in intensity levels. */
            double dmax = 0, dsum = 0, e_out = 0, e_ref = 0;
            int64_t cnt = 0;
            const double *A = r.A;
            double det = A[0] * A[4] - A[1] * A[3];
            for (int j = 0; j < r.out_h; j++)
                for (int i = 0; i < r.out_w; i++)
                    for (int c = 0; c < 3; c++) {
                        double ox = i + 0.5 - A[2], oy = j + 0.5 - A[5];
                        double sx = (A[4] * ox - A[1] * oy) / det, sy = (-A[3] * ox + A[0] * oy) / det;
                        if (sx < 5 || sy < 5 || sx > W - 5 || sy > H - 5) continue;
                        size_t at = r.chw ? ((size_t)c * ph + j) * pw + i
                                          : ((size_t)j * pw + i) * 3 + c;
                        double want = ref[at], o = orig[at], got;
                        if (out.dtype == DK_U8) {
                            got = ((const uint8_t *)out.data)[at];
                        } else {
                            got = ((const float *)out.data)[at] * r.std[c];
                            want *= r.std[c];
                            o *= r.std[c];
                        }
                        double d = fabs(got - want);
                        dmax = d > dmax ? d : dmax;
                        dsum += d;
                        e_out += fabs(got - o);
                        e_ref += fabs(want - o);
                        cnt++;
                    }
            free(ref);
            free(orig);
            dk_tensor_release(&out);
            double mean = dsum / (double)cnt;
            e_out /= (double)cnt;
            e_ref /= (double)cnt;
            int down = fabs(cases[k].s) <= 0.5;
            int ok = down ? mean <= 1.0 && dmax <= 5.0 && e_out <= e_ref + 0.1 && mean > 0.02
                          : dmax <= 0.6;
            if (getenv("DK_TEST_VERBOSE"))
                printf("     scale %g variant %d: mean %.3f max %.2f; vs original %.3f (full %.3f)\n",
                       cases[k].s, variant, mean, dmax, e_out, e_ref);
            if (!ok) {
                dk_tensor_release(&full);
                dk_tensor_release(&img);
                DK_FAIL_("case %zu variant %d (scale %g): difference to the full decode: mean %.3f, "
                         "max %.2f levels; to the original: %.3f (full decode %.3f)", k, variant,
                         cases[k].s, mean, dmax, e_out, e_ref);
            }
        }
    }
    dk_tensor_release(&full);
    dk_tensor_release(&img);
    remove(path);
}

/* ------------------------------------------------------------------------ */
/* Pipelines for the step tests                                              */

typedef struct geo_world {
    double P[16];       /* lidar2img, OpenCV pixel centres shifted by `pc` */
    double X[4];        /* a 3-D point */
    double uv[2];       /* its projection */
} geo_world;

static void make_world(geo_world *g, int W, int H, double pc, double du, double dv)
{
    double fx = 0.9 * W, fy = 0.9 * W, cx = W * 0.5 - 0.5 + pc, cy = H * 0.5 - 0.5 + pc;
    /* lidar (FLU) -> camera (x right, y down, z forward), with a small yaw */
    double a = 0.1, c = cos(a), s = sin(a);
    double L[16] = {-s, -c, 0, 0.3, 0, 0, -1, 1.6, c, -s, 0, -0.4, 0, 0, 0, 1};
    double K[16] = {fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double v = 0;
            for (int k = 0; k < 4; k++) v += K[i * 4 + k] * L[k * 4 + j];
            g->P[i * 4 + j] = v;
        }
    /* A point straight ahead, moved to project at (W/2 + du, H/2 + dv). */
    double z = 12;
    double xc = (W * 0.5 + du - cx) / fx * z, yc = (H * 0.5 + dv - cy) / fy * z;
    /* camera -> lidar: inverse of L's rotation part */
    double pc3[3] = {xc - 0.3, yc - 1.6, z + 0.4};
    g->X[0] = L[0] * pc3[0] + L[4] * pc3[1] + L[8] * pc3[2];
    g->X[1] = L[1] * pc3[0] + L[5] * pc3[1] + L[9] * pc3[2];
    g->X[2] = L[2] * pc3[0] + L[6] * pc3[1] + L[10] * pc3[2];
    g->X[3] = 1;
    double w = 0, u = 0, v = 0;
    for (int k = 0; k < 4; k++) {
        u += g->P[k] * g->X[k];
        v += g->P[4 + k] * g->X[k];
        w += g->P[8 + k] * g->X[k];
    }
    g->uv[0] = u / w;
    g->uv[1] = v / w;
}

static void project(const float *P, const double X[4], double uv[2])
{
    double u = 0, v = 0, w = 0;
    for (int k = 0; k < 4; k++) {
        u += P[k] * X[k];
        v += P[4 + k] * X[k];
        w += P[8 + k] * X[k];
    }
    uv[0] = u / w;
    uv[1] = v / w;
}

/* A black image with a Gaussian dot (sigma px) at continuous (cx, cy). */
static int dot_image(int W, int H, double cx, double cy, double sigma, dk_tensor *t)
{
    int64_t shape[3] = {H, W, 3};
    int st = dk_tensor_alloc(t, DK_U8, 3, shape);
    if (st) return st;
    uint8_t *p = t->data;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double d2 = (x + 0.5 - cx) * (x + 0.5 - cx) + (y + 0.5 - cy) * (y + 0.5 - cy);
            double v = 250 * exp(-d2 / (2 * sigma * sigma));
            for (int c = 0; c < 3; c++) p[((size_t)y * W + x) * 3 + c] = (uint8_t)(v + 0.5);
        }
    return DK_OK;
}

/* Intensity centroid of channel 0 of an (H, W, 3) float image, continuous
 * coordinates; 0 when there is too little mass (the dot left the image). */
static int centroid(const dk_tensor *t, double *cx, double *cy)
{
    int H = (int)t->shape[0], W = (int)t->shape[1];
    const float *p = t->data;
    double m = 0, sx = 0, sy = 0, peak = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double v = p[((size_t)y * W + x) * 3];
            if (v > peak) peak = v;
        }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double v = p[((size_t)y * W + x) * 3] - 0.02 * peak;
            if (v <= 0) continue;
            m += v;
            sx += v * (x + 0.5);
            sy += v * (y + 0.5);
        }
    if (m <= 0 || peak < 20) return 0;
    *cx = sx / m;
    *cy = sy / m;
    return 1;
}

typedef struct geo_ids {
    int image, lidar2img, pts;
} geo_ids;

static dk_group *geo_format(geo_ids *ids)
{
    dk_group *g;
    if (dk_group_create(&g)) return NULL;
    int cam = dk_group_add_group(g, DK_GROUP_ROOT, "cam");
    ids->image = dk_group_add_tensor(g, cam, "image", DK_U8, 3);
    ids->lidar2img = dk_group_add_tensor(g, cam, "lidar2img", DK_F32, 2);
    ids->pts = dk_group_add_tensor(g, cam, "pts", DK_F32, 2);
    return g;
}

/* Runs affine(cfg) + layout(HWC, float32) on the dot image; checks that the
 * dot's centroid is where the updated lidar2img projects the point and that
 * the 2-D points moved the same way. Returns 1 when checked, 0 when the dot
 * left the output, -1 on failure (message printed). */
static int geo_check(const dk_affine_config *cfg0, uint64_t sample, double du, double dv,
                     double tol, const char *label)
{
    int W = 320, H = 180;
    dk_affine_config cfg = *cfg0;
    cfg.point_fields = "pts";
    geo_world gw;
    make_world(&gw, W, H, cfg.pixel_center, du, dv);
    double d = 0.5 - cfg.pixel_center;
    dk_tensor img;
    if (dot_image(W, H, gw.uv[0] + d, gw.uv[1] + d, 2.5, &img)) return -1;
    geo_ids ids;
    dk_group *fmt = geo_format(&ids);
    dk_pipeline *p = NULL;
    dk_step *s1 = NULL, *s2 = NULL;
    dk_sample x;
    int st = dk_pipeline_create(fmt, NULL, &p);
    if (!st) st = dk_step_affine(&cfg, &s1);
    if (!st) st = dk_pipeline_add(p, s1);
    if (!st) st = dk_step_layout(0, DK_F32, &s2);
    if (!st) st = dk_pipeline_add(p, s2);
    memset(&x, 0, sizeof x);
    if (!st) st = dk_sample_init(&x, dk_group_id_limit(fmt));
    int result = -1;
    if (!st) {
        float P[16];
        for (int k = 0; k < 16; k++) P[k] = (float)gw.P[k];
        int64_t ms[2] = {4, 4}, ps[2] = {1, 4};
        float pts[4] = {(float)gw.uv[0], (float)gw.uv[1], (float)gw.uv[0] + 10, (float)gw.uv[1]};
        dk_sample_set(&x, ids.image, &img);
        dk_sample_set_copy(&x, ids.lidar2img, DK_F32, 2, ms, P);
        dk_sample_set_copy(&x, ids.pts, DK_F32, 2, ps, pts);
        x.index = (int64_t)sample;
        st = dk_pipeline_run(p, &x, "geo");
    } else {
        dk_tensor_release(&img);
    }
    if (st) {
        fprintf(stderr, "  %s: %s\n", label, dk_errmsg());
    } else {
        const dk_group *of = dk_pipeline_format(p);
        int im = dk_group_find(of, DK_GROUP_ROOT, "cam.image");
        const dk_tensor *o = &x.values[im];
        const float *P2 = x.values[ids.lidar2img].data;
        const float *q = x.values[ids.pts].data;
        double uv[2], cx, cy;
        project(P2, gw.X, uv);
        int ow = (int)o->shape[1], oh = (int)o->shape[0];
        /* in continuous coordinates */
        double ux = uv[0] + d, uy = uv[1] + d;
        double ep = fabs(q[0] - uv[0]) + fabs(q[1] - uv[1]);
        if (ep > 2e-3 * (1 + fabs(uv[0]))) {
            fprintf(stderr, "  %s: point moved to (%g, %g), lidar2img projects to (%g, %g)\n",
                    label, q[0], q[1], uv[0], uv[1]);
        } else if (!(ux > 8 && ux < ow - 8 && uy > 8 && uy < oh - 8)) {
            result = 0;
        } else if (!centroid(o, &cx, &cy)) {
            fprintf(stderr, "  %s: no dot in the output\n", label);
        } else if (fabs(cx - ux) > tol || fabs(cy - uy) > tol) {
            fprintf(stderr, "  %s: dot at (%.3f, %.3f), lidar2img says (%.3f, %.3f)\n", label, cx,
                    cy, ux, uy);
        } else {
            result = 1;
        }
    }
    dk_sample_free(&x);
    dk_pipeline_destroy(p);
    dk_group_destroy(fmt);
    return result;
}

/* ------------------------------------------------------------------------ */
/* (b) geometry consistency                                                  */

static void test_image_affine_geometry(void)
{
    typedef struct {
        const char *label;
        dk_affine_op_kind kind;
        double lo0, hi0, lo1, hi1;
        int out_w, out_h;
        dk_resize_mode mode;
        dk_resize_anchor anchor;
    } gcase;
    static const gcase cases[] = {
        {"scale", DK_AFFINE_SCALE, 0.6, 1.6, 0, 0, 0, 0, DK_RESIZE_STRETCH, DK_ANCHOR_CENTER},
        {"scale_xy", DK_AFFINE_SCALE_XY, 0.7, 1.3, -1.2, -0.8, 0, 0, DK_RESIZE_STRETCH,
         DK_ANCHOR_CENTER},
        {"flip", DK_AFFINE_FLIP, 0, 0, 0, 0, 0, 0, DK_RESIZE_STRETCH, DK_ANCHOR_CENTER},
        {"rotate", DK_AFFINE_ROTATE, -30, 30, 0, 0, 0, 0, DK_RESIZE_STRETCH, DK_ANCHOR_CENTER},
        {"shear", DK_AFFINE_SHEAR, -15, 15, -10, 10, 0, 0, DK_RESIZE_STRETCH, DK_ANCHOR_CENTER},
        {"translate", DK_AFFINE_TRANSLATE, -20, 20, -10, 10, 0, 0, DK_RESIZE_STRETCH,
         DK_ANCHOR_CENTER},
        {"resize_crop", DK_AFFINE_RESIZE_CROP, 0.8, 1.1, 0.0, 0.2, 200, 96, DK_RESIZE_STRETCH,
         DK_ANCHOR_CENTER},
        {"stretch", DK_AFFINE_SCALE, 1, 1, 0, 0, 160, 120, DK_RESIZE_STRETCH, DK_ANCHOR_CENTER},
        {"pad", DK_AFFINE_SCALE, 0.9, 1.1, 0, 0, 200, 200, DK_RESIZE_PAD, DK_ANCHOR_BOTTOM_RIGHT},
        {"crop", DK_AFFINE_SCALE, 0.9, 1.1, 0, 0, 150, 150, DK_RESIZE_CROP, DK_ANCHOR_CENTER},
        {"downscale", DK_AFFINE_SCALE, 1, 1, 0, 0, 128, 72, DK_RESIZE_STRETCH, DK_ANCHOR_TOP_LEFT},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int conv = 0; conv < 2; conv++) {
            dk_affine_config cfg;
            dk_affine_config_init(&cfg);
            cfg.pixel_center = conv ? 0.5 : 0;
            cfg.out_w = cases[k].out_w;
            cfg.out_h = cases[k].out_h;
            cfg.resize_mode = cases[k].mode;
            cfg.anchor = cases[k].anchor;
            dk_affine_config_add(&cfg, cases[k].kind, 1, cases[k].lo0, cases[k].hi0, cases[k].lo1,
                                 cases[k].hi1);
            int ok = 0;
            for (uint64_t smp = 0; smp < 4; smp++) {
                char label[96];
                snprintf(label, sizeof label, "%s (pixel_center %g, sample %d)", cases[k].label,
                         cfg.pixel_center, (int)smp);
                double tol = cases[k].out_w == 128 ? 0.2 : 0.12;
                int r = geo_check(&cfg, smp, 7.3 - 5.1 * (double)smp, 25.6 - 3.3 * (double)smp, tol,
                                  label);
                if (r < 0) DK_FAIL_("%s", label);
                ok += r;
            }
            if (ok == 0) DK_FAIL_("%s: the dot never stayed inside", cases[k].label);
        }
    }
}

static void test_image_affine_chains(void)
{
    dk_affine_config cfg;
    int checked = 0;
    for (int chain = 0; chain < 4; chain++) {
        dk_affine_config_init(&cfg);
        switch (chain) {
        case 0:   /* ACCV-Lab's StreamPETR chain */
            cfg.out_w = 256;
            cfg.out_h = 96;
            cfg.resize_mode = DK_RESIZE_CROP;
            cfg.anchor = DK_ANCHOR_BOTTOM_RIGHT;
            dk_affine_config_add(&cfg, DK_AFFINE_FLIP, 0.5, 0, 0, 0, 0);
            dk_affine_config_add(&cfg, DK_AFFINE_SCALE, 1, 1.0, 1.3, 0, 0);
            dk_affine_config_add(&cfg, DK_AFFINE_ALIGN_BORDER, 1, 0, 0, 0, 0)->border =
                DK_BORDER_BOTTOM;
            break;
        case 1:
            dk_affine_config_add(&cfg, DK_AFFINE_SCALE, 1, 1.2, 1.5, 0, 0);
            dk_affine_config_add(&cfg, DK_AFFINE_SHIFT_INSIDE, 1, 0, 0, 0, 0);
            dk_affine_config_add(&cfg, DK_AFFINE_FLIP, 1, 0, 0, 0, 0);
            break;
        case 2:
            cfg.out_w = 224;
            cfg.out_h = 160;
            cfg.resize_mode = DK_RESIZE_PAD;
            dk_affine_config_add(&cfg, DK_AFFINE_ROTATE, 1, -20, 20, 0, 0);
            dk_affine_config_add(&cfg, DK_AFFINE_SCALE, 0.8, 0.8, 1.2, 0, 0);
            dk_affine_config_add(&cfg, DK_AFFINE_SHEAR, 1, -5, 5, -5, 5);
            dk_affine_config_add(&cfg, DK_AFFINE_TRANSLATE, 1, -8, 8, -4, 4);
            break;
        default:   /* StreamPETR's own */
            dk_affine_config_streampetr(&cfg);
            cfg.out_w = 240;
            cfg.out_h = 88;
            cfg.ops[0].lo[0] = 0.8;
            cfg.ops[0].hi[0] = 0.95;
            break;
        }
        for (uint64_t smp = 0; smp < 6; smp++) {
            char label[64];
            snprintf(label, sizeof label, "chain %d sample %d", chain, (int)smp);
            int r = geo_check(&cfg, smp, 3.1 * (double)smp - 9, 30 - 2.0 * (double)smp, 0.15,
                              label);
            if (r < 0) DK_FAIL_("%s", label);
            checked += r;
        }
    }
    DK_CHECK(checked >= 12);
}

/* StreamPETR's formulas: resize r, crop (bottom-aligned, random x), flip. */
static void test_image_affine_streampetr(void)
{
    dk_affine_config cfg;
    dk_affine_config_streampetr(&cfg);
    DK_CHECK_EQ_INT(cfg.out_w, 704);
    DK_CHECK_EQ_INT(cfg.out_h, 256);
    int flips = 0;
    for (int64_t smp = 0; smp < 16; smp++) {
        geo_ids ids;
        dk_group *fmt = geo_format(&ids);
        dk_pipeline *p;
        dk_step *s;
        DK_CHECK_OK(dk_pipeline_create(fmt, NULL, &p));
        cfg.point_fields = "pts";
        DK_CHECK_OK(dk_step_affine(&cfg, &s));
        DK_CHECK_OK(dk_pipeline_add(p, s));
        dk_sample x;
        DK_CHECK_OK(dk_sample_init(&x, dk_group_id_limit(fmt)));
        dk_tensor img;
        DK_CHECK_OK(make_image(1600, 900, 1, 0, &img));
        dk_sample_set(&x, ids.image, &img);
        float I[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
        /* Corners of the source (OpenCV centres): (0, 0) and (1599, 899). */
        float pts[4] = {0, 0, 1599, 899};
        int64_t ms[2] = {4, 4}, ps[2] = {1, 4};
        dk_sample_set_copy(&x, ids.lidar2img, DK_F32, 2, ms, I);
        dk_sample_set_copy(&x, ids.pts, DK_F32, 2, ps, pts);
        x.index = smp;
        int st = dk_pipeline_run(p, &x, "sp");
        if (st) {
            dk_sample_free(&x);
            dk_pipeline_destroy(p);
            dk_group_destroy(fmt);
            DK_FAIL_("%s", dk_errmsg());
        }
        const dk_tensor *o = &x.values[ids.image];
        DK_CHECK_EQ_INT(o->shape[0], 256);
        DK_CHECK_EQ_INT(o->shape[1], 704);
        const float *q = x.values[ids.pts].data;
        const float *M = x.values[ids.lidar2img].data;
        /* Rows 0 and 1 of the identity became the map in OpenCV pixel
           centres: x' = sx (x + .5) - crop_x - .5 (mirrored: 704 - that - 1),
           y' = sy (y + .5) - crop_y - .5, sx = newW / 1600, newW = int(1600 r).
           Recover the parameters and check StreamPETR's formulas. */
        double sx = fabs(M[0]), sy = M[5], tx = M[2], ty = M[6];
        int flip = M[0] < 0;
        flips += flip;
        DK_CHECK_NEAR(M[1], 0, 1e-6);
        DK_CHECK_NEAR(M[4], 0, 1e-6);
        DK_CHECK(sy >= 342.0 / 900 - 1e-6 && sy <= 0.55 + 1e-6);
        double newH = sy * 900, newW = sx * 1600;
        DK_CHECK_NEAR(newH, floor(newH + 0.5), 1e-2);
        DK_CHECK_NEAR(newW, floor(newW + 0.5), 2e-2);
        DK_CHECK_NEAR(newW / 1600, newH / 900, 1.0 / 900 + 1.0 / 1600);
        /* bot_pct (0, 0): crop_y = newH - 256 */
        double crop_y = 0.5 * sy - 0.5 - ty;
        DK_CHECK_NEAR(crop_y, floor(newH + 0.5) - 256, 1e-2);
        DK_CHECK_NEAR(q[1], ty, 1e-2);
        DK_CHECK_NEAR(q[0], tx, 1e-2);
        /* crop_x: an integer in [0, newW - 704] */
        double crop_x = flip ? tx - 703.5 + 0.5 * sx : 0.5 * sx - 0.5 - tx;
        if (!(crop_x > -1e-2 && crop_x < fmax(0, floor(newW + 0.5) - 704) + 1e-2))
            DK_FAIL_("crop_x %g, newW %g, flip %d, M = %g %g %g", crop_x, newW, flip, M[0], M[1],
                     M[2]);
        DK_CHECK_NEAR(crop_x, floor(crop_x + 0.5), 1e-2);
        dk_sample_free(&x);
        dk_pipeline_destroy(p);
        dk_group_destroy(fmt);
    }
    /* p = 0.5 over 16 samples */
    DK_CHECK(flips > 1 && flips < 15);
    /* The evaluation form: r = max(704 / 1600, 256 / 900) = 0.44, newW 704,
       newH 396, crop (0, 140), no flip. */
    dk_affine_config_streampetr_eval(&cfg);
    cfg.point_fields = "pts";
    geo_ids ids;
    dk_group *fmt = geo_format(&ids);
    dk_pipeline *p;
    dk_step *s;
    DK_CHECK_OK(dk_pipeline_create(fmt, NULL, &p));
    DK_CHECK_OK(dk_step_affine(&cfg, &s));
    DK_CHECK_OK(dk_pipeline_add(p, s));
    dk_sample x;
    DK_CHECK_OK(dk_sample_init(&x, dk_group_id_limit(fmt)));
    dk_tensor img;
    DK_CHECK_OK(make_image(1600, 900, 1, 0, &img));
    dk_sample_set(&x, ids.image, &img);
    float I[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}, pts[4] = {0, 0, 1599, 899};
    int64_t ms[2] = {4, 4}, ps[2] = {1, 4};
    dk_sample_set_copy(&x, ids.lidar2img, DK_F32, 2, ms, I);
    dk_sample_set_copy(&x, ids.pts, DK_F32, 2, ps, pts);
    int st = dk_pipeline_run(p, &x, "eval");
    if (!st) {
        const float *M = x.values[ids.lidar2img].data;
        DK_CHECK_NEAR(M[0], 704.0 / 1600, 1e-6);
        DK_CHECK_NEAR(M[5], 396.0 / 900, 1e-6);
        DK_CHECK_NEAR(M[2], 0.5 * 0.44 - 0.5, 1e-5);
        DK_CHECK_NEAR(M[6], 0.5 * 0.44 - 0.5 - 140, 1e-4);
    }
    dk_sample_free(&x);
    dk_pipeline_destroy(p);
    dk_group_destroy(fmt);
    DK_CHECK_OK(st);
}

/* ------------------------------------------------------------------------ */
/* (c) determinism                                                           */

typedef struct cam_fmt {
    dk_group *g;
    int cams;
    int image[2], lidar2img[2];
} cam_fmt;

static int two_cam_format(cam_fmt *f)
{
    dk_group *cam;
    memset(f, 0, sizeof *f);
    if (dk_group_create(&f->g) || dk_group_create(&cam)) return -1;
    dk_group_add_tensor(cam, DK_GROUP_ROOT, "image", DK_U8, 3);
    dk_group_add_tensor(cam, DK_GROUP_ROOT, "lidar2img", DK_F32, 2);
    f->cams = dk_group_add_array(f->g, DK_GROUP_ROOT, "cams", cam, DK_GROUP_ROOT, 2);
    dk_group_destroy(cam);
    for (int i = 0; i < 2; i++) {
        char path[64];
        snprintf(path, sizeof path, "cams[%d].image", i);
        f->image[i] = dk_group_find(f->g, DK_GROUP_ROOT, path);
        snprintf(path, sizeof path, "cams[%d].lidar2img", i);
        f->lidar2img[i] = dk_group_find(f->g, DK_GROUP_ROOT, path);
    }
    return f->cams < 0 ? -1 : 0;
}

static int fill_two_cams(const cam_fmt *f, dk_sample *x, int64_t index, int epoch)
{
    int st = dk_sample_init(x, dk_group_id_limit(f->g));
    for (int i = 0; i < 2 && !st; i++) {
        dk_tensor img;
        st = make_image(96, 64, 9, 1, &img);   /* the same picture in both */
        if (!st) st = dk_sample_set(x, f->image[i], &img);
        float I[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
        int64_t ms[2] = {4, 4};
        if (!st) st = dk_sample_set_copy(x, f->lidar2img[i], DK_F32, 2, ms, I);
    }
    x->index = index;
    x->epoch = epoch;
    return st;
}

static dk_pipeline *random_pipeline(const cam_fmt *f, int per_camera, uint64_t seed)
{
    dk_pipeline_config pc;
    dk_pipeline_config_init(&pc);
    pc.seed = seed;
    dk_pipeline *p;
    if (dk_pipeline_create(f->g, &pc, &p)) return NULL;
    dk_affine_config a;
    dk_affine_config_init(&a);
    a.out_w = 80;
    a.out_h = 48;
    dk_affine_config_add(&a, DK_AFFINE_ROTATE, 1, -10, 10, 0, 0);
    dk_affine_config_add(&a, DK_AFFINE_SCALE, 1, 0.8, 1.2, 0, 0);
    dk_affine_config_add(&a, DK_AFFINE_FLIP, 0.5, 0, 0, 0, 0);
    dk_photometric_config ph;
    dk_photometric_config_init(&ph);
    ph.prob_swap = 0.5f;
    float mean[3] = {120, 115, 100}, sd[3] = {60, 61, 62};
    dk_step *s[4] = {NULL, NULL, NULL, NULL};
    int st = dk_step_affine(&a, &s[0]);
    if (!st) st = dk_step_photometric(&ph, &s[1]);
    if (!st) st = dk_step_normalize(mean, sd, 0, &s[2]);
    if (!st) st = dk_step_layout(1, DK_F32, &s[3]);
    for (int i = 0; i < 4 && !st; i++) {
        dk_step *t = s[i];
        s[i] = NULL;
        if (per_camera && i < 2) st = dk_step_per_element(t, "cams", &t);
        if (!st) st = dk_pipeline_add(p, t);
    }
    for (int i = 0; i < 4; i++) dk_step_destroy(s[i]);
    if (st) {
        fprintf(stderr, "  %s\n", dk_errmsg());
        dk_pipeline_destroy(p);
        return NULL;
    }
    return p;
}

static int outputs_equal(const dk_tensor *a, const dk_tensor *b)
{
    return a->dtype == b->dtype && dk_tensor_numel(a) == dk_tensor_numel(b) &&
           !memcmp(a->data, b->data, dk_tensor_nbytes(a));
}

static void test_image_determinism(void)
{
    cam_fmt f;
    DK_CHECK(two_cam_format(&f) == 0);
    dk_pipeline *p = random_pipeline(&f, 0, 1234);
    DK_CHECK(p != NULL);
    const dk_group *of = dk_pipeline_format(p);
    int img0 = dk_group_find(of, DK_GROUP_ROOT, "cams[0].image");
    int img1 = dk_group_find(of, DK_GROUP_ROOT, "cams[1].image");
    DK_CHECK(img0 >= 0 && img1 >= 0);
    enum { N = 5 };
    dk_sample fwd[N], rev[N], other;
    memset(fwd, 0, sizeof fwd);
    memset(rev, 0, sizeof rev);
    memset(&other, 0, sizeof other);
    int st = 0;
    for (int i = 0; i < N && !st; i++) {
        st = fill_two_cams(&f, &fwd[i], i, 3);
        if (!st) st = dk_pipeline_run(p, &fwd[i], "fwd");
    }
    /* Reverse order, on a second pipeline with the same seed. */
    dk_pipeline *p2 = random_pipeline(&f, 0, 1234);
    for (int i = N - 1; i >= 0 && !st && p2; i--) {
        st = fill_two_cams(&f, &rev[i], i, 3);
        if (!st) st = dk_pipeline_run(p2, &rev[i], "rev");
    }
    if (!st) st = fill_two_cams(&f, &other, 0, 4);   /* another epoch */
    if (!st) st = dk_pipeline_run(p, &other, "other");
    int same = 1, distinct = 0, cams_equal = 1;
    if (!st)
        for (int i = 0; i < N; i++) {
            same &= outputs_equal(&fwd[i].values[img0], &rev[i].values[img0]);
            same &= outputs_equal(&fwd[i].values[img1], &rev[i].values[img1]);
            same &= !memcmp(fwd[i].values[f.lidar2img[0]].data, rev[i].values[f.lidar2img[0]].data,
                            64);
            cams_equal &= outputs_equal(&fwd[i].values[img0], &fwd[i].values[img1]);
            for (int j = 0; j < i; j++)
                distinct += !outputs_equal(&fwd[i].values[img0], &fwd[j].values[img0]);
        }
    int epoch_differs = !st && !outputs_equal(&fwd[0].values[img0], &other.values[img0]);
    for (int i = 0; i < N; i++) {
        dk_sample_free(&fwd[i]);
        dk_sample_free(&rev[i]);
    }
    dk_sample_free(&other);
    dk_pipeline_destroy(p);
    dk_pipeline_destroy(p2);
    dk_group_destroy(f.g);
    if (st) DK_FAIL_("%s", dk_errmsg());
    DK_CHECK(p2 != NULL);
    DK_CHECK(same);
    /* One draw per sample: both cameras (same input) get the same output. */
    DK_CHECK(cams_equal);
    DK_CHECK_EQ_INT(distinct, N * (N - 1) / 2);
    DK_CHECK(epoch_differs);
}

static void test_image_per_element_draws(void)
{
    cam_fmt f;
    DK_CHECK(two_cam_format(&f) == 0);
    dk_pipeline *p = random_pipeline(&f, 1, 99);
    DK_CHECK(p != NULL);
    const dk_group *of = dk_pipeline_format(p);
    int img0 = dk_group_find(of, DK_GROUP_ROOT, "cams[0].image");
    int img1 = dk_group_find(of, DK_GROUP_ROOT, "cams[1].image");
    int differ = 0, st = 0;
    for (int i = 0; i < 4 && !st; i++) {
        dk_sample x;
        st = fill_two_cams(&f, &x, i, 0);
        if (!st) st = dk_pipeline_run(p, &x, "pe");
        if (!st) {
            differ += !outputs_equal(&x.values[img0], &x.values[img1]);
            /* each camera's lidar2img follows its own image */
            const float *m0 = x.values[f.lidar2img[0]].data, *m1 = x.values[f.lidar2img[1]].data;
            differ += memcmp(m0, m1, 64) != 0;
        }
        dk_sample_free(&x);
    }
    dk_pipeline_destroy(p);
    dk_group_destroy(f.g);
    if (st) DK_FAIL_("%s", dk_errmsg());
    DK_CHECK_EQ_INT(differ, 8);
}

/* ------------------------------------------------------------------------ */
/* Full pipelines from files and videos                                      */

typedef struct file_fmt {
    dk_group *g;
    int filename[2], video[2], frame[2], lidar2img[2], intrinsic[2];
} file_fmt;

static int file_format(file_fmt *f)
{
    dk_group *cam;
    memset(f, 0, sizeof *f);
    if (dk_group_create(&f->g) || dk_group_create(&cam)) return -1;
    dk_group_add_string(f->g, DK_GROUP_ROOT, "token");
    dk_group_add_string(cam, DK_GROUP_ROOT, "filename");
    dk_group_add_string(cam, DK_GROUP_ROOT, "video");
    dk_group_add_tensor(cam, DK_GROUP_ROOT, "video_frame", DK_I64, 0);
    dk_group_add_tensor(cam, DK_GROUP_ROOT, "intrinsic", DK_F32, 2);
    dk_group_add_tensor(cam, DK_GROUP_ROOT, "lidar2img", DK_F32, 2);
    int st = dk_group_add_array(f->g, DK_GROUP_ROOT, "cams", cam, DK_GROUP_ROOT, 2);
    dk_group_destroy(cam);
    for (int i = 0; i < 2; i++) {
        char path[64];
        snprintf(path, sizeof path, "cams[%d].filename", i);
        f->filename[i] = dk_group_find(f->g, DK_GROUP_ROOT, path);
        snprintf(path, sizeof path, "cams[%d].video", i);
        f->video[i] = dk_group_find(f->g, DK_GROUP_ROOT, path);
        snprintf(path, sizeof path, "cams[%d].video_frame", i);
        f->frame[i] = dk_group_find(f->g, DK_GROUP_ROOT, path);
        snprintf(path, sizeof path, "cams[%d].lidar2img", i);
        f->lidar2img[i] = dk_group_find(f->g, DK_GROUP_ROOT, path);
        snprintf(path, sizeof path, "cams[%d].intrinsic", i);
        f->intrinsic[i] = dk_group_find(f->g, DK_GROUP_ROOT, path);
    }
    return st < 0 ? -1 : 0;
}

static int fill_files(const file_fmt *f, dk_sample *x, const char *const files[2],
                      const char *const videos[2], const int64_t frames[2])
{
    int st = dk_sample_init(x, dk_group_id_limit(f->g));
    if (!st) st = dk_sample_set_string(x, dk_group_find(f->g, DK_GROUP_ROOT, "token"), "t0");
    for (int i = 0; i < 2 && !st; i++) {
        float K[9] = {500, 0, 320, 0, 500, 180, 0, 0, 1};
        float P[16] = {500, 0, 320, 0, 0, 500, 180, 0, 0, 0, 1, 0, 0, 0, 0, 1};
        int64_t ks[2] = {3, 3}, ps[2] = {4, 4};
        st = dk_sample_set_string(x, f->filename[i], files[i]);
        if (!st) st = dk_sample_set_string(x, f->video[i], videos ? videos[i] : "");
        if (!st) st = dk_sample_set_copy(x, f->frame[i], DK_I64, 0, ks, &frames[i]);
        if (!st) st = dk_sample_set_copy(x, f->intrinsic[i], DK_F32, 2, ks, K);
        if (!st) st = dk_sample_set_copy(x, f->lidar2img[i], DK_F32, 2, ps, P);
    }
    return st;
}

static dk_pipeline *streampetr_pipeline(const file_fmt *f, dk_image_source src)
{
    dk_pipeline *p;
    if (dk_pipeline_create(f->g, NULL, &p)) return NULL;
    dk_image_decode_config dc;
    dk_image_decode_config_init(&dc);
    dc.source = src;
    dk_affine_config ac;
    dk_affine_config_streampetr(&ac);
    dk_photometric_config pc;
    dk_photometric_config_init(&pc);
    float mean[3] = {103.530f, 116.280f, 123.675f}, sd[3] = {57.375f, 57.120f, 58.395f};
    dk_step *s[6] = {0};
    int st = dk_step_image_decode(&dc, &s[0]);
    if (!st) st = dk_step_affine(&ac, &s[1]);
    if (!st) st = dk_step_photometric(&pc, &s[2]);
    if (!st) st = dk_step_normalize(mean, sd, 1, &s[3]);
    if (!st) st = dk_step_pad(32, 0, 0, 0, &s[4]);
    if (!st) st = dk_step_layout(1, DK_F32, &s[5]);
    for (int i = 0; i < 6 && !st; i++) {
        st = dk_pipeline_add(p, s[i]);
        s[i] = NULL;
    }
    for (int i = 0; i < 6; i++) dk_step_destroy(s[i]);
    if (st) {
        fprintf(stderr, "  %s\n", dk_errmsg());
        dk_pipeline_destroy(p);
        return NULL;
    }
    return p;
}

static void test_image_pipeline_streampetr_files(void)
{
    dk_tensor img;
    DK_CHECK_OK(make_image(1600, 900, 2, 0, &img));
    const char *a = tmp_path("cam_a.jpg");
    DK_CHECK_OK(write_jpeg(a, &img, 90));
    dk_tensor_release(&img);
    DK_CHECK_OK(make_image(1600, 900, 4, 0, &img));
    const char *b = tmp_path("cam_b.png");
    DK_CHECK_OK(dk_image_save(b, &img, 0));
    dk_tensor_release(&img);
    file_fmt f;
    DK_CHECK(file_format(&f) == 0);
    dk_pipeline *p = streampetr_pipeline(&f, DK_IMAGE_SOURCE_FILE);
    DK_CHECK(p != NULL);
    const dk_group *of = dk_pipeline_format(p);
    int im = dk_group_find(of, DK_GROUP_ROOT, "cams[1].image");
    dk_field_info fi;
    DK_CHECK_OK(dk_group_info(of, im, &fi));
    DK_CHECK_EQ_INT(fi.dtype, DK_F32);
    DK_CHECK_EQ_INT(fi.ndim, 3);
    const char *files[2] = {a, b};
    int64_t frames[2] = {-1, -1};
    dk_sample x;
    DK_CHECK_OK(fill_files(&f, &x, files, NULL, frames));
    x.index = 3;
    int st = dk_pipeline_run(p, &x, "tokA");
    if (!st) {
        const dk_tensor *t = &x.values[im];
        DK_CHECK_EQ_INT(t->shape[0], 3);
        DK_CHECK_EQ_INT(t->shape[1], 256);
        DK_CHECK_EQ_INT(t->shape[2], 704);
        /* normalised values of a 0..255 picture */
        const float *v = t->data;
        double mn = 1e9, mx = -1e9;
        for (int64_t k = 0; k < 3 * 256 * 704; k++) {
            mn = fmin(mn, v[k]);
            mx = fmax(mx, v[k]);
        }
        DK_CHECK(mn > -3 && mn < 0 && mx > 0 && mx < 3.5);
        /* intrinsic and lidar2img moved by the same map (rows 0 and 1) */
        const float *K = x.values[f.intrinsic[1]].data, *P = x.values[f.lidar2img[1]].data;
        DK_CHECK_NEAR(K[0], P[0], 1e-3);
        DK_CHECK_NEAR(K[2], P[2], 1e-3);
        DK_CHECK_NEAR(K[4], P[5], 1e-3);
        DK_CHECK_NEAR(K[5], P[6], 1e-3);
        DK_CHECK(fabs(K[0]) < 500 * 0.56 && fabs(K[0]) > 500 * 0.37);
    }
    dk_sample_free(&x);
    dk_pipeline_destroy(p);
    dk_group_destroy(f.g);
    remove(a);
    remove(b);
    if (st) DK_FAIL_("%s", dk_errmsg());
}

/* Windowed JPEG decodes: the fused pass decodes only the rectangle the
 * output samples (columns widened to an iMCU, rows above it skipped, rows
 * below it not read) at the cheapest DCT scale that covers the warp's
 * resolution. The output must equal the reference warp of a FULL decode at
 * that scale (TurboJPEG) within one level: the window's pixels, its offset
 * and the scale all show in a noisy picture. */
static void test_image_jpeg_window_decode(void)
{
    dk_tensor img;
    int W = 640, H = 360;
    DK_CHECK_OK(make_image(W, H, 21, 1, &img));
    const char *path = tmp_path("window.jpg");
    DK_CHECK_OK(write_jpeg(path, &img, 90));
    dk_tensor_release(&img);
    /* s: scale of the map; (cx, cy): the source point shown at the output's
       top-left corner; n: the scale n/8 the decode must use. */
    static const struct {
        double s, cx, cy;
        int out_w, out_h, flip, n, nearest;
    } cases[] = {
        {0.45, 40, 200, 200, 60, 0, 4, 0},    /* bottom band, a window */
        {0.45, 0, 0, 288, 50, 1, 4, 0},       /* top band, full width, mirrored */
        {0.40, 123.7, 97.3, 90, 70, 0, 4, 0}, /* a window in the middle */
        {0.30, 300, 250, 100, 60, 0, 4, 0},   /* 3/8 would do, 4/8 is cheaper */
        {0.22, 17, 11, 120, 60, 1, 2, 0},
        {0.11, 0, 100, 70, 28, 0, 1, 0},
        {0.52, 150, 120, 200, 100, 0, 8, 0},  /* 5/8 would do, 8/8 is cheaper */
        {0.70, 400, 290, 300, 60, 0, 8, 0},   /* runs past the bottom right */
        {0.45, -30, -20, 100, 60, 0, 8, 1},   /* nearest: full size; past the top left */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int variant = 0; variant < 2; variant++) {
            ref_params r;
            ref_init(&r);
            double sx = cases[k].flip ? -cases[k].s : cases[k].s;
            r.A[0] = sx;
            r.A[4] = cases[k].s;
            r.A[2] = cases[k].flip ? cases[k].out_w + cases[k].s * cases[k].cx
                                   : -cases[k].s * cases[k].cx;
            r.A[5] = -cases[k].s * cases[k].cy;
            r.out_w = cases[k].out_w;
            r.out_h = cases[k].out_h;
            r.nearest = cases[k].nearest;
            r.fill[0] = 30;
            r.fill[1] = 140;
            r.fill[2] = 250;
            /* Variant 1: float CHW, normalised, padded (the direct path). */
            if (variant) {
                r.dtype = DK_F32;
                r.chw = 1;
                r.normalize = 1;
                for (int c = 0; c < 3; c++) {
                    r.mean[c] = 100 + 7 * c;
                    r.std[c] = 55 + c;
                }
                r.pad_w = r.out_w + 9;
                r.pad_h = r.out_h + 2;
                r.pad_value = -3;
            }
            dk_tensor out;
            int st = run_plan(NULL, path, W, H, &r, "tok-w", &out);
            if (st) DK_FAIL_("case %zu: %s", k, dk_errmsg());
            /* The full decode at n/8 and the map from its pixels. */
            int n = cases[k].n;
            dk_jpeg_decode_opts o;
            dk_jpeg_decode_opts_init(&o);
            o.scale_num = n;
            o.scale_den = 8;
            dk_tensor dec;
            uint8_t *data;
            size_t size;
            dk_jpeg *jp;
            DK_CHECK_OK(dk_file_read(path, &data, &size));
            DK_CHECK_OK(dk_jpeg_create(&jp));
            DK_CHECK_OK(dk_jpeg_decode(jp, data, size, &o, &dec));
            dk_jpeg_destroy(jp);
            dk_free(data);
            ref_params rs = r;
            for (int i = 0; i < 2; i++) {
                rs.A[i] *= 8.0 / n;
                rs.A[3 + i] *= 8.0 / n;
            }
            int pw, ph;
            double *ref = ref_run(&dec, &rs, &pw, &ph);
            size_t cnt = (size_t)pw * ph * 3;
            double d = ref ? max_diff(&out, ref, cnt) : 1e9;
            /* uint8: rounding of equal values; float: one level = 1/std. */
            double tol = variant ? 1.0 / 55 : 1.0;
            free(ref);
            dk_tensor_release(&dec);
            dk_tensor_release(&out);
            if (!(d <= tol))
                DK_FAIL_("case %zu variant %d (scale %g, decode %d/8): max difference %g to the "
                         "warp of a full decode (tolerance %g)", k, variant, cases[k].s, n, d,
                         tol);
        }
    }
    remove(path);
}

/* Geometry through windowed decodes: a Gaussian dot in a JPEG lands where the
 * plan's map sends it, whatever window and scale the decode used. */
static void test_image_jpeg_window_geometry(void)
{
    int W = 800, H = 450;
    double dx = 517.3, dy = 331.8;
    dk_tensor img;
    DK_CHECK_OK(dot_image(W, H, dx, dy, 4.0, &img));
    const char *path = tmp_path("dot.jpg");
    DK_CHECK_OK(write_jpeg(path, &img, 95));
    dk_tensor_release(&img);
    /* StreamPETR-like: resize r, crop out_w x out_h at (crop_x, crop_y) of the
       resized image, maybe mirrored. */
    static const struct {
        double r, crop_x, crop_y;
        int flip;
    } cases[] = {{0.45, 10, 202.5 - 128, 0}, {0.45, 0, 202.5 - 128, 1}, {0.52, 60, 234 - 128, 0},
                 {0.52, 100, 80, 1},         {0.2, 0, 0, 0},            {0.38, 50, 171 - 128, 1},
                 {0.9, 250, 200, 0},         {0.62, 150, 90, 1}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        ref_params r;
        ref_init(&r);
        r.out_w = cases[k].r < 0.3 ? 150 : 250;
        r.out_h = cases[k].r < 0.3 ? 80 : 128;
        double r0 = cases[k].r;
        r.A[0] = cases[k].flip ? -r0 : r0;
        r.A[4] = r0;
        r.A[2] = cases[k].flip ? r.out_w + cases[k].crop_x : -cases[k].crop_x;
        r.A[5] = -cases[k].crop_y;
        r.dtype = DK_F32;
        dk_tensor out;
        int st = run_plan(NULL, path, W, H, &r, "tok-g", &out);
        if (st) DK_FAIL_("case %zu: %s", k, dk_errmsg());
        double ux = r.A[0] * dx + r.A[2], uy = r.A[4] * dy + r.A[5], cx = -1, cy = -1;
        int found = centroid(&out, &cx, &cy);
        dk_tensor_release(&out);
        if (!(ux > 6 && ux < r.out_w - 6 && uy > 6 && uy < r.out_h - 6))
            DK_FAIL_("case %zu: the dot (%g, %g) is not inside the output", k, ux, uy);
        if (!found || fabs(cx - ux) > 0.08 || fabs(cy - uy) > 0.08)
            DK_FAIL_("case %zu (r %g): dot at (%.3f, %.3f), the map says (%.3f, %.3f)", k,
                     cases[k].r, cx, cy, ux, uy);
    }
    remove(path);
}

/* A file cut short: rows below the band the output needs are never read, so
 * a cut there leaves the output exactly as with the whole file; a cut inside
 * or above the band is DK_EINVALIDDATA naming the file and the sample. */
static void test_image_jpeg_window_truncated(void)
{
    int W = 320, H = 480;
    dk_tensor img;
    DK_CHECK_OK(make_image(W, H, 8, 1, &img));
    const char *whole = tmp_path("tall.jpg"), *cut = tmp_path("tall_cut.jpg");
    DK_CHECK_OK(write_jpeg(whole, &img, 90));
    dk_tensor_release(&img);
    uint8_t *data;
    size_t n;
    DK_CHECK_OK(dk_file_read(whole, &data, &n));
    DK_CHECK_OK(dk_file_write(cut, data, n * 7 / 10));
    /* Top band: source rows 0..~100 at scale 1/2 (4/8 decode). */
    ref_params top;
    ref_init(&top);
    top.A[0] = top.A[4] = 0.5;
    top.out_w = 160;
    top.out_h = 50;
    dk_tensor a, b;
    DK_CHECK_OK(run_plan(NULL, whole, W, H, &top, "tok-t", &a));
    int st = run_plan(NULL, cut, W, H, &top, "tok-t", &b);
    if (st) {
        dk_tensor_release(&a);
        dk_free(data);
        DK_FAIL_("a cut below the band: %s", dk_errmsg());
    }
    DK_CHECK(outputs_equal(&a, &b));
    dk_tensor_release(&a);
    dk_tensor_release(&b);
    /* Bottom band: the cut is inside it. */
    ref_params bot = top;
    bot.A[5] = -0.5 * 380;
    DK_CHECK_OK(run_plan(NULL, whole, W, H, &bot, "tok-b", &a));
    dk_tensor_release(&a);
    DK_CHECK_STATUS(run_plan(NULL, cut, W, H, &bot, "tok-b", &b), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), cut);
    DK_CHECK_CONTAINS(dk_errmsg(), "tok-b");
    DK_CHECK_CONTAINS(dk_errmsg(), "JPEG");
    /* Cut above the band: the rows in between are missing too. */
    DK_CHECK_OK(dk_file_write(cut, data, n / 5));
    DK_CHECK_STATUS(run_plan(NULL, cut, W, H, &bot, "tok-c", &b), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), cut);
    DK_CHECK_CONTAINS(dk_errmsg(), "tok-c");
    /* A whole-image plan reads to the end of the file: any cut is an error. */
    ref_params all;
    ref_init(&all);
    all.A[0] = all.A[4] = 0.5;
    all.out_w = 160;
    all.out_h = 240;
    DK_CHECK_OK(dk_file_write(cut, data, n - 2));   /* only the EOI marker gone */
    DK_CHECK_STATUS(run_plan(NULL, cut, W, H, &all, "tok-e", &b), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), cut);
    dk_free(data);
    remove(whole);
    remove(cut);
}

/* ------------------------------------------------------------------------ */
/* (d) errors                                                                */

static void test_image_errors_files(void)
{
    dk_tensor img;
    DK_CHECK_OK(make_image(320, 200, 6, 1, &img));
    const char *good = tmp_path("good.jpg");
    const char *trunc = tmp_path("trunc.jpg");
    const char *junk = tmp_path("junk.jpg");
    const char *missing = tmp_path("missing.jpg");
    DK_CHECK_OK(write_jpeg(good, &img, 90));
    dk_tensor_release(&img);
    uint8_t *data;
    size_t n;
    DK_CHECK_OK(dk_file_read(good, &data, &n));
    DK_CHECK_OK(dk_file_write(trunc, data, n / 2));
    memset(data + 2, 0x5a, 64);
    DK_CHECK_OK(dk_file_write(junk, data, n));
    dk_free(data);
    remove(missing);
    file_fmt f;
    DK_CHECK(file_format(&f) == 0);
    dk_pipeline *p = streampetr_pipeline(&f, DK_IMAGE_SOURCE_AUTO);
    DK_CHECK(p != NULL);
    struct {
        const char *bad;
        int status;
    } cases[] = {{missing, DK_ENOENT}, {trunc, DK_EINVALIDDATA}, {junk, DK_EINVALIDDATA}};
    for (int k = 0; k < 3; k++) {
        const char *files[2] = {good, cases[k].bad};
        int64_t frames[2] = {-1, -1};
        dk_sample x;
        DK_CHECK_OK(fill_files(&f, &x, files, NULL, frames));
        int st = dk_pipeline_run(p, &x, "tok-err-42");
        char msg[DK_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", dk_errmsg());
        dk_sample_free(&x);
        if (st != cases[k].status) {
            dk_pipeline_destroy(p);
            dk_group_destroy(f.g);
            DK_FAIL_("%s: status %d, want %d: %s", cases[k].bad, st, cases[k].status, msg);
        }
        DK_CHECK_CONTAINS(msg, cases[k].bad);
        DK_CHECK_CONTAINS(msg, "tok-err-42");
        DK_CHECK_CONTAINS(msg, "cams[1].image");
    }
    /* The good file still runs on the same pipeline afterwards. */
    const char *files[2] = {good, good};
    int64_t frames[2] = {-1, -1};
    dk_sample x;
    DK_CHECK_OK(fill_files(&f, &x, files, NULL, frames));
    int st = dk_pipeline_run(p, &x, "ok");
    dk_sample_free(&x);
    dk_pipeline_destroy(p);
    dk_group_destroy(f.g);
    remove(good);
    remove(trunc);
    remove(junk);
    DK_CHECK_OK(st);
}

/* Same errors at the fused pass itself (the file changed after planning). */
static void test_image_errors_materialize(void)
{
    dk_tensor img;
    DK_CHECK_OK(make_image(64, 48, 6, 1, &img));
    const char *path = tmp_path("mat.jpg");
    DK_CHECK_OK(write_jpeg(path, &img, 90));
    dk_tensor_release(&img);
    uint8_t *data;
    size_t n;
    DK_CHECK_OK(dk_file_read(path, &data, &n));
    DK_CHECK_OK(dk_file_write(path, data, n - n / 3));
    dk_free(data);
    ref_params r;
    ref_init(&r);
    r.out_w = 64;
    r.out_h = 48;
    dk_tensor out;
    DK_CHECK_STATUS(run_plan(NULL, path, 64, 48, &r, "tok-m", &out), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), path);
    DK_CHECK_CONTAINS(dk_errmsg(), "tok-m");
    DK_CHECK_CONTAINS(dk_errmsg(), "image");
    remove(path);
    DK_CHECK_STATUS(run_plan(NULL, path, 64, 48, &r, "tok-m", &out), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), path);
    /* A plan whose size no longer matches its file. */
    DK_CHECK_OK(make_image(64, 48, 6, 1, &img));
    DK_CHECK_OK(write_jpeg(path, &img, 90));
    dk_tensor_release(&img);
    DK_CHECK_STATUS(run_plan(NULL, path, 65, 48, &r, "tok-m", &out), DK_EINVALIDDATA);
    remove(path);
}

static int make_video(const char *path, int corrupt)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "ffmpeg -v error -y -f lavfi -i testsrc2=size=160x96:rate=25 -t 3 -c:v libx264 "
             "-bf 0 -g 15 -pix_fmt yuv420p -movflags +faststart '%s' >/dev/null 2>&1",
             path);
    if (system(cmd) != 0) return -1;
    if (!corrupt) return 0;
    uint8_t *d;
    size_t n;
    if (dk_file_read(path, &d, &n)) return -1;
    dk_rng r;
    dk_rng_init(&r, 5, 5);
    for (size_t i = n * 50 / 100; i < n * 50 / 100 + 3000 && i < n; i++) d[i] = (uint8_t)dk_rng_u32(&r);
    int st = dk_file_write(path, d, n);
    dk_free(d);
    return st;
}

/* The pipeline's video cache: open handles trimmed beyond max_open and
 * reused without a new open, known handles closed beyond max_known or the
 * index budget, a changed file opened anew. */
static int cache_get_frame(dk__video_cache *vc, const char *path, dk_video **v, uint8_t *px)
{
    int st = dk__video_cache_get(vc, path, v);
    if (st) return st;
    int64_t f = 40;
    st = dk_video_get_frames_into(*v, NULL, &f, 1, px, 0, NULL);
    dk__video_cache_put(vc, *v);
    return st;
}

static void video_cache_bounds(char (*paths)[512], int n_paths)
{
    DK_CHECK(n_paths >= 6);
    dk__video_cache *vc;
    DK_CHECK_OK(dk__video_cache_create(2, 4, (size_t)1 << 30, &vc));
    static uint8_t ref[160 * 96 * 3], px[160 * 96 * 3];
    dk_video *h[6], *w;
    int open, known;
    size_t bytes;
    for (int j = 0; j < 4; j++) {
        DK_CHECK_OK(cache_get_frame(vc, paths[j], &h[j], j ? px : ref));
        if (j) DK_CHECK(!memcmp(px, ref, sizeof px));
        dk__video_cache_counts(vc, &open, &known, &bytes);
        DK_CHECK_EQ_INT(open, j < 2 ? j + 1 : 2);
        DK_CHECK_EQ_INT(known, j + 1);
        DK_CHECK(bytes > 0);
    }
    /* 0 and 1 were trimmed: no decoders, and 0 comes back as the same handle,
       opened again without a scan. */
    dk_video_memory m;
    dk_video_get_memory(h[0], &m);
    DK_CHECK_EQ_INT(m.decoders, 0);
    DK_CHECK_OK(dk__video_cache_get(vc, paths[0], &w));
    DK_CHECK(w == h[0]);
    dk_video_get_memory(w, &m);
    DK_CHECK_EQ_INT(m.decoders, 0);
    dk__video_cache_put(vc, w);
    DK_CHECK_OK(cache_get_frame(vc, paths[0], &w, px));
    DK_CHECK(w == h[0] && !memcmp(px, ref, sizeof px));
    dk__video_cache_counts(vc, &open, &known, NULL);
    DK_CHECK_EQ_INT(open, 2);
    DK_CHECK_EQ_INT(known, 4);
    /* A fifth video: the least recently used (1) is closed; 2 and 3 stay
       trimmed. */
    DK_CHECK_OK(cache_get_frame(vc, paths[4], &h[4], px));
    DK_CHECK(!memcmp(px, ref, sizeof px));
    dk__video_cache_counts(vc, &open, &known, NULL);
    DK_CHECK_EQ_INT(open, 2);
    DK_CHECK_EQ_INT(known, 4);
    dk_video_get_memory(h[2], &m);
    DK_CHECK_EQ_INT(m.decoders, 0);
    dk_video_get_memory(h[3], &m);
    DK_CHECK_EQ_INT(m.decoders, 0);
    DK_CHECK_OK(dk__video_cache_get(vc, paths[1], &w));   /* opened anew: has a decoder */
    dk_video_get_memory(w, &m);
    DK_CHECK(m.decoders >= 1);
    dk__video_cache_put(vc, w);                           /* this closed 2, the oldest */
    DK_CHECK_OK(dk__video_cache_get(vc, paths[3], &w));
    DK_CHECK(w == h[3]);
    dk__video_cache_put(vc, w);
    /* A held handle is neither trimmed nor closed. */
    dk_video *held;
    DK_CHECK_OK(dk__video_cache_get(vc, paths[2], &held));
    int64_t f40 = 40;
    DK_CHECK_OK(dk_video_get_frames_into(held, NULL, &f40, 1, px, 0, NULL));
    for (int j = 3; j < 6; j++) DK_CHECK_OK(cache_get_frame(vc, paths[j], &w, px));
    dk_video_get_memory(held, &m);
    DK_CHECK(m.decoders >= 1);
    DK_CHECK_OK(dk__video_cache_get(vc, paths[2], &w));
    DK_CHECK(w == held);
    dk__video_cache_put(vc, w);
    dk__video_cache_put(vc, held);
    /* A trimmed video whose file changed is opened anew (a fresh handle has
       its first decoder), and decodes the new file. */
    for (int j = 3; j < 6; j++) DK_CHECK_OK(cache_get_frame(vc, paths[j], &w, px));
    dk__video_cache_counts(vc, &open, &known, NULL);
    DK_CHECK(open <= 2);
    DK_CHECK_OK(dk__video_cache_get(vc, paths[3], &w));
    dk__video_cache_put(vc, w);   /* 3 is open: trim it by using 4 and 5 */
    DK_CHECK_OK(cache_get_frame(vc, paths[4], &w, px));
    DK_CHECK_OK(cache_get_frame(vc, paths[5], &w, px));
    struct timespec ts[2] = {{0, UTIME_OMIT}, {12345, 6789}};
    DK_CHECK(utimensat(AT_FDCWD, paths[3], ts, 0) == 0);
    DK_CHECK_OK(dk__video_cache_get(vc, paths[3], &w));
    dk_video_get_memory(w, &m);
    DK_CHECK(m.decoders >= 1);
    dk__video_cache_put(vc, w);
    DK_CHECK_OK(cache_get_frame(vc, paths[3], &w, px));
    DK_CHECK(!memcmp(px, ref, sizeof px));
    /* An open handle whose file changed is replaced too; one still held is
       replaced for later gets and closed on its last put. */
    dk_video *a, *b;
    ts[1].tv_sec++;
    DK_CHECK(utimensat(AT_FDCWD, paths[3], ts, 0) == 0);
    DK_CHECK_OK(cache_get_frame(vc, paths[3], &a, px));
    DK_CHECK(!memcmp(px, ref, sizeof px));
    DK_CHECK_OK(dk__video_cache_get(vc, paths[3], &a));
    dk__video_cache_counts(vc, NULL, &known, NULL);
    ts[1].tv_sec++;
    DK_CHECK(utimensat(AT_FDCWD, paths[3], ts, 0) == 0);
    DK_CHECK_OK(dk__video_cache_get(vc, paths[3], &b));
    DK_CHECK(a != b);
    int known2;
    dk__video_cache_counts(vc, NULL, &known2, NULL);
    DK_CHECK_EQ_INT(known2, known);   /* b in, the oldest idle one out (max_known 4) */
    int64_t f40b = 40;
    DK_CHECK_OK(dk_video_get_frames_into(a, NULL, &f40b, 1, px, 0, NULL));   /* held: usable */
    dk__video_cache_put(vc, a);   /* its last put: closed */
    dk__video_cache_counts(vc, NULL, &known2, NULL);
    DK_CHECK_EQ_INT(known2, known - 1);
    DK_CHECK_OK(dk_video_get_frames_into(b, NULL, &f40b, 1, px, 0, NULL));
    DK_CHECK(!memcmp(px, ref, sizeof px));
    dk__video_cache_put(vc, b);
    dk__video_cache_destroy(vc);

    /* An index budget smaller than one index: only held handles stay. */
    DK_CHECK_OK(dk__video_cache_create(2, 100, 1, &vc));
    for (int j = 0; j < 6; j++) {
        DK_CHECK_OK(cache_get_frame(vc, paths[j], &w, px));
        DK_CHECK(!memcmp(px, ref, sizeof px));
        dk__video_cache_counts(vc, &open, &known, &bytes);
        DK_CHECK_EQ_INT(known, 1);
        DK_CHECK_EQ_INT(open, 1);
        dk_video_get_memory(w, &m);   /* the one left, and all the bytes counted */
        DK_CHECK_EQ_INT(bytes, m.index_bytes);
    }
    dk__video_cache_destroy(vc);
}

static void test_image_video_source(void)
{
    const char *clean = tmp_path("clip.mp4");
    const char *bad = tmp_path("clip_bad.mp4");
    if (make_video(clean, 0) || make_video(bad, 1)) {
        printf("     (ffmpeg with libx264 unavailable: video source not tested)\n");
        return;
    }
    /* Frames of the damaged clip that fail, and one that decodes. */
    dk_video *v;
    DK_CHECK_OK(dk_video_open(bad, NULL, &v));
    int64_t bad_frame = -1;
    dk_video_info vi;
    dk_video_get_info(v, &vi);
    for (int64_t fr = 0; fr < vi.n_frames && bad_frame < 0; fr++) {
        dk_tensor t;
        int fst = DK_OK;
        dk_video_get_frames(v, NULL, &fr, 1, &t, &fst);
        if (fst) bad_frame = fr;
        dk_tensor_release(&t);
    }
    dk_video_close(v);
    /* Identity plan from the clean video equals the decoded frame. */
    dk_group *g;
    DK_CHECK_OK(dk_group_create(&g));
    int vid = dk_group_add_string(g, DK_GROUP_ROOT, "video");
    int fid = dk_group_add_tensor(g, DK_GROUP_ROOT, "video_frame", DK_I64, 0);
    dk_pipeline *p;
    DK_CHECK_OK(dk_pipeline_create(g, NULL, &p));
    dk_image_decode_config dc;
    dk_image_decode_config_init(&dc);
    dc.source = DK_IMAGE_SOURCE_VIDEO;
    dk_step *s;
    DK_CHECK_OK(dk_step_image_decode(&dc, &s));
    DK_CHECK_OK(dk_pipeline_add(p, s));
    int im = dk_group_find(dk_pipeline_format(p), DK_GROUP_ROOT, "image");
    dk_sample x;
    int64_t fr = 17, one[1] = {1};
    DK_CHECK_OK(dk_sample_init(&x, dk_group_id_limit(g)));
    dk_sample_set_string(&x, vid, clean);
    dk_sample_set_copy(&x, fid, DK_I64, 0, one, &fr);
    int st = dk_pipeline_run(p, &x, "vtok");
    if (!st) {
        DK_CHECK_OK(dk_video_open(clean, NULL, &v));
        dk_tensor t;
        DK_CHECK_OK(dk_video_get_frames(v, NULL, &fr, 1, &t, NULL));
        DK_CHECK_EQ_INT(x.values[im].shape[0], 96);
        DK_CHECK_EQ_INT(x.values[im].shape[1], 160);
        DK_CHECK(!memcmp(t.data, x.values[im].data, 160 * 96 * 3));
        dk_tensor_release(&t);
        dk_video_close(v);
    }
    dk_sample_free(&x);
    if (st) {
        dk_pipeline_destroy(p);
        dk_group_destroy(g);
        DK_FAIL_("%s", dk_errmsg());
    }
    /* Many videos: at most DK__MAX_OPEN_VIDEOS stay open, and a video closed
       on the way opens again with the same frames. */
    {
        enum { NV = DK__MAX_OPEN_VIDEOS + 8 };
        uint8_t *clip;
        size_t clip_n;
        DK_CHECK_OK(dk_file_read(clean, &clip, &clip_n));
        char paths[NV][512];
        uint8_t *first = NULL;
        for (int k = 0; k <= NV && !st; k++) {
            int j = k % NV;   /* the last run asks for the first video again */
            if (k < NV) {
                snprintf(paths[j], sizeof paths[j], "%s.%d.mp4", clean, j);
                DK_CHECK_OK(dk_file_write(paths[j], clip, clip_n));
            }
            DK_CHECK_OK(dk_sample_init(&x, dk_group_id_limit(g)));
            dk_sample_set_string(&x, vid, paths[j]);
            dk_sample_set_copy(&x, fid, DK_I64, 0, one, &fr);
            st = dk_pipeline_run(p, &x, "many");
            if (!st && k == 0) {
                first = dk_malloc(160 * 96 * 3);
                DK_CHECK(first != NULL);
                memcpy(first, x.values[im].data, 160 * 96 * 3);
            } else if (!st && first) {
                DK_CHECK(!memcmp(first, x.values[im].data, 160 * 96 * 3));
            }
            dk_sample_free(&x);
            DK_CHECK(dk__pipeline_open_videos(p) <= DK__MAX_OPEN_VIDEOS);
        }
        DK_CHECK_OK(st);
        DK_CHECK_EQ_INT(dk__pipeline_open_videos(p), DK__MAX_OPEN_VIDEOS);
        video_cache_bounds(paths, NV);
        for (int j = 0; j < NV; j++) remove(paths[j]);
        dk_free(first);
        dk_free(clip);
    }
    /* A damaged frame: an error naming the file, the frame and the sample. */
    if (bad_frame >= 0) {
        DK_CHECK_OK(dk_sample_init(&x, dk_group_id_limit(g)));
        dk_sample_set_string(&x, vid, bad);
        dk_sample_set_copy(&x, fid, DK_I64, 0, one, &bad_frame);
        st = dk_pipeline_run(p, &x, "vtok-bad");
        dk_sample_free(&x);
        DK_CHECK(st == DK_EINVALIDDATA || st == DK_EIO);
        char want[64];
        snprintf(want, sizeof want, "frame %lld", (long long)bad_frame);
        DK_CHECK_CONTAINS(dk_errmsg(), bad);
        DK_CHECK_CONTAINS(dk_errmsg(), want);
        DK_CHECK_CONTAINS(dk_errmsg(), "vtok-bad");
    } else {
        printf("     (the damaged clip decoded without errors)\n");
    }
    /* A frame outside the video. */
    DK_CHECK_OK(dk_sample_init(&x, dk_group_id_limit(g)));
    fr = 100000;
    dk_sample_set_string(&x, vid, clean);
    dk_sample_set_copy(&x, fid, DK_I64, 0, one, &fr);
    DK_CHECK_STATUS(dk_pipeline_run(p, &x, "vtok"), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "100000");
    dk_sample_free(&x);
    dk_pipeline_destroy(p);
    dk_group_destroy(g);
    remove(clean);
    remove(bad);
}

static void test_image_bad_configs(void)
{
    dk_step *s = (dk_step *)1;
    dk_affine_config a;
    dk_affine_config_init(&a);
    dk_affine_config_add(&a, DK_AFFINE_SCALE, 1, 1.2, 0.8, 0, 0);   /* empty */
    DK_CHECK_STATUS(dk_step_affine(&a, &s), DK_EINVAL);
    DK_CHECK(s == NULL);
    dk_affine_config_init(&a);
    dk_affine_config_add(&a, DK_AFFINE_SCALE_XY, 1, -1, 1, 1, 1);   /* holds 0 */
    DK_CHECK_STATUS(dk_step_affine(&a, &s), DK_EINVAL);
    dk_affine_config_init(&a);
    dk_affine_config_add(&a, DK_AFFINE_ROTATE, 1.5, 0, 1, 0, 0);   /* prob */
    DK_CHECK_STATUS(dk_step_affine(&a, &s), DK_EINVAL);
    dk_affine_config_init(&a);
    dk_affine_config_add(&a, DK_AFFINE_ROTATE, 1, 0, 10, 0, 0);
    dk_affine_config_add(&a, DK_AFFINE_SHIFT_INSIDE, 1, 0, 0, 0, 0);   /* after rotation */
    DK_CHECK_STATUS(dk_step_affine(&a, &s), DK_EINVAL);
    dk_affine_config_init(&a);
    dk_affine_config_add(&a, DK_AFFINE_RESIZE_CROP, 1, 0.3, 0.5, 0, 0);   /* no out size */
    DK_CHECK_STATUS(dk_step_affine(&a, &s), DK_EINVAL);
    dk_affine_config_init(&a);
    a.out_w = 10;   /* only one of them */
    DK_CHECK_STATUS(dk_step_affine(&a, &s), DK_EINVAL);
    dk_affine_config_init(&a);
    a.matrix_fields = "lidar2img,,x";
    DK_CHECK_STATUS(dk_step_affine(&a, &s), DK_EINVAL);
    dk_affine_config_init(&a);
    a.fill[1] = NAN;
    DK_CHECK_STATUS(dk_step_affine(&a, &s), DK_EINVAL);
    DK_CHECK_STATUS(dk_step_affine(NULL, &s), DK_EINVAL);

    dk_photometric_config pc;
    dk_photometric_config_init(&pc);
    pc.contrast_lo = 2;   /* empty */
    DK_CHECK_STATUS(dk_step_photometric(&pc, &s), DK_EINVAL);
    dk_photometric_config_init(&pc);
    pc.prob_hue = -0.1f;
    DK_CHECK_STATUS(dk_step_photometric(&pc, &s), DK_EINVAL);
    dk_photometric_config_init(&pc);
    pc.hue_delta = 200;
    DK_CHECK_STATUS(dk_step_photometric(&pc, &s), DK_EINVAL);

    float mean[3] = {0, 0, 0}, sd[3] = {1, 0, 1};
    DK_CHECK_STATUS(dk_step_normalize(mean, sd, 0, &s), DK_EINVAL);
    sd[1] = NAN;
    DK_CHECK_STATUS(dk_step_normalize(mean, sd, 0, &s), DK_EINVAL);
    DK_CHECK_STATUS(dk_step_pad(0, 0, 0, 0, &s), DK_EINVAL);
    DK_CHECK_STATUS(dk_step_pad(32, 100, 100, 0, &s), DK_EINVAL);
    DK_CHECK_STATUS(dk_step_pad(-4, 0, 0, 0, &s), DK_EINVAL);
    DK_CHECK_STATUS(dk_step_pad(0, 100, 0, 0, &s), DK_EINVAL);
    DK_CHECK_STATUS(dk_step_layout(1, DK_I32, &s), DK_EINVAL);
    DK_CHECK_STATUS(dk_step_layout(2, DK_F32, &s), DK_EINVAL);
    dk_image_decode_config dc;
    dk_image_decode_config_init(&dc);
    dc.image_name = "bad name";
    DK_CHECK_STATUS(dk_step_image_decode(&dc, &s), DK_EINVAL);
    dk_image_decode_config_init(&dc);
    dc.source = (dk_image_source)7;
    DK_CHECK_STATUS(dk_step_image_decode(&dc, &s), DK_EINVAL);

    /* Valid ones construct and free; set_image_name checks its step. */
    DK_CHECK_OK(dk_step_pad(32, 0, 0, 0, &s));
    DK_CHECK_OK(dk_step_set_image_name(s, "img2"));
    DK_CHECK_STATUS(dk_step_set_image_name(s, "2img"), DK_EINVAL);
    DK_CHECK_STR(dk_step_name(s), "pad");
    dk_step_destroy(s);
}

/* Binding errors and orders that cannot be fused. */
static void test_image_bind_and_order_errors(void)
{
    geo_ids ids;
    dk_group *fmt = geo_format(&ids);
    dk_pipeline *p;
    dk_step *s;
    DK_CHECK_OK(dk_pipeline_create(fmt, NULL, &p));
    /* No image of that name. */
    DK_CHECK_OK(dk_step_pad(32, 0, 0, 0, &s));
    DK_CHECK_OK(dk_step_set_image_name(s, "picture"));
    DK_CHECK_STATUS(dk_pipeline_add(p, s), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "picture");
    /* An explicit geometry name that does not exist. */
    dk_affine_config a;
    dk_affine_config_init(&a);
    a.matrix_fields = "cam2img";
    DK_CHECK_OK(dk_step_affine(&a, &s));
    DK_CHECK_STATUS(dk_pipeline_add(p, s), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "cam2img");
    /* No decode source. */
    dk_image_decode_config dc;
    dk_image_decode_config_init(&dc);
    DK_CHECK_OK(dk_step_image_decode(&dc, &s));
    DK_CHECK_STATUS(dk_pipeline_add(p, s), DK_ENOENT);
    DK_CHECK_EQ_INT(dk_pipeline_num_steps(p), 0);
    /* pad, then affine in one image run: refused when it runs. */
    DK_CHECK_OK(dk_step_pad(32, 0, 0, 0, &s));
    DK_CHECK_OK(dk_pipeline_add(p, s));
    dk_affine_config_init(&a);
    DK_CHECK_OK(dk_step_affine(&a, &s));
    DK_CHECK_OK(dk_pipeline_add(p, s));
    dk_sample x;
    DK_CHECK_OK(dk_sample_init(&x, dk_group_id_limit(fmt)));
    dk_tensor img;
    DK_CHECK_OK(make_image(40, 30, 1, 1, &img));
    dk_sample_set(&x, ids.image, &img);
    float I[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}, pts[2] = {1, 2};
    int64_t ms[2] = {4, 4}, ps[2] = {1, 2};
    dk_sample_set_copy(&x, ids.lidar2img, DK_F32, 2, ms, I);
    dk_sample_set_copy(&x, ids.pts, DK_F32, 2, ps, pts);
    DK_CHECK_STATUS(dk_pipeline_run(p, &x, "ord"), DK_ESTATE);
    DK_CHECK_CONTAINS(dk_errmsg(), "cam.image");
    dk_sample_free(&x);
    dk_pipeline_destroy(p);
    /* A float image left by a finished image run cannot be warped again. */
    DK_CHECK_OK(dk_pipeline_create(fmt, NULL, &p));
    DK_CHECK_OK(dk_step_layout(0, DK_F32, &s));
    DK_CHECK_OK(dk_pipeline_add(p, s));
    /* a non-image step would end the run; two runs are simulated by running
       the pipeline twice: its output feeds a second pipeline */
    dk_pipeline *p2;
    DK_CHECK_OK(dk_pipeline_create(dk_pipeline_format(p), NULL, &p2));
    DK_CHECK_OK(dk_step_affine(&a, &s));
    DK_CHECK_OK(dk_pipeline_add(p2, s));
    DK_CHECK_OK(dk_sample_init(&x, dk_group_id_limit(fmt)));
    DK_CHECK_OK(make_image(40, 30, 1, 1, &img));
    dk_sample_set(&x, ids.image, &img);
    dk_sample_set_copy(&x, ids.lidar2img, DK_F32, 2, ms, I);
    dk_sample_set_copy(&x, ids.pts, DK_F32, 2, ps, pts);
    DK_CHECK_OK(dk_pipeline_run(p, &x, "one"));
    DK_CHECK_STATUS(dk_pipeline_run(p2, &x, "two"), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "float32");
    dk_sample_free(&x);
    dk_pipeline_destroy(p);
    dk_pipeline_destroy(p2);
    dk_group_destroy(fmt);
}

const dk_test_case dk_tests_data_image[] = {
    DK_TEST(test_image_fused_tensor_numerics),
    DK_TEST(test_image_fused_u8_exactness),
    DK_TEST(test_image_float16_conversion),
    DK_TEST(test_image_fused_jpeg_numerics),
    DK_TEST(test_image_jpeg_window_decode),
    DK_TEST(test_image_jpeg_window_geometry),
    DK_TEST(test_image_jpeg_window_truncated),
    DK_TEST(test_image_affine_geometry),
    DK_TEST(test_image_affine_chains),
    DK_TEST(test_image_affine_streampetr),
    DK_TEST(test_image_determinism),
    DK_TEST(test_image_per_element_draws),
    DK_TEST(test_image_pipeline_streampetr_files),
    DK_TEST(test_image_errors_files),
    DK_TEST(test_image_errors_materialize),
    DK_TEST(test_image_video_source),
    DK_TEST(test_image_bad_configs),
    DK_TEST(test_image_bind_and_order_errors),
};
const size_t dk_tests_data_image_count = sizeof dk_tests_data_image / sizeof dk_tests_data_image[0];
