/*
 * Gaussian scenes from drivekit scenarios (sim.h, "Scenes from scenarios").
 *
 * The scene is made in two passes over the same deterministic generator: the
 * first only counts Gaussians (so nothing big is allocated before the size is
 * known and checked), the second writes them. Every random draw comes from a
 * Philox stream keyed by (seed, what, which), so both passes agree and the
 * result is a pure function of scenario, config and seed.
 *
 * Looks follow src/world/render.c: its albedos and palettes, its sun direction
 * and ambient / diffuse terms baked into the colours (the world renderer
 * shades at render time; a Gaussian scene carries radiance), and its lidar
 * reflectivities as lidar_intensity / 255.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "drivekit/sim.h"
#include "drivekit/world.h"
#include "internal.h"
#include "sim_impl.h"
#include "world/world_impl.h"

#define BLOCK 8.0               /* ground is generated in blocks of BLOCK x BLOCK m */
#define PATH_MAX_POINTS 4096    /* the ego path is decimated to at most this many points */
#define PAINT_Z 0.01            /* paint floats 1 cm above the ground */
#define HIDE_DEPTH 1e5          /* where actors go outside their time span (m below) */
#define HIDE_DT 1e-3            /* seconds between the last real and the hidden keyframe */
#define POLE_RADIUS 0.12
#define SH_C0 0.28209479177387814

static const double PI = 3.14159265358979323846;

/* ------------------------------------------------------------------------ */
/* Materials (src/world/render.c's albedos and lidar reflectivities)         */

typedef struct material {
    float rgb[3];   /* albedo, 0..255 */
    float refl;     /* lidar reflectivity, 0..255 */
} material;

static const material M_GRASS = {{78, 96, 52}, 30};
static const material M_ASPHALT = {{84, 84, 86}, 12};
static const material M_CONCRETE = {{152, 150, 144}, 26};
static const material M_KERB = {{176, 174, 168}, 30};
static const material M_WHITE = {{222, 222, 216}, 120};
static const material M_YELLOW = {{214, 170, 48}, 110};

/* The world renderer's light: sun direction, ambient and diffuse terms, and
 * the mean of its ground noise factor (0.86 + 0.28 (n - 0.5), n ~ 0.5). */
static const double SUN[3] = {0.42, 0.30, 0.86};
#define AMBIENT 0.50
#define DIFFUSE 0.62
#define GROUND_NOISE_MEAN 0.86

#define DROP_SOLID 0.01
#define DROP_GLASS 0.3

/* ------------------------------------------------------------------------ */
/* Emitter                                                                   */

typedef struct gauss {
    double p[3];        /* mean (world, or actor frame for tracked actors) */
    double r[9];        /* rotation of the Gaussian's axes (row-major) */
    double sigma[3];    /* standard deviations along its axes, metres */
    double opacity;     /* 0..1 */
    float rgb[3];       /* radiance, 0..255 */
    float refl;         /* 0..255 */
    double drop;        /* ray-drop probability */
    int32_t actor;      /* -1 static */
} gauss;

typedef struct ctx {
    const dk_scenario *sc;
    dk_scene_from_world_config cfg;
    dk_scene *s;        /* NULL while counting */
    int64_t n;          /* Gaussians emitted so far */
    double sun[3];      /* unit */
    /* the ego path, decimated, and its bounding box grown by the margin */
    int np;
    double *path;       /* np x 2 */
    double bx0, by0, bx1, by1;
    double *ebox;       /* n_map x 4: bounding box of every map element */
    /* per-block scratch */
    int *segs, *elems;
} ctx;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static float logitf(double p)
{
    return (float)log(p / (1.0 - p));
}

static float clamp255(double v)
{
    return (float)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static void emit(ctx *c, const gauss *g)
{
    dk_scene *s = c->s;
    int64_t i = c->n++;
    if (!s) return;
    DK__ASSERT(i < s->n);
    for (int k = 0; k < 3; k++) {
        s->means[3 * i + k] = (float)g->p[k];
        s->scales[3 * i + k] = (float)log(g->sigma[k] > 1e-4 ? g->sigma[k] : 1e-4);
    }
    double q[4];
    dk_rotation_to_quat(g->r, q);
    for (int k = 0; k < 4; k++) s->rotations[4 * i + k] = (float)q[k];
    s->opacities[i] = logitf(g->opacity);
    int K = s->sh_coeffs;
    for (int ch = 0; ch < 3; ch++)
        s->sh[((size_t)i * 3 + ch) * K] = (float)((g->rgb[ch] / 255.0 - 0.5) / SH_C0);
    s->lidar_intensity[i] = g->refl / 255.0f;
    s->lidar_raydrop[i] = logitf(g->drop);
    s->actor_id[i] = g->actor;
}

/* Colour jitter: brightness +-3 % and +-3 levels per channel. */
static void jitter_rgb(dk_rng *r, const float in[3], double lum, float out[3])
{
    double b = lum * (1.0 + 0.06 * (dk_rng_uniform_f64(r) - 0.5));
    for (int k = 0; k < 3; k++) out[k] = clamp255(in[k] * b + 6.0 * (dk_rng_uniform_f64(r) - 0.5));
}

static void rot_z(double yaw, double r[9])
{
    double cy = cos(yaw), sy = sin(yaw);
    const double m[9] = {cy, -sy, 0, sy, cy, 0, 0, 0, 1};
    memcpy(r, m, sizeof m);
}

static void mat_mul(const double a[9], const double b[9], double out[9])
{
    double t[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            t[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
    memcpy(out, t, sizeof t);
}

static void mat_vec(const double a[9], const double v[3], double out[3])
{
    double t[3];
    for (int i = 0; i < 3; i++) t[i] = a[3 * i] * v[0] + a[3 * i + 1] * v[1] + a[3 * i + 2] * v[2];
    memcpy(out, t, sizeof t);
}

/* ------------------------------------------------------------------------ */
/* Geometry helpers                                                          */

static double seg_dist2(double px, double py, const double *a, const double *b)
{
    double dx = b[0] - a[0], dy = b[1] - a[1], l2 = dx * dx + dy * dy;
    double u = l2 > 0 ? ((px - a[0]) * dx + (py - a[1]) * dy) / l2 : 0;
    u = u < 0 ? 0 : u > 1 ? 1 : u;
    double qx = a[0] + u * dx - px, qy = a[1] + u * dy - py;
    return qx * qx + qy * qy;
}

/* Squared distance from (x, y) to the ego path (all segments or a list). */
static double path_dist2(const ctx *c, double x, double y, const int *segs, int ns)
{
    double best = INFINITY;
    if (c->np == 1) {
        double dx = x - c->path[0], dy = y - c->path[1];
        return dx * dx + dy * dy;
    }
    int n = segs ? ns : c->np - 1;
    for (int k = 0; k < n; k++) {
        int i = segs ? segs[k] : k;
        double d = seg_dist2(x, y, &c->path[2 * i], &c->path[2 * i + 2]);
        if (d < best) best = d;
    }
    return best;
}

static int in_polygon(const double *pts, int n, double x, double y)
{
    int in = 0;
    for (int i = 0, j = n - 1; i < n; j = i++) {
        double yi = pts[3 * i + 1], yj = pts[3 * j + 1];
        if ((yi > y) != (yj > y)) {
            double xc = pts[3 * j] + (y - yj) / (yi - yj) * (pts[3 * i] - pts[3 * j]);
            if (x < xc) in = !in;
        }
    }
    return in;
}

static void elem_bbox(const dk_map_element *e, double b[4])
{
    b[0] = b[1] = INFINITY;
    b[2] = b[3] = -INFINITY;
    for (int k = 0; k < e->n_points; k++) {
        b[0] = fmin(b[0], e->points[3 * k]);
        b[1] = fmin(b[1], e->points[3 * k + 1]);
        b[2] = fmax(b[2], e->points[3 * k]);
        b[3] = fmax(b[3], e->points[3 * k + 1]);
    }
}

/* The ego's states, decimated to points at least `step` apart (at most
 * PATH_MAX_POINTS), and the covered bounding box. */
static int build_path(ctx *c)
{
    const dk_actor *e = &c->sc->ego;
    double len = 0;
    for (int i = 1; i < e->n_states; i++)
        len += hypot(e->states[i].x - e->states[i - 1].x, e->states[i].y - e->states[i - 1].y);
    double step = fmax(1.0, len / (PATH_MAX_POINTS - 2));
    c->path = dk_malloc(sizeof(double) * 2 * PATH_MAX_POINTS);
    c->segs = dk_malloc(sizeof(int) * PATH_MAX_POINTS);
    if (!c->path || !c->segs) return dk__error(DK_ENOMEM, "dk_scene_from_scenario", "out of memory");
    int n = 0;
    for (int i = 0; i < e->n_states; i++) {
        double x = e->states[i].x, y = e->states[i].y;
        int last = i == e->n_states - 1;
        if (n > 0 && !last && hypot(x - c->path[2 * n - 2], y - c->path[2 * n - 1]) < step) continue;
        if (n == PATH_MAX_POINTS) n--;   /* rounding: keep the end point */
        c->path[2 * n] = x;
        c->path[2 * n + 1] = y;
        n++;
    }
    c->np = n;
    c->bx0 = c->by0 = INFINITY;
    c->bx1 = c->by1 = -INFINITY;
    for (int i = 0; i < n; i++) {
        c->bx0 = fmin(c->bx0, c->path[2 * i]);
        c->by0 = fmin(c->by0, c->path[2 * i + 1]);
        c->bx1 = fmax(c->bx1, c->path[2 * i]);
        c->by1 = fmax(c->by1, c->path[2 * i + 1]);
    }
    double m = c->cfg.margin;
    c->bx0 -= m;
    c->by0 -= m;
    c->bx1 += m;
    c->by1 += m;
    return DK_OK;
}

/* Segments of the path that may lie within the margin of an axis-aligned box. */
static int near_segments(const ctx *c, double x0, double y0, double x1, double y1, int *out)
{
    double cx = 0.5 * (x0 + x1), cy = 0.5 * (y0 + y1);
    double reach = c->cfg.margin + 0.5 * hypot(x1 - x0, y1 - y0);
    double r2 = reach * reach;
    int n = 0;
    if (c->np == 1) {
        double dx = cx - c->path[0], dy = cy - c->path[1];
        return dx * dx + dy * dy <= r2 ? 1 : 0;
    }
    for (int i = 0; i + 1 < c->np; i++)
        if (seg_dist2(cx, cy, &c->path[2 * i], &c->path[2 * i + 2]) <= r2) out[n++] = i;
    return n;
}

/* ------------------------------------------------------------------------ */
/* Ground                                                                    */

static int surface_layer(dk_map_layer l)
{
    return l == DK_MAP_DRIVABLE_AREA || l == DK_MAP_SIDEWALK;
}

static int ground(ctx *c)
{
    const dk_scenario *sc = c->sc;
    unsigned inc = c->cfg.include;
    if (!(inc & (DK_FROM_WORLD_GROUND | DK_FROM_WORLD_SURFACES))) return DK_OK;
    const double h = 1.0 / sqrt(c->cfg.density), m2 = c->cfg.margin * c->cfg.margin;
    const double lum = (AMBIENT + DIFFUSE * c->sun[2]) * GROUND_NOISE_MEAN;
    int per = (int)ceil(BLOCK / h);
    double bw = per * h;    /* block width: a whole number of grid cells */
    int64_t bi0 = (int64_t)floor(c->bx0 / bw), bi1 = (int64_t)floor(c->bx1 / bw);
    int64_t bj0 = (int64_t)floor(c->by0 / bw), bj1 = (int64_t)floor(c->by1 / bw);
    for (int64_t bj = bj0; bj <= bj1; bj++) {
        for (int64_t bi = bi0; bi <= bi1; bi++) {
            double x0 = bi * bw, y0 = bj * bw, x1 = x0 + bw, y1 = y0 + bw;
            int ns = near_segments(c, x0 - h, y0 - h, x1 + h, y1 + h, c->segs);
            if (ns == 0) continue;
            int ne = 0;
            if (inc & DK_FROM_WORLD_SURFACES) {
                for (int i = 0; i < sc->n_map; i++) {
                    const dk_map_element *e = &sc->map[i];
                    if (!surface_layer(e->layer) || e->n_points < 3) continue;
                    const double *b = &c->ebox[4 * i];
                    if (b[2] < x0 - h || b[0] > x1 + h || b[3] < y0 - h || b[1] > y1 + h) continue;
                    c->elems[ne++] = i;
                }
            }
            for (int j = 0; j < per; j++) {
                for (int i = 0; i < per; i++) {
                    int64_t gi = bi * per + i, gj = bj * per + j;
                    dk_rng r;
                    dk_rng_init(&r, c->cfg.seed,
                                dk_rng_stream_id(1, (uint64_t)gi, (uint64_t)gj, 0));
                    double x = (gi + 0.5 + 0.5 * (dk_rng_uniform_f64(&r) - 0.5)) * h;
                    double y = (gj + 0.5 + 0.5 * (dk_rng_uniform_f64(&r) - 0.5)) * h;
                    if (path_dist2(c, x, y, c->segs, ns) > m2) continue;
                    const material *mat = (inc & DK_FROM_WORLD_GROUND) ? &M_GRASS : NULL;
                    /* painter's order of the world renderer: drivable area, then sidewalks */
                    for (int pass = 0; pass < 2; pass++)
                        for (int k = 0; k < ne; k++) {
                            const dk_map_element *e = &sc->map[c->elems[k]];
                            if ((e->layer == DK_MAP_SIDEWALK) != pass) continue;
                            if (in_polygon(e->points, e->n_points, x, y))
                                mat = pass ? &M_CONCRETE : &M_ASPHALT;
                        }
                    if (!mat) continue;
                    if (!c->s) {
                        c->n++;
                        continue;
                    }
                    gauss g;
                    memset(&g, 0, sizeof g);
                    g.p[0] = x;
                    g.p[1] = y;
                    rot_z(2 * PI * dk_rng_uniform_f64(&r), g.r);
                    g.sigma[0] = 0.6 * h * (0.9 + 0.2 * dk_rng_uniform_f64(&r));
                    g.sigma[1] = 0.6 * h * (0.9 + 0.2 * dk_rng_uniform_f64(&r));
                    g.sigma[2] = 0.005;
                    g.opacity = 0.95;
                    jitter_rgb(&r, mat->rgb, lum, g.rgb);
                    g.refl = mat->refl;
                    g.drop = DROP_SOLID;
                    g.actor = -1;
                    emit(c, &g);
                }
            }
        }
    }
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Paint                                                                     */

/* A flat Gaussian of paint centred at (x, y), long axis along `yaw`. */
static void paint_gauss(ctx *c, dk_rng *r, const material *mat, double x, double y, double yaw,
                        double sa, double sb)
{
    if (!c->s) {
        c->n++;
        return;
    }
    gauss g;
    memset(&g, 0, sizeof g);
    g.p[0] = x;
    g.p[1] = y;
    g.p[2] = PAINT_Z;
    rot_z(yaw, g.r);
    g.sigma[0] = sa;
    g.sigma[1] = sb;
    g.sigma[2] = 0.003;
    g.opacity = 0.97;
    jitter_rgb(r, mat->rgb, (AMBIENT + DIFFUSE * c->sun[2]) * GROUND_NOISE_MEAN, g.rgb);
    g.refl = mat->refl;
    g.drop = DROP_SOLID;
    g.actor = -1;
    emit(c, &g);
}

/* Liang-Barsky: the part [*u0, *u1] of segment a->b inside the covered box. */
static int clip_segment(const ctx *c, const double *a, const double *b, double *u0, double *u1)
{
    double p[4] = {-(b[0] - a[0]), b[0] - a[0], -(b[1] - a[1]), b[1] - a[1]};
    double q[4] = {a[0] - c->bx0, c->bx1 - a[0], a[1] - c->by0, c->by1 - a[1]};
    *u0 = 0;
    *u1 = 1;
    for (int k = 0; k < 4; k++) {
        if (p[k] == 0) {
            if (q[k] < 0) return 0;
            continue;
        }
        double t = q[k] / p[k];
        if (p[k] < 0) {
            if (t > *u1) return 0;
            if (t > *u0) *u0 = t;
        } else {
            if (t < *u0) return 0;
            if (t < *u1) *u1 = t;
        }
    }
    return *u0 <= *u1;
}

/* A painted polyline of `width`; dashed: `dash` metres every `period`;
 * gap > 0: two lines at +-gap. */
static void paint_polyline(ctx *c, const dk_map_element *e, const material *mat, double width,
                           double dash, double period, double gap)
{
    const double m2 = c->cfg.margin * c->cfg.margin;
    double s_acc = 0;
    for (int i = 0; i + 1 < e->n_points; i++) {
        const double *a = &e->points[3 * i], *b = &e->points[3 * i + 3];
        double dx = b[0] - a[0], dy = b[1] - a[1], len = hypot(dx, dy);
        double u0, u1;
        if (!(len > 1e-9) || !clip_segment(c, a, b, &u0, &u1)) {
            s_acc += isfinite(len) ? len : 0;
            continue;
        }
        double yaw = atan2(dy, dx), nx = -dy / len, ny = dx / len;
        int nsteps = (int)ceil((u1 - u0) * len / 0.4);
        if (nsteps < 1) nsteps = 1;
        double ds = (u1 - u0) * len / nsteps;
        for (int k = 0; k < nsteps; k++) {
            double s = u0 * len + (k + 0.5) * ds;
            if (dash > 0) {
                double ph = fmod(s_acc + s, period);
                if (ph < 0) ph += period;
                if (ph >= dash) continue;
            }
            double x = a[0] + dx * s / len, y = a[1] + dy * s / len;
            if (path_dist2(c, x, y, NULL, 0) > m2) continue;
            dk_rng r;
            dk_rng_init(&r, c->cfg.seed, dk_rng_stream_id(2, (uint64_t)(uint32_t)e->id,
                                                          (uint64_t)i, (uint64_t)k));
            for (int side = gap > 0 ? -1 : 0; side <= (gap > 0 ? 1 : 0); side += 2) {
                double ox = side * gap * nx, oy = side * gap * ny;
                paint_gauss(c, &r, mat, x + ox, y + oy, yaw, 0.6 * ds, 0.3 * width);
                if (gap <= 0) break;
            }
        }
        s_acc += len;
    }
}

/* Fills a polygon with small discs; zebra: only on 0.5 m stripes of a 1 m
 * period along `dir` from the first vertex. */
static void paint_polygon(ctx *c, const dk_map_element *e, int zebra)
{
    if (e->n_points < 3) return;
    double b[4];
    memcpy(b, &c->ebox[4 * (e - c->sc->map)], sizeof b);
    b[0] = fmax(b[0], c->bx0);
    b[1] = fmax(b[1], c->by0);
    b[2] = fmin(b[2], c->bx1);
    b[3] = fmin(b[3], c->by1);
    if (!(b[0] <= b[2] && b[1] <= b[3])) return;
    double dir[2] = {1, 0}, best = -1;
    for (int i = 0; i < e->n_points; i++) {
        const double *p = &e->points[3 * i], *q = &e->points[3 * ((i + 1) % e->n_points)];
        double dx = q[0] - p[0], dy = q[1] - p[1], l2 = dx * dx + dy * dy;
        if (l2 > best && l2 > 0) {
            best = l2;
            dir[0] = dx / sqrt(l2);
            dir[1] = dy / sqrt(l2);
        }
    }
    const double h = 1.0 / sqrt(c->cfg.object_density), m2 = c->cfg.margin * c->cfg.margin;
    int64_t i0 = (int64_t)floor(b[0] / h), i1 = (int64_t)floor(b[2] / h);
    int64_t j0 = (int64_t)floor(b[1] / h), j1 = (int64_t)floor(b[3] / h);
    for (int64_t j = j0; j <= j1; j++)
        for (int64_t i = i0; i <= i1; i++) {
            double x = (i + 0.5) * h, y = (j + 0.5) * h;
            if (!in_polygon(e->points, e->n_points, x, y)) continue;
            if (zebra) {
                double q = (x - e->points[0]) * dir[0] + (y - e->points[1]) * dir[1] - 0.25;
                double ph = fmod(q, 1.0);
                if (ph < 0) ph += 1.0;
                if (ph >= 0.5) continue;
            }
            if (path_dist2(c, x, y, NULL, 0) > m2) continue;
            dk_rng r;
            dk_rng_init(&r, c->cfg.seed,
                        dk_rng_stream_id(3, (uint64_t)(uint32_t)e->id, (uint64_t)i, (uint64_t)j));
            paint_gauss(c, &r, &M_WHITE, x, y, 2 * PI * dk_rng_uniform_f64(&r), 0.55 * h, 0.55 * h);
        }
}

static void paint(ctx *c)
{
    if (!(c->cfg.include & DK_FROM_WORLD_PAINT)) return;
    const dk_scenario *sc = c->sc;
    /* the world renderer's painter's order */
    static const dk_map_layer order[] = {DK_MAP_ROAD_BOUNDARY, DK_MAP_CROSSWALK,
                                         DK_MAP_ROAD_MARKING, DK_MAP_WAIT_LINE, DK_MAP_LANELINE};
    for (size_t o = 0; o < sizeof order / sizeof order[0]; o++)
        for (int i = 0; i < sc->n_map; i++) {
            const dk_map_element *e = &sc->map[i];
            if (e->layer != order[o] || e->n_points < 2) continue;
            switch (e->layer) {
            case DK_MAP_ROAD_BOUNDARY: paint_polyline(c, e, &M_KERB, 0.18, 0, 0, 0); break;
            case DK_MAP_CROSSWALK: paint_polygon(c, e, 1); break;
            case DK_MAP_ROAD_MARKING: paint_polygon(c, e, 0); break;
            case DK_MAP_WAIT_LINE: paint_polyline(c, e, &M_WHITE, 0.40, 0, 0, 0); break;
            default:
                switch (e->style) {
                case DK_LINE_DASHED_WHITE: paint_polyline(c, e, &M_WHITE, 0.15, 3, 9, 0); break;
                case DK_LINE_SOLID_YELLOW: paint_polyline(c, e, &M_YELLOW, 0.15, 0, 0, 0); break;
                case DK_LINE_DOUBLE_YELLOW: paint_polyline(c, e, &M_YELLOW, 0.11, 0, 0, 0.11); break;
                default: paint_polyline(c, e, &M_WHITE, 0.15, 0, 0, 0); break;
                }
            }
        }
}

/* ------------------------------------------------------------------------ */
/* Boxes                                                                     */

enum { BOX_ACTOR = DK__PAINT_BODY, BOX_POLE = DK__PAINT_POLE, BOX_SIGN = DK__PAINT_SIGN,
       BOX_LIGHT = DK__PAINT_LIGHT };

typedef struct box {
    int kind, cls;
    double half[3];
    double rbw[9], c[3];     /* box -> scene frame (identity for tracked actors) */
    double rlight[9];        /* box -> world rotation used for the lighting */
    float col[3], col2[3];
    float refl;
    int32_t actor;
    uint64_t key;            /* random stream of this box */
} box;

/* Cells along a face side of length len (at least one, at most 1e6). */
static int64_t cells(double len, double per_m)
{
    double n = ceil(len * per_m - 1e-9);
    return n < 1 ? 1 : n > 1e6 ? 1000000 : (int64_t)n;
}

/* Flat Gaussians tiling the six faces of b at object_density. */
static void emit_box(ctx *c, const box *b)
{
    const double per_m = sqrt(c->cfg.object_density);
    const float hf[3] = {(float)b->half[0], (float)b->half[1], (float)b->half[2]};
    for (int axis = 0; axis < 3; axis++) {
        int ua = (axis + 1) % 3, va = (axis + 2) % 3;
        int64_t nu = cells(2 * b->half[ua], per_m), nv = cells(2 * b->half[va], per_m);
        if (!c->s) {
            c->n += 2 * nu * nv;
            continue;
        }
        double du = 2 * b->half[ua] / nu, dv = 2 * b->half[va] / nv;
        /* Gaussian axes (x, y, z) = box axes (ua, va, axis): a cyclic
           permutation, so a proper rotation. */
        double rf[9] = {0};
        rf[3 * ua + 0] = 1;
        rf[3 * va + 1] = 1;
        rf[3 * axis + 2] = 1;
        double rg[9];
        mat_mul(b->rbw, rf, rg);
        for (int sg = -1; sg <= 1; sg += 2) {
            double nb[3] = {0, 0, 0}, nw[3];
            nb[axis] = sg;
            mat_vec(b->rlight, nb, nw);
            double ndl = nw[0] * c->sun[0] + nw[1] * c->sun[1] + nw[2] * c->sun[2];
            double lum = AMBIENT + DIFFUSE * (ndl > 0 ? ndl : 0) + 0.08 * nw[2];
            for (int64_t j = 0; j < nv; j++)
                for (int64_t i = 0; i < nu; i++) {
                    dk_rng r;
                    dk_rng_init(&r, c->cfg.seed,
                                dk_rng_stream_id(4, b->key, (uint64_t)(axis * 2 + (sg > 0)),
                                                 (uint64_t)(j * nu + i)));
                    double p[3];
                    p[axis] = sg * b->half[axis];
                    p[ua] = -b->half[ua] + (i + 0.5 + 0.3 * (dk_rng_uniform_f64(&r) - 0.5)) * du;
                    p[va] = -b->half[va] + (j + 0.5 + 0.3 * (dk_rng_uniform_f64(&r) - 0.5)) * dv;
                    float alb[3];
                    const float pf[3] = {(float)p[0], (float)p[1], (float)p[2]};
                    int glass = dk__world_box_paint(b->kind, b->cls, hf, b->col, b->col2, axis, sg,
                                                    pf, alb);
                    gauss g;
                    mat_vec(b->rbw, p, g.p);
                    for (int k = 0; k < 3; k++) g.p[k] += b->c[k];
                    memcpy(g.r, rg, sizeof rg);
                    g.sigma[0] = 0.6 * du;
                    g.sigma[1] = 0.6 * dv;
                    g.sigma[2] = fmin(0.005, 0.1 * fmin(du, dv));
                    g.opacity = 0.97;
                    jitter_rgb(&r, alb, lum, g.rgb);
                    g.refl = glass ? 0.4f * b->refl : b->refl;
                    g.drop = glass ? DROP_GLASS : DROP_SOLID;
                    g.actor = b->actor;
                    emit(c, &g);
                }
        }
    }
}

static void objects(ctx *c)
{
    if (!(c->cfg.include & DK_FROM_WORLD_OBJECTS)) return;
    const dk_scenario *sc = c->sc;
    const double m = c->cfg.margin;
    for (int i = 0; i < sc->n_map; i++) {
        const dk_map_element *e = &sc->map[i];
        if (e->geometry == DK_GEOM_CUBOID) {
            double rad = 0.5 * sqrt(e->size[0] * e->size[0] + e->size[1] * e->size[1] +
                                    e->size[2] * e->size[2]);
            double d = sqrt(path_dist2(c, e->center[0], e->center[1], NULL, 0));
            if (!(d <= m + rad)) continue;
            box b;
            memset(&b, 0, sizeof b);
            b.kind = e->layer == DK_MAP_TRAFFIC_LIGHT ? BOX_LIGHT : BOX_SIGN;
            b.cls = -1;
            for (int k = 0; k < 3; k++) b.half[k] = 0.5 * fabs(e->size[k]);
            dk_pose p = dk_pose_from_euler(e->center, e->yaw, e->pitch, e->roll);
            dk_quat_to_rotation(p.q, b.rbw);
            memcpy(b.rlight, b.rbw, sizeof b.rbw);
            memcpy(b.c, e->center, sizeof b.c);
            if (b.kind == BOX_LIGHT) {
                const float d3[3] = {34, 36, 38};
                memcpy(b.col, d3, sizeof d3);
                memcpy(b.col2, d3, sizeof d3);
                b.refl = 90;
            } else {
                static const uint8_t faces[][3] = {{200, 36, 36}, {36, 82, 170}, {232, 232, 226},
                                                   {230, 190, 40}};
                const uint8_t *f = faces[mix64((uint64_t)(uint32_t)e->id ^ 0x5167ULL) % 4];
                const float g3[3] = {150, 152, 156};
                for (int k = 0; k < 3; k++) b.col[k] = f[k];
                memcpy(b.col2, g3, sizeof g3);
                b.refl = 220;
            }
            b.actor = -1;
            b.key = dk_rng_stream_id(5, (uint64_t)(uint32_t)e->id, 0, 0);
            emit_box(c, &b);
        } else if (e->layer == DK_MAP_POLE) {
            for (int j = 0; j + 1 < e->n_points; j++) {
                const double *p0 = &e->points[3 * j], *p1 = &e->points[3 * j + 3];
                double d[3] = {p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]};
                double len = sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
                if (!(len > 1e-6) || !isfinite(len)) continue;
                double mx = 0.5 * (p0[0] + p1[0]), my = 0.5 * (p0[1] + p1[1]);
                if (!(sqrt(path_dist2(c, mx, my, NULL, 0)) <= m + 0.5 * len)) continue;
                box b;
                memset(&b, 0, sizeof b);
                b.kind = BOX_POLE;
                b.cls = -1;
                b.half[0] = b.half[1] = POLE_RADIUS;
                b.half[2] = 0.5 * len;
                /* box z along the pole */
                double z[3] = {d[0] / len, d[1] / len, d[2] / len};
                double x[3] = {1, 0, 0};
                if (fabs(z[0]) > 0.9) x[0] = 0, x[1] = 1;
                double dd = x[0] * z[0] + x[1] * z[1] + x[2] * z[2];
                for (int k = 0; k < 3; k++) x[k] -= dd * z[k];
                double xn = sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2]);
                for (int k = 0; k < 3; k++) x[k] /= xn;
                double y[3] = {z[1] * x[2] - z[2] * x[1], z[2] * x[0] - z[0] * x[2],
                               z[0] * x[1] - z[1] * x[0]};
                for (int k = 0; k < 3; k++) {
                    b.rbw[3 * k + 0] = x[k];
                    b.rbw[3 * k + 1] = y[k];
                    b.rbw[3 * k + 2] = z[k];
                    b.c[k] = 0.5 * (p0[k] + p1[k]);
                }
                memcpy(b.rlight, b.rbw, sizeof b.rbw);
                const float g3[3] = {128, 130, 134};
                memcpy(b.col, g3, sizeof g3);
                memcpy(b.col2, g3, sizeof g3);
                b.refl = 160;
                b.actor = -1;
                b.key = dk_rng_stream_id(6, (uint64_t)(uint32_t)e->id, (uint64_t)j, 0);
                emit_box(c, &b);
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Actors                                                                    */

static int actor_parked_still(const dk_actor *a, double duration)
{
    if (!a->parked) return 0;
    const dk_actor_state *s0 = &a->states[0];
    if (s0->t > 0 || a->states[a->n_states - 1].t < duration) return 0;
    for (int i = 1; i < a->n_states; i++) {
        const dk_actor_state *s = &a->states[i];
        if (s->x != s0->x || s->y != s0->y || s->z != s0->z || s->yaw != s0->yaw) return 0;
    }
    return 1;
}

static int actor_near(const ctx *c, const dk_actor *a)
{
    double rad = 0.5 * sqrt(a->size[0] * a->size[0] + a->size[1] * a->size[1] +
                            a->size[2] * a->size[2]);
    double lim = c->cfg.margin + rad;
    int stride = a->n_states > 256 ? a->n_states / 256 : 1;
    for (int i = 0; i < a->n_states; i += stride) {
        const dk_actor_state *s = &a->states[i];
        if (s->x < c->bx0 - rad || s->x > c->bx1 + rad || s->y < c->by0 - rad || s->y > c->by1 + rad)
            continue;
        if (path_dist2(c, s->x, s->y, NULL, 0) <= lim * lim) return 1;
    }
    const dk_actor_state *s = &a->states[a->n_states - 1];
    return path_dist2(c, s->x, s->y, NULL, 0) <= lim * lim;
}

/* The track of a moving actor: its states as keyframes, plus hidden ones
 * outside its time span. */
static int actor_track(dk_scene *s, const dk_actor *a, double duration)
{
    int n = a->n_states;
    double t0 = a->states[0].t, t1 = a->states[n - 1].t;
    int before = t0 > 0 && t0 - HIDE_DT < t0;
    int after = t1 < duration && t1 + HIDE_DT > t1;
    int nk = n + before + after;
    double *times = dk_malloc((size_t)nk * sizeof *times);
    dk_pose *poses = dk_malloc((size_t)nk * sizeof *poses);
    if (!times || !poses) {
        dk_free(times);
        dk_free(poses);
        return dk__error(DK_ENOMEM, "dk_scene_from_scenario", "out of memory");
    }
    int k = 0;
    if (before) {
        const dk_actor_state *st = &a->states[0];
        times[k] = t0 - HIDE_DT;
        poses[k++] = dk_pose_from_yaw(st->x, st->y, st->z - HIDE_DEPTH, st->yaw);
    }
    for (int i = 0; i < n; i++) {
        const dk_actor_state *st = &a->states[i];
        times[k] = st->t;
        poses[k++] = dk_pose_from_yaw(st->x, st->y, st->z, st->yaw);
    }
    if (after) {
        const dk_actor_state *st = &a->states[n - 1];
        times[k] = t1 + HIDE_DT;
        poses[k++] = dk_pose_from_yaw(st->x, st->y, st->z - HIDE_DEPTH, st->yaw);
    }
    int rc = dk_scene_set_actor_track(s, a->id, nk, times, poses);
    dk_free(times);
    dk_free(poses);
    return rc;
}

static int actors(ctx *c)
{
    const dk_scenario *sc = c->sc;
    for (int i = 0; i < sc->n_actors; i++) {
        const dk_actor *a = &sc->actors[i];
        int still = actor_parked_still(a, sc->duration);
        unsigned want = a->parked ? DK_FROM_WORLD_PARKED : DK_FROM_WORLD_MOVING;
        if (!(c->cfg.include & want) || !actor_near(c, a)) continue;
        box b;
        memset(&b, 0, sizeof b);
        b.kind = BOX_ACTOR;
        b.cls = (int)a->cls;
        for (int k = 0; k < 3; k++) b.half[k] = 0.5 * a->size[k];
        const dk_actor_state *s0 = &a->states[0];
        rot_z(s0->yaw, b.rlight);
        if (still) {
            memcpy(b.rbw, b.rlight, sizeof b.rbw);
            b.c[0] = s0->x;
            b.c[1] = s0->y;
            b.c[2] = s0->z;
        } else {
            rot_z(0, b.rbw);
        }
        /* The world renderer's paint (its default seed 0), so both agree. */
        dk_world_actor_style(a->cls, a->id, 0, b.col, b.col2, &b.refl);
        b.actor = a->id;
        b.key = dk_rng_stream_id(7, (uint64_t)(uint32_t)a->id, 0, 0);
        emit_box(c, &b);
        if (c->s && !still) {
            int st = actor_track(c->s, a, sc->duration);
            if (st) return st;
        }
    }
    if (c->s && (c->cfg.include & DK_FROM_WORLD_EGO_TRACK)) {
        const dk_actor *e = &sc->ego;
        double *times = dk_malloc((size_t)e->n_states * sizeof *times);
        dk_pose *poses = dk_malloc((size_t)e->n_states * sizeof *poses);
        int st = DK_OK;
        if (!times || !poses) {
            st = dk__error(DK_ENOMEM, "dk_scene_from_scenario", "out of memory");
        } else {
            for (int k = 0; k < e->n_states; k++) {
                times[k] = e->states[k].t;
                poses[k] = dk_pose_from_yaw(e->states[k].x, e->states[k].y, e->states[k].z,
                                            e->states[k].yaw);
            }
            st = dk_scene_set_actor_track(c->s, 0, e->n_states, times, poses);
        }
        dk_free(times);
        dk_free(poses);
        if (st) return st;
    }
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Entry point                                                               */

void dk_scene_from_world_config_init(dk_scene_from_world_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->density = 4;
    cfg->object_density = 16;
    cfg->margin = 40;
    cfg->seed = 0;
    cfg->sh_degree = 0;
    cfg->include = DK_FROM_WORLD_ALL;
    cfg->max_gaussians = 20000000;
}

static int generate(ctx *c)
{
    int st = ground(c);
    if (st) return st;
    paint(c);
    objects(c);
    return actors(c);
}

int dk_scene_from_scenario(const dk_scenario *sc, const dk_scene_from_world_config *cfg,
                           dk_scene **out)
{
    if (out) *out = NULL;
    if (!sc || !out) return dk__error(DK_EINVAL, __func__, "NULL %s", sc ? "out" : "scenario");
    dk_scene_from_world_config def;
    if (!cfg) {
        dk_scene_from_world_config_init(&def);
        cfg = &def;
    }
    if (!(cfg->density > 0 && cfg->density <= 400))
        return dk__error(DK_EINVAL, __func__, "density = %g: must be in (0, 400]", cfg->density);
    if (!(cfg->object_density > 0 && cfg->object_density <= 400))
        return dk__error(DK_EINVAL, __func__, "object_density = %g: must be in (0, 400]",
                         cfg->object_density);
    if (!(cfg->margin >= 1 && cfg->margin <= 2000))
        return dk__error(DK_EINVAL, __func__, "margin = %g: must be in [1, 2000]", cfg->margin);
    if (cfg->sh_degree != 0 && cfg->sh_degree != 1)
        return dk__error(DK_EINVAL, __func__, "sh_degree = %d: must be 0 or 1", cfg->sh_degree);
    if (cfg->include & ~DK_FROM_WORLD_ALL)
        return dk__error(DK_EINVAL, __func__, "include = 0x%x: unknown bits", cfg->include);
    if (cfg->max_gaussians < 1 || cfg->max_gaussians > DK_SCENE_MAX_GAUSSIANS)
        return dk__error(DK_EINVAL, __func__, "max_gaussians = %lld: must be in [1, %lld]",
                         (long long)cfg->max_gaussians, (long long)DK_SCENE_MAX_GAUSSIANS);
    int st = dk_scenario_validate(sc);
    if (st) {
        const char *m = strstr(dk_errmsg(), "(): ");
        char msg[DK_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", m ? m + 4 : dk_errmsg());
        return dk__error(st == DK_ENOMEM ? DK_ENOMEM : DK_EINVALIDDATA, __func__,
                         "invalid scenario: %s", msg);
    }
    ctx c;
    memset(&c, 0, sizeof c);
    c.sc = sc;
    c.cfg = *cfg;
    double sn = sqrt(SUN[0] * SUN[0] + SUN[1] * SUN[1] + SUN[2] * SUN[2]);
    for (int k = 0; k < 3; k++) c.sun[k] = SUN[k] / sn;
    st = build_path(&c);
    if (st) goto done;
    /* The covered box bounds every loop: refuse boxes whose grid alone would
       be far beyond the Gaussian budget. */
    double area = (c.bx1 - c.bx0) * (c.by1 - c.by0);
    double dens = fmax(cfg->density, cfg->object_density);
    if (!(area * dens <= 8.0 * (double)cfg->max_gaussians + 1e6)) {
        st = dk__error(DK_ERANGE, __func__,
                       "the area around the ego path (%.0f x %.0f m) is too large for "
                       "max_gaussians = %lld at these densities: lower margin or density",
                       c.bx1 - c.bx0, c.by1 - c.by0, (long long)cfg->max_gaussians);
        goto done;
    }
    c.elems = dk_malloc(sizeof(int) * (size_t)(sc->n_map > 0 ? sc->n_map : 1));
    c.ebox = dk_malloc(sizeof(double) * 4 * (size_t)(sc->n_map > 0 ? sc->n_map : 1));
    if (!c.elems || !c.ebox) {
        st = dk__error(DK_ENOMEM, __func__, "out of memory");
        goto done;
    }
    for (int i = 0; i < sc->n_map; i++) elem_bbox(&sc->map[i], &c.ebox[4 * i]);
    /* pass 1: count */
    st = generate(&c);
    if (st) goto done;
    int64_t n = c.n;
    if (n > cfg->max_gaussians) {
        st = dk__error(DK_ERANGE, __func__,
                       "the scene would have %lld Gaussians, more than max_gaussians = %lld",
                       (long long)n, (long long)cfg->max_gaussians);
        goto done;
    }
    /* pass 2: write */
    st = dk_scene_create(n, cfg->sh_degree, DK_SCENE_LIDAR | DK_SCENE_ACTOR_ID, &c.s);
    if (st) goto done;
    c.n = 0;
    st = generate(&c);
    if (!st && c.n != n) st = dk__error(DK_EINTERNAL, __func__, "count %lld != %lld",
                                        (long long)c.n, (long long)n);
    if (st) {
        dk_scene_destroy(c.s);
        c.s = NULL;
        goto done;
    }
    *out = c.s;
done:
    dk_free(c.path);
    dk_free(c.segs);
    dk_free(c.elems);
    dk_free(c.ebox);
    return st;
}
