/*
 * The thread pool: one FIFO task queue, n-1 worker threads, and a caller that
 * always works too.
 *
 * Waiting is active: dk_pool_group_wait pops and runs queued tasks (any
 * group's) until its own group is done. That is what makes nested use safe: a
 * task that submits work and waits never blocks a worker that the nested work
 * needs. dk_pool_run and dk_pool_for are built on groups; neither can fail
 * once its arguments are valid, because a task that cannot be queued (out of
 * memory for the queue) runs inline on the caller instead.
 */
#include <pthread.h>
#include <string.h>

#include "internal.h"

typedef struct pool_task {
    void (*fn)(void *);
    void *arg;
    dk_pool_group *group;
} pool_task;

struct dk_pool {
    int n_threads;
    int n_workers;           /* threads started (n_threads - 1) */
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* workers: a task was queued, or stop */
    pthread_cond_t done_cv;  /* waiters: a group finished, or a task was queued */
    int n_waiting;           /* threads blocked on done_cv */
    pool_task *q;            /* ring buffer */
    size_t q_cap, q_head, q_len;
    int stop;
};

static int64_t group_pending(dk_pool_group *g)
{
    return __atomic_load_n(&g->pending, __ATOMIC_ACQUIRE);
}

static void task_finish(dk_pool *pool, dk_pool_group *g)
{
    if (!g) return;
    if (__atomic_sub_fetch(&g->pending, 1, __ATOMIC_ACQ_REL) == 0 && pool) {
        pthread_mutex_lock(&pool->mu);
        if (pool->n_waiting) pthread_cond_broadcast(&pool->done_cv);
        pthread_mutex_unlock(&pool->mu);
    }
}

/* Must hold pool->mu. */
static int queue_pop(dk_pool *pool, pool_task *t)
{
    if (!pool->q_len) return 0;
    *t = pool->q[pool->q_head];
    pool->q_head = (pool->q_head + 1) % pool->q_cap;
    pool->q_len--;
    return 1;
}

/* Must hold pool->mu. Grows the ring; 0 on success. */
static int queue_push(dk_pool *pool, const pool_task *t)
{
    if (pool->q_len == pool->q_cap) {
        size_t cap = pool->q_cap ? pool->q_cap * 2 : 64;
        pool_task *nq = dk_malloc(cap * sizeof *nq);
        if (!nq) return -1;
        for (size_t i = 0; i < pool->q_len; i++) nq[i] = pool->q[(pool->q_head + i) % pool->q_cap];
        dk_free(pool->q);
        pool->q = nq;
        pool->q_cap = cap;
        pool->q_head = 0;
    }
    pool->q[(pool->q_head + pool->q_len) % pool->q_cap] = *t;
    pool->q_len++;
    return 0;
}

static void *worker_main(void *arg)
{
    dk_pool *pool = arg;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        pool_task t;
        if (queue_pop(pool, &t)) {
            pthread_mutex_unlock(&pool->mu);
            t.fn(t.arg);
            task_finish(pool, t.group);
            pthread_mutex_lock(&pool->mu);
            continue;
        }
        if (pool->stop) break;
        pthread_cond_wait(&pool->work_cv, &pool->mu);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

void dk_pool_config_init(dk_pool_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->n_threads = 1;
}

int dk_pool_create(const dk_pool_config *cfg, dk_pool **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    dk_pool_config def;
    if (!cfg) {
        dk_pool_config_init(&def);
        cfg = &def;
    }
    if (cfg->n_threads < 1 || cfg->n_threads > 1024)
        return dk__error(DK_EINVAL, __func__, "n_threads = %d outside [1, 1024]", cfg->n_threads);
    dk_pool *pool = dk_calloc(1, sizeof *pool);
    if (!pool) return dk__error(DK_ENOMEM, __func__, "cannot allocate the pool");
    pool->n_threads = cfg->n_threads;
    if (pthread_mutex_init(&pool->mu, NULL)) {
        dk_free(pool);
        return dk__error(DK_ESYS, __func__, "pthread_mutex_init failed");
    }
    pthread_cond_init(&pool->work_cv, NULL);
    pthread_cond_init(&pool->done_cv, NULL);
    if (cfg->n_threads > 1) {
        pool->workers = dk_calloc((size_t)cfg->n_threads - 1, sizeof *pool->workers);
        if (!pool->workers) {
            dk_pool_destroy(pool);
            return dk__error(DK_ENOMEM, __func__, "cannot allocate %d worker slots",
                             cfg->n_threads - 1);
        }
        for (int i = 0; i < cfg->n_threads - 1; i++) {
            if (pthread_create(&pool->workers[i], NULL, worker_main, pool)) {
                dk_pool_destroy(pool);
                return dk__error(DK_ESYS, __func__, "cannot start worker thread %d of %d", i + 1,
                                 cfg->n_threads - 1);
            }
            pool->n_workers++;
        }
    }
    *out = pool;
    return DK_OK;
}

void dk_pool_destroy(dk_pool *pool)
{
    if (!pool) return;
    pthread_mutex_lock(&pool->mu);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->n_workers; i++) pthread_join(pool->workers[i], NULL);
    /* Without workers, tasks still queued (none can be: a 1-thread pool runs
     * inline) would be lost; drain defensively. */
    pool_task t;
    while (queue_pop(pool, &t)) {
        t.fn(t.arg);
        task_finish(NULL, t.group);
    }
    pthread_cond_destroy(&pool->work_cv);
    pthread_cond_destroy(&pool->done_cv);
    pthread_mutex_destroy(&pool->mu);
    dk_free(pool->workers);
    dk_free(pool->q);
    dk_free(pool);
}

int dk_pool_size(const dk_pool *pool)
{
    return pool ? pool->n_threads : 1;
}

void dk_pool_group_init(dk_pool_group *g)
{
    if (g) __atomic_store_n(&g->pending, 0, __ATOMIC_RELEASE);
}

int dk_pool_submit(dk_pool *pool, dk_pool_group *g, void (*fn)(void *arg), void *arg)
{
    if (!fn) return dk__error(DK_EINVAL, __func__, "fn is NULL");
    if (!pool || pool->n_workers == 0) {
        fn(arg);
        return DK_OK;
    }
    if (g) __atomic_add_fetch(&g->pending, 1, __ATOMIC_ACQ_REL);
    pool_task t = {fn, arg, g};
    pthread_mutex_lock(&pool->mu);
    int fail = queue_push(pool, &t);
    if (!fail) {
        pthread_cond_signal(&pool->work_cv);
        if (pool->n_waiting) pthread_cond_broadcast(&pool->done_cv);
    }
    pthread_mutex_unlock(&pool->mu);
    if (fail) {
        if (g) __atomic_sub_fetch(&g->pending, 1, __ATOMIC_ACQ_REL);
        return dk__error(DK_ENOMEM, __func__, "cannot grow the task queue");
    }
    return DK_OK;
}

void dk_pool_group_wait(dk_pool *pool, dk_pool_group *g)
{
    if (!g || !pool) return;
    pthread_mutex_lock(&pool->mu);
    while (group_pending(g) > 0) {
        pool_task t;
        if (queue_pop(pool, &t)) {
            pthread_mutex_unlock(&pool->mu);
            t.fn(t.arg);
            task_finish(pool, t.group);
            pthread_mutex_lock(&pool->mu);
            continue;
        }
        pool->n_waiting++;
        pthread_cond_wait(&pool->done_cv, &pool->mu);
        pool->n_waiting--;
    }
    pthread_mutex_unlock(&pool->mu);
}

/* ------------------------------------------------------------------------ */
/* Structured parallelism on top of groups                                   */

typedef struct run_slot {
    dk_pool_fn fn;
    void *ctx;
    int ith, nth;
} run_slot;

static void run_slot_main(void *arg)
{
    run_slot *s = arg;
    s->fn(s->ctx, s->ith, s->nth);
}

int dk_pool_run(dk_pool *pool, int nth, dk_pool_fn fn, void *ctx)
{
    if (!fn) return dk__error(DK_EINVAL, __func__, "fn is NULL");
    if (nth <= 0) nth = dk_pool_size(pool);
    if (!pool || pool->n_workers == 0 || nth == 1) {
        for (int i = 0; i < nth; i++) fn(ctx, i, nth);
        return DK_OK;
    }
    run_slot local[64];
    run_slot *slots = nth <= 64 ? local : dk_malloc((size_t)nth * sizeof *slots);
    if (!slots) {
        for (int i = 0; i < nth; i++) fn(ctx, i, nth);
        return DK_OK;
    }
    dk_pool_group g;
    dk_pool_group_init(&g);
    int inline_fallback = 0;
    for (int i = 1; i < nth; i++) {
        slots[i] = (run_slot){fn, ctx, i, nth};
        if (dk_pool_submit(pool, &g, run_slot_main, &slots[i]) != DK_OK) {
            fn(ctx, i, nth);
            inline_fallback = 1;
        }
    }
    fn(ctx, 0, nth);
    dk_pool_group_wait(pool, &g);
    if (slots != local) dk_free(slots);
    if (inline_fallback) dk_errmsg_clear();  /* handled by running inline: not an error */
    return DK_OK;
}

typedef struct for_ctx {
    dk_pool_range_fn fn;
    void *ctx;
    int64_t n, grain;
    int64_t next;            /* atomic cursor */
} for_ctx;

static void for_slot(void *arg, int ith, int nth)
{
    (void)nth;
    for_ctx *f = arg;
    for (;;) {
        int64_t begin = __atomic_fetch_add(&f->next, f->grain, __ATOMIC_RELAXED);
        if (begin >= f->n) break;
        int64_t end = f->n - begin < f->grain ? f->n : begin + f->grain;
        f->fn(f->ctx, begin, end, ith);
    }
}

int dk_pool_for(dk_pool *pool, int64_t n, int64_t grain, dk_pool_range_fn fn, void *ctx)
{
    if (!fn) return dk__error(DK_EINVAL, __func__, "fn is NULL");
    if (n < 0) return dk__error(DK_EINVAL, __func__, "n = %lld is negative", (long long)n);
    if (n == 0) return DK_OK;
    int size = dk_pool_size(pool);
    if (grain <= 0) {
        grain = n / ((int64_t)size * 8);
        if (grain < 1) grain = 1;
    }
    int64_t chunks = (n + grain - 1) / grain;
    int nth = chunks < size ? (int)chunks : size;
    for_ctx f = {fn, ctx, n, grain, 0};
    return dk_pool_run(pool, nth, for_slot, &f);
}
