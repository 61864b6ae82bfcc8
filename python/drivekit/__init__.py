"""drivekit: a C11 toolkit for the autonomous-driving model lifecycle.

The Python package is a thin layer over the C library (``_drivekit``):

* :class:`Tensor` -- arrays owned by drivekit memory, exported without copies
  through the buffer protocol (``numpy.asarray``, ``memoryview``) and DLPack
  (``numpy.from_dlpack``, ``torch.from_dlpack``).
* :class:`Pool` -- an explicit thread pool to pass as ``threads=``.
* :func:`set_buffer_cache` -- how much released large-buffer memory is kept for
  reuse (512 MiB by default), so repeated calls do not fault in fresh pages.
* :mod:`drivekit.image` -- JPEG/PNG decoding and encoding.
* :mod:`drivekit.rng` -- counter-based Philox random numbers.
* :mod:`drivekit.camera` -- camera models (pinhole, OpenCV, fisheye, f-theta),
  lidar scan patterns and the nuScenes-like sensor rig.
* :mod:`drivekit.video` -- frame-exact on-demand video decoding (Decoder,
  MultiDecoder for multi-camera samples).
* :mod:`drivekit.sim` -- Gaussian-splat scenes (3DGS PLY) rendered for any
  camera model (Scene, load_ply).
* :mod:`drivekit.ragged` -- RaggedBatch, batched indexing ops, batched exact
  assignment and DETR-style set losses with backward (torch tensors; imported
  on first use).

Every C function runs with the GIL released. Library errors raise subclasses of
:class:`Error` that are also the natural builtin exception:

=====================  ======================  ============================
class                  also a                  C status
=====================  ======================  ============================
InvalidArgumentError   ValueError              DK_EINVAL
DecodeError            ValueError              DK_EINVALIDDATA
NotFoundError          FileNotFoundError       DK_ENOENT
DrivekitIOError        OSError                 DK_EIO
OutOfMemoryError       MemoryError             DK_ENOMEM
UnsupportedError       NotImplementedError     DK_EUNSUPPORTED
RangeError             IndexError              DK_ERANGE
SizeOverflowError      OverflowError           DK_EOVERFLOW
Error                  Exception               any other DK_E* code
=====================  ======================  ============================

The message is the library's ``"function(): what, where"`` text and the
exception's ``status`` attribute holds the (negative) C status code.
"""

from . import _drivekit
from ._drivekit import (
    DecodeError,
    DrivekitIOError,
    Error,
    InvalidArgumentError,
    NotFoundError,
    OutOfMemoryError,
    Pool,
    RangeError,
    SizeOverflowError,
    Tensor,
    UnsupportedError,
    alloc_live,
    status_str,
    version,
)

__version__ = _drivekit.__version__

#: Default limit of the buffer cache for Python users, in bytes.
BUFFER_CACHE_DEFAULT = 512 << 20


def set_buffer_cache(limit_bytes=BUFFER_CACHE_DEFAULT):
    """Sets how many bytes of released drivekit buffers (1 MiB or larger: batches
    of frames, images, renders) are kept for reuse by the next calls of a
    similar size. Large blocks otherwise come back from the system as fresh
    pages that each call faults in again (a fifth of the time of a random
    access request for 100 1600x900 RGB frames). ``0`` frees the kept
    buffers and turns the cache off. The package sets 512 MiB on import.

    :returns: ``{"limit", "bytes", "blocks", "hits", "previous_limit"}``.
    """
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes < 0:
        raise InvalidArgumentError(
            f"set_buffer_cache(): limit_bytes must be an int >= 0, got {limit_bytes!r}")
    return _drivekit.buffer_cache(limit_bytes)


def buffer_cache_stats():
    """``{"limit", "bytes", "blocks", "hits", "previous_limit"}`` of the buffer cache
    (see :func:`set_buffer_cache`); ``hits`` counts allocations it served."""
    return _drivekit.buffer_cache()


if _drivekit.buffer_cache()["limit"] == 0:
    _drivekit.buffer_cache(BUFFER_CACHE_DEFAULT)

from . import camera, image, rng, sim, video  # noqa: E402  (submodules need the names above)


def __getattr__(name):
    # drivekit.ragged needs torch: imported on first use so that `import
    # drivekit` stays light (`from drivekit import ragged` works as usual).
    if name == "ragged":
        import importlib

        return importlib.import_module(".ragged", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "__version__",
    "version",
    "alloc_live",
    "set_buffer_cache",
    "buffer_cache_stats",
    "status_str",
    "Tensor",
    "Pool",
    "Error",
    "InvalidArgumentError",
    "DecodeError",
    "NotFoundError",
    "DrivekitIOError",
    "OutOfMemoryError",
    "UnsupportedError",
    "RangeError",
    "SizeOverflowError",
    "camera",
    "image",
    "rng",
    "sim",
    "video",
    "ragged",
]
