"""Which database a host's agent opens, and moving a host's records between databases.

A lone host keeps its records in the data directory's SQLite file. `pool.join` copies them
into the pool's PostgreSQL database and writes `pool.json` (the database to open from then
on); `pool.eject` copies them back into a fresh SQLite file and removes them from the pool.
Each move is written so that a crash at any point leaves the host in one database or the
other: `pool.json` says "joining" or "leaving" until the pool database's commit is known,
and the next start decides by whether that database holds this host (`resolve_database`).

The pool secret (`pool.secret`, owner-only) authenticates the agents to each other; a host
that joins takes the master's.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterable

from ..config import Config
from ..model.datamodel import STORED
from ..model.engines import engine_for, host_uuids
from ..model.store import Store, schema, stored_row
from ..model.xtypes import NULL_REF

__all__ = ["read", "write", "remove", "pool_secret", "set_pool_secret", "resolve_database",
           "host_objects", "copy_into", "EJECTED_DB"]

POOL_FILE = "pool.json"
SECRET_FILE = "pool.secret"
EJECTED_DB = "xapi.db.ejected"       # the SQLite file an ejection writes before it leaves

# what an object of a class brings along: the records it refers to that exist for it alone
_FORWARD = {"host": ("metrics", "control_domain"), "VM": ("metrics", "guest_metrics"),
            "PIF": ("metrics",), "VTPM": ("contents",)}
# and the records that refer to it and go where it goes: its reverse sets (the store keeps
# them), and, where the datamodel has none, (class, field) to look for
_CHILDREN = {"VM": ("VBDs", "VIFs", "consoles", "VTPMs", "VUSBs"), "host": ("PBDs", "PIFs"),
             "SR": ("VDIs",)}
_UNLISTED = {"host": (("PUSB", "host"),), "PIF": (("VLAN", "tagged_PIF"),)}
_TARGET = {("host", "metrics"): "host_metrics", ("host", "control_domain"): "VM",
           ("VM", "metrics"): "VM_metrics", ("VM", "guest_metrics"): "VM_guest_metrics",
           ("PIF", "metrics"): "PIF_metrics", ("VTPM", "contents"): "secret"}


def _write_private(path: Path, text: str) -> None:
    """Atomic and owner-only: a crash leaves the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read(data_dir: Path) -> dict | None:
    """{"database": URL, "state": "member" | "joining" | "leaving"[, "secret": ...]}, or None
    (a lone host)."""
    try:
        return json.loads((data_dir / POOL_FILE).read_text())
    except FileNotFoundError:
        return None


def write(data_dir: Path, database: str, state: str, secret: str | None = None) -> None:
    """`secret`: while joining, the pool's secret, which becomes this host's if the join
    turns out to have committed."""
    member = {"database": database, "state": state}
    if secret is not None:
        member["secret"] = secret
    _write_private(data_dir / POOL_FILE, json.dumps(member))


def remove(data_dir: Path) -> None:
    (data_dir / POOL_FILE).unlink(missing_ok=True)


def pool_secret(data_dir: Path) -> str:
    """This host's pool secret, made on first use."""
    path = data_dir / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        secret = secrets.token_urlsafe(32)
        _write_private(path, secret + "\n")
        return secret


def set_pool_secret(data_dir: Path, secret: str) -> None:
    _write_private(data_dir / SECRET_FILE, secret + "\n")


def finish_ejection(config: Config) -> None:
    """The pool no longer holds this host: its own SQLite file, written before it left,
    becomes the database (the old file's WAL and shared memory go with it)."""
    for suffix in ("-wal", "-shm"):
        Path(str(config.db_path) + suffix).unlink(missing_ok=True)
    os.replace(config.data_dir / EJECTED_DB, config.db_path)
    remove(config.data_dir)


def resolve_database(config: Config) -> str:
    """The database this start opens: `pool.json`'s, else `--database`. A join or an
    ejection that a crash cut short is finished or undone first, by whether the pool's
    database holds this host."""
    member = read(config.data_dir)
    if member is None:
        return config.database
    database, state = member["database"], member["state"]
    if state == "member":
        return database
    try:
        uuid = config.host_uuid_path.read_text().strip()
    except FileNotFoundError:
        uuid = ""
    present = uuid in host_uuids(database)
    if state == "joining" and not present:      # the join never committed: still alone
        remove(config.data_dir)
        return config.database
    if state == "leaving" and not present:      # the pool let go: this host's own file
        finish_ejection(config)
        return "sqlite"
    if state == "joining" and member.get("secret"):
        set_pool_secret(config.data_dir, member["secret"])
    (config.data_dir / EJECTED_DB).unlink(missing_ok=True)
    write(config.data_dir, database, "member")
    return database


def host_objects(store: Store, roots: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """`roots` and everything that goes with them: their metrics, consoles, disks (VBDs and
    the VDIs of an SR that goes), PIFs, PBDs, ... -- (class, ref) -> record."""
    out: dict[tuple[str, str], dict] = {}
    todo = list(roots)
    while todo:
        cls, ref = todo.pop()
        if (cls, ref) in out:
            continue
        rec = store.find(cls, ref)
        if rec is None:
            continue
        out[(cls, ref)] = rec
        for name in _FORWARD.get(cls, ()):
            if rec[name] != NULL_REF:
                todo.append((_TARGET[(cls, name)], rec[name]))
        for name in _CHILDREN.get(cls, ()):
            member = STORED[cls].by_name[name].xtype.elem.cls
            todo.extend((member, r) for r in rec[name])
        for child_cls, field in _UNLISTED.get(cls, ()):     # small tables: a scan
            todo.extend((child_cls, r) for r, c in store.all(child_cls).items()
                        if c[field] == ref)
    return out


def _remapped(value: Any, remap: dict[str, str]) -> Any:
    if isinstance(value, str):
        return remap.get(value, value)
    if isinstance(value, list):
        return [_remapped(v, remap) for v in value]
    if isinstance(value, dict):
        return {_remapped(k, remap): _remapped(v, remap) for k, v in value.items()}
    return value


def copy_into(database: str, sqlite_path: str, objects: dict[tuple[str, str], dict],
              remap: dict[str, str] | None = None) -> None:
    """Write `objects` (refs and uuids kept, references in `remap` replaced) into a
    database (`--database`'s forms; `sqlite`: the file at `sqlite_path`) in one transaction,
    creating its tables first. Blocking (a worker thread)."""
    remap = remap or {}
    engine = engine_for(database, sqlite_path)
    engine.open(schema())
    try:
        engine.commit([("put", cls, stored_row(cls, ref, _remapped(dict(rec), remap)))
                       for (cls, ref), rec in objects.items() if cls in STORED])
    finally:
        engine.close()
