/*
 * Fuzz harness for the render server's request handling (tools/http.c).
 *
 * 1. http_parse_request on the input: the result is "complete" (within the
 *    input, body inside it and of Content-Length bytes, NUL-terminated
 *    method/target/path), "incomplete", or an HTTP error status (4xx/5xx)
 *    with a message. A complete request must parse the same from exactly its
 *    own bytes, and every shorter prefix must be incomplete. Pipelined
 *    requests after it are parsed in turn.
 * 2. The body of each complete request (or the whole input when it is no
 *    request) through the JSON decoders of POST /render and POST /actors:
 *    either -400 with a message, or finite timestamps, rigid poses (unit
 *    quaternions) and a non-empty sensor name.
 * drivekit's live-allocation counter must be back where it started.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../tools/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) __builtin_trap();                                               \
    } while (0)

static void check_pose(const dk_pose *p)
{
    double n = 0;
    for (int j = 0; j < 4; j++) {
        CHECK(isfinite(p->q[j]));
        n += p->q[j] * p->q[j];
    }
    for (int j = 0; j < 3; j++) CHECK(isfinite(p->t[j]));
    CHECK(fabs(sqrt(n) - 1) < 1e-6);
}

static void check_bodies(const char *body, size_t len)
{
    char err[HTTP_ERR_MAX];
    sim_render_request rr;
    int st = sim_parse_render_request(body, len, &rr, err);
    if (st) {
        CHECK(st == -400 && err[0] && memchr(err, '\0', HTTP_ERR_MAX));
    } else {
        size_t n = strnlen(rr.sensor, sizeof rr.sensor);
        CHECK(n > 0 && n < sizeof rr.sensor);
        CHECK(isfinite(rr.timestamp));
        check_pose(&rr.ego_to_world);
        if (rr.has_end) check_pose(&rr.ego_to_world_end);
        CHECK(rr.format <= SIM_FORMAT_RAW && rr.lidar_output <= SIM_LIDAR_POINTS);
    }
    sim_actor_request ar;
    st = sim_parse_actor_request(body, len, &ar, err);
    if (st) {
        CHECK(st == -400 && err[0] && memchr(err, '\0', HTTP_ERR_MAX));
    } else {
        CHECK(ar.id >= -1);
        if (!ar.clear) {
            CHECK(ar.id >= 0 && isfinite(ar.timestamp));
            check_pose(&ar.actor_to_world);
        }
    }
}

/* Parses one request at buf[0..len); returns its size (> 0) or 0. */
static size_t one_request(const char *buf, size_t len)
{
    http_request req;
    char err[HTTP_ERR_MAX];
    long r = http_parse_request(buf, len, &req, err);
    if (r < 0) {
        CHECK(r >= -599 && r <= -400);
        CHECK(err[0] && memchr(err, '\0', HTTP_ERR_MAX));
        return 0;
    }
    if (r == 0) return 0;
    CHECK((size_t)r <= len);
    CHECK(req.head_len > 0 && req.head_len <= HTTP_MAX_HEAD);
    CHECK(req.head_len + req.content_length == (size_t)r);
    CHECK(req.content_length <= HTTP_MAX_BODY);
    CHECK(req.body == buf + req.head_len);
    CHECK(strlen(req.method) > 0 && strlen(req.method) < sizeof req.method);
    CHECK(req.target[0] == '/' && strlen(req.target) <= HTTP_MAX_TARGET);
    CHECK(strncmp(req.path, req.target, strlen(req.path)) == 0);
    CHECK(req.version_minor == 0 || req.version_minor == 1);
    CHECK(req.n_headers >= 0 && req.n_headers <= HTTP_MAX_HEADERS);
    CHECK(req.keep_alive == 0 || req.keep_alive == 1);

    /* The same from exactly its bytes; prefixes are incomplete. */
    http_request again;
    CHECK(http_parse_request(buf, (size_t)r, &again, err) == r);
    CHECK(again.content_length == req.content_length && again.head_len == req.head_len);
    size_t cuts[3] = {(size_t)r - 1, (size_t)r / 2, req.head_len - 1};
    for (int i = 0; i < 3; i++) {
        if (cuts[i] >= (size_t)r) continue;
        CHECK(http_parse_request(buf, cuts[i], &again, err) == 0);
    }
    check_bodies(req.body, req.content_length);
    return (size_t)r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t live0 = dk_alloc_live();
    const char *buf = (const char *)data;
    size_t at = 0, first = one_request(buf, size);
    if (first == 0) {
        check_bodies(buf, size);
    } else {
        /* Pipelined requests: at most a few, each strictly consuming bytes. */
        at = first;
        for (int k = 0; k < 8 && at < size; k++) {
            size_t n = one_request(buf + at, size - at);
            if (n == 0) break;
            at += n;
        }
    }
    CHECK(http_reason(400)[0] && http_reason(999)[0]);
    CHECK(dk_alloc_live() == live0);
    return 0;
}
