/*
 * drivekit sim: render Gaussian-splat scenes (3DGS PLY) for any camera model.
 *
 * The pose flag places the camera in an FLU world (x forward, y left, z up):
 * at (x, y, z), optical axis horizontal along the yaw (degrees, counter-
 * clockwise from +x seen from above), image x to the right and image y down
 * (OpenCV camera axes). So yaw 0 looks along +x with the camera's right being
 * world -y and its down world -z.
 */
#define _POSIX_C_SOURCE 200809L   /* sysconf */

#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define DK_SIM_PI 3.14159265358979323846

static const char *usage =
    "drivekit sim render --ply FILE --out IMG.png [--camera pinhole|fisheye|ftheta]\n"
    "                    [--width W --height H] [--fov DEG] [--pose x,y,z,yaw_deg] [--threads T]\n"
    "                    [--tracks FILE.json] [--time T]\n"
    "       drivekit sim lidar --ply FILE --out PTS.bin|RANGE.png [--preset 32|64|128] (one lidar sweep; --help)\n"
    "       drivekit sim from-world (--scenario FILE.json | --seed S) --out SCENE.ply (a scene of a drive; --help)\n"
    "       drivekit sim serve --ply FILE [--tracks FILE] [--port P] (closed-loop HTTP render server; --help)";

static void print_help(void)
{
    printf("usage: %s\n\n"
           "  render     render a 3DGS PLY scene (binary little-endian, SH degree 0..3) seen by\n"
           "             one camera and write an 8-bit image (rgb clamped to [0, 1], times 255;\n"
           "             .png or .jpg by extension). Prints size, Gaussians and milliseconds.\n\n"
           "options:\n"
           "  --ply FILE         the scene\n"
           "  --out IMG          output image (.png, .jpg, .jpeg)\n"
           "  --camera MODEL     pinhole (default), fisheye (equidistant, OpenCV fisheye with\n"
           "                     k = 0) or ftheta (pixel distance = f * angle); principal point\n"
           "                     at the image centre\n"
           "  --width W          image width in pixels; default 960\n"
           "  --height H         image height in pixels; default 540\n"
           "  --fov DEG          horizontal field of view, which sets the focal length f:\n"
           "                     pinhole f = (W/2) / tan(fov/2), fov in (0, 180); fisheye and\n"
           "                     ftheta f = (W/2) / (fov/2 in radians), fov in (0, 360).\n"
           "                     Default 90 (pinhole), 120 (fisheye, ftheta)\n"
           "  --pose x,y,z,yaw   camera centre (metres) and heading (degrees) in an FLU world\n"
           "                     (x forward, y left, z up): the optical axis is horizontal along\n"
           "                     the yaw (counter-clockwise from +x), image x points right and\n"
           "                     image y down (OpenCV camera axes). Default 0,0,0,0\n"
           "  --threads T        render threads, caller included; default: online CPUs\n"
           "  --tracks FILE      actor tracks (JSON, e.g. SCENE.tracks.json from `sim from-world`)\n"
           "                     placing the Gaussians that carry an actor_id\n"
           "  --time T           seconds on the tracks' clock at which actors are placed;\n"
           "                     default 0\n\n"
           "Exit status: 0 success; 1 the scene could not be loaded, rendered or written (the\n"
           "message names the file); 2 bad usage.\n",
           usage);
}

enum { OPT_PLY = 256, OPT_OUT, OPT_CAMERA, OPT_WIDTH, OPT_HEIGHT, OPT_FOV, OPT_POSE, OPT_THREADS,
       OPT_HELP, OPT_TRACKS, OPT_TIME };


/* cam_to_world for the camera of --pose (see the file comment). */
static int pose_from_flu(const double v[4], dk_pose *out)
{
    double yaw = v[3] * DK_SIM_PI / 180.0, c = cos(yaw), s = sin(yaw);
    /* Columns: the camera's x (right), y (down), z (forward) axes in the world. */
    const double m[16] = {
        s,  0, c, v[0],
        -c, 0, s, v[1],
        0, -1, 0, v[2],
        0,  0, 0, 1,
    };
    return dk_pose_from_matrix(m, out);
}

static int sim_render(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ply", required_argument, NULL, OPT_PLY},
        {"out", required_argument, NULL, OPT_OUT},
        {"camera", required_argument, NULL, OPT_CAMERA},
        {"width", required_argument, NULL, OPT_WIDTH},
        {"height", required_argument, NULL, OPT_HEIGHT},
        {"fov", required_argument, NULL, OPT_FOV},
        {"pose", required_argument, NULL, OPT_POSE},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"help", no_argument, NULL, OPT_HELP},
        {"tracks", required_argument, NULL, OPT_TRACKS},
        {"time", required_argument, NULL, OPT_TIME},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "sim render", *ply = NULL, *out = NULL, *model = "pinhole", *tracks = NULL;
    double time_s = 0;
    long width = 960, height = 540, threads = cli_default_threads();
    double fov = 0, pose_v[4] = {0, 0, 0, 0};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_HELP: print_help(); return CLI_OK;
        case OPT_PLY: ply = optarg; break;
        case OPT_OUT: out = optarg; break;
        case OPT_CAMERA:
            if (strcmp(optarg, "pinhole") && strcmp(optarg, "fisheye") && strcmp(optarg, "ftheta"))
                return cli_usage_error(cmd, usage, "bad --camera '%s' (pinhole, fisheye or ftheta)",
                                       optarg);
            model = optarg;
            break;
        case OPT_WIDTH:
            if (cli_parse_int(optarg, 1, 16384, &width))
                return cli_usage_error(cmd, usage, "bad --width '%s' (1..16384)", optarg);
            break;
        case OPT_HEIGHT:
            if (cli_parse_int(optarg, 1, 16384, &height))
                return cli_usage_error(cmd, usage, "bad --height '%s' (1..16384)", optarg);
            break;
        case OPT_FOV:
            if (cli_parse_double(optarg, -DBL_MAX, DBL_MAX, &fov) || fov <= 0)
                return cli_usage_error(cmd, usage, "bad --fov '%s' (degrees > 0)", optarg);
            break;
        case OPT_POSE:
            if (cli_parse_doubles(optarg, 4, pose_v))
                return cli_usage_error(cmd, usage, "bad --pose '%s' (want x,y,z,yaw_deg)", optarg);
            break;
        case OPT_THREADS:
            if (cli_parse_int(optarg, 1, 1024, &threads))
                return cli_usage_error(cmd, usage, "bad --threads '%s' (1..1024)", optarg);
            break;
        case OPT_TRACKS: tracks = optarg; break;
        case OPT_TIME:
            if (cli_parse_double(optarg, -DBL_MAX, DBL_MAX, &time_s))
                return cli_usage_error(cmd, usage, "bad --time '%s' (seconds)", optarg);
            break;
        default:
            if (optopt >= OPT_PLY)
                return cli_usage_error(cmd, usage, "option '%s' needs a value", argv[optind - 1]);
            return cli_usage_error(cmd, usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error(cmd, usage, "unexpected argument '%s'", argv[optind]);
    if (!ply) return cli_usage_error(cmd, usage, "--ply is required");
    if (!out) return cli_usage_error(cmd, usage, "--out is required");
    int pinhole = !strcmp(model, "pinhole");
    if (fov == 0) fov = pinhole ? 90 : 120;
    if (pinhole ? fov >= 180 : fov >= 360)
        return cli_usage_error(cmd, usage, "--fov %g out of range for %s (below %d degrees)", fov,
                               model, pinhole ? 180 : 360);

    const int w = (int)width, h = (int)height;
    const double half = fov * DK_SIM_PI / 360.0, cx = w / 2.0, cy = h / 2.0;
    dk_camera cam;
    if (pinhole) {
        double f = cx / tan(half);
        dk_camera_init_pinhole(&cam, w, h, f, f, cx, cy);
    } else if (!strcmp(model, "fisheye")) {
        double f = cx / half;
        dk_camera_init_fisheye(&cam, w, h, f, f, cx, cy, NULL, 0);
    } else {
        const double poly[6] = {0, cx / half, 0, 0, 0, 0};
        dk_camera_init_ftheta(&cam, w, h, cx, cy, DK_FTHETA_ANGLE_TO_PIXELDIST, poly, NULL, 0);
    }
    dk_pose cam_to_world;
    int st = dk_camera_validate(&cam);
    if (!st) st = pose_from_flu(pose_v, &cam_to_world);
    if (st) return cli_fail(st);

    dk_scene *scene = NULL;
    dk_pool *pool = NULL;
    float *rgb = NULL;
    dk_tensor img;
    memset(&img, 0, sizeof img);
    const int64_t shape[3] = {h, w, 3};
    st = dk_scene_load_ply(ply, 0, &scene);
    if (!st && tracks) st = dk_scene_load_tracks_json(scene, tracks);
    if (!st && threads > 1) {
        dk_pool_config pc;
        dk_pool_config_init(&pc);
        pc.n_threads = (int)threads;
        st = dk_pool_create(&pc, &pool);
    }
    if (!st) st = dk_tensor_alloc(&img, DK_U8, 3, shape);
    if (!st) {
        rgb = malloc((size_t)w * (size_t)h * 3 * sizeof *rgb);
        if (!rgb) {
            fprintf(stderr, "drivekit: out of memory for a %dx%d image\n", w, h);
            dk_tensor_release(&img);
            dk_pool_destroy(pool);
            dk_scene_destroy(scene);
            return CLI_FAIL;
        }
    }
    double ms = 0;
    if (!st) {
        dk_render_config rc;
        dk_render_config_init(&rc);
        rc.time = time_s;
        double t0 = cli_now_ms();
        st = dk_render_camera(scene, &cam, &cam_to_world, &rc, pool, rgb, NULL, NULL);
        ms = cli_now_ms() - t0;
    }
    if (!st) {
        uint8_t *px = (uint8_t *)img.data;
        for (size_t i = 0; i < (size_t)w * (size_t)h * 3; i++) {
            float v = rgb[i];
            v = v > 0 ? (v < 1 ? v : 1) : 0;   /* also maps NaN to 0 */
            px[i] = (uint8_t)lrintf(v * 255.0f);
        }
        st = dk_image_save(out, &img, 95);
    }
    int rc = CLI_OK;
    if (st) {
        rc = cli_fail(st);
    } else {
        printf("%s: %dx%d %s, %lld Gaussians (SH degree %d), %.1f ms with %ld thread(s) -> %s\n",
               ply, w, h, model, (long long)scene->n, scene->sh_degree, ms, threads, out);
    }
    free(rgb);
    dk_tensor_release(&img);
    dk_pool_destroy(pool);
    dk_scene_destroy(scene);
    return rc;
}

int cmd_sim(int argc, char **argv)
{
    static const cli_subcommand subs[] = {
        {"render", sim_render},
        {"lidar", sim_lidar},
        {"from-world", sim_from_world},
        {"serve", sim_serve},
    };
    return cli_dispatch("sim", usage, print_help, subs, sizeof subs / sizeof subs[0], argc, argv);
}
