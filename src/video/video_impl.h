/*
 * Private interfaces of the video module (src/video/ only, plus the module's
 * test and fuzz harness). Nothing here is installed.
 *
 *   index.c    packet scan, NAL classification, display order, decode starts,
 *              the persistent index file
 *   cache.c    a byte-bounded, thread-safe LRU of dk_buffer values
 *   convert.c  AVFrame -> RGB24 / native / NV12 bytes, and MD5
 *   video.c    the public API: planner, decoder contexts, execution
 */
#ifndef DRIVEKIT_VIDEO_IMPL_H
#define DRIVEKIT_VIDEO_IMPL_H

#include <stdint.h>
#include <sys/stat.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

#include "drivekit/video.h"
#include "internal.h"

/* ------------------------------------------------------------------------ */
/* Index                                                                     */

/* Per-packet flags. The low byte is what the index file stores. */
enum {
    DK__PKT_KEY = 1 << 0,     /* container keyframe flag (informational) */
    DK__PKT_DISCARD = 1 << 1, /* edit list: decoded for reference, never displayed */
    DK__PKT_RAP = 1 << 2,     /* random-access point: decoding may start here */
    DK__PKT_REF = 1 << 3,     /* reference picture: never skipped */
    DK__PKT_RADL = 1 << 4,    /* HEVC leading picture decodable from its IRAP */
    DK__PKT_OPEN = 1 << 5,    /* RAP whose leading pictures need the previous RAP
                                 (HEVC CRA/BLA, H.264 recovery point I) */
    DK__PKT_CORRUPT = 1 << 6, /* the demuxer flagged the packet (short read) */
    DK__PKT_NOPTS = 1 << 7,   /* pts was missing and derived from dts */
};
#define DK__PKT_FILE_FLAGS 0xFFu

typedef struct dk__vpkt {
    int64_t pts, dts, pos, duration;
    int64_t frame;             /* display-order frame id, -1: not displayed */
    int32_t size;
    int32_t start;             /* decode-order index of the packet decoding
                                  must start from to reconstruct this one;
                                  -1: undecodable (leading picture of the
                                  first RAP) */
    int32_t seg;               /* segment: index into starts[] */
    uint32_t flags;
} dk__vpkt;

typedef struct dk__vindex {
    /* stream description (persisted) */
    int stream_index;
    char codec[32];
    char pix_fmt[32];
    int width, height;
    int color_space, color_range;   /* AVColorSpace / AVColorRange values */
    AVRational time_base, avg_frame_rate;

    /* packets in decode (file) order (persisted) */
    int64_t n_pkts;
    dk__vpkt *pkts;

    /* derived by dk__vindex_finalize */
    int64_t n_frames;
    int32_t *frame_pkt;        /* frame id -> packet */
    int64_t n_starts;          /* decode start points: packet 0 and every RAP */
    int32_t *starts;
    int32_t *by_pts;           /* packets with a pts, sorted by (pts, index) */
    int64_t n_by_pts;
    int32_t *by_pos;           /* packets sorted by byte position */
    int pos_unique;            /* every packet has a distinct pos >= 0 */
    int32_t *ref_prefix;       /* ref_prefix[i] = #REF packets in [0, i) (n_pkts + 1) */

    /* summary for dk_video_info */
    enum AVCodecID codec_id;
    int pix_fmt_id;            /* enum AVPixelFormat */
    int bit_depth;
    int64_t n_keyframes;
    int max_gop, has_b_frames, open_gop, vfr;
    double avg_fps, duration;
} dk__vindex;

/* Reads every packet of stream `si` from `fmt` (positioned at the start) and
 * classifies it. `name` is used in messages. Fills the persisted part of `ix`
 * and finalizes it. Returns DK_EINVALIDDATA (no packets), DK_ENOMEM. */
int dk__vindex_scan(AVFormatContext *fmt, int si, const char *name, dk__vindex *ix);
/* Derives display order, decode starts, lookups and the summary from the
 * persisted fields. DK_EINVALIDDATA when nothing is displayable, DK_ENOMEM. */
int dk__vindex_finalize(dk__vindex *ix, const char *name);
void dk__vindex_free(dk__vindex *ix);

/* The persistent index file. load returns DK_OK with a valid index, or a
 * negative status with the reason in the thread's message (the caller logs
 * it and rebuilds). save writes atomically. */
int dk__vindex_load(const char *idx_path, const struct stat *video_st, dk__vindex *ix);
int dk__vindex_save(const char *idx_path, const struct stat *video_st, const dk__vindex *ix);

/* Packet index with this timestamp (as the decoder reports it: pts, or the
 * derived pts) among those in [lo, hi] marked in `sent` and not in `taken`
 * (bitmaps indexed by i - lo; NULL: no condition); -1 if none. */
int64_t dk__vindex_find_pts(const dk__vindex *ix, int64_t pts, int64_t lo, int64_t hi,
                            const uint8_t *sent, const uint8_t *taken);
/* Frames other than `frame` whose packets have the same pts (a broken or
 * rounded timeline): their order among themselves is the decoder's output
 * order, so they must be decoded together. Writes up to `cap` frame ids to
 * `out`; returns how many there are. */
int64_t dk__vindex_same_pts(const dk__vindex *ix, int64_t frame, int64_t *out, int64_t cap);
/* Packet index at byte position `pos`, -1 if none (needs pos_unique). */
int64_t dk__vindex_find_pos(const dk__vindex *ix, int64_t pos);
/* What to do with packet p when decoding starts at packet `start` (targets
 * are always sent):
 *   DK__SEND        a reference picture the targets may need;
 *   DK__SKIP        a non-reference picture, or an HEVC leading picture of
 *                   the start point (undecodable from it, and HEVC keeps
 *                   no count of skipped pictures);
 *   DK__SEND_QUIET  an H.264 (or other codec's) reference leading picture of
 *                   the start point: undecodable and not needed, but skipping
 *                   it would leave a frame_num gap, so it is sent and its
 *                   errors and missing output are ignored. Not counted in
 *                   the lower bound. */
enum { DK__SKIP = 0, DK__SEND = 1, DK__SEND_QUIET = 2 };
static inline int dk__vindex_action(const dk__vindex *ix, int64_t start, int64_t p)
{
    const dk__vpkt *k = &ix->pkts[p];
    if (!(k->flags & DK__PKT_REF)) return DK__SKIP;
    if (p > start && k->pts < ix->pkts[start].pts && !(k->flags & DK__PKT_RADL) &&
        !(k->flags & DK__PKT_NOPTS))
        return ix->codec_id == AV_CODEC_ID_HEVC ? DK__SKIP : DK__SEND_QUIET;
    return DK__SEND;
}

/* ------------------------------------------------------------------------ */
/* Byte-bounded LRU cache of dk_buffer values (thread-safe)                   */

typedef struct dk__lru dk__lru;

#define DK__LRU_MAX_SPARES 4
/* `spares` > 0 keeps up to that many evicted, unshared values for reuse
 * (see dk__lru_take_spare); their bytes count against the capacity. */
int dk__lru_create(size_t capacity, int spares, dk__lru **out);
void dk__lru_destroy(dk__lru *c);
/* A new reference to the value under `key`, moved to the front; NULL on a miss. */
dk_buffer *dk__lru_get(dk__lru *c, uint64_t key);
int dk__lru_contains(dk__lru *c, uint64_t key);
/* Drops every entry and spare (values others still hold live on). */
void dk__lru_clear(dk__lru *c);
/* Bytes of the cache's own structure and hash table (not the entries). */
size_t dk__lru_overhead(dk__lru *c);
/* Stores a new reference to `b` charged `bytes`, evicting least recently
 * used entries so the total never exceeds the capacity. Values larger than
 * the capacity, and keys already present, are not stored. Returns 1 when
 * stored. */
int dk__lru_put(dk__lru *c, uint64_t key, dk_buffer *b, size_t bytes);
/* A recycled value of exactly `bytes` bytes, owned by the caller (refcount
 * 1, contents stale), or NULL. */
dk_buffer *dk__lru_take_spare(dk__lru *c, size_t bytes);
/* Bytes charged: entries plus spares; never above the capacity. */
size_t dk__lru_bytes(dk__lru *c);
size_t dk__lru_count(dk__lru *c);

/* ------------------------------------------------------------------------ */
/* Conversion                                                                */

typedef struct dk__conv {
    struct SwsContext *sws;
    int src_w, src_h, src_fmt, dst_w, dst_h, dst_fmt, flags;
    int cs, range;             /* colour details the context was set up with */
} dk__conv;

/* Bytes of one output picture; 0 when the format cannot be produced. */
size_t dk__conv_bytes(dk_video_output out, int pix_fmt, int w, int h);
/* Converts `f` into `dst` (exactly dk__conv_bytes bytes). For RGB24 and NV12
 * the picture is scaled to out_w x out_h; NATIVE needs the frame to have
 * exactly (pix_fmt, w, h) of the stream. Returns DK_OK, DK_EUNSUPPORTED (a
 * picture whose format or size the output cannot hold), DK_ENOMEM; `why`
 * receives a static reason on failure. */
int dk__conv_frame(dk__conv *c, const AVFrame *f, dk_video_output out, int pix_fmt, int w,
                   int h, int out_w, int out_h, uint8_t *dst, size_t dst_size, const char **why);
void dk__conv_free(dk__conv *c);
/* The RGB matrix/range rule (what ffmpeg's scale filter picks): 1 when the
 * BT.709 matrix is used for this colour space. */
int dk__conv_is_bt709(int color_space);
int dk__conv_is_full_range(int color_range, int pix_fmt);

/* MD5 (RFC 1321). */
typedef struct dk__md5 {
    uint32_t h[4];
    uint64_t len;
    uint8_t buf[64];
} dk__md5;
void dk__md5_init(dk__md5 *m);
void dk__md5_update(dk__md5 *m, const void *data, size_t n);
void dk__md5_final(dk__md5 *m, uint8_t digest[16]);
void dk__md5_hex(const void *data, size_t n, char hex[33]);

/* ------------------------------------------------------------------------ */
/* Entry points for tests and the fuzz harness                                */

/* Opens a video held in memory (`data` must outlive the handle; it is not
 * copied). No index file is used. Same errors as dk_video_open. */
int dk__video_open_memory(const void *data, size_t size, const dk_video_config *cfg,
                          dk_video **out);
/* 1 when the index came from the index file, 0 when it was scanned. */
int dk__video_index_loaded(const dk_video *v);
/* Decoder contexts currently allocated. */
int dk__video_decoders(const dk_video *v);

#endif /* DRIVEKIT_VIDEO_IMPL_H */
