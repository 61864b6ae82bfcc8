/*
 * Image I/O: JPEG through TurboJPEG, PNG through libpng's simplified API,
 * whole-file reads and atomic writes.
 *
 * Design. Decoding is split into "plan" (validate options, read the header,
 * pick the DCT scaling factor, check the output size) and "run" (decode into
 * memory that is already the right size), so dk_jpeg_decode, the zero-copy
 * dk_jpeg_decode_into and dk_image_load share one path and the output buffer
 * is allocated exactly once, not zero-filled (a successful decode writes
 * every byte). Every message is built through one helper that knows the public
 * function's name and, for file-level calls, the path, so an error deep in
 * the decoder still reads "dk_image_load(): cam.jpg: corrupt JPEG data: ...".
 * Third-party libraries keep their own allocators; everything drivekit hands
 * out (tensors, encoded bytes, file contents) comes from dk_malloc so the
 * live-allocation counters see it. TurboJPEG warnings (truncated scans,
 * extraneous bytes) are errors unless the caller opts in, because a silently
 * grey half-image in a training set is worse than a failed sample.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <png.h>
#include <turbojpeg.h>

#include "drivekit/core.h"
#include "internal.h"

/* Output images larger than this are refused before anything is allocated:
 * beyond it pixel counts stop fitting comfortably in int arithmetic inside
 * the codecs, and such sizes only come from corrupt or hostile headers. */
#define IMG_MAX_PIXELS ((int64_t)1 << 31)
/* libpng refuses wider images by default; we say so before it does. */
#define IMG_MAX_SIDE 1000000

/* Upper bound of deflate's compression ratio (a 258-byte match coded in two
 * bits). A PNG whose smallest possible raw image needs more bytes than this
 * times its size is truncated or a bomb, and is refused without allocating. */
#define DEFLATE_MAX_RATIO 1032

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */

/* Which public function is failing and, for file-level calls, which file:
 * every message names both. */
typedef struct img_ctx {
    const char *func;
    const char *name;   /* path, or NULL for in-memory calls */
} img_ctx;

static int img_fail(const img_ctx *c, int status, const char *fmt, ...) DK_PRINTF(3, 4);

static int img_fail(const img_ctx *c, int status, const char *fmt, ...)
{
    char what[DK_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (c->name) return dk__error(status, c->func, "%s: %s", c->name, what);
    return dk__error(status, c->func, "%s", what);
}

/* Codec libraries report running out of memory only in words. */
static int looks_like_oom(const char *msg)
{
    return msg && (strstr(msg, "nsufficient memory") || strstr(msg, "emory allocation failure") ||
                   strstr(msg, "ut of memory"));
}

/* ------------------------------------------------------------------------ */
/* Pixel formats and tensors                                                 */

int dk_pixfmt_channels(dk_pixfmt f)
{
    switch (f) {
    case DK_PIX_RGB:
    case DK_PIX_BGR: return 3;
    case DK_PIX_RGBA: return 4;
    case DK_PIX_GRAY: return 1;
    default: return 0;
    }
}

/* An (h, w, ch) uint8 tensor owning its buffer, zero-filled only on request:
 * decoders that succeed write every byte, so zeroing would be a wasted pass
 * over the image. */
static int image_alloc(const img_ctx *c, int h, int w, int ch, int zero, dk_tensor *out)
{
    size_t n;
    if (dk__mul_overflow((size_t)h, (size_t)w, &n) || dk__mul_overflow(n, (size_t)ch, &n))
        return img_fail(c, DK_EOVERFLOW, "%dx%dx%d image size overflows", w, h, ch);
    dk_buffer *b = NULL;
    if (dk_buffer_alloc(n, zero, &b) != DK_OK)
        return img_fail(c, DK_ENOMEM, "out of memory for a %dx%dx%d image", w, h, ch);
    int64_t shape[3] = { h, w, ch };
    int st = dk_tensor_view(out, dk_buffer_data(b), DK_U8, 3, shape);
    if (st != DK_OK) {
        dk_buffer_unref(b);
        memset(out, 0, sizeof *out);
        return img_fail(c, DK_EINTERNAL, "cannot describe a %dx%dx%d image", w, h, ch);
    }
    out->owner = b;
    return DK_OK;
}

/* The layout of an image about to be encoded. Element strides of extent-1
 * dimensions are meaningless (numpy and torch set them freely), so only the
 * ones that matter are checked. A negative row stride (a flipped view) is
 * fine: both encoders can read bottom-up. */
typedef struct img_src {
    const uint8_t *data;
    int h, w, ch;
    int64_t row_stride;   /* bytes, may be negative */
} img_src;

static int image_source(const img_ctx *c, const dk_tensor *img, img_src *s)
{
    if (!img) return img_fail(c, DK_EINVAL, "NULL image");
    if (img->dtype != DK_U8)
        return img_fail(c, DK_EINVAL, "image dtype is %s, expected uint8",
                        dk_dtype_name(img->dtype));
    if (img->ndim != 3 && img->ndim != 2)
        return img_fail(c, DK_EINVAL, "image has %d dimensions, expected (H, W, C)",
                        (int)img->ndim);
    int64_t h = img->shape[0], w = img->shape[1], ch = img->ndim == 3 ? img->shape[2] : 1;
    if (h < 1 || w < 1 || h > IMG_MAX_SIDE || w > IMG_MAX_SIDE)
        return img_fail(c, DK_EINVAL, "image size %" PRId64 "x%" PRId64 " is out of range",
                        w, h);
    if (ch < 1 || ch > 4)
        return img_fail(c, DK_EINVAL, "image has %" PRId64 " channels, expected 1, 3 or 4", ch);
    if (!img->data) return img_fail(c, DK_EINVAL, "image data is NULL");
    if (img->ndim == 3 && ch > 1 && img->strides[2] != 1)
        return img_fail(c, DK_EINVAL, "channel stride is %" PRId64 ", expected 1",
                        img->strides[2]);
    if (w > 1 && img->strides[1] != ch)
        return img_fail(c, DK_EINVAL,
                        "pixel stride is %" PRId64 ", expected %" PRId64 " (interleaved pixels)",
                        img->strides[1], ch);
    int64_t rs = h > 1 ? img->strides[0] : w * ch;
    int64_t ars = rs < 0 ? -rs : rs;
    if (ars < w * ch || ars > INT_MAX)
        return img_fail(c, DK_EINVAL, "row stride %" PRId64 " does not fit rows of %" PRId64
                        " bytes", rs, w * ch);
    s->data = img->data;
    s->h = (int)h;
    s->w = (int)w;
    s->ch = (int)ch;
    s->row_stride = rs;
    return DK_OK;
}

/* ------------------------------------------------------------------------ */
/* JPEG                                                                      */

struct dk_jpeg {
    tjhandle dec, enc;                /* created on first use */
    char errmsg[DK_ERRMSG_MAX];
};

void dk_jpeg_decode_opts_init(dk_jpeg_decode_opts *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->format = DK_PIX_RGB;
    o->scale_num = 1;
    o->scale_den = 1;
}

/* The TurboJPEG factor equal to num/den, or NULL. Compared by cross
 * multiplication so 2/4 and 1/2 are the same factor. */
static const tjscalingfactor *find_factor(int num, int den)
{
    if (num <= 0 || den <= 0) return NULL;
    int n = 0;
    const tjscalingfactor *sf = tjGetScalingFactors(&n);
    for (int i = 0; sf && i < n; i++)
        if ((int64_t)num * sf[i].denom == (int64_t)den * sf[i].num) return &sf[i];
    return NULL;
}

/* ceil(size * num / den) in 64 bits; the caller checks the range. */
static int64_t scaled_dim(int size, int num, int den)
{
    return ((int64_t)size * num + den - 1) / den;
}

int dk_jpeg_scaled_size(int width, int height, int num, int den, int *out_w, int *out_h)
{
    if (width < 0 || height < 0)
        return dk__error(DK_EINVAL, __func__, "negative size %dx%d", width, height);
    if (!find_factor(num, den))
        return dk__error(DK_EINVAL, __func__,
                         "unsupported scaling factor %d/%d (use n/8, n = 1..16)", num, den);
    int64_t w = scaled_dim(width, num, den), h = scaled_dim(height, num, den);
    if (w > INT_MAX || h > INT_MAX)
        return dk__error(DK_EOVERFLOW, __func__, "%dx%d scaled by %d/%d overflows", width, height,
                         num, den);
    if (out_w) *out_w = (int)w;
    if (out_h) *out_h = (int)h;
    return DK_OK;
}

int dk_jpeg_create(dk_jpeg **out)
{
    if (!out) return dk__error(DK_EINVAL, __func__, "NULL out");
    *out = NULL;
    dk_jpeg *j = dk_malloc(sizeof *j);
    if (!j) return dk__error(DK_ENOMEM, __func__, "out of memory");
    memset(j, 0, sizeof *j);
    *out = j;
    return DK_OK;
}

void dk_jpeg_destroy(dk_jpeg *j)
{
    if (!j) return;
    if (j->dec) tjDestroy(j->dec);
    if (j->enc) tjDestroy(j->enc);
    dk_free(j);
}

const char *dk_jpeg_errmsg(const dk_jpeg *j)
{
    return j ? j->errmsg : dk_errmsg();
}

static int jpeg_decoder(dk_jpeg *j, const img_ctx *c)
{
    if (!j->dec && !(j->dec = tjInitDecompress()))
        return img_fail(c, DK_ENOMEM, "cannot create a JPEG decoder: %s", tjGetErrorStr2(NULL));
    return DK_OK;
}

static int jpeg_encoder(dk_jpeg *j, const img_ctx *c)
{
    if (!j->enc && !(j->enc = tjInitCompress()))
        return img_fail(c, DK_ENOMEM, "cannot create a JPEG encoder: %s", tjGetErrorStr2(NULL));
    return DK_OK;
}

/* A TurboJPEG failure as a status: allocation failures stay DK_ENOMEM,
 * everything else is the data's fault. `msg` must be read once per failure:
 * tjGetErrorStr2 forgets an instance error after reporting it. */
static int jpeg_fail(const img_ctx *c, const char *msg)
{
    if (!msg || !*msg) msg = "unknown error";
    if (looks_like_oom(msg)) return img_fail(c, DK_ENOMEM, "out of memory decoding JPEG: %s", msg);
    return img_fail(c, DK_EINVALIDDATA, "corrupt JPEG data: %s", msg);
}

/* TurboJPEG 2.x reports TJERR_WARNING for a fatal error that follows a
 * warning (its warning flag is sticky), and the output is then incomplete or
 * untouched. libjpeg keeps the text of the first warning but overwrites it
 * with a fatal error's, so the message tells the two apart. These are the
 * texts of libjpeg's JWRN_* messages; anything else counts as fatal, which
 * errs on the side of refusing. */
static int is_jpeg_warning(const char *msg)
{
    static const char *const warnings[] = {
        "Corrupt JPEG data",
        "Premature end of JPEG file",
        "Inconsistent progression sequence",
        "Invalid SOS parameters for sequential JPEG",
        "Unknown Adobe color transform code",
        "Warning: unknown JFIF revision",
        "Application transferred too many scanlines",
    };
    if (!msg) return 0;
    for (size_t i = 0; i < sizeof warnings / sizeof warnings[0]; i++)
        if (strncmp(msg, warnings[i], strlen(warnings[i])) == 0) return 1;
    return 0;
}

static int map_subsamp(int s)
{
    switch (s) {
    case TJSAMP_444: return 444;
    case TJSAMP_422: return 422;
    case TJSAMP_420: return 420;
    case TJSAMP_GRAY: return 400;
    case TJSAMP_440: return 440;
    case TJSAMP_411: return 411;
    default: return -1;
    }
}

static int map_colorspace(int cs)
{
    switch (cs) {
    case TJCS_YCbCr: return 0;
    case TJCS_GRAY: return 1;
    case TJCS_RGB: return 2;
    case TJCS_CMYK: return 3;
    case TJCS_YCCK: return 4;
    default: return -1;
    }
}

static int jpeg_header(dk_jpeg *j, const img_ctx *c, const void *data, size_t size,
                       dk_jpeg_info *info)
{
    if (!data && size) return img_fail(c, DK_EINVAL, "NULL data");
    if (size == 0) return img_fail(c, DK_EINVALIDDATA, "corrupt JPEG data: empty input");
    if (size > ULONG_MAX) return img_fail(c, DK_EOVERFLOW, "JPEG of %zu bytes is too large", size);
    int st = jpeg_decoder(j, c);
    if (st != DK_OK) return st;
    int w = 0, h = 0, ss = -2, cs = -2;
    if (tjDecompressHeader3(j->dec, data, (unsigned long)size, &w, &h, &ss, &cs) != 0) {
        /* Two refusals that still leave a usable header (TurboJPEG has filled
           in every field by then; a fatal error returns before that):
           - sampling factors that match none of the TJSAMP_* names (4:1:0,
             3x1, ...), which TurboJPEG 2.x decodes fine: subsampling -1;
           - a warning while reading the markers (unknown JFIF version, bad
             ICC data). The decode itself decides whether warnings count. */
        const char *msg = tjGetErrorStr2(j->dec);
        int filled = w >= 1 && h >= 1 && ss >= -1 && cs >= 0;
        int warned = tjGetErrorCode(j->dec) == TJERR_WARNING && is_jpeg_warning(msg);
        if (!filled || !(ss == -1 || warned)) return jpeg_fail(c, msg);
    }
    if (w < 1 || h < 1)
        return img_fail(c, DK_EINVALIDDATA, "corrupt JPEG data: image size %dx%d", w, h);
    info->width = w;
    info->height = h;
    info->subsampling = map_subsamp(ss);
    info->colorspace = map_colorspace(cs);
    return DK_OK;
}

int dk_jpeg_info_get(dk_jpeg *j, const void *data, size_t size, dk_jpeg_info *info)
{
    img_ctx c = { __func__, NULL };
    if (!j || !info) return dk__error(DK_EINVAL, __func__, "NULL %s", !j ? "codec" : "info");
    dk_jpeg_info tmp = { 0, 0, -1, -1 };
    int st = jpeg_header(j, &c, data, size, &tmp);
    if (st == DK_OK) *info = tmp;
    return dk__keep(st, j->errmsg);
}

/* Everything needed to run a decode, settled before any output exists. */
typedef struct jpeg_plan {
    int out_w, out_h, ch;
    int tjpf;
    int flags;
} jpeg_plan;

static int jpeg_plan_make(dk_jpeg *j, const img_ctx *c, const void *data, size_t size,
                          const dk_jpeg_decode_opts *opts, jpeg_plan *p)
{
    dk_jpeg_decode_opts def;
    if (!opts) {
        dk_jpeg_decode_opts_init(&def);
        opts = &def;
    }
    switch (opts->format) {
    case DK_PIX_RGB: p->tjpf = TJPF_RGB; break;
    case DK_PIX_BGR: p->tjpf = TJPF_BGR; break;
    case DK_PIX_RGBA: p->tjpf = TJPF_RGBA; break;
    case DK_PIX_GRAY: p->tjpf = TJPF_GRAY; break;
    default: return img_fail(c, DK_EINVAL, "unknown pixel format %d", (int)opts->format);
    }
    p->ch = dk_pixfmt_channels(opts->format);
    if (opts->min_width < 0 || opts->min_height < 0)
        return img_fail(c, DK_EINVAL, "negative minimum size %dx%d", opts->min_width,
                        opts->min_height);
    int by_min = opts->min_width > 0 || opts->min_height > 0;
    if (!by_min && !find_factor(opts->scale_num, opts->scale_den))
        return img_fail(c, DK_EINVAL, "unsupported scaling factor %d/%d (use n/8, n = 1..16)",
                        opts->scale_num, opts->scale_den);

    dk_jpeg_info info = { 0, 0, -1, -1 };
    int st = jpeg_header(j, c, data, size, &info);
    if (st != DK_OK) return st;
    if (info.colorspace == 3 || info.colorspace == 4)
        return img_fail(c, DK_EUNSUPPORTED, "CMYK/YCCK JPEG (%dx%d) is not supported",
                        info.width, info.height);

    int64_t ow = info.width, oh = info.height;
    if (by_min) {
        /* TurboJPEG lists factors largest first; walk up from the smallest
           and stop at the first that is big enough, never past 1/1. */
        int n = 0;
        const tjscalingfactor *sf = tjGetScalingFactors(&n);
        for (int i = n - 1; sf && i >= 0; i--) {
            if (sf[i].num > sf[i].denom) break;
            int64_t w = scaled_dim(info.width, sf[i].num, sf[i].denom);
            int64_t h = scaled_dim(info.height, sf[i].num, sf[i].denom);
            if (w >= opts->min_width && h >= opts->min_height) {
                ow = w;
                oh = h;
                break;
            }
        }
    } else {
        ow = scaled_dim(info.width, opts->scale_num, opts->scale_den);
        oh = scaled_dim(info.height, opts->scale_num, opts->scale_den);
    }
    if (ow * oh > IMG_MAX_PIXELS)
        return img_fail(c, DK_EOVERFLOW, "JPEG output %" PRId64 "x%" PRId64 " is too large",
                        ow, oh);
    p->out_w = (int)ow;
    p->out_h = (int)oh;
    /* LIMITSCANS: a progressive file with thousands of tiny scans can keep
       the decoder busy for minutes on a few kilobytes. */
    p->flags = TJFLAG_LIMITSCANS | (opts->fast_dct ? TJFLAG_FASTDCT : TJFLAG_ACCURATEDCT);
    if (!opts->allow_warnings) p->flags |= TJFLAG_STOPONWARNING;
    return DK_OK;
}

static int jpeg_plan_run(dk_jpeg *j, const img_ctx *c, const void *data, size_t size,
                         const jpeg_plan *p, uint8_t *dst, size_t pitch)
{
    /* Passing the planned size makes TurboJPEG pick exactly the planned
       factor: it takes the largest factor whose output fits. */
    if (tjDecompress2(j->dec, data, (unsigned long)size, dst, p->out_w, (int)pitch, p->out_h,
                      p->tjpf, p->flags) == 0)
        return DK_OK;
    const char *msg = tjGetErrorStr2(j->dec);
    /* Without STOPONWARNING a warning leaves a complete image behind. */
    if (!(p->flags & TJFLAG_STOPONWARNING) && tjGetErrorCode(j->dec) == TJERR_WARNING &&
        is_jpeg_warning(msg))
        return DK_OK;
    return jpeg_fail(c, msg);
}

static int jpeg_decode_tensor(dk_jpeg *j, const img_ctx *c, const void *data, size_t size,
                              const dk_jpeg_decode_opts *opts, dk_tensor *out)
{
    jpeg_plan p;
    int st = jpeg_plan_make(j, c, data, size, opts, &p);
    if (st != DK_OK) return st;
    /* Damaged data that is let through may leave rows unwritten; they must
       not show old heap contents. */
    st = image_alloc(c, p.out_h, p.out_w, p.ch, !(p.flags & TJFLAG_STOPONWARNING), out);
    if (st != DK_OK) return st;
    st = jpeg_plan_run(j, c, data, size, &p, out->data, (size_t)p.out_w * (size_t)p.ch);
    if (st != DK_OK) dk_tensor_release(out);
    return st;
}

int dk_jpeg_decode(dk_jpeg *j, const void *data, size_t size, const dk_jpeg_decode_opts *opts,
                   dk_tensor *out)
{
    img_ctx c = { __func__, NULL };
    if (out) memset(out, 0, sizeof *out);
    if (!j || !out) return dk__error(DK_EINVAL, __func__, "NULL %s", !j ? "codec" : "out");
    return dk__keep(jpeg_decode_tensor(j, &c, data, size, opts, out), j->errmsg);
}

int dk_jpeg_decode_into(dk_jpeg *j, const void *data, size_t size, const dk_jpeg_decode_opts *opts,
                        void *dst, int dst_w, int dst_h, size_t dst_stride)
{
    img_ctx c = { __func__, NULL };
    if (!j) return dk__error(DK_EINVAL, __func__, "NULL codec");
    if (!dst) return dk__keep(img_fail(&c, DK_EINVAL, "NULL destination"), j->errmsg);
    jpeg_plan p;
    int st = jpeg_plan_make(j, &c, data, size, opts, &p);
    if (st != DK_OK) return dk__keep(st, j->errmsg);
    if (dst_w != p.out_w || dst_h != p.out_h)
        return dk__keep(img_fail(&c, DK_ERANGE, "destination is %dx%d, decoded size is %dx%d",
                                 dst_w, dst_h, p.out_w, p.out_h), j->errmsg);
    size_t row = (size_t)p.out_w * (size_t)p.ch;
    if (dst_stride == 0) dst_stride = row;
    if (dst_stride < row || dst_stride > INT_MAX)
        return dk__keep(img_fail(&c, DK_EINVAL, "destination stride %zu is below the row size %zu",
                                 dst_stride, row), j->errmsg);
    return dk__keep(jpeg_plan_run(j, &c, data, size, &p, dst, dst_stride), j->errmsg);
}

static int jpeg_encode_impl(dk_jpeg *j, const img_ctx *c, const dk_tensor *img, dk_pixfmt format,
                            int quality, int subsamp444, uint8_t **out, size_t *out_size)
{
    int tjpf;
    switch (format) {
    case DK_PIX_RGB: tjpf = TJPF_RGB; break;
    case DK_PIX_BGR: tjpf = TJPF_BGR; break;
    case DK_PIX_GRAY: tjpf = TJPF_GRAY; break;
    case DK_PIX_RGBA:
        return img_fail(c, DK_EINVAL, "JPEG has no alpha channel: encode RGB or save as PNG");
    default: return img_fail(c, DK_EINVAL, "unknown pixel format %d", (int)format);
    }
    if (quality < 1 || quality > 100)
        return img_fail(c, DK_EINVAL, "JPEG quality %d is outside 1..100", quality);
    img_src s = { 0 };
    int st = image_source(c, img, &s);
    if (st != DK_OK) return st;
    if (s.ch != dk_pixfmt_channels(format))
        return img_fail(c, DK_EINVAL, "image has %d channels, format needs %d", s.ch,
                        dk_pixfmt_channels(format));
    if (s.w > 65500 || s.h > 65500)
        return img_fail(c, DK_EINVAL, "JPEG cannot hold %dx%d (at most 65500 per side)", s.w, s.h);
    st = jpeg_encoder(j, c);
    if (st != DK_OK) return st;

    /* A flipped view is read bottom-up from its last row in memory. */
    const uint8_t *src = s.data;
    int flags = 0;
    int pitch = (int)s.row_stride;
    if (s.row_stride < 0) {
        src += (int64_t)(s.h - 1) * s.row_stride;
        pitch = (int)-s.row_stride;
        flags |= TJFLAG_BOTTOMUP;
    }
    int subsamp = format == DK_PIX_GRAY ? TJSAMP_GRAY : subsamp444 ? TJSAMP_444 : TJSAMP_420;
    unsigned char *jbuf = NULL;
    unsigned long jsize = 0;
    if (tjCompress2(j->enc, src, s.w, pitch, s.h, tjpf, &jbuf, &jsize, subsamp, quality, flags)) {
        const char *msg = tjGetErrorStr2(j->enc);
        tjFree(jbuf);
        if (looks_like_oom(msg))
            return img_fail(c, DK_ENOMEM, "out of memory encoding JPEG: %s", msg);
        return img_fail(c, DK_EINTERNAL, "JPEG encoding failed: %s", msg);
    }
    /* TurboJPEG's buffer is not ours to hand out: callers free with dk_free. */
    uint8_t *buf = dk_malloc(jsize);
    if (!buf) {
        tjFree(jbuf);
        return img_fail(c, DK_ENOMEM, "out of memory for %lu bytes of JPEG", jsize);
    }
    memcpy(buf, jbuf, jsize);
    tjFree(jbuf);
    *out = buf;
    *out_size = jsize;
    return DK_OK;
}

int dk_jpeg_encode(dk_jpeg *j, const dk_tensor *img, dk_pixfmt format, int quality, int subsamp444,
                   uint8_t **out, size_t *out_size)
{
    img_ctx c = { __func__, NULL };
    if (out) *out = NULL;
    if (out_size) *out_size = 0;
    if (!j || !out || !out_size)
        return dk__error(DK_EINVAL, __func__, "NULL %s", !j ? "codec" : "out");
    return dk__keep(jpeg_encode_impl(j, &c, img, format, quality, subsamp444, out,
                                     out_size), j->errmsg);
}

/* ------------------------------------------------------------------------ */
/* PNG                                                                       */

static int png_fail(const img_ctx *c, const png_image *im, const char *what)
{
    const char *msg = im->message[0] ? im->message : "unknown error";
    if (looks_like_oom(msg)) return img_fail(c, DK_ENOMEM, "out of memory %s PNG: %s", what, msg);
    return img_fail(c, DK_EINVALIDDATA, "corrupt PNG data: %s", msg);
}

/* `format` may be BGR here (dk_image_load honours it); the public decoder
 * keeps to the formats its contract offers. */
static int png_decode_impl(const img_ctx *c, const void *data, size_t size, dk_pixfmt format,
                           dk_tensor *out)
{
    png_uint_32 want;
    switch (format) {
    case DK_PIX_RGB: want = PNG_FORMAT_RGB; break;
    case DK_PIX_BGR: want = PNG_FORMAT_BGR; break;
    case DK_PIX_RGBA: want = PNG_FORMAT_RGBA; break;
    case DK_PIX_GRAY: want = PNG_FORMAT_GRAY; break;
    default: return img_fail(c, DK_EINVAL, "unknown pixel format %d", (int)format);
    }
    if (!data && size) return img_fail(c, DK_EINVAL, "NULL data");
    if (size == 0) return img_fail(c, DK_EINVALIDDATA, "corrupt PNG data: empty input");

    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&im, data, size)) {
        int st = png_fail(c, &im, "reading");
        png_image_free(&im);
        return st;
    }
    /* 16-bit samples without gamma information are taken as sRGB, so they
       are scaled to 8 bits instead of being gamma-encoded as if linear (depth
       maps and the like come back proportional). */
    im.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;

    int st = DK_OK;
    uint8_t *tmp = NULL;
    int ch = dk_pixfmt_channels(format);
    uint64_t w = im.width, h = im.height;
    /* The smallest raw image (1 bit per pixel, one filter byte per row) must
       fit in what the compressed bytes can expand to. */
    if (h * ((w + 7) / 8 + 1) > (uint64_t)size * DEFLATE_MAX_RATIO + 1024) {
        st = img_fail(c, DK_EINVALIDDATA,
                      "corrupt PNG data: %" PRIu64 "x%" PRIu64 " image cannot fit in %zu bytes",
                      w, h, size);
        goto done;
    }
    if (w < 1 || h < 1 || w > IMG_MAX_SIDE || h > IMG_MAX_SIDE ||
        w * h > (uint64_t)IMG_MAX_PIXELS) {
        st = img_fail(c, DK_EOVERFLOW, "PNG size %" PRIu64 "x%" PRIu64 " is too large", w, h);
        goto done;
    }
    st = image_alloc(c, (int)h, (int)w, ch, 0, out);
    if (st != DK_OK) goto done;

    /* The simplified API removes alpha by compositing onto the output
       buffer; drivekit drops it instead (as PIL and OpenCV do), so such
       images are read with alpha into scratch memory and then packed. */
    int strip = (im.format & PNG_FORMAT_FLAG_ALPHA) && !(want & PNG_FORMAT_FLAG_ALPHA);
    im.format = want | (strip ? PNG_FORMAT_FLAG_ALPHA : 0);
    if (strip) {
        size_t n = (size_t)(w * h) * (size_t)(ch + 1);
        tmp = dk_malloc(n);
        if (!tmp) {
            st = img_fail(c, DK_ENOMEM, "out of memory for a %" PRIu64 "x%" PRIu64 " PNG", w, h);
            goto done;
        }
        if (!png_image_finish_read(&im, NULL, tmp, (png_int_32)(w * (uint64_t)(ch + 1)), NULL)) {
            st = png_fail(c, &im, "reading");
            goto done;
        }
        const uint8_t *s = tmp;
        uint8_t *d = out->data;
        size_t npix = (size_t)(w * h);
        for (size_t i = 0; i < npix; i++, s += ch + 1, d += ch)
            memcpy(d, s, (size_t)ch);
    } else if (!png_image_finish_read(&im, NULL, out->data, (png_int_32)(w * (uint64_t)ch), NULL)) {
        st = png_fail(c, &im, "reading");
    }

done:
    png_image_free(&im);
    dk_free(tmp);
    if (st != DK_OK) dk_tensor_release(out);
    return st;
}

int dk_png_decode(const void *data, size_t size, dk_pixfmt format, dk_tensor *out)
{
    img_ctx c = { __func__, NULL };
    if (!out) return dk__error(DK_EINVAL, __func__, "NULL out");
    memset(out, 0, sizeof *out);
    if (format == DK_PIX_BGR)
        return dk__error(DK_EINVAL, __func__, "BGR is not offered for PNG (use RGB)");
    return png_decode_impl(&c, data, size, format, out);
}

static void png_write_setup(png_image *im, const img_src *s)
{
    memset(im, 0, sizeof *im);
    im->version = PNG_IMAGE_VERSION;
    im->width = (png_uint_32)s->w;
    im->height = (png_uint_32)s->h;
    im->format = s->ch == 1 ? PNG_FORMAT_GRAY : s->ch == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_RGBA;
#ifdef PNG_IMAGE_FLAG_FAST
    /* drivekit's PNGs are mostly intermediate files read back by machines:
       faster writes and reads beat smaller files. */
    im->flags |= PNG_IMAGE_FLAG_FAST;
#endif
}

static int png_encode_impl(const img_ctx *c, const dk_tensor *img, uint8_t **out, size_t *out_size)
{
    img_src s = { 0 };
    int st = image_source(c, img, &s);
    if (st != DK_OK) return st;
    if (s.ch == 2) return img_fail(c, DK_EINVAL, "PNG needs 1, 3 or 4 channels, image has 2");
    /* libpng's PNG_IMAGE_PNG_SIZE_MAX multiplies in 32 bits and wraps for
       images over 4 GiB, so the same bound (zlib's deflateBound on the
       filtered rows, plus chunk framing and the few chunks libpng adds) is
       computed here in size_t, with a little slack. */
    size_t raw, cap;
    if (dk__mul_overflow((size_t)s.h, (size_t)s.w * (size_t)s.ch + 1, &raw) || raw > SIZE_MAX / 4)
        return img_fail(c, DK_EOVERFLOW, "%dx%dx%d PNG is too large", s.w, s.h, s.ch);
    size_t zmax = raw + (raw + 7) / 8 + (raw + 63) / 64 + 11;
    cap = zmax + 12 * (zmax / 8192 + 1) + 1024;
    /* libpng takes a negative stride as "rows stored bottom-up from here". */
    const uint8_t *src = s.data;
    if (s.row_stride < 0) src += (int64_t)(s.h - 1) * s.row_stride;

    /* One pass into a worst-case buffer, shrunk afterwards: asking for the
       size first would compress twice. Should libpng still report a larger
       need, it is retried once at that size. */
    png_image im;
    for (int attempt = 0; attempt < 2; attempt++) {
        png_write_setup(&im, &s);
        uint8_t *buf = dk_malloc(cap);
        if (!buf) return img_fail(c, DK_ENOMEM, "out of memory for a %zu-byte PNG", cap);
        png_alloc_size_t n = cap;
        int ok = png_image_write_to_memory(&im, buf, &n, 0, src, (png_int_32)s.row_stride, NULL);
        png_image_free(&im);
        if (ok) {
            uint8_t *shrunk = dk_realloc(buf, n ? n : 1);
            *out = shrunk ? shrunk : buf;
            *out_size = n;
            return DK_OK;
        }
        dk_free(buf);
        if (n <= cap) {
            const char *msg = im.message[0] ? im.message : "unknown error";
            if (looks_like_oom(msg))
                return img_fail(c, DK_ENOMEM, "out of memory writing PNG: %s", msg);
            return img_fail(c, DK_EINTERNAL, "PNG encoding failed: %s", msg);
        }
        cap = n;
    }
    return img_fail(c, DK_EINTERNAL, "PNG encoder kept asking for more memory");
}

int dk_png_encode(const dk_tensor *img, uint8_t **out, size_t *out_size)
{
    img_ctx c = { __func__, NULL };
    if (out) *out = NULL;
    if (out_size) *out_size = 0;
    if (!out || !out_size) return dk__error(DK_EINVAL, __func__, "NULL out");
    return png_encode_impl(&c, img, out, out_size);
}

/* ------------------------------------------------------------------------ */
/* Files                                                                     */

static int file_read_impl(const img_ctx *c, const char *path, uint8_t **out, size_t *out_size)
{
    /* O_NONBLOCK: opening a FIFO must not hang waiting for a writer; it is
       refused below like any other non-regular file, and the flag has no
       effect on regular files. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        return img_fail(c, (e == ENOENT || e == ENOTDIR) ? DK_ENOENT : DK_EIO, "%s", strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return img_fail(c, DK_EIO, "%s", strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return img_fail(c, DK_EIO, "%s",
                        S_ISDIR(sb.st_mode) ? "is a directory" : "not a regular file");
    }
    if (sb.st_size < 0 || (uintmax_t)sb.st_size >= SIZE_MAX) {
        close(fd);
        return img_fail(c, DK_EOVERFLOW, "file of %jd bytes does not fit in memory",
                        (intmax_t)sb.st_size);
    }
    /* One spare byte: a read that fills it means the file grew since fstat
       (or reports no size, like /proc files), and the buffer keeps growing. */
    size_t cap = (size_t)sb.st_size + 1, len = 0;
    uint8_t *buf = dk_malloc(cap);
    if (!buf) {
        close(fd);
        return img_fail(c, DK_ENOMEM, "out of memory for %zu bytes", cap);
    }
    for (;;) {
        if (len == cap) {
            size_t ncap;
            if (dk__add_overflow(cap, cap / 2 + 4096, &ncap)) {
                dk_free(buf);
                close(fd);
                return img_fail(c, DK_EOVERFLOW, "file grows beyond memory");
            }
            uint8_t *nbuf = dk_realloc(buf, ncap);
            if (!nbuf) {
                dk_free(buf);
                close(fd);
                return img_fail(c, DK_ENOMEM, "out of memory for %zu bytes", ncap);
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t want = cap - len;
        if (want > ((size_t)1 << 30)) want = (size_t)1 << 30;
        ssize_t n = read(fd, buf + len, want);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            dk_free(buf);
            close(fd);
            return img_fail(c, DK_EIO, "read failed after %zu bytes: %s", len, strerror(e));
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    close(fd);
    *out = buf;
    *out_size = len;
    return DK_OK;
}

int dk_file_read(const char *path, uint8_t **out, size_t *out_size)
{
    img_ctx c = { __func__, path };
    if (out) *out = NULL;
    if (out_size) *out_size = 0;
    if (!path || !out || !out_size)
        return dk__error(DK_EINVAL, __func__, "NULL %s", !path ? "path" : "out");
    return file_read_impl(&c, path, out, out_size);
}

static int file_write_impl(const img_ctx *c, const char *path, const void *data, size_t size)
{
    /* The temporary lives next to the target so rename() stays within one
       file system and is atomic. A pid + counter name opened with O_EXCL
       (rather than mkstemp) keeps the usual 0666 & ~umask permissions. */
    static atomic_ulong counter;
    size_t cap = strlen(path) + 48;
    char *tmp = dk_malloc(cap);
    if (!tmp) return img_fail(c, DK_ENOMEM, "out of memory");
    int fd = -1, e = 0;
    for (int attempt = 0; attempt < 64; attempt++) {
        snprintf(tmp, cap, "%s.tmp%ld.%lu", path, (long)getpid(),
                 (unsigned long)atomic_fetch_add(&counter, 1));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        e = errno;
        if (fd >= 0 || e != EEXIST) break;
    }
    if (fd < 0) {
        dk_free(tmp);
        return img_fail(c, DK_EIO, "cannot create a temporary file: %s", strerror(e));
    }
    const uint8_t *p = data;
    size_t left = size;
    while (left > 0) {
        size_t chunk = left > ((size_t)1 << 30) ? (size_t)1 << 30 : left;
        ssize_t n = write(fd, p, chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            e = n < 0 ? errno : EIO;
            close(fd);
            unlink(tmp);
            dk_free(tmp);
            return img_fail(c, DK_EIO, "write failed after %zu of %zu bytes: %s", size - left,
                            size, strerror(e));
        }
        p += n;
        left -= (size_t)n;
    }
    /* No fsync: the rename makes the update atomic for readers and against a
       crash of this process, which is what dataset writers need; durability
       against power loss would cost a disk flush per image. Network file
       systems report write errors at close, so it is checked. */
    if (close(fd) != 0 && errno != EINTR) {
        e = errno;
        unlink(tmp);
        dk_free(tmp);
        return img_fail(c, DK_EIO, "write failed: %s", strerror(e));
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        dk_free(tmp);
        return img_fail(c, DK_EIO, "cannot replace the file: %s", strerror(e));
    }
    dk_free(tmp);
    return DK_OK;
}

int dk_file_write(const char *path, const void *data, size_t size)
{
    img_ctx c = { __func__, path };
    if (!path) return dk__error(DK_EINVAL, __func__, "NULL path");
    if (!data && size) return img_fail(&c, DK_EINVAL, "NULL data");
    return file_write_impl(&c, path, data, size);
}

/* ------------------------------------------------------------------------ */
/* Files of images                                                           */

static const uint8_t png_sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };

static int is_jpeg(const uint8_t *d, size_t n)
{
    return n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF;
}

static int is_png(const uint8_t *d, size_t n)
{
    return n >= sizeof png_sig && memcmp(d, png_sig, sizeof png_sig) == 0;
}

int dk_image_load(const char *path, const dk_jpeg_decode_opts *jpeg_opts, dk_tensor *out)
{
    img_ctx c = { __func__, path };
    if (out) memset(out, 0, sizeof *out);
    if (!path || !out) return dk__error(DK_EINVAL, __func__, "NULL %s", !path ? "path" : "out");
    uint8_t *data = NULL;
    size_t size = 0;
    int st = file_read_impl(&c, path, &data, &size);
    if (st != DK_OK) return st;
    if (is_jpeg(data, size)) {
        dk_jpeg *j = NULL;
        if (dk_jpeg_create(&j) != DK_OK) {
            st = img_fail(&c, DK_ENOMEM, "out of memory");
        } else {
            st = jpeg_decode_tensor(j, &c, data, size, jpeg_opts, out);
            dk_jpeg_destroy(j);
        }
    } else if (is_png(data, size)) {
        st = png_decode_impl(&c, data, size, jpeg_opts ? jpeg_opts->format : DK_PIX_RGB, out);
    } else {
        st = img_fail(&c, DK_EUNSUPPORTED, "neither JPEG nor PNG (%zu bytes%s)", size,
                      size ? "" : ", empty file");
    }
    dk_free(data);
    return st;
}

/* Case-insensitive "does the path end in ext". */
static int has_ext(const char *path, const char *ext)
{
    size_t n = strlen(path), m = strlen(ext);
    if (n < m) return 0;
    const char *p = path + n - m;
    for (size_t i = 0; i < m; i++) {
        char a = p[i], b = ext[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
        if (a != b) return 0;
    }
    return 1;
}

int dk_image_save(const char *path, const dk_tensor *img, int quality)
{
    img_ctx c = { __func__, path };
    if (!path) return dk__error(DK_EINVAL, __func__, "NULL path");
    uint8_t *enc = NULL;
    size_t size = 0;
    int st;
    if (has_ext(path, ".png")) {
        st = png_encode_impl(&c, img, &enc, &size);
    } else if (has_ext(path, ".jpg") || has_ext(path, ".jpeg")) {
        img_src s = { 0 };
        st = image_source(&c, img, &s);
        if (st != DK_OK) return st;
        if (s.ch != 1 && s.ch != 3)
            return img_fail(&c, DK_EINVAL,
                            "JPEG takes 1 or 3 channels, image has %d (save RGBA as .png)", s.ch);
        dk_jpeg *j = NULL;
        if (dk_jpeg_create(&j) != DK_OK) return img_fail(&c, DK_ENOMEM, "out of memory");
        st = jpeg_encode_impl(j, &c, img, s.ch == 1 ? DK_PIX_GRAY : DK_PIX_RGB, quality, 0, &enc,
                              &size);
        dk_jpeg_destroy(j);
    } else {
        return img_fail(&c, DK_EUNSUPPORTED, "unknown image extension (use .png, .jpg or .jpeg)");
    }
    if (st != DK_OK) return st;
    st = file_write_impl(&c, path, enc, size);
    dk_free(enc);
    return st;
}
