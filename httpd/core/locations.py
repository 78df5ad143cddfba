"""How clients reach this agent: the URL its listeners give, and console locations from it.

The listeners are bound after start-up (ephemeral ports resolve then), so `bind` is called
once, by the runner, when they are; before that the host's address alone is known.
"""

from __future__ import annotations

from ..model.store import Store
from ..model.xtypes import NULL_REF
from ..model.identity import ThisHost

__all__ = ["Locations"]


class Locations:
    def __init__(self, store: Store, host: ThisHost) -> None:
        self.store = store
        self.host = host
        self._urls: tuple[str, ...] | None = None

    @property
    def listen_urls(self) -> tuple[str, ...]:
        return self._urls or ()

    def bind(self, urls: list[str]) -> None:
        """The listeners are up: every console of this host's VMs names them (once per
        start; a VM of another host of the pool has that host's)."""
        if self._urls is not None:
            raise RuntimeError("listeners are bound once")
        self._urls = tuple(urls)
        with self.store.transaction():
            for ref, rec in self.store.all("console").items():
                vm = self.store.find("VM", rec["VM"])
                if vm is not None and vm["resident_on"] not in (self.host.host_ref, NULL_REF):
                    continue
                self.store.update("console", ref, {"location": self.of_console(ref, rec)})

    def base_url(self) -> str:
        """HTTPS when we listen on it, like xapi's locations; the host's address."""
        host = self.store.find("host", self.host.host_ref) if self.host.host_ref != NULL_REF \
            else None
        address = host["address"] if host else "127.0.0.1"
        urls = [u for u in self.listen_urls if u.startswith("https://")] or \
            [u for u in self.listen_urls if u.startswith("http://")]
        if not urls:
            return f"http://{address}"
        scheme, _, rest = urls[0].partition("://")
        port = int(rest.rsplit(":", 1)[1])
        default = 443 if scheme == "https" else 80
        return f"{scheme}://{address}" + ("" if port == default else f":{port}")

    def console(self, *, ref: str | None = None, uuid: str | None = None) -> str:
        query = f"ref={ref}" if ref else f"uuid={uuid}"
        return f"{self.base_url()}/console?{query}"

    def of_console(self, ref: str, rec: dict) -> str:
        """The control domain's consoles are named by ref, a VM's by uuid (as xapi)."""
        if rec["VM"] == self.host.dom0_ref:
            return self.console(ref=ref)
        return self.console(uuid=rec["uuid"])
