/*
 * Fuzz harness for the JSON reader and writer.
 *
 * 1. Parses the input with dk_json_parse and walks the whole tree through the
 *    cursor API: every typed read on every node (their status must agree with
 *    the node's type), field lookups of keys that exist and one that does not,
 *    items and members past the end. Every failure must leave a message that
 *    names the document.
 * 2. Writes the tree back through dk_jsonw while walking it, re-parses the text
 *    and compares the two trees (numbers bit for bit). This must succeed
 *    whenever the first parse did, all numbers were finite and the nesting fits
 *    the writer's 256 levels.
 * 3. Reads the same bytes as a script of writer calls (any order, misuse
 *    included): finish must either fail with a documented status or produce
 *    text that parses.
 * drivekit's live-allocation counter must be back where it started.
 *
 * Checks use __builtin_trap() so the standalone driver and libFuzzer both see
 * a crash.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drivekit/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) __builtin_trap();                                               \
    } while (0)

#define DOC_NAME "fuzz.json"
#define WRITER_MAX_DEPTH 256

/* The harness is single-threaded; big scratch stays off the deep recursion. */
static double scratch[64];

typedef struct walk_state {
    dk_jsonw *w;
    int all_finite;
    int max_depth;      /* deepest container; the root is at 0 */
} walk_state;

static void check_failed_msg(int st)
{
    CHECK(st < 0 && st >= DK_STATUS_MIN);
    CHECK(strstr(dk_errmsg(), DOC_NAME) != NULL);
}

static int is_big_int(double v)
{
    return fabs(v) >= 9007199254740992.0;   /* 2^53: doubles stop being exact */
}

static void walk(const dk_json_cur *c, walk_state *s, int depth)
{
    CHECK(strlen(c->path) < DK_JSON_PATH_MAX);
    dk_json_type t = dk_json_type_of(c);
    CHECK(t != DK_JSON_MISSING);
    size_t n = dk_json_size(c);
    CHECK(n == 0 || t == DK_JSON_ARRAY || t == DK_JSON_OBJECT);

    if ((t == DK_JSON_ARRAY || t == DK_JSON_OBJECT) && depth > s->max_depth)
        s->max_depth = depth;
    double d = 0;
    int st_num = dk_json_number(c, &d), st = st_num;
    if (t != DK_JSON_NUMBER) {
        CHECK(st == DK_EINVALIDDATA);
        check_failed_msg(st);
    } else if (st != DK_OK) {
        CHECK(st == DK_ERANGE);
        check_failed_msg(st);
    } else {
        CHECK(isfinite(d));
    }
    int64_t iv = 0;
    int st_int = dk_json_int(c, INT64_MIN, INT64_MAX, &iv);
    if (st_int == DK_OK) {
        CHECK(t == DK_JSON_NUMBER);
        int64_t small;
        int st2 = dk_json_int(c, -5, 5, &small);
        CHECK(st2 == (iv >= -5 && iv <= 5 ? DK_OK : DK_ERANGE));
        if (st2 == DK_OK) CHECK(small == iv);
        CHECK(dk_json_int(c, iv, iv, &small) == DK_OK && small == iv);
        if (iv != INT64_MAX) CHECK(dk_json_int(c, iv + 1, INT64_MAX, &small) == DK_ERANGE);
    } else {
        check_failed_msg(st_int);
    }
    int b = -1;
    st = dk_json_bool(c, &b);
    CHECK((st == DK_OK) == (t == DK_JSON_BOOL));
    if (st) check_failed_msg(st);
    const char *str = NULL;
    st = dk_json_string(c, &str);
    CHECK((st == DK_OK) == (t == DK_JSON_STRING));
    if (st)
        check_failed_msg(st);
    else
        CHECK(str != NULL);
    if (n <= sizeof scratch / sizeof scratch[0]) {
        st = dk_json_numbers(c, scratch, n);
        if (st) check_failed_msg(st);
    }
    st = dk_json_numbers(c, scratch, n + 1);
    CHECK(st != DK_OK);
    check_failed_msg(st);

    dk_json_cur child, probe;
    switch (t) {
    case DK_JSON_NULL: dk_jsonw_null(s->w); break;
    case DK_JSON_BOOL: dk_jsonw_bool(s->w, b); break;
    case DK_JSON_STRING: dk_jsonw_string(s->w, str); break;
    case DK_JSON_NUMBER:
        if (st_num != DK_OK) {
            s->all_finite = 0;
            dk_jsonw_null(s->w);
        } else if (st_int == DK_OK && is_big_int(d)) {
            dk_jsonw_int(s->w, iv);
        } else {
            dk_jsonw_number(s->w, d);
        }
        break;
    case DK_JSON_ARRAY:
        dk_jsonw_array_begin(s->w);
        for (size_t i = 0; i < n; i++) {
            CHECK(dk_json_item(c, i, &child) == DK_OK);
            walk(&child, s, depth + 1);
        }
        st = dk_json_item(c, n, &child);
        CHECK(st == DK_ERANGE);
        check_failed_msg(st);
        st = dk_json_field(c, "a", &child);
        CHECK(st == DK_EINVALIDDATA);
        check_failed_msg(st);
        dk_jsonw_array_end(s->w);
        break;
    case DK_JSON_OBJECT:
        dk_jsonw_object_begin(s->w);
        for (size_t i = 0; i < n; i++) {
            const char *key = NULL;
            CHECK(dk_json_member(c, i, &key, &child) == DK_OK);
            CHECK(key != NULL);
            /* Lookup finds this member or an earlier one with the same key. */
            CHECK(dk_json_field(c, key, &probe) == DK_OK);
            if (probe.node != child.node && i < 64) {
                size_t j = 0;
                const char *k2 = NULL;
                dk_json_cur m;
                for (; j < i; j++) {
                    CHECK(dk_json_member(c, j, &k2, &m) == DK_OK);
                    if (strcmp(k2, key) == 0) break;
                }
                CHECK(j < i && m.node == probe.node);
            }
            CHECK(dk_json_field_opt(c, key, &probe) == DK_OK && probe.node != NULL);
            dk_jsonw_key(s->w, key);
            walk(&child, s, depth + 1);
        }
        st = dk_json_field(c, "\x7f no such key", &probe);
        if (st != DK_OK) {
            CHECK(st == DK_ENOENT);
            check_failed_msg(st);
            CHECK(dk_json_field_opt(c, "\x7f no such key", &probe) == DK_OK);
            CHECK(probe.node == NULL && dk_json_type_of(&probe) == DK_JSON_MISSING);
        }
        st = dk_json_member(c, n, NULL, &child);
        CHECK(st == DK_ERANGE);
        check_failed_msg(st);
        st = dk_json_item(c, 0, &child);
        CHECK(st == DK_EINVALIDDATA);
        dk_jsonw_object_end(s->w);
        break;
    default: CHECK(0);
    }
}

/* The written-and-reparsed tree must equal the original. */
static void same(const dk_json_cur *a, const dk_json_cur *b)
{
    dk_json_type t = dk_json_type_of(a);
    CHECK(t == dk_json_type_of(b));
    size_t n = dk_json_size(a);
    CHECK(n == dk_json_size(b));
    switch (t) {
    case DK_JSON_BOOL: {
        int x, y;
        CHECK(dk_json_bool(a, &x) == DK_OK && dk_json_bool(b, &y) == DK_OK && x == y);
        break;
    }
    case DK_JSON_STRING: {
        const char *x, *y;
        CHECK(dk_json_string(a, &x) == DK_OK && dk_json_string(b, &y) == DK_OK);
        CHECK(strcmp(x, y) == 0);
        break;
    }
    case DK_JSON_NUMBER: {
        double x, y;
        CHECK(dk_json_number(a, &x) == DK_OK && dk_json_number(b, &y) == DK_OK);
        CHECK(memcmp(&x, &y, sizeof x) == 0);
        int64_t i, j;
        int si = dk_json_int(a, INT64_MIN, INT64_MAX, &i);
        int sj = dk_json_int(b, INT64_MIN, INT64_MAX, &j);
        CHECK(si == sj);
        if (si == DK_OK) CHECK(i == j);
        break;
    }
    case DK_JSON_ARRAY:
        for (size_t i = 0; i < n; i++) {
            dk_json_cur x, y;
            CHECK(dk_json_item(a, i, &x) == DK_OK && dk_json_item(b, i, &y) == DK_OK);
            CHECK(strcmp(x.path, y.path) == 0);
            same(&x, &y);
        }
        break;
    case DK_JSON_OBJECT:
        for (size_t i = 0; i < n; i++) {
            dk_json_cur x, y;
            const char *kx, *ky;
            CHECK(dk_json_member(a, i, &kx, &x) == DK_OK);
            CHECK(dk_json_member(b, i, &ky, &y) == DK_OK);
            CHECK(strcmp(kx, ky) == 0);
            same(&x, &y);
        }
        break;
    default: break;
    }
}

static void round_trip(const uint8_t *data, size_t size)
{
    dk_json *doc = NULL;
    int st = dk_json_parse((const char *)data, size, DOC_NAME, &doc);
    if (st != DK_OK) {
        CHECK(doc == NULL);
        CHECK(st == DK_EINVALIDDATA || st == DK_ENOMEM);
        CHECK(strncmp(dk_errmsg(), "dk_json_parse(): " DOC_NAME ":", 17 + sizeof DOC_NAME) == 0);
        return;
    }
    CHECK(strcmp(dk_json_name(doc), DOC_NAME) == 0);
    walk_state s = { NULL, 1, -1 };
    CHECK(dk_jsonw_create(size && (data[0] & 1) ? 2 : 0, &s.w) == DK_OK);
    dk_json_cur root = dk_json_root(doc);
    walk(&root, &s, 0);

    const char *text = NULL;
    size_t len = 0;
    st = dk_jsonw_finish(s.w, &text, &len);
    if (s.max_depth >= WRITER_MAX_DEPTH) {
        CHECK(st == DK_ESTATE);
    } else if (s.all_finite) {
        CHECK(st == DK_OK && text && strlen(text) == len);
        dk_json *again = NULL;
        CHECK(dk_json_parse(text, len, DOC_NAME, &again) == DK_OK);
        dk_json_cur r2 = dk_json_root(again);
        same(&root, &r2);
        dk_json_free(again);
    }
    dk_jsonw_destroy(s.w);
    dk_json_free(doc);
}

/* The bytes as a script of writer calls. */
static void writer_script(const uint8_t *data, size_t size)
{
    dk_jsonw *w = NULL;
    CHECK(dk_jsonw_create(size ? data[0] % 5 : 0, &w) == DK_OK);
    size_t i = size ? 1 : 0;
    int nonfinite = 0;
    for (int ops = 0; i < size && ops < 4096; ops++) {
        uint8_t op = data[i++];
        char buf[17];
        size_t n = 0;
        double d;
        int64_t v;
        switch (op % 12) {
        case 0: dk_jsonw_object_begin(w); break;
        case 1: dk_jsonw_object_end(w); break;
        case 2: dk_jsonw_array_begin(w); break;
        case 3: dk_jsonw_array_end(w); break;
        case 4:
        case 5:
            while (i < size && n < 16 && data[i]) buf[n++] = (char)data[i++];
            buf[n] = '\0';
            if (op % 12 == 4)
                dk_jsonw_key(w, buf);
            else
                dk_jsonw_string(w, (op & 0x80) ? NULL : buf);
            break;
        case 6:
            if (size - i < sizeof d) {
                i = size;
                break;
            }
            memcpy(&d, data + i, sizeof d);
            i += sizeof d;
            if (!isfinite(d)) nonfinite = 1;
            dk_jsonw_number(w, d);
            break;
        case 7:
            if (size - i < sizeof v) {
                i = size;
                break;
            }
            memcpy(&v, data + i, sizeof v);
            i += sizeof v;
            dk_jsonw_int(w, v);
            break;
        case 8: dk_jsonw_bool(w, op & 0x10); break;
        case 9: dk_jsonw_null(w); break;
        case 10: dk_jsonw_number(w, (double)(int8_t)op / 8.0); break;
        default: dk_jsonw_key(w, (op & 0x80) ? NULL : ""); break;
        }
    }
    const char *text = NULL;
    size_t len = 0;
    int st = dk_jsonw_finish(w, &text, &len);
    if (st == DK_OK) {
        CHECK(!nonfinite);
        CHECK(text && strlen(text) == len);
        dk_json *doc = NULL;
        CHECK(dk_json_parse(text, len, DOC_NAME, &doc) == DK_OK);
        dk_json_free(doc);
    } else {
        CHECK(st == DK_EINVAL || st == DK_ESTATE);
        CHECK(text == NULL && len == 0);
        CHECK(strncmp(dk_errmsg(), "dk_jsonw_finish(): ", 19) == 0);
    }
    dk_jsonw_destroy(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t live0 = dk_alloc_live();
    round_trip(data, size);
    writer_script(data, size);
    CHECK(dk_alloc_live() == live0);
    return 0;
}
