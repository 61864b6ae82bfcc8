/*
 * The procedural town: dk_world_generate.
 *
 * Layout (world frame FLU, metres; right-hand traffic as in the US and in
 * nuScenes' Boston logs, so traffic heading +x uses the y < 0 half):
 *
 *   main road   along x over [-X, X] (X >= 220, longer when the ego needs it),
 *               per side from the centre line out: `lanes_per_direction` lanes
 *               of 3.5 m, a 1.8 m bike lane, a 2.4 m parking strip, the kerb at
 *               |y| = K = 3.5 L + 4.2, then a 3 m sidewalk.
 *   cross road  along y over [-150, 150] at x = 0: one 3.5 m lane each way
 *               (+y traffic on x > 0), kerbs at |x| = 3.5, 3 m sidewalks.
 *   junction    signalised: the main road is green for the whole scenario, the
 *               cross road red, so cross traffic queues at its stop lines
 *               (|y| = K + 3.5) and nothing moves through the junction but
 *               main-road traffic. Crosswalks: across the main road at
 *               3.75 <= |x| <= 6.25, across the cross road at
 *               K + 0.5 <= |y| <= K + 2.5 (in line with the main sidewalks);
 *               main-road stop lines at |x| = 7. Lane lines break at |x| < 7.
 *   map         drivable area (one plus-shaped polygon), sidewalks, kerbs
 *               (road_boundaries), lane lines (double yellow centre, dashed
 *               white between lanes, solid white edge and bike-lane lines),
 *               lane centre lines in driving direction (lanes), crosswalk
 *               outlines and zebra stripes (road_markings), straight arrows
 *               before the stop lines, stop lines (wait_lines), street lights
 *               (8 m poles every 30 m), one traffic light per approach
 *               (0.35 x 0.35 x 1 m at 5 m on a pole), speed-limit signs.
 *
 * Traffic is simulated on lanes at 100 Hz with the Intelligent Driver Model
 * (accelerations bounded to [-7, a_max] m/s²), the ego included: it cruises
 * at ego_speed (+-5 %) in the second lane from the right (the only lane when
 * there is one), starting near x = -70, and through the junction on green.
 * Vehicles of the ego lane are faster than the ego and enter behind it, so the
 * ego keeps its speed. Same-lane vehicles follow each other; lanes are wide
 * enough that neighbours never touch; cross traffic stops at the red light
 * (a standing wall at the stop line). Of n_moving_vehicles about 80 % drive
 * the main road and 20 % the cross road; most are present at t = 0 near the
 * ego, the others enter during the drive (on the main road out of sensor range,
 * 150 m behind or 220 m ahead of the ego; on the cross road at its end) as
 * soon as the gap allows; vehicles leave at the road ends. Cyclists ride the
 * bike lanes the same way. Parked vehicles take 7 m slots of the parking
 * strips (none within 20 m of the junction). Pedestrians walk closed loops on
 * the sidewalks (two tracks 1 m apart joined by half circles); a share of the
 * main-sidewalk loops spans the junction, so those pedestrians cross the
 * cross road on its crosswalks, while its traffic waits at the red light.
 * A works area (4 barriers and 4 cones) lines the kerb of the ego's side
 * ahead of it. Counts are upper bounds: a vehicle that finds no room is left
 * out.
 *
 * Actor states are sampled at 20 Hz (10 Hz beyond 300 s), the ego's at every
 * simulation step; every actor z is its box centre height. Positions and yaws
 * are rounded to micrometres and microradians, sizes to millimetres, times to
 * k * duration / steps, so the JSON stays short and readable. All randomness is
 * Philox keyed by the seed, one stream per subsystem and item, so the same
 * (seed, config) gives the same scenario. A last check removes any actor
 * dk_scenario_collisions still reports (none is expected).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "world_impl.h"

#define LANE_W 3.5
#define BIKE_W 1.8
#define PARK_W 2.4
#define WALK_W 3.0
#define CROSS_HALF 3.5
#define CROSS_LEN 150.0
#define STOP_X 7.0
#define EGO_START_X (-70.0)
#define SIM_DT 0.01

enum {
    RNG_LAYOUT = 1, RNG_VEHICLE, RNG_CYCLIST, RNG_PEDESTRIAN, RNG_PARKED, RNG_WORKS, RNG_EGO,
};

/* ------------------------------------------------------------------------ */
/* Config                                                                    */

void dk_world_gen_config_init(dk_world_gen_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->seed = 1;
    cfg->duration = 20;
    cfg->start_us = 1533151603547590LL;
    cfg->lanes_per_direction = 2;
    cfg->n_moving_vehicles = 14;
    cfg->n_parked_vehicles = 10;
    cfg->n_pedestrians = 12;
    cfg->n_cyclists = 3;
    cfg->ego_speed = 9;
    cfg->camera_width = 1600;
    cfg->camera_height = 900;
}

static int check_config(const dk_world_gen_config *c)
{
    const char *f = "dk_world_generate";
    if (c->lanes_per_direction < 1 || c->lanes_per_direction > 4)
        return dk__error(DK_EINVAL, f, "lanes_per_direction: %d is outside [1, 4]",
                         c->lanes_per_direction);
    const struct {
        const char *name;
        int v;
    } counts[] = {{"n_moving_vehicles", c->n_moving_vehicles},
                  {"n_parked_vehicles", c->n_parked_vehicles},
                  {"n_pedestrians", c->n_pedestrians},
                  {"n_cyclists", c->n_cyclists}};
    for (int i = 0; i < 4; i++)
        if (counts[i].v < 0 || counts[i].v > 500)
            return dk__error(DK_EINVAL, f, "%s: %d is outside [0, 500]", counts[i].name,
                             counts[i].v);
    if (!(c->duration > 0 && c->duration <= 3600))
        return dk__error(DK_EINVAL, f, "duration: %g is outside (0, 3600] seconds", c->duration);
    if (!(c->ego_speed > 0 && c->ego_speed <= 40))
        return dk__error(DK_EINVAL, f, "ego_speed: %g is outside (0, 40] m/s", c->ego_speed);
    if (c->camera_width < 0 || c->camera_width > 65536)
        return dk__error(DK_EINVAL, f, "camera_width: %d is outside [0, 65536]",
                         c->camera_width);
    if (c->camera_height < 0 || c->camera_height > 65536)
        return dk__error(DK_EINVAL, f, "camera_height: %d is outside [0, 65536]",
                         c->camera_height);
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Generator state                                                           */

typedef struct lane {
    double ox, oy, dx, dy, length;
    double stop_s;      /* a standing wall (red light) at this s, or INFINITY */
    int dir;            /* +1 drives +x, -1 drives -x, 0 cross road */
} lane;

typedef struct veh {
    int lane;
    dk_actor_class cls;
    double size[3];
    double s, v, v0, a, b, T, s0;
    double t_spawn, jitter;
    int state;          /* 0 waiting, 1 on the road, 2 gone */
    int is_ego;
    dk_actor_state *st;
    int32_t n, cap;
} veh;

typedef struct gen {
    const dk_world_gen_config *cfg;
    dk_scenario *s;
    int L;
    double K, X, ego_x0, works_x;
    int n_lanes, ego_lane;
    lane lanes[12];
    veh *v;
    int nv;
    int64_t n_steps;
    int rec_every;
    double h;
} gen;

static double urand(dk_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * dk_rng_uniform_f64(r);
}

static void rng_for(const gen *g, dk_rng *r, uint64_t tag, uint64_t index)
{
    dk_rng_init(r, g->cfg->seed, dk_rng_stream_id(tag, index, 0, 0));
}

/* ------------------------------------------------------------------------ */
/* Map                                                                       */

/* Map coordinates are rounded to micrometres, so the JSON reads 11.2, not
 * 11.200000000000001. */
static double um(double v)
{
    return round(v * 1e6) / 1e6;
}

static int add_poly(gen *g, dk_map_layer layer, dk_line_style style, const double *pts, int n)
{
    dk_map_element e;
    memset(&e, 0, sizeof e);
    e.layer = layer;
    e.geometry = dk_map_layer_geometry(layer);
    e.style = style;
    e.id = g->s->n_map + 1;
    e.n_points = n;
    e.points = dk_malloc((size_t)n * 3 * sizeof(double));
    if (!e.points) return DK_ENOMEM;
    for (int i = 0; i < 3 * n; i++) e.points[i] = um(pts[i]);
    if (dk__scenario_append_map(g->s, &e)) {
        dk_free(e.points);
        return DK_ENOMEM;
    }
    return DK_OK;
}

static int add_line(gen *g, dk_map_layer layer, dk_line_style style, double x0, double y0,
                    double z0, double x1, double y1, double z1)
{
    const double p[6] = {x0, y0, z0, x1, y1, z1};
    return add_poly(g, layer, style, p, 2);
}

/* Axis-aligned rectangle, counter-clockwise. */
static int add_rect(gen *g, dk_map_layer layer, double x0, double y0, double x1, double y1)
{
    const double p[12] = {x0, y0, 0, x1, y0, 0, x1, y1, 0, x0, y1, 0};
    return add_poly(g, layer, DK_LINE_SOLID_WHITE, p, 4);
}

static int add_cuboid(gen *g, dk_map_layer layer, double x, double y, double z, double l,
                      double w, double h, double yaw)
{
    dk_map_element e;
    memset(&e, 0, sizeof e);
    e.layer = layer;
    e.geometry = DK_GEOM_CUBOID;
    e.id = g->s->n_map + 1;
    e.center[0] = um(x);
    e.center[1] = um(y);
    e.center[2] = um(z);
    e.size[0] = l;
    e.size[1] = w;
    e.size[2] = h;
    e.yaw = yaw;
    return dk__scenario_append_map(g->s, &e) ? DK_ENOMEM : DK_OK;
}

/* A straight arrow 5 m long at (x, y) pointing along yaw. */
static int add_arrow(gen *g, double x, double y, double yaw)
{
    static const double shape[7][2] = {{-2.5, -0.15}, {1.0, -0.15}, {1.0, -0.45}, {2.5, 0},
                                       {1.0, 0.45},   {1.0, 0.15},  {-2.5, 0.15}};
    double p[21], c = cos(yaw), s = sin(yaw);
    for (int i = 0; i < 7; i++) {
        p[3 * i] = x + c * shape[i][0] - s * shape[i][1];
        p[3 * i + 1] = y + s * shape[i][0] + c * shape[i][1];
        p[3 * i + 2] = 0;
    }
    return add_poly(g, DK_MAP_ROAD_MARKING, DK_LINE_SOLID_WHITE, p, 7);
}

static int build_map(gen *g)
{
    const double K = g->K, X = g->X, C = CROSS_HALF, Y = CROSS_LEN;
    const double LW = g->L * LANE_W, stop_y = K + WALK_W + 0.5;
    int st = 0;
#define TRY(call)                                                                    \
    do {                                                                             \
        if ((st = (call))) return st;                                                \
    } while (0)

    /* Surfaces. */
    const double plus[36] = {-X, -K, 0, -C, -K, 0, -C, -Y, 0, C, -Y, 0, C, -K, 0, X, -K, 0,
                             X,  K,  0, C,  K,  0, C,  Y,  0, -C, Y, 0, -C, K, 0, -X, K, 0};
    TRY(add_poly(g, DK_MAP_DRIVABLE_AREA, DK_LINE_SOLID_WHITE, plus, 12));
    TRY(add_rect(g, DK_MAP_SIDEWALK, -X, -K - WALK_W, -C, -K));
    TRY(add_rect(g, DK_MAP_SIDEWALK, C, -K - WALK_W, X, -K));
    TRY(add_rect(g, DK_MAP_SIDEWALK, -X, K, -C, K + WALK_W));
    TRY(add_rect(g, DK_MAP_SIDEWALK, C, K, X, K + WALK_W));
    TRY(add_rect(g, DK_MAP_SIDEWALK, -C - WALK_W, -Y, -C, -K - WALK_W));
    TRY(add_rect(g, DK_MAP_SIDEWALK, C, -Y, C + WALK_W, -K - WALK_W));
    TRY(add_rect(g, DK_MAP_SIDEWALK, -C - WALK_W, K + WALK_W, -C, Y));
    TRY(add_rect(g, DK_MAP_SIDEWALK, C, K + WALK_W, C + WALK_W, Y));

    /* Kerbs: one L-shaped line per corner. */
    const double sw[9] = {-X, -K, 0, -C, -K, 0, -C, -Y, 0};
    const double se[9] = {C, -Y, 0, C, -K, 0, X, -K, 0};
    const double ne[9] = {X, K, 0, C, K, 0, C, Y, 0};
    const double nw[9] = {-C, Y, 0, -C, K, 0, -X, K, 0};
    TRY(add_poly(g, DK_MAP_ROAD_BOUNDARY, DK_LINE_SOLID_WHITE, sw, 3));
    TRY(add_poly(g, DK_MAP_ROAD_BOUNDARY, DK_LINE_SOLID_WHITE, se, 3));
    TRY(add_poly(g, DK_MAP_ROAD_BOUNDARY, DK_LINE_SOLID_WHITE, ne, 3));
    TRY(add_poly(g, DK_MAP_ROAD_BOUNDARY, DK_LINE_SOLID_WHITE, nw, 3));

    /* Lane lines, west and east of the junction. */
    for (int side = -1; side <= 1; side += 2) {
        double xa = side < 0 ? -X : STOP_X, xb = side < 0 ? -STOP_X : X;
        TRY(add_line(g, DK_MAP_LANELINE, DK_LINE_DOUBLE_YELLOW, xa, 0, 0, xb, 0, 0));
        for (int sy = -1; sy <= 1; sy += 2) {
            for (int k = 1; k < g->L; k++)
                TRY(add_line(g, DK_MAP_LANELINE, DK_LINE_DASHED_WHITE, xa, sy * k * LANE_W, 0,
                             xb, sy * k * LANE_W, 0));
            TRY(add_line(g, DK_MAP_LANELINE, DK_LINE_SOLID_WHITE, xa, sy * LW, 0, xb, sy * LW, 0));
            TRY(add_line(g, DK_MAP_LANELINE, DK_LINE_SOLID_WHITE, xa, sy * (LW + BIKE_W), 0, xb,
                         sy * (LW + BIKE_W), 0));
        }
    }
    TRY(add_line(g, DK_MAP_LANELINE, DK_LINE_DOUBLE_YELLOW, 0, -Y, 0, 0, -stop_y, 0));
    TRY(add_line(g, DK_MAP_LANELINE, DK_LINE_DOUBLE_YELLOW, 0, stop_y, 0, 0, Y, 0));

    /* Lane centre lines in driving direction. */
    for (int k = 0; k < g->L; k++) {
        double y = (k + 0.5) * LANE_W;
        TRY(add_line(g, DK_MAP_LANE, DK_LINE_SOLID_WHITE, -X, -y, 0, X, -y, 0));
        TRY(add_line(g, DK_MAP_LANE, DK_LINE_SOLID_WHITE, X, y, 0, -X, y, 0));
    }
    TRY(add_line(g, DK_MAP_LANE, DK_LINE_SOLID_WHITE, C / 2, -Y, 0, C / 2, Y, 0));
    TRY(add_line(g, DK_MAP_LANE, DK_LINE_SOLID_WHITE, -C / 2, Y, 0, -C / 2, -Y, 0));

    /* Crosswalks with zebra stripes. */
    const double mx0 = C + 0.25, mx1 = C + 2.75, cy0 = K + 0.5, cy1 = K + 2.5;
    for (int sx = -1; sx <= 1; sx += 2) {
        double x0 = sx < 0 ? -mx1 : mx0, x1 = sx < 0 ? -mx0 : mx1;
        TRY(add_rect(g, DK_MAP_CROSSWALK, x0, -K, x1, K));
        for (double y = -K + 0.5; y + 0.5 <= K - 0.25; y += 1.0)
            TRY(add_rect(g, DK_MAP_ROAD_MARKING, x0, y, x1, y + 0.5));
    }
    for (int sy = -1; sy <= 1; sy += 2) {
        double y0 = sy < 0 ? -cy1 : cy0, y1 = sy < 0 ? -cy0 : cy1;
        TRY(add_rect(g, DK_MAP_CROSSWALK, -C, y0, C, y1));
        for (double x = -C + 0.5; x + 0.5 <= C - 0.25; x += 1.0)
            TRY(add_rect(g, DK_MAP_ROAD_MARKING, x, y0, x + 0.5, y1));
    }

    /* Stop lines and arrows. */
    TRY(add_line(g, DK_MAP_WAIT_LINE, DK_LINE_SOLID_WHITE, -STOP_X, 0, 0, -STOP_X, -(LW + BIKE_W),
                 0));
    TRY(add_line(g, DK_MAP_WAIT_LINE, DK_LINE_SOLID_WHITE, STOP_X, 0, 0, STOP_X, LW + BIKE_W, 0));
    TRY(add_line(g, DK_MAP_WAIT_LINE, DK_LINE_SOLID_WHITE, 0, -stop_y, 0, C, -stop_y, 0));
    TRY(add_line(g, DK_MAP_WAIT_LINE, DK_LINE_SOLID_WHITE, 0, stop_y, 0, -C, stop_y, 0));
    for (int k = 0; k < g->L; k++) {
        double y = (k + 0.5) * LANE_W;
        TRY(add_arrow(g, -STOP_X - 12, -y, 0));
        TRY(add_arrow(g, STOP_X + 12, y, M_PI));
    }
    TRY(add_arrow(g, C / 2, -stop_y - 12, M_PI / 2));
    TRY(add_arrow(g, -C / 2, stop_y + 12, -M_PI / 2));

    /* Traffic lights on 4.5 m poles, one per approach, facing it. */
    const double tl[4][3] = {{-STOP_X - 0.5, -K - 0.6, M_PI},
                             {STOP_X + 0.5, K + 0.6, 0},
                             {C + 0.6, -stop_y - 0.5, -M_PI / 2},
                             {-C - 0.6, stop_y + 0.5, M_PI / 2}};
    for (int i = 0; i < 4; i++) {
        TRY(add_line(g, DK_MAP_POLE, DK_LINE_SOLID_WHITE, tl[i][0], tl[i][1], 0, tl[i][0],
                     tl[i][1], 4.5));
        TRY(add_cuboid(g, DK_MAP_TRAFFIC_LIGHT, tl[i][0], tl[i][1], 5.0, 0.35, 0.35, 1.0,
                       tl[i][2]));
    }

    /* Street lights every 30 m along the main sidewalks and the cross road. */
    for (int sy = -1; sy <= 1; sy += 2) {
        double y = sy * (K + 0.4);
        for (double x = -X + 15; x <= X - 5; x += 30) {
            if (fabs(x) < 10) continue;
            if (sy < 0 && fabs(x - g->works_x) < 9) continue;
            TRY(add_line(g, DK_MAP_POLE, DK_LINE_SOLID_WHITE, x, y, 0, x, y, 8));
        }
        for (double yy = K + WALK_W + 15; yy <= Y - 5; yy += 30)
            TRY(add_line(g, DK_MAP_POLE, DK_LINE_SOLID_WHITE, sy * (C + 0.3), sy * yy, 0,
                         sy * (C + 0.3), sy * yy, 8));
    }

    /* Speed-limit signs every 120 m on 2 m posts, facing the traffic of their
       side; one on each cross-road approach. */
    for (int sy = -1; sy <= 1; sy += 2) {
        double y = sy * (K + 0.5), yaw = sy < 0 ? M_PI : 0;
        for (double x = -X + 60; x <= X - 30; x += 120) {
            if (fabs(x) < 20) continue;
            if (sy < 0 && fabs(x - g->works_x) < 10) continue;
            TRY(add_line(g, DK_MAP_POLE, DK_LINE_SOLID_WHITE, x, y, 0, x, y, 2.0));
            TRY(add_cuboid(g, DK_MAP_TRAFFIC_SIGN, x, y, 2.4, 0.05, 0.6, 0.75, yaw));
        }
        double sx = sy < 0 ? C + 0.3 : -C - 0.3, syy = sy * (stop_y + 40);
        TRY(add_line(g, DK_MAP_POLE, DK_LINE_SOLID_WHITE, sx, syy, 0, sx, syy, 2.0));
        TRY(add_cuboid(g, DK_MAP_TRAFFIC_SIGN, sx, syy, 2.4, 0.05, 0.75, 0.75,
                       sy < 0 ? -M_PI / 2 : M_PI / 2));
    }
#undef TRY
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Lanes and vehicles                                                        */

static void setup_lanes(gen *g)
{
    const double X = g->X, LW = g->L * LANE_W, stop_y = g->K + WALK_W + 0.5;
    int n = 0;
    for (int k = 0; k < g->L; k++) {
        double y = (k + 0.5) * LANE_W;
        g->lanes[n++] = (lane){-X, -y, 1, 0, 2 * X, INFINITY, 1};
        g->lanes[n++] = (lane){X, y, -1, 0, 2 * X, INFINITY, -1};
    }
    g->lanes[n++] = (lane){-X, -(LW + BIKE_W / 2), 1, 0, 2 * X, INFINITY, 1};
    g->lanes[n++] = (lane){X, LW + BIKE_W / 2, -1, 0, 2 * X, INFINITY, -1};
    g->lanes[n++] = (lane){CROSS_HALF / 2, -CROSS_LEN, 0, 1, 2 * CROSS_LEN, CROSS_LEN - stop_y, 0};
    g->lanes[n++] = (lane){-CROSS_HALF / 2, CROSS_LEN, 0, -1, 2 * CROSS_LEN, CROSS_LEN - stop_y, 0};
    g->n_lanes = n;
    /* Lane index 2k is +x lane k (k = 0 next to the centre line). */
    g->ego_lane = 2 * (g->L == 1 ? 0 : g->L - 2);
}

static void set_class(veh *v, dk_actor_class cls, dk_rng *r)
{
    v->cls = cls;
    double f = 1.0;
    switch (cls) {
    case DK_CLASS_TRUCK:
        v->size[0] = urand(r, 6.5, 9.0), v->size[1] = urand(r, 2.3, 2.5);
        v->size[2] = urand(r, 2.8, 3.4), v->a = 1.0, v->T = 1.7, f = 0.9;
        break;
    case DK_CLASS_BUS:
        v->size[0] = urand(r, 11, 12.5), v->size[1] = 2.55, v->size[2] = 3.2;
        v->a = 0.9, v->T = 1.8, f = 0.85;
        break;
    case DK_CLASS_TRAILER:
        v->size[0] = urand(r, 12, 15), v->size[1] = 2.55, v->size[2] = 3.8;
        v->a = 0.8, v->T = 1.8, f = 0.85;
        break;
    case DK_CLASS_CONSTRUCTION_VEHICLE:
        v->size[0] = urand(r, 6, 8), v->size[1] = 2.6, v->size[2] = 3.3;
        v->a = 0.8, v->T = 1.8, f = 0.7;
        break;
    case DK_CLASS_MOTORCYCLE:
        v->size[0] = 2.1, v->size[1] = 0.8, v->size[2] = 1.5, v->a = 2.0, v->T = 1.2, f = 1.05;
        break;
    case DK_CLASS_BICYCLE:
        v->size[0] = 1.75, v->size[1] = 0.65, v->size[2] = 1.7, v->a = 1.0, v->T = 1.0;
        break;
    default:
        v->size[0] = urand(r, 4.2, 4.9), v->size[1] = urand(r, 1.75, 1.95);
        v->size[2] = urand(r, 1.45, 1.75), v->a = 1.5, v->T = 1.3;
        break;
    }
    for (int k = 0; k < 3; k++) v->size[k] = round(v->size[k] * 1000) / 1000;
    v->b = cls == DK_CLASS_BICYCLE ? 1.5 : 2.0;
    v->s0 = cls == DK_CLASS_BICYCLE ? 1.5 : 2.0;
    v->v0 *= f;
}

static dk_actor_class pick_vehicle_class(dk_rng *r)
{
    double u = dk_rng_uniform_f64(r);
    if (u < 0.70) return DK_CLASS_CAR;
    if (u < 0.85) return DK_CLASS_TRUCK;
    if (u < 0.95) return DK_CLASS_BUS;
    if (u < 0.975) return DK_CLASS_MOTORCYCLE;
    if (u < 0.9875) return DK_CLASS_TRAILER;
    return DK_CLASS_CONSTRUCTION_VEHICLE;
}

static double ego_v0(const gen *g, double t)
{
    return g->cfg->ego_speed * (1 + 0.05 * sin(2 * M_PI * t / 16.0 + g->v[0].jitter));
}

static double idm(const veh *v, double v0, double gap, double dv)
{
    double x = v->v / v0, acc = v->a * (1 - x * x * x * x);
    if (isfinite(gap)) {
        double ss = v->s0 + fmax(0, v->v * v->T + v->v * dv / (2 * sqrt(v->a * v->b)));
        double gg = fmax(gap, 0.05);
        acc -= v->a * (ss / gg) * (ss / gg);
    }
    if (acc < -7) acc = -7;
    if (acc > v->a) acc = v->a;
    return acc;
}

/* Nearest vehicles on the road ahead of and behind position s of lane l. */
static void neighbours(const gen *g, int l, double s, int self, int *ahead, int *behind)
{
    *ahead = *behind = -1;
    for (int i = 0; i < g->nv; i++) {
        const veh *o = &g->v[i];
        if (i == self || o->state != 1 || o->lane != l) continue;
        if (o->s >= s) {
            if (*ahead < 0 || o->s < g->v[*ahead].s) *ahead = i;
        } else if (*behind < 0 || o->s > g->v[*behind].s) {
            *behind = i;
        }
    }
}

/* Acceleration of v at (its s, speed vv) given a leader and the lane's wall. */
static double accel_at(const gen *g, const veh *v, double v0, const veh *lead)
{
    double acc = idm(v, v0, INFINITY, 0);
    if (lead) {
        double gap = (lead->s - lead->size[0] / 2) - (v->s + v->size[0] / 2);
        acc = fmin(acc, idm(v, v0, gap, v->v - lead->v));
    }
    const lane *ln = &g->lanes[v->lane];
    if (isfinite(ln->stop_s) && v->s < ln->stop_s) {
        double gap = ln->stop_s - (v->s + v->size[0] / 2);
        acc = fmin(acc, idm(v, v0, gap, v->v));
    }
    return acc;
}

/* Highest speed not above v0 at which v would brake at most `limit`. */
static double safe_speed(const gen *g, veh *v, const veh *lead, double limit)
{
    double v0 = v->v0;
    for (double sp = v0;; sp -= 0.25) {
        if (sp < 0) sp = 0;
        v->v = sp;
        if (accel_at(g, v, v0, lead) >= limit || sp == 0) return sp;
    }
}

static int clear_of(const gen *g, const veh *v, double s, double margin)
{
    for (int i = 0; i < g->nv; i++) {
        const veh *o = &g->v[i];
        if (o == v || o->state != 1 || o->lane != v->lane) continue;
        double need = (o->size[0] + v->size[0]) / 2 + fmax(o->s0, v->s0) + margin;
        if (o->is_ego || v->is_ego) need += 12;
        if (fabs(o->s - s) < need) return 0;
    }
    return 1;
}

static double lane_x_to_s(const lane *ln, double x)
{
    return ln->dx > 0 ? x - ln->ox : ln->ox - x;
}

/* Tries to put a waiting vehicle on the road at time t. */
static void try_spawn(gen *g, int i, double t)
{
    veh *v = &g->v[i];
    const lane *ln = &g->lanes[v->lane];
    const veh *ego = &g->v[0];
    double s;
    if (ln->dir == 0) {
        s = v->size[0] / 2 + 1;
    } else {
        double ex = g->lanes[ego->lane].ox + ego->s, x;
        if (ln->dir > 0 && (v->v0 > ego->v + 0.5 || v->lane == g->ego_lane))
            x = ex - 150 - 20 * v->jitter;
        else
            x = ex + 220 + 20 * v->jitter;
        s = lane_x_to_s(ln, x);
        double lo = v->size[0] / 2 + 1, hi = ln->length - v->size[0] / 2 - 30;
        if (s < lo) s = lo;
        if (s > hi) return;
    }
    if (!clear_of(g, v, s, 8 + v->v0 * v->T)) return;
    int ahead, behind;
    neighbours(g, v->lane, s, i, &ahead, &behind);
    v->s = s;
    double sp = safe_speed(g, v, ahead >= 0 ? &g->v[ahead] : NULL, -1.0);
    if (ln->dir != 0 && sp < 0.5 * v->v0) return;
    v->v = sp;
    if (behind >= 0) {
        veh *f = &g->v[behind];
        double v0f = f->is_ego ? ego_v0(g, t) : f->v0;
        if (accel_at(g, f, v0f, v) < -1.0) return;
    }
    v->state = 1;
}

/* Time of simulation step k: k * duration / n_steps, so 0.35 reads 0.35. */
static double step_t(const gen *g, int64_t k)
{
    return (double)k * g->cfg->duration / (double)g->n_steps;
}

static int record(veh *v, double t, double x, double y, double z, double yaw)
{
    if (v->n == v->cap) {
        int32_t cap = v->cap ? 2 * v->cap : 64;
        dk_actor_state *p = dk_realloc(v->st, (size_t)cap * sizeof *p);
        if (!p) return DK_ENOMEM;
        v->st = p;
        v->cap = cap;
    }
    v->st[v->n++] = (dk_actor_state){t, um(x), um(y), um(z), um(yaw)};
    return DK_OK;
}

static int cmp_lane_s(const gen *g, int a, int b)
{
    const veh *x = &g->v[a], *y = &g->v[b];
    if (x->lane != y->lane) return x->lane < y->lane ? -1 : 1;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    return a < b ? -1 : 1;
}

static int simulate(gen *g)
{
    int *order = dk_malloc((size_t)(g->nv ? g->nv : 1) * sizeof *order);
    double *acc = dk_malloc((size_t)(g->nv ? g->nv : 1) * sizeof *acc);
    int st = DK_OK;
    if (!order || !acc) {
        st = DK_ENOMEM;
        goto done;
    }
    for (int64_t k = 0; k <= g->n_steps; k++) {
        double t = step_t(g, k);
        /* Every 0.1 s, the longest-waiting vehicle of each lane tries to
           enter (the others queue behind it). */
        if (k % 10 == 0 && t > 0) {
            int first[12];
            for (int l = 0; l < g->n_lanes; l++) first[l] = -1;
            for (int i = 1; i < g->nv; i++) {
                const veh *v = &g->v[i];
                if (v->state != 0 || v->t_spawn > t) continue;
                if (first[v->lane] < 0 || v->t_spawn < g->v[first[v->lane]].t_spawn)
                    first[v->lane] = i;
            }
            for (int l = 0; l < g->n_lanes; l++)
                if (first[l] >= 0) try_spawn(g, first[l], t);
        }
        /* Record. */
        for (int i = 0; i < g->nv; i++) {
            veh *v = &g->v[i];
            if (v->state != 1 || (!v->is_ego && k % g->rec_every)) continue;
            const lane *ln = &g->lanes[v->lane];
            double yaw = atan2(ln->dy, ln->dx);
            double sc = v->is_ego ? v->s - DK_EGO_BOX_OFFSET_X : v->s;
            double z = v->is_ego ? 0 : v->size[2] / 2;
            if ((st = record(v, t, ln->ox + sc * ln->dx, ln->oy + sc * ln->dy, z, yaw))) goto done;
        }
        if (k == g->n_steps) break;
        /* Order the vehicles on the road by (lane, s): leaders follow. */
        int m = 0;
        for (int i = 0; i < g->nv; i++)
            if (g->v[i].state == 1) order[m++] = i;
        for (int a = 1; a < m; a++) {
            int x = order[a], b = a - 1;
            while (b >= 0 && cmp_lane_s(g, order[b], x) > 0) {
                order[b + 1] = order[b];
                b--;
            }
            order[b + 1] = x;
        }
        for (int a = 0; a < m; a++) {
            veh *v = &g->v[order[a]];
            const veh *lead = a + 1 < m && g->v[order[a + 1]].lane == v->lane
                                  ? &g->v[order[a + 1]]
                                  : NULL;
            acc[order[a]] = accel_at(g, v, v->is_ego ? ego_v0(g, t) : v->v0, lead);
        }
        /* Integrate front to back so a follower sees its leader's new place. */
        for (int a = m - 1; a >= 0; a--) {
            veh *v = &g->v[order[a]];
            double nv = v->v + acc[order[a]] * g->h;
            if (nv < 0) nv = 0;
            v->s += (v->v + nv) / 2 * g->h;
            v->v = nv;
            const veh *lead = a + 1 < m && g->v[order[a + 1]].lane == v->lane
                                  ? &g->v[order[a + 1]]
                                  : NULL;
            if (lead) {
                /* Last resort against overlap (IDM should never need it). */
                double lim = lead->s - lead->size[0] / 2 - v->size[0] / 2 - 0.5;
                if (v->s > lim) {
                    v->s = lim;
                    if (v->v > lead->v) v->v = lead->v;
                }
            }
            const lane *ln = &g->lanes[v->lane];
            if (!v->is_ego && v->s + v->size[0] / 2 > ln->length) v->state = 2;
        }
    }
done:
    dk_free(order);
    dk_free(acc);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Vehicles: placement                                                        */

static int add_vehicles(gen *g)
{
    const dk_world_gen_config *c = g->cfg;
    int n_main = c->n_moving_vehicles - (int)lround(0.2 * c->n_moving_vehicles);
    int total = 1 + c->n_moving_vehicles + c->n_cyclists;
    g->v = dk_calloc((size_t)total, sizeof *g->v);
    if (!g->v) return DK_ENOMEM;
    g->nv = total;
    dk_rng r;

    /* The ego. */
    veh *ego = &g->v[0];
    rng_for(g, &r, RNG_EGO, 0);
    ego->is_ego = 1;
    ego->lane = g->ego_lane;
    ego->cls = DK_CLASS_CAR;
    ego->size[0] = g->s->ego.size[0];
    ego->size[1] = g->s->ego.size[1];
    ego->size[2] = g->s->ego.size[2];
    ego->a = 1.2, ego->b = 2.0, ego->T = 1.5, ego->s0 = 2.5;
    ego->v0 = c->ego_speed;
    ego->jitter = urand(&r, 0, 2 * M_PI);
    ego->s = lane_x_to_s(&g->lanes[ego->lane], g->ego_x0) + DK_EGO_BOX_OFFSET_X;
    ego->v = c->ego_speed;
    ego->state = 1;

    for (int i = 1; i < total; i++) {
        veh *v = &g->v[i];
        int vi = i - 1, cyclist = vi >= c->n_moving_vehicles;
        rng_for(g, &r, cyclist ? RNG_CYCLIST : RNG_VEHICLE, (uint64_t)vi);
        v->jitter = dk_rng_uniform_f64(&r);
        if (cyclist) {
            v->lane = 2 * g->L + (int)dk_rng_below(&r, 2);
            v->v0 = urand(&r, 4.0, 6.5);
            set_class(v, DK_CLASS_BICYCLE, &r);
        } else if (vi < n_main) {
            v->lane = (int)dk_rng_below(&r, (uint32_t)(2 * g->L));
            v->v0 = c->ego_speed * urand(&r, 0.8, 1.2);
            if (v->lane == g->ego_lane) v->v0 = c->ego_speed * urand(&r, 1.12, 1.3);
            set_class(v, pick_vehicle_class(&r), &r);
            if (v->lane == g->ego_lane && v->v0 < 1.1 * c->ego_speed) v->v0 = 1.1 * c->ego_speed;
            double vmax = fmax(30, 1.15 * c->ego_speed);
            if (v->v0 > vmax) v->v0 = vmax;
            if (v->v0 < 3) v->v0 = 3;
        } else {
            v->lane = g->n_lanes - 2 + (int)dk_rng_below(&r, 2);
            v->v0 = urand(&r, 7, 12);
            dk_actor_class cls = dk_rng_uniform_f64(&r) < 0.85 ? DK_CLASS_CAR : DK_CLASS_TRUCK;
            set_class(v, cls, &r);
        }
        /* About 70 % start on the road, the rest enter during the drive. */
        int initial = dk_rng_uniform_f64(&r) < 0.7;
        v->t_spawn = initial ? 0 : urand(&r, 0.05, 1.0) * c->duration;
        if (!initial) continue;
        const lane *ln = &g->lanes[v->lane];
        double lo, hi;
        if (ln->dir == 0) {
            lo = v->size[0] / 2 + 1;
            hi = ln->stop_s - v->size[0] / 2 - v->s0 - 1;
        } else {
            double a = lane_x_to_s(ln, g->ego_x0 - 100), b = lane_x_to_s(ln, g->ego_x0 + 250);
            lo = fmax(fmin(a, b), v->size[0] / 2 + 1);
            hi = fmin(fmax(a, b), ln->length - v->size[0] / 2 - 30);
        }
        int placed = 0;
        for (int tries = 0; tries < 40 && hi > lo && !placed; tries++) {
            double s = urand(&r, lo, hi);
            if (clear_of(g, v, s, 4 + 0.5 * v->v0 * v->T)) {
                v->s = s;
                v->state = 1;
                placed = 1;
            }
        }
        if (!placed) v->t_spawn = urand(&r, 0.05, 1.0) * c->duration;
    }

    /* Initial speeds, front to back in every lane. */
    for (int l = 0; l < g->n_lanes; l++) {
        for (;;) {
            /* The frontmost vehicle of lane l not yet given a speed. */
            int best = -1;
            for (int i = 0; i < g->nv; i++) {
                veh *v = &g->v[i];
                if (v->state != 1 || v->lane != l || v->t_spawn < 0) continue;
                if (best < 0 || v->s > g->v[best].s) best = i;
            }
            if (best < 0) break;
            veh *v = &g->v[best];
            int ahead, behind;
            neighbours(g, l, v->s, best, &ahead, &behind);
            double sp = safe_speed(g, v, ahead >= 0 ? &g->v[ahead] : NULL, -1.0);
            v->v = v->is_ego ? fmin(c->ego_speed, fmax(sp, 0.5 * c->ego_speed)) : sp;
            v->t_spawn = -1;   /* marks "done"; reset below */
        }
    }
    for (int i = 0; i < g->nv; i++)
        if (g->v[i].t_spawn < 0) g->v[i].t_spawn = 0;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Pedestrians: closed loops on the sidewalks                               */

typedef struct loop {
    double cx, cy, ux, uy, half, r;
} loop;

static void loop_at(const loop *lp, double q, double *x, double *y, double *yaw)
{
    const double Lh = lp->half, r = lp->r, nx = -lp->uy, ny = lp->ux;
    double per = 4 * Lh + 2 * M_PI * r;
    q = fmod(q, per);
    if (q < 0) q += per;
    double a, b, hx, hy;   /* position along u and n, heading */
    if (q < 2 * Lh) {
        a = -Lh + q, b = -r, hx = lp->ux, hy = lp->uy;
    } else if (q < 2 * Lh + M_PI * r) {
        double th = (q - 2 * Lh) / r;
        a = Lh + r * sin(th), b = -r * cos(th);
        hx = cos(th) * lp->ux + sin(th) * nx, hy = cos(th) * lp->uy + sin(th) * ny;
    } else if (q < 4 * Lh + M_PI * r) {
        a = Lh - (q - 2 * Lh - M_PI * r), b = r, hx = -lp->ux, hy = -lp->uy;
    } else {
        double th = (q - 4 * Lh - M_PI * r) / r;
        a = -Lh - r * sin(th), b = r * cos(th);
        hx = -cos(th) * lp->ux - sin(th) * nx, hy = -cos(th) * lp->uy - sin(th) * ny;
    }
    *x = lp->cx + a * lp->ux + b * nx;
    *y = lp->cy + a * lp->uy + b * ny;
    *yaw = atan2(hy, hx);
}

static int n_samples(const gen *g)
{
    return (int)(g->n_steps / g->rec_every) + 1;
}

static double sample_t(const gen *g, int j)
{
    int64_t k = (int64_t)j * g->rec_every;
    return step_t(g, k);
}

static int append_actor(gen *g, dk_actor_class cls, const double size[3], int parked,
                        dk_actor_state *st, int32_t n)
{
    dk_actor a;
    memset(&a, 0, sizeof a);
    a.id = g->s->n_actors + 1;
    a.cls = cls;
    memcpy(a.size, size, sizeof a.size);
    a.parked = parked;
    a.states = st;
    a.n_states = n;
    if (dk__scenario_append_actor(g->s, &a)) {
        dk_free(st);
        return DK_ENOMEM;
    }
    return DK_OK;
}

static int add_pedestrians(gen *g)
{
    const double K = g->K, X = g->X, C = CROSS_HALF;
    int ns = n_samples(g);
    double ego_end = g->ego_x0 + 1.1 * g->cfg->ego_speed * g->cfg->duration;
    for (int i = 0; i < g->cfg->n_pedestrians; i++) {
        dk_rng r;
        rng_for(g, &r, RNG_PEDESTRIAN, (uint64_t)i);
        loop lp = {0, 0, 1, 0, 0, 0.5};
        double u = dk_rng_uniform_f64(&r);
        if (u < 0.7) {
            /* Main sidewalks; 40 % of these loops span the junction. */
            double sy = dk_rng_uniform_f64(&r) < 0.5 ? -1 : 1;
            double x0, x1;
            if (dk_rng_uniform_f64(&r) < 0.4) {
                x0 = -urand(&r, 8, 60), x1 = urand(&r, 8, 60);
            } else {
                /* Along the ego's drive; both turns on a sidewalk, clear of
                   the cross road (resampled until they are). */
                double lo = fmax(-X + 10, g->ego_x0 - 40), hi = fmin(X - 10, ego_end + 40);
                x0 = -30, x1 = -10;
                for (int tries = 0; tries < 20; tries++) {
                    double len = urand(&r, 20, 120), mid = urand(&r, lo, hi);
                    double a = fmax(mid - len / 2, -X + 2), b = fmin(mid + len / 2, X - 2);
                    if (fabs(a) >= 6 && fabs(b) >= 6 && b - a >= 4) {
                        x0 = a, x1 = b;
                        break;
                    }
                }
            }
            lp.cx = (x0 + x1) / 2, lp.cy = sy * (K + 1.8), lp.half = (x1 - x0) / 2;
        } else {
            /* Cross-road sidewalks, away from the main road. */
            double sx = dk_rng_uniform_f64(&r) < 0.5 ? -1 : 1;
            double sy = dk_rng_uniform_f64(&r) < 0.5 ? -1 : 1;
            double y0 = K + WALK_W + 3, y1 = CROSS_LEN - 2;
            double len = urand(&r, 15, 60), mid = urand(&r, y0 + len / 2, y1 - len / 2);
            lp.cx = sx * (C + 1.5), lp.cy = sy * mid, lp.ux = 0, lp.uy = 1, lp.half = len / 2;
        }
        double v = urand(&r, 1.0, 1.6), q0 = urand(&r, 0, 4 * lp.half + 2 * M_PI * lp.r);
        double w = 2 * M_PI / urand(&r, 6, 12), ph = urand(&r, 0, 2 * M_PI);
        double size[3] = {urand(&r, 0.6, 0.8), urand(&r, 0.6, 0.75), urand(&r, 1.6, 1.9)};
        for (int q = 0; q < 3; q++) size[q] = round(size[q] * 1000) / 1000;
        dk_actor_state *st = dk_malloc((size_t)ns * sizeof *st);
        if (!st) return DK_ENOMEM;
        for (int j = 0; j < ns; j++) {
            double t = sample_t(g, j);
            /* Speed v (1 + 0.05 sin(w t + ph)), integrated. */
            double q = q0 + v * t + v * 0.05 * (cos(ph) - cos(w * t + ph)) / w;
            double x, y, yaw;
            loop_at(&lp, q, &x, &y, &yaw);
            st[j] = (dk_actor_state){t, um(x), um(y), size[2] / 2, um(yaw)};
        }
        int rc = append_actor(g, DK_CLASS_PEDESTRIAN, size, 0, st, ns);
        if (rc) return rc;
    }
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Static actors                                                             */

static int add_static(gen *g, dk_actor_class cls, const double size[3], double x, double y,
                      double yaw)
{
    dk_actor_state *st = dk_malloc(2 * sizeof *st);
    if (!st) return DK_ENOMEM;
    st[0] = (dk_actor_state){0, um(x), um(y), size[2] / 2, um(yaw)};
    st[1] = st[0];
    st[1].t = g->cfg->duration;
    return append_actor(g, cls, size, 1, st, 2);
}

static int add_parked(gen *g)
{
    const double X = g->X, yc = g->L * LANE_W + BIKE_W + PARK_W / 2, slot = 7.0;
    /* 7 m slots on both sides along the ego's drive, taken at random. */
    double lo = fmax(-X + 10, g->ego_x0 - 100);
    double hi = fmin(X - 10, g->ego_x0 + 1.1 * g->cfg->ego_speed * g->cfg->duration + 100);
    int n_per = (int)((hi - lo) / slot);
    if (n_per < 0) n_per = 0;
    int n_slots = 2 * n_per;
    int *slots = dk_malloc((size_t)(n_slots ? n_slots : 1) * sizeof *slots);
    if (!slots) return DK_ENOMEM;
    int m = 0;
    for (int i = 0; i < n_slots; i++) {
        double x = lo + (i % n_per + 0.5) * slot;
        if (fabs(x) < 20) continue;
        slots[m++] = i;
    }
    dk_rng r;
    rng_for(g, &r, RNG_PARKED, 0);
    for (int i = m - 1; i > 0; i--) {   /* Fisher-Yates */
        int j = (int)dk_rng_below(&r, (uint32_t)(i + 1)), tmp = slots[i];
        slots[i] = slots[j];
        slots[j] = tmp;
    }
    int n = g->cfg->n_parked_vehicles < m ? g->cfg->n_parked_vehicles : m, st = DK_OK;
    for (int k = 0; k < n && !st; k++) {
        int i = slots[k], side = i / n_per ? 1 : -1;
        dk_rng rv;
        rng_for(g, &rv, RNG_PARKED, (uint64_t)k + 1);
        double size[3];
        if (dk_rng_uniform_f64(&rv) < 0.9) {
            size[0] = urand(&rv, 4.2, 4.9), size[1] = urand(&rv, 1.75, 1.95);
            size[2] = urand(&rv, 1.45, 1.75);
        } else {
            size[0] = urand(&rv, 5.4, 5.9), size[1] = urand(&rv, 2.0, 2.1);
            size[2] = urand(&rv, 2.2, 2.6);
        }
        for (int q = 0; q < 3; q++) size[q] = round(size[q] * 1000) / 1000;
        dk_actor_class cls = size[0] > 5 ? DK_CLASS_TRUCK : DK_CLASS_CAR;
        double room = (slot - size[0]) / 2 - 0.4;
        double x = lo + (i % n_per + 0.5) * slot + urand(&rv, -room, room);
        double y = side * yc + urand(&rv, -0.08, 0.08);
        double yaw = (side < 0 ? 0 : M_PI) + urand(&rv, -0.02, 0.02);
        st = add_static(g, cls, size, x, y, yaw);
    }
    dk_free(slots);
    return st;
}

static int add_works(gen *g)
{
    const double y = -(g->K + 0.45), x0 = g->works_x - 4.3;
    static const double barrier[3] = {2.0, 0.5, 1.0}, cone[3] = {0.4, 0.4, 0.7};
    int st = DK_OK;
    for (int i = 0; i < 4 && !st; i++) st = add_static(g, DK_CLASS_BARRIER, barrier, x0 + 0.2 + i * 2.2 + 1.0, y, 0);
    for (int i = 0; i < 2 && !st; i++) {
        st = add_static(g, DK_CLASS_TRAFFIC_CONE, cone, x0 - 0.6 - i * 0.8, y, 0);
        if (!st) st = add_static(g, DK_CLASS_TRAFFIC_CONE, cone, x0 + 9.4 + i * 0.8, y, 0);
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* Putting it together                                                       */

static int emit_vehicles(gen *g)
{
    /* The ego. */
    veh *e = &g->v[0];
    dk_free(g->s->ego.states);
    g->s->ego.states = e->st;
    g->s->ego.n_states = e->n;
    e->st = NULL;
    for (int i = 1; i < g->nv; i++) {
        veh *v = &g->v[i];
        if (v->n < 2) continue;
        dk_actor_state *st = v->st;
        v->st = NULL;
        int rc = append_actor(g, v->cls, v->size, 0, st, v->n);
        if (rc) return rc;
    }
    return DK_OK;
}

static int resolve_collisions(gen *g)
{
    for (int iter = 0; iter < 200; iter++) {
        dk_collision col[64];
        int n = 0, st = dk_scenario_collisions(g->s, 0.05, col, 64, &n);
        if (st) return st;
        if (n == 0) return DK_OK;
        int m = n < 64 ? n : 64;
        for (int k = 0; k < m; k++) {
            /* Remove the later (larger id) actor of the pair, never the ego. */
            int32_t id = col[k].a > col[k].b ? col[k].a : col[k].b;
            if (dk_scenario_find_actor(g->s, id) >= 0) dk_scenario_remove_actor(g->s, id);
        }
    }
    return DK_EINTERNAL;
}

int dk_world_generate(const dk_world_gen_config *cfg, dk_scenario **out)
{
    if (!cfg || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    *out = NULL;
    int st = check_config(cfg);
    if (st) return st;
    gen g;
    memset(&g, 0, sizeof g);
    g.cfg = cfg;
    if ((st = dk_scenario_create(&g.s))) return st;
    dk_scenario *s = g.s;
    snprintf(s->name, sizeof s->name, "scene-%04llu", (unsigned long long)cfg->seed);
    snprintf(s->location, sizeof s->location, "drivekit-town");
    s->seed = cfg->seed;
    s->start_us = cfg->start_us;
    s->duration = cfg->duration;
    dk_rig_nuscenes(&s->rig, cfg->camera_width, cfg->camera_height);

    dk_rng r;
    rng_for(&g, &r, RNG_LAYOUT, 0);
    g.L = cfg->lanes_per_direction;
    g.K = g.L * LANE_W + BIKE_W + PARK_W;
    g.ego_x0 = EGO_START_X + urand(&r, -5, 5);
    double reach = g.ego_x0 + 1.1 * cfg->ego_speed * cfg->duration + 150;
    g.X = fmax(220, 10 * ceil(reach / 10));
    g.works_x = g.ego_x0 + urand(&r, 30, 40);
    if (fabs(g.works_x) < 26) g.works_x = g.works_x < 0 ? -26 : 26;
    g.rec_every = cfg->duration <= 300 ? 5 : 10;
    g.n_steps = g.rec_every * (int64_t)ceil(cfg->duration / (SIM_DT * g.rec_every) - 1e-9);
    if (g.n_steps < g.rec_every) g.n_steps = g.rec_every;
    g.h = cfg->duration / (double)g.n_steps;
    setup_lanes(&g);

    if ((st = build_map(&g)) || (st = add_vehicles(&g)) || (st = simulate(&g)) ||
        (st = emit_vehicles(&g)) || (st = add_pedestrians(&g)) || (st = add_parked(&g)) ||
        (st = add_works(&g)))
        goto fail;
    if ((st = resolve_collisions(&g))) goto fail;
    if ((st = dk_scenario_validate(s))) {
        char inner[DK_ERRMSG_MAX];
        snprintf(inner, sizeof inner, "%s", dk_errmsg());
        st = dk__error(DK_EINTERNAL, __func__, "generated an invalid scenario: %s", inner);
        goto fail_msg;
    }
    for (int i = 0; i < g.nv; i++) dk_free(g.v[i].st);
    dk_free(g.v);
    *out = s;
    return DK_OK;
fail:
    if (st == DK_ENOMEM) dk__error(st, __func__, "out of memory");
    else if (st == DK_EINTERNAL) dk__error(st, __func__, "could not resolve collisions");
fail_msg:
    for (int i = 0; i < g.nv; i++) dk_free(g.v[i].st);
    dk_free(g.v);
    dk_scenario_destroy(s);
    return st;
}
