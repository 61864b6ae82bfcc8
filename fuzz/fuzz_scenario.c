/*
 * Fuzz harness for scenario JSON (dk_scenario_parse) and what consumes a
 * parsed scenario.
 *
 * 1. Parses the input. A failure must be DK_EINVALIDDATA, DK_EUNSUPPORTED or
 *    DK_ENOMEM, leave *out NULL and name the document in the message.
 * 2. A parsed scenario must validate; its copy must equal it; interpolation
 *    of every actor at a few times must return finite states; the collision
 *    checker runs on it (with a step that keeps the work bounded).
 * 3. Round trip: save to a scratch file, load, save again; both files must be
 *    byte-identical (doubles round-trip exactly).
 * 4. Small scenarios also get one corner-case edit (chosen by the input's
 *    first byte): it either fails with a documented status, leaving the
 *    scenario unchanged, or leaves a valid scenario.
 * drivekit's live-allocation counter must be back where it started.
 *
 * Checks use __builtin_trap() so the standalone driver and libFuzzer both see
 * a crash.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drivekit/world.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) __builtin_trap();                                               \
    } while (0)

#define DOC_NAME "fuzz.json"

static char scratch[2][512];

static void scratch_paths(void)
{
    if (scratch[0][0]) return;
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    for (int i = 0; i < 2; i++)
        snprintf(scratch[i], sizeof scratch[i], "%s/fuzz_scenario_%d_%d.json", dir, (int)getpid(),
                 i);
}

static int same_bytes(const char *a, const char *b)
{
    uint8_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int ok = dk_file_read(a, &x, &nx) == DK_OK && dk_file_read(b, &y, &ny) == DK_OK &&
             nx == ny && memcmp(x, y, nx) == 0;
    dk_free(x);
    dk_free(y);
    return ok;
}

static void check_scenario(const dk_scenario *s, uint8_t choice)
{
    CHECK(dk_scenario_validate(s) == DK_OK);

    dk_scenario *c = NULL;
    CHECK(dk_scenario_clone(s, &c) == DK_OK);
    CHECK(c->n_actors == s->n_actors && c->n_map == s->n_map && c->n_edits == s->n_edits);
    CHECK(c->ego.n_states == s->ego.n_states);
    for (int32_t i = 0; i < s->n_actors; i++) {
        const dk_actor *a = &s->actors[i];
        CHECK(c->actors[i].n_states == a->n_states);
        CHECK(memcmp(c->actors[i].states, a->states, (size_t)a->n_states * sizeof *a->states) == 0);
        double t0 = a->states[0].t, t1 = a->states[a->n_states - 1].t;
        for (int k = 0; k <= 4; k++) {
            double t = k == 4 ? t1 : t0 + (t1 - t0) * k / 4;
            dk_actor_state st;
            double v[3];
            if (!isfinite(t)) continue;
            t = fmin(fmax(t, t0), t1);
            CHECK(dk_actor_state_at(a, t, &st, v) == 1);
            /* Sums of finite numbers may overflow to inf, never to NaN. */
            CHECK(!isnan(st.x) && !isnan(st.y) && !isnan(st.z) && !isnan(st.yaw));
        }
        dk_actor_state st;
        CHECK(dk_actor_state_at(a, t1 + fabs(t1) * 1e-3 + 1, &st, NULL) == 0);
    }
    dk_pose e = dk_scenario_ego_pose(s, s->duration / 2);
    (void)e;

    /* Collisions on a coarse grid: at most ~50 steps. */
    double dt = s->duration > 5 ? s->duration / 50 : 0.1;
    if (s->n_actors <= 2000) {
        dk_collision col[4];
        int n = -1;
        CHECK(dk_scenario_collisions(s, dt, col, 4, &n) == DK_OK);
        CHECK(n >= 0);
        for (int i = 0; i < n && i < 4; i++) CHECK(col[i].a < col[i].b);
    }

    /* Round trip through files. */
    scratch_paths();
    if (dk_scenario_save(s, scratch[0]) == DK_OK) {
        dk_scenario *l = NULL;
        CHECK(dk_scenario_load(scratch[0], &l) == DK_OK);
        CHECK(l->n_actors == s->n_actors && l->n_map == s->n_map);
        CHECK(l->duration == s->duration && l->seed == s->seed);
        CHECK(dk_scenario_save(l, scratch[1]) == DK_OK);
        CHECK(same_bytes(scratch[0], scratch[1]));
        dk_scenario_destroy(l);
    }

    /* One edit on small scenarios. */
    if (s->duration <= 60 && s->n_actors <= 200 && s->ego.n_states <= 20000) {
        int32_t n_actors = c->n_actors, n_edits = c->n_edits;
        dk_edit_params p;
        dk_edit_params_init(&p);
        p.strength = (choice >> 3) / 31.0;
        p.seed = choice;
        dk_edit_record rec;
        int st = dk_world_edit(c, (dk_edit_kind)(choice % DK_EDIT_COUNT), &p, &rec);
        if (st == DK_OK) {
            CHECK(dk_scenario_validate(c) == DK_OK);
            CHECK(c->n_edits == n_edits + 1);
            CHECK(dk_scenario_find_actor(c, rec.actor_id) >= 0);
        } else {
            CHECK(st == DK_ENOENT || st == DK_EINVAL || st == DK_ENOMEM);
            CHECK(c->n_actors == n_actors && c->n_edits == n_edits);
        }
    }
    dk_scenario_destroy(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = (dk_scenario *)1;
    int st = dk_scenario_parse((const char *)data, size, DOC_NAME, &s);
    if (st != DK_OK) {
        CHECK(s == NULL);
        CHECK(st == DK_EINVALIDDATA || st == DK_EUNSUPPORTED || st == DK_ENOMEM);
        CHECK(strstr(dk_errmsg(), DOC_NAME) != NULL);
    } else {
        CHECK(s != NULL);
        check_scenario(s, size ? data[0] : 0);
        dk_scenario_destroy(s);
    }
    CHECK(dk_alloc_live() == live0);
    return 0;
}
