"""Pixel conversion against a per-pixel reference formula, for many formats."""

from __future__ import annotations

import numpy as np
import pytest

from console_proxy.pixels import colour_map_entries, encode_pixels
from console_proxy.rfb_events import PixelFormat

FORMATS = [
    PixelFormat(),
    PixelFormat(32, 24, True, True, 255, 255, 255, 0, 8, 16),
    PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0),
    PixelFormat(16, 15, False, True, 31, 31, 31, 10, 5, 0),
    PixelFormat(8, 8, False, True, 7, 7, 3, 0, 3, 6),
    PixelFormat(32, 30, False, True, 1023, 1023, 1023, 20, 10, 0),
]


def _reference(rgb: np.ndarray, pf: PixelFormat) -> bytes:
    out = bytearray()
    for r, g, b in rgb.reshape(-1, 3).tolist():
        value = ((r * pf.red_max + 127) // 255 << pf.red_shift) | ((g * pf.green_max + 127) // 255 << pf.green_shift) \
            | ((b * pf.blue_max + 127) // 255 << pf.blue_shift)
        out += value.to_bytes(pf.bytes_per_pixel, "big" if pf.big_endian else "little")
    return bytes(out)


@pytest.mark.parametrize("pf", FORMATS)
def test_true_colour_matches_reference(pf):
    rgb = np.random.default_rng(7).integers(0, 256, (5, 9, 3), dtype=np.uint8)
    assert encode_pixels(rgb, pf) == _reference(rgb, pf)
    assert PixelFormat.unpack(pf.pack()) == pf


def test_colour_map_palette_matches_indices():
    pf = PixelFormat(8, 8, False, False, 0, 0, 0, 0, 0, 0)
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    indices = encode_pixels(rgb, pf)
    palette = np.frombuffer(colour_map_entries()[6:], dtype=">u2").reshape(256, 3)
    assert [tuple(int(c) >> 8 for c in palette[i]) for i in indices] == [
        (255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 0, 255)]
