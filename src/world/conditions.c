/*
 * Condition videos for driving world models: HD map + 3-D boxes rendered per
 * camera following the Cosmos-Drive-Dreams rules (reference section A3).
 *
 * Exact rules of this implementation (where the reference leaves room):
 *
 *   Cameras. DK_CAM_PINHOLE takes the rig camera's fx, fy, cx, cy (any
 *   distortion dropped) scaled by width / W and height / H. DK_CAM_FTHETA is
 *   an equidistant f-theta (ANGLE_TO_PIXELDIST, fw_poly = f * angle, identity
 *   linear term) centred in the image, f = (width / 2) / (fov / 2), with
 *   max_angle one pixel past the image corner (capped at 179 degrees). Both
 *   sit at ego_pose(t) * sensor_to_ego, global shutter.
 *
 *   Canvases. Every map layer is drawn on its own canvas; inside one canvas a
 *   later primitive overwrites an earlier one (as cv2 drawing does), canvases
 *   are merged into the frame by per-channel max. All actor boxes share one
 *   canvas, drawn in increasing actor id order and max-merged last. The ego is
 *   never drawn. Layers without a Cosmos colour (drivable area, sidewalks) are
 *   ignored even when their bit is set.
 *
 *   Depth. Pinhole views measure depth as camera z; f-theta views as the
 *   Euclidean distance from the camera centre (z says little at 60 degrees off
 *   axis). The faded colour is round_half_even(c * 2 (dmax - clip(d, 0, dmax))
 *   / 255), saturated to 0..255 (OpenCV's saturate_cast of a float colour).
 *
 *   Camera plane. Pinhole views, and f-theta views whose max_angle is at most
 *   90 degrees, keep z >= 0.2 m: a segment crossing the plane is cut at the
 *   parametric point where z = 0.2. Wider f-theta views keep the cone angle <=
 *   max_angle instead and cut crossing segments at the cone (bisection); a
 *   segment with both ends outside the cone is dropped.
 *
 *   Polylines (map polylines and the 16-point box edge polylines).
 *   Lanelines and road boundaries are first resampled by arc length at 0,
 *   step, 2 step, ... plus their last point. A polyline is skipped when none
 *   of its points is both in front and projects inside the image [0, W) x
 *   [0, H), or when its nearest point is deeper than depth_max. Each segment is
 *   cut at the camera plane, coloured by the mean depth of its two (cut)
 *   endpoints, projected, and drawn as a capsule: every pixel whose centre
 *   (i + 0.5, j + 0.5) lies within thickness / 2 of the projected segment
 *   (closed: distance <= thickness / 2). A horizontal line on a pixel
 *   boundary therefore covers exactly `thickness` rows when thickness is even
 *   (thickness + 1 when odd); one through pixel centres covers thickness + 1
 *   rows when even (thickness when odd). Before rasterising, the segment is clipped to the
 *   image grown by thickness / 2 + 1, which changes no pixel inside the image.
 *
 *   Polygons (closed by repeating the first vertex) and cuboids (their 16-point
 *   edge polyline [0,1,2,3,0,4,5,6,7,4,5,1,2,6,7,3]): the point list is cut at
 *   the camera plane (points in front are kept, crossing edges add their cut
 *   point), coloured by the mean depth of that list, projected, convex-hulled,
 *   clipped to the image rectangle [0, W] x [0, H] (Sutherland-Hodgman) and
 *   filled: every pixel whose centre lies inside or on the clipped hull.
 *   Degenerate hulls (fewer than 3 vertices or collinear) draw nothing.
 *
 * A 3-D straight segment is drawn as the straight 2-D segment between its
 * projected endpoints, also under f-theta (like the reference; the 0.8 m
 * resampling keeps lane lines close to their true curves).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "world_impl.h"

#define CLIP_EPS 0.2          /* camera-plane clipping depth, metres */
#define N_COSMOS_LAYERS 9     /* layers with a Cosmos colour: the first nine */
#define ROUND_FRAMES 8        /* frames per camera between progress reports */

static const uint8_t layer_colour[N_COSMOS_LAYERS][3] = {
    [DK_MAP_LANELINE] = {98, 183, 249},
    [DK_MAP_LANE] = {56, 103, 221},
    [DK_MAP_POLE] = {66, 40, 144},
    [DK_MAP_ROAD_BOUNDARY] = {200, 36, 35},
    [DK_MAP_WAIT_LINE] = {185, 63, 34},
    [DK_MAP_CROSSWALK] = {206, 131, 63},
    [DK_MAP_ROAD_MARKING] = {126, 204, 205},
    [DK_MAP_TRAFFIC_SIGN] = {131, 175, 155},
    [DK_MAP_TRAFFIC_LIGHT] = {252, 157, 155},
};

/* Cosmos box classes: Car, Truck, Pedestrian, Cyclist, Others. */
static const uint8_t class_colour[DK_CLASS_COUNT][3] = {
    [DK_CLASS_CAR] = {255, 0, 0},
    [DK_CLASS_TRUCK] = {0, 0, 255},
    [DK_CLASS_BUS] = {0, 0, 255},
    [DK_CLASS_TRAILER] = {0, 0, 255},
    [DK_CLASS_CONSTRUCTION_VEHICLE] = {0, 0, 255},
    [DK_CLASS_PEDESTRIAN] = {0, 255, 0},
    [DK_CLASS_MOTORCYCLE] = {255, 255, 0},
    [DK_CLASS_BICYCLE] = {255, 255, 0},
    [DK_CLASS_TRAFFIC_CONE] = {255, 255, 255},
    [DK_CLASS_BARRIER] = {255, 255, 255},
};

/* Cuboid corners in the order of world_impl.h, and the edge polyline. */
static const double corner_sign[8][3] = {
    {+1, +1, -1}, {+1, -1, -1}, {-1, -1, -1}, {-1, +1, -1},
    {+1, +1, +1}, {+1, -1, +1}, {-1, -1, +1}, {-1, +1, +1},
};
static const int edge_order[16] = {0, 1, 2, 3, 0, 4, 5, 6, 7, 4, 5, 1, 2, 6, 7, 3};

void dk_conditions_config_init(dk_conditions_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->width = 1280;
    cfg->height = 720;
    cfg->fps = 30.0;
    cfg->model = DK_CAM_PINHOLE;
    cfg->ftheta_fov_deg = 120.0;
    cfg->layers = (1u << DK_MAP_LANELINE) | (1u << DK_MAP_ROAD_BOUNDARY) |
                  (1u << DK_MAP_CROSSWALK) | (1u << DK_MAP_ROAD_MARKING) |
                  (1u << DK_MAP_WAIT_LINE) | (1u << DK_MAP_POLE) |
                  (1u << DK_MAP_TRAFFIC_SIGN) | (1u << DK_MAP_TRAFFIC_LIGHT);
    cfg->line_px = 8;
    cfg->box_px = 5;
    cfg->depth_max = 122.5;
    cfg->resample = 0.8;
    cfg->crf = 18;
}

static int check_config(const dk_conditions_config *c, const char *func)
{
    if (!c) return dk__error(DK_EINVAL, func, "NULL config");
    if (c->width < 1 || c->height < 1 || c->width > 16384 || c->height > 16384)
        return dk__error(DK_EINVAL, func, "config: size %dx%d not in 1..16384", c->width,
                         c->height);
    if (c->model != DK_CAM_PINHOLE && c->model != DK_CAM_FTHETA)
        return dk__error(DK_EINVAL, func, "config: model %d: only pinhole or ftheta", (int)c->model);
    if (c->model == DK_CAM_FTHETA && !(c->ftheta_fov_deg > 0.0 && c->ftheta_fov_deg < 360.0))
        return dk__error(DK_EINVAL, func, "config: ftheta_fov_deg %g not in (0, 360)",
                         c->ftheta_fov_deg);
    if (c->line_px < 1 || c->line_px > 1024 || c->box_px < 1 || c->box_px > 1024)
        return dk__error(DK_EINVAL, func, "config: line_px %d / box_px %d not in 1..1024",
                         c->line_px, c->box_px);
    if (!(c->depth_max > 0.0) || !isfinite(c->depth_max))
        return dk__error(DK_EINVAL, func, "config: depth_max %g must be > 0", c->depth_max);
    if (!(c->resample > 0.0) || !isfinite(c->resample))
        return dk__error(DK_EINVAL, func, "config: resample %g must be > 0", c->resample);
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Views                                                                     */

/* One rig camera prepared for condition rendering. */
typedef struct cond_cam {
    dk_camera cam;
    dk_pose sensor_to_ego;
    int zclip;          /* clip at z = CLIP_EPS (else at the max_angle cone) */
    int euclid;         /* depth = Euclidean distance (else camera z) */
    double max_angle;
    double ftheta_f;    /* f-theta: pixels per radian (analytic fallback) */
} cond_cam;

/* cond_cam at one time. */
typedef struct view {
    const cond_cam *cc;
    double r[9], t[3]; /* world -> camera */
    int W, H;
} view;

static int make_cam(const dk_scenario *s, int sensor, const dk_conditions_config *cfg,
                    cond_cam *out, const char *func)
{
    if (sensor < 0 || sensor >= s->rig.n_sensors || s->rig.n_sensors > DK_RIG_MAX_SENSORS)
        return dk__error(DK_EINVAL, func, "sensor %d out of range (rig has %d)", sensor,
                         s->rig.n_sensors);
    const dk_rig_sensor *rs = &s->rig.sensors[sensor];
    if (rs->kind != DK_SENSOR_CAMERA)
        return dk__error(DK_EINVAL, func, "sensor %d (%.*s) is not a camera", sensor,
                         DK_SENSOR_NAME_MAX, rs->name);
    memset(out, 0, sizeof *out);
    out->sensor_to_ego = rs->sensor_to_ego;
    const dk_camera *rc = &rs->camera;
    const int W = cfg->width, H = cfg->height;
    if (cfg->model == DK_CAM_PINHOLE) {
        if (rc->width <= 0 || rc->height <= 0 || !(rc->fx > 0) || !(rc->fy > 0))
            return dk__error(DK_EINVAL, func, "camera %.*s has no pinhole intrinsics",
                             DK_SENSOR_NAME_MAX, rs->name);
        double sx = (double)W / rc->width, sy = (double)H / rc->height;
        dk_camera_init_pinhole(&out->cam, W, H, rc->fx * sx, rc->fy * sy, rc->cx * sx,
                               rc->cy * sy);
        out->zclip = 1;
        out->euclid = 0;
    } else {
        /* Equidistant f-theta: pixel distance = f * angle, with the horizontal
           half field of view reaching the left and right image edges. */
        double half = cfg->ftheta_fov_deg * M_PI / 360.0;
        double f = (W * 0.5) / half;
        double poly[6] = {0, f, 0, 0, 0, 0};
        /* Just past the image corners, so every image pixel is in the domain. */
        double corner = (hypot(W * 0.5, H * 0.5) + 1.0) / f;
        double cap = M_PI * 179.0 / 180.0;
        double max_angle = corner < cap ? corner : cap;
        dk_camera_init_ftheta(&out->cam, W, H, W * 0.5, H * 0.5, DK_FTHETA_ANGLE_TO_PIXELDIST,
                              poly, NULL, max_angle);
        out->ftheta_f = f;
        out->euclid = 1;
    }
    out->cam.shutter = DK_SHUTTER_GLOBAL;
    int st = dk_camera_validate(&out->cam);
    if (st) {
        char why[DK_ERRMSG_MAX];
        snprintf(why, sizeof why, "%s", dk_errmsg());
        return dk__error(st, func, "camera %.*s: %s", DK_SENSOR_NAME_MAX, rs->name, why);
    }
    if (cfg->model == DK_CAM_FTHETA) {
        out->max_angle = out->cam.max_angle;
        out->zclip = out->max_angle <= M_PI / 2;
    }
    return DK_OK;
}

static void make_view(const dk_scenario *s, const cond_cam *cc, double t, view *v)
{
    dk_pose ego = dk_scenario_ego_pose(s, t);
    dk_pose cam_to_world = dk_pose_compose(&ego, &cc->sensor_to_ego);
    dk_pose w2c = dk_pose_inverse(&cam_to_world);
    dk_quat_to_rotation(w2c.q, v->r);
    memcpy(v->t, w2c.t, sizeof v->t);
    v->cc = cc;
    v->W = cc->cam.width;
    v->H = cc->cam.height;
}

static void to_cam(const view *v, const double p[3], double out[3])
{
    const double *r = v->r;
    out[0] = r[0] * p[0] + r[1] * p[1] + r[2] * p[2] + v->t[0];
    out[1] = r[3] * p[0] + r[4] * p[1] + r[5] * p[2] + v->t[1];
    out[2] = r[6] * p[0] + r[7] * p[1] + r[8] * p[2] + v->t[2];
}

static double depth_of(const view *v, const double p[3])
{
    return v->cc->euclid ? sqrt(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]) : p[2];
}

static double angle_of(const double p[3])
{
    return atan2(hypot(p[0], p[1]), p[2]);
}

static int in_front(const view *v, const double p[3])
{
    if (v->cc->zclip) return p[2] >= CLIP_EPS;
    return angle_of(p) <= v->cc->max_angle;
}

/* The point where segment a (in front) -> b (not in front) leaves the kept
 * region. */
static void cut_point(const view *v, const double a[3], const double b[3], double out[3])
{
    double s;
    if (v->cc->zclip) {
        s = (CLIP_EPS - a[2]) / (b[2] - a[2]);
    } else {
        double lo = 0.0, hi = 1.0;
        for (int it = 0; it < 60; it++) {
            double mid = 0.5 * (lo + hi), m[3];
            for (int k = 0; k < 3; k++) m[k] = a[k] + mid * (b[k] - a[k]);
            if (angle_of(m) <= v->cc->max_angle) lo = mid;
            else hi = mid;
        }
        s = lo;
    }
    double c[3];
    for (int k = 0; k < 3; k++) c[k] = a[k] + s * (b[k] - a[k]);
    if (v->cc->zclip) c[2] = CLIP_EPS;
    memcpy(out, c, sizeof c); /* out may alias a or b */
}

/* Projects a kept point. dk_camera_project writes uv wherever its model is
 * defined; past an f-theta max_angle that is implementation-defined, so the
 * (exact) equidistant formula fills in. */
static void project(const view *v, const double p[3], double uv[2])
{
    uv[0] = uv[1] = NAN;
    dk_camera_project(&v->cc->cam, p, uv, NULL);
    if (isfinite(uv[0]) && isfinite(uv[1])) return;
    const dk_camera *c = &v->cc->cam;
    if (c->model == DK_CAM_FTHETA) {
        double rho = hypot(p[0], p[1]);
        double d = v->cc->ftheta_f * atan2(rho, p[2]);
        uv[0] = c->cx + (rho > 0 ? d * p[0] / rho : 0.0);
        uv[1] = c->cy + (rho > 0 ? d * p[1] / rho : 0.0);
    } else {
        uv[0] = c->fx * p[0] / p[2] + c->cx;
        uv[1] = c->fy * p[1] / p[2] + c->cy;
    }
}

/* ------------------------------------------------------------------------ */
/* Scratch memory and the canvas                                             */

typedef struct id_index {
    int32_t id, index;
} id_index;

typedef struct scratch {
    int W, H;
    uint8_t *canvas;            /* H x W x 3 */
    int x0, y0, x1, y1;         /* touched rectangle, [x0, x1) x [y0, y1) */
    double *a; size_t a_cap;    /* doubles */
    double *b; size_t b_cap;
    double *c; size_t c_cap;
    double *d; size_t d_cap;
    double *pts; size_t pts_cap;
    id_index *order; size_t order_cap;
} scratch;

static int grow(void **p, size_t *cap, size_t n, size_t elem)
{
    if (n <= *cap) return DK_OK;
    size_t want = *cap ? *cap : 64;
    while (want < n) {
        if (want > SIZE_MAX / 2) return DK_EOVERFLOW;
        want *= 2;
    }
    size_t bytes;
    if (dk__mul_overflow(want, elem, &bytes)) return DK_EOVERFLOW;
    void *q = dk_realloc(*p, bytes);
    if (!q) return DK_ENOMEM;
    *p = q;
    *cap = want;
    return DK_OK;
}

#define GROW(sc, field, n) grow((void **)&(sc)->field, &(sc)->field##_cap, (n), sizeof *(sc)->field)

static int scratch_init(scratch *sc, int W, int H)
{
    memset(sc, 0, sizeof *sc);
    sc->W = W;
    sc->H = H;
    sc->canvas = dk_calloc((size_t)W * (size_t)H, 3);
    if (!sc->canvas) return DK_ENOMEM;
    sc->x0 = W;
    sc->y0 = H;
    return DK_OK;
}

static void scratch_free(scratch *sc)
{
    dk_free(sc->canvas);
    dk_free(sc->a);
    dk_free(sc->b);
    dk_free(sc->c);
    dk_free(sc->d);
    dk_free(sc->pts);
    dk_free(sc->order);
    memset(sc, 0, sizeof *sc);
}

/* Paints pixels [i0, i1] of row j. */
static void span(scratch *sc, int j, int i0, int i1, const uint8_t col[3])
{
    if (i0 < 0) i0 = 0;
    if (i1 > sc->W - 1) i1 = sc->W - 1;
    if (j < 0 || j >= sc->H || i0 > i1) return;
    uint8_t *p = sc->canvas + ((size_t)j * (size_t)sc->W + (size_t)i0) * 3;
    for (int i = i0; i <= i1; i++, p += 3) {
        p[0] = col[0];
        p[1] = col[1];
        p[2] = col[2];
    }
    if (i0 < sc->x0) sc->x0 = i0;
    if (i1 + 1 > sc->x1) sc->x1 = i1 + 1;
    if (j < sc->y0) sc->y0 = j;
    if (j + 1 > sc->y1) sc->y1 = j + 1;
}

/* Max-merges the canvas into `out` and clears it. */
static void merge_canvas(scratch *sc, uint8_t *out)
{
    if (sc->x0 >= sc->x1 || sc->y0 >= sc->y1) goto reset;
    size_t n = (size_t)(sc->x1 - sc->x0) * 3;
    for (int j = sc->y0; j < sc->y1; j++) {
        size_t off = ((size_t)j * (size_t)sc->W + (size_t)sc->x0) * 3;
        uint8_t *c = sc->canvas + off, *o = out + off;
        for (size_t k = 0; k < n; k++)
            if (c[k] > o[k]) o[k] = c[k];
        memset(c, 0, n);
    }
reset:
    sc->x0 = sc->W;
    sc->y0 = sc->H;
    sc->x1 = sc->y1 = 0;
}

static void fade(const uint8_t c[3], double depth, double dmax, uint8_t out[3])
{
    double d = depth > 0.0 ? depth : 0.0; /* NaN -> 0 */
    if (d > dmax) d = dmax;
    double w = 2.0 * (dmax - d) / 255.0;
    for (int k = 0; k < 3; k++) {
        double x = rint(c[k] * w);
        out[k] = x <= 0.0 ? 0 : x >= 255.0 ? 255 : (uint8_t)x;
    }
}

/* First pixel index whose centre is >= x, and last whose centre is <= x,
 * kept in int range (NaN gives -1: nothing). */
static int first_centre(double x)
{
    double f = ceil(x - 0.5);
    return !(f >= -1.0) ? -1 : f > 1e9 ? 1000000000 : (int)f;
}
static int last_centre(double x)
{
    double f = floor(x - 0.5);
    return !(f >= -1.0) ? -1 : f > 1e9 ? 1000000000 : (int)f;
}

/* Pixels whose centre lies within r of segment a-b (both ends finite and
 * within a few thousand pixels of the image: the caller clipped them). */
static void fill_capsule(scratch *sc, const double a[2], const double b[2], double r,
                         const uint8_t col[3])
{
    double dx = b[0] - a[0], dy = b[1] - a[1];
    double L2 = dx * dx + dy * dy, L = sqrt(L2), r2 = r * r;
    int j0 = first_centre(fmin(a[1], b[1]) - r), j1 = last_centre(fmax(a[1], b[1]) + r);
    if (j0 < 0) j0 = 0;
    if (j1 > sc->H - 1) j1 = sc->H - 1;
    for (int j = j0; j <= j1; j++) {
        double yc = j + 0.5, xl = INFINITY, xr = -INFINITY;
        for (int e = 0; e < 2; e++) {
            const double *p = e ? b : a;
            double ey = yc - p[1];
            if (ey * ey <= r2) {
                double h = sqrt(r2 - ey * ey);
                xl = fmin(xl, p[0] - h);
                xr = fmax(xr, p[0] + h);
            }
        }
        if (L2 > 0.0) {
            /* Band: 0 <= (q - a).d <= L2 and |(q - a) x d| <= r L, both linear in x. */
            double lo = -INFINITY, hi = INFINITY, ey = yc - a[1];
            if (dx != 0.0) {
                double u0 = (0.0 - ey * dy) / dx, u1 = (L2 - ey * dy) / dx;
                lo = fmax(lo, fmin(u0, u1));
                hi = fmin(hi, fmax(u0, u1));
            } else if (!(ey * dy >= 0.0 && ey * dy <= L2)) {
                hi = -INFINITY;
            }
            /* cross = ex * dy - ey * dx, with ex = x - a.x */
            if (dy != 0.0) {
                double u0 = (ey * dx - r * L) / dy, u1 = (ey * dx + r * L) / dy;
                lo = fmax(lo, fmin(u0, u1));
                hi = fmin(hi, fmax(u0, u1));
            } else if (!(fabs(ey * dx) <= r * L)) {
                hi = -INFINITY;
            }
            if (lo <= hi) {
                xl = fmin(xl, a[0] + lo);
                xr = fmax(xr, a[0] + hi);
            }
        }
        if (xl <= xr) span(sc, j, first_centre(xl), last_centre(xr), col);
    }
}

/* Liang-Barsky: clips segment a-b to [x0, x1] x [y0, y1]; 0 if nothing is left. */
static int clip_segment(double a[2], double b[2], double x0, double y0, double x1, double y1)
{
    if (!isfinite(a[0]) || !isfinite(a[1]) || !isfinite(b[0]) || !isfinite(b[1])) return 0;
    double dx = b[0] - a[0], dy = b[1] - a[1], t0 = 0.0, t1 = 1.0;
    const double p[4] = {-dx, dx, -dy, dy};
    const double q[4] = {a[0] - x0, x1 - a[0], a[1] - y0, y1 - a[1]};
    for (int k = 0; k < 4; k++) {
        if (p[k] == 0.0) {
            if (q[k] < 0.0) return 0;
            continue;
        }
        double r = q[k] / p[k];
        if (p[k] < 0.0) {
            if (r > t1) return 0;
            if (r > t0) t0 = r;
        } else {
            if (r < t0) return 0;
            if (r < t1) t1 = r;
        }
    }
    double ax = a[0], ay = a[1];
    a[0] = ax + t0 * dx;
    a[1] = ay + t0 * dy;
    b[0] = ax + t1 * dx;
    b[1] = ay + t1 * dy;
    return 1;
}

/* Fills pixel centres inside or on a convex polygon (n >= 3, any winding). */
static void fill_convex(scratch *sc, const double *poly, int n, const uint8_t col[3])
{
    double ymin = INFINITY, ymax = -INFINITY;
    for (int i = 0; i < n; i++) {
        ymin = fmin(ymin, poly[2 * i + 1]);
        ymax = fmax(ymax, poly[2 * i + 1]);
    }
    int j0 = first_centre(ymin), j1 = last_centre(ymax);
    if (j0 < 0) j0 = 0;
    if (j1 > sc->H - 1) j1 = sc->H - 1;
    for (int j = j0; j <= j1; j++) {
        double yc = j + 0.5, xl = INFINITY, xr = -INFINITY;
        for (int i = 0; i < n; i++) {
            const double *p = poly + 2 * i, *q = poly + 2 * ((i + 1) % n);
            if ((p[1] <= yc && yc <= q[1]) || (q[1] <= yc && yc <= p[1])) {
                if (p[1] == q[1]) {
                    xl = fmin(xl, fmin(p[0], q[0]));
                    xr = fmax(xr, fmax(p[0], q[0]));
                } else {
                    double x = p[0] + (yc - p[1]) * (q[0] - p[0]) / (q[1] - p[1]);
                    xl = fmin(xl, x);
                    xr = fmax(xr, x);
                }
            }
        }
        if (xl <= xr) span(sc, j, first_centre(xl), last_centre(xr), col);
    }
}

static int cmp_xy(const void *pa, const void *pb)
{
    const double *a = pa, *b = pb;
    if (a[0] != b[0]) return a[0] < b[0] ? -1 : 1;
    if (a[1] != b[1]) return a[1] < b[1] ? -1 : 1;
    return 0;
}

static double cross2(const double *o, const double *a, const double *b)
{
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
}

/* Convex hull (monotone chain, counter-clockwise in (x, y), collinear points
 * dropped) of n points; `pts` is sorted in place; `hull` has room for 2n + 2
 * points. Returns the vertex count. */
static int convex_hull(double *pts, int n, double *hull)
{
    qsort(pts, (size_t)n, 2 * sizeof(double), cmp_xy);
    int k = 0;
    for (int i = 0; i < n; i++) {
        while (k >= 2 && cross2(hull + 2 * (k - 2), hull + 2 * (k - 1), pts + 2 * i) <= 0) k--;
        hull[2 * k] = pts[2 * i];
        hull[2 * k + 1] = pts[2 * i + 1];
        k++;
    }
    for (int i = n - 2, lo = k + 1; i >= 0; i--) {
        while (k >= lo && cross2(hull + 2 * (k - 2), hull + 2 * (k - 1), pts + 2 * i) <= 0) k--;
        hull[2 * k] = pts[2 * i];
        hull[2 * k + 1] = pts[2 * i + 1];
        k++;
    }
    return k > 1 ? k - 1 : k; /* the last point repeats the first */
}

/* One Sutherland-Hodgman pass: keeps sign * (coord[axis] - bound) >= 0. */
static int clip_halfplane(const double *in, int n, double *out, int axis, double bound,
                          double sign)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        const double *p = in + 2 * i, *q = in + 2 * ((i + 1) % n);
        double dp = sign * (p[axis] - bound), dq = sign * (q[axis] - bound);
        if (dp >= 0) {
            out[2 * m] = p[0];
            out[2 * m + 1] = p[1];
            m++;
        }
        if ((dp >= 0) != (dq >= 0)) {
            double s = dp / (dp - dq);
            out[2 * m] = p[0] + s * (q[0] - p[0]);
            out[2 * m + 1] = p[1] + s * (q[1] - p[1]);
            out[2 * m + axis] = bound; /* exact on the edge */
            m++;
        }
    }
    return m;
}

/* ------------------------------------------------------------------------ */
/* Primitives                                                                */

/* A polyline of n camera-frame points in `pts`. */
static int draw_polyline(const view *v, scratch *sc, const double *pts, int n,
                         const uint8_t colour[3], double thickness, double dmax)
{
    if (n < 2) return DK_OK;
    double nearest = INFINITY;
    int visible = 0;
    for (int i = 0; i < n; i++) {
        const double *p = pts + 3 * i;
        nearest = fmin(nearest, depth_of(v, p));
        if (!visible && in_front(v, p)) {
            double uv[2];
            project(v, p, uv);
            visible = uv[0] >= 0 && uv[0] < v->W && uv[1] >= 0 && uv[1] < v->H;
        }
    }
    if (!visible || !(nearest <= dmax)) return DK_OK;

    double r = 0.5 * thickness, g = r + 1.0;
    for (int i = 0; i + 1 < n; i++) {
        double a[3], b[3];
        memcpy(a, pts + 3 * i, sizeof a);
        memcpy(b, pts + 3 * i + 3, sizeof b);
        int fa = in_front(v, a), fb = in_front(v, b);
        if (!fa && !fb) continue;
        if (!fa) cut_point(v, b, a, a);
        else if (!fb) cut_point(v, a, b, b);
        uint8_t col[3];
        fade(colour, 0.5 * (depth_of(v, a) + depth_of(v, b)), dmax, col);
        double ua[2], ub[2];
        project(v, a, ua);
        project(v, b, ub);
        if (!clip_segment(ua, ub, -g, -g, v->W + g, v->H + g)) continue;
        fill_capsule(sc, ua, ub, r, col);
    }
    return DK_OK;
}

/* A polygon or cuboid edge list of n camera-frame points: filled convex hull. */
static int draw_hull(const view *v, scratch *sc, const double *pts, int n,
                     const uint8_t colour[3], double dmax)
{
    /* At most n kept points plus n - 1 cut points; the hull chain of m
       points needs 2m + 2 slots, and every clipping pass adds at most one. */
    size_t cap = 2 * (size_t)n + 8, hcap = 2 * cap + 8;
    if (GROW(sc, b, 3 * cap) || GROW(sc, c, 2 * cap) || GROW(sc, d, 4 * hcap))
        return DK_ENOMEM;
    double *kept = sc->b;
    int m = 0;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        const double *p = pts + 3 * i;
        int fp = in_front(v, p);
        if (fp) memcpy(kept + 3 * m++, p, 3 * sizeof(double));
        if (i + 1 < n) {
            const double *q = p + 3;
            int fq = in_front(v, q);
            if (fp && !fq) cut_point(v, p, q, kept + 3 * m++);
            else if (!fp && fq) cut_point(v, q, p, kept + 3 * m++);
        }
    }
    if (m < 3) return DK_OK;
    for (int i = 0; i < m; i++) sum += depth_of(v, kept + 3 * i);
    uint8_t col[3];
    fade(colour, sum / m, dmax, col);

    double *uv = sc->c;
    int nuv = 0;
    for (int i = 0; i < m; i++) {
        project(v, kept + 3 * i, uv + 2 * nuv);
        nuv += isfinite(uv[2 * nuv]) && isfinite(uv[2 * nuv + 1]);
    }
    m = nuv;
    double *hull = sc->d, *tmp = sc->d + 2 * hcap;
    int k = convex_hull(uv, m, hull);
    if (k < 3) return DK_OK;
    /* The hull has k <= m vertices; every pass adds at most one. */
    k = clip_halfplane(hull, k, tmp, 0, 0.0, 1.0);
    k = clip_halfplane(tmp, k, hull, 0, (double)v->W, -1.0);
    k = clip_halfplane(hull, k, tmp, 1, 0.0, 1.0);
    k = clip_halfplane(tmp, k, hull, 1, (double)v->H, -1.0);
    if (k < 3) return DK_OK;
    fill_convex(sc, hull, k, col);
    return DK_OK;
}

/* Arc-length resampling of a world polyline at 0, step, 2 step, ... plus the
 * last point. Output in sc->a (n_out x 3). */
static int resample(scratch *sc, const double *p, int n, double step, int *n_out)
{
    double len = 0.0;
    for (int i = 0; i + 1 < n; i++)
        len += sqrt((p[3 * i + 3] - p[3 * i]) * (p[3 * i + 3] - p[3 * i]) +
                    (p[3 * i + 4] - p[3 * i + 1]) * (p[3 * i + 4] - p[3 * i + 1]) +
                    (p[3 * i + 5] - p[3 * i + 2]) * (p[3 * i + 5] - p[3 * i + 2]));
    double count = floor(len / step) + 2.0;
    if (!(count < 5e7)) return DK_EOVERFLOW;
    int cap = (int)count;
    if (GROW(sc, a, 3 * (size_t)cap)) return DK_ENOMEM;
    double *out = sc->a;
    int m = 0, seg = 0;
    double seg_start = 0.0; /* arc length at point seg */
    for (int k = 0;; k++) {
        double s = k * step;
        if (s > len) break;
        while (seg + 1 < n - 1) {
            const double *a = p + 3 * seg, *b = a + 3;
            double sl = sqrt((b[0] - a[0]) * (b[0] - a[0]) + (b[1] - a[1]) * (b[1] - a[1]) +
                             (b[2] - a[2]) * (b[2] - a[2]));
            if (seg_start + sl >= s) break;
            seg_start += sl;
            seg++;
        }
        const double *a = p + 3 * seg, *b = a + 3;
        double sl = sqrt((b[0] - a[0]) * (b[0] - a[0]) + (b[1] - a[1]) * (b[1] - a[1]) +
                         (b[2] - a[2]) * (b[2] - a[2]));
        double u = sl > 0.0 ? (s - seg_start) / sl : 0.0;
        if (u > 1.0) u = 1.0;
        for (int c = 0; c < 3; c++) out[3 * m + c] = a[c] + u * (b[c] - a[c]);
        m++;
        if (m >= cap - 1) break;
    }
    const double *last = p + 3 * (n - 1);
    double *prev = out + 3 * (m - 1);
    double gap = sqrt((last[0] - prev[0]) * (last[0] - prev[0]) +
                      (last[1] - prev[1]) * (last[1] - prev[1]) +
                      (last[2] - prev[2]) * (last[2] - prev[2]));
    if (gap > 1e-9) {
        memcpy(out + 3 * m, last, 3 * sizeof(double));
        m++;
    }
    *n_out = m;
    return DK_OK;
}

static void cuboid_edge_points(const double corners[8][3], double *out16)
{
    for (int i = 0; i < 16; i++) memcpy(out16 + 3 * i, corners[edge_order[i]], 3 * sizeof(double));
}

static void map_cuboid_corners(const dk_map_element *e, double corners[8][3])
{
    dk_pose p = dk_pose_from_euler(e->center, e->yaw, e->pitch, e->roll);
    for (int i = 0; i < 8; i++) {
        double local[3];
        for (int k = 0; k < 3; k++) local[k] = corner_sign[i][k] * 0.5 * e->size[k];
        dk_pose_apply(&p, local, corners[i]);
    }
}

static int cmp_id(const void *pa, const void *pb)
{
    int32_t a = ((const id_index *)pa)->id, b = ((const id_index *)pb)->id;
    return a < b ? -1 : a > b;
}

/* Renders one frame into `out` (H x W x 3, overwritten). */
static int render_frame(const dk_scenario *s, const cond_cam *cc, double t,
                        const dk_conditions_config *cfg, scratch *sc, uint8_t *out)
{
    const double dmax = cfg->depth_max;
    view v;
    make_view(s, cc, t, &v);
    memset(out, 0, (size_t)v.W * (size_t)v.H * 3);
    int st;

    for (int layer = 0; layer < N_COSMOS_LAYERS; layer++) {
        if (!((cfg->layers >> layer) & 1u)) continue;
        for (int32_t ei = 0; ei < s->n_map; ei++) {
            const dk_map_element *e = &s->map[ei];
            if ((int)e->layer != layer) continue;
            const double *world = e->points;
            int n = e->n_points;
            double cub[16 * 3];
            if (e->geometry == DK_GEOM_CUBOID) {
                double corners[8][3];
                map_cuboid_corners(e, corners);
                cuboid_edge_points(corners, cub);
                world = cub;
                n = 16;
            } else if (e->geometry == DK_GEOM_POLYLINE &&
                       (layer == DK_MAP_LANELINE || layer == DK_MAP_ROAD_BOUNDARY) && n >= 2) {
                if ((st = resample(sc, e->points, n, cfg->resample, &n))) {
                    if (st == DK_EOVERFLOW)
                        st = dk__error(DK_EINVAL, "dk_world_render_conditions",
                                       "map element %d: too many points resampling every %g m",
                                       (int)e->id, cfg->resample);
                    goto fail;
                }
                world = sc->a;
            }
            if (n < 1 || !world) continue;
            /* Camera-frame points; polygons get their first point repeated. */
            int closed = e->geometry == DK_GEOM_POLYGON;
            if ((st = GROW(sc, pts, 3 * ((size_t)n + 1)))) goto fail;
            double *cam = sc->pts;
            for (int i = 0; i < n; i++) to_cam(&v, world + 3 * i, cam + 3 * i);
            if (closed) memcpy(cam + 3 * n, cam, 3 * sizeof(double));
            if (e->geometry == DK_GEOM_POLYLINE)
                st = draw_polyline(&v, sc, cam, n, layer_colour[layer], cfg->line_px, dmax);
            else
                st = draw_hull(&v, sc, cam, n + closed, layer_colour[layer], dmax);
            if (st) goto fail;
        }
        merge_canvas(sc, out);
    }

    /* Actor boxes, increasing id, on one canvas. */
    if (s->n_actors > 0) {
        if ((st = GROW(sc, order, (size_t)s->n_actors))) goto fail;
        for (int32_t i = 0; i < s->n_actors; i++) sc->order[i] = (id_index){s->actors[i].id, i};
        qsort(sc->order, (size_t)s->n_actors, sizeof *sc->order, cmp_id);
        for (int32_t k = 0; k < s->n_actors; k++) {
            const dk_actor *a = &s->actors[sc->order[k].index];
            double corners[8][3], world[16 * 3], cam[16 * 3];
            if (!dk__actor_corners(a, 0, t, corners)) continue;
            cuboid_edge_points(corners, world);
            for (int i = 0; i < 16; i++) to_cam(&v, world + 3 * i, cam + 3 * i);
            int cls = (int)a->cls;
            static const uint8_t white[3] = {255, 255, 255};
            const uint8_t *colour = cls >= 0 && cls < DK_CLASS_COUNT ? class_colour[cls] : white;
            draw_polyline(&v, sc, cam, 16, colour, cfg->box_px, dmax);
        }
        merge_canvas(sc, out);
    }
    return DK_OK;

fail:
    /* Leave the scratch canvas clean for the next frame. */
    merge_canvas(sc, out);
    memset(out, 0, (size_t)v.W * (size_t)v.H * 3);
    if (st == DK_EINVAL) return st; /* message set above */
    return dk__error(DK_ENOMEM, "dk_world_render_conditions", "out of memory (%dx%d frame)",
                     v.W, v.H);
}

/* ------------------------------------------------------------------------ */
/* Public API                                                                */

int dk_world_render_conditions(const dk_scenario *s, int sensor, double t,
                               const dk_conditions_config *cfg, dk_tensor *rgb)
{
    if (rgb) memset(rgb, 0, sizeof *rgb);
    if (!s || !rgb) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (!isfinite(t)) return dk__error(DK_EINVAL, __func__, "time %g is not finite", t);
    int st = check_config(cfg, __func__);
    if (st) return st;
    cond_cam cc;
    if ((st = make_cam(s, sensor, cfg, &cc, __func__))) return st;

    const int64_t shape[3] = {cfg->height, cfg->width, 3};
    dk_tensor img;
    if ((st = dk_tensor_alloc(&img, DK_U8, 3, shape)))
        return dk__error(st, __func__, "cannot allocate a %dx%d frame", cfg->width, cfg->height);
    scratch sc;
    if (scratch_init(&sc, cfg->width, cfg->height)) {
        dk_tensor_release(&img);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    st = render_frame(s, &cc, t, cfg, &sc, img.data);
    scratch_free(&sc);
    if (st) {
        dk_tensor_release(&img);
        return st;
    }
    *rgb = img;
    return DK_OK;
}

/* mkdir -p. */
static int make_dirs(const char *dir, const char *func)
{
    char *p = dk_strdup(dir);
    if (!p) return dk__error(DK_ENOMEM, func, "out of memory");
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') p[--n] = '\0';
    for (char *c = p + 1;; c++) {
        int end = *c == '\0';
        if (*c == '/' || end) {
            *c = '\0';
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                int e = errno;
                dk__error(DK_EIO, func, "%s: cannot create directory: %s", p, strerror(e));
                dk_free(p);
                return DK_EIO;
            }
            if (end) break;
            *c = '/';
        }
    }
    struct stat sb;
    int ok = stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
    dk_free(p);
    if (!ok) return dk__error(DK_EIO, func, "%s: not a directory", dir);
    return DK_OK;
}

typedef struct cam_job {
    int sensor;
    cond_cam cc;
    char *path;
    dk__mp4 *mp4;
    scratch sc;
    uint8_t *frame;
    int status;
    char errmsg[DK_ERRMSG_MAX];
} cam_job;

typedef struct write_round {
    const dk_scenario *s;
    const dk_conditions_config *cfg;
    cam_job *jobs;
    const double *times;
    int64_t k0, k1;
} write_round;

static void write_round_fn(void *ctx, int64_t begin, int64_t end, int ith)
{
    DK__UNUSED(ith);
    write_round *w = ctx;
    const int64_t shape[3] = {w->cfg->height, w->cfg->width, 3};
    for (int64_t j = begin; j < end; j++) {
        cam_job *job = &w->jobs[j];
        for (int64_t k = w->k0; k < w->k1 && !job->status; k++) {
            int st = render_frame(w->s, &job->cc, w->times[k], w->cfg, &job->sc, job->frame);
            if (!st) {
                dk_tensor img;
                dk_tensor_view(&img, job->frame, DK_U8, 3, shape);
                st = dk__mp4_write(job->mp4, &img);
            }
            if (st) {
                job->status = st;
                dk__keep(st, job->errmsg);
            }
        }
    }
}

static void write_json_camera(dk_jsonw *w, const dk_rig_sensor *rs, const cam_job *job)
{
    const dk_camera *c = &job->cc.cam;
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "name");
    dk_jsonw_string(w, rs->name);
    const char *slash = strrchr(job->path, '/');
    dk_jsonw_key(w, "file");
    dk_jsonw_string(w, slash ? slash + 1 : job->path);
    dk_jsonw_key(w, "model");
    dk_jsonw_string(w, dk_camera_model_name(c->model));
    dk_jsonw_key(w, "width");
    dk_jsonw_int(w, c->width);
    dk_jsonw_key(w, "height");
    dk_jsonw_int(w, c->height);
    if (c->model == DK_CAM_PINHOLE) {
        dk_jsonw_key(w, "fx");
        dk_jsonw_number(w, c->fx);
        dk_jsonw_key(w, "fy");
        dk_jsonw_number(w, c->fy);
    }
    dk_jsonw_key(w, "cx");
    dk_jsonw_number(w, c->cx);
    dk_jsonw_key(w, "cy");
    dk_jsonw_number(w, c->cy);
    if (c->model == DK_CAM_FTHETA) {
        dk_jsonw_key(w, "ftheta_ref");
        dk_jsonw_string(w, "angle_to_pixeldist");
        dk_jsonw_key(w, "fw_poly");
        dk_jsonw_array_begin(w);
        for (int i = 0; i < 6; i++) dk_jsonw_number(w, c->fw_poly[i]);
        dk_jsonw_array_end(w);
        dk_jsonw_key(w, "linear_cde");
        dk_jsonw_array_begin(w);
        dk_jsonw_number(w, c->linear_c);
        dk_jsonw_number(w, c->linear_d);
        dk_jsonw_number(w, c->linear_e);
        dk_jsonw_array_end(w);
        dk_jsonw_key(w, "max_angle");
        dk_jsonw_number(w, c->max_angle);
    }
    double m[16];
    dk_pose_to_matrix(&rs->sensor_to_ego, m);
    dk_jsonw_key(w, "sensor_to_ego");
    dk_jsonw_array_begin(w);
    for (int i = 0; i < 16; i++) dk_jsonw_number(w, m[i]);
    dk_jsonw_array_end(w);
    dk_jsonw_object_end(w);
}

static int write_json(const dk_scenario *s, const dk_conditions_config *cfg, const char *out_dir,
                      const cam_job *jobs, int n_jobs, const double *times, int64_t n_frames)
{
    dk_jsonw *w;
    if (dk_jsonw_create(2, &w)) return dk__error(DK_ENOMEM, "dk_world_write_conditions", "out of memory");
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "format");
    dk_jsonw_string(w, "drivekit-conditions-1");
    dk_jsonw_key(w, "renderer");
    dk_jsonw_string(w, "cosmos-drive-dreams-hdmap-bbox");
    dk_jsonw_key(w, "scenario");
    dk_jsonw_string(w, s->name);
    dk_jsonw_key(w, "config");
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "width");
    dk_jsonw_int(w, cfg->width);
    dk_jsonw_key(w, "height");
    dk_jsonw_int(w, cfg->height);
    dk_jsonw_key(w, "fps");
    dk_jsonw_number(w, cfg->fps);
    dk_jsonw_key(w, "model");
    dk_jsonw_string(w, dk_camera_model_name(cfg->model));
    dk_jsonw_key(w, "ftheta_fov_deg");
    dk_jsonw_number(w, cfg->ftheta_fov_deg);
    dk_jsonw_key(w, "layers");
    dk_jsonw_array_begin(w);
    for (int l = 0; l < N_COSMOS_LAYERS; l++)
        if ((cfg->layers >> l) & 1u) dk_jsonw_string(w, dk_map_layer_name((dk_map_layer)l));
    dk_jsonw_array_end(w);
    dk_jsonw_key(w, "line_px");
    dk_jsonw_int(w, cfg->line_px);
    dk_jsonw_key(w, "box_px");
    dk_jsonw_int(w, cfg->box_px);
    dk_jsonw_key(w, "depth_max");
    dk_jsonw_number(w, cfg->depth_max);
    dk_jsonw_key(w, "resample");
    dk_jsonw_number(w, cfg->resample);
    dk_jsonw_key(w, "clip_depth");
    dk_jsonw_number(w, CLIP_EPS);
    dk_jsonw_key(w, "crf");
    dk_jsonw_int(w, cfg->crf);
    dk_jsonw_object_end(w);
    dk_jsonw_key(w, "cameras");
    dk_jsonw_array_begin(w);
    for (int i = 0; i < n_jobs; i++) write_json_camera(w, &s->rig.sensors[jobs[i].sensor], &jobs[i]);
    dk_jsonw_array_end(w);
    dk_jsonw_key(w, "n_frames");
    dk_jsonw_int(w, n_frames);
    dk_jsonw_key(w, "frames");
    dk_jsonw_array_begin(w);
    for (int64_t k = 0; k < n_frames; k++) {
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, "index");
        dk_jsonw_int(w, k);
        dk_jsonw_key(w, "t");
        dk_jsonw_number(w, times[k]);
        dk_jsonw_key(w, "timestamp_us");
        dk_jsonw_int(w, s->start_us + (int64_t)llround(times[k] * 1e6));
        dk_jsonw_object_end(w);
    }
    dk_jsonw_array_end(w);
    dk_jsonw_object_end(w);

    size_t n = strlen(out_dir);
    char *path = dk_malloc(n + 32);
    if (!path) {
        dk_jsonw_destroy(w);
        return dk__error(DK_ENOMEM, "dk_world_write_conditions", "out of memory");
    }
    snprintf(path, n + 32, "%s/conditions.json", out_dir);
    int st = dk_jsonw_save(w, path);
    dk_free(path);
    dk_jsonw_destroy(w);
    return st;
}

int dk_world_write_conditions(const dk_scenario *s, const char *out_dir,
                              const dk_conditions_config *cfg, dk_pool *pool,
                              dk_progress_fn progress, void *progress_user)
{
    static const char *fn = "dk_world_write_conditions";
    if (!s || !out_dir || !*out_dir) return dk__error(DK_EINVAL, fn, "NULL or empty argument");
    int st = check_config(cfg, fn);
    if (st) return st;
    if ((cfg->width & 1) || (cfg->height & 1))
        return dk__error(DK_EINVAL, fn, "config: video size %dx%d must be even", cfg->width,
                         cfg->height);
    if (!(cfg->fps > 0.0) || !(cfg->fps <= 1000.0))
        return dk__error(DK_EINVAL, fn, "config: fps %g not in (0, 1000]", cfg->fps);
    if (cfg->crf < 0 || cfg->crf > 51)
        return dk__error(DK_EINVAL, fn, "config: crf %d not in 0..51", cfg->crf);
    if (!(s->duration >= 0.0) || !isfinite(s->duration))
        return dk__error(DK_EINVAL, fn, "scenario duration %g is invalid", s->duration);
    /* Frames at k / fps for k = 0 .. floor(duration * fps); the epsilon keeps
       2.3 s * 10 fps = 22.999... from losing its last frame. */
    double nf = floor(s->duration * cfg->fps + 1e-9) + 1.0;
    if (nf > 1e7) return dk__error(DK_EINVAL, fn, "%g frames is too many", nf);
    const int64_t n_frames = (int64_t)nf;

    int n_cams = 0;
    for (int i = 0; i < s->rig.n_sensors && i < DK_RIG_MAX_SENSORS; i++)
        if (s->rig.sensors[i].kind == DK_SENSOR_CAMERA) n_cams++;

    double *times = dk_malloc((size_t)n_frames * sizeof *times);
    cam_job *jobs = dk_calloc((size_t)(n_cams ? n_cams : 1), sizeof *jobs);
    if (!times || !jobs) {
        dk_free(times);
        dk_free(jobs);
        return dk__error(DK_ENOMEM, fn, "out of memory");
    }
    /* Clamped so that the last frame sees actors whose states end at duration. */
    for (int64_t k = 0; k < n_frames; k++) {
        double t = (double)k / cfg->fps;
        times[k] = t < s->duration ? t : s->duration;
    }

    int n_jobs = 0;
    for (int i = 0; i < s->rig.n_sensors && i < DK_RIG_MAX_SENSORS && !st; i++) {
        if (s->rig.sensors[i].kind != DK_SENSOR_CAMERA) continue;
        cam_job *job = &jobs[n_jobs++];
        job->sensor = i;
        st = make_cam(s, i, cfg, &job->cc, fn);
    }
    if (!st) st = make_dirs(out_dir, fn);

    size_t dir_len = strlen(out_dir);
    for (int j = 0; j < n_jobs && !st; j++) {
        cam_job *job = &jobs[j];
        const char *name = s->rig.sensors[job->sensor].name;
        size_t name_len = strnlen(name, DK_SENSOR_NAME_MAX);
        size_t cap = dir_len + name_len + 8;
        job->path = dk_malloc(cap);
        if (!job->path || scratch_init(&job->sc, cfg->width, cfg->height) ||
            !(job->frame = dk_malloc((size_t)cfg->width * (size_t)cfg->height * 3))) {
            st = dk__error(DK_ENOMEM, fn, "out of memory");
            break;
        }
        snprintf(job->path, cap, "%s/%.*s.mp4", out_dir, (int)name_len, name);
        /* A sensor name is a file name here, never a path. */
        for (char *c = job->path + dir_len + 1; *c; c++)
            if (*c == '/') *c = '_';
        st = dk__mp4_open(job->path, cfg->width, cfg->height, cfg->fps, cfg->crf, &job->mp4);
    }

    const int64_t total = n_frames * n_jobs;
    if (!st && progress) progress(progress_user, 0, total, "frames");
    for (int64_t k0 = 0; k0 < n_frames && !st && n_jobs > 0; k0 += ROUND_FRAMES) {
        write_round w = {s, cfg, jobs, times, k0, k0 + ROUND_FRAMES};
        if (w.k1 > n_frames) w.k1 = n_frames;
        dk_pool_for(pool, n_jobs, 1, write_round_fn, &w);
        for (int j = 0; j < n_jobs && !st; j++)
            if (jobs[j].status)
                st = dk__error(jobs[j].status, fn, "%s: %s", jobs[j].path, jobs[j].errmsg);
        if (!st && progress) progress(progress_user, w.k1 * n_jobs, total, "frames");
    }

    for (int j = 0; j < n_jobs; j++) {
        int cst = dk__mp4_close(jobs[j].mp4);
        jobs[j].mp4 = NULL;
        if (cst && !st) st = cst;
    }
    if (!st) st = write_json(s, cfg, out_dir, jobs, n_jobs, times, n_frames);
    for (int j = 0; j < n_jobs; j++) {
        dk_free(jobs[j].path);
        dk_free(jobs[j].frame);
        scratch_free(&jobs[j].sc);
    }
    dk_free(times);
    dk_free(jobs);
    return st;
}
