/* Tests for the condition renderer (src/world/conditions.c) and the MP4
 * writer (src/world/mp4.c): golden pixels on hand-built scenes, then videos
 * decoded back with libavformat/libavcodec. */
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/log.h>
#include <libswscale/swscale.h>

#include "dk_test.h"
#include "world/world_impl.h"

/* A test camera on the ego origin, CAM_H above the ground, looking along +x:
 * camera (x right, y down, z forward) = (-y_world, CAM_H - z_world, x_world). */
#define CAM_H 1.5
#define TW 640
#define TH 360
#define TF 400.0

static dk_scenario *test_scene(void)
{
    dk_scenario *s = NULL;
    if (dk_scenario_create(&s)) return NULL;
    s->duration = 1.0;
    dk_rig_sensor *rs = &s->rig.sensors[0];
    memset(rs, 0, sizeof *rs);
    s->rig.n_sensors = 1;
    strcpy(rs->name, "CAM_TEST");
    rs->kind = DK_SENSOR_CAMERA;
    rs->rate_hz = 10;
    const double m[16] = {0, 0, 1, 0, -1, 0, 0, 0, 0, -1, 0, CAM_H, 0, 0, 0, 1};
    if (dk_pose_from_matrix(m, &rs->sensor_to_ego)) {
        dk_scenario_destroy(s);
        return NULL;
    }
    dk_camera_init_pinhole(&rs->camera, TW, TH, TF, TF, TW / 2.0, TH / 2.0);
    return s;
}

static void test_cfg(dk_conditions_config *c)
{
    dk_conditions_config_init(c);
    c->width = TW;
    c->height = TH;
}

/* The renderer's faded colour, spelled out independently. */
static uint8_t fade1(int c, double depth, double dmax)
{
    double d = depth < 0 ? 0 : depth > dmax ? dmax : depth;
    double v = rint(c * (2.0 * (dmax - d) / 255.0));
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

static const uint8_t *px(const dk_tensor *t, int i, int j)
{
    return (const uint8_t *)t->data + ((size_t)j * (size_t)t->shape[1] + (size_t)i) * 3;
}

static int px_is(const dk_tensor *t, int i, int j, int r, int g, int b)
{
    const uint8_t *p = px(t, i, j);
    if (p[0] == r && p[1] == g && p[2] == b) return 1;
    fprintf(stderr, "  pixel (%d, %d) = (%d, %d, %d), want (%d, %d, %d)\n", i, j, p[0], p[1],
            p[2], r, g, b);
    return 0;
}

static int64_t count_nonzero(const dk_tensor *t)
{
    int64_t n = 0, np = t->shape[0] * t->shape[1];
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < np; i++, p += 3) n += (p[0] | p[1] | p[2]) != 0;
    return n;
}

static int add_box(dk_scenario *s, int32_t id, dk_actor_class cls, double x, double y, double z)
{
    dk_actor_state st[2] = {{0.0, x, y, z, 0.0}, {1.0, x, y, z, 0.0}};
    dk_actor a;
    memset(&a, 0, sizeof a);
    a.id = id;
    a.cls = cls;
    a.size[0] = 4;
    a.size[1] = 2;
    a.size[2] = 1.5;
    a.n_states = 2;
    a.states = st;
    return dk_scenario_add_actor(s, &a);
}

static int add_line(dk_scenario *s, dk_map_layer layer, const double *pts, int n)
{
    dk_map_element e;
    memset(&e, 0, sizeof e);
    e.layer = layer;
    e.geometry = dk_map_layer_geometry(layer);
    e.n_points = n;
    e.points = (double *)pts;
    return dk_scenario_add_map_element(s, &e);
}

/* ------------------------------------------------------------------------ */

static void test_conditions_config_defaults(void)
{
    dk_conditions_config c;
    dk_conditions_config_init(&c);
    DK_CHECK_EQ_INT(c.width, 1280);
    DK_CHECK_EQ_INT(c.height, 720);
    DK_CHECK_NEAR(c.fps, 30.0, 0);
    DK_CHECK_EQ_INT(c.model, DK_CAM_PINHOLE);
    DK_CHECK_NEAR(c.ftheta_fov_deg, 120.0, 0);
    DK_CHECK_EQ_INT(c.line_px, 8);
    DK_CHECK_EQ_INT(c.box_px, 5);
    DK_CHECK_NEAR(c.depth_max, 122.5, 0);
    DK_CHECK_NEAR(c.resample, 0.8, 0);
    DK_CHECK_EQ_INT(c.crf, 18);
    uint32_t want = 0;
    const dk_map_layer on[] = {DK_MAP_LANELINE, DK_MAP_ROAD_BOUNDARY, DK_MAP_CROSSWALK,
                               DK_MAP_ROAD_MARKING, DK_MAP_WAIT_LINE, DK_MAP_POLE,
                               DK_MAP_TRAFFIC_SIGN, DK_MAP_TRAFFIC_LIGHT};
    for (size_t i = 0; i < sizeof on / sizeof on[0]; i++) want |= 1u << on[i];
    DK_CHECK_EQ_U64(c.layers, want);
}

static void test_conditions_bad_args(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = test_scene();
    DK_CHECK(s != NULL);
    dk_conditions_config c;
    test_cfg(&c);
    dk_tensor img;
    DK_CHECK_STATUS(dk_world_render_conditions(s, 1, 0.0, &c, &img), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_render_conditions(s, -1, 0.0, &c, &img), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_render_conditions(s, 0, NAN, &c, &img), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_render_conditions(NULL, 0, 0.0, &c, &img), DK_EINVAL);
    DK_CHECK_STATUS(dk_world_render_conditions(s, 0, 0.0, NULL, &img), DK_EINVAL);
    c.model = DK_CAM_OPENCV;
    DK_CHECK_STATUS(dk_world_render_conditions(s, 0, 0.0, &c, &img), DK_EINVAL);
    test_cfg(&c);
    c.depth_max = 0;
    DK_CHECK_STATUS(dk_world_render_conditions(s, 0, 0.0, &c, &img), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "depth_max");
    test_cfg(&c);
    c.line_px = 0;
    DK_CHECK_STATUS(dk_world_render_conditions(s, 0, 0.0, &c, &img), DK_EINVAL);
    /* A lidar is not a camera. */
    dk_scenario *n = NULL;
    DK_CHECK_OK(dk_scenario_create(&n));
    int lidar = dk_rig_find(&n->rig, "LIDAR_TOP");
    DK_CHECK(lidar >= 0);
    test_cfg(&c);
    DK_CHECK_STATUS(dk_world_render_conditions(n, lidar, 0.0, &c, &img), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "not a camera");
    dk_scenario_destroy(n);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* An empty scenario renders black: the ego is never drawn. */
static void test_conditions_empty_scene_black(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = NULL;
    DK_CHECK_OK(dk_scenario_create(&s));
    dk_conditions_config c;
    dk_conditions_config_init(&c);
    c.width = 160;
    c.height = 90;
    for (int i = 0; i < s->rig.n_sensors; i++) {
        if (s->rig.sensors[i].kind != DK_SENSOR_CAMERA) continue;
        dk_tensor img;
        DK_CHECK_OK(dk_world_render_conditions(s, i, 0.0, &c, &img));
        DK_CHECK_EQ_INT(img.dtype, DK_U8);
        DK_CHECK_EQ_INT(img.ndim, 3);
        DK_CHECK_EQ_INT(img.shape[0], 90);
        DK_CHECK_EQ_INT(img.shape[1], 160);
        DK_CHECK_EQ_INT(img.shape[2], 3);
        DK_CHECK_EQ_INT(count_nonzero(&img), 0);
        dk_tensor_release(&img);
    }
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* A car box centred 10 m ahead (4 x 2 x 1.5 m, heading +x). Its bottom-right
 * edge 1-2 runs from depth 12 to 8 (mean 10) and projects through
 * (cx + f/10, cy + 0.75 f/10) = (360, 210); edge 2-3 lies at depth 8 on row
 * 217.5, edge 0-1 at depth 12 on row 205. */
static void test_conditions_box_depth_fade(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = test_scene();
    DK_CHECK(s != NULL);
    DK_CHECK_OK(add_box(s, 1, DK_CLASS_CAR, 10, 0, CAM_H));
    dk_conditions_config c;
    test_cfg(&c);
    dk_tensor img;
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.5, &c, &img));
    DK_CHECK(px_is(&img, 360, 210, fade1(255, 10.0, 122.5), 0, 0));
    DK_CHECK(px_is(&img, 360, 210, 225, 0, 0));
    DK_CHECK(px_is(&img, 320, 217, fade1(255, 8.0, 122.5), 0, 0));
    DK_CHECK(px_is(&img, 320, 205, fade1(255, 12.0, 122.5), 0, 0));
    /* Inside the box outline nothing is drawn; far from it neither. */
    DK_CHECK(px_is(&img, 320, 180, 0, 0, 0));
    DK_CHECK(px_is(&img, 100, 100, 0, 0, 0));
    /* Box thickness 5: the vertical edge 2-6 on the column boundary u = 370
       covers the columns whose centre is within 2.5 px: 367..372. */
    DK_CHECK(px_is(&img, 370, 190, fade1(255, 8.0, 122.5), 0, 0));
    DK_CHECK(px_is(&img, 367, 190, fade1(255, 8.0, 122.5), 0, 0));
    DK_CHECK(px_is(&img, 372, 190, fade1(255, 8.0, 122.5), 0, 0));
    DK_CHECK(px_is(&img, 366, 190, 0, 0, 0));
    DK_CHECK(px_is(&img, 373, 190, 0, 0, 0));
    dk_tensor_release(&img);
    /* Outside the actor's time span it is gone. */
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 1.5, &c, &img));
    DK_CHECK_EQ_INT(count_nonzero(&img), 0);
    dk_tensor_release(&img);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_conditions_class_colours(void)
{
    int64_t live0 = dk_alloc_live();
    static const int want[DK_CLASS_COUNT][3] = {
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
    dk_conditions_config c;
    test_cfg(&c);
    for (int k = 0; k < DK_CLASS_COUNT; k++) {
        dk_scenario *s = test_scene();
        DK_CHECK(s != NULL);
        DK_CHECK_OK(add_box(s, 1, (dk_actor_class)k, 10, 0, CAM_H));
        dk_tensor img;
        DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
        int ok = px_is(&img, 360, 210, fade1(want[k][0], 10, 122.5), fade1(want[k][1], 10, 122.5),
                       fade1(want[k][2], 10, 122.5));
        dk_tensor_release(&img);
        dk_scenario_destroy(s);
        if (!ok) DK_FAIL_("class %s", dk_actor_class_name((dk_actor_class)k));
    }
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* Boxes are drawn in increasing id order on one canvas: the later overwrites. */
static void test_conditions_box_id_order(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = test_scene();
    DK_CHECK(s != NULL);
    DK_CHECK_OK(add_box(s, 9, DK_CLASS_TRUCK, 10, 0, CAM_H));
    DK_CHECK_OK(add_box(s, 4, DK_CLASS_PEDESTRIAN, 10, 0, CAM_H));
    dk_conditions_config c;
    test_cfg(&c);
    dk_tensor img;
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    DK_CHECK(px_is(&img, 360, 210, 0, 0, 225));
    dk_tensor_release(&img);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_conditions_far_and_behind_not_drawn(void)
{
    int64_t live0 = dk_alloc_live();
    dk_conditions_config c;
    test_cfg(&c);
    dk_tensor img;
    /* A laneline entirely beyond 122.5 m. */
    dk_scenario *s = test_scene();
    DK_CHECK(s != NULL);
    const double far[] = {123, -1, 0, 200, -1, 0};
    DK_CHECK_OK(add_line(s, DK_MAP_LANELINE, far, 2));
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    DK_CHECK_EQ_INT(count_nonzero(&img), 0);
    dk_tensor_release(&img);
    /* Starting at 100 m it is drawn. */
    const double near[] = {100, -1, 0, 200, -1, 0};
    DK_CHECK_OK(add_line(s, DK_MAP_LANELINE, near, 2));
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    DK_CHECK(count_nonzero(&img) > 0);
    dk_tensor_release(&img);
    dk_scenario_destroy(s);

    /* A polyline behind the camera, and a box behind it. */
    s = test_scene();
    DK_CHECK(s != NULL);
    const double behind[] = {-20, 0, 0, -5, 0, 0, -5, 3, 2};
    DK_CHECK_OK(add_line(s, DK_MAP_ROAD_BOUNDARY, behind, 3));
    DK_CHECK_OK(add_box(s, 1, DK_CLASS_CAR, -10, 0, CAM_H));
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    DK_CHECK_EQ_INT(count_nonzero(&img), 0);
    dk_tensor_release(&img);
    /* Layers off in the mask are not drawn. */
    const double ahead[] = {10, -3, CAM_H, 10, 3, CAM_H};
    DK_CHECK_OK(add_line(s, DK_MAP_LANE, ahead, 2));
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    DK_CHECK_EQ_INT(count_nonzero(&img), 0);
    dk_tensor_release(&img);
    c.layers |= 1u << DK_MAP_LANE;
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    DK_CHECK(px_is(&img, 320, 180, fade1(56, 10, 122.5), fade1(103, 10, 122.5),
                   fade1(221, 10, 122.5)));
    dk_tensor_release(&img);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* A wait line on the ground from 5 m behind to 20 m ahead: only the part in
 * front of the camera plane is drawn, from row cy + f 1.5/20 = 210 down. An
 * unclipped projection of the point behind would land above the horizon. */
static void test_conditions_camera_plane_clip(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = test_scene();
    DK_CHECK(s != NULL);
    const double line[] = {-5, 0, 0, 20, 0, 0};
    DK_CHECK_OK(add_line(s, DK_MAP_WAIT_LINE, line, 2));
    dk_conditions_config c;
    test_cfg(&c);
    dk_tensor img;
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    for (int j = 0; j < 200; j++)
        for (int i = 0; i < TW; i++)
            if (px(&img, i, j)[0]) DK_FAIL_("pixel (%d, %d) drawn above the clipped segment", i, j);
    /* Clipped at depth 0.2: the segment's colour uses mean depth (0.2 + 20) / 2. */
    double d = (0.2 + 20.0) / 2;
    DK_CHECK(px_is(&img, 320, 300, fade1(185, d, 122.5), fade1(63, d, 122.5), fade1(34, d, 122.5)));
    DK_CHECK(px_is(&img, 320, TH - 1, fade1(185, d, 122.5), fade1(63, d, 122.5),
                   fade1(34, d, 122.5)));
    DK_CHECK(px_is(&img, 319, 212, fade1(185, d, 122.5), fade1(63, d, 122.5), fade1(34, d, 122.5)));
    dk_tensor_release(&img);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* A horizontal wait line at camera height projects onto row boundary v = 180:
 * with thickness 8 exactly rows 176..183 are covered; thickness 5 covers the
 * centres within 2.5 px: rows 177..182. */
static void test_conditions_line_thickness(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = test_scene();
    DK_CHECK(s != NULL);
    const double line[] = {10, 3, CAM_H, 10, -3, CAM_H};
    DK_CHECK_OK(add_line(s, DK_MAP_WAIT_LINE, line, 2));
    dk_conditions_config c;
    test_cfg(&c);
    for (int pass = 0; pass < 2; pass++) {
        c.line_px = pass ? 5 : 8;
        int lo = pass ? 177 : 176, hi = pass ? 182 : 183;
        dk_tensor img;
        DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
        for (int col = 250; col <= 390; col += 20) {
            int rows = 0, first = -1;
            for (int j = 0; j < TH; j++)
                if (px(&img, col, j)[0]) {
                    if (first < 0) first = j;
                    rows++;
                }
            if (rows != hi - lo + 1 || first != lo) {
                dk_tensor_release(&img);
                DK_FAIL_("line_px %d, column %d: %d rows from %d, want %d from %d", c.line_px,
                         col, rows, first, hi - lo + 1, lo);
            }
        }
        /* Round caps: the line ends at u = 320 -/+ 120; the cap reaches r further. */
        DK_CHECK(px(&img, 198, 179)[0] != 0);
        DK_CHECK(px(&img, 441, 180)[0] != 0);
        DK_CHECK(px(&img, 195, 179)[0] == 0);
        DK_CHECK(px(&img, 444, 180)[0] == 0);
        dk_tensor_release(&img);
    }
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* Layers merge by per-channel max; inside a layer the later element wins. */
static void test_conditions_max_merge(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = test_scene();
    DK_CHECK(s != NULL);
    const double wait[] = {10, 3, CAM_H, 10, -3, CAM_H};
    const double pole[] = {10, 0, 0, 10, 0, 3};
    DK_CHECK_OK(add_line(s, DK_MAP_WAIT_LINE, wait, 2));
    DK_CHECK_OK(add_line(s, DK_MAP_POLE, pole, 2));
    dk_conditions_config c;
    test_cfg(&c);
    dk_tensor img;
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    uint8_t w[3] = {fade1(185, 10, 122.5), fade1(63, 10, 122.5), fade1(34, 10, 122.5)};
    uint8_t p[3] = {fade1(66, 10, 122.5), fade1(40, 10, 122.5), fade1(144, 10, 122.5)};
    DK_CHECK(px_is(&img, 250, 179, w[0], w[1], w[2]));
    DK_CHECK(px_is(&img, 319, 130, p[0], p[1], p[2]));
    DK_CHECK(px_is(&img, 319, 179, w[0] > p[0] ? w[0] : p[0], w[1] > p[1] ? w[1] : p[1],
                   w[2] > p[2] ? w[2] : p[2]));
    DK_CHECK(px_is(&img, 319, 179, 163, 56, 127));
    dk_tensor_release(&img);
    /* A second wait line at 20 m crossing the first: drawn later, it
       overwrites the brighter first one on the shared layer canvas. */
    const double wait2[] = {20, 0, CAM_H - 2, 20, 0, CAM_H + 2};
    DK_CHECK_OK(add_line(s, DK_MAP_WAIT_LINE, wait2, 2));
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    DK_CHECK(px_is(&img, 319, 179, fade1(185, 20, 122.5), fade1(63, 20, 122.5), p[2]));
    dk_tensor_release(&img);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* A 4 x 4 m crosswalk on the ground 8..12 m ahead: filled, coloured by the
 * mean depth of its closed vertex list (8 + 12 + 12 + 8 + 8) / 5 = 9.6. */
static void test_conditions_crosswalk_filled(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = test_scene();
    DK_CHECK(s != NULL);
    const double quad[] = {8, -2, 0, 12, -2, 0, 12, 2, 0, 8, 2, 0};
    DK_CHECK_OK(add_line(s, DK_MAP_CROSSWALK, quad, 4));
    dk_conditions_config c;
    test_cfg(&c);
    dk_tensor img;
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    uint8_t k[3] = {fade1(206, 9.6, 122.5), fade1(131, 9.6, 122.5), fade1(63, 9.6, 122.5)};
    /* Rows: far edge v = 180 + 400 * 1.5 / 12 = 230, near edge 255. */
    DK_CHECK(px_is(&img, 320, 240, k[0], k[1], k[2]));
    DK_CHECK(px_is(&img, 260, 250, k[0], k[1], k[2]));
    DK_CHECK(px_is(&img, 320, 230, k[0], k[1], k[2]));
    DK_CHECK(px_is(&img, 320, 229, 0, 0, 0));
    DK_CHECK(px_is(&img, 320, 254, k[0], k[1], k[2]));
    DK_CHECK(px_is(&img, 320, 255, 0, 0, 0));
    DK_CHECK(px_is(&img, 200, 240, 0, 0, 0));
    /* Pixel count ~ trapezoid area: (133.3 + 200) / 2 * 25. */
    DK_CHECK_NEAR((double)count_nonzero(&img), (400.0 / 3 + 200) / 2 * 25, 60);
    dk_tensor_release(&img);

    /* A crosswalk reaching behind the camera is clipped, filled to the bottom. */
    dk_scenario_destroy(s);
    s = test_scene();
    DK_CHECK(s != NULL);
    const double across[] = {-5, -2, 0, 6, -2, 0, 6, 2, 0, -5, 2, 0};
    DK_CHECK_OK(add_line(s, DK_MAP_CROSSWALK, across, 4));
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    DK_CHECK(px(&img, 320, TH - 1)[0] != 0);
    DK_CHECK(px(&img, 320, 285)[0] != 0);        /* far edge: 180 + 600 / 6 = 280 */
    DK_CHECK(px_is(&img, 320, 275, 0, 0, 0));
    for (int j = 0; j < 270; j++)
        for (int i = 0; i < TW; i++)
            if (px(&img, i, j)[0]) DK_FAIL_("pixel (%d, %d) drawn above the crosswalk", i, j);
    dk_tensor_release(&img);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* A traffic sign cuboid 10 m ahead: its hull is filled (centre pixel too),
 * coloured by the mean depth of the 16 edge points (exactly 10). */
static void test_conditions_cuboid_filled(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = test_scene();
    DK_CHECK(s != NULL);
    dk_map_element e;
    memset(&e, 0, sizeof e);
    e.layer = DK_MAP_TRAFFIC_SIGN;
    e.geometry = DK_GEOM_CUBOID;
    e.center[0] = 10;
    e.center[2] = CAM_H;
    e.size[0] = 0.2;
    e.size[1] = 1.0;
    e.size[2] = 1.0;
    DK_CHECK_OK(dk_scenario_add_map_element(s, &e));
    dk_conditions_config c;
    test_cfg(&c);
    dk_tensor img;
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    uint8_t k[3] = {fade1(131, 10, 122.5), fade1(175, 10, 122.5), fade1(155, 10, 122.5)};
    DK_CHECK(px_is(&img, 320, 180, k[0], k[1], k[2]));
    DK_CHECK(px_is(&img, 335, 165, k[0], k[1], k[2]));
    /* The near face spans 400 * 0.5 / 9.9 = 20.2 px each way. */
    DK_CHECK(px_is(&img, 339, 180, k[0], k[1], k[2]));
    DK_CHECK(px_is(&img, 341, 180, 0, 0, 0));
    dk_tensor_release(&img);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* F-theta: the box lands where the f-theta model projects its centre. */
static void test_conditions_ftheta(void)
{
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = test_scene();
    DK_CHECK(s != NULL);
    DK_CHECK_OK(add_box(s, 1, DK_CLASS_CAR, 15, 6, CAM_H));
    dk_conditions_config c;
    test_cfg(&c);
    c.model = DK_CAM_FTHETA;
    dk_tensor img;
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    /* The f-theta camera the renderer is specified to use. */
    double f = (TW / 2.0) / (c.ftheta_fov_deg * M_PI / 360.0);
    const double poly[6] = {0, f, 0, 0, 0, 0};
    dk_camera cam;
    dk_camera_init_ftheta(&cam, TW, TH, TW / 2.0, TH / 2.0, DK_FTHETA_ANGLE_TO_PIXELDIST, poly,
                          NULL, 0);
    const double centre[3] = {-6, 0, 15};
    double uv[2];
    DK_CHECK(dk_camera_project(&cam, centre, uv, NULL));
    int i0 = TW, i1 = -1, j0 = TH, j1 = -1;
    for (int j = 0; j < TH; j++)
        for (int i = 0; i < TW; i++)
            if (px(&img, i, j)[0]) {
                if (i < i0) i0 = i;
                if (i > i1) i1 = i;
                if (j < j0) j0 = j;
                if (j > j1) j1 = j;
            }
    DK_CHECK(i1 >= 0);
    DK_CHECK_NEAR(0.5 * (i0 + i1 + 1), uv[0], 6);
    DK_CHECK_NEAR(0.5 * (j0 + j1 + 1), uv[1], 6);
    /* The pinhole would have put it at u = 320 - 400 * 6 / 15 = 160. */
    DK_CHECK(fabs(uv[0] - 160) > 30);
    dk_tensor_release(&img);

    /* A 200-degree view clips at its max_angle cone instead of z: a box
       abeam at 86 degrees is drawn, one straight behind is not. */
    c.ftheta_fov_deg = 200;
    dk_scenario_destroy(s);
    s = test_scene();
    DK_CHECK(s != NULL);
    DK_CHECK_OK(add_box(s, 1, DK_CLASS_PEDESTRIAN, 0.5, 8, CAM_H));
    DK_CHECK_OK(add_box(s, 2, DK_CLASS_CAR, -12, 0, CAM_H));
    DK_CHECK_OK(dk_world_render_conditions(s, 0, 0.0, &c, &img));
    int64_t green = 0, red = 0;
    for (int j = 0; j < TH; j++)
        for (int i = 0; i < TW; i++) {
            green += px(&img, i, j)[1] != 0;
            red += px(&img, i, j)[0] != 0;
        }
    DK_CHECK(green > 50);
    DK_CHECK_EQ_INT(red, 0);
    dk_tensor_release(&img);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* MP4                                                                       */

typedef struct mp4_info {
    int frames, packets, width, height;
    enum AVCodecID codec;
    enum AVColorRange range;
    enum AVColorSpace space;
    double fps;
    uint8_t first_rgb[3];   /* centre pixel of the first frame, decoded to RGB */
} mp4_info;

/* Decodes every frame of `path`; 0 on success. */
static int mp4_probe(const char *path, mp4_info *info)
{
    memset(info, 0, sizeof *info);
    AVFormatContext *fmt = NULL;
    if (avformat_open_input(&fmt, path, NULL, NULL) < 0) return -1;
    int rc = -1;
    AVCodecContext *dec = NULL;
    AVPacket *pkt = av_packet_alloc();
    AVFrame *fr = av_frame_alloc();
    if (avformat_find_stream_info(fmt, NULL) < 0 || fmt->nb_streams != 1 || !pkt || !fr) goto done;
    AVStream *st = fmt->streams[0];
    info->codec = st->codecpar->codec_id;
    info->width = st->codecpar->width;
    info->height = st->codecpar->height;
    info->range = st->codecpar->color_range;
    info->space = st->codecpar->color_space;
    info->fps = av_q2d(st->avg_frame_rate);
    const AVCodec *codec = avcodec_find_decoder(st->codecpar->codec_id);
    if (!codec || !(dec = avcodec_alloc_context3(codec))) goto done;
    if (avcodec_parameters_to_context(dec, st->codecpar) < 0) goto done;
    dec->thread_count = 1;
    if (avcodec_open2(dec, codec, NULL) < 0) goto done;
    int eof = 0;
    while (!eof) {
        int r = av_read_frame(fmt, pkt);
        if (r < 0) {
            eof = 1;
            avcodec_send_packet(dec, NULL);
        } else {
            info->packets++;
            avcodec_send_packet(dec, pkt);
            av_packet_unref(pkt);
        }
        while (avcodec_receive_frame(dec, fr) >= 0) {
            if (info->frames == 0) {
                /* Centre pixel to RGB by the BT.601 limited-range inverse. */
                int x = fr->width / 2, y = fr->height / 2;
                double Y = fr->data[0][y * fr->linesize[0] + x];
                double U = fr->data[1][(y / 2) * fr->linesize[1] + x / 2] - 128.0;
                double V = fr->data[2][(y / 2) * fr->linesize[2] + x / 2] - 128.0;
                double yy = (Y - 16) * 255.0 / 219.0, s = 255.0 / 224.0;
                double rgb[3] = {yy + 1.402 * s * V, yy - 0.344136 * s * U - 0.714136 * s * V,
                                 yy + 1.772 * s * U};
                for (int k = 0; k < 3; k++)
                    info->first_rgb[k] = rgb[k] < 0 ? 0 : rgb[k] > 255 ? 255 : (uint8_t)lrint(rgb[k]);
            }
            info->frames++;
            av_frame_unref(fr);
        }
    }
    rc = 0;
done:
    av_frame_free(&fr);
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    avformat_close_input(&fmt);
    return rc;
}

static void test_mp4_roundtrip(void)
{
    av_log_set_level(AV_LOG_ERROR);
    int64_t live0 = dk_alloc_live();
    char path[512];
    snprintf(path, sizeof path, "%s/dk_test_mp4_roundtrip.mp4", dk_test_tmpdir());
    dk__mp4 *m = NULL;
    DK_CHECK_OK(dk__mp4_open(path, 64, 48, 12.5, 18, &m));
    const int64_t shape[3] = {48, 64, 3};
    dk_tensor img;
    DK_CHECK_OK(dk_tensor_alloc(&img, DK_U8, 3, shape));
    uint8_t *d = img.data;
    for (int k = 0; k < 7; k++) {
        for (int i = 0; i < 48 * 64; i++) {
            d[3 * i] = 200;
            d[3 * i + 1] = (uint8_t)(40 + 10 * k);
            d[3 * i + 2] = 60;
        }
        DK_CHECK_OK(dk__mp4_write(m, &img));
    }
    /* A wrong frame is refused without breaking the writer. */
    const int64_t bad_shape[3] = {48, 62, 3};
    dk_tensor bad;
    DK_CHECK_OK(dk_tensor_alloc(&bad, DK_U8, 3, bad_shape));
    DK_CHECK_STATUS(dk__mp4_write(m, &bad), DK_EINVAL);
    dk_tensor_release(&bad);
    DK_CHECK_OK(dk__mp4_close(m));
    dk_tensor_release(&img);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);

    mp4_info info;
    DK_CHECK_EQ_INT(mp4_probe(path, &info), 0);
    DK_CHECK_EQ_INT(info.codec, AV_CODEC_ID_H264);
    DK_CHECK_EQ_INT(info.width, 64);
    DK_CHECK_EQ_INT(info.height, 48);
    DK_CHECK_EQ_INT(info.packets, 7);
    DK_CHECK_EQ_INT(info.frames, 7);
    DK_CHECK_NEAR(info.fps, 12.5, 1e-3);
    DK_CHECK_EQ_INT(info.range, AVCOL_RANGE_MPEG);
    DK_CHECK_EQ_INT(info.space, AVCOL_SPC_SMPTE170M);
    DK_CHECK_NEAR(info.first_rgb[0], 200, 4);
    DK_CHECK_NEAR(info.first_rgb[1], 40, 4);
    DK_CHECK_NEAR(info.first_rgb[2], 60, 4);
    remove(path);
}

static void test_mp4_errors(void)
{
    av_log_set_level(AV_LOG_ERROR);
    int64_t live0 = dk_alloc_live();
    char path[512];
    snprintf(path, sizeof path, "%s/dk_test_mp4_odd.mp4", dk_test_tmpdir());
    dk__mp4 *m = (dk__mp4 *)&live0;
    DK_CHECK_STATUS(dk__mp4_open(path, 63, 48, 30, 18, &m), DK_EINVAL);
    DK_CHECK(m == NULL);
    DK_CHECK_STATUS(dk__mp4_open(path, 64, 47, 30, 18, &m), DK_EINVAL);
    DK_CHECK_STATUS(dk__mp4_open(path, 64, 48, 0, 18, &m), DK_EINVAL);
    DK_CHECK_STATUS(dk__mp4_open(path, 64, 48, 30, 52, &m), DK_EINVAL);
    snprintf(path, sizeof path, "%s/no/such/dir/x.mp4", dk_test_tmpdir());
    DK_CHECK_STATUS(dk__mp4_open(path, 64, 48, 30, 18, &m), DK_EIO);
    DK_CHECK_CONTAINS(dk_errmsg(), path);
    DK_CHECK(m == NULL);
    DK_CHECK_OK(dk__mp4_close(NULL));
    /* Opened and closed with no frame: a valid, empty file. */
    snprintf(path, sizeof path, "%s/dk_test_mp4_empty.mp4", dk_test_tmpdir());
    DK_CHECK_OK(dk__mp4_open(path, 32, 32, 29.97, 23, &m));
    DK_CHECK_OK(dk__mp4_close(m));
    remove(path);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* Whole-scenario writer                                                     */

typedef struct progress_log {
    int64_t calls, last_done, last_total;
    int bad;
} progress_log;

static void on_progress(void *user, int64_t done, int64_t total, const char *what)
{
    progress_log *p = user;
    if (strcmp(what, "frames") != 0 || done < p->last_done || done > total) p->bad = 1;
    p->calls++;
    p->last_done = done;
    p->last_total = total;
}

static void test_conditions_write(void)
{
    av_log_set_level(AV_LOG_ERROR);
    int64_t live0 = dk_alloc_live();
    dk_scenario *s = NULL;
    DK_CHECK_OK(dk_scenario_create(&s));
    s->duration = 1.0;
    DK_CHECK_OK(add_box(s, 3, DK_CLASS_CAR, 12, 0, 0.75));
    const double lane[] = {0, 1.75, 0, 60, 1.75, 0};
    DK_CHECK_OK(add_line(s, DK_MAP_LANELINE, lane, 2));
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = 2;
    dk_pool *pool = NULL;
    DK_CHECK_OK(dk_pool_create(&pc, &pool));
    dk_conditions_config c;
    dk_conditions_config_init(&c);
    c.width = 160;
    c.height = 90;
    c.fps = 10;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/dk_test_conditions/out", dk_test_tmpdir());
    progress_log pl = {0, 0, 0, 0};
    DK_CHECK_OK(dk_world_write_conditions(s, dir, &c, pool, on_progress, &pl));
    int n_cams = 0;
    for (int i = 0; i < s->rig.n_sensors; i++) n_cams += s->rig.sensors[i].kind == DK_SENSOR_CAMERA;
    DK_CHECK(n_cams >= 1);
    DK_CHECK_EQ_INT(pl.bad, 0);
    DK_CHECK_EQ_INT(pl.last_done, 11 * n_cams);
    DK_CHECK_EQ_INT(pl.last_total, 11 * n_cams);
    for (int i = 0; i < s->rig.n_sensors; i++) {
        if (s->rig.sensors[i].kind != DK_SENSOR_CAMERA) continue;
        char path[640];
        snprintf(path, sizeof path, "%s/%s.mp4", dir, s->rig.sensors[i].name);
        mp4_info info;
        if (mp4_probe(path, &info) != 0) DK_FAIL_("cannot read %s", path);
        DK_CHECK_EQ_INT(info.frames, 11);
        DK_CHECK_EQ_INT(info.width, 160);
        DK_CHECK_EQ_INT(info.height, 90);
        DK_CHECK_EQ_INT(info.codec, AV_CODEC_ID_H264);
    }
    char jpath[640];
    snprintf(jpath, sizeof jpath, "%s/conditions.json", dir);
    dk_json *doc = NULL;
    DK_CHECK_OK(dk_json_load(jpath, &doc));
    dk_json_cur root = dk_json_root(doc), frames, cams, cfg, f10;
    int64_t nf = 0;
    double t10 = 0;
    int ok = dk_json_get_int(&root, "n_frames", 0, 1000, &nf) == 0 &&
             dk_json_field(&root, "frames", &frames) == 0 &&
             dk_json_field(&root, "cameras", &cams) == 0 &&
             dk_json_field(&root, "config", &cfg) == 0 && dk_json_item(&frames, 10, &f10) == 0 &&
             dk_json_get_number(&f10, "t", &t10) == 0;
    size_t n_frames = ok ? dk_json_size(&frames) : 0, n_json_cams = ok ? dk_json_size(&cams) : 0;
    dk_json_free(doc);
    DK_CHECK(ok);
    DK_CHECK_EQ_INT(nf, 11);
    DK_CHECK_EQ_INT(n_frames, 11);
    DK_CHECK_EQ_INT(n_json_cams, n_cams);
    DK_CHECK_NEAR(t10, 1.0, 1e-12);

    /* Odd sizes cannot be encoded. */
    c.width = 161;
    DK_CHECK_STATUS(dk_world_write_conditions(s, dir, &c, pool, NULL, NULL), DK_EINVAL);
    /* An output directory under a file cannot be created. */
    c.width = 160;
    char blocked[640];
    snprintf(blocked, sizeof blocked, "%s/conditions.json/sub", dir);
    DK_CHECK_STATUS(dk_world_write_conditions(s, blocked, &c, NULL, NULL, NULL), DK_EIO);
    DK_CHECK_CONTAINS(dk_errmsg(), "conditions.json");
    dk_pool_destroy(pool);
    dk_scenario_destroy(s);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}


/* ------------------------------------------------------------------------ */
/* Allocation failures: every failing allocation gives DK_ENOMEM (or the
 * error of the object that could not be built) and leaks nothing.          */

typedef struct fail_alloc {
    long n, fail_at;
} fail_alloc;

static void *fa_malloc(void *ctx, size_t size)
{
    fail_alloc *f = ctx;
    if (f->n++ == f->fail_at) return NULL;
    return malloc(size);
}
static void *fa_realloc(void *ctx, void *p, size_t size)
{
    fail_alloc *f = ctx;
    if (f->n++ == f->fail_at) return NULL;
    return realloc(p, size);
}
static void fa_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

/* Runs the renderer and the writer with allocation k failing, k = 0, 1, ...
 * until a run sees no failure. */
static void test_conditions_alloc_failures(void)
{
    av_log_set_level(AV_LOG_QUIET);
    if (dk_alloc_live() != 0) {
        printf("  (skipped: %" PRId64 " allocations live before the test)\n", dk_alloc_live());
        return;
    }
    char dir[512];
    snprintf(dir, sizeof dir, "%s/dk_test_conditions_oom", dk_test_tmpdir());
    for (int writer = 0; writer < 2; writer++) {
        for (long k = 0;; k++) {
            fail_alloc f = {0, -1};
            dk_allocator a = {fa_malloc, fa_realloc, fa_free, &f};
            DK_CHECK_OK(dk_set_allocator(&a));
            dk_scenario *s = test_scene();
            int st = DK_ENOMEM;
            if (s && add_box(s, 1, DK_CLASS_CAR, 10, 0, CAM_H) == 0) {
                const double lane[] = {0, 1.75, 0, 60, 1.75, 0};
                const double quad[] = {8, -2, 0, 12, -2, 0, 12, 2, 0, 8, 2, 0};
                if (add_line(s, DK_MAP_LANELINE, lane, 2) == 0 &&
                    add_line(s, DK_MAP_CROSSWALK, quad, 4) == 0) {
                    dk_conditions_config c;
                    dk_conditions_config_init(&c);
                    c.width = 64;
                    c.height = 36;
                    c.fps = 2;
                    f.fail_at = f.n + k; /* fail inside the call under test only */
                    if (writer) {
                        st = dk_world_write_conditions(s, dir, &c, NULL, NULL, NULL);
                    } else {
                        dk_tensor img;
                        st = dk_world_render_conditions(s, 0, 0.0, &c, &img);
                        if (st == DK_OK) dk_tensor_release(&img);
                    }
                }
            }
            int failed_inside = f.fail_at >= 0 && f.n > f.fail_at;
            dk_scenario_destroy(s);
            DK_CHECK_EQ_INT(dk_alloc_live(), 0);
            DK_CHECK_OK(dk_set_allocator(NULL));
            if (!failed_inside) {
                DK_CHECK_OK(st);
                break;
            }
            if (st != DK_ENOMEM) DK_FAIL_("writer %d, failing allocation %ld: %s", writer, k, dk_errmsg());
            DK_CHECK(k < 10000);
        }
    }
    av_log_set_level(AV_LOG_ERROR);
}

const dk_test_case dk_tests_conditions[] = {
    DK_TEST(test_conditions_config_defaults),
    DK_TEST(test_conditions_bad_args),
    DK_TEST(test_conditions_empty_scene_black),
    DK_TEST(test_conditions_box_depth_fade),
    DK_TEST(test_conditions_class_colours),
    DK_TEST(test_conditions_box_id_order),
    DK_TEST(test_conditions_far_and_behind_not_drawn),
    DK_TEST(test_conditions_camera_plane_clip),
    DK_TEST(test_conditions_line_thickness),
    DK_TEST(test_conditions_max_merge),
    DK_TEST(test_conditions_crosswalk_filled),
    DK_TEST(test_conditions_cuboid_filled),
    DK_TEST(test_conditions_ftheta),
    DK_TEST(test_mp4_roundtrip),
    DK_TEST(test_mp4_errors),
    DK_TEST(test_conditions_write),
    DK_TEST(test_conditions_alloc_failures),
};
const size_t dk_tests_conditions_count = sizeof dk_tests_conditions / sizeof dk_tests_conditions[0];
