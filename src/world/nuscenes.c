/*
 * The nuScenes-layout writer: renders every scenario's rig and writes one
 * nuScenes v1.0 scene per scenario (13 JSON tables, JPEG and .pcd.bin files,
 * optional MP4 per camera).
 *
 * Timing follows nuScenes: the lidar sweep nearest each 1/keyframe_hz tick is
 * a sample (key frame); each camera's frame closest to a sample is that
 * camera's key frame; everything else is a sweep pointing at the next sample.
 *
 * Work is cut into chunks of frames in time order. Inside a chunk every frame
 * is an independent pool task (render, statistics for annotations, encode,
 * write); then each camera's MP4 gets its frames in order, one task per
 * camera. Tables are written by the calling thread from per-frame results
 * stored by index, so the output bytes never depend on the thread count.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "world_impl.h"

#define NS_PATH_MAX 4096
#define NS_ANNOTATION_RANGE 60.0   /* metres from the ego (nuScenes: about 50) */
/* Lidar returns lie exactly on box faces; stored as float32 they land a few
 * micrometres either side. Boxes grow by this much (metres) when counting. */
#define NS_BOX_EPS 0.002

/* ------------------------------------------------------------------------ */
/* Tables and tokens                                                         */

enum {
    TB_ATTRIBUTE = 0, TB_CALIBRATED_SENSOR, TB_CATEGORY, TB_EGO_POSE, TB_INSTANCE, TB_LOG,
    TB_MAP, TB_SAMPLE, TB_SAMPLE_ANNOTATION, TB_SAMPLE_DATA, TB_SCENE, TB_SENSOR,
    TB_VISIBILITY, TB_COUNT
};

static const char *const table_names[TB_COUNT] = {
    "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
    "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility",
};

typedef char ns_token[33];

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* 128 random-looking bits, a pure function of (seed, table, a, b, c). */
static void make_token(uint64_t seed, int table, uint64_t a, uint64_t b, uint64_t c,
                       ns_token out)
{
    uint64_t id = dk_rng_stream_id((uint64_t)table + 1, a, b, c);
    uint32_t ctr[4] = {(uint32_t)id, (uint32_t)(id >> 32), (uint32_t)table, 0x6e757363u};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t o[4];
    dk_philox4x32(ctr, key, o);
    snprintf(out, sizeof(ns_token), "%08x%08x%08x%08x", (unsigned)o[0], (unsigned)o[1],
             (unsigned)o[2], (unsigned)o[3]);
}

/* The eight nuScenes attributes. */
enum {
    AT_VEHICLE_MOVING = 0, AT_VEHICLE_STOPPED, AT_VEHICLE_PARKED, AT_CYCLE_WITH_RIDER,
    AT_CYCLE_WITHOUT_RIDER, AT_PEDESTRIAN_SITTING, AT_PEDESTRIAN_STANDING,
    AT_PEDESTRIAN_MOVING, AT_COUNT
};
static const char *const attribute_names[AT_COUNT] = {
    "vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider",
    "cycle.without_rider", "pedestrian.sitting_lying_down", "pedestrian.standing",
    "pedestrian.moving",
};
static const char *const attribute_desc[AT_COUNT] = {
    "Vehicle is driving or about to drive.",
    "Vehicle with its driver inside stands still, e.g. in traffic or at a light.",
    "Vehicle is parked and not about to move.",
    "A rider is on the bicycle or motorcycle.",
    "No rider on the bicycle or motorcycle.",
    "Person is sitting or lying down.",
    "Person is standing still.",
    "Person is walking or running.",
};

static const char *const visibility_levels[4] = {"v0-40", "v40-60", "v60-80", "v80-100"};
static const char *const visibility_desc[4] = {
    "visibility of whole object is between 0 and 40%",
    "visibility of whole object is between 40 and 60%",
    "visibility of whole object is between 60 and 80%",
    "visibility of whole object is between 80 and 100%",
};

static int attribute_of(const dk_actor *a, double speed)
{
    switch (a->cls) {
    case DK_CLASS_CAR: case DK_CLASS_TRUCK: case DK_CLASS_BUS: case DK_CLASS_TRAILER:
    case DK_CLASS_CONSTRUCTION_VEHICLE:
        if (speed > 0.5) return AT_VEHICLE_MOVING;
        return a->parked ? AT_VEHICLE_PARKED : AT_VEHICLE_STOPPED;
    case DK_CLASS_PEDESTRIAN:
        return speed > 0.3 ? AT_PEDESTRIAN_MOVING : AT_PEDESTRIAN_STANDING;
    case DK_CLASS_MOTORCYCLE: case DK_CLASS_BICYCLE:
        return a->parked && speed <= 0.5 ? AT_CYCLE_WITHOUT_RIDER : AT_CYCLE_WITH_RIDER;
    default:
        return -1;
    }
}

static const char *category_desc(dk_actor_class c)
{
    switch (c) {
    case DK_CLASS_CAR: return "Vehicle designed primarily for personal use: cars, vans, SUVs.";
    case DK_CLASS_TRUCK: return "Vehicle designed primarily to carry cargo.";
    case DK_CLASS_BUS: return "Buses and shuttles designed to carry many people.";
    case DK_CLASS_TRAILER: return "Any vehicle trailer, towed or parked.";
    case DK_CLASS_CONSTRUCTION_VEHICLE: return "Vehicle designed for construction work.";
    case DK_CLASS_PEDESTRIAN: return "An adult person walking, standing or sitting.";
    case DK_CLASS_MOTORCYCLE: return "Motorcycles, scooters and mopeds.";
    case DK_CLASS_BICYCLE: return "Human- or electric-powered two-wheeled vehicle.";
    case DK_CLASS_TRAFFIC_CONE: return "Movable cone marking a lane closure or hazard.";
    case DK_CLASS_BARRIER: return "Temporary barrier redirecting traffic.";
    default: return "";
    }
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static int mkdir_p(const char *path)
{
    char buf[NS_PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return dk__error(DK_EINVAL, "dk_world_write_nuscenes", "%s: bad directory path",
                         dk__str(path));
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return dk__error(DK_EIO, "dk_world_write_nuscenes", "%s: cannot create directory: %s",
                             buf, strerror(errno));
        struct stat st;
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
            return dk__error(DK_EIO, "dk_world_write_nuscenes", "%s: not a directory", buf);
        buf[i] = saved;
    }
    return DK_OK;
}

DK_PRINTF(3, 4)
static int fmt_path(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap)
        return dk__error(DK_EINVAL, "dk_world_write_nuscenes", "path too long: %.64s...", out);
    return DK_OK;
}

/* Re-raises an error recorded on another thread on this one, unchanged. */
static int reraise(int status, const char *msg)
{
    char func[96] = "dk_world_write_nuscenes";
    const char *p = strstr(msg, "(): ");
    if (p && (size_t)(p - msg) < sizeof func) {
        memcpy(func, msg, (size_t)(p - msg));
        func[p - msg] = '\0';
        msg = p + 4;
    }
    return dk__error(status, func, "%s", msg);
}

static void jw_str(dk_jsonw *w, const char *key, const char *v)
{
    dk_jsonw_key(w, key);
    dk_jsonw_string(w, v);
}

static void jw_vec(dk_jsonw *w, const char *key, const double *v, int n)
{
    dk_jsonw_key(w, key);
    dk_jsonw_array_begin(w);
    for (int i = 0; i < n; i++) dk_jsonw_number(w, v[i]);
    dk_jsonw_array_end(w);
}

static int valid_name(const char *s)
{
    if (!s[0]) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.' || *s == '+'))
            return 0;
    return 1;
}

static int64_t timestamp_of(const dk_scenario *s, double t)
{
    return s->start_us + (int64_t)llround(t * 1e6);
}

/* ------------------------------------------------------------------------ */
/* Per-scene plan and results                                                */

typedef struct ns_channel {
    int sensor;            /* rig index */
    int sensor_row;        /* row in the shared sensor table */
    int cam_slot;          /* index among the scene's cameras, -1 for lidars */
    int n_frames;
    double *t;             /* frame start times, seconds */
    int *sample;           /* sample index its sample_token names */
    int *is_key;
} ns_channel;

typedef struct ns_cand {
    int actor;             /* index in s->actors */
    dk_pose box;           /* box at the sample time */
    int64_t lidar_pts;     /* main lidar key frame points inside the box */
} ns_cand;

typedef struct ns_idmap {
    int32_t id;
    int cand;
} ns_idmap;

typedef struct ns_sample {
    double t;
    int n_cand;
    ns_cand *cand;
    ns_idmap *ids;         /* candidates sorted by actor id */
    int64_t *cam_visible;  /* n_cams x n_cand: instance-mask pixels */
    int64_t *cam_sil;      /* n_cams x n_cand: unoccluded silhouette pixels */
} ns_sample;

typedef struct ns_item {
    int ch, frame;
    dk_tensor rgb;         /* kept for the MP4 until the chunk is encoded */
    int status;
    char err[DK_ERRMSG_MAX];
} ns_item;

typedef struct ns_scene {
    const dk_scenario *s;
    int index;
    uint64_t key;          /* token key of the scene: hash of its name */
    char log_name[160];
    int main_lidar;        /* channel index of the key-frame lidar, -1 none */
    int n_ch;
    ns_channel ch[DK_RIG_MAX_SENSORS];
    int n_cams;
    int n_samples;
    ns_sample *samples;
    int *key_frame;        /* n_samples x n_ch */
    int64_t n_frames;
} ns_scene;

typedef struct ns_writer {
    const char *out_dir;
    const dk_nuscenes_config *cfg;
    dk_pool *pool;
    uint64_t seed;
    int n_sensor_rows;
    char sensor_name[64][DK_SENSOR_NAME_MAX];
    dk_sensor_kind sensor_kind[64];
    /* the scene being rendered */
    ns_scene *sc;
    dk_world_renderer *r;
    dk_jpeg **jpeg;        /* one per pool slot */
    dk__mp4 *mp4[DK_RIG_MAX_SENSORS];
    int mp4_status[DK_RIG_MAX_SENSORS];
    char mp4_err[DK_RIG_MAX_SENSORS][DK_ERRMSG_MAX];
    ns_item *items;
    int n_items;
} ns_writer;

static void scene_free(ns_scene *sc)
{
    if (!sc) return;
    for (int c = 0; c < sc->n_ch; c++) {
        dk_free(sc->ch[c].t);
        dk_free(sc->ch[c].sample);
        dk_free(sc->ch[c].is_key);
    }
    if (sc->samples)
        for (int j = 0; j < sc->n_samples; j++) {
            dk_free(sc->samples[j].cand);
            dk_free(sc->samples[j].ids);
            dk_free(sc->samples[j].cam_visible);
            dk_free(sc->samples[j].cam_sil);
        }
    dk_free(sc->samples);
    dk_free(sc->key_frame);
    memset(sc, 0, sizeof *sc);
}

static int nearest_frame(const ns_channel *ch, double t)
{
    int best = -1;
    double bd = INFINITY;
    for (int f = 0; f < ch->n_frames; f++) {
        double d = fabs(ch->t[f] - t);
        if (d < bd) {
            bd = d;
            best = f;
        }
    }
    return best;
}

static int cmp_idmap(const void *a, const void *b)
{
    const ns_idmap *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

static int plan_scene(ns_writer *w, ns_scene *sc)
{
    static const char *fn = "dk_world_write_nuscenes";
    const dk_scenario *s = sc->s;
    const dk_rig *rig = &s->rig;
    double kf = w->cfg->keyframe_hz;

    sc->key = fnv1a(s->name);
    sc->main_lidar = -1;
    sc->n_ch = rig->n_sensors;
    for (int i = 0; i < rig->n_sensors; i++) {
        const dk_rig_sensor *rs = &rig->sensors[i];
        ns_channel *ch = &sc->ch[i];
        ch->sensor = i;
        ch->cam_slot = rs->kind == DK_SENSOR_CAMERA ? sc->n_cams++ : -1;
        if (rs->kind == DK_SENSOR_LIDAR && (sc->main_lidar < 0 || !strcmp(rs->name, "LIDAR_TOP")) &&
            (sc->main_lidar < 0 || strcmp(rig->sensors[sc->main_lidar].name, "LIDAR_TOP")))
            sc->main_lidar = i;   /* LIDAR_TOP, else the first lidar */
        ch->sensor_row = -1;
        for (int k = 0; k < w->n_sensor_rows; k++)
            if (!strcmp(w->sensor_name[k], rs->name)) ch->sensor_row = k;
        if (ch->sensor_row < 0) {
            if (w->n_sensor_rows == 64)
                return dk__error(DK_EINVAL, fn, "%s: more than 64 distinct sensor channels",
                                 s->name);
            ch->sensor_row = w->n_sensor_rows++;
            snprintf(w->sensor_name[ch->sensor_row], DK_SENSOR_NAME_MAX, "%s", rs->name);
            w->sensor_kind[ch->sensor_row] = rs->kind;
        } else if (w->sensor_kind[ch->sensor_row] != rs->kind) {
            return dk__error(DK_EINVAL, fn, "%s: sensor %s is a %s here and a %s in another scene",
                             s->name, rs->name, rs->kind == DK_SENSOR_CAMERA ? "camera" : "lidar",
                             rs->kind == DK_SENSOR_CAMERA ? "lidar" : "camera");
        }
        if (!valid_name(rs->name))
            return dk__error(DK_EINVAL, fn, "%s: sensor name '%s' is not usable in file names",
                             s->name, rs->name);
        if (!(kf <= rs->rate_hz / 2.0))
            return dk__error(DK_EINVAL, fn, "keyframe_hz = %g: must be at most half of %s's rate %g Hz",
                             kf, rs->name, rs->rate_hz);

        /* A frame needs its whole exposure (readout or sweep) inside the scenario. */
        double span = rs->kind == DK_SENSOR_CAMERA ? rs->readout_time : 1.0 / rs->lidar.spin_hz;
        if (!(span >= 0) || !isfinite(span)) span = 0;
        double rate = rs->rate_hz, off = rs->time_offset;
        int64_t k0 = off < 0 ? (int64_t)ceil(-off * rate - 1e-9) : 0;
        int64_t n = 0;
        while ((double)(k0 + n) / rate + off + span <= s->duration + 1e-6) n++;
        if (n == 0)
            return dk__error(DK_EINVAL, fn, "%s: %s has no frame in %g s", s->name, rs->name,
                             s->duration);
        if (n > 10000000)
            return dk__error(DK_EINVAL, fn, "%s: %s: too many frames", s->name, rs->name);
        ch->n_frames = (int)n;
        ch->t = dk_malloc((size_t)n * sizeof *ch->t);
        ch->sample = dk_malloc((size_t)n * sizeof *ch->sample);
        ch->is_key = dk_calloc((size_t)n, sizeof *ch->is_key);
        if (!ch->t || !ch->sample || !ch->is_key)
            return dk__error(DK_ENOMEM, fn, "%s: out of memory", s->name);
        for (int64_t k = 0; k < n; k++) ch->t[k] = (double)(k0 + k) / rate + off;
        sc->n_frames += n;
    }

    /* Samples: the key-frame lidar's sweep nearest each tick. */
    int max_samples = (int)floor(s->duration * kf + 1e-6) + 1;
    sc->samples = dk_calloc((size_t)max_samples, sizeof *sc->samples);
    sc->key_frame = dk_malloc((size_t)max_samples * (size_t)sc->n_ch * sizeof *sc->key_frame);
    if (!sc->samples || !sc->key_frame)
        return dk__error(DK_ENOMEM, fn, "%s: out of memory", s->name);
    int last = -1;
    for (int j = 0; j < max_samples; j++) {
        double tick = j / kf;
        double ts = tick;
        if (sc->main_lidar >= 0) {
            ns_channel *ch = &sc->ch[sc->main_lidar];
            int f = nearest_frame(ch, tick);
            if (f < 0 || f == last || fabs(ch->t[f] - tick) > 0.5 / kf) continue;
            last = f;
            ts = ch->t[f];
        }
        sc->samples[sc->n_samples++].t = ts;
    }
    if (sc->n_samples == 0)
        return dk__error(DK_EINVAL, fn, "%s: duration %g s gives no key frame", s->name,
                         s->duration);

    /* Every channel's key frame per sample, then the sample each frame names. */
    for (int c = 0; c < sc->n_ch; c++) {
        ns_channel *ch = &sc->ch[c];
        for (int j = 0; j < sc->n_samples; j++) {
            int f = nearest_frame(ch, sc->samples[j].t);
            if (ch->is_key[f])
                return dk__error(DK_EINVAL, fn, "%s: %s: two samples share key frame %d "
                                 "(keyframe_hz too high)", s->name, rig->sensors[c].name, f);
            ch->is_key[f] = 1;
            ch->sample[f] = j;
            sc->key_frame[j * sc->n_ch + c] = f;
        }
        int j = 0;
        for (int f = 0; f < ch->n_frames; f++) {
            if (ch->is_key[f]) continue;
            while (j < sc->n_samples - 1 && sc->samples[j].t < ch->t[f]) j++;
            ch->sample[f] = j;
        }
    }

    /* Annotation candidates: actors present at the sample time near the ego. */
    for (int j = 0; j < sc->n_samples; j++) {
        ns_sample *sm = &sc->samples[j];
        dk_pose ego = dk_scenario_ego_pose(s, sm->t);
        sm->cand = dk_calloc((size_t)(s->n_actors > 0 ? s->n_actors : 1), sizeof *sm->cand);
        sm->ids = dk_calloc((size_t)(s->n_actors > 0 ? s->n_actors : 1), sizeof *sm->ids);
        if (!sm->cand || !sm->ids) return dk__error(DK_ENOMEM, fn, "%s: out of memory", s->name);
        for (int a = 0; a < s->n_actors; a++) {
            dk_pose box;
            if (!dk_actor_pose_at(&s->actors[a], sm->t, &box)) continue;
            double dx = box.t[0] - ego.t[0], dy = box.t[1] - ego.t[1];
            if (dx * dx + dy * dy > NS_ANNOTATION_RANGE * NS_ANNOTATION_RANGE) continue;
            sm->ids[sm->n_cand] = (ns_idmap){s->actors[a].id, sm->n_cand};
            sm->cand[sm->n_cand++] = (ns_cand){a, box, 0};
        }
        qsort(sm->ids, (size_t)sm->n_cand, sizeof *sm->ids, cmp_idmap);
        size_t n = (size_t)(sc->n_cams ? sc->n_cams : 1) * (size_t)(sm->n_cand ? sm->n_cand : 1);
        sm->cam_visible = dk_calloc(n, sizeof *sm->cam_visible);
        sm->cam_sil = dk_calloc(n, sizeof *sm->cam_sil);
        if (!sm->cam_visible || !sm->cam_sil)
            return dk__error(DK_ENOMEM, fn, "%s: out of memory", s->name);
    }
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Annotation statistics                                                     */

/* Pixels whose ray hits the box (no occlusion), clipped to the image. */
static int64_t silhouette_pixels(const dk_camera *cam, const dk_pose *cam_to_world,
                                 const dk_pose *box_to_world, const double size[3])
{
    dk_pose world_to_box = dk_pose_inverse(box_to_world);
    dk_pose cam_to_box = dk_pose_compose(&world_to_box, cam_to_world);
    dk_pose box_to_cam = dk_pose_inverse(&cam_to_box);
    const double h[3] = {size[0] / 2, size[1] / 2, size[2] / 2};
    int W = cam->width, H = cam->height;
    int u0 = 0, u1 = W, v0 = 0, v1 = H;
    int pinhole = cam->model == DK_CAM_PINHOLE;
    if (pinhole) {
        int all_front = 1;
        double umin = INFINITY, umax = -INFINITY, vmin = INFINITY, vmax = -INFINITY;
        for (int k = 0; k < 8; k++) {
            double pb[3] = {(k & 1) ? h[0] : -h[0], (k & 2) ? h[1] : -h[1], (k & 4) ? h[2] : -h[2]};
            double pc[3];
            dk_pose_apply(&box_to_cam, pb, pc);
            if (pc[2] < 0.05) {
                all_front = 0;
                break;
            }
            double u = cam->fx * pc[0] / pc[2] + cam->cx, v = cam->fy * pc[1] / pc[2] + cam->cy;
            umin = fmin(umin, u);
            umax = fmax(umax, u);
            vmin = fmin(vmin, v);
            vmax = fmax(vmax, v);
        }
        if (all_front) {
            if (umax < 0 || vmax < 0 || umin > W || vmin > H) return 0;
            u0 = (int)fmax(0, floor(umin) - 1);
            u1 = (int)fmin(W, ceil(umax) + 1);
            v0 = (int)fmax(0, floor(vmin) - 1);
            v1 = (int)fmin(H, ceil(vmax) + 1);
        }
    }
    double R[9];
    dk_quat_to_rotation(cam_to_box.q, R);
    const double *o = cam_to_box.t;
    int64_t count = 0;
    for (int v = v0; v < v1; v++) {
        for (int u = u0; u < u1; u++) {
            double ray[3];
            if (pinhole) {
                ray[0] = (u + 0.5 - cam->cx) / cam->fx;
                ray[1] = (v + 0.5 - cam->cy) / cam->fy;
                ray[2] = 1.0;
            } else {
                double uv[2] = {u + 0.5, v + 0.5};
                if (!dk_camera_unproject(cam, uv, ray)) continue;
            }
            double tmin = 0, tmax = INFINITY;
            int hit = 1;
            for (int k = 0; k < 3 && hit; k++) {
                double d = R[3 * k] * ray[0] + R[3 * k + 1] * ray[1] + R[3 * k + 2] * ray[2];
                if (fabs(d) < 1e-12) {
                    if (o[k] < -h[k] || o[k] > h[k]) hit = 0;
                    continue;
                }
                double t1 = (-h[k] - o[k]) / d, t2 = (h[k] - o[k]) / d;
                if (t1 > t2) {
                    double tt = t1;
                    t1 = t2;
                    t2 = tt;
                }
                if (t1 > tmin) tmin = t1;
                if (t2 < tmax) tmax = t2;
                if (tmin > tmax) hit = 0;
            }
            count += hit;
        }
    }
    return count;
}

static int find_cand(const ns_sample *sm, int32_t id)
{
    size_t lo = 0, hi = (size_t)sm->n_cand;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (sm->ids[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < (size_t)sm->n_cand && sm->ids[lo].id == id ? sm->ids[lo].cand : -1;
}

static void camera_stats(const ns_scene *sc, const ns_channel *ch, int frame,
                         const dk_tensor *inst)
{
    const dk_scenario *s = sc->s;
    const dk_rig_sensor *rs = &s->rig.sensors[ch->sensor];
    ns_sample *sm = &sc->samples[ch->sample[frame]];
    if (sm->n_cand == 0) return;
    int64_t *vis = sm->cam_visible + (size_t)ch->cam_slot * (size_t)sm->n_cand;
    int64_t *sil = sm->cam_sil + (size_t)ch->cam_slot * (size_t)sm->n_cand;
    int64_t H = inst->shape[0], W = inst->shape[1];
    int32_t last_id = 0;
    int last_c = -1;
    for (int64_t v = 0; v < H; v++) {
        const int32_t *row = (const int32_t *)inst->data + v * inst->strides[0];
        for (int64_t u = 0; u < W; u++) {
            int32_t id = row[u * inst->strides[1]];
            if (id == 0) continue;
            if (id != last_id) {
                last_id = id;
                last_c = find_cand(sm, id);
            }
            if (last_c >= 0) vis[last_c]++;
        }
    }
    double t = ch->t[frame];
    dk_pose ego = dk_scenario_ego_pose(s, t);
    dk_pose cam_to_world = dk_pose_compose(&ego, &rs->sensor_to_ego);
    for (int c = 0; c < sm->n_cand; c++) {
        const dk_actor *a = &s->actors[sm->cand[c].actor];
        dk_pose box;
        if (!dk_actor_pose_at(a, t, &box)) continue;
        sil[c] = silhouette_pixels(&rs->camera, &cam_to_world, &box, a->size);
    }
}

static int lidar_stats(const ns_scene *sc, const ns_channel *ch, int frame, const dk_tensor *pts)
{
    const dk_scenario *s = sc->s;
    const dk_rig_sensor *rs = &s->rig.sensors[ch->sensor];
    ns_sample *sm = &sc->samples[ch->sample[frame]];
    if (sm->n_cand == 0) return DK_OK;
    dk_pose ego = dk_scenario_ego_pose(s, ch->t[frame]);
    dk_pose lidar_to_world = dk_pose_compose(&ego, &rs->sensor_to_ego);
    double radius2[256];
    int nc = sm->n_cand;
    for (int c = 0; c < nc && c < 256; c++) {
        const double *sz = s->actors[sm->cand[c].actor].size;
        double r = 0.5 * sqrt(sz[0] * sz[0] + sz[1] * sz[1] + sz[2] * sz[2]) + 0.01;
        radius2[c] = r * r;
    }
    double (*grown)[3] = dk_malloc((size_t)(nc > 0 ? nc : 1) * sizeof *grown);
    if (!grown) return DK_ENOMEM;
    for (int c = 0; c < nc; c++)
        for (int k = 0; k < 3; k++)
            grown[c][k] = s->actors[sm->cand[c].actor].size[k] + 2 * NS_BOX_EPS;
    int64_t n = pts->shape[0];
    for (int64_t i = 0; i < n; i++) {
        const float *p = (const float *)pts->data + i * pts->strides[0];
        int64_t st = pts->strides[1];
        double pl[3] = {p[0], p[st], p[2 * st]}, pw[3];
        dk_pose_apply(&lidar_to_world, pl, pw);
        for (int c = 0; c < nc; c++) {
            ns_cand *cd = &sm->cand[c];
            if (c < 256) {
                double dx = pw[0] - cd->box.t[0], dy = pw[1] - cd->box.t[1],
                       dz = pw[2] - cd->box.t[2];
                if (dx * dx + dy * dy + dz * dz > radius2[c]) continue;
            }
            if (dk__point_in_box(&cd->box, grown[c], pw)) cd->lidar_pts++;
        }
    }
    dk_free(grown);
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Rendering and files                                                       */

static int frame_rel_path(const ns_scene *sc, int c, int frame, char *out, size_t cap)
{
    const dk_rig_sensor *rs = &sc->s->rig.sensors[sc->ch[c].sensor];
    const ns_channel *ch = &sc->ch[c];
    return fmt_path(out, cap, "%s/%s/%s__%s__%lld%s", ch->is_key[frame] ? "samples" : "sweeps",
                    rs->name, sc->log_name, rs->name,
                    (long long)timestamp_of(sc->s, ch->t[frame]),
                    rs->kind == DK_SENSOR_CAMERA ? ".jpg" : ".pcd.bin");
}

static int write_points(const char *path, const dk_tensor *pts)
{
    int64_t n = pts->shape[0];
    size_t bytes = (size_t)n * DK_LIDAR_FIELDS * sizeof(float);
    int packed = dk_tensor_is_contiguous(pts);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    packed = 0;
#endif
    if (packed) return dk_file_write(path, pts->data, bytes);
    uint8_t *buf = dk_malloc(bytes ? bytes : 1);
    if (!buf) return dk__error(DK_ENOMEM, __func__, "%s: out of memory", path);
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < DK_LIDAR_FIELDS; k++) {
            const float *p = (const float *)pts->data + i * pts->strides[0] + k * pts->strides[1];
            uint32_t u;
            memcpy(&u, p, 4);
            uint8_t *d = buf + ((size_t)i * DK_LIDAR_FIELDS + (size_t)k) * 4;
            d[0] = (uint8_t)u;   /* little endian, as nuScenes */
            d[1] = (uint8_t)(u >> 8);
            d[2] = (uint8_t)(u >> 16);
            d[3] = (uint8_t)(u >> 24);
        }
    int st = dk_file_write(path, buf, bytes);
    dk_free(buf);
    return st;
}

static int process_item(ns_writer *w, ns_item *it, int ith)
{
    ns_scene *sc = w->sc;
    const ns_channel *ch = &sc->ch[it->ch];
    const dk_rig_sensor *rs = &sc->s->rig.sensors[ch->sensor];
    double t = ch->t[it->frame];
    int key = ch->is_key[it->frame];
    char rel[NS_PATH_MAX], path[NS_PATH_MAX];
    int st = frame_rel_path(sc, it->ch, it->frame, rel, sizeof rel);
    if (!st) st = fmt_path(path, sizeof path, "%s/%s", w->out_dir, rel);
    if (st) return st;
    if (rs->kind == DK_SENSOR_CAMERA) {
        dk_tensor inst;
        memset(&inst, 0, sizeof inst);
        st = dk_world_render_camera(w->r, ch->sensor, t, w->pool, &it->rgb, key ? &inst : NULL);
        if (st) return st;
        if (key) camera_stats(sc, ch, it->frame, &inst);
        dk_tensor_release(&inst);
        uint8_t *jpg = NULL;
        size_t size = 0;
        st = dk_jpeg_encode(w->jpeg[ith], &it->rgb, DK_PIX_RGB, w->cfg->jpeg_quality, 0, &jpg,
                            &size);
        if (st) return dk__error(st, "dk_world_write_nuscenes", "%s: JPEG encoding failed: %s",
                                 path, dk_errmsg());
        st = dk_file_write(path, jpg, size);
        dk_free(jpg);
        if (!w->cfg->write_video) dk_tensor_release(&it->rgb);
        return st;
    }
    dk_tensor pts;
    memset(&pts, 0, sizeof pts);
    st = dk_world_render_lidar(w->r, ch->sensor, t, w->pool, &pts, NULL);
    if (st) return st;
    if (pts.ndim != 2 || pts.shape[1] != DK_LIDAR_FIELDS || pts.dtype != DK_F32) {
        dk_tensor_release(&pts);
        return dk__error(DK_EINTERNAL, "dk_world_write_nuscenes",
                         "%s: the lidar renderer returned a bad point tensor", path);
    }
    if (key && it->ch == sc->main_lidar && lidar_stats(sc, ch, it->frame, &pts)) {
        dk_tensor_release(&pts);
        return dk__error(DK_ENOMEM, "dk_world_write_nuscenes", "%s: out of memory", path);
    }
    st = write_points(path, &pts);
    dk_tensor_release(&pts);
    return st;
}

static void item_task(void *ctx, int64_t begin, int64_t end, int ith)
{
    ns_writer *w = ctx;
    for (int64_t i = begin; i < end; i++) {
        ns_item *it = &w->items[i];
        it->status = process_item(w, it, ith);
        if (it->status) snprintf(it->err, sizeof it->err, "%s", dk_errmsg());
    }
}

static void video_task(void *ctx, int64_t begin, int64_t end, int ith)
{
    (void)ith;
    ns_writer *w = ctx;
    for (int64_t c = begin; c < end; c++) {
        if (!w->mp4[c] || w->mp4_status[c]) continue;
        for (int i = 0; i < w->n_items; i++) {
            ns_item *it = &w->items[i];
            if (it->ch != c || it->status || !it->rgb.data) continue;
            dk_tensor v = it->rgb;   /* H.264 4:2:0 wants even sizes: drop an odd last row/column */
            v.shape[0] &= ~(int64_t)1;
            v.shape[1] &= ~(int64_t)1;
            int st = dk__mp4_write(w->mp4[c], &v);
            if (st) {
                w->mp4_status[c] = st;
                snprintf(w->mp4_err[c], sizeof w->mp4_err[c], "%s", dk_errmsg());
                break;
            }
        }
    }
}

typedef struct ns_order {
    double t;
    int ch, frame;
} ns_order;

static int cmp_order(const void *a, const void *b)
{
    const ns_order *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    if (x->ch != y->ch) return x->ch < y->ch ? -1 : 1;
    return (x->frame > y->frame) - (x->frame < y->frame);
}

static int render_scene(ns_writer *w, ns_scene *sc, int64_t *done, int64_t total,
                        dk_progress_fn progress, void *progress_user)
{
    static const char *fn = "dk_world_write_nuscenes";
    const dk_scenario *s = sc->s;
    char path[NS_PATH_MAX];
    int st = DK_OK;
    ns_order *order = dk_malloc((size_t)sc->n_frames * sizeof *order);
    if (!order) return dk__error(DK_ENOMEM, fn, "%s: out of memory", s->name);
    int64_t k = 0;
    for (int c = 0; c < sc->n_ch; c++)
        for (int f = 0; f < sc->ch[c].n_frames; f++) order[k++] = (ns_order){sc->ch[c].t[f], c, f};
    qsort(order, (size_t)sc->n_frames, sizeof *order, cmp_order);

    dk_world_renderer_config rcfg;
    dk_world_renderer_config_init(&rcfg);
    /* Sensor noise and actor paint: keyed by the config seed and the
       scenario's own seed, so scenes differ and a re-render reproduces them. */
    rcfg.seed = w->seed ^ s->seed;
    st = dk_world_renderer_create(s, &rcfg, &w->r);
    if (st) goto done;

    memset(w->mp4, 0, sizeof w->mp4);
    memset(w->mp4_status, 0, sizeof w->mp4_status);
    if (w->cfg->write_video) {
        st = fmt_path(path, sizeof path, "%s/video/%s", w->out_dir, s->name);
        if (!st) st = mkdir_p(path);
        for (int c = 0; c < sc->n_ch && !st; c++) {
            const dk_rig_sensor *rs = &s->rig.sensors[c];
            if (rs->kind != DK_SENSOR_CAMERA) continue;
            st = fmt_path(path, sizeof path, "%s/video/%s/%s.mp4", w->out_dir, s->name, rs->name);
            if (!st)
                st = dk__mp4_open(path, rs->camera.width & ~1, rs->camera.height & ~1, rs->rate_hz,
                                  w->cfg->video_crf, &w->mp4[c]);
        }
        if (st) goto done;
    }

    int pool_n = dk_pool_size(w->pool);
    int chunk = 3 * pool_n < 8 ? 8 : 3 * pool_n;
    w->items = dk_calloc((size_t)chunk, sizeof *w->items);
    if (!w->items) {
        st = dk__error(DK_ENOMEM, fn, "%s: out of memory", s->name);
        goto done;
    }
    for (int64_t start = 0; start < sc->n_frames && !st; start += chunk) {
        int m = (int)(sc->n_frames - start < chunk ? sc->n_frames - start : chunk);
        w->n_items = m;
        for (int i = 0; i < m; i++) {
            memset(&w->items[i], 0, sizeof w->items[i]);
            w->items[i].ch = order[start + i].ch;
            w->items[i].frame = order[start + i].frame;
        }
        dk_pool_for(w->pool, m, 1, item_task, w);
        if (w->cfg->write_video) dk_pool_for(w->pool, sc->n_ch, 1, video_task, w);
        for (int i = 0; i < m; i++) {
            if (w->items[i].status && !st) st = reraise(w->items[i].status, w->items[i].err);
            dk_tensor_release(&w->items[i].rgb);
        }
        for (int c = 0; c < sc->n_ch && !st; c++)
            if (w->mp4_status[c]) st = reraise(w->mp4_status[c], w->mp4_err[c]);
        *done += m;
        if (progress && !st) progress(progress_user, *done, total, "frames");
    }

done:
    for (int c = 0; c < DK_RIG_MAX_SENSORS; c++) {
        if (!w->mp4[c]) continue;
        int cst = dk__mp4_close(w->mp4[c]);
        w->mp4[c] = NULL;
        if (cst && !st) st = cst;
    }
    dk_free(w->items);
    w->items = NULL;
    dk_world_renderer_destroy(w->r);
    w->r = NULL;
    dk_free(order);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Top-down map PNG                                                          */

typedef struct ns_canvas {
    uint8_t *px;
    int W, H;
    double x0, y1, res;
} ns_canvas;

static void canvas_fill_polygon(ns_canvas *cv, const double *pts, int n, const uint8_t rgb[3])
{
    double xs[256];
    for (int r = 0; r < cv->H; r++) {
        double y = cv->y1 - (r + 0.5) * cv->res;
        int nx = 0;
        for (int i = 0; i < n && nx < 256; i++) {
            const double *a = pts + 3 * i, *b = pts + 3 * ((i + 1) % n);
            if ((a[1] <= y) == (b[1] <= y)) continue;
            xs[nx++] = a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
        }
        for (int i = 1; i < nx; i++)   /* insertion sort: few crossings */
            for (int j = i; j > 0 && xs[j - 1] > xs[j]; j--) {
                double tmp = xs[j];
                xs[j] = xs[j - 1];
                xs[j - 1] = tmp;
            }
        for (int i = 0; i + 1 < nx; i += 2) {
            int c0 = (int)ceil((xs[i] - cv->x0) / cv->res - 0.5);
            int c1 = (int)floor((xs[i + 1] - cv->x0) / cv->res - 0.5);
            if (c0 < 0) c0 = 0;
            if (c1 >= cv->W) c1 = cv->W - 1;
            for (int c = c0; c <= c1; c++) memcpy(cv->px + 3 * ((size_t)r * cv->W + c), rgb, 3);
        }
    }
}

static void canvas_polyline(ns_canvas *cv, const double *pts, int n, int stride, double width_m,
                            const uint8_t rgb[3])
{
    int rad = (int)floor(width_m / cv->res / 2);
    for (int i = 0; i + 1 < n; i++) {
        double ax = (pts[stride * i] - cv->x0) / cv->res, ay = (cv->y1 - pts[stride * i + 1]) / cv->res;
        double bx = (pts[stride * (i + 1)] - cv->x0) / cv->res,
               by = (cv->y1 - pts[stride * (i + 1) + 1]) / cv->res;
        double len = hypot(bx - ax, by - ay);
        int steps = (int)ceil(len * 2) + 1;
        if (steps > 1000000) continue;
        for (int k = 0; k <= steps; k++) {
            double f = (double)k / steps;
            int cx = (int)floor(ax + f * (bx - ax)), cy = (int)floor(ay + f * (by - ay));
            for (int dy = -rad; dy <= rad; dy++)
                for (int dx = -rad; dx <= rad; dx++) {
                    int x = cx + dx, y = cy + dy;
                    if (x < 0 || y < 0 || x >= cv->W || y >= cv->H) continue;
                    memcpy(cv->px + 3 * ((size_t)y * cv->W + x), rgb, 3);
                }
        }
    }
}

static int write_map_png(const dk_scenario *s, const char *path)
{
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int i = 0; i < s->n_map; i++) {
        const dk_map_element *e = &s->map[i];
        for (int k = 0; k < e->n_points; k++) {
            x0 = fmin(x0, e->points[3 * k]);
            x1 = fmax(x1, e->points[3 * k]);
            y0 = fmin(y0, e->points[3 * k + 1]);
            y1 = fmax(y1, e->points[3 * k + 1]);
        }
    }
    for (int k = 0; k < s->ego.n_states; k++) {
        x0 = fmin(x0, s->ego.states[k].x - 20);
        x1 = fmax(x1, s->ego.states[k].x + 20);
        y0 = fmin(y0, s->ego.states[k].y - 20);
        y1 = fmax(y1, s->ego.states[k].y + 20);
    }
    if (!(x1 > x0) || !(y1 > y0)) {
        x0 = y0 = -50;
        x1 = y1 = 50;
    }
    x0 -= 5;
    y0 -= 5;
    x1 += 5;
    y1 += 5;
    ns_canvas cv = {NULL, 0, 0, x0, y1, 0.5};
    while ((x1 - x0) / cv.res > 4096 || (y1 - y0) / cv.res > 4096) cv.res *= 2;
    cv.W = (int)ceil((x1 - x0) / cv.res);
    cv.H = (int)ceil((y1 - y0) / cv.res);
    dk_tensor img;
    int st = dk_tensor_alloc(&img, DK_U8, 3, (int64_t[]){cv.H, cv.W, 3});
    if (st) return st;
    cv.px = img.data;
    for (size_t i = 0; i < (size_t)cv.W * cv.H * 3; i++) cv.px[i] = 34;
    static const uint8_t sidewalk[3] = {128, 128, 120}, drivable[3] = {70, 70, 78},
                         crosswalk[3] = {190, 190, 190}, marking[3] = {210, 210, 210},
                         boundary[3] = {230, 140, 40}, white[3] = {245, 245, 245},
                         yellow[3] = {240, 200, 40}, lane[3] = {70, 120, 210},
                         wait[3] = {230, 60, 60}, ego[3] = {220, 30, 30};
    static const int fill_order[] = {DK_MAP_SIDEWALK, DK_MAP_DRIVABLE_AREA, DK_MAP_CROSSWALK,
                                     DK_MAP_ROAD_MARKING};
    for (size_t l = 0; l < sizeof fill_order / sizeof fill_order[0]; l++)
        for (int i = 0; i < s->n_map; i++) {
            const dk_map_element *e = &s->map[i];
            if ((int)e->layer != fill_order[l] || e->n_points < 3) continue;
            const uint8_t *c = e->layer == DK_MAP_SIDEWALK ? sidewalk
                             : e->layer == DK_MAP_DRIVABLE_AREA ? drivable
                             : e->layer == DK_MAP_CROSSWALK ? crosswalk : marking;
            canvas_fill_polygon(&cv, e->points, e->n_points, c);
        }
    for (int i = 0; i < s->n_map; i++) {
        const dk_map_element *e = &s->map[i];
        if (e->n_points < 2) continue;
        switch (e->layer) {
        case DK_MAP_ROAD_BOUNDARY: canvas_polyline(&cv, e->points, e->n_points, 3, 1.0, boundary); break;
        case DK_MAP_LANE: canvas_polyline(&cv, e->points, e->n_points, 3, 0.0, lane); break;
        case DK_MAP_WAIT_LINE: canvas_polyline(&cv, e->points, e->n_points, 3, 1.0, wait); break;
        case DK_MAP_LANELINE:
            canvas_polyline(&cv, e->points, e->n_points, 3, 0.0,
                            e->style == DK_LINE_SOLID_YELLOW || e->style == DK_LINE_DOUBLE_YELLOW
                                ? yellow : white);
            break;
        default: break;
        }
    }
    for (int k = 0; k + 1 < s->ego.n_states; k++) {
        double seg[6] = {s->ego.states[k].x, s->ego.states[k].y, 0, s->ego.states[k + 1].x,
                         s->ego.states[k + 1].y, 0};
        canvas_polyline(&cv, seg, 2, 3, 1.0, ego);
    }
    uint8_t *png = NULL;
    size_t size = 0;
    st = dk_png_encode(&img, &png, &size);
    if (!st) st = dk_file_write(path, png, size);
    dk_free(png);
    dk_tensor_release(&img);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Tables                                                                    */

static void scene_tokens_sd(const ns_writer *w, const ns_scene *sc, int c, int f, ns_token out)
{
    if (f < 0 || f >= sc->ch[c].n_frames) {
        out[0] = '\0';
        return;
    }
    make_token(w->seed, TB_SAMPLE_DATA, sc->key, (uint64_t)c, (uint64_t)f, out);
}

static void sample_token(const ns_writer *w, const ns_scene *sc, int j, ns_token out)
{
    if (j < 0 || j >= sc->n_samples) {
        out[0] = '\0';
        return;
    }
    make_token(w->seed, TB_SAMPLE, sc->key, (uint64_t)j, 0, out);
}

static void ann_token(const ns_writer *w, const ns_scene *sc, int32_t actor_id, int j,
                      ns_token out)
{
    if (j < 0) {
        out[0] = '\0';
        return;
    }
    make_token(w->seed, TB_SAMPLE_ANNOTATION, sc->key, (uint64_t)(uint32_t)actor_id,
               (uint64_t)j, out);
}

static int visibility_bin(double f)
{
    if (f > 0.8) return 4;
    if (f > 0.6) return 3;
    if (f > 0.4) return 2;
    return 1;
}

/* Appends the scene's rows to the open table writers. */
static int write_scene_tables(ns_writer *w, ns_scene *sc, dk_jsonw **tw)
{
    static const char *fn = "dk_world_write_nuscenes";
    const dk_scenario *s = sc->s;
    ns_token tok, tok2, tok3, log_tok, map_tok;
    dk_jsonw *jw;

    /* log + map */
    make_token(w->seed, TB_LOG, sc->key, 0, 0, log_tok);
    make_token(w->seed, TB_MAP, sc->key, 0, 0, map_tok);
    time_t secs = (time_t)(s->start_us / 1000000);
    struct tm tmv;
    gmtime_r(&secs, &tmv);
    char date[32];
    snprintf(date, sizeof date, "%04d-%02d-%02d", tmv.tm_year + 1900, tmv.tm_mon + 1, tmv.tm_mday);
    jw = tw[TB_LOG];
    dk_jsonw_object_begin(jw);
    jw_str(jw, "token", log_tok);
    jw_str(jw, "logfile", sc->log_name);
    jw_str(jw, "vehicle", "dk-ego");
    jw_str(jw, "date_captured", date);
    jw_str(jw, "location", s->location[0] ? s->location : "drivekit-town");
    dk_jsonw_object_end(jw);

    char rel[NS_PATH_MAX], path[NS_PATH_MAX];
    int st = fmt_path(rel, sizeof rel, "maps/%s.png", map_tok);
    if (!st) st = fmt_path(path, sizeof path, "%s/%s", w->out_dir, rel);
    if (!st) st = write_map_png(s, path);
    if (st) return st;
    jw = tw[TB_MAP];
    dk_jsonw_object_begin(jw);
    jw_str(jw, "token", map_tok);
    dk_jsonw_key(jw, "log_tokens");
    dk_jsonw_array_begin(jw);
    dk_jsonw_string(jw, log_tok);
    dk_jsonw_array_end(jw);
    jw_str(jw, "category", "semantic_prior");
    jw_str(jw, "filename", rel);
    dk_jsonw_object_end(jw);

    /* scene */
    char desc[1024];
    int off = snprintf(desc, sizeof desc, "drivekit procedural town drive, seed %llu",
                       (unsigned long long)s->seed);
    for (int e = 0; e < s->n_edits && off > 0 && (size_t)off < sizeof desc; e++)
        off += snprintf(desc + off, sizeof desc - (size_t)off, "; %s: %s",
                        dk_edit_kind_name(s->edits[e].kind), s->edits[e].description);
    jw = tw[TB_SCENE];
    make_token(w->seed, TB_SCENE, sc->key, 0, 0, tok);
    sample_token(w, sc, 0, tok2);
    sample_token(w, sc, sc->n_samples - 1, tok3);
    dk_jsonw_object_begin(jw);
    jw_str(jw, "token", tok);
    jw_str(jw, "log_token", log_tok);
    dk_jsonw_key(jw, "nbr_samples");
    dk_jsonw_int(jw, sc->n_samples);
    jw_str(jw, "first_sample_token", tok2);
    jw_str(jw, "last_sample_token", tok3);
    jw_str(jw, "name", s->name);
    jw_str(jw, "description", desc);
    dk_jsonw_object_end(jw);
    ns_token scene_tok;
    memcpy(scene_tok, tok, sizeof tok);

    /* calibrated_sensor */
    for (int c = 0; c < sc->n_ch; c++) {
        const dk_rig_sensor *rs = &s->rig.sensors[c];
        jw = tw[TB_CALIBRATED_SENSOR];
        make_token(w->seed, TB_CALIBRATED_SENSOR, sc->key, (uint64_t)c, 0, tok);
        make_token(w->seed, TB_SENSOR, fnv1a(rs->name), 0, 0, tok2);
        dk_jsonw_object_begin(jw);
        jw_str(jw, "token", tok);
        jw_str(jw, "sensor_token", tok2);
        jw_vec(jw, "translation", rs->sensor_to_ego.t, 3);
        jw_vec(jw, "rotation", rs->sensor_to_ego.q, 4);
        dk_jsonw_key(jw, "camera_intrinsic");
        dk_jsonw_array_begin(jw);
        if (rs->kind == DK_SENSOR_CAMERA) {
            const dk_camera *cam = &rs->camera;
            /* nuScenes puts pixel centres on integers: shift drivekit's by 0.5. */
            double K[3][3] = {{cam->fx, 0, cam->cx - 0.5}, {0, cam->fy, cam->cy - 0.5}, {0, 0, 1}};
            for (int r = 0; r < 3; r++) {
                dk_jsonw_array_begin(jw);
                for (int q = 0; q < 3; q++) dk_jsonw_number(jw, K[r][q]);
                dk_jsonw_array_end(jw);
            }
        }
        dk_jsonw_array_end(jw);
        dk_jsonw_object_end(jw);
    }

    /* sample */
    for (int j = 0; j < sc->n_samples; j++) {
        jw = tw[TB_SAMPLE];
        sample_token(w, sc, j, tok);
        dk_jsonw_object_begin(jw);
        jw_str(jw, "token", tok);
        dk_jsonw_key(jw, "timestamp");
        dk_jsonw_int(jw, timestamp_of(s, sc->samples[j].t));
        sample_token(w, sc, j - 1, tok2);
        jw_str(jw, "prev", tok2);
        sample_token(w, sc, j + 1, tok2);
        jw_str(jw, "next", tok2);
        jw_str(jw, "scene_token", scene_tok);
        dk_jsonw_object_end(jw);
    }

    /* sample_data + ego_pose (nuScenes gives both the same token) */
    for (int c = 0; c < sc->n_ch; c++) {
        const dk_rig_sensor *rs = &s->rig.sensors[c];
        const ns_channel *ch = &sc->ch[c];
        ns_token calib;
        make_token(w->seed, TB_CALIBRATED_SENSOR, sc->key, (uint64_t)c, 0, calib);
        for (int f = 0; f < ch->n_frames; f++) {
            int64_t ts = timestamp_of(s, ch->t[f]);
            dk_pose ego = dk_scenario_ego_pose(s, ch->t[f]);
            scene_tokens_sd(w, sc, c, f, tok);
            jw = tw[TB_EGO_POSE];
            dk_jsonw_object_begin(jw);
            jw_str(jw, "token", tok);
            dk_jsonw_key(jw, "timestamp");
            dk_jsonw_int(jw, ts);
            jw_vec(jw, "rotation", ego.q, 4);
            jw_vec(jw, "translation", ego.t, 3);
            dk_jsonw_object_end(jw);

            st = frame_rel_path(sc, c, f, rel, sizeof rel);
            if (st) return st;
            jw = tw[TB_SAMPLE_DATA];
            dk_jsonw_object_begin(jw);
            jw_str(jw, "token", tok);
            sample_token(w, sc, ch->sample[f], tok2);
            jw_str(jw, "sample_token", tok2);
            jw_str(jw, "ego_pose_token", tok);
            jw_str(jw, "calibrated_sensor_token", calib);
            dk_jsonw_key(jw, "timestamp");
            dk_jsonw_int(jw, ts);
            jw_str(jw, "fileformat", rs->kind == DK_SENSOR_CAMERA ? "jpg" : "pcd");
            dk_jsonw_key(jw, "is_key_frame");
            dk_jsonw_bool(jw, ch->is_key[f]);
            dk_jsonw_key(jw, "height");
            dk_jsonw_int(jw, rs->kind == DK_SENSOR_CAMERA ? rs->camera.height : 0);
            dk_jsonw_key(jw, "width");
            dk_jsonw_int(jw, rs->kind == DK_SENSOR_CAMERA ? rs->camera.width : 0);
            jw_str(jw, "filename", rel);
            scene_tokens_sd(w, sc, c, f - 1, tok2);
            jw_str(jw, "prev", tok2);
            scene_tokens_sd(w, sc, c, f + 1, tok2);
            jw_str(jw, "next", tok2);
            dk_jsonw_object_end(jw);
        }
    }

    /* Annotations: which (sample, actor) pairs are kept. */
    int na = s->n_actors;
    int *keep = dk_malloc((size_t)sc->n_samples * (size_t)(na > 0 ? na : 1) * sizeof *keep);
    if (!keep) return dk__error(DK_ENOMEM, fn, "%s: out of memory", s->name);
    for (size_t i = 0; i < (size_t)sc->n_samples * (size_t)na; i++) keep[i] = -1;
    for (int j = 0; j < sc->n_samples; j++) {
        ns_sample *sm = &sc->samples[j];
        for (int c = 0; c < sm->n_cand; c++) {
            int64_t vis = 0;
            for (int k = 0; k < sc->n_cams; k++) vis += sm->cam_visible[(size_t)k * sm->n_cand + c];
            if (sm->cand[c].lidar_pts > 0 || vis > 0) keep[(size_t)j * na + sm->cand[c].actor] = c;
        }
    }
    /* instance */
    for (int a = 0; a < na; a++) {
        int first = -1, lastj = -1, count = 0;
        for (int j = 0; j < sc->n_samples; j++)
            if (keep[(size_t)j * na + a] >= 0) {
                if (first < 0) first = j;
                lastj = j;
                count++;
            }
        if (!count) continue;
        const dk_actor *ac = &s->actors[a];
        jw = tw[TB_INSTANCE];
        make_token(w->seed, TB_INSTANCE, sc->key, (uint64_t)(uint32_t)ac->id, 0, tok);
        make_token(w->seed, TB_CATEGORY, fnv1a(dk_actor_class_category(ac->cls)), 0, 0, tok2);
        dk_jsonw_object_begin(jw);
        jw_str(jw, "token", tok);
        jw_str(jw, "category_token", tok2);
        dk_jsonw_key(jw, "nbr_annotations");
        dk_jsonw_int(jw, count);
        ann_token(w, sc, ac->id, first, tok2);
        jw_str(jw, "first_annotation_token", tok2);
        ann_token(w, sc, ac->id, lastj, tok2);
        jw_str(jw, "last_annotation_token", tok2);
        dk_jsonw_object_end(jw);
    }
    /* sample_annotation */
    for (int j = 0; j < sc->n_samples; j++) {
        ns_sample *sm = &sc->samples[j];
        sample_token(w, sc, j, tok3);
        for (int a = 0; a < na; a++) {
            int c = keep[(size_t)j * na + a];
            if (c < 0) continue;
            const dk_actor *ac = &s->actors[a];
            const ns_cand *cd = &sm->cand[c];
            double best = 0;
            for (int k = 0; k < sc->n_cams; k++) {
                int64_t sil = sm->cam_sil[(size_t)k * sm->n_cand + c];
                int64_t vis = sm->cam_visible[(size_t)k * sm->n_cand + c];
                if (sil > 0) best = fmax(best, fmin(1.0, (double)vis / (double)sil));
            }
            dk_actor_state stt;
            double vel[3] = {0, 0, 0};
            dk_actor_state_at(ac, sm->t, &stt, vel);
            int attr = attribute_of(ac, hypot(vel[0], vel[1]));
            int prev = -1, next = -1;
            for (int q = j - 1; q >= 0 && prev < 0; q--)
                if (keep[(size_t)q * na + a] >= 0) prev = q;
            for (int q = j + 1; q < sc->n_samples && next < 0; q++)
                if (keep[(size_t)q * na + a] >= 0) next = q;

            jw = tw[TB_SAMPLE_ANNOTATION];
            dk_jsonw_object_begin(jw);
            ann_token(w, sc, ac->id, j, tok);
            jw_str(jw, "token", tok);
            jw_str(jw, "sample_token", tok3);
            make_token(w->seed, TB_INSTANCE, sc->key, (uint64_t)(uint32_t)ac->id, 0, tok);
            jw_str(jw, "instance_token", tok);
            char vis_tok[2] = {(char)('0' + visibility_bin(best)), '\0'};
            jw_str(jw, "visibility_token", vis_tok);
            dk_jsonw_key(jw, "attribute_tokens");
            dk_jsonw_array_begin(jw);
            if (attr >= 0) {
                make_token(w->seed, TB_ATTRIBUTE, fnv1a(attribute_names[attr]), 0, 0, tok);
                dk_jsonw_string(jw, tok);
            }
            dk_jsonw_array_end(jw);
            jw_vec(jw, "translation", cd->box.t, 3);
            double size[3] = {ac->size[1], ac->size[0], ac->size[2]};   /* w, l, h */
            jw_vec(jw, "size", size, 3);
            jw_vec(jw, "rotation", cd->box.q, 4);
            ann_token(w, sc, ac->id, prev, tok);
            jw_str(jw, "prev", tok);
            ann_token(w, sc, ac->id, next, tok);
            jw_str(jw, "next", tok);
            dk_jsonw_key(jw, "num_lidar_pts");
            dk_jsonw_int(jw, cd->lidar_pts);
            dk_jsonw_key(jw, "num_radar_pts");
            dk_jsonw_int(jw, 0);
            dk_jsonw_object_end(jw);
        }
    }
    dk_free(keep);
    return DK_OK;
}

static void write_shared_tables(ns_writer *w, dk_jsonw **tw)
{
    ns_token tok;
    for (int k = 0; k < w->n_sensor_rows; k++) {
        make_token(w->seed, TB_SENSOR, fnv1a(w->sensor_name[k]), 0, 0, tok);
        dk_jsonw_object_begin(tw[TB_SENSOR]);
        jw_str(tw[TB_SENSOR], "token", tok);
        jw_str(tw[TB_SENSOR], "channel", w->sensor_name[k]);
        jw_str(tw[TB_SENSOR], "modality", w->sensor_kind[k] == DK_SENSOR_CAMERA ? "camera" : "lidar");
        dk_jsonw_object_end(tw[TB_SENSOR]);
    }
    for (int c = 0; c < DK_CLASS_COUNT; c++) {
        const char *name = dk_actor_class_category((dk_actor_class)c);
        int dup = 0;
        for (int p = 0; p < c; p++) dup |= !strcmp(name, dk_actor_class_category((dk_actor_class)p));
        if (dup) continue;
        make_token(w->seed, TB_CATEGORY, fnv1a(name), 0, 0, tok);
        dk_jsonw_object_begin(tw[TB_CATEGORY]);
        jw_str(tw[TB_CATEGORY], "token", tok);
        jw_str(tw[TB_CATEGORY], "name", name);
        jw_str(tw[TB_CATEGORY], "description", category_desc((dk_actor_class)c));
        dk_jsonw_object_end(tw[TB_CATEGORY]);
    }
    for (int a = 0; a < AT_COUNT; a++) {
        make_token(w->seed, TB_ATTRIBUTE, fnv1a(attribute_names[a]), 0, 0, tok);
        dk_jsonw_object_begin(tw[TB_ATTRIBUTE]);
        jw_str(tw[TB_ATTRIBUTE], "token", tok);
        jw_str(tw[TB_ATTRIBUTE], "name", attribute_names[a]);
        jw_str(tw[TB_ATTRIBUTE], "description", attribute_desc[a]);
        dk_jsonw_object_end(tw[TB_ATTRIBUTE]);
    }
    for (int v = 0; v < 4; v++) {
        char t[2] = {(char)('1' + v), '\0'};
        dk_jsonw_object_begin(tw[TB_VISIBILITY]);
        jw_str(tw[TB_VISIBILITY], "description", visibility_desc[v]);
        jw_str(tw[TB_VISIBILITY], "token", t);
        jw_str(tw[TB_VISIBILITY], "level", visibility_levels[v]);
        dk_jsonw_object_end(tw[TB_VISIBILITY]);
    }
}

/* ------------------------------------------------------------------------ */
/* Entry points                                                              */

void dk_nuscenes_config_init(dk_nuscenes_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->version = "v1.0-mini";
    cfg->keyframe_hz = 2.0;
    cfg->jpeg_quality = 90;
    cfg->write_video = 1;
    cfg->video_crf = 23;
    cfg->seed = 0;
}

int dk_world_write_nuscenes(const dk_scenario *const *scenes, int n_scenes, const char *out_dir,
                            const dk_nuscenes_config *cfg, dk_pool *pool,
                            dk_progress_fn progress, void *progress_user)
{
    static const char *fn = "dk_world_write_nuscenes";
    dk_nuscenes_config def;
    if (!cfg) {
        dk_nuscenes_config_init(&def);
        cfg = &def;
    }
    if (!scenes || n_scenes < 1 || !out_dir || !out_dir[0])
        return dk__error(DK_EINVAL, fn, "%s", !scenes ? "scenes is NULL"
                                              : n_scenes < 1 ? "n_scenes < 1" : "no out_dir");
    if (!cfg->version || !valid_name(cfg->version))
        return dk__error(DK_EINVAL, fn, "version '%s' is not a usable folder name",
                         dk__str(cfg->version));
    if (!(cfg->keyframe_hz > 0) || !isfinite(cfg->keyframe_hz))
        return dk__error(DK_EINVAL, fn, "keyframe_hz = %g must be > 0", cfg->keyframe_hz);
    if (cfg->jpeg_quality < 1 || cfg->jpeg_quality > 100)
        return dk__error(DK_EINVAL, fn, "jpeg_quality = %d outside 1..100", cfg->jpeg_quality);
    if (cfg->write_video && (cfg->video_crf < 0 || cfg->video_crf > 51))
        return dk__error(DK_EINVAL, fn, "video_crf = %d outside 0..51", cfg->video_crf);
    for (int i = 0; i < n_scenes; i++) {
        if (!scenes[i]) return dk__error(DK_EINVAL, fn, "scenes[%d] is NULL", i);
        if (dk_scenario_validate(scenes[i])) {
            char inner[DK_ERRMSG_MAX];
            snprintf(inner, sizeof inner, "%s", dk_errmsg());
            return dk__error(DK_EINVAL, fn, "scenes[%d] is invalid: %s", i, inner);
        }
        if (!valid_name(scenes[i]->name))
            return dk__error(DK_EINVAL, fn, "scenes[%d]: name '%s' is not usable in file names", i,
                             scenes[i]->name);
        for (int k = 0; k < i; k++)
            if (!strcmp(scenes[k]->name, scenes[i]->name))
                return dk__error(DK_EINVAL, fn, "scenes[%d] and scenes[%d] are both named '%s'", k,
                                 i, scenes[i]->name);
    }

    ns_writer w;
    memset(&w, 0, sizeof w);
    w.out_dir = out_dir;
    w.cfg = cfg;
    w.pool = pool;
    w.seed = cfg->seed;
    dk_jsonw *tw[TB_COUNT] = {NULL};
    int pool_n = dk_pool_size(pool);
    int st = DK_OK;
    ns_scene *sc = dk_calloc((size_t)n_scenes, sizeof *sc);
    w.jpeg = dk_calloc((size_t)pool_n, sizeof *w.jpeg);
    if (!sc || !w.jpeg) {
        st = dk__error(DK_ENOMEM, fn, "out of memory");
        goto done;
    }
    int64_t total = 0, done_frames = 0;
    for (int i = 0; i < n_scenes && !st; i++) {
        sc[i].s = scenes[i];
        sc[i].index = i;
        const dk_scenario *s = scenes[i];
        time_t secs = (time_t)(s->start_us / 1000000);
        struct tm tmv;
        gmtime_r(&secs, &tmv);
        snprintf(sc[i].log_name, sizeof sc[i].log_name, "%s-%04d-%02d-%02d-%02d-%02d-%02d+0000",
                 s->name, tmv.tm_year + 1900, tmv.tm_mon + 1, tmv.tm_mday, tmv.tm_hour,
                 tmv.tm_min, tmv.tm_sec);
        st = plan_scene(&w, &sc[i]);
        total += sc[i].n_frames;
    }
    if (st) goto done;

    /* Folders. */
    char path[NS_PATH_MAX];
    st = fmt_path(path, sizeof path, "%s/%s", out_dir, cfg->version);
    if (!st) st = mkdir_p(path);
    if (!st) st = fmt_path(path, sizeof path, "%s/maps", out_dir);
    if (!st) st = mkdir_p(path);
    for (int k = 0; k < w.n_sensor_rows && !st; k++) {
        st = fmt_path(path, sizeof path, "%s/samples/%s", out_dir, w.sensor_name[k]);
        if (!st) st = mkdir_p(path);
        if (!st) st = fmt_path(path, sizeof path, "%s/sweeps/%s", out_dir, w.sensor_name[k]);
        if (!st) st = mkdir_p(path);
    }
    if (st) goto done;

    for (int k = 0; k < pool_n; k++)
        if ((st = dk_jpeg_create(&w.jpeg[k])) != DK_OK) goto done;
    for (int t = 0; t < TB_COUNT; t++) {
        if ((st = dk_jsonw_create(1, &tw[t])) != DK_OK) goto done;
        dk_jsonw_array_begin(tw[t]);
    }
    if (progress) progress(progress_user, 0, total, "frames");
    for (int i = 0; i < n_scenes && !st; i++) {
        w.sc = &sc[i];
        st = render_scene(&w, &sc[i], &done_frames, total, progress, progress_user);
        if (!st) st = write_scene_tables(&w, &sc[i], tw);
    }
    if (st) goto done;
    write_shared_tables(&w, tw);
    for (int t = 0; t < TB_COUNT && !st; t++) {
        dk_jsonw_array_end(tw[t]);
        st = fmt_path(path, sizeof path, "%s/%s/%s.json", out_dir, cfg->version, table_names[t]);
        if (!st) st = dk_jsonw_save(tw[t], path);
    }

done:
    for (int t = 0; t < TB_COUNT; t++) dk_jsonw_destroy(tw[t]);
    if (w.jpeg)
        for (int k = 0; k < pool_n; k++) dk_jpeg_destroy(w.jpeg[k]);
    dk_free(w.jpeg);
    if (sc)
        for (int i = 0; i < n_scenes; i++) scene_free(&sc[i]);
    dk_free(sc);
    return st;
}
