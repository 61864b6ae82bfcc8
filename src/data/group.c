/* Sample data groups (format trees addressed by field id) and sample values. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_impl.h"

typedef struct gnode {
    int alive;
    dk_field_kind kind;
    char name[DK_FIELD_NAME_MAX];
    int parent;
    dk_dtype dtype;
    int ndim;
    int n_children, cap_children;
    int *children;
} gnode;

struct dk_group {
    int n, cap;
    gnode *nodes;
};

static int new_node(dk_group *g, dk_field_kind kind, const char *name, int parent)
{
    if (g->n == g->cap) {
        int cap = g->cap ? g->cap * 2 : 16;
        gnode *nn = dk_realloc(g->nodes, (size_t)cap * sizeof *nn);
        if (!nn) return dk__error(DK_ENOMEM, "dk_group_add", "out of memory");
        g->nodes = nn;
        g->cap = cap;
    }
    if (parent >= 0) {
        gnode *p = &g->nodes[parent];
        if (p->n_children == p->cap_children) {
            int cap = p->cap_children ? p->cap_children * 2 : 4;
            int *c = dk_realloc(p->children, (size_t)cap * sizeof *c);
            if (!c) return dk__error(DK_ENOMEM, "dk_group_add", "out of memory");
            p->children = c;
            p->cap_children = cap;
        }
    }
    int id = g->n++;
    gnode *n = &g->nodes[id];
    memset(n, 0, sizeof *n);
    n->alive = 1;
    n->kind = kind;
    snprintf(n->name, sizeof n->name, "%s", name);
    n->parent = parent;
    n->dtype = kind == DK_FIELD_STRING ? DK_U8 : DK_DTYPE_INVALID;
    n->ndim = kind == DK_FIELD_STRING ? 1 : 0;
    if (parent >= 0) {
        gnode *p = &g->nodes[parent];
        p->children[p->n_children++] = id;
    }
    return id;
}

int dk_group_create(dk_group **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    *out = NULL;
    dk_group *g = dk_calloc(1, sizeof *g);
    if (!g) return dk__error(DK_ENOMEM, __func__, "out of memory");
    if (new_node(g, DK_FIELD_GROUP, "", -1) < 0) {
        dk_free(g);
        return DK_ENOMEM;
    }
    *out = g;
    return DK_OK;
}

void dk_group_destroy(dk_group *g)
{
    if (!g) return;
    for (int i = 0; i < g->n; i++) dk_free(g->nodes[i].children);
    dk_free(g->nodes);
    dk_free(g);
}

int dk_group_clone(const dk_group *g, dk_group **out)
{
    if (!g || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    *out = NULL;
    dk_group *c = dk_calloc(1, sizeof *c);
    if (!c) return dk__error(DK_ENOMEM, __func__, "out of memory");
    c->nodes = dk_calloc((size_t)g->cap, sizeof *c->nodes);
    if (!c->nodes) {
        dk_free(c);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    c->cap = g->cap;
    c->n = g->n;
    for (int i = 0; i < g->n; i++) {
        c->nodes[i] = g->nodes[i];
        c->nodes[i].children = NULL;
        c->nodes[i].cap_children = g->nodes[i].n_children;
        if (g->nodes[i].n_children) {
            c->nodes[i].children = dk_malloc((size_t)g->nodes[i].n_children * sizeof(int));
            if (!c->nodes[i].children) {
                c->n = i + 1;
                dk_group_destroy(c);
                return dk__error(DK_ENOMEM, __func__, "out of memory");
            }
            memcpy(c->nodes[i].children, g->nodes[i].children,
                   (size_t)g->nodes[i].n_children * sizeof(int));
        }
    }
    *out = c;
    return DK_OK;
}

static int live(const dk_group *g, int id)
{
    return g && id >= 0 && id < g->n && g->nodes[id].alive;
}

static int valid_name(const char *s)
{
    if (!s || !*s || strlen(s) >= DK_FIELD_NAME_MAX) return 0;
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_')) return 0;
    for (const char *p = s + 1; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_')) return 0;
    return 1;
}

int dk_group_child(const dk_group *g, int id, const char *name)
{
    if (!live(g, id) || !name) return DK_ENOENT;
    const gnode *n = &g->nodes[id];
    for (int i = 0; i < n->n_children; i++)
        if (!strcmp(g->nodes[n->children[i]].name, name)) return n->children[i];
    return DK_ENOENT;
}

static int check_parent(dk_group *g, int parent, const char *name, const char *func)
{
    if (!live(g, parent))
        return dk__error(DK_EINVAL, func, "parent %d is not a node of the group", parent);
    const gnode *p = &g->nodes[parent];
    if (p->kind != DK_FIELD_GROUP)
        return dk__error(DK_EINVAL, func, "%s: parent %s is not a group (arrays get elements "
                         "from dk_group_add_array only)",
                         name ? name : "?", p->name[0] ? p->name : "(root)");
    if (!valid_name(name))
        return dk__error(DK_EINVAL, func, "'%s' is not a valid field name", name ? name : "(null)");
    if (dk_group_child(g, parent, name) >= 0) {
        char path[256];
        dk_group_path(g, parent, path, sizeof path);
        return dk__error(DK_ESTATE, func, "%s%s%s: a field of that name exists", path,
                         path[0] ? "." : "", name);
    }
    return DK_OK;
}

int dk_group_add_tensor(dk_group *g, int parent, const char *name, dk_dtype dtype, int ndim)
{
    int st = check_parent(g, parent, name, __func__);
    if (st) return st;
    if (dtype <= DK_DTYPE_INVALID || dtype >= DK_DTYPE_COUNT)
        return dk__error(DK_EINVAL, __func__, "%s: invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > DK_MAX_DIMS)
        return dk__error(DK_EINVAL, __func__, "%s: rank %d outside 0..%d", name, ndim, DK_MAX_DIMS);
    int id = new_node(g, DK_FIELD_TENSOR, name, parent);
    if (id < 0) return id;
    g->nodes[id].dtype = dtype;
    g->nodes[id].ndim = ndim;
    return id;
}

int dk_group_add_string(dk_group *g, int parent, const char *name)
{
    int st = check_parent(g, parent, name, __func__);
    if (st) return st;
    return new_node(g, DK_FIELD_STRING, name, parent);
}

int dk_group_add_group(dk_group *g, int parent, const char *name)
{
    int st = check_parent(g, parent, name, __func__);
    if (st) return st;
    return new_node(g, DK_FIELD_GROUP, name, parent);
}

/* Copies the children of src node `from` under g node `to`. */
static int copy_children(dk_group *g, int to, const dk_group *src, int from)
{
    int n = src->nodes[from].n_children;
    for (int i = 0; i < n; i++) {
        const gnode *c = &src->nodes[src->nodes[from].children[i]];
        int id = new_node(g, c->kind, c->name, to);
        if (id < 0) return id;
        g->nodes[id].dtype = c->dtype;
        g->nodes[id].ndim = c->ndim;
        /* src may be g: re-fetch the child through its id after reallocations. */
        int st = copy_children(g, id, src, src->nodes[from].children[i]);
        if (st) return st;
    }
    return DK_OK;
}

int dk_group_add_array(dk_group *g, int parent, const char *name, const dk_group *src,
                       int element, int n)
{
    int st = check_parent(g, parent, name, __func__);
    if (st) return st;
    if (!live(src, element) || src->nodes[element].kind != DK_FIELD_GROUP)
        return dk__error(DK_EINVAL, __func__, "%s: element %d is not a group node", name, element);
    if (n < 1 || n > 1 << 20)
        return dk__error(DK_EINVAL, __func__, "%s: %d elements", name, n);
    /* Copy the element first when it lives in g (the copies grow g). */
    dk_group *tmp = NULL;
    if (src == g) {
        if ((st = dk_group_clone(g, &tmp))) return st;
        src = tmp;
    }
    int id = new_node(g, DK_FIELD_ARRAY, name, parent);
    int arr = id;
    for (int i = 0; i < n && id >= 0; i++) {
        char en[16];
        snprintf(en, sizeof en, "%d", i);
        int e = new_node(g, DK_FIELD_GROUP, en, id);
        if (e < 0 || (st = copy_children(g, e, src, element))) {
            id = e < 0 ? e : st;
            break;
        }
    }
    /* No half-built array is left behind. */
    if (id < 0 && arr >= 0) dk_group_remove(g, arr);
    dk_group_destroy(tmp);
    return id;
}

static void kill(dk_group *g, int id)
{
    gnode *n = &g->nodes[id];
    for (int i = 0; i < n->n_children; i++) kill(g, n->children[i]);
    n->alive = 0;
    n->n_children = 0;
}

int dk_group_remove(dk_group *g, int id)
{
    if (!g) return dk__error(DK_EINVAL, __func__, "NULL group");
    if (id == DK_GROUP_ROOT) return dk__error(DK_EINVAL, __func__, "the root cannot be removed");
    if (!live(g, id)) return dk__error(DK_ENOENT, __func__, "no field with id %d", id);
    gnode *p = &g->nodes[g->nodes[id].parent];
    for (int i = 0; i < p->n_children; i++)
        if (p->children[i] == id) {
            memmove(&p->children[i], &p->children[i + 1],
                    (size_t)(p->n_children - i - 1) * sizeof(int));
            p->n_children--;
            break;
        }
    kill(g, id);
    return DK_OK;
}

int dk_group_id_limit(const dk_group *g)
{
    return g ? g->n : 0;
}

int dk_group_info(const dk_group *g, int id, dk_field_info *out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "out is NULL");
    if (!live(g, id)) return dk__error(DK_ENOENT, __func__, "no field with id %d", id);
    const gnode *n = &g->nodes[id];
    out->kind = n->kind;
    out->name = n->name;
    out->parent = n->parent;
    out->dtype = n->dtype;
    out->ndim = n->ndim;
    out->n_children = n->n_children;
    return DK_OK;
}

int dk_group_child_at(const dk_group *g, int id, int i)
{
    if (!live(g, id)) return DK_ENOENT;
    if (i < 0 || i >= g->nodes[id].n_children) return DK_ERANGE;
    return g->nodes[id].children[i];
}

int dk_group_find(const dk_group *g, int from, const char *path)
{
    if (!g || !path) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (!live(g, from)) return dk__error(DK_ENOENT, __func__, "no field with id %d", from);
    int cur = from;
    const char *p = path;
    while (*p) {
        char part[DK_FIELD_NAME_MAX];
        size_t k = 0;
        if (*p == '[') {
            p++;
            while (*p && *p != ']' && k < sizeof part - 1) part[k++] = *p++;
            if (*p && *p != ']')
                return dk__error(DK_EINVAL, __func__, "'%s': a name is too long", path);
            if (*p != ']') return dk__error(DK_EINVAL, __func__, "'%s': unclosed '['", path);
            p++;
        } else {
            while (*p && *p != '.' && *p != '[' && k < sizeof part - 1) part[k++] = *p++;
            if (*p && *p != '.' && *p != '[')
                return dk__error(DK_EINVAL, __func__, "'%s': a name is too long", path);
        }
        part[k] = 0;
        if (!k) return dk__error(DK_EINVAL, __func__, "'%s': empty name", path);
        int next = dk_group_child(g, cur, part);
        if (next < 0) {
            char at[256];
            dk_group_path(g, cur, at, sizeof at);
            return dk__error(DK_ENOENT, __func__, "%s: no field '%s'%s%s", path, part,
                             at[0] ? " in " : "", at);
        }
        cur = next;
        if (*p == '.') {
            p++;
            if (!*p) return dk__error(DK_EINVAL, __func__, "'%s': trailing '.'", path);
        }
    }
    return cur;
}

static void find_rec(const dk_group *g, int id, const char *name, int *ids, int cap, int *n)
{
    const gnode *nd = &g->nodes[id];
    for (int i = 0; i < nd->n_children; i++) {
        int c = nd->children[i];
        if (!strcmp(g->nodes[c].name, name)) {
            if (*n < cap && ids) ids[*n] = c;
            (*n)++;
        }
        find_rec(g, c, name, ids, cap, n);
    }
}

int dk_group_find_all(const dk_group *g, int from, const char *name, int *ids, int cap)
{
    if (!live(g, from) || !name) return 0;
    int n = 0;
    find_rec(g, from, name, ids, cap, &n);
    return n;
}

static void leaves_rec(const dk_group *g, int id, int *ids, int cap, int *n)
{
    const gnode *nd = &g->nodes[id];
    if (nd->kind == DK_FIELD_TENSOR || nd->kind == DK_FIELD_STRING) {
        if (*n < cap && ids) ids[*n] = id;
        (*n)++;
        return;
    }
    for (int i = 0; i < nd->n_children; i++) leaves_rec(g, nd->children[i], ids, cap, n);
}

int dk_group_leaves(const dk_group *g, int from, int *ids, int cap)
{
    if (!live(g, from)) return 0;
    int n = 0;
    leaves_rec(g, from, ids, cap, &n);
    return n;
}

int dk_group_path(const dk_group *g, int id, char *buf, size_t cap)
{
    if (!buf || !cap) return dk__error(DK_EINVAL, __func__, "no buffer");
    buf[0] = 0;
    if (!live(g, id)) return DK_ENOENT;
    int chain[64], n = 0;
    for (int c = id; c > 0 && n < 64; c = g->nodes[c].parent) chain[n++] = c;
    size_t len = 0;
    for (int i = n - 1; i >= 0; i--) {
        const gnode *nd = &g->nodes[chain[i]];
        const gnode *par = &g->nodes[nd->parent];
        int w;
        if (par->kind == DK_FIELD_ARRAY)
            w = snprintf(buf + len, len < cap ? cap - len : 0, "[%s]", nd->name);
        else
            w = snprintf(buf + len, len < cap ? cap - len : 0, "%s%s", len ? "." : "", nd->name);
        len += (size_t)w;
        if (len >= cap) {
            buf[cap - 1] = 0;
            len = cap - 1;
        }
    }
    return (int)len;
}

static int same_rec(const dk_group *a, int ida, const dk_group *b, int idb, int names)
{
    const gnode *x = &a->nodes[ida], *y = &b->nodes[idb];
    if (x->kind != y->kind || x->dtype != y->dtype || x->ndim != y->ndim ||
        x->n_children != y->n_children || (names && strcmp(x->name, y->name)))
        return 0;
    for (int i = 0; i < x->n_children; i++)
        if (!same_rec(a, x->children[i], b, y->children[i], 1)) return 0;
    return 1;
}

int dk_group_same_format(const dk_group *a, int ida, const dk_group *b, int idb)
{
    if (!live(a, ida) || !live(b, idb)) return 0;
    return same_rec(a, ida, b, idb, 0);
}

typedef struct sbuf {
    char *s;
    size_t n, cap;
    int fail;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) DK_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->fail) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (w < 0) {
            b->fail = 1;
            return;
        }
        if (b->s && b->n + (size_t)w < b->cap) {
            b->n += (size_t)w;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + (size_t)w + 1) cap *= 2;
        char *s = dk_realloc(b->s, cap);
        if (!s) {
            b->fail = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

static void describe_rec(const dk_group *g, int id, int depth, sbuf *b)
{
    const gnode *nd = &g->nodes[id];
    if (id != DK_GROUP_ROOT) {
        const gnode *par = &g->nodes[nd->parent];
        /* Arrays print their first element only. */
        if (par->kind == DK_FIELD_ARRAY && par->children[0] != id) return;
        sb_printf(b, "%*s", 2 * depth, "");
        if (par->kind == DK_FIELD_ARRAY)
            sb_printf(b, "[i]\n");
        else if (nd->kind == DK_FIELD_TENSOR)
            sb_printf(b, "%s %s rank %d\n", nd->name, dk_dtype_name(nd->dtype), nd->ndim);
        else if (nd->kind == DK_FIELD_STRING)
            sb_printf(b, "%s string\n", nd->name);
        else if (nd->kind == DK_FIELD_ARRAY)
            sb_printf(b, "%s[%d]\n", nd->name, nd->n_children);
        else
            sb_printf(b, "%s\n", nd->name);
    }
    for (int i = 0; i < nd->n_children; i++)
        describe_rec(g, nd->children[i], id == DK_GROUP_ROOT ? 0 : depth + 1, b);
}

int dk_group_describe(const dk_group *g, char **out)
{
    if (!g || !out) return dk__error(DK_EINVAL, __func__, "NULL argument");
    sbuf b = {0};
    sb_printf(&b, "%s", "");
    describe_rec(g, DK_GROUP_ROOT, 0, &b);
    if (b.fail) {
        dk_free(b.s);
        return dk__error(DK_ENOMEM, __func__, "out of memory");
    }
    *out = b.s;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* Samples                                                                   */

int dk_sample_init(dk_sample *x, int n)
{
    if (!x || n < 0) return dk__error(DK_EINVAL, __func__, "bad arguments");
    memset(x, 0, sizeof *x);
    x->values = dk_calloc((size_t)(n ? n : 1), sizeof *x->values);
    if (!x->values) return dk__error(DK_ENOMEM, __func__, "out of memory");
    x->n = n;
    return DK_OK;
}

void dk_sample_free(dk_sample *x)
{
    if (!x) return;
    for (int i = 0; i < x->n; i++) dk_tensor_release(&x->values[i]);
    dk_free(x->values);
    x->values = NULL;
    x->n = 0;
}

int dk_sample_resize(dk_sample *x, int n)
{
    if (!x || n < 0) return dk__error(DK_EINVAL, __func__, "bad arguments");
    if (n <= x->n) return DK_OK;
    dk_tensor *v = dk_realloc(x->values, (size_t)n * sizeof *v);
    if (!v) return dk__error(DK_ENOMEM, __func__, "out of memory");
    memset(v + x->n, 0, (size_t)(n - x->n) * sizeof *v);
    x->values = v;
    x->n = n;
    return DK_OK;
}

int dk_sample_set(dk_sample *x, int id, dk_tensor *t)
{
    if (!t) return dk__error(DK_EINVAL, __func__, "NULL tensor");
    if (!x) {
        dk_tensor_release(t);
        return dk__error(DK_EINVAL, __func__, "NULL sample");
    }
    if (id < 0 || id >= x->n) {
        dk_tensor_release(t);
        return dk__error(DK_ERANGE, __func__, "field id %d outside [0, %d)", id, x->n);
    }
    dk_tensor_release(&x->values[id]);
    x->values[id] = *t;
    memset(t, 0, sizeof *t);
    return DK_OK;
}

int dk_sample_set_copy(dk_sample *x, int id, dk_dtype dtype, int ndim, const int64_t *shape,
                       const void *data)
{
    if (!x) return dk__error(DK_EINVAL, __func__, "NULL sample");
    if (id < 0 || id >= x->n)
        return dk__error(DK_ERANGE, __func__, "field id %d outside [0, %d)", id, x->n);
    dk_tensor t;
    int st = dk_tensor_alloc(&t, dtype, ndim, shape);
    if (st) return st;
    size_t nb = dk_tensor_nbytes(&t);
    if (nb && data) memcpy(t.data, data, nb);
    return dk_sample_set(x, id, &t);
}

int dk_sample_set_string(dk_sample *x, int id, const char *s)
{
    if (!s) return dk__error(DK_EINVAL, __func__, "NULL string");
    int64_t len = (int64_t)strlen(s);
    return dk_sample_set_copy(x, id, DK_U8, 1, &len, s);
}

int dk_sample_check(const dk_sample *x, const dk_group *fmt)
{
    if (!x || !fmt) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (x->n < fmt->n)
        return dk__error(DK_EINVALIDDATA, __func__, "the sample has %d values, the format %d ids",
                         x->n, fmt->n);
    for (int id = 0; id < fmt->n; id++) {
        const gnode *nd = &fmt->nodes[id];
        if (!nd->alive || (nd->kind != DK_FIELD_TENSOR && nd->kind != DK_FIELD_STRING)) continue;
        const dk_tensor *t = &x->values[id];
        if (t->dtype == nd->dtype && t->ndim == nd->ndim && (t->data || !dk_tensor_numel(t)))
            continue;
        char path[256];
        dk_group_path(fmt, id, path, sizeof path);
        if (t->dtype == DK_DTYPE_INVALID)
            return dk__error(DK_EINVALIDDATA, __func__, "%s: no value", path);
        return dk__error(DK_EINVALIDDATA, __func__, "%s: %s rank %d expected, got %s rank %d",
                         path, dk_dtype_name(nd->dtype), nd->ndim, dk_dtype_name(t->dtype),
                         (int)t->ndim);
    }
    return DK_OK;
}
