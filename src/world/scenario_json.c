/*
 * Scenarios as JSON: dk_scenario_load / dk_scenario_parse / dk_scenario_save.
 *
 * The format ("drivekit.scenario", version 1) is meant to be read and edited
 * by people. Units are metres, seconds and radians; frames are FLU (x forward,
 * y left, z up), camera frames OpenCV (camera.h). Example (abridged):
 *
 *   {
 *     "format": "drivekit.scenario",
 *     "version": 1,
 *     "name": "scene-0007",                  // < 64 bytes; default "scene-0001"
 *     "location": "drivekit-town",           // < 64 bytes
 *     "seed": 7,                             // integer >= 0, or a decimal string
 *     "start_us": 1533151603547590,          // absolute time of t = 0, integer
 *     "duration": 20,                        // default: the last state time
 *     "ego": {                               // default: at rest at the origin
 *       "size": [4.08, 1.73, 1.56],          // length, width, height
 *       "states": [[0, -70, -1.75, 0, 0],    // [t, x, y, z, yaw]: the rear-axle
 *                  [0.01, -69.91, -1.75, 0, 0], ...]     // centre on the ground
 *     },
 *     "actors": [
 *       {"id": 1, "class": "car", "size": [4.6, 1.9, 1.6], "parked": false,
 *        "states": [[0, 12.5, -5.25, 0.8, 0], ...]}      // box centre + yaw
 *     ],
 *     "map": [
 *       {"id": 1, "layer": "lanelines", "style": "dashed_white",
 *        "points": [[-220, -3.5, 0], [-7, -3.5, 0]]},
 *       {"id": 2, "layer": "crosswalks", "points": [[...], [...], [...], ...]},
 *       {"id": 3, "layer": "traffic_lights", "center": [-7.5, -12, 5],
 *        "size": [0.35, 0.35, 1], "yaw": 3.14159, "pitch": 0, "roll": 0}
 *     ],
 *     "rig": {"sensors": [
 *       {"name": "CAM_FRONT", "kind": "camera",
 *        "sensor_to_ego": {"rotation": [w, x, y, z], "translation": [x, y, z]},
 *        "rate_hz": 12, "time_offset": 0,
 *        "camera": {"model": "pinhole", "width": 1600, "height": 900,
 *                   "fx": 1266.4, "fy": 1266.4, "cx": 816.3, "cy": 491.5,
 *                   "shutter": "top_to_bottom", "readout_time": 0.03}},
 *       {"name": "LIDAR_TOP", "kind": "lidar", "sensor_to_ego": {...},
 *        "rate_hz": 20, "lidar": {"preset": 32}}
 *     ]},
 *     "edits": [{"kind": "cut-in", "actor_id": 3, "added": false, "t_start": 6.7,
 *                "t_end": 9.7, "description": "..."}]
 *   }
 *
 * Fields. Only "format" and "version" are required at the top; everything
 * else has the dk_scenario_create defaults. Map "id"s and actor "id"s may be
 * left out (they are numbered after the largest given one). Map elements:
 * "layer" is one of the dk_map_layer names; polylines and polygons have
 * "points" ([x, y, z] each; polygons counter-clockwise), cuboids "center",
 * "size", "yaw" and optional "pitch", "roll"; "style" (solid_white,
 * dashed_white, solid_yellow, double_yellow; default solid_white) is for
 * lanelines. Actor classes are the nuScenes detection names (car, truck, bus,
 * trailer, construction_vehicle, pedestrian, motorcycle, bicycle,
 * traffic_cone, barrier) or their category names ("vehicle.car").
 * Cameras: "model" pinhole | opencv | fisheye | ftheta; fx, fy, cx, cy (f-theta:
 * cx, cy only); optional "k" (up to 6), "p" (2), "s" (4), f-theta "fw_poly",
 * "bw_poly" (up to 6 each), "ftheta_ref" (angle_to_pixeldist |
 * pixeldist_to_angle; default angle_to_pixeldist), "linear_cde" ([c, d, e];
 * default [1, 0, 0] for f-theta), "max_angle" (0: derived), "margin",
 * "shutter" (global | top_to_bottom | bottom_to_top | left_to_right |
 * right_to_left) and "readout_time" (seconds). When an f-theta camera gives
 * only its reference polynomial, the other one is fitted. Lidars: {"preset":
 * 32 | 64 | 128} or all of n_beams, n_columns, spin_hz, direction (+1/-1),
 * azimuth_start, min_range, max_range, elevation[n_beams],
 * azimuth_offset[n_beams]. Rotations are unit quaternions (w, x, y, z): within
 * 1e-3 of unit length they are normalised, otherwise rejected.
 *
 * Reading is strict, so typos do not pass silently: unknown or repeated
 * fields, unknown names, wrong types, wrong array lengths, numbers that do not
 * fit a double (1e999), more than 1e5 actors or map elements or 1e6 states or
 * points per item, and everything dk_scenario_validate rejects (duplicate ids,
 * non-increasing times, ...) are DK_EINVALIDDATA, with the document name and
 * the field path: "scene.json: actors[2].states[5]: expected array of 5
 * numbers, got 4 items".
 *
 * Writing uses dk_jsonw (two-space indent, shortest round-trip numbers) and
 * then folds every array that holds only numbers onto one line, so a state is
 * one line. Doubles round-trip exactly: load(save(s)) equals s field by
 * field, and save(load(save(s))) is byte-identical to save(s). The optional
 * camera fields are written when they are not zero, "k"-like arrays without
 * their trailing zeros.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "world_impl.h"

#define FORMAT_NAME "drivekit.scenario"
#define FORMAT_VERSION 1
#define MAX_ACTORS 100000
#define MAX_MAP 100000
#define MAX_STATES 1000000
#define MAX_POINTS 1000000
#define MAX_EDITS 10000

/* ------------------------------------------------------------------------ */
/* Reader helpers                                                            */

typedef struct rd {
    const char *func;
    const char *name;
} rd;

/* Re-raises the JSON reader's error under our name: malformed input is
 * DK_EINVALIDDATA whatever the cursor API said (missing, wrong type, range). */
static int rethrow(const rd *r, int st)
{
    return dk__reraise_invalid(st, r->func);
}

static const char *cur_path(const dk_json_cur *c)
{
    return c ? c->path : NULL;
}

/* DK_EINVALIDDATA naming the document and the JSON path of cursor c. */
#define fail(r, c, ...) dk__json_invalid((r)->func, (r)->name, cur_path(c), __VA_ARGS__)

static int oom(const rd *r)
{
    return dk__error(DK_ENOMEM, r->func, "%s: out of memory", r->name);
}

/* Every member of obj must be in `allowed` (NULL-terminated) and appear once. */
static int check_keys(const rd *r, const dk_json_cur *obj, const char *const *allowed)
{
    if (dk_json_type_of(obj) != DK_JSON_OBJECT) {
        dk_json_cur tmp;
        return rethrow(r, dk_json_field(obj, "", &tmp));
    }
    size_t n = dk_json_size(obj);
    for (size_t i = 0; i < n; i++) {
        const char *key;
        dk_json_cur m;
        int st = dk_json_member(obj, i, &key, &m);
        if (st) return rethrow(r, st);
        int ok = 0;
        for (const char *const *a = allowed; *a; a++) ok |= strcmp(*a, key) == 0;
        if (!ok) return fail(r, &m, "unknown field");
        for (size_t j = 0; j < i; j++) {
            const char *k2;
            dk_json_cur m2;
            if (dk_json_member(obj, j, &k2, &m2) == DK_OK && strcmp(k2, key) == 0)
                return fail(r, &m, "field given twice");
        }
    }
    return DK_OK;
}

static int present(const dk_json_cur *c)
{
    return dk_json_type_of(c) != DK_JSON_MISSING;
}

/* Optional field: *c is MISSING when absent. */
static int opt(const rd *r, const dk_json_cur *obj, const char *key, dk_json_cur *c)
{
    int st = dk_json_field_opt(obj, key, c);
    return st ? rethrow(r, st) : DK_OK;
}

static int req(const rd *r, const dk_json_cur *obj, const char *key, dk_json_cur *c)
{
    int st = dk_json_field(obj, key, c);
    return st ? rethrow(r, st) : DK_OK;
}

static int num(const rd *r, const dk_json_cur *obj, const char *key, int required, double *out)
{
    dk_json_cur c;
    int st = required ? req(r, obj, key, &c) : opt(r, obj, key, &c);
    if (st || !present(&c)) return st;
    st = dk_json_number(&c, out);
    return st ? rethrow(r, st) : DK_OK;
}

static int nums(const rd *r, const dk_json_cur *obj, const char *key, int required, double *out,
                size_t n)
{
    dk_json_cur c;
    int st = required ? req(r, obj, key, &c) : opt(r, obj, key, &c);
    if (st || !present(&c)) return st;
    st = dk_json_numbers(&c, out, n);
    return st ? rethrow(r, st) : DK_OK;
}

/* An array of up to `max` numbers; the rest of out[] is zero. */
static int nums_upto(const rd *r, const dk_json_cur *obj, const char *key, double *out,
                     size_t max)
{
    dk_json_cur c;
    int st = opt(r, obj, key, &c);
    if (st || !present(&c)) return st;
    if (dk_json_type_of(&c) != DK_JSON_ARRAY)
        return fail(r, &c, "expected an array of up to %zu numbers", max);
    size_t n = dk_json_size(&c);
    if (n > max) return fail(r, &c, "expected up to %zu numbers, got %zu", max, n);
    for (size_t i = 0; i < max; i++) out[i] = 0;
    st = dk_json_numbers(&c, out, n);
    return st ? rethrow(r, st) : DK_OK;
}

static int str(const rd *r, const dk_json_cur *obj, const char *key, int required,
               const char **out)
{
    dk_json_cur c;
    int st = required ? req(r, obj, key, &c) : opt(r, obj, key, &c);
    if (st || !present(&c)) return st;
    st = dk_json_string(&c, out);
    return st ? rethrow(r, st) : DK_OK;
}

static int integer(const rd *r, const dk_json_cur *obj, const char *key, int required,
                   int64_t lo, int64_t hi, int64_t *out)
{
    dk_json_cur c;
    int st = required ? req(r, obj, key, &c) : opt(r, obj, key, &c);
    if (st || !present(&c)) return st;
    st = dk_json_int(&c, lo, hi, out);
    return st ? rethrow(r, st) : DK_OK;
}

static int boolean(const rd *r, const dk_json_cur *obj, const char *key, int *out)
{
    dk_json_cur c;
    int st = opt(r, obj, key, &c);
    if (st || !present(&c)) return st;
    st = dk_json_bool(&c, out);
    return st ? rethrow(r, st) : DK_OK;
}

/* A string field copied into a fixed buffer. */
static int str_buf(const rd *r, const dk_json_cur *obj, const char *key, char *dst,
                   size_t cap)
{
    const char *v = NULL;
    int st = str(r, obj, key, 0, &v);
    if (st || !v) return st;
    if (strlen(v) >= cap) {
        dk_json_cur c;
        dk_json_field_opt(obj, key, &c);
        return fail(r, &c, "longer than %zu bytes", cap - 1);
    }
    memcpy(dst, v, strlen(v) + 1);
    return DK_OK;
}

static int array_of(const rd *r, const dk_json_cur *c, size_t max, const char *what, size_t *n)
{
    if (dk_json_type_of(c) != DK_JSON_ARRAY) return fail(r, c, "expected an array of %s", what);
    *n = dk_json_size(c);
    if (*n > max) return fail(r, c, "%zu %s exceed the limit of %zu", *n, what, max);
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Scenario parts                                                            */

static int read_states(const rd *r, const dk_json_cur *obj, dk_actor *a)
{
    dk_json_cur c;
    int st = req(r, obj, "states", &c);
    size_t n = 0;
    if (st || (st = array_of(r, &c, MAX_STATES, "states", &n))) return st;
    if (n == 0) return fail(r, &c, "needs at least one state");
    a->states = dk_malloc(n * sizeof *a->states);
    if (!a->states) return oom(r);
    a->n_states = (int32_t)n;
    for (size_t i = 0; i < n; i++) {
        dk_json_cur it;
        double v[5];
        if ((st = dk_json_item(&c, i, &it)) || (st = dk_json_numbers(&it, v, 5)))
            return rethrow(r, st);
        a->states[i] = (dk_actor_state){v[0], v[1], v[2], v[3], v[4]};
    }
    return DK_OK;
}

static int read_ego(const rd *r, const dk_json_cur *root, dk_scenario *s)
{
    static const char *const keys[] = {"size", "states", NULL};
    dk_json_cur c;
    int st = opt(r, root, "ego", &c);
    if (st || !present(&c)) return st;
    if ((st = check_keys(r, &c, keys))) return st;
    if ((st = nums(r, &c, "size", 0, s->ego.size, 3))) return st;
    dk_actor tmp = {0};
    st = read_states(r, &c, &tmp);
    if (st) {
        dk_free(tmp.states);
        return st;
    }
    dk_free(s->ego.states);
    s->ego.states = tmp.states;
    s->ego.n_states = tmp.n_states;
    return DK_OK;
}

static int read_actor(const rd *r, const dk_json_cur *c, dk_actor *a)
{
    static const char *const keys[] = {"id", "class", "size", "parked", "states", NULL};
    int st = check_keys(r, c, keys);
    if (st) return st;
    int64_t id = 0;
    if ((st = integer(r, c, "id", 0, 1, INT32_MAX, &id))) return st;
    a->id = (int32_t)id;
    const char *cls;
    if ((st = str(r, c, "class", 1, &cls))) return st;
    if (dk_actor_class_parse(cls, &a->cls)) {
        dk_json_cur f;
        dk_json_field_opt(c, "class", &f);
        return fail(r, &f, "unknown actor class \"%s\"", cls);
    }
    if ((st = nums(r, c, "size", 1, a->size, 3))) return st;
    if ((st = boolean(r, c, "parked", &a->parked))) return st;
    return read_states(r, c, a);
}

static int read_actors(const rd *r, const dk_json_cur *root, dk_scenario *s)
{
    dk_json_cur c;
    size_t n = 0;
    int st = opt(r, root, "actors", &c);
    if (st || !present(&c)) return st;
    if ((st = array_of(r, &c, MAX_ACTORS, "actors", &n))) return st;
    for (size_t i = 0; i < n; i++) {
        dk_json_cur it;
        if ((st = dk_json_item(&c, i, &it))) return rethrow(r, st);
        dk_actor a = {0};
        st = read_actor(r, &it, &a);
        if (!st && dk__scenario_append_actor(s, &a)) st = oom(r);
        if (st) {
            dk_free(a.states);
            return st;
        }
    }
    return DK_OK;
}

static const char *const k_styles[] = {"solid_white", "dashed_white", "solid_yellow",
                                       "double_yellow"};

static int read_map_element(const rd *r, const dk_json_cur *c, dk_map_element *e)
{
    static const char *const line_keys[] = {"id", "layer", "style", "points", NULL};
    static const char *const cuboid_keys[] = {"id",  "layer", "style", "center", "size",
                                              "yaw", "pitch", "roll",  NULL};
    const char *layer;
    int st = str(r, c, "layer", 1, &layer);
    if (st) return st;
    if (dk_map_layer_parse(layer, &e->layer)) {
        dk_json_cur f;
        dk_json_field_opt(c, "layer", &f);
        return fail(r, &f, "unknown map layer \"%s\"", layer);
    }
    e->geometry = dk_map_layer_geometry(e->layer);
    if ((st = check_keys(r, c, e->geometry == DK_GEOM_CUBOID ? cuboid_keys : line_keys)))
        return st;
    int64_t id = 0;
    if ((st = integer(r, c, "id", 0, 1, INT32_MAX, &id))) return st;
    e->id = (int32_t)id;
    const char *style = NULL;
    if ((st = str(r, c, "style", 0, &style))) return st;
    if (style) {
        int found = -1;
        for (int k = 0; k < 4; k++)
            if (strcmp(style, k_styles[k]) == 0) found = k;
        if (found < 0) {
            dk_json_cur f;
            dk_json_field_opt(c, "style", &f);
            return fail(r, &f, "unknown line style \"%s\"", style);
        }
        e->style = (dk_line_style)found;
    }
    if (e->geometry == DK_GEOM_CUBOID) {
        if ((st = nums(r, c, "center", 1, e->center, 3)) || (st = nums(r, c, "size", 1, e->size, 3)) ||
            (st = num(r, c, "yaw", 1, &e->yaw)) || (st = num(r, c, "pitch", 0, &e->pitch)) ||
            (st = num(r, c, "roll", 0, &e->roll)))
            return st;
        return DK_OK;
    }
    dk_json_cur p;
    size_t n = 0;
    if ((st = req(r, c, "points", &p)) || (st = array_of(r, &p, MAX_POINTS, "points", &n)))
        return st;
    e->points = dk_malloc((n ? n : 1) * 3 * sizeof(double));
    if (!e->points) return oom(r);
    e->n_points = (int32_t)n;
    for (size_t i = 0; i < n; i++) {
        dk_json_cur it;
        if ((st = dk_json_item(&p, i, &it)) || (st = dk_json_numbers(&it, e->points + 3 * i, 3)))
            return rethrow(r, st);
    }
    return DK_OK;
}

static int read_map(const rd *r, const dk_json_cur *root, dk_scenario *s)
{
    dk_json_cur c;
    size_t n = 0;
    int st = opt(r, root, "map", &c);
    if (st || !present(&c)) return st;
    if ((st = array_of(r, &c, MAX_MAP, "map elements", &n))) return st;
    for (size_t i = 0; i < n; i++) {
        dk_json_cur it;
        if ((st = dk_json_item(&c, i, &it))) return rethrow(r, st);
        dk_map_element e;
        memset(&e, 0, sizeof e);
        st = read_map_element(r, &it, &e);
        if (!st && dk__scenario_append_map(s, &e)) st = oom(r);
        if (st) {
            dk_free(e.points);
            return st;
        }
    }
    return DK_OK;
}

static const char *const k_shutters[] = {"global", "top_to_bottom", "bottom_to_top",
                                         "left_to_right", "right_to_left"};
static const char *const k_ftheta_refs[] = {"angle_to_pixeldist", "pixeldist_to_angle"};

static int pick_name(const rd *r, const dk_json_cur *obj, const char *key,
                     const char *const *names, int n, int *out)
{
    const char *v = NULL;
    int st = str(r, obj, key, 0, &v);
    if (st || !v) return st;
    for (int i = 0; i < n; i++) {
        if (strcmp(v, names[i]) == 0) {
            *out = i;
            return DK_OK;
        }
    }
    dk_json_cur f;
    dk_json_field_opt(obj, key, &f);
    return fail(r, &f, "unknown %s \"%s\"", key, v);
}

static int all_zero(const double *v, int n)
{
    for (int i = 0; i < n; i++)
        if (v[i] != 0) return 0;
    return 1;
}

static int read_camera(const rd *r, const dk_json_cur *c, dk_rig_sensor *sn)
{
    static const char *const keys[] = {
        "model", "width", "height", "fx", "fy", "cx", "cy", "k", "p", "s", "fw_poly",
        "bw_poly", "ftheta_ref", "linear_cde", "max_angle", "margin", "shutter",
        "readout_time", NULL};
    int st = check_keys(r, c, keys);
    if (st) return st;
    dk_camera *cam = &sn->camera;
    memset(cam, 0, sizeof *cam);
    const char *model;
    if ((st = str(r, c, "model", 1, &model))) return st;
    if (dk_camera_model_parse(model, &cam->model)) {
        dk_json_cur f;
        dk_json_field_opt(c, "model", &f);
        return fail(r, &f, "unknown camera model \"%s\"", model);
    }
    int64_t w, h;
    if ((st = integer(r, c, "width", 1, 1, 65536, &w)) ||
        (st = integer(r, c, "height", 1, 1, 65536, &h)))
        return st;
    cam->width = (int)w;
    cam->height = (int)h;
    int ft = cam->model == DK_CAM_FTHETA;
    int ref = 0, shutter = 0;
    double lin[3] = {0, 0, 0};
    if ((st = num(r, c, "fx", !ft, &cam->fx)) || (st = num(r, c, "fy", !ft, &cam->fy)) ||
        (st = num(r, c, "cx", 1, &cam->cx)) || (st = num(r, c, "cy", 1, &cam->cy)) ||
        (st = nums_upto(r, c, "k", cam->k, 6)) || (st = nums_upto(r, c, "p", cam->p, 2)) ||
        (st = nums_upto(r, c, "s", cam->s, 4)) ||
        (st = nums_upto(r, c, "fw_poly", cam->fw_poly, 6)) ||
        (st = nums_upto(r, c, "bw_poly", cam->bw_poly, 6)) ||
        (st = pick_name(r, c, "ftheta_ref", k_ftheta_refs, 2, &ref)) ||
        (st = num(r, c, "max_angle", 0, &cam->max_angle)) ||
        (st = num(r, c, "margin", 0, &cam->margin)) ||
        (st = pick_name(r, c, "shutter", k_shutters, 5, &shutter)) ||
        (st = num(r, c, "readout_time", 0, &sn->readout_time)))
        return st;
    cam->ftheta_ref = (dk_ftheta_ref)ref;
    cam->shutter = (dk_shutter)shutter;
    dk_json_cur lc;
    if ((st = opt(r, c, "linear_cde", &lc))) return st;
    if (present(&lc)) {
        if ((st = dk_json_numbers(&lc, lin, 3))) return rethrow(r, st);
    } else if (ft) {
        lin[0] = 1;
    }
    cam->linear_c = lin[0];
    cam->linear_d = lin[1];
    cam->linear_e = lin[2];
    if (ft) {
        const double *refpoly = ref ? cam->bw_poly : cam->fw_poly;
        const double *other = ref ? cam->fw_poly : cam->bw_poly;
        if (all_zero(refpoly, 6)) {
            dk_json_cur f;
            dk_json_field_opt(c, ref ? "bw_poly" : "fw_poly", &f);
            return fail(r, &f, "the f-theta reference polynomial is missing");
        }
        if (all_zero(other, 6)) {
            /* Fit the other direction, as dk_camera_init_ftheta does. */
            dk_camera fit;
            double poly[6];
            memcpy(poly, refpoly, sizeof poly);
            dk_camera_init_ftheta(&fit, cam->width, cam->height, cam->cx, cam->cy,
                                  cam->ftheta_ref, poly, lin, cam->max_angle);
            memcpy(ref ? cam->fw_poly : cam->bw_poly, ref ? fit.fw_poly : fit.bw_poly,
                   sizeof cam->fw_poly);
            if (cam->max_angle == 0) cam->max_angle = fit.max_angle;
        }
    }
    return DK_OK;
}

static int lidar_equal(const dk_lidar_model *a, const dk_lidar_model *b)
{
    if (a->n_beams != b->n_beams || a->n_columns != b->n_columns || a->spin_hz != b->spin_hz ||
        a->direction != b->direction || a->azimuth_start != b->azimuth_start ||
        a->min_range != b->min_range || a->max_range != b->max_range)
        return 0;
    if (a->n_beams < 0 || a->n_beams > DK_LIDAR_MAX_BEAMS) return 0;
    for (int i = 0; i < a->n_beams; i++)
        if (a->elevation[i] != b->elevation[i] || a->azimuth_offset[i] != b->azimuth_offset[i])
            return 0;
    return 1;
}

static int read_lidar(const rd *r, const dk_json_cur *c, dk_lidar_model *m)
{
    static const char *const preset_keys[] = {"preset", NULL};
    static const char *const keys[] = {"n_beams",       "n_columns", "spin_hz",   "direction",
                                       "azimuth_start", "min_range", "max_range", "elevation",
                                       "azimuth_offset", NULL};
    memset(m, 0, sizeof *m);
    dk_json_cur p;
    int st = opt(r, c, "preset", &p);
    if (st) return st;
    if (present(&p)) {
        if ((st = check_keys(r, c, preset_keys))) return st;
        int64_t v;
        if ((st = dk_json_int(&p, 0, 1 << 20, &v))) return rethrow(r, st);
        if (dk_lidar_model_preset(m, (dk_lidar_preset)v))
            return fail(r, &p, "unknown lidar preset %d (32, 64 or 128)", (int)v);
        return DK_OK;
    }
    if ((st = check_keys(r, c, keys))) return st;
    int64_t nb, nc, dir;
    if ((st = integer(r, c, "n_beams", 1, 1, DK_LIDAR_MAX_BEAMS, &nb)) ||
        (st = integer(r, c, "n_columns", 1, 1, 1000000, &nc)) ||
        (st = num(r, c, "spin_hz", 1, &m->spin_hz)) ||
        (st = integer(r, c, "direction", 1, -1, 1, &dir)) ||
        (st = num(r, c, "azimuth_start", 1, &m->azimuth_start)) ||
        (st = num(r, c, "min_range", 1, &m->min_range)) ||
        (st = num(r, c, "max_range", 1, &m->max_range)) ||
        (st = nums(r, c, "elevation", 1, m->elevation, (size_t)nb)) ||
        (st = nums(r, c, "azimuth_offset", 1, m->azimuth_offset, (size_t)nb)))
        return st;
    m->n_beams = (int)nb;
    m->n_columns = (int)nc;
    m->direction = (int)dir;
    if (dk_lidar_model_validate(m)) {
        char inner[DK_ERRMSG_MAX];
        snprintf(inner, sizeof inner, "%s", dk_errmsg());
        const char *msg = strstr(inner, "(): ");
        return fail(r, c, "%s", msg ? msg + 4 : inner);
    }
    return DK_OK;
}

static int read_pose(const rd *r, const dk_json_cur *obj, const char *key, dk_pose *pose)
{
    static const char *const keys[] = {"rotation", "translation", NULL};
    dk_json_cur c;
    int st = req(r, obj, key, &c);
    if (st || (st = check_keys(r, &c, keys))) return st;
    if ((st = nums(r, &c, "rotation", 1, pose->q, 4)) ||
        (st = nums(r, &c, "translation", 1, pose->t, 3)))
        return st;
    double n2 = pose->q[0] * pose->q[0] + pose->q[1] * pose->q[1] + pose->q[2] * pose->q[2] +
                pose->q[3] * pose->q[3];
    double n = sqrt(n2);
    if (!(fabs(n - 1) <= 1e-3)) {
        dk_json_cur f;
        dk_json_field_opt(&c, "rotation", &f);
        return fail(r, &f, "not a unit quaternion (norm %.6g)", n);
    }
    /* Leave unit quaternions bit for bit alone, so files round-trip exactly. */
    if (fabs(n2 - 1) > 4 * DBL_EPSILON)
        for (int k = 0; k < 4; k++) pose->q[k] /= n;
    return DK_OK;
}

static int read_sensor(const rd *r, const dk_json_cur *c, dk_rig_sensor *sn)
{
    static const char *const keys[] = {"name",        "kind",   "sensor_to_ego", "rate_hz",
                                       "time_offset", "camera", "lidar",         NULL};
    int st = check_keys(r, c, keys);
    if (st) return st;
    memset(sn, 0, sizeof *sn);
    const char *name, *kind;
    if ((st = str(r, c, "name", 1, &name))) return st;
    dk_json_cur f;
    if (!name[0] || strlen(name) >= DK_SENSOR_NAME_MAX) {
        dk_json_field_opt(c, "name", &f);
        return fail(r, &f, "sensor names have 1 to %d bytes", DK_SENSOR_NAME_MAX - 1);
    }
    memcpy(sn->name, name, strlen(name) + 1);
    if ((st = str(r, c, "kind", 1, &kind))) return st;
    if (strcmp(kind, "camera") == 0) {
        sn->kind = DK_SENSOR_CAMERA;
    } else if (strcmp(kind, "lidar") == 0) {
        sn->kind = DK_SENSOR_LIDAR;
    } else {
        dk_json_field_opt(c, "kind", &f);
        return fail(r, &f, "unknown sensor kind \"%s\" (camera or lidar)", kind);
    }
    if ((st = read_pose(r, c, "sensor_to_ego", &sn->sensor_to_ego)) ||
        (st = num(r, c, "rate_hz", 1, &sn->rate_hz)) ||
        (st = num(r, c, "time_offset", 0, &sn->time_offset)))
        return st;
    const char *want = sn->kind == DK_SENSOR_CAMERA ? "camera" : "lidar";
    const char *other = sn->kind == DK_SENSOR_CAMERA ? "lidar" : "camera";
    if ((st = opt(r, c, other, &f))) return st;
    if (present(&f)) return fail(r, &f, "a %s sensor has no %s block", want, other);
    if ((st = req(r, c, want, &f))) return st;
    if (sn->kind == DK_SENSOR_CAMERA) return read_camera(r, &f, sn);
    return read_lidar(r, &f, &sn->lidar);
}

static int read_rig(const rd *r, const dk_json_cur *root, dk_scenario *s)
{
    static const char *const keys[] = {"sensors", NULL};
    dk_json_cur c, arr;
    size_t n = 0;
    int st = opt(r, root, "rig", &c);
    if (st || !present(&c)) return st;
    if ((st = check_keys(r, &c, keys)) || (st = req(r, &c, "sensors", &arr)) ||
        (st = array_of(r, &arr, DK_RIG_MAX_SENSORS, "sensors", &n)))
        return st;
    dk_rig *rig = dk_calloc(1, sizeof *rig);
    if (!rig) return oom(r);
    for (size_t i = 0; i < n && !st; i++) {
        dk_json_cur it;
        st = dk_json_item(&arr, i, &it);
        if (st)
            st = rethrow(r, st);
        else
            st = read_sensor(r, &it, &rig->sensors[i]);
        rig->n_sensors = (int)i + 1;
    }
    if (!st && dk_rig_validate(rig)) {
        char inner[DK_ERRMSG_MAX];
        snprintf(inner, sizeof inner, "%s", dk_errmsg());
        const char *msg = strstr(inner, "(): ");
        st = fail(r, &arr, "%s", msg ? msg + 4 : inner);
    }
    if (!st) s->rig = *rig;
    dk_free(rig);
    return st;
}

static int read_edits(const rd *r, const dk_json_cur *root, dk_scenario *s)
{
    static const char *const keys[] = {"kind",  "actor_id", "added", "t_start",
                                       "t_end", "description", NULL};
    dk_json_cur c;
    size_t n = 0;
    int st = opt(r, root, "edits", &c);
    if (st || !present(&c)) return st;
    if ((st = array_of(r, &c, MAX_EDITS, "edits", &n))) return st;
    for (size_t i = 0; i < n; i++) {
        dk_json_cur it, f;
        if ((st = dk_json_item(&c, i, &it))) return rethrow(r, st);
        if ((st = check_keys(r, &it, keys))) return st;
        dk_edit_record e;
        memset(&e, 0, sizeof e);
        const char *kind;
        int64_t id;
        if ((st = str(r, &it, "kind", 1, &kind))) return st;
        if (dk_edit_kind_parse(kind, &e.kind)) {
            dk_json_field_opt(&it, "kind", &f);
            return fail(r, &f, "unknown edit kind \"%s\"", kind);
        }
        if ((st = integer(r, &it, "actor_id", 1, 0, INT32_MAX, &id)) ||
            (st = boolean(r, &it, "added", &e.added)) ||
            (st = num(r, &it, "t_start", 1, &e.t_start)) ||
            (st = num(r, &it, "t_end", 1, &e.t_end)) ||
            (st = str_buf(r, &it, "description", e.description, sizeof e.description)))
            return st;
        e.actor_id = (int32_t)id;
        if (dk__scenario_append_edit(s, &e)) return oom(r);
    }
    return DK_OK;
}

static int read_seed(const rd *r, const dk_json_cur *root, uint64_t *seed)
{
    dk_json_cur c;
    int st = opt(r, root, "seed", &c);
    if (st || !present(&c)) return st;
    if (dk_json_type_of(&c) == DK_JSON_STRING) {
        /* Seeds past 2^63 - 1 are written as decimal strings. */
        const char *v;
        dk_json_string(&c, &v);
        uint64_t x = 0;
        if (!*v || strlen(v) > 20) return fail(r, &c, "expected a decimal seed");
        for (const char *p = v; *p; p++) {
            if (*p < '0' || *p > '9') return fail(r, &c, "expected a decimal seed");
            uint64_t d = (uint64_t)(*p - '0');
            if (x > (UINT64_MAX - d) / 10) return fail(r, &c, "seed exceeds 2^64 - 1");
            x = x * 10 + d;
        }
        *seed = x;
        return DK_OK;
    }
    int64_t v;
    if ((st = dk_json_int(&c, 0, INT64_MAX, &v))) return rethrow(r, st);
    *seed = (uint64_t)v;
    return DK_OK;
}

/* Numbers ids left out, after the largest given one. */
static void assign_ids(dk_scenario *s)
{
    int32_t max_map = 0, max_actor = 0;
    for (int32_t i = 0; i < s->n_map; i++)
        if (s->map[i].id > max_map) max_map = s->map[i].id;
    for (int32_t i = 0; i < s->n_actors; i++)
        if (s->actors[i].id > max_actor) max_actor = s->actors[i].id;
    for (int32_t i = 0; i < s->n_map; i++)
        if (s->map[i].id <= 0 && max_map < INT32_MAX) s->map[i].id = ++max_map;
    for (int32_t i = 0; i < s->n_actors; i++)
        if (s->actors[i].id <= 0 && max_actor < INT32_MAX) s->actors[i].id = ++max_actor;
}

static int read_scenario(const rd *r, const dk_json *doc, dk_scenario *s)
{
    static const char *const keys[] = {"format", "version", "name", "location", "seed",
                                       "start_us", "duration", "ego", "actors", "map",
                                       "rig", "edits", NULL};
    dk_json_cur root = dk_json_root(doc), c;
    int st = check_keys(r, &root, keys);
    if (st) return st;
    const char *format;
    if ((st = str(r, &root, "format", 1, &format))) return st;
    if (strcmp(format, FORMAT_NAME) != 0) {
        dk_json_field_opt(&root, "format", &c);
        return fail(r, &c, "expected \"%s\", got \"%s\"", FORMAT_NAME, format);
    }
    int64_t version;
    if ((st = integer(r, &root, "version", 1, INT64_MIN, INT64_MAX, &version))) return st;
    if (version != FORMAT_VERSION) {
        dk_json_field_opt(&root, "version", &c);
        return dk__error(DK_EUNSUPPORTED, r->func, "%s: version: %lld is not supported (%d)",
                         r->name, (long long)version, FORMAT_VERSION);
    }
    int64_t start_us = 0;
    double duration = -1;
    if ((st = str_buf(r, &root, "name", s->name, sizeof s->name)) ||
        (st = str_buf(r, &root, "location", s->location, sizeof s->location)) ||
        (st = read_seed(r, &root, &s->seed)) ||
        (st = integer(r, &root, "start_us", 0, INT64_MIN, INT64_MAX, &start_us)) ||
        (st = num(r, &root, "duration", 0, &duration)) || (st = read_ego(r, &root, s)) ||
        (st = read_actors(r, &root, s)) || (st = read_map(r, &root, s)) ||
        (st = read_rig(r, &root, s)) || (st = read_edits(r, &root, s)))
        return st;
    s->start_us = start_us;
    if (duration < 0) {
        dk_json_field_opt(&root, "duration", &c);
        if (present(&c)) return fail(r, &c, "must be >= 0");
        duration = s->ego.states[s->ego.n_states - 1].t;
        for (int32_t i = 0; i < s->n_actors; i++) {
            double t = s->actors[i].states[s->actors[i].n_states - 1].t;
            if (t > duration) duration = t;
        }
        if (!(duration >= 0)) duration = 0;
    }
    s->duration = duration;
    assign_ids(s);
    if ((st = dk_scenario_validate(s))) {
        char inner[DK_ERRMSG_MAX];
        snprintf(inner, sizeof inner, "%s", dk_errmsg());
        const char *msg = strstr(inner, "(): ");
        return dk__error(st == DK_ENOMEM ? DK_ENOMEM : DK_EINVALIDDATA, r->func, "%s: %s",
                         r->name, msg ? msg + 4 : inner);
    }
    return DK_OK;
}

static int parse_doc(const rd *r, const dk_json *doc, dk_scenario **out)
{
    dk_scenario *s;
    int st = dk_scenario_create(&s);
    if (st) return st;
    st = read_scenario(r, doc, s);
    if (st) {
        dk_scenario_destroy(s);
        return st;
    }
    *out = s;
    return DK_OK;
}

int dk_scenario_parse(const char *text, size_t len, const char *name, dk_scenario **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!text && len) return dk__error(DK_EINVAL, __func__, "text is NULL");
    rd r = {__func__, name ? name : "(scenario)"};
    dk_json *doc;
    int st = dk_json_parse(text ? text : "", len, r.name, &doc);
    if (st) return rethrow(&r, st);
    st = parse_doc(&r, doc, out);
    dk_json_free(doc);
    return st;
}

int dk_scenario_load(const char *path, dk_scenario **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!path) return dk__error(DK_EINVAL, __func__, "path is NULL");
    rd r = {__func__, path};
    dk_json *doc;
    int st = dk__json_load_doc(__func__, path, &doc);
    if (st) return st;
    st = parse_doc(&r, doc, out);
    dk_json_free(doc);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */

static void w_nums(dk_jsonw *w, const double *v, int n)
{
    dk_jsonw_array_begin(w);
    for (int i = 0; i < n; i++) dk_jsonw_number(w, v[i]);
    dk_jsonw_array_end(w);
}

static void w_key_nums(dk_jsonw *w, const char *key, const double *v, int n)
{
    dk_jsonw_key(w, key);
    w_nums(w, v, n);
}

static void w_key_num(dk_jsonw *w, const char *key, double v)
{
    dk_jsonw_key(w, key);
    dk_jsonw_number(w, v);
}

/* The array without its trailing zeros; nothing when all are zero. */
static void w_trimmed(dk_jsonw *w, const char *key, const double *v, int n)
{
    while (n > 0 && v[n - 1] == 0) n--;
    if (n > 0) w_key_nums(w, key, v, n);
}

static void w_states(dk_jsonw *w, const dk_actor *a)
{
    dk_jsonw_key(w, "states");
    dk_jsonw_array_begin(w);
    for (int32_t i = 0; i < a->n_states; i++) {
        const dk_actor_state *s = &a->states[i];
        const double v[5] = {s->t, s->x, s->y, s->z, s->yaw};
        w_nums(w, v, 5);
    }
    dk_jsonw_array_end(w);
}

static void w_camera(dk_jsonw *w, const dk_rig_sensor *sn)
{
    const dk_camera *c = &sn->camera;
    int ft = c->model == DK_CAM_FTHETA;
    dk_jsonw_key(w, "camera");
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "model");
    dk_jsonw_string(w, dk_camera_model_name(c->model));
    dk_jsonw_key(w, "width");
    dk_jsonw_int(w, c->width);
    dk_jsonw_key(w, "height");
    dk_jsonw_int(w, c->height);
    if (!ft || c->fx != 0) w_key_num(w, "fx", c->fx);
    if (!ft || c->fy != 0) w_key_num(w, "fy", c->fy);
    w_key_num(w, "cx", c->cx);
    w_key_num(w, "cy", c->cy);
    w_trimmed(w, "k", c->k, 6);
    w_trimmed(w, "p", c->p, 2);
    w_trimmed(w, "s", c->s, 4);
    w_trimmed(w, "fw_poly", c->fw_poly, 6);
    w_trimmed(w, "bw_poly", c->bw_poly, 6);
    if (ft || c->ftheta_ref != DK_FTHETA_ANGLE_TO_PIXELDIST) {
        dk_jsonw_key(w, "ftheta_ref");
        dk_jsonw_string(w, (unsigned)c->ftheta_ref < 2 ? k_ftheta_refs[c->ftheta_ref] : "?");
    }
    const double lin[3] = {c->linear_c, c->linear_d, c->linear_e};
    if (ft || !all_zero(lin, 3)) w_key_nums(w, "linear_cde", lin, 3);
    if (c->max_angle != 0) w_key_num(w, "max_angle", c->max_angle);
    if (c->margin != 0) w_key_num(w, "margin", c->margin);
    if (c->shutter != DK_SHUTTER_GLOBAL) {
        dk_jsonw_key(w, "shutter");
        dk_jsonw_string(w, (unsigned)c->shutter < 5 ? k_shutters[c->shutter] : "?");
    }
    if (sn->readout_time != 0) w_key_num(w, "readout_time", sn->readout_time);
    dk_jsonw_object_end(w);
}

static void w_lidar(dk_jsonw *w, const dk_lidar_model *m)
{
    dk_jsonw_key(w, "lidar");
    dk_jsonw_object_begin(w);
    static const dk_lidar_preset presets[3] = {DK_LIDAR_32, DK_LIDAR_64, DK_LIDAR_128};
    for (int i = 0; i < 3; i++) {
        dk_lidar_model p;
        memset(&p, 0, sizeof p);
        if (dk_lidar_model_preset(&p, presets[i]) == DK_OK && lidar_equal(m, &p)) {
            dk_jsonw_key(w, "preset");
            dk_jsonw_int(w, (int)presets[i]);
            dk_jsonw_object_end(w);
            return;
        }
    }
    int nb = m->n_beams < 0 ? 0 : m->n_beams > DK_LIDAR_MAX_BEAMS ? DK_LIDAR_MAX_BEAMS : m->n_beams;
    dk_jsonw_key(w, "n_beams");
    dk_jsonw_int(w, m->n_beams);
    dk_jsonw_key(w, "n_columns");
    dk_jsonw_int(w, m->n_columns);
    w_key_num(w, "spin_hz", m->spin_hz);
    dk_jsonw_key(w, "direction");
    dk_jsonw_int(w, m->direction);
    w_key_num(w, "azimuth_start", m->azimuth_start);
    w_key_num(w, "min_range", m->min_range);
    w_key_num(w, "max_range", m->max_range);
    w_key_nums(w, "elevation", m->elevation, nb);
    w_key_nums(w, "azimuth_offset", m->azimuth_offset, nb);
    dk_jsonw_object_end(w);
}

static void write_scenario(dk_jsonw *w, const dk_scenario *s)
{
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "format");
    dk_jsonw_string(w, FORMAT_NAME);
    dk_jsonw_key(w, "version");
    dk_jsonw_int(w, FORMAT_VERSION);
    dk_jsonw_key(w, "name");
    dk_jsonw_string(w, s->name);
    dk_jsonw_key(w, "location");
    dk_jsonw_string(w, s->location);
    dk_jsonw_key(w, "seed");
    if (s->seed <= (uint64_t)INT64_MAX) {
        dk_jsonw_int(w, (int64_t)s->seed);
    } else {
        char buf[24];
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)s->seed);
        dk_jsonw_string(w, buf);
    }
    dk_jsonw_key(w, "start_us");
    dk_jsonw_int(w, s->start_us);
    w_key_num(w, "duration", s->duration);

    dk_jsonw_key(w, "ego");
    dk_jsonw_object_begin(w);
    w_key_nums(w, "size", s->ego.size, 3);
    w_states(w, &s->ego);
    dk_jsonw_object_end(w);

    dk_jsonw_key(w, "actors");
    dk_jsonw_array_begin(w);
    for (int32_t i = 0; i < s->n_actors; i++) {
        const dk_actor *a = &s->actors[i];
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, "id");
        dk_jsonw_int(w, a->id);
        dk_jsonw_key(w, "class");
        dk_jsonw_string(w, dk_actor_class_name(a->cls));
        w_key_nums(w, "size", a->size, 3);
        dk_jsonw_key(w, "parked");
        dk_jsonw_bool(w, a->parked);
        w_states(w, a);
        dk_jsonw_object_end(w);
    }
    dk_jsonw_array_end(w);

    dk_jsonw_key(w, "map");
    dk_jsonw_array_begin(w);
    for (int32_t i = 0; i < s->n_map; i++) {
        const dk_map_element *e = &s->map[i];
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, "id");
        dk_jsonw_int(w, e->id);
        dk_jsonw_key(w, "layer");
        dk_jsonw_string(w, dk_map_layer_name(e->layer));
        if (e->layer == DK_MAP_LANELINE || e->style != DK_LINE_SOLID_WHITE) {
            dk_jsonw_key(w, "style");
            dk_jsonw_string(w, (unsigned)e->style < 4 ? k_styles[e->style] : "?");
        }
        if (dk_map_layer_geometry(e->layer) == DK_GEOM_CUBOID) {
            w_key_nums(w, "center", e->center, 3);
            w_key_nums(w, "size", e->size, 3);
            w_key_num(w, "yaw", e->yaw);
            w_key_num(w, "pitch", e->pitch);
            w_key_num(w, "roll", e->roll);
        } else {
            dk_jsonw_key(w, "points");
            dk_jsonw_array_begin(w);
            for (int32_t k = 0; k < e->n_points; k++) w_nums(w, e->points + 3 * (size_t)k, 3);
            dk_jsonw_array_end(w);
        }
        dk_jsonw_object_end(w);
    }
    dk_jsonw_array_end(w);

    dk_jsonw_key(w, "rig");
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "sensors");
    dk_jsonw_array_begin(w);
    for (int i = 0; i < s->rig.n_sensors && i < DK_RIG_MAX_SENSORS; i++) {
        const dk_rig_sensor *sn = &s->rig.sensors[i];
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, "name");
        dk_jsonw_string(w, sn->name);
        dk_jsonw_key(w, "kind");
        dk_jsonw_string(w, sn->kind == DK_SENSOR_CAMERA ? "camera" : "lidar");
        dk_jsonw_key(w, "sensor_to_ego");
        dk_jsonw_object_begin(w);
        w_key_nums(w, "rotation", sn->sensor_to_ego.q, 4);
        w_key_nums(w, "translation", sn->sensor_to_ego.t, 3);
        dk_jsonw_object_end(w);
        w_key_num(w, "rate_hz", sn->rate_hz);
        w_key_num(w, "time_offset", sn->time_offset);
        if (sn->kind == DK_SENSOR_CAMERA)
            w_camera(w, sn);
        else
            w_lidar(w, &sn->lidar);
        dk_jsonw_object_end(w);
    }
    dk_jsonw_array_end(w);
    dk_jsonw_object_end(w);

    dk_jsonw_key(w, "edits");
    dk_jsonw_array_begin(w);
    for (int32_t i = 0; i < s->n_edits; i++) {
        const dk_edit_record *e = &s->edits[i];
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, "kind");
        dk_jsonw_string(w, dk_edit_kind_name(e->kind));
        dk_jsonw_key(w, "actor_id");
        dk_jsonw_int(w, e->actor_id);
        dk_jsonw_key(w, "added");
        dk_jsonw_bool(w, e->added);
        w_key_num(w, "t_start", e->t_start);
        w_key_num(w, "t_end", e->t_end);
        dk_jsonw_key(w, "description");
        dk_jsonw_string(w, e->description);
        dk_jsonw_object_end(w);
    }
    dk_jsonw_array_end(w);
    dk_jsonw_object_end(w);
}

static int is_num_char(char c)
{
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* Folds arrays holding only numbers onto one line: "[\n  1,\n  2\n]" becomes
 * "[1, 2]". The output is never longer than the input. */
static size_t fold_number_arrays(const char *in, size_t len, char *out)
{
    size_t i = 0, o = 0;
    int in_str = 0;
    while (i < len) {
        char ch = in[i];
        if (in_str) {
            out[o++] = ch;
            i++;
            if (ch == '\\' && i < len) {
                out[o++] = in[i++];
            } else if (ch == '"') {
                in_str = 0;
            }
            continue;
        }
        if (ch == '"') {
            in_str = 1;
            out[o++] = ch;
            i++;
            continue;
        }
        if (ch != '[') {
            out[o++] = ch;
            i++;
            continue;
        }
        /* Look ahead: numbers, commas and whitespace up to ']'? */
        size_t j = i + 1;
        int ok = 1, any = 0;
        while (j < len && in[j] != ']') {
            char c = in[j];
            if (is_num_char(c)) {
                any = 1;
            } else if (c != ',' && c != ' ' && c != '\n') {
                ok = 0;
                break;
            }
            j++;
        }
        if (!ok || !any || j >= len) {
            out[o++] = ch;
            i++;
            continue;
        }
        out[o++] = '[';
        int first = 1;
        for (size_t k = i + 1; k < j;) {
            if (is_num_char(in[k])) {
                if (!first) {
                    out[o++] = ',';
                    out[o++] = ' ';
                }
                first = 0;
                while (k < j && is_num_char(in[k])) out[o++] = in[k++];
            } else {
                k++;
            }
        }
        out[o++] = ']';
        i = j + 1;
    }
    return o;
}

int dk_scenario_save(const dk_scenario *s, const char *path)
{
    if (!s || !path) return dk__error(DK_EINVAL, __func__, "NULL argument");
    int st = dk_scenario_validate(s);
    if (st) {
        char inner[DK_ERRMSG_MAX];
        snprintf(inner, sizeof inner, "%s", dk_errmsg());
        const char *msg = strstr(inner, "(): ");
        return dk__error(st, __func__, "%s: %s", path, msg ? msg + 4 : inner);
    }
    dk_jsonw *w;
    if ((st = dk_jsonw_create(2, &w))) return st;
    write_scenario(w, s);
    const char *text;
    size_t len;
    st = dk_jsonw_finish(w, &text, &len);
    if (st) {
        dk_jsonw_destroy(w);
        return st;
    }
    char *folded = dk_malloc(len + 1);
    if (!folded) {
        dk_jsonw_destroy(w);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    size_t n = fold_number_arrays(text, len, folded);
    dk_jsonw_destroy(w);
    st = dk_file_write(path, folded, n);
    dk_free(folded);
    if (st) {
        char inner[DK_ERRMSG_MAX];
        snprintf(inner, sizeof inner, "%s", dk_errmsg());
        const char *msg = strstr(inner, "(): ");
        return dk__error(st, __func__, "%s", msg ? msg + 4 : inner);
    }
    return DK_OK;
}
