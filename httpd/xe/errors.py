"""XenAPI failures printed as xe prints them: a sentence, then `name: value` lines."""

from __future__ import annotations

__all__ = ["describe"]

# code -> (sentence, parameter names). Codes not here print as "Error code: / Error parameters:".
_MESSAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "UUID_INVALID": ("The uuid you supplied was invalid.", ("type", "uuid")),
    "HANDLE_INVALID": ("You gave an invalid object reference. The object may have recently "
                       "been deleted.", ("class", "handle")),
    "SESSION_INVALID": ("You gave an invalid session reference.", ("handle",)),
    "SESSION_AUTHENTICATION_FAILED": ("The credentials given by the user are incorrect, so "
                                      "access has been denied.", ("user", "message")),
    "PERMISSION_DENIED": ("Caller not allowed to perform this operation.", ("message",)),
    "VM_BAD_POWER_STATE": ("You attempted an operation on a VM that was not in an appropriate "
                           "power state at the time.", ("vm", "expected", "actual")),
    "VM_IS_TEMPLATE": ("The operation attempted is not valid for a template VM.",
                       ("vm", "operation")),
    "OPERATION_NOT_ALLOWED": ("You attempted an operation that was not allowed.", ("reason",)),
    "OTHER_OPERATION_IN_PROGRESS": ("Another operation involving the object is currently in "
                                    "progress.", ("class", "object", "operation", "task")),
    "MESSAGE_METHOD_UNKNOWN": ("The server does not implement this call (yet).", ("method",)),
    "MESSAGE_PARAMETER_COUNT_MISMATCH": ("You tried to call a method with the incorrect number "
                                         "of parameters.",
                                         ("method", "expected", "received")),
    "MAP_DUPLICATE_KEY": ("You tried to add a key-value pair to a map, but that key is already "
                          "there.", ("type", "param-name", "uuid", "key")),
    "INVALID_VALUE": ("The value given is invalid.", ("field", "value")),
    "FIELD_TYPE_ERROR": ("The value specified is of the wrong type.", ("field",)),
    "DEFAULT_SR_NOT_FOUND": ("The default SR reference does not point to a valid SR.", ("sr",)),
    "SR_FULL": ("The SR is full. Requested new size exceeds the maximum size.",
                ("requested", "maximum")),
    "VDI_IN_USE": ("This operation cannot be performed because this VDI is in use by some "
                   "other operation.", ("vdi", "operation")),
    "TASK_CANCELLED": ("The request was cancelled.", ("task",)),
    "NOT_IMPLEMENTED": ("The function is not implemented.", ("function",)),
    "INTERNAL_ERROR": ("The server failed to handle your request, due to an internal error.",
                       ("message",)),
    "IMPORT_ERROR": ("The VM could not be imported.", ("message",)),
    "IMPORT_ERROR_PREMATURE_EOF": ("The VM could not be imported; the end of the file was "
                                   "reached prematurely.", ()),
    "IMPORT_INCOMPATIBLE_VERSION": ("The import failed because this export has been created "
                                    "by a different (incompatible) product version.", ()),
    "EVENTS_LOST": ("Some events have been lost from the queue and cannot be retrieved.", ()),
}


def describe(code: str, params: list[str]) -> str:
    known = _MESSAGES.get(code)
    if known is None:
        lines = [f"Error code: {code}", f"Error parameters: {', '.join(params)}"]
        return "\n".join(lines)
    sentence, names = known
    lines = [sentence]
    for i, value in enumerate(params):
        name = names[i] if i < len(names) else f"param {i + 1}"
        lines.append(f"{name}: {value}")
    lines.append(f"(error code: {code})")
    return "\n".join(lines)
