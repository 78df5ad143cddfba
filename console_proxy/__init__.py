"""CONNECT/WebSocket console tunnelling and the RFB text-console server."""
