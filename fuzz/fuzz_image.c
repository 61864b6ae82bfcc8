/*
 * Fuzz harness for the image decoders.
 *
 * The input goes, unchanged, to every decoding entry point that takes bytes:
 *   - dk_jpeg_info_get, then dk_jpeg_decode with the defaults, scaled 1/4,
 *     with allow_warnings, and dk_jpeg_decode_into (grey, min-size scaling);
 *   - dk_png_decode as RGB and as RGBA.
 * Each call must return a documented status, leave `out` empty on failure
 * with a message recorded, and produce the advertised shape on success.
 * Cross-checks: a JPEG that decodes strictly decodes identically with
 * warnings allowed; a PNG's RGB decode equals the colour of its RGBA decode.
 * A JPEG also goes, as a file, through image pipelines (decode + affine +
 * layout), whose fused pass decodes only the window the output samples
 * (cropped columns, skipped rows, an early stop) at several DCT scales: each
 * run must give a documented status with a message, or an image of the
 * planned shape; what decodes strictly in full decodes in every window.
 * drivekit's live-allocation counter must be back where it started.
 *
 * Headers claiming more than MAX_PIXELS are not decoded (only their header
 * is read): a few bytes can legitimately describe gigabytes of pixels, which
 * would trip the fuzzer's memory limit without finding anything.
 *
 * Checks use __builtin_trap() so the standalone driver and libFuzzer both see
 * a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drivekit/core.h"
#include "drivekit/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) __builtin_trap();                                               \
    } while (0)

#define MAX_PIXELS ((int64_t)1 << 22)

static int documented(int st)
{
    return st == DK_OK || st == DK_EINVALIDDATA || st == DK_EUNSUPPORTED ||
           st == DK_EOVERFLOW || st == DK_ENOMEM;
}

/* Status contract shared by every decode: on success an (h, w, c) uint8
 * tensor owning its memory; on failure an empty tensor and a message. */
static void check_result(int st, const dk_tensor *t, int64_t h, int64_t w, int64_t c)
{
    CHECK(documented(st));
    if (st != DK_OK) {
        CHECK(t->data == NULL && t->owner == NULL && t->ndim == 0);
        CHECK(dk_errmsg()[0] != '\0');
        return;
    }
    CHECK(t->data != NULL && t->owner != NULL);
    CHECK(t->dtype == DK_U8 && t->ndim == 3);
    CHECK(t->shape[2] == c);
    if (h > 0) CHECK(t->shape[0] == h && t->shape[1] == w);
    CHECK(dk_tensor_is_contiguous(t));
    /* Touch every byte so ASan/MSan see reads of the whole output. */
    const uint8_t *p = t->data;
    size_t n = dk_tensor_nbytes(t);
    unsigned acc = 0;
    for (size_t i = 0; i < n; i++) acc += p[i];
    (void)acc;
}

/* Plans through the windowed decode: scale ratio, crop at the top, bottom or
 * middle, mirror, nearest; out is a fraction of the image. */
static const struct {
    double r, bot;
    int flip, nearest;
} windows[] = {{0.45, 0.0, 0, 0}, {0.52, 0.6, 1, 0}, {0.2, 0.3, 0, 0},
               {0.1, 0.9, 1, 0},  {0.3, 0.5, 0, 1}};

static void fuzz_jpeg_windows(const uint8_t *data, size_t size, int full_ok, int w, int h)
{
    char path[256];
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/dk_fuzz_window_%d.jpg", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    if (dk_file_write(path, data, size) != DK_OK) return;
    dk_group *g = NULL;
    CHECK(dk_group_create(&g) == DK_OK);
    int fid = dk_group_add_string(g, DK_GROUP_ROOT, "filename");
    CHECK(fid >= 0);
    for (size_t k = 0; k < sizeof windows / sizeof windows[0]; k++) {
        dk_pipeline *p = NULL;
        CHECK(dk_pipeline_create(g, NULL, &p) == DK_OK);
        dk_image_decode_config dc;
        dk_image_decode_config_init(&dc);
        dc.source = DK_IMAGE_SOURCE_FILE;
        dk_affine_config ac;
        dk_affine_config_init(&ac);
        ac.out_w = w / 3 + 1;
        ac.out_h = h / 4 + 1;
        ac.nearest = windows[k].nearest;
        dk_affine_op *op = dk_affine_config_add(&ac, DK_AFFINE_RESIZE_CROP, 1, windows[k].r,
                                                windows[k].r, windows[k].bot, windows[k].bot);
        CHECK(op != NULL);
        if (windows[k].flip) CHECK(dk_affine_config_add(&ac, DK_AFFINE_FLIP, 1, 0, 0, 0, 0));
        dk_step *s = NULL;
        CHECK(dk_step_image_decode(&dc, &s) == DK_OK);
        CHECK(dk_pipeline_add(p, s) == DK_OK);
        CHECK(dk_step_affine(&ac, &s) == DK_OK);
        CHECK(dk_pipeline_add(p, s) == DK_OK);
        CHECK(dk_step_layout(1, DK_U8, &s) == DK_OK);
        CHECK(dk_pipeline_add(p, s) == DK_OK);
        dk_sample x;
        CHECK(dk_sample_init(&x, dk_group_id_limit(dk_pipeline_format(p))) == DK_OK);
        CHECK(dk_sample_set_string(&x, fid, path) == DK_OK);
        x.index = (int64_t)k;
        int st = dk_pipeline_run(p, &x, "fuzz");
        CHECK(documented(st));
        if (st != DK_OK) {
            CHECK(dk_errmsg()[0] != '\0');
            CHECK(!full_ok || st == DK_ENOMEM || w < 32 || h < 32);
        } else {
            int im = dk_group_find(dk_pipeline_format(p), DK_GROUP_ROOT, "image");
            CHECK(im >= 0 && im < x.n);
            const dk_tensor *t = &x.values[im];
            CHECK(t->dtype == DK_U8 && t->ndim == 3 && t->shape[0] == 3);
            CHECK(t->shape[1] == ac.out_h && t->shape[2] == ac.out_w);
            const uint8_t *q = t->data;
            unsigned acc = 0;
            for (size_t i = 0; i < dk_tensor_nbytes(t); i++) acc += q[i];
            (void)acc;
        }
        dk_sample_free(&x);
        dk_pipeline_destroy(p);
    }
    dk_group_destroy(g);
    remove(path);
}

static void fuzz_jpeg(const uint8_t *data, size_t size)
{
    dk_jpeg *j = NULL;
    if (dk_jpeg_create(&j) != DK_OK) return;

    dk_jpeg_info info;
    int st = dk_jpeg_info_get(j, data, size, &info);
    CHECK(documented(st));
    if (st != DK_OK) {
        CHECK(dk_jpeg_errmsg(j)[0] != '\0');
        /* Without a header no decode can succeed either. */
        dk_tensor t;
        CHECK(dk_jpeg_decode(j, data, size, NULL, &t) != DK_OK);
        CHECK(t.data == NULL && t.owner == NULL);
        dk_jpeg_destroy(j);
        return;
    }
    CHECK(info.width >= 1 && info.height >= 1 && info.width <= 65535 && info.height <= 65535);
    CHECK(info.colorspace >= 0 && info.colorspace <= 4);
    CHECK(info.subsampling == -1 || info.subsampling == 444 || info.subsampling == 422 ||
          info.subsampling == 420 || info.subsampling == 440 || info.subsampling == 411 ||
          info.subsampling == 400);
    int64_t pixels = (int64_t)info.width * info.height;

    dk_jpeg_decode_opts o;
    dk_tensor strict, lax, quarter;
    int st_strict = DK_EINVAL, st_lax = DK_EINVAL;
    if (pixels <= MAX_PIXELS) {
        dk_jpeg_decode_opts_init(&o);
        st_strict = dk_jpeg_decode(j, data, size, &o, &strict);
        check_result(st_strict, &strict, info.height, info.width, 3);

        o.allow_warnings = 1;
        st_lax = dk_jpeg_decode(j, data, size, &o, &lax);
        check_result(st_lax, &lax, info.height, info.width, 3);
        /* Anything strict accepts, lax accepts identically. */
        if (st_strict == DK_OK) {
            CHECK(st_lax == DK_OK);
            CHECK(memcmp(strict.data, lax.data, dk_tensor_nbytes(&strict)) == 0);
        }
        dk_tensor_release(&strict);
        dk_tensor_release(&lax);
        if (info.colorspace != 3 && info.colorspace != 4)
            fuzz_jpeg_windows(data, size, st_strict == DK_OK, info.width, info.height);
    }

    int qw = 0, qh = 0;
    CHECK(dk_jpeg_scaled_size(info.width, info.height, 1, 4, &qw, &qh) == DK_OK);
    if ((int64_t)qw * qh <= MAX_PIXELS) {
        dk_jpeg_decode_opts_init(&o);
        o.scale_num = 1;
        o.scale_den = 4;
        o.format = DK_PIX_BGR;
        st = dk_jpeg_decode(j, data, size, &o, &quarter);
        check_result(st, &quarter, qh, qw, 3);
        dk_tensor_release(&quarter);

        /* Into caller memory, grey, sized by a minimum instead of a factor:
           the smallest factor giving at least the 1/4 size gives exactly it
           (sizes grow monotonically with the factor). */
        dk_jpeg_decode_opts_init(&o);
        o.format = DK_PIX_GRAY;
        o.min_width = qw;
        o.min_height = qh;
        size_t stride = (size_t)qw + 3;
        uint8_t *buf = malloc(stride * (size_t)qh + 1);
        if (buf) {
            st = dk_jpeg_decode_into(j, data, size, &o, buf, qw, qh, stride);
            CHECK(documented(st));
            if (st != DK_OK) CHECK(dk_jpeg_errmsg(j)[0] != '\0');
            /* One row short is a size mismatch, never a decode. */
            if (qh > 1) CHECK(dk_jpeg_decode_into(j, data, size, &o, buf, qw, qh - 1, 0) != DK_OK);
            free(buf);
        }
    }
    dk_jpeg_destroy(j);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void fuzz_png(const uint8_t *data, size_t size)
{
    /* IHDR's width and height sit at bytes 16..23 of a well-formed file. */
    if (size >= 24 && (uint64_t)be32(data + 16) * be32(data + 20) > (uint64_t)MAX_PIXELS) return;

    dk_tensor rgb, rgba;
    int st_rgb = dk_png_decode(data, size, DK_PIX_RGB, &rgb);
    check_result(st_rgb, &rgb, -1, -1, 3);
    int st_rgba = dk_png_decode(data, size, DK_PIX_RGBA, &rgba);
    check_result(st_rgba, &rgba, st_rgb == DK_OK ? rgb.shape[0] : -1,
                 st_rgb == DK_OK ? rgb.shape[1] : -1, 4);
    /* Same bytes, same verdict; and alpha is dropped, never composited. */
    CHECK((st_rgb == DK_OK) == (st_rgba == DK_OK));
    if (st_rgb == DK_OK) {
        const uint8_t *a = rgb.data, *b = rgba.data;
        int64_t n = rgb.shape[0] * rgb.shape[1];
        for (int64_t i = 0; i < n; i++) CHECK(memcmp(a + 3 * i, b + 4 * i, 3) == 0);
    }
    dk_tensor_release(&rgb);
    dk_tensor_release(&rgba);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t live0 = dk_alloc_live();
    fuzz_jpeg(data, size);
    fuzz_png(data, size);
    CHECK(dk_alloc_live() == live0);
    return 0;
}
