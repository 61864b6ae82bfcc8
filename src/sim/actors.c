/* Actor tracks of a Gaussian scene: rigid poses over time, interpolated. */
#include <math.h>
#include <string.h>

#include "drivekit/sim.h"
#include "internal.h"
#include "sim_impl.h"

typedef struct track {
    int32_t id;
    int n;
    double *times;
    dk_pose *poses;
} track;

struct dk_scene_actors {
    int n, cap;
    track *t;   /* sorted by id */
};

static void track_free(track *t)
{
    dk_free(t->times);
    dk_free(t->poses);
}

void dk__scene_actors_free(struct dk_scene_actors *a)
{
    if (!a) return;
    for (int i = 0; i < a->n; i++) track_free(&a->t[i]);
    dk_free(a->t);
    dk_free(a);
}

/* Index of id in the sorted array, or -(insertion point) - 1. */
static int find(const struct dk_scene_actors *a, int32_t id)
{
    int lo = 0, hi = a ? a->n : 0;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (a->t[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (a && lo < a->n && a->t[lo].id == id) return lo;
    return -lo - 1;
}

int dk_scene_set_actor_track(dk_scene *s, int32_t actor_id, int n, const double *times,
                             const dk_pose *poses)
{
    if (!s || !times || !poses)
        return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (actor_id < 0) return dk__error(DK_EINVAL, __func__, "actor_id %d < 0", (int)actor_id);
    if (n < 1) return dk__error(DK_EINVAL, __func__, "actor %d: n = %d < 1", (int)actor_id, n);
    for (int k = 0; k < n; k++) {
        if (!isfinite(times[k]))
            return dk__error(DK_EINVALIDDATA, __func__, "actor %d: keyframe %d: time is not finite",
                             (int)actor_id, k);
        if (k > 0 && !(times[k] > times[k - 1]))
            return dk__error(DK_EINVALIDDATA, __func__,
                             "actor %d: keyframe %d: time %.9g is not after %.9g", (int)actor_id,
                             k, times[k], times[k - 1]);
        const dk_pose *p = &poses[k];
        double nn = 0;
        int finite = 1;
        for (int j = 0; j < 4; j++) {
            nn += p->q[j] * p->q[j];
            finite &= isfinite(p->q[j]) != 0;
        }
        for (int j = 0; j < 3; j++) finite &= isfinite(p->t[j]) != 0;
        if (!finite)
            return dk__error(DK_EINVALIDDATA, __func__,
                             "actor %d: keyframe %d: pose has non-finite values", (int)actor_id, k);
        if (fabs(sqrt(nn) - 1.0) > 1e-6)
            return dk__error(DK_EINVALIDDATA, __func__,
                             "actor %d: keyframe %d: quaternion norm %.9g is not 1 (not a "
                             "rigid pose)",
                             (int)actor_id, k, sqrt(nn));
    }
    track nt = { actor_id, n, dk_malloc((size_t)n * sizeof(double)),
                 dk_malloc((size_t)n * sizeof(dk_pose)) };
    if (!nt.times || !nt.poses) {
        track_free(&nt);
        return dk__error(DK_ENOMEM, __func__, "out of memory for %d keyframes", n);
    }
    memcpy(nt.times, times, (size_t)n * sizeof(double));
    for (int k = 0; k < n; k++) {
        nt.poses[k] = poses[k];
        double nn = sqrt(poses[k].q[0] * poses[k].q[0] + poses[k].q[1] * poses[k].q[1] +
                         poses[k].q[2] * poses[k].q[2] + poses[k].q[3] * poses[k].q[3]);
        for (int j = 0; j < 4; j++) nt.poses[k].q[j] /= nn;
    }
    if (!s->actors) {
        s->actors = dk_calloc(1, sizeof *s->actors);
        if (!s->actors) {
            track_free(&nt);
            return dk__error(DK_ENOMEM, __func__, "out of memory");
        }
    }
    struct dk_scene_actors *a = s->actors;
    int at = find(a, actor_id);
    if (at >= 0) {
        track_free(&a->t[at]);
        a->t[at] = nt;
        return DK_OK;
    }
    at = -at - 1;
    if (a->n >= DK_SCENE_MAX_ACTORS) {
        track_free(&nt);
        return dk__error(DK_ERANGE, __func__, "more than %d actor tracks", DK_SCENE_MAX_ACTORS);
    }
    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 8;
        track *t = dk_realloc(a->t, (size_t)cap * sizeof *t);
        if (!t) {
            track_free(&nt);
            return dk__error(DK_ENOMEM, __func__, "out of memory");
        }
        a->t = t;
        a->cap = cap;
    }
    memmove(&a->t[at + 1], &a->t[at], (size_t)(a->n - at) * sizeof *a->t);
    a->t[at] = nt;
    a->n++;
    return DK_OK;
}

int dk_scene_remove_actor_track(dk_scene *s, int32_t actor_id)
{
    if (!s) return dk__error(DK_EINVAL, __func__, "NULL scene");
    int at = find(s->actors, actor_id);
    if (at < 0) return dk__error(DK_ENOENT, __func__, "actor %d has no track", (int)actor_id);
    struct dk_scene_actors *a = s->actors;
    track_free(&a->t[at]);
    memmove(&a->t[at], &a->t[at + 1], (size_t)(a->n - at - 1) * sizeof *a->t);
    a->n--;
    return DK_OK;
}

static dk_pose track_pose(const track *tr, double t)
{
    if (t <= tr->times[0]) return tr->poses[0];
    if (t >= tr->times[tr->n - 1]) return tr->poses[tr->n - 1];
    int lo = 0, hi = tr->n - 1;   /* times[lo] < t < times[hi] */
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (tr->times[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    double u = (t - tr->times[lo]) / (tr->times[hi] - tr->times[lo]);
    return dk_pose_interpolate(&tr->poses[lo], &tr->poses[hi], u);
}

int dk_scene_actor_pose(const dk_scene *s, int32_t actor_id, double t, dk_pose *out)
{
    if (!s || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    *out = dk_pose_identity();
    if (!isfinite(t)) return dk__error(DK_EINVAL, __func__, "time is not finite");
    int at = find(s->actors, actor_id);
    if (at < 0) return dk__error(DK_ENOENT, __func__, "actor %d has no track", (int)actor_id);
    *out = track_pose(&s->actors->t[at], t);
    return DK_OK;
}

int dk_scene_actor_track_count(const dk_scene *s)
{
    return s && s->actors ? s->actors->n : 0;
}

int dk_scene_actor_track_ids(const dk_scene *s, int32_t *ids, int cap)
{
    int n = dk_scene_actor_track_count(s);
    for (int i = 0; i < n && i < cap && ids; i++) ids[i] = s->actors->t[i].id;
    return n;
}

int dk_scene_actor_track(const dk_scene *s, int32_t actor_id, int *n, const double **times,
                         const dk_pose **poses)
{
    if (!s || !n || !times || !poses) return dk__error(DK_EINVAL, __func__, "NULL argument");
    int at = find(s->actors, actor_id);
    if (at < 0) return dk__error(DK_ENOENT, __func__, "actor %d has no track", (int)actor_id);
    *n = s->actors->t[at].n;
    *times = s->actors->t[at].times;
    *poses = s->actors->t[at].poses;
    return DK_OK;
}

int dk__scene_actor_poses(const dk_scene *s, double t, dk__actor_poses *out)
{
    memset(out, 0, sizeof *out);
    int n = dk_scene_actor_track_count(s);
    if (n == 0) return DK_OK;
    out->ids = dk_malloc((size_t)n * sizeof(int32_t));
    out->poses = dk_malloc((size_t)n * sizeof(dk_pose));
    if (!out->ids || !out->poses) {
        dk__actor_poses_free(out);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        out->ids[i] = s->actors->t[i].id;
        out->poses[i] = track_pose(&s->actors->t[i], t);
    }
    out->n = n;
    return DK_OK;
}

const dk_pose *dk__actor_poses_find(const dk__actor_poses *a, int32_t id)
{
    int lo = 0, hi = a->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (a->ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < a->n && a->ids[lo] == id ? &a->poses[lo] : NULL;
}

void dk__actor_poses_free(dk__actor_poses *a)
{
    dk_free(a->ids);
    dk_free(a->poses);
    memset(a, 0, sizeof *a);
}

const dk_pose *dk__scene_track_pose_at(const dk_scene *s, int32_t id, double t, dk_pose *tmp)
{
    int at = find(s->actors, id);
    if (at < 0) return NULL;
    *tmp = track_pose(&s->actors->t[at], t);
    return tmp;
}
