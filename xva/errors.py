"""One exception hierarchy for the XVA library.

Every error carries a XenAPI error code and its parameters so the daemon maps it to a task's
``error_info`` at exactly one boundary.  Bad input from the remote peer (a hostile or broken XVA)
is an :class:`XVAFormatError`; misuse of this library by local code is an :class:`XVAUsageError`.
"""

from __future__ import annotations

__all__ = [
    "IMPORT_ERROR",
    "IMPORT_ERROR_FAILED_TO_FIND_OBJECT",
    "IMPORT_ERROR_PREMATURE_EOF",
    "IMPORT_ERROR_UNEXPECTED_FILE",
    "INTERNAL_ERROR",
    "XVAError",
    "XVAFormatError",
    "XVAUsageError",
]

IMPORT_ERROR = "IMPORT_ERROR"
IMPORT_ERROR_PREMATURE_EOF = "IMPORT_ERROR_PREMATURE_EOF"
IMPORT_ERROR_UNEXPECTED_FILE = "IMPORT_ERROR_UNEXPECTED_FILE"
IMPORT_ERROR_FAILED_TO_FIND_OBJECT = "IMPORT_ERROR_FAILED_TO_FIND_OBJECT"
INTERNAL_ERROR = "INTERNAL_ERROR"


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
