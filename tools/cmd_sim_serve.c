/*
 * drivekit sim serve: a closed-loop render server over HTTP/JSON.
 *
 * One dk_sim (scene + rig) behind a single-threaded accept loop on
 * 127.0.0.1 only: one request per connection, answered with
 * "Connection: close", renders on the dk_sim's pool. Every read and write has
 * a deadline, so a slow or silent client costs at most --client-timeout
 * seconds before it gets 408 and is dropped. Parsing lives in http.c.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "http.h"

static const char *usage =
    "drivekit sim serve --ply FILE [--tracks FILE] [--rig nuscenes] [--width W --height H]\n"
    "                   [--port P] [--threads T] [--global-shutter] [--client-timeout S]";

static void print_help(void)
{
    printf("usage: %s\n\n"
           "Serves closed-loop renders of a 3DGS scene over HTTP/JSON on 127.0.0.1 (never another\n"
           "interface). One request at a time; each connection carries one request and is\n"
           "closed after the answer. Prints 'listening on http://127.0.0.1:PORT' once ready.\n\n"
           "options:\n"
           "  --ply FILE          the scene (3DGS PLY)\n"
           "  --tracks FILE       actor tracks JSON for the scene's actors (as written by\n"
           "                      'drivekit sim from-world'); default: every actor static\n"
           "  --rig NAME          sensor rig: nuscenes (6 cameras + LIDAR_TOP); default nuscenes\n"
           "  --width W           camera width in pixels; default 480\n"
           "  --height H          camera height in pixels; default 270\n"
           "  --port P            TCP port; 0 picks a free one (printed). Default 8765\n"
           "  --threads T         render threads, caller included; default: online CPUs\n"
           "  --global-shutter    render cameras with a global shutter (default: the rig's\n"
           "                      rolling shutter)\n"
           "  --client-timeout S  seconds a client may take to send a request or read the\n"
           "                      answer; default 10\n\n"
           "endpoints (JSON in and out; errors are 4xx/5xx with {\"error\": \"...\"}):\n"
           "  GET  /health     {\"status\": \"ok\", \"gaussians\": N, \"sensors\": K}\n"
           "  GET  /sensors    the rig: per sensor name, kind, sensor_to_ego (4x4, row-major),\n"
           "                   cameras: width, height, model, fx, fy, cx, cy, shutter,\n"
           "                   readout_time; lidars: beams, columns, spin_hz, min/max_range\n"
           "  POST /render     {\"sensor\": NAME, \"ego_to_world\": 4x4, \"timestamp\": t,\n"
           "                    [\"ego_to_world_end\": 4x4], [\"format\": \"png\"|\"raw\"],\n"
           "                    [\"lidar_output\": \"range_image\"|\"points\"]}\n"
           "                   ego_to_world: ego (FLU, rear axle) -> world at the start of the\n"
           "                   exposure; _end: at its end (camera readout, lidar sweep).\n"
           "                   Cameras: image/png (8-bit RGB, default) or raw float32 (H, W, 5)\n"
           "                   = r, g, b, alpha, depth. Lidars: raw only, the range image\n"
           "                   (beams, columns, 4) = range (0: no return), intensity, raydrop,\n"
           "                   alpha, or with \"lidar_output\": \"points\" (N, 6) = x, y, z (lidar\n"
           "                   frame at the sweep start), intensity, ring, time; lidars default\n"
           "                   to raw. Raw answers are little-endian float32,\n"
           "                   application/octet-stream, with headers X-Shape (e.g. 270,480,5),\n"
           "                   X-Dtype: float32 and X-Channels. Every answer carries\n"
           "                   X-Render-Ms.\n"
           "  POST /actors     {\"id\": N, \"timestamp\": t, \"actor_to_world\": 4x4}: actor N\n"
           "                   stands there from t on; {\"id\": N, \"clear\": true} restores its\n"
           "                   recorded track (id -1: every actor)\n"
           "  POST /shutdown   answers, then the server exits with status 0\n\n"
           "Exit status: 0 after /shutdown or SIGINT/SIGTERM; 1 the scene, tracks or socket\n"
           "failed; 2 bad usage.\n",
           usage);
}

enum { OPT_PLY = 256, OPT_TRACKS, OPT_RIG, OPT_WIDTH, OPT_HEIGHT, OPT_PORT, OPT_THREADS,
       OPT_GLOBAL, OPT_TIMEOUT, OPT_HELP };

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------ */
/* Responses                                                                 */

typedef struct server {
    dk_sim *sim;
    const dk_scene *scene;
    double client_timeout;
    int stop;
} server;

typedef struct conn {
    int fd;
    double deadline;   /* of the request being read, then of the answer being written */
    double timeout;
} conn;

/* Writes everything before the deadline; 0 on success. */
static int send_all(conn *c, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        double left = c->deadline - now_s();
        if (left <= 0) return -1;
        struct pollfd pf = {c->fd, POLLOUT, 0};
        int r = poll(&pf, 1, (int)ceil(left * 1000));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void respond(conn *c, int status, const char *type, const char *extra, const void *body,
                    size_t n)
{
    char head[1024];
    int k = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\nCache-Control: no-store\r\n%s\r\n",
                     status, http_reason(status), type, n, extra ? extra : "");
    if (k < 0 || (size_t)k >= sizeof head) return;
    c->deadline = now_s() + c->timeout;   /* the client gets its own time to read */
    if (send_all(c, head, (size_t)k) == 0 && n) send_all(c, body, n);
}

/* Answers with a JSON document built by the writer (status 200) or, when it
 * failed, 500. Destroys the writer. */
static void respond_jsonw(conn *c, int status, dk_jsonw *w, const char *extra)
{
    const char *text = NULL;
    size_t len = 0;
    if (w && dk_jsonw_finish(w, &text, &len) == DK_OK) {
        respond(c, status, "application/json", extra, text, len);
    } else {
        static const char msg[] = "{\"error\": \"could not build the answer\"}";
        respond(c, 500, "application/json", NULL, msg, sizeof msg - 1);
    }
    dk_jsonw_destroy(w);
}

static void respond_error(conn *c, int status, const char *fmt, ...) DK_PRINTF(3, 4);
static void respond_error(conn *c, int status, const char *fmt, ...)
{
    char msg[HTTP_ERR_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dk_jsonw *w = NULL;
    if (dk_jsonw_create(0, &w) == DK_OK) {
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, "error");
        dk_jsonw_string(w, msg);
        dk_jsonw_object_end(w);
    }
    respond_jsonw(c, status, w, status == 405 ? "Allow: GET, POST\r\n" : NULL);
}

/* HTTP status of a drivekit failure. */
static int status_of(int st)
{
    switch (st) {
    case DK_EINVAL:
    case DK_EINVALIDDATA:
    case DK_ERANGE: return 400;
    case DK_ENOENT: return 404;
    case DK_EUNSUPPORTED: return 501;
    default: return 500;
    }
}

static void write_pose(dk_jsonw *w, const dk_pose *p)
{
    double m[16];
    dk_pose_to_matrix(p, m);
    dk_jsonw_array_begin(w);
    for (int r = 0; r < 4; r++) {
        dk_jsonw_array_begin(w);
        for (int k = 0; k < 4; k++) dk_jsonw_number(w, m[4 * r + k]);
        dk_jsonw_array_end(w);
    }
    dk_jsonw_array_end(w);
}

static const char *shutter_name(dk_shutter s)
{
    switch (s) {
    case DK_SHUTTER_TOP_TO_BOTTOM: return "top_to_bottom";
    case DK_SHUTTER_BOTTOM_TO_TOP: return "bottom_to_top";
    case DK_SHUTTER_LEFT_TO_RIGHT: return "left_to_right";
    case DK_SHUTTER_RIGHT_TO_LEFT: return "right_to_left";
    default: return "global";
    }
}

static void handle_sensors(server *sv, conn *c)
{
    const dk_rig *rig = dk_sim_rig(sv->sim);
    dk_jsonw *w = NULL;
    if (dk_jsonw_create(0, &w) != DK_OK) {
        respond_jsonw(c, 500, NULL, NULL);
        return;
    }
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "sensors");
    dk_jsonw_array_begin(w);
    for (int i = 0; i < rig->n_sensors; i++) {
        const dk_rig_sensor *s = &rig->sensors[i];
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, "name");
        dk_jsonw_string(w, s->name);
        dk_jsonw_key(w, "kind");
        dk_jsonw_string(w, s->kind == DK_SENSOR_CAMERA ? "camera" : "lidar");
        dk_jsonw_key(w, "sensor_to_ego");
        write_pose(w, &s->sensor_to_ego);
        dk_jsonw_key(w, "rate_hz");
        dk_jsonw_number(w, s->rate_hz);
        dk_jsonw_key(w, "time_offset");
        dk_jsonw_number(w, s->time_offset);
        if (s->kind == DK_SENSOR_CAMERA) {
            const dk_camera *cam = &s->camera;
            dk_jsonw_key(w, "width");
            dk_jsonw_int(w, cam->width);
            dk_jsonw_key(w, "height");
            dk_jsonw_int(w, cam->height);
            dk_jsonw_key(w, "model");
            dk_jsonw_string(w, dk_camera_model_name(cam->model));
            dk_jsonw_key(w, "fx");
            dk_jsonw_number(w, cam->fx);
            dk_jsonw_key(w, "fy");
            dk_jsonw_number(w, cam->fy);
            dk_jsonw_key(w, "cx");
            dk_jsonw_number(w, cam->cx);
            dk_jsonw_key(w, "cy");
            dk_jsonw_number(w, cam->cy);
            dk_jsonw_key(w, "shutter");
            dk_jsonw_string(w, shutter_name(cam->shutter));
            dk_jsonw_key(w, "readout_time");
            dk_jsonw_number(w, s->readout_time);
        } else {
            const dk_lidar_model *l = &s->lidar;
            dk_jsonw_key(w, "beams");
            dk_jsonw_int(w, l->n_beams);
            dk_jsonw_key(w, "columns");
            dk_jsonw_int(w, l->n_columns);
            dk_jsonw_key(w, "spin_hz");
            dk_jsonw_number(w, l->spin_hz);
            dk_jsonw_key(w, "direction");
            dk_jsonw_int(w, l->direction);
            dk_jsonw_key(w, "min_range");
            dk_jsonw_number(w, l->min_range);
            dk_jsonw_key(w, "max_range");
            dk_jsonw_number(w, l->max_range);
        }
        dk_jsonw_object_end(w);
    }
    dk_jsonw_array_end(w);
    dk_jsonw_object_end(w);
    respond_jsonw(c, 200, w, NULL);
}

/* A lidar sweep as raw float32: the range image (beams, columns, 4) =
 * range, intensity, raydrop, alpha, or the points (N, 6). */
static void render_lidar(server *sv, conn *c, const sim_render_request *rr, int idx,
                         const dk_rig_sensor *s)
{
    if (rr->format == SIM_FORMAT_PNG) {
        respond_error(c, 400, "sensor %s is a lidar: its renders are raw float32 only "
                      "(\"format\": \"raw\")", s->name);
        return;
    }
    const int nb = s->lidar.n_beams, nc = s->lidar.n_columns;
    const size_t nr = (size_t)nb * (size_t)nc;
    const dk_pose *end = rr->has_end ? &rr->ego_to_world_end : NULL;
    float *buf = malloc(nr * 10 * sizeof *buf);   /* 4 images + up to nr points of 6 */
    if (!buf) {
        respond_error(c, 503, "out of memory for a %dx%d sweep", nb, nc);
        return;
    }
    float *range = buf, *inten = buf + nr, *drop = buf + 2 * nr, *alpha = buf + 3 * nr;
    float *pts = buf + 4 * nr;
    double t0 = now_s();
    int st = dk_sim_render_lidar(sv->sim, idx, &rr->ego_to_world, rr->timestamp, end, range,
                                 inten, drop, alpha);
    int64_t n_points = 0;
    if (st == DK_OK && rr->lidar_output == SIM_LIDAR_POINTS)
        st = dk_sim_lidar_points(sv->sim, idx, &rr->ego_to_world, rr->timestamp, end, range,
                                 inten, drop, pts, (int64_t)nr, &n_points);
    double ms = (now_s() - t0) * 1e3;
    if (st) {
        respond_error(c, status_of(st), "%s", dk_sim_errmsg(sv->sim));
        free(buf);
        return;
    }
    char extra[256];
    if (rr->lidar_output == SIM_LIDAR_POINTS) {
        snprintf(extra, sizeof extra,
                 "X-Shape: %lld,6\r\nX-Dtype: float32\r\n"
                 "X-Channels: x,y,z,intensity,ring,time\r\nX-Sensor: %s\r\n"
                 "X-Render-Ms: %.3f\r\n",
                 (long long)n_points, s->name, ms);
        respond(c, 200, "application/octet-stream", extra, pts,
                (size_t)n_points * 6 * sizeof *pts);
        free(buf);
        return;
    }
    /* Interleave the four images in the points area (large enough). */
    for (size_t i = 0; i < nr; i++) {
        pts[4 * i + 0] = range[i];
        pts[4 * i + 1] = inten[i];
        pts[4 * i + 2] = drop[i];
        pts[4 * i + 3] = alpha[i];
    }
    snprintf(extra, sizeof extra,
             "X-Shape: %d,%d,4\r\nX-Dtype: float32\r\nX-Channels: range,intensity,raydrop,alpha\r\n"
             "X-Sensor: %s\r\nX-Render-Ms: %.3f\r\n",
             nb, nc, s->name, ms);
    respond(c, 200, "application/octet-stream", extra, pts, nr * 4 * sizeof *pts);
    free(buf);
}

static void handle_render(server *sv, conn *c, const http_request *req)
{
    char err[HTTP_ERR_MAX];
    sim_render_request rr;
    if (sim_parse_render_request(req->body, req->content_length, &rr, err)) {
        respond_error(c, 400, "%s", err);
        return;
    }
    int idx = dk_sim_find_sensor(sv->sim, rr.sensor);
    if (idx < 0) {
        respond_error(c, 404, "%s", dk_sim_errmsg(sv->sim));
        return;
    }
    const dk_rig_sensor *s = &dk_sim_rig(sv->sim)->sensors[idx];
    const dk_pose *end = rr.has_end ? &rr.ego_to_world_end : NULL;
    if (s->kind == DK_SENSOR_LIDAR) {
        render_lidar(sv, c, &rr, idx, s);
        return;
    }
    if (rr.lidar_output != SIM_LIDAR_RANGE_IMAGE) {
        respond_error(c, 400, "lidar_output applies to lidars; %s is a camera", s->name);
        return;
    }
    const int w = s->camera.width, h = s->camera.height;
    const size_t npx = (size_t)w * (size_t)h;
    float *buf = malloc(npx * 5 * sizeof *buf);
    if (!buf) {
        respond_error(c, 503, "out of memory for a %dx%d render", w, h);
        return;
    }
    float *rgb = buf, *alpha = buf + 3 * npx, *depth = buf + 4 * npx;
    int raw = rr.format == SIM_FORMAT_RAW;
    double t0 = now_s();
    int st = dk_sim_render_camera(sv->sim, idx, &rr.ego_to_world, rr.timestamp, end, rgb,
                                  raw ? alpha : NULL, raw ? depth : NULL);
    double ms = (now_s() - t0) * 1e3;
    if (st) {
        respond_error(c, status_of(st), "%s", dk_sim_errmsg(sv->sim));
        free(buf);
        return;
    }
    char extra[256];
    if (raw) {
        /* Interleave to (H, W, 5) in a second buffer; little-endian on every
           platform drivekit builds for (x86-64, aarch64). */
        float *out = malloc(npx * 5 * sizeof *out);
        if (!out) {
            respond_error(c, 503, "out of memory for a %dx%d answer", w, h);
            free(buf);
            return;
        }
        for (size_t i = 0; i < npx; i++) {
            out[5 * i + 0] = rgb[3 * i + 0];
            out[5 * i + 1] = rgb[3 * i + 1];
            out[5 * i + 2] = rgb[3 * i + 2];
            out[5 * i + 3] = alpha[i];
            out[5 * i + 4] = depth[i];
        }
        snprintf(extra, sizeof extra,
                 "X-Shape: %d,%d,5\r\nX-Dtype: float32\r\nX-Channels: r,g,b,alpha,depth\r\n"
                 "X-Sensor: %s\r\nX-Render-Ms: %.3f\r\n",
                 h, w, s->name, ms);
        respond(c, 200, "application/octet-stream", extra, out, npx * 5 * sizeof *out);
        free(out);
        free(buf);
        return;
    }
    dk_tensor img;
    const int64_t shape[3] = {h, w, 3};
    st = dk_tensor_alloc(&img, DK_U8, 3, shape);
    uint8_t *png = NULL;
    size_t png_n = 0;
    if (st == DK_OK) {
        uint8_t *px = img.data;
        for (size_t i = 0; i < npx * 3; i++) {
            float v = rgb[i];
            v = v > 0 ? (v < 1 ? v : 1) : 0;   /* also maps NaN to 0 */
            px[i] = (uint8_t)lrintf(v * 255.0f);
        }
        st = dk_png_encode(&img, &png, &png_n);
    }
    dk_tensor_release(&img);
    free(buf);
    if (st) {
        respond_error(c, 500, "PNG encoding failed: %s", dk_errmsg());
        return;
    }
    snprintf(extra, sizeof extra, "X-Shape: %d,%d,3\r\nX-Sensor: %s\r\nX-Render-Ms: %.3f\r\n", h,
             w, s->name, ms);
    respond(c, 200, "image/png", extra, png, png_n);
    dk_free(png);
}

static void handle_actors(server *sv, conn *c, const http_request *req)
{
    char err[HTTP_ERR_MAX];
    sim_actor_request ar;
    if (sim_parse_actor_request(req->body, req->content_length, &ar, err)) {
        respond_error(c, 400, "%s", err);
        return;
    }
    int st = ar.clear ? dk_sim_clear_actor_pose(sv->sim, ar.id)
                      : dk_sim_set_actor_pose(sv->sim, ar.id, ar.timestamp, &ar.actor_to_world);
    if (st) {
        respond_error(c, status_of(st), "%s", dk_sim_errmsg(sv->sim));
        return;
    }
    dk_jsonw *w = NULL;
    if (dk_jsonw_create(0, &w) == DK_OK) {
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, "status");
        dk_jsonw_string(w, "ok");
        dk_jsonw_key(w, "id");
        dk_jsonw_int(w, ar.id);
        if (!ar.clear) {
            dk_jsonw_key(w, "timestamp");
            dk_jsonw_number(w, ar.timestamp);
        }
        dk_jsonw_object_end(w);
    }
    respond_jsonw(c, 200, w, NULL);
}

static void handle_simple(conn *c, const char *key, const char *value, const char *k2, int64_t v2,
                          const char *k3, int64_t v3)
{
    dk_jsonw *w = NULL;
    if (dk_jsonw_create(0, &w) == DK_OK) {
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, key);
        dk_jsonw_string(w, value);
        if (k2) {
            dk_jsonw_key(w, k2);
            dk_jsonw_int(w, v2);
        }
        if (k3) {
            dk_jsonw_key(w, k3);
            dk_jsonw_int(w, v3);
        }
        dk_jsonw_object_end(w);
    }
    respond_jsonw(c, 200, w, NULL);
}

static void route(server *sv, conn *c, const http_request *req)
{
    const char *m = req->method, *p = req->path;
    int get = !strcmp(m, "GET"), post = !strcmp(m, "POST");
    static const char *const gets[] = {"/health", "/sensors"};
    static const char *const posts[] = {"/render", "/actors", "/shutdown"};
    int known_get = 0, known_post = 0;
    for (size_t i = 0; i < sizeof gets / sizeof gets[0]; i++) known_get |= !strcmp(p, gets[i]);
    for (size_t i = 0; i < sizeof posts / sizeof posts[0]; i++) known_post |= !strcmp(p, posts[i]);
    if (!known_get && !known_post) {
        respond_error(c, 404, "no endpoint %.200s (GET /health, GET /sensors, POST /render, "
                      "POST /actors, POST /shutdown)", p);
        return;
    }
    if ((known_get && !get) || (known_post && !post)) {
        respond_error(c, 405, "%s %.200s: use %s", m, p, known_get ? "GET" : "POST");
        return;
    }
    if (!strcmp(p, "/health")) {
        handle_simple(c, "status", "ok", "gaussians", (int64_t)sv->scene->n, "sensors",
                      dk_sim_rig(sv->sim)->n_sensors);
    } else if (!strcmp(p, "/sensors")) {
        handle_sensors(sv, c);
    } else if (!strcmp(p, "/render")) {
        handle_render(sv, c, req);
    } else if (!strcmp(p, "/actors")) {
        handle_actors(sv, c, req);
    } else {
        handle_simple(c, "status", "shutting down", NULL, 0, NULL, 0);
        sv->stop = 1;
    }
}

/* Reads one request (up to the limits, before the deadline) and answers it. */
static void serve_connection(server *sv, int fd)
{
    conn c = {fd, now_s() + sv->client_timeout, sv->client_timeout};
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) return;
    http_request req;
    char err[HTTP_ERR_MAX];
    for (;;) {
        long r = http_parse_request(buf, len, &req, err);
        if (r > 0) {
            route(sv, &c, &req);
            break;
        }
        if (r < 0) {
            respond_error(&c, (int)-r, "%s", err);
            break;
        }
        double left = c.deadline - now_s();
        if (left <= 0) {
            respond_error(&c, 408, "request not received within %g s", sv->client_timeout);
            break;
        }
        if (len == cap) {
            size_t ncap = cap * 2;
            if (ncap > HTTP_MAX_HEAD + HTTP_MAX_BODY + 8) ncap = HTTP_MAX_HEAD + HTTP_MAX_BODY + 8;
            char *nb = ncap > cap ? realloc(buf, ncap) : NULL;
            if (!nb) {
                respond_error(&c, 413, "request larger than the limits");
                break;
            }
            buf = nb;
            cap = ncap;
        }
        struct pollfd pf = {fd, POLLIN, 0};
        int pr = poll(&pf, 1, (int)ceil(left * 1000));
        if (pr < 0 && errno == EINTR) {
            if (stop_requested) break;
            continue;
        }
        if (pr == 0) continue;   /* the deadline check above answers 408 */
        if (pr < 0) break;
        ssize_t k = recv(fd, buf + len, cap - len, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k < 0) break;
        if (k == 0) {   /* the client closed: answer if it sent something */
            if (len) respond_error(&c, 400, "connection closed in the middle of a request");
            break;
        }
        len += (size_t)k;
    }
    free(buf);
    /* Let the client read the answer: close our side, then drain what it
       still sends for a moment, so the kernel does not reset the connection
       and discard the answer. */
    shutdown(fd, SHUT_WR);
    char sink[4096];
    double until = now_s() + 0.5;
    for (int i = 0; i < 64; i++) {
        double left = until - now_s();
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, (int)ceil(left * 1000)) <= 0) break;
        if (recv(fd, sink, sizeof sink, 0) <= 0) break;
    }
}

int sim_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ply", required_argument, NULL, OPT_PLY},
        {"tracks", required_argument, NULL, OPT_TRACKS},
        {"rig", required_argument, NULL, OPT_RIG},
        {"width", required_argument, NULL, OPT_WIDTH},
        {"height", required_argument, NULL, OPT_HEIGHT},
        {"port", required_argument, NULL, OPT_PORT},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"global-shutter", no_argument, NULL, OPT_GLOBAL},
        {"client-timeout", required_argument, NULL, OPT_TIMEOUT},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "sim serve", *ply = NULL, *tracks = NULL;
    long width = 480, height = 270, port = 8765, threads = cli_default_threads();
    double timeout = 10;
    int global_shutter = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_HELP: print_help(); return CLI_OK;
        case OPT_PLY: ply = optarg; break;
        case OPT_TRACKS: tracks = optarg; break;
        case OPT_RIG:
            if (strcmp(optarg, "nuscenes"))
                return cli_usage_error(cmd, usage, "unknown --rig '%s' (nuscenes)", optarg);
            break;
        case OPT_WIDTH:
            if (cli_parse_int(optarg, 1, 16384, &width))
                return cli_usage_error(cmd, usage, "bad --width '%s' (1..16384)", optarg);
            break;
        case OPT_HEIGHT:
            if (cli_parse_int(optarg, 1, 16384, &height))
                return cli_usage_error(cmd, usage, "bad --height '%s' (1..16384)", optarg);
            break;
        case OPT_PORT:
            if (cli_parse_int(optarg, 0, 65535, &port))
                return cli_usage_error(cmd, usage, "bad --port '%s' (0..65535)", optarg);
            break;
        case OPT_THREADS:
            if (cli_parse_int(optarg, 1, 1024, &threads))
                return cli_usage_error(cmd, usage, "bad --threads '%s' (1..1024)", optarg);
            break;
        case OPT_GLOBAL: global_shutter = 1; break;
        case OPT_TIMEOUT:
            if (cli_parse_double(optarg, 0.01, 3600, &timeout))
                return cli_usage_error(cmd, usage, "bad --client-timeout '%s' (0.01..3600 s)",
                                       optarg);
            break;
        default:
            if (optopt >= OPT_PLY)
                return cli_usage_error(cmd, usage, "option '%s' needs a value", argv[optind - 1]);
            return cli_usage_error(cmd, usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error(cmd, usage, "unexpected argument '%s'", argv[optind]);
    if (!ply) return cli_usage_error(cmd, usage, "--ply is required");

    dk_scene *scene = NULL;
    dk_sim *sim = NULL;
    int st = dk_scene_load_ply(ply, 0, &scene);
    if (st) return cli_fail(st);
    if (tracks && (st = dk_scene_load_tracks_json(scene, tracks)) != DK_OK) {
        dk_scene_destroy(scene);
        return cli_fail(st);
    }
    dk_rig rig;
    dk_rig_nuscenes(&rig, (int)width, (int)height);
    dk_sim_config sc;
    dk_sim_config_init(&sc);
    sc.n_threads = (int)threads;
    sc.rolling_shutter = !global_shutter;
    st = dk_sim_create(scene, &rig, &sc, &sim);
    if (st) {
        dk_scene_destroy(scene);
        return cli_fail(st);
    }

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);   /* loopback only, by design */
    int one = 1;
    socklen_t alen = sizeof addr;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 16) != 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) != 0) {
        fprintf(stderr, "drivekit: cannot listen on 127.0.0.1:%ld: %s\n", port, strerror(errno));
        if (lfd >= 0) close(lfd);
        dk_sim_destroy(sim);
        dk_scene_destroy(scene);
        return CLI_FAIL;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;   /* no SA_RESTART: accept() returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    printf("drivekit sim serve: listening on http://127.0.0.1:%d (%lld Gaussians, %d sensors, "
           "%ldx%ld cameras, %ld thread(s))\n",
           ntohs(addr.sin_port), (long long)scene->n, rig.n_sensors, width, height, threads);
    fflush(stdout);

    server sv = {sim, scene, timeout, 0};
    while (!sv.stop && !stop_requested) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                struct timespec pause = {0, 10000000};
                nanosleep(&pause, NULL);
                continue;
            }
            fprintf(stderr, "drivekit: accept failed: %s\n", strerror(errno));
            break;
        }
        serve_connection(&sv, fd);
        close(fd);
    }
    close(lfd);
    printf("drivekit sim serve: stopped\n");
    fflush(stdout);
    dk_sim_destroy(sim);
    dk_scene_destroy(scene);
    return CLI_OK;
}
