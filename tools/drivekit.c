/*
 * The drivekit command: one subcommand per module.
 */
#define _POSIX_C_SOURCE 200809L   /* sysconf, clock_gettime */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

typedef struct subcommand {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} subcommand;

static const subcommand commands[] = {
    {"image", "inspect and convert JPEG/PNG images (DCT-domain scaled decode)", cmd_image},
    {"world", "generate driving scenarios, nuScenes-layout datasets and condition videos", cmd_world},
    {"video", "frame-exact on-demand video decoding: info, framemd5, extract", cmd_video},
    {"sim", "Gaussian-splat scenes: camera and lidar rendering, scenes from drives, render server", cmd_sim},
    {"data", "nuScenes training pipeline: dataset info, samples/s and per-step times", cmd_data},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void print_help(FILE *f)
{
    fprintf(f,
            "usage: drivekit [--version] [--help] <command> [<args>]\n"
            "\n"
            "drivekit: driving scenarios, synthetic multi-camera datasets, condition videos,\n"
            "frame-exact video decoding, multi-camera training pipelines and Gaussian-splat\n"
            "sensor simulation for autonomous-driving models.\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f,
            "\n"
            "Run 'drivekit <command> --help' for a command's options.\n"
            "Exit status: 0 success, 1 failure (the message says what and where), 2 bad usage.\n");
}

int cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "drivekit %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s\n", usage);
    return CLI_USAGE;
}

int cli_fail(int status)
{
    const char *msg = dk_errmsg();
    fprintf(stderr, "drivekit: %s\n", msg[0] ? msg : dk_status_str(status));
    return CLI_FAIL;
}

int cli_parse_int(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cli_dispatch(const char *cmd, const char *usage, void (*help)(void),
                 const cli_subcommand *subs, size_t n_subs, int argc, char **argv)
{
    if (argc < 2) return cli_usage_error(cmd, usage, "missing subcommand");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        help();
        return CLI_OK;
    }
    for (size_t i = 0; i < n_subs; i++)
        if (!strcmp(argv[1], subs[i].name)) return subs[i].run(argc - 1, argv + 1);
    return cli_usage_error(cmd, usage, "unknown subcommand '%s'", argv[1]);
}

int cli_parse_double(const char *s, double lo, double hi, double *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

double cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

int cli_parse_doubles(const char *s, int n, double *v)
{
    char buf[256];
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len >= sizeof buf || n < 1) return -1;
    memcpy(buf, s, len + 1);
    char *p = buf;
    for (int i = 0; i < n; i++) {
        char *comma = strchr(p, ',');
        if ((i < n - 1) != (comma != NULL)) return -1;
        if (comma) *comma = '\0';
        if (cli_parse_double(p, -DBL_MAX, DBL_MAX, &v[i])) return -1;
        p = comma ? comma + 1 : p;
    }
    return 0;
}

int cli_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

int cli_parse_fraction(const char *s, int *num, int *den)
{
    const char *slash = s ? strchr(s, '/') : NULL;
    long n, d;
    char buf[32];
    if (!slash || (size_t)(slash - s) >= sizeof buf) return -1;
    memcpy(buf, s, (size_t)(slash - s));
    buf[slash - s] = '\0';
    if (cli_parse_int(buf, 1, 1000, &n) || cli_parse_int(slash + 1, 1, 1000, &d)) return -1;
    *num = (int)n;
    *den = (int)d;
    return 0;
}

int cli_parse_size(const char *s, int *w, int *h)
{
    const char *x = s ? strchr(s, 'x') : NULL;
    long a, b;
    char buf[32];
    if (!x || (size_t)(x - s) >= sizeof buf) return -1;
    memcpy(buf, s, (size_t)(x - s));
    buf[x - s] = '\0';
    if (cli_parse_int(buf, 1, 1 << 16, &a) || cli_parse_int(x + 1, 1, 1 << 16, &b)) return -1;
    *w = (int)a;
    *h = (int)b;
    return 0;
}

int main(int argc, char **argv)
{
    /* FFmpeg's informational chatter (encoder banners, muxer notes) would bury
     * the progress output; the command reports failures itself. */
    dk_video_set_ffmpeg_log_level("error");
    if (argc < 2) {
        print_help(stderr);
        return CLI_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        print_help(stdout);
        return CLI_OK;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("drivekit %s\n", dk_version_str());
        return CLI_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    if (cmd[0] == '-')
        fprintf(stderr, "drivekit: unknown option '%s'\n", cmd);
    else
        fprintf(stderr, "drivekit: unknown command '%s'\n", cmd);
    fprintf(stderr, "usage: drivekit [--version] [--help] <command> [<args>]  (commands:");
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(stderr, " %s", commands[i].name);
    fprintf(stderr, ")\n");
    return CLI_USAGE;
}
