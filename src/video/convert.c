/*
 * Output conversion of decoded pictures, and MD5.
 *
 * RGB24 follows what `ffmpeg -pix_fmt rgb24` does, so its output can be
 * compared byte for byte: swscale with the bicubic flag the ffmpeg tool
 * passes (no resize means swscale's unscaled YUV->RGB path, so the flag only
 * matters when resizing, where drivekit uses bilinear instead); the matrix
 * from the frame's colour space the way ffmpeg's scale filter picks it
 * (BT.709 when tagged BT.709, the table for another tagged space, BT.601 when
 * unspecified); the input range from the frame's colour range, or full range
 * for the yuvj formats when the range is unspecified. 10-bit sources go
 * through swscale's high-bit-depth path to 8-bit RGB.
 *
 * NATIVE packs the planes with av_image_copy_to_buffer(align = 1): the bytes
 * ffmpeg's rawvideo encoder produces and framemd5 hashes (16-bit samples stay
 * little-endian for the *le formats).
 *
 * NV12: Y plane then interleaved UV rows of 2 * ceil(W / 2) bytes. For 8-bit
 * 4:2:0 at the native size the samples are copied unchanged (no range or
 * matrix conversion); anything else goes through swscale.
 */
#include <string.h>

#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include "video/video_impl.h"

size_t dk__conv_bytes(dk_video_output out, int pix_fmt, int w, int h)
{
    if (w <= 0 || h <= 0) return 0;
    switch (out) {
    case DK_VIDEO_RGB24: return (size_t)w * (size_t)h * 3;
    case DK_VIDEO_NV12:
        return (size_t)w * (size_t)h + 2 * (size_t)((w + 1) / 2) * (size_t)((h + 1) / 2);
    case DK_VIDEO_NATIVE: {
        int n = av_image_get_buffer_size((enum AVPixelFormat)pix_fmt, w, h, 1);
        return n > 0 ? (size_t)n : 0;
    }
    }
    return 0;
}

static enum AVPixelFormat unjpeg(enum AVPixelFormat f, int *is_j)
{
    *is_j = 1;
    switch (f) {
    case AV_PIX_FMT_YUVJ420P: return AV_PIX_FMT_YUV420P;
    case AV_PIX_FMT_YUVJ422P: return AV_PIX_FMT_YUV422P;
    case AV_PIX_FMT_YUVJ444P: return AV_PIX_FMT_YUV444P;
    case AV_PIX_FMT_YUVJ440P: return AV_PIX_FMT_YUV440P;
    case AV_PIX_FMT_YUVJ411P: return AV_PIX_FMT_YUV411P;
    default: *is_j = 0; return f;
    }
}

int dk__conv_is_bt709(int color_space)
{
    return color_space == AVCOL_SPC_BT709;
}

int dk__conv_is_full_range(int color_range, int pix_fmt)
{
    if (color_range == AVCOL_RANGE_JPEG) return 1;
    if (color_range == AVCOL_RANGE_MPEG) return 0;
    int j;
    unjpeg((enum AVPixelFormat)pix_fmt, &j);
    return j;
}

void dk__conv_free(dk__conv *c)
{
    if (!c) return;
    sws_freeContext(c->sws);
    memset(c, 0, sizeof *c);
}

/* (Re)creates the scaler when the geometry changes and sets the colour
 * details when they change. */
static int conv_setup(dk__conv *c, const AVFrame *f, int dst_w, int dst_h, int dst_fmt)
{
    int is_j;
    enum AVPixelFormat sfmt = unjpeg((enum AVPixelFormat)f->format, &is_j);
    int flags = (dst_w == f->width && dst_h == f->height) ? SWS_BICUBIC : SWS_BILINEAR;
    int fresh = 0;
    if (!c->sws || c->src_w != f->width || c->src_h != f->height || c->src_fmt != (int)sfmt ||
        c->dst_w != dst_w || c->dst_h != dst_h || c->dst_fmt != dst_fmt || c->flags != flags) {
        sws_freeContext(c->sws);
        c->sws = sws_getContext(f->width, f->height, sfmt, dst_w, dst_h,
                                (enum AVPixelFormat)dst_fmt, flags, NULL, NULL, NULL);
        if (!c->sws) {
            memset(c, 0, sizeof *c);
            return DK_EUNSUPPORTED;
        }
        c->src_w = f->width;
        c->src_h = f->height;
        c->src_fmt = (int)sfmt;
        c->dst_w = dst_w;
        c->dst_h = dst_h;
        c->dst_fmt = dst_fmt;
        c->flags = flags;
        fresh = 1;
    }
    int cs = f->colorspace;
    int full = f->color_range == AVCOL_RANGE_JPEG ||
               (f->color_range == AVCOL_RANGE_UNSPECIFIED && is_j);
    if (fresh || c->cs != cs || c->range != full) {
        int *inv, *tab, src_range, dst_range, bri, con, sat;
        if (sws_getColorspaceDetails(c->sws, &inv, &src_range, &tab, &dst_range, &bri, &con,
                                     &sat) >= 0) {
            int idx = (cs >= 1 && cs <= 10 && cs != 8) ? cs : SWS_CS_ITU601;
            const int *coef = sws_getCoefficients(idx);
            sws_setColorspaceDetails(c->sws, coef, full, coef, dst_range, bri, con, sat);
        }
        c->cs = cs;
        c->range = full;
    }
    return DK_OK;
}

static void nv12_from_420p(const AVFrame *f, uint8_t *dst, int w, int h)
{
    for (int y = 0; y < h; y++)
        memcpy(dst + (size_t)y * (size_t)w, f->data[0] + (ptrdiff_t)y * f->linesize[0], (size_t)w);
    uint8_t *uv = dst + (size_t)w * (size_t)h;
    int cw = (w + 1) / 2, ch = (h + 1) / 2;
    for (int y = 0; y < ch; y++) {
        const uint8_t *u = f->data[1] + (ptrdiff_t)y * f->linesize[1];
        const uint8_t *v = f->data[2] + (ptrdiff_t)y * f->linesize[2];
        uint8_t *o = uv + (size_t)y * 2 * (size_t)cw;
        for (int x = 0; x < cw; x++) {
            o[2 * x] = u[x];
            o[2 * x + 1] = v[x];
        }
    }
}

int dk__conv_frame(dk__conv *c, const AVFrame *f, dk_video_output out, int pix_fmt, int w,
                   int h, int out_w, int out_h, uint8_t *dst, size_t dst_size, const char **why)
{
    *why = NULL;
    if (f->width <= 0 || f->height <= 0 || !f->data[0]) {
        *why = "the decoder returned an empty picture";
        return DK_EINVALIDDATA;
    }
    if (out == DK_VIDEO_NATIVE) {
        if (f->format != pix_fmt || f->width != w || f->height != h) {
            *why = "picture format or size differs from the stream's (mid-stream change)";
            return DK_EUNSUPPORTED;
        }
        int n = av_image_copy_to_buffer(dst, (int)dst_size, (const uint8_t *const *)f->data,
                                        f->linesize, (enum AVPixelFormat)pix_fmt, w, h, 1);
        if (n < 0 || (size_t)n != dst_size) {
            *why = "cannot pack the picture";
            return DK_EUNSUPPORTED;
        }
        return DK_OK;
    }
    if (out == DK_VIDEO_NV12 && f->width == out_w && f->height == out_h &&
        (f->format == AV_PIX_FMT_YUV420P || f->format == AV_PIX_FMT_YUVJ420P)) {
        nv12_from_420p(f, dst, out_w, out_h);
        return DK_OK;
    }
    int dfmt = out == DK_VIDEO_RGB24 ? AV_PIX_FMT_RGB24 : AV_PIX_FMT_NV12;
    if (conv_setup(c, f, out_w, out_h, dfmt) != DK_OK) {
        *why = "swscale cannot convert this picture format";
        return DK_EUNSUPPORTED;
    }
    uint8_t *planes[4] = {dst, NULL, NULL, NULL};
    int strides[4] = {out_w * 3, 0, 0, 0};
    if (out == DK_VIDEO_NV12) {
        strides[0] = out_w;
        planes[1] = dst + (size_t)out_w * (size_t)out_h;
        strides[1] = 2 * ((out_w + 1) / 2);
    }
    int rows = sws_scale(c->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height,
                         planes, strides);
    if (rows != out_h) {
        *why = "swscale failed";
        return DK_EUNSUPPORTED;
    }
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* MD5, RFC 1321                                                             */

/* T[i] = floor(2^32 * |sin(i + 1)|), the table of section 3.4. */
static const uint32_t md5_t[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
    0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
    0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
    0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
    0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
    0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
    0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
    0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
    0xeb86d391,
};

static const uint8_t md5_s[4][4] = {
    {7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};

static uint32_t rotl(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void md5_block(uint32_t h[4], const uint8_t *p)
{
    uint32_t x[16];
    for (int i = 0; i < 16; i++)
        x[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
               (uint32_t)p[4 * i + 3] << 24;
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    for (int i = 0; i < 64; i++) {
        int round = i >> 4;
        uint32_t f;
        int k;
        switch (round) {
        case 0: f = (b & c) | (~b & d); k = i; break;
        case 1: f = (b & d) | (c & ~d); k = (5 * i + 1) & 15; break;
        case 2: f = b ^ c ^ d; k = (3 * i + 5) & 15; break;
        default: f = c ^ (b | ~d); k = (7 * i) & 15; break;
        }
        uint32_t t = d;
        d = c;
        c = b;
        b = b + rotl(a + f + md5_t[i] + x[k], md5_s[round][i & 3]);
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
}

void dk__md5_init(dk__md5 *m)
{
    m->h[0] = 0x67452301;
    m->h[1] = 0xefcdab89;
    m->h[2] = 0x98badcfe;
    m->h[3] = 0x10325476;
    m->len = 0;
}

void dk__md5_update(dk__md5 *m, const void *data, size_t n)
{
    const uint8_t *p = data;
    size_t have = (size_t)(m->len & 63);
    m->len += n;
    if (have) {
        size_t take = 64 - have < n ? 64 - have : n;
        memcpy(m->buf + have, p, take);
        p += take;
        n -= take;
        if (have + take < 64) return;
        md5_block(m->h, m->buf);
    }
    for (; n >= 64; p += 64, n -= 64) md5_block(m->h, p);
    memcpy(m->buf, p, n);
}

void dk__md5_final(dk__md5 *m, uint8_t digest[16])
{
    uint64_t bits = m->len * 8;
    static const uint8_t pad[64] = {0x80};
    size_t have = (size_t)(m->len & 63);
    size_t padn = have < 56 ? 56 - have : 120 - have;
    dk__md5_update(m, pad, padn);
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(bits >> (8 * i));
    dk__md5_update(m, lenb, 8);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) digest[4 * i + j] = (uint8_t)(m->h[i] >> (8 * j));
}

void dk__md5_hex(const void *data, size_t n, char hex[33])
{
    dk__md5 m;
    uint8_t d[16];
    dk__md5_init(&m);
    dk__md5_update(&m, data, n);
    dk__md5_final(&m, d);
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[32] = '\0';
}
