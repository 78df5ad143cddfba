"""The XenAPI object model, declared once.

Each class lists its fields as annotated attributes, `name: Any = f(type, qualifier, doc)`;
`xapi_class` reads them into a `ClassSpec`. Nothing instantiates these classes: records are
plain dicts. Generic code walks
`CLASSES[name].fields` to build the implicit messages (get_/set_/add_to_...), type checks, the
SQLite columns, event snapshots and the `xe` parameter names, so adding a field is one line here.

Qualifiers (as the `xe` CLI prints them): RW settable any time; SRO settable only by `create`;
RO maintained by the server. A `reverse` field is the other end of a one-to-many reference
(VM.VBDs mirrors VBD.VM): the store keeps it, no caller writes it.
"""

from __future__ import annotations

from typing import Any

from .schema import (  # noqa: F401 - CLASSES & co. are used from here by everyone
    CLASSES, INTERNAL, RO, RW, SRO, STORED, ClassSpec, FieldSpec, class_spec, f, xapi_class)
from .schema import refs as _refs, str_map as _str_map
from .xtypes import BOOL, DATETIME, FLOAT, INT, STRING, Enum, MapOf, Ref, SetOf

__all__ = ["FieldSpec", "ClassSpec", "CLASSES", "INTERNAL", "STORED", "class_spec", "RW", "RO",
           "SRO", "POWER_STATE", "MESSAGE_CLS"]


POWER_STATE = Enum("vm_power_state", "Halted", "Paused", "Running", "Suspended")
TASK_STATUS = Enum("task_status_type", "pending", "success", "failure", "cancelling", "cancelled")
_ON_NORMAL_EXIT = Enum("on_normal_exit", "destroy", "restart")
_ON_CRASH = Enum("on_crash_behaviour", "destroy", "coredump_and_destroy", "restart",
                 "coredump_and_restart", "preserve", "rename_restart")
_VBD_MODE = Enum("vbd_mode", "RW", "RO")
_VBD_TYPE = Enum("vbd_type", "Disk", "CD", "Floppy")
_VDI_TYPE = Enum("vdi_type", "user", "system", "suspend", "crashdump", "ephemeral", "ha_statefile",
                 "metadata", "redo_log", "rrd", "pvs_cache", "cbt_metadata")
_CONSOLE_PROTOCOL = Enum("console_protocol", "vt100", "rfb", "rdp")
_OPS = SetOf(STRING)


@xapi_class()
class session:
    """A login: every call but login_with_password names one."""
    this_host: Any = f(Ref("host"), RO)
    this_user: Any = f(Ref("user"), RO)
    last_active: Any = f(DATETIME, RO)
    pool: Any = f(BOOL, RO, "true if this session relates to an intra-pool login")
    other_config: Any = _str_map()
    is_local_superuser: Any = f(BOOL, RO, default=True)
    subject: Any = f(Ref("subject"), RO)
    validation_time: Any = f(DATETIME, RO)
    auth_user_sid: Any = f(STRING, RO)
    auth_user_name: Any = f(STRING, RO)
    rbac_permissions: Any = f(SetOf(STRING), RO)
    tasks: Any = _refs("task", reverse="session")
    parent: Any = f(Ref("session"), RO)
    originator: Any = f(STRING, RO)
    client_certificate: Any = f(BOOL, RO)


@xapi_class(next_events=False)
class task:
    """A long-running operation's progress and outcome (Async calls and HTTP transfers)."""
    name_label: Any = f(STRING, RO)
    name_description: Any = f(STRING, RO)
    allowed_operations: Any = f(_OPS, RO)
    current_operations: Any = _str_map(RO)
    created: Any = f(DATETIME, RO)
    finished: Any = f(DATETIME, RO)
    status: Any = f(TASK_STATUS, RO)
    resident_on: Any = f(Ref("host"), RO)
    progress: Any = f(FLOAT, RO)
    type: Any = f(STRING, RO)
    result: Any = f(STRING, RO)
    error_info: Any = f(SetOf(STRING), RO)
    other_config: Any = _str_map()
    subtask_of: Any = f(Ref("task"), RO)
    subtasks: Any = _refs("task", reverse="subtask_of")
    backtrace: Any = f(STRING, RO)


@xapi_class()
class pool:
    """The resource pool: here a pool of one host."""
    name_label: Any = f(STRING, RW)
    name_description: Any = f(STRING, RW)
    master: Any = f(Ref("host"), RO)
    default_SR: Any = f(Ref("SR"), RW)
    suspend_image_SR: Any = f(Ref("SR"), RW)
    crash_dump_SR: Any = f(Ref("SR"), RW)
    other_config: Any = _str_map()
    gui_config: Any = _str_map()
    tags: Any = f(SetOf(STRING), RW)
    allowed_operations: Any = f(_OPS, RO)
    current_operations: Any = _str_map(RO)


@xapi_class()
class host:
    """A physical host: this machine."""
    name_label: Any = f(STRING, RW)
    name_description: Any = f(STRING, RW)
    memory_overhead: Any = f(INT, RO)
    allowed_operations: Any = f(_OPS, RO)
    current_operations: Any = _str_map(RO)
    API_version_major: Any = f(INT, RO)
    API_version_minor: Any = f(INT, RO)
    API_version_vendor: Any = f(STRING, RO)
    API_version_vendor_implementation: Any = _str_map(RO)
    enabled: Any = f(BOOL, RO, default=True)
    software_version: Any = _str_map(RO)
    other_config: Any = _str_map()
    capabilities: Any = f(SetOf(STRING), RO)
    cpu_configuration: Any = _str_map(RO)
    sched_policy: Any = f(STRING, RO)
    supported_bootloaders: Any = f(SetOf(STRING), RO)
    resident_VMs: Any = _refs("VM", reverse="resident_on")
    logging: Any = _str_map()
    PIFs: Any = _refs("PIF", reverse="host")
    suspend_image_sr: Any = f(Ref("SR"), RW)
    crash_dump_sr: Any = f(Ref("SR"), RW)
    PBDs: Any = _refs("PBD", reverse="host")
    hostname: Any = f(STRING, RO)
    address: Any = f(STRING, RO)
    metrics: Any = f(Ref("host_metrics"), RO)
    license_params: Any = _str_map(RO)
    cpu_info: Any = _str_map(RO)
    tags: Any = f(SetOf(STRING), RW)
    control_domain: Any = f(Ref("VM"), RO)
    uefi_certificates: Any = f(STRING, RO)


@xapi_class(next_events=False)
class host_metrics:
    """The host's memory figures, refreshed by the statistics collector."""
    memory_total: Any = f(INT, RO)
    memory_free: Any = f(INT, RO)
    live: Any = f(BOOL, RO)
    last_updated: Any = f(DATETIME, RO)
    other_config: Any = _str_map()


@xapi_class(creatable=True, destroyable=True)
class VM:
    """A virtual machine or a template (is_a_template)."""
    allowed_operations: Any = f(_OPS, RO)
    current_operations: Any = _str_map(RO)
    name_label: Any = f(STRING, RW)
    name_description: Any = f(STRING, RW)
    power_state: Any = f(POWER_STATE, RO)
    user_version: Any = f(INT, RW, default=1)
    is_a_template: Any = f(BOOL, RW)
    is_default_template: Any = f(BOOL, RO)
    suspend_VDI: Any = f(Ref("VDI"), RO)
    resident_on: Any = f(Ref("host"), RO)
    scheduled_to_be_resident_on: Any = f(Ref("host"), RO)
    affinity: Any = f(Ref("host"), RW)
    memory_overhead: Any = f(INT, RO)
    memory_target: Any = f(INT, RO)
    memory_static_max: Any = f(INT, RW, default=256 * 2**20)
    memory_dynamic_max: Any = f(INT, RW, default=256 * 2**20)
    memory_dynamic_min: Any = f(INT, RW, default=256 * 2**20)
    memory_static_min: Any = f(INT, RW, default=128 * 2**20)
    VCPUs_params: Any = _str_map()
    VCPUs_max: Any = f(INT, RW, default=1)
    VCPUs_at_startup: Any = f(INT, RW, default=1)
    actions_after_shutdown: Any = f(_ON_NORMAL_EXIT, RW)
    actions_after_reboot: Any = f(_ON_NORMAL_EXIT, RW, default="restart")
    actions_after_crash: Any = f(_ON_CRASH, RW, default="restart")
    consoles: Any = _refs("console", reverse="VM")
    VIFs: Any = _refs("VIF", reverse="VM")
    VBDs: Any = _refs("VBD", reverse="VM")
    crash_dumps: Any = f(SetOf(Ref("crashdump")), RO)
    VTPMs: Any = _refs("VTPM", reverse="VM")
    VUSBs: Any = _refs("VUSB", reverse="VM")
    PV_bootloader: Any = f(STRING, RW)
    PV_kernel: Any = f(STRING, RW)
    PV_ramdisk: Any = f(STRING, RW)
    PV_args: Any = f(STRING, RW)
    PV_bootloader_args: Any = f(STRING, RW)
    PV_legacy_args: Any = f(STRING, RW)
    HVM_boot_policy: Any = f(STRING, RW)
    HVM_boot_params: Any = _str_map()
    HVM_shadow_multiplier: Any = f(FLOAT, RW, default=1.0)
    platform: Any = _str_map()
    PCI_bus: Any = f(STRING, RW)
    other_config: Any = _str_map()
    domid: Any = f(INT, RO, default=-1)
    domarch: Any = f(STRING, RO)
    last_boot_CPU_flags: Any = _str_map(RO)
    is_control_domain: Any = f(BOOL, RO)
    metrics: Any = f(Ref("VM_metrics"), RO)
    guest_metrics: Any = f(Ref("VM_guest_metrics"), RO)
    last_booted_record: Any = f(STRING, RO)
    recommendations: Any = f(STRING, RW)
    xenstore_data: Any = _str_map()
    ha_always_run: Any = f(BOOL, RO)
    ha_restart_priority: Any = f(STRING, RO)
    is_a_snapshot: Any = f(BOOL, RO)
    snapshot_of: Any = f(Ref("VM"), RO)
    snapshots: Any = _refs("VM", reverse="snapshot_of")
    snapshot_time: Any = f(DATETIME, RO)
    transportable_snapshot_id: Any = f(STRING, RO)
    blobs: Any = _str_map(RO)
    tags: Any = f(SetOf(STRING), RW)
    blocked_operations: Any = _str_map()
    bios_strings: Any = _str_map(RO)
    version: Any = f(INT, RO)
    generation_id: Any = f(STRING, RO)
    hardware_platform_version: Any = f(INT, RO)
    has_vendor_device: Any = f(BOOL, RO)
    requires_reboot: Any = f(BOOL, RO)
    reference_label: Any = f(STRING, RO)
    domain_type: Any = f(Enum("domain_type", "pv", "hvm", "pv_in_pvh", "pvh", "unspecified"), RO,
                         default="pv")
    NVRAM: Any = _str_map()


@xapi_class(next_events=False)
class VM_metrics:
    """Runtime figures of a VM (memory, vCPUs, state), kept by the domain backend."""
    memory_actual: Any = f(INT, RO)
    VCPUs_number: Any = f(INT, RO)
    VCPUs_utilisation: Any = f(MapOf(STRING, FLOAT), RO)
    VCPUs_CPU: Any = _str_map(RO)
    VCPUs_params: Any = _str_map(RO)
    VCPUs_flags: Any = _str_map(RO)
    state: Any = f(SetOf(STRING), RO)
    start_time: Any = f(DATETIME, RO)
    install_time: Any = f(DATETIME, RO)
    last_updated: Any = f(DATETIME, RO)
    other_config: Any = _str_map()
    hvm: Any = f(BOOL, RO)
    nested_virt: Any = f(BOOL, RO)
    nomigrate: Any = f(BOOL, RO)
    current_domain_type: Any = f(STRING, RO)


@xapi_class(next_events=False)
class VM_guest_metrics:
    """What the guest agent reports: OS, PV drivers, network addresses."""
    os_version: Any = _str_map(RO)
    PV_drivers_version: Any = _str_map(RO)
    PV_drivers_up_to_date: Any = f(BOOL, RO)
    PV_drivers_detected: Any = f(BOOL, RO)
    memory: Any = _str_map(RO)
    disks: Any = _str_map(RO)
    networks: Any = _str_map(RO)
    other: Any = _str_map(RO)
    last_updated: Any = f(DATETIME, RO)
    other_config: Any = _str_map()
    live: Any = f(BOOL, RO)
    can_use_hotplug_vbd: Any = f(STRING, RO, default="unspecified")
    can_use_hotplug_vif: Any = f(STRING, RO, default="unspecified")


@xapi_class(creatable=True, destroyable=True)
class SR:
    """A storage repository: here a directory of sparse raw files."""
    name_label: Any = f(STRING, RW)
    name_description: Any = f(STRING, RW)
    allowed_operations: Any = f(_OPS, RO)
    current_operations: Any = _str_map(RO)
    VDIs: Any = _refs("VDI", reverse="SR")
    PBDs: Any = _refs("PBD", reverse="SR")
    virtual_allocation: Any = f(INT, RO)
    physical_utilisation: Any = f(INT, RO)
    physical_size: Any = f(INT, RO)
    type: Any = f(STRING, SRO)
    content_type: Any = f(STRING, SRO)
    shared: Any = f(BOOL, RW)
    other_config: Any = _str_map()
    tags: Any = f(SetOf(STRING), RW)
    sm_config: Any = _str_map()
    blobs: Any = _str_map(RO)
    local_cache_enabled: Any = f(BOOL, RO)
    is_tools_sr: Any = f(BOOL, RO)


@xapi_class(creatable=True, destroyable=True)
class PBD:
    """How a host reaches an SR (`device_config:path` for a file SR)."""
    host: Any = f(Ref("host"), SRO)
    SR: Any = f(Ref("SR"), SRO)
    device_config: Any = f(MapOf(STRING, STRING), SRO)
    currently_attached: Any = f(BOOL, RO)
    other_config: Any = _str_map()


@xapi_class(creatable=True, destroyable=True)
class VDI:
    """A virtual disk image: a sparse raw file in its SR."""
    name_label: Any = f(STRING, RW)
    name_description: Any = f(STRING, RW)
    allowed_operations: Any = f(_OPS, RO)
    current_operations: Any = _str_map(RO)
    SR: Any = f(Ref("SR"), SRO)
    VBDs: Any = _refs("VBD", reverse="VDI")
    crash_dumps: Any = f(SetOf(Ref("crashdump")), RO)
    virtual_size: Any = f(INT, SRO)
    physical_utilisation: Any = f(INT, RO)
    type: Any = f(_VDI_TYPE, SRO)
    sharable: Any = f(BOOL, SRO)
    read_only: Any = f(BOOL, SRO)
    other_config: Any = _str_map()
    storage_lock: Any = f(BOOL, RO)
    location: Any = f(STRING, RO)
    managed: Any = f(BOOL, RO, default=True)
    missing: Any = f(BOOL, RO)
    parent: Any = f(Ref("VDI"), RO)
    xenstore_data: Any = _str_map()
    sm_config: Any = _str_map()
    is_a_snapshot: Any = f(BOOL, RO)
    snapshot_of: Any = f(Ref("VDI"), RO)
    snapshots: Any = _refs("VDI", reverse="snapshot_of")
    snapshot_time: Any = f(DATETIME, RO)
    tags: Any = f(SetOf(STRING), RW)
    allow_caching: Any = f(BOOL, RO)
    on_boot: Any = f(Enum("on_boot", "persist", "reset"), RO, default="persist")
    metadata_latest: Any = f(BOOL, RO)
    is_tools_iso: Any = f(BOOL, RO)
    cbt_enabled: Any = f(BOOL, RO)


@xapi_class(creatable=True, destroyable=True)
class VBD:
    """The attachment of a VDI to a VM."""
    allowed_operations: Any = f(_OPS, RO)
    current_operations: Any = _str_map(RO)
    VM: Any = f(Ref("VM"), SRO)
    VDI: Any = f(Ref("VDI"), SRO)
    device: Any = f(STRING, RO)
    userdevice: Any = f(STRING, RW)
    bootable: Any = f(BOOL, RW)
    mode: Any = f(_VBD_MODE, RW)
    type: Any = f(_VBD_TYPE, RW, default="Disk")
    unpluggable: Any = f(BOOL, RW, default=True)
    storage_lock: Any = f(BOOL, RO)
    empty: Any = f(BOOL, SRO)
    other_config: Any = _str_map()
    currently_attached: Any = f(BOOL, RO)
    status_code: Any = f(INT, RO)
    status_detail: Any = f(STRING, RO)
    runtime_properties: Any = _str_map(RO)
    qos_algorithm_type: Any = f(STRING, RW)
    qos_algorithm_params: Any = _str_map()
    qos_supported_algorithms: Any = f(SetOf(STRING), RO)
    metrics: Any = f(Ref("VBD_metrics"), RO)


@xapi_class(creatable=True, destroyable=True)
class network:
    """A layer-2 network joining VIFs and PIFs."""
    name_label: Any = f(STRING, RW)
    name_description: Any = f(STRING, RW)
    allowed_operations: Any = f(_OPS, RO)
    current_operations: Any = _str_map(RO)
    VIFs: Any = _refs("VIF", reverse="network")
    PIFs: Any = _refs("PIF", reverse="network")
    MTU: Any = f(INT, RW, default=1500)
    other_config: Any = _str_map()
    bridge: Any = f(STRING, SRO)
    managed: Any = f(BOOL, SRO, default=True)
    blobs: Any = _str_map(RO)
    tags: Any = f(SetOf(STRING), RW)
    default_locking_mode: Any = f(STRING, RO, default="unlocked")


@xapi_class(creatable=True, destroyable=True)
class VIF:
    """A VM's network interface on a network."""
    allowed_operations: Any = f(_OPS, RO)
    current_operations: Any = _str_map(RO)
    device: Any = f(STRING, SRO)
    network: Any = f(Ref("network"), SRO)
    VM: Any = f(Ref("VM"), SRO)
    MAC: Any = f(STRING, SRO)
    MTU: Any = f(INT, SRO, default=1500)
    other_config: Any = _str_map()
    currently_attached: Any = f(BOOL, RO)
    status_code: Any = f(INT, RO)
    status_detail: Any = f(STRING, RO)
    runtime_properties: Any = _str_map(RO)
    qos_algorithm_type: Any = f(STRING, RW)
    qos_algorithm_params: Any = _str_map()
    qos_supported_algorithms: Any = f(SetOf(STRING), RO)
    metrics: Any = f(Ref("VIF_metrics"), RO)
    MAC_autogenerated: Any = f(BOOL, RO)
    locking_mode: Any = f(STRING, RO, default="network_default")


@xapi_class()
class PIF:
    """A host's physical interface on a network."""
    device: Any = f(STRING, RO)
    network: Any = f(Ref("network"), RO)
    host: Any = f(Ref("host"), RO)
    MAC: Any = f(STRING, RO)
    MTU: Any = f(INT, RO, default=1500)
    VLAN: Any = f(INT, RO, default=-1)
    metrics: Any = f(Ref("PIF_metrics"), RO)
    physical: Any = f(BOOL, RO, default=True)
    currently_attached: Any = f(BOOL, RO, default=True)
    ip_configuration_mode: Any = f(STRING, RO, default="None")
    IP: Any = f(STRING, RO)
    netmask: Any = f(STRING, RO)
    gateway: Any = f(STRING, RO)
    DNS: Any = f(STRING, RO)
    management: Any = f(BOOL, RO)
    other_config: Any = _str_map()
    disallow_unplug: Any = f(BOOL, RW)


@xapi_class(next_events=False)
class PIF_metrics:
    """What the host's kernel says of a physical interface (read at each agent start)."""
    io_read_kbs: Any = f(FLOAT, RO)
    io_write_kbs: Any = f(FLOAT, RO)
    carrier: Any = f(BOOL, RO)
    vendor_id: Any = f(STRING, RO)
    vendor_name: Any = f(STRING, RO)
    device_id: Any = f(STRING, RO)
    device_name: Any = f(STRING, RO)
    speed: Any = f(INT, RO)
    duplex: Any = f(BOOL, RO)
    pci_bus_path: Any = f(STRING, RO)
    last_updated: Any = f(DATETIME, RO)
    other_config: Any = _str_map()


@xapi_class()
class VLAN:
    """A VLAN: a tagged PIF made from an untagged one (none on this host)."""
    tagged_PIF: Any = f(Ref("PIF"), RO)
    untagged_PIF: Any = f(Ref("PIF"), RO)
    tag: Any = f(INT, RO, default=-1)
    other_config: Any = _str_map()


@xapi_class()
class VTPM:
    """A VM's virtual TPM; its state (base64) is kept in a secret, the VM halted to change it."""
    allowed_operations: Any = f(_OPS, RO)
    current_operations: Any = _str_map(RO)
    VM: Any = f(Ref("VM"), RO)
    backend: Any = f(Ref("VM"), RO)
    persistence_backend: Any = f(Enum("persistence_backend", "xapi"), RO, default="xapi")
    is_unique: Any = f(BOOL, RO)
    is_protected: Any = f(BOOL, RO)
    contents: Any = f(Ref("secret"), RO, "the secret holding the state (internal in xapi)")


@xapi_class(creatable=True, destroyable=True)
class secret:
    """A value kept for an object that must not show it in its own record."""
    value: Any = f(STRING, RW)
    other_config: Any = _str_map()


@xapi_class()
class PUSB:
    """A host's physical USB device (none is passed through on this host)."""
    USB_group: Any = f(Ref("USB_group"), RO)
    host: Any = f(Ref("host"), RO)
    path: Any = f(STRING, RO)
    vendor_id: Any = f(STRING, RO)
    vendor_desc: Any = f(STRING, RO)
    product_id: Any = f(STRING, RO)
    product_desc: Any = f(STRING, RO)
    serial: Any = f(STRING, RO)
    version: Any = f(STRING, RO)
    description: Any = f(STRING, RO)
    passthrough_enabled: Any = f(BOOL, RO)
    other_config: Any = _str_map()


@xapi_class()
class USB_group:
    """A group of interchangeable PUSBs a VUSB is made from."""
    name_label: Any = f(STRING, RW)
    name_description: Any = f(STRING, RW)
    PUSBs: Any = _refs("PUSB", reverse="USB_group")
    VUSBs: Any = _refs("VUSB", reverse="USB_group")
    other_config: Any = _str_map()


@xapi_class()
class VUSB:
    """A VM's USB device, taken from a USB group."""
    allowed_operations: Any = f(_OPS, RO)
    current_operations: Any = _str_map(RO)
    VM: Any = f(Ref("VM"), RO)
    USB_group: Any = f(Ref("USB_group"), RO)
    other_config: Any = _str_map()
    currently_attached: Any = f(BOOL, RO)


MESSAGE_CLS = Enum("cls", "VM", "Host", "SR", "Pool", "VMPP", "VMSS", "PVS_proxy", "VDI",
                   "Certificate")


@xapi_class()
class message:
    """An alert about an object, for people (Xen Orchestra lists them): what happened, how
    urgent (priority 1 is the most, 5 is information), when."""
    name: Any = f(STRING, RO)
    priority: Any = f(INT, RO)
    cls: Any = f(MESSAGE_CLS, RO)
    obj_uuid: Any = f(STRING, RO)
    timestamp: Any = f(DATETIME, RO)
    body: Any = f(STRING, RO)


@xapi_class(creatable=True, destroyable=True)
class console:
    """A way into a VM's screen: `rfb` (VNC) or `vt100` text."""
    protocol: Any = f(_CONSOLE_PROTOCOL, SRO)
    location: Any = f(STRING, RO)
    VM: Any = f(Ref("VM"), SRO)
    other_config: Any = _str_map()


@xapi_class(creatable=True, destroyable=True)
class user:
    """A legacy user record (authentication is root's password)."""
    short_name: Any = f(STRING, SRO)
    fullname: Any = f(STRING, RW)
    other_config: Any = _str_map()

