/* Tests for the sensor renderer (src/world/render.c): analytic scenes with a
 * small pinhole camera and a 16-beam lidar on a hand-made rig. */
#include "dk_test.h"
#include "world/world_impl.h"

#define CAM_W 320
#define CAM_H 180
#define CAM_F 200.0
#define DEG (3.14159265358979323846 / 180.0)

enum { S_CAM = 0, S_LIDAR = 1 };

static dk_pose pose_rt(const double r[9], const double t[3])
{
    double m[16] = {r[0], r[1], r[2], t[0], r[3], r[4], r[5], t[1],
                    r[6], r[7], r[8], t[2], 0,    0,    0,    1};
    dk_pose p;
    if (dk_pose_from_matrix(m, &p)) p = dk_pose_identity();
    return p;
}

/* OpenCV camera frame -> FLU ego frame for a camera looking along +x. */
static const double CAM_FWD[9] = {0, 0, 1, -1, 0, 0, 0, -1, 0};

/* A rig with one forward pinhole camera at (1.5, 0, cam_h) and one 16-beam
 * lidar at (0.94, 0, lidar_h), elevations -25..-5 deg, 360 columns at 10 Hz. */
static void setup_rig(dk_scenario *s, double cam_h, double lidar_h)
{
    dk_rig *rig = &s->rig;
    memset(rig, 0, sizeof *rig);
    rig->n_sensors = 2;
    dk_rig_sensor *c = &rig->sensors[S_CAM];
    snprintf(c->name, sizeof c->name, "CAM_TEST");
    c->kind = DK_SENSOR_CAMERA;
    c->sensor_to_ego = pose_rt(CAM_FWD, (double[]){1.5, 0, cam_h});
    c->rate_hz = 12;
    dk_camera_init_pinhole(&c->camera, CAM_W, CAM_H, CAM_F, CAM_F, CAM_W / 2.0, CAM_H / 2.0);
    dk_rig_sensor *l = &rig->sensors[S_LIDAR];
    snprintf(l->name, sizeof l->name, "LIDAR_TEST");
    l->kind = DK_SENSOR_LIDAR;
    l->sensor_to_ego = dk_pose_from_yaw(0.94, 0, lidar_h, 0);
    l->rate_hz = 10;
    dk_lidar_model *m = &l->lidar;
    m->n_beams = 16;
    m->n_columns = 360;
    m->spin_hz = 10;
    m->direction = -1;
    m->azimuth_start = 0;
    m->min_range = 0.5;
    m->max_range = 150;
    for (int b = 0; b < 16; b++) m->elevation[b] = (-25.0 + 20.0 * b / 15.0) * DEG;
}

static dk_scenario *make_scene(double cam_h, double lidar_h)
{
    dk_scenario *s = NULL;
    if (dk_scenario_create(&s)) return NULL;
    setup_rig(s, cam_h, lidar_h);
    return s;
}

/* Adds an actor moving linearly from p0 (t = 0) at velocity v until t = 10. */
static int32_t add_box(dk_scenario *s, dk_actor_class cls, const double c[3], const double size[3],
                       double yaw, const double v[3])
{
    dk_actor_state st[2] = {{0, c[0], c[1], c[2], yaw},
                            {10, c[0] + 10 * v[0], c[1] + 10 * v[1], c[2] + 10 * v[2], yaw}};
    dk_actor a;
    memset(&a, 0, sizeof a);
    a.cls = cls;
    memcpy(a.size, size, sizeof a.size);
    a.n_states = 2;
    a.states = st;
    if (dk_scenario_add_actor(s, &a)) return -1;
    return s->actors[s->n_actors - 1].id;
}

static int set_ego_motion(dk_scenario *s, double vx, double vy, double yaw_rate)
{
    dk_actor_state st[11];
    for (int i = 0; i <= 10; i++) {
        double t = i;
        st[i] = (dk_actor_state){t, vx * t, vy * t, 0, yaw_rate * t};
    }
    return dk_scenario_set_actor_states(s, 0, st, 11);
}

/* Camera-frame coordinates of a world point for a static ego at the origin. */
static void world_to_cam(const dk_scenario *s, int sensor, double t, const double pw[3],
                         double pc[3])
{
    dk_pose ego = dk_scenario_ego_pose(s, t);
    dk_pose c2w = dk_pose_compose(&ego, &s->rig.sensors[sensor].sensor_to_ego);
    dk_pose w2c = dk_pose_inverse(&c2w);
    dk_pose_apply(&w2c, pw, pc);
}

/* Pixel bounding rectangle of an actor's projected corners at t. */
static int box_rect(const dk_scenario *s, int actor_index, double t, double rect[4])
{
    double corners[8][3];
    if (!dk__actor_corners(&s->actors[actor_index], 0, t, corners)) return 0;
    rect[0] = rect[1] = INFINITY;
    rect[2] = rect[3] = -INFINITY;
    for (int k = 0; k < 8; k++) {
        double pc[3], uv[2];
        world_to_cam(s, S_CAM, t, corners[k], pc);
        if (pc[2] <= 0) return 0;
        dk_camera_project(&s->rig.sensors[S_CAM].camera, pc, uv, NULL);
        rect[0] = fmin(rect[0], uv[0]);
        rect[1] = fmin(rect[1], uv[1]);
        rect[2] = fmax(rect[2], uv[0]);
        rect[3] = fmax(rect[3], uv[1]);
    }
    return 1;
}

static int32_t inst_at(const dk_tensor *inst, int x, int y)
{
    return ((const int32_t *)inst->data)[(size_t)y * inst->shape[1] + x];
}

/* Pixels whose centre is > margin inside rect must show `id`; pixels whose
 * centre is > margin outside must not. Returns the number of violations. */
static int check_rect(const dk_tensor *inst, const double rect[4], int32_t id, double margin,
                      int *n_inside)
{
    int bad = 0;
    *n_inside = 0;
    for (int y = 0; y < (int)inst->shape[0]; y++) {
        for (int x = 0; x < (int)inst->shape[1]; x++) {
            double u = x + 0.5, v = y + 0.5;
            int inside = u > rect[0] + margin && u < rect[2] - margin && v > rect[1] + margin &&
                         v < rect[3] - margin;
            int outside = u < rect[0] - margin || u > rect[2] + margin || v < rect[1] - margin ||
                          v > rect[3] + margin;
            int32_t got = inst_at(inst, x, y);
            if (inside) {
                (*n_inside)++;
                if (got != id) bad++;
            }
            if (outside && got == id) bad++;
        }
    }
    return bad;
}

/* ------------------------------------------------------------------------ */

static void test_render_horizon(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = make_scene(1.6, 3.0);
    DK_CHECK(s);
    dk_world_renderer *r;
    DK_CHECK_OK(dk_world_renderer_create(s, NULL, &r));
    dk_tensor rgb, inst;
    DK_CHECK_OK(dk_world_render_camera(r, S_CAM, 0.0, NULL, &rgb, &inst));
    DK_CHECK_EQ_INT(rgb.dtype, DK_U8);
    DK_CHECK_EQ_INT(rgb.ndim, 3);
    DK_CHECK_EQ_INT(rgb.shape[0], CAM_H);
    DK_CHECK_EQ_INT(rgb.shape[1], CAM_W);
    DK_CHECK_EQ_INT(rgb.shape[2], 3);
    DK_CHECK_EQ_INT(inst.dtype, DK_I32);
    DK_CHECK_EQ_INT(inst.shape[0], CAM_H);
    /* Level camera: a pixel row sees the ground iff its ray points down, i.e.
       its centre v = y + 0.5 lies below cy = 90: rows >= 90. The sky is blue
       (B - R >= 33 everywhere); the ground is grass fading into haze, so its
       B - R stays below the horizon sky's. */
    const uint8_t *px = rgb.data;
    int bad = 0;
    for (int y = 0; y < CAM_H; y++) {
        for (int x = 0; x < CAM_W; x++) {
            const uint8_t *p = px + 3 * ((size_t)y * CAM_W + x);
            int br = (int)p[2] - (int)p[0];
            if (y < 90 && br < 33) bad++;
            if (y >= 90 && br >= 33) bad++;
            if (inst_at(&inst, x, y) != 0) bad++;
        }
    }
    DK_CHECK_EQ_INT(bad, 0);
    /* Near ground (bottom rows) is grass: green over blue. */
    const uint8_t *g = px + 3 * ((size_t)(CAM_H - 1) * CAM_W + CAM_W / 2);
    DK_CHECK(g[1] > g[2]);
    dk_tensor_release(&rgb);
    dk_tensor_release(&inst);
    dk_world_renderer_destroy(r);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_render_box_rect(void)
{
    int64_t live0 = dk_alloc_live();
    /* Camera at the box's mid height: only its front face is seen, so its
       silhouette is the bounding rectangle of its projected corners. */
    dk_scenario *s = make_scene(0.75, 3.0);
    DK_CHECK(s);
    int32_t id = add_box(s, DK_CLASS_CAR, (double[]){20, 0.3, 0.75}, (double[]){4, 2, 1.5}, 0,
                         (double[]){0, 0, 0});
    DK_CHECK(id > 0);
    dk_world_renderer *r;
    DK_CHECK_OK(dk_world_renderer_create(s, NULL, &r));
    dk_tensor rgb, inst;
    DK_CHECK_OK(dk_world_render_camera(r, S_CAM, 1.0, NULL, &rgb, &inst));
    double rect[4];
    DK_CHECK(box_rect(s, 0, 1.0, rect));
    int n_in, bad = check_rect(&inst, rect, id, 1.0, &n_in);
    DK_CHECK_EQ_INT(bad, 0);
    DK_CHECK(n_in > 200);
    /* The box is shaded, not sky- or ground-coloured: its pixels differ from
       the same pixels without it. */
    dk_tensor_release(&rgb);
    dk_tensor_release(&inst);
    dk_world_renderer_destroy(r);

    /* A yawed box seen from above: its silhouette is the convex hull of the
       projected corners; the bounding rectangle's centre must show it. */
    dk_scenario_remove_actor(s, id);
    setup_rig(s, 1.6, 3.0);
    id = add_box(s, DK_CLASS_BUS, (double[]){15, -2, 1.5}, (double[]){10, 2.5, 3}, 0.6,
                 (double[]){0, 0, 0});
    DK_CHECK_OK(dk_world_renderer_create(s, NULL, &r));
    DK_CHECK_OK(dk_world_render_camera(r, S_CAM, 2.0, NULL, &rgb, &inst));
    DK_CHECK(box_rect(s, 0, 2.0, rect));
    int bad_out = 0, seen = 0;
    for (int y = 0; y < CAM_H; y++)
        for (int x = 0; x < CAM_W; x++) {
            double u = x + 0.5, v = y + 0.5;
            int32_t got = inst_at(&inst, x, y);
            if (got == id) seen++;
            if (got == id && (u < rect[0] - 1 || u > rect[2] + 1 || v < rect[1] - 1 || v > rect[3] + 1))
                bad_out++;
        }
    DK_CHECK_EQ_INT(bad_out, 0);
    DK_CHECK(seen > 1000);
    double pc[3], uv[2], ctr[3] = {15, -2, 1.5};
    world_to_cam(s, S_CAM, 2.0, ctr, pc);
    DK_CHECK(dk_camera_project(&s->rig.sensors[S_CAM].camera, pc, uv, NULL));
    DK_CHECK_EQ_INT(inst_at(&inst, (int)uv[0], (int)uv[1]), id);
    dk_tensor_release(&rgb);
    dk_tensor_release(&inst);
    dk_world_renderer_destroy(r);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_render_occlusion(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = make_scene(0.75, 3.0);
    DK_CHECK(s);
    /* far, big box first (insertion order must not matter), then near box */
    int32_t far_id = add_box(s, DK_CLASS_TRUCK, (double[]){30, 1.0, 1.5}, (double[]){2, 6, 3}, 0,
                             (double[]){0, 0, 0});
    int32_t near_id = add_box(s, DK_CLASS_CAR, (double[]){15, 0, 0.75}, (double[]){2, 1.8, 1.5}, 0,
                              (double[]){0, 0, 0});
    dk_world_renderer *r;
    DK_CHECK_OK(dk_world_renderer_create(s, NULL, &r));
    dk_tensor rgb, inst;
    DK_CHECK_OK(dk_world_render_camera(r, S_CAM, 0.5, NULL, &rgb, &inst));
    double rf[4], rn[4];
    DK_CHECK(box_rect(s, 0, 0.5, rf));
    DK_CHECK(box_rect(s, 1, 0.5, rn));
    int n_in;
    DK_CHECK_EQ_INT(check_rect(&inst, rn, near_id, 1.0, &n_in), 0);
    DK_CHECK(n_in > 200);
    /* the far box shows wherever it is not behind the near one */
    int bad = 0, n_far = 0;
    for (int y = 0; y < CAM_H; y++)
        for (int x = 0; x < CAM_W; x++) {
            double u = x + 0.5, v = y + 0.5;
            int in_far = u > rf[0] + 1 && u < rf[2] - 1 && v > rf[1] + 1 && v < rf[3] - 1;
            int out_near = u < rn[0] - 1 || u > rn[2] + 1 || v < rn[1] - 1 || v > rn[3] + 1;
            if (in_far && out_near) {
                n_far++;
                if (inst_at(&inst, x, y) != far_id) bad++;
            }
        }
    DK_CHECK_EQ_INT(bad, 0);
    DK_CHECK(n_far > 200);
    dk_tensor_release(&rgb);
    dk_tensor_release(&inst);
    dk_world_renderer_destroy(r);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* Rolling shutter: every row (or column) of the rolling-shutter image equals
 * that row of a global-shutter image rendered at the row's readout time. */
static void check_rolling(dk_shutter shutter)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = make_scene(1.6, 3.0);
    DK_CHECK(s);
    DK_CHECK_OK(set_ego_motion(s, 12, 0, 0.3));
    add_box(s, DK_CLASS_CAR, (double[]){25, -6, 0.8}, (double[]){4.5, 1.9, 1.6}, 1.5708,
            (double[]){0, 15, 0});
    add_box(s, DK_CLASS_PEDESTRIAN, (double[]){14, 3, 0.9}, (double[]){0.6, 0.6, 1.8}, 0,
            (double[]){1, -2, 0});
    add_box(s, DK_CLASS_BUS, (double[]){40, 6, 1.6}, (double[]){11, 2.6, 3.2}, 0.2,
            (double[]){-8, 0, 0});
    const double readout = 0.06, t = 1.0;
    s->rig.sensors[S_CAM].camera.shutter = shutter;
    s->rig.sensors[S_CAM].readout_time = readout;
    dk_scenario *g = NULL;
    DK_CHECK_OK(dk_scenario_clone(s, &g));
    g->rig.sensors[S_CAM].readout_time = 0;
    dk_world_renderer *rr, *rg;
    DK_CHECK_OK(dk_world_renderer_create(s, NULL, &rr));
    DK_CHECK_OK(dk_world_renderer_create(g, NULL, &rg));
    dk_tensor rgb, inst, rgb0, inst0;
    DK_CHECK_OK(dk_world_render_camera(rr, S_CAM, t, NULL, &rgb, &inst));
    /* the effect is visible: the global-shutter frame at t differs */
    DK_CHECK_OK(dk_world_render_camera(rg, S_CAM, t, NULL, &rgb0, &inst0));
    DK_CHECK(memcmp(inst.data, inst0.data, dk_tensor_nbytes(&inst)) != 0);
    dk_tensor_release(&rgb0);
    dk_tensor_release(&inst0);
    const dk_camera *cam = &s->rig.sensors[S_CAM].camera;
    int by_rows = shutter == DK_SHUTTER_TOP_TO_BOTTOM || shutter == DK_SHUTTER_BOTTOM_TO_TOP;
    int n = by_rows ? CAM_H : CAM_W, mismatches = 0, compared = 0, with_actor = 0;
    for (int i = 0; i < n; i += 7) {
        double uv[2] = {by_rows ? 0.5 : i + 0.5, by_rows ? i + 0.5 : 0.5};
        double ti = t + dk_camera_shutter_time(cam, uv) * readout;
        DK_CHECK_OK(dk_world_render_camera(rg, S_CAM, ti, NULL, &rgb0, &inst0));
        int m = by_rows ? CAM_W : CAM_H;
        for (int j = 0; j < m; j++) {
            int x = by_rows ? j : i, y = by_rows ? i : j;
            size_t k = (size_t)y * CAM_W + x;
            int32_t a = ((int32_t *)inst.data)[k], b = ((int32_t *)inst0.data)[k];
            if (a != b || memcmp((uint8_t *)rgb.data + 3 * k, (uint8_t *)rgb0.data + 3 * k, 3))
                mismatches++;
            if (a) with_actor++;
            compared++;
        }
        dk_tensor_release(&rgb0);
        dk_tensor_release(&inst0);
    }
    DK_CHECK_EQ_INT(mismatches, 0);
    DK_CHECK(with_actor > 50);
    DK_CHECK(compared > 5000);
    dk_tensor_release(&rgb);
    dk_tensor_release(&inst);
    dk_world_renderer_destroy(rr);
    dk_world_renderer_destroy(rg);
    dk_scenario_destroy(s);
    dk_scenario_destroy(g);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_render_rolling_shutter(void)
{
    check_rolling(DK_SHUTTER_TOP_TO_BOTTOM);
    if (dk_test_failed_) return;
    check_rolling(DK_SHUTTER_BOTTOM_TO_TOP);
    if (dk_test_failed_) return;
    check_rolling(DK_SHUTTER_LEFT_TO_RIGHT);
}

/* Non-pinhole models take the per-pixel-ray path: an OpenCV camera without
 * distortion must agree with the pinhole; a fisheye sees a box at the pixel its
 * centre projects to. */
static void test_render_camera_models(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = make_scene(1.6, 3.0);
    DK_CHECK(s);
    int32_t id = add_box(s, DK_CLASS_CAR, (double[]){12, 2, 0.8}, (double[]){4.5, 1.9, 1.6}, 0.4,
                         (double[]){0, 0, 0});
    add_box(s, DK_CLASS_PEDESTRIAN, (double[]){8, -1.5, 0.9}, (double[]){0.6, 0.6, 1.8}, 0,
            (double[]){0, 0, 0});
    dk_world_renderer *r;
    dk_tensor rgb, inst, rgb2, inst2;
    DK_CHECK_OK(dk_world_renderer_create(s, NULL, &r));
    DK_CHECK_OK(dk_world_render_camera(r, S_CAM, 0, NULL, &rgb, &inst));
    dk_world_renderer_destroy(r);
    dk_camera *cam = &s->rig.sensors[S_CAM].camera;
    dk_camera_init_opencv(cam, CAM_W, CAM_H, CAM_F, CAM_F, CAM_W / 2.0, CAM_H / 2.0, NULL, NULL,
                          NULL);
    DK_CHECK_OK(dk_world_renderer_create(s, NULL, &r));
    DK_CHECK_OK(dk_world_render_camera(r, S_CAM, 0, NULL, &rgb2, &inst2));
    int diff = 0, n_id = 0;
    for (size_t k = 0; k < (size_t)CAM_W * CAM_H; k++) {
        diff += ((int32_t *)inst.data)[k] != ((int32_t *)inst2.data)[k];
        n_id += ((int32_t *)inst.data)[k] == id;
    }
    DK_CHECK(n_id > 1000);
    DK_CHECK(diff <= 10);   /* float rounding at silhouette edges only */
    dk_tensor_release(&rgb);
    dk_tensor_release(&inst);
    dk_tensor_release(&rgb2);
    dk_tensor_release(&inst2);
    dk_world_renderer_destroy(r);

    dk_camera_init_fisheye(cam, CAM_W, CAM_H, 110, 110, CAM_W / 2.0, CAM_H / 2.0, NULL, 0);
    DK_CHECK_OK(dk_world_renderer_create(s, NULL, &r));
    DK_CHECK_OK(dk_world_render_camera(r, S_CAM, 0, NULL, &rgb, &inst));
    double ctr[3] = {12, 2, 0.8}, pc[3], uv[2];
    world_to_cam(s, S_CAM, 0, ctr, pc);
    DK_CHECK(dk_camera_project(cam, pc, uv, NULL));
    DK_CHECK_EQ_INT(inst_at(&inst, (int)uv[0], (int)uv[1]), id);
    /* a ground point projects onto ground (id 0), the sky stays 0 */
    double gp[3] = {6, -4, 0};
    world_to_cam(s, S_CAM, 0, gp, pc);
    DK_CHECK(dk_camera_project(cam, pc, uv, NULL));
    DK_CHECK_EQ_INT(inst_at(&inst, (int)uv[0], (int)uv[1]), 0);
    dk_tensor_release(&rgb);
    dk_tensor_release(&inst);
    dk_world_renderer_destroy(r);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_render_lidar_ground(void)
{
    int64_t live0 = dk_alloc_live();
    const double h = 3.0;
    dk_scenario *s = make_scene(1.6, h);
    DK_CHECK(s);
    dk_world_renderer_config cfg;
    dk_world_renderer_config_init(&cfg);
    DK_CHECK_NEAR(cfg.ground_texel, 0.05, 0);
    DK_CHECK_NEAR(cfg.lidar_drop_prob, 0.05, 0);
    cfg.lidar_drop_prob = 0;
    dk_world_renderer *r;
    DK_CHECK_OK(dk_world_renderer_create(s, &cfg, &r));
    dk_tensor pts, ids;
    DK_CHECK_OK(dk_world_render_lidar(r, S_LIDAR, 0.25, NULL, &pts, &ids));
    const dk_lidar_model *m = &s->rig.sensors[S_LIDAR].lidar;
    DK_CHECK_EQ_INT(pts.dtype, DK_F32);
    DK_CHECK_EQ_INT(pts.ndim, 2);
    DK_CHECK_EQ_INT(pts.shape[1], DK_LIDAR_FIELDS);
    DK_CHECK_EQ_INT(pts.shape[0], (int64_t)m->n_beams * m->n_columns);
    DK_CHECK_EQ_INT(ids.shape[0], pts.shape[0]);
    const float *p = pts.data;
    double max_err = 0, max_z = 0;
    int bad_ring = 0, bad_int = 0;
    for (int64_t i = 0; i < pts.shape[0]; i++) {
        const float *q = &p[5 * i];
        int ring = (int)q[DK_LIDAR_RING];
        if (ring < 0 || ring >= m->n_beams || q[DK_LIDAR_RING] != (float)ring) {
            bad_ring++;
            continue;
        }
        double range = sqrt((double)q[0] * q[0] + (double)q[1] * q[1] + (double)q[2] * q[2]);
        double want = h / sin(-m->elevation[ring]);
        max_err = fmax(max_err, fabs(range - want));
        max_z = fmax(max_z, fabs(q[2] + h));
        if (!(q[DK_LIDAR_INTENSITY] >= 0 && q[DK_LIDAR_INTENSITY] <= 255)) bad_int++;
        if (((int32_t *)ids.data)[i] != 0) bad_ring++;
    }
    DK_CHECK_EQ_INT(bad_ring, 0);
    DK_CHECK_EQ_INT(bad_int, 0);
    DK_CHECK(max_err < 0.01);
    DK_CHECK(max_z < 0.01);
    /* order: column-major, then beam */
    DK_CHECK_EQ_INT((int)p[DK_LIDAR_RING], 0);
    DK_CHECK_EQ_INT((int)p[5 * 15 + DK_LIDAR_RING], 15);
    DK_CHECK_EQ_INT((int)p[5 * 16 + DK_LIDAR_RING], 0);
    dk_tensor_release(&pts);
    dk_tensor_release(&ids);

    /* Motion compensation: with the ego driving, points stay in the lidar
       frame at the sweep start, so the flat ground is still at z = -h and
       a point's range differs from the static one by the ego's travel. */
    DK_CHECK_OK(set_ego_motion(s, 10, 0, 0));
    dk_world_renderer_destroy(r);
    DK_CHECK_OK(dk_world_renderer_create(s, &cfg, &r));
    DK_CHECK_OK(dk_world_render_lidar(r, S_LIDAR, 0.25, NULL, &pts, NULL));
    DK_CHECK_EQ_INT(pts.shape[0], (int64_t)m->n_beams * m->n_columns);
    p = pts.data;
    max_z = 0;
    double max_shift_err = 0;
    for (int64_t i = 0; i < pts.shape[0]; i++) {
        const float *q = &p[5 * i];
        max_z = fmax(max_z, fabs(q[2] + h));
        int col = (int)(i / m->n_beams), beam = (int)q[DK_LIDAR_RING];
        double dir[3], tc;
        dk_lidar_ray(m, beam, col, dir, &tc);
        double rg = h / sin(-m->elevation[beam]);
        double want[2] = {dir[0] * rg + 10 * tc, dir[1] * rg};
        max_shift_err = fmax(max_shift_err, hypot(q[0] - want[0], q[1] - want[1]));
    }
    DK_CHECK(max_z < 0.01);
    DK_CHECK(max_shift_err < 0.01);
    dk_tensor_release(&pts);
    dk_world_renderer_destroy(r);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_render_lidar_wall(void)
{
    int64_t live0 = dk_alloc_live();
    const double h = 3.0, wall_x = 10.0;
    dk_scenario *s = make_scene(1.6, h);
    DK_CHECK(s);
    /* a wall 1 m thick, 20 m wide, 10 m high; its near face at x = 9.5 */
    int32_t wid = add_box(s, DK_CLASS_BARRIER, (double[]){wall_x, 0, 5}, (double[]){1, 20, 10}, 0,
                          (double[]){0, 0, 0});
    dk_world_renderer_config cfg;
    dk_world_renderer_config_init(&cfg);
    cfg.lidar_drop_prob = 0;
    dk_world_renderer *r;
    DK_CHECK_OK(dk_world_renderer_create(s, &cfg, &r));
    dk_tensor pts, ids;
    DK_CHECK_OK(dk_world_render_lidar(r, S_LIDAR, 0, NULL, &pts, &ids));
    const dk_lidar_model *m = &s->rig.sensors[S_LIDAR].lidar;
    const double face = wall_x - 0.5 - 0.94;   /* lidar frame x of the face */
    /* analytic: which rays reach the face before the ground? */
    int expect = 0;
    for (int c = 0; c < m->n_columns; c++)
        for (int b = 0; b < m->n_beams; b++) {
            double d[3], tc;
            dk_lidar_ray(m, b, c, d, &tc);
            if (d[0] <= 0) continue;
            double tw = face / d[0];
            double y = tw * d[1], z = h + tw * d[2];
            double tg = d[2] < 0 ? h / -d[2] : INFINITY;
            if (tw < tg && fabs(y) < 10 && z > 0 && z < 10) expect++;
        }
    const float *p = pts.data;
    const int32_t *id = ids.data;
    int got = 0, bad = 0;
    for (int64_t i = 0; i < pts.shape[0]; i++) {
        if (id[i] != wid) continue;
        got++;
        const float *q = &p[5 * i];
        if (fabs(q[0] - face) > 0.01) bad++;
        int beam = (int)q[DK_LIDAR_RING];
        double range = sqrt((double)q[0] * q[0] + (double)q[1] * q[1] + (double)q[2] * q[2]);
        double el = asin(q[2] / range);
        if (fabs(el - m->elevation[beam]) > 1e-4) bad++;
    }
    DK_CHECK(expect > 500);
    DK_CHECK(abs(got - expect) <= 2);
    DK_CHECK_EQ_INT(bad, 0);
    dk_tensor_release(&pts);
    dk_tensor_release(&ids);
    dk_world_renderer_destroy(r);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* The points labelled with a box's id are exactly the points inside it. */
static void test_render_lidar_points_in_box(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = make_scene(1.6, 3.0);
    DK_CHECK(s);
    double ca[3] = {8, 3, 1.5}, sa[3] = {4, 2, 2};        /* floating: bottom at 0.5 */
    double cb[3] = {-6, -4, 1.2}, sb[3] = {2.2, 5, 1.6};
    int32_t ida = add_box(s, DK_CLASS_CAR, ca, sa, 0.3, (double[]){0, 0, 0});
    int32_t idb = add_box(s, DK_CLASS_TRUCK, cb, sb, -0.7, (double[]){0, 0, 0});
    dk_world_renderer *r;
    DK_CHECK_OK(dk_world_renderer_create(s, NULL, &r));
    dk_tensor pts, ids;
    DK_CHECK_OK(dk_world_render_lidar(r, S_LIDAR, 0, NULL, &pts, &ids));
    const dk_pose *l2e = &s->rig.sensors[S_LIDAR].sensor_to_ego;
    int32_t idv[2] = {ida, idb};
    const double *cv[2] = {ca, cb}, *sv[2] = {sa, sb};
    double yaw[2] = {0.3, -0.7};
    for (int k = 0; k < 2; k++) {
        dk_pose box = dk_pose_from_yaw(cv[k][0], cv[k][1], cv[k][2], yaw[k]);
        double grown[3] = {sv[k][0] + 0.01, sv[k][1] + 0.01, sv[k][2] + 0.01};
        int n_id = 0, n_in = 0, both = 0;
        for (int64_t i = 0; i < pts.shape[0]; i++) {
            const float *q = (const float *)pts.data + 5 * i;
            double pl[3] = {q[0], q[1], q[2]}, pw[3];
            dk_pose_apply(l2e, pl, pw);   /* the ego stands at the origin */
            int in = dk__point_in_box(&box, grown, pw);
            int is = ((int32_t *)ids.data)[i] == idv[k];
            n_in += in;
            n_id += is;
            both += in && is;
        }
        DK_CHECK(n_id > 30);
        DK_CHECK_EQ_INT(n_in, n_id);
        DK_CHECK_EQ_INT(both, n_id);
    }
    dk_tensor_release(&pts);
    dk_tensor_release(&ids);
    dk_world_renderer_destroy(r);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_render_lidar_drop_and_self(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = make_scene(1.6, 3.0);
    DK_CHECK(s);
    dk_world_renderer_config cfg;
    dk_world_renderer_config_init(&cfg);
    cfg.lidar_drop_prob = 0.2;
    cfg.seed = 11;
    dk_world_renderer *r;
    DK_CHECK_OK(dk_world_renderer_create(s, &cfg, &r));
    const dk_lidar_model *m = &s->rig.sensors[S_LIDAR].lidar;
    double n_rays = 0, n_pts = 0;
    dk_tensor a, b;
    for (int sweep = 0; sweep < 4; sweep++) {
        DK_CHECK_OK(dk_world_render_lidar(r, S_LIDAR, 0.1 * sweep, NULL, &a, NULL));
        n_rays += (double)m->n_beams * m->n_columns;
        n_pts += (double)a.shape[0];
        if (sweep == 0) {
            /* deterministic */
            DK_CHECK_OK(dk_world_render_lidar(r, S_LIDAR, 0, NULL, &b, NULL));
            DK_CHECK_EQ_INT(a.shape[0], b.shape[0]);
            DK_CHECK(memcmp(a.data, b.data, dk_tensor_nbytes(&a)) == 0);
            dk_tensor_release(&b);
        }
        dk_tensor_release(&a);
    }
    DK_CHECK_NEAR(1 - n_pts / n_rays, 0.2, 0.01);
    dk_world_renderer_destroy(r);

    /* Self-hits: a lidar just above the roof with steep beams sees the roof
       (the ego's own box), which returns nothing; no point lies in the box. */
    s->rig.sensors[S_LIDAR].sensor_to_ego = dk_pose_from_yaw(0.94, 0, s->ego.size[2] + 0.2, 0);
    dk_lidar_model *lm = &s->rig.sensors[S_LIDAR].lidar;
    for (int k = 0; k < 16; k++) lm->elevation[k] = (-80.0 + 70.0 * k / 15.0) * DEG;
    cfg.lidar_drop_prob = 0;
    DK_CHECK_OK(dk_world_renderer_create(s, &cfg, &r));
    DK_CHECK_OK(dk_world_render_lidar(r, S_LIDAR, 0, NULL, &a, NULL));
    DK_CHECK(a.shape[0] > 0);
    DK_CHECK(a.shape[0] < (int64_t)m->n_beams * m->n_columns);
    dk_pose ebox = dk__ego_box_pose(s, 0);
    const dk_pose *l2e = &s->rig.sensors[S_LIDAR].sensor_to_ego;
    int inside = 0, steep = 0;
    for (int64_t i = 0; i < a.shape[0]; i++) {
        const float *q = (const float *)a.data + 5 * i;
        double pl[3] = {q[0], q[1], q[2]}, pw[3];
        dk_pose_apply(l2e, pl, pw);
        inside += dk__point_in_box(&ebox, s->ego.size, pw);
        steep += q[DK_LIDAR_RING] == 0;
    }
    DK_CHECK_EQ_INT(inside, 0);
    DK_CHECK_EQ_INT(steep, 0);   /* -80 deg from 0.2 m above the roof: all on the roof */
    dk_tensor_release(&a);
    dk_world_renderer_destroy(r);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_render_pool_invariance(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = make_scene(1.6, 2.0);
    DK_CHECK(s);
    DK_CHECK_OK(set_ego_motion(s, 8, 0.5, 0.1));
    s->rig.sensors[S_CAM].camera.shutter = DK_SHUTTER_TOP_TO_BOTTOM;
    s->rig.sensors[S_CAM].readout_time = 0.03;
    for (int i = 0; i < 12; i++) {
        double c[3] = {6 + 4.0 * i, (i % 2 ? -1 : 1) * (2 + i % 3), 0.8};
        add_box(s, (dk_actor_class)(i % DK_CLASS_COUNT), c, (double[]){3 + (i % 3), 1.8, 1.6},
                0.3 * i, (double[]){(i % 4) - 1.5, 0.5, 0});
    }
    /* a painted map: lane lines, crosswalk, sidewalk, pole, sign */
    double road[4][3] = {{-50, -7, 0}, {150, -7, 0}, {150, 7, 0}, {-50, 7, 0}};
    dk_map_element e;
    memset(&e, 0, sizeof e);
    e.layer = DK_MAP_DRIVABLE_AREA;
    e.n_points = 4;
    e.points = &road[0][0];
    DK_CHECK_OK(dk_scenario_add_map_element(s, &e));
    double line[2][3] = {{-50, 0, 0}, {150, 0, 0}};
    e.layer = DK_MAP_LANELINE;
    e.style = DK_LINE_SOLID_WHITE;
    e.n_points = 2;
    e.points = &line[0][0];
    DK_CHECK_OK(dk_scenario_add_map_element(s, &e));
    double walk[4][3] = {{20, -7, 0}, {23, -7, 0}, {23, 7, 0}, {20, 7, 0}};
    e.layer = DK_MAP_CROSSWALK;
    e.n_points = 4;
    e.points = &walk[0][0];
    DK_CHECK_OK(dk_scenario_add_map_element(s, &e));
    double pole[2][3] = {{18, 8, 0}, {18, 8, 5}};
    e.layer = DK_MAP_POLE;
    e.n_points = 2;
    e.points = &pole[0][0];
    DK_CHECK_OK(dk_scenario_add_map_element(s, &e));
    memset(&e, 0, sizeof e);
    e.layer = DK_MAP_TRAFFIC_SIGN;
    e.center[0] = 18;
    e.center[1] = 8;
    e.center[2] = 4;
    e.size[0] = 0.1;
    e.size[1] = 0.8;
    e.size[2] = 0.8;
    e.yaw = 3.14159;
    DK_CHECK_OK(dk_scenario_add_map_element(s, &e));

    dk_world_renderer *r;
    DK_CHECK_OK(dk_world_renderer_create(s, NULL, &r));
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = 3;
    dk_pool *pool;
    DK_CHECK_OK(dk_pool_create(&pc, &pool));
    dk_tensor rgb1, in1, rgb3, in3, p1, a1, p3, a3;
    DK_CHECK_OK(dk_world_render_camera(r, S_CAM, 1.3, NULL, &rgb1, &in1));
    DK_CHECK_OK(dk_world_render_camera(r, S_CAM, 1.3, pool, &rgb3, &in3));
    DK_CHECK(memcmp(rgb1.data, rgb3.data, dk_tensor_nbytes(&rgb1)) == 0);
    DK_CHECK(memcmp(in1.data, in3.data, dk_tensor_nbytes(&in1)) == 0);
    DK_CHECK_OK(dk_world_render_lidar(r, S_LIDAR, 1.3, NULL, &p1, &a1));
    DK_CHECK_OK(dk_world_render_lidar(r, S_LIDAR, 1.3, pool, &p3, &a3));
    DK_CHECK_EQ_INT(p1.shape[0], p3.shape[0]);
    DK_CHECK(memcmp(p1.data, p3.data, dk_tensor_nbytes(&p1)) == 0);
    DK_CHECK(memcmp(a1.data, a3.data, dk_tensor_nbytes(&a1)) == 0);
    /* lane paint is brighter than asphalt for the lidar */
    double paint = 0, asphalt = 0;
    int n_paint = 0, n_asphalt = 0;
    for (int64_t i = 0; i < p1.shape[0]; i++) {
        const float *q = (const float *)p1.data + 5 * i;
        if (((int32_t *)a1.data)[i] != 0 || fabs(q[2] + 2.0) > 0.2) continue;
        /* the lidar frame at t has moved; the line is the world's y = 0 */
        dk_pose ego = dk_scenario_ego_pose(s, 1.3);
        dk_pose l2w = dk_pose_compose(&ego, &s->rig.sensors[S_LIDAR].sensor_to_ego);
        double pl[3] = {q[0], q[1], q[2]}, pw[3];
        dk_pose_apply(&l2w, pl, pw);
        if (pw[0] > 20 && pw[0] < 23) continue;  /* crosswalk */
        if (fabs(pw[1]) < 0.05) {
            paint += q[DK_LIDAR_INTENSITY];
            n_paint++;
        } else if (fabs(pw[1]) > 0.5 && fabs(pw[1]) < 6) {
            asphalt += q[DK_LIDAR_INTENSITY];
            n_asphalt++;
        }
    }
    DK_CHECK(n_paint >= 2 && n_asphalt > 100);
    DK_CHECK(paint / n_paint > 3 * asphalt / n_asphalt);
    dk_tensor_release(&rgb1);
    dk_tensor_release(&in1);
    dk_tensor_release(&rgb3);
    dk_tensor_release(&in3);
    dk_tensor_release(&p1);
    dk_tensor_release(&a1);
    dk_tensor_release(&p3);
    dk_tensor_release(&a3);
    dk_pool_destroy(pool);
    dk_world_renderer_destroy(r);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_render_errors(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = make_scene(1.6, 3.0);
    DK_CHECK(s);
    dk_world_renderer *r = NULL;
    dk_world_renderer_config cfg;
    dk_world_renderer_config_init(&cfg);
    cfg.ground_texel = 0;
    DK_CHECK_STATUS(dk_world_renderer_create(s, &cfg, &r), DK_EINVAL);
    DK_CHECK(r == NULL);
    cfg.ground_texel = 0.05;
    cfg.lidar_drop_prob = 1.5;
    DK_CHECK_STATUS(dk_world_renderer_create(s, &cfg, &r), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_renderer_create(NULL, NULL, &r), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_renderer_create(s, NULL, NULL), DK_EINVAL);
    /* a broken rig camera is refused at create time */
    s->rig.sensors[S_CAM].camera.fx = 0;
    DK_CHECK_STATUS(dk_world_renderer_create(s, NULL, &r), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "CAM_TEST");
    s->rig.sensors[S_CAM].camera.fx = CAM_F;
    DK_CHECK_OK(dk_world_renderer_create(s, NULL, &r));
    dk_tensor t, u;
    DK_CHECK_STATUS(dk_world_render_camera(r, -1, 0, NULL, &t, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_render_camera(r, 2, 0, NULL, &t, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_render_camera(r, S_LIDAR, 0, NULL, &t, &u), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "not a camera");
    DK_CHECK(t.data == NULL && u.data == NULL);
    DK_CHECK_STATUS(dk_world_render_camera(r, S_CAM, NAN, NULL, &t, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_render_camera(NULL, S_CAM, 0, NULL, &t, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_render_camera(r, S_CAM, 0, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_render_lidar(r, S_CAM, 0, NULL, &t, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "not a lidar");
    DK_CHECK_STATUS(dk_world_render_lidar(r, 7, 0, NULL, &t, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_render_lidar(r, S_LIDAR, INFINITY, NULL, &t, NULL), DK_EINVAL);
    /* instance is optional */
    DK_CHECK_OK(dk_world_render_camera(r, S_CAM, 0, NULL, &t, NULL));
    dk_tensor_release(&t);
    dk_world_renderer_destroy(r);
    dk_world_renderer_destroy(NULL);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

const dk_test_case dk_tests_render[] = {
    DK_TEST(test_render_horizon),
    DK_TEST(test_render_box_rect),
    DK_TEST(test_render_occlusion),
    DK_TEST(test_render_rolling_shutter),
    DK_TEST(test_render_camera_models),
    DK_TEST(test_render_lidar_ground),
    DK_TEST(test_render_lidar_wall),
    DK_TEST(test_render_lidar_points_in_box),
    DK_TEST(test_render_lidar_drop_and_self),
    DK_TEST(test_render_pool_invariance),
    DK_TEST(test_render_errors),
};
const size_t dk_tests_render_count = sizeof dk_tests_render / sizeof dk_tests_render[0];
