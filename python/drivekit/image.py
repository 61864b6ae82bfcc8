"""JPEG and PNG images (libjpeg-turbo and libpng underneath).

Decoders return a :class:`drivekit.Tensor` of shape ``(H, W, C)`` and dtype
uint8 (C = 3 for ``"rgb"``/``"bgr"``, 4 for ``"rgba"``, 1 for ``"gray"``);
``numpy.asarray(t)`` or ``torch.from_dlpack(t)`` view it without a copy.
Encoders take any C-contiguous uint8 array exporting the buffer protocol
(numpy arrays, Tensors) of shape ``(H, W)`` or ``(H, W, C)`` and return bytes.
Encoded input may be any bytes-like object (bytes, bytearray, memoryview,
a uint8 numpy array).

All functions release the GIL while they work and may be called from several
threads at once.
"""

from . import _drivekit

__all__ = ["jpeg_info", "decode_jpeg", "encode_jpeg", "decode_png", "encode_png", "read", "write"]


def jpeg_info(data):
    """Read a JPEG header without decoding the image.

    :param data: the encoded JPEG (bytes-like).
    :returns: ``dict`` with ``width`` and ``height`` (int), ``subsampling``
        (int: 444, 422, 420, 440, 411 or 400 for gray; None when unknown) and
        ``colorspace`` (str: "ycbcr", "gray", "rgb", "cmyk" or "ycck").
    :raises DecodeError: not a JPEG or a corrupt header.
    """
    return _drivekit.jpeg_info(data)


def decode_jpeg(data, *, format="rgb", scale=None, min_size=None, fast_dct=False,
                allow_warnings=False):
    """Decode a JPEG.

    :param data: the encoded JPEG (bytes-like).
    :param format: output layout, ``"rgb"``, ``"bgr"``, ``"rgba"`` or ``"gray"``.
    :param scale: ``None`` or ``(num, den)``: decode at ``ceil(size * num / den)``
        in the DCT domain (fast); libjpeg-turbo supports n/8 for n = 1..16.
    :param min_size: ``None`` or ``(width, height)``: pick the smallest
        supported scale whose output is at least this large (never upscales).
        Overrides ``scale``.
    :param fast_dct: use the faster, slightly less accurate inverse DCT.
    :param allow_warnings: accept data libjpeg only warns about (e.g. a
        truncated scan filled with grey) instead of raising DecodeError.
    :returns: :class:`drivekit.Tensor` ``(H, W, C)`` uint8.
    :raises DecodeError: corrupt or truncated data (the message says why).
    :raises InvalidArgumentError: a bad format or unsupported scale.
    """
    return _drivekit.decode_jpeg(data, format=format, scale=scale, min_size=min_size,
                                 fast_dct=fast_dct, allow_warnings=allow_warnings)


def encode_jpeg(image, quality=95, format=None, subsamp444=False):
    """Encode an image as JPEG.

    :param image: C-contiguous uint8 array ``(H, W)`` or ``(H, W, C)``.
    :param quality: 1..100.
    :param format: pixel layout of ``image``: ``"rgb"``, ``"bgr"``, ``"rgba"``
        or ``"gray"``; ``None`` infers it from C (1 gray, 3 rgb, 4 rgba).
    :param subsamp444: keep full chroma resolution (4:4:4) instead of 4:2:0.
    :returns: the JPEG file as ``bytes``.
    :raises InvalidArgumentError: channel count and format disagree, bad quality.
    :raises TypeError: ``image`` is not a uint8 buffer.
    """
    return _drivekit.encode_jpeg(image, quality, format, subsamp444)


def decode_png(data, format="rgb"):
    """Decode a PNG to 8 bits per channel (16-bit sources are reduced).

    :param data: the encoded PNG (bytes-like).
    :param format: ``"rgb"``, ``"rgba"`` or ``"gray"`` (``"bgr"`` is not offered).
    :returns: :class:`drivekit.Tensor` ``(H, W, C)`` uint8.
    :raises DecodeError: corrupt data, with libpng's reason (signature, CRC, truncation).
    """
    return _drivekit.decode_png(data, format)


def encode_png(image):
    """Encode an image as PNG.

    :param image: C-contiguous uint8 array ``(H, W)`` or ``(H, W, C)`` with
        C = 1, 3 or 4 (gray, RGB, RGBA).
    :returns: the PNG file as ``bytes``.
    """
    return _drivekit.encode_png(image)


def read(path, *, format="rgb", scale=None, min_size=None, fast_dct=False,
         allow_warnings=False):
    """Load a JPEG or PNG file, recognised by its signature (not its name).

    :param path: ``str``, ``bytes`` or ``os.PathLike``.
    :param format, scale, min_size, fast_dct, allow_warnings: as for
        :func:`decode_jpeg`; for PNG only ``format`` is used.
    :returns: :class:`drivekit.Tensor` ``(H, W, C)`` uint8.
    :raises NotFoundError: the file does not exist (also FileNotFoundError).
    :raises DrivekitIOError: it cannot be read (also OSError).
    :raises DecodeError: corrupt data.
    :raises UnsupportedError: neither JPEG nor PNG.
    """
    return _drivekit.read_image(path, format=format, scale=scale, min_size=min_size,
                                fast_dct=fast_dct, allow_warnings=allow_warnings)


def write(path, image, quality=95):
    """Save an image as PNG or JPEG, chosen by the extension (.png, .jpg, .jpeg).

    The file is written atomically (temporary file + rename).

    :param path: ``str``, ``bytes`` or ``os.PathLike``.
    :param image: C-contiguous uint8 array ``(H, W)`` or ``(H, W, C)``,
        C = 1, 3 or 4 (RGBA only for PNG).
    :param quality: JPEG quality 1..100 (ignored for PNG).
    :raises UnsupportedError: another extension.
    :raises DrivekitIOError: the file cannot be written.
    """
    _drivekit.write_image(path, image, quality)
