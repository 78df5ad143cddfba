"""Finding zero spans in buffers, so readers can report holes instead of zero bytes."""

from __future__ import annotations

import numpy as np

__all__ = ["GRANULE", "is_zero", "zero_spans"]

GRANULE = 4096              # holes are reported in aligned units of a file-system block
_PEEK = 64                  # bytes looked at in Python before numpy is asked


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """True when every byte is zero.  Data is rarely zero where it starts, so the first
    bytes decide most calls; the rest is read as 64-bit words by numpy."""
    view = memoryview(data).cast("B")
    if any(view[:_PEEK]):
        return False
    arr = np.frombuffer(view, dtype=np.uint8)
    words = len(arr) // 8 * 8
    return not (arr[:words].view(np.uint64).any() or arr[words:].any())


def zero_spans(offset: int, data: bytes | bytearray | memoryview,
               granule: int = GRANULE) -> list[tuple[int, int, bool]]:
    """Split ``data`` (which sits at disk ``offset``) into runs ``(start, length, zero)``.

    Runs break only at ``granule``-aligned disk offsets, and a run is zero only when a whole
    aligned piece is zero, so holes punched from the result line up with file-system blocks."""
    n = len(data)
    if n == 0:
        return []
    arr = np.frombuffer(data, dtype=np.uint8)
    head = min(n, -offset % granule)
    full = (n - head) // granule
    cuts = [0]
    flags: list[bool] = []
    if head:
        cuts.append(head)
        flags.append(not arr[:head].any())
    if full:
        mid = arr[head: head + full * granule].reshape(full, granule)
        if granule % 8 == 0:
            mid = mid.view(np.uint64)
        if mid[:, 0].all():             # no granule starts with a zero word: none is zero
            flags.append(False)         # (dense data: one strided look instead of a pass)
            cuts.append(head + full * granule)
        else:
            flags.extend((~mid.any(axis=1)).tolist())
            cuts.extend(range(head + granule, head + full * granule + 1, granule))
    if cuts[-1] < n:
        flags.append(not arr[cuts[-1]:].any())
        cuts.append(n)
    runs: list[tuple[int, int, bool]] = []
    start = 0
    for i, zero in enumerate(flags):
        if i + 1 == len(flags) or flags[i + 1] != zero:
            runs.append((start, cuts[i + 1] - start, zero))
            start = cuts[i + 1]
    return runs
