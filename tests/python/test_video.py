"""Tests of drivekit.video (Decoder, MultiDecoder) and `drivekit video`: every
frame checked against the ffmpeg command-line tool.

Ground truth is `ffmpeg -i F -fps_mode passthrough -f framemd5 -` (frame i of
drivekit = line i) and `-pix_fmt rgb24 -f rawvideo` for RGB. The corpus is
made with the ffmpeg CLI in a temporary folder (320x240, 25 fps, 3-4 s):
x264 with 0, 2 and 3 B-frames (b-pyramid), GOP 12 and 250, x264 and x265
open GOP, variable frame rate, an edit list (stream-copy cut starting on a
non-keyframe), MKV, moov at the end (ffmpeg's default) vs faststart, and a
file truncated at 60 %.

Run: PYTHONPATH=build/python /usr/bin/python3 -m pytest -q tests/python/test_video.py
(DK_BUILD_DIR picks another build folder than <repo>/build.)
"""
import hashlib
import json
import os
import random
import shutil
import subprocess
import threading

import numpy as np
import pytest

import drivekit
from drivekit import image
from drivekit.video import Decoder, MultiDecoder

import torch  # Debian's python3-torch, installed by scripts/setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("DK_BUILD_DIR") or os.path.join(REPO, "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(REPO, BUILD)
DRIVEKIT = os.path.join(BUILD, "bin", "drivekit")

# Both are declared dependencies (scripts/setup installs ffmpeg; the build makes
# the command): their absence is a failure, not a reason to skip.
FFMPEG = shutil.which("ffmpeg")
assert FFMPEG, "the ffmpeg command-line tool is needed (scripts/setup installs it)"
assert os.access(DRIVEKIT, os.X_OK), f"{DRIVEKIT} not built (set DK_BUILD_DIR)"

W, H = 320, 240
SRC = ["-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate=25"]
X264 = ["-c:v", "libx264", "-threads", "1", "-pix_fmt", "yuv420p"]
JITTER = "settb=1/1000,setpts=(N+0.4*mod(N\\,3))/25/TB"

# name -> ffmpeg arguments ("{d}" = corpus folder); made in this order.
CLIPS = {
    "bf0.mp4": SRC + ["-t", "3"] + X264 + ["-bf", "0", "-g", "12"],
    "bf2.mp4": SRC + ["-t", "3"] + X264 + ["-bf", "2", "-g", "12"],
    "bf3p.mp4": SRC + ["-t", "4"] + X264 + ["-bf", "3", "-b-pyramid", "normal", "-g", "250"],
    "og264.mp4": SRC + ["-t", "3"] + X264 + ["-bf", "3", "-g", "24", "-x264-params", "open-gop=1"],
    "x265.mp4": SRC + ["-t", "3", "-c:v", "libx265", "-threads", "1", "-pix_fmt", "yuv420p", "-x265-params",
                       "keyint=24:open-gop=1:bframes=4:log-level=error"],
    "vfr.mp4": SRC + ["-t", "3", "-vf", JITTER, "-fps_mode", "passthrough", "-enc_time_base",
                      "1/1000"] + X264 + ["-bf", "2", "-g", "12"],
    # Cut at 0.37 s (frame 9.25, inside the first GOP): the copy starts at the
    # keyframe before and an edit list hides the pre-roll.
    "el.mp4": ["-ss", "0.37", "-i", "{d}/bf2.mp4", "-c", "copy"],
    "bf2.mkv": ["-i", "{d}/bf2.mp4", "-c", "copy"],
    "fast.mp4": ["-i", "{d}/bf2.mp4", "-c", "copy", "-movflags", "+faststart"],
}
FILES = list(CLIPS)   # bf2.mp4 and the others have moov at the end, fast.mp4 first


def ffmpeg(*args, stdout=None):
    return subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", *args], check=True,
                          stdout=stdout, stderr=subprocess.PIPE)


class Corpus:
    def __init__(self, folder):
        self.dir = str(folder)
        for name, args in CLIPS.items():
            ffmpeg(*[a.replace("{d}", self.dir) for a in args], self.path(name))
        with open(self.path("fast.mp4"), "rb") as f:
            data = f.read()
        with open(self.path("trunc.mp4"), "wb") as f:
            f.write(data[: len(data) * 6 // 10])
        self._md5 = {}
        self._rgb = {}

    def path(self, name):
        return os.path.join(self.dir, name)

    def md5(self, name, pix_fmt=None):
        """ffmpeg's framemd5 hashes, frame i = line i."""
        key = (name, pix_fmt)
        if key not in self._md5:
            extra = ["-pix_fmt", pix_fmt] if pix_fmt else []
            p = subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", self.path(name),
                                "-fps_mode", "passthrough", *extra, "-f", "framemd5", "-"],
                               check=True, capture_output=True, text=True)
            self._md5[key] = [ln.rsplit(",", 1)[1].strip() for ln in p.stdout.splitlines()
                              if ln and not ln.startswith("#")]
        return self._md5[key]

    def rgb(self, name):
        """Every frame as ffmpeg's rgb24 conversion: (n, H, W, 3)."""
        if name not in self._rgb:
            p = subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", self.path(name),
                                "-fps_mode", "passthrough", "-pix_fmt", "rgb24", "-f", "rawvideo",
                                "-"], check=True, capture_output=True)
            self._rgb[name] = np.frombuffer(p.stdout, np.uint8).reshape(-1, H, W, 3)
        return self._rgb[name]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return Corpus(tmp_path_factory.mktemp("video"))


def cli(*args):
    return subprocess.run([DRIVEKIT, "video", *args], capture_output=True, text=True, timeout=120)


def md5_rows(frames):
    a = np.asarray(frames)
    return [hashlib.md5(a[i].tobytes()).hexdigest() for i in range(a.shape[0])]


def assert_rgb_equal(got, want, what):
    got = np.asarray(got)
    if np.array_equal(got, want):
        return
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    raise AssertionError(f"{what}: RGB differs from ffmpeg's rgb24: max abs diff {diff.max()}, "
                         f"{np.count_nonzero(diff)} of {diff.size} values")


# --------------------------------------------------------------------------
# exactness against ffmpeg


@pytest.mark.parametrize("name", FILES)
def test_md5_every_frame(corpus, name):
    want = corpus.md5(name)
    with Decoder(corpus.path(name)) as dec:
        assert len(dec) == len(want), f"{name}: {len(dec)} frames, ffmpeg has {len(want)}"
        got = [dec.md5(i) for i in range(len(dec))]
    bad = [i for i in range(len(want)) if got[i] != want[i]]
    assert not bad, f"{name}: Decoder.md5 differs from ffmpeg's framemd5 at frames {bad[:10]}"


@pytest.mark.parametrize("name", FILES)
def test_cli_framemd5_all(corpus, name):
    want = corpus.md5(name)
    p = cli("framemd5", corpus.path(name), "--frames", "all", "--threads", "2")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == len(want)
    for i, ln in enumerate(lines):
        idx, h = ln.split()
        assert int(idx) == i
        assert h == want[i], f"{name}: frame {i}: {h} != ffmpeg {want[i]}"


def test_cli_framemd5_lists_and_ranges(corpus):
    want = corpus.md5("x265.mp4")
    p = cli("framemd5", corpus.path("x265.mp4"), "--frames", "70,3,17,3,10-12,72-")
    assert p.returncode == 0, p.stderr
    ids = [70, 3, 17, 3, 10, 11, 12] + list(range(72, len(want)))
    assert [ln.split() for ln in p.stdout.splitlines()] == [[str(i), want[i]] for i in ids]


@pytest.mark.parametrize("name", FILES)
def test_rgb_random_subsets_match_ffmpeg(corpus, name):
    ref = corpus.rgb(name)
    rnd = random.Random(name)
    with Decoder(corpus.path(name), threads=2) as dec:
        assert len(dec) == ref.shape[0]
        for _ in range(3):
            ids = [rnd.randrange(len(dec)) for _ in range(12)]
            ids += ids[:3]                      # duplicates
            rnd.shuffle(ids)                    # unsorted
            got = dec.get_frames(ids)
            assert got.shape == (len(ids), H, W, 3) and got.dtype == "uint8"
            assert_rgb_equal(got, ref[ids], f"{name} frames {ids}")


def test_yuv_and_nv12_outputs(corpus):
    name = "og264.mp4"
    n = len(corpus.md5(name))
    ids = [n - 1, 0, 13, 13, 40]
    with Decoder(corpus.path(name), output="yuv") as dec:
        assert dec.frame_shape == (W * H * 3 // 2,)
        assert md5_rows(dec.get_frames(ids)) == [corpus.md5(name)[i] for i in ids]
    with Decoder(corpus.path(name), output="nv12") as dec:
        assert dec.frame_shape == (H * 3 // 2, W)
        got = dec.get_frames(ids)
        assert got.shape == (len(ids), H * 3 // 2, W)
        assert md5_rows(got) == [corpus.md5(name, "nv12")[i] for i in ids]


def test_resize(corpus):
    with Decoder(corpus.path("bf2.mp4"), size=(160, 0)) as dec:
        assert dec.frame_shape == (120, 160, 3)
        assert dec.info["out_width"] == 160 and dec.info["out_height"] == 120
        a = np.asarray(dec.get_frames([5, 6]))
        full = corpus.rgb("bf2.mp4")[[5, 6]].astype(np.float64)
        # A bilinear 2x downscale stays close to the 2x2 box average.
        box = full.reshape(2, 120, 2, 160, 2, 3).mean(axis=(2, 4))
        assert np.abs(a - box).mean() < 6


# --------------------------------------------------------------------------
# metadata


def test_info(corpus):
    with Decoder(corpus.path("bf2.mp4")) as dec:
        i = dec.info
        assert (i["codec"], i["pix_fmt"], i["width"], i["height"]) == ("h264", "yuv420p", W, H)
        assert i["n_frames"] == len(dec) == 75
        assert i["max_gop"] == 12 and i["n_keyframes"] == len(dec.keyframes) == 7
        assert dec.keyframes == list(range(0, 75, 12))
        assert i["has_b_frames"] >= 1 and not i["open_gop"] and not i["vfr"]
        assert i["fps"] == pytest.approx(25) and i["duration"] == pytest.approx(3.0)
        assert i["colorspace"] == "bt601" and i["color_range"] == "limited"
        assert dec.frame_time(25) == pytest.approx(1.0)
        assert dec.frame_cost(0) == (0, 1)
        key, cost = dec.frame_cost(23)
        assert key == 12 and 1 <= cost <= 12
    with Decoder(corpus.path("bf0.mp4")) as dec:
        assert dec.info["has_b_frames"] == 0
        assert dec.frame_cost(11) == (0, 12)      # IPPP: every picture is a reference
    for name in ("og264.mp4", "x265.mp4"):
        with Decoder(corpus.path(name)) as dec:
            assert dec.info["open_gop"], name
    with Decoder(corpus.path("vfr.mp4")) as dec:
        assert dec.info["vfr"]
        t = [dec.frame_time(k) for k in range(len(dec))]
        assert all(b > a for a, b in zip(t, t[1:]))
        assert len({round(b - a, 3) for a, b in zip(t, t[1:])}) > 1


def test_cli_info(corpus):
    p = cli("info", corpus.path("x265.mp4"), "--json", "--keyframes")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    with Decoder(corpus.path("x265.mp4")) as dec:
        i = dec.info
        assert j["codec"] == "hevc" and j["frames"] == len(dec) == len(corpus.md5("x265.mp4"))
        assert j["keyframe_ids"] == dec.keyframes and j["keyframes"] == i["n_keyframes"]
        assert j["open_gop"] is True and j["b_frames"] is True
        assert j["reorder_depth"] == i["has_b_frames"] and j["max_gop"] == i["max_gop"]
        assert (j["width"], j["height"], j["vfr"]) == (W, H, False)
    p = cli("info", corpus.path("vfr.mp4"))
    assert p.returncode == 0, p.stderr
    text = p.stdout
    for key in ("codec:", "size:", "frames:", "keyframes:", "B-frames:", "open GOP:", "fps:",
                "duration:", "colour:"):
        assert key in text, text
    assert "variable" in text and "320x240" in text


# --------------------------------------------------------------------------
# work done


@pytest.mark.parametrize("name", ["bf2.mp4", "bf3p.mp4", "og264.mp4", "x265.mp4", "el.mp4"])
def test_work_ratio_random_single_frames(corpus, name):
    with Decoder(corpus.path(name), cache_mb=0) as dec:
        rnd = random.Random(7)
        ids = rnd.sample(range(len(dec)), min(25, len(dec)))
        dec.reset_stats()
        for i in ids:
            dec.get_frames([i])
        s = dec.stats
        assert s["requests"] == len(ids) and s["frames_returned"] == len(ids)
        bound = sum(dec.frame_cost(i)[1] for i in ids)
        assert s["min_decodes"] == bound
        ratio = s["frames_decoded"] / s["min_decodes"]
        assert ratio <= 1.05, f"{name}: decoded {s['frames_decoded']} for a bound of {bound}"


def test_batch_decodes_each_gop_once(corpus):
    with Decoder(corpus.path("bf2.mp4"), cache_mb=0) as dec:
        ids = [70, 3, 5, 3, 40, 41, 5]
        dec.get_frames(ids)
        s = dec.stats
        assert s["frames_requested"] == len(ids) and s["frames_returned"] == len(ids)
        # Three GOPs touched, each decoded once: never more than their frames.
        assert s["frames_decoded"] <= 6 + 6 + 11
        assert s["frames_decoded"] <= 1.05 * s["min_decodes"]


# --------------------------------------------------------------------------
# multi-camera


def test_multidecoder_matches_decoders(corpus, tmp_path):
    paths = []
    for k in range(6):
        p = tmp_path / f"CAM_{k}.mp4"
        shutil.copy(corpus.path("x265.mp4" if k % 2 else "bf2.mp4"), p)
        paths.append(str(p))
    n = min(len(corpus.md5("x265.mp4")), len(corpus.md5("bf2.mp4")))
    rnd = random.Random(3)
    samples = [rnd.randrange(n) for _ in range(4)]
    reqs = [(cam, f) for f in samples for cam in range(6)]
    results = {}
    for threads in (1, 2):
        with MultiDecoder(paths, threads=threads) as m:
            assert len(m) == 6
            got = m.get_frames(reqs)
            assert isinstance(got, drivekit.Tensor) and got.shape == (len(reqs), H, W, 3)
            results[threads] = np.asarray(got).copy()
            one = m.get_sample(samples[0])
            assert np.array_equal(np.asarray(one), results[threads][:6])
            lst = m.get_frames(reqs[:4], stack=False)
            assert isinstance(lst, list) and len(lst) == 4 and lst[0].shape == (H, W, 3)
            for k in range(4):
                assert np.array_equal(np.asarray(lst[k]), results[threads][k])
            arr = m.get_frames(np.array(reqs[:6], dtype=np.int64))
            assert np.array_equal(np.asarray(arr), results[threads][:6])
            assert m.stats["frames_returned"] >= len(reqs)
    assert np.array_equal(results[1], results[2])
    for k, (cam, f) in enumerate(reqs):
        ref = corpus.rgb("x265.mp4" if cam % 2 else "bf2.mp4")[f]
        assert_rgb_equal(results[1][k], ref, f"camera {cam} frame {f}")


def test_multidecoder_mixed_sizes(corpus, tmp_path):
    small = str(tmp_path / "small.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-t", "1", *X264, small)
    with MultiDecoder([corpus.path("bf2.mp4"), corpus.path("bf0.mp4")]) as m:
        assert isinstance(m.get_frames([(0, 1), (1, 2)]), drivekit.Tensor)
    with MultiDecoder([corpus.path("bf2.mp4"), small], threads=2) as m:
        out = m.get_frames([(0, 1), (1, 2), (0, 1)])
        assert isinstance(out, list) and len(out) == 3
        assert out[0].shape == (H, W, 3) and out[1].shape == (120, 160, 3)
        assert np.array_equal(np.asarray(out[0]), corpus.rgb("bf2.mp4")[1])
        assert np.array_equal(np.asarray(out[1]), np.asarray(m[1].get_frames([2]))[0])
        with pytest.raises(drivekit.InvalidArgumentError, match="shape"):
            m.get_frames([(0, 1)], stack=True)
    # A common output size makes any rig stackable.
    with MultiDecoder([corpus.path("bf2.mp4"), small], size=(80, 60)) as m:
        assert m.get_sample(3).shape == (2, 60, 80, 3)


# --------------------------------------------------------------------------
# damaged input


def test_truncated_file(corpus):
    # A file cut at 60 % (moov first, so it opens): its frames are the pictures
    # whose packets are in the file; the one cut in half is a DecodeError, the
    # frames past the cut are out of range, and everything before is exact.
    want = corpus.md5("fast.mp4")
    path = corpus.path("trunc.mp4")
    E = drivekit._drivekit
    with Decoder(path) as dec:
        n = len(dec)
        assert 20 < n < len(want)
        frames, status = dec.get_frames(range(len(want)), errors="return")
        assert len(status) == len(want)
        ok = [i for i in range(len(want)) if status[i] == 0]
        bad = [i for i in range(len(want)) if status[i] != 0]
        first = bad[0]
        assert all(status[i] == 0 for i in range(first)) and first >= n - 12
        assert all(status[i] == E.ERANGE for i in range(n, len(want)))
        assert all(status[i] == E.EINVALIDDATA for i in bad if i < n)
        with Decoder(path, output="yuv") as raw:
            assert md5_rows(raw.get_frames(ok)) == [want[i] for i in ok]
        assert not np.asarray(frames)[bad].any()          # zero-filled, never a stale picture
        exc = drivekit.DecodeError if first < n else drivekit.RangeError
        with pytest.raises(exc) as ei:
            dec.get_frames([first - 1, first, first + 1])
        assert f"frame {first}:" in str(ei.value) and "trunc.mp4" in str(ei.value)
        with pytest.raises(exc, match=f"frame {first}"):
            dec.md5(first)
        assert dec.md5(first - 1) == want[first - 1]
    if os.access(DRIVEKIT, os.X_OK) and first < n:
        p = cli("framemd5", path, "--frames", "all", "--threads", "2")
        assert p.returncode == 1
        assert f"frame {first}:" in p.stderr and "trunc.mp4" in p.stderr
        assert p.stdout.splitlines() == [f"{i} {want[i]}" for i in range(first)]


def test_ffmpeg_log_level(corpus, capfd):
    # FFmpeg's own stderr messages follow the level set; drivekit's errors do not.
    import drivekit.video as video
    before = video.ffmpeg_log_level()
    assert before in video.FFMPEG_LOG_LEVELS
    path = corpus.path("trunc.mp4")

    def decode_all():
        with Decoder(path) as dec:
            _, status = dec.get_frames(range(len(dec)), errors="return")
            return [s for s in status if s]
    try:
        assert video.set_ffmpeg_log_level("error") == before
        capfd.readouterr()
        bad_loud = decode_all()
        loud = capfd.readouterr().err
        assert "Invalid NAL unit size" in loud
        assert video.set_ffmpeg_log_level("quiet") == "error"
        assert video.ffmpeg_log_level() == "quiet"
        bad_quiet = decode_all()
        assert capfd.readouterr().err == ""
        assert bad_quiet == bad_loud and bad_quiet
        for bad in ("loud", "", "INFO"):
            with pytest.raises(drivekit.InvalidArgumentError, match="unknown level"):
                video.set_ffmpeg_log_level(bad)
        with pytest.raises(drivekit.InvalidArgumentError):
            video.set_ffmpeg_log_level(16)
        assert video.ffmpeg_log_level() == "quiet"
    finally:
        video.set_ffmpeg_log_level(before)


def test_truncated_moov_at_end(corpus, tmp_path):
    with open(corpus.path("bf2.mp4"), "rb") as f:
        data = f.read()
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(drivekit.DecodeError, match="cut.mp4"):
        Decoder(str(p))


# --------------------------------------------------------------------------
# export, index, threads


def test_zero_copy_export(corpus):
    with Decoder(corpus.path("bf2.mp4")) as dec:
        t = dec.get_frames([1, 2])
        a = np.asarray(t)
        assert a.__array_interface__["data"][0] == t.data_ptr
        b = np.from_dlpack(t)
        assert b.__array_interface__["data"][0] == t.data_ptr
        tt = torch.from_dlpack(t)
        assert tt.data_ptr() == t.data_ptr and tt.shape == (2, H, W, 3)
        del tt
        del t
        assert np.array_equal(a, corpus.rgb("bf2.mp4")[[1, 2]])   # a keeps the memory alive
        one = dec[3]
        assert one.shape == (H, W, 3) and np.array_equal(one, corpus.rgb("bf2.mp4")[3])
        assert np.array_equal(dec[-1], corpus.rgb("bf2.mp4")[-1])
        assert np.array_equal(dec[10:16:2], corpus.rgb("bf2.mp4")[10:16:2])


def test_decode_into_reused_buffer(corpus):
    ref = corpus.rgb("bf3p.mp4")
    with Decoder(corpus.path("bf3p.mp4")) as dec:
        buf = np.full((4, H, W, 3), 7, np.uint8)
        for ids in ([0, 1, 2, 3], [90, 5, 5, 60]):
            assert dec.get_frames(ids, out=buf) is buf
            assert np.array_equal(buf, ref[ids])
        flat = bytearray(2 * H * W * 3)
        dec.get_frames([8, 9], out=flat)
        assert np.array_equal(np.frombuffer(flat, np.uint8).reshape(2, H, W, 3), ref[[8, 9]])
        got, status = dec.get_frames([1, len(dec)], out=buf[:2], errors="return")
        assert got is not None and status == [0, drivekit._drivekit.ERANGE]
        assert np.array_equal(buf[0], ref[1]) and not buf[1].any()
        with pytest.raises(drivekit.InvalidArgumentError, match="bytes"):
            dec.get_frames([1, 2, 3], out=buf)             # 4 frames of room for 3
        with pytest.raises((BufferError, ValueError)):
            dec.get_frames([1], out=buf[:1, ::2])           # not contiguous
        with pytest.raises((BufferError, TypeError)):
            dec.get_frames([1], out=bytes(H * W * 3))      # read-only


def test_index_file(corpus, tmp_path):
    src = tmp_path / "v.mp4"
    shutil.copy(corpus.path("og264.mp4"), src)
    ids = [50, 2, 30, 2]
    with Decoder(str(src), index="auto") as dec:
        ref = np.asarray(dec.get_frames(ids)).copy()
        info = dec.info
    assert (tmp_path / "v.mp4.dkidx").exists()
    with Decoder(str(src), index="auto") as dec:          # loaded, not scanned
        assert dec.info == info
        assert np.array_equal(np.asarray(dec.get_frames(ids)), ref)
    custom = tmp_path / "custom.idx"
    with Decoder(src, index=custom) as dec:               # path-like arguments
        assert len(dec) == info["n_frames"]
    assert custom.exists()
    custom.write_bytes(b"garbage" * 10)                    # corrupt: rebuilt, not trusted
    with Decoder(src, index=str(custom)) as dec:
        assert np.array_equal(np.asarray(dec.get_frames(ids)), ref)


def test_trim_keeps_the_index(corpus, tmp_path):
    src = tmp_path / "v.mp4"
    shutil.copy(corpus.path("bf3p.mp4"), src)
    ids = [90, 3, 77, 40]
    with Decoder(str(src)) as dec:
        ref = np.asarray(dec.get_frames(ids)).copy()
        m = dec.memory
        assert set(m) == {"index_bytes", "frame_cache_bytes", "packet_cache_bytes", "decoders"}
        assert m["decoders"] >= 1 and m["frame_cache_bytes"] > 0 and m["index_bytes"] > 0
        dec.trim()
        t = dec.memory
        assert t == {"index_bytes": m["index_bytes"], "frame_cache_bytes": 0,
                     "packet_cache_bytes": 0, "decoders": 0}
        before = dec.stats
        assert np.array_equal(np.asarray(dec.get_frames(ids)), ref)
        after = dec.stats
        assert after["frame_cache_hits"] == before["frame_cache_hits"]   # decoded again
        assert dec.memory["decoders"] >= 1
        dec.trim()
        os.utime(src, ns=(12345, 6789))     # the file changed since: refused
        with pytest.raises(drivekit.DrivekitIOError, match="changed since it was opened"):
            dec.get_frames([5])
    with MultiDecoder([str(src), corpus.path("bf2.mp4")]) as m:
        m.get_frames([(0, 1), (1, 2)])
        m.trim()
        assert all(d.memory["decoders"] == 0 for d in m.decoders)
    dec.close()
    with pytest.raises(drivekit.InvalidArgumentError):
        dec.trim()


def test_threads_share_a_decoder(corpus):
    ref = corpus.rgb("x265.mp4")
    with Decoder(corpus.path("x265.mp4"), threads=drivekit.Pool(2)) as dec:
        errors = []

        def work(seed):
            try:
                rnd = random.Random(seed)
                for _ in range(4):
                    ids = [rnd.randrange(len(dec)) for _ in range(5)]
                    if not np.array_equal(np.asarray(dec.get_frames(ids)), ref[ids]):
                        errors.append(f"seed {seed}: wrong frames {ids}")
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        ts = [threading.Thread(target=work, args=(s,)) for s in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors


# --------------------------------------------------------------------------
# errors


def test_bad_paths(tmp_path):
    missing = str(tmp_path / "missing.mp4")
    with pytest.raises(drivekit.NotFoundError) as ei:
        Decoder(missing)
    assert isinstance(ei.value, FileNotFoundError) and missing in str(ei.value)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(drivekit.DecodeError, match="notes.mp4"):
        Decoder(str(text))
    with pytest.raises(drivekit.Error):
        Decoder(str(tmp_path))                            # a folder
    with pytest.raises(drivekit.NotFoundError):
        MultiDecoder([missing, missing], threads=2)


def test_bad_arguments(corpus):
    path = corpus.path("bf2.mp4")
    with pytest.raises(drivekit.InvalidArgumentError, match="output"):
        Decoder(path, output="rgba")
    with pytest.raises(drivekit.InvalidArgumentError):
        Decoder(path, output="yuv", size=(160, 120))       # native output cannot be resized
    with pytest.raises(drivekit.InvalidArgumentError):
        Decoder(path, size=(-4, 10))
    with pytest.raises(drivekit.InvalidArgumentError):
        Decoder(path, size=(0, 0))
    with pytest.raises(ValueError):
        Decoder(path, threads=0)
    with pytest.raises(TypeError):
        Decoder(path, threads="2")
    with pytest.raises(drivekit.InvalidArgumentError):
        Decoder(path, cache_mb=-1)
    with pytest.raises(TypeError):
        Decoder(path, index=3)
    with pytest.raises(drivekit.InvalidArgumentError):
        Decoder(path, decoder_threads=-1)
    dec = Decoder(path)
    n = len(dec)
    with pytest.raises(drivekit.RangeError, match=f"frame {n}"):
        dec.get_frames([0, n])
    with pytest.raises(IndexError):
        dec.get_frames([-1])
    with pytest.raises(drivekit.RangeError):
        dec.frame_time(n)
    with pytest.raises(drivekit.RangeError):
        dec.md5(-1)
    frames, status = dec.get_frames([1, n, 2], errors="return")
    assert status == [0, drivekit._drivekit.ERANGE, 0]
    assert np.array_equal(np.asarray(frames)[[0, 2]], np.asarray(dec.get_frames([1, 2])))
    with pytest.raises(TypeError):
        dec.get_frames("abc")
    with pytest.raises(TypeError):
        dec.get_frames([1.5])
    with pytest.raises(TypeError):
        dec.get_frames(np.array([1.0, 2.0]))
    with pytest.raises(TypeError):
        dec.get_frames(3)
    with pytest.raises(drivekit.InvalidArgumentError):
        dec.get_frames([1], errors="ignore")
    assert dec.get_frames(np.array([2, 1], dtype=np.int32)).shape == (2, H, W, 3)
    assert dec.get_frames([]).shape == (0, H, W, 3)
    dec.close()
    assert dec.closed
    with pytest.raises(drivekit.InvalidArgumentError, match="closed"):
        dec.get_frames([1])
    dec.close()                                            # twice is fine
    with MultiDecoder([path, path]) as m:
        with pytest.raises(drivekit.InvalidArgumentError, match="video 2"):
            m.get_frames([(0, 1), (2, 1)])
        with pytest.raises(TypeError):
            m.get_frames([(0, 1, 2)])
        with pytest.raises(drivekit.RangeError, match=f"frame {n}"):
            m.get_frames([(0, 1), (1, n)])
        with pytest.raises(drivekit.InvalidArgumentError):
            m.get_sample([1, 2, 3])
    with pytest.raises(TypeError):
        MultiDecoder(path)


def test_cli_errors(corpus, tmp_path):
    path = corpus.path("bf2.mp4")
    n = len(corpus.md5("bf2.mp4"))
    usage = [
        [],
        ["frobnicate", path],
        ["framemd5", path],                                # no --frames
        ["framemd5", path, "--frames", "3,x"],
        ["framemd5", path, "--frames", "9-3"],
        ["framemd5", path, "--frames", ""],
        ["framemd5", "--frames", "1"],                     # no FILE
        ["framemd5", path, path, "--frames", "1"],
        ["framemd5", path, "--frames", "1", "--threads", "0"],
        ["framemd5", path, "--frames", "1", "--bogus"],
        ["info", path, "--frames", "1"],                   # not an info option
        ["extract", path, "--frames", "1"],                # no --out
        ["extract", path, "--frames", "1", "--out", str(tmp_path), "--size", "axb"],
    ]
    for args in usage:
        p = cli(*args)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert "usage:" in p.stderr
    p = cli("info", str(tmp_path / "missing.mp4"))
    assert p.returncode == 1 and "missing.mp4" in p.stderr
    p = cli("framemd5", path, "--frames", f"1,{n}")
    assert p.returncode == 1 and f"frame {n}" in p.stderr and "bf2.mp4" in p.stderr
    p = cli("framemd5", path, "--frames", f"{n - 2}-{n + 5}")
    assert p.returncode == 1 and f"frame {n + 5}" in p.stderr
    p = cli("--help")
    assert p.returncode == 0 and "framemd5" in p.stdout
    p = subprocess.run([DRIVEKIT, "--help"], capture_output=True, text=True)
    assert "video" in p.stdout


def test_cli_index_option(corpus, tmp_path):
    src = tmp_path / "v.mkv"
    shutil.copy(corpus.path("bf2.mkv"), src)
    want = corpus.md5("bf2.mkv")
    for _ in range(2):                                    # written, then loaded
        p = cli("framemd5", str(src), "--frames", "5,40", "--index", "auto", "--threads", "1")
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines() == [f"5 {want[5]}", f"40 {want[40]}"]
        assert (tmp_path / "v.mkv.dkidx").exists()
    idx = tmp_path / "elsewhere.idx"
    p = cli("info", str(src), "--index", str(idx))
    assert p.returncode == 0 and idx.exists() and f"frames:      {len(want)}" in p.stdout


def test_cli_extract(corpus, tmp_path):
    out = tmp_path / "frames" / "sub"
    p = cli("extract", corpus.path("og264.mp4"), "--frames", "17,3,17,60-61", "--out", str(out),
            "--threads", "2")
    assert p.returncode == 0, p.stderr
    names = sorted(os.listdir(out))
    assert names == ["frame_000003.png", "frame_000017.png", "frame_000060.png",
                     "frame_000061.png"]
    ref = corpus.rgb("og264.mp4")
    for k in (3, 17, 60, 61):
        img = np.asarray(image.read(str(out / f"frame_{k:06d}.png")))
        assert_rgb_equal(img, ref[k], f"frame_{k:06d}.png")
    p = cli("extract", corpus.path("og264.mp4"), "--frames", "5", "--out", str(tmp_path / "s"),
            "--size", "160x0")
    assert p.returncode == 0, p.stderr
    assert np.asarray(image.read(str(tmp_path / "s" / "frame_000005.png"))).shape == (120, 160, 3)
    p = cli("extract", corpus.path("trunc.mp4"), "--frames", "all", "--out", str(tmp_path / "t"))
    assert p.returncode == 1 and "trunc.mp4" in p.stderr and "frame " in p.stderr
