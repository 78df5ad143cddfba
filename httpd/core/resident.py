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
    resident = vm["resident_on"]
    if resident in (host_ref, NULL_REF):
        return None
    host = store.find("host", resident)
    if host is None or not host["address"]:
        return None
    return str(URL(base_url).with_host(host["address"])).rstrip("/")
