"""CONNECT/WebSocket console tunnelling and the RFB text-console server.

Sans-IO cores: `rfb` (RFB server protocol), `screen` (text terminal + font),
`activity` (idle scanner).  Asyncio adapters: `server` (TextConsoleServer),
`vt100` (the plain text stream), `frontend` (CONNECT sniffing in front of aiohttp),
`tunnel`, `websocket`, `forwarder`.
"""

import importlib

# Names are loaded on first use (PEP 562), so that importing a sans-IO core
# (`console_proxy.rfb`, `console_proxy.screen`) loads no aiohttp and no asyncio adapter.
_WHERE = {
    "CONNECT_OK": "tunnel",
    "ConnectClient": "frontend",
    "ConnectFrontEnd": "frontend",
    "ConnectHead": "frontend",
    "ConsoleError": "errors",
    "ConsoleForwarder": "forwarder",
    "ForwardError": "forwarder",
    "KeyTranslator": "keys",
    "LineEditor": "keys",
    "Listeners": "frontend",
    "LocalProtocolError": "errors",
    "RemoteProtocolError": "errors",
    "TextConsoleServer": "server",
    "TextScreen": "screen",
    "Tunnel": "tunnel",
    "Upstream": "tunnel",
    "UpstreamUnavailable": "tunnel",
    "UpstreamBusy": "tunnel",
    "Vt100Server": "vt100",
    "bridge_websocket": "websocket",
    "connect_console": "forwarder",
    "open_tunnel": "tunnel",
    "reply_error": "tunnel",
}

__all__ = [
    "CONNECT_OK",
    "ConnectClient",
    "ConnectFrontEnd",
    "ConnectHead",
    "ConsoleError",
    "ConsoleForwarder",
    "ForwardError",
    "KeyTranslator",
    "LineEditor",
    "Listeners",
    "LocalProtocolError",
    "RemoteProtocolError",
    "TextConsoleServer",
    "TextScreen",
    "Tunnel",
    "Upstream",
    "UpstreamBusy",
    "UpstreamUnavailable",
    "Vt100Server",
    "bridge_websocket",
    "connect_console",
    "open_tunnel",
    "reply_error",
]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
