"""Where a VM runs, for handlers that answer 302 when it runs on another host this one knows.

xapi serves a VM's console and its statistics only on the host the VM is resident on; clients
are expected to go there themselves. Telling them where (a 302 with the same query) is kinder
than xapi's 500, and only possible when the database names that host and its address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from yarl import URL

from ..model.xtypes import NULL_REF

if TYPE_CHECKING:
    from ..model.store import Store


def elsewhere(store: "Store", vm: Mapping, *, host_ref: str, base_url: str) -> str | None:
    """The origin ("https://address[:port]") of the other host `vm` is resident on: this
    agent's scheme and port with that host's address; None when it is here, nowhere, or on a
    host whose address we do not know."""
    return origin_of(store, vm["resident_on"], host_ref=host_ref, base_url=base_url)


def origin_of(store: "Store", host: str | None, *, host_ref: str, base_url: str) -> str | None:
    """The origin of `host`'s agent (this agent's scheme and port, as a pool's hosts share
    them, with that host's address); None for this host, none, or one with no address."""
    if host is None or host in (host_ref, NULL_REF):
        return None
    rec = store.find("host", host)
    if rec is None or not rec["address"]:
        return None
    return str(URL(base_url).with_host(rec["address"])).rstrip("/")
