"""One exception hierarchy for the XVA library.

Every error carries a XenAPI error code and its parameters so the daemon maps it to a task's
``error_info`` at exactly one boundary.  Bad input from the remote peer (a hostile or broken XVA)
is an :class:`XVAFormatError`; misuse of this library by local code is an :class:`XVAUsageError`;
a disk that cannot be read as promised is an :class:`XVAIOError`; a stream the caller stopped
ends with :class:`XVACancelled`.
"""

from __future__ import annotations

__all__ = [
    "IMPORT_ERROR",
    "IMPORT_ERROR_FAILED_TO_FIND_OBJECT",
    "IMPORT_ERROR_PREMATURE_EOF",
    "IMPORT_ERROR_UNEXPECTED_FILE",
    "INTERNAL_ERROR",
    "TASK_CANCELLED",
    "VDI_IO_ERROR",
    "XVACancelled",
    "XVAError",
    "XVAIOError",
    "XVAFormatError",
    "XVAUsageError",
]

IMPORT_ERROR = "IMPORT_ERROR"
IMPORT_ERROR_PREMATURE_EOF = "IMPORT_ERROR_PREMATURE_EOF"
IMPORT_ERROR_UNEXPECTED_FILE = "IMPORT_ERROR_UNEXPECTED_FILE"
IMPORT_ERROR_FAILED_TO_FIND_OBJECT = "IMPORT_ERROR_FAILED_TO_FIND_OBJECT"
INTERNAL_ERROR = "INTERNAL_ERROR"
TASK_CANCELLED = "TASK_CANCELLED"
VDI_IO_ERROR = "VDI_IO_ERROR"


class XVAError(Exception):
    """Base: ``code`` is a XenAPI error code, ``params`` its string parameters."""

    def __init__(self, code: str, *params: object) -> None:
        self.code = code
        self.params = tuple(str(p) for p in params)
        super().__init__(code, *self.params)

    def error_info(self) -> list[str]:
        """The XenAPI ``error_info`` list: ``[code, params...]``."""
        return [self.code, *self.params]

    def __str__(self) -> str:
        return " ".join([self.code, *self.params])


class XVAFormatError(XVAError):
    """The XVA stream (the remote peer's input) is broken or hostile."""

    @classmethod
    def bad(cls, message: str) -> "XVAFormatError":
        return cls(IMPORT_ERROR, message)

    @classmethod
    def premature_eof(cls) -> "XVAFormatError":
        return cls(IMPORT_ERROR_PREMATURE_EOF)

    @classmethod
    def unexpected_file(cls, expected: str, actual: str) -> "XVAFormatError":
        return cls(IMPORT_ERROR_UNEXPECTED_FILE, expected, actual)


class XVAUsageError(XVAError):
    """Local code called the library wrongly (wrong state, bad arguments)."""

    def __init__(self, message: str) -> None:
        super().__init__(INTERNAL_ERROR, message)


class XVAIOError(XVAError):
    """A local disk could not be read as the stream needs (it changed under an export)."""

    def __init__(self, message: str) -> None:
        super().__init__(VDI_IO_ERROR, message)


class XVACancelled(XVAError):
    """The caller stopped the stream (:meth:`xva.files.Export.cancel`)."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(TASK_CANCELLED, message)
