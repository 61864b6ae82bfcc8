/* Tests for the sim module: PLY I/O and the CPU camera rasterizer. */
#include <unistd.h>

#include "dk_test.h"

#include "drivekit/sim.h"

static uint32_t rng_state = 12345u;
static float frand(float lo, float hi)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(rng_state >> 8) / 16777216.0f;
}

static float logit(double p) { return (float)log(p / (1 - p)); }

static void fill_random(dk_scene *s, float extent)
{
    for (int64_t i = 0; i < s->n; i++) {
        for (int j = 0; j < 3; j++) s->means[i * 3 + j] = frand(-extent, extent);
        s->means[i * 3 + 2] = frand(1.0f, 3 * extent);
        for (int j = 0; j < 3; j++) s->scales[i * 3 + j] = frand(-4.5f, -1.5f);
        for (int j = 0; j < 4; j++) s->rotations[i * 4 + j] = frand(-1, 1);
        s->rotations[i * 4] += 1.5f;
        s->opacities[i] = frand(-3, 4);
        for (int k = 0; k < 3 * s->sh_coeffs; k++)
            s->sh[i * 3 * s->sh_coeffs + k] = frand(-1, 1) * (k % s->sh_coeffs ? 0.3f : 1.5f);
        if (s->normals)
            for (int j = 0; j < 3; j++) s->normals[i * 3 + j] = frand(-1, 1);
        if (s->lidar_intensity) {
            s->lidar_intensity[i] = frand(0, 1);
            s->lidar_raydrop[i] = frand(-5, 5);
        }
        if (s->actor_id) s->actor_id[i] = (int32_t)(i % 7) - 1;
    }
}

static int same_arrays(const void *a, const void *b, size_t n)
{
    if (!a || !b) return a == b;
    return memcmp(a, b, n) == 0;
}

static int scenes_identical(const dk_scene *a, const dk_scene *b)
{
    if (a->n != b->n || a->sh_degree != b->sh_degree || a->sh_coeffs != b->sh_coeffs) return 0;
    size_t n = (size_t)a->n;
    return same_arrays(a->means, b->means, n * 12) && same_arrays(a->scales, b->scales, n * 12) &&
           same_arrays(a->rotations, b->rotations, n * 16) &&
           same_arrays(a->opacities, b->opacities, n * 4) &&
           same_arrays(a->sh, b->sh, n * 12 * (size_t)a->sh_coeffs) &&
           same_arrays(a->normals, b->normals, n * 12) &&
           same_arrays(a->lidar_intensity, b->lidar_intensity, n * 4) &&
           same_arrays(a->lidar_raydrop, b->lidar_raydrop, n * 4) &&
           same_arrays(a->actor_id, b->actor_id, n * 4);
}

static void test_scene_create(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = (dk_scene *)1;
    DK_CHECK_STATUS(dk_scene_create(-1, 0, 0, &s), DK_EINVAL);
    DK_CHECK(s == NULL);
    DK_CHECK_STATUS(dk_scene_create(1, 4, 0, &s), DK_EINVAL);
    DK_CHECK_STATUS(dk_scene_create(1, 0, 0x80, &s), DK_EINVAL);
    DK_CHECK_OK(dk_scene_create(5, 2, DK_SCENE_ACTOR_ID, &s));
    DK_CHECK_EQ_INT(s->sh_coeffs, 9);
    DK_CHECK(s->normals == NULL && s->lidar_intensity == NULL && s->actor_id != NULL);
    DK_CHECK_EQ_INT(s->actor_id[4], -1);
    DK_CHECK_STATUS(dk_scene_validate(s), DK_EINVALIDDATA);   /* zero quaternions */
    for (int i = 0; i < 5; i++) s->rotations[i * 4] = 1;
    DK_CHECK_OK(dk_scene_validate(s));
    s->scales[7] = INFINITY;
    DK_CHECK_STATUS(dk_scene_validate(s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "gaussian 2: scale_1 is inf");
    dk_scene_destroy(s);
    dk_scene_destroy(NULL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_ply_round_trip(void)
{
    int64_t live = dk_alloc_live();
    for (int deg = 0; deg <= 3; deg++) {
        unsigned fields = deg == 3 ? (DK_SCENE_NORMALS | DK_SCENE_LIDAR | DK_SCENE_ACTOR_ID)
                                   : deg == 1 ? DK_SCENE_ACTOR_ID : 0u;
        dk_scene *s = NULL, *t = NULL;
        DK_CHECK_OK(dk_scene_create(37, deg, fields, &s));
        fill_random(s, 5);
        s->means[0] = -0.0f;
        s->means[1] = 1e-42f;   /* subnormal */
        uint8_t *buf = NULL, *buf2 = NULL;
        size_t size = 0, size2 = 0;
        DK_CHECK_OK(dk_scene_save_ply_memory(s, &buf, &size));
        DK_CHECK_OK(dk_scene_load_ply_memory(buf, size, "rt.ply", 0, &t));
        DK_CHECK(scenes_identical(s, t));
        DK_CHECK_OK(dk_scene_save_ply_memory(t, &buf2, &size2));
        DK_CHECK_EQ_INT(size, size2);
        DK_CHECK(memcmp(buf, buf2, size) == 0);
        dk_free(buf);
        dk_free(buf2);
        dk_scene_destroy(t);
        t = NULL;
        char path[64];
        snprintf(path, sizeof path, "/tmp/dk_test_sim_%d.ply", (int)getpid());
        DK_CHECK_OK(dk_scene_save_ply(s, path));
        DK_CHECK_OK(dk_scene_load_ply(path, 0, &t));
        DK_CHECK(scenes_identical(s, t));
        remove(path);
        dk_scene_destroy(t);
        dk_scene_destroy(s);
    }
    dk_scene *t = NULL;
    DK_CHECK_STATUS(dk_scene_load_ply("/nonexistent/x.ply", 0, &t), DK_ENOENT);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* A PLY built by hand: header lines then n rows where property j of row i is
 * val(i, j) encoded with its type (float, double, uchar or int). */
typedef struct ply_spec {
    const char *format;
    int n_props;
    const char *types[80];
    const char *names[80];
} ply_spec;

static size_t build_ply(const ply_spec *sp, const char *count_str, int n, uint8_t *out,
                        size_t cap)
{
    size_t o = (size_t)snprintf((char *)out, cap,
                                "ply\nformat %s\ncomment hand made\nelement vertex %s\n",
                                sp->format, count_str);
    for (int j = 0; j < sp->n_props; j++)
        o += (size_t)snprintf((char *)out + o, cap - o, "property %s %s\n", sp->types[j],
                              sp->names[j]);
    o += (size_t)snprintf((char *)out + o, cap - o, "end_header\n");
    for (int i = 0; i < n; i++)
        for (int j = 0; j < sp->n_props; j++) {
            double v = (i + 1) * 0.5 + j * 0.01;
            if (strncmp(sp->names[j], "rot_", 4) == 0) v = sp->names[j][4] == '0' ? 1.0 : 0.1;
            if (strcmp(sp->types[j], "float") == 0) {
                float f = (float)v;
                memcpy(out + o, &f, 4);
                o += 4;
            } else if (strcmp(sp->types[j], "double") == 0) {
                memcpy(out + o, &v, 8);
                o += 8;
            } else if (strcmp(sp->types[j], "uchar") == 0) {
                out[o++] = (uint8_t)j;
            } else {
                int32_t iv = j;
                memcpy(out + o, &iv, 4);
                o += 4;
            }
        }
    return o;
}

static void std_spec(ply_spec *sp, int n_rest)
{
    static const char *const base[] = { "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                                        "scale_0", "scale_1", "scale_2", "rot_0", "rot_1",
                                        "rot_2", "rot_3" };
    static char rest_names[45][24];  /* "f_rest_" + any int */
    memset(sp, 0, sizeof *sp);
    sp->format = "binary_little_endian 1.0";
    for (int j = 0; j < 14; j++) {
        sp->types[sp->n_props] = "float";
        sp->names[sp->n_props++] = base[j];
    }
    for (int r = 0; r < n_rest; r++) {
        snprintf(rest_names[r], sizeof rest_names[r], "f_rest_%d", r);
        sp->types[sp->n_props] = "float";
        sp->names[sp->n_props++] = rest_names[r];
    }
}

static uint8_t plybuf[65536];

static void test_ply_any_order_and_extras(void)
{
    int64_t live = dk_alloc_live();
    ply_spec sp;
    std_spec(&sp, 9);
    /* Reverse the order and add ignored extras of other types. */
    ply_spec r = sp;
    for (int j = 0; j < sp.n_props; j++) {
        r.names[j] = sp.names[sp.n_props - 1 - j];
        r.types[j] = "float";
    }
    r.names[r.n_props] = "extra_d";
    r.types[r.n_props++] = "double";
    r.names[r.n_props] = "red";
    r.types[r.n_props++] = "uchar";
    size_t n = build_ply(&r, "3", 3, plybuf, sizeof plybuf);
    dk_scene *s = NULL;
    DK_CHECK_OK(dk_scene_load_ply_memory(plybuf, n, "order.ply", 0, &s));
    DK_CHECK_EQ_INT(s->n, 3);
    DK_CHECK_EQ_INT(s->sh_degree, 1);
    /* x is the last float property (j = 22) of the reversed list. */
    DK_CHECK_EQ_INT(r.n_props, 25);
    DK_CHECK(s->means[3] == (float)(2 * 0.5 + 22 * 0.01));
    DK_CHECK(s->rotations[4] == 1.0f && s->rotations[5] == 0.1f);
    /* f_rest_0 is at j = 22 - 14 = 8; f_rest_3 (G channel, k = 1) at j = 5. */
    DK_CHECK(s->sh[0 * 4 + 1] == (float)(0.5 + 8 * 0.01));
    DK_CHECK(s->sh[1 * 4 + 1] == (float)(0.5 + 5 * 0.01));
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void expect_fail(const uint8_t *buf, size_t n, int status, const char *needle)
{
    dk_scene *s = (dk_scene *)1;
    int st = dk_scene_load_ply_memory(buf, n, "bad.ply", 0, &s);
    if (st != status) {
        fprintf(stderr, "  status %d (%s), want %d, msg: %s\n", st, dk_status_str(st), status,
                dk_errmsg());
        dk_test_failed_ = 1;
    }
    if (s != NULL) dk_test_failed_ = 1;
    if (!strstr(dk_errmsg(), "bad.ply") || (needle && !strstr(dk_errmsg(), needle))) {
        fprintf(stderr, "  message lacks '%s': %s\n", needle ? needle : "bad.ply", dk_errmsg());
        dk_test_failed_ = 1;
    }
}

static void test_ply_malformed(void)
{
    int64_t live = dk_alloc_live();
    ply_spec sp;
    std_spec(&sp, 0);
    size_t n = build_ply(&sp, "2", 2, plybuf, sizeof plybuf);
    dk_scene *s = NULL;
    DK_CHECK_OK(dk_scene_load_ply_memory(plybuf, n, "ok.ply", 0, &s));
    dk_scene_destroy(s);
    const char *eh = strstr((const char *)plybuf, "end_header");
    size_t hdr = (size_t)(eh - (const char *)plybuf) + 11;

    expect_fail(plybuf, 2, DK_EINVALIDDATA, "not a PLY");
    expect_fail(plybuf, hdr - 5, DK_EINVALIDDATA, "truncated header");
    expect_fail(plybuf, n - 1, DK_EINVALIDDATA, "element vertex");
    expect_fail(plybuf, n - 1, DK_EINVALIDDATA, "offset");
    /* wrong count: 3 rows claimed, 2 present */
    n = build_ply(&sp, "3", 2, plybuf, sizeof plybuf);
    expect_fail(plybuf, n, DK_EINVALIDDATA, "3 rows");
    /* huge claims: no allocation happens before the size check */
    int64_t total0 = dk_alloc_total();
    n = build_ply(&sp, "4000000000", 2, plybuf, sizeof plybuf);
    expect_fail(plybuf, n, DK_EINVALIDDATA, "vertex");
    n = build_ply(&sp, "99999999999999999999999", 2, plybuf, sizeof plybuf);
    expect_fail(plybuf, n, DK_EINVALIDDATA, "bad count");
    DK_CHECK(dk_alloc_total() - total0 < 4);
    /* formats */
    ply_spec f = sp;
    f.format = "ascii 1.0";
    n = build_ply(&f, "2", 2, plybuf, sizeof plybuf);
    expect_fail(plybuf, n, DK_EUNSUPPORTED, "ascii");
    f.format = "binary_big_endian 1.0";
    n = build_ply(&f, "2", 2, plybuf, sizeof plybuf);
    expect_fail(plybuf, n, DK_EUNSUPPORTED, "big_endian");
    /* missing property */
    f = sp;
    f.n_props--;   /* drops rot_3 */
    n = build_ply(&f, "2", 2, plybuf, sizeof plybuf);
    expect_fail(plybuf, n, DK_EINVALIDDATA, "missing property rot_3");
    /* wrong type of a required property */
    f = sp;
    f.types[0] = "double";
    n = build_ply(&f, "2", 2, plybuf, sizeof plybuf);
    expect_fail(plybuf, n, DK_EUNSUPPORTED, "property x");
    /* duplicate property */
    f = sp;
    f.names[1] = "x";
    n = build_ply(&f, "2", 2, plybuf, sizeof plybuf);
    expect_fail(plybuf, n, DK_EINVALIDDATA, "duplicate");
    /* f_rest count that is no SH degree; gap in f_rest */
    std_spec(&f, 10);
    n = build_ply(&f, "2", 2, plybuf, sizeof plybuf);
    expect_fail(plybuf, n, DK_EUNSUPPORTED, "10 f_rest");
    std_spec(&f, 9);
    f.names[14 + 4] = "f_rest_12";
    n = build_ply(&f, "2", 2, plybuf, sizeof plybuf);
    expect_fail(plybuf, n, DK_EINVALIDDATA, "f_rest_4");
    /* NaN and zero quaternion */
    n = build_ply(&sp, "2", 2, plybuf, sizeof plybuf);
    float nan = NAN, zero = 0;
    size_t row = 14 * 4, at = hdr + row + 8 * 4;   /* vertex 1, scale_1 */
    memcpy(plybuf + at, &nan, 4);
    expect_fail(plybuf, n, DK_EINVALIDDATA, "vertex 1: property scale_1 is nan");
    char want[64];
    snprintf(want, sizeof want, "byte offset %zu", at);
    expect_fail(plybuf, n, DK_EINVALIDDATA, want);
    DK_CHECK_OK(dk_scene_load_ply_memory(plybuf, n, "nan.ply", DK_PLY_ALLOW_INVALID, &s));
    DK_CHECK(isnan(s->scales[4]));
    DK_CHECK_STATUS(dk_scene_validate(s), DK_EINVALIDDATA);
    dk_scene_destroy(s);
    n = build_ply(&sp, "2", 2, plybuf, sizeof plybuf);
    for (int j = 0; j < 4; j++) memcpy(plybuf + hdr + (10 + j) * 4, &zero, 4);
    expect_fail(plybuf, n, DK_EINVALIDDATA, "zero quaternion");
    /* garbage header keywords, no vertex element */
    const char *g1 = "ply\nformat binary_little_endian 1.0\nelement vertex 1\nbogus\nend_header\n";
    expect_fail((const uint8_t *)g1, strlen(g1), DK_EINVALIDDATA, "bogus");
    const char *g2 = "ply\nformat binary_little_endian 1.0\nelement face 0\nend_header\n";
    expect_fail((const uint8_t *)g2, strlen(g2), DK_EINVALIDDATA, "no vertex");
    const char *g3 = "ply\nformat binary_little_endian 1.0\nelement face 1\n"
                     "property list uchar int vertex_indices\nelement vertex 0\nend_header\n";
    expect_fail((const uint8_t *)g3, strlen(g3), DK_EUNSUPPORTED, "list");
    DK_CHECK_STATUS(dk_scene_load_ply_memory(NULL, 0, NULL, 0, &s), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_scene_load_ply_memory(plybuf, n, NULL, 0x10, &s), DK_EINVAL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* ---- rendering ---------------------------------------------------------- */

static dk_scene *one_gaussian(const double mean[3], const double logscale[3],
                              const double q[4], double opacity, const float rgb[3])
{
    dk_scene *s = NULL;
    if (dk_scene_create(1, 0, 0, &s)) return NULL;
    for (int j = 0; j < 3; j++) {
        s->means[j] = (float)mean[j];
        s->scales[j] = (float)logscale[j];
        s->sh[j] = (float)((rgb[j] - 0.5) / 0.28209479177387814);
    }
    for (int j = 0; j < 4; j++) s->rotations[j] = (float)q[j];
    s->opacities[0] = logit(opacity);
    return s;
}

/* The analytic EWA footprint, computed here from the stored float values. */
static void ewa_reference(const dk_scene *s, const dk_camera *c, double m2[2], double conic[3],
                          double *op)
{
    double q[4], n = 0;
    for (int j = 0; j < 4; j++) n += (double)s->rotations[j] * s->rotations[j];
    for (int j = 0; j < 4; j++) q[j] = s->rotations[j] / sqrt(n);
    double w = q[0], x = q[1], y = q[2], z = q[3];
    double R[3][3] = { { 1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y) },
                       { 2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x) },
                       { 2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y) } };
    double S2[3], cov[3][3];
    for (int j = 0; j < 3; j++) S2[j] = exp(2.0 * s->scales[j]);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            cov[a][b] = 0;
            for (int k = 0; k < 3; k++) cov[a][b] += R[a][k] * S2[k] * R[b][k];
        }
    double px = s->means[0], py = s->means[1], pz = s->means[2];
    double J[2][3] = { { c->fx / pz, 0, -c->fx * px / (pz * pz) },
                       { 0, c->fy / pz, -c->fy * py / (pz * pz) } };
    double S[2][2];
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            S[a][b] = 0;
            for (int i = 0; i < 3; i++)
                for (int k = 0; k < 3; k++) S[a][b] += J[a][i] * cov[i][k] * J[b][k];
        }
    S[0][0] += 0.3;
    S[1][1] += 0.3;
    double det = S[0][0] * S[1][1] - S[0][1] * S[1][0];
    conic[0] = S[1][1] / det;
    conic[1] = -S[0][1] / det;
    conic[2] = S[0][0] / det;
    m2[0] = c->fx * px / pz + c->cx;
    m2[1] = c->fy * py / pz + c->cy;
    *op = 1 / (1 + exp(-(double)s->opacities[0]));
}

static void test_render_single_ewa(void)
{
    int64_t live = dk_alloc_live();
    dk_camera cam;
    dk_camera_init_pinhole(&cam, 70, 50, 60, 55, 33.3, 24.1);
    dk_pose id = dk_pose_identity();
    dk_render_config rc;
    dk_render_config_init(&rc);
    float *alpha = malloc(70 * 50 * 4), *rgb = malloc(70 * 50 * 12), *depth = malloc(70 * 50 * 4);
    const double opac[] = { 0.3, 0.8, 0.997 };
    for (int t = 0; t < 3; t++) {
        double mean[3] = { 0.3, -0.2, 4.0 }, ls[3] = { log(0.2), log(0.07), log(0.12) };
        if (t == 2) {   /* mean on a pixel centre, so the 0.99 cap is reached */
            mean[0] = (35.5 - 33.3) * 4.0 / 60;
            mean[1] = (20.5 - 24.1) * 4.0 / 55;
        }
        double q[4] = { 0.9, 0.2, -0.3, 0.25 };
        float col[3] = { 0.8f, 0.4f, 0.1f };
        dk_scene *s = one_gaussian(mean, ls, q, opac[t], col);
        DK_CHECK(s != NULL);
        DK_CHECK_OK(dk_render_camera(s, &cam, &id, &rc, NULL, rgb, alpha, depth));
        double m2[2], con[3], o;
        ewa_reference(s, &cam, m2, con, &o);
        int n_in = 0, n_cap = 0;
        for (int j = 0; j < 50; j++)
            for (int i = 0; i < 70; i++) {
                double dx = i + 0.5 - m2[0], dy = j + 0.5 - m2[1];
                double m = con[0] * dx * dx + 2 * con[1] * dx * dy + con[2] * dy * dy;
                double g = o * exp(-0.5 * m);
                double want = g > 0.99 ? 0.99 : g;
                if (fabs(g - 1.0 / 255) < 1e-5) continue;   /* float vs double at the cut */
                if (want < 1.0 / 255) want = 0;
                else n_in++;
                if (g > 0.99) n_cap++;
                float a = alpha[j * 70 + i];
                if (fabs(a - want) > 1e-5)
                    DK_FAIL_("pixel (%d, %d): alpha %.7f want %.7f (o=%g)", i, j, a, want, o);
                for (int c = 0; c < 3; c++)
                    DK_CHECK_NEAR(rgb[(j * 70 + i) * 3 + c], col[c] * want, 1e-5);
                if (want > 0) DK_CHECK_NEAR(depth[j * 70 + i], 4.0, 2e-6);
                else DK_CHECK(depth[j * 70 + i] == 0.0f);
            }
        DK_CHECK(n_in > 50);
        if (t == 2) DK_CHECK(n_cap > 0);
        dk_scene_destroy(s);
    }
    /* Background and near-plane culling. */
    double mean[3] = { 0, 0, 0.15 }, ls[3] = { -1, -1, -1 }, q[4] = { 1, 0, 0, 0 };
    float col[3] = { 1, 1, 1 };
    dk_scene *s = one_gaussian(mean, ls, q, 0.9, col);
    rc.background[0] = 0.25f;
    rc.background[2] = 0.5f;
    DK_CHECK_OK(dk_render_camera(s, &cam, &id, &rc, NULL, rgb, alpha, NULL));
    for (int p = 0; p < 70 * 50; p++) {
        DK_CHECK(alpha[p] == 0.0f);
        DK_CHECK(rgb[p * 3] == 0.25f && rgb[p * 3 + 1] == 0.0f && rgb[p * 3 + 2] == 0.5f);
    }
    rc.sh_degree = 1;
    DK_CHECK_STATUS(dk_render_camera(s, &cam, &id, &rc, NULL, rgb, alpha, NULL), DK_EINVAL);
    dk_scene_destroy(s);
    free(alpha);
    free(rgb);
    free(depth);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void centroid_check(const dk_camera *cam, const double mean[3])
{
    dk_pose id = dk_pose_identity();
    dk_render_config rc;
    dk_render_config_init(&rc);
    int W = cam->width, H = cam->height;
    float *alpha = malloc((size_t)W * H * 4);
    double ls[3] = { log(0.01), log(0.015), log(0.012) }, q[4] = { 0.8, 0.3, 0.1, -0.2 };
    float col[3] = { 1, 1, 1 };
    dk_scene *s = one_gaussian(mean, ls, q, 0.9, col);
    DK_CHECK_OK(dk_render_camera(s, cam, &id, &rc, NULL, NULL, alpha, NULL));
    double sw = 0, sx = 0, sy = 0;
    for (int j = 0; j < H; j++)
        for (int i = 0; i < W; i++) {
            double a = alpha[j * W + i];
            sw += a;
            sx += a * (i + 0.5);
            sy += a * (j + 0.5);
        }
    double p[3] = { s->means[0], s->means[1], s->means[2] }, uv[2];
    DK_CHECK(dk_camera_project(cam, p, uv, NULL));
    DK_CHECK(sw > 1.0);
    double cx = sx / sw, cy = sy / sw;
    if (fabs(cx - uv[0]) > 0.05 || fabs(cy - uv[1]) > 0.05)
        DK_FAIL_("%s: centroid (%.4f, %.4f) vs projected mean (%.4f, %.4f)",
                 dk_camera_model_name(cam->model), cx, cy, uv[0], uv[1]);
    /* The distortion moved it well away from the pinhole position. */
    double ux = cam->fx * p[0] / p[2] + cam->cx;
    DK_CHECK(fabs(ux - uv[0]) > 3);
    dk_scene_destroy(s);
    free(alpha);
}

static void test_render_distorted_centroid(void)
{
    int64_t live = dk_alloc_live();
    dk_camera cam;
    double k[6] = { 0.4, 0.1, 0, 0, 0, 0 };
    dk_camera_init_opencv(&cam, 160, 120, 100, 100, 80.2, 60.3, k, NULL, NULL);
    DK_CHECK_OK(dk_camera_validate(&cam));
    double m1[3] = { 0.5, -0.3, 1.0 };
    centroid_check(&cam, m1);
    double kf[4] = { 0.1, 0.02, 0, 0 };
    dk_camera_init_fisheye(&cam, 160, 120, 60, 60, 80.2, 60.3, kf, 0);
    DK_CHECK_OK(dk_camera_validate(&cam));
    double m2[3] = { 1.0, 0.6, 1.0 };
    centroid_check(&cam, m2);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_render_ut_matches_ewa(void)
{
    /* A small Gaussian near the image centre: UT and EWA footprints agree. */
    int64_t live = dk_alloc_live();
    dk_camera cam;
    dk_camera_init_pinhole(&cam, 64, 64, 80, 80, 32, 32);
    dk_pose id = dk_pose_identity();
    double mean[3] = { 0.05, 0.02, 5 }, ls[3] = { log(0.05), log(0.1), log(0.07) },
           q[4] = { 0.9, 0.1, 0.2, 0.3 };
    float col[3] = { 1, 0, 0 };
    dk_scene *s = one_gaussian(mean, ls, q, 0.7, col);
    float a1[64 * 64], a2[64 * 64];
    dk_render_config rc;
    dk_render_config_init(&rc);
    DK_CHECK_OK(dk_render_camera(s, &cam, &id, &rc, NULL, NULL, a1, NULL));
    rc.projection = DK_PROJ_UT;
    DK_CHECK_OK(dk_render_camera(s, &cam, &id, &rc, NULL, NULL, a2, NULL));
    for (int p = 0; p < 64 * 64; p++) DK_CHECK_NEAR(a1[p], a2[p], 2e-3);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_render_blend_order(void)
{
    int64_t live = dk_alloc_live();
    dk_camera cam;
    dk_camera_init_pinhole(&cam, 40, 40, 50, 50, 20, 20);
    dk_pose id = dk_pose_identity();
    dk_render_config rc;
    dk_render_config_init(&rc);
    double ls[3] = { log(0.3), log(0.3), log(0.3) }, q[4] = { 1, 0, 0, 0 };
    double mf[3] = { 0.05, 0, 3 }, mb[3] = { -0.1, 0.05, 5 };
    float red[3] = { 1, 0, 0 }, green[3] = { 0, 1, 0 };
    dk_scene *f = one_gaussian(mf, ls, q, 0.6, red);
    dk_scene *b = one_gaussian(mb, ls, q, 0.7, green);
    static float af[1600], ab[1600], rgb[4800], al[1600], dep[1600];
    DK_CHECK_OK(dk_render_camera(f, &cam, &id, &rc, NULL, NULL, af, NULL));
    DK_CHECK_OK(dk_render_camera(b, &cam, &id, &rc, NULL, NULL, ab, NULL));
    for (int order = 0; order < 2; order++) {
        dk_scene *s = NULL;
        DK_CHECK_OK(dk_scene_create(2, 0, 0, &s));
        const dk_scene *src[2] = { order ? b : f, order ? f : b };
        for (int g = 0; g < 2; g++) {
            memcpy(s->means + g * 3, src[g]->means, 12);
            memcpy(s->scales + g * 3, src[g]->scales, 12);
            memcpy(s->rotations + g * 4, src[g]->rotations, 16);
            memcpy(s->sh + g * 3, src[g]->sh, 12);
            s->opacities[g] = src[g]->opacities[0];
        }
        DK_CHECK_OK(dk_render_camera(s, &cam, &id, &rc, NULL, rgb, al, dep));
        int n_both = 0;
        for (int p = 0; p < 1600; p++) {
            DK_CHECK_NEAR(rgb[p * 3], af[p], 1e-5);
            DK_CHECK_NEAR(rgb[p * 3 + 1], ab[p] * (1 - af[p]), 1e-5);
            DK_CHECK_NEAR(al[p], 1 - (1 - af[p]) * (1 - ab[p]), 1e-5);
            if (af[p] > 0.1 && ab[p] > 0.1) {
                n_both++;
                double wf = af[p], wb = ab[p] * (1 - af[p]);
                DK_CHECK_NEAR(dep[p], (3 * wf + 5 * wb) / (wf + wb), 1e-4);
            }
        }
        DK_CHECK(n_both > 20);
        dk_scene_destroy(s);
    }
    dk_scene_destroy(f);
    dk_scene_destroy(b);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_render_sh_color(void)
{
    /* Degree 1, only the y coefficient (sh1) of red set: colour 0.5 - C1 y sh1. */
    int64_t live = dk_alloc_live();
    dk_scene *s = NULL;
    DK_CHECK_OK(dk_scene_create(1, 1, 0, &s));
    s->means[0] = 0;
    s->means[1] = 3;
    s->means[2] = 4;
    s->rotations[0] = 1;
    for (int j = 0; j < 3; j++) s->scales[j] = -1;
    s->opacities[0] = logit(0.5);
    s->sh[1] = -0.4f;
    dk_camera cam;
    dk_camera_init_pinhole(&cam, 32, 32, 5, 5, 16, 4);
    dk_pose id = dk_pose_identity();
    dk_render_config rc;
    dk_render_config_init(&rc);
    float rgb[32 * 32 * 3], al[32 * 32];
    DK_CHECK_OK(dk_render_camera(s, &cam, &id, &rc, NULL, rgb, al, NULL));
    int p = 7 * 32 + 16;   /* projects to (16, 7.75) */
    DK_CHECK(al[p] > 0.1f);
    double want = 0.5 - 0.4886025119029199 * 0.6 * -0.4;
    DK_CHECK_NEAR(rgb[p * 3] / al[p], want, 1e-5);
    DK_CHECK_NEAR(rgb[p * 3 + 1] / al[p], 0.5, 1e-5);
    rc.sh_degree = 0;
    DK_CHECK_OK(dk_render_camera(s, &cam, &id, &rc, NULL, rgb, al, NULL));
    DK_CHECK_NEAR(rgb[p * 3] / al[p], 0.5, 1e-5);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_render_hostile_values(void)
{
    /* Enormous (but finite) scales cover the whole image with alpha = opacity;
     * far-away means and non-finite values are culled; nothing is NaN. */
    int64_t live = dk_alloc_live();
    dk_camera cams[2];
    dk_camera_init_pinhole(&cams[0], 40, 30, 30, 30, 20, 15);
    double kf[4] = { 0.05, 0, 0, 0 };
    dk_camera_init_fisheye(&cams[1], 40, 30, 20, 20, 20, 15, kf, 0);
    dk_pose id = dk_pose_identity();
    dk_render_config rc;
    dk_render_config_init(&rc);
    float rgb[40 * 30 * 3], al[40 * 30], dep[40 * 30];
    const float big[] = { 30.0f, 60.0f, 88.0f };
    for (int c = 0; c < 2; c++)
        for (int t = 0; t < 3; t++) {
            double mean[3] = { 0.1, 0, 5 }, ls[3] = { big[t], big[t], big[t] };
            double q[4] = { 1, 0, 0, 0 };
            float col[3] = { 0.2f, 0.4f, 0.6f };
            dk_scene *s = one_gaussian(mean, ls, q, 0.6, col);
            DK_CHECK_OK(dk_render_camera(s, &cams[c], &id, &rc, NULL, rgb, al, dep));
            for (int p = 0; p < 40 * 30; p++) {
                DK_CHECK(isfinite(rgb[p * 3]) && isfinite(dep[p]));
                DK_CHECK(al[p] >= 0.0f && al[p] <= 0.6f + 1e-6f);
                /* EWA: the footprint is flat; UT through the fisheye folds
                 * the sigma points, so only the range is checked there. */
                if (c == 0) DK_CHECK_NEAR(al[p], 0.6, 1e-5);
            }
            dk_scene_destroy(s);
        }
    dk_scene *s = NULL;
    DK_CHECK_OK(dk_scene_create(0, 0, 0, &s));   /* empty scene: background */
    rc.background[1] = 0.75f;
    DK_CHECK_OK(dk_render_camera(s, &cams[0], &id, &rc, NULL, rgb, al, dep));
    for (int p = 0; p < 40 * 30; p++)
        DK_CHECK(al[p] == 0.0f && rgb[p * 3 + 1] == 0.75f && dep[p] == 0.0f);
    rc.background[1] = 0.0f;
    dk_scene_destroy(s);
    DK_CHECK_OK(dk_scene_create(4, 0, 0, &s));
    for (int g = 0; g < 4; g++) {
        s->rotations[g * 4] = 1;
        s->means[g * 3 + 2] = 5;
        for (int j = 0; j < 3; j++) s->scales[g * 3 + j] = 1;
    }
    s->means[0] = -1e30f;
    s->scales[3] = 60;
    s->means[3] = 1e30f;
    s->means[6 + 2] = NAN;
    s->rotations[9] = INFINITY;
    s->opacities[3] = INFINITY;
    for (int c = 0; c < 2; c++) {
        DK_CHECK_OK(dk_render_camera(s, &cams[c], &id, &rc, NULL, rgb, al, dep));
        for (int p = 0; p < 40 * 30; p++) DK_CHECK(al[p] == 0.0f && rgb[p * 3] == 0.0f);
    }
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* The graphdeco SH polynomial, written out independently. */
static double sh_eval3(const float *co, double x, double y, double z)
{
    const double C0 = 0.28209479177387814, C1 = 0.4886025119029199;
    const double C2[5] = { 1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
                           -1.0925484305920792, 0.5462742152960396 };
    const double C3[7] = { -0.5900435899266435, 2.890611442640554, -0.4570457994644658,
                           0.3731763325901154, -0.4570457994644658, 1.445305721320277,
                           -0.5900435899266435 };
    double xx = x * x, yy = y * y, zz = z * z;
    double c = C0 * co[0] - C1 * y * co[1] + C1 * z * co[2] - C1 * x * co[3] +
               C2[0] * x * y * co[4] + C2[1] * y * z * co[5] + C2[2] * (2 * zz - xx - yy) * co[6] +
               C2[3] * x * z * co[7] + C2[4] * (xx - yy) * co[8] +
               C3[0] * y * (3 * xx - yy) * co[9] + C3[1] * x * y * z * co[10] +
               C3[2] * y * (4 * zz - xx - yy) * co[11] +
               C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * co[12] +
               C3[4] * x * (4 * zz - xx - yy) * co[13] + C3[5] * z * (xx - yy) * co[14] +
               C3[6] * x * (xx - 3 * yy) * co[15];
    c += 0.5;
    return c > 0 ? c : 0;
}

static void test_render_sh_degree3(void)
{
    /* World != camera frame: the view direction is taken in the world. */
    int64_t live = dk_alloc_live();
    dk_scene *s = NULL;
    DK_CHECK_OK(dk_scene_create(1, 3, 0, &s));
    double t[3] = { 1, -2, 0.5 };
    dk_pose c2w = dk_pose_from_euler(t, 0.4, -0.2, 0.3);
    double pc[3] = { 0.3, -0.4, 6 }, pw[3];
    dk_pose_apply(&c2w, pc, pw);
    for (int j = 0; j < 3; j++) {
        s->means[j] = (float)pw[j];
        s->scales[j] = -1.5f;
    }
    s->rotations[0] = 1;
    s->opacities[0] = logit(0.7);
    for (int k = 0; k < 48; k++) s->sh[k] = frand(-0.8f, 0.8f);
    s->sh[0] = 1.0f;
    s->sh[16] = -3.0f;   /* green clamps to 0 */
    dk_camera cam;
    dk_camera_init_pinhole(&cam, 48, 48, 40, 40, 24, 24);
    dk_render_config rc;
    dk_render_config_init(&rc);
    float rgb[48 * 48 * 3], al[48 * 48];
    DK_CHECK_OK(dk_render_camera(s, &cam, &c2w, &rc, NULL, rgb, al, NULL));
    double d[3] = { s->means[0] - t[0], s->means[1] - t[1], s->means[2] - t[2] };
    double n = sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    int p = (int)(40 * 0.3 / 6 + 24) + 48 * (int)(40 * -0.4 / 6 + 24);
    DK_CHECK(al[p] > 0.3f);
    for (int c = 0; c < 3; c++)
        DK_CHECK_NEAR(rgb[p * 3 + c] / al[p],
                      sh_eval3(s->sh + c * 16, d[0] / n, d[1] / n, d[2] / n), 1e-5);
    DK_CHECK(rgb[p * 3 + 1] == 0.0f);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_render_threads_invariant(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = NULL;
    DK_CHECK_OK(dk_scene_create(3000, 3, 0, &s));
    fill_random(s, 4);
    dk_pool *pool = NULL;
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = 3;
    DK_CHECK_OK(dk_pool_create(&pc, &pool));
    const int W = 200, H = 150;
    size_t np = (size_t)W * H;
    float *a[2], *c[2], *d[2];
    for (int k = 0; k < 2; k++) {
        a[k] = malloc(np * 4);
        c[k] = malloc(np * 12);
        d[k] = malloc(np * 4);
    }
    dk_pose pose = dk_pose_identity();
    pose.t[2] = -1;
    for (int model = 0; model < 3; model++) {
        dk_camera cam;
        double k[6] = { -0.2, 0.05, 0, 0, 0, 0 };
        if (model == 0)
            dk_camera_init_pinhole(&cam, W, H, 120, 120, 100, 75);
        else
            dk_camera_init_opencv(&cam, W, H, 120, 120, 100, 75, k, NULL, NULL);
        dk_render_config rc;
        dk_render_config_init(&rc);
        if (model == 2) {   /* rolling shutter, moving and turning */
            cam.shutter = DK_SHUTTER_LEFT_TO_RIGHT;
            rc.rolling_shutter = 1;
            double t[3] = { 0.2, 0.1, -0.8 };
            rc.cam_to_world_end = dk_pose_from_euler(t, 0.05, 0.02, 0.0);
        }
        DK_CHECK_OK(dk_render_camera(s, &cam, &pose, &rc, NULL, c[0], a[0], d[0]));
        DK_CHECK_OK(dk_render_camera(s, &cam, &pose, &rc, pool, c[1], a[1], d[1]));
        DK_CHECK(memcmp(a[0], a[1], np * 4) == 0);
        DK_CHECK(memcmp(c[0], c[1], np * 12) == 0);
        DK_CHECK(memcmp(d[0], d[1], np * 4) == 0);
        double cover = 0;
        for (size_t p = 0; p < np; p++) cover += a[0][p];
        DK_CHECK(cover > 0.3 * (double)np);
        for (size_t p = 0; p < np; p++) DK_CHECK(isfinite(c[0][p * 3]) && a[0][p] <= 1.0f);
    }
    for (int k = 0; k < 2; k++) {
        free(a[k]);
        free(c[k]);
        free(d[k]);
    }
    dk_pool_destroy(pool);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void region_centroid(const float *a, int W, int y0, int y1, double *cx, double *cy)
{
    double sw = 0, sx = 0, sy = 0;
    for (int j = y0; j < y1; j++)
        for (int i = 0; i < W; i++) {
            sw += a[j * W + i];
            sx += a[j * W + i] * (i + 0.5);
            sy += a[j * W + i] * (j + 0.5);
        }
    *cx = sw > 0 ? sx / sw : -1;
    *cy = sw > 0 ? sy / sw : -1;
}

static void test_render_rolling_shutter(void)
{
    /* The camera slides 0.5 m along its x axis during a top-to-bottom readout:
     * a point in row v is seen from x = 0.5 floor(v)/(H-1), so it lands at
     * u = cx - fx 0.5 t / z. */
    int64_t live = dk_alloc_live();
    const int W = 100, H = 80;
    dk_camera cam;
    dk_camera_init_pinhole(&cam, W, H, 80, 80, 50, 40);
    cam.shutter = DK_SHUTTER_TOP_TO_BOTTOM;
    dk_scene *s = NULL;
    DK_CHECK_OK(dk_scene_create(2, 0, 0, &s));
    const double vrow[2] = { 10.5, 60.5 };
    for (int g = 0; g < 2; g++) {
        s->means[g * 3 + 1] = (float)((vrow[g] - 40) * 5 / 80);
        s->means[g * 3 + 2] = 5;
        for (int j = 0; j < 3; j++) s->scales[g * 3 + j] = (float)log(0.01);
        s->rotations[g * 4] = 1;
        s->opacities[g] = logit(0.9);
    }
    dk_render_config rc;
    dk_render_config_init(&rc);
    rc.rolling_shutter = 1;
    rc.cam_to_world_end = dk_pose_identity();
    rc.cam_to_world_end.t[0] = 0.5;
    dk_pose start = dk_pose_identity();
    float *a = malloc((size_t)W * H * 4), *b = malloc((size_t)W * H * 4);
    DK_CHECK_OK(dk_render_camera(s, &cam, &start, &rc, NULL, NULL, a, NULL));
    for (int g = 0; g < 2; g++) {
        double cx, cy;
        region_centroid(a, W, g ? 40 : 0, g ? 80 : 40, &cx, &cy);
        double t = floor(vrow[g]) / (H - 1);
        DK_CHECK_NEAR(cx, 50 - 80 * 0.5 * t / 5, 0.05);
        DK_CHECK_NEAR(cy, vrow[g], 0.05);
    }
    /* Equal start and end poses: the same image as a global shutter (UT). */
    rc.cam_to_world_end = start;
    DK_CHECK_OK(dk_render_camera(s, &cam, &start, &rc, NULL, NULL, a, NULL));
    dk_render_config g;
    dk_render_config_init(&g);
    g.projection = DK_PROJ_UT;
    DK_CHECK_OK(dk_render_camera(s, &cam, &start, &g, NULL, NULL, b, NULL));
    DK_CHECK(memcmp(a, b, (size_t)W * H * 4) == 0);
    g.projection = DK_PROJ_EWA;
    g.rolling_shutter = 1;
    DK_CHECK_STATUS(dk_render_camera(s, &cam, &start, &g, NULL, NULL, b, NULL), DK_EINVAL);
    free(a);
    free(b);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_actor_tracks(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s;
    DK_CHECK_OK(dk_scene_create(2, 0, DK_SCENE_ACTOR_ID, &s));
    DK_CHECK_EQ_INT(dk_scene_actor_track_count(s), 0);
    dk_pose p;
    DK_CHECK_STATUS(dk_scene_actor_pose(s, 3, 0.0, &p), DK_ENOENT);
    double times[3] = { 0.0, 1.0, 2.0 };
    dk_pose poses[3] = { dk_pose_from_yaw(0, 0, 0, 0), dk_pose_from_yaw(10, 0, 0, 0),
                         dk_pose_from_yaw(10, 10, 0, 1.0) };
    DK_CHECK_OK(dk_scene_set_actor_track(s, 7, 3, times, poses));
    DK_CHECK_OK(dk_scene_set_actor_track(s, 3, 1, times, poses));
    DK_CHECK_EQ_INT(dk_scene_actor_track_count(s), 2);
    int32_t ids[4];
    DK_CHECK_EQ_INT(dk_scene_actor_track_ids(s, ids, 4), 2);
    DK_CHECK_EQ_INT(ids[0], 3);
    DK_CHECK_EQ_INT(ids[1], 7);
    /* Interpolation, holding before and after the track. */
    DK_CHECK_OK(dk_scene_actor_pose(s, 7, 0.25, &p));
    DK_CHECK_NEAR(p.t[0], 2.5, 1e-12);
    DK_CHECK_OK(dk_scene_actor_pose(s, 7, 1.5, &p));
    DK_CHECK_NEAR(p.t[1], 5.0, 1e-12);
    DK_CHECK_NEAR(dk_pose_yaw(&p), 0.5, 1e-9);
    DK_CHECK_OK(dk_scene_actor_pose(s, 7, -4.0, &p));
    DK_CHECK_NEAR(p.t[0], 0.0, 1e-12);
    DK_CHECK_OK(dk_scene_actor_pose(s, 7, 9.0, &p));
    DK_CHECK_NEAR(dk_pose_yaw(&p), 1.0, 1e-9);
    DK_CHECK_STATUS(dk_scene_actor_pose(s, 7, NAN, &p), DK_EINVAL);
    /* Replacing keeps one track per id. */
    DK_CHECK_OK(dk_scene_set_actor_track(s, 7, 1, times + 2, poses + 2));
    DK_CHECK_EQ_INT(dk_scene_actor_track_count(s), 2);
    int n;
    const double *tt;
    const dk_pose *pp;
    DK_CHECK_OK(dk_scene_actor_track(s, 7, &n, &tt, &pp));
    DK_CHECK_EQ_INT(n, 1);
    DK_CHECK_NEAR(tt[0], 2.0, 0);
    /* Bad keyframes leave the scene unchanged and name the keyframe. */
    double bad_times[2] = { 1.0, 1.0 };
    DK_CHECK_STATUS(dk_scene_set_actor_track(s, 7, 2, bad_times, poses), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "keyframe 1");
    dk_pose skew = poses[0];
    skew.q[0] = 0.5;
    DK_CHECK_STATUS(dk_scene_set_actor_track(s, 7, 1, times, &skew), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "rigid");
    skew.q[0] = NAN;
    DK_CHECK_STATUS(dk_scene_set_actor_track(s, 7, 1, times, &skew), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_scene_set_actor_track(s, -1, 1, times, poses), DK_EINVAL);
    DK_CHECK_STATUS(dk_scene_set_actor_track(s, 1, 0, times, poses), DK_EINVAL);
    DK_CHECK_OK(dk_scene_actor_track(s, 7, &n, &tt, &pp));
    DK_CHECK_EQ_INT(n, 1);
    DK_CHECK_OK(dk_scene_remove_actor_track(s, 3));
    DK_CHECK_STATUS(dk_scene_remove_actor_track(s, 3), DK_ENOENT);
    DK_CHECK_EQ_INT(dk_scene_actor_track_count(s), 1);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* Builds the actor-placement scene: Gaussian 0 belongs to actor 2, 1 to actor
 * 5, 2 is static. With `placed`, Gaussian 0 is stored at actor 2's pose
 * instead (R = 180 degrees about z, t = (1, -0.25, 4), rotation q_a * q) and
 * carries no actor. The values are dyadic, so the placement is exact. */
static dk_scene *actor_scene(int placed)
{
    dk_scene *s = NULL;
    if (dk_scene_create(3, 1, DK_SCENE_ACTOR_ID, &s)) return NULL;
    const float mean[3][3] = { { 0.25f, 0.5f, -0.75f }, { -0.5f, 0.25f, 5 }, { 0.125f, 0.375f, 6 } };
    const float q[4] = { 0.5f, -0.5f, 0.25f, 0.75f };   /* norm^2 = 1.125 in any order */
    for (int g = 0; g < 3; g++) {
        for (int j = 0; j < 3; j++) {
            s->means[g * 3 + j] = mean[g][j];
            s->scales[g * 3 + j] = (float)log(0.08 + 0.03 * j);
        }
        for (int j = 0; j < 4; j++) s->rotations[g * 4 + j] = q[j];
        s->opacities[g] = logit(0.8);
        for (int k = 0; k < 12; k++) s->sh[g * 12 + k] = frand(-0.6f, 0.6f);
    }
    s->actor_id[0] = 2;
    s->actor_id[1] = 5;
    if (placed) {
        /* q_a = (0, 0, 0, 1): q_a * q = (-q3, -q2, q1, q0); R_a = diag(-1, -1, 1). */
        const float qp[4] = { -q[3], -q[2], q[1], q[0] };
        s->means[0] = -mean[0][0] + 1.0f;
        s->means[1] = -mean[0][1] - 0.25f;
        s->means[2] = mean[0][2] + 4.0f;
        for (int j = 0; j < 4; j++) s->rotations[j] = qp[j];
        s->actor_id[0] = -1;
    }
    return s;
}

static void test_render_actor_placement(void)
{
    int64_t live = dk_alloc_live();
    rng_state = 777u;
    dk_scene *a = actor_scene(0);
    rng_state = 777u;
    dk_scene *b = actor_scene(1);
    DK_CHECK(a && b);
    /* Actor 2 moves from t = (0.5, -0.25, 4) to (1.5, -0.25, 4) over [0, 1];
       at time 0.5 it is at (1, -0.25, 4). Actor 7 has a track but no Gaussian. */
    double times[2] = { 0.0, 1.0 };
    dk_pose poses[2];
    for (int k = 0; k < 2; k++) {
        poses[k] = dk_pose_identity();
        poses[k].q[0] = 0;
        poses[k].q[3] = 1;
        poses[k].t[0] = 0.5 + k;
        poses[k].t[1] = -0.25;
        poses[k].t[2] = 4;
    }
    DK_CHECK_OK(dk_scene_set_actor_track(a, 2, 2, times, poses));
    DK_CHECK_OK(dk_scene_set_actor_track(a, 7, 1, times, poses));
    const int W = 64, H = 48;
    size_t np = (size_t)W * H;
    float *ca = malloc(np * 12), *cb = malloc(np * 12), *aa = malloc(np * 4), *ab = malloc(np * 4);
    float *da = malloc(np * 4), *db = malloc(np * 4);
    dk_pool *pool = NULL;
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = 3;
    DK_CHECK_OK(dk_pool_create(&pc, &pool));
    dk_pose cam_pose = dk_pose_identity();
    cam_pose.t[0] = 0.125;
    for (int model = 0; model < 2; model++) {
        dk_camera cam;
        double kf[4] = { 0.05, 0, 0, 0 };
        if (model == 0)
            dk_camera_init_pinhole(&cam, W, H, 50, 50, 32, 24);
        else
            dk_camera_init_fisheye(&cam, W, H, 40, 40, 32, 24, kf, 0);
        dk_render_config rc;
        dk_render_config_init(&rc);
        rc.time = 0.5;
        DK_CHECK_OK(dk_render_camera(a, &cam, &cam_pose, &rc, model ? pool : NULL, ca, aa, da));
        DK_CHECK_OK(dk_render_camera(b, &cam, &cam_pose, &rc, NULL, cb, ab, db));
        /* Tracked = stored at the placed pose, bit for bit (colour: the SH
           direction is taken from the placed mean). */
        DK_CHECK(memcmp(ca, cb, np * 12) == 0);
        DK_CHECK(memcmp(aa, ab, np * 4) == 0);
        DK_CHECK(memcmp(da, db, np * 4) == 0);
        double cover = 0;
        for (size_t p = 0; p < np; p++) cover += aa[p];
        DK_CHECK(cover > 20);
        /* At another time the actor is elsewhere. */
        rc.time = 0.0;
        DK_CHECK_OK(dk_render_camera(a, &cam, &cam_pose, &rc, NULL, ca, aa, da));
        DK_CHECK(memcmp(aa, ab, np * 4) != 0);
    }
    /* Actor ids without tracks are static: the same image as no actor ids. */
    DK_CHECK_OK(dk_scene_remove_actor_track(a, 2));
    rng_state = 777u;
    dk_scene *c = actor_scene(0);
    DK_CHECK(c != NULL);
    for (int g = 0; g < 3; g++) c->actor_id[g] = -1;
    dk_camera cam;
    dk_camera_init_pinhole(&cam, W, H, 50, 50, 32, 24);
    dk_render_config rc;
    dk_render_config_init(&rc);
    rc.time = 0.5;
    DK_CHECK_OK(dk_render_camera(a, &cam, &cam_pose, &rc, NULL, ca, aa, da));
    DK_CHECK_OK(dk_render_camera(c, &cam, &cam_pose, &rc, NULL, cb, ab, db));
    DK_CHECK(memcmp(ca, cb, np * 12) == 0);
    DK_CHECK(memcmp(aa, ab, np * 4) == 0);
    /* Bad times. */
    rc.time = NAN;
    DK_CHECK_STATUS(dk_render_camera(a, &cam, &cam_pose, &rc, NULL, ca, aa, da), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "time");
    rc.time = 0;
    rc.readout_duration = -0.01;
    DK_CHECK_STATUS(dk_render_camera(a, &cam, &cam_pose, &rc, NULL, ca, aa, da), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "readout_duration");
    rc.readout_duration = INFINITY;
    DK_CHECK_STATUS(dk_render_camera(a, &cam, &cam_pose, &rc, NULL, ca, aa, da), DK_EINVAL);
    free(ca);
    free(cb);
    free(aa);
    free(ab);
    free(da);
    free(db);
    dk_pool_destroy(pool);
    dk_scene_destroy(a);
    dk_scene_destroy(b);
    dk_scene_destroy(c);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_render_actor_rolling_shutter(void)
{
    /* A static camera reads out top to bottom while actor 1 drives along x
     * at 20 m/s: each row shows the actor at time + t_row * readout. Its
     * small Gaussians sit on pixel-row centres, so all their sigma points are
     * read out at one row time, and with a pure translation along x and
     * identity rotations the rolling-shutter arithmetic is exactly that of a
     * global-shutter render at the row's time: the rows must be equal. */
    int64_t live = dk_alloc_live();
    const int W = 64, H = 48, NG = 4;
    dk_camera cam;
    dk_camera_init_pinhole(&cam, W, H, 60, 60, 32, 24);
    cam.shutter = DK_SHUTTER_TOP_TO_BOTTOM;
    dk_scene *s = NULL;
    DK_CHECK_OK(dk_scene_create(NG + 1, 0, DK_SCENE_ACTOR_ID, &s));
    const double vrow[4] = { 6.5, 18.5, 30.5, 42.5 };
    for (int g = 0; g < NG; g++) {
        s->means[g * 3 + 1] = (float)((vrow[g] - 24) * 5 / 60);
        s->means[g * 3 + 2] = 5;
        for (int j = 0; j < 3; j++) s->scales[g * 3 + j] = (float)log(0.01);
        s->rotations[g * 4] = 1;
        s->opacities[g] = logit(0.9);
        s->actor_id[g] = 1;
    }
    /* A static Gaussian, untouched by the actor's motion. */
    s->means[NG * 3 + 0] = -1.5f;
    s->means[NG * 3 + 2] = 6;
    for (int j = 0; j < 3; j++) s->scales[NG * 3 + j] = (float)log(0.2);
    s->rotations[NG * 4] = 1;
    s->opacities[NG] = logit(0.5);
    double times[2] = { 0.0, 4.0 };
    dk_pose poses[2] = { dk_pose_identity(), dk_pose_identity() };
    poses[0].t[0] = -40;
    poses[1].t[0] = 40;
    DK_CHECK_OK(dk_scene_set_actor_track(s, 1, 2, times, poses));
    dk_render_config rc;
    dk_render_config_init(&rc);
    rc.rolling_shutter = 1;
    rc.cam_to_world_end = dk_pose_identity();
    rc.time = 2.0;
    rc.readout_duration = 0.04;
    dk_pose start = dk_pose_identity();
    size_t np = (size_t)W * H;
    float *rs = malloc(np * 4), *gs = malloc(np * 4), *g0 = malloc(np * 4);
    DK_CHECK_OK(dk_render_camera(s, &cam, &start, &rc, NULL, NULL, rs, NULL));
    dk_render_config g;
    dk_render_config_init(&g);
    g.projection = DK_PROJ_UT;
    g.time = rc.time;
    DK_CHECK_OK(dk_render_camera(s, &cam, &start, &g, NULL, NULL, g0, NULL));
    for (int k = 0; k < NG; k++) {
        double uv[2] = { 32, vrow[k] };
        double t = dk_camera_shutter_time(&cam, uv);
        DK_CHECK_NEAR(t, floor(vrow[k]) / (H - 1), 1e-15);
        g.time = rc.time + t * rc.readout_duration;
        DK_CHECK_OK(dk_render_camera(s, &cam, &start, &g, NULL, NULL, gs, NULL));
        int y0 = (int)vrow[k] - 4, y1 = (int)vrow[k] + 5;
        size_t o = (size_t)y0 * W, n = (size_t)(y1 - y0) * W;
        if (memcmp(rs + o, gs + o, n * 4) != 0) DK_FAIL_("rows %d..%d differ", y0, y1 - 1);
        double sw = 0;
        for (size_t p = o; p < o + n; p++) sw += rs[p];
        DK_CHECK(sw > 0.5);
        /* The actor moved (by 20 m/s * t * readout) since the readout start. */
        if (k > 0) DK_CHECK(memcmp(rs + o, g0 + o, n * 4) != 0);
    }
    /* Rolling shutter with actors is independent of the pool size. */
    dk_pool *pool = NULL;
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = 2;
    DK_CHECK_OK(dk_pool_create(&pc, &pool));
    DK_CHECK_OK(dk_render_camera(s, &cam, &start, &rc, pool, NULL, gs, NULL));
    DK_CHECK(memcmp(rs, gs, np * 4) == 0);
    dk_pool_destroy(pool);
    free(rs);
    free(gs);
    free(g0);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* Tests of the other src/sim parts, in their own files. */
extern const dk_test_case dk_tests_sim_lidar[];
extern const size_t dk_tests_sim_lidar_count;
extern const dk_test_case dk_tests_sim_world[];
extern const size_t dk_tests_sim_world_count;
extern const dk_test_case dk_tests_sim_loop[];
extern const size_t dk_tests_sim_loop_count;

int main(int argc, char **argv)
{
    static const dk_test_case cases[] = {
        DK_TEST(test_scene_create),
        DK_TEST(test_ply_round_trip),
        DK_TEST(test_ply_any_order_and_extras),
        DK_TEST(test_ply_malformed),
        DK_TEST(test_render_single_ewa),
        DK_TEST(test_render_distorted_centroid),
        DK_TEST(test_render_ut_matches_ewa),
        DK_TEST(test_render_blend_order),
        DK_TEST(test_render_sh_color),
        DK_TEST(test_render_sh_degree3),
        DK_TEST(test_render_hostile_values),
        DK_TEST(test_render_threads_invariant),
        DK_TEST(test_render_rolling_shutter),
        DK_TEST(test_actor_tracks),
        DK_TEST(test_render_actor_placement),
        DK_TEST(test_render_actor_rolling_shutter),
    };
    const dk_test_case *parts[] = { cases, dk_tests_sim_lidar, dk_tests_sim_world, dk_tests_sim_loop };
    size_t counts[] = { sizeof cases / sizeof cases[0], dk_tests_sim_lidar_count,
                        dk_tests_sim_world_count, dk_tests_sim_loop_count };
    size_t total = 0;
    for (size_t i = 0; i < 4; i++) total += counts[i];
    dk_test_case *all = malloc((total + 1) * sizeof *all);
    if (!all) return 1;
    size_t at = 0;
    for (size_t i = 0; i < 4; i++) {
        if (counts[i]) memcpy(all + at, parts[i], counts[i] * sizeof *all);
        at += counts[i];
    }
    int rc = dk_test_main(argc, argv, all, total);
    free(all);
    return rc;
}
