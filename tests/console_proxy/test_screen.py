"""The text screen: control characters, wrapping, scrolling, and rendering with the bitmap font."""

from __future__ import annotations

import numpy as np

from console_proxy.screen import TextScreen, default_font


def test_control_characters_wrap_and_scroll():
    screen = TextScreen(cols=5, rows=3)
    screen.write("ab\rX\n12345678\bZ")
    assert screen.text() == ["Xb", "12345", "67Z"]
    screen.write("\n\tq")
    assert screen.text() == ["12345", "67Z", "    q"]  # scrolled one line; tab clamps at the edge
    assert (screen.cursor_row, screen.cursor_col) == (2, 5)
    serial = screen.serial
    screen.write("é€")  # Latin-1 renders; beyond Latin-1 becomes '?'
    assert screen.serial > serial and screen.text() == ["67Z", "    q", "é?"]  # wrapped and scrolled


def test_render_places_glyphs_in_cells():
    screen = TextScreen(cols=4, rows=2, show_cursor=False)
    font = default_font()
    screen.write("\nA")
    frame = screen.render()
    cw, ch = font.cell_width, font.cell_height
    assert frame.shape == (2 * ch, 4 * cw, 3)
    cell = frame[ch:2 * ch, 0:cw, 0] > 0
    np.testing.assert_array_equal(cell, font.glyphs[ord("A")])
    assert font.glyphs[ord("A")].any() and not frame[:ch].any()
    assert screen.render() is frame  # cached until the text changes


def test_cursor_is_drawn():
    screen = TextScreen(cols=4, rows=2)
    assert screen.render()[:, :6].any() and not screen.render()[:, 6:].any()
