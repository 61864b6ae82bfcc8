/*
 * Pipelines: steps bound once against the evolving format, then run per
 * sample; consecutive image steps end in one fused pass per image.
 */
#define _POSIX_C_SOURCE 200809L   /* clock_gettime */

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "data_impl.h"

#define MAX_ELEMENTS 4096

/* ------------------------------------------------------------------------ */
/* Steps                                                                     */

int dk__step_new(const dk__step_vt *vt, void *cfg, dk_step **out)
{
    *out = dk_calloc(1, sizeof **out);
    if (!*out) return dk__error(DK_ENOMEM, "dk_step", "out of memory");
    (*out)->vt = vt;
    (*out)->cfg = cfg;
    return DK_OK;
}

void dk_step_destroy(dk_step *s)
{
    if (!s) return;
    if (s->vt && s->vt->destroy)
        s->vt->destroy(s);
    else
        dk_free(s->cfg);
    dk_free(s);
}

const char *dk_step_name(const dk_step *s)
{
    return s && s->vt ? s->vt->name : NULL;
}

/* -- per element ------------------------------------------------------------ */

typedef struct wrap_cfg {
    dk_step *inner;
    char name[256];   /* array name (per element) or path (at path) */
} wrap_cfg;

typedef struct elem_binding {
    const dk__step_vt *vt;   /* the inner step's kind (to unbind) */
    int n;
    void **b;         /* inner bindings, one per element */
} elem_binding;

static void wrap_destroy(dk_step *s)
{
    wrap_cfg *c = s->cfg;
    if (c) dk_step_destroy(c->inner);
    dk_free(c);
}

static void elem_unbind(void *binding)
{
    elem_binding *eb = binding;
    if (!eb) return;
    for (int i = 0; i < eb->n; i++)
        if (eb->vt->unbind) eb->vt->unbind(eb->b[i]);
    dk_free(eb->b);
    dk_free(eb);
}

static int elem_bind(dk_step *s, dk_group *fmt, int root, void **binding)
{
    wrap_cfg *c = s->cfg;
    int arrays[64];
    int na = dk_group_find_all(fmt, root, c->name, arrays, 64);
    if (na == 0) return dk__error(DK_ENOENT, "bind", "no array named '%s'", c->name);
    if (na > 64)
        return dk__error(DK_EINVALIDDATA, "bind", "%d arrays named '%s' (at most 64)", na,
                         c->name);
    int total = 0;
    for (int a = 0; a < na && a < 64; a++) {
        dk_field_info fi;
        dk_group_info(fmt, arrays[a], &fi);
        if (fi.kind != DK_FIELD_ARRAY) {
            char path[256];
            dk_group_path(fmt, arrays[a], path, sizeof path);
            return dk__error(DK_EINVALIDDATA, "bind", "%s: an array expected", path);
        }
        total += fi.n_children;
    }
    if (total > MAX_ELEMENTS)
        return dk__error(DK_EINVALIDDATA, "bind", "'%s': %d elements", c->name, total);
    elem_binding *eb = dk_calloc(1, sizeof *eb);
    void **b = dk_calloc((size_t)total + 1, sizeof *b);
    if (!eb || !b) {
        dk_free(eb);
        dk_free(b);
        return dk__error(DK_ENOMEM, "bind", "out of memory");
    }
    eb->b = b;
    eb->vt = c->inner->vt;
    int st = DK_OK;
    for (int a = 0; a < na && a < 64 && !st; a++) {
        dk_field_info fi;
        dk_group_info(fmt, arrays[a], &fi);
        for (int i = 0; i < fi.n_children && !st; i++) {
            int e = dk_group_child_at(fmt, arrays[a], i);
            st = c->inner->vt->bind(c->inner, fmt, e, &b[eb->n]);
            if (!st) eb->n++;
        }
    }
    if (st) {
        elem_unbind(eb);
        return st;
    }
    *binding = eb;
    return DK_OK;
}

static int elem_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const wrap_cfg *c = s->cfg;
    const elem_binding *eb = binding;
    for (int i = 0; i < eb->n; i++) {
        dk__step_ctx e = *ctx;
        /* Nested per-element steps get distinct streams for every (outer,
           inner) pair of elements. */
        e.element = ctx->element >= 0 ? (ctx->element + 1) * (MAX_ELEMENTS + 1) + i : i;
        dk_rng_init(&e.rng, ctx->seed,
                    dk_rng_stream_id((uint64_t)ctx->epoch, (uint64_t)ctx->sample,
                                     (uint64_t)ctx->step, (uint64_t)e.element));
        int st = c->inner->vt->run(c->inner, eb->b[i], x, &e);
        if (st) return st;
    }
    return DK_OK;
}

static const dk__step_vt elem_vt = {"per_element", elem_bind, elem_run, elem_unbind, wrap_destroy, 0};
static const dk__step_vt elem_image_vt = {"per_element", elem_bind, elem_run, elem_unbind,
                                          wrap_destroy, 1};

static int make_wrapper(dk_step *inner, const char *name, const dk__step_vt *vt,
                        const dk__step_vt *image_vt, const char *func, dk_step **out)
{
    if (!out) {
        dk_step_destroy(inner);
        return dk__error(DK_EINVAL, func, "out is NULL");
    }
    *out = NULL;
    if (!inner || !name || !*name || strlen(name) >= sizeof(((wrap_cfg *)0)->name)) {
        dk_step_destroy(inner);
        return dk__error(DK_EINVAL, func, "NULL step or bad name");
    }
    wrap_cfg *c = dk_calloc(1, sizeof *c);
    if (!c) {
        dk_step_destroy(inner);
        return dk__error(DK_ENOMEM, func, "out of memory");
    }
    c->inner = inner;
    snprintf(c->name, sizeof c->name, "%s", name);
    int st = dk__step_new(inner->vt->image_stage ? image_vt : vt, c, out);
    if (st) wrap_destroy(&(dk_step){vt, c});
    return st;
}

int dk_step_per_element(dk_step *inner, const char *array_name, dk_step **out)
{
    return make_wrapper(inner, array_name, &elem_vt, &elem_image_vt, __func__, out);
}

/* -- at path -------------------------------------------------------------- */

typedef struct path_binding {
    const dk__step_vt *vt;
    void *b;
} path_binding;

static int path_bind(dk_step *s, dk_group *fmt, int root, void **binding)
{
    wrap_cfg *c = s->cfg;
    int at = dk_group_find(fmt, root, c->name);
    if (at < 0) return at;
    path_binding *pb = dk_calloc(1, sizeof *pb);
    if (!pb) return dk__error(DK_ENOMEM, "bind", "out of memory");
    pb->vt = c->inner->vt;
    int st = c->inner->vt->bind(c->inner, fmt, at, &pb->b);
    if (st) {
        dk_free(pb);
        return st;
    }
    *binding = pb;
    return DK_OK;
}

static int path_run(const dk_step *s, const void *binding, dk_sample *x, dk__step_ctx *ctx)
{
    const wrap_cfg *c = s->cfg;
    const path_binding *pb = binding;
    return c->inner->vt->run(c->inner, pb->b, x, ctx);
}

static void path_unbind(void *binding)
{
    path_binding *pb = binding;
    if (!pb) return;
    if (pb->vt->unbind) pb->vt->unbind(pb->b);
    dk_free(pb);
}

static const dk__step_vt path_vt = {"at_path", path_bind, path_run, path_unbind, wrap_destroy, 0};
static const dk__step_vt path_image_vt = {"at_path", path_bind, path_run, path_unbind,
                                          wrap_destroy, 1};

int dk_step_at_path(dk_step *inner, const char *path, dk_step **out)
{
    return make_wrapper(inner, path, &path_vt, &path_image_vt, __func__, out);
}

/* ------------------------------------------------------------------------ */
/* Image plans                                                               */

dk__image_plan *dk__image_plan_find(dk__image_plans *ps, int id)
{
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].id == id) return &ps->p[i];
    return NULL;
}

dk__image_plan *dk__image_plan_add(dk__image_plans *ps, int id)
{
    dk__image_plan *p = dk__image_plan_find(ps, id);
    if (p) {
        dk_free(p->path);
        dk__scratch_put(NULL, p->data);
    } else {
        if (ps->n == ps->cap) {
            int cap = ps->cap ? ps->cap * 2 : 8;
            dk__image_plan *np = dk_realloc(ps->p, (size_t)cap * sizeof *np);
            if (!np) return NULL;
            ps->p = np;
            ps->cap = cap;
        }
        p = &ps->p[ps->n++];
    }
    memset(p, 0, sizeof *p);
    p->id = id;
    p->A[0] = 1;
    p->A[4] = 1;
    p->contrast = 1;
    p->saturation = 1;
    p->swap[0] = 0;
    p->swap[1] = 1;
    p->swap[2] = 2;
    for (int c = 0; c < 3; c++) p->std[c] = 1;
    p->dtype = DK_U8;
    return p;
}

void dk__image_plans_clear(dk__image_plans *ps)
{
    for (int i = 0; i < ps->n; i++) {
        dk_free(ps->p[i].path);
        dk__scratch_put(NULL, ps->p[i].data);
    }
    ps->n = 0;
}

static void plans_free(dk__image_plans *ps)
{
    dk__image_plans_clear(ps);
    dk_free(ps->p);
    memset(ps, 0, sizeof *ps);
}

/* ------------------------------------------------------------------------ */
/* Video cache                                                               */

#define SCRATCH_SLOTS 32
#define SCRATCH_HEAD 64   /* block header: its capacity; keeps the data aligned */

typedef struct vc_entry {
    char *path;
    dk_video *video;
    int holds;                 /* gets not yet put */
    int open;                  /* has decoders (open files); else trimmed */
    int stale;                 /* its file changed while held: closed on the
                                  last put, never handed out again */
    uint64_t hash;             /* of the path */
    uint64_t used;             /* tick of the last get */
    size_t index_bytes;
    struct stat st;            /* the file before it was opened */
} vc_entry;

struct dk__video_cache {
    pthread_mutex_t mu;
    int n, cap, n_open;
    vc_entry *e;
    uint64_t tick;
    int max_open, max_known;
    size_t index_budget, index_bytes;
    int n_scratch;
    void *scratch[SCRATCH_SLOTS];   /* blocks (header included) */
};

static size_t scratch_cap(void *block)
{
    return *(size_t *)block;
}

void *dk__scratch_get(dk__video_cache *vc, size_t size)
{
    if (vc) {
        pthread_mutex_lock(&vc->mu);
        int best = -1;
        for (int i = 0; i < vc->n_scratch; i++) {
            size_t c = scratch_cap(vc->scratch[i]);
            if (c >= size && c <= 8 * size + 65536 &&
                (best < 0 || c < scratch_cap(vc->scratch[best])))
                best = i;
        }
        void *block = NULL;
        if (best >= 0) {
            block = vc->scratch[best];
            vc->scratch[best] = vc->scratch[--vc->n_scratch];
        }
        pthread_mutex_unlock(&vc->mu);
        if (block) return (uint8_t *)block + SCRATCH_HEAD;
    }
    /* Rounded up so that similar sizes share blocks. */
    size_t cap = (size + 65535) / 65536 * 65536;
    if (cap < size || cap > SIZE_MAX - SCRATCH_HEAD) return NULL;
    void *block = dk_malloc(cap + SCRATCH_HEAD);
    if (!block) return NULL;
    *(size_t *)block = cap;
    return (uint8_t *)block + SCRATCH_HEAD;
}

void dk__scratch_put(dk__video_cache *vc, void *p)
{
    if (!p) return;
    void *block = (uint8_t *)p - SCRATCH_HEAD;
    if (vc) {
        pthread_mutex_lock(&vc->mu);
        if (vc->n_scratch < SCRATCH_SLOTS) {
            vc->scratch[vc->n_scratch++] = block;
            block = NULL;
        } else {
            /* Keep the larger blocks. */
            int small = 0;
            for (int i = 1; i < vc->n_scratch; i++)
                if (scratch_cap(vc->scratch[i]) < scratch_cap(vc->scratch[small])) small = i;
            if (scratch_cap(vc->scratch[small]) < scratch_cap(block)) {
                void *t = vc->scratch[small];
                vc->scratch[small] = block;
                block = t;
            }
        }
        pthread_mutex_unlock(&vc->mu);
    }
    dk_free(block);
}

int dk__video_cache_create(int max_open, int max_known, size_t index_budget,
                           dk__video_cache **out)
{
    *out = NULL;
    dk__video_cache *vc = dk_calloc(1, sizeof *vc);
    if (!vc) return dk__error(DK_ENOMEM, "dk_pipeline_create", "out of memory");
    if (pthread_mutex_init(&vc->mu, NULL)) {
        dk_free(vc);
        return dk__error(DK_ESYS, "dk_pipeline_create", "cannot create a mutex");
    }
    vc->max_open = max_open < 1 ? 1 : max_open;
    vc->max_known = max_known < vc->max_open ? vc->max_open : max_known;
    vc->index_budget = index_budget;
    *out = vc;
    return DK_OK;
}

void dk__video_cache_destroy(dk__video_cache *vc)
{
    if (!vc) return;
    for (int i = 0; i < vc->n; i++) {
        dk_free(vc->e[i].path);
        dk_video_close(vc->e[i].video);
    }
    dk_free(vc->e);
    for (int i = 0; i < vc->n_scratch; i++) dk_free(vc->scratch[i]);
    pthread_mutex_destroy(&vc->mu);
    dk_free(vc);
}

static uint64_t path_hash(const char *p)
{
    uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a */
    for (; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    return h;
}

/* The least recently used entry nobody holds, among the open ones (open = 1)
 * or the trimmed ones first (open = 0); -1 if none. */
static int vc_lru(const dk__video_cache *vc, int open)
{
    int lru = -1;
    for (int i = 0; i < vc->n; i++) {
        const vc_entry *e = &vc->e[i];
        if (e->holds || (open && !e->open)) continue;
        /* A pipe or device keeps its decoders when trimmed: never picked. */
        if (open && !S_ISREG(e->st.st_mode)) continue;
        if (lru < 0 || (!open && e->open < vc->e[lru].open) ||
            ((open || e->open == vc->e[lru].open) && e->used < vc->e[lru].used))
            lru = i;
    }
    return lru;
}

/* Removes entry i (its handle goes to *closing, closed by the caller after
 * the lock is released). */
static void vc_remove(dk__video_cache *vc, int i, dk_video **closing)
{
    vc_entry *e = &vc->e[i];
    dk_free(e->path);
    *closing = e->video;
    if (e->open) vc->n_open--;
    vc->index_bytes -= e->index_bytes;
    vc->e[i] = vc->e[--vc->n];
}

int dk__video_cache_get(dk__video_cache *vc, const char *path, dk_video **out)
{
    enum { MAX_CLOSE = 8 };
    dk_video *closing[MAX_CLOSE + 1];
    int n_closing = 0;
    struct stat now;
    int have_stat = stat(path, &now) == 0;
    int st = DK_OK;
    *out = NULL;
    uint64_t hash = path_hash(path);
    pthread_mutex_lock(&vc->mu);
    int at = -1;
    for (int i = 0; i < vc->n && at < 0; i++)
        if (vc->e[i].hash == hash && !vc->e[i].stale && !strcmp(vc->e[i].path, path)) at = i;
    /* A handle whose file changed since it was opened is dropped (closed now,
       or on its last put when held) and the file opened anew. */
    if (at >= 0 && (!have_stat || !dk__same_file(&now, &vc->e[at].st))) {
        if (vc->e[at].holds)
            vc->e[at].stale = 1;
        else
            vc_remove(vc, at, &closing[n_closing++]);
        at = -1;
    }
    if (at < 0) {
        if (vc->n == vc->cap) {
            int cap = vc->cap ? vc->cap * 2 : 16;
            vc_entry *e = dk_realloc(vc->e, (size_t)cap * sizeof *e);
            if (!e) {
                st = dk__error(DK_ENOMEM, __func__, "out of memory");
            } else {
                vc->e = e;
                vc->cap = cap;
            }
        }
        /* Opened under the lock: a second thread asking for the same video
           waits instead of scanning it again. */
        dk_video *v = NULL;
        char *copy = NULL;
        if (!st) {
            dk_video_config cfg;
            dk_video_config_init(&cfg);
            cfg.frame_cache_bytes = 0;
            cfg.packet_cache_bytes = (size_t)4 << 20;
            st = dk_video_open(path, &cfg, &v);
        }
        if (!st && !(copy = dk_strdup(path))) {
            dk_video_close(v);
            st = dk__error(DK_ENOMEM, __func__, "out of memory");
        }
        if (!st) {
            dk_video_memory m;
            dk_video_get_memory(v, &m);
            vc_entry *e = &vc->e[vc->n++];
            memset(e, 0, sizeof *e);
            e->path = copy;
            e->hash = hash;
            e->video = v;
            e->index_bytes = m.index_bytes;
            if (have_stat) e->st = now;
            vc->index_bytes += m.index_bytes;
            at = vc->n - 1;
        }
    }
    if (at >= 0) {
        vc_entry *e = &vc->e[at];
        if (!e->open) {
            e->open = 1;
            vc->n_open++;
        }
        e->holds++;
        e->used = ++vc->tick;
        *out = e->video;
        /* Beyond the bounds: the least recently used idle handles are
           trimmed (they keep their index; under the lock, so that no other
           call closes one meanwhile), then the oldest are closed. */
        while (vc->n_open > vc->max_open) {
            int i = vc_lru(vc, 1);
            if (i < 0) break;
            vc->e[i].open = 0;
            vc->n_open--;
            dk_video_trim(vc->e[i].video);
            /* What it keeps from now on (its cache tables shrank). */
            dk_video_memory m;
            dk_video_get_memory(vc->e[i].video, &m);
            vc->index_bytes = vc->index_bytes - vc->e[i].index_bytes + m.index_bytes;
            vc->e[i].index_bytes = m.index_bytes;
        }
        while ((vc->n > vc->max_known || vc->index_bytes > vc->index_budget) &&
               n_closing < MAX_CLOSE) {
            int i = vc_lru(vc, 0);
            if (i < 0) break;
            vc_remove(vc, i, &closing[n_closing++]);
        }
    }
    pthread_mutex_unlock(&vc->mu);
    /* Removed from the table and held by nobody: closed without the lock. */
    for (int k = 0; k < n_closing; k++) dk_video_close(closing[k]);
    return st;
}

void dk__video_cache_put(dk__video_cache *vc, dk_video *v)
{
    if (!vc || !v) return;
    dk_video *closing = NULL;
    pthread_mutex_lock(&vc->mu);
    for (int i = 0; i < vc->n; i++)
        if (vc->e[i].video == v) {
            if (vc->e[i].holds > 0) vc->e[i].holds--;
            if (!vc->e[i].holds && vc->e[i].stale) vc_remove(vc, i, &closing);
            break;
        }
    pthread_mutex_unlock(&vc->mu);
    dk_video_close(closing);
}

void dk__video_cache_counts(dk__video_cache *vc, int *open, int *known, size_t *index_bytes)
{
    pthread_mutex_lock(&vc->mu);
    if (open) *open = vc->n_open;
    if (known) *known = vc->n;
    if (index_bytes) *index_bytes = vc->index_bytes;
    pthread_mutex_unlock(&vc->mu);
}

/* ------------------------------------------------------------------------ */
/* Pipelines                                                                 */

typedef struct pstep {
    dk_step *step;
    void *binding;
    int ends_image_run;   /* an image stage followed by a non-image step or the end */
    dk_group *run_format; /* the format when that run ended (NULL: the final one) */
    atomic_llong ns, calls;
} pstep;

struct dk_pipeline {
    dk_pipeline_config cfg;
    dk_group *input, *format;
    int n, cap;
    pstep *steps;
    dk__video_cache *videos;
    atomic_llong fused_ns, fused_calls;
};

int dk__pipeline_open_videos(const dk_pipeline *p)
{
    int n = 0;
    if (p && p->videos) dk__video_cache_counts(p->videos, &n, NULL, NULL);
    return n;
}

void dk_pipeline_config_init(dk_pipeline_config *cfg)
{
    if (cfg) memset(cfg, 0, sizeof *cfg);
}

int dk_pipeline_create(const dk_group *input_format, const dk_pipeline_config *cfg,
                       dk_pipeline **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!input_format) return dk__error(DK_EINVAL, __func__, "NULL input format");
    dk_pipeline *p = dk_calloc(1, sizeof *p);
    if (!p) return dk__error(DK_ENOMEM, __func__, "out of memory");
    if (cfg)
        p->cfg = *cfg;
    else
        dk_pipeline_config_init(&p->cfg);
    int st = dk_group_clone(input_format, &p->input);
    if (!st) st = dk_group_clone(input_format, &p->format);
    if (!st)
        st = dk__video_cache_create(DK__MAX_OPEN_VIDEOS, DK__MAX_KNOWN_VIDEOS,
                                    DK__VIDEO_INDEX_BUDGET, &p->videos);
    if (st) {
        dk_pipeline_destroy(p);
        return st;
    }
    atomic_init(&p->fused_ns, 0);
    atomic_init(&p->fused_calls, 0);
    *out = p;
    return DK_OK;
}

void dk_pipeline_destroy(dk_pipeline *p)
{
    if (!p) return;
    for (int i = 0; i < p->n; i++) {
        if (p->steps[i].step->vt->unbind) p->steps[i].step->vt->unbind(p->steps[i].binding);
        dk_step_destroy(p->steps[i].step);
        dk_group_destroy(p->steps[i].run_format);
    }
    dk_free(p->steps);
    dk_group_destroy(p->input);
    dk_group_destroy(p->format);
    dk__video_cache_destroy(p->videos);
    dk_free(p);
}

int dk_pipeline_add(dk_pipeline *p, dk_step *step)
{
    if (!p || !step) {
        dk_step_destroy(step);
        return dk__error(DK_EINVAL, __func__, "NULL argument");
    }
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 16;
        pstep *s = dk_realloc(p->steps, (size_t)cap * sizeof *s);
        if (!s) {
            dk_step_destroy(step);
            return dk__error(DK_ENOMEM, __func__, "out of memory");
        }
        p->steps = s;
        p->cap = cap;
    }
    /* Bind against a copy so that a failing step leaves the format as it was. */
    dk_group *fmt;
    int st = dk_group_clone(p->format, &fmt);
    void *binding = NULL;
    if (!st) st = step->vt->bind(step, fmt, DK_GROUP_ROOT, &binding);
    if (st) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", dk_errmsg());
        dk_group_destroy(fmt);
        st = dk__error(st, __func__, "step %d (%s): %s", p->n, step->vt->name, msg);
        dk_step_destroy(step);
        return st;
    }
    /* A non-image step ends the image run before it: its fused pass checks
       values against the format of that moment (later image steps may retype
       the images). */
    dk_group *snapshot = NULL;
    if (p->n > 0 && p->steps[p->n - 1].ends_image_run && !step->vt->image_stage) {
        snapshot = p->format;
        p->format = NULL;
    }
    dk_group_destroy(p->format);
    p->format = fmt;
    if (snapshot) p->steps[p->n - 1].run_format = snapshot;
    pstep *ps = &p->steps[p->n];
    memset(ps, 0, sizeof *ps);
    ps->step = step;
    ps->binding = binding;
    atomic_init(&ps->ns, 0);
    atomic_init(&ps->calls, 0);
    ps->ends_image_run = step->vt->image_stage != 0;
    if (p->n > 0 && step->vt->image_stage) p->steps[p->n - 1].ends_image_run = 0;
    p->n++;
    return DK_OK;
}

const dk_group *dk_pipeline_input_format(const dk_pipeline *p)
{
    return p ? p->input : NULL;
}

const dk_group *dk_pipeline_format(const dk_pipeline *p)
{
    return p ? p->format : NULL;
}

int dk_pipeline_num_steps(const dk_pipeline *p)
{
    return p ? p->n : 0;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int step_error(int st, int i, const char *name, const char *what)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", dk_errmsg());
    return dk__error(st, "dk_pipeline_run", "%s%sstep %d (%s): %s", what ? what : "",
                     what ? ": " : "", i, name, msg);
}

int dk_pipeline_run(const dk_pipeline *p, dk_sample *x, const char *what)
{
    if (!p || !x || !x->values) return dk__error(DK_EINVAL, __func__, "NULL argument");
    int in_n = dk_group_id_limit(p->input);
    if (x->n < in_n)
        return dk__error(DK_EINVAL, __func__, "the sample has %d values, its format %d ids", x->n,
                         in_n);
    int st = dk_sample_resize(x, dk_group_id_limit(p->format));
    if (st) return st;
    dk__image_plans plans = {0};
    dk_pipeline *mp = (dk_pipeline *)p;   /* statistics only */
    for (int i = 0; i < p->n && !st; i++) {
        const pstep *ps = &p->steps[i];
        dk__step_ctx ctx;
        memset(&ctx, 0, sizeof ctx);
        ctx.seed = p->cfg.seed;
        ctx.epoch = x->epoch;
        ctx.sample = x->index;
        ctx.step = i;
        ctx.element = -1;
        ctx.what = what;
        ctx.plans = &plans;
        ctx.videos = p->videos;
        dk_rng_init(&ctx.rng, p->cfg.seed,
                    dk_rng_stream_id((uint64_t)x->epoch, (uint64_t)x->index, (uint64_t)i,
                                     UINT64_MAX));
        int64_t t0 = now_ns();
        st = ps->step->vt->run(ps->step, ps->binding, x, &ctx);
        int64_t t1 = now_ns();
        atomic_fetch_add(&mp->steps[i].ns, t1 - t0);
        atomic_fetch_add(&mp->steps[i].calls, 1);
        if (st) {
            st = step_error(st, i, ps->step->vt->name, what);
            break;
        }
        if (ps->ends_image_run && plans.n) {
            st = dk__image_materialize(&plans, x, ps->run_format ? ps->run_format : p->format,
                                       p->videos, what);
            atomic_fetch_add(&mp->fused_ns, now_ns() - t1);
            atomic_fetch_add(&mp->fused_calls, 1);
            if (st) st = step_error(st, i, "image_fused", what);
        }
    }
    if (!st && plans.n)
        st = dk__error(DK_EINTERNAL, __func__, "image plans left after the last step");
    plans_free(&plans);
    if (st) return st;
    /* Values of fields the steps removed are dropped. */
    for (int id = 0; id < x->n; id++) {
        dk_field_info fi;
        if (x->values[id].dtype != DK_DTYPE_INVALID && dk_group_info(p->format, id, &fi))
            dk_tensor_release(&x->values[id]);
    }
    dk_errmsg_clear();
    st = dk_sample_check(x, p->format);
    if (st) return step_error(st, p->n - 1, "output check", what);
    return DK_OK;
}

int dk_pipeline_step_stats(const dk_pipeline *p, int i, double *seconds, int64_t *calls)
{
    if (!p) return dk__error(DK_EINVAL, __func__, "NULL pipeline");
    if (i < 0 || i >= p->n) return dk__error(DK_ERANGE, __func__, "step %d outside [0, %d)", i, p->n);
    if (seconds) *seconds = (double)atomic_load(&p->steps[i].ns) * 1e-9;
    if (calls) *calls = atomic_load(&p->steps[i].calls);
    return DK_OK;
}

void dk_pipeline_fused_stats(const dk_pipeline *p, double *seconds, int64_t *calls)
{
    if (seconds) *seconds = p ? (double)atomic_load(&p->fused_ns) * 1e-9 : 0;
    if (calls) *calls = p ? atomic_load(&p->fused_calls) : 0;
}

const char *dk_pipeline_step_name(const dk_pipeline *p, int i)
{
    if (!p || i < 0 || i >= p->n) return NULL;
    const dk_step *s = p->steps[i].step;
    if ((s->vt->bind == elem_bind || s->vt->bind == path_bind))
        return ((const wrap_cfg *)s->cfg)->inner->vt->name;
    return s->vt->name;
}

void dk_pipeline_reset_stats(dk_pipeline *p)
{
    if (!p) return;
    for (int i = 0; i < p->n; i++) {
        atomic_store(&p->steps[i].ns, 0);
        atomic_store(&p->steps[i].calls, 0);
    }
    atomic_store(&p->fused_ns, 0);
    atomic_store(&p->fused_calls, 0);
}

/* Replaced by the image steps' strong definition. */
__attribute__((weak)) int dk__image_materialize(dk__image_plans *ps, dk_sample *x,
                                                const dk_group *fmt, dk__video_cache *videos,
                                                const char *what)
{
    (void)ps;
    (void)x;
    (void)fmt;
    (void)videos;
    (void)what;
    return dk__error(DK_EINTERNAL, __func__, "no image kernel");
}
