"""The sans-IO RFB core: handshakes per version, message parsing, update semantics, errors, fuzz."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from console_proxy.errors import LocalProtocolError, RemoteProtocolError
from console_proxy.rfb import NEED_DATA, Phase, RfbServerConnection
from console_proxy.rfb_events import (
    ClientCutText, ClientInit, FramebufferUpdateRequest, KeyEvent, PixelFormat, PointerEvent,
    QemuMessage, SecurityChosen, SetEncodings, SetPixelFormat, VersionAgreed,
)


def feed(conn: RfbServerConnection, data: bytes) -> list:
    """The in-memory wire: push client bytes, collect every event."""
    conn.receive_data(data)
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def ready(version=(3, 8), client=b"RFB 003.008\n") -> RfbServerConnection:
    conn = RfbServerConnection(8, 4, name="n", version=version)
    conn.data_to_send()
    feed(conn, client)
    if conn.version != (3, 3):
        feed(conn, b"\x01")
    feed(conn, b"\x00")
    conn.data_to_send()
    assert conn.phase is Phase.NORMAL
    return conn


@pytest.mark.parametrize("server, client, agreed, security", [
    ((3, 8), b"RFB 003.008\n", (3, 8), b"\x01\x01"),
    ((3, 8), b"RFB 003.007\n", (3, 7), b"\x01\x01"),
    ((3, 8), b"RFB 003.005\n", (3, 3), b"\0\0\0\x01"),  # 3.5 means 3.3
    ((3, 3), b"RFB 003.008\n", (3, 3), b"\0\0\0\x01"),  # never above the server's version
    ((3, 7), b"RFB 003.889\n", (3, 7), b"\x01\x01"),    # Apple's 3.889
])
def test_handshake(server, client, agreed, security):
    conn = RfbServerConnection(640, 480, name="vm", version=server)
    assert conn.data_to_send() == b"RFB 003.%03d\n" % server[1]
    events = feed(conn, client)
    assert events[0] == VersionAgreed(agreed)
    assert conn.data_to_send() == security
    if agreed != (3, 3):
        assert events == [VersionAgreed(agreed)]
        assert feed(conn, b"\x01") == [SecurityChosen(1)]
        assert conn.data_to_send() == (b"\0\0\0\0" if agreed == (3, 8) else b"")
    else:
        assert events == [VersionAgreed(agreed), SecurityChosen(1)]
    assert feed(conn, b"\x00") == [ClientInit(False)]
    init = conn.data_to_send()
    assert init[:4] == struct.pack(">HH", 640, 480) and init[4:20] == PixelFormat().pack()
    assert init[20:] == b"\0\0\0\x02vm"


def test_wrong_security_choice_38_sends_reason_then_fails_fast():
    conn = RfbServerConnection(8, 4)
    feed(conn, b"RFB 003.008\n")
    conn.data_to_send()
    with pytest.raises(RemoteProtocolError):
        feed(conn, b"\x02")
    reply = conn.data_to_send()
    assert reply[:4] == b"\0\0\0\x01" and b"None" in reply[8:]
    assert conn.phase is Phase.ERROR
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"\x01")


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"RFB 004.000\n", b"RFB 003.002\n", b"RFB 003.00x\n"])
def test_bad_versions(data):
    with pytest.raises(RemoteProtocolError):
        feed(RfbServerConnection(8, 4), data)


def test_messages_split_anywhere():
    stream = (
        b"\x00\0\0\0" + PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0).pack()
        + struct.pack(">BxH4i", 2, 4, 0, -223, -239, -308)
        + struct.pack(">BBHHHH", 3, 1, 1, 2, 3, 4)
        + struct.pack(">BBxxI", 4, 1, 0x61)
        + struct.pack(">BBHH", 5, 1, 7, 3)
        + struct.pack(">BxxxI", 6, 5) + b"hello"
        + struct.pack(">BBHII", 255, 0, 1, 0x62, 48)
        + struct.pack(">BBH", 255, 1, 0)
        + struct.pack(">BBHBBI", 255, 1, 2, 3, 2, 44100)
    )
    expected = [
        SetPixelFormat(PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0)),
        SetEncodings((0, -223, -239, -308)),
        FramebufferUpdateRequest(True, 1, 2, 3, 4),
        KeyEvent(True, 0x61),
        PointerEvent(1, 7, 3),
        ClientCutText(b"hello"),
        QemuMessage(0, struct.pack(">HII", 1, 0x62, 48)),
        QemuMessage(1, b"\0\0"),
        QemuMessage(1, struct.pack(">HBBI", 2, 3, 2, 44100)),
    ]
    for cut in (1, 3, 7, len(stream)):
        conn = ready()
        events = []
        for i in range(0, len(stream), cut):
            events += feed(conn, stream[i:i + cut])
        assert events == expected


@pytest.mark.parametrize("message", [
    b"\x07",  # unknown type
    b"\x00\0\0\0" + bytes([24, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]),  # bpp 24
    b"\x00\0\0\0" + bytes([32, 24, 0, 1, 0, 200, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]),  # max not 2**n-1
    b"\x00\0\0\0" + bytes([16, 16, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]),  # shift overflows
    b"\x00\0\0\0" + bytes([16, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),  # colour map at 16 bpp
    struct.pack(">BxxxI", 6, 1 << 30),  # absurd cut-text length
    b"\xff\x09",  # unknown QEMU sub-type
])
def test_bad_messages(message):
    conn = ready()
    with pytest.raises(RemoteProtocolError):
        feed(conn, message)
    with pytest.raises(LocalProtocolError):
        conn.next_event()


def test_update_semantics():
    conn = ready()
    frame = np.zeros((4, 8, 3), np.uint8)
    assert not conn.framebuffer_update(frame, 1)  # nothing requested yet
    feed(conn, struct.pack(">BBHHHH", 3, 1, 0, 0, 8, 4))
    assert conn.framebuffer_update(frame, 1)  # first incremental: the client has nothing yet
    assert len(conn.data_to_send()) == 4 + 12 + 8 * 4 * 4
    feed(conn, struct.pack(">BBHHHH", 3, 1, 0, 0, 8, 4))
    assert not conn.framebuffer_update(frame, 1) and conn.update_pending  # held
    assert not conn.framebuffer_update(frame.copy(), 2)  # new serial but same pixels: still held
    changed = frame.copy()
    changed[2, 5] = (255, 0, 0)
    assert conn.framebuffer_update(changed, 3)
    out = conn.data_to_send()
    assert struct.unpack(">BxHHHHHi", out[:16]) == (0, 1, 5, 2, 1, 1, 0)
    assert out[16:] == struct.pack("<I", 0xFF0000)  # default 32 bpp little-endian, red shift 16
    feed(conn, struct.pack(">BBHHHH", 3, 0, 6, 3, 100, 100))  # non-incremental, clipped to the screen
    assert conn.framebuffer_update(changed, 3)
    assert struct.unpack(">BxHHHHHi", conn.data_to_send()[:16]) == (0, 1, 6, 3, 2, 1, 0)


def test_local_misuse():
    with pytest.raises(LocalProtocolError):
        RfbServerConnection(8, 4, version=(3, 5))
    conn = RfbServerConnection(8, 4)
    with pytest.raises(LocalProtocolError):
        conn.framebuffer_update(np.zeros((4, 8, 3), np.uint8))  # handshake not done
    with pytest.raises(LocalProtocolError):
        KeyEvent(True, -1)


def test_fuzz_only_remote_errors_escape():
    rng = random.Random(1234)
    seeds = [b"RFB 003.008\n\x01\x00", b"RFB 003.003\n\x00", b"RFB 003.007\n\x01\x01"]
    for i in range(2000):
        data = bytearray(rng.choice(seeds))
        data += bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
        if rng.random() < 0.5:  # mutate the handshake too
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        conn = RfbServerConnection(8, 4)
        try:
            feed(conn, bytes(data))
            if conn.phase is Phase.NORMAL:
                conn.framebuffer_update(np.zeros((4, 8, 3), np.uint8))
        except RemoteProtocolError:
            assert conn.phase is Phase.ERROR
