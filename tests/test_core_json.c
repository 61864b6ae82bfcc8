/* Tests for the JSON reader (cursors, paths in messages, strictness, exact
 * integers) and the streaming writer (escaping, shortest numbers, misuse). */
#include <float.h>
#include <limits.h>

#include "dk_test.h"

static dk_json *parse_str(const char *text, const char *name)
{
    dk_json *doc = NULL;
    if (dk_json_parse(text, strlen(text), name, &doc) != DK_OK) return NULL;
    return doc;
}

static const char scene_json[] =
    "{\n"
    "  \"name\": \"boston-seaport\",\n"
    "  \"frames\": 120,\n"
    "  \"dt\": 0.05,\n"
    "  \"night\": false,\n"
    "  \"weather\": null,\n"
    "  \"actors\": [\n"
    "    {\"id\": 1, \"kind\": \"car\", \"size\": [4.5, 1.9, 1.6]},\n"
    "    {\"id\": 2, \"kind\": \"ped\", \"size\": [0.6, 0.6]},\n"
    "    {\"id\": \"three\", \"kind\": 7, \"size\": [1, \"x\", 2]}\n"
    "  ]\n"
    "}\n";

static void test_json_parse_typed(void)
{
    int64_t live0 = dk_alloc_live();
    dk_json *doc = parse_str(scene_json, "scene.json");
    DK_CHECK(doc != NULL);
    DK_CHECK_STR(dk_json_name(doc), "scene.json");
    dk_json_cur root = dk_json_root(doc);
    DK_CHECK_EQ_INT(dk_json_type_of(&root), DK_JSON_OBJECT);
    DK_CHECK_EQ_INT(dk_json_size(&root), 6);
    DK_CHECK_STR(root.path, "");

    const char *s = NULL;
    DK_CHECK_OK(dk_json_get_string(&root, "name", &s));
    DK_CHECK_STR(s, "boston-seaport");
    int64_t frames = 0;
    DK_CHECK_OK(dk_json_get_int(&root, "frames", 0, 1000, &frames));
    DK_CHECK_EQ_INT(frames, 120);
    double dt = 0;
    DK_CHECK_OK(dk_json_get_number(&root, "dt", &dt));
    DK_CHECK(dt == 0.05);

    dk_json_cur c;
    int b = -1;
    DK_CHECK_OK(dk_json_field(&root, "night", &c));
    DK_CHECK_OK(dk_json_bool(&c, &b));
    DK_CHECK_EQ_INT(b, 0);
    DK_CHECK_OK(dk_json_field(&root, "weather", &c));
    DK_CHECK_EQ_INT(dk_json_type_of(&c), DK_JSON_NULL);
    DK_CHECK_STR(c.path, "weather");

    dk_json_cur actors, a0, size;
    DK_CHECK_OK(dk_json_field(&root, "actors", &actors));
    DK_CHECK_EQ_INT(dk_json_type_of(&actors), DK_JSON_ARRAY);
    DK_CHECK_EQ_INT(dk_json_size(&actors), 3);
    DK_CHECK_OK(dk_json_item(&actors, 0, &a0));
    DK_CHECK_STR(a0.path, "actors[0]");
    DK_CHECK_OK(dk_json_field(&a0, "size", &size));
    DK_CHECK_STR(size.path, "actors[0].size");
    double v[3];
    DK_CHECK_OK(dk_json_numbers(&size, v, 3));
    DK_CHECK(v[0] == 4.5 && v[1] == 1.9 && v[2] == 1.6);
    DK_CHECK_OK(dk_json_get_numbers(&a0, "size", v, 3));

    /* Members come in document order, with their keys and paths. */
    static const char *keys[] = { "name", "frames", "dt", "night", "weather", "actors" };
    for (size_t i = 0; i < 6; i++) {
        const char *k = NULL;
        DK_CHECK_OK(dk_json_member(&root, i, &k, &c));
        DK_CHECK_STR(k, keys[i]);
        DK_CHECK_STR(c.path, keys[i]);
    }
    DK_CHECK_STATUS(dk_json_member(&root, 6, NULL, &c), DK_ERANGE);

    /* The output cursor may be the input cursor. */
    c = root;
    DK_CHECK_OK(dk_json_field(&c, "actors", &c));
    DK_CHECK_OK(dk_json_item(&c, 2, &c));
    DK_CHECK_OK(dk_json_field(&c, "kind", &c));
    DK_CHECK_STR(c.path, "actors[2].kind");

    dk_json_free(doc);
    dk_json_free(NULL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_json_error_paths(void)
{
    int64_t live0 = dk_alloc_live();
    dk_json *doc = parse_str(scene_json, "scene.json");
    DK_CHECK(doc != NULL);
    dk_json_cur root = dk_json_root(doc), actors, a;
    DK_CHECK_OK(dk_json_field(&root, "actors", &actors));
    double v[3];

    DK_CHECK_OK(dk_json_item(&actors, 1, &a));
    DK_CHECK_STATUS(dk_json_get_numbers(&a, "size", v, 3), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "dk_json_numbers(): scene.json: actors[1].size: "
                                   "expected array of 3 numbers, got 2 items");

    DK_CHECK_OK(dk_json_item(&actors, 2, &a));
    DK_CHECK_STATUS(dk_json_get_numbers(&a, "size", v, 3), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "scene.json: actors[2].size[1]: expected number, got string");

    int64_t id;
    DK_CHECK_STATUS(dk_json_get_int(&a, "id", 0, 100, &id), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "scene.json: actors[2].id: expected number, got string");
    const char *s;
    DK_CHECK_STATUS(dk_json_get_string(&a, "kind", &s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "actors[2].kind: expected string, got number");
    int b;
    DK_CHECK_STATUS(dk_json_bool(&actors, &b), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "scene.json: actors: expected bool, got array");
    DK_CHECK_STATUS(dk_json_get_number(&actors, "x", v), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "actors: expected object, got array");
    DK_CHECK_STATUS(dk_json_item(&root, 0, &a), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "scene.json: (root): expected array, got object");
    DK_CHECK_STATUS(dk_json_item(&actors, 3, &a), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "scene.json: actors: index 3 past the end (3 items)");
    DK_CHECK_STATUS(dk_json_member(&actors, 0, &s, &a), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_json_field(NULL, "x", &a), DK_EINVAL);
    DK_CHECK_STATUS(dk_json_field(&root, NULL, &a), DK_EINVAL);

    /* A document without a name reads "<json>". */
    dk_json *anon = parse_str("[true]", NULL);
    DK_CHECK(anon != NULL);
    dk_json_cur r = dk_json_root(anon);
    DK_CHECK_STATUS(dk_json_string(&r, &s), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "<json>: (root): expected string, got array");
    dk_json_free(anon);

    dk_json_free(doc);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_json_missing_and_optional(void)
{
    int64_t live0 = dk_alloc_live();
    dk_json *doc = parse_str(scene_json, "scene.json");
    DK_CHECK(doc != NULL);
    dk_json_cur root = dk_json_root(doc), c, a;
    DK_CHECK_OK(dk_json_field(&root, "actors", &c));
    DK_CHECK_OK(dk_json_item(&c, 0, &a));

    DK_CHECK_STATUS(dk_json_field(&a, "colour", &c), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "scene.json: actors[0].colour: required field is missing");
    DK_CHECK_EQ_INT(dk_json_type_of(&c), DK_JSON_MISSING);
    double v;
    DK_CHECK_STATUS(dk_json_get_number(&root, "speed", &v), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "speed");

    DK_CHECK_OK(dk_json_field_opt(&a, "colour", &c));
    DK_CHECK(c.node == NULL);
    DK_CHECK_EQ_INT(dk_json_type_of(&c), DK_JSON_MISSING);
    DK_CHECK_EQ_INT(dk_json_type_of(NULL), DK_JSON_MISSING);
    DK_CHECK_EQ_INT(dk_json_size(&c), 0);
    /* Reading a missing optional field says so. */
    DK_CHECK_STATUS(dk_json_number(&c, &v), DK_ENOENT);
    DK_CHECK_CONTAINS(dk_errmsg(), "actors[0].colour: expected number, but the field is missing");

    DK_CHECK_OK(dk_json_field_opt(&a, "kind", &c));
    DK_CHECK_EQ_INT(dk_json_type_of(&c), DK_JSON_STRING);
    /* field_opt still insists on an object. */
    DK_CHECK_STATUS(dk_json_field_opt(&c, "x", &c), DK_EINVALIDDATA);

    dk_json_free(doc);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_json_syntax_error_position(void)
{
    int64_t live0 = dk_alloc_live();
    const char *text = "{\n  \"a\": 1,\n  \"b\": [1, 2,, 3]\n}\n";
    dk_json *doc = (dk_json *)1;
    DK_CHECK_STATUS(dk_json_parse(text, strlen(text), "scene.json", &doc), DK_EINVALIDDATA);
    DK_CHECK(doc == NULL);
    DK_CHECK_CONTAINS(dk_errmsg(), "dk_json_parse(): scene.json:3:14: syntax error near ', 3]'");

    /* Unterminated document: the position is inside it, the excerpt printable. */
    text = "{\"a\": [1, 2\n";
    DK_CHECK_STATUS(dk_json_parse(text, strlen(text), "t.json", &doc), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "t.json:");
    DK_CHECK_CONTAINS(dk_errmsg(), "syntax error");

    /* Control bytes in the excerpt are shown as '?'. */
    static const char bad[] = "[1, \x01\x02zz]";
    DK_CHECK_STATUS(dk_json_parse(bad, sizeof bad - 1, "c.json", &doc), DK_EINVALIDDATA);
    DK_CHECK(strchr(dk_errmsg(), '\x01') == NULL);

    DK_CHECK_STATUS(dk_json_parse("", 0, "e.json", &doc), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "e.json:1:1: empty input");
    DK_CHECK_STATUS(dk_json_parse(" \n ", 3, "w.json", &doc), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_json_parse(NULL, 0, NULL, &doc), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_json_parse(NULL, 5, NULL, &doc), DK_EINVAL);
    DK_CHECK_STATUS(dk_json_parse("1", 1, NULL, NULL), DK_EINVAL);

    /* The length is honoured: no terminator needed, bytes past it ignored. */
    DK_CHECK_OK(dk_json_parse("[1]garbage", 3, NULL, &doc));
    dk_json_free(doc);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_json_trailing_garbage(void)
{
    int64_t live0 = dk_alloc_live();
    dk_json *doc = NULL;
    const char *text = "{\"a\": 1}\n  x";
    DK_CHECK_STATUS(dk_json_parse(text, strlen(text), "g.json", &doc), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "g.json:2:3: trailing characters after the value near 'x'");
    DK_CHECK_STATUS(dk_json_parse("1 2", 3, NULL, &doc), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_json_parse("{}{}", 4, NULL, &doc), DK_EINVALIDDATA);
    static const char nul[] = "[1]\0";
    DK_CHECK_STATUS(dk_json_parse(nul, sizeof nul - 1, NULL, &doc), DK_EINVALIDDATA);

    DK_CHECK_OK(dk_json_parse(" {} \r\n\t ", 8, NULL, &doc));
    dk_json_free(doc);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* What cJSON alone would accept but JSON does not. */
static void test_json_strict(void)
{
    int64_t live0 = dk_alloc_live();
    static const char *bad[] = {
        "01", "[1.]", "-.5", "[-01]", "1.e5", "[1e]", "[1,]", "{\"a\":1,}", "[+1]",
        "\"tab\there\"", "\"a\\u0000b\"", "\x01 1", "[1,\x1f 2]", "{'a': 1}", "[NaN]",
        "[Infinity]", "[1 2]", "\"\\x\"", "[\"\\ud800\"]", "nul", "[true false]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dk_json *doc = NULL;
        int st = dk_json_parse(bad[i], strlen(bad[i]), "s.json", &doc);
        if (st != DK_EINVALIDDATA) {
            dk_json_free(doc);
            DK_FAIL_("accepted %s (status %d)", bad[i], st);
        }
        DK_CHECK_CONTAINS(dk_errmsg(), "s.json:1:");
    }
    static const char *good[] = {
        "0", "-0", "0.5", "-1.25e-7", "1E+10", "[]", "{}", "\"\\u00e9\\ud83d\\ude00\"",
        "\"caf\xc3\xa9\"", "\xef\xbb\xbf[1]", "[\"\\\\u0000\"]", "  [1, [2, [3]]]  ",
        "{\"a\":{\"b\":[null,true,false]}}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        dk_json *doc = NULL;
        int st = dk_json_parse(good[i], strlen(good[i]), "s.json", &doc);
        if (st != DK_OK) DK_FAIL_("rejected %s: %s", good[i], dk_errmsg());
        dk_json_free(doc);
    }
    /* Long numbers are fine (cJSON 1.7.15 copies them whole); 400 digits
     * overflow a double, which the typed read reports. */
    char longnum[420];
    longnum[0] = '[';
    memset(longnum + 1, '1', 400);
    memcpy(longnum + 401, ".5]", 4);
    dk_json *d = parse_str(longnum, "long.json");
    DK_CHECK(d != NULL);
    dk_json_cur lc = dk_json_root(d);
    double v[1];
    DK_CHECK_STATUS(dk_json_numbers(&lc, v, 1), DK_ERANGE);
    dk_json_free(d);
    memcpy(longnum + 81, ".5]", 4);
    d = parse_str(longnum, "long.json");
    DK_CHECK(d != NULL);
    lc = dk_json_root(d);
    DK_CHECK_OK(dk_json_numbers(&lc, v, 1));
    DK_CHECK(v[0] == strtod(longnum + 1, NULL));
    dk_json_free(d);

    /* The escaped backslash followed by "u0000" is text, not a NUL. */
    dk_json *doc = parse_str("[\"\\\\u0000\"]", NULL);
    DK_CHECK(doc != NULL);
    dk_json_cur r = dk_json_root(doc), c;
    const char *s;
    DK_CHECK_OK(dk_json_item(&r, 0, &c));
    DK_CHECK_OK(dk_json_string(&c, &s));
    DK_CHECK_STR(s, "\\u0000");
    dk_json_free(doc);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_json_nonfinite(void)
{
    int64_t live0 = dk_alloc_live();
    dk_json *doc = parse_str("{\"big\": 1e999, \"neg\": -1e400, \"v\": [1, 1e999, 2], "
                             "\"tiny\": 1e-400}", "n.json");
    DK_CHECK(doc != NULL);
    dk_json_cur root = dk_json_root(doc);
    double v[3];
    int64_t i;
    DK_CHECK_STATUS(dk_json_get_number(&root, "big", v), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "n.json: big: number does not fit a double");
    DK_CHECK_STATUS(dk_json_get_number(&root, "neg", v), DK_ERANGE);
    DK_CHECK_STATUS(dk_json_get_int(&root, "big", INT64_MIN, INT64_MAX, &i), DK_ERANGE);
    DK_CHECK_STATUS(dk_json_get_numbers(&root, "v", v, 3), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "n.json: v[1]: number does not fit a double");
    DK_CHECK_OK(dk_json_get_number(&root, "tiny", v));
    DK_CHECK(v[0] == 0.0);
    dk_json_free(doc);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_json_int_range(void)
{
    int64_t live0 = dk_alloc_live();
    dk_json *doc = parse_str("{\"five\": 5, \"half\": 1.5, \"neg\": -3, \"e\": 2e3, "
                             "\"str\": \"5\", \"huge\": 1e300, "
                             "\"id\": 123456789012345678, \"max\": 9223372036854775807, "
                             "\"min\": -9223372036854775808, \"over\": 9223372036854775808, "
                             "\"frac_big\": 12345678901234567.5}", "i.json");
    DK_CHECK(doc != NULL);
    dk_json_cur root = dk_json_root(doc);
    int64_t v = 0;
    DK_CHECK_OK(dk_json_get_int(&root, "five", 0, 10, &v));
    DK_CHECK_EQ_INT(v, 5);
    DK_CHECK_OK(dk_json_get_int(&root, "five", 5, 5, &v));
    DK_CHECK_STATUS(dk_json_get_int(&root, "five", 6, 10, &v), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "i.json: five: 5 is outside [6, 10]");
    DK_CHECK_STATUS(dk_json_get_int(&root, "neg", 0, 10, &v), DK_ERANGE);
    DK_CHECK_STATUS(dk_json_get_int(&root, "half", 0, 10, &v), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "half: expected an integer, got 1.5");
    DK_CHECK_OK(dk_json_get_int(&root, "e", 0, 10000, &v));
    DK_CHECK_EQ_INT(v, 2000);
    DK_CHECK_STATUS(dk_json_get_int(&root, "str", 0, 10, &v), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_json_get_int(&root, "huge", INT64_MIN, INT64_MAX, &v), DK_ERANGE);

    /* Integers beyond 2^53 are exact, not rounded through a double. */
    DK_CHECK_OK(dk_json_get_int(&root, "id", INT64_MIN, INT64_MAX, &v));
    DK_CHECK_EQ_INT(v, 123456789012345678LL);
    DK_CHECK_OK(dk_json_get_int(&root, "max", INT64_MIN, INT64_MAX, &v));
    DK_CHECK_EQ_INT(v, INT64_MAX);
    DK_CHECK_OK(dk_json_get_int(&root, "min", INT64_MIN, INT64_MAX, &v));
    DK_CHECK(v == INT64_MIN);
    DK_CHECK_STATUS(dk_json_get_int(&root, "max", 0, INT64_MAX - 1, &v), DK_ERANGE);
    DK_CHECK_STATUS(dk_json_get_int(&root, "over", INT64_MIN, INT64_MAX, &v), DK_ERANGE);
    /* A fraction too small for a double to hold reads as the integer it is. */
    DK_CHECK_OK(dk_json_get_int(&root, "frac_big", INT64_MIN, INT64_MAX, &v));
    double d;
    DK_CHECK_OK(dk_json_get_number(&root, "id", &d));
    DK_CHECK(d == 123456789012345678.0);
    dk_json_free(doc);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_json_duplicates_and_odd_keys(void)
{
    int64_t live0 = dk_alloc_live();
    dk_json *doc = parse_str("{\"a\": 1, \"a\": 2, \"x.y\": {\"\": [true]}}", "k.json");
    DK_CHECK(doc != NULL);
    dk_json_cur root = dk_json_root(doc), c;
    int64_t v;
    DK_CHECK_OK(dk_json_get_int(&root, "a", 0, 9, &v));
    DK_CHECK_EQ_INT(v, 1);   /* the first of duplicate keys wins */
    DK_CHECK_EQ_INT(dk_json_size(&root), 3);
    DK_CHECK_OK(dk_json_field(&root, "x.y", &c));
    DK_CHECK_OK(dk_json_field(&c, "", &c));
    DK_CHECK_OK(dk_json_item(&c, 0, &c));
    DK_CHECK_STR(c.path, "[\"x.y\"][\"\"][0]");
    double d;
    DK_CHECK_STATUS(dk_json_number(&c, &d), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "k.json: [\"x.y\"][\"\"][0]: expected number, got bool");
    dk_json_free(doc);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_json_large_containers(void)
{
    int64_t live0 = dk_alloc_live();
    enum { N = 5000 };
    dk_jsonw *w = NULL;
    DK_CHECK_OK(dk_jsonw_create(0, &w));
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "rows");
    dk_jsonw_array_begin(w);
    for (int i = 0; i < N; i++) {
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, "token");
        char tok[32];
        snprintf(tok, sizeof tok, "t%05d", i);
        dk_jsonw_string(w, tok);
        dk_jsonw_key(w, "timestamp");
        dk_jsonw_int(w, 1532402927647951LL + i);
        dk_jsonw_object_end(w);
    }
    dk_jsonw_array_end(w);
    dk_jsonw_key(w, "map");
    dk_jsonw_object_begin(w);
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        dk_jsonw_key(w, k);
        dk_jsonw_int(w, i);
    }
    dk_jsonw_object_end(w);
    dk_jsonw_object_end(w);
    const char *text = NULL;
    size_t len = 0;
    DK_CHECK_OK(dk_jsonw_finish(w, &text, &len));
    dk_json *doc = NULL;
    DK_CHECK_OK(dk_json_parse(text, len, "rows.json", &doc));
    dk_jsonw_destroy(w);

    dk_json_cur root = dk_json_root(doc), rows, row, map, m;
    DK_CHECK_OK(dk_json_field(&root, "rows", &rows));
    DK_CHECK_EQ_INT(dk_json_size(&rows), N);
    for (size_t i = 0; i < N; i++) {
        int64_t ts;
        const char *tok;
        DK_CHECK_OK(dk_json_item(&rows, i, &row));
        DK_CHECK_OK(dk_json_get_int(&row, "timestamp", 0, INT64_MAX, &ts));
        DK_CHECK_EQ_INT(ts, 1532402927647951LL + (int64_t)i);
        DK_CHECK_OK(dk_json_get_string(&row, "token", &tok));
        DK_CHECK_EQ_INT(atoi(tok + 1), i);
    }
    DK_CHECK_STATUS(dk_json_item(&rows, N, &row), DK_ERANGE);
    DK_CHECK_OK(dk_json_field(&root, "map", &map));
    DK_CHECK_EQ_INT(dk_json_size(&map), 100);
    for (size_t i = 0; i < 100; i++) {
        const char *k;
        int64_t v;
        DK_CHECK_OK(dk_json_member(&map, i, &k, &m));
        DK_CHECK_EQ_INT(atoi(k + 1), i);
        DK_CHECK_OK(dk_json_int(&m, 0, 99, &v));
        DK_CHECK_EQ_INT(v, i);
        DK_CHECK(strncmp(m.path, "map.", 4) == 0);
        DK_CHECK_STR(m.path + 4, k);
    }
    dk_json_free(doc);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_json_long_paths_and_depth(void)
{
    int64_t live0 = dk_alloc_live();
    /* 100 nested objects: the path is cut in the middle, head and tail kept. */
    enum { D = 100 };
    char *text = malloc(D * 16 + 16);
    DK_CHECK(text != NULL);
    size_t n = 0;
    for (int i = 0; i < D; i++) n += (size_t)sprintf(text + n, "{\"level\":");
    n += (size_t)sprintf(text + n, "\"deep\"");
    for (int i = 0; i < D; i++) text[n++] = '}';
    dk_json *doc = NULL;
    int st = dk_json_parse(text, n, "deep.json", &doc);
    free(text);
    DK_CHECK_OK(st);
    dk_json_cur c = dk_json_root(doc);
    for (int i = 0; i < D; i++) DK_CHECK_OK(dk_json_field(&c, "level", &c));
    DK_CHECK(strlen(c.path) < DK_JSON_PATH_MAX);
    DK_CHECK(strncmp(c.path, "level.level.", 12) == 0);
    DK_CHECK_CONTAINS(c.path, "...");
    size_t pl = strlen(c.path);
    DK_CHECK(pl > 12 && strcmp(c.path + pl - 12, ".level.level") == 0);
    double v;
    DK_CHECK_STATUS(dk_json_number(&c, &v), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "deep.json: level.level.");
    dk_json_free(doc);

    /* cJSON's nesting limit (1000) is a clean error, not a stack overflow. */
    enum { DEEP = 5000 };
    text = malloc(2 * DEEP);
    DK_CHECK(text != NULL);
    memset(text, '[', DEEP);
    memset(text + DEEP, ']', DEEP);
    st = dk_json_parse(text, 2 * DEEP, "nest.json", &doc);
    DK_CHECK_STATUS(st, DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "nest.json:1:1001: nesting deeper than 1000 levels");
    DK_CHECK_OK(dk_json_parse(text + DEEP - 500, 1000, "nest.json", &doc));
    free(text);
    dk_json_free(doc);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */

static const char *write_compact(dk_jsonw *w)
{
    const char *text = NULL;
    size_t len = 0;
    if (dk_jsonw_finish(w, &text, &len) != DK_OK) return NULL;
    if (strlen(text) != len) return NULL;
    return text;
}

static void test_jsonw_compact_and_pretty(void)
{
    int64_t live0 = dk_alloc_live();
    for (int indent = 0; indent <= 2; indent += 2) {
        dk_jsonw *w = NULL;
        DK_CHECK_OK(dk_jsonw_create(indent, &w));
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, "a");
        dk_jsonw_array_begin(w);
        dk_jsonw_int(w, 1);
        dk_jsonw_number(w, 2.5);
        dk_jsonw_string(w, "x");
        dk_jsonw_array_end(w);
        dk_jsonw_key(w, "b");
        dk_jsonw_null(w);
        dk_jsonw_key(w, "c");
        dk_jsonw_bool(w, 1);
        dk_jsonw_key(w, "d");
        dk_jsonw_object_begin(w);
        dk_jsonw_object_end(w);
        dk_jsonw_key(w, "e");
        dk_jsonw_array_begin(w);
        dk_jsonw_array_end(w);
        dk_jsonw_key(w, "f");
        dk_jsonw_string(w, NULL);
        dk_jsonw_object_end(w);
        const char *text = write_compact(w);
        if (indent == 0)
            DK_CHECK_STR(text, "{\"a\":[1,2.5,\"x\"],\"b\":null,\"c\":true,\"d\":{},\"e\":[],"
                               "\"f\":null}");
        else
            DK_CHECK_STR(text, "{\n  \"a\": [\n    1,\n    2.5,\n    \"x\"\n  ],\n"
                               "  \"b\": null,\n  \"c\": true,\n  \"d\": {},\n  \"e\": [],\n"
                               "  \"f\": null\n}\n");
        /* finish is idempotent. */
        DK_CHECK_STR(write_compact(w), text);
        dk_jsonw_destroy(w);
    }
    dk_jsonw_destroy(NULL);
    dk_jsonw *w = NULL;
    DK_CHECK_STATUS(dk_jsonw_create(-1, &w), DK_EINVAL);
    DK_CHECK_STATUS(dk_jsonw_create(0, NULL), DK_EINVAL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_jsonw_numbers_shortest(void)
{
    int64_t live0 = dk_alloc_live();
    static const struct { double v; const char *text; } cases[] = {
        { 0.1, "0.1" }, { 1e-300, "1e-300" }, { -0.0, "-0" }, { 100, "100" },
        { 1.0 / 3.0, "0.3333333333333333" }, { 2.0 / 3.0, "0.6666666666666666" },
        { 0.30000000000000004, "0.30000000000000004" }, { 5e-324, "4.94065645841247e-324" },
        { 1.7976931348623157e308, "1.7976931348623157e+308" }, { 1e21, "1e+21" },
        { 123456.789, "123456.789" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dk_jsonw *w = NULL;
        DK_CHECK_OK(dk_jsonw_create(0, &w));
        dk_jsonw_number(w, cases[i].v);
        const char *text = write_compact(w);
        DK_CHECK_STR(text, cases[i].text);
        DK_CHECK(strtod(text, NULL) == cases[i].v);
        dk_jsonw_destroy(w);
    }
    static const int64_t ints[] = { 0, -1, 123456789012345678LL, INT64_MAX, INT64_MIN };
    static const char *int_text[] = { "0", "-1", "123456789012345678", "9223372036854775807",
                                      "-9223372036854775808" };
    for (size_t i = 0; i < 5; i++) {
        dk_jsonw *w = NULL;
        DK_CHECK_OK(dk_jsonw_create(0, &w));
        dk_jsonw_int(w, ints[i]);
        DK_CHECK_STR(write_compact(w), int_text[i]);
        dk_jsonw_destroy(w);
    }
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static const char *awkward[] = {
    "", "plain", "quote \" and backslash \\ and slash /", "\n\r\t\b\f",
    "\x01\x02\x1f\x7f", "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x9a\x97",
    "</script>", "\\u0041 is not an escape here", "{\"json\": [\"inside\"]}",
};

static const double awkward_num[] = {
    0.1, 1e-300, -0.0, 0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
    -1.7976931348623157e308, 1.0 / 3.0, 9007199254740993.0, 1e15, 1e16, 1e17, 123.456,
    -7.25e-5, 3.141592653589793,
};

static void write_awkward(dk_jsonw *w)
{
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "strings");
    dk_jsonw_array_begin(w);
    for (size_t i = 0; i < sizeof awkward / sizeof awkward[0]; i++) dk_jsonw_string(w, awkward[i]);
    dk_jsonw_array_end(w);
    dk_jsonw_key(w, "numbers");
    dk_jsonw_array_begin(w);
    for (size_t i = 0; i < sizeof awkward_num / sizeof awkward_num[0]; i++)
        dk_jsonw_number(w, awkward_num[i]);
    dk_jsonw_array_end(w);
    dk_jsonw_key(w, "ints");
    dk_jsonw_array_begin(w);
    dk_jsonw_int(w, 123456789012345678LL);
    dk_jsonw_int(w, INT64_MIN);
    dk_jsonw_int(w, INT64_MAX);
    dk_jsonw_int(w, -42);
    dk_jsonw_array_end(w);
    /* Keys need escaping too. */
    dk_jsonw_key(w, "key \"with\" \\ and \n");
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "nested");
    dk_jsonw_array_begin(w);
    dk_jsonw_array_begin(w);
    dk_jsonw_bool(w, 0);
    dk_jsonw_null(w);
    dk_jsonw_array_end(w);
    dk_jsonw_array_end(w);
    dk_jsonw_object_end(w);
    dk_jsonw_object_end(w);
}

static void test_jsonw_round_trip(void)
{
    int64_t live0 = dk_alloc_live();
    for (int indent = 0; indent <= 4; indent += 4) {
        dk_jsonw *w = NULL;
        DK_CHECK_OK(dk_jsonw_create(indent, &w));
        write_awkward(w);
        const char *text = NULL;
        size_t len = 0;
        DK_CHECK_OK(dk_jsonw_finish(w, &text, &len));
        dk_json *doc = NULL;
        int st = dk_json_parse(text, len, "rt.json", &doc);
        dk_jsonw_destroy(w);
        DK_CHECK_OK(st);

        dk_json_cur root = dk_json_root(doc), arr, c;
        DK_CHECK_OK(dk_json_field(&root, "strings", &arr));
        DK_CHECK_EQ_INT(dk_json_size(&arr), sizeof awkward / sizeof awkward[0]);
        for (size_t i = 0; i < sizeof awkward / sizeof awkward[0]; i++) {
            const char *s;
            DK_CHECK_OK(dk_json_item(&arr, i, &c));
            DK_CHECK_OK(dk_json_string(&c, &s));
            DK_CHECK_STR(s, awkward[i]);
        }
        DK_CHECK_OK(dk_json_field(&root, "numbers", &arr));
        size_t nn = sizeof awkward_num / sizeof awkward_num[0];
        double got[sizeof awkward_num / sizeof awkward_num[0]];
        DK_CHECK_OK(dk_json_numbers(&arr, got, nn));
        for (size_t i = 0; i < nn; i++) {
            if (memcmp(&got[i], &awkward_num[i], sizeof got[i]) != 0)
                DK_FAIL_("number %zu: wrote %.17g, read %.17g", i, awkward_num[i], got[i]);
        }
        DK_CHECK_OK(dk_json_field(&root, "ints", &arr));
        static const int64_t want[] = { 123456789012345678LL, INT64_MIN, INT64_MAX, -42 };
        for (size_t i = 0; i < 4; i++) {
            int64_t v;
            DK_CHECK_OK(dk_json_item(&arr, i, &c));
            DK_CHECK_OK(dk_json_int(&c, INT64_MIN, INT64_MAX, &v));
            DK_CHECK(v == want[i]);
        }
        DK_CHECK_OK(dk_json_field(&root, "key \"with\" \\ and \n", &c));
        DK_CHECK_OK(dk_json_field(&c, "nested", &c));
        DK_CHECK_OK(dk_json_item(&c, 0, &c));
        DK_CHECK_EQ_INT(dk_json_size(&c), 2);
        dk_json_free(doc);
    }
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

typedef void (*writer_script)(dk_jsonw *w);

static void ws_unbalanced(dk_jsonw *w) { dk_jsonw_array_begin(w); dk_jsonw_object_begin(w); }
static void ws_key_outside(dk_jsonw *w) { dk_jsonw_key(w, "a"); }
static void ws_key_in_array(dk_jsonw *w) { dk_jsonw_array_begin(w); dk_jsonw_key(w, "a"); }
static void ws_nan(dk_jsonw *w)
{
    dk_jsonw_array_begin(w);
    dk_jsonw_number(w, NAN);
    dk_jsonw_array_end(w);
}
static void ws_inf(dk_jsonw *w) { dk_jsonw_number(w, -INFINITY); }
static void ws_value_without_key(dk_jsonw *w)
{
    dk_jsonw_object_begin(w);
    dk_jsonw_int(w, 1);
    dk_jsonw_object_end(w);
}
static void ws_key_without_value(dk_jsonw *w) { dk_jsonw_object_begin(w); dk_jsonw_key(w, "a"); }
static void ws_key_then_end(dk_jsonw *w)
{
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "a");
    dk_jsonw_object_end(w);
}
static void ws_two_keys(dk_jsonw *w)
{
    dk_jsonw_object_begin(w);
    dk_jsonw_key(w, "a");
    dk_jsonw_key(w, "b");
}
static void ws_mismatched_end(dk_jsonw *w) { dk_jsonw_array_begin(w); dk_jsonw_object_end(w); }
static void ws_extra_end(dk_jsonw *w) { dk_jsonw_int(w, 1); dk_jsonw_array_end(w); }
static void ws_two_roots(dk_jsonw *w) { dk_jsonw_int(w, 1); dk_jsonw_int(w, 2); }
static void ws_empty(dk_jsonw *w) { (void)w; }
static void ws_too_deep(dk_jsonw *w)
{
    for (int i = 0; i < 300; i++) dk_jsonw_array_begin(w);
    for (int i = 0; i < 300; i++) dk_jsonw_array_end(w);
}
static void ws_null_key(dk_jsonw *w) { dk_jsonw_object_begin(w); dk_jsonw_key(w, NULL); }
/* The first failure is kept: NaN, then a misplaced key. */
static void ws_sticky(dk_jsonw *w)
{
    dk_jsonw_array_begin(w);
    dk_jsonw_number(w, NAN);
    dk_jsonw_array_end(w);
    dk_jsonw_array_end(w);
    dk_jsonw_key(w, "k");
}

static void test_jsonw_misuse(void)
{
    int64_t live0 = dk_alloc_live();
    static const struct {
        writer_script fn;
        int status;
        const char *msg;
    } cases[] = {
        { ws_unbalanced, DK_ESTATE, "dk_jsonw_finish(): 2 unclosed containers" },
        { ws_key_outside, DK_EINVAL, "dk_jsonw_key(): key outside an object" },
        { ws_key_in_array, DK_EINVAL, "key outside an object" },
        { ws_nan, DK_EINVAL, "dk_jsonw_number(): NaN is not a JSON number" },
        { ws_inf, DK_EINVAL, "-inf is not a JSON number" },
        { ws_value_without_key, DK_ESTATE, "dk_jsonw_int(): a value inside an object needs a key" },
        { ws_key_without_value, DK_ESTATE, "dk_jsonw_finish(): the last key has no value" },
        { ws_key_then_end, DK_ESTATE, "dk_jsonw_object_end(): the last key has no value" },
        { ws_two_keys, DK_EINVAL, "two keys in a row" },
        { ws_mismatched_end, DK_ESTATE, "dk_jsonw_object_end(): no open object" },
        { ws_extra_end, DK_ESTATE, "no open array" },
        { ws_two_roots, DK_ESTATE, "already has its top-level value" },
        { ws_empty, DK_ESTATE, "the document is empty" },
        { ws_too_deep, DK_ESTATE, "nesting deeper than 256" },
        { ws_null_key, DK_EINVAL, "key is NULL" },
        { ws_sticky, DK_EINVAL, "NaN" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dk_jsonw *w = NULL;
        DK_CHECK_OK(dk_jsonw_create(i & 1 ? 2 : 0, &w));
        cases[i].fn(w);
        dk_errmsg_clear();
        const char *text = "untouched";
        size_t len = 99;
        int st = dk_jsonw_finish(w, &text, &len);
        dk_jsonw_destroy(w);
        if (st != cases[i].status)
            DK_FAIL_("case %zu: status %d, want %d (%s)", i, st, cases[i].status, dk_errmsg());
        DK_CHECK(text == NULL && len == 0);
        DK_CHECK_CONTAINS(dk_errmsg(), "dk_jsonw_finish(): ");
        DK_CHECK_CONTAINS(dk_errmsg(), cases[i].msg);
    }
    DK_CHECK_STATUS(dk_jsonw_finish(NULL, NULL, NULL), DK_EINVAL);
    /* Calls on a NULL writer are harmless. */
    dk_jsonw_object_begin(NULL);
    dk_jsonw_key(NULL, "a");
    dk_jsonw_number(NULL, 1);
    dk_jsonw_array_end(NULL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_json_save_load(void)
{
    int64_t live0 = dk_alloc_live();
    char path[512];
    snprintf(path, sizeof path, "%s/dk_test_json_missing_%d.json", dk_test_tmpdir(), 7);
    remove(path);
    dk_json *doc = (dk_json *)1;
    DK_CHECK_STATUS(dk_json_load(path, &doc), DK_ENOENT);
    DK_CHECK(doc == NULL);
    DK_CHECK_CONTAINS(dk_errmsg(), "dk_json_load(): ");
    DK_CHECK_CONTAINS(dk_errmsg(), path);

    snprintf(path, sizeof path, "%s/dk_test_json_rt.json", dk_test_tmpdir());
    dk_jsonw *w = NULL;
    DK_CHECK_OK(dk_jsonw_create(2, &w));
    write_awkward(w);
    DK_CHECK_OK(dk_jsonw_save(w, path));
    dk_jsonw_destroy(w);
    DK_CHECK_OK(dk_json_load(path, &doc));
    DK_CHECK_STR(dk_json_name(doc), path);
    dk_json_cur root = dk_json_root(doc);
    double v[3];
    DK_CHECK_STATUS(dk_json_get_numbers(&root, "ints", v, 3), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), path);
    DK_CHECK_CONTAINS(dk_errmsg(), ": ints: expected array of 3 numbers, got 4 items");
    dk_json_free(doc);

    /* A syntax error in a file names the file, line and column. */
    snprintf(path, sizeof path, "%s/dk_test_json_bad.json", dk_test_tmpdir());
    static const char bad[] = "{\n  \"a\": [1, 2]\n  \"b\": 3\n}\n";
    DK_CHECK_OK(dk_file_write(path, bad, sizeof bad - 1));
    DK_CHECK_STATUS(dk_json_load(path, &doc), DK_EINVALIDDATA);
    char want[600];
    snprintf(want, sizeof want, "%s:3:3: syntax error near '\"b\": 3'", path);
    DK_CHECK_CONTAINS(dk_errmsg(), want);
    remove(path);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* Allocation failure at every point                                         */

typedef struct json_fail_alloc {
    long count, fail_at;
} json_fail_alloc;

static void *jfa_malloc(void *ctx, size_t size)
{
    json_fail_alloc *a = ctx;
    if (a->count++ == a->fail_at) return NULL;
    return malloc(size);
}
static void *jfa_realloc(void *ctx, void *p, size_t size)
{
    json_fail_alloc *a = ctx;
    if (a->count++ == a->fail_at) return NULL;
    return realloc(p, size);
}
static void jfa_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

/* Parses a document that needs every kind of allocation (name, index, exact
 * integers) and writes one that needs the buffer to grow. */
static int json_oom_work(void)
{
    static const char text[] = "{\"rows\": [1,2,3,4,5,6,7,8,9,10], \"id\": 123456789012345678, "
                               "\"m\": {\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,"
                               "\"h\":8,\"i\":9}}";
    dk_json *doc = NULL;
    int st = dk_json_parse(text, sizeof text - 1, "oom.json", &doc);
    if (st == DK_OK) {
        dk_json_cur r = dk_json_root(doc), c;
        int64_t v = 0;
        if (dk_json_get_int(&r, "id", 0, INT64_MAX, &v) || v != 123456789012345678LL ||
            dk_json_field(&r, "rows", &c) || dk_json_item(&c, 9, &c) ||
            dk_json_int(&c, 10, 10, &v))
            st = DK_EINTERNAL;
        dk_json_free(doc);
    } else if (doc != NULL) {
        st = DK_EINTERNAL;
    }
    if (st) return st;
    dk_jsonw *w = NULL;
    st = dk_jsonw_create(2, &w);
    if (st) return st;
    dk_jsonw_array_begin(w);
    for (int i = 0; i < 200; i++) dk_jsonw_string(w, "a string long enough to grow the buffer");
    dk_jsonw_array_end(w);
    const char *out = NULL;
    st = dk_jsonw_finish(w, &out, NULL);
    dk_jsonw_destroy(w);
    return st;
}

static void test_json_oom(void)
{
    if (dk_alloc_live() != 0) {
        printf("     (skipped: %lld allocations live)\n", (long long)dk_alloc_live());
        return;
    }
    int ok_seen = 0, n_failed = 0;
    for (long k = 0; k < 200 && !ok_seen; k++) {
        json_fail_alloc a = { 0, k };
        dk_allocator al = { jfa_malloc, jfa_realloc, jfa_free, &a };
        DK_CHECK_OK(dk_set_allocator(&al));
        int st = json_oom_work();
        int64_t live = dk_alloc_live();
        /* On a leak the allocator stays installed: it is plain malloc once
         * past its failure point, so the leaked blocks remain valid. */
        if (live != 0) DK_FAIL_("fail_at %ld: %lld allocations leaked", k, (long long)live);
        DK_CHECK_OK(dk_set_allocator(NULL));
        if (st != DK_OK && st != DK_ENOMEM)
            DK_FAIL_("fail_at %ld: status %d (%s)", k, st, dk_errmsg());
        if (st == DK_ENOMEM) DK_CHECK_CONTAINS(dk_errmsg(), "memory");
        ok_seen = st == DK_OK;
        n_failed += st == DK_ENOMEM;
    }
    DK_CHECK(ok_seen);
    DK_CHECK(n_failed >= 8);   /* doc, name, index x2, exact ints, writer x3 */
}

const dk_test_case dk_tests_json[] = {
    DK_TEST(test_json_parse_typed),
    DK_TEST(test_json_error_paths),
    DK_TEST(test_json_missing_and_optional),
    DK_TEST(test_json_syntax_error_position),
    DK_TEST(test_json_trailing_garbage),
    DK_TEST(test_json_strict),
    DK_TEST(test_json_nonfinite),
    DK_TEST(test_json_int_range),
    DK_TEST(test_json_duplicates_and_odd_keys),
    DK_TEST(test_json_large_containers),
    DK_TEST(test_json_long_paths_and_depth),
    DK_TEST(test_jsonw_compact_and_pretty),
    DK_TEST(test_jsonw_numbers_shortest),
    DK_TEST(test_jsonw_round_trip),
    DK_TEST(test_jsonw_misuse),
    DK_TEST(test_json_save_load),
    DK_TEST(test_json_oom),
};
const size_t dk_tests_json_count = sizeof dk_tests_json / sizeof dk_tests_json[0];
