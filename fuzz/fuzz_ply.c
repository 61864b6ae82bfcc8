/*
 * Fuzz harness for the 3DGS PLY reader (dk_scene_load_ply_memory).
 *
 * 1. Loads the input with the default flags; a failure must carry a documented
 *    status and a message naming the document. A success must validate, save
 *    and re-load bit-identically (save -> load -> save gives the same bytes).
 * 2. Loads again with DK_PLY_ALLOW_INVALID and renders small scenes (non-finite
 *    values included) through a pinhole and a fisheye camera: the images must
 *    stay finite with alpha in [0, 1].
 * drivekit's live-allocation counter must be back where it started.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drivekit/sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) __builtin_trap();                                               \
    } while (0)

#define DOC_NAME "fuzz.ply"
#define W 24
#define H 20

static float rgb[W * H * 3], alpha[W * H], depth[W * H];

static void render_check(const dk_scene *s)
{
    dk_camera cams[2];
    dk_camera_init_pinhole(&cams[0], W, H, 20, 20, 12, 10);
    dk_camera_init_fisheye(&cams[1], W, H, 10, 10, 12, 10, NULL, 0);
    dk_pose pose = dk_pose_identity();
    pose.t[2] = -2;
    dk_render_config rc;
    dk_render_config_init(&rc);
    for (int c = 0; c < 2; c++) {
        CHECK(dk_render_camera(s, &cams[c], &pose, &rc, NULL, rgb, alpha, depth) == DK_OK);
        for (int p = 0; p < W * H; p++) {
            CHECK(alpha[p] >= 0.0f && alpha[p] <= 1.0f);
            CHECK(isfinite(rgb[p * 3]) && isfinite(rgb[p * 3 + 1]) && isfinite(rgb[p * 3 + 2]));
            CHECK(isfinite(depth[p]));
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t live0 = dk_alloc_live();
    dk_scene *s = NULL;
    int st = dk_scene_load_ply_memory(data, size, DOC_NAME, 0, &s);
    if (st != DK_OK) {
        CHECK(s == NULL);
        CHECK(st == DK_EINVALIDDATA || st == DK_EUNSUPPORTED || st == DK_ENOMEM);
        CHECK(strstr(dk_errmsg(), DOC_NAME) != NULL);
    } else {
        CHECK(dk_scene_validate(s) == DK_OK);
        uint8_t *b1 = NULL, *b2 = NULL;
        size_t n1 = 0, n2 = 0;
        CHECK(dk_scene_save_ply_memory(s, &b1, &n1) == DK_OK);
        dk_scene *t = NULL;
        CHECK(dk_scene_load_ply_memory(b1, n1, DOC_NAME, 0, &t) == DK_OK);
        CHECK(t->n == s->n && t->sh_degree == s->sh_degree);
        CHECK(memcmp(t->means, s->means, (size_t)s->n * 12) == 0);
        CHECK(memcmp(t->sh, s->sh, (size_t)s->n * 12 * (size_t)s->sh_coeffs) == 0);
        CHECK(dk_scene_save_ply_memory(t, &b2, &n2) == DK_OK);
        CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
        dk_free(b1);
        dk_free(b2);
        dk_scene_destroy(t);
        dk_scene_destroy(s);
        s = NULL;
    }
    st = dk_scene_load_ply_memory(data, size, DOC_NAME, DK_PLY_ALLOW_INVALID, &s);
    if (st == DK_OK) {
        if (s->n <= 256) render_check(s);
        dk_scene_destroy(s);
    }
    CHECK(dk_alloc_live() == live0);
    return 0;
}
