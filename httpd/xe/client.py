"""The transport of the `xe` CLI: where the server is, XML-RPC calls, sessions, errors.

Synchronous and small on purpose (a CLI makes a handful of calls): `http.client` over TCP, TLS
or the local Unix socket, the XML-RPC codec of `httpd.xmlrpc`, one keep-alive connection.
"""

from __future__ import annotations

import getpass
import http.client
import os
import socket
import ssl
import sys
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..wire.xmlrpc import XMLRPCParseError, dumps_call, parse_response

__all__ = ["XeError", "ApiFailure", "Endpoint", "Session", "read_rc", "default_socket"]

API_VERSION = "2.21"


class XeError(Exception):
    """A failure already phrased for the user: printed as is, exit status `status`."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ApiFailure(Exception):
    """A XenAPI failure: the wire error code and its parameters."""

    def __init__(self, description: list) -> None:
        desc = [str(d) for d in description] or ["INTERNAL_ERROR"]
        super().__init__(*desc)
        self.code = desc[0]
        self.params = desc[1:]


def read_rc(path: Path | None = None) -> dict[str, str]:
    """`~/.xe`: key=value lines (server, port, username, password, nossl, verify)."""
    path = path or Path(os.path.expanduser("~")) / ".xe"
    out: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, _, v = line.partition("=")
        out[k.strip().lower()] = v.strip()
    return out


def default_socket() -> str:
    """$XE_SOCKET, else ./var/xapi.sock (in the checkout), else the var/xapi.sock of the
    checkout whose .venv runs this xe (`make run`'s agent, from any directory), else
    /var/lib/xcp/xapi."""
    env = os.environ.get("XE_SOCKET")
    if env:
        return env
    if os.path.exists("var/xapi.sock"):
        return os.path.abspath("var/xapi.sock")
    if sys.prefix != sys.base_prefix:                # in a venv: <checkout>/.venv
        beside = Path(sys.prefix).parent / "var" / "xapi.sock"
        if beside.exists():
            return str(beside)
    return "/var/lib/xcp/xapi"


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "true", "yes", "on")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self.unix_path)
        except BaseException:
            s.close()
            raise
        self.sock = s


@dataclass
class Endpoint:
    """Where the server is and how to reach it. `unix` set = the local socket."""

    host: str = ""
    port: int = 0
    tls: bool = True
    verify: bool = True
    unix: str = ""
    username: str = "root"
    password: str | None = None
    timeout: float | None = 3600.0

    @property
    def where(self) -> str:
        if self.unix:
            return f"the local socket {self.unix}"
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        return bool(self.unix)

    @classmethod
    def from_options(cls, opts: dict[str, str], rc: dict[str, str]) -> "Endpoint":
        """Command-line options (-s, -p, -u, -pw, -pwf, --nossl, --no-verify) over ~/.xe."""
        server = opts.get("server") or rc.get("server", "")
        nossl = "nossl" in opts or _truthy(rc.get("nossl"))
        verify = not ("no-verify" in opts or rc.get("verify", "true").lower() in
                      ("0", "false", "no", "off"))
        username = opts.get("username") or rc.get("username") or "root"
        password = opts.get("password")
        if password is None and opts.get("passwordfile"):
            try:
                password = Path(opts["passwordfile"]).read_text().splitlines()[0]
            except (OSError, IndexError) as e:
                raise XeError(f"Error: cannot read the password file {opts['passwordfile']}: "
                              f"{getattr(e, 'strerror', None) or 'empty file'}") from None
        if password is None:
            password = rc.get("password")
        port_text = opts.get("port") or rc.get("port") or ""
        try:
            port = int(port_text) if port_text else (80 if nossl else 443)
        except ValueError:
            raise XeError(f"Error: bad port {port_text!r}") from None
        if not server:
            return cls(unix=default_socket(), username=username, password=password)
        if server.startswith("unix:"):
            return cls(unix=server[5:], username=username, password=password)
        host = server
        if host.startswith("[") and "]" in host:
            host = host[1:host.index("]")]
        return cls(host=host, port=port, tls=not nossl, verify=verify, username=username,
                   password=password)

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        t = timeout if timeout is not None else self.timeout
        if self.unix:
            return _UnixHTTPConnection(self.unix, t)
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, timeout=t,
                                               context=self.ssl_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=t)

    def explain(self, e: BaseException) -> XeError:
        """One line for a transport failure."""
        where = self.where
        if isinstance(e, ssl.SSLCertVerificationError):
            return XeError(f"Error: the TLS certificate of {where} is not trusted "
                           f"({e.verify_message}); to accept a self-signed certificate use "
                           f"--no-verify or put verify=false in ~/.xe")
        if isinstance(e, ssl.SSLError):
            hint = " (is it a plain HTTP port? then use --nossl)" if \
                "WRONG_VERSION" in str(e) or "wrong version" in str(e) else ""
            return XeError(f"Error: TLS failure talking to {where}: {e.reason or e}{hint}")
        if isinstance(e, FileNotFoundError) and self.unix:
            return XeError(f"Error: cannot connect to {where}: no such socket (is the server "
                           f"running? to reach a remote one give -s SERVER)")
        if isinstance(e, ConnectionRefusedError):
            return XeError(f"Error: cannot connect to {where}: connection refused "
                           f"(is the server running?)")
        if isinstance(e, PermissionError):
            return XeError(f"Error: cannot connect to {where}: permission denied")
        if isinstance(e, socket.gaierror):
            return XeError(f"Error: cannot resolve the server name {self.host!r}: {e.strerror}")
        if isinstance(e, (socket.timeout, TimeoutError)):
            return XeError(f"Error: {where} did not answer in time")
        if isinstance(e, (http.client.RemoteDisconnected, http.client.BadStatusLine,
                          ConnectionResetError, BrokenPipeError)):
            hint = " (is it an HTTPS port? then drop --nossl)" if not self.tls and not \
                self.unix else ""
            return XeError(f"Error: {where} closed the connection unexpectedly{hint}")
        if isinstance(e, OSError):
            return XeError(f"Error: cannot connect to {where}: {e.strerror or e}")
        return XeError(f"Error: talking to {where}: {e}")


@dataclass
class Session:
    """A logged-in XenAPI session over one keep-alive connection."""

    endpoint: Endpoint
    ref: str = ""
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)

    def _post(self, body: bytes) -> bytes:
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = self.endpoint.connection()
            try:
                self._conn.request("POST", "/", body=body,
                                   headers={"Content-Type": "text/xml", "User-Agent": "xe"})
                resp = self._conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if attempt == 0 and self.ref:
                    continue   # a keep-alive connection the server closed: once more
                raise self.endpoint.explain(e) from None
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise self.endpoint.explain(e) from None
            if resp.status != 200:
                raise XeError(f"Error: {self.endpoint.where} answered HTTP {resp.status} "
                              f"{resp.reason}: {data[:200].decode(errors='replace').strip()}")
            return data
        raise AssertionError("unreachable")

    def raw_call(self, method: str, *params: object) -> object:
        data = self._post(dumps_call(method, list(params)))
        try:
            result = parse_response(data)
        except XMLRPCParseError as e:
            raise XeError(f"Error: {self.endpoint.where} sent a malformed XML-RPC reply: {e}")
        if not isinstance(result, dict) or "Status" not in result:
            raise XeError(f"Error: {self.endpoint.where} sent an unexpected XML-RPC reply")
        if result["Status"] == "Success":
            return result.get("Value", "")
        raise ApiFailure(list(result.get("ErrorDescription") or []))

    def call(self, method: str, *params: object) -> object:
        """`Class.message(session, params...)`."""
        return self.raw_call(method, self.ref, *params)

    def login(self, *, slave_local: bool = False) -> "Session":
        """`slave_local`: log in to this very host even if it is a pool's slave (the way to
        pool-emergency-transition-to-master), not to its master."""
        ep = self.endpoint
        password = ep.password
        if password is None and not ep.is_local:
            if sys.stdin.isatty():
                password = getpass.getpass(f"Password for {ep.username}@{ep.host}: ")
            else:
                raise XeError("Error: no password given (use -pw, -pwf or password= in ~/.xe)")
        try:
            try:
                if slave_local:
                    self.ref = str(self.raw_call("session.slave_local_login_with_password",
                                                 ep.username, password or ""))
                    return self
                self.ref = str(self.raw_call("session.login_with_password", ep.username,
                                             password or "", API_VERSION, "xe"))
            except ApiFailure as e:
                # a pool's slave names its master: go there (same scheme and port), as xe does
                if e.code != "HOST_IS_SLAVE" or ep.is_local or not e.params or not e.params[0]:
                    raise
                self.close()
                self.endpoint = ep = dataclasses.replace(ep, host=e.params[0])
                self.ref = str(self.raw_call("session.login_with_password", ep.username,
                                             password or "", API_VERSION, "xe"))
        except ApiFailure as e:
            if e.code == "SESSION_AUTHENTICATION_FAILED":
                raise XeError(f"Error: authentication failed for user {ep.username!r} at "
                              f"{ep.where}: wrong username or password") from None
            raise
        return self

    def logout(self) -> None:
        if self.ref:
            try:
                self.raw_call("session.logout", self.ref)
            except (ApiFailure, XeError):
                pass
            self.ref = ""
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
