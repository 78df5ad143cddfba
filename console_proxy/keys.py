"""Keysyms to terminal input, and a small line editor for simulated consoles.

RFB delivers X11 keysyms with separate press/release events; a terminal
wants characters.  `KeyTranslator` keeps the Control/Shift state of one client
and turns presses into text; `LineEditor` is the usual owner: it echoes,
handles Backspace and hands whole lines to a callback (a login prompt, a shell).
"""

from __future__ import annotations

from typing import Callable

from .rfb_events import KeyEvent

__all__ = ["KeyTranslator", "LineEditor", "keysym_to_text"]

_SPECIAL = {
    0xFF08: "\b",    # BackSpace
    0xFF09: "\t",    # Tab
    0xFF0D: "\r",    # Return
    0xFF8D: "\r",    # KP_Enter
    0xFF1B: "\x1b",  # Escape
    0xFFFF: "\x7f",  # Delete
    0xFF52: "\x1b[A", 0xFF54: "\x1b[B", 0xFF53: "\x1b[C", 0xFF51: "\x1b[D",  # arrows
}
_CONTROL = (0xFFE3, 0xFFE4)
_KEYPAD = {0xFFAA + i: ch for i, ch in enumerate("*+,-./0123456789")}


def keysym_to_text(keysym: int, *, control: bool = False) -> str | None:
    """The characters a key press produces in a terminal, or None for modifiers and unknown keys."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        ch = chr(keysym)  # Latin-1 keysyms equal their code points
        if control and ch.isascii() and (ch.isalpha() or ch in "@[\\]^_ "):
            return chr(ord(ch.upper()) & 0x1F) if ch != " " else "\x00"
        return ch
    if 0x01000100 <= keysym <= 0x0110FFFF:
        code = keysym - 0x01000000       # Unicode keysyms: scalar values only (no surrogate,
        return None if 0xD800 <= code <= 0xDFFF else chr(code)  # which no terminal can show)
    return _SPECIAL.get(keysym) or _KEYPAD.get(keysym)


class KeyTranslator:
    """Per-client modifier state; `feed` returns the text a KeyEvent types, if any."""

    def __init__(self) -> None:
        self._control_down: set[int] = set()

    def feed(self, event: KeyEvent) -> str | None:
        if event.keysym in _CONTROL:
            (self._control_down.add if event.down else self._control_down.discard)(event.keysym)
            return None
        if not event.down:
            return None
        return keysym_to_text(event.keysym, control=bool(self._control_down))


class LineEditor:
    """Cooked-mode input: echo to `write`, edit with Backspace, deliver lines to `on_line`.

    `secret` turns echo off (password prompts).  Ctrl-C discards the line and
    Ctrl-U erases it, as a tty would.
    """

    def __init__(self, write: Callable[[str], None], on_line: Callable[[str], None]) -> None:
        self._write = write
        self._on_line = on_line
        self._line: list[str] = []
        self.secret = False

    def feed(self, text: str) -> None:
        if text.startswith("\x1b"):
            return  # Escape and cursor keys: no history or cursor motion in this editor
        for ch in text:
            if ch in "\r\n":
                line = "".join(self._line)
                self._line.clear()
                self._write("\n")
                self._on_line(line)
            elif ch in "\b\x7f":
                if self._line:
                    self._line.pop()
                    if not self.secret:
                        self._write("\b \b")
            elif ch == "\x03":
                self._line.clear()
                self._write("^C\n")
            elif ch == "\x15":
                if not self.secret:
                    self._write("\b \b" * len(self._line))
                self._line.clear()
            elif ch >= " ":
                self._line.append(ch)
                if not self.secret:
                    self._write(ch)
