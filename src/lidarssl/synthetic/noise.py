"""Cheap, deterministic value noise for textures and terrain.

One periodic 256x256 tile of smooth noise (white noise low-pass filtered in the Fourier domain, so
it tiles seamlessly) is built once; sampling it at several scales with bilinear interpolation gives
fractal noise at the cost of four gathers per octave, far cheaper than hashing lattice points.
"""

from __future__ import annotations

from functools import cache

import numpy as np

_TILE = 256


@cache
def _tile() -> np.ndarray:
    rng = np.random.default_rng(12345)  # fixed: textures must not change with the scene seed
    white = rng.standard_normal((_TILE, _TILE))
    f = np.fft.fftfreq(_TILE)
    k2 = f[:, None] ** 2 + f[None, :] ** 2
    smooth = np.real(np.fft.ifft2(np.fft.fft2(white) * np.exp(-k2 * (2 * np.pi * 1.5) ** 2 / 2)))
    smooth = (smooth - smooth.mean()) / smooth.std()
    out = np.ascontiguousarray(smooth, np.float32)
    out.setflags(write=False)
    return out


def noise2(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth noise with zero mean and unit variance; features about 4 units across.

    Args:
        u, v: float arrays of the same shape, in noise units (scale world coordinates before).

    Returns:
        float32 array of the shape of ``u``.
    """
    flat = _tile().ravel()
    u = np.asarray(u, np.float32)
    v = np.asarray(v, np.float32)
    fu, fv = np.floor(u), np.floor(v)
    au, av = u - fu, v - fv
    i0 = fu.astype(np.int32) & (_TILE - 1)
    j0 = fv.astype(np.int32) & (_TILE - 1)
    i1 = ((i0 + 1) & (_TILE - 1)) * _TILE
    i0 *= _TILE
    j1 = (j0 + 1) & (_TILE - 1)
    top = flat.take(i0 + j0)
    top += (flat.take(i0 + j1) - top) * av
    bot = flat.take(i1 + j0)
    bot += (flat.take(i1 + j1) - bot) * av
    return top + (bot - top) * au


def fractal2(u: np.ndarray, v: np.ndarray, octaves: int = 2, gain: float = 0.5) -> np.ndarray:
    """Sum of ``octaves`` noise layers, each twice as fine and ``gain`` times as strong."""
    out = noise2(u, v)
    amp, total = 1.0, 1.0
    for k in range(1, octaves):
        amp *= gain
        s = 2.0**k
        # Offsets decorrelate the octaves, which all read the same tile.
        out = out + amp * noise2(u * s + 37.1 * k, v * s + 91.7 * k)
        total += amp
    return out / total


@cache
def _variant_table() -> np.ndarray:
    out = np.random.default_rng(54321).random((16, 65536), dtype=np.float32)
    out.setflags(write=False)
    return out


def variant_random(variant: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th (0..15) fixed pseudo-random number in [0, 1) of each uint16 ``variant``: a table lookup."""
    return _variant_table()[k].take(variant.astype(np.int64))


def hash01(a: np.ndarray, b: np.ndarray | int = 0, c: np.ndarray | int = 0) -> np.ndarray:
    """Deterministic pseudo-random float in [0, 1) per integer triple (per slab, per window, per object)."""
    # uint64 arithmetic wraps silently, which is what a hash wants.
    a64 = np.atleast_1d(np.asarray(a)).astype(np.int64).astype(np.uint64)
    b64 = np.asarray(b).astype(np.int64).astype(np.uint64)
    c64 = np.asarray(c).astype(np.int64).astype(np.uint64)
    h = (a64 * np.uint64(73856093)) ^ (b64 * np.uint64(19349663)) ^ (c64 * np.uint64(83492791))
    h = (h ^ (h >> np.uint64(13))) * np.uint64(1274126177)
    h = h ^ (h >> np.uint64(16))
    return (h & np.uint64(0xFFFFFF)).astype(np.float32) / np.float32(0x1000000)
