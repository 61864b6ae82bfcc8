/*
 * drivekit data: inspect a nuScenes dataset and measure the training
 * pipeline on it.
 */
#define _POSIX_C_SOURCE 200809L   /* clock_gettime */

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char *usage =
    "drivekit data info ROOT [--version NAME]\n"
    "       drivekit data bench ROOT [--preset NAME] [--source jpeg|video] [--batch B]\n"
    "                               [--threads T] [--batches N] [--seed S] [--version NAME]";

static void print_help(void)
{
    printf("usage: %s\n\n"
           "  info    scenes, samples, boxes and videos of a nuScenes v1.0 dataset (the tables\n"
           "          under ROOT/<version>/), and the pipeline input format\n"
           "  bench   runs the training pipeline over shuffled batches and prints samples/s,\n"
           "          the time of each step (summed over threads) and of the fused image\n"
           "          passes, and the loader's read / pipeline / collate / wait times\n\n"
           "options:\n"
           "  --version NAME   table folder (default: the only v1.0-* folder)\n"
           "  --preset NAME    streampetr (default), streampetr_test or decode\n"
           "  --source S       jpeg (default): key-frame JPEGs; video: frames of the per-camera\n"
           "                   videos ROOT/video/<scene>/<CHANNEL>.mp4\n"
           "  --batch B        samples per batch; default 1\n"
           "  --threads T      threads, caller included; default: online CPUs\n"
           "  --batches N      batches to time after one warm-up batch; default 20 (fewer when\n"
           "                   the dataset is smaller)\n"
           "  --seed S         augmentation and shuffling seed; default 0\n\n"
           "Exit status: 0 success; 1 the dataset could not be read or a sample failed (the\n"
           "message names the sample token and file); 2 bad usage.\n",
           usage);
}

enum { OPT_VERSION = 256, OPT_PRESET, OPT_SOURCE, OPT_BATCH, OPT_THREADS, OPT_BATCHES, OPT_SEED,
       OPT_HELP };

static const struct option long_opts[] = {
    {"version", required_argument, NULL, OPT_VERSION},
    {"preset", required_argument, NULL, OPT_PRESET},
    {"source", required_argument, NULL, OPT_SOURCE},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"batches", required_argument, NULL, OPT_BATCHES},
    {"seed", required_argument, NULL, OPT_SEED},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

typedef struct opts {
    const char *root, *version, *preset, *source;
    long batch, threads, batches, seed;
} opts;

static int parse(const char *cmd, int argc, char **argv, opts *o, int *help)
{
    o->root = NULL;
    o->version = NULL;
    o->preset = "streampetr";
    o->source = "jpeg";
    o->batch = 1;
    o->threads = cli_default_threads();
    o->batches = 20;
    o->seed = 0;
    *help = 0;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        switch (c) {
        case OPT_VERSION: o->version = optarg; break;
        case OPT_PRESET: o->preset = optarg; break;
        case OPT_SOURCE:
            if (strcmp(optarg, "jpeg") && strcmp(optarg, "video"))
                return cli_usage_error(cmd, usage, "--source: 'jpeg' or 'video', not '%s'", optarg);
            o->source = optarg;
            break;
        case OPT_BATCH:
            if (cli_parse_int(optarg, 1, 4096, &o->batch))
                return cli_usage_error(cmd, usage, "--batch: an integer in [1, 4096] expected");
            break;
        case OPT_THREADS:
            if (cli_parse_int(optarg, 1, 256, &o->threads))
                return cli_usage_error(cmd, usage, "--threads: an integer in [1, 256] expected");
            break;
        case OPT_BATCHES:
            if (cli_parse_int(optarg, 1, 1000000, &o->batches))
                return cli_usage_error(cmd, usage, "--batches: a positive integer expected");
            break;
        case OPT_SEED:
            if (cli_parse_int(optarg, 0, 2147483647L, &o->seed))
                return cli_usage_error(cmd, usage, "--seed: a non-negative integer expected");
            break;
        case OPT_HELP: *help = 1; return CLI_OK;
        default:
            return cli_usage_error(cmd, usage, "unknown or incomplete option '%s'",
                                   argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error(cmd, usage, "expected exactly one dataset ROOT");
    o->root = argv[optind];
    return CLI_OK;
}

static int open_db(const opts *o, dk_nusc **db)
{
    dk_nusc_config nc;
    dk_nusc_config_init(&nc);
    nc.version = o->version;
    return dk_nusc_open(o->root, &nc, db);
}

static int data_info(int argc, char **argv)
{
    opts o;
    int help;
    int rc = parse("data info", argc, argv, &o, &help);
    if (rc || help) {
        if (help) print_help();
        return rc;
    }
    dk_nusc *db;
    int st = open_db(&o, &db);
    if (st) return cli_fail(st);
    int64_t boxes = 0, labelled = 0, videos = 0;
    for (int64_t i = 0; i < dk_nusc_num_samples(db); i++) {
        dk_nusc_sample s;
        dk_nusc_get_sample(db, i, &s);
        const dk_nusc_box *b;
        int64_t n = dk_nusc_get_boxes(db, i, &b);
        boxes += n;
        for (int64_t k = 0; k < n; k++) labelled += b[k].label >= 0;
        for (int c = 0; c < DK_NUSC_NUM_CAMS; c++) videos += s.cams[c].video != NULL;
    }
    printf("%s (%s): %d scenes, %lld samples, %lld boxes (%lld in the 10 detection classes), "
           "%lld of %lld camera key frames with a video frame\n",
           o.root, dk_nusc_version(db), dk_nusc_num_scenes(db),
           (long long)dk_nusc_num_samples(db), (long long)boxes, (long long)labelled,
           (long long)videos, (long long)dk_nusc_num_samples(db) * DK_NUSC_NUM_CAMS);
    for (int i = 0; i < dk_nusc_num_scenes(db); i++) {
        dk_nusc_scene s;
        dk_nusc_get_scene(db, i, &s);
        printf("  %-12s %4lld samples (first %lld)\n", s.name, (long long)s.n_samples,
               (long long)s.first_sample);
    }
    dk_nusc_source *src;
    st = dk_nusc_source_create(db, 0, &src);
    if (!st) {
        char *text;
        if (!dk_group_describe(dk_nusc_source_format(src), &text)) {
            printf("pipeline input format:\n%s", text);
            dk_free(text);
        }
        dk_nusc_source_destroy(src);
    }
    dk_nusc_close(db);
    return st ? cli_fail(st) : CLI_OK;
}

static int read_sample(void *user, int64_t index, dk_sample *x, char *what, size_t cap)
{
    const dk_nusc_source *src = user;
    int st = dk_nusc_source_read(src, index, x);
    int tok = dk_group_find(dk_nusc_source_format(src), DK_GROUP_ROOT, "token");
    if (!st && tok >= 0) {
        size_t n = (size_t)x->values[tok].shape[0];
        if (n >= cap) n = cap - 1;
        memcpy(what, x->values[tok].data, n);
        what[n] = 0;
    }
    return st;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int data_bench(int argc, char **argv)
{
    opts o;
    int help;
    int rc = parse("data bench", argc, argv, &o, &help);
    if (rc || help) {
        if (help) print_help();
        return rc;
    }
    dk_nusc *db = NULL;
    dk_nusc_source *src = NULL;
    dk_pipeline *pipe = NULL;
    dk_sampler *smp = NULL;
    dk_pool *pool = NULL;
    dk_loader *ld = NULL;
    int st = open_db(&o, &db);
    if (!st) st = dk_nusc_source_create(db, 0, &src);
    dk_pipeline_config pc;
    dk_pipeline_config_init(&pc);
    pc.seed = (uint64_t)o.seed;
    if (!st) st = dk_pipeline_create(dk_nusc_source_format(src), &pc, &pipe);
    if (!st) st = dk_pipeline_add_preset(pipe, o.preset, o.source);
    dk_sampler_config sc;
    dk_sampler_config_init(&sc);
    if (!st) {
        sc.n = dk_nusc_num_samples(db);
        sc.batch_size = (int)o.batch;
        sc.seed = (uint64_t)o.seed;
        st = dk_sampler_create(&sc, &smp);
    }
    dk_pool_config plc;
    dk_pool_config_init(&plc);
    plc.n_threads = (int)o.threads;
    if (!st) st = dk_pool_create(&plc, &pool);
    dk_loader_config lc;
    dk_loader_config_init(&lc);
    lc.read = read_sample;
    lc.read_user = src;
    lc.pipeline = pipe;
    lc.sampler = smp;
    lc.pool = pool;
    if (!st) st = dk_loader_create(&lc, &ld);
    int64_t samples = 0, batches = 0;
    double t0 = 0, t1 = 0;
    dk_batch b;
    /* One warm-up batch (opens files and videos, faults in memory). */
    if (!st) {
        st = dk_loader_next(ld, &b);
        if (st == DK_EOF) st = dk_loader_next(ld, &b);
        if (!st) dk_batch_free(&b);
        dk_pipeline_reset_stats(pipe);
    }
    if (!st) {
        t0 = now_s();
        while (batches < o.batches) {
            st = dk_loader_next(ld, &b);
            if (st == DK_EOF) continue;
            if (st) break;
            samples += b.n_samples;
            batches++;
            dk_batch_free(&b);
        }
        t1 = now_s();
    }
    if (!st) {
        double sec = t1 - t0;
        printf("%s: preset %s, source %s, batch %ld, %ld thread(s): %lld samples in %.2f s = "
               "%.2f samples/s\n",
               o.root, o.preset, o.source, o.batch, o.threads, (long long)samples, sec,
               (double)samples / sec);
        printf("per sample, averaged over the samples each step ran on:\n");
        for (int i = 0; i < dk_pipeline_num_steps(pipe); i++) {
            double s;
            int64_t calls;
            dk_pipeline_step_stats(pipe, i, &s, &calls);
            printf("  %2d %-24s %9.3f ms\n", i, dk_pipeline_step_name(pipe, i),
                   calls ? 1e3 * s / (double)calls : 0.0);
        }
        double fs;
        int64_t fc;
        dk_pipeline_fused_stats(pipe, &fs, &fc);
        printf("     %-24s %9.3f ms  (decode + one pass per image)\n", "image_fused",
               fc ? 1e3 * fs / (double)fc : 0.0);
    }
    dk_loader_destroy(ld);
    dk_pool_destroy(pool);
    dk_sampler_destroy(smp);
    dk_pipeline_destroy(pipe);
    dk_nusc_source_destroy(src);
    dk_nusc_close(db);
    return st ? cli_fail(st) : CLI_OK;
}

int cmd_data(int argc, char **argv)
{
    static const cli_subcommand subs[] = {{"info", data_info}, {"bench", data_bench}};
    return cli_dispatch("data", usage, print_help, subs, sizeof subs / sizeof subs[0], argc, argv);
}
