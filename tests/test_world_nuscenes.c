/*
 * nuScenes-layout writer: a tiny end-to-end run (1.5 s at 320x180), checked
 * table by table, plus determinism across thread counts and no leaks.
 */
#include <ftw.h>
#include <unistd.h>

#include "dk_test.h"

#define NS_TABLES 13
static const char *const ns_tables[NS_TABLES] = {
    "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
    "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility",
};

static void small_gen(dk_world_gen_config *g)
{
    dk_world_gen_config_init(g);
    g->seed = 3;
    g->duration = 1.5;
    g->camera_width = 320;
    g->camera_height = 180;
    g->n_moving_vehicles = 8;
    g->n_parked_vehicles = 6;
    g->n_pedestrians = 6;
    g->n_cyclists = 2;
}

static int file_equal(const char *a, const char *b)
{
    uint8_t *da = NULL, *db = NULL;
    size_t na = 0, nb = 0;
    int eq = dk_file_read(a, &da, &na) == DK_OK && dk_file_read(b, &db, &nb) == DK_OK &&
             na == nb && memcmp(da, db, na) == 0;
    dk_free(da);
    dk_free(db);
    return eq;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static const char *str_field(const dk_json_cur *row, const char *key)
{
    const char *s = NULL;
    if (dk_json_get_string(row, key, &s)) return NULL;
    return s;
}

static int64_t int_field(const dk_json_cur *row, const char *key)
{
    int64_t v = -1;
    if (dk_json_get_int(row, key, INT64_MIN / 2, INT64_MAX / 2, &v)) return -1;
    return v;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

typedef struct progress_log {
    int64_t calls, last_done, last_total;
} progress_log;

static void on_progress(void *user, int64_t done, int64_t total, const char *what)
{
    progress_log *p = user;
    (void)what;
    if (done < p->last_done) p->calls = -1000000;   /* must not go backwards */
    p->calls++;
    p->last_done = done;
    p->last_total = total;
}

static int write_dataset(const dk_scenario *s, const char *dir, int threads, int video,
                         progress_log *prog)
{
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = threads;
    dk_pool *pool = NULL;
    int st = dk_pool_create(&pc, &pool);
    if (st) return st;
    dk_nuscenes_config nc;
    dk_nuscenes_config_init(&nc);
    nc.write_video = video;
    st = dk_world_write_nuscenes(&s, 1, dir, &nc, pool, prog ? on_progress : NULL, prog);
    dk_pool_destroy(pool);
    return st;
}

/* Is the world point inside the actor's box at t (with a margin, metres)? */
static int in_box(const dk_actor *a, double t, const double p[3], double margin)
{
    dk_pose pose;
    if (!dk_actor_pose_at(a, t, &pose)) return 0;
    dk_pose inv = dk_pose_inverse(&pose);
    double q[3];
    dk_pose_apply(&inv, p, q);
    for (int k = 0; k < 3; k++)
        if (fabs(q[k]) > a->size[k] / 2 + margin) return 0;
    return 1;
}

static void test_nuscenes_end_to_end(void)
{
    int64_t live0 = dk_alloc_live();
    dk_world_gen_config g;
    small_gen(&g);
    dk_scenario *s = NULL;
    DK_CHECK_OK(dk_world_generate(&g, &s));
    char dir1[512], dir2[512], path[1024], path2[1024];
    snprintf(dir1, sizeof dir1, "%s/ns_e2e_1_%d", dk_test_tmpdir(), (int)getpid());
    snprintf(dir2, sizeof dir2, "%s/ns_e2e_2_%d", dk_test_tmpdir(), (int)getpid());
    rm_tree(dir1);
    rm_tree(dir2);
    progress_log prog = {0, 0, 0};
    DK_CHECK_OK(write_dataset(s, dir1, 1, 1, &prog));
    DK_CHECK_OK(write_dataset(s, dir2, 2, 0, NULL));
    DK_CHECK(prog.calls >= 2);
    DK_CHECK(prog.last_total > 0);
    DK_CHECK_EQ_INT(prog.last_done, prog.last_total);

    /* Identical tables for 1 and 2 threads. */
    for (int t = 0; t < NS_TABLES; t++) {
        snprintf(path, sizeof path, "%s/v1.0-mini/%s.json", dir1, ns_tables[t]);
        snprintf(path2, sizeof path2, "%s/v1.0-mini/%s.json", dir2, ns_tables[t]);
        if (!file_equal(path, path2)) DK_FAIL_("%s differs between 1 and 2 threads", ns_tables[t]);
    }

    dk_json *tab[NS_TABLES] = {NULL};
    dk_json_cur root[NS_TABLES];
    for (int t = 0; t < NS_TABLES; t++) {
        snprintf(path, sizeof path, "%s/v1.0-mini/%s.json", dir1, ns_tables[t]);
        DK_CHECK_OK(dk_json_load(path, &tab[t]));
        root[t] = dk_json_root(tab[t]);
        DK_CHECK_EQ_INT(dk_json_type_of(&root[t]), DK_JSON_ARRAY);
    }
    dk_json_cur *sample = &root[7], *sd = &root[9], *ann = &root[8], *sensor = &root[11],
                *calib = &root[1];
    size_t n_samples = dk_json_size(sample);
    DK_CHECK(n_samples == 3 || n_samples == 4);
    DK_CHECK_EQ_INT(dk_json_size(sensor), 7);
    DK_CHECK_EQ_INT(dk_json_size(&root[10]), 1);   /* scene */
    DK_CHECK_EQ_INT(dk_json_size(&root[12]), 4);   /* visibility */
    DK_CHECK_EQ_INT(dk_json_size(&root[0]), 8);    /* attribute */
    DK_CHECK(dk_json_size(ann) > 0);

    /* Every sample: six cameras + LIDAR_TOP key frames; files exist. */
    size_t n_sd = dk_json_size(sd);
    int lidar_rig = dk_rig_find(&s->rig, "LIDAR_TOP");
    DK_CHECK(lidar_rig >= 0);
    const dk_rig_sensor *lidar = &s->rig.sensors[lidar_rig];
    dk_world_renderer_config rc;
    dk_world_renderer_config_init(&rc);
    rc.seed = s->seed;   /* the writer's renderer seed: config seed (0) ^ scenario seed */
    dk_world_renderer *r = NULL;
    int64_t sum_geom = 0, sum_pa = 0, sum_diff = 0, sum_file = 0;
    for (size_t j = 0; j < n_samples; j++) {
        dk_json_cur srow;
        DK_CHECK_OK(dk_json_item(sample, j, &srow));
        const char *stok = str_field(&srow, "token");
        int64_t sts = int_field(&srow, "timestamp");
        DK_CHECK(stok && strlen(stok) == 32);
        int n_key = 0, cams = 0, lid = 0;
        char lidar_file[1024] = "";
        for (size_t i = 0; i < n_sd; i++) {
            dk_json_cur row, key;
            DK_CHECK_OK(dk_json_item(sd, i, &row));
            DK_CHECK_OK(dk_json_field(&row, "is_key_frame", &key));
            int is_key = 0;
            DK_CHECK_OK(dk_json_bool(&key, &is_key));
            if (!is_key || strcmp(str_field(&row, "sample_token"), stok)) continue;
            n_key++;
            const char *fname = str_field(&row, "filename");
            DK_CHECK(fname != NULL);
            DK_CHECK(!strncmp(fname, "samples/", 8));
            snprintf(path, sizeof path, "%s/%s", dir1, fname);
            long size = file_size(path);
            DK_CHECK(size > 0 || (size == 0 && strstr(fname, ".pcd.bin")));
            if (!strcmp(str_field(&row, "fileformat"), "jpg")) {
                cams++;
                DK_CHECK_EQ_INT(int_field(&row, "width"), 320);
                DK_CHECK_EQ_INT(int_field(&row, "height"), 180);
                dk_tensor img;
                DK_CHECK_OK(dk_image_load(path, NULL, &img));
                DK_CHECK_EQ_INT(img.shape[1], 320);
                dk_tensor_release(&img);
            } else {
                lid++;
                DK_CHECK_EQ_INT(size % 20, 0);
                DK_CHECK_EQ_INT(int_field(&row, "timestamp"), sts);
                snprintf(lidar_file, sizeof lidar_file, "%s", path);
            }
            /* Same bytes from the 2-thread run. */
            snprintf(path2, sizeof path2, "%s/%s", dir2, fname);
            if (!file_equal(path, path2)) DK_FAIL_("%s differs between thread counts", fname);
        }
        DK_CHECK_EQ_INT(n_key, 7);
        DK_CHECK_EQ_INT(cams, 6);
        DK_CHECK_EQ_INT(lid, 1);

        /* num_lidar_pts: recount from the .pcd.bin, compare with point_actor. */
        uint8_t *bin = NULL;
        size_t bin_size = 0;
        DK_CHECK_OK(dk_file_read(lidar_file, &bin, &bin_size));
        const float *pts = (const float *)bin;
        size_t n_pts = bin_size / 20;
        double t = (double)(sts - s->start_us) * 1e-6;
        /* the writer's exact frame time: k / rate + offset */
        double k = round((t - lidar->time_offset) * lidar->rate_hz);
        t = k / lidar->rate_hz + lidar->time_offset;
        dk_pose ego = dk_scenario_ego_pose(s, t);
        dk_pose l2w = dk_pose_compose(&ego, &lidar->sensor_to_ego);
        if (!r) {
            int st = dk_world_renderer_create(s, &rc, &r);
            if (st) {
                dk_free(bin);
                DK_FAIL_("renderer: %s", dk_errmsg());
            }
        }
        dk_tensor rp, pa;
        int st = dk_world_render_lidar(r, lidar_rig, t, NULL, &rp, &pa);
        if (st) {
            dk_free(bin);
            DK_FAIL_("render_lidar: %s", dk_errmsg());
        }
        sum_file += (int64_t)n_pts;
        for (size_t a = 0; a < dk_json_size(ann); a++) {
            dk_json_cur row;
            dk_json_item(ann, a, &row);
            if (strcmp(str_field(&row, "sample_token"), stok)) continue;
            double tr[3], sz[3];
            DK_CHECK_OK(dk_json_get_numbers(&row, "translation", tr, 3));
            DK_CHECK_OK(dk_json_get_numbers(&row, "size", sz, 3));
            int actor = -1;
            for (int q = 0; q < s->n_actors; q++) {
                dk_pose p;
                if (dk_actor_pose_at(&s->actors[q], t, &p) && fabs(p.t[0] - tr[0]) < 1e-6 &&
                    fabs(p.t[1] - tr[1]) < 1e-6 && fabs(p.t[2] - tr[2]) < 1e-6)
                    actor = q;
            }
            DK_CHECK(actor >= 0);
            const dk_actor *ac = &s->actors[actor];
            DK_CHECK_NEAR(sz[0], ac->size[1], 1e-9);   /* w, l, h */
            DK_CHECK_NEAR(sz[1], ac->size[0], 1e-9);
            int64_t lo = 0, hi = 0, npa = 0;
            for (size_t i = 0; i < n_pts; i++) {
                double pl[3] = {pts[5 * i], pts[5 * i + 1], pts[5 * i + 2]}, pw[3];
                dk_pose_apply(&l2w, pl, pw);
                lo += in_box(ac, t, pw, -0.01);
                hi += in_box(ac, t, pw, 0.01);
            }
            for (int64_t i = 0; i < pa.shape[0]; i++) npa += ((int32_t *)pa.data)[i] == ac->id;
            int64_t n = int_field(&row, "num_lidar_pts");
            if (n < lo || n > hi)
                DK_FAIL_("actor %d: num_lidar_pts %lld outside [%lld, %lld]", ac->id, (long long)n,
                         (long long)lo, (long long)hi);
            sum_geom += n;
            sum_pa += npa;
            sum_diff += llabs(n - npa);
            if (ac->parked && llabs(n - npa) > 2 + npa / 10)
                DK_FAIL_("parked actor %d: num_lidar_pts %lld vs point_actor %lld", ac->id,
                         (long long)n, (long long)npa);
        }
        DK_CHECK_EQ_INT(rp.shape[0], (int64_t)n_pts);
        dk_tensor_release(&rp);
        dk_tensor_release(&pa);
        dk_free(bin);
    }
    /* Moving actors travel during the sweep, so the counts differ a little. */
    DK_CHECK(sum_geom > 0);
    DK_CHECK(sum_diff <= sum_pa / 10 + 10);
    DK_CHECK(sum_file > 1000);

    /* calibrated_sensor: camera intrinsics with integer pixel centres. */
    size_t n_calib = dk_json_size(calib);
    DK_CHECK_EQ_INT(n_calib, 7);
    int front = dk_rig_find(&s->rig, "CAM_FRONT");
    DK_CHECK(front >= 0);
    int found = 0;
    for (size_t i = 0; i < n_calib; i++) {
        dk_json_cur row, K, r0;
        dk_json_item(calib, i, &row);
        DK_CHECK_OK(dk_json_field(&row, "camera_intrinsic", &K));
        if (dk_json_size(&K) != 3) continue;
        double tr[3];
        DK_CHECK_OK(dk_json_get_numbers(&row, "translation", tr, 3));
        if (fabs(tr[0] - s->rig.sensors[front].sensor_to_ego.t[0]) > 1e-12 ||
            fabs(tr[1] - s->rig.sensors[front].sensor_to_ego.t[1]) > 1e-12)
            continue;
        double k0[3];
        DK_CHECK_OK(dk_json_item(&K, 0, &r0));
        DK_CHECK_OK(dk_json_numbers(&r0, k0, 3));
        DK_CHECK_NEAR(k0[0], s->rig.sensors[front].camera.fx, 1e-9);
        DK_CHECK_NEAR(k0[2], s->rig.sensors[front].camera.cx - 0.5, 1e-9);
        found = 1;
    }
    DK_CHECK(found);

    snprintf(path, sizeof path, "%s/video/%s/CAM_FRONT.mp4", dir1, s->name);
    DK_CHECK(file_size(path) > 0);
    snprintf(path, sizeof path, "%s/video", dir2);
    DK_CHECK(file_size(path) < 0);

    for (int t = 0; t < NS_TABLES; t++) dk_json_free(tab[t]);
    dk_world_renderer_destroy(r);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
    DK_CHECK_EQ_INT(prog.last_done, (int64_t)n_sd);
    rm_tree(dir1);
    rm_tree(dir2);
}

static void test_nuscenes_errors(void)
{
    int64_t live0 = dk_alloc_live();
    dk_nuscenes_config nc;
    dk_nuscenes_config_init(&nc);
    DK_CHECK_STR(nc.version, "v1.0-mini");
    DK_CHECK_NEAR(nc.keyframe_hz, 2.0, 0);
    DK_CHECK_EQ_INT(nc.jpeg_quality, 90);
    DK_CHECK_EQ_INT(nc.write_video, 1);
    DK_CHECK_EQ_INT(nc.video_crf, 23);

    dk_world_gen_config g;
    small_gen(&g);
    g.duration = 1.0;
    dk_scenario *s = NULL;
    DK_CHECK_OK(dk_world_generate(&g, &s));
    const dk_scenario *two[2] = {s, s};
    DK_CHECK_STATUS(dk_world_write_nuscenes(NULL, 1, "/tmp/x", &nc, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_write_nuscenes(two, 0, "/tmp/x", &nc, NULL, NULL, NULL), DK_EINVAL);
    /* the same scene twice: duplicate names */
    DK_CHECK_STATUS(dk_world_write_nuscenes(two, 2, "/tmp/x", &nc, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), s->name);
    nc.keyframe_hz = 50;
    DK_CHECK_STATUS(dk_world_write_nuscenes(two, 1, "/tmp/x", &nc, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "keyframe_hz");
    dk_nuscenes_config_init(&nc);
    nc.jpeg_quality = 0;
    DK_CHECK_STATUS(dk_world_write_nuscenes(two, 1, "/tmp/x", &nc, NULL, NULL, NULL), DK_EINVAL);
    /* an unwritable output folder names the path */
    dk_nuscenes_config_init(&nc);
    nc.write_video = 0;
    char path[512];
    snprintf(path, sizeof path, "%s/ns_blocker_%d", dk_test_tmpdir(), (int)getpid());
    DK_CHECK_OK(dk_file_write(path, "x", 1));
    char out[600];
    snprintf(out, sizeof out, "%s/sub", path);
    DK_CHECK_STATUS(dk_world_write_nuscenes(two, 1, out, &nc, NULL, NULL, NULL), DK_EIO);
    DK_CHECK_CONTAINS(dk_errmsg(), "ns_blocker");
    unlink(path);
    /* an invalid scenario is named */
    double saved = s->actors[0].size[0];
    s->actors[0].size[0] = -1;
    DK_CHECK_STATUS(dk_world_write_nuscenes(two, 1, "/tmp/x", &nc, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "actors[0]");
    s->actors[0].size[0] = saved;
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* No actors, no map: empty annotation tables, still a valid dataset. */
static void test_nuscenes_empty_scene(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = NULL;
    DK_CHECK_OK(dk_scenario_create(&s));
    snprintf(s->name, sizeof s->name, "scene-empty");
    s->duration = 1.0;
    dk_rig_nuscenes(&s->rig, 64, 36);
    dk_actor_state ego[2] = {{0, 0, 0, 0, 0}, {1.0, 8, 0, 0, 0.1}};
    DK_CHECK_OK(dk_scenario_set_actor_states(s, 0, ego, 2));
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/ns_empty_%d", dk_test_tmpdir(), (int)getpid());
    rm_tree(dir);
    DK_CHECK_OK(write_dataset(s, dir, 2, 1, NULL));
    dk_json *doc = NULL;
    snprintf(path, sizeof path, "%s/v1.0-mini/sample_annotation.json", dir);
    DK_CHECK_OK(dk_json_load(path, &doc));
    dk_json_cur root = dk_json_root(doc);
    DK_CHECK_EQ_INT(dk_json_size(&root), 0);
    dk_json_free(doc);
    snprintf(path, sizeof path, "%s/v1.0-mini/sample.json", dir);
    DK_CHECK_OK(dk_json_load(path, &doc));
    root = dk_json_root(doc);
    DK_CHECK_EQ_INT(dk_json_size(&root), 3);   /* 0, 0.5 and 0.95 s */
    dk_json_free(doc);
    snprintf(path, sizeof path, "%s/video/scene-empty/CAM_BACK.mp4", dir);
    DK_CHECK(file_size(path) > 0);
    dk_scenario_destroy(s);
    rm_tree(dir);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

const dk_test_case dk_tests_nuscenes[] = {
    DK_TEST(test_nuscenes_errors),
    DK_TEST(test_nuscenes_empty_scene),
    DK_TEST(test_nuscenes_end_to_end),
};
const size_t dk_tests_nuscenes_count = sizeof dk_tests_nuscenes / sizeof dk_tests_nuscenes[0];
