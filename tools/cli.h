/*
 * Shared plumbing for the drivekit command: every subcommand is a function
 * `int cmd_x(int argc, char **argv)` taking argv[0] = its own name, returning
 * the process exit status: 0 success, 1 the work failed, 2 bad usage.
 */
#ifndef DK_TOOLS_CLI_H
#define DK_TOOLS_CLI_H

#include <stdio.h>

#include "drivekit/drivekit.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* Prints "drivekit CMD: message" and the usage line to stderr; returns 2. */
int cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...) DK_PRINTF(3, 4);
/* Prints "drivekit: <dk_errmsg()>" for a failed library call; returns 1. */
int cli_fail(int status);
/* Parses "N/D" into a fraction; 0 on success. */
int cli_parse_fraction(const char *s, int *num, int *den);
/* Parses "WxH"; 0 on success. */
int cli_parse_size(const char *s, int *w, int *h);
/* Parses a base-10 integer in [lo, hi]; 0 on success. */
int cli_parse_int(const char *s, long lo, long hi, long *out);
/* Parses a finite number in [lo, hi], the whole string; 0 on success. */
int cli_parse_double(const char *s, double lo, double hi, double *out);
/* Parses exactly n comma-separated finite numbers ("x,y,z,yaw"); 0 on success. */
int cli_parse_doubles(const char *s, int n, double *v);
/* Default --threads: the online CPUs, clamped to [1, 256]. */
int cli_default_threads(void);
/* Monotonic clock in milliseconds, for the timings the commands print. */
double cli_now_ms(void);

/* A subcommand: run(argc, argv) with argv[0] = its own name. */
typedef struct cli_subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
} cli_subcommand;

/* Dispatches argv[1] of command `cmd` (argv[0]) to its entry in subs, or prints
 * help() for --help, -h and help; anything else is a usage error (2). */
int cli_dispatch(const char *cmd, const char *usage, void (*help)(void),
                 const cli_subcommand *subs, size_t n_subs, int argc, char **argv);

int cmd_image(int argc, char **argv);
int cmd_world(int argc, char **argv);
int cmd_video(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_data(int argc, char **argv);

/* drivekit sim subcommands in their own files (argv[0] = the subcommand). */
int sim_lidar(int argc, char **argv);
int sim_from_world(int argc, char **argv);
int sim_serve(int argc, char **argv);

#endif
