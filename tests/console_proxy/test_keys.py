"""Keysym translation and the line editor."""

from __future__ import annotations

from console_proxy.keys import KeyTranslator, LineEditor, keysym_to_text
from console_proxy.rfb_events import KeyEvent


def test_keysyms():
    assert keysym_to_text(0x61) == "a" and keysym_to_text(0xE9) == "é"
    assert keysym_to_text(0xFF0D) == "\r" and keysym_to_text(0xFF08) == "\b"
    assert keysym_to_text(0x63, control=True) == "\x03"
    assert keysym_to_text(0x010020AC) == "€"
    assert keysym_to_text(0xFFE1) is None  # Shift


def test_translator_tracks_control_and_ignores_releases():
    keys = KeyTranslator()
    typed = [keys.feed(KeyEvent(down, sym)) for down, sym in
             [(True, 0xFFE3), (True, 0x63), (False, 0x63), (False, 0xFFE3), (True, 0x63)]]
    assert typed == [None, "\x03", None, None, "c"]


def test_line_editor():
    out, lines = [], []
    editor = LineEditor(out.append, lines.append)
    editor.feed("roox")
    editor.feed("\bt")
    editor.feed("\x1b[A")  # arrow keys are ignored
    editor.feed("\r")
    editor.secret = True
    editor.feed("pw\r")
    assert lines == ["root", "pw"]
    assert "".join(out) == "roox\b \bt\n\n"


def test_surrogate_keysyms_type_nothing():
    """Issue 14 item 17: 0x0100D800 once typed a lone surrogate, after which the guest's output
    never reached the text console again."""
    assert keysym_to_text(0x0100D800) is None and keysym_to_text(0x0100DFFF) is None
    assert keysym_to_text(0x0100D7FF) == "\ud7ff" and keysym_to_text(0x0100E000) == "\ue000"
    assert keysym_to_text(0x0101F600) == "\U0001f600"
