/*
 * Tests of drivekit ragged: every op against a plain scalar reference on
 * random sizes (empty and size-1 samples included), assignment against
 * brute-force enumeration and a dual certificate, gradients against finite
 * differences, bad input, thread-count invariance and leaks.
 */
#include <float.h>

#include "dk_test.h"
#include "ragged/ragged_impl.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static dk_rng g_rng;

static int64_t rnd(int64_t n)   /* uniform in [0, n) */
{
    return n > 0 ? (int64_t)dk_rng_below(&g_rng, (uint32_t)n) : 0;
}

static double rndf(double lo, double hi)
{
    return lo + (hi - lo) * dk_rng_uniform_f64(&g_rng);
}

static dk_tensor tnew(dk_dtype dt, int nd, const int64_t *shape)
{
    dk_tensor t;
    if (dk_tensor_alloc(&t, dt, nd, shape) != DK_OK) abort();
    return t;
}

static float *F(const dk_tensor *t)
{
    return (float *)t->data;
}

static double *Dp(const dk_tensor *t)
{
    return (double *)t->data;
}

static int64_t *I(const dk_tensor *t)
{
    return (int64_t *)t->data;
}

static void fill_uniform(dk_tensor *t, double lo, double hi)
{
    int64_t n = dk_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == DK_F32)
            F(t)[i] = (float)rndf(lo, hi);
        else
            Dp(t)[i] = rndf(lo, hi);
    }
}

/* A borrowed ragged view. */
static dk_ragged rg(const dk_tensor *t, int nb, int dim, int64_t *sizes)
{
    dk_ragged r;
    memset(&r, 0, sizeof r);
    r.data = *t;
    r.data.owner = NULL;
    r.sizes = sizes;
    r.batch_dims = nb;
    r.dim = dim;
    return r;
}

static dk_pool *pool_of(int n)
{
    dk_pool_config c;
    dk_pool_config_init(&c);
    c.n_threads = n;
    dk_pool *p = NULL;
    if (dk_pool_create(&c, &p) != DK_OK) abort();
    return p;
}

/* ------------------------------------------------------------------------ */
/* Descriptor, mask, packed, combine                                         */

static void test_descriptor(void)
{
    int64_t live = dk_alloc_live();
    dk_ragged r;
    int64_t shape[3] = {3, 5, 2};
    DK_CHECK_OK(dk_ragged_alloc(&r, DK_F32, 3, shape, 1, 1));
    DK_CHECK_EQ_INT(dk_ragged_num_samples(&r), 3);
    DK_CHECK_EQ_INT(dk_ragged_max_size(&r), 5);
    r.sizes[0] = 2;
    r.sizes[1] = 0;
    r.sizes[2] = 5;
    DK_CHECK_OK(dk_ragged_validate(&r));
    DK_CHECK_EQ_INT(dk_ragged_total(&r), 7);
    DK_CHECK_EQ_INT(dk_ragged_size(&r, 2), 5);
    DK_CHECK_EQ_INT(dk_ragged_size(&r, 3), -1);
    int64_t off[4];
    DK_CHECK_OK(dk_ragged_offsets(&r, off));
    DK_CHECK(off[0] == 0 && off[1] == 2 && off[2] == 2 && off[3] == 7);
    for (int i = 0; i < 30; i++) F(&r.data)[i] = (float)i;
    dk_tensor v;
    DK_CHECK_OK(dk_ragged_sample(&r, 2, &v));
    DK_CHECK_EQ_INT(v.ndim, 2);
    DK_CHECK_EQ_INT(v.shape[0], 5);
    DK_CHECK_EQ_INT(F(&v)[0], 20);
    DK_CHECK_STATUS(dk_ragged_sample(&r, 3, &v), DK_ERANGE);

    int64_t ms[2] = {3, 5};
    dk_tensor mask = tnew(DK_BOOL, 2, ms);
    DK_CHECK_OK(dk_ragged_mask(NULL, &r, &mask));
    const uint8_t *m = mask.data;
    DK_CHECK(m[0] && m[1] && !m[2] && !m[5] && m[10] && m[14]);
    int64_t sz[3];
    DK_CHECK_OK(dk_ragged_sizes_from_mask(NULL, &mask, 1, sz));
    DK_CHECK(sz[0] == 2 && sz[1] == 0 && sz[2] == 5);
    ((uint8_t *)mask.data)[3] = 1;   /* a true after a false */
    DK_CHECK_STATUS(dk_ragged_sizes_from_mask(NULL, &mask, 1, sz), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "sample 0");

    DK_CHECK_OK(dk_ragged_set_padded(NULL, &r, -7.0));
    DK_CHECK_EQ_INT(F(&r.data)[4], -7);
    DK_CHECK_EQ_INT(F(&r.data)[3], 3);
    DK_CHECK_EQ_INT(F(&r.data)[10], -7);

    r.sizes[1] = 6;   /* beyond the padded dim */
    DK_CHECK_STATUS(dk_ragged_validate(&r), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "sample 1 has size 6");
    r.sizes[1] = -1;
    DK_CHECK_STATUS(dk_ragged_validate(&r), DK_ERANGE);
    r.sizes[1] = 0;
    r.dim = 0;
    DK_CHECK_STATUS(dk_ragged_validate(&r), DK_EINVAL);
    r.dim = 1;
    dk_tensor_release(&mask);
    dk_ragged_release(&r);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* Reference offset of element (s, a, k, f) of a C-contiguous (S, A, N, F). */
#define AT4(s, a, k, f) ((((s) * A + (a)) * N + (k)) * Fd + (f))

static void test_packed_and_combine(void)
{
    int64_t live = dk_alloc_live();
    dk_pool *pool = pool_of(2);
    for (int trial = 0; trial < 200; trial++) {
        int64_t S = 1 + rnd(4), A = 1 + rnd(3), N = rnd(5), Fd = 1 + rnd(3);
        int mid = rnd(2);   /* ragged dim after a middle dim, or right after batch */
        if (!mid) A = 1;
        int64_t shape[4] = {S, A, N, Fd}, sizes[4], total = 0;
        dk_tensor t = tnew(DK_F64, 4, shape);
        fill_uniform(&t, -1, 1);
        for (int64_t s = 0; s < S; s++) {
            sizes[s] = rnd(N + 1);
            total += sizes[s];
        }
        dk_tensor data = t;
        int dim = 2;
        if (!mid) {   /* drop the unit middle dim */
            data.ndim = 3;
            data.shape[1] = N; data.strides[1] = t.strides[2];
            data.shape[2] = Fd; data.strides[2] = t.strides[3];
            dim = 1;
        }
        dk_ragged r = rg(&data, 1, dim, sizes);
        int64_t pshape[3] = {total, A, Fd};
        if (!mid) { pshape[1] = Fd; }
        dk_tensor packed = tnew(DK_F64, mid ? 3 : 2, pshape);
        int64_t off[5];
        dk_ragged_packed pk = {packed, off, 0};
        DK_CHECK_OK(dk_ragged_to_packed(pool, &r, &pk));
        DK_CHECK_EQ_INT(pk.n_samples, S);
        DK_CHECK_EQ_INT(off[S], total);
        int64_t row = 0;
        for (int64_t s = 0; s < S; s++)
            for (int64_t k = 0; k < sizes[s]; k++, row++)
                for (int64_t a = 0; a < A; a++)
                    for (int64_t f = 0; f < Fd; f++)
                        DK_CHECK(Dp(&packed)[(row * A + a) * Fd + f] == Dp(&t)[AT4(s, a, k, f)]);
        /* back, with a filler */
        dk_tensor t2 = tnew(DK_F64, 4, shape);
        dk_tensor data2 = t2;
        if (!mid) {
            data2.ndim = 3;
            data2.shape[1] = N; data2.strides[1] = t2.strides[2];
            data2.shape[2] = Fd; data2.strides[2] = t2.strides[3];
        }
        int64_t sizes2[4];
        dk_ragged r2 = rg(&data2, 1, dim, sizes2);
        DK_CHECK_OK(dk_ragged_from_packed(pool, &pk, 9.5, &r2));
        for (int64_t s = 0; s < S; s++) {
            DK_CHECK_EQ_INT(sizes2[s], sizes[s]);
            for (int64_t a = 0; a < A; a++)
                for (int64_t k = 0; k < N; k++)
                    for (int64_t f = 0; f < Fd; f++)
                        DK_CHECK(Dp(&t2)[AT4(s, a, k, f)] ==
                                 (k < sizes[s] ? Dp(&t)[AT4(s, a, k, f)] : 9.5));
        }
        /* combine per-sample views back into a third batch */
        dk_tensor parts[4];
        for (int64_t s = 0; s < S; s++) DK_CHECK_OK(dk_ragged_sample(&r, s, &parts[s]));
        dk_tensor t3 = tnew(DK_F64, 4, shape);
        dk_tensor data3 = t3;
        if (!mid) {
            data3.ndim = 3;
            data3.shape[1] = N; data3.strides[1] = t3.strides[2];
            data3.shape[2] = Fd; data3.strides[2] = t3.strides[3];
        }
        int64_t sizes3[4];
        dk_ragged r3 = rg(&data3, 1, dim, sizes3);
        DK_CHECK_OK(dk_ragged_combine(pool, S, parts, dim - 1, 9.5, &r3));
        for (int64_t i = 0; i < S * A * N * Fd; i++) DK_CHECK(Dp(&t3)[i] == Dp(&t2)[i]);
        for (int64_t s = 0; s < S; s++) DK_CHECK_EQ_INT(sizes3[s], sizes[s]);
        /* errors */
        if (N > 0 && S > 1) {
            int64_t bad[5];
            memcpy(bad, off, sizeof bad);
            bad[1] = off[0] + N + 1;
            if (bad[1] <= bad[2]) {
                dk_ragged_packed bp = {packed, bad, S};
                DK_CHECK_STATUS(dk_ragged_from_packed(pool, &bp, 0, &r2), DK_ERANGE);
                DK_CHECK_CONTAINS(dk_errmsg(), "sample 0 has");
            }
        }
        dk_tensor_release(&t);
        dk_tensor_release(&t2);
        dk_tensor_release(&t3);
        dk_tensor_release(&packed);
    }
    /* mismatched parts */
    int64_t s1[2] = {2, 3}, s2[2] = {2, 4}, so[3] = {2, 4, 3};
    dk_tensor p[2] = {tnew(DK_F32, 2, s1), tnew(DK_F32, 2, s2)};
    dk_tensor o = tnew(DK_F32, 3, so);
    int64_t osz[2];
    dk_ragged ro = rg(&o, 1, 1, osz);
    DK_CHECK_STATUS(dk_ragged_combine(NULL, 2, p, 0, 0, &ro), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "part 1");
    dk_tensor_release(&p[0]);
    dk_tensor_release(&p[1]);
    dk_tensor_release(&o);
    dk_pool_destroy(pool);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* ------------------------------------------------------------------------ */
/* Indexing ops against scalar loops                                         */

static void test_index_ops(void)
{
    int64_t live = dk_alloc_live();
    dk_pool *pool = pool_of(3);
    for (int trial = 0; trial < 300; trial++) {
        dk_pool *p = trial % 2 ? pool : NULL;
        int64_t S = 1 + rnd(4), M = rnd(6), K = rnd(6), Fd = 1 + rnd(3), A = 1;
        int64_t ins[3] = {S, M, Fd}, outs[3] = {S, K, Fd}, idxs[2] = {S, K};
        dk_tensor in = tnew(DK_F32, 3, ins), out = tnew(DK_F32, 3, outs);
        dk_tensor idx = tnew(DK_I64, 2, idxs);
        fill_uniform(&in, -1, 1);
        int64_t insz[4], isz[4], osz[4];
        for (int64_t s = 0; s < S; s++) {
            insz[s] = rnd(M + 1);
            isz[s] = insz[s] ? rnd(K + 1) : 0;
            for (int64_t k = 0; k < K; k++) I(&idx)[s * K + k] = insz[s] ? rnd(insz[s]) : 0;
        }
        dk_ragged rin = rg(&in, 1, 1, insz), rout = rg(&out, 1, 1, osz), ridx = rg(&idx, 1, 1, isz);
        /* gather */
        DK_CHECK_OK(dk_ragged_index_access(p, &rin, &ridx, -3.0, &rout));
        int64_t N = K;
        for (int64_t s = 0; s < S; s++) {
            DK_CHECK_EQ_INT(osz[s], isz[s]);
            for (int64_t k = 0; k < K; k++)
                for (int64_t f = 0; f < Fd; f++) {
                    float want = k < isz[s] ? F(&in)[(s * M + I(&idx)[s * K + k]) * Fd + f] : -3.0f;
                    DK_CHECK(F(&out)[AT4(s, 0, k, f)] == want);
                }
        }
        /* its backward: scatter-add, repeats accumulate */
        dk_tensor gin = tnew(DK_F32, 3, ins);
        fill_uniform(&gin, 5, 6);   /* must be overwritten */
        dk_ragged rgin = rg(&gin, 1, 1, insz);
        DK_CHECK_OK(dk_ragged_index_access_backward(p, &rout, &ridx, &rgin));
        for (int64_t s = 0; s < S; s++)
            for (int64_t m = 0; m < M; m++)
                for (int64_t f = 0; f < Fd; f++) {
                    float want = 0;
                    for (int64_t k = 0; k < isz[s]; k++)
                        if (I(&idx)[s * K + k] == m) want += F(&out)[(s * K + k) * Fd + f];
                    DK_CHECK_NEAR(F(&gin)[(s * M + m) * Fd + f], want, 1e-6);
                }
        /* write with unique indices: a random permutation prefix */
        dk_tensor dst = tnew(DK_F32, 3, ins), ref = tnew(DK_F32, 3, ins);
        fill_uniform(&dst, -1, 1);
        memcpy(ref.data, dst.data, dk_tensor_nbytes(&dst));
        int64_t wsz[4];
        for (int64_t s = 0; s < S; s++) {
            int64_t perm[8];
            for (int64_t m = 0; m < M; m++) perm[m] = m;
            for (int64_t m = M - 1; m > 0; m--) {
                int64_t x = rnd(m + 1), tmp = perm[m];
                perm[m] = perm[x];
                perm[x] = tmp;
            }
            wsz[s] = rnd((K < M ? K : M) + 1);
            for (int64_t k = 0; k < wsz[s]; k++) I(&idx)[s * K + k] = perm[k];
            for (int64_t k = 0; k < wsz[s]; k++)
                for (int64_t f = 0; f < Fd; f++)
                    F(&ref)[(s * M + perm[k]) * Fd + f] = F(&out)[(s * K + k) * Fd + f];
        }
        dk_ragged rw = rg(&idx, 1, 1, wsz), rdst = rg(&dst, 1, 1, NULL);
        dk_ragged rsrc = rg(&out, 1, 1, NULL);
        DK_CHECK_OK(dk_ragged_index_write(p, &rsrc, &rw, &rdst));
        DK_CHECK(memcmp(dst.data, ref.data, dk_tensor_nbytes(&dst)) == 0);
        /* mapping src[s, idx] -> dst[s, idx'] with the same permutation both ways */
        DK_CHECK_OK(dk_ragged_index_map(p, &rdst, &rw, &rdst, &rw, DK_RAGGED_SET));
        DK_CHECK(memcmp(dst.data, ref.data, dk_tensor_nbytes(&dst)) == 0);
        /* fill at indices, masks from indices and back */
        DK_CHECK_OK(dk_ragged_index_fill(p, &rdst, &rw, 0.0));
        int64_t mshape[2] = {S, M};
        dk_tensor mask = tnew(DK_BOOL, 2, mshape);
        DK_CHECK_OK(dk_ragged_mask_from_indices(p, &rw, &mask));
        for (int64_t s = 0; s < S; s++)
            for (int64_t m = 0; m < M; m++) {
                int hit = 0;
                for (int64_t k = 0; k < wsz[s]; k++) hit |= I(&idx)[s * K + k] == m;
                DK_CHECK_EQ_INT(((uint8_t *)mask.data)[s * M + m], hit);
                for (int64_t f = 0; f < Fd; f++)
                    DK_CHECK(F(&dst)[(s * M + m) * Fd + f] == (hit ? 0.0f : F(&ref)[(s * M + m) * Fd + f]));
            }
        int64_t ishape[2] = {S, M > 0 ? M : 1}, cnt[4];
        dk_tensor ind = tnew(DK_I32, 2, ishape);
        dk_ragged rind = rg(&ind, 1, 1, cnt);
        DK_CHECK_OK(dk_ragged_indices_from_mask(p, &mask, 1, &rind));
        for (int64_t s = 0; s < S; s++) {
            DK_CHECK_EQ_INT(cnt[s], wsz[s]);
            int64_t j = 0;
            for (int64_t m = 0; m < M; m++)
                if (((uint8_t *)mask.data)[s * M + m]) DK_CHECK_EQ_INT(((int32_t *)ind.data)[s * ishape[1] + j++], m);
        }
        /* boolean select / write */
        int64_t bshape[3] = {S, M > 0 ? M : 1, Fd}, bsz[4];
        dk_tensor sel = tnew(DK_F32, 3, bshape);
        dk_ragged rsel = rg(&sel, 1, 1, bsz), rref = rg(&ref, 1, 1, NULL);
        DK_CHECK_OK(dk_ragged_bool_select(p, &rref, &mask, 0.0, &rsel));
        for (int64_t s = 0; s < S; s++) {
            DK_CHECK_EQ_INT(bsz[s], wsz[s]);
            int64_t j = 0;
            for (int64_t m = 0; m < M; m++)
                if (((uint8_t *)mask.data)[s * M + m]) {
                    for (int64_t f = 0; f < Fd; f++)
                        DK_CHECK(F(&sel)[(s * bshape[1] + j) * Fd + f] == F(&ref)[(s * M + m) * Fd + f]);
                    j++;
                }
        }
        DK_CHECK_OK(dk_ragged_bool_write(p, &rsel, &mask, &rdst));
        DK_CHECK(memcmp(dst.data, ref.data, dk_tensor_nbytes(&dst)) == 0);
        /* apply mask (invert), in place */
        dk_ragged rin_full = rg(&dst, 1, 1, NULL);
        DK_CHECK_OK(dk_ragged_apply_mask(p, &rin_full, &mask, 1, 2.5, &dst));
        for (int64_t s = 0; s < S; s++)
            for (int64_t m = 0; m < M; m++)
                for (int64_t f = 0; f < Fd; f++)
                    DK_CHECK(F(&dst)[(s * M + m) * Fd + f] ==
                             (((uint8_t *)mask.data)[s * M + m] ? 2.5f : F(&ref)[(s * M + m) * Fd + f]));
        /* sums and averages over the valid entries */
        int64_t sshape[2] = {S, Fd};
        dk_tensor sum = tnew(DK_F32, 2, sshape);
        for (int avg = 0; avg < 2; avg++) {
            DK_CHECK_OK(dk_ragged_sum(p, &rin, avg, 1, &sum));
            for (int64_t s = 0; s < S; s++)
                for (int64_t f = 0; f < Fd; f++) {
                    double acc = 0;
                    for (int64_t m = 0; m < insz[s]; m++) acc += F(&in)[(s * M + m) * Fd + f];
                    if (avg) acc = insz[s] ? acc / (double)insz[s] : 0;
                    DK_CHECK_NEAR(F(&sum)[s * Fd + f], acc, 1e-6);
                }
            DK_CHECK_OK(dk_ragged_sum_backward(p, &sum, avg, &rgin));
            for (int64_t s = 0; s < S; s++)
                for (int64_t m = 0; m < M; m++)
                    for (int64_t f = 0; f < Fd; f++) {
                        double g = m < insz[s] ? F(&sum)[s * Fd + f] : 0.0;
                        if (avg && m < insz[s]) g /= (double)insz[s];
                        DK_CHECK_NEAR(F(&gin)[(s * M + m) * Fd + f], g, 1e-6);
                    }
        }
        dk_tensor all[] = {in, out, idx, gin, dst, ref, mask, ind, sel, sum};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dk_tensor_release(&all[i]);
        (void)A;
    }
    dk_pool_destroy(pool);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_index_middle_dim(void)
{
    /* data (S=2, A=3, N=4, F=2) indexed along dim 2, with a strided source */
    int64_t live = dk_alloc_live();
    int64_t S = 2, A = 3, N = 4, Fd = 2, K = 3;
    int64_t bigshape[4] = {S, A, N, 2 * Fd};
    dk_tensor big = tnew(DK_F64, 4, bigshape);
    fill_uniform(&big, -1, 1);
    dk_tensor in = big;           /* every other trailing element */
    in.shape[3] = Fd;
    in.strides[3] = 2;
    int64_t idxs[2] = {S, K}, outs[4] = {S, A, K, Fd};
    dk_tensor idx = tnew(DK_I64, 2, idxs), out = tnew(DK_F64, 4, outs);
    int64_t isz[2] = {3, 1};
    int64_t iv[6] = {3, 0, 3, 2, 0, 0};
    memcpy(idx.data, iv, sizeof iv);
    dk_ragged rin = rg(&in, 1, 2, NULL), ridx = rg(&idx, 1, 1, isz), rout = rg(&out, 1, 2, NULL);
    DK_CHECK_OK(dk_ragged_index_access(NULL, &rin, &ridx, 0.0, &rout));
    for (int64_t s = 0; s < S; s++)
        for (int64_t a = 0; a < A; a++)
            for (int64_t k = 0; k < K; k++)
                for (int64_t f = 0; f < Fd; f++) {
                    double want = k < isz[s] ? Dp(&big)[((s * A + a) * N + iv[s * K + k]) * 2 * Fd + 2 * f] : 0;
                    DK_CHECK(Dp(&out)[((s * A + a) * K + k) * Fd + f] == want);
                }
    /* errors: index out of range, shape mismatch, repeated write */
    iv[1] = 4;
    memcpy(idx.data, iv, sizeof iv);
    DK_CHECK_STATUS(dk_ragged_index_access(NULL, &rin, &ridx, 0.0, &rout), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "sample 0, entry 1: index 4 outside [0, 4)");
    iv[1] = 3;
    memcpy(idx.data, iv, sizeof iv);
    dk_ragged rsrc = rg(&out, 1, 2, isz);
    DK_CHECK_STATUS(dk_ragged_index_write(NULL, &rsrc, &ridx, &rin), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "both write position 3");
    int64_t badshape[4] = {S, A + 1, K, Fd};
    dk_tensor bad = tnew(DK_F64, 4, badshape);
    dk_ragged rbad = rg(&bad, 1, 2, NULL);
    DK_CHECK_STATUS(dk_ragged_index_access(NULL, &rin, &ridx, 0.0, &rbad), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "between batch and indexed dim");
    int64_t idx3s[2] = {S + 1, K};
    dk_tensor idx3 = tnew(DK_I64, 2, idx3s);
    dk_ragged ridx3 = rg(&idx3, 1, 1, NULL);
    DK_CHECK_STATUS(dk_ragged_index_access(NULL, &rin, &ridx3, 0.0, &rout), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "batch shape");
    dk_tensor_release(&big);
    dk_tensor_release(&idx);
    dk_tensor_release(&out);
    dk_tensor_release(&bad);
    dk_tensor_release(&idx3);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* ------------------------------------------------------------------------ */
/* Assignment                                                                */

/* Brute force: minimum over injective maps from the smaller side. */
static double brute_lsa(const double *c, int r, int k)
{
    int small = r < k ? r : k, big = r < k ? k : r, tr = r > k;
    int pick[8], used[8] = {0};
    double best = INFINITY;
    /* depth-first enumeration */
    int depth = 0;
    pick[0] = -1;
    if (small == 0) return 0;
    while (depth >= 0) {
        if (pick[depth] >= 0) used[pick[depth]] = 0;
        int nx = pick[depth] + 1;
        while (nx < big && used[nx]) nx++;
        if (nx >= big) {
            depth--;
            continue;
        }
        pick[depth] = nx;
        used[nx] = 1;
        if (depth == small - 1) {
            double s = 0;
            for (int i = 0; i < small; i++) s += tr ? c[pick[i] * k + i] : c[i * k + pick[i]];
            if (s < best) best = s;
        } else {
            depth++;
            pick[depth] = -1;
        }
    }
    return best;
}

static void test_assign_bruteforce(void)
{
    int64_t live = dk_alloc_live();
    for (int trial = 0; trial < 2000; trial++) {
        int r = (int)rnd(7), k = (int)rnd(7);
        int64_t shape[2] = {r, k};
        dk_tensor c = tnew(DK_F64, 2, shape);
        int ties = trial % 3 == 0;
        for (int i = 0; i < r * k; i++) Dp(&c)[i] = ties ? (double)rnd(3) : rndf(-5, 5);
        int64_t ri[8], ci[8];
        double u[8], v[8], total = -1;
        DK_CHECK_OK(dk_ragged_assign_one(&c, ri, ci, u, v, &total));
        double want = brute_lsa(Dp(&c), r, k);
        DK_CHECK_NEAR(total, want, 1e-9 * (1 + fabs(want)));
        int mn = r < k ? r : k, usedr[8] = {0}, usedc[8] = {0};
        double s = 0;
        for (int i = 0; i < mn; i++) {
            DK_CHECK(ri[i] >= 0 && ri[i] < r && ci[i] >= 0 && ci[i] < k);
            DK_CHECK(!usedr[ri[i]] && !usedc[ci[i]]);
            usedr[ri[i]] = usedc[ci[i]] = 1;
            if (i) DK_CHECK(ri[i] > ri[i - 1]);
            s += Dp(&c)[ri[i] * k + ci[i]];
        }
        DK_CHECK_NEAR(s, total, 1e-12);
        dk_tensor_release(&c);
    }
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* Dual certificate in the original orientation. */
static void check_certificate(const double *c, int64_t r, int64_t k, const int64_t *ri,
                              const int64_t *ci, const double *u, const double *v)
{
    double scale = 1;
    for (int64_t i = 0; i < r * k; i++) scale = fmax(scale, fabs(c[i]));
    double tol = 1e-9 * scale * (double)(r + k);
    int64_t mn = r < k ? r : k;
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < k; j++) DK_CHECK(c[i * k + j] - u[i] - v[j] >= -tol);
    uint8_t *rowu = calloc((size_t)r + 1, 1), *colu = calloc((size_t)k + 1, 1);
    for (int64_t p = 0; p < mn; p++) {
        DK_CHECK(fabs(c[ri[p] * k + ci[p]] - u[ri[p]] - v[ci[p]]) <= tol);
        rowu[ri[p]] = colu[ci[p]] = 1;
    }
    /* the longer side's duals are <= 0 and 0 where unchosen */
    if (r <= k) {
        for (int64_t j = 0; j < k; j++) {
            DK_CHECK(v[j] <= tol);
            if (!colu[j]) DK_CHECK(fabs(v[j]) <= tol);
        }
    } else {
        for (int64_t i = 0; i < r; i++) {
            DK_CHECK(u[i] <= tol);
            if (!rowu[i]) DK_CHECK(fabs(u[i]) <= tol);
        }
    }
    free(rowu);
    free(colu);
}

static void test_assign_certificate(void)
{
    int64_t live = dk_alloc_live();
    const int64_t sizes[][2] = {{30, 200}, {200, 30}, {50, 50}, {1, 90}, {90, 1}, {80, 900}};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        for (int ties = 0; ties < 2; ties++) {
            int64_t r = sizes[t][0], k = sizes[t][1], mn = r < k ? r : k;
            dk_tensor c = tnew(DK_F64, 2, sizes[t]);
            for (int64_t i = 0; i < r * k; i++) Dp(&c)[i] = ties ? (double)rnd(4) : rndf(0, 10);
            int64_t *ri = malloc((size_t)mn * sizeof *ri), *ci = malloc((size_t)mn * sizeof *ci);
            double *u = malloc((size_t)r * sizeof *u), *v = malloc((size_t)k * sizeof *v), total;
            DK_CHECK_OK(dk_ragged_assign_one(&c, ri, ci, u, v, &total));
            check_certificate(Dp(&c), r, k, ri, ci, u, v);
            /* primal = dual objective */
            double dual = 0;
            for (int64_t i = 0; i < r; i++) dual += u[i];
            for (int64_t j = 0; j < k; j++) dual += v[j];
            DK_CHECK_NEAR(total, dual, 1e-8 * (1 + fabs(total)));
            free(ri);
            free(ci);
            free(u);
            free(v);
            dk_tensor_release(&c);
        }
    }
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* The sparse solver (candidate lists) must reproduce the dense one exactly:
 * same assignment, same potentials, bit for bit, with ties and conflicts. */
static void test_assign_sparse_equals_dense(void)
{
    int64_t live = dk_alloc_live();
    dk__lsa_ws a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    for (int trial = 0; trial < 400; trial++) {
        int64_t nr = rnd(40), nc = nr + rnd(300);
        int kind = trial % 4;   /* 0 uniform, 1 few values (ties), 2 shared favourites, 3 float */
        double *d = malloc((size_t)(nr * nc + 1) * sizeof *d);
        float *f = malloc((size_t)(nr * nc + 1) * sizeof *f);
        for (int64_t i = 0; i < nr; i++)
            for (int64_t j = 0; j < nc; j++) {
                double x = kind == 1 ? (double)rnd(3) : rndf(0, 10);
                if (kind == 2) x = (j < 5 ? 0.0 : 5.0) + rndf(0, 1);   /* every row wants 0..4 */
                d[i * nc + j] = x;
                f[i * nc + j] = (float)x;
            }
        dk__lsa_mat m = {kind == 3 ? f : NULL, kind == 3 ? NULL : d, nc};
        DK_CHECK_OK(dk__lsa_ws_reserve(&a, nr, nc));
        DK_CHECK_OK(dk__lsa_ws_reserve(&b, nr, nc));
        dk__lsa_dense(&m, nr, nc, &a);
        dk__lsa_sparse(&m, nr, nc, &b);
        DK_CHECK(memcmp(a.col4row, b.col4row, (size_t)nr * 8) == 0);
        DK_CHECK(memcmp(a.u, b.u, (size_t)nr * 8) == 0);
        DK_CHECK(memcmp(a.v, b.v, (size_t)nc * 8) == 0);
        free(d);
        free(f);
    }
    dk__lsa_ws_free(&a);
    dk__lsa_ws_free(&b);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_assign_batch_threads_errors(void)
{
    int64_t live = dk_alloc_live();
    enum { NS = 13 };
    dk_tensor costs[NS];
    int64_t pairs = 0;
    for (int i = 0; i < NS; i++) {
        int64_t shape[2] = {rnd(40), rnd(60)};
        if (i == 3) shape[0] = 0;
        if (i == 4) shape[1] = 1;
        costs[i] = tnew(i % 2 ? DK_F32 : DK_F64, 2, shape);
        fill_uniform(&costs[i], -3, 3);
        pairs += shape[0] < shape[1] ? shape[0] : shape[1];
    }
    int64_t *ri[3], *ci[3];
    double tot[3][NS];
    for (int p = 0; p < 3; p++) {
        dk_pool *pool = p ? pool_of(p + 1) : NULL;
        ri[p] = malloc((size_t)(pairs + 1) * sizeof(int64_t));
        ci[p] = malloc((size_t)(pairs + 1) * sizeof(int64_t));
        DK_CHECK_OK(dk_ragged_assign(pool, NS, costs, ri[p], ci[p], tot[p]));
        dk_pool_destroy(pool);
    }
    DK_CHECK(memcmp(ri[0], ri[1], (size_t)pairs * 8) == 0 && memcmp(ri[0], ri[2], (size_t)pairs * 8) == 0);
    DK_CHECK(memcmp(ci[0], ci[1], (size_t)pairs * 8) == 0 && memcmp(ci[0], ci[2], (size_t)pairs * 8) == 0);
    DK_CHECK(memcmp(tot[0], tot[1], sizeof tot[0]) == 0 && memcmp(tot[0], tot[2], sizeof tot[0]) == 0);
    int64_t off = 0;
    for (int i = 0; i < NS; i++) {   /* each sample equals its solo solve */
        int64_t r = costs[i].shape[0], k = costs[i].shape[1], mn = r < k ? r : k;
        int64_t a[64], b[64];
        double t;
        DK_CHECK_OK(dk_ragged_assign_one(&costs[i], a, b, NULL, NULL, &t));
        DK_CHECK(memcmp(a, ri[0] + off, (size_t)mn * 8) == 0 && t == tot[0][i]);
        off += mn;
    }
    /* non-finite costs name the sample and the entry */
    int bad = 5;
    while (costs[bad].shape[0] < 2 || costs[bad].shape[1] < 2) bad++;
    if (costs[bad].dtype == DK_F32)
        F(&costs[bad])[costs[bad].shape[1] + 1] = NAN;
    else
        Dp(&costs[bad])[costs[bad].shape[1] + 1] = NAN;
    dk_pool *pool = pool_of(2);
    DK_CHECK_STATUS(dk_ragged_assign(pool, NS, costs, ri[0], ci[0], NULL), DK_EINVAL);
    char want[64];
    snprintf(want, sizeof want, "sample %d: cost[1][1] is NaN", bad);
    DK_CHECK_CONTAINS(dk_errmsg(), want);
    Dp(&costs[0])[0] = INFINITY;
    if (dk_tensor_numel(&costs[0]) > 0) {
        DK_CHECK_STATUS(dk_ragged_assign(pool, NS, costs, ri[0], ci[0], NULL), DK_EINVAL);
        DK_CHECK_CONTAINS(dk_errmsg(), "sample 0: cost[0][0] is +inf");
    }
    /* padded form */
    int64_t pshape[3] = {3, 4, 5}, rows[3] = {4, 0, 2}, cols[3] = {5, 3, 1};
    dk_tensor pc = tnew(DK_F64, 3, pshape);
    fill_uniform(&pc, 0, 1);
    int64_t pr[12], pcix[12], np[3];
    double pt[3];
    DK_CHECK_OK(dk_ragged_assign_padded(pool, &pc, rows, cols, pr, pcix, np, pt));
    DK_CHECK(np[0] == 4 && np[1] == 0 && np[2] == 1 && pr[4] == -1 && pr[9] == -1);
    rows[1] = 5;
    DK_CHECK_STATUS(dk_ragged_assign_padded(pool, &pc, rows, cols, pr, pcix, np, pt), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "sample 1: rows = 5 outside [0, 4]");
    dk_pool_destroy(pool);
    dk_tensor_release(&pc);
    for (int p = 0; p < 3; p++) {
        free(ri[p]);
        free(ci[p]);
    }
    for (int i = 0; i < NS; i++) dk_tensor_release(&costs[i]);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* ------------------------------------------------------------------------ */
/* Losses: gradients against finite differences                              */

static void test_focal_loss(void)
{
    int64_t live = dk_alloc_live();
    int64_t shape[2] = {7, 4}, lshape[1] = {7};
    dk_tensor x = tnew(DK_F64, 2, shape), lab = tnew(DK_I64, 1, lshape);
    dk_tensor loss = tnew(DK_F64, 2, shape), grad = tnew(DK_F64, 2, shape);
    fill_uniform(&x, -4, 4);
    for (int i = 0; i < 7; i++) I(&lab)[i] = rnd(6) - 1;   /* -1 and 4 are background */
    for (int gi = 0; gi < 3; gi++) {
        double gamma = gi == 0 ? 2.0 : gi == 1 ? 0.0 : 1.5, sum;
        DK_CHECK_OK(dk_ragged_focal_loss(NULL, &x, &lab, 0.25, gamma, &loss, &grad, &sum));
        double acc = 0;
        for (int i = 0; i < 28; i++) {
            double xv = Dp(&x)[i], p = 1 / (1 + exp(-xv));
            int t = I(&lab)[i / 4] == i % 4;
            double pt = t ? p : 1 - p, at = t ? 0.25 : 0.75;
            double bce = -(t ? log(p) : log(1 - p));
            double want = at * pow(1 - pt, gamma) * bce;
            DK_CHECK_NEAR(Dp(&loss)[i], want, 1e-12);
            acc += want;
            double h = 1e-6, xp = xv + h, xm = xv - h;
            double pp = 1 / (1 + exp(-xp)), pm = 1 / (1 + exp(-xm));
            double fp = at * pow(1 - (t ? pp : 1 - pp), gamma) * -(t ? log(pp) : log(1 - pp));
            double fm = at * pow(1 - (t ? pm : 1 - pm), gamma) * -(t ? log(pm) : log(1 - pm));
            DK_CHECK_NEAR(Dp(&grad)[i], (fp - fm) / (2 * h), 1e-6);
        }
        DK_CHECK_NEAR(sum, acc, 1e-12);
    }
    DK_CHECK_STATUS(dk_ragged_focal_loss(NULL, &x, &lab, 0.25, -1, NULL, NULL, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_ragged_focal_loss(NULL, &x, &x, 0.25, 2, NULL, NULL, NULL), DK_EINVAL);
    dk_tensor all[] = {x, lab, loss, grad};
    for (int i = 0; i < 4; i++) dk_tensor_release(&all[i]);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* The pairwise costs and their backward, checked by central differences of
 * sum(cost * W) for a random W. */
static void test_costs_fd(void)
{
    int64_t live = dk_alloc_live();
    const int64_t S = 3, Q = 4, C = 3, N = 3, D = 5;
    int64_t xs[3] = {S, Q, C}, ls[2] = {S, N}, cs[3] = {S, Q, N}, ps[3] = {S, Q, D}, gs[3] = {S, N, D};
    int64_t nsz[3] = {3, 0, 1}, csz[3];
    dk_tensor x = tnew(DK_F64, 3, xs), lab = tnew(DK_I64, 2, ls), cost = tnew(DK_F64, 3, cs);
    dk_tensor w = tnew(DK_F64, 3, cs), gx = tnew(DK_F64, 3, xs);
    dk_tensor pred = tnew(DK_F64, 3, ps), gt = tnew(DK_F64, 3, gs), gp = tnew(DK_F64, 3, ps), gg = tnew(DK_F64, 3, gs);
    fill_uniform(&x, -3, 3);
    fill_uniform(&w, -1, 1);
    fill_uniform(&pred, -2, 2);
    fill_uniform(&gt, -2, 2);
    for (int i = 0; i < S * N; i++) I(&lab)[i] = rnd(C);
    dk_ragged rl = rg(&lab, 1, 1, nsz), rc = rg(&cost, 1, 2, csz), rw = rg(&w, 1, 2, nsz);
    dk_ragged rgt = rg(&gt, 1, 1, nsz);
    double cwt[5] = {1, 0.5, 2, 1, 0.25};
    for (int kind = 0; kind < 2; kind++) {
        double (*val)(void);
        (void)val;
        if (kind == 0) {
            DK_CHECK_OK(dk_ragged_focal_cost(NULL, &x, &rl, 0.25, 2.0, &rc));
            DK_CHECK_OK(dk_ragged_focal_cost_backward(NULL, &x, &rl, 0.25, 2.0, &rw, &gx));
        } else {
            DK_CHECK_OK(dk_ragged_box_l1_cost(NULL, &pred, &rgt, cwt, 4, &rc));
            DK_CHECK_OK(dk_ragged_box_l1_cost_backward(NULL, &pred, &rgt, cwt, 4, &rw, &gp, &gg));
        }
        for (int64_t s = 0; s < S; s++) {
            DK_CHECK_EQ_INT(csz[s], nsz[s]);
            for (int64_t q = 0; q < Q; q++)
                for (int64_t j = 0; j < N; j++) {
                    double want = 0;
                    if (j < nsz[s]) {
                        if (kind == 0) {
                            double xv = Dp(&x)[(s * Q + q) * C + I(&lab)[s * N + j]];
                            double p = 1 / (1 + exp(-xv));
                            want = -log(p + 1e-12) * 0.25 * (1 - p) * (1 - p) +
                                   log(1 - p + 1e-12) * 0.75 * p * p;
                        } else {
                            for (int k = 0; k < 4; k++)
                                want += cwt[k] * fabs(Dp(&pred)[(s * Q + q) * D + k] - Dp(&gt)[(s * N + j) * D + k]);
                        }
                    }
                    DK_CHECK_NEAR(Dp(&cost)[(s * Q + q) * N + j], want, 1e-12);
                }
        }
        /* finite differences of sum(cost * w) */
        dk_tensor *var = kind == 0 ? &x : &pred, *grad = kind == 0 ? &gx : &gp;
        for (int64_t i = 0; i < dk_tensor_numel(var); i++) {
            double h = 1e-6, keep = Dp(var)[i], f[2];
            for (int side = 0; side < 2; side++) {
                Dp(var)[i] = keep + (side ? -h : h);
                if (kind == 0)
                    dk_ragged_focal_cost(NULL, &x, &rl, 0.25, 2.0, &rc);
                else
                    dk_ragged_box_l1_cost(NULL, &pred, &rgt, cwt, 4, &rc);
                f[side] = 0;
                for (int64_t s = 0; s < S; s++)
                    for (int64_t q = 0; q < Q; q++)
                        for (int64_t j = 0; j < nsz[s]; j++)
                            f[side] += Dp(&cost)[(s * Q + q) * N + j] * Dp(&w)[(s * Q + q) * N + j];
            }
            Dp(var)[i] = keep;
            DK_CHECK_NEAR(Dp(grad)[i], (f[0] - f[1]) / (2 * h), 1e-5);
        }
        if (kind == 1)   /* d / d gt = -(d / d pred) summed over queries */
            for (int64_t s = 0; s < S; s++)
                for (int64_t j = 0; j < N; j++)
                    for (int k = 0; k < D; k++) {
                        double want = 0;
                        if (j < nsz[s] && k < 4)
                            for (int64_t q = 0; q < Q; q++) {
                                double d = Dp(&pred)[(s * Q + q) * D + k] - Dp(&gt)[(s * N + j) * D + k];
                                want -= Dp(&w)[(s * Q + q) * N + j] * cwt[k] * (d > 0 ? 1 : d < 0 ? -1 : 0);
                            }
                        DK_CHECK_NEAR(Dp(&gg)[(s * N + j) * D + k], want, 1e-12);
                    }
    }
    I(&lab)[1] = C;
    DK_CHECK_STATUS(dk_ragged_focal_cost(NULL, &x, &rl, 0.25, 2.0, &rc), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "sample 0, entry 1: class 3 outside [0, 3)");
    dk_tensor all[] = {x, lab, cost, w, gx, pred, gt, gp, gg};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dk_tensor_release(&all[i]);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

static void test_l1_and_giou_fd(void)
{
    int64_t live = dk_alloc_live();
    /* L1 and smooth L1 on a ragged (S, N, D) batch */
    int64_t shape[3] = {3, 4, 3}, sizes[3] = {4, 0, 2};
    dk_tensor p = tnew(DK_F64, 3, shape), t = tnew(DK_F64, 3, shape), l = tnew(DK_F64, 3, shape), g = tnew(DK_F64, 3, shape);
    fill_uniform(&p, -1, 1);
    fill_uniform(&t, -1, 1);
    double cw[3] = {1, 0.2, 3};
    dk_ragged rp = rg(&p, 1, 1, sizes);
    for (int smooth = 0; smooth < 2; smooth++) {
        double beta = smooth ? 0.5 : 0.0, sum;
        DK_CHECK_OK(dk_ragged_l1_loss(NULL, &rp, &t, cw, beta, &l, &g, &sum));
        double acc = 0;
        for (int s = 0; s < 3; s++)
            for (int n = 0; n < 4; n++)
                for (int k = 0; k < 3; k++) {
                    int i = (s * 4 + n) * 3 + k;
                    double d = fabs(Dp(&p)[i] - Dp(&t)[i]), want = 0;
                    if (n < sizes[s]) want = cw[k] * (smooth && d < beta ? 0.5 * d * d / beta : d - 0.5 * beta);
                    DK_CHECK_NEAR(Dp(&l)[i], want, 1e-12);
                    acc += want;
                    if (n >= sizes[s]) DK_CHECK(Dp(&g)[i] == 0);
                }
        DK_CHECK_NEAR(sum, acc, 1e-12);
        for (int i = 0; i < 36; i++) {
            double h = 1e-7, keep = Dp(&p)[i], fp, fm;
            Dp(&p)[i] = keep + h;
            dk_ragged_l1_loss(NULL, &rp, &t, cw, beta, NULL, NULL, &fp);
            Dp(&p)[i] = keep - h;
            dk_ragged_l1_loss(NULL, &rp, &t, cw, beta, NULL, NULL, &fm);
            Dp(&p)[i] = keep;
            DK_CHECK_NEAR(Dp(&g)[i], (fp - fm) / (2 * h), 1e-5);
        }
    }
    /* GIoU: pairwise and aligned, values vs a direct formula, grads vs FD */
    int64_t as[3] = {2, 3, 4}, bs[3] = {2, 3, 4}, os[3] = {2, 3, 3}, al[2] = {2, 3};
    int64_t asz[2] = {3, 1}, bsz[2] = {2, 1};
    dk_tensor a = tnew(DK_F64, 3, as), b = tnew(DK_F64, 3, bs), o = tnew(DK_F64, 3, os), w = tnew(DK_F64, 3, os);
    dk_tensor ga = tnew(DK_F64, 3, as), gb = tnew(DK_F64, 3, bs), oa = tnew(DK_F64, 2, al), wa = tnew(DK_F64, 2, al);
    for (int i = 0; i < 6; i++) {
        double x = rndf(0, 4), y = rndf(0, 4);
        Dp(&a)[4 * i] = x; Dp(&a)[4 * i + 1] = y; Dp(&a)[4 * i + 2] = x + rndf(0.5, 3); Dp(&a)[4 * i + 3] = y + rndf(0.5, 3);
        x = rndf(0, 4); y = rndf(0, 4);
        Dp(&b)[4 * i] = x; Dp(&b)[4 * i + 1] = y; Dp(&b)[4 * i + 2] = x + rndf(0.5, 3); Dp(&b)[4 * i + 3] = y + rndf(0.5, 3);
    }
    fill_uniform(&w, -1, 1);
    fill_uniform(&wa, -1, 1);
    dk_ragged ra = rg(&a, 1, 1, asz), rb = rg(&b, 1, 1, bsz);
    DK_CHECK_OK(dk_ragged_giou(NULL, &ra, &rb, 0, &o));
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                double want = 0;
                if (i < asz[s] && j < bsz[s]) {
                    const double *A = Dp(&a) + (s * 3 + i) * 4, *B = Dp(&b) + (s * 3 + j) * 4;
                    double iw = fmax(0, fmin(A[2], B[2]) - fmax(A[0], B[0])), ih = fmax(0, fmin(A[3], B[3]) - fmax(A[1], B[1]));
                    double inter = iw * ih, uni = (A[2] - A[0]) * (A[3] - A[1]) + (B[2] - B[0]) * (B[3] - B[1]) - inter;
                    double enc = (fmax(A[2], B[2]) - fmin(A[0], B[0])) * (fmax(A[3], B[3]) - fmin(A[1], B[1]));
                    want = inter / uni - (enc - uni) / enc;
                }
                DK_CHECK_NEAR(Dp(&o)[(s * 3 + i) * 3 + j], want, 1e-12);
            }
    DK_CHECK_OK(dk_ragged_giou_backward(NULL, &ra, &rb, 0, &w, &ga, &gb));
    for (int which = 0; which < 2; which++) {
        dk_tensor *v = which ? &b : &a, *gv = which ? &gb : &ga;
        for (int i = 0; i < 24; i++) {
            double h = 1e-7, keep = Dp(v)[i], f[2];
            for (int side = 0; side < 2; side++) {
                Dp(v)[i] = keep + (side ? -h : h);
                dk_ragged_giou(NULL, &ra, &rb, 0, &o);
                f[side] = 0;
                for (int k = 0; k < 18; k++) f[side] += Dp(&o)[k] * Dp(&w)[k];
            }
            Dp(v)[i] = keep;
            DK_CHECK_NEAR(Dp(gv)[i], (f[0] - f[1]) / (2 * h), 1e-5);
        }
    }
    int64_t esz[2] = {2, 1};
    dk_ragged rea = rg(&a, 1, 1, esz), reb = rg(&b, 1, 1, esz);
    DK_CHECK_OK(dk_ragged_giou(NULL, &rea, &reb, 1, &oa));
    DK_CHECK_OK(dk_ragged_giou_backward(NULL, &rea, &reb, 1, &wa, &ga, &gb));
    for (int i = 0; i < 24; i++) {
        double h = 1e-7, keep = Dp(&a)[i], f[2];
        for (int side = 0; side < 2; side++) {
            Dp(&a)[i] = keep + (side ? -h : h);
            dk_ragged_giou(NULL, &rea, &reb, 1, &oa);
            f[side] = 0;
            for (int s = 0; s < 2; s++)
                for (int k = 0; k < esz[s]; k++) f[side] += Dp(&oa)[s * 3 + k] * Dp(&wa)[s * 3 + k];
        }
        Dp(&a)[i] = keep;
        DK_CHECK_NEAR(Dp(&ga)[i], (f[0] - f[1]) / (2 * h), 1e-5);
    }
    DK_CHECK_STATUS(dk_ragged_giou(NULL, &ra, &rb, 1, &oa), DK_EINVAL);   /* sizes differ */
    dk_tensor all[] = {p, t, l, g, a, b, o, w, ga, gb, oa, wa};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dk_tensor_release(&all[i]);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* ------------------------------------------------------------------------ */
/* The fused set criterion against a double-precision scalar reference       */

typedef struct detr_ref {
    double cls, box;
    double *gcls, *gbox;
    int suboptimal;            /* a given match costing more than the optimum */
} detr_ref;

static void detr_reference(int64_t L, int64_t B, int64_t Q, int64_t C, int64_t D, const float *x,
                           const float *bp, const int64_t *lab, const float *gt, const int64_t *n,
                           int64_t N, const dk_detr3d_config *cfg, const int64_t *given,
                           detr_ref *out)
{
    const double a = cfg->alpha, gm = cfg->gamma, wc = cfg->cls_weight, wr = cfg->reg_weight;
    const double *cw = cfg->code_weights;
    int64_t K = cfg->match_codes < D ? cfg->match_codes : D;
    int64_t npos = 0;
    for (int64_t b = 0; b < B; b++) npos += n[b] < Q ? n[b] : Q;
    double den = npos ? (double)npos : 1.0;
    out->cls = out->box = 0;
    out->suboptimal = 0;
    for (int64_t l = 0; l < L; l++) {
        for (int64_t b = 0; b < B; b++) {
            const float *xb = x + (l * B + b) * Q * C, *pb = bp + (l * B + b) * Q * D;
            double *gx = out->gcls + (l * B + b) * Q * C, *gp = out->gbox + (l * B + b) * Q * D;
            int64_t nb = n[b];
            int64_t *match = malloc((size_t)(Q + 1) * sizeof *match);
            for (int64_t q = 0; q < Q; q++) match[q] = -1;
            if (nb > 0) {
                int64_t shp[2] = {Q, nb};
                dk_tensor c = tnew(DK_F64, 2, shp);
                for (int64_t q = 0; q < Q; q++)
                    for (int64_t j = 0; j < nb; j++) {
                        double xv = xb[q * C + lab[b * N + j]], p = 1 / (1 + exp(-xv));
                        /* 1 - p without cancellation for large logits */
                        double q1 = 1 / (1 + exp(xv));
                        double fc = -log(p + 1e-12) * a * pow(q1, gm) + log(q1 + 1e-12) * (1 - a) * pow(p, gm);
                        double l1 = 0;
                        for (int64_t k = 0; k < K; k++) l1 += fabs(pb[q * D + k] - gt[(b * N + j) * D + k]);
                        Dp(&c)[q * nb + j] = wc * fc + wr * l1;
                    }
                int64_t ri[256], ci[256];
                double best;
                dk_ragged_assign_one(&c, ri, ci, NULL, NULL, &best);
                for (int64_t k = 0; k < (Q < nb ? Q : nb); k++) match[ri[k]] = ci[k];
                if (given) {
                    /* Equally optimal assignments exist (L1 costs tie exactly):
                       take the given one if it is optimal. */
                    double got = 0;
                    int64_t cnt = 0;
                    for (int64_t q = 0; q < Q; q++) {
                        int64_t j = given[(l * B + b) * Q + q];
                        if (j >= 0) {
                            got += Dp(&c)[q * nb + j];
                            cnt++;
                        }
                    }
                    if (cnt != (Q < nb ? Q : nb) || fabs(got - best) > 1e-5 * (1 + fabs(best)))
                        out->suboptimal = 1;
                    for (int64_t q = 0; q < Q; q++) match[q] = given[(l * B + b) * Q + q];
                }
                dk_tensor_release(&c);
            }
            for (int64_t q = 0; q < Q; q++) {
                for (int64_t c = 0; c < C; c++) {
                    double xv = xb[q * C + c], p = 1 / (1 + exp(-xv)), q1 = 1 / (1 + exp(xv));
                    double lp = -log1p(exp(-xv)), lq = -log1p(exp(xv));   /* log p, log(1 - p) */
                    if (xv > 30) lq = -xv;
                    if (xv < -30) lp = xv;
                    int t = match[q] >= 0 && lab[b * N + match[q]] == c;
                    double loss = t ? -a * pow(q1, gm) * lp : -(1 - a) * pow(p, gm) * lq;
                    double g = t ? a * pow(q1, gm) * (gm * p * lp - q1)
                                 : (1 - a) * pow(p, gm) * (p - gm * q1 * lq);
                    out->cls += wc * loss / den;
                    gx[q * C + c] = wc * g / den;
                }
                for (int64_t k = 0; k < D; k++) {
                    gp[q * D + k] = 0;
                    if (match[q] < 0) continue;
                    double d = pb[q * D + k] - gt[(b * N + match[q]) * D + k];
                    out->box += wr * cw[k] * fabs(d) / den;
                    gp[q * D + k] = wr * cw[k] * (d > 0 ? 1 : d < 0 ? -1 : 0) / den;
                }
            }
            free(match);
        }
    }
}

static void test_detr3d(void)
{
    int64_t live = dk_alloc_live();
    dk_pool *pools[3] = {NULL, pool_of(2), pool_of(3)};
    for (int trial = 0; trial < 120; trial++) {
        int64_t L = 1 + rnd(3), B = 1 + rnd(4), Q = 1 + rnd(12), C = 1 + rnd(5), D = 1 + rnd(10);
        int64_t n[8], N = 0;
        for (int64_t b = 0; b < B; b++) {
            n[b] = rnd(Q + 4);   /* sometimes more boxes than queries */
            if (trial % 5 == 0) n[b] = b % 2;   /* empty and size-1 samples */
            if (n[b] > N) N = n[b];
        }
        int64_t xs[4] = {L, B, Q, C}, bs[4] = {L, B, Q, D}, ls[2] = {B, N}, gs[3] = {B, N, D};
        dk_tensor x = tnew(DK_F32, 4, xs), bp = tnew(DK_F32, 4, bs), lab = tnew(DK_I64, 2, ls), gt = tnew(DK_F32, 3, gs);
        /* every fourth trial has extreme logits (the guarded tails) */
        double xr = trial % 4 == 3 ? 25 : 3;
        fill_uniform(&x, -xr, xr);
        fill_uniform(&bp, -2, 2);
        fill_uniform(&gt, -2, 2);
        for (int64_t i = 0; i < B * N; i++) I(&lab)[i] = rnd(C);
        double cw[10];
        for (int k = 0; k < 10; k++) cw[k] = k < 8 ? 1.0 : 0.2;
        dk_detr3d_config cfg;
        dk_ragged_detr3d_config_init(&cfg);
        cfg.code_weights = cw;
        if (trial % 3 == 1) {   /* other parameters, the general-gamma kernel */
            cfg.gamma = 1.5;
            cfg.alpha = 0.4;
            cfg.cls_weight = 1.0;
            cfg.reg_weight = 0.5;
            cfg.match_codes = 3;
        }
        dk_ragged rl = rg(&lab, 1, 1, n), rgt = rg(&gt, 1, 1, NULL);
        detr_ref ref;
        ref.gcls = malloc((size_t)(L * B * Q * C) * sizeof(double));
        ref.gbox = malloc((size_t)(L * B * Q * D) * sizeof(double));
        dk_tensor gx[3], gb[3];
        double lc[3], lb[3];
        int64_t *match[3];
        for (int p = 0; p < 3; p++) {
            gx[p] = tnew(DK_F32, 4, xs);
            gb[p] = tnew(DK_F32, 4, bs);
            match[p] = malloc((size_t)(L * B * Q + 1) * sizeof(int64_t));
            DK_CHECK_OK(dk_ragged_detr3d_loss(pools[p], &cfg, &x, &bp, &rl, &rgt, &lc[p], &lb[p], NULL,
                                              &gx[p], &gb[p], match[p]));
        }
        detr_reference(L, B, Q, C, D, F(&x), F(&bp), I(&lab), F(&gt), n, N, &cfg, match[0], &ref);
        DK_CHECK(!ref.suboptimal);
        for (int p = 1; p < 3; p++) DK_CHECK(memcmp(match[p], match[0], (size_t)(L * B * Q) * 8) == 0);
        for (int p = 0; p < 3; p++) free(match[p]);
        DK_CHECK_NEAR(lc[0], ref.cls, 2e-5 * (1 + ref.cls));
        DK_CHECK_NEAR(lb[0], ref.box, 2e-5 * (1 + ref.box));
        for (int64_t i = 0; i < L * B * Q * C; i++)
            DK_CHECK_NEAR(F(&gx[0])[i], ref.gcls[i], 2e-6 + 2e-5 * fabs(ref.gcls[i]));
        for (int64_t i = 0; i < L * B * Q * D; i++) DK_CHECK_NEAR(F(&gb[0])[i], ref.gbox[i], 1e-6);
        for (int p = 1; p < 3; p++) {   /* bit-identical for any pool */
            DK_CHECK(lc[p] == lc[0] && lb[p] == lb[0]);
            DK_CHECK(memcmp(gx[p].data, gx[0].data, dk_tensor_nbytes(&gx[0])) == 0);
            DK_CHECK(memcmp(gb[p].data, gb[0].data, dk_tensor_nbytes(&gb[0])) == 0);
        }
        free(ref.gcls);
        free(ref.gbox);
        for (int p = 0; p < 3; p++) {
            dk_tensor_release(&gx[p]);
            dk_tensor_release(&gb[p]);
        }
        /* bad input */
        if (N > 0) {
            int64_t b0 = 0;
            while (n[b0] == 0) b0++;
            I(&lab)[b0 * N] = C;
            DK_CHECK_STATUS(dk_ragged_detr3d_loss(NULL, &cfg, &x, &bp, &rl, &rgt, &lc[0], &lb[0], NULL, NULL, NULL, NULL), DK_ERANGE);
            DK_CHECK_CONTAINS(dk_errmsg(), "class");
            I(&lab)[b0 * N] = 0;
            F(&x)[(L - 1) * B * Q * C + b0 * Q * C] = NAN;
            DK_CHECK_STATUS(dk_ragged_detr3d_loss(pools[1], &cfg, &x, &bp, &rl, &rgt, &lc[0], &lb[0], NULL, NULL, NULL, NULL), DK_EINVAL);
            char want[64];
            snprintf(want, sizeof want, "layer %lld, sample %lld", (long long)(L - 1), (long long)b0);
            DK_CHECK_CONTAINS(dk_errmsg(), want);
            int64_t save = n[b0];
            n[b0] = N + 1;
            DK_CHECK_STATUS(dk_ragged_detr3d_loss(NULL, &cfg, &x, &bp, &rl, &rgt, &lc[0], &lb[0], NULL, NULL, NULL, NULL), DK_ERANGE);
            n[b0] = save;
        }
        dk_tensor all[] = {x, bp, lab, gt};
        for (int i = 0; i < 4; i++) dk_tensor_release(&all[i]);
    }
    for (int p = 0; p < 3; p++) dk_pool_destroy(pools[p]);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

/* ------------------------------------------------------------------------ */
/* Heatmaps                                                                  */

static void ref_draw(float *hm, int64_t H, int64_t W, int64_t x, int64_t y, int64_t r, double k)
{
    int64_t d = 2 * r + 1;
    double sigma = (double)d / 6.0;
    int64_t left = x < r ? x : r, right = W - x < r + 1 ? W - x : r + 1;
    int64_t top = y < r ? y : r, bottom = H - y < r + 1 ? H - y : r + 1;
    for (int64_t yy = y - top; yy < y + bottom; yy++)
        for (int64_t xx = x - left; xx < x + right; xx++) {
            double dy = (double)(yy - y), dx = (double)(xx - x);
            double g = exp(-(dx * dx + dy * dy) / (2 * sigma * sigma));
            if (g < DBL_EPSILON) g = 0;
            float v = (float)g * (float)k;
            if (v > hm[yy * W + xx]) hm[yy * W + xx] = v;
        }
}

static void test_heatmap(void)
{
    int64_t live = dk_alloc_live();
    /* radius: the bound of CenterNet's three cases, spot values */
    double r = dk_ragged_gaussian_radius(10, 20, 0.7);
    DK_CHECK(r > 0 && r < 10);
    DK_CHECK(dk_ragged_gaussian_radius(0, 20, 0.7) == 0);
    const int64_t S = 3, C = 2, H = 9, W = 11, N = 5;
    int64_t hs[4] = {S, C, H, W}, cs[3] = {S, N, 2}, rs[2] = {S, N}, n[3] = {5, 0, 3};
    dk_tensor hm = tnew(DK_F32, 4, hs), ctr = tnew(DK_I64, 3, cs), rad = tnew(DK_I64, 2, rs), lab = tnew(DK_I64, 2, rs);
    float *ref = calloc((size_t)(S * C * H * W), sizeof(float));
    for (int64_t s = 0; s < S; s++)
        for (int64_t i = 0; i < N; i++) {
            int64_t x = rnd(W + 2) - 1, y = rnd(H + 2) - 1, rr = rnd(4), c = rnd(C);
            I(&ctr)[(s * N + i) * 2] = x;
            I(&ctr)[(s * N + i) * 2 + 1] = y;
            I(&rad)[s * N + i] = rr;
            I(&lab)[s * N + i] = c;
            if (i < n[s] && x >= 0 && y >= 0 && x < W && y < H)
                ref_draw(ref + (s * C + c) * H * W, H, W, x, y, rr, 0.9);
        }
    dk_ragged rc = rg(&ctr, 1, 1, n), rr = rg(&rad, 1, 1, NULL), rl = rg(&lab, 1, 1, NULL);
    dk_pool *pool = pool_of(2);
    DK_CHECK_OK(dk_ragged_draw_gaussians(pool, &hm, &rc, &rr, &rl, 6.0, 0.9));
    DK_CHECK(memcmp(hm.data, ref, dk_tensor_nbytes(&hm)) == 0);
    I(&rad)[0] = -1;
    DK_CHECK_STATUS(dk_ragged_draw_gaussians(pool, &hm, &rc, &rr, &rl, 6.0, 0.9), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "sample 0, object 0");
    dk_pool_destroy(pool);
    free(ref);
    dk_tensor all[] = {hm, ctr, rad, lab};
    for (int i = 0; i < 4; i++) dk_tensor_release(&all[i]);
    DK_CHECK_EQ_INT(dk_alloc_live(), live);
}

int main(int argc, char **argv)
{
    dk_rng_init(&g_rng, 20240611, 0);
    static const dk_test_case cases[] = {
        DK_TEST(test_descriptor),
        DK_TEST(test_packed_and_combine),
        DK_TEST(test_index_ops),
        DK_TEST(test_index_middle_dim),
        DK_TEST(test_assign_bruteforce),
        DK_TEST(test_assign_certificate),
        DK_TEST(test_assign_sparse_equals_dense),
        DK_TEST(test_assign_batch_threads_errors),
        DK_TEST(test_focal_loss),
        DK_TEST(test_costs_fd),
        DK_TEST(test_l1_and_giou_fd),
        DK_TEST(test_detr3d),
        DK_TEST(test_heatmap),
    };
    return dk_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
