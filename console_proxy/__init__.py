"""CONNECT/WebSocket console tunnelling and the RFB text-console server.

Sans-IO cores: `rfb` (RFB server protocol), `screen` (text terminal + font),
`activity` (idle scanner).  Asyncio adapters: `server` (TextConsoleServer),
`frontend` (CONNECT sniffing in front of aiohttp), `tunnel`, `websocket`,
`forwarder`.
"""

from .errors import ConsoleError, LocalProtocolError, RemoteProtocolError
from .forwarder import ConsoleForwarder, ForwardError, connect_console
from .frontend import ConnectClient, ConnectFrontEnd, ConnectHead, ConnectTCPSite, ConnectUnixSite
from .keys import KeyTranslator, LineEditor
from .screen import TextScreen
from .server import TextConsoleServer
from .tunnel import CONNECT_OK, Tunnel, Upstream, UpstreamUnavailable, open_tunnel, reply_error
from .websocket import bridge_websocket

__all__ = [
    "CONNECT_OK",
    "ConnectClient",
    "ConnectFrontEnd",
    "ConnectHead",
    "ConnectTCPSite",
    "ConnectUnixSite",
    "ConsoleError",
    "ConsoleForwarder",
    "ForwardError",
    "KeyTranslator",
    "LineEditor",
    "LocalProtocolError",
    "RemoteProtocolError",
    "TextConsoleServer",
    "TextScreen",
    "Tunnel",
    "Upstream",
    "UpstreamUnavailable",
    "bridge_websocket",
    "connect_console",
    "open_tunnel",
    "reply_error",
]
