"""Reading an XVA of either layout from a byte stream (:class:`XVAReader`, sans-IO).

It emits events: :class:`Metadata` first; for the xapi layout the caller must then
call ``expect_disks({ref: size})`` before it asks for the next event (the disk sizes live in
the XML-RPC metadata, which the daemon decodes with its own codec); then :class:`Write` /
:class:`Zeros` / :class:`DiskDone` and finally :class:`End`.
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Callable, Iterator, Mapping

from .appliance import Appliance, ApplianceDisks
from .blocks import BlockDisks
from .errors import XVAError, XVAFormatError, XVAUsageError
from .events import LAYOUT_APPLIANCE, LAYOUT_XAPI, End, Event, Metadata
from .gz import GzipInflater
from .tar import BLOCK, MemberData, MemberEnd, MemberStart, TarReader
from .xmlsafe import MAX_OVA_XML, parse_xml
from .zstd import STREAM_MAGICS, ZstdInflater

__all__ = ["XVAReader"]

# Whole-stream compressions: the magics that announce each, and its inflater.
_INFLATERS = {"zstd": (STREAM_MAGICS, ZstdInflater), "gzip": (b"\x1f\x8b", GzipInflater)}

# Phases of an import, and the legal moves between them (anything else is a bug or misuse).
_OVA, _NEED_DISKS, _DISKS, _DONE, _ERROR = "ova.xml", "need-disks", "disks", "done", "error"
_TRANSITIONS = {(_OVA, _NEED_DISKS), (_OVA, _DISKS), (_NEED_DISKS, _DISKS), (_DISKS, _DONE)}


class _Members:
    """Tar members (from a stream or a directory) to events: ``ova.xml``, then the disks."""

    def __init__(self, force: bool, step: int, max_ova_xml: int,
                 claim: Callable[[int], Callable[[], None]] | None) -> None:
        self.phase = _OVA
        self.force, self.step = force, step
        self.max_ova_xml, self.claim = max_ova_xml, claim
        self.metadata: Metadata | None = None
        self._xml = bytearray()
        self._release: Callable[[], None] | None = None
        self._handler: ApplianceDisks | BlockDisks | None = None

    def _let_go(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def goto(self, phase: str) -> None:
        if (self.phase, phase) not in _TRANSITIONS:
            raise XVAUsageError(f"cannot go from {self.phase} to {phase}")
        self.phase = phase

    def abort(self) -> None:
        self._let_go()
        abort = getattr(self._handler, "abort", None)
        if abort is not None:
            abort()

    def expect_disks(self, disks: Mapping[str, int]) -> None:
        if self.phase != _NEED_DISKS:
            raise XVAUsageError("expect_disks() answers the xapi layout's Metadata event only")
        self._handler = BlockDisks(disks, self.force)
        self.goto(_DISKS)

    def start(self, name: str, size: int, directory: bool) -> list[Event]:
        self._check_disks()
        if self.phase == _OVA:
            if directory or name != "ova.xml":
                raise XVAFormatError.unexpected_file("ova.xml", name)
            if size > self.max_ova_xml:
                raise XVAFormatError.bad(f"ova.xml is too large ({size} bytes, at most "
                                         f"{self.max_ova_xml})")
            if self.claim is not None:
                self._release = self.claim(size)   # it may refuse: the caller's error
            return []
        return self._handler.start(name, size, directory)

    def data(self, data: memoryview) -> Iterator[Event]:
        if self.phase == _OVA:
            self._xml += data
            return iter(())
        return iter(self._handler.data(data))

    def end(self) -> list[Event]:
        if self.phase != _OVA:
            return self._handler.end()
        xml = bytes(self._xml)
        self._xml = bytearray()
        try:
            root = parse_xml(xml)
        finally:
            self._let_go()
        if root.tag == "appliance":
            appliance = Appliance.from_xml(xml)
            self._handler = ApplianceDisks(appliance, self.step)
            self.metadata = Metadata(LAYOUT_APPLIANCE, xml, appliance)
            self.goto(_DISKS)
        elif root.tag == "value":
            self.metadata = Metadata(LAYOUT_XAPI, xml)
            self.goto(_NEED_DISKS)
        else:
            raise XVAFormatError.bad(f"ova.xml: unknown root element <{root.tag}>")
        return [self.metadata]

    def finish(self) -> list[Event]:
        """The archive ended (tar end blocks, or the last file of a directory)."""
        self._check_disks()
        if self.phase == _OVA:
            raise XVAFormatError.unexpected_file("ova.xml", "end of archive")
        out = self._handler.finish()
        self.goto(_DONE)
        return [*out, End()]

    def _check_disks(self) -> None:
        if self.phase == _NEED_DISKS:
            raise XVAUsageError("call expect_disks() after the xapi layout's Metadata event")


class XVAReader:
    """Sans-IO import of an XVA byte stream: uncompressed tar (first member ``ova.xml``),
    gzip, or zstd (concatenated frames too).

    ``feed(data)`` returns an iterator of events that must be consumed before the next call;
    it is lazy so a decompression bomb never materialises: output is inflated ``step`` bytes
    at a time and checked against the declared disk sizes as it goes.  ``close()`` at end of
    input raises IMPORT_ERROR_PREMATURE_EOF unless :class:`End` was seen.  After any error
    every call raises the same error.

    ``claim(size)``, if given, is called when ``ova.xml``'s header declares its size, before any
    of it is buffered, and returns what to call once it is parsed or the import ends: the
    caller's bound on what all imports buffer at once (it may raise to refuse)."""

    def __init__(self, *, force: bool = False, step: int = 1 << 20,
                 max_ova_xml: int = MAX_OVA_XML,
                 claim: Callable[[int], Callable[[], None]] | None = None) -> None:
        self._members = _Members(force, step, max_ova_xml, claim)
        self._sniff = bytearray()
        self._inflater: GzipInflater | ZstdInflater | None = None
        self._tar = TarReader()
        self._compression: str | None = None
        self._busy = False
        self._in_dir = False
        self._error: XVAError | None = None
        self.bytes_in = 0

    @property
    def done(self) -> bool:
        return self._members.phase == _DONE

    @property
    def compression(self) -> str | None:
        """How the whole stream is compressed: ``None`` until the first bytes tell, then
        ``"none"`` (a plain tar), ``"gzip"`` or ``"zstd"``."""
        return self._compression

    def expect_disks(self, disks: Mapping[str, int]) -> None:
        """Answer a xapi-layout :class:`Metadata`: the disks (``Ref:N`` -> size) to expect."""
        self._check()
        self._members.expect_disks(disks)

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[Event]:
        self._check()
        if self._busy:
            raise XVAUsageError("consume the previous feed's events first")
        self.bytes_in += len(data)
        self._busy = True
        return self._guard(self._feed(data))

    def abort(self) -> None:
        """Give up on this stream (the caller failed, or was cancelled): inflater threads stop
        now rather than when the reader is collected.  The reader is unusable afterwards."""
        if self._error is None and not self.done:
            self._error = XVAUsageError("the import was aborted")
        self._members.abort()
        inflater = self._inflater
        if inflater is not None:
            with contextlib.suppress(XVAError):
                inflater.close()

    def close(self) -> list[Event]:
        """End of input.  Returns nothing new on success; raises if the XVA is incomplete."""
        self._check()
        if self._busy:
            raise XVAUsageError("consume the previous feed's events first")
        if self.done:
            return []
        self._busy = True
        return list(self._guard(self._close()))

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _guard(self, events: Iterator[Event]) -> Iterator[Event]:
        try:
            yield from events
        except XVAError as e:
            self._error = e
            self._members.phase = _ERROR
            raise
        except GeneratorExit:               # events abandoned half way: the state is lost
            self._error = XVAUsageError("the events of a feed were abandoned")
            self._members.phase = _ERROR
            raise
        finally:
            self._busy = False

    def _feed(self, data) -> Iterator[Event]:
        if self.done:
            return                                  # after the tar end: padding, ignored
        if self._compression is None:
            self._sniff += data
            if not self._detect(final=False):
                return
            data, self._sniff = bytes(self._sniff), bytearray()
        if self._inflater is None:
            yield from self._untar(data)
            return
        step = self._members.step
        inflater = self._inflater
        gzip = isinstance(inflater, GzipInflater)
        for piece, n in inflater.feed(data):
            if piece is not None:
                yield from self._untar(piece)
            else:                                   # a run of zero members: bounded pieces
                zeros = bytes(min(n, step))
                while n and not self.done:
                    yield from self._untar(zeros[:min(n, step)])
                    n -= min(n, step)
            if self.done:
                return
            if gzip:                # members in parallel once ova.xml is read, never before
                inflater.parallel = self._members.phase == _DISKS

    def _close(self) -> Iterator[Event]:
        if self._compression is None:
            if not self._detect(final=True):
                raise XVAFormatError.premature_eof()
            yield from self._feed(b"")
            if self.done:
                return
        if self._inflater is not None:
            self._inflater.close()
        self._tar.close()                           # not done: raises PREMATURE_EOF

    def _detect(self, final: bool) -> bool:
        head = bytes(self._sniff[:BLOCK])
        for name, (magic, inflater) in _INFLATERS.items():
            if head.startswith(magic):
                self._compression, self._inflater = name, inflater(self._members.step)
                if name == "gzip":                  # not while ova.xml is being read
                    self._inflater.parallel = False
                return True
        if len(head) < BLOCK:
            if final and head:
                raise XVAFormatError.premature_eof()
            return False
        try:
            name = tarfile.TarInfo.frombuf(head, "utf-8", "strict").name
        except (tarfile.HeaderError, UnicodeDecodeError, ValueError):
            name = None
        if name is None or name.lstrip("./") != "ova.xml":
            raise XVAFormatError.bad("not an XVA: neither a tar starting with ova.xml, "
                                     "nor gzip, nor zstd")
        self._compression = "none"
        return True

    def _untar(self, data) -> Iterator[Event]:
        m = self._members
        for ev in self._tar.feed(data):
            if isinstance(ev, MemberData):
                yield from m.data(ev.data)
            elif isinstance(ev, MemberStart):
                self._in_dir = ev.directory
                yield from m.start(ev.name, ev.size, ev.directory)
            elif isinstance(ev, MemberEnd) and not self._in_dir:
                yield from m.end()
        if self._tar.done:
            yield from m.finish()
