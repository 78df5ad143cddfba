"""`xcp-httpd console-forward`: let any VNC viewer reach a VM's console through the agent's
`CONNECT /console` (arguments in `httpd.cli`).

The console is looked up again for every viewer that connects: a reboot gives the VM a new
console (a new location), and after an agent restart the session may be gone, in which case
the forwarder logs in again with the password it was given. So one forwarder serves a VM for
as long as it runs, across reboots and agent restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import signal
import ssl
import sys
import xmlrpc.client

from yarl import URL

from console_proxy.forwarder import ConsoleForwarder, ForwardError

from ..model.version import API_VERSION_TEXT

__all__ = ["forward_main"]


class _Failure(Exception):
    """A XenAPI failure: its error description."""

    def __init__(self, details: list) -> None:
        super().__init__(" ".join(str(x) for x in details))
        self.code = str(details[0]) if details else ""


def _value(reply: dict):
    if reply.get("Status") != "Success":
        raise _Failure(reply.get("ErrorDescription", []))
    return reply["Value"]


class _Console:
    """The VM's rfb console, found through the agent's XML-RPC (blocking calls: run them in a
    thread). One ServerProxy per lookup, so lookups of viewers connecting together do not
    share a connection."""

    def __init__(self, url: URL, ssl_context, user: str, password: str | None,
                 session: str | None) -> None:
        self.url, self.ssl_context = url, ssl_context
        self.user, self.password, self.session = user, password, session
        self.vm_uuid = ""

    def _rpc(self):
        return xmlrpc.client.ServerProxy(str(self.url), allow_none=True,
                                         context=self.ssl_context)

    def login(self, rpc=None) -> None:
        rpc = rpc or self._rpc()
        self.session = _value(rpc.session.login_with_password(
            self.user, self.password, API_VERSION_TEXT, "xcp-httpd console-forward"))

    def logout(self) -> None:
        with contextlib.suppress(Exception):
            self._rpc().session.logout(self.session)

    def find(self, name: str) -> str:
        """The uuid of the VM `name` (a uuid or a name-label); _Failure if not exactly one."""
        rpc = self._rpc()
        try:
            vms = [_value(rpc.VM.get_by_uuid(self.session, name))]
        except _Failure:
            vms = [v for v in _value(rpc.VM.get_by_name_label(self.session, name))
                   if not _value(rpc.VM.get_is_a_template(self.session, v))]
        if len(vms) != 1:
            raise _Failure([f"{len(vms)} VMs match {name!r}"])
        self.vm_uuid = _value(rpc.VM.get_uuid(self.session, vms[0]))
        return self.vm_uuid

    def target(self) -> tuple[URL, str]:
        """(the CONNECT URL of the VM's rfb console now, the session to send); ForwardError
        when there is none (the VM is not running) or the agent cannot be reached."""
        rpc = self._rpc()
        try:
            try:
                return self._target(rpc), self.session
            except _Failure as e:
                if e.code != "SESSION_INVALID" or self.password is None:
                    raise
                self.login(rpc)               # the agent restarted: log in again
                return self._target(rpc), self.session
        except _Failure as e:
            raise ForwardError(f"VM {self.vm_uuid}: {e}") from None
        except (OSError, xmlrpc.client.ProtocolError) as e:
            raise ForwardError(f"cannot reach {self.url}: {e}") from None

    def _target(self, rpc) -> URL:
        vm = _value(rpc.VM.get_by_uuid(self.session, self.vm_uuid))
        consoles = [_value(rpc.console.get_record(self.session, c))
                    for c in _value(rpc.VM.get_consoles(self.session, vm))]
        rfb = [c for c in consoles if c["protocol"] == "rfb"]
        if not rfb:
            raise _Failure(["has no rfb console (not running, or disable_pv_vnc)"])
        # The location names the host's address, which may not be reachable from here (NAT):
        # keep its path and query, go through the agent we were pointed at.
        return self.url.origin().join(URL(rfb[0]["location"]).relative())


def forward_main(args) -> int:
    """Log in (or take --session), find the VM, forward until SIGINT/SIGTERM."""
    url = URL(args.url)
    ssl_context = None
    if url.scheme == "https":
        ssl_context = ssl._create_unverified_context() if args.no_verify \
            else ssl.create_default_context()
    password = None
    if args.session is None:
        if args.password_file:
            with open(args.password_file) as fh:
                password = fh.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"{args.user}'s password: ")
    console = _Console(url, ssl_context, args.user, password, args.session)
    try:
        if args.session is None:
            console.login()
        try:
            uuid = console.find(args.vm)
            console.target()          # said now, not at the first viewer, if there is none
        except (_Failure, ForwardError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return asyncio.run(_forward(console, args, uuid))
    except _Failure as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if password is not None and console.session is not None:
            console.logout()


async def _forward(console: _Console, args, uuid: str) -> int:
    forwarder = ConsoleForwarder(resolve=lambda: asyncio.to_thread(console.target),
                                 ssl_context=console.ssl_context,
                                 listen_host=args.listen_host, port=args.port)
    await forwarder.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"console-forward: VM {uuid} on {args.listen_host}:{forwarder.port} "
          f"(vncviewer {args.listen_host}::{forwarder.port}); Ctrl-C stops", flush=True)
    try:
        await stop.wait()
    finally:
        await forwarder.stop()
    return 0
