/*
 * drivekit video: inspect videos and decode exact frames on demand.
 *
 * Frame ids are display-order indices after edit lists: frame i is the i-th
 * picture `ffmpeg -fps_mode passthrough` outputs. framemd5 hashes the decoded
 * picture in its native pixel format, planes packed, as ffmpeg's framemd5
 * muxer does, so its lines can be checked against
 * `ffmpeg -i FILE -fps_mode passthrough -f framemd5 -` (frame i = line i).
 */
#define _POSIX_C_SOURCE 200809L   /* sysconf */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libavutil/md5.h>

#include "cli.h"

static const char *usage =
    "drivekit video info FILE [--json] [--keyframes] [--index auto|PATH]\n"
    "       drivekit video framemd5 FILE --frames SPEC [--threads T] [--index auto|PATH]\n"
    "       drivekit video extract FILE --frames SPEC --out DIR [--size WxH] [--threads T]\n"
    "                              [--index auto|PATH]";

static void print_help(void)
{
    printf("usage: %s\n\n"
           "  info       codec, pixel format, size, frame count, GOP structure (random-access\n"
           "             points, longest GOP, reorder depth, open GOP), frame rate (constant or\n"
           "             variable), duration and colour description\n"
           "  framemd5   one line '<frame> <md5>' per requested frame, in request order: the MD5\n"
           "             of the decoded picture in its native pixel format, as ffmpeg's framemd5\n"
           "             muxer computes it (`ffmpeg -i FILE -fps_mode passthrough -f framemd5 -`)\n"
           "  extract    write the requested frames as DIR/frame_NNNNNN.png (RGB)\n\n"
           "options:\n"
           "  --frames SPEC      'all', or a comma-separated list of frame ids and inclusive\n"
           "                     ranges: 3,17,99 or 0-99 or 10-20,50,90- ('A-' runs to the last\n"
           "                     frame). Ids are display-order frames counted from 0 after edit\n"
           "                     lists; order and duplicates are kept (extract writes each once)\n"
           "  --out DIR          extract: output folder (created)\n"
           "  --size WxH         extract: resize (bilinear); W or H 0 keeps the aspect ratio\n"
           "  --threads T        worker threads decoding GOPs in parallel, caller included;\n"
           "                     default: online CPUs\n"
           "  --index auto|PATH  load the frame index from PATH (auto: FILE.dkidx) when it is\n"
           "                     valid for FILE, else scan FILE and write it there\n"
           "  --json             info: print one JSON object\n"
           "  --keyframes        info: also list the frame ids of the random-access points\n\n"
           "Exit status: 0 success; 1 a file or frame failed (the message names the file and the\n"
           "frame; framemd5 and extract stop at the first frame that cannot be decoded, after\n"
           "handling the frames before it); 2 bad usage.\n",
           usage);
}

enum { OPT_FRAMES = 256, OPT_OUT, OPT_SIZE, OPT_THREADS, OPT_INDEX, OPT_JSON, OPT_KEYFRAMES, OPT_HELP };

typedef struct vopts {
    const char *file;
    const char *frames;
    const char *out;
    const char *index;
    int width, height;   /* --size; 0 = native */
    int sized;
    long threads;
    int json, keyframes;
} vopts;

/* Parses "W x H" where one side may be 0 (keep the aspect ratio). */
static int parse_size0(const char *s, int *w, int *h)
{
    const char *x = s ? strchr(s, 'x') : NULL;
    long a, b;
    char buf[32];
    if (!x || (size_t)(x - s) >= sizeof buf) return -1;
    memcpy(buf, s, (size_t)(x - s));
    buf[x - s] = '\0';
    if (cli_parse_int(buf, 0, 16384, &a) || cli_parse_int(x + 1, 0, 16384, &b) || (a == 0 && b == 0))
        return -1;
    *w = (int)a;
    *h = (int)b;
    return 0;
}

#define ALLOW(opt) (1u << ((opt) - OPT_FRAMES))

/* Common option parsing; `allowed` is the ALLOW() mask of the options the
 * subcommand takes. */
static int parse_opts(const char *cmd, int argc, char **argv, unsigned allowed, vopts *o)
{
    static const struct option opts[] = {
        {"frames", required_argument, NULL, OPT_FRAMES},
        {"out", required_argument, NULL, OPT_OUT},
        {"size", required_argument, NULL, OPT_SIZE},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"index", required_argument, NULL, OPT_INDEX},
        {"json", no_argument, NULL, OPT_JSON},
        {"keyframes", no_argument, NULL, OPT_KEYFRAMES},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    o->threads = cli_default_threads();
    int c, idx = -1;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        if (c == OPT_HELP) {
            print_help();
            return -1;
        }
        if (c == '?' || c == ':') {
            if (optopt && optopt >= OPT_FRAMES)
                return cli_usage_error(cmd, usage, "option '%s' needs a value", argv[optind - 1]);
            return cli_usage_error(cmd, usage, "unknown option '%s'", argv[optind - 1]);
        }
        if (c < OPT_FRAMES || c > OPT_HELP || !(allowed & ALLOW(c)))
            return cli_usage_error(cmd, usage, "option '--%s' does not apply to '%s'",
                                   idx >= 0 ? opts[idx].name : "?", cmd);
        switch (c) {
        case OPT_FRAMES: o->frames = optarg; break;
        case OPT_OUT: o->out = optarg; break;
        case OPT_SIZE:
            if (parse_size0(optarg, &o->width, &o->height))
                return cli_usage_error(cmd, usage, "bad --size '%s' (want WxH, 0..16384, one may be 0)",
                                       optarg);
            o->sized = 1;
            break;
        case OPT_THREADS:
            if (cli_parse_int(optarg, 1, 1024, &o->threads))
                return cli_usage_error(cmd, usage, "bad --threads '%s' (1..1024)", optarg);
            break;
        case OPT_INDEX:
            if (!*optarg) return cli_usage_error(cmd, usage, "empty --index");
            o->index = optarg;
            break;
        case OPT_JSON: o->json = 1; break;
        case OPT_KEYFRAMES: o->keyframes = 1; break;
        default: return cli_usage_error(cmd, usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return cli_usage_error(cmd, usage, "no FILE given");
    if (argc - optind > 1) return cli_usage_error(cmd, usage, "unexpected argument '%s'", argv[optind + 1]);
    o->file = argv[optind];
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Frame lists                                                               */

/* Parses one decimal frame id (no sign, at most 18 digits). */
static const char *parse_id(const char *s, int64_t *out)
{
    int64_t v = 0;
    int k = 0;
    while (*s >= '0' && *s <= '9' && k < 18) {
        v = v * 10 + (*s++ - '0');
        k++;
    }
    if (k == 0 || (*s >= '0' && *s <= '9')) return NULL;
    *out = v;
    return s;
}

/* Walks SPEC ("all" | item[,item...], item = N | A-B | A-). With n_frames < 0
 * only the syntax is checked (returns 0 / -1). Otherwise the ids go to
 * out[0..*count) (out NULL: only count them) and the first id outside
 * [0, n_frames) is reported through *bad (returns 1). */
static int walk_frames(const char *spec, int64_t n_frames, int64_t *out, int64_t *count, int64_t *bad)
{
    int64_t k = 0;
    if (!strcmp(spec, "all")) {
        if (n_frames >= 0) {
            if (out)
                for (int64_t f = 0; f < n_frames; f++) out[f] = f;
            *count = n_frames;
        }
        return 0;
    }
    const char *s = spec;
    for (;;) {
        int64_t a, b;
        const char *e = parse_id(s, &a);
        if (!e) return -1;
        b = a;
        if (*e == '-') {
            e++;
            if (*e == ',' || *e == '\0') {
                b = n_frames < 0 ? a : n_frames - 1;   /* "A-": to the last frame */
                if (n_frames >= 0 && a > b) b = a;      /* reported as out of range */
            } else {
                if (!(e = parse_id(e, &b))) return -1;
                if (b < a) return -1;
            }
        }
        if (n_frames >= 0) {
            if (a >= n_frames || b >= n_frames) {
                *bad = a >= n_frames ? a : b;
                return 1;
            }
            for (int64_t f = a; f <= b; f++) {
                if (out) out[k] = f;
                k++;
            }
        }
        if (*e == '\0') break;
        if (*e != ',') return -1;
        s = e + 1;
    }
    if (n_frames >= 0) *count = k;
    return 0;
}

/* Expands SPEC for an open video. 0 on success; otherwise the exit status
 * (the message printed). */
static int expand_frames(dk_video *v, const char *spec, int64_t **out, int64_t *n)
{
    dk_video_info info;
    int st = dk_video_get_info(v, &info);
    if (st) return cli_fail(st);
    int64_t count = 0, bad = -1;
    if (walk_frames(spec, info.n_frames, NULL, &count, &bad)) {
        /* The library's own out-of-range message names file and frame. */
        return cli_fail(dk_video_frame_time(v, bad, NULL, NULL));
    }
    *out = malloc((size_t)(count ? count : 1) * sizeof **out);
    if (!*out) {
        fprintf(stderr, "drivekit: out of memory for %" PRId64 " frame ids\n", count);
        return CLI_FAIL;
    }
    walk_frames(spec, info.n_frames, *out, &count, &bad);
    *n = count;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Shared plumbing                                                           */

static int open_video(const vopts *o, dk_video_output output, dk_video **v)
{
    dk_video_config cfg;
    dk_video_config_init(&cfg);
    cfg.output = output;
    cfg.out_width = o->width;
    cfg.out_height = o->height;
    cfg.index_path = o->index;
    /* Parallel GOPs of one video need one decoder context each. */
    cfg.max_decoders = o->threads < 4 ? 4 : o->threads > 64 ? 64 : (int)o->threads;
    int st = dk_video_open(o->file, &cfg, v);
    return st ? cli_fail(st) : CLI_OK;
}

static int make_pool(long threads, dk_pool **pool)
{
    dk_pool_config pc;
    dk_pool_config_init(&pc);
    pc.n_threads = (int)threads;
    int st = dk_pool_create(&pc, pool);
    return st ? cli_fail(st) : CLI_OK;
}

/* Frames per request: enough to keep every thread busy on whole GOPs, few
 * enough that a chunk of decoded pictures stays within about 256 MiB. */
static int64_t chunk_frames(const dk_video *v, long threads)
{
    size_t fb = dk_video_frame_bytes(v);
    int64_t by_mem = (int64_t)(((size_t)256 << 20) / (fb ? fb : 1));
    int64_t want = 64 * (int64_t)threads;
    int64_t c = want < by_mem ? want : by_mem;
    return c < 1 ? 1 : c;
}

/* First frame of a request that failed (request order), or n. */
static int64_t first_failure(const int *status, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (status[i] != DK_OK) return i;
    return n;
}

/* ------------------------------------------------------------------------ */
/* info                                                                      */

static int video_info(int argc, char **argv)
{
    const char *cmd = "video info";
    vopts o;
    int r = parse_opts(cmd, argc, argv, ALLOW(OPT_INDEX) | ALLOW(OPT_JSON) | ALLOW(OPT_KEYFRAMES), &o);
    if (r) return r < 0 ? CLI_OK : r;
    o.threads = 1;
    dk_video *v;
    if ((r = open_video(&o, DK_VIDEO_RGB24, &v))) return r;
    dk_video_info in;
    int st = dk_video_get_info(v, &in);
    int64_t *kf = NULL, nk = in.n_keyframes;
    if (!st && o.keyframes) {
        kf = malloc((size_t)(nk > 0 ? nk : 1) * sizeof *kf);
        if (!kf) {
            fprintf(stderr, "drivekit: out of memory\n");
            dk_video_close(v);
            return CLI_FAIL;
        }
        st = dk_video_keyframes(v, kf, &nk);
    }
    if (st) {
        r = cli_fail(st);
        goto done;
    }
    const char *matrix = in.colorspace_bt709 ? "bt709" : "bt601";
    const char *range = in.full_range ? "full" : "limited";
    if (o.json) {
        dk_jsonw *w;
        if ((st = dk_jsonw_create(2, &w))) {
            r = cli_fail(st);
            goto done;
        }
        dk_jsonw_object_begin(w);
        dk_jsonw_key(w, "file"); dk_jsonw_string(w, o.file);
        dk_jsonw_key(w, "codec"); dk_jsonw_string(w, in.codec);
        dk_jsonw_key(w, "pix_fmt"); dk_jsonw_string(w, in.pix_fmt);
        dk_jsonw_key(w, "width"); dk_jsonw_int(w, in.width);
        dk_jsonw_key(w, "height"); dk_jsonw_int(w, in.height);
        dk_jsonw_key(w, "bit_depth"); dk_jsonw_int(w, in.bit_depth);
        dk_jsonw_key(w, "frames"); dk_jsonw_int(w, in.n_frames);
        dk_jsonw_key(w, "keyframes"); dk_jsonw_int(w, in.n_keyframes);
        dk_jsonw_key(w, "max_gop"); dk_jsonw_int(w, in.max_gop);
        dk_jsonw_key(w, "reorder_depth"); dk_jsonw_int(w, in.has_b_frames);
        dk_jsonw_key(w, "b_frames"); dk_jsonw_bool(w, in.has_b_frames > 0);
        dk_jsonw_key(w, "open_gop"); dk_jsonw_bool(w, in.open_gop);
        dk_jsonw_key(w, "vfr"); dk_jsonw_bool(w, in.vfr);
        dk_jsonw_key(w, "fps"); dk_jsonw_number(w, in.avg_fps);
        dk_jsonw_key(w, "duration"); dk_jsonw_number(w, in.duration);
        dk_jsonw_key(w, "colorspace"); dk_jsonw_string(w, matrix);
        dk_jsonw_key(w, "color_range"); dk_jsonw_string(w, range);
        if (kf) {
            dk_jsonw_key(w, "keyframe_ids");
            dk_jsonw_array_begin(w);
            for (int64_t i = 0; i < nk; i++) dk_jsonw_int(w, kf[i]);
            dk_jsonw_array_end(w);
        }
        dk_jsonw_object_end(w);
        const char *text;
        size_t len;
        st = dk_jsonw_finish(w, &text, &len);
        if (!st) printf("%s%s", text, len && text[len - 1] == '\n' ? "" : "\n");
        dk_jsonw_destroy(w);
        if (st) r = cli_fail(st);
        goto done;
    }
    printf("file:        %s\n", o.file);
    printf("codec:       %s, %s (%d-bit)\n", in.codec, in.pix_fmt, in.bit_depth);
    printf("size:        %dx%d\n", in.width, in.height);
    printf("frames:      %" PRId64 "\n", in.n_frames);
    printf("duration:    %.3f s\n", in.duration);
    printf("fps:         %.3f (%s frame rate)\n", in.avg_fps, in.vfr ? "variable" : "constant");
    printf("keyframes:   %" PRId64 " random-access points, longest GOP %d frames\n", in.n_keyframes,
           in.max_gop);
    if (in.has_b_frames)
        printf("B-frames:    yes, reorder depth %d\n", in.has_b_frames);
    else
        printf("B-frames:    no (reorder depth 0)\n");
    printf("open GOP:    %s\n", in.open_gop ? "yes (CRA / recovery-point random-access points)" : "no");
    printf("colour:      %s, %s range\n", in.colorspace_bt709 ? "BT.709" : "BT.601", range);
    if (kf) {
        printf("keyframe ids:");
        for (int64_t i = 0; i < nk; i++) printf(" %" PRId64, kf[i]);
        printf("\n");
    }
done:
    free(kf);
    dk_video_close(v);
    return r;
}

/* ------------------------------------------------------------------------ */
/* framemd5                                                                  */

typedef struct md5_job {
    const uint8_t *data;
    size_t frame_bytes;
    char (*hex)[33];
} md5_job;

static void md5_range(void *ctx, int64_t begin, int64_t end, int ith)
{
    (void)ith;
    const md5_job *j = ctx;
    static const char digits[] = "0123456789abcdef";
    for (int64_t i = begin; i < end; i++) {
        uint8_t d[16];
        av_md5_sum(d, j->data + (size_t)i * j->frame_bytes, j->frame_bytes);
        for (int b = 0; b < 16; b++) {
            j->hex[i][2 * b] = digits[d[b] >> 4];
            j->hex[i][2 * b + 1] = digits[d[b] & 15];
        }
        j->hex[i][32] = '\0';
    }
}

static int video_framemd5(int argc, char **argv)
{
    const char *cmd = "video framemd5";
    vopts o;
    int r = parse_opts(cmd, argc, argv, ALLOW(OPT_FRAMES) | ALLOW(OPT_THREADS) | ALLOW(OPT_INDEX), &o);
    if (r) return r < 0 ? CLI_OK : r;
    if (!o.frames) return cli_usage_error(cmd, usage, "--frames SPEC is required");
    int64_t dummy;
    if (walk_frames(o.frames, -1, NULL, &dummy, &dummy))
        return cli_usage_error(cmd, usage, "bad --frames '%s' (want all, N, A-B, A- joined by commas)",
                               o.frames);
    dk_video *v = NULL;
    dk_pool *pool = NULL;
    int64_t *frames = NULL, n = 0;
    int *status = NULL;
    char(*hex)[33] = NULL;
    if ((r = open_video(&o, DK_VIDEO_NATIVE, &v)) || (r = make_pool(o.threads, &pool)) ||
        (r = expand_frames(v, o.frames, &frames, &n)))
        goto done;
    int64_t chunk = chunk_frames(v, o.threads);
    status = malloc((size_t)chunk * sizeof *status);
    hex = malloc((size_t)chunk * sizeof *hex);
    if (!status || !hex) {
        fprintf(stderr, "drivekit: out of memory\n");
        r = CLI_FAIL;
        goto done;
    }
    for (int64_t off = 0; off < n; off += chunk) {
        int64_t m = n - off < chunk ? n - off : chunk;
        dk_tensor t;
        int st = dk_video_get_frames(v, pool, frames + off, m, &t, status);
        if (st == DK_EINVAL || st == DK_ENOMEM) {
            r = cli_fail(st);
            goto done;
        }
        int64_t ok = st ? first_failure(status, m) : m;
        md5_job job = {(const uint8_t *)t.data, dk_video_frame_bytes(v), hex};
        if (ok > 0) dk_pool_for(pool, ok, 4, md5_range, &job);
        for (int64_t i = 0; i < ok; i++) printf("%" PRId64 " %s\n", frames[off + i], hex[i]);
        dk_tensor_release(&t);
        if (ok < m) {
            fflush(stdout);
            r = cli_fail(st);
            goto done;
        }
    }
done:
    free(hex);
    free(status);
    free(frames);
    dk_pool_destroy(pool);
    dk_video_close(v);
    return r;
}

/* ------------------------------------------------------------------------ */
/* extract                                                                   */

static int make_dirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) {
        fprintf(stderr, "drivekit: bad output folder '%s'\n", path);
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "drivekit: %s: cannot create directory: %s\n", buf, strerror(errno));
            return -1;
        }
        buf[i] = c;
    }
    return 0;
}

typedef struct png_job {
    const dk_tensor *frames;   /* (m, H, W, 3) */
    const int64_t *ids;
    const char *dir;
    int *status;
    char (*msg)[DK_ERRMSG_MAX];
} png_job;

static void png_range(void *ctx, int64_t begin, int64_t end, int ith)
{
    (void)ith;
    const png_job *j = ctx;
    const dk_tensor *t = j->frames;
    for (int64_t i = begin; i < end; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/frame_%06" PRId64 ".png", j->dir, j->ids[i]);
        dk_tensor img;
        int64_t shape[3] = {t->shape[1], t->shape[2], t->shape[3]};
        size_t bytes = (size_t)(shape[0] * shape[1] * shape[2]);
        int st = dk_tensor_view(&img, (uint8_t *)t->data + (size_t)i * bytes, DK_U8, 3, shape);
        if (!st) st = dk_image_save(path, &img, 95);
        j->status[i] = st;
        if (st) snprintf(j->msg[i], sizeof j->msg[i], "%s", dk_errmsg());
    }
}

static int video_extract(int argc, char **argv)
{
    const char *cmd = "video extract";
    vopts o;
    int r = parse_opts(cmd, argc, argv,
                       ALLOW(OPT_FRAMES) | ALLOW(OPT_OUT) | ALLOW(OPT_SIZE) | ALLOW(OPT_THREADS) | ALLOW(OPT_INDEX),
                       &o);
    if (r) return r < 0 ? CLI_OK : r;
    if (!o.frames) return cli_usage_error(cmd, usage, "--frames SPEC is required");
    if (!o.out) return cli_usage_error(cmd, usage, "--out DIR is required");
    int64_t dummy;
    if (walk_frames(o.frames, -1, NULL, &dummy, &dummy))
        return cli_usage_error(cmd, usage, "bad --frames '%s' (want all, N, A-B, A- joined by commas)",
                               o.frames);
    dk_video *v = NULL;
    dk_pool *pool = NULL;
    int64_t *frames = NULL, n = 0, written = 0;
    int *status = NULL, *saved = NULL;
    char(*msg)[DK_ERRMSG_MAX] = NULL;
    uint8_t *seen = NULL;
    if ((r = open_video(&o, DK_VIDEO_RGB24, &v)) || (r = make_pool(o.threads, &pool)) ||
        (r = expand_frames(v, o.frames, &frames, &n)))
        goto done;
    if (make_dirs(o.out)) {
        r = CLI_FAIL;
        goto done;
    }
    /* One file per frame id: drop repeats, keep the first occurrence's place. */
    dk_video_info in;
    dk_video_get_info(v, &in);
    seen = calloc((size_t)(in.n_frames > 0 ? in.n_frames : 1), 1);
    if (!seen) {
        fprintf(stderr, "drivekit: out of memory\n");
        r = CLI_FAIL;
        goto done;
    }
    int64_t u = 0;
    for (int64_t i = 0; i < n; i++) {
        if (seen[frames[i]]) continue;
        seen[frames[i]] = 1;
        frames[u++] = frames[i];
    }
    n = u;
    int64_t chunk = chunk_frames(v, o.threads);
    status = malloc((size_t)chunk * sizeof *status);
    saved = malloc((size_t)chunk * sizeof *saved);
    msg = malloc((size_t)chunk * sizeof *msg);
    if (!status || !saved || !msg) {
        fprintf(stderr, "drivekit: out of memory\n");
        r = CLI_FAIL;
        goto done;
    }
    for (int64_t off = 0; off < n; off += chunk) {
        int64_t m = n - off < chunk ? n - off : chunk;
        dk_tensor t;
        int st = dk_video_get_frames(v, pool, frames + off, m, &t, status);
        if (st == DK_EINVAL || st == DK_ENOMEM) {
            r = cli_fail(st);
            goto done;
        }
        int64_t ok = st ? first_failure(status, m) : m;
        char decode_msg[DK_ERRMSG_MAX];
        snprintf(decode_msg, sizeof decode_msg, "%s", dk_errmsg());
        png_job job = {&t, frames + off, o.out, saved, msg};
        if (ok > 0) dk_pool_for(pool, ok, 1, png_range, &job);
        dk_tensor_release(&t);
        for (int64_t i = 0; i < ok; i++) {
            if (saved[i]) {
                fprintf(stderr, "drivekit: %s\n", msg[i]);
                r = CLI_FAIL;
                goto done;
            }
            written++;
        }
        if (ok < m) {
            fprintf(stderr, "drivekit: %s\n", decode_msg[0] ? decode_msg : dk_status_str(st));
            r = CLI_FAIL;
            goto done;
        }
    }
done:
    if (v && o.out && (r == CLI_OK || written))
        printf("wrote %" PRId64 " frame(s) to %s/frame_NNNNNN.png\n", written, o.out);
    free(seen);
    free(msg);
    free(saved);
    free(status);
    free(frames);
    dk_pool_destroy(pool);
    dk_video_close(v);
    return r;
}

int cmd_video(int argc, char **argv)
{
    static const cli_subcommand subs[] = {
        {"info", video_info}, {"framemd5", video_framemd5}, {"extract", video_extract}};
    return cli_dispatch("video", usage, print_help, subs, sizeof subs / sizeof subs[0], argc, argv);
}
