"""Frame-exact, on-demand video decoding (H.264, HEVC and whatever FFmpeg decodes).

:class:`Decoder` opens one video and returns any frames you ask for, in any
order, decoding only what they need: requests are sorted, deduplicated and
grouped by GOP, decoded in one forward pass per GOP (packets of unrequested
non-reference pictures are skipped), and GOPs run in parallel on a thread
pool. :class:`MultiDecoder` serves requests that span several videos -- the
cameras of a multi-camera sample -- in one call.

Frame ids are display-order indices ``0 .. len(decoder) - 1`` after edit
lists: frame ``i`` is the ``i``-th picture ``ffmpeg -fps_mode passthrough``
outputs, so ``decoder.md5(i)`` equals line ``i`` of
``ffmpeg -i F -fps_mode passthrough -f framemd5 -``. Timestamps never
matter for identity (variable frame rate files are exact).

Outputs (``output=``):

* ``"rgb"`` (default): ``(N, H, W, 3)`` uint8, converted with the stream's
  own matrix and range tags (BT.601 when untagged), as ffmpeg's
  ``-pix_fmt rgb24`` does; ``size=(w, h)`` resizes (bilinear).
* ``"yuv"``: the decoded picture in its native pixel format, planes packed
  one after the other (what framemd5 hashes): ``(N, bytes)`` uint8; 10-bit
  sources give 16-bit little-endian samples.
* ``"nv12"``: Y plane then interleaved UV: ``(N, H*3/2, W)`` for even sizes,
  ``(N, bytes)`` otherwise.

Frames come back as a :class:`drivekit.Tensor`, which ``numpy.asarray``,
``numpy.from_dlpack`` and ``torch.from_dlpack`` take without a copy.

Errors raise the drivekit exception of the C status with the library's
message, which names the file and the frame: a corrupt or truncated frame is
a :class:`drivekit.DecodeError` (never a duplicated or stale picture), a
frame id out of range a :class:`drivekit.RangeError`, a missing file a
:class:`drivekit.NotFoundError`. With ``errors="return"``,
:meth:`Decoder.get_frames` instead returns ``(frames, status)``: the frames
that could not be decoded are zero-filled and ``status[i]`` holds their
(negative) status code (0 for good frames; ``drivekit.status_str`` names it).
A truncated file's frames are the pictures whose packets are in the file:
the picture the cut goes through (and any that depends on what is missing)
is a DecodeError, pictures past the cut are out of range (``len(decoder)``
counts only what the file holds).

FFmpeg prints its own notes on damaged data to stderr (``"[h264 @ 0x...]
Invalid NAL unit size"``) at its default level; :func:`set_ffmpeg_log_level`
(``"quiet"``, ``"error"``, ...) sets that process-wide level, which drivekit
leaves to the application.

Threads: the decoding runs with the GIL released. ``threads=`` is the size of
the pool that decodes GOPs in parallel (the calling thread included), or a
:class:`drivekit.Pool` to share; each FFmpeg decoder runs single-threaded
unless ``decoder_threads`` says otherwise. A Decoder may be used from several
Python threads at once.

Example::

    from drivekit.video import Decoder
    import numpy as np
    with Decoder("CAM_FRONT.mp4", threads=4) as dec:
        frames = np.asarray(dec.get_frames([99, 3, 17, 3]))   # (4, H, W, 3), request order
        print(len(dec), dec.info["fps"], dec.stats["frames_decoded"])
"""

import os
from concurrent.futures import ThreadPoolExecutor

from . import _drivekit
from ._drivekit import InvalidArgumentError, Pool

__all__ = ["Decoder", "MultiDecoder", "OUTPUTS", "FFMPEG_LOG_LEVELS", "set_ffmpeg_log_level",
           "ffmpeg_log_level"]

FFMPEG_LOG_LEVELS = ("quiet", "panic", "fatal", "error", "warning", "info", "verbose", "debug",
                     "trace")


def set_ffmpeg_log_level(level):
    """Sets the level of FFmpeg's own messages on stderr (``"[h264 @ 0x...] error
    while decoding MB ..."``), one of :data:`FFMPEG_LOG_LEVELS`; FFmpeg's default
    is ``"info"``. The level is global to the process (PyAV and OpenCV share
    it); drivekit never changes it by itself, and reports damaged frames
    through its exceptions and statuses at any level. ``"quiet"`` silences
    FFmpeg entirely. Returns the previous level.

    :raises InvalidArgumentError: an unknown level.
    """
    if not isinstance(level, str):
        raise _invalid(f"set_ffmpeg_log_level(): level must be a str, not {type(level).__name__}")
    return _drivekit.ffmpeg_log_level(level)


def ffmpeg_log_level():
    """The current level of FFmpeg's own messages (see :func:`set_ffmpeg_log_level`)."""
    return _drivekit.ffmpeg_log_level()

OUTPUTS = ("rgb", "yuv", "nv12")
_ERRORS = ("raise", "return")


def _invalid(message):
    err = InvalidArgumentError(message)
    err.status = _drivekit.EINVAL
    return err


def _pool(threads, where):
    """``threads`` as what the C calls take: None (the caller only) or a Pool."""
    if isinstance(threads, Pool):
        return threads
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"{where}: threads must be an int or a drivekit.Pool, "
                        f"not {type(threads).__name__}")
    if threads < 1 or threads > 1024:
        raise _invalid(f"{where}: threads must be in [1, 1024], got {threads}")
    return Pool(threads) if threads > 1 else None


def _check_errors(errors, where):
    if errors not in _ERRORS:
        raise _invalid(f"{where}: errors must be 'raise' or 'return', got {errors!r}")
    return errors == "return"


class Decoder:
    """One video, decoded on demand.

    :param path: the video file (str or path-like).
    :param threads: pool size for decoding GOPs in parallel, the calling
        thread included (1: decode on the calling thread), or a
        :class:`drivekit.Pool` to share between decoders.
    :param output: ``"rgb"``, ``"yuv"`` (native planar) or ``"nv12"``.
    :param index: ``None`` (scan the file's packets when opening, no decoding),
        ``"auto"`` (load ``<path>.dkidx`` if it is valid for this file, else
        scan and write it) or a path for the index file. A stale or corrupt
        index is rebuilt, never trusted.
    :param cache_mb: decoded-frame LRU cache in MiB (0 = off).
    :param size: ``None`` or ``(width, height)`` to resize rgb/nv12 output
        (bilinear); one of them 0 keeps the aspect ratio.
    :param decoder_threads: FFmpeg threads inside each decoder (0 = FFmpeg's
        choice); 1 is best when GOPs decode in parallel.
    :param packet_cache_mb: demuxed-GOP LRU cache in MiB (0 = off).
    :param max_decoders: decoder contexts kept for parallel GOPs (default:
        ``max(4, threads)``).
    :raises NotFoundError: no such file.
    :raises DecodeError: not a video or no decodable video stream.
    :raises UnsupportedError: no decoder for the codec.
    :raises InvalidArgumentError: a bad option (output, size, threads...).
    """

    def __init__(self, path, threads=1, output="rgb", index=None, cache_mb=256, size=None,
                 *, decoder_threads=1, packet_cache_mb=64, max_decoders=None):
        self._video = None
        self._pool = _pool(threads, "Decoder()")
        if output not in OUTPUTS:
            raise _invalid(f"Decoder(): output must be one of {OUTPUTS}, got {output!r}")
        width = height = 0
        if size is not None:
            try:
                width, height = (int(x) for x in size)
            except (TypeError, ValueError):
                raise _invalid(f"Decoder(): size must be None or (width, height), got {size!r}") \
                    from None
            if width < 0 or height < 0 or (width == 0 and height == 0):
                raise _invalid(f"Decoder(): size must be (width, height) >= 0, not both 0; "
                               f"got {size!r}")
        if index is not None and not isinstance(index, (str, bytes, os.PathLike)):
            raise TypeError(f"Decoder(): index must be None, 'auto' or a path, "
                            f"not {type(index).__name__}")
        for name, mb in (("cache_mb", cache_mb), ("packet_cache_mb", packet_cache_mb)):
            if not isinstance(mb, (int, float)) or mb < 0:
                raise _invalid(f"Decoder(): {name} must be a number >= 0, got {mb!r}")
        if max_decoders is None:
            n = self._pool.threads if self._pool is not None else 1
            max_decoders = min(64, max(4, n))
        self._video = _drivekit.Video(
            path, output=output, width=width, height=height,
            frame_cache_bytes=int(cache_mb * (1 << 20)),
            packet_cache_bytes=int(packet_cache_mb * (1 << 20)),
            max_decoders=max_decoders, decoder_threads=decoder_threads, index=index)
        self.output = output

    # -- lifecycle ---------------------------------------------------------

    def close(self):
        """Frees the decoders and caches now (also done on garbage collection).

        :raises RuntimeError: another thread is decoding with this Decoder.
        """
        if self._video is not None:
            self._video.close()

    @property
    def closed(self):
        return self._video is None or self._video.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self.closed:
            return "<drivekit.video.Decoder (closed)>"
        i = self._video.info()
        return (f"<drivekit.video.Decoder {i['path']!r}: {i['codec']} {i['width']}x{i['height']}, "
                f"{i['n_frames']} frames, output={self.output!r}>")

    # -- metadata ----------------------------------------------------------

    def __len__(self):
        """Number of frames (display order, after edit lists)."""
        return len(self._video)

    @property
    def path(self):
        return self._video.path

    @property
    def info(self):
        """``dict``: ``codec``, ``pix_fmt``, ``width``, ``height``, ``bit_depth``,
        ``n_frames``, ``n_keyframes`` (random-access points), ``max_gop`` (most
        frames between two), ``has_b_frames`` (reorder depth), ``open_gop``,
        ``vfr``, ``fps`` (average), ``duration`` (s), ``colorspace`` ("bt709" or
        "bt601"), ``color_range`` ("limited" or "full"), and the output:
        ``output``, ``out_width``, ``out_height``, ``frame_bytes``, plus ``path``."""
        return self._video.info()

    @property
    def frame_shape(self):
        """Shape of one output frame: ``(H, W, 3)`` for rgb, ``(H*3/2, W)`` for
        nv12 of even size, ``(bytes,)`` otherwise."""
        return self._video.frame_shape

    @property
    def keyframes(self):
        """Frame ids of the random-access points (IDR / CRA / recovery points), ascending."""
        return self._video.keyframes()

    def frame_time(self, i):
        """Presentation time of frame ``i`` in seconds.

        :raises RangeError: ``i`` outside ``[0, len(self))``."""
        return self._video.frame_time(i)[1]

    def frame_pts(self, i):
        """Presentation timestamp of frame ``i`` in the stream's time base (int)."""
        return self._video.frame_time(i)[0]

    def frame_cost(self, i):
        """``(keyframe, min_decodes)``: the random-access point frame ``i`` decodes
        from (-1 for a never-displayed edit-list pre-roll picture) and the fewest
        pictures any decoder must decode to produce it alone."""
        return self._video.frame_cost(i)

    @property
    def stats(self):
        """``dict`` of the decode counters since opening or :meth:`reset_stats`
        (dk_video_stats): ``requests``, ``frames_requested``, ``frames_returned``,
        ``packets_read``, ``packets_sent``, ``packets_skipped``, ``frames_decoded``,
        ``min_decodes`` (the lower bound on ``frames_decoded`` for the same
        requests), ``seeks``, ``flushes``, ``frame_cache_hits``,
        ``packet_cache_hits``."""
        return self._video.stats()

    def reset_stats(self):
        self._video.reset_stats()

    @property
    def memory(self):
        """``dict`` of what the handle holds now (dk_video_memory):
        ``index_bytes`` (the packet index, the handle and its caches' tables:
        after :meth:`trim`, all it keeps), ``frame_cache_bytes``,
        ``packet_cache_bytes`` and ``decoders`` (decoder contexts, each with
        its reference pictures and an open file, not in the byte counts)."""
        return self._video.memory()

    def trim(self):
        """Free the decoder contexts no call is using (closing their files) and
        empty the frame and packet caches; the index stays. A dataset over
        thousands of videos can keep a trimmed Decoder per video for the cost
        of its index: the next :meth:`get_frames` opens the file again without
        a scan. A file removed or changed since the Decoder was opened then
        fails with :class:`drivekit.DrivekitIOError` naming it."""
        self._video.trim()

    # -- decoding ----------------------------------------------------------

    def get_frames(self, indices, errors="raise", out=None):
        """Decode frames ``indices`` (any order, duplicates allowed).

        :param indices: a sequence of ints or a 1-D integer numpy array.
        :param errors: ``"raise"`` (default): any frame that cannot be decoded
            raises; ``"return"``: return ``(frames, status)`` instead, with
            undecodable frames zero-filled and ``status`` a list of int (0 ok,
            else the negative drivekit status, e.g. ``drivekit.EINVALIDDATA``).
        :param out: ``None``, or a writable C-contiguous buffer of exactly
            ``len(indices) * info["frame_bytes"]`` bytes (e.g. a reused numpy
            array of shape ``(N,) + frame_shape`` or a pinned torch tensor's
            ``.numpy()``) to decode into; it is then returned instead of a new
            Tensor. Reusing one buffer avoids faulting in fresh memory on every
            call, which costs as much as decoding for large batches.
        :returns: :class:`drivekit.Tensor` of shape ``(N,) + frame_shape`` in
            request order (``(N, H, W, 3)`` uint8 for rgb), or ``out``.
        :raises DecodeError: a frame's data is corrupt or truncated (the
            message names the file and the first such frame in request order).
        :raises RangeError: an index outside ``[0, len(self))``.
        """
        with_status = _check_errors(errors, "Decoder.get_frames()")
        return self._video.get_frames(indices, self._pool, with_status, out)

    def __getitem__(self, key):
        """``dec[i]`` -> numpy ``frame_shape`` array (negative ``i`` counts from the end);
        ``dec[a:b:c]`` -> numpy ``(N,) + frame_shape`` array."""
        import numpy as np

        n = len(self)
        if isinstance(key, slice):
            return np.asarray(self.get_frames(range(*key.indices(n))))
        try:
            i = key.__index__()
        except AttributeError:
            raise TypeError(f"Decoder indices must be ints or slices, not {type(key).__name__}") \
                from None
        if i < 0:
            i += n
        return np.asarray(self.get_frames([i]))[0]

    def md5(self, i):
        """MD5 (32 hex chars) of frame ``i`` decoded in its native pixel format,
        planes packed: what ffmpeg's framemd5 muxer prints for that frame."""
        return self._video.md5(i)


class MultiDecoder:
    """Several videos (e.g. the cameras of a rig) served together.

    :param paths: the video files.
    :param threads: pool size (or a :class:`drivekit.Pool`) shared by all
        videos: the GOPs of every video in a request decode in parallel.
    :param kwargs: passed to each :class:`Decoder` (``output``, ``index``,
        ``cache_mb``, ``size``, ...).

    ``len(multi)`` is the number of videos and ``multi[j]`` the
    :class:`Decoder` of video ``j``.
    """

    def __init__(self, paths, threads=1, **kwargs):
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError("MultiDecoder(): paths must be a sequence of paths")
        paths = list(paths)
        if not paths:
            raise _invalid("MultiDecoder(): no paths given")
        self._pool = _pool(threads, "MultiDecoder()")
        kwargs["threads"] = self._pool if self._pool is not None else 1
        if self._pool is not None and len(paths) > 1:
            # Opening scans every file: do it in parallel (the C code runs
            # without the GIL).
            with ThreadPoolExecutor(min(len(paths), self._pool.threads)) as ex:
                futures = [ex.submit(Decoder, p, **kwargs) for p in paths]
                decoders = []
                err = None
                for f in futures:
                    try:
                        decoders.append(f.result())
                    except BaseException as e:  # noqa: BLE001 - re-raised below
                        err = err or e
                if err is not None:
                    for d in decoders:
                        d.close()
                    raise err
        else:
            decoders = [Decoder(p, **kwargs) for p in paths]
        self.decoders = decoders
        self._videos = tuple(d._video for d in decoders)

    def __len__(self):
        return len(self.decoders)

    def __getitem__(self, j):
        return self.decoders[j]

    def close(self):
        for d in self.decoders:
            d.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def stats(self):
        """Per-video :attr:`Decoder.stats` summed."""
        total = {}
        for d in self.decoders:
            for k, v in d.stats.items():
                total[k] = total.get(k, 0) + v
        return total

    def reset_stats(self):
        for d in self.decoders:
            d.reset_stats()

    def trim(self):
        """:meth:`Decoder.trim` on every video."""
        for d in self.decoders:
            d.trim()

    def get_frames(self, requests, errors="raise", stack=None):
        """Decode ``(video_index, frame_index)`` pairs in one call.

        :param requests: a sequence of pairs or an ``(N, 2)`` integer array;
            any order, duplicates allowed.
        :param errors: ``"raise"`` or ``"return"`` (then ``(frames, status)``), as
            in :meth:`Decoder.get_frames`.
        :param stack: ``None`` (default): one stacked :class:`drivekit.Tensor`
            ``(N,) + frame_shape`` in request order when every video has the same
            frame shape (same size and output, or a common ``size=``), else a list
            of N per-request Tensors; ``True``: always stacked (raises
            InvalidArgumentError when the shapes differ); ``False``: always a list.
        :raises DecodeError, RangeError: as :meth:`Decoder.get_frames`, the
            message naming the failing video's path and frame.
        :raises InvalidArgumentError: a video index outside ``[0, len(self))``.
        """
        with_status = _check_errors(errors, "MultiDecoder.get_frames()")
        st = -1 if stack is None else (1 if stack else 0)
        return _drivekit.video_get_frames_multi(self._videos, requests, self._pool, with_status, st)

    def get_sample(self, frames, errors="raise"):
        """Frame ``frames[j]`` of every video ``j`` (or the same frame id of all
        videos when ``frames`` is an int): a stacked ``(len(self),) + frame_shape``
        Tensor when the shapes agree, else a list."""
        if isinstance(frames, int):
            frames = [frames] * len(self)
        frames = list(frames)
        if len(frames) != len(self):
            raise _invalid(f"MultiDecoder.get_sample(): {len(frames)} frame ids for "
                           f"{len(self)} videos")
        return self.get_frames(list(enumerate(frames)), errors=errors)
