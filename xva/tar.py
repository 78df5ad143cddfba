"""Sans-IO tar: an incremental reader fed bytes of any size, and header encoding for writers.

The reader emits member events and refuses anything that is not a plain file or directory with
a confined relative name: an XVA comes from the network and its names become paths on import.
Header encoding and decoding is the standard library's (``tarfile.TarInfo``); only the stream
state machine lives here.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field

from .errors import XVAFormatError, XVAUsageError

__all__ = ["BLOCK", "TAR_END", "MemberData", "MemberEnd", "MemberStart", "TarReader",
           "safe_name", "tar_header", "tar_padding"]

BLOCK = 512
TAR_END = bytes(2 * BLOCK)
_MAX_EXT = 64 * 1024          # GNU long names and pax headers are metadata: keep them small
_MAX_SIZE = 2**63 - 1         # what a member's size may be (a file can be no bigger)
_SIZE = re.compile(r"[0-9]{1,19}")   # a pax size or record length: ASCII digits, bounded
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


def safe_name(name: str) -> str:
    """Normalise a member name (drop ``./`` and ``.``) or refuse one that could leave the
    extraction directory."""
    if not name or "\0" in name or "\\" in name or name.startswith("/"):
        raise XVAFormatError.bad(f"refusing tar member name {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise XVAFormatError.bad(f"refusing tar member name {name!r}")
    return "/".join(parts)


def tar_header(name: str, size: int, *, directory: bool = False, mtime: int = 0) -> bytes:
    """A ustar header for a regular file (or directory) member."""
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = mtime
    info.uname = info.gname = "root"
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def tar_padding(size: int) -> bytes:
    """Zero bytes that complete a member of ``size`` bytes to a whole block."""
    return bytes(-size % BLOCK)


@dataclass(frozen=True, slots=True)
class MemberStart:
    name: str
    size: int
    directory: bool = False

    def __post_init__(self) -> None:
        if self.size < 0 or (self.directory and self.size):
            raise XVAUsageError("bad member size")


@dataclass(frozen=True, slots=True)
class MemberData:
    """A piece of the current member's data: a view into the bytes just fed."""

    data: memoryview = field(repr=False)


@dataclass(frozen=True, slots=True)
class MemberEnd:
    name: str


TarEvent = MemberStart | MemberData | MemberEnd

# States of the stream.  Each has one handler; handlers return the next state.
_HEADER, _DATA, _PAD, _EXT, _END2, _DONE, _ERROR = (
    "header", "data", "pad", "ext", "end2", "done", "error")


class TarReader:
    """Feed bytes with :meth:`feed`, get :class:`TarEvent` lists back; call :meth:`close`
    at end of input.  After an error every call raises again."""

    def __init__(self) -> None:
        self._state = _HEADER
        self._hdr = bytearray()       # partial header block
        self._left = 0                # bytes left in the current member's data (or ext data)
        self._pad = 0
        self._name = ""
        self._ext = bytearray()       # GNU long name / pax data being collected
        self._ext_type = b""
        self._next_name: str | None = None
        self._next_size: int | None = None
        self._error: Exception | None = None
        self.offset = 0               # bytes consumed so far (for messages)
        self._handlers = {_HEADER: self._on_header, _DATA: self._on_data, _PAD: self._on_pad,
                          _EXT: self._on_ext, _END2: self._on_end2, _DONE: self._on_done}

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes | bytearray | memoryview) -> list[TarEvent]:
        if self._error is not None:
            raise self._error
        view = memoryview(data).cast("B")
        out: list[TarEvent] = []
        try:
            while len(view):
                used = self._handlers[self._state](view, out)
                self.offset += used
                view = view[used:]
        except XVAFormatError as e:
            self._fail(e)
        return out

    def close(self) -> None:
        """End of input: anything but a complete archive is a premature EOF."""
        if self._error is not None:
            raise self._error
        if self._state != _DONE:
            self._fail(XVAFormatError.premature_eof())

    def _fail(self, error: Exception) -> None:
        self._state = _ERROR
        self._error = error
        raise error

    # -- state handlers: consume a prefix of view, append events, return bytes used --

    def _on_header(self, view: memoryview, out: list[TarEvent]) -> int:
        take = min(BLOCK - len(self._hdr), len(view))
        self._hdr += view[:take]
        if len(self._hdr) < BLOCK:
            return take
        block = bytes(self._hdr)
        self._hdr.clear()
        if block == bytes(BLOCK):
            self._state = _END2
            return take
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
        except (tarfile.HeaderError, UnicodeDecodeError, ValueError) as e:
            raise XVAFormatError.bad(f"bad tar header at offset {self.offset}: {e}") from None
        self._start_member(info, out)
        return take

    def _start_member(self, info: tarfile.TarInfo, out: list[TarEvent]) -> None:
        if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, tarfile.XGLTYPE):
            if info.size > _MAX_EXT:
                raise XVAFormatError.bad("oversized tar extended header")
            self._ext_type, self._left, self._pad = info.type, info.size, -info.size % BLOCK
            self._ext.clear()
            self._state = _EXT if info.size else _HEADER
            if not info.size:
                self._finish_ext()
            return
        name = self._next_name if self._next_name is not None else info.name
        size = self._next_size if self._next_size is not None else info.size
        self._next_name = self._next_size = None
        if not 0 <= size <= _MAX_SIZE:        # a negative or absurd base-256 size field
            raise XVAFormatError.bad(f"bad tar member size {size} at offset {self.offset}")
        if info.type == tarfile.DIRTYPE:
            if not set(name.split("/")) <= {"", "."}:   # "./" (`tar c .`) is the root itself
                out.append(MemberStart(safe_name(name), 0, directory=True))
                out.append(MemberEnd(safe_name(name)))
            self._state = _HEADER
            return
        if info.type not in _FILE_TYPES:
            raise XVAFormatError.bad(
                f"refusing tar member {name!r}: type {info.type!r} is not a regular file")
        self._name = safe_name(name)
        self._left, self._pad = size, -size % BLOCK
        out.append(MemberStart(self._name, size))
        if size == 0:
            out.append(MemberEnd(self._name))
            self._state = _HEADER
        else:
            self._state = _DATA

    def _on_data(self, view: memoryview, out: list[TarEvent]) -> int:
        take = min(self._left, len(view))
        out.append(MemberData(view[:take]))
        self._left -= take
        if self._left == 0:
            out.append(MemberEnd(self._name))
            self._state = _PAD if self._pad else _HEADER
        return take

    def _on_pad(self, view: memoryview, out: list[TarEvent]) -> int:
        take = min(self._pad, len(view))
        self._pad -= take
        if self._pad == 0:
            self._state = _HEADER
        return take

    def _on_ext(self, view: memoryview, out: list[TarEvent]) -> int:
        take = min(self._left, len(view))
        self._ext += view[:take]
        self._left -= take
        if self._left == 0:
            self._finish_ext()
            self._state = _PAD if self._pad else _HEADER
        return take

    def _finish_ext(self) -> None:
        data = bytes(self._ext)
        if self._ext_type == tarfile.GNUTYPE_LONGNAME:
            self._next_name = _decode(data.rstrip(b"\0"))
        elif self._ext_type == tarfile.XHDTYPE:
            for key, value in _pax_records(data):
                if key == "path":
                    self._next_name = value
                elif key == "size":
                    if not _SIZE.fullmatch(value):    # ASCII digits only ("²" is a digit)
                        raise XVAFormatError.bad(f"bad pax size {value[:30]!r}")
                    self._next_size = int(value)
        # global pax headers (XGLTYPE) carry nothing we use

    def _on_end2(self, view: memoryview, out: list[TarEvent]) -> int:
        take = min(BLOCK - len(self._hdr), len(view))
        self._hdr += view[:take]
        if len(self._hdr) == BLOCK:
            if any(self._hdr):
                raise XVAFormatError.bad("a lone zero block inside the tar stream")
            self._state = _DONE
        return take

    def _on_done(self, view: memoryview, out: list[TarEvent]) -> int:
        return len(view)              # record padding after the end: ignored


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise XVAFormatError.bad("tar member name is not UTF-8") from None


def _pax_records(data: bytes) -> list[tuple[str, str]]:
    """Parse ``"<len> key=value\\n"`` records, refusing malformed ones."""
    records, pos = [], 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space <= pos or not _SIZE.fullmatch(data[pos:space].decode("latin-1")):
            raise XVAFormatError.bad("bad pax header")
        end = pos + int(data[pos:space])
        record = data[space + 1:end]
        if end > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise XVAFormatError.bad("bad pax header")
        key, _, value = record[:-1].partition(b"=")
        records.append((_decode(key), _decode(value)))
        pos = end
    return records
