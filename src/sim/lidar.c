/*
 * Lidar rendering from Gaussian scenes: every ray is evaluated against the
 * 3-D Gaussians (peak of the density along the ray), not against a 2-D
 * projection, so beams at any elevation, sensor motion and moving actors are
 * exact.
 *
 * Stages, each deterministic regardless of the pool size:
 *   1. preprocess (parallel over Gaussians): activation, culling, precision
 *      matrix in the evaluation frame (or the actor's frame), a lower bound of
 *      t* over every ray, and a conservative angular box -> columns and beam
 *      ranks (beams sorted by elevation);
 *   2. binning into tiles of TC columns x TB beam ranks, as the camera
 *      rasterizer does (fixed chunks, 64-bit offsets, (distance, index) keys);
 *   3. per tile (parallel): sort the keys, walk the Gaussians front to back by
 *      the distance of their mean and evaluate the tile's rays inside the
 *      Gaussian's box, a row of rays at a time in 4, 8 or 16 lanes (AVX2 /
 *      AVX-512 picked at run time; actor Gaussians against the rays carried
 *      into the actor's frame once per tile). A contribution whose t*
 *      exceeds the smallest lower bound of t* among the Gaussians still to
 *      come waits in the ray's small pending list, so rays blend in exact t*
 *      order; the tile stops when all its rays have.
 *
 * Evaluation frame E: the lidar frame (static sensor) or the lidar frame at
 * mid-sweep (moving sensor, so that the per-column offsets are smallest).
 * Column c's ray in E: origin o_c, direction R_c d(b, c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivekit/sim.h"
#include "internal.h"
#include "sim_impl.h"

#define TC 32            /* columns per tile */
#define TB 8             /* beam ranks per tile */
#define KBUF 64          /* pending contributions per ray */
#define N_CHUNKS 64
#define ALPHA_MAX 0.99f
#define T_MIN 1e-4f
#define LN255 5.541263545158426
#define PI_D 3.14159265358979323846
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DK_LIDAR_X86 1   /* eval kernels for AVX2 and AVX-512 too, picked at run time */
#endif
#define ANG_SLACK 1e-6   /* radians added to every box bound (rounding) */

void dk_lidar_render_config_init(dk_lidar_render_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->lidar_to_world_end = dk_pose_identity();
    cfg->hit_threshold = 0.5;
    cfg->default_intensity = 0.5f;
    cfg->default_raydrop = 0.0f;
    cfg->raydrop_mode = DK_LIDAR_RAYDROP_THRESHOLD;
    cfg->raydrop_threshold = 0.5;
}

/* One Gaussian as the tile loop reads it: one cache line. */
typedef struct lgauss {
    float P[6];          /* Σ⁻¹ (xx, xy, xz, yy, yz, zz) in E or the actor frame */
    float mu[3];         /* mean, same frame */
    float k2;            /* 2 ln(255 opacity): alpha >= 1/255 iff m² <= k2 */
    float inten, drop;   /* activated lidar features */
    uint8_t r0, r1;      /* beam-rank range, inclusive */
    uint16_t pad_;
    int32_t actor;       /* -1 static, else index into the tracked actors */
    int32_t c0, span;    /* columns c0 .. c0 + span (mod n_columns); span < 0: culled */
} lgauss;
_Static_assert(sizeof(lgauss) == 64, "lgauss is one cache line");

/* Motion of one tracked actor over the sweep: poses at the window ends and
 * at the keyframes inside, with per-segment bounds. */
typedef struct actor_motion {
    int32_t id;
    int n;               /* samples */
    dk_pose *pose;       /* n */
    double *dt, *rot;    /* n - 1: translation distance and rotation angle */
} actor_motion;

typedef struct lidar_ctx {
    const dk_scene *s;
    const dk_lidar_model *m;
    const dk_lidar_render_config *cfg;
    int nb, nc;
    int moving;
    dk_pose e2w, w2e;             /* evaluation frame <-> world */
    double rwe[9], twe[3];        /* world -> E */
    /* per column: origin o_c and rotation R_c (E <- lidar at column c) */
    float *col_o, *col_r;         /* nc*3, nc*9 (moving only) */
    double *col_cos, *col_sin;    /* azimuth of column c without beam offset */
    double sensor_pad_dist, sensor_pad_rot;
    double off_min, off_max;
    /* beams by elevation */
    int rank_beam[DK_LIDAR_MAX_BEAMS];
    double rank_tan[DK_LIDAR_MAX_BEAMS];
    double beam_ce[DK_LIDAR_MAX_BEAMS], beam_se[DK_LIDAR_MAX_BEAMS];
    double beam_co[DK_LIDAR_MAX_BEAMS], beam_so[DK_LIDAR_MAX_BEAMS];
    /* actors */
    int n_act;
    actor_motion *act;
    /* Gaussians */
    lgauss *g;
    float *lb;                    /* lower bound of t* over every ray */
    float *dist;                  /* distance of the mean (actors: of their sweep's centre) */
    int tiles_x, tiles_y;
    int64_t n_chunks, chunk_len;
    uint32_t *chunk_counts;
    int64_t *chunk_offsets, *tile_start;
    uint64_t *keys;
    /* tile pass scratch, per thread */
    int64_t max_tile;
    uint64_t *sort_tmp;           /* nth * max_tile */
    unsigned char *ray_scratch;   /* nth * ray_scratch_size */
    size_t ray_scratch_size;
    int32_t *act_map;             /* nth * act_stride: slot -> local index or -1, then
                                     the local list of slots */
    size_t act_stride;            /* 2 * n_act rounded up to a cache line */
    struct ray_soa *act_rays;     /* nth * n_act: the tile's rays in each actor's frame */
    int (*eval_row)(const lgauss *restrict, const struct ray_soa *restrict, int, int, int, float,
                    float, float *restrict, float *restrict);
    float *range, *inten, *drop, *alpha;
} lidar_ctx;

/* ------------------------------------------------------------------------ */
/* argument checks                                                           */

static int check_pose(const dk_pose *p, const char *func, const char *what)
{
    double n = 0;
    for (int i = 0; i < 4; i++) {
        if (!isfinite(p->q[i]))
            return dk__error(DK_EINVAL, func, "%s: quaternion has non-finite values", what);
        n += p->q[i] * p->q[i];
    }
    for (int i = 0; i < 3; i++)
        if (!isfinite(p->t[i]))
            return dk__error(DK_EINVAL, func, "%s: translation has non-finite values", what);
    if (fabs(sqrt(n) - 1.0) > 1e-6)
        return dk__error(DK_EINVAL, func,
                         "%s: quaternion norm %.9g is not 1 (not a rigid pose)", what, sqrt(n));
    return DK_OK;
}

static int check_common(const dk_lidar_model *m, const dk_pose *l2w,
                        const dk_lidar_render_config *cfg, const char *func)
{
    if (dk_lidar_model_validate(m) != DK_OK) {
        char msg[DK_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", dk_errmsg());
        return dk__error(DK_EINVAL, func, "invalid lidar model: %s", msg);
    }
    for (int b = 0; b < m->n_beams; b++)
        if (!(fabs(m->elevation[b]) < 89.9 * PI_D / 180.0))
            return dk__error(DK_EINVAL, func,
                             "invalid lidar model: elevation[%d] = %g rad is not within +-89.9 deg",
                             b, m->elevation[b]);
    int st = check_pose(l2w, func, "lidar_to_world");
    if (st) return st;
    if (cfg->sensor_motion != 0 && cfg->sensor_motion != 1)
        return dk__error(DK_EINVAL, func, "sensor_motion = %d (0 or 1)", cfg->sensor_motion);
    if (cfg->sensor_motion && (st = check_pose(&cfg->lidar_to_world_end, func,
                                               "lidar_to_world_end")))
        return st;
    if (!isfinite(cfg->time)) return dk__error(DK_EINVAL, func, "time is not finite");
    if (!(cfg->hit_threshold > 0 && cfg->hit_threshold <= 1))
        return dk__error(DK_EINVAL, func, "hit_threshold = %g outside (0, 1]", cfg->hit_threshold);
    if (!(cfg->default_intensity >= 0 && cfg->default_intensity <= 1) ||
        !(cfg->default_raydrop >= 0 && cfg->default_raydrop <= 1))
        return dk__error(DK_EINVAL, func,
                         "default_intensity = %g, default_raydrop = %g: both must be in [0, 1]",
                         (double)cfg->default_intensity, (double)cfg->default_raydrop);
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* small maths                                                               */

static void rot_apply(const double r[9], const double v[3], double o[3])
{
    for (int i = 0; i < 3; i++) o[i] = r[i * 3] * v[0] + r[i * 3 + 1] * v[1] + r[i * 3 + 2] * v[2];
}

static void mat3_mul(const double a[9], const double b[9], double o[9])
{
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            o[i * 3 + j] = a[i * 3] * b[j] + a[i * 3 + 1] * b[3 + j] + a[i * 3 + 2] * b[6 + j];
}

/* Rotation angle of a unit quaternion. */
static double quat_angle(const double q[4])
{
    double v = sqrt(q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    return 2.0 * atan2(v, fabs(q[0]));
}

static double angle_between(const dk_pose *a, const dk_pose *b)
{
    dk_pose ai = dk_pose_inverse(a);
    dk_pose r = dk_pose_compose(&ai, b);
    return quat_angle(r.q);
}

/* Four lanes (GCC/Clang vector extensions: SSE2 on x86-64, NEON on arm64). */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

/* ------------------------------------------------------------------------ */
/* angular boxes                                                             */

/* Columns whose azimuth (for any beam offset) lies in [lo, hi] (radians, lidar
 * frame E): *c0 in [0, nc), *span in [0, nc-1]; returns 0 if none. */
static int columns_of(const lidar_ctx *L, double lo, double hi, int full, int32_t *c0,
                      int32_t *span)
{
    const int nc = L->nc;
    if (full || hi - lo >= 2 * PI_D) {
        *c0 = 0;
        *span = nc - 1;
        return 1;
    }
    const dk_lidar_model *m = L->m;
    /* c * 2π/n * dir + az0 + off ∈ [lo, hi]  =>  c * 2π/n ∈ [a, b] */
    double a, b;
    if (m->direction > 0) {
        a = lo - m->azimuth_start - L->off_max;
        b = hi - m->azimuth_start - L->off_min;
    } else {
        a = m->azimuth_start + L->off_min - hi;
        b = m->azimuth_start + L->off_max - lo;
    }
    double k = nc / (2 * PI_D);
    double ua = a * k, ub = b * k;
    double base = floor(ua / nc) * nc;   /* shift into [0, nc) */
    ua -= base;
    ub -= base;
    double f0 = ceil(ua), f1 = floor(ub);
    if (f1 < f0) return 0;
    if (f1 - f0 + 1 >= nc) {
        *c0 = 0;
        *span = nc - 1;
        return 1;
    }
    int64_t i0 = (int64_t)f0;
    i0 %= nc;   /* f0 may equal nc after the ceil */
    *c0 = (int32_t)i0;
    *span = (int32_t)(f1 - f0);
    return 1;
}

/* First rank whose tan(elevation) >= v (upper = 0) or > v (upper = 1):
 * branch-free binary search (the comparisons are unpredictable). */
static int rank_lower(const lidar_ctx *L, double v, int upper)
{
    const double *a = L->rank_tan;
    int base = 0, n = L->nb;
    while (n > 1) {
        int half = n / 2;
        int go = upper ? a[base + half] <= v : a[base + half] < v;
        base += go ? half : 0;
        n -= half;
    }
    return base + (upper ? a[base] <= v : a[base] < v);
}

/* Conservative angular box, in frame E seen from its origin, of the ellipsoid
 * (x - c)ᵀ Σ⁻¹ (x - c) <= k², widened by `pad` radians in every direction
 * (the sensor's own motion). Writes columns and beam ranks; 0 = not seen. */
static int box_of(const lidar_ctx *L, const double c[3], const double S[6], double k, double pad,
                  lgauss *g)
{
    const double sxx = S[0], sxy = S[1], syy = S[3], szz = S[5];
    double rho = sqrt(c[0] * c[0] + c[1] * c[1]);
    double k2 = k * k;
    /* Horizontal distance range of the xy-shadow (an ellipse). */
    double tr = 0.5 * (sxx + syy), dd = sqrt(0.25 * (sxx - syy) * (sxx - syy) + sxy * sxy);
    double lmax = tr + dd;
    double ext = k * sqrt(lmax > 0 ? lmax : 0);
    double rho_min = rho - ext, rho_max = rho + ext;
    double ez = k * sqrt(szz > 0 ? szz : 0);
    double z_lo = c[2] - ez, z_hi = c[2] + ez;
    /* Elevation bounds as tangents (z over horizontal distance), widened by
     * the slack (d tan / d angle = 1 + tan²) and, with sensor motion, by pad
     * radians through the angles. */
    double t_lo, t_hi, el_lo = 0, el_hi = 0;
    if (rho_min <= 0) {
        t_hi = z_hi > 0 ? INFINITY : z_hi / rho_max;
        t_lo = z_lo < 0 ? -INFINITY : z_lo / rho_max;
    } else {
        t_hi = z_hi / (z_hi >= 0 ? rho_min : rho_max);
        t_lo = z_lo / (z_lo >= 0 ? rho_max : rho_min);
    }
    if (pad > 0) {
        el_lo = atan(t_lo) - pad;   /* atan(±inf) = ±π/2 */
        el_hi = atan(t_hi) + pad;
        t_lo = el_lo <= -PI_D / 2 ? -INFINITY : tan(el_lo);
        t_hi = el_hi >= PI_D / 2 ? INFINITY : tan(el_hi);
    }
    t_lo -= ANG_SLACK * (1 + t_lo * t_lo);
    t_hi += ANG_SLACK * (1 + t_hi * t_hi);
    if (!(t_lo <= t_hi)) return 0;   /* NaN too */
    int r0 = rank_lower(L, t_lo, 0), r1 = rank_lower(L, t_hi, 1) - 1;
    if (r0 > r1) return 0;
    /* Azimuth: exact tangents of the xy-shadow from the z axis. */
    int full = 0;
    double az_lo = 0, az_hi = 0;
    if (rho <= 0) {
        full = 1;
    } else {
        double ux = c[0] / rho, uy = c[1] / rho;   /* u toward the centre, v = u rotated +90 */
        double a = ux * ux * sxx + 2 * ux * uy * sxy + uy * uy * syy;
        double cc = uy * uy * sxx - 2 * ux * uy * sxy + ux * ux * syy;
        double b = -ux * uy * sxx + (ux * ux - uy * uy) * sxy + ux * uy * syy;
        double A = rho * rho - k2 * a;
        if (!(A > 1e-12 * rho * rho)) {
            full = 1;
        } else {
            double disc = k2 * k2 * b * b + A * k2 * (cc > 0 ? cc : 0);
            double sq = sqrt(disc);
            /* tangent directions u + τ v, τ = tan of the angle from u */
            double tl = (-k2 * b - sq) / A, th = (-k2 * b + sq) / A;
            az_lo = atan2f((float)(uy + tl * ux), (float)(ux - tl * uy));
            az_hi = atan2f((float)(uy + th * ux), (float)(ux - th * uy));
            if (az_hi < az_lo) az_hi += 2 * PI_D;   /* across ±π */
            double elmax = fmax(fabs(el_lo), fabs(el_hi));
            double widen = ANG_SLACK + 1e-6;   /* + float atan2 */
            if (pad > 0) {
                if (elmax >= PI_D / 2)
                    full = 1;
                else
                    widen += asin(fmin(1.0, sin(pad) / cos(elmax)));
            }
            az_lo -= widen;
            az_hi += widen;
        }
    }
    if (!isfinite(az_lo) || !isfinite(az_hi)) full = 1;
    if (!columns_of(L, az_lo, az_hi, full, &g->c0, &g->span)) return 0;
    g->r0 = (uint8_t)r0;
    g->r1 = (uint8_t)r1;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* preprocessing                                                             */

static int find_actor(const lidar_ctx *L, int32_t id)
{
    int lo = 0, hi = L->n_act;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (L->act[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < L->n_act && L->act[lo].id == id ? lo : -1;
}

static float sigmoidf_d(double x)
{
    return (float)(1.0 / (1.0 + exp(-x)));
}

/* Returns 1 and fills g when the Gaussian can be seen; *lb its t* bound. */
static int preprocess_one(const lidar_ctx *L, int64_t i, lgauss *g, float *lb, float *dist_out)
{
    const dk_scene *s = L->s;
    const dk_lidar_render_config *cfg = L->cfg;
    double op = s->opacities[i];
    if (!(op > -5.537334267018537)) return 0;   /* sigmoid < 1/255, NaN */
    if (!isfinite(op)) return 0;
    /* k² = 2 ln(255 sigmoid(op)) */
    double k2 = 2.0 * (LN255 - log1p(exp(-op)));
    if (!(k2 > 0)) return 0;
    double k = sqrt(k2) * 1.0001;   /* slack: float evaluation at the boundary */
    const float *qf = s->rotations + i * 4;
    double q[4] = { qf[0], qf[1], qf[2], qf[3] };
    double qn = sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    if (!(qn >= 1e-12) || !isfinite(qn)) return 0;
    for (int j = 0; j < 4; j++) q[j] /= qn;
    double R[9];
    dk_quat_to_rotation(q, R);
    double sc[3], inv2[3], smax = 0;
    for (int j = 0; j < 3; j++) {
        sc[j] = exp((double)s->scales[i * 3 + j]);
        if (!(sc[j] > 0) || !isfinite(sc[j])) return 0;
        inv2[j] = 1.0 / (sc[j] * sc[j]);
        if (!(inv2[j] < 1e30)) return 0;   /* float range of Σ⁻¹ */
        if (sc[j] > smax) smax = sc[j];
    }
    double mu[3] = { s->means[i * 3], s->means[i * 3 + 1], s->means[i * 3 + 2] };
    if (!isfinite(mu[0]) || !isfinite(mu[1]) || !isfinite(mu[2])) return 0;
    float inten = cfg->default_intensity, drop = cfg->default_raydrop;
    if (s->lidar_intensity) {
        double a = s->lidar_intensity[i], b = s->lidar_raydrop ? s->lidar_raydrop[i] : -INFINITY;
        if (isnan(a) || isnan(b)) return 0;
        inten = sigmoidf_d(a);
        drop = s->lidar_raydrop ? sigmoidf_d(b) : cfg->default_raydrop;
    }
    int slot = -1;
    if (L->n_act && s->actor_id && s->actor_id[i] >= 0) slot = find_actor(L, s->actor_id[i]);

    /* The frame the Gaussian is stored in: E (static) or its actor's. */
    double M[9];   /* rotation of the Gaussian's axes into that frame */
    double mf[3];
    double centre[3], S[6], kbox, rad_extra = 0;
    if (slot < 0) {
        mat3_mul(L->rwe, R, M);
        rot_apply(L->rwe, mu, mf);
        for (int j = 0; j < 3; j++) mf[j] += L->twe[j];
        memcpy(centre, mf, sizeof centre);
        /* Σ in E = M S² Mᵀ */
        double sv[3] = { sc[0] * sc[0], sc[1] * sc[1], sc[2] * sc[2] };
        S[0] = M[0] * M[0] * sv[0] + M[1] * M[1] * sv[1] + M[2] * M[2] * sv[2];
        S[1] = M[0] * M[3] * sv[0] + M[1] * M[4] * sv[1] + M[2] * M[5] * sv[2];
        S[2] = M[0] * M[6] * sv[0] + M[1] * M[7] * sv[1] + M[2] * M[8] * sv[2];
        S[3] = M[3] * M[3] * sv[0] + M[4] * M[4] * sv[1] + M[5] * M[5] * sv[2];
        S[4] = M[3] * M[6] * sv[0] + M[4] * M[7] * sv[1] + M[5] * M[8] * sv[2];
        S[5] = M[6] * M[6] * sv[0] + M[7] * M[7] * sv[1] + M[8] * M[8] * sv[2];
        kbox = k;
    } else {
        memcpy(M, R, sizeof M);
        memcpy(mf, mu, sizeof mf);
        /* Where the mean can be during the sweep (see actor_motion): within
         * L/2 of a sample of each segment, L = distance + angle * |μ|. */
        const actor_motion *am = &L->act[slot];
        double lo[3] = { INFINITY, INFINITY, INFINITY }, hi[3] = { -INFINITY, -INFINITY, -INFINITY };
        double rl = sqrt(mu[0] * mu[0] + mu[1] * mu[1] + mu[2] * mu[2]);
        for (int j = 0; j < am->n; j++) {
            double p[3];
            dk_pose_apply(&am->pose[j], mu, p);
            double half = 0;
            if (j > 0) half = fmax(half, 0.5 * (am->dt[j - 1] + am->rot[j - 1] * rl));
            if (j + 1 < am->n) half = fmax(half, 0.5 * (am->dt[j] + am->rot[j] * rl));
            for (int a = 0; a < 3; a++) {
                lo[a] = fmin(lo[a], p[a] - half);
                hi[a] = fmax(hi[a], p[a] + half);
            }
        }
        double cw[3], hr = 0;
        for (int a = 0; a < 3; a++) {
            cw[a] = 0.5 * (lo[a] + hi[a]);
            hr += 0.25 * (hi[a] - lo[a]) * (hi[a] - lo[a]);
        }
        rot_apply(L->rwe, cw, centre);
        for (int a = 0; a < 3; a++) centre[a] += L->twe[a];
        double radius = sqrt(hr) + k * smax;
        S[0] = S[3] = S[5] = radius * radius;
        S[1] = S[2] = S[4] = 0;
        kbox = 1.0;
        rad_extra = sqrt(hr);
    }
    /* A contributing peak q = o + t* d lies in the ellipsoid (or the actor's
     * sphere), so every such q has |q| >= pmin: |q| is within k smax of the
     * mean, and |q| >= u.q >= |μ| - k sqrt(uᵀ Σ u) with u the direction of
     * the mean, much tighter for Gaussians flat along the line of sight.
     * Column origins lie within sensor_pad_dist of E's. */
    double dist = sqrt(centre[0] * centre[0] + centre[1] * centre[1] + centre[2] * centre[2]);
    double pmin = dist - k * smax - rad_extra;
    if (dist + k * smax + rad_extra + L->sensor_pad_dist < L->m->min_range) return 0;
    if (slot < 0 && dist > 0) {
        double u[3] = { centre[0] / dist, centre[1] / dist, centre[2] / dist };
        double su = u[0] * u[0] * S[0] + u[1] * u[1] * S[3] + u[2] * u[2] * S[5] +
                    2 * (u[0] * u[1] * S[1] + u[0] * u[2] * S[2] + u[1] * u[2] * S[4]);
        double along = dist - k * sqrt(su > 0 ? su : 0) * (1 + 1e-6);
        if (along > pmin) pmin = along;
    }
    double lower = pmin - L->sensor_pad_dist;
    if (lower > L->m->max_range) return 0;
    double pad = 0;
    if (L->moving) {
        if (lower <= 0)
            pad = PI_D;   /* the sensor may pass through it: every direction */
        else
            pad = asin(fmin(1.0, L->sensor_pad_dist / pmin)) + L->sensor_pad_rot;
    }
    if (pad >= PI_D / 2) {
        g->c0 = 0;
        g->span = L->nc - 1;
        g->r0 = 0;
        g->r1 = (uint8_t)(L->nb - 1);
    } else if (!box_of(L, centre, S, kbox, pad, g)) {
        return 0;
    }
    /* Σ⁻¹ = M S⁻² Mᵀ in the Gaussian's frame. */
    double P[6];
    P[0] = M[0] * M[0] * inv2[0] + M[1] * M[1] * inv2[1] + M[2] * M[2] * inv2[2];
    P[1] = M[0] * M[3] * inv2[0] + M[1] * M[4] * inv2[1] + M[2] * M[5] * inv2[2];
    P[2] = M[0] * M[6] * inv2[0] + M[1] * M[7] * inv2[1] + M[2] * M[8] * inv2[2];
    P[3] = M[3] * M[3] * inv2[0] + M[4] * M[4] * inv2[1] + M[5] * M[5] * inv2[2];
    P[4] = M[3] * M[6] * inv2[0] + M[4] * M[7] * inv2[1] + M[5] * M[8] * inv2[2];
    P[5] = M[6] * M[6] * inv2[0] + M[7] * M[7] * inv2[1] + M[8] * M[8] * inv2[2];
    for (int j = 0; j < 6; j++) {
        g->P[j] = (float)P[j];
        if (!isfinite(g->P[j])) return 0;
    }
    for (int j = 0; j < 3; j++) g->mu[j] = (float)mf[j];
    g->k2 = (float)k2;
    g->inten = inten;
    g->drop = drop;
    g->actor = slot;
    g->pad_ = 0;
    *dist_out = (float)dist;
    *lb = lower > 0 ? (float)lower : 0.0f;
    /* float rounding must not raise the bound above a true t* */
    *lb = nextafterf(*lb, 0.0f);
    if (!(*lb >= 0)) *lb = 0;
    return 1;
}

static void preprocess_range(void *ctx, int64_t begin, int64_t end, int ith)
{
    lidar_ctx *L = ctx;
    (void)ith;
    for (int64_t i = begin; i < end; i++) {
        lgauss *g = &L->g[i];
        if (!preprocess_one(L, i, g, &L->lb[i], &L->dist[i])) {
            memset(g, 0, sizeof *g);
            g->span = -1;
            L->lb[i] = 0;
            L->dist[i] = 0;
        }
    }
}

/* Tile columns of a Gaussian: up to two ranges [x0, x1]. Returns the count. */
static int tile_cols(const lidar_ctx *L, const lgauss *g, int x[4])
{
    int nc = L->nc, ntx = L->tiles_x;
    if (g->span >= nc - 1) {
        x[0] = 0;
        x[1] = ntx - 1;
        return 1;
    }
    int end = g->c0 + g->span;
    if (end < nc) {
        x[0] = g->c0 / TC;
        x[1] = end / TC;
        return 1;
    }
    x[0] = g->c0 / TC;
    x[1] = ntx - 1;
    x[2] = 0;
    x[3] = (end - nc) / TC;
    if (x[3] >= x[0]) {
        x[0] = 0;
        return 1;
    }
    return 2;
}

static void count_chunks(void *ctx, int64_t begin, int64_t end, int ith)
{
    lidar_ctx *L = ctx;
    (void)ith;
    int64_t nt = (int64_t)L->tiles_x * L->tiles_y;
    for (int64_t ch = begin; ch < end; ch++) {
        uint32_t *cnt = L->chunk_counts + ch * nt;
        int64_t g0 = ch * L->chunk_len, g1 = g0 + L->chunk_len;
        if (g1 > L->s->n) g1 = L->s->n;
        for (int64_t i = g0; i < g1; i++) {
            const lgauss *g = &L->g[i];
            if (g->span < 0) continue;
            int x[4], nr = tile_cols(L, g, x);
            for (int ty = g->r0 / TB; ty <= g->r1 / TB; ty++)
                for (int r = 0; r < nr; r++)
                    for (int tx = x[2 * r]; tx <= x[2 * r + 1]; tx++)
                        cnt[(int64_t)ty * L->tiles_x + tx]++;
        }
    }
}

static void fill_chunks(void *ctx, int64_t begin, int64_t end, int ith)
{
    lidar_ctx *L = ctx;
    (void)ith;
    int64_t nt = (int64_t)L->tiles_x * L->tiles_y;
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t *off = L->chunk_offsets + ch * nt;
        int64_t g0 = ch * L->chunk_len, g1 = g0 + L->chunk_len;
        if (g1 > L->s->n) g1 = L->s->n;
        for (int64_t i = g0; i < g1; i++) {
            const lgauss *g = &L->g[i];
            if (g->span < 0) continue;
            uint32_t lbits;
            memcpy(&lbits, &L->dist[i], sizeof lbits);
            uint64_t key = (uint64_t)lbits << 32 | (uint64_t)i;
            int x[4], nr = tile_cols(L, g, x);
            for (int ty = g->r0 / TB; ty <= g->r1 / TB; ty++)
                for (int r = 0; r < nr; r++)
                    for (int tx = x[2 * r]; tx <= x[2 * r + 1]; tx++)
                        L->keys[off[(int64_t)ty * L->tiles_x + tx]++] = key;
        }
    }
}

/* Stable LSD radix sort on the high 32 bits (the non-negative float bound). */
static void sort_keys(uint64_t *k, int64_t n, uint64_t *tmp)
{
    if (n < 48) {
        for (int64_t i = 1; i < n; i++) {
            uint64_t v = k[i];
            int64_t j = i - 1;
            while (j >= 0 && k[j] > v) {
                k[j + 1] = k[j];
                j--;
            }
            k[j + 1] = v;
        }
        return;
    }
    uint64_t *src = k, *dst = tmp;
    for (int pass = 0; pass < 4; pass++) {
        int shift = 32 + pass * 8;
        int64_t cnt[256] = { 0 };
        for (int64_t i = 0; i < n; i++) cnt[(src[i] >> shift) & 255]++;
        int64_t sum = 0;
        for (int b = 0; b < 256; b++) {
            int64_t c = cnt[b];
            cnt[b] = sum;
            sum += c;
        }
        for (int64_t i = 0; i < n; i++) dst[cnt[(src[i] >> shift) & 255]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
}

/* ------------------------------------------------------------------------ */
/* the tile pass                                                             */

typedef struct pend {
    float t, a, i, p;
} pend;

typedef struct ray_state {
    float T, W, Wt, Wi, Wp;
    int done;
    int h, np;   /* pending entries pb[h .. h+np), sorted by t */
} ray_state;

#define TILE_RAYS (TC * TB)

/* The rays of a tile in one frame (E, or an actor's frame), structure of
 * arrays: ray (row, j) at index row * TC + j. */
typedef struct ray_soa {
    float dx[TILE_RAYS], dy[TILE_RAYS], dz[TILE_RAYS];   /* directions */
    float ox[TC], oy[TC], oz[TC];                        /* column origins */
} ray_soa;

typedef struct tile_scratch {
    ray_state st[TILE_RAYS];
    ray_soa rays;                  /* in E */
    float tt[TC], al[TC];          /* one row of evaluations */
    pend pb[TILE_RAYS][KBUF];
} tile_scratch;

/* Adds one contribution in t* order. Returns 1 when the ray is done. */
static inline int commit(ray_state *r, float t, float a, float inten, float drop)
{
    float nt = r->T * (1.0f - a);
    if (nt < T_MIN) {
        r->done = 1;
        r->np = 0;
        r->h = 0;
        return 1;
    }
    float w = a * r->T;
    r->W += w;
    r->Wt += t * w;
    r->Wi += inten * w;
    r->Wp += drop * w;
    r->T = nt;
    return 0;
}

/* Commits pending entries with t <= bound. Returns 1 when the ray is done. */
static inline int commit_pending(ray_state *r, pend *pb, float bound)
{
    while (r->np > 0 && pb[r->h].t <= bound) {
        const pend *e = &pb[r->h];
        if (commit(r, e->t, e->a, e->i, e->p)) return 1;
        r->h++;
        r->np--;
    }
    if (r->np == 0) r->h = 0;
    return 0;
}

/* Adds a contribution of the Gaussian whose successors all have t* >=
 * lb_next. Returns 1 when the ray is done. */
static inline int add_contrib(ray_state *r, pend *pb, float t, float al, float inten,
                              float drop, float lb_next)
{
    if (r->np == 0 && t <= lb_next) return commit(r, t, al, inten, drop);
    if (r->np == KBUF) {   /* full: the nearest goes now */
        if (commit_pending(r, pb, pb[r->h].t)) return 1;
    }
    if (r->h + r->np == KBUF) {   /* room at the front only: compact */
        memmove(pb, pb + r->h, (size_t)r->np * sizeof *pb);
        r->h = 0;
    }
    int at = r->h + r->np;
    while (at > r->h && pb[at - 1].t > t) {
        pb[at] = pb[at - 1];
        at--;
    }
    pb[at] = (pend){ t, al, inten, drop };
    r->np++;
    return commit_pending(r, pb, lb_next);
}

/* Evaluates g against the rays (row, j), j in [ja & ~(W-1), jb] rounded up
 * to whole W-lane vectors: t* into tt[j] and alpha into al[j] (0 where the
 * peak is outside [tmin, tmax] or alpha < 1/255). Returns nonzero when some
 * lane has alpha > 0. Per ray o + t d (g's frame):
 *   t* = dᵀP(μ - o) / dᵀPd; the residual r = t* d - (μ - o) is formed
 *   explicitly (t*² a - 2 t* b + μᵀPμ cancels catastrophically for small far
 *   Gaussians); alpha = opacity exp(-rᵀPr/2) = exp((k2 - rᵀPr)/2) / 255,
 *   capped at ALPHA_MAX. e^x, x in [-6, 0]: rounding by the 1.5 * 2^23 trick
 *   (the low mantissa bits of the rounded value are n, which become 2^n),
 *   Cody-Waite reduction, degree-6 Taylor polynomial (Estrin). */
#define EVAL_ROW_FN(NAME, ATTR, VF, VI, VU, W)                                                     \
    ATTR static int NAME(const lgauss *restrict g, const ray_soa *restrict rs, int row, int ja,    \
                         int jb, float tmin, float tmax, float *restrict tt,                       \
                         float *restrict alo)                                                      \
    {                                                                                              \
        const VF zero = { 0 };                                                                     \
        const VF P0 = zero + g->P[0], P1 = zero + g->P[1], P2 = zero + g->P[2];                    \
        const VF P3 = zero + g->P[3], P4 = zero + g->P[4], P5 = zero + g->P[5];                    \
        const VF mx = zero + g->mu[0], my = zero + g->mu[1], mz = zero + g->mu[2];                 \
        const float hk2 = 0.5f * g->k2;                                                            \
        VI any = (VI)zero;                                                                         \
        for (int j = ja & ~(W - 1); j <= jb; j += W) {                                             \
            VF d0, d1, d2, o0, o1, o2;                                                             \
            memcpy(&d0, rs->dx + row + j, sizeof d0);                                              \
            memcpy(&d1, rs->dy + row + j, sizeof d1);                                              \
            memcpy(&d2, rs->dz + row + j, sizeof d2);                                              \
            memcpy(&o0, rs->ox + j, sizeof o0);                                                    \
            memcpy(&o1, rs->oy + j, sizeof o1);                                                    \
            memcpy(&o2, rs->oz + j, sizeof o2);                                                    \
            VF pd0 = P0 * d0 + P1 * d1 + P2 * d2;                                                  \
            VF pd1 = P1 * d0 + P3 * d1 + P4 * d2;                                                  \
            VF pd2 = P2 * d0 + P4 * d1 + P5 * d2;                                                  \
            VF a = d0 * pd0 + d1 * pd1 + d2 * pd2;                                                 \
            VF m0 = mx - o0, m1 = my - o1, m2 = mz - o2;                                           \
            VF t = (m0 * pd0 + m1 * pd1 + m2 * pd2) / a;                                           \
            VF r0 = t * d0 - m0, r1 = t * d1 - m1, r2 = t * d2 - m2;                               \
            VF q = P0 * r0 * r0 + P3 * r1 * r1 + P5 * r2 * r2 +                                    \
                   (P1 * r0 * r1 + P2 * r0 * r2 + P4 * r1 * r2) * 2.0f;                            \
            VF x = hk2 - q * 0.5f;                                                                 \
            VI ok = (x >= 0.0f) & (t >= tmin) & (t <= tmax); /* NaN fails */                       \
            memcpy(tt + j, &t, sizeof t);                                                          \
            any |= ok;                                                                             \
            VF y = x - (float)LN255;                                                               \
            VI lo = y > -6.0f; /* NaN -> -6 */                                                     \
            y = (VF)((lo & (VI)y) | (~lo & (VI)(zero - 6.0f)));                                    \
            VI hi = y < 0.0f;                                                                      \
            y = (VF)((hi & (VI)y) | (~hi & (VI)zero));                                             \
            VF tr = y * 1.44269504f + 12582912.0f;                                                 \
            VF nf = tr - 12582912.0f;                                                              \
            VF rr = y - nf * 0.693145752f - nf * 1.42860677e-6f;                                   \
            VF rsq = rr * rr;                                                                      \
            VF pa = 1.0f + rr, pb = 0.5f + rr * 0.166666667f;                                      \
            VF pc = 0.0416666667f + rr * 0.00833333333f;                                           \
            VF p = (pa + rsq * pb) + (rsq * rsq) * (pc + rsq * 0.00138888889f);                    \
            VF al = p * (VF)(((VU)tr - (0x4B400000u - 127u)) << 23);                               \
            VI cap = al < ALPHA_MAX;                                                               \
            al = (VF)((cap & (VI)al) | (~cap & (VI)(zero + ALPHA_MAX)));                           \
            al = (VF)((VI)al & ok);                                                                \
            memcpy(alo + j, &al, sizeof al);                                                       \
        }                                                                                          \
        int32_t r = 0;                                                                             \
        for (int l = 0; l < W; l++) r |= any[l];                                                   \
        return r != 0;                                                                             \
    }

typedef uint32_t v4u __attribute__((vector_size(16)));
EVAL_ROW_FN(eval_row_4, , v4f, v4i, v4u, 4)
#ifdef DK_LIDAR_X86
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
EVAL_ROW_FN(eval_row_8, __attribute__((target("avx2"))), v8f, v8i, v8u, 8)
EVAL_ROW_FN(eval_row_16, __attribute__((target("avx512f"))), v16f, v16i, v16u, 16)
#endif

typedef int (*eval_row_fn)(const lgauss *restrict, const ray_soa *restrict, int, int, int, float,
                           float, float *restrict, float *restrict);

static eval_row_fn pick_eval_row(void)
{
#ifdef DK_LIDAR_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return eval_row_16;
    if (__builtin_cpu_supports("avx2")) return eval_row_8;
#endif
    return eval_row_4;
}

/* Actor frame transform for column slot j: rows 0..8 rotation (E -> actor),
 * 9..11 the column origin in the actor frame. */
static void actor_tf(const lidar_ctx *L, int slot, int col, float out[12])
{
    double t = L->cfg->time + col / (L->nc * L->m->spin_hz);
    dk_pose tmp;
    const dk_pose *a2w = dk__scene_track_pose_at(L->s, L->act[slot].id, t, &tmp);
    dk_pose a = a2w ? *a2w : dk_pose_identity();
    dk_pose w2a = dk_pose_inverse(&a);
    dk_pose e2a = dk_pose_compose(&w2a, &L->e2w);
    double R[9];
    dk_quat_to_rotation(e2a.q, R);
    double o[3] = { 0, 0, 0 }, oa[3];
    if (L->moving)
        for (int k = 0; k < 3; k++) o[k] = L->col_o[col * 3 + k];
    dk_pose_apply(&e2a, o, oa);
    for (int k = 0; k < 9; k++) out[k] = (float)R[k];
    for (int k = 0; k < 3; k++) out[9 + k] = (float)oa[k];
}

/* The tile's rays (columns x0 .. x1-1) carried into actor `slot`'s frame,
 * each column at its own firing time. Lanes past x1 keep harmless rays. */
static void actor_rays(const lidar_ctx *L, const ray_soa *e, int slot, int x0, int x1,
                       ray_soa *out)
{
    *out = *e;
    for (int c = x0; c < x1; c++) {
        float X[12];
        actor_tf(L, slot, c, X);
        int j = c - x0;
        out->ox[j] = X[9];
        out->oy[j] = X[10];
        out->oz[j] = X[11];
        for (int row = 0; row < TILE_RAYS; row += TC) {
            float d0 = e->dx[row + j], d1 = e->dy[row + j], d2 = e->dz[row + j];
            out->dx[row + j] = X[0] * d0 + X[1] * d1 + X[2] * d2;
            out->dy[row + j] = X[3] * d0 + X[4] * d1 + X[5] * d2;
            out->dz[row + j] = X[6] * d0 + X[7] * d1 + X[8] * d2;
        }
    }
}

static void render_tiles(void *ctx, int64_t begin, int64_t end, int ith)
{
    lidar_ctx *L = ctx;
    tile_scratch *ts = (tile_scratch *)(L->ray_scratch + (size_t)ith * L->ray_scratch_size);
    uint64_t *tmp = L->sort_tmp + (size_t)ith * (size_t)L->max_tile;
    int32_t *amap = L->n_act ? L->act_map + (size_t)ith * L->act_stride : NULL;
    int32_t *alist = amap ? amap + L->n_act : NULL;
    ray_soa *arays = L->n_act ? L->act_rays + (size_t)ith * (size_t)L->n_act : NULL;
    const float tmin = (float)L->m->min_range, tmax = (float)L->m->max_range;
    const int nc = L->nc;
    const eval_row_fn eval_row = L->eval_row;
    for (int64_t tile = begin; tile < end; tile++) {
        int tx = (int)(tile % L->tiles_x), ty = (int)(tile / L->tiles_x);
        int x0 = tx * TC, x1 = x0 + TC < nc ? x0 + TC : nc;
        int y0 = ty * TB, y1 = y0 + TB < L->nb ? y0 + TB : L->nb;
        int w = x1 - x0, nrays = w * (y1 - y0), n_done = 0;
        ray_soa *rs = &ts->rays;
        /* Rows are TC wide; lanes past the last column get a harmless ray. */
        for (int j = 0; j < TC; j++) {
            int c = x0 + j;
            rs->ox[j] = L->moving && c < x1 ? L->col_o[c * 3] : 0.0f;
            rs->oy[j] = L->moving && c < x1 ? L->col_o[c * 3 + 1] : 0.0f;
            rs->oz[j] = L->moving && c < x1 ? L->col_o[c * 3 + 2] : 0.0f;
        }
        for (int ry = 0; ry < TILE_RAYS; ry++) {
            rs->dx[ry] = 1.0f;
            rs->dy[ry] = rs->dz[ry] = 0.0f;
            ts->st[ry].done = 1;
            ts->st[ry].np = ts->st[ry].h = 0;
        }
        for (int rk = y0; rk < y1; rk++) {
            int b = L->rank_beam[rk];
            double ce = L->beam_ce[b], se = L->beam_se[b], co = L->beam_co[b], so = L->beam_so[b];
            for (int c = x0; c < x1; c++) {
                int ry = (rk - y0) * TC + (c - x0);
                double ca = L->col_cos[c], sa = L->col_sin[c];
                double dn[3] = { ce * (ca * co - sa * so), ce * (sa * co + ca * so), se };
                float dv[3];
                if (L->moving) {
                    const float *R = L->col_r + (size_t)c * 9;
                    for (int k = 0; k < 3; k++)
                        dv[k] = (float)(R[k * 3] * dn[0] + R[k * 3 + 1] * dn[1] + R[k * 3 + 2] * dn[2]);
                } else {
                    for (int k = 0; k < 3; k++) dv[k] = (float)dn[k];
                }
                rs->dx[ry] = dv[0];
                rs->dy[ry] = dv[1];
                rs->dz[ry] = dv[2];
                ray_state *r = &ts->st[ry];
                r->T = 1.0f;
                r->W = r->Wt = r->Wi = r->Wp = 0;
                r->done = 0;
                r->h = r->np = 0;
            }
        }
        uint64_t *keys = L->keys + L->tile_start[tile];
        int64_t nk = L->tile_start[tile + 1] - L->tile_start[tile];
        sort_keys(keys, nk, tmp);
        /* Actors present in this tile: the tile's rays in their frames. */
        int n_local = 0;
        if (L->n_act) {
            for (int64_t e = 0; e < nk; e++) {
                int a = L->g[(uint32_t)keys[e]].actor;
                if (a >= 0 && amap[a] < 0) {
                    amap[a] = n_local;
                    alist[n_local] = a;
                    actor_rays(L, rs, a, x0, x1, &arays[n_local]);
                    n_local++;
                }
            }
        }
        /* Visited by the distance of the mean, a close estimate of t* (few
         * contributions arrive out of order); a contribution is blended once
         * every later Gaussian's bound lies beyond it: bnd[e] = min of the
         * lower bounds of Gaussians e.. (tmp is free after the sort). */
        float *bnd = (float *)tmp;
        bnd[nk] = INFINITY;
        for (int64_t e = nk - 1; e >= 0; e--) {
            float lb = L->lb[(uint32_t)keys[e]];
            bnd[e] = lb < bnd[e + 1] ? lb : bnd[e + 1];
        }
        for (int64_t e = 0; e < nk && n_done < nrays; e++) {
            if (e + 4 < nk) __builtin_prefetch(&L->g[(uint32_t)keys[e + 4]]);
            const lgauss *g = &L->g[(uint32_t)keys[e]];
            if (bnd[e] > tmax) break;
            float lb_next = bnd[e + 1];
            int rk0 = g->r0 > y0 ? g->r0 : y0, rk1 = g->r1 < y1 - 1 ? g->r1 : y1 - 1;
            /* the Gaussian's columns inside this tile: two segments at most */
            int seg[4] = { g->c0, g->c0 + g->span, g->c0 - nc, g->c0 + g->span - nc };
            const ray_soa *gr = g->actor >= 0 ? &arays[amap[g->actor]] : rs;
            for (int sgi = 0; sgi < 2; sgi++) {
                int ca = seg[2 * sgi] > x0 ? seg[2 * sgi] : x0;
                int cb = seg[2 * sgi + 1] < x1 - 1 ? seg[2 * sgi + 1] : x1 - 1;
                if (ca > cb) continue;
                const int ja = ca - x0, jb = cb - x0;   /* tile-local columns */
                for (int rk = rk0; rk <= rk1; rk++) {
                    const int row = (rk - y0) * TC;   /* ray index = row + j */
                    if (!eval_row(g, gr, row, ja, jb, tmin, tmax, ts->tt, ts->al)) continue;
                    for (int j = ja; j <= jb; j++) {
                        float al = ts->al[j];
                        if (!(al > 0.0f)) continue;
                        ray_state *r = &ts->st[row + j];
                        if (r->done) continue;
                        if (add_contrib(r, ts->pb[row + j], ts->tt[j], al, g->inten, g->drop,
                                        lb_next))
                            n_done++;
                    }
                }
            }
        }
        for (int ry = 0; ry < (y1 - y0) * TC; ry++) {
            ray_state *r = &ts->st[ry];
            if (!r->done && r->np) commit_pending(r, ts->pb[ry], INFINITY);
        }
        for (int k = 0; k < n_local; k++) amap[alist[k]] = -1;
        const float thr = (float)L->cfg->hit_threshold;
        for (int rk = y0; rk < y1; rk++) {
            size_t row = (size_t)L->rank_beam[rk] * (size_t)nc;
            for (int c = x0; c < x1; c++) {
                const ray_state *r = &ts->st[(rk - y0) * TC + (c - x0)];
                size_t o = row + (size_t)c;
                float al = 1.0f - r->T;
                int ret = r->W > 0 && al >= thr;
                if (L->alpha) L->alpha[o] = al;
                if (L->range) L->range[o] = ret ? r->Wt / r->W : 0.0f;
                if (L->inten) L->inten[o] = ret ? r->Wi / r->W : 0.0f;
                if (L->drop) L->drop[o] = r->W > 0 ? 1.0f - al * (1.0f - r->Wp / r->W) : 1.0f;
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* setup                                                                     */

static void free_actors(lidar_ctx *L)
{
    for (int a = 0; a < L->n_act; a++) {
        dk_free(L->act[a].pose);
        dk_free(L->act[a].dt);
        dk_free(L->act[a].rot);
    }
    dk_free(L->act);
    L->act = NULL;
    L->n_act = 0;
}

/* Samples of every tracked actor's motion over [t0, t1]. */
static int setup_actors(lidar_ctx *L, double t0, double t1)
{
    int n = dk_scene_actor_track_count(L->s);
    if (n == 0 || !L->s->actor_id) return DK_OK;
    L->act = dk_calloc((size_t)n, sizeof *L->act);
    int32_t *ids = dk_malloc((size_t)n * sizeof *ids);
    if (!L->act || !ids) {
        dk_free(ids);
        return dk__error(DK_ENOMEM, "dk_render_lidar", "out of memory");
    }
    dk_scene_actor_track_ids(L->s, ids, n);
    L->n_act = n;
    int st = DK_OK;
    for (int a = 0; a < n && !st; a++) {
        actor_motion *am = &L->act[a];
        am->id = ids[a];
        int kn;
        const double *times;
        const dk_pose *poses;
        dk_scene_actor_track(L->s, ids[a], &kn, &times, &poses);
        int inside = 0;
        for (int k = 0; k < kn; k++) inside += times[k] > t0 && times[k] < t1;
        am->n = 2 + inside;
        am->pose = dk_malloc((size_t)am->n * sizeof *am->pose);
        am->dt = dk_malloc((size_t)am->n * sizeof(double));
        am->rot = dk_malloc((size_t)am->n * sizeof(double));
        if (!am->pose || !am->dt || !am->rot) {
            st = dk__error(DK_ENOMEM, "dk_render_lidar", "out of memory");
            break;
        }
        int j = 0;
        dk_scene_actor_pose(L->s, ids[a], t0, &am->pose[j++]);
        for (int k = 0; k < kn; k++)
            if (times[k] > t0 && times[k] < t1) am->pose[j++] = poses[k];
        dk_scene_actor_pose(L->s, ids[a], t1, &am->pose[j++]);
        for (int k = 0; k + 1 < am->n; k++) {
            double d2 = 0;
            for (int c = 0; c < 3; c++)
                d2 += (am->pose[k + 1].t[c] - am->pose[k].t[c]) *
                      (am->pose[k + 1].t[c] - am->pose[k].t[c]);
            am->dt[k] = sqrt(d2) * (1 + 1e-9) + 1e-9;
            am->rot[k] = angle_between(&am->pose[k], &am->pose[k + 1]) * (1 + 1e-9) + 1e-12;
        }
    }
    dk_free(ids);
    return st;
}

static int setup_frames(lidar_ctx *L, const dk_pose *l2w)
{
    const dk_lidar_model *m = L->m;
    const dk_lidar_render_config *cfg = L->cfg;
    const int nc = L->nc;
    L->col_cos = dk_malloc((size_t)nc * sizeof(double));
    L->col_sin = dk_malloc((size_t)nc * sizeof(double));
    if (!L->col_cos || !L->col_sin) return dk__error(DK_ENOMEM, "dk_render_lidar", "out of memory");
    for (int c = 0; c < nc; c++) {
        double az = m->azimuth_start + m->direction * (2.0 * PI_D) * c / nc;
        L->col_cos[c] = cos(az);
        L->col_sin[c] = sin(az);
    }
    L->off_min = INFINITY;
    L->off_max = -INFINITY;
    for (int b = 0; b < L->nb; b++) {
        L->beam_ce[b] = cos(m->elevation[b]);
        L->beam_se[b] = sin(m->elevation[b]);
        L->beam_co[b] = cos(m->azimuth_offset[b]);
        L->beam_so[b] = sin(m->azimuth_offset[b]);
        L->off_min = fmin(L->off_min, m->azimuth_offset[b]);
        L->off_max = fmax(L->off_max, m->azimuth_offset[b]);
    }
    /* beams sorted by elevation (insertion sort: stable, n <= 256) */
    for (int b = 0; b < L->nb; b++) {
        int at = b;
        while (at > 0 && m->elevation[L->rank_beam[at - 1]] > m->elevation[b]) {
            L->rank_beam[at] = L->rank_beam[at - 1];
            at--;
        }
        L->rank_beam[at] = b;
    }
    for (int r = 0; r < L->nb; r++) L->rank_tan[r] = tan(m->elevation[L->rank_beam[r]]);

    L->moving = cfg->sensor_motion != 0;
    if (!L->moving) {
        L->e2w = *l2w;
    } else {
        L->e2w = dk_pose_interpolate(l2w, &cfg->lidar_to_world_end, 0.5);
        L->col_o = dk_malloc((size_t)nc * 3 * sizeof(float));
        L->col_r = dk_malloc((size_t)nc * 9 * sizeof(float));
        if (!L->col_o || !L->col_r) return dk__error(DK_ENOMEM, "dk_render_lidar", "out of memory");
    }
    L->w2e = dk_pose_inverse(&L->e2w);
    dk_quat_to_rotation(L->w2e.q, L->rwe);
    memcpy(L->twe, L->w2e.t, sizeof L->twe);
    if (L->moving) {
        double dmax = 0, rmax = 0;
        for (int c = 0; c < nc; c++) {
            dk_pose pc = dk_pose_interpolate(l2w, &cfg->lidar_to_world_end, (double)c / nc);
            dk_pose rel = dk_pose_compose(&L->w2e, &pc);   /* lidar at c -> E */
            double R[9];
            dk_quat_to_rotation(rel.q, R);
            for (int k = 0; k < 9; k++) L->col_r[c * 9 + k] = (float)R[k];
            for (int k = 0; k < 3; k++) L->col_o[c * 3 + k] = (float)rel.t[k];
            dmax = fmax(dmax, sqrt(rel.t[0] * rel.t[0] + rel.t[1] * rel.t[1] + rel.t[2] * rel.t[2]));
            rmax = fmax(rmax, quat_angle(rel.q));
        }
        /* slack for the float copies of the per-column frames */
        L->sensor_pad_dist = dmax * (1 + 1e-6) + 1e-6;
        L->sensor_pad_rot = rmax * (1 + 1e-6) + 1e-6;
    }
    return DK_OK;
}

int dk_render_lidar(const dk_scene *s, const dk_lidar_model *m, const dk_pose *lidar_to_world,
                    const dk_lidar_render_config *cfg, dk_pool *pool, float *range,
                    float *intensity, float *raydrop, float *alpha)
{
    if (!s || !m || !lidar_to_world || !cfg)
        return dk__error(DK_EINVAL, __func__, "NULL argument (%s)",
                         !s ? "scene" : !m ? "model" : !lidar_to_world ? "lidar_to_world" : "cfg");
    if (s->n < 0 || s->n > DK_SCENE_MAX_GAUSSIANS || !s->means || !s->scales || !s->rotations ||
        !s->opacities || (s->lidar_intensity == NULL) != (s->lidar_raydrop == NULL))
        return dk__error(DK_EINVAL, __func__, "inconsistent scene");
    int st = check_common(m, lidar_to_world, cfg, __func__);
    if (st) return st;

    lidar_ctx L;
    memset(&L, 0, sizeof L);
    L.s = s;
    L.m = m;
    L.cfg = cfg;
    L.nb = m->n_beams;
    L.nc = m->n_columns;
    L.range = range;
    L.inten = intensity;
    L.drop = raydrop;
    L.alpha = alpha;
    L.tiles_x = (L.nc + TC - 1) / TC;
    L.tiles_y = (L.nb + TB - 1) / TB;
    int64_t nt = (int64_t)L.tiles_x * L.tiles_y;
    int nth = dk_pool_size(pool);
    double sweep_end = cfg->time + (double)(L.nc - 1) / (L.nc * m->spin_hz);

    st = setup_frames(&L, lidar_to_world);
    if (!st) st = setup_actors(&L, cfg->time, sweep_end);
    if (st) goto out;

    L.g = dk_malloc_aligned((size_t)(s->n ? s->n : 1) * sizeof(lgauss), 64);
    L.lb = dk_malloc((size_t)(s->n ? s->n : 1) * sizeof(float));
    L.dist = dk_malloc((size_t)(s->n ? s->n : 1) * sizeof(float));
    L.n_chunks = s->n < N_CHUNKS ? (s->n ? s->n : 1) : N_CHUNKS;
    L.chunk_len = (s->n + L.n_chunks - 1) / L.n_chunks;
    if (L.chunk_len == 0) L.chunk_len = 1;
    L.chunk_counts = dk_calloc((size_t)(L.n_chunks * nt), sizeof(uint32_t));
    L.chunk_offsets = dk_malloc((size_t)(L.n_chunks * nt) * sizeof(int64_t));
    L.tile_start = dk_malloc((size_t)(nt + 1) * sizeof(int64_t));
    if (!L.g || !L.lb || !L.dist || !L.chunk_counts || !L.chunk_offsets || !L.tile_start) {
        st = dk__error(DK_ENOMEM, __func__, "out of memory for %lld Gaussians", (long long)s->n);
        goto out;
    }
    dk_pool_for(pool, s->n, 4096, preprocess_range, &L);
    dk_pool_for(pool, L.n_chunks, 1, count_chunks, &L);
    int64_t total = 0;
    L.max_tile = 1;
    for (int64_t t = 0; t < nt; t++) {
        L.tile_start[t] = total;
        int64_t t0 = total;
        for (int64_t ch = 0; ch < L.n_chunks; ch++) {
            L.chunk_offsets[ch * nt + t] = total;
            total += L.chunk_counts[ch * nt + t];
        }
        if (total - t0 > L.max_tile) L.max_tile = total - t0;
    }
    L.tile_start[nt] = total;
    dk_free(L.chunk_counts);
    L.chunk_counts = NULL;
    size_t kbytes, sbytes, rbytes;
    L.ray_scratch_size = (sizeof(tile_scratch) + 63) / 64 * 64;
    if ((uint64_t)total > SIZE_MAX / 8 || dk__mul_overflow((size_t)total, 8, &kbytes) ||
        dk__mul_overflow((size_t)L.max_tile * 8, (size_t)nth, &sbytes) ||
        dk__mul_overflow(L.ray_scratch_size, (size_t)nth, &rbytes)) {
        st = dk__error(DK_EOVERFLOW, __func__, "%lld Gaussian-tile pairs", (long long)total);
        goto out;
    }
    L.keys = dk_malloc(kbytes ? kbytes : 8);
    L.sort_tmp = dk_malloc(sbytes);
    L.ray_scratch = dk_malloc_aligned(rbytes, 64);
    if (L.n_act) {
        L.act_stride = ((size_t)L.n_act * 2 + 15) / 16 * 16;   /* no false sharing */
        L.act_map = dk_malloc_aligned((size_t)nth * L.act_stride * sizeof(int32_t), 64);
        L.act_rays = dk_malloc_aligned((size_t)nth * (size_t)L.n_act * sizeof(ray_soa), 64);
        if (L.act_map)
            for (size_t i = 0; i < (size_t)nth * L.act_stride; i++) L.act_map[i] = -1;
    }
    if (!L.keys || !L.sort_tmp || !L.ray_scratch || (L.n_act && (!L.act_map || !L.act_rays))) {
        st = dk__error(DK_ENOMEM, __func__, "out of memory for %lld Gaussian-tile pairs",
                       (long long)total);
        goto out;
    }
    dk_pool_for(pool, L.n_chunks, 1, fill_chunks, &L);
    L.eval_row = pick_eval_row();
    dk_pool_for(pool, nt, 1, render_tiles, &L);
out:
    free_actors(&L);
    dk_free(L.col_cos);
    dk_free(L.col_sin);
    dk_free(L.col_o);
    dk_free(L.col_r);
    dk_free_aligned(L.g);
    dk_free(L.lb);
    dk_free(L.dist);
    dk_free(L.chunk_counts);
    dk_free(L.chunk_offsets);
    dk_free(L.tile_start);
    dk_free(L.keys);
    dk_free(L.sort_tmp);
    dk_free_aligned(L.ray_scratch);
    dk_free_aligned(L.act_map);
    dk_free_aligned(L.act_rays);
    return st;
}

/* ------------------------------------------------------------------------ */
/* points                                                                    */

int dk_lidar_points(const dk_lidar_model *m, const dk_pose *lidar_to_world,
                    const dk_lidar_render_config *cfg, const float *range, const float *intensity,
                    const float *raydrop, float *points, int64_t capacity, int64_t *n_points)
{
    if (n_points) *n_points = 0;
    if (!m || !lidar_to_world || !cfg || !range || !n_points)
        return dk__error(DK_EINVAL, __func__, "NULL argument (%s)",
                         !m ? "model" : !lidar_to_world ? "lidar_to_world" : !cfg ? "cfg"
                         : !range ? "range" : "n_points");
    int st = check_common(m, lidar_to_world, cfg, __func__);
    if (st) return st;
    if (cfg->raydrop_mode != DK_LIDAR_RAYDROP_NONE &&
        cfg->raydrop_mode != DK_LIDAR_RAYDROP_THRESHOLD &&
        cfg->raydrop_mode != DK_LIDAR_RAYDROP_SAMPLE)
        return dk__error(DK_EINVAL, __func__, "unknown raydrop_mode %d", (int)cfg->raydrop_mode);
    if (cfg->raydrop_mode != DK_LIDAR_RAYDROP_NONE && !raydrop)
        return dk__error(DK_EINVAL, __func__, "raydrop is NULL but raydrop_mode is not NONE");
    if (!(cfg->raydrop_threshold >= 0 && cfg->raydrop_threshold <= 1))
        return dk__error(DK_EINVAL, __func__, "raydrop_threshold = %g outside [0, 1]",
                         cfg->raydrop_threshold);
    if (points && capacity < 0)
        return dk__error(DK_EINVAL, __func__, "capacity %lld < 0", (long long)capacity);
    const int nb = m->n_beams, nc = m->n_columns;
    dk_pose inv0 = dk_pose_inverse(lidar_to_world);
    const uint32_t key[2] = { (uint32_t)cfg->raydrop_seed, (uint32_t)(cfg->raydrop_seed >> 32) };
    int64_t n = 0;
    for (int c = 0; c < nc; c++) {
        double tc;
        dk_pose rel = dk_pose_identity();
        if (cfg->sensor_motion) {
            dk_pose pc = dk_pose_interpolate(lidar_to_world, &cfg->lidar_to_world_end,
                                             (double)c / nc);
            rel = dk_pose_compose(&inv0, &pc);   /* lidar at column c -> at sweep start */
        }
        dk_lidar_ray(m, 0, c, NULL, &tc);
        for (int b = 0; b < nb; b++) {
            size_t i = (size_t)b * (size_t)nc + (size_t)c;
            float r = range[i];
            if (!(r > 0) || !isfinite(r)) continue;
            if (cfg->raydrop_mode == DK_LIDAR_RAYDROP_THRESHOLD) {
                if (!(raydrop[i] < cfg->raydrop_threshold)) continue;
            } else if (cfg->raydrop_mode == DK_LIDAR_RAYDROP_SAMPLE) {
                const uint32_t ctr[4] = { (uint32_t)i, (uint32_t)((uint64_t)i >> 32), 0x6c696472u,
                                          0 };
                uint32_t out[4];
                dk_philox4x32(ctr, key, out);
                float u = (float)(out[0] >> 8) * (1.0f / 16777216.0f);
                if (!(u >= raydrop[i])) continue;
            }
            if (points) {
                if (n >= capacity) {
                    n++;
                    continue;
                }
                double d[3], p[3];
                dk_lidar_ray(m, b, c, d, NULL);
                for (int k = 0; k < 3; k++) d[k] *= r;
                if (cfg->sensor_motion)
                    dk_pose_apply(&rel, d, p);
                else
                    memcpy(p, d, sizeof p);
                float *row = points + n * 6;
                row[0] = (float)p[0];
                row[1] = (float)p[1];
                row[2] = (float)p[2];
                row[3] = intensity ? intensity[i] : 0.0f;
                row[4] = (float)b;
                row[5] = (float)tc;
            }
            n++;
        }
    }
    *n_points = n;
    if (points && n > capacity)
        return dk__error(DK_ERANGE, __func__, "%lld points do not fit capacity %lld",
                         (long long)n, (long long)capacity);
    return DK_OK;
}
