/* Actor tracks of a Gaussian scene as JSON (scene.tracks.json next to a PLY). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "drivekit/sim.h"
#include "internal.h"
#include "sim_impl.h"

/* Keyframes per track: bounded so that sizes stay far from int overflow. */
#define MAX_KEYFRAMES 100000000

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */

static int write_tracks(const dk_scene *s, dk_jsonw *w)
{
    int n = dk_scene_actor_track_count(s);
    int32_t *ids = dk_malloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
    if (!ids) return dk__error(DK_ENOMEM, __func__, "out of memory");
    n = dk_scene_actor_track_ids(s, ids, n);
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "format");
    dk_jsonw_string(w, DK_TRACKS_FORMAT);
    dk_jsonw_key(w, "version");
    dk_jsonw_int(w, DK_TRACKS_VERSION);
    dk_jsonw_key(w, "actors");
    dk_jsonw_array_begin(w);
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        int nk;
        const double *times;
        const dk_pose *poses;
        int st = dk_scene_actor_track(s, id, &nk, &times, &poses);
        if (st) {
            dk_free(ids);
            return st;
        }
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, "id");
        dk_jsonw_int(w, id);
        dk_jsonw_key(w, "times");
        dk_jsonw_array_begin(w);
        for (int k = 0; k < nk; k++) dk_jsonw_number(w, times[k]);
        dk_jsonw_array_end(w);
        dk_jsonw_key(w, "poses");
        dk_jsonw_array_begin(w);
        for (int k = 0; k < nk; k++) {
            dk_jsonw_array_begin(w);
            for (int j = 0; j < 4; j++) dk_jsonw_number(w, poses[k].q[j]);
            for (int j = 0; j < 3; j++) dk_jsonw_number(w, poses[k].t[j]);
            dk_jsonw_array_end(w);
        }
        dk_jsonw_array_end(w);
        dk_jsonw_object_end(w);
    }
    dk_jsonw_array_end(w);
    dk_jsonw_object_end(w);
    dk_free(ids);
    return DK_OK;
}

int dk_scene_save_tracks_json_memory(const dk_scene *s, char **out, size_t *out_size)
{
    if (out) *out = NULL;
    if (out_size) *out_size = 0;
    if (!s || !out || !out_size) return dk__error(DK_EINVAL, __func__, "NULL argument");
    dk_jsonw *w;
    int st = dk_jsonw_create(1, &w);
    if (st) return st;
    st = write_tracks(s, w);
    const char *text = NULL;
    size_t len = 0;
    if (!st) st = dk_jsonw_finish(w, &text, &len);
    if (!st) {
        *out = dk_malloc(len + 1);
        if (!*out) {
            st = dk__error(DK_ENOMEM, __func__, "out of memory for %zu bytes", len);
        } else {
            memcpy(*out, text, len);
            (*out)[len] = '\0';
            *out_size = len;
        }
    }
    dk_jsonw_destroy(w);
    return st;
}

int dk_scene_save_tracks_json(const dk_scene *s, const char *path)
{
    if (!s || !path) return dk__error(DK_EINVAL, __func__, "NULL argument");
    char *text;
    size_t len;
    int st = dk_scene_save_tracks_json_memory(s, &text, &len);
    if (st) return st;
    st = dk_file_write(path, text, len);
    dk_free(text);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Reader                                                                    */

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

/* DK_EINVALIDDATA naming the document and the JSON path of the value. */
#define fail(r, path, ...) dk__json_invalid((r)->func, (r)->name, (path), __VA_ARGS__)

static int read_actor(const rd *r, const dk_json_cur *a, dk_scene *tmp, double **times_buf,
                      dk_pose **poses_buf, size_t *cap)
{
    int st;
    int64_t id;
    dk_json_cur c, times, poses;
    if (dk_json_type_of(a) != DK_JSON_OBJECT) return fail(r, a->path, "expected an object");
    if ((st = dk_json_field(a, "id", &c)) || (st = dk_json_int(&c, 0, INT32_MAX, &id)))
        return rethrow(r, st);
    if ((st = dk_json_field(a, "times", &times))) return rethrow(r, st);
    if ((st = dk_json_field(a, "poses", &poses))) return rethrow(r, st);
    if (dk_json_type_of(&times) != DK_JSON_ARRAY)
        return fail(r, times.path, "expected an array of numbers");
    if (dk_json_type_of(&poses) != DK_JSON_ARRAY)
        return fail(r, poses.path, "expected an array of poses");
    size_t n = dk_json_size(&times);
    if (n < 1) return fail(r, times.path, "needs at least one keyframe");
    if (n > MAX_KEYFRAMES) return fail(r, times.path, "%zu keyframes (at most %d)", n, MAX_KEYFRAMES);
    if (dk_json_size(&poses) != n)
        return fail(r, poses.path, "%zu poses for %zu times", dk_json_size(&poses), n);
    if (dk_scene_actor_track(tmp, (int32_t)id, &(int){0}, &(const double *){NULL},
                             &(const dk_pose *){NULL}) == DK_OK)
        return fail(r, c.path, "actor %lld appears twice", (long long)id);
    if (n > *cap) {
        double *t = dk_realloc(*times_buf, n * sizeof *t);
        if (t) *times_buf = t;
        dk_pose *p = t ? dk_realloc(*poses_buf, n * sizeof *p) : NULL;
        if (p) *poses_buf = p;
        if (!t || !p) return dk__error(DK_ENOMEM, r->func, "%s: out of memory", r->name);
        *cap = n;
    }
    double *tv = *times_buf;
    dk_pose *pv = *poses_buf;
    for (size_t k = 0; k < n; k++) {
        dk_json_cur it;
        if ((st = dk_json_item(&times, k, &it)) || (st = dk_json_number(&it, &tv[k])))
            return rethrow(r, st);
        if (!isfinite(tv[k])) return fail(r, it.path, "not a finite number");
        if (k > 0 && !(tv[k] > tv[k - 1]))
            return fail(r, it.path, "%.17g is not after %.17g (times must increase)", tv[k],
                        tv[k - 1]);
        double v[7];
        if ((st = dk_json_item(&poses, k, &it)) || (st = dk_json_numbers(&it, v, 7)))
            return rethrow(r, st);
        double nn = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + v[3] * v[3]);
        if (!(fabs(nn - 1.0) <= 1e-6))
            return fail(r, it.path, "quaternion norm %.9g is not 1 (not a rigid pose)", nn);
        for (int j = 0; j < 4; j++) pv[k].q[j] = v[j];
        for (int j = 0; j < 3; j++) pv[k].t[j] = v[4 + j];
    }
    st = dk_scene_set_actor_track(tmp, (int32_t)id, (int)n, tv, pv);
    if (st == DK_ENOMEM) return dk__error(DK_ENOMEM, r->func, "%s: out of memory", r->name);
    if (st) {
        const char *m = strstr(dk_errmsg(), "(): ");
        return fail(r, a->path, "%s", m ? m + 4 : dk_errmsg());
    }
    return DK_OK;
}

static int read_doc(const rd *r, const dk_json *doc, dk_scene *s)
{
    dk_json_cur root = dk_json_root(doc), c, actors;
    int st;
    if (dk_json_type_of(&root) != DK_JSON_OBJECT) return fail(r, "", "expected an object");
    if ((st = dk_json_field_opt(&root, "format", &c))) return rethrow(r, st);
    if (c.node) {
        const char *f;
        if ((st = dk_json_string(&c, &f))) return rethrow(r, st);
        if (strcmp(f, DK_TRACKS_FORMAT) != 0)
            return fail(r, c.path, "\"%.64s\" is not \"%s\"", f, DK_TRACKS_FORMAT);
    }
    int64_t version;
    if ((st = dk_json_get_int(&root, "version", 0, INT32_MAX, &version))) return rethrow(r, st);
    if (version != DK_TRACKS_VERSION)
        return dk__error(DK_EINVALIDDATA, r->func, "%s: version: %lld is not supported (only %d)",
                         r->name, (long long)version, DK_TRACKS_VERSION);
    if ((st = dk_json_field(&root, "actors", &actors))) return rethrow(r, st);
    if (dk_json_type_of(&actors) != DK_JSON_ARRAY)
        return fail(r, actors.path, "expected an array of actors");
    size_t na = dk_json_size(&actors);
    if (na > DK_SCENE_MAX_ACTORS)
        return fail(r, actors.path, "%zu actors (at most %d)", na, DK_SCENE_MAX_ACTORS);

    dk_scene *tmp;
    if ((st = dk_scene_create(0, 0, 0, &tmp))) return st;
    double *times = NULL;
    dk_pose *poses = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < na && !st; i++) {
        dk_json_cur a;
        st = dk_json_item(&actors, i, &a);
        if (st) st = rethrow(r, st);
        else st = read_actor(r, &a, tmp, &times, &poses, &cap);
    }
    dk_free(times);
    dk_free(poses);
    if (!st) {
        /* Everything checked: the new tracks replace the old ones at once. */
        struct dk_scene_actors *old = s->actors;
        s->actors = tmp->actors;
        tmp->actors = old;
    }
    dk_scene_destroy(tmp);
    return st;
}

int dk_scene_parse_tracks_json(dk_scene *s, const char *text, size_t len, const char *name)
{
    if (!s || (!text && len)) return dk__error(DK_EINVAL, __func__, "NULL argument");
    rd r = {__func__, name ? name : "(tracks)"};
    dk_json *doc;
    int st = dk_json_parse(text ? text : "", len, r.name, &doc);
    if (st) return rethrow(&r, st);
    st = read_doc(&r, doc, s);
    dk_json_free(doc);
    return st;
}

int dk_scene_load_tracks_json(dk_scene *s, const char *path)
{
    if (!s || !path) return dk__error(DK_EINVAL, __func__, "NULL argument");
    rd r = {__func__, path};
    dk_json *doc;
    int st = dk__json_load_doc(__func__, path, &doc);
    if (st) return st;
    st = read_doc(&r, doc, s);
    dk_json_free(doc);
    return st;
}
