"""The idle-timeout scanner: only key, pointer and QEMU messages are activity."""

from __future__ import annotations

import struct

from console_proxy.activity import RfbActivityScanner


def _normal(version=b"RFB 003.008\n") -> RfbActivityScanner:
    scanner = RfbActivityScanner()
    scanner.feed_server(b"RFB 003.008\n\x01\x01")
    assert not scanner.feed_client(version + b"\x01" + b"\x01")
    return scanner


def test_activity_by_message_type():
    scanner = _normal()
    assert not scanner.feed_client(struct.pack(">BBHHHH", 3, 1, 0, 0, 10, 10))
    assert not scanner.feed_client(struct.pack(">BxH2i", 2, 2, 0, -223))
    assert not scanner.feed_client(struct.pack(">BBxxI", 4, 1, 0x61)[:5])  # incomplete
    assert scanner.feed_client(struct.pack(">BBxxI", 4, 1, 0x61)[5:])
    assert scanner.feed_client(struct.pack(">BBHH", 5, 0, 1, 1))
    assert scanner.feed_client(struct.pack(">BBHII", 255, 0, 1, 0x61, 30))
    assert not scanner.feed_client(struct.pack(">BxxxI", 6, 3) + b"abc")


def test_rfb_33_needs_server_security_type():
    scanner = RfbActivityScanner()
    scanner.feed_server(b"RFB 003.003\n")
    assert scanner.needs_server_bytes
    assert not scanner.feed_client(b"RFB 003.003\n")
    scanner.feed_server(b"\0\0\0\x02" + b"c" * 16)  # VNC auth: 16-byte response follows
    assert not scanner.feed_client(b"r" * 16 + b"\x01" + struct.pack(">BBHHHH", 3, 1, 0, 0, 1, 1))
    assert scanner.feed_client(struct.pack(">BBHH", 5, 0, 1, 1))


def test_unknown_input_fails_open():
    scanner = _normal()
    assert scanner.feed_client(b"\x96" + b"\0" * 9)  # EnableContinuousUpdates: not followed -> opaque
    assert scanner.feed_client(b"\x03")  # opaque: every byte counts from now on
    other = RfbActivityScanner()
    assert other.feed_client(b"RFB 003.008\n\x10")  # security type 16 (Tight): opaque
