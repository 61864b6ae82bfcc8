"""Tests of the drivekit Python package: errors, Tensor export, images, RNG.

Run: PYTHONPATH=build/python /usr/bin/python3 -m pytest -q tests/python
"""
import ctypes
import gc
import os
import threading

import numpy as np
import pytest

import drivekit
from drivekit import image, rng

import torch  # Debian's python3-torch, installed by scripts/setup
import torch.utils.dlpack



def gradient(h, w, c=3, seed=0):
    """A smooth test image (JPEG-friendly) with a little noise."""
    y, x = np.mgrid[0:h, 0:w]
    chans = [(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 127 // max(h + w - 2, 1))]
    img = np.stack(chans[:c] if c <= 3 else chans + [np.full_like(x, 200)], axis=-1)
    noise = np.random.default_rng(seed).integers(0, 4, img.shape)
    return np.ascontiguousarray(np.clip(img + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def jpeg_bytes():
    return image.encode_jpeg(gradient(48, 64), quality=90)


def settle():
    gc.collect()
    gc.collect()


# --------------------------------------------------------------------------
# import, version, exceptions


def test_version():
    assert drivekit.__version__ == drivekit.version()
    parts = drivekit.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)
    major, minor, patch = (int(p) for p in parts)
    assert drivekit._drivekit.VERSION_HEX == (major << 16) | (minor << 8) | patch


def test_status_str():
    assert "DK_EINVALIDDATA" in drivekit.status_str(drivekit._drivekit.EINVALIDDATA)
    assert drivekit.status_str(12345) == "unknown status"


def test_exception_hierarchy():
    pairs = {
        drivekit.InvalidArgumentError: ValueError,
        drivekit.DecodeError: ValueError,
        drivekit.NotFoundError: FileNotFoundError,
        drivekit.DrivekitIOError: OSError,
        drivekit.OutOfMemoryError: MemoryError,
        drivekit.UnsupportedError: NotImplementedError,
        drivekit.RangeError: IndexError,
        drivekit.SizeOverflowError: OverflowError,
    }
    for cls, builtin in pairs.items():
        assert issubclass(cls, drivekit.Error), cls
        assert issubclass(cls, builtin), cls
    assert issubclass(drivekit.Error, Exception)


def test_corrupt_jpeg_raises_decode_error(jpeg_bytes):
    bad = bytearray(jpeg_bytes)
    bad[len(bad) // 2:] = b"\x00" * (len(bad) - len(bad) // 2)
    with pytest.raises(drivekit.DecodeError) as ei:
        image.decode_jpeg(bytes(bad[: len(bad) // 2 + 16]))
    e = ei.value
    assert isinstance(e, ValueError)
    assert e.status == drivekit._drivekit.EINVALIDDATA
    # The C message: "function(): what, where".
    assert "(): " in str(e)


def test_not_a_jpeg_raises_decode_error():
    with pytest.raises(drivekit.DecodeError, match=r"\(\): "):
        image.decode_jpeg(b"this is not a jpeg at all")
    with pytest.raises(drivekit.DecodeError):
        image.jpeg_info(b"\xff\xd8\xff")
    with pytest.raises(drivekit.DecodeError):
        image.decode_png(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)


def test_missing_file_raises_not_found(tmp_path):
    path = str(tmp_path / "no_such_image.jpg")
    with pytest.raises(drivekit.NotFoundError) as ei:
        image.read(path)
    assert isinstance(ei.value, FileNotFoundError)
    assert isinstance(ei.value, drivekit.Error)
    assert ei.value.status == drivekit._drivekit.ENOENT
    assert path in str(ei.value)


def test_unsupported_file(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"GIF89a" + b"\x00" * 64)
    with pytest.raises(drivekit.UnsupportedError):
        image.read(str(p))
    with pytest.raises(drivekit.UnsupportedError):
        image.write(str(tmp_path / "x.bmp"), gradient(4, 4))


def test_bad_arguments(jpeg_bytes):
    with pytest.raises(ValueError, match="format"):
        image.decode_jpeg(jpeg_bytes, format="yuv")
    with pytest.raises(drivekit.InvalidArgumentError):
        image.decode_jpeg(jpeg_bytes, format="yuv")
    with pytest.raises(ValueError):
        image.decode_jpeg(jpeg_bytes, scale=(3, 7))
    with pytest.raises(TypeError):
        image.decode_jpeg(12345)
    with pytest.raises(TypeError, match="uint8"):
        image.encode_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        image.encode_png(gradient(8, 8)[:, ::2])
    with pytest.raises(ValueError, match="shape"):
        image.encode_png(np.zeros(16, np.uint8))
    with pytest.raises(ValueError):
        image.encode_jpeg(gradient(8, 8), quality=0)
    with pytest.raises(ValueError):
        image.encode_jpeg(gradient(8, 8), format="rgba")   # 3 channels, 4 expected
    with pytest.raises(TypeError):
        drivekit.Tensor()
    with pytest.raises(ValueError):
        drivekit.Pool(0)
    with pytest.raises(OverflowError):
        rng.u32(-1, 0, 4)


# --------------------------------------------------------------------------
# Tensor export


def test_tensor_attributes(jpeg_bytes):
    t = image.decode_jpeg(jpeg_bytes)
    assert isinstance(t, drivekit.Tensor)
    assert t.shape == (48, 64, 3)
    assert t.ndim == 3
    assert t.dtype == "uint8"
    assert t.strides == (64 * 3, 3, 1)
    assert t.nbytes == 48 * 64 * 3
    assert "Tensor" in repr(t) and "uint8" in repr(t)
    f = rng.uniform(1, 2, 10)
    assert f.dtype == "float32" and f.shape == (10,) and f.strides == (4,)
    assert rng.u32(1, 2, 3).dtype == "uint32"
    assert t.__dlpack_device__() == (1, 0)


def test_buffer_protocol(jpeg_bytes):
    t = image.decode_jpeg(jpeg_bytes)
    a = np.asarray(t)
    assert a.shape == t.shape and a.dtype == np.uint8 and a.strides == t.strides
    assert a.__array_interface__["data"][0] == t.data_ptr
    assert a.flags.writeable
    m = memoryview(t)
    assert m.format == "B" and m.shape == t.shape and m.strides == t.strides
    assert m.nbytes == t.nbytes and not m.readonly
    a[0, 0, 0] = 17
    assert m[0, 0, 0] == 17
    m.release()
    f = rng.uniform(3, 4, 8)
    mf = memoryview(f)
    assert mf.format == "f" and mf.itemsize == 4
    assert np.array_equal(np.asarray(f), np.frombuffer(mf, dtype=np.float32))
    u = rng.u32(3, 4, 8)
    assert np.asarray(u).dtype == np.uint32
    assert np.array_equal(np.asarray(t), t.numpy())


def test_from_dlpack_numpy(jpeg_bytes):
    t = image.decode_jpeg(jpeg_bytes)
    a = np.from_dlpack(t)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    assert a.strides == t.strides
    assert a.__array_interface__["data"][0] == t.data_ptr
    f = rng.uniform(5, 6, 100)
    af = np.from_dlpack(f)
    assert af.dtype == np.float32 and af.shape == (100,)
    assert np.all((af >= 0) & (af < 1))


def test_from_dlpack_torch_shares_memory(jpeg_bytes):
    t = image.decode_jpeg(jpeg_bytes)
    a = np.from_dlpack(t)
    tt = torch.utils.dlpack.from_dlpack(t)
    tt2 = torch.from_dlpack(t)
    assert tuple(tt.shape) == t.shape
    assert tt.dtype == torch.uint8
    assert tt.stride() == tuple(s // t.itemsize for s in t.strides)
    assert tt.data_ptr() == a.__array_interface__["data"][0] == t.data_ptr
    assert tt2.data_ptr() == tt.data_ptr()
    # Write through numpy, read through torch and the DLPack numpy view. (numpy
    # < 2 marks DLPack imports read-only, so write through the buffer-protocol view.)
    w = np.asarray(t)
    assert w.flags.writeable
    w[5, 7, :] = (1, 2, 3)
    assert tt[5, 7].tolist() == [1, 2, 3]
    assert a[5, 7].tolist() == [1, 2, 3]
    tt[0, 0, 0] = 99
    assert a[0, 0, 0] == 99 and w[0, 0, 0] == 99
    f = rng.uniform(7, 8, 64)
    tf = torch.from_dlpack(f)
    assert tf.dtype == torch.float32
    assert np.array_equal(tf.numpy(), np.asarray(f))


def test_dlpack_capsules(jpeg_bytes):
    t = image.decode_jpeg(jpeg_bytes)
    legacy = t.__dlpack__()
    assert "dltensor" in repr(legacy) and "versioned" not in repr(legacy)
    v = t.__dlpack__(max_version=(1, 0))
    assert "dltensor_versioned" in repr(v)
    old = t.__dlpack__(max_version=(0, 8))
    assert "versioned" not in repr(old)
    is_valid = ctypes.pythonapi.PyCapsule_IsValid
    is_valid.restype = ctypes.c_int
    is_valid.argtypes = [ctypes.py_object, ctypes.c_char_p]
    assert is_valid(legacy, b"dltensor") == 1
    assert is_valid(v, b"dltensor_versioned") == 1
    # Versioned struct: version {1, 0} first, flags (not read-only) after the deleter.
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype = ctypes.c_void_p
    get_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]
    p = get_ptr(v, b"dltensor_versioned")
    major, minor = (ctypes.c_uint32 * 2).from_address(p)
    assert (major, minor) == (1, 0)
    flags = ctypes.c_uint64.from_address(p + 24).value
    assert flags == 0
    data = ctypes.c_void_p.from_address(p + 32).value
    assert data == t.data_ptr
    assert t.__dlpack__(stream=None, dl_device=(1, 0)) is not None
    with pytest.raises(BufferError):
        t.__dlpack__(dl_device=(2, 0))
    with pytest.raises(BufferError):
        t.__dlpack__(stream=1)
    c = t.__dlpack__(max_version=(1, 0), copy=True)
    pc = get_ptr(c, b"dltensor_versioned")
    assert ctypes.c_uint64.from_address(pc + 24).value == 2  # IS_COPIED
    assert ctypes.c_void_p.from_address(pc + 32).value != t.data_ptr
    del legacy, v, old, c


def test_memory_freed_exactly_once(jpeg_bytes):
    settle()
    base = drivekit.alloc_live()
    t = image.decode_jpeg(jpeg_bytes)
    f = rng.uniform(9, 9, 1000, threads=2)
    assert drivekit.alloc_live() > base
    a = np.from_dlpack(t)
    b = np.asarray(t)
    m = memoryview(f)
    consumers = [a, b, m, torch.from_dlpack(t), torch.utils.dlpack.from_dlpack(f)]
    expect = np.asarray(t).copy()
    # Dropping the producer keeps the memory alive for every consumer.
    del t, f
    settle()
    assert drivekit.alloc_live() > base
    assert np.array_equal(a, expect) and np.array_equal(b, expect)
    assert np.array_equal(consumers[3].numpy(), expect)
    b[...] = 3  # still writable, still valid
    assert int(a.sum()) == 3 * expect.size
    del a, b, m, consumers, expect
    settle()
    assert drivekit.alloc_live() == base


def test_unconsumed_capsules_do_not_leak(jpeg_bytes):
    settle()
    base = drivekit.alloc_live()
    t = image.decode_jpeg(jpeg_bytes)
    caps = [t.__dlpack__(), t.__dlpack__(max_version=(1, 0)),
            t.__dlpack__(copy=True), t.__dlpack__(max_version=(1, 1), copy=True)]
    del t
    settle()
    assert drivekit.alloc_live() > base
    del caps
    settle()
    assert drivekit.alloc_live() == base


def test_torch_consumes_capsule_once(jpeg_bytes):
    settle()
    base = drivekit.alloc_live()
    t = image.decode_jpeg(jpeg_bytes)
    cap = t.__dlpack__()
    x = torch.utils.dlpack.from_dlpack(cap)
    with pytest.raises(Exception):
        torch.utils.dlpack.from_dlpack(cap)   # renamed "used_dltensor"
    del t, cap
    settle()
    assert x.sum().item() > 0
    del x
    settle()
    assert drivekit.alloc_live() == base


def test_empty_tensor():
    e = rng.u32(0, 0, 0)
    assert e.shape == (0,) and e.nbytes == 0
    assert np.asarray(e).shape == (0,)
    assert np.from_dlpack(e).shape == (0,)
    assert memoryview(e).nbytes == 0


# --------------------------------------------------------------------------
# images


@pytest.mark.parametrize("channels,fmt", [(3, "rgb"), (1, "gray")])
def test_jpeg_round_trip(channels, fmt):
    src = gradient(40, 56, channels)
    enc = image.encode_jpeg(src if channels > 1 else src[:, :, 0], quality=95, format=fmt)
    assert enc[:2] == b"\xff\xd8"
    info = image.jpeg_info(enc)
    assert (info["width"], info["height"]) == (56, 40)
    assert info["colorspace"] == ("gray" if channels == 1 else "ycbcr")
    out = np.asarray(image.decode_jpeg(enc, format=fmt))
    assert out.shape == (40, 56, channels)
    assert np.abs(out.astype(int) - src.astype(int)).mean() < 4


def test_jpeg_formats_and_444():
    src = gradient(32, 32)
    enc = image.encode_jpeg(src, subsamp444=True)
    assert image.jpeg_info(enc)["subsampling"] == 444
    assert image.jpeg_info(image.encode_jpeg(src))["subsampling"] == 420
    rgb = np.asarray(image.decode_jpeg(enc, format="rgb"))
    bgr = np.asarray(image.decode_jpeg(enc, format="bgr"))
    rgba = np.asarray(image.decode_jpeg(enc, format="rgba"))
    gray = np.asarray(image.decode_jpeg(enc, format="gray"))
    assert np.array_equal(bgr, rgb[:, :, ::-1])
    assert rgba.shape == (32, 32, 4) and np.array_equal(rgba[:, :, :3], rgb)
    assert gray.shape == (32, 32, 1)
    # BGR input encodes to the same picture as RGB input.
    enc_bgr = image.encode_jpeg(np.ascontiguousarray(src[:, :, ::-1]), format="bgr",
                                subsamp444=True)
    assert np.abs(np.asarray(image.decode_jpeg(enc_bgr)).astype(int) - rgb).max() <= 2


def test_jpeg_scaled_decode():
    enc = image.encode_jpeg(gradient(100, 150))
    assert image.decode_jpeg(enc, scale=(1, 2)).shape == (50, 75, 3)
    assert image.decode_jpeg(enc, scale=(1, 4)).shape == (25, 38, 3)   # ceil(150 / 4)
    assert image.decode_jpeg(enc, scale=(1, 8)).shape == (13, 19, 3)
    assert image.decode_jpeg(enc, scale=(1, 1)).shape == (100, 150, 3)
    # Smallest factor whose output still covers 60 x 40.
    t = image.decode_jpeg(enc, min_size=(60, 40))
    assert t.shape[1] >= 60 and t.shape[0] >= 40 and t.shape[1] < 150
    assert image.decode_jpeg(enc, fast_dct=True).shape == (100, 150, 3)


def test_png_round_trip():
    for c, fmt in [(3, "rgb"), (4, "rgba"), (1, "gray")]:
        src = gradient(21, 13, c)
        enc = image.encode_png(src)
        assert enc[:8] == b"\x89PNG\r\n\x1a\n"
        out = np.asarray(image.decode_png(enc, fmt))
        assert out.shape == (21, 13, c)
        assert np.array_equal(out, src)
    # 2-D input is gray; a Tensor is accepted as input too.
    src = gradient(9, 11, 1)[:, :, 0]
    assert np.array_equal(np.asarray(image.decode_png(image.encode_png(src), "gray"))[:, :, 0], src)
    t = image.decode_png(image.encode_png(gradient(5, 6)))
    assert np.array_equal(np.asarray(image.decode_png(image.encode_png(t))), np.asarray(t))


def test_read_write_files(tmp_path):
    src = gradient(30, 40)
    png = tmp_path / "a.png"
    jpg = tmp_path / "b.jpg"
    image.write(str(png), src)
    image.write(jpg, src, quality=90)          # os.PathLike works too
    assert np.array_equal(np.asarray(image.read(png)), src)
    j = np.asarray(image.read(str(jpg)))
    assert j.shape == src.shape and np.abs(j.astype(int) - src).mean() < 4
    assert image.read(jpg, scale=(1, 2)).shape == (15, 20, 3)
    assert image.read(png, format="gray").shape == (30, 40, 1)


def test_decode_accepts_bytes_like(jpeg_bytes):
    ref = np.asarray(image.decode_jpeg(jpeg_bytes))
    for data in (bytearray(jpeg_bytes), memoryview(jpeg_bytes), np.frombuffer(jpeg_bytes, np.uint8)):
        assert np.array_equal(np.asarray(image.decode_jpeg(data)), ref)


def test_gil_released_during_decode():
    big = image.encode_jpeg(gradient(1536, 2048), quality=95)
    ref = np.asarray(image.decode_jpeg(big))
    results = [None] * 4
    errors = []
    progress = [0]
    stop = threading.Event()

    def decode(i):
        try:
            for _ in range(3):
                results[i] = np.asarray(image.decode_jpeg(big))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    def count():
        while not stop.is_set():
            progress[0] += 1

    counter = threading.Thread(target=count)
    counter.start()
    workers = [threading.Thread(target=decode, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    counter.join()
    assert not errors
    for r in results:
        assert np.array_equal(r, ref)
    assert progress[0] > 0   # the pure-Python thread ran meanwhile (no timing asserted)


# --------------------------------------------------------------------------
# RNG


def test_philox_known_answers():
    assert rng.philox4x32((0, 0, 0, 0), (0, 0)) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    m = 0xFFFFFFFF
    assert rng.philox4x32((m, m, m, m), (m, m)) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)
    with pytest.raises(OverflowError):
        rng.philox4x32((1 << 32, 0, 0, 0), (0, 0))
    with pytest.raises(TypeError):
        rng.philox4x32((0, 0, 0), (0, 0))


def test_rng_independent_of_threads():
    n = 100003
    ref = np.asarray(rng.uniform(42, 7, n, threads=1)).copy()
    assert np.all((ref >= 0) & (ref < 1))
    assert 0.45 < ref.mean() < 0.55
    for th in (2, 4):
        assert np.array_equal(np.asarray(rng.uniform(42, 7, n, threads=th)), ref)
    pool = drivekit.Pool(3)
    assert pool.threads == 3
    assert np.array_equal(np.asarray(rng.uniform(42, 7, n, threads=pool)), ref)
    u = np.asarray(rng.u32(42, 7, n, threads=pool))
    assert np.array_equal(np.asarray(rng.u32(42, 7, n)), u)
    del pool
    # Offsets address the same stream.
    assert np.array_equal(np.asarray(rng.u32(42, 7, 10, offset=5)), u[5:15])
    # Streams and seeds differ.
    assert not np.array_equal(np.asarray(rng.u32(42, 8, 10)), u[:10])
    assert not np.array_equal(np.asarray(rng.u32(43, 7, 10)), u[:10])


def test_rng_u32_matches_philox_block():
    # Word i of stream (seed, stream): counter = (position, stream), key = seed.
    # The first four words are one Philox block; check they are a permutation of it.
    words = sorted(np.asarray(rng.u32(5, 0, 4)).tolist())
    block = sorted(rng.philox4x32((0, 0, 0, 0), (5, 0)))
    assert words == block


@pytest.mark.parametrize("max_version", [None, (1, 0)])
def test_consumer_protocol_by_hand(jpeg_bytes, max_version):
    """Act as a DLPack consumer: take ownership by renaming the capsule, then
    call the deleter. The capsule must not free again; nothing may leak."""
    settle()
    base = drivekit.alloc_live()
    t = image.decode_jpeg(jpeg_bytes)
    versioned = max_version is not None
    name = b"dltensor_versioned" if versioned else b"dltensor"
    cap = t.__dlpack__(max_version=max_version)
    api = ctypes.pythonapi
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    api.PyCapsule_SetName.restype = ctypes.c_int
    api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
    p = api.PyCapsule_GetPointer(cap, name)
    used = ctypes.c_char_p(b"used_" + name)   # must outlive the capsule
    assert api.PyCapsule_SetName(cap, used) == 0
    dl = p + 32 if versioned else p             # DLTensor inside the managed struct
    ndim = ctypes.c_int32.from_address(dl + 16).value
    code, bits = ctypes.c_uint8.from_address(dl + 20).value, ctypes.c_uint8.from_address(dl + 21).value
    shape_p = ctypes.c_void_p.from_address(dl + 24).value
    strides_p = ctypes.c_void_p.from_address(dl + 32).value
    assert (ndim, code, bits) == (3, 1, 8)
    assert list((ctypes.c_int64 * 3).from_address(shape_p)) == [48, 64, 3]
    assert list((ctypes.c_int64 * 3).from_address(strides_p)) == [192, 3, 1]  # elements
    del cap, t
    settle()
    assert drivekit.alloc_live() > base        # the consumer still owns the tensor
    deleter_off = 16 if versioned else 56
    deleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(ctypes.c_void_p.from_address(p + deleter_off).value)
    deleter(p)
    assert drivekit.alloc_live() == base


def test_shared_pool_from_several_python_threads():
    pool = drivekit.Pool(4)
    ref = np.asarray(rng.uniform(11, 3, 50000)).copy()
    out = [None] * 6
    def work(i):
        out[i] = np.asarray(rng.uniform(11, 3, 50000, threads=pool)).copy()
    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(out))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for o in out:
        assert np.array_equal(o, ref)


def test_buffer_cache_reuses_large_buffers():
    settle()
    assert drivekit.buffer_cache_stats()["limit"] == drivekit.BUFFER_CACHE_DEFAULT
    base = drivekit.alloc_live()
    n = 1 << 19  # 2 MiB of float32
    a = rng.uniform(5, 0, n)
    ptr = a.data_ptr
    want = np.asarray(a).copy()
    del a
    settle()
    st = drivekit.buffer_cache_stats()
    assert st["blocks"] >= 1 and st["bytes"] >= 4 * n
    assert drivekit.alloc_live() == base  # kept blocks are not live
    hits = st["hits"]
    b = rng.uniform(5, 0, n)  # same size: the kept block, with new contents
    assert b.data_ptr == ptr
    assert np.array_equal(np.asarray(b), want)
    assert drivekit.buffer_cache_stats()["hits"] == hits + 1
    t = torch.from_dlpack(b)
    del b
    settle()
    # A consumer keeps the block out of the cache until it lets go.
    c = rng.uniform(6, 0, n)
    assert c.data_ptr != ptr
    assert torch.equal(t, torch.from_numpy(want))
    del t, c
    settle()
    assert drivekit.alloc_live() == base
    # 0 frees what is kept and turns the cache off; the default comes back.
    st = drivekit.set_buffer_cache(0)
    assert st["previous_limit"] == drivekit.BUFFER_CACHE_DEFAULT
    assert st["blocks"] == 0 and st["bytes"] == 0 and st["limit"] == 0
    d = rng.uniform(5, 0, n)
    del d
    settle()
    assert drivekit.buffer_cache_stats()["blocks"] == 0
    assert drivekit.set_buffer_cache()["limit"] == drivekit.BUFFER_CACHE_DEFAULT
    for bad in (-1, 1.5, "1", True, None):
        with pytest.raises(drivekit.InvalidArgumentError):
            drivekit.set_buffer_cache(bad)
