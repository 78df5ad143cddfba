"""XenAPI failures: one exception type carrying the wire error code and its parameters.

Every layer raises `XenAPIError`; exactly one place per transport (the RPC handler, the HTTP
middleware) turns it into an envelope or a status, so error codes never drift apart.
"""

from __future__ import annotations

import errno

__all__ = ["XenAPIError", "handle_invalid", "uuid_invalid", "http_status", "internal_error"]


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


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def internal_error(exc: BaseException) -> XenAPIError:
    """The one way an unexpected exception reaches a client: INTERNAL_ERROR with its type and
    message, never a traceback (the caller logs it). A file system that filled under a write
    (the free-space check before it passed, but other writers came too) is SR_FULL instead."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return XenAPIError("SR_FULL", "", f"the SR's file system is full ({exc.strerror})")
    return XenAPIError("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")


def handle_invalid(cls: str, ref: str) -> XenAPIError:
    return XenAPIError("HANDLE_INVALID", cls, ref)


def uuid_invalid(cls: str, uuid: str) -> XenAPIError:
    return XenAPIError("UUID_INVALID", cls, uuid)


_HTTP_STATUS = {
    "SESSION_INVALID": 401, "SESSION_AUTHENTICATION_FAILED": 401, "PERMISSION_DENIED": 403,
    "HANDLE_INVALID": 404, "UUID_INVALID": 404, "INVALID_VALUE": 400, "FIELD_TYPE_ERROR": 400,
    "VM_BAD_POWER_STATE": 409, "OTHER_OPERATION_IN_PROGRESS": 409, "OPERATION_NOT_ALLOWED": 409,
    "VDI_IN_USE": 409, "SR_FULL": 507, "TASK_CANCELLED": 409, "DEFAULT_SR_NOT_FOUND": 404,
    "IMPORT_ERROR": 400, "IMPORT_ERROR_PREMATURE_EOF": 400, "IMPORT_ERROR_UNEXPECTED_FILE": 400,
    "IMPORT_ERROR_FAILED_TO_FIND_OBJECT": 400, "IMPORT_INCOMPATIBLE_VERSION": 400,
    "VDI_IO_ERROR": 400, "TOO_BUSY": 503, "VM_TO_IMPORT_IS_NOT_NEWER_VERSION": 409,
}


def http_status(err: XenAPIError) -> int:
    """The HTTP status an HTTP handler answers a XenAPI failure with (its task says more)."""
    return _HTTP_STATUS.get(err.code, 500)
