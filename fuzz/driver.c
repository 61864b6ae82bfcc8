/*
 * Standalone driver for the fuzz harnesses, for compilers without libFuzzer.
 *
 *     fuzz_json [--iters N] [--seed S] FILE_OR_DIR...
 *
 * Runs LLVMFuzzerTestOneInput on every file (directories: their regular files,
 * sorted by name), then N mutants of each (default 500, or $DK_FUZZ_ITERS):
 * bit flips, random and "interesting" bytes, truncation, duplicated, inserted
 * and deleted chunks. Mutations come from drivekit's Philox RNG keyed by the
 * seed and the file's contents, so a run is reproducible and independent of
 * file order. Every input is copied into a buffer of exactly its size so
 * AddressSanitizer sees reads past the end. When a harness crashes, the input
 * is written to crash-<harness>-<pid> in the current directory; rerun it with
 * `--iters 0 crash-file`. Unknown options starting with '-' (libFuzzer flags)
 * are ignored.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drivekit/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));
void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

/* The input being run, for the crash handlers. */
static const uint8_t *volatile cur_data;
static volatile size_t cur_size;
static char crash_path[256];

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k <= 0) return;
        c += k;
        n -= (size_t)k;
    }
}

/* Async-signal-safe: open, write, close only. */
static void dump_input(void)
{
    static volatile sig_atomic_t done;
    if (done) return;
    done = 1;
    int fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        write_all(fd, (const void *)cur_data, cur_size);
        close(fd);
    }
    static const char msg[] = "\n==fuzz driver== crashing input written to ";
    write_all(2, msg, sizeof msg - 1);
    write_all(2, crash_path, strlen(crash_path));
    write_all(2, "\n", 1);
}

static void on_signal(int sig)
{
    dump_input();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void run_one(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy: no slack for overreads to hide in. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) {
        fprintf(stderr, "fuzz driver: out of memory\n");
        exit(2);
    }
    if (size) memcpy(copy, data, size);
    cur_data = copy;
    cur_size = size;
    LLVMFuzzerTestOneInput(copy, size);
    cur_data = NULL;
    cur_size = 0;
    free(copy);
}

typedef struct path_list {
    char **items;
    size_t n, cap;
} path_list;

static void add_path(path_list *l, const char *p)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->items = realloc(l->items, l->cap * sizeof *l->items);
        if (!l->items) exit(2);
    }
    l->items[l->n] = strdup(p);
    if (!l->items[l->n]) exit(2);
    l->n++;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void collect(path_list *l, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "fuzz driver: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        add_path(l, path);
        return;
    }
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "fuzz driver: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    size_t first = l->n;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) add_path(l, full);
    }
    closedir(d);
    qsort(l->items + first, l->n - first, sizeof *l->items, cmp_str);
}

static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz driver: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) exit(2);
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        cap *= 2;
        buf = realloc(buf, cap);
    }
    fclose(f);
    *size = n;
    return buf;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static size_t min_sz(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Applies 1-4 random edits (mostly 1) to buf[0..size) (capacity cap); returns the size. */
static size_t mutate(dk_rng *r, uint8_t *buf, size_t size, size_t cap)
{
    static const uint8_t interesting[] = { 0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, '"', '\\',
                                           '{',  '}',  '[',  ']',  ',',  ':',  '0', '-',
                                           'e',  '.',  'u',  ' ',  '\n', '9' };
    uint8_t chunk[64];
    /* Mostly one edit: structured inputs rarely survive several. */
    int ops = dk_rng_below(r, 4) ? 1 : 2 + (int)dk_rng_below(r, 3);
    for (int k = 0; k < ops; k++) {
        uint32_t pos = size ? dk_rng_below(r, (uint32_t)size) : 0;
        switch (dk_rng_below(r, 8)) {
        case 0:
            if (size) buf[pos] ^= (uint8_t)(1u << dk_rng_below(r, 8));
            break;
        case 1:
            if (size) buf[pos] = (uint8_t)dk_rng_u32(r);
            break;
        case 2:
            if (size) buf[pos] = interesting[dk_rng_below(r, sizeof interesting)];
            break;
        case 3:
            size = dk_rng_below(r, (uint32_t)size + 1);
            break;
        case 4: { /* duplicate a chunk somewhere else */
            if (!size) break;
            size_t len = 1 + dk_rng_below(r, (uint32_t)min_sz(size - pos, sizeof chunk));
            if (size + len > cap) break;
            memcpy(chunk, buf + pos, len);
            size_t at = dk_rng_below(r, (uint32_t)size + 1);
            memmove(buf + at + len, buf + at, size - at);
            memcpy(buf + at, chunk, len);
            size += len;
            break;
        }
        case 5: { /* delete a chunk */
            if (!size) break;
            size_t len = 1 + dk_rng_below(r, (uint32_t)min_sz(size - pos, sizeof chunk));
            memmove(buf + pos, buf + pos + len, size - pos - len);
            size -= len;
            break;
        }
        case 6: /* insert a byte */
            if (size < cap) {
                size_t at = dk_rng_below(r, (uint32_t)size + 1);
                memmove(buf + at + 1, buf + at, size - at);
                buf[at] = dk_rng_below(r, 2) ? interesting[dk_rng_below(r, sizeof interesting)]
                                             : (uint8_t)dk_rng_u32(r);
                size++;
            }
            break;
        default: /* overwrite a chunk with a copy of another */
            if (size > 1) {
                size_t len = 1 + dk_rng_below(r, (uint32_t)min_sz(size - pos, sizeof chunk));
                size_t to = dk_rng_below(r, (uint32_t)(size - len + 1));
                memmove(buf + to, buf + pos, len);
            }
            break;
        }
    }
    return size;
}

static long parse_count(const char *s, const char *what)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end || v < 0 || v > 1000000000LL) {
        fprintf(stderr, "fuzz driver: bad %s '%s'\n", what, s);
        exit(2);
    }
    return (long)v;
}

int main(int argc, char **argv)
{
    const char *name = strrchr(argv[0], '/');
    name = name ? name + 1 : argv[0];
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);

    long iters = 500;
    uint64_t seed = 1;
    const char *env = getenv("DK_FUZZ_ITERS");
    if (env && *env) iters = parse_count(env, "DK_FUZZ_ITERS");
    path_list files = { NULL, 0, 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--iters") == 0 && i + 1 < argc) {
            iters = parse_count(argv[++i], "--iters");
        } else if (strncmp(a, "--iters=", 8) == 0) {
            iters = parse_count(a + 8, "--iters");
        } else if (strcmp(a, "--seed") == 0 && i + 1 < argc) {
            seed = (uint64_t)parse_count(argv[++i], "--seed");
        } else if (strncmp(a, "--seed=", 7) == 0) {
            seed = (uint64_t)parse_count(a + 7, "--seed");
        } else if (a[0] == '-') {
            continue;   /* a libFuzzer flag: not ours */
        } else {
            collect(&files, a);
        }
    }

    snprintf(crash_path, sizeof crash_path, "crash-%s-%ld", name, (long)getpid());
    if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(dump_input);
    static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], on_signal);

    long runs = 0;
    size_t n_seeds = files.n ? files.n : 1;
    for (size_t f = 0; f < n_seeds; f++) {
        size_t size = 0;
        uint8_t *data = files.n ? read_file(files.items[f], &size) : malloc(1);
        if (!data) exit(2);
        run_one(data, size);
        runs++;

        size_t cap = size * 2 + 64;
        uint8_t *buf = malloc(cap);
        if (!buf) exit(2);
        size_t cur = 0;
        dk_rng r;
        dk_rng_init(&r, seed, fnv1a(data, size));
        for (long it = 0; it < iters; it++) {
            /* Mostly stack edits on the last mutant; restart from the seed
             * now and then so the input does not drift too far. */
            if (it % 4 == 0) {
                memcpy(buf, data, size);
                cur = size;
            }
            cur = mutate(&r, buf, cur, cap);
            run_one(buf, cur);
            runs++;
        }
        free(buf);
        free(data);
    }
    for (size_t i = 0; i < files.n; i++) free(files.items[i]);
    free(files.items);
    printf("%s: %ld inputs, 0 crashes\n", name, runs);
    return 0;
}
