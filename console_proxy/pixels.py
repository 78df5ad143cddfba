"""Convert an RGB frame to any RFB pixel format, vectorised with numpy.

Per-channel lookup tables (one gather per channel, then OR) beat arithmetic on
every pixel and handle any max/shift combination the client picks.
"""

from __future__ import annotations

import struct
from functools import lru_cache

import numpy as np

from .rfb_events import PixelFormat

__all__ = ["encode_pixels", "colour_map_entries"]


@lru_cache(maxsize=64)
def _tables(pf: PixelFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.dtype]:
    levels = np.arange(256, dtype=np.uint32)
    endian = ">" if pf.big_endian else "<"
    dtype = np.dtype(f"{endian}u{pf.bytes_per_pixel}")
    if not pf.true_colour:
        # 8-bit colour map: index = RGB 3-3-2, matching colour_map_entries().
        return ((levels >> 5) << 5), ((levels >> 5) << 2), (levels >> 6), dtype
    return tuple(  # type: ignore[return-value]
        ((levels * cmax + 127) // 255) << shift
        for cmax, shift in ((pf.red_max, pf.red_shift), (pf.green_max, pf.green_shift), (pf.blue_max, pf.blue_shift))
    ) + (dtype,)


def encode_pixels(rgb: np.ndarray, pf: PixelFormat) -> bytes:
    """Raw-encoding bytes for an (h, w, 3) uint8 RGB array in pixel format `pf`."""
    red, green, blue, dtype = _tables(pf)
    value = red[rgb[..., 0]] | green[rgb[..., 1]] | blue[rgb[..., 2]]
    return value.astype(dtype, copy=False).tobytes()


def colour_map_entries() -> bytes:
    """SetColourMapEntries message installing the 3-3-2 palette used for colour-map clients."""
    index = np.arange(256, dtype=np.uint32)
    red = ((index >> 5) & 7) * 0xFFFF // 7
    green = ((index >> 2) & 7) * 0xFFFF // 7
    blue = (index & 3) * 0xFFFF // 3
    body = np.stack([red, green, blue], axis=1).astype(">u2").tobytes()
    return struct.pack(">BxHH", 1, 0, 256) + body
