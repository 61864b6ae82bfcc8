/*
 * CPU tile rasterizer for Gaussian scenes (3DGS forward pass).
 *
 * Stages, each deterministic regardless of the pool size:
 *   1. preprocess (parallel over Gaussians): activation, culling, 2-D mean and
 *      covariance (EWA or unscented transform), conic, colour, tile rectangle;
 *   2. binning: Gaussians are cut into a fixed number of chunks (not one per
 *      thread, so the layout does not depend on the pool), per-chunk tile
 *      counts are prefix-summed into 64-bit offsets and each chunk writes its
 *      (depth, index) keys;
 *   3. per tile (parallel over tiles): LSD radix sort of the keys on the depth
 *      bits (stable, so ties stay in index order), then front-to-back blending.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivekit/sim.h"
#include "internal.h"

#define TILE 16   /* tiles per axis <= 65536 / 16: tile indices fit int16 */
#define N_CHUNKS 64
#define ALPHA_MIN (1.0f / 255.0f)
#define ALPHA_MAX 0.99f
#define T_MIN 1e-4f

static const double SH_C0 = 0.28209479177387814;
static const double SH_C1 = 0.4886025119029199;
static const double SH_C2[5] = { 1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
                                 -1.0925484305920792, 0.5462742152960396 };
static const double SH_C3[7] = { -0.5900435899266435, 2.890611442640554, -0.4570457994644658,
                                 0.3731763325901154, -0.4570457994644658, 1.445305721320277,
                                 -0.5900435899266435 };

typedef struct splat {
    float mx, my;        /* 2-D mean, continuous pixel coordinates */
    float a, b, c;       /* conic (inverse 2-D covariance) [[a, b], [b, c]] */
    float opacity;
    float rgb[3];
    float z;             /* camera-frame depth */
    float ex, ey;        /* half extents of the 1/255 footprint's bounding box */
    float pmin;          /* ln(1/(255 opacity)): exponents below it give alpha < 1/255 */
    int16_t tx0, ty0, tx1, ty1;   /* tile rectangle, inclusive; tx0 > tx1 = culled */
    float pad_;
} splat;   /* 64 bytes: one cache line (the blend loop reads them in random order) */
_Static_assert(sizeof(splat) == 64, "splat is one cache line");

typedef struct render_ctx {
    const dk_scene *s;
    const dk_camera *cam;
    const dk_render_config *cfg;
    int sh_degree;
    double rw[9], tw[3];  /* world -> camera */
    double campos[3];     /* camera centre, world frame */
    int proj_ut;
    int rs;               /* rolling shutter: poses interpolated per readout time */
    dk_pose c2w0, c2w1;   /* cam_to_world at readout start and end */
    int tiles_x, tiles_y;
    splat *splats;
    /* binning */
    int64_t n_chunks, chunk_len;
    uint32_t *chunk_counts;   /* n_chunks x n_tiles; becomes nothing after offsets */
    int64_t *chunk_offsets;   /* n_chunks x n_tiles */
    int64_t *tile_start;      /* n_tiles + 1 */
    uint64_t *keys;
    /* tile pass */
    uint64_t *scratch;        /* per thread, max_tile entries */
    int64_t max_tile;
    float *rgb, *alpha, *depth;
} render_ctx;

void dk_render_config_init(dk_render_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->near_z = 0.2;
    cfg->sh_degree = -1;
    cfg->projection = DK_PROJ_AUTO;
    cfg->ut_alpha = 1.0;
    cfg->ut_beta = 2.0;
    cfg->ut_kappa = 0.0;
    cfg->dilation = 0.3;
    cfg->rolling_shutter = 0;
    cfg->cam_to_world_end = dk_pose_identity();
    cfg->rs_iterations = 5;
}

static void sh_color(const float *sh, int K, int deg, const double d[3], float rgb[3])
{
    double x = d[0], y = d[1], z = d[2];
    double basis[16];
    basis[0] = SH_C0;
    if (deg > 0) {
        basis[1] = -SH_C1 * y;
        basis[2] = SH_C1 * z;
        basis[3] = -SH_C1 * x;
    }
    if (deg > 1) {
        double xx = x * x, yy = y * y, zz = z * z;
        basis[4] = SH_C2[0] * x * y;
        basis[5] = SH_C2[1] * y * z;
        basis[6] = SH_C2[2] * (2 * zz - xx - yy);
        basis[7] = SH_C2[3] * x * z;
        basis[8] = SH_C2[4] * (xx - yy);
        if (deg > 2) {
            basis[9] = SH_C3[0] * y * (3 * xx - yy);
            basis[10] = SH_C3[1] * x * y * z;
            basis[11] = SH_C3[2] * y * (4 * zz - xx - yy);
            basis[12] = SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy);
            basis[13] = SH_C3[4] * x * (4 * zz - xx - yy);
            basis[14] = SH_C3[5] * z * (xx - yy);
            basis[15] = SH_C3[6] * x * (xx - 3 * yy);
        }
    }
    int nb = (deg + 1) * (deg + 1);
    for (int c = 0; c < 3; c++) {
        const float *co = sh + c * K;
        double v = 0;
        for (int k = 0; k < nb; k++) v += basis[k] * co[k];
        v += 0.5;
        rgb[c] = v > 0 ? (float)v : 0.0f;
    }
}

static void mat3_mul(const double a[9], const double b[9], double o[9])
{
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            o[i * 3 + j] = a[i * 3] * b[j] + a[i * 3 + 1] * b[3 + j] + a[i * 3 + 2] * b[6 + j];
}

static void to_cam(const render_ctx *r, const double w[3], double p[3])
{
    for (int i = 0; i < 3; i++)
        p[i] = r->rw[i * 3] * w[0] + r->rw[i * 3 + 1] * w[1] + r->rw[i * 3 + 2] * w[2] + r->tw[i];
}

static void apply(const double rw[9], const double tw[3], const double w[3], double p[3])
{
    for (int i = 0; i < 3; i++)
        p[i] = rw[i * 3] * w[0] + rw[i * 3 + 1] * w[1] + rw[i * 3 + 2] * w[2] + tw[i];
}

/* world -> camera transform at relative readout time t. The camera centre
 * moves linearly and the orientation by slerp (cam_to_world interpolated). */
static void pose_at(const render_ctx *r, double t, double rw[9], double tw[3], double centre[3])
{
    dk_pose p = dk_pose_interpolate(&r->c2w0, &r->c2w1, t);
    dk_pose w = dk_pose_inverse(&p);
    dk_quat_to_rotation(w.q, rw);
    memcpy(tw, w.t, sizeof w.t);
    if (centre) memcpy(centre, p.t, sizeof p.t);
}

/* Rolling-shutter projection of a world point (3DGUT): project with the start
 * pose (the end pose if that fails), then re-project with the pose at the
 * readout time of the current pixel until the time stops changing. Returns 0
 * when the camera model is undefined at the point. */
static int project_rs(const render_ctx *r, const double pw[3], double uv[2], double *z,
                      double *t_out)
{
    const dk_camera *cam = r->cam;
    double pc[3], rw[9], tw[3];
    apply(r->rw, r->tw, pw, pc);
    uv[0] = uv[1] = NAN;
    dk_camera_project(cam, pc, uv, NULL);
    double t = 0;
    if (!isfinite(uv[0]) || !isfinite(uv[1])) {
        pose_at(r, 1.0, rw, tw, NULL);
        apply(rw, tw, pw, pc);
        dk_camera_project(cam, pc, uv, NULL);
        if (!isfinite(uv[0]) || !isfinite(uv[1])) return 0;
        t = 1.0;
    }
    for (int it = 0; it < r->cfg->rs_iterations; it++) {
        double tn = dk_camera_shutter_time(cam, uv);
        if (tn == t && it > 0) break;
        t = tn;
        pose_at(r, t, rw, tw, NULL);
        apply(rw, tw, pw, pc);
        uv[0] = uv[1] = NAN;
        dk_camera_project(cam, pc, uv, NULL);
        if (!isfinite(uv[0]) || !isfinite(uv[1])) return 0;
    }
    if (z) *z = pc[2];
    if (t_out) *t_out = t;
    return 1;
}

/* Returns 1 and fills sp when the Gaussian is visible. */
static int preprocess_one(const render_ctx *r, int64_t i, splat *sp)
{
    const dk_scene *s = r->s;
    const dk_camera *cam = r->cam;
    if (!isfinite(s->opacities[i])) return 0;
    double opacity = 1.0 / (1.0 + exp(-(double)s->opacities[i]));
    if (!(opacity >= 1.0 / 255.0)) return 0;
    double mu[3] = { s->means[i * 3], s->means[i * 3 + 1], s->means[i * 3 + 2] };
    double pc[3];
    to_cam(r, mu, pc);
    if (!r->rs && !(pc[2] > r->cfg->near_z)) return 0;
    const float *qf = s->rotations + i * 4;
    double q[4] = { qf[0], qf[1], qf[2], qf[3] };
    double qn = sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    if (!(qn >= 1e-12) || !isfinite(qn)) return 0;
    for (int k = 0; k < 4; k++) q[k] /= qn;
    double R[9];
    dk_quat_to_rotation(q, R);
    double sc[3];
    for (int k = 0; k < 3; k++) {
        sc[k] = exp((double)s->scales[i * 3 + k]);
        if (!isfinite(sc[k])) return 0;
    }
    double m2[2], cov[3];   /* cov: xx, xy, yy */
    double campos[3] = { r->campos[0], r->campos[1], r->campos[2] };
    if (r->rs) {
        double uv[2], t;
        if (!project_rs(r, mu, uv, &pc[2], &t) || !(pc[2] > r->cfg->near_z)) return 0;
        double rw[9], tw[3];
        pose_at(r, t, rw, tw, campos);
    }
    if (!r->proj_ut) {
        /* EWA: Σ' = J W Σ Wᵀ Jᵀ with Σ = R S² Rᵀ; M = W R S so Σ_cam = M Mᵀ. */
        double WR[9], M[9];
        mat3_mul(r->rw, R, WR);
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) M[a * 3 + b] = WR[a * 3 + b] * sc[b];
        double z = pc[2];
        double limx_p = (cam->width - cam->cx) / cam->fx + 0.3 * cam->width / (2 * cam->fx);
        double limx_n = cam->cx / cam->fx + 0.3 * cam->width / (2 * cam->fx);
        double limy_p = (cam->height - cam->cy) / cam->fy + 0.3 * cam->height / (2 * cam->fy);
        double limy_n = cam->cy / cam->fy + 0.3 * cam->height / (2 * cam->fy);
        double tx = pc[0] / z, ty = pc[1] / z;
        tx = tx > limx_p ? limx_p : tx < -limx_n ? -limx_n : tx;
        ty = ty > limy_p ? limy_p : ty < -limy_n ? -limy_n : ty;
        double J[6] = { cam->fx / z, 0, -cam->fx * tx / z, 0, cam->fy / z, -cam->fy * ty / z };
        double JM[6];
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 3; b++)
                JM[a * 3 + b] = J[a * 3] * M[b] + J[a * 3 + 1] * M[3 + b] + J[a * 3 + 2] * M[6 + b];
        cov[0] = JM[0] * JM[0] + JM[1] * JM[1] + JM[2] * JM[2];
        cov[1] = JM[0] * JM[3] + JM[1] * JM[4] + JM[2] * JM[5];
        cov[2] = JM[3] * JM[3] + JM[4] * JM[4] + JM[5] * JM[5];
        m2[0] = cam->fx * pc[0] / z + cam->cx;
        m2[1] = cam->fy * pc[1] / z + cam->cy;
    } else {
        const double D = 3.0, al = r->cfg->ut_alpha, be = r->cfg->ut_beta,
                     ka = r->cfg->ut_kappa;
        double lam = al * al * (D + ka) - D;
        double spread = sqrt(D + lam);
        double wm0 = lam / (D + lam), wc0 = wm0 + (1 - al * al + be), wi = 1 / (2 * (D + lam));
        double y[7][2];
        for (int j = 0; j < 7; j++) {
            double pw[3] = { mu[0], mu[1], mu[2] };
            if (j > 0) {
                int ax = (j - 1) % 3;
                double sg = j <= 3 ? 1.0 : -1.0;
                for (int k = 0; k < 3; k++) pw[k] += sg * spread * sc[ax] * R[k * 3 + ax];
            }
            if (r->rs) {
                if (!project_rs(r, pw, y[j], NULL, NULL)) return 0;
                continue;
            }
            double pcj[3];
            to_cam(r, pw, pcj);
            y[j][0] = y[j][1] = NAN;
            dk_camera_project(cam, pcj, y[j], NULL);
            if (!isfinite(y[j][0]) || !isfinite(y[j][1])) return 0;
        }
        m2[0] = m2[1] = 0;
        for (int j = 0; j < 7; j++) {
            double w = j == 0 ? wm0 : wi;
            m2[0] += w * y[j][0];
            m2[1] += w * y[j][1];
        }
        cov[0] = cov[1] = cov[2] = 0;
        for (int j = 0; j < 7; j++) {
            double w = j == 0 ? wc0 : wi;
            double dx = y[j][0] - m2[0], dy = y[j][1] - m2[1];
            cov[0] += w * dx * dx;
            cov[1] += w * dx * dy;
            cov[2] += w * dy * dy;
        }
    }
    cov[0] += r->cfg->dilation;
    cov[2] += r->cfg->dilation;
    double det = cov[0] * cov[2] - cov[1] * cov[1];
    if (!(det > 0) || !isfinite(det) || !isfinite(m2[0]) || !isfinite(m2[1])) return 0;
    /* Footprint where opacity * exp(-0.5 m²) >= 1/255: m² <= 2 ln(255 opacity).
     * The ellipse's bounding box has half extents k sqrt(Σxx), k sqrt(Σyy). */
    double oc = opacity;
    double k2 = 2.0 * log(255.0 * oc);
    if (!(k2 > 0)) return 0;
    double k = sqrt(k2) * 1.0001;  /* slack: float evaluation at the boundary */
    double ex = k * sqrt(cov[0]), ey = k * sqrt(cov[2]);
    double W = cam->width, H = cam->height;
    /* Keep the blend arithmetic in float and int range: a 2-D mean farther
     * than 1e7 px is culled, and the box is cut to what can reach the image
     * (which changes no pixel). */
    if (!(fabs(m2[0]) <= 1e7 && fabs(m2[1]) <= 1e7)) return 0;
    if (ex > fabs(m2[0]) + W + 1) ex = fabs(m2[0]) + W + 1;
    if (ey > fabs(m2[1]) + H + 1) ey = fabs(m2[1]) + H + 1;
    if (m2[0] + ex < 0 || m2[0] - ex > W || m2[1] + ey < 0 || m2[1] - ey > H) return 0;
    int tx0 = (int)floor((m2[0] - ex) / TILE), tx1 = (int)floor((m2[0] + ex) / TILE);
    int ty0 = (int)floor((m2[1] - ey) / TILE), ty1 = (int)floor((m2[1] + ey) / TILE);
    if (tx0 < 0) tx0 = 0;
    if (ty0 < 0) ty0 = 0;
    if (tx1 >= r->tiles_x) tx1 = r->tiles_x - 1;
    if (ty1 >= r->tiles_y) ty1 = r->tiles_y - 1;
    if (tx0 > tx1 || ty0 > ty1) return 0;
    sp->mx = (float)m2[0];
    sp->my = (float)m2[1];
    sp->a = (float)(cov[2] / det);
    sp->b = (float)(-cov[1] / det);
    sp->c = (float)(cov[0] / det);
    sp->opacity = (float)oc;
    /* A hair lower than exact, so the alpha test below stays the one that
     * decides at the boundary. */
    sp->pmin = (float)(-log(255.0 * oc)) - 1e-4f;
    sp->z = (float)pc[2];
    sp->ex = (float)ex;
    sp->ey = (float)ey;
    sp->tx0 = (int16_t)tx0;
    sp->tx1 = (int16_t)tx1;
    sp->ty0 = (int16_t)ty0;
    sp->ty1 = (int16_t)ty1;
    double dir[3] = { mu[0] - campos[0], mu[1] - campos[1], mu[2] - campos[2] };
    double dn = sqrt(dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]);
    if (dn > 0)
        for (int a = 0; a < 3; a++) dir[a] /= dn;
    sh_color(s->sh + (size_t)i * 3 * (size_t)s->sh_coeffs, s->sh_coeffs, r->sh_degree, dir,
             sp->rgb);
    if (!isfinite(sp->rgb[0] + sp->rgb[1] + sp->rgb[2]) || !isfinite(sp->a + sp->b + sp->c))
        return 0;
    return 1;
}

static void preprocess_range(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    (void)ith;
    for (int64_t i = begin; i < end; i++) {
        splat *sp = &r->splats[i];
        if (!preprocess_one(r, i, sp)) {
            memset(sp, 0, sizeof *sp);
            sp->tx0 = 1;
            sp->tx1 = 0;
        }
    }
}

static void count_chunks(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    (void)ith;
    int64_t nt = (int64_t)r->tiles_x * r->tiles_y;
    for (int64_t ch = begin; ch < end; ch++) {
        uint32_t *cnt = r->chunk_counts + ch * nt;
        int64_t g0 = ch * r->chunk_len, g1 = g0 + r->chunk_len;
        if (g1 > r->s->n) g1 = r->s->n;
        for (int64_t g = g0; g < g1; g++) {
            const splat *sp = &r->splats[g];
            for (int ty = sp->ty0; ty <= sp->ty1 && sp->tx0 <= sp->tx1; ty++)
                for (int tx = sp->tx0; tx <= sp->tx1; tx++) cnt[(int64_t)ty * r->tiles_x + tx]++;
        }
    }
}

static void fill_chunks(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    (void)ith;
    int64_t nt = (int64_t)r->tiles_x * r->tiles_y;
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t *off = r->chunk_offsets + ch * nt;
        int64_t g0 = ch * r->chunk_len, g1 = g0 + r->chunk_len;
        if (g1 > r->s->n) g1 = r->s->n;
        for (int64_t g = g0; g < g1; g++) {
            const splat *sp = &r->splats[g];
            if (sp->tx0 > sp->tx1) continue;
            uint32_t zb;
            memcpy(&zb, &sp->z, sizeof zb);
            uint64_t key = (uint64_t)zb << 32 | (uint64_t)g;
            for (int ty = sp->ty0; ty <= sp->ty1; ty++)
                for (int tx = sp->tx0; tx <= sp->tx1; tx++)
                    r->keys[off[(int64_t)ty * r->tiles_x + tx]++] = key;
        }
    }
}

/* e^x for ln(1/255) - 1 <= x <= 0 (all the blend loop needs): Cody-Waite
 * range reduction and a degree-6 Taylor polynomial, relative error ~2e-7.
 * Inline and branch-free, unlike libm's expf. */
static inline float exp_small(float x)
{
    float n = floorf(x * 1.44269504f + 0.5f);
    float r = x - n * 0.693145752f - n * 1.42860677e-6f;
    float p = 0.00138888889f;
    p = p * r + 0.00833333333f;
    p = p * r + 0.0416666667f;
    p = p * r + 0.166666667f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float sc;
    memcpy(&sc, &bits, sizeof sc);
    return p * sc;
}

/* Sorts keys by their high 32 bits (depth; positive floats order as unsigned
 * integers), stably, so equal depths keep their index order. */
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
    /* Four passes: the result is back in k. */
}

static void render_tiles(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    const dk_camera *cam = r->cam;
    const float *bg = r->cfg->background;
    float T[TILE * TILE], C[TILE * TILE][3], Dz[TILE * TILE], Ws[TILE * TILE];
    uint8_t done[TILE * TILE];
    uint64_t *tmp = r->scratch + (size_t)ith * (size_t)r->max_tile;
    for (int64_t t = begin; t < end; t++) {
        int tx = (int)(t % r->tiles_x), ty = (int)(t / r->tiles_x);
        int x0 = tx * TILE, y0 = ty * TILE;
        int x1 = x0 + TILE < cam->width ? x0 + TILE : cam->width;
        int y1 = y0 + TILE < cam->height ? y0 + TILE : cam->height;
        int w = x1 - x0, h = y1 - y0, npx = w * h, n_done = 0;
        for (int p = 0; p < npx; p++) {
            T[p] = 1.0f;
            C[p][0] = C[p][1] = C[p][2] = 0;
            Dz[p] = 0;
            Ws[p] = 0;
            done[p] = 0;
        }
        uint64_t *keys = r->keys + r->tile_start[t];
        int64_t nk = r->tile_start[t + 1] - r->tile_start[t];
        sort_keys(keys, nk, tmp);
        for (int64_t e = 0; e < nk && n_done < npx; e++) {
            if (e + 8 < nk) __builtin_prefetch(&r->splats[(uint32_t)keys[e + 8]]);
            const splat *sp = &r->splats[(uint32_t)keys[e]];
            /* Pixel rows/columns whose centres can lie inside the footprint box. */
            int px0 = (int)ceilf(sp->mx - sp->ex - 0.5f), px1 = (int)floorf(sp->mx + sp->ex - 0.5f);
            int py0 = (int)ceilf(sp->my - sp->ey - 0.5f), py1 = (int)floorf(sp->my + sp->ey - 0.5f);
            if (px0 < x0) px0 = x0;
            if (py0 < y0) py0 = y0;
            if (px1 > x1 - 1) px1 = x1 - 1;
            if (py1 > y1 - 1) py1 = y1 - 1;
            const float ha = -0.5f * sp->a, hc = -0.5f * sp->c, b = sp->b, pmin = sp->pmin;
            for (int py = py0; py <= py1; py++) {
                float dy = sp->my - ((float)py + 0.5f);
                float cy = hc * dy * dy, by = b * dy;
                for (int px = px0; px <= px1; px++) {
                    int p = (py - y0) * w + (px - x0);
                    if (done[p]) continue;
                    float dx = sp->mx - ((float)px + 0.5f);
                    float power = ha * dx * dx + cy - by * dx;
                    if (!(power <= 0.0f && power >= pmin)) continue;   /* NaN too */
                    float al = sp->opacity * exp_small(power);
                    if (al > ALPHA_MAX) al = ALPHA_MAX;
                    if (al < ALPHA_MIN) continue;
                    float nt = T[p] * (1.0f - al);
                    if (nt < T_MIN) {
                        done[p] = 1;
                        n_done++;
                        continue;
                    }
                    float wgt = al * T[p];
                    C[p][0] += sp->rgb[0] * wgt;
                    C[p][1] += sp->rgb[1] * wgt;
                    C[p][2] += sp->rgb[2] * wgt;
                    Dz[p] += sp->z * wgt;
                    Ws[p] += wgt;
                    T[p] = nt;
                }
            }
        }
        for (int py = 0; py < h; py++)
            for (int px = 0; px < w; px++) {
                int p = py * w + px;
                size_t o = (size_t)(y0 + py) * (size_t)cam->width + (size_t)(x0 + px);
                float a = 1.0f - T[p];
                if (r->rgb)
                    for (int c = 0; c < 3; c++) r->rgb[o * 3 + (size_t)c] = C[p][c] + T[p] * bg[c];
                if (r->alpha) r->alpha[o] = a;
                if (r->depth) r->depth[o] = Ws[p] > 0 ? Dz[p] / Ws[p] : 0.0f;
            }
    }
}

int dk_render_camera(const dk_scene *s, const dk_camera *cam, const dk_pose *cam_to_world,
                     const dk_render_config *cfg, dk_pool *pool, float *rgb, float *alpha,
                     float *depth)
{
    if (!s || !cam || !cam_to_world || !cfg)
        return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (s->n < 0 || s->n > DK_SCENE_MAX_GAUSSIANS || s->sh_degree < 0 ||
        s->sh_degree > DK_SCENE_MAX_SH_DEGREE ||
        s->sh_coeffs != (s->sh_degree + 1) * (s->sh_degree + 1) || !s->means || !s->scales ||
        !s->rotations || !s->opacities || !s->sh)
        return dk__error(DK_EINVAL, __func__, "inconsistent scene");
    dk_camera cv = *cam;
    if (dk_camera_validate(&cv)) {
        char msg[DK_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", dk_errmsg());
        return dk__error(DK_EINVAL, __func__, "invalid camera: %s", msg);
    }
    cam = &cv;
    if (cfg->sh_degree > s->sh_degree || cfg->sh_degree < -1)
        return dk__error(DK_EINVAL, __func__, "sh_degree %d (scene has %d)", cfg->sh_degree,
                         s->sh_degree);
    if (!(cfg->near_z >= 0) || !(cfg->dilation >= 0) || !isfinite(cfg->dilation) ||
        !isfinite(cfg->near_z) ||
        !isfinite(cfg->background[0] + cfg->background[1] + cfg->background[2]))
        return dk__error(DK_EINVAL, __func__, "bad near_z, dilation or background");
    if (cfg->projection < DK_PROJ_AUTO || cfg->projection > DK_PROJ_UT)
        return dk__error(DK_EINVAL, __func__, "unknown projection %d", (int)cfg->projection);
    if (cfg->projection == DK_PROJ_EWA && (cam->model != DK_CAM_PINHOLE || cfg->rolling_shutter))
        return dk__error(DK_EINVAL, __func__,
                         "EWA projection needs a pinhole camera and a global shutter");
    if (cfg->rolling_shutter && (cfg->rs_iterations < 1 || cfg->rs_iterations > 100))
        return dk__error(DK_EINVAL, __func__, "rs_iterations = %d outside [1, 100]",
                         cfg->rs_iterations);
    if (cfg->projection != DK_PROJ_EWA) {
        double a = cfg->ut_alpha, k = cfg->ut_kappa;
        double lam3 = a * a * (3 + k);   /* D + λ */
        if (!(lam3 > 0) || !isfinite(lam3) || !isfinite(cfg->ut_beta))
            return dk__error(DK_EINVAL, __func__, "bad unscented-transform parameters");
    }
    dk_pose w2c = dk_pose_inverse(cam_to_world);
    render_ctx r;
    memset(&r, 0, sizeof r);
    r.s = s;
    r.cam = cam;
    r.cfg = cfg;
    r.sh_degree = cfg->sh_degree < 0 ? s->sh_degree : cfg->sh_degree;
    dk_quat_to_rotation(w2c.q, r.rw);
    memcpy(r.tw, w2c.t, sizeof r.tw);
    memcpy(r.campos, cam_to_world->t, sizeof r.campos);
    r.rs = cfg->rolling_shutter != 0;
    r.c2w0 = *cam_to_world;
    r.c2w1 = r.rs ? cfg->cam_to_world_end : *cam_to_world;
    r.proj_ut = r.rs || cfg->projection == DK_PROJ_UT ||
                (cfg->projection == DK_PROJ_AUTO && cam->model != DK_CAM_PINHOLE);
    r.tiles_x = (cam->width + TILE - 1) / TILE;
    r.tiles_y = (cam->height + TILE - 1) / TILE;
    r.rgb = rgb;
    r.alpha = alpha;
    r.depth = depth;
    int64_t nt = (int64_t)r.tiles_x * r.tiles_y;
    int nth = dk_pool_size(pool);
    int st = DK_OK;

    r.splats = dk_malloc_aligned((size_t)(s->n ? s->n : 1) * sizeof(splat), 64);
    r.n_chunks = s->n < N_CHUNKS ? (s->n ? s->n : 1) : N_CHUNKS;
    r.chunk_len = (s->n + r.n_chunks - 1) / r.n_chunks;
    if (r.chunk_len == 0) r.chunk_len = 1;
    r.chunk_counts = dk_calloc((size_t)(r.n_chunks * nt), sizeof(uint32_t));
    r.chunk_offsets = dk_malloc((size_t)(r.n_chunks * nt) * sizeof(int64_t));
    r.tile_start = dk_malloc((size_t)(nt + 1) * sizeof(int64_t));
    if (!r.splats || !r.chunk_counts || !r.chunk_offsets || !r.tile_start) {
        st = dk__error(DK_ENOMEM, __func__, "out of memory");
        goto out;
    }
    dk_pool_for(pool, s->n, 4096, preprocess_range, &r);
    dk_pool_for(pool, r.n_chunks, 1, count_chunks, &r);
    int64_t total = 0;
    r.max_tile = 1;
    for (int64_t t = 0; t < nt; t++) {
        r.tile_start[t] = total;
        int64_t t0 = total;
        for (int64_t ch = 0; ch < r.n_chunks; ch++) {
            r.chunk_offsets[ch * nt + t] = total;
            total += r.chunk_counts[ch * nt + t];
        }
        if (total - t0 > r.max_tile) r.max_tile = total - t0;
    }
    r.tile_start[nt] = total;
    dk_free(r.chunk_counts);
    r.chunk_counts = NULL;
    size_t kbytes, sbytes;
    if ((uint64_t)total > SIZE_MAX / 8 || dk__mul_overflow((size_t)total, 8, &kbytes) ||
        dk__mul_overflow((size_t)r.max_tile * 8, (size_t)nth, &sbytes)) {
        st = dk__error(DK_EOVERFLOW, __func__, "%lld Gaussian-tile pairs", (long long)total);
        goto out;
    }
    r.keys = dk_malloc(kbytes ? kbytes : 8);
    r.scratch = dk_malloc(sbytes);
    if (!r.keys || !r.scratch) {
        st = dk__error(DK_ENOMEM, __func__, "out of memory for %lld Gaussian-tile pairs",
                       (long long)total);
        goto out;
    }
    dk_pool_for(pool, r.n_chunks, 1, fill_chunks, &r);
    dk_pool_for(pool, nt, 1, render_tiles, &r);
out:
    dk_free_aligned(r.splats);
    dk_free(r.chunk_counts);
    dk_free(r.chunk_offsets);
    dk_free(r.tile_start);
    dk_free(r.keys);
    dk_free(r.scratch);
    return st;
}
