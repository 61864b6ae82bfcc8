/*
 * dk_video: the public API, the request planner and its execution.
 *
 * A request (frames of one or more videos) goes through:
 *   1. range checks and the decoded-frame cache (hits are copied out);
 *   2. per video: sort + dedupe the frames, map each to its packet and decode
 *      start (index.c), group frames sharing a decode start ("GOP"), and
 *      merge groups into runs when decoding on costs no extra reference
 *      picture (an open GOP's next RAP was already decoded, or only
 *      non-reference pictures lie between) - but keep enough runs to feed
 *      the pool;
 *   3. runs of all videos execute as pool tasks, each task holding one of the
 *      video's decoder contexts (its own demuxer + decoder, reused across
 *      requests, at most max_decoders per video);
 *   4. per run, one forward pass: packets come from the GOP packet cache or
 *      the demuxer (positioned by reading forward when that is cheap, else by
 *      av_seek_frame to the start point, verified by byte position); a packet
 *      is sent when it is a target or a reference picture the targets may
 *      need; unrequested non-reference pictures are not sent at all; frames
 *      that come out are identified by pts, never by counting, and only
 *      targets are converted; after the last target is sent the decoder is
 *      drained (if a target is still in its reorder buffer) and flushed.
 *
 * Errors never produce a wrong picture: a decoder error or a corrupt-flagged
 * frame at packet e taints every frame whose decode range [start, packet]
 * contains e (frame threading widens e to the packets in flight); a sent
 * picture that never came out counts as an error at its packet; a target
 * that never came out is an error. Such frames are zero-filled and reported
 * as "<function>(): <path>: frame <id>: <reason>".
 *
 * Sequential readers (each request starting right after the previous one's
 * last frame) get read-ahead: the rest of the last target's GOP is decoded
 * into the frame cache, so reading a video frame by frame costs one decode
 * per frame rather than one GOP prefix per frame. The frames such a reader
 * asked for are not cached (it will not ask again); other requests cache
 * theirs, up to a quarter of the cache. Frame buffers the full cache evicts
 * are recycled (cache.c spares) rather than freed and allocated again.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libavutil/imgutils.h>
#include <libavutil/log.h>
#include <libavutil/pixdesc.h>

#include "video/video_impl.h"

#define MEM_IO_BUF 65536
#define PROBE_PACKETS 256
#define SEEK_TRIES 3

typedef struct mem_src {
    const uint8_t *data;
    size_t size;
    int64_t pos;
} mem_src;

typedef struct vdec {
    AVFormatContext *fmt;
    AVIOContext *io;           /* memory sources only */
    mem_src *mem;
    AVCodecContext *cc;
    AVPacket *pkt;             /* last packet read from the demuxer */
    AVFrame *frame;
    dk__conv conv;
    int64_t demux_next;        /* index the demuxer returns next; -1 unknown */
    int64_t pending;           /* pkt holds this packet, not yet consumed; -1 none */
    int last_err;              /* AVERROR of the last failed read */
    int window;                /* packets a decoder error may belong to */
    int busy;
} vdec;

struct dk_video {
    char *path;
    const uint8_t *mem;
    size_t mem_size;
    dk_video_config cfg;
    struct stat st;            /* the file when it was opened (regular files) */
    dk__vindex ix;
    dk_video_info info;
    int index_loaded;
    int out_w, out_h;
    size_t frame_bytes, native_bytes;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    vdec **decs;
    int n_decs, n_creating;
    dk__lru *fcache, *pcache;
    dk_video_stats stats;      /* updated atomically */
    int64_t seq_next;          /* atomically: frame after the last request's last */
    char errmsg[DK_ERRMSG_MAX];
};

#define STAT_ADD(v, field, n) __atomic_add_fetch(&(v)->stats.field, (int64_t)(n), __ATOMIC_RELAXED)

/* ------------------------------------------------------------------------ */
/* Sources and demuxers                                                      */

static int mem_read(void *opaque, uint8_t *buf, int n)
{
    mem_src *m = opaque;
    if (m->pos >= (int64_t)m->size) return AVERROR_EOF;
    size_t left = m->size - (size_t)m->pos;
    size_t k = (size_t)n < left ? (size_t)n : left;
    memcpy(buf, m->data + m->pos, k);
    m->pos += (int64_t)k;
    return (int)k;
}

static int64_t mem_seek(void *opaque, int64_t off, int whence)
{
    mem_src *m = opaque;
    int64_t base;
    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE: return (int64_t)m->size;
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = m->pos; break;
    case SEEK_END: base = (int64_t)m->size; break;
    default: return AVERROR(EINVAL);
    }
    if ((off > 0 && base > INT64_MAX - off) || base + off < 0) return AVERROR(EINVAL);
    m->pos = base + off;
    return m->pos;
}

static void fmt_close(AVFormatContext **fmt, AVIOContext **io, mem_src **mem)
{
    avformat_close_input(fmt);
    if (*io) {
        av_freep(&(*io)->buffer);
        avio_context_free(io);
    }
    dk_free(*mem);
    *mem = NULL;
}

/* Opens a demuxer on the video's source. Returns 0 or an AVERROR. */
static int fmt_open(const dk_video *v, AVFormatContext **fmt, AVIOContext **io, mem_src **mem)
{
    *fmt = NULL;
    *io = NULL;
    *mem = NULL;
    if (!v->mem) return avformat_open_input(fmt, v->path, NULL, NULL);
    *mem = dk_calloc(1, sizeof **mem);
    uint8_t *buf = av_malloc(MEM_IO_BUF);
    if (!*mem || !buf) {
        av_free(buf);
        dk_free(*mem);
        *mem = NULL;
        return AVERROR(ENOMEM);
    }
    (*mem)->data = v->mem;
    (*mem)->size = v->mem_size;
    *io = avio_alloc_context(buf, MEM_IO_BUF, 0, *mem, mem_read, NULL, mem_seek);
    *fmt = avformat_alloc_context();
    if (!*io || !*fmt) {
        if (!*io) av_free(buf);
        avformat_free_context(*fmt);
        *fmt = NULL;
        fmt_close(fmt, io, mem);
        return AVERROR(ENOMEM);
    }
    (*fmt)->pb = *io;
    (*fmt)->flags |= AVFMT_FLAG_CUSTOM_IO;
    int ret = avformat_open_input(fmt, NULL, NULL, NULL);   /* frees *fmt on failure */
    if (ret < 0) fmt_close(fmt, io, mem);
    return ret;
}

static void discard_others(AVFormatContext *fmt, int si)
{
    for (unsigned i = 0; i < fmt->nb_streams; i++)
        fmt->streams[i]->discard = (int)i == si ? AVDISCARD_DEFAULT : AVDISCARD_ALL;
}

static int pkt_matches(const dk__vpkt *k, const AVPacket *p)
{
    if (k->size != p->size || k->pos != p->pos || k->dts != p->dts) return 0;
    return (k->flags & DK__PKT_NOPTS) ? p->pts == AV_NOPTS_VALUE : k->pts == p->pts;
}

/* Reads the next packet of the video stream into d->pkt and identifies it.
 * Returns its index, -1 for a packet the index does not know, -2 at the end
 * of the data or on a read error (d->last_err). */
static int64_t read_one(dk_video *v, vdec *d)
{
    const dk__vindex *ix = &v->ix;
    if (!d->fmt) {   /* a failed reopen */
        d->last_err = AVERROR(EIO);
        return -2;
    }
    for (int again = 0;;) {
        av_packet_unref(d->pkt);
        int ret = av_read_frame(d->fmt, d->pkt);
        if (ret == AVERROR(EAGAIN) && ++again < 1000) continue;
        if (ret < 0) {
            d->last_err = ret;
            d->demux_next = -1;
            return -2;
        }
        if (d->pkt->stream_index != ix->stream_index || d->pkt->size <= 0) continue;
        STAT_ADD(v, packets_read, 1);
        int64_t i = -1;
        if (d->demux_next >= 0 && d->demux_next < ix->n_pkts &&
            pkt_matches(&ix->pkts[d->demux_next], d->pkt)) {
            i = d->demux_next;
        } else {
            i = dk__vindex_find_pos(ix, d->pkt->pos);
            if (i >= 0 && !pkt_matches(&ix->pkts[i], d->pkt)) i = -1;
        }
        d->demux_next = i >= 0 ? i + 1 : -1;
        return i;
    }
}

static int reopen(dk_video *v, vdec *d)
{
    fmt_close(&d->fmt, &d->io, &d->mem);
    d->demux_next = -1;
    d->pending = -1;
    STAT_ADD(v, seeks, 1);
    int ret = fmt_open(v, &d->fmt, &d->io, &d->mem);
    if (ret < 0) return ret;
    if ((unsigned)v->ix.stream_index >= d->fmt->nb_streams) return AVERROR_INVALIDDATA;
    discard_others(d->fmt, v->ix.stream_index);
    d->demux_next = 0;
    return 0;
}

/* Positions the demuxer at or before packet p (a pending packet <= p may be
 * left in d->pkt). Seeks to the start point of p's segment, or earlier ones
 * when the demuxer lands past it; reopening the input is the last resort. */
static int demux_seek(dk_video *v, vdec *d, int64_t p)
{
    const dk__vindex *ix = &v->ix;
    if (!d->fmt) return reopen(v, d);
    int by_pts = (d->fmt->iformat->flags & AVFMT_SEEK_TO_PTS) != 0;
    /* Without distinct byte positions a landing point cannot be identified:
       reopen and read from the start. */
    for (int t = 0; t < SEEK_TRIES && ix->pos_unique; t++) {
        int64_t k = ix->pkts[p].seg - t;
        if (k < 0) break;
        const dk__vpkt *r = &ix->pkts[ix->starts[k]];
        int64_t ts = by_pts && !(r->flags & DK__PKT_NOPTS) ? r->pts : r->dts;
        if (ts == AV_NOPTS_VALUE) ts = r->pts;
        if (ts == AV_NOPTS_VALUE) continue;
        STAT_ADD(v, seeks, 1);
        d->pending = -1;
        d->demux_next = -1;
        if (av_seek_frame(d->fmt, ix->stream_index, ts, AVSEEK_FLAG_BACKWARD) < 0) continue;
        for (int guard = 0; guard < 4096; guard++) {
            int64_t i = read_one(v, d);
            if (i == -2) break;
            if (i < 0) continue;
            if (i <= p) {
                d->pending = i;
                return 0;
            }
            break;   /* landed past p */
        }
    }
    return reopen(v, d);
}

/* Makes d->pkt hold packet p. */
static int demux_get(dk_video *v, vdec *d, int64_t p)
{
    const dk__vindex *ix = &v->ix;
    if (d->pending == p) {
        d->pending = -1;
        return 0;
    }
    d->pending = -1;
    int64_t a = d->demux_next;
    int near = 0;
    if (a >= 0 && a <= p) {
        if (ix->pos_unique)
            near = ix->pkts[p].pos >= ix->pkts[a].pos &&
                   ix->pkts[p].pos - ix->pkts[a].pos <= (8 << 20);
        else
            near = p - a <= 2 * (int64_t)ix->max_gop + 16;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!near || attempt > 0) {
            int ret = demux_seek(v, d, p);
            if (ret < 0) return ret;
            if (d->pending == p) {
                d->pending = -1;
                return 0;
            }
            d->pending = -1;
        }
        for (int64_t guard = 0; guard < ix->n_pkts + 1024; guard++) {
            int64_t i = read_one(v, d);
            if (i == -2) {
                if (attempt > 0) return d->last_err < 0 ? d->last_err : AVERROR_EOF;
                break;
            }
            if (i == p) return 0;
            if (i > p) break;
        }
    }
    return AVERROR_INVALIDDATA;
}

/* ------------------------------------------------------------------------ */
/* Decoder contexts                                                          */

static void dec_free(vdec *d)
{
    if (!d) return;
    avcodec_free_context(&d->cc);
    av_packet_free(&d->pkt);
    av_frame_free(&d->frame);
    dk__conv_free(&d->conv);
    fmt_close(&d->fmt, &d->io, &d->mem);
    dk_free(d);
}

static int av_status(int ret)
{
    if (ret == AVERROR(ENOMEM)) return DK_ENOMEM;
    if (ret == AVERROR(ENOENT)) return DK_ENOENT;
    if (ret == AVERROR(EIO) || ret == AVERROR(EACCES)) return DK_EIO;
    return DK_EINVALIDDATA;
}

static const char *av_why(int ret, char *buf, size_t n)
{
    av_strerror(ret, buf, n);
    return buf;
}

/* A demuxer + decoder for the video. Errors are recorded ("fn(): path: ..."). */
static int dec_create(dk_video *v, const char *fn, vdec **out)
{
    *out = NULL;
    char e[AV_ERROR_MAX_STRING_SIZE];
    vdec *d = dk_calloc(1, sizeof *d);
    if (!d) return dk__error(DK_ENOMEM, fn, "%s: out of memory", v->path);
    d->demux_next = 0;
    d->pending = -1;
    /* A regular file is the one the index describes: same inode, size and
       modification time (decoders are also created long after the open,
       e.g. after dk_video_trim). */
    struct stat now;
    if (!v->mem && S_ISREG(v->st.st_mode) &&
        (stat(v->path, &now) != 0 || !dk__same_file(&now, &v->st))) {
        dk_free(d);
        return dk__error(DK_EIO, fn, "%s: the file was removed or changed since it was opened",
                         v->path);
    }
    int ret = fmt_open(v, &d->fmt, &d->io, &d->mem);
    if (ret < 0) {
        dk_free(d);
        return dk__error(av_status(ret), fn, "%s: cannot open: %s", v->path,
                         av_why(ret, e, sizeof e));
    }
    const dk__vindex *ix = &v->ix;
    int si = ix->stream_index;
    if ((unsigned)si >= d->fmt->nb_streams ||
        d->fmt->streams[si]->codecpar->codec_id != ix->codec_id) {
        if (avformat_find_stream_info(d->fmt, NULL) < 0 || (unsigned)si >= d->fmt->nb_streams ||
            d->fmt->streams[si]->codecpar->codec_id != ix->codec_id) {
            dec_free(d);
            return dk__error(DK_EINVALIDDATA, fn, "%s: stream %d is not the indexed %s stream",
                             v->path, si, ix->codec);
        }
        d->demux_next = -1;
    }
    AVStream *st = d->fmt->streams[si];
    if (av_cmp_q(st->time_base, ix->time_base) != 0) {
        dec_free(d);
        return dk__error(DK_EINVALIDDATA, fn, "%s: stream time base %d/%d differs from the index's",
                         v->path, st->time_base.num, st->time_base.den);
    }
    discard_others(d->fmt, si);
    const AVCodec *codec = avcodec_find_decoder(ix->codec_id);
    if (!codec) {
        dec_free(d);
        return dk__error(DK_EUNSUPPORTED, fn, "%s: no decoder for codec %s", v->path, ix->codec);
    }
    d->cc = avcodec_alloc_context3(codec);
    d->pkt = av_packet_alloc();
    d->frame = av_frame_alloc();
    if (!d->cc || !d->pkt || !d->frame) {
        dec_free(d);
        return dk__error(DK_ENOMEM, fn, "%s: out of memory", v->path);
    }
    if ((ret = avcodec_parameters_to_context(d->cc, st->codecpar)) < 0) {
        dec_free(d);
        return dk__error(av_status(ret), fn, "%s: bad codec parameters: %s", v->path,
                         av_why(ret, e, sizeof e));
    }
    d->cc->pkt_timebase = st->time_base;
    /* The decoder's own complaints about damaged data (error level and
       below) are demoted to verbose: drivekit reports every affected frame
       itself, with file and frame, and must not write to stderr. */
    d->cc->log_level_offset = AV_LOG_VERBOSE - AV_LOG_ERROR;
    d->cc->thread_count = v->cfg.decoder_threads;
    d->cc->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    /* Frames the decoder itself distrusts are not output (never a stale or
       concealed picture); see run_exec for OUTPUT_CORRUPT. */
    d->cc->flags &= ~AV_CODEC_FLAG_OUTPUT_CORRUPT;
    d->cc->flags2 &= ~AV_CODEC_FLAG2_SHOW_ALL;
    /* Decoded-picture hash SEI (HEVC encoders may write one per picture):
       verified, and a mismatching picture is dropped, which the run reports
       as damage. (EXPLODE stays off for H.264: it turns the harmless MMCO
       failures of an open-GOP start into errors.) */
    d->cc->err_recognition |= AV_EF_CRCCHECK;
    if (ix->codec_id == AV_CODEC_ID_HEVC) d->cc->err_recognition |= AV_EF_EXPLODE;
    if ((ret = avcodec_open2(d->cc, codec, NULL)) < 0) {
        dec_free(d);
        return dk__error(DK_EUNSUPPORTED, fn, "%s: cannot open the %s decoder: %s", v->path,
                         ix->codec, av_why(ret, e, sizeof e));
    }
    d->window = (d->cc->active_thread_type & FF_THREAD_FRAME) && d->cc->thread_count > 1
                    ? d->cc->thread_count
                    : 1;
    *out = d;
    return DK_OK;
}

/* A free decoder for a run starting at packet `start`: the one whose
 * demuxer sits closest before it, else a new one (up to max_decoders),
 * else waits for one to be released. */
static vdec *dec_acquire(dk_video *v, int64_t start, const char *fn, int *status)
{
    *status = DK_OK;
    pthread_mutex_lock(&v->mu);
    for (;;) {
        vdec *best = NULL;
        int64_t best_gap = INT64_MAX;
        for (int i = 0; i < v->n_decs; i++) {
            vdec *d = v->decs[i];
            if (d->busy) continue;
            int64_t next = d->pending >= 0 ? d->pending : d->demux_next;
            int64_t gap = next >= 0 && next <= start ? start - next : INT64_MAX - 1;
            if (!best || gap < best_gap) {
                best = d;
                best_gap = gap;
            }
        }
        if (best) {
            best->busy = 1;
            pthread_mutex_unlock(&v->mu);
            return best;
        }
        if (v->n_decs + v->n_creating < v->cfg.max_decoders) {
            v->n_creating++;
            pthread_mutex_unlock(&v->mu);
            vdec *d = NULL;
            int st = dec_create(v, fn, &d);
            pthread_mutex_lock(&v->mu);
            v->n_creating--;
            if (st == DK_OK) {
                d->busy = 1;
                v->decs[v->n_decs++] = d;
            }
            pthread_cond_broadcast(&v->cv);
            pthread_mutex_unlock(&v->mu);
            *status = st;
            return d;
        }
        if (v->n_decs == 0 && v->n_creating == 0) {   /* cannot happen: max_decoders >= 1 */
            pthread_mutex_unlock(&v->mu);
            *status = dk__error(DK_EINTERNAL, fn, "%s: no decoder", v->path);
            return NULL;
        }
        pthread_cond_wait(&v->cv, &v->mu);
    }
}

static void dec_release(dk_video *v, vdec *d)
{
    pthread_mutex_lock(&v->mu);
    d->busy = 0;
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->mu);
}

/* ------------------------------------------------------------------------ */
/* GOP packet cache entries                                                  */

typedef struct pseg {
    int64_t first;             /* packet index of pkts[0] */
    int64_t n, cap;
    AVPacket **pkts;
    size_t bytes;
} pseg;

static void pseg_free(pseg *s)
{
    if (!s) return;
    for (int64_t i = 0; i < s->n; i++) av_packet_free(&s->pkts[i]);
    dk_free(s->pkts);
    dk_free(s);
}

static void pseg_free_cb(void *opaque, void *data)
{
    (void)opaque;
    pseg_free(data);
}

/* Per-run packet source: a pinned cached segment, or the demuxer (building
 * a cache entry for a segment read from its first packet). */
typedef struct psrc {
    int64_t seg_id;            /* segment of `cached` or of the demuxed run */
    dk_buffer *cached;         /* pinned entry (its data is a pseg) */
    pseg *build;               /* segment being collected for the cache */
} psrc;

static size_t seg_bytes(const dk__vindex *ix, int64_t k, int64_t *first, int64_t *end)
{
    *first = ix->starts[k];
    *end = k + 1 < ix->n_starts ? ix->starts[k + 1] : ix->n_pkts;
    size_t b = 0;
    for (int64_t i = *first; i < *end; i++) b += (size_t)ix->pkts[i].size + 128;
    return b;
}

/* Completes the segment under construction by reading its remaining
 * packets, and stores it. A failure just drops it. */
static void psrc_finish_build(dk_video *v, vdec *d, psrc *s)
{
    pseg *b = s->build;
    if (!b) return;
    s->build = NULL;
    while (b->n < b->cap) {
        int64_t p = b->first + b->n;
        if (demux_get(v, d, p) < 0) break;
        AVPacket *c = av_packet_clone(d->pkt);
        if (!c) break;
        b->pkts[b->n++] = c;
    }
    if (b->n < b->cap) {
        pseg_free(b);
        return;
    }
    dk_buffer *buf;
    if (dk_buffer_wrap(b, b->bytes, pseg_free_cb, NULL, &buf) != DK_OK) {
        pseg_free(b);
        dk_errmsg_clear();
        return;
    }
    dk__lru_put(v->pcache, (uint64_t)(b->first), buf, b->bytes);
    dk_buffer_unref(buf);
}

static void psrc_close(dk_video *v, vdec *d, psrc *s, int complete)
{
    if (complete) {
        psrc_finish_build(v, d, s);
    } else {
        pseg_free(s->build);
        s->build = NULL;
    }
    dk_buffer_unref(s->cached);
    s->cached = NULL;
    s->seg_id = -1;
}

/* The packet at index p (p ascending within a run). Returns 0 or AVERROR. */
static int psrc_get(dk_video *v, vdec *d, psrc *s, int64_t p, const AVPacket **out)
{
    const dk__vindex *ix = &v->ix;
    int64_t k = ix->pkts[p].seg;
    if (k != s->seg_id) {
        psrc_finish_build(v, d, s);
        dk_buffer_unref(s->cached);
        s->cached = NULL;
        s->seg_id = k;
        int64_t first, end;
        if (v->pcache) {
            s->cached = dk__lru_get(v->pcache, (uint64_t)ix->starts[k]);
            if (s->cached) {
                STAT_ADD(v, packet_cache_hits, 1);
            } else {
                size_t bytes = seg_bytes(ix, k, &first, &end);
                if (p == first && bytes <= v->cfg.packet_cache_bytes / 4) {
                    pseg *b = dk_calloc(1, sizeof *b);
                    if (b) b->pkts = dk_calloc((size_t)(end - first), sizeof *b->pkts);
                    if (b && b->pkts) {
                        b->first = first;
                        b->cap = end - first;
                        b->bytes = bytes + sizeof *b;
                        s->build = b;
                    } else {
                        if (b) dk_free(b);
                    }
                }
            }
        }
    }
    if (s->cached) {
        const pseg *c = dk_buffer_data(s->cached);
        *out = c->pkts[p - c->first];
        return 0;
    }
    int ret = demux_get(v, d, p);
    if (ret < 0) return ret;
    if (s->build && s->build->first + s->build->n == p) {
        AVPacket *c = av_packet_clone(d->pkt);
        if (c) {
            s->build->pkts[s->build->n++] = c;
        } else {
            pseg_free(s->build);
            s->build = NULL;
        }
    }
    *out = d->pkt;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

typedef struct eitem {
    int32_t vi;
    int64_t frame;
    uint8_t *dst;
} eitem;

typedef struct vtarget {
    int64_t frame, pkt;
    int32_t start;
    int64_t i0, i1;            /* its items: order[i0..i1); empty for read-ahead */
    uint8_t *dst;
    dk_buffer *buf;            /* read-ahead: the cache buffer it decodes into */
    int cache;                 /* a copy goes to the frame cache when sound */
    int status;
    const char *why;
    int got;
} vtarget;

typedef struct vrun {
    int64_t t0, t1;            /* targets, sorted by packet */
    int32_t start;
    int64_t cost;              /* pictures to decode (its groups' bounds) */
} vrun;

typedef struct vreq {
    dk_video *v;
    const char *fn;
    dk_video_output out;
    size_t fbytes;
    int ow, oh;
    eitem *items;
    int sequential;            /* continues the previous request of this video */
    int64_t *order;            /* this video's pending items, sorted by frame */
    int64_t n_order;
    vtarget *tg;
    int64_t n_tg;
    vrun *runs;
    int64_t n_runs;
    int64_t next_run;          /* atomic cursor of the workers */
    char why_buf[160];         /* why workers could not open a decoder (under
                                  v->mu; the first failure's reason) */
} vreq;

static uint64_t fkey(dk_video_output out, int64_t frame)
{
    return ((uint64_t)out << 56) | (uint64_t)frame;
}

/* Error ranges of a run: [lo, hi] packet indices. */
typedef struct errs {
    int64_t (*r)[2];
    int64_t n, cap;
    int oom;
} errs;

static void errs_add(errs *e, int64_t lo, int64_t hi)
{
    if (e->n == e->cap) {
        int64_t nc = e->cap ? e->cap * 2 : 16;
        void *nr = dk_realloc(e->r, (size_t)nc * sizeof *e->r);
        if (!nr) {
            e->oom = 1;   /* treated as "everything tainted" */
            return;
        }
        e->r = nr;
        e->cap = nc;
    }
    e->r[e->n][0] = lo;
    e->r[e->n][1] = hi;
    e->n++;
}

/* Whether an error taints the picture of packet `pkt` decoded from `start`:
 * an error at the picture itself, or at a reference picture in between (a
 * damaged non-reference picture cannot propagate). A range (errors of frame
 * threads, which cannot be pinned to one packet) taints on any overlap. */
static int errs_hit(const errs *e, const dk__vindex *ix, int64_t start, int64_t pkt)
{
    if (e->oom) return 1;
    for (int64_t i = 0; i < e->n; i++) {
        int64_t lo = e->r[i][0], hi = e->r[i][1];
        if (lo > pkt || hi < start) continue;
        if (lo != hi || lo == pkt || (ix->pkts[lo].flags & DK__PKT_REF)) return 1;
    }
    return 0;
}

typedef struct runctx {
    vreq *rq;
    vdec *d;
    const vrun *run;
    int64_t rs, re;            /* packet range of the pass */
    uint8_t *sent, *taken;     /* bitmaps over [rs, re] */
    uint8_t *quiet;            /* sent as DK__SEND_QUIET */
    int64_t *sent_list;        /* packets in send order */
    int64_t n_sent;
    int64_t n_got;             /* targets received */
    errs err;
} runctx;

static int bit_get(const uint8_t *b, int64_t i)
{
    return (b[i >> 3] >> (i & 7)) & 1;
}
static void bit_set(uint8_t *b, int64_t i)
{
    b[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static vtarget *run_target(runctx *c, int64_t p)
{
    vtarget *tg = c->rq->tg;
    int64_t a = c->run->t0, b = c->run->t1;
    while (a < b) {
        int64_t m = a + (b - a) / 2;
        if (tg[m].pkt < p) a = m + 1;
        else b = m;
    }
    return a < c->run->t1 && tg[a].pkt == p ? &tg[a] : NULL;
}

static void err_at_send(runctx *c, int64_t k_back)
{
    if (c->n_sent == 0) {
        errs_add(&c->err, c->rs, c->re);
        return;
    }
    int64_t k = c->n_sent - 1 - k_back;
    if (k < 0) k = 0;
    errs_add(&c->err, c->sent_list[k], c->sent_list[c->n_sent - 1]);
}

static void handle_frame(runctx *c, AVFrame *f)
{
    dk_video *v = c->rq->v;
    const dk__vindex *ix = &v->ix;
    int64_t ts = f->pts;
    if (ts == AV_NOPTS_VALUE && ix->has_b_frames == 0) ts = f->pkt_dts;
    if (ts == AV_NOPTS_VALUE) return;
    int64_t p = dk__vindex_find_pts(ix, ts, c->rs, c->re, c->sent, c->taken);
    if (p < 0 || !bit_get(c->quiet, p - c->rs)) STAT_ADD(v, frames_decoded, 1);
    if (p < 0) return;
    bit_set(c->taken, p - c->rs);
    int flagged = f->decode_error_flags || (f->flags & AV_FRAME_FLAG_CORRUPT);
    if (flagged && !bit_get(c->quiet, p - c->rs)) errs_add(&c->err, p, p);
    vtarget *t = run_target(c, p);
    if (!t || t->got) return;
    t->got = 1;
    c->n_got++;
    if (!t->dst) {
        t->buf = dk__lru_take_spare(v->fcache, c->rq->fbytes);
        if (!t->buf && dk_buffer_alloc(c->rq->fbytes, 0, &t->buf) != DK_OK) {
            dk_errmsg_clear();
            t->status = DK_ENOMEM;
            t->why = "out of memory";
            return;
        }
        t->dst = dk_buffer_data(t->buf);
    }
    const char *why = NULL;
    int st = dk__conv_frame(&c->d->conv, f, c->rq->out, ix->pix_fmt_id, ix->width, ix->height,
                            c->rq->ow, c->rq->oh, t->dst, c->rq->fbytes, &why);
    if (st != DK_OK) {
        t->status = st;
        t->why = why;
    }
}

static void receive_all(runctx *c)
{
    vdec *d = c->d;
    for (int fails = 0;;) {
        int ret = avcodec_receive_frame(d->cc, d->frame);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return;
        if (ret < 0) {
            err_at_send(c, d->window - 1);
            if (ret == AVERROR(ENOMEM) || ++fails > 64) return;
            continue;
        }
        handle_frame(c, d->frame);
        av_frame_unref(d->frame);
    }
}

static void fail_pending(runctx *c, int status, const char *why)
{
    for (int64_t i = c->run->t0; i < c->run->t1; i++) {
        vtarget *t = &c->rq->tg[i];
        if (!t->got && !t->status) {
            t->status = status;
            t->why = why;
        }
    }
}

/* Puts the sound pictures of a finished run into the frame cache: the
 * read-ahead ones (decoded into cache buffers), and copies of the requested
 * ones the plan chose. Runs on the worker, so the copies are made in
 * parallel. */
static void cache_run(vreq *rq, const vrun *run)
{
    dk_video *v = rq->v;
    if (!v->fcache) return;
    for (int64_t i = run->t0; i < run->t1; i++) {
        vtarget *t = &rq->tg[i];
        if (t->status || !t->got) continue;
        if (t->i1 == t->i0) {   /* read-ahead */
            if (t->buf) dk__lru_put(v->fcache, fkey(rq->out, t->frame), t->buf, rq->fbytes);
            continue;
        }
        if (!t->cache) continue;
        dk_buffer *b = dk__lru_take_spare(v->fcache, rq->fbytes);
        if (b || dk_buffer_alloc(rq->fbytes, 0, &b) == DK_OK) {
            memcpy(dk_buffer_data(b), t->dst, rq->fbytes);
            dk__lru_put(v->fcache, fkey(rq->out, t->frame), b, rq->fbytes);
            dk_buffer_unref(b);
        } else {
            dk_errmsg_clear();
        }
    }
}

static void run_exec(vreq *rq, vdec *d, const vrun *run)
{
    dk_video *v = rq->v;
    const dk__vindex *ix = &v->ix;
    runctx c;
    memset(&c, 0, sizeof c);
    c.rq = rq;
    c.d = d;
    c.run = run;
    c.rs = run->start;
    c.re = rq->tg[run->t1 - 1].pkt;
    int64_t len = c.re - c.rs + 1;
    c.sent = dk_calloc((size_t)(len + 7) / 8, 1);
    c.taken = dk_calloc((size_t)(len + 7) / 8, 1);
    c.quiet = dk_calloc((size_t)(len + 7) / 8, 1);
    c.sent_list = dk_malloc((size_t)len * sizeof *c.sent_list);
    if (!c.sent || !c.taken || !c.quiet || !c.sent_list) {
        dk_errmsg_clear();
        fail_pending(&c, DK_ENOMEM, "out of memory");
        goto out;
    }
    /* H.264 decoders drop, when drained, pictures decoded before an open-GOP
       recovery point was output, although they follow it in display order.
       Starting at a real random-access point, every picture the decoder can
       output is sound (the undecodable leading pictures are never targets),
       so let it output them. From a stream start that is no random-access
       point, keep its judgement. */
    if (ix->pkts[c.rs].flags & DK__PKT_RAP)
        d->cc->flags |= AV_CODEC_FLAG_OUTPUT_CORRUPT;
    else
        d->cc->flags &= ~AV_CODEC_FLAG_OUTPUT_CORRUPT;
    psrc src = {-1, NULL, NULL};
    int64_t ti = run->t0;
    int read_failed = 0;
    for (int64_t p = c.rs; p <= c.re; p++) {
        int is_target = ti < run->t1 && rq->tg[ti].pkt == p;
        if (is_target) ti++;
        int action = is_target ? DK__SEND : dk__vindex_action(ix, c.rs, p);
        int send = action != DK__SKIP;
        const AVPacket *pkt = NULL;
        /* Skipped packets are fetched too: the demuxer reads them anyway, and
           the segment being collected for the packet cache needs them. */
        int ret = psrc_get(v, d, &src, p, &pkt);
        if (ret < 0) {
            read_failed = 1;
            errs_add(&c.err, p, c.re);
            break;
        }
        if (!send) {
            STAT_ADD(v, packets_skipped, 1);
            continue;
        }
        /* A quiet leading picture only has to exist for the frame_num
           bookkeeping: let the decoder skip its slices where it can. */
        if (action == DK__SEND_QUIET) d->cc->skip_frame = AVDISCARD_BIDIR;
        for (int guard = 0;; guard++) {
            ret = avcodec_send_packet(d->cc, pkt);
            if (ret == AVERROR(EAGAIN) && guard < 1000) {
                receive_all(&c);
                continue;
            }
            break;
        }
        if (action == DK__SEND_QUIET) d->cc->skip_frame = AVDISCARD_DEFAULT;
        if (ix->pkts[p].flags & DK__PKT_DISCARD) STAT_ADD(v, frames_decoded, 1);
        c.sent_list[c.n_sent++] = p;
        bit_set(c.sent, p - c.rs);
        STAT_ADD(v, packets_sent, 1);
        if (action == DK__SEND_QUIET) bit_set(c.quiet, p - c.rs);
        if (ret < 0 && (action != DK__SEND_QUIET || d->window > 1)) err_at_send(&c, d->window - 1);
        if (ix->pkts[p].flags & DK__PKT_CORRUPT) errs_add(&c.err, p, p);
        receive_all(&c);
    }
    /* Drained even when every target is out: the pictures still buffered
       were decoded (they count), and a picture that never comes out is
       evidence of damage. Draining decodes nothing new. */
    int drained = 0;
    {
        int ret = avcodec_send_packet(d->cc, NULL);
        if (ret >= 0 || ret == AVERROR_EOF) {
            receive_all(&c);
            drained = 1;
        }
    }
    avcodec_flush_buffers(d->cc);
    STAT_ADD(v, flushes, 1);
    psrc_close(v, d, &src, !read_failed);
    if (drained) {
        /* A picture that was sent but never came out (and is not an edit-list
           pre-roll picture the decoder drops on purpose) is missing; whatever
           references it may be concealed. */
        for (int64_t k = 0; k < c.n_sent; k++) {
            int64_t p = c.sent_list[k];
            if (!bit_get(c.taken, p - c.rs) && !bit_get(c.quiet, p - c.rs) &&
                !(ix->pkts[p].flags & DK__PKT_DISCARD))
                errs_add(&c.err, p, p);
        }
    }
    for (int64_t i = run->t0; i < run->t1; i++) {
        vtarget *t = &rq->tg[i];
        if (t->status) continue;
        if (!t->got) {
            t->status = read_failed ? DK_EIO : DK_EINVALIDDATA;
            t->why = read_failed
                         ? "cannot read the data this frame needs (truncated or unreadable file)"
                         : "the decoder produced no picture (corrupt or truncated data)";
        } else if (errs_hit(&c.err, ix, t->start, t->pkt)) {
            t->status = DK_EINVALIDDATA;
            t->why = "decoding error in this frame or a picture it depends on (corrupt data)";
        }
    }
    cache_run(rq, run);
out:
    dk_free(c.sent);
    dk_free(c.taken);
    dk_free(c.quiet);
    dk_free(c.sent_list);
    dk_free(c.err.r);
}

static void worker_main(void *arg)
{
    vreq *rq = arg;
    dk_video *v = rq->v;
    vdec *d = NULL;
    for (;;) {
        int64_t r = __atomic_fetch_add(&rq->next_run, 1, __ATOMIC_RELAXED);
        if (r >= rq->n_runs) break;
        const vrun *run = &rq->runs[r];
        if (!d) {
            int st;
            d = dec_acquire(v, run->start, rq->fn, &st);
            if (!d) {
                /* The full reason, with the system's words (e.g. "Permission
                   denied"): the message "fn(): path: <reason>" without its
                   prefix. Every failing worker of the request reports the
                   first one's. */
                pthread_mutex_lock(&v->mu);
                if (!rq->why_buf[0]) {
                    const char *m = dk_errmsg();
                    size_t nf = strlen(rq->fn), np = strlen(v->path);
                    if (!strncmp(m, rq->fn, nf) && !strncmp(m + nf, "(): ", 4) &&
                        !strncmp(m + nf + 4, v->path, np) && !strncmp(m + nf + 4 + np, ": ", 2))
                        m += nf + 4 + np + 2;
                    snprintf(rq->why_buf, sizeof rq->why_buf, "%s",
                             *m ? m : "cannot open a decoder");
                }
                pthread_mutex_unlock(&v->mu);
                dk_errmsg_clear();
                for (int64_t i = run->t0; i < run->t1; i++) {
                    rq->tg[i].status = st;
                    rq->tg[i].why = rq->why_buf;
                }
                continue;
            }
        }
        run_exec(rq, d, run);
    }
    if (d) dec_release(v, d);
}

static int cmp_i64_by_frame(const void *a, const void *b, void *ctx)
{
    const eitem *it = ctx;
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (it[i].frame != it[j].frame) return it[i].frame < it[j].frame ? -1 : 1;
    return (i > j) - (i < j);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_tg_start(const void *a, const void *b)
{
    const vtarget *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return (x->pkt > y->pkt) - (x->pkt < y->pkt);
}

static int cmp_tg_pkt(const void *a, const void *b)
{
    const vtarget *x = a, *y = b;
    return (x->pkt > y->pkt) - (x->pkt < y->pkt);
}

/* Costliest first; equal costs in file order. */
static int cmp_run_cost(const void *a, const void *b)
{
    const vrun *x = a, *y = b;
    if (x->cost != y->cost) return x->cost > y->cost ? -1 : 1;
    return (x->start > y->start) - (x->start < y->start);
}

/* The §4 bound of one group: reference pictures needed from its start up to
 * its last requested packet, plus the requested pictures themselves. */
static int64_t group_bound(const dk__vindex *ix, int32_t start, const vtarget *tg, int64_t n)
{
    int64_t last = -1;
    for (int64_t i = 0; i < n; i++)
        if (tg[i].i1 > tg[i].i0 && tg[i].pkt > last) last = tg[i].pkt;
    if (last < 0) return 0;
    int64_t count = 0, ti = 0;
    for (int64_t p = start; p <= last; p++) {
        int is_t = 0;
        while (ti < n && tg[ti].pkt < p) ti++;
        if (ti < n && tg[ti].pkt == p && tg[ti].i1 > tg[ti].i0) is_t = 1;
        count += is_t || dk__vindex_action(ix, start, p) == DK__SEND;
    }
    return count;
}

/* Builds targets and runs for rq->order (sorted by frame). */
static int plan(vreq *rq, int pool_size)
{
    dk_video *v = rq->v;
    const dk__vindex *ix = &v->ix;
    eitem *it = rq->items;
    int64_t n_u = 0;
    for (int64_t k = 0; k < rq->n_order; k++)
        if (k == 0 || it[rq->order[k]].frame != it[rq->order[k - 1]].frame) n_u++;
    int64_t max_f = it[rq->order[rq->n_order - 1]].frame;

    /* Read-ahead for sequential readers: the rest of the last frame's GOP. */
    int64_t n_ra = 0;
    int32_t last_start = ix->pkts[ix->frame_pkt[max_f]].start;
    if (v->fcache && rq->sequential) {
        size_t budget = v->cfg.frame_cache_bytes / 2;
        for (int64_t f = max_f + 1; f < ix->n_frames && (size_t)(n_ra + 1) * rq->fbytes <= budget;
             f++) {
            if (ix->pkts[ix->frame_pkt[f]].start != last_start) break;
            n_ra++;
        }
    }
    /* Hidden targets: the read-ahead frames, and the frames sharing a pts
       with any target (identified by output order, so decoded together). */
    int64_t n_x = 0, cap_x = n_ra + 16;
    int64_t *extra = dk_malloc((size_t)cap_x * sizeof *extra);
    if (!extra) return DK_ENOMEM;
    for (int64_t f = max_f + 1; f <= max_f + n_ra; f++)
        if (!dk__lru_contains(v->fcache, fkey(rq->out, f))) extra[n_x++] = f;
    for (int64_t k = 0, n_base = n_x; k < rq->n_order + n_base; k++) {
        int64_t f = k < rq->n_order ? it[rq->order[k]].frame : extra[k - rq->n_order];
        if (k > 0 && k < rq->n_order && f == it[rq->order[k - 1]].frame) continue;
        int64_t same[8];
        int64_t m = dk__vindex_same_pts(ix, f, same, 8);
        if (m > 8) m = 8;   /* a pathological timeline: at worst those frames fail */
        for (int64_t j = 0; j < m; j++) {
            if (n_x == cap_x) {
                cap_x *= 2;
                int64_t *ne = dk_realloc(extra, (size_t)cap_x * sizeof *extra);
                if (!ne) {
                    dk_free(extra);
                    return DK_ENOMEM;
                }
                extra = ne;
            }
            extra[n_x++] = same[j];
        }
    }
    rq->tg = dk_calloc((size_t)(n_u + n_x), sizeof *rq->tg);
    if (!rq->tg) {
        dk_free(extra);
        return DK_ENOMEM;
    }
    int64_t t = -1;
    for (int64_t k = 0; k < rq->n_order; k++) {
        const eitem *e = &it[rq->order[k]];
        if (t < 0 || rq->tg[t].frame != e->frame) {
            vtarget *x = &rq->tg[++t];
            x->frame = e->frame;
            x->pkt = ix->frame_pkt[e->frame];
            x->start = ix->pkts[x->pkt].start;
            x->i0 = k;
            x->dst = e->dst;
        }
        rq->tg[t].i1 = k + 1;
    }
    rq->n_tg = n_u;
    qsort(extra, (size_t)n_x, sizeof *extra, cmp_i64);
    for (int64_t j = 0; j < n_x; j++) {
        int64_t f = extra[j];
        if (j > 0 && extra[j - 1] == f) continue;
        int64_t a = 0, b = n_u;   /* already a requested frame? */
        while (a < b) {
            int64_t m = a + (b - a) / 2;
            if (rq->tg[m].frame < f) a = m + 1;
            else b = m;
        }
        if (a < n_u && rq->tg[a].frame == f) continue;
        vtarget *x = &rq->tg[rq->n_tg++];
        x->frame = f;
        x->pkt = ix->frame_pkt[f];
        x->start = ix->pkts[x->pkt].start;
        x->i0 = x->i1 = 0;
    }
    dk_free(extra);
    qsort(rq->tg, (size_t)rq->n_tg, sizeof *rq->tg, cmp_tg_start);

    /* Groups, the bound, and runs. */
    int64_t n_groups = 0;
    for (int64_t i = 0; i < rq->n_tg; i++)
        if (i == 0 || rq->tg[i].start != rq->tg[i - 1].start) n_groups++;
    rq->runs = dk_calloc((size_t)n_groups, sizeof *rq->runs);
    if (!rq->runs) return DK_ENOMEM;
    /* One worker: consecutive groups form one forward pass (no seek between
       them), and with frame-threaded decoders groups a few reference pictures
       apart too (slack). Several: a run per group (unless groups overlap),
       so the workers, taking the costliest runs first, finish together; the
       seek and flush this costs per group are small next to a GOP's decode. */
    int nw = pool_size < v->cfg.max_decoders ? pool_size : v->cfg.max_decoders;
    int64_t max_groups = nw <= 1 ? INT64_MAX : 1;
    int64_t slack = 0;
    if (v->cfg.decoder_threads != 1)
        slack = v->cfg.decoder_threads > 1 ? v->cfg.decoder_threads - 1 : 2;
    int64_t bound = 0, g0 = 0, groups_in_run = 0, run_end = -1;
    vrun *cur = NULL;
    for (int64_t i = 1; i <= rq->n_tg; i++) {
        if (i < rq->n_tg && rq->tg[i].start == rq->tg[g0].start) continue;
        /* group [g0, i) */
        int32_t gs = rq->tg[g0].start;
        int64_t gb = group_bound(ix, gs, &rq->tg[g0], i - g0);
        bound += gb;
        int64_t gend = rq->tg[i - 1].pkt;
        for (int64_t j = g0; j < i; j++)
            if (rq->tg[j].pkt > gend) gend = rq->tg[j].pkt;
        int merge = 0;
        if (cur && gs <= run_end) {
            merge = 1;   /* overlapping passes would decode the overlap twice */
        } else if (cur && groups_in_run < max_groups) {
            if (gs == run_end + 1) {
                merge = 1;
            } else {
                int64_t refs = ix->ref_prefix[gs] - ix->ref_prefix[run_end + 1];
                merge = refs <= slack;
            }
        }
        if (merge) {
            cur->t1 = i;
            cur->cost += gb;
            groups_in_run++;
            if (gend > run_end) run_end = gend;
        } else {
            cur = &rq->runs[rq->n_runs++];
            cur->t0 = g0;
            cur->t1 = i;
            cur->start = gs;
            cur->cost = gb;
            groups_in_run = 1;
            run_end = gend;
        }
        g0 = i;
    }
    for (int64_t r = 0; r < rq->n_runs; r++)
        qsort(rq->tg + rq->runs[r].t0, (size_t)(rq->runs[r].t1 - rq->runs[r].t0), sizeof *rq->tg,
              cmp_tg_pkt);
    if (nw > 1)
        qsort(rq->runs, (size_t)rq->n_runs, sizeof *rq->runs, cmp_run_cost);
    STAT_ADD(v, min_decodes, bound);
    return DK_OK;
}

static void vreq_free(vreq *rq)
{
    if (!rq->tg) return;
    for (int64_t i = 0; i < rq->n_tg; i++) dk_buffer_unref(rq->tg[i].buf);
    dk_free(rq->tg);
    dk_free(rq->runs);
    rq->tg = NULL;
}

static size_t out_bytes(const dk_video *v, dk_video_output out)
{
    return out == DK_VIDEO_NATIVE ? v->native_bytes : v->frame_bytes;
}

static void set_handle_error(dk_video *v)
{
    pthread_mutex_lock(&v->mu);
    dk__keep(-1, v->errmsg);
    pthread_mutex_unlock(&v->mu);
}

/* The engine behind every decoding call. items[i].dst receives frame i;
 * status[i] its status (never NULL here). Returns the first error in item
 * order, with its message recorded on the calling thread (and the video). */
static int engine(const char *fn, dk_video *const *videos, int n_videos, dk_pool *pool,
                  eitem *items, int64_t n, int *status, int force_native)
{
    int hard = DK_OK;
    vreq *rqs = dk_calloc((size_t)n_videos, sizeof *rqs);
    int64_t *order = dk_malloc((size_t)(n ? n : 1) * sizeof *order);
    int64_t *counts = dk_calloc((size_t)n_videos + 1, sizeof *counts);
    if (!rqs || !order || !counts) {
        dk_free(rqs);
        dk_free(order);
        dk_free(counts);
        return dk__error(DK_ENOMEM, fn, "out of memory for a request of %lld frames", (long long)n);
    }
    for (int j = 0; j < n_videos; j++) {
        dk_video *v = videos[j];
        rqs[j].v = v;
        rqs[j].fn = fn;
        rqs[j].out = force_native ? DK_VIDEO_NATIVE : v->cfg.output;
        rqs[j].fbytes = out_bytes(v, rqs[j].out);
        rqs[j].ow = v->out_w;
        rqs[j].oh = v->out_h;
        rqs[j].items = items;
    }
    /* Range checks and frame-cache hits. */
    for (int64_t i = 0; i < n; i++) {
        eitem *e = &items[i];
        vreq *rq = &rqs[e->vi];
        dk_video *v = rq->v;
        status[i] = DK_OK;
        if (e->frame < 0 || e->frame >= v->ix.n_frames) {
            status[i] = DK_ERANGE;
            memset(e->dst, 0, rq->fbytes);
            continue;
        }
        dk_buffer *b = dk__lru_get(v->fcache, fkey(rq->out, e->frame));
        if (b) {
            memcpy(e->dst, dk_buffer_data(b), rq->fbytes);
            dk_buffer_unref(b);
            STAT_ADD(v, frame_cache_hits, 1);
            status[i] = 1;   /* done */
            continue;
        }
        counts[e->vi + 1]++;
    }
    for (int j = 0; j < n_videos; j++) {
        counts[j + 1] += counts[j];
        rqs[j].order = order + counts[j];
    }
    /* Sequential-reader detection, over every valid item (cache hits too). */
    for (int j = 0; j < n_videos; j++) {
        int64_t lo = INT64_MAX, hi = -1;
        for (int64_t i = 0; i < n; i++) {
            if (items[i].vi != j || status[i] == DK_ERANGE) continue;
            if (items[i].frame < lo) lo = items[i].frame;
            if (items[i].frame > hi) hi = items[i].frame;
        }
        if (hi < 0) continue;
        dk_video *v = rqs[j].v;
        int64_t seq = __atomic_exchange_n(&v->seq_next, hi + 1, __ATOMIC_RELAXED);
        rqs[j].sequential = seq > 0 && lo >= seq && lo <= seq + 2;
    }
    for (int64_t i = 0; i < n; i++)
        if (status[i] == DK_OK) rqs[items[i].vi].order[rqs[items[i].vi].n_order++] = i;

    int psize = dk_pool_size(pool);
    for (int j = 0; j < n_videos; j++) {
        vreq *rq = &rqs[j];
        if (!rq->n_order) continue;
        qsort_r(rq->order, (size_t)rq->n_order, sizeof *rq->order, cmp_i64_by_frame, items);
        if (plan(rq, psize) != DK_OK) {
            hard = DK_ENOMEM;
            break;
        }
        /* A request bigger than the cache would only churn it: its first
           frames are cached, up to a quarter of the capacity. A sequential
           reader will not ask for the frames it just got again: only its
           read-ahead frames are cached. */
        size_t budget = rq->sequential ? 0 : rq->v->cfg.frame_cache_bytes / 4;
        for (int64_t k = 0; k < rq->n_tg && budget >= rq->fbytes; k++)
            if (rq->tg[k].i1 > rq->tg[k].i0) {
                rq->tg[k].cache = 1;
                budget -= rq->fbytes;
            }
    }
    if (hard == DK_OK) {
        dk_pool_group g;
        dk_pool_group_init(&g);
        for (int j = 0; j < n_videos; j++) {
            vreq *rq = &rqs[j];
            if (!rq->n_runs) continue;
            int nw = psize < rq->v->cfg.max_decoders ? psize : rq->v->cfg.max_decoders;
            if (nw > rq->n_runs) nw = (int)rq->n_runs;
            for (int w = 0; w < nw; w++)
                if (dk_pool_submit(pool, &g, worker_main, rq) != DK_OK) {
                    dk_errmsg_clear();
                    worker_main(rq);
                }
        }
        dk_pool_group_wait(pool, &g);
    }
    /* Results: statuses and duplicates (the workers filled the cache). */
    for (int j = 0; j < n_videos && hard == DK_OK; j++) {
        vreq *rq = &rqs[j];
        for (int64_t k = 0; k < rq->n_tg; k++) {
            vtarget *t = &rq->tg[k];
            if (t->i1 == t->i0) continue;   /* read-ahead */
            const uint8_t *src = items[rq->order[t->i0]].dst;
            for (int64_t q = t->i0; q < t->i1; q++) {
                int64_t i = rq->order[q];
                status[i] = t->status;
                if (t->status)
                    memset(items[i].dst, 0, rq->fbytes);
                else if (q > t->i0)
                    memcpy(items[i].dst, src, rq->fbytes);
            }
        }
    }
    /* Statistics and the message of the first failure. */
    int64_t first = -1;
    for (int64_t i = 0; i < n; i++) {
        if (hard != DK_OK && status[i] == DK_OK) {
            status[i] = hard;
            memset(items[i].dst, 0, rqs[items[i].vi].fbytes);
        }
        if (status[i] == 1) status[i] = DK_OK;
        if (status[i] != DK_OK && first < 0) first = i;
    }
    for (int j = 0; j < n_videos; j++) {
        dk_video *v = rqs[j].v;
        int64_t req = 0, ok = 0;
        for (int64_t i = 0; i < n; i++) {
            if (items[i].vi != j) continue;
            req++;
            ok += status[i] == DK_OK;
        }
        if (req) {
            STAT_ADD(v, requests, 1);
            STAT_ADD(v, frames_requested, req);
            STAT_ADD(v, frames_returned, ok);
        }
    }
    int ret = DK_OK;
    if (hard != DK_OK) {
        ret = dk__error(hard, fn, "out of memory planning a request of %lld frames", (long long)n);
    } else if (first >= 0) {
        int64_t i = first;
        dk_video *v = videos[items[i].vi];
        const char *why = "out of range";
        char rng[96];
        if (status[i] == DK_ERANGE) {
            snprintf(rng, sizeof rng, "out of range [0, %lld)", (long long)v->ix.n_frames);
            why = rng;
        } else {
            vreq *rq = &rqs[items[i].vi];
            for (int64_t k = 0; k < rq->n_tg; k++)
                if (rq->tg[k].frame == items[i].frame && rq->tg[k].why) why = rq->tg[k].why;
        }
        ret = dk__error(status[i], fn, "%s: frame %lld: %s", v->path, (long long)items[i].frame,
                        why);
    }
    for (int j = 0; j < n_videos; j++) vreq_free(&rqs[j]);
    if (ret != DK_OK)
        for (int j = 0; j < n_videos; j++) {
            int used = 0;
            for (int64_t i = 0; i < n && !used; i++) used = items[i].vi == j && status[i] != DK_OK;
            if (used) set_handle_error(videos[j]);
        }
    dk_free(rqs);
    dk_free(order);
    dk_free(counts);
    return ret;
}

/* ------------------------------------------------------------------------ */
/* Open / close                                                              */

void dk_video_config_init(dk_video_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->output = DK_VIDEO_RGB24;
    cfg->frame_cache_bytes = (size_t)256 << 20;
    cfg->packet_cache_bytes = (size_t)64 << 20;
    cfg->max_decoders = 4;
    cfg->decoder_threads = 1;
}

static int pick_stream(AVFormatContext *fmt)
{
    int best = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
    if (best >= 0 && !(fmt->streams[best]->disposition & AV_DISPOSITION_ATTACHED_PIC)) return best;
    for (unsigned i = 0; i < fmt->nb_streams; i++) {
        const AVStream *st = fmt->streams[i];
        if (st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
            !(st->disposition & AV_DISPOSITION_ATTACHED_PIC))
            return (int)i;
    }
    return -1;
}

static int scan(dk_video *v)
{
    char e[AV_ERROR_MAX_STRING_SIZE];
    AVFormatContext *fmt;
    AVIOContext *io;
    mem_src *mem;
    int ret = fmt_open(v, &fmt, &io, &mem);
    if (ret < 0)
        return dk__error(av_status(ret), "dk_video_open", "%s: cannot open: %s", v->path,
                         av_why(ret, e, sizeof e));
    int si = pick_stream(fmt);
    if (si < 0 || fmt->streams[si]->codecpar->codec_id == AV_CODEC_ID_NONE ||
        fmt->streams[si]->codecpar->width <= 0) {
        avformat_find_stream_info(fmt, NULL);
        si = pick_stream(fmt);
    }
    if (si < 0) {
        fmt_close(&fmt, &io, &mem);
        return dk__error(DK_EINVALIDDATA, "dk_video_open", "%s: no video stream", v->path);
    }
    discard_others(fmt, si);
    int st = dk__vindex_scan(fmt, si, v->path, &v->ix);
    fmt_close(&fmt, &io, &mem);
    return st;
}

/* Decodes the first picture the stream yields to learn what the decoder
 * really outputs (pixel format, size, colour description). */
static void probe_first_frame(dk_video *v, vdec *d)
{
    dk__vindex *ix = &v->ix;
    int got = 0;
    int64_t lim = ix->n_pkts < PROBE_PACKETS ? ix->n_pkts : PROBE_PACKETS;
    for (int64_t p = 0; p < lim && !got; p++) {
        if (demux_get(v, d, p) < 0) break;
        for (int guard = 0; guard < 1000 && avcodec_send_packet(d->cc, d->pkt) == AVERROR(EAGAIN);
             guard++) {
            if (avcodec_receive_frame(d->cc, d->frame) >= 0) {
                got = 1;
                break;
            }
        }
        if (got) break;
        if (avcodec_receive_frame(d->cc, d->frame) >= 0) got = 1;
    }
    if (!got && avcodec_send_packet(d->cc, NULL) >= 0) {
        while (!got) {
            int ret = avcodec_receive_frame(d->cc, d->frame);
            if (ret >= 0) got = 1;
            else break;
        }
    }
    if (got) {
        const char *name = av_get_pix_fmt_name((enum AVPixelFormat)d->frame->format);
        if (name) snprintf(ix->pix_fmt, sizeof ix->pix_fmt, "%s", name);
        if (d->frame->width > 0 && d->frame->height > 0) {
            ix->width = d->frame->width;
            ix->height = d->frame->height;
        }
        ix->color_space = d->frame->colorspace;
        ix->color_range = d->frame->color_range;
        av_frame_unref(d->frame);
    }
    avcodec_flush_buffers(d->cc);
    ix->pix_fmt_id = av_get_pix_fmt(ix->pix_fmt);
    const AVPixFmtDescriptor *pd = av_pix_fmt_desc_get((enum AVPixelFormat)ix->pix_fmt_id);
    ix->bit_depth = pd ? pd->comp[0].depth : 0;
}

static int video_open(const char *path, const void *mem, size_t mem_size,
                      const dk_video_config *cfg_in, dk_video **out)
{
    static const char fn[] = "dk_video_open";
    dk_video_config cfg;
    if (cfg_in) cfg = *cfg_in;
    else dk_video_config_init(&cfg);
    if ((unsigned)cfg.output > DK_VIDEO_NV12)
        return dk__error(DK_EINVAL, fn, "%s: unknown output %d", path, (int)cfg.output);
    if (cfg.out_width < 0 || cfg.out_height < 0 || cfg.out_width > 16384 || cfg.out_height > 16384)
        return dk__error(DK_EINVAL, fn, "%s: output size %dx%d outside [0, 16384]", path,
                         cfg.out_width, cfg.out_height);
    if (cfg.output == DK_VIDEO_NATIVE && (cfg.out_width || cfg.out_height))
        return dk__error(DK_EINVAL, fn, "%s: DK_VIDEO_NATIVE cannot be resized", path);
    if (cfg.max_decoders < 1 || cfg.max_decoders > 64)
        return dk__error(DK_EINVAL, fn, "%s: max_decoders = %d outside [1, 64]", path,
                         cfg.max_decoders);
    if (cfg.decoder_threads < 0 || cfg.decoder_threads > 64)
        return dk__error(DK_EINVAL, fn, "%s: decoder_threads = %d outside [0, 64]", path,
                         cfg.decoder_threads);
    struct stat vst;
    memset(&vst, 0, sizeof vst);
    if (!mem && stat(path, &vst) != 0) {
        int err = errno;
        return dk__error(err == ENOENT || err == ENOTDIR ? DK_ENOENT : DK_EIO, fn, "%s: %s", path,
                         strerror(err));
    }
    if (!mem && !S_ISREG(vst.st_mode) && !S_ISBLK(vst.st_mode) && !S_ISCHR(vst.st_mode) &&
        !S_ISFIFO(vst.st_mode))
        return dk__error(DK_EINVAL, fn, "%s: not a file", path);

    dk_video *v = dk_calloc(1, sizeof *v);
    if (!v) return dk__error(DK_ENOMEM, fn, "%s: out of memory", path);
    v->path = dk_strdup(path);
    v->mem = mem;
    v->mem_size = mem_size;
    v->st = vst;
    v->cfg = cfg;
    v->cfg.index_path = NULL;
    v->decs = dk_calloc((size_t)cfg.max_decoders, sizeof *v->decs);
    if (!v->path || !v->decs) {
        dk_free(v->path);
        dk_free(v->decs);
        dk_free(v);
        return dk__error(DK_ENOMEM, fn, "%s: out of memory", path);
    }
    pthread_mutex_init(&v->mu, NULL);
    pthread_cond_init(&v->cv, NULL);
    int st = DK_OK;

    char *idx_path = NULL;
    if (!mem && cfg.index_path && *cfg.index_path) {
        if (!strcmp(cfg.index_path, "auto")) {
            size_t n = strlen(path) + 8;
            idx_path = dk_malloc(n);
            if (idx_path) snprintf(idx_path, n, "%s.dkidx", path);
        } else {
            idx_path = dk_strdup(cfg.index_path);
        }
        if (!idx_path) {
            st = dk__error(DK_ENOMEM, fn, "%s: out of memory", path);
            goto fail;
        }
        struct stat ist;
        if (stat(idx_path, &ist) == 0) {
            if (dk__vindex_load(idx_path, &vst, &v->ix) == DK_OK) {
                v->index_loaded = 1;
            } else {
                dk_log(DK_LOG_WARN, "%s; rebuilding the index", dk_errmsg());
                dk_errmsg_clear();
            }
        }
    }
    vdec *d0 = NULL;
    if (!v->index_loaded) {
        if ((st = scan(v)) != DK_OK) goto fail;
    }
    if ((st = dec_create(v, fn, &d0)) != DK_OK) {
        if (!v->index_loaded || st == DK_ENOMEM) goto fail;
        /* The index file matched size and mtime but not the content. */
        dk_log(DK_LOG_WARN, "%s; rebuilding the index", dk_errmsg());
        dk_errmsg_clear();
        dk__vindex_free(&v->ix);
        v->index_loaded = 0;
        if ((st = scan(v)) != DK_OK || (st = dec_create(v, fn, &d0)) != DK_OK) goto fail;
    }
    v->decs[v->n_decs++] = d0;
    if (!v->index_loaded) {
        probe_first_frame(v, d0);
        if (v->ix.pix_fmt_id == AV_PIX_FMT_NONE) {
            st = dk__error(DK_EINVALIDDATA, fn,
                           "%s: no picture could be decoded to learn the pixel format", path);
            goto fail;
        }
        if (idx_path && dk__vindex_save(idx_path, &vst, &v->ix) != DK_OK) {
            dk_log(DK_LOG_WARN, "%s (index not saved)", dk_errmsg());
            dk_errmsg_clear();
        }
    }
    if (v->ix.pix_fmt_id == AV_PIX_FMT_NONE || v->ix.width <= 0 || v->ix.height <= 0) {
        st = dk__error(DK_EINVALIDDATA, fn, "%s: unknown pixel format or size", path);
        goto fail;
    }
    dk__vindex *ix = &v->ix;
    v->out_w = cfg.out_width;
    v->out_h = cfg.out_height;
    if (v->out_w && !v->out_h) v->out_h = (int)((int64_t)ix->height * v->out_w / ix->width);
    if (v->out_h && !v->out_w) v->out_w = (int)((int64_t)ix->width * v->out_h / ix->height);
    if (!v->out_w || !v->out_h) {
        if (cfg.out_width || cfg.out_height) {
            v->out_w = v->out_w ? v->out_w : 1;
            v->out_h = v->out_h ? v->out_h : 1;
        } else {
            v->out_w = ix->width;
            v->out_h = ix->height;
        }
    }
    v->native_bytes = dk__conv_bytes(DK_VIDEO_NATIVE, ix->pix_fmt_id, ix->width, ix->height);
    v->frame_bytes = cfg.output == DK_VIDEO_NATIVE
                         ? v->native_bytes
                         : dk__conv_bytes(cfg.output, ix->pix_fmt_id, v->out_w, v->out_h);
    if (!v->native_bytes || !v->frame_bytes) {
        st = dk__error(DK_EUNSUPPORTED, fn, "%s: cannot represent pixel format %s", path,
                       ix->pix_fmt);
        goto fail;
    }
    if (cfg.frame_cache_bytes &&
        (st = dk__lru_create(cfg.frame_cache_bytes, DK__LRU_MAX_SPARES, &v->fcache)) != DK_OK)
        goto fail;
    if (cfg.packet_cache_bytes &&
        (st = dk__lru_create(cfg.packet_cache_bytes, 0, &v->pcache)) != DK_OK)
        goto fail;

    dk_video_info *in = &v->info;
    snprintf(in->codec, sizeof in->codec, "%s", ix->codec);
    snprintf(in->pix_fmt, sizeof in->pix_fmt, "%s", ix->pix_fmt);
    in->width = ix->width;
    in->height = ix->height;
    in->bit_depth = ix->bit_depth;
    in->n_frames = ix->n_frames;
    in->n_keyframes = ix->n_keyframes;
    in->max_gop = ix->max_gop;
    in->has_b_frames = ix->has_b_frames;
    in->open_gop = ix->open_gop;
    in->vfr = ix->vfr;
    in->avg_fps = ix->avg_fps;
    in->duration = ix->duration;
    in->colorspace_bt709 = dk__conv_is_bt709(ix->color_space);
    in->full_range = dk__conv_is_full_range(ix->color_range, ix->pix_fmt_id);
    memset(&v->stats, 0, sizeof v->stats);
    dk_free(idx_path);
    *out = v;
    return DK_OK;
fail:
    dk_free(idx_path);
    dk_video_close(v);
    return st;
}

int dk_video_open(const char *path, const dk_video_config *cfg, dk_video **out)
{
    if (out) *out = NULL;
    if (!path || !out) return dk__error(DK_EINVAL, __func__, "NULL %s", !path ? "path" : "out");
    return video_open(path, NULL, 0, cfg, out);
}

int dk__video_open_memory(const void *data, size_t size, const dk_video_config *cfg,
                          dk_video **out)
{
    if (out) *out = NULL;
    if (!data || !out || !size)
        return dk__error(DK_EINVAL, "dk_video_open", "NULL or empty memory source");
    return video_open("<memory>", data, size, cfg, out);
}

void dk_video_close(dk_video *v)
{
    if (!v) return;
    for (int i = 0; i < v->n_decs; i++) dec_free(v->decs[i]);
    dk_free(v->decs);
    dk__lru_destroy(v->fcache);
    dk__lru_destroy(v->pcache);
    dk__vindex_free(&v->ix);
    pthread_mutex_destroy(&v->mu);
    pthread_cond_destroy(&v->cv);
    dk_free(v->path);
    dk_free(v);
}

const char *dk_video_errmsg(const dk_video *v)
{
    return v ? v->errmsg : dk_errmsg();
}

const char *dk_video_path(const dk_video *v)
{
    return v ? v->path : NULL;
}

int dk__video_index_loaded(const dk_video *v)
{
    return v ? v->index_loaded : 0;
}

int dk__video_decoders(const dk_video *v)
{
    if (!v) return 0;
    dk_video *mv = (dk_video *)v;
    pthread_mutex_lock(&mv->mu);
    int n = v->n_decs;
    pthread_mutex_unlock(&mv->mu);
    return n;
}

void dk_video_trim(dk_video *v)
{
    if (!v) return;
    vdec *idle[64];
    int n_idle = 0;
    /* A pipe or device cannot be opened again at the same data: its decoders
       stay. */
    int reopenable = v->mem || S_ISREG(v->st.st_mode);
    pthread_mutex_lock(&v->mu);
    for (int i = 0; i < v->n_decs && reopenable;) {
        if (v->decs[i]->busy) {
            i++;
            continue;
        }
        idle[n_idle++] = v->decs[i];
        v->decs[i] = v->decs[--v->n_decs];
    }
    pthread_mutex_unlock(&v->mu);
    for (int i = 0; i < n_idle; i++) dec_free(idle[i]);
    dk__lru_clear(v->fcache);
    dk__lru_clear(v->pcache);
}

/* What the index's arrays take (as dk__vindex_finalize allocates them). */
static size_t index_bytes(const dk__vindex *ix)
{
    return (size_t)ix->n_pkts * (sizeof *ix->pkts + 3 * sizeof(int32_t)) + sizeof(int32_t) +
           (size_t)(ix->n_frames + ix->n_starts) * sizeof(int32_t);
}

void dk_video_get_memory(const dk_video *v, dk_video_memory *m)
{
    if (!m) return;
    memset(m, 0, sizeof *m);
    if (!v) return;
    m->index_bytes = sizeof *v + strlen(v->path) + 1 +
                     (size_t)v->cfg.max_decoders * sizeof *v->decs + index_bytes(&v->ix) +
                     dk__lru_overhead(v->fcache) + dk__lru_overhead(v->pcache);
    m->frame_cache_bytes = dk__lru_bytes(v->fcache);
    m->packet_cache_bytes = dk__lru_bytes(v->pcache);
    m->decoders = dk__video_decoders(v);
}

/* ------------------------------------------------------------------------ */
/* Queries                                                                   */

int dk_video_get_info(const dk_video *v, dk_video_info *info)
{
    if (!v || !info) return dk__error(DK_EINVAL, __func__, "NULL %s", !v ? "video" : "info");
    *info = v->info;
    return DK_OK;
}

int dk_video_frame_time(const dk_video *v, int64_t frame, int64_t *pts, double *seconds)
{
    if (!v) return dk__error(DK_EINVAL, __func__, "NULL video");
    if (frame < 0 || frame >= v->ix.n_frames)
        return dk__error(DK_ERANGE, __func__, "%s: frame %lld: out of range [0, %lld)", v->path,
                         (long long)frame, (long long)v->ix.n_frames);
    int64_t p = v->ix.pkts[v->ix.frame_pkt[frame]].pts;
    if (pts) *pts = p;
    if (seconds) *seconds = (double)p * av_q2d(v->ix.time_base);
    return DK_OK;
}

int dk_video_frame_cost(const dk_video *v, int64_t frame, int64_t *keyframe, int64_t *min_decodes)
{
    if (!v) return dk__error(DK_EINVAL, __func__, "NULL video");
    const dk__vindex *ix = &v->ix;
    if (frame < 0 || frame >= ix->n_frames)
        return dk__error(DK_ERANGE, __func__, "%s: frame %lld: out of range [0, %lld)", v->path,
                         (long long)frame, (long long)ix->n_frames);
    int64_t p = ix->frame_pkt[frame];
    int32_t s = ix->pkts[p].start;
    if (keyframe) *keyframe = (ix->pkts[s].flags & DK__PKT_RAP) ? ix->pkts[s].frame : -1;
    if (min_decodes) {
        int64_t c = 0;
        for (int64_t q = s; q <= p; q++) c += q == p || dk__vindex_action(ix, s, q) == DK__SEND;
        *min_decodes = c;
    }
    return DK_OK;
}

int dk_video_keyframes(const dk_video *v, int64_t *frames, int64_t *n)
{
    if (!v || !n || (*n > 0 && !frames))
        return dk__error(DK_EINVAL, __func__, "NULL %s", !v ? "video" : "argument");
    const dk__vindex *ix = &v->ix;
    int64_t cap = *n, k = 0;
    /* RAP pictures in display order (an edit-list pre-roll RAP has no id). */
    for (int64_t f = 0; f < ix->n_frames; f++) {
        if (!(ix->pkts[ix->frame_pkt[f]].flags & DK__PKT_RAP)) continue;
        if (k < cap) frames[k] = f;
        k++;
    }
    *n = k;
    if (k > cap)
        return dk__error(DK_ERANGE, __func__, "%s: %lld keyframes do not fit in %lld", v->path,
                         (long long)k, (long long)cap);
    return DK_OK;
}

void dk_video_get_stats(const dk_video *v, dk_video_stats *s)
{
    if (!s) return;
    memset(s, 0, sizeof *s);
    if (!v) return;
    const int64_t *src = (const int64_t *)&v->stats;
    int64_t *dst = (int64_t *)s;
    for (size_t i = 0; i < sizeof *s / sizeof(int64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

void dk_video_reset_stats(dk_video *v)
{
    if (!v) return;
    int64_t *p = (int64_t *)&v->stats;
    for (size_t i = 0; i < sizeof v->stats / sizeof(int64_t); i++)
        __atomic_store_n(&p[i], 0, __ATOMIC_RELAXED);
}

size_t dk_video_frame_bytes(const dk_video *v)
{
    return v ? v->frame_bytes : 0;
}

/* ------------------------------------------------------------------------ */
/* Decoding calls                                                            */

static int frames_into(const char *fn, dk_video *v, dk_pool *pool, const int64_t *frames,
                       int64_t n, uint8_t *dst, size_t stride, int *status)
{
    eitem *items = dk_malloc((size_t)(n ? n : 1) * sizeof *items);
    int *st = status ? status : dk_malloc((size_t)(n ? n : 1) * sizeof *st);
    if (!items || !st) {
        dk_free(items);
        if (!status) dk_free(st);
        return dk__error(DK_ENOMEM, fn, "%s: out of memory", v->path);
    }
    for (int64_t i = 0; i < n; i++) {
        items[i].vi = 0;
        items[i].frame = frames[i];
        items[i].dst = dst + (size_t)i * stride;
    }
    int ret = engine(fn, &v, 1, pool, items, n, st, 0);
    dk_free(items);
    if (!status) dk_free(st);
    return ret;
}

static void tensor_frames(dk_tensor *t, const dk_video *v, dk_buffer *b, uint8_t *data, int64_t n,
                          int single)
{
    memset(t, 0, sizeof *t);
    t->data = data;
    t->dtype = DK_U8;
    t->owner = b;
    int64_t shape[4];
    int nd = 0;
    if (!single) shape[nd++] = n;
    if (v->cfg.output == DK_VIDEO_RGB24) {
        shape[nd++] = v->out_h;
        shape[nd++] = v->out_w;
        shape[nd++] = 3;
    } else {
        shape[nd++] = (int64_t)v->frame_bytes;
    }
    t->ndim = nd;
    int64_t stride = 1;
    for (int i = nd - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->strides[i] = stride;
        stride *= shape[i];
    }
}

int dk_video_get_frames(dk_video *v, dk_pool *pool, const int64_t *frames, int64_t n,
                        dk_tensor *out, int *status)
{
    if (out) memset(out, 0, sizeof *out);
    if (!v || !out || n < 0 || (n > 0 && !frames))
        return dk__error(DK_EINVAL, __func__,
                         "invalid arguments (NULL video, frames or out, or n < 0)");
    size_t total;
    if (dk__mul_overflow((size_t)n, v->frame_bytes, &total))
        return dk__error(DK_ENOMEM, __func__, "%s: %lld frames do not fit in memory", v->path,
                         (long long)n);
    dk_buffer *b;
    if (dk_buffer_alloc(total, 0, &b) != DK_OK)
        return dk__error(DK_ENOMEM, __func__, "%s: cannot allocate %zu bytes for %lld frames",
                         v->path, total, (long long)n);
    int ret = frames_into(__func__, v, pool, frames, n, dk_buffer_data(b), v->frame_bytes, status);
    if (ret == DK_ENOMEM || ret == DK_EINVAL) {
        dk_buffer_unref(b);
        return ret;
    }
    tensor_frames(out, v, b, dk_buffer_data(b), n, 0);
    return ret;
}

int dk_video_get_frames_into(dk_video *v, dk_pool *pool, const int64_t *frames, int64_t n,
                             void *dst, size_t frame_stride, int *status)
{
    if (!v || n < 0 || (n > 0 && (!frames || !dst)))
        return dk__error(DK_EINVAL, __func__,
                         "invalid arguments (NULL video, frames or dst, or n < 0)");
    if (n > 1 && frame_stride < v->frame_bytes)
        return dk__error(DK_EINVAL, __func__, "%s: frame_stride %zu < frame bytes %zu", v->path,
                         frame_stride, v->frame_bytes);
    return frames_into(__func__, v, pool, frames, n, dst, frame_stride, status);
}

int dk_video_get_frames_multi(dk_video *const *videos, int n_videos, dk_pool *pool,
                              const dk_video_request *reqs, int64_t n, dk_tensor *out, int *status)
{
    static const char fn[] = "dk_video_get_frames_multi";
    if (out && n > 0) memset(out, 0, (size_t)n * sizeof *out);
    if (!videos || n_videos <= 0 || n < 0 || (n > 0 && (!reqs || !out)))
        return dk__error(DK_EINVAL, fn, "invalid arguments");
    for (int j = 0; j < n_videos; j++)
        if (!videos[j]) return dk__error(DK_EINVAL, fn, "videos[%d] is NULL", j);
    for (int64_t i = 0; i < n; i++)
        if (reqs[i].video < 0 || reqs[i].video >= n_videos)
            return dk__error(DK_EINVAL, fn, "reqs[%lld].video = %d outside [0, %d)", (long long)i,
                             (int)reqs[i].video, n_videos);
    int64_t *count = dk_calloc((size_t)n_videos, sizeof *count);
    dk_buffer **bufs = dk_calloc((size_t)n_videos, sizeof *bufs);
    eitem *items = dk_malloc((size_t)(n ? n : 1) * sizeof *items);
    int *st = status ? status : dk_malloc((size_t)(n ? n : 1) * sizeof *st);
    int ret = DK_OK;
    if (!count || !bufs || !items || !st) {
        ret = dk__error(DK_ENOMEM, fn, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < n; i++) count[reqs[i].video]++;
    for (int j = 0; j < n_videos; j++) {
        size_t total;
        if (!count[j]) continue;
        if (dk__mul_overflow((size_t)count[j], videos[j]->frame_bytes, &total) ||
            dk_buffer_alloc(total, 0, &bufs[j]) != DK_OK) {
            ret = dk__error(DK_ENOMEM, fn, "%s: cannot allocate %lld frames", videos[j]->path,
                            (long long)count[j]);
            goto done;
        }
        count[j] = 0;
    }
    for (int64_t i = 0; i < n; i++) {
        int j = reqs[i].video;
        items[i].vi = j;
        items[i].frame = reqs[i].frame;
        uint8_t *base = dk_buffer_data(bufs[j]);
        items[i].dst = base + (size_t)count[j]++ * videos[j]->frame_bytes;
    }
    ret = engine(fn, videos, n_videos, pool, items, n, st, 0);
    if (ret == DK_ENOMEM || ret == DK_EINVAL) goto done;
    for (int64_t i = 0; i < n; i++) {
        int j = reqs[i].video;
        tensor_frames(&out[i], videos[j], dk_buffer_ref(bufs[j]), items[i].dst, 1, 1);
    }
done:
    if (bufs)
        for (int j = 0; j < n_videos; j++) dk_buffer_unref(bufs[j]);
    dk_free(bufs);
    dk_free(count);
    dk_free(items);
    if (!status) dk_free(st);
    return ret;
}

int dk_video_frame_md5(dk_video *v, int64_t frame, char md5_hex[33])
{
    if (!v || !md5_hex) return dk__error(DK_EINVAL, __func__, "NULL %s", !v ? "video" : "md5_hex");
    md5_hex[0] = '\0';
    uint8_t *buf = dk_malloc(v->native_bytes);
    if (!buf) return dk__error(DK_ENOMEM, __func__, "%s: out of memory", v->path);
    eitem it = {0, frame, buf};
    int st = DK_OK;
    int ret = engine(__func__, &v, 1, NULL, &it, 1, &st, 1);
    if (ret == DK_OK) dk__md5_hex(buf, v->native_bytes, md5_hex);
    dk_free(buf);
    return ret;
}

/* ------------------------------------------------------------------------ */
/* FFmpeg's log level                                                        */

static const struct {
    const char *name;
    int level;
} ff_levels[] = {
    {"quiet", AV_LOG_QUIET}, {"panic", AV_LOG_PANIC},     {"fatal", AV_LOG_FATAL},
    {"error", AV_LOG_ERROR}, {"warning", AV_LOG_WARNING}, {"info", AV_LOG_INFO},
    {"verbose", AV_LOG_VERBOSE}, {"debug", AV_LOG_DEBUG}, {"trace", AV_LOG_TRACE},
};

int dk_video_set_ffmpeg_log_level(const char *level)
{
    for (size_t i = 0; level && i < sizeof ff_levels / sizeof ff_levels[0]; i++)
        if (!strcmp(level, ff_levels[i].name)) {
            av_log_set_level(ff_levels[i].level);
            return DK_OK;
        }
    return dk__error(DK_EINVAL, __func__,
                     "unknown level \"%s\" (quiet, panic, fatal, error, warning, info, verbose, "
                     "debug, trace)",
                     level ? level : "(null)");
}

const char *dk_video_ffmpeg_log_level(void)
{
    int cur = av_log_get_level();
    const char *name = ff_levels[0].name;
    for (size_t i = 0; i < sizeof ff_levels / sizeof ff_levels[0]; i++)
        if (ff_levels[i].level <= cur) name = ff_levels[i].name;
    return name;
}
