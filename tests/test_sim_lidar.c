/* Tests of src/sim: lidar rendering (dk_render_lidar, dk_lidar_points). */
#include "dk_test.h"

#include "drivekit/sim.h"

#define PI 3.14159265358979323846
#define DEG (PI / 180.0)

/* Gaussians of the flat patches below: in-plane and normal standard deviation
 * (metres) and opacity logit. The analytic tolerances derive from them. */
#define PATCH_SPACING 0.1
#define SIGMA_P 0.08
#define SIGMA_N 0.002
#define PATCH_LOGIT 6.0f

/* A small lidar with a non-uniform beam table (denser near the horizon) and
 * per-beam azimuth offsets, so the binary search and the offsets matter. */
static void small_lidar(dk_lidar_model *m, int n_beams, int n_columns)
{
    memset(m, 0, sizeof *m);
    m->n_beams = n_beams;
    m->n_columns = n_columns;
    m->spin_hz = 10;
    m->direction = 1;
    m->azimuth_start = 0;
    m->min_range = 0.5;
    m->max_range = 60;
    for (int b = 0; b < n_beams; b++) {
        double u = (double)b / (n_beams - 1) * 2 - 1;   /* -1..1 */
        m->elevation[b] = (u * fabs(u) * 20.0 - 3.0) * DEG;
        m->azimuth_offset[b] = (b % 3 - 1) * 0.2 * DEG;
    }
}

/* Adds a rectangular patch of flat Gaussians: centre c, in-plane axes u, v
 * (unit, orthogonal), half sizes hu, hv. Returns the next free index. */
static int64_t add_patch(dk_scene *s, int64_t at, const double c[3], const double u[3],
                         const double v[3], double hu, double hv)
{
    double n[3] = { u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0] };
    double R[9] = { u[0], v[0], n[0], u[1], v[1], n[1], u[2], v[2], n[2] };
    double q[4];
    dk_rotation_to_quat(R, q);
    int nu = (int)floor(hu / PATCH_SPACING + 1e-9), nv = (int)floor(hv / PATCH_SPACING + 1e-9);
    for (int i = -nu; i <= nu; i++)
        for (int j = -nv; j <= nv; j++) {
            if (s && at < s->n) {
                for (int k = 0; k < 3; k++)
                    s->means[at * 3 + k] =
                        (float)(c[k] + i * PATCH_SPACING * u[k] + j * PATCH_SPACING * v[k]);
                s->scales[at * 3] = s->scales[at * 3 + 1] = (float)log(SIGMA_P);
                s->scales[at * 3 + 2] = (float)log(SIGMA_N);
                for (int k = 0; k < 4; k++) s->rotations[at * 4 + k] = (float)q[k];
                s->opacities[at] = PATCH_LOGIT;
            }
            at++;
        }
    return at;
}

/* The wall x = 10, |y| <= 7, |z| <= 3 (world frame). */
static dk_scene *wall_scene(unsigned fields)
{
    const double c[3] = { 10, 0, 0 }, u[3] = { 0, 1, 0 }, v[3] = { 0, 0, 1 };
    int64_t n = add_patch(NULL, 0, c, u, v, 7, 3);
    dk_scene *s = NULL;
    if (dk_scene_create(n, 0, fields, &s)) return NULL;
    add_patch(s, 0, c, u, v, 7, 3);
    return s;
}

static float *alloc_img(const dk_lidar_model *m)
{
    return calloc((size_t)m->n_beams * (size_t)m->n_columns, sizeof(float));
}

/* Tolerance of a range against the true surface, from the Gaussian size: the
 * blended peak lies within a few normal sigmas of the plane, stretched by the
 * incidence; plus float rounding. */
static double plane_tol(double cos_inc, double range)
{
    return 4.0 * SIGMA_N / cos_inc + 2e-6 * range + 1e-4;
}

static void test_lidar_plane_analytic(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = wall_scene(0);
    DK_CHECK(s != NULL);
    dk_lidar_model m;
    small_lidar(&m, 24, 720);
    dk_lidar_render_config cfg;
    dk_lidar_render_config_init(&cfg);
    dk_pose pose = dk_pose_identity();
    float *range = alloc_img(&m), *alpha = alloc_img(&m), *inten = alloc_img(&m),
          *drop = alloc_img(&m);
    DK_CHECK_OK(dk_render_lidar(s, &m, &pose, &cfg, NULL, range, inten, drop, alpha));
    int hits = 0, misses = 0;
    for (int b = 0; b < m.n_beams; b++)
        for (int c = 0; c < m.n_columns; c++) {
            double d[3];
            dk_lidar_ray(&m, b, c, d, NULL);
            size_t i = (size_t)b * m.n_columns + c;
            DK_CHECK(alpha[i] >= 0 && alpha[i] <= 1);
            if (d[0] <= 0) {
                DK_CHECK_NEAR(range[i], 0, 0);
                DK_CHECK_NEAR(alpha[i], 0, 0);
                DK_CHECK_NEAR(drop[i], 1, 0);
                misses++;
                continue;
            }
            double t = 10.0 / d[0], y = t * d[1], z = t * d[2];
            if (fabs(y) < 7 - 0.3 && fabs(z) < 3 - 0.3) {
                DK_CHECK_NEAR(range[i], t, plane_tol(d[0], t));
                DK_CHECK(alpha[i] > 0.99f);
                DK_CHECK_NEAR(inten[i], 0.5, 1e-5);   /* default intensity */
                DK_CHECK_NEAR(drop[i], 1 - alpha[i], 1e-6);   /* default drop 0 */
                hits++;
            } else if (fabs(y) > 7 + 0.3 || fabs(z) > 3 + 0.3) {
                DK_CHECK_NEAR(range[i], 0, 0);
                DK_CHECK_NEAR(inten[i], 0, 0);
                misses++;
            }
        }
    DK_CHECK(hits > 1000);
    DK_CHECK(misses > 1000);
    /* The same wall seen from a translated, yawed lidar: ranges follow. */
    pose = dk_pose_from_yaw(2, 1, 0.5, 20 * DEG);
    DK_CHECK_OK(dk_render_lidar(s, &m, &pose, &cfg, NULL, range, NULL, NULL, NULL));
    hits = 0;
    for (int b = 0; b < m.n_beams; b++)
        for (int c = 0; c < m.n_columns; c++) {
            double d[3], dw[3];
            dk_lidar_ray(&m, b, c, d, NULL);
            dk_pose_rotate(&pose, d, dw);
            if (dw[0] <= 0.2) continue;
            double t = (10.0 - pose.t[0]) / dw[0];
            double y = pose.t[1] + t * dw[1], z = pose.t[2] + t * dw[2];
            if (fabs(y) < 6.7 && fabs(z) < 2.7) {
                DK_CHECK_NEAR(range[(size_t)b * m.n_columns + c], t, plane_tol(dw[0], t));
                hits++;
            }
        }
    DK_CHECK(hits > 1000);
    /* max_range below the wall: no returns at all. */
    m.max_range = 5;
    DK_CHECK_OK(dk_render_lidar(s, &m, &pose, &cfg, NULL, range, NULL, NULL, alpha));
    for (size_t i = 0; i < (size_t)m.n_beams * m.n_columns; i++) {
        DK_CHECK_NEAR(range[i], 0, 0);
        DK_CHECK_NEAR(alpha[i], 0, 0);
    }
    free(range);
    free(alpha);
    free(inten);
    free(drop);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* Entry distance of ray o + t d into the box [lo, hi] (slab method), or -1. */
static double ray_box(const double o[3], const double d[3], const double lo[3],
                      const double hi[3], int *axis)
{
    double t0 = -INFINITY, t1 = INFINITY;
    *axis = -1;
    for (int k = 0; k < 3; k++) {
        if (fabs(d[k]) < 1e-12) {
            if (o[k] < lo[k] || o[k] > hi[k]) return -1;
            continue;
        }
        double a = (lo[k] - o[k]) / d[k], b = (hi[k] - o[k]) / d[k];
        if (a > b) {
            double t = a;
            a = b;
            b = t;
        }
        if (a > t0) {
            t0 = a;
            *axis = k;
        }
        if (b < t1) t1 = b;
    }
    return t0 <= t1 && t0 > 0 ? t0 : -1;
}

static void test_lidar_box_analytic(void)
{
    int64_t live = dk_alloc_live();
    /* A 3 m cube behind-left of the lidar (azimuth ~ ±180 deg: the atan2 seam). */
    const double ctr[3] = { -8, 0.5, 0.5 }, h = 1.5;
    const double lo[3] = { ctr[0] - h, ctr[1] - h, ctr[2] - h },
                 hi[3] = { ctr[0] + h, ctr[1] + h, ctr[2] + h };
    double faces[6][3][3];   /* centre, u, v */
    for (int a = 0; a < 3; a++)
        for (int sg = 0; sg < 2; sg++) {
            double (*f)[3] = faces[a * 2 + sg];
            for (int k = 0; k < 3; k++) {
                f[0][k] = ctr[k];
                f[1][k] = f[2][k] = 0;
            }
            f[0][a] += sg ? h : -h;
            f[1][(a + 1) % 3] = 1;
            f[2][(a + 2) % 3] = 1;
        }
    int64_t n = 0;
    for (int f = 0; f < 6; f++) n = add_patch(NULL, n, faces[f][0], faces[f][1], faces[f][2], h, h);
    dk_scene *s;
    DK_CHECK_OK(dk_scene_create(n, 0, 0, &s));
    n = 0;
    for (int f = 0; f < 6; f++) n = add_patch(s, n, faces[f][0], faces[f][1], faces[f][2], h, h);
    dk_lidar_model m;
    small_lidar(&m, 32, 900);
    m.direction = -1;
    m.azimuth_start = 170 * DEG;
    dk_lidar_render_config cfg;
    dk_lidar_render_config_init(&cfg);
    dk_pose pose = dk_pose_identity();
    float *range = alloc_img(&m);
    DK_CHECK_OK(dk_render_lidar(s, &m, &pose, &cfg, NULL, range, NULL, NULL, NULL));
    const double o[3] = { 0, 0, 0 };
    int hits = 0, misses = 0;
    for (int b = 0; b < m.n_beams; b++)
        for (int c = 0; c < m.n_columns; c++) {
            double d[3];
            dk_lidar_ray(&m, b, c, d, NULL);
            int axis;
            double t = ray_box(o, d, lo, hi, &axis);
            float r = range[(size_t)b * m.n_columns + c];
            /* A miss by a margin (the grown box is missed), or a hit at least
             * 0.3 m from the face's edges. */
            double lo3[3], hi3[3];
            for (int k = 0; k < 3; k++) {
                lo3[k] = lo[k] - 0.3;
                hi3[k] = hi[k] + 0.3;
            }
            int ax3, clear = t > 0;
            double t3 = ray_box(o, d, lo3, hi3, &ax3);
            for (int k = 0; k < 3 && clear; k++)
                if (k != axis) clear = t * d[k] > lo[k] + 0.3 && t * d[k] < hi[k] - 0.3;
            if (t3 < 0) {
                DK_CHECK_NEAR(r, 0, 0);
                misses++;
            } else if (clear) {
                double cos_inc = fabs(d[axis]);
                DK_CHECK_NEAR(r, t, plane_tol(cos_inc, t));
                hits++;
            }
        }
    DK_CHECK(hits > 300);
    DK_CHECK(misses > 1000);
    free(range);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static uint32_t lcg = 777u;
static float frnd(float lo, float hi)
{
    lcg = lcg * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(lcg >> 8) / 16777216.0f;
}

/* Random Gaussians in a street-like volume around the origin. */
static dk_scene *random_scene(int64_t n, unsigned fields)
{
    dk_scene *s;
    if (dk_scene_create(n, 0, fields, &s)) return NULL;
    for (int64_t i = 0; i < n; i++) {
        s->means[i * 3] = frnd(-30, 30);
        s->means[i * 3 + 1] = frnd(-10, 10);
        s->means[i * 3 + 2] = frnd(-2, 5);
        for (int k = 0; k < 3; k++) s->scales[i * 3 + k] = frnd(-3.5f, -0.5f);
        for (int k = 0; k < 4; k++) s->rotations[i * 4 + k] = frnd(-1, 1);
        s->rotations[i * 4] += 1.2f;
        s->opacities[i] = frnd(-3, 4);
        if (s->lidar_intensity) {
            s->lidar_intensity[i] = frnd(-3, 3);
            s->lidar_raydrop[i] = frnd(-4, 1);
        }
        if (s->actor_id) s->actor_id[i] = i % 5 == 0 ? (int32_t)(i % 3) : -1;
    }
    return s;
}

/* Brute-force reference (world frame, double precision): every Gaussian's
 * peak t* and alpha along the ray, sorted by t*, blended front to back. */
typedef struct ref_gauss {
    double P[9], mu[3], op;
} ref_gauss;

static ref_gauss *ref_prepare(const dk_scene *s)
{
    ref_gauss *g = calloc((size_t)(s->n ? s->n : 1), sizeof *g);
    for (int64_t i = 0; g && i < s->n; i++) {
        const float *qf = s->rotations + i * 4;
        double q[4] = { qf[0], qf[1], qf[2], qf[3] }, R[9], inv[3];
        double qn = sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
        for (int j = 0; j < 4; j++) q[j] /= qn;
        dk_quat_to_rotation(q, R);
        for (int j = 0; j < 3; j++) inv[j] = exp(-2.0 * s->scales[i * 3 + j]);
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                g[i].P[a * 3 + b] = 0;
                for (int j = 0; j < 3; j++) g[i].P[a * 3 + b] += R[a * 3 + j] * inv[j] * R[b * 3 + j];
            }
        for (int a = 0; a < 3; a++) g[i].mu[a] = s->means[i * 3 + a];
        g[i].op = 1 / (1 + exp(-(double)s->opacities[i]));
    }
    return g;
}

/* Writes alpha and range (0 below the hit threshold 0.5) of one ray. */
static void ref_ray(const ref_gauss *g, int64_t n, const double o[3], const double d[3],
                    double tmin, double tmax, double out[2])
{
    int64_t k = 0;
    double *tt = malloc((size_t)(n ? n : 1) * 2 * sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        const double *P = g[i].P;
        if (!(g[i].op >= 1 / 255.0)) continue;
        double mo[3], Pd[3];
        for (int a = 0; a < 3; a++) mo[a] = g[i].mu[a] - o[a];
        for (int a = 0; a < 3; a++) Pd[a] = P[a * 3] * d[0] + P[a * 3 + 1] * d[1] + P[a * 3 + 2] * d[2];
        double t = (mo[0] * Pd[0] + mo[1] * Pd[1] + mo[2] * Pd[2]) /
                   (d[0] * Pd[0] + d[1] * Pd[1] + d[2] * Pd[2]);
        if (!(t >= tmin && t <= tmax)) continue;
        double r[3], m2 = 0;
        for (int a = 0; a < 3; a++) r[a] = t * d[a] - mo[a];
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) m2 += r[a] * P[a * 3 + b] * r[b];
        if (m2 > 40) continue;   /* alpha far below 1/255 */
        double al = g[i].op * exp(-0.5 * m2);
        if (al < 1 / 255.0) continue;
        tt[2 * k] = t;
        tt[2 * k + 1] = al > 0.99 ? 0.99 : al;
        k++;
    }
    for (int64_t a = 1; a < k; a++) {   /* insertion sort by t */
        double t0 = tt[2 * a], a0 = tt[2 * a + 1];
        int64_t b = a - 1;
        while (b >= 0 && tt[2 * b] > t0) {
            tt[2 * b + 2] = tt[2 * b];
            tt[2 * b + 3] = tt[2 * b + 1];
            b--;
        }
        tt[2 * b + 2] = t0;
        tt[2 * b + 3] = a0;
    }
    double T = 1, W = 0, Wt = 0;
    for (int64_t a = 0; a < k; a++) {
        double nt = T * (1 - tt[2 * a + 1]);
        if (nt < 1e-4) break;
        W += tt[2 * a + 1] * T;
        Wt += tt[2 * a] * tt[2 * a + 1] * T;
        T = nt;
    }
    out[0] = 1 - T;
    out[1] = W > 0 && 1 - T >= 0.5 ? Wt / W : 0;
    free(tt);
}

/* The tiled renderer against the brute-force reference on random scenes,
 * static and moving: same alpha and range up to float rounding (a few rays
 * may flip at the T or hit thresholds). */
static void test_lidar_matches_reference(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = random_scene(1500, 0);
    DK_CHECK(s != NULL);
    dk_lidar_model m;
    small_lidar(&m, 12, 200);
    m.direction = -1;
    m.azimuth_start = 2.0;
    dk_lidar_render_config cfg;
    dk_lidar_render_config_init(&cfg);
    dk_pose start = dk_pose_from_yaw(0.5, -0.5, 1.0, 0.4);
    size_t nr = (size_t)m.n_beams * m.n_columns;
    float *range = alloc_img(&m), *alpha = alloc_img(&m);
    ref_gauss *rg = ref_prepare(s);
    DK_CHECK(rg != NULL);
    for (int moving = 0; moving < 2; moving++) {
        cfg.sensor_motion = moving;
        cfg.lidar_to_world_end = dk_pose_from_yaw(2.5, 0.5, 1.2, 0.7);
        DK_CHECK_OK(dk_render_lidar(s, &m, &start, &cfg, NULL, range, NULL, NULL, alpha));
        int off = 0, returns = 0;
        for (int b = 0; b < m.n_beams; b++)
            for (int c = 0; c < m.n_columns; c++) {
                double d[3], dw[3], out[2];
                dk_lidar_ray(&m, b, c, d, NULL);
                dk_pose pc = moving ? dk_pose_interpolate(&start, &cfg.lidar_to_world_end,
                                                          (double)c / m.n_columns)
                                    : start;
                dk_pose_rotate(&pc, d, dw);
                ref_ray(rg, s->n, pc.t, dw, m.min_range, m.max_range, out);
                size_t i = (size_t)b * m.n_columns + c;
                returns += out[1] > 0;
                if (!(fabs(alpha[i] - out[0]) <= 1e-4) ||
                    !(fabs(range[i] - out[1]) <= 1e-4 * out[1] + 1e-4))
                    off++;
            }
        DK_CHECK(returns > (int)nr / 4);
        DK_CHECK(off <= (int)nr / 200);
    }
    free(rg);
    free(range);
    free(alpha);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_lidar_presets(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = random_scene(300, DK_SCENE_LIDAR);
    DK_CHECK(s != NULL);
    const dk_lidar_preset presets[3] = { DK_LIDAR_32, DK_LIDAR_64, DK_LIDAR_128 };
    dk_lidar_render_config cfg;
    dk_lidar_render_config_init(&cfg);
    dk_pose pose = dk_pose_from_yaw(0, 0, 1.8, 0.3);
    for (int p = 0; p < 3; p++) {
        dk_lidar_model m;
        DK_CHECK_OK(dk_lidar_model_preset(&m, presets[p]));
        size_t nr = (size_t)m.n_beams * m.n_columns;
        float *range = alloc_img(&m), *alpha = alloc_img(&m), *inten = alloc_img(&m),
              *drop = alloc_img(&m);
        DK_CHECK_OK(dk_render_lidar(s, &m, &pose, &cfg, NULL, range, inten, drop, alpha));
        size_t returns = 0;
        for (size_t i = 0; i < nr; i++) {
            DK_CHECK(isfinite(range[i]) && isfinite(alpha[i]) && isfinite(inten[i]) &&
                     isfinite(drop[i]));
            DK_CHECK(alpha[i] >= 0 && alpha[i] <= 1 && drop[i] >= 0 && drop[i] <= 1 &&
                     inten[i] >= 0 && inten[i] <= 1);
            if (range[i] > 0) {
                returns++;
                DK_CHECK(range[i] >= m.min_range && range[i] <= m.max_range);
                DK_CHECK(alpha[i] >= 0.5f);
            }
        }
        DK_CHECK(returns > nr / 50);
        int64_t np = 0;
        DK_CHECK_OK(dk_lidar_points(&m, &pose, &cfg, range, inten, drop, NULL, 0, &np));
        DK_CHECK(np > 0 && (size_t)np <= returns);
        free(range);
        free(alpha);
        free(inten);
        free(drop);
    }
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_lidar_threads_invariant(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = random_scene(4000, DK_SCENE_LIDAR | DK_SCENE_ACTOR_ID);
    DK_CHECK(s != NULL);
    /* Two tracked actors (the third id has no track: static). */
    double times[2] = { 0.0, 0.1 };
    dk_pose p0[2] = { dk_pose_from_yaw(0, 5, 0, 0), dk_pose_from_yaw(2, 5, 0, 0.3) };
    dk_pose p1[2] = { dk_pose_from_yaw(-5, -3, 0, 1), dk_pose_from_yaw(-5, -1, 0, 1) };
    DK_CHECK_OK(dk_scene_set_actor_track(s, 0, 2, times, p0));
    DK_CHECK_OK(dk_scene_set_actor_track(s, 1, 2, times, p1));
    dk_lidar_model m;
    small_lidar(&m, 40, 1000);
    dk_lidar_render_config cfg;
    dk_lidar_render_config_init(&cfg);
    cfg.time = 0.01;
    cfg.sensor_motion = 1;
    cfg.lidar_to_world_end = dk_pose_from_yaw(1.5, 0.2, 1.6, 0.05);
    dk_pose pose = dk_pose_from_yaw(0, 0, 1.5, 0);
    size_t nr = (size_t)m.n_beams * m.n_columns;
    float *ref = calloc(nr * 4, sizeof(float)), *got = calloc(nr * 4, sizeof(float));
    DK_CHECK_OK(dk_render_lidar(s, &m, &pose, &cfg, NULL, ref, ref + nr, ref + 2 * nr, ref + 3 * nr));
    size_t returns = 0;
    for (size_t i = 0; i < nr; i++) returns += ref[i] > 0;
    DK_CHECK(returns > nr / 10);
    for (int th = 2; th <= 3; th++) {
        dk_pool_config pc;
        dk_pool_config_init(&pc);
        pc.n_threads = th;
        dk_pool *pool;
        DK_CHECK_OK(dk_pool_create(&pc, &pool));
        memset(got, 0xff, nr * 4 * sizeof(float));
        DK_CHECK_OK(dk_render_lidar(s, &m, &pose, &cfg, pool, got, got + nr, got + 2 * nr,
                                    got + 3 * nr));
        dk_pool_destroy(pool);
        DK_CHECK(memcmp(ref, got, nr * 4 * sizeof(float)) == 0);
    }
    free(ref);
    free(got);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* A 2 m x 2 m actor panel (local plane x = 0) at x = 10 moving along +y at
 * 40 m/s; the sweep passes azimuth 0 mid-way. Every column must see the
 * panel where it is at that column's firing time. */
static void test_lidar_moving_actor(void)
{
    int64_t live = dk_alloc_live();
    const double c[3] = { 0, 0, 0 }, u[3] = { 0, 1, 0 }, v[3] = { 0, 0, 1 };
    int64_t n = add_patch(NULL, 0, c, u, v, 1, 1);
    dk_scene *s;
    DK_CHECK_OK(dk_scene_create(n, 0, DK_SCENE_ACTOR_ID, &s));
    add_patch(s, 0, c, u, v, 1, 1);
    for (int64_t i = 0; i < n; i++) s->actor_id[i] = 4;
    const double speed = 40, y0 = -2;
    double times[2] = { 0.0, 1.0 };
    dk_pose poses[2] = { dk_pose_from_yaw(10, y0, 0, 0), dk_pose_from_yaw(10, y0 + speed, 0, 0) };
    DK_CHECK_OK(dk_scene_set_actor_track(s, 4, 2, times, poses));
    dk_lidar_model m;
    small_lidar(&m, 24, 1440);
    m.azimuth_start = PI;   /* azimuth 0 at mid-sweep, t = 0.05 s */
    dk_lidar_render_config cfg;
    dk_lidar_render_config_init(&cfg);
    dk_pose pose = dk_pose_identity();
    float *range = alloc_img(&m);
    DK_CHECK_OK(dk_render_lidar(s, &m, &pose, &cfg, NULL, range, NULL, NULL, NULL));
    int hits = 0, misses = 0, moved = 0;
    for (int b = 0; b < m.n_beams; b++)
        for (int col = 0; col < m.n_columns; col++) {
            double d[3], tc;
            dk_lidar_ray(&m, b, col, d, &tc);
            float r = range[(size_t)b * m.n_columns + col];
            if (d[0] <= 0) {
                DK_CHECK_NEAR(r, 0, 0);
                continue;
            }
            double t = 10.0 / d[0], y = t * d[1] - (y0 + speed * tc), z = t * d[2];
            if (fabs(y) < 0.75 && fabs(z) < 0.75) {
                DK_CHECK_NEAR(r, t, plane_tol(d[0], t));
                hits++;
                /* placed at the sweep start it would be >= 1.6 m away */
                if (fabs(t * d[1] - y0) > 1.3) moved++;
            } else if (fabs(y) > 1.25 || fabs(z) > 1.25) {
                DK_CHECK_NEAR(r, 0, 0);
                misses++;
            }
        }
    DK_CHECK(hits > 50);
    DK_CHECK(moved > 20);
    DK_CHECK(misses > 1000);
    /* A later sweep sees it farther along +y. */
    cfg.time = 0.1;
    DK_CHECK_OK(dk_render_lidar(s, &m, &pose, &cfg, NULL, range, NULL, NULL, NULL));
    hits = 0;
    for (int b = 0; b < m.n_beams; b++)
        for (int col = 0; col < m.n_columns; col++) {
            double d[3], tc;
            dk_lidar_ray(&m, b, col, d, &tc);
            if (d[0] <= 0) continue;
            double t = 10.0 / d[0], y = t * d[1] - (y0 + speed * (0.1 + tc)), z = t * d[2];
            if (fabs(y) < 0.75 && fabs(z) < 0.75) {
                DK_CHECK_NEAR(range[(size_t)b * m.n_columns + col], t, plane_tol(d[0], t));
                hits++;
            }
        }
    DK_CHECK(hits > 50);
    free(range);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* The lidar drives 3 m and turns 12 deg during one sweep in front of the wall
 * x = 10: each column sees it from its own pose; compensated points land on
 * the wall in the start frame. */
static void test_lidar_sensor_motion(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = wall_scene(0);
    DK_CHECK(s != NULL);
    dk_lidar_model m;
    small_lidar(&m, 24, 720);
    m.azimuth_start = PI;
    dk_lidar_render_config cfg;
    dk_lidar_render_config_init(&cfg);
    cfg.sensor_motion = 1;
    dk_pose start = dk_pose_from_yaw(0, 0, 0, 0);
    cfg.lidar_to_world_end = dk_pose_from_yaw(3, 0.5, 0, 12 * DEG);
    size_t nr = (size_t)m.n_beams * m.n_columns;
    float *range = alloc_img(&m), *inten = alloc_img(&m), *drop = alloc_img(&m);
    DK_CHECK_OK(dk_render_lidar(s, &m, &start, &cfg, NULL, range, inten, drop, NULL));
    int hits = 0, static_differs = 0;
    for (int b = 0; b < m.n_beams; b++)
        for (int c = 0; c < m.n_columns; c++) {
            double d[3], dw[3];
            dk_lidar_ray(&m, b, c, d, NULL);
            dk_pose pc = dk_pose_interpolate(&start, &cfg.lidar_to_world_end, (double)c / m.n_columns);
            dk_pose_rotate(&pc, d, dw);
            if (dw[0] <= 0.2) continue;
            double t = (10.0 - pc.t[0]) / dw[0];
            double y = pc.t[1] + t * dw[1], z = pc.t[2] + t * dw[2];
            if (fabs(y) < 6.7 && fabs(z) < 2.7) {
                DK_CHECK_NEAR(range[(size_t)b * m.n_columns + c], t, plane_tol(dw[0], t));
                hits++;
                if (fabs(t - 10.0 / d[0]) > 0.2) static_differs++;
            }
        }
    DK_CHECK(hits > 1000);
    DK_CHECK(static_differs > 500);
    /* Motion-compensated points: on the wall x = 10 in the start frame. */
    cfg.raydrop_mode = DK_LIDAR_RAYDROP_NONE;
    float *pts = calloc(nr * 6, sizeof(float));
    int64_t np = 0;
    DK_CHECK_OK(dk_lidar_points(&m, &start, &cfg, range, inten, drop, pts, (int64_t)nr, &np));
    DK_CHECK(np > 1000);
    int on_wall = 0;
    for (int64_t i = 0; i < np; i++) {
        const float *p = pts + i * 6;
        if (fabs(p[1]) < 6.5 && fabs(p[2]) < 2.5) {
            DK_CHECK_NEAR(p[0], 10.0, 5 * SIGMA_N / 0.5 + 1e-3);
            on_wall++;
        }
    }
    DK_CHECK(on_wall > 1000);
    free(pts);
    free(range);
    free(inten);
    free(drop);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_lidar_points(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = wall_scene(DK_SCENE_LIDAR);
    DK_CHECK(s != NULL);
    for (int64_t i = 0; i < s->n; i++) {
        s->lidar_intensity[i] = 1.0f;                         /* sigmoid 0.731 */
        s->lidar_raydrop[i] = i % 2 ? -30.0f : (float)log(0.3 / 0.7);   /* 0 or 0.3 */
    }
    dk_lidar_model m;
    small_lidar(&m, 24, 720);
    dk_lidar_render_config cfg;
    dk_lidar_render_config_init(&cfg);
    dk_pose pose = dk_pose_from_yaw(1, 0, 0, 0);
    size_t nr = (size_t)m.n_beams * m.n_columns;
    float *range = alloc_img(&m), *inten = alloc_img(&m), *drop = alloc_img(&m);
    DK_CHECK_OK(dk_render_lidar(s, &m, &pose, &cfg, NULL, range, inten, drop, NULL));
    int64_t returns = 0, mixed = 0;
    for (size_t i = 0; i < nr; i++)
        if (range[i] > 0) {
            returns++;
            DK_CHECK_NEAR(inten[i], 1 / (1 + exp(-1.0)), 1e-4);
            /* 1 - alpha (1 - q), alpha >= 0.5 (hit threshold), q in [0, 0.3] */
            DK_CHECK(drop[i] >= 0 && drop[i] <= 1 - 0.5 * 0.7 + 1e-6);
            mixed += drop[i] > 0.05f && drop[i] < 0.3f;   /* a blend of 0 and 0.3 */
        }
    DK_CHECK(returns > 1000);
    DK_CHECK(mixed > returns * 9 / 10);
    float *pts = calloc(nr * 6, sizeof(float));
    int64_t np = -1;
    /* Every return. */
    cfg.raydrop_mode = DK_LIDAR_RAYDROP_NONE;
    DK_CHECK_OK(dk_lidar_points(&m, &pose, &cfg, range, inten, NULL, pts, (int64_t)nr, &np));
    DK_CHECK_EQ_INT(np, returns);
    int64_t k = 0;
    for (int c = 0; c < m.n_columns; c++)
        for (int b = 0; b < m.n_beams; b++) {
            size_t i = (size_t)b * m.n_columns + c;
            if (!(range[i] > 0)) continue;
            const float *p = pts + k * 6;
            double d[3], tc;
            dk_lidar_ray(&m, b, c, d, &tc);
            for (int a = 0; a < 3; a++) DK_CHECK_NEAR(p[a], range[i] * d[a], 1e-4);
            DK_CHECK_NEAR(p[3], inten[i], 0);
            DK_CHECK_NEAR(p[4], b, 0);
            DK_CHECK_NEAR(p[5], tc, 1e-7);
            DK_CHECK_NEAR(p[5], c / (m.n_columns * m.spin_hz), 1e-7);
            k++;
        }
    DK_CHECK_EQ_INT(k, np);
    /* Capacity too small: DK_ERANGE with the count needed; count-only mode. */
    int64_t need = 0;
    DK_CHECK_STATUS(dk_lidar_points(&m, &pose, &cfg, range, inten, NULL, pts, 10, &need),
                    DK_ERANGE);
    DK_CHECK_EQ_INT(need, returns);
    DK_CHECK_OK(dk_lidar_points(&m, &pose, &cfg, range, NULL, NULL, NULL, 0, &need));
    DK_CHECK_EQ_INT(need, returns);
    /* Threshold: kept where drop < 0.5 (all but a few edge rays), none at 0.01. */
    cfg.raydrop_mode = DK_LIDAR_RAYDROP_THRESHOLD;
    int64_t below = 0;
    for (size_t i = 0; i < nr; i++) below += range[i] > 0 && drop[i] < 0.5f;
    DK_CHECK(below > returns * 9 / 10);
    DK_CHECK_OK(dk_lidar_points(&m, &pose, &cfg, range, inten, drop, NULL, 0, &need));
    DK_CHECK_EQ_INT(need, below);
    cfg.raydrop_threshold = 0.01;
    DK_CHECK_OK(dk_lidar_points(&m, &pose, &cfg, range, inten, drop, NULL, 0, &need));
    DK_CHECK_EQ_INT(need, 0);
    /* Sampled: reproducible, seed-dependent, about the expected fraction. */
    cfg.raydrop_mode = DK_LIDAR_RAYDROP_SAMPLE;
    cfg.raydrop_seed = 42;
    double expect = 0;
    for (size_t i = 0; i < nr; i++)
        if (range[i] > 0) expect += 1.0 - drop[i];
    float *pts2 = calloc(nr * 6, sizeof(float));
    int64_t n1 = 0, n2 = 0, n3 = 0;
    DK_CHECK_OK(dk_lidar_points(&m, &pose, &cfg, range, inten, drop, pts, (int64_t)nr, &n1));
    DK_CHECK_OK(dk_lidar_points(&m, &pose, &cfg, range, inten, drop, pts2, (int64_t)nr, &n2));
    DK_CHECK_EQ_INT(n1, n2);
    DK_CHECK(memcmp(pts, pts2, (size_t)n1 * 6 * sizeof(float)) == 0);
    DK_CHECK(n1 < returns);
    DK_CHECK_NEAR(n1, expect, 5 * sqrt(expect * 0.25) + 1);
    cfg.raydrop_seed = 43;
    DK_CHECK_OK(dk_lidar_points(&m, &pose, &cfg, range, inten, drop, pts2, (int64_t)nr, &n3));
    DK_CHECK(n3 != n1 || memcmp(pts, pts2, (size_t)n1 * 6 * sizeof(float)) != 0);
    free(pts);
    free(pts2);
    free(range);
    free(inten);
    free(drop);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_lidar_bad_input(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = random_scene(200, DK_SCENE_LIDAR);
    DK_CHECK(s != NULL);
    dk_lidar_model m;
    small_lidar(&m, 8, 90);
    dk_lidar_render_config cfg;
    dk_lidar_render_config_init(&cfg);
    dk_pose pose = dk_pose_identity();
    float *range = alloc_img(&m);
    int64_t np;
    DK_CHECK_STATUS(dk_render_lidar(NULL, &m, &pose, &cfg, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "scene");
    DK_CHECK_STATUS(dk_render_lidar(s, NULL, &pose, &cfg, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_render_lidar(s, &m, NULL, &cfg, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "lidar_to_world");
    DK_CHECK_STATUS(dk_render_lidar(s, &m, &pose, NULL, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    /* all outputs NULL is fine (nothing to write) */
    DK_CHECK_OK(dk_render_lidar(s, &m, &pose, &cfg, NULL, NULL, NULL, NULL, NULL));
    dk_lidar_model bad = m;
    bad.n_beams = 0;
    DK_CHECK_STATUS(dk_render_lidar(s, &bad, &pose, &cfg, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "n_beams");
    bad = m;
    bad.elevation[3] = NAN;
    DK_CHECK_STATUS(dk_render_lidar(s, &bad, &pose, &cfg, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "elevation[3]");
    bad = m;
    bad.elevation[2] = 95 * DEG;
    DK_CHECK_STATUS(dk_render_lidar(s, &bad, &pose, &cfg, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "elevation[2]");
    bad = m;
    bad.spin_hz = 0;
    DK_CHECK_STATUS(dk_render_lidar(s, &bad, &pose, &cfg, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "spin_hz");
    dk_pose skew = pose;
    skew.q[0] = 2;
    DK_CHECK_STATUS(dk_render_lidar(s, &m, &skew, &cfg, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "rigid");
    skew = pose;
    skew.t[1] = NAN;
    DK_CHECK_STATUS(dk_render_lidar(s, &m, &skew, &cfg, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "non-finite");
    dk_lidar_render_config bc = cfg;
    bc.time = NAN;
    DK_CHECK_STATUS(dk_render_lidar(s, &m, &pose, &bc, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "time");
    bc = cfg;
    bc.hit_threshold = 0;
    DK_CHECK_STATUS(dk_render_lidar(s, &m, &pose, &bc, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "hit_threshold");
    bc = cfg;
    bc.sensor_motion = 1;
    bc.lidar_to_world_end.q[2] = 0.5;
    DK_CHECK_STATUS(dk_render_lidar(s, &m, &pose, &bc, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "lidar_to_world_end");
    bc = cfg;
    bc.default_intensity = NAN;
    DK_CHECK_STATUS(dk_render_lidar(s, &m, &pose, &bc, NULL, range, NULL, NULL, NULL), DK_EINVAL);
    /* points */
    DK_CHECK_STATUS(dk_lidar_points(&m, &pose, &cfg, NULL, NULL, NULL, NULL, 0, &np), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "range");
    DK_CHECK_STATUS(dk_lidar_points(&m, &pose, &cfg, range, NULL, NULL, NULL, 0, &np), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "raydrop");
    bc = cfg;
    bc.raydrop_mode = (dk_lidar_raydrop_mode)7;
    DK_CHECK_STATUS(dk_lidar_points(&m, &pose, &bc, range, NULL, range, NULL, 0, &np), DK_EINVAL);
    bc = cfg;
    bc.raydrop_threshold = 2;
    DK_CHECK_STATUS(dk_lidar_points(&m, &pose, &bc, range, NULL, range, NULL, 0, &np), DK_EINVAL);
    DK_CHECK_STATUS(dk_lidar_points(&bad, &pose, &cfg, range, NULL, range, NULL, 0, &np), DK_EINVAL);

    /* Hostile scene values are culled, never a crash or a NaN. */
    s->means[0] = NAN;
    s->scales[3 * 3 + 1] = 200;        /* exp overflows */
    s->scales[4 * 3 + 2] = -200;       /* zero scale */
    s->rotations[5 * 4] = s->rotations[5 * 4 + 1] = s->rotations[5 * 4 + 2] =
        s->rotations[5 * 4 + 3] = 0;
    s->opacities[6] = INFINITY;
    s->opacities[7] = NAN;
    s->lidar_intensity[8] = NAN;
    s->means[9 * 3] = 1e30f;
    /* A large Gaussian around the sensor itself. */
    s->means[10 * 3] = s->means[10 * 3 + 1] = s->means[10 * 3 + 2] = 0;
    s->scales[10 * 3] = s->scales[10 * 3 + 1] = s->scales[10 * 3 + 2] = 1.0f;
    s->opacities[10] = 5;
    float *alpha = alloc_img(&m), *inten = alloc_img(&m), *drop = alloc_img(&m);
    DK_CHECK_OK(dk_render_lidar(s, &m, &pose, &cfg, NULL, range, inten, drop, alpha));
    for (size_t i = 0; i < (size_t)m.n_beams * m.n_columns; i++)
        DK_CHECK(isfinite(range[i]) && isfinite(alpha[i]) && isfinite(inten[i]) &&
                 isfinite(drop[i]));
    /* An empty scene: no returns. */
    dk_scene *e;
    DK_CHECK_OK(dk_scene_create(0, 0, 0, &e));
    DK_CHECK_OK(dk_render_lidar(e, &m, &pose, &cfg, NULL, range, NULL, drop, alpha));
    for (size_t i = 0; i < (size_t)m.n_beams * m.n_columns; i++) {
        DK_CHECK_NEAR(range[i], 0, 0);
        DK_CHECK_NEAR(drop[i], 1, 0);
    }
    dk_scene_destroy(e);
    free(range);
    free(alpha);
    free(inten);
    free(drop);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

const dk_test_case dk_tests_sim_lidar[] = {
    DK_TEST(test_lidar_plane_analytic),
    DK_TEST(test_lidar_box_analytic),
    DK_TEST(test_lidar_matches_reference),
    DK_TEST(test_lidar_presets),
    DK_TEST(test_lidar_threads_invariant),
    DK_TEST(test_lidar_moving_actor),
    DK_TEST(test_lidar_sensor_motion),
    DK_TEST(test_lidar_points),
    DK_TEST(test_lidar_bad_input),
};
const size_t dk_tests_sim_lidar_count = sizeof dk_tests_sim_lidar / sizeof dk_tests_sim_lidar[0];
