/*
 * drivekit sim from-world: a Gaussian scene (3DGS PLY + tracks JSON) from a
 * scenario JSON or from the procedural generator (dk_scene_from_scenario).
 */

#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *usage =
    "drivekit sim from-world (--scenario FILE.json | --seed S [--duration D]) --out SCENE.ply\n"
    "                        [--tracks FILE] [--density N] [--object-density N] [--margin M]\n"
    "                        [--sh-degree 0|1] [--jitter-seed S] [--no-ground] [--no-paint]\n"
    "                        [--no-objects] [--no-actors]";

static void print_help(void)
{
    printf("usage: %s\n\n"
           "Makes a Gaussian-splat scene of a driving scenario: the map around the ego's path\n"
           "(grass, road, sidewalks, lane paint, crosswalks, poles, lights, signs) and the\n"
           "actors (parked and moving vehicles, pedestrians, cyclists, works-area objects)\n"
           "as flat Gaussians in the world renderer's colours, with lidar features and actor\n"
           "ids. Writes SCENE.ply and the actor tracks as JSON (SCENE.tracks.json unless\n"
           "--tracks); moving actors follow their tracks, the ego's is actor 0. Render it\n"
           "with `drivekit sim render --ply SCENE.ply --tracks SCENE.tracks.json --time T`.\n\n"
           "options:\n"
           "  --scenario FILE    a scenario JSON (drivekit world generate --out ... writes one)\n"
           "  --seed S           or generate the town drive with this seed (default 1)\n"
           "  --duration D       seconds of generated drive (default 20)\n"
           "  --out FILE         the scene PLY\n"
           "  --tracks FILE      the tracks JSON; default: --out with .ply replaced by\n"
           "                     .tracks.json\n"
           "  --density N        Gaussians per square metre on the ground (default 4)\n"
           "  --object-density N Gaussians per square metre on boxes and paint (default 16)\n"
           "  --margin M         metres around the ego's path that are covered (default 40)\n"
           "  --sh-degree D      0 (default) or 1\n"
           "  --jitter-seed S    seed of positions and colour jitter (default 0)\n"
           "  --no-ground, --no-paint, --no-objects, --no-actors   leave those out\n\n"
           "Prints the scene size, the files written and a --pose for `sim render` that puts\n"
           "a camera at the ego's front camera at t = 0.\n\n"
           "Exit status: 0 success; 1 the scenario could not be loaded or the scene not made\n"
           "or written (the message names the file); 2 bad usage.\n",
           usage);
}

enum { OPT_SCENARIO = 256, OPT_SEED, OPT_DURATION, OPT_OUT, OPT_TRACKS, OPT_DENSITY,
       OPT_OBJECT_DENSITY, OPT_MARGIN, OPT_SH_DEGREE, OPT_JITTER_SEED, OPT_NO_GROUND,
       OPT_NO_PAINT, OPT_NO_OBJECTS, OPT_NO_ACTORS, OPT_HELP };

int sim_from_world(int argc, char **argv)
{
    static const struct option opts[] = {
        {"scenario", required_argument, NULL, OPT_SCENARIO},
        {"seed", required_argument, NULL, OPT_SEED},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"out", required_argument, NULL, OPT_OUT},
        {"tracks", required_argument, NULL, OPT_TRACKS},
        {"density", required_argument, NULL, OPT_DENSITY},
        {"object-density", required_argument, NULL, OPT_OBJECT_DENSITY},
        {"margin", required_argument, NULL, OPT_MARGIN},
        {"sh-degree", required_argument, NULL, OPT_SH_DEGREE},
        {"jitter-seed", required_argument, NULL, OPT_JITTER_SEED},
        {"no-ground", no_argument, NULL, OPT_NO_GROUND},
        {"no-paint", no_argument, NULL, OPT_NO_PAINT},
        {"no-objects", no_argument, NULL, OPT_NO_OBJECTS},
        {"no-actors", no_argument, NULL, OPT_NO_ACTORS},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "sim from-world", *scenario = NULL, *out = NULL, *tracks = NULL;
    long seed = 1, jitter = 0, sh_degree = 0;
    int have_seed = 0, have_duration = 0;
    double duration = 20;
    dk_scene_from_world_config cfg;
    dk_scene_from_world_config_init(&cfg);
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_HELP: print_help(); return CLI_OK;
        case OPT_SCENARIO: scenario = optarg; break;
        case OPT_OUT: out = optarg; break;
        case OPT_TRACKS: tracks = optarg; break;
        case OPT_SEED:
            if (cli_parse_int(optarg, 0, 2147483647L, &seed))
                return cli_usage_error(cmd, usage, "bad --seed '%s' (0..2147483647)", optarg);
            have_seed = 1;
            break;
        case OPT_DURATION:
            if (cli_parse_double(optarg, 0.1, 3600, &duration))
                return cli_usage_error(cmd, usage, "bad --duration '%s' (0.1..3600 seconds)",
                                       optarg);
            have_duration = 1;
            break;
        case OPT_DENSITY:
            if (cli_parse_double(optarg, 0.01, 400, &cfg.density))
                return cli_usage_error(cmd, usage, "bad --density '%s' (0.01..400 per m^2)",
                                       optarg);
            break;
        case OPT_OBJECT_DENSITY:
            if (cli_parse_double(optarg, 0.01, 400, &cfg.object_density))
                return cli_usage_error(cmd, usage, "bad --object-density '%s' (0.01..400 per m^2)",
                                       optarg);
            break;
        case OPT_MARGIN:
            if (cli_parse_double(optarg, 1, 2000, &cfg.margin))
                return cli_usage_error(cmd, usage, "bad --margin '%s' (1..2000 metres)", optarg);
            break;
        case OPT_SH_DEGREE:
            if (cli_parse_int(optarg, 0, 1, &sh_degree))
                return cli_usage_error(cmd, usage, "bad --sh-degree '%s' (0 or 1)", optarg);
            break;
        case OPT_JITTER_SEED:
            if (cli_parse_int(optarg, 0, 2147483647L, &jitter))
                return cli_usage_error(cmd, usage, "bad --jitter-seed '%s' (0..2147483647)",
                                       optarg);
            break;
        case OPT_NO_GROUND: cfg.include &= ~(DK_FROM_WORLD_GROUND | DK_FROM_WORLD_SURFACES); break;
        case OPT_NO_PAINT: cfg.include &= ~DK_FROM_WORLD_PAINT; break;
        case OPT_NO_OBJECTS: cfg.include &= ~DK_FROM_WORLD_OBJECTS; break;
        case OPT_NO_ACTORS: cfg.include &= ~(DK_FROM_WORLD_PARKED | DK_FROM_WORLD_MOVING); break;
        default:
            if (optopt >= OPT_SCENARIO)
                return cli_usage_error(cmd, usage, "option '%s' needs a value", argv[optind - 1]);
            return cli_usage_error(cmd, usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error(cmd, usage, "unexpected argument '%s'", argv[optind]);
    if (!out) return cli_usage_error(cmd, usage, "--out is required");
    if (scenario && (have_seed || have_duration))
        return cli_usage_error(cmd, usage, "--scenario and --seed/--duration exclude each other");
    cfg.sh_degree = (int)sh_degree;
    cfg.seed = (uint64_t)jitter;

    char *tracks_buf = NULL;
    if (!tracks) {
        size_t n = strlen(out);
        const char *ext = n >= 4 && !strcmp(out + n - 4, ".ply") ? out + n - 4 : out + n;
        size_t stem = (size_t)(ext - out);
        tracks_buf = malloc(stem + sizeof ".tracks.json");
        if (!tracks_buf) {
            fprintf(stderr, "drivekit: out of memory\n");
            return CLI_FAIL;
        }
        memcpy(tracks_buf, out, stem);
        memcpy(tracks_buf + stem, ".tracks.json", sizeof ".tracks.json");
        tracks = tracks_buf;
    }

    dk_scenario *sc = NULL;
    dk_scene *scene = NULL;
    int st;
    if (scenario) {
        st = dk_scenario_load(scenario, &sc);
    } else {
        dk_world_gen_config g;
        dk_world_gen_config_init(&g);
        g.seed = (uint64_t)seed;
        g.duration = duration;
        st = dk_world_generate(&g, &sc);
    }
    double ms = 0;
    if (!st) {
        double t0 = cli_now_ms();
        st = dk_scene_from_scenario(sc, &cfg, &scene);
        ms = cli_now_ms() - t0;
    }
    if (!st) st = dk_scene_save_ply(scene, out);
    if (!st) st = dk_scene_save_tracks_json(scene, tracks);
    int rc = CLI_OK;
    if (st) {
        rc = cli_fail(st);
    } else {
        int n_actors = dk_scene_actor_track_count(scene);
        printf("%s: %lld Gaussians (SH degree %d), %d tracks, %.0f ms -> %s, %s\n",
               scenario ? scenario : "generated drive", (long long)scene->n, scene->sh_degree,
               n_actors, ms, out, tracks);
        int cam = dk_rig_find(&sc->rig, "CAM_FRONT");
        if (cam >= 0) {
            dk_pose ego = dk_scenario_ego_pose(sc, 0);
            dk_pose p = dk_pose_compose(&ego, &sc->rig.sensors[cam].sensor_to_ego);
            /* the camera's optical axis (its z) in the world gives the yaw */
            double r[9];
            dk_quat_to_rotation(p.q, r);
            double yaw = atan2(r[5], r[2]) * 180.0 / 3.14159265358979323846;
            printf("CAM_FRONT at t = 0: --pose %.3f,%.3f,%.3f,%.2f\n", p.t[0], p.t[1], p.t[2], yaw);
        }
    }
    dk_scene_destroy(scene);
    dk_scenario_destroy(sc);
    free(tracks_buf);
    return rc;
}
