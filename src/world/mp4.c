/*
 * H.264 MP4 writer over libavformat / libavcodec / libswscale (FFmpeg 5.1 API).
 *
 * Colour: RGB is converted to limited-range ("TV") BT.601 Y'CbCr, the matrix
 * every decoder falls back to for untagged SD/HD streams, and the stream is
 * tagged with it (matrix SMPTE 170M, range MPEG) plus the sRGB primaries and
 * transfer the RGB input actually has, so tag-aware decoders convert back to
 * the same RGB.
 *
 * Threads: the encoder runs with thread_count 1. drivekit starts no hidden
 * threads; callers that need throughput encode several files at once on their
 * dk_pool (dk_world_write_conditions does, one camera per task).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/error.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>

#include "world_impl.h"

struct dk__mp4 {
    char *path;
    int width, height;
    AVFormatContext *fmt;
    AVCodecContext *enc;
    AVStream *st;
    struct SwsContext *sws;
    AVFrame *frame;
    AVPacket *pkt;
    int64_t next_pts;
    int header_written;
    int status;                 /* first error seen (sticky) */
    char errmsg[DK_ERRMSG_MAX]; /* its message */
};

/* Records an error with libav's reason for `averr`; keeps the first one. */
static int mp4_fail(dk__mp4 *m, int status, const char *func, int averr, const char *what)
{
    char reason[AV_ERROR_MAX_STRING_SIZE];
    if (averr == AVERROR(ENOMEM)) status = DK_ENOMEM;
    av_strerror(averr, reason, sizeof reason);
    dk__error(status, func, "%s: %s: %s", dk__str(m ? m->path : NULL), what, reason);
    if (m && m->status == DK_OK) {
        m->status = status;
        dk__keep(status, m->errmsg);
    }
    return status;
}

/* Frees every libav object; closes (and with `unlink_file` removes) the file. */
static void mp4_free(dk__mp4 *m, int unlink_file)
{
    if (!m) return;
    if (m->fmt) {
        if (!(m->fmt->oformat->flags & AVFMT_NOFILE) && m->fmt->pb) avio_closep(&m->fmt->pb);
        avformat_free_context(m->fmt);
        if (unlink_file) unlink(m->path);
    }
    avcodec_free_context(&m->enc);
    sws_freeContext(m->sws);
    av_frame_free(&m->frame);
    av_packet_free(&m->pkt);
    dk_free(m->path);
    dk_free(m);
}

/* Opens the first H.264 encoder that accepts our settings: libx264 by name,
 * then any other registered H.264 encoder (hardware ones may refuse to open
 * on a machine without the device; they are skipped then). */
static int open_encoder(dk__mp4 *m, AVRational fps_q, int crf)
{
    const AVCodec *cands[32];
    int n = 0;
    const AVCodec *x264 = avcodec_find_encoder_by_name("libx264");
    if (x264) cands[n++] = x264;
    void *it = NULL;
    const AVCodec *c;
    while ((c = av_codec_iterate(&it)) && n < (int)(sizeof cands / sizeof cands[0])) {
        if (c == x264 || c->id != AV_CODEC_ID_H264 || !av_codec_is_encoder(c)) continue;
        cands[n++] = c;
    }
    if (n == 0)
        return dk__error(DK_EUNSUPPORTED, "dk__mp4_open", "%s: libavcodec has no H.264 encoder",
                         m->path);

    int last_err = 0;
    for (int i = 0; i < n; i++) {
        const AVCodec *codec = cands[i];
        if (codec->pix_fmts) {
            int ok = 0;
            for (const enum AVPixelFormat *p = codec->pix_fmts; *p != AV_PIX_FMT_NONE; p++)
                if (*p == AV_PIX_FMT_YUV420P) ok = 1;
            if (!ok) continue;
        }
        AVCodecContext *enc = avcodec_alloc_context3(codec);
        if (!enc) return dk__error(DK_ENOMEM, "dk__mp4_open", "%s: out of memory", m->path);
        enc->width = m->width;
        enc->height = m->height;
        enc->pix_fmt = AV_PIX_FMT_YUV420P;
        enc->time_base = av_inv_q(fps_q);
        enc->framerate = fps_q;
        enc->sample_aspect_ratio = (AVRational){1, 1};
        double gop = fmax(1.0, floor(av_q2d(fps_q) * 2.0 + 0.5));
        enc->gop_size = gop > 600 ? 600 : (int)gop;
        enc->thread_count = 1;
        /* Demote this encoder's messages one step (info -> verbose): its
           banner and settings line are not for the user's terminal, and the
           global av_log level belongs to the application. */
        enc->log_level_offset = AV_LOG_VERBOSE - AV_LOG_INFO;
        enc->color_range = AVCOL_RANGE_MPEG;
        enc->colorspace = AVCOL_SPC_SMPTE170M;
        enc->color_primaries = AVCOL_PRI_BT709;
        enc->color_trc = AVCOL_TRC_IEC61966_2_1;
        if (m->fmt->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
        if (enc->priv_data) {
            /* Options a given encoder does not know are ignored (hardware
               encoders have their own quality knobs). */
            av_opt_set_int(enc->priv_data, "crf", crf, 0);
            av_opt_set(enc->priv_data, "preset", "veryfast", 0);
            /* x264's own log: warnings and errors only (no statistics). */
            av_opt_set(enc->priv_data, "x264-params", "log=1", 0);
        }
        int err = avcodec_open2(enc, codec, NULL);
        if (err >= 0) {
            m->enc = enc;
            return DK_OK;
        }
        last_err = err;
        avcodec_free_context(&enc);
        if (err == AVERROR(ENOMEM)) break;
    }
    if (last_err == AVERROR(ENOMEM))
        return dk__error(DK_ENOMEM, "dk__mp4_open", "%s: out of memory", m->path);
    char reason[AV_ERROR_MAX_STRING_SIZE] = "no encoder accepts yuv420p";
    if (last_err) av_strerror(last_err, reason, sizeof reason);
    return dk__error(DK_EUNSUPPORTED, "dk__mp4_open", "%s: no usable H.264 encoder: %s",
                     m->path, reason);
}

int dk__mp4_open(const char *path, int width, int height, double fps, int crf, dk__mp4 **out)
{
    if (out) *out = NULL;
    if (!path || !*path || !out)
        return dk__error(DK_EINVAL, __func__, "NULL or empty argument");
    if (width <= 0 || height <= 0 || width > 16384 || height > 16384 || (width & 1) ||
        (height & 1))
        return dk__error(DK_EINVAL, __func__, "%s: size %dx%d: width and height must be even, 2..16384",
                         path, width, height);
    if (!(fps > 0.0) || !isfinite(fps) || fps > 1000.0)
        return dk__error(DK_EINVAL, __func__, "%s: fps %g not in (0, 1000]", path, fps);
    if (crf < 0 || crf > 51)
        return dk__error(DK_EINVAL, __func__, "%s: crf %d not in 0..51", path, crf);

    dk__mp4 *m = dk_calloc(1, sizeof *m);
    if (!m) return dk__error(DK_ENOMEM, __func__, "%s: out of memory", path);
    m->width = width;
    m->height = height;
    m->path = dk_strdup(path);
    if (!m->path) {
        dk_free(m);
        return dk__error(DK_ENOMEM, __func__, "%s: out of memory", path);
    }

    int err = avformat_alloc_output_context2(&m->fmt, NULL, "mp4", path);
    if (err < 0 || !m->fmt) {
        int st = mp4_fail(m, DK_EUNSUPPORTED, __func__, err < 0 ? err : AVERROR_MUXER_NOT_FOUND,
                          "cannot create the mp4 muxer");
        mp4_free(m, 0);
        return st;
    }
    /* fps as a rational: 30 -> 30/1, 29.97 -> 2997/100, 30000/1001 exactly. */
    AVRational fps_q = av_d2q(fps, 1 << 16);
    if (fps_q.num <= 0 || fps_q.den <= 0) {
        mp4_free(m, 0);
        return dk__error(DK_EINVAL, __func__, "%s: fps %g is not representable", path, fps);
    }

    int st = open_encoder(m, fps_q, crf);
    if (st) {
        mp4_free(m, 0);
        return st;
    }

    m->st = avformat_new_stream(m->fmt, NULL);
    m->frame = av_frame_alloc();
    m->pkt = av_packet_alloc();
    m->sws = sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, AV_PIX_FMT_YUV420P,
                            SWS_BILINEAR | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, NULL, NULL, NULL);
    if (!m->st || !m->frame || !m->pkt || !m->sws) {
        mp4_free(m, 0);
        return dk__error(DK_ENOMEM, __func__, "%s: out of memory (libav objects)", path);
    }
    /* Source is full-range RGB, destination limited-range BT.601. */
    const int *coef = sws_getCoefficients(SWS_CS_ITU601);
    sws_setColorspaceDetails(m->sws, coef, 1, coef, 0, 0, 1 << 16, 1 << 16);

    m->frame->format = AV_PIX_FMT_YUV420P;
    m->frame->width = width;
    m->frame->height = height;
    m->frame->color_range = AVCOL_RANGE_MPEG;
    m->frame->colorspace = AVCOL_SPC_SMPTE170M;
    m->frame->color_primaries = AVCOL_PRI_BT709;
    m->frame->color_trc = AVCOL_TRC_IEC61966_2_1;
    err = av_frame_get_buffer(m->frame, 0);
    if (err < 0) {
        st = mp4_fail(m, DK_ENOMEM, __func__, err, "cannot allocate a frame");
        mp4_free(m, 0);
        return st;
    }

    err = avcodec_parameters_from_context(m->st->codecpar, m->enc);
    if (err < 0) {
        st = mp4_fail(m, DK_EINTERNAL, __func__, err, "cannot set stream parameters");
        mp4_free(m, 0);
        return st;
    }
    m->st->time_base = m->enc->time_base;
    m->st->avg_frame_rate = fps_q;
    m->st->r_frame_rate = fps_q;

    if (!(m->fmt->oformat->flags & AVFMT_NOFILE)) {
        err = avio_open(&m->fmt->pb, path, AVIO_FLAG_WRITE);
        if (err < 0) {
            st = mp4_fail(m, DK_EIO, __func__, err, "cannot open for writing");
            mp4_free(m, 0);
            return st;
        }
    }
    AVDictionary *opts = NULL;
    /* moov before mdat: players and frame-exact readers can start without
       seeking to the end. The muxer rewrites the file at the trailer. */
    av_dict_set(&opts, "movflags", "+faststart", 0);
    err = avformat_write_header(m->fmt, &opts);
    av_dict_free(&opts);
    if (err < 0) {
        st = mp4_fail(m, DK_EIO, __func__, err, "cannot write the header");
        mp4_free(m, 1);
        return st;
    }
    m->header_written = 1;
    *out = m;
    return DK_OK;
}

/* Sends `frame` (NULL = flush) and writes every packet the encoder returns. */
static int encode(dk__mp4 *m, AVFrame *frame, const char *func)
{
    int err = avcodec_send_frame(m->enc, frame);
    if (err < 0) return mp4_fail(m, DK_EINTERNAL, func, err, "encoder refused a frame");
    for (;;) {
        err = avcodec_receive_packet(m->enc, m->pkt);
        if (err == AVERROR(EAGAIN) || err == AVERROR_EOF) return DK_OK;
        if (err < 0) return mp4_fail(m, DK_EINTERNAL, func, err, "encoding failed");
        av_packet_rescale_ts(m->pkt, m->enc->time_base, m->st->time_base);
        m->pkt->stream_index = m->st->index;
        err = av_interleaved_write_frame(m->fmt, m->pkt); /* takes the packet's data */
        if (err < 0) {
            av_packet_unref(m->pkt);
            return mp4_fail(m, DK_EIO, func, err, "cannot write a packet");
        }
    }
}

int dk__mp4_write(dk__mp4 *m, const dk_tensor *rgb)
{
    if (!m || !rgb) return dk__error(DK_EINVAL, __func__, "NULL argument");
    if (m->status) return dk__error(m->status, __func__, "%s: writer failed earlier: %s",
                                    m->path, m->errmsg);
    if (rgb->dtype != DK_U8 || rgb->ndim != 3 || rgb->shape[0] != m->height ||
        rgb->shape[1] != m->width || rgb->shape[2] != 3 || rgb->strides[2] != 1 ||
        rgb->strides[1] != 3 || rgb->strides[0] < 3 * (int64_t)m->width ||
        rgb->strides[0] > INT32_MAX || !rgb->data)
        return dk__error(DK_EINVAL, __func__,
                         "%s: frame %" PRId64 ": expected a (%d, %d, 3) uint8 tensor with packed pixels",
                         m->path, m->next_pts, m->height, m->width);

    /* The encoder may still reference the previous frame's buffer. */
    int err = av_frame_make_writable(m->frame);
    if (err < 0) return mp4_fail(m, DK_ENOMEM, __func__, err, "cannot get a writable frame");
    const uint8_t *src[1] = {(const uint8_t *)rgb->data};
    const int src_stride[1] = {(int)rgb->strides[0]};
    sws_scale(m->sws, src, src_stride, 0, m->height, m->frame->data, m->frame->linesize);
    m->frame->pts = m->next_pts++;
    return encode(m, m->frame, __func__);
}

int dk__mp4_close(dk__mp4 *m)
{
    if (!m) return DK_OK;
    int prior = m->status, st = prior;
    if (!st && m->header_written) {
        st = encode(m, NULL, __func__);
        if (!st) {
            int err = av_write_trailer(m->fmt);
            if (err < 0) st = mp4_fail(m, DK_EIO, __func__, err, "cannot write the trailer");
        }
    }
    if (!st && !(m->fmt->oformat->flags & AVFMT_NOFILE)) {
        int err = avio_closep(&m->fmt->pb);
        if (err < 0) st = mp4_fail(m, DK_EIO, __func__, err, "cannot close the file");
    }
    /* An earlier failure may have been recorded on another thread. */
    if (prior) dk__error(prior, __func__, "%s", m->errmsg);
    mp4_free(m, 0);
    return st;
}
