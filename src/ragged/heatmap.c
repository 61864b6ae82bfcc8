/*
 * Gaussian heatmaps for centre-based heads (CenterNet, CenterPoint): the
 * radius bound and max-combined Gaussians per object. Max-combining makes the
 * result independent of drawing order, so samples are drawn in parallel.
 */
#include <float.h>
#include <math.h>

#include "ragged_impl.h"

/* CenterNet's bound: the largest shift of a box corner pair that keeps IoU >=
 * min_overlap, in the three configurations (both corners inside, both
 * outside, one each); each is a root of a quadratic a r^2 - b r + c = 0,
 * taken as (b + sqrt(b^2 - 4ac)) / 2 as the reference implementation does. */
double dk_ragged_gaussian_radius(double height, double width, double min_overlap)
{
    if (!(height > 0) || !(width > 0)) return 0.0;
    double b1 = height + width;
    double c1 = width * height * (1 - min_overlap) / (1 + min_overlap);
    double r1 = (b1 + sqrt(b1 * b1 - 4 * c1)) / 2;
    double b2 = 2 * (height + width);
    double c2 = (1 - min_overlap) * width * height;
    double r2 = (b2 + sqrt(b2 * b2 - 16 * c2)) / 2;
    double a3 = 4 * min_overlap;
    double b3 = -2 * min_overlap * (height + width);
    double c3 = (min_overlap - 1) * width * height;
    double r3 = (b3 + sqrt(b3 * b3 - 4 * a3 * c3)) / 2;
    double r = r1 < r2 ? r1 : r2;
    return r < r3 ? r : r3;
}

typedef struct heat_job {
    dk__rv hm, ctr, rad, lab;
    const dk_tensor *heat;
    int has_lab, nb;
    double factor, k;
} heat_job;

static int64_t load_int(const dk__rv *v, int64_t off)
{
    switch (v->dtype) {
    case DK_I64: return ((const int64_t *)(const void *)v->base)[off];
    case DK_I32: return ((const int32_t *)(const void *)v->base)[off];
    case DK_F32: return (int64_t)((const float *)(const void *)v->base)[off];
    default: return (int64_t)((const double *)(const void *)v->base)[off];
    }
}

static void heat_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const heat_job *j = ctx;
    const dk_tensor *h = j->heat;
    int nd = h->ndim;
    int64_t H = h->shape[nd - 2], W = h->shape[nd - 1];
    int64_t sh = h->strides[nd - 2], sw = h->strides[nd - 1];
    int64_t sc = j->has_lab ? h->strides[nd - 3] : 0;
    for (int64_t s = b; s < e; s++) {
        int64_t n = dk__rv_size(&j->ctr, s);
        int64_t hs = dk__rv_soff(&j->hm, s), cs = dk__rv_soff(&j->ctr, s);
        int64_t rs = dk__rv_soff(&j->rad, s), ls = j->has_lab ? dk__rv_soff(&j->lab, s) : 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t co = cs + i * j->ctr.nstride;
            int64_t x = load_int(&j->ctr, co + dk__blk_off(&j->ctr, 0));
            int64_t y = load_int(&j->ctr, co + dk__blk_off(&j->ctr, 1));
            int64_t r = load_int(&j->rad, rs + i * j->rad.nstride);
            if (x < 0 || y < 0 || x >= W || y >= H) continue;
            int64_t plane = hs + (j->has_lab ? load_int(&j->lab, ls + i * j->lab.nstride) * sc : 0);
            double d = (double)(2 * r + 1), sigma = d / j->factor;
            double inv = 1.0 / (2 * sigma * sigma);
            int64_t left = x < r ? x : r, right = W - x < r + 1 ? W - x : r + 1;
            int64_t top = y < r ? y : r, bottom = H - y < r + 1 ? H - y : r + 1;
            for (int64_t dy = -top; dy < bottom; dy++) {
                for (int64_t dx = -left; dx < right; dx++) {
                    double g = exp(-(double)(dx * dx + dy * dy) * inv);
                    if (g < DBL_EPSILON) g = 0;   /* the peak is exp(0) = 1 */
                    int64_t o = plane + (y + dy) * sh + (x + dx) * sw;
                    if (h->dtype == DK_F32) {
                        float *p = (float *)h->data + o;
                        float v = (float)g * (float)j->k;
                        if (v > *p) *p = v;
                    } else {
                        double *p = (double *)h->data + o;
                        double v = g * j->k;
                        if (v > *p) *p = v;
                    }
                }
            }
        }
    }
}

int dk_ragged_draw_gaussians(dk_pool *pool, dk_tensor *heatmaps, const dk_ragged *centers,
                             const dk_ragged *radii, const dk_ragged *labels,
                             double diameter_to_sigma, double k)
{
    static const char *func = "dk_ragged_draw_gaussians";
    heat_job j;
    memset(&j, 0, sizeof j);
    if (!heatmaps || !centers || !radii) return dk__error(DK_EINVAL, func, "NULL argument");
    if (heatmaps->dtype != DK_F32 && heatmaps->dtype != DK_F64)
        return dk__error(DK_EUNSUPPORTED, func, "heatmaps must be float32 or float64, not %s",
                         dk_dtype_name(heatmaps->dtype));
    if (!(diameter_to_sigma > 0) || !isfinite(diameter_to_sigma) || !isfinite(k))
        return dk__error(DK_EINVAL, func, "diameter_to_sigma = %g must be > 0 and k = %g finite",
                         diameter_to_sigma, k);
    int rc = dk__rv_ragged(&j.ctr, centers, func, "centers");
    if (rc) return rc;
    int nb = centers->batch_dims;
    if (centers->dim != nb || centers->data.ndim != nb + 2 || centers->data.shape[nb + 1] != 2)
        return dk__error(DK_EINVAL, func, "centers must have shape (*batch, N, 2), ragged at dim %d", nb);
    dk_dtype ct = centers->data.dtype;
    if (ct != DK_I32 && ct != DK_I64 && ct != DK_F32 && ct != DK_F64)
        return dk__error(DK_EINVAL, func, "centers must be int32, int64, float32 or float64");
    dk_ragged rp = *radii;
    rp.sizes = NULL;
    if ((rc = dk__rv_ragged(&j.rad, &rp, func, "radii"))) return rc;
    if (radii->batch_dims != nb || radii->dim != nb || radii->data.ndim != nb + 1)
        return dk__error(DK_EINVAL, func, "radii must have shape (*batch, N)");
    dk_dtype rt = radii->data.dtype;
    if (rt != DK_I32 && rt != DK_I64 && rt != DK_F32 && rt != DK_F64)
        return dk__error(DK_EINVAL, func, "radii must be int32, int64, float32 or float64");
    if ((rc = dk__rv_same_batch(&j.ctr, &j.rad, func, "centers", "radii"))) return rc;
    int want = nb + (labels ? 3 : 2);
    if (heatmaps->ndim != want)
        return dk__error(DK_EINVAL, func, "heatmaps must have shape (*batch, %sH, W): %d dims, got %d",
                         labels ? "C, " : "", want, (int)heatmaps->ndim);
    if ((rc = dk__rv_make(&j.hm, heatmaps, nb, nb, NULL, func, "heatmaps"))) return rc;
    if ((rc = dk__rv_same_batch(&j.ctr, &j.hm, func, "centers", "heatmaps"))) return rc;
    int64_t C = labels ? heatmaps->shape[nb] : 1;
    if (labels) {
        dk_ragged lp = *labels;
        lp.sizes = NULL;
        if ((rc = dk__rv_index(&j.lab, &lp, func, "labels"))) return rc;
        if ((rc = dk__rv_same_batch(&j.ctr, &j.lab, func, "centers", "labels"))) return rc;
        j.has_lab = 1;
    }
    for (int64_t s = 0; s < j.ctr.S; s++) {
        int64_t n = dk__rv_size(&j.ctr, s);
        if (n > j.rad.N || (radii->sizes && radii->sizes[s] != n) || (labels && n > j.lab.N))
            return dk__error(DK_EINVAL, func, "sample %lld: %lld centers but fewer radii or labels",
                             (long long)s, (long long)n);
        int64_t rs = dk__rv_soff(&j.rad, s), ls = labels ? dk__rv_soff(&j.lab, s) : 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t r = load_int(&j.rad, rs + i * j.rad.nstride);
            if (r < 0 || r > (int64_t)1 << 24)
                return dk__error(DK_ERANGE, func, "radii: sample %lld, object %lld: radius %lld outside [0, 2^24]",
                                 (long long)s, (long long)i, (long long)r);
            if (labels) {
                int64_t c = dk__rv_idx(&j.lab, ls + i * j.lab.nstride);
                if (c < 0 || c >= C)
                    return dk__error(DK_ERANGE, func, "labels: sample %lld, object %lld: class %lld outside [0, %lld)",
                                     (long long)s, (long long)i, (long long)c, (long long)C);
            }
        }
    }
    j.heat = heatmaps;
    j.nb = nb;
    j.factor = diameter_to_sigma;
    j.k = k;
    return dk_pool_for(pool, j.ctr.S, 0, heat_range, &j);
}
