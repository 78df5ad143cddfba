"""The QEMU domain backend (issue 16), landing in pieces: the guest it boots (`guest`), which
accelerator really runs guests here (`accel`), and QMP (`qmp`, sans-IO, with its asyncio
adapter `qmp_client`). The backend itself is not wired yet."""
