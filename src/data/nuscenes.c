/*
 * nuScenes reader: the v1.0 tables resolved once into per-sample records.
 *
 * Each table is parsed, its needed fields copied into compact rows (strings
 * into one arena) and the JSON tree freed before the next table, so peak
 * memory is one table's tree plus the compact rows. Tokens are looked up
 * through one open-addressing hash per table.
 */
#define _POSIX_C_SOURCE 200809L   /* strdup-free; stat */

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "drivekit/data.h"
#include "internal.h"

#define NS_PATH_MAX 4096
#define NS_MAX_ROWS ((int64_t)1 << 28)
#define NS_MAX_COORD 1e7   /* metres: any translation beyond is corrupt */
#define NS_MAX_SIZE 1e4    /* metres: box sizes */

static const char *const cam_names[DK_NUSC_NUM_CAMS] = {
    "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT",
};
static const char *const class_names[DK_NUSC_NUM_CLASSES] = {
    "car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
    "pedestrian", "traffic_cone",
};
static const struct {
    const char *category;
    int label;
} name_mapping[] = {
    {"movable_object.barrier", 5},
    {"vehicle.bicycle", 7},
    {"vehicle.bus.bendy", 3},
    {"vehicle.bus.rigid", 3},
    {"vehicle.car", 0},
    {"vehicle.construction", 2},
    {"vehicle.motorcycle", 6},
    {"human.pedestrian.adult", 8},
    {"human.pedestrian.child", 8},
    {"human.pedestrian.construction_worker", 8},
    {"human.pedestrian.police_officer", 8},
    {"movable_object.trafficcone", 9},
    {"vehicle.trailer", 4},
    {"vehicle.truck", 1},
};

const char *dk_nusc_camera_name(int i)
{
    return i >= 0 && i < DK_NUSC_NUM_CAMS ? cam_names[i] : NULL;
}

const char *dk_nusc_class_name(int label)
{
    return label >= 0 && label < DK_NUSC_NUM_CLASSES ? class_names[label] : NULL;
}

int dk_nusc_class_of_category(const char *category)
{
    if (!category) return -1;
    for (size_t i = 0; i < sizeof name_mapping / sizeof name_mapping[0]; i++)
        if (!strcmp(name_mapping[i].category, category)) return name_mapping[i].label;
    return -1;
}

void dk_nusc_config_init(dk_nusc_config *cfg)
{
    if (cfg) memset(cfg, 0, sizeof *cfg);
}

/* ------------------------------------------------------------------------ */
/* Token index                                                               */

typedef struct tokmap {
    uint64_t cap;        /* power of two, or 0 */
    int64_t *slot;       /* row index + 1, 0 = empty */
    const char *const *keys;   /* row -> token, owned by the table */
    size_t key_stride;   /* bytes between consecutive key pointers */
} tokmap;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h ^ (h >> 29);
}

static const char *key_at(const tokmap *m, int64_t row)
{
    return *(const char *const *)((const char *)m->keys + (size_t)row * m->key_stride);
}

static int64_t tokmap_find(const tokmap *m, const char *tok)
{
    if (!m->cap || !tok) return -1;
    for (uint64_t i = hash_str(tok) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int64_t v = m->slot[i];
        if (!v) return -1;
        if (!strcmp(key_at(m, v - 1), tok)) return v - 1;
    }
}

/* Indexes rows 0..n-1 whose token pointer is at keys + row * stride. A repeated
   token is an error (returns the row of the second occurrence + 1). */
static int tokmap_build(tokmap *m, const void *keys, size_t stride, int64_t n, int64_t *dup)
{
    uint64_t cap = 16;
    while ((int64_t)cap < 2 * n) cap *= 2;
    m->slot = dk_calloc(cap, sizeof *m->slot);
    if (!m->slot) return DK_ENOMEM;
    m->cap = cap;
    m->keys = keys;
    m->key_stride = stride;
    for (int64_t r = 0; r < n; r++) {
        const char *tok = key_at(m, r);
        uint64_t i = hash_str(tok) & (cap - 1);
        for (; m->slot[i]; i = (i + 1) & (cap - 1))
            if (!strcmp(key_at(m, m->slot[i] - 1), tok)) {
                *dup = r;
                return DK_EINVALIDDATA;
            }
        m->slot[i] = r + 1;
    }
    return DK_OK;
}

static void tokmap_free(tokmap *m)
{
    dk_free(m->slot);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------------ */
/* Rows                                                                      */

typedef struct sensor_row {
    const char *token, *channel;
} sensor_row;

typedef struct calib_row {
    const char *token;
    int64_t sensor;
    dk_pose pose;
    int has_k;
    double k[9];
} calib_row;

typedef struct ego_row {
    const char *token;
    int64_t timestamp;
    dk_pose pose;
} ego_row;

typedef struct sample_row {
    const char *token, *scene_token, *prev, *next;
    int64_t timestamp;
    int64_t index;       /* global sample index, -1 until a scene chain reaches it */
} sample_row;

typedef struct sd_row {
    const char *token, *filename;
    int64_t sample, ego, calib;
    int64_t timestamp;
    int key;
    int width, height;
} sd_row;

typedef struct scene_row {
    const char *token, *name, *first;
    int64_t nbr;
} scene_row;

typedef struct ann_row {
    const char *token, *prev, *next;
    int64_t sample, instance;
    double t[3], size[3], q[4];
    int32_t num_lidar, num_radar, visibility;
} ann_row;

typedef struct inst_row {
    const char *token;
    int64_t category;
} inst_row;

typedef struct cat_row {
    const char *token, *name;
} cat_row;

typedef struct vis_row {
    const char *token;
    int level;
} vis_row;

struct dk_nusc {
    char *root, *version;
    dk_arena *strings;
    sensor_row *sensors;
    calib_row *calibs;
    ego_row *egos;
    sample_row *srows;
    sd_row *sds;
    scene_row *scenes;
    ann_row *anns;
    inst_row *insts;
    cat_row *cats;
    vis_row *vis;
    int64_t n_sensors, n_calibs, n_egos, n_srows, n_sds, n_scenes, n_anns, n_insts, n_cats, n_vis;
    tokmap m_sensor, m_calib, m_ego, m_sample, m_scene, m_ann, m_inst, m_cat, m_vis;
    /* resolved */
    int64_t n_samples;
    dk_nusc_sample *samples;
    dk_nusc_scene *scene_info;
    int64_t *box_start;       /* n_samples + 1 */
    dk_nusc_box *boxes;
    int reading_file;         /* the last error came from opening a table file */
};

static const char *keep_str(dk_nusc *db, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = dk_arena_alloc(db->strings, n, 1);
    if (p) memcpy(p, s, n);
    return p;
}

/* Loads ROOT/VERSION/<name>.json, checks it is an array and gives its size. */
static int load_table(dk_nusc *db, const char *name, dk_json **doc, dk_json_cur *root, int64_t *n)
{
    char path[NS_PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s/%s.json", db->root, db->version, name) >=
        (int)sizeof path)
        return dk__error(DK_EINVAL, "dk_nusc_open", "%s: path too long", db->root);
    int st = dk_json_load(path, doc);
    if (st == DK_ENOENT || st == DK_EIO) db->reading_file = 1;   /* the file itself */
    if (st) return st;
    *root = dk_json_root(*doc);
    if (dk_json_type_of(root) != DK_JSON_ARRAY)
        return dk__error(DK_EINVALIDDATA, "dk_nusc_open", "%s: the table is not a JSON array",
                         path);
    size_t sz = dk_json_size(root);
    if ((int64_t)sz >= NS_MAX_ROWS)
        return dk__error(DK_EINVALIDDATA, "dk_nusc_open", "%s: %zu rows is too many", path, sz);
    *n = (int64_t)sz;
    return DK_OK;
}

/* A string field copied into the arena. */
static int get_str(dk_nusc *db, const dk_json_cur *row, const char *key, const char **out)
{
    const char *s;
    int st = dk_json_get_string(row, key, &s);
    if (st) return st;
    *out = keep_str(db, s);
    return *out ? DK_OK : dk__error(DK_ENOMEM, "dk_nusc_open", "out of memory");
}

/* A rigid pose from "translation" and "rotation" (w, x, y, z). */
static int get_pose(const dk_json_cur *row, dk_pose *p)
{
    int st = dk_json_get_numbers(row, "translation", p->t, 3);
    if (!st) st = dk_json_get_numbers(row, "rotation", p->q, 4);
    if (st) return st;
    for (int j = 0; j < 3; j++)
        if (!(fabs(p->t[j]) <= NS_MAX_COORD)) {
            dk_json_cur f;
            dk_json_field(row, "translation", &f);
            return dk__error(DK_EINVALIDDATA, "dk_nusc_open", "%s: %s: %g m is beyond %g m",
                             dk_json_name(row->doc), f.path, p->t[j], NS_MAX_COORD);
        }
    double nn = sqrt(p->q[0] * p->q[0] + p->q[1] * p->q[1] + p->q[2] * p->q[2] + p->q[3] * p->q[3]);
    if (!(fabs(nn - 1.0) <= 1e-3)) {
        dk_json_cur f;
        dk_json_field(row, "rotation", &f);
        return dk__error(DK_EINVALIDDATA, "dk_nusc_open",
                         "%s: %s: not a unit quaternion (norm %.6g)", dk_json_name(row->doc),
                         f.path, nn);
    }
    for (int j = 0; j < 4; j++) p->q[j] /= nn;
    return DK_OK;
}

/* Resolves a token field against a table ("" allowed when opt). */
static int get_ref(const dk_json_cur *row, const char *key, const tokmap *m, const char *table,
                   int opt, int64_t *out)
{
    const char *s;
    int st = dk_json_get_string(row, key, &s);
    if (st) return st;
    if (opt && !*s) {
        *out = -1;
        return DK_OK;
    }
    *out = tokmap_find(m, s);
    if (*out < 0) {
        dk_json_cur f;
        dk_json_field(row, key, &f);
        return dk__error(DK_EINVALIDDATA, "dk_nusc_open", "%s: %s: no %s with token '%.64s'",
                         dk_json_name(row->doc), f.path, table, s);
    }
    return DK_OK;
}

static int index_table(tokmap *m, const void *keys, size_t stride, int64_t n, const dk_nusc *db,
                       const char *table)
{
    int64_t dup = -1;
    int st = tokmap_build(m, keys, stride, n, &dup);
    if (st == DK_ENOMEM) return dk__error(DK_ENOMEM, "dk_nusc_open", "out of memory");
    if (st)
        return dk__error(DK_EINVALIDDATA, "dk_nusc_open", "%s/%s/%s.json: [%lld].token: '%.64s' "
                         "repeats an earlier row's token", db->root, db->version, table,
                         (long long)dup, key_at(m, dup));
    return DK_OK;
}

#define ALLOC_ROWS(ptr, n)                                                                  \
    do {                                                                                    \
        (ptr) = dk_calloc((size_t)((n) ? (n) : 1), sizeof *(ptr));                          \
        if (!(ptr)) {                                                                       \
            st = dk__error(DK_ENOMEM, "dk_nusc_open", "out of memory");                     \
            goto out;                                                                       \
        }                                                                                   \
    } while (0)

#define TRY(expr)                                                                           \
    do {                                                                                    \
        st = (expr);                                                                        \
        if (st) goto out;                                                                   \
    } while (0)

static int read_tables_(dk_nusc *db);

/* A table that exists but is malformed (a missing field, a number out of
 * range) is invalid data, whatever status the JSON reader used; a missing
 * table file stays DK_ENOENT and memory DK_ENOMEM. */
static int read_tables(dk_nusc *db)
{
    db->reading_file = 0;
    int st = read_tables_(db);
    if (st && st != DK_ENOMEM && st != DK_EIO && db->reading_file == 0)
        st = dk__reraise_invalid(st, "dk_nusc_open");
    return st;
}

static int read_tables_(dk_nusc *db)
{
    dk_json *doc = NULL;
    dk_json_cur root, row;
    int64_t n;
    int st;

    /* Tables checked for syntax only. */
    static const char *const plain[] = {"log", "map", "attribute"};
    for (size_t i = 0; i < 3; i++) {
        TRY(load_table(db, plain[i], &doc, &root, &n));
        dk_json_free(doc);
        doc = NULL;
    }

    TRY(load_table(db, "sensor", &doc, &root, &n));
    ALLOC_ROWS(db->sensors, n);
    for (int64_t i = 0; i < n; i++) {
        TRY(dk_json_item(&root, (size_t)i, &row));
        TRY(get_str(db, &row, "token", &db->sensors[i].token));
        TRY(get_str(db, &row, "channel", &db->sensors[i].channel));
    }
    db->n_sensors = n;
    dk_json_free(doc);
    doc = NULL;
    TRY(index_table(&db->m_sensor, &db->sensors[0].token, sizeof(sensor_row), n, db, "sensor"));

    TRY(load_table(db, "calibrated_sensor", &doc, &root, &n));
    ALLOC_ROWS(db->calibs, n);
    for (int64_t i = 0; i < n; i++) {
        calib_row *c = &db->calibs[i];
        TRY(dk_json_item(&root, (size_t)i, &row));
        TRY(get_str(db, &row, "token", &c->token));
        TRY(get_ref(&row, "sensor_token", &db->m_sensor, "sensor", 0, &c->sensor));
        TRY(get_pose(&row, &c->pose));
        dk_json_cur k, r;
        TRY(dk_json_field_opt(&row, "camera_intrinsic", &k));
        if (dk_json_type_of(&k) == DK_JSON_ARRAY && dk_json_size(&k) == 3) {
            for (size_t j = 0; j < 3; j++) {
                TRY(dk_json_item(&k, j, &r));
                TRY(dk_json_numbers(&r, c->k + 3 * j, 3));
            }
            c->has_k = 1;
        } else if (dk_json_type_of(&k) != DK_JSON_MISSING &&
                   !(dk_json_type_of(&k) == DK_JSON_ARRAY && dk_json_size(&k) == 0)) {
            st = dk__error(DK_EINVALIDDATA, "dk_nusc_open",
                           "%s: %s: expected a 3x3 array or []", dk_json_name(doc), k.path);
            goto out;
        }
    }
    db->n_calibs = n;
    dk_json_free(doc);
    doc = NULL;
    TRY(index_table(&db->m_calib, &db->calibs[0].token, sizeof(calib_row), n, db,
                    "calibrated_sensor"));

    TRY(load_table(db, "ego_pose", &doc, &root, &n));
    ALLOC_ROWS(db->egos, n);
    for (int64_t i = 0; i < n; i++) {
        ego_row *e = &db->egos[i];
        TRY(dk_json_item(&root, (size_t)i, &row));
        TRY(get_str(db, &row, "token", &e->token));
        TRY(dk_json_get_int(&row, "timestamp", 0, INT64_MAX / 2, &e->timestamp));
        TRY(get_pose(&row, &e->pose));
    }
    db->n_egos = n;
    dk_json_free(doc);
    doc = NULL;
    TRY(index_table(&db->m_ego, &db->egos[0].token, sizeof(ego_row), n, db, "ego_pose"));

    TRY(load_table(db, "scene", &doc, &root, &n));
    ALLOC_ROWS(db->scenes, n);
    for (int64_t i = 0; i < n; i++) {
        scene_row *s = &db->scenes[i];
        TRY(dk_json_item(&root, (size_t)i, &row));
        TRY(get_str(db, &row, "token", &s->token));
        TRY(get_str(db, &row, "name", &s->name));
        TRY(get_str(db, &row, "first_sample_token", &s->first));
        TRY(dk_json_get_int(&row, "nbr_samples", 0, NS_MAX_ROWS, &s->nbr));
        if (strchr(s->name, '/') || !strcmp(s->name, "..")) {
            st = dk__error(DK_EINVALIDDATA, "dk_nusc_open", "%s: [%lld].name: '%.64s' is not a "
                           "plain name", dk_json_name(doc), (long long)i, s->name);
            goto out;
        }
    }
    db->n_scenes = n;
    dk_json_free(doc);
    doc = NULL;
    TRY(index_table(&db->m_scene, &db->scenes[0].token, sizeof(scene_row), n, db, "scene"));

    TRY(load_table(db, "sample", &doc, &root, &n));
    ALLOC_ROWS(db->srows, n);
    for (int64_t i = 0; i < n; i++) {
        sample_row *s = &db->srows[i];
        TRY(dk_json_item(&root, (size_t)i, &row));
        TRY(get_str(db, &row, "token", &s->token));
        TRY(get_str(db, &row, "scene_token", &s->scene_token));
        TRY(get_str(db, &row, "prev", &s->prev));
        TRY(get_str(db, &row, "next", &s->next));
        TRY(dk_json_get_int(&row, "timestamp", 0, INT64_MAX / 2, &s->timestamp));
        int64_t sc;
        TRY(get_ref(&row, "scene_token", &db->m_scene, "scene", 0, &sc));
        s->index = -1;
    }
    db->n_srows = n;
    dk_json_free(doc);
    doc = NULL;
    TRY(index_table(&db->m_sample, &db->srows[0].token, sizeof(sample_row), n, db, "sample"));

    TRY(load_table(db, "sample_data", &doc, &root, &n));
    ALLOC_ROWS(db->sds, n);
    for (int64_t i = 0; i < n; i++) {
        sd_row *d = &db->sds[i];
        TRY(dk_json_item(&root, (size_t)i, &row));
        TRY(get_str(db, &row, "token", &d->token));
        TRY(get_str(db, &row, "filename", &d->filename));
        TRY(get_ref(&row, "sample_token", &db->m_sample, "sample", 0, &d->sample));
        TRY(get_ref(&row, "ego_pose_token", &db->m_ego, "ego_pose", 0, &d->ego));
        TRY(get_ref(&row, "calibrated_sensor_token", &db->m_calib, "calibrated_sensor", 0,
                    &d->calib));
        TRY(dk_json_get_int(&row, "timestamp", 0, INT64_MAX / 2, &d->timestamp));
        dk_json_cur f;
        TRY(dk_json_field(&row, "is_key_frame", &f));
        TRY(dk_json_bool(&f, &d->key));
        int64_t v;
        TRY(dk_json_field_opt(&row, "width", &f));
        if (dk_json_type_of(&f) == DK_JSON_NUMBER) {
            TRY(dk_json_int(&f, 0, 1 << 20, &v));
            d->width = (int)v;
        }
        TRY(dk_json_field_opt(&row, "height", &f));
        if (dk_json_type_of(&f) == DK_JSON_NUMBER) {
            TRY(dk_json_int(&f, 0, 1 << 20, &v));
            d->height = (int)v;
        }
        if (strstr(d->filename, "..") || d->filename[0] == '/') {
            st = dk__error(DK_EINVALIDDATA, "dk_nusc_open", "%s: [%lld].filename: '%.128s' leaves "
                           "the dataset root", dk_json_name(doc), (long long)i, d->filename);
            goto out;
        }
    }
    db->n_sds = n;
    dk_json_free(doc);
    doc = NULL;

    TRY(load_table(db, "category", &doc, &root, &n));
    ALLOC_ROWS(db->cats, n);
    for (int64_t i = 0; i < n; i++) {
        TRY(dk_json_item(&root, (size_t)i, &row));
        TRY(get_str(db, &row, "token", &db->cats[i].token));
        TRY(get_str(db, &row, "name", &db->cats[i].name));
    }
    db->n_cats = n;
    dk_json_free(doc);
    doc = NULL;
    TRY(index_table(&db->m_cat, &db->cats[0].token, sizeof(cat_row), n, db, "category"));

    TRY(load_table(db, "instance", &doc, &root, &n));
    ALLOC_ROWS(db->insts, n);
    for (int64_t i = 0; i < n; i++) {
        TRY(dk_json_item(&root, (size_t)i, &row));
        TRY(get_str(db, &row, "token", &db->insts[i].token));
        TRY(get_ref(&row, "category_token", &db->m_cat, "category", 0, &db->insts[i].category));
    }
    db->n_insts = n;
    dk_json_free(doc);
    doc = NULL;
    TRY(index_table(&db->m_inst, &db->insts[0].token, sizeof(inst_row), n, db, "instance"));

    TRY(load_table(db, "visibility", &doc, &root, &n));
    ALLOC_ROWS(db->vis, n);
    for (int64_t i = 0; i < n; i++) {
        const char *level;
        TRY(dk_json_item(&root, (size_t)i, &row));
        TRY(get_str(db, &row, "token", &db->vis[i].token));
        TRY(dk_json_get_string(&row, "level", &level));
        static const char *const levels[] = {"v0-40", "v40-60", "v60-80", "v80-100"};
        for (int j = 0; j < 4; j++)
            if (!strcmp(level, levels[j])) db->vis[i].level = j + 1;
    }
    db->n_vis = n;
    dk_json_free(doc);
    doc = NULL;
    TRY(index_table(&db->m_vis, &db->vis[0].token, sizeof(vis_row), n, db, "visibility"));

    TRY(load_table(db, "sample_annotation", &doc, &root, &n));
    ALLOC_ROWS(db->anns, n);
    for (int64_t i = 0; i < n; i++) {
        ann_row *a = &db->anns[i];
        TRY(dk_json_item(&root, (size_t)i, &row));
        TRY(get_str(db, &row, "token", &a->token));
        TRY(get_str(db, &row, "prev", &a->prev));
        TRY(get_str(db, &row, "next", &a->next));
        TRY(get_ref(&row, "sample_token", &db->m_sample, "sample", 0, &a->sample));
        TRY(get_ref(&row, "instance_token", &db->m_inst, "instance", 0, &a->instance));
        dk_pose p;
        TRY(get_pose(&row, &p));
        memcpy(a->t, p.t, sizeof a->t);
        memcpy(a->q, p.q, sizeof a->q);
        TRY(dk_json_get_numbers(&row, "size", a->size, 3));
        for (int j = 0; j < 3; j++)
            if (!(a->size[j] >= 0 && a->size[j] <= NS_MAX_SIZE)) {
                st = dk__error(DK_EINVALIDDATA, "dk_nusc_open",
                               "%s: [%lld].size: %g m is not in [0, %g]", dk_json_name(doc),
                               (long long)i, a->size[j], NS_MAX_SIZE);
                goto out;
            }
        int64_t v = 0, vis = -1;
        dk_json_cur f;
        TRY(dk_json_field_opt(&row, "num_lidar_pts", &f));
        if (dk_json_type_of(&f) != DK_JSON_MISSING) TRY(dk_json_int(&f, 0, INT32_MAX, &v));
        a->num_lidar = (int32_t)v;
        v = 0;
        TRY(dk_json_field_opt(&row, "num_radar_pts", &f));
        if (dk_json_type_of(&f) != DK_JSON_MISSING) TRY(dk_json_int(&f, 0, INT32_MAX, &v));
        a->num_radar = (int32_t)v;
        TRY(dk_json_field_opt(&row, "visibility_token", &f));
        if (dk_json_type_of(&f) == DK_JSON_STRING)
            TRY(get_ref(&row, "visibility_token", &db->m_vis, "visibility", 1, &vis));
        a->visibility = vis >= 0 ? db->vis[vis].level : 0;
    }
    db->n_anns = n;
    dk_json_free(doc);
    doc = NULL;
    TRY(index_table(&db->m_ann, &db->anns[0].token, sizeof(ann_row), n, db,
                    "sample_annotation"));
out:
    dk_json_free(doc);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Resolution                                                                */

static void mat_of_pose(const dk_pose *p, double m[16])
{
    dk_pose_to_matrix(p, m);
}

static void mat_mul(const double a[16], const double b[16], double o[16])
{
    double r[16];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double s = 0;
            for (int k = 0; k < 4; k++) s += a[i * 4 + k] * b[k * 4 + j];
            r[i * 4 + j] = s;
        }
    memcpy(o, r, sizeof r);
}

static int cmp_sd_time(const void *a, const void *b, void *ctx)
{
    const sd_row *sds = ctx;
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    if (sds[x].timestamp != sds[y].timestamp) return sds[x].timestamp < sds[y].timestamp ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Insertion-free merge sort of row indices by timestamp (stable, no qsort_r). */
static void sort_rows(int64_t *v, int64_t n, int64_t *tmp, const sd_row *sds)
{
    if (n < 2) return;
    int64_t h = n / 2;
    sort_rows(v, h, tmp, sds);
    sort_rows(v + h, n - h, tmp, sds);
    int64_t i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = cmp_sd_time(&v[j], &v[i], (void *)sds) < 0 ? v[j++] : v[i++];
    while (i < h) tmp[k++] = v[i++];
    while (j < n) tmp[k++] = v[j++];
    memcpy(v, tmp, (size_t)n * sizeof *v);
}

static int file_exists(const char *root, const char *rel)
{
    char path[NS_PATH_MAX];
    struct stat sb;
    if (snprintf(path, sizeof path, "%s/%s", root, rel) >= (int)sizeof path) return 0;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int order_samples(dk_nusc *db)
{
    db->scene_info = dk_calloc((size_t)(db->n_scenes ? db->n_scenes : 1), sizeof *db->scene_info);
    db->samples = dk_calloc((size_t)(db->n_srows ? db->n_srows : 1), sizeof *db->samples);
    if (!db->scene_info || !db->samples) return dk__error(DK_ENOMEM, "dk_nusc_open", "out of memory");
    int64_t next_index = 0;
    for (int64_t sc = 0; sc < db->n_scenes; sc++) {
        scene_row *s = &db->scenes[sc];
        dk_nusc_scene *si = &db->scene_info[sc];
        si->token = s->token;
        si->name = s->name;
        si->first_sample = next_index;
        int64_t r = *s->first ? tokmap_find(&db->m_sample, s->first) : -1;
        if (*s->first && r < 0)
            return dk__error(DK_EINVALIDDATA, "dk_nusc_open",
                             "scene.json: [%lld].first_sample_token: no sample with token '%.64s'",
                             (long long)sc, s->first);
        int64_t prev = -1;
        while (r >= 0) {
            sample_row *sr = &db->srows[r];
            if (strcmp(sr->scene_token, s->token))
                return dk__error(DK_EINVALIDDATA, "dk_nusc_open",
                                 "sample.json: sample %s on scene %s's next chain belongs to "
                                 "scene %s",
                                 sr->token, s->name, sr->scene_token);
            if (sr->index >= 0)
                return dk__error(DK_EINVALIDDATA, "dk_nusc_open",
                                 "sample.json: sample %s is reached twice along scene %s's "
                                 "next chain",
                                 sr->token, s->name);
            if (prev >= 0 && sr->timestamp < db->samples[prev].timestamp)
                return dk__error(DK_EINVALIDDATA, "dk_nusc_open",
                                 "sample.json: sample %s is earlier than the sample before it "
                                 "in scene %s",
                                 sr->token, s->name);
            sr->index = next_index;
            dk_nusc_sample *o = &db->samples[next_index];
            o->token = sr->token;
            o->scene_token = s->token;
            o->scene = (int)sc;
            o->index_in_scene = next_index - si->first_sample;
            o->prev = prev;
            o->next = -1;
            o->timestamp = sr->timestamp;
            if (prev >= 0) db->samples[prev].next = next_index;
            prev = next_index++;
            if (!*sr->next) break;
            r = tokmap_find(&db->m_sample, sr->next);
            if (r < 0)
                return dk__error(DK_EINVALIDDATA, "dk_nusc_open",
                                 "sample.json: sample %s: next: no sample with token '%.64s'",
                                 sr->token, sr->next);
        }
        si->n_samples = next_index - si->first_sample;
    }
    db->n_samples = next_index;
    return DK_OK;
}

static int assign_sample_data(dk_nusc *db)
{
    int64_t *lidar_row = dk_malloc((size_t)(db->n_samples ? db->n_samples : 1) * sizeof(int64_t));
    int64_t *cam_row =
        dk_malloc((size_t)(db->n_samples ? db->n_samples : 1) * DK_NUSC_NUM_CAMS * sizeof(int64_t));
    int64_t *order = dk_malloc((size_t)(db->n_sds ? db->n_sds : 1) * sizeof(int64_t));
    int64_t *tmp = dk_malloc((size_t)(db->n_sds ? db->n_sds : 1) * sizeof(int64_t));
    int st = DK_OK;
    if (!lidar_row || !cam_row || !order || !tmp) {
        st = dk__error(DK_ENOMEM, "dk_nusc_open", "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < db->n_samples; i++) lidar_row[i] = -1;
    for (int64_t i = 0; i < db->n_samples * DK_NUSC_NUM_CAMS; i++) cam_row[i] = -1;
    /* Channel of every row: camera slot 0..5, 6 = LIDAR_TOP, -1 other. */
    for (int64_t r = 0; r < db->n_sds; r++) {
        const sd_row *d = &db->sds[r];
        int64_t si = db->srows[d->sample].index;
        if (si < 0 || !d->key) continue;
        const char *ch = db->sensors[db->calibs[d->calib].sensor].channel;
        int64_t *slot = NULL;
        if (!strcmp(ch, "LIDAR_TOP")) slot = &lidar_row[si];
        for (int c = 0; c < DK_NUSC_NUM_CAMS; c++)
            if (!strcmp(ch, cam_names[c])) slot = &cam_row[si * DK_NUSC_NUM_CAMS + c];
        if (!slot) continue;
        if (*slot >= 0) {
            st = dk__error(DK_EINVALIDDATA, "dk_nusc_open",
                           "sample_data.json: sample %s has two %s key frames (%s and %s)",
                           db->samples[si].token, ch, db->sds[*slot].token, d->token);
            goto out;
        }
        *slot = r;
    }
    for (int64_t si = 0; si < db->n_samples; si++) {
        dk_nusc_sample *s = &db->samples[si];
        if (lidar_row[si] < 0) {
            st = dk__error(DK_EINVALIDDATA, "dk_nusc_open", "sample %s: no LIDAR_TOP key frame",
                           s->token);
            goto out;
        }
        const sd_row *l = &db->sds[lidar_row[si]];
        s->lidar_token = l->token;
        s->lidar_filename = l->filename;
        s->lidar_timestamp = l->timestamp;
        s->lidar2ego = db->calibs[l->calib].pose;
        s->ego2global = db->egos[l->ego].pose;
        double l2e[16], e2g[16], l2g[16];
        mat_of_pose(&s->lidar2ego, l2e);
        mat_of_pose(&s->ego2global, e2g);
        mat_mul(e2g, l2e, l2g);
        for (int c = 0; c < DK_NUSC_NUM_CAMS; c++) {
            int64_t r = cam_row[si * DK_NUSC_NUM_CAMS + c];
            if (r < 0) {
                st = dk__error(DK_EINVALIDDATA, "dk_nusc_open", "sample %s: no %s key frame",
                               s->token, cam_names[c]);
                goto out;
            }
            const sd_row *d = &db->sds[r];
            const calib_row *cb = &db->calibs[d->calib];
            if (!cb->has_k) {
                st = dk__error(DK_EINVALIDDATA, "dk_nusc_open",
                               "calibrated_sensor.json: %s (%s of sample %s) has no camera_intrinsic",
                               cb->token, cam_names[c], s->token);
                goto out;
            }
            dk_nusc_cam *cam = &s->cams[c];
            cam->channel = cam_names[c];
            cam->token = d->token;
            cam->filename = d->filename;
            cam->width = d->width;
            cam->height = d->height;
            cam->timestamp = d->timestamp;
            memcpy(cam->intrinsic, cb->k, sizeof cam->intrinsic);
            cam->sensor2ego = cb->pose;
            cam->ego2global = db->egos[d->ego].pose;
            cam->video = NULL;
            cam->video_frame = -1;
            dk_pose g2e = dk_pose_inverse(&cam->ego2global);
            dk_pose e2c = dk_pose_inverse(&cam->sensor2ego);
            double g2e_m[16], e2c_m[16], t[16];
            mat_of_pose(&g2e, g2e_m);
            mat_of_pose(&e2c, e2c_m);
            mat_mul(g2e_m, l2g, t);
            mat_mul(e2c_m, t, cam->lidar2cam);
            double k4[16] = {0};
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) k4[i * 4 + j] = cb->k[i * 3 + j];
            k4[15] = 1;
            mat_mul(k4, cam->lidar2cam, cam->lidar2img);
        }
    }
    /* Video frames: per scene and camera, every row of that channel in time
       order. Rows are bucketed by (scene, camera) with a counting sort, then
       each bucket is sorted by time. */
    {
        size_t nb = (size_t)db->n_scenes * DK_NUSC_NUM_CAMS;
        int64_t *bstart = dk_calloc(nb + 1, sizeof *bstart);
        int64_t *bfill = dk_calloc(nb + 1, sizeof *bfill);
        int32_t *bkey = dk_malloc((size_t)(db->n_sds ? db->n_sds : 1) * sizeof *bkey);
        if (!bstart || !bfill || !bkey) {
            dk_free(bstart);
            dk_free(bfill);
            dk_free(bkey);
            st = dk__error(DK_ENOMEM, "dk_nusc_open", "out of memory");
            goto out;
        }
        for (int64_t r = 0; r < db->n_sds; r++) {
            const sd_row *d = &db->sds[r];
            int64_t s_idx = db->srows[d->sample].index;
            bkey[r] = -1;
            if (s_idx < 0) continue;
            const char *ch = db->sensors[db->calibs[d->calib].sensor].channel;
            for (int c = 0; c < DK_NUSC_NUM_CAMS; c++)
                if (!strcmp(ch, cam_names[c]))
                    bkey[r] = (int32_t)(db->samples[s_idx].scene * DK_NUSC_NUM_CAMS + c);
            if (bkey[r] >= 0) bstart[bkey[r] + 1]++;
        }
        for (size_t k = 0; k < nb; k++) bstart[k + 1] += bstart[k];
        for (int64_t r = 0; r < db->n_sds; r++)
            if (bkey[r] >= 0) order[bstart[bkey[r]] + bfill[bkey[r]]++] = r;
        for (size_t k = 0; k < nb && !st; k++) {
            int64_t m = bstart[k + 1] - bstart[k];
            if (!m) continue;
            int sc = (int)(k / DK_NUSC_NUM_CAMS), c = (int)(k % DK_NUSC_NUM_CAMS);
            char rel[NS_PATH_MAX];
            snprintf(rel, sizeof rel, "video/%s/%s.mp4", db->scene_info[sc].name, cam_names[c]);
            if (!file_exists(db->root, rel)) continue;
            const char *video = keep_str(db, rel);
            if (!video) {
                st = dk__error(DK_ENOMEM, "dk_nusc_open", "out of memory");
                break;
            }
            int64_t *v = order + bstart[k];
            sort_rows(v, m, tmp, db->sds);
            for (int64_t j = 0; j < m; j++) {
                const sd_row *d = &db->sds[v[j]];
                if (!d->key) continue;
                dk_nusc_cam *cam = &db->samples[db->srows[d->sample].index].cams[c];
                if (cam->token != d->token) continue;
                cam->video = video;
                cam->video_frame = j;
            }
        }
        dk_free(bstart);
        dk_free(bfill);
        dk_free(bkey);
    }
out:
    dk_free(lidar_row);
    dk_free(cam_row);
    dk_free(order);
    dk_free(tmp);
    return st;
}

static int ann_velocity(const dk_nusc *db, const ann_row *a, double v[3])
{
    int64_t pi = *a->prev ? tokmap_find(&db->m_ann, a->prev) : -1;
    int64_t ni = *a->next ? tokmap_find(&db->m_ann, a->next) : -1;
    if (*a->prev && pi < 0) return -1;
    if (*a->next && ni < 0) return -2;
    v[0] = v[1] = v[2] = 0;
    if (pi < 0 && ni < 0) return 0;
    const ann_row *first = pi >= 0 ? &db->anns[pi] : a;
    const ann_row *last = ni >= 0 ? &db->anns[ni] : a;
    double t0 = 1e-6 * (double)db->srows[first->sample].timestamp;
    double t1 = 1e-6 * (double)db->srows[last->sample].timestamp;
    double dt = t1 - t0, max_dt = (pi >= 0 && ni >= 0) ? 3.0 : 1.5;
    if (!(dt > 0) || dt > max_dt) return 0;
    for (int j = 0; j < 3; j++) v[j] = (last->t[j] - first->t[j]) / dt;
    return 0;
}

static int build_boxes(dk_nusc *db)
{
    db->box_start = dk_calloc((size_t)db->n_samples + 1, sizeof *db->box_start);
    db->boxes = dk_calloc((size_t)(db->n_anns ? db->n_anns : 1), sizeof *db->boxes);
    int64_t *fill = dk_calloc((size_t)db->n_samples + 1, sizeof *fill);
    int st = DK_OK;
    if (!db->box_start || !db->boxes || !fill) {
        st = dk__error(DK_ENOMEM, "dk_nusc_open", "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < db->n_anns; i++) {
        int64_t si = db->srows[db->anns[i].sample].index;
        if (si >= 0) db->box_start[si + 1]++;
    }
    for (int64_t i = 0; i < db->n_samples; i++) {
        db->box_start[i + 1] += db->box_start[i];
        db->samples[i].n_boxes = db->box_start[i + 1] - db->box_start[i];
    }
    for (int64_t i = 0; i < db->n_anns; i++) {
        const ann_row *a = &db->anns[i];
        int64_t si = db->srows[a->sample].index;
        if (si < 0) continue;
        const dk_nusc_sample *s = &db->samples[si];
        dk_nusc_box *b = &db->boxes[db->box_start[si] + fill[si]++];
        dk_pose l2g = dk_pose_compose(&s->ego2global, &s->lidar2ego);
        dk_pose g2l = dk_pose_inverse(&l2g);
        double c[3], axis[3], xa[3] = {1, 0, 0}, vg[3], vl[3];
        dk_pose_apply(&g2l, a->t, c);
        dk_pose box = {{a->q[0], a->q[1], a->q[2], a->q[3]}, {0, 0, 0}};
        dk_pose_rotate(&box, xa, vg);
        dk_pose_rotate(&g2l, vg, axis);
        int vs = ann_velocity(db, a, vg);
        if (vs) {
            st = dk__error(DK_EINVALIDDATA, "dk_nusc_open",
                           "sample_annotation.json: %s: %s: no sample_annotation with token '%.64s'",
                           a->token, vs == -1 ? "prev" : "next", vs == -1 ? a->prev : a->next);
            goto out;
        }
        dk_pose_rotate(&g2l, vg, vl);
        for (int j = 0; j < 3; j++) b->center[j] = (float)c[j];
        b->size[0] = (float)a->size[1];
        b->size[1] = (float)a->size[0];
        b->size[2] = (float)a->size[2];
        b->yaw = (float)atan2(axis[1], axis[0]);
        b->velocity[0] = (float)vl[0];
        b->velocity[1] = (float)vl[1];
        const char *cat = db->cats[db->insts[a->instance].category].name;
        b->label = dk_nusc_class_of_category(cat);
        b->num_lidar_pts = a->num_lidar;
        b->num_radar_pts = a->num_radar;
        b->visibility = a->visibility;
        b->instance = (int32_t)a->instance;
        b->token = a->token;
        b->category = cat;
    }
out:
    dk_free(fill);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                   */

static int find_version(dk_nusc *db)
{
    DIR *dir = opendir(db->root);
    if (!dir) return dk__error(DK_ENOENT, "dk_nusc_open", "%s: cannot open the folder", db->root);
    char found[256] = "";
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (strncmp(e->d_name, "v1.0-", 5) || strlen(e->d_name) >= sizeof found) continue;
        char path[NS_PATH_MAX];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", db->root, e->d_name);
        if (stat(path, &sb) || !S_ISDIR(sb.st_mode)) continue;
        if (n++ == 0) snprintf(found, sizeof found, "%s", e->d_name);
    }
    closedir(dir);
    if (n == 0)
        return dk__error(DK_ENOENT, "dk_nusc_open", "%s: no v1.0-* table folder", db->root);
    if (n > 1)
        return dk__error(DK_ENOENT, "dk_nusc_open",
                         "%s: %d v1.0-* table folders; choose one with dk_nusc_config.version",
                         db->root, n);
    size_t len = strlen(found) + 1;
    db->version = dk_malloc(len);
    if (!db->version) return dk__error(DK_ENOMEM, "dk_nusc_open", "out of memory");
    memcpy(db->version, found, len);
    return DK_OK;
}

int dk_nusc_open(const char *root, const dk_nusc_config *cfg, dk_nusc **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!root) return dk__error(DK_EINVAL, __func__, "root is NULL");
    dk_nusc_config def;
    if (!cfg) {
        dk_nusc_config_init(&def);
        cfg = &def;
    }
    if (cfg->version && (strchr(cfg->version, '/') || !strcmp(cfg->version, "..")))
        return dk__error(DK_EINVAL, __func__, "version '%s' is not a folder name", cfg->version);
    dk_nusc *db = dk_calloc(1, sizeof *db);
    if (!db) return dk__error(DK_ENOMEM, __func__, "out of memory");
    int st;
    size_t len = strlen(root) + 1;
    db->root = dk_malloc(len);
    if (!db->root) {
        st = dk__error(DK_ENOMEM, __func__, "out of memory");
        goto fail;
    }
    memcpy(db->root, root, len);
    if (cfg->version) {
        len = strlen(cfg->version) + 1;
        db->version = dk_malloc(len);
        if (!db->version) {
            st = dk__error(DK_ENOMEM, __func__, "out of memory");
            goto fail;
        }
        memcpy(db->version, cfg->version, len);
    } else if ((st = find_version(db))) {
        goto fail;
    }
    if ((st = dk_arena_create(1 << 16, &db->strings))) goto fail;
    if ((st = read_tables(db))) goto fail;
    if ((st = order_samples(db))) goto fail;
    if ((st = assign_sample_data(db))) goto fail;
    if ((st = build_boxes(db))) goto fail;
    *out = db;
    return DK_OK;
fail:
    dk_nusc_close(db);
    return st;
}

void dk_nusc_close(dk_nusc *db)
{
    if (!db) return;
    tokmap *maps[] = {&db->m_sensor, &db->m_calib, &db->m_ego, &db->m_sample, &db->m_scene,
                      &db->m_ann, &db->m_inst, &db->m_cat, &db->m_vis};
    for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++) tokmap_free(maps[i]);
    dk_free(db->sensors);
    dk_free(db->calibs);
    dk_free(db->egos);
    dk_free(db->srows);
    dk_free(db->sds);
    dk_free(db->scenes);
    dk_free(db->anns);
    dk_free(db->insts);
    dk_free(db->cats);
    dk_free(db->vis);
    dk_free(db->samples);
    dk_free(db->scene_info);
    dk_free(db->box_start);
    dk_free(db->boxes);
    dk_arena_destroy(db->strings);
    dk_free(db->root);
    dk_free(db->version);
    dk_free(db);
}

/* ------------------------------------------------------------------------ */
/* Queries                                                                   */

const char *dk_nusc_root(const dk_nusc *db)
{
    return db ? db->root : NULL;
}

const char *dk_nusc_version(const dk_nusc *db)
{
    return db ? db->version : NULL;
}

int64_t dk_nusc_num_samples(const dk_nusc *db)
{
    return db ? db->n_samples : 0;
}

int dk_nusc_num_scenes(const dk_nusc *db)
{
    return db ? (int)db->n_scenes : 0;
}

int dk_nusc_get_scene(const dk_nusc *db, int i, dk_nusc_scene *out)
{
    if (!db || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (i < 0 || i >= db->n_scenes)
        return dk__error(DK_ERANGE, __func__, "scene %d outside [0, %lld)", i,
                         (long long)db->n_scenes);
    *out = db->scene_info[i];
    return DK_OK;
}

int dk_nusc_get_sample(const dk_nusc *db, int64_t i, dk_nusc_sample *out)
{
    if (!db || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (i < 0 || i >= db->n_samples)
        return dk__error(DK_ERANGE, __func__, "sample %lld outside [0, %lld)", (long long)i,
                         (long long)db->n_samples);
    *out = db->samples[i];
    return DK_OK;
}

int64_t dk_nusc_find_sample(const dk_nusc *db, const char *token)
{
    if (!db || !token) return -1;
    int64_t r = tokmap_find(&db->m_sample, token);
    return r < 0 ? -1 : db->srows[r].index;
}

int64_t dk_nusc_get_boxes(const dk_nusc *db, int64_t i, const dk_nusc_box **boxes)
{
    if (!db || !boxes) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (i < 0 || i >= db->n_samples)
        return dk__error(DK_ERANGE, __func__, "sample %lld outside [0, %lld)", (long long)i,
                         (long long)db->n_samples);
    *boxes = db->boxes + db->box_start[i];
    return db->box_start[i + 1] - db->box_start[i];
}

int dk_nusc_load_points(const dk_nusc *db, int64_t i, int dims, float **points,
                        int64_t *n_points)
{
    if (!db || !points || !n_points) return dk__error(DK_EINVAL, __func__, "NULL argument");
    *points = NULL;
    *n_points = 0;
    if (dims < 3 || dims > 16) return dk__error(DK_EINVAL, __func__, "dims %d outside 3..16", dims);
    if (i < 0 || i >= db->n_samples)
        return dk__error(DK_ERANGE, __func__, "sample %lld outside [0, %lld)", (long long)i,
                         (long long)db->n_samples);
    const dk_nusc_sample *s = &db->samples[i];
    char path[NS_PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", db->root, s->lidar_filename) >= (int)sizeof path)
        return dk__error(DK_EINVAL, __func__, "sample %s: path too long", s->token);
    uint8_t *data;
    size_t size;
    int st = dk_file_read(path, &data, &size);
    if (st)
        return dk__error(st, __func__, "sample %s: LIDAR_TOP %s: %s", s->token, path,
                         dk_status_str(st));
    size_t rec = (size_t)dims * sizeof(float);
    if (size % rec) {
        dk_free(data);
        return dk__error(DK_EINVALIDDATA, __func__,
                         "sample %s: LIDAR_TOP %s: %zu bytes is not a whole number of %d-float "
                         "points (truncated?)",
                         s->token, path, size, dims);
    }
    int64_t n = (int64_t)(size / rec);
    float *p = (float *)data;   /* dk_file_read buffers are malloc-aligned */
    for (int64_t k = 0; k < n; k++)
        for (int j = 0; j < 3; j++)
            if (!isfinite(p[k * dims + j])) {
                dk_free(data);
                return dk__error(DK_EINVALIDDATA, __func__,
                                 "sample %s: LIDAR_TOP %s: point %lld: coordinate %d is not "
                                 "finite",
                                 s->token, path, (long long)k, j);
            }
    *points = p;
    *n_points = n;
    return DK_OK;
}
