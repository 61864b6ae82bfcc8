/*
 * Closed-loop simulation: a rig on an ego vehicle driven by the caller,
 * rendered from a borrowed Gaussian scene, with per-actor pose overrides.
 *
 * The dk_sim renders through a shallow copy of the scene struct (`view`):
 * the Gaussian arrays are the caller's, the actor tracks are the dk_sim's
 * own. Overrides rewrite tracks in that copy only, so the caller's scene is
 * never written and several dk_sims can share it. `recorded` keeps the
 * tracks as they were at creation, for dk_sim_clear_actor_pose.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "drivekit/sim.h"
#include "internal.h"
#include "sim_impl.h"

struct dk_sim {
    const dk_scene *scene;
    dk_scene view;          /* scene's arrays, own actor tracks */
    dk_scene recorded;      /* only .actors: the tracks at creation */
    dk_rig rig;
    dk_sim_config cfg;
    dk_pool *pool;
    pthread_mutex_t mu;
    int32_t *overridden;    /* ids with overrides, unsorted */
    int n_overridden, cap_overridden;
    char errmsg[DK_ERRMSG_MAX];
};

void dk_sim_config_init(dk_sim_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->n_threads = 1;
    dk_render_config_init(&cfg->render);
    cfg->rolling_shutter = 1;
    dk_lidar_render_config_init(&cfg->lidar);
}

/* Copies every track of `from` into `to` (only its .actors is touched). */
static int copy_tracks(const dk_scene *from, dk_scene *to)
{
    int n = dk_scene_actor_track_count(from);
    if (n <= 0) return DK_OK;
    int32_t *ids = dk_malloc((size_t)n * sizeof *ids);
    if (!ids) return dk__error(DK_ENOMEM, "dk_sim_create", "out of memory for %d actor ids", n);
    n = dk_scene_actor_track_ids(from, ids, n);
    int st = DK_OK;
    for (int i = 0; i < n && st == DK_OK; i++) {
        int nk = 0;
        const double *times = NULL;
        const dk_pose *poses = NULL;
        st = dk_scene_actor_track(from, ids[i], &nk, &times, &poses);
        if (st == DK_OK) st = dk_scene_set_actor_track(to, ids[i], nk, times, poses);
    }
    dk_free(ids);
    return st;
}

static int sim_fail(dk_sim *sim, int st)
{
    return dk__keep(st, sim->errmsg);
}

int dk_sim_create(const dk_scene *scene, const dk_rig *rig, const dk_sim_config *cfg,
                  dk_sim **out)
{
    if (out) *out = NULL;
    if (!scene || !rig || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (scene->n < 0 || (scene->n > 0 && (!scene->means || !scene->scales || !scene->rotations ||
                                          !scene->opacities || !scene->sh)))
        return dk__error(DK_EINVAL, __func__, "inconsistent scene (n = %lld, NULL arrays)",
                         (long long)scene->n);
    dk_sim_config def;
    if (!cfg) {
        dk_sim_config_init(&def);
        cfg = &def;
    }
    if (cfg->n_threads < 1 || cfg->n_threads > 1024)
        return dk__error(DK_EINVAL, __func__, "n_threads = %d outside 1..1024", cfg->n_threads);
    if (cfg->rolling_shutter != 0 && cfg->rolling_shutter != 1)
        return dk__error(DK_EINVAL, __func__, "rolling_shutter = %d is not 0 or 1",
                         cfg->rolling_shutter);
    dk_sim *sim = dk_calloc(1, sizeof *sim);
    if (!sim) return dk__error(DK_ENOMEM, __func__, "out of memory");
    sim->rig = *rig;
    int st = dk_rig_validate(&sim->rig);
    for (int i = 0; st == DK_OK && i < sim->rig.n_sensors; i++) {
        const dk_rig_sensor *s = &sim->rig.sensors[i];
        if (s->kind == DK_SENSOR_CAMERA && !(isfinite(s->readout_time) && s->readout_time >= 0))
            st = dk__error(DK_EINVAL, __func__, "sensor %s: readout_time %g is not >= 0", s->name,
                           s->readout_time);
    }
    if (st) {
        dk_free(sim);
        return st;
    }
    sim->scene = scene;
    sim->view = *scene;
    sim->view.actors = NULL;
    sim->cfg = *cfg;
    st = copy_tracks(scene, &sim->view);
    if (st == DK_OK) st = copy_tracks(scene, &sim->recorded);
    if (st == DK_OK && cfg->n_threads > 1) {
        dk_pool_config pc;
        dk_pool_config_init(&pc);
        pc.n_threads = cfg->n_threads;
        st = dk_pool_create(&pc, &sim->pool);
    }
    if (st == DK_OK && pthread_mutex_init(&sim->mu, NULL) != 0)
        st = dk__error(DK_ESYS, __func__, "pthread_mutex_init failed");
    if (st) {
        dk_pool_destroy(sim->pool);
        dk__scene_actors_free(sim->view.actors);
        dk__scene_actors_free(sim->recorded.actors);
        dk_free(sim);
        return st;
    }
    *out = sim;
    return DK_OK;
}

void dk_sim_destroy(dk_sim *sim)
{
    if (!sim) return;
    dk_pool_destroy(sim->pool);
    dk__scene_actors_free(sim->view.actors);
    dk__scene_actors_free(sim->recorded.actors);
    dk_free(sim->overridden);
    pthread_mutex_destroy(&sim->mu);
    dk_free(sim);
}

const char *dk_sim_errmsg(const dk_sim *sim)
{
    return sim ? sim->errmsg : "";
}

const dk_rig *dk_sim_rig(const dk_sim *sim)
{
    return sim ? &sim->rig : NULL;
}

int dk_sim_find_sensor(const dk_sim *sim, const char *name)
{
    if (!sim || !name) return dk__error(DK_EINVAL, __func__, "NULL argument");
    int i = dk_rig_find(&sim->rig, name);
    if (i >= 0) return i;
    char list[DK_RIG_MAX_SENSORS * (DK_SENSOR_NAME_MAX + 2) + 1];
    size_t at = 0;
    list[0] = '\0';
    for (int k = 0; k < sim->rig.n_sensors; k++) {
        int w = snprintf(list + at, sizeof list - at, "%s%s", k ? ", " : "",
                         sim->rig.sensors[k].name);
        if (w < 0 || (size_t)w >= sizeof list - at) break;
        at += (size_t)w;
    }
    dk__error(DK_ENOENT, __func__, "no sensor named '%.64s' (the rig has: %s)", name, list);
    dk_sim *mut = (dk_sim *)sim;   /* the handle's message buffer only */
    pthread_mutex_lock(&mut->mu);
    dk__keep(DK_ENOENT, mut->errmsg);
    pthread_mutex_unlock(&mut->mu);
    return DK_ENOENT;
}

/* A pose the renderers can take: finite, unit quaternion within 1e-6. */
static int check_pose(const dk_pose *p, const char *func, const char *what)
{
    double nn = 0;
    for (int j = 0; j < 4; j++) {
        if (!isfinite(p->q[j]))
            return dk__error(DK_EINVAL, func, "%s: quaternion has non-finite values", what);
        nn += p->q[j] * p->q[j];
    }
    for (int j = 0; j < 3; j++)
        if (!isfinite(p->t[j]))
            return dk__error(DK_EINVAL, func, "%s: translation has non-finite values", what);
    if (fabs(sqrt(nn) - 1.0) > 1e-6)
        return dk__error(DK_EINVAL, func,
                         "%s: quaternion norm %.9g is not 1 (not a rigid pose)", what, sqrt(nn));
    return DK_OK;
}

/* Checks the common arguments of a render; on success *s is the sensor. */
static int check_render(dk_sim *sim, int sensor, dk_sensor_kind kind, const dk_pose *ego,
                        double timestamp, const dk_pose *ego_end, const char *func,
                        const dk_rig_sensor **s)
{
    if (sensor < 0 || sensor >= sim->rig.n_sensors)
        return dk__error(DK_ERANGE, func, "sensor index %d outside the rig's 0..%d", sensor,
                         sim->rig.n_sensors - 1);
    *s = &sim->rig.sensors[sensor];
    if ((*s)->kind != kind)
        return dk__error(DK_EINVAL, func, "sensor %d (%s) is a %s, not a %s", sensor, (*s)->name,
                         (*s)->kind == DK_SENSOR_CAMERA ? "camera" : "lidar",
                         kind == DK_SENSOR_CAMERA ? "camera" : "lidar");
    if (!ego) return dk__error(DK_EINVAL, func, "NULL ego_to_world");
    if (!isfinite(timestamp))
        return dk__error(DK_EINVAL, func, "timestamp %g is not finite", timestamp);
    int st = check_pose(ego, func, "ego_to_world");
    if (st == DK_OK && ego_end) st = check_pose(ego_end, func, "ego_to_world_end");
    return st;
}

int dk_sim_render_camera(dk_sim *sim, int sensor, const dk_pose *ego_to_world, double timestamp,
                         const dk_pose *ego_to_world_end, float *rgb, float *alpha, float *depth)
{
    if (!sim) return dk__error(DK_EINVAL, __func__, "NULL sim");
    pthread_mutex_lock(&sim->mu);
    const dk_rig_sensor *s = NULL;
    int st = check_render(sim, sensor, DK_SENSOR_CAMERA, ego_to_world, timestamp,
                          ego_to_world_end, __func__, &s);
    if (st == DK_OK) {
        dk_render_config rc = sim->cfg.render;
        rc.time = timestamp;
        rc.rolling_shutter = 0;
        rc.cam_to_world_end = dk_pose_identity();
        rc.readout_duration = 0;
        dk_pose cam_to_world = dk_pose_compose(ego_to_world, &s->sensor_to_ego);
        if (sim->cfg.rolling_shutter && s->camera.shutter != DK_SHUTTER_GLOBAL &&
            s->readout_time > 0) {
            rc.rolling_shutter = 1;
            rc.readout_duration = s->readout_time;
            rc.cam_to_world_end =
                ego_to_world_end ? dk_pose_compose(ego_to_world_end, &s->sensor_to_ego)
                                 : cam_to_world;
        }
        st = dk_render_camera(&sim->view, &s->camera, &cam_to_world, &rc, sim->pool, rgb, alpha,
                              depth);
    }
    if (st) sim_fail(sim, st);
    pthread_mutex_unlock(&sim->mu);
    return st;
}

/* The lidar config of a sweep: cfg->lidar with the time and the motion. */
static dk_lidar_render_config lidar_config(const dk_sim *sim, const dk_rig_sensor *s,
                                           double timestamp, const dk_pose *ego_end)
{
    dk_lidar_render_config lc = sim->cfg.lidar;
    lc.time = timestamp;
    lc.sensor_motion = ego_end != NULL;
    lc.lidar_to_world_end = ego_end ? dk_pose_compose(ego_end, &s->sensor_to_ego)
                                    : dk_pose_identity();
    return lc;
}

int dk_sim_render_lidar(dk_sim *sim, int sensor, const dk_pose *ego_to_world, double timestamp,
                        const dk_pose *ego_to_world_end, float *range, float *intensity,
                        float *raydrop, float *alpha)
{
    if (!sim) return dk__error(DK_EINVAL, __func__, "NULL sim");
    pthread_mutex_lock(&sim->mu);
    const dk_rig_sensor *s = NULL;
    int st = check_render(sim, sensor, DK_SENSOR_LIDAR, ego_to_world, timestamp,
                          ego_to_world_end, __func__, &s);
    if (st == DK_OK) {
        dk_lidar_render_config lc = lidar_config(sim, s, timestamp, ego_to_world_end);
        dk_pose lidar_to_world = dk_pose_compose(ego_to_world, &s->sensor_to_ego);
        st = dk_render_lidar(&sim->view, &s->lidar, &lidar_to_world, &lc, sim->pool, range,
                             intensity, raydrop, alpha);
    }
    if (st) sim_fail(sim, st);
    pthread_mutex_unlock(&sim->mu);
    return st;
}

int dk_sim_lidar_points(dk_sim *sim, int sensor, const dk_pose *ego_to_world, double timestamp,
                        const dk_pose *ego_to_world_end, const float *range,
                        const float *intensity, const float *raydrop, float *points,
                        int64_t capacity, int64_t *n_points)
{
    if (!sim) return dk__error(DK_EINVAL, __func__, "NULL sim");
    pthread_mutex_lock(&sim->mu);
    const dk_rig_sensor *s = NULL;
    int st = check_render(sim, sensor, DK_SENSOR_LIDAR, ego_to_world, timestamp,
                          ego_to_world_end, __func__, &s);
    if (st == DK_OK) {
        dk_lidar_render_config lc = lidar_config(sim, s, timestamp, ego_to_world_end);
        dk_pose lidar_to_world = dk_pose_compose(ego_to_world, &s->sensor_to_ego);
        st = dk_lidar_points(&s->lidar, &lidar_to_world, &lc, range, intensity, raydrop, points,
                             capacity, n_points);
    }
    if (st) sim_fail(sim, st);
    pthread_mutex_unlock(&sim->mu);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Actor overrides                                                           */

static int find_override(const dk_sim *sim, int32_t id)
{
    for (int i = 0; i < sim->n_overridden; i++)
        if (sim->overridden[i] == id) return i;
    return -1;
}

static int set_actor_pose_locked(dk_sim *sim, int32_t actor_id, double timestamp,
                                 const dk_pose *actor_to_world)
{
    static const char *func = "dk_sim_set_actor_pose";
    if (!actor_to_world) return dk__error(DK_EINVAL, func, "NULL actor_to_world");
    if (!isfinite(timestamp))
        return dk__error(DK_EINVAL, func, "timestamp %g is not finite", timestamp);
    int st = check_pose(actor_to_world, func, "actor_to_world");
    if (st) return st;
    int n = 0;
    const double *times = NULL;
    const dk_pose *poses = NULL;
    if (actor_id < 0 || dk_scene_actor_track(&sim->view, actor_id, &n, &times, &poses) != DK_OK)
        return dk__error(DK_ENOENT, func,
                         "actor %d has no track in the scene (only tracked actors can be moved)",
                         (int)actor_id);
    int keep = 0;
    while (keep < n && times[keep] < timestamp) keep++;
    double before = nextafter(timestamp, -INFINITY);
    int add_before = isfinite(before) && (keep == 0 || times[keep - 1] < before);
    int m = keep + add_before + 1;
    double *nt = dk_malloc((size_t)m * sizeof *nt);
    dk_pose *np = dk_malloc((size_t)m * sizeof *np);
    if (!nt || !np) {
        dk_free(nt);
        dk_free(np);
        return dk__error(DK_ENOMEM, func, "out of memory for %d keyframes", m);
    }
    memcpy(nt, times, (size_t)keep * sizeof *nt);
    memcpy(np, poses, (size_t)keep * sizeof *np);
    if (add_before) {
        nt[keep] = before;
        st = dk_scene_actor_pose(&sim->view, actor_id, before, &np[keep]);
    }
    nt[m - 1] = timestamp;
    np[m - 1] = *actor_to_world;
    if (st == DK_OK && find_override(sim, actor_id) < 0) {
        if (sim->n_overridden == sim->cap_overridden) {
            int cap = sim->cap_overridden ? sim->cap_overridden * 2 : 8;
            int32_t *o = dk_realloc(sim->overridden, (size_t)cap * sizeof *o);
            if (!o)
                st = dk__error(DK_ENOMEM, func, "out of memory");
            else {
                sim->overridden = o;
                sim->cap_overridden = cap;
            }
        }
        if (st == DK_OK) sim->overridden[sim->n_overridden++] = actor_id;
    }
    /* Replaces the track (and invalidates times/poses) only on success. */
    if (st == DK_OK) st = dk_scene_set_actor_track(&sim->view, actor_id, m, nt, np);
    dk_free(nt);
    dk_free(np);
    return st;
}

int dk_sim_set_actor_pose(dk_sim *sim, int32_t actor_id, double timestamp,
                          const dk_pose *actor_to_world)
{
    if (!sim) return dk__error(DK_EINVAL, __func__, "NULL sim");
    pthread_mutex_lock(&sim->mu);
    int st = set_actor_pose_locked(sim, actor_id, timestamp, actor_to_world);
    if (st) sim_fail(sim, st);
    pthread_mutex_unlock(&sim->mu);
    return st;
}

/* Puts actor id's recorded track back into the view. */
static int restore_track(dk_sim *sim, int32_t id)
{
    int n = 0;
    const double *times = NULL;
    const dk_pose *poses = NULL;
    int st = dk_scene_actor_track(&sim->recorded, id, &n, &times, &poses);
    if (st != DK_OK) return dk__error(DK_EINTERNAL, "dk_sim_clear_actor_pose",
                                      "actor %d lost its recorded track", (int)id);
    return dk_scene_set_actor_track(&sim->view, id, n, times, poses);
}

int dk_sim_clear_actor_pose(dk_sim *sim, int32_t actor_id)
{
    if (!sim) return dk__error(DK_EINVAL, __func__, "NULL sim");
    pthread_mutex_lock(&sim->mu);
    int st = DK_OK;
    if (actor_id < 0) {
        while (st == DK_OK && sim->n_overridden > 0) {
            st = restore_track(sim, sim->overridden[sim->n_overridden - 1]);
            if (st == DK_OK) sim->n_overridden--;
        }
    } else {
        int i = find_override(sim, actor_id);
        if (i < 0) {
            st = dk__error(DK_ENOENT, __func__, "actor %d has no override", (int)actor_id);
        } else {
            st = restore_track(sim, actor_id);
            if (st == DK_OK) sim->overridden[i] = sim->overridden[--sim->n_overridden];
        }
    }
    if (st) sim_fail(sim, st);
    pthread_mutex_unlock(&sim->mu);
    return st;
}

int dk_sim_load_tracks_json(dk_sim *sim, const char *path)
{
    if (!sim || !path) return dk__error(DK_EINVAL, __func__, "NULL argument");
    pthread_mutex_lock(&sim->mu);
    /* Load into fresh track sets first, so a failure changes nothing. */
    dk_scene rec, view = sim->view;
    memset(&rec, 0, sizeof rec);
    view.actors = NULL;
    int st = dk_scene_load_tracks_json(&rec, path);
    if (st == DK_OK) st = copy_tracks(&rec, &view);
    if (st == DK_OK) {
        dk__scene_actors_free(sim->recorded.actors);
        dk__scene_actors_free(sim->view.actors);
        sim->recorded.actors = rec.actors;
        sim->view.actors = view.actors;
        sim->n_overridden = 0;
    } else {
        dk__scene_actors_free(rec.actors);
        dk__scene_actors_free(view.actors);
        sim_fail(sim, st);
    }
    pthread_mutex_unlock(&sim->mu);
    return st;
}

int dk_sim_actor_pose(dk_sim *sim, int32_t actor_id, double t, dk_pose *out)
{
    if (!sim || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    pthread_mutex_lock(&sim->mu);
    int st = dk_scene_actor_pose(&sim->view, actor_id, t, out);
    if (st) sim_fail(sim, st);
    pthread_mutex_unlock(&sim->mu);
    return st;
}
