/*
 * Allocation: one replaceable allocator, live/total counters, bump arenas.
 *
 * The counters are process-wide atomics updated on every dk_malloc/dk_free.
 * They cost one uncontended atomic add per call, and they make "freed exactly
 * once" checkable from C and Python tests without a special build.
 *
 * Arenas grow by chaining blocks (doubling), and a reset after growth
 * coalesces into one block as large as the previous peak, so the steady state
 * of a per-batch arena is a single block and no allocator traffic.
 */
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void *libc_malloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size);
}
static void *libc_realloc(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    return realloc(ptr, size);
}
static void libc_free(void *ctx, void *ptr)
{
    (void)ctx;
    free(ptr);
}

static dk_allocator g_alloc = {libc_malloc, libc_realloc, libc_free, NULL};
static atomic_llong g_live;
static atomic_llong g_total;

int dk_set_allocator(const dk_allocator *a)
{
    if (a && (!a->malloc || !a->realloc || !a->free))
        return dk__error(DK_EINVAL, __func__, "allocator has a NULL function pointer");
    dk__buffer_cache_drop();
    if (atomic_load(&g_live) != 0)
        return dk__error(DK_ESTATE, __func__, "%lld drivekit allocations are still live",
                         (long long)atomic_load(&g_live));
    if (a) {
        g_alloc = *a;
    } else {
        g_alloc.malloc = libc_malloc;
        g_alloc.realloc = libc_realloc;
        g_alloc.free = libc_free;
        g_alloc.ctx = NULL;
    }
    return DK_OK;
}

void *dk_malloc(size_t size)
{
    void *p = g_alloc.malloc(g_alloc.ctx, size ? size : 1);
    if (p) {
        atomic_fetch_add_explicit(&g_live, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&g_total, 1, memory_order_relaxed);
    }
    return p;
}

void *dk_calloc(size_t n, size_t size)
{
    size_t bytes;
    if (dk__mul_overflow(n, size, &bytes)) return NULL;
    void *p = dk_malloc(bytes);
    if (p) memset(p, 0, bytes ? bytes : 1);
    return p;
}

void *dk_realloc(void *ptr, size_t size)
{
    if (!ptr) return dk_malloc(size);
    /* A failed realloc leaves ptr valid and counted. */
    return g_alloc.realloc(g_alloc.ctx, ptr, size ? size : 1);
}

void dk_free(void *ptr)
{
    if (!ptr) return;
    g_alloc.free(g_alloc.ctx, ptr);
    atomic_fetch_sub_explicit(&g_live, 1, memory_order_relaxed);
}

char *dk_strdup(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = dk_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Aligned blocks keep the raw pointer just below the aligned address. */
void *dk_malloc_aligned(size_t size, size_t align)
{
    if (align == 0 || (align & (align - 1)) || align > 4096) return NULL;
    if (align < sizeof(void *)) align = sizeof(void *);
    size_t total;
    if (dk__add_overflow(size, align + sizeof(void *), &total)) return NULL;
    unsigned char *raw = dk_malloc(total);
    if (!raw) return NULL;
    uintptr_t a = ((uintptr_t)raw + sizeof(void *) + align - 1) & ~(uintptr_t)(align - 1);
    ((void **)a)[-1] = raw;
    return (void *)a;
}

void dk_free_aligned(void *ptr)
{
    if (ptr) dk_free(((void **)ptr)[-1]);
}

int64_t dk_alloc_live(void)
{
    return atomic_load(&g_live) - dk__buffer_cache_blocks();
}

int64_t dk_alloc_total(void)
{
    return atomic_load(&g_total);
}

/* ------------------------------------------------------------------------ */
/* Arena                                                                     */

typedef struct arena_block {
    struct arena_block *next;
    size_t size;  /* usable bytes after the header */
    size_t used;
} arena_block;

#define ARENA_HEADER ((sizeof(arena_block) + 63) & ~(size_t)63)

struct dk_arena {
    arena_block *head;       /* current block; older ones follow */
    size_t initial;
    size_t used;             /* bytes handed out (with padding) since reset */
    size_t peak;
    unsigned char *fixed;    /* caller memory for fixed arenas, else NULL */
    size_t fixed_size;
};

static arena_block *arena_block_new(size_t size)
{
    size_t total;
    if (dk__add_overflow(size, ARENA_HEADER, &total)) return NULL;
    arena_block *b = dk_malloc_aligned(total, 64);
    if (!b) return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

int dk_arena_create(size_t initial_size, dk_arena **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    dk_arena *a = dk_calloc(1, sizeof *a);
    if (!a) return dk__error(DK_ENOMEM, __func__, "cannot allocate the arena");
    a->initial = initial_size ? initial_size : 64 * 1024;
    a->head = arena_block_new(a->initial);
    if (!a->head) {
        dk_free(a);
        return dk__error(DK_ENOMEM, __func__, "cannot allocate a %zu-byte block", initial_size);
    }
    *out = a;
    return DK_OK;
}

int dk_arena_create_fixed(void *buffer, size_t size, dk_arena **out)
{
    if (!out || (!buffer && size)) return dk__error(DK_EINVAL, __func__, "NULL argument");
    *out = NULL;
    dk_arena *a = dk_calloc(1, sizeof *a);
    if (!a) return dk__error(DK_ENOMEM, __func__, "cannot allocate the arena");
    a->fixed = buffer;
    a->fixed_size = size;
    *out = a;
    return DK_OK;
}

static void arena_free_blocks(arena_block *b)
{
    while (b) {
        arena_block *next = b->next;
        dk_free_aligned(b);
        b = next;
    }
}

void dk_arena_destroy(dk_arena *a)
{
    if (!a) return;
    arena_free_blocks(a->head);
    dk_free(a);
}

static size_t align_pad(uintptr_t addr, size_t align)
{
    return (size_t)((align - (addr & (align - 1))) & (align - 1));
}

void *dk_arena_alloc(dk_arena *a, size_t size, size_t align)
{
    if (!a) return NULL;
    if (align == 0) align = 16;
    if (align & (align - 1)) {
        dk__error(DK_EINVAL, __func__, "alignment %zu is not a power of two", align);
        return NULL;
    }
    if (a->fixed) {
        size_t pad = align_pad((uintptr_t)a->fixed + a->used, align);
        if (pad > a->fixed_size - a->used || size > a->fixed_size - a->used - pad) {
            dk__error(DK_ENOMEM, __func__, "fixed arena of %zu bytes is full (%zu used, %zu asked)",
                      a->fixed_size, a->used, size);
            return NULL;
        }
        void *p = a->fixed + a->used + pad;
        a->used += pad + size;
        if (a->used > a->peak) a->peak = a->used;
        return p;
    }
    arena_block *b = a->head;
    size_t pad = 0;
    if (b) {
        unsigned char *base = (unsigned char *)b + ARENA_HEADER;
        pad = align_pad((uintptr_t)(base + b->used), align);
    }
    if (!b || pad > b->size - b->used || size > b->size - b->used - pad) {
        size_t want = b ? b->size * 2 : a->initial;
        size_t need;
        if (dk__add_overflow(size, align, &need)) {
            dk__error(DK_EOVERFLOW, __func__, "size %zu overflows", size);
            return NULL;
        }
        if (want < need) want = need;
        arena_block *nb = arena_block_new(want);
        if (!nb) {
            dk__error(DK_ENOMEM, __func__, "cannot grow the arena by %zu bytes", want);
            return NULL;
        }
        nb->next = b;
        a->head = b = nb;
        pad = align_pad((uintptr_t)((unsigned char *)b + ARENA_HEADER), align);
    }
    void *p = (unsigned char *)b + ARENA_HEADER + b->used + pad;
    b->used += pad + size;
    a->used += pad + size;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

void dk_arena_reset(dk_arena *a)
{
    if (!a) return;
    a->used = 0;
    if (a->fixed) return;
    if (a->head && !a->head->next) {
        a->head->used = 0;
        return;
    }
    size_t total = 0;
    for (arena_block *b = a->head; b; b = b->next) total += b->size;
    arena_free_blocks(a->head);
    /* If the coalesced block cannot be had, start over lazily at the next alloc. */
    a->head = arena_block_new(total > a->initial ? total : a->initial);
}

size_t dk_arena_used(const dk_arena *a)
{
    return a ? a->used : 0;
}

size_t dk_arena_peak(const dk_arena *a)
{
    return a ? a->peak : 0;
}
