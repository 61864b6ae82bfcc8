/* Tests of src/sim/loop.c (dk_sim) and of the render server's request
 * parsing (tools/http.c). */
#include "dk_test.h"

#include "drivekit/sim.h"
#include "../tools/http.h"
#include "sim/sim_impl.h"

static uint32_t loop_rng = 987654321u;
static float urand(float lo, float hi)
{
    loop_rng = loop_rng * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(loop_rng >> 8) / 16777216.0f;
}

/* n Gaussians on a ring of radius 4..15 m around the world origin, 0..3 m up:
 * every camera of the rig sees some. The last n_actor ones belong to actor 1
 * and sit within 1 m of its local origin. */
static dk_scene *ring_scene(int n, int n_actor)
{
    dk_scene *s = NULL;
    if (dk_scene_create(n, 1, DK_SCENE_ACTOR_ID, &s)) return NULL;
    for (int i = 0; i < n; i++) {
        float a = urand(0, 6.2831853f), r = urand(4, 15);
        s->means[3 * i + 0] = r * cosf(a);
        s->means[3 * i + 1] = r * sinf(a);
        s->means[3 * i + 2] = urand(0, 3);
        for (int j = 0; j < 3; j++) s->scales[3 * i + j] = urand(-2.5f, -0.8f);
        s->rotations[4 * i + 0] = 1 + urand(0, 1);
        for (int j = 1; j < 4; j++) s->rotations[4 * i + j] = urand(-0.5f, 0.5f);
        s->opacities[i] = urand(-1, 4);
        for (int k = 0; k < 3 * s->sh_coeffs; k++)
            s->sh[i * 3 * s->sh_coeffs + k] = urand(-1, 1) * (k % s->sh_coeffs ? 0.2f : 1.2f);
        if (i >= n - n_actor) {
            s->actor_id[i] = 1;
            for (int j = 0; j < 3; j++) s->means[3 * i + j] = urand(-1, 1);
            s->scales[3 * i + 0] = s->scales[3 * i + 1] = s->scales[3 * i + 2] = -1.2f;
            s->opacities[i] = 5;
        }
    }
    return s;
}

static int make_sim(const dk_scene *s, int threads, int rolling, dk_rig *rig, dk_sim **sim)
{
    dk_rig_nuscenes(rig, 64, 36);
    dk_sim_config sc;
    dk_sim_config_init(&sc);
    sc.n_threads = threads;
    sc.rolling_shutter = rolling;
    sc.render.background[2] = 0.25f;
    return dk_sim_create(s, rig, &sc, sim);
}

static int same_floats(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof *a) == 0;
}

/* dk_sim renders = dk_render_camera of ego_to_world * sensor_to_ego, bit for bit. */
static void test_sim_camera_matches_render_camera(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = ring_scene(600, 0);
    DK_CHECK(s != NULL);
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = 3;
    dk_pool *pool = NULL;
    DK_CHECK_OK(dk_pool_create(&pc, &pool));
    const size_t npx = 64 * 36;
    float *a = malloc(npx * 5 * sizeof *a), *b = malloc(npx * 5 * sizeof *b);
    DK_CHECK(a && b);
    dk_pose ego = dk_pose_from_yaw(1.5, -0.7, 0.0, 0.4);
    dk_pose ego_end = dk_pose_from_yaw(2.1, -0.5, 0.0, 0.47);
    int checked = 0;
    for (int rolling = 0; rolling <= 1; rolling++) {
        dk_rig rig;
        dk_sim *sim = NULL;
        DK_CHECK_OK(make_sim(s, 2, rolling, &rig, &sim));
        for (int k = 0; k < rig.n_sensors; k++) {
            const dk_rig_sensor *rs = &dk_sim_rig(sim)->sensors[k];
            if (rs->kind != DK_SENSOR_CAMERA) continue;
            for (int with_end = 0; with_end <= 1; with_end++) {
                memset(a, 0xff, npx * 5 * sizeof *a);
                memset(b, 0, npx * 5 * sizeof *b);
                DK_CHECK_OK(dk_sim_render_camera(sim, k, &ego, 0.25, with_end ? &ego_end : NULL, a,
                                                 a + 3 * npx, a + 4 * npx));
                dk_render_config rc;
                dk_render_config_init(&rc);
                rc.background[2] = 0.25f;
                rc.time = 0.25;
                dk_pose cam = dk_pose_compose(&ego, &rs->sensor_to_ego);
                if (rolling) {
                    rc.rolling_shutter = 1;
                    rc.readout_duration = rs->readout_time;
                    rc.cam_to_world_end =
                        with_end ? dk_pose_compose(&ego_end, &rs->sensor_to_ego) : cam;
                }
                DK_CHECK_OK(dk_render_camera(s, &rs->camera, &cam, &rc, pool, b, b + 3 * npx,
                                             b + 4 * npx));
                DK_CHECK(same_floats(a, b, npx * 5));
                checked++;
            }
            /* Something is visible, so the comparison means something. */
            double sum = 0;
            for (size_t i = 0; i < npx; i++) sum += a[3 * npx + i];
            DK_CHECK(sum > 1.0);
        }
        dk_sim_destroy(sim);
    }
    DK_CHECK_EQ_INT(checked, 2 * 6 * 2);
    free(a);
    free(b);
    dk_pool_destroy(pool);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* Lidar sweeps through dk_sim = dk_render_lidar / dk_lidar_points of the
 * composed pose(s), bit for bit, with and without motion. */
static void test_sim_lidar_matches_render_lidar(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = ring_scene(400, 0);
    DK_CHECK(s != NULL);
    dk_rig rig;
    dk_sim *sim = NULL;
    DK_CHECK_OK(make_sim(s, 2, 1, &rig, &sim));
    int li = dk_sim_find_sensor(sim, "LIDAR_TOP");
    DK_CHECK(li >= 0);
    const dk_rig_sensor *rs = &dk_sim_rig(sim)->sensors[li];
    const size_t nr = (size_t)rs->lidar.n_beams * (size_t)rs->lidar.n_columns;
    float *a = malloc(nr * 4 * sizeof *a), *b = malloc(nr * 4 * sizeof *b);
    float *pa = malloc(nr * 6 * sizeof *pa), *pb = malloc(nr * 6 * sizeof *pb);
    DK_CHECK(a && b && pa && pb);
    int64_t nb = 0;
    dk_pose ego = dk_pose_from_yaw(0.5, 0.2, 0, -0.3), ego_end = dk_pose_from_yaw(1.0, 0.3, 0, -0.2);
    for (int moving = 0; moving <= 1; moving++) {
        const dk_pose *end = moving ? &ego_end : NULL;
        DK_CHECK_OK(dk_sim_render_lidar(sim, li, &ego, 0.75, end, a, a + nr, a + 2 * nr, a + 3 * nr));
        dk_lidar_render_config lc;
        dk_lidar_render_config_init(&lc);
        lc.time = 0.75;
        dk_pose l2w = dk_pose_compose(&ego, &rs->sensor_to_ego);
        if (moving) {
            lc.sensor_motion = 1;
            lc.lidar_to_world_end = dk_pose_compose(&ego_end, &rs->sensor_to_ego);
        }
        DK_CHECK_OK(dk_render_lidar(s, &rs->lidar, &l2w, &lc, NULL, b, b + nr, b + 2 * nr, b + 3 * nr));
        DK_CHECK(same_floats(a, b, nr * 4));
        size_t hits = 0;
        for (size_t i = 0; i < nr; i++) hits += a[i] > 0;
        DK_CHECK(hits > nr / 20);
        int64_t na = 0;
        DK_CHECK_OK(dk_sim_lidar_points(sim, li, &ego, 0.75, end, a, a + nr, a + 2 * nr, pa,
                                        (int64_t)nr, &na));
        DK_CHECK_OK(dk_lidar_points(&rs->lidar, &l2w, &lc, b, b + nr, b + 2 * nr, pb, (int64_t)nr, &nb));
        DK_CHECK_EQ_INT(na, nb);
        DK_CHECK(na > 0 && same_floats(pa, pb, (size_t)na * 6));
    }
    DK_CHECK_STATUS(dk_sim_render_lidar(sim, 0, &ego, 0, NULL, a, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_sim_errmsg(sim), "is a camera, not a lidar");
    DK_CHECK_STATUS(dk_sim_render_lidar(sim, li, &ego, NAN, NULL, a, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_sim_lidar_points(sim, li, &ego, 0, NULL, a, NULL, NULL, pa, 1, &nb),
                    DK_EINVAL);
    free(a);
    free(b);
    free(pa);
    free(pb);
    dk_sim_destroy(sim);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static int poses_equal(const dk_pose *a, const dk_pose *b, double tol)
{
    for (int j = 0; j < 4; j++)
        if (!(fabs(a->q[j] - b->q[j]) <= tol)) return 0;
    for (int j = 0; j < 3; j++)
        if (!(fabs(a->t[j] - b->t[j]) <= tol)) return 0;
    return 1;
}

/* An override moves the actor from its time on; earlier times keep the
 * recorded track; clearing restores it; the caller's scene is never written. */
static void test_sim_actor_override(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = ring_scene(300, 60);
    DK_CHECK(s != NULL);
    /* Actor 1 drives along +y, 40 m to the side: out of CAM_FRONT's view. */
    const double times[3] = {0.0, 1.0, 2.0};
    const dk_pose track[3] = {dk_pose_from_yaw(8, 40, 1, 0), dk_pose_from_yaw(8, 45, 1, 0),
                              dk_pose_from_yaw(8, 50, 1, 0)};
    DK_CHECK_OK(dk_scene_set_actor_track(s, 1, 3, times, track));
    dk_rig rig;
    dk_sim *sim = NULL;
    DK_CHECK_OK(make_sim(s, 1, 0, &rig, &sim));
    int cam = dk_sim_find_sensor(sim, "CAM_FRONT");
    DK_CHECK(cam >= 0);
    const size_t npx = 64 * 36;
    float *before = malloc(npx * 4 * sizeof(float)), *after = malloc(npx * 4 * sizeof(float));
    float *ref = malloc(npx * 4 * sizeof(float));
    DK_CHECK(before && after && ref);
    dk_pose ego = dk_pose_identity();
    DK_CHECK_OK(dk_sim_render_camera(sim, cam, &ego, 1.5, NULL, before, before + 3 * npx, NULL));

    /* From t = 1.2 on, the actor stands 8 m ahead of the front camera. */
    dk_pose ahead = dk_pose_from_yaw(10, 0, 1.5, 0.3);
    DK_CHECK_OK(dk_sim_set_actor_pose(sim, 1, 1.2, &ahead));
    DK_CHECK_OK(dk_sim_render_camera(sim, cam, &ego, 1.5, NULL, after, after + 3 * npx, NULL));
    DK_CHECK(!same_floats(before, after, npx * 4));
    /* Centre pixel rows gain coverage where the actor now is. */
    double cov_before = 0, cov_after = 0;
    for (size_t i = 0; i < npx; i++) {
        cov_before += before[3 * npx + i];
        cov_after += after[3 * npx + i];
    }
    DK_CHECK(cov_after > cov_before + 5);

    /* The same as a scene whose track holds the override pose. */
    dk_scene shallow = *s;
    shallow.actors = NULL;
    const double t1[1] = {0.0};
    DK_CHECK_OK(dk_scene_set_actor_track(&shallow, 1, 1, t1, &ahead));
    dk_render_config rc;
    dk_render_config_init(&rc);
    rc.background[2] = 0.25f;
    rc.time = 1.5;
    dk_pose cam_to_world = dk_pose_compose(&ego, &rig.sensors[cam].sensor_to_ego);
    DK_CHECK_OK(dk_render_camera(&shallow, &rig.sensors[cam].camera, &cam_to_world, &rc, NULL,
                                 ref, ref + 3 * npx, NULL));
    DK_CHECK(same_floats(ref, after, npx * 4));
    dk__scene_actors_free(shallow.actors);

    /* Poses: recorded before 1.2 (exactly), the override from 1.2 on. */
    dk_pose p, rec;
    DK_CHECK_OK(dk_sim_actor_pose(sim, 1, 0.7, &p));
    DK_CHECK_OK(dk_scene_actor_pose(s, 1, 0.7, &rec));
    DK_CHECK(poses_equal(&p, &rec, 0));
    DK_CHECK_OK(dk_sim_actor_pose(sim, 1, 1.2, &p));
    DK_CHECK(poses_equal(&p, &ahead, 1e-12));
    DK_CHECK_OK(dk_sim_actor_pose(sim, 1, 5.0, &p));
    DK_CHECK(poses_equal(&p, &ahead, 1e-12));
    DK_CHECK_OK(dk_sim_actor_pose(sim, 1, nextafter(1.2, 0), &p));
    DK_CHECK_OK(dk_scene_actor_pose(s, 1, nextafter(1.2, 0), &rec));
    DK_CHECK(poses_equal(&p, &rec, 1e-9));

    /* A second, later override: the first holds in between. */
    dk_pose later = dk_pose_from_yaw(12, -1, 1.5, 0);
    DK_CHECK_OK(dk_sim_set_actor_pose(sim, 1, 1.4, &later));
    DK_CHECK_OK(dk_sim_actor_pose(sim, 1, 1.3, &p));
    DK_CHECK(poses_equal(&p, &ahead, 1e-12));
    DK_CHECK_OK(dk_sim_actor_pose(sim, 1, 1.4, &p));
    DK_CHECK(poses_equal(&p, &later, 1e-12));
    /* An earlier one drops the later keyframes. */
    DK_CHECK_OK(dk_sim_set_actor_pose(sim, 1, 1.1, &later));
    DK_CHECK_OK(dk_sim_actor_pose(sim, 1, 1.3, &p));
    DK_CHECK(poses_equal(&p, &later, 1e-12));

    /* The caller's scene still has its recorded track. */
    int n = 0;
    const double *kt = NULL;
    const dk_pose *kp = NULL;
    DK_CHECK_OK(dk_scene_actor_track(s, 1, &n, &kt, &kp));
    DK_CHECK_EQ_INT(n, 3);
    DK_CHECK(kt[2] == 2.0 && poses_equal(&kp[2], &track[2], 0));

    /* Clear: back to the recorded image. */
    DK_CHECK_OK(dk_sim_clear_actor_pose(sim, 1));
    DK_CHECK_STATUS(dk_sim_clear_actor_pose(sim, 1), DK_ENOENT);
    DK_CHECK_OK(dk_sim_render_camera(sim, cam, &ego, 1.5, NULL, after, after + 3 * npx, NULL));
    DK_CHECK(same_floats(before, after, npx * 4));
    DK_CHECK_OK(dk_sim_set_actor_pose(sim, 1, 0.0, &ahead));
    DK_CHECK_OK(dk_sim_clear_actor_pose(sim, -1));
    DK_CHECK_OK(dk_sim_actor_pose(sim, 1, 1.5, &p));
    DK_CHECK_OK(dk_scene_actor_pose(s, 1, 1.5, &rec));
    DK_CHECK(poses_equal(&p, &rec, 0));

    free(before);
    free(after);
    free(ref);
    dk_sim_destroy(sim);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_sim_errors(void)
{
    int64_t live = dk_alloc_live();
    dk_scene *s = ring_scene(50, 0);
    DK_CHECK(s != NULL);
    dk_rig rig;
    dk_sim *sim = (dk_sim *)1;
    DK_CHECK_STATUS(dk_sim_create(NULL, &rig, NULL, &sim), DK_EINVAL);
    DK_CHECK(sim == NULL);
    dk_rig_nuscenes(&rig, 64, 36);
    dk_sim_config sc;
    dk_sim_config_init(&sc);
    sc.n_threads = 0;
    DK_CHECK_STATUS(dk_sim_create(s, &rig, &sc, &sim), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "n_threads");
    rig.sensors[2].camera.fx = -1;
    DK_CHECK_STATUS(dk_sim_create(s, &rig, NULL, &sim), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "CAM_BACK_RIGHT");
    dk_rig_nuscenes(&rig, 64, 36);
    rig.sensors[0].readout_time = NAN;
    DK_CHECK_STATUS(dk_sim_create(s, &rig, NULL, &sim), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "readout_time");

    DK_CHECK_OK(make_sim(s, 1, 1, &rig, &sim));
    DK_CHECK_STR(dk_sim_errmsg(sim), "");
    DK_CHECK_STATUS(dk_sim_find_sensor(sim, "CAM_NOPE"), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_sim_errmsg(sim), "no sensor named 'CAM_NOPE'");
    DK_CHECK_CONTAINS(dk_sim_errmsg(sim), "LIDAR_TOP");
    DK_CHECK_STATUS(dk_sim_find_sensor(sim, NULL), DK_EINVAL);
    int lidar = dk_sim_find_sensor(sim, "LIDAR_TOP");
    DK_CHECK_EQ_INT(lidar, 6);
    float *rgb = malloc(64 * 36 * 3 * sizeof *rgb);
    DK_CHECK(rgb != NULL);
    dk_pose ego = dk_pose_identity();
    DK_CHECK_STATUS(dk_sim_render_camera(sim, lidar, &ego, 0, NULL, rgb, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_sim_errmsg(sim), "LIDAR_TOP) is a lidar, not a camera");
    DK_CHECK_STATUS(dk_sim_render_camera(sim, 7, &ego, 0, NULL, rgb, NULL, NULL), DK_ERANGE);
    DK_CHECK_STATUS(dk_sim_render_camera(sim, -1, &ego, 0, NULL, rgb, NULL, NULL), DK_ERANGE);
    DK_CHECK_STATUS(dk_sim_render_camera(sim, 0, NULL, 0, NULL, rgb, NULL, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_sim_render_camera(NULL, 0, &ego, 0, NULL, rgb, NULL, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_sim_render_camera(sim, 0, &ego, NAN, NULL, rgb, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_sim_errmsg(sim), "timestamp");
    DK_CHECK_STATUS(dk_sim_render_camera(sim, 0, &ego, INFINITY, NULL, rgb, NULL, NULL),
                    DK_EINVAL);
    dk_pose bad = ego;
    bad.q[0] = 2;   /* a scaled rotation: not rigid */
    DK_CHECK_STATUS(dk_sim_render_camera(sim, 0, &bad, 0, NULL, rgb, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_sim_errmsg(sim), "ego_to_world: quaternion norm 2 is not 1");
    DK_CHECK_STATUS(dk_sim_render_camera(sim, 0, &ego, 0, &bad, rgb, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_sim_errmsg(sim), "ego_to_world_end");
    bad = ego;
    bad.t[1] = NAN;
    DK_CHECK_STATUS(dk_sim_render_camera(sim, 0, &bad, 0, NULL, rgb, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_sim_errmsg(sim), "non-finite");
    /* Still works after the errors. */
    DK_CHECK_OK(dk_sim_render_camera(sim, 0, &ego, 0, NULL, rgb, NULL, NULL));

    DK_CHECK_STATUS(dk_sim_set_actor_pose(sim, 5, 0, &ego), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_sim_errmsg(sim), "actor 5 has no track");
    DK_CHECK_STATUS(dk_sim_set_actor_pose(sim, -3, 0, &ego), DK_ENOENT);
    DK_CHECK_STATUS(dk_sim_set_actor_pose(sim, 5, NAN, &ego), DK_EINVAL);
    DK_CHECK_STATUS(dk_sim_set_actor_pose(sim, 5, 0, NULL), DK_EINVAL);
    bad = ego;
    bad.q[3] = 0.5;
    DK_CHECK_STATUS(dk_sim_set_actor_pose(sim, 5, 0, &bad), DK_EINVAL);
    DK_CHECK_STATUS(dk_sim_clear_actor_pose(sim, 5), DK_ENOENT);
    DK_CHECK_OK(dk_sim_clear_actor_pose(sim, -1));
    DK_CHECK_STATUS(dk_sim_clear_actor_pose(NULL, 1), DK_EINVAL);
    dk_pose p;
    DK_CHECK_STATUS(dk_sim_actor_pose(sim, 5, 0, &p), DK_ENOENT);
    DK_CHECK_STATUS(dk_sim_actor_pose(sim, 5, 0, NULL), DK_EINVAL);
    DK_CHECK(dk_sim_rig(NULL) == NULL);
    DK_CHECK_STR(dk_sim_errmsg(NULL), "");
    free(rgb);
    dk_sim_destroy(sim);
    dk_sim_destroy(NULL);
    dk_scene_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* ------------------------------------------------------------------------ */
/* HTTP request parser                                                       */

static long parse_str(const char *text, http_request *req, char *err)
{
    return http_parse_request(text, strlen(text), req, err);
}

static void test_http_parse_valid(void)
{
    http_request req;
    char err[HTTP_ERR_MAX];
    const char *get = "GET /health?verbose=1 HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n"
                      "User-Agent: test\r\n\r\n";
    DK_CHECK_EQ_INT(parse_str(get, &req, err), (long)strlen(get));
    DK_CHECK_STR(req.method, "GET");
    DK_CHECK_STR(req.target, "/health?verbose=1");
    DK_CHECK_STR(req.path, "/health");
    DK_CHECK_EQ_INT(req.version_minor, 1);
    DK_CHECK_EQ_INT(req.n_headers, 2);
    DK_CHECK_EQ_INT(req.keep_alive, 1);
    DK_CHECK_EQ_INT(req.content_length, 0);
    DK_CHECK_EQ_INT(req.has_content_length, 0);

    const char *post = "POST /render HTTP/1.0\nContent-Type:  application/json \n"
                       "content-length: 11\nConnection: keep-alive\n\n{\"a\": true}";
    DK_CHECK_EQ_INT(parse_str(post, &req, err), (long)strlen(post));
    DK_CHECK_STR(req.content_type, "application/json");
    DK_CHECK_EQ_INT(req.content_length, 11);
    DK_CHECK_EQ_INT(req.keep_alive, 1);
    DK_CHECK_EQ_INT(req.version_minor, 0);
    DK_CHECK(req.body && memcmp(req.body, "{\"a\": true}", 11) == 0);
    const char *close = "GET / HTTP/1.1\r\nConnection: Upgrade, close\r\n\r\n";
    DK_CHECK(parse_str(close, &req, err) > 0);
    DK_CHECK_EQ_INT(req.keep_alive, 0);
    /* The same Content-Length twice is fine. */
    const char *twice = "POST /x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
    DK_CHECK_EQ_INT(parse_str(twice, &req, err), (long)strlen(twice));
}

/* Every prefix of a request is incomplete; pipelined requests parse in turn. */
static void test_http_parse_partial_pipelined(void)
{
    http_request req;
    char err[HTTP_ERR_MAX];
    const char *body = "{\"id\": 3, \"clear\": true}";
    char buf[512];
    int n1 = snprintf(buf, sizeof buf,
                      "POST /actors HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    int n2 = snprintf(buf + n1, sizeof buf - (size_t)n1, "GET /sensors HTTP/1.1\r\n\r\n");
    for (int k = 0; k < n1; k++) DK_CHECK_EQ_INT(http_parse_request(buf, (size_t)k, &req, err), 0);
    DK_CHECK_EQ_INT(http_parse_request(buf, (size_t)(n1 + n2), &req, err), n1);
    DK_CHECK_STR(req.path, "/actors");
    DK_CHECK_EQ_INT(req.content_length, strlen(body));
    sim_actor_request ar;
    DK_CHECK_OK(sim_parse_actor_request(req.body, req.content_length, &ar, err));
    DK_CHECK(ar.clear == 1 && ar.id == 3);
    DK_CHECK_EQ_INT(http_parse_request(buf + n1, (size_t)n2, &req, err), n2);
    DK_CHECK_STR(req.path, "/sensors");
    /* A garbage line fails as soon as it is complete, not at the end of the head. */
    DK_CHECK_EQ_INT(parse_str("\x16\x03\x01\x02\x05\x01\n", &req, err), -400);
    DK_CHECK_EQ_INT(parse_str("GET /x HTTP/1.1\r\nbad header\r\n", &req, err), -400);
    DK_CHECK_CONTAINS(err, "header line 2");
}

static void expect_status(const char *text, size_t len, long status, const char *needle)
{
    http_request req;
    char err[HTTP_ERR_MAX];
    long r = http_parse_request(text, len, &req, err);
    if (r != -status) DK_FAIL_("request %.40s...: got %ld, want %ld (%s)", text, r, -status, err);
    DK_CHECK_CONTAINS(err, needle);
}

static void test_http_parse_hostile(void)
{
    static char big[HTTP_MAX_HEAD + 4096];
    /* Request line too long, also before its end arrives. */
    memset(big, 'a', sizeof big);
    memcpy(big, "GET /", 5);
    expect_status(big, HTTP_MAX_REQUEST_LINE + 10, 414, "request line");
    memcpy(big + HTTP_MAX_TARGET + 100, " HTTP/1.1\r\n\r\n", 13);
    expect_status(big, HTTP_MAX_TARGET + 113, 414, "target");
    /* Too many headers. */
    size_t at = (size_t)sprintf(big, "GET / HTTP/1.1\r\n");
    for (int i = 0; i <= HTTP_MAX_HEADERS; i++) at += (size_t)sprintf(big + at, "X-%d: y\r\n", i);
    at += (size_t)sprintf(big + at, "\r\n");
    expect_status(big, at, 431, "header fields");
    /* A head over the limit without an end. */
    at = (size_t)sprintf(big, "GET / HTTP/1.1\r\n");
    while (at + 4000 < sizeof big) {
        memset(big + at, 'v', 3000);
        memcpy(big + at, "X-Long: ", 8);
        at += 3000;
        big[at++] = '\r';
        big[at++] = '\n';
    }
    expect_status(big, at, 431, "head is longer");
    /* Content-Length: not a number, negative, conflicting, too large. */
    expect_status("POST /r HTTP/1.1\r\nContent-Length: 12a\r\n\r\n", 41, 400, "Content-Length");
    const char *neg = "POST /r HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
    expect_status(neg, strlen(neg), 400, "Content-Length");
    const char *conf = "POST /r HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
    expect_status(conf, strlen(conf), 400, "conflicting");
    const char *huge = "POST /r HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n";
    expect_status(huge, strlen(huge), 413, "limit");
    const char *huger = "POST /r HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
    expect_status(huger, strlen(huger), 413, "Content-Length");
    const char *chunked = "POST /r HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    expect_status(chunked, strlen(chunked), 501, "Transfer-Encoding");
    expect_status("GET / HTTP/2.0\r\n\r\n", 18, 505, "version");
    expect_status("GET / HTTP/1.1x\r\n\r\n", 19, 400, "version");
    expect_status("GET http://x/ HTTP/1.1\r\n\r\n", 26, 400, "start with '/'");
    expect_status("get / HTTP/1.1\r\n\r\n", 18, 400, "request line");
    expect_status("GET  / HTTP/1.1\r\n\r\n", 19, 400, "request line");
    expect_status("\r\n\r\n", 4, 400, "empty request line");
    expect_status("GET / HTTP/1.1\r\n Folded: x\r\n\r\n", 30, 400, "folded");
    expect_status("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 26, 400, "control byte");
    expect_status("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 26, 400, "control byte");
    expect_status("GET / HTTP/1.1\r\n: empty\r\n\r\n", 27, 400, "header line");
    /* Random bytes never crash and never claim more than they have. */
    uint32_t st = 7;
    for (int it = 0; it < 2000; it++) {
        char junk[96];
        size_t n = (size_t)(it % 96);
        for (size_t i = 0; i < n; i++) {
            st = st * 1103515245u + 12345u;
            junk[i] = it & 1 ? "GET /\r\n: HTP1.0a"[(st >> 16) % 16] : (char)(st >> 16);
        }
        http_request req;
        char err[HTTP_ERR_MAX];
        long r = http_parse_request(junk, n, &req, err);
        DK_CHECK(r <= (long)n && r >= -599);
    }
}

static void test_http_bodies(void)
{
    char err[HTTP_ERR_MAX];
    sim_render_request rr;
    const char *ok = "{\"sensor\": \"CAM_BACK\", \"timestamp\": 1.5, \"format\": \"raw\","
                     " \"ego_to_world\": [[0,-1,0,3],[1,0,0,4],[0,0,1,0],[0,0,0,1]],"
                     " \"ego_to_world_end\": [1,0,0,1, 0,1,0,2, 0,0,1,3, 0,0,0,1]}";
    DK_CHECK_OK(sim_parse_render_request(ok, strlen(ok), &rr, err));
    DK_CHECK_STR(rr.sensor, "CAM_BACK");
    DK_CHECK(rr.timestamp == 1.5 && rr.format == SIM_FORMAT_RAW && rr.has_end);
    DK_CHECK_NEAR(dk_pose_yaw(&rr.ego_to_world), 1.5707963267948966, 1e-12);
    DK_CHECK(rr.ego_to_world.t[0] == 3 && rr.ego_to_world_end.t[2] == 3);
    DK_CHECK(rr.lidar_output == SIM_LIDAR_RANGE_IMAGE);
    static const struct {
        const char *body, *needle;
    } bad[] = {
        {"", "empty body"},
        {"[1, 2]", "JSON object"},
        {"{\"sensor\": \"CAM_FRONT\"", "not valid JSON"},
        {"{\"timestamp\": 0, \"ego_to_world\": [1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1]}",
         "missing field 'sensor'"},
        {"{\"sensor\": 3}", "sensor must be a string"},
        {"{\"sensor\": \"\"}", "sensor name"},
        {"{\"sensor\": \"A\", \"timestamp\": 0}", "missing field 'ego_to_world'"},
        {"{\"sensor\": \"A\", \"timestamp\": 0, \"ego_to_world\": [1,0,0]}", "4x4"},
        {"{\"sensor\": \"A\", \"timestamp\": 0, \"ego_to_world\": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0]]}",
         "ego_to_world[3]"},
        {"{\"sensor\": \"A\", \"timestamp\": 0, \"ego_to_world\": [2,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1]}",
         "not a rigid transform"},
        {"{\"sensor\": \"A\", \"timestamp\": \"now\", \"ego_to_world\": [1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1]}",
         "timestamp must be"},
        {"{\"sensor\": \"A\", \"timestamp\": 1e999, \"ego_to_world\": [1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1]}",
         "timestamp"},
        {"{\"sensor\": \"A\", \"timestamp\": 0, \"format\": \"jpg\", \"ego_to_world\": [1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1]}",
         "format must be"},
        {"{\"sensor\": \"A\", \"timestamp\": 0, \"lidar_output\": 1, \"ego_to_world\": [1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1]}",
         "lidar_output"},
        {"{\"sensor\": \"A\", \"timestmap\": 0}", "unknown field 'timestmap'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int st = sim_parse_render_request(bad[i].body, strlen(bad[i].body), &rr, err);
        if (st != -400) DK_FAIL_("body %zu (%s): status %d", i, bad[i].body, st);
        DK_CHECK_CONTAINS(err, bad[i].needle);
    }
    sim_actor_request ar;
    const char *set = "{\"id\": 4, \"timestamp\": 2, \"actor_to_world\": [1,0,0,5,0,1,0,6,0,0,1,0,0,0,0,1]}";
    DK_CHECK_OK(sim_parse_actor_request(set, strlen(set), &ar, err));
    DK_CHECK(ar.id == 4 && !ar.clear && ar.timestamp == 2 && ar.actor_to_world.t[1] == 6);
    static const struct {
        const char *body, *needle;
    } bad_actor[] = {
        {"{\"timestamp\": 2}", "missing field 'id'"},
        {"{\"id\": 1.5}", "id must be an integer"},
        {"{\"id\": 9999999999}", "id must be an integer"},
        {"{\"id\": -1, \"timestamp\": 0, \"actor_to_world\": [1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1]}",
         "-1 is only"},
        {"{\"id\": 2, \"clear\": 1}", "clear must be a boolean"},
        {"{\"id\": 2, \"clear\": true, \"actor_to_world\": []}", "clear does not take"},
        {"{\"id\": 2, \"timestamp\": 0}", "missing field 'actor_to_world'"},
        {"{\"id\": 2, \"pose\": 0}", "unknown field 'pose'"},
    };
    for (size_t i = 0; i < sizeof bad_actor / sizeof bad_actor[0]; i++) {
        int st = sim_parse_actor_request(bad_actor[i].body, strlen(bad_actor[i].body), &ar, err);
        if (st != -400) DK_FAIL_("actor body %zu (%s): status %d", i, bad_actor[i].body, st);
        DK_CHECK_CONTAINS(err, bad_actor[i].needle);
    }
    DK_CHECK_STR(http_reason(431), "Request Header Fields Too Large");
    DK_CHECK_STR(http_reason(299), "Unknown");
}

const dk_test_case dk_tests_sim_loop[] = {
    DK_TEST(test_sim_camera_matches_render_camera),
    DK_TEST(test_sim_lidar_matches_render_lidar),
    DK_TEST(test_sim_actor_override),
    DK_TEST(test_sim_errors),
    DK_TEST(test_http_parse_valid),
    DK_TEST(test_http_parse_partial_pipelined),
    DK_TEST(test_http_parse_hostile),
    DK_TEST(test_http_bodies),
};
const size_t dk_tests_sim_loop_count = sizeof dk_tests_sim_loop / sizeof dk_tests_sim_loop[0];
