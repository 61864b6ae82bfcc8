/*
 * CPU tile rasterizer for Gaussian scenes (3DGS forward pass).
 *
 * Stages, each deterministic regardless of the pool size:
 *   1. candidates (parallel over fixed chunks of the scene): cheap culls and
 *      the camera depth of every Gaussian (actor placement included);
 *   2. depth order: candidates are bucketed on their high depth bits
 *      (counting sort over fixed chunks, index order kept within a bucket);
 *      a bucket is radix-sorted on the remaining bits only when the front
 *      of the order reaches it. The order is (camera z, index);
 *   3. front-to-back slabs of that order, each about twice the (rectangle)
 *      pairs of the last: the slab's Gaussians get the full preprocess
 *      (activation, 2-D mean and covariance by EWA or the unscented
 *      transform, conic, tile rectangle), are binned to the 16x16 tiles
 *      their ellipses reach (per-chunk counts prefix-summed into 64-bit
 *      offsets, so every tile's list is already in depth order), skipping
 *      tiles whose pixels have all stopped, and are blended; only splats
 *      that reach a tile get their SH colour. A tile still live after a slab
 *      keeps its blend state for the next one;
 *   4. tiles that never stopped are written from their state (or the
 *      background).
 * A scene whose front layers cover the image thus never preprocesses the
 * Gaussians hidden behind them.
 * The blend works on 16-pixel tile rows in W-lane vectors (GCC/Clang vector
 * extensions; W = 4 everywhere, 8 and 16 where the CPU has AVX2 / AVX-512).
 * No FMA is enabled and ISO C mode keeps contraction off, so every width
 * rounds identically.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "drivekit/sim.h"
#include "internal.h"
#include "sim_impl.h"

#define TILE 16   /* tiles per axis <= 65536 / 16: tile indices fit int16 */
#define N_CHUNKS 32
#define ALPHA_MIN (1.0f / 255.0f)
#define ALPHA_MAX 0.99f
#define T_MIN 1e-4f
/* First slab: about this many (Gaussian, tile) pairs per tile; then x2. */
#define SLAB_PAIRS_PER_TILE 128

/* The blend kernel is compiled for 4-lane vectors (SSE2, NEON: every build)
 * and, on x86-64 with GCC or Clang, for AVX2 (8 lanes) and AVX-512 (16 lanes),
 * picked once at run time. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DK_RASTER_X86 1
#endif

static const double SH_C0 = 0.28209479177387814;
static const double SH_C1 = 0.4886025119029199;
static const double SH_C2[5] = { 1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
                                 -1.0925484305920792, 0.5462742152960396 };
static const double SH_C3[7] = { -0.5900435899266435, 2.890611442640554, -0.4570457994644658,
                                 0.3731763325901154, -0.4570457994644658, 1.445305721320277,
                                 -0.5900435899266435 };

typedef struct splat {
    float mx, my;        /* 2-D mean, continuous pixel coordinates */
    float ha, b, hc;     /* exponent -0.5 d^T conic d = ha dx^2 - b dx dy + hc dy^2 */
    float opacity;
    float pmin;          /* ln(1/(255 opacity)): exponents below it give alpha < 1/255 */
    float rgb[3];
    float z;             /* camera-frame depth */
    float ex, ey;        /* half extents of the 1/255 footprint's bounding box */
    int16_t tx0, ty0, tx1, ty1;   /* tile rectangle, inclusive; tx0 > tx1 = culled */
    uint32_t g;          /* index in the scene */
} splat;   /* 64 bytes: one cache line (the blend loop reads them in random order) */
_Static_assert(sizeof(splat) == 64, "splat is one cache line");

/* Blend state of one tile, kept across slabs: transmittance (negated once the
 * pixel has stopped; -1 outside the image), colour, depth and weight sums. */
typedef struct tile_state {
    _Alignas(64) float T[TILE][TILE];
    float C0[TILE][TILE], C1[TILE][TILE], C2[TILE][TILE], Dz[TILE][TILE], Ws[TILE][TILE];
} tile_state;

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
    /* tracked actors (global shutter: one snapshot at cfg->time) */
    int actors;           /* the scene has actor ids and tracks */
    dk__actor_poses apose;
    double *arot;         /* 9 per snapshot pose: rotation matrix */
    int tiles_x, tiles_y;
    int64_t n_tiles;
    /* candidates (z bits << 32 | index), per chunk of the scene */
    uint64_t *cand;
    int64_t cand_n[N_CHUNKS];
    uint32_t cand_zmin[N_CHUNKS], cand_zmax[N_CHUNKS];
    /* depth order: candidates bucketed on their high z bits, buckets sorted
       on demand */
    int64_t n_vis;
    uint64_t *order, *order_tmp;
    uint32_t zlo;
    int bshift, nb, b_sorted, b0;   /* buckets [0, b_sorted) are sorted */
    int64_t *bcnt;            /* N_CHUNKS x N_BUCKETS counts, then offsets */
    int64_t *bstart;          /* nb + 1 */
    /* splats by depth position, computed for [0, prepared) */
    splat *splats;
    int64_t prepared, p0;
    /* slab binning */
    int64_t s0, s1, n_chunks;
    uint32_t *chunk_counts;   /* n_chunks x n_tiles */
    int64_t *chunk_offsets;   /* n_chunks x n_tiles */
    int64_t *tile_start;      /* n_tiles + 1 */
    uint32_t *keys;           /* depth positions, per tile in order */
    size_t keys_cap;
    int64_t *hit_off;         /* per slab splat: first entry in hits */
    uint32_t *n_hit, *hits;   /* per slab splat: tile count; tile ids */
    size_t slab_cap, hits_cap;
    /* tiles: blended in per-thread scratch; a tile still live after a slab
       keeps its state in store */
    tile_state *scratch, *store;
    uint8_t *tile_saved, *tile_done;
    int (*blend)(const splat *restrict, const uint32_t *restrict, int64_t,
                 tile_state *restrict, int, int, int);
    float *rgb, *alpha, *depth;
} render_ctx;

/* The largest per-call buffer (splats): 2 MiB aligned and, on
 * Linux, advised to use huge pages, which saves most of the page faults of
 * touching tens of fresh megabytes on every call. Free *raw with dk_free. */
static void *big_alloc(size_t size, void **raw)
{
    const size_t huge = (size_t)2 << 20;
    size_t total;
    *raw = NULL;
    if (dk__add_overflow(size, huge, &total) || !(*raw = dk_malloc(total))) return NULL;
    uintptr_t p = ((uintptr_t)*raw + huge - 1) & ~(uintptr_t)(huge - 1);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (size >= 2 * huge) (void)madvise((void *)p, size & ~(huge - 1), MADV_HUGEPAGE);
#endif
    return (void *)p;
}

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
    cfg->time = 0.0;
    cfg->readout_duration = 0.0;
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

static void apply(const double rw[9], const double tw[3], const double w[3], double p[3])
{
    for (int i = 0; i < 3; i++)
        p[i] = rw[i * 3] * w[0] + rw[i * 3 + 1] * w[1] + rw[i * 3 + 2] * w[2] + tw[i];
}

/* Hamilton product a * b of (w, x, y, z) quaternions. */
static void quat_mul(const double a[4], const double b[4], double o[4])
{
    o[0] = a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3];
    o[1] = a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2];
    o[2] = a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1];
    o[3] = a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0];
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

/* World position at readout fraction t of a point stored in actor `actor`'s
 * frame (-1: already world): the actor's pose at time + t * readout. */
static void actor_point_at(const render_ctx *r, int32_t actor, double t, const double pl[3],
                           double pw[3])
{
    dk_pose tmp;
    const dk_pose *ap = actor >= 0 ? dk__scene_track_pose_at(
                                         r->s, actor, r->cfg->time + t * r->cfg->readout_duration,
                                         &tmp)
                                   : NULL;
    if (!ap) {
        memcpy(pw, pl, 3 * sizeof(double));
        return;
    }
    double R[9];   /* the same arithmetic as the global-shutter snapshot */
    dk_quat_to_rotation(ap->q, R);
    apply(R, ap->t, pl, pw);
}

/* Rolling-shutter projection of a point (3DGUT): project with the start pose
 * (the end pose if that fails), then re-project with the pose at the readout
 * time of the current pixel until the time stops changing. The point is in
 * `actor`'s frame, which moves with the readout too. Returns 0 when the
 * camera model is undefined at the point; *t_out is the readout fraction and
 * pw_out the world position at it. */
static int project_rs(const render_ctx *r, int32_t actor, const double pl[3], double uv[2],
                      double *z, double *t_out, double pw_out[3])
{
    const dk_camera *cam = r->cam;
    double pc[3], rw[9], tw[3], pw[3];
    actor_point_at(r, actor, 0.0, pl, pw);
    apply(r->rw, r->tw, pw, pc);
    uv[0] = uv[1] = NAN;
    dk_camera_project(cam, pc, uv, NULL);
    double t = 0;
    if (!isfinite(uv[0]) || !isfinite(uv[1])) {
        pose_at(r, 1.0, rw, tw, NULL);
        actor_point_at(r, actor, 1.0, pl, pw);
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
        actor_point_at(r, actor, t, pl, pw);
        apply(rw, tw, pw, pc);
        uv[0] = uv[1] = NAN;
        dk_camera_project(cam, pc, uv, NULL);
        if (!isfinite(uv[0]) || !isfinite(uv[1])) return 0;
    }
    if (z) *z = pc[2];
    if (t_out) *t_out = t;
    if (pw_out) memcpy(pw_out, pw, sizeof pw);
    return 1;
}

/* Returns 1 and fills sp when the Gaussian is visible. With depth_only, only
 * sp->z, after the cheap culls (a candidate for the depth order: the full
 * pass computes the same z and may still cull it). */
static int preprocess_one(const render_ctx *r, int64_t i, splat *sp, int depth_only)
{
    const dk_scene *s = r->s;
    const dk_camera *cam = r->cam;
    if (!isfinite(s->opacities[i])) return 0;
    double opacity = 0, q[4] = { 1, 0, 0, 0 };
    if (depth_only) {
        /* sigmoid(-5.54) < 1/255: a conservative opacity cull */
        if (!(s->opacities[i] >= -5.54f)) return 0;
    } else {
        opacity = 1.0 / (1.0 + exp(-(double)s->opacities[i]));
        if (!(opacity >= 1.0 / 255.0)) return 0;
        const float *qf = s->rotations + i * 4;
        for (int k = 0; k < 4; k++) q[k] = qf[k];
        double qn = sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
        if (!(qn >= 1e-12) || !isfinite(qn)) return 0;
        for (int k = 0; k < 4; k++) q[k] /= qn;
    }
    double mu[3] = { s->means[i * 3], s->means[i * 3 + 1], s->means[i * 3 + 2] };
    /* Actor placement: once here for a global shutter; per readout time in
     * project_rs for a rolling one. */
    int32_t actor = -1;
    if (r->actors && s->actor_id[i] >= 0) {
        if (r->rs) {
            actor = s->actor_id[i];
        } else {
            const dk_pose *ap = dk__actor_poses_find(&r->apose, s->actor_id[i]);
            if (ap) {
                double ml[3] = { mu[0], mu[1], mu[2] }, ql[4] = { q[0], q[1], q[2], q[3] };
                apply(r->arot + 9 * (ap - r->apose.poses), ap->t, ml, mu);
                quat_mul(ap->q, ql, q);
            }
        }
    }
    double pc[3], t_mean = 0;
    double campos[3] = { r->campos[0], r->campos[1], r->campos[2] };
    double muw[3] = { mu[0], mu[1], mu[2] };   /* world mean for the SH direction */
    if (!r->rs) {
        apply(r->rw, r->tw, mu, pc);
        if (!(pc[2] > r->cfg->near_z)) return 0;
    } else {
        double uv[2];
        if (!project_rs(r, actor, mu, uv, &pc[2], &t_mean, muw) || !(pc[2] > r->cfg->near_z))
            return 0;
        if (!depth_only) {
            double rw[9], tw[3];
            pose_at(r, t_mean, rw, tw, campos);
        }
    }
    sp->z = (float)pc[2];
    if (depth_only) return 1;
    double R[9];
    dk_quat_to_rotation(q, R);
    double sc[3];
    for (int k = 0; k < 3; k++) {
        sc[k] = exp((double)s->scales[i * 3 + k]);
        if (!isfinite(sc[k])) return 0;
    }
    double m2[2], cov[3];   /* cov: xx, xy, yy */
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
        /* Perspective models blow a sigma point near the camera plane up to
           huge image distances: a Gaussian with one there becomes a screen-
           sized haze (EWA clamps its tangents instead). Such Gaussians are
           culled; angle-based models (fisheye, f-theta) stay bounded. */
        int perspective = cam->model == DK_CAM_PINHOLE || cam->model == DK_CAM_OPENCV;
        int linearise = 0;
        for (int j = 0; j < 7 && !linearise; j++) {
            double pw[3] = { mu[0], mu[1], mu[2] };
            if (j > 0) {
                int ax = (j - 1) % 3;
                double sg = j <= 3 ? 1.0 : -1.0;
                for (int k = 0; k < 3; k++) pw[k] += sg * spread * sc[ax] * R[k * 3 + ax];
            }
            double zj;
            if (r->rs) {
                if (!project_rs(r, actor, pw, y[j], &zj, NULL, NULL)) return 0;
            } else {
                double pcj[3];
                apply(r->rw, r->tw, pw, pcj);
                y[j][0] = y[j][1] = NAN;
                dk_camera_project(cam, pcj, y[j], NULL);
                if (!isfinite(y[j][0]) || !isfinite(y[j][1])) return 0;
                zj = pcj[2];
            }
            /* A sigma point near the camera plane, or far outside the image,
               makes a perspective projection so nonlinear that the 2-D conic
               of the sigma points is a screen-sized haze: linearise at the
               mean instead (below), as EWA does with its tangent clamp. */
            if (perspective && (!(zj > r->cfg->near_z) || y[j][0] < -0.15 * cam->width ||
                                y[j][0] > 1.15 * cam->width || y[j][1] < -0.15 * cam->height ||
                                y[j][1] > 1.15 * cam->height))
                linearise = 1;
        }
        if (linearise) {
            /* Camera frame at the mean's readout time; Jacobian of the model
               at the mean with EWA's tangent clamp; Σ' = J W Σ Wᵀ Jᵀ. */
            double rwm[9], twm[3], pcm[3], Rm[9];
            if (r->rs) {
                pose_at(r, t_mean, rwm, twm, NULL);
            } else {
                memcpy(rwm, r->rw, sizeof rwm);
                memcpy(twm, r->tw, sizeof twm);
            }
            apply(rwm, twm, muw, pcm);
            memcpy(Rm, R, sizeof Rm);
            if (r->rs && actor >= 0) {
                dk_pose ap;
                if (dk__scene_track_pose_at(r->s, actor,
                                            r->cfg->time + t_mean * r->cfg->readout_duration,
                                            &ap)) {
                    double qa[4];
                    quat_mul(ap.q, q, qa);
                    dk_quat_to_rotation(qa, Rm);
                }
            }
            double zm = pcm[2];
            if (!(zm > r->cfg->near_z)) return 0;
            double limx_p = (cam->width - cam->cx) / cam->fx + 0.3 * cam->width / (2 * cam->fx);
            double limx_n = cam->cx / cam->fx + 0.3 * cam->width / (2 * cam->fx);
            double limy_p = (cam->height - cam->cy) / cam->fy + 0.3 * cam->height / (2 * cam->fy);
            double limy_n = cam->cy / cam->fy + 0.3 * cam->height / (2 * cam->fy);
            double tx = pcm[0] / zm, ty = pcm[1] / zm;
            tx = tx > limx_p ? limx_p : tx < -limx_n ? -limx_n : tx;
            ty = ty > limy_p ? limy_p : ty < -limy_n ? -limy_n : ty;
            double pl[3] = { tx * zm, ty * zm, zm }, uvl[2] = { NAN, NAN }, J[6];
            dk_camera_project(cam, pl, uvl, J);
            m2[0] = m2[1] = NAN;
            dk_camera_project(cam, pcm, m2, NULL);
            double WR[9], M[9], JM[6];
            mat3_mul(rwm, Rm, WR);
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++) M[a * 3 + b] = WR[a * 3 + b] * sc[b];
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 3; b++)
                    JM[a * 3 + b] = J[a * 3] * M[b] + J[a * 3 + 1] * M[3 + b] + J[a * 3 + 2] * M[6 + b];
            cov[0] = JM[0] * JM[0] + JM[1] * JM[1] + JM[2] * JM[2];
            cov[1] = JM[0] * JM[3] + JM[1] * JM[4] + JM[2] * JM[5];
            cov[2] = JM[3] * JM[3] + JM[4] * JM[4] + JM[5] * JM[5];
            if (!isfinite(cov[0]) || !isfinite(cov[1]) || !isfinite(cov[2])) return 0;
            goto conic;
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
conic:
    cov[0] += r->cfg->dilation;
    cov[2] += r->cfg->dilation;
    double det = cov[0] * cov[2] - cov[1] * cov[1];
    if (!(det > 0) || !isfinite(det) || !isfinite(m2[0]) || !isfinite(m2[1])) return 0;
    /* Footprint where opacity * exp(-0.5 m²) >= 1/255: m² <= 2 ln(255 opacity).
     * The ellipse's bounding box has half extents k sqrt(Σxx), k sqrt(Σyy). */
    double oc = opacity;
    double lno = log(255.0 * oc);
    double k2 = 2.0 * lno;
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
    sp->ha = -0.5f * (float)(cov[2] / det);
    sp->b = (float)(-cov[1] / det);
    sp->hc = -0.5f * (float)(cov[0] / det);
    sp->opacity = (float)oc;
    /* A hair lower than exact, so the alpha test in the blend stays the one
     * that decides at the boundary. */
    sp->pmin = (float)(-lno) - 1e-4f;
    sp->ex = (float)ex;
    sp->ey = (float)ey;
    sp->tx0 = (int16_t)tx0;
    sp->tx1 = (int16_t)tx1;
    sp->ty0 = (int16_t)ty0;
    sp->ty1 = (int16_t)ty1;
    sp->g = (uint32_t)i;
    /* The colour is evaluated only for Gaussians that reach a tile (bin_fill);
     * until then rgb holds the unit view direction (world frame). */
    double dir[3] = { muw[0] - campos[0], muw[1] - campos[1], muw[2] - campos[2] };
    double dn = sqrt(dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]);
    if (dn > 0)
        for (int a = 0; a < 3; a++) dir[a] /= dn;
    for (int a = 0; a < 3; a++) sp->rgb[a] = (float)dir[a];
    if (!isfinite(sp->ha + sp->b + sp->hc)) return 0;
    return 1;
}

/* Colour of splat g from the view direction in sp->rgb. A non-finite colour
 * zeroes the opacity, which culls the splat in the blend. */
static void splat_color(const render_ctx *r, uint32_t g, splat *sp)
{
    const dk_scene *s = r->s;
    double dir[3] = { sp->rgb[0], sp->rgb[1], sp->rgb[2] };
    sh_color(s->sh + (size_t)g * 3 * (size_t)s->sh_coeffs, s->sh_coeffs, r->sh_degree, dir,
             sp->rgb);
    if (!isfinite(sp->rgb[0] + sp->rgb[1] + sp->rgb[2])) {
        sp->opacity = 0.0f;
        sp->rgb[0] = sp->rgb[1] = sp->rgb[2] = 0.0f;
    }
}

/* ---- depth order --------------------------------------------------------- */

#define N_BUCKETS 4096
#define PREP_BLOCK 16384

static void chunk_range(int64_t n, int64_t n_chunks, int64_t ch, int64_t *b, int64_t *e)
{
    int64_t len = (n + n_chunks - 1) / n_chunks;
    *b = ch * len < n ? ch * len : n;
    *e = *b + len < n ? *b + len : n;
}

static inline uint32_t zbits(const splat *sp)
{
    uint32_t zb;
    memcpy(&zb, &sp->z, sizeof zb);
    return zb;
}

/* Candidates of each chunk, in index order at the chunk's start in cand. */
static void candidates(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    (void)ith;
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t b, e, c = 0;
        uint32_t lo = UINT32_MAX, hi = 0;
        chunk_range(r->s->n, N_CHUNKS, ch, &b, &e);
        for (int64_t g = b; g < e; g++) {
            splat tmp;
            if (!preprocess_one(r, g, &tmp, 1)) continue;
            uint32_t zb = zbits(&tmp);
            lo = zb < lo ? zb : lo;
            hi = zb > hi ? zb : hi;
            r->cand[b + c++] = (uint64_t)zb << 32 | (uint64_t)g;
        }
        r->cand_n[ch] = c;
        r->cand_zmin[ch] = lo;
        r->cand_zmax[ch] = hi;
    }
}

static inline int bucket_of(const render_ctx *r, uint64_t key)
{
    return (int)(((uint32_t)(key >> 32) >> r->bshift) - (r->zlo >> r->bshift));
}

static void bucket_count(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    (void)ith;
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t b, e, *c = r->bcnt + ch * N_BUCKETS;
        memset(c, 0, (size_t)r->nb * sizeof *c);
        chunk_range(r->s->n, N_CHUNKS, ch, &b, &e);
        for (int64_t i = b; i < b + r->cand_n[ch]; i++) c[bucket_of(r, r->cand[i])]++;
    }
}

static void bucket_scatter(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    (void)ith;
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t b, e, *c = r->bcnt + ch * N_BUCKETS;
        chunk_range(r->s->n, N_CHUNKS, ch, &b, &e);
        for (int64_t i = b; i < b + r->cand_n[ch]; i++) {
            uint64_t k = r->cand[i];
            r->order[c[bucket_of(r, k)]++] = k;
        }
    }
}

/* Sorts the keys of one bucket (in index order) by depth: a stable LSD radix
 * sort on the z bits below the bucket's (which share the bits above), so
 * equal depths keep index order. */
static void sort_bucket(uint64_t *k, int64_t n, uint64_t *tmp, int bits)
{
    if (n < 48) {
        for (int64_t i = 1; i < n; i++) {   /* keys are unique: (z, index) */
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
    for (int shift = 32; shift < 32 + bits; shift += 8) {
        int64_t cnt[256] = { 0 };
        for (int64_t i = 0; i < n; i++) cnt[(src[i] >> shift) & 255]++;
        int64_t sum = 0, single = 0;
        for (int d = 0; d < 256; d++) {
            int64_t c = cnt[d];
            single |= c == n;
            cnt[d] = sum;
            sum += c;
        }
        if (single) continue;
        for (int64_t i = 0; i < n; i++) dst[cnt[(src[i] >> shift) & 255]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != k) memcpy(k, src, (size_t)n * sizeof *k);
}

static void sort_buckets(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    (void)ith;
    for (int64_t b = r->b0 + begin; b < r->b0 + end; b++) {
        int64_t o = r->bstart[b];
        sort_bucket(r->order + o, r->bstart[b + 1] - o, r->order_tmp + o, r->bshift);
    }
}

static void prepare_range(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    (void)ith;
    const dk_scene *s = r->s;
    for (int64_t j = r->p0 + begin; j < r->p0 + end; j++) {
        /* Depth order visits the scene at random: fetch ahead. */
        if (j + 16 < r->p0 + end) {
            uint32_t gn = (uint32_t)r->order[j + 16];
            __builtin_prefetch(s->opacities + gn);
            __builtin_prefetch(s->means + (size_t)gn * 3);
            __builtin_prefetch(s->rotations + (size_t)gn * 4);
            __builtin_prefetch(s->scales + (size_t)gn * 3);
        }
        splat *sp = &r->splats[j];
        uint32_t g = (uint32_t)r->order[j];
        if (!preprocess_one(r, g, sp, 0)) {
            sp->tx0 = 1;
            sp->tx1 = 0;
            sp->ty0 = sp->ty1 = 0;
        }
        sp->g = g;
    }
}

/* Makes the splats of depth positions [prepared, prepared + PREP_BLOCK)
 * ready: sorts the buckets they fall in, then runs the full preprocess. */
static void prepare_block(render_ctx *r, dk_pool *pool)
{
    int64_t q = r->prepared + PREP_BLOCK < r->n_vis ? r->prepared + PREP_BLOCK : r->n_vis;
    int b1 = r->b_sorted;
    while (b1 < r->nb && r->bstart[b1] < q) b1++;
    if (b1 > r->b_sorted) {
        r->b0 = r->b_sorted;
        dk_pool_for(pool, b1 - r->b0, 1, sort_buckets, r);
        r->b_sorted = b1;
    }
    r->p0 = r->prepared;
    dk_pool_for(pool, q - r->prepared, 256, prepare_range, r);
    r->prepared = q;
}

/* ---- slab binning -------------------------------------------------------- */

/* Whether the footprint of sp (alpha >= 1/255) can reach a pixel centre of
 * tile (tx, ty): the minimum of the quadratic form over the rectangle of the
 * tile's pixel centres, exact for a convex quadratic (the centre if it lies
 * inside, else the best point of each edge), with slack for the float
 * evaluation in the blend. */
static int tile_hit(const render_ctx *r, const splat *sp, int tx, int ty)
{
    double X0 = tx * TILE + 0.5, Y0 = ty * TILE + 0.5;
    double X1 = (tx + 1) * TILE < r->cam->width ? (tx + 1) * TILE - 0.5 : r->cam->width - 0.5;
    double Y1 = (ty + 1) * TILE < r->cam->height ? (ty + 1) * TILE - 0.5 : r->cam->height - 0.5;
    double mx = sp->mx, my = sp->my;
    /* The point of the rectangle nearest to the centre: inside the footprint
     * there settles it (most tiles of a large splat). */
    double cx = mx < X0 ? X0 : mx > X1 ? X1 : mx, cy = my < Y0 ? Y0 : my > Y1 ? Y1 : my;
    if (cx == mx && cy == my) return 1;
    double A = -2.0 * sp->ha, B = sp->b, C = -2.0 * sp->hc;
    if (!(A > 1e-30 && C > 1e-30)) return 1;   /* (nearly) flat: everywhere */
    double lim = -2.0 * sp->pmin + 2e-3;
    double ddx = cx - mx, ddy = cy - my;
    if (A * ddx * ddx + 2 * B * ddx * ddy + C * ddy * ddy <= lim) return 1;
    double best = INFINITY, mag = 0, bc = -B / C, ba = -B / A;
    for (int k = 0; k < 4; k++) {
        double dx, dy;
        if (k < 2) {
            dx = (k ? X1 : X0) - mx;
            dy = bc * dx;
            dy = dy < Y0 - my ? Y0 - my : dy > Y1 - my ? Y1 - my : dy;
        } else {
            dy = (k == 3 ? Y1 : Y0) - my;
            dx = ba * dy;
            dx = dx < X0 - mx ? X0 - mx : dx > X1 - mx ? X1 - mx : dx;
        }
        double t0 = A * dx * dx, t1 = 2 * B * dx * dy, t2 = C * dy * dy, q = t0 + t1 + t2;
        if (q < best) {
            best = q;
            mag = fabs(t0) + fabs(t1) + fabs(t2);
        }
    }
    return !(best > lim + 1e-5 * mag);
}

/* Counts each tile's pairs of the slab per chunk, keeping every splat's
 * tiles (hit_off: where they go in hits, from the tile rectangles). */
static void bin_count(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    (void)ith;
    for (int64_t ch = begin; ch < end; ch++) {
        uint32_t *cnt = r->chunk_counts + ch * r->n_tiles;
        memset(cnt, 0, (size_t)r->n_tiles * sizeof *cnt);
        int64_t b, e;
        chunk_range(r->s1 - r->s0, r->n_chunks, ch, &b, &e);
        for (int64_t j = r->s0 + b; j < r->s0 + e; j++) {
            const splat *sp = &r->splats[j];
            uint32_t *hit = r->hits + r->hit_off[j - r->s0], nh = 0;
            for (int ty = sp->ty0; ty <= sp->ty1; ty++)
                for (int tx = sp->tx0; tx <= sp->tx1; tx++) {
                    int64_t t = (int64_t)ty * r->tiles_x + tx;
                    if (!r->tile_done[t] && tile_hit(r, sp, tx, ty)) {
                        cnt[t]++;
                        hit[nh++] = (uint32_t)t;
                    }
                }
            r->n_hit[j - r->s0] = nh;
        }
    }
}

static void bin_fill(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    (void)ith;
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t *off = r->chunk_offsets + ch * r->n_tiles;
        int64_t b, e;
        chunk_range(r->s1 - r->s0, r->n_chunks, ch, &b, &e);
        for (int64_t j = r->s0 + b; j < r->s0 + e; j++) {
            if (j + 8 < r->s0 + e && r->n_hit[j + 8 - r->s0]) {
                const char *shn = (const char *)(r->s->sh + (size_t)r->splats[j + 8].g * 3 *
                                                                 (size_t)r->s->sh_coeffs);
                for (int k = 0; k < 3 * r->s->sh_coeffs * 4; k += 64) __builtin_prefetch(shn + k);
            }
            const uint32_t *hit = r->hits + r->hit_off[j - r->s0];
            uint32_t nh = r->n_hit[j - r->s0];
            for (uint32_t k = 0; k < nh; k++) {
                int64_t t = hit[k];
                r->keys[off[t]++] = (uint32_t)j;
            }
            if (nh) splat_color(r, r->splats[j].g, &r->splats[j]);
        }
    }
}

/* ---- blending ------------------------------------------------------------ */

/* Bit mask of the tile rows that still have a live pixel (T > 0; as
 * integers, a stopped pixel's negative T has the sign bit set). */
static uint32_t live_rows(const tile_state *st)
{
    uint32_t m = 0;
    for (int py = 0; py < TILE; py++) {
        int32_t all = -1;
        for (int l = 0; l < TILE; l++) {
            int32_t v;
            memcpy(&v, &st->T[py][l], sizeof v);
            all &= v;
        }
        m |= (uint32_t)(all >= 0) << py;
    }
    return m;
}

/* Blends the n splats idx[] (depth order) into the tile at (x0, y0) of height
 * h, a tile row at a time in W-lane vectors VF (integer masks VI). Per pixel:
 * alpha = min(0.99, opacity exp(power)), skipped below 1/255; the pixel stops
 * before a splat that would take T below 1e-4. e^x for ln(1/255) - 1 <= x <=
 * 0: rounding to the nearest multiple of ln 2 (Cody-Waite, two constants) and
 * a degree-6 Taylor polynomial (Estrin's scheme), relative error < 3e-7. Rows
 * outside the footprint's bounding box and rows whose pixels have all
 * stopped are skipped. Returns 1 when every pixel has stopped. */
#define BLEND_TILE_FN(NAME, ATTR, VF, VI, VU, W)                                                   \
    ATTR static int NAME(const splat *restrict splats, const uint32_t *restrict idx,               \
                         int64_t n, tile_state *restrict st, int x0, int y0, int h)                \
    {                                                                                              \
        VF pxc[TILE / W];                                                                          \
        for (int l = 0; l < TILE; l++) pxc[l / W][l % W] = (float)(x0 + l) + 0.5f;                 \
        const VF zero = { 0 };                                                                     \
        uint32_t rows = live_rows(st);                                                             \
        for (int64_t e = 0; e < n && rows; e++) {                                                  \
            if (e + 8 < n) __builtin_prefetch(&splats[idx[e + 8]]);                                \
            const splat *sp = &splats[idx[e]];                                                     \
            int py0 = (int)ceilf(sp->my - sp->ey - 0.5f) - y0;                                     \
            int py1 = (int)floorf(sp->my + sp->ey - 0.5f) - y0;                                    \
            if (py0 < 0) py0 = 0;                                                                  \
            if (py1 > h - 1) py1 = h - 1;                                                          \
            const float mx = sp->mx, my = sp->my, ha = sp->ha, b = sp->b, hc = sp->hc;             \
            const float pmin = sp->pmin, op = sp->opacity;                                         \
            const float r0 = sp->rgb[0], r1 = sp->rgb[1], r2 = sp->rgb[2], z = sp->z;              \
            VF dxv[TILE / W], axx[TILE / W]; /* row-invariant parts of the exponent */             \
            for (int k = 0; k < TILE / W; k++) {                                                   \
                dxv[k] = mx - pxc[k];                                                              \
                axx[k] = ha * dxv[k] * dxv[k];                                                     \
            }                                                                                      \
            for (int py = py0; py <= py1; py++) {                                                  \
                if (!(rows >> py & 1)) continue;                                                   \
                float dy = my - ((float)(y0 + py) + 0.5f);                                         \
                float cy = hc * dy * dy, by = b * dy;                                              \
                for (int k = 0; k < TILE / W; k++) {                                               \
                    VF power = axx[k] + cy - by * dxv[k];                                          \
                    VF T, c0, c1, c2, dz, ws;                                                      \
                    memcpy(&T, &st->T[py][k * W], sizeof T);                                       \
                    VI ok = (T > 0.0f) & (power <= 0.0f) & (power >= pmin);                        \
                    /* n = round(x log2 e) by the 1.5 * 2^23 trick: its low                        \
                       mantissa bits are n, which become the scale 2^n. Lanes                      \
                       far outside the range give garbage that ok masks. */                        \
                    VF t = power * 1.44269504f + 12582912.0f;                                      \
                    VF nf = t - 12582912.0f;                                                       \
                    VF rr = power - nf * 0.693145752f - nf * 1.42860677e-6f;                       \
                    VF rsq = rr * rr; /* Estrin: a short dependency chain */                   \
                    VF pa = 1.0f + rr, pb = 0.5f + rr * 0.166666667f;                              \
                    VF pc = 0.0416666667f + rr * 0.00833333333f;                                   \
                    VF p = (pa + rsq * pb) + (rsq * rsq) * (pc + rsq * 0.00138888889f);            \
                    VF sc = (VF)(((VU)t - (0x4B400000u - 127u)) << 23);                            \
                    VF al = op * (p * sc);                                                         \
                    VI cap = al > ALPHA_MAX;                                                       \
                    al = (VF)((cap & (VI)(zero + ALPHA_MAX)) | (~cap & (VI)al));                   \
                    ok &= al >= ALPHA_MIN;                                                         \
                    VF nt = T * (1.0f - al);                                                       \
                    VI fin = ok & (nt < T_MIN);                                                    \
                    VI upd = ok & ~fin;                                                            \
                    VF wgt = (VF)((VI)(al * T) & upd); /* +0 where not updated */                  \
                    memcpy(&c0, &st->C0[py][k * W], sizeof c0);                                    \
                    memcpy(&c1, &st->C1[py][k * W], sizeof c1);                                    \
                    memcpy(&c2, &st->C2[py][k * W], sizeof c2);                                    \
                    memcpy(&dz, &st->Dz[py][k * W], sizeof dz);                                    \
                    memcpy(&ws, &st->Ws[py][k * W], sizeof ws);                                    \
                    c0 += r0 * wgt;                                                                \
                    c1 += r1 * wgt;                                                                \
                    c2 += r2 * wgt;                                                                \
                    dz += z * wgt;                                                                 \
                    ws += wgt;                                                                     \
                    /* updated: nt; stopped: -T (the sign marks it); else T */                     \
                    T = (VF)((upd & (VI)nt) | (fin & (VI)(zero - T)) | (~ok & (VI)T));             \
                    memcpy(&st->T[py][k * W], &T, sizeof T);                                       \
                    memcpy(&st->C0[py][k * W], &c0, sizeof c0);                                    \
                    memcpy(&st->C1[py][k * W], &c1, sizeof c1);                                    \
                    memcpy(&st->C2[py][k * W], &c2, sizeof c2);                                    \
                    memcpy(&st->Dz[py][k * W], &dz, sizeof dz);                                    \
                    memcpy(&st->Ws[py][k * W], &ws, sizeof ws);                                    \
                }                                                                                  \
            }                                                                                      \
            if ((e & 7) == 7) rows = live_rows(st);                                                \
        }                                                                                          \
        return live_rows(st) == 0;                                                                 \
    }

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));
BLEND_TILE_FN(blend_tile_4, , v4f, v4i, v4u, 4)
#ifdef DK_RASTER_X86
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef uint32_t v16u __attribute__((vector_size(64)));
BLEND_TILE_FN(blend_tile_8, __attribute__((target("avx2"))), v8f, v8i, v8u, 8)
BLEND_TILE_FN(blend_tile_16, __attribute__((target("avx512f"))), v16f, v16i, v16u, 16)
#endif

typedef int (*blend_fn)(const splat *restrict, const uint32_t *restrict, int64_t,
                        tile_state *restrict, int, int, int);

static blend_fn pick_blend(void)
{
#ifdef DK_RASTER_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return blend_tile_16;
    if (__builtin_cpu_supports("avx2")) return blend_tile_8;
#endif
    return blend_tile_4;
}

static void tile_init(const render_ctx *r, int64_t t, tile_state *st)
{
    int x0 = (int)(t % r->tiles_x) * TILE, y0 = (int)(t / r->tiles_x) * TILE;
    memset(st, 0, sizeof *st);
    for (int py = 0; py < TILE; py++)
        for (int l = 0; l < TILE; l++)
            st->T[py][l] = y0 + py < r->cam->height && x0 + l < r->cam->width ? 1.0f : -1.0f;
}

/* Writes tile t's pixels from its state (NULL: nothing blended). */
static void write_tile(const render_ctx *r, int64_t t, const tile_state *st)
{
    const dk_camera *cam = r->cam;
    const float *bg = r->cfg->background;
    int x0 = (int)(t % r->tiles_x) * TILE, y0 = (int)(t / r->tiles_x) * TILE;
    int x1 = x0 + TILE < cam->width ? x0 + TILE : cam->width;
    int y1 = y0 + TILE < cam->height ? y0 + TILE : cam->height;
    for (int py = 0; py < y1 - y0; py++) {
        size_t o = (size_t)(y0 + py) * (size_t)cam->width + (size_t)x0;
        int w = x1 - x0;
        if (!st) {
            for (int px = 0; px < w; px++) {
                if (r->rgb)
                    for (int k = 0; k < 3; k++) r->rgb[(o + (size_t)px) * 3 + (size_t)k] = bg[k];
                if (r->alpha) r->alpha[o + (size_t)px] = 0.0f;
                if (r->depth) r->depth[o + (size_t)px] = 0.0f;
            }
            continue;
        }
        for (int px = 0; px < w; px++) {
            float T = fabsf(st->T[py][px]);
            if (r->rgb) {
                float *c = r->rgb + (o + (size_t)px) * 3;
                c[0] = st->C0[py][px] + T * bg[0];
                c[1] = st->C1[py][px] + T * bg[1];
                c[2] = st->C2[py][px] + T * bg[2];
            }
            if (r->alpha) r->alpha[o + (size_t)px] = 1.0f - T;
            if (r->depth) {
                float ws = st->Ws[py][px];
                r->depth[o + (size_t)px] = ws > 0 ? st->Dz[py][px] / ws : 0.0f;
            }
        }
    }
}

static void blend_tiles(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    tile_state *st = &r->scratch[ith];
    for (int64_t t = begin; t < end; t++) {
        int64_t nk = r->tile_start[t + 1] - r->tile_start[t];
        if (nk == 0) continue;
        /* A tile's first slab blends in the thread's scratch (most tiles
           stop there); a tile that goes on keeps its state in store. */
        tile_state *ts = r->tile_saved[t] ? &r->store[t] : st;
        if (ts == st) tile_init(r, t, st);
        int x0 = (int)(t % r->tiles_x) * TILE, y0 = (int)(t / r->tiles_x) * TILE;
        int h = y0 + TILE < r->cam->height ? TILE : r->cam->height - y0;
        if (r->blend(r->splats, r->keys + r->tile_start[t], nk, ts, x0, y0, h)) {
            write_tile(r, t, ts);
            r->tile_done[t] = 1;
        } else if (ts == st) {
            memcpy(&r->store[t], st, sizeof *st);
            r->tile_saved[t] = 1;
        }
    }
}

/* Tiles that never stopped: from their saved state, or the background. */
static void finish_tiles(void *ctx, int64_t begin, int64_t end, int ith)
{
    render_ctx *r = ctx;
    (void)ith;
    for (int64_t t = begin; t < end; t++)
        if (!r->tile_done[t]) write_tile(r, t, r->tile_saved[t] ? &r->store[t] : NULL);
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
    if (!isfinite(cfg->time))
        return dk__error(DK_EINVAL, __func__, "time %g is not finite", cfg->time);
    if (!(cfg->readout_duration >= 0) || !isfinite(cfg->readout_duration))
        return dk__error(DK_EINVAL, __func__, "readout_duration %g is not finite and >= 0",
                         cfg->readout_duration);
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
    r.n_tiles = (int64_t)r.tiles_x * r.tiles_y;
    r.rgb = rgb;
    r.alpha = alpha;
    r.depth = depth;
    int64_t nt = r.n_tiles;
    int st = DK_OK, nth = dk_pool_size(pool);
    r.actors = s->actor_id && dk_scene_actor_track_count(s) > 0;
    r.blend = pick_blend();
    void *splats_raw = NULL;

    size_t ng = (size_t)(s->n ? s->n : 1);
    r.cand = dk_malloc(ng * sizeof(uint64_t));
    r.bcnt = dk_malloc((size_t)N_CHUNKS * N_BUCKETS * sizeof(int64_t));
    r.bstart = dk_malloc((N_BUCKETS + 1) * sizeof(int64_t));
    r.chunk_counts = dk_malloc((size_t)(N_CHUNKS * nt) * sizeof(uint32_t));
    r.chunk_offsets = dk_malloc((size_t)(N_CHUNKS * nt) * sizeof(int64_t));
    r.tile_start = dk_malloc((size_t)(nt + 1) * sizeof(int64_t));
    r.scratch = dk_malloc_aligned((size_t)nth * sizeof(tile_state), 64);
    r.store = dk_malloc_aligned((size_t)nt * sizeof(tile_state), 64);
    r.tile_saved = dk_calloc((size_t)nt, 1);
    r.tile_done = dk_calloc((size_t)nt, 1);
    if (!r.cand || !r.bcnt || !r.bstart || !r.chunk_counts || !r.chunk_offsets ||
        !r.tile_start || !r.scratch || !r.store || !r.tile_saved || !r.tile_done) {
        st = dk__error(DK_ENOMEM, __func__, "out of memory");
        goto out;
    }
    if (r.actors && !r.rs) {
        if ((st = dk__scene_actor_poses(s, cfg->time, &r.apose))) goto out;
        r.arot = dk_malloc((size_t)(r.apose.n ? r.apose.n : 1) * 9 * sizeof(double));
        if (!r.arot) {
            st = dk__error(DK_ENOMEM, __func__, "out of memory");
            goto out;
        }
        for (int k = 0; k < r.apose.n; k++) dk_quat_to_rotation(r.apose.poses[k].q, r.arot + 9 * k);
    }
    /* Depth candidates, bucketed on their high z bits. */
    dk_pool_for(pool, N_CHUNKS, 1, candidates, &r);
    r.zlo = UINT32_MAX;
    uint32_t zhi = 0;
    for (int ch = 0; ch < N_CHUNKS; ch++) {
        r.n_vis += r.cand_n[ch];
        if (r.cand_n[ch] && r.cand_zmin[ch] < r.zlo) r.zlo = r.cand_zmin[ch];
        if (r.cand_n[ch] && r.cand_zmax[ch] > zhi) zhi = r.cand_zmax[ch];
    }
    if (r.n_vis == 0) r.zlo = 0;
    while (r.bshift < 32 && (zhi >> r.bshift) - (r.zlo >> r.bshift) >= N_BUCKETS) r.bshift++;
    r.nb = (int)((zhi >> r.bshift) - (r.zlo >> r.bshift)) + 1;
    size_t nv = (size_t)(r.n_vis ? r.n_vis : 1);
    r.order = dk_malloc(nv * sizeof(uint64_t));
    r.order_tmp = dk_malloc(nv * sizeof(uint64_t));
    r.splats = big_alloc(nv * sizeof(splat), &splats_raw);
    if (!r.order || !r.order_tmp || !r.splats) {
        st = dk__error(DK_ENOMEM, __func__, "out of memory");
        goto out;
    }
    dk_pool_for(pool, N_CHUNKS, 1, bucket_count, &r);
    int64_t sum = 0;
    for (int b = 0; b < r.nb; b++) {
        r.bstart[b] = sum;
        for (int ch = 0; ch < N_CHUNKS; ch++) {
            int64_t c = r.bcnt[ch * N_BUCKETS + b];
            r.bcnt[ch * N_BUCKETS + b] = sum;
            sum += c;
        }
    }
    r.bstart[r.nb] = sum;
    dk_pool_for(pool, N_CHUNKS, 1, bucket_scatter, &r);

    /* Front-to-back slabs of the depth order, each about twice the pairs of
     * the last (by tile rectangles), until every tile has stopped. */
    int64_t budget = nt * SLAB_PAIRS_PER_TILE, live = nt;
    for (r.s0 = 0; r.s0 < r.n_vis && live > 0; r.s0 = r.s1) {
        int64_t acc = 0;
        r.s1 = r.s0;
        while (r.s1 < r.n_vis && acc < budget) {
            if (r.s1 == r.prepared) prepare_block(&r, pool);
            const splat *sp = &r.splats[r.s1++];
            if (sp->tx0 <= sp->tx1)
                acc += (int64_t)(sp->tx1 - sp->tx0 + 1) * (sp->ty1 - sp->ty0 + 1);
        }
        if (budget < INT64_MAX / 4) budget *= 2;
        int64_t len = r.s1 - r.s0;
        if ((size_t)len + 1 > r.slab_cap) {
            dk_free(r.hit_off);
            dk_free(r.n_hit);
            r.slab_cap = (size_t)len + 1;
            r.hit_off = dk_malloc(r.slab_cap * sizeof(int64_t));
            r.n_hit = dk_malloc(r.slab_cap * sizeof(uint32_t));
        }
        if ((uint64_t)acc > SIZE_MAX / sizeof(uint32_t)) {
            st = dk__error(DK_EOVERFLOW, __func__, "%lld Gaussian-tile pairs", (long long)acc);
            goto out;
        }
        if ((size_t)acc > r.hits_cap || !r.hits) {
            dk_free(r.hits);
            r.hits_cap = (size_t)acc;
            r.hits = dk_malloc((r.hits_cap ? r.hits_cap : 1) * sizeof(uint32_t));
        }
        if (!r.hit_off || !r.n_hit || !r.hits) {
            st = dk__error(DK_ENOMEM, __func__, "out of memory for %lld Gaussian-tile pairs",
                           (long long)acc);
            goto out;
        }
        int64_t ho = 0;
        for (int64_t j = r.s0; j < r.s1; j++) {
            const splat *sp = &r.splats[j];
            r.hit_off[j - r.s0] = ho;
            if (sp->tx0 <= sp->tx1)
                ho += (int64_t)(sp->tx1 - sp->tx0 + 1) * (sp->ty1 - sp->ty0 + 1);
        }
        r.n_chunks = len < N_CHUNKS ? len : N_CHUNKS;
        dk_pool_for(pool, r.n_chunks, 1, bin_count, &r);
        int64_t total = 0;
        for (int64_t t = 0; t < nt; t++) {
            r.tile_start[t] = total;
            for (int64_t ch = 0; ch < r.n_chunks; ch++) {
                r.chunk_offsets[ch * nt + t] = total;
                total += r.chunk_counts[ch * nt + t];
            }
        }
        r.tile_start[nt] = total;
        if ((uint64_t)total > SIZE_MAX / sizeof(uint32_t)) {
            st = dk__error(DK_EOVERFLOW, __func__, "%lld Gaussian-tile pairs", (long long)total);
            goto out;
        }
        if ((size_t)total > r.keys_cap) {
            dk_free(r.keys);
            r.keys_cap = (size_t)total;
            r.keys = dk_malloc(r.keys_cap * sizeof(uint32_t));
            if (!r.keys) {
                st = dk__error(DK_ENOMEM, __func__, "out of memory for %lld Gaussian-tile pairs",
                               (long long)total);
                goto out;
            }
        }
        dk_pool_for(pool, r.n_chunks, 1, bin_fill, &r);
        dk_pool_for(pool, nt, 1, blend_tiles, &r);
        live = 0;
        for (int64_t t = 0; t < nt; t++) live += !r.tile_done[t];
    }
    dk_pool_for(pool, nt, 16, finish_tiles, &r);
out:
    dk__actor_poses_free(&r.apose);
    dk_free(r.arot);
    dk_free(r.cand);
    dk_free(r.bcnt);
    dk_free(r.bstart);
    dk_free(r.order);
    dk_free(r.order_tmp);
    dk_free(splats_raw);
    dk_free(r.chunk_counts);
    dk_free(r.chunk_offsets);
    dk_free(r.tile_start);
    dk_free(r.keys);
    dk_free(r.hit_off);
    dk_free(r.n_hit);
    dk_free(r.hits);
    dk_free_aligned(r.scratch);
    dk_free_aligned(r.store);
    dk_free(r.tile_saved);
    dk_free(r.tile_done);
    return st;
}
