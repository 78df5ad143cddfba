"""XenAPI failures printed as xe prints them: a sentence, then `name: value` lines."""

from __future__ import annotations

__all__ = ["catalogue", "describe"]

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
    "VM_TO_IMPORT_IS_NOT_NEWER_VERSION": ("A VM with this uuid exists and the import is no "
                                          "newer: add force=true to replace it (its disks "
                                          "stay), or import without restore.",
                                          ("vm", "existing version", "version to import")),
    "VDI_IO_ERROR": ("Reading or writing the disk's data failed.", ("reason",)),
    "VDI_MISSING": ("The disk's data is not there: its file in the SR is gone.",
                    ("sr", "vdi")),
    "VDI_TOO_SMALL": ("A disk cannot shrink: the size asked is below its current size.",
                      ("size asked", "current size")),
    "VDI_READ_ONLY": ("The disk is read-only; it cannot be written.", ("vdi",)),
    "VDI_NO_CBT_METADATA": ("The disk has no changed-block-tracking data.", ("vdi",)),
    "DEVICE_ALREADY_ATTACHED": ("The device is already plugged in.", ("device",)),
    "DEVICE_ALREADY_DETACHED": ("The device is not plugged in.", ("device",)),
    "DEVICE_ALREADY_EXISTS": ("The VM already has a device in that slot: choose another "
                              "device= (see 'xe vm-disk-list' or 'xe vm-vif-list').",
                              ("device",)),
    "VBD_NOT_UNPLUGGABLE": ("The drive cannot be unplugged while the VM runs "
                            "(unpluggable=false).", ("vbd",)),
    "VBD_NOT_REMOVABLE_MEDIA": ("Only a CD drive can have its disc inserted or ejected.",
                                ("vbd",)),
    "VBD_NOT_EMPTY": ("The drive already holds a disc: eject it first.", ("vbd",)),
    "VBD_IS_EMPTY": ("The drive holds no disc.", ("vbd",)),
    "IMPORT_ERROR_FAILED_TO_FIND_OBJECT": ("The import refers to an object that is not "
                                           "there.", ("id",)),
    "EVENT_SUBSCRIPTION_PARSE_FAILURE": ("An event class name could not be understood.",
                                         ("class",)),
    "EVENT_FROM_TOKEN_PARSE_FAILURE": ("The event token could not be understood.",
                                       ("token",)),
    "SESSION_NOT_REGISTERED": ("The session is not registered for events.", ("session",)),
    "VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT": ("The VM did not shut down (or reboot) in time when "
                                          "asked; 'xe vm-shutdown --force' stops it at once.",
                                          ("vm",)),
    "VM_REVERT_FAILED": ("The VM could not be reverted to the snapshot.", ("snapshot", "vm")),
    "VM_MIGRATE_FAILED": ("The VM could not be migrated.", ("vm", "source", "destination",
                                                            "reason")),
    "VM_BIOS_STRINGS_ALREADY_SET": ("The VM's BIOS strings are set already; they cannot "
                                    "change.", ("vm",)),
    "BOOTLOADER_FAILED": ("The VM's bootloader found nothing to boot.", ("vm", "reason")),
    "SR_BACKEND_FAILURE": ("The storage repository failed.", ("reason", "detail")),
    "SR_UNKNOWN_DRIVER": ("There is no storage driver of that type.", ("type",)),
    "SR_OPERATION_NOT_SUPPORTED": ("This SR does not support the operation.", ("sr",)),
    "SR_NOT_ATTACHED": ("The SR is not attached (plug its PBD first).", ("sr",)),
    "SR_HAS_NO_PBDS": ("The SR has no PBD to attach it with.", ("sr",)),
    "HOST_DISABLED": ("The host is disabled: 'xe host-enable' it first.", ("host",)),
    "HOST_NOT_DISABLED": ("The host must be disabled first ('xe host-disable').", ()),
    "HOST_IN_USE": ("The host still runs VMs.", ("host", "type", "object")),
    "HOST_NOT_ENOUGH_FREE_MEMORY": ("The host has not enough free memory for the VM.",
                                    ("needed", "free")),
    "HOST_CANNOT_ATTACH_NETWORK": ("The host could not attach the network.",
                                   ("host", "network", "reason")),
    "NO_HOSTS_AVAILABLE": ("No other host can take the VM.", ("vm",)),
    "MEMORY_CONSTRAINT_VIOLATION": ("The memory settings break static_min <= dynamic_min <= "
                                    "dynamic_max <= static_max.", ("constraint",)),
    "MAC_INVALID": ("The MAC address is not valid.", ("mac",)),
    "PIF_IS_MANAGEMENT_INTERFACE": ("The interface carries the host's management traffic.",
                                    ("pif",)),
    "XENAPI_MISSING_PLUGIN": ("The host has no such plugin.", ("plugin",)),
    "VTPM_MAX_AMOUNT_REACHED": ("The VM has as many vTPMs as it may have.", ("maximum",)),
    "HA_NOT_ENABLED": ("High availability is not enabled on the pool.", ()),
    "TOO_BUSY": ("The server is too busy now; try again.", ("reason",)),
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


def catalogue() -> dict[str, tuple[str, tuple[str, ...]]]:
    """code -> (sentence, parameter names): what `describe` prints from (the web page uses it
    to show the same words)."""
    return dict(_MESSAGES)
