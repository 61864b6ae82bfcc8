/* Tests for image I/O (src/core/image.c): JPEG and PNG codecs, scaled
 * decoding, corrupt input, files, and allocation failure. Run from test_core. */
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <unistd.h>

#include <turbojpeg.h>

#include "dk_test.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static uint32_t xs_next(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

enum { PAT_SMOOTH, PAT_NOISE, PAT_SOLID };

/* An (h, w, c) uint8 tensor: a smooth gradient (JPEG-friendly), noise
 * (incompressible, exercises entropy coding) or a solid colour. */
static int make_image(dk_tensor *t, int h, int w, int c, int pattern, const uint8_t *solid)
{
    int64_t shape[3] = { h, w, c };
    int st = dk_tensor_alloc(t, DK_U8, 3, shape);
    if (st != DK_OK) return st;
    uint8_t *p = t->data;
    uint32_t seed = 12345u + (uint32_t)(h * 31 + w * 7 + c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                uint8_t v;
                if (pattern == PAT_SOLID) {
                    v = solid[k];
                } else if (pattern == PAT_NOISE) {
                    v = (uint8_t)(xs_next(&seed) >> 24);
                } else {
                    int a = w > 1 ? x * 255 / (w - 1) : 0, b = h > 1 ? y * 255 / (h - 1) : 0;
                    v = (uint8_t)(k == 0 ? a : k == 1 ? b : k == 2 ? (a + b) / 2 : 255 - a / 2);
                }
                p[((size_t)y * w + x) * c + k] = v;
            }
    return DK_OK;
}

static double mean_abs_err(const dk_tensor *a, const dk_tensor *b)
{
    int64_t n = dk_tensor_numel(a);
    if (n != dk_tensor_numel(b) || n == 0) return 1e9;
    const uint8_t *pa = a->data, *pb = b->data;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += abs((int)pa[i] - (int)pb[i]);
    return s / (double)n;
}

static int same_bytes(const dk_tensor *a, const dk_tensor *b)
{
    return dk_tensor_numel(a) == dk_tensor_numel(b) &&
           memcmp(a->data, b->data, dk_tensor_nbytes(a)) == 0;
}

/* Encodes `img` as JPEG into a malloc'd copy (not drivekit memory), so the
 * bytes can outlive allocator swaps. */
static uint8_t *jpeg_bytes(const dk_tensor *img, dk_pixfmt fmt, int quality, int s444, size_t *size)
{
    dk_jpeg *j = NULL;
    uint8_t *enc = NULL, *copy = NULL;
    *size = 0;
    if (dk_jpeg_create(&j) != DK_OK) return NULL;
    if (dk_jpeg_encode(j, img, fmt, quality, s444, &enc, size) == DK_OK) {
        copy = malloc(*size);
        if (copy) memcpy(copy, enc, *size);
    }
    dk_free(enc);
    dk_jpeg_destroy(j);
    return copy;
}

static uint8_t *png_bytes(const dk_tensor *img, size_t *size)
{
    uint8_t *enc = NULL, *copy = NULL;
    *size = 0;
    if (dk_png_encode(img, &enc, size) == DK_OK) {
        copy = malloc(*size);
        if (copy) memcpy(copy, enc, *size);
    }
    dk_free(enc);
    return copy;
}

static void tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/dk_img_%ld_%s", dk_test_tmpdir(), (long)getpid(), name);
}

static int write_plain(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

/* --- A minimal PNG writer, independent of libpng, for inputs libpng's
 *     simplified writer cannot produce (16-bit without gAMA, lying headers). */

static uint32_t crc_table[256];

static uint32_t crc32_of(const uint8_t *p, size_t n, uint32_t crc)
{
    if (!crc_table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            crc_table[i] = c;
        }
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static size_t put_chunk(uint8_t *out, const char *type, const uint8_t *data, uint32_t n)
{
    put_be32(out, n);
    memcpy(out + 4, type, 4);
    if (n) memcpy(out + 8, data, n);
    put_be32(out + 8 + n, crc32_of(out + 4, 4 + (size_t)n, 0));
    return 12 + (size_t)n;
}

/* A PNG of `raw` (filtered scanlines) stored uncompressed in one IDAT.
 * Returns malloc'd bytes. */
static uint8_t *craft_png(uint32_t w, uint32_t h, int depth, int color_type, const uint8_t *raw,
                          size_t raw_n, size_t *size)
{
    size_t nblocks = raw_n / 65535 + 1;
    size_t z_n = 2 + raw_n + nblocks * 5 + 4;
    uint8_t *z = malloc(z_n);
    uint8_t *out = malloc(8 + 25 + 12 + z_n + 12);
    if (!z || !out) {
        free(z);
        free(out);
        return NULL;
    }
    size_t zi = 0;
    z[zi++] = 0x78;
    z[zi++] = 0x01;
    size_t left = raw_n, off = 0;
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < raw_n; i++) {
        a = (a + raw[i]) % 65521;
        b = (b + a) % 65521;
    }
    do {
        size_t len = left > 65535 ? 65535 : left;
        z[zi++] = (uint8_t)(left == len ? 1 : 0);
        z[zi++] = (uint8_t)len;
        z[zi++] = (uint8_t)(len >> 8);
        z[zi++] = (uint8_t)~len;
        z[zi++] = (uint8_t)(~len >> 8);
        memcpy(z + zi, raw + off, len);
        zi += len;
        off += len;
        left -= len;
    } while (left > 0);
    put_be32(z + zi, (b << 16) | a);
    zi += 4;

    static const uint8_t sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    size_t n = 0;
    memcpy(out, sig, 8);
    n += 8;
    uint8_t ihdr[13];
    put_be32(ihdr, w);
    put_be32(ihdr + 4, h);
    ihdr[8] = (uint8_t)depth;
    ihdr[9] = (uint8_t)color_type;
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    n += put_chunk(out + n, "IHDR", ihdr, 13);
    n += put_chunk(out + n, "IDAT", z, (uint32_t)zi);
    n += put_chunk(out + n, "IEND", NULL, 0);
    free(z);
    *size = n;
    return out;
}

/* ------------------------------------------------------------------------ */
/* Options and sizes                                                         */

static void test_image_formats_and_sizes(void)
{
    int64_t live0 = dk_alloc_live();
    DK_CHECK_EQ_INT(dk_pixfmt_channels(DK_PIX_RGB), 3);
    DK_CHECK_EQ_INT(dk_pixfmt_channels(DK_PIX_BGR), 3);
    DK_CHECK_EQ_INT(dk_pixfmt_channels(DK_PIX_RGBA), 4);
    DK_CHECK_EQ_INT(dk_pixfmt_channels(DK_PIX_GRAY), 1);
    DK_CHECK_EQ_INT(dk_pixfmt_channels((dk_pixfmt)42), 0);

    dk_jpeg_decode_opts o;
    memset(&o, 0x5a, sizeof o);
    dk_jpeg_decode_opts_init(&o);
    DK_CHECK_EQ_INT(o.format, DK_PIX_RGB);
    DK_CHECK_EQ_INT(o.scale_num, 1);
    DK_CHECK_EQ_INT(o.scale_den, 1);
    DK_CHECK_EQ_INT(o.min_width, 0);
    DK_CHECK_EQ_INT(o.min_height, 0);
    DK_CHECK_EQ_INT(o.fast_dct, 0);
    DK_CHECK_EQ_INT(o.allow_warnings, 0);

    int w = 0, h = 0;
    for (int n = 1; n <= 16; n++) {
        DK_CHECK_OK(dk_jpeg_scaled_size(1601, 901, n, 8, &w, &h));
        DK_CHECK_EQ_INT(w, (1601 * n + 7) / 8);
        DK_CHECK_EQ_INT(h, (901 * n + 7) / 8);
    }
    DK_CHECK_OK(dk_jpeg_scaled_size(1601, 901, 1, 8, &w, &h));
    DK_CHECK_EQ_INT(w, 201);   /* ceil, not floor */
    DK_CHECK_EQ_INT(h, 113);
    DK_CHECK_OK(dk_jpeg_scaled_size(1601, 901, 2, 4, &w, &h));   /* = 1/2 */
    DK_CHECK_EQ_INT(w, 801);
    DK_CHECK_EQ_INT(h, 451);
    DK_CHECK_OK(dk_jpeg_scaled_size(1601, 901, 1, 1, &w, &h));
    DK_CHECK_EQ_INT(w, 1601);
    DK_CHECK_OK(dk_jpeg_scaled_size(1601, 901, 2, 1, &w, &h));
    DK_CHECK_EQ_INT(w, 3202);
    DK_CHECK_STATUS(dk_jpeg_scaled_size(100, 100, 1, 3, &w, &h), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "1/3");
    DK_CHECK_STATUS(dk_jpeg_scaled_size(100, 100, 1, 16, &w, &h), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_scaled_size(100, 100, 3, 1, &w, &h), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_scaled_size(100, 100, 0, 8, &w, &h), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_scaled_size(100, 100, 1, 0, &w, &h), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_scaled_size(-1, 100, 1, 1, &w, &h), DK_EINVAL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* JPEG                                                                      */

static void test_image_jpeg_roundtrip(void)
{
    int64_t live0 = dk_alloc_live();
    dk_tensor img, dec;
    DK_CHECK_OK(make_image(&img, 48, 64, 3, PAT_SMOOTH, NULL));
    dk_jpeg *j = NULL;
    DK_CHECK_OK(dk_jpeg_create(&j));
    for (int s444 = 0; s444 <= 1; s444++) {
        uint8_t *enc = NULL;
        size_t n = 0;
        DK_CHECK_OK(dk_jpeg_encode(j, &img, DK_PIX_RGB, 95, s444, &enc, &n));
        DK_CHECK(n > 100 && enc[0] == 0xFF && enc[1] == 0xD8);

        dk_jpeg_info info;
        DK_CHECK_OK(dk_jpeg_info_get(j, enc, n, &info));
        DK_CHECK_EQ_INT(info.width, 64);
        DK_CHECK_EQ_INT(info.height, 48);
        DK_CHECK_EQ_INT(info.subsampling, s444 ? 444 : 420);
        DK_CHECK_EQ_INT(info.colorspace, 0);

        DK_CHECK_OK(dk_jpeg_decode(j, enc, n, NULL, &dec));
        DK_CHECK_EQ_INT(dec.dtype, DK_U8);
        DK_CHECK_EQ_INT(dec.ndim, 3);
        DK_CHECK_EQ_INT(dec.shape[0], 48);
        DK_CHECK_EQ_INT(dec.shape[1], 64);
        DK_CHECK_EQ_INT(dec.shape[2], 3);
        DK_CHECK(dec.owner != NULL);
        DK_CHECK(dk_tensor_is_contiguous(&dec));
        double mae = mean_abs_err(&img, &dec);
        DK_CHECK(mae < (s444 ? 1.5 : 3.0));

        /* fast_dct stays close too. */
        dk_tensor fast;
        dk_jpeg_decode_opts o;
        dk_jpeg_decode_opts_init(&o);
        o.fast_dct = 1;
        DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &o, &fast));
        DK_CHECK(mean_abs_err(&fast, &dec) < 2.0);
        dk_tensor_release(&fast);
        dk_tensor_release(&dec);
        dk_free(enc);
    }
    dk_jpeg_destroy(j);
    dk_tensor_release(&img);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_image_jpeg_channel_order(void)
{
    int64_t live0 = dk_alloc_live();
    static const uint8_t red[3] = { 255, 0, 0 };
    static const uint8_t red_bgr[3] = { 0, 0, 255 };
    dk_tensor img, bgr_img, dec;
    DK_CHECK_OK(make_image(&img, 32, 32, 3, PAT_SOLID, red));
    DK_CHECK_OK(make_image(&bgr_img, 32, 32, 3, PAT_SOLID, red_bgr));
    dk_jpeg *j = NULL;
    DK_CHECK_OK(dk_jpeg_create(&j));
    uint8_t *enc = NULL, *enc_bgr = NULL;
    size_t n = 0, n_bgr = 0;
    DK_CHECK_OK(dk_jpeg_encode(j, &img, DK_PIX_RGB, 90, 0, &enc, &n));
    /* The same red given in OpenCV order encodes the same picture. */
    DK_CHECK_OK(dk_jpeg_encode(j, &bgr_img, DK_PIX_BGR, 90, 0, &enc_bgr, &n_bgr));

    dk_jpeg_decode_opts o;
    dk_jpeg_decode_opts_init(&o);
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &o, &dec));
    const uint8_t *p = (const uint8_t *)dec.data + (16 * 32 + 16) * 3;
    DK_CHECK(p[0] > 230 && p[1] < 25 && p[2] < 25);
    dk_tensor_release(&dec);

    DK_CHECK_OK(dk_jpeg_decode(j, enc_bgr, n_bgr, &o, &dec));
    p = (const uint8_t *)dec.data + (16 * 32 + 16) * 3;
    DK_CHECK(p[0] > 230 && p[1] < 25 && p[2] < 25);
    dk_tensor_release(&dec);

    o.format = DK_PIX_BGR;
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &o, &dec));
    p = (const uint8_t *)dec.data + (16 * 32 + 16) * 3;
    DK_CHECK(p[2] > 230 && p[1] < 25 && p[0] < 25);
    dk_tensor_release(&dec);

    o.format = DK_PIX_RGBA;
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &o, &dec));
    DK_CHECK_EQ_INT(dec.shape[2], 4);
    p = (const uint8_t *)dec.data + (16 * 32 + 16) * 4;
    DK_CHECK(p[0] > 230 && p[2] < 25 && p[3] == 255);
    dk_tensor_release(&dec);

    o.format = DK_PIX_GRAY;   /* luma of pure red: 0.299 * 255 = 76 */
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &o, &dec));
    DK_CHECK_EQ_INT(dec.shape[2], 1);
    p = (const uint8_t *)dec.data + 16 * 32 + 16;
    DK_CHECK(p[0] > 66 && p[0] < 86);
    dk_tensor_release(&dec);
    dk_free(enc);
    dk_free(enc_bgr);

    /* A grey source makes a one-component JPEG that decodes to equal RGB. */
    dk_tensor gray;
    DK_CHECK_OK(make_image(&gray, 40, 24, 1, PAT_SMOOTH, NULL));
    DK_CHECK_OK(dk_jpeg_encode(j, &gray, DK_PIX_GRAY, 90, 0, &enc, &n));
    dk_jpeg_info info;
    DK_CHECK_OK(dk_jpeg_info_get(j, enc, n, &info));
    DK_CHECK_EQ_INT(info.subsampling, 400);
    DK_CHECK_EQ_INT(info.colorspace, 1);
    o.format = DK_PIX_RGB;
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &o, &dec));
    p = dec.data;
    for (int i = 0; i < 40 * 24; i++)
        DK_CHECK(p[3 * i] == p[3 * i + 1] && p[3 * i] == p[3 * i + 2]);
    dk_tensor_release(&dec);
    o.format = DK_PIX_GRAY;
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &o, &dec));
    DK_CHECK(mean_abs_err(&dec, &gray) < 2.0);
    dk_tensor_release(&dec);
    dk_free(enc);

    dk_tensor_release(&gray);
    dk_tensor_release(&img);
    dk_tensor_release(&bgr_img);
    dk_jpeg_destroy(j);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_image_jpeg_scaled_decode(void)
{
    int64_t live0 = dk_alloc_live();
    dk_tensor img, dec;
    DK_CHECK_OK(make_image(&img, 901, 1601, 3, PAT_SMOOTH, NULL));
    size_t n = 0;
    uint8_t *enc = jpeg_bytes(&img, DK_PIX_RGB, 80, 0, &n);
    DK_CHECK(enc != NULL);
    dk_jpeg *j = NULL;
    DK_CHECK_OK(dk_jpeg_create(&j));
    dk_jpeg_decode_opts o;
    for (int k = 1; k <= 16; k++) {
        dk_jpeg_decode_opts_init(&o);
        o.scale_num = k;
        o.scale_den = 8;
        int w = 0, h = 0;
        DK_CHECK_OK(dk_jpeg_scaled_size(1601, 901, k, 8, &w, &h));
        DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &o, &dec));
        DK_CHECK_EQ_INT(dec.shape[0], h);
        DK_CHECK_EQ_INT(dec.shape[1], w);
        /* A downscaled smooth gradient stays a gradient: check a corner. */
        const uint8_t *p = dec.data;
        DK_CHECK(p[0] < 20 && p[1] < 20);
        dk_tensor_release(&dec);
    }
    /* 4/8 given as 1/2 is the same factor. */
    dk_jpeg_decode_opts_init(&o);
    o.scale_num = 1;
    o.scale_den = 2;
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &o, &dec));
    DK_CHECK_EQ_INT(dec.shape[1], 801);
    DK_CHECK_EQ_INT(dec.shape[0], 451);
    dk_tensor_release(&dec);

    /* min_width/min_height: the smallest factor that is still big enough. */
    static const struct { int mw, mh, w, h; } cases[] = {
        { 201, 113, 201, 113 },   /* 1/8 exactly */
        { 202, 0, 401, 226 },     /* just over 1/8 -> 1/4 */
        { 400, 0, 401, 226 },
        { 0, 300, 601, 338 },     /* 3/8 */
        { 1000, 100, 1001, 564 }, /* 5/8 */
        { 1601, 901, 1601, 901 },
        { 5000, 5000, 1601, 901 }, /* never upscales */
        { 1, 1, 201, 113 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dk_jpeg_decode_opts_init(&o);
        o.scale_num = 2;   /* ignored when a minimum is given */
        o.min_width = cases[i].mw;
        o.min_height = cases[i].mh;
        DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &o, &dec));
        DK_CHECK_EQ_INT(dec.shape[1], cases[i].w);
        DK_CHECK_EQ_INT(dec.shape[0], cases[i].h);
        dk_tensor_release(&dec);
    }

    /* Bad options. */
    dk_jpeg_decode_opts_init(&o);
    o.scale_num = 1;
    o.scale_den = 3;
    DK_CHECK_STATUS(dk_jpeg_decode(j, enc, n, &o, &dec), DK_EINVAL);
    DK_CHECK(dec.data == NULL && dec.owner == NULL);
    dk_jpeg_decode_opts_init(&o);
    o.min_width = -1;
    DK_CHECK_STATUS(dk_jpeg_decode(j, enc, n, &o, &dec), DK_EINVAL);
    dk_jpeg_decode_opts_init(&o);
    o.format = (dk_pixfmt)17;
    DK_CHECK_STATUS(dk_jpeg_decode(j, enc, n, &o, &dec), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_decode(NULL, enc, n, NULL, &dec), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_decode(j, enc, n, NULL, NULL), DK_EINVAL);

    free(enc);
    dk_tensor_release(&img);
    dk_jpeg_destroy(j);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_image_jpeg_decode_into(void)
{
    int64_t live0 = dk_alloc_live();
    dk_tensor img, ref;
    DK_CHECK_OK(make_image(&img, 37, 53, 3, PAT_NOISE, NULL));
    size_t n = 0;
    uint8_t *enc = jpeg_bytes(&img, DK_PIX_RGB, 90, 0, &n);
    DK_CHECK(enc != NULL);
    dk_jpeg *j = NULL;
    DK_CHECK_OK(dk_jpeg_create(&j));
    dk_jpeg_decode_opts o;
    dk_jpeg_decode_opts_init(&o);
    o.scale_num = 3;
    o.scale_den = 4;
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &o, &ref));
    int w = 0, h = 0;
    dk_jpeg_info info;
    DK_CHECK_OK(dk_jpeg_info_get(j, enc, n, &info));
    DK_CHECK_OK(dk_jpeg_scaled_size(info.width, info.height, 3, 4, &w, &h));
    DK_CHECK_EQ_INT(w, 40);
    DK_CHECK_EQ_INT(h, 28);

    /* Padded rows inside a larger canvas; the padding stays untouched. */
    size_t stride = (size_t)w * 3 + 13;
    uint8_t *canvas = malloc(stride * (size_t)h);
    DK_CHECK(canvas != NULL);
    memset(canvas, 0xAB, stride * (size_t)h);
    DK_CHECK_OK(dk_jpeg_decode_into(j, enc, n, &o, canvas, w, h, stride));
    int rows_ok = 1, pad_ok = 1;
    for (int y = 0; y < h; y++) {
        const uint8_t *want = (const uint8_t *)ref.data + (size_t)y * w * 3;
        rows_ok &= memcmp(canvas + y * stride, want, (size_t)w * 3) == 0;
        for (size_t k = (size_t)w * 3; k < stride; k++) pad_ok &= canvas[y * stride + k] == 0xAB;
    }
    DK_CHECK(rows_ok);
    DK_CHECK(pad_ok);
    /* Packed (stride 0). */
    DK_CHECK_OK(dk_jpeg_decode_into(j, enc, n, &o, canvas, w, h, 0));
    DK_CHECK(memcmp(canvas, ref.data, (size_t)w * h * 3) == 0);

    DK_CHECK_STATUS(dk_jpeg_decode_into(j, enc, n, &o, canvas, w + 1, h, 0), DK_ERANGE);
    DK_CHECK_CONTAINS(dk_jpeg_errmsg(j), "dk_jpeg_decode_into()");
    DK_CHECK_CONTAINS(dk_jpeg_errmsg(j), "40x28");
    DK_CHECK_STATUS(dk_jpeg_decode_into(j, enc, n, &o, canvas, w, h - 1, 0), DK_ERANGE);
    DK_CHECK_STATUS(dk_jpeg_decode_into(j, enc, n, NULL, canvas, w, h, 0), DK_ERANGE);
    DK_CHECK_STATUS(dk_jpeg_decode_into(j, enc, n, &o, canvas, w, h, (size_t)w * 3 - 1), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_decode_into(j, enc, n, &o, NULL, w, h, 0), DK_EINVAL);
    /* Corrupt data through the same path. */
    DK_CHECK_STATUS(dk_jpeg_decode_into(j, enc, n / 2, &o, canvas, w, h, 0), DK_EINVALIDDATA);

    free(canvas);
    free(enc);
    dk_tensor_release(&ref);
    dk_tensor_release(&img);
    dk_jpeg_destroy(j);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_image_jpeg_truncated_and_garbage(void)
{
    int64_t live0 = dk_alloc_live();
    dk_tensor img, dec;
    DK_CHECK_OK(make_image(&img, 128, 160, 3, PAT_NOISE, NULL));
    size_t n = 0;
    uint8_t *enc = jpeg_bytes(&img, DK_PIX_RGB, 90, 0, &n);
    DK_CHECK(enc != NULL && n > 4096);
    dk_jpeg *j = NULL;
    DK_CHECK_OK(dk_jpeg_create(&j));
    dk_jpeg_decode_opts strict, lax;
    dk_jpeg_decode_opts_init(&strict);
    dk_jpeg_decode_opts_init(&lax);
    lax.allow_warnings = 1;

    /* Cuts through the header and through the entropy-coded data. */
    size_t cuts[] = { 1, 2, 3, 10, 100, 300, n / 8, n / 4, n / 2, 3 * n / 4, n - 100, n - 2 };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        DK_CHECK_STATUS(dk_jpeg_decode(j, enc, cuts[i], &strict, &dec), DK_EINVALIDDATA);
        DK_CHECK(dec.data == NULL && dec.owner == NULL);
        DK_CHECK_CONTAINS(dk_errmsg(), "dk_jpeg_decode(): corrupt JPEG data: ");
        DK_CHECK_CONTAINS(dk_jpeg_errmsg(j), "corrupt JPEG data");
    }
    DK_CHECK_STATUS(dk_jpeg_decode(j, enc, n / 2, &strict, &dec), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "Premature end of JPEG file");

    /* allow_warnings accepts a truncated scan (the rest is filled in), and
       the rows before the cut are exactly what a full decode gives. */
    dk_tensor full;
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &strict, &full));
    DK_CHECK(mean_abs_err(&full, &img) < 60);   /* noise survives JPEG poorly */
    DK_CHECK_OK(dk_jpeg_decode(j, enc, 3 * n / 4, &lax, &dec));
    DK_CHECK_EQ_INT(dec.shape[0], 128);
    DK_CHECK_EQ_INT(dec.shape[1], 160);
    DK_CHECK(memcmp(dec.data, full.data, 160 * 3 * 8) == 0);
    DK_CHECK(memcmp(dec.data, full.data, dk_tensor_nbytes(&full)) != 0);
    dk_tensor_release(&dec);
    dk_tensor_release(&full);
    /* ...but not a missing header. */
    DK_CHECK_STATUS(dk_jpeg_decode(j, enc, 100, &lax, &dec), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_jpeg_info_get(j, enc, 100, &(dk_jpeg_info){0}), DK_EINVALIDDATA);

    /* The handle works normally after all those failures. */
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &strict, &dec));
    dk_tensor_release(&dec);

    /* Garbage of every kind. */
    uint8_t junk[4096];
    uint32_t seed = 99;
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(xs_next(&seed) >> 24);
    DK_CHECK_STATUS(dk_jpeg_decode(j, junk, sizeof junk, NULL, &dec), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_jpeg_decode(j, junk, 0, NULL, &dec), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_jpeg_decode(j, NULL, 0, NULL, &dec), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_jpeg_decode(j, NULL, 10, NULL, &dec), DK_EINVAL);
    junk[0] = 0xFF;
    junk[1] = 0xD8;
    junk[2] = 0xFF;
    DK_CHECK_STATUS(dk_jpeg_decode(j, junk, sizeof junk, NULL, &dec), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_jpeg_info_get(j, junk, sizeof junk, &(dk_jpeg_info){0}), DK_EINVALIDDATA);
    /* Random bytes inside the entropy-coded data of a valid file. */
    for (int t = 0; t < 20; t++) {
        uint8_t *bad = malloc(n);
        memcpy(bad, enc, n);
        for (int k = 0; k < 8; k++) bad[n / 3 + xs_next(&seed) % (n / 2)] = (uint8_t)xs_next(&seed);
        int st = dk_jpeg_decode(j, bad, n, NULL, &dec);
        DK_CHECK(st == DK_OK || st == DK_EINVALIDDATA);
        dk_tensor_release(&dec);
        st = dk_jpeg_decode(j, bad, n, &lax, &dec);
        DK_CHECK(st == DK_OK || st == DK_EINVALIDDATA);
        dk_tensor_release(&dec);
        free(bad);
    }
    DK_CHECK_STATUS(dk_jpeg_info_get(NULL, enc, n, &(dk_jpeg_info){0}), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_info_get(j, enc, n, NULL), DK_EINVAL);

    free(enc);
    dk_tensor_release(&img);
    dk_jpeg_destroy(j);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* A 32x16 solid (200, 30, 40) JPEG whose luma is sampled 4x2 against 1x1
 * chroma (4:1:0), made with libjpeg: TurboJPEG 2.x has no name for this
 * subsampling and its header call refuses it, though it decodes fine. */
static const uint8_t jpeg_410[] = {
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x10, 0x0b, 0x0c, 0x0e, 0x0c, 0x0a, 0x10,
    0x0e, 0x0d, 0x0e, 0x12, 0x11, 0x10, 0x13, 0x18, 0x28, 0x1a, 0x18, 0x16, 0x16, 0x18, 0x31, 0x23,
    0x25, 0x1d, 0x28, 0x3a, 0x33, 0x3d, 0x3c, 0x39, 0x33, 0x38, 0x37, 0x40, 0x48, 0x5c, 0x4e, 0x40,
    0x44, 0x57, 0x45, 0x37, 0x38, 0x50, 0x6d, 0x51, 0x57, 0x5f, 0x62, 0x67, 0x68, 0x67, 0x3e, 0x4d,
    0x71, 0x79, 0x70, 0x64, 0x78, 0x5c, 0x65, 0x67, 0x63, 0xff, 0xdb, 0x00, 0x43, 0x01, 0x11, 0x12,
    0x12, 0x18, 0x15, 0x18, 0x2f, 0x1a, 0x1a, 0x2f, 0x63, 0x42, 0x38, 0x42, 0x63, 0x63, 0x63, 0x63,
    0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63,
    0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63,
    0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0xff, 0xc0,
    0x00, 0x11, 0x08, 0x00, 0x10, 0x00, 0x20, 0x03, 0x01, 0x42, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11,
    0x01, 0xff, 0xc4, 0x00, 0x15, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0xff, 0xc4, 0x00, 0x14, 0x10, 0x01, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xc4,
    0x00, 0x15, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x04, 0x06, 0xff, 0xc4, 0x00, 0x14, 0x11, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xda, 0x00, 0x0c, 0x03,
    0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00, 0x3f, 0x00, 0x90, 0x00, 0x00, 0x8a, 0x87, 0xff, 0xd9,
};

static void test_image_jpeg_unusual_subsampling(void)
{
    int64_t live0 = dk_alloc_live();
    dk_jpeg *j = NULL;
    DK_CHECK_OK(dk_jpeg_create(&j));
    dk_jpeg_info info;
    DK_CHECK_OK(dk_jpeg_info_get(j, jpeg_410, sizeof jpeg_410, &info));
    DK_CHECK_EQ_INT(info.width, 32);
    DK_CHECK_EQ_INT(info.height, 16);
    DK_CHECK_EQ_INT(info.subsampling, -1);
    DK_CHECK_EQ_INT(info.colorspace, 0);
    dk_tensor dec;
    DK_CHECK_OK(dk_jpeg_decode(j, jpeg_410, sizeof jpeg_410, NULL, &dec));
    DK_CHECK_EQ_INT(dec.shape[0], 16);
    DK_CHECK_EQ_INT(dec.shape[1], 32);
    const uint8_t *p = (const uint8_t *)dec.data + (8 * 32 + 20) * 3;
    DK_CHECK(abs(p[0] - 200) < 6 && abs(p[1] - 30) < 6 && abs(p[2] - 40) < 6);
    dk_tensor_release(&dec);
    dk_jpeg_decode_opts o;
    dk_jpeg_decode_opts_init(&o);
    o.scale_num = 1;
    o.scale_den = 4;
    DK_CHECK_OK(dk_jpeg_decode(j, jpeg_410, sizeof jpeg_410, &o, &dec));
    DK_CHECK_EQ_INT(dec.shape[0], 4);
    DK_CHECK_EQ_INT(dec.shape[1], 8);
    dk_tensor_release(&dec);
    /* Still refused when the data is cut short. */
    DK_CHECK_STATUS(dk_jpeg_decode(j, jpeg_410, sizeof jpeg_410 - 40, NULL, &dec), DK_EINVALIDDATA);
    dk_jpeg_destroy(j);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* Damage that is first only warned about (an unknown JFIF major version)
 * and then fatal (a broken Huffman table before a later scan). With warnings
 * allowed this must still fail: TurboJPEG 2.x reports it as a warning, and
 * leaves its output buffer unwritten. */
static void test_image_jpeg_fatal_after_warning(void)
{
    int64_t live0 = dk_alloc_live();
    dk_tensor img, dec;
    DK_CHECK_OK(make_image(&img, 64, 64, 3, PAT_NOISE, NULL));
    tjhandle tj = tjInitCompress();
    DK_CHECK(tj != NULL);
    unsigned char *enc = NULL;
    unsigned long n = 0;
    int rc = tjCompress2(tj, img.data, 64, 0, 64, TJPF_RGB, &enc, &n, TJSAMP_420, 90,
                         TJFLAG_PROGRESSIVE);
    tjDestroy(tj);
    DK_CHECK(rc == 0);
    /* SOI, then APP0 "JFIF\0" with the major version at offset 11. */
    DK_CHECK(n > 20 && enc[3] == 0xE0 && memcmp(enc + 6, "JFIF", 5) == 0 && enc[11] == 1);
    enc[11] = 7;
    /* Alone, that is a header warning: the header is still readable, a
       strict decode refuses, a lax one decodes normally. */
    dk_jpeg *j = NULL;
    DK_CHECK_OK(dk_jpeg_create(&j));
    dk_jpeg_decode_opts lax;
    dk_jpeg_decode_opts_init(&lax);
    lax.allow_warnings = 1;
    dk_jpeg_info info;
    DK_CHECK_OK(dk_jpeg_info_get(j, enc, n, &info));
    DK_CHECK_EQ_INT(info.width, 64);
    DK_CHECK_EQ_INT(info.subsampling, 420);
    DK_CHECK_STATUS(dk_jpeg_decode(j, enc, n, NULL, &dec), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "JFIF");
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, &lax, &dec));
    DK_CHECK(mean_abs_err(&dec, &img) < 60);
    dk_tensor_release(&dec);

    size_t sos[2] = { 0, 0 };
    int ns = 0;
    for (size_t i = 2; i + 1 < n && ns < 2; i++)
        if (enc[i] == 0xFF && enc[i + 1] == 0xDA) sos[ns++] = i;
    DK_CHECK_EQ_INT(ns, 2);
    size_t dht = 0;
    for (size_t i = sos[1]; i + 1 < n && !dht; i++)
        if (enc[i] == 0xFF && enc[i + 1] == 0xC4) dht = i;
    DK_CHECK(dht > 0);
    enc[dht + 4] = 0x7F;   /* table class/index byte: no such table */

    /* The premise, when this TurboJPEG has the sticky warning flag. */
    tjhandle d = tjInitDecompress();
    uint8_t *raw = malloc(64 * 64 * 3);
    DK_CHECK(d != NULL && raw != NULL);
    if (tjDecompress2(d, enc, n, raw, 64, 0, 64, TJPF_RGB, 0) == 0 ||
        tjGetErrorCode(d) != TJERR_WARNING)
        fprintf(stderr, "  note: TurboJPEG reports this damage as fatal; scenario not exercised\n");
    tjDestroy(d);
    free(raw);

    DK_CHECK_STATUS(dk_jpeg_decode(j, enc, n, &lax, &dec), DK_EINVALIDDATA);
    DK_CHECK(dec.data == NULL && dec.owner == NULL);
    DK_CHECK_CONTAINS(dk_errmsg(), "corrupt JPEG data: ");
    uint8_t *canvas = malloc(64 * 64 * 3);
    DK_CHECK(canvas != NULL);
    DK_CHECK_STATUS(dk_jpeg_decode_into(j, enc, n, &lax, canvas, 64, 64, 0), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_jpeg_decode(j, enc, n, NULL, &dec), DK_EINVALIDDATA);
    free(canvas);
    tjFree(enc);
    dk_tensor_release(&img);
    dk_jpeg_destroy(j);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* A progressive JPEG (made with TurboJPEG directly: drivekit only writes
 * baseline) whose last scan is repeated 600 times. Repeated refinement scans
 * are only warned about, so with allow_warnings it is the scan limit that
 * must stop the decoder. */
static void test_image_jpeg_scan_limit(void)
{
    int64_t live0 = dk_alloc_live();
    dk_tensor img, dec;
    DK_CHECK_OK(make_image(&img, 16, 16, 3, PAT_NOISE, NULL));
    tjhandle tj = tjInitCompress();
    DK_CHECK(tj != NULL);
    unsigned char *enc = NULL;
    unsigned long n = 0;
    int rc = tjCompress2(tj, img.data, 16, 0, 16, TJPF_RGB, &enc, &n, TJSAMP_420, 90,
                         TJFLAG_PROGRESSIVE);
    tjDestroy(tj);
    DK_CHECK(rc == 0);
    size_t last_sos = 0;
    for (size_t i = 2; i + 1 < n; i++)
        if (enc[i] == 0xFF && enc[i + 1] == 0xDA) last_sos = i;
    DK_CHECK(last_sos > 0 && enc[n - 2] == 0xFF && enc[n - 1] == 0xD9);
    size_t scan = n - 2 - last_sos, reps = 600;
    size_t bn = last_sos + scan * reps + 2;
    uint8_t *bomb = malloc(bn);
    DK_CHECK(bomb != NULL);
    memcpy(bomb, enc, last_sos);
    for (size_t r = 0; r < reps; r++) memcpy(bomb + last_sos + r * scan, enc + last_sos, scan);
    bomb[bn - 2] = 0xFF;
    bomb[bn - 1] = 0xD9;

    dk_jpeg *j = NULL;
    DK_CHECK_OK(dk_jpeg_create(&j));
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, NULL, &dec));   /* the original is fine */
    dk_tensor_release(&dec);
    dk_jpeg_decode_opts lax;
    dk_jpeg_decode_opts_init(&lax);
    lax.allow_warnings = 1;
    DK_CHECK_STATUS(dk_jpeg_decode(j, bomb, bn, &lax, &dec), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "scans");
    DK_CHECK_STATUS(dk_jpeg_decode(j, bomb, bn, NULL, &dec), DK_EINVALIDDATA);
    free(bomb);
    tjFree(enc);
    dk_tensor_release(&img);
    dk_jpeg_destroy(j);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_image_jpeg_encode_args(void)
{
    int64_t live0 = dk_alloc_live();
    dk_tensor img, rgba, dec;
    DK_CHECK_OK(make_image(&img, 20, 30, 3, PAT_SMOOTH, NULL));
    DK_CHECK_OK(make_image(&rgba, 20, 30, 4, PAT_SMOOTH, NULL));
    dk_jpeg *j = NULL;
    DK_CHECK_OK(dk_jpeg_create(&j));
    uint8_t *enc = (uint8_t *)1;
    size_t n = 7;
    DK_CHECK_STATUS(dk_jpeg_encode(j, &img, DK_PIX_RGB, 0, 0, &enc, &n), DK_EINVAL);
    DK_CHECK(enc == NULL && n == 0);
    DK_CHECK_CONTAINS(dk_jpeg_errmsg(j), "quality");
    DK_CHECK_STATUS(dk_jpeg_encode(j, &img, DK_PIX_RGB, 101, 0, &enc, &n), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_encode(j, &rgba, DK_PIX_RGBA, 90, 0, &enc, &n), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_encode(j, &img, DK_PIX_GRAY, 90, 0, &enc, &n), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_encode(j, &rgba, DK_PIX_RGB, 90, 0, &enc, &n), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_encode(j, NULL, DK_PIX_RGB, 90, 0, &enc, &n), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_encode(j, &img, DK_PIX_RGB, 90, 0, NULL, &n), DK_EINVAL);
    DK_CHECK_STATUS(dk_jpeg_encode(NULL, &img, DK_PIX_RGB, 90, 0, &enc, &n), DK_EINVAL);

    /* Wrong dtype; planar (non-interleaved) layout. */
    dk_tensor f = img;
    f.dtype = DK_F32;
    DK_CHECK_STATUS(dk_jpeg_encode(j, &f, DK_PIX_RGB, 90, 0, &enc, &n), DK_EINVAL);
    dk_tensor planar = img;
    planar.strides[0] = 30;
    planar.strides[1] = 1;
    planar.strides[2] = 600;
    DK_CHECK_STATUS(dk_jpeg_encode(j, &planar, DK_PIX_RGB, 90, 0, &enc, &n), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), "stride");

    /* A crop (row stride larger than the row) and a vertical flip (negative
       row stride) encode what the view shows. */
    dk_tensor crop = img;
    crop.shape[0] = 10;
    crop.shape[1] = 16;
    crop.data = (uint8_t *)img.data + (5 * 30 + 7) * 3;
    DK_CHECK_OK(dk_jpeg_encode(j, &crop, DK_PIX_RGB, 98, 1, &enc, &n));
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, NULL, &dec));
    DK_CHECK_EQ_INT(dec.shape[0], 10);
    DK_CHECK_EQ_INT(dec.shape[1], 16);
    const uint8_t *p = dec.data, *q = crop.data;
    DK_CHECK(abs((int)p[0] - (int)q[0]) < 6 && abs((int)p[1] - (int)q[1]) < 6);
    dk_tensor_release(&dec);
    dk_free(enc);

    dk_tensor flip = img;
    flip.data = (uint8_t *)img.data + 19 * 90;
    flip.strides[0] = -90;
    DK_CHECK_OK(dk_jpeg_encode(j, &flip, DK_PIX_RGB, 98, 1, &enc, &n));
    DK_CHECK_OK(dk_jpeg_decode(j, enc, n, NULL, &dec));
    p = dec.data;
    q = img.data;
    /* Top decoded row is the source's bottom row (green = 255 there). */
    DK_CHECK(p[1] > 240 && q[1] < 15);
    dk_tensor_release(&dec);
    dk_free(enc);

    dk_tensor_release(&img);
    dk_tensor_release(&rgba);
    dk_jpeg_destroy(j);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* PNG                                                                       */

static void test_image_png_roundtrip(void)
{
    int64_t live0 = dk_alloc_live();
    static const dk_pixfmt fmts[3] = { DK_PIX_GRAY, DK_PIX_RGB, DK_PIX_RGBA };
    for (int i = 0; i < 3; i++) {
        int c = dk_pixfmt_channels(fmts[i]);
        for (int pat = PAT_SMOOTH; pat <= PAT_NOISE; pat++) {
            dk_tensor img, dec;
            DK_CHECK_OK(make_image(&img, 33, 47, c, pat, NULL));
            uint8_t *enc = NULL;
            size_t n = 0;
            DK_CHECK_OK(dk_png_encode(&img, &enc, &n));
            DK_CHECK(n > 8 && enc[0] == 0x89 && enc[1] == 'P');
            DK_CHECK_OK(dk_png_decode(enc, n, fmts[i], &dec));
            DK_CHECK_EQ_INT(dec.ndim, 3);
            DK_CHECK_EQ_INT(dec.shape[0], 33);
            DK_CHECK_EQ_INT(dec.shape[1], 47);
            DK_CHECK_EQ_INT(dec.shape[2], c);
            DK_CHECK(same_bytes(&img, &dec));
            dk_tensor_release(&dec);
            dk_free(enc);
            dk_tensor_release(&img);
        }
    }

    /* A crop and a flipped view encode exactly what they show. */
    dk_tensor img, dec;
    DK_CHECK_OK(make_image(&img, 30, 40, 3, PAT_NOISE, NULL));
    dk_tensor crop = img;
    crop.shape[0] = 11;
    crop.shape[1] = 13;
    crop.data = (uint8_t *)img.data + (4 * 40 + 9) * 3;
    uint8_t *enc = NULL;
    size_t n = 0;
    DK_CHECK_OK(dk_png_encode(&crop, &enc, &n));
    DK_CHECK_OK(dk_png_decode(enc, n, DK_PIX_RGB, &dec));
    int ok = 1;
    for (int y = 0; y < 11; y++)
        ok &= memcmp((uint8_t *)dec.data + y * 13 * 3, (uint8_t *)crop.data + y * 120, 39) == 0;
    DK_CHECK(ok);
    dk_tensor_release(&dec);
    dk_free(enc);

    dk_tensor flip = img;
    flip.data = (uint8_t *)img.data + 29 * 120;
    flip.strides[0] = -120;
    DK_CHECK_OK(dk_png_encode(&flip, &enc, &n));
    DK_CHECK_OK(dk_png_decode(enc, n, DK_PIX_RGB, &dec));
    ok = 1;
    for (int y = 0; y < 30; y++)
        ok &= memcmp((uint8_t *)dec.data + y * 120, (uint8_t *)img.data + (29 - y) * 120, 120) == 0;
    DK_CHECK(ok);
    dk_tensor_release(&dec);
    dk_free(enc);

    /* Two-dimensional grey input is accepted as (H, W, 1). */
    dk_tensor g2;
    int64_t shape2[2] = { 5, 6 };
    DK_CHECK_OK(dk_tensor_alloc(&g2, DK_U8, 2, shape2));
    DK_CHECK_OK(dk_png_encode(&g2, &enc, &n));
    DK_CHECK_OK(dk_png_decode(enc, n, DK_PIX_GRAY, &dec));
    DK_CHECK_EQ_INT(dec.shape[2], 1);
    dk_tensor_release(&dec);
    dk_free(enc);
    dk_tensor_release(&g2);

    /* Bad inputs to the encoder. */
    dk_tensor two;
    int64_t shape3[3] = { 4, 4, 2 };
    DK_CHECK_OK(dk_tensor_alloc(&two, DK_U8, 3, shape3));
    DK_CHECK_STATUS(dk_png_encode(&two, &enc, &n), DK_EINVAL);
    DK_CHECK(enc == NULL && n == 0);
    dk_tensor_release(&two);
    dk_tensor empty = img;
    empty.shape[0] = 0;
    DK_CHECK_STATUS(dk_png_encode(&empty, &enc, &n), DK_EINVAL);
    DK_CHECK_STATUS(dk_png_encode(NULL, &enc, &n), DK_EINVAL);
    DK_CHECK_STATUS(dk_png_encode(&img, NULL, &n), DK_EINVAL);

    dk_tensor_release(&img);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_image_png_conversions(void)
{
    int64_t live0 = dk_alloc_live();
    dk_tensor rgba, dec;
    DK_CHECK_OK(make_image(&rgba, 9, 11, 4, PAT_NOISE, NULL));
    uint8_t *enc = NULL;
    size_t n = 0;
    DK_CHECK_OK(dk_png_encode(&rgba, &enc, &n));

    /* Alpha is dropped, not composited: RGB equals the RGBA's colour. */
    DK_CHECK_OK(dk_png_decode(enc, n, DK_PIX_RGB, &dec));
    DK_CHECK_EQ_INT(dec.shape[2], 3);
    int ok = 1;
    const uint8_t *p = dec.data, *q = rgba.data;
    for (int i = 0; i < 9 * 11; i++) ok &= memcmp(p + 3 * i, q + 4 * i, 3) == 0;
    DK_CHECK(ok);
    dk_tensor_release(&dec);

    /* Grey from colour+alpha: one channel, and alpha still not applied
       (a pixel with alpha 0 keeps its brightness). */
    DK_CHECK_OK(dk_png_decode(enc, n, DK_PIX_GRAY, &dec));
    DK_CHECK_EQ_INT(dec.shape[2], 1);
    dk_tensor_release(&dec);

    DK_CHECK_STATUS(dk_png_decode(enc, n, DK_PIX_BGR, &dec), DK_EINVAL);
    DK_CHECK_STATUS(dk_png_decode(enc, n, (dk_pixfmt)9, &dec), DK_EINVAL);
    DK_CHECK_STATUS(dk_png_decode(enc, n, DK_PIX_RGB, NULL), DK_EINVAL);
    dk_free(enc);

    /* Grey -> RGB replicates; RGB -> RGBA adds opaque alpha. */
    dk_tensor gray, rgb;
    DK_CHECK_OK(make_image(&gray, 7, 5, 1, PAT_NOISE, NULL));
    DK_CHECK_OK(dk_png_encode(&gray, &enc, &n));
    DK_CHECK_OK(dk_png_decode(enc, n, DK_PIX_RGB, &dec));
    p = dec.data;
    q = gray.data;
    ok = 1;
    for (int i = 0; i < 35; i++)
        ok &= p[3 * i] == q[i] && p[3 * i + 1] == q[i] && p[3 * i + 2] == q[i];
    DK_CHECK(ok);
    dk_tensor_release(&dec);
    dk_free(enc);
    DK_CHECK_OK(make_image(&rgb, 7, 5, 3, PAT_NOISE, NULL));
    DK_CHECK_OK(dk_png_encode(&rgb, &enc, &n));
    DK_CHECK_OK(dk_png_decode(enc, n, DK_PIX_RGBA, &dec));
    p = dec.data;
    q = rgb.data;
    ok = 1;
    for (int i = 0; i < 35; i++) ok &= memcmp(p + 4 * i, q + 3 * i, 3) == 0 && p[4 * i + 3] == 255;
    DK_CHECK(ok);
    dk_tensor_release(&dec);
    dk_free(enc);

    dk_tensor_release(&gray);
    dk_tensor_release(&rgb);
    dk_tensor_release(&rgba);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_image_png_16bit(void)
{
    int64_t live0 = dk_alloc_live();
    /* 16-bit grey, 256 x 2, values k * 257 (the exact 16-bit image of k). */
    enum { W = 256, H = 2 };
    uint8_t raw[H * (1 + W * 2)];
    for (int y = 0; y < H; y++) {
        uint8_t *r = raw + y * (1 + W * 2);
        r[0] = 0;
        for (int x = 0; x < W; x++) {
            int k = y ? 255 - x : x;
            r[1 + 2 * x] = (uint8_t)k;   /* k * 257 = (k << 8) | k */
            r[2 + 2 * x] = (uint8_t)k;
        }
    }
    size_t n = 0;
    uint8_t *png = craft_png(W, H, 16, 0, raw, sizeof raw, &n);
    DK_CHECK(png != NULL);
    dk_tensor dec;
    DK_CHECK_OK(dk_png_decode(png, n, DK_PIX_GRAY, &dec));
    DK_CHECK_EQ_INT(dec.shape[0], H);
    DK_CHECK_EQ_INT(dec.shape[1], W);
    const uint8_t *p = dec.data;
    int ok = 1;
    for (int x = 0; x < W; x++) ok &= p[x] == x && p[W + x] == 255 - x;
    DK_CHECK(ok);
    dk_tensor_release(&dec);
    free(png);

    /* 16-bit RGB, arbitrary values: scaled, not gamma-encoded. */
    uint8_t raw3[1 + 3 * 6];
    static const uint16_t v[3] = { 0x1234, 0x8000, 0xFFFF };
    raw3[0] = 0;
    for (int i = 0; i < 3; i++) {
        raw3[1 + 2 * i] = (uint8_t)(v[i] >> 8);
        raw3[2 + 2 * i] = (uint8_t)v[i];
    }
    png = craft_png(1, 1, 16, 2, raw3, 7, &n);
    DK_CHECK(png != NULL);
    DK_CHECK_OK(dk_png_decode(png, n, DK_PIX_RGB, &dec));
    p = dec.data;
    for (int i = 0; i < 3; i++) DK_CHECK(abs((int)p[i] - (int)((v[i] * 255 + 32767) / 65535)) <= 1);
    dk_tensor_release(&dec);
    free(png);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_image_png_corrupt(void)
{
    int64_t live0 = dk_alloc_live();
    dk_tensor img, dec;
    DK_CHECK_OK(make_image(&img, 64, 64, 3, PAT_NOISE, NULL));
    size_t n = 0;
    uint8_t *enc = png_bytes(&img, &n);
    DK_CHECK(enc != NULL);
    uint8_t *bad = malloc(n);
    DK_CHECK(bad != NULL);

    /* Truncation anywhere. */
    size_t cuts[] = { 0, 1, 7, 8, 20, 33, 40, 100, n / 4, n / 2, n - 20 };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        DK_CHECK_STATUS(dk_png_decode(enc, cuts[i], DK_PIX_RGB, &dec), DK_EINVALIDDATA);
        DK_CHECK(dec.data == NULL && dec.owner == NULL);
        DK_CHECK_CONTAINS(dk_errmsg(), "dk_png_decode(): corrupt PNG data: ");
    }
    /* Bad signature. */
    memcpy(bad, enc, n);
    bad[1] = 'Q';
    DK_CHECK_STATUS(dk_png_decode(bad, n, DK_PIX_RGB, &dec), DK_EINVALIDDATA);
    /* CRC error in IHDR (byte 20 is inside its data). */
    memcpy(bad, enc, n);
    bad[20] ^= 0x01;
    DK_CHECK_STATUS(dk_png_decode(bad, n, DK_PIX_RGB, &dec), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "CRC");
    /* CRC error in the image data. */
    memcpy(bad, enc, n);
    bad[n / 2] ^= 0x40;
    DK_CHECK_STATUS(dk_png_decode(bad, n, DK_PIX_RGBA, &dec), DK_EINVALIDDATA);
    DK_CHECK_CONTAINS(dk_errmsg(), "CRC");
    /* Garbage and NULL. */
    uint32_t seed = 7;
    for (size_t i = 0; i < n; i++) bad[i] = (uint8_t)(xs_next(&seed) >> 24);
    DK_CHECK_STATUS(dk_png_decode(bad, n, DK_PIX_RGB, &dec), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_png_decode(NULL, 0, DK_PIX_RGB, &dec), DK_EINVALIDDATA);
    DK_CHECK_STATUS(dk_png_decode(NULL, 5, DK_PIX_RGB, &dec), DK_EINVAL);
    /* A JPEG is not a PNG. */
    size_t jn = 0;
    uint8_t *jpg = jpeg_bytes(&img, DK_PIX_RGB, 80, 0, &jn);
    DK_CHECK(jpg != NULL);
    DK_CHECK_STATUS(dk_png_decode(jpg, jn, DK_PIX_RGB, &dec), DK_EINVALIDDATA);
    free(jpg);

    /* A tiny file whose header claims 100000 x 100000 pixels is refused
       before anything is allocated. */
    uint8_t raw[2] = { 0, 0 };
    size_t bn = 0;
    uint8_t *bomb = craft_png(100000, 100000, 8, 2, raw, sizeof raw, &bn);
    DK_CHECK(bomb != NULL);
    int64_t before = dk_alloc_total();
    DK_CHECK_STATUS(dk_png_decode(bomb, bn, DK_PIX_RGB, &dec), DK_EINVALIDDATA);
    DK_CHECK_EQ_INT(dk_alloc_total(), before);
    free(bomb);
    /* Too little data for a modest header: libpng's own truncation error. */
    bomb = craft_png(300, 200, 8, 2, raw, sizeof raw, &bn);
    DK_CHECK(bomb != NULL);
    DK_CHECK_STATUS(dk_png_decode(bomb, bn, DK_PIX_RGB, &dec), DK_EINVALIDDATA);
    free(bomb);

    free(bad);
    free(enc);
    dk_tensor_release(&img);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* Files                                                                     */

static int count_temp_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 && strstr(e->d_name, ".tmp")) n++;
    closedir(d);
    return n;
}

static void test_image_file_read_write(void)
{
    int64_t live0 = dk_alloc_live();
    char path[512], prefix[64];
    tmp_path(path, sizeof path, "bytes.bin");
    snprintf(prefix, sizeof prefix, "dk_img_%ld_", (long)getpid());
    uint8_t data[3000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7);

    DK_CHECK_OK(dk_file_write(path, data, sizeof data));
    uint8_t *got = NULL;
    size_t n = 0;
    DK_CHECK_OK(dk_file_read(path, &got, &n));
    DK_CHECK_EQ_INT(n, sizeof data);
    DK_CHECK(memcmp(got, data, n) == 0);
    dk_free(got);
    /* Overwrite with something shorter; no temporary files remain. */
    DK_CHECK_OK(dk_file_write(path, "abc", 3));
    DK_CHECK_OK(dk_file_read(path, &got, &n));
    DK_CHECK_EQ_INT(n, 3);
    DK_CHECK(memcmp(got, "abc", 3) == 0);
    dk_free(got);
    DK_CHECK_EQ_INT(count_temp_files(dk_test_tmpdir(), prefix), 0);
    /* The file gets ordinary permissions, not mkstemp's 0600. */
    struct stat sb;
    DK_CHECK(stat(path, &sb) == 0);
    mode_t um = umask(022);
    umask(um);
    DK_CHECK_EQ_INT(sb.st_mode & 0777, 0666 & ~um);
    /* Empty file. */
    DK_CHECK_OK(dk_file_write(path, NULL, 0));
    DK_CHECK_OK(dk_file_read(path, &got, &n));
    DK_CHECK_EQ_INT(n, 0);
    DK_CHECK(got != NULL);
    dk_free(got);
    remove(path);

    /* Missing file: DK_ENOENT naming the path. */
    DK_CHECK_STATUS(dk_file_read(path, &got, &n), DK_ENOENT);
    DK_CHECK(got == NULL && n == 0);
    DK_CHECK_CONTAINS(dk_errmsg(), "dk_file_read(): ");
    DK_CHECK_CONTAINS(dk_errmsg(), path);
    DK_CHECK_CONTAINS(dk_errmsg(), strerror(ENOENT));
    /* A directory, and a FIFO (must not block waiting for a writer). */
    DK_CHECK_STATUS(dk_file_read(dk_test_tmpdir(), &got, &n), DK_EIO);
    DK_CHECK_CONTAINS(dk_errmsg(), "directory");
    char fifo[512];
    tmp_path(fifo, sizeof fifo, "fifo");
    remove(fifo);
    if (mkfifo(fifo, 0600) == 0) {
        DK_CHECK_STATUS(dk_file_read(fifo, &got, &n), DK_EIO);
        DK_CHECK_CONTAINS(dk_errmsg(), "not a regular file");
        remove(fifo);
    }
    /* Writing into a missing directory fails with the path in the message. */
    char deep[600];
    snprintf(deep, sizeof deep, "%s/no_such_dir_%ld/x.bin", dk_test_tmpdir(), (long)getpid());
    DK_CHECK_STATUS(dk_file_write(deep, data, 10), DK_EIO);
    DK_CHECK_CONTAINS(dk_errmsg(), "dk_file_write(): ");
    DK_CHECK_CONTAINS(dk_errmsg(), deep);
    DK_CHECK_STATUS(dk_file_read(NULL, &got, &n), DK_EINVAL);
    DK_CHECK_STATUS(dk_file_write(NULL, data, 1), DK_EINVAL);
    DK_CHECK_STATUS(dk_file_write(path, NULL, 1), DK_EINVAL);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

static void test_image_load_save(void)
{
    int64_t live0 = dk_alloc_live();
    char png_path[512], jpg_path[512], jpeg_up[512], bad_path[512], txt_path[512];
    tmp_path(png_path, sizeof png_path, "img.png");
    tmp_path(jpg_path, sizeof jpg_path, "img.jpg");
    tmp_path(jpeg_up, sizeof jpeg_up, "IMG.JPEG");
    tmp_path(bad_path, sizeof bad_path, "img.bmp");
    tmp_path(txt_path, sizeof txt_path, "notes.jpg");
    dk_tensor img, rgba, gray, dec;
    DK_CHECK_OK(make_image(&img, 24, 40, 3, PAT_SMOOTH, NULL));
    DK_CHECK_OK(make_image(&rgba, 24, 40, 4, PAT_NOISE, NULL));
    DK_CHECK_OK(make_image(&gray, 24, 40, 1, PAT_SMOOTH, NULL));

    /* PNG: exact, RGBA included; BGR honoured when loading. */
    DK_CHECK_OK(dk_image_save(png_path, &rgba, 0));
    dk_jpeg_decode_opts o;
    dk_jpeg_decode_opts_init(&o);
    o.format = DK_PIX_RGBA;
    DK_CHECK_OK(dk_image_load(png_path, &o, &dec));
    DK_CHECK(same_bytes(&dec, &rgba));
    dk_tensor_release(&dec);
    DK_CHECK_OK(dk_image_save(png_path, &img, 0));
    DK_CHECK_OK(dk_image_load(png_path, NULL, &dec));
    DK_CHECK(same_bytes(&dec, &img));
    dk_tensor_release(&dec);
    o.format = DK_PIX_BGR;
    DK_CHECK_OK(dk_image_load(png_path, &o, &dec));
    const uint8_t *p = dec.data, *q = img.data;
    int ok = 1;
    for (int i = 0; i < 24 * 40; i++)
        ok &= p[3 * i] == q[3 * i + 2] && p[3 * i + 1] == q[3 * i + 1] && p[3 * i + 2] == q[3 * i];
    DK_CHECK(ok);
    dk_tensor_release(&dec);

    /* JPEG, by extension in any case, scaled on load. */
    DK_CHECK_OK(dk_image_save(jpg_path, &img, 95));
    DK_CHECK_OK(dk_image_load(jpg_path, NULL, &dec));
    DK_CHECK(mean_abs_err(&dec, &img) < 3.0);
    dk_tensor_release(&dec);
    DK_CHECK_OK(dk_image_save(jpeg_up, &gray, 90));
    dk_jpeg_decode_opts_init(&o);
    o.format = DK_PIX_GRAY;
    o.scale_num = 1;
    o.scale_den = 2;
    DK_CHECK_OK(dk_image_load(jpeg_up, &o, &dec));
    DK_CHECK_EQ_INT(dec.shape[0], 12);
    DK_CHECK_EQ_INT(dec.shape[1], 20);
    DK_CHECK_EQ_INT(dec.shape[2], 1);
    dk_tensor_release(&dec);

    /* Save errors. */
    DK_CHECK_STATUS(dk_image_save(jpg_path, &rgba, 90), DK_EINVAL);
    DK_CHECK_CONTAINS(dk_errmsg(), jpg_path);
    DK_CHECK_STATUS(dk_image_save(jpg_path, &img, 0), DK_EINVAL);
    DK_CHECK_STATUS(dk_image_save(bad_path, &img, 90), DK_EUNSUPPORTED);
    DK_CHECK_CONTAINS(dk_errmsg(), "dk_image_save(): ");
    DK_CHECK_CONTAINS(dk_errmsg(), bad_path);
    char nodir[600];
    snprintf(nodir, sizeof nodir, "%s/no_such_dir_%ld/a.png", dk_test_tmpdir(), (long)getpid());
    DK_CHECK_STATUS(dk_image_save(nodir, &img, 90), DK_EIO);
    DK_CHECK_CONTAINS(dk_errmsg(), nodir);

    /* Load errors name the file. */
    remove(bad_path);
    DK_CHECK_STATUS(dk_image_load(bad_path, NULL, &dec), DK_ENOENT);
    DK_CHECK(dec.data == NULL && dec.owner == NULL);
    DK_CHECK_CONTAINS(dk_errmsg(), "dk_image_load(): ");
    DK_CHECK_CONTAINS(dk_errmsg(), bad_path);
    DK_CHECK(write_plain(txt_path, "hello, not an image\n", 20) == 0);
    DK_CHECK_STATUS(dk_image_load(txt_path, NULL, &dec), DK_EUNSUPPORTED);
    DK_CHECK_CONTAINS(dk_errmsg(), txt_path);
    DK_CHECK(write_plain(txt_path, "", 0) == 0);
    DK_CHECK_STATUS(dk_image_load(txt_path, NULL, &dec), DK_EUNSUPPORTED);
    /* A truncated JPEG file. */
    uint8_t *bytes = NULL;
    size_t n = 0;
    DK_CHECK_OK(dk_file_read(jpg_path, &bytes, &n));
    DK_CHECK_OK(dk_file_write(txt_path, bytes, n * 2 / 3));
    dk_free(bytes);
    DK_CHECK_STATUS(dk_image_load(txt_path, NULL, &dec), DK_EINVALIDDATA);
    char want[700];
    snprintf(want, sizeof want, "dk_image_load(): %s: corrupt JPEG data: ", txt_path);
    DK_CHECK_CONTAINS(dk_errmsg(), want);
    /* A corrupt PNG file. */
    DK_CHECK_OK(dk_file_read(png_path, &bytes, &n));
    bytes[n / 2] ^= 0x10;
    DK_CHECK_OK(dk_file_write(txt_path, bytes, n));
    dk_free(bytes);
    DK_CHECK_STATUS(dk_image_load(txt_path, NULL, &dec), DK_EINVALIDDATA);
    snprintf(want, sizeof want, "dk_image_load(): %s: corrupt PNG data: ", txt_path);
    DK_CHECK_CONTAINS(dk_errmsg(), want);
    DK_CHECK_STATUS(dk_image_load(NULL, NULL, &dec), DK_EINVAL);
    DK_CHECK_STATUS(dk_image_load(png_path, NULL, NULL), DK_EINVAL);

    remove(png_path);
    remove(jpg_path);
    remove(jpeg_up);
    remove(txt_path);
    dk_tensor_release(&img);
    dk_tensor_release(&rgba);
    dk_tensor_release(&gray);
    DK_CHECK_EQ_INT(dk_alloc_live(), live0);
}

/* ------------------------------------------------------------------------ */
/* Allocation failure                                                        */

typedef struct fail_alloc {
    atomic_long calls;
    long limit;   /* calls that succeed before every later one fails */
} fail_alloc;

static void *fa_malloc(void *ctx, size_t size)
{
    fail_alloc *f = ctx;
    if (atomic_fetch_add(&f->calls, 1) >= f->limit) return NULL;
    return malloc(size);
}

static void *fa_realloc(void *ctx, void *ptr, size_t size)
{
    fail_alloc *f = ctx;
    if (atomic_fetch_add(&f->calls, 1) >= f->limit) return NULL;
    return realloc(ptr, size);
}

static void fa_free(void *ctx, void *ptr)
{
    (void)ctx;
    free(ptr);
}

typedef struct oom_inputs {
    const uint8_t *jpg, *png;
    size_t jpg_n, png_n;
    const char *jpg_path, *png_path, *out_path;
} oom_inputs;

/* One scenario, run start to finish, freeing whatever it made. */
static int oom_scenario(int which, const oom_inputs *in)
{
    dk_tensor t;
    uint8_t *buf = NULL;
    size_t n = 0;
    int st;
    switch (which) {
    case 0: {
        dk_jpeg *j = NULL;
        st = dk_jpeg_create(&j);
        if (st != DK_OK) return st;
        dk_jpeg_decode_opts o;
        dk_jpeg_decode_opts_init(&o);
        o.scale_num = 1;
        o.scale_den = 2;
        st = dk_jpeg_decode(j, in->jpg, in->jpg_n, &o, &t);
        if (st == DK_OK) {
            st = dk_jpeg_encode(j, &t, DK_PIX_RGB, 80, 0, &buf, &n);
            dk_free(buf);
        }
        dk_tensor_release(&t);
        dk_jpeg_destroy(j);
        return st;
    }
    case 1:
        st = dk_png_decode(in->png, in->png_n, DK_PIX_RGB, &t);   /* strips alpha */
        if (st == DK_OK) {
            st = dk_png_encode(&t, &buf, &n);
            dk_free(buf);
        }
        dk_tensor_release(&t);
        return st;
    case 2:
        st = dk_image_load(in->jpg_path, NULL, &t);
        if (st == DK_OK) st = dk_image_save(in->out_path, &t, 90);
        dk_tensor_release(&t);
        return st;
    default:
        st = dk_image_load(in->png_path, NULL, &t);
        if (st == DK_OK) st = dk_image_save(in->out_path, &t, 0);
        dk_tensor_release(&t);
        return st;
    }
}

static void test_image_oom(void)
{
    /* dk_set_allocator needs no drivekit memory live: a leak in an earlier
       test shows up here first. */
    DK_CHECK_EQ_INT(dk_alloc_live(), 0);
    char jpg_path[512], png_path[512], out_path[512];
    tmp_path(jpg_path, sizeof jpg_path, "oom.jpg");
    tmp_path(png_path, sizeof png_path, "oom.png");
    tmp_path(out_path, sizeof out_path, "oom_out.png");
    dk_tensor img, rgba;
    DK_CHECK_OK(make_image(&img, 40, 56, 3, PAT_SMOOTH, NULL));
    DK_CHECK_OK(make_image(&rgba, 40, 56, 4, PAT_NOISE, NULL));
    oom_inputs in;
    in.jpg = jpeg_bytes(&img, DK_PIX_RGB, 90, 0, &in.jpg_n);
    in.png = png_bytes(&rgba, &in.png_n);
    DK_CHECK(in.jpg && in.png);
    DK_CHECK(write_plain(jpg_path, in.jpg, in.jpg_n) == 0);
    DK_CHECK(write_plain(png_path, in.png, in.png_n) == 0);
    in.jpg_path = jpg_path;
    in.png_path = png_path;
    in.out_path = out_path;
    dk_tensor_release(&img);
    dk_tensor_release(&rgba);
    DK_CHECK_EQ_INT(dk_alloc_live(), 0);

    for (int which = 0; which < 4; which++) {
        int succeeded = 0;
        for (long limit = 0; limit < 64 && !succeeded; limit++) {
            fail_alloc f;
            atomic_init(&f.calls, 0);
            f.limit = limit;
            dk_allocator a = { fa_malloc, fa_realloc, fa_free, &f };
            DK_CHECK_OK(dk_set_allocator(&a));
            int st = oom_scenario(which, &in);
            int64_t live = dk_alloc_live();
            DK_CHECK_OK(dk_set_allocator(NULL));   /* before any check can return */
            if (st != DK_OK && st != DK_ENOMEM) {
                fprintf(stderr, "  scenario %d, limit %ld: %s\n", which, limit, dk_errmsg());
                DK_CHECK_STATUS(st, DK_ENOMEM);
            }
            DK_CHECK_EQ_INT(live, 0);
            succeeded = st == DK_OK;
        }
        DK_CHECK(succeeded);
    }
    free((void *)in.jpg);
    free((void *)in.png);
    remove(jpg_path);
    remove(png_path);
    remove(out_path);
    DK_CHECK_EQ_INT(dk_alloc_live(), 0);
}

const dk_test_case dk_tests_image[] = {
    DK_TEST(test_image_formats_and_sizes),
    DK_TEST(test_image_jpeg_roundtrip),
    DK_TEST(test_image_jpeg_channel_order),
    DK_TEST(test_image_jpeg_scaled_decode),
    DK_TEST(test_image_jpeg_decode_into),
    DK_TEST(test_image_jpeg_truncated_and_garbage),
    DK_TEST(test_image_jpeg_unusual_subsampling),
    DK_TEST(test_image_jpeg_fatal_after_warning),
    DK_TEST(test_image_jpeg_scan_limit),
    DK_TEST(test_image_jpeg_encode_args),
    DK_TEST(test_image_png_roundtrip),
    DK_TEST(test_image_png_conversions),
    DK_TEST(test_image_png_16bit),
    DK_TEST(test_image_png_corrupt),
    DK_TEST(test_image_file_read_write),
    DK_TEST(test_image_load_save),
    DK_TEST(test_image_oom),
};
const size_t dk_tests_image_count = sizeof dk_tests_image / sizeof dk_tests_image[0];
