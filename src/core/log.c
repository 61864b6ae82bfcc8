/*
 * Logging and progress reporting.
 *
 * The library itself never writes to a terminal: messages go to one callback
 * (stderr by default, at WARN and above). The progress reporter is a ready-made
 * dk_progress_fn for command-line front ends: a redrawn bar on a terminal, and
 * sparse plain lines in logs and CI output, where carriage returns are noise.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static void default_log(void *user, dk_log_level level, const char *msg)
{
    (void)user;
    static const char *names[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "drivekit: %s: %s\n", names[level < 4 ? level : 3], msg);
}

static dk_log_fn g_log_fn = default_log;
static void *g_log_user;
static dk_log_level g_log_level = DK_LOG_WARN;
static pthread_once_t g_log_once = PTHREAD_ONCE_INIT;
static int g_log_explicit;

static void log_env_init(void)
{
    if (g_log_explicit) return;
    const char *e = getenv("DK_LOG_LEVEL");
    if (!e) return;
    static const char *names[] = {"debug", "info", "warn", "error", "none"};
    for (int i = 0; i < 5; i++)
        if (!strcasecmp(e, names[i])) g_log_level = (dk_log_level)i;
}

void dk_log_set(dk_log_fn fn, void *user, dk_log_level level)
{
    pthread_once(&g_log_once, log_env_init);
    g_log_explicit = 1;
    g_log_fn = fn ? fn : default_log;
    g_log_user = fn ? user : NULL;
    g_log_level = level;
}

void dk_log(dk_log_level level, const char *fmt, ...)
{
    pthread_once(&g_log_once, log_env_init);
    if (level < g_log_level || level >= DK_LOG_NONE) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    g_log_fn(g_log_user, level, msg);
}

/* ------------------------------------------------------------------------ */
/* Progress                                                                  */

struct dk_progress {
    FILE *stream;
    char label[64];
    int tty;                 /* 1 bar, 0 plain lines */
    double start, last_draw;
    int last_decile;         /* plain mode: last 10% step printed */
    int drawn;               /* tty mode: a bar is on screen */
    int finished;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int dk_progress_create(FILE *stream, const char *label, dk_progress **out)
{
    if (!out || !stream) return dk__error(DK_EINVAL, __func__, "NULL argument");
    *out = NULL;
    dk_progress *p = dk_calloc(1, sizeof *p);
    if (!p) return dk__error(DK_ENOMEM, __func__, "cannot allocate the reporter");
    p->stream = stream;
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    p->tty = isatty(fileno(stream));
    p->start = now_seconds();
    p->last_draw = -1.0;
    p->last_decile = -1;
    *out = p;
    return DK_OK;
}

void dk_progress_set_mode(dk_progress *p, int tty)
{
    if (p) p->tty = tty < 0 ? isatty(fileno(p->stream)) : tty != 0;
}

static void format_duration(char *buf, size_t n, double s)
{
    if (s < 0 || s > 1e7) {
        snprintf(buf, n, "?");
    } else if (s < 60) {
        snprintf(buf, n, "%.0fs", s);
    } else if (s < 3600) {
        snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    } else {
        snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
    }
}

void dk_progress_report(void *progress, int64_t done, int64_t total, const char *what)
{
    dk_progress *p = progress;
    if (!p || p->finished) return;
    if (done < 0) done = 0;
    if (total > 0 && done > total) done = total;
    double t = now_seconds(), elapsed = t - p->start;
    int complete = total > 0 && done == total;
    double frac = total > 0 ? (double)done / (double)total : 0.0;
    double rate = elapsed > 0 ? (double)done / elapsed : 0.0;
    char eta[16];
    format_duration(eta, sizeof eta, rate > 0 && total > 0 ? (double)(total - done) / rate : -1);
    const char *unit = what ? what : "";

    if (p->tty) {
        if (!complete && p->last_draw >= 0 && t - p->last_draw < 0.1) return;
        p->last_draw = t;
        char bar[31];
        int fill = (int)(frac * 30.0);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(p->stream, "\r%s [%s] %3d%% %lld/%lld %s  %.1f/s  ETA %s\033[K", p->label, bar,
                (int)(frac * 100.0), (long long)done, (long long)total, unit, rate, eta);
        p->drawn = 1;
        if (complete) {
            fputc('\n', p->stream);
            p->drawn = 0;
            p->finished = 1;
        }
    } else {
        int decile = total > 0 ? (int)(frac * 10.0) : -1;
        if (!complete && decile <= p->last_decile) return;
        p->last_decile = decile;
        char took[16];
        format_duration(took, sizeof took, elapsed);
        fprintf(p->stream, "%s: %3d%% (%lld/%lld %s, %s elapsed, %.1f/s)\n", p->label,
                (int)(frac * 100.0), (long long)done, (long long)total, unit, took, rate);
        if (complete) p->finished = 1;
    }
    fflush(p->stream);
}

void dk_progress_destroy(dk_progress *p)
{
    if (!p) return;
    if (p->tty && p->drawn) {
        fputc('\n', p->stream);
        fflush(p->stream);
    }
    dk_free(p);
}
