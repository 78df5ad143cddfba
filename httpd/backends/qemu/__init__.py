"""The QEMU domain backend (issue 16), landing in pieces: the guest it boots (`guest`), and
which accelerator really runs guests here (`accel`). The backend itself is not wired yet."""
