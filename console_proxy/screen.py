"""A text terminal (cells + cursor, like xapi's vncterm) rendered with a real bitmap font.

Font: Pillow's built-in bitmap font (`ImageFont.load_default_imagefont()`), a
6x11 monospace font covering printable Latin-1.  Pillow is already in the tree
(vncdotool needs it), ships the font inside the wheel (no system package, no
font files to find at run time) and the glyphs are 1-bit, so rendering is a
numpy gather of a glyph atlas indexed by the cell array.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["BitmapFont", "TextScreen", "default_font"]

_REPLACEMENT = "?"


@dataclass(frozen=True)
class BitmapFont:
    """Glyph atlas: glyphs[code] is a (cell_height, cell_width) bool array for codes 0..255."""

    glyphs: np.ndarray

    @property
    def cell_width(self) -> int:
        return self.glyphs.shape[2]

    @property
    def cell_height(self) -> int:
        return self.glyphs.shape[1]


@lru_cache(maxsize=1)
def default_font() -> BitmapFont:
    """Pillow's bitmap font as a 256-entry atlas; characters it lacks render as '?'."""
    from PIL import ImageFont  # imported here: only rendering needs Pillow

    font = ImageFont.load_default_imagefont()
    width, height = font.getmask("M").size
    glyphs = np.zeros((256, height, width), dtype=bool)
    masks = {}
    for code in range(256):
        mask = font.getmask(chr(code))
        if mask.size == (width, height):
            masks[code] = np.array(mask, dtype=np.uint8).reshape(height, width) > 127
    for code in range(256):
        glyphs[code] = masks.get(code, masks[ord(_REPLACEMENT)]) if code >= 32 else False
    glyphs[32] = False
    return BitmapFont(glyphs)


class TextScreen:
    """A cols x rows character grid with a cursor; `serial` changes whenever the picture does."""

    def __init__(self, cols: int = 80, rows: int = 25, *, font: BitmapFont | None = None,
                 foreground: tuple[int, int, int] = (224, 224, 224),
                 background: tuple[int, int, int] = (0, 0, 0),
                 show_cursor: bool = True) -> None:
        if cols < 1 or rows < 1:
            raise ValueError(f"screen must be at least 1x1, not {cols}x{rows}")
        self.cols, self.rows = cols, rows
        self.font = font or default_font()
        self.cells = np.full((rows, cols), 32, dtype=np.uint8)
        self.cursor_row = self.cursor_col = 0
        self.show_cursor = show_cursor
        self._palette = np.array([background, foreground], dtype=np.uint8)
        self.serial = 0
        self._rendered: tuple[int, np.ndarray] | None = None

    @property
    def width(self) -> int:
        return self.cols * self.font.cell_width

    @property
    def height(self) -> int:
        return self.rows * self.font.cell_height

    def write(self, text: str) -> None:
        """Write text at the cursor: \\n = newline (CR+LF), \\r, \\b (moves left), \\t, \\a ignored, wrap and scroll."""
        for ch in text:
            if ch == "\n":
                self.cursor_col = 0
                self._line_feed()
            elif ch == "\r":
                self.cursor_col = 0
            elif ch == "\b":
                self.cursor_col = max(0, self.cursor_col - 1)
            elif ch == "\t":
                self.cursor_col = min(self.cols - 1, (self.cursor_col // 8 + 1) * 8)
            elif ch < " " or ch == "\x7f":
                continue  # other control characters have no glyph and no effect here
            else:
                if self.cursor_col >= self.cols:
                    self.cursor_col = 0
                    self._line_feed()
                code = ord(ch)
                self.cells[self.cursor_row, self.cursor_col] = code if code < 256 else ord(_REPLACEMENT)
                self.cursor_col += 1
        self.serial += 1

    def clear(self) -> None:
        self.cells[:] = 32
        self.cursor_row = self.cursor_col = 0
        self.serial += 1

    def _line_feed(self) -> None:
        if self.cursor_row + 1 < self.rows:
            self.cursor_row += 1
        else:
            self.cells[:-1] = self.cells[1:]
            self.cells[-1] = 32

    def text(self) -> list[str]:
        """The screen as lines, trailing blanks stripped (for tests and logs)."""
        return [bytes(row).decode("latin-1").rstrip() for row in self.cells]

    def render(self) -> np.ndarray:
        """(height, width, 3) uint8 RGB picture of the cells and the cursor (cached per serial)."""
        if self._rendered is not None and self._rendered[0] == self.serial:
            return self._rendered[1]
        glyphs = self.font.glyphs[self.cells]  # rows, cols, ch, cw
        if self.show_cursor:
            col = min(self.cursor_col, self.cols - 1)
            glyphs[self.cursor_row, col, -2:, :] = True  # underline cursor on the last two pixel rows
        rows, cols, ch, cw = glyphs.shape
        bitmap = glyphs.transpose(0, 2, 1, 3).reshape(rows * ch, cols * cw)
        frame = self._palette[bitmap.view(np.uint8)]
        frame.setflags(write=False)
        self._rendered = (self.serial, frame)
        return frame
