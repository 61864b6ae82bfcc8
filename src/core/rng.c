/*
 * Philox 4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as
 * easy as 1, 2, 3", SC'11), a counter-based generator: block i of a stream is
 * philox(counter = (i, stream), key = seed). No state is carried between
 * values, so any worker can produce any value, and parallel fills are
 * identical for every thread count and schedule.
 */
#include <math.h>

#include "internal.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void dk_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

static void rng_block(const uint32_t key[2], uint64_t stream, uint64_t block, uint32_t out[4])
{
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                       (uint32_t)(stream >> 32)};
    dk_philox4x32(ctr, key, out);
}

void dk_rng_init(dk_rng *r, uint64_t seed, uint64_t stream)
{
    r->key[0] = (uint32_t)seed;
    r->key[1] = (uint32_t)(seed >> 32);
    r->stream = stream;
    r->block = 0;
    r->avail = 0;
}

void dk_rng_seek(dk_rng *r, uint64_t index)
{
    r->block = index / 4;
    rng_block(r->key, r->stream, r->block, r->buf);
    r->block++;
    r->avail = 4 - (int)(index % 4);
}

uint64_t dk_rng_stream_id(uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    /* Two Philox passes: (a, b) as counter under key c, then folded with d.
     * Philox is a bijection of the counter for a fixed key, so distinct (a, b)
     * never collide before the final 128 -> 64-bit fold. */
    uint32_t ctr[4] = {(uint32_t)a, (uint32_t)(a >> 32), (uint32_t)b, (uint32_t)(b >> 32)};
    uint32_t key[2] = {(uint32_t)c ^ 0x5851F42Du, (uint32_t)(c >> 32) ^ 0x4C957F2Du};
    uint32_t mid[4], out[4];
    dk_philox4x32(ctr, key, mid);
    uint32_t key2[2] = {(uint32_t)d ^ mid[2], (uint32_t)(d >> 32) ^ mid[3]};
    dk_philox4x32(mid, key2, out);
    return ((uint64_t)out[1] << 32) | out[0];
}

uint32_t dk_rng_u32(dk_rng *r)
{
    if (r->avail == 0) {
        rng_block(r->key, r->stream, r->block, r->buf);
        r->block++;
        r->avail = 4;
    }
    return r->buf[4 - r->avail--];
}

uint64_t dk_rng_u64(dk_rng *r)
{
    uint64_t lo = dk_rng_u32(r);
    return lo | ((uint64_t)dk_rng_u32(r) << 32);
}

float dk_rng_uniform(dk_rng *r)
{
    return (float)(dk_rng_u32(r) >> 8) * 0x1.0p-24f;
}

double dk_rng_uniform_f64(dk_rng *r)
{
    return (double)(dk_rng_u64(r) >> 11) * 0x1.0p-53;
}

float dk_rng_range(dk_rng *r, float lo, float hi)
{
    float v = lo + (hi - lo) * dk_rng_uniform(r);
    return v < hi ? v : lo;  /* rounding can reach hi; keep the interval half-open */
}

uint32_t dk_rng_below(dk_rng *r, uint32_t n)
{
    if (n == 0) return 0;
    /* Lemire's multiply-shift with rejection: unbiased, rarely loops. */
    uint64_t m = (uint64_t)dk_rng_u32(r) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (uint64_t)dk_rng_u32(r) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

float dk_rng_normal(dk_rng *r)
{
    /* u1 in (0, 1]: never log(0). */
    double u1 = ((double)dk_rng_u32(r) + 1.0) * 0x1.0p-32;
    double u2 = (double)dk_rng_u32(r) * 0x1.0p-32;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

typedef struct fill_ctx {
    uint64_t seed, stream, offset;
    void *out;
    int as_float;
} fill_ctx;

/* Philox over LANES consecutive blocks in structure-of-arrays form: the inner
 * loops have no dependencies between lanes, so the compiler turns them into
 * SIMD 32x32->64 multiplies. Same numbers as dk_philox4x32, block by block. */
#define LANES 16

__attribute__((target_clones("avx512f", "avx2", "default")))
static void philox_lanes(const uint32_t key[2], uint64_t stream, uint64_t block0,
                         uint32_t out[4 * LANES])
{
    uint32_t c0[LANES], c1[LANES], c2[LANES], c3[LANES];
    for (int i = 0; i < LANES; i++) {
        uint64_t b = block0 + (uint64_t)i;
        c0[i] = (uint32_t)b;
        c1[i] = (uint32_t)(b >> 32);
        c2[i] = (uint32_t)stream;
        c3[i] = (uint32_t)(stream >> 32);
    }
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        /* Kept a loop: at -O3 GCC would unroll it completely first and then
           fail to vectorize the 16 scalar copies. */
#pragma GCC unroll 1
        for (int i = 0; i < LANES; i++) {
            uint64_t p0 = (uint64_t)PHILOX_M0 * c0[i];
            uint64_t p1 = (uint64_t)PHILOX_M1 * c2[i];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[i] ^ k0;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[i] ^ k1;
            c1[i] = (uint32_t)p1;
            c3[i] = (uint32_t)p0;
            c0[i] = n0;
            c2[i] = n2;
        }
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    for (int i = 0; i < LANES; i++) {
        out[4 * i + 0] = c0[i];
        out[4 * i + 1] = c1[i];
        out[4 * i + 2] = c2[i];
        out[4 * i + 3] = c3[i];
    }
}

static inline void fill_put(const fill_ctx *f, int64_t i, uint32_t w)
{
    if (f->as_float)
        ((float *)f->out)[i] = (float)(w >> 8) * 0x1.0p-24f;
    else
        ((uint32_t *)f->out)[i] = w;
}

static void fill_range(void *arg, int64_t begin, int64_t end, int ith)
{
    (void)ith;
    const fill_ctx *f = arg;
    dk_rng r;
    dk_rng_init(&r, f->seed, f->stream);
    uint64_t word = f->offset + (uint64_t)begin;
    int64_t i = begin;
    /* Scalar up to a block boundary, then LANES blocks at a time, then the tail. */
    dk_rng_seek(&r, word);
    while (i < end && (word & 3)) {
        fill_put(f, i++, dk_rng_u32(&r));
        word++;
    }
    uint32_t blk[4 * LANES];
    while (end - i >= 4 * LANES) {
        if (f->as_float) {
            philox_lanes(r.key, f->stream, word / 4, blk);
            float *o = (float *)f->out + i;
            for (int k = 0; k < 4 * LANES; k++) o[k] = (float)(blk[k] >> 8) * 0x1.0p-24f;
        } else {
            philox_lanes(r.key, f->stream, word / 4, (uint32_t *)f->out + i);
        }
        i += 4 * LANES;
        word += 4 * LANES;
    }
    dk_rng_seek(&r, word);
    while (i < end) fill_put(f, i++, dk_rng_u32(&r));
}

static int rng_fill(dk_pool *pool, uint64_t seed, uint64_t stream, uint64_t offset, void *out,
                    int64_t n, int as_float, const char *func)
{
    if (n < 0 || (n > 0 && !out)) return dk__error(DK_EINVAL, func, "bad output (n = %lld)", (long long)n);
    fill_ctx f = {seed, stream, offset, out, as_float};
    return dk_pool_for(pool, n, 1 << 14, fill_range, &f);
}

int dk_rng_fill_u32(dk_pool *pool, uint64_t seed, uint64_t stream, uint64_t offset,
                    uint32_t *out, int64_t n)
{
    return rng_fill(pool, seed, stream, offset, out, n, 0, __func__);
}

int dk_rng_fill_uniform(dk_pool *pool, uint64_t seed, uint64_t stream, uint64_t offset,
                        float *out, int64_t n)
{
    return rng_fill(pool, seed, stream, offset, out, n, 1, __func__);
}
