"""A hardened XML parse for ``ova.xml``: it comes from the network.

No DTD, no entities, no network, no huge trees; a document that declares a DOCTYPE is refused
outright rather than parsed with its declarations ignored (billion laughs, external entities).
"""

from __future__ import annotations

from lxml import etree

from .errors import XVAFormatError

__all__ = ["MAX_OVA_XML", "parse_xml"]

MAX_OVA_XML = 16 << 20        # xapi's are KiB; a big pool export's metadata still fits


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_pis=True)


def parse_xml(data: bytes) -> etree._Element:
    """Parse ``data`` or raise :class:`XVAFormatError` (IMPORT_ERROR)."""
    if len(data) > MAX_OVA_XML:
        raise XVAFormatError.bad("ova.xml is too large")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise XVAFormatError.bad("ova.xml must not contain a DOCTYPE or entity declarations")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        raise XVAFormatError.bad(f"ova.xml is not well-formed XML: {e}") from None
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise XVAFormatError.bad("ova.xml must not contain a DOCTYPE")
    return root
