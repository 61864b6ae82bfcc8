/*
 * JSON: reading through cJSON, writing with a small streaming writer.
 *
 * Reading. cJSON builds the tree; drivekit adds what it lacks. (1) Strictness:
 * cJSON accepts numbers like 01, 1. or -.5, raw control characters in strings
 * and any byte <= 0x20 as whitespace, and it stops at the first complete value.
 * After cJSON succeeds we rescan the text of the value once (cheap: the grammar
 * is already known to be right) and reject those forms, trailing garbage and
 * the \u0000 escape (a C string cannot hold it, cJSON would silently cut the
 * string), so what we accept is RFC 8259 JSON except that invalid UTF-8 is
 * passed through untouched and duplicate keys are allowed (lookups find the
 * first). (2) Exact integers: cJSON keeps only a double, so integers beyond
 * 2^53 (ids, nanosecond stamps) would come back rounded; the rescan parses
 * those tokens exactly and keeps them in a side table for dk_json_int. (3)
 * Random access: cJSON children are a linked list, so item(i) in a loop would
 * be quadratic on a 100k-row table; containers with more than a few children
 * get a pointer index, found through the container's unused `valuedouble`
 * (index + 1; 0 = not indexed). The tree is never modified afterwards, so
 * concurrent readers need no locks.
 *
 * cJSON allocates with malloc (its hooks are process-global, so we leave them
 * alone); everything drivekit allocates goes through dk_malloc. cJSON cannot
 * tell an allocation failure from a syntax error; both read as a syntax error.
 * cJSON also stores the last error position in a process-global that every
 * parse writes; we never read it (cJSON_GetErrorPtr) and take the position
 * from return_parse_end instead, so parses on several threads stay correct.
 *
 * Paths. A cursor carries its path ("actors[3].size") by value, so errors can
 * name the field without the tree knowing parents. Keys that are not plain
 * identifiers are written as ["key"]; paths longer than DK_JSON_PATH_MAX keep
 * their head and tail around "...".
 *
 * Writing. dk_jsonw appends to one growing buffer and tracks nesting on a
 * fixed stack; the first misuse or failure is kept (sticky) and reported by
 * dk_jsonw_finish, so call sites need no checks between calls.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "drivekit/core.h"
#include "internal.h"

#define DK__STR_(x) #x
#define DK__STR(x) DK__STR_(x)

/* Containers with more children than this get a random-access index. */
#define JSON_INDEX_MIN 8
/* Integers with more digits than this may not be exact as a double. */
#define JSON_EXACT_DIGITS 15

typedef struct json_index {
    const cJSON **items;   /* into dk_json.kids */
    size_t n;
} json_index;

typedef struct json_bigint {
    const cJSON *node;
    int64_t value;
} json_bigint;

struct dk_json {
    cJSON *root;
    char *name;             /* dk_malloc'd copy, or NULL */
    json_index *index;      /* containers with > JSON_INDEX_MIN children */
    size_t n_index;
    const cJSON **kids;     /* children of all indexed containers */
    json_bigint *big;       /* exact integers beyond double precision, by node */
    size_t n_big;
};

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */

static const char *doc_name(const dk_json *doc)
{
    return doc && doc->name ? doc->name : "<json>";
}

static const char *cur_name(const dk_json_cur *c)
{
    return doc_name(c ? c->doc : NULL);
}

static const char *cur_path(const dk_json_cur *c)
{
    return c && c->path[0] ? c->path : "(root)";
}

static const char *type_name(dk_json_type t)
{
    switch (t) {
    case DK_JSON_NULL: return "null";
    case DK_JSON_BOOL: return "bool";
    case DK_JSON_NUMBER: return "number";
    case DK_JSON_STRING: return "string";
    case DK_JSON_ARRAY: return "array";
    case DK_JSON_OBJECT: return "object";
    default: return "nothing (missing)";
    }
}

static int is_ws(unsigned char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static int is_num_char(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == '.' || ch == 'e' ||
           ch == 'E';
}

/* 1-based line and byte column of offset `pos`. */
static void line_col(const char *text, size_t pos, size_t *line, size_t *col)
{
    size_t ln = 1, start = 0;
    for (size_t i = 0; i < pos; i++) {
        if (text[i] == '\n') {
            ln++;
            start = i + 1;
        }
    }
    *line = ln;
    *col = pos - start + 1;
}

/* A short, printable excerpt of the text at `pos` for messages. */
static void excerpt(const char *text, size_t len, size_t pos, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = pos; i < len && n + 1 < cap && n < 24; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (ch == '\n' || ch == '\r') break;
        out[n++] = (ch < 0x20 || ch >= 0x7f || ch == '\'') ? '?' : (char)ch;
    }
    out[n] = '\0';
}

/* Containers open at `pos` (strings skipped); only run on the error path, to
 * tell cJSON's nesting limit apart from a plain syntax error. */
static size_t depth_at(const char *text, size_t pos)
{
    size_t depth = 0;
    int in_str = 0;
    for (size_t i = 0; i < pos; i++) {
        char ch = text[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '[' || ch == '{') {
            depth++;
        } else if ((ch == ']' || ch == '}') && depth) {
            depth--;
        }
    }
    return depth;
}

static int syntax_error(const char *func, const char *name, const char *text, size_t len,
                        size_t pos, const char *what)
{
    size_t line, col;
    char near[32];
    if (pos > len) pos = len;
    line_col(text, pos, &line, &col);
    excerpt(text, len, pos, near, sizeof near);
    if (near[0])
        return dk__error(DK_EINVALIDDATA, func, "%s:%zu:%zu: %s near '%s'", name, line, col,
                         what, near);
    return dk__error(DK_EINVALIDDATA, func, "%s:%zu:%zu: %s at end of input", name, line, col,
                     what);
}

/* ------------------------------------------------------------------------ */
/* Parsing                                                                   */

/* RFC 8259 number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? spanning all
 * of s[0..n). Sets *plain_int when there is no fraction or exponent. */
static int valid_number(const char *s, size_t n, int *plain_int)
{
    size_t i = 0;
    *plain_int = 1;
    if (i < n && s[i] == '-') i++;
    if (i >= n || !isdigit((unsigned char)s[i])) return 0;
    if (s[i] == '0') {
        i++;
    } else {
        while (i < n && isdigit((unsigned char)s[i])) i++;
    }
    if (i < n && s[i] == '.') {
        *plain_int = 0;
        i++;
        if (i >= n || !isdigit((unsigned char)s[i])) return 0;
        while (i < n && isdigit((unsigned char)s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        *plain_int = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || !isdigit((unsigned char)s[i])) return 0;
        while (i < n && isdigit((unsigned char)s[i])) i++;
    }
    return i == n;
}

/* A large integer found by the rescan: which number (in document order) it is,
 * and its exact value. */
typedef struct scan_big {
    size_t ordinal;
    int64_t value;
} scan_big;

typedef struct scan_state {
    scan_big *big;
    size_t n_big, cap_big;
} scan_state;

static int scan_push_big(scan_state *s, size_t ordinal, int64_t value)
{
    if (s->n_big == s->cap_big) {
        size_t cap = s->cap_big ? s->cap_big * 2 : 8;
        scan_big *p = dk_realloc(s->big, cap * sizeof *p);
        if (!p) return DK_ENOMEM;
        s->big = p;
        s->cap_big = cap;
    }
    s->big[s->n_big].ordinal = ordinal;
    s->big[s->n_big].value = value;
    s->n_big++;
    return DK_OK;
}

/* Rescans text[begin, end), a value cJSON accepted, for what cJSON is lenient
 * about, and collects integers too long to be exact as doubles. */
static int strict_scan(const char *text, size_t begin, size_t end, const char *name,
                       scan_state *s)
{
    size_t i = begin, ordinal = 0;
    while (i < end) {
        unsigned char ch = (unsigned char)text[i];
        if (ch == '"') {
            i++;
            while (i < end && text[i] != '"') {
                unsigned char c2 = (unsigned char)text[i];
                if (c2 == '\\') {
                    if (i + 1 < end && text[i + 1] == 'u') {
                        if (i + 5 < end && memcmp(text + i + 2, "0000", 4) == 0)
                            return syntax_error("dk_json_parse", name, text, end, i,
                                                "\\u0000 in a string is not supported");
                        i += 6;
                    } else {
                        i += 2;
                    }
                    continue;
                }
                if (c2 < 0x20)
                    return syntax_error("dk_json_parse", name, text, end, i,
                                        "unescaped control character in a string");
                i++;
            }
            i++;   /* closing quote */
        } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
            size_t j = i;
            int plain;
            while (j < end && is_num_char((unsigned char)text[j])) j++;
            if (!valid_number(text + i, j - i, &plain))
                return syntax_error("dk_json_parse", name, text, end, i, "invalid number");
            size_t digits = j - i - (ch == '-');
            if (plain && digits > JSON_EXACT_DIGITS && j - i < 32) {
                char tmp[32];
                char *endp = NULL;
                memcpy(tmp, text + i, j - i);
                tmp[j - i] = '\0';
                errno = 0;
                long long v = strtoll(tmp, &endp, 10);
                /* Beyond int64 the double is all we have; dk_json_int then
                 * reports the range. */
                if (errno == 0 && endp == tmp + (j - i)) {
                    int st = scan_push_big(s, ordinal, (int64_t)v);
                    if (st) return st;
                }
            }
            ordinal++;
            i = j;
        } else if (ch < 0x20 && !is_ws(ch)) {
            return syntax_error("dk_json_parse", name, text, end, i,
                                "control character outside a string");
        } else {
            i++;
        }
    }
    return DK_OK;
}

static size_t child_count(const cJSON *node)
{
    size_t n = 0;
    for (const cJSON *k = node->child; k; k = k->next) n++;
    return n;
}

static int is_container(const cJSON *node)
{
    return node && (node->type & 0xFF) & (cJSON_Array | cJSON_Object);
}

/* First pass over the tree: how many containers get an index, how many
 * children they hold. Recursion depth is bounded by cJSON's nesting limit. */
static void index_count(const cJSON *node, size_t *n_index, size_t *n_kids)
{
    if (!is_container(node)) return;
    size_t n = child_count(node);
    if (n > JSON_INDEX_MIN) {
        (*n_index)++;
        *n_kids += n;
    }
    for (const cJSON *k = node->child; k; k = k->next) index_count(k, n_index, n_kids);
}

typedef struct fill_state {
    dk_json *doc;
    size_t i_index, i_kids;
    size_t ordinal;          /* numbers seen so far, in document order */
    const scan_big *big;
    size_t n_big, i_big;
} fill_state;

/* Second pass, in document order (which is the order numbers appear in the
 * text): fill the indexes and attach exact integers to their nodes. */
static void index_fill(cJSON *node, fill_state *f)
{
    if ((node->type & 0xFF) == cJSON_Number) {
        if (f->i_big < f->n_big && f->big[f->i_big].ordinal == f->ordinal) {
            f->doc->big[f->i_big].node = node;
            f->doc->big[f->i_big].value = f->big[f->i_big].value;
            f->i_big++;
        }
        f->ordinal++;
        return;
    }
    if (!is_container(node)) return;
    size_t n = child_count(node);
    if (n > JSON_INDEX_MIN) {
        json_index *ix = &f->doc->index[f->i_index];
        ix->items = f->doc->kids + f->i_kids;
        ix->n = n;
        size_t j = 0;
        for (const cJSON *k = node->child; k; k = k->next) ix->items[j++] = k;
        f->i_kids += n;
        f->i_index++;
        node->valuedouble = (double)f->i_index;   /* index + 1 */
    }
    for (cJSON *k = node->child; k; k = k->next) index_fill(k, f);
}

static int cmp_big(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const json_bigint *)a)->node;
    uintptr_t y = (uintptr_t)((const json_bigint *)b)->node;
    return (x > y) - (x < y);
}

static int build_index(dk_json *doc, const scan_state *s)
{
    size_t n_index = 0, n_kids = 0;
    index_count(doc->root, &n_index, &n_kids);
    if (n_index) {
        doc->index = dk_calloc(n_index, sizeof *doc->index);
        doc->kids = dk_calloc(n_kids, sizeof *doc->kids);
        if (!doc->index || !doc->kids) return DK_ENOMEM;
        doc->n_index = n_index;
    }
    if (s->n_big) {
        doc->big = dk_calloc(s->n_big, sizeof *doc->big);
        if (!doc->big) return DK_ENOMEM;
    }
    fill_state f = { doc, 0, 0, 0, s->big, s->n_big, 0 };
    index_fill(doc->root, &f);
    if (f.i_big != s->n_big || f.i_index != n_index || f.i_kids != n_kids)
        return DK_EINTERNAL;
    doc->n_big = s->n_big;
    if (doc->n_big > 1) qsort(doc->big, doc->n_big, sizeof *doc->big, cmp_big);
    return DK_OK;
}

void dk_json_free(dk_json *doc)
{
    if (!doc) return;
    if (doc->root) cJSON_Delete(doc->root);
    dk_free(doc->name);
    dk_free(doc->index);
    dk_free(doc->kids);
    dk_free(doc->big);
    dk_free(doc);
}

int dk_json_parse(const char *text, size_t len, const char *name, dk_json **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!text && len) return dk__error(DK_EINVAL, __func__, "text is NULL");
    /* No real buffer is this large; cJSON's offset arithmetic must not wrap. */
    if (len > (size_t)PTRDIFF_MAX)
        return dk__error(DK_EINVAL, __func__, "%s: length %zu is impossible",
                         name ? name : "<json>", len);

    dk_json *doc = dk_calloc(1, sizeof *doc);
    if (!doc) return dk__error(DK_ENOMEM, __func__, "out of memory");
    if (name) {
        doc->name = dk_strdup(name);
        if (!doc->name) {
            dk_free(doc);
            return dk__error(DK_ENOMEM, __func__, "out of memory");
        }
    }
    const char *nm = doc_name(doc);

    size_t begin = 0;
    while (begin < len && is_ws((unsigned char)text[begin])) begin++;
    if (begin == len) {
        int st = syntax_error(__func__, nm, text ? text : "", len, len,
                              len ? "no JSON value (only whitespace)" : "empty input");
        dk_json_free(doc);
        return st;
    }

    const char *end = NULL;
    doc->root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!doc->root) {
        size_t pos = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        int deep = pos < len && (text[pos] == '[' || text[pos] == '{') &&
                   depth_at(text, pos) >= CJSON_NESTING_LIMIT;
        int st = syntax_error(__func__, nm, text, len, pos,
                              deep ? "nesting deeper than " DK__STR(CJSON_NESTING_LIMIT)
                                     " levels"
                                   : "syntax error");
        dk_json_free(doc);
        return st;
    }
    size_t vend = (size_t)(end - text);
    /* cJSON skips a UTF-8 byte order mark; the rescan must not see it. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0 && begin == 0) begin = 3;

    scan_state s = { NULL, 0, 0 };
    int st = strict_scan(text, begin, vend, nm, &s);
    if (st == DK_OK) {
        size_t t = vend;
        while (t < len && is_ws((unsigned char)text[t])) t++;
        if (t < len)
            st = syntax_error(__func__, nm, text, len, t, "trailing characters after the value");
    }
    if (st == DK_OK) {
        st = build_index(doc, &s);
        if (st == DK_ENOMEM) dk__error(st, __func__, "%s: out of memory", nm);
        if (st == DK_EINTERNAL) dk__error(st, __func__, "%s: number rescan out of step", nm);
    } else if (st == DK_ENOMEM) {
        dk__error(st, __func__, "%s: out of memory", nm);
    }
    dk_free(s.big);
    if (st) {
        dk_json_free(doc);
        return st;
    }
    *out = doc;
    return DK_OK;
}

int dk_json_load(const char *path, dk_json **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (!path) return dk__error(DK_EINVAL, __func__, "path is NULL");
    uint8_t *data = NULL;
    size_t size = 0;
    int st = dk_file_read(path, &data, &size);
    if (st) {
        /* dk_file_read's message names the path; keep it under our name. */
        char msg[DK_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", dk_errmsg());
        return dk__error(st, __func__, "%s", msg);
    }
    st = dk_json_parse((const char *)data, size, path, out);
    dk_free(data);
    return st;
}

const char *dk_json_name(const dk_json *doc)
{
    return doc_name(doc);
}

/* ------------------------------------------------------------------------ */
/* Cursors and paths                                                         */

static void path_set(char *dst, const char *full)
{
    size_t n = strlen(full);
    if (n < DK_JSON_PATH_MAX) {
        memcpy(dst, full, n + 1);
        return;
    }
    /* Keep the head (where in the document) and the tail (which field). */
    enum { HEAD = 64, TAIL = DK_JSON_PATH_MAX - 1 - HEAD - 3 };
    memcpy(dst, full, HEAD);
    memcpy(dst + HEAD, "...", 3);
    memcpy(dst + HEAD + 3, full + n - TAIL, TAIL);
    dst[DK_JSON_PATH_MAX - 1] = '\0';
}

static int plain_key(const char *key)
{
    if (!key[0]) return 0;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        if (!(isalnum(*p) || *p == '_' || *p == '-' || *p >= 0x80)) return 0;
    }
    return 1;
}

static void child_path(const dk_json_cur *parent, const char *key, size_t index, char *dst)
{
    char full[DK_JSON_PATH_MAX + 96];
    size_t n = strlen(parent->path);
    memcpy(full, parent->path, n);
    char *p = full + n;
    size_t room = sizeof full - n;
    if (!key) {
        snprintf(p, room, "[%zu]", index);
    } else if (plain_key(key) && strlen(key) <= 64) {
        snprintf(p, room, "%s%s", n ? "." : "", key);
    } else {
        /* Quote odd keys so the path stays unambiguous; long ones are cut. */
        char q[72];
        size_t m = 0;
        for (const unsigned char *k = (const unsigned char *)key; *k && m < 64; k++)
            q[m++] = (*k < 0x20 || *k == 0x7f || *k == '"') ? '?' : (char)*k;
        if (key[m]) {
            memcpy(q + m, "...", 3);
            m += 3;
        }
        q[m] = '\0';
        snprintf(p, room, "[\"%s\"]", q);
    }
    path_set(dst, full);
}

static dk_json_type node_type(const cJSON *node)
{
    if (!node) return DK_JSON_MISSING;
    switch (node->type & 0xFF) {
    case cJSON_False:
    case cJSON_True: return DK_JSON_BOOL;
    case cJSON_NULL: return DK_JSON_NULL;
    case cJSON_Number: return DK_JSON_NUMBER;
    case cJSON_String: return DK_JSON_STRING;
    case cJSON_Array: return DK_JSON_ARRAY;
    case cJSON_Object: return DK_JSON_OBJECT;
    default: return DK_JSON_MISSING;
    }
}

static const json_index *node_index(const dk_json *doc, const cJSON *node)
{
    if (!doc || node->valuedouble < 1.0) return NULL;
    size_t i = (size_t)node->valuedouble - 1;
    return i < doc->n_index ? &doc->index[i] : NULL;
}

static const cJSON *nth_child(const dk_json *doc, const cJSON *node, size_t i)
{
    const json_index *ix = node_index(doc, node);
    if (ix) return i < ix->n ? ix->items[i] : NULL;
    const cJSON *k = node->child;
    while (k && i--) k = k->next;
    return k;
}

dk_json_cur dk_json_root(const dk_json *doc)
{
    dk_json_cur c;
    c.node = doc ? doc->root : NULL;
    c.doc = doc;
    c.path[0] = '\0';
    return c;
}

dk_json_type dk_json_type_of(const dk_json_cur *c)
{
    return c ? node_type(c->node) : DK_JSON_MISSING;
}

size_t dk_json_size(const dk_json_cur *c)
{
    if (!c || !is_container(c->node)) return 0;
    const json_index *ix = node_index(c->doc, c->node);
    return ix ? ix->n : child_count(c->node);
}

static int wrong_type(const char *func, const dk_json_cur *c, const char *want)
{
    dk_json_type t = dk_json_type_of(c);
    if (t == DK_JSON_MISSING)
        return dk__error(DK_ENOENT, func, "%s: %s: expected %s, but the field is missing",
                         cur_name(c), cur_path(c), want);
    return dk__error(DK_EINVALIDDATA, func, "%s: %s: expected %s, got %s", cur_name(c),
                     cur_path(c), want, type_name(t));
}

static void missing_cur(const dk_json_cur *c, const char *path, dk_json_cur *out)
{
    dk_json_cur r;
    r.node = NULL;
    r.doc = c ? c->doc : NULL;
    memcpy(r.path, path, DK_JSON_PATH_MAX);
    *out = r;
}

static int field_impl(const char *func, const dk_json_cur *c, const char *key,
                      dk_json_cur *out, int required)
{
    if (!c || !key || !out) return dk__error(DK_EINVAL, func, "NULL argument");
    char path[DK_JSON_PATH_MAX];
    child_path(c, key, 0, path);
    if (dk_json_type_of(c) != DK_JSON_OBJECT) {
        int st = wrong_type(func, c, "object");
        missing_cur(c, path, out);
        return st;
    }
    const cJSON *node = c->node;
    for (const cJSON *k = node->child; k; k = k->next) {
        if (k->string && strcmp(k->string, key) == 0) {
            dk_json_cur r;
            r.node = k;
            r.doc = c->doc;
            memcpy(r.path, path, DK_JSON_PATH_MAX);
            *out = r;
            return DK_OK;
        }
    }
    const dk_json *doc = c->doc;
    missing_cur(c, path, out);
    if (!required) return DK_OK;
    return dk__error(DK_ENOENT, func, "%s: %s: required field is missing", doc_name(doc),
                     path[0] ? path : "(root)");
}

int dk_json_field(const dk_json_cur *c, const char *key, dk_json_cur *out)
{
    return field_impl(__func__, c, key, out, 1);
}

int dk_json_field_opt(const dk_json_cur *c, const char *key, dk_json_cur *out)
{
    return field_impl(__func__, c, key, out, 0);
}

int dk_json_item(const dk_json_cur *c, size_t i, dk_json_cur *out)
{
    if (!c || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    char path[DK_JSON_PATH_MAX];
    child_path(c, NULL, i, path);
    if (dk_json_type_of(c) != DK_JSON_ARRAY) {
        int st = wrong_type(__func__, c, "array");
        missing_cur(c, path, out);
        return st;
    }
    const cJSON *node = nth_child(c->doc, c->node, i);
    if (!node) {
        size_t n = dk_json_size(c);
        missing_cur(c, path, out);
        return dk__error(DK_ERANGE, __func__, "%s: %s: index %zu past the end (%zu items)",
                         cur_name(c), cur_path(c), i, n);
    }
    dk_json_cur r;
    r.node = node;
    r.doc = c->doc;
    memcpy(r.path, path, DK_JSON_PATH_MAX);
    *out = r;
    return DK_OK;
}

int dk_json_member(const dk_json_cur *c, size_t i, const char **key, dk_json_cur *out)
{
    if (!c || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (key) *key = NULL;
    if (dk_json_type_of(c) != DK_JSON_OBJECT) {
        int st = wrong_type(__func__, c, "object");
        char path[DK_JSON_PATH_MAX];
        child_path(c, NULL, i, path);
        missing_cur(c, path, out);
        return st;
    }
    const cJSON *node = nth_child(c->doc, c->node, i);
    if (!node) {
        size_t n = dk_json_size(c);
        char path[DK_JSON_PATH_MAX];
        child_path(c, NULL, i, path);
        missing_cur(c, path, out);
        return dk__error(DK_ERANGE, __func__, "%s: %s: member %zu past the end (%zu members)",
                         cur_name(c), cur_path(c), i, n);
    }
    const char *k = node->string ? node->string : "";
    dk_json_cur r;
    r.node = node;
    r.doc = c->doc;
    child_path(c, k, 0, r.path);
    *out = r;
    if (key) *key = k;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Typed reads                                                               */

int dk_json_number(const dk_json_cur *c, double *out)
{
    if (!c || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (dk_json_type_of(c) != DK_JSON_NUMBER) return wrong_type(__func__, c, "number");
    double v = ((const cJSON *)c->node)->valuedouble;
    if (!isfinite(v))
        return dk__error(DK_ERANGE, __func__, "%s: %s: number does not fit a double",
                         cur_name(c), cur_path(c));
    *out = v;
    return DK_OK;
}

static const json_bigint *find_big(const dk_json *doc, const cJSON *node)
{
    if (!doc || !doc->n_big) return NULL;
    json_bigint key = { node, 0 };
    return bsearch(&key, doc->big, doc->n_big, sizeof *doc->big, cmp_big);
}

int dk_json_int(const dk_json_cur *c, int64_t lo, int64_t hi, int64_t *out)
{
    if (!c || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    double v;
    int st = dk_json_number(c, &v);
    if (st) return st;
    int64_t iv;
    const json_bigint *b = find_big(c->doc, c->node);
    if (b) {
        iv = b->value;
    } else {
        if (v != floor(v))
            return dk__error(DK_ERANGE, __func__, "%s: %s: expected an integer, got %.17g",
                             cur_name(c), cur_path(c), v);
        /* [-2^63, 2^63) is exactly the doubles that convert to int64. */
        if (v < -9223372036854775808.0 || v >= 9223372036854775808.0)
            return dk__error(DK_ERANGE, __func__,
                             "%s: %s: %.17g is outside [%" PRId64 ", %" PRId64 "]",
                             cur_name(c), cur_path(c), v, lo, hi);
        iv = (int64_t)v;
    }
    if (iv < lo || iv > hi)
        return dk__error(DK_ERANGE, __func__,
                         "%s: %s: %" PRId64 " is outside [%" PRId64 ", %" PRId64 "]",
                         cur_name(c), cur_path(c), iv, lo, hi);
    *out = iv;
    return DK_OK;
}

int dk_json_bool(const dk_json_cur *c, int *out)
{
    if (!c || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (dk_json_type_of(c) != DK_JSON_BOOL) return wrong_type(__func__, c, "bool");
    *out = (((const cJSON *)c->node)->type & 0xFF) == cJSON_True;
    return DK_OK;
}

int dk_json_string(const dk_json_cur *c, const char **out)
{
    if (!c || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (dk_json_type_of(c) != DK_JSON_STRING) return wrong_type(__func__, c, "string");
    const char *s = ((const cJSON *)c->node)->valuestring;
    *out = s ? s : "";
    return DK_OK;
}

int dk_json_numbers(const dk_json_cur *c, double *out, size_t n)
{
    if (!c || (!out && n)) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (dk_json_type_of(c) != DK_JSON_ARRAY) {
        char want[64];
        snprintf(want, sizeof want, "array of %zu numbers", n);
        return wrong_type(__func__, c, want);
    }
    size_t have = dk_json_size(c);
    if (have != n)
        return dk__error(DK_EINVALIDDATA, __func__,
                         "%s: %s: expected array of %zu numbers, got %zu items", cur_name(c),
                         cur_path(c), n, have);
    size_t i = 0;
    for (const cJSON *k = ((const cJSON *)c->node)->child; k && i < n; k = k->next, i++) {
        if ((k->type & 0xFF) != cJSON_Number || !isfinite(k->valuedouble)) {
            dk_json_cur item;
            item.node = k;
            item.doc = c->doc;
            child_path(c, NULL, i, item.path);
            if ((k->type & 0xFF) != cJSON_Number) return wrong_type(__func__, &item, "number");
            return dk__error(DK_ERANGE, __func__, "%s: %s: number does not fit a double",
                             cur_name(&item), cur_path(&item));
        }
        out[i] = k->valuedouble;
    }
    return DK_OK;
}

int dk_json_get_number(const dk_json_cur *obj, const char *key, double *out)
{
    dk_json_cur c;
    int st = dk_json_field(obj, key, &c);
    return st ? st : dk_json_number(&c, out);
}

int dk_json_get_int(const dk_json_cur *obj, const char *key, int64_t lo, int64_t hi,
                    int64_t *out)
{
    dk_json_cur c;
    int st = dk_json_field(obj, key, &c);
    return st ? st : dk_json_int(&c, lo, hi, out);
}

int dk_json_get_string(const dk_json_cur *obj, const char *key, const char **out)
{
    dk_json_cur c;
    int st = dk_json_field(obj, key, &c);
    return st ? st : dk_json_string(&c, out);
}

int dk_json_get_numbers(const dk_json_cur *obj, const char *key, double *out, size_t n)
{
    dk_json_cur c;
    int st = dk_json_field(obj, key, &c);
    return st ? st : dk_json_numbers(&c, out, n);
}

/* ------------------------------------------------------------------------ */
/* Streaming writer                                                          */

#define JSONW_MAX_DEPTH 256
#define JSONW_MAX_INDENT 16

struct dk_jsonw {
    char *buf;
    size_t len, cap;
    int indent;
    int status;                          /* first failure, sticky */
    int depth;                           /* open containers */
    int have_key;                        /* a key waits for its value */
    int root_done;                       /* the top-level value is complete */
    int finished;                        /* finish appended its newline */
    unsigned char is_obj[JSONW_MAX_DEPTH];
    unsigned char nonempty[JSONW_MAX_DEPTH];
    char errmsg[DK_ERRMSG_MAX];
};

DK_PRINTF(4, 5)
static void jw_fail(dk_jsonw *w, int status, const char *func, const char *fmt, ...)
{
    if (w->status) return;
    va_list ap;
    va_start(ap, fmt);
    w->status = dk__verror(status, func, fmt, ap);
    va_end(ap);
    dk__keep(status, w->errmsg);
}

static int jw_reserve(dk_jsonw *w, size_t extra)
{
    size_t need;
    if (dk__add_overflow(w->len, extra, &need) || dk__add_overflow(need, 1, &need)) {
        jw_fail(w, DK_ENOMEM, "dk_jsonw", "document larger than memory");
        return 0;
    }
    if (need <= w->cap) return 1;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *p = dk_realloc(w->buf, cap);
    if (!p) {
        jw_fail(w, DK_ENOMEM, "dk_jsonw", "out of memory growing the buffer to %zu bytes", cap);
        return 0;
    }
    w->buf = p;
    w->cap = cap;
    return 1;
}

static void jw_put(dk_jsonw *w, const char *s, size_t n)
{
    if (w->status || !jw_reserve(w, n)) return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void jw_newline(dk_jsonw *w, int level)
{
    if (!w->indent) return;
    size_t n = 1 + (size_t)w->indent * (size_t)level;
    if (w->status || !jw_reserve(w, n)) return;
    w->buf[w->len] = '\n';
    memset(w->buf + w->len + 1, ' ', n - 1);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void jw_string_body(dk_jsonw *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    jw_put(w, "\"", 1);
    const char *run = s;
    for (const unsigned char *p = (const unsigned char *)s;; p++) {
        unsigned char ch = *p;
        if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
        /* Flush the run of bytes that need no escape (UTF-8 included). */
        jw_put(w, run, (size_t)((const char *)p - run));
        if (!ch) break;
        char esc[6] = { '\\', 0, 0, 0, 0, 0 };
        size_t n = 2;
        switch (ch) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            n = 6;
        }
        jw_put(w, esc, n);
        run = (const char *)p + 1;
    }
    jw_put(w, "\"", 1);
}

/* Separator and indentation before a value; 0 when the value must not be
 * written (the writer has failed or the value is misplaced). */
static int jw_before_value(dk_jsonw *w, const char *func)
{
    if (w->status) return 0;
    if (w->depth == 0) {
        if (w->root_done) {
            jw_fail(w, DK_ESTATE, func, "the document already has its top-level value");
            return 0;
        }
        return 1;
    }
    int top = w->depth - 1;
    if (w->is_obj[top]) {
        if (!w->have_key) {
            jw_fail(w, DK_ESTATE, func, "a value inside an object needs a key first");
            return 0;
        }
        w->have_key = 0;
        return 1;
    }
    if (w->nonempty[top]) jw_put(w, ",", 1);
    w->nonempty[top] = 1;
    jw_newline(w, w->depth);
    return !w->status;
}

static void jw_after_value(dk_jsonw *w)
{
    if (w->depth == 0) w->root_done = 1;
}

int dk_jsonw_create(int indent, dk_jsonw **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    if (indent < 0 || indent > JSONW_MAX_INDENT)
        return dk__error(DK_EINVAL, __func__, "indent %d outside [0, %d]", indent,
                         JSONW_MAX_INDENT);
    dk_jsonw *w = dk_calloc(1, sizeof *w);
    if (!w) return dk__error(DK_ENOMEM, __func__, "out of memory");
    w->indent = indent;
    if (!jw_reserve(w, 0)) {
        dk_jsonw_destroy(w);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    w->buf[0] = '\0';
    *out = w;
    return DK_OK;
}

void dk_jsonw_destroy(dk_jsonw *w)
{
    if (!w) return;
    dk_free(w->buf);
    dk_free(w);
}

static void jw_begin(dk_jsonw *w, int is_obj, const char *func)
{
    if (!jw_before_value(w, func)) return;
    if (w->depth >= JSONW_MAX_DEPTH) {
        jw_fail(w, DK_ESTATE, func, "nesting deeper than %d", JSONW_MAX_DEPTH);
        return;
    }
    jw_put(w, is_obj ? "{" : "[", 1);
    w->is_obj[w->depth] = (unsigned char)is_obj;
    w->nonempty[w->depth] = 0;
    w->depth++;
}

static void jw_end(dk_jsonw *w, int is_obj, const char *func)
{
    if (!w || w->status) return;
    const char *what = is_obj ? "object" : "array";
    if (w->depth == 0 || w->is_obj[w->depth - 1] != is_obj) {
        jw_fail(w, DK_ESTATE, func, "no open %s to end", what);
        return;
    }
    if (w->have_key) {
        jw_fail(w, DK_ESTATE, func, "the last key has no value");
        return;
    }
    w->depth--;
    if (w->nonempty[w->depth]) jw_newline(w, w->depth);
    jw_put(w, is_obj ? "}" : "]", 1);
    jw_after_value(w);
}

void dk_jsonw_object_begin(dk_jsonw *w)
{
    if (w) jw_begin(w, 1, __func__);
}

void dk_jsonw_object_end(dk_jsonw *w)
{
    jw_end(w, 1, __func__);
}

void dk_jsonw_array_begin(dk_jsonw *w)
{
    if (w) jw_begin(w, 0, __func__);
}

void dk_jsonw_array_end(dk_jsonw *w)
{
    jw_end(w, 0, __func__);
}

void dk_jsonw_key(dk_jsonw *w, const char *key)
{
    if (!w || w->status) return;
    if (!key) {
        jw_fail(w, DK_EINVAL, __func__, "key is NULL");
        return;
    }
    if (w->depth == 0 || !w->is_obj[w->depth - 1]) {
        jw_fail(w, DK_EINVAL, __func__, "key outside an object");
        return;
    }
    if (w->have_key) {
        jw_fail(w, DK_EINVAL, __func__, "two keys in a row (the previous one has no value)");
        return;
    }
    int top = w->depth - 1;
    if (w->nonempty[top]) jw_put(w, ",", 1);
    w->nonempty[top] = 1;
    jw_newline(w, w->depth);
    jw_string_body(w, key);
    jw_put(w, w->indent ? ": " : ":", w->indent ? 2 : 1);
    w->have_key = 1;
}

void dk_jsonw_string(dk_jsonw *w, const char *s)
{
    if (!w) return;
    if (!s) {
        dk_jsonw_null(w);
        return;
    }
    if (!jw_before_value(w, __func__)) return;
    jw_string_body(w, s);
    jw_after_value(w);
}

/* Shortest of %.15g, %.16g, %.17g that reads back as the same double; %.17g
 * always does. The decimal point is forced to '.' whatever the locale. */
static size_t format_double(double v, char *out, size_t cap)
{
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(out, cap, "%.*g", prec, v);
        if (prec == 17 || strtod(out, NULL) == v) break;
    }
    if (n < 0 || (size_t)n >= cap) return 0;
    size_t j = 0;
    int dot = 0;
    for (int i = 0; i < n; i++) {
        char ch = out[i];
        if ((ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == 'e' || ch == 'E') {
            out[j++] = ch;
        } else if (!dot) {
            out[j++] = '.';
            dot = 1;
        }
    }
    out[j] = '\0';
    return j;
}

void dk_jsonw_number(dk_jsonw *w, double v)
{
    if (!w || w->status) return;
    if (!isfinite(v)) {
        jw_fail(w, DK_EINVAL, __func__, "%s is not a JSON number",
                isnan(v) ? "NaN" : (v > 0 ? "inf" : "-inf"));
        return;
    }
    if (!jw_before_value(w, __func__)) return;
    char tmp[40];
    size_t n = format_double(v, tmp, sizeof tmp);
    if (!n) {
        jw_fail(w, DK_EINTERNAL, __func__, "cannot format %a", v);
        return;
    }
    jw_put(w, tmp, n);
    jw_after_value(w);
}

void dk_jsonw_int(dk_jsonw *w, int64_t v)
{
    if (!w || !jw_before_value(w, __func__)) return;
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
    jw_put(w, tmp, (size_t)n);
    jw_after_value(w);
}

void dk_jsonw_bool(dk_jsonw *w, int v)
{
    if (!w || !jw_before_value(w, __func__)) return;
    if (v)
        jw_put(w, "true", 4);
    else
        jw_put(w, "false", 5);
    jw_after_value(w);
}

void dk_jsonw_null(dk_jsonw *w)
{
    if (!w || !jw_before_value(w, __func__)) return;
    jw_put(w, "null", 4);
    jw_after_value(w);
}

/* Re-reports a sticky failure from an earlier call under this function's
 * name, unless it already arose here. */
static int jw_report(const dk_jsonw *w, const char *func)
{
    size_t n = strlen(func);
    if (strncmp(w->errmsg, func, n) == 0 && strncmp(w->errmsg + n, "(): ", 4) == 0)
        return dk__error(w->status, func, "%s", w->errmsg + n + 4);
    return dk__error(w->status, func, "%s", w->errmsg);
}

int dk_jsonw_finish(dk_jsonw *w, const char **text, size_t *len)
{
    if (text) *text = NULL;
    if (len) *len = 0;
    if (!w) return dk__error(DK_EINVAL, __func__, "writer is NULL");
    if (!w->status) {
        if (w->have_key)
            jw_fail(w, DK_ESTATE, __func__, "the last key has no value");
        else if (w->depth)
            jw_fail(w, DK_ESTATE, __func__, "%d unclosed %s", w->depth,
                    w->depth == 1 ? "container" : "containers");
        else if (!w->root_done)
            jw_fail(w, DK_ESTATE, __func__, "the document is empty");
    }
    if (!w->status && !w->finished) {
        if (w->indent) jw_put(w, "\n", 1);
        w->finished = 1;
    }
    if (w->status) return jw_report(w, __func__);
    if (text) *text = w->buf;
    if (len) *len = w->len;
    return DK_OK;
}

int dk_jsonw_save(dk_jsonw *w, const char *path)
{
    const char *text;
    size_t len;
    int st = dk_jsonw_finish(w, &text, &len);
    if (st) return st;
    if (!path) return dk__error(DK_EINVAL, __func__, "path is NULL");
    return dk_file_write(path, text, len);
}
