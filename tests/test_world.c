/* Tests for the scenario core of src/world: the model (scenario.c), its JSON
 * form (scenario_json.c), the generator (generate.c) and the edits (edit.c).
 * The render, conditions and nuScenes tables live in their own files and run
 * from this binary too. */
#include <unistd.h>

#include "dk_test.h"
#include "world/world_impl.h"

extern const dk_test_case dk_tests_render[];
extern const size_t dk_tests_render_count;
extern const dk_test_case dk_tests_conditions[];
extern const size_t dk_tests_conditions_count;
extern const dk_test_case dk_tests_nuscenes[];
extern const size_t dk_tests_nuscenes_count;

#define PI 3.14159265358979323846

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static dk_actor make_actor(int32_t id, dk_actor_class cls, double l, double w, double h,
                           dk_actor_state *st, int32_t n)
{
    dk_actor a;
    memset(&a, 0, sizeof a);
    a.id = id;
    a.cls = cls;
    a.size[0] = l;
    a.size[1] = w;
    a.size[2] = h;
    a.states = st;
    a.n_states = n;
    return a;
}

/* A scenario with the ego parked far away (so hand-made pairs meet alone). */
static dk_scenario *bare(double duration)
{
    dk_scenario *s = NULL;
    if (dk_scenario_create(&s)) return NULL;
    s->duration = duration;
    s->ego.states[0].x = -1000;
    return s;
}

static char *read_text(const char *path, size_t *len)
{
    uint8_t *data = NULL;
    size_t n = 0;
    if (dk_file_read(path, &data, &n)) return NULL;
    char *t = malloc(n + 1);
    memcpy(t, data, n);
    t[n] = '\0';
    dk_free(data);
    if (len) *len = n;
    return t;
}

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/dk_world_%d_%s", dk_test_tmpdir(), (int)getpid(), name);
}

static dk_scenario *gen(uint64_t seed, int lanes, double duration)
{
    dk_world_gen_config g;
    dk_world_gen_config_init(&g);
    g.seed = seed;
    g.lanes_per_direction = lanes;
    g.duration = duration;
    dk_scenario *s = NULL;
    if (dk_world_generate(&g, &s)) {
        fprintf(stderr, "  generate: %s\n", dk_errmsg());
        return NULL;
    }
    return s;
}

static int count_collisions(const dk_scenario *s)
{
    int n = -1;
    dk_collision c[4];
    if (dk_scenario_collisions(s, 0.05, c, 4, &n)) return -1;
    for (int i = 0; i < n && i < 4; i++)
        fprintf(stderr, "  collision %d-%d at t=%.2f\n", (int)c[i].a, (int)c[i].b, c[i].t);
    return n;
}

/* Actor position at t in the ego's frame (x ahead of the rear axle, y left). */
static int in_ego_frame(const dk_scenario *s, const dk_actor *a, double t, double *fx,
                        double *fy, double vel[3])
{
    dk_actor_state st;
    if (!dk_actor_state_at(a, t, &st, vel)) return 0;
    dk_pose e = dk_scenario_ego_pose(s, t);
    double yaw = dk_pose_yaw(&e), c = cos(yaw), sn = sin(yaw);
    double dx = st.x - e.t[0], dy = st.y - e.t[1];
    *fx = c * dx + sn * dy;
    *fy = -sn * dx + c * dy;
    return 1;
}

static int point_in_poly(const double *pts, int n, double x, double y)
{
    int in = 0;
    for (int i = 0, j = n - 1; i < n; j = i++) {
        double xi = pts[3 * i], yi = pts[3 * i + 1], xj = pts[3 * j], yj = pts[3 * j + 1];
        if ((yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) in = !in;
    }
    return in;
}

static int in_layer(const dk_scenario *s, dk_map_layer layer, double x, double y)
{
    for (int32_t i = 0; i < s->n_map; i++)
        if (s->map[i].layer == layer &&
            point_in_poly(s->map[i].points, s->map[i].n_points, x, y))
            return 1;
    return 0;
}

static int is_vehicle(dk_actor_class c)
{
    return c != DK_CLASS_PEDESTRIAN && c != DK_CLASS_TRAFFIC_CONE && c != DK_CLASS_BARRIER;
}

/* ------------------------------------------------------------------------ */
/* Names                                                                     */

static void test_names(void)
{
    dk_map_layer l;
    for (int i = 0; i < DK_MAP_LAYER_COUNT; i++) {
        DK_CHECK_OK(dk_map_layer_parse(dk_map_layer_name((dk_map_layer)i), &l));
        DK_CHECK_EQ_INT(l, i);
    }
    DK_CHECK_STR(dk_map_layer_name(DK_MAP_LANELINE), "lanelines");
    DK_CHECK_STR(dk_map_layer_name(DK_MAP_SIDEWALK), "sidewalks");
    DK_CHECK_STR(dk_map_layer_name(DK_MAP_LAYER_COUNT), "unknown");
    DK_CHECK_STATUS(dk_map_layer_parse("roads", &l), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "roads");
    DK_CHECK_EQ_INT(dk_map_layer_geometry(DK_MAP_POLE), DK_GEOM_POLYLINE);
    DK_CHECK_EQ_INT(dk_map_layer_geometry(DK_MAP_CROSSWALK), DK_GEOM_POLYGON);
    DK_CHECK_EQ_INT(dk_map_layer_geometry(DK_MAP_TRAFFIC_LIGHT), DK_GEOM_CUBOID);
    DK_CHECK_EQ_INT(dk_map_layer_geometry(DK_MAP_DRIVABLE_AREA), DK_GEOM_POLYGON);

    static const char *const names[] = {"car", "truck", "bus", "trailer", "construction_vehicle",
                                        "pedestrian", "motorcycle", "bicycle", "traffic_cone",
                                        "barrier"};
    dk_actor_class c;
    for (int i = 0; i < DK_CLASS_COUNT; i++) {
        DK_CHECK_STR(dk_actor_class_name((dk_actor_class)i), names[i]);
        DK_CHECK_OK(dk_actor_class_parse(names[i], &c));
        DK_CHECK_EQ_INT(c, i);
        DK_CHECK_OK(dk_actor_class_parse(dk_actor_class_category((dk_actor_class)i), &c));
        DK_CHECK_EQ_INT(c, i);
    }
    DK_CHECK_STR(dk_actor_class_category(DK_CLASS_BUS), "vehicle.bus.rigid");
    DK_CHECK_STR(dk_actor_class_category(DK_CLASS_PEDESTRIAN), "human.pedestrian.adult");
    DK_CHECK_STR(dk_actor_class_category(DK_CLASS_TRAFFIC_CONE), "movable_object.trafficcone");
    DK_CHECK_STATUS(dk_actor_class_parse("tank", &c), DK_EINVAL);

    static const char *const edits[] = {"cut-in", "hard-brake", "jaywalk", "stopped-vehicle",
                                        "wrong-way"};
    dk_edit_kind k;
    for (int i = 0; i < DK_EDIT_COUNT; i++) {
        DK_CHECK_STR(dk_edit_kind_name((dk_edit_kind)i), edits[i]);
        DK_CHECK_OK(dk_edit_kind_parse(edits[i], &k));
        DK_CHECK_EQ_INT(k, i);
    }
    DK_CHECK_STATUS(dk_edit_kind_parse("cutin", &k), DK_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Model                                                                     */

static void test_create_destroy_clone(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = NULL, *c = NULL;
    DK_CHECK_OK(dk_scenario_create(&s));
    DK_CHECK_STR(s->name, "scene-0001");
    DK_CHECK_STR(s->location, "drivekit-town");
    DK_CHECK_EQ_INT(s->ego.id, 0);
    DK_CHECK_EQ_INT(s->ego.n_states, 1);
    DK_CHECK_NEAR(s->ego.size[0], 4.08, 0);
    DK_CHECK_NEAR(s->ego.size[1], 1.73, 0);
    DK_CHECK_NEAR(s->ego.size[2], 1.56, 0);
    DK_CHECK_EQ_INT(s->rig.n_sensors, 7);
    DK_CHECK(dk_rig_find(&s->rig, "CAM_FRONT") >= 0);
    DK_CHECK_OK(dk_scenario_validate(s));

    dk_actor_state st[2] = {{0, 1, 2, 0.8, 0}, {1, 2, 2, 0.8, 0}};
    dk_actor a = make_actor(0, DK_CLASS_CAR, 4.5, 1.9, 1.6, st, 2);
    DK_CHECK_OK(dk_scenario_add_actor(s, &a));
    dk_map_element e;
    memset(&e, 0, sizeof e);
    double pts[6] = {0, 0, 0, 10, 0, 0};
    e.layer = DK_MAP_LANELINE;
    e.style = DK_LINE_DASHED_WHITE;
    e.points = pts;
    e.n_points = 2;
    DK_CHECK_OK(dk_scenario_add_map_element(s, &e));
    dk_edit_record r;
    memset(&r, 0, sizeof r);
    r.actor_id = 1;
    snprintf(r.description, sizeof r.description, "test");
    DK_CHECK_OK(dk__scenario_append_edit(s, &r));

    DK_CHECK_OK(dk_scenario_clone(s, &c));
    DK_CHECK(c->actors != s->actors && c->actors[0].states != s->actors[0].states);
    DK_CHECK(c->map[0].points != s->map[0].points);
    DK_CHECK_EQ_INT(c->n_actors, 1);
    DK_CHECK_EQ_INT(c->n_map, 1);
    DK_CHECK_EQ_INT(c->n_edits, 1);
    DK_CHECK_STR(c->edits[0].description, "test");
    DK_CHECK_NEAR(c->actors[0].states[1].x, 2, 0);
    DK_CHECK_NEAR(c->map[0].points[3], 10, 0);
    /* The copy grows independently. */
    DK_CHECK_OK(dk_scenario_add_actor(c, &a));
    DK_CHECK_EQ_INT(c->n_actors, 2);
    DK_CHECK_EQ_INT(s->n_actors, 1);
    dk_scenario_destroy(c);
    dk_scenario_destroy(s);
    dk_scenario_destroy(NULL);
    DK_CHECK_STATUS(dk_scenario_create(NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_scenario_clone(NULL, &c), DK_EINVAL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_add_find_remove(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = bare(10);
    DK_CHECK(s != NULL);
    dk_actor_state st[2] = {{0, 0, 0, 0.8, 0}, {1, 1, 0, 0.8, 0}};
    for (int i = 0; i < 20; i++) {
        dk_actor a = make_actor(0, DK_CLASS_CAR, 4, 2, 1.6, st, 2);
        DK_CHECK_OK(dk_scenario_add_actor(s, &a));
        DK_CHECK_EQ_INT(s->actors[i].id, i + 1);
    }
    dk_actor a = make_actor(40, DK_CLASS_BUS, 12, 2.5, 3, st, 2);
    DK_CHECK_OK(dk_scenario_add_actor(s, &a));
    a.id = 40;
    DK_CHECK_STATUS(dk_scenario_add_actor(s, &a), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "40");
    a.id = 0;
    DK_CHECK_OK(dk_scenario_add_actor(s, &a));
    DK_CHECK_EQ_INT(s->actors[s->n_actors - 1].id, 41);
    DK_CHECK_EQ_INT(dk_scenario_find_actor(s, 40), 20);
    DK_CHECK_EQ_INT(dk_scenario_find_actor(s, 99), -1);
    DK_CHECK_OK(dk_scenario_remove_actor(s, 5));
    DK_CHECK_EQ_INT(dk_scenario_find_actor(s, 5), -1);
    DK_CHECK_EQ_INT(dk_scenario_find_actor(s, 6), 4);
    DK_CHECK_STATUS(dk_scenario_remove_actor(s, 5), DK_ENOENT);
    DK_CHECK_EQ_INT(s->n_actors, 21);

    /* Invalid actors are refused, naming the field. */
    dk_actor_state bad[2] = {{0, 0, 0, 0.8, 0}, {0, 1, 0, 0.8, 0}};
    a = make_actor(0, DK_CLASS_CAR, 4, 2, 1.6, bad, 2);
    DK_CHECK_STATUS(dk_scenario_add_actor(s, &a), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "states[1].t");
    a = make_actor(0, DK_CLASS_CAR, 0, 2, 1.6, st, 2);
    DK_CHECK_STATUS(dk_scenario_add_actor(s, &a), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "size");
    a = make_actor(0, DK_CLASS_CAR, 4, 2, 1.6, st, 0);
    DK_CHECK_STATUS(dk_scenario_add_actor(s, &a), DK_EINVAL);

    /* Replacing states, the ego's too (id 0). */
    dk_actor_state st3[3] = {{0, 5, 5, 0.8, 0}, {1, 6, 5, 0.8, 0}, {2, 7, 5, 0.8, 0}};
    DK_CHECK_OK(dk_scenario_set_actor_states(s, 40, st3, 3));
    DK_CHECK_EQ_INT(s->actors[dk_scenario_find_actor(s, 40)].n_states, 3);
    DK_CHECK_STATUS(dk_scenario_set_actor_states(s, 77, st3, 3), DK_ENOENT);
    DK_CHECK_STATUS(dk_scenario_set_actor_states(s, 40, bad, 2), DK_EINVAL);
    dk_actor_state ego[2] = {{0, 0, 0, 0, 0}, {10, 50, 0, 0, 0}};
    DK_CHECK_OK(dk_scenario_set_actor_states(s, 0, ego, 2));
    DK_CHECK_EQ_INT(s->ego.n_states, 2);

    /* Map elements: ids, geometry from the layer, refusals. */
    dk_map_element e;
    memset(&e, 0, sizeof e);
    double line[6] = {0, 0, 0, 1, 0, 0}, cw[9] = {0, 0, 0, 0, 1, 0, 1, 0, 0};
    double ccw[9] = {0, 0, 0, 1, 0, 0, 0, 1, 0};
    e.layer = DK_MAP_WAIT_LINE;
    e.points = line;
    e.n_points = 2;
    e.geometry = DK_GEOM_CUBOID;   /* overridden by the layer */
    DK_CHECK_OK(dk_scenario_add_map_element(s, &e));
    DK_CHECK_EQ_INT(s->map[0].id, 1);
    DK_CHECK_EQ_INT(s->map[0].geometry, DK_GEOM_POLYLINE);
    e.n_points = 1;
    DK_CHECK_STATUS(dk_scenario_add_map_element(s, &e), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "points");
    e.layer = DK_MAP_CROSSWALK;
    e.points = cw;
    e.n_points = 3;
    DK_CHECK_STATUS(dk_scenario_add_map_element(s, &e), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "counter-clockwise");
    e.points = ccw;
    e.id = 9;
    DK_CHECK_OK(dk_scenario_add_map_element(s, &e));
    DK_CHECK_STATUS(dk_scenario_add_map_element(s, &e), DK_EINVAL);
    memset(&e, 0, sizeof e);
    e.layer = DK_MAP_TRAFFIC_SIGN;
    e.size[0] = 0.1, e.size[1] = 0.6, e.size[2] = 0.6;
    DK_CHECK_OK(dk_scenario_add_map_element(s, &e));
    DK_CHECK_EQ_INT(s->map[2].id, 10);
    DK_CHECK(s->map[2].points == NULL);
    DK_CHECK_OK(dk_scenario_validate(s));
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_validate_errors(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = bare(5);
    DK_CHECK(s != NULL);
    dk_actor_state st[3] = {{0, 0, 0, 0.8, 0}, {1, 1, 0, 0.8, 0}, {2, 2, 0, 0.8, 0}};
    dk_actor a = make_actor(0, DK_CLASS_CAR, 4, 2, 1.6, st, 3);
    DK_CHECK_OK(dk_scenario_add_actor(s, &a));
    DK_CHECK_OK(dk_scenario_add_actor(s, &a));
    DK_CHECK_OK(dk_scenario_validate(s));

    s->actors[1].states[2].t = 1;
    DK_CHECK_STATUS(dk_scenario_validate(s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "dk_scenario_validate(): actors[1].states[2].t: not increasing");
    s->actors[1].states[2].t = 2;
    s->actors[0].states[1].x = NAN;
    DK_CHECK_STATUS(dk_scenario_validate(s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "actors[0].states[1].x");
    s->actors[0].states[1].x = 1;
    s->actors[1].size[1] = 0;
    DK_CHECK_STATUS(dk_scenario_validate(s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "actors[1].size");
    s->actors[1].size[1] = 2;
    s->actors[1].id = s->actors[0].id;
    DK_CHECK_STATUS(dk_scenario_validate(s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "actors[1].id: duplicate");
    s->actors[1].id = 2;
    s->actors[1].parked = 1;
    DK_CHECK_STATUS(dk_scenario_validate(s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "actors[1].states[1]");
    s->actors[1].parked = 0;
    s->ego.states[0].yaw = INFINITY;
    DK_CHECK_STATUS(dk_scenario_validate(s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "ego.states[0].yaw");
    s->ego.states[0].yaw = 0;
    s->duration = -1;
    DK_CHECK_STATUS(dk_scenario_validate(s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "duration");
    s->duration = 5;

    dk_map_element e;
    memset(&e, 0, sizeof e);
    double ccw[9] = {0, 0, 0, 1, 0, 0, 0, 1, 0};
    e.layer = DK_MAP_SIDEWALK;
    e.points = ccw;
    e.n_points = 3;
    DK_CHECK_OK(dk_scenario_add_map_element(s, &e));
    s->map[0].geometry = DK_GEOM_POLYLINE;
    DK_CHECK_STATUS(dk_scenario_validate(s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "map[0].geometry");
    s->map[0].geometry = DK_GEOM_POLYGON;
    s->map[0].points[3] = -1;   /* now clockwise */
    DK_CHECK_STATUS(dk_scenario_validate(s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "map[0].points");
    s->map[0].points[3] = 1;
    s->rig.sensors[0].rate_hz = 0;
    DK_CHECK_STATUS(dk_scenario_validate(s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "rig");
    s->rig.sensors[0].rate_hz = 12;
    DK_CHECK_OK(dk_scenario_validate(s));
    DK_CHECK_STATUS(dk_scenario_validate(NULL), DK_EINVAL);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_interpolation(void)
{
    dk_actor_state st[3] = {{1, 0, 0, 1, 3.0}, {2, 10, 4, 1, -3.0}, {4, 10, 4, 3, -3.0}};
    dk_actor a = make_actor(1, DK_CLASS_CAR, 4, 2, 2, st, 3);
    dk_actor_state o;
    double v[3];
    DK_CHECK_EQ_INT(dk_actor_state_at(&a, 1.5, &o, v), 1);
    DK_CHECK_NEAR(o.t, 1.5, 1e-12);
    DK_CHECK_NEAR(o.x, 5, 1e-12);
    DK_CHECK_NEAR(o.y, 2, 1e-12);
    DK_CHECK_NEAR(v[0], 10, 1e-12);
    DK_CHECK_NEAR(v[1], 4, 1e-12);
    DK_CHECK_NEAR(v[2], 0, 1e-12);
    /* Shortest arc across +-pi: 3.0 -> -3.0 passes through pi, not 0. */
    DK_CHECK_NEAR(cos(o.yaw), -1, 1e-9);
    DK_CHECK(fabs(o.yaw) > 3.0);
    DK_CHECK_EQ_INT(dk_actor_state_at(&a, 1.25, &o, NULL), 1);
    DK_CHECK_NEAR(o.yaw, 3.0 + 0.25 * (2 * PI - 6.0), 1e-9);
    DK_CHECK_EQ_INT(dk_actor_state_at(&a, 3, &o, v), 1);
    DK_CHECK_NEAR(o.z, 2, 1e-12);
    DK_CHECK_NEAR(v[2], 1, 1e-12);
    DK_CHECK_NEAR(v[0], 0, 1e-12);
    /* Ends are inside, outside is not. */
    DK_CHECK_EQ_INT(dk_actor_state_at(&a, 1, &o, NULL), 1);
    DK_CHECK_NEAR(o.x, 0, 0);
    DK_CHECK_EQ_INT(dk_actor_state_at(&a, 4, &o, NULL), 1);
    DK_CHECK_NEAR(o.z, 3, 0);
    DK_CHECK_EQ_INT(dk_actor_state_at(&a, 0.999, &o, NULL), 0);
    DK_CHECK_EQ_INT(dk_actor_state_at(&a, 4.001, &o, NULL), 0);
    DK_CHECK_EQ_INT(dk_actor_state_at(&a, NAN, &o, NULL), 0);
    dk_pose p;
    DK_CHECK_EQ_INT(dk_actor_pose_at(&a, 1.5, &p), 1);
    DK_CHECK_NEAR(p.t[0], 5, 1e-12);
    DK_CHECK_NEAR(fabs(dk_pose_yaw(&p)), PI, 1e-9);
    DK_CHECK_EQ_INT(dk_actor_pose_at(&a, 9, &p), 0);
    /* One state: exists at that instant only. */
    dk_actor one = make_actor(1, DK_CLASS_CAR, 4, 2, 2, st, 1);
    DK_CHECK_EQ_INT(dk_actor_state_at(&one, 1, &o, v), 1);
    DK_CHECK_NEAR(v[0], 0, 0);
    DK_CHECK_EQ_INT(dk_actor_state_at(&one, 1.1, &o, v), 0);

    /* The ego pose clamps to the ends. */
    dk_scenario *s = bare(10);
    DK_CHECK(s != NULL);
    dk_actor_state ego[2] = {{0, 0, 0, 0, 0}, {10, 100, 0, 0, PI / 2}};
    DK_CHECK_OK(dk_scenario_set_actor_states(s, 0, ego, 2));
    dk_pose e = dk_scenario_ego_pose(s, 5);
    DK_CHECK_NEAR(e.t[0], 50, 1e-9);
    DK_CHECK_NEAR(dk_pose_yaw(&e), PI / 4, 1e-9);
    e = dk_scenario_ego_pose(s, -3);
    DK_CHECK_NEAR(e.t[0], 0, 0);
    e = dk_scenario_ego_pose(s, 30);
    DK_CHECK_NEAR(e.t[0], 100, 1e-12);
    DK_CHECK_NEAR(dk_pose_yaw(&e), PI / 2, 1e-9);
    /* The ego's box sits DK_EGO_BOX_OFFSET_X ahead and h/2 up. */
    dk_pose b = dk__ego_box_pose(s, 30);
    DK_CHECK_NEAR(b.t[0], 100, 1e-9);
    DK_CHECK_NEAR(b.t[1], DK_EGO_BOX_OFFSET_X, 1e-9);
    DK_CHECK_NEAR(b.t[2], s->ego.size[2] / 2, 1e-12);
    dk_scenario_destroy(s);
}

static void test_box_corners(void)
{
    dk_actor_state st[1] = {{0, 10, 20, 1, PI / 2}};
    dk_actor a = make_actor(1, DK_CLASS_CAR, 4, 2, 2, st, 1);
    double c[8][3];
    DK_CHECK_EQ_INT(dk__actor_corners(&a, 0, 0, c), 1);
    /* Box x (length) points along world +y, box y (width) along world -x. */
    const double want[8][3] = {{9, 22, 0},  {11, 22, 0}, {11, 18, 0}, {9, 18, 0},
                               {9, 22, 2},  {11, 22, 2}, {11, 18, 2}, {9, 18, 2}};
    for (int k = 0; k < 8; k++)
        for (int d = 0; d < 3; d++) DK_CHECK_NEAR(c[k][d], want[k][d], 1e-9);
    DK_CHECK_EQ_INT(dk__actor_corners(&a, 0, 1, c), 0);
    /* The ego: origin on the ground at the rear axle, clamped in time. */
    dk_actor_state e[1] = {{0, 0, 0, 0, 0}};
    dk_actor ego = make_actor(0, DK_CLASS_CAR, 4, 2, 1.5, e, 1);
    DK_CHECK_EQ_INT(dk__actor_corners(&ego, 1, 7, c), 1);
    DK_CHECK_NEAR(c[0][0], DK_EGO_BOX_OFFSET_X + 2, 1e-12);
    DK_CHECK_NEAR(c[0][1], 1, 1e-12);
    DK_CHECK_NEAR(c[0][2], 0, 1e-12);
    DK_CHECK_NEAR(c[6][0], DK_EGO_BOX_OFFSET_X - 2, 1e-12);
    DK_CHECK_NEAR(c[6][1], -1, 1e-12);
    DK_CHECK_NEAR(c[6][2], 1.5, 1e-12);
    /* Points in boxes. */
    dk_pose p = dk_pose_from_yaw(10, 20, 1, PI / 2);
    const double size[3] = {4, 2, 2};
    const double in[3] = {10.9, 21.9, 1.9}, out1[3] = {11.5, 20, 1}, out2[3] = {10, 20, 2.1};
    DK_CHECK_EQ_INT(dk__point_in_box(&p, size, in), 1);
    DK_CHECK_EQ_INT(dk__point_in_box(&p, size, out1), 0);
    DK_CHECK_EQ_INT(dk__point_in_box(&p, size, out2), 0);
}

static void test_collisions(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = bare(2);
    DK_CHECK(s != NULL);
    /* Two cars rotated 45 degrees, corners pointing at each other: their
       bounding circles overlap but the rectangles do not. */
    double r = hypot(2, 1);
    dk_actor_state a1[2] = {{0, 0, 0, 0.8, PI / 4}, {2, 0, 0, 0.8, PI / 4}};
    dk_actor_state a2[2] = {{0, 2 * r * 0.97, 0, 0.8, PI / 4}, {2, 2 * r * 0.97, 0, 0.8, PI / 4}};
    dk_actor a = make_actor(1, DK_CLASS_CAR, 4, 2, 1.6, a1, 2);
    DK_CHECK_OK(dk_scenario_add_actor(s, &a));
    a = make_actor(2, DK_CLASS_CAR, 4, 2, 1.6, a2, 2);
    DK_CHECK_OK(dk_scenario_add_actor(s, &a));
    int n = -1;
    dk_collision c[8];
    DK_CHECK_OK(dk_scenario_collisions(s, 0.1, c, 8, &n));
    DK_CHECK_EQ_INT(n, 0);
    /* A third car drives into car 1 from the side, arriving at t = 1. */
    dk_actor_state a3[2] = {{0, 0, -11, 0.8, PI / 2}, {2, 0, 3, 0.8, PI / 2}};
    a = make_actor(3, DK_CLASS_TRUCK, 6, 2, 3, a3, 2);
    DK_CHECK_OK(dk_scenario_add_actor(s, &a));
    DK_CHECK_OK(dk_scenario_collisions(s, 0.1, c, 8, &n));
    DK_CHECK_EQ_INT(n, 1);
    DK_CHECK_EQ_INT(c[0].a, 1);
    DK_CHECK_EQ_INT(c[0].b, 3);
    /* Truck front y = -11 + 7 t + 3 meets car 1's nearest corner (|y| =
       1.5 / sqrt 2 + ... ) between t = 1.0 and 1.2. */
    DK_CHECK(c[0].t >= 0.9 && c[0].t <= 1.2);
    /* Two pedestrians on the same spot are ignored. */
    dk_actor_state p[2] = {{0, 50, 50, 0.9, 0}, {2, 50, 50, 0.9, 0}};
    a = make_actor(4, DK_CLASS_PEDESTRIAN, 0.7, 0.7, 1.8, p, 2);
    DK_CHECK_OK(dk_scenario_add_actor(s, &a));
    a = make_actor(5, DK_CLASS_PEDESTRIAN, 0.7, 0.7, 1.8, p, 2);
    DK_CHECK_OK(dk_scenario_add_actor(s, &a));
    DK_CHECK_OK(dk_scenario_collisions(s, 0.1, NULL, 0, &n));
    DK_CHECK_EQ_INT(n, 1);
    /* A cone on the pedestrians does count, once per pair. */
    a = make_actor(6, DK_CLASS_TRAFFIC_CONE, 0.4, 0.4, 0.7, p, 2);
    DK_CHECK_OK(dk_scenario_add_actor(s, &a));
    DK_CHECK_OK(dk_scenario_collisions(s, 0, c, 1, &n));
    DK_CHECK_EQ_INT(n, 3);
    DK_CHECK_EQ_INT(c[0].a, 4);   /* at t = 0, the earliest */
    DK_CHECK_EQ_INT(c[0].b, 6);
    /* The ego box (offset ahead of its origin) hits a car in front. */
    s->ego.states[0].x = -50;
    dk_actor_state f[2] = {{0, -50 + DK_EGO_BOX_OFFSET_X + 2.04 + 2.0, 30, 0.8, 0},
                           {2, -50 + DK_EGO_BOX_OFFSET_X + 2.04 + 2.0, 30, 0.8, 0}};
    s->ego.states[0].y = 30;
    a = make_actor(7, DK_CLASS_CAR, 4.2, 2, 1.6, f, 2);   /* 0.1 m overlap */
    DK_CHECK_OK(dk_scenario_add_actor(s, &a));
    DK_CHECK_OK(dk_scenario_collisions(s, 0.1, c, 8, &n));
    DK_CHECK_EQ_INT(n, 4);
    int ego_hit = 0;
    for (int i = 0; i < n; i++) ego_hit |= c[i].a == 0 && c[i].b == 7;
    DK_CHECK(ego_hit);
    s->actors[dk_scenario_find_actor(s, 7)].size[0] = 3.9;   /* 0.05 m apart */
    DK_CHECK_OK(dk_scenario_collisions(s, 0.1, c, 8, &n));
    DK_CHECK_EQ_INT(n, 3);
    DK_CHECK_STATUS(dk_scenario_collisions(NULL, 0.1, c, 8, &n), DK_EINVAL);
    DK_CHECK_STATUS(dk_scenario_collisions(s, 0.1, c, 8, NULL), DK_EINVAL);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */

static int same_camera(const dk_camera *a, const dk_camera *b)
{
    if (a->model != b->model || a->width != b->width || a->height != b->height ||
        a->fx != b->fx || a->fy != b->fy || a->cx != b->cx || a->cy != b->cy ||
        a->ftheta_ref != b->ftheta_ref || a->linear_c != b->linear_c ||
        a->linear_d != b->linear_d || a->linear_e != b->linear_e ||
        a->max_angle != b->max_angle || a->margin != b->margin || a->shutter != b->shutter)
        return 0;
    for (int i = 0; i < 6; i++)
        if (a->k[i] != b->k[i] || a->fw_poly[i] != b->fw_poly[i] || a->bw_poly[i] != b->bw_poly[i])
            return 0;
    for (int i = 0; i < 2; i++)
        if (a->p[i] != b->p[i]) return 0;
    for (int i = 0; i < 4; i++)
        if (a->s[i] != b->s[i]) return 0;
    return 1;
}

static int same_lidar(const dk_lidar_model *a, const dk_lidar_model *b)
{
    if (a->n_beams != b->n_beams || a->n_columns != b->n_columns || a->spin_hz != b->spin_hz ||
        a->direction != b->direction || a->azimuth_start != b->azimuth_start ||
        a->min_range != b->min_range || a->max_range != b->max_range)
        return 0;
    for (int i = 0; i < a->n_beams; i++)
        if (a->elevation[i] != b->elevation[i] || a->azimuth_offset[i] != b->azimuth_offset[i])
            return 0;
    return 1;
}

static int same_actor(const dk_actor *a, const dk_actor *b)
{
    if (a->id != b->id || a->cls != b->cls || a->parked != b->parked ||
        a->n_states != b->n_states || memcmp(a->size, b->size, sizeof a->size))
        return 0;
    for (int32_t i = 0; i < a->n_states; i++) {
        const dk_actor_state *x = &a->states[i], *y = &b->states[i];
        if (x->t != y->t || x->x != y->x || x->y != y->y || x->z != y->z || x->yaw != y->yaw)
            return 0;
    }
    return 1;
}

/* Field-by-field equality; returns the first differing field or NULL. */
static const char *scenario_diff(const dk_scenario *a, const dk_scenario *b)
{
    if (strcmp(a->name, b->name) || strcmp(a->location, b->location)) return "name";
    if (a->seed != b->seed || a->start_us != b->start_us || a->duration != b->duration)
        return "header";
    if (!same_actor(&a->ego, &b->ego)) return "ego";
    if (a->n_actors != b->n_actors) return "n_actors";
    for (int32_t i = 0; i < a->n_actors; i++)
        if (!same_actor(&a->actors[i], &b->actors[i])) return "actors";
    if (a->n_map != b->n_map) return "n_map";
    for (int32_t i = 0; i < a->n_map; i++) {
        const dk_map_element *x = &a->map[i], *y = &b->map[i];
        if (x->id != y->id || x->layer != y->layer || x->geometry != y->geometry ||
            x->style != y->style || x->n_points != y->n_points ||
            memcmp(x->center, y->center, sizeof x->center) ||
            memcmp(x->size, y->size, sizeof x->size) || x->yaw != y->yaw ||
            x->pitch != y->pitch || x->roll != y->roll)
            return "map";
        for (int32_t k = 0; k < 3 * x->n_points; k++)
            if (x->points[k] != y->points[k]) return "map points";
    }
    if (a->rig.n_sensors != b->rig.n_sensors) return "rig";
    for (int i = 0; i < a->rig.n_sensors; i++) {
        const dk_rig_sensor *x = &a->rig.sensors[i], *y = &b->rig.sensors[i];
        if (strcmp(x->name, y->name) || x->kind != y->kind || x->rate_hz != y->rate_hz ||
            x->time_offset != y->time_offset || x->readout_time != y->readout_time ||
            memcmp(&x->sensor_to_ego, &y->sensor_to_ego, sizeof x->sensor_to_ego))
            return "rig sensor";
        if (x->kind == DK_SENSOR_CAMERA && !same_camera(&x->camera, &y->camera)) return "camera";
        if (x->kind == DK_SENSOR_LIDAR && !same_lidar(&x->lidar, &y->lidar)) return "lidar";
    }
    if (a->n_edits != b->n_edits) return "n_edits";
    for (int32_t i = 0; i < a->n_edits; i++) {
        const dk_edit_record *x = &a->edits[i], *y = &b->edits[i];
        if (x->kind != y->kind || x->actor_id != y->actor_id || x->added != y->added ||
            x->t_start != y->t_start || x->t_end != y->t_end ||
            strcmp(x->description, y->description))
            return "edits";
    }
    return NULL;
}

/* The nuScenes rig with one camera of every model, an explicit lidar and
 * rolling shutters. */
static void fancy_rig(dk_rig *rig)
{
    dk_rig_nuscenes(rig, 800, 450);
    const double k[6] = {-0.3, 0.1, 0.001, 0.0002, -0.00001, 0.01};
    const double p[2] = {0.001, -0.0005}, s4[4] = {0.0001, 0, -0.0002, 0};
    dk_camera_init_opencv(&rig->sensors[1].camera, 800, 450, 600.5, 601.25, 400.5, 225.5, k, p, s4);
    const double kf[4] = {0.02, -0.003, 0.0004, 0};
    dk_camera_init_fisheye(&rig->sensors[2].camera, 800, 450, 300, 300, 400, 225, kf, 0);
    const double poly[6] = {0, 500, -20, 3, 0, 0}, lin[3] = {1.0001, 0.0002, -0.0003};
    dk_camera_init_ftheta(&rig->sensors[3].camera, 800, 450, 400.5, 225.5,
                          DK_FTHETA_ANGLE_TO_PIXELDIST, poly, lin, 0);
    rig->sensors[0].camera.shutter = DK_SHUTTER_TOP_TO_BOTTOM;
    rig->sensors[0].readout_time = 0.0302;
    rig->sensors[4].camera.shutter = DK_SHUTTER_RIGHT_TO_LEFT;
    rig->sensors[4].readout_time = 0.01;
    rig->sensors[4].time_offset = 0.004;
    int li = dk_rig_find(rig, "LIDAR_TOP");
    if (li >= 0) {
        rig->sensors[li].lidar.n_columns = 1000;
        rig->sensors[li].lidar.azimuth_start = 0.125;
    }
}

static void test_json_roundtrip(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = gen(5, 2, 4);
    DK_CHECK(s != NULL);
    fancy_rig(&s->rig);
    DK_CHECK_OK(dk_rig_validate(&s->rig));
    s->seed = UINT64_MAX - 3;   /* beyond int64: written as a string */
    s->start_us = -12345;
    dk_edit_record r;
    memset(&r, 0, sizeof r);
    r.kind = DK_EDIT_JAYWALK;
    r.actor_id = 3;
    r.added = 1;
    r.t_start = 1.0 / 3;
    r.t_end = 2.5;
    snprintf(r.description, sizeof r.description, "quote \" backslash \\ tab\t and ü");
    DK_CHECK_OK(dk__scenario_append_edit(s, &r));
    /* Awkward doubles. */
    s->actors[0].states[0].x = 0.1 + 0.2;
    s->actors[0].states[1].y = -1e-300;
    s->actors[0].size[2] = 1.0 / 7;
    DK_CHECK_OK(dk_scenario_validate(s));

    char p1[512], p2[512];
    tmp_path(p1, sizeof p1, "a.json");
    tmp_path(p2, sizeof p2, "b.json");
    DK_CHECK_OK(dk_scenario_save(s, p1));
    dk_scenario *l = NULL;
    DK_CHECK_OK(dk_scenario_load(p1, &l));
    const char *diff = scenario_diff(s, l);
    if (diff) DK_FAIL_("load(save(s)) differs in %s", diff);
    DK_CHECK_OK(dk_scenario_save(l, p2));
    size_t n1 = 0, n2 = 0;
    char *t1 = read_text(p1, &n1), *t2 = read_text(p2, &n2);
    DK_CHECK(t1 && t2);
    DK_CHECK_EQ_INT(n1, n2);
    DK_CHECK(memcmp(t1, t2, n1) == 0);
    /* Readable: one state per line, cameras named, the seed as a string. */
    DK_CHECK_CONTAINS(t1, "\"format\": \"drivekit.scenario\"");
    DK_CHECK_CONTAINS(t1, "\"size\": [4.08, 1.73, 1.56]");
    DK_CHECK_CONTAINS(t1, "\"states\": [\n");
    DK_CHECK_CONTAINS(t1, "\"model\": \"ftheta\"");
    DK_CHECK_CONTAINS(t1, "\"shutter\": \"top_to_bottom\"");
    DK_CHECK_CONTAINS(t1, "\"seed\": \"18446744073709551612\"");
    DK_CHECK_CONTAINS(t1, "\"n_columns\": 1000");
    DK_CHECK_CONTAINS(t1, "\"style\": \"double_yellow\"");
    /* Parsing the text gives the same. */
    dk_scenario *q = NULL;
    DK_CHECK_OK(dk_scenario_parse(t1, n1, "mem.json", &q));
    DK_CHECK(scenario_diff(s, q) == NULL);
    free(t1);
    free(t2);
    dk_scenario_destroy(q);
    dk_scenario_destroy(l);
    dk_scenario_destroy(s);
    remove(p1);
    remove(p2);
    DK_CHECK_STATUS(dk_scenario_load("/nonexistent/scene.json", &l), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "/nonexistent/scene.json");
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_json_minimal(void)
{
    int64_t live0 = dk_alloc_live();
    const char *doc =
        "{\"format\": \"drivekit.scenario\", \"version\": 1,\n"
        " \"actors\": [{\"class\": \"vehicle.car\", \"size\": [4, 2, 1.5],\n"
        "              \"states\": [[0, 10, 0, 0.75, 0], [3.5, 20, 0, 0.75, 0]]},\n"
        "             {\"id\": 7, \"class\": \"traffic_cone\", \"size\": [0.4, 0.4, 0.7],\n"
        "              \"parked\": true, \"states\": [[0, 5, 5, 0.35, 0]]}],\n"
        " \"map\": [{\"layer\": \"lanelines\", \"points\": [[0, 0, 0], [10, 0, 0]]},\n"
        "         {\"id\": 4, \"layer\": \"traffic_lights\", \"center\": [1, 2, 5],\n"
        "          \"size\": [0.35, 0.35, 1], \"yaw\": 0.5}]}\n";
    dk_scenario *s = NULL;
    DK_CHECK_OK(dk_scenario_parse(doc, strlen(doc), "min.json", &s));
    DK_CHECK_STR(s->name, "scene-0001");
    DK_CHECK_NEAR(s->duration, 3.5, 0);          /* the last state time */
    DK_CHECK_EQ_INT(s->n_actors, 2);
    DK_CHECK_EQ_INT(s->actors[0].id, 8);          /* after the largest given */
    DK_CHECK_EQ_INT(s->actors[1].parked, 1);
    DK_CHECK_EQ_INT(s->map[0].id, 5);
    DK_CHECK_EQ_INT(s->map[0].style, DK_LINE_SOLID_WHITE);
    DK_CHECK_EQ_INT(s->map[1].geometry, DK_GEOM_CUBOID);
    DK_CHECK_NEAR(s->map[1].pitch, 0, 0);
    DK_CHECK_EQ_INT(s->rig.n_sensors, 7);         /* default rig */
    dk_scenario_destroy(s);
    /* An f-theta camera with only its reference polynomial gets the other
       direction fitted, and max_angle derived. */
    const char *ft =
        "{\"format\": \"drivekit.scenario\", \"version\": 1, \"rig\": {\"sensors\": [\n"
        " {\"name\": \"CAM_FTHETA\", \"kind\": \"camera\", \"rate_hz\": 30,\n"
        "  \"sensor_to_ego\": {\"rotation\": [0.5, -0.5, 0.5, -0.5], \"translation\": [2, 0, 1.5]},\n"
        "  \"camera\": {\"model\": \"ftheta\", \"width\": 640, \"height\": 480, \"cx\": 320.5,\n"
        "   \"cy\": 240.5, \"fw_poly\": [0, 300, -5], \"shutter\": \"top_to_bottom\",\n"
        "   \"readout_time\": 0.02}}]}}";
    DK_CHECK_OK(dk_scenario_parse(ft, strlen(ft), "ft.json", &s));
    const dk_rig_sensor *sn = &s->rig.sensors[0];
    DK_CHECK_EQ_INT(sn->camera.model, DK_CAM_FTHETA);
    DK_CHECK(sn->camera.bw_poly[1] > 0);
    DK_CHECK(sn->camera.max_angle > 0);
    DK_CHECK_NEAR(sn->camera.linear_c, 1, 0);
    DK_CHECK_EQ_INT(sn->camera.shutter, DK_SHUTTER_TOP_TO_BOTTOM);
    DK_CHECK_NEAR(sn->readout_time, 0.02, 0);
    double uv[2], pt[3] = {0.3, -0.2, 4};
    DK_CHECK_EQ_INT(dk_camera_project(&sn->camera, pt, uv, NULL), 1);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

typedef struct bad_doc {
    const char *what, *old, *new_text, *want;
    int status;
} bad_doc;

static void test_json_errors(void)
{
    int64_t live0 = dk_alloc_live();
    const char *base =
        "{\"format\": \"drivekit.scenario\", \"version\": 1, \"duration\": 2,\n"
        " \"actors\": [{\"id\": 1, \"class\": \"car\", \"size\": [4, 2, 1.5],\n"
        "   \"states\": [[0, 10, 0, 0.75, 0], [1, 20, 0, 0.75, 0]]},\n"
        "  {\"id\": 2, \"class\": \"bus\", \"size\": [12, 2.5, 3],\n"
        "   \"states\": [[0, 10, 10, 1.5, 0], [1, 20, 10, 1.5, 0]]}],\n"
        " \"map\": [{\"id\": 1, \"layer\": \"crosswalks\", "
        "\"points\": [[0, 0, 0], [4, 0, 0], [4, 4, 0], [0, 4, 0]]}],\n"
        " \"rig\": {\"sensors\": [{\"name\": \"CAM_FRONT\", \"kind\": \"camera\",\n"
        "   \"sensor_to_ego\": {\"rotation\": [0.5, -0.5, 0.5, -0.5], \"translation\": [1.7, 0, 1.5]},\n"
        "   \"rate_hz\": 12, \"camera\": {\"model\": \"pinhole\", \"width\": 1600, \"height\": 900,\n"
        "   \"fx\": 1266, \"fy\": 1266, \"cx\": 800, \"cy\": 450}},\n"
        "  {\"name\": \"LIDAR_TOP\", \"kind\": \"lidar\", \"sensor_to_ego\": {\"rotation\": [1, 0, 0, 0],"
        " \"translation\": [0.9, 0, 1.8]}, \"rate_hz\": 20, \"lidar\": {\"preset\": 32}}]},\n"
        " \"edits\": [{\"kind\": \"cut-in\", \"actor_id\": 1, \"added\": false, \"t_start\": 0,"
        " \"t_end\": 1, \"description\": \"x\"}]}\n";
    dk_scenario *s = NULL;
    DK_CHECK_OK(dk_scenario_parse(base, strlen(base), "scene.json", &s));
    DK_CHECK_EQ_INT(s->rig.n_sensors, 2);
    DK_CHECK_EQ_INT(s->rig.sensors[1].lidar.n_beams, 32);
    dk_scenario_destroy(s);

    static const bad_doc cases[] = {
        {"wrong type", "\"size\": [4, 2, 1.5]", "\"size\": \"big\"", "scene.json: actors[0].size",
         DK_EINVALIDDATA},
        {"missing field", "\"class\": \"car\", ", "", "actors[0].class", DK_EINVALIDDATA},
        {"bad class", "\"class\": \"car\"", "\"class\": \"spaceship\"",
         "scene.json: actors[0].class: unknown actor class \"spaceship\"", DK_EINVALIDDATA},
        {"short array", "[1, 20, 0, 0.75, 0]", "[1, 20, 0, 0.75]",
         "scene.json: actors[0].states[1]: expected array of 5 numbers", DK_EINVALIDDATA},
        {"non-unit quaternion", "[0.5, -0.5, 0.5, -0.5]", "[1, 1, 0, 0]",
         "rig.sensors[0].sensor_to_ego.rotation: not a unit quaternion", DK_EINVALIDDATA},
        {"huge number", "[1, 20, 0, 0.75, 0]", "[1, 1e999, 0, 0.75, 0]",
         "actors[0].states[1][1]", DK_EINVALIDDATA},
        {"not increasing", "[1, 20, 0, 0.75, 0]", "[0, 20, 0, 0.75, 0]",
         "scene.json: actors[0].states[1].t: not increasing", DK_EINVALIDDATA},
        {"duplicate id", "\"id\": 2", "\"id\": 1", "actors[1].id: duplicate id 1",
         DK_EINVALIDDATA},
        {"unknown field", "\"size\": [12", "\"sise\": [1], \"size\": [12",
         "actors[1].sise: unknown field", DK_EINVALIDDATA},
        {"unknown layer", "\"crosswalks\"", "\"zebras\"", "map[0].layer", DK_EINVALIDDATA},
        {"clockwise polygon", "[[0, 0, 0], [4, 0, 0], [4, 4, 0], [0, 4, 0]]",
         "[[0, 4, 0], [4, 4, 0], [4, 0, 0], [0, 0, 0]]", "map[0].points", DK_EINVALIDDATA},
        {"short point", "[4, 4, 0]", "[4, 4]", "map[0].points[2]", DK_EINVALIDDATA},
        {"unknown model", "\"pinhole\"", "\"orthographic\"", "rig.sensors[0].camera.model",
         DK_EINVALIDDATA},
        {"bad preset", "\"preset\": 32", "\"preset\": 33", "rig.sensors[1].lidar.preset",
         DK_EINVALIDDATA},
        {"bad kind", "\"kind\": \"lidar\"", "\"kind\": \"radar\"", "rig.sensors[1].kind",
         DK_EINVALIDDATA},
        {"negative width", "\"width\": 1600", "\"width\": -3", "rig.sensors[0].camera.width",
         DK_EINVALIDDATA},
        {"bad edit", "\"cut-in\"", "\"cut-out\"", "edits[0].kind", DK_EINVALIDDATA},
        {"zero size", "[12, 2.5, 3]", "[12, 0, 3]", "actors[1].size", DK_EINVALIDDATA},
        {"bad format", "\"drivekit.scenario\"", "\"other\"", "scene.json: format",
         DK_EINVALIDDATA},
        {"syntax", "\"duration\": 2,", "\"duration\": 2,,", "scene.json", DK_EINVALIDDATA},
        {"version", "\"version\": 1", "\"version\": 2", "version", DK_EUNSUPPORTED},
        {"parked moves", "\"id\": 1, ", "\"id\": 1, \"parked\": true, ", "actors[0].states[1]",
         DK_EINVALIDDATA},
        {"bool type", "\"added\": false", "\"added\": 0", "edits[0].added", DK_EINVALIDDATA},
        {"empty states", "[[0, 10, 10, 1.5, 0], [1, 20, 10, 1.5, 0]]", "[]",
         "actors[1].states", DK_EINVALIDDATA},
        {"id range", "\"id\": 2", "\"id\": 0", "actors[1].id", DK_EINVALIDDATA},
    };
    char doc[4096];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_doc *c = &cases[i];
        const char *at = strstr(base, c->old);
        if (!at) DK_FAIL_("case %s: pattern not in the base document", c->what);
        size_t pre = (size_t)(at - base);
        snprintf(doc, sizeof doc, "%.*s%s%s", (int)pre, base, c->new_text, at + strlen(c->old));
        int st = dk_scenario_parse(doc, strlen(doc), "scene.json", &s);
        if (st != c->status || !strstr(dk_errmsg(), c->want)) {
            DK_FAIL_("case %s: got %d, message \"%s\"; want %d and \"%s\"", c->what, st,
                     dk_errmsg(), c->status, c->want);
        }
        DK_CHECK(s == NULL);
        DK_CHECK_CONTAINS(dk_errmsg(), "dk_scenario_parse(): ");
    }
    /* Absurd counts are refused before anything is allocated for them. */
    size_t big = 2 * 1000001 + 256;
    char *huge = malloc(big);
    int o = snprintf(huge, big, "{\"format\": \"drivekit.scenario\", \"version\": 1, \"actors\": [");
    for (int i = 0; i < 100001; i++) o += snprintf(huge + o, big - (size_t)o, i ? ",0" : "0");
    snprintf(huge + o, big - (size_t)o, "]}");
    DK_CHECK_STATUS(dk_scenario_parse(huge, strlen(huge), "big.json", &s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "big.json: actors: 100001 actors exceed the limit of 100000");
    o = snprintf(huge, big, "{\"format\": \"drivekit.scenario\", \"version\": 1, \"ego\": "
                            "{\"states\": [");
    for (int i = 0; i < 1000001; i++) o += snprintf(huge + o, big - (size_t)o, i ? ",0" : "0");
    snprintf(huge + o, big - (size_t)o, "]}}");
    DK_CHECK_STATUS(dk_scenario_parse(huge, strlen(huge), "big.json", &s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "ego.states: 1000001 states exceed the limit");
    free(huge);
    /* Nearly unit quaternions are normalised. */
    const char *q = "{\"format\": \"drivekit.scenario\", \"version\": 1, \"rig\": {\"sensors\": "
                    "[{\"name\": \"L\", \"kind\": \"lidar\", \"rate_hz\": 10, \"sensor_to_ego\": "
                    "{\"rotation\": [1.0005, 0, 0, 0], \"translation\": [0, 0, 2]}, "
                    "\"lidar\": {\"preset\": 64}}]}}";
    DK_CHECK_OK(dk_scenario_parse(q, strlen(q), "q.json", &s));
    DK_CHECK_NEAR(s->rig.sensors[0].sensor_to_ego.q[0], 1, 1e-15);
    DK_CHECK_EQ_INT(s->rig.sensors[0].lidar.n_beams, 64);
    dk_scenario_destroy(s);
    /* Not an object, no text, no output. */
    DK_CHECK_STATUS(dk_scenario_parse("[]", 2, "x.json", &s), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_scenario_parse(NULL, 0, NULL, &s), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_scenario_parse("{}", 2, "x.json", NULL), DK_EINVAL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* Generator                                                                 */

static void test_generate_determinism(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *a = gen(11, 2, 6), *b = gen(11, 2, 6), *c = gen(12, 2, 6);
    DK_CHECK(a && b && c);
    char p[3][512];
    tmp_path(p[0], sizeof p[0], "g1.json");
    tmp_path(p[1], sizeof p[1], "g2.json");
    tmp_path(p[2], sizeof p[2], "g3.json");
    DK_CHECK_OK(dk_scenario_save(a, p[0]));
    DK_CHECK_OK(dk_scenario_save(b, p[1]));
    DK_CHECK_OK(dk_scenario_save(c, p[2]));
    size_t n[3] = {0, 0, 0};
    char *t[3];
    for (int i = 0; i < 3; i++) t[i] = read_text(p[i], &n[i]);
    DK_CHECK(t[0] && t[1] && t[2]);
    DK_CHECK(n[0] == n[1] && memcmp(t[0], t[1], n[0]) == 0);
    DK_CHECK(n[0] != n[2] || memcmp(t[0], t[2], n[0]) != 0);
    DK_CHECK_STR(a->name, "scene-0011");
    DK_CHECK_STR(c->name, "scene-0012");
    DK_CHECK_STR(a->location, "drivekit-town");
    for (int i = 0; i < 3; i++) {
        free(t[i]);
        remove(p[i]);
    }
    dk_scenario_destroy(a);
    dk_scenario_destroy(b);
    dk_scenario_destroy(c);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* The properties every generated scenario has. */
static void check_generated(const dk_scenario *s, const dk_world_gen_config *g)
{
    DK_CHECK_OK(dk_scenario_validate(s));
    DK_CHECK_EQ_INT(count_collisions(s), 0);
    DK_CHECK_NEAR(s->duration, g->duration, 0);
    DK_CHECK_NEAR(s->ego.states[0].t, 0, 0);
    DK_CHECK_NEAR(s->ego.states[s->ego.n_states - 1].t, g->duration, 1e-9);
    int layers[DK_MAP_LAYER_COUNT] = {0};
    for (int32_t i = 0; i < s->n_map; i++) layers[s->map[i].layer]++;
    for (int l = 0; l < DK_MAP_LAYER_COUNT; l++)
        if (!layers[l]) DK_FAIL_("no element of layer %s", dk_map_layer_name((dk_map_layer)l));
    int cls[DK_CLASS_COUNT] = {0}, moving = 0, parked = 0;
    for (int32_t i = 0; i < s->n_actors; i++) {
        const dk_actor *a = &s->actors[i];
        cls[a->cls]++;
        if (is_vehicle(a->cls) && a->cls != DK_CLASS_BICYCLE) {
            if (a->parked) parked++;
            else moving++;
        }
        /* On the road or the sidewalks, z at the box centre. */
        for (int32_t k = 0; k < a->n_states; k += 4) {
            const dk_actor_state *st = &a->states[k];
            DK_CHECK_NEAR(st->z, a->size[2] / 2, 1e-9);
            DK_CHECK(st->t >= 0 && st->t <= g->duration + 1e-9);
            if (a->cls == DK_CLASS_PEDESTRIAN) {
                if (!in_layer(s, DK_MAP_SIDEWALK, st->x, st->y) &&
                    !in_layer(s, DK_MAP_CROSSWALK, st->x, st->y))
                    DK_FAIL_("pedestrian %d off the sidewalks at t=%.2f (%.2f, %.2f)", (int)a->id,
                             st->t, st->x, st->y);
            } else if (is_vehicle(a->cls)) {
                double c[8][3];
                dk__actor_corners(a, 0, st->t, c);
                for (int q = 0; q < 4; q++) {
                    /* A hair towards the centre: corners may touch the kerb. */
                    double x = c[q][0] + 0.01 * (st->x - c[q][0]);
                    double y = c[q][1] + 0.01 * (st->y - c[q][1]);
                    if (!in_layer(s, DK_MAP_DRIVABLE_AREA, x, y))
                        DK_FAIL_("%s %d off the road at t=%.2f (%.2f, %.2f)",
                                 dk_actor_class_name(a->cls), (int)a->id, st->t, x, y);
                }
            }
        }
        /* Kinematics of moving vehicles. */
        if (!is_vehicle(a->cls) || a->parked) continue;
        double vprev = -1;
        for (int32_t k = 1; k < a->n_states; k++) {
            const dk_actor_state *p = &a->states[k - 1], *q = &a->states[k];
            double dt = q->t - p->t, v = hypot(q->x - p->x, q->y - p->y) / dt;
            if (v > 30.01) DK_FAIL_("actor %d at %.1f m/s", (int)a->id, v);
            if (fabs(remainder(q->yaw - p->yaw, 2 * PI)) / dt > 1.0)
                DK_FAIL_("actor %d turns too fast", (int)a->id);
            if (vprev >= 0 && fabs(v - vprev) / dt > 8.0)
                DK_FAIL_("actor %d accelerates at %.1f m/s² at t=%.2f", (int)a->id,
                         (v - vprev) / dt, q->t);
            vprev = v;
        }
    }
    /* The ego cruises near its speed, straight, on the ground. */
    const dk_actor *e = &s->ego;
    double dist = hypot(e->states[e->n_states - 1].x - e->states[0].x,
                        e->states[e->n_states - 1].y - e->states[0].y);
    DK_CHECK(dist / g->duration > 0.85 * g->ego_speed && dist / g->duration < 1.1 * g->ego_speed);
    for (int32_t k = 0; k < e->n_states; k += 50) DK_CHECK_NEAR(e->states[k].z, 0, 0);
    DK_CHECK(cls[DK_CLASS_PEDESTRIAN] <= g->n_pedestrians);
    DK_CHECK_EQ_INT(cls[DK_CLASS_BARRIER], 4);
    DK_CHECK_EQ_INT(cls[DK_CLASS_TRAFFIC_CONE], 4);
    DK_CHECK(parked <= g->n_parked_vehicles);
    DK_CHECK(moving <= g->n_moving_vehicles);
    DK_CHECK(cls[DK_CLASS_BICYCLE] <= g->n_cyclists);
}

static void test_generate_default(void)
{
    int64_t live0 = dk_alloc_live();
    for (uint64_t seed = 1; seed <= 3; seed++) {
        dk_world_gen_config g;
        dk_world_gen_config_init(&g);
        g.seed = seed;
        dk_scenario *s = NULL;
        DK_CHECK_OK(dk_world_generate(&g, &s));
        check_generated(s, &g);
        int n_ped = 0, n_parked = 0, n_moving = 0;
        for (int32_t i = 0; i < s->n_actors; i++) {
            n_ped += s->actors[i].cls == DK_CLASS_PEDESTRIAN;
            n_parked += s->actors[i].parked && is_vehicle(s->actors[i].cls);
            n_moving += !s->actors[i].parked && is_vehicle(s->actors[i].cls);
        }
        DK_CHECK_EQ_INT(n_ped, g.n_pedestrians);
        DK_CHECK_EQ_INT(n_parked, g.n_parked_vehicles);
        DK_CHECK(n_moving >= g.n_moving_vehicles / 2);
        DK_CHECK_EQ_INT(s->rig.n_sensors, 7);
        DK_CHECK_EQ_INT(s->rig.sensors[0].camera.width, 1600);
        DK_CHECK_EQ_INT(s->start_us, 1533151603547590LL);
        dk_scenario_destroy(s);
        if (dk_test_failed_) return;
    }
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_generate_configs(void)
{
    int64_t live0 = dk_alloc_live();
    struct {
        int lanes;
        double duration, speed;
        int moving, peds;
    } cfgs[] = {{1, 8, 9, 14, 12}, {4, 8, 9, 30, 20}, {3, 0.3, 12, 14, 12},
                {2, 60, 9, 20, 10}, {2, 10, 25, 14, 12}, {2, 5, 9, 0, 0}};
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        dk_world_gen_config g;
        dk_world_gen_config_init(&g);
        g.seed = 100 + i;
        g.lanes_per_direction = cfgs[i].lanes;
        g.duration = cfgs[i].duration;
        g.ego_speed = cfgs[i].speed;
        g.n_moving_vehicles = cfgs[i].moving;
        g.n_pedestrians = cfgs[i].peds;
        g.camera_width = 640;
        g.camera_height = 360;
        dk_scenario *s = NULL;
        DK_CHECK_OK(dk_world_generate(&g, &s));
        check_generated(s, &g);
        DK_CHECK_EQ_INT(s->rig.sensors[0].camera.width, 640);
        dk_scenario_destroy(s);
        if (dk_test_failed_) {
            fprintf(stderr, "  config %zu\n", i);
            return;
        }
    }
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_generate_config_errors(void)
{
    struct {
        void (*set)(dk_world_gen_config *);
        const char *field;
    } cases[8];
    dk_world_gen_config g;
    dk_scenario *s = NULL;
#define BAD(field_name, value)                                                       \
    do {                                                                             \
        dk_world_gen_config_init(&g);                                                \
        g.field_name = value;                                                        \
        DK_CHECK_STATUS(dk_world_generate(&g, &s), DK_EINVAL);                       \
        DK_CHECK_CONTAINS(dk_errmsg(), #field_name);                                 \
        DK_CHECK(s == NULL);                                                         \
    } while (0)
    (void)cases;
    BAD(lanes_per_direction, 0);
    BAD(lanes_per_direction, 5);
    BAD(n_moving_vehicles, -1);
    BAD(n_parked_vehicles, 501);
    BAD(n_pedestrians, 1000);
    BAD(n_cyclists, -2);
    BAD(duration, 0);
    BAD(duration, 3600.5);
    BAD(duration, NAN);
    BAD(ego_speed, 0);
    BAD(ego_speed, 41);
    BAD(camera_width, -1);
#undef BAD
    DK_CHECK_STATUS(dk_world_generate(NULL, &s), DK_EINVAL);
    dk_world_gen_config_init(&g);
    DK_CHECK_STATUS(dk_world_generate(&g, NULL), DK_EINVAL);
    DK_CHECK_EQ_INT(g.seed, 1);
    DK_CHECK_NEAR(g.duration, 20, 0);
    DK_CHECK_EQ_INT(g.lanes_per_direction, 2);
    DK_CHECK_EQ_INT(g.n_moving_vehicles, 14);
    DK_CHECK_EQ_INT(g.n_parked_vehicles, 10);
    DK_CHECK_EQ_INT(g.n_pedestrians, 12);
    DK_CHECK_EQ_INT(g.n_cyclists, 3);
    DK_CHECK_NEAR(g.ego_speed, 9, 0);
}

/* ------------------------------------------------------------------------ */
/* Edits                                                                     */

/* Applies an edit to a fresh default scenario and checks what every edit
 * guarantees. Returns the scenario (or NULL after a failed check). */
static dk_scenario *edited(uint64_t seed, int lanes, dk_edit_kind kind, double strength,
                           double t_trigger, dk_edit_record *rec)
{
    dk_scenario *s = gen(seed, lanes, 20);
    if (!s) return NULL;
    int n_before = s->n_actors;
    dk_edit_params p;
    dk_edit_params_init(&p);
    p.strength = strength;
    p.t_trigger = t_trigger;
    p.seed = seed;
    int st = dk_world_edit(s, kind, &p, rec);
    if (st) {
        fprintf(stderr, "  edit %s: %s\n", dk_edit_kind_name(kind), dk_errmsg());
        dk_scenario_destroy(s);
        return NULL;
    }
    int ok = dk_scenario_validate(s) == DK_OK && count_collisions(s) == 0 && s->n_edits == 1 &&
             rec->kind == kind && rec->actor_id > 0 &&
             dk_scenario_find_actor(s, rec->actor_id) >= 0 && rec->t_end >= rec->t_start &&
             strlen(rec->description) > 20 &&
             memcmp(rec, &s->edits[0], sizeof *rec) == 0 && s->n_actors <= n_before + 1;
    if (!ok) {
        fprintf(stderr, "  edit %s: checks failed (%s; %d collisions) %s\n",
                dk_edit_kind_name(kind), dk_errmsg(), count_collisions(s), rec->description);
        dk_scenario_destroy(s);
        return NULL;
    }
    return s;
}

static void test_edit_cut_in(void)
{
    int64_t live0 = dk_alloc_live();
    for (int lanes = 2; lanes <= 3; lanes++) {
        dk_edit_record r;
        dk_scenario *s = edited(3, lanes, DK_EDIT_CUT_IN, 0.5, -1, &r);
        DK_CHECK(s != NULL);
        DK_CHECK_NEAR(r.t_start, 20.0 / 3, 1e-9);
        const dk_actor *a = &s->actors[dk_scenario_find_actor(s, r.actor_id)];
        double x, y, v[3];
        /* Before: in the neighbour lane; after: in the ego lane, just ahead. */
        DK_CHECK(in_ego_frame(s, a, r.t_start - 0.5, &x, &y, v));
        DK_CHECK(fabs(fabs(y) - 3.5) < 0.3);
        DK_CHECK(in_ego_frame(s, a, r.t_end, &x, &y, v));
        DK_CHECK(fabs(y) < 0.2);
        double gap = x - a->size[0] / 2 - (DK_EGO_BOX_OFFSET_X + s->ego.size[0] / 2);
        DK_CHECK(gap > 1 && gap < 15);
        DK_CHECK(in_ego_frame(s, a, 19.9, &x, &y, v));
        DK_CHECK(fabs(y) < 0.2 && x > 0);
        DK_CHECK_CONTAINS(r.description, "cuts in");
        dk_scenario_destroy(s);
        if (dk_test_failed_) return;
    }
    /* One lane per direction: no neighbour of the ego's direction; the
       scenario is left as it was. */
    dk_scenario *s = gen(3, 1, 10);
    DK_CHECK(s != NULL);
    int n = s->n_actors;
    DK_CHECK_STATUS(dk_world_edit(s, DK_EDIT_CUT_IN, NULL, NULL), DK_ENOENT);
    DK_CHECK_EQ_INT(s->n_actors, n);
    DK_CHECK_EQ_INT(s->n_edits, 0);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* Smallest finite-difference acceleration along the actor's motion. */
static double min_accel(const dk_actor *a, double t0, double t1)
{
    double amin = 0, vprev = NAN;
    for (int32_t k = 1; k < a->n_states; k++) {
        const dk_actor_state *p = &a->states[k - 1], *q = &a->states[k];
        double dt = q->t - p->t, v = hypot(q->x - p->x, q->y - p->y) / dt;
        if (q->t >= t0 && q->t <= t1 && !isnan(vprev)) amin = fmin(amin, (v - vprev) / dt);
        vprev = v;
    }
    return amin;
}

static void test_edit_hard_brake(void)
{
    int64_t live0 = dk_alloc_live();
    const double strengths[2] = {0.5, 0.25};
    for (int i = 0; i < 2; i++) {
        dk_edit_record r;
        dk_scenario *s = edited(4, 2, DK_EDIT_HARD_BRAKE, strengths[i], 5, &r);
        DK_CHECK(s != NULL);
        const dk_actor *a = &s->actors[dk_scenario_find_actor(s, r.actor_id)];
        double amin = min_accel(a, r.t_start, r.t_start + 4);
        DK_CHECK_NEAR(amin, -7 * 2 * strengths[i], 0.6);
        double x, y, v[3];
        DK_CHECK(in_ego_frame(s, a, r.t_start, &x, &y, v));
        DK_CHECK(fabs(y) < 0.3 && x > 0);
        DK_CHECK_CONTAINS(r.description, "brakes at");
        dk_scenario_destroy(s);
        if (dk_test_failed_) return;
    }
    /* Without any traffic a lead is added. */
    dk_world_gen_config g;
    dk_world_gen_config_init(&g);
    g.n_moving_vehicles = 0;
    g.duration = 12;
    dk_scenario *s = NULL;
    DK_CHECK_OK(dk_world_generate(&g, &s));
    dk_edit_record r;
    DK_CHECK_OK(dk_world_edit(s, DK_EDIT_HARD_BRAKE, NULL, &r));
    DK_CHECK_EQ_INT(r.added, 1);
    DK_CHECK_EQ_INT(count_collisions(s), 0);
    const dk_actor *a = &s->actors[dk_scenario_find_actor(s, r.actor_id)];
    DK_CHECK_NEAR(min_accel(a, r.t_start, r.t_start + 4), -7, 0.6);
    /* Braking to a stop (or nearly) before driving off. */
    double vmin = 1e9, vel[3];
    dk_actor_state st;
    for (double t = r.t_start; t < 12; t += 0.05)
        if (dk_actor_state_at(a, t, &st, vel)) vmin = fmin(vmin, hypot(vel[0], vel[1]));
    DK_CHECK(vmin < 0.5);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_edit_jaywalk(void)
{
    int64_t live0 = dk_alloc_live();
    for (uint64_t seed = 5; seed <= 6; seed++) {
        dk_edit_record r;
        dk_scenario *s = edited(seed, 2, DK_EDIT_JAYWALK, 0.5, -1, &r);
        DK_CHECK(s != NULL);
        const dk_actor *a = &s->actors[dk_scenario_find_actor(s, r.actor_id)];
        DK_CHECK_EQ_INT(a->cls, DK_CLASS_PEDESTRIAN);
        DK_CHECK_EQ_INT(r.added, 1);
        /* Its path crosses the ego lane ahead of the ego, off crosswalks. */
        int in_lane = 0, right = 0, left = 0;
        double x, y, v[3];
        for (double t = a->states[0].t; t <= a->states[a->n_states - 1].t; t += 0.05) {
            if (!in_ego_frame(s, a, t, &x, &y, v)) continue;
            if (fabs(y) < 1.75 && x > 0) in_lane = 1;
            right |= y < -3;
            left |= y > 3;
            dk_actor_state st;
            dk_actor_state_at(a, t, &st, NULL);
            DK_CHECK(!in_layer(s, DK_MAP_CROSSWALK, st.x, st.y));
        }
        DK_CHECK(in_lane && right && left);
        /* The ego reaches the crossing after the pedestrian left its path. */
        DK_CHECK(in_ego_frame(s, a, r.t_end, &x, &y, v));
        DK_CHECK(y > 1.2);
        DK_CHECK_CONTAINS(r.description, "post-encroachment");
        dk_scenario_destroy(s);
        if (dk_test_failed_) return;
    }
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_edit_stopped_vehicle(void)
{
    int64_t live0 = dk_alloc_live();
    for (uint64_t seed = 7; seed <= 8; seed++) {
        dk_edit_record r;
        dk_scenario *s = edited(seed, 2, DK_EDIT_STOPPED_VEHICLE, 0.5, -1, &r);
        DK_CHECK(s != NULL);
        const dk_actor *a = &s->actors[dk_scenario_find_actor(s, r.actor_id)];
        double x, y, v[3];
        DK_CHECK(in_ego_frame(s, a, r.t_end, &x, &y, v));
        DK_CHECK_NEAR(hypot(v[0], v[1]), 0, 1e-9);
        DK_CHECK(fabs(y) < 0.3);
        double gap = x - a->size[0] / 2 - (DK_EGO_BOX_OFFSET_X + s->ego.size[0] / 2);
        DK_CHECK_NEAR(gap, 5.5, 0.3);
        DK_CHECK_CONTAINS(r.description, "still");
        dk_scenario_destroy(s);
        if (dk_test_failed_) return;
    }
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_edit_wrong_way(void)
{
    int64_t live0 = dk_alloc_live();
    for (int lanes = 2; lanes <= 4; lanes += 2) {
        dk_edit_record r;
        dk_scenario *s = edited(9, lanes, DK_EDIT_WRONG_WAY, 0.5, 4, &r);
        DK_CHECK(s != NULL);
        DK_CHECK_EQ_INT(r.added, 1);
        const dk_actor *a = &s->actors[dk_scenario_find_actor(s, r.actor_id)];
        double x, y, v[3];
        DK_CHECK(in_ego_frame(s, a, r.t_end, &x, &y, v));
        DK_CHECK(fabs(fabs(y) - 3.5) < 0.3);
        DK_CHECK(fabs(x - DK_EGO_BOX_OFFSET_X) < 1);
        dk_pose e0 = dk_scenario_ego_pose(s, r.t_end - 0.05), e1 = dk_scenario_ego_pose(s, r.t_end);
        double ev[2] = {e1.t[0] - e0.t[0], e1.t[1] - e0.t[1]};
        DK_CHECK(v[0] * ev[0] + v[1] * ev[1] < 0);
        dk_actor_state st;
        DK_CHECK(dk_actor_state_at(a, r.t_end, &st, NULL));
        DK_CHECK(cos(st.yaw - dk_pose_yaw(&e1)) < -0.99);
        DK_CHECK_CONTAINS(r.description, "against traffic");
        dk_scenario_destroy(s);
        if (dk_test_failed_) return;
    }
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_edit_chain_and_errors(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = gen(21, 3, 20);
    DK_CHECK(s != NULL);
    dk_edit_params p;
    dk_edit_params_init(&p);
    DK_CHECK_NEAR(p.strength, 0.5, 0);
    DK_CHECK(p.t_trigger < 0);
    p.strength = 1.5;
    DK_CHECK_STATUS(dk_world_edit(s, DK_EDIT_JAYWALK, &p, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "strength");
    p.strength = 0.5;
    p.t_trigger = 25;
    DK_CHECK_STATUS(dk_world_edit(s, DK_EDIT_JAYWALK, &p, NULL), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "t_trigger");
    DK_CHECK_STATUS(dk_world_edit(s, DK_EDIT_COUNT, NULL, NULL), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_edit(NULL, DK_EDIT_CUT_IN, NULL, NULL), DK_EINVAL);
    /* Several edits on one scenario, then a JSON round trip keeps them. */
    p.t_trigger = 3;
    DK_CHECK_OK(dk_world_edit(s, DK_EDIT_CUT_IN, &p, NULL));
    p.t_trigger = 12;
    DK_CHECK_OK(dk_world_edit(s, DK_EDIT_WRONG_WAY, &p, NULL));
    DK_CHECK_EQ_INT(s->n_edits, 2);
    DK_CHECK_EQ_INT(count_collisions(s), 0);
    char path[512];
    tmp_path(path, sizeof path, "edits.json");
    DK_CHECK_OK(dk_scenario_save(s, path));
    dk_scenario *l = NULL;
    DK_CHECK_OK(dk_scenario_load(path, &l));
    DK_CHECK(scenario_diff(s, l) == NULL);
    DK_CHECK_EQ_INT(l->edits[1].kind, DK_EDIT_WRONG_WAY);
    remove(path);
    dk_scenario_destroy(l);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

int main(int argc, char **argv)
{
    static const dk_test_case cases[] = {
        DK_TEST(test_names),
        DK_TEST(test_create_destroy_clone),
        DK_TEST(test_add_find_remove),
        DK_TEST(test_validate_errors),
        DK_TEST(test_interpolation),
        DK_TEST(test_box_corners),
        DK_TEST(test_collisions),
        DK_TEST(test_json_roundtrip),
        DK_TEST(test_json_minimal),
        DK_TEST(test_json_errors),
        DK_TEST(test_generate_determinism),
        DK_TEST(test_generate_default),
        DK_TEST(test_generate_configs),
        DK_TEST(test_generate_config_errors),
        DK_TEST(test_edit_cut_in),
        DK_TEST(test_edit_hard_brake),
        DK_TEST(test_edit_jaywalk),
        DK_TEST(test_edit_stopped_vehicle),
        DK_TEST(test_edit_wrong_way),
        DK_TEST(test_edit_chain_and_errors),
    };
    size_t n_core = sizeof cases / sizeof cases[0];
    size_t total = n_core + dk_tests_render_count + dk_tests_conditions_count + dk_tests_nuscenes_count;
    dk_test_case *all = malloc((total + 1) * sizeof *all);
    memcpy(all, cases, n_core * sizeof *all);
    memcpy(all + n_core, dk_tests_render, dk_tests_render_count * sizeof *all);
    memcpy(all + n_core + dk_tests_render_count, dk_tests_conditions, dk_tests_conditions_count * sizeof *all);
    memcpy(all + n_core + dk_tests_render_count + dk_tests_conditions_count, dk_tests_nuscenes,
           dk_tests_nuscenes_count * sizeof *all);
    int rc = dk_test_main(argc, argv, all, total);
    free(all);
    return rc;
}
