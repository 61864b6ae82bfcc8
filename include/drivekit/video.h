/*
 * drivekit video: frame-exact, on-demand random access to compressed video
 * (H.264, HEVC and anything else FFmpeg decodes), decoding only what the
 * requested frames need.
 *
 *   index     display-order frame ids from packet pts (edit lists applied,
 *             discarded packets dropped, missing pts handled, VFR exact),
 *             random-access points that really are (IDR / CRA / BLA / recovery
 *             point SEI), reference vs non-reference per packet from the NAL
 *             headers. Persistable (versioned, checksummed, validated against
 *             the video's size and mtime) so reopening costs no scan.
 *   planner   a request is a list of (video, frame) pairs: sorted, deduplicated,
 *             grouped by GOP, one forward pass per GOP, packets of unrequested
 *             non-reference frames never sent to the decoder, outputs
 *             identified by pts, never by counting; no seek when the next
 *             target is reachable by reading forward (or is in the packet
 *             cache).
 *   execution GOPs of all videos decode in parallel on a dk_pool with reused
 *             decoder contexts; a bounded LRU cache of decoded frames and of
 *             demuxed GOP packets; statistics per handle.
 *   output    RGB24 (BT.601 / BT.709, limited / full range from the stream's
 *             metadata), the native planar YUV, or NV12; optional resize;
 *             8-bit and 10-bit sources (10-bit YUV passthrough is 16-bit LE).
 *
 * Frame ids are display-order indices 0..n_frames-1 after edit lists: frame i
 * is the i-th picture `ffmpeg -fps_mode passthrough` would output. (Details:
 * packets are ranked by pts, ties by decode order, and pictures sharing a pts
 * are decoded together and numbered in output order, as ffmpeg does; a packet
 * without pts takes its dts, which numbers a reordering stream without
 * timestamps in decode order; the undecodable leading pictures of the first
 * random-access point are not frames, as ffmpeg drops them too.)
 *
 * Damage: a frame whose decode involved a decoder error, a concealed or
 * missing picture, a structurally broken packet (NAL lengths, emulation
 * prevention, zeroed blocks) or, for HEVC streams carrying MD5 picture-hash
 * SEI, a hash mismatch, is an error, never a picture. Corruption that still
 * decodes to a valid-looking picture is invisible to any decoder; encode
 * with picture hashes (x265 --hash 1) where that matters.
 *
 * Sequential readers: a request whose first frame follows the previous
 * request's last one also decodes the rest of that GOP into the frame cache,
 * so reading frame by frame costs about one decode per frame. The frames
 * such a request returns are not themselves cached (a sequential reader does
 * not ask for them again); other requests cache what they return.
 *
 * Example:
 *     dk_video_config cfg; dk_video_config_init(&cfg);
 *     dk_video *v;
 *     if (dk_video_open("CAM_FRONT.mp4", &cfg, &v)) fail(dk_errmsg());
 *     int64_t want[] = {3, 17, 99};
 *     dk_tensor frames;                           // (3, H, W, 3) uint8
 *     int st = dk_video_get_frames(v, pool, want, 3, &frames, NULL);
 *     ...
 *     dk_tensor_release(&frames);
 *     dk_video_close(v);
 *
 * Thread safety: a dk_video may be used by several threads at once (requests
 * are serialised per decoder context, not per handle). Memory is bounded by
 * the configured cache sizes plus, per decoder context, one GOP of packets
 * and the decoder's own buffers, plus the frames of requests in flight.
 */
#ifndef DRIVEKIT_VIDEO_H
#define DRIVEKIT_VIDEO_H

#include "drivekit/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dk_video dk_video;

typedef enum dk_video_output {
    DK_VIDEO_RGB24 = 0,   /* (H, W, 3) uint8 */
    DK_VIDEO_NATIVE,      /* planar YUV as decoded, planes packed one after the
                             other in a (bytes,) uint8 tensor per frame, exactly
                             the layout ffmpeg's framemd5 hashes */
    DK_VIDEO_NV12,        /* Y plane (H rows of W bytes) then interleaved UV
                             (ceil(H/2) rows of 2*ceil(W/2) bytes): (H*3/2, W)
                             for even sizes, in a (bytes,) tensor per frame.
                             8-bit 4:2:0 is copied as decoded (no range or
                             matrix change); other formats go via swscale */
} dk_video_output;

typedef struct dk_video_config {
    dk_video_output output;    /* default DK_VIDEO_RGB24 */
    int out_width, out_height; /* resize RGB24 / NV12 output (bilinear), at most
                                  16384; 0 = native; one of them 0 keeps the
                                  aspect ratio. DK_VIDEO_NATIVE with a size is
                                  DK_EINVAL */
    size_t frame_cache_bytes;  /* decoded-frame LRU cache; default 256 MiB, 0 = off */
    size_t packet_cache_bytes; /* demuxed-GOP LRU cache; default 64 MiB, 0 = off */
    int max_decoders;          /* decoder contexts kept for reuse (parallel GOPs
                                  of this video); default 4, range [1, 64] */
    int decoder_threads;       /* FFmpeg threads inside one decoder; default 1,
                                  0 = FFmpeg's choice, at most 64 */
    /* Persistent index: when index_path is set the index is loaded from it if
       valid (version, checksum, video size and mtime match) and written there
       after a scan otherwise. "auto" = <video path>.dkidx. NULL = no file. */
    const char *index_path;
} dk_video_config;

DK_API void dk_video_config_init(dk_video_config *cfg);

/** Opens a video and builds (or loads) its index. Returns DK_ENOENT, DK_EIO,
 *  DK_EINVALIDDATA (not a video, no decodable video stream, corrupt index
 *  data that cannot be recovered: message names the file and byte offset or
 *  packet), DK_EUNSUPPORTED (no decoder for the codec), DK_EINVAL (NULL
 *  arguments, a configuration value out of range), DK_ENOMEM.
 *  A stale or corrupt index file is not an error: it is rebuilt (and logged
 *  at warning level). Opening scans every packet once (no decoding but of
 *  the first picture) unless a valid index file is found. */
DK_API int dk_video_open(const char *path, const dk_video_config *cfg, dk_video **out);
DK_API void dk_video_close(dk_video *v);
/** The last error message of any call on this handle (from whichever thread
 *  made it); dk_errmsg() has the calling thread's own. */
DK_API const char *dk_video_errmsg(const dk_video *v);
DK_API const char *dk_video_path(const dk_video *v);

typedef struct dk_video_info {
    char codec[32];            /* "h264", "hevc", ... */
    char pix_fmt[32];          /* native pixel format, e.g. "yuv420p", "yuv420p10le" */
    int width, height;         /* picture size as decoded (cropping applied) */
    int bit_depth;
    int64_t n_frames;          /* display-order frames after edit lists */
    int64_t n_keyframes;       /* random-access points */
    int max_gop;               /* most frames between two random-access points */
    int has_b_frames;          /* reorder depth */
    int open_gop;              /* some random-access points are CRA / recovery points */
    int vfr;                   /* frame durations differ */
    double avg_fps;
    double duration;           /* seconds, first frame pts to end of last frame */
    int colorspace_bt709;      /* 1 BT.709 matrix, 0 BT.601 or another (RGB uses
                                  each frame's own tags the way ffmpeg's scale
                                  filter does: BT.601 when unspecified) */
    int full_range;            /* 1 full (JPEG) range, 0 limited */
} dk_video_info;

DK_API int dk_video_get_info(const dk_video *v, dk_video_info *info);
/** Presentation time of a frame: pts in the stream time base and seconds.
 *  DK_ERANGE for a frame outside [0, n_frames). */
DK_API int dk_video_frame_time(const dk_video *v, int64_t frame, int64_t *pts, double *seconds);
/** Index of the random-access point a frame's decode must start from, and
 *  the minimum number of pictures to decode for that frame alone (the frame
 *  plus the reference pictures between that point and it in decode order,
 *  not counting undecodable leading pictures of that point). `keyframe` is
 *  the frame id of that picture (usually <= frame; larger for an HEVC RADL
 *  picture, which displays before its IRAP), or -1 when it is an edit-list
 *  pre-roll picture that is never displayed, or the start of a stream that
 *  does not open with a random-access point. Either pointer may be NULL. */
DK_API int dk_video_frame_cost(const dk_video *v, int64_t frame, int64_t *keyframe,
                               int64_t *min_decodes);
/** Frame ids of the displayed random-access points, ascending; *n in/out
 *  (capacity/count). DK_ERANGE when the capacity is too small (*n then holds
 *  the count, the first capacity ids are written). */
DK_API int dk_video_keyframes(const dk_video *v, int64_t *frames, int64_t *n);

typedef struct dk_video_stats {
    int64_t requests, frames_requested, frames_returned;   /* per video per call */
    int64_t packets_read;       /* demuxed while serving requests (not the scan) */
    int64_t packets_sent;       /* given to a decoder */
    int64_t packets_skipped;    /* not sent: non-reference and not requested, or
                                   an undecodable leading picture of the start */
    int64_t frames_decoded;     /* pictures that came out of a decoder, plus
                                   edit-list pre-roll pictures (decoded, never
                                   output); read-ahead pictures included */
    int64_t min_decodes;        /* sum of the per-request lower bound (reference
                                   chain + targets, shared work counted once per
                                   decode start); cache hits are not counted */
    int64_t seeks, flushes;     /* av_seek_frame calls (and input reopens);
                                   decoder flushes (one per forward pass) */
    int64_t frame_cache_hits;   /* requested frames served from the cache */
    int64_t packet_cache_hits;  /* GOP segments served from the cache */
} dk_video_stats;

DK_API void dk_video_get_stats(const dk_video *v, dk_video_stats *s);
DK_API void dk_video_reset_stats(dk_video *v);

/** What a handle holds now. Decoder contexts also hold their reference
 *  pictures (a few frames each) and an open file; they are not in the byte
 *  counts. */
typedef struct dk_video_memory {
    size_t index_bytes;         /* the packet index, the handle and its caches'
                                   tables (after dk_video_trim: all it keeps) */
    size_t frame_cache_bytes;   /* decoded frames in the frame cache */
    size_t packet_cache_bytes;  /* demuxed GOPs in the packet cache */
    int decoders;               /* decoder contexts (each with its own open file) */
} dk_video_memory;

DK_API void dk_video_get_memory(const dk_video *v, dk_video_memory *m);

/** Frees the decoder contexts no request is using (closing their files) and
 *  empties the frame and packet caches. The index stays, so the handle can
 *  be kept for a long time at the cost of its index alone: the next request
 *  opens the file again without a scan. Safe while other threads use the
 *  handle: decoders in use are left alone. A source that is not a regular
 *  file (a pipe, a device) keeps its decoders; only the caches are emptied.
 *
 *  For a regular file, every decoder context created after the open (after a
 *  trim, or a second one for parallel GOPs) first checks that the path still
 *  names the file that was opened (same inode, size and modification time);
 *  if not, the frames that needed it fail with DK_EIO, "the file was removed
 *  or changed since it was opened". Open the video again to read the new
 *  file. */
DK_API void dk_video_trim(dk_video *v);

/** Decodes the given frames (any order, duplicates allowed) of one video into
 *  a new (n, H, W, 3) uint8 tensor in request order (DK_VIDEO_RGB24; for the
 *  other outputs (n, bytes_per_frame)). `status` (may be NULL) receives
 *  DK_OK or the error of each frame. A frame that cannot be decoded (corrupt or
 *  truncated data, out of range) is zero-filled and marked in `status`; the
 *  function then returns the error of the first such frame in request order,
 *  with the message "dk_video_get_frames(): <path>: frame <id>: <reason>",
 *  after decoding every frame it can. Never a duplicated or stale picture.
 *  *out holds the frames after DK_OK and after such per-frame errors; it is
 *  left empty after DK_EINVAL and DK_ENOMEM. `pool` (may be NULL) runs the
 *  GOPs in parallel. Returns DK_ERANGE, DK_EINVALIDDATA, DK_EIO,
 *  DK_EUNSUPPORTED (a picture the output cannot hold, e.g. a mid-stream size
 *  change with DK_VIDEO_NATIVE), DK_ENOMEM, DK_EINVAL. */
DK_API int dk_video_get_frames(dk_video *v, dk_pool *pool, const int64_t *frames, int64_t n,
                               dk_tensor *out, int *status);

/** Decodes into caller memory: frame i goes to dst + i * frame_stride bytes,
 *  which must hold dk_video_frame_bytes() bytes (frame_stride smaller than
 *  that is DK_EINVAL when n > 1). Same errors. */
DK_API int dk_video_get_frames_into(dk_video *v, dk_pool *pool, const int64_t *frames, int64_t n,
                                    void *dst, size_t frame_stride, int *status);
/** Bytes of one output frame in the configured output format and size. */
DK_API size_t dk_video_frame_bytes(const dk_video *v);

/** One item of a multi-video request. */
typedef struct dk_video_request {
    int32_t video;             /* index into the videos array */
    int64_t frame;
} dk_video_request;

/** Serves requests across several videos at once (e.g. the six cameras of a
 *  sample): all GOPs of all videos are decoded in parallel on `pool`. out[i]
 *  receives a new (H, W, 3) (or (bytes,)) tensor for request i (tensors of one
 *  video share a buffer; release each). status and errors as above, the
 *  message naming the failing video's path; DK_EINVAL for a NULL video or a
 *  request naming one outside [0, n_videos). */
DK_API int dk_video_get_frames_multi(dk_video *const *videos, int n_videos, dk_pool *pool,
                                     const dk_video_request *reqs, int64_t n, dk_tensor *out,
                                     int *status);

/** MD5 of a decoded picture in its native pixel format, planes packed without
 *  padding: what ffmpeg's framemd5 muxer prints for `-f framemd5` (32 lowercase
 *  hex chars + NUL in md5_hex). Ignores the configured output format (the
 *  frame cache keeps native pictures apart). Same errors as
 *  dk_video_get_frames; md5_hex is "" on failure. */
DK_API int dk_video_frame_md5(dk_video *v, int64_t frame, char md5_hex[33]);

/** Level of FFmpeg's own log messages ("[h264 @ 0x...] error while decoding
 *  MB ..." on stderr through FFmpeg's default callback): "quiet", "panic",
 *  "fatal", "error", "warning", "info" (FFmpeg's default), "verbose", "debug"
 *  or "trace". The level is global to the process and belongs to the
 *  application: the library never changes it by itself (the drivekit command
 *  sets "error"). drivekit's return values report damaged frames whatever the
 *  level. Returns DK_EINVAL for another name (or NULL). */
DK_API int dk_video_set_ffmpeg_log_level(const char *level);
/** The current level's name from the list above (a level between two names
 *  gives the next quieter one). */
DK_API const char *dk_video_ffmpeg_log_level(void);

#ifdef __cplusplus
}
#endif

#endif /* DRIVEKIT_VIDEO_H */
