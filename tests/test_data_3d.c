/* Tests of src/data: the 3-D and annotation steps, on small synthetic samples
 * (two pinhole cameras at known poses, boxes and points placed by hand). */
#include "dk_test.h"

#define IMG_W 160
#define IMG_H 90
#define FOCAL 80.0
#define MAX_BOXES 16

/* A sample format: lidar2ego, boxes (N, 9) and per-box fields, points (M, 5)
 * with a per-point field, and an array "cams" of cameras with lidar2img,
 * lidar2cam and an image. */
typedef struct synth {
    dk_group *g;
    int lidar2ego, boxes, labels, npts, vis, points, point_label, cams;
    int l2i[2], l2c[2], img[2];
    int ncam;
} synth;

static int synth_format(synth *s, int ncam)
{
    memset(s, 0, sizeof *s);
    s->ncam = ncam;
    if (dk_group_create(&s->g)) return -1;
    dk_group *g = s->g;
    s->lidar2ego = dk_group_add_tensor(g, DK_GROUP_ROOT, "lidar2ego", DK_F32, 2);
    s->boxes = dk_group_add_tensor(g, DK_GROUP_ROOT, "gt_bboxes_3d", DK_F32, 2);
    s->labels = dk_group_add_tensor(g, DK_GROUP_ROOT, "gt_labels_3d", DK_I32, 1);
    s->npts = dk_group_add_tensor(g, DK_GROUP_ROOT, "gt_num_lidar_pts", DK_I32, 1);
    s->vis = dk_group_add_tensor(g, DK_GROUP_ROOT, "gt_visibility", DK_I32, 1);
    s->points = dk_group_add_tensor(g, DK_GROUP_ROOT, "points", DK_F32, 2);
    s->point_label = dk_group_add_tensor(g, DK_GROUP_ROOT, "point_label", DK_I32, 1);
    dk_group *t;
    if (dk_group_create(&t)) return -1;
    int e = dk_group_add_group(t, DK_GROUP_ROOT, "cam");
    dk_group_add_tensor(t, e, "lidar2img", DK_F32, 2);
    dk_group_add_tensor(t, e, "lidar2cam", DK_F32, 2);
    dk_group_add_tensor(t, e, "image", DK_U8, 3);
    s->cams = dk_group_add_array(g, DK_GROUP_ROOT, "cams", t, e, ncam);
    dk_group_destroy(t);
    if (s->cams < 0) return -1;
    for (int i = 0; i < ncam; i++) {
        char name[16];
        snprintf(name, sizeof name, "%d", i);
        int el = dk_group_child(g, s->cams, name);
        s->l2i[i] = dk_group_child(g, el, "lidar2img");
        s->l2c[i] = dk_group_child(g, el, "lidar2cam");
        s->img[i] = dk_group_child(g, el, "image");
        if (el < 0 || s->l2i[i] < 0 || s->l2c[i] < 0 || s->img[i] < 0) return -1;
    }
    return s->lidar2ego >= 0 && s->boxes >= 0 && s->labels >= 0 && s->npts >= 0 &&
                   s->vis >= 0 && s->points >= 0 && s->point_label >= 0
               ? 0
               : -1;
}

/* Camera 0 looks along lidar +x, camera 1 along lidar +y (both upright),
 * placed at `pos` (lidar frame); K has focal FOCAL and the principal point
 * at the image centre. */
static void cam_matrices(int which, const double pos[3], double l2c[16], double l2i[16])
{
    static const double R[2][9] = {{0, -1, 0, 0, 0, -1, 1, 0, 0}, {1, 0, 0, 0, 0, -1, 0, 1, 0}};
    const double *r = R[which];
    memset(l2c, 0, 16 * sizeof(double));
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) l2c[i * 4 + j] = r[i * 3 + j];
        l2c[i * 4 + 3] = -(r[i * 3] * pos[0] + r[i * 3 + 1] * pos[1] + r[i * 3 + 2] * pos[2]);
    }
    l2c[15] = 1;
    double K[16] = {FOCAL, 0, IMG_W / 2.0, 0, 0, FOCAL, IMG_H / 2.0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double v = 0;
            for (int k = 0; k < 4; k++) v += K[i * 4 + k] * l2c[k * 4 + j];
            l2i[i * 4 + j] = v;
        }
}

static int set_f32(dk_sample *x, int id, int ndim, const int64_t *shape, const double *v)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!f) return -1;
    for (int64_t i = 0; i < n; i++) f[i] = (float)v[i];
    int st = dk_sample_set_copy(x, id, DK_F32, ndim, shape, f);
    free(f);
    return st;
}

typedef struct scene {
    int n_boxes, n_points;
    float boxes[MAX_BOXES][9];
    float points[64][5];
    double cam_pos[2][3];
    double lidar2ego[16];
} scene;

/* A sample of `sc` following s's format. */
static int synth_sample(const synth *s, const scene *sc, dk_sample *x, int64_t index)
{
    if (dk_sample_init(x, dk_group_id_limit(s->g))) return -1;
    x->index = index;
    int st = 0;
    int64_t n = sc->n_boxes, bshape[2] = {n, 9}, m = sc->n_points, pshape[2] = {m, 5};
    int64_t mshape[2] = {4, 4}, ishape[3] = {IMG_H, IMG_W, 3};
    st |= dk_sample_set_copy(x, s->boxes, DK_F32, 2, bshape, sc->boxes);
    int32_t lab[MAX_BOXES], np[MAX_BOXES], vis[MAX_BOXES], pl[64];
    for (int i = 0; i < n; i++) {
        lab[i] = i % 3;
        np[i] = 100 + i;
        vis[i] = 200 + i;
    }
    for (int i = 0; i < m; i++) pl[i] = 1000 + i;
    st |= dk_sample_set_copy(x, s->labels, DK_I32, 1, &n, lab);
    st |= dk_sample_set_copy(x, s->npts, DK_I32, 1, &n, np);
    st |= dk_sample_set_copy(x, s->vis, DK_I32, 1, &n, vis);
    st |= dk_sample_set_copy(x, s->points, DK_F32, 2, pshape, sc->points);
    st |= dk_sample_set_copy(x, s->point_label, DK_I32, 1, &m, pl);
    st |= set_f32(x, s->lidar2ego, 2, mshape, sc->lidar2ego);
    for (int c = 0; c < s->ncam; c++) {
        double l2c[16], l2i[16];
        cam_matrices(c, sc->cam_pos[c], l2c, l2i);
        st |= set_f32(x, s->l2i[c], 2, mshape, l2i);
        st |= set_f32(x, s->l2c[c], 2, mshape, l2c);
        st |= dk_sample_set_copy(x, s->img[c], DK_U8, 3, ishape, NULL);
    }
    return st ? -1 : 0;
}

static void set_box(float *b, double x, double y, double z, double l, double w, double h,
                    double yaw, double vx, double vy)
{
    const double v[9] = {x, y, z, l, w, h, yaw, vx, vy};
    for (int i = 0; i < 9; i++) b[i] = (float)v[i];
}

/* A scene with boxes in front of both cameras, random-ish points and a
 * lidar2ego with rotation and translation. */
static void scene_default(scene *sc)
{
    memset(sc, 0, sizeof *sc);
    dk_rng r;
    dk_rng_init(&r, 77, 1);
    sc->n_boxes = 8;
    for (int i = 0; i < sc->n_boxes; i++) {
        double yaw = dk_rng_range(&r, -3.0f, 3.0f), sp = dk_rng_range(&r, 0.0f, 5.0f);
        int side = i % 2;
        double a = dk_rng_range(&r, 8.0f, 25.0f), b = dk_rng_range(&r, -3.0f, 3.0f);
        set_box(sc->boxes[i], side ? b : a, side ? a : b, dk_rng_range(&r, -1.0f, 1.0f),
                dk_rng_range(&r, 1.0f, 5.0f), dk_rng_range(&r, 0.5f, 2.5f),
                dk_rng_range(&r, 1.0f, 3.0f), yaw, sp * cos(yaw), sp * sin(yaw));
    }
    sc->n_points = 40;
    for (int i = 0; i < sc->n_points; i++) {
        for (int k = 0; k < 3; k++) sc->points[i][k] = dk_rng_range(&r, -30.0f, 30.0f);
        sc->points[i][2] *= 0.1f;
        sc->points[i][3] = (float)i;
        sc->points[i][4] = (float)(i % 32);
    }
    const double p0[3] = {1.5, 0.1, -0.3}, p1[3] = {0.5, 0.8, -0.2};
    memcpy(sc->cam_pos[0], p0, sizeof p0);
    memcpy(sc->cam_pos[1], p1, sizeof p1);
    dk_pose pose = dk_pose_from_yaw(0.9, -0.1, 1.8, 0.03);
    dk_pose_to_matrix(&pose, sc->lidar2ego);
}

static const float *F(const dk_sample *x, int id)
{
    return (const float *)x->values[id].data;
}

static const int32_t *I(const dk_sample *x, int id)
{
    return (const int32_t *)x->values[id].data;
}

/* Projects p with the 4x4 (float) matrix P: u, v, depth. */
static void project(const float *P, const double p[3], double out[3])
{
    double q[3];
    for (int r = 0; r < 3; r++)
        q[r] = P[r * 4] * p[0] + P[r * 4 + 1] * p[1] + P[r * 4 + 2] * p[2] + P[r * 4 + 3];
    out[0] = q[0] / q[2];
    out[1] = q[1] / q[2];
    out[2] = q[2];
}

/* A projection that lands around the image (pixel comparisons beyond it
 * magnify float32 rounding). */
static int near_image(const double u[3])
{
    return u[2] > 1 && u[0] > -IMG_W && u[0] < 2 * IMG_W && u[1] > -IMG_H && u[1] < 2 * IMG_H;
}

static void apply4(const float *M, const double p[3], double out[3])
{
    for (int r = 0; r < 3; r++)
        out[r] = M[r * 4] * p[0] + M[r * 4 + 1] * p[1] + M[r * 4 + 2] * p[2] + M[r * 4 + 3];
}

static void box_corners(const float *b, double c[8][3])
{
    double cy = cos((double)b[6]), sy = sin((double)b[6]);
    for (int k = 0; k < 8; k++) {
        double lx = (k & 1 ? 0.5 : -0.5) * b[3], ly = (k & 2 ? 0.5 : -0.5) * b[4];
        double lz = (k & 4 ? 0.5 : -0.5) * b[5];
        c[k][0] = b[0] + cy * lx - sy * ly;
        c[k][1] = b[1] + sy * lx + cy * ly;
        c[k][2] = b[2] + lz;
    }
}

static dk_pipeline *make_pipeline(const synth *s, uint64_t seed)
{
    dk_pipeline_config pc;
    dk_pipeline_config_init(&pc);
    pc.seed = seed;
    dk_pipeline *p = NULL;
    if (dk_pipeline_create(s->g, &pc, &p)) return NULL;
    return p;
}

/* ------------------------------------------------------------------------ */

static void test_3d_global_transform_geometry(void)
{
    synth s;
    DK_CHECK_EQ_INT(synth_format(&s, 2), 0);
    scene sc;
    scene_default(&sc);
    dk_pipeline *p = make_pipeline(&s, 11);
    DK_CHECK(p != NULL);
    dk_global_transform_3d_config c;
    dk_global_transform_3d_config_init(&c);
    c.rot_range[0] = -0.8f;
    c.rot_range[1] = 0.8f;
    c.scale_range[0] = 0.8f;
    c.scale_range[1] = 1.2f;
    c.translation_std[0] = c.translation_std[1] = 1.0f;
    c.translation_std[2] = 0.3f;
    c.matrix_out = "bda_mat";
    dk_step *st;
    DK_CHECK_OK(dk_step_global_transform_3d(&c, &st));
    DK_CHECK_OK(dk_pipeline_add(p, st));
    int bda = dk_group_find(dk_pipeline_format(p), DK_GROUP_ROOT, "bda_mat");
    DK_CHECK(bda >= 0);
    int flipped = 0, unflipped = 0, matched = 0;
    for (int64_t idx = 0; idx < 24; idx++) {
        dk_sample x0, x;
        DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x0, idx), 0);
        DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, idx), 0);
        DK_CHECK_OK(dk_pipeline_run(p, &x, "synthetic"));
        const float *T = F(&x, bda);
        double det2 = (double)T[0] * T[5] - (double)T[1] * T[4];
        if (det2 < 0)
            flipped++;
        else
            unflipped++;
        double scale = sqrt(fabs(det2));
        DK_CHECK_NEAR(T[10], scale, 1e-5);
        /* Boxes: the 8 corners project to the same pixels (as sets: a flip
           mirrors the corner order); centres follow T. */
        for (int i = 0; i < sc.n_boxes; i++) {
            const float *b0 = F(&x0, s.boxes) + 9 * i, *b1 = F(&x, s.boxes) + 9 * i;
            double c0[8][3], c1[8][3], t0[3];
            box_corners(b0, c0);
            box_corners(b1, c1);
            double ctr0[3] = {b0[0], b0[1], b0[2]};
            apply4(T, ctr0, t0);
            for (int k = 0; k < 3; k++) DK_CHECK_NEAR(b1[k], t0[k], 1e-4);
            for (int k = 3; k < 6; k++) DK_CHECK_NEAR(b1[k], b0[k] * scale, 1e-5);
            DK_CHECK(b1[6] >= -M_PI - 1e-6 && b1[6] < M_PI + 1e-6);
            for (int cam = 0; cam < 2; cam++) {
                for (int k = 0; k < 8; k++) {
                    double u0[3];
                    project(F(&x0, s.l2i[cam]), c0[k], u0);
                    if (!near_image(u0)) continue;
                    double best = 1e30;
                    for (int j = 0; j < 8; j++) {
                        double u1[3];
                        project(F(&x, s.l2i[cam]), c1[j], u1);
                        double dd = hypot(u1[0] - u0[0], u1[1] - u0[1]) + fabs(u1[2] - u0[2]);
                        if (dd < best) best = dd;
                    }
                    DK_CHECK(best < 1e-3);
                    matched++;
                }
            }
        }
        /* Points: same pixels, same camera points, same ego points. */
        for (int i = 0; i < sc.n_points; i++) {
            const float *q0 = F(&x0, s.points) + 5 * i, *q1 = F(&x, s.points) + 5 * i;
            double a[3] = {q0[0], q0[1], q0[2]}, b[3] = {q1[0], q1[1], q1[2]}, ea[3], eb[3];
            DK_CHECK_EQ_INT(q1[3], q0[3]);
            DK_CHECK_EQ_INT(q1[4], q0[4]);
            apply4(F(&x0, s.lidar2ego), a, ea);
            apply4(F(&x, s.lidar2ego), b, eb);
            for (int k = 0; k < 3; k++) DK_CHECK_NEAR(ea[k], eb[k], 1e-4);
            for (int cam = 0; cam < 2; cam++) {
                apply4(F(&x0, s.l2c[cam]), a, ea);
                apply4(F(&x, s.l2c[cam]), b, eb);
                for (int k = 0; k < 3; k++) DK_CHECK_NEAR(ea[k], eb[k], 1e-4);
                project(F(&x0, s.l2i[cam]), a, ea);
                project(F(&x, s.l2i[cam]), b, eb);
                if (!near_image(ea)) continue;
                DK_CHECK_NEAR(ea[0], eb[0], 1e-3);
                DK_CHECK_NEAR(ea[1], eb[1], 1e-3);
            }
        }
        dk_sample_free(&x0);
        dk_sample_free(&x);
    }
    DK_CHECK(flipped > 0 && unflipped > 0);
    DK_CHECK(matched > 100);
    dk_pipeline_destroy(p);
    dk_group_destroy(s.g);
}

/* Velocities turn with the heading and scale with the boxes. */
static void test_3d_global_transform_velocity(void)
{
    synth s;
    DK_CHECK_EQ_INT(synth_format(&s, 1), 0);
    scene sc;
    scene_default(&sc);
    dk_pipeline *p = make_pipeline(&s, 3);
    dk_global_transform_3d_config c;
    dk_global_transform_3d_config_init(&c);
    c.rot_range[0] = -3.0f;
    c.rot_range[1] = 3.0f;
    c.translation_std[0] = 5.0f;
    c.matrix_out = "bda_mat";
    dk_step *st;
    DK_CHECK_OK(dk_step_global_transform_3d(&c, &st));
    DK_CHECK_OK(dk_pipeline_add(p, st));
    int bda = dk_group_find(dk_pipeline_format(p), DK_GROUP_ROOT, "bda_mat");
    for (int64_t idx = 0; idx < 8; idx++) {
        dk_sample x0, x;
        DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x0, idx), 0);
        DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, idx), 0);
        DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
        const float *T = F(&x, bda);
        double scale = T[10];
        for (int i = 0; i < sc.n_boxes; i++) {
            const float *b0 = F(&x0, s.boxes) + 9 * i, *b1 = F(&x, s.boxes) + 9 * i;
            double sp0 = hypot(b0[7], b0[8]), sp1 = hypot(b1[7], b1[8]);
            DK_CHECK_NEAR(sp1, sp0 * scale, 1e-4);
            /* Built along the heading: still along it. */
            DK_CHECK_NEAR(b1[7], sp1 * cos((double)b1[6]), 1e-4);
            DK_CHECK_NEAR(b1[8], sp1 * sin((double)b1[6]), 1e-4);
            /* Never translated: v' = linear part of T times v. */
            DK_CHECK_NEAR(b1[7], T[0] * b0[7] + T[1] * b0[8], 1e-4);
            DK_CHECK_NEAR(b1[8], T[4] * b0[7] + T[5] * b0[8], 1e-4);
        }
        dk_sample_free(&x0);
        dk_sample_free(&x);
    }
    dk_pipeline_destroy(p);
    dk_group_destroy(s.g);
}

/* Each flip alone (probability 1, no rotation, scale or translation):
 * heading and velocity vectors mirror. */
static void test_3d_global_transform_flips(void)
{
    synth s;
    DK_CHECK_EQ_INT(synth_format(&s, 1), 0);
    scene sc;
    scene_default(&sc);
    for (int mode = 0; mode < 3; mode++) {
        dk_global_transform_3d_config c;
        dk_global_transform_3d_config_init(&c);
        c.rot_range[0] = c.rot_range[1] = 0;
        c.scale_range[0] = c.scale_range[1] = 1;
        c.flip_h_prob = mode != 1 ? 1.0f : 0.0f;
        c.flip_v_prob = mode != 0 ? 1.0f : 0.0f;
        double mx = c.flip_v_prob > 0 ? -1 : 1, my = c.flip_h_prob > 0 ? -1 : 1;
        dk_pipeline *p = make_pipeline(&s, 1);
        dk_step *st;
        DK_CHECK_OK(dk_step_global_transform_3d(&c, &st));
        DK_CHECK_OK(dk_pipeline_add(p, st));
        dk_sample x;
        DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
        DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
        for (int i = 0; i < sc.n_boxes; i++) {
            const float *b0 = sc.boxes[i], *b1 = F(&x, s.boxes) + 9 * i;
            DK_CHECK_NEAR(b1[0], mx * b0[0], 1e-5);
            DK_CHECK_NEAR(b1[1], my * b0[1], 1e-5);
            DK_CHECK_NEAR(b1[2], b0[2], 1e-5);
            DK_CHECK_NEAR(cos((double)b1[6]), mx * cos((double)b0[6]), 1e-5);
            DK_CHECK_NEAR(sin((double)b1[6]), my * sin((double)b0[6]), 1e-5);
            DK_CHECK_NEAR(b1[7], mx * b0[7], 1e-5);
            DK_CHECK_NEAR(b1[8], my * b0[8], 1e-5);
            for (int k = 3; k < 6; k++) DK_CHECK_NEAR(b1[k], b0[k], 1e-6);
        }
        /* mmdetection3d's conventions for the yaw itself. */
        double y0 = sc.boxes[0][6], y1 = F(&x, s.boxes)[6];
        double want = mode == 0 ? -y0 : mode == 1 ? M_PI - y0 : M_PI + y0;
        DK_CHECK_NEAR(remainder(y1 - want, 2 * M_PI), 0, 1e-5);
        dk_sample_free(&x);
        dk_pipeline_destroy(p);
    }
    dk_group_destroy(s.g);
}

/* Same seed and sample: the same draw; other samples: other draws; one
 * draw for every matched field, or one per element with dk_step_per_element. */
static void test_3d_determinism(void)
{
    /* Two frames, each with its own boxes. */
    dk_group *g, *t;
    DK_CHECK_OK(dk_group_create(&g));
    DK_CHECK_OK(dk_group_create(&t));
    int e = dk_group_add_group(t, DK_GROUP_ROOT, "frame");
    int tb = dk_group_add_tensor(t, e, "gt_bboxes_3d", DK_F32, 2);
    DK_CHECK(tb >= 0);
    int frames = dk_group_add_array(g, DK_GROUP_ROOT, "frames", t, e, 2);
    dk_group_destroy(t);
    DK_CHECK(frames >= 0);
    int fb[2] = {dk_group_find(g, DK_GROUP_ROOT, "frames[0].gt_bboxes_3d"),
                 dk_group_find(g, DK_GROUP_ROOT, "frames[1].gt_bboxes_3d")};
    DK_CHECK(fb[0] >= 0 && fb[1] >= 0);
    float box[9];
    set_box(box, 10, 2, 0, 4, 2, 1.5, 0.3, 1, 0);
    int64_t shape[2] = {1, 9};
    float res[2][3][2][9];   /* [pipeline][sample variant][frame] */
    for (int wrap = 0; wrap < 2; wrap++) {
        dk_pipeline_config pc;
        dk_pipeline_config_init(&pc);
        pc.seed = 1234;
        dk_pipeline *p;
        DK_CHECK_OK(dk_pipeline_create(g, &pc, &p));
        dk_global_transform_3d_config c;
        dk_global_transform_3d_config_init(&c);
        c.translation_std[0] = 1;
        dk_step *st;
        DK_CHECK_OK(dk_step_global_transform_3d(&c, &st));
        if (wrap) DK_CHECK_OK(dk_step_per_element(st, "frames", &st));
        DK_CHECK_OK(dk_pipeline_add(p, st));
        const int64_t index[3] = {5, 5, 6};
        for (int v = 0; v < 3; v++) {
            dk_sample x;
            DK_CHECK_OK(dk_sample_init(&x, dk_group_id_limit(g)));
            x.index = index[v];
            for (int f = 0; f < 2; f++) DK_CHECK_OK(dk_sample_set_copy(&x, fb[f], DK_F32, 2, shape, box));
            DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
            for (int f = 0; f < 2; f++) memcpy(res[wrap][v][f], F(&x, fb[f]), sizeof box);
            dk_sample_free(&x);
        }
        dk_pipeline_destroy(p);
    }
    for (int wrap = 0; wrap < 2; wrap++) {
        DK_CHECK(memcmp(res[wrap][0], res[wrap][1], sizeof res[wrap][0]) == 0);
        DK_CHECK(memcmp(res[wrap][0][0], res[wrap][2][0], sizeof box) != 0);
    }
    /* Unwrapped: both frames moved together; wrapped: independently. */
    DK_CHECK(memcmp(res[0][0][0], res[0][0][1], sizeof box) == 0);
    DK_CHECK(memcmp(res[1][0][0], res[1][0][1], sizeof box) != 0);
    DK_CHECK(memcmp(res[0][0][0], box, sizeof box) != 0);
    dk_group_destroy(g);
}

/* ------------------------------------------------------------------------ */

/* Checks that the per-box fields of x hold exactly the original rows
 * `expect[0..n)` of sc, in order. */
static int rows_are(const synth *s, const scene *sc, const dk_sample *x, const int *expect, int n)
{
    if (x->values[s->boxes].shape[0] != n || x->values[s->labels].shape[0] != n ||
        x->values[s->npts].shape[0] != n || x->values[s->vis].shape[0] != n)
        return 0;
    for (int k = 0; k < n; k++) {
        int i = expect[k];
        if (memcmp(F(x, s->boxes) + 9 * k, sc->boxes[i], 6 * sizeof(float))) return 0;
        if (I(x, s->labels)[k] != i % 3 || I(x, s->npts)[k] != 100 + i ||
            I(x, s->vis)[k] != 200 + i)
            return 0;
    }
    return 1;
}

static void test_3d_boxes_in_range(void)
{
    synth s;
    DK_CHECK_EQ_INT(synth_format(&s, 1), 0);
    scene sc;
    scene_default(&sc);
    const double pos[][3] = {{0, 0, 0}, {60, 0, 0}, {-51, 10, 9}, {0, -52, 0},
                             {51.1, 51.1, 0}, {-51.2, 0, 0}, {3, 4, -20}};
    sc.n_boxes = (int)(sizeof pos / sizeof pos[0]);
    for (int i = 0; i < sc.n_boxes; i++)
        set_box(sc.boxes[i], pos[i][0], pos[i][1], pos[i][2], 2, 1, 1, 4.0 + i, 0, 0);
    for (int use_z = 0; use_z < 2; use_z++) {
        dk_pipeline *p = make_pipeline(&s, 0);
        dk_step *st;
        /* A per-camera mask over the boxes, made before the filter. */
        dk_visible_boxes_config vc;
        dk_visible_boxes_config_init(&vc);
        vc.bboxes_out = vc.centers_out = vc.depths_out = vc.labels_out = NULL;
        DK_CHECK_OK(dk_step_visible_boxes(&vc, &st));
        DK_CHECK_OK(dk_pipeline_add(p, st));
        int vis = dk_group_find(dk_pipeline_format(p), DK_GROUP_ROOT, "cams[0].gt_visible");
        DK_CHECK(vis >= 0);
        dk_boxes_in_range_config c;
        dk_boxes_in_range_config_init(&c);
        c.use_z = use_z;
        DK_CHECK_OK(dk_step_boxes_in_range(&c, &st));
        DK_CHECK_OK(dk_pipeline_add(p, st));
        dk_sample x;
        DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
        DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
        int expect[MAX_BOXES], n = 0;
        for (int i = 0; i < sc.n_boxes; i++) {
            const float *b = sc.boxes[i];
            int in = b[0] > c.range[0] && b[0] < c.range[3] && b[1] > c.range[1] &&
                     b[1] < c.range[4] && (!use_z || (b[2] > c.range[2] && b[2] < c.range[5]));
            if (in) expect[n++] = i;
        }
        DK_CHECK(n >= 2 && n < sc.n_boxes);
        DK_CHECK(rows_are(&s, &sc, &x, expect, n));
        DK_CHECK_EQ_INT(x.values[vis].shape[0], n);
        for (int k = 0; k < n; k++) {
            double yaw = F(&x, s.boxes)[9 * k + 6];
            DK_CHECK(yaw >= -M_PI && yaw < M_PI);
            DK_CHECK_NEAR(remainder(yaw - sc.boxes[expect[k]][6], 2 * M_PI), 0, 1e-5);
        }
        /* Points are per-point, untouched. */
        DK_CHECK_EQ_INT(x.values[s.points].shape[0], sc.n_points);
        dk_sample_free(&x);
        dk_pipeline_destroy(p);
    }
    dk_group_destroy(s.g);
}

static void test_3d_points_in_range(void)
{
    synth s;
    DK_CHECK_EQ_INT(synth_format(&s, 1), 0);
    scene sc;
    scene_default(&sc);
    dk_pipeline *p = make_pipeline(&s, 0);
    dk_points_in_range_config c;
    dk_points_in_range_config_init(&c);
    const float r[6] = {-10, -20, -1, 15, 20, 1};
    memcpy(c.range, r, sizeof r);
    const char *extra[] = {"point_label"};
    c.fields = extra;
    c.n_fields = 1;
    dk_step *st;
    DK_CHECK_OK(dk_step_points_in_range(&c, &st));
    DK_CHECK_OK(dk_pipeline_add(p, st));
    dk_sample x;
    DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
    DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
    int k = 0;
    for (int i = 0; i < sc.n_points; i++) {
        const float *q = sc.points[i];
        if (!(q[0] > r[0] && q[0] < r[3] && q[1] > r[1] && q[1] < r[4] && q[2] > r[2] && q[2] < r[5]))
            continue;
        DK_CHECK(k < x.values[s.points].shape[0]);
        DK_CHECK(memcmp(F(&x, s.points) + 5 * k, q, 5 * sizeof(float)) == 0);
        DK_CHECK_EQ_INT(I(&x, s.point_label)[k], 1000 + i);
        k++;
    }
    DK_CHECK(k > 0 && k < sc.n_points);
    DK_CHECK_EQ_INT(x.values[s.points].shape[0], k);
    DK_CHECK_EQ_INT(x.values[s.point_label].shape[0], k);
    DK_CHECK_EQ_INT(x.values[s.boxes].shape[0], sc.n_boxes);
    dk_sample_free(&x);
    dk_pipeline_destroy(p);
    dk_group_destroy(s.g);
}

static void test_3d_class_and_points_filters(void)
{
    synth s;
    DK_CHECK_EQ_INT(synth_format(&s, 1), 0);
    scene sc;
    scene_default(&sc);
    /* Labels are i % 3, point counts 100 + i. */
    {
        dk_pipeline *p = make_pipeline(&s, 0);
        dk_class_filter_config c;
        dk_class_filter_config_init(&c);
        const int32_t classes[] = {2, 0};
        c.classes = classes;
        c.n_classes = 2;
        c.remap = 1;
        dk_step *st;
        DK_CHECK_OK(dk_step_class_filter(&c, &st));
        DK_CHECK_OK(dk_pipeline_add(p, st));
        dk_min_points_filter_config m;
        dk_min_points_filter_config_init(&m);
        m.min_points = 102;
        DK_CHECK_OK(dk_step_min_points_filter(&m, &st));
        DK_CHECK_OK(dk_pipeline_add(p, st));
        dk_sample x;
        DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
        DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
        int n = 0;
        for (int i = 0; i < sc.n_boxes; i++) {
            if (i % 3 == 1 || 100 + i < 102) continue;
            DK_CHECK(n < x.values[s.boxes].shape[0]);
            DK_CHECK(memcmp(F(&x, s.boxes) + 9 * n, sc.boxes[i], 9 * sizeof(float)) == 0);
            DK_CHECK_EQ_INT(I(&x, s.labels)[n], i % 3 == 2 ? 0 : 1);
            DK_CHECK_EQ_INT(I(&x, s.npts)[n], 100 + i);
            DK_CHECK_EQ_INT(I(&x, s.vis)[n], 200 + i);
            n++;
        }
        DK_CHECK_EQ_INT(x.values[s.boxes].shape[0], n);
        DK_CHECK_EQ_INT(x.values[s.labels].shape[0], n);
        DK_CHECK_EQ_INT(x.values[s.npts].shape[0], n);
        DK_CHECK_EQ_INT(x.values[s.vis].shape[0], n);
        dk_sample_free(&x);
        dk_pipeline_destroy(p);
    }
    /* The same decisions accumulated into one mask, applied at the end. */
    {
        dk_pipeline *p = make_pipeline(&s, 0);
        dk_class_filter_config c;
        dk_class_filter_config_init(&c);
        const int32_t classes[] = {2, 0};
        c.classes = classes;
        c.n_classes = 2;
        c.remove = 0;
        c.mask = "keep";
        dk_step *st;
        DK_CHECK_OK(dk_step_class_filter(&c, &st));
        DK_CHECK_OK(dk_pipeline_add(p, st));
        dk_min_points_filter_config m;
        dk_min_points_filter_config_init(&m);
        m.min_points = 102;
        m.remove = 0;
        m.mask = "keep";
        DK_CHECK_OK(dk_step_min_points_filter(&m, &st));
        DK_CHECK_OK(dk_pipeline_add(p, st));
        int keep = dk_group_find(dk_pipeline_format(p), DK_GROUP_ROOT, "keep");
        DK_CHECK(keep >= 0);
        dk_sample x;
        DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
        DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
        DK_CHECK_EQ_INT(x.values[keep].shape[0], sc.n_boxes);
        int expect[MAX_BOXES], n = 0;
        for (int i = 0; i < sc.n_boxes; i++) {
            int want = i % 3 != 1 && 100 + i >= 102;
            DK_CHECK_EQ_INT(((const uint8_t *)x.values[keep].data)[i], want);
            if (want) expect[n++] = i;
        }
        DK_CHECK_EQ_INT(x.values[s.boxes].shape[0], sc.n_boxes);
        dk_sample_free(&x);
        DK_CHECK_OK(dk_step_remove_masked("keep", NULL, 0, 0, &st));
        DK_CHECK_OK(dk_pipeline_add(p, st));
        DK_CHECK(dk_group_find(dk_pipeline_format(p), DK_GROUP_ROOT, "keep") < 0);
        DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
        DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
        DK_CHECK(rows_are(&s, &sc, &x, expect, n));
        DK_CHECK_EQ_INT(x.values[keep].dtype, DK_DTYPE_INVALID);
        dk_sample_free(&x);
        dk_pipeline_destroy(p);
    }
    dk_group_destroy(s.g);
}

/* ------------------------------------------------------------------------ */

static void test_3d_visible_boxes(void)
{
    synth s;
    DK_CHECK_EQ_INT(synth_format(&s, 2), 0);
    scene sc;
    memset(&sc, 0, sizeof sc);
    dk_pose id = dk_pose_identity();
    dk_pose_to_matrix(&id, sc.lidar2ego);
    /* Both cameras at the lidar origin: cam 0 looks along +x, cam 1 along +y. */
    set_box(sc.boxes[0], 10, 0, 0, 2, 2, 2, 0, 0, 0);      /* centred in cam 0 */
    set_box(sc.boxes[1], -10, 0, 0, 2, 2, 2, 0, 0, 0);     /* behind both */
    set_box(sc.boxes[2], 5, 50, 0, 2, 2, 2, 0, 0, 0);      /* cam 1 only */
    set_box(sc.boxes[3], 10, 10, 0, 2, 2, 2, 0, 0, 0);     /* cut by cam 0's left edge */
    set_box(sc.boxes[4], 50, 0, 0, 0.01, 0.01, 0.01, 0, 0, 0);   /* too small */
    set_box(sc.boxes[5], 0.5, -0.2, 0, 2, 2, 2, 0, 0, 0);  /* crosses the near plane */
    set_box(sc.boxes[6], 20, 0, 0, 2, 2, 2, 0, 0, 0);      /* hidden by box 0 */
    sc.n_boxes = 7;
    for (int occl = 0; occl < 2; occl++) {
        /* Box 5 fills cam 0's whole view, so it would hide everything: with
           occlusion it goes behind the cameras instead. */
        scene so = sc;
        if (occl) set_box(so.boxes[5], -10, 5, 0, 2, 2, 2, 0, 0, 0);
        dk_pipeline *p = make_pipeline(&s, 0);
        dk_visible_boxes_config c;
        dk_visible_boxes_config_init(&c);
        c.occlusion = occl;
        c.index_out = "gt_index_2d";
        dk_step *st;
        DK_CHECK_OK(dk_step_visible_boxes(&c, &st));
        DK_CHECK_OK(dk_step_per_element(st, "cams", &st));
        DK_CHECK_OK(dk_pipeline_add(p, st));
        const dk_group *fmt = dk_pipeline_format(p);
        dk_sample x;
        DK_CHECK_EQ_INT(synth_sample(&s, &so, &x, 0), 0);
        DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
        /* Hand-computed 2-D boxes: u = 80 - 80 y / x, v = 45 - 80 z / x
           (cam 0), u = 80 + 80 x / y, v = 45 - 80 z / y (cam 1). */
        const double e = 80.0 / 9;
        const double want0[][5] = {
            {0, 80 - e, 45 - e, 80 + e, 45 + e},
            {3, 0, 45 - e, 80 - 80.0 * 9 / 11, 45 + e},
            {5, 0, 0, IMG_W, IMG_H},
            {6, 80 - 80.0 / 19, 45 - 80.0 / 19, 80 + 80.0 / 19, 45 + 80.0 / 19},
        };
        const double want1[][5] = {
            {2, 80 + 80.0 * 4 / 51, 45 - 80.0 / 49, 80 + 80.0 * 6 / 49, 45 + 80.0 / 49},
            {3, 80 + 80.0 * 9 / 11, 45 - e, IMG_W, 45 + e},
        };
        const double (*want[2])[5] = {want0, want1};
        int n_want[2] = {occl ? 2 : 4, 2};
        for (int cam = 0; cam < 2; cam++) {
            char path[64];
            snprintf(path, sizeof path, "cams[%d].gt_bboxes_2d", cam);
            int bb = dk_group_find(fmt, DK_GROUP_ROOT, path);
            snprintf(path, sizeof path, "cams[%d].gt_visible", cam);
            int mk = dk_group_find(fmt, DK_GROUP_ROOT, path);
            snprintf(path, sizeof path, "cams[%d].centers2d", cam);
            int ce = dk_group_find(fmt, DK_GROUP_ROOT, path);
            snprintf(path, sizeof path, "cams[%d].depths", cam);
            int de = dk_group_find(fmt, DK_GROUP_ROOT, path);
            snprintf(path, sizeof path, "cams[%d].gt_labels_2d", cam);
            int la = dk_group_find(fmt, DK_GROUP_ROOT, path);
            snprintf(path, sizeof path, "cams[%d].gt_index_2d", cam);
            int ix = dk_group_find(fmt, DK_GROUP_ROOT, path);
            DK_CHECK(bb >= 0 && mk >= 0 && ce >= 0 && de >= 0 && la >= 0 && ix >= 0);
            DK_CHECK_EQ_INT(x.values[bb].shape[0], n_want[cam]);
            DK_CHECK_EQ_INT(x.values[mk].shape[0], sc.n_boxes);
            int k = 0;
            for (int w = 0; w < (cam == 0 ? 4 : 2); w++) {
                const double *r = want[cam][w];
                int i = (int)r[0];
                if (occl && cam == 0 && (i == 5 || i == 6)) {
                    DK_CHECK_EQ_INT(((const uint8_t *)x.values[mk].data)[i], 0);
                    continue;
                }
                DK_CHECK_EQ_INT(((const uint8_t *)x.values[mk].data)[i], 1);
                DK_CHECK_EQ_INT(I(&x, ix)[k], i);
                DK_CHECK_EQ_INT(I(&x, la)[k], i % 3);
                for (int q = 0; q < 4; q++) DK_CHECK_NEAR(F(&x, bb)[4 * k + q], r[1 + q], 1e-3);
                const float *b = sc.boxes[i];
                double depth = cam == 0 ? b[0] : b[1];
                double cu = cam == 0 ? 80 - 80.0 * b[1] / b[0] : 80 + 80.0 * b[0] / b[1];
                DK_CHECK_NEAR(F(&x, de)[k], depth, 1e-4);
                DK_CHECK_NEAR(F(&x, ce)[2 * k], cu, 1e-3);
                DK_CHECK_NEAR(F(&x, ce)[2 * k + 1], 45 - 80.0 * b[2] / depth, 1e-3);
                k++;
            }
            int nvis = 0;
            for (int i = 0; i < sc.n_boxes; i++) nvis += ((const uint8_t *)x.values[mk].data)[i];
            DK_CHECK_EQ_INT(nvis, n_want[cam]);
        }
        dk_sample_free(&x);
        dk_pipeline_destroy(p);
    }
    /* Unwrapped, one step serves every camera, with a fixed image size. */
    {
        dk_pipeline *p = make_pipeline(&s, 0);
        dk_visible_boxes_config c;
        dk_visible_boxes_config_init(&c);
        c.image_w = IMG_W / 2;   /* only the left half of each image */
        c.image_h = IMG_H;
        c.bboxes_out = c.centers_out = c.depths_out = c.labels_out = NULL;
        dk_step *st;
        DK_CHECK_OK(dk_step_visible_boxes(&c, &st));
        DK_CHECK_OK(dk_pipeline_add(p, st));
        int m0 = dk_group_find(dk_pipeline_format(p), DK_GROUP_ROOT, "cams[0].gt_visible");
        int m1 = dk_group_find(dk_pipeline_format(p), DK_GROUP_ROOT, "cams[1].gt_visible");
        DK_CHECK(m0 >= 0 && m1 >= 0);
        DK_CHECK(dk_group_find(dk_pipeline_format(p), DK_GROUP_ROOT, "cams[0].depths") < 0);
        dk_sample x;
        DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
        DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
        const uint8_t *v0 = x.values[m0].data, *v1 = x.values[m1].data;
        /* cam 0, u < 80: boxes 0, 3, 5, 6 (box 0 and 6 touch u < 80). cam 1:
           box 2 spans u >= 80 + 80 * 4 / 51 > 80: gone; box 3 too. */
        const uint8_t w0[7] = {1, 0, 0, 1, 0, 1, 1}, w1[7] = {0, 0, 0, 0, 0, 0, 0};
        for (int i = 0; i < 7; i++) {
            DK_CHECK_EQ_INT(v0[i], w0[i]);
            DK_CHECK_EQ_INT(v1[i], w1[i]);
        }
        dk_sample_free(&x);
        dk_pipeline_destroy(p);
    }
    dk_group_destroy(s.g);
}

/* ------------------------------------------------------------------------ */

static void test_3d_pad_to_uniform(void)
{
    synth s;
    DK_CHECK_EQ_INT(synth_format(&s, 2), 0);
    scene sc;
    scene_default(&sc);
    dk_pipeline *p = make_pipeline(&s, 0);
    dk_visible_boxes_config vc;
    dk_visible_boxes_config_init(&vc);
    dk_step *st;
    DK_CHECK_OK(dk_step_visible_boxes(&vc, &st));
    DK_CHECK_OK(dk_pipeline_add(p, st));
    dk_pad_to_uniform_config c;
    dk_pad_to_uniform_config_init(&c);
    const char *names[] = {"gt_labels_3d", "gt_bboxes_3d", "gt_bboxes_2d"};
    c.names = names;
    c.n_names = 3;
    c.capacity = 12;
    c.fill = -1;
    DK_CHECK_OK(dk_step_pad_to_uniform(&c, &st));
    DK_CHECK_OK(dk_pipeline_add(p, st));
    const dk_group *fmt = dk_pipeline_format(p);
    int lc = dk_group_find(fmt, DK_GROUP_ROOT, "gt_labels_3d_count");
    int bc = dk_group_find(fmt, DK_GROUP_ROOT, "gt_bboxes_3d_count");
    int c0 = dk_group_find(fmt, DK_GROUP_ROOT, "cams[0].gt_bboxes_2d_count");
    int c1 = dk_group_find(fmt, DK_GROUP_ROOT, "cams[1].gt_bboxes_2d_count");
    int b0 = dk_group_find(fmt, DK_GROUP_ROOT, "cams[0].gt_bboxes_2d");
    int v0 = dk_group_find(fmt, DK_GROUP_ROOT, "cams[0].gt_visible");
    DK_CHECK(lc >= 0 && bc >= 0 && c0 >= 0 && c1 >= 0 && b0 >= 0 && v0 >= 0);
    dk_field_info fi;
    DK_CHECK_OK(dk_group_info(fmt, lc, &fi));
    DK_CHECK_EQ_INT(fi.dtype, DK_I32);
    DK_CHECK_EQ_INT(fi.ndim, 0);
    dk_sample x;
    DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
    DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
    DK_CHECK_EQ_INT(x.values[s.labels].shape[0], 12);
    DK_CHECK_EQ_INT(x.values[s.boxes].shape[0], 12);
    DK_CHECK_EQ_INT(x.values[s.boxes].shape[1], 9);
    DK_CHECK_EQ_INT(*I(&x, lc), sc.n_boxes);
    DK_CHECK_EQ_INT(*I(&x, bc), sc.n_boxes);
    for (int i = 0; i < 12; i++) {
        DK_CHECK_EQ_INT(I(&x, s.labels)[i], i < sc.n_boxes ? i % 3 : -1);
        for (int k = 0; k < 9; k++)
            DK_CHECK_NEAR(F(&x, s.boxes)[9 * i + k], i < sc.n_boxes ? sc.boxes[i][k] : -1.0, 0);
    }
    int nvis = 0;
    for (int i = 0; i < sc.n_boxes; i++) nvis += ((const uint8_t *)x.values[v0].data)[i];
    DK_CHECK(nvis > 0);
    DK_CHECK_EQ_INT(*I(&x, c0), nvis);
    DK_CHECK_EQ_INT(x.values[b0].shape[0], 12);
    DK_CHECK_NEAR(F(&x, b0)[4 * nvis], -1.0, 0);
    DK_CHECK(F(&x, b0)[2] > F(&x, b0)[0]);
    dk_sample_free(&x);
    dk_pipeline_destroy(p);

    /* Over capacity: an error naming the field, or the first rows. */
    for (int trunc = 0; trunc < 2; trunc++) {
        p = make_pipeline(&s, 0);
        c.names = names;
        c.n_names = 1;
        c.capacity = 3;
        c.truncate = trunc;
        DK_CHECK_OK(dk_step_pad_to_uniform(&c, &st));
        DK_CHECK_OK(dk_pipeline_add(p, st));
        DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
        if (!trunc) {
            DK_CHECK_STATUS(dk_pipeline_run(p, &x, "sample_x"), DK_ERANGE);
            DK_CHECK_CONTAINS(dk_errmsg(), "gt_labels_3d");
            DK_CHECK_CONTAINS(dk_errmsg(), "sample_x");
        } else {
            DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
            DK_CHECK_EQ_INT(x.values[s.labels].shape[0], 3);
            for (int i = 0; i < 3; i++) DK_CHECK_EQ_INT(I(&x, s.labels)[i], i % 3);
        }
        dk_sample_free(&x);
        dk_pipeline_destroy(p);
    }
    dk_group_destroy(s.g);
}

/* ------------------------------------------------------------------------ */

static void test_3d_heatmap(void)
{
    synth s;
    DK_CHECK_EQ_INT(synth_format(&s, 1), 0);
    scene sc;
    scene_default(&sc);
    sc.n_boxes = 4;
    set_box(sc.boxes[0], 10.3, -5.1, 0, 4.5, 1.9, 1.6, 0.3, 0, 0);   /* label 0 */
    set_box(sc.boxes[1], -20.2, 30.5, 0, 0.6, 0.6, 1.7, 0, 0, 0);    /* label 1 */
    set_box(sc.boxes[2], 70, 0, 0, 4, 2, 1.5, 0, 0, 0);              /* label 2, outside */
    set_box(sc.boxes[3], 0.1, 0.1, 0, 12, 3, 3.5, 0, 0, 0);          /* label 0 */
    dk_pipeline *p = make_pipeline(&s, 0);
    dk_heatmap_config c;
    dk_heatmap_config_init(&c);
    c.num_classes = 3;
    dk_step *st;
    DK_CHECK_OK(dk_step_heatmap(&c, &st));
    DK_CHECK_OK(dk_pipeline_add(p, st));
    int hm = dk_group_find(dk_pipeline_format(p), DK_GROUP_ROOT, "heatmap");
    DK_CHECK(hm >= 0);
    dk_sample x;
    DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
    DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
    const dk_tensor *h = &x.values[hm];
    double cell = c.voxel_size[0] * c.out_size_factor;
    int W = (int)lround((c.range[3] - c.range[0]) / cell), H = W;
    DK_CHECK_EQ_INT(h->ndim, 3);
    DK_CHECK_EQ_INT(h->shape[0], 3);
    DK_CHECK_EQ_INT(h->shape[1], H);
    DK_CHECK_EQ_INT(h->shape[2], W);
    const float *v = h->data;
    double total[3] = {0, 0, 0};
    for (int64_t i = 0; i < 3 * (int64_t)H * W; i++) total[i / ((int64_t)H * W)] += v[i];
    DK_CHECK(total[2] == 0);   /* the only class-2 box is outside the map */
    for (int i = 0; i < 4; i++) {
        const float *b = sc.boxes[i];
        if (i == 2) continue;
        int lab = i % 3;
        int cx = (int)((b[0] - c.range[0]) / cell), cy = (int)((b[1] - c.range[1]) / cell);
        const float *plane = v + (int64_t)lab * H * W;
        DK_CHECK_NEAR(plane[cy * W + cx], 1.0, 1e-6);
        /* A local maximum, falling off as the Gaussian of the CenterNet
           radius: r = max(2, (int)radius(w / cell, l / cell)). */
        int r = (int)dk_ragged_gaussian_radius(b[4] / cell, b[3] / cell, c.min_overlap);
        if (r < c.min_radius) r = c.min_radius;
        double sigma = (2 * r + 1) / 6.0;
        DK_CHECK_NEAR(plane[cy * W + cx + 1], exp(-1 / (2 * sigma * sigma)), 1e-5);
        DK_CHECK_NEAR(plane[(cy + 1) * W + cx - 1], exp(-2 / (2 * sigma * sigma)), 1e-5);
        DK_CHECK_NEAR(plane[cy * W + cx + r + 1], 0, 0);
        DK_CHECK(plane[cy * W + cx + r] > 0);
    }
    /* Everything drawn comes from some box within its radius. */
    int peaks = 0;
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) peaks += v[((int64_t)k * H + y) * W + xx] == 1.0f;
    DK_CHECK_EQ_INT(peaks, 3);
    dk_sample_free(&x);
    dk_pipeline_destroy(p);
    dk_group_destroy(s.g);
}

/* ------------------------------------------------------------------------ */

static void test_3d_remove_fields(void)
{
    synth s;
    DK_CHECK_EQ_INT(synth_format(&s, 2), 0);
    scene sc;
    scene_default(&sc);
    dk_pipeline *p = make_pipeline(&s, 0);
    const char *names[] = {"gt_visibility", "image"};
    dk_step *st;
    DK_CHECK_OK(dk_step_remove_fields(names, 2, &st));
    DK_CHECK_OK(dk_pipeline_add(p, st));
    const dk_group *fmt = dk_pipeline_format(p);
    DK_CHECK(dk_group_find(fmt, DK_GROUP_ROOT, "gt_visibility") < 0);
    DK_CHECK(dk_group_find(fmt, DK_GROUP_ROOT, "cams[0].image") < 0);
    DK_CHECK(dk_group_find(fmt, DK_GROUP_ROOT, "cams[1].image") < 0);
    DK_CHECK(dk_group_find(fmt, DK_GROUP_ROOT, "cams[1].lidar2img") >= 0);
    dk_sample x;
    DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
    DK_CHECK_OK(dk_pipeline_run(p, &x, NULL));
    DK_CHECK_EQ_INT(x.values[s.vis].dtype, DK_DTYPE_INVALID);
    DK_CHECK_EQ_INT(x.values[s.img[1]].dtype, DK_DTYPE_INVALID);
    DK_CHECK_EQ_INT(x.values[s.labels].dtype, DK_I32);
    dk_sample_free(&x);
    /* A name that matches nothing (it is gone now). */
    DK_CHECK_OK(dk_step_remove_fields(names, 1, &st));
    DK_CHECK_STATUS(dk_pipeline_add(p, st), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "gt_visibility");
    DK_CHECK_EQ_INT(dk_pipeline_num_steps(p), 1);
    dk_pipeline_destroy(p);
    dk_group_destroy(s.g);
}

/* ------------------------------------------------------------------------ */

static void test_3d_bad_configs(void)
{
    dk_step *st = (dk_step *)1;
    dk_global_transform_3d_config g;
    dk_global_transform_3d_config_init(&g);
    g.rot_range[0] = 1;
    g.rot_range[1] = -1;
    DK_CHECK_STATUS(dk_step_global_transform_3d(&g, &st), DK_EINVAL);
    DK_CHECK(st == NULL);
    DK_CHECK_CONTAINS(dk_errmsg(), "rot_range");
    dk_global_transform_3d_config_init(&g);
    g.scale_range[0] = 0;
    DK_CHECK_STATUS(dk_step_global_transform_3d(&g, &st), DK_EINVAL);
    dk_global_transform_3d_config_init(&g);
    g.flip_h_prob = 1.5f;
    DK_CHECK_STATUS(dk_step_global_transform_3d(&g, &st), DK_EINVAL);
    dk_global_transform_3d_config_init(&g);
    g.translation_std[1] = NAN;
    DK_CHECK_STATUS(dk_step_global_transform_3d(&g, &st), DK_EINVAL);
    dk_global_transform_3d_config_init(&g);
    g.n_from_lidar = 2;
    g.from_lidar = NULL;
    DK_CHECK_STATUS(dk_step_global_transform_3d(&g, &st), DK_EINVAL);

    dk_points_in_range_config pr;
    dk_points_in_range_config_init(&pr);
    pr.range[2] = 10;
    DK_CHECK_STATUS(dk_step_points_in_range(&pr, &st), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "range");
    dk_boxes_in_range_config br;
    dk_boxes_in_range_config_init(&br);
    br.range[3] = NAN;
    DK_CHECK_STATUS(dk_step_boxes_in_range(&br, &st), DK_EINVAL);
    dk_boxes_in_range_config_init(&br);
    br.remove = 0;
    DK_CHECK_STATUS(dk_step_boxes_in_range(&br, &st), DK_EINVAL);

    dk_class_filter_config cf;
    dk_class_filter_config_init(&cf);
    DK_CHECK_STATUS(dk_step_class_filter(&cf, &st), DK_EINVAL);
    const int32_t rep[] = {1, 2, 1};
    cf.classes = rep;
    cf.n_classes = 3;
    DK_CHECK_STATUS(dk_step_class_filter(&cf, &st), DK_EINVAL);

    dk_visible_boxes_config vb;
    dk_visible_boxes_config_init(&vb);
    vb.min_depth = 0;
    DK_CHECK_STATUS(dk_step_visible_boxes(&vb, &st), DK_EINVAL);
    dk_visible_boxes_config_init(&vb);
    vb.image_w = 100;
    DK_CHECK_STATUS(dk_step_visible_boxes(&vb, &st), DK_EINVAL);
    dk_visible_boxes_config_init(&vb);
    vb.bboxes_out = "depths";
    DK_CHECK_STATUS(dk_step_visible_boxes(&vb, &st), DK_EINVAL);

    dk_pad_to_uniform_config pc;
    dk_pad_to_uniform_config_init(&pc);
    const char *nm[] = {"gt_labels_3d"};
    pc.names = nm;
    pc.n_names = 1;
    DK_CHECK_STATUS(dk_step_pad_to_uniform(&pc, &st), DK_EINVAL);   /* no capacity */
    DK_CHECK_STATUS(dk_step_pad_to_uniform(NULL, &st), DK_EINVAL);

    dk_heatmap_config hc;
    dk_heatmap_config_init(&hc);
    hc.voxel_size[0] = 0;
    DK_CHECK_STATUS(dk_step_heatmap(&hc, &st), DK_EINVAL);
    dk_heatmap_config_init(&hc);
    hc.min_overlap = 1;
    DK_CHECK_STATUS(dk_step_heatmap(&hc, &st), DK_EINVAL);
    dk_heatmap_config_init(&hc);
    hc.range[0] = 60;
    DK_CHECK_STATUS(dk_step_heatmap(&hc, &st), DK_EINVAL);
    dk_heatmap_config_init(&hc);
    hc.voxel_size[1] = 1e-6f;
    DK_CHECK_STATUS(dk_step_heatmap(&hc, &st), DK_EINVAL);

    DK_CHECK_STATUS(dk_step_remove_fields(NULL, 0, &st), DK_EINVAL);
    const char *bad[] = {"x", NULL};
    DK_CHECK_STATUS(dk_step_remove_fields(bad, 2, &st), DK_EINVAL);
    DK_CHECK_STATUS(dk_step_remove_masked(NULL, NULL, 0, 0, &st), DK_EINVAL);
    DK_CHECK(st == NULL);
}

/* Formats the steps cannot bind to, and values they cannot use. */
static void test_3d_bad_formats(void)
{
    dk_group *g;
    DK_CHECK_OK(dk_group_create(&g));
    int boxes = dk_group_add_tensor(g, DK_GROUP_ROOT, "gt_bboxes_3d", DK_F64, 2);
    int labels = dk_group_add_tensor(g, DK_GROUP_ROOT, "gt_labels_3d", DK_F32, 1);
    DK_CHECK(boxes >= 0 && labels >= 0);
    dk_pipeline *p;
    DK_CHECK_OK(dk_pipeline_create(g, NULL, &p));
    dk_step *st;
    DK_CHECK_OK(dk_step_global_transform_3d(NULL, &st));
    DK_CHECK_STATUS(dk_pipeline_add(p, st), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "global_transform_3d");
    DK_CHECK_CONTAINS(dk_errmsg(), "gt_bboxes_3d: float32 rank 2 expected, got float64 rank 2");
    DK_CHECK_OK(dk_step_boxes_in_range(NULL, &st));
    DK_CHECK_STATUS(dk_pipeline_add(p, st), DK_EINVALIDDATA);
    dk_heatmap_config hc;
    dk_heatmap_config_init(&hc);
    hc.boxes = "nothing_here";
    DK_CHECK_OK(dk_step_heatmap(&hc, &st));
    DK_CHECK_STATUS(dk_pipeline_add(p, st), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "nothing_here");
    DK_CHECK_EQ_INT(dk_pipeline_num_steps(p), 0);
    dk_pipeline_destroy(p);
    dk_group_destroy(g);

    /* The right format; a non-finite box at run time; an output that exists. */
    synth s;
    DK_CHECK_EQ_INT(synth_format(&s, 1), 0);
    scene sc;
    scene_default(&sc);
    sc.boxes[1][4] = NAN;
    DK_CHECK_OK(dk_pipeline_create(s.g, NULL, &p));
    DK_CHECK_OK(dk_step_global_transform_3d(NULL, &st));
    DK_CHECK_OK(dk_pipeline_add(p, st));
    dk_sample x;
    DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
    DK_CHECK_STATUS(dk_pipeline_run(p, &x, "tok123"), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "gt_bboxes_3d: box 1");
    DK_CHECK_CONTAINS(dk_errmsg(), "tok123");
    dk_sample_free(&x);
    dk_heatmap_config_init(&hc);
    hc.out = "gt_labels_3d";
    DK_CHECK_OK(dk_step_heatmap(&hc, &st));
    DK_CHECK_STATUS(dk_pipeline_add(p, st), DK_ESTATE);
    /* Per-box fields that disagree on the box count. */
    DK_CHECK_OK(dk_step_boxes_in_range(NULL, &st));
    DK_CHECK_OK(dk_pipeline_add(p, st));
    dk_pipeline_destroy(p);
    DK_CHECK_OK(dk_pipeline_create(s.g, NULL, &p));
    DK_CHECK_OK(dk_step_boxes_in_range(NULL, &st));
    DK_CHECK_OK(dk_pipeline_add(p, st));
    scene_default(&sc);
    DK_CHECK_EQ_INT(synth_sample(&s, &sc, &x, 0), 0);
    int64_t two = 2;
    int32_t v2[2] = {0, 0};
    DK_CHECK_OK(dk_sample_set_copy(&x, s.vis, DK_I32, 1, &two, v2));
    DK_CHECK_STATUS(dk_pipeline_run(p, &x, NULL), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "gt_visibility: 8 rows expected");
    dk_sample_free(&x);
    dk_pipeline_destroy(p);
    dk_group_destroy(s.g);
}

const dk_test_case dk_tests_data_3d[] = {
    DK_TEST(test_3d_global_transform_geometry),
    DK_TEST(test_3d_global_transform_velocity),
    DK_TEST(test_3d_global_transform_flips),
    DK_TEST(test_3d_determinism),
    DK_TEST(test_3d_boxes_in_range),
    DK_TEST(test_3d_points_in_range),
    DK_TEST(test_3d_class_and_points_filters),
    DK_TEST(test_3d_visible_boxes),
    DK_TEST(test_3d_pad_to_uniform),
    DK_TEST(test_3d_heatmap),
    DK_TEST(test_3d_remove_fields),
    DK_TEST(test_3d_bad_configs),
    DK_TEST(test_3d_bad_formats),
};
const size_t dk_tests_data_3d_count = sizeof dk_tests_data_3d / sizeof dk_tests_data_3d[0];
