/* Tests for src/video: frame-exact decoding against ffmpeg's framemd5.
 *
 * The corpus is generated here with the ffmpeg command-line tool (a declared
 * dependency: without it the tests fail) into $DK_TEST_TMP/video-corpus-N,
 * and reused by later runs. Ground truth is `ffmpeg -fps_mode passthrough
 * -f framemd5`: frame i of drivekit must hash to line i. */
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include <libavutil/log.h>

#include "dk_test.h"
#include "video/video_impl.h"

#define CORPUS_VERSION 5

static char g_dir[512];
static int g_corpus_ok = -1;

static int run_cmd(const char *fmt, ...) DK_PRINTF(1, 2);
static int run_cmd(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int r = system(cmd);
    if (r != 0) fprintf(stderr, "  command failed (%d): %s\n", r, cmd);
    return r;
}

static const char *cpath(const char *name)
{
    static _Thread_local char buf[8][640];
    static _Thread_local int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s/%s", g_dir, name);
    return b;
}

#define SRC "-f lavfi -i testsrc2=size=320x240:rate=25"

typedef struct clip {
    const char *name;
    const char *cmd;   /* ffmpeg arguments after "ffmpeg -v error -y"; %s = corpus dir.
                          Encoders run on one thread: their output then does not
                          depend on the machine, and neither do the derived
                          (truncated, corrupted) files. */
} clip;

static const clip g_clips[] = {
    {"bf0.mp4", SRC " -t 4 -c:v libx264 -threads 1 -bf 0 -g 12 -pix_fmt yuv420p @/bf0.mp4"},
    {"bf2.mp4", SRC " -t 4 -c:v libx264 -threads 1 -bf 2 -g 12 -pix_fmt yuv420p @/bf2.mp4"},
    {"bf3p.mp4", SRC " -t 6 -c:v libx264 -threads 1 -bf 3 -b-pyramid normal -g 250 -pix_fmt yuv420p @/bf3p.mp4"},
    {"og264.mp4", SRC " -t 4 -c:v libx264 -threads 1 -bf 3 -g 24 -x264-params open-gop=1 -pix_fmt yuv420p @/og264.mp4"},
    {"x265.mp4", SRC " -t 4 -c:v libx265 -threads 1 -x265-params keyint=24:open-gop=1:bframes=4:log-level=error "
                 "-pix_fmt yuv420p @/x265.mp4"},
    {"vfr.mp4", SRC " -t 4 -vf 'settb=1/1000,setpts=(N+0.4*mod(N\\,3))/25/TB' -fps_mode passthrough "
                "-enc_time_base 1/1000 -c:v libx264 -threads 1 -bf 2 -g 12 -pix_fmt yuv420p @/vfr.mp4"},
    /* Jittered timestamps rounded to 1/25 s: two frames share a pts. */
    {"dup.mp4", SRC " -t 4 -vf setpts='(N+0.4*mod(N\\,3))/25/TB' -fps_mode passthrough -c:v libx264 -threads 1 "
                "-bf 2 -g 12 -pix_fmt yuv420p @/dup.mp4"},
    {"el.mp4", "-ss 0.3 -i @/bf2.mp4 -c copy @/el.mp4"},
    {"bf2.mkv", "-i @/bf2.mp4 -c copy @/bf2.mkv"},
    {"fast.mp4", "-i @/bf2.mp4 -c copy -movflags +faststart @/fast.mp4"},
    {"tenbit.mp4", SRC " -t 2 -c:v libx264 -threads 1 -bf 2 -g 12 -pix_fmt yuv420p10le @/tenbit.mp4"},
    {"bt709.mp4", SRC " -t 1 -c:v libx264 -threads 1 -bf 2 -g 12 -pix_fmt yuv420p -colorspace bt709 "
                  "-color_primaries bt709 -color_trc bt709 @/bt709.mp4"},
    {"full.mp4", SRC " -t 1 -c:v libx264 -threads 1 -bf 2 -g 12 -pix_fmt yuvj420p @/full.mp4"},
};
#define N_CLIPS (sizeof g_clips / sizeof g_clips[0])

/* Files every test can assume decode exactly (the others are derived). */
static const char *const g_clean[] = {"bf0.mp4", "bf2.mp4", "bf3p.mp4", "og264.mp4", "x265.mp4",
                                      "vfr.mp4", "dup.mp4", "el.mp4", "bf2.mkv", "fast.mp4", "tenbit.mp4",
                                      "bt709.mp4", "full.mp4"};
#define N_CLEAN (sizeof g_clean / sizeof g_clean[0])

static int write_derived(void)
{
    /* trunc.mp4: the first 60% of fast.mp4 (moov first, so it still opens);
       corrupt.mp4: fast.mp4 with 2000 bytes of noise in the middle. */
    uint8_t *data;
    size_t size;
    if (dk_file_read(cpath("fast.mp4"), &data, &size) != DK_OK) return -1;
    int r = dk_file_write(cpath("trunc.mp4"), data, size * 6 / 10);
    dk_rng rng;
    dk_rng_init(&rng, 77, 1);
    for (size_t i = size * 45 / 100; i < size * 45 / 100 + 2000 && i < size; i++)
        data[i] = (uint8_t)dk_rng_u32(&rng);
    r |= dk_file_write(cpath("corrupt.mp4"), data, size);
    dk_free(data);
    return r;
}

static int corpus(void)
{
    if (g_corpus_ok >= 0) return g_corpus_ok;
    g_corpus_ok = 0;
    snprintf(g_dir, sizeof g_dir, "%s/video-corpus-%d", dk_test_tmpdir(), CORPUS_VERSION);
    mkdir(g_dir, 0755);
    if (system("ffmpeg -version > /dev/null 2>&1") != 0) {
        fprintf(stderr, "  the ffmpeg command-line tool is required (apt install ffmpeg)\n");
        return 0;
    }
    struct stat st;
    if (stat(cpath("corpus.ok"), &st) != 0) {
        for (size_t i = 0; i < N_CLIPS; i++) {
            char args[2048];
            size_t k = 0;
            for (const char *c = g_clips[i].cmd; *c && k + sizeof g_dir < sizeof args; c++) {
                if (*c == '@') {
                    k += (size_t)snprintf(args + k, sizeof args - k, "%s", g_dir);
                } else {
                    args[k++] = *c;
                }
            }
            args[k] = '\0';
            if (run_cmd("ffmpeg -nostdin -v error -y %s", args) != 0) return 0;
        }
        if (write_derived() != 0) return 0;
        FILE *f = fopen(cpath("corpus.ok"), "w");
        if (!f) return 0;
        fputs("ok\n", f);
        fclose(f);
    }
    g_corpus_ok = 1;
    return 1;
}

/* framemd5 of a file (`extra` selects e.g. -pix_fmt rgb24). */
typedef struct truth {
    int64_t n;
    char (*md5)[33];
} truth;

static int load_truth_uncached(const char *name, const char *extra, truth *t)
{
    memset(t, 0, sizeof *t);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -i '%s' -map 0:v:0 -fps_mode passthrough %s -f framemd5 -",
             cpath(name), extra ? extra : "");
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[1024];
    int64_t cap = 0;
    while (fgets(line, sizeof line, p)) {
        if (line[0] == '#') continue;
        char *c = strrchr(line, ',');
        if (!c) continue;
        c++;
        while (*c == ' ') c++;
        if (strlen(c) < 32) continue;
        if (t->n == cap) {
            cap = cap ? cap * 2 : 256;
            t->md5 = realloc(t->md5, (size_t)cap * sizeof *t->md5);
        }
        memcpy(t->md5[t->n], c, 32);
        t->md5[t->n][32] = '\0';
        t->n++;
    }
    int rc = pclose(p);
    return rc == 0 ? 0 : -1;
}

/* Each (file, arguments) pair runs ffmpeg once per test binary; callers get
 * a copy. */
static int load_truth(const char *name, const char *extra, truth *t)
{
    static struct {
        char key[128];
        truth t;
    } cache[64];
    static int n_cache;
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    char key[128];
    snprintf(key, sizeof key, "%s|%s", name, extra ? extra : "");
    pthread_mutex_lock(&mu);
    int k = 0;
    while (k < n_cache && strcmp(cache[k].key, key) != 0) k++;
    if (k == n_cache) {
        if (n_cache == 64 || load_truth_uncached(name, extra, &cache[k].t) != 0) {
            pthread_mutex_unlock(&mu);
            memset(t, 0, sizeof *t);
            return -1;
        }
        snprintf(cache[k].key, sizeof cache[k].key, "%s", key);
        n_cache++;
    }
    t->n = cache[k].t.n;
    t->md5 = malloc((size_t)(t->n ? t->n : 1) * sizeof *t->md5);
    memcpy(t->md5, cache[k].t.md5, (size_t)t->n * sizeof *t->md5);
    pthread_mutex_unlock(&mu);
    return 0;
}

static void free_truth(truth *t)
{
    free(t->md5);
    memset(t, 0, sizeof *t);
}

static dk_video_config cfg_native(void)
{
    dk_video_config c;
    dk_video_config_init(&c);
    c.output = DK_VIDEO_NATIVE;
    return c;
}

static void md5_of(const void *p, size_t n, char out[33])
{
    dk__md5_hex(p, n, out);
}

#define NEED_CORPUS() do { if (!corpus()) DK_FAIL_("cannot build the test corpus (is ffmpeg installed?)"); } while (0)

/* ------------------------------------------------------------------------ */

static void test_md5_rfc1321(void)
{
    static const char *in[] = {"", "a", "abc", "message digest", "abcdefghijklmnopqrstuvwxyz",
                               "12345678901234567890123456789012345678901234567890123456789012345678901234567890"};
    static const char *want[] = {"d41d8cd98f00b204e9800998ecf8427e", "0cc175b9c0f1b6a831c399e269772661",
                                 "900150983cd24fb0d6963f7d28e17f72", "f96b697d7cb7938d525a2f31aaf161d0",
                                 "c3fcd3d76192e4007dfb496cca67e13b", "57edf4a22be3c955ac49da2e2107b67a"};
    char hex[33];
    for (int i = 0; i < 6; i++) {
        md5_of(in[i], strlen(in[i]), hex);
        DK_CHECK_STR(hex, want[i]);
    }
    /* Incremental updates across block boundaries give the same digest. */
    uint8_t buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (uint8_t)(i * 7);
    char whole[33];
    md5_of(buf, sizeof buf, whole);
    dk__md5 m;
    dk__md5_init(&m);
    for (size_t off = 0, step = 1; off < sizeof buf; off += step, step = step * 3 % 97 + 1)
        dk__md5_update(&m, buf + off, off + step <= sizeof buf ? step : sizeof buf - off);
    uint8_t d[16];
    dk__md5_final(&m, d);
    char inc[33];
    for (int i = 0; i < 16; i++) snprintf(inc + 2 * i, 3, "%02x", d[i]);
    DK_CHECK_STR(inc, whole);
}

/* A frame cache recycles evicted, unshared values of the same size, within
 * its capacity. */
static void test_lru_spares(void)
{
    int64_t live0 = dk_alloc_live();
    dk__lru *c;
    DK_CHECK_OK(dk__lru_create(1000, 2, &c));
    DK_CHECK(dk__lru_take_spare(c, 100) == NULL);
    dk_buffer *held = NULL;
    int recycled = 0;
    for (int i = 0; i < 100; i++) {
        dk_buffer *b = dk__lru_take_spare(c, 100);
        if (b) {
            recycled++;
            DK_CHECK_EQ_INT(dk_buffer_refcount(b), 1);
            DK_CHECK_EQ_INT((int64_t)dk_buffer_size(b), 100);
        } else {
            DK_CHECK_OK(dk_buffer_alloc(100, 0, &b));
        }
        memset(dk_buffer_data(b), i, 100);
        dk__lru_put(c, (uint64_t)i, b, 100);
        if (i == 50) held = dk_buffer_ref(b);
        dk_buffer_unref(b);
        DK_CHECK(dk__lru_bytes(c) <= 1000);
    }
    DK_CHECK(recycled > 50);
    /* A value still held elsewhere is never recycled. */
    DK_CHECK_EQ_INT(((uint8_t *)dk_buffer_data(held))[0], 50);
    DK_CHECK_EQ_INT(dk_buffer_refcount(held), 1);
    dk_buffer_unref(held);
    dk_buffer *x = dk__lru_get(c, 99);
    DK_CHECK(x != NULL);
    DK_CHECK_EQ_INT(((uint8_t *)dk_buffer_data(x))[0], 99);
    dk_buffer_unref(x);
    /* A value as large as the capacity makes the spares give way. */
    dk_buffer *big;
    DK_CHECK_OK(dk_buffer_alloc(1000, 0, &big));
    DK_CHECK_EQ_INT(dk__lru_put(c, 1000, big, 1000), 1);
    dk_buffer_unref(big);
    DK_CHECK(dk__lru_bytes(c) <= 1000);
    DK_CHECK(dk__lru_take_spare(c, 100) == NULL);
    dk__lru_destroy(c);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_lru_bounds(void)
{
    int64_t live0 = dk_alloc_live();
    dk__lru *c;
    DK_CHECK_OK(dk__lru_create(1000, 0, &c));
    for (int i = 0; i < 100; i++) {
        dk_buffer *b;
        DK_CHECK_OK(dk_buffer_alloc(100 + (size_t)(i % 5) * 50, 0, &b));
        memset(dk_buffer_data(b), i, dk_buffer_size(b));
        dk__lru_put(c, (uint64_t)i, b, dk_buffer_size(b));
        dk_buffer_unref(b);
        DK_CHECK(dk__lru_bytes(c) <= 1000);
    }
    DK_CHECK(dk__lru_contains(c, 99));
    DK_CHECK(!dk__lru_contains(c, 0));
    dk_buffer *b = dk__lru_get(c, 99);
    DK_CHECK(b != NULL);
    DK_CHECK_EQ_INT(((uint8_t *)dk_buffer_data(b))[0], 99);
    /* Too large for the cache: not stored. */
    dk_buffer *big;
    DK_CHECK_OK(dk_buffer_alloc(2000, 0, &big));
    DK_CHECK_EQ_INT(dk__lru_put(c, 1000, big, 2000), 0);
    dk_buffer_unref(big);
    /* A held value survives eviction. */
    for (int i = 200; i < 260; i++) {
        dk_buffer *x;
        DK_CHECK_OK(dk_buffer_alloc(300, 0, &x));
        dk__lru_put(c, (uint64_t)i, x, 300);
        dk_buffer_unref(x);
    }
    DK_CHECK(!dk__lru_contains(c, 99));
    DK_CHECK_EQ_INT(((uint8_t *)dk_buffer_data(b))[0], 99);
    dk_buffer_unref(b);
    dk__lru_destroy(c);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_corpus_and_info(void)
{
    NEED_CORPUS();
    dk_video_config cfg = cfg_native();
    for (size_t i = 0; i < N_CLEAN; i++) {
        dk_video *v;
        DK_CHECK_OK(dk_video_open(cpath(g_clean[i]), &cfg, &v));
        dk_video_info in;
        DK_CHECK_OK(dk_video_get_info(v, &in));
        truth t;
        DK_CHECK(load_truth(g_clean[i], NULL, &t) == 0);
        if (in.n_frames != t.n) fprintf(stderr, "  %s\n", g_clean[i]);
        DK_CHECK_EQ_INT(in.n_frames, t.n);
        DK_CHECK_EQ_INT(in.width, 320);
        DK_CHECK_EQ_INT(in.height, 240);
        DK_CHECK(in.n_keyframes >= 1);
        DK_CHECK(in.avg_fps > 0 && in.duration > 0);
        int64_t nk = in.n_keyframes + 4, kf[64];
        DK_CHECK(nk <= 64);
        DK_CHECK_OK(dk_video_keyframes(v, kf, &nk));
        DK_CHECK(nk <= in.n_keyframes);
        for (int64_t k = 1; k < nk; k++) DK_CHECK(kf[k] > kf[k - 1]);
        int64_t kfs, md;
        for (int64_t f = 0; f < in.n_frames; f += 7) {
            DK_CHECK_OK(dk_video_frame_cost(v, f, &kfs, &md));
            DK_CHECK(kfs <= f);
            DK_CHECK(md >= 1);
        }
        DK_CHECK_STATUS(dk_video_frame_cost(v, in.n_frames, &kfs, &md), DK_ERANGE);
        const char *name = g_clean[i];
        if (!strcmp(name, "tenbit.mp4")) {
            DK_CHECK_EQ_INT(in.bit_depth, 10);
            DK_CHECK_STR(in.pix_fmt, "yuv420p10le");
        } else if (!strcmp(name, "full.mp4")) {
            DK_CHECK_EQ_INT(in.full_range, 1);
        } else {
            DK_CHECK_EQ_INT(in.bit_depth, 8);
        }
        if (!strcmp(name, "bt709.mp4")) DK_CHECK_EQ_INT(in.colorspace_bt709, 1);
        if (!strcmp(name, "bf2.mp4")) DK_CHECK_EQ_INT(in.colorspace_bt709, 0);
        if (!strcmp(name, "og264.mp4") || !strcmp(name, "x265.mp4")) DK_CHECK_EQ_INT(in.open_gop, 1);
        if (!strcmp(name, "bf0.mp4")) {
            DK_CHECK_EQ_INT(in.open_gop, 0);
            DK_CHECK_EQ_INT(in.has_b_frames, 0);
            DK_CHECK_EQ_INT(in.max_gop, 12);
        }
        if (!strcmp(name, "bf3p.mp4")) DK_CHECK_EQ_INT(in.has_b_frames, 2);
        DK_CHECK_EQ_INT(in.vfr, !strcmp(name, "vfr.mp4") || !strcmp(name, "dup.mp4"));
        if (!strcmp(name, "el.mp4")) DK_CHECK(in.n_frames < 100);
        free_truth(&t);
        dk_video_close(v);
    }
}

/* Every frame of every clean file, one md5 call per frame (sequential
 * read-ahead keeps this linear), and one NATIVE batch of all frames. */
static void test_md5_every_frame(void)
{
    NEED_CORPUS();
    int64_t live0 = dk_alloc_live();
    for (size_t i = 0; i < N_CLEAN; i++) {
        truth t;
        DK_CHECK(load_truth(g_clean[i], NULL, &t) == 0);
        dk_video_config cfg = cfg_native();
        dk_video *v;
        DK_CHECK_OK(dk_video_open(cpath(g_clean[i]), &cfg, &v));
        int bad = 0;
        for (int64_t f = 0; f < t.n; f++) {
            char hex[33];
            int st = dk_video_frame_md5(v, f, hex);
            if (st != DK_OK || strcmp(hex, t.md5[f]) != 0) {
                if (bad++ < 3)
                    fprintf(stderr, "  %s frame %lld: %s (%s) want %s\n", g_clean[i], (long long)f,
                            hex, st ? dk_errmsg() : "ok", t.md5[f]);
            }
        }
        DK_CHECK_EQ_INT(bad, 0);
        dk_video_stats s;
        dk_video_get_stats(v, &s);
        /* Read-ahead: about one decode per frame, not a GOP prefix each. */
        DK_CHECK(s.frames_decoded <= 2 * t.n + 32);
        dk_video_close(v);

        cfg.frame_cache_bytes = 0;
        DK_CHECK_OK(dk_video_open(cpath(g_clean[i]), &cfg, &v));
        int64_t *all = malloc((size_t)t.n * sizeof *all);
        for (int64_t f = 0; f < t.n; f++) all[f] = f;
        dk_tensor out;
        DK_CHECK_OK(dk_video_get_frames(v, NULL, all, t.n, &out, NULL));
        DK_CHECK_EQ_INT(out.ndim, 2);
        DK_CHECK_EQ_INT(out.shape[0], t.n);
        size_t fb = dk_video_frame_bytes(v);
        DK_CHECK_EQ_INT(out.shape[1], (int64_t)fb);
        for (int64_t f = 0; f < t.n; f++) {
            char hex[33];
            md5_of((uint8_t *)out.data + (size_t)f * fb, fb, hex);
            if (strcmp(hex, t.md5[f]) != 0 && bad++ < 3)
                fprintf(stderr, "  %s batch frame %lld mismatch\n", g_clean[i], (long long)f);
        }
        DK_CHECK_EQ_INT(bad, 0);
        dk_video_get_stats(v, &s);
        /* One forward pass: no seeks, nothing decoded twice. */
        DK_CHECK(s.seeks <= 1);
        DK_CHECK(s.frames_decoded <= t.n + 16);
        dk_tensor_release(&out);
        free(all);
        dk_video_close(v);
        free_truth(&t);
    }
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void check_frames(dk_video *v, const truth *t, const int64_t *fr, int64_t n, dk_pool *pool,
                         int *bad, const char *name)
{
    dk_tensor out;
    int *st = malloc((size_t)(n ? n : 1) * sizeof *st);
    int r = dk_video_get_frames(v, pool, fr, n, &out, st);
    if (r != DK_OK) {
        fprintf(stderr, "  %s: %s\n", name, dk_errmsg());
        (*bad)++;
    }
    size_t fb = dk_video_frame_bytes(v);
    for (int64_t i = 0; i < n; i++) {
        char hex[33];
        md5_of((uint8_t *)out.data + (size_t)i * fb, fb, hex);
        if (st[i] != DK_OK || strcmp(hex, t->md5[fr[i]]) != 0) {
            if ((*bad)++ < 3)
                fprintf(stderr, "  %s: request item %lld (frame %lld) wrong: status %d, md5 %s\n", name,
                        (long long)i, (long long)fr[i], st[i], hex);
            if (*bad == 1) {
                fprintf(stderr, "  request (pool %d):", dk_pool_size(pool));
                for (int64_t k = 0; k < n; k++) fprintf(stderr, " %lld", (long long)fr[k]);
                fprintf(stderr, "\n");
            }
        }
    }
    dk_tensor_release(&out);
    free(st);
}

static void test_random_subsets(void)
{
    NEED_CORPUS();
    int64_t live0 = dk_alloc_live();
    dk_pool *pool;
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = 2;
    DK_CHECK_OK(dk_pool_create(&pc, &pool));
    dk_rng rng;
    dk_rng_init(&rng, 1234, 0);
    for (size_t i = 0; i < N_CLEAN; i++) {
        truth t;
        DK_CHECK(load_truth(g_clean[i], NULL, &t) == 0);
        dk_video_config cfg = cfg_native();
        cfg.frame_cache_bytes = (dk_rng_u32(&rng) & 1) ? 0 : (size_t)4 << 20;
        cfg.packet_cache_bytes = (dk_rng_u32(&rng) & 1) ? 0 : (size_t)1 << 20;
        cfg.max_decoders = 1 + (int)dk_rng_below(&rng, 3);
        dk_video *v;
        DK_CHECK_OK(dk_video_open(cpath(g_clean[i]), &cfg, &v));
        int bad = 0;
        for (int rep = 0; rep < 8; rep++) {
            int64_t fr[24];
            int64_t n = 1 + dk_rng_below(&rng, 24);
            for (int64_t k = 0; k < n; k++) {
                fr[k] = dk_rng_below(&rng, (uint32_t)t.n);
                if (k > 0 && dk_rng_below(&rng, 4) == 0) fr[k] = fr[dk_rng_below(&rng, (uint32_t)k)];
            }
            check_frames(v, &t, fr, n, (rep & 1) ? pool : NULL, &bad, g_clean[i]);
        }
        /* A clip: consecutive frames at a stride. */
        int64_t clipf[16];
        int64_t s0 = dk_rng_below(&rng, (uint32_t)(t.n / 2));
        for (int k = 0; k < 16; k++) clipf[k] = (s0 + 3 * k) % t.n;
        check_frames(v, &t, clipf, 16, pool, &bad, g_clean[i]);
        DK_CHECK_EQ_INT(bad, 0);
        dk_video_close(v);
        free_truth(&t);
    }
    dk_pool_destroy(pool);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* Random single-frame requests decode at most 5% more pictures than the
 * reference chain + target bound. */
static void test_work_ratio(void)
{
    NEED_CORPUS();
    static const char *files[] = {"bf0.mp4", "bf2.mp4", "bf3p.mp4", "og264.mp4", "x265.mp4",
                                  "vfr.mp4", "dup.mp4", "el.mp4", "bf2.mkv"};
    dk_rng rng;
    dk_rng_init(&rng, 99, 0);
    int64_t all_dec = 0, all_min = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        dk_video_config cfg = cfg_native();
        cfg.frame_cache_bytes = 0;
        dk_video *v;
        DK_CHECK_OK(dk_video_open(cpath(files[i]), &cfg, &v));
        dk_video_info in;
        dk_video_get_info(v, &in);
        int64_t sum_cost = 0;
        for (int r = 0; r < 40; r++) {
            int64_t f = dk_rng_below(&rng, (uint32_t)in.n_frames);
            int64_t kf, md;
            DK_CHECK_OK(dk_video_frame_cost(v, f, &kf, &md));
            sum_cost += md;
            dk_tensor out;
            DK_CHECK_OK(dk_video_get_frames(v, NULL, &f, 1, &out, NULL));
            dk_tensor_release(&out);
        }
        dk_video_stats s;
        dk_video_get_stats(v, &s);
        DK_CHECK_EQ_INT(s.min_decodes, sum_cost);
        double ratio = (double)s.frames_decoded / (double)s.min_decodes;
        printf("     work ratio %-10s %.3f (decoded %lld, bound %lld, skipped %lld, seeks %lld)\n",
               files[i], ratio, (long long)s.frames_decoded, (long long)s.min_decodes,
               (long long)s.packets_skipped, (long long)s.seeks);
        DK_CHECK(ratio <= 1.05);
        DK_CHECK_EQ_INT(s.frames_returned, 40);
        all_dec += s.frames_decoded;
        all_min += s.min_decodes;
        dk_video_close(v);
    }
    printf("     work ratio overall %.3f\n", (double)all_dec / (double)all_min);
}

/* RGB24 equals `ffmpeg -pix_fmt rgb24` byte for byte (matrix and range
 * handling included). */
static void test_rgb_matches_ffmpeg(void)
{
    NEED_CORPUS();
    static const char *files[] = {"bf2.mp4", "bt709.mp4", "full.mp4", "tenbit.mp4", "x265.mp4"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        truth t;
        DK_CHECK(load_truth(files[i], "-pix_fmt rgb24", &t) == 0);
        dk_video_config cfg;
        dk_video_config_init(&cfg);
        dk_video *v;
        DK_CHECK_OK(dk_video_open(cpath(files[i]), &cfg, &v));
        DK_CHECK_EQ_INT(dk_video_frame_bytes(v), 320 * 240 * 3);
        int64_t fr[] = {0, 5, 13, 1, 24};
        int bad = 0;
        for (size_t k = 0; k < 5; k++) {
            if (fr[k] >= t.n) continue;
            dk_tensor out;
            DK_CHECK_OK(dk_video_get_frames(v, NULL, &fr[k], 1, &out, NULL));
            DK_CHECK_EQ_INT(out.ndim, 4);
            DK_CHECK_EQ_INT(out.shape[1], 240);
            DK_CHECK_EQ_INT(out.shape[2], 320);
            DK_CHECK_EQ_INT(out.shape[3], 3);
            char hex[33];
            md5_of(out.data, 320 * 240 * 3, hex);
            if (strcmp(hex, t.md5[fr[k]]) != 0 && bad++ < 2)
                fprintf(stderr, "  %s frame %lld: RGB differs from ffmpeg's\n", files[i], (long long)fr[k]);
            dk_tensor_release(&out);
        }
        DK_CHECK_EQ_INT(bad, 0);
        free_truth(&t);
        dk_video_close(v);
    }
}

static void test_nv12_and_resize(void)
{
    NEED_CORPUS();
    dk_video_config cfg = cfg_native();
    dk_video *vn, *v12, *vr;
    DK_CHECK_OK(dk_video_open(cpath("bf2.mp4"), &cfg, &vn));
    cfg.output = DK_VIDEO_NV12;
    DK_CHECK_OK(dk_video_open(cpath("bf2.mp4"), &cfg, &v12));
    dk_video_config rc;
    dk_video_config_init(&rc);
    rc.out_width = 160;
    DK_CHECK_OK(dk_video_open(cpath("bf2.mp4"), &rc, &vr));
    DK_CHECK_EQ_INT(dk_video_frame_bytes(v12), 320 * 240 * 3 / 2);
    DK_CHECK_EQ_INT(dk_video_frame_bytes(vr), 160 * 120 * 3);
    int64_t f[] = {7, 30};
    dk_tensor a, b, c, full;
    DK_CHECK_OK(dk_video_get_frames(vn, NULL, f, 2, &a, NULL));
    DK_CHECK_OK(dk_video_get_frames(v12, NULL, f, 2, &b, NULL));
    DK_CHECK_OK(dk_video_get_frames(vr, NULL, f, 2, &c, NULL));
    DK_CHECK_EQ_INT(c.shape[1], 120);
    DK_CHECK_EQ_INT(c.shape[2], 160);
    for (int k = 0; k < 2; k++) {
        const uint8_t *y = (uint8_t *)a.data + (size_t)k * 115200, *u = y + 76800, *vv = u + 19200;
        const uint8_t *n = (uint8_t *)b.data + (size_t)k * 115200;
        DK_CHECK(memcmp(y, n, 76800) == 0);
        int diff = 0;
        for (int i = 0; i < 19200; i++) diff += n[76800 + 2 * i] != u[i] || n[76800 + 2 * i + 1] != vv[i];
        DK_CHECK_EQ_INT(diff, 0);
    }
    /* The bilinear half-size picture is close to a 2x2 box average of the
       full-size RGB. */
    dk_video_config fc;
    dk_video_config_init(&fc);
    dk_video *vf;
    DK_CHECK_OK(dk_video_open(cpath("bf2.mp4"), &fc, &vf));
    DK_CHECK_OK(dk_video_get_frames(vf, NULL, f, 1, &full, NULL));
    double err = 0;
    const uint8_t *F = full.data, *C = c.data;
    for (int y = 0; y < 120; y++)
        for (int x = 0; x < 160; x++)
            for (int ch = 0; ch < 3; ch++) {
                int s = F[((2 * y) * 320 + 2 * x) * 3 + ch] + F[((2 * y) * 320 + 2 * x + 1) * 3 + ch] +
                        F[((2 * y + 1) * 320 + 2 * x) * 3 + ch] + F[((2 * y + 1) * 320 + 2 * x + 1) * 3 + ch];
                err += fabs(s / 4.0 - C[(y * 160 + x) * 3 + ch]);
            }
    err /= 160.0 * 120 * 3;
    DK_CHECK(err < 6.0);
    dk_tensor_release(&a);
    dk_tensor_release(&b);
    dk_tensor_release(&c);
    dk_tensor_release(&full);
    dk_video_close(vn);
    dk_video_close(v12);
    dk_video_close(vr);
    dk_video_close(vf);
}

static void test_frame_cache(void)
{
    NEED_CORPUS();
    dk_video_config cfg = cfg_native();
    dk_video *v;
    DK_CHECK_OK(dk_video_open(cpath("bf3p.mp4"), &cfg, &v));
    int64_t f[] = {100, 40, 77};
    dk_tensor a, b;
    DK_CHECK_OK(dk_video_get_frames(v, NULL, f, 3, &a, NULL));
    dk_video_stats s1, s2;
    dk_video_get_stats(v, &s1);
    DK_CHECK_OK(dk_video_get_frames(v, NULL, f, 3, &b, NULL));
    dk_video_get_stats(v, &s2);
    DK_CHECK_EQ_INT(s2.frame_cache_hits - s1.frame_cache_hits, 3);
    DK_CHECK_EQ_INT(s2.frames_decoded, s1.frames_decoded);
    DK_CHECK(memcmp(a.data, b.data, dk_tensor_nbytes(&a)) == 0);
    /* The packet cache spares the demuxer on a revisit of the GOP. */
    int64_t g = 60;
    dk_tensor_release(&b);
    dk_video_reset_stats(v);
    DK_CHECK_OK(dk_video_get_frames(v, NULL, &g, 1, &b, NULL));
    dk_video_get_stats(v, &s2);
    DK_CHECK(s2.packet_cache_hits >= 1);
    DK_CHECK_EQ_INT(s2.packets_read, 0);
    dk_tensor_release(&a);
    dk_tensor_release(&b);
    dk_video_close(v);
}

/* A request bigger than a quarter of the frame cache caches its first frames
 * (file order), whichever worker finishes first: the same on every run. */
static void test_frame_cache_choice(void)
{
    NEED_CORPUS();
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = 3;
    dk_pool *pool;
    DK_CHECK_OK(dk_pool_create(&pc, &pool));
    int64_t want[24];
    for (int i = 0; i < 24; i++) want[i] = 145 - 6 * i;   /* 145 .. 7: many GOPs, descending */
    for (int rep = 0; rep < 4; rep++) {
        dk_video_config cfg = cfg_native();
        dk_video *v;
        DK_CHECK_OK(dk_video_open(cpath("bf3p.mp4"), &cfg, &v));
        size_t fb = dk_video_frame_bytes(v);
        dk_video_close(v);
        cfg.frame_cache_bytes = 4 * 5 * fb + fb / 2;   /* a quarter holds 5 frames */
        DK_CHECK_OK(dk_video_open(cpath("bf3p.mp4"), &cfg, &v));
        dk_tensor t;
        DK_CHECK_OK(dk_video_get_frames(v, pool, want, 24, &t, NULL));
        dk_tensor_release(&t);
        /* Exactly the 5 lowest frames are cached (checked lowest first: the
           frames the checks decode are cached in turn and evict the oldest). */
        for (int i = 23; i >= 0; i--) {
            dk_video_stats a, b;
            dk_video_get_stats(v, &a);
            DK_CHECK_OK(dk_video_get_frames(v, NULL, &want[i], 1, &t, NULL));
            dk_tensor_release(&t);
            dk_video_get_stats(v, &b);
            int hit = b.frame_cache_hits > a.frame_cache_hits;
            if (hit != (want[i] < 37)) DK_FAIL_("rep %d: frame %lld cached: %d", rep,
                                                (long long)want[i], hit);
        }
        dk_video_close(v);
    }
    dk_pool_destroy(pool);
}

static const char *const g_multi[] = {"bf0.mp4", "bf2.mp4", "bf3p.mp4", "og264.mp4", "x265.mp4",
                                      "bf2.mkv"};

static void test_multi(void)
{
    NEED_CORPUS();
    int64_t live0 = dk_alloc_live();
    dk_video *vs[6];
    truth t[6];
    dk_video_config cfg = cfg_native();
    cfg.frame_cache_bytes = 0;
    for (int j = 0; j < 6; j++) {
        DK_CHECK_OK(dk_video_open(cpath(g_multi[j]), &cfg, &vs[j]));
        DK_CHECK(load_truth(g_multi[j], NULL, &t[j]) == 0);
    }
    dk_rng rng;
    dk_rng_init(&rng, 5, 5);
    enum { N = 60 };
    dk_video_request reqs[N];
    for (int i = 0; i < N; i++) {
        reqs[i].video = (int32_t)dk_rng_below(&rng, 6);
        reqs[i].frame = dk_rng_below(&rng, (uint32_t)t[reqs[i].video].n);
    }
    char ref[N][33];
    for (int i = 0; i < N; i++) strcpy(ref[i], t[reqs[i].video].md5[reqs[i].frame]);
    static const int sizes[] = {1, 2, 4};
    for (int k = 0; k < 3; k++) {
        dk_pool *pool;
        dk_pool_config pc;
        dk_pool_config_init(&pc);
        pc.n_threads = sizes[k];
        DK_CHECK_OK(dk_pool_create(&pc, &pool));
        dk_tensor out[N];
        int st[N];
        DK_CHECK_OK(dk_video_get_frames_multi(vs, 6, pool, reqs, N, out, st));
        for (int i = 0; i < N; i++) {
            char hex[33];
            DK_CHECK_EQ_INT(st[i], DK_OK);
            DK_CHECK_EQ_INT(out[i].ndim, 1);
            md5_of(out[i].data, dk_tensor_nbytes(&out[i]), hex);
            DK_CHECK_STR(hex, ref[i]);
            dk_tensor_release(&out[i]);
        }
        dk_pool_destroy(pool);
    }
    /* Same frames one video at a time. */
    for (int j = 0; j < 6; j++) {
        int64_t fr[N];
        int n = 0;
        for (int i = 0; i < N; i++)
            if (reqs[i].video == j) fr[n++] = reqs[i].frame;
        int bad = 0;
        check_frames(vs[j], &t[j], fr, n, NULL, &bad, g_multi[j]);
        DK_CHECK_EQ_INT(bad, 0);
    }
    /* An out-of-range item fails alone. */
    reqs[3].frame = 100000;
    dk_tensor out[N];
    int st[N];
    DK_CHECK_STATUS(dk_video_get_frames_multi(vs, 6, NULL, reqs, N, out, st), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "frame 100000");
    for (int i = 0; i < N; i++) {
        DK_CHECK_EQ_INT(st[i], i == 3 ? DK_ERANGE : DK_OK);
        dk_tensor_release(&out[i]);
    }
    reqs[0].video = 6;
    DK_CHECK_STATUS(dk_video_get_frames_multi(vs, 6, NULL, reqs, N, out, st), DK_EINVAL);
    for (int j = 0; j < 6; j++) {
        dk_video_close(vs[j]);
        free_truth(&t[j]);
    }
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_index_persistence(void)
{
    NEED_CORPUS();
    char vid[700], idx[720];
    snprintf(vid, sizeof vid, "%s", cpath("persist.mp4"));
    snprintf(idx, sizeof idx, "%s.dkidx", vid);
    uint8_t *data;
    size_t size;
    DK_CHECK_OK(dk_file_read(cpath("og264.mp4"), &data, &size));
    DK_CHECK_OK(dk_file_write(vid, data, size));
    dk_free(data);
    unlink(idx);
    truth t;
    DK_CHECK(load_truth("og264.mp4", NULL, &t) == 0);
    dk_video_config cfg = cfg_native();
    cfg.index_path = "auto";
    dk_video *v;
    DK_CHECK_OK(dk_video_open(vid, &cfg, &v));
    DK_CHECK_EQ_INT(dk__video_index_loaded(v), 0);
    dk_video_close(v);
    struct stat st;
    DK_CHECK(stat(idx, &st) == 0);

    dk_log_set(NULL, NULL, DK_LOG_ERROR);   /* the rebuild warnings below are expected */
    for (int round = 0; round < 5; round++) {
        DK_CHECK_OK(dk_video_open(vid, &cfg, &v));
        int want_loaded = round == 0 || round == 2;
        DK_CHECK_EQ_INT(dk__video_index_loaded(v), want_loaded);
        dk_video_info in;
        dk_video_get_info(v, &in);
        DK_CHECK_EQ_INT(in.n_frames, t.n);
        DK_CHECK_EQ_INT(in.open_gop, 1);
        int64_t fr[] = {0, 23, 50, 11, 99};
        int bad = 0;
        check_frames(v, &t, fr, 5, NULL, &bad, "persist.mp4");
        DK_CHECK_EQ_INT(bad, 0);
        dk_video_close(v);
        /* Damage the index in a different way each round. */
        DK_CHECK_OK(dk_file_read(idx, &data, &size));
        if (round == 0) {
            data[size / 2] ^= 0x40;                    /* checksum */
            DK_CHECK_OK(dk_file_write(idx, data, size));
        } else if (round == 1) {
            /* rebuilt last round: loads again */
        } else if (round == 2) {
            DK_CHECK_OK(dk_file_write(idx, data, size - 17));   /* truncated */
        } else if (round == 3) {
            /* A packet count claiming more than the file holds, with a
               matching checksum: still refused. */
            data[64 + 104] = 0xff;
            uint64_t h = 0xcbf29ce484222325ull;
            for (size_t k = 64; k < size; k++) h = (h ^ data[k]) * 0x100000001b3ull;
            for (int k = 0; k < 8; k++) data[48 + k] = (uint8_t)(h >> (8 * k));
            DK_CHECK_OK(dk_file_write(idx, data, size));
        }
        dk_free(data);
    }
    DK_CHECK_OK(dk_video_open(vid, &cfg, &v));
    DK_CHECK_EQ_INT(dk__video_index_loaded(v), 1);
    dk_video_close(v);
    /* A touched video invalidates the index. */
    struct timespec ts[2] = {{0, UTIME_OMIT}, {12345, 6789}};
    DK_CHECK(utimensat(AT_FDCWD, vid, ts, 0) == 0);
    DK_CHECK_OK(dk_video_open(vid, &cfg, &v));
    DK_CHECK_EQ_INT(dk__video_index_loaded(v), 0);
    dk_video_close(v);
    DK_CHECK_OK(dk_video_open(vid, &cfg, &v));
    DK_CHECK_EQ_INT(dk__video_index_loaded(v), 1);
    dk_video_close(v);
    dk_log_set(NULL, NULL, DK_LOG_WARN);
    free_truth(&t);
}

/* dk_video_trim: decoders and caches go, the index stays; later requests
 * open the file again without a scan and return the same frames; a file
 * changed in between is refused, not misread. */
static void test_trim(void)
{
    NEED_CORPUS();
    char vid[700];
    snprintf(vid, sizeof vid, "%s", cpath("trim.mp4"));
    uint8_t *data;
    size_t size;
    DK_CHECK_OK(dk_file_read(cpath("bf3p.mp4"), &data, &size));
    DK_CHECK_OK(dk_file_write(vid, data, size));
    truth t;
    DK_CHECK(load_truth("bf3p.mp4", NULL, &t) == 0);
    dk_video_config cfg = cfg_native();
    dk_video *v;
    DK_CHECK_OK(dk_video_open(vid, &cfg, &v));
    dk_video_memory m0, m1, m2;
    dk_video_get_memory(v, &m0);
    DK_CHECK(m0.index_bytes > (size_t)t.n * 56);   /* at least a packet record per frame */
    DK_CHECK(m0.decoders >= 1);
    int64_t fr[] = {100, 3, 77, 40, 141};
    int bad = 0;
    check_frames(v, &t, fr, 5, NULL, &bad, "trim.mp4");
    dk_video_get_memory(v, &m1);
    DK_CHECK(m1.frame_cache_bytes > 0 && m1.packet_cache_bytes > 0);
    DK_CHECK_EQ_INT(m1.index_bytes, m0.index_bytes);
    dk_video_trim(v);
    dk_video_get_memory(v, &m2);
    DK_CHECK_EQ_INT(m2.decoders, 0);
    DK_CHECK_EQ_INT(m2.frame_cache_bytes, 0);
    DK_CHECK_EQ_INT(m2.packet_cache_bytes, 0);
    DK_CHECK_EQ_INT(m2.index_bytes, m0.index_bytes);
    dk_video_trim(v);   /* twice is harmless */
    /* The same frames again: decoded (no cache left), identical. */
    dk_video_stats s0, s1;
    dk_video_get_stats(v, &s0);
    check_frames(v, &t, fr, 5, NULL, &bad, "trim.mp4 after trim");
    dk_video_get_stats(v, &s1);
    DK_CHECK_EQ_INT(bad, 0);
    DK_CHECK_EQ_INT(s1.frame_cache_hits, s0.frame_cache_hits);
    DK_CHECK(s1.frames_decoded > s0.frames_decoded);
    dk_video_get_memory(v, &m2);
    DK_CHECK(m2.decoders >= 1);
    /* Rewritten in place (same size, new modification time): refused. */
    dk_video_trim(v);
    struct timespec ts[2] = {{0, UTIME_OMIT}, {12345, 6789}};
    DK_CHECK(utimensat(AT_FDCWD, vid, ts, 0) == 0);
    int64_t one = 60;
    dk_tensor out;
    int fst = 0;
    DK_CHECK_STATUS(dk_video_get_frames(v, NULL, &one, 1, &out, &fst), DK_EIO);
    DK_CHECK_CONTAINS(dk_errmsg(), vid);
    DK_CHECK_CONTAINS(dk_errmsg(), "changed since it was opened");
    DK_CHECK_EQ_INT(fst, DK_EIO);
    dk_tensor_release(&out);
    /* Removed: refused too. */
    unlink(vid);
    DK_CHECK_STATUS(dk_video_get_frames(v, NULL, &one, 1, &out, NULL), DK_EIO);
    dk_tensor_release(&out);
    dk_video_close(v);
    dk_video_trim(NULL);
    dk_video_get_memory(NULL, &m2);
    DK_CHECK_EQ_INT(m2.index_bytes, 0);
    dk_free(data);
    free_truth(&t);
}

/* A byte-counting allocator: a 16-byte header holds each block's size. */
static _Atomic long long g_live_bytes;

static void *bc_malloc(void *ctx, size_t n)
{
    (void)ctx;
    uint8_t *p = malloc(n + 16);
    if (!p) return NULL;
    *(size_t *)p = n;
    atomic_fetch_add(&g_live_bytes, (long long)n);
    return p + 16;
}

static void bc_free(void *ctx, void *q)
{
    (void)ctx;
    if (!q) return;
    uint8_t *p = (uint8_t *)q - 16;
    atomic_fetch_sub(&g_live_bytes, (long long)*(size_t *)p);
    free(p);
}

static void *bc_realloc(void *ctx, void *q, size_t n)
{
    if (!q) return bc_malloc(ctx, n);
    uint8_t *p = (uint8_t *)q - 16;
    size_t old = *(size_t *)p;
    uint8_t *np = realloc(p, n + 16);
    if (!np) return NULL;
    *(size_t *)np = n;
    atomic_fetch_add(&g_live_bytes, (long long)n - (long long)old);
    return np + 16;
}

/* index_bytes is what a trimmed handle really keeps of drivekit's memory. */
static void test_trim_bytes(void)
{
    NEED_CORPUS();
    DK_CHECK_EQ_INT(dk_alloc_live(), 0);
    dk_allocator a = {bc_malloc, bc_realloc, bc_free, NULL};
    atomic_store(&g_live_bytes, 0);
    DK_CHECK_OK(dk_set_allocator(&a));
    static const char *files[] = {"bf0.mp4", "bf3p.mp4", "x265.mp4"};
    for (int i = 0; i < 3; i++) {
        long long before = atomic_load(&g_live_bytes);
        dk_video_config cfg = cfg_native();
        dk_video *v;
        DK_CHECK_OK(dk_video_open(cpath(files[i]), &cfg, &v));
        int64_t fr[] = {1, 30, 60, 2};
        dk_tensor t;
        DK_CHECK_OK(dk_video_get_frames(v, NULL, fr, 4, &t, NULL));
        dk_tensor_release(&t);
        dk_video_trim(v);
        long long kept = atomic_load(&g_live_bytes) - before;
        dk_video_memory m;
        dk_video_get_memory(v, &m);
        if ((long long)m.index_bytes > kept || kept - (long long)m.index_bytes > 256)
            DK_FAIL_("%s: index_bytes %zu, drivekit memory kept %lld", files[i], m.index_bytes,
                     kept);
        dk_video_close(v);
        DK_CHECK_EQ_INT(atomic_load(&g_live_bytes), before);
    }
    DK_CHECK_OK(dk_set_allocator(NULL));
}

static void test_truncated(void)
{
    NEED_CORPUS();
    truth t;
    DK_CHECK(load_truth("fast.mp4", NULL, &t) == 0);
    dk_video_config cfg = cfg_native();
    dk_video *v;
    DK_CHECK_OK(dk_video_open(cpath("trunc.mp4"), &cfg, &v));
    dk_video_info in;
    dk_video_get_info(v, &in);
    DK_CHECK(in.n_frames > 20 && in.n_frames < t.n);
    int64_t *all = malloc((size_t)t.n * sizeof *all);
    int *st = malloc((size_t)t.n * sizeof *st);
    for (int64_t f = 0; f < t.n; f++) all[f] = f;
    dk_tensor out;
    int r = dk_video_get_frames(v, NULL, all, t.n, &out, st);
    DK_CHECK(r != DK_OK);
    DK_CHECK(strstr(dk_errmsg(), "trunc.mp4") != NULL);
    DK_CHECK(strstr(dk_errmsg(), ": frame ") != NULL);
    int64_t exact = 0, wrong = 0;
    size_t fb = dk_video_frame_bytes(v);
    for (int64_t f = 0; f < t.n; f++) {
        const uint8_t *p = (uint8_t *)out.data + (size_t)f * fb;
        if (st[f] == DK_OK) {
            char hex[33];
            md5_of(p, fb, hex);
            if (strcmp(hex, t.md5[f]) == 0) exact++;
            else wrong++;
        } else {
            int nz = 0;
            for (size_t k = 0; k < fb; k++) nz |= p[k];
            DK_CHECK_EQ_INT(nz, 0);
            if (f >= in.n_frames) DK_CHECK_EQ_INT(st[f], DK_ERANGE);
        }
    }
    DK_CHECK_EQ_INT(wrong, 0);
    /* Everything in GOPs that end before the cut decodes exactly. */
    DK_CHECK(exact >= in.n_frames - 12);
    dk_tensor_release(&out);
    int64_t late = in.n_frames + 3;
    DK_CHECK_STATUS(dk_video_get_frames(v, NULL, &late, 1, &out, NULL), DK_ERANGE);
    char want[64];
    snprintf(want, sizeof want, "frame %lld", (long long)late);
    DK_CHECK_CONTAINS(dk_errmsg(), want);
    DK_CHECK_CONTAINS(dk_video_errmsg(v), want);
    dk_tensor_release(&out);
    free(all);
    free(st);
    dk_video_close(v);
    free_truth(&t);
}

static void test_corrupted(void)
{
    NEED_CORPUS();
    truth t;
    DK_CHECK(load_truth("fast.mp4", NULL, &t) == 0);
    dk_video_config cfg = cfg_native();
    dk_video *v;
    DK_CHECK_OK(dk_video_open(cpath("corrupt.mp4"), &cfg, &v));
    dk_video_info in;
    dk_video_get_info(v, &in);
    DK_CHECK_EQ_INT(in.n_frames, t.n);
    int64_t errors = 0, exact = 0;
    /* Per frame (single requests) and as one batch: exact or an error. */
    for (int pass = 0; pass < 2; pass++) {
        size_t fb = dk_video_frame_bytes(v);
        for (int64_t f = 0; f < t.n; f++) {
            int st;
            dk_tensor out;
            int64_t fr = pass == 0 ? f : (f * 37) % t.n;
            dk_video_get_frames(v, NULL, &fr, 1, &out, &st);
            char hex[33];
            md5_of(out.data, fb, hex);
            if (st == DK_OK) {
                if (strcmp(hex, t.md5[fr]) != 0) {
                    fprintf(stderr, "  corrupt.mp4 frame %lld returned OK with a wrong picture\n",
                            (long long)fr);
                    DK_CHECK(0);
                }
                exact++;
            } else {
                errors++;
                DK_CHECK(st == DK_EINVALIDDATA || st == DK_EIO);
            }
            dk_tensor_release(&out);
        }
        dk_video_reset_stats(v);
    }
    printf("     corrupted clip: %lld exact, %lld errors\n", (long long)exact, (long long)errors);
    DK_CHECK(errors > 0);
    DK_CHECK(exact > t.n);
    dk_video_close(v);
    free_truth(&t);
}

static void test_errors(void)
{
    NEED_CORPUS();
    dk_video *v;
    DK_CHECK_STATUS(dk_video_open(cpath("does-not-exist.mp4"), NULL, &v), DK_ENOENT);
    DK_CHECK(v == NULL);
    DK_CHECK_STATUS(dk_video_open(cpath("corpus.ok"), NULL, &v), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_video_open(NULL, NULL, &v), DK_EINVAL);
    dk_video_config cfg;
    dk_video_config_init(&cfg);
    cfg.max_decoders = 0;
    DK_CHECK_STATUS(dk_video_open(cpath("bf2.mp4"), &cfg, &v), DK_EINVAL);
    dk_video_config_init(&cfg);
    cfg.output = DK_VIDEO_NATIVE;
    cfg.out_width = 10;
    DK_CHECK_STATUS(dk_video_open(cpath("bf2.mp4"), &cfg, &v), DK_EINVAL);
    cfg = cfg_native();
    DK_CHECK_OK(dk_video_open(cpath("bf2.mp4"), &cfg, &v));
    int64_t fr[] = {3, -1, 100, 99};
    int st[4];
    dk_tensor out;
    DK_CHECK_STATUS(dk_video_get_frames(v, NULL, fr, 4, &out, st), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_errmsg(), "dk_video_get_frames(): ");
    DK_CHECK_CONTAINS(dk_errmsg(), "bf2.mp4: frame -1: out of range");
    DK_CHECK_EQ_INT(st[0], DK_OK);
    DK_CHECK_EQ_INT(st[1], DK_ERANGE);
    DK_CHECK_EQ_INT(st[2], DK_ERANGE);
    DK_CHECK_EQ_INT(st[3], DK_OK);
    size_t fb = dk_video_frame_bytes(v);
    int nz = 0;
    for (size_t k = 0; k < fb; k++) nz |= ((uint8_t *)out.data)[fb + k];
    DK_CHECK_EQ_INT(nz, 0);
    dk_tensor_release(&out);
    DK_CHECK_STATUS(dk_video_get_frames(v, NULL, NULL, 2, &out, st), DK_EINVAL);
    DK_CHECK_STATUS(dk_video_get_frames(v, NULL, fr, 0, &out, st), DK_OK);
    dk_tensor_release(&out);
    int64_t t1, n = 2, kf[2];
    double sec;
    DK_CHECK_OK(dk_video_frame_time(v, 25, &t1, &sec));
    DK_CHECK_NEAR(sec, 1.0, 1e-6);
    DK_CHECK_STATUS(dk_video_frame_time(v, 100, &t1, &sec), DK_ERANGE);
    DK_CHECK_STATUS(dk_video_keyframes(v, kf, &n), DK_ERANGE);
    DK_CHECK_EQ_INT(n, 9);
    /* get_frames_into with a stride. */
    uint8_t *buf = calloc(3, fb + 64);
    int64_t f3[] = {10, 11, 10};
    DK_CHECK_OK(dk_video_get_frames_into(v, NULL, f3, 3, buf, fb + 64, st));
    DK_CHECK(memcmp(buf, buf + 2 * (fb + 64), fb) == 0);
    DK_CHECK(memcmp(buf, buf + (fb + 64), fb) != 0);
    DK_CHECK_STATUS(dk_video_get_frames_into(v, NULL, f3, 3, buf, fb - 1, st), DK_EINVAL);
    free(buf);
    char hex[33];
    DK_CHECK_STATUS(dk_video_frame_md5(v, 100, hex), DK_ERANGE);
    dk_video_close(v);
    dk_video_close(NULL);
}

static void test_sequential(void)
{
    NEED_CORPUS();
    /* Frame-by-frame requests in display order decode each picture about
       once (read-ahead into the frame cache), with no seek per GOP. */
    static const char *files[] = {"bf2.mp4", "og264.mp4", "x265.mp4"};
    for (size_t i = 0; i < 3; i++) {
        dk_video_config cfg;
        dk_video_config_init(&cfg);
        dk_video *v;
        DK_CHECK_OK(dk_video_open(cpath(files[i]), &cfg, &v));
        dk_video_info in;
        dk_video_get_info(v, &in);
        for (int64_t f = 0; f < in.n_frames; f++) {
            dk_tensor out;
            DK_CHECK_OK(dk_video_get_frames(v, NULL, &f, 1, &out, NULL));
            dk_tensor_release(&out);
        }
        dk_video_stats s;
        dk_video_get_stats(v, &s);
        printf("     sequential %-9s frames %lld decoded %lld seeks %lld cache hits %lld\n", files[i],
               (long long)in.n_frames, (long long)s.frames_decoded, (long long)s.seeks,
               (long long)s.frame_cache_hits);
        DK_CHECK(s.frames_decoded <= in.n_frames + in.n_frames / 4);
        DK_CHECK(s.seeks <= 1);
        dk_video_close(v);
    }
}

/* FFmpeg frame and slice threads inside each decoder: the same pictures. */
static void test_decoder_threads(void)
{
    NEED_CORPUS();
    static const char *files[] = {"og264.mp4", "x265.mp4", "bf3p.mp4", "el.mp4"};
    dk_rng rng;
    dk_rng_init(&rng, 31, 0);
    for (size_t i = 0; i < 4; i++) {
        truth t;
        DK_CHECK(load_truth(files[i], NULL, &t) == 0);
        dk_video_config cfg = cfg_native();
        cfg.decoder_threads = i == 0 ? 0 : 3;
        cfg.frame_cache_bytes = 0;
        dk_video *v;
        DK_CHECK_OK(dk_video_open(cpath(files[i]), &cfg, &v));
        int bad = 0;
        for (int rep = 0; rep < 6; rep++) {
            int64_t fr[5];
            for (int k = 0; k < 5; k++) fr[k] = dk_rng_below(&rng, (uint32_t)t.n);
            check_frames(v, &t, fr, 5, NULL, &bad, files[i]);
        }
        int64_t *all = malloc((size_t)t.n * sizeof *all);
        for (int64_t f = 0; f < t.n; f++) all[f] = f;
        check_frames(v, &t, all, t.n, NULL, &bad, files[i]);
        free(all);
        DK_CHECK_EQ_INT(bad, 0);
        dk_video_close(v);
        free_truth(&t);
    }
}

static void test_memory_source(void)
{
    NEED_CORPUS();
    static const char *files[] = {"bf2.mkv", "x265.mp4", "el.mp4"};
    for (size_t i = 0; i < 3; i++) {
        uint8_t *data;
        size_t size;
        DK_CHECK_OK(dk_file_read(cpath(files[i]), &data, &size));
        truth t;
        DK_CHECK(load_truth(files[i], NULL, &t) == 0);
        dk_video_config cfg = cfg_native();
        dk_video *v;
        DK_CHECK_OK(dk__video_open_memory(data, size, &cfg, &v));
        int64_t fr[] = {0, 50, 13, 77, 2, 50};
        int bad = 0;
        check_frames(v, &t, fr, 6, NULL, &bad, files[i]);
        DK_CHECK_EQ_INT(bad, 0);
        dk_video_close(v);
        free_truth(&t);
        dk_free(data);
    }
}

/* Concurrent use of one handle from several threads. */
typedef struct thr_arg {
    dk_video *v;
    const truth *t;
    int bad;
    uint64_t seed;
} thr_arg;

static void *thr_main(void *p)
{
    thr_arg *a = p;
    dk_rng rng;
    dk_rng_init(&rng, a->seed, 3);
    for (int r = 0; r < 12; r++) {
        int64_t fr[6];
        for (int k = 0; k < 6; k++) fr[k] = dk_rng_below(&rng, (uint32_t)a->t->n);
        dk_tensor out;
        int st[6];
        dk_video_get_frames(a->v, NULL, fr, 6, &out, st);
        size_t fb = dk_video_frame_bytes(a->v);
        for (int k = 0; k < 6; k++) {
            char hex[33];
            dk__md5_hex((uint8_t *)out.data + (size_t)k * fb, fb, hex);
            if (st[k] != DK_OK || strcmp(hex, a->t->md5[fr[k]]) != 0) a->bad++;
        }
        dk_tensor_release(&out);
    }
    return NULL;
}

/* Trims the handle until told to stop, while other threads decode. */
typedef struct trim_arg {
    dk_video *v;
    int stop;
    int trims;
} trim_arg;

static void *trim_main(void *p)
{
    trim_arg *a = p;
    while (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
        dk_video_trim(a->v);
        a->trims++;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* Three threads making random requests on one handle; none may get a wrong
 * frame. */
static void three_decoding_threads(dk_video *v, const truth *t, uint64_t seed)
{
    pthread_t th[3];
    thr_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (thr_arg){v, t, 0, seed + (uint64_t)i};
        pthread_create(&th[i], NULL, thr_main, &args[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        DK_CHECK_EQ_INT(args[i].bad, 0);
    }
}

static void test_threads_and_leaks(void)
{
    NEED_CORPUS();
    int64_t live0 = dk_alloc_live();
    truth t;
    DK_CHECK(load_truth("x265.mp4", NULL, &t) == 0);
    dk_video_config cfg = cfg_native();
    cfg.max_decoders = 2;
    cfg.frame_cache_bytes = (size_t)2 << 20;
    cfg.packet_cache_bytes = (size_t)256 << 10;
    dk_video *v;
    DK_CHECK_OK(dk_video_open(cpath("x265.mp4"), &cfg, &v));
    three_decoding_threads(v, &t, 10);
    DK_CHECK(dk__video_decoders(v) <= 2);
    /* The same with a fourth thread trimming the handle all along. */
    trim_arg ta = {v, 0, 0};
    pthread_t tt;
    pthread_create(&tt, NULL, trim_main, &ta);
    three_decoding_threads(v, &t, 20);
    __atomic_store_n(&ta.stop, 1, __ATOMIC_RELEASE);
    pthread_join(tt, NULL);
    DK_CHECK(ta.trims > 0);
    DK_CHECK(dk__video_decoders(v) <= 2);
    dk_video_close(v);

    /* Many small random requests over several configurations. */
    dk_rng rng;
    dk_rng_init(&rng, 4242, 0);
    static const char *files[] = {"bf2.mp4", "og264.mp4", "bf2.mkv", "vfr.mp4", "corrupt.mp4",
                                  "trunc.mp4"};
    dk_pool *pool;
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = 3;
    DK_CHECK_OK(dk_pool_create(&pc, &pool));
    int64_t total = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        dk_video_config c;
        dk_video_config_init(&c);
        c.output = (dk_video_output)dk_rng_below(&rng, 3);
        c.frame_cache_bytes = dk_rng_below(&rng, 2) ? 0 : (size_t)dk_rng_below(&rng, 2000000);
        c.packet_cache_bytes = dk_rng_below(&rng, 2) ? 0 : (size_t)dk_rng_below(&rng, 400000);
        c.max_decoders = 1 + (int)dk_rng_below(&rng, 4);
        if (c.output == DK_VIDEO_RGB24 && dk_rng_below(&rng, 2)) c.out_width = 96;
        DK_CHECK_OK(dk_video_open(cpath(files[i]), &c, &v));
        dk_video_info in;
        dk_video_get_info(v, &in);
        for (int r = 0; r < 90; r++) {
            int64_t fr[8];
            int n = 1 + (int)dk_rng_below(&rng, 8);
            for (int k = 0; k < n; k++)
                fr[k] = (int64_t)dk_rng_below(&rng, (uint32_t)in.n_frames + 3) - 1;
            dk_tensor out;
            int st[8];
            dk_video_get_frames(v, (r & 1) ? pool : NULL, fr, n, &out, st);
            dk_tensor_release(&out);
            total += n;
        }
        dk_video_close(v);
    }
    dk_pool_destroy(pool);
    free_truth(&t);
    printf("     %lld random frame requests\n", (long long)total);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_ffmpeg_log_level(void)
{
    DK_CHECK_OK(dk_video_set_ffmpeg_log_level("warning"));
    DK_CHECK_EQ_INT(av_log_get_level(), AV_LOG_WARNING);
    DK_CHECK_STR(dk_video_ffmpeg_log_level(), "warning");
    DK_CHECK_OK(dk_video_set_ffmpeg_log_level("trace"));
    DK_CHECK_EQ_INT(av_log_get_level(), AV_LOG_TRACE);
    av_log_set_level(AV_LOG_INFO + 1);   /* between names: the quieter one */
    DK_CHECK_STR(dk_video_ffmpeg_log_level(), "info");
    DK_CHECK_STATUS(dk_video_set_ffmpeg_log_level("loud"), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "unknown level \"loud\"");
    DK_CHECK_STATUS(dk_video_set_ffmpeg_log_level(NULL), DK_EINVAL);
    DK_CHECK_EQ_INT(av_log_get_level(), AV_LOG_INFO + 1);   /* unchanged by errors */
    DK_CHECK_OK(dk_video_set_ffmpeg_log_level("quiet"));
    DK_CHECK_EQ_INT(av_log_get_level(), AV_LOG_QUIET);
    DK_CHECK_STR(dk_video_ffmpeg_log_level(), "quiet");
}

int main(int argc, char **argv)
{
    av_log_set_level(AV_LOG_QUIET);
    static const dk_test_case cases[] = {
        DK_TEST(test_md5_rfc1321),
        DK_TEST(test_lru_bounds),
        DK_TEST(test_corpus_and_info),
        DK_TEST(test_md5_every_frame),
        DK_TEST(test_random_subsets),
        DK_TEST(test_work_ratio),
        DK_TEST(test_rgb_matches_ffmpeg),
        DK_TEST(test_nv12_and_resize),
        DK_TEST(test_lru_spares),
        DK_TEST(test_frame_cache),
        DK_TEST(test_frame_cache_choice),
        DK_TEST(test_multi),
        DK_TEST(test_index_persistence),
        DK_TEST(test_trim),
        DK_TEST(test_trim_bytes),
        DK_TEST(test_truncated),
        DK_TEST(test_corrupted),
        DK_TEST(test_errors),
        DK_TEST(test_sequential),
        DK_TEST(test_decoder_threads),
        DK_TEST(test_memory_source),
        DK_TEST(test_threads_and_leaks),
        DK_TEST(test_ffmpeg_log_level),
    };
    return dk_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
