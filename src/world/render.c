/*
 * Sensor rendering: shaded camera images and a spinning lidar, ray cast
 * against a flat ground (z = 0) carrying a painted map texture, the actors'
 * boxes, and the map's poles and cuboids.
 *
 * Camera: the image is split into bands of CAM_TILE rows. Every pixel belongs
 * to a time slot (its readout time: a row, a column or the whole image). A slot
 * holds the camera-to-world pose and, for every box that may be visible, the
 * transform taking camera-frame rays into the box frame at that time, so the
 * inner loops are a 3x3 product and a slab test. Boxes are culled per band
 * with bounding spheres against per-tile ray cones, which are built once at
 * create time from the camera model, so every camera model is handled the
 * same way and the culling is conservative (it never changes a pixel).
 *
 * Lidar: columns in chunks; per chunk the boxes whose bounding sphere falls
 * in the chunk's azimuth wedge; per column the exact poses at its firing time.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "world_impl.h"

#define CAM_TILE 16           /* culling tile and band size, pixels */
#define TEX_TILE_SHIFT 6      /* paint texture tiles of 64 x 64 texels */
#define TEX_TILE (1 << TEX_TILE_SHIFT)
#define TEX_MAX_TEXELS ((int64_t)1 << 26)   /* bounds the texture's extent */
#define MAX_VIEW_DIST 800.0   /* boxes beyond this are not drawn */
#define FOG_DIST 380.0       /* haze e-folding distance, metres */
#define FOG_LUT 1024
#define FOG_STEP 4.0f
#define LIDAR_CHUNK 16        /* lidar columns per work item */
#define POLE_RADIUS 0.12

static const double PI = 3.14159265358979323846;

/* ------------------------------------------------------------------------ */
/* Materials and colours                                                     */

enum { MAT_ACTOR = DK__PAINT_BODY, MAT_POLE = DK__PAINT_POLE, MAT_SIGN = DK__PAINT_SIGN,
       MAT_LIGHT = DK__PAINT_LIGHT };

/* Ground texel: R, G, B albedo and the lidar reflectivity, packed RGBA8. */
#define PACK(r, g, b, m) ((uint32_t)(r) | ((uint32_t)(g) << 8) | ((uint32_t)(b) << 16) | ((uint32_t)(m) << 24))
static const uint32_t COL_GRASS = PACK(78, 96, 52, 30);
static const uint32_t COL_ASPHALT = PACK(84, 84, 86, 12);
static const uint32_t COL_CONCRETE = PACK(152, 150, 144, 26);
static const uint32_t COL_KERB = PACK(176, 174, 168, 30);
static const uint32_t COL_WHITE = PACK(222, 222, 216, 120);
static const uint32_t COL_YELLOW = PACK(214, 170, 48, 110);

static const float SKY_ZENITH[3] = {70.f, 120.f, 196.f};
static const float SKY_HORIZON[3] = {188.f, 204.f, 222.f};
#define HAZE SKY_HORIZON
static const float AMBIENT = 0.50f, DIFFUSE = 0.62f, AMBIENT_SHADOW = 0.56f;

/* Lidar reflectivity (0..255 before the incidence factor) per actor class. */
static const float CLASS_REFL[DK_CLASS_COUNT] = {55, 50, 50, 45, 55, 16, 35, 25, 140, 70};

static const uint8_t PAL_CAR[][3] = {{226, 226, 222}, {30, 31, 35}, {170, 172, 176}, {102, 104, 108},
                                     {150, 26, 28},   {32, 62, 132}, {26, 36, 72},  {192, 176, 146},
                                     {44, 82, 58},    {226, 226, 222}, {30, 31, 35}, {170, 172, 176}};
static const uint8_t PAL_TRUCK[][3] = {{222, 222, 216}, {162, 42, 32}, {42, 72, 142}, {212, 112, 32}};
static const uint8_t PAL_BUS[][3] = {{222, 182, 42}, {172, 36, 36}, {226, 226, 220}, {42, 92, 172}};
static const uint8_t PAL_TRAILER[][3] = {{152, 152, 152}, {212, 212, 206}, {120, 110, 100}};
static const uint8_t PAL_CONSTR[][3] = {{226, 172, 32}, {216, 122, 32}};
static const uint8_t PAL_SHIRT[][3] = {{182, 42, 42}, {42, 92, 162}, {222, 222, 212}, {42, 42, 44},
                                       {92, 142, 62}, {202, 162, 62}, {122, 62, 142}, {232, 132, 52}};
static const uint8_t PAL_TROUSERS[][3] = {{42, 46, 62}, {30, 30, 32}, {92, 82, 70}, {62, 72, 102}};
static const uint8_t PAL_MOTO[][3] = {{22, 22, 24}, {162, 32, 32}, {42, 62, 122}};
static const uint8_t PAL_BARRIER[][3] = {{202, 202, 196}, {212, 42, 32}};

/* ------------------------------------------------------------------------ */
/* Renderer state                                                            */

typedef struct tex_tile {
    uint32_t *data;           /* TEX_TILE^2 texels, or NULL: uniform `uni` */
    uint32_t uni;
} tex_tile;

typedef struct paint_tex {
    double x0, y0, texel;     /* world position of texel (0, 0)'s corner */
    float fx0, fy0, inv;      /* float copies for sampling */
    int w, h, ntx, nty;
    tex_tile *tiles;          /* NULL when nothing is painted */
    uint32_t background;
} paint_tex;

typedef struct rbox {
    int32_t id;               /* actor id, 0 for map geometry */
    int actor;                /* index in s->actors, -1 for static geometry */
    int cls;                  /* actor class, or -1 */
    int mat;
    float half[3];
    double radius;            /* bounding sphere */
    double rbw[9], c[3];      /* static boxes: box-to-world rotation, centre */
    float col[3], col2[3];    /* base and secondary colours, 0..255 */
    float refl;
} rbox;

typedef struct cam_cache {
    int w, h, ntx, nty;
    float *rays;              /* non-pinhole: h * w * 3 unit rays; NULL: pinhole */
    uint8_t *valid;
    float *tile;              /* ntx * nty * 6: axis xyz, cos, sin, nonempty */
    double axis[3], cos_half, sin_half; /* the whole camera's cone */
    int whole_sphere;         /* the cone covers everything: no frame culling */
} cam_cache;

struct dk_world_renderer {
    const dk_scenario *s;
    dk_world_renderer_config cfg;
    paint_tex tex;
    float noise[256 * 256];    /* value-noise lattice, [0, 1] */
    float macro[256 * 256];    /* two octaves (1x and 1/8x) of it, same period */
    int n_boxes;
    rbox *boxes;              /* actors (same index as s->actors), then static */
    cam_cache cams[DK_RIG_MAX_SENSORS];
    float sun[3];
    double sund[3];
    float fog_lut[FOG_LUT + 2];   /* haze fraction every FOG_STEP metres */
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static inline double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}
static inline float clampf(float v, float lo, float hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static void rot_z(double yaw, double r[9])
{
    double c = cos(yaw), s = sin(yaw);
    r[0] = c; r[1] = -s; r[2] = 0;
    r[3] = s; r[4] = c;  r[5] = 0;
    r[6] = 0; r[7] = 0;  r[8] = 1;
}

/* out = R^T v */
static inline void mul_rt(const double r[9], const double v[3], double out[3])
{
    out[0] = r[0] * v[0] + r[3] * v[1] + r[6] * v[2];
    out[1] = r[1] * v[0] + r[4] * v[1] + r[7] * v[2];
    out[2] = r[2] * v[0] + r[5] * v[1] + r[8] * v[2];
}
static inline void mul_r(const double r[9], const double v[3], double out[3])
{
    out[0] = r[0] * v[0] + r[1] * v[1] + r[2] * v[2];
    out[1] = r[3] * v[0] + r[4] * v[1] + r[5] * v[2];
    out[2] = r[6] * v[0] + r[7] * v[1] + r[8] * v[2];
}

static double wrap_pi(double a)
{
    a = fmod(a + PI, 2 * PI);
    if (a < 0) a += 2 * PI;
    return a - PI;
}

/* Time span over which an actor exists (as dk_actor_state_at says). */
static void actor_span(const dk_actor *a, double *t0, double *t1)
{
    *t0 = a->states[0].t;
    *t1 = a->states[a->n_states - 1].t;
}

/* Box-to-world rotation and centre at time t; 0 when the box does not exist. */
static int box_at(const dk_scenario *s, const rbox *b, double t, double rbw[9], double c[3])
{
    if (b->actor < 0) {
        memcpy(rbw, b->rbw, sizeof b->rbw);
        memcpy(c, b->c, sizeof b->c);
        return 1;
    }
    const dk_actor *a = &s->actors[b->actor];
    dk_actor_state st;
    double vel[3];
    if (!dk_actor_state_at(a, t, &st, vel)) return 0;
    c[0] = st.x;
    c[1] = st.y;
    c[2] = st.z;
    rot_z(st.yaw, rbw);
    return 1;
}

/* Centre of a box at t, clamped into its existence span (for culling). */
static int box_center_clamped(const dk_scenario *s, const rbox *b, double ta, double tb,
                              double t, double c[3])
{
    double rbw[9];
    if (b->actor >= 0) {
        double s0, s1;
        actor_span(&s->actors[b->actor], &s0, &s1);
        if (tb < s0 || ta > s1) return 0;
        t = clampd(t, s0, s1);
    }
    if (box_at(s, b, t, rbw, c)) return 1;
    /* Inside the span but not reported (a rounding corner): use the ends. */
    const dk_actor *a = &s->actors[b->actor];
    const dk_actor_state *st = t <= a->states[0].t ? &a->states[0] : &a->states[a->n_states - 1];
    c[0] = st->x;
    c[1] = st->y;
    c[2] = st->z;
    return 1;
}

static void sensor_to_world(const dk_scenario *s, const dk_rig_sensor *sen, double t,
                            double r[9], double o[3])
{
    dk_pose ego = dk_scenario_ego_pose(s, t);
    dk_pose p = dk_pose_compose(&ego, &sen->sensor_to_ego);
    dk_quat_to_rotation(p.q, r);
    o[0] = p.t[0];
    o[1] = p.t[1];
    o[2] = p.t[2];
}

/* A bounding sphere of where box b is in the sensor frame during [ta, tb]:
 * centre at the middle time, radius grown by the motion seen at the ends
 * (sensor and box both move; 1.5x covers a knot of the piecewise-linear paths
 * inside the interval) plus a small pad. With `sun`, also the sphere holding
 * the box's shadow on z = 0 (cs, *rads). Returns 0 if b does not exist then. */
static int motion_sphere(const dk_scenario *s, const rbox *b, double ta, double tb,
                         const double pr[3][9], const double po[3][3], const double *sun,
                         double center[3], double *radius, double cs[3], double *rads)
{
    double times[3] = {ta, 0.5 * (ta + tb), tb};
    double pc[3][3], ps[3][3];
    for (int k = 0; k < 3; k++) {
        double cw[3], d[3];
        if (!box_center_clamped(s, b, ta, tb, times[k], cw)) return 0;
        d[0] = cw[0] - po[k][0];
        d[1] = cw[1] - po[k][1];
        d[2] = cw[2] - po[k][2];
        mul_rt(pr[k], d, pc[k]);
        if (sun) {
            double f = cw[2] / sun[2];
            d[0] = cw[0] - sun[0] * f - po[k][0];
            d[1] = cw[1] - sun[1] * f - po[k][1];
            d[2] = -po[k][2];
            mul_rt(pr[k], d, ps[k]);
        }
    }
    for (int pass = 0; pass < (sun ? 2 : 1); pass++) {
        double(*q)[3] = pass ? ps : pc;
        double m = 0;
        for (int k = 0; k < 3; k += 2) {
            double dx = q[k][0] - q[1][0], dy = q[k][1] - q[1][1], dz = q[k][2] - q[1][2];
            double dd = sqrt(dx * dx + dy * dy + dz * dz);
            if (dd > m) m = dd;
        }
        double dist = sqrt(q[1][0] * q[1][0] + q[1][1] * q[1][1] + q[1][2] * q[1][2]);
        double rad = (pass ? b->radius / sun[2] : b->radius) + 1.5 * m + 0.05 + 0.002 * dist;
        if (pass) {
            memcpy(cs, q[1], sizeof q[1]);
            *rads = rad;
        } else {
            memcpy(center, q[1], sizeof q[1]);
            *radius = rad;
        }
    }
    return 1;
}

/* Sensor poses at the start, middle and end of [ta, tb]. */
static void sensor_poses3(const dk_scenario *s, const dk_rig_sensor *sen, double ta, double tb,
                          double pr[3][9], double po[3][3])
{
    sensor_to_world(s, sen, ta, pr[0], po[0]);
    sensor_to_world(s, sen, 0.5 * (ta + tb), pr[1], po[1]);
    sensor_to_world(s, sen, tb, pr[2], po[2]);
}

/* Does the cone (half angle with cosine ch, sine sh) around an axis at cosine
 * `dot` from a sphere's centre reach the sphere (seen under angle beta with
 * cosine cb, sine sb)? angle <= half + beta, i.e. cos(angle) >= cos(half + beta),
 * and always when half + beta >= pi. */
static inline int cone_pass(double dot, double ch, double sh, double cb, double sb)
{
    if (sh * cb + ch * sb <= 1e-12) return 1;
    return dot >= ch * cb - sh * sb - 1e-6;
}

static inline int cone_hits_sphere(const double axis[3], double ch, double sh, const double c[3],
                                   double rad)
{
    double dist = sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]);
    if (dist <= rad) return 1;
    double sb = rad / dist, cb = sqrt(1 - sb * sb);
    double dot = (axis[0] * c[0] + axis[1] * c[1] + axis[2] * c[2]) / dist;
    return cone_pass(dot, ch, sh, cb, sb);
}

/* ------------------------------------------------------------------------ */
/* Ground paint texture                                                      */

static uint32_t *tex_tile_data(paint_tex *T, int tx, int ty)
{
    tex_tile *tl = &T->tiles[(size_t)ty * T->ntx + tx];
    if (!tl->data) {
        tl->data = dk_malloc(sizeof(uint32_t) * TEX_TILE * TEX_TILE);
        if (!tl->data) return NULL;
        for (int i = 0; i < TEX_TILE * TEX_TILE; i++) tl->data[i] = tl->uni;
    }
    return tl->data;
}

static inline uint32_t blend_px(uint32_t dst, uint32_t src, float a)
{
    if (a >= 0.999f) return src;
    if (a <= 0.001f) return dst;
    uint32_t out = 0;
    for (int c = 0; c < 32; c += 8) {
        float d = (float)((dst >> c) & 255), v = (float)((src >> c) & 255);
        out |= (uint32_t)(d + (v - d) * a + 0.5f) << c;
    }
    return out;
}

/* Blends colour into texel (x, y) with coverage a. */
static int tex_put(paint_tex *T, int x, int y, uint32_t col, float a)
{
    if (x < 0 || y < 0 || x >= T->w || y >= T->h || a <= 0.001f) return 0;
    uint32_t *d = tex_tile_data(T, x >> TEX_TILE_SHIFT, y >> TEX_TILE_SHIFT);
    if (!d) return DK_ENOMEM;
    uint32_t *p = &d[((y & (TEX_TILE - 1)) << TEX_TILE_SHIFT) | (x & (TEX_TILE - 1))];
    *p = blend_px(*p, col, a);
    return 0;
}

/* Coverage of a 1-D interval [0, len) on a circle of `period`, at position pos
 * (already reduced), antialiased over one texel (w). */
static inline float dash_cov(double pos, double len, double period, double w)
{
    double dd;
    pos = fmod(pos, period);
    if (pos < 0) pos += period;
    if (pos < len) {
        dd = fmin(pos, len - pos);
    } else {
        dd = -fmin(pos - len, period - pos);
    }
    return (float)clampd(dd / w + 0.5, 0, 1);
}

typedef enum stripe_kind { STRIPE_NONE = 0, STRIPE_ZEBRA } stripe_kind;

/* Scanline fill of a polygon (even-odd, horizontal antialiasing). Zebra
 * stripes: paint only where the position along `sdir` from `sorg` falls on a
 * 0.5 m stripe of a 1 m period. */
static int tex_fill_polygon(paint_tex *T, const double *pts, int n, uint32_t col,
                            stripe_kind stripes, const double sorg[2], const double sdir[2])
{
    double ymin = INFINITY, ymax = -INFINITY;
    for (int i = 0; i < n; i++) {
        ymin = fmin(ymin, pts[3 * i + 1]);
        ymax = fmax(ymax, pts[3 * i + 1]);
    }
    int j0 = (int)floor((ymin - T->y0) / T->texel), j1 = (int)ceil((ymax - T->y0) / T->texel);
    if (j0 < 0) j0 = 0;
    if (j1 > T->h) j1 = T->h;
    double xs[64];
    double *xb = xs;
    int cap = 64;
    if (n > cap) {
        xb = dk_malloc(sizeof(double) * (size_t)n);
        if (!xb) return DK_ENOMEM;
        cap = n;
    }
    int st = 0;
    for (int j = j0; j < j1 && !st; j++) {
        double y = T->y0 + (j + 0.5) * T->texel;
        int m = 0;
        for (int i = 0; i < n; i++) {
            const double *a = &pts[3 * i], *b = &pts[3 * ((i + 1) % n)];
            if ((a[1] <= y) != (b[1] <= y)) {
                double u = (y - a[1]) / (b[1] - a[1]);
                xb[m++] = a[0] + u * (b[0] - a[0]);
            }
        }
        /* insertion sort: few crossings */
        for (int i = 1; i < m; i++) {
            double v = xb[i];
            int k = i - 1;
            while (k >= 0 && xb[k] > v) {
                xb[k + 1] = xb[k];
                k--;
            }
            xb[k + 1] = v;
        }
        for (int i = 0; i + 1 < m && !st; i += 2) {
            double xa = (xb[i] - T->x0) / T->texel, xe = (xb[i + 1] - T->x0) / T->texel;
            int i0 = (int)floor(clampd(xa, -1, T->w + 1)), i1 = (int)ceil(clampd(xe, -1, T->w + 1));
            for (int x = i0 < 0 ? 0 : i0; x < i1 && x < T->w; x++) {
                double cov = fmin(xe, x + 1.0) - fmax(xa, (double)x);
                if (cov <= 0) continue;
                float a = (float)fmin(cov, 1.0);
                if (stripes == STRIPE_ZEBRA) {
                    double px = T->x0 + (x + 0.5) * T->texel;
                    double q = (px - sorg[0]) * sdir[0] + (y - sorg[1]) * sdir[1];
                    a *= dash_cov(q - 0.25, 0.5, 1.0, T->texel);
                }
                st = tex_put(T, x, j, col, a);
            }
        }
    }
    if (xb != xs) dk_free(xb);
    return st;
}

/* A polyline of width `width`; dashed: `dash` metres of paint every `period`
 * (0: solid); double: two lines of width `width` whose centres are `gap`
 * either side of the polyline. */
static int tex_polyline(paint_tex *T, const double *pts, int n, uint32_t col, double width,
                        double dash, double period, double gap)
{
    double s_acc = 0;
    double hw = 0.5 * width;
    double reach = gap + hw + 2 * T->texel;
    for (int i = 0; i + 1 < n; i++) {
        const double *a = &pts[3 * i], *b = &pts[3 * (i + 1)];
        double dx = b[0] - a[0], dy = b[1] - a[1];
        double len2 = dx * dx + dy * dy, len = sqrt(len2);
        if (len < 1e-9) continue;
        double bx0 = fmin(a[0], b[0]) - reach, bx1 = fmax(a[0], b[0]) + reach;
        double by0 = fmin(a[1], b[1]) - reach, by1 = fmax(a[1], b[1]) + reach;
        int i0 = (int)floor((bx0 - T->x0) / T->texel), i1 = (int)ceil((bx1 - T->x0) / T->texel);
        int j0 = (int)floor((by0 - T->y0) / T->texel), j1 = (int)ceil((by1 - T->y0) / T->texel);
        if (i0 < 0) i0 = 0;
        if (j0 < 0) j0 = 0;
        if (i1 > T->w) i1 = T->w;
        if (j1 > T->h) j1 = T->h;
        for (int y = j0; y < j1; y++) {
            double py = T->y0 + (y + 0.5) * T->texel;
            for (int x = i0; x < i1; x++) {
                double px = T->x0 + (x + 0.5) * T->texel;
                double u = ((px - a[0]) * dx + (py - a[1]) * dy) / len2;
                u = clampd(u, 0, 1);
                double qx = a[0] + u * dx - px, qy = a[1] + u * dy - py;
                double dist = sqrt(qx * qx + qy * qy);
                if (gap > 0) dist = fabs(dist - gap);
                float cov = (float)clampd((hw - dist) / T->texel + 0.5, 0, 1);
                if (cov <= 0.001f) continue;
                if (dash > 0) cov *= dash_cov(s_acc + u * len, dash, period, T->texel);
                int st = tex_put(T, x, y, col, cov);
                if (st) return st;
            }
        }
        s_acc += len;
    }
    return 0;
}

static int painted_layer(dk_map_layer l)
{
    return l == DK_MAP_DRIVABLE_AREA || l == DK_MAP_SIDEWALK || l == DK_MAP_ROAD_BOUNDARY ||
           l == DK_MAP_CROSSWALK || l == DK_MAP_ROAD_MARKING || l == DK_MAP_WAIT_LINE ||
           l == DK_MAP_LANELINE;
}

static int paint_element(paint_tex *T, const dk_map_element *e)
{
    if (e->n_points < 2 || !e->points) return 0;
    switch (e->layer) {
    case DK_MAP_DRIVABLE_AREA:
        return e->n_points >= 3 ? tex_fill_polygon(T, e->points, e->n_points, COL_ASPHALT,
                                                   STRIPE_NONE, NULL, NULL)
                                : 0;
    case DK_MAP_SIDEWALK:
        return e->n_points >= 3 ? tex_fill_polygon(T, e->points, e->n_points, COL_CONCRETE,
                                                   STRIPE_NONE, NULL, NULL)
                                : 0;
    case DK_MAP_ROAD_BOUNDARY:
        return tex_polyline(T, e->points, e->n_points, COL_KERB, 0.18, 0, 0, 0);
    case DK_MAP_CROSSWALK: {
        if (e->n_points < 3) return 0;
        /* Stripes run along the traffic: they repeat along the polygon's
           longest edge, the direction people walk. */
        double best = -1, dir[2] = {1, 0};
        for (int i = 0; i < e->n_points; i++) {
            const double *a = &e->points[3 * i], *b = &e->points[3 * ((i + 1) % e->n_points)];
            double dx = b[0] - a[0], dy = b[1] - a[1], l2 = dx * dx + dy * dy;
            if (l2 > best) {
                best = l2;
                dir[0] = dx / sqrt(l2);
                dir[1] = dy / sqrt(l2);
            }
        }
        return tex_fill_polygon(T, e->points, e->n_points, COL_WHITE, STRIPE_ZEBRA, e->points,
                                dir);
    }
    case DK_MAP_ROAD_MARKING:
        return e->n_points >= 3 ? tex_fill_polygon(T, e->points, e->n_points, COL_WHITE,
                                                   STRIPE_NONE, NULL, NULL)
                                : 0;
    case DK_MAP_WAIT_LINE:
        return tex_polyline(T, e->points, e->n_points, COL_WHITE, 0.40, 0, 0, 0);
    case DK_MAP_LANELINE:
        switch (e->style) {
        case DK_LINE_DASHED_WHITE:
            return tex_polyline(T, e->points, e->n_points, COL_WHITE, 0.15, 3.0, 9.0, 0);
        case DK_LINE_SOLID_YELLOW:
            return tex_polyline(T, e->points, e->n_points, COL_YELLOW, 0.15, 0, 0, 0);
        case DK_LINE_DOUBLE_YELLOW:
            return tex_polyline(T, e->points, e->n_points, COL_YELLOW, 0.11, 0, 0, 0.11);
        case DK_LINE_SOLID_WHITE:
        default:
            return tex_polyline(T, e->points, e->n_points, COL_WHITE, 0.15, 0, 0, 0);
        }
    default:
        return 0;
    }
}

static int build_texture(dk_world_renderer *r)
{
    const dk_scenario *s = r->s;
    paint_tex *T = &r->tex;
    T->background = COL_GRASS;
    double x0 = INFINITY, y0 = INFINITY, x1 = -INFINITY, y1 = -INFINITY;
    for (int i = 0; i < s->n_map; i++) {
        const dk_map_element *e = &s->map[i];
        if (!painted_layer(e->layer) || !e->points) continue;
        for (int k = 0; k < e->n_points; k++) {
            const double *p = &e->points[3 * k];
            if (!isfinite(p[0]) || !isfinite(p[1])) continue;
            x0 = fmin(x0, p[0]);
            x1 = fmax(x1, p[0]);
            y0 = fmin(y0, p[1]);
            y1 = fmax(y1, p[1]);
        }
    }
    if (!(x0 <= x1 && y0 <= y1)) return 0;   /* nothing painted: all background */
    x0 -= 1;
    y0 -= 1;
    x1 += 1;
    y1 += 1;
    double texel = r->cfg.ground_texel;
    /* Bounded memory: coarser texels for huge maps. */
    while (((x1 - x0) / texel) * ((y1 - y0) / texel) > (double)TEX_MAX_TEXELS) texel *= 1.25;
    T->texel = texel;
    T->x0 = x0;
    T->y0 = y0;
    T->w = (int)ceil((x1 - x0) / texel);
    T->h = (int)ceil((y1 - y0) / texel);
    T->ntx = (T->w + TEX_TILE - 1) / TEX_TILE;
    T->nty = (T->h + TEX_TILE - 1) / TEX_TILE;
    T->fx0 = (float)x0;
    T->fy0 = (float)y0;
    T->inv = (float)(1.0 / texel);
    T->tiles = dk_calloc((size_t)T->ntx * T->nty, sizeof *T->tiles);
    if (!T->tiles) return DK_ENOMEM;
    for (size_t i = 0; i < (size_t)T->ntx * T->nty; i++) T->tiles[i].uni = T->background;
    /* Painter's order: surfaces, kerbs, then paint. */
    static const dk_map_layer order[] = {DK_MAP_DRIVABLE_AREA, DK_MAP_SIDEWALK,
                                         DK_MAP_ROAD_BOUNDARY, DK_MAP_CROSSWALK,
                                         DK_MAP_ROAD_MARKING, DK_MAP_WAIT_LINE, DK_MAP_LANELINE};
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        for (int i = 0; i < s->n_map; i++) {
            if (s->map[i].layer != order[k]) continue;
            int st = paint_element(T, &s->map[i]);
            if (st) return st;
        }
    }
    /* Tiles that came out uniform go back to one value. */
    for (size_t i = 0; i < (size_t)T->ntx * T->nty; i++) {
        tex_tile *tl = &T->tiles[i];
        if (!tl->data) continue;
        uint32_t v = tl->data[0];
        int uniform = 1;
        for (int k = 1; k < TEX_TILE * TEX_TILE && uniform; k++) uniform = tl->data[k] == v;
        if (uniform) {
            dk_free(tl->data);
            tl->data = NULL;
            tl->uni = v;
        }
    }
    return 0;
}

static inline uint32_t texel_at(const paint_tex *T, int x, int y)
{
    if ((unsigned)x >= (unsigned)T->w || (unsigned)y >= (unsigned)T->h) return T->background;
    const tex_tile *tl = &T->tiles[(size_t)(y >> TEX_TILE_SHIFT) * T->ntx + (x >> TEX_TILE_SHIFT)];
    return tl->data ? tl->data[((y & (TEX_TILE - 1)) << TEX_TILE_SHIFT) | (x & (TEX_TILE - 1))]
                    : tl->uni;
}

/* Bilinear sample: out[0..2] albedo, out[3] reflectivity (0..255). */
static inline void tex_sample(const paint_tex *T, float px, float py, float out[4])
{
    if (!T->tiles) {
        uint32_t v = T->background;
        out[0] = (float)(v & 255);
        out[1] = (float)((v >> 8) & 255);
        out[2] = (float)((v >> 16) & 255);
        out[3] = (float)(v >> 24);
        return;
    }
    float fx = (px - T->fx0) * T->inv - 0.5f, fy = (py - T->fy0) * T->inv - 0.5f;
    fx = clampf(fx, -4.f, (float)T->w + 4.f);
    fy = clampf(fy, -4.f, (float)T->h + 4.f);
    float flx = floorf(fx), fly = floorf(fy);
    int ix = (int)flx, iy = (int)fly;
    float ax = fx - flx, ay = fy - fly;
    uint32_t t00, t10, t01, t11;
    if (ix >= 0 && iy >= 0 && ix + 1 < T->w && iy + 1 < T->h &&
        (ix & (TEX_TILE - 1)) != TEX_TILE - 1 && (iy & (TEX_TILE - 1)) != TEX_TILE - 1) {
        /* all four texels in one tile */
        const tex_tile *tl =
            &T->tiles[(size_t)(iy >> TEX_TILE_SHIFT) * T->ntx + (ix >> TEX_TILE_SHIFT)];
        if (tl->data) {
            const uint32_t *d =
                tl->data + (((iy & (TEX_TILE - 1)) << TEX_TILE_SHIFT) | (ix & (TEX_TILE - 1)));
            t00 = d[0];
            t10 = d[1];
            t01 = d[TEX_TILE];
            t11 = d[TEX_TILE + 1];
        } else {
            t00 = t10 = t01 = t11 = tl->uni;
        }
    } else {
        t00 = texel_at(T, ix, iy);
        t10 = texel_at(T, ix + 1, iy);
        t01 = texel_at(T, ix, iy + 1);
        t11 = texel_at(T, ix + 1, iy + 1);
    }
    if (t00 == t10 && t00 == t01 && t00 == t11) {
        out[0] = (float)(t00 & 255);
        out[1] = (float)((t00 >> 8) & 255);
        out[2] = (float)((t00 >> 16) & 255);
        out[3] = (float)(t00 >> 24);
        return;
    }
    float w00 = (1 - ax) * (1 - ay), w10 = ax * (1 - ay), w01 = (1 - ax) * ay, w11 = ax * ay;
    for (int c = 0; c < 4; c++) {
        int sh = 8 * c;
        out[c] = w00 * (float)((t00 >> sh) & 255) + w10 * (float)((t10 >> sh) & 255) +
                 w01 * (float)((t01 >> sh) & 255) + w11 * (float)((t11 >> sh) & 255);
    }
}

/* Value noise from the seeded lattice table, bilinear, in [0, 1]. */
static inline float noise2(const float *N, float x, float y)
{
    float fx = floorf(x), fy = floorf(y);
    int ix = (int)fx, iy = (int)fy;
    float ax = x - fx, ay = y - fy;
    int x0 = ix & 255, x1 = (ix + 1) & 255, y0 = (iy & 255) << 8, y1 = ((iy + 1) & 255) << 8;
    float a = N[y0 | x0], b = N[y0 | x1], c = N[y1 | x0], d = N[y1 | x1];
    float top = a + (b - a) * ax, bot = c + (d - c) * ax;
    return top + (bot - top) * ay;
}

/* ------------------------------------------------------------------------ */
/* Boxes                                                                     */

static void pick_color(const uint8_t (*pal)[3], int n, uint64_t h, float out[3])
{
    const uint8_t *c = pal[h % (uint64_t)n];
    float bright = 0.9f + 0.2f * (float)((h >> 16) & 255) / 255.f;
    for (int k = 0; k < 3; k++) {
        float jitter = (float)((int)((h >> (24 + 8 * k)) & 15) - 8);
        out[k] = clampf((float)c[k] * bright + jitter, 0.f, 255.f);
    }
}

#define PICK(pal, h, out) pick_color(pal, (int)(sizeof pal / sizeof pal[0]), h, out)

static void actor_colors(rbox *b, uint64_t seed)
{
    uint64_t h = mix64(seed * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uint32_t)b->id ^ 0xC0105EEDULL);
    uint64_t h2 = mix64(h);
    static const float window[3] = {38, 48, 58};
    switch (b->cls) {
    case DK_CLASS_CAR: PICK(PAL_CAR, h, b->col); memcpy(b->col2, window, sizeof window); break;
    case DK_CLASS_TRUCK:
        PICK(PAL_TRUCK, h, b->col);
        PICK(PAL_TRAILER, h2, b->col2);
        break;
    case DK_CLASS_BUS: PICK(PAL_BUS, h, b->col); memcpy(b->col2, window, sizeof window); break;
    case DK_CLASS_TRAILER: PICK(PAL_TRAILER, h, b->col); memcpy(b->col2, b->col, sizeof b->col); break;
    case DK_CLASS_CONSTRUCTION_VEHICLE:
        PICK(PAL_CONSTR, h, b->col);
        memcpy(b->col2, window, sizeof window);
        break;
    case DK_CLASS_PEDESTRIAN:
    case DK_CLASS_BICYCLE:
        PICK(PAL_SHIRT, h, b->col);
        PICK(PAL_TROUSERS, h2, b->col2);
        break;
    case DK_CLASS_MOTORCYCLE:
        PICK(PAL_MOTO, h, b->col);
        PICK(PAL_SHIRT, h2, b->col2);
        break;
    case DK_CLASS_TRAFFIC_CONE:
        b->col[0] = 236; b->col[1] = 102; b->col[2] = 22;
        b->col2[0] = 232; b->col2[1] = 232; b->col2[2] = 226;
        break;
    case DK_CLASS_BARRIER:
    default:
        PICK(PAL_BARRIER, h, b->col);
        b->col2[0] = 226; b->col2[1] = 226; b->col2[2] = 220;
        break;
    }
}

void dk_world_actor_style(dk_actor_class cls, int32_t id, uint64_t seed, float body[3],
                          float second[3], float *reflectivity)
{
    rbox b;
    memset(&b, 0, sizeof b);
    b.cls = (int)cls;
    b.id = id;
    actor_colors(&b, seed);
    if (body) memcpy(body, b.col, sizeof b.col);
    if (second) memcpy(second, b.col2, sizeof b.col2);
    if (reflectivity)
        *reflectivity = (int)cls >= 0 && (int)cls < DK_CLASS_COUNT ? CLASS_REFL[cls] : 40.f;
}

/* Box-to-world rotation whose z axis is the unit vector zax. */
static void frame_from_z(const double zax[3], double r[9])
{
    double xa[3] = {1, 0, 0};
    if (fabs(zax[0]) > 0.9) {
        xa[0] = 0;
        xa[1] = 1;
    }
    double d = xa[0] * zax[0] + xa[1] * zax[1] + xa[2] * zax[2];
    for (int k = 0; k < 3; k++) xa[k] -= d * zax[k];
    double n = sqrt(xa[0] * xa[0] + xa[1] * xa[1] + xa[2] * xa[2]);
    for (int k = 0; k < 3; k++) xa[k] /= n;
    double ya[3] = {zax[1] * xa[2] - zax[2] * xa[1], zax[2] * xa[0] - zax[0] * xa[2],
                    zax[0] * xa[1] - zax[1] * xa[0]};
    /* columns are the box axes in the world */
    for (int k = 0; k < 3; k++) {
        r[3 * k + 0] = xa[k];
        r[3 * k + 1] = ya[k];
        r[3 * k + 2] = zax[k];
    }
}

static int build_boxes(dk_world_renderer *r)
{
    const dk_scenario *s = r->s;
    int n = s->n_actors;
    for (int i = 0; i < s->n_map; i++) {
        const dk_map_element *e = &s->map[i];
        if (e->geometry == DK_GEOM_CUBOID) n++;
        else if (e->layer == DK_MAP_POLE && e->n_points >= 2) n += e->n_points - 1;
    }
    r->boxes = dk_calloc(n > 0 ? (size_t)n : 1, sizeof *r->boxes);
    if (!r->boxes) return DK_ENOMEM;
    int k = 0;
    for (int i = 0; i < s->n_actors; i++) {
        const dk_actor *a = &s->actors[i];
        rbox *b = &r->boxes[k++];
        b->id = a->id;
        b->actor = i;
        b->cls = (int)a->cls;
        b->mat = MAT_ACTOR;
        for (int d = 0; d < 3; d++) b->half[d] = (float)(0.5 * a->size[d]);
        b->radius = 0.5 * sqrt(a->size[0] * a->size[0] + a->size[1] * a->size[1] +
                               a->size[2] * a->size[2]);
        b->refl = (a->cls >= 0 && a->cls < DK_CLASS_COUNT) ? CLASS_REFL[a->cls] : 40.f;
        actor_colors(b, r->cfg.seed);
    }
    for (int i = 0; i < s->n_map; i++) {
        const dk_map_element *e = &s->map[i];
        if (e->geometry == DK_GEOM_CUBOID) {
            rbox *b = &r->boxes[k++];
            b->id = 0;
            b->actor = -1;
            b->cls = -1;
            b->mat = e->layer == DK_MAP_TRAFFIC_LIGHT ? MAT_LIGHT : MAT_SIGN;
            for (int d = 0; d < 3; d++) b->half[d] = (float)(0.5 * fabs(e->size[d]));
            b->radius = 0.5 * sqrt(e->size[0] * e->size[0] + e->size[1] * e->size[1] +
                                   e->size[2] * e->size[2]);
            dk_pose p = dk_pose_from_euler(e->center, e->yaw, e->pitch, e->roll);
            dk_quat_to_rotation(p.q, b->rbw);
            memcpy(b->c, e->center, sizeof b->c);
            if (b->mat == MAT_LIGHT) {
                b->col[0] = 34; b->col[1] = 36; b->col[2] = 38;
                b->col2[0] = 34; b->col2[1] = 36; b->col2[2] = 38;
                b->refl = 90;
            } else {
                uint64_t h = mix64((uint64_t)(uint32_t)e->id ^ 0x5167ULL);
                static const uint8_t faces[][3] = {{200, 36, 36}, {36, 82, 170}, {232, 232, 226},
                                                   {230, 190, 40}};
                const uint8_t *c = faces[h % 4];
                for (int d = 0; d < 3; d++) b->col[d] = c[d];
                b->col2[0] = 150; b->col2[1] = 152; b->col2[2] = 156;
                b->refl = 220;
            }
        } else if (e->layer == DK_MAP_POLE && e->n_points >= 2) {
            for (int j = 0; j + 1 < e->n_points; j++) {
                const double *p0 = &e->points[3 * j], *p1 = &e->points[3 * (j + 1)];
                double d[3] = {p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]};
                double len = sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
                if (!(len > 1e-6) || !isfinite(len)) continue;
                rbox *b = &r->boxes[k++];
                b->id = 0;
                b->actor = -1;
                b->cls = -1;
                b->mat = MAT_POLE;
                for (int q = 0; q < 3; q++) {
                    d[q] /= len;
                    b->c[q] = 0.5 * (p0[q] + p1[q]);
                }
                frame_from_z(d, b->rbw);
                b->half[0] = b->half[1] = (float)POLE_RADIUS;
                b->half[2] = (float)(0.5 * len);
                b->radius = sqrt(2 * POLE_RADIUS * POLE_RADIUS + 0.25 * len * len);
                b->col[0] = 128; b->col[1] = 130; b->col[2] = 134;
                memcpy(b->col2, b->col, sizeof b->col);
                b->refl = 160;
            }
        }
    }
    r->n_boxes = k;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Camera cones                                                              */

static void finish_cone(const double *rays, int n, float *tile)
{
    double ax[3] = {0, 0, 0};
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) ax[k] += rays[3 * i + k];
    double nn = sqrt(ax[0] * ax[0] + ax[1] * ax[1] + ax[2] * ax[2]);
    if (n == 0 || nn < 1e-12) {
        /* degenerate (rays cancel out): accept everything */
        tile[0] = 0; tile[1] = 0; tile[2] = 1;
        tile[3] = -1; tile[4] = 0; tile[5] = n > 0;
        return;
    }
    for (int k = 0; k < 3; k++) ax[k] /= nn;
    double mind = 1;
    for (int i = 0; i < n; i++) {
        const double *v = &rays[3 * i];
        double l = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
        double d = (ax[0] * v[0] + ax[1] * v[1] + ax[2] * v[2]) / l;
        if (d < mind) mind = d;
    }
    double half = acos(clampd(mind, -1, 1)) + 2e-4;
    if (half > PI) half = PI;
    tile[0] = (float)ax[0];
    tile[1] = (float)ax[1];
    tile[2] = (float)ax[2];
    tile[3] = (float)cos(half);
    tile[4] = (float)sin(half);
    tile[5] = 1;
}

static int build_camera(cam_cache *cc, const dk_camera *cam)
{
    cc->w = cam->width;
    cc->h = cam->height;
    cc->ntx = (cc->w + CAM_TILE - 1) / CAM_TILE;
    cc->nty = (cc->h + CAM_TILE - 1) / CAM_TILE;
    size_t npx = (size_t)cc->w * cc->h;
    cc->tile = dk_malloc(sizeof(float) * 6 * (size_t)cc->ntx * cc->nty);
    if (!cc->tile) return DK_ENOMEM;
    double *buf = dk_malloc(sizeof(double) * 3 * CAM_TILE * CAM_TILE);
    if (!buf) return DK_ENOMEM;
    int st = 0;
    if (cam->model != DK_CAM_PINHOLE) {
        cc->rays = dk_malloc(sizeof(float) * 3 * npx);
        cc->valid = dk_malloc(npx);
        if (!cc->rays || !cc->valid) {
            st = DK_ENOMEM;
            goto done;
        }
        st = dk_camera_pixel_rays(cam, NULL, cc->rays, cc->valid);
        if (st) goto done;
    }
    for (int ty = 0; ty < cc->nty; ty++) {
        for (int tx = 0; tx < cc->ntx; tx++) {
            int x0 = tx * CAM_TILE, y0 = ty * CAM_TILE;
            int x1 = x0 + CAM_TILE < cc->w ? x0 + CAM_TILE : cc->w;
            int y1 = y0 + CAM_TILE < cc->h ? y0 + CAM_TILE : cc->h;
            int n = 0;
            if (!cc->rays) {
                /* Pinhole: the rays of a pixel rectangle lie in the cone of
                   its four corners (the cone meets the image plane in an
                   ellipse, a convex set). */
                double us[2] = {x0, x1}, vs[2] = {y0, y1};
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 2; b++) {
                        buf[3 * n + 0] = (us[a] - cam->cx) / cam->fx;
                        buf[3 * n + 1] = (vs[b] - cam->cy) / cam->fy;
                        buf[3 * n + 2] = 1;
                        n++;
                    }
            } else {
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++) {
                        size_t i = (size_t)y * cc->w + x;
                        if (!cc->valid[i]) continue;
                        for (int k = 0; k < 3; k++) buf[3 * n + k] = cc->rays[3 * i + k];
                        n++;
                    }
            }
            finish_cone(buf, n, &cc->tile[6 * ((size_t)ty * cc->ntx + tx)]);
        }
    }
    /* The whole camera's cone from the tiles' cones. */
    double ax[3] = {0, 0, 0};
    for (int i = 0; i < cc->ntx * cc->nty; i++) {
        const float *t = &cc->tile[6 * i];
        if (!t[5]) continue;
        for (int k = 0; k < 3; k++) ax[k] += t[k];
    }
    double nn = sqrt(ax[0] * ax[0] + ax[1] * ax[1] + ax[2] * ax[2]);
    double half = 0;
    if (nn < 1e-9) {
        cc->whole_sphere = 1;
    } else {
        for (int k = 0; k < 3; k++) cc->axis[k] = ax[k] / nn;
        for (int i = 0; i < cc->ntx * cc->nty; i++) {
            const float *t = &cc->tile[6 * i];
            if (!t[5]) continue;
            double d = cc->axis[0] * t[0] + cc->axis[1] * t[1] + cc->axis[2] * t[2];
            double h = acos(clampd(d, -1, 1)) + acos(clampd(t[3], -1, 1)) + 1e-4;
            if (h > half) half = h;
        }
        if (half >= PI) cc->whole_sphere = 1;
        cc->cos_half = cos(half);
        cc->sin_half = sin(half);
    }
done:
    dk_free(buf);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Create / destroy                                                          */

void dk_world_renderer_config_init(dk_world_renderer_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->ground_texel = 0.05;
    cfg->lidar_drop_prob = 0.05;
    cfg->seed = 0;
}

void dk_world_renderer_destroy(dk_world_renderer *r)
{
    if (!r) return;
    if (r->tex.tiles) {
        for (size_t i = 0; i < (size_t)r->tex.ntx * r->tex.nty; i++) dk_free(r->tex.tiles[i].data);
        dk_free(r->tex.tiles);
    }
    for (int i = 0; i < DK_RIG_MAX_SENSORS; i++) {
        dk_free(r->cams[i].rays);
        dk_free(r->cams[i].valid);
        dk_free(r->cams[i].tile);
    }
    dk_free(r->boxes);
    dk_free(r);
}

int dk_world_renderer_create(const dk_scenario *s, const dk_world_renderer_config *cfg,
                             dk_world_renderer **out)
{
    if (out) *out = NULL;
    if (!s || !out) return dk__error(DK_EINVAL, __func__, "NULL %s", s ? "out" : "scenario");
    dk_world_renderer_config def;
    if (!cfg) {
        dk_world_renderer_config_init(&def);
        cfg = &def;
    }
    if (!(cfg->ground_texel > 0) || !isfinite(cfg->ground_texel))
        return dk__error(DK_EINVAL, __func__, "ground_texel = %g: must be > 0", cfg->ground_texel);
    if (!(cfg->lidar_drop_prob >= 0 && cfg->lidar_drop_prob <= 1))
        return dk__error(DK_EINVAL, __func__, "lidar_drop_prob = %g: must be in [0, 1]",
                         cfg->lidar_drop_prob);
    if (s->rig.n_sensors < 0 || s->rig.n_sensors > DK_RIG_MAX_SENSORS)
        return dk__error(DK_EINVAL, __func__, "rig.n_sensors = %d", s->rig.n_sensors);
    for (int i = 0; i < s->n_actors; i++)
        if (s->actors[i].n_states < 1 || !s->actors[i].states)
            return dk__error(DK_EINVAL, __func__, "actors[%d]: no states", i);
    dk_world_renderer *r = dk_calloc(1, sizeof *r);
    if (!r) return dk__error(DK_ENOMEM, __func__, "out of memory");
    r->s = s;
    r->cfg = *cfg;
    double sun[3] = {0.42, 0.30, 0.86};
    double sn = sqrt(sun[0] * sun[0] + sun[1] * sun[1] + sun[2] * sun[2]);
    for (int k = 0; k < 3; k++) {
        r->sund[k] = sun[k] / sn;
        r->sun[k] = (float)r->sund[k];
    }
    for (int i = 0; i <= FOG_LUT + 1; i++) r->fog_lut[i] = (float)(1 - exp(-i * (double)FOG_STEP / FOG_DIST));

    /* Lattice of the ground's value noise, keyed by the seed. */
    dk_rng rng;
    dk_rng_init(&rng, cfg->seed, dk_rng_stream_id(0x6E6F697365ULL, 0, 0, 0));
    for (int i = 0; i < 256 * 256; i++) r->noise[i] = dk_rng_uniform(&rng);
    /* Lattice plus a coarse octave 8x larger, built so that the sum keeps the
       256-cell period (the coarse lattice is a 32 x 32 block that wraps). */
    for (int j = 0; j < 256; j++)
        for (int i = 0; i < 256; i++) {
            int ci = i >> 3, cj = j >> 3;
            float ax = (float)(i & 7) / 8.f, ay = (float)(j & 7) / 8.f;
#define COARSE(a, b) r->noise[((((b) & 31) + 64) << 8) | (((a) & 31) + 128)]
            float top = COARSE(ci, cj) + (COARSE(ci + 1, cj) - COARSE(ci, cj)) * ax;
            float bot = COARSE(ci, cj + 1) + (COARSE(ci + 1, cj + 1) - COARSE(ci, cj + 1)) * ax;
#undef COARSE
            r->macro[(j << 8) | i] = 0.6f * r->noise[(j << 8) | i] + 0.4f * (top + (bot - top) * ay);
        }

    int st = build_texture(r);
    if (!st) st = build_boxes(r);
    for (int i = 0; !st && i < s->rig.n_sensors; i++) {
        const dk_rig_sensor *sen = &s->rig.sensors[i];
        if (sen->kind != DK_SENSOR_CAMERA) continue;
        dk_camera cam = sen->camera;
        if (dk_camera_validate(&cam)) {
            char why[DK_ERRMSG_MAX];
            snprintf(why, sizeof why, "%s", dk_errmsg());
            st = dk__error(DK_EINVAL, __func__, "rig sensor %d (%s): %s", i, sen->name, why);
            break;
        }
        st = build_camera(&r->cams[i], &sen->camera);
    }
    if (st) {
        dk_world_renderer_destroy(r);
        if (st == DK_ENOMEM) return dk__error(DK_ENOMEM, __func__, "out of memory");
        return st;
    }
    *out = r;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Camera rendering                                                          */

typedef struct cam_slot {
    float rcw[9];             /* camera-to-world rotation */
    float o[3];               /* camera origin, world */
} cam_slot;

typedef struct box_xf {
    float m[9];               /* camera-frame direction -> box-frame direction */
    float o[3];               /* camera origin in the box frame */
    float l[3];               /* sun direction in the box frame */
    int valid;                /* the box exists at the slot's time */
} box_xf;

typedef struct band_item {
    int ci;                   /* candidate index */
    int x0, x1;               /* pixel columns that may see it */
    int sx0, sx1;             /* pixel columns that may see its shadow */
} band_item;

typedef struct cam_scratch {
    float *rays;              /* W * 3 (pinhole rows) */
    float *depth;             /* W */
    int32_t *hit;             /* W: candidate index, -1 ground, -2 sky, -3 invalid */
    uint8_t *face;            /* W */
    uint8_t *shadow;          /* W */
    band_item *items;         /* n_cand */
    cam_slot *bslots;         /* CAM_TILE */
    box_xf *bxf;              /* CAM_TILE * n_cand */
} cam_scratch;

enum { SLOTS_GLOBAL = 0, SLOTS_ROWS, SLOTS_COLS };

typedef struct cam_job {
    const dk_world_renderer *r;
    const dk_rig_sensor *sen;
    const dk_camera *cam;
    const cam_cache *cc;
    int W, H;
    int kind;                 /* SLOTS_* */
    double *slot_time;        /* per row / column / one */
    double t_lo, t_hi;        /* frame time range */
    int n_cand;
    int *cand;                /* box indices */
    cam_slot *slots;          /* precomputed for GLOBAL / COLS */
    box_xf *xf;               /* n_slots * n_cand, GLOBAL / COLS */
    float *pa, *pb;           /* pinhole: ray x per column, ray y per row */
    cam_scratch *scratch;     /* one per pool slot */
    uint8_t *rgb;
    int32_t *inst;
} cam_job;

/* Camera pose and the ray-to-box transforms of the listed candidates (all
 * of them when `all`) at one time. */
static void compute_slot_and_xfs(const cam_job *J, double t, cam_slot *sl, box_xf *xf,
                                 const band_item *items, int n_items, int all)
{
    const dk_world_renderer *r = J->r;
    double rcw[9], o[3];
    sensor_to_world(r->s, J->sen, t, rcw, o);
    for (int k = 0; k < 9; k++) sl->rcw[k] = (float)rcw[k];
    for (int k = 0; k < 3; k++) sl->o[k] = (float)o[k];
    int n = all ? J->n_cand : n_items;
    for (int q = 0; q < n; q++) {
        int ci = all ? q : items[q].ci;
        box_xf *x = &xf[ci];
        const rbox *b = &r->boxes[J->cand[ci]];
        double rbw[9], c[3];
        x->valid = box_at(r->s, b, t, rbw, c);
        if (!x->valid) continue;
        double d[3] = {o[0] - c[0], o[1] - c[1], o[2] - c[2]}, ob[3];
        mul_rt(rbw, d, ob);
        for (int k = 0; k < 3; k++) x->o[k] = (float)ob[k];
        double lb[3];
        mul_rt(rbw, r->sund, lb);
        for (int k = 0; k < 3; k++) x->l[k] = (float)lb[k];
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                x->m[3 * i + j] = (float)(rbw[i] * rcw[j] + rbw[3 + i] * rcw[3 + j] +
                                          rbw[6 + i] * rcw[6 + j]);
    }
}

/* Slab test of the ray o + t d against the box [-h, h]. Returns the entry
 * distance (in units of |d|), or INFINITY; *face = 2 * axis + (normal > 0). */
static inline float slab(const float o[3], const float d[3], const float h[3], int *face)
{
    float tn = -INFINITY, tf = INFINITY;
    int f = 0;
    for (int k = 0; k < 3; k++) {
        if (d[k] == 0.f) {
            if (o[k] < -h[k] || o[k] > h[k]) return INFINITY;
            continue;
        }
        float inv = 1.f / d[k];
        float t1 = (-h[k] - o[k]) * inv, t2 = (h[k] - o[k]) * inv;
        float lo = t1 < t2 ? t1 : t2, hi = t1 < t2 ? t2 : t1;
        if (lo > tn) {
            tn = lo;
            f = 2 * k + (d[k] < 0);
        }
        if (hi < tf) tf = hi;
    }
    if (tn > tf || tn <= 0) return INFINITY;
    *face = f;
    return tn;
}

static inline float smooth01(float x)
{
    return x <= 0 ? 0 : x >= 1 ? 1 : x * x * (3 - 2 * x);
}

/* dk__world_box_paint, inlined into the shading loop. */
static inline int box_paint(int kind, int cls, const float half[3], const float col[3],
                            const float col2[3], int axis, int sign, const float p[3],
                            float out[3])
{
    const float *c = col;
    float u = p[0] / half[0], v = p[1] / half[1], w = p[2] / half[2];
    static const float dark[3] = {22, 22, 24};
    static const float skin[3] = {196, 150, 120};
    static const float truck_glass[3] = {38, 48, 58};
    memcpy(out, c, 3 * sizeof(float));
    switch (kind) {
    case DK__PAINT_POLE: return 0;
    case DK__PAINT_SIGN:
        if (axis == 0 && sign > 0) {
            /* front face: coloured with a white border */
            if (fabsf(v) > 0.82f || fabsf(w) > 0.82f) out[0] = out[1] = out[2] = 232;
        } else {
            memcpy(out, col2, 3 * sizeof(float));
        }
        return 0;
    case DK__PAINT_LIGHT:
        if (axis == 0 && sign > 0 && fabsf(v) < 0.6f) {
            static const float lamp[3][3] = {{150, 30, 24}, {150, 110, 20}, {60, 230, 120}};
            for (int i = 0; i < 3; i++) {
                float wc = 0.6f - 0.6f * (float)i;
                float dz = (w - wc) * half[2], dy = v * half[1];
                if (dz * dz + dy * dy < 0.09f * half[1] * half[1] * 4) {
                    memcpy(out, lamp[i], sizeof lamp[i]);
                    return 0;
                }
            }
        }
        return 0;
    default: break;
    }
    float hx = half[0], hz = half[2];
    switch (cls) {
    case DK_CLASS_CAR:
    case DK_CLASS_BUS:
    case DK_CLASS_TRUCK:
    case DK_CLASS_TRAILER:
    case DK_CLASS_CONSTRUCTION_VEHICLE: {
        /* wheels on the sides */
        if (axis == 1) {
            float rw = fminf(0.36f, 0.45f * hz);
            float zc = -hz + rw;
            float xs[2] = {hx - fminf(0.9f, 0.3f * hx), -hx + fminf(0.9f, 0.3f * hx)};
            for (int i = 0; i < 2; i++) {
                float dx = p[0] - xs[i], dz = p[2] - zc;
                if (dx * dx + dz * dz < rw * rw) {
                    memcpy(out, dark, sizeof dark);
                    if (dx * dx + dz * dz < 0.25f * rw * rw) out[0] = out[1] = out[2] = 120;
                    return 0;
                }
            }
        }
        if (w < -0.85f && axis != 2) {
            for (int k = 0; k < 3; k++) out[k] = 0.45f * c[k];
            return 0;
        }
        int win = 0;
        if (cls == DK_CLASS_CAR) {
            win = axis != 2 && w > 0.18f && w < 0.82f &&
                  (axis == 0 ? fabsf(v) < 0.86f : fabsf(u) < 0.78f);
        } else if (cls == DK_CLASS_BUS) {
            win = axis != 2 && w > -0.05f && w < 0.7f &&
                  (axis == 0 ? fabsf(v) < 0.9f : fabsf(u) < 0.93f);
        } else if (cls == DK_CLASS_TRUCK || cls == DK_CLASS_CONSTRUCTION_VEHICLE) {
            float cab = hx - fminf(2.2f, 0.5f * hx);
            int in_cab = p[0] > cab;
            if (!in_cab && cls == DK_CLASS_TRUCK) memcpy(out, col2, 3 * sizeof(float));
            win = in_cab && w > 0.25f && w < 0.8f &&
                  ((axis == 0 && sign > 0 && fabsf(v) < 0.88f) || (axis == 1 && p[0] > cab + 0.2f));
        }
        if (!win) return 0;
        /* glass reflects a little sky towards the top */
        float g = smooth01((w - 0.2f) * 1.6f);
        const float *base = cls == DK_CLASS_TRUCK ? truck_glass : col2;
        out[0] = base[0] + 30 * g;
        out[1] = base[1] + 38 * g;
        out[2] = base[2] + 48 * g;
        return 1;
    }
    case DK_CLASS_PEDESTRIAN:
        if (w > 0.72f) memcpy(out, skin, sizeof skin);
        else if (w < -0.08f) memcpy(out, col2, 3 * sizeof(float));
        return 0;
    case DK_CLASS_BICYCLE:
    case DK_CLASS_MOTORCYCLE:
        if (w > 0.78f) memcpy(out, cls == DK_CLASS_MOTORCYCLE ? dark : skin, 3 * sizeof(float));
        else if (w < -0.2f) {
            if (cls == DK_CLASS_MOTORCYCLE) memcpy(out, c, 3 * sizeof(float));
            else memcpy(out, dark, sizeof dark);
        } else if (cls == DK_CLASS_MOTORCYCLE) memcpy(out, col2, 3 * sizeof(float));
        return 0;
    case DK_CLASS_TRAFFIC_CONE:
        if (w > -0.1f && w < 0.3f) memcpy(out, col2, 3 * sizeof(float));
        if (w < -0.85f) out[0] = out[1] = out[2] = 30;
        return 0;
    case DK_CLASS_BARRIER:
        if ((int)floorf((p[0] + p[1] + 10.f) * 2.f) & 1) memcpy(out, col2, 3 * sizeof(float));
        return 0;
    default:
        return 0;
    }
}

int dk__world_box_paint(int kind, int cls, const float half[3], const float col[3],
                        const float col2[3], int axis, int sign, const float p[3], float out[3])
{
    return box_paint(kind, cls, half, col, col2, axis, sign, p, out);
}

static inline uint8_t to_u8(float v)
{
    /* branch-free: the compiler turns these into min/max instructions */
    v = v > 0.f ? v : 0.f;
    v = v < 255.f ? v : 255.f;
    return (uint8_t)(int)(v + 0.5f);
}

/* Tile columns [first, last] of a row of tile cones that may see a sphere
 * (c, rad) in the camera frame; returns 0 if none. */
static int sphere_columns(const cam_cache *cc, const float *trow, const double c[3], double rad,
                          int *first, int *last)
{
    double dist = sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]);
    *first = -1;
    if (dist <= rad) {
        *first = 0;
        *last = cc->ntx - 1;
        return 1;
    }
    double sb = rad / dist, cb = sqrt(1 - sb * sb);
    double cn[3] = {c[0] / dist, c[1] / dist, c[2] / dist};
    for (int tx = 0; tx < cc->ntx; tx++) {
        const float *t = &trow[6 * tx];
        if (!t[5]) continue;
        double dot = t[0] * cn[0] + t[1] * cn[1] + t[2] * cn[2];
        if (cone_pass(dot, t[3], t[4], cb, sb)) {
            if (*first < 0) *first = tx;
            *last = tx;
        }
    }
    return *first >= 0;
}

/* Culls the job's candidates for one band of rows (times ta..tb): the pixel
 * columns that may see each box, and those that may see its shadow. */
static int band_items(const cam_job *J, int band, double ta, double tb, band_item *items)
{
    const dk_world_renderer *r = J->r;
    const cam_cache *cc = J->cc;
    double pr[3][9], po[3][3];
    sensor_poses3(r->s, J->sen, ta, tb, pr, po);
    int n = 0;
    const float *trow = &cc->tile[6 * (size_t)band * cc->ntx];
    for (int ci = 0; ci < J->n_cand; ci++) {
        const rbox *b = &r->boxes[J->cand[ci]];
        double c[3], rad, cs[3], rads;
        int f0 = 0, l0 = -1, f1 = 0, l1 = -1;
        if (!motion_sphere(r->s, b, ta, tb, pr, po, r->sund, c, &rad, cs, &rads)) continue;
        int vis = sphere_columns(cc, trow, c, rad, &f0, &l0);
        int shd = sphere_columns(cc, trow, cs, rads, &f1, &l1);
        if (!vis && !shd) continue;
        band_item *it = &items[n++];
        it->ci = ci;
        it->x0 = it->x1 = it->sx0 = it->sx1 = 0;
        if (vis) {
            it->x0 = f0 * CAM_TILE;
            it->x1 = (l0 + 1) * CAM_TILE < J->W ? (l0 + 1) * CAM_TILE : J->W;
        }
        if (shd) {
            it->sx0 = f1 * CAM_TILE;
            it->sx1 = (l1 + 1) * CAM_TILE < J->W ? (l1 + 1) * CAM_TILE : J->W;
        }
    }
    return n;
}

/* Does the ray p + s l (s > 0) meet the box [-h, h]? */
static inline int shadow_ray(const float p[3], const float l[3], const float h[3])
{
    float tn = 0.f, tf = INFINITY;
    for (int k = 0; k < 3; k++) {
        if (l[k] == 0.f) {
            if (p[k] < -h[k] || p[k] > h[k]) return 0;
            continue;
        }
        float inv = 1.f / l[k];
        float t1 = (-h[k] - p[k]) * inv, t2 = (h[k] - p[k]) * inv;
        float lo = t1 < t2 ? t1 : t2, hi = t1 < t2 ? t2 : t1;
        if (lo > tn) tn = lo;
        if (hi < tf) tf = hi;
    }
    return tn <= tf;
}

static void shade_row(const cam_job *J, int y, const cam_slot *slot0, int sx, const box_xf *xf0,
                      const float *rays, const uint8_t *valid, cam_scratch *S, int n_items,
                      const band_item *items)
{
    const dk_world_renderer *r = J->r;
    const int W = J->W, nc = J->n_cand;
    float *depth = S->depth;
    int32_t *hit = S->hit;
    uint8_t *face = S->face;

    /* ground / sky */
    for (int x = 0; x < W; x++) {
        if (valid && !valid[x]) {
            depth[x] = INFINITY;
            hit[x] = -3;
            continue;
        }
        const cam_slot *sl = slot0 + (size_t)x * sx;
        const float *d = &rays[3 * x];
        float dz = sl->rcw[6] * d[0] + sl->rcw[7] * d[1] + sl->rcw[8] * d[2];
        float tg = -sl->o[2] / dz;
        if (dz != 0.f && tg > 0.f) {
            depth[x] = tg;
            hit[x] = -1;
        } else {
            depth[x] = INFINITY;
            hit[x] = -2;
        }
    }
    /* boxes */
    for (int q = 0; q < n_items; q++) {
        const band_item *it = &items[q];
        const rbox *b = &r->boxes[J->cand[it->ci]];
        for (int x = it->x0; x < it->x1; x++) {
            if (hit[x] == -3) continue;
            const box_xf *X = xf0 + (size_t)x * sx * nc + it->ci;
            if (!X->valid) continue;
            const float *d = &rays[3 * x];
            float db[3] = {X->m[0] * d[0] + X->m[1] * d[1] + X->m[2] * d[2],
                           X->m[3] * d[0] + X->m[4] * d[1] + X->m[5] * d[2],
                           X->m[6] * d[0] + X->m[7] * d[1] + X->m[8] * d[2]};
            int f = 0;
            float tb = slab(X->o, db, b->half, &f);
            if (tb < depth[x]) {
                depth[x] = tb;
                hit[x] = it->ci;
                face[x] = (uint8_t)f;
            }
        }
    }
    /* sun shadows on the ground */
    memset(S->shadow, 0, (size_t)W);
    for (int q = 0; q < n_items; q++) {
        const band_item *it = &items[q];
        const rbox *b = &r->boxes[J->cand[it->ci]];
        for (int x = it->sx0; x < it->sx1; x++) {
            if (hit[x] != -1 || S->shadow[x]) continue;
            const box_xf *X = xf0 + (size_t)x * sx * nc + it->ci;
            if (!X->valid) continue;
            const float *d = &rays[3 * x];
            float t = depth[x];
            float p[3] = {X->o[0] + t * (X->m[0] * d[0] + X->m[1] * d[1] + X->m[2] * d[2]),
                          X->o[1] + t * (X->m[3] * d[0] + X->m[4] * d[1] + X->m[5] * d[2]),
                          X->o[2] + t * (X->m[6] * d[0] + X->m[7] * d[1] + X->m[8] * d[2])};
            if (shadow_ray(p, X->l, b->half)) S->shadow[x] = 1;
        }
    }
    /* shading */
    uint8_t *out = J->rgb + (size_t)y * W * 3;
    int32_t *inst = J->inst ? J->inst + (size_t)y * W : NULL;
    const float *L = r->sun;
    for (int x = 0; x < W; x++) {
        const cam_slot *sl = slot0 + (size_t)x * sx;
        const float *d = &rays[3 * x];
        float col[3];
        int32_t id = 0;
        int h = hit[x];
        if (h == -3) {
            out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = 0;
            if (inst) inst[x] = 0;
            continue;
        }
        float dw[3] = {sl->rcw[0] * d[0] + sl->rcw[1] * d[1] + sl->rcw[2] * d[2],
                       sl->rcw[3] * d[0] + sl->rcw[4] * d[1] + sl->rcw[5] * d[2],
                       sl->rcw[6] * d[0] + sl->rcw[7] * d[1] + sl->rcw[8] * d[2]};
        float dn = sqrtf(dw[0] * dw[0] + dw[1] * dw[1] + dw[2] * dw[2]);
        float dist = depth[x] * dn;
        if (h == -2 || dist > 20000.f) {
            float e = clampf(dw[2] / dn, 0.f, 1.f);
            float g = sqrtf(e);
            for (int k = 0; k < 3; k++) col[k] = SKY_HORIZON[k] + (SKY_ZENITH[k] - SKY_HORIZON[k]) * g;
            out[3 * x] = to_u8(col[0]);
            out[3 * x + 1] = to_u8(col[1]);
            out[3 * x + 2] = to_u8(col[2]);
            if (inst) inst[x] = 0;
            continue;
        }
        if (h == -1) {
            float px = sl->o[0] + depth[x] * dw[0], py = sl->o[1] + depth[x] * dw[1];
            float tx[4];
            tex_sample(&r->tex, px, py, tx);
            float n = noise2(r->macro, px * 0.9f, py * 0.9f);
            float fine_w = clampf(1.5f - dist * (1.f / 25.f), 0.f, 1.f);
            if (fine_w > 0) n += fine_w * 0.6f * (noise2(r->noise, px * 11.f + 7.f, py * 11.f + 3.f) - 0.5f);
            float lum = (S->shadow[x] ? AMBIENT_SHADOW : AMBIENT + DIFFUSE * L[2]) *
                        (0.86f + 0.28f * (n - 0.5f));
            for (int k = 0; k < 3; k++) col[k] = tx[k] * lum;
        } else {
            const rbox *b = &r->boxes[J->cand[h]];
            const box_xf *X = xf0 + (size_t)x * sx * nc + h;
            id = b->id;
            int f = face[x], axis = f >> 1;
            float db[3] = {X->m[0] * d[0] + X->m[1] * d[1] + X->m[2] * d[2],
                           X->m[3] * d[0] + X->m[4] * d[1] + X->m[5] * d[2],
                           X->m[6] * d[0] + X->m[7] * d[1] + X->m[8] * d[2]};
            float p[3] = {X->o[0] + depth[x] * db[0], X->o[1] + depth[x] * db[1],
                          X->o[2] + depth[x] * db[2]};
            float sgn = (f & 1) ? 1.f : -1.f;
            /* world normal: box axis `axis` = row `axis` of m, rotated to world */
            const float *ma = &X->m[3 * axis];
            float nw[3];
            for (int k = 0; k < 3; k++)
                nw[k] = sgn * (sl->rcw[3 * k] * ma[0] + sl->rcw[3 * k + 1] * ma[1] +
                               sl->rcw[3 * k + 2] * ma[2]);
            float ndl = nw[0] * L[0] + nw[1] * L[1] + nw[2] * L[2];
            float lum = AMBIENT + DIFFUSE * (ndl > 0 ? ndl : 0) + 0.08f * nw[2];
            box_paint(b->mat, b->cls, b->half, b->col, b->col2, f >> 1, (f & 1) ? 1 : -1, p, col);
            for (int k = 0; k < 3; k++) col[k] *= lum;
        }
        float fog;
        {
            float fi = dist * (1.f / FOG_STEP);
            if (fi >= (float)FOG_LUT) {
                fog = r->fog_lut[FOG_LUT];
            } else {
                int i0 = (int)fi;
                fog = r->fog_lut[i0] + (r->fog_lut[i0 + 1] - r->fog_lut[i0]) * (fi - (float)i0);
            }
        }
        for (int k = 0; k < 3; k++) col[k] += (HAZE[k] - col[k]) * fog;
        out[3 * x] = to_u8(col[0]);
        out[3 * x + 1] = to_u8(col[1]);
        out[3 * x + 2] = to_u8(col[2]);
        if (inst) inst[x] = id;
    }
}

static void render_band(void *ctx, int64_t begin, int64_t end, int ith)
{
    const cam_job *J = ctx;
    cam_scratch *S = &J->scratch[ith];
    const cam_cache *cc = J->cc;
    const int W = J->W;
    for (int64_t band = begin; band < end; band++) {
        int y0 = (int)band * CAM_TILE, y1 = y0 + CAM_TILE < J->H ? y0 + CAM_TILE : J->H;
        double ta, tb;
        if (J->kind == SLOTS_ROWS) {
            ta = fmin(J->slot_time[y0], J->slot_time[y1 - 1]);
            tb = fmax(J->slot_time[y0], J->slot_time[y1 - 1]);
        } else {
            ta = J->t_lo;
            tb = J->t_hi;
        }
        int n_items = band_items(J, (int)band, ta, tb, S->items);
        for (int y = y0; y < y1; y++) {
            const cam_slot *slot0;
            const box_xf *xf0;
            int sx = 0;
            if (J->kind == SLOTS_ROWS) {
                cam_slot *sl = &S->bslots[y - y0];
                box_xf *xf = &S->bxf[(size_t)(y - y0) * J->n_cand];
                compute_slot_and_xfs(J, J->slot_time[y], sl, xf, S->items, n_items, 0);
                slot0 = sl;
                xf0 = xf;
            } else {
                slot0 = J->slots;
                xf0 = J->xf;
                sx = J->kind == SLOTS_COLS ? 1 : 0;
            }
            const float *rays;
            const uint8_t *valid = NULL;
            if (cc->rays) {
                rays = cc->rays + (size_t)y * W * 3;
                valid = cc->valid + (size_t)y * W;
            } else {
                float *rr = S->rays;
                float b = J->pb[y];
                for (int x = 0; x < W; x++) {
                    rr[3 * x] = J->pa[x];
                    rr[3 * x + 1] = b;
                    rr[3 * x + 2] = 1.f;
                }
                rays = rr;
            }
            shade_row(J, y, slot0, sx, xf0, rays, valid, S, n_items, S->items);
        }
    }
}

static void precompute_slots(void *ctx, int64_t begin, int64_t end, int ith)
{
    (void)ith;
    const cam_job *J = ctx;
    for (int64_t i = begin; i < end; i++)
        compute_slot_and_xfs(J, J->slot_time[i], &J->slots[i], &J->xf[(size_t)i * J->n_cand], NULL,
                             0, 1);
}

/* Frame-level culling: boxes that may be seen at all during [t_lo, t_hi]. */
static int frame_candidates(const dk_world_renderer *r, const dk_rig_sensor *sen,
                            const cam_cache *cc, double ta, double tb, int *cand)
{
    double pr[3][9], po[3][3];
    sensor_poses3(r->s, sen, ta, tb, pr, po);
    int n = 0;
    for (int i = 0; i < r->n_boxes; i++) {
        const rbox *b = &r->boxes[i];
        double c[3], rad, cs[3], rads;
        if (!motion_sphere(r->s, b, ta, tb, pr, po, r->sund, c, &rad, cs, &rads)) continue;
        double dist = sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]);
        if (dist - rad > MAX_VIEW_DIST) continue;
        if (!cc->whole_sphere &&
            !cone_hits_sphere(cc->axis, cc->cos_half, cc->sin_half, c, rad) &&
            !cone_hits_sphere(cc->axis, cc->cos_half, cc->sin_half, cs, rads))
            continue;
        cand[n++] = i;
    }
    return n;
}

int dk_world_render_camera(const dk_world_renderer *r, int sensor, double t, dk_pool *pool,
                           dk_tensor *rgb, dk_tensor *instance)
{
    if (rgb) memset(rgb, 0, sizeof *rgb);
    if (instance) memset(instance, 0, sizeof *instance);
    if (!r || !rgb) return dk__error(DK_EINVAL, __func__, "NULL %s", r ? "rgb" : "renderer");
    const dk_scenario *s = r->s;
    if (sensor < 0 || sensor >= s->rig.n_sensors)
        return dk__error(DK_EINVAL, __func__, "sensor %d: the rig has %d sensors", sensor,
                         s->rig.n_sensors);
    const dk_rig_sensor *sen = &s->rig.sensors[sensor];
    if (sen->kind != DK_SENSOR_CAMERA)
        return dk__error(DK_EINVAL, __func__, "sensor %d (%s) is not a camera", sensor, sen->name);
    if (!isfinite(t)) return dk__error(DK_EINVAL, __func__, "t = %g is not finite", t);
    const dk_camera *cam = &sen->camera;
    const cam_cache *cc = &r->cams[sensor];
    if (cc->w != cam->width || cc->h != cam->height || !cc->tile)
        return dk__error(DK_EINVAL, __func__,
                         "sensor %d (%s): camera changed after the renderer was created", sensor,
                         sen->name);
    const int W = cam->width, H = cam->height;
    double readout = isfinite(sen->readout_time) && sen->readout_time > 0 ? sen->readout_time : 0;

    cam_job J;
    memset(&J, 0, sizeof J);
    J.r = r;
    J.sen = sen;
    J.cam = cam;
    J.cc = cc;
    J.W = W;
    J.H = H;
    int n_slots = 1;
    if (readout > 0 && (cam->shutter == DK_SHUTTER_TOP_TO_BOTTOM ||
                        cam->shutter == DK_SHUTTER_BOTTOM_TO_TOP)) {
        J.kind = SLOTS_ROWS;
        n_slots = H;
    } else if (readout > 0 && (cam->shutter == DK_SHUTTER_LEFT_TO_RIGHT ||
                               cam->shutter == DK_SHUTTER_RIGHT_TO_LEFT)) {
        J.kind = SLOTS_COLS;
        n_slots = W;
    } else {
        J.kind = SLOTS_GLOBAL;
    }
    int st = DK_OK;
    int nth = dk_pool_size(pool);
    int n_boxes = r->n_boxes;
    size_t n_cand_max = (size_t)(n_boxes > 0 ? n_boxes : 1);
    J.slot_time = dk_malloc(sizeof(double) * (size_t)n_slots);
    J.cand = dk_malloc(sizeof(int) * n_cand_max);
    J.scratch = dk_calloc((size_t)nth, sizeof *J.scratch);
    if (!J.slot_time || !J.cand || !J.scratch) goto nomem;
    J.t_lo = INFINITY;
    J.t_hi = -INFINITY;
    for (int i = 0; i < n_slots; i++) {
        double uv[2] = {0.5, 0.5};
        if (J.kind == SLOTS_ROWS) uv[1] = i + 0.5;
        if (J.kind == SLOTS_COLS) uv[0] = i + 0.5;
        double ts = J.kind == SLOTS_GLOBAL ? t : t + dk_camera_shutter_time(cam, uv) * readout;
        J.slot_time[i] = ts;
        J.t_lo = fmin(J.t_lo, ts);
        J.t_hi = fmax(J.t_hi, ts);
    }
    J.n_cand = frame_candidates(r, sen, cc, J.t_lo, J.t_hi, J.cand);
    size_t nc = (size_t)(J.n_cand > 0 ? J.n_cand : 1);
    if (J.kind != SLOTS_ROWS) {
        J.slots = dk_malloc(sizeof(cam_slot) * (size_t)n_slots);
        J.xf = dk_malloc(sizeof(box_xf) * (size_t)n_slots * nc);
        if (!J.slots || !J.xf) goto nomem;
    }
    if (!cc->rays) {
        J.pa = dk_malloc(sizeof(float) * (size_t)W);
        J.pb = dk_malloc(sizeof(float) * (size_t)H);
        if (!J.pa || !J.pb) goto nomem;
        for (int x = 0; x < W; x++) J.pa[x] = (float)((x + 0.5 - cam->cx) / cam->fx);
        for (int y = 0; y < H; y++) J.pb[y] = (float)((y + 0.5 - cam->cy) / cam->fy);
    }
    for (int i = 0; i < nth; i++) {
        cam_scratch *S = &J.scratch[i];
        S->rays = dk_malloc(sizeof(float) * 3 * (size_t)W);
        S->depth = dk_malloc(sizeof(float) * (size_t)W);
        S->hit = dk_malloc(sizeof(int32_t) * (size_t)W);
        S->face = dk_malloc((size_t)W);
        S->shadow = dk_malloc((size_t)W);
        S->items = dk_malloc(sizeof(band_item) * nc);
        S->bslots = dk_malloc(sizeof(cam_slot) * CAM_TILE);
        S->bxf = dk_malloc(sizeof(box_xf) * CAM_TILE * nc);
        if (!S->rays || !S->depth || !S->hit || !S->face || !S->shadow || !S->items ||
            !S->bslots || !S->bxf)
            goto nomem;
    }
    int64_t shape3[3] = {H, W, 3}, shape2[2] = {H, W};
    st = dk_tensor_empty(rgb, DK_U8, 3, shape3);
    if (st) goto fail;
    if (instance) {
        st = dk_tensor_empty(instance, DK_I32, 2, shape2);
        if (st) goto fail;
        J.inst = instance->data;
    }
    J.rgb = rgb->data;
    if (J.kind != SLOTS_ROWS) {
        st = dk_pool_for(pool, n_slots, 0, precompute_slots, &J);
        if (st) goto fail;
    }
    st = dk_pool_for(pool, cc->nty, 1, render_band, &J);
    if (st) goto fail;
    goto cleanup;
nomem:
    st = dk__error(DK_ENOMEM, __func__, "out of memory");
fail:
    dk_tensor_release(rgb);
    if (instance) dk_tensor_release(instance);
cleanup:
    if (J.scratch) {
        for (int i = 0; i < nth; i++) {
            cam_scratch *S = &J.scratch[i];
            dk_free(S->rays);
            dk_free(S->depth);
            dk_free(S->hit);
            dk_free(S->face);
            dk_free(S->shadow);
            dk_free(S->items);
            dk_free(S->bslots);
            dk_free(S->bxf);
        }
    }
    dk_free(J.scratch);
    dk_free(J.slot_time);
    dk_free(J.cand);
    dk_free(J.slots);
    dk_free(J.xf);
    dk_free(J.pa);
    dk_free(J.pb);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Lidar                                                                     */

typedef struct lidar_job {
    const dk_world_renderer *r;
    const dk_rig_sensor *sen;
    const dk_lidar_model *m;
    double t;
    double l2w_r[9], l2w_o[3];   /* lidar-at-t pose (sensor-to-world) */
    uint64_t stream;
    double max_az_off;
    float *pts;                  /* n_chunks * LIDAR_CHUNK * n_beams * 5 */
    int32_t *ids;
    int *count;                  /* per chunk */
    int *cand_scratch;           /* nth * n_boxes */
    double *xf_scratch;          /* nth * n_boxes * 12 */
} lidar_job;

/* Double-precision slab test: the entry distance (negative when the ray starts
 * inside) and, in *tfar, the exit; INFINITY when the line misses the box. */
static double slab_d(const double o[3], const double d[3], const double h[3], int *axis,
                     double *tfar)
{
    double tn = -INFINITY, tf = INFINITY;
    int ax = 0;
    for (int k = 0; k < 3; k++) {
        if (d[k] == 0) {
            if (o[k] < -h[k] || o[k] > h[k]) return INFINITY;
            continue;
        }
        double inv = 1.0 / d[k];
        double t1 = (-h[k] - o[k]) * inv, t2 = (h[k] - o[k]) * inv;
        double lo = fmin(t1, t2), hi = fmax(t1, t2);
        if (lo > tn) {
            tn = lo;
            ax = k;
        }
        if (hi < tf) tf = hi;
    }
    if (tn > tf) return INFINITY;
    *axis = ax;
    if (tfar) *tfar = tf;
    return tn;
}

static void lidar_chunk(void *ctx, int64_t begin, int64_t end, int ith)
{
    const lidar_job *J = ctx;
    const dk_world_renderer *r = J->r;
    const dk_scenario *s = r->s;
    const dk_lidar_model *m = J->m;
    const int nb = m->n_beams;
    int *cand = J->cand_scratch + (size_t)ith * (r->n_boxes > 0 ? r->n_boxes : 1);
    double *xf = J->xf_scratch + (size_t)ith * (r->n_boxes > 0 ? r->n_boxes : 1) * 13;
    dk_rng rng;
    dk_rng_init(&rng, r->cfg.seed, J->stream);
    const double drop = r->cfg.lidar_drop_prob;
    for (int64_t chunk = begin; chunk < end; chunk++) {
        int c0 = (int)chunk * LIDAR_CHUNK;
        int c1 = c0 + LIDAR_CHUNK < m->n_columns ? c0 + LIDAR_CHUNK : m->n_columns;
        float *P = J->pts + (size_t)c0 * nb * 5;
        int32_t *ID = J->ids + (size_t)c0 * nb;
        int np = 0;
        double dir0[3], ta, tb;
        dk_lidar_ray(m, 0, c0, dir0, &ta);
        dk_lidar_ray(m, 0, c1 - 1, dir0, &tb);
        ta += J->t;
        tb += J->t;
        /* Boxes in the chunk's azimuth wedge. */
        double pr[3][9], po[3][3];
        sensor_poses3(s, J->sen, ta, tb, pr, po);
        double az_a = m->azimuth_start + m->direction * 2 * PI * c0 / m->n_columns;
        double az_b = m->azimuth_start + m->direction * 2 * PI * (c1 - 1) / m->n_columns;
        double az_mid = 0.5 * (az_a + az_b), az_half = 0.5 * fabs(az_b - az_a);
        int nc = 0;
        for (int i = 0; i < r->n_boxes; i++) {
            const rbox *b = &r->boxes[i];
            double c[3], rad;
            double cs_unused[3], rs_unused;
            if (!motion_sphere(s, b, ta, tb, pr, po, NULL, c, &rad, cs_unused, &rs_unused))
                continue;
            double dist = sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]);
            if (dist - rad > m->max_range) continue;
            double hd = hypot(c[0], c[1]);
            if (hd > rad) {
                double beta = asin(rad / hd);
                double daz = fabs(wrap_pi(atan2(c[1], c[0]) - az_mid));
                if (daz > az_half + beta + J->max_az_off + 1e-3) continue;
            }
            cand[nc++] = i;
        }
        for (int col = c0; col < c1; col++) {
            double dd[3], tcol;
            dk_lidar_ray(m, 0, col, dd, &tcol);
            tcol += J->t;
            double lr[9], lo[3];
            sensor_to_world(s, J->sen, tcol, lr, lo);
            /* per-column box transforms: Rbw (9), centre (3), valid */
            for (int q = 0; q < nc; q++) {
                double *X = &xf[13 * q];
                X[12] = box_at(s, &r->boxes[cand[q]], tcol, X, X + 9);
            }
            dk_pose ego_box = dk__ego_box_pose(s, tcol);
            double erb[9], eh[3] = {0.5 * s->ego.size[0], 0.5 * s->ego.size[1], 0.5 * s->ego.size[2]};
            dk_quat_to_rotation(ego_box.q, erb);
            double eo[3], d0[3] = {lo[0] - ego_box.t[0], lo[1] - ego_box.t[1], lo[2] - ego_box.t[2]};
            mul_rt(erb, d0, eo);
            for (int beam = 0; beam < nb; beam++) {
                uint64_t ray = (uint64_t)col * nb + beam;
                dk_rng_seek(&rng, ray * 4);
                uint32_t u_drop = dk_rng_u32(&rng), u_noise = dk_rng_u32(&rng);
                if (drop > 0 && (double)u_drop * 0x1.0p-32 < drop) continue;
                double ds[3], tdummy, d[3];
                dk_lidar_ray(m, beam, col, ds, &tdummy);
                mul_r(lr, ds, d);
                double best = INFINITY, cosi = 0, refl = 0;
                int32_t hid = 0;
                /* ground */
                if (d[2] != 0) {
                    double tg = -lo[2] / d[2];
                    if (tg > 0 && tg <= m->max_range) {
                        best = tg;
                        float tx[4];
                        tex_sample(&r->tex, (float)(lo[0] + tg * d[0]), (float)(lo[1] + tg * d[1]),
                                   tx);
                        refl = tx[3];
                        cosi = fabs(d[2]);
                    }
                }
                for (int q = 0; q < nc; q++) {
                    const double *X = &xf[13 * q];
                    if (X[12] == 0) continue;
                    const rbox *b = &r->boxes[cand[q]];
                    double ob[3], db[3], v[3] = {lo[0] - X[9], lo[1] - X[10], lo[2] - X[11]};
                    mul_rt(X, v, ob);
                    mul_rt(X, d, db);
                    double h[3] = {b->half[0], b->half[1], b->half[2]};
                    int ax = 0;
                    double th = slab_d(ob, db, h, &ax, NULL);
                    if (th > 0 && th < best) {
                        best = th;
                        hid = b->id;
                        refl = b->refl;
                        cosi = fabs(db[ax]);
                    }
                }
                if (!(best >= m->min_range && best <= m->max_range)) continue;
                /* Self-hits: the ego's own box is not hit (rays pass through
                   the body, as the real roof-mounted sensor sees past it), and
                   no point inside it is returned (nuScenes removes those). */
                {
                    double eb[3];
                    mul_rt(erb, d, eb);
                    int ax = 0;
                    double tfar = -INFINITY;
                    double te = slab_d(eo, eb, eh, &ax, &tfar);
                    if (te < INFINITY && best >= te - 1e-6 && best <= tfar + 1e-6) continue;
                }
                double pw[3] = {lo[0] + best * d[0], lo[1] + best * d[1], lo[2] + best * d[2]};
                double v[3] = {pw[0] - J->l2w_o[0], pw[1] - J->l2w_o[1], pw[2] - J->l2w_o[2]}, pl[3];
                mul_rt(J->l2w_r, v, pl);
                double noise = ((double)u_noise * 0x1.0p-32 - 0.5) * 4.0;
                double inten = clampd(refl * cosi + noise, 0, 255);
                float *o = &P[5 * (size_t)np];
                o[0] = (float)pl[0];
                o[1] = (float)pl[1];
                o[2] = (float)pl[2];
                o[3] = (float)inten;
                o[4] = (float)beam;
                ID[np] = hid;
                np++;
            }
        }
        J->count[chunk] = np;
    }
}

int dk_world_render_lidar(const dk_world_renderer *r, int sensor, double t, dk_pool *pool,
                          dk_tensor *points, dk_tensor *point_actor)
{
    if (points) memset(points, 0, sizeof *points);
    if (point_actor) memset(point_actor, 0, sizeof *point_actor);
    if (!r || !points) return dk__error(DK_EINVAL, __func__, "NULL %s", r ? "points" : "renderer");
    const dk_scenario *s = r->s;
    if (sensor < 0 || sensor >= s->rig.n_sensors)
        return dk__error(DK_EINVAL, __func__, "sensor %d: the rig has %d sensors", sensor,
                         s->rig.n_sensors);
    const dk_rig_sensor *sen = &s->rig.sensors[sensor];
    if (sen->kind != DK_SENSOR_LIDAR)
        return dk__error(DK_EINVAL, __func__, "sensor %d (%s) is not a lidar", sensor, sen->name);
    if (!isfinite(t)) return dk__error(DK_EINVAL, __func__, "t = %g is not finite", t);
    const dk_lidar_model *m = &sen->lidar;
    int st = dk_lidar_model_validate(m);
    if (st) return st;

    lidar_job J;
    memset(&J, 0, sizeof J);
    J.r = r;
    J.sen = sen;
    J.m = m;
    J.t = t;
    sensor_to_world(s, sen, t, J.l2w_r, J.l2w_o);
    J.stream = dk_rng_stream_id(0x6C69646172ULL, (uint64_t)llround(t * 1e6), (uint64_t)sensor, 0);
    for (int b = 0; b < m->n_beams; b++)
        if (fabs(m->azimuth_offset[b]) > J.max_az_off) J.max_az_off = fabs(m->azimuth_offset[b]);
    int nth = dk_pool_size(pool);
    int n_chunks = (m->n_columns + LIDAR_CHUNK - 1) / LIDAR_CHUNK;
    size_t n_rays = (size_t)m->n_columns * m->n_beams;
    size_t nbx = (size_t)(r->n_boxes > 0 ? r->n_boxes : 1);
    J.pts = dk_malloc(sizeof(float) * 5 * n_rays);
    J.ids = dk_malloc(sizeof(int32_t) * n_rays);
    J.count = dk_calloc((size_t)n_chunks, sizeof(int));
    J.cand_scratch = dk_malloc(sizeof(int) * nbx * (size_t)nth);
    J.xf_scratch = dk_malloc(sizeof(double) * 13 * nbx * (size_t)nth);
    if (!J.pts || !J.ids || !J.count || !J.cand_scratch || !J.xf_scratch) {
        st = dk__error(DK_ENOMEM, __func__, "out of memory");
        goto done;
    }
    st = dk_pool_for(pool, n_chunks, 1, lidar_chunk, &J);
    if (st) goto done;
    int64_t total = 0;
    for (int c = 0; c < n_chunks; c++) total += J.count[c];
    int64_t shape[2] = {total, DK_LIDAR_FIELDS};
    st = dk_tensor_alloc(points, DK_F32, 2, shape);
    if (st) goto done;
    if (point_actor) {
        st = dk_tensor_alloc(point_actor, DK_I32, 1, shape);
        if (st) {
            dk_tensor_release(points);
            goto done;
        }
    }
    {
        float *dst = points->data;
        int32_t *dst_id = point_actor ? point_actor->data : NULL;
        int64_t k = 0;
        for (int c = 0; c < n_chunks; c++) {
            size_t src = (size_t)c * LIDAR_CHUNK * m->n_beams;
            memcpy(dst + 5 * k, J.pts + 5 * src, sizeof(float) * 5 * (size_t)J.count[c]);
            if (dst_id) memcpy(dst_id + k, J.ids + src, sizeof(int32_t) * (size_t)J.count[c]);
            k += J.count[c];
        }
    }
done:
    dk_free(J.pts);
    dk_free(J.ids);
    dk_free(J.count);
    dk_free(J.cand_scratch);
    dk_free(J.xf_scratch);
    return st;
}
