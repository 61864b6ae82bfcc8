/*
 * Fuzz harness for the nuScenes reader (dk_nusc_open) and the sample source.
 *
 * The input holds the 13 tables of a nuScenes v1.0 folder, in the order of
 * `tables` below, separated by lines "====" ("\n====\n"); missing tables are
 * written as "[]". They are written to a private folder and opened.
 *  - A failure must be DK_EINVALIDDATA, DK_ENOENT or DK_ENOMEM with a message.
 *  - On success every sample is read back: indices, prev/next links and scene
 *    ranges must agree, matrices and boxes must be finite, box counts must
 *    match, every string must be non-NULL; the sample source must fill a
 *    sample that passes dk_sample_check.
 * drivekit's live-allocation counter must be back where it started.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drivekit/drivekit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) __builtin_trap();                                               \
    } while (0)

static const char *const tables[] = {
    "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
    "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility",
};
#define N_TABLES (sizeof tables / sizeof tables[0])

static char g_root[256];

static const char *root_dir(void)
{
    if (!g_root[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(g_root, sizeof g_root, "%s/dk_fuzz_nusc_XXXXXX", tmp && *tmp ? tmp : "/tmp");
        CHECK(mkdtemp(g_root) != NULL);
        char path[320];
        snprintf(path, sizeof path, "%s/v1.0-fuzz", g_root);
        CHECK(mkdir(path, 0700) == 0);
    }
    return g_root;
}

static void write_table(const char *name, const uint8_t *p, size_t n)
{
    char path[400];
    snprintf(path, sizeof path, "%s/v1.0-fuzz/%s.json", root_dir(), name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (n) CHECK(fwrite(p, 1, n, f) == n);
    fclose(f);
}

static int finite_pose(const dk_pose *p)
{
    for (int k = 0; k < 4; k++)
        if (!isfinite(p->q[k])) return 0;
    for (int k = 0; k < 3; k++)
        if (!isfinite(p->t[k])) return 0;
    return 1;
}

static void check_db(const dk_nusc *db)
{
    int64_t n = dk_nusc_num_samples(db);
    int scenes = dk_nusc_num_scenes(db);
    int64_t covered = 0;
    for (int i = 0; i < scenes; i++) {
        dk_nusc_scene sc;
        CHECK(dk_nusc_get_scene(db, i, &sc) == DK_OK);
        CHECK(sc.token && sc.name);
        CHECK(sc.first_sample == covered && sc.n_samples >= 0);
        covered += sc.n_samples;
    }
    CHECK(covered == n);
    for (int64_t i = 0; i < n; i++) {
        dk_nusc_sample s;
        CHECK(dk_nusc_get_sample(db, i, &s) == DK_OK);
        CHECK(s.token && s.scene_token && s.lidar_filename && s.lidar_token);
        CHECK(dk_nusc_find_sample(db, s.token) == i);
        CHECK(s.prev == -1 || (s.prev == i - 1));
        CHECK(s.next == -1 || (s.next == i + 1));
        CHECK(finite_pose(&s.lidar2ego) && finite_pose(&s.ego2global));
        for (int c = 0; c < DK_NUSC_NUM_CAMS; c++) {
            const dk_nusc_cam *cam = &s.cams[c];
            CHECK(cam->filename && cam->token && cam->channel);
            CHECK((cam->video == NULL) == (cam->video_frame < 0));
        }
        const dk_nusc_box *b;
        int64_t nb = dk_nusc_get_boxes(db, i, &b);
        CHECK(nb == s.n_boxes);
        for (int64_t k = 0; k < nb; k++) {
            CHECK(b[k].token && b[k].category);
            CHECK(b[k].label >= -1 && b[k].label < DK_NUSC_NUM_CLASSES);
            CHECK(b[k].visibility >= 0 && b[k].visibility <= 4);
        }
    }
    /* The sample source over the first samples. */
    dk_nusc_source *src;
    int st = dk_nusc_source_create(db, 0, &src);
    CHECK(st == DK_OK || st == DK_ENOMEM);
    if (st) return;
    for (int64_t i = 0; i < n && i < 4; i++) {
        dk_sample x;
        memset(&x, 0, sizeof x);
        st = dk_nusc_source_read(src, i, &x);
        CHECK(st == DK_OK || st == DK_ENOMEM || st == DK_EINVAL);
        if (!st) CHECK(dk_sample_check(&x, dk_nusc_source_format(src)) == DK_OK);
        dk_sample_free(&x);
    }
    dk_nusc_source_destroy(src);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t live = dk_alloc_live();
    static const char sep[] = "\n====\n";
    size_t at = 0;
    for (size_t t = 0; t < N_TABLES; t++) {
        if (at > size) at = size;
        const uint8_t *p = data + at;
        size_t left = size - at, len = left;
        for (size_t k = 0; k + sizeof sep - 1 <= left; k++)
            if (!memcmp(p + k, sep, sizeof sep - 1)) {
                len = k;
                break;
            }
        if (at >= size && t > 0)
            write_table(tables[t], (const uint8_t *)"[]", 2);
        else
            write_table(tables[t], p, len);
        at += len + sizeof sep - 1;
    }
    dk_nusc *db = NULL;
    int st = dk_nusc_open(root_dir(), NULL, &db);
    if (st) {
        CHECK(db == NULL);
        CHECK(st == DK_EINVALIDDATA || st == DK_ENOENT || st == DK_ENOMEM);
        CHECK(dk_errmsg()[0] != 0);
    } else {
        check_db(db);
        dk_nusc_close(db);
    }
    CHECK(dk_alloc_live() == live);
    return 0;
}
