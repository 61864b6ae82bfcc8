/*
 * The frame index: one pass of av_read_frame over the file, classifying every
 * packet of the video stream from its NAL headers, then display order, decode
 * start points and lookups derived from that.
 *
 * Classification (H.264 and HEVC; other codecs fall back to the container's
 * keyframe flag, and every packet counts as a reference unless the codec is
 * intra-only):
 *   - random-access point (RAP): H.264 IDR (nal_unit_type 5), or an I slice
 *     carrying a recovery point SEI (payload 6) with recovery_frame_cnt 0, as
 *     x264 --open-gop writes; HEVC IRAP types 16..21 (BLA, IDR, CRA). CRA, BLA
 *     and recovery points are "open": their leading pictures (decoded after,
 *     displayed before) may reference pictures of the previous GOP.
 *   - reference: H.264 nal_ref_idc != 0 on a slice; HEVC anything but a
 *     sub-layer non-reference type (TRAIL_N, TSA_N, STSA_N, RADL_N, RASL_N,
 *     RSV_VCL_N10/12/14) of the highest temporal sub-layer present (a lower
 *     sub-layer's _N picture may still be referenced by higher sub-layers).
 *     A packet without a recognisable slice counts as a reference (it is
 *     always sent).
 * Both AVCC/HVCC length-prefixed packets (NAL length size from extradata) and
 * Annex B start codes are read; an AVCC packet whose lengths do not add up is
 * retried as Annex B.
 *
 * Display order: packets flagged AV_PKT_FLAG_DISCARD (edit-list pre-roll) are
 * decoded when needed but never displayed. A packet without pts takes its dts
 * (exact for streams without reordering; for a reordering stream without pts
 * the frames are numbered in decode order, which is the best the container
 * says). A packet with neither is not displayed. Displayed packets sorted by
 * (pts, decode index) get frame ids 0..n-1.
 *
 * Decode start of packet p: the last start point r <= p in decode order with
 * pts(r) <= pts(p) (so a leading picture of an open RAP starts at the previous
 * RAP), except HEVC RADL pictures, which start at their own IRAP. Packet 0 is
 * always a start point. A leading picture of the first RAP has no start: it is
 * undecodable (ffmpeg drops it too) and not displayed.
 *
 * Index file: a 64-byte header (magic, version, video size, mtime in ns,
 * payload size, FNV-1a 64 of the payload), a 128-byte stream record and 40
 * bytes per packet, all little-endian fixed-width. Loading checks every size
 * against the file size before trusting a count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavutil/pixdesc.h>

#include "video/video_impl.h"

/* ------------------------------------------------------------------------ */
/* NAL parsing                                                               */

/* Bytes of an RBSP: emulation prevention (00 00 03) removed on the fly. */
typedef struct rbsp_rd {
    const uint8_t *p, *end;
    int zeros;
} rbsp_rd;

static int rbsp_byte(rbsp_rd *r)
{
    if (r->p >= r->end) return -1;
    uint8_t b = *r->p++;
    if (r->zeros >= 2 && b == 3) {
        r->zeros = 0;
        if (r->p >= r->end) return -1;
        b = *r->p++;
    }
    r->zeros = b == 0 ? r->zeros + 1 : 0;
    return b;
}

typedef struct bit_rd {
    rbsp_rd r;
    unsigned cur;
    int left, err;
} bit_rd;

static unsigned read_bit(bit_rd *b)
{
    if (!b->left) {
        int c = rbsp_byte(&b->r);
        if (c < 0) {
            b->err = 1;
            return 0;
        }
        b->cur = (unsigned)c;
        b->left = 8;
    }
    b->left--;
    return (b->cur >> b->left) & 1u;
}

/* Exp-Golomb ue(v), at most 32 bits. */
static uint32_t read_ue(bit_rd *b)
{
    int lz = 0;
    while (!read_bit(b)) {
        if (b->err || ++lz > 31) {
            b->err = 1;
            return 0;
        }
    }
    uint32_t v = 0;
    for (int i = 0; i < lz; i++) v = (v << 1) | read_bit(b);
    return (uint32_t)((1ull << lz) - 1 + v);
}

typedef struct nal_class {
    int vcl, ref, rap, open, radl, slnr, tid;
    int anomaly;                 /* malformed: classify conservatively */
    int damaged;                 /* bytes no encoder can produce */
    int idr, recovery, islice, slice_seen;
} nal_class;

/* Emulation prevention guarantees that 00 00 00, 00 00 01 and 00 00 02 never
 * occur inside a NAL unit and that 00 00 03 is followed by a byte <= 3. Zeroed
 * or overwritten disk blocks break this long before a decoder notices
 * anything (CABAC decodes a run of zeros without complaint), so such a
 * packet is marked corrupt. Zeros that run to the end of the unit are
 * trailing padding and allowed. */
static int nal_damaged(const uint8_t *d, size_t n)
{
    const uint8_t *p = d, *end = d + n;
    while (end - p >= 3) {
        const uint8_t *z = memchr(p, 0, (size_t)(end - p - 2));
        if (!z) return 0;
        if (z[1] != 0) {
            p = z + 1;
            continue;
        }
        if (z[2] <= 2) {
            for (const uint8_t *q = z; q < end; q++)
                if (*q) return 1;
            return 0;
        }
        if (z[2] == 3 && end - z > 3 && z[3] > 3) return 1;
        p = z + 2;
    }
    return 0;
}

/* H.264 SEI: is there a recovery point with recovery_frame_cnt == 0? */
static void h264_sei(const uint8_t *d, size_t n, nal_class *c)
{
    rbsp_rd r = {d, d + n, 0};
    for (int msgs = 0; msgs < 64; msgs++) {
        if (r.end - r.p < 2) return;
        uint32_t type = 0, size = 0;
        int b;
        while ((b = rbsp_byte(&r)) == 0xFF) type += 255;
        if (b < 0) return;
        type += (uint32_t)b;
        while ((b = rbsp_byte(&r)) == 0xFF) size += 255;
        if (b < 0) return;
        size += (uint32_t)b;
        if (size > (uint32_t)n) return;
        if (type == 6) {
            uint8_t buf[16];
            uint32_t k = size < sizeof buf ? size : (uint32_t)sizeof buf;
            for (uint32_t i = 0; i < k; i++) {
                if ((b = rbsp_byte(&r)) < 0) return;
                buf[i] = (uint8_t)b;
            }
            bit_rd br = {{buf, buf + k, 0}, 0, 0, 0};
            uint32_t cnt = read_ue(&br);
            if (!br.err && cnt == 0) c->recovery = 1;
            size -= k;
        }
        for (uint32_t i = 0; i < size; i++)
            if (rbsp_byte(&r) < 0) return;
    }
}

static void h264_nal(const uint8_t *d, size_t n, nal_class *c)
{
    if (n < 1 || (d[0] & 0x80)) {
        c->anomaly = c->damaged = 1;
        return;
    }
    if (nal_damaged(d, n)) c->damaged = 1;
    int type = d[0] & 31, ref_idc = (d[0] >> 5) & 3;
    if (type >= 1 && type <= 5) {
        c->vcl = 1;
        if (ref_idc) c->ref = 1;
        if (type == 5) c->idr = 1;
        if (!c->slice_seen && (type == 1 || type == 5 || type == 2)) {
            c->slice_seen = 1;
            bit_rd b = {{d + 1, d + n, 0}, 0, 0, 0};
            (void)read_ue(&b);                 /* first_mb_in_slice */
            uint32_t st = read_ue(&b);         /* slice_type */
            if (!b.err && (st % 5 == 2 || st % 5 == 4)) c->islice = 1;
        }
    } else if (type == 6) {
        h264_sei(d + 1, n - 1, c);
    }
}

static void hevc_nal(const uint8_t *d, size_t n, nal_class *c)
{
    if (n < 2 || (d[0] & 0x80)) {
        c->anomaly = c->damaged = 1;
        return;
    }
    if (nal_damaged(d, n)) c->damaged = 1;
    int type = (d[0] >> 1) & 63;
    int layer = ((d[0] & 1) << 5) | (d[1] >> 3);
    int tid = (d[1] & 7) - 1;
    if (tid < 0) c->anomaly = 1;
    if (layer != 0 || tid < 0 || type > 31) return;
    if (!c->vcl) {
        c->vcl = 1;
        c->tid = tid;
        c->slnr = type <= 14 && !(type & 1);
        if (type >= 16 && type <= 21) {
            c->rap = 1;
            c->open = !(type == 19 || type == 20);
        }
        if (type == 6 || type == 7) c->radl = 1;
    } else if (!(type <= 14 && !(type & 1))) {
        c->slnr = 0;   /* a packet with mixed types is treated as a reference */
    }
}

typedef void (*nal_fn)(const uint8_t *d, size_t n, nal_class *c);

static int starts_with_start_code(const uint8_t *d, size_t n)
{
    return (n >= 3 && d[0] == 0 && d[1] == 0 && d[2] == 1) ||
           (n >= 4 && d[0] == 0 && d[1] == 0 && d[2] == 0 && d[3] == 1);
}

/* Length-prefixed NAL units. Returns 1 when the lengths tile the packet
 * exactly; otherwise the packet is marked anomalous and damaged, and 0 is
 * returned (an Annex B packet in an AVCC stream is retried by the caller).
 * (A length of 256..511 reads as a 00 00 01 start code: the length
 * interpretation has to be tried first.) */
static int walk_avcc(const uint8_t *d, size_t n, int len_size, nal_fn fn, nal_class *c)
{
    size_t off = 0;
    while (off < n) {
        if (n - off < (size_t)len_size) break;
        size_t len = 0;
        for (int i = 0; i < len_size; i++) len = (len << 8) | d[off + (size_t)i];
        off += (size_t)len_size;
        if (len > n - off || len == 0) break;
        fn(d + off, len, c);
        off += len;
    }
    if (off == n) return 1;
    c->anomaly = c->damaged = 1;
    return 0;
}

static void walk_annexb(const uint8_t *d, size_t n, nal_fn fn, nal_class *c)
{
    size_t i = 0, start = SIZE_MAX;
    while (i + 3 <= n) {
        if (d[i] == 0 && d[i + 1] == 0 && d[i + 2] == 1) {
            if (start != SIZE_MAX) {
                size_t end = i;
                while (end > start && d[end - 1] == 0) end--;
                fn(d + start, end - start, c);
            }
            i += 3;
            start = i;
            continue;
        }
        /* Skip ahead: a start code needs d[i+2] <= 1. */
        i += d[i + 2] > 1 ? 3 : 1;
    }
    if (start != SIZE_MAX && start < n) fn(d + start, n - start, c);
}

/* NAL length size from avcC / hvcC extradata; 0 for Annex B or unknown. */
static int nal_length_size(enum AVCodecID id, const uint8_t *x, int n)
{
    if (!x || n < 7) return 0;
    if (x[0] == 0 && x[1] == 0 && (x[2] == 1 || (x[2] == 0 && x[3] == 1))) return 0;
    if (id == AV_CODEC_ID_H264 && x[0] == 1) return (x[4] & 3) + 1;
    if (id == AV_CODEC_ID_HEVC && n >= 23 && x[0] == 1) return (x[21] & 3) + 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Scan                                                                      */

typedef struct scan_state {
    enum AVCodecID id;
    int len_size;
    int intra_only;
    int max_tid;
    uint8_t *tid;          /* per packet (HEVC) */
    uint8_t *slnr;
    size_t cap;
} scan_state;

static uint32_t classify(scan_state *s, const AVPacket *pkt, int64_t i)
{
    uint32_t f = 0;
    if (pkt->flags & AV_PKT_FLAG_KEY) f |= DK__PKT_KEY;
    if (pkt->flags & AV_PKT_FLAG_DISCARD) f |= DK__PKT_DISCARD;
    if (pkt->flags & AV_PKT_FLAG_CORRUPT) f |= DK__PKT_CORRUPT;
    if (s->id != AV_CODEC_ID_H264 && s->id != AV_CODEC_ID_HEVC) {
        if (s->intra_only) return f | DK__PKT_RAP;
        f |= DK__PKT_REF;
        if (pkt->flags & AV_PKT_FLAG_KEY) f |= DK__PKT_RAP;
        return f;
    }
    nal_class c;
    memset(&c, 0, sizeof c);
    nal_fn fn = s->id == AV_CODEC_ID_H264 ? h264_nal : hevc_nal;
    const uint8_t *d = pkt->data;
    size_t n = (size_t)pkt->size;
    if (!s->len_size || !walk_avcc(d, n, s->len_size, fn, &c)) {
        if (starts_with_start_code(d, n)) {
            memset(&c, 0, sizeof c);
            walk_annexb(d, n, fn, &c);
        } else {
            c.anomaly = c.damaged = 1;
        }
    }
    if (c.damaged) f |= DK__PKT_CORRUPT;
    /* A malformed packet is never skipped (its decode errors must be seen)
       and never a place to start decoding. */
    if (!c.vcl) c.anomaly = 1;
    if (s->id == AV_CODEC_ID_H264) {
        c.rap = !c.anomaly && (c.idr || (c.recovery && c.islice));
        c.open = c.rap && !c.idr;
        if (c.ref || c.anomaly) f |= DK__PKT_REF;
    } else {
        if (c.anomaly) c.rap = c.open = c.radl = c.slnr = 0;
        s->tid[i] = (uint8_t)(c.vcl ? c.tid : 0);
        s->slnr[i] = (uint8_t)(c.vcl && c.slnr);
        if (c.vcl && !c.anomaly && c.tid > s->max_tid) s->max_tid = c.tid;
        if (c.radl) f |= DK__PKT_RADL;
    }
    if (c.rap) f |= DK__PKT_RAP;
    if (c.open) f |= DK__PKT_OPEN;
    return f;
}

static int grow(dk__vindex *ix, scan_state *s, size_t *cap)
{
    size_t nc = *cap ? *cap * 2 : 1024;
    dk__vpkt *np = dk_realloc(ix->pkts, nc * sizeof *np);
    if (!np) return -1;
    ix->pkts = np;
    if (s->id == AV_CODEC_ID_HEVC) {
        uint8_t *t = dk_realloc(s->tid, nc), *l;
        if (!t) return -1;
        s->tid = t;
        l = dk_realloc(s->slnr, nc);
        if (!l) return -1;
        s->slnr = l;
    }
    *cap = nc;
    return 0;
}

int dk__vindex_scan(AVFormatContext *fmt, int si, const char *name, dk__vindex *ix)
{
    AVStream *st = fmt->streams[si];
    const AVCodecParameters *par = st->codecpar;
    scan_state s;
    memset(&s, 0, sizeof s);
    s.id = par->codec_id;
    s.len_size = nal_length_size(par->codec_id, par->extradata, par->extradata_size);
    const AVCodecDescriptor *desc = avcodec_descriptor_get(par->codec_id);
    s.intra_only = desc && (desc->props & AV_CODEC_PROP_INTRA_ONLY);

    ix->stream_index = si;
    snprintf(ix->codec, sizeof ix->codec, "%s", desc ? desc->name : "unknown");
    const char *pf = av_get_pix_fmt_name((enum AVPixelFormat)par->format);
    snprintf(ix->pix_fmt, sizeof ix->pix_fmt, "%s", pf ? pf : "none");
    ix->width = par->width;
    ix->height = par->height;
    ix->color_space = par->color_space;
    ix->color_range = par->color_range;
    ix->time_base = st->time_base;
    ix->avg_frame_rate = st->avg_frame_rate;

    /* Real packets hold at least one byte each; a container claiming more
       packets than the file has bytes (overlapping samples) is refused
       before the index outgrows memory. */
    int64_t file_size = fmt->pb ? avio_size(fmt->pb) : -1;
    int64_t max_pkts = file_size > 0 ? file_size + 1024 : INT32_MAX - 1;
    if (max_pkts > INT32_MAX - 1) max_pkts = INT32_MAX - 1;
    AVPacket *pkt = av_packet_alloc();
    if (!pkt) return dk__error(DK_ENOMEM, "dk_video_open", "%s: out of memory", name);
    size_t cap = 0;
    int st_ret = DK_OK, eagain = 0;
    for (;;) {
        int ret = av_read_frame(fmt, pkt);
        if (ret == AVERROR(EAGAIN) && ++eagain < 1000) continue;
        if (ret < 0) {
            if (ret != AVERROR_EOF) {
                char e[AV_ERROR_MAX_STRING_SIZE];
                av_strerror(ret, e, sizeof e);
                dk_log(DK_LOG_WARN, "dk_video_open(): %s: reading stopped after %lld packets: %s",
                       name, (long long)ix->n_pkts, e);
            }
            break;
        }
        eagain = 0;
        if (pkt->stream_index != si || pkt->size <= 0) {
            av_packet_unref(pkt);
            continue;
        }
        if (ix->n_pkts >= max_pkts) {
            av_packet_unref(pkt);
            st_ret = dk__error(DK_EINVALIDDATA, "dk_video_open",
                               "%s: more than %lld packets in a file of %lld bytes", name,
                               (long long)max_pkts, (long long)file_size);
            break;
        }
        if ((size_t)ix->n_pkts == cap && grow(ix, &s, &cap)) {
            av_packet_unref(pkt);
            st_ret = dk__error(DK_ENOMEM, "dk_video_open", "%s: out of memory at packet %lld",
                               name, (long long)ix->n_pkts);
            break;
        }
        dk__vpkt *k = &ix->pkts[ix->n_pkts];
        memset(k, 0, sizeof *k);
        k->pts = pkt->pts;
        k->dts = pkt->dts;
        k->pos = pkt->pos;
        k->duration = pkt->duration;
        k->size = pkt->size;
        k->flags = classify(&s, pkt, ix->n_pkts);
        ix->n_pkts++;
        av_packet_unref(pkt);
    }
    av_packet_free(&pkt);
    if (st_ret == DK_OK && s.id == AV_CODEC_ID_HEVC) {
        for (int64_t i = 0; i < ix->n_pkts; i++)
            if (!(s.slnr[i] && s.tid[i] == s.max_tid)) ix->pkts[i].flags |= DK__PKT_REF;
    }
    dk_free(s.tid);
    dk_free(s.slnr);
    if (st_ret != DK_OK) return st_ret;
    if (ix->n_pkts == 0)
        return dk__error(DK_EINVALIDDATA, "dk_video_open", "%s: the video stream has no packets",
                         name);
    /* The table grew by doubling: give back the slack (the index may be kept
       for a long time, see dk_video_trim). */
    dk__vpkt *fit = dk_realloc(ix->pkts, (size_t)ix->n_pkts * sizeof *fit);
    if (fit) ix->pkts = fit;
    return dk__vindex_finalize(ix, name);
}

/* ------------------------------------------------------------------------ */
/* Derived data                                                              */

static int cmp_pts(const void *a, const void *b, void *ctx)
{
    const dk__vpkt *p = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (p[i].pts != p[j].pts) return p[i].pts < p[j].pts ? -1 : 1;
    return (i > j) - (i < j);
}

static int cmp_pos(const void *a, const void *b, void *ctx)
{
    const dk__vpkt *p = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (p[i].pos != p[j].pos) return p[i].pos < p[j].pos ? -1 : 1;
    return (i > j) - (i < j);
}

static void free_derived(dk__vindex *ix)
{
    dk_free(ix->frame_pkt);
    dk_free(ix->starts);
    dk_free(ix->by_pts);
    dk_free(ix->by_pos);
    dk_free(ix->ref_prefix);
    ix->frame_pkt = ix->starts = ix->by_pts = ix->by_pos = ix->ref_prefix = NULL;
}

/* Decode start of packet p (see the file comment). At most `limit` start
 * points are walked back; past that, decoding from the stream start is
 * always valid. */
static int32_t find_start(const dk__vindex *ix, int64_t p)
{
    const dk__vpkt *k = &ix->pkts[p];
    int64_t s = k->seg;
    if (k->pts == AV_NOPTS_VALUE) return ix->starts[s];
    if ((k->flags & DK__PKT_RADL) && (ix->pkts[ix->starts[s]].flags & DK__PKT_RAP))
        return ix->starts[s];
    for (int walked = 0; s >= 0 && walked < 64; s--, walked++) {
        const dk__vpkt *r = &ix->pkts[ix->starts[s]];
        if (r->pts == AV_NOPTS_VALUE || r->pts <= k->pts) return ix->starts[s];
    }
    if (s < 0 && (ix->pkts[0].flags & DK__PKT_RAP)) return -1;
    return 0;
}

int dk__vindex_finalize(dk__vindex *ix, const char *name)
{
    free_derived(ix);
    int64_t n = ix->n_pkts;
    dk__vpkt *P = ix->pkts;
    if (n <= 0) return dk__error(DK_EINVALIDDATA, "dk_video_open", "%s: no packets", name);
    ix->codec_id = AV_CODEC_ID_NONE;
    const AVCodecDescriptor *desc = avcodec_descriptor_get_by_name(ix->codec);
    if (desc) ix->codec_id = desc->id;
    ix->pix_fmt_id = av_get_pix_fmt(ix->pix_fmt);
    const AVPixFmtDescriptor *pd = av_pix_fmt_desc_get((enum AVPixelFormat)ix->pix_fmt_id);
    ix->bit_depth = pd ? pd->comp[0].depth : 0;

    for (int64_t i = 0; i < n; i++) {
        if (P[i].pts == AV_NOPTS_VALUE && P[i].dts != AV_NOPTS_VALUE) {
            P[i].pts = P[i].dts;
            P[i].flags |= DK__PKT_NOPTS;
        }
    }

    /* Start points: packet 0 and every RAP. */
    int64_t ns = 1;
    for (int64_t i = 1; i < n; i++) ns += (P[i].flags & DK__PKT_RAP) != 0;
    ix->starts = dk_malloc((size_t)ns * sizeof *ix->starts);
    ix->by_pts = dk_malloc((size_t)n * sizeof *ix->by_pts);
    ix->by_pos = dk_malloc((size_t)n * sizeof *ix->by_pos);
    ix->ref_prefix = dk_malloc((size_t)(n + 1) * sizeof *ix->ref_prefix);
    if (!ix->starts || !ix->by_pts || !ix->by_pos || !ix->ref_prefix) goto oom;
    ix->n_starts = 0;
    ix->n_keyframes = 0;
    ix->open_gop = 0;
    ix->ref_prefix[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i == 0 || (P[i].flags & DK__PKT_RAP)) ix->starts[ix->n_starts++] = (int32_t)i;
        if (P[i].flags & DK__PKT_RAP) {
            ix->n_keyframes++;
            if (P[i].flags & DK__PKT_OPEN) ix->open_gop = 1;
        }
        P[i].seg = (int32_t)(ix->n_starts - 1);
        ix->ref_prefix[i + 1] = ix->ref_prefix[i] + ((P[i].flags & DK__PKT_REF) != 0);
    }
    for (int64_t i = 0; i < n; i++) P[i].start = find_start(ix, i);

    /* Display order. */
    int64_t nd = 0, np = 0;
    for (int64_t i = 0; i < n; i++) {
        P[i].frame = -1;
        if (P[i].pts == AV_NOPTS_VALUE) continue;
        ix->by_pts[np++] = (int32_t)i;
    }
    ix->n_by_pts = np;
    qsort_r(ix->by_pts, (size_t)np, sizeof *ix->by_pts, cmp_pts, P);
    for (int64_t j = 0; j < np; j++) {
        int32_t i = ix->by_pts[j];
        if ((P[i].flags & DK__PKT_DISCARD) || P[i].start < 0) continue;
        P[i].frame = nd++;
    }
    if (nd == 0) {
        free_derived(ix);
        return dk__error(DK_EINVALIDDATA, "dk_video_open",
                         "%s: no displayable frame among %lld packets", name, (long long)n);
    }
    ix->n_frames = nd;
    ix->frame_pkt = dk_malloc((size_t)nd * sizeof *ix->frame_pkt);
    if (!ix->frame_pkt) goto oom;
    for (int64_t i = 0; i < n; i++)
        if (P[i].frame >= 0) ix->frame_pkt[P[i].frame] = (int32_t)i;

    for (int64_t i = 0; i < n; i++) ix->by_pos[i] = (int32_t)i;
    qsort_r(ix->by_pos, (size_t)n, sizeof *ix->by_pos, cmp_pos, P);
    ix->pos_unique = 1;
    for (int64_t j = 0; j < n; j++) {
        const dk__vpkt *k = &P[ix->by_pos[j]];
        if (k->pos < 0 || (j > 0 && P[ix->by_pos[j - 1]].pos == k->pos)) {
            ix->pos_unique = 0;
            break;
        }
    }

    /* Summary. */
    int64_t j = 0, depth = 0, gop = 0, max_gop = 0;
    int32_t seg = -1;
    for (int64_t i = 0; i < n; i++) {
        if (P[i].seg != seg) {
            seg = P[i].seg;
            gop = 0;
        }
        if (P[i].frame < 0) continue;
        if (j - P[i].frame > depth) depth = j - P[i].frame;
        j++;
        if (++gop > max_gop) max_gop = gop;
    }
    ix->has_b_frames = (int)(depth > 1000000 ? 1000000 : depth);
    ix->max_gop = (int)(max_gop > INT32_MAX ? INT32_MAX : max_gop);
    int64_t dmin = INT64_MAX, dmax = 0;
    for (int64_t f = 1; f < nd; f++) {
        int64_t d = P[ix->frame_pkt[f]].pts - P[ix->frame_pkt[f - 1]].pts;
        if (d < dmin) dmin = d;
        if (d > dmax) dmax = d;
    }
    ix->vfr = nd >= 3 && dmax - dmin > 1;
    double tb = ix->time_base.den > 0 ? av_q2d(ix->time_base) : 0.0;
    const dk__vpkt *last = &P[ix->frame_pkt[nd - 1]];
    int64_t last_dur = last->duration > 0 ? last->duration : (nd >= 2 ? dmin : 0);
    double span = (double)(last->pts - P[ix->frame_pkt[0]].pts) + (double)last_dur;
    ix->duration = span * tb;
    if (ix->duration > 0)
        ix->avg_fps = (double)nd / ix->duration;
    else
        ix->avg_fps = ix->avg_frame_rate.den > 0 ? av_q2d(ix->avg_frame_rate) : 0.0;
    return DK_OK;
oom:
    free_derived(ix);
    return dk__error(DK_ENOMEM, "dk_video_open", "%s: out of memory for the index of %lld packets",
                     name, (long long)n);
}

void dk__vindex_free(dk__vindex *ix)
{
    if (!ix) return;
    free_derived(ix);
    dk_free(ix->pkts);
    memset(ix, 0, sizeof *ix);
}

int64_t dk__vindex_find_pts(const dk__vindex *ix, int64_t pts, int64_t lo, int64_t hi,
                            const uint8_t *sent, const uint8_t *taken)
{
    int64_t a = 0, b = ix->n_by_pts;
    while (a < b) {
        int64_t m = a + (b - a) / 2;
        if (ix->pkts[ix->by_pts[m]].pts < pts) a = m + 1;
        else b = m;
    }
    for (; a < ix->n_by_pts && ix->pkts[ix->by_pts[a]].pts == pts; a++) {
        int64_t i = ix->by_pts[a];
        if (i < lo || i > hi) continue;
        if (sent && !(sent[(i - lo) >> 3] >> ((i - lo) & 7) & 1)) continue;
        if (taken && (taken[(i - lo) >> 3] >> ((i - lo) & 7) & 1)) continue;
        return i;
    }
    return -1;
}

int64_t dk__vindex_same_pts(const dk__vindex *ix, int64_t frame, int64_t *out, int64_t cap)
{
    int64_t pts = ix->pkts[ix->frame_pkt[frame]].pts;
    int64_t a = 0, b = ix->n_by_pts, n = 0;
    while (a < b) {
        int64_t m = a + (b - a) / 2;
        if (ix->pkts[ix->by_pts[m]].pts < pts) a = m + 1;
        else b = m;
    }
    for (; a < ix->n_by_pts && ix->pkts[ix->by_pts[a]].pts == pts; a++) {
        int64_t f = ix->pkts[ix->by_pts[a]].frame;
        if (f < 0 || f == frame) continue;
        if (n < cap) out[n] = f;
        n++;
    }
    return n;
}

int64_t dk__vindex_find_pos(const dk__vindex *ix, int64_t pos)
{
    if (!ix->pos_unique) return -1;
    int64_t a = 0, b = ix->n_pkts;
    while (a < b) {
        int64_t m = a + (b - a) / 2;
        if (ix->pkts[ix->by_pos[m]].pos < pos) a = m + 1;
        else b = m;
    }
    if (a < ix->n_pkts && ix->pkts[ix->by_pos[a]].pos == pos) return ix->by_pos[a];
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Index file                                                                */

#define IDX_MAGIC "DKVIDX\r\n"
#define IDX_VERSION 1u
#define IDX_HEADER 64
#define IDX_STREAM 128
#define IDX_RECORD 40

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

int dk__vindex_save(const char *idx_path, const struct stat *vst, const dk__vindex *ix)
{
    size_t payload = IDX_STREAM, total;
    size_t recs;
    if (dk__mul_overflow((size_t)ix->n_pkts, IDX_RECORD, &recs) ||
        dk__add_overflow(payload, recs, &payload) || dk__add_overflow(payload, IDX_HEADER, &total))
        return dk__error(DK_EOVERFLOW, __func__, "%s: index too large", idx_path);
    uint8_t *buf = dk_calloc(1, total);
    if (!buf) return dk__error(DK_ENOMEM, __func__, "%s: out of memory", idx_path);
    uint8_t *s = buf + IDX_HEADER;
    put32(s + 0, (uint32_t)ix->stream_index);
    put32(s + 4, (uint32_t)ix->width);
    put32(s + 8, (uint32_t)ix->height);
    put32(s + 12, (uint32_t)ix->color_space);
    put32(s + 16, (uint32_t)ix->color_range);
    put32(s + 20, (uint32_t)ix->time_base.num);
    put32(s + 24, (uint32_t)ix->time_base.den);
    put32(s + 28, (uint32_t)ix->avg_frame_rate.num);
    put32(s + 32, (uint32_t)ix->avg_frame_rate.den);
    memcpy(s + 40, ix->codec, strnlen(ix->codec, 31));
    memcpy(s + 72, ix->pix_fmt, strnlen(ix->pix_fmt, 31));
    put64(s + 104, (uint64_t)ix->n_pkts);
    uint8_t *r = s + IDX_STREAM;
    for (int64_t i = 0; i < ix->n_pkts; i++, r += IDX_RECORD) {
        const dk__vpkt *k = &ix->pkts[i];
        /* Derived pts are stored as missing so a load derives them again. */
        int64_t pts = (k->flags & DK__PKT_NOPTS) ? AV_NOPTS_VALUE : k->pts;
        put64(r + 0, (uint64_t)pts);
        put64(r + 8, (uint64_t)k->dts);
        put64(r + 16, (uint64_t)k->pos);
        put64(r + 24, (uint64_t)k->duration);
        put32(r + 32, (uint32_t)k->size);
        put32(r + 36, k->flags & DK__PKT_FILE_FLAGS & ~(uint32_t)DK__PKT_NOPTS);
    }
    memcpy(buf, IDX_MAGIC, 8);
    put32(buf + 8, IDX_VERSION);
    put32(buf + 12, IDX_HEADER);
    put64(buf + 16, (uint64_t)vst->st_size);
    put64(buf + 24, (uint64_t)vst->st_mtim.tv_sec);
    put64(buf + 32, (uint64_t)vst->st_mtim.tv_nsec);
    put64(buf + 40, (uint64_t)payload);
    put64(buf + 48, fnv1a64(buf + IDX_HEADER, payload));
    int st = dk_file_write(idx_path, buf, total);
    dk_free(buf);
    return st;
}

static int bad(const char *path, const char *why)
{
    return dk__error(DK_EINVALIDDATA, "dk_video_open", "%s: %s", path, why);
}

int dk__vindex_load(const char *idx_path, const struct stat *vst, dk__vindex *ix)
{
    uint8_t *buf = NULL;
    size_t size = 0;
    int st = dk_file_read(idx_path, &buf, &size);
    if (st != DK_OK) return st;
    memset(ix, 0, sizeof *ix);
    const uint8_t *s = buf + IDX_HEADER, *r;
    uint64_t n, payload;
    if (size < IDX_HEADER + IDX_STREAM) {
        st = bad(idx_path, "index file too short");
        goto done;
    }
    if (memcmp(buf, IDX_MAGIC, 8) != 0) {
        st = bad(idx_path, "not a drivekit video index (bad magic)");
        goto done;
    }
    if (get32(buf + 8) != IDX_VERSION || get32(buf + 12) != IDX_HEADER) {
        st = bad(idx_path, "unsupported index version");
        goto done;
    }
    payload = get64(buf + 40);
    if (payload != size - IDX_HEADER) {
        st = bad(idx_path, "payload size does not match the file size (truncated?)");
        goto done;
    }
    if (get64(buf + 48) != fnv1a64(buf + IDX_HEADER, (size_t)payload)) {
        st = bad(idx_path, "checksum mismatch");
        goto done;
    }
    if (get64(buf + 16) != (uint64_t)vst->st_size ||
        get64(buf + 24) != (uint64_t)vst->st_mtim.tv_sec ||
        get64(buf + 32) != (uint64_t)vst->st_mtim.tv_nsec) {
        st = bad(idx_path, "stale: the video's size or modification time changed");
        goto done;
    }
    n = get64(s + 104);
    if (n == 0 || n > (uint64_t)INT32_MAX - 1 || n > (payload - IDX_STREAM) / IDX_RECORD ||
        n * IDX_RECORD != payload - IDX_STREAM) {
        st = bad(idx_path, "packet count does not match the file size");
        goto done;
    }
    ix->stream_index = (int32_t)get32(s + 0);
    ix->width = (int32_t)get32(s + 4);
    ix->height = (int32_t)get32(s + 8);
    ix->color_space = (int32_t)get32(s + 12);
    ix->color_range = (int32_t)get32(s + 16);
    ix->time_base.num = (int32_t)get32(s + 20);
    ix->time_base.den = (int32_t)get32(s + 24);
    ix->avg_frame_rate.num = (int32_t)get32(s + 28);
    ix->avg_frame_rate.den = (int32_t)get32(s + 32);
    memcpy(ix->codec, s + 40, 32);
    memcpy(ix->pix_fmt, s + 72, 32);
    if (ix->codec[31] || ix->pix_fmt[31] || ix->stream_index < 0 || ix->stream_index > 65535 ||
        ix->width <= 0 || ix->height <= 0 || ix->width > 65536 || ix->height > 65536 ||
        ix->time_base.num <= 0 || ix->time_base.den <= 0 ||
        !avcodec_descriptor_get_by_name(ix->codec)) {
        st = bad(idx_path, "invalid stream record");
        goto done;
    }
    ix->pkts = dk_malloc((size_t)n * sizeof *ix->pkts);
    if (!ix->pkts) {
        st = dk__error(DK_ENOMEM, "dk_video_open", "%s: out of memory", idx_path);
        goto done;
    }
    r = s + IDX_STREAM;
    for (uint64_t i = 0; i < n; i++, r += IDX_RECORD) {
        dk__vpkt *k = &ix->pkts[i];
        memset(k, 0, sizeof *k);
        k->pts = (int64_t)get64(r + 0);
        k->dts = (int64_t)get64(r + 8);
        k->pos = (int64_t)get64(r + 16);
        k->duration = (int64_t)get64(r + 24);
        k->size = (int32_t)get32(r + 32);
        k->flags = get32(r + 36);
        if (k->size <= 0 || (k->flags & ~(uint32_t)DK__PKT_FILE_FLAGS) ||
            (k->flags & DK__PKT_NOPTS)) {
            st = bad(idx_path, "invalid packet record");
            goto done;
        }
    }
    ix->n_pkts = (int64_t)n;
    st = dk__vindex_finalize(ix, idx_path);
done:
    dk_free(buf);
    if (st != DK_OK) dk__vindex_free(ix);
    return st;
}
