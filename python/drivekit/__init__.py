"""drivekit: a C11 toolkit for the autonomous-driving model lifecycle.

The Python package is a thin layer over the C library (``_drivekit``):

* :class:`Tensor` -- arrays owned by drivekit memory, exported without copies
  through the buffer protocol (``numpy.asarray``, ``memoryview``) and DLPack
  (``numpy.from_dlpack``, ``torch.from_dlpack``).
* :class:`Pool` -- an explicit thread pool to pass as ``threads=``.
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
