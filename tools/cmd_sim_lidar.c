/*
 * drivekit sim lidar: one sweep of a spinning lidar through a Gaussian scene,
 * written as points (.bin) or as a range image (.png).
 *
 * The pose flag places the lidar in an FLU world (x forward, y left, z up) at
 * (x, y, z), turned by yaw degrees counter-clockwise seen from above; its
 * own frame is FLU too, so yaw 0 keeps it aligned with the world.
 *
 * .bin: little-endian float32 rows of 6 values x, y, z (metres, lidar frame
 * at the sweep start), intensity ([0, 1]), ring (beam index, 0 = lowest),
 * time (seconds after the sweep start); numpy.fromfile(f, "<f4").reshape(-1, 6).
 * .png: 8-bit grey, n_beams rows (top row = highest beam) by n_columns
 * columns (firing order): value = round(255 * range / max_range), at least
 * 1 for a return; 0 = no return (or dropped by the ray-drop model).
 */

#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define DK_LIDAR_PI 3.14159265358979323846

static const char *usage =
    "drivekit sim lidar --ply FILE --out FILE.bin|FILE.png [--preset 32|64|128]\n"
    "                   [--pose x,y,z,yaw_deg] [--tracks FILE.json] [--time T]\n"
    "                   [--raydrop none|threshold|sample]"
    " [--seed S] [--hit-threshold A] [--threads T]";

static void print_help(void)
{
    printf("usage: %s\n\n"
           "Renders one sweep of a spinning lidar through a 3DGS PLY scene (each ray evaluated\n"
           "against the 3-D Gaussians) and writes it. Prints the size, returns, points and\n"
           "milliseconds.\n\n"
           "options:\n"
           "  --ply FILE           the scene (binary little-endian 3DGS PLY; lidar_intensity and\n"
           "                       lidar_raydrop properties are used when present)\n"
           "  --out FILE           .bin: points, little-endian float32 rows x, y, z (metres, lidar\n"
           "                       frame at the sweep start), intensity ([0, 1]), ring (beam, 0 =\n"
           "                       lowest), time (s after the sweep start), ordered by column then\n"
           "                       beam; read with numpy.fromfile(f, '<f4').reshape(-1, 6).\n"
           "                       .png: range image, 8-bit grey, one row per beam (top = highest),\n"
           "                       one column per firing: round(255 * range / max_range), at least\n"
           "                       1 for a return; 0 = no return or dropped\n"
           "  --preset N           32 (HDL-32E-like, 1084 columns, 20 Hz), 64 (2048 columns, 10 Hz)\n"
           "                       or 128 (3600 columns, 10 Hz); default 32\n"
           "  --pose x,y,z,yaw     lidar position (metres) and heading (degrees, counter-clockwise\n"
           "                       from +x) in an FLU world (x forward, y left, z up); the lidar's\n"
           "                       frame is FLU. Default 0,0,0,0\n"
           "  --tracks FILE        actor tracks (JSON, e.g. SCENE.tracks.json from `sim from-world`)\n"
           "                       placing the Gaussians that carry an actor_id\n"
           "  --time T             sweep start (seconds) on the tracks' clock; each column sees the\n"
           "                       actors at its own firing time. Default 0\n"
           "  --raydrop MODE       which returns the ray-drop model removes: none, threshold\n"
           "                       (probability >= 0.5; default) or sample (random draws keyed by\n"
           "                       --seed, reproducible)\n"
           "  --seed S             seed of --raydrop sample; default 0\n"
           "  --hit-threshold A    accumulated opacity a ray needs to return, in (0, 1]; default 0.5\n"
           "  --threads T          render threads, caller included; default: online CPUs\n\n"
           "Exit status: 0 success; 1 the scene could not be loaded, rendered or written (the\n"
           "message names the file); 2 bad usage.\n",
           usage);
}

enum { OPT_PLY = 256, OPT_OUT, OPT_PRESET, OPT_POSE, OPT_TRACKS, OPT_TIME, OPT_RAYDROP, OPT_SEED,
       OPT_HIT, OPT_THREADS, OPT_HELP };


static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    if (n < k) return 0;
    for (size_t i = 0; i < k; i++) {
        char c = s[n - k + i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != suffix[i]) return 0;
    }
    return 1;
}

int sim_lidar(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ply", required_argument, NULL, OPT_PLY},
        {"out", required_argument, NULL, OPT_OUT},
        {"preset", required_argument, NULL, OPT_PRESET},
        {"pose", required_argument, NULL, OPT_POSE},
        {"tracks", required_argument, NULL, OPT_TRACKS},
        {"time", required_argument, NULL, OPT_TIME},
        {"raydrop", required_argument, NULL, OPT_RAYDROP},
        {"seed", required_argument, NULL, OPT_SEED},
        {"hit-threshold", required_argument, NULL, OPT_HIT},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "sim lidar", *ply = NULL, *out = NULL, *tracks = NULL;
    long preset = 32, threads = cli_default_threads(), seed = 0;
    double pose_v[4] = {0, 0, 0, 0}, t0 = 0, hit = 0.5;
    dk_lidar_raydrop_mode mode = DK_LIDAR_RAYDROP_THRESHOLD;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_HELP: print_help(); return CLI_OK;
        case OPT_PLY: ply = optarg; break;
        case OPT_OUT: out = optarg; break;
        case OPT_TRACKS: tracks = optarg; break;
        case OPT_PRESET:
            if (cli_parse_int(optarg, 1, 1024, &preset) ||
                (preset != 32 && preset != 64 && preset != 128))
                return cli_usage_error(cmd, usage, "bad --preset '%s' (32, 64 or 128)", optarg);
            break;
        case OPT_POSE:
            if (cli_parse_doubles(optarg, 4, pose_v))
                return cli_usage_error(cmd, usage, "bad --pose '%s' (want x,y,z,yaw_deg)", optarg);
            break;
        case OPT_TIME:
            if (cli_parse_double(optarg, -DBL_MAX, DBL_MAX, &t0))
                return cli_usage_error(cmd, usage, "bad --time '%s' (seconds)", optarg);
            break;
        case OPT_RAYDROP:
            if (!strcmp(optarg, "none"))
                mode = DK_LIDAR_RAYDROP_NONE;
            else if (!strcmp(optarg, "threshold"))
                mode = DK_LIDAR_RAYDROP_THRESHOLD;
            else if (!strcmp(optarg, "sample"))
                mode = DK_LIDAR_RAYDROP_SAMPLE;
            else
                return cli_usage_error(cmd, usage,
                                       "bad --raydrop '%s' (none, threshold or sample)", optarg);
            break;
        case OPT_SEED:
            if (cli_parse_int(optarg, 0, 2147483647L, &seed))
                return cli_usage_error(cmd, usage, "bad --seed '%s' (0..2147483647)", optarg);
            break;
        case OPT_HIT:
            if (cli_parse_double(optarg, 0, 1, &hit) || hit <= 0)
                return cli_usage_error(cmd, usage, "bad --hit-threshold '%s' (in (0, 1])", optarg);
            break;
        case OPT_THREADS:
            if (cli_parse_int(optarg, 1, 1024, &threads))
                return cli_usage_error(cmd, usage, "bad --threads '%s' (1..1024)", optarg);
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
    int as_png = ends_with(out, ".png");
    if (!as_png && !ends_with(out, ".bin"))
        return cli_usage_error(cmd, usage, "--out '%s' must end in .bin (points) or .png (range "
                               "image)", out);

    dk_lidar_model m;
    int st = dk_lidar_model_preset(&m, (dk_lidar_preset)preset);
    if (st) return cli_fail(st);
    dk_pose l2w = dk_pose_from_yaw(pose_v[0], pose_v[1], pose_v[2], pose_v[3] * DK_LIDAR_PI / 180);
    dk_lidar_render_config cfg;
    dk_lidar_render_config_init(&cfg);
    cfg.time = t0;
    cfg.hit_threshold = hit;
    cfg.raydrop_mode = mode;
    cfg.raydrop_seed = (uint64_t)seed;

    const size_t nr = (size_t)m.n_beams * (size_t)m.n_columns;
    dk_scene *scene = NULL;
    dk_pool *pool = NULL;
    float *img = NULL, *pts = NULL;
    uint8_t *file = NULL;
    size_t file_size = 0;
    int64_t np = 0, returns = 0;
    double ms = 0;
    st = dk_scene_load_ply(ply, 0, &scene);
    if (!st && tracks) st = dk_scene_load_tracks_json(scene, tracks);
    if (!st && threads > 1) {
        dk_pool_config pc;
        dk_pool_config_init(&pc);
        pc.n_threads = (int)threads;
        st = dk_pool_create(&pc, &pool);
    }
    if (!st) {
        img = malloc(nr * 3 * sizeof *img);
        pts = malloc(nr * 6 * sizeof *pts);
        if (!img || !pts) {
            fprintf(stderr, "drivekit: out of memory for a %dx%d sweep\n", m.n_beams, m.n_columns);
            free(img);
            free(pts);
            dk_pool_destroy(pool);
            dk_scene_destroy(scene);
            return CLI_FAIL;
        }
    }
    float *range = img, *inten = img ? img + nr : NULL, *drop = img ? img + 2 * nr : NULL;
    if (!st) {
        double t = cli_now_ms();
        st = dk_render_lidar(scene, &m, &l2w, &cfg, pool, range, inten, drop, NULL);
        ms = cli_now_ms() - t;
    }
    if (!st) {
        for (size_t i = 0; i < nr; i++) returns += range[i] > 0;
        st = dk_lidar_points(&m, &l2w, &cfg, range, inten, drop, pts, (int64_t)nr, &np);
    }
    if (!st && as_png) {
        /* Rays the ray-drop model removed read 0, like rays without a return:
         * the points (all of them fit) mark the survivors. */
        dk_tensor t;
        const int64_t shape[3] = {m.n_beams, m.n_columns, 1};
        st = dk_tensor_alloc(&t, DK_U8, 3, shape);
        if (!st) {
            uint8_t *px = (uint8_t *)t.data;
            for (int64_t k = 0; k < np; k++) {
                const float *p = pts + k * 6;
                int b = (int)p[4];
                int col = (int)lrint(p[5] * m.n_columns * m.spin_hz);
                if (b < 0 || b >= m.n_beams || col < 0 || col >= m.n_columns) continue;
                float r = range[(size_t)b * (size_t)m.n_columns + (size_t)col];
                double v = 255.0 * r / m.max_range;
                long q = lrint(v < 1 ? 1 : v > 255 ? 255 : v);
                px[(size_t)(m.n_beams - 1 - b) * (size_t)m.n_columns + (size_t)col] = (uint8_t)q;
            }
            st = dk_png_encode(&t, &file, &file_size);
            dk_tensor_release(&t);
        }
        if (!st) st = dk_file_write(out, file, file_size);
    } else if (!st) {
        /* float32 little-endian rows: the host order on every supported platform */
        st = dk_file_write(out, pts, (size_t)np * 6 * sizeof(float));
    }
    int rc = CLI_OK;
    if (st) {
        rc = cli_fail(st);
    } else {
        printf("%s: %d beams x %d columns, %lld Gaussians, %lld returns, %lld points, %.1f ms "
               "with %ld thread(s) -> %s\n",
               ply, m.n_beams, m.n_columns, (long long)scene->n, (long long)returns,
               (long long)np, ms, threads, out);
    }
    dk_free(file);
    free(img);
    free(pts);
    dk_pool_destroy(pool);
    dk_scene_destroy(scene);
    return rc;
}
