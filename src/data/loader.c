/*
 * The loader: sampler -> read + pipeline per sample on a dk_pool, a bounded
 * ring of batches in flight, collation of each batch into one buffer.
 */
#define _POSIX_C_SOURCE 200809L   /* clock_gettime */

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data_impl.h"

#define WHAT_MAX 128
#define ERR_MAX 512
#define ALIGN 64

typedef struct flight flight;

typedef struct task {
    dk_loader *l;
    flight *f;
    int k;
} task;

struct flight {
    int used;
    int eof;
    int n;
    int epoch;
    int64_t *idx;
    dk_sample *xs;
    int *status;
    char (*what)[WHAT_MAX];
    char (*err)[ERR_MAX];
    task *tasks;
    dk_pool_group grp;
    /* In-place assembly (see plan_in_place): the batch buffer chosen when the
       batch was queued, each group's planned offset (NO_OFFSET: not planned)
       and the samples' destinations (batch_size x dest_n views). */
    dk_buffer *pre;
    size_t *pre_off;
    size_t pre_uniform_end;
    dk_tensor *dest;
};

#define NO_OFFSET ((size_t)-1)

/* Leaves collated together: the same path up to array indices. */
typedef struct cgroup {
    char name[256];
    dk_field_kind kind;
    dk_dtype dtype;
    int ndim;
    int under_array;
    int n_el;
    int *ids;   /* n_el leaf ids, in element order */
    /* Learnt from the last batch: every value had this shape (tensors only). */
    int known;
    int each_ndim;
    int64_t each_shape[DK_MAX_DIMS];
    size_t each_bytes;
} cgroup;

struct dk_loader {
    dk_loader_config cfg;
    int batch_size, depth;
    flight *ring;
    int head, count;
    int stop_filling;   /* an end-of-epoch marker is queued */
    int n_groups;
    cgroup *groups;
    atomic_llong read_ns, pipe_ns;
    int64_t collate_ns, wait_ns, batches, samples, skipped;
    char last_skipped[ERR_MAX];
    dk_buffer *spare[4];      /* batch buffers kept for reuse (see batch_buffer) */
    int dest_n;               /* id limit of the pipeline's output format */
    size_t other_bytes;       /* bytes of the last batch outside the planned groups */
    int plan_steps;           /* pipeline steps when the collation plan was made */
    int deferred;             /* an error to report on the next call */
    char deferred_msg[ERR_MAX];
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void dk_loader_config_init(dk_loader_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->prefetch = 2;
    cfg->policy = DK_LOADER_RAISE;
}

/* ------------------------------------------------------------------------ */
/* Collation plan                                                            */

static int merged_name(const dk_group *g, int id, char *buf, size_t cap, int *under_array)
{
    int chain[64], n = 0;
    for (int c = id; c > 0 && n < 64; ) {
        chain[n++] = c;
        dk_field_info fi;
        dk_group_info(g, c, &fi);
        c = fi.parent;
    }
    size_t len = 0;
    buf[0] = 0;
    *under_array = 0;
    for (int i = n - 1; i >= 0; i--) {
        dk_field_info fi, pi;
        dk_group_info(g, chain[i], &fi);
        dk_group_info(g, fi.parent, &pi);
        if (pi.kind == DK_FIELD_ARRAY) {
            *under_array = 1;
            continue;
        }
        int w = snprintf(buf + len, cap - len, "%s%s", len ? "." : "", fi.name);
        if (w < 0 || (size_t)w >= cap - len) return DK_EOVERFLOW;
        len += (size_t)w;
    }
    return DK_OK;
}

static int build_plan(dk_loader *l)
{
    const dk_group *fmt = dk_pipeline_format(l->cfg.pipeline);
    int n = dk_group_leaves(fmt, DK_GROUP_ROOT, NULL, 0);
    int *leaves = dk_malloc((size_t)(n ? n : 1) * sizeof *leaves);
    l->groups = dk_calloc((size_t)(n ? n : 1), sizeof *l->groups);
    if (!leaves || !l->groups) {
        dk_free(leaves);
        return dk__error(DK_ENOMEM, "dk_loader_create", "out of memory");
    }
    dk_group_leaves(fmt, DK_GROUP_ROOT, leaves, n);
    int st = DK_OK;
    for (int i = 0; i < n && !st; i++) {
        char name[256];
        int ua;
        if (merged_name(fmt, leaves[i], name, sizeof name, &ua)) {
            st = dk__error(DK_EOVERFLOW, "dk_loader_create", "field path too long");
            break;
        }
        dk_field_info fi;
        dk_group_info(fmt, leaves[i], &fi);
        cgroup *g = NULL;
        for (int k = 0; k < l->n_groups; k++)
            if (!strcmp(l->groups[k].name, name)) g = &l->groups[k];
        if (!g) {
            g = &l->groups[l->n_groups++];
            snprintf(g->name, sizeof g->name, "%s", name);
            g->kind = fi.kind;
            g->dtype = fi.dtype;
            g->ndim = fi.ndim;
            g->under_array = ua;
            g->ids = dk_malloc((size_t)n * sizeof *g->ids);
            if (!g->ids) {
                st = dk__error(DK_ENOMEM, "dk_loader_create", "out of memory");
                break;
            }
        } else if (g->kind != fi.kind || g->dtype != fi.dtype || g->ndim != fi.ndim) {
            char path[256];
            dk_group_path(fmt, leaves[i], path, sizeof path);
            st = dk__error(DK_EINVALIDDATA, "dk_loader_create",
                           "%s: type differs from the other elements of '%s'", path, name);
            break;
        }
        g->ids[g->n_el++] = leaves[i];
    }
    dk_free(leaves);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Creation                                                                  */

static void flight_free(flight *f, int batch)
{
    if (f->xs)
        for (int k = 0; k < batch; k++) dk_sample_free(&f->xs[k]);
    dk_free(f->idx);
    dk_free(f->xs);
    dk_free(f->status);
    dk_free(f->what);
    dk_free(f->err);
    dk_free(f->tasks);
    dk_free(f->pre_off);
    dk_free(f->dest);
    dk_buffer_unref(f->pre);
    memset(f, 0, sizeof *f);
}

int dk_loader_create(const dk_loader_config *cfg, dk_loader **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!cfg || !cfg->read || !cfg->pipeline || !cfg->sampler)
        return dk__error(DK_EINVAL, __func__, "read, pipeline and sampler are required");
    if (cfg->prefetch < 1 || cfg->prefetch > 64)
        return dk__error(DK_EINVAL, __func__, "prefetch %d outside 1..64", cfg->prefetch);
    if (cfg->policy != DK_LOADER_RAISE && cfg->policy != DK_LOADER_SKIP)
        return dk__error(DK_EINVAL, __func__, "unknown policy %d", (int)cfg->policy);
    dk_loader *l = dk_calloc(1, sizeof *l);
    if (!l) return dk__error(DK_ENOMEM, __func__, "out of memory");
    l->cfg = *cfg;
    l->batch_size = dk__sampler_batch_size(cfg->sampler);
    /* A single thread gains nothing from running ahead. */
    l->depth = dk_pool_size(cfg->pool) > 1 ? cfg->prefetch : 1;
    atomic_init(&l->read_ns, 0);
    atomic_init(&l->pipe_ns, 0);
    l->plan_steps = dk_pipeline_num_steps(cfg->pipeline);
    l->dest_n = dk_group_id_limit(dk_pipeline_format(cfg->pipeline));
    int st = build_plan(l);
    l->ring = st ? NULL : dk_calloc((size_t)l->depth, sizeof *l->ring);
    if (!st && !l->ring) st = dk__error(DK_ENOMEM, __func__, "out of memory");
    for (int i = 0; i < l->depth && !st; i++) {
        flight *f = &l->ring[i];
        size_t b = (size_t)l->batch_size;
        f->idx = dk_calloc(b, sizeof *f->idx);
        f->xs = dk_calloc(b, sizeof *f->xs);
        f->status = dk_calloc(b, sizeof *f->status);
        f->what = dk_calloc(b, sizeof *f->what);
        f->err = dk_calloc(b, sizeof *f->err);
        f->tasks = dk_calloc(b, sizeof *f->tasks);
        f->pre_off = dk_calloc((size_t)(l->n_groups ? l->n_groups : 1), sizeof *f->pre_off);
        f->dest = dk_calloc(b * (size_t)(l->dest_n ? l->dest_n : 1), sizeof *f->dest);
        if (!f->idx || !f->xs || !f->status || !f->what || !f->err || !f->tasks ||
            !f->pre_off || !f->dest)
            st = dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    if (st) {
        dk_loader_destroy(l);
        return st;
    }
    *out = l;
    return DK_OK;
}

static void drain(dk_loader *l)
{
    for (int i = 0; i < l->count; i++) {
        flight *f = &l->ring[(l->head + i) % l->depth];
        if (f->used && !f->eof) dk_pool_group_wait(l->cfg.pool, &f->grp);
        for (int k = 0; k < f->n; k++) dk_sample_free(&f->xs[k]);
        dk_buffer_unref(f->pre);
        f->pre = NULL;
        f->used = 0;
    }
    l->count = 0;
}

void dk_loader_destroy(dk_loader *l)
{
    if (!l) return;
    if (l->ring) {
        drain(l);
        for (int i = 0; i < l->depth; i++) flight_free(&l->ring[i], l->batch_size);
    }
    for (int k = 0; k < l->n_groups; k++) dk_free(l->groups[k].ids);
    for (int i = 0; i < 4; i++) dk_buffer_unref(l->spare[i]);
    dk_free(l->groups);
    dk_free(l->ring);
    dk_free(l);
}

/* ------------------------------------------------------------------------ */
/* Work                                                                      */

static void run_sample(void *arg)
{
    task *t = arg;
    dk_loader *l = t->l;
    flight *f = t->f;
    int k = t->k;
    dk_sample *x = &f->xs[k];
    f->what[k][0] = 0;
    int64_t t0 = now_ns();
    int st = l->cfg.read(l->cfg.read_user, f->idx[k], x, f->what[k], WHAT_MAX);
    int64_t t1 = now_ns();
    atomic_fetch_add(&l->read_ns, t1 - t0);
    if (!st) {
        x->index = f->idx[k];
        x->epoch = f->epoch;
        if (f->pre) {
            x->dest = f->dest + (size_t)k * (size_t)l->dest_n;
            x->n_dest = l->dest_n;
        }
        st = dk_pipeline_run(l->cfg.pipeline, x, f->what[k][0] ? f->what[k] : NULL);
        atomic_fetch_add(&l->pipe_ns, now_ns() - t1);
    }
    f->status[k] = st;
    if (st) snprintf(f->err[k], ERR_MAX, "%s", dk_errmsg());
}

static size_t align_up(size_t v);
static int batch_buffer(dk_loader *l, size_t size, dk_buffer **out);

/* In-place assembly: groups whose values all had one shape in the last batch
 * get their place in this batch's buffer now, and each sample a destination
 * view for those leaves, so that steps able to write into caller memory (the
 * fused image pass) produce the value where the batch wants it and
 * collation copies nothing. Anything unplanned or changed falls back to
 * copying. */
static void plan_in_place(dk_loader *l, flight *f)
{
    dk_buffer_unref(f->pre);
    f->pre = NULL;
    memset(f->dest, 0, (size_t)l->batch_size * (size_t)l->dest_n * sizeof *f->dest);
    size_t at = 0;
    int any = 0;
    for (int gi = 0; gi < l->n_groups; gi++) {
        const cgroup *g = &l->groups[gi];
        f->pre_off[gi] = NO_OFFSET;
        if (!g->known) continue;
        f->pre_off[gi] = at;
        at = align_up(at + (size_t)f->n * (size_t)g->n_el * g->each_bytes);
        any = 1;
    }
    if (!any) return;
    f->pre_uniform_end = at;
    /* Rounded up so that batches whose variable parts differ a little still
       reuse one buffer (batch_buffer). */
    size_t cap = at + 2 * l->other_bytes + 65536;
    cap = (cap + ((size_t)1 << 20) - 1) >> 20 << 20;
    if (batch_buffer(l, cap, &f->pre)) {
        dk_errmsg_clear();
        f->pre = NULL;
        return;
    }
    uint8_t *base = dk_buffer_data(f->pre);
    for (int gi = 0; gi < l->n_groups; gi++) {
        const cgroup *g = &l->groups[gi];
        if (f->pre_off[gi] == NO_OFFSET) continue;
        for (int k = 0; k < f->n; k++)
            for (int e = 0; e < g->n_el; e++) {
                dk_tensor *d = &f->dest[(size_t)k * (size_t)l->dest_n + (size_t)g->ids[e]];
                uint8_t *p = base + f->pre_off[gi] + ((size_t)k * (size_t)g->n_el + (size_t)e) *
                                                         g->each_bytes;
                if (dk_tensor_view(d, p, g->dtype, g->each_ndim, g->each_shape))
                    memset(d, 0, sizeof *d);
            }
    }
}

/* Queues batches until `depth` are in flight or an epoch end is queued. */
static int fill(dk_loader *l)
{
    while (l->count < l->depth && !l->stop_filling) {
        flight *f = &l->ring[(l->head + l->count) % l->depth];
        int epoch = 0;
        int n = dk_sampler_next(l->cfg.sampler, f->idx, &epoch);
        memset(&f->grp, 0, sizeof f->grp);
        dk_pool_group_init(&f->grp);
        f->used = 1;
        l->count++;
        if (n == DK_EOF) {
            f->eof = 1;
            f->n = 0;
            l->stop_filling = 1;
            continue;
        }
        if (n < 0) {
            l->count--;
            f->used = 0;
            return n;
        }
        f->eof = 0;
        f->n = n;
        f->epoch = epoch;
        plan_in_place(l, f);
        for (int k = 0; k < n; k++) {
            f->status[k] = DK_OK;
            f->tasks[k] = (task){l, f, k};
            int st = dk_pool_submit(l->cfg.pool, &f->grp, run_sample, &f->tasks[k]);
            if (st) run_sample(&f->tasks[k]);   /* could not queue: run it here */
        }
    }
    return DK_OK;
}

static size_t align_up(size_t v)
{
    return (v + ALIGN - 1) / ALIGN * ALIGN;
}

static int shapes_equal(const dk_tensor *a, const dk_tensor *b, int from)
{
    if (a->ndim != b->ndim) return 0;
    for (int d = from; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

/* Copies a tensor's elements in C order to dst (strided sources allowed). */
static void copy_c_order(uint8_t *dst, const dk_tensor *t)
{
    size_t es = dk_dtype_size(t->dtype);
    int64_t n = dk_tensor_numel(t);
    if (!n) return;
    if (dk_tensor_is_contiguous(t)) {
        memcpy(dst, t->data, (size_t)n * es);
        return;
    }
    int64_t idx[DK_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n; i++) {
        memcpy(dst + (size_t)i * es, dk_tensor_at(t, idx), es);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

/* A buffer of at least `size` bytes for a batch. Batches of one pipeline
 * have similar sizes and a consumer holds only a few at a time, so the loader
 * keeps the last few buffers and reuses one nobody else references any more
 * (refcount 1: only the loader): no fresh pages to fault in per batch. */
static int batch_buffer(dk_loader *l, size_t size, dk_buffer **out)
{
    int free_slot = -1;
    for (int i = 0; i < 4; i++) {
        dk_buffer *b = l->spare[i];
        if (!b) {
            if (free_slot < 0) free_slot = i;
            continue;
        }
        if (dk_buffer_refcount(b) != 1) continue;
        if (dk_buffer_size(b) >= size && dk_buffer_size(b) <= 2 * size + ((size_t)1 << 20)) {
            *out = dk_buffer_ref(b);
            return DK_OK;
        }
        if (free_slot < 0) free_slot = i;   /* unused and the wrong size: replace */
    }
    int st = dk_buffer_alloc(size, 0, out);
    if (st || free_slot < 0) return st;
    dk_buffer_unref(l->spare[free_slot]);
    l->spare[free_slot] = dk_buffer_ref(*out);
    return DK_OK;
}

static int collate(dk_loader *l, flight *f, const int *keep, int n, dk_batch *b)
{
    const dk_group *fmt = dk_pipeline_format(l->cfg.pipeline);
    int ng = l->n_groups;
    b->fields = dk_calloc((size_t)(ng ? ng : 1), sizeof *b->fields);
    size_t *offs = dk_calloc((size_t)(ng ? ng : 1) * 2, sizeof *offs);
    if (!b->fields || !offs) {
        dk_free(offs);
        return dk__error(DK_ENOMEM, "dk_loader_next", "out of memory");
    }
    b->n_fields = ng;
    /* Pass 1: shapes. */
    for (int gi = 0; gi < ng; gi++) {
        const cgroup *g = &l->groups[gi];
        dk_batch_field *bf = &b->fields[gi];
        snprintf(bf->name, sizeof bf->name, "%s", g->name);
        bf->kind = g->kind;
        const dk_tensor *first = &f->xs[keep[0]].values[g->ids[0]];
        int uniform = 1;
        int64_t rows = 0;
        for (int s = 0; s < n; s++)
            for (int e = 0; e < g->n_el; e++) {
                const dk_tensor *t = &f->xs[keep[s]].values[g->ids[e]];
                if (!shapes_equal(t, first, 0)) uniform = 0;
                if (t->ndim >= 1) rows += t->shape[0];
            }
        if (g->kind == DK_FIELD_STRING) uniform = 0;   /* strings are always ragged */
        if (uniform) {
            int nd = 0;
            if (first->ndim + 1 + g->under_array > DK_MAX_DIMS) {
                dk_free(offs);
                return dk__error(DK_EOVERFLOW, "dk_loader_next", "%s: rank %d too large to batch",
                                 g->name, first->ndim + 1 + g->under_array);
            }
            bf->data.shape[nd++] = n;
            if (g->under_array) bf->data.shape[nd++] = g->n_el;
            for (int d = 0; d < first->ndim; d++) bf->data.shape[nd++] = first->shape[d];
            bf->data.ndim = nd;
        } else {
            for (int s = 0; s < n; s++)
                for (int e = 0; e < g->n_el; e++) {
                    const dk_tensor *t = &f->xs[keep[s]].values[g->ids[e]];
                    if (t->ndim < 1 || !shapes_equal(t, first, 1)) {
                        char path[256];
                        dk_group_path(fmt, g->ids[e], path, sizeof path);
                        dk_free(offs);
                        return dk__error(DK_EINVALIDDATA, "dk_loader_next",
                                         "%s: values of different shapes beyond the first "
                                         "dimension cannot be batched (sample %lld)",
                                         path, (long long)f->idx[keep[s]]);
                    }
                }
            bf->ragged = 1;
            bf->data.ndim = first->ndim;
            bf->data.shape[0] = rows;
            for (int d = 1; d < first->ndim; d++) bf->data.shape[d] = first->shape[d];
            bf->sizes.ndim = g->under_array ? 2 : 1;
            bf->sizes.shape[0] = n;
            if (g->under_array) bf->sizes.shape[1] = g->n_el;
            bf->sizes.dtype = DK_I64;
        }
        bf->data.dtype = g->dtype;
    }
    /* Layout: in the buffer planned when the batch was queued if every planned
       group kept its shape and the rest fits after them, else a new one. */
    int in_place = f->pre != NULL;
    for (int gi = 0; gi < ng && in_place; gi++) {
        const cgroup *g = &l->groups[gi];
        const dk_batch_field *bf = &b->fields[gi];
        if (f->pre_off[gi] == NO_OFFSET) continue;
        int nd0 = 1 + g->under_array;
        if (bf->ragged || bf->data.ndim != nd0 + g->each_ndim) {
            in_place = 0;
            break;
        }
        for (int d = 0; d < g->each_ndim; d++)
            if (bf->data.shape[nd0 + d] != g->each_shape[d]) in_place = 0;
    }
    size_t total = in_place ? f->pre_uniform_end : 0;
    for (int gi = 0; gi < ng; gi++) {
        const cgroup *g = &l->groups[gi];
        const dk_batch_field *bf = &b->fields[gi];
        if (in_place && f->pre_off[gi] != NO_OFFSET) {
            offs[2 * gi] = f->pre_off[gi];
            continue;
        }
        int64_t numel = 1;
        for (int d = 0; d < bf->data.ndim; d++) numel *= bf->data.shape[d];
        offs[2 * gi] = total;
        total = align_up(total + (size_t)numel * dk_dtype_size(g->dtype));
        offs[2 * gi + 1] = total;
        if (bf->ragged) total = align_up(total + (size_t)n * (size_t)g->n_el * sizeof(int64_t));
    }
    if (in_place && total > dk_buffer_size(f->pre)) in_place = 0;
    int st;
    if (in_place) {
        b->buffer = f->pre;
        f->pre = NULL;
    } else {
        if (f->pre) {
            /* Lay everything out afresh. */
            total = 0;
            for (int gi = 0; gi < ng; gi++) {
                const cgroup *g = &l->groups[gi];
                const dk_batch_field *bf = &b->fields[gi];
                int64_t numel = 1;
                for (int d = 0; d < bf->data.ndim; d++) numel *= bf->data.shape[d];
                offs[2 * gi] = total;
                total = align_up(total + (size_t)numel * dk_dtype_size(g->dtype));
                offs[2 * gi + 1] = total;
                if (bf->ragged)
                    total = align_up(total + (size_t)n * (size_t)g->n_el * sizeof(int64_t));
            }
        }
        /* Rounded like the planned buffers, so that either can be reused. */
        size_t want = (total + ((size_t)1 << 20) - 1) >> 20 << 20;
        st = batch_buffer(l, want ? want : 1, &b->buffer);
        if (st) {
            dk_free(offs);
            return st;
        }
    }
    uint8_t *base = dk_buffer_data(b->buffer);
    /* Pass 2: copies, skipping values already in place. Values only move to
       lower addresses (a skipped sample shifts the later ones down), so going
       forward never overwrites a value still to be moved. */
    for (int gi = 0; gi < ng; gi++) {
        const cgroup *g = &l->groups[gi];
        dk_batch_field *bf = &b->fields[gi];
        size_t es = dk_dtype_size(g->dtype);
        uint8_t *dst = base + offs[2 * gi];
        int64_t *sizes = bf->ragged ? (int64_t *)(void *)(base + offs[2 * gi + 1]) : NULL;
        for (int s = 0; s < n; s++)
            for (int e = 0; e < g->n_el; e++) {
                const dk_tensor *t = &f->xs[keep[s]].values[g->ids[e]];
                size_t nb = (size_t)dk_tensor_numel(t) * es;
                if (t->data != (void *)dst) {
                    if (dk_tensor_is_contiguous(t))
                        memmove(dst, t->data, nb);
                    else
                        copy_c_order(dst, t);
                }
                dst += nb;
                if (sizes) sizes[s * g->n_el + e] = t->shape[0];
            }
        bf->data.data = base + offs[2 * gi];
        int64_t stride = 1;
        for (int d = bf->data.ndim - 1; d >= 0; d--) {
            bf->data.strides[d] = stride;
            stride *= bf->data.shape[d];
        }
        bf->data.owner = dk_buffer_ref(b->buffer);
        if (sizes) {
            bf->sizes.data = sizes;
            bf->sizes.strides[bf->sizes.ndim - 1] = 1;
            if (bf->sizes.ndim == 2) bf->sizes.strides[0] = g->n_el;
            bf->sizes.owner = dk_buffer_ref(b->buffer);
        }
    }
    dk_buffer_unref(f->pre);
    f->pre = NULL;
    /* What the next batches can plan: the uniform tensor groups' shapes; and
       how much the others took. */
    size_t other = 0;
    for (int gi = 0; gi < ng; gi++) {
        cgroup *g = &l->groups[gi];
        const dk_batch_field *bf = &b->fields[gi];
        int nd0 = 1 + g->under_array;
        g->known = !bf->ragged && g->kind == DK_FIELD_TENSOR && bf->data.ndim >= nd0;
        if (!g->known) {
            other += dk_tensor_nbytes(&bf->data) + 2 * ALIGN +
                     (bf->ragged ? (size_t)n * (size_t)g->n_el * sizeof(int64_t) : 0);
            continue;
        }
        g->each_ndim = bf->data.ndim - nd0;
        g->each_bytes = dk_dtype_size(g->dtype);
        for (int d = 0; d < g->each_ndim; d++) {
            g->each_shape[d] = bf->data.shape[nd0 + d];
            g->each_bytes *= (size_t)g->each_shape[d];
        }
    }
    l->other_bytes = other;
    dk_free(offs);
    return DK_OK;
}

static int next_once(dk_loader *l, dk_batch *out, int *all_skipped);

/* Under SKIP, a batch whose every sample failed is skipped whole; this many
   in a row is an error (e.g. a wrong image root), not an endless loop. */
#define MAX_SKIPPED_BATCHES 64

int dk_loader_next(dk_loader *l, dk_batch *out)
{
    if (!l || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    memset(out, 0, sizeof *out);
    if (dk_pipeline_num_steps(l->cfg.pipeline) != l->plan_steps)
        return dk__error(DK_ESTATE, __func__,
                         "the pipeline gained steps after the loader was created");
    if (l->deferred) {
        int st = l->deferred;
        l->deferred = 0;
        return dk__error(st, __func__, "%s", l->deferred_msg);
    }
    for (int skipped = 0;; skipped++) {
        int all_skipped = 0;
        int st = next_once(l, out, &all_skipped);
        if (!all_skipped || st) return st;
        if (skipped + 1 >= MAX_SKIPPED_BATCHES)
            return dk__error(DK_EINVALIDDATA, __func__,
                             "%d batches in a row had no good sample; last: %s",
                             MAX_SKIPPED_BATCHES, l->last_skipped);
    }
}

static int next_once(dk_loader *l, dk_batch *out, int *all_skipped_out)
{
    memset(out, 0, sizeof *out);
    int st = fill(l);
    if (st) return st;
    if (!l->count) return dk__error(DK_EINTERNAL, "dk_loader_next", "nothing in flight");
    flight *f = &l->ring[l->head];
    int64_t t0 = now_ns();
    if (!f->eof) dk_pool_group_wait(l->cfg.pool, &f->grp);
    l->wait_ns += now_ns() - t0;
    l->head = (l->head + 1) % l->depth;
    l->count--;
    f->used = 0;
    if (f->eof) {
        l->stop_filling = 0;
        return DK_EOF;
    }
    int keep[1024], n = 0;
    int *kp = f->n <= 1024 ? keep : dk_malloc((size_t)f->n * sizeof *kp);
    if (!kp) st = dk__error(DK_ENOMEM, "dk_loader_next", "out of memory");
    for (int k = 0; k < f->n && !st; k++) {
        if (f->status[k] == DK_OK) {
            kp[n++] = k;
        } else if (l->cfg.policy == DK_LOADER_SKIP) {
            l->skipped++;
            snprintf(l->last_skipped, sizeof l->last_skipped, "%s", f->err[k]);
        } else {
            st = dk__error(f->status[k], "dk_loader_next", "%s", f->err[k]);
        }
    }
    int all_skipped = !st && n == 0;
    int64_t t1 = now_ns();
    if (!st && !all_skipped) st = collate(l, f, kp, n, out);
    l->collate_ns += now_ns() - t1;
    if (!st && !all_skipped) {
        out->n_samples = n;
        out->epoch = f->epoch;
        out->indices = dk_malloc((size_t)n * sizeof *out->indices);
        if (!out->indices) st = dk__error(DK_ENOMEM, "dk_loader_next", "out of memory");
        for (int k = 0; k < n && !st; k++) out->indices[k] = f->idx[kp[k]];
    }
    for (int k = 0; k < f->n; k++) dk_sample_free(&f->xs[k]);
    if (kp != keep) dk_free(kp);
    if (st) {
        dk_batch_free(out);
        return st;
    }
    if (all_skipped) {
        *all_skipped_out = 1;
        return fill(l);
    }
    l->batches++;
    l->samples += n;
    /* Start the next batch before handing this one out; a failure there is
       reported by the next call (this batch is good). */
    st = fill(l);
    if (st) {
        l->deferred = st;
        snprintf(l->deferred_msg, sizeof l->deferred_msg, "%s", dk_errmsg());
    }
    return DK_OK;
}

int dk_loader_reset(dk_loader *l, int epoch)
{
    if (!l) return dk__error(DK_EINVAL, __func__, "NULL loader");
    drain(l);
    l->head = 0;
    l->stop_filling = 0;
    return dk_sampler_set_epoch(l->cfg.sampler, epoch);
}

void dk_batch_free(dk_batch *b)
{
    if (!b) return;
    for (int i = 0; i < b->n_fields; i++) {
        dk_tensor_release(&b->fields[i].data);
        dk_tensor_release(&b->fields[i].sizes);
    }
    dk_free(b->fields);
    dk_free(b->indices);
    dk_buffer_unref(b->buffer);
    memset(b, 0, sizeof *b);
}

int dk_batch_find(const dk_batch *b, const char *name)
{
    if (!b || !name) return -1;
    for (int i = 0; i < b->n_fields; i++)
        if (!strcmp(b->fields[i].name, name)) return i;
    return -1;
}

void dk_loader_get_stats(const dk_loader *l, dk_loader_stats *out)
{
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!l) return;
    out->batches = l->batches;
    out->samples = l->samples;
    out->skipped = l->skipped;
    out->read_seconds = (double)atomic_load(&l->read_ns) * 1e-9;
    out->pipeline_seconds = (double)atomic_load(&l->pipe_ns) * 1e-9;
    out->collate_seconds = (double)l->collate_ns * 1e-9;
    out->wait_seconds = (double)l->wait_ns * 1e-9;
    snprintf(out->last_skipped, sizeof out->last_skipped, "%s", l->last_skipped);
}
