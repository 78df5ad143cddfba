"""`xcp-httpd console-forward`: let any VNC viewer reach a VM's console through the agent's
`CONNECT /console` (arguments in `httpd.cli`)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import signal
import ssl
import sys
import xmlrpc.client

from yarl import URL

from console_proxy.forwarder import ConsoleForwarder

from ..model.version import API_VERSION_TEXT

__all__ = ["forward_main"]


def _xenapi_value(reply: dict):
    if reply.get("Status") != "Success":
        raise SystemExit("error: " + " ".join(str(x) for x in reply.get("ErrorDescription", [])))
    return reply["Value"]


def forward_main(args) -> int:
    """Log in (or take --session), find the VM's rfb console, forward until SIGINT/SIGTERM."""
    url = URL(args.url)
    ssl_context = None
    if url.scheme == "https":
        ssl_context = ssl._create_unverified_context() if args.no_verify \
            else ssl.create_default_context()
    rpc = xmlrpc.client.ServerProxy(str(url), allow_none=True, context=ssl_context)
    session = args.session
    logged_in = session is None
    if logged_in:
        if args.password_file:
            with open(args.password_file) as fh:
                password = fh.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"{args.user}'s password: ")
        session = _xenapi_value(rpc.session.login_with_password(
            args.user, password, API_VERSION_TEXT, "xcp-httpd console-forward"))
    try:
        try:
            vms = [_xenapi_value(rpc.VM.get_by_uuid(session, args.vm))]
        except SystemExit:
            vms = [v for v in _xenapi_value(rpc.VM.get_by_name_label(session, args.vm))
                   if not _xenapi_value(rpc.VM.get_is_a_template(session, v))]
        if len(vms) != 1:
            print(f"error: {len(vms)} VMs match {args.vm!r}", file=sys.stderr)
            return 1
        uuid = _xenapi_value(rpc.VM.get_uuid(session, vms[0]))
        consoles = [_xenapi_value(rpc.console.get_record(session, c))
                    for c in _xenapi_value(rpc.VM.get_consoles(session, vms[0]))]
        rfb = [c for c in consoles if c["protocol"] == "rfb"]
        if not rfb:
            print(f"error: VM {uuid} has no rfb console (not running, or disable_pv_vnc)",
                  file=sys.stderr)
            return 1
        # The location names the host's address, which may not be reachable from here (NAT):
        # keep its path and query, go through the agent we were pointed at.
        target = url.origin().join(URL(rfb[0]["location"]).relative())
        return asyncio.run(_forward(target, session, args, ssl_context, uuid))
    except KeyboardInterrupt:
        return 0
    finally:
        if logged_in:
            with contextlib.suppress(Exception):
                rpc.session.logout(session)


async def _forward(target: URL, session: str, args, ssl_context, uuid: str) -> int:
    forwarder = ConsoleForwarder(str(target), session_id=session, ssl_context=ssl_context,
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
