"""The SDK guide's XVA layout, version 0.1: ``ova.xml`` (``<appliance version="0.1">``) and one
directory of ``chunk-NNNNNNNN.gz`` files per disk, each gunzipping to exactly 1e9 raw bytes
(the last one fewer).  Streamed as a tar so that ``tar x`` recreates the directory.

Writer: :class:`ApplianceWriter` turns disk pieces into tar bytes; chunks are compressed as
several gzip members on a thread pool.  A tar header needs the member size first, so each
chunk's compressed bytes are spooled (memory, then a temporary file) before they go out.
Reader: :class:`ApplianceDisks` takes tar member events after ``ova.xml`` and emits disk events.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from lxml import etree

from .errors import XVAError, XVAFormatError, XVAIOError, XVAUsageError
from .events import DiskDone, Event, Write, Zeros
from .gz import (DEFAULT_LEVEL, MEMBER_SIZE, GzipInflater, ParallelGzip, incompressible,
                 stored_member, stored_size, zero_gzip)
from .tar import TAR_END, safe_name, tar_header, tar_padding
from .xmlsafe import parse_xml
from .zeros import is_zero, zero_spans

__all__ = ["CHUNK_SIZE", "Appliance", "ApplianceDisks", "ApplianceWriter", "VBDSpec",
           "VDISpec", "VMSpec", "check_pieces"]

CHUNK_SIZE = 10**9            # raw bytes per chunk: 1 GB, not GiB
VDI_TYPE = "dir-gzipped-chunks"
_CHUNK_RE = re.compile(r"chunk-?([0-9]{1,20})\.gz")
_OUT_PIECE = 1 << 20


def _attr(elem: etree._Element, name: str) -> str:
    value = elem.get(name)
    if value is None:
        raise XVAFormatError.bad(f"ova.xml: <{elem.tag}> lacks attribute {name!r}")
    return value


def _int(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 20:
        raise XVAFormatError.bad(f"ova.xml: {what} must be a non-negative integer, not {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class VBDSpec:
    device: str
    function: str
    mode: str
    vdi: str

    def __post_init__(self) -> None:
        if self.mode not in ("w", "ro"):
            raise XVAFormatError.bad(f"ova.xml: vbd mode must be 'w' or 'ro', not {self.mode!r}")


@dataclass(frozen=True, slots=True)
class VDISpec:
    name: str
    size: int
    source: str               # "file://<dir>", relative to ova.xml
    type: str = VDI_TYPE

    def __post_init__(self) -> None:
        if self.size < 0:
            raise XVAFormatError.bad("ova.xml: vdi size must be >= 0")
        if self.type != VDI_TYPE:
            raise XVAFormatError.bad(f"ova.xml: unsupported vdi type {self.type!r}")
        if not self.source.startswith("file://"):
            raise XVAFormatError.bad(f"ova.xml: only file:// sources, not {self.source!r}")
        safe_name(self.source[len("file://"):])

    @property
    def directory(self) -> str:
        """The source directory, relative to ova.xml's directory."""
        return safe_name(self.source[len("file://"):])


@dataclass(frozen=True, slots=True)
class VMSpec:
    name: str
    label: str
    shortdesc: str = ""
    mem_set: int = 256 << 20
    vcpus: int = 1
    is_hvm: bool | None = None            # the optional <hacks> element
    kernel_boot_cmdline: str = ""
    vbds: tuple[VBDSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Appliance:
    """The whole ``ova.xml``: one VM and its disks.  Cross-references are checked here."""

    vm: VMSpec
    vdis: tuple[VDISpec, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [v.name for v in self.vdis]
        dirs = [v.directory for v in self.vdis]
        if len(set(names)) != len(names) or len(set(dirs)) != len(dirs):
            raise XVAFormatError.bad("ova.xml: vdi names and sources must be unique")
        if "ova.xml" in dirs:
            raise XVAFormatError.bad("ova.xml: a vdi source cannot be ova.xml")
        for vbd in self.vm.vbds:
            if vbd.vdi not in names:
                raise XVAFormatError.bad(f"ova.xml: vbd {vbd.device} refers to unknown vdi "
                                         f"{vbd.vdi!r}")

    def to_xml(self) -> bytes:
        root = etree.Element("appliance", version="0.1")
        vm = etree.SubElement(root, "vm", name=self.vm.name)
        etree.SubElement(vm, "label").text = self.vm.label
        etree.SubElement(vm, "shortdesc").text = self.vm.shortdesc
        etree.SubElement(vm, "config", mem_set=str(self.vm.mem_set), vcpus=str(self.vm.vcpus))
        if self.vm.is_hvm is not None:
            etree.SubElement(vm, "hacks", is_hvm="true" if self.vm.is_hvm else "false",
                             kernel_boot_cmdline=self.vm.kernel_boot_cmdline)
        for b in self.vm.vbds:
            etree.SubElement(vm, "vbd", device=b.device, function=b.function, mode=b.mode,
                             vdi=b.vdi)
        for v in self.vdis:
            etree.SubElement(root, "vdi", name=v.name, size=str(v.size), source=v.source,
                             type=v.type)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)

    @classmethod
    def from_xml(cls, data: bytes) -> "Appliance":
        """Parse and validate ``ova.xml`` with the hardened parser."""
        root = parse_xml(data)
        if root.tag != "appliance" or root.get("version") != "0.1":
            raise XVAFormatError("IMPORT_INCOMPATIBLE_VERSION", root.get("version", ""))
        vms = root.findall("vm")
        if len(vms) != 1:
            raise XVAFormatError.bad("ova.xml: an appliance holds exactly one <vm>")
        vm = vms[0]
        config = vm.find("config")
        if config is None or vm.find("label") is None or vm.find("shortdesc") is None:
            raise XVAFormatError.bad("ova.xml: <vm> needs <label>, <shortdesc> and <config>")
        hacks = vm.find("hacks")
        is_hvm = None
        if hacks is not None:
            flag = hacks.get("is_hvm", "false")
            if flag not in ("true", "false"):
                raise XVAFormatError.bad("ova.xml: is_hvm must be 'true' or 'false'")
            is_hvm = flag == "true"
        spec = VMSpec(
            name=_attr(vm, "name"),
            label=(vm.findtext("label") or "").strip(),
            shortdesc=(vm.findtext("shortdesc") or "").strip(),
            mem_set=_int(_attr(config, "mem_set"), "mem_set"),
            vcpus=_int(_attr(config, "vcpus"), "vcpus"),
            is_hvm=is_hvm,
            kernel_boot_cmdline=hacks.get("kernel_boot_cmdline", "") if hacks is not None else "",
            vbds=tuple(VBDSpec(_attr(b, "device"), _attr(b, "function"), _attr(b, "mode"),
                               _attr(b, "vdi")) for b in vm.findall("vbd")))
        vdis = tuple(VDISpec(_attr(v, "name"), _int(_attr(v, "size"), "vdi size"),
                             _attr(v, "source"), _attr(v, "type")) for v in root.findall("vdi"))
        return cls(spec, vdis)


def chunk_name(directory: str, number: int) -> str:
    return f"{directory}/chunk-{number:08d}.gz"


def check_pieces(pieces: Iterable[tuple[int, bytes]], size: int
                 ) -> Iterator[tuple[int, bytes]]:
    """Pass disk pieces through, refusing overlaps, disorder and data beyond ``size``."""
    pos = 0
    for offset, data in pieces:
        if offset < pos or offset + len(data) > size:
            raise XVAUsageError(f"disk piece at {offset}+{len(data)} out of order or beyond "
                                f"{size}")
        pos = offset + len(data)
        if data:
            yield offset, data


@dataclass(frozen=True)
class _Stored:
    """A member to be made when the chunk is sent: ``length`` disk bytes at ``offset``,
    stored (they did not compress), re-read then instead of being spooled now."""
    offset: int
    length: int


class _Spool:
    """One chunk's members in order, so that its size is known before its first byte is
    sent: compressed bytes in memory up to ``limit``, then in a temporary file; stored
    members only as their place on the disk (their size follows from their length)."""

    def __init__(self, limit: int, factory: Callable[[], BinaryIO],
                 read: Callable[[int, int], bytes] | None = None) -> None:
        self._limit, self._factory, self._read = limit, factory, read
        self._parts: list[bytes | _Stored | tuple[int, int]] = []   # (file offset, length)
        self._held = 0                  # bytes of _parts in memory
        self._file: BinaryIO | None = None
        self._at = 0                    # bytes in the file
        self.size = 0

    def write(self, data: bytes | _Stored) -> None:
        if isinstance(data, _Stored):
            self.size += stored_size(data.length)
            self._parts.append(data)
            return
        self.size += len(data)
        self._held += len(data)
        self._parts.append(data)
        if self._held > self._limit:
            self._spill()

    def _spill(self) -> None:
        """Move the bytes held in memory to the file, each run as one range."""
        if self._file is None:
            self._file = self._factory()
        parts, run = [], 0
        for part in self._parts:
            if isinstance(part, bytes):
                self._file.write(part)
                run += len(part)
                continue
            if run:
                parts.append((self._at, run))
                self._at, run = self._at + run, 0
            parts.append(part)
        if run:
            parts.append((self._at, run))
            self._at += run
        self._parts, self._held = parts, 0

    def pieces(self) -> Iterator[bytes]:
        if self._file is not None:
            self._file.flush()
        for part in self._parts:
            if isinstance(part, bytes):
                yield part
            elif isinstance(part, _Stored):
                data = self._read(part.offset, part.length)
                if len(data) != part.length:
                    raise XVAIOError(f"short read at {part.offset}: the disk changed under "
                                     "the export")
                yield stored_member(data)
            else:
                at, length = part
                self._file.seek(at)
                while length > 0:
                    piece = self._file.read(min(length, _OUT_PIECE))
                    if not piece:
                        raise XVAIOError("the export's spool file was cut short")
                    length -= len(piece)
                    yield piece

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._parts.clear()


class ApplianceWriter:
    """Stream an appliance XVA.  ``stream(sources)`` yields tar bytes; ``sources`` maps each
    vdi name to an iterable of ``(offset, bytes)`` data pieces in increasing order (gaps are
    zeros and cost next to nothing).  Close the generator to cancel: the threads stop."""

    def __init__(self, appliance: Appliance, *, level: int = DEFAULT_LEVEL, threads: int = 2,
                 executor=None, spool_memory: int = 256 << 20, spool_dir: str | None = None,
                 mtime: int = 0) -> None:
        self.appliance = appliance
        self._level, self._threads, self._executor = level, threads, executor
        self._spool_memory = spool_memory
        self._spool_factory = lambda: tempfile.TemporaryFile(dir=spool_dir)
        self._mtime = mtime
        self.total = sum(v.size for v in appliance.vdis)
        self.done = 0                 # disk bytes (data and holes) already compressed
        self.bytes_out = 0

    def stream(self, sources: Mapping[str, Iterable[tuple[int, bytes]]],
               readers: Mapping[str, Callable[[int, int], bytes]] | None = None
               ) -> Iterator[bytes]:
        """``readers`` (optional, per vdi name) read ``(offset, length)`` of the disk again:
        with one, a piece that does not compress is re-read and stored when its chunk is
        sent instead of being spooled, so a disk of such data is never copied to a spool."""
        readers = readers or {}
        unknown = set(sources) - {v.name for v in self.appliance.vdis}
        if unknown:
            raise XVAUsageError(f"no vdi named {sorted(unknown)}")
        gz = ParallelGzip(self._level, self._threads, self._executor)
        try:
            xml = self.appliance.to_xml()
            yield self._out(tar_header("ova.xml", len(xml), mtime=self._mtime) + xml
                            + tar_padding(len(xml)))
            for vdi in self.appliance.vdis:
                yield self._out(tar_header(vdi.directory, 0, directory=True, mtime=self._mtime))
                pieces = check_pieces(sources.get(vdi.name, ()), vdi.size)
                chunks = self._chunks(gz, vdi.size, pieces, readers.get(vdi.name))
                for number, spool in enumerate(chunks):
                    try:
                        yield self._out(tar_header(chunk_name(vdi.directory, number),
                                                   spool.size, mtime=self._mtime))
                        for piece in spool.pieces():
                            yield self._out(piece)
                        yield self._out(tar_padding(spool.size))
                    finally:
                        spool.close()
            yield self._out(TAR_END)
        finally:
            gz.close()

    def _out(self, data: bytes) -> bytes:
        self.bytes_out += len(data)
        return data

    def _chunks(self, gz: ParallelGzip, size: int, pieces: Iterator[tuple[int, bytes]],
                read: Callable[[int, int], bytes] | None) -> Iterator[_Spool]:
        """Compress the disk chunk by chunk; yield each chunk's spool when complete."""
        defer = read is not None and self._level > 0
        pending: tuple[int, bytes] | None = next(pieces, None)
        for start in range(0, size, CHUNK_SIZE):
            end = min(size, start + CHUNK_SIZE)
            spool = _Spool(self._spool_memory, self._spool_factory, read)
            pos = start
            try:
                while pos < end:
                    if pending is None or pending[0] >= end:        # zeros to the chunk end
                        self._zeros(gz, spool, end - pos)
                        pos = end
                        continue
                    offset, data = pending
                    if offset > pos:
                        self._zeros(gz, spool, offset - pos)
                        pos = offset
                    take = min(len(data), end - pos, MEMBER_SIZE)
                    part = data[:take]
                    if is_zero(part):
                        outs = gz.submit_ready(zero_gzip(take, self._level))
                    elif defer and incompressible(part):
                        outs = gz.submit_ready(_Stored(pos, take))
                    else:
                        outs = gz.submit(part)
                    for out in outs:
                        spool.write(out)
                    pos += take
                    self.done += take
                    pending = (pos, data[take:]) if take < len(data) else next(pieces, None)
                for out in gz.drain():
                    spool.write(out)
            except BaseException:
                spool.close()
                raise
            yield spool

    def _zeros(self, gz: ParallelGzip, spool: _Spool, length: int) -> None:
        for out in gz.submit_ready(zero_gzip(length, self._level)):
            spool.write(out)
        self.done += length


class ApplianceDisks:
    """Consume the tar members after ``ova.xml`` of an appliance XVA and emit disk events.

    Chunks of each disk must come in numeric order (any digit count); each inflates to
    exactly ``min(1e9, rest of the disk)`` bytes.  More data than declared (a gzip bomb),
    missing, extra or misnamed chunks and truncated gzip are refused."""

    def __init__(self, appliance: Appliance, step: int = 1 << 20) -> None:
        self.appliance = appliance
        self._by_dir = {v.directory: v for v in appliance.vdis}
        self._next = {v.name: 0 for v in appliance.vdis}        # next chunk number
        self._pos = {v.name: 0 for v in appliance.vdis}         # bytes emitted
        self._step = step
        self._vdi: VDISpec | None = None
        self._inflater: GzipInflater | None = None
        self._limit = 0

    def start(self, name: str, size: int, directory: bool) -> list[Event]:
        if directory:
            if name not in self._by_dir:
                raise XVAFormatError.unexpected_file(self._expected(), name + "/")
            return []
        head, _, base = name.rpartition("/")
        vdi = self._by_dir.get(head)
        match = _CHUNK_RE.fullmatch(base)
        if vdi is None or match is None:
            raise XVAFormatError.unexpected_file(self._expected(), name)
        number = int(match.group(1))
        start = self._next[vdi.name] * CHUNK_SIZE
        if number != self._next[vdi.name] or start >= vdi.size:
            raise XVAFormatError.unexpected_file(
                chunk_name(vdi.directory, self._next[vdi.name]) if start < vdi.size
                else self._expected(), name)
        self._limit = min(vdi.size, start + CHUNK_SIZE)
        self._vdi = vdi
        self._inflater = GzipInflater(self._step, limit=self._limit - start)
        return []

    def data(self, data: memoryview) -> Iterator[Event]:
        """Inflate lazily: output is checked against the declared size piece by piece."""
        vdi = self._vdi
        for piece, n in self._inflater.feed(data):
            pos = self._pos[vdi.name]
            if pos + n > self._limit:
                raise XVAFormatError.bad(
                    f"disk {vdi.name}: chunk {self._next[vdi.name]} holds more data than the "
                    f"declared size allows")
            self._pos[vdi.name] = pos + n
            if piece is None:
                yield Zeros(vdi.name, pos, n)
                continue
            for start, length, zero in zero_spans(pos, piece):
                yield (Zeros(vdi.name, pos + start, length) if zero else
                       Write(vdi.name, pos + start, memoryview(piece)[start:start + length]))

    def abort(self) -> None:
        """The import failed: stop the current chunk's inflater threads now."""
        inflater, self._inflater = self._inflater, None
        if inflater is not None:
            with contextlib.suppress(XVAError):
                inflater.close()

    def end(self) -> list[Event]:
        vdi, self._vdi = self._vdi, None
        self._inflater.close()
        if self._pos[vdi.name] != self._limit:
            raise XVAFormatError.bad(
                f"disk {vdi.name}: chunk {self._next[vdi.name]} inflates to "
                f"{self._pos[vdi.name] - self._next[vdi.name] * CHUNK_SIZE} bytes, expected "
                f"{self._limit - self._next[vdi.name] * CHUNK_SIZE}")
        self._next[vdi.name] += 1
        return [DiskDone(vdi.name, vdi.size)] if self._limit == vdi.size else []

    def finish(self) -> list[Event]:
        """The tar ended: every disk must be complete."""
        for v in self.appliance.vdis:
            if self._pos[v.name] != v.size:
                raise XVAFormatError.bad(f"disk {v.name}: missing data from chunk "
                                         f"{self._next[v.name]} ({self._pos[v.name]} of "
                                         f"{v.size} bytes)")
        return [DiskDone(v.name, 0) for v in self.appliance.vdis if v.size == 0]

    def _expected(self) -> str:
        for v in self.appliance.vdis:
            if self._pos[v.name] < v.size:
                return chunk_name(v.directory, self._next[v.name])
        return "end of archive"
