/* Tests for src/data: the nuScenes reader, on sample drives written by
 * drivekit's own nuScenes writer. */
#include <ftw.h>
#include <unistd.h>

#include "data/data_impl.h"
#include "dk_test.h"

static char g_root[1024];   /* a two-scene dataset with videos, made once */

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

static int write_dataset(const char *dir, int n_scenes, int video)
{
    dk_scenario *sc[2] = {NULL, NULL};
    int st = DK_OK;
    for (int i = 0; i < n_scenes && !st; i++) {
        dk_world_gen_config g;
        dk_world_gen_config_init(&g);
        g.seed = 5 + (uint64_t)i;
        g.duration = 1.6;
        g.camera_width = 192;
        g.camera_height = 108;
        g.n_moving_vehicles = 6;
        g.n_parked_vehicles = 4;
        g.n_pedestrians = 4;
        g.n_cyclists = 1;
        st = dk_world_generate(&g, &sc[i]);
    }
    if (!st) {
        dk_nuscenes_config nc;
        dk_nuscenes_config_init(&nc);
        nc.write_video = video;
        st = dk_world_write_nuscenes((const dk_scenario *const *)sc, n_scenes, dir, &nc, NULL,
                                     NULL, NULL);
    }
    for (int i = 0; i < 2; i++) dk_scenario_destroy(sc[i]);
    return st;
}

static const char *root(void)
{
    if (!g_root[0]) {
        snprintf(g_root, sizeof g_root, "%s/data_nusc_%d", dk_test_tmpdir(), (int)getpid());
        rm_tree(g_root);
        if (write_dataset(g_root, 2, 1)) {
            fprintf(stderr, "  cannot write the test dataset: %s\n", dk_errmsg());
            g_root[0] = 0;
            return "/nonexistent";
        }
    }
    return g_root;
}

/* Rewrites one table file of a copy of the dataset with `from` replaced by `to`
 * (first occurrence, or every occurrence when all). Returns 0 on success. */
static int copy_tree_cmd(const char *src, const char *dst)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dst, src, dst);
    return system(cmd);
}

static int edit_table(const char *dir, const char *table, const char *from, const char *to)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/v1.0-mini/%s.json", dir, table);
    uint8_t *d;
    size_t n;
    if (dk_file_read(path, &d, &n)) return -1;
    char *text = dk_malloc(n + 1);
    memcpy(text, d, n);
    text[n] = 0;
    dk_free(d);
    char *at = strstr(text, from);
    if (!at) {
        dk_free(text);
        return -1;
    }
    size_t fl = strlen(from), tl = strlen(to);
    char *out = dk_malloc(n - fl + tl + 1);
    size_t pre = (size_t)(at - text);
    memcpy(out, text, pre);
    memcpy(out + pre, to, tl);
    memcpy(out + pre + tl, at + fl, n - pre - fl);
    int st = dk_file_write(path, out, n - fl + tl);
    dk_free(text);
    dk_free(out);
    return st;
}

/* ------------------------------------------------------------------------ */

static void test_names(void)
{
    DK_CHECK_STR(dk_nusc_camera_name(0), "CAM_FRONT");
    DK_CHECK_STR(dk_nusc_camera_name(5), "CAM_BACK_RIGHT");
    DK_CHECK(dk_nusc_camera_name(6) == NULL);
    DK_CHECK_STR(dk_nusc_class_name(9), "traffic_cone");
    DK_CHECK(dk_nusc_class_name(-1) == NULL);
    DK_CHECK_EQ_INT(dk_nusc_class_of_category("vehicle.car"), 0);
    DK_CHECK_EQ_INT(dk_nusc_class_of_category("human.pedestrian.child"), 8);
    DK_CHECK_EQ_INT(dk_nusc_class_of_category("vehicle.bus.bendy"), 3);
    DK_CHECK_EQ_INT(dk_nusc_class_of_category("animal"), -1);
    DK_CHECK_EQ_INT(dk_nusc_class_of_category(NULL), -1);
}

/* Samples ordered scene by scene along the chains, matching the tables. */
static void test_open_structure(void)
{
    int64_t live = dk_alloc_live();
    dk_nusc *db;
    DK_CHECK_OK(dk_nusc_open(root(), NULL, &db));
    DK_CHECK_STR(dk_nusc_version(db), "v1.0-mini");
    DK_CHECK_EQ_INT(dk_nusc_num_scenes(db), 2);
    char path[2048];
    snprintf(path, sizeof path, "%s/v1.0-mini/sample.json", root());
    dk_json *doc;
    DK_CHECK_OK(dk_json_load(path, &doc));
    dk_json_cur r = dk_json_root(doc);
    DK_CHECK_EQ_INT(dk_nusc_num_samples(db), (int64_t)dk_json_size(&r));
    dk_json_free(doc);
    int64_t total = 0;
    for (int sc = 0; sc < 2; sc++) {
        dk_nusc_scene s;
        DK_CHECK_OK(dk_nusc_get_scene(db, sc, &s));
        DK_CHECK_EQ_INT(s.first_sample, total);
        DK_CHECK(s.n_samples >= 3);
        total += s.n_samples;
        for (int64_t k = 0; k < s.n_samples; k++) {
            dk_nusc_sample x;
            DK_CHECK_OK(dk_nusc_get_sample(db, s.first_sample + k, &x));
            DK_CHECK_EQ_INT(x.scene, sc);
            DK_CHECK_EQ_INT(x.index_in_scene, k);
            DK_CHECK_STR(x.scene_token, s.token);
            DK_CHECK_EQ_INT(x.prev, k ? s.first_sample + k - 1 : -1);
            DK_CHECK_EQ_INT(x.next, k + 1 < s.n_samples ? s.first_sample + k + 1 : -1);
            DK_CHECK_EQ_INT(dk_nusc_find_sample(db, x.token), s.first_sample + k);
            if (k) {
                dk_nusc_sample p;
                DK_CHECK_OK(dk_nusc_get_sample(db, s.first_sample + k - 1, &p));
                DK_CHECK(x.timestamp > p.timestamp);
            }
            for (int c = 0; c < DK_NUSC_NUM_CAMS; c++) {
                DK_CHECK_STR(x.cams[c].channel, dk_nusc_camera_name(c));
                DK_CHECK(strstr(x.cams[c].filename, dk_nusc_camera_name(c)) != NULL);
                DK_CHECK_EQ_INT(x.cams[c].width, 192);
                DK_CHECK_EQ_INT(x.cams[c].height, 108);
                /* Key frames lie within one camera period of the sample. */
                DK_CHECK(llabs(x.cams[c].timestamp - x.timestamp) < 90000);
            }
            DK_CHECK(strstr(x.lidar_filename, "LIDAR_TOP") != NULL);
        }
    }
    DK_CHECK_EQ_INT(total, dk_nusc_num_samples(db));
    DK_CHECK_EQ_INT(dk_nusc_find_sample(db, "nope"), -1);
    dk_nusc_sample x;
    DK_CHECK_STATUS(dk_nusc_get_sample(db, total, &x), DK_ERANGE);
    DK_CHECK_STATUS(dk_nusc_get_sample(db, -1, &x), DK_ERANGE);
    dk_nusc_scene s;
    DK_CHECK_STATUS(dk_nusc_get_scene(db, 2, &s), DK_ERANGE);
    dk_nusc_close(db);
    dk_nusc_close(NULL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* Cameras look where the rig says; lidar2img equals the pose chain applied
 * point by point; projected lidar points land inside the image in front. */
static void test_camera_geometry(void)
{
    dk_nusc *db;
    DK_CHECK_OK(dk_nusc_open(root(), NULL, &db));
    dk_nusc_sample s;
    DK_CHECK_OK(dk_nusc_get_sample(db, 2, &s));
    /* Optical axes (camera +z) in the ego frame: front, front-right, front-left, back... */
    static const double yaw_deg[DK_NUSC_NUM_CAMS] = {0, -55, 55, 180, 110, -110};
    for (int c = 0; c < DK_NUSC_NUM_CAMS; c++) {
        double z[3] = {0, 0, 1}, a[3];
        dk_pose_rotate(&s.cams[c].sensor2ego, z, a);
        double yaw = atan2(a[1], a[0]) * 180 / 3.14159265358979;
        DK_CHECK(fabs(remainder(yaw - yaw_deg[c], 360.0)) < 1.0);
        DK_CHECK(fabs(a[2]) < 1e-6);
    }
    float *pts;
    int64_t n;
    DK_CHECK_OK(dk_nusc_load_points(db, 2, 5, &pts, &n));
    DK_CHECK(n > 1000);
    int in_front = 0;
    dk_pose l2g = dk_pose_compose(&s.ego2global, &s.lidar2ego);
    for (int c = 0; c < DK_NUSC_NUM_CAMS; c++) {
        const dk_nusc_cam *cam = &s.cams[c];
        dk_pose c2g = dk_pose_compose(&cam->ego2global, &cam->sensor2ego);
        dk_pose g2c = dk_pose_inverse(&c2g);
        for (int64_t k = 0; k < n; k += 97) {
            double p[3] = {pts[k * 5], pts[k * 5 + 1], pts[k * 5 + 2]}, g[3], q[3];
            dk_pose_apply(&l2g, p, g);
            dk_pose_apply(&g2c, g, q);
            const double *m = cam->lidar2img;
            double h[3];
            for (int i = 0; i < 3; i++) h[i] = m[i * 4] * p[0] + m[i * 4 + 1] * p[1] + m[i * 4 + 2] * p[2] + m[i * 4 + 3];
            DK_CHECK_NEAR(h[2], q[2], 1e-6);
            if (q[2] > 1.0) {
                double u = cam->intrinsic[0] * q[0] / q[2] + cam->intrinsic[2];
                double v = cam->intrinsic[4] * q[1] / q[2] + cam->intrinsic[5];
                DK_CHECK_NEAR(h[0] / h[2], u, 1e-6);
                DK_CHECK_NEAR(h[1] / h[2], v, 1e-6);
                in_front += u >= 0 && u < cam->width && v >= 0 && v < cam->height;
            }
            for (int i = 0; i < 3; i++)
                DK_CHECK_NEAR(cam->lidar2cam[i * 4] * p[0] + cam->lidar2cam[i * 4 + 1] * p[1] +
                                  cam->lidar2cam[i * 4 + 2] * p[2] + cam->lidar2cam[i * 4 + 3],
                              q[i], 1e-6);
        }
        DK_CHECK_NEAR(cam->lidar2img[15], 1.0, 0);
        DK_CHECK_NEAR(cam->lidar2img[12], 0.0, 0);
    }
    DK_CHECK(in_front > 50);
    dk_free(pts);
    dk_nusc_close(db);
}

/* Boxes: back in the global frame they are the annotation rows; parked
 * vehicles stand still; moving ones have plausible speeds along their yaw. */
static void test_boxes(void)
{
    dk_nusc *db;
    DK_CHECK_OK(dk_nusc_open(root(), NULL, &db));
    char path[2048];
    snprintf(path, sizeof path, "%s/v1.0-mini/sample_annotation.json", root());
    dk_json *doc;
    DK_CHECK_OK(dk_json_load(path, &doc));
    dk_json_cur rows = dk_json_root(doc);
    snprintf(path, sizeof path, "%s/v1.0-mini/attribute.json", root());
    dk_json *adoc;
    DK_CHECK_OK(dk_json_load(path, &adoc));
    dk_json_cur arows = dk_json_root(adoc);
    const char *parked_tok = NULL;
    for (size_t i = 0; i < dk_json_size(&arows); i++) {
        dk_json_cur a;
        const char *name, *tok;
        dk_json_item(&arows, i, &a);
        dk_json_get_string(&a, "name", &name);
        dk_json_get_string(&a, "token", &tok);
        if (!strcmp(name, "vehicle.parked")) parked_tok = tok;
    }
    DK_CHECK(parked_tok != NULL);
    int64_t total = 0, checked = 0, parked = 0, moving = 0, labelled = 0;
    for (int64_t i = 0; i < dk_nusc_num_samples(db); i++) {
        dk_nusc_sample s;
        DK_CHECK_OK(dk_nusc_get_sample(db, i, &s));
        const dk_nusc_box *b;
        int64_t n = dk_nusc_get_boxes(db, i, &b);
        DK_CHECK(n >= 0);
        DK_CHECK_EQ_INT(n, s.n_boxes);
        total += n;
        dk_pose l2g = dk_pose_compose(&s.ego2global, &s.lidar2ego);
        for (int64_t k = 0; k < n; k++) {
            /* Find the row by token. */
            dk_json_cur row;
            int found = 0;
            for (size_t r = 0; r < dk_json_size(&rows) && !found; r++) {
                const char *tok;
                dk_json_item(&rows, r, &row);
                dk_json_get_string(&row, "token", &tok);
                found = !strcmp(tok, b[k].token);
            }
            DK_CHECK(found);
            double t[3], size[3], q[4], c[3] = {b[k].center[0], b[k].center[1], b[k].center[2]}, g[3];
            DK_CHECK_OK(dk_json_get_numbers(&row, "translation", t, 3));
            DK_CHECK_OK(dk_json_get_numbers(&row, "size", size, 3));
            DK_CHECK_OK(dk_json_get_numbers(&row, "rotation", q, 4));
            dk_pose_apply(&l2g, c, g);
            for (int j = 0; j < 3; j++) DK_CHECK_NEAR(g[j], t[j], 1e-4);
            DK_CHECK_NEAR(b[k].size[0], size[1], 1e-5);   /* l */
            DK_CHECK_NEAR(b[k].size[1], size[0], 1e-5);   /* w */
            DK_CHECK_NEAR(b[k].size[2], size[2], 1e-5);
            /* Heading: the box x axis rotated to global equals the annotation's. */
            double ax[3] = {cos(b[k].yaw), sin(b[k].yaw), 0}, ag[3], ref[3], xa[3] = {1, 0, 0};
            dk_pose_rotate(&l2g, ax, ag);
            dk_pose qa = {{q[0], q[1], q[2], q[3]}, {0, 0, 0}};
            dk_pose_rotate(&qa, xa, ref);
            DK_CHECK_NEAR(ag[0], ref[0], 1e-4);
            DK_CHECK_NEAR(ag[1], ref[1], 1e-4);
            dk_json_cur attrs, a0;
            const char *attr = "";
            if (!dk_json_field(&row, "attribute_tokens", &attrs) && dk_json_size(&attrs) > 0 &&
                !dk_json_item(&attrs, 0, &a0))
                dk_json_string(&a0, &attr);
            double speed = hypot(b[k].velocity[0], b[k].velocity[1]);
            if (!strcmp(attr, parked_tok)) {
                DK_CHECK(speed < 0.05);
                parked++;
            } else if (b[k].label == 0 && speed > 1.0) {
                /* Moving cars drive along their heading (forward or reversing). */
                double along = (b[k].velocity[0] * cos(b[k].yaw) + b[k].velocity[1] * sin(b[k].yaw)) / speed;
                DK_CHECK(fabs(along) > 0.9);
                DK_CHECK(speed < 30);
                moving++;
            }
            labelled += b[k].label >= 0;
            DK_CHECK(b[k].label >= -1 && b[k].label < DK_NUSC_NUM_CLASSES);
            DK_CHECK(b[k].visibility >= 1 && b[k].visibility <= 4);
            DK_CHECK(b[k].category != NULL);
            DK_CHECK_EQ_INT(b[k].label, dk_nusc_class_of_category(b[k].category));
            checked++;
        }
    }
    DK_CHECK_EQ_INT(total, (int64_t)dk_json_size(&rows));
    DK_CHECK(checked > 20);
    DK_CHECK(parked > 0);
    DK_CHECK(moving > 0);
    DK_CHECK(labelled > 0);
    const dk_nusc_box *b;
    DK_CHECK_STATUS((int)dk_nusc_get_boxes(db, -1, &b), DK_ERANGE);
    DK_CHECK_STATUS((int)dk_nusc_get_boxes(NULL, 0, &b), DK_EINVAL);
    dk_json_free(doc);
    dk_json_free(adoc);
    dk_nusc_close(db);
}

/* A key frame's video frame is the picture of its JPEG. */
static void test_video_frames(void)
{
    dk_nusc *db;
    DK_CHECK_OK(dk_nusc_open(root(), NULL, &db));
    for (int64_t i = 0; i < dk_nusc_num_samples(db); i += 3) {
        dk_nusc_sample s;
        DK_CHECK_OK(dk_nusc_get_sample(db, i, &s));
        for (int c = 0; c < DK_NUSC_NUM_CAMS; c += 3) {
            const dk_nusc_cam *cam = &s.cams[c];
            DK_CHECK(cam->video != NULL);
            if (!cam->video) continue;
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", root(), cam->video);
            dk_video *v;
            DK_CHECK_OK(dk_video_open(path, NULL, &v));
            dk_tensor jpg;
            snprintf(path, sizeof path, "%s/%s", root(), cam->filename);
            DK_CHECK_OK(dk_image_load(path, NULL, &jpg));
            size_t bytes = dk_video_frame_bytes(v);
            DK_CHECK_EQ_INT((int64_t)bytes, 192 * 108 * 3);
            uint8_t *frames = dk_malloc(3 * bytes);
            dk_video_info vi;
            DK_CHECK_OK(dk_video_get_info(v, &vi));
            int64_t last = vi.n_frames - 1, f0 = cam->video_frame;
            /* The frame and its two nearest neighbours that exist. */
            int64_t ids[3] = {f0 > 0 ? f0 - 1 : f0 + 2, f0, f0 < last ? f0 + 1 : f0 - 2};
            int status[3];
            DK_CHECK_OK(dk_video_get_frames_into(v, NULL, ids, 3, frames, bytes, status));
            double diff[3];
            const uint8_t *j = jpg.data;
            for (int f = 0; f < 3; f++) {
                double sum = 0;
                for (size_t k = 0; k < bytes; k++) sum += abs((int)frames[f * bytes + k] - (int)j[k]);
                diff[f] = sum / (double)bytes;
            }
            DK_CHECK(diff[1] < 4.0);              /* compression noise only */
            DK_CHECK(diff[1] < diff[0]);
            DK_CHECK(diff[1] < diff[2]);
            dk_free(frames);
            dk_tensor_release(&jpg);
            dk_video_close(v);
        }
    }
    dk_nusc_close(db);
}

static void test_points_errors(void)
{
    char dir[1200];
    snprintf(dir, sizeof dir, "%s_pts", root());
    DK_CHECK_EQ_INT(copy_tree_cmd(root(), dir), 0);
    dk_nusc *db;
    DK_CHECK_OK(dk_nusc_open(dir, NULL, &db));
    dk_nusc_sample s;
    DK_CHECK_OK(dk_nusc_get_sample(db, 1, &s));
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, s.lidar_filename);
    float *p;
    int64_t n;
    DK_CHECK_STATUS(dk_nusc_load_points(db, 1, 2, &p, &n), DK_EINVAL);
    DK_CHECK_OK(dk_nusc_load_points(db, 1, 5, &p, &n));
    /* Truncate by 6 bytes: not a whole number of points. */
    DK_CHECK_OK(dk_file_write(path, p, (size_t)n * 20 - 6));
    dk_free(p);
    DK_CHECK_STATUS(dk_nusc_load_points(db, 1, 5, &p, &n), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), s.token);
    DK_CHECK_CONTAINS(dk_errmsg(), "truncated");
    DK_CHECK(p == NULL && n == 0);
    float bad[5] = {1, NAN, 0, 0, 0};
    DK_CHECK_OK(dk_file_write(path, bad, sizeof bad));
    DK_CHECK_STATUS(dk_nusc_load_points(db, 1, 5, &p, &n), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "not finite");
    remove(path);
    DK_CHECK_STATUS(dk_nusc_load_points(db, 1, 5, &p, &n), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), s.token);
    DK_CHECK_CONTAINS(dk_errmsg(), "LIDAR_TOP");
    dk_nusc_close(db);
    rm_tree(dir);
}

/* Broken tables: every error names the table and the row or token. */
static void test_table_errors(void)
{
    int64_t live = dk_alloc_live();
    char dir[1200], path[2048];
    snprintf(dir, sizeof dir, "%s_bad", root());
    dk_nusc *db = (dk_nusc *)1;
    DK_CHECK_STATUS(dk_nusc_open(NULL, NULL, &db), DK_EINVAL);
    DK_CHECK_STATUS(dk_nusc_open(root(), NULL, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_nusc_open("/nonexistent/nusc", NULL, &db), DK_ENOENT);
    DK_CHECK(db == NULL);
    dk_nusc_config cfg;
    dk_nusc_config_init(&cfg);
    cfg.version = "v1.0-trainval";
    DK_CHECK_STATUS(dk_nusc_open(root(), &cfg, &db), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "v1.0-trainval");
    cfg.version = "../x";
    DK_CHECK_STATUS(dk_nusc_open(root(), &cfg, &db), DK_EINVAL);

    struct {
        const char *table, *from, *to;
        int status;
        const char *msg1, *msg2;
    } cases[] = {
        /* a dangling reference */
        {"sample_data", "\"calibrated_sensor_token\": \"", "\"calibrated_sensor_token\": \"x",
         DK_EINVALIDDATA, "sample_data.json", "calibrated_sensor_token"},
        /* syntax */
        {"ego_pose", "[", "[{", DK_EINVALIDDATA, "ego_pose.json", "syntax error"},
        /* not a rotation */
        {"calibrated_sensor", "\"rotation\": [", "\"rotation\": [3, ", DK_EINVALIDDATA,
         "calibrated_sensor.json", "rotation"},
        /* wrong type */
        {"sample", "\"timestamp\": ", "\"timestamp\": \"a\", \"x\": ", DK_EINVALIDDATA,
         "sample.json", "timestamp"},
        /* a key frame becomes a sweep: its sample lacks that camera */
        {"sample_data", "\"is_key_frame\": true", "\"is_key_frame\": false", DK_EINVALIDDATA,
         "no CAM_FRONT key frame", "sample "},
        /* a chain that leaves its scene */
        {"scene", "\"first_sample_token\": \"", "\"first_sample_token\": \"zz", DK_EINVALIDDATA,
         "scene.json", "first_sample_token"},
        /* a repeated token */
        {"sensor", "\"channel\": \"CAM_FRONT\"", "\"channel\": \"CAM_FRONT\"}, {\"token\": \"t\", "
         "\"channel\": \"A\"}, {\"token\": \"t\", \"channel\": \"B\"", DK_EINVALIDDATA,
         "sensor.json", "repeats"},
        /* a path out of the root */
        {"sample_data", "\"filename\": \"", "\"filename\": \"../", DK_EINVALIDDATA,
         "sample_data.json", "leaves the dataset root"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        DK_CHECK_EQ_INT(copy_tree_cmd(root(), dir), 0);
        DK_CHECK_EQ_INT(edit_table(dir, cases[i].table, cases[i].from, cases[i].to), 0);
        int st = dk_nusc_open(dir, NULL, &db);
        if (st != cases[i].status) fprintf(stderr, "  case %zu: %s\n", i, dk_errmsg());
        DK_CHECK_STATUS(st, cases[i].status);
        DK_CHECK_CONTAINS(dk_errmsg(), cases[i].msg1);
        DK_CHECK_CONTAINS(dk_errmsg(), cases[i].msg2);
        DK_CHECK(db == NULL);
    }
    /* A missing table. */
    DK_CHECK_EQ_INT(copy_tree_cmd(root(), dir), 0);
    snprintf(path, sizeof path, "%s/v1.0-mini/instance.json", dir);
    remove(path);
    DK_CHECK_STATUS(dk_nusc_open(dir, NULL, &db), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "instance.json");
    /* Two version folders: ambiguous unless chosen. */
    DK_CHECK_EQ_INT(copy_tree_cmd(root(), dir), 0);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cp -r '%s/v1.0-mini' '%s/v1.0-test'", dir, dir);
    DK_CHECK_EQ_INT(system(cmd), 0);
    DK_CHECK_STATUS(dk_nusc_open(dir, NULL, &db), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "v1.0-*");
    cfg.version = "v1.0-test";
    DK_CHECK_OK(dk_nusc_open(dir, &cfg, &db));
    DK_CHECK_STR(dk_nusc_version(db), "v1.0-test");
    dk_nusc_close(db);
    rm_tree(dir);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* Without videos every camera reports none. */
static void test_no_video(void)
{
    char dir[1200];
    snprintf(dir, sizeof dir, "%s_novideo", root());
    rm_tree(dir);
    DK_CHECK_OK(write_dataset(dir, 1, 0));
    dk_nusc *db;
    DK_CHECK_OK(dk_nusc_open(dir, NULL, &db));
    DK_CHECK_EQ_INT(dk_nusc_num_scenes(db), 1);
    for (int64_t i = 0; i < dk_nusc_num_samples(db); i++) {
        dk_nusc_sample s;
        DK_CHECK_OK(dk_nusc_get_sample(db, i, &s));
        for (int c = 0; c < DK_NUSC_NUM_CAMS; c++) {
            DK_CHECK(s.cams[c].video == NULL);
            DK_CHECK_EQ_INT(s.cams[c].video_frame, -1);
        }
    }
    dk_nusc_close(db);
    rm_tree(dir);
}


/* ------------------------------------------------------------------------ */
/* Groups, samples and pipelines                                             */

static void test_group_format(void)
{
    int64_t live = dk_alloc_live();
    dk_group *g;
    DK_CHECK_OK(dk_group_create(&g));
    int tok = dk_group_add_string(g, DK_GROUP_ROOT, "token");
    int ts = dk_group_add_tensor(g, DK_GROUP_ROOT, "timestamp", DK_F64, 0);
    DK_CHECK(tok > 0 && ts > tok);
    /* A camera format, then an array of 3 of them. */
    dk_group *cam;
    DK_CHECK_OK(dk_group_create(&cam));
    DK_CHECK(dk_group_add_tensor(cam, DK_GROUP_ROOT, "image", DK_U8, 3) > 0);
    DK_CHECK(dk_group_add_tensor(cam, DK_GROUP_ROOT, "lidar2img", DK_F32, 2) > 0);
    int geo = dk_group_add_group(cam, DK_GROUP_ROOT, "geo");
    DK_CHECK(dk_group_add_tensor(cam, geo, "intrinsic", DK_F32, 2) > 0);
    int cams = dk_group_add_array(g, DK_GROUP_ROOT, "cams", cam, DK_GROUP_ROOT, 3);
    DK_CHECK(cams > 0);
    dk_group_destroy(cam);
    int img1 = dk_group_find(g, DK_GROUP_ROOT, "cams[1].image");
    DK_CHECK(img1 > 0);
    DK_CHECK_EQ_INT(dk_group_find(g, DK_GROUP_ROOT, "cams.1.image"), img1);
    int e1 = dk_group_child(g, cams, "1");
    DK_CHECK_EQ_INT(dk_group_find(g, e1, "image"), img1);
    char path[128];
    DK_CHECK(dk_group_path(g, img1, path, sizeof path) > 0);
    DK_CHECK_STR(path, "cams[1].image");
    int k2 = dk_group_find(g, DK_GROUP_ROOT, "cams[2].geo.intrinsic");
    DK_CHECK(dk_group_path(g, k2, path, sizeof path) > 0);
    DK_CHECK_STR(path, "cams[2].geo.intrinsic");
    DK_CHECK_STATUS(dk_group_find(g, DK_GROUP_ROOT, "cams[3].image"), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "'3'");
    DK_CHECK_STATUS(dk_group_find(g, DK_GROUP_ROOT, "cams[1"), DK_EINVAL);
    DK_CHECK_STATUS(dk_group_find(g, DK_GROUP_ROOT, "cams."), DK_EINVAL);
    int ids[16];
    DK_CHECK_EQ_INT(dk_group_find_all(g, DK_GROUP_ROOT, "image", ids, 16), 3);
    DK_CHECK_EQ_INT(ids[1], img1);
    DK_CHECK_EQ_INT(dk_group_find_all(g, e1, "intrinsic", ids, 16), 1);
    /* Flattening: depth-first, child order. */
    int n = dk_group_leaves(g, DK_GROUP_ROOT, ids, 16);
    DK_CHECK_EQ_INT(n, 2 + 3 * 3);
    DK_CHECK_EQ_INT(ids[0], tok);
    DK_CHECK_EQ_INT(ids[1], ts);
    DK_CHECK(dk_group_path(g, ids[4], path, sizeof path) > 0);
    DK_CHECK_STR(path, "cams[0].geo.intrinsic");
    dk_field_info fi;
    DK_CHECK_OK(dk_group_info(g, img1, &fi));
    DK_CHECK_EQ_INT(fi.kind, DK_FIELD_TENSOR);
    DK_CHECK_EQ_INT(fi.dtype, DK_U8);
    DK_CHECK_EQ_INT(fi.ndim, 3);
    DK_CHECK_OK(dk_group_info(g, tok, &fi));
    DK_CHECK_EQ_INT(fi.kind, DK_FIELD_STRING);
    DK_CHECK_OK(dk_group_info(g, cams, &fi));
    DK_CHECK_EQ_INT(fi.kind, DK_FIELD_ARRAY);
    DK_CHECK_EQ_INT(fi.n_children, 3);
    /* Misuse. */
    DK_CHECK_STATUS(dk_group_add_string(g, DK_GROUP_ROOT, "token"), DK_ESTATE);
    DK_CHECK_STATUS(dk_group_add_string(g, DK_GROUP_ROOT, "1abc"), DK_EINVAL);
    DK_CHECK_STATUS(dk_group_add_string(g, DK_GROUP_ROOT, "a.b"), DK_EINVAL);
    DK_CHECK_STATUS(dk_group_add_string(g, cams, "x"), DK_EINVAL);
    DK_CHECK_STATUS(dk_group_add_string(g, 999, "x"), DK_EINVAL);
    DK_CHECK_STATUS(dk_group_add_tensor(g, DK_GROUP_ROOT, "t", DK_DTYPE_INVALID, 1), DK_EINVAL);
    DK_CHECK_STATUS(dk_group_add_tensor(g, DK_GROUP_ROOT, "t", DK_F32, DK_MAX_DIMS + 1), DK_EINVAL);
    DK_CHECK_STATUS(dk_group_remove(g, DK_GROUP_ROOT), DK_EINVAL);
    /* Clone keeps ids; same format; remove changes both. */
    dk_group *c;
    DK_CHECK_OK(dk_group_clone(g, &c));
    DK_CHECK_EQ_INT(dk_group_find(c, DK_GROUP_ROOT, "cams[1].image"), img1);
    DK_CHECK(dk_group_same_format(g, DK_GROUP_ROOT, c, DK_GROUP_ROOT));
    DK_CHECK(dk_group_same_format(g, dk_group_child(g, cams, "0"), g, e1));
    DK_CHECK_OK(dk_group_remove(c, img1));
    DK_CHECK(!dk_group_same_format(g, DK_GROUP_ROOT, c, DK_GROUP_ROOT));
    DK_CHECK_STATUS(dk_group_info(c, img1, &fi), DK_ENOENT);
    DK_CHECK_EQ_INT(dk_group_leaves(c, DK_GROUP_ROOT, NULL, 0), n - 1);
    /* An array of an element of the same tree. */
    int arr2 = dk_group_add_array(c, DK_GROUP_ROOT, "more", c, e1, 2);
    DK_CHECK(arr2 > 0);
    DK_CHECK(dk_group_find(c, DK_GROUP_ROOT, "more[1].geo.intrinsic") > 0);
    DK_CHECK_STATUS(dk_group_find(c, DK_GROUP_ROOT, "more[1].image"), DK_ENOENT);
    char *text;
    DK_CHECK_OK(dk_group_describe(g, &text));
    DK_CHECK_CONTAINS(text, "cams[3]");
    DK_CHECK_CONTAINS(text, "lidar2img float32 rank 2");
    DK_CHECK_CONTAINS(text, "token string");
    dk_free(text);
    dk_group_destroy(c);
    dk_group_destroy(g);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_sample_values(void)
{
    int64_t live = dk_alloc_live();
    dk_group *g;
    DK_CHECK_OK(dk_group_create(&g));
    int s = dk_group_add_string(g, DK_GROUP_ROOT, "name");
    int t = dk_group_add_tensor(g, DK_GROUP_ROOT, "m", DK_F32, 2);
    dk_sample x;
    DK_CHECK_OK(dk_sample_init(&x, dk_group_id_limit(g)));
    DK_CHECK_STATUS(dk_sample_check(&x, g), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "name: no value");
    DK_CHECK_OK(dk_sample_set_string(&x, s, "abc"));
    DK_CHECK_EQ_INT(x.values[s].shape[0], 3);
    DK_CHECK(!memcmp(x.values[s].data, "abc", 3));
    int64_t shape[2] = {2, 2};
    double wrong[4] = {0};
    DK_CHECK_OK(dk_sample_set_copy(&x, t, DK_F64, 2, shape, wrong));
    DK_CHECK_STATUS(dk_sample_check(&x, g), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "m: float32 rank 2 expected, got float64 rank 2");
    float right[4] = {1, 2, 3, 4};
    DK_CHECK_OK(dk_sample_set_copy(&x, t, DK_F32, 2, shape, right));
    DK_CHECK_OK(dk_sample_check(&x, g));
    DK_CHECK_STATUS(dk_sample_set_copy(&x, 99, DK_F32, 2, shape, right), DK_ERANGE);
    DK_CHECK_OK(dk_sample_resize(&x, 10));
    DK_CHECK_EQ_INT(x.n, 10);
    DK_CHECK_EQ_INT(x.values[9].dtype, DK_DTYPE_INVALID);
    dk_sample_free(&x);
    dk_sample_free(&x);
    dk_group_destroy(g);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* A step for the tests: for every float32 rank-1 field named cfg (in its
 * subtree) adds a sibling "<name>_r" holding one uniform draw. */
typedef struct draw_binding {
    int n;
    int src[8], dst[8];
} draw_binding;

static int draw_bind(dk_step *s, dk_group *fmt, int root, void **binding)
{
    const char *name = s->cfg;
    draw_binding *b = dk_calloc(1, sizeof *b);
    int ids[8];
    int n = dk_group_find_all(fmt, root, name, ids, 8);
    dk_field_info fi;
    if (root != DK_GROUP_ROOT && !dk_group_info(fmt, root, &fi) && n == 0) n = 0;
    if (n == 0) {
        dk_free(b);
        return dk__error(DK_ENOENT, "bind", "no field '%s'", name);
    }
    for (int i = 0; i < n && i < 8; i++) {
        dk_group_info(fmt, ids[i], &fi);
        if (fi.kind != DK_FIELD_TENSOR || fi.dtype != DK_F32 || fi.ndim != 1) {
            dk_free(b);
            return dk__error(DK_EINVALIDDATA, "bind", "%s: float32 rank 1 expected", name);
        }
        char rn[64];
        snprintf(rn, sizeof rn, "%s_r", name);
        b->src[i] = ids[i];
        b->dst[i] = dk_group_add_tensor(fmt, fi.parent, rn, DK_F32, 1);
        if (b->dst[i] < 0) {
            int st = b->dst[i];
            dk_free(b);
            return st;
        }
    }
    b->n = n;
    *binding = b;
    return DK_OK;
}

static int draw_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    (void)s;
    const draw_binding *b = binding;
    float r = dk_rng_uniform(&ctx->rng);
    for (int i = 0; i < b->n; i++) {
        int64_t one = 1;
        if (x->values[b->src[i]].dtype != DK_F32)
            return dk__error(DK_EINVALIDDATA, "run", "no input value");
        int st = dk_sample_set_copy(x, b->dst[i], DK_F32, 1, &one, &r);
        if (st) return st;
    }
    return DK_OK;
}

static void draw_destroy(dk_step *s)
{
    dk_free(s->cfg);
}

static const dk__step_vt draw_vt = {"draw", draw_bind, draw_run, dk_free, draw_destroy, 0};

static dk_step *draw_step(const char *name)
{
    dk_step *s = NULL;
    dk__step_new(&draw_vt, dk_strdup(name), &s);
    return s;
}

static float run_draw(const dk_pipeline *p, int64_t index, int epoch, const char *field)
{
    const dk_group *in = dk_pipeline_input_format(p);
    const dk_group *out = dk_pipeline_format(p);
    dk_sample x;
    dk_sample_init(&x, dk_group_id_limit(in));
    int leaves[16];
    int n = dk_group_leaves(in, DK_GROUP_ROOT, leaves, 16);
    for (int i = 0; i < n; i++) {
        int64_t one = 1;
        float v = 0;
        dk_sample_set_copy(&x, leaves[i], DK_F32, 1, &one, &v);
    }
    x.index = index;
    x.epoch = epoch;
    float r = -1;
    if (!dk_pipeline_run(p, &x, "tok")) r = *(float *)x.values[dk_group_find(out, DK_GROUP_ROOT, field)].data;
    dk_sample_free(&x);
    return r;
}

static void test_pipeline_binding_and_draws(void)
{
    int64_t live = dk_alloc_live();
    dk_group *g, *cam;
    DK_CHECK_OK(dk_group_create(&g));
    DK_CHECK(dk_group_add_tensor(g, DK_GROUP_ROOT, "a", DK_F32, 1) > 0);
    DK_CHECK_OK(dk_group_create(&cam));
    DK_CHECK(dk_group_add_tensor(cam, DK_GROUP_ROOT, "c", DK_F32, 1) > 0);
    DK_CHECK(dk_group_add_array(g, DK_GROUP_ROOT, "cams", cam, DK_GROUP_ROOT, 3) > 0);
    dk_group_destroy(cam);
    dk_pipeline_config pc;
    dk_pipeline_config_init(&pc);
    pc.seed = 7;
    dk_pipeline *p;
    DK_CHECK_OK(dk_pipeline_create(g, &pc, &p));
    DK_CHECK_OK(dk_pipeline_add(p, draw_step("a")));
    DK_CHECK_OK(dk_pipeline_add(p, draw_step("c")));   /* one draw for every camera */
    dk_step *pe;
    DK_CHECK_OK(dk_step_per_element(draw_step("c_r"), "cams", &pe));
    DK_CHECK_OK(dk_pipeline_add(p, pe));               /* one draw per camera */
    DK_CHECK_EQ_INT(dk_pipeline_num_steps(p), 3);
    DK_CHECK_STR(dk_pipeline_step_name(p, 2), "draw");
    /* A failing binding names the step and leaves the format alone. */
    int limit = dk_group_id_limit(dk_pipeline_format(p));
    DK_CHECK_STATUS(dk_pipeline_add(p, draw_step("nope")), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "step 3 (draw)");
    DK_CHECK_CONTAINS(dk_errmsg(), "nope");
    DK_CHECK_STATUS(dk_pipeline_add(p, draw_step("cams")), DK_EINVALIDDATA);
    DK_CHECK_EQ_INT(dk_group_id_limit(dk_pipeline_format(p)), limit);
    DK_CHECK_EQ_INT(dk_pipeline_num_steps(p), 3);
    dk_step *bad;
    DK_CHECK_OK(dk_step_per_element(draw_step("c"), "a", &bad));
    DK_CHECK_STATUS(dk_pipeline_add(p, bad), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "an array expected");
    dk_step *at;
    DK_CHECK_OK(dk_step_at_path(draw_step("c_r_r"), "cams[2]", &at));
    DK_CHECK_OK(dk_pipeline_add(p, at));
    const dk_group *out = dk_pipeline_format(p);
    DK_CHECK(dk_group_find(out, DK_GROUP_ROOT, "cams[0].c_r_r") > 0);
    DK_CHECK(dk_group_find(out, DK_GROUP_ROOT, "cams[2].c_r_r_r") > 0);
    DK_CHECK_STATUS(dk_group_find(out, DK_GROUP_ROOT, "cams[1].c_r_r_r"), DK_ENOENT);
    /* Adding a field that exists fails at binding time. */
    DK_CHECK_OK(dk_step_at_path(draw_step("c"), "cams[2]", &at));
    DK_CHECK_STATUS(dk_pipeline_add(p, at), DK_ESTATE);
    DK_CHECK_CONTAINS(dk_errmsg(), "cams[2].c_r");
    /* Same (seed, epoch, index) -> same draws; others differ. */
    float a1 = run_draw(p, 5, 0, "a_r"), a2 = run_draw(p, 5, 0, "a_r");
    DK_CHECK(a1 >= 0 && a1 == a2);
    DK_CHECK(run_draw(p, 6, 0, "a_r") != a1);
    DK_CHECK(run_draw(p, 5, 1, "a_r") != a1);
    /* One draw for all cameras, different draws per element. */
    float c0 = run_draw(p, 5, 0, "cams[0].c_r"), c2 = run_draw(p, 5, 0, "cams[2].c_r");
    DK_CHECK(c0 >= 0 && c0 == c2);
    float e0 = run_draw(p, 5, 0, "cams[0].c_r_r"), e1 = run_draw(p, 5, 0, "cams[1].c_r_r");
    DK_CHECK(e0 >= 0 && e1 >= 0 && e0 != e1);
    double sec;
    int64_t calls;
    DK_CHECK_OK(dk_pipeline_step_stats(p, 0, &sec, &calls));
    DK_CHECK(calls >= 8);
    dk_pipeline_reset_stats(p);
    DK_CHECK_OK(dk_pipeline_step_stats(p, 0, &sec, &calls));
    DK_CHECK_EQ_INT(calls, 0);
    DK_CHECK_STATUS(dk_pipeline_step_stats(p, 9, &sec, &calls), DK_ERANGE);
    /* A sample missing an input value fails naming the step and the token. */
    dk_sample x;
    DK_CHECK_OK(dk_sample_init(&x, dk_group_id_limit(g)));
    DK_CHECK_STATUS(dk_pipeline_run(p, &x, "tok42"), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "tok42");
    DK_CHECK_CONTAINS(dk_errmsg(), "step 0 (draw)");
    dk_sample_free(&x);
    dk_pipeline_destroy(p);
    dk_group_destroy(g);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}


/* ------------------------------------------------------------------------ */
/* Samplers, the nuScenes source and the loader                              */

static void test_sampler_shuffled(void)
{
    int64_t live = dk_alloc_live();
    int64_t seen[10] = {0};
    int64_t first_epoch[3][8];
    for (int rank = 0; rank < 3; rank++) {
        dk_sampler_config c;
        dk_sampler_config_init(&c);
        c.n = 10;
        c.batch_size = 3;
        c.rank = rank;
        c.world_size = 3;
        c.seed = 11;
        dk_sampler *s;
        DK_CHECK_OK(dk_sampler_create(&c, &s));
        DK_CHECK_EQ_INT(dk_sampler_batches_per_epoch(s), 2);   /* 4 per rank */
        int64_t idx[3];
        int epoch = -1, got = 0;
        int n;
        while ((n = dk_sampler_next(s, idx, &epoch)) > 0) {
            DK_CHECK_EQ_INT(epoch, 0);
            for (int k = 0; k < n; k++) {
                DK_CHECK(idx[k] >= 0 && idx[k] < 10);
                seen[idx[k]]++;
                first_epoch[rank][got++] = idx[k];
            }
        }
        DK_CHECK_EQ_INT(n, DK_EOF);
        DK_CHECK_EQ_INT(got, 4);
        /* The next epoch is another permutation. */
        int64_t e1[4];
        int g1 = 0;
        while ((n = dk_sampler_next(s, idx, &epoch)) > 0) {
            DK_CHECK_EQ_INT(epoch, 1);
            for (int k = 0; k < n; k++) e1[g1++] = idx[k];
        }
        DK_CHECK_EQ_INT(g1, 4);
        if (rank == 0) DK_CHECK(memcmp(e1, first_epoch[0], sizeof e1) != 0);
        /* set_epoch(0) replays epoch 0. */
        DK_CHECK_OK(dk_sampler_set_epoch(s, 0));
        DK_CHECK_EQ_INT(dk_sampler_next(s, idx, &epoch), 3);
        DK_CHECK(!memcmp(idx, first_epoch[rank], 3 * sizeof *idx));
        dk_sampler_destroy(s);
    }
    /* Every index is covered; the 2 padding positions repeat the start. */
    int64_t total = 0;
    for (int i = 0; i < 10; i++) {
        DK_CHECK(seen[i] >= 1);
        total += seen[i];
    }
    DK_CHECK_EQ_INT(total, 12);
    /* Without shuffling: strided shards of 0..n-1; drop_last. */
    dk_sampler_config c;
    dk_sampler_config_init(&c);
    c.n = 7;
    c.batch_size = 2;
    c.rank = 1;
    c.world_size = 2;
    c.shuffle = 0;
    c.drop_last = 1;
    dk_sampler *s;
    DK_CHECK_OK(dk_sampler_create(&c, &s));
    int64_t idx[2];
    DK_CHECK_EQ_INT(dk_sampler_next(s, idx, NULL), 2);
    DK_CHECK_EQ_INT(idx[0], 1);
    DK_CHECK_EQ_INT(idx[1], 3);
    DK_CHECK_EQ_INT(dk_sampler_next(s, idx, NULL), 2);
    DK_CHECK_EQ_INT(idx[0], 5);
    DK_CHECK_EQ_INT(idx[1], 0);   /* padding wraps to the start */
    DK_CHECK_EQ_INT(dk_sampler_next(s, idx, NULL), DK_EOF);
    dk_sampler_destroy(s);
    c.rank = 2;
    DK_CHECK_STATUS(dk_sampler_create(&c, &s), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "rank 2");
    c.rank = 0;
    c.n = 0;
    DK_CHECK_STATUS(dk_sampler_create(&c, &s), DK_EINVAL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_sampler_sequence(void)
{
    int64_t first[5] = {0, 3, 7, 9, 14}, len[5] = {3, 4, 2, 5, 3};
    dk_sampler_config c;
    dk_sampler_config_init(&c);
    c.kind = DK_SAMPLER_SEQUENCE;
    c.n_scenes = 5;
    c.scene_first = first;
    c.scene_length = len;
    c.batch_size = 2;
    c.seed = 3;
    dk_sampler *s;
    DK_CHECK_OK(dk_sampler_create(&c, &s));
    DK_CHECK_EQ_INT(dk_sampler_batches_per_epoch(s), -1);
    int64_t prev[2] = {-1, -1}, idx[2];
    int visits[5] = {0};
    for (int t = 0; t < 40; t++) {
        int epoch;
        DK_CHECK_EQ_INT(dk_sampler_next(s, idx, &epoch), 2);
        DK_CHECK(idx[0] != idx[1]);
        for (int k = 0; k < 2; k++) {
            int sc = 0;
            while (sc < 4 && idx[k] >= first[sc + 1]) sc++;
            if (idx[k] == first[sc]) visits[sc]++;
            /* Within a scene the slot walks forward one sample at a time. */
            if (idx[k] != first[sc]) DK_CHECK_EQ_INT(idx[k], prev[k] + 1);
            prev[k] = idx[k];
        }
    }
    for (int k = 0; k < 5; k++) DK_CHECK(visits[k] >= 2);
    /* Deterministic for a seed. */
    dk_sampler *s2;
    DK_CHECK_OK(dk_sampler_create(&c, &s2));
    DK_CHECK_OK(dk_sampler_set_epoch(s, 0));
    for (int t = 0; t < 10; t++) {
        int64_t a[2], b[2];
        dk_sampler_next(s, a, NULL);
        dk_sampler_next(s2, b, NULL);
        DK_CHECK(!memcmp(a, b, sizeof a));
    }
    dk_sampler_destroy(s);
    dk_sampler_destroy(s2);
    /* Two ranks of two slots: at every step the four slots walk four scenes. */
    dk_sampler *r[2];
    for (int k = 0; k < 2; k++) {
        c.rank = k;
        c.world_size = 2;
        DK_CHECK_OK(dk_sampler_create(&c, &r[k]));
    }
    for (int t = 0; t < 30; t++) {
        int64_t a[2], b[2];
        dk_sampler_next(r[0], a, NULL);
        dk_sampler_next(r[1], b, NULL);
        int64_t all[4] = {a[0], a[1], b[0], b[1]};
        int sc[4];
        for (int k = 0; k < 4; k++) {
            sc[k] = 0;
            while (sc[k] < 4 && all[k] >= first[sc[k] + 1]) sc[k]++;
        }
        for (int i = 0; i < 4; i++)
            for (int j = i + 1; j < 4; j++) DK_CHECK(sc[i] != sc[j]);
    }
    dk_sampler_destroy(r[0]);
    dk_sampler_destroy(r[1]);
    c.rank = 0;
    c.world_size = 1;
    c.batch_size = 6;
    DK_CHECK_STATUS(dk_sampler_create(&c, &s), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "5 scenes for 6");
}

static void test_nusc_source(void)
{
    int64_t live = dk_alloc_live();
    dk_nusc *db;
    DK_CHECK_OK(dk_nusc_open(root(), NULL, &db));
    dk_nusc_source *src;
    DK_CHECK_OK(dk_nusc_source_create(db, DK_NUSC_SOURCE_POINTS, &src));
    const dk_group *fmt = dk_nusc_source_format(src);
    dk_sample x;
    memset(&x, 0, sizeof x);
    DK_CHECK_OK(dk_nusc_source_read(src, 3, &x));
    DK_CHECK_OK(dk_sample_check(&x, fmt));
    DK_CHECK_EQ_INT(x.index, 3);
    dk_nusc_sample smp;
    DK_CHECK_OK(dk_nusc_get_sample(db, 3, &smp));
    int id = dk_group_find(fmt, DK_GROUP_ROOT, "token");
    DK_CHECK(!memcmp(x.values[id].data, smp.token, strlen(smp.token)));
    id = dk_group_find(fmt, DK_GROUP_ROOT, "cams[4].lidar2img");
    const float *m = x.values[id].data;
    for (int k = 0; k < 16; k++) DK_CHECK_NEAR(m[k], smp.cams[4].lidar2img[k], 1e-3 * (1 + fabs(smp.cams[4].lidar2img[k])));
    id = dk_group_find(fmt, DK_GROUP_ROOT, "cams[0].filename");
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", root(), smp.cams[0].filename);
    DK_CHECK_EQ_INT(x.values[id].shape[0], (int64_t)strlen(path));
    DK_CHECK(!memcmp(x.values[id].data, path, strlen(path)));
    id = dk_group_find(fmt, DK_GROUP_ROOT, "gt_bboxes_3d");
    DK_CHECK_EQ_INT(x.values[id].shape[0], smp.n_boxes);
    DK_CHECK_EQ_INT(x.values[id].shape[1], 9);
    id = dk_group_find(fmt, DK_GROUP_ROOT, "points");
    DK_CHECK(x.values[id].shape[0] > 1000);
    DK_CHECK_STATUS(dk_nusc_source_read(src, 1000, &x), DK_ERANGE);
    dk_sample_free(&x);
    dk_nusc_source_destroy(src);
    dk_nusc_close(db);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* A synthetic dataset for the loader: sample i has a[i % 3 + 1] (ragged),
 * cams[2].v (2) and fails when i is 7. */
static dk_group *loader_format(void)
{
    dk_group *g, *cam;
    dk_group_create(&g);
    dk_group_add_tensor(g, DK_GROUP_ROOT, "a", DK_F32, 1);
    dk_group_create(&cam);
    dk_group_add_tensor(cam, DK_GROUP_ROOT, "v", DK_F32, 1);
    dk_group_add_array(g, DK_GROUP_ROOT, "cams", cam, DK_GROUP_ROOT, 2);
    dk_group_destroy(cam);
    return g;
}

static int loader_read(void *user, int64_t index, dk_sample *x, char *what, size_t cap)
{
    const dk_group *g = user;
    snprintf(what, cap, "tok%lld", (long long)index);
    if (index == 7) return dk__error(DK_EINVALIDDATA, "read", "sample tok7: corrupt image x.jpg");
    int st = dk_sample_init(x, dk_group_id_limit(g));
    if (st) return st;
    float a[3] = {(float)index, (float)index + 0.5f, (float)index + 0.25f};
    int64_t na = index % 3 + 1, two = 2;
    dk_sample_set_copy(x, dk_group_find(g, DK_GROUP_ROOT, "a"), DK_F32, 1, &na, a);
    for (int c = 0; c < 2; c++) {
        char p[32];
        snprintf(p, sizeof p, "cams[%d].v", c);
        float v[2] = {(float)index, (float)c};
        dk_sample_set_copy(x, dk_group_find(g, DK_GROUP_ROOT, p), DK_F32, 1, &two, v);
    }
    return DK_OK;
}

static void run_loader(int threads, dk_loader_policy policy, int64_t *sum_out, int *batches_out,
                       int *eof_status)
{
    dk_group *g = loader_format();
    dk_pipeline *p;
    dk_pipeline_create(g, NULL, &p);
    dk_pipeline_add(p, draw_step("a"));
    dk_sampler_config sc;
    dk_sampler_config_init(&sc);
    sc.n = 10;
    sc.batch_size = 4;
    sc.seed = 5;
    dk_sampler *smp;
    dk_sampler_create(&sc, &smp);
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = threads;
    dk_pool *pool;
    dk_pool_create(&pc, &pool);
    dk_loader_config lc;
    dk_loader_config_init(&lc);
    lc.read = loader_read;
    lc.read_user = g;
    lc.pipeline = p;
    lc.sampler = smp;
    lc.pool = pool;
    lc.policy = policy;
    dk_loader *l;
    DK_CHECK_OK(dk_loader_create(&lc, &l));
    int64_t sum = 0;
    int batches = 0, st;
    dk_batch b;
    while ((st = dk_loader_next(l, &b)) == DK_OK) {
        batches++;
        int ia = dk_batch_find(&b, "a"), iv = dk_batch_find(&b, "cams.v");
        int ir = dk_batch_find(&b, "a_r");
        DK_CHECK(ia >= 0 && iv >= 0 && ir >= 0);
        DK_CHECK_EQ_INT(b.n_fields, 3);
        /* cams.v stacks to (B, 2, 2); a is ragged with sizes i % 3 + 1. */
        const dk_batch_field *fv = &b.fields[iv], *fa = &b.fields[ia];
        DK_CHECK(!fv->ragged);
        DK_CHECK_EQ_INT(fv->data.ndim, 3);
        DK_CHECK_EQ_INT(fv->data.shape[0], b.n_samples);
        DK_CHECK_EQ_INT(fv->data.shape[1], 2);
        DK_CHECK(fa->ragged);
        int64_t rows = 0;
        for (int k = 0; k < b.n_samples; k++) {
            const float *v = (const float *)fv->data.data + k * 4;
            DK_CHECK_NEAR(v[0], (float)b.indices[k], 0);
            DK_CHECK_NEAR(v[3], 1.0f, 0);
            int64_t sz = ((const int64_t *)fa->sizes.data)[k];
            DK_CHECK_EQ_INT(sz, b.indices[k] % 3 + 1);
            DK_CHECK_NEAR(((const float *)fa->data.data)[rows], (float)b.indices[k], 0);
            rows += sz;
            sum += b.indices[k];
            DK_CHECK(b.indices[k] != 7);
        }
        DK_CHECK_EQ_INT(fa->data.shape[0], rows);
        DK_CHECK(((uintptr_t)fa->data.data & 63) == 0);
        dk_batch_free(&b);
    }
    *eof_status = st;
    *sum_out = sum;
    *batches_out = batches;
    dk_loader_stats ls;
    dk_loader_get_stats(l, &ls);
    if (policy == DK_LOADER_SKIP) {
        DK_CHECK_EQ_INT(ls.skipped, 1);
        DK_CHECK_CONTAINS(ls.last_skipped, "tok7");
    }
    dk_loader_destroy(l);
    dk_pool_destroy(pool);
    dk_sampler_destroy(smp);
    dk_pipeline_destroy(p);
    dk_group_destroy(g);
}

static void test_loader(void)
{
    int64_t live = dk_alloc_live();
    int64_t sum1, sum2;
    int b1, b2, st1, st2;
    run_loader(1, DK_LOADER_SKIP, &sum1, &b1, &st1);
    run_loader(3, DK_LOADER_SKIP, &sum2, &b2, &st2);
    DK_CHECK_EQ_INT(st1, DK_EOF);
    DK_CHECK_EQ_INT(st2, DK_EOF);
    DK_CHECK_EQ_INT(b1, 3);
    DK_CHECK_EQ_INT(b2, 3);
    DK_CHECK_EQ_INT(sum1, 45 - 7);
    DK_CHECK_EQ_INT(sum2, 45 - 7);
    /* Raise: the epoch stops at the bad sample's batch with its message. */
    run_loader(2, DK_LOADER_RAISE, &sum1, &b1, &st1);
    DK_CHECK_EQ_INT(st1, DK_EINVALIDDATA);
    DK_CHECK(b1 < 3);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}


/* Regressions: hostile configurations fail cleanly. */
static void test_bad_configs_fail_cleanly(void)
{
    int64_t live = dk_alloc_live();
    /* A per-element step whose binding fails on the second element. */
    dk_group *g, *cam;
    DK_CHECK_OK(dk_group_create(&g));
    DK_CHECK_OK(dk_group_create(&cam));
    DK_CHECK(dk_group_add_tensor(cam, DK_GROUP_ROOT, "c", DK_F32, 1) > 0);
    int arr = dk_group_add_array(g, DK_GROUP_ROOT, "cams", cam, DK_GROUP_ROOT, 3);
    DK_CHECK(arr > 0);
    DK_CHECK_OK(dk_group_remove(g, dk_group_find(g, DK_GROUP_ROOT, "cams[1].c")));
    dk_pipeline *p;
    DK_CHECK_OK(dk_pipeline_create(g, NULL, &p));
    dk_step *pe;
    DK_CHECK_OK(dk_step_per_element(draw_step("c"), "cams", &pe));
    DK_CHECK_STATUS(dk_pipeline_add(p, pe), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "step 0");
    /* JSON: wrappers of the wrong type, bad sizes, unknown keys, named index. */
    const char *js = "[{\"step\": \"pad\", \"multiple\": 32, \"at\": 7}]";
    DK_CHECK_STATUS(dk_pipeline_add_json(p, js, strlen(js)), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "at");
    js = "[{\"step\": \"normalize\", \"per_element\": 5}]";
    DK_CHECK_STATUS(dk_pipeline_add_json(p, js, strlen(js)), DK_EINVALIDDATA);
    js = "[{\"step\": \"affine\", \"size\": [1e10, 256]}]";
    DK_CHECK_STATUS(dk_pipeline_add_json(p, js, strlen(js)), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "steps[0]");
    js = "[{\"step\": \"pad_to_uniform\", \"names\": [\"c\"]}]";
    DK_CHECK(dk_pipeline_add_json(p, js, strlen(js)) != DK_OK);
    DK_CHECK_CONTAINS(dk_errmsg(), "capacity");
    /* A preset whose first step cannot bind keeps its message. */
    DK_CHECK(dk_pipeline_add_preset(p, "streampetr", "jpeg") != DK_OK);
    DK_CHECK(dk_errmsg()[0] != 0);
    DK_CHECK_STATUS(dk_pipeline_add_preset(p, "nope", "jpeg"), DK_EINVAL);
    DK_CHECK_STATUS(dk_pipeline_add_preset(p, "decode", "mp3"), DK_EINVAL);
    dk_pipeline_destroy(p);
    dk_group_destroy(cam);
    dk_group_destroy(g);
    /* Samplers: sizes that would overflow, drop_last without a whole batch. */
    dk_sampler_config sc;
    dk_sampler_config_init(&sc);
    dk_sampler *smp;
    sc.n = ((int64_t)1 << 61) + 1;
    DK_CHECK_STATUS(dk_sampler_create(&sc, &smp), DK_EINVAL);
    sc.n = 10;
    sc.batch_size = 65536;
    sc.world_size = 65536;
    DK_CHECK_STATUS(dk_sampler_create(&sc, &smp), DK_EINVAL);
    sc.batch_size = 4;
    sc.world_size = 1;
    sc.n = 3;
    sc.drop_last = 1;
    DK_CHECK_STATUS(dk_sampler_create(&sc, &smp), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "drop_last");
    sc.kind = DK_SAMPLER_SEQUENCE;
    sc.n_scenes = 5;
    DK_CHECK_STATUS(dk_sampler_create(&sc, &smp), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "scene_first");
    /* Group paths with a name longer than any field name. */
    DK_CHECK_OK(dk_group_create(&g));
    char longpath[200];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = 0;
    DK_CHECK_STATUS(dk_group_find(g, DK_GROUP_ROOT, longpath), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "too long");
    dk_group_destroy(g);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* A loader under SKIP whose every sample fails stops with an error instead of
 * looping, also with a sampler that never ends. */
static int always_fail(void *user, int64_t index, dk_sample *x, char *what, size_t cap)
{
    (void)user;
    (void)x;
    snprintf(what, cap, "tok%lld", (long long)index);
    return dk__error(DK_EINVALIDDATA, "read", "tok%lld: missing image", (long long)index);
}

static void test_loader_all_bad_stops(void)
{
    dk_group *g = loader_format();
    dk_pipeline *p;
    DK_CHECK_OK(dk_pipeline_create(g, NULL, &p));
    int64_t first[2] = {0, 5}, len[2] = {5, 5};
    dk_sampler_config sc;
    dk_sampler_config_init(&sc);
    sc.kind = DK_SAMPLER_SEQUENCE;
    sc.n_scenes = 2;
    sc.scene_first = first;
    sc.scene_length = len;
    sc.batch_size = 2;
    dk_sampler *smp;
    DK_CHECK_OK(dk_sampler_create(&sc, &smp));
    dk_loader_config lc;
    dk_loader_config_init(&lc);
    lc.read = always_fail;
    lc.read_user = g;
    lc.pipeline = p;
    lc.sampler = smp;
    lc.policy = DK_LOADER_SKIP;
    dk_loader *l;
    DK_CHECK_OK(dk_loader_create(&lc, &l));
    dk_batch b;
    DK_CHECK_STATUS(dk_loader_next(l, &b), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "missing image");
    /* A pipeline changed after the loader was made is refused. */
    DK_CHECK_OK(dk_pipeline_add(p, draw_step("a")));
    DK_CHECK_STATUS(dk_loader_next(l, &b), DK_ESTATE);
    dk_loader_destroy(l);
    dk_sampler_destroy(smp);
    dk_pipeline_destroy(p);
    dk_group_destroy(g);
}

extern const dk_test_case dk_tests_data_image[];
extern const size_t dk_tests_data_image_count;
extern const dk_test_case dk_tests_data_3d[];
extern const size_t dk_tests_data_3d_count;

int main(int argc, char **argv)
{
    static const dk_test_case cases[] = {
        DK_TEST(test_names),
        DK_TEST(test_open_structure),
        DK_TEST(test_camera_geometry),
        DK_TEST(test_boxes),
        DK_TEST(test_video_frames),
        DK_TEST(test_points_errors),
        DK_TEST(test_table_errors),
        DK_TEST(test_no_video),
        DK_TEST(test_group_format),
        DK_TEST(test_sample_values),
        DK_TEST(test_pipeline_binding_and_draws),
        DK_TEST(test_sampler_shuffled),
        DK_TEST(test_sampler_sequence),
        DK_TEST(test_nusc_source),
        DK_TEST(test_loader),
        DK_TEST(test_bad_configs_fail_cleanly),
        DK_TEST(test_loader_all_bad_stops),
    };
    const dk_test_case *parts[] = {cases, dk_tests_data_image, dk_tests_data_3d};
    size_t counts[] = {sizeof cases / sizeof cases[0], dk_tests_data_image_count,
                       dk_tests_data_3d_count};
    size_t total = counts[0] + counts[1] + counts[2], at = 0;
    dk_test_case *all = malloc((total + 1) * sizeof *all);
    if (!all) return 1;
    for (size_t i = 0; i < 3; i++) {
        if (counts[i]) memcpy(all + at, parts[i], counts[i] * sizeof *all);
        at += counts[i];
    }
    int rc = dk_test_main(argc, argv, all, total);
    free(all);
    if (g_root[0]) rm_tree(g_root);
    return rc;
}
