/*
 * The scenario model: names of layers, classes and edits; creation, copies and
 * changes; the invariant checker; state interpolation; box geometry and the
 * footprint collision checker.
 *
 * Arrays grow to power-of-two capacities that are a pure function of the
 * element count (see array_cap), so no capacity field is needed in the public
 * struct; every file of the module appends through this file.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "world_impl.h"

#define MSG_MAX 256

/* ------------------------------------------------------------------------ */
/* Names                                                                     */

static const char *const k_layer_names[DK_MAP_LAYER_COUNT] = {
    "lanelines", "lanes", "poles", "road_boundaries", "wait_lines", "crosswalks",
    "road_markings", "traffic_signs", "traffic_lights", "drivable_area", "sidewalks",
};

static const char *const k_class_names[DK_CLASS_COUNT] = {
    "car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian",
    "motorcycle", "bicycle", "traffic_cone", "barrier",
};

static const char *const k_class_categories[DK_CLASS_COUNT] = {
    "vehicle.car", "vehicle.truck", "vehicle.bus.rigid", "vehicle.trailer",
    "vehicle.construction", "human.pedestrian.adult", "vehicle.motorcycle",
    "vehicle.bicycle", "movable_object.trafficcone", "movable_object.barrier",
};

static const char *const k_edit_names[DK_EDIT_COUNT] = {
    "cut-in", "hard-brake", "jaywalk", "stopped-vehicle", "wrong-way",
};

const char *dk_map_layer_name(dk_map_layer l)
{
    return (unsigned)l < DK_MAP_LAYER_COUNT ? k_layer_names[l] : "unknown";
}

int dk_map_layer_parse(const char *name, dk_map_layer *out)
{
    if (!name || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    for (int i = 0; i < DK_MAP_LAYER_COUNT; i++) {
        if (strcmp(name, k_layer_names[i]) == 0) {
            *out = (dk_map_layer)i;
            return DK_OK;
        }
    }
    return dk__error(DK_EINVAL, __func__, "unknown map layer \"%s\"", name);
}

dk_geometry dk_map_layer_geometry(dk_map_layer l)
{
    switch (l) {
    case DK_MAP_CROSSWALK:
    case DK_MAP_ROAD_MARKING:
    case DK_MAP_DRIVABLE_AREA:
    case DK_MAP_SIDEWALK: return DK_GEOM_POLYGON;
    case DK_MAP_TRAFFIC_SIGN:
    case DK_MAP_TRAFFIC_LIGHT: return DK_GEOM_CUBOID;
    default: return DK_GEOM_POLYLINE;
    }
}

const char *dk_actor_class_name(dk_actor_class c)
{
    return (unsigned)c < DK_CLASS_COUNT ? k_class_names[c] : "unknown";
}

const char *dk_actor_class_category(dk_actor_class c)
{
    return (unsigned)c < DK_CLASS_COUNT ? k_class_categories[c] : "unknown";
}

int dk_actor_class_parse(const char *name, dk_actor_class *out)
{
    if (!name || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    /* The nuScenes category names are accepted too. */
    for (int i = 0; i < DK_CLASS_COUNT; i++) {
        if (strcmp(name, k_class_names[i]) == 0 || strcmp(name, k_class_categories[i]) == 0) {
            *out = (dk_actor_class)i;
            return DK_OK;
        }
    }
    return dk__error(DK_EINVAL, __func__, "unknown actor class \"%s\"", name);
}

const char *dk_edit_kind_name(dk_edit_kind k)
{
    return (unsigned)k < DK_EDIT_COUNT ? k_edit_names[k] : "unknown";
}

int dk_edit_kind_parse(const char *name, dk_edit_kind *out)
{
    if (!name || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    for (int i = 0; i < DK_EDIT_COUNT; i++) {
        if (strcmp(name, k_edit_names[i]) == 0) {
            *out = (dk_edit_kind)i;
            return DK_OK;
        }
    }
    return dk__error(DK_EINVAL, __func__, "unknown edit kind \"%s\"", name);
}

/* ------------------------------------------------------------------------ */
/* Growing arrays                                                            */

static size_t array_cap(size_t n)
{
    size_t c = 8;
    while (c < n) c *= 2;
    return c;
}

/* Makes room for element n (0-based) of an array holding n elements. */
static int array_reserve(void **arr, size_t n, size_t elem)
{
    size_t cap = array_cap(n), need = array_cap(n + 1), bytes;
    if (*arr && need == cap && n < cap) return DK_OK;
    if (dk__mul_overflow(need, elem, &bytes)) return DK_ENOMEM;
    void *p = dk_realloc(*arr, bytes);
    if (!p) return DK_ENOMEM;
    *arr = p;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Checks (shared by validate and the add functions)                         */

static int finite3(const double v[3])
{
    return isfinite(v[0]) && isfinite(v[1]) && isfinite(v[2]);
}

static int check_size(const double size[3], const char *path, char *msg)
{
    static const char *const axis[3] = {"length", "width", "height"};
    for (int k = 0; k < 3; k++) {
        if (!isfinite(size[k]) || !(size[k] > 0)) {
            snprintf(msg, MSG_MAX, "%s.size: %s %g is not a positive finite number", path,
                     axis[k], size[k]);
            return DK_EINVALIDDATA;
        }
    }
    return DK_OK;
}

static int check_states(const dk_actor_state *st, int32_t n, int parked, const char *path,
                        char *msg)
{
    if (n < 1 || !st) {
        snprintf(msg, MSG_MAX, "%s.states: needs at least one state (has %d)", path, (int)n);
        return DK_EINVALIDDATA;
    }
    static const char *const names[5] = {"t", "x", "y", "z", "yaw"};
    for (int32_t i = 0; i < n; i++) {
        const double v[5] = {st[i].t, st[i].x, st[i].y, st[i].z, st[i].yaw};
        for (int k = 0; k < 5; k++) {
            if (!isfinite(v[k])) {
                snprintf(msg, MSG_MAX, "%s.states[%d].%s: not a finite number", path, (int)i,
                         names[k]);
                return DK_EINVALIDDATA;
            }
        }
        if (i > 0 && !(st[i].t > st[i - 1].t)) {
            snprintf(msg, MSG_MAX, "%s.states[%d].t: not increasing (%.17g after %.17g)", path,
                     (int)i, st[i].t, st[i - 1].t);
            return DK_EINVALIDDATA;
        }
        if (parked && i > 0 &&
            (st[i].x != st[0].x || st[i].y != st[0].y || st[i].z != st[0].z ||
             st[i].yaw != st[0].yaw)) {
            snprintf(msg, MSG_MAX, "%s.states[%d]: a parked actor must not move", path, (int)i);
            return DK_EINVALIDDATA;
        }
    }
    return DK_OK;
}

static int check_actor(const dk_actor *a, int is_ego, const char *path, char *msg)
{
    if (is_ego ? a->id != 0 : a->id < 1) {
        snprintf(msg, MSG_MAX, "%s.id: %d is not %s", path, (int)a->id,
                 is_ego ? "0 (the ego)" : ">= 1");
        return DK_EINVALIDDATA;
    }
    if ((unsigned)a->cls >= DK_CLASS_COUNT) {
        snprintf(msg, MSG_MAX, "%s.class: %d is not an actor class", path, (int)a->cls);
        return DK_EINVALIDDATA;
    }
    if (a->parked != 0 && a->parked != 1) {
        snprintf(msg, MSG_MAX, "%s.parked: %d is not 0 or 1", path, a->parked);
        return DK_EINVALIDDATA;
    }
    int st = check_size(a->size, path, msg);
    return st ? st : check_states(a->states, a->n_states, a->parked, path, msg);
}

static int check_map_element(const dk_map_element *e, const char *path, char *msg)
{
    if (e->id < 1) {
        snprintf(msg, MSG_MAX, "%s.id: %d is not >= 1", path, (int)e->id);
        return DK_EINVALIDDATA;
    }
    if ((unsigned)e->layer >= DK_MAP_LAYER_COUNT) {
        snprintf(msg, MSG_MAX, "%s.layer: %d is not a map layer", path, (int)e->layer);
        return DK_EINVALIDDATA;
    }
    dk_geometry g = dk_map_layer_geometry(e->layer);
    if (e->geometry != g) {
        snprintf(msg, MSG_MAX, "%s.geometry: layer %s needs geometry %d, not %d", path,
                 k_layer_names[e->layer], (int)g, (int)e->geometry);
        return DK_EINVALIDDATA;
    }
    if ((unsigned)e->style > DK_LINE_DOUBLE_YELLOW) {
        snprintf(msg, MSG_MAX, "%s.style: %d is not a line style", path, (int)e->style);
        return DK_EINVALIDDATA;
    }
    if (g == DK_GEOM_CUBOID) {
        if (e->n_points != 0) {
            snprintf(msg, MSG_MAX, "%s.points: a cuboid has no points (has %d)", path,
                     (int)e->n_points);
            return DK_EINVALIDDATA;
        }
        if (!finite3(e->center)) {
            snprintf(msg, MSG_MAX, "%s.center: not finite", path);
            return DK_EINVALIDDATA;
        }
        if (!isfinite(e->yaw) || !isfinite(e->pitch) || !isfinite(e->roll)) {
            snprintf(msg, MSG_MAX, "%s.yaw: yaw, pitch and roll must be finite", path);
            return DK_EINVALIDDATA;
        }
        return check_size(e->size, path, msg);
    }
    int need = g == DK_GEOM_POLYGON ? 3 : 2;
    if (e->n_points < need || !e->points) {
        snprintf(msg, MSG_MAX, "%s.points: a %s needs at least %d points (has %d)", path,
                 g == DK_GEOM_POLYGON ? "polygon" : "polyline", need, (int)e->n_points);
        return DK_EINVALIDDATA;
    }
    for (int32_t i = 0; i < e->n_points; i++) {
        if (!finite3(e->points + 3 * (size_t)i)) {
            snprintf(msg, MSG_MAX, "%s.points[%d]: not finite", path, (int)i);
            return DK_EINVALIDDATA;
        }
    }
    if (g == DK_GEOM_POLYGON) {
        /* Shoelace area in xy: counter-clockwise polygons have a positive one.
           (Simplicity is not checked: it costs O(n^2).) */
        double area = 0;
        const double *p = e->points;
        for (int32_t i = 0; i < e->n_points; i++) {
            int32_t j = i + 1 == e->n_points ? 0 : i + 1;
            area += p[3 * i] * p[3 * j + 1] - p[3 * j] * p[3 * i + 1];
        }
        if (!(area > 0)) {
            snprintf(msg, MSG_MAX, "%s.points: polygon is not counter-clockwise (signed area %g)",
                     path, area / 2);
            return DK_EINVALIDDATA;
        }
    }
    return DK_OK;
}

/* Duplicate ids, found on a sorted copy of (id, index) pairs. */
typedef struct id_pos {
    int32_t id, pos;
} id_pos;

static int cmp_id_pos(const void *a, const void *b)
{
    const id_pos *x = a, *y = b;
    if (x->id != y->id) return (x->id > y->id) - (x->id < y->id);
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Returns the index of an element with a duplicate id, -1 if none, -2 on OOM. */
static int32_t find_duplicate(const void *base, int32_t n, size_t stride, size_t id_off)
{
    if (n < 2) return -1;
    id_pos *v = dk_malloc((size_t)n * sizeof *v);
    if (!v) return -2;
    for (int32_t i = 0; i < n; i++) {
        int32_t id;
        memcpy(&id, (const char *)base + (size_t)i * stride + id_off, sizeof id);
        v[i].id = id;
        v[i].pos = i;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_id_pos);
    int32_t dup = -1;
    for (int32_t i = 1; i < n; i++) {
        if (v[i].id == v[i - 1].id && (dup < 0 || v[i].pos < dup)) dup = v[i].pos;
    }
    dk_free(v);
    return dup;
}

int dk_scenario_validate(const dk_scenario *s)
{
    if (!s) return dk__error(DK_EINVAL, __func__, "scenario is NULL");
    char msg[MSG_MAX], path[64];
    int st;
    if (!memchr(s->name, '\0', sizeof s->name))
        return dk__error(DK_EINVALIDDATA, __func__, "name: not NUL-terminated");
    if (!memchr(s->location, '\0', sizeof s->location))
        return dk__error(DK_EINVALIDDATA, __func__, "location: not NUL-terminated");
    if (!isfinite(s->duration) || s->duration < 0)
        return dk__error(DK_EINVALIDDATA, __func__, "duration: %g is not a finite number >= 0",
                         s->duration);
    if (s->n_map < 0 || (s->n_map && !s->map))
        return dk__error(DK_EINVALIDDATA, __func__, "map: bad count %d", (int)s->n_map);
    if (s->n_actors < 0 || (s->n_actors && !s->actors))
        return dk__error(DK_EINVALIDDATA, __func__, "actors: bad count %d", (int)s->n_actors);
    if (s->n_edits < 0 || (s->n_edits && !s->edits))
        return dk__error(DK_EINVALIDDATA, __func__, "edits: bad count %d", (int)s->n_edits);

    if ((st = check_actor(&s->ego, 1, "ego", msg)))
        return dk__error(st, __func__, "%s", msg);
    if (s->ego.cls != DK_CLASS_CAR)
        return dk__error(DK_EINVALIDDATA, __func__, "ego.class: the ego is a car");
    for (int32_t i = 0; i < s->n_map; i++) {
        snprintf(path, sizeof path, "map[%d]", (int)i);
        if ((st = check_map_element(&s->map[i], path, msg)))
            return dk__error(st, __func__, "%s", msg);
    }
    for (int32_t i = 0; i < s->n_actors; i++) {
        snprintf(path, sizeof path, "actors[%d]", (int)i);
        if ((st = check_actor(&s->actors[i], 0, path, msg)))
            return dk__error(st, __func__, "%s", msg);
    }
    int32_t dup = find_duplicate(s->map, s->n_map, sizeof *s->map, offsetof(dk_map_element, id));
    if (dup == -2) return dk__error(DK_ENOMEM, __func__, "out of memory");
    if (dup >= 0)
        return dk__error(DK_EINVALIDDATA, __func__, "map[%d].id: duplicate id %d", (int)dup,
                         (int)s->map[dup].id);
    dup = find_duplicate(s->actors, s->n_actors, sizeof *s->actors, offsetof(dk_actor, id));
    if (dup == -2) return dk__error(DK_ENOMEM, __func__, "out of memory");
    if (dup >= 0)
        return dk__error(DK_EINVALIDDATA, __func__, "actors[%d].id: duplicate id %d", (int)dup,
                         (int)s->actors[dup].id);
    for (int32_t i = 0; i < s->n_edits; i++) {
        const dk_edit_record *r = &s->edits[i];
        if ((unsigned)r->kind >= DK_EDIT_COUNT)
            return dk__error(DK_EINVALIDDATA, __func__, "edits[%d].kind: %d is not an edit kind",
                             (int)i, (int)r->kind);
        if (r->actor_id < 0)
            return dk__error(DK_EINVALIDDATA, __func__, "edits[%d].actor_id: %d is negative",
                             (int)i, (int)r->actor_id);
        if (r->added != 0 && r->added != 1)
            return dk__error(DK_EINVALIDDATA, __func__, "edits[%d].added: %d is not 0 or 1",
                             (int)i, r->added);
        if (!isfinite(r->t_start) || !isfinite(r->t_end) || r->t_end < r->t_start)
            return dk__error(DK_EINVALIDDATA, __func__,
                             "edits[%d].t_end: [%g, %g] is not a finite interval", (int)i,
                             r->t_start, r->t_end);
        if (!memchr(r->description, '\0', sizeof r->description))
            return dk__error(DK_EINVALIDDATA, __func__,
                             "edits[%d].description: not NUL-terminated", (int)i);
    }
    if (s->rig.n_sensors < 0 || s->rig.n_sensors > DK_RIG_MAX_SENSORS)
        return dk__error(DK_EINVALIDDATA, __func__, "rig.sensors: %d sensors (0..%d)",
                         s->rig.n_sensors, DK_RIG_MAX_SENSORS);
    if (s->rig.n_sensors > 0) {
        /* dk_rig_validate completes what it checks: run it on a copy. */
        dk_rig *rig = dk_malloc(sizeof *rig);
        if (!rig) return dk__error(DK_ENOMEM, __func__, "out of memory");
        memcpy(rig, &s->rig, sizeof *rig);
        st = dk_rig_validate(rig);
        dk_free(rig);
        if (st) {
            /* Keep the rig's own message (it names the sensor and field). */
            char inner[DK_ERRMSG_MAX];
            snprintf(inner, sizeof inner, "%s", dk_errmsg());
            const char *m = strstr(inner, "(): ");
            return dk__error(DK_EINVALIDDATA, __func__, "rig: %s", m ? m + 4 : inner);
        }
    }
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Create, destroy, clone                                                    */

static void free_contents(dk_scenario *s)
{
    for (int32_t i = 0; i < s->n_map; i++) dk_free(s->map[i].points);
    for (int32_t i = 0; i < s->n_actors; i++) dk_free(s->actors[i].states);
    dk_free(s->map);
    dk_free(s->actors);
    dk_free(s->edits);
    dk_free(s->ego.states);
}

void dk_scenario_destroy(dk_scenario *s)
{
    if (!s) return;
    free_contents(s);
    dk_free(s);
}

int dk_scenario_create(dk_scenario **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    dk_scenario *s = dk_calloc(1, sizeof *s);
    if (!s) return dk__error(DK_ENOMEM, __func__, "out of memory");
    snprintf(s->name, sizeof s->name, "scene-0001");
    snprintf(s->location, sizeof s->location, "drivekit-town");
    s->ego.id = 0;
    s->ego.cls = DK_CLASS_CAR;
    s->ego.size[0] = 4.08;
    s->ego.size[1] = 1.73;
    s->ego.size[2] = 1.56;
    s->ego.states = dk_calloc(1, sizeof *s->ego.states);
    if (!s->ego.states) {
        dk_free(s);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    s->ego.n_states = 1;
    dk_rig_nuscenes(&s->rig, 0, 0);
    *out = s;
    return DK_OK;
}

static void *dup_mem(const void *p, size_t n, size_t elem, int *fail)
{
    if (!n || !p) return NULL;
    size_t bytes;
    if (dk__mul_overflow(n, elem, &bytes)) {
        *fail = 1;
        return NULL;
    }
    void *q = dk_malloc(bytes);
    if (!q) {
        *fail = 1;
        return NULL;
    }
    memcpy(q, p, bytes);
    return q;
}

/* A copy of an array with the capacity array_cap(n) that appends expect. */
static void *dup_array(const void *p, size_t n, size_t elem, int *fail)
{
    if (!n || !p) return NULL;
    size_t bytes;
    if (dk__mul_overflow(array_cap(n), elem, &bytes)) {
        *fail = 1;
        return NULL;
    }
    void *q = dk_malloc(bytes);
    if (!q) {
        *fail = 1;
        return NULL;
    }
    memcpy(q, p, n * elem);
    return q;
}

int dk_scenario_clone(const dk_scenario *s, dk_scenario **out)
{
    if (!s || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    *out = NULL;
    dk_scenario *c = dk_malloc(sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, __func__, "out of memory");
    *c = *s;
    c->map = NULL;
    c->actors = NULL;
    c->edits = NULL;
    c->ego.states = NULL;
    c->n_map = c->n_actors = c->n_edits = 0;
    int fail = 0;
    c->ego.states = dup_mem(s->ego.states, (size_t)s->ego.n_states, sizeof *s->ego.states, &fail);
    if (s->n_map > 0 && !fail) {
        c->map = dup_array(s->map, (size_t)s->n_map, sizeof *s->map, &fail);
        for (int32_t i = 0; i < s->n_map && !fail; i++) {
            c->map[i].points = dup_mem(s->map[i].points, 3 * (size_t)s->map[i].n_points,
                                       sizeof(double), &fail);
            c->n_map = fail ? i : i + 1;
        }
    }
    if (s->n_actors > 0 && !fail) {
        c->actors = dup_array(s->actors, (size_t)s->n_actors, sizeof *s->actors, &fail);
        for (int32_t i = 0; i < s->n_actors && !fail; i++) {
            c->actors[i].states = dup_mem(s->actors[i].states, (size_t)s->actors[i].n_states,
                                          sizeof(dk_actor_state), &fail);
            c->n_actors = fail ? i : i + 1;
        }
    }
    if (s->n_edits > 0 && !fail) {
        c->edits = dup_array(s->edits, (size_t)s->n_edits, sizeof *s->edits, &fail);
        if (!fail) c->n_edits = s->n_edits;
    }
    if (fail) {
        dk_scenario_destroy(c);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    *out = c;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Appending and changing                                                    */

int dk__scenario_append_actor(dk_scenario *s, const dk_actor *a)
{
    if (array_reserve((void **)&s->actors, (size_t)s->n_actors, sizeof *s->actors))
        return DK_ENOMEM;
    s->actors[s->n_actors++] = *a;
    return DK_OK;
}

int dk__scenario_append_map(dk_scenario *s, const dk_map_element *e)
{
    if (array_reserve((void **)&s->map, (size_t)s->n_map, sizeof *s->map)) return DK_ENOMEM;
    s->map[s->n_map++] = *e;
    return DK_OK;
}

int dk__scenario_append_edit(dk_scenario *s, const dk_edit_record *r)
{
    if (array_reserve((void **)&s->edits, (size_t)s->n_edits, sizeof *s->edits))
        return DK_ENOMEM;
    s->edits[s->n_edits++] = *r;
    return DK_OK;
}

int dk_scenario_add_map_element(dk_scenario *s, const dk_map_element *e)
{
    if (!s || !e) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (s->n_map >= INT32_MAX - 1)
        return dk__error(DK_EINVAL, __func__, "too many map elements");
    dk_map_element c = *e;
    if ((unsigned)c.layer < DK_MAP_LAYER_COUNT) c.geometry = dk_map_layer_geometry(c.layer);
    int32_t max_id = 0;
    for (int32_t i = 0; i < s->n_map; i++) {
        if (s->map[i].id > max_id) max_id = s->map[i].id;
        if (c.id > 0 && s->map[i].id == c.id)
            return dk__error(DK_EINVAL, __func__, "element.id: id %d is taken", (int)c.id);
    }
    if (c.id <= 0) {
        if (max_id == INT32_MAX) return dk__error(DK_EINVAL, __func__, "no free element id");
        c.id = max_id + 1;
    }
    char msg[MSG_MAX];
    if (check_map_element(&c, "element", msg)) return dk__error(DK_EINVAL, __func__, "%s", msg);
    int fail = 0;
    c.points = dup_mem(e->points, 3 * (size_t)c.n_points, sizeof(double), &fail);
    if (fail) return dk__error(DK_ENOMEM, __func__, "out of memory");
    if (c.geometry == DK_GEOM_CUBOID) c.points = NULL;
    if (dk__scenario_append_map(s, &c)) {
        dk_free(c.points);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    return DK_OK;
}

int dk_scenario_add_actor(dk_scenario *s, const dk_actor *a)
{
    if (!s || !a) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (s->n_actors >= INT32_MAX - 1) return dk__error(DK_EINVAL, __func__, "too many actors");
    dk_actor c = *a;
    int32_t max_id = 0;
    for (int32_t i = 0; i < s->n_actors; i++) {
        if (s->actors[i].id > max_id) max_id = s->actors[i].id;
        if (c.id > 0 && s->actors[i].id == c.id)
            return dk__error(DK_EINVAL, __func__, "actor.id: id %d is taken", (int)c.id);
    }
    if (c.id <= 0) {
        if (max_id == INT32_MAX) return dk__error(DK_EINVAL, __func__, "no free actor id");
        c.id = max_id + 1;
    }
    char msg[MSG_MAX];
    if (check_actor(&c, 0, "actor", msg)) return dk__error(DK_EINVAL, __func__, "%s", msg);
    int fail = 0;
    c.states = dup_mem(a->states, (size_t)c.n_states, sizeof *c.states, &fail);
    if (fail) return dk__error(DK_ENOMEM, __func__, "out of memory");
    if (dk__scenario_append_actor(s, &c)) {
        dk_free(c.states);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    return DK_OK;
}

int dk_scenario_find_actor(const dk_scenario *s, int32_t id)
{
    if (!s) return -1;
    for (int32_t i = 0; i < s->n_actors; i++)
        if (s->actors[i].id == id) return (int)i;
    return -1;
}

int dk_scenario_set_actor_states(dk_scenario *s, int32_t id, const dk_actor_state *st, int32_t n)
{
    if (!s || (!st && n > 0)) return dk__error(DK_EINVAL, __func__, "NULL argument");
    dk_actor *a;
    if (id == 0) {
        a = &s->ego;
    } else {
        int i = dk_scenario_find_actor(s, id);
        if (i < 0) return dk__error(DK_ENOENT, __func__, "no actor with id %d", (int)id);
        a = &s->actors[i];
    }
    char msg[MSG_MAX], path[32];
    snprintf(path, sizeof path, id == 0 ? "ego" : "actor %d", (int)id);
    if (check_states(st, n, a->parked, path, msg)) return dk__error(DK_EINVAL, __func__, "%s", msg);
    int fail = 0;
    dk_actor_state *copy = dup_mem(st, (size_t)n, sizeof *st, &fail);
    if (fail) return dk__error(DK_ENOMEM, __func__, "out of memory");
    dk_free(a->states);
    a->states = copy;
    a->n_states = n;
    return DK_OK;
}

int dk_scenario_remove_actor(dk_scenario *s, int32_t id)
{
    if (!s) return dk__error(DK_EINVAL, __func__, "scenario is NULL");
    int i = dk_scenario_find_actor(s, id);
    if (i < 0) return dk__error(DK_ENOENT, __func__, "no actor with id %d", (int)id);
    dk_free(s->actors[i].states);
    memmove(s->actors + i, s->actors + i + 1, (size_t)(s->n_actors - i - 1) * sizeof *s->actors);
    s->n_actors--;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Interpolation                                                             */

static double wrap_angle(double a)
{
    return remainder(a, 2 * M_PI);
}

/* Segment index i with states[i].t <= t <= states[i+1].t (n >= 2, t inside). */
static int32_t find_segment(const dk_actor_state *st, int32_t n, double t)
{
    int32_t lo = 0, hi = n - 1;       /* st[lo].t <= t, and t <= st[hi].t */
    while (hi - lo > 1) {
        int32_t mid = lo + (hi - lo) / 2;
        if (st[mid].t <= t)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static void interp_segment(const dk_actor_state *a, const dk_actor_state *b, double t,
                           dk_actor_state *out, double vel[3])
{
    /* Written so that no finite input gives NaN, however large. */
    double dt = b->t - a->t, u = (t - a->t) / dt;
    if (!(u >= 0)) u = 0;
    if (u > 1) u = 1;
    double ya = wrap_angle(a->yaw), dyaw = wrap_angle(wrap_angle(b->yaw) - ya);
    out->t = t;
    out->x = (1 - u) * a->x + u * b->x;
    out->y = (1 - u) * a->y + u * b->y;
    out->z = (1 - u) * a->z + u * b->z;
    out->yaw = wrap_angle(ya + u * dyaw);
    if (vel) {
        vel[0] = (b->x - a->x) / dt;
        vel[1] = (b->y - a->y) / dt;
        vel[2] = (b->z - a->z) / dt;
    }
}

int dk_actor_state_at(const dk_actor *a, double t, dk_actor_state *out, double vel[3])
{
    if (!a || !a->states || a->n_states < 1) return 0;
    const dk_actor_state *st = a->states;
    int32_t n = a->n_states;
    if (!(t >= st[0].t && t <= st[n - 1].t)) return 0;
    dk_actor_state tmp;
    if (!out) out = &tmp;
    if (n == 1) {
        *out = st[0];
        out->yaw = wrap_angle(out->yaw);
        if (vel) vel[0] = vel[1] = vel[2] = 0;
        return 1;
    }
    int32_t i = find_segment(st, n, t);
    interp_segment(&st[i], &st[i + 1], t, out, vel);
    return 1;
}

int dk_actor_pose_at(const dk_actor *a, double t, dk_pose *out)
{
    dk_actor_state s;
    if (!dk_actor_state_at(a, t, &s, NULL)) return 0;
    if (out) *out = dk_pose_from_yaw(s.x, s.y, s.z, s.yaw);
    return 1;
}

/* The ego's state at t clamped to its span; 0 when it has no states. */
static int ego_state(const dk_actor *ego, double t, dk_actor_state *out)
{
    if (!ego->states || ego->n_states < 1) return 0;
    double t0 = ego->states[0].t, t1 = ego->states[ego->n_states - 1].t;
    if (!(t >= t0)) t = t0;      /* NaN goes to the start */
    if (t > t1) t = t1;
    return dk_actor_state_at(ego, t, out, NULL);
}

dk_pose dk_scenario_ego_pose(const dk_scenario *s, double t)
{
    dk_actor_state e;
    if (!s || !ego_state(&s->ego, t, &e)) return dk_pose_identity();
    return dk_pose_from_yaw(e.x, e.y, e.z, e.yaw);
}

/* ------------------------------------------------------------------------ */
/* Boxes                                                                     */

/* Box centre and yaw of an actor at t (the ego's clamped, with its offset). */
static int box_state(const dk_actor *a, int is_ego, double t, dk_actor_state *b)
{
    if (is_ego) {
        if (!ego_state(a, t, b)) return 0;
        b->x += DK_EGO_BOX_OFFSET_X * cos(b->yaw);
        b->y += DK_EGO_BOX_OFFSET_X * sin(b->yaw);
        b->z += a->size[2] / 2;
        return 1;
    }
    return dk_actor_state_at(a, t, b, NULL);
}

int dk__actor_corners(const dk_actor *a, int is_ego, double t, double corners[8][3])
{
    dk_actor_state b;
    if (!a || !box_state(a, is_ego, t, &b)) return 0;
    static const double sx[4] = {1, 1, -1, -1}, sy[4] = {1, -1, -1, 1};
    double c = cos(b.yaw), s = sin(b.yaw);
    double hl = a->size[0] / 2, hw = a->size[1] / 2, hh = a->size[2] / 2;
    for (int k = 0; k < 8; k++) {
        double px = sx[k & 3] * hl, py = sy[k & 3] * hw, pz = k < 4 ? -hh : hh;
        corners[k][0] = b.x + c * px - s * py;
        corners[k][1] = b.y + s * px + c * py;
        corners[k][2] = b.z + pz;
    }
    return 1;
}

dk_pose dk__ego_box_pose(const dk_scenario *s, double t)
{
    dk_actor_state b;
    if (!s || !box_state(&s->ego, 1, t, &b)) return dk_pose_identity();
    return dk_pose_from_yaw(b.x, b.y, b.z, b.yaw);
}

int dk__point_in_box(const dk_pose *box_to_world, const double size[3], const double p[3])
{
    /* p_box = R^T (p - t), with R from the unit quaternion (w, x, y, z). */
    const double *q = box_to_world->q;
    double v[3] = {p[0] - box_to_world->t[0], p[1] - box_to_world->t[1],
                   p[2] - box_to_world->t[2]};
    double w = q[0], x = -q[1], y = -q[2], z = -q[3];   /* conjugate */
    /* v' = v + 2 w (u x v) + 2 u x (u x v), u = (x, y, z) */
    double cx = y * v[2] - z * v[1], cy = z * v[0] - x * v[2], cz = x * v[1] - y * v[0];
    double r[3] = {v[0] + 2 * (w * cx + y * cz - z * cy), v[1] + 2 * (w * cy + z * cx - x * cz),
                   v[2] + 2 * (w * cz + x * cy - y * cx)};
    return fabs(r[0]) <= size[0] / 2 && fabs(r[1]) <= size[1] / 2 && fabs(r[2]) <= size[2] / 2;
}

/* ------------------------------------------------------------------------ */
/* Collisions                                                                */

/* Per time step: every box that exists (the ego's clamped in time) becomes an
 * oriented rectangle in xy; a sweep over x (sorted by x - bounding radius)
 * finds candidate pairs, a bounding-circle test and the separating-axis test
 * on the four edge normals decide. Pedestrian-pedestrian pairs are skipped on
 * purpose: people walk closer than their nuScenes boxes allow (couples,
 * crowds at crossings), so their overlap is not a collision. A hash set keeps
 * each pair once, at its earliest step. */

typedef struct body {
    double x, y, c, s, hl, hw, r, key;
    int32_t id;
    int ped;
} body;

static int cmp_body(const void *a, const void *b)
{
    const body *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Separating-axis test of two oriented rectangles; touching is not overlap. */
static int rects_overlap(const body *a, const body *b)
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

typedef struct pair_set {
    uint64_t *keys;      /* 0 = empty; stored as key + 1 */
    size_t cap, n;
} pair_set;

static uint64_t pair_hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
}

/* 1 if inserted, 0 if present, -1 on OOM. */
static int pair_insert(pair_set *ps, uint64_t key)
{
    if ((ps->n + 1) * 2 > ps->cap) {
        size_t ncap = ps->cap ? ps->cap * 2 : 64;
        uint64_t *nk = dk_calloc(ncap, sizeof *nk);
        if (!nk) return -1;
        for (size_t i = 0; i < ps->cap; i++) {
            if (!ps->keys[i]) continue;
            size_t h = pair_hash(ps->keys[i]) & (ncap - 1);
            while (nk[h]) h = (h + 1) & (ncap - 1);
            nk[h] = ps->keys[i];
        }
        dk_free(ps->keys);
        ps->keys = nk;
        ps->cap = ncap;
    }
    uint64_t stored = key + 1;
    size_t h = pair_hash(stored) & (ps->cap - 1);
    while (ps->keys[h]) {
        if (ps->keys[h] == stored) return 0;
        h = (h + 1) & (ps->cap - 1);
    }
    ps->keys[h] = stored;
    ps->n++;
    return 1;
}

static int cmp_collision(const void *a, const void *b)
{
    const dk_collision *x = a, *y = b;
    if (x->a != y->a) return (x->a > y->a) - (x->a < y->a);
    return (x->b > y->b) - (x->b < y->b);
}

/* Monotone-time state lookup with a per-actor segment hint. */
static int state_hinted(const dk_actor *a, double t, int32_t *hint, dk_actor_state *out)
{
    const dk_actor_state *st = a->states;
    int32_t n = a->n_states;
    if (!st || n < 1 || !(t >= st[0].t && t <= st[n - 1].t)) return 0;
    if (n == 1) {
        *out = st[0];
        return 1;
    }
    int32_t i = *hint;
    if (i < 0 || i > n - 2 || st[i].t > t) i = 0;
    if (st[i + 1].t < t) {
        /* Walk a few steps, then fall back to bisection. */
        int k = 0;
        while (i < n - 2 && st[i + 1].t < t && k < 8) i++, k++;
        if (st[i + 1].t < t) i = find_segment(st, n, t);
    }
    *hint = i;
    interp_segment(&st[i], &st[i + 1], t, out, NULL);
    return 1;
}

static void make_body(body *b, const dk_actor *a, const dk_actor_state *st)
{
    b->x = st->x;
    b->y = st->y;
    b->c = cos(st->yaw);
    b->s = sin(st->yaw);
    b->hl = a->size[0] / 2;
    b->hw = a->size[1] / 2;
    b->r = hypot(b->hl, b->hw);
    b->key = b->x - b->r;
    if (!isfinite(b->key) || !isfinite(b->r)) b->key = HUGE_VAL;
    b->id = a->id;
    b->ped = a->cls == DK_CLASS_PEDESTRIAN;
}

int dk_scenario_collisions(const dk_scenario *s, double dt, dk_collision *out, int max_out,
                           int *n_out)
{
    if (!s || !n_out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    *n_out = 0;
    if (max_out < 0 || !out) max_out = 0;
    if (!(dt > 0) || !isfinite(dt)) dt = 0.1;
    double dur = isfinite(s->duration) && s->duration > 0 ? s->duration : 0;
    /* Absurdly fine steps are coarsened to 1e7 checks. */
    if (dur / dt > 1e7) dt = dur / 1e7;
    int64_t n_steps = (int64_t)floor(dur / dt + 1e-9);
    int32_t n = s->n_actors > 0 ? s->n_actors : 0;

    body *bodies = dk_malloc(((size_t)n + 1) * sizeof *bodies);
    int32_t *hints = dk_calloc((size_t)n + 1, sizeof *hints);
    dk_collision *found = dk_malloc(((size_t)n + 1) * 4 * sizeof *found);
    size_t found_cap = ((size_t)n + 1) * 4;
    pair_set ps = {0};
    int st = DK_OK, total = 0;
    if (!bodies || !hints || !found) {
        st = DK_ENOMEM;
        goto done;
    }
    for (int64_t k = 0; k <= n_steps; k++) {
        double t = (double)k * dt;
        int32_t m = 0;
        dk_actor_state a;
        if (box_state(&s->ego, 1, t, &a)) make_body(&bodies[m++], &s->ego, &a);
        for (int32_t i = 0; i < n; i++) {
            if (state_hinted(&s->actors[i], t, &hints[i], &a))
                make_body(&bodies[m++], &s->actors[i], &a);
        }
        qsort(bodies, (size_t)m, sizeof *bodies, cmp_body);
        size_t n_found = 0;
        for (int32_t i = 0; i < m; i++) {
            const body *bi = &bodies[i];
            double reach = bi->x + bi->r;
            for (int32_t j = i + 1; j < m && bodies[j].key <= reach; j++) {
                const body *bj = &bodies[j];
                if (bi->ped && bj->ped) continue;
                double rr = bi->r + bj->r;
                if (fabs(bi->y - bj->y) >= rr) continue;
                if (hypot(bi->x - bj->x, bi->y - bj->y) >= rr) continue;
                if (!rects_overlap(bi, bj)) continue;
                int32_t ida = bi->id < bj->id ? bi->id : bj->id;
                int32_t idb = bi->id < bj->id ? bj->id : bi->id;
                int ins = pair_insert(&ps, ((uint64_t)(uint32_t)ida << 32) | (uint32_t)idb);
                if (ins < 0) {
                    st = DK_ENOMEM;
                    goto done;
                }
                if (!ins) continue;
                if (n_found == found_cap) {
                    dk_collision *nf = dk_realloc(found, 2 * found_cap * sizeof *found);
                    if (!nf) {
                        st = DK_ENOMEM;
                        goto done;
                    }
                    found = nf;
                    found_cap *= 2;
                }
                found[n_found].a = ida;
                found[n_found].b = idb;
                found[n_found].t = t;
                n_found++;
            }
        }
        if (n_found > 1) qsort(found, n_found, sizeof *found, cmp_collision);
        for (size_t f = 0; f < n_found; f++) {
            if (total < max_out) out[total] = found[f];
            if (total < INT32_MAX) total++;
        }
    }
done:
    dk_free(bodies);
    dk_free(hints);
    dk_free(found);
    dk_free(ps.keys);
    if (st) return dk__error(st, __func__, "out of memory");
    *n_out = total;
    return DK_OK;
}
