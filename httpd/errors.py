"""XenAPI failures: one exception type carrying the wire error code and its parameters.

Every layer raises `XenAPIError`; exactly one place per transport (the RPC handler, the HTTP
middleware) turns it into an envelope or a status, so error codes never drift apart.
"""

from __future__ import annotations

__all__ = ["XenAPIError", "handle_invalid", "uuid_invalid"]


class XenAPIError(Exception):
    """A failure the client can act on: `code` plus string parameters, as on the wire."""

    def __init__(self, code: str, *params: object) -> None:
        self.code = code
        self.params = [str(p) for p in params]
        super().__init__(code, *self.params)

    @property
    def description(self) -> list[str]:
        return [self.code, *self.params]

    def __str__(self) -> str:
        return " ".join(self.description)


def handle_invalid(cls: str, ref: str) -> XenAPIError:
    return XenAPIError("HANDLE_INVALID", cls, ref)


def uuid_invalid(cls: str, uuid: str) -> XenAPIError:
    return XenAPIError("UUID_INVALID", cls, uuid)
