"""pool.join, pool.eject, the master's changes, and the pool's own logins.

A lone host joins a pool by copying its records into the pool's PostgreSQL database and
starting again on it (core.membership); the pool's agents log in to each other with the
pool secret (`session.slave_login`). The master's lease and HOST_IS_SLAVE are core.pool_role's.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from urllib.parse import urlsplit

from ..core import membership
from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..core.forwarding import home_of_sr, home_of_vm
from ..core.passwords import check_stored, write_stored
from ..core.pool_role import agent_ref
from ..core.sessions import POOL_PASSWORD
from ..model.errors import XenAPIError
from ..model.engines import host_uuids
from ..model.store import new_record, new_ref, new_uuid
from ..model.xtypes import NULL_REF, STRING, Ref

table = MessageTable()

__all__ = ["table"]


@table.message("session.slave_login", ("host", Ref("host")), ("psecret", STRING),
               session=False, async_ok=False)
async def slave_login(ctx: Ctx, host: str, secret: str) -> str:
    """Another agent of the pool logs in with the pool secret: a pool session. Failures are
    slowed per source, as password logins are."""
    expected = ctx.services.peers.secret.encode()

    async def verify() -> bool:
        return ctx.store.find("host", host) is not None and \
            hmac.compare_digest(secret.encode(), expected)
    await ctx.services.sessions.gates.check(ctx.source, host, verify)
    return ctx.services.sessions.open_session("root", "pool", pool=True)


@table.message("session.slave_local_login_with_password", ("uname", STRING), ("pwd", STRING),
               session=False, async_ok=False)
async def slave_local_login_with_password(ctx: Ctx, user: str, password: str) -> str:
    """A login to this host even when it is a pool's slave: there its session may make the
    calls a slave answers itself (pool.emergency_transition_to_master), no other."""
    return await ctx.services.sessions.login(user, password, originator="slave-local",
                                             local=ctx.local, source=ctx.source)


def _master_url(ctx: Ctx, address: str) -> str:
    """`master_address` as xapi takes it (a host name or address, reached on the scheme and
    port this agent listens on, as a pool's hosts all do), or host:port, or a URL."""
    if "://" in address:
        return address
    mine = urlsplit(ctx.services.locations.base_url())
    if ":" in address and not address.startswith("["):
        return f"{mine.scheme}://{address}"
    return f"{mine.scheme}://{address}" + (f":{mine.port}" if mine.port else "")


@table.message("pool.join_info", async_ok=False)
def join_info(ctx: Ctx) -> dict:
    """xcp-httpd's: what a joining host needs from the master (the pool's database, the pool
    secret, root's password hash and the pool's networks by bridge). Answered by a master on
    PostgreSQL; a lone host on SQLite cannot take other hosts."""
    store = ctx.store
    if not store.engine.shared:
        raise XenAPIError("OPERATION_NOT_ALLOWED",
                          "the master keeps its records in its own SQLite file: start it with "
                          "--database postgresql://... to make a pool")
    sessions = ctx.services.sessions
    if store.find("root_password", POOL_PASSWORD) is None:
        sessions.share_password()           # from now on the pool's, on every host
    return {"database": ctx.services.pool.database,
            "secret": ctx.services.peers.secret,
            "master": store.get("host", ctx.host.host_ref)["uuid"],
            "pool": ctx.host.pool_ref,
            "password_hash": json.dumps(sessions.password_hash),
            "networks": {n["bridge"]: ref for ref, n in store.all("network").items()},
            # the shared SRs, each attached on a joining host as on the others
            "shared_SRs": {ref: next((store.get("PBD", p)["device_config"]
                                      for p in sr["PBDs"]), {})
                           for ref, sr in store.all("SR").items() if sr["shared"]}}


async def _login_to_master(ctx: Ctx, address: str, user: str, password: str):
    """A session on the pool's master (following HOST_IS_SLAVE once, as clients do)."""
    peers = ctx.services.peers
    remote = peers.remote(_master_url(ctx, address))
    try:
        return remote, await remote.call("session.login_with_password", user, password,
                                         "", "pool.join")
    except XenAPIError as e:
        if e.code != "HOST_IS_SLAVE" or not e.params or not e.params[0]:
            raise
    remote = peers.remote(_master_url(ctx, e.params[0]))
    return remote, await remote.call("session.login_with_password", user, password, "",
                                     "pool.join")


def _checked(info: object) -> tuple[dict, dict]:
    """The master's join_info, every part of it checked before anything is written (a
    master of another version, or not an xcp-httpd at all, is refused with nothing done)."""
    def bad(why: str) -> XenAPIError:
        return XenAPIError("POOL_JOINING_HOST_SERVICE_FAILED", f"the master's join_info: {why}")
    if not isinstance(info, dict):
        raise bad("not a struct")
    for key in ("database", "secret", "master", "pool", "password_hash"):
        if not isinstance(info.get(key), str) or not info[key]:
            raise bad(f"no {key}")
    if not info["database"].startswith(("postgresql://", "postgres://")):
        raise bad("its database is not a postgresql:// URL")
    for key in ("networks", "shared_SRs"):
        if not isinstance(info.get(key, {}), dict):
            raise bad(f"{key} is not a map")
    try:
        password_hash = check_stored(json.loads(info["password_hash"]))
    except ValueError:
        raise bad("root's password hash is not one") from None
    return info, password_hash


def _assert_can_join(ctx: Ctx) -> None:
    store = ctx.store
    if len(store.all("host")) > 1:
        raise XenAPIError("JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS")
    if store.engine.shared:
        raise XenAPIError("OPERATION_NOT_ALLOWED", "Host is already part of a pool "
                          "(its database is PostgreSQL): only a host on its own SQLite "
                          "database joins a pool")
    for vm, rec in store.all("VM").items():
        if rec["is_control_domain"] or rec["is_a_template"]:
            continue
        if rec["power_state"] != "Halted":
            raise XenAPIError("JOINING_HOST_CANNOT_HAVE_RUNNING_VMS")
        if rec["current_operations"]:
            raise XenAPIError("JOINING_HOST_CANNOT_HAVE_VMS_WITH_CURRENT_OPERATIONS")
    if any(sr["shared"] for sr in store.all("SR").values()):
        raise XenAPIError("JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS")


@table.message("pool.join", ("master_address", STRING), ("master_username", STRING),
               ("master_password", STRING))
async def join(ctx: Ctx, address: str, user: str, password: str) -> str:
    """This lone host joins the pool of the master at `master_address`: its host, PIF,
    PBD and local-SR records and its (halted) VMs go into the pool's database, in one
    transaction, and the agent starts again on that database as a slave."""
    _assert_can_join(ctx)
    store, me = ctx.store, ctx.host.host_ref
    remote, session = await _login_to_master(ctx, address, user, password)
    try:
        info = await remote.call("pool.join_info", session)
    finally:
        try:
            await remote.call("session.logout", session)
        except XenAPIError:
            pass
    info, password_hash = _checked(info)
    my_uuid = store.get("host", me)["uuid"]
    if info["master"] == my_uuid:
        raise XenAPIError("OPERATION_NOT_ALLOWED", "Host cannot become slave of itself")
    database = info["database"]
    if my_uuid in await ctx.blocking(host_uuids, database):
        raise XenAPIError("OPERATION_NOT_ALLOWED", "Host is already part of a pool")
    _assert_can_join(ctx)                   # nothing started meanwhile

    roots = [("host", me)]
    roots += [("SR", sr) for sr in store.all("SR") if home_of_sr(store, sr) == me]
    roots += [("VM", vm) for vm, rec in store.all("VM").items()
              if not rec["is_default_template"] and not rec["is_control_domain"]]
    objects = membership.host_objects(store, roots)
    remap = {ctx.host.pool_ref: info["pool"]}
    for (cls, ref), rec in list(objects.items()):
        for net in ([rec["network"]] if cls in ("PIF", "VIF") else []):
            pool_net = info["networks"].get(store.get("network", net)["bridge"])
            if pool_net is not None:
                remap[net] = pool_net       # the pool's network of the same bridge
            else:
                objects[("network", net)] = store.get("network", net)

    for sr, device_config in info.get("shared_SRs", {}).items():
        objects[("PBD", new_ref())] = new_record("PBD", {
            "host": me, "SR": sr, "device_config": device_config, "currently_attached": True})

    config = ctx.services.config
    membership.write(config.data_dir, database, "joining", info["secret"])
    try:
        await ctx.blocking(membership.copy_into, database, "", objects, remap)
    except BaseException:
        membership.remove(config.data_dir)
        raise
    membership.set_pool_secret(config.data_dir, info["secret"])
    write_stored(str(config.password_path), password_hash)
    membership.write(config.data_dir, database, "member")
    ctx.services.control.request("restart")
    return ""


@table.message("pool.eject", ("host", Ref("host")))
async def eject(ctx: Ctx, host: str) -> str:
    """The host leaves the pool (run by its own agent: the master forwards the call): its
    records go into a fresh SQLite file of its own, with its local SRs, their VDIs and the
    VMs on them, and leave the pool's database; it starts again as a lone host."""
    store, me = ctx.store, ctx.host.host_ref
    rec = store.get("host", host)
    pool = store.get("pool", ctx.host.pool_ref)
    if host == pool["master"]:
        raise XenAPIError("OPERATION_NOT_ALLOWED", "Cannot eject the pool master: designate "
                          "another master first (pool.designate_new_master)")
    if host != me:                  # the master forwards to a live host's agent
        raise XenAPIError("HOST_OFFLINE", host)
    for vm in rec["resident_VMs"]:
        v = store.get("VM", vm)
        if not v["is_control_domain"] and v["power_state"] != "Halted":
            raise XenAPIError("HOST_IN_USE", host, "vm", vm)
    local_srs = [sr for sr in store.all("SR") if home_of_sr(store, sr) == me]
    vms = [vm for vm, v in store.all("VM").items()
           if not v["is_control_domain"] and not v["is_default_template"]
           and home_of_vm(store, vm) == me]
    owned = membership.host_objects(store, [("host", me), *[("SR", s) for s in local_srs],
                                            *[("VM", v) for v in vms]])
    taken = dict(owned)
    for (cls, ref), r in owned.items():       # the networks its PIFs and VIFs use: copies
        if cls in ("PIF", "VIF") and store.find("network", r["network"]) is not None:
            taken[("network", r["network"])] = store.get("network", r["network"])
    for ref, v in store.all("VM").items():
        if v["is_default_template"]:
            taken[("VM", ref)] = v
    for key, r in list(taken.items()):         # its PBDs of the pool's shared SRs stay behind
        if key[0] == "PBD" and ("SR", r["SR"]) not in taken:
            del taken[key]
    sr = local_srs[0] if local_srs else NULL_REF
    taken[("pool", new_ref())] = {**pool, "uuid": new_uuid(), "name_label": "",
                                  "master": me, "default_SR": sr, "suspend_image_SR": sr,
                                  "crash_dump_SR": sr, "other_config": {}}

    config = ctx.services.config
    target = config.data_dir / membership.EJECTED_DB
    target.unlink(missing_ok=True)
    await ctx.blocking(membership.copy_into, "sqlite", str(target), taken, {})
    database = ctx.services.pool.database
    membership.write(config.data_dir, database, "leaving")
    with store.transaction():
        for cls, ref in owned:
            if store.find(cls, ref) is not None:
                store.destroy(cls, ref)
        if store.find("host_agent", agent_ref(me)) is not None:
            store.destroy("host_agent", agent_ref(me))
    await store.sync()
    # the pool's root password stays this host's
    write_stored(str(config.password_path), ctx.services.sessions.password_hash)
    membership.finish_ejection(config)
    membership.set_pool_secret(config.data_dir, secrets.token_urlsafe(32))
    ctx.services.control.request("restart")
    return ""


@table.message("pool.emergency_transition_to_master")
async def emergency_transition_to_master(ctx: Ctx) -> str:
    """This host takes the pool lease now (the master died): it is master when the call
    answers. Refused while the master holds the lease (it is alive)."""
    role = ctx.services.pool
    if role.is_master:
        return ""
    role.take_over()
    if not await role.until_master(5.0):
        raise XenAPIError("OPERATION_NOT_ALLOWED", "the pool master holds the pool lease "
                          "(its agent is alive): use pool.designate_new_master on it")
    await ctx.store.sync()           # pool.master names this host in the database
    return ""


@table.message("pool.designate_new_master", ("host", Ref("host")))
async def designate_new_master(ctx: Ctx, host: str) -> str:
    """The master hands over to `host`: the others leave the lease to it, this agent gives
    it up, and `host` takes it (the call answers once it has)."""
    store, role = ctx.store, ctx.services.pool
    store.get("host", host)
    if host == ctx.host.host_ref:
        return ""
    agent = store.find("host_agent", agent_ref(host))
    metrics = store.find("host_metrics", store.get("host", host)["metrics"])
    if agent is None or (metrics is not None and not metrics["live"]):
        raise XenAPIError("HOST_OFFLINE", host)
    store.update("host_agent", agent_ref(host), {"designated": time.time() +
                                                 role.DESIGNATED_WAIT})
    await store.sync()
    role.stand_aside(host)
    await ctx.services.peers.call(host, "pool.emergency_transition_to_master")
    await store.fence(ctx.services.executors.disk)
    return ""
