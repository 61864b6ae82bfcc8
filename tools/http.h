/*
 * The small HTTP/1.x request parser of `drivekit sim serve`, and the decoding
 * of its JSON request bodies. No sockets here: both work on bytes in memory,
 * so they are unit-tested (tests/test_sim_loop.c) and fuzzed
 * (fuzz/fuzz_http.c) on their own.
 *
 * Accepted: "METHOD SP /target SP HTTP/1.0|1.1" then header lines, each
 * ending in CRLF (a bare LF is tolerated), then an empty line, then exactly
 * Content-Length bytes of body (none without that header). Refused, with the HTTP status to answer:
 *   400  malformed request line or header, control bytes, obs-folded lines,
 *        a target not starting with '/', conflicting Content-Length values
 *   413  Content-Length above HTTP_MAX_BODY
 *   414  request line above HTTP_MAX_REQUEST_LINE or target above
 *        HTTP_MAX_TARGET
 *   431  more than HTTP_MAX_HEADERS headers, or the head (request line and
 *        headers) above HTTP_MAX_HEAD bytes
 *   501  Transfer-Encoding (chunked bodies are not supported)
 *   505  an HTTP version other than 1.0 and 1.1
 */
#ifndef DK_TOOLS_HTTP_H
#define DK_TOOLS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "drivekit/drivekit.h"

#define HTTP_MAX_REQUEST_LINE 4096
#define HTTP_MAX_TARGET 1024
#define HTTP_MAX_HEADERS 64
#define HTTP_MAX_HEAD 16384
#define HTTP_MAX_BODY (1 << 20)
#define HTTP_ERR_MAX 256

typedef struct http_request {
    char method[16];                 /* "GET", "POST", ... */
    char target[HTTP_MAX_TARGET + 1];
    char path[HTTP_MAX_TARGET + 1];  /* target without "?query" */
    int version_minor;               /* HTTP/1.x */
    int n_headers;
    size_t head_len;                 /* bytes up to and including the empty line */
    int has_content_length;
    size_t content_length;
    const char *body;                /* content_length bytes inside the parsed buffer */
    int keep_alive;                  /* 1.1 without "Connection: close", or 1.0 with keep-alive */
    char content_type[128];          /* "" when absent; longer values cut */
} http_request;

/* Parses the request at the start of buf[0..len). Returns:
 *   > 0  a complete request of that many bytes (head + body; bytes after it
 *        belong to the next, pipelined request)
 *   0    incomplete: read more and call again with the longer buffer
 *   < 0  -(HTTP status) of a bad request, with a message in err
 * The limits are checked as soon as the bytes at hand exceed them, so a
 * caller never needs more than HTTP_MAX_HEAD + HTTP_MAX_BODY bytes. */
long http_parse_request(const char *buf, size_t len, http_request *req, char err[HTTP_ERR_MAX]);

/* Reason phrase of a status code ("Bad Request"); "Unknown" if not known. */
const char *http_reason(int status);

/* ------------------------------------------------------------------------ */
/* JSON bodies of the render server                                          */

typedef enum sim_format { SIM_FORMAT_DEFAULT = 0, SIM_FORMAT_PNG, SIM_FORMAT_RAW } sim_format;
typedef enum sim_lidar_output { SIM_LIDAR_RANGE_IMAGE = 0, SIM_LIDAR_POINTS } sim_lidar_output;

/* POST /render: {"sensor": name, "ego_to_world": 4x4, "timestamp": t,
 * optional "ego_to_world_end": 4x4, "format": "png"|"raw",
 * "lidar_output": "range_image"|"points"}. A 4x4 is an array of four rows of
 * four numbers or a flat array of 16 (row-major), a rigid transform. */
typedef struct sim_render_request {
    char sensor[DK_SENSOR_NAME_MAX];
    dk_pose ego_to_world;
    int has_end;
    dk_pose ego_to_world_end;
    double timestamp;
    sim_format format;
    sim_lidar_output lidar_output;
} sim_render_request;

/* POST /actors: {"id": n, "timestamp": t, "actor_to_world": 4x4} sets an
 * override; {"id": n, "clear": true} removes actor n's overrides and
 * {"id": -1, "clear": true} everyone's. */
typedef struct sim_actor_request {
    int32_t id;
    int clear;
    double timestamp;
    dk_pose actor_to_world;
} sim_actor_request;

/* Both return 0, or -400 with a message naming the field in err (unknown
 * fields are refused too, to catch typos). */
int sim_parse_render_request(const char *body, size_t len, sim_render_request *out,
                             char err[HTTP_ERR_MAX]);
int sim_parse_actor_request(const char *body, size_t len, sim_actor_request *out,
                            char err[HTTP_ERR_MAX]);

#endif
