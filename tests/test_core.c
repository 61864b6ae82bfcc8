/* Tests for src/core: status, allocator, arenas, buffers, tensors, pool, RNG,
 * log and progress. Image and JSON tests live in test_core_image.c and
 * test_core_json.c and run from this binary too. */
#include <pthread.h>
#include <stdatomic.h>

#include "dk_test.h"
#include "internal.h"

/* ------------------------------------------------------------------------ */
/* A counting allocator that can fail after N allocations (OOM injection).   */

typedef struct count_alloc {
    atomic_long mallocs, frees;
    long fail_after;          /* < 0: never fail */
} count_alloc;

static void *ca_malloc(void *ctx, size_t size)
{
    count_alloc *c = ctx;
    if (c->fail_after >= 0 && atomic_load(&c->mallocs) >= c->fail_after) return NULL;
    atomic_fetch_add(&c->mallocs, 1);
    return malloc(size);
}
static void *ca_realloc(void *ctx, void *p, size_t size)
{
    count_alloc *c = ctx;
    if (c->fail_after >= 0 && atomic_load(&c->mallocs) >= c->fail_after) return NULL;
    atomic_fetch_add(&c->mallocs, 1);
    if (p) atomic_fetch_add(&c->frees, 1);
    return realloc(p, size);
}
static void ca_free(void *ctx, void *p)
{
    count_alloc *c = ctx;
    if (p) atomic_fetch_add(&c->frees, 1);
    free(p);
}

static int install_counting(count_alloc *c, long fail_after)
{
    atomic_init(&c->mallocs, 0);
    atomic_init(&c->frees, 0);
    c->fail_after = fail_after;
    dk_allocator a = {ca_malloc, ca_realloc, ca_free, c};
    return dk_set_allocator(&a);
}

/* ------------------------------------------------------------------------ */

static void test_version(void)
{
    DK_CHECK_EQ_INT(dk_version(), DK_VERSION_HEX);
    DK_CHECK_STR(dk_version_str(), DK_VERSION_STRING);
}

static void test_status_strings(void)
{
    for (int s = DK_STATUS_MIN; s <= 0; s++) {
        const char *str = dk_status_str(s);
        DK_CHECK(str != NULL);
        DK_CHECK(strcmp(str, "unknown status") != 0);
        DK_CHECK_EQ_INT(strncmp(str, "DK_", 3), 0);
        for (int t = DK_STATUS_MIN; t < s; t++) DK_CHECK(strcmp(str, dk_status_str(t)) != 0);
    }
    DK_CHECK_STR(dk_status_str(-1000), "unknown status");
    DK_CHECK_STR(dk_status_str(5), "unknown status");
}

static void *errmsg_thread(void *arg)
{
    (void)arg;
    /* A fresh thread starts with an empty message, whatever main did. */
    int empty = dk_errmsg()[0] == '\0';
    dk__error(DK_EIO, "other_thread", "only here");
    return (void *)(intptr_t)empty;
}

static void test_errmsg_thread_local(void)
{
    DK_CHECK_STATUS(dk__error(DK_EINVALIDDATA, "dk_thing", "%s: frame %d", "a.mp4", 7),
                    DK_EINVALIDDATA);
    DK_CHECK_STR(dk_errmsg(), "dk_thing(): a.mp4: frame 7");
    pthread_t th;
    void *ret;
    pthread_create(&th, NULL, errmsg_thread, NULL);
    pthread_join(th, &ret);
    DK_CHECK((intptr_t)ret == 1);
    DK_CHECK_STR(dk_errmsg(), "dk_thing(): a.mp4: frame 7");
    char keep[DK_ERRMSG_MAX];
    DK_CHECK_EQ_INT(dk__keep(DK_EIO, keep), DK_EIO);
    DK_CHECK_STR(keep, "dk_thing(): a.mp4: frame 7");
    dk_errmsg_clear();
    DK_CHECK_STR(dk_errmsg(), "");
    /* Long messages are truncated, never overflow. */
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    dk__error(DK_EINVAL, "f", "%s", big);
    DK_CHECK_EQ_INT(strlen(dk_errmsg()), DK_ERRMSG_MAX - 1);
}

static void test_allocator_counts(void)
{
    int64_t live0 = dk_alloc_live(), total0 = dk_alloc_total();
    void *a = dk_malloc(10), *b = dk_calloc(4, 8), *c = dk_malloc_aligned(100, 256);
    DK_CHECK(a && b && c);
    DK_CHECK_EQ_INT(((uintptr_t)c) & 255, 0);
    for (int i = 0; i < 4; i++) DK_CHECK_EQ_INT(((uint64_t *)b)[i], 0);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0 + 3);
    DK_CHECK_EQ_INT(dk_alloc_total(), total0 + 3);
    a = dk_realloc(a, 100000);
    DK_CHECK(a != NULL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0 + 3);
    DK_CHECK(dk_calloc(SIZE_MAX / 2, 4) == NULL);
    DK_CHECK(dk_malloc_aligned(16, 3) == NULL);
    dk_free(a);
    dk_free(b);
    dk_free_aligned(c);
    dk_free(NULL);
    dk_free_aligned(NULL);
    char *s = dk_strdup("drive");
    DK_CHECK_STR(s, "drive");
    dk_free(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_set_allocator_rules(void)
{
    count_alloc c;
    dk_allocator bad = {ca_malloc, NULL, ca_free, &c};
    DK_CHECK_STATUS(dk_set_allocator(&bad), DK_EINVAL);
    void *p = dk_malloc(8);
    DK_CHECK_STATUS(install_counting(&c, -1), DK_ESTATE);
    DK_CHECK_CONTAINS(dk_errmsg(), "still live");
    dk_free(p);
    DK_CHECK_OK(install_counting(&c, -1));
    void *q = dk_malloc(32);
    dk_free(q);
    DK_CHECK_EQ_INT(atomic_load(&c.mallocs), 1);
    DK_CHECK_EQ_INT(atomic_load(&c.frees), 1);
    DK_CHECK_OK(dk_set_allocator(NULL));
}

static void test_arena(void)
{
    int64_t live0 = dk_alloc_live();
    dk_arena *a;
    DK_CHECK_OK(dk_arena_create(256, &a));
    size_t total = 0;
    for (int i = 1; i <= 200; i++) {
        size_t align = (size_t)1 << (i % 7);
        unsigned char *p = dk_arena_alloc(a, (size_t)i, align);
        DK_CHECK(p != NULL);
        DK_CHECK_EQ_INT((uintptr_t)p % align, 0);
        memset(p, i & 0xff, (size_t)i);  /* ASan catches overlap/overrun */
        total += (size_t)i;
    }
    DK_CHECK(dk_arena_used(a) >= total);
    size_t peak = dk_arena_peak(a);
    DK_CHECK(peak >= total);
    int64_t live_grown = dk_alloc_live();
    dk_arena_reset(a);
    DK_CHECK_EQ_INT(dk_arena_used(a), 0);
    /* After a reset the arena is one block big enough for the old peak. */
    int64_t live_reset = dk_alloc_live();
    DK_CHECK(live_reset < live_grown);
    for (int i = 1; i <= 200; i++) DK_CHECK(dk_arena_alloc(a, (size_t)i, (size_t)1 << (i % 7)));
    DK_CHECK_EQ_INT(dk_alloc_live(), live_reset);
    DK_CHECK(dk_arena_alloc(a, 8, 3) == NULL);
    dk_arena_destroy(a);
    dk_arena_destroy(NULL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);

    unsigned char mem[100];
    DK_CHECK_OK(dk_arena_create_fixed(mem, sizeof mem, &a));
    DK_CHECK(dk_arena_alloc(a, 60, 1) == mem);
    DK_CHECK(dk_arena_alloc(a, 60, 1) == NULL);
    DK_CHECK_CONTAINS(dk_errmsg(), "full");
    DK_CHECK(dk_arena_alloc(a, 40, 1) == mem + 60);
    dk_arena_reset(a);
    DK_CHECK(dk_arena_alloc(a, 100, 1) == mem);
    dk_arena_destroy(a);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static int wrap_frees;
static void wrap_free(void *opaque, void *data)
{
    DK_CHECK_EQ_INT((intptr_t)opaque, 42);
    free(data);
    wrap_frees++;
}

static void test_buffer_refcount(void)
{
    int64_t live0 = dk_alloc_live();
    dk_buffer *b;
    DK_CHECK_OK(dk_buffer_alloc(1000, 1, &b));
    DK_CHECK_EQ_INT(((uintptr_t)dk_buffer_data(b)) % 64, 0);
    DK_CHECK_EQ_INT(dk_buffer_size(b), 1000);
    DK_CHECK_EQ_INT(((unsigned char *)dk_buffer_data(b))[999], 0);
    DK_CHECK(dk_buffer_ref(b) == b);
    DK_CHECK_EQ_INT(dk_buffer_refcount(b), 2);
    dk_buffer_unref(b);
    DK_CHECK_EQ_INT(dk_buffer_refcount(b), 1);
    dk_buffer_unref(b);
    dk_buffer_unref(NULL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);

    wrap_frees = 0;
    DK_CHECK_OK(dk_buffer_wrap(malloc(64), 64, wrap_free, (void *)(intptr_t)42, &b));
    dk_buffer_ref(b);
    dk_buffer_unref(b);
    DK_CHECK_EQ_INT(wrap_frees, 0);
    dk_buffer_unref(b);
    DK_CHECK_EQ_INT(wrap_frees, 1);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
    DK_CHECK_STATUS(dk_buffer_alloc(SIZE_MAX - 10, 0, &b), DK_EOVERFLOW);
}

typedef struct unref_ctx {
    dk_buffer *b;
    int per_thread;
} unref_ctx;

static void unref_many(void *arg, int ith, int nth)
{
    (void)ith;
    (void)nth;
    unref_ctx *u = arg;
    for (int i = 0; i < u->per_thread; i++) dk_buffer_unref(u->b);
}

static void test_buffer_concurrent_unref(void)
{
    int64_t live0 = dk_alloc_live();
    dk_pool_config cfg;
    dk_pool_config_init(&cfg);
    cfg.n_threads = 4;
    dk_pool *pool;
    DK_CHECK_OK(dk_pool_create(&cfg, &pool));
    wrap_frees = 0;
    dk_buffer *b;
    DK_CHECK_OK(dk_buffer_wrap(malloc(16), 16, wrap_free, (void *)(intptr_t)42, &b));
    for (int i = 0; i < 4 * 1000 - 1; i++) dk_buffer_ref(b);
    unref_ctx u = {b, 1000};
    DK_CHECK_OK(dk_pool_run(pool, 4, unref_many, &u));
    DK_CHECK_EQ_INT(wrap_frees, 1);
    dk_pool_destroy(pool);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* The buffer cache: reuse of a released block that fits closely, the limit
 * (oldest dropped), stats, live counts, zeroing, and the off switch. */
static void test_buffer_cache(void)
{
    const size_t MB = (size_t)1 << 20;
    int64_t live0 = dk_alloc_live();
    dk_buffer_cache_stats s;
    DK_CHECK_EQ_U64(dk_buffer_cache_set_limit(0), 0);   /* off by default in C */

    /* Off: a released block is freed, nothing is kept. */
    dk_buffer *a, *b, *c;
    DK_CHECK_OK(dk_buffer_alloc(2 * MB, 0, &a));
    dk_buffer_unref(a);
    dk_buffer_cache_get_stats(&s);
    DK_CHECK_EQ_INT(s.blocks, 0);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);

    DK_CHECK_EQ_U64(dk_buffer_cache_set_limit(8 * MB), 0);
    /* Small buffers are never kept. */
    DK_CHECK_OK(dk_buffer_alloc(DK_BUFFER_CACHE_MIN - 1, 0, &a));
    dk_buffer_unref(a);
    dk_buffer_cache_get_stats(&s);
    DK_CHECK_EQ_INT(s.blocks, 0);

    /* A released block is kept (not live) and serves a request it fits. */
    DK_CHECK_OK(dk_buffer_alloc(2 * MB, 0, &a));
    unsigned char *pa = dk_buffer_data(a);
    memset(pa, 0x5a, 2 * MB);
    dk_buffer_unref(a);
    dk_buffer_cache_get_stats(&s);
    DK_CHECK_EQ_INT(s.blocks, 1);
    DK_CHECK_EQ_U64(s.bytes, 2 * MB);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
    int64_t hits0 = s.hits;
    /* Too small for it (more than a quarter wasted): a new block. */
    DK_CHECK_OK(dk_buffer_alloc(MB + MB / 2, 0, &b));
    DK_CHECK(dk_buffer_data(b) != pa);
    dk_buffer_unref(b);   /* kept too: two blocks now */
    dk_buffer_cache_get_stats(&s);
    DK_CHECK_EQ_INT(s.blocks, 2);
    /* Fits within a quarter: the 2 MiB block, zeroed on request, with the
       requested size. */
    DK_CHECK_OK(dk_buffer_alloc(2 * MB - 1000, 1, &b));
    DK_CHECK(dk_buffer_data(b) == pa);
    DK_CHECK_EQ_U64(dk_buffer_size(b), 2 * MB - 1000);
    DK_CHECK_EQ_INT(dk_buffer_refcount(b), 1);
    DK_CHECK_EQ_INT(pa[0], 0);
    DK_CHECK_EQ_INT(pa[2 * MB - 1001], 0);
    dk_buffer_cache_get_stats(&s);
    DK_CHECK_EQ_INT(s.hits, hits0 + 1);
    DK_CHECK_EQ_INT(s.blocks, 1);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0 + 1);
    /* Bigger than the block: never handed a block that is too small. */
    DK_CHECK_OK(dk_buffer_alloc(3 * MB, 0, &c));
    DK_CHECK_EQ_U64(dk_buffer_size(c), 3 * MB);
    memset(dk_buffer_data(c), 1, 3 * MB);
    dk_buffer_unref(c);
    dk_buffer_unref(b);
    dk_buffer_cache_get_stats(&s);
    DK_CHECK_EQ_U64(s.bytes, 3 * MB + 2 * MB + MB + MB / 2);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);

    /* Over the limit, the oldest blocks go: 5 more MiB keep only the newest
       blocks within 8 MiB. */
    DK_CHECK_OK(dk_buffer_alloc(5 * MB, 0, &a));
    dk_buffer_unref(a);
    dk_buffer_cache_get_stats(&s);
    DK_CHECK(s.bytes <= 8 * MB);
    DK_CHECK_EQ_U64(s.bytes, 5 * MB + 2 * MB);   /* the 5 and the 2 (newest first) */
    /* A block bigger than the limit is not kept. */
    DK_CHECK_OK(dk_buffer_alloc(9 * MB, 0, &a));
    dk_buffer_unref(a);
    dk_buffer_cache_get_stats(&s);
    DK_CHECK_EQ_U64(s.bytes, 7 * MB);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);

    /* Lowering the limit frees what is over it; 0 frees all and turns it off. */
    DK_CHECK_EQ_U64(dk_buffer_cache_set_limit(5 * MB), 8 * MB);
    dk_buffer_cache_get_stats(&s);
    DK_CHECK_EQ_U64(s.bytes, 5 * MB);
    DK_CHECK_EQ_U64(s.limit, 5 * MB);
    DK_CHECK_EQ_U64(dk_buffer_cache_set_limit(0), 5 * MB);
    dk_buffer_cache_get_stats(&s);
    DK_CHECK_EQ_INT(s.blocks, 0);
    DK_CHECK_EQ_U64(s.bytes, 0);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

typedef struct cache_churn {
    atomic_int bad;
} cache_churn;

static void churn(void *arg, int ith, int nth)
{
    (void)nth;
    cache_churn *c = arg;
    const size_t MB = (size_t)1 << 20;
    for (int i = 0; i < 200; i++) {
        size_t n = MB + (size_t)((i * 7 + ith * 3) % 5) * (MB / 8);
        dk_buffer *b;
        if (dk_buffer_alloc(n, 0, &b) != DK_OK) {
            atomic_fetch_add(&c->bad, 1);
            continue;
        }
        unsigned char *p = dk_buffer_data(b);
        p[0] = (unsigned char)ith;
        p[n - 1] = (unsigned char)ith;
        if (dk_buffer_size(b) != n || p[0] != (unsigned char)ith) atomic_fetch_add(&c->bad, 1);
        dk_buffer *r = dk_buffer_ref(b);
        dk_buffer_unref(b);
        if (p[n - 1] != (unsigned char)ith) atomic_fetch_add(&c->bad, 1);
        dk_buffer_unref(r);
    }
}

static void test_buffer_cache_threads(void)
{
    int64_t live0 = dk_alloc_live();
    dk_buffer_cache_set_limit((size_t)6 << 20);
    dk_pool_config cfg;
    dk_pool_config_init(&cfg);
    cfg.n_threads = 4;
    dk_pool *pool;
    DK_CHECK_OK(dk_pool_create(&cfg, &pool));
    cache_churn c;
    atomic_init(&c.bad, 0);
    DK_CHECK_OK(dk_pool_run(pool, 4, churn, &c));
    dk_pool_destroy(pool);
    DK_CHECK_EQ_INT(atomic_load(&c.bad), 0);
    dk_buffer_cache_stats s;
    dk_buffer_cache_get_stats(&s);
    DK_CHECK(s.bytes <= ((size_t)6 << 20));
    DK_CHECK(s.hits > 0);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
    /* dk_set_allocator frees the kept blocks (they came from the old one). */
    DK_CHECK_OK(dk_set_allocator(NULL));
    dk_buffer_cache_get_stats(&s);
    DK_CHECK_EQ_INT(s.blocks, 0);
    dk_buffer_cache_set_limit(0);
}

static void test_tensor(void)
{
    int64_t live0 = dk_alloc_live();
    dk_tensor t;
    int64_t shape[3] = {2, 3, 4};
    DK_CHECK_OK(dk_tensor_alloc(&t, DK_F32, 3, shape));
    DK_CHECK_EQ_INT(dk_tensor_numel(&t), 24);
    DK_CHECK_EQ_INT(dk_tensor_nbytes(&t), 96);
    DK_CHECK_EQ_INT(t.strides[0], 12);
    DK_CHECK_EQ_INT(t.strides[1], 4);
    DK_CHECK_EQ_INT(t.strides[2], 1);
    DK_CHECK(dk_tensor_is_contiguous(&t));
    int64_t idx[3] = {1, 2, 3};
    *(float *)dk_tensor_at(&t, idx) = 5.0f;
    DK_CHECK_EQ_INT(((float *)t.data)[23], 5);
    dk_tensor v = dk_tensor_share(&t);
    DK_CHECK_EQ_INT(dk_buffer_refcount(t.owner), 2);
    /* A transposed view is not contiguous. */
    v.shape[1] = 4;
    v.shape[2] = 3;
    v.strides[1] = 1;
    v.strides[2] = 4;
    DK_CHECK(!dk_tensor_is_contiguous(&v));
    dk_tensor_release(&v);
    dk_tensor_release(&t);
    dk_tensor_release(NULL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);

    int64_t bad[2] = {3, -1};
    DK_CHECK_STATUS(dk_tensor_alloc(&t, DK_U8, 2, bad), DK_EINVAL);
    DK_CHECK_STATUS(dk_tensor_alloc(&t, DK_DTYPE_INVALID, 2, shape), DK_EINVAL);
    DK_CHECK_STATUS(dk_tensor_alloc(&t, DK_U8, DK_MAX_DIMS + 1, shape), DK_EINVAL);
    int64_t huge[3] = {INT64_MAX / 2, 4, 4};
    DK_CHECK_STATUS(dk_tensor_alloc(&t, DK_F64, 3, huge), DK_EOVERFLOW);
    int64_t empty[2] = {0, 5};
    DK_CHECK_OK(dk_tensor_alloc(&t, DK_U8, 2, empty));
    DK_CHECK_EQ_INT(dk_tensor_numel(&t), 0);
    dk_tensor_release(&t);
    /* dk_tensor_empty: the same tensor, contents unspecified, same errors. */
    DK_CHECK_OK(dk_tensor_empty(&t, DK_F32, 3, shape));
    DK_CHECK_EQ_INT(dk_tensor_nbytes(&t), 96);
    DK_CHECK_EQ_INT(t.strides[0], 12);
    DK_CHECK(dk_tensor_is_contiguous(&t));
    DK_CHECK(t.owner && dk_buffer_data(t.owner) == t.data && dk_buffer_size(t.owner) == 96);
    dk_tensor_release(&t);
    DK_CHECK_STATUS(dk_tensor_empty(&t, DK_U8, 2, bad), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "dk_tensor_empty");
    DK_CHECK_STATUS(dk_tensor_empty(&t, DK_F64, 3, huge), DK_EOVERFLOW);
    DK_CHECK_STATUS(dk_tensor_empty(NULL, DK_U8, 2, shape), DK_EINVAL);
    DK_CHECK_OK(dk_tensor_empty(&t, DK_U8, 2, empty));
    DK_CHECK_EQ_INT(dk_tensor_numel(&t), 0);
    dk_tensor_release(&t);
    DK_CHECK_OK(dk_tensor_alloc(&t, DK_I64, 0, NULL));   /* a scalar */
    DK_CHECK_EQ_INT(dk_tensor_numel(&t), 1);
    dk_tensor_release(&t);

    uint8_t code, bits;
    DK_CHECK_OK(dk_dtype_dlpack(DK_BF16, &code, &bits));
    DK_CHECK_EQ_INT(code, 4);
    DK_CHECK_EQ_INT(bits, 16);
    DK_CHECK_OK(dk_dtype_dlpack(DK_U16, &code, &bits));
    DK_CHECK_EQ_INT(code, 1);
    DK_CHECK_STR(dk_dtype_name(DK_F16), "float16");
    DK_CHECK_EQ_INT(dk_dtype_size(DK_F64), 8);
    DK_CHECK_STATUS(dk_dtype_dlpack(DK_DTYPE_COUNT, &code, &bits), DK_EINVAL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* Pool                                                                      */

typedef struct hit_ctx {
    atomic_int *hits;
    atomic_int bad_ith;
} hit_ctx;

static void hit_range(void *arg, int64_t begin, int64_t end, int ith)
{
    hit_ctx *h = arg;
    if (ith < 0 || ith >= 64) atomic_fetch_add(&h->bad_ith, 1);
    for (int64_t i = begin; i < end; i++) atomic_fetch_add(&h->hits[i], 1);
}

static void hit_slots(void *arg, int ith, int nth)
{
    hit_ctx *h = arg;
    if (ith >= nth) atomic_fetch_add(&h->bad_ith, 1);
    atomic_fetch_add(&h->hits[ith], 1);
}

/* Several threads drive the same pool at once: every index must be visited
 * exactly once per call. */
typedef struct driver_arg {
    dk_pool *pool;
    int64_t n;
    int ok;
} driver_arg;

static void *pool_driver(void *arg)
{
    driver_arg *d = arg;
    atomic_int *hits = calloc((size_t)d->n, sizeof *hits);
    hit_ctx h = {hits, 0};
    d->ok = 1;
    for (int rep = 0; rep < 20; rep++) {
        dk_pool_for(d->pool, d->n, rep % 5 == 0 ? 0 : rep, hit_range, &h);
    }
    for (int64_t i = 0; i < d->n; i++)
        if (atomic_load(&hits[i]) != 20) d->ok = 0;
    if (atomic_load(&h.bad_ith)) d->ok = 0;
    free(hits);
    return NULL;
}

static void test_pool_exactly_once(void)
{
    int64_t live0 = dk_alloc_live();
    for (int threads = 1; threads <= 4; threads++) {
        dk_pool_config cfg;
        dk_pool_config_init(&cfg);
        cfg.n_threads = threads;
        dk_pool *pool;
        DK_CHECK_OK(dk_pool_create(&cfg, &pool));
        DK_CHECK_EQ_INT(dk_pool_size(pool), threads);
        static const int64_t sizes[] = {0, 1, 2, 7, 63, 1000, 4099};
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            int64_t n = sizes[s];
            atomic_int *hits = calloc((size_t)n + 1, sizeof *hits);
            hit_ctx h = {hits, 0};
            DK_CHECK_OK(dk_pool_for(pool, n, 0, hit_range, &h));
            for (int64_t i = 0; i < n; i++) DK_CHECK_EQ_INT(atomic_load(&hits[i]), 1);
            DK_CHECK_EQ_INT(atomic_load(&h.bad_ith), 0);
            free(hits);
        }
        atomic_int slots[16] = {0};
        hit_ctx hs = {slots, 0};
        DK_CHECK_OK(dk_pool_run(pool, 13, hit_slots, &hs));
        for (int i = 0; i < 13; i++) DK_CHECK_EQ_INT(atomic_load(&slots[i]), 1);
        DK_CHECK_EQ_INT(atomic_load(&slots[13]), 0);

        /* Contention: four OS threads share the pool. */
        pthread_t th[4];
        driver_arg args[4];
        for (int i = 0; i < 4; i++) {
            args[i] = (driver_arg){pool, 5003 + i, 0};
            pthread_create(&th[i], NULL, pool_driver, &args[i]);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            DK_CHECK(args[i].ok);
        }
        dk_pool_destroy(pool);
    }
    DK_CHECK_STATUS(dk_pool_for(NULL, -1, 0, hit_range, NULL), DK_EINVAL);
    dk_pool_config bad = {0};
    dk_pool *p;
    DK_CHECK_STATUS(dk_pool_create(&bad, &p), DK_EINVAL);
    DK_CHECK_EQ_INT(dk_pool_size(NULL), 1);
    dk_pool_destroy(NULL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* Tasks that run nested parallel loops on the same pool must not deadlock. */
typedef struct nest_ctx {
    dk_pool *pool;
    atomic_int *hits;   /* 8 x 100 */
} nest_ctx;

typedef struct nest_inner {
    atomic_int *row;
} nest_inner;

static void nest_inner_range(void *arg, int64_t b, int64_t e, int ith)
{
    (void)ith;
    nest_inner *in = arg;
    for (int64_t i = b; i < e; i++) atomic_fetch_add(&in->row[i], 1);
}

static void nest_outer(void *arg, int64_t b, int64_t e, int ith)
{
    (void)ith;
    nest_ctx *n = arg;
    for (int64_t i = b; i < e; i++) {
        nest_inner in = {n->hits + i * 100};
        dk_pool_for(n->pool, 100, 3, nest_inner_range, &in);
    }
}

static atomic_int async_sum;
static void async_task(void *arg)
{
    atomic_fetch_add(&async_sum, (int)(intptr_t)arg);
}

static void test_pool_nested_and_groups(void)
{
    int64_t live0 = dk_alloc_live();
    dk_pool_config cfg;
    dk_pool_config_init(&cfg);
    cfg.n_threads = 3;
    dk_pool *pool;
    DK_CHECK_OK(dk_pool_create(&cfg, &pool));
    atomic_int hits[800] = {0};
    nest_ctx n = {pool, hits};
    DK_CHECK_OK(dk_pool_for(pool, 8, 1, nest_outer, &n));
    for (int i = 0; i < 800; i++) DK_CHECK_EQ_INT(atomic_load(&hits[i]), 1);

    atomic_store(&async_sum, 0);
    dk_pool_group g;
    dk_pool_group_init(&g);
    for (int i = 1; i <= 1000; i++) DK_CHECK_OK(dk_pool_submit(pool, &g, async_task, (void *)(intptr_t)i));
    dk_pool_group_wait(pool, &g);
    DK_CHECK_EQ_INT(atomic_load(&async_sum), 500500);
    DK_CHECK_EQ_INT(g.pending, 0);

    /* Tasks still queued when the pool is destroyed are run, not dropped. */
    atomic_store(&async_sum, 0);
    for (int i = 1; i <= 100; i++) DK_CHECK_OK(dk_pool_submit(pool, NULL, async_task, (void *)(intptr_t)i));
    dk_pool_destroy(pool);
    DK_CHECK_EQ_INT(atomic_load(&async_sum), 5050);

    /* A NULL pool runs inline. */
    atomic_store(&async_sum, 0);
    DK_CHECK_OK(dk_pool_submit(NULL, &g, async_task, (void *)(intptr_t)7));
    dk_pool_group_wait(NULL, &g);
    DK_CHECK_EQ_INT(atomic_load(&async_sum), 7);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* RNG                                                                       */

static void test_philox_known_answers(void)
{
    /* Known-answer vectors of Philox4x32-10 (Random123's kat_vectors). */
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        dk_philox4x32(kat[i].ctr, kat[i].key, out);
        for (int j = 0; j < 4; j++) DK_CHECK_EQ_U64(out[j], kat[i].out[j]);
    }
}

static void test_rng_stream_layout(void)
{
    /* Word i of stream (seed, s) is lane i%4 of philox((i/4, s), seed). */
    uint64_t seed = 0x0123456789abcdefull, stream = 0xfedcba9876543210ull;
    dk_rng r;
    dk_rng_init(&r, seed, stream);
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    for (uint64_t blk = 0; blk < 5; blk++) {
        uint32_t ctr[4] = {(uint32_t)blk, 0, (uint32_t)stream, (uint32_t)(stream >> 32)}, out[4];
        dk_philox4x32(ctr, key, out);
        for (int j = 0; j < 4; j++) DK_CHECK_EQ_U64(dk_rng_u32(&r), out[j]);
    }
    /* Seeking lands on the same words. */
    uint32_t seq[64];
    dk_rng_init(&r, 7, 9);
    for (int i = 0; i < 64; i++) seq[i] = dk_rng_u32(&r);
    for (int start = 0; start < 40; start += 3) {
        dk_rng_seek(&r, (uint64_t)start);
        for (int i = start; i < start + 20; i++) DK_CHECK_EQ_U64(dk_rng_u32(&r), seq[i]);
    }
    /* Different streams and seeds differ. */
    dk_rng a, b;
    dk_rng_init(&a, 7, 10);
    dk_rng_init(&b, 8, 9);
    DK_CHECK(dk_rng_u32(&a) != seq[0] || dk_rng_u32(&a) != seq[1]);
    DK_CHECK(dk_rng_u32(&b) != seq[0] || dk_rng_u32(&b) != seq[1]);
    DK_CHECK(dk_rng_stream_id(1, 2, 3, 4) != dk_rng_stream_id(2, 1, 3, 4));
    DK_CHECK(dk_rng_stream_id(1, 2, 3, 4) != dk_rng_stream_id(1, 2, 3, 5));
    DK_CHECK_EQ_U64(dk_rng_stream_id(1, 2, 3, 4), dk_rng_stream_id(1, 2, 3, 4));
}

static void test_rng_distributions(void)
{
    dk_rng r;
    dk_rng_init(&r, 12345, 0);
    const int n = 200000;
    double sum = 0, sum2 = 0, nsum = 0, nsum2 = 0;
    int buckets[10] = {0};
    for (int i = 0; i < n; i++) {
        float u = dk_rng_uniform(&r);
        DK_CHECK(u >= 0.0f && u < 1.0f);
        sum += u;
        sum2 += (double)u * u;
        float v = dk_rng_range(&r, -2.0f, 3.0f);
        DK_CHECK(v >= -2.0f && v < 3.0f);
        uint32_t k = dk_rng_below(&r, 10);
        DK_CHECK(k < 10);
        buckets[k]++;
        float g = dk_rng_normal(&r);
        DK_CHECK(isfinite(g));
        nsum += g;
        nsum2 += (double)g * g;
        double d = dk_rng_uniform_f64(&r);
        DK_CHECK(d >= 0.0 && d < 1.0);
    }
    DK_CHECK_NEAR(sum / n, 0.5, 0.005);
    DK_CHECK_NEAR(sum2 / n - (sum / n) * (sum / n), 1.0 / 12.0, 0.002);
    DK_CHECK_NEAR(nsum / n, 0.0, 0.01);
    DK_CHECK_NEAR(nsum2 / n, 1.0, 0.02);
    for (int i = 0; i < 10; i++) DK_CHECK_NEAR(buckets[i], n / 10, n / 100);
    DK_CHECK_EQ_INT(dk_rng_below(&r, 0), 0);
    DK_CHECK_EQ_INT(dk_rng_below(&r, 1), 0);
}

static void test_rng_thread_count_invariance(void)
{
    int64_t live0 = dk_alloc_live();
    const int64_t n = 100003;
    uint32_t *ref = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
    float *fref = malloc((size_t)n * 4), *fgot = malloc((size_t)n * 4);
    DK_CHECK_OK(dk_rng_fill_u32(NULL, 99, 5, 3, ref, n));
    DK_CHECK_OK(dk_rng_fill_uniform(NULL, 99, 5, 3, fref, n));
    dk_rng r;
    dk_rng_init(&r, 99, 5);
    dk_rng_seek(&r, 3);
    /* Every word equals the scalar generator's (the block path runs 16 Philox
       blocks side by side). */
    int64_t mismatch = -1;
    for (int64_t i = 0; i < n && mismatch < 0; i++)
        if (ref[i] != dk_rng_u32(&r)) mismatch = i;
    DK_CHECK_EQ_INT(mismatch, -1);
    for (int threads = 1; threads <= 7; threads++) {
        dk_pool_config cfg;
        dk_pool_config_init(&cfg);
        cfg.n_threads = threads;
        dk_pool *pool;
        DK_CHECK_OK(dk_pool_create(&cfg, &pool));
        memset(got, 0, (size_t)n * 4);
        DK_CHECK_OK(dk_rng_fill_u32(pool, 99, 5, 3, got, n));
        DK_CHECK(memcmp(ref, got, (size_t)n * 4) == 0);
        DK_CHECK_OK(dk_rng_fill_uniform(pool, 99, 5, 3, fgot, n));
        DK_CHECK(memcmp(fref, fgot, (size_t)n * 4) == 0);
        dk_pool_destroy(pool);
    }
    DK_CHECK_STATUS(dk_rng_fill_u32(NULL, 1, 1, 0, NULL, 5), DK_EINVAL);
    free(ref);
    free(got);
    free(fref);
    free(fgot);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* OOM injection: every failure point returns DK_ENOMEM and leaks nothing.   */

typedef int (*oom_body)(void);

static int oom_arena(void)
{
    dk_arena *a;
    int st = dk_arena_create(64, &a);
    if (st) return st;
    for (int i = 0; i < 10; i++) {
        if (!dk_arena_alloc(a, 1000, 16)) {
            dk_arena_destroy(a);
            return DK_ENOMEM;
        }
    }
    dk_arena_destroy(a);
    return DK_OK;
}

static int oom_pool(void)
{
    dk_pool_config cfg;
    dk_pool_config_init(&cfg);
    cfg.n_threads = 3;
    dk_pool *pool;
    int st = dk_pool_create(&cfg, &pool);
    if (st) return st;
    dk_pool_group g;
    dk_pool_group_init(&g);
    atomic_store(&async_sum, 0);
    for (int i = 0; i < 200 && st == DK_OK; i++) st = dk_pool_submit(pool, &g, async_task, (void *)(intptr_t)1);
    dk_pool_group_wait(pool, &g);
    dk_pool_destroy(pool);
    return st;
}

static int oom_tensor(void)
{
    dk_tensor a, b;
    int64_t shape[2] = {10, 10};
    int st = dk_tensor_alloc(&a, DK_F32, 2, shape);
    if (st) return st;
    st = dk_tensor_alloc(&b, DK_U8, 2, shape);
    dk_tensor_release(&a);
    if (st) return st;
    dk_tensor_release(&b);
    dk_buffer *w;
    st = dk_buffer_wrap(NULL, 0, NULL, NULL, &w);
    if (st) return st;
    dk_buffer_unref(w);
    return DK_OK;
}

/* Runs `body` with the allocator failing after 0, 1, 2, ... allocations
 * until it succeeds; returns how many failure points were exercised, or -1
 * if a failure was not DK_ENOMEM or leaked. */
static int oom_sweep(oom_body body)
{
    for (long k = 0; k < 10000; k++) {
        count_alloc c;
        if (install_counting(&c, k)) return -1;
        int st = body();
        int leaked = atomic_load(&c.mallocs) != atomic_load(&c.frees) || dk_alloc_live() != 0;
        dk_set_allocator(NULL);
        if (leaked) return -1;
        if (st == DK_OK) return (int)k;
        if (st != DK_ENOMEM) return -1;
    }
    return -1;
}

static void test_oom_injection(void)
{
    DK_CHECK_EQ_INT(dk_alloc_live(), 0);
    DK_CHECK(oom_sweep(oom_arena) > 2);
    DK_CHECK(oom_sweep(oom_tensor) >= 3);
    DK_CHECK(oom_sweep(oom_pool) >= 2);
}

/* ------------------------------------------------------------------------ */
/* Log and progress                                                          */

typedef struct log_capture {
    int count;
    dk_log_level level;
    char msg[256];
} log_capture;

static void capture_log(void *user, dk_log_level level, const char *msg)
{
    log_capture *c = user;
    c->count++;
    c->level = level;
    snprintf(c->msg, sizeof c->msg, "%s", msg);
}

static void test_log_callback(void)
{
    log_capture c = {0};
    dk_log_set(capture_log, &c, DK_LOG_INFO);
    dk_log(DK_LOG_DEBUG, "hidden %d", 1);
    DK_CHECK_EQ_INT(c.count, 0);
    dk_log(DK_LOG_WARN, "shown %d", 2);
    DK_CHECK_EQ_INT(c.count, 1);
    DK_CHECK_EQ_INT(c.level, DK_LOG_WARN);
    DK_CHECK_STR(c.msg, "shown 2");
    dk_log_set(NULL, NULL, DK_LOG_WARN);
}

static void test_progress_plain(void)
{
    int64_t live0 = dk_alloc_live();
    FILE *f = tmpfile();
    DK_CHECK(f != NULL);
    dk_progress *p;
    DK_CHECK_OK(dk_progress_create(f, "render", &p));
    dk_progress_set_mode(p, 0);
    for (int i = 0; i <= 100; i++) dk_progress_report(p, i, 100, "frames");
    dk_progress_destroy(p);
    rewind(f);
    char line[256];
    int lines = 0, saw_100 = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        DK_CHECK(strchr(line, '\r') == NULL);
        DK_CHECK_EQ_INT(strncmp(line, "render: ", 8), 0);
        if (strstr(line, "100% (100/100 frames")) saw_100 = 1;
    }
    DK_CHECK_EQ_INT(lines, 11);
    DK_CHECK(saw_100);
    fclose(f);

    f = tmpfile();
    DK_CHECK_OK(dk_progress_create(f, "bar", &p));
    dk_progress_set_mode(p, 1);
    dk_progress_report(p, 5, 10, "x");
    dk_progress_report(p, 10, 10, "x");
    dk_progress_destroy(p);
    rewind(f);
    size_t n = fread(line, 1, sizeof line - 1, f);
    line[n] = '\0';
    DK_CHECK(line[0] == '\r');
    DK_CHECK_CONTAINS(line, "[##############################] 100% 10/10 x");
    fclose(f);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

extern const dk_test_case dk_tests_image[];
extern const size_t dk_tests_image_count;
extern const dk_test_case dk_tests_json[];
extern const size_t dk_tests_json_count;

int main(int argc, char **argv)
{
    static const dk_test_case cases[] = {
        DK_TEST(test_version),
        DK_TEST(test_status_strings),
        DK_TEST(test_errmsg_thread_local),
        DK_TEST(test_allocator_counts),
        DK_TEST(test_set_allocator_rules),
        DK_TEST(test_arena),
        DK_TEST(test_buffer_refcount),
        DK_TEST(test_buffer_concurrent_unref),
        DK_TEST(test_buffer_cache),
        DK_TEST(test_buffer_cache_threads),
        DK_TEST(test_tensor),
        DK_TEST(test_pool_exactly_once),
        DK_TEST(test_pool_nested_and_groups),
        DK_TEST(test_philox_known_answers),
        DK_TEST(test_rng_stream_layout),
        DK_TEST(test_rng_distributions),
        DK_TEST(test_rng_thread_count_invariance),
        DK_TEST(test_oom_injection),
        DK_TEST(test_log_callback),
        DK_TEST(test_progress_plain),
    };
    size_t n_core = sizeof cases / sizeof cases[0];
    size_t total = n_core + dk_tests_image_count + dk_tests_json_count;
    dk_test_case *all = malloc(total * sizeof *all);
    memcpy(all, cases, sizeof cases);
    memcpy(all + n_core, dk_tests_image, dk_tests_image_count * sizeof *all);
    memcpy(all + n_core + dk_tests_image_count, dk_tests_json, dk_tests_json_count * sizeof *all);
    int rc = dk_test_main(argc, argv, all, total);
    free(all);
    return rc;
}
