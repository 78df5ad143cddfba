"""`xcp-httpd serve`, `xcp-httpd passwd` and `xcp-httpd console-forward`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import logging
import logging.handlers
import sys
from pathlib import Path

from .allocator import keep_big_buffers
from .config import Config
from .model.engines import engine_for

__all__ = ["main"]


_CONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)}
# Config fields with a `--<name>` flag of their own (default and type come from Config).
_TUNING: dict[str, dict] = {
    "session_limit": {"help": "sessions held at once; past it the least recently active goes"},
    "session_idle_timeout": {"metavar": "SECONDS",
                             "help": "a session unused this long expires"},
    "login_fail_delay": {"metavar": "SECONDS",
                         "help": "the first wait after a failed login from an address "
                                 "(doubled by each further failure, up to 8 s)"},
    "event_queue_size": {"help": "events kept per event.register queue (then EVENTS_LOST)"},
    "janitor_interval": {"metavar": "SECONDS",
                         "help": "how often expired sessions and old tasks are removed"},
    "clean_shutdown_timeout": {"metavar": "SECONDS",
                               "help": "a QEMU guest's time to power off (or reboot) when "
                                       "asked, before the call fails"},
    "console_vm_limit": {"help": "console tunnels per VM (0: no limit; beyond it: 503)"},
    "console_idle_timeout": {"metavar": "SECONDS",
                             "help": "close a console (CONNECT or WebSocket) after this long "
                                     "without key or pointer input (0: never)"},
    "console_rfb_version": {"choices": ["3.3", "3.7", "3.8"],
                            "help": "the RFB version the text consoles announce"},
    "stats_interval": {"metavar": "SECONDS",
                       "help": "time between statistics collections (the RRD step stays 5 s)"},
    "stats_save_interval": {"metavar": "SECONDS",
                            "help": "time between periodic saves of the RRD files"},
    "max_connections": {"help": "connections held at once (0: a third of the descriptor "
                                "limit); past it a new one gets 503"},
    "db_synchronous": {"choices": ["FULL", "NORMAL"],
                       "help": "FULL survives power loss; NORMAL survives process crashes"},
}

# How long a thread may keep the GIL while another waits for it (Python's default: 5 ms). The
# loop's thread waits for it whenever a worker holds it (decoding a big XML-RPC body, the
# glue around compression), and one request takes it several times: with 5 ms, one client's
# 40,000-tag requests added 90-170 ms to everybody's login; with 0.5 ms, under 65 ms
# (issue 14 item 5, benchmarks/RESULTS.md). Transfers' throughput measured the same.
GIL_SWITCH_INTERVAL = 0.0005


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xcp-httpd", description="XenAPI host agent")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the agent", description="Run the XenAPI host agent "
                       "until SIGINT or SIGTERM.")
    s.add_argument("--data-dir", default="./var", type=Path, metavar="DIR",
                   help="the database, disks, statistics and sockets (default: %(default)s); "
                        "one agent at a time")
    s.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="HTTP address, repeatable (default: 127.0.0.1:8080)")
    s.add_argument("--https-listen", action="append", default=[], metavar="HOST:PORT",
                   help="HTTPS address with a self-signed certificate, repeatable (default: none)")
    s.add_argument("--unix-socket", action="append", default=[], metavar="PATH",
                   help="a local socket whose logins are root, repeatable (default: none)")
    s.add_argument("--public-address", metavar="ADDRESS",
                   help="the address clients use (host.address, console locations; default: "
                        "the one address listened on, else this host's)")
    s.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                   help="INFO: an access line per request and every error (default: "
                        "%(default)s); WARNING: errors only")
    s.add_argument("--log-file", type=Path, metavar="FILE",
                   help="append the log to FILE (reopened when logrotate moves it) instead "
                        "of writing it to stderr")
    s.add_argument("--no-demo", action="store_true", help="no demo VM on first start")
    s.add_argument("--database", default="sqlite", metavar="sqlite|postgresql://...",
                   help="where the objects live: sqlite, the file in the data directory (the "
                        "default), or a PostgreSQL database (libpq URL, e.g. "
                        "postgresql://xapi@db.example/xapi; needs the postgresql extra)")
    s.add_argument("--host-power-command", metavar="CMD",
                   help="host.reboot and host.shutdown run `CMD reboot` / `CMD poweroff` once "
                        "the agent stopped (e.g. systemctl); without it host.reboot restarts "
                        "the agent and host.shutdown stops it")
    s.add_argument("--backend", choices=["auto", "qemu", "simulated"], default="auto",
                   help="qemu: real VMs (QEMU/KVM); simulated: simulated domains; auto: qemu "
                        "when qemu-system-x86_64 is installed (default: auto)")
    s.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto",
                   help="QEMU's accelerator: auto uses KVM only when a probe guest runs under "
                        "it, else TCG (default: auto)")
    s.add_argument("--guest-network", choices=["auto", "bridge", "user"], default="auto",
                   help="QEMU guests' NICs: bridge: a Linux bridge per network (not connected "
                        "to any physical NIC) with DHCP, a tap per VIF; user: QEMU's user-mode "
                        "network per NIC; auto: bridge when root with dnsmasq installed "
                        "(default: auto)")
    tune = s.add_argument_group("tuning (defaults follow the SDK guide)")
    for name, kw in _TUNING.items():
        default = _CONFIG_DEFAULTS[name]
        tune.add_argument("--" + name.replace("_", "-"), dest=name, default=default,
                          type=type(default),
                          **{"metavar": None if "choices" in kw else "N", **kw,
                             "help": f"{kw['help']} (default: {default})"})
    pw = sub.add_parser("passwd", help="change root's password")
    pw.add_argument("--data-dir", default="./var", type=Path)
    pw.add_argument("--stdin", action="store_true", help="read the new password from stdin")
    f = sub.add_parser("console-forward", help="let any VNC viewer reach a VM's console",
                       description="Listen on localhost and tunnel each viewer connection to "
                                   "the VM's rfb console through CONNECT /console.")
    f.add_argument("vm", help="VM name-label or uuid")
    f.add_argument("--port", type=int, default=5901, help="local port (0: any free one)")
    f.add_argument("--listen-host", default="127.0.0.1")
    f.add_argument("--url", default="http://127.0.0.1:8080", help="the agent (http or https)")
    f.add_argument("--user", default="root")
    f.add_argument("--password-file", help="its first line is the password (else asked)")
    f.add_argument("--session", help="an existing session ref instead of a login")
    f.add_argument("--no-verify", action="store_true", help="accept any HTTPS certificate")
    return p


def _log_to(path: Path | None, level: str) -> None:
    handler: logging.Handler = (logging.StreamHandler() if path is None
                                else logging.handlers.WatchedFileHandler(path))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "console-forward":
        logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
        from .xe.console_forward import forward_main
        return forward_main(args)
    if args.command == "passwd":
        from .core.passwords import write_hash
        if args.stdin:
            new = sys.stdin.readline().rstrip("\n")
        else:
            new = getpass.getpass("New root password: ")
            if new != getpass.getpass("Again: "):
                print("passwords differ", file=sys.stderr)
                return 1
        if not new:
            print("empty password refused", file=sys.stderr)
            return 1
        args.data_dir.mkdir(parents=True, exist_ok=True)
        write_hash(str(args.data_dir / "root.passwd"), new)
        print("root password changed (a running service applies it at the next login)")
        return 0
    try:
        engine_for(args.database, "")      # the one place that knows the accepted forms
    except ValueError as e:
        print(f"xcp-httpd: {e}", file=sys.stderr)
        return 2
    _log_to(args.log_file, args.log_level)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    keep_big_buffers()              # transfers reuse their MiB buffers (httpd.allocator)
    config = Config(data_dir=args.data_dir.resolve(),
                    listen=tuple(args.listen or ["127.0.0.1:8080"]),
                    https_listen=tuple(args.https_listen),
                    unix_socket=tuple(args.unix_socket),
                    public_address=args.public_address,
                    demo=not args.no_demo, database=args.database,
                    host_power_command=args.host_power_command,
                    backend=args.backend, accel=args.accel, guest_network=args.guest_network,
                    **{name: getattr(args, name) for name in _TUNING})

    def announce(line: str) -> None:
        print(line, flush=True)

    from .runner import StartupFailed, after_stop, serve
    try:
        action = asyncio.run(serve(config, announce=announce))
    except KeyboardInterrupt:
        return 0
    except StartupFailed as e:
        print(f"xcp-httpd: {e}", file=sys.stderr, flush=True)
        return 1
    return after_stop(action, config)


if __name__ == "__main__":
    sys.exit(main())
