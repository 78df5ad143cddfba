"""This agent's role in its pool: master or slave, from the database's lease.

The master holds the pool lease (`Engine.lease`: a PostgreSQL advisory lock; a lone host on
SQLite holds it from the start) and answers every API call; a slave answers HOST_IS_SLAVE
with the master's address, as xapi's slaves do, except to the calls of other agents (pool
sessions, `session.slave_login`) and the few a slave must answer itself. When the master
dies its lock goes with its connection and a slave takes it at its next try (every second):
it records itself in `pool.master` and the others' HOST_IS_SLAVE names it.

Each agent of a shared database beats (`host_agent.beat`, with the URL the others reach it
at) every BEAT seconds; the master watches the beats change on its own clock, and a host
silent for DEAD_AFTER seconds is marked not live and its VMs Halted, with a message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from .dispatch import Message
from .lifecycle import Lifecycle
from .locations import Locations
from .messages import post
from .power import LIVE
from ..jobs import Jobs
from ..model.engines import Lease
from ..model.errors import XenAPIError
from ..model.identity import ThisHost
from ..model.store import Store
from ..model.xtypes import NULL_REF

__all__ = ["PoolRole", "SLAVE_ANSWERS", "agent_ref"]

log = logging.getLogger(__name__)

# what a slave answers itself (xapi's slaves too: the pool's logins, the way out of a dead
# master)
SLAVE_ANSWERS = frozenset({"session.slave_login", "session.slave_local_login_with_password",
                           "pool.emergency_transition_to_master"})

HOST_OFFLINE = ("HOST_OFFLINE", 1)      # xapi's alert name for a host that stopped answering


def agent_ref(host: str) -> str:
    return f"agent/{host}"


class PoolRole:
    BEAT = 1.0
    DEAD_AFTER = 10.0
    DESIGNATED_WAIT = 10.0     # seconds the others leave the lease to a designated master

    def __init__(self, store: Store, host: ThisHost, locations: Locations,
                 lifecycle: Lifecycle, *, database: str, shared: bool) -> None:
        self.store = store
        self.database = database         # what this agent opened (pool.join_info gives it)
        self.host = host
        self.locations = locations
        self.lifecycle = lifecycle
        self.shared = shared             # other agents use this database
        self.is_master = False
        self.lease: Lease | None = None
        self._jobs = Jobs()
        self._seen: dict[str, tuple[float, float]] = {}   # host -> (beat, when it changed)
        self._mastered = asyncio.Event()
        self._aside_until = 0.0          # monotonic: this agent leaves the lease to another

    # --- the lease -----------------------------------------------------------------------
    async def start(self, open_lease: Callable[[Callable[[bool], None]], Lease]) -> None:
        """Take part in the lease; returns once the first try is over, so an agent that is
        its pool's only one (or got the lease) answers as master from its first request."""
        loop = asyncio.get_running_loop()
        self.lease = open_lease(lambda held: loop.call_soon_threadsafe(self._leased, held))
        if not self.shared:
            self._leased(True)           # a lone host is its own master from the start
            return
        await loop.run_in_executor(None, self.lease.first_tried, 15.0)
        await asyncio.sleep(0)           # the lease's news, queued before, is heard now
        self._jobs.spawn(self._beating())

    async def stop(self) -> None:
        await self._jobs.close()
        if self.lease is not None:
            lease, self.lease = self.lease, None
            await asyncio.get_running_loop().run_in_executor(None, lease.stop)

    def _leased(self, held: bool) -> None:
        if held == self.is_master:
            return
        self.is_master = held
        if not held:
            self._mastered.clear()
            log.warning("this host is no longer the pool master (it lost the pool lease)")
            return
        self._seen.clear()
        pool = self.store.get("pool", self.host.pool_ref)
        if pool["master"] != self.host.host_ref:
            log.warning("this host is the pool master now")
            self.store.update("pool", self.host.pool_ref, {"master": self.host.host_ref})
        self._mastered.set()

    async def until_master(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._mastered.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def stand_aside(self, for_host: str) -> None:
        """designate_new_master on the master: give the lease up and leave it to `for_host`
        (the others wait as well: they see its designation in its host_agent record, within a
        beat; one that tries in that second may win instead, and is then the master)."""
        assert self.lease is not None
        self._aside_until = time.monotonic() + self.DESIGNATED_WAIT
        self.lease.contend = False
        self.lease.release()

    def take_over(self) -> None:
        """Try for the lease at once (emergency_transition_to_master, a designation)."""
        assert self.lease is not None
        self._aside_until = 0.0
        self.lease.contend = True
        self.lease.poke()

    def _update_contend(self) -> None:
        """Whether this agent tries for the lease: not while it stands aside, nor while
        another host is the designated master."""
        if self.lease is None:
            return
        now = time.time()
        designated = {a["host"] for a in self.store.all("host_agent").values()
                      if a["designated"] > now}
        self.lease.contend = time.monotonic() >= self._aside_until and \
            (not designated or self.host.host_ref in designated)

    # --- answering -----------------------------------------------------------------------
    def master_address(self) -> str:
        master = self.store.get("pool", self.host.pool_ref)["master"]
        rec = self.store.find("host", master)
        return rec["address"] if rec is not None else ""

    def gate(self, msg: Message, session: str | None) -> None:
        """Before a call runs (the dispatcher's gate): HOST_IS_SLAVE on a slave."""
        if self.is_master or msg.name in SLAVE_ANSWERS:
            return
        rec = self.store.find("session", session) if session else None
        if rec is not None and rec["pool"]:
            return                       # another agent of the pool
        master = self.store.get("pool", self.host.pool_ref)["master"]
        if master == self.host.host_ref or self.store.find("host", master) is None:
            # this host was master and lost the lease: no master is known yet
            raise XenAPIError("HOST_IS_SLAVE", "")
        raise XenAPIError("HOST_IS_SLAVE", self.master_address())

    # --- heartbeats ----------------------------------------------------------------------
    async def _beating(self) -> None:
        while True:
            try:
                self.beat()
                self._update_contend()
                if self.is_master:
                    self._watch(time.monotonic())
            except Exception:  # noqa: BLE001 - the next beat tries again
                log.exception("pool heartbeat failed")
            await asyncio.sleep(self.BEAT)

    def beat(self) -> None:
        """This agent is alive, at its URL (every BEAT seconds, and once it listens)."""
        if not self.shared:
            return
        ref = agent_ref(self.host.host_ref)
        fields = {"host": self.host.host_ref, "url": self.locations.base_url(),
                  "beat": time.time()}
        if not self.locations.listen_urls:
            return                       # not listening yet: nobody could reach it
        if self.store.find("host_agent", ref) is None:
            self.store.create("host_agent", fields, ref=ref)
        else:
            self.store.update("host_agent", ref, fields)

    def _watch(self, now: float) -> None:
        for host, rec in list(self.store.all("host").items()):
            if host == self.host.host_ref:
                continue
            agent = self.store.find("host_agent", agent_ref(host))
            beat = agent["beat"] if agent is not None else 0.0
            seen = self._seen.get(host)
            if seen is None or seen[0] != beat:
                self._seen[host] = (beat, now)
                if seen is not None:
                    self._set_live(host, rec, True)
            elif now - seen[1] > self.DEAD_AFTER:
                self._set_live(host, rec, False)

    def _set_live(self, host: str, rec: dict, live: bool) -> None:
        metrics = self.store.find("host_metrics", rec["metrics"])
        if metrics is None or metrics["live"] == live:
            return
        with self.store.transaction():
            self.store.update("host_metrics", rec["metrics"], {"live": live})
            if live:
                return
            vms = [vm for vm in rec["resident_VMs"]
                   if not self.store.get("VM", vm)["is_control_domain"]
                   and self.store.get("VM", vm)["power_state"] in LIVE]
            log.warning("host %s stopped beating: %d VMs marked Halted", rec["name_label"],
                        len(vms))
            for vm in vms:
                self.lifecycle.enter(vm, "Halted")
                self.store.update("VM", vm, {"resident_on": NULL_REF})
            post(self.store, *HOST_OFFLINE, "Host", rec["uuid"],
                 f"The host's agent has not been heard from for {self.DEAD_AFTER:.0f} s: "
                 f"it is marked not live and its {len(vms)} running VMs Halted.")
