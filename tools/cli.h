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

int cmd_image(int argc, char **argv);
int cmd_world(int argc, char **argv);
int cmd_video(int argc, char **argv);
int cmd_sim(int argc, char **argv);

#endif
