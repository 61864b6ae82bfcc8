/*
 * Fuzz harness for the video index and demux/decode path.
 *
 * The input is a whole media file read through a memory AVIOContext
 * (dk__video_open_memory): probing, the packet scan with NAL classification,
 * display order and decode starts, then a few requests: first, last, middle
 * and a duplicate frame, one out of range, in the output format picked by the
 * first byte, plus frame_md5, frame_cost, frame_time, keyframes and a request
 * again after dk_video_trim. Every call must return a documented status; a
 * failed frame must be zero-filled and named in the message; a frame decoded
 * before and after the trim must be the same; statistics must stay
 * consistent; drivekit's live-allocation counter must be back where it
 * started.
 *
 * Pictures larger than MAX_PIXELS are not requested: a few header bytes can
 * describe gigabytes of frames.
 *
 * Checks use __builtin_trap() so the standalone driver and libFuzzer both see
 * a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libavutil/log.h>

#include "drivekit/video.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Internal entry point, declared in src/video/video_impl.h. */
int dk__video_open_memory(const void *data, size_t size, const dk_video_config *cfg,
                          dk_video **out);

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) __builtin_trap();                                               \
    } while (0)

#define MAX_PIXELS ((int64_t)1 << 20)

static int documented_open(int st)
{
    return st == DK_OK || st == DK_EINVALIDDATA || st == DK_EUNSUPPORTED || st == DK_ENOMEM ||
           st == DK_EIO || st == DK_EINVAL || st == DK_ENOENT;
}

static int documented_frame(int st)
{
    return st == DK_OK || st == DK_EINVALIDDATA || st == DK_EUNSUPPORTED || st == DK_ENOMEM ||
           st == DK_EIO || st == DK_ERANGE;
}

static void requests(dk_video *v, const dk_video_info *in)
{
    int64_t n = in->n_frames;
    int64_t fr[6] = {0, n - 1, n / 2, 0, n, n / 3};
    int st[6];
    dk_tensor out;
    int ret = dk_video_get_frames(v, NULL, fr, 6, &out, st);
    CHECK(documented_frame(ret));
    CHECK(ret != DK_OK || dk_errmsg() != NULL);
    CHECK(out.data != NULL && out.owner != NULL);
    size_t fb = dk_video_frame_bytes(v);
    CHECK(fb > 0);
    CHECK(dk_tensor_nbytes(&out) == 6 * fb);
    int first_bad = -1;
    for (int i = 0; i < 6; i++) {
        CHECK(documented_frame(st[i]));
        if (fr[i] >= n) CHECK(st[i] == DK_ERANGE);
        if (st[i] != DK_OK) {
            if (first_bad < 0) first_bad = i;
            const uint8_t *p = (const uint8_t *)out.data + (size_t)i * fb;
            unsigned acc = 0;
            for (size_t k = 0; k < fb; k++) acc |= p[k];
            CHECK(acc == 0);
        }
    }
    CHECK((first_bad >= 0) == (ret != DK_OK));
    if (first_bad >= 0) CHECK(strstr(dk_errmsg(), ": frame ") != NULL);
    /* Duplicates agree. */
    if (st[0] == DK_OK && st[3] == DK_OK)
        CHECK(memcmp(out.data, (const uint8_t *)out.data + 3 * fb, fb) == 0);
    dk_tensor_release(&out);

    char hex[33];
    ret = dk_video_frame_md5(v, n - 1, hex);
    CHECK(documented_frame(ret));
    if (ret == DK_OK) CHECK(strlen(hex) == 32);
    CHECK(dk_video_frame_md5(v, n, hex) == DK_ERANGE);
}

/* After dk_video_trim (decoders and caches gone, index kept) the same frames
 * decode again from fresh decoders: whatever decoded both times is
 * identical. */
static void trim_and_again(dk_video *v, const dk_video_info *in)
{
    int64_t n = in->n_frames;
    int64_t fr[3] = {n / 2, 0, n - 1};
    int st1[3] = {DK_ENOMEM, DK_ENOMEM, DK_ENOMEM}, st2[3] = {DK_ENOMEM, DK_ENOMEM, DK_ENOMEM};
    dk_tensor a, b;
    int r1 = dk_video_get_frames(v, NULL, fr, 3, &a, st1);
    CHECK(documented_frame(r1));
    dk_video_trim(v);
    dk_video_memory m;
    dk_video_get_memory(v, &m);
    CHECK(m.decoders == 0 && m.frame_cache_bytes == 0 && m.packet_cache_bytes == 0);
    CHECK(m.index_bytes > 0);
    int r2 = dk_video_get_frames(v, NULL, fr, 3, &b, st2);
    CHECK(documented_frame(r2));
    size_t fb = dk_video_frame_bytes(v);
    for (int i = 0; i < 3; i++) {
        CHECK(documented_frame(st2[i]));
        if (st1[i] == DK_OK && st2[i] == DK_OK)
            CHECK(memcmp((const uint8_t *)a.data + (size_t)i * fb,
                         (const uint8_t *)b.data + (size_t)i * fb, fb) == 0);
    }
    dk_tensor_release(&a);
    dk_tensor_release(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        av_log_set_level(AV_LOG_QUIET);
        dk_log_set(NULL, NULL, DK_LOG_NONE);
        quiet = 1;
    }
    int64_t live0 = dk_alloc_live();
    dk_video_config cfg;
    dk_video_config_init(&cfg);
    cfg.output = size ? (dk_video_output)(data[0] % 3) : DK_VIDEO_RGB24;
    cfg.frame_cache_bytes = (size_t)1 << 20;
    cfg.packet_cache_bytes = (size_t)256 << 10;
    cfg.max_decoders = 2;
    dk_video *v = NULL;
    int st = dk__video_open_memory(data, size, &cfg, &v);
    CHECK(documented_open(st));
    if (st != DK_OK) {
        CHECK(v == NULL);
        CHECK(dk_errmsg()[0] != '\0');
        CHECK(dk_alloc_live() == live0);
        return 0;
    }
    dk_video_info in;
    CHECK(dk_video_get_info(v, &in) == DK_OK);
    CHECK(in.n_frames >= 1 && in.width > 0 && in.height > 0);
    CHECK(in.n_keyframes >= 0 && in.max_gop >= 0 && in.has_b_frames >= 0);

    int64_t kf_cap = 8, kf[8];
    int ks = dk_video_keyframes(v, kf, &kf_cap);
    CHECK(ks == DK_OK || ks == DK_ERANGE);
    for (int64_t f = 0; f < in.n_frames && f < 64; f += 9) {
        int64_t key, md, pts;
        double sec;
        CHECK(dk_video_frame_cost(v, f, &key, &md) == DK_OK);
        CHECK(key >= -1 && key < in.n_frames && md >= 1);
        CHECK(dk_video_frame_time(v, f, &pts, &sec) == DK_OK);
    }
    CHECK(dk_video_frame_cost(v, in.n_frames, NULL, NULL) == DK_ERANGE);

    if ((int64_t)in.width * in.height <= MAX_PIXELS) {
        requests(v, &in);
        trim_and_again(v, &in);
        dk_video_stats s;
        dk_video_get_stats(v, &s);
        CHECK(s.frames_returned <= s.frames_requested);
        CHECK(s.requests >= 2);
    }
    dk_video_close(v);
    CHECK(dk_alloc_live() == live0);
    return 0;
}
