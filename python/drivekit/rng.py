"""Counter-based random numbers: Philox 4x32-10.

Word ``i`` of stream ``(seed, stream)`` is a pure function of
``(seed, stream, i)``, so results never depend on thread count or scheduling.
"""

from . import _drivekit

__all__ = ["philox4x32", "u32", "uniform"]


def philox4x32(ctr, key):
    """One Philox4x32-10 block.

    :param ctr: 4 ints in ``[0, 2**32)``, the counter.
    :param key: 2 ints in ``[0, 2**32)``, the key.
    :returns: ``tuple`` of 4 ints in ``[0, 2**32)``.
    """
    return _drivekit.philox4x32(ctr, key)


def u32(seed, stream, n, offset=0, threads=1):
    """Words ``offset .. offset + n - 1`` of stream ``(seed, stream)``.

    :param seed: int in ``[0, 2**64)``.
    :param stream: int in ``[0, 2**64)``.
    :param n: number of words, >= 0.
    :param offset: index of the first word.
    :param threads: an int (1 runs on the caller; more makes a temporary pool)
        or a :class:`drivekit.Pool`. The output does not depend on it.
    :returns: :class:`drivekit.Tensor` ``(n,)`` uint32.
    """
    return _drivekit.rng_u32(seed, stream, n, offset, threads)


def uniform(seed, stream, n, offset=0, threads=1):
    """The same words as :func:`u32` mapped to floats uniform in ``[0, 1)``.

    :returns: :class:`drivekit.Tensor` ``(n,)`` float32.
    """
    return _drivekit.rng_uniform(seed, stream, n, offset, threads)
