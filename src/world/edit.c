/*
 * Corner-case edits: dk_world_edit.
 *
 * Every edit is planned in the frame of the ego's own (unedited) path: s is
 * the arc length along the ego's trajectory (extended straight beyond its
 * ends), d the lateral offset, positive to the left. The ego's lane and its
 * neighbours come from the map's lane centre lines near the ego at the
 * trigger time (lane width = their spacing, 3.5 m without a map; without
 * lane lines both sides count as lanes of the ego's direction). The edited
 * actor's motion is tabulated at 100 Hz in (s, d), sampled at 20 Hz into
 * world states, with yaw along the direction of motion. Each edit keeps a
 * minimum distance to the ego's unedited motion, so the conflict is a near
 * miss, never a collision:
 *
 *   cut-in           a vehicle of the adjacent lane of the ego's direction
 *                    (with one on each side, an even seed picks the left, an
 *                    odd one the right) overtakes,
 *                    then changes into the ego lane ahead of the ego over
 *                    4 - 1.5 strength s (quintic lateral profile), dv = 2
 *                    strength m/s slower than the ego; afterwards it pulls
 *                    away at +1 m/s² relative. Conflict: the gap to the ego
 *                    shrinks to g = 10 - 7 strength m (time headway well
 *                    below 1 s). An existing vehicle of that lane is reused
 *                    when it can join the plan 4, 6 or 8 s before the trigger
 *                    smoothly (|relative accel| <= 2.5 m/s²); otherwise a car
 *                    is added.
 *   hard-brake       the lead vehicle of the ego lane (one is added at a
 *                    safe gap when there is none, or it is too close) brakes
 *                    at a = -14 strength m/s² (clamped to [-10, -2]; jerk
 *                    limited over 0.3 s) towards a stop, holds 0.5 s and
 *                    drives off at +3 m/s². It stops fully when the gap
 *                    allows, otherwise it releases the brake at the lowest
 *                    speed that keeps the unedited ego g = 4 - 2.5 strength
 *                    m behind. Conflict: that minimum gap, with the smallest
 *                    time-to-collision of the approach (reported).
 *   jaywalk          a pedestrian (added) waits on the sidewalk right of the
 *                    ego, then at the trigger crosses the whole road
 *                    perpendicular to it at 1.3 + 0.9 strength m/s, away
 *                    from crosswalks, timed so it leaves the ego's path a
 *                    post-encroachment time of 1.5 - strength s before the
 *                    ego's front gets there. Conflict: that PET (it enters
 *                    the ego lane 2 - 3 s before the ego arrives). The start
 *                    moves by whole seconds when the crossing would touch a
 *                    crosswalk or the junction or not fit the scenario; in a
 *                    short scenario the pedestrian may be mid-road at t = 0.
 *   stopped-vehicle  a vehicle stands still in the ego lane: the lead
 *                    vehicle, which brakes at 2 + 2 strength m/s² after the
 *                    trigger, or else an added car standing there all along.
 *                    It stands where the unedited ego ends the scenario
 *                    g = 8 - 5 strength m behind it. Conflict: the ego
 *                    closes on a stopped vehicle; time-to-collision at the
 *                    end g / v_ego.
 *   wrong-way        an added car drives against the ego's direction in the
 *                    adjacent lane of the ego's direction at 6 + 6 strength
 *                    m/s, passing the ego 5 - 2 strength s after the trigger
 *                    (sooner if the scenario ends before).
 *                    Conflict: a head-on pass with the lateral clearance of
 *                    one lane width.
 *
 * Other actors (not the ego) whose footprints would come within about 0.3 m
 * of the edited actor are removed. The edit works on a copy, so a failing
 * edit leaves the scenario unchanged.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "world_impl.h"

#define TAB_DT 0.01
#define SAMPLE_HZ 20.0

void dk_edit_params_init(dk_edit_params *p)
{
    if (!p) return;
    p->t_trigger = -1;
    p->seed = 0;
    p->strength = 0.5;
}

static double lerp(double a, double b, double u)
{
    return a + (b - a) * u;
}

static double um(double v)
{
    return round(v * 1e6) / 1e6;
}

static double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* ------------------------------------------------------------------------ */
/* The ego path frame                                                        */

typedef struct epath {
    const dk_actor *ego;
    double *cum;        /* arc length at each ego state */
    int32_t n;
    double front;       /* ego origin to the front of its box */
    double center;      /* ego origin to its box centre */
    double hx0, hy0;    /* heading before the first, after the last move */
    double hxn, hyn;
} epath;

static int ep_init(epath *ep, const dk_scenario *s)
{
    memset(ep, 0, sizeof *ep);
    ep->ego = &s->ego;
    ep->n = s->ego.n_states;
    ep->front = DK_EGO_BOX_OFFSET_X + s->ego.size[0] / 2;
    ep->center = DK_EGO_BOX_OFFSET_X;
    ep->cum = dk_malloc((size_t)ep->n * sizeof *ep->cum);
    if (!ep->cum) return DK_ENOMEM;
    const dk_actor_state *st = s->ego.states;
    ep->cum[0] = 0;
    int first = -1, last = -1;
    for (int32_t i = 1; i < ep->n; i++) {
        double l = hypot(st[i].x - st[i - 1].x, st[i].y - st[i - 1].y);
        ep->cum[i] = ep->cum[i - 1] + l;
        if (l > 1e-9) {
            if (first < 0) first = i;
            last = i;
        }
    }
    if (first < 0) {
        ep->hx0 = ep->hxn = cos(st[0].yaw);
        ep->hy0 = ep->hyn = sin(st[0].yaw);
    } else {
        double l0 = ep->cum[first] - ep->cum[first - 1], ln = ep->cum[last] - ep->cum[last - 1];
        ep->hx0 = (st[first].x - st[first - 1].x) / l0;
        ep->hy0 = (st[first].y - st[first - 1].y) / l0;
        ep->hxn = (st[last].x - st[last - 1].x) / ln;
        ep->hyn = (st[last].y - st[last - 1].y) / ln;
    }
    return DK_OK;
}

/* Arc length of the ego's origin at time t (clamped to its span). */
static double ep_s(const epath *ep, double t)
{
    const dk_actor_state *st = ep->ego->states;
    int32_t n = ep->n;
    if (n == 1 || t <= st[0].t) return 0;
    if (t >= st[n - 1].t) return ep->cum[n - 1];
    int32_t lo = 0, hi = n - 1;
    while (hi - lo > 1) {
        int32_t mid = lo + (hi - lo) / 2;
        if (st[mid].t <= t)
            lo = mid;
        else
            hi = mid;
    }
    double u = (t - st[lo].t) / (st[hi].t - st[lo].t);
    return ep->cum[lo] + u * (ep->cum[hi] - ep->cum[lo]);
}

static double ep_speed(const epath *ep, double t)
{
    return (ep_s(ep, t + 0.05) - ep_s(ep, t - 0.05)) / 0.1;
}

/* Position (ground z) and heading of the path at arc length s. */
static void ep_point(const epath *ep, double s, double *x, double *y, double *z, double *hx,
                     double *hy)
{
    const dk_actor_state *st = ep->ego->states;
    int32_t n = ep->n;
    if (s <= 0 || n == 1) {
        *hx = ep->hx0, *hy = ep->hy0;
        *x = st[0].x + s * ep->hx0, *y = st[0].y + s * ep->hy0, *z = st[0].z;
        return;
    }
    if (s >= ep->cum[n - 1]) {
        double e = s - ep->cum[n - 1];
        *hx = ep->hxn, *hy = ep->hyn;
        *x = st[n - 1].x + e * ep->hxn, *y = st[n - 1].y + e * ep->hyn, *z = st[n - 1].z;
        return;
    }
    int32_t lo = 0, hi = n - 1;   /* cum[lo] <= s < cum[hi] */
    while (hi - lo > 1) {
        int32_t mid = lo + (hi - lo) / 2;
        if (ep->cum[mid] <= s)
            lo = mid;
        else
            hi = mid;
    }
    double l = ep->cum[hi] - ep->cum[lo], u = (s - ep->cum[lo]) / l;
    *hx = (st[hi].x - st[lo].x) / l, *hy = (st[hi].y - st[lo].y) / l;
    *x = st[lo].x + u * (st[hi].x - st[lo].x);
    *y = st[lo].y + u * (st[hi].y - st[lo].y);
    *z = st[lo].z + u * (st[hi].z - st[lo].z);
}

/* Path coordinates (s, d) of a world point: the nearest point of the path
 * polyline, extended straight beyond its ends. */
static void ep_project(const epath *ep, double x, double y, double *s_out, double *d_out)
{
    const dk_actor_state *st = ep->ego->states;
    int32_t n = ep->n;
    double best = INFINITY, bs = 0, bd = 0;
    /* The extensions. */
    {
        double dx = x - st[0].x, dy = y - st[0].y, a = dx * ep->hx0 + dy * ep->hy0;
        if (a <= 0) {
            double d = -dx * ep->hy0 + dy * ep->hx0;
            best = fabs(d), bs = a, bd = d;
        }
        dx = x - st[n - 1].x, dy = y - st[n - 1].y, a = dx * ep->hxn + dy * ep->hyn;
        if (a >= 0) {
            double d = -dx * ep->hyn + dy * ep->hxn;
            if (fabs(d) < best) best = fabs(d), bs = ep->cum[n - 1] + a, bd = d;
        }
    }
    for (int32_t i = 1; i < n; i++) {
        double l = ep->cum[i] - ep->cum[i - 1];
        if (l <= 1e-9) continue;
        double hx = (st[i].x - st[i - 1].x) / l, hy = (st[i].y - st[i - 1].y) / l;
        double dx = x - st[i - 1].x, dy = y - st[i - 1].y, a = dx * hx + dy * hy;
        double d = -dx * hy + dy * hx, dist;
        if (a < 0)
            dist = hypot(dx, dy);
        else if (a > l)
            dist = hypot(x - st[i].x, y - st[i].y);
        else
            dist = fabs(d);
        if (dist < best) {
            best = dist;
            bs = ep->cum[i - 1] + clampd(a, 0, l);
            bd = d;
        }
    }
    if (!isfinite(best)) {   /* a standing ego: its yaw is the axis */
        double dx = x - st[0].x, dy = y - st[0].y;
        bs = dx * ep->hx0 + dy * ep->hy0;
        bd = -dx * ep->hy0 + dy * ep->hx0;
    }
    *s_out = bs;
    *d_out = bd;
}

/* ------------------------------------------------------------------------ */
/* Lanes around the ego                                                      */

enum { SIDE_NONE = 0, SIDE_SAME, SIDE_OPPOSITE };

typedef struct lanes {
    double W;         /* lane width */
    double d_ego;     /* lateral offset of the ego lane's centre */
    int left, right;  /* SIDE_* of the neighbours at d_ego +- W */
} lanes;

static void find_lanes(const dk_scenario *s, const epath *ep, double t, lanes *out)
{
    double px, py, pz, hx, hy;
    ep_point(ep, ep_s(ep, t), &px, &py, &pz, &hx, &hy);
    enum { MAXL = 64 };
    double off[MAXL];
    int same[MAXL], n = 0;
    for (int32_t i = 0; i < s->n_map && n < MAXL; i++) {
        const dk_map_element *e = &s->map[i];
        if (e->layer != DK_MAP_LANE || e->n_points < 2) continue;
        for (int32_t k = 1; k < e->n_points && n < MAXL; k++) {
            const double *a = e->points + 3 * (k - 1), *b = e->points + 3 * k;
            double ux = b[0] - a[0], uy = b[1] - a[1], l = hypot(ux, uy);
            if (l < 1e-6) continue;
            ux /= l, uy /= l;
            double c = ux * hx + uy * hy;
            if (fabs(c) < 0.95) continue;
            double lam = (px - a[0]) * ux + (py - a[1]) * uy;
            if (lam < -0.5 || lam > l + 0.5) continue;
            double d = -(a[0] - px) * hy + (a[1] - py) * hx;
            if (fabs(d) > 20) continue;
            off[n] = d;
            same[n] = c > 0;
            n++;
        }
    }
    out->W = 3.5;
    out->d_ego = 0;
    if (n == 0) {
        out->left = out->right = SIDE_SAME;
        return;
    }
    int ego = -1;
    for (int i = 0; i < n; i++)
        if (fabs(off[i]) < 1.2 && (ego < 0 || fabs(off[i]) < fabs(off[ego]))) ego = i;
    if (ego >= 0) out->d_ego = off[ego];
    int l = -1, r = -1;
    for (int i = 0; i < n; i++) {
        double rel = off[i] - out->d_ego;
        if (rel > 2.5 && rel < 4.5 && (l < 0 || rel < off[l] - out->d_ego)) l = i;
        if (-rel > 2.5 && -rel < 4.5 && (r < 0 || -rel < out->d_ego - off[r])) r = i;
    }
    out->left = l < 0 ? SIDE_NONE : same[l] ? SIDE_SAME : SIDE_OPPOSITE;
    out->right = r < 0 ? SIDE_NONE : same[r] ? SIDE_SAME : SIDE_OPPOSITE;
    if (l >= 0) out->W = off[l] - out->d_ego;
    else if (r >= 0) out->W = out->d_ego - off[r];
}

/* +1 (left) or -1 (right): the neighbour lane of the ego's direction. */
static int pick_side(const lanes *ln, uint64_t seed)
{
    if (ln->left == SIDE_SAME && ln->right == SIDE_SAME) return seed & 1 ? -1 : 1;
    if (ln->left == SIDE_SAME) return 1;
    if (ln->right == SIDE_SAME) return -1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Tabulated motion -> actor states                                          */

typedef struct table {
    double t0;          /* time of entry 0; entries every TAB_DT */
    int32_t n;
    double *s, *d;
} table;

static int table_alloc(table *tb, double t0, double t1)
{
    tb->t0 = t0;
    double span = t1 - t0;
    if (!(span >= 0) || span > 1e7) return DK_EINVAL;
    tb->n = (int32_t)ceil(span / TAB_DT - 1e-9) + 1;
    if (tb->n < 2) tb->n = 2;
    tb->s = dk_malloc((size_t)tb->n * sizeof(double));
    tb->d = dk_malloc((size_t)tb->n * sizeof(double));
    return tb->s && tb->d ? DK_OK : DK_ENOMEM;
}

static void table_free(table *tb)
{
    dk_free(tb->s);
    dk_free(tb->d);
    tb->s = tb->d = NULL;
}

static double tab_t(const table *tb, int32_t k)
{
    return tb->t0 + k * TAB_DT;
}

/* Interpolated (s, d) and their rates at time t. */
static void tab_eval(const table *tb, double t, double *s, double *d, double *sd, double *dd)
{
    double f = (t - tb->t0) / TAB_DT;
    int32_t k = (int32_t)floor(f);
    if (k < 0) k = 0;
    if (k > tb->n - 2) k = tb->n - 2;
    double u = clampd(f - k, 0, 1);
    *s = tb->s[k] + u * (tb->s[k + 1] - tb->s[k]);
    *d = tb->d[k] + u * (tb->d[k + 1] - tb->d[k]);
    *sd = (tb->s[k + 1] - tb->s[k]) / TAB_DT;
    *dd = (tb->d[k + 1] - tb->d[k]) / TAB_DT;
}

/* States at t_a, the 20 Hz grid inside, and t_b. `yaw0` (relative to the
 * path) faces the actor while it stands still at the start. */
static int table_states(const epath *ep, const table *tb, double t_a, double t_b, double height,
                        double yaw0, dk_actor_state **out, int32_t *n_out)
{
    int64_t first = (int64_t)floor(t_a * SAMPLE_HZ) + 1, last = (int64_t)ceil(t_b * SAMPLE_HZ) - 1;
    int64_t cap = (last >= first ? last - first + 1 : 0) + 2;
    dk_actor_state *st = dk_malloc((size_t)cap * sizeof *st);
    if (!st) return DK_ENOMEM;
    int32_t n = 0;
    double prev_rel = yaw0;
    for (int64_t k = first - 1; k <= last + 1; k++) {
        double t = k < first ? t_a : k > last ? t_b : (double)k / SAMPLE_HZ;
        if (n > 0 && !(t > st[n - 1].t + 1e-6)) continue;
        if (k >= first && k <= last && t > t_b - 1e-6) continue;
        double s, d, sd, dd, x, y, z, hx, hy;
        tab_eval(tb, t, &s, &d, &sd, &dd);
        ep_point(ep, s, &x, &y, &z, &hx, &hy);
        double rel = hypot(sd, dd) > 0.05 ? atan2(dd, sd) : prev_rel;
        prev_rel = rel;
        /* Micrometres and microradians: exact enough, short in JSON. */
        st[n++] = (dk_actor_state){t, um(x - d * hy), um(y + d * hx), z + height / 2,
                                   um(remainder(atan2(hy, hx) + rel, 2 * M_PI))};
    }
    *out = st;
    *n_out = n;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Footprint overlap                                                         */

typedef struct fp {
    double x, y, c, s, hl, hw;
} fp;

static int fp_overlap(const fp *a, const fp *b)
{
    double dx = b->x - a->x, dy = b->y - a->y;
    const double ax[4][2] = {{a->c, a->s}, {-a->s, a->c}, {b->c, b->s}, {-b->s, b->c}};
    for (int k = 0; k < 4; k++) {
        double ux = ax[k][0], uy = ax[k][1];
        double ea = a->hl * fabs(a->c * ux + a->s * uy) + a->hw * fabs(-a->s * ux + a->c * uy);
        double eb = b->hl * fabs(b->c * ux + b->s * uy) + b->hw * fabs(-b->s * ux + b->c * uy);
        if (!(fabs(dx * ux + dy * uy) < ea + eb)) return 0;
    }
    return 1;
}

static int footprint(const dk_actor *a, int is_ego, double t, double grow, fp *out)
{
    dk_actor_state st;
    if (is_ego) {
        double t0 = a->states[0].t, t1 = a->states[a->n_states - 1].t;
        if (!dk_actor_state_at(a, clampd(t, t0, t1), &st, NULL)) return 0;
        st.x += DK_EGO_BOX_OFFSET_X * cos(st.yaw);
        st.y += DK_EGO_BOX_OFFSET_X * sin(st.yaw);
    } else if (!dk_actor_state_at(a, t, &st, NULL)) {
        return 0;
    }
    out->x = st.x, out->y = st.y, out->c = cos(st.yaw), out->s = sin(st.yaw);
    out->hl = a->size[0] / 2 + grow, out->hw = a->size[1] / 2 + grow;
    return 1;
}

/* Does actor e (grown by `grow`) overlap actor o (or the ego) at any time
 * step of dt in their common span? */
static int actors_meet(const dk_actor *e, const dk_actor *o, int o_is_ego, double grow, double dt)
{
    double t0 = e->states[0].t, t1 = e->states[e->n_states - 1].t;
    if (!o_is_ego) {
        t0 = fmax(t0, o->states[0].t);
        t1 = fmin(t1, o->states[o->n_states - 1].t);
    }
    if (t1 < t0) return 0;
    int64_t n = (int64_t)ceil((t1 - t0) / dt);
    for (int64_t k = 0; k <= n; k++) {
        double t = k == n ? t1 : t0 + (double)k * dt;
        fp a, b;
        if (footprint(e, 0, t, grow, &a) && footprint(o, o_is_ego, t, 0, &b) && fp_overlap(&a, &b))
            return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Shared helpers                                                            */

static int is_vehicle(dk_actor_class c)
{
    return c == DK_CLASS_CAR || c == DK_CLASS_TRUCK || c == DK_CLASS_BUS ||
           c == DK_CLASS_TRAILER || c == DK_CLASS_CONSTRUCTION_VEHICLE ||
           c == DK_CLASS_MOTORCYCLE;
}

/* Path coordinates and path-relative velocity of an actor at t. */
static int actor_sd(const epath *ep, const dk_actor *a, double t, double *s, double *d,
                    double *vs, double *cos_h)
{
    dk_actor_state st;
    double vel[3];
    if (!dk_actor_state_at(a, t, &st, vel)) return 0;
    ep_project(ep, st.x, st.y, s, d);
    double x, y, z, hx, hy;
    ep_point(ep, *s, &x, &y, &z, &hx, &hy);
    *vs = vel[0] * hx + vel[1] * hy;
    *cos_h = cos(st.yaw) * hx + sin(st.yaw) * hy;
    return 1;
}

/* The nearest vehicle ahead of the ego front in the lane at lateral offset
 * d_lane at time t (driving the ego's way), or -1. */
static int find_lead(const dk_scenario *s, const epath *ep, double t, double d_lane,
                     double max_gap)
{
    double front = ep_s(ep, t) + ep->front;
    int best = -1;
    double best_gap = max_gap;
    for (int32_t i = 0; i < s->n_actors; i++) {
        const dk_actor *a = &s->actors[i];
        if (a->parked || !is_vehicle(a->cls)) continue;
        double sa, da, vs, ch;
        if (!actor_sd(ep, a, t, &sa, &da, &vs, &ch)) continue;
        if (!(fabs(da - d_lane) <= 1.0 && ch >= 0.9 && fabs(vs) < 100)) continue;
        double gap = sa - a->size[0] / 2 - front;
        if (gap > 1 && gap < best_gap) best = (int)i, best_gap = gap;
    }
    return best;
}

static void new_car(dk_actor *a, uint64_t seed, double len)
{
    memset(a, 0, sizeof *a);
    dk_rng r;
    dk_rng_init(&r, seed, dk_rng_stream_id(0xed17, 1, 0, 0));
    a->cls = DK_CLASS_CAR;
    a->size[0] = len > 0 ? len : round(4300 + 600 * dk_rng_uniform_f64(&r)) / 1000;
    a->size[1] = round(1800 + 150 * dk_rng_uniform_f64(&r)) / 1000;
    a->size[2] = round(1500 + 200 * dk_rng_uniform_f64(&r)) / 1000;
}

/* Keeps the actor's states before t_splice and appends `tail` (which starts
 * at t_splice). Takes ownership of tail. */
static int splice(const dk_actor *a, double t_splice, dk_actor_state *tail, int32_t n_tail,
                  dk_actor_state **out, int32_t *n_out)
{
    int32_t keep = 0;
    while (keep < a->n_states && a->states[keep].t < t_splice - 1e-6) keep++;
    dk_actor_state *st = dk_malloc(((size_t)keep + (size_t)n_tail) * sizeof *st);
    if (!st) {
        dk_free(tail);
        return DK_ENOMEM;
    }
    memcpy(st, a->states, (size_t)keep * sizeof *st);
    memcpy(st + keep, tail, (size_t)n_tail * sizeof *st);
    dk_free(tail);
    *out = st;
    *n_out = keep + n_tail;
    return DK_OK;
}

/* The edit in progress. */
typedef struct job {
    dk_scenario *s;          /* the working copy */
    const dk_edit_params *p;
    epath ep;
    lanes ln;
    double T0, dur, u;       /* trigger, duration, strength */
    dk_edit_record rec;
    int32_t id;              /* the edited actor */
} job;

/* Installs the edited actor: replaces the states of `index` or adds a new
 * actor (index < 0). Takes ownership of st. */
static int install(job *j, int index, dk_actor *proto, dk_actor_state *st, int32_t n)
{
    int rc;
    if (index >= 0) {
        j->id = j->s->actors[index].id;
        rc = dk_scenario_set_actor_states(j->s, j->id, st, n);
        dk_free(st);
        j->rec.added = 0;
    } else {
        proto->states = st;
        proto->n_states = n;
        proto->id = 0;
        rc = dk_scenario_add_actor(j->s, proto);
        dk_free(st);
        if (!rc) j->id = j->s->actors[j->s->n_actors - 1].id;
        j->rec.added = 1;
    }
    j->rec.actor_id = j->id;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* cut-in                                                                    */

static int edit_cut_in(job *j)
{
    const epath *ep = &j->ep;
    int side = pick_side(&j->ln, j->p->seed);
    if (side == 0)
        return dk__error(DK_ENOENT, "dk_world_edit", "cut-in: no lane of the ego's direction "
                                                     "next to the ego lane");
    const double T0 = j->T0, u = j->u, Tlc = lerp(4.0, 2.5, u), dv_c = 2.0 * u;
    const double g_min = lerp(10, 3, u), a_c = 1.0, dv_a = 3.0, tau = 2.0;
    const double d_adj = j->ln.d_ego + side * j->ln.W, d_lane = j->ln.d_ego;
    const double T1 = T0 + Tlc, r0 = g_min + dv_c * Tlc + dv_c * dv_c / (2 * a_c);
    if (T1 > j->dur - 0.5)
        return dk__error(DK_ENOENT, "dk_world_edit",
                         "cut-in: the lane change (%.1f s) does not fit after t = %.2f s", Tlc, T0);
    if (ep_speed(ep, T0) < dv_c + 2)
        return dk__error(DK_ENOENT, "dk_world_edit", "cut-in: the ego is too slow at t = %.2f s",
                         T0);

    /* Reuse a vehicle of the adjacent lane when it can join the plan
       smoothly 4, 6 or 8 s before the trigger (cubic Hermite in relative
       position, |relative acceleration| <= 2.5 m/s²). */
    int found = -1;
    double best = 2.5, fr_a = 0, frv_a = 0, fd_a = d_adj, tau_f = 4, ta_f = T0 - 4;
    for (double tf = 4; tf <= 8; tf += 2) {
        double ta = T0 - tf;
        if (ta < 0) break;
        double front = ep_s(ep, ta) + ep->front, ve = ep_speed(ep, ta);
        for (int32_t i = 0; i < j->s->n_actors; i++) {
            const dk_actor *a = &j->s->actors[i];
            if (a->parked || !is_vehicle(a->cls)) continue;
            double sa, da, vs, ch;
            if (!actor_sd(ep, a, ta, &sa, &da, &vs, &ch)) continue;
            if (!(fabs(da - d_adj) <= 0.8 && ch >= 0.95 && fabs(vs) < 100)) continue;
            double ra = sa - a->size[0] / 2 - front, rva = vs - ve, D = r0 - ra;
            double a0 = (6 * D - 4 * rva * tf + 2 * dv_c * tf) / (tf * tf);
            double a1 = (-6 * D + 2 * rva * tf - 4 * dv_c * tf) / (tf * tf);
            double m = fmax(fabs(a0), fabs(a1));
            if (m < best) {
                best = m, found = (int)i, fr_a = ra, frv_a = rva, fd_a = da;
                tau_f = tf, ta_f = ta;
            }
        }
    }
    dk_actor proto;
    memset(&proto, 0, sizeof proto);
    double len;
    if (found >= 0) {
        len = j->s->actors[found].size[0];
    } else {
        new_car(&proto, j->p->seed, 0);
        len = proto.size[0];
    }
    const double t_a = found >= 0 ? ta_f : fmax(0, T0 - 15), t_b = j->dur;
    table tb = {0};
    int rc = table_alloc(&tb, t_a, t_b);
    if (rc) {
        table_free(&tb);
        return rc == DK_ENOMEM ? dk__error(rc, "dk_world_edit", "out of memory") : rc;
    }
    const double r_m = r0 - (dv_a - dv_c) * tau / 2;
    double min_v = INFINITY;
    for (int32_t k = 0; k < tb.n; k++) {
        double t = tab_t(&tb, k), r, d;
        if (t < T0) {
            if (found >= 0) {
                double x = (t - t_a) / tau_f, D = r0 - fr_a;
                double h10 = x * x * x - 2 * x * x + x, h01 = -2 * x * x * x + 3 * x * x;
                double h11 = x * x * x - x * x;
                r = fr_a + h10 * tau_f * frv_a + h01 * D + h11 * tau_f * (-dv_c);
            } else if (t < T0 - tau) {
                r = r_m - dv_a * (T0 - tau - t);
            } else {
                double w = t - (T0 - tau);
                r = r_m + dv_a * w - (dv_a + dv_c) / (2 * tau) * w * w;
            }
            d = fd_a;
        } else if (t < T1) {
            double x = (t - T0) / Tlc, q = x * x * x * (10 + x * (-15 + 6 * x));
            r = r0 - dv_c * (t - T0);
            d = fd_a + (d_lane - fd_a) * q;
        } else {
            double w = t - T1, w1 = (1 + dv_c) / a_c, r1 = r0 - dv_c * Tlc;
            if (w < w1)
                r = r1 - dv_c * w + a_c * w * w / 2;
            else
                r = r1 - dv_c * w1 + a_c * w1 * w1 / 2 + (w - w1);
            d = d_lane;
        }
        tb.s[k] = ep_s(ep, t) + ep->front + r + len / 2;
        tb.d[k] = d;
        if (k > 0) min_v = fmin(min_v, (tb.s[k] - tb.s[k - 1]) / TAB_DT);
    }
    if (min_v < 0.2) {
        table_free(&tb);
        return dk__error(DK_ENOENT, "dk_world_edit", "cut-in: the ego is too slow for a cut-in");
    }
    dk_actor_state *st;
    int32_t n;
    double h = found >= 0 ? j->s->actors[found].size[2] : proto.size[2];
    rc = table_states(ep, &tb, t_a, t_b, h, 0, &st, &n);
    table_free(&tb);
    if (rc) return dk__error(rc, "dk_world_edit", "out of memory");
    if (found >= 0 && (rc = splice(&j->s->actors[found], t_a, st, n, &st, &n)))
        return dk__error(rc, "dk_world_edit", "out of memory");
    const char *cls = dk_actor_class_name(found >= 0 ? j->s->actors[found].cls : DK_CLASS_CAR);
    if ((rc = install(j, found, &proto, st, n))) return rc;
    double ve = ep_speed(ep, T1);
    j->rec.t_start = T0;
    j->rec.t_end = T1;
    snprintf(j->rec.description, sizeof j->rec.description,
             "%s %d cuts in from the %s lane over %.1f s (t = %.1f to %.1f s), %.1f m/s slower "
             "than the ego; gap to the ego down to %.1f m (headway %.2f s at %.1f m/s)",
             cls, (int)j->id, side > 0 ? "left" : "right", Tlc, T0, T1, dv_c, g_min,
             ve > 0.1 ? g_min / ve : INFINITY, ve);
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* hard-brake                                                                */

typedef struct brake_plan {
    double a_b, v0, v_low, v_tgt, hold, a_up;
} brake_plan;

/* Lead positions from T0 on (s at T0 = s0) into tb.s[k0..]; returns the
 * minimum gap to the ego front and its time, the smallest TTC and the end
 * of the braking. */
static void brake_fill(const job *j, const brake_plan *bp, const table *tb, int32_t k0,
                       double s0, double len, double *min_gap, double *t_min, double *min_ttc)
{
    const epath *ep = &j->ep;
    const double jerk_t = 0.3, up_t = 0.5;
    double s = s0, v = bp->v0, a = 0, t_hold_end = -1;
    int phase = 0;   /* 0 braking, 1 releasing, 2 holding, 3 accelerating, 4 cruising */
    double t_phase = j->T0;
    *min_gap = INFINITY, *t_min = j->T0, *min_ttc = INFINITY;
    for (int32_t k = k0; k < tb->n; k++) {
        double t = tab_t(tb, k);
        tb->s[k] = s;
        double ef = ep_s(ep, t) + ep->front, gap = s - len / 2 - ef;
        if (gap < *min_gap) *min_gap = gap, *t_min = t;
        double closing = ep_speed(ep, t) - v;
        if (closing > 0.01 && gap / closing < *min_ttc) *min_ttc = gap / closing;
        /* Advance one step. */
        const double dt = TAB_DT;
        switch (phase) {
        case 0:
            a = fmax(bp->a_b, bp->a_b * (t - j->T0 + dt) / jerk_t);
            if (v - bp->v_low <= -bp->a_b * jerk_t / 2 || v <= 0) phase = 1, t_phase = t;
            break;
        case 1:
            a = fmin(0, bp->a_b * (1 - (t - t_phase + dt) / jerk_t));
            if (a == 0 || v <= 0) phase = 2, t_phase = t, t_hold_end = t + bp->hold;
            break;
        case 2:
            a = 0;
            if (t >= t_hold_end) phase = 3, t_phase = t;
            break;
        case 3:
            a = fmin(bp->a_up, bp->a_up * (t - t_phase + dt) / up_t);
            if (v >= bp->v_tgt - bp->a_up * up_t / 2) phase = 4, t_phase = t;
            break;
        default:
            a = fmax(0, bp->a_up * (1 - (t - t_phase + dt) / up_t));
            break;
        }
        double nv = v + a * dt;
        if (nv < 0) nv = 0;
        s += (v + nv) / 2 * dt;
        v = nv;
    }
}

static int edit_hard_brake(job *j)
{
    const epath *ep = &j->ep;
    const double T0 = j->T0, u = j->u, g_min = lerp(4, 1.5, u);
    brake_plan bp = {clampd(-14 * u, -10, -2), 0, 0, 0, 0.5, 3.0};
    double ve_max = 0;
    for (double t = T0; t <= j->dur; t += 0.1) ve_max = fmax(ve_max, ep_speed(ep, t));
    if (T0 > j->dur - 1)
        return dk__error(DK_ENOENT, "dk_world_edit", "hard-brake: t = %.2f s leaves no time", T0);

    int lead = find_lead(j->s, ep, T0, j->ln.d_ego, 80);
    double s_l0 = 0, d_l = j->ln.d_ego, len = 4.5, h = 1.6;
    dk_actor proto;
    memset(&proto, 0, sizeof proto);
    dk_actor_class cls = DK_CLASS_CAR;
    table tb = {0};
    double min_gap = 0, t_min = T0, min_ttc = INFINITY, g_add = 0;
    int ok = 0, rc;
    if (lead >= 0) {
        const dk_actor *a = &j->s->actors[lead];
        double vs, ch;
        actor_sd(ep, a, T0, &s_l0, &d_l, &vs, &ch);
        len = a->size[0], h = a->size[2], cls = a->cls;
        bp.v0 = fmax(vs, 0);
        bp.v_tgt = fmax(bp.v0, ve_max + 1);
        if ((rc = table_alloc(&tb, T0, j->dur))) goto fail;
        /* Brake as deep as the gap allows; keep the lead only if it can shed
           at least half its speed. */
        for (bp.v_low = 0; bp.v_low <= 0.5 * bp.v0 + 1e-9; bp.v_low += 0.25) {
            brake_fill(j, &bp, &tb, 0, s_l0, len, &min_gap, &t_min, &min_ttc);
            if (min_gap >= g_min) {
                ok = 1;
                break;
            }
        }
        if (!ok) {
            table_free(&tb);
            lead = -1;
        }
    }
    if (!ok) {
        /* A new lead pacing the ego, far enough ahead to brake to a stop. */
        new_car(&proto, j->p->seed, 0);
        len = proto.size[0], h = proto.size[2], d_l = j->ln.d_ego, cls = DK_CLASS_CAR;
        double ve = ep_speed(ep, T0);
        bp.v0 = ve;
        bp.v_tgt = fmax(ve, ve_max + 1);
        bp.v_low = 0;
        double t_a = fmax(0, T0 - 15);
        if ((rc = table_alloc(&tb, t_a, j->dur))) goto fail;
        int32_t k0 = (int32_t)lround((T0 - t_a) / TAB_DT);
        for (g_add = fmax(10, 1.2 * ve); g_add <= 150 && !ok; g_add += 2) {
            for (int32_t k = 0; k <= k0 && k < tb.n; k++)
                tb.s[k] = ep_s(ep, tab_t(&tb, k)) + ep->front + g_add + len / 2;
            s_l0 = tb.s[k0 < tb.n ? k0 : tb.n - 1];
            brake_fill(j, &bp, &tb, k0, s_l0, len, &min_gap, &t_min, &min_ttc);
            ok = min_gap >= g_min;
        }
        if (!ok) {
            table_free(&tb);
            return dk__error(DK_ENOENT, "dk_world_edit", "hard-brake: no room for a lead");
        }
        g_add -= 2;
    }
    for (int32_t k = 0; k < tb.n; k++) tb.d[k] = d_l;
    dk_actor_state *st;
    int32_t n;
    double t_a = tb.t0;
    rc = table_states(ep, &tb, t_a, j->dur, h, 0, &st, &n);
    table_free(&tb);
    if (rc) goto fail;
    if (lead >= 0 && (rc = splice(&j->s->actors[lead], t_a, st, n, &st, &n))) goto fail;
    if ((rc = install(j, lead, &proto, st, n))) return rc;
    j->rec.t_start = T0;
    j->rec.t_end = t_min;
    snprintf(j->rec.description, sizeof j->rec.description,
             "%s %d, the lead in the ego lane %.1f m ahead, brakes at %.1f m/s² from %.1f to "
             "%.1f m/s at t = %.1f s, then drives off; gap to the ego down to %.1f m at "
             "t = %.1f s, minimum time-to-collision %.2f s",
             dk_actor_class_name(cls), (int)j->id, s_l0 - len / 2 - (ep_s(ep, T0) + ep->front), bp.a_b, bp.v0, bp.v_low, T0,
             min_gap, t_min, min_ttc);
    return DK_OK;
fail:
    table_free(&tb);
    return dk__error(rc == DK_ENOMEM ? rc : DK_EINTERNAL, "dk_world_edit", "out of memory");
}

/* ------------------------------------------------------------------------ */
/* jaywalk                                                                   */

/* Interval [lo, hi] of lateral offsets (around d = 0) at path position s that
 * lies in the drivable area; +-8 m without a map. */
static void road_span(const dk_scenario *s, const epath *ep, double sc, double *lo, double *hi)
{
    double px, py, pz, hx, hy;
    ep_point(ep, sc, &px, &py, &pz, &hx, &hy);
    double nx = -hy, ny = hx;
    double best_lo = -INFINITY, best_hi = INFINITY;
    int any = 0;
    for (int32_t i = 0; i < s->n_map; i++) {
        const dk_map_element *e = &s->map[i];
        if (e->layer != DK_MAP_DRIVABLE_AREA) continue;
        /* Crossings of the line p + d n with the polygon's edges. */
        double below = -INFINITY, above = INFINITY;
        int cnt = 0;
        for (int32_t k = 0; k < e->n_points; k++) {
            const double *a = e->points + 3 * k, *b = e->points + 3 * ((k + 1) % e->n_points);
            double ex = b[0] - a[0], ey = b[1] - a[1];
            double den = nx * ey - ny * ex;
            if (fabs(den) < 1e-12) continue;
            double wx = a[0] - px, wy = a[1] - py;
            double d = (wx * ey - wy * ex) / den, lam = (wx * ny - wy * nx) / den;
            if (lam < 0 || lam > 1) continue;
            cnt++;
            if (d <= 0 && d > below) below = d;
            if (d > 0 && d < above) above = d;
        }
        if (cnt >= 2 && isfinite(below) && isfinite(above)) {
            any = 1;
            best_lo = fmax(best_lo, below);
            best_hi = fmin(best_hi, above);
        }
    }
    if (!any) best_lo = -8, best_hi = 8;
    *lo = best_lo, *hi = best_hi;
}

/* Does the crossing at s (half-width hw along the path) touch a crosswalk? */
static int near_crosswalk(const dk_scenario *s, const epath *ep, double sc, double d0, double d1)
{
    for (int32_t i = 0; i < s->n_map; i++) {
        const dk_map_element *e = &s->map[i];
        if (e->layer != DK_MAP_CROSSWALK) continue;
        for (int32_t k = 0; k < e->n_points; k++) {
            double ps, pd;
            ep_project(ep, e->points[3 * k], e->points[3 * k + 1], &ps, &pd);
            (void)pd;
            if (fabs(ps - sc) < 6) return 1;
        }
        /* Also when the crossing line runs through the polygon's middle. */
        double cx = 0, cy = 0;
        for (int32_t k = 0; k < e->n_points; k++) cx += e->points[3 * k], cy += e->points[3 * k + 1];
        double ps, pd;
        ep_project(ep, cx / e->n_points, cy / e->n_points, &ps, &pd);
        if (fabs(ps - sc) < 8 && pd > d0 - 2 && pd < d1 + 2) return 1;
    }
    return 0;
}

/* Walking profile: stand at d0 until t_go, accelerate at a to v, walk, brake
 * at a, stand at d1. */
static double walk_d(double t, double t_go, double d0, double d1, double v, double a)
{
    double dist = d1 - d0, ta = v / a, da = v * v / (2 * a);
    if (t <= t_go) return d0;
    double w = t - t_go;
    if (2 * da > dist) {   /* triangular */
        double tp = sqrt(dist / a);
        if (w < tp) return d0 + a * w * w / 2;
        if (w < 2 * tp) return d1 - a * (2 * tp - w) * (2 * tp - w) / 2;
        return d1;
    }
    double tc = (dist - 2 * da) / v;
    if (w < ta) return d0 + a * w * w / 2;
    if (w < ta + tc) return d0 + da + v * (w - ta);
    if (w < 2 * ta + tc) return d1 - a * (2 * ta + tc - w) * (2 * ta + tc - w) / 2;
    return d1;
}

static double walk_time_to(double target, double d0, double d1, double v, double a)
{
    /* Time after t_go at which walk_d first reaches target (bisection). */
    double lo = 0, hi = 2 * (d1 - d0) / fmin(v, 1) + 10;
    for (int i = 0; i < 60; i++) {
        double mid = (lo + hi) / 2;
        if (walk_d(mid, 0, d0, d1, v, a) >= target)
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

static int edit_jaywalk(job *j)
{
    const epath *ep = &j->ep;
    const double u = j->u, v_p = lerp(1.3, 2.2, u), a_p = 2.0, pet = lerp(1.5, 0.5, u);
    const dk_actor *ego = &j->s->ego;
    dk_actor proto;
    memset(&proto, 0, sizeof proto);
    proto.cls = DK_CLASS_PEDESTRIAN;
    proto.size[0] = 0.7, proto.size[1] = 0.7, proto.size[2] = 1.75;
    const double clear_d = ego->size[1] / 2 + proto.size[0] / 2 + 0.3;
    double T0 = j->T0, sc = 0, d0 = 0, d1 = 0, t_clear = 0, t_front = 0;
    int ok = 0;
    /* Try the trigger, then later and earlier ones, until the crossing is
       off crosswalks and junctions and ends inside the scenario. */
    for (int tries = 0; tries < 60 && !ok; tries++) {
        double shift = (tries + 1) / 2 * (tries % 2 ? 1.0 : -1.0);
        double T = j->T0 + shift;
        /* In a short scenario the pedestrian may be mid-crossing at t = 0. */
        if (T < -8 || T > j->dur) continue;
        double lo = -8, hi = 8;
        sc = ep_s(ep, T) + 30;
        for (int it = 0; it < 4; it++) {
            road_span(j->s, ep, sc, &lo, &hi);
            d0 = lo - 0.8, d1 = hi + 0.8;
            t_clear = T + walk_time_to(clear_d, d0, d1, v_p, a_p);
            t_front = t_clear + pet;
            sc = ep_s(ep, t_front) + ep->front + proto.size[1] / 2 + 0.3;
        }
        if (hi - lo > 60 || lo > -1 || hi < 1) continue;   /* junction, or off-road */
        if (t_front > j->dur - 0.5 || ep_s(ep, t_front) >= ep->cum[ep->n - 1]) continue;
        /* It must be seen walking into the ego lane. */
        if (T + walk_time_to(j->ln.d_ego - j->ln.W / 2 - proto.size[0] / 2, d0, d1, v_p, a_p) < 1)
            continue;
        if (near_crosswalk(j->s, ep, sc, d0, d1)) continue;
        /* Recheck the timing with the final span. */
        road_span(j->s, ep, sc, &lo, &hi);
        if (fabs(lo - 0.8 - d0) > 1e-6 || fabs(hi + 0.8 - d1) > 1e-6) continue;
        T0 = T;
        ok = 1;
    }
    if (!ok)
        return dk__error(DK_ENOENT, "dk_world_edit",
                         "jaywalk: no stretch of road outside crosswalks ahead of the ego");
    const double t_walk_end = T0 + walk_time_to(d1 - 1e-6, d0, d1, v_p, a_p);
    const double t_a = fmax(0, T0 - 3), t_b = fmin(j->dur, t_walk_end + 2);
    const double t_in = T0 + walk_time_to(j->ln.d_ego - j->ln.W / 2 - proto.size[0] / 2, d0, d1,
                                          v_p, a_p);
    table tb = {0};
    int rc = table_alloc(&tb, t_a, t_b);
    if (rc) {
        table_free(&tb);
        return dk__error(rc == DK_ENOMEM ? rc : DK_EINTERNAL, "dk_world_edit", "out of memory");
    }
    for (int32_t k = 0; k < tb.n; k++) {
        tb.s[k] = sc;
        tb.d[k] = walk_d(tab_t(&tb, k), T0, d0, d1, v_p, a_p);
    }
    dk_actor_state *st;
    int32_t n;
    rc = table_states(ep, &tb, t_a, t_b, proto.size[2], M_PI / 2, &st, &n);
    table_free(&tb);
    if (rc) return dk__error(rc, "dk_world_edit", "out of memory");
    if ((rc = install(j, -1, &proto, st, n))) return rc;
    j->rec.t_start = fmax(0, T0);
    j->rec.t_end = t_front;
    snprintf(j->rec.description, sizeof j->rec.description,
             "pedestrian %d crosses %.1f m of road outside a crosswalk at %.1f m/s from "
             "t = %.1f s; enters the ego lane at t = %.1f s, %.1f s before the ego, and "
             "clears its path %.1f s before it arrives (post-encroachment time), ego at %.1f m/s",
             (int)j->id, d1 - d0 - 1.6, v_p, T0, t_in, t_front - t_in, pet,
             ep_speed(ep, t_front));
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* stopped-vehicle                                                           */

static int edit_stopped(job *j)
{
    const epath *ep = &j->ep;
    const double u = j->u, g_end = lerp(8, 3, u), a_s = lerp(2, 4, u), T0 = j->T0;
    const double ef_end = ep_s(ep, j->dur) + ep->front, ve_end = ep_speed(ep, j->dur - 0.05);
    int lead = find_lead(j->s, ep, T0, j->ln.d_ego, 150);
    double t_b = 0, t_stop = 0, s_stop = 0, d_l = j->ln.d_ego;
    table tb = {0};
    dk_actor proto;
    int rc;
    if (lead >= 0) {
        /* The lead cruises on from T0 and brakes at a_s to stop in place. */
        const dk_actor *a = &j->s->actors[lead];
        double s0, vs, ch;
        actor_sd(ep, a, T0, &s0, &d_l, &vs, &ch);
        s_stop = ef_end + g_end + a->size[0] / 2;
        double v = fmax(vs, 0), brake = v * v / (2 * a_s);
        t_b = v > 0.5 ? T0 + (s_stop - s0 - brake) / v : -1;
        t_stop = t_b + v / a_s;
        if (v > 0.5 && t_b >= T0 && t_stop <= j->dur - 2) {
            if ((rc = table_alloc(&tb, T0, j->dur))) goto fail;
            for (int32_t k = 0; k < tb.n; k++) {
                double t = tab_t(&tb, k), s;
                if (t < t_b)
                    s = s0 + v * (t - T0);
                else if (t < t_stop)
                    s = s_stop - brake + v * (t - t_b) - a_s * (t - t_b) * (t - t_b) / 2;
                else
                    s = s_stop;
                tb.s[k] = s;
                tb.d[k] = d_l;
            }
            dk_actor_state *st;
            int32_t n;
            rc = table_states(ep, &tb, T0, j->dur, a->size[2], 0, &st, &n);
            table_free(&tb);
            if (rc) goto fail;
            const char *cls = dk_actor_class_name(a->cls);
            if ((rc = splice(a, T0, st, n, &st, &n))) goto fail;
            if ((rc = install(j, lead, NULL, st, n))) return rc;
            j->rec.t_start = t_b;
            j->rec.t_end = j->dur;
            snprintf(j->rec.description, sizeof j->rec.description,
                     "%s %d, the lead in the ego lane, brakes at %.1f m/s² from %.1f m/s at "
                     "t = %.1f s and stands still from t = %.1f s; the ego ends %.1f m behind "
                     "it at %.1f m/s (time-to-collision %.2f s)",
                     cls, (int)j->id, -a_s, v, t_b, t_stop, g_end, ve_end,
                     ve_end > 0.1 ? g_end / ve_end : INFINITY);
            return DK_OK;
        }
    }
    /* An added car standing in the ego lane for the whole scenario. */
    new_car(&proto, j->p->seed, 0);
    s_stop = ef_end + g_end + proto.size[0] / 2;
    dk_actor_state *st = dk_malloc(2 * sizeof *st);
    if (!st) return dk__error(DK_ENOMEM, "dk_world_edit", "out of memory");
    double x, y, z, hx, hy;
    ep_point(ep, s_stop, &x, &y, &z, &hx, &hy);
    st[0] = (dk_actor_state){0, um(x - j->ln.d_ego * hy), um(y + j->ln.d_ego * hx),
                             z + proto.size[2] / 2, um(atan2(hy, hx))};
    st[1] = st[0];
    st[1].t = j->dur;
    if ((rc = install(j, -1, &proto, st, 2))) return rc;
    j->rec.t_start = 0;
    j->rec.t_end = j->dur;
    snprintf(j->rec.description, sizeof j->rec.description,
             "car %d stands still in the ego lane %.1f m ahead of the ego's start; the ego ends "
             "%.1f m behind it at %.1f m/s (time-to-collision %.2f s)",
             (int)j->id, s_stop - proto.size[0] / 2 - (ep_s(ep, 0) + ep->front), g_end, ve_end,
             ve_end > 0.1 ? g_end / ve_end : INFINITY);
    return DK_OK;
fail:
    table_free(&tb);
    return dk__error(rc == DK_ENOMEM ? rc : DK_EINTERNAL, "dk_world_edit", "out of memory");
}

/* ------------------------------------------------------------------------ */
/* wrong-way                                                                 */

static int edit_wrong_way(job *j)
{
    const epath *ep = &j->ep;
    int side = pick_side(&j->ln, j->p->seed);
    if (side == 0)
        return dk__error(DK_ENOENT, "dk_world_edit", "wrong-way: no lane of the ego's direction "
                                                     "next to the ego lane");
    /* The pass comes 5 - 2 strength s after the trigger, sooner when the
       scenario ends before. */
    const double u = j->u, v_w = lerp(6, 12, u);
    const double t_p = fmin(j->T0 + lerp(5, 3, u), j->dur - 0.5);
    if (t_p < j->T0 + 1)
        return dk__error(DK_ENOENT, "dk_world_edit",
                         "wrong-way: the pass at t = %.1f s falls outside the scenario", t_p);
    const double d_adj = j->ln.d_ego + side * j->ln.W, s_p = ep_s(ep, t_p) + ep->center;
    const double t_a = fmax(0, t_p - 15), t_b = fmin(j->dur, t_p + 10);
    dk_actor proto;
    new_car(&proto, j->p->seed, 0);
    table tb = {0};
    int rc = table_alloc(&tb, t_a, t_b);
    if (rc) {
        table_free(&tb);
        return dk__error(rc == DK_ENOMEM ? rc : DK_EINTERNAL, "dk_world_edit", "out of memory");
    }
    for (int32_t k = 0; k < tb.n; k++) {
        tb.s[k] = s_p - v_w * (tab_t(&tb, k) - t_p);
        tb.d[k] = d_adj;
    }
    dk_actor_state *st;
    int32_t n;
    rc = table_states(ep, &tb, t_a, t_b, proto.size[2], M_PI, &st, &n);
    table_free(&tb);
    if (rc) return dk__error(rc, "dk_world_edit", "out of memory");
    if ((rc = install(j, -1, &proto, st, n))) return rc;
    double ve = ep_speed(ep, t_p);
    j->rec.t_start = j->T0;
    j->rec.t_end = t_p;
    snprintf(j->rec.description, sizeof j->rec.description,
             "car %d drives against traffic in the %s lane of the ego's direction at %.1f m/s "
             "and passes the ego head-on at t = %.1f s (closing speed %.1f m/s, lateral "
             "clearance %.1f m)",
             (int)j->id, side > 0 ? "left" : "right", v_w, t_p, v_w + ve,
             j->ln.W - (j->s->ego.size[1] + proto.size[1]) / 2);
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Entry                                                                     */

/* Removes actors that would touch the edited one; checks the ego is clear. */
static int clean_up(job *j)
{
    dk_scenario *s = j->s;
    int idx = dk_scenario_find_actor(s, j->id);
    if (idx < 0) return dk__error(DK_EINTERNAL, "dk_world_edit", "edited actor vanished");
    for (int32_t i = 0; i < s->n_actors; i++) {
        const dk_actor *e = &s->actors[dk_scenario_find_actor(s, j->id)], *o = &s->actors[i];
        if (o->id == j->id) continue;
        if (e->cls == DK_CLASS_PEDESTRIAN && o->cls == DK_CLASS_PEDESTRIAN) continue;
        if (actors_meet(e, o, 0, 0.3, 0.05)) {
            dk_scenario_remove_actor(s, o->id);
            i--;
        }
    }
    const dk_actor *e = &s->actors[dk_scenario_find_actor(s, j->id)];
    /* Planned clear of the ego; only a sharply turning ego path (the lateral
       offsets fold over) can make them meet. */
    if (actors_meet(e, &s->ego, 1, 0, 0.02))
        return dk__error(DK_ENOENT, "dk_world_edit",
                         "%s: the edited actor would touch the ego (its path turns too sharply)",
                         dk_edit_kind_name(j->rec.kind));
    return DK_OK;
}

int dk_world_edit(dk_scenario *s, dk_edit_kind kind, const dk_edit_params *params,
                  dk_edit_record *rec)
{
    dk_edit_params def;
    dk_edit_params_init(&def);
    const dk_edit_params *p = params ? params : &def;
    if (!s) return dk__error(DK_EINVAL, __func__, "scenario is NULL");
    if ((unsigned)kind >= DK_EDIT_COUNT)
        return dk__error(DK_EINVAL, __func__, "kind: %d is not an edit kind", (int)kind);
    if (!(p->strength >= 0 && p->strength <= 1))
        return dk__error(DK_EINVAL, __func__, "strength: %g is outside [0, 1]", p->strength);
    if (!isfinite(p->t_trigger))
        return dk__error(DK_EINVAL, __func__, "t_trigger: not a finite number");
    if (dk_scenario_validate(s)) {
        char inner[DK_ERRMSG_MAX];
        snprintf(inner, sizeof inner, "%s", dk_errmsg());
        return dk__error(DK_EINVAL, __func__, "invalid scenario: %s", inner);
    }
    if (!(s->duration > 0) || s->duration > 3600)
        return dk__error(DK_EINVAL, __func__, "duration: %g s is outside (0, 3600]", s->duration);
    for (int32_t i = 0; i < s->ego.n_states; i++)
        if (fabs(s->ego.states[i].x) > 1e7 || fabs(s->ego.states[i].y) > 1e7)
            return dk__error(DK_EINVAL, __func__, "ego.states[%d]: farther than 1e7 m out",
                             (int)i);
    double T0 = p->t_trigger >= 0 ? p->t_trigger : s->duration / 3;
    if (T0 >= s->duration)
        return dk__error(DK_EINVAL, __func__, "t_trigger: %g is not before the end (%g s)", T0,
                         s->duration);

    job j;
    memset(&j, 0, sizeof j);
    j.p = p;
    j.T0 = T0;
    j.dur = s->duration;
    j.u = p->strength;
    j.rec.kind = kind;
    int rc = dk_scenario_clone(s, &j.s);
    if (rc) return rc;
    if ((rc = ep_init(&j.ep, j.s))) {
        dk_scenario_destroy(j.s);
        dk_free(j.ep.cum);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    find_lanes(j.s, &j.ep, T0, &j.ln);
    switch (kind) {
    case DK_EDIT_CUT_IN: rc = edit_cut_in(&j); break;
    case DK_EDIT_HARD_BRAKE: rc = edit_hard_brake(&j); break;
    case DK_EDIT_JAYWALK: rc = edit_jaywalk(&j); break;
    case DK_EDIT_STOPPED_VEHICLE: rc = edit_stopped(&j); break;
    default: rc = edit_wrong_way(&j); break;
    }
    if (!rc) rc = clean_up(&j);
    if (!rc && dk__scenario_append_edit(j.s, &j.rec))
        rc = dk__error(DK_ENOMEM, __func__, "out of memory");
    if (!rc && (rc = dk_scenario_validate(j.s))) {
        char inner[DK_ERRMSG_MAX];
        snprintf(inner, sizeof inner, "%s", dk_errmsg());
        rc = dk__error(DK_EINTERNAL, __func__, "%s: result is invalid: %s",
                       dk_edit_kind_name(kind), inner);
    }
    dk_free(j.ep.cum);
    if (rc) {
        dk_scenario_destroy(j.s);
        return rc;
    }
    /* Commit: swap the contents, free the old ones. */
    dk_scenario tmp = *s;
    *s = *j.s;
    *j.s = tmp;
    dk_scenario_destroy(j.s);
    if (rec) *rec = s->edits[s->n_edits - 1];
    return DK_OK;
}
