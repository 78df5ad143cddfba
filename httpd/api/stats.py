"""Data sources of the host, VMs and SRs: get_data_sources, record_data_source,
query_data_source, forget_data_source_archives (the statistics service holds the RRDs)."""

from __future__ import annotations

import math

from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..stats.service import StatsService
from ..stats.sources import DEFINITIONS, invalid_data_source
from ..model.xtypes import STRING, Ref

table = MessageTable()


def _service(ctx: Ctx) -> StatsService:
    return ctx.services.stats


def _rid(ctx: Ctx, cls: str, ref: str) -> str:
    return _service(ctx).rid_of(cls, ref)


def _known(ctx: Ctx, rid: str, name: str) -> None:
    store = _service(ctx).store
    if rid not in store or name not in {d.name for d in store.data_sources(rid)}:
        raise invalid_data_source(name)


def get_data_sources(ctx: Ctx, cls: str, ref: str) -> list[dict]:
    service = _service(ctx)
    rid = _rid(ctx, cls, ref)
    if rid not in service.store:
        return []
    out = []
    for d in service.store.data_sources(rid):
        meta = DEFINITIONS[rid.partition(":")[0]](d.name) or d
        out.append({
            "name_label": d.name, "name_description": meta.description, "enabled": True,
            "standard": True, "units": meta.units,
            "min": -math.inf if math.isnan(d.min) else d.min,
            "max": math.inf if math.isnan(d.max) else d.max,
            "value": service.store.latest(rid, d.name)})
    return out


def record_data_source(ctx: Ctx, cls: str, ref: str, name: str) -> str:
    """Every data source we know is recorded already; an unknown name is an error."""
    _known(ctx, _rid(ctx, cls, ref), name)
    return ""


def query_data_source(ctx: Ctx, cls: str, ref: str, name: str) -> float:
    rid = _rid(ctx, cls, ref)
    _known(ctx, rid, name)
    return _service(ctx).store.latest(rid, name)


def forget_data_source_archives(ctx: Ctx, cls: str, ref: str, name: str) -> str:
    rid = _rid(ctx, cls, ref)
    _known(ctx, rid, name)
    _service(ctx).rrds.forget(rid, name)
    return ""


def _register(cls: str) -> None:
    def bind(fn):
        return lambda ctx, ref, *args: fn(ctx, cls, ref, *args)

    table.message(f"{cls}.get_data_sources", ("self", Ref(cls)))(bind(get_data_sources))
    for name, fn in (("record_data_source", record_data_source),
                     ("query_data_source", query_data_source),
                     ("forget_data_source_archives", forget_data_source_archives)):
        table.message(f"{cls}.{name}", ("self", Ref(cls)), ("data_source", STRING))(bind(fn))


for _cls in ("host", "VM", "SR"):
    _register(_cls)
