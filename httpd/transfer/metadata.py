"""ova.xml of the layout xapi writes today: a VM's records as XML-RPC, refs rewritten to Ref:N.

Export walks the datamodel to rewrite every reference field (so a new field needs no code
here); import parses the value with the hardened codec and gives typed, checked records back.
"""

from __future__ import annotations

import datetime as _dt
import socket
from dataclasses import dataclass
from typing import Any

from ..model.version import API_VERSION, PRODUCT_VERSION, XAPI_PRODUCT_VERSION
from ..model.datamodel import CLASSES
from ..model.errors import XenAPIError
from ..wire.xmlrpc import XMLRPCParseError, dumps_value, parse_value_text
from ..model.xtypes import NULL_REF, Ref, SetOf

__all__ = ["ExportObject", "export_objects", "ova_xml", "parse_ova_xml", "IMPORT_ORDER"]

# xapi's order of classes in an export
IMPORT_ORDER = ("host", "VM", "VM_metrics", "VM_guest_metrics", "VBD", "VIF", "network", "VDI",
                "SR")


@dataclass(frozen=True)
class ExportObject:
    cls: str
    id: str              # "Ref:N"
    snapshot: dict


def export_objects(store, vm: str) -> tuple[list[ExportObject], dict[str, str]]:
    """The objects describing `vm`, and the map real ref -> Ref:N (VDIs: which disk is which)."""
    refs: list[tuple[str, str]] = []
    rec = store.get("VM", vm)
    refs.append(("VM", vm))
    for cls, field in (("VM_metrics", "metrics"), ("VM_guest_metrics", "guest_metrics")):
        if rec[field] != NULL_REF and store.find(cls, rec[field]) is not None:
            refs.append((cls, rec[field]))
    vdis: list[str] = []
    for vbd in rec["VBDs"]:
        refs.append(("VBD", vbd))
        vdi = store.get("VBD", vbd)["VDI"]
        if vdi != NULL_REF and store.find("VDI", vdi) is not None and vdi not in vdis:
            vdis.append(vdi)
    networks: list[str] = []
    for vif in rec["VIFs"]:
        refs.append(("VIF", vif))
        net = store.get("VIF", vif)["network"]
        if net not in networks and store.find("network", net) is not None:
            networks.append(net)
    refs += [("network", n) for n in networks]
    refs += [("VDI", v) for v in vdis]
    srs = []
    for v in vdis:
        sr = store.get("VDI", v)["SR"]
        if sr not in srs:
            srs.append(sr)
    refs += [("SR", s) for s in srs]
    ids = {ref: f"Ref:{i}" for i, (_, ref) in enumerate(refs)}

    def rewrite(value: Any, xtype) -> Any:
        if isinstance(xtype, Ref):
            return ids.get(value, NULL_REF)
        if isinstance(xtype, SetOf) and isinstance(xtype.elem, Ref):
            return [ids[v] for v in value if v in ids]
        return value

    objects = []
    for cls, ref in refs:
        src = store.get(cls, ref)
        snap = {fs.name: rewrite(src[fs.name], fs.xtype) for fs in CLASSES[cls].fields}
        objects.append(ExportObject(cls, ids[ref], snap))
    return objects, ids


def ova_xml(objects: list[ExportObject]) -> bytes:
    version = {"hostname": socket.gethostname(),
               "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
               "product_version": XAPI_PRODUCT_VERSION, "product_brand": "XCP-ng",
               "build_number": f"xcp-httpd-{PRODUCT_VERSION}", "xapi_major": API_VERSION[0],
               "xapi_minor": API_VERSION[1], "export_vsn": 2}
    value = {"version": version,
             "objects": [{"class": o.cls, "id": o.id, "snapshot": o.snapshot} for o in objects]}
    return dumps_value(value).encode("utf-8")


def parse_ova_xml(data: bytes) -> list[ExportObject]:
    """Objects of a block-layout ova.xml, each snapshot type-checked field by field."""
    try:
        value = parse_value_text(data)
    except XMLRPCParseError as e:
        raise XenAPIError("IMPORT_ERROR", f"ova.xml: {e}") from None
    if not isinstance(value, dict) or not isinstance(value.get("objects"), list):
        raise XenAPIError("IMPORT_ERROR", "ova.xml: no objects")
    version = value.get("version", {})
    if isinstance(version, dict) and str(version.get("export_vsn", "2")) not in ("0", "1", "2"):
        raise XenAPIError("IMPORT_INCOMPATIBLE_VERSION")
    out = []
    for obj in value["objects"]:
        if not isinstance(obj, dict) or not isinstance(obj.get("snapshot"), dict):
            raise XenAPIError("IMPORT_ERROR", "ova.xml: malformed object")
        cls, oid = obj.get("class"), obj.get("id")
        if cls not in CLASSES or not isinstance(oid, str):
            continue   # classes we do not model (crashdump, VTPM...) are skipped, as xapi does
        snap = {}
        for fs in CLASSES[cls].fields:
            if fs.name in obj["snapshot"]:
                try:
                    snap[fs.name] = fs.xtype.check(obj["snapshot"][fs.name], fs.name)
                except XenAPIError:
                    snap[fs.name] = fs.make_default()
        out.append(ExportObject(cls, oid, snap))
    return out
