/*
 * Batched losses and matching costs with backward, and the fused DETR-style
 * 3D set criterion.
 *
 * The standalone ops compute in float64 per element. The fused criterion is
 * the hot path of a training step (L layers x B samples x Q queries x C
 * classes), so it computes in float32 with branch-free exp/log written so the
 * compiler can vectorise the element loops (libm calls block that), and it
 * produces the gradients in the same pass: the losses are linear in their
 * output gradients, so backward is a scale.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>

#include "ragged_impl.h"

/* ------------------------------------------------------------------------ */
/* Vectorisable float32 exp and log                                          */

static inline uint32_t f2u(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static inline float u2f(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* exp(x): x = n ln2 + r, |r| <= ln2/2, e^r by its Taylor polynomial of degree 7
 * (truncation < 1e-8 relative), scaled by 2^n through the exponent bits.
 * Inputs are clamped to the normal range: exp(-87.3) ~ 1.2e-38. */
static inline float fexp(float x)
{
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    float t = x * 1.44269504089f;
    float n = (t + 12582912.0f) - 12582912.0f;   /* round to nearest (|t| < 2^22) */
    float r = x - n * 0.693359375f;              /* ln2 in two parts: exact product, */
    r = r - n * -2.12194440e-4f;                 /* then the small remainder */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t ni = (int32_t)n;
    return p * u2f((uint32_t)(ni + 127) << 23);
}

/* log(x) for normal x > 0: x = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1,
 * log m = f + f^2 P(f) with P of degree 8 fitted by weighted least squares on
 * Chebyshev nodes for the relative error of log(1 + f) (max 8e-8 evaluated
 * in float32). No division, so the loops stay cheap when vectorised. */
static inline float flog(float x)
{
    uint32_t b = f2u(x);
    int32_t e = (int32_t)((b >> 23) & 0xffu) - 127;
    float m = u2f((b & 0x7fffffu) | 0x3f800000u);
    int big = m > 1.41421356f;
    m = big ? m * 0.5f : m;
    e += big;
    float f = m - 1.0f;
    float p = -7.473210990e-02f;
    p = p * f + 1.281951219e-01f;
    p = p * f - 1.326199472e-01f;
    p = p * f + 1.419668645e-01f;
    p = p * f - 1.660859585e-01f;
    p = p * f + 2.000117451e-01f;
    p = p * f - 2.500157654e-01f;
    p = p * f + 3.333333731e-01f;
    p = p * f - 4.999998808e-01f;
    return (float)e * 0.693147181f + (f + f * f * p);
}

/* The quantities of one logit x: p, 1 - p, log p, log(1 - p), all accurate
 * in the tails: with e = exp(-|x|) and l = log1p(e) = softplus(-|x|),
 * log p = min(x, 0) - l and log(1 - p) = -max(x, 0) - l. */
typedef struct fsig {
    float p, q, lp, lq;
} fsig;

static inline fsig fsigmoid(float x)
{
    float a = x < 0 ? -x : x;
    float e = fexp(-a);
    float u = 1.0f + e, inv = 1.0f / u;
    /* log1p(e): log of the rounded u, plus the first-order correction for
       the rounding of 1 + e (Goldberg) */
    float l = flog(u) + (e - (u - 1.0f)) * inv;
    fsig r;
    r.p = x >= 0 ? inv : e * inv;
    r.q = x >= 0 ? e * inv : inv;
    r.lp = (x < 0 ? x : 0.0f) - l;
    r.lq = -(x > 0 ? x : 0.0f) - l;
    return r;
}

/* ------------------------------------------------------------------------ */
/* Double-precision scalar focal pieces (standalone ops)                     */

typedef struct dsig {
    double p, q, lp, lq;
} dsig;

static dsig dsigmoid(double x)
{
    double a = fabs(x), e = exp(-a), l = log1p(e), inv = 1.0 / (1.0 + e);
    dsig r;
    r.p = x >= 0 ? inv : e * inv;
    r.q = x >= 0 ? e * inv : inv;
    r.lp = fmin(x, 0.0) - l;
    r.lq = -fmax(x, 0.0) - l;
    return r;
}

/* p^g and its derivative factor g p^(g-1), with torch's pow conventions:
 * exponent 0 gives 1 and a zero derivative. */
static double dpow(double p, double g)
{
    return g == 0 ? 1.0 : g == 2 ? p * p : pow(p, g);
}

static double dpowd(double p, double g)
{
    return g == 0 ? 0.0 : g == 2 ? 2 * p : g * pow(p, g - 1);
}

/* Focal loss and its derivative for target t (0/1). */
static void focal_elem(double x, int t, double alpha, double gamma, double *loss, double *grad)
{
    dsig s = dsigmoid(x);
    if (t) {
        double w = dpow(s.q, gamma);
        *loss = -alpha * w * s.lp;
        *grad = alpha * w * (gamma * s.p * s.lp - s.q);
    } else {
        double w = dpow(s.p, gamma);
        *loss = -(1 - alpha) * w * s.lq;
        *grad = (1 - alpha) * w * (s.p - gamma * s.q * s.lq);
    }
}

/* mmdet FocalLossCost of logit x for its class, and d cost / d x. */
static void focal_cost_elem(double x, double alpha, double gamma, double *cost, double *grad)
{
    double p = 1.0 / (1.0 + exp(-x));
    const double eps = 1e-12;
    double lpe = log(p + eps), lqe = log(1 - p + eps);
    double neg = -lqe * (1 - alpha) * dpow(p, gamma);
    double pos = -lpe * alpha * dpow(1 - p, gamma);
    *cost = pos - neg;
    if (grad) {
        double dpos = -alpha * (-dpowd(1 - p, gamma) * lpe + dpow(1 - p, gamma) / (p + eps));
        double dneg = -(1 - alpha) * (dpowd(p, gamma) * lqe - dpow(p, gamma) / (1 - p + eps));
        *grad = (dpos - dneg) * p * (1 - p);
    }
}

static int check_focal_params(double alpha, double gamma, const char *func)
{
    if (!isfinite(alpha) || !isfinite(gamma) || gamma < 0)
        return dk__error(DK_EINVAL, func, "alpha = %g, gamma = %g: need finite values, gamma >= 0",
                         alpha, gamma);
    return DK_OK;
}

static int need_float(const dk_tensor *t, const char *func, const char *what)
{
    if (!t) return dk__error(DK_EINVAL, func, "%s is NULL", what);
    if (!dk__is_float(t->dtype))
        return dk__error(DK_EUNSUPPORTED, func, "%s must be float32 or float64, not %s", what,
                         dk_dtype_name(t->dtype));
    return DK_OK;
}

/* A view of t with a unit dim appended (stride 0). */
static dk_tensor with_unit_dim(const dk_tensor *t, int at)
{
    dk_tensor v = *t;
    for (int d = v.ndim; d > at; d--) {
        v.shape[d] = v.shape[d - 1];
        v.strides[d] = v.strides[d - 1];
    }
    v.shape[at] = 1;
    v.strides[at] = 0;
    v.ndim++;
    return v;
}

static int same_shape(const dk_tensor *a, const dk_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

static int shape_mismatch(const char *func, const char *an, const dk_tensor *a, const char *bn,
                          const dk_tensor *b)
{
    char s1[128], s2[128];
    return dk__error(DK_EINVAL, func, "%s has shape %s but %s has %s", an,
                     dk__shape_str(a->shape, a->ndim, s1, sizeof s1), bn,
                     dk__shape_str(b->shape, b->ndim, s2, sizeof s2));
}

/* Fixed-order sum of per-chunk partial sums. */
static double sum_parts(const double *parts, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += parts[i];
    return s;
}

/* ------------------------------------------------------------------------ */
/* Sigmoid focal loss                                                        */

typedef struct focal_job {
    dk__rv x, lab, loss, grad;
    int has_loss, has_grad;
    double alpha, gamma;
    double *parts;
} focal_job;

static void focal_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const focal_job *j = ctx;
    int64_t C = j->x.N;
    for (int64_t r = b; r < e; r++) {
        int64_t xo = dk__rv_soff(&j->x, r);
        int64_t label = dk__rv_idx(&j->lab, dk__rv_soff(&j->lab, r));
        int64_t lo = j->has_loss ? dk__rv_soff(&j->loss, r) : 0;
        int64_t go = j->has_grad ? dk__rv_soff(&j->grad, r) : 0;
        double acc = 0;
        for (int64_t c = 0; c < C; c++) {
            double x = dk__ldf(j->x.dtype, j->x.base, xo + c * j->x.nstride), l, g;
            focal_elem(x, c == label, j->alpha, j->gamma, &l, &g);
            acc += l;
            if (j->has_loss) dk__stf(j->loss.dtype, j->loss.base, lo + c * j->loss.nstride, l);
            if (j->has_grad) dk__stf(j->grad.dtype, j->grad.base, go + c * j->grad.nstride, g);
        }
        j->parts[r] = acc;
    }
}

int dk_ragged_focal_loss(dk_pool *pool, const dk_tensor *logits, const dk_tensor *labels,
                         double alpha, double gamma, dk_tensor *loss, dk_tensor *grad,
                         double *sum)
{
    static const char *func = "dk_ragged_focal_loss";
    focal_job j;
    memset(&j, 0, sizeof j);
    int rc = need_float(logits, func, "logits");
    if (!rc) rc = check_focal_params(alpha, gamma, func);
    if (rc) return rc;
    if (!labels) return dk__error(DK_EINVAL, func, "labels is NULL");
    if (logits->ndim < 1 || labels->ndim != logits->ndim - 1)
        return shape_mismatch(func, "logits (..., C)", logits, "labels (...)", labels);
    for (int d = 0; d < labels->ndim; d++)
        if (labels->shape[d] != logits->shape[d])
            return shape_mismatch(func, "logits (..., C)", logits, "labels (...)", labels);
    int nd = logits->ndim;
    rc = dk__rv_make(&j.x, logits, nd - 1, nd - 1, NULL, func, "logits");
    if (rc) return rc;
    dk_tensor lv = with_unit_dim(labels, labels->ndim);
    rc = dk__rv_make(&j.lab, &lv, nd - 1, nd - 1, NULL, func, "labels");
    if (rc) return rc;
    if (j.lab.dtype != DK_I64 && j.lab.dtype != DK_I32)
        return dk__error(DK_EINVAL, func, "labels must be int64 or int32, not %s",
                         dk_dtype_name(j.lab.dtype));
    if (loss) {
        if ((rc = need_float(loss, func, "loss"))) return rc;
        if (!same_shape(loss, logits)) return shape_mismatch(func, "loss", loss, "logits", logits);
        if ((rc = dk__rv_make(&j.loss, loss, nd - 1, nd - 1, NULL, func, "loss"))) return rc;
        j.has_loss = 1;
    }
    if (grad) {
        if ((rc = need_float(grad, func, "grad"))) return rc;
        if (!same_shape(grad, logits)) return shape_mismatch(func, "grad", grad, "logits", logits);
        if ((rc = dk__rv_make(&j.grad, grad, nd - 1, nd - 1, NULL, func, "grad"))) return rc;
        j.has_grad = 1;
    }
    j.alpha = alpha;
    j.gamma = gamma;
    j.parts = dk_malloc((size_t)(j.x.S ? j.x.S : 1) * sizeof(double));
    if (!j.parts) return dk__error(DK_ENOMEM, func, "out of memory");
    rc = dk_pool_for(pool, j.x.S, 0, focal_range, &j);
    if (!rc && sum) *sum = sum_parts(j.parts, j.x.S);
    dk_free(j.parts);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Pairwise costs: focal classification cost, 3D box L1 cost                */

enum { COST_FOCAL, COST_BOX };

typedef struct cost_job {
    int kind, backward;
    dk__rv pred;             /* (*batch, Q at dim, F trailing): logits or boxes */
    dk__rv gt;               /* labels (index view) or gt boxes (*batch, N, D) */
    dk__rv cost;             /* (*batch, A = Q, N' at dim) */
    dk__rv gpred, ggt;       /* backward outputs */
    int has_gpred, has_ggt;
    double alpha, gamma;
    const double *w;
    int64_t ncodes;
} cost_job;

static void cost_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const cost_job *j = ctx;
    const dk__rv *pr = &j->pred, *gt = &j->gt, *co = &j->cost;
    int64_t Q = pr->N;
    for (int64_t s = b; s < e; s++) {
        int64_t n = dk__rv_size(gt, s);
        int64_t ps = dk__rv_soff(pr, s), gs = dk__rv_soff(gt, s), cs = dk__rv_soff(co, s);
        if (j->backward) {
            if (j->has_gpred) {
                int64_t o = dk__rv_soff(&j->gpred, s);
                for (int64_t q = 0; q < Q; q++)
                    for (int64_t f = 0; f < j->gpred.F; f++)
                        dk__stf(j->gpred.dtype, j->gpred.base,
                                o + q * j->gpred.nstride + dk__blk_off(&j->gpred, f), 0.0);
            }
            if (j->has_ggt) {
                int64_t o = dk__rv_soff(&j->ggt, s);
                for (int64_t k = 0; k < j->ggt.N; k++)
                    for (int64_t f = 0; f < j->ggt.F; f++)
                        dk__stf(j->ggt.dtype, j->ggt.base,
                                o + k * j->ggt.nstride + dk__blk_off(&j->ggt, f), 0.0);
            }
        }
        for (int64_t q = 0; q < Q; q++) {
            int64_t pq = ps + q * pr->nstride, cq = cs + dk__rv_aoff(co, q);
            for (int64_t jj = 0; jj < (j->backward ? n : co->N); jj++) {
                int64_t cat = cq + jj * co->nstride;
                if (!j->backward && jj >= n) {
                    dk__stf(co->dtype, co->base, cat, 0.0);
                    continue;
                }
                double g = j->backward ? dk__ldf(co->dtype, co->base, cat) : 0.0;
                if (j->kind == COST_FOCAL) {
                    int64_t c = dk__rv_idx(gt, gs + jj * gt->nstride);
                    int64_t xo = pq + dk__blk_off(pr, c);
                    double x = dk__ldf(pr->dtype, pr->base, xo), cost, d;
                    focal_cost_elem(x, j->alpha, j->gamma, &cost, j->backward ? &d : NULL);
                    if (!j->backward) {
                        dk__stf(co->dtype, co->base, cat, cost);
                    } else if (j->has_gpred) {
                        int64_t go = dk__rv_soff(&j->gpred, s) + q * j->gpred.nstride +
                                     dk__blk_off(&j->gpred, c);
                        dk__stf(j->gpred.dtype, j->gpred.base, go,
                                dk__ldf(j->gpred.dtype, j->gpred.base, go) + g * d);
                    }
                    continue;
                }
                double acc = 0;
                int64_t go = gs + jj * gt->nstride;
                for (int64_t k = 0; k < j->ncodes; k++) {
                    double w = j->w ? j->w[k] : 1.0;
                    double diff = dk__ldf(pr->dtype, pr->base, pq + dk__blk_off(pr, k)) -
                                  dk__ldf(gt->dtype, gt->base, go + dk__blk_off(gt, k));
                    if (!j->backward) {
                        acc += w * fabs(diff);
                        continue;
                    }
                    double sg = diff > 0 ? 1.0 : diff < 0 ? -1.0 : 0.0;
                    if (j->has_gpred) {
                        int64_t o = dk__rv_soff(&j->gpred, s) + q * j->gpred.nstride +
                                    dk__blk_off(&j->gpred, k);
                        dk__stf(j->gpred.dtype, j->gpred.base, o,
                                dk__ldf(j->gpred.dtype, j->gpred.base, o) + g * w * sg);
                    }
                    if (j->has_ggt) {
                        int64_t o = dk__rv_soff(&j->ggt, s) + jj * j->ggt.nstride +
                                    dk__blk_off(&j->ggt, k);
                        dk__stf(j->ggt.dtype, j->ggt.base, o,
                                dk__ldf(j->ggt.dtype, j->ggt.base, o) - g * w * sg);
                    }
                }
                if (!j->backward) dk__stf(co->dtype, co->base, cat, acc);
            }
        }
    }
}

/* Shared validation: pred (*batch, Q, F), gt batch, cost (*batch, Q, N'). */
static int cost_prepare(cost_job *j, int kind, const dk_tensor *pred, const dk_ragged *gt,
                        const dk_ragged *cost, int backward, const char *func)
{
    memset(j, 0, sizeof *j);
    j->kind = kind;
    j->backward = backward;
    int rc = need_float(pred, func, kind == COST_FOCAL ? "logits" : "pred");
    if (rc) return rc;
    if (!gt || !cost) return dk__error(DK_EINVAL, func, "NULL argument");
    int nb = gt->batch_dims;
    const char *pn = kind == COST_FOCAL ? "logits" : "pred";
    const char *gn = kind == COST_FOCAL ? "labels" : "gt";
    if (pred->ndim != nb + 2)
        return dk__error(DK_EINVAL, func, "%s must have shape (*batch, Q, %s) with %d batch dims; got %d dims",
                         pn, kind == COST_FOCAL ? "C" : "D", nb, (int)pred->ndim);
    rc = dk__rv_make(&j->pred, pred, nb, nb, NULL, func, pn);
    if (rc) return rc;
    if (kind == COST_FOCAL) {
        rc = dk__rv_index(&j->gt, gt, func, gn);
    } else {
        rc = dk__rv_ragged(&j->gt, gt, func, gn);
        if (!rc && (gt->dim != nb || gt->data.ndim != nb + 2))
            rc = dk__error(DK_EINVAL, func, "gt must have shape (*batch, N, D), ragged at dim %d", nb);
        if (!rc && gt->data.dtype != pred->dtype)
            rc = dk__error(DK_EINVAL, func, "gt is %s but pred is %s", dk_dtype_name(gt->data.dtype),
                           dk_dtype_name(pred->dtype));
        if (!rc && gt->data.shape[nb + 1] != pred->shape[nb + 1])
            rc = dk__error(DK_EINVAL, func, "gt has D = %lld but pred has %lld",
                           (long long)gt->data.shape[nb + 1], (long long)pred->shape[nb + 1]);
    }
    if (!rc) rc = dk__rv_same_batch(&j->pred, &j->gt, func, pn, gn);
    if (rc) return rc;
    if (cost->batch_dims != nb || cost->data.ndim != nb + 2 || cost->dim != nb + 1)
        return dk__error(DK_EINVAL, func,
                         "%s must have shape (*batch, Q, N) with %d batch dims, ragged at dim %d",
                         backward ? "grad_cost" : "cost", nb, nb + 1);
    if ((rc = need_float(&cost->data, func, backward ? "grad_cost" : "cost"))) return rc;
    dk_ragged probe = *cost;
    probe.sizes = NULL;
    rc = dk__rv_ragged(&j->cost, &probe, func, backward ? "grad_cost" : "cost");
    if (!rc) rc = dk__rv_same_batch(&j->pred, &j->cost, func, pn, backward ? "grad_cost" : "cost");
    if (rc) return rc;
    if (j->cost.A != j->pred.N)
        return dk__error(DK_EINVAL, func, "%s has %lld queries but %s has %lld",
                         backward ? "grad_cost" : "cost", (long long)j->cost.A, pn,
                         (long long)j->pred.N);
    for (int64_t s = 0; s < j->gt.S; s++) {
        int64_t n = dk__rv_size(&j->gt, s);
        if (n > j->cost.N)
            return dk__error(DK_ERANGE, func, "sample %lld has %lld ground truths but %s holds %lld",
                             (long long)s, (long long)n, backward ? "grad_cost" : "cost",
                             (long long)j->cost.N);
        if (kind != COST_FOCAL) continue;
        int64_t go = dk__rv_soff(&j->gt, s);
        for (int64_t k = 0; k < n; k++) {
            int64_t c = dk__rv_idx(&j->gt, go + k * j->gt.nstride);
            if (c < 0 || c >= j->pred.F)
                return dk__error(DK_ERANGE, func, "labels: sample %lld, entry %lld: class %lld outside [0, %lld)",
                                 (long long)s, (long long)k, (long long)c, (long long)j->pred.F);
        }
    }
    return DK_OK;
}

static int grad_view(dk__rv *v, dk_tensor *t, const dk_tensor *like, int nb, const char *func,
                     const char *what)
{
    int rc = need_float(t, func, what);
    if (rc) return rc;
    if (!same_shape(t, like)) return shape_mismatch(func, what, t, "its input", like);
    return dk__rv_make(v, t, nb, nb, NULL, func, what);
}

int dk_ragged_focal_cost(dk_pool *pool, const dk_tensor *logits, const dk_ragged *labels,
                         double alpha, double gamma, dk_ragged *cost)
{
    cost_job j;
    int rc = check_focal_params(alpha, gamma, __func__);
    if (!rc) rc = cost_prepare(&j, COST_FOCAL, logits, labels, cost, 0, __func__);
    if (rc) return rc;
    j.alpha = alpha;
    j.gamma = gamma;
    rc = dk_pool_for(pool, j.gt.S, 0, cost_range, &j);
    if (!rc && cost->sizes)
        for (int64_t s = 0; s < j.gt.S; s++) cost->sizes[s] = dk__rv_size(&j.gt, s);
    return rc;
}

int dk_ragged_focal_cost_backward(dk_pool *pool, const dk_tensor *logits,
                                  const dk_ragged *labels, double alpha, double gamma,
                                  const dk_ragged *grad_cost, dk_tensor *grad_logits)
{
    cost_job j;
    int rc = check_focal_params(alpha, gamma, __func__);
    if (!rc) rc = cost_prepare(&j, COST_FOCAL, logits, labels, grad_cost, 1, __func__);
    if (!rc) rc = grad_view(&j.gpred, grad_logits, logits, labels->batch_dims, __func__, "grad_logits");
    if (rc) return rc;
    j.has_gpred = 1;
    j.alpha = alpha;
    j.gamma = gamma;
    return dk_pool_for(pool, j.gt.S, 0, cost_range, &j);
}

static int box_cost_codes(cost_job *j, const double *w, int n_codes, const char *func)
{
    int64_t D = j->pred.F;
    j->ncodes = n_codes <= 0 || n_codes > D ? D : n_codes;
    j->w = w;
    if (w)
        for (int64_t k = 0; k < j->ncodes; k++)
            if (!isfinite(w[k]))
                return dk__error(DK_EINVAL, func, "code_weights[%lld] is not finite", (long long)k);
    return DK_OK;
}

int dk_ragged_box_l1_cost(dk_pool *pool, const dk_tensor *pred, const dk_ragged *gt,
                          const double *code_weights, int n_codes, dk_ragged *cost)
{
    cost_job j;
    int rc = cost_prepare(&j, COST_BOX, pred, gt, cost, 0, __func__);
    if (!rc) rc = box_cost_codes(&j, code_weights, n_codes, __func__);
    if (rc) return rc;
    rc = dk_pool_for(pool, j.gt.S, 0, cost_range, &j);
    if (!rc && cost->sizes)
        for (int64_t s = 0; s < j.gt.S; s++) cost->sizes[s] = dk__rv_size(&j.gt, s);
    return rc;
}

int dk_ragged_box_l1_cost_backward(dk_pool *pool, const dk_tensor *pred, const dk_ragged *gt,
                                   const double *code_weights, int n_codes,
                                   const dk_ragged *grad_cost, dk_tensor *grad_pred,
                                   dk_tensor *grad_gt)
{
    cost_job j;
    int rc = cost_prepare(&j, COST_BOX, pred, gt, grad_cost, 1, __func__);
    if (!rc) rc = box_cost_codes(&j, code_weights, n_codes, __func__);
    if (rc) return rc;
    if (grad_pred) {
        if ((rc = grad_view(&j.gpred, grad_pred, pred, gt->batch_dims, __func__, "grad_pred")))
            return rc;
        j.has_gpred = 1;
    }
    if (grad_gt) {
        if ((rc = grad_view(&j.ggt, grad_gt, &gt->data, gt->batch_dims, __func__, "grad_gt")))
            return rc;
        j.has_ggt = 1;
    }
    return dk_pool_for(pool, j.gt.S, 0, cost_range, &j);
}

/* ------------------------------------------------------------------------ */
/* L1 / smooth L1                                                            */

typedef struct l1_job {
    dk__rv pred, tgt, loss, grad;
    int has_loss, has_grad;
    const double *w;
    double beta;
    int64_t D;
    int last_is_dim;
    double *parts;
} l1_job;

static void l1_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const l1_job *j = ctx;
    const dk__rv *p = &j->pred;
    unsigned char zero[16] = {0};
    for (int64_t s = b; s < e; s++) {
        int64_t n = dk__rv_size(p, s), ps = dk__rv_soff(p, s), ts = dk__rv_soff(&j->tgt, s);
        int64_t ls = j->has_loss ? dk__rv_soff(&j->loss, s) : 0;
        int64_t gs = j->has_grad ? dk__rv_soff(&j->grad, s) : 0;
        double acc = 0;
        for (int64_t a = 0; a < p->A; a++) {
            int64_t pa = ps + dk__rv_aoff(p, a), ta = ts + dk__rv_aoff(&j->tgt, a);
            int64_t la = j->has_loss ? ls + dk__rv_aoff(&j->loss, a) : 0;
            int64_t ga = j->has_grad ? gs + dk__rv_aoff(&j->grad, a) : 0;
            for (int64_t k = 0; k < p->N; k++) {
                if (k >= n) {
                    if (j->has_loss)
                        dk__blk_fill(&j->loss, dk__rv_at(&j->loss, la + k * j->loss.nstride), zero);
                    if (j->has_grad)
                        dk__blk_fill(&j->grad, dk__rv_at(&j->grad, ga + k * j->grad.nstride), zero);
                    continue;
                }
                for (int64_t f = 0; f < p->F; f++) {
                    int64_t code = j->last_is_dim ? k : f % j->D;
                    double w = j->w ? j->w[code] : 1.0;
                    double d = dk__ldf(p->dtype, p->base, pa + k * p->nstride + dk__blk_off(p, f)) -
                               dk__ldf(j->tgt.dtype, j->tgt.base,
                                       ta + k * j->tgt.nstride + dk__blk_off(&j->tgt, f));
                    double ad = fabs(d), l, g;
                    double sg = d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0;
                    if (j->beta > 0 && ad < j->beta) {
                        l = 0.5 * d * d / j->beta;
                        g = d / j->beta;
                    } else {
                        l = j->beta > 0 ? ad - 0.5 * j->beta : ad;
                        g = sg;
                    }
                    l *= w;
                    g *= w;
                    acc += l;
                    if (j->has_loss)
                        dk__stf(j->loss.dtype, j->loss.base,
                                la + k * j->loss.nstride + dk__blk_off(&j->loss, f), l);
                    if (j->has_grad)
                        dk__stf(j->grad.dtype, j->grad.base,
                                ga + k * j->grad.nstride + dk__blk_off(&j->grad, f), g);
                }
            }
        }
        j->parts[s] = acc;
    }
}

int dk_ragged_l1_loss(dk_pool *pool, const dk_ragged *pred, const dk_tensor *target,
                      const double *code_weights, double beta, dk_tensor *loss, dk_tensor *grad,
                      double *sum)
{
    static const char *func = "dk_ragged_l1_loss";
    l1_job j;
    memset(&j, 0, sizeof j);
    if (!pred) return dk__error(DK_EINVAL, func, "pred is NULL");
    int rc = need_float(&pred->data, func, "pred");
    if (!rc) rc = need_float(target, func, "target");
    if (!rc) rc = dk__rv_ragged(&j.pred, pred, func, "pred");
    if (rc) return rc;
    if (!isfinite(beta) || beta < 0)
        return dk__error(DK_EINVAL, func, "beta = %g must be finite and >= 0", beta);
    if (!same_shape(target, &pred->data)) return shape_mismatch(func, "target", target, "pred", &pred->data);
    int nb = pred->batch_dims, dim = pred->dim;
    if ((rc = dk__rv_make(&j.tgt, target, nb, dim, NULL, func, "target"))) return rc;
    if (loss) {
        if ((rc = need_float(loss, func, "loss"))) return rc;
        if (!same_shape(loss, &pred->data)) return shape_mismatch(func, "loss", loss, "pred", &pred->data);
        if ((rc = dk__rv_make(&j.loss, loss, nb, dim, NULL, func, "loss"))) return rc;
        j.has_loss = 1;
    }
    if (grad) {
        if ((rc = need_float(grad, func, "grad"))) return rc;
        if (!same_shape(grad, &pred->data)) return shape_mismatch(func, "grad", grad, "pred", &pred->data);
        if ((rc = dk__rv_make(&j.grad, grad, nb, dim, NULL, func, "grad"))) return rc;
        j.has_grad = 1;
    }
    j.D = pred->data.shape[pred->data.ndim - 1];
    j.last_is_dim = dim == pred->data.ndim - 1;
    j.w = code_weights;
    if (code_weights)
        for (int64_t k = 0; k < j.D; k++)
            if (!isfinite(code_weights[k]))
                return dk__error(DK_EINVAL, func, "code_weights[%lld] is not finite", (long long)k);
    j.beta = beta;
    j.parts = dk_malloc((size_t)(j.pred.S ? j.pred.S : 1) * sizeof(double));
    if (!j.parts) return dk__error(DK_ENOMEM, func, "out of memory");
    rc = dk_pool_for(pool, j.pred.S, 0, l1_range, &j);
    if (!rc && sum) *sum = sum_parts(j.parts, j.pred.S);
    dk_free(j.parts);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Generalized IoU                                                           */

typedef struct giou_fwd {
    double iou_num, uni, uni_c, enc, enc_c, giou;
    double ix, iy, ex, ey;      /* clamped widths / heights */
} giou_fwd;

static void giou_eval(const double a[4], const double b[4], giou_fwd *f)
{
    const double eps = 1e-6;
    double area_a = (a[2] - a[0]) * (a[3] - a[1]);
    double area_b = (b[2] - b[0]) * (b[3] - b[1]);
    double ix = fmin(a[2], b[2]) - fmax(a[0], b[0]);
    double iy = fmin(a[3], b[3]) - fmax(a[1], b[1]);
    f->ix = ix > 0 ? ix : 0;
    f->iy = iy > 0 ? iy : 0;
    double inter = f->ix * f->iy;
    f->uni = area_a + area_b - inter;
    f->uni_c = f->uni > eps ? f->uni : eps;
    double ex = fmax(a[2], b[2]) - fmin(a[0], b[0]);
    double ey = fmax(a[3], b[3]) - fmin(a[1], b[1]);
    f->ex = ex > 0 ? ex : 0;
    f->ey = ey > 0 ? ey : 0;
    f->enc = f->ex * f->ey;
    f->enc_c = f->enc > eps ? f->enc : eps;
    f->iou_num = inter;
    f->giou = inter / f->uni_c - (f->enc_c - f->uni_c) / f->enc_c;
}

/* d giou / d a and d / d b scaled by g, accumulated into ga, gb. */
static void giou_grad(const double a[4], const double b[4], double g, double ga[4], double gb[4])
{
    const double eps = 1e-6;
    giou_fwd f;
    giou_eval(a, b, &f);
    double inter = f.iou_num;
    /* giou = inter / U - 1 + U / E with U = max(union, eps), E = max(enc, eps) */
    double d_inter = g / f.uni_c;
    double d_U = g * (-inter / (f.uni_c * f.uni_c) + 1.0 / f.enc_c);
    double d_E = g * (-f.uni_c / (f.enc_c * f.enc_c));
    double d_union = f.uni > eps ? d_U : 0.0;
    double d_enc = f.enc > eps ? d_E : 0.0;
    d_inter -= d_union;                          /* union = aa + ab - inter */
    double wa = a[2] - a[0], ha = a[3] - a[1], wb = b[2] - b[0], hb = b[3] - b[1];
    ga[0] += -d_union * ha; ga[2] += d_union * ha; ga[1] += -d_union * wa; ga[3] += d_union * wa;
    gb[0] += -d_union * hb; gb[2] += d_union * hb; gb[1] += -d_union * wb; gb[3] += d_union * wb;
    /* inter = ix * iy, ix = clamp(min(a2, b2) - max(a0, b0), 0) */
    double rx = fmin(a[2], b[2]) - fmax(a[0], b[0]), ry = fmin(a[3], b[3]) - fmax(a[1], b[1]);
    double d_ix = rx >= 0 ? d_inter * f.iy : 0.0, d_iy = ry >= 0 ? d_inter * f.ix : 0.0;
    if (a[2] <= b[2]) ga[2] += d_ix; else gb[2] += d_ix;
    if (a[0] >= b[0]) ga[0] -= d_ix; else gb[0] -= d_ix;
    if (a[3] <= b[3]) ga[3] += d_iy; else gb[3] += d_iy;
    if (a[1] >= b[1]) ga[1] -= d_iy; else gb[1] -= d_iy;
    /* enc = ex * ey, ex = clamp(max(a2, b2) - min(a0, b0), 0) */
    double sx = fmax(a[2], b[2]) - fmin(a[0], b[0]), sy = fmax(a[3], b[3]) - fmin(a[1], b[1]);
    double d_ex = sx >= 0 ? d_enc * f.ey : 0.0, d_ey = sy >= 0 ? d_enc * f.ex : 0.0;
    if (a[2] >= b[2]) ga[2] += d_ex; else gb[2] += d_ex;
    if (a[0] <= b[0]) ga[0] -= d_ex; else gb[0] -= d_ex;
    if (a[3] >= b[3]) ga[3] += d_ey; else gb[3] += d_ey;
    if (a[1] <= b[1]) ga[1] -= d_ey; else gb[1] -= d_ey;
}

typedef struct giou_job {
    dk__rv a, b, out;          /* out: pairwise (A = N, dim = M') or aligned (dim = N) */
    dk__rv ga, gb;
    int has_ga, has_gb, aligned, backward;
} giou_job;

static void load_box(const dk__rv *v, int64_t s_off, int64_t i, double out[4])
{
    for (int k = 0; k < 4; k++)
        out[k] = dk__ldf(v->dtype, v->base, s_off + i * v->nstride + dk__blk_off(v, k));
}

static void add_box(const dk__rv *v, int64_t s_off, int64_t i, const double g[4])
{
    for (int k = 0; k < 4; k++) {
        int64_t o = s_off + i * v->nstride + dk__blk_off(v, k);
        dk__stf(v->dtype, v->base, o, dk__ldf(v->dtype, v->base, o) + g[k]);
    }
}

static void zero_boxes(const dk__rv *v, int64_t s_off)
{
    for (int64_t i = 0; i < v->N; i++)
        for (int k = 0; k < 4; k++)
            dk__stf(v->dtype, v->base, s_off + i * v->nstride + dk__blk_off(v, k), 0.0);
}

static void giou_range(void *ctx, int64_t b, int64_t e, int ith)
{
    (void)ith;
    const giou_job *j = ctx;
    for (int64_t s = b; s < e; s++) {
        int64_t na = dk__rv_size(&j->a, s), nbx = dk__rv_size(&j->b, s);
        int64_t as = dk__rv_soff(&j->a, s), bs = dk__rv_soff(&j->b, s), os = dk__rv_soff(&j->out, s);
        int64_t gas = j->has_ga ? dk__rv_soff(&j->ga, s) : 0, gbs = j->has_gb ? dk__rv_soff(&j->gb, s) : 0;
        if (j->backward) {
            if (j->has_ga) zero_boxes(&j->ga, gas);
            if (j->has_gb) zero_boxes(&j->gb, gbs);
        }
        double ba[4], bb[4];
        if (j->aligned) {
            for (int64_t i = 0; i < j->out.N; i++) {
                int64_t o = os + i * j->out.nstride;
                if (i >= na) {
                    if (!j->backward) dk__stf(j->out.dtype, j->out.base, o, 0.0);
                    continue;
                }
                load_box(&j->a, as, i, ba);
                load_box(&j->b, bs, i, bb);
                if (!j->backward) {
                    giou_fwd f;
                    giou_eval(ba, bb, &f);
                    dk__stf(j->out.dtype, j->out.base, o, f.giou);
                    continue;
                }
                double ga[4] = {0, 0, 0, 0}, gb[4] = {0, 0, 0, 0};
                giou_grad(ba, bb, dk__ldf(j->out.dtype, j->out.base, o), ga, gb);
                if (j->has_ga) add_box(&j->ga, gas, i, ga);
                if (j->has_gb) add_box(&j->gb, gbs, i, gb);
            }
            continue;
        }
        for (int64_t i = 0; i < j->out.A; i++) {
            int64_t oi = os + dk__rv_aoff(&j->out, i);
            if (i < na) load_box(&j->a, as, i, ba);
            double ga[4] = {0, 0, 0, 0};
            for (int64_t k = 0; k < j->out.N; k++) {
                int64_t o = oi + k * j->out.nstride;
                if (i >= na || k >= nbx) {
                    if (!j->backward) dk__stf(j->out.dtype, j->out.base, o, 0.0);
                    continue;
                }
                load_box(&j->b, bs, k, bb);
                if (!j->backward) {
                    giou_fwd f;
                    giou_eval(ba, bb, &f);
                    dk__stf(j->out.dtype, j->out.base, o, f.giou);
                    continue;
                }
                double gb[4] = {0, 0, 0, 0};
                giou_grad(ba, bb, dk__ldf(j->out.dtype, j->out.base, o), ga, gb);
                if (j->has_gb) add_box(&j->gb, gbs, k, gb);
            }
            if (j->backward && j->has_ga && i < na) add_box(&j->ga, gas, i, ga);
        }
    }
}

static int giou_prepare(giou_job *j, const dk_ragged *a, const dk_ragged *b, int aligned,
                        const dk_tensor *out, const char *func, const char *oname)
{
    memset(j, 0, sizeof *j);
    if (!a || !b) return dk__error(DK_EINVAL, func, "NULL argument");
    int rc = need_float(&a->data, func, "a");
    if (!rc) rc = need_float(&b->data, func, "b");
    if (!rc) rc = need_float(out, func, oname);
    if (!rc) rc = dk__rv_ragged(&j->a, a, func, "a");
    if (!rc) rc = dk__rv_ragged(&j->b, b, func, "b");
    if (rc) return rc;
    int nb = a->batch_dims;
    if (a->dim != nb || a->data.ndim != nb + 2 || a->data.shape[nb + 1] != 4 ||
        b->batch_dims != nb || b->dim != nb || b->data.ndim != nb + 2 || b->data.shape[nb + 1] != 4)
        return dk__error(DK_EINVAL, func,
                         "a and b must be boxes (*batch, N, 4) ragged at dim %d with the same "
                         "batch dims",
                         nb);
    if ((rc = dk__rv_same_batch(&j->a, &j->b, func, "a", "b"))) return rc;
    j->aligned = aligned != 0;
    if (j->aligned) {
        if (out->ndim != nb + 1)
            return dk__error(DK_EINVAL, func, "aligned: %s must have shape (*batch, N)", oname);
        rc = dk__rv_make(&j->out, out, nb, nb, NULL, func, oname);
        if (rc) return rc;
        if (j->out.N != j->a.N)
            return dk__error(DK_EINVAL, func, "aligned: %s has %lld entries but a has %lld", oname,
                             (long long)j->out.N, (long long)j->a.N);
        for (int64_t s = 0; s < j->a.S; s++)
            if (dk__rv_size(&j->a, s) != dk__rv_size(&j->b, s) ||
                dk__rv_size(&j->a, s) > j->b.N)
                return dk__error(DK_EINVAL, func, "aligned: sample %lld has %lld boxes in a but %lld in b",
                                 (long long)s, (long long)dk__rv_size(&j->a, s),
                                 (long long)dk__rv_size(&j->b, s));
    } else {
        if (out->ndim != nb + 2)
            return dk__error(DK_EINVAL, func, "%s must have shape (*batch, N, M)", oname);
        rc = dk__rv_make(&j->out, out, nb, nb + 1, NULL, func, oname);
        if (rc) return rc;
        if (j->out.A != j->a.N)
            return dk__error(DK_EINVAL, func, "%s has %lld rows but a has %lld", oname,
                             (long long)j->out.A, (long long)j->a.N);
        for (int64_t s = 0; s < j->b.S; s++)
            if (dk__rv_size(&j->b, s) > j->out.N)
                return dk__error(DK_ERANGE, func, "sample %lld has %lld boxes in b but %s holds %lld",
                                 (long long)s, (long long)dk__rv_size(&j->b, s), oname,
                                 (long long)j->out.N);
    }
    return dk__rv_same_batch(&j->a, &j->out, func, "a", oname);
}

int dk_ragged_giou(dk_pool *pool, const dk_ragged *a, const dk_ragged *b, int aligned,
                   dk_tensor *out)
{
    giou_job j;
    int rc = giou_prepare(&j, a, b, aligned, out, __func__, "out");
    if (rc) return rc;
    return dk_pool_for(pool, j.a.S, 0, giou_range, &j);
}

int dk_ragged_giou_backward(dk_pool *pool, const dk_ragged *a, const dk_ragged *b, int aligned,
                            const dk_tensor *grad_out, dk_tensor *grad_a, dk_tensor *grad_b)
{
    giou_job j;
    int rc = giou_prepare(&j, a, b, aligned, grad_out, __func__, "grad_out");
    if (rc) return rc;
    j.backward = 1;
    int nb = a->batch_dims;
    if (grad_a) {
        if ((rc = grad_view(&j.ga, grad_a, &a->data, nb, __func__, "grad_a"))) return rc;
        j.has_ga = 1;
    }
    if (grad_b) {
        if ((rc = grad_view(&j.gb, grad_b, &b->data, nb, __func__, "grad_b"))) return rc;
        j.has_gb = 1;
    }
    return dk_pool_for(pool, j.a.S, 0, giou_range, &j);
}

/* ------------------------------------------------------------------------ */
/* The fused DETR-style 3D set criterion                                     */

void dk_ragged_detr3d_config_init(dk_detr3d_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->cls_weight = 2.0;
    cfg->reg_weight = 0.25;
    cfg->alpha = 0.25;
    cfg->gamma = 2.0;
    cfg->code_weights = NULL;
    cfg->match_codes = 8;
}

/* Per-thread scratch of the fused criterion. */
typedef struct detr_slot {
    float *x, *g, *lb, *fc, *fct, *bx, *bt, *row, *gt;
    float *cost;                 /* n x Q (or Q x n): exact in double */
    int64_t *lab;
    dk__lsa_ws ws;
    void *mem;
} detr_slot;

typedef struct detr_job {
    const dk_detr3d_config *cfg;
    dk__rv x, box, lab, gtb, gx, gbox;     /* x, box, gx, gbox: (L*B, Q at dim 1, F) */
    int has_gx, has_gbox;
    int64_t L, B, Q, C, D, K, N;           /* N: padded gt size */
    float cls_scale, reg_scale;            /* cls_weight / npos, reg_weight / npos */
    float alpha, gamma, cw, rw;
    int gamma2;
    float *w;                              /* D code weights */
    int64_t *match;
    const int64_t *order;
    double *cls_sum, *box_sum;             /* per task (l * B + b) */
    detr_slot *slots;
    dk__task_err *errs;                    /* per task */
} detr_job;

/* Focal terms of one logit x for a background target (lb: loss, gb: grad) and
 * the matching cost of its class (fc), in float32. The cost is mmdet's
 * FocalLossCost, -log(p + 1e-12) a (1-p)^g + log(1 - p + 1e-12) (1-a) p^g;
 * with log p and log(1 - p) accurate in the tails the 1e-12 guard changes the
 * logs by less than float rounding unless p or 1 - p < 1e-5 (|x| > 11.5),
 * so those rare elements are recomputed with the guard by detr_fc_exact.
 * gamma == 2 (the common setting) avoids the pow. */
static inline void detr_elem_g2(float x, float alpha, float cw, float *lb, float *gb, float *fc)
{
    fsig s = fsigmoid(x);
    float pg = s.p * s.p, qg = s.q * s.q;
    float neg = -(1.0f - alpha) * pg * s.lq;   /* also the background loss */
    float pos = -alpha * qg * s.lp;
    *lb = neg;
    *gb = (1.0f - alpha) * pg * (s.p - 2.0f * s.q * s.lq);
    *fc = cw * (pos - neg);
}

static inline void detr_elem(float x, float alpha, float gamma, float cw, float *lb, float *gb,
                             float *fc)
{
    fsig s = fsigmoid(x);
    float pg = fexp(gamma * s.lp);
    float qg = fexp(gamma * s.lq);
    float neg = -(1.0f - alpha) * pg * s.lq;
    float pos = -alpha * qg * s.lp;
    *lb = neg;
    *gb = (1.0f - alpha) * pg * (s.p - gamma * s.q * s.lq);
    *fc = cw * (pos - neg);
}

/* The element loops, compiled twice where the toolchain can dispatch at load
 * time (ifunc): AVX2 doubles the vector width. No FMA is enabled and ISO C
 * mode keeps contraction off, so both versions round identically. */
#if defined(__x86_64__) && defined(__ELF__) && defined(__has_attribute) && !defined(__SANITIZE_ADDRESS__)
#if __has_attribute(target_clones)
#define DK_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef DK_CLONES
#define DK_CLONES
#endif

DK_CLONES static void detr_elems_g2(const float *restrict x, int64_t n, float alpha, float cw,
                                    float scale, float *restrict lb, float *restrict g,
                                    float *restrict fc)
{
    for (int64_t i = 0; i < n; i++) {
        float gb;
        detr_elem_g2(x[i], alpha, cw, &lb[i], &gb, &fc[i]);
        g[i] = gb * scale;
    }
}

DK_CLONES static void detr_elems(const float *restrict x, int64_t n, float alpha, float gamma,
                                 float cw, float scale, float *restrict lb, float *restrict g,
                                 float *restrict fc)
{
    for (int64_t i = 0; i < n; i++) {
        float gb;
        detr_elem(x[i], alpha, gamma, cw, &lb[i], &gb, &fc[i]);
        g[i] = gb * scale;
    }
}

/* One row of the box L1 cost over 8 codes: bt is (8, Q), row-major. */
DK_CLONES static void detr_l1_row8(const float *restrict bt, int64_t Q, const float *restrict gi,
                                   float *restrict row)
{
    const float g0 = gi[0], g1 = gi[1], g2 = gi[2], g3 = gi[3], g4 = gi[4], g5 = gi[5],
                g6 = gi[6], g7 = gi[7];
    for (int64_t q = 0; q < Q; q++)
        row[q] = ((fabsf(bt[q] - g0) + fabsf(bt[Q + q] - g1)) +
                  (fabsf(bt[2 * Q + q] - g2) + fabsf(bt[3 * Q + q] - g3))) +
                 ((fabsf(bt[4 * Q + q] - g4) + fabsf(bt[5 * Q + q] - g5)) +
                  (fabsf(bt[6 * Q + q] - g6) + fabsf(bt[7 * Q + q] - g7)));
}

/* The cost of one logit with the 1e-12 guards, for the flagged elements. */
static float detr_fc_exact(float x, float alpha, float gamma, int gamma2, float cw)
{
    fsig s = fsigmoid(x);
    float pg = gamma2 ? s.p * s.p : fexp(gamma * s.lp);
    float qg = gamma2 ? s.q * s.q : fexp(gamma * s.lq);
    float neg = -flog(s.q + 1e-12f) * (1.0f - alpha) * pg;
    float pos = -flog(s.p + 1e-12f) * alpha * qg;
    return cw * (pos - neg);
}

/* Positive-target focal loss and grad of one logit. */
static inline void detr_pos(float x, float alpha, float gamma, int gamma2, float *lp, float *gp)
{
    fsig s = fsigmoid(x);
    float qg = gamma2 ? s.q * s.q : fexp(gamma * s.lq);
    *lp = -alpha * qg * s.lp;
    *gp = alpha * qg * (gamma * s.p * s.lp - s.q);
}

static void load_slab(const dk__rv *v, int64_t t, int64_t rows, float *out)
{
    int64_t so = dk__rv_soff(v, t), F = v->F;
    const float *base = (const float *)(const void *)v->base;
    for (int64_t q = 0; q < rows; q++) {
        const float *src = base + so + q * v->nstride;
        if (v->fcontig) {
            memcpy(out + q * F, src, (size_t)F * sizeof(float));
        } else {
            for (int64_t f = 0; f < F; f++) out[q * F + f] = src[dk__blk_off(v, f)];
        }
    }
}

static void store_slab(const dk__rv *v, int64_t t, int64_t rows, const float *in)
{
    int64_t so = dk__rv_soff(v, t), F = v->F;
    float *base = (float *)(void *)v->base;
    for (int64_t q = 0; q < rows; q++) {
        float *dst = base + so + q * v->nstride;
        if (v->fcontig) {
            memcpy(dst, in + q * F, (size_t)F * sizeof(float));
        } else {
            for (int64_t f = 0; f < F; f++) dst[dk__blk_off(v, f)] = in[q * F + f];
        }
    }
}

/* Whether slab t of a (L*B, Q, F) view is Q*F contiguous floats. */
static int slab_in_place(const dk__rv *v, int64_t t)
{
    (void)t;
    return v->fcontig && (v->nstride == v->F || v->N <= 1);
}

static double sum_f32(const float *a, int64_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i];
        s1 += a[i + 1];
        s2 += a[i + 2];
        s3 += a[i + 3];
    }
    for (; i < n; i++) s0 += a[i];
    return (s0 + s1) + (s2 + s3);
}

static void detr_task(const detr_job *j, int64_t t, detr_slot *sl, dk__task_err *err)
{
    int64_t l = t / j->B, b = t % j->B;
    int64_t Q = j->Q, C = j->C, D = j->D, K = j->K, QC = Q * C;
    int64_t n = dk__rv_size(&j->lab, b);
    (void)l;
    /* 1. every logit as background: loss, gradient, matching cost. Contiguous
       slabs are used in place; others are gathered into / scattered from
       scratch. */
    const float *x = slab_in_place(&j->x, t) ? (const float *)(const void *)j->x.base +
                                                   dk__rv_soff(&j->x, t)
                                             : (load_slab(&j->x, t, Q, sl->x), sl->x);
    int g_direct = j->has_gx && slab_in_place(&j->gx, t);
    float *g = g_direct ? (float *)(void *)j->gx.base + dk__rv_soff(&j->gx, t) : sl->g;
    {
        float *lb = sl->lb, *fc = sl->fc;
        const float alpha = j->alpha, gamma = j->gamma, cw = j->cw, scale = j->cls_scale;
        if (j->gamma2)
            detr_elems_g2(x, QC, alpha, cw, scale, lb, g, fc);
        else
            detr_elems(x, QC, alpha, gamma, cw, scale, lb, g, fc);
        /* p or 1 - p < 1e-5 means |x| > 11.51 */
        for (int64_t i = 0; i < QC; i++)
            if (fabsf(x[i]) > 11.5f) fc[i] = detr_fc_exact(x[i], alpha, gamma, j->gamma2, cw);
    }
    double cls = sum_f32(sl->lb, QC), box = 0;
    int64_t *match = j->match ? j->match + t * Q : NULL;
    if (match)
        for (int64_t q = 0; q < Q; q++) match[q] = -1;
    float *gbox = sl->bx;   /* the box slab first, then its gradient */
    if (n > 0) {
        load_slab(&j->box, t, Q, sl->bx);
        /* 2. the cost matrix, gt rows x query columns (or transposed) */
        const int32_t *l32 = (const int32_t *)(const void *)j->lab.base;
        const int64_t *l64 = (const int64_t *)(const void *)j->lab.base;
        int64_t lo = dk__rv_soff(&j->lab, b), go = dk__rv_soff(&j->gtb, b);
        const float *gtbase = (const float *)(const void *)j->gtb.base;
        float *gt = sl->gt;
        int64_t *lab = sl->lab;
        float *row = sl->row;
        for (int64_t i = 0; i < n; i++) {
            int64_t at = lo + i * j->lab.nstride;
            lab[i] = j->lab.dtype == DK_I64 ? l64[at] : l32[at];
            for (int64_t k = 0; k < D; k++)
                gt[i * D + k] = gtbase[go + i * j->gtb.nstride + dk__blk_off(&j->gtb, k)];
        }
        for (int64_t k = 0; k < K; k++)
            for (int64_t q = 0; q < Q; q++) sl->bt[k * Q + q] = sl->bx[q * D + k];
        for (int64_t c = 0; c < C; c++)
            for (int64_t q = 0; q < Q; q++) sl->fct[c * Q + q] = sl->fc[q * C + c];
        int tr = n > Q;
        int64_t nr = tr ? Q : n, nc = tr ? n : Q;
        float *cost = sl->cost;
        const float rw = j->rw;
        uint32_t bad = 0;
        for (int64_t i = 0; i < n; i++) {
            const float *fcr = sl->fct + lab[i] * Q, *gi = gt + i * D;
            if (K == 8) {   /* the usual box (x, y, z, w, l, h, sin, cos): one pass */
                detr_l1_row8(sl->bt, Q, gi, row);
            } else {
                for (int64_t q = 0; q < Q; q++) row[q] = 0;
                for (int64_t k = 0; k < K; k++) {
                    const float *btk = sl->bt + k * Q;
                    float gk = gi[k];
                    for (int64_t q = 0; q < Q; q++) row[q] += fabsf(btk[q] - gk);
                }
            }
            for (int64_t q = 0; q < Q; q++) {
                float c = fcr[q] + rw * row[q];
                bad |= (f2u(c) & 0x7f800000u) == 0x7f800000u;
                if (!tr)
                    cost[i * nc + q] = c;
                else
                    cost[q * nc + i] = c;
            }
        }
        if (bad) {
            for (int64_t i = 0; i < nr * nc; i++)
                if (!isfinite(cost[i])) {
                    int64_t q = tr ? i / nc : i % nc, gj = tr ? i % nc : i / nc;
                    err->status = DK_EINVAL;
                    snprintf(err->msg, sizeof err->msg,
                             "layer %lld, sample %lld: matching cost of query %lld and ground "
                             "truth %lld is %s (non-finite logits or boxes)",
                             (long long)l, (long long)b, (long long)q, (long long)gj,
                             isnan(cost[i]) ? "NaN" : "infinite");
                    return;
                }
        }
        /* 3. exact assignment */
        dk__lsa_mat mat = {cost, NULL, nc};
        dk__lsa_solve(&mat, nr, nc, &sl->ws);
        /* 4. losses and gradients of the matched pairs, in gt (or query) order */
        for (int64_t q = 0; q < Q * D; q++) gbox[q] = 0;   /* the slab is not needed any more */
        for (int64_t r = 0; r < nr; r++) {
            int64_t q = tr ? r : sl->ws.col4row[r], gj = tr ? sl->ws.col4row[r] : r;
            int64_t c = lab[gj];
            float lp, gp;
            detr_pos(x[q * C + c], j->alpha, j->gamma, j->gamma2, &lp, &gp);
            cls += (double)lp - (double)sl->lb[q * C + c];
            g[q * C + c] = gp * j->cls_scale;
            if (match) match[q] = gj;
        }
        /* the matched rows' predictions, read from the input again */
        const float *bbase = (const float *)(const void *)j->box.base;
        int64_t bo = dk__rv_soff(&j->box, t);
        for (int64_t r = 0; r < nr; r++) {
            int64_t q = tr ? r : sl->ws.col4row[r], gj = tr ? sl->ws.col4row[r] : r;
            const float *pq = bbase + bo + q * j->box.nstride;
            double acc = 0;
            for (int64_t k = 0; k < D; k++) {
                float d = pq[dk__blk_off(&j->box, k)] - gt[gj * D + k];
                acc += (double)(j->w[k] * fabsf(d));
                float sg = d > 0 ? 1.0f : d < 0 ? -1.0f : 0.0f;
                gbox[q * D + k] = j->reg_scale * j->w[k] * sg;
            }
            box += acc;
        }
    } else {
        for (int64_t q = 0; q < Q * D; q++) gbox[q] = 0;
    }
    j->cls_sum[t] = cls;
    j->box_sum[t] = box;
    if (j->has_gx && !g_direct) store_slab(&j->gx, t, Q, sl->g);
    if (j->has_gbox) store_slab(&j->gbox, t, Q, gbox);
}

static void detr_range(void *ctx, int64_t b, int64_t e, int ith)
{
    const detr_job *j = ctx;
    for (int64_t i = b; i < e; i++) {
        int64_t t = j->order[i];
        detr_task(j, t, &j->slots[ith], &j->errs[t]);
    }
}

/* (L, B, Q, F) float32 viewed as (L*B, Q, F): L and B must merge. */
static int detr_view(dk__rv *v, const dk_tensor *t, const char *func, const char *what)
{
    if (!t) return dk__error(DK_EINVAL, func, "%s is NULL", what);
    if (t->ndim != 4)
        return dk__error(DK_EINVAL, func, "%s must have shape (L, B, Q, %s), got %d dims", what,
                         strstr(what, "box") ? "D" : "C", (int)t->ndim);
    if (t->dtype != DK_F32)
        return dk__error(DK_EUNSUPPORTED, func, "%s must be float32, not %s", what,
                         dk_dtype_name(t->dtype));
    return dk__rv_make(v, t, 2, 2, NULL, func, what);
}

int dk_ragged_detr3d_loss(dk_pool *pool, const dk_detr3d_config *cfg, const dk_tensor *cls_logits,
                          const dk_tensor *box_preds, const dk_ragged *gt_labels,
                          const dk_ragged *gt_boxes, double *loss_cls, double *loss_bbox,
                          double *layer_losses, dk_tensor *grad_cls, dk_tensor *grad_box,
                          int64_t *match)
{
    static const char *func = "dk_ragged_detr3d_loss";
    dk_detr3d_config defcfg;
    if (!cfg) {
        dk_ragged_detr3d_config_init(&defcfg);
        cfg = &defcfg;
    }
    detr_job j;
    memset(&j, 0, sizeof j);
    int rc = detr_view(&j.x, cls_logits, func, "cls_logits");
    if (!rc) rc = detr_view(&j.box, box_preds, func, "box_preds");
    if (rc) return rc;
    if (cls_logits->shape[0] != box_preds->shape[0] || cls_logits->shape[1] != box_preds->shape[1] ||
        cls_logits->shape[2] != box_preds->shape[2])
        return shape_mismatch(func, "cls_logits (L, B, Q, C)", cls_logits, "box_preds (L, B, Q, D)",
                              box_preds);
    j.L = cls_logits->shape[0];
    j.B = cls_logits->shape[1];
    j.Q = cls_logits->shape[2];
    j.C = cls_logits->shape[3];
    j.D = box_preds->shape[3];
    if (!gt_labels || !gt_boxes) return dk__error(DK_EINVAL, func, "gt_labels or gt_boxes is NULL");
    if ((rc = dk__rv_index(&j.lab, gt_labels, func, "gt_labels"))) return rc;
    if (gt_labels->batch_dims != 1 || j.lab.S != j.B)
        return dk__error(DK_EINVAL, func, "gt_labels must have shape (B, N) with B = %lld",
                         (long long)j.B);
    if (gt_boxes->data.ndim != 3 || gt_boxes->batch_dims != 1 || gt_boxes->dim != 1)
        return dk__error(DK_EINVAL, func, "gt_boxes must have shape (B, N, D), ragged at dim 1");
    if (gt_boxes->data.dtype != DK_F32)
        return dk__error(DK_EUNSUPPORTED, func, "gt_boxes must be float32, not %s",
                         dk_dtype_name(gt_boxes->data.dtype));
    if ((rc = dk__rv_ragged(&j.gtb, gt_boxes, func, "gt_boxes"))) return rc;
    if (j.gtb.S != j.B || gt_boxes->data.shape[2] != j.D)
        return shape_mismatch(func, "gt_boxes (B, N, D)", &gt_boxes->data, "box_preds (L, B, Q, D)",
                              box_preds);
    j.N = j.lab.N;
    for (int64_t b = 0; b < j.B; b++) {
        int64_t n = dk__rv_size(&j.lab, b);
        if (n > j.gtb.N || (gt_boxes->sizes && gt_boxes->sizes[b] != n))
            return dk__error(DK_EINVAL, func, "sample %lld: %lld labels but gt_boxes holds %lld",
                             (long long)b, (long long)n, (long long)dk__rv_size(&j.gtb, b));
        int64_t lo = dk__rv_soff(&j.lab, b);
        for (int64_t k = 0; k < n; k++) {
            int64_t c = dk__rv_idx(&j.lab, lo + k * j.lab.nstride);
            if (c < 0 || c >= j.C)
                return dk__error(DK_ERANGE, func,
                                 "gt_labels: sample %lld, box %lld: class %lld outside [0, %lld)",
                                 (long long)b, (long long)k, (long long)c, (long long)j.C);
        }
    }
    if (!isfinite(cfg->cls_weight) || !isfinite(cfg->reg_weight))
        return dk__error(DK_EINVAL, func, "cls_weight and reg_weight must be finite");
    if ((rc = check_focal_params(cfg->alpha, cfg->gamma, func))) return rc;
    if (grad_cls) {
        if (!same_shape(grad_cls, cls_logits)) return shape_mismatch(func, "grad_cls", grad_cls, "cls_logits", cls_logits);
        if ((rc = detr_view(&j.gx, grad_cls, func, "grad_cls"))) return rc;
        j.has_gx = 1;
    }
    if (grad_box) {
        if (!same_shape(grad_box, box_preds)) return shape_mismatch(func, "grad_box", grad_box, "box_preds", box_preds);
        if ((rc = detr_view(&j.gbox, grad_box, func, "grad_box"))) return rc;
        j.has_gbox = 1;
    }
    j.K = cfg->match_codes <= 0 || cfg->match_codes > j.D ? j.D : cfg->match_codes;
    int64_t npos = 0;
    for (int64_t b = 0; b < j.B; b++) {
        int64_t n = dk__rv_size(&j.lab, b);
        npos += n < j.Q ? n : j.Q;
    }
    double denom = npos > 0 ? (double)npos : 1.0;
    j.cfg = cfg;
    j.cls_scale = (float)(cfg->cls_weight / denom);
    j.reg_scale = (float)(cfg->reg_weight / denom);
    j.alpha = (float)cfg->alpha;
    j.gamma = (float)cfg->gamma;
    j.gamma2 = cfg->gamma == 2.0;
    j.cw = (float)cfg->cls_weight;
    j.rw = (float)cfg->reg_weight;
    j.match = match;

    int64_t T = j.L * j.B;
    int nslots = dk_pool_size(pool);
    int64_t Q = j.Q, C = j.C, D = j.D, K = j.K, Nm = j.N > 0 ? j.N : 1;
    int64_t maxc = 0;
    for (int64_t b = 0; b < j.B; b++) {
        int64_t n = dk__rv_size(&j.lab, b), m = n * Q;
        if (m > maxc) maxc = m;
    }
    /* per slot: labels (N int64), then floats: the cost (n Q), x, g, lb, fc
       (Q C each), fct (C Q), bx (Q D), bt (K Q), row (Q), gt (N D) */
    size_t nf = (size_t)((maxc > 0 ? maxc : 1) + 5 * Q * C + Q * D + K * Q + Q + Nm * D + 16);
    size_t slot_bytes = (size_t)Nm * sizeof(int64_t) + nf * sizeof(float) + 64;
    size_t head = (size_t)T * (sizeof(int64_t) + 2 * sizeof(double) + sizeof(dk__task_err)) +
                  (size_t)nslots * sizeof(detr_slot) + (size_t)D * sizeof(float);
    char *mem = dk_calloc(1, head);
    if (!mem) return dk__error(DK_ENOMEM, func, "out of memory");
    int64_t *order = (int64_t *)(void *)mem;
    j.cls_sum = (double *)(void *)(order + T);
    j.box_sum = j.cls_sum + T;
    j.slots = (detr_slot *)(void *)(j.box_sum + T);   /* 8-aligned parts first */
    j.errs = (dk__task_err *)(void *)(j.slots + nslots);
    j.w = (float *)(void *)(j.errs + T);
    for (int64_t k = 0; k < D; k++) {
        double w = cfg->code_weights ? cfg->code_weights[k] : 1.0;
        if (!isfinite(w)) {
            dk_free(mem);
            return dk__error(DK_EINVAL, func, "code_weights[%lld] is not finite", (long long)k);
        }
        j.w[k] = (float)w;
    }
    for (int s = 0; s < nslots && !rc; s++) {
        detr_slot *sl = &j.slots[s];
        sl->mem = dk_malloc(slot_bytes);
        if (!sl->mem || dk__lsa_ws_reserve(&sl->ws, Nm < Q ? Nm : Q, Nm > Q ? Nm : Q)) {
            rc = dk__error(DK_ENOMEM, func, "out of memory");
            break;
        }
        sl->lab = (int64_t *)sl->mem;
        float *f = (float *)(void *)(sl->lab + Nm);
        sl->cost = f;
        f += maxc > 0 ? maxc : 1;
        sl->x = f; f += Q * C;
        sl->g = f; f += Q * C;
        sl->lb = f; f += Q * C;
        sl->fc = f; f += Q * C;
        sl->fct = f; f += Q * C;
        sl->bx = f; f += Q * D;
        sl->bt = f; f += K * Q;
        sl->row = f; f += Q;
        sl->gt = f;
    }
    if (!rc) {
        /* biggest tasks first: a cost of n x Q, samples ordered by n */
        int64_t k = 0;
        for (int64_t n = j.N; n >= 0; n--)
            for (int64_t t = 0; t < T; t++)
                if (dk__rv_size(&j.lab, t % j.B) == n) order[k++] = t;
        j.order = order;
        rc = dk_pool_for(pool, T, 1, detr_range, &j);
    }
    for (int64_t t = 0; !rc && t < T; t++)
        if (j.errs[t].status) rc = dk__error(j.errs[t].status, func, "%s", j.errs[t].msg);
    if (!rc) {
        double tc = 0, tb = 0;
        for (int64_t l = 0; l < j.L; l++) {
            double c = 0, bx = 0;
            for (int64_t b = 0; b < j.B; b++) {
                c += j.cls_sum[l * j.B + b];
                bx += j.box_sum[l * j.B + b];
            }
            c = cfg->cls_weight * c / denom;
            bx = cfg->reg_weight * bx / denom;
            if (layer_losses) {
                layer_losses[2 * l] = c;
                layer_losses[2 * l + 1] = bx;
            }
            tc += c;
            tb += bx;
        }
        if (loss_cls) *loss_cls = tc;
        if (loss_bbox) *loss_bbox = tb;
    }
    for (int s = 0; s < nslots; s++) {
        dk_free(j.slots[s].mem);
        dk__lsa_ws_free(&j.slots[s].ws);
    }
    dk_free(mem);
    return rc;
}
