/* Tests of src/sim: Gaussian scenes from scenarios and tracks JSON files. */
#include <unistd.h>

#include "dk_test.h"

#include "drivekit/sim.h"
#include "drivekit/world.h"

#define SH_C0 0.28209479177387814

/* The default generated scenario, made once (the generator is deterministic). */
static dk_scenario *default_sc;

static void free_default_scenario(void)
{
    dk_scenario_destroy(default_sc);
    default_sc = NULL;
}

static const dk_scenario *default_scenario(void)
{
    if (!default_sc) {
        dk_world_gen_config g;
        dk_world_gen_config_init(&g);
        if (dk_world_generate(&g, &default_sc)) {
            fprintf(stderr, "  dk_world_generate: %s\n", dk_errmsg());
            return NULL;
        }
        atexit(free_default_scenario);
    }
    return default_sc;
}

/* Small densities keep the suite fast, also under sanitizers. */
static void small_config(dk_scene_from_world_config *c)
{
    dk_scene_from_world_config_init(c);
    c->density = 2;
    c->object_density = 9;
    c->margin = 30;
}

static double sh_rgb(const dk_scene *s, int64_t i, int ch)
{
    return s->sh[((size_t)i * 3 + ch) * s->sh_coeffs] * SH_C0 + 0.5;
}

static int is_vehicle(dk_actor_class c)
{
    return c == DK_CLASS_CAR || c == DK_CLASS_TRUCK || c == DK_CLASS_BUS ||
           c == DK_CLASS_TRAILER || c == DK_CLASS_CONSTRUCTION_VEHICLE;
}

static int in_polygon(const double *pts, int n, double x, double y)
{
    int in = 0;
    for (int i = 0, j = n - 1; i < n; j = i++) {
        double yi = pts[3 * i + 1], yj = pts[3 * j + 1];
        if ((yi > y) != (yj > y)) {
            double xc = pts[3 * j] + (y - yj) / (yi - yj) * (pts[3 * i] - pts[3 * j]);
            if (x < xc) in = !in;
        }
    }
    return in;
}

static double dist_polyline(const double *pts, int n, double x, double y)
{
    double best = INFINITY;
    for (int i = 0; i + 1 < n; i++) {
        const double *a = &pts[3 * i], *b = &pts[3 * i + 3];
        double dx = b[0] - a[0], dy = b[1] - a[1], l2 = dx * dx + dy * dy;
        double u = l2 > 0 ? ((x - a[0]) * dx + (y - a[1]) * dy) / l2 : 0;
        u = u < 0 ? 0 : u > 1 ? 1 : u;
        double d = hypot(a[0] + u * dx - x, a[1] + u * dy - y);
        if (d < best) best = d;
    }
    return best;
}

/* ------------------------------------------------------------------------ */

static void test_from_world_contents(void)
{
    const dk_scenario *sc = default_scenario();
    DK_CHECK(sc != NULL);
    int64_t live = dk_alloc_live();
    dk_scene_from_world_config c;
    small_config(&c);
    dk_scene *s = (dk_scene *)1;
    DK_CHECK_OK(dk_scene_from_scenario(sc, &c, &s));
    DK_CHECK(s->n > 10000);
    DK_CHECK(s->lidar_intensity && s->lidar_raydrop && s->actor_id);
    DK_CHECK_OK(dk_scene_validate(s));
    int64_t n_ground = 0, n_asphalt = 0, n_actor = 0;
    for (int64_t i = 0; i < s->n; i++) {
        int32_t id = s->actor_id[i];
        DK_CHECK(id == -1 || dk_scenario_find_actor(sc, id) >= 0);
        DK_CHECK(s->lidar_intensity[i] >= 0 && s->lidar_intensity[i] <= 1);
        DK_CHECK(s->lidar_raydrop[i] < 0);   /* drop probability below 1/2 */
        if (id >= 0) {
            n_actor++;
            continue;
        }
        if (fabsf(s->means[3 * i + 2]) > 1e-6f) continue;
        n_ground++;
        /* ground inside the drivable area and outside sidewalks: asphalt grey */
        double x = s->means[3 * i], y = s->means[3 * i + 1];
        int road = 0, walk = 0;
        for (int k = 0; k < sc->n_map; k++) {
            const dk_map_element *e = &sc->map[k];
            if (e->layer == DK_MAP_DRIVABLE_AREA) road |= in_polygon(e->points, e->n_points, x, y);
            if (e->layer == DK_MAP_SIDEWALK) walk |= in_polygon(e->points, e->n_points, x, y);
        }
        if (road && !walk) {
            n_asphalt++;
            double r = sh_rgb(s, i, 0) * 255, g = sh_rgb(s, i, 1) * 255, b = sh_rgb(s, i, 2) * 255;
            DK_CHECK(fabs(r - g) < 12 && fabs(b - g) < 12 && g > 55 && g < 95);
            DK_CHECK(s->lidar_intensity[i] < 0.1f);
        }
    }
    DK_CHECK(n_ground > 5000 && n_asphalt > 2000 && n_actor > 1000);
    /* Every actor with Gaussians is tracked, or parked and static in place. */
    int tracked = 0;
    for (int a = 0; a < sc->n_actors; a++) {
        const dk_actor *ac = &sc->actors[a];
        int64_t cnt = 0;
        double m[3] = {0, 0, 0};
        for (int64_t i = 0; i < s->n; i++)
            if (s->actor_id[i] == ac->id) {
                cnt++;
                for (int k = 0; k < 3; k++) m[k] += s->means[3 * i + k];
            }
        dk_pose p;
        int st = dk_scene_actor_pose(s, ac->id, 0, &p);
        if (cnt == 0) {
            DK_CHECK_EQ_INT(st, DK_ENOENT);
            continue;
        }
        if (st == DK_OK) {
            tracked++;
            /* parked actors get a track only when they move or come and go */
            DK_CHECK(!ac->parked || ac->states[0].x != ac->states[ac->n_states - 1].x ||
                     ac->states[0].t > 0 || ac->states[ac->n_states - 1].t < sc->duration);
        } else {
            DK_CHECK(ac->parked);
            DK_CHECK_NEAR(m[0] / cnt, ac->states[0].x, 0.05);
            DK_CHECK_NEAR(m[1] / cnt, ac->states[0].y, 0.05);
            DK_CHECK_NEAR(m[2] / cnt, ac->states[0].z, 0.05);
        }
    }
    DK_CHECK(tracked >= 10);
    /* The ego's track (actor 0): the ego frame. */
    for (double t = 0; t <= sc->duration; t += 2.5) {
        dk_pose p, want = dk_scenario_ego_pose(sc, t);
        DK_CHECK_OK(dk_scene_actor_pose(s, 0, t, &p));
        for (int k = 0; k < 3; k++) DK_CHECK_NEAR(p.t[k], want.t[k], 1e-6);
        DK_CHECK_NEAR(fabs(p.q[0] * want.q[0] + p.q[1] * want.q[1] + p.q[2] * want.q[2] +
                           p.q[3] * want.q[3]), 1.0, 1e-9);
    }
    dk_scene_destroy(s);

    /* Nothing included but the ego track: an empty scene with one track. */
    c.include = DK_FROM_WORLD_EGO_TRACK;
    DK_CHECK_OK(dk_scene_from_scenario(sc, &c, &s));
    DK_CHECK_EQ_INT(s->n, 0);
    DK_CHECK_EQ_INT(dk_scene_actor_track_count(s), 1);
    dk_scene_destroy(s);
    /* SH degree 1 */
    small_config(&c);
    c.sh_degree = 1;
    c.include = DK_FROM_WORLD_OBJECTS;
    DK_CHECK_OK(dk_scene_from_scenario(sc, &c, &s));
    DK_CHECK(s->n > 0);
    DK_CHECK_EQ_INT(s->sh_coeffs, 4);
    DK_CHECK_EQ_INT(dk_scene_actor_track_count(s), 0);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_from_world_config_errors(void)
{
    const dk_scenario *sc = default_scenario();
    DK_CHECK(sc != NULL);
    dk_scene_from_world_config c;
    dk_scene *s = (dk_scene *)1;
    DK_CHECK_STATUS(dk_scene_from_scenario(NULL, NULL, &s), DK_EINVAL);
    DK_CHECK(s == NULL);
    DK_CHECK_STATUS(dk_scene_from_scenario(sc, NULL, NULL), DK_EINVAL);
    small_config(&c);
    c.density = 0;
    DK_CHECK_STATUS(dk_scene_from_scenario(sc, &c, &s), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "density");
    small_config(&c);
    c.object_density = NAN;
    DK_CHECK_STATUS(dk_scene_from_scenario(sc, &c, &s), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "object_density");
    small_config(&c);
    c.margin = 0.5;
    DK_CHECK_STATUS(dk_scene_from_scenario(sc, &c, &s), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "margin");
    small_config(&c);
    c.sh_degree = 2;
    DK_CHECK_STATUS(dk_scene_from_scenario(sc, &c, &s), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "sh_degree");
    small_config(&c);
    c.include = 0x1000;
    DK_CHECK_STATUS(dk_scene_from_scenario(sc, &c, &s), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "include");
    small_config(&c);
    c.max_gaussians = 1000;
    DK_CHECK_STATUS(dk_scene_from_scenario(sc, &c, &s), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "max_gaussians");
    DK_CHECK(s == NULL);

    /* an invalid scenario */
    dk_scenario *bad;
    DK_CHECK_OK(dk_scenario_clone(sc, &bad));
    bad->actors[1].size[0] = -1;
    small_config(&c);
    DK_CHECK_STATUS(dk_scene_from_scenario(bad, &c, &s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "actors[1]");
    dk_scenario_destroy(bad);
}

/* The mean of actor a's Gaussians placed at time t follows the scenario. */
static void test_from_world_actors_follow_tracks(void)
{
    const dk_scenario *sc = default_scenario();
    DK_CHECK(sc != NULL);
    dk_scene_from_world_config c;
    small_config(&c);
    dk_scene *s;
    DK_CHECK_OK(dk_scene_from_scenario(sc, &c, &s));
    int checked = 0, hidden = 0;
    for (int a = 0; a < sc->n_actors; a++) {
        const dk_actor *ac = &sc->actors[a];
        dk_pose p;
        if (dk_scene_actor_pose(s, ac->id, 0, &p) != DK_OK) continue;
        double lm[3] = {0, 0, 0};
        int64_t cnt = 0;
        for (int64_t i = 0; i < s->n; i++)
            if (s->actor_id[i] == ac->id) {
                cnt++;
                for (int k = 0; k < 3; k++) lm[k] += s->means[3 * i + k];
            }
        DK_CHECK(cnt > 0);
        for (int k = 0; k < 3; k++) lm[k] /= (double)cnt;
        for (int step = 0; step <= 8; step++) {
            double t = (sc->duration - 0.1) * step / 8.0 + 0.0371;   /* inside [0, duration] */
            dk_actor_state st;
            int exists = dk_actor_state_at(ac, t, &st, NULL);
            DK_CHECK_OK(dk_scene_actor_pose(s, ac->id, t, &p));
            double w[3];
            dk_pose_apply(&p, lm, w);
            if (exists) {
                DK_CHECK_NEAR(w[0], st.x, 0.05);
                DK_CHECK_NEAR(w[1], st.y, 0.05);
                DK_CHECK_NEAR(w[2], st.z, 0.05);
                DK_CHECK_NEAR(fabs(cos(0.5 * (dk_pose_yaw(&p) - st.yaw))), 1.0, 1e-6);
                checked++;
            } else if (t < ac->states[0].t - 0.01 || t > ac->states[ac->n_states - 1].t + 0.01) {
                DK_CHECK(w[2] < -1000);   /* out of sight while it does not exist */
                hidden++;
            }
        }
    }
    DK_CHECK(checked > 50);
    DK_CHECK(hidden > 0);   /* the default drive has actors that come and go */
    dk_scene_destroy(s);
}

static void test_from_world_deterministic(void)
{
    const dk_scenario *sc = default_scenario();
    DK_CHECK(sc != NULL);
    dk_scene_from_world_config c;
    small_config(&c);
    c.seed = 11;
    dk_scene *a, *b, *d;
    DK_CHECK_OK(dk_scene_from_scenario(sc, &c, &a));
    DK_CHECK_OK(dk_scene_from_scenario(sc, &c, &b));
    c.seed = 12;
    DK_CHECK_OK(dk_scene_from_scenario(sc, &c, &d));
    DK_CHECK_EQ_INT(a->n, b->n);
    size_t n = (size_t)a->n;
    DK_CHECK(memcmp(a->means, b->means, n * 12) == 0);
    DK_CHECK(memcmp(a->scales, b->scales, n * 12) == 0);
    DK_CHECK(memcmp(a->rotations, b->rotations, n * 16) == 0);
    DK_CHECK(memcmp(a->opacities, b->opacities, n * 4) == 0);
    DK_CHECK(memcmp(a->sh, b->sh, n * 12) == 0);
    DK_CHECK(memcmp(a->lidar_intensity, b->lidar_intensity, n * 4) == 0);
    DK_CHECK(memcmp(a->lidar_raydrop, b->lidar_raydrop, n * 4) == 0);
    DK_CHECK(memcmp(a->actor_id, b->actor_id, n * 4) == 0);
    char *ja, *jb;
    size_t la, lb;
    DK_CHECK_OK(dk_scene_save_tracks_json_memory(a, &ja, &la));
    DK_CHECK_OK(dk_scene_save_tracks_json_memory(b, &jb, &lb));
    DK_CHECK(la == lb && memcmp(ja, jb, la) == 0);
    dk_free(ja);
    dk_free(jb);
    /* another seed moves the Gaussians */
    DK_CHECK(d->n != a->n || memcmp(a->means, d->means, n * 12) != 0);
    dk_scene_destroy(a);
    dk_scene_destroy(b);
    dk_scene_destroy(d);
}

/* Renders of the Gaussian scene agree with the world renderer: road colours
 * where it sees road, vehicle Gaussians where its instance mask has vehicles. */
static void test_from_world_render_matches_world(void)
{
    const dk_scenario *sc0 = default_scenario();
    DK_CHECK(sc0 != NULL);
    enum { W = 320, H = 180 };
    dk_scenario *sc;
    DK_CHECK_OK(dk_scenario_clone(sc0, &sc));
    dk_rig_nuscenes(&sc->rig, W, H);
    int cam = dk_rig_find(&sc->rig, "CAM_FRONT");
    DK_CHECK(cam >= 0);
    const dk_rig_sensor *sen = &sc->rig.sensors[cam];
    sc->rig.sensors[cam].readout_time = 0;   /* global shutter on both sides */
    const double t = 5.0;

    dk_world_renderer *wr;
    DK_CHECK_OK(dk_world_renderer_create(sc, NULL, &wr));
    dk_tensor wrgb, winst;
    DK_CHECK_OK(dk_world_render_camera(wr, cam, t, NULL, &wrgb, &winst));
    const uint8_t *wpx = (const uint8_t *)wrgb.data;
    const int32_t *inst = (const int32_t *)winst.data;

    dk_scene_from_world_config c;
    dk_scene_from_world_config_init(&c);
    c.density = 9;
    c.margin = 60;
    dk_scene *s;
    DK_CHECK_OK(dk_scene_from_scenario(sc, &c, &s));
    dk_pose ego = dk_scenario_ego_pose(sc, t);
    dk_pose c2w = dk_pose_compose(&ego, &sen->sensor_to_ego);
    dk_render_config rc;
    dk_render_config_init(&rc);
    rc.time = t;
    float *rgb = malloc(sizeof(float) * W * H * 3);
    DK_CHECK(rgb != NULL);
    DK_CHECK_OK(dk_render_camera(s, &sen->camera, &c2w, &rc, NULL, rgb, NULL, NULL));

    /* Road pixels: the ray meets the ground within 30 m, inside the drivable
       area, off sidewalks and at least 0.6 m from paint, with no actor in front. */
    int n_road = 0, road_ok = 0;
    double R[9];
    dk_quat_to_rotation(c2w.q, R);
    for (int j = 0; j < H; j++)
        for (int i = 0; i < W; i++) {
            int p = j * W + i;
            if (inst[p] != 0) continue;
            double uv[2] = {i + 0.5, j + 0.5}, ray[3];
            if (!dk_camera_unproject(&sen->camera, uv, ray)) continue;
            double d[3] = {R[0] * ray[0] + R[1] * ray[1] + R[2] * ray[2],
                           R[3] * ray[0] + R[4] * ray[1] + R[5] * ray[2],
                           R[6] * ray[0] + R[7] * ray[1] + R[8] * ray[2]};
            if (d[2] >= -1e-6) continue;
            double g = -c2w.t[2] / d[2];
            if (g > 30) continue;
            double x = c2w.t[0] + g * d[0], y = c2w.t[1] + g * d[1];
            int road = 0, off = 0;
            for (int k = 0; k < sc->n_map && !off; k++) {
                const dk_map_element *e = &sc->map[k];
                switch (e->layer) {
                case DK_MAP_DRIVABLE_AREA: road |= in_polygon(e->points, e->n_points, x, y); break;
                case DK_MAP_SIDEWALK:
                case DK_MAP_CROSSWALK:
                case DK_MAP_ROAD_MARKING:
                    off = in_polygon(e->points, e->n_points, x, y) ||
                          dist_polyline(e->points, e->n_points, x, y) < 0.6;
                    break;
                case DK_MAP_LANELINE:
                case DK_MAP_WAIT_LINE:
                case DK_MAP_ROAD_BOUNDARY:
                    off = dist_polyline(e->points, e->n_points, x, y) < 0.6;
                    break;
                default: break;
                }
            }
            if (!road || off) continue;
            n_road++;
            int ok = 1;
            for (int ch = 0; ch < 3; ch++)
                ok &= fabs(rgb[3 * p + ch] * 255.0 - wpx[3 * p + ch]) < 28;
            road_ok += ok;
        }
    DK_CHECK(n_road > W * H / 10);
    DK_CHECK(road_ok > 0.85 * n_road);

    /* Vehicles: paint every vehicle Gaussian magenta and compare masks. */
    for (int64_t i = 0; i < s->n; i++) {
        int32_t id = s->actor_id[i];
        int a = id > 0 ? dk_scenario_find_actor(sc, id) : -1;
        int veh = a >= 0 && is_vehicle(sc->actors[a].cls);
        const float col[3] = {1, 0, 1};
        for (int ch = 0; ch < 3; ch++)
            s->sh[((size_t)i * 3 + ch) * s->sh_coeffs] =
                veh ? (float)((col[ch] - 0.5) / SH_C0) : (float)(-0.5 / SH_C0);
    }
    DK_CHECK_OK(dk_render_camera(s, &sen->camera, &c2w, &rc, NULL, rgb, NULL, NULL));
    int n_w = 0, n_g = 0, n_both = 0;
    for (int p = 0; p < W * H; p++) {
        int a = inst[p] > 0 ? dk_scenario_find_actor(sc, inst[p]) : -1;
        int wv = a >= 0 && is_vehicle(sc->actors[a].cls);
        int gv = rgb[3 * p] > 0.5f && rgb[3 * p + 1] < 0.2f && rgb[3 * p + 2] > 0.5f;
        n_w += wv;
        n_g += gv;
        n_both += wv && gv;
    }
    DK_CHECK(n_w > 100);
    DK_CHECK(n_both > 0.8 * n_w);
    DK_CHECK(n_both > 0.7 * n_g);

    free(rgb);
    dk_scene_destroy(s);
    dk_tensor_release(&wrgb);
    dk_tensor_release(&winst);
    dk_world_renderer_destroy(wr);
    dk_scenario_destroy(sc);
}

/* ------------------------------------------------------------------------ */
/* Tracks JSON                                                               */

static void make_tracks(dk_scene *s)
{
    for (int a = 0; a < 3; a++) {
        double times[5];
        dk_pose poses[5];
        for (int k = 0; k < 5; k++) {
            times[k] = 0.1 * k + a / 3.0;
            poses[k] = dk_pose_from_yaw(1.0 / 3 + k, -2.5 * a, 0.7, 0.3 * k - a);
        }
        dk_scene_set_actor_track(s, 7 * a + 1, 5 - a, times, poses);
    }
}

static void test_tracks_json_round_trip(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s, *l;
    DK_CHECK_OK(dk_scene_create(0, 0, 0, &s));
    DK_CHECK_OK(dk_scene_create(0, 0, 0, &l));
    make_tracks(s);
    DK_CHECK_EQ_INT(dk_scene_actor_track_count(s), 3);
    char *text;
    size_t len;
    DK_CHECK_OK(dk_scene_save_tracks_json_memory(s, &text, &len));
    DK_CHECK_EQ_INT(strlen(text), len);
    DK_CHECK_CONTAINS(text, "\"drivekit.tracks\"");
    /* a track the file does not name goes away */
    double t0 = 0;
    dk_pose p0 = dk_pose_identity();
    DK_CHECK_OK(dk_scene_set_actor_track(l, 99, 1, &t0, &p0));
    DK_CHECK_OK(dk_scene_parse_tracks_json(l, text, len, "mem.json"));
    DK_CHECK_EQ_INT(dk_scene_actor_track_count(l), 3);
    int32_t ids[3];
    DK_CHECK_EQ_INT(dk_scene_actor_track_ids(l, ids, 3), 3);
    for (int a = 0; a < 3; a++) {
        int na, nb;
        const double *ta, *tb;
        const dk_pose *pa, *pb;
        DK_CHECK_OK(dk_scene_actor_track(s, ids[a], &na, &ta, &pa));
        DK_CHECK_OK(dk_scene_actor_track(l, ids[a], &nb, &tb, &pb));
        DK_CHECK_EQ_INT(na, nb);
        DK_CHECK(memcmp(ta, tb, (size_t)na * sizeof *ta) == 0);
        for (int k = 0; k < na; k++) {
            for (int j = 0; j < 3; j++) DK_CHECK(pa[k].t[j] == pb[k].t[j]);
            for (int j = 0; j < 4; j++) DK_CHECK_NEAR(pa[k].q[j], pb[k].q[j], 1e-15);
        }
    }
    dk_free(text);

    /* files; an empty set of tracks */
    char path[512];
    snprintf(path, sizeof path, "%s/dk_tracks_%d.json", dk_test_tmpdir(), (int)getpid());
    DK_CHECK_OK(dk_scene_save_tracks_json(s, path));
    dk_scene *f;
    DK_CHECK_OK(dk_scene_create(0, 0, 0, &f));
    DK_CHECK_OK(dk_scene_load_tracks_json(f, path));
    DK_CHECK_EQ_INT(dk_scene_actor_track_count(f), 3);
    dk_scene *e;
    DK_CHECK_OK(dk_scene_create(0, 0, 0, &e));
    DK_CHECK_OK(dk_scene_save_tracks_json(e, path));
    DK_CHECK_OK(dk_scene_load_tracks_json(f, path));
    DK_CHECK_EQ_INT(dk_scene_actor_track_count(f), 0);
    unlink(path);
    DK_CHECK_STATUS(dk_scene_load_tracks_json(f, path), DK_ENOENT);
    DK_CHECK_STATUS(dk_scene_load_tracks_json(NULL, path), DK_EINVAL);
    DK_CHECK_STATUS(dk_scene_save_tracks_json(NULL, path), DK_EINVAL);
    dk_scene_destroy(e);
    dk_scene_destroy(f);
    dk_scene_destroy(s);
    dk_scene_destroy(l);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

typedef struct bad_doc {
    const char *text;
    const char *want;   /* substring of the message */
} bad_doc;

static void test_tracks_json_errors(void)
{
    int64_t live = dk_alloc_live();
    static const char ok_actor[] = "{\"id\": 1, \"times\": [0, 1], \"poses\": "
                                   "[[1,0,0,0, 0,0,0], [1,0,0,0, 1,0,0]]}";
    static char buf[8][512];
    snprintf(buf[0], sizeof buf[0], "{\"version\": 1, \"actors\": [%s, %s, {\"id\": 3, "
             "\"times\": [0,1,2,3,4,5], \"poses\": [[1,0,0,0,0,0,0],[1,0,0,0,0,0,0],"
             "[1,0,0,0,0,0,0],[1,0,0,0,0,0,0],[1,0,0,0,0,0,0],[1,0,0,0,0,0]]}]}",
             ok_actor, "{\"id\": 2, \"times\": [0], \"poses\": [[1,0,0,0,0,0,0]]}");
    const bad_doc docs[] = {
        {"{\"actors\": []}", "tracks.json: version"},
        {"{\"version\": 2, \"actors\": []}", "tracks.json: version: 2 is not supported"},
        {"{\"format\": \"drivekit.scenario\", \"version\": 1, \"actors\": []}",
         "tracks.json: format"},
        {"{\"version\": 1}", "tracks.json: actors"},
        {"{\"version\": 1, \"actors\": {}}", "tracks.json: actors: expected an array"},
        {"[1, 2]", "tracks.json: (root): expected an object"},
        {"{\"version\": 1, \"actors\": [{\"id\": 1, \"times\": [0]}]}",
         "tracks.json: actors[0].poses"},
        {"{\"version\": 1, \"actors\": [{\"times\": [0], \"poses\": [[1,0,0,0,0,0,0]]}]}",
         "tracks.json: actors[0].id"},
        {"{\"version\": 1, \"actors\": [{\"id\": -4, \"times\": [0], \"poses\": [[1,0,0,0,0,0,0]]}]}",
         "tracks.json: actors[0].id"},
        {"{\"version\": 1, \"actors\": [{\"id\": 1, \"times\": [], \"poses\": []}]}",
         "tracks.json: actors[0].times: needs at least one keyframe"},
        {"{\"version\": 1, \"actors\": [{\"id\": 1, \"times\": [0, 1, 1], \"poses\": "
         "[[1,0,0,0,0,0,0],[1,0,0,0,0,0,0],[1,0,0,0,0,0,0]]}]}",
         "tracks.json: actors[0].times[2]: 1 is not after 1"},
        {"{\"version\": 1, \"actors\": [{\"id\": 1, \"times\": [0, 1], \"poses\": "
         "[[1,0,0,0,0,0,0]]}]}",
         "tracks.json: actors[0].poses: 1 poses for 2 times"},
        {buf[0], "tracks.json: actors[2].poses[5]: expected array of 7 numbers"},
        {"{\"version\": 1, \"actors\": [{\"id\": 1, \"times\": [0], \"poses\": "
         "[[0.5,0,0,0,0,0,0]]}]}",
         "tracks.json: actors[0].poses[0]: quaternion norm 0.5 is not 1"},
        {"{\"version\": 1, \"actors\": [{\"id\": 1, \"times\": [0], \"poses\": "
         "[[1,0,0,0,0,\"x\",0]]}]}",
         "tracks.json: actors[0].poses[0][5]"},
        {"{\"version\": 1, \"actors\": [{\"id\": 5, \"times\": [0], \"poses\": [[1,0,0,0,0,0,0]]},"
         "{\"id\": 5, \"times\": [1], \"poses\": [[1,0,0,0,0,0,0]]}]}",
         "tracks.json: actors[1].id: actor 5 appears twice"},
        {"{\"version\": 1, \"actors\": [{\"id\": 1, \"times\": [0, 1e999], \"poses\": "
         "[[1,0,0,0,0,0,0],[1,0,0,0,0,0,0]]}]}",
         "tracks.json: actors[0].times[1]"},
        {"{\"version\": 1, \"actors\": [7]}", "tracks.json: actors[0]: expected an object"},
    };
    dk_scene *s;
    DK_CHECK_OK(dk_scene_create(0, 0, 0, &s));
    double t0 = 0;
    dk_pose p0 = dk_pose_identity();
    DK_CHECK_OK(dk_scene_set_actor_track(s, 42, 1, &t0, &p0));
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        int st = dk_scene_parse_tracks_json(s, docs[i].text, strlen(docs[i].text), "tracks.json");
        if (st != DK_EINVALIDDATA) DK_FAIL_("doc %zu: status %d (%s)", i, st, dk_errmsg());
        if (!strstr(dk_errmsg(), docs[i].want))
            DK_FAIL_("doc %zu: \"%s\" does not contain \"%s\"", i, dk_errmsg(), docs[i].want);
        /* the scene is unchanged */
        int32_t id = -1;
        DK_CHECK_EQ_INT(dk_scene_actor_track_ids(s, &id, 1), 1);
        DK_CHECK_EQ_INT(id, 42);
    }
    /* Truncations of a valid file never crash and never succeed halfway. */
    char *text;
    size_t len;
    dk_scene *src;
    DK_CHECK_OK(dk_scene_create(0, 0, 0, &src));
    make_tracks(src);
    DK_CHECK_OK(dk_scene_save_tracks_json_memory(src, &text, &len));
    char path[512];
    snprintf(path, sizeof path, "%s/dk_tracks_trunc_%d.json", dk_test_tmpdir(), (int)getpid());
    for (size_t cut = 0; cut < len - 2; cut += 7) {
        int st = dk_scene_parse_tracks_json(s, text, cut, "cut.json");
        DK_CHECK_EQ_INT(st, DK_EINVALIDDATA);
        DK_CHECK_CONTAINS(dk_errmsg(), "cut.json");
        DK_CHECK_EQ_INT(dk_scene_actor_track_count(s), 1);
    }
    DK_CHECK_OK(dk_file_write(path, text, len / 2));
    DK_CHECK_STATUS(dk_scene_load_tracks_json(s, path), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), path);
    unlink(path);
    dk_free(text);
    dk_scene_destroy(src);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* The unscented projection (forced, and through a rolling shutter of a
 * camera at rest) renders the street like EWA: ground Gaussians next to the
 * camera must not turn into screen-sized haze. */
static void test_from_world_ut_matches_ewa(void)
{
    const dk_scenario *sc = default_scenario();
    DK_CHECK(sc != NULL);
    dk_scene_from_world_config c;
    small_config(&c);
    dk_scene *s;
    DK_CHECK_OK(dk_scene_from_scenario(sc, &c, &s));
    dk_pose ego;
    DK_CHECK_OK(dk_scene_actor_pose(s, 0, 1.0, &ego));
    dk_rig rig;
    dk_rig_nuscenes(&rig, 240, 135);
    dk_pose c2w = dk_pose_compose(&ego, &rig.sensors[0].sensor_to_ego);
    size_t n = 240 * 135 * 3;
    float *img[3];
    for (int mode = 0; mode < 3; mode++) {
        img[mode] = malloc(n * sizeof(float));
        dk_render_config rc;
        dk_render_config_init(&rc);
        rc.time = 1.0;
        if (mode == 1) rc.projection = DK_PROJ_UT;
        if (mode == 2) {
            rc.rolling_shutter = 1;
            rc.cam_to_world_end = c2w;
        }
        DK_CHECK_OK(dk_render_camera(s, &rig.sensors[0].camera, &c2w, &rc, NULL, img[mode],
                                     NULL, NULL));
    }
    for (int mode = 1; mode < 3; mode++) {
        double sum = 0;
        for (size_t i = 0; i < n; i++) sum += fabs((double)img[mode][i] - img[0][i]);
        DK_CHECK(sum / (double)n < 0.01);
    }
    for (int mode = 0; mode < 3; mode++) free(img[mode]);
    dk_scene_destroy(s);
}

const dk_test_case dk_tests_sim_world[] = {
    DK_TEST(test_from_world_contents),
    DK_TEST(test_from_world_config_errors),
    DK_TEST(test_from_world_actors_follow_tracks),
    DK_TEST(test_from_world_deterministic),
    DK_TEST(test_from_world_render_matches_world),
    DK_TEST(test_from_world_ut_matches_ewa),
    DK_TEST(test_tracks_json_round_trip),
    DK_TEST(test_tracks_json_errors),
    {NULL, NULL},
};
const size_t dk_tests_sim_world_count = sizeof dk_tests_sim_world / sizeof dk_tests_sim_world[0] - 1;
