/*
 * drivekit world: generate driving scenarios, write them as nuScenes-layout
 * datasets, and render the layout condition videos driving world models take.
 */
#define _POSIX_C_SOURCE 200809L   /* clock_gettime, strtok_r, sysconf */

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char *usage =
    "drivekit world generate --out DIR [--seed N] [--seconds S] [--scenes K] [--edit E,...]\n"
    "                               [--width W --height H] [--threads T] [--no-video] [--save-scenario]\n"
    "       drivekit world conditions --scenario FILE --out DIR [--width W --height H] [--fps F]\n"
    "                               [--ftheta FOV] [--threads T]";

static void print_help(void)
{
    printf("usage: %s\n\n"
           "  generate     generate K procedural town drives (seeds N..N+K-1), apply corner-case\n"
           "               edits, render the nuScenes-like rig and write a nuScenes v1.0 layout\n"
           "  conditions   render the HD-map + 3-D box condition videos of a scenario JSON\n\n"
           "Run 'drivekit world generate --help' or 'drivekit world conditions --help' for options.\n",
           usage);
}

static void print_generate_help(void)
{
    printf("usage: drivekit world generate --out DIR [options]\n\n"
           "  --out DIR          output folder (created); required\n"
           "  --seed N           seed of the first scene; default 1\n"
           "  --seconds S        drive length per scene, seconds; default 20\n"
           "  --scenes K         number of scenes (seeds N..N+K-1); default 1\n"
           "  --edit E,...       corner cases applied in order to every scene: cut-in, hard-brake,\n"
           "                     jaywalk, stopped-vehicle, wrong-way; default none (an edit\n"
           "                     that does not fit a scene, e.g. too short, fails the command)\n"
           "  --width W          camera width, pixels; default 1600\n"
           "  --height H         camera height, pixels; default 900\n"
           "  --threads T        worker threads, caller included; default: online CPUs\n"
           "  --no-video         skip OUT/video/<scene>/<CHANNEL>.mp4; default: write them\n"
           "  --save-scenario    also write OUT/scenarios/<scene>.json; default: off\n"
           "  --jpeg-quality Q   JPEG quality 1..100; default 90\n"
           "  --crf N            H.264 CRF of the videos 0..51; default 23\n"
           "  --version NAME     table folder name; default v1.0-mini\n"
           "  --keyframe-hz F    samples (key frames) per second; default 2\n");
}

static void print_conditions_help(void)
{
    printf("usage: drivekit world conditions --scenario FILE --out DIR [options]\n\n"
           "  --scenario FILE    scenario JSON (e.g. from 'generate --save-scenario'); required\n"
           "  --out DIR          output folder for <CAMERA>.mp4 and conditions.json; required\n"
           "  --width W          video width, pixels; default 1280\n"
           "  --height H         video height, pixels; default 720\n"
           "  --fps F            frames per second; default 30\n"
           "  --ftheta FOV       render an f-theta camera of FOV degrees horizontal field of view\n"
           "                     at each rig camera's pose; default: the rig's pinhole cameras\n"
           "  --crf N            H.264 CRF 0..51; default 18\n"
           "  --threads T        worker threads, caller included; default: online CPUs\n");
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int make_dirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "drivekit: %s: cannot create directory: %s\n", buf, strerror(errno));
            return -1;
        }
        buf[i] = c;
    }
    return 0;
}

/* Number of rows of OUT/<version>/<table>.json, or -1. */
static long table_rows(const char *out, const char *version, const char *table)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s.json", out, version, table);
    dk_json *doc;
    if (dk_json_load(path, &doc)) return -1;
    dk_json_cur root = dk_json_root(doc);
    long n = dk_json_type_of(&root) == DK_JSON_ARRAY ? (long)dk_json_size(&root) : -1;
    dk_json_free(doc);
    return n;
}

enum {
    OPT_OUT = 256, OPT_SEED, OPT_SECONDS, OPT_SCENES, OPT_EDIT, OPT_WIDTH, OPT_HEIGHT,
    OPT_THREADS, OPT_NO_VIDEO, OPT_SAVE, OPT_QUALITY, OPT_CRF, OPT_VERSION, OPT_KEYFRAME,
    OPT_SCENARIO, OPT_FPS, OPT_FTHETA, OPT_HELP
};

static int world_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, OPT_OUT},
        {"seed", required_argument, NULL, OPT_SEED},
        {"seconds", required_argument, NULL, OPT_SECONDS},
        {"scenes", required_argument, NULL, OPT_SCENES},
        {"edit", required_argument, NULL, OPT_EDIT},
        {"width", required_argument, NULL, OPT_WIDTH},
        {"height", required_argument, NULL, OPT_HEIGHT},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"no-video", no_argument, NULL, OPT_NO_VIDEO},
        {"save-scenario", no_argument, NULL, OPT_SAVE},
        {"jpeg-quality", required_argument, NULL, OPT_QUALITY},
        {"crf", required_argument, NULL, OPT_CRF},
        {"version", required_argument, NULL, OPT_VERSION},
        {"keyframe-hz", required_argument, NULL, OPT_KEYFRAME},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "world generate";
    const char *out = NULL;
    long seed = 1, scenes = 1, width = 1600, height = 900, threads = cli_default_threads();
    long quality = 90, crf = 23;
    double seconds = 20.0, keyframe_hz = 2.0;
    int video = 1, save = 0;
    const char *version = "v1.0-mini";
    dk_edit_kind edits[32];
    int n_edits = 0;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_OUT: out = optarg; break;
        case OPT_SEED:
            if (cli_parse_int(optarg, 0, 2147483647L, &seed))
                return cli_usage_error(cmd, usage, "bad --seed '%s' (0..2147483647)", optarg);
            break;
        case OPT_SECONDS:
            if (cli_parse_double(optarg, 0.5, 3600, &seconds))
                return cli_usage_error(cmd, usage, "bad --seconds '%s' (0.5..3600)", optarg);
            break;
        case OPT_SCENES:
            if (cli_parse_int(optarg, 1, 1000, &scenes))
                return cli_usage_error(cmd, usage, "bad --scenes '%s' (1..1000)", optarg);
            break;
        case OPT_EDIT: {
            char buf[1024];
            snprintf(buf, sizeof buf, "%s", optarg);
            for (char *save_ptr = NULL, *tok = strtok_r(buf, ",", &save_ptr); tok;
                 tok = strtok_r(NULL, ",", &save_ptr)) {
                if (n_edits == 32) return cli_usage_error(cmd, usage, "too many --edit entries");
                if (dk_edit_kind_parse(tok, &edits[n_edits]))
                    return cli_usage_error(cmd, usage,
                                           "unknown edit '%s' (cut-in, hard-brake, jaywalk, "
                                           "stopped-vehicle, wrong-way)", tok);
                n_edits++;
            }
            break;
        }
        case OPT_WIDTH:
            if (cli_parse_int(optarg, 16, 8192, &width))
                return cli_usage_error(cmd, usage, "bad --width '%s' (16..8192)", optarg);
            break;
        case OPT_HEIGHT:
            if (cli_parse_int(optarg, 16, 8192, &height))
                return cli_usage_error(cmd, usage, "bad --height '%s' (16..8192)", optarg);
            break;
        case OPT_THREADS:
            if (cli_parse_int(optarg, 1, 1024, &threads))
                return cli_usage_error(cmd, usage, "bad --threads '%s' (1..1024)", optarg);
            break;
        case OPT_NO_VIDEO: video = 0; break;
        case OPT_SAVE: save = 1; break;
        case OPT_QUALITY:
            if (cli_parse_int(optarg, 1, 100, &quality))
                return cli_usage_error(cmd, usage, "bad --jpeg-quality '%s' (1..100)", optarg);
            break;
        case OPT_CRF:
            if (cli_parse_int(optarg, 0, 51, &crf))
                return cli_usage_error(cmd, usage, "bad --crf '%s' (0..51)", optarg);
            break;
        case OPT_VERSION: version = optarg; break;
        case OPT_KEYFRAME:
            if (cli_parse_double(optarg, 0.01, 100, &keyframe_hz))
                return cli_usage_error(cmd, usage, "bad --keyframe-hz '%s'", optarg);
            break;
        case OPT_HELP: print_generate_help(); return CLI_OK;
        default:
            return cli_usage_error(cmd, usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error(cmd, usage, "unexpected argument '%s'", argv[optind]);
    if (!out) return cli_usage_error(cmd, usage, "--out DIR is required");

    double t0 = now_seconds();
    int rc = CLI_OK, st = DK_OK;
    dk_pool *pool = NULL;
    dk_progress *prog = NULL;
    dk_scenario **sc = calloc((size_t)scenes, sizeof *sc);
    if (!sc) {
        fprintf(stderr, "drivekit: out of memory\n");
        return CLI_FAIL;
    }
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = (int)threads;
    if ((st = dk_pool_create(&pc, &pool)) != DK_OK) {
        rc = cli_fail(st);
        goto done;
    }
    for (long i = 0; i < scenes; i++) {
        dk_world_gen_config g;
        dk_world_gen_config_init(&g);
        g.seed = (uint64_t)(seed + i);
        g.duration = seconds;
        g.camera_width = (int)width;
        g.camera_height = (int)height;
        if ((st = dk_world_generate(&g, &sc[i])) != DK_OK) {
            rc = cli_fail(st);
            goto done;
        }
        /* Scene names must be unique within a dataset. */
        for (long k = 0; k < i; k++)
            if (!strcmp(sc[k]->name, sc[i]->name)) {
                snprintf(sc[i]->name, sizeof sc[i]->name, "scene-%04ld", seed + i);
                break;
            }
        for (int e = 0; e < n_edits; e++) {
            dk_edit_params p;
            dk_edit_params_init(&p);
            p.seed = (uint64_t)(seed + i);
            dk_edit_record rec;
            /* An edit that finds no place (DK_ENOENT) fails too: a dataset that
               silently lacks the asked-for corner case is worse than none. */
            st = dk_world_edit(sc[i], edits[e], &p, &rec);
            if (st) {
                fprintf(stderr, "drivekit: %s: %s\n", sc[i]->name, dk_errmsg());
                rc = CLI_FAIL;
                goto done;
            }
            printf("%s: %s: %s\n", sc[i]->name, dk_edit_kind_name(rec.kind), rec.description);
        }
    }

    dk_nuscenes_config nc;
    dk_nuscenes_config_init(&nc);
    nc.version = version;
    nc.write_video = video;
    nc.jpeg_quality = (int)quality;
    nc.video_crf = (int)crf;
    nc.keyframe_hz = keyframe_hz;
    if ((st = dk_progress_create(stderr, "rendering", &prog)) != DK_OK) {
        rc = cli_fail(st);
        goto done;
    }
    st = dk_world_write_nuscenes((const dk_scenario *const *)sc, (int)scenes, out, &nc, pool,
                                 dk_progress_report, prog);
    dk_progress_destroy(prog);
    prog = NULL;
    if (st) {
        rc = cli_fail(st);
        goto done;
    }
    if (save) {
        char path[4096];
        snprintf(path, sizeof path, "%s/scenarios", out);
        if (make_dirs(path)) {
            rc = CLI_FAIL;
            goto done;
        }
        for (long i = 0; i < scenes; i++) {
            snprintf(path, sizeof path, "%s/scenarios/%s.json", out, sc[i]->name);
            if ((st = dk_scenario_save(sc[i], path)) != DK_OK) {
                rc = cli_fail(st);
                goto done;
            }
        }
    }
    double wall = now_seconds() - t0;
    long n_samples = table_rows(out, version, "sample");
    long n_frames = table_rows(out, version, "sample_data");
    long n_ann = table_rows(out, version, "sample_annotation");
    printf("wrote %ld scene(s) to %s/%s: %ld samples, %ld frames, %ld annotations\n", scenes, out,
           version, n_samples, n_frames, n_ann);
    printf("%.1f s of drive in %.1f s wall time (%.3f s of drive per second, %ld thread(s)%s)\n",
           seconds * (double)scenes, wall, seconds * (double)scenes / wall, threads,
           video ? ", with video" : "");
    if (video) printf("videos: %s/video/<scene>/<CHANNEL>.mp4\n", out);
    if (save) printf("scenarios: %s/scenarios/<scene>.json\n", out);

done:
    dk_progress_destroy(prog);
    for (long i = 0; i < scenes; i++) dk_scenario_destroy(sc[i]);
    free(sc);
    dk_pool_destroy(pool);
    return rc;
}

static int world_conditions(int argc, char **argv)
{
    static const struct option opts[] = {
        {"scenario", required_argument, NULL, OPT_SCENARIO},
        {"out", required_argument, NULL, OPT_OUT},
        {"width", required_argument, NULL, OPT_WIDTH},
        {"height", required_argument, NULL, OPT_HEIGHT},
        {"fps", required_argument, NULL, OPT_FPS},
        {"ftheta", required_argument, NULL, OPT_FTHETA},
        {"crf", required_argument, NULL, OPT_CRF},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "world conditions";
    dk_conditions_config cc;
    dk_conditions_config_init(&cc);
    const char *scenario = NULL, *out = NULL;
    long width = cc.width, height = cc.height, crf = cc.crf, threads = cli_default_threads();
    double fps = cc.fps, fov = 0;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_SCENARIO: scenario = optarg; break;
        case OPT_OUT: out = optarg; break;
        case OPT_WIDTH:
            if (cli_parse_int(optarg, 16, 8192, &width))
                return cli_usage_error(cmd, usage, "bad --width '%s' (16..8192)", optarg);
            break;
        case OPT_HEIGHT:
            if (cli_parse_int(optarg, 16, 8192, &height))
                return cli_usage_error(cmd, usage, "bad --height '%s' (16..8192)", optarg);
            break;
        case OPT_FPS:
            if (cli_parse_double(optarg, 0.1, 240, &fps))
                return cli_usage_error(cmd, usage, "bad --fps '%s' (0.1..240)", optarg);
            break;
        case OPT_FTHETA:
            if (cli_parse_double(optarg, 1, 359, &fov))
                return cli_usage_error(cmd, usage, "bad --ftheta '%s' (degrees, 1..359)", optarg);
            break;
        case OPT_CRF:
            if (cli_parse_int(optarg, 0, 51, &crf))
                return cli_usage_error(cmd, usage, "bad --crf '%s' (0..51)", optarg);
            break;
        case OPT_THREADS:
            if (cli_parse_int(optarg, 1, 1024, &threads))
                return cli_usage_error(cmd, usage, "bad --threads '%s' (1..1024)", optarg);
            break;
        case OPT_HELP: print_conditions_help(); return CLI_OK;
        default:
            return cli_usage_error(cmd, usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error(cmd, usage, "unexpected argument '%s'", argv[optind]);
    if (!scenario) return cli_usage_error(cmd, usage, "--scenario FILE is required");
    if (!out) return cli_usage_error(cmd, usage, "--out DIR is required");
    cc.width = (int)width;
    cc.height = (int)height;
    cc.fps = fps;
    cc.crf = (int)crf;
    if (fov > 0) {
        cc.model = DK_CAM_FTHETA;
        cc.ftheta_fov_deg = fov;
    }

    double t0 = now_seconds();
    dk_scenario *s = NULL;
    dk_pool *pool = NULL;
    dk_progress *prog = NULL;
    int rc = CLI_OK;
    int st = dk_scenario_load(scenario, &s);
    if (st) return cli_fail(st);
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = (int)threads;
    if (make_dirs(out)) {
        rc = CLI_FAIL;
        goto done;
    }
    if ((st = dk_pool_create(&pc, &pool)) || (st = dk_progress_create(stderr, "conditions", &prog))) {
        rc = cli_fail(st);
        goto done;
    }
    st = dk_world_write_conditions(s, out, &cc, pool, dk_progress_report, prog);
    dk_progress_destroy(prog);
    prog = NULL;
    if (st) {
        rc = cli_fail(st);
        goto done;
    }
    int n_cams = 0;
    for (int i = 0; i < s->rig.n_sensors; i++) n_cams += s->rig.sensors[i].kind == DK_SENSOR_CAMERA;
    printf("wrote %d condition video(s) of %s (%.1f s, %dx%d, %g fps, %s) to %s in %.1f s\n",
           n_cams, s->name, s->duration, cc.width, cc.height, cc.fps,
           cc.model == DK_CAM_FTHETA ? "f-theta" : "pinhole", out, now_seconds() - t0);

done:
    dk_progress_destroy(prog);
    dk_pool_destroy(pool);
    dk_scenario_destroy(s);
    return rc;
}

int cmd_world(int argc, char **argv)
{
    static const cli_subcommand subs[] = {{"generate", world_generate},
                                          {"conditions", world_conditions}};
    return cli_dispatch("world", usage, print_help, subs, sizeof subs / sizeof subs[0], argc, argv);
}
