"""Helpers shared by the console tests, and tests of the helpers themselves.

`decode_screen` reads a captured console picture back into text, exactly: every 6x11 cell
must be one of console_proxy's font glyphs in the console's two colours (or that glyph with the
underline cursor), anything else fails. `render_screen` draws text with console_proxy's own
TextScreen, so `render_screen(*decode_screen(img)) == img` proves nothing was left unread.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from console_proxy import TextScreen
from console_proxy.screen import default_font
from tests.console_proxy.conftest import rfb_handshake, vnc_capture, vnc_type

__all__ = ["capture_until", "connect_raw", "decode_screen", "login_and_echo", "render_screen",
           "rfb_handshake", "vnc_connect"]

FG, BG = (224, 224, 224), (0, 0, 0)
COLS, ROWS = 80, 25


def _glyph_tables() -> tuple[dict[bytes, str], dict[bytes, str]]:
    glyphs = default_font().glyphs
    plain, cursor = {}, {}
    for code in range(32, 127):
        plain[glyphs[code].tobytes()] = chr(code)
        underlined = glyphs[code].copy()
        underlined[-2:, :] = True
        # Under the cursor only the top 9 rows tell glyphs apart (" " and "_" look the same):
        # the lowest code wins, which is right for a cursor at the end of a line.
        cursor.setdefault(underlined.tobytes(), chr(code))
    assert len(plain) == 95 and not set(plain) & set(cursor)   # a cursor is never mistaken
    return plain, cursor


def decode_screen(img: np.ndarray, cols: int = COLS,
                  rows: int = ROWS) -> tuple[list[str], tuple[int, int] | None]:
    """(lines with trailing blanks stripped, cursor (row, col) or None) of a captured picture."""
    font = default_font()
    ch, cw = font.cell_height, font.cell_width
    assert img.shape == (rows * ch, cols * cw, 3), img.shape
    fg = np.all(img == FG, axis=2)
    assert (fg | np.all(img == BG, axis=2)).all(), "pixels other than the console's two colours"
    cells = fg.reshape(rows, ch, cols, cw).transpose(0, 2, 1, 3)
    plain, cursor_glyphs = _glyph_tables()
    lines, cursor = [], None
    for r in range(rows):
        text = []
        for c in range(cols):
            key = cells[r, c].tobytes()
            if key in plain:
                text.append(plain[key])
            elif key in cursor_glyphs:
                assert cursor is None, f"two cursors: {cursor} and {(r, c)}"
                cursor = (r, c)
                text.append(cursor_glyphs[key])
            else:
                raise AssertionError(f"cell {r},{c} is no glyph of the console font")
        lines.append("".join(text).rstrip())
    return lines, cursor


def render_screen(lines: list[str], cursor: tuple[int, int] | None, cols: int = COLS,
                  rows: int = ROWS) -> np.ndarray:
    screen = TextScreen(cols, rows, show_cursor=cursor is not None)
    for r, line in enumerate(lines):
        screen.cells[r, :len(line)] = np.frombuffer(line.encode("latin-1"), dtype=np.uint8)
    if cursor is not None:
        screen.cursor_row, screen.cursor_col = cursor
    screen.serial += 1
    return screen.render()


@pytest.fixture(scope="session")
def vnc_api():
    """vncdotool's threaded API; its reactor runs once per process: stop it at session end."""
    from vncdotool import api

    yield api
    api.shutdown()


def vnc_connect(api, port: int, *, max_version: tuple[int, int] = (3, 8)):
    """A blocking vncdotool client on 127.0.0.1:port that answers at most `max_version`."""
    from vncdotool.client import VNCDoToolClient, VNCDoToolFactory

    class Client(VNCDoToolClient):
        MAX_CLIENT_VERSION = max_version

    class Factory(VNCDoToolFactory):
        protocol = Client

    return api.connect(f"127.0.0.1::{port}", None, Factory, timeout=20)


async def capture_until(client, predicate, timeout: float = 10.0):
    """Capture until predicate(lines) holds; returns (picture, lines, cursor)."""
    lines: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                img = await vnc_capture(client)
                lines, cursor = decode_screen(img)
                if predicate(lines):
                    return img, lines, cursor
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError("the console never showed it; last picture:\n"
                             + "\n".join(lines)) from None


async def login_and_echo(client, hostname: str, word: str) -> None:
    """Log in as root, type a password, run `echo <word>`; check every step on the picture."""
    prompt = f"{hostname} login:"
    first, lines, _ = await capture_until(client, lambda ls: any(l == prompt for l in ls))
    assert not any(word in l for l in lines)
    await vnc_type(client, "root\r")
    await capture_until(client, lambda ls: "Password:" in ls)
    await vnc_type(client, "hunter2-typed\r")
    shell = f"root@{hostname}:~#"
    await capture_until(client, lambda ls: shell in ls)
    await vnc_type(client, f"echo {word}\r")
    img, lines, cursor = await capture_until(client, lambda ls: word in ls)
    at = lines.index(f"{prompt} root")
    assert lines[at + 1] == "Password:"
    assert lines[at + 2].startswith("Last login: ")
    assert lines[at + 3:at + 6] == [f"{shell} echo {word}", word, shell]
    assert not any("hunter2" in l for l in lines)          # the password is not echoed
    assert cursor == (at + 5, len(shell) + 1)
    np.testing.assert_array_equal(render_screen(lines, cursor), img)   # every pixel accounted for
    assert not np.array_equal(first, img)


# --- raw clients ---------------------------------------------------------------------------------
async def connect_raw(port_or_path, target: str, headers: dict[str, str] | None = None, *,
                      ssl=None):
    """Send `CONNECT target`; returns (status, headers, reader, writer)."""
    if isinstance(port_or_path, int):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_or_path, ssl=ssl,
                                                       server_hostname="localhost" if ssl else None)
    else:
        reader, writer = await asyncio.open_unix_connection(port_or_path)
    lines = [f"CONNECT {target} HTTP/1.0"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    fields = dict(line.split(": ", 1) for line in head[1:] if line)
    return status, fields, reader, writer


# --- tests of the helpers --------------------------------------------------------------------------
def test_decode_reads_back_what_was_rendered():
    lines = ["Debian GNU/Linux 4.0 vm tty1", "", "vm login: root", "Password:",
             "root@vm:~# echo hello ~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./", "hello"]
    img = render_screen(lines, (6, 0))
    assert decode_screen(img) == (lines + [""] * 19, (6, 0))
    assert decode_screen(render_screen(lines, None)) == (lines + [""] * 19, None)


def test_decode_refuses_what_is_not_the_console():
    img = render_screen(["hello"], None).copy()
    img[3, 3] = (224, 224, 223)                    # a colour the console never draws
    with pytest.raises(AssertionError, match="two colours"):
        decode_screen(img)
    img = render_screen(["hello"], None).copy()
    img[0:2, 0:2] = FG                             # a blot that is no glyph
    with pytest.raises(AssertionError, match="no glyph"):
        decode_screen(img)
    one = render_screen(["hello"], None)
    assert decode_screen(one)[0][0] == "hello"
    assert decode_screen(render_screen(["hellp"], None))[0][0] != "hello"
