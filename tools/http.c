/*
 * HTTP/1.x request parsing and the render server's JSON bodies (http.h).
 * Every input byte is untrusted: lengths are checked before copying, numbers
 * are parsed by hand with overflow checks, and nothing is allocated except by
 * the JSON reader.
 */
#include "http.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static long fail(char err[HTTP_ERR_MAX], int status, const char *fmt, ...) DK_PRINTF(3, 4);
static long fail(char err[HTTP_ERR_MAX], int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, HTTP_ERR_MAX, fmt, ap);
    va_end(ap);
    return -(long)status;
}

const char *http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* RFC 9110 tchar. */
static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int ieq(const char *a, size_t na, const char *b)
{
    size_t nb = strlen(b);
    if (na != nb) return 0;
    for (size_t i = 0; i < na; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z') x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (unsigned char)(y - 'A' + 'a');
        if (x != y) return 0;
    }
    return 1;
}

/* Whether the comma-separated list v[0..n) holds `token` (case-insensitive). */
static int has_token(const char *v, size_t n, const char *token)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t b = i;
        while (i < n && v[i] != ',') i++;
        size_t e = i;
        while (e > b && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
        if (e > b && ieq(v + b, e - b, token)) return 1;
    }
    return 0;
}

/* End of the head: offset just past the empty line, or 0 if not there yet.
 * Lines end in LF, optionally preceded by CR. */
static size_t find_head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n') continue;
        size_t j = i + 1;
        if (j < len && buf[j] == '\n') return j + 1;
        if (j + 1 < len && buf[j] == '\r' && buf[j + 1] == '\n') return j + 2;
    }
    return 0;
}

static long parse_request_line(const char *p, size_t n, http_request *req,
                               char err[HTTP_ERR_MAX])
{
    if (n > HTTP_MAX_REQUEST_LINE)
        return fail(err, 414, "request line of %zu bytes is longer than %d", n,
                    HTTP_MAX_REQUEST_LINE);
    size_t i = 0;
    while (i < n && p[i] >= 'A' && p[i] <= 'Z') i++;
    if (i == 0 || i >= sizeof req->method || i >= n || p[i] != ' ')
        return fail(err, 400, "malformed request line: expected 'METHOD /path HTTP/1.1'");
    memcpy(req->method, p, i);
    req->method[i] = '\0';
    size_t t0 = ++i;
    while (i < n && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f) i++;
    size_t tn = i - t0;
    if (tn == 0 || i >= n || p[i] != ' ')
        return fail(err, 400, "malformed request line: expected 'METHOD /path HTTP/1.1'");
    if (p[t0] != '/') return fail(err, 400, "request target must start with '/'");
    if (tn > HTTP_MAX_TARGET)
        return fail(err, 414, "request target of %zu bytes is longer than %d", tn, HTTP_MAX_TARGET);
    memcpy(req->target, p + t0, tn);
    req->target[tn] = '\0';
    size_t q = 0;
    while (q < tn && req->target[q] != '?' && req->target[q] != '#') q++;
    memcpy(req->path, req->target, q);
    req->path[q] = '\0';
    i++;
    const char *v = p + i;
    size_t vn = n - i;
    if (vn == 8 && memcmp(v, "HTTP/1.", 7) == 0 && (v[7] == '0' || v[7] == '1')) {
        req->version_minor = v[7] - '0';
        return 0;
    }
    if (vn == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9' && v[6] == '.' &&
        v[7] >= '0' && v[7] <= '9')
        return fail(err, 505, "HTTP version %.8s is not supported (1.0 and 1.1 are)", v);
    return fail(err, 400, "malformed request line: bad HTTP version");
}

long http_parse_request(const char *buf, size_t len, http_request *req, char err[HTTP_ERR_MAX])
{
    memset(req, 0, sizeof *req);
    err[0] = '\0';
    /* Limits first, so a client cannot make us wait for (or buffer) more. */
    const char *nl = memchr(buf, '\n', len < HTTP_MAX_REQUEST_LINE + 2 ? len
                                                                       : HTTP_MAX_REQUEST_LINE + 2);
    if (!nl && len > HTTP_MAX_REQUEST_LINE + 1)
        return fail(err, 414, "request line is longer than %d bytes", HTTP_MAX_REQUEST_LINE);
    size_t head = find_head_end(buf, len < HTTP_MAX_HEAD ? len : HTTP_MAX_HEAD);
    if (!head) {
        if (len >= HTTP_MAX_HEAD)
            return fail(err, 431, "request head is longer than %d bytes", HTTP_MAX_HEAD);
        if (!nl) return 0;
    }
    /* Validate the lines at hand, even of an incomplete head: garbage fails early. */
    size_t end = head ? head : len, at = 0;
    int line_no = 0, content_length_seen = 0;
    while (at < end) {
        const char *lf = memchr(buf + at, '\n', end - at);
        if (!lf) break;   /* a partial line: wait for it */
        size_t ln = (size_t)(lf - (buf + at));
        const char *p = buf + at;
        if (ln && p[ln - 1] == '\r') ln--;
        at = (size_t)(lf - buf) + 1;
        if (ln == 0) {
            if (line_no == 0) return fail(err, 400, "empty request line");
            break;   /* the end of the head */
        }
        for (size_t k = 0; k < ln; k++) {
            unsigned char c = (unsigned char)p[k];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return fail(err, 400, "control byte 0x%02x in line %d of the head", c, line_no + 1);
        }
        if (line_no++ == 0) {
            long st = parse_request_line(p, ln, req, err);
            if (st) return st;
            continue;
        }
        if (p[0] == ' ' || p[0] == '\t')
            return fail(err, 400, "folded header line %d is not allowed", line_no);
        if (++req->n_headers > HTTP_MAX_HEADERS)
            return fail(err, 431, "more than %d header fields", HTTP_MAX_HEADERS);
        size_t c = 0;
        while (c < ln && is_tchar((unsigned char)p[c])) c++;
        if (c == 0 || c >= ln || p[c] != ':')
            return fail(err, 400, "malformed header line %d: expected 'Name: value'", line_no);
        const char *name = p;
        size_t name_n = c;
        size_t vb = c + 1, ve = ln;
        while (vb < ve && (p[vb] == ' ' || p[vb] == '\t')) vb++;
        while (ve > vb && (p[ve - 1] == ' ' || p[ve - 1] == '\t')) ve--;
        const char *val = p + vb;
        size_t val_n = ve - vb;
        if (ieq(name, name_n, "content-length")) {
            if (val_n == 0 || val_n > 18)
                return fail(err, val_n > 18 ? 413 : 400, "bad Content-Length '%.*s'",
                            (int)(val_n > 32 ? 32 : val_n), val);
            size_t v = 0;
            for (size_t k = 0; k < val_n; k++) {
                if (val[k] < '0' || val[k] > '9')
                    return fail(err, 400, "bad Content-Length '%.*s'",
                                (int)(val_n > 32 ? 32 : val_n), val);
                v = v * 10 + (size_t)(val[k] - '0');
            }
            if (content_length_seen && v != req->content_length)
                return fail(err, 400, "conflicting Content-Length values %zu and %zu",
                            req->content_length, v);
            if (v > HTTP_MAX_BODY)
                return fail(err, 413, "Content-Length %zu is above the limit of %d bytes", v,
                            HTTP_MAX_BODY);
            content_length_seen = 1;
            req->has_content_length = 1;
            req->content_length = v;
        } else if (ieq(name, name_n, "transfer-encoding")) {
            return fail(err, 501, "Transfer-Encoding is not supported: send Content-Length");
        } else if (ieq(name, name_n, "connection")) {
            if (has_token(val, val_n, "close")) req->keep_alive = -1;
            else if (has_token(val, val_n, "keep-alive") && req->keep_alive == 0)
                req->keep_alive = 2;
        } else if (ieq(name, name_n, "content-type")) {
            size_t k = val_n < sizeof req->content_type - 1 ? val_n : sizeof req->content_type - 1;
            memcpy(req->content_type, val, k);
            req->content_type[k] = '\0';
        }
    }
    if (!head) return 0;
    if (req->keep_alive == -1)
        req->keep_alive = 0;
    else if (req->keep_alive == 2)
        req->keep_alive = 1;
    else
        req->keep_alive = req->version_minor >= 1;
    req->head_len = head;
    if (len - head < req->content_length) return 0;
    req->body = buf + head;
    return (long)(head + req->content_length);
}

/* ------------------------------------------------------------------------ */
/* JSON bodies                                                               */

static int json_fail(char err[HTTP_ERR_MAX], const char *fmt, ...) DK_PRINTF(2, 3);
static int json_fail(char err[HTTP_ERR_MAX], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, HTTP_ERR_MAX, fmt, ap);
    va_end(ap);
    return -400;
}

/* drivekit's message for the last failed call, without the "function(): " part. */
static const char *lib_reason(void)
{
    const char *m = dk_errmsg();
    const char *p = strstr(m, "(): ");
    return p ? p + 4 : m;
}

static int parse_doc(const char *body, size_t len, dk_json **doc, char err[HTTP_ERR_MAX])
{
    if (len == 0) return json_fail(err, "empty body: expected a JSON object");
    if (dk_json_parse(body, len, "body", doc) != DK_OK)
        return json_fail(err, "body is not valid JSON: %s", lib_reason());
    dk_json_cur root = dk_json_root(*doc);
    if (dk_json_type_of(&root) != DK_JSON_OBJECT) {
        dk_json_free(*doc);
        *doc = NULL;
        return json_fail(err, "body must be a JSON object");
    }
    return 0;
}

/* Refuses members other than the allowed ones. */
static int check_keys(const dk_json_cur *obj, const char *const *allowed, char err[HTTP_ERR_MAX])
{
    size_t n = dk_json_size(obj);
    for (size_t i = 0; i < n; i++) {
        const char *key = NULL;
        dk_json_cur m;
        if (dk_json_member(obj, i, &key, &m) != DK_OK || !key)
            return json_fail(err, "body: unreadable member %zu", i);
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(key, *a) == 0;
        if (!ok) {
            char list[160];
            size_t at = 0;
            list[0] = '\0';
            for (const char *const *a = allowed; *a; a++) {
                int w = snprintf(list + at, sizeof list - at, "%s%s", a == allowed ? "" : ", ", *a);
                if (w < 0 || (size_t)w >= sizeof list - at) break;
                at += (size_t)w;
            }
            return json_fail(err, "unknown field '%.40s' (known: %s)", key, list);
        }
    }
    return 0;
}

/* A 4x4 rigid transform: four rows of four numbers, or 16 numbers. */
static int get_pose(const dk_json_cur *obj, const char *key, dk_pose *out, char err[HTTP_ERR_MAX])
{
    dk_json_cur c;
    if (dk_json_field(obj, key, &c) != DK_OK) return json_fail(err, "missing field '%s'", key);
    double m[16];
    size_t n = dk_json_size(&c);
    if (dk_json_type_of(&c) != DK_JSON_ARRAY || (n != 4 && n != 16))
        return json_fail(err, "%s must be a 4x4 array (4 rows of 4 numbers, or 16 numbers)", key);
    if (n == 16) {
        if (dk_json_numbers(&c, m, 16) != DK_OK)
            return json_fail(err, "%s must hold 16 finite numbers", key);
    } else {
        for (size_t r = 0; r < 4; r++) {
            dk_json_cur row;
            if (dk_json_item(&c, r, &row) != DK_OK || dk_json_numbers(&row, m + 4 * r, 4) != DK_OK)
                return json_fail(err, "%s[%zu] must be a row of 4 finite numbers", key, r);
        }
    }
    if (dk_pose_from_matrix(m, out) != DK_OK)
        return json_fail(err, "%s is not a rigid transform: %s", key, lib_reason());
    return 0;
}

static int get_time(const dk_json_cur *obj, const char *key, double *out, char err[HTTP_ERR_MAX])
{
    dk_json_cur c;
    if (dk_json_field(obj, key, &c) != DK_OK) return json_fail(err, "missing field '%s'", key);
    if (dk_json_type_of(&c) != DK_JSON_NUMBER || dk_json_number(&c, out) != DK_OK ||
        !isfinite(*out))
        return json_fail(err, "%s must be a finite number (seconds)", key);
    return 0;
}

int sim_parse_render_request(const char *body, size_t len, sim_render_request *out,
                             char err[HTTP_ERR_MAX])
{
    static const char *const keys[] = {"sensor", "ego_to_world", "ego_to_world_end", "timestamp",
                                       "format", "lidar_output", NULL};
    memset(out, 0, sizeof *out);
    err[0] = '\0';
    dk_json *doc = NULL;
    int st = parse_doc(body, len, &doc, err);
    if (st) return st;
    dk_json_cur root = dk_json_root(doc), c;
    const char *s = NULL;
    st = check_keys(&root, keys, err);
    if (!st) {
        if (dk_json_field(&root, "sensor", &c) != DK_OK)
            st = json_fail(err, "missing field 'sensor'");
        else if (dk_json_string(&c, &s) != DK_OK)
            st = json_fail(err, "sensor must be a string");
        else if (strlen(s) == 0 || strlen(s) >= sizeof out->sensor)
            st = json_fail(err, "sensor name must have 1..%d characters",
                           (int)sizeof out->sensor - 1);
        else
            memcpy(out->sensor, s, strlen(s) + 1);
    }
    if (!st) st = get_pose(&root, "ego_to_world", &out->ego_to_world, err);
    if (!st) st = get_time(&root, "timestamp", &out->timestamp, err);
    if (!st && dk_json_field_opt(&root, "ego_to_world_end", &c) == DK_OK && c.node &&
        dk_json_type_of(&c) != DK_JSON_NULL) {
        st = get_pose(&root, "ego_to_world_end", &out->ego_to_world_end, err);
        out->has_end = !st;
    }
    if (!st && dk_json_field_opt(&root, "format", &c) == DK_OK && c.node) {
        if (dk_json_string(&c, &s) != DK_OK)
            st = json_fail(err, "format must be \"png\" or \"raw\"");
        else if (!strcmp(s, "png"))
            out->format = SIM_FORMAT_PNG;
        else if (!strcmp(s, "raw"))
            out->format = SIM_FORMAT_RAW;
        else
            st = json_fail(err, "format must be \"png\" or \"raw\", not \"%.32s\"", s);
    }
    if (!st && dk_json_field_opt(&root, "lidar_output", &c) == DK_OK && c.node) {
        if (dk_json_string(&c, &s) != DK_OK)
            st = json_fail(err, "lidar_output must be \"range_image\" or \"points\"");
        else if (!strcmp(s, "range_image"))
            out->lidar_output = SIM_LIDAR_RANGE_IMAGE;
        else if (!strcmp(s, "points"))
            out->lidar_output = SIM_LIDAR_POINTS;
        else
            st = json_fail(err, "lidar_output must be \"range_image\" or \"points\", not \"%.32s\"",
                           s);
    }
    dk_json_free(doc);
    return st;
}

int sim_parse_actor_request(const char *body, size_t len, sim_actor_request *out,
                            char err[HTTP_ERR_MAX])
{
    static const char *const keys[] = {"id", "timestamp", "actor_to_world", "clear", NULL};
    memset(out, 0, sizeof *out);
    err[0] = '\0';
    dk_json *doc = NULL;
    int st = parse_doc(body, len, &doc, err);
    if (st) return st;
    dk_json_cur root = dk_json_root(doc), c;
    int64_t id = 0;
    st = check_keys(&root, keys, err);
    if (!st) {
        if (dk_json_field(&root, "id", &c) != DK_OK)
            st = json_fail(err, "missing field 'id'");
        else if (dk_json_int(&c, -1, INT32_MAX, &id) != DK_OK)
            st = json_fail(err, "id must be an integer in -1..%d", INT32_MAX);
        else
            out->id = (int32_t)id;
    }
    if (!st && dk_json_field_opt(&root, "clear", &c) == DK_OK && c.node) {
        if (dk_json_bool(&c, &out->clear) != DK_OK) st = json_fail(err, "clear must be a boolean");
    }
    if (!st && out->clear) {
        if (dk_json_field_opt(&root, "actor_to_world", &c) == DK_OK && c.node)
            st = json_fail(err, "clear does not take actor_to_world");
    } else if (!st) {
        if (out->id < 0) st = json_fail(err, "id must be >= 0 (-1 is only for \"clear\")");
        if (!st) st = get_time(&root, "timestamp", &out->timestamp, err);
        if (!st) st = get_pose(&root, "actor_to_world", &out->actor_to_world, err);
    }
    dk_json_free(doc);
    return st;
}
