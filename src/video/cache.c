/*
 * A byte-bounded LRU map from 64-bit keys to dk_buffer references, used for
 * decoded frames (key: frame id and output kind, value: the output bytes) and
 * for demuxed GOP segments (key: segment, value: a buffer wrapping the
 * segment's packets).
 *
 * Values are refcounted, so a reader takes its own reference under the lock
 * and copies outside it; an entry evicted while a reader still holds it lives
 * until that reader lets go. The bytes charged to the cache never exceed the
 * capacity: an insert evicts from the cold end first, and a value larger than
 * the whole capacity is not stored. Evicted values are released after the
 * lock is dropped, since releasing a segment frees many packets.
 *
 * A cache created with spares > 0 (the frame cache) recycles: an evicted
 * value that nobody else holds (refcount 1) and whose size matches what is
 * being inserted is kept, up to `spares` of them, and handed out again by
 * dk__lru_take_spare, so a full cache of same-sized frames stops paying an
 * allocation, page faults and a free per frame. Spares are charged to the
 * capacity like entries (the cache then holds one entry fewer), are the
 * first thing dropped when room is needed, and are only ever used by one
 * owner at a time: a spare is unreachable from the map, and only the thread
 * that takes it gets it.
 */
#include <pthread.h>
#include <string.h>

#include "video/video_impl.h"

typedef struct lru_ent {
    uint64_t key;
    dk_buffer *val;
    size_t bytes;
    struct lru_ent *prev, *next;   /* recency list, most recent after head */
    struct lru_ent *hnext;         /* hash chain */
} lru_ent;

struct dk__lru {
    pthread_mutex_t mu;
    size_t cap, used, count;
    dk_buffer *spare[DK__LRU_MAX_SPARES];
    size_t n_spare, max_spare, spare_bytes;
    lru_ent **buckets;
    size_t n_buckets;              /* power of two */
    lru_ent head;                  /* sentinel of the recency list */
};

static size_t bucket_of(const dk__lru *c, uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (c->n_buckets - 1);
}

int dk__lru_create(size_t capacity, int spares, dk__lru **out)
{
    *out = NULL;
    dk__lru *c = dk_calloc(1, sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, __func__, "out of memory");
    c->n_buckets = 64;
    c->buckets = dk_calloc(c->n_buckets, sizeof *c->buckets);
    if (!c->buckets || pthread_mutex_init(&c->mu, NULL)) {
        dk_free(c->buckets);
        dk_free(c);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    c->cap = capacity;
    c->max_spare = spares <= 0 ? 0 : spares > DK__LRU_MAX_SPARES ? DK__LRU_MAX_SPARES : (size_t)spares;
    c->head.prev = c->head.next = &c->head;
    *out = c;
    return DK_OK;
}

/* Releases the entries of a recency list from `e` up to the sentinel, and
 * n spares. */
static void release(lru_ent *e, const lru_ent *head, dk_buffer *const *spare, size_t n)
{
    while (e != head) {
        lru_ent *next = e->next;
        dk_buffer_unref(e->val);
        dk_free(e);
        e = next;
    }
    for (size_t i = 0; i < n; i++) dk_buffer_unref(spare[i]);
}

void dk__lru_destroy(dk__lru *c)
{
    if (!c) return;
    release(c->head.next, &c->head, c->spare, c->n_spare);
    pthread_mutex_destroy(&c->mu);
    dk_free(c->buckets);
    dk_free(c);
}

size_t dk__lru_overhead(dk__lru *c)
{
    if (!c) return 0;
    pthread_mutex_lock(&c->mu);
    size_t b = sizeof *c + c->n_buckets * sizeof *c->buckets;
    pthread_mutex_unlock(&c->mu);
    return b;
}

void dk__lru_clear(dk__lru *c)
{
    if (!c) return;
    /* The table shrinks back to its initial size (a trimmed handle may be
       kept a long time). */
    lru_ent **small = dk_calloc(64, sizeof *small), **old = small;
    pthread_mutex_lock(&c->mu);
    lru_ent *e = c->head.next;
    c->head.prev = c->head.next = &c->head;
    if (small && c->n_buckets > 64) {
        old = c->buckets;
        c->buckets = small;
        c->n_buckets = 64;
    } else {
        memset(c->buckets, 0, c->n_buckets * sizeof *c->buckets);
    }
    c->used = c->count = 0;
    dk_buffer *spare[DK__LRU_MAX_SPARES];
    size_t n_spare = c->n_spare;
    memcpy(spare, c->spare, n_spare * sizeof *spare);
    c->n_spare = 0;
    c->spare_bytes = 0;
    pthread_mutex_unlock(&c->mu);
    dk_free(old);
    /* Released outside the lock: a segment frees many packets. */
    release(e, &c->head, spare, n_spare);
}

static lru_ent *find(dk__lru *c, uint64_t key)
{
    for (lru_ent *e = c->buckets[bucket_of(c, key)]; e; e = e->hnext)
        if (e->key == key) return e;
    return NULL;
}

static void list_unlink(lru_ent *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void list_push_front(dk__lru *c, lru_ent *e)
{
    e->prev = &c->head;
    e->next = c->head.next;
    c->head.next->prev = e;
    c->head.next = e;
}

static void hash_remove(dk__lru *c, lru_ent *e)
{
    lru_ent **pp = &c->buckets[bucket_of(c, e->key)];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
}

/* Doubles the table when it is fuller than one entry per bucket; a failed
 * allocation just keeps longer chains. */
static void maybe_grow(dk__lru *c)
{
    if (c->count < c->n_buckets) return;
    size_t nb = c->n_buckets * 2;
    lru_ent **b = dk_calloc(nb, sizeof *b);
    if (!b) return;
    lru_ent **old = c->buckets;
    size_t on = c->n_buckets;
    c->buckets = b;
    c->n_buckets = nb;
    for (size_t i = 0; i < on; i++) {
        lru_ent *e = old[i];
        while (e) {
            lru_ent *n = e->hnext;
            size_t k = bucket_of(c, e->key);
            e->hnext = b[k];
            b[k] = e;
            e = n;
        }
    }
    dk_free(old);
}

dk_buffer *dk__lru_get(dk__lru *c, uint64_t key)
{
    if (!c) return NULL;
    pthread_mutex_lock(&c->mu);
    lru_ent *e = find(c, key);
    dk_buffer *b = NULL;
    if (e) {
        list_unlink(e);
        list_push_front(c, e);
        b = dk_buffer_ref(e->val);
    }
    pthread_mutex_unlock(&c->mu);
    return b;
}

int dk__lru_contains(dk__lru *c, uint64_t key)
{
    if (!c) return 0;
    pthread_mutex_lock(&c->mu);
    int r = find(c, key) != NULL;
    pthread_mutex_unlock(&c->mu);
    return r;
}

int dk__lru_put(dk__lru *c, uint64_t key, dk_buffer *b, size_t bytes)
{
    if (!c || !b || bytes > c->cap) return 0;
    lru_ent *ne = dk_malloc(sizeof *ne);
    if (!ne) return 0;
    ne->key = key;
    ne->val = dk_buffer_ref(b);
    ne->bytes = bytes;
    lru_ent *victims = NULL;
    dk_buffer *drop[DK__LRU_MAX_SPARES];
    size_t n_drop = 0;
    pthread_mutex_lock(&c->mu);
    if (find(c, key)) {
        pthread_mutex_unlock(&c->mu);
        dk_buffer_unref(ne->val);
        dk_free(ne);
        return 0;
    }
    /* Room for the value, and, when a spare could be kept, for one more of
       its size: evicting makes a victim of the right size likely. */
    int want_spare = c->n_spare < c->max_spare && c->cap - bytes >= bytes;
    size_t need = want_spare ? 2 * bytes : bytes;
    while (c->used + c->spare_bytes + need > c->cap) {
        if (c->head.prev != &c->head) {
            lru_ent *v = c->head.prev;
            list_unlink(v);
            hash_remove(c, v);
            c->used -= v->bytes;
            c->count--;
            v->hnext = victims;
            victims = v;
        } else if (need > bytes) {
            need = bytes;
        } else if (c->n_spare) {   /* spares give way to the value itself */
            dk_buffer *sp = c->spare[--c->n_spare];
            c->spare_bytes -= dk_buffer_size(sp);
            drop[n_drop++] = sp;
        } else {
            break;
        }
    }
    maybe_grow(c);
    size_t k = bucket_of(c, key);
    ne->hnext = c->buckets[k];
    c->buckets[k] = ne;
    list_push_front(c, ne);
    c->used += bytes;
    c->count++;
    /* Victims nobody else holds (no new reference can be taken once a value
       left the map) become spares while they fit. */
    for (lru_ent **pp = &victims; *pp && c->n_spare < c->max_spare;) {
        lru_ent *v = *pp;
        if (dk_buffer_refcount(v->val) == 1 && dk_buffer_size(v->val) == v->bytes &&
            c->used + c->spare_bytes + v->bytes <= c->cap) {
            c->spare[c->n_spare++] = v->val;
            c->spare_bytes += v->bytes;
            *pp = v->hnext;
            dk_free(v);
        } else {
            pp = &v->hnext;
        }
    }
    pthread_mutex_unlock(&c->mu);
    while (victims) {
        lru_ent *n = victims->hnext;
        dk_buffer_unref(victims->val);
        dk_free(victims);
        victims = n;
    }
    for (size_t i = 0; i < n_drop; i++) dk_buffer_unref(drop[i]);
    return 1;
}

dk_buffer *dk__lru_take_spare(dk__lru *c, size_t bytes)
{
    if (!c || !c->max_spare) return NULL;
    dk_buffer *b = NULL;
    pthread_mutex_lock(&c->mu);
    for (size_t i = c->n_spare; i-- > 0;) {
        if (dk_buffer_size(c->spare[i]) != bytes) continue;
        b = c->spare[i];
        c->spare[i] = c->spare[--c->n_spare];
        c->spare_bytes -= bytes;
        break;
    }
    pthread_mutex_unlock(&c->mu);
    return b;
}

size_t dk__lru_bytes(dk__lru *c)
{
    if (!c) return 0;
    pthread_mutex_lock(&c->mu);
    size_t u = c->used + c->spare_bytes;
    pthread_mutex_unlock(&c->mu);
    return u;
}

size_t dk__lru_count(dk__lru *c)
{
    if (!c) return 0;
    pthread_mutex_lock(&c->mu);
    size_t u = c->count;
    pthread_mutex_unlock(&c->mu);
    return u;
}
