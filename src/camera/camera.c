/*
 * Camera models: pinhole, OpenCV (rational radial + tangential + thin prism),
 * OpenCV fisheye (Kannala-Brandt) and NVIDIA f-theta.
 *
 * Fisheye and f-theta share one radial formulation. With ρ = |(x, y)|,
 * R = |(x, y, z)| and θ = atan2(ρ, z), both map the point to
 *
 *     p = g (x, y),   g = D(θ) / ρ = Q(θ) / (R sinc θ),   Q(θ) = D(θ) / θ,
 *
 * where D is the distance from the centre (fisheye: r(θ) in normalised
 * units; f-theta: δ in pixels) and Q is evaluated directly from the
 * polynomial with θ factored out. Writing g through Q and sinc θ removes the
 * 0/0 at the optical axis (g -> Q(0)/z, e.g. 1/z for the fisheye), and the
 * Jacobian
 *
 *     dp/d(x, y) = g I + H e eᵀ,   e = (x, y)/ρ,   dp/dz = -D'(θ)/R² (x, y),
 *     H = ρ² (dg/dρ)/ρ = θ (Q' cosθ sincθ - Q θ S(θ)) / (R sincθ),
 *     S(θ) = (2θ - sin 2θ) / (2θ³)   (a series near 0),
 *
 * is finite everywhere except θ = π (the point straight behind the camera,
 * where the model is undefined). The pixel is then M p + principal point with
 * M = diag(fx, fy) (fisheye) or the f-theta matrix [[c, d], [e, 1]].
 *
 * Inversions of monotonic 1-D polynomials (fisheye unprojection, the
 * non-reference f-theta direction) use Newton's method safeguarded by a
 * bracket that shrinks every step (a bisection step whenever Newton leaves
 * it), so they converge from any seed; a fitted seed makes them take 2-4
 * Newton steps.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "drivekit/camera.h"
#include "internal.h"

#define PI 3.14159265358979323846

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static double sinc(double t)
{
    if (fabs(t) < 1e-4) {
        double t2 = t * t;
        return 1.0 - t2 / 6.0 + t2 * t2 / 120.0;
    }
    return sin(t) / t;
}

/* (2θ - sin 2θ) / (2θ³): the cancellation-prone part of dg/dρ. */
static double s_func(double t)
{
    if (fabs(t) < 0.1) {
        double a2 = 4.0 * t * t;
        return 2.0 / 3.0 + a2 * (-1.0 / 30.0 + a2 * (1.0 / 1260.0 + a2 * (-1.0 / 90720.0 +
                                                                         a2 / 9979200.0)));
    }
    return (2.0 * t - sin(2.0 * t)) / (2.0 * t * t * t);
}

static int in_image(const dk_camera *c, double u, double v)
{
    double mw = c->margin * c->width, mh = c->margin * c->height;
    return u >= -mw && u <= c->width + mw && v >= -mh && v <= c->height + mh;
}

/* p(x) = c0 + c1 x + ... + c5 x^5 and its derivative. */
static void poly_eval(const double *c, double x, double *f, double *df)
{
    double v = c[5], d = 0;
    for (int i = 4; i >= 0; i--) {
        d = d * x + v;
        v = v * x + c[i];
    }
    *f = v;
    if (df) *df = d;
}

/* p(x)/x for a polynomial without constant term, and its derivative. */
static void poly_div_x(const double *c, double x, double *q, double *dq)
{
    double v = c[5], d = 0;
    for (int i = 4; i >= 1; i--) {
        d = d * x + v;
        v = v * x + c[i];
    }
    *q = v;
    if (dq) *dq = d;
}

/* Fisheye r(θ) = θ(1 + k1θ² + k2θ⁴ + k3θ⁶ + k4θ⁸); coefficients k[0..3]. */
static void fisheye_r(const double *k, double t, double *f, double *df)
{
    double t2 = t * t;
    double P = 1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3])));
    double dP = k[0] + t2 * (2 * k[1] + t2 * (3 * k[2] + t2 * 4 * k[3]));  /* dP/d(θ²) */
    *f = t * P;
    if (df) *df = P + 2 * t2 * dP;
}

typedef void (*mono_fn)(const double *coef, double x, double *f, double *df);

/* Solves fn(x) = y on [lo, hi], fn increasing there with fn(lo) <= y <= fn(hi)
 * (checked). Bracketed Newton from `seed`. Returns 1 and *out on success. */
static int solve_mono(mono_fn fn, const double *coef, double y, double lo, double hi, double seed,
                      double tol, double *out)
{
    double flo, fhi, f, df;
    fn(coef, lo, &flo, NULL);
    fn(coef, hi, &fhi, NULL);
    if (!(flo <= y) || !(fhi >= y)) return 0;
    if (flo == y) {
        *out = lo;
        return 1;
    }
    if (fhi == y) {
        *out = hi;
        return 1;
    }
    double x = seed;
    if (!(x >= lo && x <= hi)) x = 0.5 * (lo + hi);
    for (int it = 0; it < 200; it++) {
        fn(coef, x, &f, &df);
        if (!isfinite(f)) return 0;
        double r = f - y;
        if (r == 0) {
            *out = x;
            return 1;
        }
        if (r < 0)
            lo = x;
        else
            hi = x;
        double xn;
        if (df > 0) {
            xn = x - r / df;
            if (!(xn > lo && xn < hi)) xn = 0.5 * (lo + hi);
        } else {
            xn = 0.5 * (lo + hi);
        }
        if (fabs(xn - x) <= tol || hi - lo <= tol) {
            *out = xn;
            return 1;
        }
        x = xn;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The radial function of fisheye and f-theta                                */

typedef struct radial {
    double D;   /* distance from the centre: r(θ) (fisheye) or δ (f-theta, px) */
    double Q;   /* D / θ (its limit at θ = 0 included) */
    double dQ;  /* dQ/dθ */
    double dD;  /* dD/dθ */
} radial;

static double effective_max_angle(const dk_camera *c)
{
    return c->max_angle > 0 ? c->max_angle : PI;
}

/* For a BW-reference f-theta: the pixel distance δ with bw(δ) = θ. The
 * fitted forward polynomial seeds the search; the bracket grows from it in
 * small steps so that it stays on the increasing branch of bw. */
static int ftheta_bw_invert(const dk_camera *c, double theta, double *delta)
{
    if (theta <= 0) {
        *delta = 0;
        return 1;
    }
    double seed, f;
    poly_eval(c->fw_poly, theta, &seed, NULL);
    if (!(seed > 0) || !isfinite(seed)) seed = theta / (c->bw_poly[1] > 0 ? c->bw_poly[1] : 1e-3);
    double hi = seed;
    int n = 0;
    for (;;) {
        double df;
        poly_eval(c->bw_poly, hi, &f, &df);
        if (f >= theta) break;
        if (!isfinite(f) || !(df > 0) || ++n > 400) return 0;
        hi = hi * 1.05 + 1.0;
    }
    double lo = 0;
    /* Tighten the bracket from below when the seed is already under the root. */
    if (seed < hi) {
        poly_eval(c->bw_poly, seed, &f, NULL);
        if (f <= theta) lo = seed;
    }
    return solve_mono(poly_eval, c->bw_poly, theta, lo, hi, seed, 1e-9, delta);
}

static int radial_eval(const dk_camera *c, double theta, radial *r)
{
    if (c->model == DK_CAM_FISHEYE) {
        const double *k = c->k;
        double t2 = theta * theta;
        double P = 1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3])));
        double dP = k[0] + t2 * (2 * k[1] + t2 * (3 * k[2] + t2 * 4 * k[3]));
        r->Q = P;
        r->dQ = 2 * theta * dP;
        r->D = theta * P;
        r->dD = P + theta * r->dQ;
        return 1;
    }
    if (c->ftheta_ref == DK_FTHETA_PIXELDIST_TO_ANGLE) {
        double delta;
        if (!ftheta_bw_invert(c, theta, &delta)) return 0;
        double B, dB, bw, dbw;
        poly_div_x(c->bw_poly, delta, &B, &dB);
        poly_eval(c->bw_poly, delta, &bw, &dbw);
        if (!(B > 0) || !(dbw > 0)) return 0;
        r->D = delta;
        r->Q = 1.0 / B;
        r->dD = 1.0 / dbw;            /* implicit function: dδ/dθ = 1 / bw'(δ) */
        r->dQ = -dB * r->dD / (B * B);
        return 1;
    }
    double Q, dQ;
    poly_div_x(c->fw_poly, theta, &Q, &dQ);
    r->Q = Q;
    r->dQ = dQ;
    r->D = theta * Q;
    r->dD = Q + theta * dQ;
    return 1;
}

/* M = the 2x2 matrix from p to pixel offsets. */
static void radial_matrix(const dk_camera *c, double M[4])
{
    if (c->model == DK_CAM_FISHEYE) {
        M[0] = c->fx;
        M[1] = 0;
        M[2] = 0;
        M[3] = c->fy;
    } else {
        M[0] = c->linear_c;
        M[1] = c->linear_d;
        M[2] = c->linear_e;
        M[3] = 1.0;
    }
}

static int project_radial(const dk_camera *c, const double pt[3], double uv[2], double J[6])
{
    double x = pt[0], y = pt[1], z = pt[2];
    double rho = hypot(x, y);
    double R = hypot(rho, z);
    if (!(R > 0) || !isfinite(R)) return 0;
    double theta = atan2(rho, z);
    double sc = sinc(theta);
    if (!(sc > 1e-300)) return 0;
    radial r;
    if (!radial_eval(c, theta, &r)) return 0;
    double g = r.Q / (R * sc);
    double px = g * x, py = g * y;
    double M[4];
    radial_matrix(c, M);
    uv[0] = M[0] * px + M[1] * py + c->cx;
    uv[1] = M[2] * px + M[3] * py + c->cy;
    if (J) {
        double ex = rho > 0 ? x / rho : 0, ey = rho > 0 ? y / rho : 0;
        double H = theta * (r.dQ * cos(theta) * sc - r.Q * theta * s_func(theta)) / (R * sc);
        double gz = -r.dD / (R * R);
        double Jp[6] = {g + H * ex * ex, H * ex * ey, gz * x, H * ex * ey, g + H * ey * ey, gz * y};
        for (int j = 0; j < 3; j++) {
            J[j] = M[0] * Jp[j] + M[1] * Jp[3 + j];
            J[3 + j] = M[2] * Jp[j] + M[3] * Jp[3 + j];
        }
    }
    return theta <= effective_max_angle(c) && r.Q > 0 && in_image(c, uv[0], uv[1]);
}

/* Normalised distorted coordinates p of a pixel (inverse of M). */
static int radial_unmatrix(const dk_camera *c, const double uv[2], double p[2])
{
    double qx = uv[0] - c->cx, qy = uv[1] - c->cy;
    if (c->model == DK_CAM_FISHEYE) {
        p[0] = qx / c->fx;
        p[1] = qy / c->fy;
    } else {
        double det = c->linear_c - c->linear_e * c->linear_d;
        if (!(fabs(det) > 1e-12)) return 0;
        p[0] = (qx - c->linear_d * qy) / det;
        p[1] = (-c->linear_e * qx + c->linear_c * qy) / det;
    }
    return isfinite(p[0]) && isfinite(p[1]);
}

static int unproject_radial(const dk_camera *c, const double uv[2], double ray[3])
{
    double p[2];
    if (!radial_unmatrix(c, uv, p)) return 0;
    double delta = hypot(p[0], p[1]);
    double tmax = effective_max_angle(c);
    double theta;
    if (c->model == DK_CAM_FISHEYE) {
        if (!solve_mono(fisheye_r, c->k, delta, 0, tmax, delta, 1e-12, &theta)) return 0;
    } else if (c->ftheta_ref == DK_FTHETA_PIXELDIST_TO_ANGLE) {
        double dbw, back;
        poly_eval(c->bw_poly, delta, &theta, &dbw);
        if (!(theta >= 0) || !(theta <= tmax) || !(dbw > 0)) return 0;
        /* bw may fold back and rise again beyond the image: only the first
         * increasing branch is the model, and it is the one the forward
         * direction finds. */
        if (!ftheta_bw_invert(c, theta, &back) || !(fabs(back - delta) <= 1e-6 * (1.0 + delta)))
            return 0;
    } else {
        double seed;
        poly_eval(c->bw_poly, delta, &seed, NULL);
        if (!solve_mono(poly_eval, c->fw_poly, delta, 0, tmax, seed, 1e-12, &theta)) return 0;
    }
    radial r;
    if (!radial_eval(c, theta, &r) || !(r.Q > 0)) return 0;
    /* sin θ / δ = sinc θ · θ/δ = sinc θ / Q(θ): no division by δ at the centre. */
    double s = sinc(theta) / r.Q;
    double v[3] = {s * p[0], s * p[1], cos(theta)};
    double n = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    if (!(n > 0) || !isfinite(n)) return 0;
    ray[0] = v[0] / n;
    ray[1] = v[1] / n;
    ray[2] = v[2] / n;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Pinhole and OpenCV                                                        */

typedef struct ocv_dist {
    double xd, yd;      /* distorted normalised coordinates */
    double D[4];        /* d(xd, yd)/d(x', y'), row-major */
    double icD;         /* radial factor */
} ocv_dist;

/* Returns 0 where the rational denominator vanishes. */
static int ocv_distort(const dk_camera *c, double x, double y, ocv_dist *o)
{
    const double *k = c->k, *p = c->p, *s = c->s;
    double r2 = x * x + y * y;
    double num = 1 + r2 * (k[0] + r2 * (k[1] + r2 * k[2]));
    double den = 1 + r2 * (k[3] + r2 * (k[4] + r2 * k[5]));
    if (!(fabs(den) > 1e-8)) return 0;
    double dnum = k[0] + r2 * (2 * k[1] + r2 * 3 * k[2]);
    double dden = k[3] + r2 * (2 * k[4] + r2 * 3 * k[5]);
    double icD = num / den;
    double dicD = (dnum * den - num * dden) / (den * den);  /* d icD / d r2 */
    double xy = x * y;
    o->icD = icD;
    o->xd = icD * x + 2 * p[0] * xy + p[1] * (r2 + 2 * x * x) + s[0] * r2 + s[1] * r2 * r2;
    o->yd = icD * y + p[0] * (r2 + 2 * y * y) + 2 * p[1] * xy + s[2] * r2 + s[3] * r2 * r2;
    double sx = s[0] + 2 * s[1] * r2, sy = s[2] + 2 * s[3] * r2;  /* d(prism)/d r2 */
    o->D[0] = icD + 2 * x * x * dicD + 2 * p[0] * y + 6 * p[1] * x + 2 * x * sx;
    o->D[1] = 2 * x * y * dicD + 2 * p[0] * x + 2 * p[1] * y + 2 * y * sx;
    o->D[2] = 2 * x * y * dicD + 2 * p[0] * x + 2 * p[1] * y + 2 * x * sy;
    o->D[3] = icD + 2 * y * y * dicD + 6 * p[0] * y + 2 * p[1] * x + 2 * y * sy;
    return isfinite(o->xd) && isfinite(o->yd);
}

static int project_perspective(const dk_camera *c, const double pt[3], double uv[2], double J[6])
{
    double x = pt[0], y = pt[1], z = pt[2];
    if (z == 0 || !isfinite(x) || !isfinite(y) || !isfinite(z)) return 0;
    double xn = x / z, yn = y / z;
    if (c->model == DK_CAM_PINHOLE) {
        uv[0] = c->fx * xn + c->cx;
        uv[1] = c->fy * yn + c->cy;
        if (J) {
            J[0] = c->fx / z;
            J[1] = 0;
            J[2] = -c->fx * xn / z;
            J[3] = 0;
            J[4] = c->fy / z;
            J[5] = -c->fy * yn / z;
        }
        return z > 0 && in_image(c, uv[0], uv[1]);
    }
    ocv_dist o;
    if (!ocv_distort(c, xn, yn, &o)) return 0;
    uv[0] = c->fx * o.xd + c->cx;
    uv[1] = c->fy * o.yd + c->cy;
    if (J) {
        /* d(x', y')/d(x, y, z) = [[1/z, 0, -x'/z], [0, 1/z, -y'/z]] */
        double iz = 1.0 / z;
        J[0] = c->fx * o.D[0] * iz;
        J[1] = c->fx * o.D[1] * iz;
        J[2] = -c->fx * (o.D[0] * xn + o.D[1] * yn) * iz;
        J[3] = c->fy * o.D[2] * iz;
        J[4] = c->fy * o.D[3] * iz;
        J[5] = -c->fy * (o.D[2] * xn + o.D[3] * yn) * iz;
    }
    /* icD > 0.8 as gsplat: below it the radial polynomial is outside its
     * calibrated range and, for icD < 0, the point would flip through the centre. */
    return z > 0 && o.icD > 0.8 && in_image(c, uv[0], uv[1]);
}

static int unproject_perspective(const dk_camera *c, const double uv[2], double ray[3])
{
    double xd = (uv[0] - c->cx) / c->fx, yd = (uv[1] - c->cy) / c->fy;
    if (!isfinite(xd) || !isfinite(yd)) return 0;
    double x = xd, y = yd;
    if (c->model == DK_CAM_OPENCV) {
        int converged = 0;
        for (int it = 0; it < 50; it++) {
            ocv_dist o;
            if (!ocv_distort(c, x, y, &o)) return 0;
            double rx = o.xd - xd, ry = o.yd - yd;
            double det = o.D[0] * o.D[3] - o.D[1] * o.D[2];
            if (!(fabs(det) > 1e-12)) return 0;
            double dx = (o.D[3] * rx - o.D[1] * ry) / det;
            double dy = (-o.D[2] * rx + o.D[0] * ry) / det;
            x -= dx;
            y -= dy;
            if (!isfinite(x) || !isfinite(y)) return 0;
            if (hypot(dx, dy) < 1e-12 * fmax(1.0, hypot(x, y))) {
                converged = 1;
                break;
            }
        }
        if (!converged) return 0;
        /* The same domain as dk_camera_project: a ray it would reject is no answer. */
        ocv_dist o;
        if (!ocv_distort(c, x, y, &o) || !(o.icD > 0.8)) return 0;
    }
    double n = sqrt(x * x + y * y + 1.0);
    ray[0] = x / n;
    ray[1] = y / n;
    ray[2] = 1.0 / n;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Public projection API                                                     */

int dk_camera_project(const dk_camera *c, const double p[3], double uv[2], double J[6])
{
    if (!c || !p || !uv) return 0;
    switch (c->model) {
    case DK_CAM_PINHOLE:
    case DK_CAM_OPENCV:
        return project_perspective(c, p, uv, J);
    case DK_CAM_FISHEYE:
    case DK_CAM_FTHETA:
        if (!isfinite(p[0]) || !isfinite(p[1]) || !isfinite(p[2])) return 0;
        return project_radial(c, p, uv, J);
    }
    return 0;
}

int dk_camera_unproject(const dk_camera *c, const double uv[2], double ray[3])
{
    if (!c || !uv || !ray || !isfinite(uv[0]) || !isfinite(uv[1])) return 0;
    switch (c->model) {
    case DK_CAM_PINHOLE:
    case DK_CAM_OPENCV:
        return unproject_perspective(c, uv, ray);
    case DK_CAM_FISHEYE:
    case DK_CAM_FTHETA:
        return unproject_radial(c, uv, ray);
    }
    return 0;
}

double dk_camera_shutter_time(const dk_camera *c, const double uv[2])
{
    if (!c || !uv) return 0;
    double W = c->width, H = c->height, t;
    switch (c->shutter) {
    case DK_SHUTTER_TOP_TO_BOTTOM:
        t = H > 1 ? floor(uv[1]) / (H - 1) : 0;
        break;
    case DK_SHUTTER_BOTTOM_TO_TOP:
        t = H > 1 ? (H - ceil(uv[1])) / (H - 1) : 0;
        break;
    case DK_SHUTTER_LEFT_TO_RIGHT:
        t = W > 1 ? floor(uv[0]) / (W - 1) : 0;
        break;
    case DK_SHUTTER_RIGHT_TO_LEFT:
        t = W > 1 ? (W - ceil(uv[0])) / (W - 1) : 0;
        break;
    default:
        t = 0;
        break;
    }
    if (!(t >= 0)) return 0;  /* also NaN */
    return t > 1 ? 1 : t;
}

/* ------------------------------------------------------------------------ */
/* Batch functions                                                           */

/* double -> float without the undefined behaviour of an out-of-range cast. */
static float to_f32(double v)
{
    if (v > FLT_MAX) return INFINITY;
    if (v < -FLT_MAX) return -INFINITY;
    return (float)v;
}

typedef struct project_job {
    const dk_camera *c;
    const float *xyz;
    float *uv;
    uint8_t *valid;
} project_job;

static void project_range(void *ctx, int64_t begin, int64_t end, int ith)
{
    (void)ith;
    const project_job *j = ctx;
    for (int64_t i = begin; i < end; i++) {
        double p[3] = {j->xyz[3 * i], j->xyz[3 * i + 1], j->xyz[3 * i + 2]};
        double uv[2] = {NAN, NAN};
        int ok = dk_camera_project(j->c, p, uv, NULL);
        j->uv[2 * i] = to_f32(uv[0]);
        j->uv[2 * i + 1] = to_f32(uv[1]);
        if (j->valid) j->valid[i] = (uint8_t)ok;
    }
}

int dk_camera_project_points(const dk_camera *c, dk_pool *pool, int64_t n, const float *xyz,
                             float *uv, uint8_t *valid)
{
    if (!c || !xyz || !uv) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (n < 0) return dk__error(DK_EINVAL, __func__, "n = %lld is negative", (long long)n);
    project_job j = {c, xyz, uv, valid};
    return dk_pool_for(pool, n, 1024, project_range, &j);
}

typedef struct rays_job {
    const dk_camera *c;
    float *rays;
    uint8_t *valid;
} rays_job;

static void rays_range(void *ctx, int64_t begin, int64_t end, int ith)
{
    (void)ith;
    const rays_job *j = ctx;
    int64_t w = j->c->width;
    for (int64_t i = begin; i < end; i++) {
        double uv[2] = {(double)(i % w) + 0.5, (double)(i / w) + 0.5};
        double r[3];
        int ok = dk_camera_unproject(j->c, uv, r);
        if (!ok) r[0] = r[1] = r[2] = 0;
        j->rays[3 * i] = (float)r[0];
        j->rays[3 * i + 1] = (float)r[1];
        j->rays[3 * i + 2] = (float)r[2];
        if (j->valid) j->valid[i] = (uint8_t)ok;
    }
}

int dk_camera_pixel_rays(const dk_camera *c, dk_pool *pool, float *rays, uint8_t *valid)
{
    if (!c || !rays) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (c->width < 1 || c->height < 1 || c->width > 65536 || c->height > 65536)
        return dk__error(DK_EINVAL, __func__, "image size %dx%d outside [1, 65536]", c->width,
                         c->height);
    rays_job j = {c, rays, valid};
    /* Whole rows per chunk keep the i % w, i / w split cheap and writes local. */
    return dk_pool_for(pool, (int64_t)c->width * c->height, (int64_t)c->width * 4, rays_range, &j);
}

/* ------------------------------------------------------------------------ */
/* Names                                                                     */

static const char *const model_names[] = {"pinhole", "opencv", "fisheye", "ftheta"};

const char *dk_camera_model_name(dk_camera_model m)
{
    if ((int)m >= 0 && (int)m < 4) return model_names[m];
    return "unknown";
}

int dk_camera_model_parse(const char *name, dk_camera_model *out)
{
    if (!name || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    for (int i = 0; i < 4; i++)
        if (strcmp(name, model_names[i]) == 0) {
            *out = (dk_camera_model)i;
            return DK_OK;
        }
    return dk__error(DK_EINVAL, __func__,
                     "unknown camera model \"%s\" (pinhole, opencv, fisheye, ftheta)", name);
}

/* ------------------------------------------------------------------------ */
/* Validation, max_angle derivation, f-theta polynomial fit                  */

typedef struct vmsg {
    char text[DK_ERRMSG_MAX];
} vmsg;

static int vfail(vmsg *m, const char *fmt, ...) DK_PRINTF(2, 3);
static int vfail(vmsg *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->text, sizeof m->text, fmt, ap);
    va_end(ap);
    return DK_EINVAL;
}

static const char *finite_word(double v)
{
    return isnan(v) ? "NaN" : "infinite";
}

/* The radial distance function D of a fisheye camera or an FW-reference
 * f-theta (θ -> distance). */
static void theta_dist_fn(const dk_camera *c, mono_fn *fn, const double **coef)
{
    if (c->model == DK_CAM_FISHEYE) {
        *fn = fisheye_r;
        *coef = c->k;
    } else {
        *fn = poly_eval;
        *coef = c->fw_poly;
    }
}

/* The largest distance (in p units) of the image corners, margin included. */
static double corner_distance(const dk_camera *c)
{
    double mw = c->margin * c->width, mh = c->margin * c->height;
    double us[2] = {-mw, c->width + mw}, vs[2] = {-mh, c->height + mh};
    double best = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            double uv[2] = {us[i], vs[j]}, p[2];
            if (radial_unmatrix(c, uv, p)) best = fmax(best, hypot(p[0], p[1]));
        }
    return best;
}

/* First x in (0, xmax] where the derivative of fn stops being positive
 * (sampled, then bisected); xmax if it never does. */
static double first_stop(mono_fn fn, const double *coef, double xmax, int n)
{
    double prev = 0, f, d;
    for (int i = 1; i <= n; i++) {
        double x = xmax * i / n;
        fn(coef, x, &f, &d);
        if (!(d > 0)) {
            double lo = prev, hi = x;
            for (int it = 0; it < 100 && hi - lo > 1e-15 * hi; it++) {
                double mid = 0.5 * (lo + hi);
                fn(coef, mid, &f, &d);
                if (d > 0)
                    lo = mid;
                else
                    hi = mid;
            }
            return lo;
        }
        prev = x;
    }
    return xmax;
}

/* Least squares y ≈ Σ_{k=1..5} a_k x^k over samples; coefficients out[0..5]
 * with out[0] = 0. Samples are scaled to [0, 1] for conditioning. */
static void fit_poly5(const double *xs, const double *ys, int n, double out[6])
{
    double xmax = 0;
    for (int i = 0; i < n; i++) xmax = fmax(xmax, fabs(xs[i]));
    memset(out, 0, 6 * sizeof *out);
    if (!(xmax > 0)) return;
    double A[5][6];
    memset(A, 0, sizeof A);
    for (int i = 0; i < n; i++) {
        double t = xs[i] / xmax, phi[5];
        phi[0] = t;
        for (int k = 1; k < 5; k++) phi[k] = phi[k - 1] * t;
        for (int r = 0; r < 5; r++) {
            for (int col = 0; col < 5; col++) A[r][col] += phi[r] * phi[col];
            A[r][5] += phi[r] * ys[i];
        }
    }
    /* Gaussian elimination with partial pivoting on the augmented matrix. */
    for (int col = 0; col < 5; col++) {
        int piv = col;
        for (int r = col + 1; r < 5; r++)
            if (fabs(A[r][col]) > fabs(A[piv][col])) piv = r;
        if (!(fabs(A[piv][col]) > 1e-300)) return;
        if (piv != col)
            for (int k = 0; k < 6; k++) {
                double tmp = A[col][k];
                A[col][k] = A[piv][k];
                A[piv][k] = tmp;
            }
        for (int r = col + 1; r < 5; r++) {
            double f = A[r][col] / A[col][col];
            for (int k = col; k < 6; k++) A[r][k] -= f * A[col][k];
        }
    }
    double a[5];
    for (int r = 4; r >= 0; r--) {
        double s = A[r][5];
        for (int k = r + 1; k < 5; k++) s -= A[r][k] * a[k];
        a[r] = s / A[r][r];
    }
    double scale = 1;
    for (int k = 0; k < 5; k++) {
        scale *= xmax;
        out[k + 1] = a[k] / scale;
        if (!isfinite(out[k + 1])) {
            memset(out, 0, 6 * sizeof *out);
            return;
        }
    }
}

#define FIT_SAMPLES 256

/* Checks the radial model of a fisheye or f-theta camera, derives max_angle
 * and fits the non-reference f-theta polynomial (when asked to or when it
 * is all zero). */
static int check_radial(dk_camera *c, vmsg *m, int refit)
{
    const char *mn = dk_camera_model_name(c->model);
    double dc = corner_distance(c);
    if (!(dc > 0)) return vfail(m, "%s: the image corners are not at a positive distance", mn);

    if (c->model == DK_CAM_FTHETA && c->ftheta_ref == DK_FTHETA_PIXELDIST_TO_ANGLE) {
        const double *bw = c->bw_poly;
        if (bw[0] != 0)
            return vfail(m, "ftheta: bw_poly[0] = %g must be 0 (the principal point is the "
                            "optical axis)", bw[0]);
        if (!(bw[1] > 0))
            return vfail(m, "ftheta: bw_poly does not increase from 0 (bw_poly[1] = %g)", bw[1]);
        /* δmax: where bw reaches max_angle; must be on the increasing branch. */
        double dmax, f, d;
        if (c->max_angle == 0) {
            double dstop = first_stop(poly_eval, bw, dc, 2048);
            poly_eval(bw, dstop, &f, NULL);
            if (f > PI) {
                if (!solve_mono(poly_eval, bw, PI, 0, dstop, 0.5 * dstop, 1e-12, &dmax))
                    return vfail(m, "ftheta: cannot invert bw_poly at pi");
                c->max_angle = PI;
            } else {
                dmax = dstop;
                c->max_angle = f;
            }
            if (!(c->max_angle > 1e-6))
                return vfail(m, "ftheta: derived max_angle %g is not positive", c->max_angle);
        } else {
            /* Walk out until bw reaches max_angle or stops increasing. A
             * max_angle derived earlier sits exactly on the fold, so the
             * fold itself counts when bw reaches max_angle there (to 1e-9). */
            double h = dc / 512, x = 0;
            int n = 0;
            for (;;) {
                x += h;
                poly_eval(bw, x, &f, &d);
                if (!(d > 0)) {
                    double lo = x - h, hi = x;
                    for (int it = 0; it < 100 && hi - lo > 1e-15 * hi; it++) {
                        double mid = 0.5 * (lo + hi);
                        poly_eval(bw, mid, &f, &d);
                        if (d > 0)
                            lo = mid;
                        else
                            hi = mid;
                    }
                    poly_eval(bw, lo, &f, NULL);
                    if (f >= c->max_angle - 1e-9) {
                        x = lo;
                        break;
                    }
                    return vfail(m, "ftheta: max_angle %g exceeds the increasing range of bw_poly "
                                    "(it stops increasing at pixel distance %g, angle %g)",
                                 c->max_angle, lo, f);
                }
                if (f >= c->max_angle) break;
                if (++n > 512 * 64)
                    return vfail(m, "ftheta: bw_poly does not reach max_angle %g", c->max_angle);
            }
            poly_eval(bw, x, &f, NULL);
            if (f <= c->max_angle)
                dmax = x;
            else if (!solve_mono(poly_eval, bw, c->max_angle, 0, x, x - 0.5 * h, 1e-12, &dmax))
                return vfail(m, "ftheta: cannot invert bw_poly at max_angle %g", c->max_angle);
        }
        int empty = 1;
        for (int i = 0; i < 6; i++) empty &= c->fw_poly[i] == 0;
        if (refit || empty) {
            double ts[FIT_SAMPLES], ds[FIT_SAMPLES];
            for (int i = 0; i < FIT_SAMPLES; i++) {
                ds[i] = dmax * i / (FIT_SAMPLES - 1);
                poly_eval(bw, ds[i], &ts[i], NULL);
            }
            fit_poly5(ts, ds, FIT_SAMPLES, c->fw_poly);
        }
        return DK_OK;
    }

    mono_fn fn;
    const double *coef;
    theta_dist_fn(c, &fn, &coef);
    const char *poly = c->model == DK_CAM_FISHEYE ? "r(theta)" : "fw_poly";
    if (c->model == DK_CAM_FTHETA) {
        if (coef[0] != 0)
            return vfail(m, "ftheta: fw_poly[0] = %g must be 0 (the optical axis maps to the "
                            "principal point)", coef[0]);
        if (!(coef[1] > 0))
            return vfail(m, "ftheta: fw_poly does not increase from 0 (fw_poly[1] = %g)", coef[1]);
    }
    if (c->max_angle == 0) {
        double tstop = first_stop(fn, coef, PI, 4096);
        double f;
        fn(coef, tstop, &f, NULL);
        double tmax = tstop;
        if (f > dc && !solve_mono(fn, coef, dc, 0, tstop, 0.5 * tstop, 1e-12, &tmax))
            return vfail(m, "%s: cannot invert %s at the image corner", mn, poly);
        if (!(tmax > 1e-6))
            return vfail(m, "%s: derived max_angle %g is not positive (%s does not increase)", mn,
                         tmax, poly);
        c->max_angle = tmax;
    } else {
        /* A max_angle derived earlier lies on the fold itself: tolerate it. */
        double tstop = first_stop(fn, coef, c->max_angle, 1024);
        if (tstop < c->max_angle - 1e-9)
            return vfail(m, "%s: max_angle %g exceeds the increasing range of %s (it stops "
                            "increasing at %g rad)", mn, c->max_angle, poly, tstop);
    }
    if (c->model == DK_CAM_FTHETA) {
        int empty = 1;
        for (int i = 0; i < 6; i++) empty &= c->bw_poly[i] == 0;
        if (refit || empty) {
            double ts[FIT_SAMPLES], ds[FIT_SAMPLES];
            for (int i = 0; i < FIT_SAMPLES; i++) {
                ts[i] = c->max_angle * i / (FIT_SAMPLES - 1);
                poly_eval(c->fw_poly, ts[i], &ds[i], NULL);
            }
            fit_poly5(ds, ts, FIT_SAMPLES, c->bw_poly);
        }
    }
    return DK_OK;
}

static int check_camera(dk_camera *c, vmsg *m, int refit)
{
    if ((int)c->model < 0 || (int)c->model > 3)
        return vfail(m, "model = %d is not a dk_camera_model", (int)c->model);
    const char *mn = dk_camera_model_name(c->model);
    if (c->width < 1 || c->width > 65536 || c->height < 1 || c->height > 65536)
        return vfail(m, "%s: size %dx%d outside [1, 65536]", mn, c->width, c->height);

#define FINITE(expr, name)                                                                  \
    do {                                                                                    \
        if (!isfinite(expr)) return vfail(m, "%s: %s is %s", mn, name, finite_word(expr));  \
    } while (0)
#define FINITE_I(arr, i)                                                                    \
    do {                                                                                    \
        if (!isfinite(c->arr[i]))                                                           \
            return vfail(m, "%s: %s[%d] is %s", mn, #arr, i, finite_word(c->arr[i]));       \
    } while (0)

    FINITE(c->cx, "cx");
    FINITE(c->cy, "cy");
    FINITE(c->margin, "margin");
    FINITE(c->max_angle, "max_angle");
    if (!(c->margin >= 0)) return vfail(m, "%s: margin = %g must be >= 0", mn, c->margin);
    if ((int)c->shutter < DK_SHUTTER_GLOBAL || (int)c->shutter > DK_SHUTTER_RIGHT_TO_LEFT)
        return vfail(m, "%s: shutter = %d is not a dk_shutter", mn, (int)c->shutter);
    if (c->model != DK_CAM_FTHETA) {
        FINITE(c->fx, "fx");
        FINITE(c->fy, "fy");
        if (!(c->fx > 0)) return vfail(m, "%s: fx = %g must be > 0", mn, c->fx);
        if (!(c->fy > 0)) return vfail(m, "%s: fy = %g must be > 0", mn, c->fy);
    }
    switch (c->model) {
    case DK_CAM_PINHOLE:
        return DK_OK;
    case DK_CAM_OPENCV:
        for (int i = 0; i < 6; i++) FINITE_I(k, i);
        for (int i = 0; i < 2; i++) FINITE_I(p, i);
        for (int i = 0; i < 4; i++) FINITE_I(s, i);
        return DK_OK;
    case DK_CAM_FISHEYE:
        for (int i = 0; i < 4; i++) FINITE_I(k, i);
        break;
    case DK_CAM_FTHETA:
        if ((int)c->ftheta_ref != DK_FTHETA_ANGLE_TO_PIXELDIST &&
            (int)c->ftheta_ref != DK_FTHETA_PIXELDIST_TO_ANGLE)
            return vfail(m, "ftheta: ftheta_ref = %d is not a dk_ftheta_ref", (int)c->ftheta_ref);
        for (int i = 0; i < 6; i++) FINITE_I(fw_poly, i);
        for (int i = 0; i < 6; i++) FINITE_I(bw_poly, i);
        FINITE(c->linear_c, "linear_c");
        FINITE(c->linear_d, "linear_d");
        FINITE(c->linear_e, "linear_e");
        if (!(fabs(c->linear_c - c->linear_e * c->linear_d) > 1e-12))
            return vfail(m, "ftheta: linear_c - linear_e * linear_d = %g must not be 0",
                         c->linear_c - c->linear_e * c->linear_d);
        break;
    }
#undef FINITE
#undef FINITE_I
    if (!(c->max_angle >= 0) || c->max_angle > PI)
        return vfail(m, "%s: max_angle = %g outside [0, pi]", mn, c->max_angle);
    return check_radial(c, m, refit);
}

/* Validates into a copy, so a failing call leaves *c untouched. */
static int camera_complete(dk_camera *c, vmsg *m, int refit)
{
    dk_camera t = *c;
    int st = check_camera(&t, m, refit);
    if (st == DK_OK) *c = t;
    return st;
}

int dk_camera_validate(dk_camera *c)
{
    if (!c) return dk__error(DK_EINVAL, __func__, "c is NULL");
    vmsg m;
    int st = camera_complete(c, &m, 0);
    if (st) return dk__error(st, __func__, "%s", m.text);
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Initialisers                                                              */

static void init_common(dk_camera *c, dk_camera_model model, int width, int height, double fx,
                        double fy, double cx, double cy)
{
    memset(c, 0, sizeof *c);
    c->model = model;
    c->width = width;
    c->height = height;
    c->fx = fx;
    c->fy = fy;
    c->cx = cx;
    c->cy = cy;
    c->shutter = DK_SHUTTER_GLOBAL;
}

void dk_camera_init_pinhole(dk_camera *c, int width, int height, double fx, double fy, double cx,
                            double cy)
{
    if (!c) return;
    init_common(c, DK_CAM_PINHOLE, width, height, fx, fy, cx, cy);
}

void dk_camera_init_opencv(dk_camera *c, int width, int height, double fx, double fy, double cx,
                           double cy, const double k[6], const double p[2], const double s[4])
{
    if (!c) return;
    init_common(c, DK_CAM_OPENCV, width, height, fx, fy, cx, cy);
    if (k) memcpy(c->k, k, 6 * sizeof *k);
    if (p) memcpy(c->p, p, 2 * sizeof *p);
    if (s) memcpy(c->s, s, 4 * sizeof *s);
}

void dk_camera_init_fisheye(dk_camera *c, int width, int height, double fx, double fy, double cx,
                            double cy, const double k[4], double max_angle)
{
    if (!c) return;
    init_common(c, DK_CAM_FISHEYE, width, height, fx, fy, cx, cy);
    if (k) memcpy(c->k, k, 4 * sizeof *k);
    c->max_angle = max_angle;
    vmsg m;
    (void)camera_complete(c, &m, 0);  /* invalid input: left for dk_camera_validate to report */
}

void dk_camera_init_ftheta(dk_camera *c, int width, int height, double cx, double cy,
                           dk_ftheta_ref ref, const double poly[6], const double linear_cde[3],
                           double max_angle)
{
    if (!c) return;
    init_common(c, DK_CAM_FTHETA, width, height, 0, 0, cx, cy);
    c->ftheta_ref = ref;
    if (poly) memcpy(ref == DK_FTHETA_PIXELDIST_TO_ANGLE ? c->bw_poly : c->fw_poly, poly,
                     6 * sizeof *poly);
    c->linear_c = linear_cde ? linear_cde[0] : 1.0;
    c->linear_d = linear_cde ? linear_cde[1] : 0.0;
    c->linear_e = linear_cde ? linear_cde[2] : 0.0;
    c->max_angle = max_angle;
    vmsg m;
    (void)camera_complete(c, &m, 1);
}
